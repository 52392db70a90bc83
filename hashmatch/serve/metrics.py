"""Prometheus metrics (prometheus_client). With several uvicorn workers, ``hashmatch serve``
sets PROMETHEUS_MULTIPROC_DIR before they start, and /metrics aggregates every worker."""
from __future__ import annotations

import os
import time

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)

_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_GAUGE = {"multiprocess_mode": "max"} if _MULTIPROCESS else {}
_GAUGE_MIN = {"multiprocess_mode": "min"} if _MULTIPROCESS else {}

REQUESTS = Counter("hashmatch_http_requests_total", "HTTP requests answered",
                   ["route", "method", "status"])
LATENCY = Histogram("hashmatch_http_request_duration_seconds", "Time to answer a request",
                    ["route"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                                        0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0))
INDEX_FINGERPRINTS = Gauge("hashmatch_index_fingerprints",
                           "Fingerprints in a worker's in-memory index", ["algorithm"], **_GAUGE)
SYNC_LAG = Gauge("hashmatch_sync_lag_seconds",
                 "Seconds since a worker last synced with the store (worst worker)", **_GAUGE)
READY = Gauge("hashmatch_ready", "1 when the index is loaded (worst worker)", **_GAUGE_MIN)
STORE_UP = Gauge("hashmatch_store_up", "1 when the last sync reached the store (worst worker)",
                 **_GAUGE_MIN)


def update_gauges(service) -> None:
    for algorithm, size in service.in_memory_sizes().items():
        INDEX_FINGERPRINTS.labels(algorithm).set(size)
    last = service.last_sync_ok
    SYNC_LAG.set(time.time() - last if last else time.time() - service.started_at)
    READY.set(1 if service.ready else 0)
    STORE_UP.set(1 if service.store_ok else 0)


def exposition() -> tuple[bytes, str]:
    if _MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_dead(pid: int) -> None:
    if _MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
