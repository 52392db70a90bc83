"""A real, throw-away PostgreSQL server for the tests (and the scale benchmark).

``PgServer.start()`` runs ``initdb`` + ``pg_ctl start`` on a data directory in a temporary
folder, listening on a Unix socket in that folder only (no TCP port to collide with), and
``stop()`` shuts it down and deletes everything. When we are root, the server binaries refuse
to run, so they run as the ``postgres`` user via ``runuser`` (the folder is chowned to it).

The test session shares one server (``shared_server()``, stopped at exit); each test gets a
fresh database from ``new_database()``. If the server cannot start, the tests that need it
FAIL with the reason: a missing server must never look like a passing suite.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import uuid

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class PgServerError(RuntimeError):
    pass


def find_bindir() -> str:
    explicit = os.environ.get("HASHMATCH_PG_BINDIR")
    if explicit:
        if os.path.exists(os.path.join(explicit, "initdb")):
            return explicit
        raise PgServerError(f"HASHMATCH_PG_BINDIR={explicit} has no initdb")
    candidates = sorted(glob.glob(PG_BIN_GLOB), reverse=True)
    for bindir in candidates:
        if bindir and os.path.exists(os.path.join(bindir, "initdb")):
            return bindir
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    raise PgServerError(
        "PostgreSQL server binaries not found (looked for initdb in "
        f"{PG_BIN_GLOB} and on PATH): run `make system-deps` (scripts/install-system-deps.sh) "
        "or `apt-get install postgresql`, or set HASHMATCH_PG_BINDIR"
    )


class PgServer:
    """One PostgreSQL server in a temporary folder. ``url(dbname)`` gives a connection URL."""

    def __init__(self, durable: bool = False):
        self.bindir = find_bindir()
        self.durable = durable  # False: fsync off (tests); True: the production default
        self.root: str | None = None
        self.datadir: str | None = None
        self.sockdir: str | None = None
        self.user = "postgres"
        self._run_as: list[str] = []
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "PgServer":
        # A short path: a Unix socket path must fit in 107 bytes.
        self.root = tempfile.mkdtemp(prefix="hm-pg-")
        self.datadir = os.path.join(self.root, "data")
        self.sockdir = self.root
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PgServerError("running as root and runuser is missing: cannot start postgres")
            os.chown(self.root, _uid_of("postgres"), _gid_of("postgres"))
            self._run_as = [runuser, "-u", "postgres", "--"]
        else:
            import getpass

            self.user = getpass.getuser()
        self._run(
            [os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", self.user,
             "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"]
            + ([] if self.durable else ["--no-sync"]),
            "initdb",
        )
        options = [
            "-c", "listen_addresses=''",  # Unix socket only
            "-c", f"unix_socket_directories={self.sockdir}",
            "-c", "max_connections=200",
            "-c", "shared_buffers=128MB",
        ]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]
        log = os.path.join(self.root, "server.log")
        self._run(
            [os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l", log, "-w",
             "-t", "60", "-o", " ".join(_quote(o) for o in options), "start"],
            "pg_ctl start", log=log,
        )
        self._started = True
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            if self._started:
                self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", "fast",
                           "-w", "stop"], "pg_ctl stop")
        finally:
            self._started = False
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- databases ----------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{dbname}?host={self.sockdir}"

    def new_database(self, prefix: str = "t") -> str:
        """CREATE DATABASE with a fresh name; returns its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a name we made: [a-z0-9_] only
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- helpers ------------------------------------------------------------------------------
    def _run(self, argv: list[str], what: str, log: str | None = None) -> None:
        proc = subprocess.run(self._run_as + argv, capture_output=True, text=True, timeout=120,
                              cwd=self.root)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()
            if log and os.path.exists(log):
                with open(log, errors="replace") as f:
                    detail += "\n--- server log ---\n" + f.read()[-3000:]
            raise PgServerError(f"{what} failed (exit {proc.returncode}): {detail}")


def _quote(option: str) -> str:
    return option if " " not in option else "'" + option + "'"


def _uid_of(user: str) -> int:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise PgServerError(f"no '{user}' system user to run the server as (install postgresql)")


def _gid_of(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


# -- one server per test session ----------------------------------------------------------------
_shared: PgServer | None = None
_shared_error: str | None = None
_lock = threading.Lock()


def shared_server() -> PgServer:
    """The session's server, started on first use and stopped when the process exits.

    Raises PgServerError (with the reason) if it cannot start; the error is remembered so
    later tests fail fast with the same message instead of retrying.
    """
    global _shared, _shared_error
    with _lock:
        if _shared is not None:
            return _shared
        if _shared_error is not None:
            raise PgServerError(_shared_error)
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _shared_error = ("psycopg is not installed: pip install -e '.[test]' "
                             "(or '.[postgres]')")
            raise PgServerError(_shared_error) from None
        server = PgServer()
        try:
            server.start()
        except Exception as e:
            server.stop()
            _shared_error = f"could not start a PostgreSQL server for the tests: {e}"
            raise PgServerError(_shared_error) from e
        _shared = server
        atexit.register(stop_shared_server)
        return server


def _pg_fixture():
    import pytest

    @pytest.fixture(scope="session")
    def pg():
        """The session's PostgreSQL server; FAILS (never skips) with the reason if it can't start."""
        try:
            server = shared_server()
        except PgServerError as e:
            pytest.fail(str(e), pytrace=False)
        yield server
        stop_shared_server()  # idempotent: several test modules import this fixture

    return pg


def stop_shared_server() -> None:
    global _shared
    with _lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


pg = _pg_fixture()  # `from pg_server import pg` in a test module provides the fixture
