"""``hashmatch serve`` and ``hashmatch token ...``: the matching service's commands.

Registered on the main group at the end of :mod:`hashmatch.cli`; kept here so the service's
options and its dependencies (``pip install 'hashmatch[serve]'``) stay out of the rest of the
command line.
"""
from __future__ import annotations

import os
import sys
import tempfile

import click

EXIT_ERROR = 2


def _fail(message: str) -> None:
    click.echo(f"hashmatch: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _db(db: str | None) -> str:
    from .index import default_db_path

    return db or default_db_path()


def _open_store(db: str | None, create: bool):
    from .errors import HashmatchError
    from .store import open_store

    try:
        return open_store(_db(db), create=create)
    except HashmatchError as exc:
        _fail(str(exc))


def _db_option(f):
    return click.option(
        "--db", "db", default=None, metavar="PATH|URL",
        help="The database: a file, or a postgresql:// URL. Default: $HASHMATCH_DB, else "
             "hashmatch.hmdb in the current folder.")(f)


@click.command()
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback by default; put TLS in front for more).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes; each keeps its own in-memory index, synced from the store.")
@click.option("--sync-interval", default=0.5, show_default=True, type=click.FloatRange(0.01),
              help="Seconds between a worker's syncs with the store (adds/removes by others).")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=click.FloatRange(0.01),
              help="Largest accepted request body.")
@click.option("--max-pixels", default=50_000_000, show_default=True, type=click.IntRange(1),
              help="Largest accepted image (width x height), checked before decoding.")
@click.option("--request-timeout", default=30.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds after which a request is answered 503.")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log every request line. Off by default: request lines carry hashes.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(db, host, port, workers, sync_interval, max_upload_mb, max_pixels, request_timeout,
          access_log, log_level):
    """Run the matching service: HMA-compatible endpoints (/h, /m, /c), hashmatch's own API
    (/v1), /healthz, /readyz, /metrics, /openapi.json and a web page at /ui.

    \b
    Every call but /healthz, /readyz and /status needs a token:
      hashmatch token create NAME --role match|curate
    """
    try:
        import uvicorn
    except ImportError:
        _fail("the service needs its extra: pip install 'hashmatch[serve]'")
    location = _db(db)
    _open_store(location, create=True).close()  # fail now, with the reason, not in a worker
    # Metrics of every worker in one /metrics: prometheus_client's multiprocess mode, which
    # must be set before hashmatch.serve.metrics is first imported.
    metrics_dir = tempfile.mkdtemp(prefix="hashmatch-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from .serve.app import ENV_PREFIX

    env = {"DB": location, "SYNC_INTERVAL": sync_interval,
           "MAX_UPLOAD_BYTES": int(max_upload_mb * 1024 * 1024), "MAX_PIXELS": max_pixels,
           "REQUEST_TIMEOUT": request_timeout, "CREATE": "1"}
    for key, value in env.items():
        os.environ[ENV_PREFIX + key] = str(value)
    click.echo(f"hashmatch serve: {len(_tokens_or_none(location))} token(s); listening on "
               f"http://{host}:{port} with {workers} worker(s)", err=True)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again: end
    # with status 0 then (a stop asked for is not a failure).
    import signal

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: sys.exit(0))
    try:
        uvicorn.run("hashmatch.serve.app:app_from_env", factory=True, host=host, port=port,
                    workers=workers, access_log=access_log, log_level=log_level,
                    timeout_graceful_shutdown=10, server_header=False)
    finally:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)


def _tokens_or_none(location):
    from .serve.settings import list_tokens

    store = _open_store(location, create=False)
    try:
        return list_tokens(store)
    finally:
        store.close()


@click.group()
def token():
    """Manage the service's API tokens (stored hashed in the database)."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["match", "curate"]), required=True,
              help="match: read-only lookups; curate: also add and remove (banks, items).")
@_db_option
def token_create(name, role, db):
    """Make a token NAME and print it (the only time it is shown)."""
    from .serve.settings import create_token

    store = _open_store(db, create=True)
    try:
        value = create_token(store, name, role)
    except ValueError as exc:
        _fail(str(exc))
    finally:
        store.close()
    click.echo(value)


@token.command("list")
@_db_option
def token_list(db):
    """List tokens: name, role, created (never the tokens themselves)."""
    from .serve.settings import list_tokens

    store = _open_store(db, create=False)
    try:
        for record in list_tokens(store):
            click.echo(f"{record['name']}\t{record['role']}\t{record['created_at']}")
    finally:
        store.close()


@token.command("revoke")
@click.argument("name")
@_db_option
def token_revoke(name, db):
    """Revoke token NAME (workers stop accepting it within a sync interval)."""
    from .serve.settings import revoke_token

    store = _open_store(db, create=False)
    try:
        if not revoke_token(store, name):
            _fail(f"no token named {name!r}")
    finally:
        store.close()
    click.echo(f"revoked {name}", err=True)


def register(group) -> None:
    group.add_command(serve)
    group.add_command(token)
