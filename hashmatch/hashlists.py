"""Hash lists: read, validate, import and export lists of fingerprints (no images needed).

Formats
- ``te``: the text of python-threatexchange and the PDQ reference tools, one hash a line:
  ``pdq <hex> [anything]`` (signal type first), a bare ``<hex>``, or ``<hex>,<quality>[,<path>]``
  (what the PDQ reference hasher and ``hashmatch hash`` print). ``#`` starts a comment line.
- ``csv``: a header naming the columns; ``hash`` is required, optional ones are ``algorithm,
  quality, labels (or label), source, path, sha256, size, region, variant, meta`` (a JSON
  object) and ``item`` (rows with the same item value are one item with several fingerprints).
- ``jsonl``: one JSON object a line with the same keys (``labels`` a list, ``meta`` an object).

Validation reads the whole file and reports every problem with its line number: wrong
length, non-hex, unknown algorithm, bad quality, a line repeated, text that is not UTF-8, NUL
bytes, lines over 64 KiB, JSON nested over 32 levels or integers over 64 bits. Import is one
store transaction: all valid entries or nothing. Given a path, import streams the file
(batches written inside that transaction, rolled back if any problem turns up), so a list of
millions of lines needs memory for 16-byte digests of its lines, not for the lines.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, TextIO

from .errors import HashFormatError
from .fingerprint import DEFAULT_BITS, check_algorithm
from .formats import csv_safe_row, csv_unguard_cell

FORMATS = ("te", "csv", "jsonl")
# Export only, named after what reads them (both import back as ``te``):
# - ``pytx``: ``pdq <hex>`` lines, what a python-threatexchange ``local_file`` collaboration
#   reads (it splits each line at the first space into signal type and signal, so nothing
#   may follow the hash: no quality, no path);
# - ``hex``: bare lower-case hex lines, what ``threatexchange match -H photo -`` reads from
#   standard input, and a ``local_file`` collaboration configured with ``signal_type``.
EXPORT_FORMATS = FORMATS + ("pytx", "hex")
PYTX_SIGNAL_TYPES = {"pdq": "pdq"}  # our algorithm -> python-threatexchange SignalType name
MAX_LINE_BYTES = 64 * 1024
MAX_QUALITY = 100
# JSON from outside (labels, meta, whole JSONL records) may nest this deep and hold integers
# of 64 bits at most: deeper input raised RecursionError, larger integers OverflowError in
# the store, and other tools reading our exports (jsonb, JavaScript) cannot hold them.
MAX_JSON_DEPTH = 32
MAX_JSON_INT = 2 ** 63 - 1
CSV_COLUMNS = ["item", "algorithm", "hash", "quality", "region", "variant", "labels", "source",
               "path", "sha256", "size", "meta"]
# CSV header names from other tools (case-insensitive) -> our column; any other column is
# kept in the entry's meta under its own name.
CSV_ALIASES = {**{name: name for name in CSV_COLUMNS}, "pdq": "hash", "signal": "hash",
               "filepath": "path", "file": "path", "label": "labels"}
_VPDQ_LINE = re.compile(r"\d+,[0-9a-fA-F]{64},\d+,\d+(\.\d*)?")
VPDQ_MESSAGE = ("this looks like a vPDQ video hash list (frame_number,hash,quality,timestamp "
                "lines); hashmatch matches images, not videos")
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
    # CSV: each header name as written -> the column it was read as ("path", "hash", ...,
    # or "meta.NAME" for a column kept in meta). Empty for te and jsonl.
    columns: dict = field(default_factory=dict)


class _BadLine(ValueError):
    """A line-level validation failure (the message is shown with the line number)."""


# -- reading ------------------------------------------------------------------------------
def read_hash_list(path, fmt: str = "auto", algorithm: str = "pdq") -> ParsedList:
    """Parse and validate a hash list file. Never raises for bad content: see ``problems``.

    ``algorithm`` is used for lines that do not name theirs (bare hex, ``hash,quality``).
    Holds every entry in memory: to store a long list, give its path to
    :func:`import_hash_list`, which streams it.
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        return _parse_all(handle, path, fmt, algorithm)


def parse_hash_list(data: bytes, name: str = "<list>", fmt: str = "auto",
                    algorithm: str = "pdq") -> ParsedList:
    """Like :func:`read_hash_list`, from the file's bytes (``name`` is used in messages)."""
    return _parse_all(io.BytesIO(data), name, fmt, algorithm)


def _parse_all(handle, name: str, fmt: str, algorithm: str) -> ParsedList:
    problems: list[ListProblem] = []
    counter = [0]
    columns: dict = {}
    fmt, numbered = _parse_stream(handle, name, fmt, algorithm, problems, counter, columns)
    entries = []
    for number, parsed in numbered:
        if isinstance(parsed, _BadLine):
            problems.append(ListProblem(name, number, str(parsed)))
        else:
            entries.append(parsed)
    entries = _drop_duplicates(entries, name, problems)
    entries = _check_items(entries, name, problems)
    problems.sort(key=lambda p: p.line)
    return ParsedList(name, fmt, entries, problems, counter[0], columns)


def _parse_stream(handle, name: str, fmt: str, algorithm: str, problems: list, counter: list,
                  columns: dict | None = None):
    """(format, iterator of (line number, HashEntry or _BadLine)) reading ``handle`` a line at
    a time; encoding problems go to ``problems``, ``counter[0]`` counts the lines read."""
    check_algorithm(algorithm)  # HashFormatError, a ValueError
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"unknown hash-list format {fmt!r}; expected auto or one of {FORMATS}")
    lines = _decoded_lines(handle, name, problems, counter)
    head: list[str | None] = []
    if fmt == "auto":  # the first non-empty line decides (see detect_format)
        for line in lines:
            head.append(line)
            if line and line.strip():
                break
        fmt = detect_format(name, head)
    lines = itertools.chain(head, lines)
    if fmt == "csv":
        return fmt, _parse_csv(lines, algorithm, {} if columns is None else columns)
    return fmt, {"te": _parse_te, "jsonl": _parse_jsonl}[fmt](lines, algorithm)


def _raw_lines(handle) -> Iterator[bytes | int]:
    """The file's lines without their newline, each read with a bounded buffer: a line over
    MAX_LINE_BYTES is skipped to its end and given as its length (an int) instead."""
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 2)
        if not raw:
            return
        if raw.endswith(b"\n"):
            yield raw[:-1]
            continue
        if len(raw) <= MAX_LINE_BYTES + 1:  # the last line, without a newline
            yield raw
            return
        length = len(raw)
        while raw and not raw.endswith(b"\n"):
            raw = handle.readline(1 << 20)
            length += len(raw)
        yield length - (1 if raw.endswith(b"\n") else 0)


def _decoded_lines(handle, name: str, problems: list, counter: list) -> Iterator[str | None]:
    """The file's lines as text; None (with a problem recorded) where a line is unreadable."""
    for number, raw in enumerate(_raw_lines(handle), start=1):
        counter[0] = number
        if number == 1 and isinstance(raw, bytes):
            if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                problems.append(ListProblem(name, 1, "the file is UTF-16 text: save it as UTF-8"))
                counter[0] = 0
                return
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
        if isinstance(raw, int):
            problem = (f"line too long ({raw} bytes; at most {MAX_LINE_BYTES}): "
                       "not a hash list?")
        else:
            raw = raw[:-1] if raw.endswith(b"\r") else raw
            problem = _encoding_problem(raw)
        if problem:
            problems.append(ListProblem(name, number, problem))
            yield None
        else:
            yield raw.decode("utf-8")


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
    if "," in first and any(CSV_ALIASES.get(c.strip().lower()) == "hash"
                            for c in first.split(",")):
        return "csv"
    return "te"


# -- the three formats ----------------------------------------------------------------------
def _parse_te(lines, algorithm) -> Iterator[tuple[int, HashEntry | _BadLine]]:
    first = True
    for number, line in enumerate(lines, start=1):
        if line is None or not line.strip() or line.lstrip().startswith("#"):
            continue
        if first and _VPDQ_LINE.fullmatch(line.strip()):
            yield number, _BadLine(VPDQ_MESSAGE)  # once, not "wrong length" on every frame
            return
        first = False
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


def _csv_header(row: list[str], columns: dict) -> list[str]:
    """Each header cell -> the column it is read as (CSV_ALIASES, else "meta.NAME");
    records the mapping in ``columns``."""
    targets = []
    for cell in row:
        name = cell.strip()
        target = CSV_ALIASES.get(name.lower())
        if target is None or target in targets:
            target = f"meta.{name}"
        targets.append(target)
        columns[name] = target
    return targets


def _parse_csv(lines, algorithm, columns=None) -> Iterator[tuple[int, HashEntry | _BadLine]]:
    columns = {} if columns is None else columns
    readable = (line if line is not None else "" for line in lines)
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
            if "frame_number" in [cell.strip().lower() for cell in row]:
                yield number, _BadLine(VPDQ_MESSAGE)
                return
            header = _csv_header(row, columns)
            if "hash" not in header:
                yield number, _BadLine("CSV header has no 'hash' column (expected e.g. "
                                       "'hash,algorithm,quality,labels,source'; 'pdq' and "
                                       "'signal' are read as hash too)")
                return
            continue
        if len(row) > len(header):
            yield number, _BadLine(f"{len(row)} fields but the header has {len(header)}")
            continue
        # Our CSV export quotes formula-like cells (formats.csv_safe_cell): undo exactly that.
        record, extra = {}, {}
        for name, cell in zip(header, row):
            if cell != "":
                if name.startswith("meta."):
                    extra[name[5:]] = csv_unguard_cell(cell)
                else:
                    record[name] = csv_unguard_cell(cell)
        try:
            yield number, _record_entry(number, record, algorithm, text_fields=True,
                                        extra_meta=extra)
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


def _record_entry(number: int, record: dict, default_algorithm: str, text_fields: bool,
                  extra_meta: dict | None = None) -> HashEntry:
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
    if extra_meta:  # CSV columns hashmatch has no place for; a meta column's keys win
        meta = {**extra_meta, **meta} if isinstance(meta, dict) else meta
    return _entry(number, algorithm, hex_text, record.get("quality"),
                  labels=labels, source=record.get("source"), path=record.get("path"),
                  sha256=record.get("sha256"), size=record.get("size"), meta=meta,
                  region=record.get("region", "full"), variant=record.get("variant", "original"),
                  item=record.get("item"))


def _entry(number, algorithm, hex_text, quality=None, *, labels=(), source=None, path=None,
           sha256=None, size=None, meta=None, region="full", variant="original", item=None
           ) -> HashEntry:
    """Validate every field of one line; raises _BadLine naming the first bad one."""
    algorithm = _listed_algorithm(algorithm)
    return HashEntry(
        line=number, algorithm=algorithm, hash=_check_hash(hex_text, algorithm),
        quality=_check_quality(quality, algorithm), labels=_check_labels(labels),
        source=_optional_text(source, "source"), path=_optional_text(path, "path"),
        sha256=_check_sha256(sha256), size=_check_size(size),
        meta=_check_meta(meta), region=_text(region, "region"), variant=_text(variant, "variant"),
        item=None if item is None else str(item))


# -- field checks ---------------------------------------------------------------------------
def _listed_algorithm(algorithm) -> str:
    """A line's algorithm field, as lists write it (any case, padded), checked."""
    try:
        return check_algorithm(str(algorithm).strip().lower())
    except HashFormatError as exc:
        raise _BadLine(str(exc)) from None


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
        return (_check_quality(quality, _listed_algorithm(algorithm)),
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
    # CSV: header name as written -> column read ("hash", "path", "meta.colour", ...), so
    # the CLI can show how another tool's columns were understood. Empty for te and jsonl.
    columns: dict = field(default_factory=dict)


PROGRESS_EVERY = 10_000  # lines between two progress calls of a streamed import


class _Abort(Exception):
    """Raised inside a streamed import's record iterator: roll the transaction back."""


def import_hash_list(index, path_or_parsed, fmt: str = "auto", algorithm: str = "pdq",
                     labels: Iterable[str] = (), source: str | None = None,
                     skip_invalid: bool = False,
                     progress: Callable[[int], None] | None = None) -> ImportReport:
    """Validate the whole list and store its valid entries in one transaction: all or
    nothing, as always.

    ``path_or_parsed``: the list's path (streamed: read, checked and written a batch at a
    time inside that one transaction, so memory stays bounded on lists of millions of
    lines), or what :func:`read_hash_list` returned for it (every entry already in memory).
    With problems and not ``skip_invalid``, nothing is stored (the transaction is rolled
    back; the whole file is still read so that every problem is reported). ``labels`` are
    added to every item; ``source`` is used for entries that do not name their own. An entry
    identical to a stored item (same hash, path and source; or same file SHA-256) is not
    stored twice. ``progress(lines)``: called with the number of lines read so far, every
    PROGRESS_EVERY lines and at the end (streamed import only).

    Streamed, the rows of one ``item`` must be next to each other (as every export writes
    them); a row of an item met again after other rows is reported as a problem.
    """
    if not isinstance(path_or_parsed, ParsedList):
        return _import_stream(index, os.fspath(path_or_parsed), fmt, algorithm, list(labels),
                              source, skip_invalid, progress)
    parsed = path_or_parsed
    report = ImportReport(parsed.path, parsed.format, parsed.problems, imported=False,
                          lines=parsed.lines, columns=dict(parsed.columns))
    if parsed.problems and not skip_invalid:
        return report
    entries = [_with_defaults(e, list(labels), source) for e in parsed.entries]
    groups = _group_items(entries)
    stored = _StoredHashOnly(index)
    fresh = [g for g in groups if not stored.has(g[0])]
    report.already_present = len(groups) - len(fresh)
    _store_records(index, report, (_item_record(group) for group in fresh), source)
    return report


def _store_records(index, report: ImportReport, records, source) -> None:
    """Write ``records`` (an iterable) in one streamed transaction; fill in the report."""
    sizes: list[int] = []

    def counted():
        for record in records:
            sizes.append(len(record.fingerprints))
            yield record

    outcomes = index.store.add_items_streaming(
        counted(), action="import",
        detail={"list": os.path.basename(report.path), "format": report.format,
                "source": source})
    index.sync()  # what Index.add_item_records does after writing
    report.added = [o.item_id for o in outcomes if o.status == "added"]
    report.already_present += sum(1 for o in outcomes if o.status != "added")
    report.fingerprints = sum(n for n, o in zip(sizes, outcomes) if o.status == "added")
    report.imported = True


def _digest(value: tuple) -> bytes:
    """16 bytes standing for a tuple of plain values (far smaller than the tuple)."""
    return hashlib.blake2b(repr(value).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _import_stream(index, path: str, fmt: str, algorithm: str, labels: list[str],
                   source: str | None, skip_invalid: bool, progress) -> ImportReport:
    problems: list[ListProblem] = []
    report = ImportReport(path, fmt, problems, imported=False)
    counter = [0]
    stored = _StoredHashOnly(index)

    def bad(number: int, message: str) -> None:
        problems.append(ListProblem(path, number, message))

    def records():
        seen: dict[bytes, int] = {}  # identity digest -> first line
        items: dict[str, tuple[int, bytes]] = {}  # item key -> (first line, fields digest)
        group: list[HashEntry] = []
        reported = 0
        with open(path, "rb") as handle:
            report.format, numbered = _parse_stream(handle, path, fmt, algorithm, problems,
                                                    counter, report.columns)
            for number, parsed in numbered:
                if progress is not None and counter[0] - reported >= PROGRESS_EVERY:
                    reported = counter[0]
                    progress(reported)
                if isinstance(parsed, _BadLine):
                    bad(number, str(parsed))
                    continue
                key = _digest(parsed.identity())
                if key in seen:
                    bad(number, f"duplicate of line {seen[key]}")
                    continue
                seen[key] = number
                same_group = group and parsed.item is not None and parsed.item == group[0].item
                if parsed.item is not None:
                    fields = _digest(parsed.item_fields())
                    first = items.setdefault(parsed.item, (number, fields))
                    if first[1] != fields:
                        bad(number, f"item {parsed.item[:40]!r}: labels, source, path, sha256, "
                                    f"size or meta differ from line {first[0]}")
                        continue
                    if first[0] != number and not same_group:
                        bad(number, f"item {parsed.item[:40]!r}: its rows must be next to each "
                                    f"other (the first is line {first[0]})")
                        continue
                if same_group:
                    group.append(parsed)
                    continue
                if group:
                    yield from _fresh_record(group, labels, source, stored, report,
                                             problems, skip_invalid)
                group = [parsed]
            if group:
                yield from _fresh_record(group, labels, source, stored, report, problems,
                                         skip_invalid)
        if progress is not None:
            progress(counter[0])
        if problems and not skip_invalid:
            raise _Abort

    try:
        _store_records(index, report, records(), source)
    except _Abort:
        report.added, report.fingerprints, report.already_present = [], 0, 0
        report.imported = False
    report.lines = counter[0]
    problems.sort(key=lambda p: p.line)
    return report


def _fresh_record(group, labels, source, stored, report, problems, skip_invalid):
    """The record of one item's rows, unless it is stored already (or the list has failed
    and nothing will be committed: then records are no longer built)."""
    if problems and not skip_invalid:
        return
    group = [_with_defaults(e, labels, source) for e in group]
    if stored.has(group[0]):
        report.already_present += 1
        return
    yield _item_record(group)


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


class _StoredHashOnly:
    """Which list entries repeat a stored hash-list item (same algorithm, hash, path and
    source), read from the store once per algorithm, as 16-byte digests."""

    def __init__(self, index):
        self._index = index
        self._kinds = None
        self._keys: dict[str, set] = {}

    def has(self, entry: HashEntry) -> bool:
        key = _hash_only_key(entry)
        if key is None:
            return False
        if self._kinds is None:
            self._kinds = {a for a, _ in self._index.store.algorithms()}
        if entry.algorithm not in self._kinds:
            return False
        if entry.algorithm not in self._keys:
            self._keys[entry.algorithm] = self._load(entry.algorithm)
        return _digest(key) in self._keys[entry.algorithm]

    def _load(self, algorithm: str) -> set:
        rows = self._index.fingerprint_rows(algorithm)
        found = set()
        for start in range(0, len(rows.item_ids), 10_000):
            ids = rows.item_ids[start:start + 10_000]
            items = self._index.store.get_items({int(i) for i in ids})
            for item_id, code in zip(ids, rows.codes[start:start + 10_000]):
                item = items.get(int(item_id))
                if item is not None and item.sha256 is None:
                    found.add(_digest((algorithm, code.tobytes().hex(), item.path,
                                       item.source)))
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
    the PDQ reference tools print them; ``pytx`` (``pdq <hex>``) and ``hex`` (bare hex) the
    same hashes as python-threatexchange reads them (see EXPORT_FORMATS).
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown hash-list format {fmt!r}; expected one of {EXPORT_FORMATS}")
    if fmt == "pytx" and algorithm not in PYTX_SIGNAL_TYPES:
        raise ValueError(f"python-threatexchange has no signal type for {algorithm}: export "
                         "--format hex (bare hashes) or jsonl instead")
    one_kind = fmt in ("te", "pytx", "hex")
    rows = iter_export_rows(index, [algorithm] if one_kind else None)
    if one_kind:
        rows = (row for row in rows if row["region"] == "full" and row["variant"] == "original")
    writer = {"te": _write_te, "csv": _write_csv, "jsonl": _write_jsonl, "pytx": _write_pytx,
              "hex": _write_hex}[fmt]
    return writer(rows, out)


def pytx_line(fingerprint) -> str:
    """One fingerprint as python-threatexchange's signal text, ``pdq <hex>``: what a
    ``local_file`` collaboration reads (``hashmatch hash`` can print these)."""
    name = PYTX_SIGNAL_TYPES.get(fingerprint.algorithm)
    if name is None:
        raise ValueError(f"python-threatexchange has no signal type for "
                         f"{fingerprint.algorithm}")
    return f"{name} {fingerprint.hex()}"


def _write_pytx(rows, out: TextIO) -> int:
    count = 0
    for row in rows:
        out.write(f"{PYTX_SIGNAL_TYPES[row['algorithm']]} {row['hash']}\n")
        count += 1
    return count


def _write_hex(rows, out: TextIO) -> int:
    count = 0
    for row in rows:
        out.write(row["hash"] + "\n")
        count += 1
    return count


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


__all__ = ["EXPORT_FORMATS", "FORMATS", "HashEntry", "ImportReport", "ListProblem", "ParsedList",
           "detect_format", "export_hash_list", "format_problems", "import_hash_list",
           "iter_export_rows", "parse_hash_list", "pytx_line", "read_hash_list",
           "validate_item_fields"]
