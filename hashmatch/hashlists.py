"""Hash lists: read, validate, import and export lists of fingerprints (no images needed).

Formats
- ``te``: the text of python-threatexchange and the PDQ reference tools, one hash a line:
  ``pdq <hex> [anything]`` (signal type first), a bare ``<hex>``, or ``<hex>,<quality>[,<path>]``
  (what the PDQ reference hasher and ``hashmatch hash`` print). ``#`` starts a comment line.
- ``csv``: a header naming the columns; ``hash`` is required, optional ones are ``algorithm,
  quality, labels (or label), source, path, sha256, size, region, variant, meta`` (a JSON
  object) and ``item`` (rows with the same item value are one item with several fingerprints).
- ``jsonl``: one JSON object a line with the same keys (``labels`` a list, ``meta`` an object).

Validation reads the whole file first and reports every problem with its line number: wrong
length, non-hex, unknown algorithm, bad quality, a line repeated, text that is not UTF-8, NUL
bytes, lines over 64 KiB. Import is one store transaction: all valid entries or nothing.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, TextIO

from .errors import HashFormatError
from .fingerprint import ALGORITHMS, DEFAULT_BITS
from .formats import csv_safe_row, csv_unguard_cell

FORMATS = ("te", "csv", "jsonl")
MAX_LINE_BYTES = 64 * 1024
MAX_QUALITY = 100
# JSON from outside (labels, meta, whole JSONL records) may nest this deep and hold integers
# of 64 bits at most: deeper input raised RecursionError, larger integers OverflowError in
# the store, and other tools reading our exports (jsonb, JavaScript) cannot hold them.
MAX_JSON_DEPTH = 32
MAX_JSON_INT = 2 ** 63 - 1
CSV_COLUMNS = ["item", "algorithm", "hash", "quality", "region", "variant", "labels", "source",
               "path", "sha256", "size", "meta"]
_HEX = re.compile(r"[0-9a-fA-F]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FORMAT_BY_EXTENSION = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
                        ".txt": "te", ".pdq": "te"}


@dataclass(frozen=True)
class ListProblem:
    """One thing wrong with a hash list, where it is."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class HashEntry:
    """One valid fingerprint line of a list, with the item metadata the line carries."""

    line: int
    algorithm: str
    hash: str  # lower-case hex
    quality: int | None = None
    labels: list[str] = field(default_factory=list)
    source: str | None = None
    path: str | None = None
    sha256: str | None = None
    size: int | None = None
    meta: dict = field(default_factory=dict)
    region: str = "full"
    variant: str = "original"
    item: str | None = None  # entries sharing an item key become one item

    def identity(self) -> tuple:
        """What makes two lines duplicates of each other."""
        return (self.algorithm, self.hash, self.quality, tuple(self.labels), self.source,
                self.path, self.sha256, self.size, self.region, self.variant, self.item,
                json.dumps(self.meta, sort_keys=True))

    def item_fields(self) -> tuple:
        return (tuple(self.labels), self.source, self.path, self.sha256, self.size,
                json.dumps(self.meta, sort_keys=True))


@dataclass
class ParsedList:
    path: str
    format: str
    entries: list[HashEntry]
    problems: list[ListProblem]
    lines: int = 0


class _BadLine(ValueError):
    """A line-level validation failure (the message is shown with the line number)."""


# -- reading ------------------------------------------------------------------------------
def read_hash_list(path, fmt: str = "auto", algorithm: str = "pdq") -> ParsedList:
    """Parse and validate a hash list file. Never raises for bad content: see ``problems``.

    ``algorithm`` is used for lines that do not name theirs (bare hex, ``hash,quality``).
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        data = handle.read()
    return parse_hash_list(data, path, fmt, algorithm)


def parse_hash_list(data: bytes, name: str = "<list>", fmt: str = "auto",
                    algorithm: str = "pdq") -> ParsedList:
    """Like :func:`read_hash_list`, from the file's bytes (``name`` is used in messages)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; "
                         f"expected one of {', '.join(ALGORITHMS)}")
    problems: list[ListProblem] = []
    lines = _decoded_lines(data, name, problems)
    fmt = detect_format(name, lines) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown hash-list format {fmt!r}; expected auto or one of {FORMATS}")
    parse = {"te": _parse_te, "csv": _parse_csv, "jsonl": _parse_jsonl}[fmt]
    entries = []
    for number, parsed in parse(lines, algorithm):
        if isinstance(parsed, _BadLine):
            problems.append(ListProblem(name, number, str(parsed)))
        else:
            entries.append(parsed)
    entries = _drop_duplicates(entries, name, problems)
    entries = _check_items(entries, name, problems)
    problems.sort(key=lambda p: p.line)
    return ParsedList(name, fmt, entries, problems, len(lines))


def _decoded_lines(data: bytes, name: str, problems: list) -> list[str | None]:
    """The file's lines as text; None (with a problem recorded) where a line is unreadable."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        problems.append(ListProblem(name, 1, "the file is UTF-16 text: save it as UTF-8"))
        return []
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines: list[str | None] = []
    for number, raw in enumerate(raw_lines, start=1):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        problem = _encoding_problem(raw)
        if problem:
            problems.append(ListProblem(name, number, problem))
            lines.append(None)
        else:
            lines.append(raw.decode("utf-8"))
    return lines


def _encoding_problem(raw: bytes) -> str | None:
    if len(raw) > MAX_LINE_BYTES:
        return f"line too long ({len(raw)} bytes; at most {MAX_LINE_BYTES}): not a hash list?"
    if b"\0" in raw:
        return "contains NUL bytes: a binary file, or UTF-16 text (save it as UTF-8)"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}): "
                "save the list as UTF-8")
    return None


def detect_format(name: str, lines: list[str | None]) -> str:
    """By extension, else by the first non-empty line: '{' = jsonl, a header with 'hash' = csv."""
    by_extension = _FORMAT_BY_EXTENSION.get(os.path.splitext(name)[1].lower())
    if by_extension:
        return by_extension
    first = next((line.strip() for line in lines if line and line.strip()), "")
    if first.startswith("{"):
        return "jsonl"
    if "," in first and "hash" in [c.strip().lower() for c in first.split(",")]:
        return "csv"
    return "te"


# -- the three formats ----------------------------------------------------------------------
def _parse_te(lines, algorithm) -> Iterator[tuple[int, HashEntry | _BadLine]]:
    for number, line in enumerate(lines, start=1):
        if line is None or not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            yield number, _te_entry(number, line.strip(), algorithm)
        except _BadLine as exc:
            yield number, exc


def _te_entry(number: int, line: str, default_algorithm: str) -> HashEntry:
    if "," in line:  # hash,quality[,path]: the PDQ reference tools' and 'hashmatch hash' output
        parts = line.split(",", 2)
        hex_text = parts[0].strip()
        quality = parts[1].strip() if len(parts) > 1 else ""
        path = parts[2] if len(parts) > 2 and parts[2] else None
        algorithm = _algorithm_for_bare_hash(hex_text, default_algorithm)
        return _entry(number, algorithm, hex_text, quality, path=path)
    tokens = line.split(None, 2)
    if len(tokens) == 1:
        return _entry(number, _algorithm_for_bare_hash(tokens[0], default_algorithm), tokens[0])
    signal_type, hex_text = tokens[0].lower(), tokens[1]
    meta = {"comment": tokens[2]} if len(tokens) > 2 else {}
    return _entry(number, signal_type, hex_text, meta=meta)


def _algorithm_for_bare_hash(hex_text: str, algorithm: str) -> str:
    if algorithm == "pdq" and len(hex_text) == 16 and _HEX.fullmatch(hex_text):
        raise _BadLine("wrong length: 16 hex digits is a 64-bit hash, pdq needs 64; for an "
                       "imagehash list pass --algorithm phash (or dhash, ahash)")
    return algorithm


def _parse_csv(lines, algorithm) -> Iterator[tuple[int, HashEntry | _BadLine]]:
    readable = [line if line is not None else "" for line in lines]
    reader = csv.reader(readable)
    header = None
    last_line = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a carriage return inside an unquoted field
            number, last_line = last_line + 1, reader.line_num
            yield number, _BadLine(f"not valid CSV: {exc}")
            continue
        number, last_line = last_line + 1, reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            if "hash" not in header:
                yield number, _BadLine("CSV header has no 'hash' column (expected e.g. "
                                       "'hash,algorithm,quality,labels,source')")
                return
            continue
        if len(row) > len(header):
            yield number, _BadLine(f"{len(row)} fields but the header has {len(header)}")
            continue
        # Our CSV export quotes formula-like cells (formats.csv_safe_cell): undo exactly that.
        record = {name: csv_unguard_cell(cell) for name, cell in zip(header, row) if cell != ""}
        try:
            yield number, _record_entry(number, record, algorithm, text_fields=True)
        except _BadLine as exc:
            yield number, exc


def _parse_jsonl(lines, algorithm) -> Iterator[tuple[int, HashEntry | _BadLine]]:
    for number, line in enumerate(lines, start=1):
        if line is None or not line.strip():
            continue
        try:
            record = _loads(line)
        except _BadLine as exc:
            yield number, exc
            continue
        if not isinstance(record, dict):
            yield number, _BadLine("a JSON object is expected on each line")
            continue
        try:
            _check_json(record, "", MAX_JSON_DEPTH + 1)  # the record itself is one level
            yield number, _record_entry(number, record, algorithm, text_fields=False)
        except _BadLine as exc:
            yield number, exc


def _record_entry(number: int, record: dict, default_algorithm: str, text_fields: bool
                  ) -> HashEntry:
    """A CSV row or JSON object -> HashEntry. CSV cells are text (labels ';'-separated or a JSON
    list, meta a JSON object); JSON values are typed."""
    if "hash" not in record:
        raise _BadLine("no 'hash' value")
    algorithm = _text(record.get("algorithm", default_algorithm), "algorithm").lower()
    hex_text = _text(record["hash"], "hash")
    if "algorithm" not in record:
        algorithm = _algorithm_for_bare_hash(hex_text, algorithm)
    labels = record.get("labels", record.get("label", []))
    labels = _labels_from_cell(labels) if text_fields else labels
    meta = record.get("meta", {})
    meta = _json_object_cell(meta) if text_fields else meta
    return _entry(number, algorithm, hex_text, record.get("quality"),
                  labels=labels, source=record.get("source"), path=record.get("path"),
                  sha256=record.get("sha256"), size=record.get("size"), meta=meta,
                  region=record.get("region", "full"), variant=record.get("variant", "original"),
                  item=record.get("item"))


def _entry(number, algorithm, hex_text, quality=None, *, labels=(), source=None, path=None,
           sha256=None, size=None, meta=None, region="full", variant="original", item=None
           ) -> HashEntry:
    """Validate every field of one line; raises _BadLine naming the first bad one."""
    algorithm = _check_algorithm(algorithm)
    return HashEntry(
        line=number, algorithm=algorithm, hash=_check_hash(hex_text, algorithm),
        quality=_check_quality(quality, algorithm), labels=_check_labels(labels),
        source=_optional_text(source, "source"), path=_optional_text(path, "path"),
        sha256=_check_sha256(sha256), size=_check_size(size),
        meta=_check_meta(meta), region=_text(region, "region"), variant=_text(variant, "variant"),
        item=None if item is None else str(item))


# -- field checks ---------------------------------------------------------------------------
def _check_algorithm(algorithm) -> str:
    algorithm = str(algorithm).strip().lower()
    if algorithm not in ALGORITHMS:
        raise _BadLine(f"unknown algorithm {algorithm[:40]!r} (known: {', '.join(ALGORITHMS)})")
    return algorithm


def _check_hash(hex_text, algorithm: str) -> str:
    hex_text = _text(hex_text, "hash").strip()
    if not _HEX.fullmatch(hex_text):
        bad = next((c for c in hex_text if c not in "0123456789abcdefABCDEF"), "")
        raise _BadLine(f"not a hex hash: {hex_text[:80]!r}" +
                       (f" (character {bad!r} is not hex)" if bad else " (empty)"))
    bits = 4 * len(hex_text)
    if algorithm == "pdq" and bits != DEFAULT_BITS["pdq"]:
        raise _BadLine(f"wrong length: pdq hashes have 64 hex digits, this has {len(hex_text)}")
    side = int(round(bits ** 0.5))
    if algorithm != "pdq" and (bits % 64 or side * side != bits):
        raise _BadLine(f"wrong length: {algorithm} hashes have 16 hex digits (64 bits), "
                       f"this has {len(hex_text)}")
    return hex_text.lower()


def _check_quality(quality, algorithm: str) -> int | None:
    if quality is None or (isinstance(quality, str) and quality.strip() == ""):
        return None
    if isinstance(quality, bool) or isinstance(quality, float) and not quality.is_integer():
        raise _BadLine(f"bad quality {quality!r}: a whole number 0-{MAX_QUALITY} is expected")
    try:
        value = int(str(quality).strip()) if not isinstance(quality, (int, float)) else int(quality)
    except ValueError:
        raise _BadLine(f"bad quality {str(quality)[:40]!r}: a whole number 0-{MAX_QUALITY} "
                       "is expected") from None
    if not 0 <= value <= MAX_QUALITY:
        raise _BadLine(f"bad quality {value}: must be between 0 and {MAX_QUALITY}")
    return value


def _check_labels(labels) -> list[str]:
    if isinstance(labels, str):
        labels = [labels]
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise _BadLine("labels must be a list of strings")
    return [_text(x, "label") for x in labels if x]


def _labels_from_cell(cell) -> list[str]:
    cell = str(cell).strip()
    if cell.startswith("["):
        try:
            value = _loads(cell, "labels")
        except _BadLine as exc:
            if "nested" in str(exc):
                raise
            raise _BadLine("labels: not a valid JSON list") from None
        return _check_labels(value)
    return [part for part in cell.split(";") if part]


def _json_object_cell(cell) -> dict:
    if isinstance(cell, dict):
        return cell
    try:
        return _loads(cell, "meta")
    except _BadLine as exc:
        if "nested" in str(exc):
            raise
        raise _BadLine("meta must be a JSON object, e.g. {\"case\": \"A-17\"}") from None


def _check_meta(meta) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise _BadLine("meta must be a JSON object")
    _check_json(meta, "meta", MAX_JSON_DEPTH)
    return meta


def _loads(text: str, what: str = ""):
    """json.loads with its failures as line problems (deep nesting, 5000-digit numbers)."""
    prefix = f"{what}: " if what else ""
    try:
        return json.loads(text)
    except RecursionError:
        raise _BadLine(f"{prefix}JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise _BadLine(f"{prefix}not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise _BadLine(f"{prefix}not valid JSON ({str(exc)[:80]})") from None


def _check_json(value, where: str, max_depth: int) -> None:
    """Raise _BadLine unless ``value`` is plain JSON within the limits: containers nested at
    most ``max_depth`` deep, integers of 64 bits, finite numbers, text without lone
    surrogates, object keys that are text. Iterative: no recursion to exhaust."""
    stack = [(value, 0, where)]
    while stack:
        item, depth, path = stack.pop()
        label = path or "value"
        if isinstance(item, (dict, list, tuple)):
            if depth + 1 > max_depth:
                raise _BadLine(f"{label}: JSON nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise _BadLine(f"{label}: object keys must be text")
                    _text(key, f"{label} key")
                    stack.append((child, depth + 1, f"{path}.{key}"[:60] if path else key[:60]))
            else:
                stack.extend((child, depth + 1, f"{label}[{n}]") for n, child in enumerate(item))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -MAX_JSON_INT - 1 <= item <= MAX_JSON_INT:
                raise _BadLine(f"{label}: integer too large (at most 64 bits, "
                               f"{len(str(abs(item)))} digits given)")
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise _BadLine(f"{label}: contains NaN or infinity")
        elif isinstance(item, str):
            _text(item, label)
        else:
            raise _BadLine(f"{label}: {type(item).__name__} is not a JSON value")


def _check_sha256(value) -> str | None:
    if value is None:
        return None
    value = _text(value, "sha256").strip().lower()
    if not _SHA256.fullmatch(value):
        raise _BadLine("sha256 must be 64 hex digits")
    return value


def _check_size(value) -> int | None:
    if value is None:
        return None
    try:
        size = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise _BadLine(f"size must be a whole number of bytes, got {str(value)[:40]!r}") from None
    if isinstance(value, bool) or size < 0:
        raise _BadLine("size must be a non-negative whole number")
    if size > MAX_JSON_INT:
        raise _BadLine(f"size {str(size)[:40]} is too large (at most {MAX_JSON_INT} bytes)")
    return size


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise _BadLine(f"{what} must be text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a JSON "\udc80" escape
        raise _BadLine(f"{what}: not valid Unicode text (lone surrogate "
                       f"{value[exc.start]!r} at character {exc.start + 1})") from None
    return value


def _optional_text(value, what: str) -> str | None:
    return None if value is None else _text(value, what)


def validate_item_fields(algorithm: str = "pdq", quality=None, labels=(), source=None,
                         meta=None) -> tuple[int | None, list[str], str | None, dict]:
    """The checks import applies to a line's quality, labels, source and meta, for callers
    that store hashes another way (:meth:`hashmatch.Index.add_hashes`): returns them
    normalised as ``(quality, labels, source, meta)`` or raises HashFormatError.

    ``labels``: a list of strings (one string is one label); ``meta``: a JSON object (None
    = {}); quality 0-100 or None.
    """
    try:
        return (_check_quality(quality, _check_algorithm(algorithm)),
                _check_labels([] if labels is None else labels),
                _optional_text(source, "source"), _check_meta(meta))
    except _BadLine as exc:
        raise HashFormatError(str(exc)) from None


# -- whole-list checks ----------------------------------------------------------------------
def _drop_duplicates(entries, name, problems) -> list[HashEntry]:
    seen: dict[tuple, int] = {}
    kept = []
    for entry in entries:
        key = entry.identity()
        if key in seen:
            problems.append(ListProblem(name, entry.line, f"duplicate of line {seen[key]}"))
            continue
        seen[key] = entry.line
        kept.append(entry)
    return kept


def _check_items(entries, name, problems) -> list[HashEntry]:
    """Lines sharing an item key must agree on the item's metadata; disagreeing lines go."""
    first_of_item: dict[str, HashEntry] = {}
    kept = []
    for entry in entries:
        if entry.item is not None:
            first = first_of_item.setdefault(entry.item, entry)
            if first is not entry and first.item_fields() != entry.item_fields():
                problems.append(ListProblem(
                    name, entry.line, f"item {entry.item[:40]!r}: labels, source, path, sha256, "
                    f"size or meta differ from line {first.line}"))
                continue
        kept.append(entry)
    return kept


# -- import -----------------------------------------------------------------------------------
@dataclass
class ImportReport:
    path: str
    format: str
    problems: list[ListProblem]
    imported: bool  # False when problems blocked the import
    added: list[int] = field(default_factory=list)  # new item ids
    already_present: int = 0
    fingerprints: int = 0
    lines: int = 0


def import_hash_list(index, path_or_parsed, fmt: str = "auto", algorithm: str = "pdq",
                     labels: Iterable[str] = (), source: str | None = None,
                     skip_invalid: bool = False) -> ImportReport:
    """Validate the whole list, then store its valid entries in one transaction.

    ``path_or_parsed``: the list's path, or what :func:`read_hash_list` returned for it.
    With problems and not ``skip_invalid``, nothing is stored. ``labels`` are added to every
    item; ``source`` is used for entries that do not name their own. An entry identical to a
    stored item (same hash, path and source; or same file SHA-256) is not stored twice.
    """
    parsed = path_or_parsed if isinstance(path_or_parsed, ParsedList) else \
        read_hash_list(path_or_parsed, fmt, algorithm)
    report = ImportReport(parsed.path, parsed.format, parsed.problems, imported=False,
                          lines=parsed.lines)
    if parsed.problems and not skip_invalid:
        return report
    entries = [_with_defaults(e, list(labels), source) for e in parsed.entries]
    groups = _group_items(entries)
    stored = _stored_hash_only_entries(index, groups)
    fresh = [g for g in groups if _hash_only_key(g[0]) not in stored]
    report.already_present = len(groups) - len(fresh)
    records = [_item_record(group) for group in fresh]
    outcomes = index.add_item_records(records, detail={"list": os.path.basename(parsed.path),
                                                       "format": parsed.format,
                                                       "source": source})
    report.added = [o.item_id for o in outcomes if o.status == "added"]
    report.already_present += sum(1 for o in outcomes if o.status != "added")
    report.fingerprints = sum(len(r.fingerprints) for r, o in zip(records, outcomes)
                              if o.status == "added")
    report.imported = True
    return report


def _with_defaults(entry: HashEntry, labels: list[str], source: str | None) -> HashEntry:
    merged = list(dict.fromkeys(entry.labels + labels))
    return replace(entry, labels=merged, source=entry.source if entry.source else source)


def _group_items(entries: list[HashEntry]) -> list[list[HashEntry]]:
    groups: dict = {}
    for position, entry in enumerate(entries):
        groups.setdefault(entry.item if entry.item is not None else ("line", position),
                          []).append(entry)
    return list(groups.values())


def _item_record(group: list[HashEntry]):
    from .store import FingerprintRecord, ItemRecord

    first = group[0]
    return ItemRecord(
        path=first.path, sha256=first.sha256, size=first.size, labels=list(first.labels),
        source=first.source, meta=dict(first.meta),
        fingerprints=[FingerprintRecord(e.algorithm, 4 * len(e.hash), e.region, e.variant,
                                        bytes.fromhex(e.hash), e.quality) for e in group])


def _hash_only_key(entry: HashEntry) -> tuple | None:
    if entry.sha256 is not None:
        return None  # files: the store itself deduplicates them by SHA-256
    return (entry.algorithm, entry.hash, entry.path, entry.source)


def _stored_hash_only_entries(index, groups) -> set:
    """(algorithm, hash, path, source) of stored items that some list entry repeats."""
    wanted: dict[str, set] = {}
    for group in groups:
        if group[0].sha256 is None:
            wanted.setdefault(group[0].algorithm, set()).add(group[0].hash)
    stored_kinds = {a for a, _ in index.store.algorithms()}
    found = set()
    for algorithm, hashes in wanted.items():
        if algorithm not in stored_kinds:
            continue
        rows = index.fingerprint_rows(algorithm)
        hits = [(int(item), code.tobytes().hex()) for item, code in zip(rows.item_ids, rows.codes)
                if code.tobytes().hex() in hashes]
        items = index.store.get_items({item for item, _ in hits}) if hits else {}
        found.update((algorithm, hex_text, items[item].path, items[item].source)
                     for item, hex_text in hits if items[item].sha256 is None)
    return found


# -- export -----------------------------------------------------------------------------------
def iter_export_rows(index, algorithms: Iterable[str] | None = None) -> Iterator[dict]:
    """One dict per stored fingerprint (live items), grouped by item, item ids ascending."""
    kinds = sorted(index.store.algorithms())
    if algorithms is not None:
        wanted = set(algorithms)
        kinds = [(a, n) for a, n in kinds if a in wanted]
    rows = []
    for algorithm, nbits in kinds:
        codes = index.fingerprint_rows(algorithm, nbits)
        for k in range(len(codes)):
            rows.append((int(codes.item_ids[k]), int(codes.fingerprint_ids[k]), algorithm,
                         codes.codes[k].tobytes().hex(), int(codes.qualities[k]),
                         str(codes.regions[k]), str(codes.variants[k])))
    rows.sort()
    for start in range(0, len(rows), 1000):
        chunk = rows[start:start + 1000]
        items = index.store.get_items({r[0] for r in chunk})
        for item_id, _, algorithm, hex_text, quality, region, variant in chunk:
            item = items[item_id]
            yield {"item": item_id, "algorithm": algorithm, "hash": hex_text,
                   "quality": None if quality < 0 else quality, "region": region,
                   "variant": variant, "labels": list(item.labels), "source": item.source,
                   "path": item.path, "sha256": item.sha256, "size": item.size,
                   "meta": dict(item.meta)}


def export_hash_list(index, out: TextIO, fmt: str = "jsonl", algorithm: str = "pdq") -> int:
    """Write every stored fingerprint to ``out``; returns the number of lines written.

    ``jsonl`` and ``csv`` carry everything, region fingerprints included (import of the
    export reproduces the items, their regions and metadata); ``te`` writes
    ``hash,quality,path`` lines of ``algorithm``'s full-frame hashes only, one per image, as
    other PDQ systems expect.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown hash-list format {fmt!r}; expected one of {FORMATS}")
    rows = iter_export_rows(index, [algorithm] if fmt == "te" else None)
    if fmt == "te":
        rows = (row for row in rows if row["region"] == "full" and row["variant"] == "original")
    writer = {"te": _write_te, "csv": _write_csv, "jsonl": _write_jsonl}[fmt]
    return writer(rows, out)


def _write_jsonl(rows, out: TextIO) -> int:
    count = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
        count += 1
    return count


def _write_csv(rows, out: TextIO) -> int:
    # "\r\n" (RFC 4180): the csv module quotes a cell holding any line-terminator character,
    # so only this terminator makes it quote a path or label with a bare CR in it.
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    count = 0
    for row in rows:
        cells = dict(row)
        cells["labels"] = _labels_cell(row["labels"])
        cells["meta"] = json.dumps(row["meta"], ensure_ascii=False) if row["meta"] else ""
        writer.writerow(csv_safe_row({k: "" if v is None else v for k, v in cells.items()}))
        count += 1
    return count


def _labels_cell(labels: list[str]) -> str:
    if any(";" in label or label.startswith("[") for label in labels):
        return json.dumps(labels, ensure_ascii=False)
    return ";".join(labels)


def _write_te(rows, out: TextIO) -> int:
    count = 0
    for row in rows:
        quality = "" if row["quality"] is None else str(row["quality"])
        path = row["path"] if row["path"] and "\n" not in row["path"] else ""
        fields = [row["hash"], quality, path] if path else [row["hash"], quality]
        out.write(",".join(fields).rstrip(",") + "\n")
        count += 1
    return count


def format_problems(problems: list[ListProblem], limit: int = 50) -> str:
    """Problems one per line (at most ``limit``, then a count of the rest)."""
    shown = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        shown.append(f"... and {len(problems) - limit} more problems")
    return "\n".join(shown)


__all__ = ["FORMATS", "HashEntry", "ImportReport", "ListProblem", "ParsedList",
           "detect_format", "export_hash_list", "format_problems", "import_hash_list",
           "iter_export_rows", "parse_hash_list", "read_hash_list", "validate_item_fields"]
