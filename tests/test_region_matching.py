"""The Index's default query finds re-posts in new frames (borders, memes, posts, small
rotations) through region fingerprints, and its decision rule keeps unrelated and
near-duplicate items straight. Data: the bundled examples and the public corpus."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edits
import hashmatch as hm
from conftest import CORPUS

ROOT = Path(__file__).resolve().parent.parent

KNOWN = sorted((ROOT / "examples" / "known").glob("*"))
REPOSTS = ROOT / "examples" / "reposts"
PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))


def jpeg_bytes(image: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory):
    path = tmp_path_factory.mktemp("regions") / "photos.hmdb"
    with hm.Index.open(path, create=True) as index:
        index.add_files(PHOTOS[:40], workers=1)
    with hm.Index.open(path) as index:
        yield index


def _names(matches):
    return [Path(m.path).name for m in matches]


def test_regions_find_the_meme_that_full_frames_miss(tmp_path):
    meme = REPOSTS / "poster-meme.jpg"
    with hm.Index.open(tmp_path / "full.hmdb", create=True, regions=False) as plain:
        plain.add_files(KNOWN, workers=1)
        assert "price-poster.jpg" not in _names(plain.query(meme))
    with hm.Index.open(tmp_path / "regions.hmdb", create=True) as index:
        index.add_files(KNOWN, workers=1)
        matches = index.query(meme)
        assert _names(matches)[:1] == ["price-poster.jpg"]
        assert matches[0].query_region != "full"  # the caption bar was cut away
        assert matches[0].score >= matches[0].distance
        assert index.query(REPOSTS / "unrelated-photo.jpg") == []


@pytest.mark.parametrize("edit", ["post", "phone_screenshot", "meme", "border_colour",
                                  "letterbox", "meme_mirror"])
def test_framed_copies_of_a_photo_match_it_and_only_it(photo_index, edit):
    source = PHOTOS[3]
    query = edits.apply_edit(edit, Image.open(source).convert("RGB"), seed=11)
    matches = photo_index.query(jpeg_bytes(query))
    assert _names(matches) == [source.name], [(m.path, m.score, m.query_region) for m in matches]


def test_a_small_rotation_on_filled_corners_is_turned_back(photo_index):
    source = PHOTOS[5]
    turned = Image.open(source).convert("RGB").rotate(4, Image.Resampling.BICUBIC, expand=True,
                                                      fillcolor=(255, 255, 255))
    matches = photo_index.query(jpeg_bytes(turned))
    assert _names(matches) == [source.name]
    assert matches[0].query_region.removesuffix("+aligned") == "deskewed"


@pytest.mark.parametrize("photo, degrees", [(0, 3), (5, -3)])
def test_a_small_rotation_cut_to_its_inner_box_is_turned_back_and_regrown(photo_index, photo,
                                                                          degrees):
    source = PHOTOS[photo]
    turned = edits.turn_inner(Image.open(source).convert("RGB"), degrees)
    matches = photo_index.query(jpeg_bytes(turned))
    assert _names(matches) == [source.name]
    # These photos show no straight edges to measure the angle on: a fixed guess found them.
    assert matches[0].query_region.removesuffix("+aligned") == \
        ("turned:-2.5" if degrees > 0 else "turned:+2.5")


def test_a_small_rotation_of_a_photo_with_straight_edges_is_turned_back_by_its_angle(
        photo_index):
    source = PHOTOS[9]
    turned = edits.turn_inner(Image.open(source).convert("RGB"), -3)
    matches = photo_index.query(jpeg_bytes(turned))
    assert _names(matches) == [source.name]
    assert matches[0].query_region.removesuffix("+aligned") == "straightened"


def test_photos_that_are_not_in_the_index_match_nothing(photo_index):
    for path in PHOTOS[-12:]:
        for edit in ("post", "crop_10", "border_white"):
            query = edits.apply_edit(edit, Image.open(path).convert("RGB"), seed=5)
            assert photo_index.query(jpeg_bytes(query)) == [], (path.name, edit)


def test_near_duplicates_in_the_index_do_not_cancel_each_other(tmp_path):
    source = Image.open(PHOTOS[7]).convert("RGB")
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(jpeg_bytes(source, quality=40))  # another file, same picture
    with hm.Index.open(tmp_path / "dups.hmdb", create=True) as index:
        index.add_files([PHOTOS[7], copy] + PHOTOS[20:30], workers=1)
        cropped = edits.crop_sides(source, (0.03, 0.0, 0.0, 0.01))  # ~30-50 bits off both
        matches = index.query(jpeg_bytes(cropped))
        assert sorted(_names(matches)) == sorted([PHOTOS[7].name, "copy.jpg"])
        # asked for every item within the radius instead, the answer is the same here
        assert sorted(_names(index.query(jpeg_bytes(cropped), margin=0))) == \
            sorted(_names(matches))


def test_query_hashes_is_plain_pdq_on_an_index_with_regions(photo_index):
    fp = hm.hash_file(PHOTOS[3])
    (matches,) = photo_index.query_hashes([fp])
    assert _names(matches) == [PHOTOS[3].name] and matches[0].stored_region == "full"
    assert matches[0].distance == matches[0].score


@pytest.mark.parametrize("item_order", [[1, 1, 2, 2, 3], [3, 2, 2, 1, 1]])
def test_each_items_full_frame_row_is_found_in_any_row_order(item_order):
    from hashmatch.shard import Shard

    shard = Shard("pdq", 256)
    regions = ["full", "content", "content", "full", "full"] if item_order[0] == 1 else \
        ["full", "content", "full", "content", "full"]
    codes = np.random.default_rng(0).integers(0, 256, (5, 32), dtype=np.uint8)
    shard.append(np.arange(5), item_order, codes, regions, ["original"] * 5, [100] * 5)
    rows = shard.full_rows_of([1, 2, 3], [-1, -1, -1])
    for item, row in zip([1, 2, 3], rows):
        assert shard.item_ids[row] == item and shard.names[shard.region_codes[row]] == "full"


@pytest.fixture(scope="module")
def id_card_index(tmp_path_factory):
    """Twelve ID cards of one template (names, numbers, portraits differ): each other's
    hard negatives."""
    folder = tmp_path_factory.mktemp("cards")
    portraits = [Image.open(p).convert("RGB").reduce(2) for p in PHOTOS[:12]]
    paths = []
    for i in range(12):
        path = folder / f"card{i:02d}.png"
        edits.make_advert("id", 3 * i, portraits).save(path)
        paths.append(path)
    with hm.Index.open(folder / "cards.hmdb", create=True) as index:
        index.add_files(paths, workers=1)
    with hm.Index.open(folder / "cards.hmdb") as index:
        yield index, paths


@pytest.mark.parametrize("card, fractions", [(2, (0.09, 0.0, 0.0, 0.02)),
                                             (5, (0.0, 0.1, 0.04, 0.0)),
                                             (8, (0.03, 0.03, 0.08, 0.05))])
def test_a_cropped_card_is_told_from_its_template_siblings_by_alignment(
        id_card_index, card, fractions):
    """Cropped between two stored crop windows, a card is 40-80 bits from its source and
    within the margin of its siblings; aligning the query to each close item locks onto the
    source only."""
    from hashmatch.regions import RegionConfig

    index, paths = id_card_index
    query = jpeg_bytes(edits.crop_sides(Image.open(paths[card]).convert("RGB"), fractions))
    matches = index.query(query)
    assert _names(matches) == [paths[card].name], [(m.path, m.score) for m in matches]
    assert matches[0].distance <= 32
    assert matches[0].query_region.endswith("+aligned")  # Match says the box was moved
    # Without alignment the pair is too loose to verify as a copy: listed as a lead at most.
    with hm.Index.open(index.path, region_config=RegionConfig(align=False)) as unaligning:
        unaligned = unaligning.query(query, margin=0, max_distance=128, templates=True)
    assert min(m.distance for m in unaligned if m.path == str(paths[card])) > \
        matches[0].distance + 12


def test_the_region_config_of_an_index_reaches_its_worker_processes(tmp_path):
    """What Index.open(region_config=...) switches off, the hashing in worker processes
    leaves out: without crop windows no stored row is one (the default stores them)."""
    from hashmatch.regions import RegionConfig, RegionName

    kinds = {}
    for config in (RegionConfig(), RegionConfig(store_crop_windows=False)):
        with hm.Index.open(tmp_path / f"{config.store_crop_windows}.hmdb", create=True,
                           region_config=config) as index:
            assert not index.add_files(PHOTOS[:2], workers=2).failed
            kinds[config.store_crop_windows] = {
                RegionName.parse(name).kind for name in index.fingerprint_rows().regions}
    assert "crop" in kinds[True] and "crop" not in kinds[False] and "full" in kinds[False]
