"""hashmatch's own API, versioned under /v1: the full robust query of an image (every
``Match`` field), batch hash lookups, and items."""
from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import HashFormatError
from ..fingerprint import DEFAULT_BITS, Fingerprint, check_algorithm
from .errors import ApiError, not_found
from .http import blocking, flag, int_param, json_body, requires, service_of, upload
from .settings import banks_of


def match_json(match) -> dict:
    out = match.to_dict()
    out["banks"] = banks_of(match.labels)
    return out


def item_json(item) -> dict:
    return {"item_id": item.id, "path": item.path, "sha256": item.sha256, "size": item.size,
            "added_at": item.added_at, "labels": list(item.labels),
            "banks": banks_of(item.labels), "source": item.source, "meta": item.meta,
            "removed_at": item.removed_at}


async def query(request: Request):
    """POST /v1/query: multipart upload (any field name) -> every Match of Index.query."""
    options = {
        "max_distance": int_param(request, "max_distance", None, 0, 256),
        "top_k": int_param(request, "top_k", None, 1, 10_000),
        "margin": int_param(request, "margin", None, 0, 256),
        "dihedral": flag(request, "dihedral", True),
        "templates": flag(request, "templates", False),
    }
    if request.query_params.get("regions") is not None:
        options["regions"] = flag(request, "regions")
    data, _, _ = await upload(request, any_field=True)
    service = service_of(request)
    matches = await blocking(service.query_image, data, **options)
    return JSONResponse({"sha256": hashlib.sha256(data).hexdigest(),
                         "matches": [match_json(m) for m in matches]})


def _fingerprints(values, algorithm: str, limit: int) -> list[Fingerprint]:
    if not isinstance(values, list) or not values:
        raise ApiError(400, "hashes must be a non-empty list of hex strings")
    if len(values) > limit:
        raise ApiError(413, f"at most {limit} hashes per request")
    out = []
    for k, value in enumerate(values):
        if not isinstance(value, str):
            raise ApiError(400, f"hashes[{k}] is not a string")
        try:
            out.append(Fingerprint.from_hex(value.strip(), algorithm))
        except HashFormatError:
            raise ApiError(400, f"hashes[{k}] is not a {algorithm} hash "
                                f"({DEFAULT_BITS[algorithm] // 4} hex digits)") from None
    return out


def _algorithm(data: dict) -> str:
    try:
        return check_algorithm(data.get("algorithm", "pdq"))
    except HashFormatError as exc:
        raise ApiError(400, str(exc)) from None


async def lookup_hashes(request: Request):
    """POST /v1/lookup/hashes {"hashes": [...], "algorithm": "pdq", "max_distance": 31,
    "dihedral": false} -> one result per hash, in order."""
    data = await json_body(request)
    service = service_of(request)
    algorithm = _algorithm(data)
    fingerprints = _fingerprints(data.get("hashes"), algorithm, service.config.max_batch)
    max_distance = data.get("max_distance", 31 if algorithm == "pdq" else 10)
    if isinstance(max_distance, bool) or not isinstance(max_distance, int) \
            or not 0 <= max_distance <= DEFAULT_BITS[algorithm]:
        raise ApiError(400, "max_distance must be an integer within the hash's bits")
    dihedral = data.get("dihedral", False)
    if not isinstance(dihedral, bool):
        raise ApiError(400, "dihedral must be true or false")
    hits = await service.lookup_async(fingerprints, max_distance, dihedral)
    return JSONResponse({"results": [
        {"hash": fp.hex(), "matches": [{"item_id": h.item_id, "distance": h.distance,
                                        "labels": list(h.labels), "banks": banks_of(h.labels)}
                                       for h in found]}
        for fp, found in zip(fingerprints, hits)]})


def _labels(value) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 100 or \
            not all(isinstance(x, str) and 0 < len(x) <= 200 for x in value):
        raise ApiError(400, "labels must be a list of at most 100 strings of 1-200 characters")
    return value


async def add_hashes(request: Request):
    """POST /v1/items/hashes {"hashes": [...], "algorithm", "labels", "source", "meta"}:
    store hashes (a hash list) in one transaction; answers once they are durable."""
    from ..store import ItemRecord

    data = await json_body(request)
    service = service_of(request)
    algorithm = _algorithm(data)
    fingerprints = _fingerprints(data.get("hashes"), algorithm, service.config.max_batch)
    labels = _labels(data.get("labels"))
    source = data.get("source")
    if source is not None and (not isinstance(source, str) or len(source) > 1000):
        raise ApiError(400, "source must be a string of at most 1000 characters")
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise ApiError(400, "meta must be a JSON object")
    records = [ItemRecord(path=None, sha256=None, labels=labels, source=source, meta=meta,
                          fingerprints=[(fp.algorithm, fp.nbits, "full", "original",
                                         fp.bits.tobytes(), fp.quality)])
               for fp in fingerprints]
    token = request.state.token_name
    ids = await blocking(service.add_records, records, "import",
                         {"algorithm": algorithm, "source": source, "token": token,
                          "via": "hashmatch serve"})
    return JSONResponse({"item_ids": ids}, status_code=201)


async def list_items(request: Request):
    """GET /v1/items?after=SEQ&limit=N: live items in the order they were added (paged by
    change-log position; pass ``next`` back as ``after``)."""
    service = service_of(request)
    index = service.require_index()
    after = int_param(request, "after", 0, 0, 2 ** 62)
    limit = int_param(request, "limit", 100, 1, 1000)

    def page():
        changes = index.store.changes_since(after, limit=limit)
        added = [c.item_id for c in changes if c.op == "add"]
        items = index.store.get_items(added)
        live = [item_json(items[i]) for i in added if i in items and not items[i].removed]
        return live, (changes[-1].seq if len(changes) == limit else None)

    items, next_after = await blocking(page)
    return JSONResponse({"items": items, "next": next_after})


def _item_id(request: Request) -> int:
    try:
        value = int(request.path_params["item_id"])
    except ValueError:
        raise not_found("no such item") from None
    if not 0 < value < 2 ** 63:
        raise not_found("no such item")
    return value


async def get_item(request: Request):
    service = service_of(request)
    index = service.require_index()
    item_id = _item_id(request)
    item = (await blocking(index.store.get_items, [item_id])).get(item_id)
    if item is None:
        raise not_found(f"no item {item_id}")
    return JSONResponse(item_json(item))


async def delete_item(request: Request):
    service = service_of(request)
    item_id = _item_id(request)
    removed = await blocking(service.remove_items, [item_id], request.state.token_name)
    return JSONResponse({"removed": removed})


async def stats(request: Request):
    service = service_of(request)
    import os

    return JSONResponse({"ready": service.ready, "store_ok": service.store_ok,
                         "worker_pid": os.getpid(),
                         "in_memory_fingerprints": service.in_memory_sizes(),
                         "last_sync_utc_seconds": service.last_sync_ok,
                         "banks": sorted(service.settings.banks) if service.settings else []})


ROUTES = [
    Route("/v1/query", requires("match")(query), methods=["POST"]),
    Route("/v1/lookup/hashes", requires("match")(lookup_hashes), methods=["POST"]),
    Route("/v1/items", requires("match")(list_items), methods=["GET"]),
    Route("/v1/items/hashes", requires("curate")(add_hashes), methods=["POST"]),
    Route("/v1/items/{item_id}", requires("match")(get_item), methods=["GET"]),
    Route("/v1/items/{item_id}", requires("curate")(delete_item), methods=["DELETE"]),
    Route("/v1/stats", requires("match")(stats), methods=["GET"]),
]
