"""`hashmatch serve` over HTTP: the real server in a subprocess (one worker, SQLite), called
with httpx. HMA-compatible endpoints (driven by an HMA-shaped client), /v1, auth, hostile
input (never a 500), metrics, OpenAPI, audit."""
from __future__ import annotations

import io
import json
import random

import httpx
import pytest
from PIL import Image, ImageOps

import hashmatch as hm
from hashmatch.store import open_store

from conftest import CORPUS
from test_serve_server import ServeProcess, make_token

PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))
# PdqSignal.get_examples()[:3] of python-threatexchange (pdq/data/bridge-mods): near each other.
PDQ_EXAMPLES = [
    "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
    "f8f8f0cee0f4a84f06370a2a038f63f0b36e26d596621e1d33e6b39c4e9c9b22",
    "f8f8f0cee0f4a84f0637022a038f67f0b36e26d596621e1d33e6b39c4e9c9b22",
]
FAR = "5" * 64


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    db = root / "serve.hmdb"
    with hm.Index.open(db, create=True) as index:  # an investigator's indexed files
        index.add_files(PHOTOS[:3], labels=["case-A"], source="seized phone", workers=1)
    tokens = {"curate": make_token(db, "curator-1", "curate"),
              "match": make_token(db, "platform-1", "match")}
    with ServeProcess(db, 1, root / "serve.log") as process:
        process.tokens = tokens
        yield process


def client(server, role="curate") -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.tokens[role]}"} if role else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def jpeg_bytes(path, mirror=False, quality=80) -> bytes:
    image = Image.open(path).convert("RGB")
    if mirror:
        image = ImageOps.mirror(image)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# -- an HMA client, written against HMA's API (OpenMediaMatch blueprints) --------------------
def hma_client_script(base_url: str, token: str, photo: bytes, other: bytes) -> dict:
    """What a platform's HMA integration does: make a bank, bank hashes and a photo, look
    them up by hash and by upload, read and remove content, delete the bank."""
    seen = {}
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as c:
        r = c.post("/c/banks", json={"name": "TEST_BANK"})
        assert r.status_code == 201 and r.json() == {"matching_enabled_ratio": 1.0,
                                                     "name": "TEST_BANK"}, r.text
        assert c.post("/c/banks", json={"name": "my_test_bank"}).status_code == 400
        assert c.post("/c/banks", json={"name": "01_TEST_BANK"}).status_code == 400
        assert c.post("/c/banks", json={"name": "TEST_BANK"}).status_code == 403
        assert {"name": "TEST_BANK", "matching_enabled_ratio": 1.0} in c.get("/c/banks").json()
        assert c.get("/c/bank/TEST_BANK").json()["name"] == "TEST_BANK"
        assert c.get("/c/bank/NO_SUCH_BANK").status_code == 404
        ids = []
        for pdq in PDQ_EXAMPLES:
            r = c.post("/c/bank/TEST_BANK/signal", json={"pdq": pdq})
            assert r.status_code == 200 and r.json()["signals"] == {"pdq": pdq}, r.text
            ids.append(r.json()["id"])
        status = c.get("/m/index/status?signal_type=pdq").json()
        assert status["pdq"]["present"] is True and status["pdq"]["size"] >= 3
        r = c.get(f"/m/lookup?signal_type=pdq&signal={PDQ_EXAMPLES[-1]}")
        assert r.status_code == 200
        found = {m["bank_content_id"]: m["distance"] for m in r.json()["TEST_BANK"]}
        assert found[ids[-1]] == "0" and set(ids) <= set(found)
        assert c.get(f"/m/lookup?signal_type=pdq&signal={FAR}").json() == {}
        r = c.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": PDQ_EXAMPLES[0]})
        assert set(ids) <= set(r.json()["matches"])
        r = c.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": PDQ_EXAMPLES[0],
                                           "include_distance": "true", "banks": "TEST_BANK"})
        with_distance = r.json()["matches"]
        assert {m["bank_content_id"] for m in with_distance} == set(ids)
        assert all(isinstance(m["distance"], str) for m in with_distance)
        r = c.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": PDQ_EXAMPLES[0],
                                           "banks": "NON_EXISTENT_BANK"})
        assert r.json() == {"matches": []}
        # Hashing and banking a photo (multipart field named after the content type).
        r = c.post("/h/hash", files={"photo": ("a.jpg", photo, "image/jpeg")})
        assert r.status_code == 200, r.text
        photo_pdq = r.json()["pdq"]
        assert len(photo_pdq) == 64
        r = c.post("/c/bank/TEST_BANK/content", files={"photo": ("a.jpg", photo, "image/jpeg")},
                   data={"metadata": json.dumps({"content_id": "1197433091",
                                                 "json": {"asdf": {}}}), "note": "case 7"})
        assert r.status_code == 200, r.text
        content_id = r.json()["id"]
        assert r.json()["signals"] == {"pdq": photo_pdq}
        r = c.post("/m/lookup", files={"photo": ("b.jpg", photo, "image/jpeg")})
        assert r.status_code == 200 and {"bank_content_id": content_id, "distance": "0"} \
            in r.json()["pdq"]["TEST_BANK"], r.text
        assert c.post("/m/lookup", files={"photo": ("c.jpg", other, "image/jpeg")}
                      ).json() == {"pdq": {}}
        r = c.get(f"/c/bank/TEST_BANK/content/{content_id}?include_signals=true")
        assert r.status_code == 200, r.text
        content = r.json()
        assert content["id"] == content_id and content["signals"] == {"pdq": photo_pdq}
        assert content["bank"] == {"name": "TEST_BANK", "matching_enabled_ratio": 1.0}
        assert content["metadata"] == {"content_id": "1197433091", "json": {"asdf": {}}}
        assert content["note"] == "case 7"
        r = c.post("/m/compare", json={"pdq": [PDQ_EXAMPLES[0], PDQ_EXAMPLES[1]]})
        assert r.json() == {"pdq": [True, {"distance": hm.Fingerprint.from_hex(PDQ_EXAMPLES[0])
                                           - hm.Fingerprint.from_hex(PDQ_EXAMPLES[1])}]}
        # Disabled bank: /m/lookup leaves it out (coin flip), raw_lookup does not.
        assert c.put("/c/bank/TEST_BANK", json={"enabled": False}).json()[
            "matching_enabled_ratio"] == 0
        assert c.get(f"/m/lookup?signal_type=pdq&signal={PDQ_EXAMPLES[0]}").json() == {}
        assert c.get(f"/m/lookup?signal_type=pdq&signal={PDQ_EXAMPLES[0]}"
                     "&bypass_coinflip=true").json() != {}
        assert c.put("/c/bank/TEST_BANK", json={"enabled_ratio": 1.0}).status_code == 200
        r = c.delete(f"/c/bank/TEST_BANK/content/{content_id}")
        assert r.json() == {"deleted": 1}
        assert c.get(f"/c/bank/TEST_BANK/content/{content_id}").status_code == 404
        assert c.delete(f"/c/bank/TEST_BANK/content/{content_id}").json() == {"deleted": 0}
        seen["ids"] = ids
        assert c.delete("/c/bank/TEST_BANK").json() == {"message": "Done"}
        assert c.delete("/c/bank/TEST_BANK").status_code == 200  # deleting again is fine
        assert c.get(f"/m/raw_lookup?signal_type=pdq&signal={PDQ_EXAMPLES[0]}"
                     ).json()["matches"] == []
        assert c.get("/status").text == "I-AM-ALIVE"
    return seen


def test_hma_client_script_runs_unchanged(server):
    hma_client_script(server.url, server.tokens["curate"], jpeg_bytes(PHOTOS[10]),
                      jpeg_bytes(PHOTOS[11]))


def test_health_and_readiness_need_no_token(server):
    for path in ("/healthz", "/readyz", "/status", "/status/live"):
        assert httpx.get(server.url + path).status_code == 200, path
    assert httpx.get(server.url + "/readyz").json()["ready"] is True


def test_auth_missing_wrong_and_role(server):
    base = server.url
    probe = f"/m/raw_lookup?signal_type=pdq&signal={FAR}"
    r = httpx.get(base + probe)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(base + probe, headers={"Authorization": "Bearer hm_wrong"}).status_code == 401
    assert httpx.get(base + probe, headers={"Authorization": "Basic abc"}).status_code == 401
    assert httpx.get(base + probe, headers={"Authorization": "Bearer " + "x" * 5000}
                     ).status_code == 401
    with client(server, "match") as c:
        assert c.get(probe).status_code == 200
        writes = [c.post("/c/banks", json={"name": "MATCHER_BANK"}),
                  c.post("/c/bank/ANY/signal", json={"pdq": FAR}),
                  c.post("/v1/items/hashes", json={"hashes": [FAR]}),
                  c.delete("/v1/items/1"), c.delete("/c/bank/ANY"),
                  c.put("/c/bank/ANY", json={"enabled": False})]
        assert [w.status_code for w in writes] == [403] * len(writes)
        assert all("needs 'curate'" in w.json()["message"] for w in writes)
    for path in ("/metrics", "/v1/stats", "/c/banks", "/openapi.json"):
        expected = 200 if path == "/openapi.json" else 401
        assert httpx.get(base + path).status_code == expected, path


def test_revoked_token_stops_working(server, tmp_path):
    token = make_token(server.db, "short-lived", "match")
    probe = f"/m/raw_lookup?signal_type=pdq&signal={FAR}"
    headers = {"Authorization": f"Bearer {token}"}
    import time

    deadline = time.monotonic() + 10
    while httpx.get(server.url + probe, headers=headers).status_code != 200:
        assert time.monotonic() < deadline, "a new token was not picked up"
        time.sleep(0.1)
    from conftest import run_cli

    assert run_cli("token", "revoke", "short-lived", "--db", server.db).returncode == 0
    deadline = time.monotonic() + 10
    while httpx.get(server.url + probe, headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "a revoked token still works"
        time.sleep(0.1)


def test_v1_query_returns_every_match_field(server):
    with client(server, "match") as c:
        r = c.post("/v1/query", files={"file": ("q.jpg", jpeg_bytes(PHOTOS[1], mirror=True),
                                                "image/jpeg")})
        assert r.status_code == 200, r.text
        matches = r.json()["matches"]
        assert matches and matches[0]["labels"] == ["case-A"]
        assert matches[0]["path"].endswith(PHOTOS[1].name)
        for field in ("item_id", "distance", "score", "kind", "verified", "verdict", "evidence",
                      "query_region", "query_variant", "stored_region", "stored_variant",
                      "algorithm", "source", "sha256", "banks"):
            assert field in matches[0], field
        assert matches[0]["query_variant"] != "original"  # found mirrored
        r = c.post("/v1/query", files={"file": ("u.jpg", jpeg_bytes(PHOTOS[200]), "image/jpeg")})
        assert r.json()["matches"] == []


def test_v1_batch_lookup_and_items(server):
    rng = random.Random(7)
    stored = ["".join(rng.choice("0123456789abcdef") for _ in range(64)) for _ in range(50)]
    with client(server) as c:
        r = c.post("/v1/items/hashes", json={"hashes": stored, "labels": ["list-7"],
                                              "source": "partner list", "meta": {"k": 1}})
        assert r.status_code == 201, r.text
        ids = r.json()["item_ids"]
        assert len(ids) == 50
        queries = stored[:20] + [FAR] * 5
        r = c.post("/v1/lookup/hashes", json={"hashes": queries})
        results = r.json()["results"]
        assert len(results) == 25
        for k in range(20):
            assert {"item_id": ids[k], "distance": 0, "labels": ["list-7"], "banks": []} \
                in results[k]["matches"]
        assert all(res["matches"] == [] for res in results[20:])
        item = c.get(f"/v1/items/{ids[0]}").json()
        assert item["source"] == "partner list" and item["meta"] == {"k": 1}
        assert c.get("/v1/items/999999999").status_code == 404
        page = c.get("/v1/items?limit=1000").json()
        assert set(ids) <= {i["item_id"] for i in page["items"]}
        assert c.delete(f"/v1/items/{ids[0]}").json() == {"removed": 1}
        assert c.delete(f"/v1/items/{ids[0]}").json() == {"removed": 0}
        r = c.post("/v1/lookup/hashes", json={"hashes": [stored[0]]})
        assert all(m["item_id"] != ids[0] for m in r.json()["results"][0]["matches"])
        assert c.post("/v1/lookup/hashes", json={"hashes": [FAR] * 20_000}).status_code == 413


def test_writes_are_audited_with_the_token_name(server):
    with client(server) as c:
        assert c.post("/c/banks", json={"name": "AUDITED_BANK"}).status_code == 201
        assert c.post("/c/bank/AUDITED_BANK/signal", json={"pdq": FAR}).status_code == 200
    store = open_store(server.db)
    try:
        entries = store.audit_log(limit=50)
    finally:
        store.close()
    actions = {(e.action, e.detail.get("token")) for e in entries}
    assert ("bank-create", "curator-1") in actions
    assert ("bank-add-signal", "curator-1") in actions


def _bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, format="PNG")  # 144 Mpx in ~20 KB
    return buffer.getvalue()


def test_hostile_input_is_refused_with_clear_4xx_never_500(server):
    photo = jpeg_bytes(PHOTOS[5])
    bomb = _bomb_png()
    assert len(bomb) < 200_000
    uploads = {
        "bomb": bomb, "truncated": photo[: len(photo) // 2], "text": b"hello, not an image",
        "empty": b"", "svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "fake-jpeg": b"\xff\xd8\xff\xe0" + b"\x00" * 100, "pdf": b"%PDF-1.4\n%%EOF",
    }
    statuses = {}
    with client(server) as c:
        for name, data in uploads.items():
            for path, field in (("/h/hash", "photo"), ("/m/lookup", "photo"),
                                ("/v1/query", "file"), ("/c/bank/HOSTILE_BANK/content", "photo")):
                if path.startswith("/c/"):
                    c.post("/c/banks", json={"name": "HOSTILE_BANK"})
                r = c.post(path, files={field: (name, data, "image/jpeg")})
                statuses[(name, path)] = r.status_code
                assert 400 <= r.status_code < 500, (name, path, r.status_code, r.text)
                assert r.json()["message"], (name, path)
        assert statuses[("bomb", "/h/hash")] == 413
        assert "too large" in c.post("/h/hash", files={"photo": ("b", bomb)}).json()["message"]
        assert "not an image" in c.post("/h/hash", files={"photo": ("t", b"hi")}).json()["message"]
        big = c.post("/h/hash", files={"photo": ("big.jpg", b"\xff" * (21 * 1024 * 1024))})
        assert big.status_code == 413
        requests = [
            c.get("/m/raw_lookup?signal_type=pdq&signal=zz" + "0" * 62),
            c.get("/m/raw_lookup?signal_type=pdq&signal=" + "0" * 63),
            c.get("/m/raw_lookup?signal_type=pdq&signal=" + "0" * 100_00),
            c.get("/m/raw_lookup?signal_type=md5&signal=" + "0" * 64),
            c.get("/m/raw_lookup?signal=" + "0" * 64),
            c.get("/m/raw_lookup?signal_type=pdq&signal=%00%ff"),
            c.get(f"/m/raw_lookup?signal_type=pdq&signal={FAR}&include_distance=maybe"),
            c.get("/m/lookup"),
            c.get("/m/lookup?url=http://169.254.169.254/latest/meta-data"),
            c.get("/h/hash?url=http://127.0.0.1:1/x.jpg"),
            c.get("/m/index/status?signal_type=video_md5"),
            c.post("/m/compare", content=b"{not json"),
            c.post("/m/compare", json=[1, 2]),
            c.post("/m/compare", json={"pdq": "abc"}),
            c.post("/m/compare", json={"pdq": [FAR]}),
            c.post("/m/compare", json={"pdq": [FAR, 7]}),
            c.post("/m/compare", json={"tmk": [FAR, FAR]}),
            c.post("/h/hash", content=b"--x\r\nbroken", headers={
                "content-type": "multipart/form-data; boundary=x"}),
            c.post("/h/hash", json={"photo": "x"}),
            c.post("/h/hash", files={"video": ("v.mp4", b"x")}),
            c.post("/h/hash", files={"photo": ("a", photo), "photo2": ("b", photo)}),
            c.post("/h/hash?types=video_md5", files={"photo": ("a", photo)}),
            c.post("/c/banks", json={"name": "<script>alert(1)</script>"}),
            c.post("/c/banks", json={"name": None}),
            c.post("/c/banks", json={"name": "OK_NAME", "enabled_ratio": "lots"}),
            c.post("/c/banks", content=b"\xff\xfe"),
            c.post("/c/bank/NO_SUCH/signal", json={"pdq": FAR}),
            c.post("/c/bank/HOSTILE_BANK/signal", json={"pdq": "nothex"}),
            c.post("/c/bank/HOSTILE_BANK/signal", json={"md5": FAR}),
            c.post("/c/bank/HOSTILE_BANK/signal", json={}),
            c.post("/c/bank/HOSTILE_BANK/signal", json={"pdq": FAR, "note": "x" * 300}),
            c.post("/c/bank/HOSTILE_BANK/content?url=http://example.com/a.jpg"),
            c.post("/c/bank/HOSTILE_BANK/content", files={"photo": ("a", photo)},
                   data={"metadata": "{bad json"}),
            c.post("/c/bank/HOSTILE_BANK/content", files={"photo": ("a", photo)},
                   data={"metadata": json.dumps({"evil": 1})}),
            c.get("/c/bank/HOSTILE_BANK/content/abc"),
            c.get("/c/bank/HOSTILE_BANK/content/-5"),
            c.get("/c/bank/HOSTILE_BANK/content/99999999999999999999999"),
            c.get("/c/bank/..%2F..%2Fetc%2Fpasswd"),
            c.put("/c/bank/HOSTILE_BANK", json={"name": "RENAMED"}),
            c.put("/c/bank/HOSTILE_BANK/content/1", json={"disable_until_ts": 1}),
            c.post("/v1/lookup/hashes", json={"hashes": ["abc"]}),
            c.post("/v1/lookup/hashes", json={"hashes": []}),
            c.post("/v1/lookup/hashes", json={"hashes": [FAR], "algorithm": "sha1"}),
            c.post("/v1/lookup/hashes", json={"hashes": [FAR], "max_distance": 10_000}),
            c.post("/v1/lookup/hashes", json={"hashes": [1, 2]}),
            c.post("/v1/items/hashes", json={"hashes": [FAR], "labels": "notalist"}),
            c.post("/v1/items/hashes", json={"hashes": [FAR], "meta": [1]}),
            c.get("/v1/items?limit=0"), c.get("/v1/items?after=-1"), c.get("/v1/items/x"),
            c.post("/v1/query?max_distance=9999", files={"file": ("a", photo)}),
            c.post("/v1/query", content=b"x" * 1000, headers={"content-type": "image/jpeg"}),
            c.get("/no/such/path"), c.patch("/c/banks"),
        ]
        for r in requests:
            assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text[:300])
            assert r.headers["content-type"].startswith("application/json"), r.request.url
            assert r.json()["message"]
        assert requests[8].json()["message"].startswith("URL fetching is disabled")
        # The service is still fine afterwards.
        assert c.get(f"/m/raw_lookup?signal_type=pdq&signal={FAR}").status_code == 200
    log = server.log()
    assert "Traceback" not in log
    assert FAR not in log and "169.254.169.254" not in log  # no hashes or URLs logged


def test_metrics_and_openapi(server):
    with client(server, "match") as c:
        c.get(f"/m/raw_lookup?signal_type=pdq&signal={FAR}")
        text = c.get("/metrics").text
    assert 'hashmatch_http_requests_total{method="GET",route="/m/raw_lookup",status="200"}' in text
    assert "hashmatch_http_request_duration_seconds_bucket" in text
    assert "hashmatch_index_fingerprints" in text and "hashmatch_sync_lag_seconds" in text
    doc = httpx.get(server.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/m/raw_lookup", "/m/lookup", "/m/compare", "/m/index/status", "/h/hash",
                 "/c/banks", "/c/bank/{bank_name}/content", "/c/bank/{bank_name}/signal",
                 "/v1/query", "/v1/lookup/hashes", "/healthz", "/readyz"):
        assert path in doc["paths"], path
    assert doc["paths"]["/m/raw_lookup"]["get"]["security"] == [{"bearer": []}]


def test_security_headers(server):
    r = httpx.get(server.url + "/healthz")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "server" not in r.headers
    ui = httpx.get(server.url + "/ui")
    assert "default-src 'none'" in ui.headers["content-security-policy"]
    assert "<script" not in ui.text
