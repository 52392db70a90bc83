"""The investigators' web page at /ui: upload an image, see its matches side by side with
their strength and verdict; browse the banks.

No script and no external asset: plain HTML forms, inline styles, thumbnails as ``data:``
URIs, a strict Content-Security-Policy. Every string from outside goes through
:func:`hashmatch.report.esc`. The page signs in with an API token (role match or curate),
kept in an HttpOnly, SameSite=Strict cookie (so other sites cannot post forms with it).
"""
from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Route

from ..report import _STYLE, esc, file_facts, thumbnail_data_uri
from .errors import ApiError
from .http import authenticate, blocking, service_of, upload
from .settings import banks_of

COOKIE = "hm_token"
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
_EXTRA_STYLE = """
.bar{height:8px;background:#ddd;width:200px}.bar span{display:block;height:8px;background:#2a6}
.verdict{font-weight:bold}.nav a{margin-right:12px}
"""


def _page(title: str, body: str, status: int = 200, headers: dict | None = None):
    html = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{esc(CSP)}\">"
            "<meta name=\"referrer\" content=\"no-referrer\">"
            f"<title>{esc(title)}</title><style>{_STYLE}{_EXTRA_STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1>{body}</body></html>\n")
    return HTMLResponse(html, status_code=status,
                        headers={"Content-Security-Policy": CSP, **(headers or {})})


def _signed_in(request: Request) -> str | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        return authenticate(request, "match", token=token)
    except ApiError:
        return None


def _nav(name: str) -> str:
    return ("<p class=\"nav\"><a href=\"/ui\">Look up an image</a><a href=\"/ui/banks\">Banks</a>"
            f"signed in as <b>{esc(name)}</b> <form method=\"post\" action=\"/ui/logout\" "
            "style=\"display:inline\"><button>Sign out</button></form></p>")


def _login_form(message: str = "") -> str:
    note = f"<p class=\"err\">{esc(message)}</p>" if message else ""
    return (f"{note}<form method=\"post\" action=\"/ui/login\">"
            "<label>API token <input type=\"password\" name=\"token\" autocomplete=\"off\">"
            "</label> <button>Sign in</button></form>")


_UPLOAD = ("<form method=\"post\" action=\"/ui/lookup\" enctype=\"multipart/form-data\">"
           "<label>Image <input type=\"file\" name=\"file\" accept=\"image/*\"></label> "
           "<button>Find matches</button></form>")


async def home(request: Request):
    name = _signed_in(request)
    if name is None:
        return _page("hashmatch", _login_form())
    return _page("hashmatch: find re-posts of known images", _nav(name) + _UPLOAD)


async def login(request: Request):
    form = await request.form(max_files=0, max_fields=5)
    token = str(form.get("token") or "")
    try:
        authenticate(request, "match", token=token)
    except ApiError:
        return _page("hashmatch", _login_form("That token is not valid."), status=401)
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/ui",
                        secure=request.url.scheme == "https")
    return response


async def logout(request: Request):
    response = RedirectResponse("/ui", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


def _strength_bar(score) -> str:
    score = 256 if score is None else int(score)
    width = max(0, min(100, round(100 * (1 - score / 96))))
    return f"<div class=\"bar\"><span style=\"width:{width}%\"></span></div>"


def _match_card(match: dict, stored_thumb: str | None, stored_facts: dict,
                query_thumb: str) -> str:
    from ..formats import describe_how

    how = describe_how(match["query_variant"], match["query_region"], match["stored_region"])
    rows = [("Verdict", match.get("verdict") or "-"), ("Kind", match.get("kind")),
            ("Verified", {True: "yes", False: "no", None: "not verified"}[match.get("verified")]),
            ("Distance", f"{match['distance']} of 256 bits (score {match['score']})"),
            ("Matched as", how), ("Item id", match["item_id"]),
            ("Banks", ", ".join(banks_of(match["labels"])) or "-"),
            ("Labels", ", ".join(match["labels"]) or "-"), ("Source", match["source"] or "-"),
            ("Path", match["path"] or "-"),
            ("Evidence", json.dumps(match.get("evidence") or {}, sort_keys=True))]
    if stored_facts.get("error"):
        rows.append(("Stored image", stored_facts["error"]))
    cells = "".join(f"<tr><th>{esc(k)}</th><td class=\"mono\">{esc(v)}</td></tr>"
                    for k, v in rows)
    image = (f"<img class=\"thumb\" src=\"{esc(stored_thumb)}\" alt=\"stored match\">"
             if stored_thumb else "<div class=\"nothumb\">no stored image</div>")
    verdict = match.get("verdict") or match.get("kind") or ""
    return ("<div class=\"pair\"><div class=\"card\"><b>uploaded image</b>"
            f"<img class=\"thumb\" src=\"{esc(query_thumb)}\" alt=\"query\"></div>"
            f"<div class=\"card\"><b>known item {esc(match['item_id'])}</b>{image}</div>"
            f"<div class=\"card\"><span class=\"verdict\">{esc(verdict)}</span>"
            f"{_strength_bar(match.get('score'))}<table>{cells}</table></div></div>")


async def lookup(request: Request):
    name = _signed_in(request)
    if name is None:
        return _page("hashmatch", _login_form("Sign in first."), status=401)
    service = service_of(request)
    try:
        data, _, _ = await upload(request, any_field=True)
        matches = await blocking(service.query_image, data)
        decoded = await blocking(service.decode_upload, data)
    except ApiError as exc:
        return _page("hashmatch: lookup", _nav(name) + f"<p class=\"err\">{esc(exc.message)}</p>"
                     + _UPLOAD, status=exc.status)
    query_thumb = await blocking(thumbnail_data_uri, decoded.image)
    cards = []
    for match in matches:
        m = match.to_dict()
        facts, thumb = await blocking(file_facts, m["path"], True, m["sha256"]) \
            if m["path"] else ({"error": "hash-list entry: no image kept"}, None)
        cards.append(_match_card(m, thumb, facts, query_thumb))
    summary = (f"<p>{len(matches)} match{'es' if len(matches) != 1 else ''}, best first.</p>"
               if matches else "<p>No match: this image is not a copy of a known one.</p>")
    no_match = "" if matches else (
        "<div class=\"pair\"><div class=\"card\"><b>uploaded image</b>"
        f"<img class=\"thumb\" src=\"{esc(query_thumb)}\" alt=\"query\"></div></div>")
    body = (_nav(name) + _UPLOAD + f"<h2>Matches</h2>{summary}{no_match}{''.join(cards)}")
    return _page("hashmatch: lookup", body)


async def banks(request: Request):
    name = _signed_in(request)
    if name is None:
        return _page("hashmatch", _login_form("Sign in first."), status=401)
    settings = service_of(request).settings
    rows = "".join(f"<tr><td class=\"mono\">{esc(b['name'])}</td>"
                   f"<td>{esc(b.get('matching_enabled_ratio'))}</td>"
                   f"<td>{esc(b.get('created_at'))}</td></tr>"
                   for _, b in sorted(settings.banks.items()))
    table = ("<table><tr><th>Bank</th><th>Matching enabled ratio</th><th>Created (UTC)</th></tr>"
             f"{rows}</table>" if rows else "<p>No banks yet.</p>")
    return _page("hashmatch: banks", _nav(name) + table)


ROUTES = [
    Route("/ui", home, methods=["GET"]),
    Route("/ui/login", login, methods=["POST"]),
    Route("/ui/logout", logout, methods=["POST"]),
    Route("/ui/lookup", lookup, methods=["POST"]),
    Route("/ui/banks", banks, methods=["GET"]),
]
