"""Crash safety and concurrency of the SQLite store, with real processes.

A child process adds items in batches and prints each committed batch's ids; we SIGKILL it at
random moments. Whatever it reported must survive, batches must be all-or-nothing, and the
store must stay healthy. Readers and a second writer run against a live writer without errors.
"""

import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from hashmatch.store import SQLiteStore

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

BATCH = 16

# argv: db path, number of batches (0 = forever). Prints the ids of each committed batch.
WRITER = textwrap.dedent(f"""
    import os, sys
    from hashmatch.store import ItemRecord, SQLiteStore

    path, batches = sys.argv[1], int(sys.argv[2])
    with SQLiteStore.open(path) as store:
        done = 0
        while batches == 0 or done < batches:
            records = []
            for _ in range({BATCH}):
                code = os.urandom(32)
                records.append(ItemRecord(
                    path=f"/seized/{{code.hex()[:8]}}.jpg", sha256=os.urandom(32).hex(), size=1,
                    labels=["crash"], meta={{"pid": os.getpid()}},
                    fingerprints=[("pdq", 256, "full", "original", code, 80),
                                  ("phash", 64, "full", "original", code[:8], None)],
                ))
            ids = [outcome.item_id for outcome in store.add_items(records, action="index")]
            print(" ".join(map(str, ids)), flush=True)
            done += 1
    """)


def start_writer(db_path, batches=0):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db_path), str(batches)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_batch(writer) -> list[int]:
    line = writer.stdout.readline()
    assert line, f"writer died: {writer.stderr.read()}"
    return [int(x) for x in line.split()]


def assert_healthy(store):
    assert store.integrity_check() == []
    live = store.count_items()
    assert live % BATCH == 0, "a batch was partly committed"
    for algorithm, nbits in (("pdq", 256), ("phash", 64)):
        codes = store.load_codes(algorithm, nbits)
        assert len(codes) == live and len(np.unique(codes.item_ids)) == live


def test_committed_batches_survive_sigkill(tmp_path):
    db_path = tmp_path / "crash.hmdb"
    SQLiteStore.open(db_path, create=True).close()
    rng = random.Random(20240501)
    reported = []
    for run in range(5):
        writer = start_writer(db_path)
        for _ in range(rng.randint(1, 6)):
            reported += read_batch(writer)
        time.sleep(rng.uniform(0, 0.03))  # land the kill anywhere in the next batch
        writer.send_signal(signal.SIGKILL)
        leftover, _ = writer.communicate(timeout=30)
        reported += [int(x) for x in leftover.split()]  # batches committed before the kill
        assert writer.returncode == -signal.SIGKILL

        with SQLiteStore.open(db_path) as store:
            assert_healthy(store)
            items = store.get_items(reported)
            assert sorted(items) == sorted(reported), f"run {run}: reported items lost"
            assert not any(item.removed for item in items.values())
    assert len(reported) >= 5 * BATCH


def test_readers_see_whole_batches_while_a_writer_writes(tmp_path):
    db_path = tmp_path / "busy.hmdb"
    SQLiteStore.open(db_path, create=True).close()
    writer = start_writer(db_path, batches=40)
    sizes = []
    with SQLiteStore.open(db_path) as reader:
        while writer.poll() is None:
            with reader.snapshot():
                pdq = reader.load_codes("pdq", 256)
                phash = reader.load_codes("phash", 64)
                assert len(pdq) == len(phash) == reader.count_items()
                assert len(pdq) % BATCH == 0
            sizes.append(len(pdq))
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        assert sizes == sorted(sizes)
        assert any(0 < n < 40 * BATCH for n in sizes), "the reader never overlapped the writer"
        assert reader.count_items() == 40 * BATCH
        assert_healthy(reader)


def test_concurrent_writers_serialise(tmp_path):
    db_path = tmp_path / "two.hmdb"
    SQLiteStore.open(db_path, create=True).close()
    writers = [start_writer(db_path, batches=25) for _ in range(2)]
    reported = []
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        reported += [int(x) for x in out.split()]
    assert len(reported) == len(set(reported)) == 2 * 25 * BATCH
    with SQLiteStore.open(db_path) as store:
        assert sorted(store.get_items(reported)) == sorted(reported)
        changes = store.changes_since(0)
        assert [c.seq for c in changes] == sorted(c.seq for c in changes)
        assert len(changes) == 2 * 25 * BATCH
        assert_healthy(store)
