"""What every route needs: auth, parsing of parameters and uploads, JSON answers."""
from __future__ import annotations

import functools
import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..store import StoreError
from .errors import ApiError, unavailable

_ROLE_RANK = {"match": 0, "curate": 1}
_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n", ""}


def service_of(request: Request):
    return request.app.state.service


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticate(request: Request, role: str, token: str | None = None) -> str:
    """The name of the token the request carries, if it grants ``role``; else 401/403."""
    service = service_of(request)
    if service.settings is None:
        raise unavailable("index not yet ready")
    token = token or bearer_token(request)
    if not token:
        raise ApiError(401, "missing token: send 'Authorization: Bearer <token>'",
                       {"WWW-Authenticate": "Bearer"})
    if len(token) > 200:
        raise ApiError(401, "invalid token", {"WWW-Authenticate": "Bearer"})
    found = service.settings.verify(token)
    if found is None:
        raise ApiError(401, "invalid token", {"WWW-Authenticate": "Bearer"})
    name, granted = found
    if _ROLE_RANK[granted] < _ROLE_RANK[role]:
        raise ApiError(403, f"token {name!r} has role {granted!r}; this call needs {role!r}")
    request.state.token_name = name
    return name


def requires(role: str):
    """Route decorator: authenticate for ``role`` before the handler runs."""
    def wrap(handler):
        @functools.wraps(handler)
        async def endpoint(request: Request):
            authenticate(request, role)
            return await handler(request)
        endpoint.required_role = role
        return endpoint
    return wrap


async def blocking(function, *args, **kwargs):
    """Run ``function`` in the thread pool; store failures become 503."""
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except StoreError:
        raise unavailable("the store is unavailable; retry shortly") from None


def flag(request: Request, name: str, default: bool = False) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ApiError(400, f"invalid boolean parameter {name!r} - prefer true/false")


def int_param(request: Request, name: str, default: int | None, low: int, high: int):
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not low <= number <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}")
    return number


def required_param(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if value is None or value == "":
        raise ApiError(400, f"{name} is required")
    return value


def banks_param(value: str | None) -> set[str] | None:
    return set(value.split(",")) if value else None


async def json_body(request: Request, kind=dict):
    body = await request.body()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(data, kind):
        expected = {"dict": "object", "list": "array"}.get(kind.__name__, kind.__name__)
        raise ApiError(400, f"the request body must be a JSON {expected}")
    return data


async def upload(request: Request, fields: tuple[str, ...] | None = None,
                 any_field: bool = False) -> tuple[bytes, str, dict]:
    """The one file of a multipart/form-data upload: (bytes, field name, other form fields).

    HMA names the file field after the content type (``photo``); ``fields`` lists the
    accepted names (``any_field``: whatever the name)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(400, "Missing multipart/form-data file upload")
    try:
        form = await request.form(max_files=2, max_fields=20)
    except ApiError:
        raise
    except Exception:  # noqa: BLE001 - malformed multipart bodies
        raise ApiError(400, "malformed multipart/form-data body") from None
    files = [(key, value) for key, value in form.multi_items() if hasattr(value, "read")]
    others = {key: value for key, value in form.multi_items() if not hasattr(value, "read")}
    if not files:
        raise ApiError(400, "Missing multipart/form-data file upload")
    if len(files) > 1:
        raise ApiError(400, "Only one file allowed per request")
    field, file = files[0]
    if not any_field and field not in (fields or ()):
        if field == "video":
            raise ApiError(400, "content_type video is not supported: hashmatch matches photos")
        raise ApiError(400, f"no such content_type: '{field[:100]}' (send the file as 'photo')")
    data = await file.read()
    await form.close()
    return data, field, others


def json_response(data, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)
