"""Run a per-file job over many inputs in worker processes, results in input order.

Workers never outlive the process that started them: on Linux each asks the kernel for
SIGKILL when its parent (the forkserver, which itself exits when this process dies) goes
away (``prctl(PR_SET_PDEATHSIG)``), and everywhere a watchdog thread checks once a second
that the starting process still exists. Workers ignore Ctrl-C (the terminal sends it to
every process of the job): this process handles it, cancels the queued work and stops them.

Workers do not run the user's main script. Python's forkserver and spawn start methods
normally import ``__main__`` in every worker, so a plain script (no
``if __name__ == "__main__":``) that calls ``hash_files(paths, workers=4)`` would start
itself again and fail ("... before the current process has finished its bootstrapping
phase"). The jobs run here are hashmatch's own (importable) callables, so the main module
is hidden while the workers start.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence

PR_SET_PDEATHSIG = 1
WATCHDOG_INTERVAL = 1.0  # seconds between the watchdog's looks at the parent


def default_workers() -> int:
    """All cores the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def ordered_map(job: Callable, items: Sequence, workers: int | None = None,
                chunksize: int | None = None) -> Iterator:
    """``map(job, items)`` over ``workers`` processes (None = all cores), streamed in order.

    One worker, or a handful of items, runs in this process: starting a pool costs more
    than it saves. If the caller stops early (an exception such as KeyboardInterrupt, or
    closing the generator), the queued work is cancelled and the workers are stopped.
    """
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1 or len(items) < 4:
        yield from map(job, items)
        return
    if chunksize is None:
        chunksize = max(1, min(32, len(items) // (workers * 8)))
    # forkserver: forking a process that holds threads (numpy/faiss OpenMP pools) can hang.
    context = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=_worker_init, initargs=(os.getpid(),))
    try:
        with _main_hidden_from_workers(job):
            results = pool.map(job, items, chunksize=chunksize)  # starts the workers
        yield from results
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what is queued and end the workers now (not after the queue drains)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(2)


@contextlib.contextmanager
def _main_hidden_from_workers(job):
    """While workers start: no ``__main__`` for them to import (see the module docstring)."""
    main = sys.modules.get("__main__")
    job_module = getattr(job, "__module__", None) or type(job).__module__
    if main is None or job_module == "__main__":
        yield
        return
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__")
             if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _worker_init(parent_pid: int) -> None:
    """Runs first in every worker: leave Ctrl-C to the parent, die with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)


def die_with_parent(parent_pid: int) -> None:
    """Make this process exit when its parent or ``parent_pid`` is gone."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    parent = os.getppid()
    if parent == 1 or not _alive(parent_pid):  # the parent died before prctl took effect
        os._exit(1)

    def watch():
        while True:
            time.sleep(WATCHDOG_INTERVAL)
            if os.getppid() != parent or not _alive(parent_pid):
                os._exit(1)

    threading.Thread(target=watch, name="hashmatch-parent-watchdog", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: a killed parent not yet reaped is a zombie, as good as gone
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return True
