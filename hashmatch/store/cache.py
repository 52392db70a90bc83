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

The ``info`` of a codes cache also holds ``head``: a digest of the store's change log at
``seq`` (:func:`change_log_head`); before use, it and the codes of the newest cached items are
checked against the store, so a cache of a diverged copy of the database (same uuid) is
refused. The file is opened only if it is a regular file (no symlink, FIFO or device), its
size must match the header, and it is mapped read-only: processes that open one store share
the page-cache copy of its codes.

Arrays are read with ``np.frombuffer`` from dtypes on an allow-list: there is no pickle and no
eval anywhere on this path, so a hostile file can at worst be rejected.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import stat
import struct
import uuid as uuid_module
from dataclasses import replace
from typing import Iterable, NamedTuple

import numpy as np

from ..paths import write_atomically
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


def check_store_uuid(value) -> str:
    """``value`` if it is a UUID in canonical form (what the stores write at creation), else
    CacheInvalid. The uuid comes from the database (for PostgreSQL: from the server) and names
    the cache file: ``../../../tmp/x`` must never become a path."""
    try:
        canonical = str(uuid_module.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        canonical = None
    if not isinstance(value, str) or canonical != value.lower():
        raise CacheInvalid(repr(value)[:80], "store uuid is not a UUID (not used as a file name)")
    return value


def cache_path_of(store: Store) -> str:
    """Where ``store``'s codes cache lives: next to an SQLite file, or where the store says
    (the PostgreSQL store keeps it in a local cache folder, see ``codes_cache_path``).

    Raises CacheInvalid when the store's uuid is not a UUID, or when the path the store
    gives is not ``<uuid>.codes`` directly inside one folder."""
    store_uuid = check_store_uuid(store.uuid)
    path = getattr(store, "codes_cache_path", None)
    if not path:
        return cache_path_for(store.path)
    path = os.fspath(path)
    if os.path.basename(path) != f"{store_uuid}.codes" or os.path.basename(
            os.path.dirname(os.path.abspath(path))) in ("", "..", "."):
        raise CacheInvalid(path, "cache path is not <store uuid>.codes inside the cache folder")
    return path


def segment_folder_of(store: Store) -> str | None:
    """The folder of ``store``'s mapped index segments (hashmatch.codeindex.segment_files):
    ``<codes cache>.segments``; None when the store has no usable cache path."""
    try:
        return cache_path_of(store) + ".segments"
    except CacheInvalid:
        return None


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

    def write(out) -> None:
        for part in (prefix, header, head_padding, *chunks):
            out.write(part)

    write_atomically(path, write)


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
    """Like :func:`load_cache` but for any ``seq``: returns (seq covered, arrays, info).

    Only a regular file is opened (a symlink, FIFO, device or folder is refused without
    reading from it: O_NOFOLLOW, O_NONBLOCK, S_ISREG), and its size must equal what the
    header says before the payload is touched. The payload is mapped read-only
    (``mmap``): the arrays returned are views of the page cache, so every process that opens
    the same cache file shares one copy of its bytes. The file is never written in place
    (:func:`save_cache` renames a new file over it), so a mapping stays valid -- on the old
    inode -- while the cache is rebuilt.
    """
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise CacheInvalid(path, "missing") from None
    except OSError as e:
        if os.path.islink(path):
            raise CacheInvalid(path, "not a regular file (symlink)") from None
        raise CacheInvalid(path, f"unreadable ({e.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CacheInvalid(path, "not a regular file")
        size = info.st_size
        if size < _PREFIX.size:
            raise CacheInvalid(path, "truncated (no header)")
        magic, version, header_len, header_sha256 = _PREFIX.unpack(
            os.pread(fd, _PREFIX.size, 0))
        if magic != MAGIC:
            raise CacheInvalid(path, "not a hashmatch codes cache (bad magic)")
        if version != FORMAT_VERSION:
            raise CacheInvalid(path, f"format version {version}, expected {FORMAT_VERSION}")
        if header_len > _MAX_HEADER_BYTES or _PREFIX.size + header_len > size:
            raise CacheInvalid(path, "truncated (header)")
        header_bytes = os.pread(fd, header_len, _PREFIX.size)
        if len(header_bytes) != header_len:
            raise CacheInvalid(path, "truncated (header)")
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
        if not isinstance(header.get("arrays"), list) or not all(
            isinstance(entry, dict) for entry in header["arrays"]
        ):
            raise CacheInvalid(path, "header has no array list")
        payload_start = _PREFIX.size + header_len + (-(_PREFIX.size + header_len) % _ALIGN)
        payload_nbytes = header.get("payload_nbytes")
        if type(payload_nbytes) is not int or payload_nbytes < 0:
            raise CacheInvalid(path, "header has no valid payload size")
        if size - payload_start != payload_nbytes:
            raise CacheInvalid(
                path,
                f"truncated (payload is {max(0, size - payload_start)} bytes, header says "
                f"{payload_nbytes})",
            )
        # The whole file, mapped read-only: shared with every other process mapping it.
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    payload = memoryview(mapped)[payload_start:]
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


# -- the store's codes, cached -----------------------------------------------------------
_NUMERIC_ARRAYS = ("item_ids", "fingerprint_ids", "codes", "qualities")
_NAME_ARRAYS = ("regions", "variants")  # object arrays of str: cached as int32 + a name list


def save_codes_cache(path, store_uuid: str, seq: int, codes_sets: Iterable[Codes],
                     head: dict | None = None) -> None:
    """Save the codes of every (algorithm, nbits) of one store snapshot at change ``seq``.
    ``head``: :func:`change_log_head` of the store at ``seq`` (what ties the cache to the
    store's content; a cache without it is never used)."""
    check_store_uuid(store_uuid)
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
    save_cache(path, store_uuid, seq, arrays, {"codes_sets": sets, "head": head})


def read_codes_cache(path, store_uuid: str, with_head: bool = False):
    """The codes saved by :func:`save_codes_cache`: (seq covered, codes by (algorithm, nbits)),
    and with ``with_head`` the :func:`change_log_head` saved with them as a third value.

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
    if with_head:
        return seq, result, info.get("head") if isinstance(info, dict) else None
    return seq, result


# -- what ties a cache to the store's content -------------------------------------------------
# A copy of a database keeps its uuid; two copies that went on separately (a restored backup
# written to, a test copy) reach the same change numbers with other items under the same
# item ids. seq alone cannot tell them apart, so the cache also records the change log's last
# HEAD_CHANGES rows and the codes of its HEAD_ITEMS newest live items, and both are checked
# against the store before the cache is used (cost: two small queries).
HEAD_CHANGES = 64
HEAD_ITEMS = 64


def change_log_head(store: Store, seq: int) -> dict:
    """{"seq", "changes_sha256"}: a digest of the change-log rows (seq, item, op) in
    (seq - HEAD_CHANGES, seq]. Call inside the snapshot the cache is written from."""
    changes = store.changes_since(max(0, seq - HEAD_CHANGES))
    digest = hashlib.sha256()
    for change in changes:
        if change.seq > seq:
            break
        digest.update(f"{int(change.seq)},{int(change.item_id)},{change.op};".encode())
    return {"seq": int(seq), "changes_sha256": digest.hexdigest()}


def _rows_digest(codes: Codes, item_ids: np.ndarray) -> dict[int, bytes]:
    """item id -> digest of its rows (fingerprint id, code, region, variant), for the given
    items present in ``codes``."""
    out = {}
    rows = np.nonzero(np.isin(codes.item_ids, item_ids))[0]
    for row in rows[np.lexsort((codes.fingerprint_ids[rows], codes.item_ids[rows]))]:
        item = int(codes.item_ids[row])
        h = hashlib.sha256(out.get(item, b""))
        h.update(int(codes.fingerprint_ids[row]).to_bytes(8, "little", signed=True))
        h.update(np.asarray(codes.codes[row]).tobytes())
        h.update(f"{codes.regions[row]}\0{codes.variants[row]}".encode())
        out[item] = h.digest()
    return out


def _check_content(path: str, store: Store, cached: dict, cached_seq: int, head) -> None:
    """CacheInvalid unless the cache was written from this store's own history: its
    change-log head matches the store's, and its newest live items have, in the store, the
    same fingerprints (or were removed after ``cached_seq``)."""
    if not isinstance(head, dict) or head.get("seq") != cached_seq:
        raise CacheInvalid(path, "no change-log head (written by an older version)")
    if change_log_head(store, cached_seq) != head:
        raise CacheInvalid(path, "change log differs from the store's (a diverged copy?)")
    all_ids = np.concatenate([c.item_ids for c in cached.values()] or [np.empty(0, np.int64)])
    if len(all_ids) > 8 * HEAD_ITEMS:  # O(n), not a sort of every id
        all_ids = np.partition(all_ids, len(all_ids) - 8 * HEAD_ITEMS)[-8 * HEAD_ITEMS:]
    newest = np.unique(all_ids)[-HEAD_ITEMS:]
    if len(newest) == 0:
        return
    stored = store.load_codes_for_items([int(i) for i in newest])
    removed_later = {c.item_id for c in store.changes_since(cached_seq) if c.op == "remove"}
    for key in set(cached) | set(stored):
        mine = _rows_digest(cached[key], newest) if key in cached else {}
        theirs = _rows_digest(stored[key], newest) if key in stored else {}
        for item in set(mine) | set(theirs):
            if mine.get(item) != theirs.get(item) and not (
                    item in removed_later and item not in theirs):
                raise CacheInvalid(
                    path, f"item {item} differs from the store's (a diverged copy?)")


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
    try:
        cache_path = cache_path_of(store) if cache_path is None else os.fspath(cache_path)
        check_store_uuid(store.uuid)
    except CacheInvalid as e:  # no usable file name: load from the store, write no cache
        with store.snapshot():
            seq = store.last_change_seq()
            codes = {key: store.load_codes(*key) for key in store.algorithms()}
        return LoadedCodes(codes, seq, f"store ({e.reason}; no cache written)")
    with store.snapshot():  # the seq and every algorithm's codes from one state of the store
        seq = store.last_change_seq()
        try:
            cached_seq, cached, cached_head = read_codes_cache(cache_path, store.uuid,
                                                               with_head=True)
            if cached_seq > seq:  # e.g. the database was restored from an older backup
                raise CacheInvalid(cache_path, f"ahead of the store (change {cached_seq} > {seq})")
            _check_content(cache_path, store, cached, cached_seq, cached_head)
        except CacheInvalid as e:
            codes = {key: store.load_codes(*key) for key in store.algorithms()}
            how = f"store ({e.reason})"
        else:
            if cached_seq == seq:
                return LoadedCodes(cached, seq, "cache")
            codes, n_changes = _catch_up(store, cached, cached_seq, seq)
            how = f"cache + {n_changes} changes"
        head = change_log_head(store, seq)
    try:
        save_codes_cache(cache_path, store.uuid, seq, codes.values(), head)
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
