"""Bulk hashing on a Dask cluster (``pip install 'hashmatch[dask]'``).

The same per-file work as the local process pool (:func:`hashmatch.hashing.fingerprint_file`),
run as Dask tasks of a batch of files each. Results stream back **in input order** while the
cluster works ahead: at most ``max_in_flight`` batches are submitted at once, so memory stays
bounded for tens of millions of files and the store receives committed batches steadily.

Every file gets a result: a file that cannot be read gets its reason (as locally), and if a
whole task is lost (a worker died more often than Dask's retry allowance, or the scheduler
went away) each file of that batch gets a ``dask task failed (...)`` error instead of the run
aborting, so the caller can retry just those files.

Workers must be able to read the files at the same paths as the submitting process (a shared
filesystem, as usual for a cluster); relative paths are made absolute before submission and
reported back as given.

Use :func:`connect` for a client: ``"local"`` starts a ``LocalCluster`` on this machine (one
single-threaded worker process per core), any other string is a scheduler address
(``tcp://scheduler:8786``), and an existing ``distributed.Client`` is used as is.
"""
from __future__ import annotations

import itertools
import os
import uuid
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from .errors import HashmatchError
from .fingerprint import FileFingerprints

DEFAULT_MAX_BATCH = 64  # files per task at most: keeps results flowing and memory small


def _distributed():
    try:
        import distributed
    except ImportError:
        raise HashmatchError(
            "Dask hashing needs dask.distributed: pip install 'hashmatch[dask]'") from None
    return distributed


@contextmanager
def connect(address, n_workers: int | None = None):
    """A ``distributed.Client`` for ``address``: ``"local"``, a scheduler address, or a Client.

    Clients (and a LocalCluster) made here are closed on exit; a Client passed in is not.
    """
    distributed = _distributed()
    if isinstance(address, distributed.Client):
        yield address
        return
    if not isinstance(address, str) or not address:
        raise HashmatchError(f"--dask: expected a scheduler address or 'local', got {address!r}")
    if address == "local":
        from .parallel import default_workers

        cluster = distributed.LocalCluster(
            n_workers=n_workers or default_workers(), threads_per_worker=1, processes=True,
            dashboard_address=None)
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(address, timeout=30)
    except (OSError, TimeoutError) as e:
        raise HashmatchError(f"cannot reach the Dask scheduler at {address} ({e})") from None
    try:
        yield client
    finally:
        client.close()


def _run_batch(job: Callable, paths: Sequence) -> list:
    """The task: one batch of files through the per-file job (which never raises)."""
    return [job(path) for path in paths]


def dask_map_files(job: Callable, paths: Sequence, client, batch_size: int | None = None,
                   max_in_flight: int | None = None) -> Iterator:
    """``map(job, paths)`` on a Dask cluster, yielded in input order as results arrive.

    ``client``: a ``distributed.Client``, a scheduler address or ``"local"`` (see
    :func:`connect`). ``batch_size``: files per task (default: enough tasks to keep every
    worker thread busy, at most DEFAULT_MAX_BATCH). ``max_in_flight``: batches submitted
    ahead of the one being yielded (default: 4 per worker thread).
    """
    paths = list(paths)
    if not paths:
        return
    with connect(client) as dask_client:
        threads = max(1, sum(dask_client.nthreads().values()))
        if batch_size is None:
            batch_size = max(1, min(DEFAULT_MAX_BATCH, -(-len(paths) // (threads * 4))))
        if max_in_flight is None:
            max_in_flight = 4 * threads
        run_id = uuid.uuid4().hex[:8]
        batches = (paths[i:i + batch_size] for i in range(0, len(paths), batch_size))
        pending: deque = deque()
        counter = itertools.count()

        def submit_next() -> bool:
            batch = next(batches, None)
            if batch is None:
                return False
            sent = [os.path.abspath(p) if isinstance(p, (str, os.PathLike)) else p
                    for p in batch]
            future = dask_client.submit(_run_batch, job, sent, pure=False,
                                        key=f"hashmatch-hash-{run_id}-{next(counter)}")
            pending.append((batch, future))
            return True

        try:
            while len(pending) < max_in_flight and submit_next():
                pass
            while pending:
                batch, future = pending.popleft()
                try:
                    results = future.result()
                except Exception as e:  # noqa: BLE001 - a lost task must not stop the run
                    reason = f"dask task failed ({type(e).__name__}: {e})"
                    results = [FileFingerprints(path=_name(p), error=reason) for p in batch]
                finally:
                    future.release()
                submit_next()
                for given, result in zip(batch, results):
                    if isinstance(given, (str, os.PathLike)):
                        result.path = os.fspath(given)  # as the caller named it
                    yield result
        finally:  # the caller stopped early (or failed): don't leave work on the cluster
            if pending:
                dask_client.cancel([future for _, future in pending])


def _name(path) -> str:
    from . import decode

    return os.fspath(path) if isinstance(path, (str, os.PathLike)) else decode.describe(path)


__all__ = ["connect", "dask_map_files", "DEFAULT_MAX_BATCH"]
