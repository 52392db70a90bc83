"""The stores and the codes cache: round trips, tombstones, change log, audit, refusals.

Every test that takes the ``store`` (or ``backend``) fixture runs twice: on the embedded SQLite
store and on the PostgreSQL store in a real server (tests/pg_server.py, one per session, a
fresh database per test). Tests about SQLite files (and the cache file format) are SQLite-only;
tests about PostgreSQL URLs and schemas are PostgreSQL-only.
"""

import hashlib
import json
import os
import pickle
import random
import shutil
import sqlite3
import struct
from datetime import datetime, timezone

import numpy as np
import pytest

from hashmatch import Fingerprint
from hashmatch.store import (
    CacheInvalid,
    FingerprintRecord,
    ItemRecord,
    SQLiteStore,
    StoreError,
    load_all_codes,
    load_cache,
    open_store,
    save_cache,
)
from hashmatch.store.cache import load_index_cache, save_index_cache
from hashmatch.store import cache as cache_module
from hashmatch.store import sqlite as sqlite_module
from hashmatch.store.cache import cache_path_of


HOSTILE = [
    "'); DROP TABLE items;--",
    "<script>alert(1)</script>",
    'a"b\\c',
    "\u202etxt.exe",
    "x\x00y",
    "🙂",
]


def sha_of(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def code(n: int, nbytes: int = 32) -> bytes:
    return np.random.default_rng(n).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def record(n: int, sha256="auto", **overrides) -> ItemRecord:
    fields = dict(
        path=f"/case/img{n}.jpg",
        sha256=sha_of(n) if sha256 == "auto" else sha256,
        size=1000 + n,
        labels=["ad"],
        source="NCA referral",
        meta={"n": n},
        fingerprints=[
            ("pdq", 256, "full", "original", code(n), 90),
            ("pdq", 256, "content", "original", code(n + 10_000), None),
            ("phash", 64, "full", "original", code(n, 8), None),
        ],
    )
    fields.update(overrides)
    return ItemRecord(**fields)


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "case.hmdb")


class Backend:
    """One store location of one backend, and raw SQL access to it (as an attacker would)."""

    def __init__(self, name, location, pg=None):
        self.name, self.location, self.pg = name, location, pg

    def open(self, create=False):
        return open_store(self.location, create=create)

    def another(self, tmp_path):
        """A second, separate store location of the same backend."""
        if self.name == "sqlite":
            return Backend("sqlite", str(tmp_path / "other.hmdb"))
        return Backend("postgres", self.pg.new_database(), self.pg)

    def raw(self, statement, params=(), replica=False):
        """Run one statement outside hashmatch (SQLite's ``?`` placeholders on both).

        ``replica``: PostgreSQL with foreign keys and triggers not enforced (SQLite's raw
        connections never enforce foreign keys).
        """
        if self.name == "sqlite":
            conn = sqlite3.connect(self.location)
            try:
                conn.execute(statement, params)
                conn.commit()
            finally:
                conn.close()
            return
        import psycopg

        with psycopg.connect(self.location, autocommit=True) as conn:
            conn.execute("SET search_path = hashmatch")
            if replica:
                conn.execute("SET session_replication_role = replica")
            conn.execute(statement.replace("?", "%s"), params)

    @property
    def raw_errors(self):
        if self.name == "sqlite":
            return sqlite3.DatabaseError
        import psycopg

        return psycopg.Error


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path, monkeypatch):
    monkeypatch.setenv("HASHMATCH_CACHE_DIR", str(tmp_path / "cache"))  # PG: the codes cache
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "case.hmdb"))
    server = request.getfixturevalue("pg")
    return Backend("postgres", server.new_database(), server)


@pytest.fixture
def pg_backend(pg, tmp_path, monkeypatch):
    monkeypatch.setenv("HASHMATCH_CACHE_DIR", str(tmp_path / "cache"))
    return Backend("postgres", pg.new_database(), pg)


@pytest.fixture
def store(backend):
    with backend.open(create=True) as s:
        yield s


# -- add / get / duplicates ---------------------------------------------------------------
def test_add_then_get_returns_every_field(store):
    [outcome] = store.add_items([record(1)])
    assert outcome.status == "added"
    item = store.get_items([outcome.item_id])[outcome.item_id]
    assert (item.path, item.sha256, item.size, item.labels, item.source, item.meta) == (
        "/case/img1.jpg",
        sha_of(1),
        1001,
        ["ad"],
        "NCA referral",
        {"n": 1},
    )
    assert not item.removed
    added_at = datetime.fromisoformat(item.added_at)
    assert added_at.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - added_at).total_seconds()) < 60
    assert store.find_by_sha256(sha_of(1)) == item
    assert store.find_by_sha256(sha_of(1).upper()) == item
    assert store.find_by_sha256(sha_of(2)) is None
    assert store.count_items() == 1


def test_same_sha256_is_a_duplicate_within_and_across_calls(store):
    first = store.add_items([record(1), record(2), record(1, path="/elsewhere/copy.jpg")])
    assert [o.status for o in first] == ["added", "added", "duplicate"]
    assert first[2].item_id == first[0].item_id
    seq = store.last_change_seq()
    again = store.add_items([record(2, sha256=sha_of(2).upper())])
    assert again[0].status == "duplicate" and again[0].item_id == first[1].item_id
    assert store.last_change_seq() == seq  # a duplicate changes nothing
    assert store.count_items() == 2
    assert len(store.load_codes("pdq", 256)) == 4


def test_hash_list_entries_without_sha256_are_always_added(store):
    outcomes = store.add_items([record(1, sha256=None), record(1, sha256=None)])
    assert [o.status for o in outcomes] == ["added", "added"]
    assert outcomes[0].item_id != outcomes[1].item_id


def test_fingerprint_record_from_fingerprint(store):
    fp = Fingerprint.from_hex("f" * 64, "pdq", quality=77)
    [out] = store.add_items([record(1, fingerprints=[FingerprintRecord.from_fingerprint(fp)])])
    codes = store.load_codes("pdq", 256)
    assert codes.codes[0].tobytes() == fp.bits.tobytes()
    assert codes.qualities.tolist() == [77]
    assert codes.regions.tolist() == ["full"] and codes.variants.tolist() == ["original"]


# -- load_codes -----------------------------------------------------------------------------
def test_load_codes_returns_every_live_fingerprint_in_order(store):
    ids = [o.item_id for o in store.add_items([record(n) for n in range(5)])]
    codes = store.load_codes("pdq", 256)
    assert codes.codes.dtype == np.uint8 and codes.codes.shape == (10, 32)
    assert codes.item_ids.dtype == np.int64 and codes.qualities.dtype == np.int16
    assert codes.item_ids.tolist() == [i for i in ids for _ in range(2)]
    assert np.all(np.diff(codes.fingerprint_ids) > 0)
    assert [codes.codes[k].tobytes() for k in range(10)] == [
        c for n in range(5) for c in (code(n), code(n + 10_000))
    ]
    assert codes.regions.tolist() == ["full", "content"] * 5
    assert codes.regions.dtype == object and codes.regions[0] is codes.regions[2]  # shared str
    assert codes.qualities.tolist() == [90, -1] * 5
    assert codes.seq == store.last_change_seq()

    phash = store.load_codes("phash", 64)
    assert phash.codes.shape == (5, 8)
    assert store.algorithms() == [("pdq", 256), ("phash", 64)]

    empty = store.load_codes("dhash", 64)
    assert len(empty) == 0 and empty.codes.shape == (0, 8)

    some = store.load_codes("pdq", 256, item_ids=[ids[3], ids[1], 999_999])
    assert some.item_ids.tolist() == [ids[1], ids[1], ids[3], ids[3]]


def test_removed_items_never_appear_in_load_codes(store):
    ids = [o.item_id for o in store.add_items([record(n) for n in range(4)])]
    assert store.remove_items([ids[1], ids[2]]) == 2
    assert set(store.load_codes("pdq", 256).item_ids.tolist()) == {ids[0], ids[3]}
    assert store.load_codes("pdq", 256, item_ids=[ids[1]]).item_ids.size == 0
    store.remove_items([ids[0], ids[3]])
    assert store.algorithms() == []
    assert store.count_items() == 0


def test_remove_is_a_tombstone_and_the_sha256_can_be_added_again(store):
    [first] = store.add_items([record(1)])
    assert store.remove_items([first.item_id]) == 1
    assert store.remove_items([first.item_id, 123456]) == 0  # already removed / unknown
    item = store.get_items([first.item_id])[first.item_id]
    assert item.removed and item.path == "/case/img1.jpg"
    assert store.find_by_sha256(sha_of(1)) is None
    [again] = store.add_items([record(1)])
    assert again.status == "added" and again.item_id != first.item_id
    assert store.integrity_check() == []


# -- change log ----------------------------------------------------------------------------
def test_change_seq_is_monotonic_and_changes_since_tells_adds_and_removes(store):
    assert store.last_change_seq() == 0
    ids = [o.item_id for o in store.add_items([record(n) for n in range(3)])]
    after_add = store.last_change_seq()
    store.remove_items([ids[1]])
    store.add_items([record(3)])
    changes = store.changes_since(0)
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[-1] == store.last_change_seq()
    assert [(c.item_id, c.op) for c in changes[:4]] == [
        (ids[0], "add"),
        (ids[1], "add"),
        (ids[2], "add"),
        (ids[1], "remove"),
    ]
    assert changes[4].op == "add"
    assert [(c.item_id, c.op) for c in store.changes_since(after_add)] == [
        (ids[1], "remove"),
        (changes[4].item_id, "add"),
    ]
    assert store.changes_since(0, limit=2) == changes[:2]
    assert store.changes_since(store.last_change_seq()) == []


def test_incremental_sync_reproduces_a_full_load(store):
    """What a matcher does: snapshot, then apply changes_since + load_codes(item_ids=...)."""
    ids = [o.item_id for o in store.add_items([record(n) for n in range(6)])]
    snapshot = store.load_codes("pdq", 256)
    store.remove_items([ids[0], ids[4]])
    new_ids = [o.item_id for o in store.add_items([record(n) for n in range(6, 9)])]
    store.remove_items([new_ids[1]])

    changes = store.changes_since(snapshot.seq)
    removed = {c.item_id for c in changes if c.op == "remove"}
    added = store.load_codes("pdq", 256, item_ids=[c.item_id for c in changes if c.op == "add"])
    keep = ~np.isin(snapshot.item_ids, list(removed))
    synced_ids = np.concatenate([snapshot.item_ids[keep], added.item_ids])
    synced_codes = np.concatenate([snapshot.codes[keep], added.codes])

    full = store.load_codes("pdq", 256)
    assert synced_ids.tolist() == full.item_ids.tolist()
    assert np.array_equal(synced_codes, full.codes)


# -- audit ---------------------------------------------------------------------------------
def test_writes_append_audit_rows(store):
    ids = [
        o.item_id
        for o in store.add_items([record(1), record(2)], action="index", detail={"root": "/case"})
    ]
    store.add_items([record(1)], action="import")
    store.remove_items([ids[0]], detail={"why": "false positive"})
    store.audit("export", {"format": "csv"})
    log = store.audit_log(limit=10)
    assert [e.action for e in log] == ["export", "remove", "import", "index", "create"]
    assert log[3].detail == {"added": 2, "duplicates": 0, "root": "/case"}
    assert log[2].detail == {"added": 0, "duplicates": 1}
    assert log[1].detail["removed"] == [ids[0]] and log[1].detail["why"] == "false positive"
    assert all(f"pid {os.getpid()}" in e.actor for e in log)
    assert [e.id for e in log] == sorted((e.id for e in log), reverse=True)
    assert len(store.audit_log(limit=2)) == 2


def test_audit_and_change_logs_refuse_edits_even_from_raw_sql(store, backend):
    store.add_items([record(1)])
    statements = ["UPDATE audit SET action = 'x'", "DELETE FROM audit", "DELETE FROM changes",
                  "UPDATE changes SET op = 'remove'"]
    if backend.name == "postgres":
        statements += ["TRUNCATE audit", "TRUNCATE changes"]
    for statement in statements:
        with pytest.raises(backend.raw_errors, match="append-only"):
            backend.raw(statement)
    assert len(store.audit_log()) == 2 and len(store.changes_since(0)) == 1


# -- strings from outside are data ----------------------------------------------------------
def test_hostile_strings_are_stored_and_returned_verbatim(store):
    meta = {s: s for s in HOSTILE} | {"nested": {"list": HOSTILE}}
    [out] = store.add_items(
        [record(1, path=HOSTILE[0], labels=HOSTILE, source=HOSTILE[1], meta=meta)]
    )
    store.audit(HOSTILE[0], {"x": HOSTILE})
    item = store.get_items([out.item_id])[out.item_id]
    assert (
        item.path == HOSTILE[0]
        and item.labels == HOSTILE
        and item.source == HOSTILE[1]
        and item.meta == meta
    )
    assert store.audit_log(1)[0].action == HOSTILE[0] and store.audit_log(1)[0].detail == {
        "x": HOSTILE
    }
    assert store.count_items() == 1  # the items table survived
    assert store.integrity_check() == []
    assert store.find_by_sha256(HOSTILE[0]) is None
    with pytest.raises(StoreError, match="sha256"):
        store.add_items([record(2, sha256=HOSTILE[0])])


@pytest.mark.parametrize(
    "bad",
    [
        dict(sha256="xyz"),
        dict(labels="ad"),
        dict(meta={"x": object()}),
        dict(meta={"x": float("nan")}),
        dict(fingerprints=[("pdq", 256, "full", "original", b"\0" * 31, None)]),
        dict(fingerprints=[("pdq", 256, "full", "original", b"\0" * 32, 1 << 20)]),
        dict(fingerprints=[("pdq", 256, "full")]),
        dict(size=-1),
    ],
)
def test_an_invalid_record_aborts_the_whole_call(store, bad):
    with pytest.raises(StoreError):
        store.add_items([record(1), record(2, **bad)])
    assert store.count_items() == 0 and store.last_change_seq() == 0


# -- opening -------------------------------------------------------------------------------
def test_reopen_keeps_data_and_identity(backend):
    with backend.open(create=True) as s:
        s.add_items([record(1)])
        uuid = s.uuid
    with backend.open() as s:
        assert s.uuid == uuid and s.count_items() == 1
        assert s.stats()["items"] == 1
    with backend.open(create=True) as s:  # create=True on an existing store just opens it
        assert s.uuid == uuid and s.count_items() == 1
        assert [e.action for e in s.audit_log()] == ["add", "create"]


def test_missing_file_is_an_error_naming_the_path(tmp_path):
    path = str(tmp_path / "nope.hmdb")
    with pytest.raises(StoreError, match="nope.hmdb"):
        SQLiteStore.open(path)
    assert not os.path.exists(path)


@pytest.mark.parametrize(
    "content", [b"this is not a database\n" * 100, b"SQLite format 3\0" + b"\xff" * 200]
)
def test_non_database_file_is_an_error_naming_the_path(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    for create in (False, True):
        with pytest.raises(StoreError, match="notes.txt"):
            SQLiteStore.open(path, create=create)
    assert path.read_bytes() == content


def test_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "other.sqlite"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE t (x)")
    raw.commit()
    raw.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="other.sqlite.*not a hashmatch"):
        SQLiteStore.open(path, create=True)
    assert path.read_bytes() == before


def test_empty_file_needs_create(tmp_path):
    path = tmp_path / "empty.hmdb"
    path.write_bytes(b"")
    with pytest.raises(StoreError, match="empty.hmdb"):
        SQLiteStore.open(path)
    with SQLiteStore.open(path, create=True) as s:
        assert s.count_items() == 0


def test_newer_schema_version_is_refused(backend):
    backend.open(create=True).close()
    backend.raw(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'",
        (str(sqlite_module.SCHEMA_VERSION + 1),),
    )
    name = "case.hmdb" if backend.name == "sqlite" else backend.location.split("?")[0]
    newer = sqlite_module.SCHEMA_VERSION + 1
    with pytest.raises(StoreError, match=rf"{name}.*schema version {newer} is newer"):
        backend.open()
    with pytest.raises(StoreError, match=f"schema version {newer} is newer"):
        backend.open(create=True)  # and is not "migrated" downwards either


def test_corrupt_database_is_reported(db_path):
    with SQLiteStore.open(db_path, create=True) as s:
        s.add_items([record(n) for n in range(300)])
    # closing checkpoints the WAL: everything is in the main file, which is what gets damaged
    assert not os.path.exists(str(db_path) + "-wal")
    page_size = 4096
    with open(db_path, "r+b") as f:  # scribble over every page but the header page
        size = f.seek(0, os.SEEK_END)
        for offset in range(page_size, size, page_size):
            f.seek(offset + 100)
            f.write(b"\xa5" * 200)
    try:
        corrupt = SQLiteStore.open(db_path)
    except StoreError as e:  # fine too, if the damage reaches what open() reads
        assert "case.hmdb" in str(e)
        return
    with corrupt:
        assert corrupt.integrity_check() != []


def test_closed_store_raises(backend):
    s = backend.open(create=True)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.count_items()


# -- integrity, stats, snapshots ---------------------------------------------------------
def test_integrity_check_passes_on_a_healthy_store_and_finds_orphans(store, backend):
    store.add_items([record(n) for n in range(3)])
    store.remove_items([1])
    assert store.integrity_check() == []
    # Foreign keys not enforced (a raw SQLite connection; PG replica mode): write an orphan.
    backend.raw(
        "INSERT INTO fingerprints (item_id, algorithm, nbits, region, variant, code)"
        " VALUES (999, 'pdq', 256, 'full', 'original', ?)",
        (code(1),),
        replica=True,
    )
    backend.raw("UPDATE items SET removed_at = NULL WHERE id = 1")
    problems = store.integrity_check()
    assert any("fingerprints row" in p and "items" in p for p in problems)
    assert any("removed_at disagrees" in p for p in problems)


def test_stats(store):
    store.add_items([record(n) for n in range(3)])
    store.remove_items([2])
    stats = store.stats()
    assert stats["items"] == 2 and stats["removed_items"] == 1
    assert stats["fingerprints"] == {"pdq/256": 4, "phash/64": 2}
    assert stats["last_change_seq"] == 4 and stats["uuid"] == store.uuid
    assert stats["db_bytes"] > 0


def test_snapshot_reads_one_state_while_another_process_writes(store, backend):
    store.add_items([record(1)])
    with backend.open() as writer:
        with store.snapshot():
            seq = store.last_change_seq()
            writer.add_items([record(2)])  # WAL: the writer is not blocked by the open snapshot
            assert store.last_change_seq() == seq
            assert len(store.load_codes("pdq", 256)) == 2
            with pytest.raises(StoreError, match="inside snapshot"):
                store.add_items([record(3)])
        assert store.last_change_seq() == seq + 1
        assert len(store.load_codes("pdq", 256)) == 4


# -- codes cache -------------------------------------------------------------------------
UUID = "3f1c3c1e-0000-4000-8000-000000000000"


def sample_arrays():
    rng = np.random.default_rng(1)
    return {
        "ids": np.arange(5, dtype=np.int64),
        "codes": rng.integers(0, 256, (5, 32), dtype=np.uint8),
        "q": np.array([1, -1, 3, 4, 5], dtype=np.int16),
        "empty": np.zeros((0, 8), dtype=np.uint8),
    }


def test_cache_round_trip(tmp_path):
    path = tmp_path / "x.codes"
    arrays = sample_arrays()
    save_cache(path, UUID, 7, arrays, {"names": ["full"]})
    loaded, info = load_cache(path, UUID, 7)
    assert info == {"names": ["full"]}
    assert loaded.keys() == arrays.keys()
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array)
    assert os.listdir(tmp_path) == ["x.codes"]  # no temp files left behind


def rejection(path, uuid=UUID, seq=7) -> str:
    with pytest.raises(CacheInvalid) as e:
        load_cache(path, uuid, seq)
    return e.value.reason


def test_cache_rejects_other_store_stale_seq_and_missing_file(tmp_path):
    path = tmp_path / "x.codes"
    save_cache(path, UUID, 7, sample_arrays())
    assert "different store" in rejection(path, uuid="another")
    assert "stale" in rejection(path, seq=8)
    assert "missing" in rejection(tmp_path / "nothing.codes")


def test_cache_rejects_every_corrupted_byte_region(tmp_path):
    path = tmp_path / "x.codes"
    save_cache(path, UUID, 7, sample_arrays())
    good = path.read_bytes()
    header_len = struct.unpack_from("<I", good, 12)[0]
    for position, expected in [
        (0, "magic"),
        (48 + header_len // 2, "header checksum"),
        (20, "header checksum"),
        (len(good) - 1, "payload checksum"),
        (len(good) - 200, "payload checksum"),
    ]:
        corrupted = bytearray(good)
        corrupted[position] ^= 0x01
        path.write_bytes(bytes(corrupted))
        assert expected in rejection(path), position


def test_cache_rejects_other_format_version(tmp_path):
    path = tmp_path / "x.codes"
    save_cache(path, UUID, 7, sample_arrays())
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, cache_module.FORMAT_VERSION + 1)
    path.write_bytes(bytes(data))
    assert "format version 2" in rejection(path)


def test_cache_rejects_truncation_anywhere(tmp_path):
    path = tmp_path / "x.codes"
    save_cache(path, UUID, 7, sample_arrays())
    good = path.read_bytes()
    for length in (0, 5, 47, 60, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:length])
        assert "truncated" in rejection(path), length


class _Exploit:
    """Unpickling this creates a marker file: proof that something executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_cache_never_unpickles(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "x.codes"

    path.write_bytes(pickle.dumps({"codes": _Exploit(marker)}))  # a bare pickle
    assert "magic" in rejection(path)

    np.save(
        open(path, "wb"), np.array([_Exploit(marker)], dtype=object), allow_pickle=True
    )  # an .npy pickle
    assert "magic" in rejection(path)

    # A well-formed cache whose (correctly checksummed) header claims an object array.
    payload = pickle.dumps(_Exploit(marker))
    header = json.dumps(
        {
            "store_uuid": UUID,
            "seq": 7,
            "arrays": [
                {"name": "codes", "dtype": "|O", "shape": [1], "offset": 0, "nbytes": len(payload)}
            ],
            "payload_nbytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "info": {},
        }
    ).encode()
    prefix = struct.pack(
        "<8sII32s",
        cache_module.MAGIC,
        cache_module.FORMAT_VERSION,
        len(header),
        hashlib.sha256(header).digest(),
    )
    padding = b"\0" * (-(len(prefix) + len(header)) % 64)
    path.write_bytes(prefix + header + padding + payload)
    assert "disallowed dtype" in rejection(path)

    assert not marker.exists()


def test_cache_refuses_to_save_object_arrays(tmp_path):
    with pytest.raises(ValueError, match="cannot be cached"):
        save_cache(tmp_path / "x.codes", UUID, 1, {"o": np.array([object()])})
    assert not os.listdir(tmp_path)


CODES_FIELDS = ("item_ids", "fingerprint_ids", "codes", "qualities", "regions", "variants")


def assert_same_codes(got: dict, expected: dict):
    assert got.keys() == expected.keys()
    for key in expected:
        a, b = got[key], expected[key]
        for name in CODES_FIELDS:
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and np.array_equal(x, y), (key, name)
        assert a.seq == b.seq


def full_load(store):
    return {key: store.load_codes(*key) for key in store.algorithms()}


def test_load_all_codes_uses_a_current_cache_and_rebuilds_a_broken_one(store):
    store.add_items([record(n) for n in range(4)])
    cache_path = cache_path_of(store)

    codes, _, how = load_all_codes(store)
    assert how == "store (missing)" and os.path.exists(cache_path)
    assert_same_codes(codes, full_load(store))
    cached, _, how = load_all_codes(store)
    assert how == "cache"
    assert_same_codes(cached, full_load(store))

    with open(cache_path, "r+b") as f:  # flip the last payload byte
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    rebuilt, _, how = load_all_codes(store)
    assert how == "store (payload checksum mismatch)"
    assert_same_codes(rebuilt, full_load(store))
    assert load_all_codes(store).how == "cache"


def test_load_all_codes_catches_an_old_cache_up_from_the_change_log(store):
    ids = [o.item_id for o in store.add_items([record(n) for n in range(6)])]
    load_all_codes(store)
    store.remove_items([ids[0], ids[3]])
    store.add_items([record(n) for n in range(6, 9)])
    store.add_items(
        [record(20, fingerprints=[("dhash", 64, "crop:0,0,10,10", "mirror", code(20, 8), None)])]
    )
    store.remove_items([store.find_by_sha256(sha_of(7)).id])

    caught_up, _, how = load_all_codes(store)
    assert how == "cache + 7 changes"
    assert_same_codes(caught_up, full_load(store))
    assert ("dhash", 64) in caught_up
    assert load_all_codes(store).how == "cache"

    store.remove_items([o.item_id for o in store.add_items([record(30)])])
    store.remove_items(range(1, 100))  # everything
    emptied, _, how = load_all_codes(store)
    assert how.startswith("cache + ") and emptied == {} == full_load(store)


def test_load_all_codes_rejects_another_stores_cache_and_one_ahead_of_the_store(
    store, backend, tmp_path
):
    store.add_items([record(1)])
    load_all_codes(store)
    with backend.another(tmp_path).open(create=True) as other:
        shutil.copy(cache_path_of(store), cache_path_of(other))
        assert load_all_codes(other).how == "store (written for a different store)"
    save_cache(cache_path_of(store), store.uuid, 99, {}, {"codes_sets": []})
    assert load_all_codes(store).how == "store (ahead of the store (change 99 > 1))"


def test_catching_up_equals_a_full_load_after_random_changes(store):
    rng = random.Random(7)
    next_n = 0
    hows = []
    for step in range(40):
        if rng.random() < 0.6 or store.count_items() == 0:
            batch = []
            for _ in range(rng.randint(1, 4)):
                next_n += 1
                fingerprints = [
                    (
                        alg,
                        nbits,
                        rng.choice(["full", "content", f"crop:{step}"]),
                        "original",
                        code(next_n, nbits // 8),
                        rng.choice([None, 50]),
                    )
                    for alg, nbits in rng.sample([("pdq", 256), ("phash", 64), ("dhash", 64)], 2)
                ]
                batch.append(record(next_n, fingerprints=fingerprints))
            store.add_items(batch)
        else:
            live = [c.item_id for c in store.changes_since(0) if c.op == "add"]
            store.remove_items(rng.sample(live, min(len(live), rng.randint(1, 3))))
        if rng.random() < 0.4:
            codes, _, how = load_all_codes(store)
            assert_same_codes(codes, full_load(store))
            hows.append(how)
    assert sum(how.startswith("cache + ") for how in hows) >= 5, hows


def test_hash_list_entries_may_have_no_path(store):
    [out] = store.add_items([record(1, sha256=None, path=None, size=None)])
    assert store.get_items([out.item_id])[out.item_id].path is None
    assert store.integrity_check() == []


def test_load_codes_for_items_groups_by_algorithm_and_skips_removed(store):
    ids = [o.item_id for o in store.add_items([record(n) for n in range(3)])]
    store.remove_items([ids[1]])
    by_key = store.load_codes_for_items([ids[0], ids[1], ids[2], 999])
    assert set(by_key) == {("pdq", 256), ("phash", 64)}
    assert by_key[("pdq", 256)].item_ids.tolist() == [ids[0], ids[0], ids[2], ids[2]]
    assert by_key[("phash", 64)].item_ids.tolist() == [ids[0], ids[2]]
    assert store.load_codes_for_items([]) == {}


def test_open_store_chooses_the_backend_by_location(db_path, pg):
    from hashmatch.store.postgres import PostgresStore

    with open_store(db_path, create=True) as s:
        assert isinstance(s, SQLiteStore)
    url = pg.new_database()
    with open_store(url, create=True) as s:
        assert isinstance(s, PostgresStore)
    with open_store(url.replace("postgresql://", "postgres://", 1)) as s:
        assert isinstance(s, PostgresStore)


def test_unreachable_server_is_an_error_that_never_echoes_the_password():
    # Port 1 on localhost: nothing listens there, so the connection is refused at once.
    with pytest.raises(StoreError) as e:
        open_store("postgresql://curator:s3cret-pw@127.0.0.1:1/hashmatch?connect_timeout=2")
    message = str(e.value)
    assert "s3cret-pw" not in message and "127.0.0.1" in message and "cannot connect" in message
    with pytest.raises(StoreError) as e:
        open_store("postgresql://127.0.0.1:1/hashmatch?password=s3cret-pw&connect_timeout=2")
    assert "s3cret-pw" not in str(e.value)


# -- PostgreSQL only -----------------------------------------------------------------------
def test_pg_missing_database_and_missing_store_are_errors_naming_the_database(pg):
    url = pg.url("no_such_db")
    with pytest.raises(StoreError, match="no_such_db.*cannot connect"):
        open_store(url)
    empty = pg.new_database()
    with pytest.raises(StoreError, match="no hashmatch store.*create=True"):
        open_store(empty)
    with open_store(empty, create=True) as s:
        assert s.count_items() == 0 and s.integrity_check() == []


def test_pg_foreign_hashmatch_schema_is_refused_and_left_untouched(pg):
    import psycopg

    url = pg.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA hashmatch")
        conn.execute("CREATE TABLE hashmatch.invoices (x int)")
        conn.execute("CREATE TABLE public.other_app (x int)")  # other tables are no problem
    for create in (False, True):
        with pytest.raises(StoreError, match="not a hashmatch store"):
            open_store(url, create=create)
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'hashmatch'").fetchall()
    assert tables == [("invoices",)]


def test_pg_store_shares_a_database_with_other_applications(pg):
    import psycopg

    url = pg.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.items (x int)")  # same table name, other schema
    with open_store(url, create=True) as s:
        s.add_items([record(1)])
        assert s.count_items() == 1 and s.integrity_check() == []


def test_pg_many_sessions_creating_one_store_at_once_agree(pg):
    import concurrent.futures
    import threading

    url = pg.new_database()
    start = threading.Barrier(6)

    def open_and_report_uuid(_):
        start.wait()  # six connections race to create the schema (each its own PG session)
        with open_store(url, create=True) as s:
            return s.uuid

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        uuids = list(pool.map(open_and_report_uuid, range(6)))
    assert len(set(uuids)) == 1
    with open_store(url) as s:
        assert [e.action for e in s.audit_log()] == ["create"]
        assert s.integrity_check() == []


def test_pg_schema_migrations_are_versioned_and_complete(pg_backend):
    backend = pg_backend
    from hashmatch.store import postgres as pg_module

    assert sorted(pg_module.MIGRATIONS) == list(range(1, pg_module.SCHEMA_VERSION + 1))
    with backend.open(create=True) as s:
        assert s.stats()["schema_version"] == pg_module.SCHEMA_VERSION
    import psycopg

    with psycopg.connect(backend.location) as conn:
        meta = dict(conn.execute("SELECT key, value FROM hashmatch.meta").fetchall())
    assert meta["schema_version"] == str(pg_module.SCHEMA_VERSION)


def test_pg_nul_characters_in_text_columns_are_refused_cleanly(pg_backend):
    backend = pg_backend
    with backend.open(create=True) as s:
        with pytest.raises(StoreError, match="NUL"):
            s.add_items([record(1), record(2, path="a\x00b")])
        with pytest.raises(StoreError, match="NUL"):
            s.audit("x\x00y")
        assert s.count_items() == 0 and s.last_change_seq() == 0
        assert s.find_by_sha256("a\x00") is None


def test_pg_connection_is_reestablished_after_the_server_drops_it(pg_backend):
    backend = pg_backend
    import psycopg

    with backend.open(create=True) as s:
        s.add_items([record(1)])
        with psycopg.connect(backend.location, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with pytest.raises(StoreError):
            s.count_items()  # the call in flight fails, with the database named
        assert s.count_items() == 1  # the next one reconnects
        s.add_items([record(2)])
        assert s.count_items() == 2


def test_index_cache_entry_points(store):
    store.add_items([record(n) for n in range(3)])
    seq = store.last_change_seq()
    codes = load_index_cache(store, seq)
    assert_same_codes(codes, full_load(store))
    store.add_items([record(5)])
    assert load_index_cache(store, seq) is None  # the store moved on: caller must reload
    save_index_cache(store)
    assert load_all_codes(store).how == "cache"


# -- rows written around hashmatch (issue 16 item 7) ---------------------------------------------
def test_rows_written_around_hashmatch_are_a_store_error_naming_the_row(store, backend):
    [first, second] = store.add_items([record(1), record(2)])
    backend.raw("UPDATE items SET labels = '{\"a\": 1}' WHERE id = ?", (second.item_id,))
    with pytest.raises(StoreError, match=f"item {second.item_id}: labels"):
        store.get_items([first.item_id, second.item_id])
    backend.raw("UPDATE fingerprints SET nbits = 2097152, code = ? WHERE item_id = ?"
                " AND algorithm = 'phash'", (b"\0" * 262144, first.item_id), replica=True)
    with pytest.raises(StoreError, match="nbits=2097152"):
        store.algorithms()
