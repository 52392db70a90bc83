"""The embedded store: one SQLite file in WAL mode.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``. In WAL mode a commit is one append
to the -wal file; NORMAL would already survive ``kill -9`` of the writer (the appended pages
are in the OS page cache), but it can lose the last commits on power loss or an OS crash, after
``add_items`` told the caller (and an investigator's report) that they were added. FULL fsyncs
the WAL on every commit, which closes that gap; callers commit per batch of files, so the cost
is one fsync per batch, negligible next to decoding and hashing the batch.

Concurrency: readers never block the writer nor each other (WAL). Writers start with
``BEGIN IMMEDIATE`` so they queue on the busy timeout instead of failing half-way when two
transactions try to upgrade a read lock at once.

Every statement is parameterised; id lists travel as one JSON array parameter (``json_each``).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import threading
import uuid as uuid_module
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterable

import numpy as np

from .base import (VERIFICATION_MAGIC, AuditEntry, Change, Codes, Item, RecordOutcome, Store,
                   StoreError)
from .common import (
    audit_actor,
    check_kind,
    check_meta_key,
    checked_item,
    codes_from_rows,
    items_matching,
    load_json,
    prepare_record,
    stats_summary,
)

SCHEMA_VERSION = 2  # 2: the verification table
APPLICATION_ID = 0x484D4442  # 'HMDB' in the SQLite header, so `file` can tell what this is

_SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE items (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: an id is never reused
        path TEXT,  -- file path or source URI; NULL for a bare hash-list entry
        sha256 TEXT,
        size INTEGER,
        added_at TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '[]',
        source TEXT,
        meta TEXT NOT NULL DEFAULT '{}',
        removed_at TEXT
    )""",
    "CREATE UNIQUE INDEX items_live_sha256 ON items (sha256) WHERE removed_at IS NULL",
    """CREATE TABLE fingerprints (
        id INTEGER PRIMARY KEY,
        item_id INTEGER NOT NULL REFERENCES items (id),
        algorithm TEXT NOT NULL,
        nbits INTEGER NOT NULL,
        region TEXT NOT NULL,
        variant TEXT NOT NULL,
        code BLOB NOT NULL CHECK (length(code) * 8 = nbits),
        quality INTEGER
    )""",
    "CREATE INDEX fingerprints_algorithm ON fingerprints (algorithm, nbits)",
    "CREATE INDEX fingerprints_item ON fingerprints (item_id)",
    """CREATE TABLE verification (
        item_id INTEGER PRIMARY KEY REFERENCES items (id),
        data BLOB NOT NULL CHECK (length(data) <= 16384)
    )""",
    """CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id INTEGER NOT NULL REFERENCES items (id),
        op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
        at TEXT NOT NULL
    )""",
    """CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    )""",
    # The logs are append-only; the database itself refuses edits, not just this code.
    *(
        f"CREATE TRIGGER {table}_append_only_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        for table in ("audit", "changes")
        for op in ("UPDATE", "DELETE")
    ),
]

_CODE_COLUMNS = "f.item_id, f.id, f.region, f.variant, COALESCE(f.quality, -1), f.code"
_LOAD_CODES = f"""
    SELECT {_CODE_COLUMNS} FROM fingerprints f JOIN items i ON i.id = f.item_id
    WHERE f.algorithm = ? AND f.nbits = ? AND i.removed_at IS NULL ORDER BY f.id
"""
# CROSS JOIN makes SQLite drive the lookup from the few wanted ids (fingerprints_item index)
# instead of scanning every fingerprint of the algorithm.
_LOAD_CODES_OF_ITEMS = f"""
    SELECT {_CODE_COLUMNS} FROM json_each(?) AS wanted
    CROSS JOIN fingerprints f ON f.item_id = wanted.value JOIN items i ON i.id = f.item_id
    WHERE f.algorithm = ? AND f.nbits = ? AND i.removed_at IS NULL ORDER BY f.id
"""


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _id_list(item_ids: Iterable[int]) -> str:
    """Ids as one JSON array parameter, for ``IN (SELECT value FROM json_each(?))``."""
    return json.dumps(sorted({int(i) for i in item_ids}))


class SQLiteStore(Store):
    """The embedded SQLite store. Open with :meth:`open`, in each process that uses it.

    Thread-safe: calls are serialised on an internal lock.
    """

    def __init__(self, connection: sqlite3.Connection, path: str, store_uuid: str):
        self._conn = connection
        self._lock = threading.RLock()
        self.path = path
        self.uuid = store_uuid

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, path, create: bool = False, timeout: float = 30.0) -> "SQLiteStore":
        """Open the store at ``path``; with ``create=True`` make it if missing or empty.

        ``timeout`` is how long (seconds) to wait for another process's write to finish.
        Raises StoreError naming the path if it is missing, not a hashmatch database,
        corrupt, or of a newer schema version than this hashmatch knows.
        """
        path = os.fspath(path)
        if not create and not os.path.exists(path):
            raise StoreError(f"{path}: no such hashmatch database (use create=True to make one)")
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (see _write).
            conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise StoreError(f"{path}: cannot open database ({e})") from e
        try:
            store_uuid = _prepare_database(conn, path, create)
        except sqlite3.OperationalError as e:  # locked, read-only, disk full ...
            conn.close()
            raise StoreError(f"{path}: cannot open database ({e})") from e
        except sqlite3.DatabaseError as e:  # "file is not a database", "malformed"
            conn.close()
            raise StoreError(f"{path}: not a hashmatch database or corrupt ({e})") from e
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, store_uuid)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- transactions -------------------------------------------------------------------
    @contextmanager
    def _write(self):
        """One write transaction: commits on success (durably), rolls back on any error."""
        with self._lock:
            db = self._connection()
            if db.in_transaction:
                raise StoreError(f"{self.path}: cannot write inside snapshot()")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as e:
                raise StoreError(f"{self.path}: {e}") from e

    @contextmanager
    def _read(self):
        """A read transaction, so multi-statement reads see one state; joins an open snapshot."""
        with self._lock:
            db = self._connection()
            owns_transaction = not db.in_transaction
            try:
                if owns_transaction:
                    db.execute("BEGIN")
                try:
                    yield db
                finally:
                    if owns_transaction and db.in_transaction:
                        db.execute("ROLLBACK")  # nothing to commit; releases the snapshot
            except sqlite3.DatabaseError as e:
                raise StoreError(f"{self.path}: {e}") from e

    def snapshot(self):
        """Context manager: reads inside see one consistent state (no writes allowed inside)."""
        return self._read()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: store is closed")
        return self._conn

    # -- writes -------------------------------------------------------------------------
    def add_items(self, records, *, action="add", detail=None) -> list[RecordOutcome]:
        prepared = [prepare_record(r) for r in records]  # all validated before any write
        if not prepared:
            return []
        now = _utc_now()
        outcomes = []
        with self._write() as db:
            self._insert_prepared(db, prepared, now, outcomes)
            added = sum(o.status == "added" for o in outcomes)
            summary = {"added": added, "duplicates": len(outcomes) - added, **(detail or {})}
            _append_audit(db, now, action, summary)
        return outcomes

    def add_items_streaming(self, records, *, action="add", detail=None,
                            batch=10_000) -> list[RecordOutcome]:
        """One transaction, ``batch`` records validated and inserted at a time (see Store)."""
        now = _utc_now()
        outcomes: list[RecordOutcome] = []
        iterator = iter(records)
        with self._write() as db:
            while True:
                chunk = [prepare_record(r) for r in itertools.islice(iterator, batch)]
                if not chunk:
                    break
                self._insert_prepared(db, chunk, now, outcomes)
            if not outcomes:
                return []  # nothing written: the transaction commits empty
            added = sum(o.status == "added" for o in outcomes)
            summary = {"added": added, "duplicates": len(outcomes) - added, **(detail or {})}
            _append_audit(db, now, action, summary)
        return outcomes

    @staticmethod
    def _insert_prepared(db, prepared, now: str, outcomes: list) -> None:
        for record, labels_json, meta_json in prepared:
            if record.sha256 is not None:
                row = db.execute(
                    "SELECT id FROM items WHERE sha256 = ? AND removed_at IS NULL",
                    (record.sha256,),
                ).fetchone()
                if row is not None:
                    if record.verification is not None:
                        db.execute(_UPGRADE_VERIFICATION, (row[0], record.verification))
                    outcomes.append(RecordOutcome("duplicate", row[0]))
                    continue
            item = (record.path, record.sha256, record.size, now, labels_json, record.source)
            item_id = db.execute(
                "INSERT INTO items (path, sha256, size, added_at, labels, source, meta)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*item, meta_json),
            ).lastrowid
            db.executemany(
                "INSERT INTO fingerprints (item_id, algorithm, nbits, region, variant, code, quality)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(item_id, *fp) for fp in record.fingerprints],
            )
            if record.verification is not None:
                db.execute("INSERT INTO verification (item_id, data) VALUES (?, ?)",
                           (item_id, record.verification))
            db.execute(
                "INSERT INTO changes (item_id, op, at) VALUES (?, 'add', ?)", (item_id, now)
            )
            outcomes.append(RecordOutcome("added", item_id))

    def remove_items(self, item_ids, *, detail=None) -> int:
        requested = sorted({int(i) for i in item_ids})
        if not requested:
            return 0
        now = _utc_now()
        with self._write() as db:
            live = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM items WHERE id IN (SELECT value FROM json_each(?))"
                    " AND removed_at IS NULL ORDER BY id",
                    (json.dumps(requested),),
                )
            ]
            db.executemany("UPDATE items SET removed_at = ? WHERE id = ?", [(now, i) for i in live])
            db.executemany(
                "INSERT INTO changes (item_id, op, at) VALUES (?, 'remove', ?)",
                [(i, now) for i in live],
            )
            summary = {"requested": requested, "removed": live, **(detail or {})}
            _append_audit(db, now, "remove", summary)
        return len(live)

    def audit(self, action: str, detail: dict | None = None) -> None:
        with self._write() as db:
            _append_audit(db, _utc_now(), action, detail or {})

    # -- reads --------------------------------------------------------------------------
    def get_verification(self, item_ids) -> dict[int, bytes]:
        """Rows that are not (integer, bytes) are left out: what cannot be verified is judged
        by the plain PDQ rule, never trusted (hashmatch.verify)."""
        try:
            with self._read() as db:
                rows = db.execute(
                    "SELECT item_id, data FROM verification"
                    " WHERE item_id IN (SELECT value FROM json_each(?))",
                    (_id_list(item_ids),),
                ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot read the verification table ({exc}): "
                             "a crafted or damaged database") from None
        return {item_id: data for item_id, data in rows
                if isinstance(item_id, int) and isinstance(data, bytes)}

    def verifiable_items(self, item_ids) -> set[int]:
        try:
            with self._read() as db:
                rows = db.execute(
                    "SELECT item_id FROM verification"
                    " WHERE item_id IN (SELECT value FROM json_each(?)) AND substr(data, 1, 4) = ?",
                    (_id_list(item_ids), VERIFICATION_MAGIC),
                ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot read the verification table ({exc}): "
                             "a crafted or damaged database") from None
        return {item_id for item_id, in rows if isinstance(item_id, int)}

    def get_items(self, item_ids) -> dict[int, Item]:
        with self._read() as db:
            rows = db.execute(
                "SELECT id, path, sha256, size, added_at, labels, source, meta, removed_at"
                " FROM items WHERE id IN (SELECT value FROM json_each(?))",
                (_id_list(item_ids),),
            ).fetchall()
        items = (_item(row, self.path) for row in rows)
        return {item.id: item for item in items}

    def find_by_sha256(self, sha256: str) -> Item | None:
        with self._read() as db:
            row = db.execute(
                "SELECT id, path, sha256, size, added_at, labels, source, meta, removed_at"
                " FROM items WHERE sha256 = ? AND removed_at IS NULL",
                (sha256.lower(),),
            ).fetchone()
        return None if row is None else _item(row, self.path)

    def load_codes(self, algorithm: str, nbits: int, item_ids=None) -> Codes:
        check_kind(self.path, algorithm, nbits)
        with self._read() as db:
            seq = _last_seq(db)
            if item_ids is None:
                cursor = db.execute(_LOAD_CODES, (algorithm, nbits))
            else:
                cursor = db.execute(_LOAD_CODES_OF_ITEMS, (_id_list(item_ids), algorithm, nbits))
            # In chunks: a million rows as Python tuples cost ~330 bytes each, their arrays 66.
            parts = []
            while True:
                rows = cursor.fetchmany(_FETCH_ROWS)
                if not rows and parts:
                    break
                parts.append(codes_from_rows(self.path, algorithm, nbits, seq, rows))
                if len(rows) < _FETCH_ROWS:
                    break
        return parts[0] if len(parts) == 1 else _concatenate_codes(parts)

    def load_codes_for_items(self, item_ids) -> dict[tuple[str, int], Codes]:
        wanted = _id_list(item_ids)
        with self._read() as db:
            keys = db.execute(
                "SELECT DISTINCT f.algorithm, f.nbits FROM json_each(?) AS wanted"
                " CROSS JOIN fingerprints f ON f.item_id = wanted.value ORDER BY 1, 2",
                (wanted,),
            ).fetchall()
            result = {}
            for algorithm, nbits in keys:
                check_kind(self.path, algorithm, nbits)
                codes = self.load_codes(algorithm, nbits, json.loads(wanted))
                if len(codes):
                    result[(algorithm, nbits)] = codes
        return result

    def algorithms(self) -> list[tuple[str, int]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT DISTINCT f.algorithm, f.nbits FROM fingerprints f"
                " JOIN items i ON i.id = f.item_id WHERE i.removed_at IS NULL ORDER BY 1, 2"
            ).fetchall()
        for algorithm, nbits in rows:
            check_kind(self.path, algorithm, nbits)
        return [(algorithm, nbits) for algorithm, nbits in rows]

    def count_items(self) -> int:
        with self._read() as db:
            return db.execute("SELECT COUNT(*) FROM items WHERE removed_at IS NULL").fetchone()[0]

    def last_change_seq(self) -> int:
        with self._read() as db:
            return _last_seq(db)

    def changes_since(self, seq: int, limit: int | None = None) -> list[Change]:
        with self._read() as db:
            rows = db.execute(
                "SELECT seq, item_id, op FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                (int(seq), -1 if limit is None else int(limit)),  # LIMIT -1: no limit
            ).fetchall()
        return [Change(*row) for row in rows]

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        with self._read() as db:
            rows = db.execute(
                "SELECT id, at, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [
            AuditEntry(i, at, actor, action, load_json(self.path, f"audit row {i}", "detail", detail))
            for i, at, actor, action, detail in rows
        ]

    def stats(self) -> dict:
        # Verifiable: verification data in the format this version reads.
        with self._read() as db:
            live = db.execute("SELECT COUNT(*) FROM items WHERE removed_at IS NULL").fetchone()[0]
            removed = db.execute(
                "SELECT COUNT(*) FROM items WHERE removed_at IS NOT NULL"
            ).fetchone()[0]
            per_algorithm = db.execute(
                "SELECT f.algorithm, f.nbits, COUNT(*) FROM fingerprints f"
                " JOIN items i ON i.id = f.item_id WHERE i.removed_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
            seq = _last_seq(db)
            verifiable = db.execute(
                "SELECT COUNT(*) FROM verification v JOIN items i ON i.id = v.item_id"
                " WHERE i.removed_at IS NULL AND substr(v.data, 1, 4) = ?",
                (VERIFICATION_MAGIC,)).fetchone()[0]
        db_bytes = sum(
            os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p)
        )
        stats = stats_summary(self, SCHEMA_VERSION, live, removed, per_algorithm, seq, db_bytes)
        stats["verifiable_items"] = int(verifiable)
        return stats

    def integrity_check(self) -> list[str]:
        problems = []
        with self._read() as db:
            try:
                result = [
                    line
                    for (text,) in db.execute("PRAGMA integrity_check")
                    for line in text.splitlines()
                ]
                if result != ["ok"]:
                    problems += [f"sqlite integrity_check: {line}" for line in result]
                for table, rowid, parent, _ in db.execute("PRAGMA foreign_key_check"):
                    problems.append(f"{table} row {rowid} refers to a missing {parent} row")
                for description, query in _INVARIANTS:
                    count = db.execute(query).fetchone()[0]
                    if count:
                        problems.append(f"{count} {description}")
                meta = dict(db.execute("SELECT key, value FROM meta"))
                problems += [
                    f"meta has no {key}"
                    for key in ("schema_version", "store_uuid")
                    if key not in meta
                ]
            except sqlite3.DatabaseError as e:  # damage bad enough to stop a check is a finding too
                problems.append(f"sqlite: {e}")
        return problems


    # -- curation (labels, sources, file times; appended: CLI 'label', 'list', re-index) ----
    def relabel_items(self, item_ids, add=(), remove=(), source=None, *,
                      action: str = "label", detail: dict | None = None) -> dict[int, Item]:
        """Add/remove labels and add a source on live items (see
        :func:`hashmatch.curation.relabelled`), in one transaction with one audit row
        (``action``: which items changed, what was asked). Returns the live items asked for,
        as they are now; unknown or removed ids are absent."""
        from ..curation import check_labels, relabelled

        add, remove = check_labels("relabel", add), check_labels("relabel", remove)
        requested = sorted({int(i) for i in item_ids})
        now = _utc_now()
        with self._write() as db:
            rows = db.execute(
                "SELECT id, labels, source, meta FROM items WHERE id IN"
                " (SELECT value FROM json_each(?)) AND removed_at IS NULL ORDER BY id",
                (json.dumps(requested),)).fetchall()
            changed = []
            for item_id, labels, old_source, meta in rows:
                labels, new_source, meta, differs = relabelled(
                    json.loads(labels), old_source, json.loads(meta), add, remove, source)
                if differs:
                    db.execute("UPDATE items SET labels = ?, source = ?, meta = ? WHERE id = ?",
                               (json.dumps(labels, ensure_ascii=False), new_source,
                                json.dumps(meta, ensure_ascii=False), item_id))
                    changed.append(item_id)
            if changed:
                _append_audit(db, now, action, {
                    "items": changed, "add_labels": add, "remove_labels": remove,
                    "source": source, **(detail or {})})
        return {k: v for k, v in self.get_items([r[0] for r in rows]).items()}

    def set_file_times(self, times: dict) -> None:
        """Record each file item's modification time (``{item_id: st_mtime_ns}``) in its meta
        (``mtime_ns``), so a re-index can skip files that did not change."""
        if not times:
            return
        with self._write() as db:
            for item_id, mtime_ns in times.items():
                row = db.execute("SELECT meta FROM items WHERE id = ?", (int(item_id),)).fetchone()
                if row is None:
                    continue
                meta = json.loads(row[0])
                meta["mtime_ns"] = int(mtime_ns)
                db.execute("UPDATE items SET meta = ? WHERE id = ?",
                           (json.dumps(meta, ensure_ascii=False), int(item_id)))

    def find_by_paths(self, paths) -> dict[str, Item]:
        """Live file items by path (the newest one where several share a path)."""
        wanted = sorted({p for p in paths if p is not None})
        if not wanted:
            return {}
        with self._read() as db:
            rows = db.execute(
                "SELECT id, path, sha256, size, added_at, labels, source, meta, removed_at"
                " FROM items WHERE path IN (SELECT value FROM json_each(?))"
                " AND removed_at IS NULL ORDER BY id",
                (json.dumps(wanted, ensure_ascii=False),)).fetchall()
        return {row[1]: _item(row) for row in rows}

    def list_items(self, labels=(), source: str | None = None) -> list[Item]:
        """Live items, oldest first; with ``labels`` only items carrying every one of them,
        with ``source`` only items of that source (their first or a further one)."""
        labels = list(labels or ())
        with self._read() as db:
            rows = db.execute(
                "SELECT id, path, sha256, size, added_at, labels, source, meta, removed_at"
                " FROM items WHERE removed_at IS NULL ORDER BY id").fetchall()
        return items_matching([_item(row) for row in rows], labels, source)

    # -- key/value settings (see Store.get_meta_value) ------------------------------------
    def get_meta_value(self, key: str) -> str | None:
        with self._read() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta_value(self, key: str, value: str, *, action=None, detail=None) -> None:
        check_meta_key(key, value)
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            if action:
                _append_audit(db, _utc_now(), action, detail or {})

    def delete_meta_value(self, key: str, *, action=None, detail=None) -> bool:
        check_meta_key(key)
        with self._write() as db:
            existed = db.execute("DELETE FROM meta WHERE key = ?", (key,)).rowcount > 0
            if action:
                _append_audit(db, _utc_now(), action, {**(detail or {}), "existed": existed})
        return existed

    def list_meta_prefix(self, prefix: str) -> dict[str, str]:
        with self._read() as db:
            rows = db.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, length(?)) = ? ORDER BY key",
                (prefix, prefix)).fetchall()
        return dict(rows)

# Each query counts violations of one invariant the write paths maintain.
_INVARIANTS = [
    (
        "fingerprints whose code length does not match nbits",
        "SELECT COUNT(*) FROM fingerprints WHERE length(code) * 8 != nbits",
    ),
    (
        "items without exactly one 'add' change",
        "SELECT COUNT(*) FROM items i LEFT JOIN (SELECT item_id, COUNT(*) AS n FROM changes"
        " WHERE op = 'add' GROUP BY item_id) c ON c.item_id = i.id WHERE COALESCE(c.n, 0) != 1",
    ),
    (
        "items whose removed_at disagrees with the 'remove' changes",
        "SELECT COUNT(*) FROM items i LEFT JOIN (SELECT item_id, COUNT(*) AS n FROM changes"
        " WHERE op = 'remove' GROUP BY item_id) c ON c.item_id = i.id"
        " WHERE COALESCE(c.n, 0) != (i.removed_at IS NOT NULL)",
    ),
    (
        "live items sharing a sha256",
        "SELECT COUNT(*) FROM (SELECT sha256 FROM items WHERE removed_at IS NULL AND sha256 IS NOT NULL"
        " GROUP BY sha256 HAVING COUNT(*) > 1)",
    ),
    (
        "items whose labels or meta are not valid JSON",
        "SELECT COUNT(*) FROM items WHERE NOT json_valid(labels) OR NOT json_valid(meta)",
    ),
]


def _prepare_database(conn: sqlite3.Connection, path: str, create: bool) -> str:
    """Check (or create) the schema and set per-connection pragmas; returns the store uuid."""
    tables = _table_names(conn)  # raises DatabaseError on a file that is not SQLite
    if "meta" not in tables:
        if tables - {"sqlite_sequence"}:
            raise StoreError(f"{path}: an SQLite database, but not a hashmatch one (no meta table)")
        if not create:
            raise StoreError(f"{path}: empty file, not a hashmatch database (use create=True)")
    # WAL is persistent in the file; setting it again is a no-op. Must be outside a transaction.
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise StoreError(f"{path}: cannot use WAL journal mode here (got {mode!r})")
    conn.execute("PRAGMA synchronous=FULL")  # see the module docstring
    conn.execute("PRAGMA foreign_keys=ON")
    if "meta" not in tables:
        _create_schema(conn)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    if (
        meta.get("format") != "hashmatch"
        or "schema_version" not in meta
        or "store_uuid" not in meta
    ):
        raise StoreError(f"{path}: not a hashmatch database (meta table incomplete)")
    try:
        version = int(meta["schema_version"])
    except ValueError:
        raise StoreError(
            f"{path}: not a hashmatch database (schema version {meta['schema_version']!r})"
        ) from None
    _check_schema_objects(conn, path)
    _check_columns(conn, path)
    _check_sequences(conn, path)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {version} is newer than this hashmatch supports "
            f"({SCHEMA_VERSION}); upgrade hashmatch to open it"
        )
    if version < 1:
        raise StoreError(f"{path}: schema version {version} is unknown")
    if version < SCHEMA_VERSION:
        _migrate(conn, path, version)
    return meta["store_uuid"]


# A stored image indexed again brings its verification data: kept when the stored data is
# missing or of another format (the first 4 bytes name it), so an item indexed by an older
# version becomes verifiable again.
_UPGRADE_VERIFICATION = (
    "INSERT INTO verification (item_id, data) VALUES (?, ?) ON CONFLICT (item_id) DO UPDATE"
    " SET data = excluded.data WHERE substr(verification.data, 1, 4) != substr(excluded.data, 1, 4)")
_VERIFICATION_TABLE = next(s for s in _SCHEMA if s.startswith("CREATE TABLE verification"))


def _migrate(conn: sqlite3.Connection, path: str, version: int) -> None:
    """Version 1 -> 2: the verification table (empty: items indexed before it keep the
    plain-PDQ rule until they are indexed again)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = int(dict(conn.execute("SELECT key, value FROM meta"))["schema_version"])
        if current == 1:
            conn.execute(_VERIFICATION_TABLE)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                         (str(SCHEMA_VERSION),))
            _append_audit(conn, _utc_now(), "migrate", {"from": 1, "to": SCHEMA_VERSION})
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StoreError(f"{path}: schema version {version} needs an upgrade to "
                         f"{SCHEMA_VERSION}, which failed ({exc}); open it once writable") from None
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# Triggers and views run SQL on our reads and writes: a database file from outside may carry
# only ours, word for word (a foreign trigger could e.g. delete every fingerprint we store).
_OWN_SCHEMA_CODE = {
    statement.split()[2]: statement for statement in _SCHEMA
    if statement.startswith(("CREATE TRIGGER", "CREATE VIEW"))
}


def _check_schema_objects(conn: sqlite3.Connection, path: str) -> None:
    for kind, name, sql in conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('trigger', 'view')"
    ):
        if _OWN_SCHEMA_CODE.get(name) != sql:
            raise StoreError(
                f"{path}: refusing a database with a {kind} hashmatch did not create ({name!r})"
            )


# The columns every read and write uses, by table: a file from outside must have at least
# these. Other tables and extra columns are left alone (later schema versions add some).
_REQUIRED_COLUMNS = {
    "meta": ("key", "value"),
    "items": ("id", "path", "sha256", "size", "added_at", "labels", "source", "meta",
              "removed_at"),
    "fingerprints": ("id", "item_id", "algorithm", "nbits", "region", "variant", "code",
                     "quality"),
    "changes": ("seq", "item_id", "op", "at"),
    "audit": ("id", "at", "actor", "action", "detail"),
}
# An AUTOINCREMENT counter this close to 2**63 - 1 cannot hand out more ids: every later
# add would fail as "database or disk is full". Only a crafted file gets there.
_SEQUENCE_LIMIT = 2 ** 63 - 2 ** 32


def _check_columns(conn: sqlite3.Connection, path: str) -> None:
    for table, required in _REQUIRED_COLUMNS.items():
        # PRAGMA takes no parameters; the table names are our constants, not input.
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not have:
            raise StoreError(f"{path}: not a complete hashmatch database (no {table} table)")
        missing = [column for column in required if column not in have]
        if missing:
            raise StoreError(f"{path}: table {table} has no column {', '.join(missing)} "
                             "(a crafted or damaged database)")


def _check_sequences(conn: sqlite3.Connection, path: str) -> None:
    if "sqlite_sequence" not in _table_names(conn):
        return
    for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence"):
        if not isinstance(seq, int) or not 0 <= seq < _SEQUENCE_LIMIT:
            raise StoreError(f"{path}: the {name} numbering is at {seq!r}, at the 64-bit limit "
                             "(nothing more could be added; a crafted or damaged database)")


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if "meta" not in _table_names(conn):  # another process may have created it meanwhile
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("format", "hashmatch"),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("store_uuid", str(uuid_module.uuid4())),
                    ("created_at", _utc_now()),
                ],
            )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")  # a constant int, not input
            _append_audit(conn, _utc_now(), "create", {"schema_version": SCHEMA_VERSION})
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _append_audit(db: sqlite3.Connection, at: str, action: str, detail: dict) -> None:
    db.execute(
        "INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?)",
        (at, audit_actor(), action, json.dumps(detail, ensure_ascii=False, default=str)),
    )


def _last_seq(db: sqlite3.Connection) -> int:
    return db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]


def _item(row, where: str = "store") -> Item:
    item_id, path, sha256, size, added_at, labels, source, meta, removed_at = row
    return checked_item(where, item_id, path, sha256, size, added_at,
                        load_json(where, item_id, "labels", labels), source,
                        load_json(where, item_id, "meta", meta), removed_at)


_FETCH_ROWS = 100_000


def _concatenate_codes(parts: list) -> Codes:
    first = parts[0]
    return Codes(
        algorithm=first.algorithm, nbits=first.nbits, seq=first.seq,
        item_ids=np.concatenate([p.item_ids for p in parts]),
        fingerprint_ids=np.concatenate([p.fingerprint_ids for p in parts]),
        codes=np.concatenate([p.codes for p in parts]),
        regions=np.concatenate([p.regions for p in parts]),
        variants=np.concatenate([p.variants for p in parts]),
        qualities=np.concatenate([p.qualities for p in parts]),
    )
