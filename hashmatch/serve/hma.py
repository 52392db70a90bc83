"""HMA-compatible endpoints: the paths, parameters and JSON shapes of Meta's
hasher-matcher-actioner (OpenMediaMatch blueprints ``hashing`` /h, ``matching`` /m and
``curation`` /c), so an HMA client works unchanged against ``hashmatch serve``.

Where hashmatch differs, on purpose:
- no URL fetching (``url=`` parameters answer 400: upload the file instead);
- one signal type, ``pdq``, and one content type, ``photo``;
- a bank is the item label ``bank:NAME``; bank content ids are hashmatch item ids;
- banks cannot be renamed, and bank content cannot be edited (PUT answers 400).
"""
from __future__ import annotations

import json
import random

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route

from .errors import ApiError, not_found
from .http import (banks_param, blocking, flag, json_body, requires, required_param,
                   service_of, upload)
from .service import HMA_PDQ_RADIUS, HMA_QUALITY_THRESHOLD, parse_pdq
from .settings import banks_of, valid_bank_name

SIGNAL_TYPES = ("pdq",)
URL_DISABLED = ("URL fetching is disabled in hashmatch serve (no outbound requests): "
                "upload the file as multipart/form-data field 'photo' instead")


def _signal_type(name: str | None) -> str:
    if name not in SIGNAL_TYPES:
        raise ApiError(400, f"No such SignalType '{str(name)[:100]}'")
    return name


def _check_types(request: Request) -> None:
    types = request.query_params.get("types")
    if types is None:
        return
    names = [t.strip() for t in types.split(",") if t.strip()]
    for name in names:
        if name not in SIGNAL_TYPES:
            raise ApiError(400, f"signal type '{name[:100]}' doesn't exist or is disabled")
    if not names:
        raise ApiError(400, "empty signal type selection")


def _check_content_type(request: Request) -> None:
    content_type = request.query_params.get("content_type")
    if content_type not in (None, "", "photo"):
        raise ApiError(400, f"no such content_type: '{content_type[:100]}'")


async def _hash_upload(request: Request):
    """(fingerprint, decoded image, raw bytes) of the uploaded photo, hashed as HMA does."""
    _check_types(request)
    data, _, _ = await upload(request, fields=("photo",))
    service = service_of(request)
    fp, decoded = await blocking(service.hma_pdq, data)
    return fp, decoded, data


def _hma_hash_value(fp) -> str:
    # HMA gives no hash ("") for a picture too flat to match reliably.
    return fp.hex() if (fp.quality or 0) >= HMA_QUALITY_THRESHOLD else ""


def _low_quality(fp) -> ApiError:
    return ApiError(400, f"invalid signal: image quality {fp.quality} is below "
                         f"{HMA_QUALITY_THRESHOLD} (too flat to match reliably)")


# -- hashing (/h) ----------------------------------------------------------------------------
async def hash_get(request: Request):
    if not request.query_params.get("url"):
        raise ApiError(400, "url is required (and URL fetching is disabled: POST the file)")
    raise ApiError(400, URL_DISABLED)


async def hash_post(request: Request):
    fp, _, _ = await _hash_upload(request)
    return JSONResponse({"pdq": _hma_hash_value(fp)})


# -- matching (/m) ---------------------------------------------------------------------------
async def _raw_hits(request: Request, signal: str, signal_type: str, banks):
    _signal_type(signal_type)
    fp = parse_pdq(signal)
    service = service_of(request)
    hits = await service.lookup_async([fp], HMA_PDQ_RADIUS)
    hits = hits[0]
    if banks is not None:
        hits = [h for h in hits if banks.intersection(banks_of(h.labels))]
    return hits


async def raw_lookup(request: Request):
    signal_type = required_param(request, "signal_type")
    signal = required_param(request, "signal")
    banks = banks_param(request.query_params.get("banks"))
    include_distance = flag(request, "include_distance")
    hits = await _raw_hits(request, signal, signal_type, banks)
    if include_distance:
        return JSONResponse({"matches": [{"bank_content_id": h.item_id,
                                          "distance": str(h.distance)} for h in hits]})
    return JSONResponse({"matches": [h.item_id for h in hits]})


def _by_bank(request: Request, hits, banks) -> dict:
    """HMA's ``lookup``: matches grouped by bank, banks whose matching_enabled_ratio loses
    the coin flip (seeded by ``seed``; ``bypass_coinflip=true`` skips it) left out."""
    settings = service_of(request).settings
    bypass = flag(request, "bypass_coinflip")
    coinflip = 0.0 if bypass else random.Random(request.query_params.get("seed")).random()
    out: dict[str, list] = {}
    for hit in hits:
        for bank in banks_of(hit.labels):
            config = settings.bank(bank)
            if config is None or (banks is not None and bank not in banks):
                continue
            if float(config.get("matching_enabled_ratio", 1.0)) < coinflip:
                continue
            out.setdefault(bank, []).append({"bank_content_id": hit.item_id,
                                             "distance": str(hit.distance)})
    return out


async def lookup_get(request: Request):
    banks = banks_param(request.query_params.get("banks"))
    if request.query_params.get("url"):
        raise ApiError(400, URL_DISABLED)
    signal = request.query_params.get("signal")
    signal_type = request.query_params.get("signal_type")
    if not signal or not signal_type:
        raise ApiError(400, "Either url or both signal and signal_type are required")
    hits = await _raw_hits(request, signal, signal_type, None)
    return JSONResponse(_by_bank(request, hits, banks))


async def lookup_post(request: Request):
    banks = banks_param(request.query_params.get("banks"))
    fp, _, _ = await _hash_upload(request)
    if (fp.quality or 0) < HMA_QUALITY_THRESHOLD:
        raise _low_quality(fp)
    hits = (await service_of(request).lookup_async([fp], HMA_PDQ_RADIUS))[0]
    return JSONResponse({"pdq": _by_bank(request, hits, banks)})


async def compare(request: Request):
    data = await json_body(request)
    results = {}
    for name, pair in data.items():
        if not isinstance(pair, list):
            raise ApiError(400, f"Comparison hashes for {str(name)[:100]} was not a list")
        if len(pair) != 2:
            raise ApiError(400, "Comparison hash list length must be exactly 2")
        _signal_type(name)
        left, right = parse_pdq(pair[0], "pdq hash"), parse_pdq(pair[1], "pdq hash")
        distance = left - right
        results[name] = [distance <= HMA_PDQ_RADIUS, {"distance": distance}]
    return JSONResponse(results)


async def index_status(request: Request):
    service = service_of(request)
    wanted = request.query_params.get("signal_type")
    if wanted is not None:
        _signal_type(wanted)
    sizes = service.in_memory_sizes()
    ready = service.ready
    status = {"present": ready,
              "built_to": int(service.last_sync_ok) if ready and service.last_sync_ok else -1,
              "size": sizes.get("pdq", 0)}
    return JSONResponse({"pdq": status})


# -- curation (/c) ---------------------------------------------------------------------------
def _bank_json(config: dict) -> dict:
    return {"name": config["name"],
            "matching_enabled_ratio": float(config.get("matching_enabled_ratio", 1.0))}


def _require_bank(request: Request) -> dict:
    name = request.path_params["bank_name"]
    config = service_of(request).settings.bank(name)
    if config is None:
        raise not_found(f"bank '{name[:100]}' not found")
    return config


def _content_id(request: Request) -> int:
    try:
        value = int(request.path_params["content_id"])
    except ValueError:
        raise not_found("content not found") from None
    if not 0 < value < 2 ** 63:
        raise not_found("content not found")
    return value


def _ratio(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ApiError(400, f"{name} must be a number between 0.0 and 1.0")
    return float(value)


async def banks_index(request: Request):
    banks = service_of(request).settings.banks
    return JSONResponse([_bank_json(b) for _, b in sorted(banks.items())])


async def bank_show(request: Request):
    return JSONResponse(_bank_json(_require_bank(request)))


async def bank_create(request: Request):
    data = await json_body(request)
    name = data.get("name")
    if not isinstance(name, str):
        raise ApiError(400, "name is required")
    if data.get("enabled_ratio") is not None:
        ratio = _ratio(data["enabled_ratio"], "enabled_ratio")
    elif data.get("enabled") is not None:
        ratio = 1.0 if data["enabled"] else 0.0
    else:
        ratio = 1.0
    service = service_of(request)
    config = await blocking(service.settings.create_bank, name, ratio,
                            request.state.token_name)
    return JSONResponse(_bank_json(config), status_code=201)


async def bank_update(request: Request):
    config = _require_bank(request)
    data = await json_body(request)
    if data.get("name") is not None and data["name"] != config["name"]:
        if not valid_bank_name(data["name"]):
            raise ApiError(400, "Bank names must be UPPER_WITH_UNDERSCORE")
        raise ApiError(400, "renaming a bank is not supported by hashmatch serve "
                            "(a bank is a label on its items)")
    ratio = float(config.get("matching_enabled_ratio", 1.0))
    if data.get("enabled") is not None:
        ratio = 1.0 if data["enabled"] else 0.0
    if data.get("enabled_ratio") is not None:
        ratio = _ratio(data["enabled_ratio"], "enabled_ratio")
    service = service_of(request)
    updated = await blocking(service.settings.update_bank, config["name"], ratio,
                             request.state.token_name)
    return JSONResponse(_bank_json(updated))


async def bank_delete(request: Request):
    name = request.path_params["bank_name"]
    service = service_of(request)
    service.require_index()
    if valid_bank_name(name):
        await blocking(service.delete_bank, name, request.state.token_name)
    return JSONResponse({"message": "Done"})


def _metadata(data) -> dict | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ApiError(400, "metadata should be a json object")
    data = {k: v for k, v in data.items() if k != "collab"}
    unknown = set(data) - {"content_id", "content_uri", "json"}
    if unknown:
        raise ApiError(400, f"Invalid metadata: unknown field(s) {sorted(unknown)[:5]}")
    for key in ("content_id", "content_uri"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ApiError(400, f"Invalid metadata: {key} must be a string")
    if data.get("json") is not None and not isinstance(data["json"], dict):
        raise ApiError(400, "Invalid metadata: json must be an object")
    return {k: v for k, v in data.items() if v is not None} or None


def _note(value) -> str | None:
    if not value:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "note should be a string")
    if len(value) > 255:
        raise ApiError(400, "note must be at most 255 characters")
    return value


def _hma_meta(metadata, note) -> dict:
    hma = {}
    if metadata:
        hma["metadata"] = metadata
    if note:
        hma["note"] = note
    return {"hma": hma} if hma else {}


async def bank_add_content(request: Request):
    config = _require_bank(request)
    if request.query_params.get("url"):
        raise ApiError(400, URL_DISABLED)
    _check_content_type(request)
    content_type = request.headers.get("content-type", "").lower()
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "Neither `url` nor multipart file upload was received")
    _check_types(request)
    data, _, form = await upload(request, fields=("photo",))
    metadata = None
    if "metadata" in form:
        try:
            metadata = _metadata(json.loads(form["metadata"]))
        except (ValueError, TypeError):
            raise ApiError(400, "metadata form field must be valid JSON") from None
    note = _note(form.get("note"))
    service = service_of(request)
    item_id, fp = await blocking(service.add_image_to_bank, data, config["name"],
                                 _hma_meta(metadata, note), request.state.token_name)
    return JSONResponse({"id": item_id, "signals": {"pdq": fp.hex()}})


async def bank_add_signal(request: Request):
    config = _require_bank(request)
    data = await json_body(request)
    note = _note(data.pop("note", None))
    metadata = _metadata(data.pop("metadata", None))
    if not data:
        raise ApiError(400, "No signals given")
    signals = {}
    for name, value in data.items():
        if name not in SIGNAL_TYPES:
            raise ApiError(400, f"No such signal type {str(name)[:100]}")
        signals[name] = parse_pdq(value, f"{name} signal")
    service = service_of(request)
    fp = signals["pdq"]
    item_id = await blocking(service.add_hash_to_bank, fp, config["name"],
                             _hma_meta(metadata, note), request.state.token_name)
    return JSONResponse({"id": item_id, "signals": {"pdq": fp.hex()}})


async def bank_get_content(request: Request):
    config = _require_bank(request)
    content_id = _content_id(request)
    include_signals = flag(request, "include_signals")
    include_metadata = flag(request, "include_metadata", True)
    service = service_of(request)
    item, signals = await blocking(service.bank_item, content_id, config["name"],
                                   include_signals)
    if item is None:
        raise not_found(f"content '{content_id}' not found")
    hma = item.meta.get("hma") if isinstance(item.meta.get("hma"), dict) else {}
    out = {"id": item.id, "disable_until_ts": 1, "original_media_uri": None,
           "bank": _bank_json(config)}
    if include_signals and signals:
        out["signals"] = signals
    if include_metadata and hma.get("metadata"):
        out["metadata"] = hma["metadata"]
    if hma.get("note"):
        out["note"] = hma["note"]
    return JSONResponse(out)


async def bank_update_content(request: Request):
    _require_bank(request)
    raise ApiError(400, "editing bank content is not supported by hashmatch serve: remove "
                        "the content and add it again")


async def bank_delete_content(request: Request):
    config = _require_bank(request)
    content_id = _content_id(request)
    service = service_of(request)
    removed = await blocking(service.remove_from_bank, content_id, config["name"],
                             request.state.token_name)
    return JSONResponse({"deleted": removed})


async def signal_types(request: Request):
    return JSONResponse([{"name": "pdq", "enabled_ratio": 1.0}])


async def content_types(request: Request):
    return JSONResponse([{"name": "photo", "enabled": True}])


# -- core ------------------------------------------------------------------------------------
async def home(request: Request):
    return RedirectResponse("/ui", status_code=302)


async def status(request: Request):
    service = service_of(request)
    if not service.ready:
        return PlainTextResponse("INDEX-NOT-LOADED", status_code=503)
    return PlainTextResponse("I-AM-ALIVE")


async def status_live(request: Request):
    return PlainTextResponse("I-AM-ALIVE")


async def site_map(request: Request):
    paths = sorted({getattr(r, "path", "") for r in request.app.routes} - {""})
    return JSONResponse(paths)


def _match(handler):
    return requires("match")(handler)


def _curate(handler):
    return requires("curate")(handler)


ROUTES = [
    Route("/", home, methods=["GET"]),
    Route("/status", status, methods=["GET"]),
    Route("/status/live", status_live, methods=["GET"]),
    Route("/site-map", _match(site_map), methods=["GET"]),
    Route("/h/hash", _match(hash_get), methods=["GET"]),
    Route("/h/hash", _match(hash_post), methods=["POST"]),
    Route("/m/raw_lookup", _match(raw_lookup), methods=["GET"]),
    Route("/m/lookup", _match(lookup_get), methods=["GET"]),
    Route("/m/lookup", _match(lookup_post), methods=["POST"]),
    Route("/m/compare", _match(compare), methods=["POST"]),
    Route("/m/index/status", _match(index_status), methods=["GET"]),
    Route("/c/banks", _match(banks_index), methods=["GET"]),
    Route("/c/banks", _curate(bank_create), methods=["POST"]),
    Route("/c/bank/{bank_name}", _match(bank_show), methods=["GET"]),
    Route("/c/bank/{bank_name}", _curate(bank_update), methods=["PUT"]),
    Route("/c/bank/{bank_name}", _curate(bank_delete), methods=["DELETE"]),
    Route("/c/bank/{bank_name}/content", _curate(bank_add_content), methods=["POST"]),
    Route("/c/bank/{bank_name}/signal", _curate(bank_add_signal), methods=["POST"]),
    Route("/c/bank/{bank_name}/content/{content_id}", _match(bank_get_content),
          methods=["GET"]),
    Route("/c/bank/{bank_name}/content/{content_id}", _curate(bank_update_content),
          methods=["PUT"]),
    Route("/c/bank/{bank_name}/content/{content_id}", _curate(bank_delete_content),
          methods=["DELETE"]),
    Route("/c/signal_type", _match(signal_types), methods=["GET"]),
    Route("/c/content_type", _match(content_types), methods=["GET"]),
]
