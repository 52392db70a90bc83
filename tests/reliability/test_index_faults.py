"""Batch integrity (CLI), crash safety (SIGKILL during Index.add_files) and concurrency (one
writer, four reader processes) at the Index level. The store-level versions of the last two
are in tests/test_store_crash.py; these add hashing, batching, the codes cache and queries.
"""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import hashmatch as hm
from hashmatch.store import SQLiteStore, load_all_codes
from hashmatch.store.cache import cache_path_for

from . import corpus

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conftest import run_cli  # noqa: E402  (tests/conftest.py)


def good_images(folder, n, start=0):
    """n distinct, structured pictures (JPEG and PNG), written to folder; returns paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(start, start + n):
        picture = corpus._picture(128, 96, seed=k)
        # a per-image pattern so that images differ in structure, not only in noise
        arr = np.asarray(picture).copy()
        rng = np.random.default_rng(k + 10_000)
        for _ in range(6):
            y, x = rng.integers(0, 80), rng.integers(0, 110)
            arr[y:y + 16, x:x + 18] = rng.integers(0, 255, 3)
        path = os.path.join(folder, f"img{k:04d}.{'jpg' if k % 2 else 'png'}")
        corpus.Image.fromarray(arr).save(path, quality=90) if k % 2 else \
            corpus.Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


# -- batch integrity ------------------------------------------------------------------------
def test_index_of_a_mixed_folder_keeps_every_good_file_and_names_every_bad_one(tmp_path):
    folder = tmp_path / "seized"
    good = good_images(folder / "dcim", 24)
    bad = {}
    for name, data, _ in corpus.build(seed=3, n_mutants=0):
        if name.startswith(("bomb-", "empty", "zeros", "text-named", "magic-only", "random",
                            "pdf-", "svg", "heic", "polyglot-zip-then", "polyglot-html-then")):
            bad[str(folder / "junk" / name)] = data
    jpeg = open(good[1], "rb").read()
    bad[str(folder / "junk" / "cut.jpg")] = jpeg[: len(jpeg) // 3]
    corpus.write(folder / "junk", [(os.path.basename(p), d, "error") for p, d in bad.items()])
    os.mkfifo(folder / "junk" / "pipe.jpg")
    bad[str(folder / "junk" / "pipe.jpg")] = None

    db = tmp_path / "case.hmdb"
    result = run_cli("index", "--recursive", "--db", db, "--label", "case", "--workers", "2",
                     folder)
    assert result.returncode == 2, result.stderr  # documented: 2 = some files failed
    assert f"added {len(good)}, duplicates 0, skipped 0, failed {len(bad)}" in result.stdout
    assert "Traceback" not in result.stderr
    failed_lines = [l for l in result.stderr.splitlines() if l.startswith("failed: ")]
    assert len(failed_lines) == len(bad)
    for path in bad:
        [line] = [l for l in failed_lines if l.startswith(f"failed: {path}: ")]
        assert len(line) > len(f"failed: {path}: ") + 3, line  # a reason follows the path
    with hm.Index.open(db) as index:
        assert len(index) == len(good)
        for path in good:
            [match] = [m for m in index.query(path, max_distance=0) if m.path == path]
            assert match.distance == 0 and match.labels == ["case"]


# -- crash safety -----------------------------------------------------------------------------
INDEXER = textwrap.dedent("""
    import json, sys
    import hashmatch as hm
    db, list_file = sys.argv[1], sys.argv[2]
    paths = open(list_file).read().split()
    def committed(outcomes):
        print(json.dumps([[o.item_id, o.path] for o in outcomes if o.status in ("added", "duplicate")]),
              flush=True)
    with hm.Index.open(db, create=True) as index:
        index.batch_size = 6
        index.add_files(paths, labels=["crash"], workers=1, on_commit=committed)
    print("done", flush=True)
""")


KILL_RUNS = int(os.environ.get("HASHMATCH_KILL_RUNS", "8"))


def test_sigkill_during_add_files_loses_nothing_reported(tmp_path):
    rng = random.Random(7)
    db = str(tmp_path / "crash.hmdb")
    paths = good_images(tmp_path / "images", 48 + 36 * KILL_RUNS)
    with hm.Index.open(db, create=True) as index:  # a cache exists (written at close) ...
        first = index.add_files(paths[:6], workers=1)
    assert os.path.exists(cache_path_for(db))
    reported = {o.item_id: o.path for o in first.added}  # item id -> path
    kills = 0
    for run in range(KILL_RUNS + 1):
        pending = [p for p in paths if p not in set(reported.values())]
        list_file = tmp_path / "todo.txt"
        list_file.write_text("\n".join(pending))
        child = subprocess.Popen([sys.executable, "-c", INDEXER, db, str(list_file)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        if run < KILL_RUNS:
            if rng.random() < 0.25:  # anywhere, start-up included
                time.sleep(rng.uniform(0.0, 1.5))
            else:  # after some batches, anywhere in the next one (hashing, commit, callback)
                for _ in range(rng.randint(0, 4)):
                    lines.append(child.stdout.readline())
                time.sleep(rng.uniform(0, 0.08))
            child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=120)
        if run < KILL_RUNS:
            kills += child.returncode == -signal.SIGKILL
        else:
            assert child.returncode == 0 and "done" in out, err[-3000:]
        for line in lines + out.splitlines():
            if line.startswith("["):
                reported.update({item: path for item, path in json.loads(line)})
        # ... which every kill leaves stale: it must be caught up or rebuilt, never trusted
        with SQLiteStore.open(db) as store:
            assert store.integrity_check() == []
            items = store.get_items(reported)
            assert sorted(items) == sorted(reported), f"run {run}: a reported item was lost"
            assert all(items[i].path == reported[i] and not items[i].removed for i in items)
            truth = store.load_codes("pdq", 256)
            loaded = load_all_codes(store)
            assert loaded.seq == store.last_change_seq()
            cached = loaded.codes[("pdq", 256)]
            assert np.array_equal(cached.item_ids, truth.item_ids)
            assert np.array_equal(cached.codes, truth.codes)
    assert kills >= KILL_RUNS // 2
    assert sorted(reported.values()) == sorted(paths)  # the last, unkilled run finished
    with hm.Index.open(db) as index:
        assert len(index) == len(paths)
        for item_id, path in reported.items():
            assert item_id in {m.item_id for m in index.query(path, max_distance=0)}, path


def store_count(db):
    with SQLiteStore.open(db) as store:
        return store.count_items()


# -- concurrency ------------------------------------------------------------------------------
GROUP = 5  # items added (and removed) together, in one transaction, under one label


def group_codes(n: int) -> list[str]:
    rng = np.random.default_rng(1_000_003 * (n + 1))
    return [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(GROUP)]


WRITER = textwrap.dedent("""
    import json, random, sys, time
    sys.path.insert(0, sys.argv[3])
    from test_index_faults_helpers import group_codes
    import hashmatch as hm
    db, seconds = sys.argv[1], float(sys.argv[2])
    rng = random.Random(5)
    # At least `seconds` of work and at least MIN_GROUPS groups, whatever the machine's load
    # (a fixed window asserted a throughput, and a loaded machine failed it); bounded.
    live, n, stop = {}, 0, time.monotonic() + seconds
    give_up = time.monotonic() + seconds + 90
    with hm.Index.open(db) as index:
        while (time.monotonic() < stop or n < 10) and time.monotonic() < give_up:
            if live and rng.random() < 0.35:
                group = rng.choice(sorted(live))
                assert index.remove(live.pop(group)) == 5
            else:
                live[n] = index.add_hashes(group_codes(n), labels=[f"g{n}"])
                n += 1
    print(json.dumps({"groups": n, "live": sorted(live)}), flush=True)
""")

READER = textwrap.dedent("""
    import json, random, sys, time, traceback
    sys.path.insert(0, sys.argv[4])
    from test_index_faults_helpers import group_codes
    import hashmatch as hm
    db, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    stats = {"queries": 0, "snapshots": 0, "errors": [], "torn": [], "seen_groups": 0,
             "nonempty_snapshots": 0}
    stop, hi = time.monotonic() + seconds, 0
    give_up = time.monotonic() + seconds + 90
    index = hm.Index.open(db, sync_interval=0)  # every query first syncs with the writer
    try:
        while (time.monotonic() < stop or stats["snapshots"] < 20) and \
                time.monotonic() < give_up:
            try:
                # mostly near the writer's frontier, where adds and removes are happening
                n = rng.randrange(max(0, hi - 6), hi + 4) if rng.random() < 0.8 else \
                    rng.randrange(0, hi + 4)
                found = index.query_hashes(group_codes(n), max_distance=0)
                stats["queries"] += 1
                hits = [len(matches) for matches in found]
                if hits not in ([0] * 5, [1] * 5):
                    stats["torn"].append(f"group {n}: hits {hits}")
                elif hits[0]:
                    stats["seen_groups"] += 1
                    hi = max(hi, n)
                    labels = {tuple(m[0].labels) for m in found}
                    if labels != {(f"g{n}",)} or len({m[0].item_id for m in found}) != 5:
                        stats["torn"].append(f"group {n}: labels {labels}")
                store = index.store
                with store.snapshot():
                    live = store.count_items()
                    codes = store.load_codes("pdq", 256) if live else None
                    seq = store.last_change_seq()
                    changes = store.changes_since(0)
                stats["snapshots"] += 1
                stats["nonempty_snapshots"] += live > 0
                if live % 5 or (codes is not None and len(codes) != live):
                    stats["torn"].append(f"snapshot: {live} items, codes {codes and len(codes)}")
                if (changes[-1].seq if changes else 0) != seq:
                    stats["torn"].append("snapshot: seq disagrees with the change log")
                adds = sum(c.op == "add" for c in changes) - sum(c.op == "remove" for c in changes)
                if adds != live:
                    stats["torn"].append(f"snapshot: change log says {adds} live, count {live}")
            except Exception:
                stats["errors"].append(traceback.format_exc(limit=4))
    finally:
        index.close()
    print(json.dumps(stats), flush=True)
""")


def run_readers_and_writer(db, seconds, helpers_dir, readers=4):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, db, str(seconds), helpers_dir],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader_procs = [
        subprocess.Popen([sys.executable, "-c", READER, db, str(seconds), str(k), helpers_dir],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(readers)]
    out, err = writer.communicate(timeout=seconds + 120)
    assert writer.returncode == 0, err[-3000:]
    writer_stats = json.loads(out)
    reader_stats = []
    for proc in reader_procs:
        out, err = proc.communicate(timeout=seconds + 120)
        assert proc.returncode == 0, err[-3000:]
        reader_stats.append(json.loads(out))
    return writer_stats, reader_stats


@pytest.fixture
def helpers_dir(tmp_path):
    folder = tmp_path / "helpers"
    folder.mkdir()
    (folder / "test_index_faults_helpers.py").write_text(
        "import numpy as np\n"
        f"GROUP = {GROUP}\n"
        "def group_codes(n):\n"
        "    rng = np.random.default_rng(1_000_003 * (n + 1))\n"
        "    return [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()"
        " for _ in range(GROUP)]\n")
    return str(folder)


CONCURRENCY_SECONDS = float(os.environ.get("HASHMATCH_CONCURRENCY_SECONDS", "5"))


@pytest.fixture(params=["sqlite", "postgres"])
def busy_db(request, tmp_path, monkeypatch):
    """A fresh database on each backend; PostgreSQL on the session's real server."""
    monkeypatch.setenv("HASHMATCH_CACHE_DIR", str(tmp_path / "cache"))  # inherited by children
    if request.param == "sqlite":
        return str(tmp_path / "busy.hmdb")
    return request.getfixturevalue("pg").new_database()


def test_four_readers_never_see_a_torn_group_while_one_writer_adds_and_removes(
        busy_db, helpers_dir):
    db = busy_db
    hm.Index.open(db, create=True).close()
    writer, readers = run_readers_and_writer(db, CONCURRENCY_SECONDS, helpers_dir)
    assert writer["groups"] >= 10
    for stats in readers:
        assert stats["errors"] == [], stats["errors"][:3]
        assert stats["torn"] == [], stats["torn"][:5]
        assert stats["queries"] >= 20 and stats["snapshots"] >= 20
    assert sum(s["seen_groups"] + s["nonempty_snapshots"] for s in readers) > 0, \
        "the readers never saw the writer's work"
    with hm.Index.open(db) as index:  # and the end state is exactly the writer's
        assert len(index) == GROUP * len(writer["live"])
        for n in range(writer["groups"]):
            hits = [len(m) for m in index.query_hashes(group_codes(n), max_distance=0)]
            assert hits == ([1] * GROUP if n in writer["live"] else [0] * GROUP)
        assert index.store.integrity_check() == []


def test_a_batch_query_is_answered_from_one_state_of_the_store(tmp_path):
    """Deterministic twin of the test above: another writer commits a whole group while a
    reader's query_hashes is under way. The batch must see all of it or none of it.
    (Before the fix every searched hash synced on its own and this saw [0, 1, 1, 1, 1].)"""
    db = str(tmp_path / "race.hmdb")
    hm.Index.open(db, create=True).close()
    codes = group_codes(0)
    with hm.Index.open(db) as writer, hm.Index.open(db, sync_interval=0) as reader:
        original = reader.store.changes_since
        calls = []

        def changes_since_then_a_write_lands(seq, limit=None):
            changes = original(seq, limit)
            calls.append(seq)
            if len(calls) == 1:  # the other writer commits right after our first look
                writer.add_hashes(codes, labels=["g0"])
            return changes

        reader.store.changes_since = changes_since_then_a_write_lands
        hits = [len(m) for m in reader.query_hashes(codes, max_distance=0)]
        assert hits in ([0] * GROUP, [1] * GROUP), hits
        hits = [len(m) for m in reader.query_hashes(codes, max_distance=0)]
        assert hits == [1] * GROUP  # and the next query sees the group whole
