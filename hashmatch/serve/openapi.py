"""The OpenAPI description (/openapi.json), built from the route table plus the parameters
and request bodies of the main calls."""
from __future__ import annotations

import inspect

from .. import __version__

_Q = "query"
# (path, method) -> (summary, parameters [(name, in, required, type, description)], body)
_DOC = {
    ("/h/hash", "GET"): ("Hash content from a URL (HMA): disabled, answers 400",
                         [("url", _Q, True, "string", "refused: no outbound fetches")], None),
    ("/h/hash", "POST"): ("Hash an uploaded photo (HMA): {\"pdq\": hex}, \"\" below quality 50",
                          [("types", _Q, False, "string", "comma-separated signal types: pdq")],
                          "multipart"),
    ("/m/raw_lookup", "GET"): ("Raw hash lookup (HMA): {\"matches\": [ids]}", [
        ("signal_type", _Q, True, "string", "pdq"),
        ("signal", _Q, True, "string", "the hash (64 hex digits)"),
        ("banks", _Q, False, "string", "comma-separated bank names to restrict to"),
        ("include_distance", _Q, False, "boolean",
         "matches as {bank_content_id, distance} objects")], None),
    ("/m/lookup", "GET"): ("Hash lookup by bank (HMA): {BANK: [{bank_content_id, distance}]}", [
        ("signal_type", _Q, True, "string", "pdq"),
        ("signal", _Q, True, "string", "the hash"),
        ("banks", _Q, False, "string", "comma-separated bank names"),
        ("seed", _Q, False, "string", "seed of the enabled-ratio coin flip"),
        ("bypass_coinflip", _Q, False, "boolean", "ignore banks' matching_enabled_ratio")],
        None),
    ("/m/lookup", "POST"): ("Lookup of an uploaded photo (HMA): {\"pdq\": {BANK: [...]}}", [
        ("banks", _Q, False, "string", "comma-separated bank names"),
        ("seed", _Q, False, "string", ""), ("bypass_coinflip", _Q, False, "boolean", "")],
        "multipart"),
    ("/m/compare", "POST"): ("Compare hash pairs (HMA): {\"pdq\": [match, {distance}]}", [],
                             "json"),
    ("/m/index/status", "GET"): ("Index status (HMA): {\"pdq\": {built_to, present, size}}",
                                 [("signal_type", _Q, False, "string", "pdq")], None),
    ("/v1/query", "POST"): ("Robust query of an uploaded image: every Match field", [
        ("max_distance", _Q, False, "integer", "default 76 with regions"),
        ("top_k", _Q, False, "integer", ""),
        ("margin", _Q, False, "integer", "default 0 (every match is verified instead)"),
        ("dihedral", _Q, False, "boolean", "rotations and flips (default true)"),
        ("templates", _Q, False, "boolean",
         "also same-template leads (kind=template, verified=false; default false)"),
        ("regions", _Q, False, "boolean", "regions (default: the index's setting)")],
        "multipart"),
    ("/v1/lookup/hashes", "POST"): ("Batch hash lookup: {hashes, algorithm, max_distance, "
                                    "dihedral} -> results in order", [], "json"),
    ("/v1/items/hashes", "POST"): ("Store hashes (hash list): {hashes, algorithm, labels, "
                                   "source, meta} -> item_ids", [], "json"),
    ("/v1/items", "GET"): ("Live items in the order added", [
        ("after", _Q, False, "integer", "change-log position (from 'next')"),
        ("limit", _Q, False, "integer", "1-1000")], None),
}


def openapi_document(routes) -> dict:
    paths: dict = {}
    for route in routes:
        path = getattr(route, "path", None)
        if not path:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            endpoint = route.endpoint
            summary, params, body = _DOC.get((path, method), (None, [], None))
            doc = inspect.getdoc(endpoint) or ""
            operation = {"summary": summary or (doc.splitlines()[0] if doc else path),
                         "responses": {"200": {"description": "OK"},
                                       "400": {"$ref": "#/components/responses/Error"},
                                       "503": {"$ref": "#/components/responses/Error"}}}
            role = getattr(endpoint, "required_role", None)
            if role:
                operation["security"] = [{"bearer": []}]
                operation["description"] = f"Needs a token with role '{role}'."
                operation["responses"]["401"] = {"$ref": "#/components/responses/Error"}
                operation["responses"]["403"] = {"$ref": "#/components/responses/Error"}
            parameters = [{"name": n, "in": where, "required": req,
                           "schema": {"type": kind}, "description": text}
                          for n, where, req, kind, text in params]
            parameters += [{"name": name, "in": "path", "required": True,
                            "schema": {"type": "string"}}
                           for name in route.param_convertors]
            if parameters:
                operation["parameters"] = parameters
            if body == "multipart":
                operation["requestBody"] = {"required": True, "content": {
                    "multipart/form-data": {"schema": {"type": "object", "properties": {
                        "photo": {"type": "string", "format": "binary"}}}}}}
            elif body == "json":
                operation["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": {"type": "object"}}}}
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "hashmatch serve", "version": __version__,
                 "description": "HMA-compatible matching endpoints (/h, /m, /c) and "
                                "hashmatch's own API (/v1)."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "An error", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "message": {"type": "string"}}}}}}},
        },
    }
