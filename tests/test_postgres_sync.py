"""Many matchers, one truth: PostgreSQL store + incremental sync, with real processes.

- A curator's add is matchable by every matcher process within a second of its sync(), and
  automatically with ``sync_interval``; a removal likewise stops matching.
- Change seqs become visible in seq order even with concurrent writers (the property that
  lets a matcher remember one number and never miss a change), shown deterministically with
  a writer held between appending its changes and committing, and under a multi-process race.
- Sync is incremental: it reads only the changed items.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from hashmatch import Fingerprint
from hashmatch.index import Index
from hashmatch.store import ItemRecord, open_store


def random_codes(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)


@pytest.fixture
def url(pg, tmp_path, monkeypatch):
    monkeypatch.setenv("HASHMATCH_CACHE_DIR", str(tmp_path / "cache"))
    return pg.new_database()


# A matcher process. argv: url, sync_interval ("none" = explicit sync() before each query),
# target hash hex. Prints "ready", then "found <wall time>" once the target matches and
# "gone <wall time>" once it no longer does, then "changes <n applied by sync>".
MATCHER = textwrap.dedent("""
    import sys, time
    from hashmatch.index import Index

    url, interval, target = sys.argv[1], sys.argv[2], sys.argv[3]
    explicit = interval == "none"
    applied = 0
    with Index.open(url, sync_interval=None if explicit else float(interval)) as index:
        print("ready", len(index), flush=True)
        for state in ("found", "gone"):
            deadline = time.time() + 30
            while time.time() < deadline:
                if explicit:
                    applied += index.sync()
                hits = index.query_hashes([target], max_distance=0)[0]
                if bool(hits) == (state == "found"):
                    print(state, repr(time.time()), flush=True)
                    break
                time.sleep(0.02)
            else:
                print("timeout", state, flush=True)
                sys.exit(1)
        print("changes", applied, flush=True)
""")


def test_a_curators_add_and_remove_reach_every_running_matcher(url, tmp_path):
    # How fast is measured in benchmarks (bench_serve: add-to-matchable, 0.2-0.5 s); here a
    # generous bound, so that a loaded CI machine does not fail a correct sync.
    with Index.open(url, create=True) as curator:
        curator.add_hashes(random_codes(500, 1), labels=["base"])  # something to sync against
        target = Fingerprint("pdq", random_codes(1, 99)[0])
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        matchers = [
            subprocess.Popen([sys.executable, "-c", MATCHER, url, interval, target.hex()],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for interval in ("none", "0.2")  # explicit sync() / automatic every 0.2 s
        ]
        try:
            for m in matchers:
                line = m.stdout.readline()
                assert line.startswith("ready 500"), line + m.stderr.read()
            time.sleep(0.3)
            [item_id] = curator.add_hashes([target], labels=["new"], source="curator")
            added_at = time.time()  # add_hashes returned: committed
            found = [m.stdout.readline().split() for m in matchers]
            curator.remove([item_id])
            removed_at = time.time()
            gone = [m.stdout.readline().split() for m in matchers]
            # readline, not communicate(): communicate reads the raw pipe and would lose
            # what readline() has already buffered.
            tails = [(m.stdout.readline(), m.stderr.read()) for m in matchers]
            assert [m.wait(30) for m in matchers] == [0, 0]
        finally:
            for m in matchers:
                m.kill()
    for (state, when), (out, err) in zip(found, tails):
        assert state == "found", err
        assert float(when) - added_at < 15.0
    for (state, when), (out, err) in zip(gone, tails):
        assert state == "gone", err
        assert float(when) - removed_at < 15.0
    # The explicit matcher applied exactly the curator's two changes: no reload, no replay.
    assert tails[0][0].split() == ["changes", "2"], tails[0]


def test_a_writer_holding_its_changes_makes_later_writers_wait(url):
    """The seq-order guarantee, deterministically: writer A has drawn its seq and not
    committed; writer B (other connection) must not commit a larger seq before A is visible,
    or a reader could see B's seq, move past A's, and miss A's change for good."""
    import psycopg

    a, b, reader = (open_store(url, create=True) for _ in range(3))
    try:
        a.add_items([record(0)])  # seq 1, so the store is not empty
        hold, holding = threading.Event(), threading.Event()

        def pause():
            holding.set()
            assert hold.wait(10)

        # fault injection through the store's private hook: nothing public can stop a writer
        # between drawing its seq and committing, which is the moment this test is about
        a._before_commit = pause
        t_a = threading.Thread(target=a.add_items, args=([record(1)],))
        t_b = threading.Thread(target=b.add_items, args=([record(2)],))
        t_a.start()
        assert holding.wait(10)
        t_b.start()
        time.sleep(0.5)
        assert t_b.is_alive(), "writer B committed while A held uncommitted changes"
        with psycopg.connect(url) as admin:
            waiting = admin.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted"
                " AND relation = 'hashmatch.changes'::regclass").fetchone()[0]
        assert waiting == 1  # B waits on the change-log lock, after inserting its item
        assert [c.seq for c in reader.changes_since(0)] == [1]
        hold.set()
        t_a.join(10)
        t_b.join(10)
        changes = reader.changes_since(1)
        items = reader.get_items([c.item_id for c in changes])
        assert [items[c.item_id].path for c in changes] == ["/w/1.jpg", "/w/2.jpg"]
        assert changes[0].seq < changes[1].seq
        assert reader.integrity_check() == []
    finally:
        for s in (a, b, reader):
            s.close()


def record(n, sha=True):
    return ItemRecord(path=f"/w/{n}.jpg", sha256=os.urandom(32).hex() if sha else None,
                      fingerprints=[("pdq", 256, "full", "original", os.urandom(32), 80)])


# argv: url, batches. Adds small batches as fast as it can; removes every third batch's
# first item; prints nothing.
WRITER = textwrap.dedent("""
    import os, sys
    from hashmatch.store import ItemRecord, open_store

    url, batches = sys.argv[1], int(sys.argv[2])
    with open_store(url) as store:
        for b in range(batches):
            outcomes = store.add_items([
                ItemRecord(path=None, sha256=os.urandom(32).hex(),
                           fingerprints=[("pdq", 256, "full", "original", os.urandom(32), 80)])
                for _ in range(3)])
            if b % 3 == 0:
                store.remove_items([outcomes[0].item_id])
""")


def test_a_reader_polling_during_concurrent_writers_misses_no_change(url):
    with open_store(url, create=True) as reader:
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, url, "60"],
                                    stderr=subprocess.PIPE, text=True) for _ in range(4)]
        seen, watermark, polls = [], 0, 0
        while any(w.poll() is None for w in writers):
            new = reader.changes_since(watermark)  # what a matcher's sync() does
            if new:
                seen += new
                watermark = new[-1].seq
            polls += 1
        for w in writers:
            assert w.wait(60) == 0, w.stderr.read()
        seen += reader.changes_since(watermark)
        everything = reader.changes_since(0)
        assert len(everything) == 4 * 60 * 3 + 4 * 20
        assert seen == everything, "a change committed behind the reader's watermark"
        assert [c.seq for c in seen] == sorted({c.seq for c in seen})
        assert polls > 10
        assert reader.integrity_check() == []


def test_concurrent_writers_adding_the_same_files_store_each_once(url):
    shas = [os.urandom(32).hex() for _ in range(40)]

    def add(order, results):
        with open_store(url) as store:
            for sha in order:
                results.append(store.add_items([ItemRecord(
                    path=sha, sha256=sha,
                    fingerprints=[("pdq", 256, "full", "original", bytes(32), None)])])[0])

    open_store(url, create=True).close()
    results_a, results_b = [], []
    threads = [threading.Thread(target=add, args=(shas, results_a)),
               threading.Thread(target=add, args=(shas[::-1], results_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with open_store(url) as store:
        assert store.count_items() == 40 and store.integrity_check() == []
        assert sorted(o.status for o in results_a + results_b) == ["added"] * 40 + ["duplicate"] * 40
        ids = {o.item_id for o in results_a + results_b}
        assert len(ids) == 40


def test_index_sync_reads_only_the_changed_items(url):
    with Index.open(url, create=True) as writer, Index.open(url) as matcher:
        writer.add_hashes(random_codes(2000, 2))
        assert matcher.sync() == 2000
        calls = []
        original = matcher.store.load_codes_for_items

        def spy(item_ids):
            item_ids = list(item_ids)
            calls.append(len(item_ids))
            return original(item_ids)

        matcher.store.load_codes_for_items = spy
        new_ids = writer.add_hashes(random_codes(100, 3))
        writer.remove(new_ids[:10] + [1, 2, 3])
        assert matcher.sync() == 113
        assert calls == [90]  # only the surviving new items were read from the store
        # the synced matcher holds every live item once, as an index loaded afresh does
        every_code = np.concatenate([random_codes(2000, 2), random_codes(100, 3)])
        lims, ids, dist = matcher.search_codes(every_code, 0)
        assert len(ids) == len(set(ids.tolist())) == 2000 + 100 - 13
        with Index.open(url) as fresh:
            assert [a.tolist() for a in fresh.search_codes(every_code, 0)] == \
                [lims.tolist(), ids.tolist(), dist.tolist()]
        hits = matcher.query_hashes(random_codes(100, 3)[10:12], max_distance=0)
        assert [h[0].item_id for h in hits] == new_ids[10:12]
        assert matcher.query_hashes(random_codes(2000, 2)[:1], max_distance=0) == [[]]


def test_index_on_postgres_indexes_and_finds_images(url, tmp_path):
    from conftest import CORPUS

    photos = sorted((CORPUS / "photos").glob("*.jpg"))[:6]
    with Index.open(url, create=True) as index:
        report = index.add_files(photos, labels=["ad"], workers=1)
        assert report.counts()["added"] == 6
        assert index.add_files(photos[:1], workers=1).counts()["duplicate"] == 1
        [best, *_] = index.query(photos[2])
        assert best.path == str(photos[2]) and best.distance == 0 and best.labels == ["ad"]
        assert "postgresql://" in index.stats()["path"]
    with Index.open(url) as again:  # a fresh process would do the same: load from the store
        assert len(again) == 6
        assert again.query(photos[4])[0].path == str(photos[4])


def test_both_stores_tell_which_candidates_have_current_verification_data(url, tmp_path):
    # The query drops a candidate with pixels that it did not verify, and keeps the plain
    # rule for one without (a hash-list entry): both stores must answer alike.
    from conftest import CORPUS

    photos = sorted((CORPUS / "photos").glob("*.jpg"))[:3]
    for target in (url, str(tmp_path / "v.hmdb")):
        with Index.open(target, create=True) as index:
            ids = [o.item_id for o in index.add_files(photos, workers=1).outcomes]
            hashes = index.add_hashes(["0" * 64])
            assert index.store.verifiable_items(ids + [hashes[0], 99_999]) == set(ids)
            assert index.store.verifiable_items([]) == set()
