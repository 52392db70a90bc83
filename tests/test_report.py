"""Evidence reports: facts, escaping of hostile strings (checked in a real browser), sanitized
reports without pixels, and output paths that cannot destroy evidence."""
import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageOps

import hashmatch as hm
from hashmatch.report import (CSP, OutputPathError, build_query_report, check_output_paths,
                              esc, render_html, twin_json_path, write_report)

from conftest import CORPUS

PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))
HOSTILE_LABEL = "<script>document.title='pwned'</script>"
HOSTILE_SOURCE = "x\" onmouseover=\"document.title='pwned2'"
HOSTILE_NAME = "\"><img src=x onerror=document.title='pwned3'>.jpg"


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is not installed, so the HTML report cannot be checked in a real "
                    "browser. Run scripts/install-system-deps.sh (make test does).")
    return found


def dump_dom(html_path, tmp_path) -> str:
    """The page's DOM after Chromium loaded it (scripts would have run by then)."""
    result = subprocess.run(
        [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom",
         html_path.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout


def img_tags(dom: str) -> list[str]:
    return re.findall(r"<img\b[^>]*>", dom)


@pytest.fixture
def case(tmp_path):
    """A database with hostile metadata, and query files including a hostile file name."""
    known = tmp_path / "known"
    known.mkdir()
    for p in PHOTOS[:2]:
        shutil.copy(p, known / p.name)
    hostile = tmp_path / "queries" / HOSTILE_NAME
    hostile.parent.mkdir()
    ImageOps.mirror(Image.open(PHOTOS[0])).save(hostile, quality=70)
    plain = tmp_path / "queries" / "copy.jpg"
    shutil.copy(PHOTOS[1], plain)
    db = tmp_path / "case.hmdb"
    with hm.Index.open(db, create=True) as index:
        index.add_files(sorted(known.iterdir()), labels=[HOSTILE_LABEL], source=HOSTILE_SOURCE,
                        meta={"note": "</td></tr></table><h1>injected</h1>"}, workers=1)
    return db, [str(hostile), str(plain), str(PHOTOS[300])]


def make_report(db, queries, tmp_path, sanitized=False):
    with hm.Index.open(db) as index:
        document, thumbnails = build_query_report(index, queries, sanitized=sanitized, workers=1)
    html_path, json_path, digest = write_report(document, thumbnails,
                                                tmp_path / "out" / "report.html", None,
                                                queries + [str(db)])
    return document, html_path, json_path, digest


def test_report_facts_and_json_twin(case, tmp_path):
    db, queries = case
    (tmp_path / "out").mkdir()
    document, html_path, json_path, digest = make_report(db, queries, tmp_path)
    data = open(json_path, "rb").read()
    assert hashlib.sha256(data).hexdigest() == digest and digest in open(html_path).read()
    assert json.loads(data) == json.loads(json.dumps(document, default=str))
    header = document["report"]
    assert header["version"] == hm.__version__ and header["database"]["items"] == 2
    # the radius the query really used: PDQ over regions by default
    from hashmatch.regions import PDQ_MAX_DISTANCE
    assert header["thresholds"] == {"pdq": PDQ_MAX_DISTANCE} and header["options"]["regions"]
    assert header["generated_at_utc"].endswith("Z")
    hostile, plain, unrelated = document["queries"]
    assert hostile["file"]["sha256"] == hashlib.sha256(open(queries[0], "rb").read()).hexdigest()
    assert hostile["file"]["format"] == "JPEG" and hostile["file"]["width"] > 0
    [match] = hostile["matches"]
    assert match["query_variant"] == "flipy" and match["labels"] == [HOSTILE_LABEL]
    assert match["stored_file"]["sha256"] == match["sha256"]
    assert match["stored_file"]["error"] is None
    assert plain["matches"][0]["distance"] == 0 and unrelated["matches"] == []


def test_hostile_strings_are_text_in_a_real_browser(case, tmp_path):
    db, queries = case
    (tmp_path / "out").mkdir()
    document, html_path, _, _ = make_report(db, queries, tmp_path)
    page = open(html_path, encoding="utf-8").read()
    assert "<script" not in page.lower() and f'content="{esc(CSP)}"' in page
    dom = dump_dom(tmp_path / "out" / "report.html", tmp_path)
    assert "<title>hashmatch evidence report</title>" in dom  # no script changed it
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom).group(1)
    assert "<h1>injected</h1>" not in dom and dom.count("<h1>") == 1
    tags = img_tags(dom)
    # each query image once (3), each known image once (2), each with its larger view
    assert sum('alt="image checked"' in t for t in tags) == 3
    assert sum('alt="known image"' in t for t in tags) == 2
    assert len(tags) == 2 * (3 + 2)
    assert all(re.search(r'src="data:image/jpeg;base64,[A-Za-z0-9+/=]+"', t) for t in tags)
    assert not any("onerror" in t or "onmouseover" in t for t in tags)
    assert not re.search(r"<[a-z]+[^>]*\sonmouseover=", dom)
    # ... and the hostile strings are there, as text
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "\"&gt;&lt;img src=x onerror=document.title='pwned3'&gt;.jpg" in dom


def test_sanitized_report_has_no_pixels(case, tmp_path):
    db, queries = case
    (tmp_path / "out").mkdir()
    document, html_path, json_path, _ = make_report(db, queries, tmp_path, sanitized=True)
    page = open(html_path, encoding="utf-8").read()
    assert "<img" not in page and "base64" not in page and "data:image" not in page
    assert "sanitized" in page and document["report"]["sanitized"] is True
    assert "base64" not in open(json_path).read()
    dom = dump_dom(tmp_path / "out" / "report.html", tmp_path)
    assert img_tags(dom) == []


def test_output_paths_never_overwrite_inputs_or_escape(tmp_path):
    image = tmp_path / "evidence.jpg"
    shutil.copy(PHOTOS[0], image)
    original = image.read_bytes()
    with pytest.raises(OutputPathError, match="refusing to overwrite"):
        check_output_paths(tmp_path / "r.html", image, [image])
    with pytest.raises(OutputPathError, match="refusing to overwrite"):
        check_output_paths(tmp_path / "evidence.html", None, [tmp_path / "evidence.json",
                                                             image])  # twin would hit an input
    with pytest.raises(OutputPathError, match="refusing to overwrite"):
        check_output_paths(image, None, [image])
    link = tmp_path / "link.html"
    link.symlink_to(image)
    with pytest.raises(OutputPathError, match="symbolic link"):
        check_output_paths(link, None, [])
    with pytest.raises(OutputPathError, match="does not exist"):
        check_output_paths(tmp_path / "missing" / "r.html", None, [])
    with pytest.raises(OutputPathError, match="different names"):
        check_output_paths(tmp_path / "r.json", None, [])
    assert image.read_bytes() == original
    # the twin's name comes from the HTML name and always sits in the same folder
    weird = tmp_path / "..%2f..%2fetc%2fpasswd.html"
    assert twin_json_path(str(weird)) == str(tmp_path / "..%2f..%2fetc%2fpasswd.json")


def test_render_escapes_every_field():
    document = {"report": {"version": "<v>", "generated_at_utc": "<t>", "sanitized": False,
                           "algorithms": ["<a>"], "thresholds": {"<a>": "<d>"},
                           "database": {"path": "<db>", "items": "<n>"}},
                "clusters": [{"cluster": "<c>", "size": "<s>", "members": [
                    {"path": "<p>", "sha256": "<h>", "quality": "<q>", "distance": 0}]}],
                "errors": [{"path": "<e>", "error": "<r>"}]}
    page = render_html(document, {"<p>": "data:x\"><script>"}, "<sha>", "<name>")
    body = page.split("</style>", 1)[1]
    assert "<script" not in page and "<p>" not in body.replace("<p>No", "")
    assert not re.search(r"<(v|t|a|d|db|n|c|s|h|q|e|r|sha|name)>", body)


def test_hash_list_entry_never_shows_a_file_that_happens_to_sit_at_its_path(tmp_path):
    from hashmatch.hashlists import import_hash_list

    query = PHOTOS[10]
    decoy = tmp_path / "decoy.jpg"  # an unrelated picture at the path the list names
    shutil.copy(PHOTOS[11], decoy)
    fp = hm.hash_file(query)
    hash_list = tmp_path / "list.txt"
    hash_list.write_text(f"{fp.hex()},{fp.quality},{decoy}\n")
    with hm.Index.open(tmp_path / "db.hmdb", create=True) as index:
        assert import_hash_list(index, hash_list).imported
        document, thumbnails = build_query_report(index, [str(query)], workers=1)
    [match] = document["queries"][0]["matches"]
    assert match["path"] == str(decoy) and "hash-list entry" in match["stored_file"]["error"]
    assert sorted(thumbnails) == sorted([str(query), f"large:{query}"])  # no decoy pixels


def test_an_aligned_match_is_described_in_words():
    from hashmatch.formats import describe_how

    assert describe_how("original", "framed:2+aligned", "full") == \
        "as is, picture cut out of its frame, edges matched to the known image"
    assert describe_how("flipy", "full+aligned", "crop:l12") == \
        "mirrored, edges matched to the known image, cropped"


RECEIPTS = sorted((CORPUS / "receipts").glob("*.jpg"))
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def _tall_receipt(path):
    """A long till receipt (two scanned receipts end to end: 707 x 2000)."""
    top, bottom = Image.open(RECEIPTS[1]), Image.open(RECEIPTS[2])
    tall = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height), "white")
    tall.paste(top, (0, 0))
    tall.paste(bottom, (0, top.height))
    tall.save(path, quality=90)


def test_cli_report_summary_first_query_image_once_and_legible_tall_images(tmp_path):
    from conftest import run_cli

    known = tmp_path / "known"
    known.mkdir()
    _tall_receipt(known / "receipt.jpg")
    for p in PHOTOS[:3]:
        shutil.copy(p, known / p.name)
    db = tmp_path / "case.hmdb"
    assert run_cli("index", "--db", db, "-r", known, "-l", "price-list",
                   "-s", "referral 2024-05").returncode == 0
    queries = tmp_path / "queries"
    queries.mkdir()
    Image.open(known / "receipt.jpg").resize((600, 1697)).save(queries / "receipt-copy.jpg",
                                                               quality=70)
    ImageOps.mirror(Image.open(PHOTOS[0])).save(queries / "mirrored.jpg", quality=75)
    shutil.copy(PHOTOS[300], queries / "unrelated.jpg")
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("report", "--db", db, "-r", queries, "--html", out / "report.html")
    assert result.returncode == 0, result.stderr
    dom = dump_dom(out / "report.html", tmp_path)
    # the summary comes first and links to each section
    summary = dom.index("<h2>Summary</h2>")
    assert summary < dom.index("About this report") < dom.index('id="q1"')
    for number in (1, 2, 3):
        assert f'href="#q{number}"' in dom and f'id="q{number}"' in dom
    assert "no match" in dom and "very close" in dom or "identical fingerprints" in dom
    tags = img_tags(dom)
    assert sum('alt="image checked"' in t for t in tags) == 3  # once per query
    # the tall receipt has a larger view, in a <details> element (no script needed)
    larger = re.findall(r"<details><summary>Larger view</summary><img[^>]*>", dom)
    assert len(larger) >= 2
    sizes = [Image.open(io.BytesIO(base64.b64decode(re.search(r"base64,([^\"]+)", t)
                                                    .group(1)))).size for t in larger]
    assert max(h for _, h in sizes) >= 1600  # the receipt stays readable
    # plain words; technical terms only in the small technical line
    words = re.sub(r'<div class="tech">.*?</div>', "", dom)
    for jargon in ("embedded", "crop:", "score"):
        assert jargon not in words.split("<body>", 1)[1], jargon
    assert "How close" in dom and "How it matches" in dom
    shot = tmp_path / "report.png"
    _screenshot(out / "report.html", shot, tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report.png")
    opened = out / "report-opened.html"  # for the lead: the larger views unfolded
    opened.write_text((out / "report.html").read_text(encoding="utf-8")
                      .replace("<details>", "<details open>"), encoding="utf-8")
    _screenshot(opened, ARTIFACTS / "report-larger-views.png", tmp_path, height=3200)


def _screenshot(html_path, png_path, tmp_path, height=1800):
    result = subprocess.run(
        [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chromium-shot'}", f"--window-size=1300,{height}",
         f"--screenshot={png_path}", html_path.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and png_path.stat().st_size > 10_000, result.stderr[-2000:]
    assert Image.open(png_path).size == (1300, height)


def test_verdicts_show_in_the_summary_and_per_match():
    from hashmatch.report import render_html

    match = {"item_id": 4, "distance": 9, "algorithm": "pdq", "path": "/k/a.jpg",
             "source": "s", "labels": ["ad"], "meta": {}, "sha256": None,
             "query_region": "embedded:2", "query_variant": "original",
             "stored_region": "crop:b6", "stored_variant": "original", "query_quality": 90,
             "stored_quality": 80, "score": 21, "kind": "copy", "verified": True,
             "verdict": "same picture, edited", "evidence": {"agree": 0.93},
             "stored_file": {"path": "/k/a.jpg", "error": "file not on disk"}}
    document = {"report": {"version": "x", "generated_at_utc": "t", "sanitized": True,
                           "algorithms": ["pdq"], "thresholds": {"pdq": 76}},
                "queries": [{"file": {"path": "/q/b.jpg"}, "error": None, "fingerprints": [],
                             "matches": [match]}]}
    page = render_html(document, {}, "sha", "r.json")
    summary = page.split('id="q1"')[0]
    assert "same picture, edited" in summary and "known image 4" in summary
    card = page.split('id="q1"')[1]
    assert "same picture, edited" in card and "checked against the known picture" in card
    assert "score 21" in card  # technical detail kept, in the small line


def test_the_report_states_whether_regions_were_searched(tmp_path):
    with hm.Index.open(tmp_path / "pdq.hmdb", create=True) as index:
        assert index.uses_regions() and not index.uses_regions(False)
    with hm.Index.open(tmp_path / "flat.hmdb", create=True, regions=False) as index:
        assert not index.uses_regions() and index.uses_regions(True)
    # region fingerprints are PDQ only: an index querying phash never searches them
    with hm.Index.open(tmp_path / "phash.hmdb", create=True, algorithms=("phash",)) as index:
        assert not index.uses_regions(True)
        document, _ = build_query_report(index, [], regions=True, workers=1)
        assert document["report"]["options"]["regions"] is False
