"""What the CLI prints: hash formats, several algorithms, lookups by hash and from standard
input, CSV columns, the verdict column, tables that fit a terminal, the progress bar, and
the README's Python snippet run as a plain script."""
import csv
import io
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

from conftest import CORPUS, REPO, run_cli

PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))


def test_hash_formats_and_several_algorithms(tmp_path):
    both = run_cli("hash", "-a", "pdq", "-a", "phash", "--format", "json", PHOTOS[0], PHOTOS[1])
    assert both.returncode == 0, both.stderr
    rows = [json.loads(line) for line in both.stdout.splitlines()]
    assert [(r["path"], r["algorithm"]) for r in rows] == [
        (str(PHOTOS[0]), "pdq"), (str(PHOTOS[0]), "phash"),
        (str(PHOTOS[1]), "pdq"), (str(PHOTOS[1]), "phash")]
    assert len(rows[0]["hash"]) == 64 and len(rows[1]["hash"]) == 16
    refused = run_cli("hash", "-a", "pdq", "-a", "phash", PHOTOS[0])
    assert refused.returncode == 2 and "--format json" in refused.stderr
    assert refused.stdout == ""
    pytx = run_cli("hash", "--format", "pytx", PHOTOS[0]).stdout.splitlines()
    hexes = run_cli("hash", "--format", "hex", PHOTOS[0]).stdout.splitlines()
    alias = run_cli("hash", "--json", PHOTOS[0]).stdout
    assert pytx == [f"pdq {rows[0]['hash']}"] and hexes == [rows[0]["hash"]]
    assert json.loads(alias)["hash"] == rows[0]["hash"]


def test_query_by_hash_and_from_standard_input(tmp_path):
    db = tmp_path / "case.hmdb"
    assert run_cli("index", "--db", db, PHOTOS[0], PHOTOS[1]).returncode == 0
    hex0 = run_cli("hash", "--format", "hex", PHOTOS[0]).stdout.strip()
    found = run_cli("query", "--db", db, "--hash", hex0, "--hash", "pdq " + "0" * 64, "--json")
    assert found.returncode == 0, found.stderr
    rows = [json.loads(line) for line in found.stdout.splitlines()]
    assert rows[0]["matches"][0]["path"] == str(PHOTOS[0]) and rows[1]["matches"] == []
    bad = run_cli("query", "--db", db, "--hash", "xyz")
    assert bad.returncode == 2 and "not a" in bad.stderr
    listing = f"{PHOTOS[1]}\n{PHOTOS[200]}\n"
    from_list = run_cli("query", "--db", db, "-", "--json", input=listing)
    rows = [json.loads(line) for line in from_list.stdout.splitlines()]
    assert [r["query"] for r in rows] == [str(PHOTOS[1]), str(PHOTOS[200])]
    image = subprocess.run([sys.executable, "-m", "hashmatch", "query", "--db", str(db), "-"],
                           input=PHOTOS[1].read_bytes(), capture_output=True)
    assert image.returncode == 0, image.stderr
    assert b"<standard input>: 1 match" in image.stdout


def _match(**overrides):
    from hashmatch.index import Match

    fields = dict(item_id=7, distance=3, algorithm="pdq", path="/case/known/ad.jpg",
                  source="referral", labels=["ad"], meta={}, sha256="a" * 64,
                  query_region="full", query_variant="original", stored_region="full",
                  stored_variant="original", query_quality=90, stored_quality=95, score=3)
    fields.update(overrides)
    return Match(**fields)


def _result(matches, path="/case/queries/suspect.jpg"):
    from hashmatch.index import QueryResult

    return QueryResult(path, matches, sha256="b" * 64)


def test_csv_and_json_carry_score_and_the_verdict_fields():
    from hashmatch.formats import write_query_results

    match = _match(verdict="same picture, edited", verified=True, kind="copy",
                   evidence={"agree": 0.97})
    out = io.StringIO()
    write_query_results([_result([match])], "csv", out)
    [row] = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert (row["score"], row["verdict"], row["verified"], row["kind"]) == \
        ("3", "same picture, edited", "true", "copy")
    out = io.StringIO()
    write_query_results([_result([match])], "json", out)
    data = json.loads(out.getvalue())["matches"][0]
    assert data["verdict"] == "same picture, edited" and data["evidence"] == {"agree": 0.97}


def test_table_shows_the_verdict_fits_100_columns_and_aligns_wide_characters():
    from hashmatch.formats import write_table
    from hashmatch.text import width

    long_path = "/mnt/evidence/seized-phone-2024-05-17/DCIM/Camera/" + "x" * 90 + ".jpg"
    matches = [
        _match(item_id=12, path=long_path, labels=["smuggling-ad", "fake-id", "x" * 40],
               source="NCA referral 2024-05 with a very long description" * 2,
               verdict="same picture, edited", query_region="embedded:3",
               stored_region="crop:b6", query_variant="flipy"),
        _match(item_id=3456, distance=41, path="/known/广告图片_护照样本.jpg",
               labels=["护照"], verdict=""),
    ]
    for columns in (80, 100):
        out = io.StringIO()
        write_table(_result(matches, path="/q/" + "y" * 120 + ".jpg"), out, columns)
        lines = out.getvalue().splitlines()
        assert all(width(line) <= columns for line in lines), (columns, lines)
        header = lines[1]
        assert "VERDICT" in header and "same picture, edited" in out.getvalue()
        start = width(header[:header.index("MATCHED IMAGE")])
        rows = [line for line in lines[2:] if re.match(r"\s+\d+\s+\d+\s", line)]
        assert len(rows) == 2
        for row in rows:  # the path column starts at the same screen column in every row
            cut = row.index("/known") if "/known" in row else row.index("...")
            assert width(row[:cut]) == start, (row, start)
    # no verdicts yet (before verification): no VERDICT column, nothing special
    out = io.StringIO()
    write_table(_result([_match()]), out, 100)
    assert "VERDICT" not in out.getvalue()


def test_progress_eta_ignores_start_up_and_tiny_jobs_show_no_bar():
    from hashmatch.cli import Progress

    now = [0.0]
    stream = io.StringIO()
    bar = Progress(1000, "indexing", stream=stream, clock=lambda: now[0], force=True)
    now[0] = 4.0  # starting the workers took 4 s, then one item every 0.1 s
    estimates = []
    for done in range(1, 200):
        bar(done)
        estimates.append(bar.eta(done, now[0]))
        now[0] += 0.1
    first = next(e for e in estimates if e is not None)
    true_first = (1000 - (estimates.index(first) + 1)) * 0.1
    assert abs(first - true_first) / true_first < 0.25, (first, true_first)
    assert "ETA 00:01:" in stream.getvalue()
    tiny = Progress(5, "hashing", stream=SimpleNamespace(isatty=lambda: True))
    assert not tiny.enabled


def test_no_progress_bar_for_a_tiny_job_on_a_terminal(tmp_path):
    parent, child = pty.openpty()
    try:
        process = subprocess.run(
            [sys.executable, "-m", "hashmatch", "hash", *map(str, PHOTOS[:3])],
            stderr=child, stdout=subprocess.PIPE, timeout=120)
        os.close(child)
        child = None
        output = b""
        while True:
            try:
                chunk = os.read(parent, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        if child is not None:
            os.close(child)
        os.close(parent)
    assert process.returncode == 0
    assert b"ETA" not in output and b"#" not in output and len(process.stdout.splitlines()) == 3


def test_readme_hash_files_snippet_runs_as_a_plain_script(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    line = "results = hm.hash_files(paths, workers=4)"
    assert line in readme
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in PHOTOS[:12]:
        shutil.copy(p, folder / p.name)
    script = tmp_path / "plain_script.py"  # no `if __name__ == "__main__":`, as pasted
    script.write_text("import glob\nimport hashmatch as hm\n"
                      f"paths = sorted(glob.glob({str(folder)!r} + '/*.jpg'))\n"
                      f"{line}\n"
                      "print('hashed', sum(r.ok for r in results), 'of', len(results))\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hashed 12 of 12" and "bootstrapping" not in result.stderr


def test_every_command_has_plain_help():
    for command in ("hash", "index", "query", "info", "remove", "list", "label", "dedup",
                    "report", "import", "export"):
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, (command, result.stderr)
