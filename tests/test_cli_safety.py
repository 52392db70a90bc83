"""Hostile or odd input from the command line (issue 16 #1, #2, #12, #15): file names that
hold newlines, bytes that are not UTF-8, terminal control characters; damaged metadata;
a database that fails after it was opened."""
import csv
import io
import json
import os
import shutil
import sqlite3

from PIL import Image

from conftest import CORPUS, run_cli

PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))


def test_a_newline_in_a_file_name_cannot_inject_a_line_into_hash_output(tmp_path):
    planted = "f" * 64
    name = f"x.jpg\n{planted},100,planted.jpg"
    shutil.copy(PHOTOS[0], tmp_path / name)
    shutil.copy(PHOTOS[1], tmp_path / 'comma, "quoted".jpg')
    result = run_cli("hash", "-r", tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and not any(line.startswith(planted) for line in lines)
    # The path field is one CSV field: escaped newline, RFC 4180 quotes where needed.
    rows = list(csv.reader(io.StringIO(result.stdout)))
    paths = sorted(row[2] for row in rows)
    assert paths == sorted([str(tmp_path / 'comma, "quoted".jpg'),
                            str(tmp_path) + "/x.jpg\\n" + planted + ",100,planted.jpg"])
    # Importing that list gives two hashes, never the planted one.
    listing = tmp_path.parent / "list.txt"
    listing.write_text(result.stdout)
    db = tmp_path.parent / "list.hmdb"
    imported = run_cli("import", listing, "--db", db)
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 items" in imported.stdout
    query = run_cli("query", "--db", db, "--hash", planted)
    assert query.returncode == 1, query.stdout


def test_control_and_direction_characters_are_escaped_in_terminal_output(tmp_path):
    folder = tmp_path / "known"
    folder.mkdir()
    hostile = "invoice\u202egpj.exe\x1b[31m.jpg"
    shutil.copy(PHOTOS[2], folder / hostile)
    db = tmp_path / "case.hmdb"
    result = run_cli("index", "--db", db, "-r", folder, "--label", "red\x1b[0m")
    assert result.returncode == 0, result.stderr
    for command in (["query", "--db", db, folder / hostile], ["list", "--db", db],
                    ["hash", folder / hostile]):
        out = run_cli(*command)
        text = out.stdout + out.stderr
        assert "\u202e" not in text and "\x1b" not in text, command
        assert "\\u202e" in text and "\\x1b[31m" in text, (command, text)


def test_a_file_name_that_is_not_utf8_is_indexed_queried_and_reported(tmp_path):
    folder = tmp_path / "seized"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9 photo.jpg"  # Latin-1 name, invalid UTF-8
    with open(raw, "wb") as out:
        out.write(PHOTOS[3].read_bytes())
    for p in PHOTOS[4:8]:
        shutil.copy(p, folder / p.name)
    db = tmp_path / "case.hmdb"
    result = run_cli("index", "--db", db, "-r", folder)
    assert result.returncode == 0, result.stderr
    assert "added 5" in result.stdout
    listed = run_cli("list", "--db", db, "--json")
    paths = [json.loads(line)["path"] for line in listed.stdout.splitlines()]
    assert str(folder) + "/caf\\xe9 photo.jpg" in paths
    query = run_cli("query", "--db", db, "-r", "--json", folder)
    assert query.returncode == 0, query.stderr
    rows = [json.loads(line) for line in query.stdout.splitlines()]
    assert len(rows) == 5 and all(r["matches"] for r in rows)
    report = run_cli("report", "--db", db, "-r", folder, "--html", tmp_path / "r.html")
    assert report.returncode == 0, report.stderr
    document = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    [entry] = [q for q in document["queries"] if q["file"]["path"].endswith("caf\\xe9 photo.jpg")]
    assert entry["matches"][0]["stored_file"]["error"] is None  # the known file was found


def test_pillow_warnings_do_not_leak_to_stderr(tmp_path):
    corrupt = (b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x0f\x00\x02\x00\x00\x00\x20"
               b"\x00\x00\x00\x99")
    path = tmp_path / "bad-exif.jpg"
    Image.open(PHOTOS[0]).save(path, exif=corrupt)
    result = run_cli("hash", path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    result = run_cli("index", "--db", tmp_path / "db.hmdb", path)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def _break_store(db):
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE items RENAME COLUMN meta TO meta_gone")


def test_a_store_error_after_opening_is_one_line_and_exit_2(tmp_path):
    db = tmp_path / "case.hmdb"
    assert run_cli("index", "--db", db, PHOTOS[0]).returncode == 0
    _break_store(db)
    for command in (["index", "--db", db, PHOTOS[1]], ["query", "--db", db, PHOTOS[0]],
                    ["list", "--db", db], ["label", "1", "--add", "x", "--db", db]):
        result = run_cli(*command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("hashmatch: "), result.stderr
    result = run_cli("index", "--db", db, PHOTOS[1])
    # Caught when the database is opened (the store checks its columns) or when written.
    assert any(words in result.stderr for words in ("0 images saved", "no such column",
                                                    "has no column"))


def test_disk_full_in_the_middle_of_index_reports_what_was_committed(tmp_path):
    # The store fails on its second batch, as SQLite does when the disk fills up.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import hashmatch.store.sqlite as s\n"
        "from hashmatch.store.base import StoreError\n"
        "_add, _calls = s.SQLiteStore.add_items, []\n"
        "def add_items(self, records, **kw):\n"
        "    _calls.append(1)\n"
        "    if len(_calls) == 2:\n"
        "        raise StoreError(f'{self.path}: database or disk is full')\n"
        "    return _add(self, records, **kw)\n"
        "s.SQLiteStore.add_items = add_items\n")
    db = tmp_path / "case.hmdb"
    files = sorted((CORPUS / "photos").glob("*.jpg"))[:100]
    result = run_cli("index", "--db", db, "--workers", "1", *files,
                     env={"PYTHONPATH": str(hook)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "database or disk is full" in result.stderr
    assert "stopped: 64 images saved before the error (they stay saved)" in result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 64
