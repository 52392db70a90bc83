"""The investigator workflows end to end from the command line: dedup, report, import, export."""
import json
import shutil

from PIL import Image, ImageOps

from conftest import CORPUS, run_cli

PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))


def _seized_folder(tmp_path):
    """Three pictures each re-posted twice (re-encoded, resized), two unique ones, one broken."""
    folder = tmp_path / "seized"
    (folder / "sub").mkdir(parents=True)
    for n, photo in enumerate(PHOTOS[:3]):
        shutil.copy(photo, folder / f"post{n}.jpg")
        image = Image.open(photo)
        image.save(folder / "sub" / f"post{n}-recompressed.jpg", quality=40)
        image.resize((image.width // 2, image.height // 2)).save(folder / f"post{n}-small.png")
    for photo in PHOTOS[100:102]:
        shutil.copy(photo, folder / photo.name)
    (folder / "broken.jpg").write_bytes(PHOTOS[5].read_bytes()[:1500])
    return folder


def test_dedup_folder_json_html_and_exit_codes(tmp_path):
    folder = _seized_folder(tmp_path)
    result = run_cli("dedup", "--recursive", "--json", "--html", tmp_path / "groups.html", folder)
    assert result.returncode == 2, result.stderr  # the broken file
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    groups = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(groups) == 3 and all(g["size"] == 3 for g in groups)
    for group in groups:
        names = {m["path"].rsplit("/", 1)[1].split("-")[0].split(".")[0] for m in group["members"]}
        assert len(names) == 1  # each group is one picture's copies
        assert group["representative"] == group["members"][0]
        assert group["members"][0]["distance"] == 0 and len(group["members"][0]["sha256"]) == 64
    page = (tmp_path / "groups.html").read_text()
    assert page.count("<img ") == 9 and "Content-Security-Policy" in page
    twin = json.loads((tmp_path / "groups.json").read_text())
    assert len(twin["clusters"]) == 3 and twin["errors"][0]["path"].endswith("broken.jpg")

    readable = run_cli("dedup", "--recursive", folder / "sub")
    assert readable.returncode == 1 and "every image is unique" in readable.stdout
    text = run_cli("dedup", folder / "post0.jpg", folder / "post0-small.png")
    assert text.returncode == 0 and "group 1: 2 images" in text.stdout
    assert "representative" in text.stdout and "distance" in text.stdout


def test_dedup_database(tmp_path):
    db = tmp_path / "case.hmdb"
    folder = _seized_folder(tmp_path)
    (folder / "broken.jpg").unlink()
    assert run_cli("index", "--db", db, "--recursive", "--label", "ad", folder).returncode == 0
    result = run_cli("dedup", "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    groups = [json.loads(line) for line in result.stdout.splitlines()]
    assert [g["size"] for g in groups] == [3, 3, 3]
    assert all(m["item_id"] and m["labels"] == ["ad"] for g in groups for m in g["members"])
    both = run_cli("dedup", "--db", db, folder)
    assert both.returncode == 2 and "not both" in both.stderr


def test_report_command(tmp_path):
    db = tmp_path / "case.hmdb"
    indexed = run_cli("index", "--db", db, "--label", "price list", PHOTOS[0], PHOTOS[1])
    assert indexed.returncode == 0
    suspect = tmp_path / "suspect.jpg"
    ImageOps.mirror(Image.open(PHOTOS[1])).save(suspect, quality=50)
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("report", "--db", db, "--html", out / "r.html", "--json", out / "facts.json",
                     suspect, PHOTOS[200])
    assert result.returncode == 0, result.stderr
    assert "2 images, 1 with matches" in result.stdout
    facts = json.loads((out / "facts.json").read_text())
    assert facts["queries"][0]["matches"][0]["labels"] == ["price list"]
    page = (out / "r.html").read_text()
    # each image once as a thumbnail (2 queries, 1 known image), each with its larger view
    assert page.count('<img class="thumb"') == 3 and page.count("<img ") == 6
    assert "mirrored" in page

    sanitized = run_cli("report", "--db", db, "--html", out / "s.html", "--sanitized", suspect)
    assert sanitized.returncode == 0 and "<img" not in (out / "s.html").read_text()
    assert (out / "s.json").exists()

    original = suspect.read_bytes()
    refused = run_cli("report", "--db", db, "--html", out / "x.html", "--json", suspect, suspect)
    assert refused.returncode == 2 and "refusing to overwrite" in refused.stderr
    assert suspect.read_bytes() == original and not (out / "x.html").exists()
    refused = run_cli("report", "--db", db, "--html", db, suspect)
    assert refused.returncode == 2 and "refusing to overwrite" in refused.stderr
    none = run_cli("report", "--db", db, "--html", out / "n.html", PHOTOS[200])
    assert none.returncode == 1


def test_import_validation_and_one_hash_list(tmp_path):
    db = tmp_path / "case.hmdb"
    bad = tmp_path / "partner.txt"
    good_hash = run_cli("hash", PHOTOS[3]).stdout.strip()  # "hash,quality,path"
    bad.write_bytes(f"{good_hash}\npdq 1234\nmd5 {'a' * 64}\n".encode() + b"\xff\n")
    result = run_cli("import", "--db", db, bad)
    assert result.returncode == 2
    for line, what in ((2, "wrong length"), (3, "unknown algorithm"), (4, "not UTF-8")):
        assert f"{bad}:{line}: {what}" in result.stderr
    assert "nothing imported" in result.stderr
    assert not db.exists()  # a refused list leaves no trace

    skip = run_cli("import", "--db", db, "--skip-invalid", "--label", "partner", bad)
    assert skip.returncode == 2 and "imported 1 items" in skip.stdout
    assert "3 invalid lines skipped" in skip.stdout

    one = tmp_path / "one.txt"
    one.write_text(good_hash + "\n")
    single_db = tmp_path / "single.hmdb"
    assert run_cli("import", "--db", single_db, one).returncode == 0
    query = run_cli("query", "--db", single_db, "--json", PHOTOS[3])
    assert query.returncode == 0, query.stderr
    [match] = json.loads(query.stdout)["matches"]
    assert match["distance"] == 0

    empty = tmp_path / "empty.csv"
    empty.write_text("hash,algorithm,quality\n")
    result = run_cli("import", "--db", tmp_path / "empty.hmdb", empty)
    assert result.returncode == 0 and "imported 0 items" in result.stdout
    missing = run_cli("import", "--db", db, tmp_path / "missing.txt")
    assert missing.returncode == 2 and "missing.txt" in missing.stderr


def test_export_import_round_trip_from_the_command_line(tmp_path):
    db = tmp_path / "case.hmdb"
    assert run_cli("index", "--db", db, "-a", "pdq", "-a", "phash", "--label", "ad",
                   "--source", "case 9", PHOTOS[0], PHOTOS[1]).returncode == 0
    hashes = tmp_path / "extra.jsonl"
    hashes.write_text(json.dumps({"hash": "0f" * 32, "labels": ["x"], "meta": {"k": [1, 2]}})
                      + "\n")
    assert run_cli("import", "--db", db, "--source", "partner", hashes).returncode == 0
    # pdq + phash of 2 photos, their region rows (the photos' content/embedded PDQ
    # fingerprints), and the hash-list entry.
    stored = sum(1 for row in (json.loads(line) for line in
                               run_cli("export", "--db", db).stdout.splitlines()))
    regions = stored - 5
    assert regions >= 0
    for fmt in ("csv", "jsonl"):
        exported = tmp_path / f"export.{fmt}"
        result = run_cli("export", "--db", db, "--format", fmt, "--output", exported)
        assert result.returncode == 0 and f"exported {stored} hashes" in result.stderr
        copy = tmp_path / f"copy-{fmt}.hmdb"
        imported = run_cli("import", "--db", copy, exported)
        assert imported.returncode == 0 and f"imported 3 items ({stored} hashes)" in imported.stdout
        original = run_cli("export", "--db", db).stdout
        again = run_cli("export", "--db", copy).stdout
        assert _without_ids(again) == _without_ids(original)
    te = run_cli("export", "--db", db, "--format", "te").stdout.splitlines()
    # one full-frame hash per image, no region rows
    assert len(te) == 3 and te[2] == "0f" * 32  # hash-list entry: no quality, no path
    assert all(line.split(",")[1] == "100" for line in te[:2])
    refused = run_cli("export", "--db", db, "--output", db)
    assert refused.returncode == 2 and "refusing to overwrite" in refused.stderr


def _without_ids(jsonl: str) -> list:
    rows = [json.loads(line) for line in jsonl.splitlines()]
    for row in rows:
        row.pop("item")
    return rows
