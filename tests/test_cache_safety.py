"""Issue 16, cache items 4-6: the codes cache trusts nothing it reads.

4. the store uuid (from the server, for PostgreSQL) names the cache file: it must be a UUID,
   and the file stays inside its cache folder;
5. a cache written from a diverged copy of the database (same uuid, other changes) is refused;
6. only regular files are read, and their size is checked against the header first.
"""
import os
import shutil
import threading

import numpy as np
import pytest

from hashmatch.store import CacheInvalid, ItemRecord, load_all_codes, open_store, save_cache
from hashmatch.store import cache as cache_module
from hashmatch.store.cache import cache_path_of, read_cache

UUID = "3f1c3c1e-0000-4000-8000-000000000000"


def rec(n: int) -> ItemRecord:
    code = np.random.default_rng(n).integers(0, 256, 32, dtype=np.uint8).tobytes()
    return ItemRecord(path=None, sha256=None, source="t",
                      fingerprints=[("pdq", 256, "full", "original", code, 90)])


def full_load(store):
    return {key: store.load_codes(*key) for key in store.algorithms()}


def same_codes(a, b):
    return set(a) == set(b) and all(
        np.array_equal(a[k].item_ids, b[k].item_ids) and np.array_equal(a[k].codes, b[k].codes)
        for k in a)


# -- 4. the uuid is a file name -------------------------------------------------------------
class _FakeStore:
    def __init__(self, uuid, folder):
        self.uuid, self.path = uuid, "postgresql://h/db"
        self.codes_cache_path = os.path.join(folder, f"{uuid}.codes")


@pytest.mark.parametrize("bad", ["../../../../tmp/x", "x", "", "3f1c3c1e/../../y",
                                 UUID + "/../../z", UUID + "\0"])
def test_cache_path_refuses_a_uuid_that_is_not_one(tmp_path, bad):
    with pytest.raises(CacheInvalid, match="not a UUID"):
        cache_path_of(_FakeStore(bad, str(tmp_path / "cache")))
    with pytest.raises(CacheInvalid):
        cache_module.save_codes_cache(tmp_path / "c.codes", bad, 1, [])


def test_cache_path_of_a_real_uuid_is_inside_the_folder(tmp_path):
    path = cache_path_of(_FakeStore(UUID, str(tmp_path / "cache")))
    assert os.path.dirname(path) == str(tmp_path / "cache")


def test_postgres_store_with_a_hostile_uuid_writes_no_file_outside_its_cache(
        pg, tmp_path, monkeypatch):
    import psycopg

    cache_dir = tmp_path / "a" / "b" / "c" / "cache"
    monkeypatch.setenv("HASHMATCH_CACHE_DIR", str(cache_dir))
    url = pg.new_database()
    with open_store(url, create=True) as store:
        store.add_items([rec(1), rec(2)])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE hashmatch.meta SET value = %s WHERE key = 'store_uuid'",
                     ("../../../../escaped",))
    with open_store(url) as store:
        loaded = load_all_codes(store)
        assert "not a UUID" in loaded.how
        assert same_codes(loaded.codes, full_load(store))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [], written


# -- 5. a diverged copy of the database -----------------------------------------------------
def test_cache_of_a_diverged_copy_is_refused(tmp_path):
    a_path, b_path = str(tmp_path / "a.hmdb"), str(tmp_path / "b.hmdb")
    with open_store(a_path, create=True) as a:
        a.add_items([rec(n) for n in range(10)])
    shutil.copy(a_path, b_path)  # same uuid, same history so far
    with open_store(a_path) as a, open_store(b_path) as b:
        assert a.uuid == b.uuid
        a.add_items([rec(n) for n in range(100, 105)])
        b.add_items([rec(n) for n in range(200, 205)])  # same item ids and seqs, other codes
        assert a.last_change_seq() == b.last_change_seq()
        load_all_codes(a)  # writes a's cache
        shutil.copy(cache_path_of(a), cache_path_of(b))
        loaded = load_all_codes(b)
        assert loaded.how.startswith("store (") and "diverged" in loaded.how, loaded.how
        assert same_codes(loaded.codes, full_load(b))
        assert load_all_codes(b).how == "cache"  # rewritten from b's own content


def test_cache_of_a_copy_whose_change_log_differs_is_refused(tmp_path):
    a_path, b_path = str(tmp_path / "a.hmdb"), str(tmp_path / "b.hmdb")
    with open_store(a_path, create=True) as a:
        ids = [o.item_id for o in a.add_items([rec(n) for n in range(10)])]
    shutil.copy(a_path, b_path)
    with open_store(a_path) as a, open_store(b_path) as b:
        a.remove_items([ids[0]])
        b.remove_items([ids[1]])
        load_all_codes(a)
        shutil.copy(cache_path_of(a), cache_path_of(b))
        loaded = load_all_codes(b)
        assert "diverged" in loaded.how, loaded.how
        assert same_codes(loaded.codes, full_load(b))


def test_an_honest_old_cache_still_catches_up(tmp_path):
    path = str(tmp_path / "a.hmdb")
    with open_store(path, create=True) as s:
        ids = [o.item_id for o in s.add_items([rec(n) for n in range(10)])]
        load_all_codes(s)
        s.remove_items(ids[-3:])  # the newest items, removed after the cache was written
        s.add_items([rec(50)])
        loaded = load_all_codes(s)
        assert loaded.how == "cache + 4 changes", loaded.how
        assert same_codes(loaded.codes, full_load(s))


# -- 6. only regular files, size checked first ----------------------------------------------
def _read_with_timeout(path, seconds=5.0):
    out = {}

    def run():
        try:
            read_cache(path, UUID)
        except CacheInvalid as e:
            out["reason"] = e.reason
        except BaseException as e:  # noqa: BLE001 - reported below
            out["other"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "read_cache hung"
    assert "other" not in out, out
    return out["reason"]


def test_symlink_to_dev_zero_is_refused_without_reading(tmp_path):
    link = tmp_path / "x.codes"
    os.symlink("/dev/zero", link)
    assert "not a regular file" in _read_with_timeout(link)


def test_symlink_to_a_valid_cache_is_refused(tmp_path):
    real = tmp_path / "real.codes"
    save_cache(real, UUID, 1, {"a": np.arange(3)})
    os.symlink(real, tmp_path / "x.codes")
    assert "not a regular file" in _read_with_timeout(tmp_path / "x.codes")


def test_device_fifo_and_folder_are_refused(tmp_path):
    fifo = tmp_path / "fifo.codes"
    os.mkfifo(fifo)
    assert "not a regular file" in _read_with_timeout(fifo)
    assert "not a regular file" in _read_with_timeout("/dev/zero")
    assert _read_with_timeout(tmp_path)  # a folder: refused (unreadable or not regular)


def test_size_is_checked_against_the_header_before_the_payload(tmp_path, monkeypatch):
    path = tmp_path / "x.codes"
    save_cache(path, UUID, 1, {"a": np.arange(1000)})
    with open(path, "ab") as f:
        f.write(b"\0" * 10)  # longer than the header says
    hashed = []
    real_sha = cache_module.hashlib.sha256
    monkeypatch.setattr(cache_module.hashlib, "sha256",
                        lambda data=b"": hashed.append(len(data)) or real_sha(data))
    reason = _read_with_timeout(path)
    assert reason.startswith("truncated (payload is 8010 bytes")
    assert max(hashed) < 8000  # only the header was hashed


def test_mapped_arrays_are_read_only_and_survive_a_rebuild(tmp_path):
    path = tmp_path / "x.codes"
    save_cache(path, UUID, 1, {"a": np.arange(10)})
    _, arrays, _ = read_cache(path, UUID)
    assert not arrays["a"].flags.writeable
    save_cache(path, UUID, 2, {"a": np.arange(10) * 2})  # renamed over the mapped file
    assert np.array_equal(arrays["a"], np.arange(10))  # the old mapping is untouched
    assert read_cache(path, UUID)[0] == 2
