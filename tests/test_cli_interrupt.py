"""Ctrl-C and SIGKILL in the middle of long commands, as an investigator meets them: the
results so far are on disk, the message says what was saved, the exit code is 130, and no
worker process is left behind."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import corpus_files, run_cli

FILES = corpus_files()


def _start(*args, cwd=None, stdout=subprocess.PIPE):
    env = dict(os.environ)
    env.pop("HASHMATCH_DB", None)
    return subprocess.Popen([sys.executable, "-m", "hashmatch", *map(str, args)], cwd=cwd,
                            env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process, limit=240.0):
    """Poll (no timing is asserted: the limit only stops a hung test)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _stored(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_ctrl_c_during_index_says_what_was_saved_and_exits_130(tmp_path):
    db = tmp_path / "case.hmdb"
    process = _start("index", "--db", db, "--workers", "1", *FILES)
    assert _wait_for(lambda: _stored(db) >= 64, process), process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Aborted!" not in stderr and "Traceback" not in stderr, stderr
    saved = _stored(db)
    assert f"interrupted: {saved:,} images saved" in stderr, (saved, stderr)
    assert "run the same command again to continue" in stderr
    # ... and running it again continues: the saved files are not read again.
    again = run_cli("index", "--db", db, "--workers", "1", *FILES)
    assert again.returncode == 0, again.stderr
    assert f"unchanged {saved} (not read again)" in again.stdout
    assert f"-> {len(FILES)} images" in again.stdout


def test_query_streams_results_and_keeps_them_on_ctrl_c(tmp_path):
    db = tmp_path / "case.hmdb"
    assert run_cli("index", "--db", db, *FILES[:3]).returncode == 0
    out = tmp_path / "results.jsonl"
    with open(out, "w") as handle:
        process = _start("query", "--db", db, "--json", "--workers", "1", *FILES,
                         stdout=handle)
        assert _wait_for(lambda: out.stat().st_size > 0, process), process.communicate()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Aborted!" not in stderr and "Traceback" not in stderr, stderr
    lines = out.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line written is a whole result
    assert 1 <= len(rows) < len(FILES)
    assert [r["query"] for r in rows] == [str(f) for f in FILES[:len(rows)]]  # input order
    assert rows[0]["matches"]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_sigkill_of_index_leaves_no_worker_behind(tmp_path):
    db = tmp_path / "case.hmdb"
    process = _start("index", "--db", db, "--workers", "2", *FILES)
    # forkserver + resource tracker + 2 workers
    assert _wait_for(lambda: len(_descendants(process.pid)) >= 4 and _stored(db) > 0,
                     process), process.communicate()
    family = _descendants(process.pid)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 60  # generous: the watchdog looks once a second
    while time.monotonic() < deadline and any(_running(p) for p in family):
        time.sleep(0.1)
    assert not [p for p in family if _running(p)]


def test_ctrl_c_in_hash_exits_130_without_traceback(tmp_path):
    process = _start("hash", "--workers", "2", *(FILES * 3))
    assert _wait_for(lambda: True, process)
    first = process.stdout.readline()
    assert first.count(",") >= 2
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr


def test_copy_of_folder_for_reindex_is_only_read_once(tmp_path):
    """Re-indexing skips unchanged files, but a file changed in place is read again."""
    folder = tmp_path / "known"
    folder.mkdir()
    for p in FILES[:5]:
        shutil.copy(p, folder / p.name)
    db = tmp_path / "case.hmdb"
    assert "added 5" in run_cli("index", "--db", db, "-r", folder).stdout
    changed = folder / FILES[0].name
    shutil.copy(FILES[10], changed)  # same path, new picture
    result = run_cli("index", "--db", db, "-r", folder)
    assert result.returncode == 0, result.stderr
    assert "added 1" in result.stdout and "unchanged 4 (not read again)" in result.stdout
