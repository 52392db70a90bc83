"""The investigators' page of `hashmatch serve` (/ui), rendered in real headless Chromium:
sign in, upload, matches side by side with verdict and strength, banks; hostile names stay
text. Screenshots go to tmp_path and artifacts/ (git-ignored) for review."""
from __future__ import annotations

import re
import shutil
import subprocess

import httpx
import pytest
from PIL import Image, ImageOps

import hashmatch as hm

from conftest import CORPUS, REPO
from test_report import chromium_binary
from test_serve_server import ServeProcess, make_token

PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))
HOSTILE_LABEL = "<script>document.title='pwned'</script>"
HOSTILE_SOURCE = "x\" onmouseover=\"document.title='pwned2'"
HOSTILE_NAME = "\"><img src=x onerror=document.title='pwned3'>.jpg"


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--hide-scrollbars", *args],
        capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    known = root / "known"
    known.mkdir()
    hostile = known / HOSTILE_NAME
    shutil.copy(PHOTOS[0], hostile)
    shutil.copy(PHOTOS[1], known / "plain.jpg")
    db = root / "ui.hmdb"
    with hm.Index.open(db, create=True) as index:
        index.add_files([hostile, known / "plain.jpg"], labels=[HOSTILE_LABEL, "bank:UI_BANK"],
                        source=HOSTILE_SOURCE, meta={"note": "</td></tr></table><h1>x</h1>"},
                        workers=1)
    token = make_token(db, "investigator", "match")
    curate = make_token(db, "admin", "curate")
    with ServeProcess(db, 1, root / "serve.log") as server:
        httpx.post(server.url + "/c/banks", json={"name": "UI_BANK"},
                   headers={"Authorization": f"Bearer {curate}"}).raise_for_status()
        server.token = token
        yield server


def signed_in(server) -> httpx.Client:
    c = httpx.Client(base_url=server.url, timeout=60)
    r = c.post("/ui/login", data={"token": server.token})
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    return c


def test_login_page_in_chromium(ui_server, tmp_path):
    shot = tmp_path / "login.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=900,400",
                      ui_server.url + "/ui")
    assert shot.exists() and shot.stat().st_size > 1000, result.stderr[-2000:]
    dom = chromium(tmp_path, "--dump-dom", ui_server.url + "/ui").stdout
    assert 'name="token"' in dom and "<script" not in dom


def test_wrong_token_is_refused(ui_server):
    with httpx.Client(base_url=ui_server.url) as c:
        assert c.post("/ui/login", data={"token": "hm_nope"}).status_code == 401
        assert c.post("/ui/lookup", files={"file": ("a.jpg", b"x")}).status_code == 401
        assert c.get("/ui/banks").status_code == 401


def test_lookup_page_shows_matches_side_by_side_escaped(ui_server, tmp_path):
    query = tmp_path / "query.jpg"
    ImageOps.mirror(Image.open(PHOTOS[0])).save(query, quality=70)
    c = signed_in(ui_server)
    try:
        r = c.post("/ui/lookup", files={"file": ("query.jpg", query.read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        page = r.text
        banks = c.get("/ui/banks").text
        bad = c.post("/ui/lookup", files={"file": ("x.jpg", b"not an image")})
        assert bad.status_code == 400 and "not an image" in bad.text
    finally:
        c.close()
    assert HOSTILE_LABEL not in page and "&lt;script&gt;" in page
    assert "<script" not in page
    assert "same picture" in page or "known item" in page
    assert page.count("<img") >= 2  # the query and the stored picture
    html = tmp_path / "lookup.html"
    html.write_text(page)
    dom = chromium(tmp_path, "--dump-dom", html.as_uri()).stdout
    assert "<html" in dom
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    assert "pwned" not in title
    assert not re.search(r"<img[^>]*src=\"x\"", dom)  # the hostile name stayed text
    assert "UI_BANK" in banks
    shot = tmp_path / "lookup.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1100", html.as_uri())
    assert shot.exists() and shot.stat().st_size > 5000, result.stderr[-2000:]
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(shot, artifacts / "serve-ui-lookup.png")
