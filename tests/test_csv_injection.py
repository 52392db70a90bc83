"""Issue 16 item 3: no CSV cell we write can start a spreadsheet formula (OWASP CSV injection),
and importing our own CSV export gives back the text exactly."""
import csv
import io


import hashmatch as hm
from hashmatch.formats import csv_safe_cell, write_query_results
from hashmatch.hashlists import export_hash_list, import_hash_list, iter_export_rows
from hashmatch.index import Match, QueryResult

H1 = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
HOSTILE = ["=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3",
           "\tcell", "\rcell", "'=already", "''x", "plain", "'quote"]


def _dangerous(cell: str) -> bool:
    return cell[:1] in ("=", "+", "-", "@", "\t", "\r")


def test_guard_prefixes_a_quote_only_to_formula_cells():
    assert csv_safe_cell("=1+1") == "'=1+1"
    assert csv_safe_cell("-2+3") == "'-2+3"
    assert csv_safe_cell("plain") == "plain"
    assert csv_safe_cell("") == ""
    assert csv_safe_cell(-5) == -5  # numbers (a distance, a quality) are not text
    assert csv_safe_cell(None) is None


def test_query_csv_neutralises_paths_sources_and_labels():
    match = Match(item_id=1, distance=3, algorithm="pdq", path="=HYPERLINK(\"x\")",
                  source="+cmd|' /C calc'!A0", labels=["@SUM(1)"], meta={}, sha256=None,
                  query_region="full", query_variant="original", stored_region="full",
                  stored_variant="original", query_quality=90, stored_quality=-1)
    result = QueryResult("-2+3.jpg", [match])
    out = io.StringIO()
    write_query_results([result], "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert rows[0]["query"] == "'-2+3.jpg"
    assert rows[0]["match_path"] == "'=HYPERLINK(\"x\")"
    assert rows[0]["source"].startswith("'+cmd")
    assert rows[0]["labels"] == "'@SUM(1)"
    assert rows[0]["distance"] == "3" and rows[0]["stored_quality"] == "-1"
    numbers = {"distance", "score", "item_id", "query_quality", "stored_quality"}
    assert not any(_dangerous(cell) for row in rows for key, cell in row.items()
                   if key not in numbers)


def test_export_csv_neutralises_and_import_round_trips(tmp_path):
    with hm.Index.open(tmp_path / "a.hmdb", create=True) as index:
        for n, text in enumerate(HOSTILE):
            code = bytes([n]) * 32
            # (import strips whitespace around a labels cell, as it always has)
            index.add_hashes([code.hex()], labels=[text.strip(), "ok"], source=text,
                             meta={"note": text})
        out = io.StringIO()
        export_hash_list(index, out, "csv")
        before = [(r["labels"], r["source"]) for r in iter_export_rows(index)]
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert not any(_dangerous(cell) for row in rows for cell in row)
    assert len(rows) == 1 + len(HOSTILE)  # a CR inside a cell is quoted, not a line break
    listing = tmp_path / "list.csv"
    listing.write_text(out.getvalue(), encoding="utf-8")
    with hm.Index.open(tmp_path / "b.hmdb", create=True) as copy:
        report = import_hash_list(copy, listing)
        assert report.imported and not report.problems
        after = [(r["labels"], r["source"]) for r in iter_export_rows(copy)]
    assert after == before
