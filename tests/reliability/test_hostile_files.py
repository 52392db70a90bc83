"""Hostile stores and caches: rejected with a clear error or safely rebuilt; nothing executes.

Each payload, if anything ever executed it (unpickling, a trigger, an extension), would create
a marker file; the tests assert the marker never appears.
"""
import os
import pickle
import shutil
import sqlite3
import struct

import pytest

import hashmatch as hm
from hashmatch.store import SQLiteStore, StoreError, load_all_codes
from hashmatch.store.cache import cache_path_for

from .test_index_faults import good_images


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what unpickling would run
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def case(tmp_path):
    """A healthy store with 4 items, its cache, and a marker path that must stay absent."""
    db = str(tmp_path / "case.hmdb")
    images = good_images(tmp_path / "img", 4)
    with hm.Index.open(db, create=True) as index:
        index.add_files(images, workers=1)
    marker = tmp_path / "PWNED"
    yield db, images, marker
    assert not marker.exists(), "a hostile payload executed"


def _open_error(path) -> str:
    with pytest.raises(StoreError) as info:
        hm.Index.open(path).close()
    message = str(info.value)
    assert str(path) in message
    return message


def test_pickle_payload_as_database_is_rejected(case, tmp_path):
    _, _, marker = case
    evil = tmp_path / "evil.hmdb"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    assert "not a hashmatch database" in _open_error(evil)


def test_truncated_database_is_rejected_or_reports_damage(case, tmp_path):
    db, _, _ = case
    data = open(db, "rb").read()
    for cut in (0, 50, 100, 4096, len(data) // 2):
        path = tmp_path / f"cut{cut}.hmdb"
        path.write_bytes(data[:cut])
        try:
            with SQLiteStore.open(path) as store:
                problems = store.integrity_check()
                assert problems, f"cut at {cut}: damage not reported"
        except StoreError as e:
            assert str(path) in str(e)


def test_database_of_another_application_is_rejected(tmp_path):
    other = tmp_path / "photos.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    assert "not a hashmatch one" in _open_error(other)
    # ... and with a meta table that merely looks like ours
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('format', 'somethingelse')")
    _open_error(other)


def test_database_of_a_newer_or_unknown_version_is_rejected(case, tmp_path):
    db, _, _ = case
    for version, words in (("99", "newer"), ("0", "unknown"), ("x", "")):
        path = tmp_path / f"v{version}.hmdb"
        shutil.copy(db, path)
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
        assert words in _open_error(path)


@pytest.mark.parametrize("statement", [
    # would write a file if SQL could (writefile is the sqlite3 shell's, never registered here)
    "CREATE TRIGGER evil AFTER INSERT ON items BEGIN SELECT writefile('{marker}', 'x'); END",
    # silently drops every fingerprint stored from now on: items would be lost unnoticed
    "CREATE TRIGGER evil AFTER INSERT ON fingerprints BEGIN"
    " DELETE FROM fingerprints WHERE id = NEW.id; END",
    # a view shadowing nothing but present in a file we did not write
    "CREATE VIEW evil AS SELECT load_extension('{marker}')",
])
def test_database_with_foreign_triggers_or_views_is_rejected(case, statement):
    db, images, marker = case
    with sqlite3.connect(db) as conn:
        conn.execute(statement.format(marker=marker))
    message = _open_error(db)
    assert "evil" in message
    assert not marker.exists()


def test_hostile_cache_files_are_rebuilt_from_the_store(case):
    db, images, marker = case
    cache = cache_path_for(db)
    good = open(cache, "rb").read()
    with SQLiteStore.open(db) as store:
        truth = store.load_codes("pdq", 256)
    header_len = struct.unpack_from("<I", good, 12)[0]
    variants = {
        "pickle payload": pickle.dumps(_Payload(marker)),
        "wrong version": good[:8] + struct.pack("<I", 99) + good[12:],
        "wrong header checksum": good[:16] + bytes(32) + good[48:],
        "wrong payload checksum": good[:-1] + bytes([good[-1] ^ 1]),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "absurd header length": good[:12] + struct.pack("<I", 2**32 - 1) + good[16:],
        "header not JSON": good[:48] + b"\xff" * header_len + good[48 + header_len:],
        "a directory": None,
    }
    for what, data in variants.items():
        if os.path.isdir(cache):
            os.rmdir(cache)
        elif os.path.exists(cache):
            os.unlink(cache)
        if data is None:
            os.mkdir(cache)
        else:
            open(cache, "wb").write(data)
        with SQLiteStore.open(db) as store:
            loaded = load_all_codes(store)
            assert loaded.how.startswith("store ("), (what, loaded.how)
            codes = loaded.codes[("pdq", 256)]
            assert (codes.codes == truth.codes).all() and (codes.item_ids == truth.item_ids).all()
        with hm.Index.open(db) as index:  # the index starts and finds everything
            for path in images:
                assert [m.path for m in index.query(path, max_distance=0)] == [path], what
    assert not marker.exists()


def test_object_dtype_in_a_correctly_checksummed_cache_is_refused(case):
    """A forger can recompute the SHA-256s; the dtype allow-list still refuses pickled arrays."""
    import hashlib
    import json

    db, _, marker = case
    cache = cache_path_for(db)
    data = open(cache, "rb").read()
    header_len = struct.unpack_from("<I", data, 12)[0]
    header = json.loads(data[48:48 + header_len])
    header["arrays"][0]["dtype"] = "|O"
    raw = json.dumps(header).encode()
    forged = data[:12] + struct.pack("<I", len(raw)) + hashlib.sha256(raw).digest() + raw
    pad = -len(forged) % 64
    payload_start = 48 + header_len + (-(48 + header_len) % 64)
    forged += b"\0" * pad + data[payload_start:]
    open(cache, "wb").write(forged)
    with SQLiteStore.open(db) as store:
        assert "disallowed dtype" in load_all_codes(store).how
    assert not marker.exists()
