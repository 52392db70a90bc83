"""`hashmatch index` then `hashmatch query`, from the command line, as an investigator runs it."""
import csv
import io
import json
import shutil

from PIL import Image, ImageOps

from conftest import CORPUS, run_cli

PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))


def _case_folder(tmp_path):
    folder = tmp_path / "known"
    (folder / "sub").mkdir(parents=True)
    for p in PHOTOS[:6]:
        shutil.copy(p, folder / p.name)
    for p in PHOTOS[6:9]:
        shutil.copy(p, folder / "sub" / p.name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub" / "broken.jpg").write_bytes(PHOTOS[0].read_bytes()[:2000])
    return folder


def test_index_then_query_with_default_database(tmp_path):
    folder = _case_folder(tmp_path)
    result = run_cli("index", "--recursive", "--label", "ad", "--source", "unit test", folder,
                     cwd=tmp_path)
    assert result.returncode == 2, result.stderr  # one broken file
    assert "added 9, duplicates 0, skipped 0, failed 1" in result.stdout
    assert "broken.jpg" in result.stderr and "truncated" in result.stderr
    assert (tmp_path / "hashmatch.hmdb").exists()

    suspect = tmp_path / "suspect.jpg"
    ImageOps.mirror(Image.open(PHOTOS[7])).resize((300, 400)).save(suspect, quality=60)
    result = run_cli("query", suspect, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert PHOTOS[7].name in result.stdout and "mirrored" in result.stdout

    result = run_cli("query", PHOTOS[200], cwd=tmp_path)
    assert result.returncode == 1 and "no match" in result.stdout

    result = run_cli("index", "--recursive", folder, cwd=tmp_path)
    assert "added 0, duplicates 0" in result.stdout and "unchanged 9 (not read again)" in result.stdout


def test_query_json_and_csv(tmp_path):
    db = tmp_path / "case.hmdb"
    assert run_cli("index", "--db", db, PHOTOS[0], PHOTOS[1]).returncode == 0
    result = run_cli("query", "--db", db, "--json", PHOTOS[1], PHOTOS[300])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(r["matches"]) for r in rows] == [1, 0]
    assert rows[0]["matches"][0]["distance"] == 0 and rows[0]["matches"][0]["path"].endswith(PHOTOS[1].name)
    assert result.returncode == 0
    result = run_cli("query", "--db", db, "--csv", PHOTOS[0])
    [row] = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row["distance"] == "0" and row["match_path"].endswith(PHOTOS[0].name)


def test_env_database_info_and_remove(tmp_path):
    env = {"HASHMATCH_DB": str(tmp_path / "env.hmdb")}
    assert run_cli("index", PHOTOS[0], PHOTOS[1], env=env).returncode == 0
    info = run_cli("info", "--json", env=env)
    assert info.returncode == 0 and json.loads(info.stdout)["items"] == 2
    [row] = [json.loads(l) for l in run_cli("query", "--json", PHOTOS[0], env=env).stdout.splitlines()]
    item_id = row["matches"][0]["item_id"]
    assert run_cli("remove", item_id, env=env).returncode == 0
    assert run_cli("query", PHOTOS[0], env=env).returncode == 1


def test_query_without_database_is_a_clear_error(tmp_path):
    result = run_cli("query", PHOTOS[0], cwd=tmp_path)
    assert result.returncode == 2 and "hashmatch index" in result.stderr
    assert "Traceback" not in result.stderr
