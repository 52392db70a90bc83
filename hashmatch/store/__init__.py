"""Persistent storage of items, fingerprints, the change log and the audit log."""

import os

from .base import (
    AuditEntry,
    Change,
    Codes,
    FingerprintRecord,
    Item,
    ItemRecord,
    RecordOutcome,
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


def is_database_url(location) -> bool:
    """True if ``location`` names a PostgreSQL database rather than an SQLite file."""
    return isinstance(location, str) and location.startswith(("postgres://", "postgresql://"))


def open_store(location, create: bool = False) -> Store:
    """Open the store at ``location``.

    A ``postgresql://user:password@host:port/dbname`` URL (or ``postgres://``) opens the
    shared PostgreSQL store (needs ``pip install 'hashmatch[postgres]'``); anything else is a
    file path of the embedded SQLite store. Errors name the database but never the password.
    """
    location = os.fspath(location)
    if is_database_url(location):
        from .postgres import PostgresStore

        return PostgresStore.open(location, create=create)
    return SQLiteStore.open(location, create=create)


__all__ = [
    "AuditEntry",
    "CacheInvalid",
    "Change",
    "Codes",
    "FingerprintRecord",
    "Item",
    "ItemRecord",
    "LoadedCodes",
    "RecordOutcome",
    "SQLiteStore",
    "Store",
    "StoreError",
    "cache_path_for",
    "is_database_url",
    "load_all_codes",
    "load_cache",
    "open_store",
    "save_cache",
]
