"""PDQ exact mode is bit-identical to the C++ reference (pdqhash), hash and quality."""
import csv

import numpy as np
import pdqhash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import hashmatch as hm
from conftest import PDQ_REF, corpus_files
from hashmatch.fingerprint import Fingerprint
from hashmatch.hashers import pdq

REFERENCE_IMAGES = sorted(p for p in (PDQ_REF / "images").rglob("*") if p.is_file())


def reference_hash(rgb):
    vector, quality = pdqhash.compute(np.ascontiguousarray(rgb))
    return np.packbits(vector.astype(bool)), quality


def reference_dihedral(rgb):
    vectors, quality = pdqhash.compute_dihedral(np.ascontiguousarray(rgb))
    return np.stack([np.packbits(v.astype(bool)) for v in vectors]), quality


def assert_matches_reference(rgb):
    bits, quality = pdq.pdq_from_rgb(rgb)
    expected_bits, expected_quality = reference_hash(rgb)
    assert quality == expected_quality
    assert bits.tobytes().hex() == expected_bits.tobytes().hex()
    bits8, quality8 = pdq.pdq_dihedral_from_rgb(rgb)
    expected_bits8, expected_quality8 = reference_dihedral(rgb)
    assert quality8 == expected_quality8
    assert np.array_equal(bits8, expected_bits8)


def decode_rgb(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# -- real images ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", REFERENCE_IMAGES, ids=lambda p: str(p.relative_to(PDQ_REF)))
def test_reference_images(path):
    assert_matches_reference(decode_rgb(path))


def test_public_corpus():
    files = corpus_files()
    assert len(files) == 480
    for path in files:
        assert_matches_reference(decode_rgb(path))


def expected_rows():
    with open(PDQ_REF / "expected.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("row", expected_rows(), ids=lambda r: r["path"])
def test_expected_csv(row):
    rgb = decode_rgb(PDQ_REF / row["path"])
    fp = pdq.pdq_hash_image(Image.open(PDQ_REF / row["path"]))
    assert (fp.hex(), fp.quality) == (row["pdq"], int(row["quality"]))
    bits, quality = pdq.pdq_from_rgb(rgb)
    assert bits.tobytes().hex() == row["pdq"]
    variants = pdq.pdq_hash_image(rgb, dihedral=True)
    assert [v.hex() for v in variants] == [row[f"dihedral_{k}"] for k in range(8)]


# -- generated arrays ------------------------------------------------------------------------
SIDES = st.one_of(
    st.integers(1, 8),  # below and at the 5 px minimum
    st.integers(60, 68),  # around 64 (the unfiltered 64x64 path)
    st.integers(1, 300),
    st.sampled_from([127, 128, 129, 255, 256, 257, 1000, 1999, 2000]),  # window-size steps
)


@st.composite
def rgb_arrays(draw):
    height, width = draw(SIDES), draw(SIDES)
    if height * width > 1_200_000:  # keep the run short: at most one side huge
        height = min(height, 300)
    kind = draw(st.sampled_from(["noise", "flat", "gradient", "blocks", "stripes"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "flat":
        return np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (height, width, 3)).copy()
    if kind == "gradient":
        ramp = np.add.outer(np.linspace(0, 1, height), np.linspace(0, 1, width)) / 2
        colour = rng.random(3) * 255
        return (ramp[..., None] * colour).astype(np.uint8)
    if kind == "blocks":
        cells = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        rows = np.arange(height) * 4 // height
        cols = np.arange(width) * 4 // width
        return cells[np.ix_(rows, cols)]
    stripes = (np.arange(width) // max(1, width // 16)) % 2 * 255
    return np.broadcast_to(stripes[None, :, None], (height, width, 3)).astype(np.uint8)


@settings(max_examples=80, deadline=None)
@given(rgb_arrays())
def test_generated_arrays(rgb):
    assert_matches_reference(rgb)


@pytest.mark.parametrize("shape", [(1, 1), (1, 500), (500, 1), (4, 4), (4, 100), (100, 4),
                                   (5, 5), (5, 2000), (2000, 5), (64, 64), (0, 0), (0, 7)])
def test_edge_shapes(shape):
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, shape + (3,), dtype=np.uint8)
    if 0 in shape:  # pdqhash cannot take empty arrays; PDQ defines them as too small
        assert pdq.pdq_from_rgb(rgb)[1] == 0 and not pdq.pdq_from_rgb(rgb)[0].any()
        return
    assert_matches_reference(rgb)


@pytest.mark.parametrize("seed", range(20))
def test_64x64_single_and_dihedral_paths(seed):
    # The reference skips the (window 1) blur at 64x64 in compute, not in compute_dihedral;
    # the float sums of that blur can move a coefficient across the median.
    rng = np.random.default_rng(seed)
    rgb = (rng.integers(0, 256, (64, 64, 3)) // rng.integers(1, 64)).astype(np.uint8)
    assert_matches_reference(rgb)


# -- input forms ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photo():
    return decode_rgb(corpus_files()[0])


def test_strided_input(photo):
    view = photo[1::2, ::3]
    assert np.array_equal(pdq.pdq_from_rgb(view)[0], reference_hash(view)[0])
    flipped = photo[::-1, ::-1]
    assert np.array_equal(pdq.pdq_from_rgb(flipped)[0], reference_hash(flipped)[0])


def test_rgba_ignores_alpha(photo):
    alpha = np.random.default_rng(0).integers(0, 256, photo.shape[:2] + (1,), dtype=np.uint8)
    rgba = np.concatenate([photo, alpha], axis=2)
    bits, quality = pdq.pdq_from_rgb(rgba)
    expected_bits, expected_quality = reference_hash(photo)
    assert np.array_equal(bits, expected_bits) and quality == expected_quality


def test_grey_array_equals_reference_on_grey_rgb(photo):
    grey = photo[..., 1].copy()
    bits, quality = pdq.pdq_from_rgb(grey)
    expected_bits, expected_quality = reference_hash(np.dstack([grey] * 3))
    assert np.array_equal(bits, expected_bits) and quality == expected_quality


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK"])
def test_pil_modes_follow_convert_rgb(photo, mode):
    image = Image.fromarray(photo).convert(mode)
    fp = pdq.pdq_hash_image(image)
    expected_bits, expected_quality = reference_hash(np.asarray(image.convert("RGB")))
    assert fp == Fingerprint("pdq", expected_bits) and fp.quality == expected_quality


def test_luma_entry_points(photo):
    luma = pdq.luma_of(photo)
    before = luma.copy()
    assert np.array_equal(pdq.pdq_from_luma(luma)[0], reference_hash(photo)[0])
    assert np.array_equal(pdq.pdq_dihedral_from_luma(luma)[0], reference_dihedral(photo)[0])
    assert np.array_equal(luma, before)  # the in-place blur worked on a copy


def test_fingerprint_matches_from_pdqhash(photo):
    vector, quality = pdqhash.compute(photo)
    assert pdq.pdq_hash_image(photo) == Fingerprint.from_pdqhash(vector, quality)
    assert pdq.pdq_hash_image(photo).quality == quality


def test_bad_arrays_are_rejected():
    with pytest.raises(TypeError):
        pdq.pdq_from_rgb(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        pdq.pdq_from_rgb(np.zeros((10, 10, 2), np.uint8))


# -- fast mode ----------------------------------------------------------------------------------
# Fast mode = the same pipeline with blur + decimation as sparse matrix products (equal to
# exact up to float rounding) + a JPEG draft decode to the Y channel for files. These are
# regression guards on the drift budget (<= 10 bits at p99 for quality >= 80), not speed
# tests; benchmarks/pdq_drift.py measures the distributions.
DRIFT_BUDGET = 10


def fast(image, **kwargs):
    return pdq.pdq_hash_image(image, exact=False, **kwargs)


def test_fast_mode_on_full_resolution_pixels_is_exact_but_for_rounding():
    # Same pixels in, so only summation order differs: measured 0 bits on all 480 corpus
    # images; allow a coefficient or two sitting on the median.
    distances = []
    for path in corpus_files()[::16]:
        rgb = decode_rgb(path)
        exact, approx = pdq.pdq_hash_image(rgb), fast(rgb)
        assert abs(exact.quality - approx.quality) <= 1
        distances.append(exact - approx)
    assert max(distances) <= 2 and sum(distances) <= 4, distances


def test_fast_mode_dihedral(photo):
    exact = pdq.pdq_hash_image(photo, dihedral=True)
    approx = fast(photo, dihedral=True)
    assert len(approx) == 8 and max(e - a for e, a in zip(exact, approx)) <= 2
    bits, _ = pdq.pdq_fast_dihedral_from_rgb(photo)
    assert [a.bits.tobytes() for a in approx] == [b.tobytes() for b in bits]


def test_fast_mode_on_large_images_matches_exact(photo):
    big = np.asarray(Image.fromarray(photo).resize((photo.shape[1] * 4, photo.shape[0] * 4)))
    assert fast(big) - pdq.pdq_hash_image(big) <= 2


def test_fast_mode_file_drift_within_budget(tmp_path):
    # The real fast file path (draft decode to JPEG luma, then the sparse kernel) on the
    # corpus as stored and on photos enlarged past 2 * FAST_MIN_SIDE, where draft shrinks.
    import hashmatch

    paths = corpus_files()[::12]
    for index, source in enumerate(corpus_files()[5::60]):
        with Image.open(source) as image:
            big = image.convert("RGB").resize((1920, 1080), Image.Resampling.BICUBIC)
        paths.append(tmp_path / f"big{index}.jpg")
        big.save(paths[-1], quality=90)
    for path in paths:
        exact = hashmatch.hash_file(path, exact=True)
        approx = hashmatch.hash_file(path)
        if exact.quality >= 80:
            assert exact - approx <= DRIFT_BUDGET, path


def test_fast_mode_input_layouts_agree(photo):
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 9, np.uint8)], axis=2)
    flipped = np.ascontiguousarray(photo[::-1])
    expected = fast(photo)
    assert fast(rgba) == expected
    assert fast(photo[::-1]) == fast(flipped)  # negative row stride
    strided = photo[:, ::2]  # pixels not packed: copied first
    assert fast(strided) == fast(np.ascontiguousarray(strided))
    assert fast(Image.fromarray(photo)) == expected


def test_fast_mode_tiny_and_64x64_images():
    rng = np.random.default_rng(3)
    for shape in [(4, 100), (100, 4), (1, 1)]:
        fp = fast(rng.integers(0, 256, shape + (3,), dtype=np.uint8))
        assert fp.quality == 0 and not fp.bits.any()
    for seed in range(5):  # the unfiltered 64x64 path is bit-identical (single products)
        rgb = (rng.integers(0, 256, (64, 64, 3)) // (seed + 1)).astype(np.uint8)
        assert fast(rgb) == pdq.pdq_hash_image(rgb)
        assert fast(rgb).quality == pdq.pdq_hash_image(rgb).quality


def test_fast_mode_accepts_grey_images(photo):
    grey = Image.fromarray(photo).convert("L")
    assert fast(grey) - fast(grey.convert("RGB")) <= 2


def test_hash_only_dihedral_variants_are_close_to_the_real_ones():
    # dihedral_from_hash turns a stored hash (no image) into its 8 rotations/flips; exact up
    # to the median shift, so within a few bits of what hashing the turned image gives.
    from hashmatch.hashers.pdq import dihedral_from_hash, pdq_dihedral_from_rgb

    path = PDQ_REF / "images" / "bridge-mods" / "aaa-orig.jpg"
    rgb = np.asarray(Image.open(path).convert("RGB"))
    real, _ = pdq_dihedral_from_rgb(rgb)
    derived = dihedral_from_hash(real[0])[0]
    distances = np.unpackbits(real ^ derived, axis=1).sum(axis=1)
    assert distances[0] == 0 and distances[6] == 0  # original; transpose is exact
    assert distances.max() <= 31, distances  # every variant still matches at PDQ's radius


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 20))
def test_low_frequency_codes_are_the_8x8_lowest_dct_signs(seed, n):
    # The index's crop-window prefilter compares these 64 bits: they must be the signs of
    # DCT coefficients (i, j) with i, j < 8 (bit k = 16 i + j of the hash), in that order.
    from hashmatch.hashers.pdq import low_frequency_codes

    codes = np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)
    signs = np.unpackbits(codes, axis=1)[:, ::-1].reshape(n, 16, 16)
    low = low_frequency_codes(codes)
    assert low.shape == (n, 8) and low.dtype == np.uint8 and low.flags.c_contiguous
    np.testing.assert_array_equal(np.unpackbits(low, axis=1, bitorder="little"),
                                  signs[:, :8, :8].reshape(n, 64))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 20))
def test_low_frequency_keys_are_the_4x4_lowest_dct_signs(seed, n):
    # The bucket key of the prefilter: bit 4 i + j is coefficient (i, j)'s sign, i, j < 4.
    from hashmatch.hashers.pdq import low_frequency_codes, low_frequency_keys

    codes = np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)
    signs = np.unpackbits(codes, axis=1)[:, ::-1].reshape(n, 16, 16)[:, :4, :4].reshape(n, 16)
    keys = low_frequency_keys(low_frequency_codes(codes))
    assert keys.dtype == np.uint16
    np.testing.assert_array_equal(keys, (signs.astype(np.int64) << np.arange(16)).sum(axis=1))


def test_drafted_jpeg_is_blurred_at_the_full_resolution_scale():
    # A JPEG decoded at 1/4 size must hash like the full-size image: the fast path folds the
    # full-resolution blur onto the drafted pixels (windows sized from the true image).
    from hashmatch.decode import decode

    path = PDQ_REF / "images" / "bridge-mods" / "aaa-orig.jpg"  # 1600 x 1004
    drafted = decode(path, mode="L", draft_min_side=240)
    assert drafted.image.size == (400, 251)
    assert drafted.full_size == (1600, 1004)
    exact = pdq.pdq_hash_image(Image.open(path), exact=True)
    folded = pdq.pdq_hash_image(drafted.image, exact=False, full_size=drafted.full_size)
    # Without the full size, the blur windows are sized for the small image (the old way).
    bits, quality = pdq._hash_fast(np.asarray(drafted.image), dihedral=False)
    unfolded = Fingerprint("pdq", bits, quality)
    assert folded - exact <= 4
    weights = pdq._drafted_axis_weights(251, 1004)[2]
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)  # each output is a mean
    assert folded - exact < unfolded - exact


# -- many boxes of one array: one row stage per band of rows ---------------------------------
@st.composite
def arrays_and_boxes(draw):
    """An array (grey/RGB/RGBA, any layout) and boxes as regions makes them: crop windows
    sharing rows, plus any box numpy slicing accepts (tiny, empty, negative, past the edge,
    exactly 64x64)."""
    height, width = draw(st.integers(1, 220)), draw(st.integers(1, 220))
    channels = draw(st.sampled_from([None, 3, 4]))
    shape = (height, width) if channels is None else (height, width, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    if draw(st.booleans()):
        array = (np.add.outer(np.arange(height), np.arange(width)) * rng.uniform(0.2, 3)
                 ).astype(np.uint8).reshape(shape[:2] + (1,) * (len(shape) - 2)) + array // 8
    layout = draw(st.sampled_from(["packed", "flipped", "strided"]))
    if layout == "flipped":
        array = array[::-1]
    elif layout == "strided":  # pixels not packed within a row
        array = np.repeat(array, 2, axis=1)[:, ::2]
    height, width = array.shape[:2]
    side = st.integers(-5, max(height, width) + 5)
    boxes = [draw(st.tuples(side, side, side, side)) for _ in range(draw(st.integers(0, 6)))]
    box = (draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1)))
    box = box + (draw(st.integers(box[0] + 1, width)), draw(st.integers(box[1] + 1, height)))
    from hashmatch.regions import crop_windows

    boxes += [box] + list(crop_windows(box).values())
    if height >= 64 and width >= 64:
        boxes.append((width - 64, 0, width, 64))  # the unfiltered 64x64 path
    return array, draw(st.permutations(boxes))


@settings(max_examples=120, deadline=None)
@given(arrays_and_boxes())
def test_hash_boxes_equals_hashing_each_box(case):
    array, boxes = case
    got = pdq.pdq_hash_boxes(array, boxes)
    expected = [pdq.pdq_hash_image(array[t:b, l:r], exact=False) for l, t, r, b in boxes]
    assert [(fp.bits.tobytes(), fp.quality) for fp in got] == \
        [(fp.bits.tobytes(), fp.quality) for fp in expected]


def test_hash_boxes_of_a_photo(photo):
    from hashmatch.regions import crop_windows

    height, width = photo.shape[:2]
    content = (3, 5, width - 4, height - 2)
    boxes = [(0, 0, width, height), content] + list(crop_windows(content).values())
    for array in (photo, np.asarray(Image.fromarray(photo).convert("L"))):
        got = pdq.pdq_hash_boxes(array, boxes)
        assert [fp.bits.tobytes() for fp in got] == [
            fast(array[t:b, l:r]).bits.tobytes() for l, t, r, b in boxes]
        assert all(fp.quality > 0 for fp in got)
    assert pdq.pdq_hash_boxes(photo, []) == []


def test_a_crop_of_a_decoded_image_hashes_like_the_same_pixels_as_an_array():
    """Issue 15: decode put the pre-draft size in image.info, which Pillow copies onto crops,
    so fast PDQ blurred a crop at the whole picture's scale (8-28 bits off the array)."""
    from hashmatch.decode import decode

    path = PDQ_REF / "images" / "bridge-mods" / "aaa-orig.jpg"  # drafted to 400 x 251
    drafted = decode(path, mode="L", draft_min_side=240)
    assert drafted.full_size is not None
    crop = drafted.image.crop((40, 20, 300, 230))
    assert pdq.pdq_hash_image(crop, exact=False) - \
        pdq.pdq_hash_image(np.asarray(crop), exact=False) == 0
    assert hm.hash_image(crop) - hm.hash_image(np.asarray(crop)) == 0
