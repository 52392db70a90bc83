"""Issue 16 item 7: a crafted .hmdb gives one clear StoreError naming the problem and the row,
never a raw traceback, and never allocates more than the file can hold."""
import hashlib
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

import hashmatch as hm
from hashmatch.store import ItemRecord, SQLiteStore, StoreError


def _code(n, nbytes=32):
    return np.random.default_rng(n).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def crafted(tmp_path, *statements, params=()):
    path = tmp_path / "crafted.hmdb"
    with SQLiteStore.open(path, create=True) as store:
        store.add_items([ItemRecord(
            path=f"/img{n}.jpg", sha256=hashlib.sha256(bytes([n])).hexdigest(), labels=["a"],
            meta={"n": n}, fingerprints=[("pdq", 256, "full", "original", _code(n), 90)])
            for n in range(3)])
    db = sqlite3.connect(path)
    db.execute("PRAGMA ignore_check_constraints = ON")
    for number, statement in enumerate(statements):
        db.execute(statement, params if number == len(statements) - 1 else ())
    db.commit()
    db.close()
    return path


ITEM_CASES = {
    "nested meta": (["UPDATE items SET meta = ? WHERE id = 2"], ('{"a":' * 5000 + "1" + "}" * 5000,),
                    "meta"),
    "labels an object": (["UPDATE items SET labels = '{\"a\": 1}' WHERE id = 2"], (), "labels"),
    "labels not JSON": (["UPDATE items SET labels = 'nope' WHERE id = 2"], (), "labels"),
    "labels of numbers": (["UPDATE items SET labels = '[1, 2]' WHERE id = 2"], (), "labels"),
    "meta a list": (["UPDATE items SET meta = '[1, 2]' WHERE id = 2"], (), "meta"),
    "path a blob": (["UPDATE items SET path = x'00ff' WHERE id = 2"], (), "path"),
    "size text": (["UPDATE items SET size = 'big' WHERE id = 2"], (), "size"),
}


@pytest.mark.parametrize("case", ITEM_CASES, ids=list(ITEM_CASES))
def test_crafted_item_rows_are_a_store_error_naming_the_row(tmp_path, case):
    statements, params, word = ITEM_CASES[case]
    path = crafted(tmp_path, *statements, params=params)
    with SQLiteStore.open(path) as store:
        with pytest.raises(StoreError) as caught:
            store.get_items([1, 2, 3])
    message = str(caught.value)
    assert "item 2" in message and word in message and str(path) in message


CODE_CASES = {
    "code too short": ["UPDATE fingerprints SET code = x'0102' WHERE id = 2"],
    "code text": ["UPDATE fingerprints SET code = 'abc' WHERE id = 2"],
    "code an integer": ["UPDATE fingerprints SET code = 12345 WHERE id = 2"],
    "quality huge": ["UPDATE fingerprints SET quality = 100000 WHERE id = 2"],
    "quality text": ["UPDATE fingerprints SET quality = 'high' WHERE id = 2"],
    "region a blob": ["UPDATE fingerprints SET region = x'05' WHERE id = 2"],
}


@pytest.mark.parametrize("case", CODE_CASES, ids=list(CODE_CASES))
def test_crafted_fingerprint_rows_are_a_store_error_naming_the_row(tmp_path, case):
    path = crafted(tmp_path, *CODE_CASES[case])
    with SQLiteStore.open(path) as store:
        with pytest.raises(StoreError, match="fingerprint 2"):
            store.load_codes("pdq", 256)
    with pytest.raises(StoreError):  # and the Index does not show a raw traceback either
        hm.Index.open(path).query_hashes(["0" * 64])


@pytest.mark.parametrize("nbits", [0, 255, 8, 2 ** 20, 2 ** 34])
def test_bad_nbits_is_refused_before_anything_is_allocated(tmp_path, nbits):
    path = crafted(tmp_path, "UPDATE fingerprints SET nbits = ?, code = zeroblob(?) WHERE id = 2",
                   params=(nbits, min(nbits // 8, 2 ** 17)))
    with SQLiteStore.open(path) as store:
        with pytest.raises(StoreError, match="nbits"):
            store.algorithms()
        with pytest.raises(StoreError, match="nbits"):
            store.load_codes("pdq", nbits)
    with pytest.raises(StoreError, match="nbits"):
        hm.Index.open(path)


def test_opening_a_crafted_file_stays_within_what_it_holds(tmp_path):
    # 2 MB of codes declared as one 16-Mbit phash: opening took GBs
    path = crafted(tmp_path, "INSERT INTO fingerprints (item_id, algorithm, nbits, region, "
                   "variant, code, quality) VALUES (1, 'phash', ?, 'full', 'original', "
                   "zeroblob(?), 1)", params=(2 ** 24, 2 ** 21))
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's (pytest's) RSS.
    script = ("import sys, hashmatch as hm\n"
              "try:\n    hm.Index.open(sys.argv[1])\nexcept hm.HashmatchError as e:\n"
              "    print('refused', e)\n"
              "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))"
              ".split()[1])\n")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0].startswith("refused") and "nbits" in out[0]
    assert int(out[-1]) < 400 * 1024  # KiB: well under the GBs it took


def test_dropped_column_is_named_on_open(tmp_path):
    path = crafted(tmp_path, "ALTER TABLE items DROP COLUMN meta")
    with pytest.raises(StoreError, match="items.*meta"):
        SQLiteStore.open(path)


def test_extra_tables_and_columns_are_left_alone(tmp_path):
    path = crafted(tmp_path, "CREATE TABLE extra_notes (id INTEGER PRIMARY KEY, x TEXT)",
                   "ALTER TABLE items ADD COLUMN note TEXT")
    with SQLiteStore.open(path) as store:  # room for the tables other work adds
        assert store.count_items() == 3


@pytest.mark.parametrize("table", ["changes", "items", "audit"])
def test_sequence_at_the_64_bit_limit_is_refused_on_open(tmp_path, table):
    path = crafted(tmp_path, "UPDATE sqlite_sequence SET seq = 9223372036854775807 WHERE name = ?",
                   params=(table,))
    with pytest.raises(StoreError, match=f"{table}.*limit"):
        SQLiteStore.open(path)


def test_untouched_store_still_opens_and_loads(tmp_path):
    path = crafted(tmp_path, "SELECT 1")
    with SQLiteStore.open(path) as store:
        assert len(store.load_codes("pdq", 256)) == 3
        assert store.get_items([1])[1].labels == ["a"]
