"""The ASGI application: :func:`create_app` (and :func:`app_from_env` for uvicorn workers)."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from ..store import StoreError
from . import hma, metrics, ui, v1
from .errors import ApiError
from .http import requires, service_of
from .openapi import openapi_document
from .service import ServeConfig, Service

log = logging.getLogger("hashmatch.serve")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
# Environment variables through which `hashmatch serve` configures its worker processes.
ENV_PREFIX = "HASHMATCH_SERVE_"


class _TooLarge(Exception):
    pass


class Guard:
    """Pure ASGI middleware around every request: body size limit, request timeout,
    security headers, metrics. Logs method, route and status only: never a query string,
    an image or a hash."""

    def __init__(self, app, service: Service, routes):
        self.app = app
        self.service = service
        self.routes = routes
        self._route_cache: dict[tuple[str, str], str] = {}
        # Which worker answered (operations, and the multi-worker tests).
        self.headers = SECURITY_HEADERS + [(b"x-hashmatch-worker", str(os.getpid()).encode())]

    def _route_of(self, scope) -> str:
        key = (scope["method"], scope["path"])
        found = self._route_cache.get(key)
        if found is None:
            found = "<unmatched>"
            for route in self.routes:
                match, _ = route.matches(scope)
                if match != Match.NONE:
                    found = route.path
                    if match == Match.FULL:
                        break
            if "{" not in found and len(self._route_cache) < 10_000:
                self._route_cache[key] = found
        return found

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        limit = self.service.config.max_upload_bytes + 64 * 1024  # multipart framing
        state = {"status": 500, "started": False}
        route = self._route_of(scope)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _send_json(send, 413, {"message": "request body too large (limit "
                                     f"{self.service.config.max_upload_bytes} bytes)"})
                    self._record(scope, route, 413, started)
                    return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                message = {**message, "headers": list(message.get("headers", []))
                           + self.headers}
            await send(message)

        try:
            # asyncio.timeout, not wait_for: no extra task per request.
            async with asyncio.timeout(self.service.config.request_timeout):
                await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not state["started"]:
                await _send_json(guarded_send, 413, {"message": "request body too large"})
        except asyncio.TimeoutError:
            if not state["started"]:
                await _send_json(guarded_send, 503, {"message": "request timed out"})
        except Exception:  # noqa: BLE001 - last resort: a JSON 500, never a traceback
            log.exception("unhandled error on %s %s", scope["method"], route)
            if not state["started"]:
                await _send_json(guarded_send, 500, {"message": "internal error"})
        self._record(scope, route, state["status"], started)

    @staticmethod
    def _record(scope, route, status, started):
        elapsed = time.perf_counter() - started
        metrics.REQUESTS.labels(route, scope["method"], str(status)).inc()
        metrics.LATENCY.labels(route).observe(elapsed)


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


# -- core routes -----------------------------------------------------------------------------
async def healthz(request: Request):
    return JSONResponse({"status": "ok"})


async def readyz(request: Request):
    service = service_of(request)
    if service.ready:
        return JSONResponse({"ready": True, "store_ok": service.store_ok})
    return JSONResponse({"ready": False, "reason": "index not loaded yet"
                         + (f" ({service.load_error})" if service.load_error else "")},
                        status_code=503)


async def metrics_endpoint(request: Request):
    metrics.update_gauges(service_of(request))
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


async def openapi(request: Request):
    return JSONResponse(openapi_document(request.app.routes))


# -- error handlers --------------------------------------------------------------------------
async def _api_error(request: Request, exc: ApiError):
    return JSONResponse({"message": exc.message}, status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: HTTPException):
    return JSONResponse({"message": exc.detail or "error"}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _store_error(request: Request, exc: StoreError):
    return JSONResponse({"message": "the store is unavailable; retry shortly"},
                        status_code=503, headers={"Retry-After": "1"})


def create_app(db: str | None = None, *, config: ServeConfig | None = None,
               **options) -> Starlette:
    """The service over the store at ``db`` (a file path or a postgresql:// URL).

    ``options`` are :class:`ServeConfig` fields (sync_interval, max_upload_bytes,
    max_pixels, request_timeout, max_batch, create). The index loads in the background
    when the app starts: /readyz answers 503 until it has."""
    if config is None:
        from ..index import default_db_path

        config = ServeConfig(db=db or default_db_path(), **options)
    service = Service(config)
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", requires("match")(metrics_endpoint), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *hma.ROUTES,
        *v1.ROUTES,
        *ui.ROUTES,
    ]

    @asynccontextmanager
    async def lifespan(app):
        service.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, service.stop)
            metrics.mark_dead(os.getpid())  # this worker's gauges leave /metrics with it
            log.info("index closed")

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ApiError: _api_error, HTTPException: _http_error,
                                        StoreError: _store_error})
    app.state.service = service
    app.add_middleware(_GuardFactory, service=service, routes=routes)
    return app


class _GuardFactory(Guard):
    def __init__(self, app, service, routes):
        super().__init__(app, service, routes)


def config_from_env() -> ServeConfig:
    env = os.environ
    config = ServeConfig(db=env[ENV_PREFIX + "DB"])
    for field, kind in (("sync_interval", float), ("max_upload_bytes", int),
                        ("max_pixels", int), ("request_timeout", float), ("max_batch", int)):
        value = env.get(ENV_PREFIX + field.upper())
        if value:
            setattr(config, field, kind(value))
    config.create = env.get(ENV_PREFIX + "CREATE", "1") == "1"
    return config


def app_from_env() -> Starlette:
    """uvicorn factory for worker processes: configuration from HASHMATCH_SERVE_* vars."""
    return create_app(config=config_from_env())
