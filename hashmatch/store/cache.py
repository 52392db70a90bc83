"""The codes cache: the store's in-memory codes saved next to the database, for fast starts.

Loading codes from SQLite costs about 3 s per million rows of Python tuple work (measured on
the dev VM), so tens of seconds for ten million; reading them back from one flat file takes as
long as the disk does. The cache is only ever an accelerator: it
is bound to one store (its uuid) and one point of its change log (``seq``), carries checksums,
and anything unexpected makes it invalid, so the caller rebuilds from the store.

File layout (all integers little-endian)::

    magic          8 bytes  b"HMCODES\\0"
    version        uint32   FORMAT_VERSION
    header_len     uint32   length of the JSON header
    header_sha256  32 bytes SHA-256 of the JSON header bytes
    header         JSON     {"store_uuid", "seq", "arrays": [{"name", "dtype", "shape",
                             "offset", "nbytes"}], "payload_nbytes", "payload_sha256", "info"}
    padding        to a 64-byte boundary
    payload        the arrays' raw bytes, each starting on a 64-byte boundary (offsets are
                   relative to the payload start)

Arrays are read with ``np.frombuffer`` from dtypes on an allow-list: there is no pickle and no
eval anywhere on this path, so a hostile file can at worst be rejected.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import replace
from typing import Iterable, NamedTuple

import numpy as np

from .base import Codes, Store, StoreError

MAGIC = b"HMCODES\0"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sII32s")  # magic, version, header_len, header_sha256
_ALIGN = 64
_MAX_HEADER_BYTES = 16 << 20  # a real header is a few KB; refuse absurd lengths before reading
# Plain numeric dtypes only: an object dtype would mean pickled Python objects.
_ALLOWED_DTYPES = {np.dtype(t).str for t in ("u1", "i2", "i4", "i8", "u8")}


class CacheInvalid(StoreError):
    """The cache file cannot be used; ``reason`` says why (the caller rebuilds from the store)."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: codes cache not usable: {reason}")


def cache_path_for(db_path) -> str:
    """Where the codes cache of the database at ``db_path`` lives."""
    return os.fspath(db_path) + ".codes"


def cache_path_of(store: Store) -> str:
    """Where ``store``'s codes cache lives: next to an SQLite file, or where the store says
    (the PostgreSQL store keeps it in a local cache folder, see ``codes_cache_path``)."""
    return getattr(store, "codes_cache_path", None) or cache_path_for(store.path)


def save_cache(
    path, store_uuid: str, seq: int, arrays: dict[str, np.ndarray], info: dict | None = None
) -> None:
    """Write ``arrays`` (name -> numeric array) atomically: a crash leaves the old file or the new.

    ``info`` is JSON-serialisable extra data (e.g. region names) returned by :func:`load_cache`.
    """
    path = os.fspath(path)
    entries, chunks, offset = [], [], 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.str not in _ALLOWED_DTYPES:
            raise ValueError(f"array {name!r}: dtype {array.dtype} cannot be cached")
        padding = -offset % _ALIGN
        chunks.append(b"\0" * padding)
        offset += padding
        entries.append(
            {
                "name": name,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "offset": offset,
                "nbytes": array.nbytes,
            }
        )
        chunks.append(memoryview(array.reshape(-1).view(np.uint8)))  # raw bytes, no copy
        offset += array.nbytes
    payload_hash = hashlib.sha256()
    for chunk in chunks:
        payload_hash.update(chunk)
    header = json.dumps(
        {
            "store_uuid": store_uuid,
            "seq": int(seq),
            "arrays": entries,
            "payload_nbytes": offset,
            "payload_sha256": payload_hash.hexdigest(),
            "info": info or {},
        },
        allow_nan=False,
    ).encode()
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header), hashlib.sha256(header).digest())
    head_padding = b"\0" * (-(len(prefix) + len(header)) % _ALIGN)

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(
        dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            for part in (prefix, header, head_padding, *chunks):
                f.write(part)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise
    _fsync_directory(directory)  # make the rename itself durable


def load_cache(path, store_uuid: str, seq: int) -> tuple[dict[str, np.ndarray], dict]:
    """Read a cache written by :func:`save_cache` for this store at exactly change ``seq``.

    Returns (arrays, info). Raises :class:`CacheInvalid` (with ``reason``) if the file is
    missing, truncated, corrupt, of another format version, of another store, or stale.
    Arrays are read-only views of the file's bytes.
    """
    cached_seq, arrays, info = read_cache(path, store_uuid)
    if cached_seq != seq:
        raise CacheInvalid(
            os.fspath(path), f"stale (covers change {cached_seq}, store is at {seq})"
        )
    return arrays, info


def read_cache(path, store_uuid: str) -> tuple[int, dict[str, np.ndarray], dict]:
    """Like :func:`load_cache` but for any ``seq``: returns (seq covered, arrays, info)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CacheInvalid(path, "missing") from None
    except OSError as e:
        raise CacheInvalid(path, f"unreadable ({e.strerror})") from None

    if len(data) < _PREFIX.size:
        raise CacheInvalid(path, "truncated (no header)")
    magic, version, header_len, header_sha256 = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CacheInvalid(path, "not a hashmatch codes cache (bad magic)")
    if version != FORMAT_VERSION:
        raise CacheInvalid(path, f"format version {version}, expected {FORMAT_VERSION}")
    if header_len > _MAX_HEADER_BYTES or _PREFIX.size + header_len > len(data):
        raise CacheInvalid(path, "truncated (header)")
    header_bytes = data[_PREFIX.size : _PREFIX.size + header_len]
    if hashlib.sha256(header_bytes).digest() != header_sha256:
        raise CacheInvalid(path, "header checksum mismatch")
    try:
        header = json.loads(header_bytes)
    except ValueError:
        raise CacheInvalid(path, "header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CacheInvalid(path, "header is not a JSON object")

    if header.get("store_uuid") != store_uuid:
        raise CacheInvalid(path, "written for a different store")
    cached_seq = header.get("seq")
    if type(cached_seq) is not int or cached_seq < 0:
        raise CacheInvalid(path, "header has no valid seq")

    payload_start = _PREFIX.size + header_len + (-(_PREFIX.size + header_len) % _ALIGN)
    payload = memoryview(data)[payload_start:]
    if not isinstance(header.get("arrays"), list) or not all(
        isinstance(entry, dict) for entry in header["arrays"]
    ):
        raise CacheInvalid(path, "header has no array list")
    if len(payload) != header.get("payload_nbytes"):
        raise CacheInvalid(
            path,
            f"truncated (payload is {len(payload)} bytes, header says {header.get('payload_nbytes')})",
        )
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise CacheInvalid(path, "payload checksum mismatch")

    arrays = {entry.get("name"): _array_from(path, payload, entry) for entry in header["arrays"]}
    return cached_seq, arrays, header.get("info", {})


def _array_from(path: str, payload: memoryview, entry: dict) -> np.ndarray:
    """One array described by a (checksummed, but still untrusted in shape) header entry."""
    try:
        dtype = np.dtype(entry["dtype"]) if entry["dtype"] in _ALLOWED_DTYPES else None
        shape = tuple(int(n) for n in entry["shape"])
        offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
    except (KeyError, TypeError, ValueError):
        raise CacheInvalid(path, "malformed array entry in header") from None
    if dtype is None:
        raise CacheInvalid(
            path, f"array {entry.get('name')!r} has disallowed dtype {entry.get('dtype')!r}"
        )
    count = int(np.prod(shape, dtype=np.int64))
    if (
        min(shape, default=0) < 0
        or count * dtype.itemsize != nbytes
        or not 0 <= offset <= len(payload) - nbytes
    ):
        raise CacheInvalid(path, f"array {entry.get('name')!r} does not fit the payload")
    return np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- the store's codes, cached -----------------------------------------------------------
_NUMERIC_ARRAYS = ("item_ids", "fingerprint_ids", "codes", "qualities")
_NAME_ARRAYS = ("regions", "variants")  # object arrays of str: cached as int32 + a name list


def save_codes_cache(path, store_uuid: str, seq: int, codes_sets: Iterable[Codes]) -> None:
    """Save the codes of every (algorithm, nbits) of one store snapshot at change ``seq``."""
    arrays, sets = {}, []
    for codes in codes_sets:
        key = f"{codes.algorithm}/{codes.nbits}"
        if any(entry["key"] == key for entry in sets):
            raise ValueError(f"codes of {key} given twice")
        entry = {"key": key, "algorithm": codes.algorithm, "nbits": codes.nbits}
        for name in _NUMERIC_ARRAYS:
            arrays[f"{key}/{name}"] = getattr(codes, name)
        for name in _NAME_ARRAYS:
            entry[name], arrays[f"{key}/{name}"] = _to_small_ints(getattr(codes, name))
        sets.append(entry)
    save_cache(path, store_uuid, seq, arrays, {"codes_sets": sets})


def read_codes_cache(path, store_uuid: str) -> tuple[int, dict[tuple[str, int], Codes]]:
    """The codes saved by :func:`save_codes_cache`: (seq covered, codes by (algorithm, nbits)).

    Raises CacheInvalid like :func:`load_cache` (freshness is the caller's business).
    """
    path = os.fspath(path)
    seq, arrays, info = read_cache(path, store_uuid)
    result = {}
    try:
        for entry in info["codes_sets"]:
            algorithm, nbits, key = str(entry["algorithm"]), int(entry["nbits"]), entry["key"]
            fields = {name: arrays[f"{key}/{name}"] for name in _NUMERIC_ARRAYS}
            n = len(fields["item_ids"])
            for name in _NAME_ARRAYS:
                names, small_ints = [str(x) for x in entry[name]], arrays[f"{key}/{name}"]
                if (
                    len(small_ints) != n
                    or n
                    and not 0 <= small_ints.min() <= small_ints.max() < len(names)
                ):
                    raise CacheInvalid(path, f"{key}: {name} out of range")
                fields[name] = np.asarray(names, dtype=object)[small_ints]
            if fields["codes"].shape != (n, nbits // 8) or any(
                len(a) != n for a in fields.values()
            ):
                raise CacheInvalid(path, f"{key}: arrays of inconsistent shapes")
            result[(algorithm, nbits)] = Codes(algorithm=algorithm, nbits=nbits, seq=seq, **fields)
    except (KeyError, TypeError, ValueError):
        raise CacheInvalid(path, "codes cache description is malformed") from None
    return seq, result


class LoadedCodes(NamedTuple):
    codes: dict[tuple[str, int], Codes]  # by (algorithm, nbits)
    seq: int  # the store change they reflect
    how: str  # "cache", "cache + N changes" or "store (<why the cache was not usable>)"


def load_all_codes(store: Store, cache_path=None) -> LoadedCodes:
    """Every live code in the store, through the cache.

    A current cache is used as is; an older cache of the same store is caught up from the
    change log; anything else (missing, corrupt, another store, ahead of the store) is
    reported in ``how`` and the codes are loaded from the store. Unless the cache was
    current, it is rewritten; failing to write it is not an error (it is only an
    accelerator), and ``how`` then says so.
    """
    cache_path = cache_path_of(store) if cache_path is None else os.fspath(cache_path)
    with store.snapshot():  # the seq and every algorithm's codes from one state of the store
        seq = store.last_change_seq()
        try:
            cached_seq, cached = read_codes_cache(cache_path, store.uuid)
            if cached_seq > seq:  # e.g. the database was restored from an older backup
                raise CacheInvalid(cache_path, f"ahead of the store (change {cached_seq} > {seq})")
        except CacheInvalid as e:
            codes = {key: store.load_codes(*key) for key in store.algorithms()}
            how = f"store ({e.reason})"
        else:
            if cached_seq == seq:
                return LoadedCodes(cached, seq, "cache")
            codes, n_changes = _catch_up(store, cached, cached_seq, seq)
            how = f"cache + {n_changes} changes"
    try:
        save_codes_cache(cache_path, store.uuid, seq, codes.values())
    except OSError as e:
        how += f"; could not rewrite the cache ({e})"
    return LoadedCodes(codes, seq, how)


def load_index_cache(store: Store, seq: int) -> dict[tuple[str, int], Codes] | None:
    """For :class:`hashmatch.Index`: every live code at exactly change ``seq``, or None if the
    store has moved past ``seq`` meanwhile. Goes through (and refreshes) the cache."""
    loaded = load_all_codes(store)
    return loaded.codes if loaded.seq == seq else None


def save_index_cache(store: Store, seq: int | None = None, shards=None) -> None:
    """For :class:`hashmatch.Index` at close: bring the cache up to the store's current state.

    Written from the store and its change log (cheap when an older cache exists), never from
    the caller's in-memory copy, so the cache cannot disagree with the store; ``seq`` and
    ``shards`` are accepted for the caller's convenience and not needed.
    """
    load_all_codes(store)


def _catch_up(store: Store, cached: dict, since: int, seq: int) -> tuple[dict, int]:
    """Apply the changes after ``since`` to cached codes: the same result as a full load.

    Item ids are never reused, so dropping removed ids and appending the added items' (live)
    fingerprints suffices; fingerprint ids only grow, so appending keeps the id order.
    """
    changes = store.changes_since(since)
    removed = [c.item_id for c in changes if c.op == "remove"]
    added = store.load_codes_for_items([c.item_id for c in changes if c.op == "add"])
    result = {}
    for key in sorted(set(cached) | set(added)):
        parts = [_drop_items(cached[key], removed)] if key in cached else []
        parts += [added[key]] if key in added else []
        columns = {
            name: np.concatenate([getattr(part, name) for part in parts])
            for name in (*_NUMERIC_ARRAYS, *_NAME_ARRAYS)
        }
        if len(columns["item_ids"]):
            result[key] = Codes(algorithm=key[0], nbits=key[1], seq=seq, **columns)
    return result, len(changes)


def _drop_items(codes: Codes, item_ids: list[int]) -> Codes:
    keep = ~np.isin(codes.item_ids, item_ids)
    return replace(
        codes, **{name: getattr(codes, name)[keep] for name in (*_NUMERIC_ARRAYS, *_NAME_ARRAYS)}
    )


def _to_small_ints(strings: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Object array of str -> (distinct names, int32 index of each row into them)."""
    index: dict[str, int] = {}
    small_ints = np.fromiter(
        (index.setdefault(s, len(index)) for s in strings), dtype=np.int32, count=len(strings)
    )
    return list(index), small_ints
