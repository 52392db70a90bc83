"""Query results as a readable table, JSON lines or CSV (the CLI's outputs, usable from Python)."""
from __future__ import annotations

import csv
import json
from typing import Iterable, TextIO

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
ALIGNED_SUFFIX = "+aligned"
ALIGNED_WORDS = "edges matched to the known image"


def describe_how(query_variant: str, query_region: str, stored_region: str) -> str:
    """How the query matched, in words: rotation/flip, then which parts of either image."""
    words = [VARIANT_WORDS.get(query_variant, query_variant)]
    aligned = query_region.endswith(ALIGNED_SUFFIX)
    if aligned:
        query_region = query_region[: -len(ALIGNED_SUFFIX)]
    query_kind = query_region.split(":")[0]
    stored_kind = stored_region.split(":")[0]
    if query_kind != "full":
        words.append(QUERY_REGION_WORDS.get(query_kind, query_region))
    if aligned:
        words.append(ALIGNED_WORDS)
    if stored_kind != "full":
        words.append(STORED_REGION_WORDS.get(stored_kind, stored_region))
    return ", ".join(words)


CSV_COLUMNS = ["query", "query_sha256", "distance", "score", "algorithm", "item_id", "match_path",
               "match_sha256", "source", "labels", "query_variant", "query_region",
               "stored_region", "query_quality", "stored_quality"]


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
        "query": result.path, "query_sha256": result.sha256, "distance": match.distance,
        "score": match.score, "algorithm": match.algorithm, "item_id": match.item_id, "match_path": match.path,
        "match_sha256": match.sha256, "source": match.source, "labels": ";".join(match.labels),
        "query_variant": match.query_variant, "query_region": match.query_region,
        "stored_region": match.stored_region, "query_quality": match.query_quality,
        "stored_quality": match.stored_quality,
    }


def result_json(result) -> dict:
    return {
        "query": result.path,
        "sha256": result.sha256,
        "error": result.error,
        "fingerprints": [{"algorithm": f.algorithm, "hash": f.hex(), "quality": f.quality}
                         for f in result.fingerprints],
        "matches": [m.to_dict() for m in result.matches],
    }


def write_query_results(results: Iterable, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        for result in results:
            out.write(json.dumps(result_json(result), default=str) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for result in results:
            for match in result.matches:
                writer.writerow(csv_safe_row(match_row(result, match)))
    else:
        _write_table(list(results), out)


def _write_table(results, out: TextIO) -> None:
    for result in results:
        if result.error:
            out.write(f"{result.path}: could not be read: {result.error}\n")
            continue
        if not result.matches:
            out.write(f"{result.path}: no match\n")
            continue
        quality = next((f.quality for f in result.fingerprints if f.quality is not None), None)
        q_text = f", quality {quality}" if quality is not None else ""
        out.write(f"{result.path}: {len(result.matches)} match"
                  f"{'es' if len(result.matches) != 1 else ''}{q_text}\n")
        rows = [("DIST", "MATCHED IMAGE", "LABELS", "SOURCE", "HOW", "ID")]
        for m in result.matches:
            how = describe_how(m.query_variant, m.query_region, m.stored_region)
            rows.append((str(m.distance), m.path or "(hash only)", ",".join(m.labels) or "-",
                         m.source or "-", how, str(m.item_id)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = [row[0].rjust(widths[0])] + [c.ljust(w) for c, w in zip(row[1:], widths[1:])]
            out.write("  " + "  ".join(cells).rstrip() + "\n")
