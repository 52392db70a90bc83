"""The verification stage (hashmatch.verify): an absolute "same picture" test on the stored
thumbnail and keypoints, whatever else the database holds. Copies pass through the edits a
re-post brings; a picture made from the same template with another photo and other names,
and an unrelated picture, do not."""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

import hashmatch as hm
from hashmatch import decode, regions, verify

from conftest import CORPUS

PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))
RECEIPTS = sorted((CORPUS / "receipts").glob("*.jpg"))
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def _stored(image: Image.Image) -> verify.VerificationData:
    boxes = regions.find_boxes(image, framed=False)
    return verify.decode(verify.encode(image, boxes["content"], boxes["embedded"]))


def _grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"))


def _whole(grey: np.ndarray):
    return (0, 0, grey.shape[1], grey.shape[0])


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _card_design(portrait: Image.Image) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """The fixed part of the test cards' design: guilloche, header band and photo."""
    im = Image.new("RGB", (856, 540), (214, 226, 236))
    draw = ImageDraw.Draw(im)
    for i in range(0, 856 + 540, 18):
        draw.line([(i, 0), (i - 540, 540)], fill=(200, 214, 228), width=2)
    draw.rectangle([0, 0, 856, 78], fill=(22, 60, 120))
    draw.text((24, 18), "REPUBLIC OF ESTARIA", font=ImageFont.truetype(FONT, 30), fill="white")
    im.paste(ImageOps.fit(portrait, (230, 290)), (30, 110))
    return im, draw


def card(name: str, number: str, portrait: Image.Image) -> Image.Image:
    """An identity card of one fixed design: only the name, number and photo vary."""
    im, draw = _card_design(portrait)
    for k, (label, value) in enumerate([("Surname", name), ("Card No.", number)]):
        draw.text((290, 120 + 90 * k), label, font=ImageFont.truetype(FONT, 16), fill=(70, 80, 100))
        draw.text((290, 140 + 90 * k), value, font=ImageFont.truetype(FONT, 34), fill=(10, 10, 30))
    draw.rectangle([0, 420, 856, 540], fill=(236, 236, 230))
    draw.text((30, 450), f"IDEST{number}<<<<{name}<<<<<<", font=ImageFont.truetype(FONT, 30),
              fill=(20, 20, 20))
    return im


@pytest.fixture(scope="module")
def photo():
    return decode.decode(PHOTOS[5], mode="RGB").image


# The named two have a thumbnail that fills its room but for a few bytes: the tile bitmaps
# must be counted in it.
@pytest.mark.parametrize("path", PHOTOS[:6] + RECEIPTS[:4] + [
    CORPUS / "photos" / "235230d6-8a23-4981-bc43-5e62c0570f44.jpg",
    CORPUS / "receipts" / "158.jpg"], ids=lambda p: p.name)
def test_stored_data_fits_the_budget_and_reads_back(path):
    image = decode.decode(path, mode="RGB").image
    boxes = regions.find_boxes(image, framed=False)
    blob = verify.encode(image, boxes["content"], boxes["embedded"])
    assert len(blob) <= verify.BUDGET_BYTES
    data = verify.decode(blob)
    assert data.thumb.dtype == np.uint8 and min(data.thumb.shape) >= 8
    nx, ny = verify.detail_grid(*image.size)
    assert data.detail.shape == (ny, nx, verify.DETAIL_BYTES) and nx * ny >= 200
    # Fine codes for the tiles with the most fine detail, none for flat tiles.
    assert data.fine_tiles.shape == (ny, nx)
    assert data.fine.shape == (int(data.fine_tiles.sum()), 2, 2, verify.FINE_CODE_BYTES)
    assert len(data.fine) <= verify.FINE_MAX_TILES
    assert not (data.fine_tiles & (data.detail[:, :, -1] & 1).astype(bool)).any()
    if path in RECEIPTS:  # text: finer than a tile's code holds
        assert len(data.fine) >= 10
    h, w = data.thumb.shape
    assert data.region_box("full") == (0.0, 0.0, float(w), float(h))
    l, t, r, b = data.region_box("crop:lt12")
    cl, ct, cr, cb = data.content
    assert l > cl and t > ct and r == pytest.approx(cr) and b == pytest.approx(cb)


def test_damaged_or_hostile_data_is_refused_not_trusted(photo):
    boxes = regions.find_boxes(photo, framed=False)
    blob = verify.encode(photo, boxes["content"], boxes["embedded"])
    data = verify.decode(blob)
    n_fine = len(data.fine)
    assert n_fine > 0
    at = verify._HEADER.size - 2  # the header's last field: how many tiles have fine codes
    more_fine = blob[:at] + struct.pack("<H", n_fine + 1) + blob[at + 2:]
    # A fine-tile bit set that the count does not know (lengths still add up).
    bitmap = len(blob) - n_fine * verify.FINE_BYTES - (data.fine_tiles.size + 7) // 8
    unset = int(np.flatnonzero(~data.fine_tiles.ravel())[0])
    flipped = bytearray(blob)
    flipped[bitmap + unset // 8] |= 0x80 >> (unset % 8)
    for bad in (b"", blob[:10], b"XXXX" + blob[4:], blob[:-1], blob + b"\0",
                blob[:4] + struct.pack("<HH", 60000, 60000) + blob[8:], b"\xff" * 3000,
                "text", more_fine, bytes(flipped)):
        with pytest.raises(verify.VerificationDataError):
            verify.decode(bad)


@pytest.mark.parametrize("edit", ["jpeg", "shrink", "mirror", "quarter-turn", "greyscale",
                                  "crop", "border", "caption"])
def test_a_copy_is_the_same_picture_through_re_post_edits(photo, edit):
    stored = _stored(photo)
    w, h = photo.size
    variant, box = "original", None
    if edit == "jpeg":
        query = _jpeg(photo, 35)
    elif edit == "shrink":
        query = photo.resize((w // 3, h // 3), Image.Resampling.BILINEAR)
    elif edit == "mirror":
        query, variant = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "flipy"
    elif edit == "quarter-turn":
        # The query turned a quarter clockwise; its "rot90" (a quarter back) is the stored one.
        query, variant = photo.transpose(Image.Transpose.ROTATE_270), "rot90"
    elif edit == "greyscale":
        query = ImageOps.grayscale(photo).convert("RGB")
    elif edit == "crop":
        query = photo.crop((int(w * 0.12), int(h * 0.1), w, h))
    elif edit == "caption":  # a band with text painted across a sixth of the picture
        query = photo.copy()
        draw = ImageDraw.Draw(query)
        draw.rectangle([0, int(h * 0.55), w, int(h * 0.72)], fill=(200, 30, 40))
        draw.text((w * 0.05, h * 0.58), "CALL +44 7700 900123",
                  font=ImageFont.truetype(FONT, max(12, h // 14)), fill="white")
        query = _jpeg(query, 85)
    else:  # a border the search did not trim
        query = ImageOps.expand(photo, border=(60, 40, 60, 120), fill=(255, 255, 255))
        box = (60, 40, 60 + w, 40 + h)
    grey = _grey(query)
    region = "crop:lt12" if edit == "crop" else "full"
    verdict = verify.verify_pair(grey, box or _whole(grey), variant, stored, region)
    assert verdict.kind == "copy", verdict.evidence

@pytest.mark.parametrize("degrees", [1.0, -3.0, 3.0])
def test_a_copy_turned_a_few_degrees_and_cut_to_its_inner_box_is_the_same_picture(photo,
                                                                                 degrees):
    # The search pairs the whole query with the stored picture upright; a smooth photo gains
    # too little correlation per degree on the thumbnail for the descent from upright to
    # turn it, so the verifier must find the turn itself.
    w, h = photo.size
    t = abs(np.tan(np.radians(degrees)))
    dx, dy = round(h * t / 2) + 1, round(w * t / 2) + 1
    query = _jpeg(photo.rotate(degrees, Image.Resampling.BICUBIC).crop((dx, dy, w - dx, h - dy)),
                  85)
    grey = _grey(query)
    verdict = verify.verify_pair(grey, _whole(grey), "original", _stored(photo), "full")
    assert verdict.kind == "copy", verdict.evidence
    # (the pose turns the stored picture onto the query: the other way round)
    assert abs(verdict.evidence["angle"] + degrees) <= 1.25


def test_an_unrelated_photo_is_not_the_same_picture(photo):
    stored = _stored(photo)
    for other in PHOTOS[10:16]:
        grey = _grey(decode.decode(other, mode="RGB").image)
        verdict = verify.verify_pair(grey, _whole(grey), "original", stored, "full")
        assert verdict.kind != "copy", (other.name, verdict.evidence)


def test_a_card_of_the_same_design_with_another_photo_and_name_is_a_template_not_a_copy():
    portraits = [decode.decode(p, mode="RGB").image for p in PHOTOS[20:22]]
    known = card("HADDAD", "E48213377", portraits[0])
    sibling = card("KHALIL", "E91550264", portraits[1])
    stored = _stored(known)
    grey = _grey(_jpeg(sibling, 80))
    verdict = verify.verify_pair(grey, _whole(grey), "original", stored, "full")
    assert verdict.kind == "template", verdict.evidence
    # ... while the card itself, re-encoded, is the same picture.
    grey = _grey(_jpeg(known, 60))
    assert verify.verify_pair(grey, _whole(grey), "original", stored, "full").kind == "copy"


def test_an_unknown_card_matches_none_of_many_stored_cards_of_its_design(tmp_path):
    # More same-design siblings within PDQ's radius than the query verifies: the ones it
    # did not verify have pixels, so they are unchecked, never "whole-image hash matches".
    portrait = decode.decode(PHOTOS[20], mode="RGB").image
    names = ["HADDAD", "KHALIL", "NASSER", "SALEH", "YOUSEF", "AZIZ", "RAHMAN", "TAHIR",
             "FARAH", "OMAR"]
    paths = []
    for k, name in enumerate(names):
        paths.append(tmp_path / f"card{k}.jpg")
        card(name, f"E{48213377 + 7919 * k}", portrait).save(paths[-1], quality=90)
    unknown = tmp_path / "unknown.jpg"
    card("MANSOUR", "E91550264", portrait).save(unknown, quality=90)
    with hm.Index.open(str(tmp_path / "cards.hmdb"), create=True) as index:
        index.add_files(paths)
        leads = index.query(unknown, templates=True)
        assert len(leads) >= 4 and all(m.kind == "template" for m in leads), \
            [(m.kind, m.verdict) for m in leads]
        assert index.query(unknown) == []
        # ... while a stored card, re-encoded, is found first, as a verified copy.
        _jpeg(card(names[7], f"E{48213377 + 7919 * 7}", portrait), 70).save(tmp_path / "q.jpg")
        found = index.query(tmp_path / "q.jpg")
        assert found[0].path == str(paths[7]) and found[0].verified
        assert all(m.verified for m in found)


def dense_card(fields: list[str], portrait: Image.Image) -> Image.Image:
    """A card of another fixed design with six fields in small type under their labels, and
    a machine-readable line."""
    im, draw = _card_design(portrait)
    labels = ["Surname", "Given names", "Nationality", "Date of birth", "Place of birth",
              "Card No."]
    for k, (label, value) in enumerate(zip(labels, fields)):
        draw.text((290, 105 + 50 * k), label, font=ImageFont.truetype(FONT, 14),
                  fill=(70, 80, 100))
        draw.text((290, 123 + 50 * k), value, font=ImageFont.truetype(FONT, 22),
                  fill=(10, 10, 30))
    draw.rectangle([0, 420, 856, 540], fill=(236, 236, 230))
    draw.text((30, 440), f"IDEST{fields[5]}<<<<<<<<<<<<<<<", font=ImageFont.truetype(FONT, 26),
              fill=(20, 20, 20))
    return im


def test_a_card_with_the_same_names_and_other_details_and_photo_is_not_a_copy():
    """A hard sibling: same design and same names; the photo (one area, as a sticker would
    cover), the place of birth and the digits of two fields differ. Text in small type is
    finer than a tile's code holds and differs in a tile's weaker coefficients: the fine
    codes and every coefficient above the noise must count (HMV3 codes called it a copy)."""
    portraits = [decode.decode(p, mode="RGB").image for p in PHOTOS[40:42]]
    known = ["QURESHI", "KARIM", "ESTARIAN", "12.01.1968", "BERLIN", "E70441399"]
    other = ["QURESHI", "KARIM", "ESTARIAN", "09.09.1975", "HAMBURG", "E28470519"]
    stored = _stored(dense_card(known, portraits[0]))
    for quality in (90, 60):
        grey = _grey(_jpeg(dense_card(other, portraits[1]), quality))
        verdict = verify.verify_pair(grey, _whole(grey), "original", stored, "full")
        assert verdict.kind != "copy", verdict.evidence
        grey = _grey(_jpeg(dense_card(known, portraits[0]), quality))
        assert verify.verify_pair(grey, _whole(grey), "original", stored, "full").kind == "copy"


def test_a_covered_copy_says_how_much_is_covered(photo):
    stored = _stored(photo)
    w, h = photo.size
    query = photo.copy()
    ImageDraw.Draw(query).rounded_rectangle([w * 0.55, h * 0.1, w * 0.9, h * 0.4], radius=12,
                                            fill=(250, 220, 0))
    grey = _grey(_jpeg(query, 85))
    verdict = verify.verify_pair(grey, _whole(grey), "original", stored, "full")
    assert verdict.kind == "copy", verdict.evidence
    words = verify.copy_words(20, "original", "full", "full", verdict.evidence)
    assert words.startswith("same picture, edited: ") and "covered" in words, words


def test_a_receipt_of_the_same_shop_with_other_lines_is_not_a_copy():
    """Two real receipts of one shop, printed minutes apart (SROIE 124 and 125): same
    header, same layout, other item, other totals. The closest sibling pair of the corpus."""
    stored = _stored(decode.decode(CORPUS / "receipts" / "124.jpg", mode="RGB").image)
    other = decode.decode(CORPUS / "receipts" / "125.jpg", mode="RGB").image
    for query in (other, _jpeg(other, 50)):
        grey = _grey(query)
        verdict = verify.verify_pair(grey, _whole(grey), "original", stored, "full")
        assert verdict.kind == "template", verdict.evidence
    itself = _grey(_jpeg(decode.decode(CORPUS / "receipts" / "124.jpg", mode="RGB").image, 50))
    assert verify.verify_pair(itself, _whole(itself), "original", stored, "full").kind == "copy"


def test_index_reports_strength_and_keeps_unknown_images_out(tmp_path):
    portraits = [decode.decode(p, mode="RGB").image for p in PHOTOS[30:33]]
    known_card = tmp_path / "card.png"
    card("HADDAD", "E48213377", portraits[0]).save(known_card)
    sibling = io.BytesIO()
    card("KHALIL", "E91550264", portraits[1]).save(sibling, "PNG")
    with hm.Index.open(tmp_path / "case.hmdb", create=True) as index:
        index.add_files([known_card, *PHOTOS[:12]], workers=1)
        copy = index.query(_jpeg(Image.open(known_card), 70))
        assert [m.path for m in copy][:1] == [str(known_card)]
        assert copy[0].verified is True and copy[0].kind == "copy"
        assert copy[0].verdict.startswith("same picture") and "detail_agree" in copy[0].evidence
        # A sibling of the same design is never reported as the same picture, even when the
        # search is widened so far that it is a candidate...
        assert index.query(sibling.getvalue()) == []
        assert index.query(sibling.getvalue(), max_distance=128) == []
        # ... and is a clearly named lead when asked for.
        leads = index.query(sibling.getvalue(), templates=True, max_distance=128)
        assert [(m.kind, m.verified) for m in leads] == [("template", False)]
        assert "template" in leads[0].verdict
        for unknown in PHOTOS[300:312]:
            assert index.query(unknown) == [], unknown.name


def test_hash_list_items_keep_the_plain_pdq_rule_and_say_so(tmp_path):
    image = decode.decode(PHOTOS[7], mode="RGB").image
    with hm.Index.open(tmp_path / "list.hmdb", create=True) as index:
        index.add_hashes([hm.hash_image(image).hex()], meta={"list": "partner"})
        found = index.query(_jpeg(image, 60))
        assert len(found) == 1 and found[0].verified is None
        assert "not verified" in found[0].verdict
        # Cropped by a fifth, the whole-image hash is far: the plain rule does not stretch.
        w, h = image.size
        assert index.query(image.crop((int(w * 0.2), 0, w, h))) == []


def test_an_older_database_is_upgraded_and_its_items_keep_matching(tmp_path):
    """A database made before the verification table (schema 1) opens, gains the table, and
    its items match by the plain PDQ rule until indexed again."""
    import sqlite3

    path = tmp_path / "old.hmdb"
    image = decode.decode(PHOTOS[8], mode="RGB").image
    with hm.Index.open(path, create=True) as index:
        index.add_files([PHOTOS[8]], workers=1)
    db = sqlite3.connect(path)
    with db:
        db.execute("DROP TABLE verification")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.close()
    with hm.Index.open(path) as index:
        assert index.stats()["schema_version"] == 2
        found = index.query(_jpeg(image, 70))
        assert [m.verified for m in found] == [None]
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM verification").fetchone() == (0,)
    db.close()


@pytest.mark.parametrize("magic", [b"HMV2", b"HMV3"])
def test_data_of_an_older_version_is_not_trusted_and_is_replaced_on_re_index(tmp_path, magic):
    """Verification data in an older format (HMV2: 0.2's thumbnail and keypoints; HMV3:
    detail codes without fine codes) is neither decoded nor counted as checkable; indexing
    the folder again (which otherwise skips unchanged files) replaces it."""
    import sqlite3

    from conftest import run_cli

    folder = tmp_path / "known"
    folder.mkdir()
    image = decode.decode(PHOTOS[9], mode="RGB").image
    image.save(folder / "a.jpg", quality=92)
    db = tmp_path / "old.hmdb"
    assert run_cli("index", "--db", db, "-r", folder).returncode == 0
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE verification SET data = ?", (magic + bytes(200),))
    con.close()
    with hm.Index.open(db) as index:
        assert index.stats()["verifiable_items"] == 0
        assert [m.verified for m in index.query(_jpeg(image, 70))] == [None]
    assert run_cli("index", "--db", db, "-r", folder).returncode == 0
    with hm.Index.open(db) as index:
        assert index.stats()["verifiable_items"] == 1
        assert [m.verified for m in index.query(_jpeg(image, 70))] == [True]


def test_verification_data_is_kept_in_the_store_and_fetched_for_candidates(tmp_path):
    with hm.Index.open(tmp_path / "v.hmdb", create=True) as index:
        report = index.add_files(PHOTOS[:3], workers=1)
        ids = [o.item_id for o in report.outcomes]
        stored = index.store.get_verification(ids + [999])
        assert sorted(stored) == sorted(ids)
        assert all(len(blob) <= verify.BUDGET_BYTES for blob in stored.values())


def test_cli_says_how_strong_a_match_is_and_lists_template_leads_only_when_asked(tmp_path):
    from conftest import run_cli

    examples = Path(__file__).resolve().parent.parent / "examples"
    db = tmp_path / "demo.hmdb"
    assert run_cli("index", "--db", db, "-r", examples / "known").returncode == 0
    copy = run_cli("query", "--db", db, examples / "reposts" / "id-card-resized.jpg")
    assert copy.returncode == 0 and "same picture" in copy.stdout, copy.stdout
    sibling = examples / "reposts" / "other-id-card.jpg"  # same design, other name and photo
    plain = run_cli("query", "--db", db, sibling)
    assert plain.returncode == 1 and "no match" in plain.stdout, plain.stdout
    leads = run_cli("query", "--db", db, "--templates", "--json", sibling)
    assert leads.returncode == 1  # a lead is not a match
    (record,) = [json.loads(line) for line in leads.stdout.splitlines()]
    assert [(m["kind"], m["verified"]) for m in record["matches"]] == [("template", False)]
    assert record["matches"][0]["verdict"] == "same template, not a copy"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_info_says_how_many_images_matches_can_be_checked_on(tmp_path, backend, request):
    from conftest import run_cli

    db = str(tmp_path / "c.hmdb") if backend == "sqlite" else \
        request.getfixturevalue("pg").new_database()
    with hm.Index.open(db, create=True) as index:
        index.add_files(PHOTOS[:2], workers=1)
        index.add_hashes([hm.hash_file(PHOTOS[3]).hex()])
        assert index.stats()["verifiable_items"] == 2
    result = run_cli("info", "--db", db)
    assert "2 of 3 images: matches are checked on a stored copy" in result.stdout, result.stdout
    assert "the other 1 (hash-list entries" in result.stdout
