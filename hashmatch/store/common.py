"""What both backends (store.sqlite, store.postgres) share: validating records before a
write, checking every value read back, and the audit actor.

Kept apart from store.base so that base is the contract alone and neither backend imports the
other's private helpers.
"""

from __future__ import annotations

import getpass
import json
import os
import socket

import numpy as np

from .base import Codes, FingerprintRecord, Item, ItemRecord, StoreError


def audit_actor() -> str:
    """Who is acting, for the audit log: OS user, host and process."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): the uid still identifies the account
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


_HEX = frozenset("0123456789abcdef")
_MAX_QUALITY = 32767  # qualities travel as int16 with -1 for "unknown"
# The longest code a store holds: a 64 x 64 imagehash. Larger declared sizes come only from
# crafted files, and the index's per-bit work would allocate by them (2 MB file -> GBs).
MAX_NBITS = 4096
MAX_INT64 = 2 ** 63 - 1


def prepare_record(record: ItemRecord) -> tuple[ItemRecord, str, str]:
    """Validate one record; returns it normalised plus its JSON-encoded labels and meta.

    Normalised: sha256 lower-case, labels a list, fingerprints FingerprintRecords with bytes codes.

    Backends call this for every record *before* writing, so that a bad record aborts the
    call with a clear message instead of leaving a half-written batch.
    """
    where = f"record {record.path!r}"
    if record.path is not None and not isinstance(record.path, str):
        raise StoreError(f"{where}: path must be a string or None")
    sha256 = record.sha256
    if sha256 is not None:
        if not isinstance(sha256, str) or len(sha256) != 64 or not set(sha256.lower()) <= _HEX:
            raise StoreError(f"{where}: sha256 must be 64 hex digits or None")
        sha256 = sha256.lower()
    size = record.size
    if size is not None:
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or \
                not 0 <= size <= MAX_INT64:
            raise StoreError(f"{where}: size must be a non-negative 64-bit int or None")
        size = int(size)
    # A bare string is a sequence of str too; refuse it rather than store ['a', 'd'].
    if isinstance(record.labels, str) or not all(isinstance(x, str) for x in record.labels):
        raise StoreError(f"{where}: labels must be a list of strings")
    if record.source is not None and not isinstance(record.source, str):
        raise StoreError(f"{where}: source must be a string or None")
    if not isinstance(record.meta, dict):
        raise StoreError(f"{where}: meta must be a dict")
    try:
        # allow_nan=False: keep the stored text strict JSON that any tool (and jsonb) reads.
        meta_json = json.dumps(record.meta, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{where}: meta is not JSON-serialisable ({e})") from None
    labels = list(record.labels)
    fingerprints = [_prepare_fingerprint(where, fp) for fp in record.fingerprints]
    verification = record.verification
    if verification is not None:
        if not isinstance(verification, (bytes, bytearray)) or not 0 < len(verification) <= 16384:
            raise StoreError(f"{where}: verification data must be 1-16384 bytes or None")
        verification = bytes(verification)
    normalised = ItemRecord(
        path=record.path,
        sha256=sha256,
        size=size,
        labels=labels,
        source=record.source,
        meta=record.meta,
        fingerprints=fingerprints,
        verification=verification,
    )
    return normalised, json.dumps(labels, ensure_ascii=False), meta_json


def _prepare_fingerprint(where: str, fp) -> FingerprintRecord:
    try:
        algorithm, nbits, region, variant, code, quality = fp
    except (TypeError, ValueError):
        raise StoreError(
            f"{where}: a fingerprint must be (algorithm, nbits, region, variant, code, quality)"
        ) from None
    if not isinstance(algorithm, str) or not algorithm:
        raise StoreError(f"{where}: fingerprint algorithm must be a non-empty string")
    if not isinstance(region, str) or not isinstance(variant, str):
        raise StoreError(f"{where}: fingerprint region and variant must be strings")
    if isinstance(code, np.ndarray):
        code = np.ascontiguousarray(code, dtype=np.uint8).tobytes()
    elif isinstance(code, (bytes, bytearray, memoryview)):
        code = bytes(code)
    else:
        raise StoreError(f"{where}: fingerprint code must be bytes or a uint8 array")
    if (
        not isinstance(nbits, (int, np.integer))
        or nbits <= 0
        or nbits % 8
        or len(code) * 8 != nbits
    ):
        raise StoreError(f"{where}: {algorithm} code has {len(code) * 8} bits, declared {nbits}")
    if nbits > MAX_NBITS:
        raise StoreError(f"{where}: {algorithm} codes of {nbits} bits: at most {MAX_NBITS}")
    if quality is not None:
        if not isinstance(quality, (int, np.integer)) or not 0 <= quality <= _MAX_QUALITY:
            raise StoreError(
                f"{where}: fingerprint quality must be an int in 0..{_MAX_QUALITY} or None"
            )
        quality = int(quality)
    return FingerprintRecord(algorithm, int(nbits), region, variant, code, quality)


def stats_summary(store, schema_version: int, live: int, removed: int, per_algorithm, seq: int,
                  db_bytes: int) -> dict:
    """The ``stats()`` dictionary every backend returns, in one shape."""
    return {
        "path": store.path,
        "uuid": store.uuid,
        "schema_version": schema_version,
        "items": live,
        "removed_items": removed,
        "fingerprints": {f"{algorithm}/{nbits}": n for algorithm, nbits, n in per_algorithm},
        "last_change_seq": seq,
        "db_bytes": int(db_bytes),
    }


# -- checking what is read back (a store file can come from anyone) ----------------------------
def check_kind(where: str, algorithm, nbits) -> None:
    """Raise StoreError unless (algorithm, nbits) is a fingerprint kind a store can hold."""
    if not isinstance(algorithm, str) or not algorithm:
        raise StoreError(f"{where}: fingerprints with algorithm {algorithm!r}: not a name "
                         "(a crafted or damaged store)")
    if (not isinstance(nbits, (int, np.integer)) or isinstance(nbits, bool)
            or not 0 < nbits <= MAX_NBITS or nbits % 64):
        raise StoreError(f"{where}: {algorithm} fingerprints with nbits={nbits!r}: codes have "
                         f"64..{MAX_NBITS} bits, a multiple of 64 (a crafted or damaged store)")


def codes_from_rows(where: str, algorithm: str, nbits: int, seq: int, rows: list) -> Codes:
    """(item_id, fingerprint_id, region, variant, quality, code) rows -> Codes, every value
    checked: a crafted store gets a StoreError naming the fingerprint, not a numpy error."""
    check_kind(where, algorithm, nbits)
    n, nbytes = len(rows), nbits // 8
    # One pass per column: far faster than zip(*rows) on a million tuples.
    item_ids, fingerprint_ids, regions, variants, qualities, codes = (
        [row[k] for row in rows] for k in range(6)
    )

    def bad(position: int, what: str):
        fid = fingerprint_ids[position]
        name = f"fingerprint {fid}" if _is_int(fid) else f"fingerprint row {position + 1}"
        return StoreError(f"{where}: {name} ({algorithm}/{nbits}): {what} "
                          "(a crafted or damaged store)")

    fingerprint_array = _int_column(fingerprint_ids, lambda k: bad(k, "id is not an integer"))
    item_array = _int_column(item_ids, lambda k: bad(k, f"item id {item_ids[k]!r} is not an "
                                                        "integer"))
    quality_array = _int_column(qualities, lambda k: bad(k, f"quality {qualities[k]!r} is not "
                                                           "an integer"))
    if n and not -1 <= int(quality_array.min()) <= int(quality_array.max()) <= _MAX_QUALITY:
        k = int(np.flatnonzero((quality_array < -1) | (quality_array > _MAX_QUALITY))[0])
        raise bad(k, f"quality {qualities[k]} outside 0..{_MAX_QUALITY}")
    for k, code in enumerate(codes):
        if type(code) is not bytes or len(code) != nbytes:
            if isinstance(code, (bytearray, memoryview)) and len(code) == nbytes:
                continue
            raise bad(k, f"code is {type(code).__name__} of length "
                         f"{len(code) if hasattr(code, '__len__') else '?'}, not {nbytes} bytes")
    region_array = _shared_strings(regions, lambda k: bad(k, f"region {regions[k]!r} is not text"))
    variant_array = _shared_strings(variants,
                                    lambda k: bad(k, f"variant {variants[k]!r} is not text"))
    return Codes(
        algorithm=algorithm,
        nbits=int(nbits),
        seq=seq,
        item_ids=item_array,
        fingerprint_ids=fingerprint_array,
        codes=np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(n, nbytes),
        regions=region_array,
        variants=variant_array,
        qualities=quality_array.astype(np.int16),
    )


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _int_column(values: list, error) -> np.ndarray:
    """``values`` as int64; ``error(position)`` is raised for the first that is not a 64-bit
    integer (text, a float, a blob)."""
    try:
        array = np.array(values) if values else np.zeros(0, np.int64)
    except (TypeError, ValueError, OverflowError):
        array = np.array(values, dtype=object)
    if array.dtype.kind != "i" or array.dtype.itemsize > 8:
        for position, value in enumerate(values):
            if not _is_int(value) or not -MAX_INT64 - 1 <= value <= MAX_INT64:
                raise error(position)
    return array.astype(np.int64, copy=False)


def _shared_strings(values: list, error=None) -> np.ndarray:
    """An object array of ``values`` in which equal strings are one object (saves memory:
    the driver hands back a new str per row, and regions/variants have a handful of values).
    ``error(position)`` is raised for the first value that is not text."""
    canonical: dict = {}
    array = np.empty(len(values), dtype=object)
    array[:] = [canonical.setdefault(value, value) for value in values]
    if error is not None and not all(type(value) is str for value in canonical):
        first = next(v for v in canonical if type(v) is not str)
        raise error(next(k for k, v in enumerate(values) if v is first or v == first))
    return array


def checked_item(where: str, item_id, path, sha256, size, added_at, labels, source, meta,
                 removed_at) -> Item:
    """An Item from values read back from a store (labels/meta already decoded), each
    checked: a crafted store gets a StoreError naming the item, not a TypeError later."""
    def bad(what: str):
        return StoreError(f"{where}: item {item_id}: {what} (a crafted or damaged store)")

    if not _is_int(item_id):
        raise StoreError(f"{where}: an item id {item_id!r} is not an integer "
                         "(a crafted or damaged store)")
    for name, value in (("path", path), ("sha256", sha256), ("source", source),
                        ("removed_at", removed_at)):
        if value is not None and not isinstance(value, str):
            raise bad(f"{name} is {type(value).__name__}, not text")
    if not isinstance(added_at, str):
        raise bad(f"added_at is {type(added_at).__name__}, not text")
    if size is not None and not _is_int(size):
        raise bad(f"size {size!r} is not an integer")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise bad("labels are not a list of strings")
    if not isinstance(meta, dict):
        raise bad(f"meta is {type(meta).__name__}, not a JSON object")
    return Item(int(item_id), path, sha256, size, added_at, labels, source, meta, removed_at)


def load_json(where: str, item_id, name: str, text):
    """A labels/meta/detail column's JSON text, decoded; StoreError if it is not JSON or is
    nested too deeply to decode. ``item_id``: the row named in the message (an id, or a
    phrase such as "audit row 3")."""
    if not isinstance(text, (str, bytes)):
        raise StoreError(f"{where}: item {item_id}: {name} is {type(text).__name__}, not "
                         "JSON text (a crafted or damaged store)")
    try:
        return json.loads(text)
    except RecursionError:
        raise StoreError(f"{where}: item {item_id}: {name} is JSON nested too deeply "
                         "(a crafted or damaged store)") from None
    except ValueError as e:
        raise StoreError(f"{where}: item {item_id}: {name} is not valid JSON ({e}) "
                         "(a crafted or damaged store)") from None

RESERVED_META_KEYS = frozenset({"format", "schema_version", "store_uuid", "created_at"})


def check_meta_key(key, value=None) -> str:
    """A settings key (and value) fit for the meta table, else StoreError."""
    if not isinstance(key, str) or not key or "\x00" in key or len(key) > 1000:
        raise StoreError("a meta key must be a non-empty string of at most 1000 characters")
    if key in RESERVED_META_KEYS:
        raise StoreError(f"meta key {key!r} belongs to the store itself")
    if value is not None and (not isinstance(value, str) or "\x00" in value):
        raise StoreError("a meta value must be a string without NUL characters")
    return key


def items_matching(items: list[Item], labels: list[str], source: str | None) -> list[Item]:
    """The items carrying every one of ``labels`` and, with ``source``, of that source (their
    first or a further one, meta["sources"]): list_items' filter, for every backend."""
    return [item for item in items
            if all(label in item.labels for label in labels)
            and (source is None or item.source == source
                 or source in (item.meta.get("sources") or []))]
