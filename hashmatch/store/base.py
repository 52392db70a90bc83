"""The store contract: what every backend (embedded SQLite, shared PostgreSQL) promises.

A store keeps *items* (an indexed file or a hash-list entry, with its metadata), their
*fingerprints* (packed perceptual-hash codes), a *change log* and an append-only *audit log*.

The change log is what lets many matcher processes share one store without full rebuilds:
every add and every remove appends one row with a strictly increasing ``seq``. A matcher loads
a snapshot (``load_codes`` reports the ``seq`` it reflects), then repeatedly asks
``changes_since(seq)`` and fetches the codes of the added items with
``load_codes(..., item_ids=...)``. Backends must make a change visible only once every
change with a smaller ``seq`` is visible (SQLite gets this for free because writers are
serialised), otherwise a matcher could skip a change for good.

Removal is a tombstone (``removed_at`` set), never a delete: the change log has to be able to
say "removed", and an investigator's record of what was once in the store must survive.
"""

from __future__ import annotations

import abc
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from ..errors import HashmatchError


# The first 4 bytes of verification data in the format this version reads (hashmatch.verify
# writes it): a store counts its items with this prefix as verifiable. It lives in the store
# layer so that a store does not depend on the verifier.
VERIFICATION_MAGIC = b"HMV4"


class StoreError(HashmatchError):
    """The store could not be opened or used: names the database and the reason."""


class FingerprintRecord(NamedTuple):
    """One fingerprint to store. ``code`` is the packed bits (``Fingerprint.bits`` bytes)."""

    algorithm: str
    nbits: int
    region: str  # 'full', 'content', 'crop:...'
    variant: str  # 'original', or the dihedral transform stored
    code: bytes
    quality: int | None = None

    @classmethod
    def from_fingerprint(
        cls, fp, region: str = "full", variant: str = "original"
    ) -> "FingerprintRecord":
        """From a :class:`hashmatch.Fingerprint`."""
        return cls(fp.algorithm, fp.nbits, region, variant, fp.bits.tobytes(), fp.quality)


@dataclass
class ItemRecord:
    """One item to add: a file (``sha256`` of its bytes) or a hash-list entry (``sha256=None``).

    ``path`` is the file path or source URI (None for a hash-list entry that has neither).
    """

    path: str | None
    sha256: str | None
    size: int | None = None
    labels: Sequence[str] = ()
    source: str | None = None
    meta: dict = field(default_factory=dict)
    fingerprints: Sequence[FingerprintRecord | tuple] = ()
    # What the verification stage compares a candidate with (hashmatch.verify.encode: a
    # small grey thumbnail and region boxes, <= 4 KB); None for hash-list entries.
    verification: bytes | None = None


class RecordOutcome(NamedTuple):
    """What :meth:`Store.add_items` did with one record: ``status`` is 'added' or
    'duplicate' (of ``item_id``). Not hashmatch.index.AddOutcome, one indexed *file*'s
    outcome (which can also be 'skipped' or 'failed', with the reason)."""

    status: str
    item_id: int


@dataclass(frozen=True)
class Item:
    """A stored item. ``added_at``/``removed_at`` are UTC ISO-8601 strings."""

    id: int
    path: str | None
    sha256: str | None
    size: int | None
    added_at: str
    labels: list[str]
    source: str | None
    meta: dict
    removed_at: str | None = None

    @property
    def removed(self) -> bool:
        return self.removed_at is not None


class Change(NamedTuple):
    """One change-log row: ``op`` is 'add' or 'remove'."""

    seq: int
    item_id: int
    op: str


class AuditEntry(NamedTuple):
    id: int
    at: str
    actor: str
    action: str
    detail: dict


@dataclass(frozen=True)
class Codes:
    """Every live fingerprint of one (algorithm, nbits), as parallel arrays (row = fingerprint).

    ``regions``/``variants`` are object arrays of ``str`` whose equal values share one
    object (a handful of distinct names, so they cost a pointer per row). ``qualities`` is -1
    where the quality is unknown. ``seq`` is the last change the snapshot reflects: pass it to
    ``changes_since`` to catch up later.
    """

    algorithm: str
    nbits: int
    seq: int
    item_ids: np.ndarray  # int64[n]
    fingerprint_ids: np.ndarray  # int64[n], ascending
    codes: np.ndarray  # uint8[n, nbits // 8]
    regions: np.ndarray  # object[n] of str: 'full', 'content', 'crop:...'
    variants: np.ndarray  # object[n] of str: 'original', ...
    qualities: np.ndarray  # int16[n]

    def __len__(self) -> int:
        return len(self.item_ids)


class Store(abc.ABC):
    """Abstract store. Use as a context manager; not shareable across processes (open one each).

    Writes are atomic per call: a call either commits entirely and is durable when it returns,
    or raises and changes nothing.
    """

    uuid: str  # random identity fixed at creation; caches are bound to it
    path: str  # where the store lives (file path or connection description)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- writes -------------------------------------------------------------------------
    @abc.abstractmethod
    def add_items(
        self, records: Iterable[ItemRecord], *, action: str = "add", detail: dict | None = None
    ) -> list[RecordOutcome]:
        """Add items with their fingerprints in one transaction; one outcome per record.

        A record whose ``sha256`` equals a live item's (or an earlier record's in the same call)
        is a 'duplicate' and is not stored again. One audit row (``action``, counts + ``detail``)
        is written in the same transaction. Invalid records raise StoreError before anything
        is written.
        """

    def add_items_streaming(
        self, records: Iterable[ItemRecord], *, action: str = "add", detail: dict | None = None,
        batch: int = 10_000,
    ) -> list[RecordOutcome]:
        """As :meth:`add_items` -- one transaction, all or nothing -- for a long iterable
        (a hash list of millions of lines): backends that can consume it ``batch`` records
        at a time, validating each batch as it comes, do, so the records never all sit in
        memory; an invalid record or an exception raised by the iterable rolls everything
        back. This default materialises the records and calls :meth:`add_items`."""
        return self.add_items(list(records), action=action, detail=detail)

    @abc.abstractmethod
    def remove_items(self, item_ids: Iterable[int], *, detail: dict | None = None) -> int:
        """Tombstone live items (unknown or already removed ids are ignored); returns how many."""

    @abc.abstractmethod
    def audit(self, action: str, detail: dict | None = None) -> None:
        """Append one audit row."""

    # -- reads --------------------------------------------------------------------------
    @abc.abstractmethod
    def snapshot(self) -> AbstractContextManager:
        """Context manager: every read inside sees the same consistent state of the store."""

    @abc.abstractmethod
    def get_verification(self, item_ids: Iterable[int]) -> dict[int, bytes]:
        """Stored verification data of the given items (those that have any): fetched for a
        query's candidates only, never held in memory with the codes."""

    @abc.abstractmethod
    def verifiable_items(self, item_ids: Iterable[int]) -> set[int]:
        """Those of the given items whose verification data is in the format this version
        reads (the data itself is not fetched): a candidate among them that the query could
        not verify is no match, and must not fall back to the plain rule of hash lists."""

    @abc.abstractmethod
    def get_items(self, item_ids: Iterable[int]) -> dict[int, Item]:
        """Items by id, removed ones included (``item.removed``); unknown ids are absent."""

    @abc.abstractmethod
    def find_by_sha256(self, sha256: str) -> Item | None:
        """The live item with this file SHA-256 (hex), or None."""

    @abc.abstractmethod
    def load_codes(
        self, algorithm: str, nbits: int, item_ids: Iterable[int] | None = None
    ) -> Codes:
        """Fingerprints of live items for (algorithm, nbits), ordered by fingerprint id.

        With ``item_ids``, only those items' fingerprints (incremental sync after
        ``changes_since``).
        """

    @abc.abstractmethod
    def load_codes_for_items(self, item_ids: Iterable[int]) -> dict[tuple[str, int], Codes]:
        """Fingerprints of these items (live ones only), by (algorithm, nbits): for syncing."""

    @abc.abstractmethod
    def algorithms(self) -> list[tuple[str, int]]:
        """(algorithm, nbits) pairs that live items have fingerprints for."""

    @abc.abstractmethod
    def count_items(self) -> int:
        """Number of live items."""

    @abc.abstractmethod
    def stats(self) -> dict: ...

    @abc.abstractmethod
    def last_change_seq(self) -> int:
        """The newest change's seq (0 for an empty store)."""

    @abc.abstractmethod
    def changes_since(self, seq: int, limit: int | None = None) -> list[Change]:
        """Changes with seq > ``seq``, oldest first."""

    @abc.abstractmethod
    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` audit rows, newest first."""

    @abc.abstractmethod
    def integrity_check(self) -> list[str]:
        """Problems found (storage-level and invariants); an empty list means healthy."""

    # -- small key/value settings (hashmatch serve: banks, API tokens) -----------------------
    # Kept in the store's meta table, so they need no schema change. Keys of the store's own
    # (RESERVED_META_KEYS) can be neither set nor deleted. With ``action``, one audit row
    # (``action``, ``detail``) is written in the same transaction as the change.
    @abc.abstractmethod
    def get_meta_value(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""

    @abc.abstractmethod
    def set_meta_value(self, key: str, value: str, *, action: str | None = None,
                       detail: dict | None = None) -> None:
        """Store ``value`` under ``key`` (replacing any), durably."""

    @abc.abstractmethod
    def delete_meta_value(self, key: str, *, action: str | None = None,
                          detail: dict | None = None) -> bool:
        """Delete ``key``; True if it existed."""

    @abc.abstractmethod
    def list_meta_prefix(self, prefix: str) -> dict[str, str]:
        """Every key starting with ``prefix`` (and its value), in key order."""
