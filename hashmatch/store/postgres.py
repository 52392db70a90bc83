"""The shared store: one PostgreSQL database that many writers and many matchers use at once.

Same contract and semantics as the SQLite store (:mod:`hashmatch.store.sqlite`): items with
tombstones, fingerprints, a change log with a strictly increasing ``seq``, an append-only
audit log (enforced by triggers), duplicates by SHA-256 among live items, consistent
``snapshot()`` reads and ``integrity_check()``. Requires psycopg 3 (``pip install
'hashmatch[postgres]'``). Every statement is parameterised; id lists travel as one
``bigint[]`` parameter.

**Change order.** A matcher syncs with ``changes_since(seq)`` and then remembers the newest
``seq`` it saw. Sequence numbers are handed out when a row is inserted but become visible when
its transaction commits, so with free-running concurrent writers a change with seq 7 could
commit *after* a reader has already seen seq 8 and moved its watermark past 7: that change
would be lost to the reader for good. Every write transaction therefore takes
``LOCK TABLE changes IN EXCLUSIVE MODE`` right before it appends its change rows and holds it
until it commits. The lock is taken after the (slow) item and fingerprint inserts, so writers
still insert in parallel and only queue for the short append+commit step; it does not conflict
with the ACCESS SHARE lock of plain reads, so matchers are never blocked. PostgreSQL makes a
commit visible before it releases the transaction's locks, so the next writer can only draw a
larger seq after the previous one is visible: seqs become visible in seq order, which is what
:class:`~hashmatch.store.base.Store` requires. Seqs can have gaps (a rolled-back transaction
burns the numbers it drew); they are increasing, not dense.

**Reads** run in ``REPEATABLE READ READ ONLY`` transactions, so multi-statement reads (a seq
and the codes it covers) see one state. **Writes** run in READ COMMITTED; a deadlock between
two writers adding the same SHA-256s in opposite orders is retried from scratch (nothing of
the failed attempt was committed).

**Schema** lives in the ``hashmatch`` schema of the database (the database can hold other
things), with its version in ``hashmatch.meta``; :data:`MIGRATIONS` creates and upgrades it,
under an advisory lock so that many processes opening a new database at once are safe.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid as uuid_module
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .base import (VERIFICATION_MAGIC, AuditEntry, Change, Codes, Item, RecordOutcome, Store,
                   StoreError)
from .common import (audit_actor, check_kind, check_meta_key, checked_item, codes_from_rows,
                     items_matching, prepare_record, stats_summary)

SCHEMA = "hashmatch"
SCHEMA_VERSION = 2  # 2: the verification table
_SCHEMA_LOCK_KEY = 0x484D5343  # pg_advisory_xact_lock key for creating/migrating the schema
_WRITE_ATTEMPTS = 5  # deadlock / serialization-failure retries of one write transaction

# MIGRATIONS[v] takes the schema from version v - 1 to v. Append; never edit a released one.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE hashmatch.meta (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE hashmatch.items (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
            path text,  -- file path or source URI; NULL for a bare hash-list entry
            sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
            size bigint CHECK (size >= 0),
            added_at timestamptz NOT NULL,
            labels json NOT NULL DEFAULT '[]',  -- json, not jsonb: kept verbatim (\\u0000 too)
            source text,
            meta json NOT NULL DEFAULT '{}',
            removed_at timestamptz
        )""",
        "CREATE UNIQUE INDEX items_live_sha256 ON hashmatch.items (sha256)"
        " WHERE removed_at IS NULL",
        """CREATE TABLE hashmatch.fingerprints (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            item_id bigint NOT NULL REFERENCES hashmatch.items (id),
            algorithm text NOT NULL,
            nbits integer NOT NULL,
            region text NOT NULL,
            variant text NOT NULL,
            code bytea NOT NULL CHECK (length(code) * 8 = nbits),
            quality integer
        )""",
        "CREATE INDEX fingerprints_algorithm ON hashmatch.fingerprints (algorithm, nbits, id)",
        "CREATE INDEX fingerprints_item ON hashmatch.fingerprints (item_id)",
        """CREATE TABLE hashmatch.changes (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            item_id bigint NOT NULL REFERENCES hashmatch.items (id),
            op text NOT NULL CHECK (op IN ('add', 'remove')),
            at timestamptz NOT NULL
        )""",
        "CREATE INDEX changes_item ON hashmatch.changes (item_id)",
        """CREATE TABLE hashmatch.audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            detail json NOT NULL DEFAULT '{}'
        )""",
        # The logs are append-only; the database itself refuses edits, not just this code.
        """CREATE FUNCTION hashmatch.refuse_edit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
        END $$""",
        *(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON hashmatch.{table}"
            " FOR EACH ROW EXECUTE FUNCTION hashmatch.refuse_edit()"
            for table in ("audit", "changes")
        ),
        *(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON hashmatch.{table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION hashmatch.refuse_edit()"
            for table in ("audit", "changes")
        ),
    ],
    2: [
        """CREATE TABLE hashmatch.verification (
            item_id bigint PRIMARY KEY REFERENCES hashmatch.items (id),
            data bytea NOT NULL CHECK (length(data) <= 16384)
        )""",
    ],
}
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))

_ITEM_COLUMNS = "id, path, sha256, size, added_at, labels, source, meta, removed_at"
_CODE_COLUMNS = "f.item_id, f.id, f.region, f.variant, COALESCE(f.quality, -1), f.code"
_LOAD_CODES = f"""
    SELECT {_CODE_COLUMNS} FROM hashmatch.fingerprints f JOIN hashmatch.items i ON i.id = f.item_id
    WHERE f.algorithm = %s AND f.nbits = %s AND i.removed_at IS NULL ORDER BY f.id
"""
_LOAD_CODES_OF_ITEMS = f"""
    SELECT {_CODE_COLUMNS} FROM hashmatch.fingerprints f JOIN hashmatch.items i ON i.id = f.item_id
    WHERE f.item_id = ANY(%s::bigint[]) AND f.algorithm = %s AND f.nbits = %s
      AND i.removed_at IS NULL ORDER BY f.id
"""


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "the PostgreSQL store needs psycopg 3: pip install 'hashmatch[postgres]'"
        ) from None
    return psycopg


def redact_url(url: str) -> str:
    """``url`` without its password (for messages, logs and ``Store.path``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{host}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() == "password" for k, _ in pairs):
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _ids(item_ids: Iterable[int]) -> list[int]:
    return sorted({int(i) for i in item_ids})


def _check_text(where: str, name: str, value) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise StoreError(f"{where}: {name} contains a NUL character, which PostgreSQL text cannot hold")


class PostgresStore(Store):
    """The shared PostgreSQL store. Open with :meth:`open`, one per process (or thread group).

    Thread-safe: calls are serialised on an internal lock (one connection per store).
    """

    def __init__(self, conninfo: str, connection, path: str, store_uuid: str,
                 cache_dir: str | None):
        self._conninfo = conninfo
        self._conn = connection
        self._lock = threading.RLock()
        self._in_snapshot = False
        self.path = path
        self.uuid = store_uuid
        self._cache_dir = cache_dir
        # Tests use this to hold a writer between appending its changes and committing.
        self._before_commit = None

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str, create: bool = False, connect_timeout: float = 10.0,
             cache_dir: str | None = None) -> "PostgresStore":
        """Open the store in the database at ``url`` (``postgresql://user:pw@host/db``).

        With ``create=True`` the schema is created if the database has none; an older schema
        is migrated. Raises StoreError (naming the database, never the password) if the
        server is unreachable, the database holds no hashmatch store (without create), the
        ``hashmatch`` schema is not ours, or its version is newer than this hashmatch knows.

        ``cache_dir``: where the codes cache (an accelerator for :class:`hashmatch.Index`
        start-up, see :mod:`hashmatch.store.cache`) is kept on this machine; default
        ``$HASHMATCH_CACHE_DIR``, else ``~/.cache/hashmatch``.
        """
        psycopg = _psycopg()
        url = os.fspath(url)
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        path = redact_url(url)
        conn = cls._connect(psycopg, url, path, connect_timeout)
        try:
            store_uuid = _prepare_database(conn, path, create)
        except psycopg.Error as e:
            conn.close()
            raise StoreError(f"{path}: cannot open the hashmatch store ({_message(e)})") from None
        except BaseException:
            conn.close()
            raise
        return cls(url, conn, path, store_uuid, cache_dir)

    @staticmethod
    def _connect(psycopg, url: str, path: str, connect_timeout: float = 10.0):
        try:
            return psycopg.connect(
                url,
                autocommit=True,  # we issue BEGIN/COMMIT ourselves (see _write / _read)
                connect_timeout=max(1, int(connect_timeout)),
                options="-c timezone=UTC",
                application_name="hashmatch",
            )
        except psycopg.Error as e:
            # The message can echo connection parameters, but libpq never includes a password.
            raise StoreError(f"{path}: cannot connect ({_message(e)})") from None

    @property
    def codes_cache_path(self) -> str:
        """This machine's codes cache file for this store (see :mod:`hashmatch.store.cache`)."""
        directory = (
            self._cache_dir
            or os.environ.get("HASHMATCH_CACHE_DIR")
            or os.path.join(
                os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hashmatch"
            )
        )
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            pass  # then saving the cache fails, which is reported and harmless
        return os.path.join(directory, f"{self.uuid}.codes")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- transactions -------------------------------------------------------------------
    def _connection(self):
        if self._conn is None:
            raise StoreError(f"{self.path}: store is closed")
        if self._conn.broken or self._conn.closed:  # server restarted, network cut: reconnect
            self._conn = self._connect(_psycopg(), self._conninfo, self.path)
        return self._conn

    def _write(self, body):
        """Run ``body(cursor)`` in one write transaction and return its result.

        Commits on success, rolls back on any error. A deadlock or serialization failure
        (two writers racing on the same rows) rolls back and runs ``body`` again from scratch,
        so ``body`` must have no effects outside the database.
        """
        psycopg = _psycopg()
        from psycopg import errors

        with self._lock:
            if self._in_snapshot:
                raise StoreError(f"{self.path}: cannot write inside snapshot()")
            last_error = None
            for attempt in range(_WRITE_ATTEMPTS):
                db = self._connection()
                try:
                    db.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                    try:
                        with db.cursor() as cur:
                            result = body(cur)
                        if self._before_commit is not None:
                            self._before_commit()
                        db.execute("COMMIT")
                        return result
                    except BaseException:
                        if not db.broken and db.info.transaction_status != 0:  # not IDLE
                            db.execute("ROLLBACK")
                        raise
                except (errors.DeadlockDetected, errors.SerializationFailure) as e:
                    last_error = e
                    time.sleep(0.01 * (attempt + 1))
                except psycopg.Error as e:
                    raise StoreError(f"{self.path}: {_message(e)}") from None
            raise StoreError(f"{self.path}: write failed after {_WRITE_ATTEMPTS} attempts "
                             f"({_message(last_error)})")

    @contextmanager
    def _read(self, single: bool = False):
        """A REPEATABLE READ transaction (one state for every statement); joins a snapshot.

        ``single``: the body runs one statement, which sees one state by itself, so it runs
        in autocommit (one round trip instead of three: BEGIN, statement, ROLLBACK).
        """
        psycopg = _psycopg()
        with self._lock:
            if self._in_snapshot:
                with self._conn.cursor() as cur:
                    try:
                        yield cur
                    except psycopg.Error as e:
                        raise StoreError(f"{self.path}: {_message(e)}") from None
                return
            db = self._connection()
            if single:
                try:
                    with db.cursor() as cur:
                        yield cur
                except psycopg.Error as e:
                    raise StoreError(f"{self.path}: {_message(e)}") from None
                return
            try:
                db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try:
                    with db.cursor() as cur:
                        yield cur
                finally:
                    if not db.broken and db.info.transaction_status != 0:
                        db.execute("ROLLBACK")  # nothing to commit; releases the snapshot
            except psycopg.Error as e:
                raise StoreError(f"{self.path}: {_message(e)}") from None

    @contextmanager
    def _snapshot(self):
        with self._lock:
            if self._in_snapshot:  # nested: join the outer one
                yield self
                return
            with self._read():
                self._in_snapshot = True
                try:
                    yield self
                finally:
                    self._in_snapshot = False

    def snapshot(self):
        """Context manager: reads inside see one consistent state (no writes allowed inside)."""
        return self._snapshot()

    # -- writes -------------------------------------------------------------------------
    def add_items(self, records, *, action="add", detail=None) -> list[RecordOutcome]:
        prepared = [prepare_record(r) for r in records]  # all validated before any write
        for record, _, _ in prepared:
            where = f"record {record.path!r}"
            _check_text(where, "path", record.path)
            _check_text(where, "source", record.source)
            for fp in record.fingerprints:
                _check_text(where, "fingerprint region/variant", fp.region + fp.variant + fp.algorithm)
        _check_text("audit", "action", action)
        if not prepared:
            return []
        return self._write(lambda db: self._add(db, prepared, action, detail))

    def _add(self, db, prepared, action, detail) -> list[RecordOutcome]:
        """The body of add_items: a handful of statements per call, whatever its size.

        Ids are drawn from the identity sequence up front (in record order) so that items and
        fingerprints go in as one multi-row INSERT each. A record whose sha256 is a live
        item's is a duplicate: ``ON CONFLICT DO NOTHING`` on the partial unique index (which
        also waits for a concurrent writer adding the same file, then sees its row).
        """
        now = db.execute("SELECT now()").fetchone()[0]
        outcomes: list[RecordOutcome | None] = [None] * len(prepared)
        first_of: dict[str, int] = {}  # sha256 -> index of its first record in this call
        fresh = []  # indexes of the records to insert
        for k, (record, _, _) in enumerate(prepared):
            if record.sha256 is not None and record.sha256 in first_of:
                continue  # resolved below, once the first one's outcome is known
            if record.sha256 is not None:
                first_of[record.sha256] = k
            fresh.append(k)
        ids = [row[0] for row in db.execute(
            "SELECT nextval(pg_get_serial_sequence('hashmatch.items', 'id'))"
            " FROM generate_series(1, %s) ORDER BY 1", (len(fresh),)).fetchall()]
        columns = list(zip(*[
            (item_id, prepared[k][0].path, prepared[k][0].sha256, prepared[k][0].size,
             prepared[k][1], prepared[k][0].source, prepared[k][2])
            for item_id, k in zip(ids, fresh)]))
        inserted = {row[0] for row in db.execute(
            "INSERT INTO hashmatch.items (id, path, sha256, size, added_at, labels, source, meta)"
            " OVERRIDING SYSTEM VALUE"
            " SELECT t.id, t.path, t.sha256, t.size, %s, t.labels::json, t.source, t.meta::json"
            " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bigint[], %s::text[],"
            " %s::text[], %s::text[]) AS t(id, path, sha256, size, labels, source, meta)"
            " ORDER BY t.id"
            " ON CONFLICT (sha256) WHERE removed_at IS NULL DO NOTHING RETURNING id",
            (now, *map(list, columns))).fetchall()} if fresh else set()
        conflicting = [prepared[k][0].sha256 for item_id, k in zip(ids, fresh)
                       if item_id not in inserted]
        live = dict(db.execute(
            "SELECT sha256, id FROM hashmatch.items WHERE sha256 = ANY(%s::text[])"
            " AND removed_at IS NULL", (conflicting,)).fetchall()) if conflicting else {}
        new_ids, fingerprints, verification, upgrades = [], [], [], []
        for item_id, k in zip(ids, fresh):
            record = prepared[k][0]
            if item_id in inserted:
                outcomes[k] = RecordOutcome("added", item_id)
                new_ids.append(item_id)
                fingerprints += [(item_id, *fp) for fp in record.fingerprints]
                if record.verification is not None:
                    verification.append((item_id, record.verification))
            elif record.sha256 in live:
                outcomes[k] = RecordOutcome("duplicate", live[record.sha256])
                if record.verification is not None:
                    upgrades.append((live[record.sha256], record.verification))
            else:  # the conflicting item was removed meanwhile by another writer: start over
                raise _race()
        for k, (record, _, _) in enumerate(prepared):
            if outcomes[k] is None:  # a repeat of an earlier record of this call
                outcomes[k] = RecordOutcome("duplicate", outcomes[first_of[record.sha256]].item_id)
        if fingerprints:
            db.execute(
                "INSERT INTO hashmatch.fingerprints (item_id, algorithm, nbits, region, variant,"
                " code, quality) SELECT t.item_id, t.algorithm, t.nbits, t.region, t.variant,"
                " t.code, t.quality FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::text[],"
                " %s::text[], %s::bytea[], %s::int[]) WITH ORDINALITY"
                " AS t(item_id, algorithm, nbits, region, variant, code, quality, n) ORDER BY t.n",
                tuple(map(list, zip(*fingerprints))))
        if verification:
            db.execute(
                "INSERT INTO hashmatch.verification (item_id, data)"
                " SELECT t.item_id, t.data FROM unnest(%s::bigint[], %s::bytea[])"
                " AS t(item_id, data)", tuple(map(list, zip(*verification))))
        if upgrades:
            # As SQLiteStore: data of another format (an older version) is replaced.
            db.execute(
                "INSERT INTO hashmatch.verification (item_id, data)"
                " SELECT t.item_id, t.data FROM unnest(%s::bigint[], %s::bytea[])"
                " AS t(item_id, data) ON CONFLICT (item_id) DO UPDATE SET data = EXCLUDED.data"
                " WHERE substring(hashmatch.verification.data from 1 for 4)"
                " <> substring(EXCLUDED.data from 1 for 4)", tuple(map(list, zip(*upgrades))))
        self._append_changes(db, new_ids, "add", now)
        added = len(new_ids)
        summary = {"added": added, "duplicates": len(outcomes) - added, **(detail or {})}
        _append_audit(db, now, action, summary)
        return outcomes

    def remove_items(self, item_ids, *, detail=None) -> int:
        requested = _ids(item_ids)
        if not requested:
            return 0

        def body(db):
            now = db.execute("SELECT now()").fetchone()[0]
            # READ COMMITTED re-checks "removed_at IS NULL" after waiting for a concurrent
            # remover, so each item gets exactly one 'remove' change.
            live = sorted(row[0] for row in db.execute(
                "UPDATE hashmatch.items SET removed_at = %s"
                " WHERE id = ANY(%s::bigint[]) AND removed_at IS NULL RETURNING id",
                (now, requested)).fetchall())
            self._append_changes(db, live, "remove", now)
            summary = {"requested": requested, "removed": live, **(detail or {})}
            _append_audit(db, now, "remove", summary)
            return len(live)

        return self._write(body)

    @staticmethod
    def _append_changes(db, item_ids: list[int], op: str, now) -> None:
        """Append change rows in seq order with the others: see the module docstring."""
        if not item_ids:
            return
        db.execute("LOCK TABLE hashmatch.changes IN EXCLUSIVE MODE")
        db.execute(
            "INSERT INTO hashmatch.changes (item_id, op, at)"
            " SELECT id, %s, %s FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(id, n) ORDER BY n",
            (op, now, item_ids))

    def audit(self, action: str, detail: dict | None = None) -> None:
        _check_text("audit", "action", action)
        self._write(lambda db: _append_audit(db, None, action, detail or {}))

    # -- reads --------------------------------------------------------------------------
    def get_verification(self, item_ids) -> dict[int, bytes]:
        wanted = _ids(item_ids)
        if not wanted:
            return {}
        with self._read(single=True) as db:
            rows = db.execute(
                "SELECT item_id, data FROM hashmatch.verification"
                " WHERE item_id = ANY(%s::bigint[])", (wanted,)).fetchall()
        return {int(item_id): bytes(data) for item_id, data in rows}

    def verifiable_items(self, item_ids) -> set[int]:
        wanted = _ids(item_ids)
        if not wanted:
            return set()
        with self._read(single=True) as db:
            rows = db.execute(
                "SELECT item_id FROM hashmatch.verification"
                " WHERE item_id = ANY(%s::bigint[]) AND substring(data from 1 for 4) = %s",
                (wanted, VERIFICATION_MAGIC)).fetchall()
        return {int(item_id) for item_id, in rows}

    def get_items(self, item_ids) -> dict[int, Item]:
        wanted = _ids(item_ids)
        if not wanted:
            return {}
        with self._read(single=True) as db:
            rows = db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM hashmatch.items WHERE id = ANY(%s::bigint[])",
                (wanted,)).fetchall()
        items = (_item(row, self.path) for row in rows)
        return {item.id: item for item in items}

    def find_by_sha256(self, sha256: str) -> Item | None:
        if "\x00" in sha256:
            return None
        with self._read(single=True) as db:
            row = db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM hashmatch.items"
                " WHERE sha256 = %s AND removed_at IS NULL", (sha256.lower(),)).fetchone()
        return None if row is None else _item(row, self.path)

    def load_codes(self, algorithm: str, nbits: int, item_ids=None) -> Codes:
        with self._read() as db:
            seq = _last_seq(db)
            if item_ids is None:
                rows = _fetch_codes(db, _LOAD_CODES, (algorithm, int(nbits)))
            else:
                rows = _fetch_codes(db, _LOAD_CODES_OF_ITEMS,
                                    (_ids(item_ids), algorithm, int(nbits)))
        return codes_from_rows(self.path, algorithm, int(nbits), seq, rows)

    def load_codes_for_items(self, item_ids) -> dict[tuple[str, int], Codes]:
        wanted = _ids(item_ids)
        if not wanted:
            return {}
        with self.snapshot(), self._read() as db:
            keys = db.execute(
                "SELECT DISTINCT algorithm, nbits FROM hashmatch.fingerprints"
                " WHERE item_id = ANY(%s::bigint[]) ORDER BY 1, 2", (wanted,)).fetchall()
            result = {}
            for algorithm, nbits in keys:
                codes = self.load_codes(algorithm, nbits, wanted)
                if len(codes):
                    result[(algorithm, nbits)] = codes
        return result

    def algorithms(self) -> list[tuple[str, int]]:
        with self._read(single=True) as db:
            rows = db.execute(
                "SELECT DISTINCT f.algorithm, f.nbits FROM hashmatch.fingerprints f"
                " JOIN hashmatch.items i ON i.id = f.item_id WHERE i.removed_at IS NULL"
                " ORDER BY 1, 2").fetchall()
        for algorithm, nbits in rows:  # a row written around hashmatch must not size arrays
            check_kind(self.path, algorithm, nbits)
        return [(algorithm, nbits) for algorithm, nbits in rows]

    def count_items(self) -> int:
        with self._read(single=True) as db:
            return db.execute(
                "SELECT COUNT(*) FROM hashmatch.items WHERE removed_at IS NULL").fetchone()[0]

    def last_change_seq(self) -> int:
        with self._read(single=True) as db:
            return _last_seq(db)

    def changes_since(self, seq: int, limit: int | None = None) -> list[Change]:
        with self._read(single=True) as db:
            rows = db.execute(
                "SELECT seq, item_id, op FROM hashmatch.changes WHERE seq > %s ORDER BY seq"
                " LIMIT %s", (int(seq), None if limit is None else int(limit))).fetchall()
        return [Change(*row) for row in rows]

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        with self._read(single=True) as db:
            rows = db.execute(
                "SELECT id, at, actor, action, detail FROM hashmatch.audit"
                " ORDER BY id DESC LIMIT %s", (int(limit),)).fetchall()
        return [AuditEntry(i, _iso(at), actor, action, detail)
                for i, at, actor, action, detail in rows]

    def stats(self) -> dict:
        # Verifiable: verification data in the format this version reads.
        with self._read() as db:
            live, removed = db.execute(
                "SELECT COUNT(*) FILTER (WHERE removed_at IS NULL),"
                " COUNT(*) FILTER (WHERE removed_at IS NOT NULL) FROM hashmatch.items"
            ).fetchone()
            per_algorithm = db.execute(
                "SELECT f.algorithm, f.nbits, COUNT(*) FROM hashmatch.fingerprints f"
                " JOIN hashmatch.items i ON i.id = f.item_id WHERE i.removed_at IS NULL"
                " GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
            seq = _last_seq(db)
            db_bytes = db.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind = 'r'", (SCHEMA,)).fetchone()[0]
            verifiable = db.execute(
                "SELECT COUNT(*) FROM hashmatch.verification v JOIN hashmatch.items i"
                " ON i.id = v.item_id WHERE i.removed_at IS NULL"
                " AND substring(v.data from 1 for 4) = %s", (VERIFICATION_MAGIC,)).fetchone()[0]
        stats = stats_summary(self, SCHEMA_VERSION, live, removed, per_algorithm, seq, db_bytes)
        stats["verifiable_items"] = int(verifiable)
        return stats

    def integrity_check(self) -> list[str]:
        problems = []
        with self._read() as db:
            for description, query in _INVARIANTS:
                count = db.execute(query).fetchone()[0]
                if count:
                    problems.append(f"{count} {description}")
            meta = dict(db.execute("SELECT key, value FROM hashmatch.meta").fetchall())
            problems += [f"meta has no {key}" for key in ("schema_version", "store_uuid")
                         if key not in meta]
            triggers = {row[0] for row in db.execute(
                "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND t.tgenabled <> 'D'", (SCHEMA,)).fetchall()}
            problems += [f"append-only trigger {name} is missing or disabled"
                         for name in ("audit_append_only", "changes_append_only",
                                      "audit_no_truncate", "changes_no_truncate")
                         if name not in triggers]
        return problems


    # -- curation (labels, sources, file times; appended: CLI 'label', 'list', re-index) ----
    def relabel_items(self, item_ids, add=(), remove=(), source=None, *,
                      action: str = "label", detail: dict | None = None) -> dict[int, Item]:
        """As :meth:`SQLiteStore.relabel_items`: labels/sources of live items, audited."""
        from ..curation import check_labels, relabelled

        add, remove = check_labels("relabel", add), check_labels("relabel", remove)
        for value in [*add, *remove, source]:
            _check_text("relabel", "label or source", value)
        _check_text("audit", "action", action)
        requested = _ids(item_ids)

        def body(db):
            rows = db.execute(
                "SELECT id, labels, source, meta FROM hashmatch.items"
                " WHERE id = ANY(%s::bigint[]) AND removed_at IS NULL ORDER BY id FOR UPDATE",
                (requested,)).fetchall()
            changed = []
            for item_id, labels, old_source, meta in rows:
                labels, new_source, meta, differs = relabelled(labels, old_source, meta, add,
                                                               remove, source)
                if differs:
                    db.execute(
                        "UPDATE hashmatch.items SET labels = %s::json, source = %s,"
                        " meta = %s::json WHERE id = %s",
                        (json.dumps(labels, ensure_ascii=False), new_source,
                         json.dumps(meta, ensure_ascii=False), item_id))
                    changed.append(item_id)
            if changed:
                _append_audit(db, None, action, {
                    "items": changed, "add_labels": add, "remove_labels": remove,
                    "source": source, **(detail or {})})
            return [row[0] for row in rows]

        live = self._write(body) if requested else []
        return self.get_items(live)

    def set_file_times(self, times: dict) -> None:
        """As :meth:`SQLiteStore.set_file_times`: ``meta.mtime_ns`` per file item."""
        if not times:
            return

        def body(db):
            for item_id, mtime_ns in times.items():
                row = db.execute("SELECT meta FROM hashmatch.items WHERE id = %s FOR UPDATE",
                                 (int(item_id),)).fetchone()
                if row is None:
                    continue
                meta = dict(row[0])
                meta["mtime_ns"] = int(mtime_ns)
                db.execute("UPDATE hashmatch.items SET meta = %s::json WHERE id = %s",
                           (json.dumps(meta, ensure_ascii=False), int(item_id)))

        self._write(body)

    def find_by_paths(self, paths) -> dict[str, Item]:
        """Live file items by path (the newest one where several share a path)."""
        wanted = sorted({p for p in paths if p is not None and "\x00" not in p})
        if not wanted:
            return {}
        with self._read(single=True) as db:
            rows = db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM hashmatch.items WHERE path = ANY(%s::text[])"
                " AND removed_at IS NULL ORDER BY id", (wanted,)).fetchall()
        return {row[1]: _item(row) for row in rows}

    def list_items(self, labels=(), source: str | None = None) -> list[Item]:
        """As :meth:`SQLiteStore.list_items`."""
        labels = list(labels or ())
        with self._read(single=True) as db:
            rows = db.execute(f"SELECT {_ITEM_COLUMNS} FROM hashmatch.items"
                              " WHERE removed_at IS NULL ORDER BY id").fetchall()
        return items_matching([_item(row) for row in rows], labels, source)

    # -- key/value settings (see Store.get_meta_value) ------------------------------------
    def get_meta_value(self, key: str) -> str | None:
        if not isinstance(key, str) or "\x00" in key:
            return None
        with self._read(single=True) as db:
            row = db.execute("SELECT value FROM hashmatch.meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta_value(self, key: str, value: str, *, action=None, detail=None) -> None:
        check_meta_key(key, value)

        def body(db):
            db.execute("INSERT INTO hashmatch.meta (key, value) VALUES (%s, %s)"
                       " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (key, value))
            if action:
                _append_audit(db, None, action, detail or {})

        self._write(body)

    def delete_meta_value(self, key: str, *, action=None, detail=None) -> bool:
        check_meta_key(key)

        def body(db):
            existed = db.execute("DELETE FROM hashmatch.meta WHERE key = %s", (key,)).rowcount > 0
            if action:
                _append_audit(db, None, action, {**(detail or {}), "existed": existed})
            return existed

        return self._write(body)

    def list_meta_prefix(self, prefix: str) -> dict[str, str]:
        if "\x00" in prefix:
            return {}
        with self._read(single=True) as db:
            rows = db.execute(
                "SELECT key, value FROM hashmatch.meta WHERE left(key, length(%s)) = %s"
                " ORDER BY key", (prefix, prefix)).fetchall()
        return dict(rows)

# Each query counts violations of one invariant the write paths maintain. Foreign keys are
# checked explicitly too: they can be bypassed (session_replication_role = replica).
_INVARIANTS = [
    ("fingerprints row(s) refer to a missing items row",
     "SELECT COUNT(*) FROM hashmatch.fingerprints f"
     " WHERE NOT EXISTS (SELECT 1 FROM hashmatch.items i WHERE i.id = f.item_id)"),
    ("changes row(s) refer to a missing items row",
     "SELECT COUNT(*) FROM hashmatch.changes c"
     " WHERE NOT EXISTS (SELECT 1 FROM hashmatch.items i WHERE i.id = c.item_id)"),
    ("fingerprints whose code length does not match nbits",
     "SELECT COUNT(*) FROM hashmatch.fingerprints WHERE length(code) * 8 != nbits"),
    ("items without exactly one 'add' change",
     "SELECT COUNT(*) FROM hashmatch.items i LEFT JOIN (SELECT item_id, COUNT(*) AS n"
     " FROM hashmatch.changes WHERE op = 'add' GROUP BY item_id) c ON c.item_id = i.id"
     " WHERE COALESCE(c.n, 0) != 1"),
    ("items whose removed_at disagrees with the 'remove' changes",
     "SELECT COUNT(*) FROM hashmatch.items i LEFT JOIN (SELECT item_id, COUNT(*) AS n"
     " FROM hashmatch.changes WHERE op = 'remove' GROUP BY item_id) c ON c.item_id = i.id"
     " WHERE COALESCE(c.n, 0) != (CASE WHEN i.removed_at IS NULL THEN 0 ELSE 1 END)"),
    ("live items sharing a sha256",
     "SELECT COUNT(*) FROM (SELECT sha256 FROM hashmatch.items WHERE removed_at IS NULL"
     " AND sha256 IS NOT NULL GROUP BY sha256 HAVING COUNT(*) > 1) d"),
]


def _race():
    from psycopg import errors

    return errors.SerializationFailure("a concurrent writer changed the rows this write read")


def _prepare_database(conn, path: str, create: bool) -> str:
    """Check (create, migrate) the schema; returns the store uuid."""
    version = _schema_version(conn, path)
    if version == 0 and not create:
        raise StoreError(f"{path}: no hashmatch store in this database (use create=True)")
    if version < SCHEMA_VERSION:
        _migrate(conn, path)
    meta = dict(conn.execute("SELECT key, value FROM hashmatch.meta").fetchall())
    if meta.get("format") != "hashmatch" or "store_uuid" not in meta:
        raise StoreError(f"{path}: not a hashmatch store (meta table incomplete)")
    version = int(meta.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {version} is newer than this hashmatch supports "
            f"({SCHEMA_VERSION}); upgrade hashmatch to open it")
    return meta["store_uuid"]


def _schema_version(conn, path: str) -> int:
    """0 = no hashmatch schema yet. Raises if a 'hashmatch' schema exists but is not ours."""
    exists = conn.execute(
        "SELECT to_regclass('hashmatch.meta') IS NOT NULL,"
        " EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (SCHEMA,)).fetchone()
    has_meta, has_schema = exists
    if not has_schema:
        return 0
    if not has_meta:
        tables = conn.execute(
            "SELECT COUNT(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s", (SCHEMA,)).fetchone()[0]
        if tables:
            raise StoreError(f"{path}: has a 'hashmatch' schema that is not a hashmatch store "
                             "(no meta table)")
        return 0
    meta = dict(conn.execute("SELECT key, value FROM hashmatch.meta").fetchall())
    if meta.get("format") != "hashmatch":
        raise StoreError(f"{path}: has a 'hashmatch' schema that is not a hashmatch store")
    try:
        return int(meta.get("schema_version", "0"))
    except ValueError:
        raise StoreError(f"{path}: unreadable schema version {meta.get('schema_version')!r}")


def _migrate(conn, path: str) -> None:
    """Create or upgrade the schema to SCHEMA_VERSION in one transaction, under a lock."""
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        version = _schema_version(conn, path)  # another process may have migrated meanwhile
        if version == 0:
            conn.execute("CREATE SCHEMA IF NOT EXISTS hashmatch")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                conn.execute(statement)
            if target == 1:
                conn.execute(
                    "INSERT INTO hashmatch.meta (key, value) VALUES (%s, %s), (%s, %s),"
                    " (%s, %s), (%s, %s)",
                    ("format", "hashmatch", "schema_version", "1",
                     "store_uuid", str(uuid_module.uuid4()),
                     "created_at", _iso(datetime.now(timezone.utc))))
            else:
                conn.execute("UPDATE hashmatch.meta SET value = %s WHERE key = 'schema_version'",
                             (str(target),))
        # One audit row: "create" for a new store (at the current version), "migrate" for an
        # upgrade of an older one.
        if version < SCHEMA_VERSION:
            action = "create" if version == 0 else "migrate"
            detail = {"schema_version": SCHEMA_VERSION} if version == 0 else \
                {"from": version, "to": SCHEMA_VERSION}
            with conn.cursor() as cur:
                _append_audit(cur, None, action, detail)
        conn.execute("COMMIT")
    except BaseException:
        if not conn.broken and conn.info.transaction_status != 0:
            conn.execute("ROLLBACK")
        raise


def _append_audit(db, at, action: str, detail: dict) -> None:
    db.execute(
        "INSERT INTO hashmatch.audit (at, actor, action, detail)"
        " VALUES (COALESCE(%s, now()), %s, %s, %s::json)",
        (at, audit_actor(), action, json.dumps(detail, ensure_ascii=False, default=str)))


def _last_seq(db) -> int:
    return db.execute("SELECT COALESCE(MAX(seq), 0) FROM hashmatch.changes").fetchone()[0]


def _fetch_codes(db, query: str, params) -> list:
    """Rows of (item_id, fingerprint_id, region, variant, quality, code as bytes)."""
    rows = db.execute(query, params, binary=True).fetchall()
    # bytea arrives as bytes in binary mode (memoryview in some psycopg versions).
    if rows and not isinstance(rows[0][5], bytes):
        rows = [(*row[:5], bytes(row[5])) for row in rows]
    return rows


def _item(row, where: str = "store") -> Item:
    item_id, path, sha256, size, added_at, labels, source, meta, removed_at = row
    # jsonb arrives decoded; its shape is checked like SQLite's text (a row written with
    # plain SQL could hold an object for labels).
    return checked_item(where, item_id, path, sha256, size, _iso(added_at), labels, source,
                        meta, _iso(removed_at))


def _message(error) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())
