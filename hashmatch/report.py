"""Evidence reports: one self-contained HTML page plus its JSON twin.

The JSON twin holds every fact (no pixels); the HTML shows the same facts with thumbnails
embedded as ``data:`` URIs and, in its header, the SHA-256 of the JSON twin's exact bytes, so a
reader can check that the page and the data belong together. ``sanitized`` reports carry no
pixels at all.

Safety: every string that comes from outside (file names, labels, sources, metadata) goes
through :func:`esc` (``html.escape`` with quotes), in text and in double-quoted attributes;
the page contains no script and declares a Content-Security-Policy that forbids any (only
inline styles and ``data:`` images may load). Output files are written atomically, next to
each other, never over an input image or the database.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
from datetime import datetime, timezone
from typing import Iterable

from . import __version__
from . import decode as decoding
from .errors import ImageError
from .paths import write_atomically
from .text import from_storable, storable

THUMBNAIL_SIDE = 200
LARGE_VIEW = (800, 2400)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class OutputPathError(ValueError):
    """An output path that hashmatch refuses to write (it would overwrite evidence, escape the
    report's folder, or follow a link)."""


def esc(value) -> str:
    """Text safe inside HTML text and double-quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


# -- facts about files ------------------------------------------------------------------------
def file_facts(path, thumbnails: bool, expected_sha256: str | None = None,
               large: dict | None = None, key: str | None = None
               ) -> tuple[dict, str | None]:
    """(facts, thumbnail data URI or None) of one image file. Never raises for a bad file.

    facts: path, size, sha256, width, height, format, error. With ``expected_sha256`` (a stored
    item), a file whose bytes changed since indexing is reported and not shown. With ``large``
    (a dict) and ``key``, a larger view of an image too big for its thumbnail is put in
    ``large[key]`` (tall receipts must stay legible).
    """
    facts = {"path": storable(path) if isinstance(path, str) else path, "size": None,
             "sha256": None, "width": None, "height": None, "format": None, "error": None}
    if not path:
        facts["error"] = "no file (hash-list entry)"
        return facts, None
    try:
        decoded = decoding.decode(path, mode="RGB")
    except ImageError as exc:
        facts["error"] = exc.reason + (f" ({exc.detail})" if exc.detail else "")
        return facts, None
    facts.update(size=decoded.file_size, sha256=decoded.sha256, format=decoded.format,
                 width=decoded.original_size[0], height=decoded.original_size[1])
    if expected_sha256 and decoded.sha256 != expected_sha256:
        facts["error"] = "the file on disk changed since it was indexed (SHA-256 differs)"
        return facts, None
    if not thumbnails:
        return facts, None
    if large is not None and key is not None and max(decoded.image.size) > THUMBNAIL_SIDE:
        large[key] = large_view_data_uri(decoded.image)
    return facts, thumbnail_data_uri(decoded.image)


def thumbnail_data_uri(image, side: int = THUMBNAIL_SIDE) -> str:
    """A JPEG thumbnail (longest side ``side``) as a ``data:`` URI."""
    small = image.copy()
    small.thumbnail((side, side))
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def large_view_data_uri(image) -> str:
    """The larger view: at most LARGE_VIEW (800 x 2400) pixels, so a tall receipt keeps
    readable text, never larger than the original."""
    view = image.copy()
    view.thumbnail(LARGE_VIEW)
    buffer = io.BytesIO()
    view.convert("RGB").save(buffer, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- query evidence report --------------------------------------------------------------------
def build_query_report(index, files: list[str], max_distance: int | None = None,
                       top_k: int | None = None, dihedral: bool = True,
                       sanitized: bool = False, workers: int | None = None,
                       progress=None, margin: int | None = None,
                       regions: bool | None = None,
                       templates: bool = False) -> tuple[dict, dict[str, str]]:
    """(JSON document, thumbnails by path) for the query images ``files`` against ``index``."""
    results = index.query_many(files, max_distance=max_distance, top_k=top_k,
                               dihedral=dihedral, workers=workers, progress=progress,
                               margin=margin, regions=regions, templates=templates)
    stored = index.store.get_items({m.item_id for r in results for m in r.matches})
    algorithms = sorted({a for a, _ in index.store.algorithms()} | set(index.algorithms))
    thumbnails: dict[str, str] = {}
    queries = [_query_entry(result, stored, thumbnails, not sanitized) for result in results]
    header = report_header(
        "evidence", sanitized, database={"path": os.path.abspath(index.path),
                                         "items": len(index)},
        algorithms=algorithms,
        thresholds={a: index.default_max_distance(a, regions) if max_distance is None
                    else max_distance for a in algorithms},
        options={"top_k": top_k, "rotations_and_mirrors": dihedral,
                 "regions": index.uses_regions(regions),
                 "every_match_verified_on_the_stored_picture": True,
                 "same_template_leads_listed": templates})
    return {"report": header, "queries": queries}, thumbnails


def report_header(kind: str, sanitized: bool, **facts) -> dict:
    return {"tool": "hashmatch", "version": __version__, "kind": kind,
            "generated_at_utc": utc_now(), "sanitized": sanitized, **facts}


def _query_entry(result, stored_items, thumbnails: dict, with_pixels: bool) -> dict:
    name = storable(result.path) if isinstance(result.path, str) else result.path
    facts, thumb = file_facts(result.path, with_pixels, large=thumbnails, key=f"large:{name}")
    if thumb:
        thumbnails[name] = thumb
    entry = {"file": facts, "error": result.error,
             "fingerprints": [{"algorithm": f.algorithm, "hash": f.hex(), "quality": f.quality}
                              for f in result.fingerprints],
             "matches": []}
    for match in result.matches:
        item = stored_items.get(match.item_id)
        key = f"item:{match.item_id}"
        if key in thumbnails:  # this known image is already in the report: embed it once
            stored_facts, _ = _stored_file_facts(item, False)
        else:
            stored_facts, thumb = _stored_file_facts(item, with_pixels, thumbnails, key)
            if thumb:
                thumbnails[key] = thumb
        entry["matches"].append({**match.to_dict(), "stored_file": stored_facts})
    return entry


def _stored_file_facts(item, with_pixels: bool, large: dict | None = None,
                       key: str | None = None) -> tuple[dict, str | None]:
    """What the store recorded about a matched item, plus the file's state on disk now."""
    if item is None:
        return {"path": None, "error": "item not found"}, None
    recorded = {"path": item.path, "size": item.size, "sha256": item.sha256,
                "width": item.meta.get("width"), "height": item.meta.get("height"),
                "format": item.meta.get("format"), "added_at": item.added_at, "error": None}
    if not item.path or not item.sha256:
        recorded["error"] = "no file (hash-list entry): nothing to show"
        return recorded, None
    on_disk = item.path
    if not os.path.isfile(on_disk) and "\\x" in on_disk:  # a name stored escaped (not UTF-8)
        on_disk = from_storable(on_disk)
    if not os.path.isfile(on_disk):
        recorded["error"] = "file not on disk"
        return recorded, None
    facts, thumb = file_facts(on_disk, with_pixels, expected_sha256=item.sha256,
                              large=large, key=f"large:{key}" if key else None)
    recorded["error"] = facts["error"]
    return recorded, thumb


# -- cluster (dedup) report -------------------------------------------------------------------
def cluster_document(clusters_json: list[dict], header: dict, errors: list[dict]) -> dict:
    return {"report": header, "clusters": clusters_json, "errors": errors}


def clusters_json_for_files(clusters, results, algorithm: str, max_distance: int) -> list[dict]:
    """Clusters of :func:`hashmatch.cluster` over files (keys = positions in ``results``, the
    successfully hashed FileFingerprints) as JSON objects."""
    def member(m):
        r = results[m.key]
        return {"path": r.path, "sha256": r.sha256, "size": r.file_size, "width": r.width,
                "height": r.height, "format": r.format, "quality": m.quality,
                "distance": m.distance, "hash": r.fingerprint.hex()}
    return [_cluster_json(number, c, member, algorithm, max_distance)
            for number, c in enumerate(clusters, start=1)]


def clusters_json_for_items(clusters, index, algorithm: str, max_distance: int) -> list[dict]:
    """Clusters of :func:`hashmatch.cluster` over an Index (keys = item ids) as JSON objects."""
    items = index.store.get_items({m.key for c in clusters for m in c.members})

    def member(m):
        item = items[m.key]
        return {"item_id": m.key, "path": item.path, "sha256": item.sha256, "size": item.size,
                "width": item.meta.get("width"), "height": item.meta.get("height"),
                "format": item.meta.get("format"), "quality": m.quality,
                "distance": m.distance, "labels": list(item.labels), "source": item.source}
    return [_cluster_json(number, c, member, algorithm, max_distance)
            for number, c in enumerate(clusters, start=1)]


def _cluster_json(number, cluster, member, algorithm, max_distance) -> dict:
    members = [member(m) for m in cluster.members]
    return {"cluster": number, "size": cluster.size, "algorithm": algorithm,
            "max_distance": max_distance, "representative": members[0], "members": members}


def cluster_thumbnails(clusters_json: list[dict], sanitized: bool) -> dict[str, str]:
    """Thumbnails of every cluster member that has a readable file (none when sanitized)."""
    thumbnails: dict[str, str] = {}
    if sanitized:
        return thumbnails
    for cluster in clusters_json:
        for member in cluster["members"]:
            path = member.get("path")
            if path and member.get("sha256") and path not in thumbnails and os.path.isfile(path):
                _, thumb = file_facts(path, True, expected_sha256=member.get("sha256"))
                if thumb:
                    thumbnails[path] = thumb
    return thumbnails


# -- writing ------------------------------------------------------------------------------------
def json_bytes(document: dict) -> bytes:
    text = json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"
    return text.encode("utf-8", "backslashreplace")  # a stray surrogate cannot stop a report


def twin_json_path(html_path: str) -> str:
    """The JSON twin beside the HTML file: same folder, same name, extension .json."""
    folder, name = os.path.split(os.path.abspath(html_path))
    stem = os.path.splitext(name)[0] or "report"
    return os.path.join(folder, stem + ".json")


def check_output_paths(html_path: str, json_path: str | None, protected: Iterable[str]
                       ) -> tuple[str, str]:
    """Absolute (html, json) paths, or OutputPathError. ``protected``: inputs and database."""
    html_path = os.path.abspath(html_path)
    derived = json_path is None
    json_path = twin_json_path(html_path) if derived else os.path.abspath(json_path)
    if derived and os.path.dirname(os.path.realpath(json_path)) != \
            os.path.dirname(os.path.realpath(html_path)):
        raise OutputPathError(f"{json_path}: the JSON twin must sit beside the HTML report")
    if os.path.realpath(html_path) == os.path.realpath(json_path):
        raise OutputPathError(f"{html_path}: the HTML and JSON reports need different names")
    protected = list(protected)
    return check_output_path(html_path, protected), check_output_path(json_path, protected)


def check_output_path(path: str, protected: Iterable[str]) -> str:
    """``path`` made absolute, or OutputPathError if writing it could destroy something."""
    path = os.path.abspath(path)
    protected_real = {os.path.realpath(p) for p in protected if p}
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise OutputPathError(f"{path}: folder {folder} does not exist")
    if os.path.islink(path):
        raise OutputPathError(f"{path} is a symbolic link: give a plain file name")
    if os.path.exists(path) and not os.path.isfile(path):
        raise OutputPathError(f"{path} exists and is not a regular file")
    if os.path.realpath(path) in protected_real:
        raise OutputPathError(f"{path} is one of the input files or the database: "
                              "refusing to overwrite evidence")
    return path


def write_output(path: str, data: bytes) -> None:
    """An output file (report, CSV), replaced atomically and readable like any file a user
    saves (the temporary file would be 0o600)."""
    write_atomically(path, data, permissions=0o644)


def write_report(document: dict, thumbnails: dict[str, str], html_path: str,
                 json_path: str | None, protected: Iterable[str]) -> tuple[str, str, str]:
    """Write the JSON twin then the HTML page. Returns (html path, json path, json sha256)."""
    html_path, json_path = check_output_paths(html_path, json_path, protected)
    data = json_bytes(document)
    digest = hashlib.sha256(data).hexdigest()
    write_output(json_path, data)
    page = render_html(document, thumbnails, digest, os.path.basename(json_path))
    write_output(html_path, page.encode("utf-8", "backslashreplace"))
    return html_path, json_path, digest


# -- HTML -----------------------------------------------------------------------------------------
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:24px;color:#111;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:32px;border-top:2px solid #444;padding-top:10px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #bbb;padding:4px 7px;
text-align:left;vertical-align:top}th{background:#eee}
.hash,.mono{font-family:ui-monospace,monospace;word-break:break-all}
.pair{display:flex;gap:16px;align-items:flex-start;margin:10px 0;flex-wrap:wrap}
.card{border:1px solid #999;padding:10px;max-width:440px}
.card.query{background:#f4f7fb;border-color:#4a6fa5}
.grid{display:flex;gap:10px;flex-wrap:wrap}
.thumb{max-width:200px;max-height:200px;display:block}
.large{max-width:100%;display:block;margin-top:6px;border:1px solid #ccc}
details{margin:4px 0}summary{cursor:pointer;color:#1a4f8b}
.card:has(details[open]){max-width:840px}
.nothumb{width:200px;height:60px;background:#eee;color:#555;display:flex;align-items:center;
justify-content:center;font-size:12px;text-align:center}
.err{color:#a00}.verdict{font-weight:600;font-size:16px;margin:4px 0}
.tech{font-size:12px;color:#555;margin-top:4px}
.summary td,.summary th{padding:5px 9px}.summary{margin-bottom:18px}
"""


def render_html(document: dict, thumbnails: dict[str, str], json_sha256: str,
                json_name: str) -> str:
    header = document["report"]
    summary = ""
    if "queries" in document:
        title = "Evidence report"
        summary = _summary_html(document["queries"])  # first: what an investigator reads
        body = _queries_html(document["queries"], thumbnails, header["sanitized"])
    else:
        title, body = "Near-duplicate groups", _clusters_html(document, thumbnails)
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{esc(CSP)}\">",
        "<meta name=\"referrer\" content=\"no-referrer\">",
        f"<title>hashmatch {esc(title.lower())}</title><style>{_STYLE}</style></head><body>",
        f"<h1>hashmatch {esc(title.lower())}</h1>",
        summary,
        "<h2>About this report</h2>" if summary else "",
        _header_html(header, json_sha256, json_name),
        body,
        "</body></html>\n",
    ])


def _header_html(header: dict, json_sha256: str, json_name: str) -> str:
    rows = [("Tool", f"hashmatch {header['version']}"),
            ("Generated (UTC)", header["generated_at_utc"])]
    database = header.get("database")
    if database:
        rows.append(("Database", f"{database['path']} ({database['items']} items)"))
    rows.append(("Algorithms", ", ".join(header.get("algorithms", []))))
    thresholds = header.get("thresholds") or {}
    rows.append(("Match threshold (max distance)",
                 ", ".join(f"{a}: {d}" for a, d in thresholds.items())))
    for key, value in (header.get("options") or {}).items():
        shown = "-" if value is None else ("yes" if value is True else "no" if value is False
                                           else value)
        rows.append((key.replace("_", " "), shown))
    rows.append(("Images included", "no (sanitized report)" if header["sanitized"] else "yes"))
    rows.append((f"SHA-256 of {json_name}", json_sha256))
    return _table(rows)


def _table(rows) -> str:
    cells = "".join(f"<tr><th>{esc(k)}</th><td class=\"mono\">{esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _image_html(thumbnails: dict, key: str | None, alt: str, note: str | None = None) -> str:
    """The thumbnail, and for a picture bigger than that, a larger view that opens in place
    (a <details> element: no script needed)."""
    uri = thumbnails.get(key) if key else None
    if not uri:
        return f"<div class=\"nothumb\">{esc(note or 'no image')}</div>"
    html_out = f"<img class=\"thumb\" src=\"{esc(uri)}\" alt=\"{esc(alt)}\">"
    large = thumbnails.get(f"large:{key}")
    if large:
        html_out += (f"<details><summary>Larger view</summary><img class=\"large\" "
                     f"src=\"{esc(large)}\" alt=\"{esc(alt)}, larger\"></details>")
    return html_out


def _file_rows(facts: dict) -> list[tuple]:
    size = f"{facts['width']} x {facts['height']}" if facts.get("width") else "-"
    rows = [("Path", facts.get("path") or "-"), ("Bytes", _dash(facts.get("size"))),
            ("SHA-256", _dash(facts.get("sha256"))), ("Image size", size),
            ("Format", _dash(facts.get("format")))]
    if facts.get("error"):
        rows.append(("Problem", facts["error"]))
    return rows


def _dash(value) -> str:
    return "-" if value is None or value == "" else str(value)


def strength_words(distance, algorithm: str) -> str:
    """How close two fingerprints are, in words, with the number behind it."""
    from .fingerprint import DEFAULT_BITS

    bits = DEFAULT_BITS.get(algorithm, 256)
    if distance is None:
        return "-"
    scale = bits / 256
    if distance == 0:
        word = "identical fingerprints"
    elif distance <= 16 * scale or (bits == 64 and distance <= 4):
        word = "very close"
    elif distance <= 31 * scale or (bits == 64 and distance <= 10):
        word = "close"
    else:
        word = "loose (a copy in a new frame, cropped or turned)"
    return f"{word}: {distance} of {bits} bits differ"


def _summary_html(queries: list[dict]) -> str:
    rows = []
    for number, query in enumerate(queries, start=1):
        link = f"<a href=\"#q{number}\">{number}</a>"
        name = f"<a href=\"#q{number}\">{esc(query['file']['path'])}</a>"
        if query["error"]:
            verdict, best, strength = "could not be read", "-", "-"
        elif not query["matches"]:
            verdict, best, strength = "no match", "-", "-"
        else:
            top = query["matches"][0]
            verdict = top.get("verdict") or "-"
            more = len(query["matches"]) - 1
            best = (f"known image {top['item_id']}: {top['path'] or '(hash-list entry)'}"
                    + (f" (and {more} more)" if more else ""))
            strength = strength_words(top["distance"], top["algorithm"])
        rows.append(f"<tr><td>{link}</td><td class=\"mono\">{name}</td><td>{esc(verdict)}</td>"
                    f"<td class=\"mono\">{esc(best)}</td><td>{esc(strength)}</td></tr>")
    return ("<h2>Summary</h2><table class=\"summary\"><tr><th>#</th><th>Image checked</th>"
            "<th>Verdict</th><th>Best match</th><th>How close</th></tr>" + "".join(rows)
            + "</table>")


def _queries_html(queries: list[dict], thumbnails: dict, sanitized: bool) -> str:
    parts = []
    note = "sanitized report: no images" if sanitized else "no image"
    for number, query in enumerate(queries, start=1):
        facts = query["file"]
        count = len(query["matches"])
        parts.append(f"<h2 id=\"q{number}\">{number}. {esc(facts['path'])}</h2>")
        if query["error"]:
            parts.append(f"<p class=\"err\">Could not be read: {esc(query['error'])}</p>")
        elif not count:
            parts.append("<p class=\"verdict\">No match in the database.</p>")
        else:
            parts.append(f"<p class=\"verdict\">{count} known image"
                         f"{'s' if count != 1 else ''} match.</p>")
        fps = "; ".join(f"{f['algorithm']} {f['hash']} (quality {_dash(f['quality'])})"
                        for f in query["fingerprints"])
        parts.append("<div class=\"pair\"><div class=\"card query\"><b>Image checked</b>"
                     + _image_html(thumbnails, facts["path"], "image checked", note)
                     + _table(_file_rows(facts) + [("Fingerprints", fps or "-")]) + "</div>")
        for rank, match in enumerate(query["matches"], start=1):
            parts.append(_match_html(match, rank, thumbnails, note))
        parts.append("</div>")
    return "".join(parts)


def _match_html(match: dict, rank: int, thumbnails: dict, note: str) -> str:
    """One known image that matches: its picture, in plain words why, and the technical
    detail in a smaller line."""
    from .formats import describe_how

    stored = match["stored_file"]
    how = describe_how(match["query_variant"], match["query_region"], match["stored_region"])
    rows = [("How close", strength_words(match["distance"], match["algorithm"])),
            ("How it matches", how),
            ("Labels", ", ".join(match["labels"]) or "-"),
            ("Source", ", ".join((match.get("meta") or {}).get("sources")
                                 or [_dash(match["source"])])),
            ("Image quality (checked / known)",
             f"{_dash(match['query_quality'])} / {_dash(match['stored_quality'])}")]
    verdict = match.get("verdict") or ""
    verified = {True: "checked against the known picture's pixels",
                False: "the known picture's pixels disagree",
                None: None}.get(match.get("verified"))
    heading = f"<b>Match {rank}: known image {esc(match['item_id'])}</b>"
    if verdict:
        heading += f"<p class=\"verdict\">{esc(verdict)}</p>"
        if verified:
            heading += f"<div class=\"tech\">{esc(verified)}</div>"
    tech = (f"{match['algorithm']} distance {match['distance']}, score {_dash(match['score'])}"
            f"; kind {match.get('kind') or '-'}; query variant {match['query_variant']}, "
            f"query region {match['query_region']}, stored region {match['stored_region']}; "
            f"metadata {json.dumps(match['meta'], ensure_ascii=False, sort_keys=True)}")
    if match.get("evidence"):
        tech += "; evidence " + json.dumps(match["evidence"], ensure_ascii=False,
                                           sort_keys=True, default=str)
    stored_image = _image_html(thumbnails, f"item:{match['item_id']}", "known image",
                               stored.get("error") or note)
    return ("<div class=\"card\">" + heading + stored_image + _table(rows + _file_rows(stored))
            + f"<div class=\"tech\">{esc(tech)}</div></div>")


def _clusters_html(document: dict, thumbnails: dict) -> str:
    parts = []
    note = "sanitized report: no images" if document["report"]["sanitized"] else "no image"
    if not document["clusters"]:
        parts.append("<p>No near-duplicates found.</p>")
    for cluster in document["clusters"]:
        parts.append(f"<h2>Group {esc(cluster['cluster'])}: {esc(cluster['size'])} images</h2>"
                     "<div class=\"grid\">")
        for position, member in enumerate(cluster["members"]):
            role = "representative" if position == 0 else f"distance {member['distance']}"
            caption = [("", role), ("Path", _dash(member.get("path"))),
                       ("SHA-256", _dash(member.get("sha256"))),
                       ("Quality", _dash(member.get("quality")))]
            if member.get("item_id") is not None:
                caption.append(("Item id", member["item_id"]))
            parts.append("<div class=\"card\">"
                         + _image_html(thumbnails, member.get("path"), role, note)
                         + _table(caption) + "</div>")
        parts.append("</div>")
    if document.get("errors"):
        parts.append("<h2>Files that could not be read</h2>")
        parts.append(_table([(e["path"], e["error"]) for e in document["errors"]]))
    return "".join(parts)
