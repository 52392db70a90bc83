"""``hashmatch serve``: the matching service for platforms.

An ASGI application (Starlette, served by uvicorn) over the same stores as the library:

- HMA-compatible endpoints (``/h/...``, ``/m/...``, ``/c/...``): the paths, parameters and
  JSON shapes of Meta's hasher-matcher-actioner, so an HMA client works unchanged;
- hashmatch's own versioned API under ``/v1/`` (the robust image query, batch hash lookups,
  items);
- ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus), ``/openapi.json`` and a web page for
  investigators at ``/ui``.

Every worker process keeps its own in-memory :class:`hashmatch.Index` and syncs it
incrementally from the store; banks and API tokens live in the store's meta table.
"""


def __getattr__(name):
    # Lazy: `hashmatch token ...` uses .settings without the serve extra installed.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)


__all__ = ["create_app"]
