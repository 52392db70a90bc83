"""Curating the database from the command line: labels and sources added to stored images
(on re-index and with `hashmatch label`), `list`, `info`, `remove`, `dedup` on the default
database, and `index --all-files` leaving the database's own files alone."""
import json
import shutil

import hashmatch as hm

from conftest import CORPUS, run_cli

PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))


def _listed(db, *args):
    result = run_cli("list", "--db", db, "--json", *args)
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_reindex_adds_new_labels_and_sources_to_stored_images_audited(tmp_path):
    folder = tmp_path / "known"
    folder.mkdir()
    for p in PHOTOS[:3]:
        shutil.copy(p, folder / p.name)
    db = tmp_path / "case.hmdb"
    assert run_cli("index", "--db", db, "-r", folder, "-l", "ad", "-s", "referral A"
                   ).returncode == 0
    # the same files again (unchanged: not read), and a copy elsewhere (a duplicate)
    copy = tmp_path / "copy.jpg"
    shutil.copy(PHOTOS[0], copy)
    result = run_cli("index", "--db", db, "-r", folder, copy, "-l", "fake-id", "-s",
                     "referral B")
    assert result.returncode == 0, result.stderr
    assert "labels/source added to 3 stored images" in result.stdout
    items = _listed(db)
    assert len(items) == 3
    assert all(i["labels"] == ["ad", "fake-id"] for i in items)
    assert all(i["source"] == "referral A" and i["sources"] == ["referral A", "referral B"]
               for i in items)
    assert [i["item_id"] for i in _listed(db, "--label", "fake-id", "--source", "referral B")
            ] == [i["item_id"] for i in items]
    with hm.Index.open(db) as index:
        actions = [entry.action for entry in index.store.audit_log(20)]
    assert "index-relabel" in actions


def test_label_command_adds_and_removes_labels_audited(tmp_path):
    db = tmp_path / "case.hmdb"
    assert run_cli("index", "--db", db, PHOTOS[0], PHOTOS[1], "-l", "unsorted").returncode == 0
    result = run_cli("label", "1", "2", "--add", "fake-id", "--remove", "unsorted", "--db", db)
    assert result.returncode == 0, result.stderr
    assert "item 1: labels fake-id" in result.stdout
    assert [i["labels"] for i in _listed(db)] == [["fake-id"], ["fake-id"]]
    assert _listed(db, "--label", "unsorted") == []
    result = run_cli("label", "9999", "--add", "x", "--db", db)
    assert result.returncode == 2 and "no item 9999" in result.stderr
    with hm.Index.open(db) as index:
        [entry] = [e for e in index.store.audit_log(20) if e.action == "label"]
    assert entry.detail["items"] == [1, 2] and entry.detail["add_labels"] == ["fake-id"]
    assert entry.detail["remove_labels"] == ["unsorted"]


def test_labels_on_postgres(pg, tmp_path, monkeypatch):
    monkeypatch.setenv("HASHMATCH_CACHE_DIR", str(tmp_path / "cache"))
    url = pg.new_database()
    result = run_cli("index", "--db", url, PHOTOS[0], PHOTOS[1], "-l", "ad", "-s", "A",
                     env={"HASHMATCH_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    result = run_cli("index", "--db", url, PHOTOS[0], "-l", "more", "-s", "B",
                     env={"HASHMATCH_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0 and "unchanged 1" in result.stdout, result.stdout
    result = run_cli("label", "2", "--add", "x", "--remove", "ad", "--db", url)
    assert result.returncode == 0, result.stderr
    items = {i["item_id"]: i for i in _listed(url)}
    assert items[1]["labels"] == ["ad", "more"] and items[1]["sources"] == ["A", "B"]
    assert items[2]["labels"] == ["x"]
    assert [i["item_id"] for i in _listed(url, "--label", "x")] == [2]
    with hm.Index.open(url) as index:
        actions = [e.action for e in index.store.audit_log(20)]
    assert "label" in actions and "index-relabel" in actions


def test_info_is_readable_and_json(tmp_path):
    db = tmp_path / "case.hmdb"
    assert run_cli("index", "--db", db, PHOTOS[0]).returncode == 0
    result = run_cli("info", "--db", db)
    assert result.returncode == 0
    assert "{" not in result.stdout and "Images:        1" in result.stdout
    assert "Fingerprints:" in result.stdout and "pdq 256-bit" in result.stdout
    data = json.loads(run_cli("info", "--db", db, "--json").stdout)
    assert data["items"] == 1


def test_remove_says_why_an_id_was_not_removed(tmp_path):
    db = tmp_path / "case.hmdb"
    assert run_cli("index", "--db", db, PHOTOS[0], PHOTOS[1]).returncode == 0
    assert run_cli("remove", "1", "--db", db).returncode == 0
    result = run_cli("remove", "9999", "1", "2", "--db", db)
    assert result.returncode == 2
    assert "no item 9999" in result.stderr and "item 1 was already removed" in result.stderr
    assert "removed 1 of 3" in result.stdout


def test_dedup_without_arguments_uses_the_default_database(tmp_path):
    shutil.copy(PHOTOS[0], tmp_path / "a.jpg")
    shutil.copy(PHOTOS[0], tmp_path / "b.jpg")
    from PIL import Image

    Image.open(PHOTOS[0]).resize((200, 260)).save(tmp_path / "small.jpg", quality=70)
    assert run_cli("index", tmp_path / "a.jpg", tmp_path / "small.jpg", PHOTOS[5],
                   cwd=tmp_path).returncode == 0
    result = run_cli("dedup", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "group 1: 2 images" in result.stdout


def test_index_all_files_leaves_the_database_and_its_files_alone(tmp_path):
    for p in PHOTOS[:3]:
        shutil.copy(p, tmp_path / p.name)
    first = run_cli("index", "-r", "--all-files", ".", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_cli("query", PHOTOS[0], cwd=tmp_path)  # writes the cache file beside the database
    result = run_cli("index", "-r", "--all-files", ".", cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "hmdb" not in result.stderr and "failed 0" in result.stdout
    assert "-> 3 images" in result.stdout
