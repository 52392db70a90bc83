"""Run a per-file job over many inputs in worker processes, results in input order."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence


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
    than it saves.
    """
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1 or len(items) < 4:
        yield from map(job, items)
        return
    if chunksize is None:
        chunksize = max(1, min(32, len(items) // (workers * 8)))
    # forkserver: forking a process that holds threads (numpy/faiss OpenMP pools) can hang.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(job, items, chunksize=chunksize)
