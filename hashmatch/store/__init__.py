"""Persistent storage of items, fingerprints, the change log and the audit log."""

import os

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
from .cache import (
    CacheInvalid,
    LoadedCodes,
    cache_path_for,
    load_all_codes,
    load_cache,
    save_cache,
)
from .sqlite import SQLiteStore


def open_store(location, create: bool = False) -> Store:
    """Open the store at ``location``: a file path means the embedded SQLite store.

    (A ``postgresql://`` URL will select the shared PostgreSQL backend once it exists.)
    """
    location = os.fspath(location)
    if location.startswith(("postgres://", "postgresql://")):
        # Not echoing the URL: it may carry a password.
        raise StoreError("PostgreSQL store URLs are not supported yet")
    return SQLiteStore.open(location, create=create)


__all__ = [
    "AddOutcome",
    "AuditEntry",
    "CacheInvalid",
    "Change",
    "Codes",
    "FingerprintRecord",
    "Item",
    "ItemRecord",
    "LoadedCodes",
    "SQLiteStore",
    "Store",
    "StoreError",
    "cache_path_for",
    "load_all_codes",
    "load_cache",
    "open_store",
    "save_cache",
]
