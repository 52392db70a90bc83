"""Regions: borders of any colour trimmed, embedded pictures of posts/screenshots found, crop
windows cover one-side crops, the decision rule keeps only distinct best matches."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from hashmatch import regions
from hashmatch.regions import RegionConfig, RegionName, tilt
from hashmatch.regions import boxes as region_boxes

import edits


def photo_like(seed: int, size=(400, 300)) -> Image.Image:
    """Smooth gradients + random ellipses + noise: texture everywhere, like a photo."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(x * rng.uniform(2, 8) + c) * np.cos(y * rng.uniform(2, 8) + c)
                     for c in rng.uniform(0, 6, 3)], axis=-1)
    arr = ((base + 1) * 100 + 20 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(arr)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        draw.ellipse([x0, y0, x0 + rng.integers(20, 120), y0 + rng.integers(20, 120)],
                     fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image


def jpeg(image: Image.Image, quality=70) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def padded(image, fractions, colour):
    w, h = image.size
    l, t, r, b = (round(f * s) for f, s in zip(fractions, (w, h, w, h)))
    out = Image.new("RGB", (w + l + r, h + t + b), colour)
    out.paste(image, (l, t))
    return out, (l, t, l + w, t + h)


@pytest.mark.parametrize("colour", [(255, 255, 255), (0, 0, 0), (40, 160, 90), (200, 30, 200)])
@pytest.mark.parametrize("fractions", [(0.1, 0.1, 0.1, 0.1), (0.03, 0.2, 0.15, 0.05),
                                       (0, 0.25, 0, 0.25), (0.3, 0, 0.3, 0)])
def test_content_box_trims_borders_of_any_colour_through_jpeg_noise(colour, fractions):
    seed = int(sum(colour) + 100 * sum(fractions))
    image, truth = padded(photo_like(seed), fractions, colour)
    boxes = regions.find_boxes(jpeg(image))
    assert regions.iou(boxes["content"], truth) > 0.95
    assert regions.iou(boxes["embedded"], truth) > 0.9


def test_no_border_keeps_the_full_frame():
    image = jpeg(photo_like(7))
    boxes = regions.find_boxes(image)
    assert boxes["content"] == boxes["full"] == (0, 0, *image.size)
    found = [r.name for r in regions.query_regions(image)]
    # No box but the frame; nothing else but the frame turned back by the fixed guesses (no
    # straight edges tell this picture's angle, nor that it stands upright).
    assert [name for name in found if not RegionName.parse(name).rebuilds_frame] == ["full"]
    assert all(name.startswith("turned:") for name in found[1:])


def test_straight_edges_give_the_angle_of_a_small_turn_cut_to_its_inner_box():
    poster = edits.price_poster(np.random.default_rng(3))
    for degrees in (2.6, -3.0, 4.5):
        turned = jpeg(edits.turn_inner(poster, degrees))
        angle, upright = tilt._content_tilt(turned.convert("L"))
        assert not upright and abs(angle + degrees) < 0.3, (degrees, angle)
        assert [r.name for r in regions.query_regions(turned)][-1] == "straightened"
    # Upright, the same edges say so: no turned-back frame is queried.
    assert tilt._content_tilt(jpeg(poster).convert("L")) == (None, True)
    assert not any(RegionName.parse(r.name).rebuilds_frame
                   for r in regions.query_regions(jpeg(poster)))


def test_a_turned_back_frame_has_the_size_of_the_frame_before_the_cut():
    picture = Image.new("L", (400, 300))
    cut = edits.turn_inner(picture, 3.0)
    restored = tilt._restored_frame(cut, -3.0)
    assert abs(restored.width - 400) <= 3 and abs(restored.height - 300) <= 3


def test_frames_inside_frames_are_all_trimmed():
    inner, truth_inner = padded(photo_like(3), (0.05,) * 4, (0, 0, 0))
    outer, truth_outer = padded(inner, (0.1,) * 4, (255, 255, 255))
    truth = (truth_outer[0] + truth_inner[0], truth_outer[1] + truth_inner[1],
             truth_outer[0] + truth_inner[2], truth_outer[1] + truth_inner[3])
    assert regions.iou(regions.find_boxes(jpeg(outer))["content"], truth) > 0.95


@pytest.mark.parametrize("seed", range(4))
def test_meme_caption_bars_are_trimmed(seed):
    picture = photo_like(seed)
    meme = edits.meme(picture, np.random.default_rng(seed))
    top = meme.height - picture.height  # bars: the picture is pasted below the top bar ...
    # ... find where: the meme pastes at (0, top_bar); recover it by matching rows.
    arr, pic = np.asarray(meme, dtype=int), np.asarray(picture, dtype=int)
    y0 = next(y for y in range(top + 1) if np.abs(arr[y:y + 5] - pic[:5]).mean() < 1)
    truth = (0, y0, picture.width, y0 + picture.height)
    assert regions.iou(regions.find_boxes(jpeg(meme, 85))["embedded"], truth) > 0.9


@pytest.mark.parametrize("seed", range(6))
def test_embedded_picture_of_a_post_is_found(seed):
    post, truth = edits.render_post(photo_like(seed), np.random.default_rng(seed))
    assert regions.iou(regions.find_boxes(jpeg(post, 85))["embedded"], truth) > 0.8


@pytest.mark.parametrize("seed", range(6))
def test_embedded_picture_of_a_phone_screenshot_is_found(seed):
    shot, truth = edits.render_phone_screenshot(photo_like(seed, (300, 400)),
                                                np.random.default_rng(seed))
    assert regions.iou(regions.find_boxes(shot)["embedded"], truth) > 0.8


@pytest.mark.parametrize("seed", range(4))
def test_card_with_its_own_flat_bands_is_queried_as_its_whole_frame_inside_padding(seed):
    """An ID card whose header and bottom band are flat colour, re-posted with white padding:
    trimming goes on into the card's own bands, so the final content box is smaller than the
    card; the earlier step (the card exactly) is queried too and matches the stored full
    frame far closer than the trimmed one."""
    rng = np.random.default_rng(seed)
    portraits = [photo_like(seed + 10 * k, (300, 400)) for k in range(3)]
    card = edits.fake_id_card(rng, portraits[seed % 3])
    query, truth = padded(card, (0.08, 0.12, 0.1, 0.06), (255, 255, 255))
    query = jpeg(query, 85)
    found = {region.name: region.box for region in regions.query_regions(query)}
    assert regions.iou(found["content"], truth) < 0.95  # went into the card's own bands
    best = max(found, key=lambda name: regions.iou(found[name], truth))
    assert best.startswith("content:") and regions.iou(found[best], truth) > 0.97


@pytest.mark.parametrize("side", range(4))
@pytest.mark.parametrize("amount", [0.05, 0.1, 0.15, 0.2])
def test_crop_windows_cover_one_side_crops(side, amount):
    """A copy cropped 5-20% on one side is within 8% (of the side) of some stored region."""
    box = (0, 0, 1000, 800)
    fractions = [0, 0, 0, 0]
    fractions[side] = amount
    l, t, r, b = box
    cropped = (l + 1000 * fractions[0], t + 800 * fractions[1],
               r - 1000 * fractions[2], b - 800 * fractions[3])
    stored = [box] + list(regions.crop_windows(box).values())
    error = min(max(abs(c - s) / d for c, s, d in zip(cropped, window, (1000, 800, 1000, 800)))
                for window in stored)
    assert error <= 0.08 + 1e-9


@pytest.mark.parametrize("sides", [(0, 2), (1, 3), (0, 1), (1, 2), (2, 3), (3, 0)])
@pytest.mark.parametrize("total", [0.05, 0.1, 0.15])
@pytest.mark.parametrize("share", [0.3, 0.5, 0.7])
def test_crop_windows_cover_two_side_crops(sides, total, share):
    """A copy cropped 5-15 % in all, split over two sides (opposite or adjacent), has every
    side within 5 % of some stored region (the full frame alone: up to 10.5 %)."""
    box = (0, 0, 1000, 800)
    fractions = [0.0, 0.0, 0.0, 0.0]
    fractions[sides[0]], fractions[sides[1]] = total * share, total * (1 - share)
    size = (1000, 800, 1000, 800)
    cropped = [edge + sign * f * d for edge, sign, f, d in
               zip(box, (1, 1, -1, -1), fractions, size)]
    stored = [box] + list(regions.crop_windows(box).values())
    error = min(max(abs(c - s) / d for c, s, d in zip(cropped, window, size))
                for window in stored)
    assert error <= 0.05 + 1e-9


def test_storage_and_query_regions_api():
    image, _ = padded(photo_like(11), (0.1,) * 4, (255, 255, 255))
    assert [r.name for r in regions.storage_regions(image)] == ["full", "content"]
    stored = regions.storage_regions(image, crops=True)
    queried = regions.query_regions(image)
    names = [r.name for r in stored]
    assert names[0] == "full" and "content" in names
    assert sum(n.startswith("crop:") for n in names) == len(regions.CROP_WINDOWS)
    assert len(stored) <= 32  # <= 1 KB of PDQ codes per item
    assert [r.name for r in queried][:2] == ["full", "content"]
    for region in stored + queried:  # a turned-back frame is a box of its own source
        l, t, r, b = region.box
        assert 0 <= l < r <= region.source.width and 0 <= t < b <= region.source.height
        assert region.image().size == (r - l, b - t)


def test_stored_codes_are_those_of_hashing_each_box_on_its_own():
    # storage_fingerprints hashes its boxes in one call (shared row stages); the stored
    # codes and qualities must be what hashing each region's pixels alone gives.
    from hashmatch.hashers.pdq import pdq_hash_image

    framed, _ = padded(photo_like(12, (330, 250)), (0.07, 0.12, 0.03, 0.2), (20, 20, 20))
    post, _ = edits.render_post(photo_like(13), np.random.default_rng(13))
    images = [jpeg(framed), jpeg(photo_like(14, (257, 301))), jpeg(post, 85),
              jpeg(framed).convert("L"), Image.new("RGB", (5, 3)),
              Image.new("RGB", (300, 200), (255, 255, 255))]
    for image in images:
        stored = regions.storage_fingerprints(image)
        pixels = region_boxes._pixels(image)
        expected = [(r.name, pdq_hash_image(image, exact=False) if r.name == "full"
                     else region_boxes._hash_box(pixels, r.box))
                    for r in regions.storage_regions(image, crops=True)]
        assert [(n, fp.bits.tobytes(), fp.quality) for n, fp in stored] == \
            [(n, fp.bits.tobytes(), fp.quality) for n, fp in expected]
    assert len(regions.storage_fingerprints(images[0])) > 10  # crop windows were stored


def test_flat_and_tiny_images_do_not_break():
    for image in (Image.new("RGB", (300, 200), (255, 255, 255)), Image.new("RGB", (5, 3)),
                  Image.new("L", (64, 64), 128)):
        found = regions.query_regions(image)
        assert found and found[0].name == "full"


def test_select_matches_keeps_only_a_clear_winner():
    d = np.array([[5 + 20, 40 + 20, 90],   # clear winner beyond the certain distance
                  [30, 33, 90],            # two template siblings: ambiguous, nothing
                  [90, 95, 95],            # the margin test does not invent matches...
                  [10, 12, 90]],           # ...but pairs this close always match
                 dtype=np.int32)
    out = regions.select_matches(d, max_distance=64, margin=10, certain=16)
    assert out.tolist() == [[True, False, False], [False, False, False],
                            [False, False, False], [True, True, False]]


def test_select_matches_near_duplicates_do_not_cancel_each_other():
    d = np.array([[40, 42, 80]], np.int32)  # items 0 and 1: one picture stored twice
    alone = regions.select_matches(d, max_distance=64, margin=10, certain=16)
    grouped = regions.select_matches(d, max_distance=64, margin=10, certain=16,
                                     groups=np.array([[0, 0, 2]]))
    assert not alone.any() and grouped.tolist() == [[True, True, False]]


def test_select_matches_at_a_smaller_radius_is_the_larger_answer_cut():
    rng = np.random.default_rng(1)
    d = rng.integers(0, 130, (300, 12)).astype(np.int32)
    wide = regions.select_matches(d, max_distance=128, margin=10, certain=16)
    for t in (20, 40, 64, 96):
        assert (regions.select_matches(d, max_distance=t, margin=10, certain=16)
                == (wide & (d <= t))).all()



def test_box_sides_snap_to_the_border_on_the_full_resolution_pixels():
    picture = photo_like(7, (600, 450))
    framed = Image.new("RGB", (600 + 2 * 37, 450 + 2 * 37), (0, 0, 0))
    framed.paste(picture, (37, 37))  # 37 px: not a multiple of the analysis copy's factor
    assert regions.find_boxes(framed)["content"] == (37, 37, 637, 487)
    coarse = regions.find_boxes(framed, config=RegionConfig(refine=False))["content"]
    assert coarse != (37, 37, 637, 487)  # what the refinement is for


def test_alignment_moves_a_query_box_onto_the_stored_window():
    """A copy cut 5 % on the left lies between the stored frame and its 12 % window; moved
    side by side towards the window's code, the query's frame lands on it."""
    from hashmatch.hashers.pdq import MIRROR, pdq_hash_image

    picture = photo_like(7, size=(800, 600))
    window = picture.crop((96, 0, 800, 600))  # the stored "crop:l12"
    target = pdq_hash_image(window, exact=False).bits
    query = jpeg(picture.crop((40, 0, 800, 600)))
    found = regions.query_regions(query)
    aligner = regions.Aligner.of(query, found)
    start = int(np.unpackbits(pdq_hash_image(query, exact=False).bits ^ target).sum())
    aligned, box = aligner.align("full", "original", target)
    assert start > 40 and aligned <= 20, (start, aligned)
    scale = query.width / aligner.greys[aligner.boxes["full"][0]].shape[1]
    assert abs(box[0] * scale - 56) <= 0.02 * query.width  # the 56 px the window lacks
    assert aligner.align("full", "flipy", target)[0] > 60  # the mirror image is no match
    # Remembered box hashes are the boxes' own, as is and mirrored, and stay in this process
    # (a copy made through __getstate__, as for the worker processes of query_many, has none).
    import copy

    grey = aligner.greys[aligner.boxes["full"][0]]
    for variant in ("original", "flipy"):
        assert aligner.fingerprint("full", box, variant) == (
            region_boxes._hash_box(grey, box, dihedral=True)[MIRROR] if variant == "flipy"
            else region_boxes._hash_box(grey, box))
    handed_over = copy.deepcopy(aligner)
    assert "_hashed" in vars(aligner) and "_hashed" not in vars(handed_over)
    assert handed_over.align("full", "original", target) == (aligned, box)


def test_turned_back_regions_are_aligned_on_their_own_grey_copy():
    """A picture turned on white corners is searched as its turned-back copy (deskewed);
    the aligner keeps that copy beside the query's own, and aligning never makes a pair
    worse."""
    from hashmatch.hashers.pdq import pdq_hash_image

    picture = photo_like(3, size=(600, 450))
    turned = jpeg(picture.rotate(4, Image.Resampling.BICUBIC, expand=True,
                                 fillcolor=(255, 255, 255)))
    found = regions.query_regions(turned)
    assert "deskewed" in [r.name for r in found]
    aligner = regions.Aligner.of(turned, found)
    source, _ = aligner.boxes["deskewed"]
    assert source != aligner.boxes["full"][0] and len(aligner.greys) == 2
    target = pdq_hash_image(picture, exact=False)
    start = aligner.fingerprint("deskewed", aligner.boxes["deskewed"][1]) - target
    aligned, _ = aligner.align("deskewed", "original", target.bits)
    assert aligned <= start and aligned <= 24, (start, aligned)
