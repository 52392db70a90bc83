"""Query results as a readable table, JSON lines or CSV (the CLI's outputs, usable from Python)."""
from __future__ import annotations

import csv
import json
from typing import Iterable, TextIO

from .regions.names import RegionName
from .text import ljust, rjust, safe, shorten, storable, width

# How the matching copy differs from the stored image, by the query variant that matched.
# Quarter turns are not given a direction: conventions (clockwise or not, EXIF or pixels)
# differ between tools, and the investigator needs "turned", not an angle to argue about.
VARIANT_WORDS = {
    "original": "as is",
    "rot90": "quarter-turned",
    "rot180": "upside down (180)",
    "rot270": "quarter-turned",
    "flipx": "flipped top to bottom",
    "flipy": "mirrored",
    "flipplus1": "mirrored + quarter-turned",
    "flipminus1": "mirrored + quarter-turned",
}

# Which part of an image the match was found in (hashmatch.regions), in words.
QUERY_REGION_WORDS = {
    "content": "borders cut off",
    "embedded": "picture cut out of its frame",
    "framed": "picture cut out of its frame",
    "deskewed": "turned back a few degrees",
    "straightened": "turned back a few degrees, cut edges restored",
    "turned": "turned back a few degrees (a guess), cut edges restored",
}
STORED_REGION_WORDS = {
    "content": "known image without its borders",
    "embedded": "picture inside the known image",
    "crop": "cropped",
}


# A query box moved onto the stored picture before comparing (hashmatch.regions.Aligner).
ALIGNED_WORDS = "edges matched to the known image"


def describe_how(query_variant: str, query_region: str, stored_region: str) -> str:
    """How the query matched, in words: rotation/flip, then which parts of either image."""
    words = [VARIANT_WORDS.get(query_variant, query_variant)]
    query = RegionName.try_parse(query_region)
    if query is None or query.kind != "full":
        words.append(_region_words(query, query_region, QUERY_REGION_WORDS))
    if query is not None and query.aligned:
        words.append(ALIGNED_WORDS)
    stored = RegionName.try_parse(stored_region)
    if stored is None or stored.kind != "full":
        words.append(_region_words(stored, stored_region, STORED_REGION_WORDS))
    return ", ".join(words)


def _region_words(name: RegionName | None, text: str, words: dict[str, str]) -> str:
    """The words for a region's kind; a name without words (or one hashmatch does not
    write: a hash list's) as it is."""
    if name is None:
        return text
    return words.get(name.kind, str(name.without_aligned()))


CSV_COLUMNS = ["query", "query_sha256", "distance", "score", "verdict", "verified", "kind",
               "algorithm", "item_id", "match_path", "match_sha256", "source", "labels",
               "query_variant", "query_region", "stored_region", "query_quality",
               "stored_quality"]


# OWASP CSV injection: a spreadsheet runs a cell starting with one of these as a formula.
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_GUARD = "'"


def csv_safe_cell(value):
    """``value`` as written to any CSV hashmatch produces: text that a spreadsheet would run
    as a formula (it starts with = + - @ TAB or CR) gets a single quote in front, as OWASP
    recommends. Numbers are not text and pass unchanged (a distance of -1 stays -1).

    Text that already starts with a quote followed by one of those characters or by another
    quote is guarded too, so :func:`csv_unguard_cell` (hash-list import) can remove exactly
    the quotes this added: importing our own export gives back the text unchanged.
    """
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(CSV_FORMULA_STARTS) or (
            value[0] == CSV_GUARD and value[1:2] and
            (value[1] == CSV_GUARD or value[1:].startswith(CSV_FORMULA_STARTS))):
        return CSV_GUARD + value
    return value


def csv_unguard_cell(cell: str) -> str:
    """Undo :func:`csv_safe_cell` on a cell read back from CSV: a leading quote before
    = + - @ TAB CR or another quote is removed (once)."""
    if len(cell) > 1 and cell[0] == CSV_GUARD and (
            cell[1] == CSV_GUARD or cell[1:].startswith(CSV_FORMULA_STARTS)):
        return cell[1:]
    return cell


def csv_safe_row(row: dict) -> dict:
    """Every cell of ``row`` through :func:`csv_safe_cell`."""
    return {key: csv_safe_cell(value) for key, value in row.items()}


def match_row(result, match) -> dict:
    return {
        "query": storable(result.path), "query_sha256": result.sha256,
        "distance": match.distance, "score": match.score, "verdict": match.verdict,
        "verified": "" if match.verified is None else str(bool(match.verified)).lower(),
        "kind": match.kind, "algorithm": match.algorithm, "item_id": match.item_id,
        "match_path": match.path, "match_sha256": match.sha256, "source": match.source,
        "labels": ";".join(match.labels), "query_variant": match.query_variant,
        "query_region": match.query_region, "stored_region": match.stored_region,
        "query_quality": match.query_quality, "stored_quality": match.stored_quality,
    }


def result_json(result) -> dict:
    return {
        "query": storable(result.path),
        "sha256": result.sha256,
        "error": result.error,
        "fingerprints": [{"algorithm": f.algorithm, "hash": f.hex(), "quality": f.quality}
                         for f in result.fingerprints],
        "matches": [m.to_dict() for m in result.matches],
    }


class QueryWriter:
    """Writes query results one at a time, as each is ready (so an interrupted run keeps
    what was answered): ``table`` (readable), ``json`` (one object a line) or ``csv``."""

    def __init__(self, fmt: str, out: TextIO, columns: int | None = None):
        self.fmt, self.out = fmt, out
        self.columns = table_columns() if columns is None else columns
        self._csv = None
        if fmt == "csv":
            self._csv = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
            self._csv.writeheader()
            out.flush()

    def write(self, result) -> None:
        if self.fmt == "json":
            self.out.write(json.dumps(result_json(result), default=str) + "\n")
        elif self.fmt == "csv":
            for match in result.matches:
                self._csv.writerow(csv_safe_row(match_row(result, match)))
        else:
            write_table(result, self.out, self.columns)
        self.out.flush()


def write_query_results(results: Iterable, fmt: str, out: TextIO) -> None:
    writer = QueryWriter(fmt, out)
    for result in results:
        writer.write(result)


def table_columns() -> int:
    """How wide readable tables are: the terminal's width, kept within 80..100 columns."""
    import shutil

    return max(80, min(100, shutil.get_terminal_size((100, 24)).columns))


def write_table(result, out: TextIO, columns: int = 100) -> None:
    """One query's matches as a table at most ``columns`` wide. Every string from outside
    goes through :func:`hashmatch.text.safe` (one line, no terminal control characters);
    widths count East Asian wide characters as two columns."""
    name = shorten(safe(result.path), columns)
    if result.error:
        out.write(f"{name}: could not be read: {safe(result.error)}\n")
        return
    if not result.matches:
        out.write(f"{name}: no match\n")
        return
    quality = next((f.quality for f in result.fingerprints if f.quality is not None), None)
    q_text = f", quality {quality}" if quality is not None else ""
    count = f": {len(result.matches)} match{'es' if len(result.matches) != 1 else ''}{q_text}"
    out.write(shorten(safe(result.path), columns - width(count)) + count + "\n")
    with_verdict = any(m.verdict for m in result.matches)
    head = ["ID", "DIST"] + (["VERDICT"] if with_verdict else []) + ["MATCHED IMAGE", "LABELS"]
    rows = []
    for m in result.matches:
        row = [str(m.item_id), str(m.distance)]
        if with_verdict:
            row.append(safe(m.verdict))
        row += [safe(m.path) if m.path else "(hash only)",
                safe(",".join(m.labels)) or "-"]
        rows.append(row)
    widths = [max(width(r[i]) for r in [head] + rows) for i in range(len(head))]
    path_col = len(head) - 2
    indent, gap = 2, 2
    widths[-1] = min(widths[-1], 16)
    if with_verdict:
        widths[2] = min(widths[2], 32)
    fixed = indent + sum(w for i, w in enumerate(widths) if i != path_col) + gap * (len(head) - 1)
    widths[path_col] = max(16, min(widths[path_col], columns - fixed))
    detail_at = indent + widths[0] + gap + widths[1] + gap  # under VERDICT / MATCHED IMAGE
    for number, row in enumerate([head] + rows):
        cells = []
        for i, (cell, w) in enumerate(zip(row, widths)):
            cell = shorten(cell, w, keep_end=(i == path_col))
            cells.append(rjust(cell, w) if i < 2 else ljust(cell, w))
        out.write(" " * indent + (" " * gap).join(cells).rstrip() + "\n")
        if number == 0:
            continue
        m = result.matches[number - 1]
        how = describe_how(m.query_variant, m.query_region, m.stored_region)
        sources = (m.meta or {}).get("sources") or ([m.source] if m.source else [])
        detail = f"how: {how}" + (f"; source: {safe(', '.join(sources))}" if sources else "")
        out.write(" " * detail_at + shorten(detail, columns - detail_at, keep_end=False)
                  + "\n")
