import json

from conftest import PDQ_REF, run_cli

BRIDGE = PDQ_REF / "images" / "bridge-mods"


def test_hash_prints_hash_quality_path_lines_and_reports_bad_files(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    good = BRIDGE / "aaa-orig.jpg"
    result = run_cli("hash", "-a", "phash", "--exact", good, bad)
    assert result.returncode == 2
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    hex_hash, quality, path = lines[0].split(",", 2)
    assert path == str(good) and len(hex_hash) == 16 and quality == ""
    assert str(bad) in result.stderr


def test_hash_folder_needs_recursive_and_json_lines(tmp_path):
    result = run_cli("hash", BRIDGE)
    assert result.returncode == 2 and "--recursive" in result.stderr
    result = run_cli("hash", "-a", "dhash", "--json", "--recursive", BRIDGE)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == len(list(BRIDGE.glob("*.jpg")))
    assert all(r["algorithm"] == "dhash" and len(r["hash"]) == 16 and len(r["sha256"]) == 64
               for r in rows)


def test_python_dash_m_and_help():
    result = run_cli("hash", "--help")
    assert result.returncode == 0 and "hash,quality,path" in result.stdout
