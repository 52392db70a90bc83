"""Persistent storage of items, fingerprints, the change log and the audit log."""
from .base import (
    AddOutcome,
    AuditEntry,
    Change,
    Codes,
    FingerprintRecord,
    Item,
    ItemRecord,
    Store,
    StoreError,
)
from .sqlite import SQLiteStore

__all__ = [
    "AddOutcome",
    "AuditEntry",
    "Change",
    "Codes",
    "FingerprintRecord",
    "Item",
    "ItemRecord",
    "SQLiteStore",
    "Store",
    "StoreError",
]
