"""Every Cython kernel in hashmatch._imagecore equals its numpy twin in _imagecore_ref.

Float results must be identical bit for bit: the twins perform the same float32/float64
operations in the same order, so any difference is a bug (or a fused multiply-add).

Except the fast-mode kernels (last section). Their twins are dense float64 matrix products
(K_rows @ luma @ K_cols.T), the specification in real arithmetic; the Cython kernels sum
the same terms sparsely in float32, in a different order. Bitwise equality would pin
one summation order for no benefit -- fast mode's contract is "exact mode up to float
rounding" -- so there the tests bound the difference (tolerances derived below) and
check that hash bits agree wherever a coefficient is clearly away from the median.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hashmatch import _imagecore as core
from hashmatch import _imagecore_ref as ref

FAST = settings(max_examples=60, deadline=None)


def same_floats(a, b):
    """Bitwise float equality (also tells 0.0 from -0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def uint8_images(channels=None, max_side=40):
    shape = st.tuples(st.integers(0, max_side), st.integers(0, max_side))
    if channels:
        shape = shape.map(lambda s: s + (channels,))
    return hnp.arrays(np.uint8, shape)


finite_floats = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)
pixel_floats = st.floats(0, 255, width=32)


def float_images(rows, cols, elements=finite_floats):
    return hnp.arrays(np.float32, st.tuples(rows, cols), elements=elements)


@st.composite
def strided_views(draw, base):
    """A view of ``base`` with random positive steps and a random start: non-contiguous input."""
    array = draw(base)
    slices = tuple(
        slice(draw(st.integers(0, 1)), None, draw(st.integers(1, 3))) for _ in array.shape[:2]
    )
    return array[slices]


# -- luma --------------------------------------------------------------------------------
@FAST
@given(st.one_of(uint8_images(3), uint8_images(4), strided_views(uint8_images(3))))
def test_luma_from_rgb(rgb):
    out = np.empty(rgb.shape[:2], np.float32)
    core.luma_from_rgb(rgb, out)
    assert same_floats(out, ref.luma_from_rgb(rgb))


@FAST
@given(st.one_of(uint8_images(), strided_views(uint8_images())))
def test_luma_from_grey(grey):
    out = np.empty(grey.shape, np.float32)
    core.luma_from_grey(grey, out)
    assert same_floats(out, ref.luma_from_grey(grey))


def test_grey_luma_is_the_luma_of_grey_rgb():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert same_floats(ref.luma_from_grey(grey), ref.luma_from_rgb(np.dstack([grey] * 3)))


def test_luma_rejects_mismatched_output():
    with pytest.raises(ValueError):
        core.luma_from_rgb(np.zeros((4, 5, 3), np.uint8), np.empty((5, 4), np.float32))


# -- Jarosz box filter -------------------------------------------------------------------
@st.composite
def filter_cases(draw):
    rows = draw(st.integers(1, 40))
    cols = draw(st.integers(1, 40))
    elements = draw(st.sampled_from([finite_floats, pixel_floats]))
    image = draw(float_images(st.just(rows), st.just(cols), elements))
    window_rows = draw(st.integers(1, cols))  # a row has ``cols`` values
    window_cols = draw(st.integers(1, rows))
    passes = draw(st.integers(1, 2))
    return image, window_rows, window_cols, passes


@settings(max_examples=150, deadline=None)
@given(filter_cases())
def test_jarosz_filter(case):
    image, window_rows, window_cols, passes = case
    buf1 = image.copy()
    core.jarosz_filter(buf1, np.empty_like(buf1), window_rows, window_cols, passes)
    assert same_floats(buf1, ref.jarosz_filter(image, window_rows, window_cols, passes))


@pytest.mark.parametrize("length", [1, 2, 3, 7, 8, 9, 16, 129])
def test_box_filter_every_window_size(length):
    rng = np.random.default_rng(length)
    image = (rng.random((length, 3)) * 255).astype(np.float32)
    for window in range(1, length + 1):
        buf1 = image.copy()
        core.jarosz_filter(buf1, np.empty_like(buf1), 1, window, 1)
        expected = ref.box_filter_axis0(ref.box_filter_axis0(image.T, 1).T, window)
        assert same_floats(buf1, expected), window


def test_box_filter_is_a_mean_over_the_clipped_window():
    # Independent check of the twin's window placement: integers sum exactly in float32.
    values = np.arange(16, dtype=np.float32)[:, None]
    out = ref.box_filter_axis0(values, 7)  # reference comment: window 7 -> half 4
    sums = [6, 10, 15, 21, 28, 35, 42, 49, 56, 63, 70, 77, 84, 75, 65, 54]
    counts = [4, 5, 6, 7] + [7] * 9 + [6, 5, 4]
    assert np.array_equal(out[:, 0], np.float32(sums) / np.float32(counts))


def test_jarosz_rejects_windows_longer_than_the_vector():
    buf = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError):
        core.jarosz_filter(buf, np.empty_like(buf), 7, 1)
    with pytest.raises(ValueError):
        core.jarosz_filter(buf, np.empty_like(buf), 1, 5)


@pytest.mark.parametrize("size", [1, 5, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 4032])
def test_window_size(size):
    assert core.jarosz_window_size(size, 64) == ref.jarosz_window_size(size, 64)
    assert core.jarosz_window_size(size, 64) == -(-size // 128)  # ceil(size / 128)


# -- decimation, quality, DCT ------------------------------------------------------------
@FAST
@given(float_images(st.integers(1, 300), st.integers(1, 300)))
def test_decimate64(image):
    assert same_floats(core.decimate64(image), ref.decimate64(image))


@FAST
@given(st.one_of(float_images(st.just(64), st.just(64), pixel_floats),
                 float_images(st.just(64), st.just(64))))
def test_quality_metric(image64):
    assert core.quality_metric(image64) == ref.quality_metric(image64)


def test_quality_metric_extremes():
    flat = np.full((64, 64), 128, np.float32)
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.float32)
    assert core.quality_metric(flat) == ref.quality_metric(flat) == 0
    assert core.quality_metric(checker) == ref.quality_metric(checker) == 100


def test_dct_matrix():
    assert same_floats(core.dct_matrix(), ref.dct_matrix())


@FAST
@given(st.one_of(float_images(st.just(64), st.just(64), pixel_floats),
                 float_images(st.just(64), st.just(64))))
def test_dct64_to_16(image64):
    assert same_floats(core.dct64_to_16(image64), ref.dct64_to_16(image64))


# -- median, bits, dihedral --------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.one_of(
    hnp.arrays(np.float32, st.integers(1, 300), elements=finite_floats),
    # few distinct values: many ties around the median
    hnp.arrays(np.float32, st.integers(1, 300), elements=st.sampled_from([-1.0, 0.0, 2.5, 7.0])),
))
def test_torben_median(values):
    # Compared by value: torben may return its midpoint guess, which equals the median
    # element but may be the other signed zero. Only '>' comparisons use the median.
    assert np.float32(core.torben_median(values)) == ref.torben_median(values)


def test_torben_median_is_the_lower_median_for_even_counts():
    values = np.array([4, 1, 3, 2], np.float32)
    assert core.torben_median(values) == 2


dct_blocks = st.one_of(
    float_images(st.just(16), st.just(16)),
    float_images(st.just(16), st.just(16), st.sampled_from([-3.0, 0.0, 1.0, 5.0])),
)


@settings(max_examples=100, deadline=None)
@given(dct_blocks)
def test_bits_from_dct16(dct16):
    assert np.array_equal(core.bits_from_dct16(dct16), ref.bits_from_dct16(dct16))


@FAST
@given(dct_blocks)
def test_dihedral(dct16):
    for which in range(8):
        assert same_floats(core.dihedral_dct16(dct16, which), ref.dihedral_dct16(dct16, which))
    assert np.array_equal(core.dihedral_bits_from_dct16(dct16), ref.dihedral_bits_from_dct16(dct16))


# -- whole float pipeline ----------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    float_images(st.integers(5, 300), st.integers(5, 300), pixel_floats),
    st.booleans(),
)
def test_pdq_dct16(luma, filter_64x64):
    buf = luma.copy()
    dct16, quality = core.pdq_dct16_inplace(buf, np.empty_like(buf), filter_64x64)
    expected_dct16, expected_quality = ref.pdq_dct16(luma, filter_64x64)
    assert same_floats(dct16, expected_dct16)
    assert quality == expected_quality


@pytest.mark.parametrize("filter_64x64", [False, True])
def test_pdq_dct16_at_64x64(filter_64x64):
    luma = (np.random.default_rng(1).random((64, 64)) * 255).astype(np.float32)
    buf = luma.copy()
    dct16, quality = core.pdq_dct16_inplace(buf, np.empty_like(buf), filter_64x64)
    expected_dct16, expected_quality = ref.pdq_dct16(luma, filter_64x64)
    assert same_floats(dct16, expected_dct16) and quality == expected_quality


def test_pdq_dct16_rejects_tiny_images():
    buf = np.zeros((4, 100), np.float32)
    with pytest.raises(ValueError):
        core.pdq_dct16_inplace(buf, np.empty_like(buf), False)


# -- fast mode: blur + decimation as sparse matrices ---------------------------------------
# Tolerances. Pixels are 0..255 and every row of K sums to 1 (weights >= 0), so each 64x64
# value is a convex combination of pixels; float32 accumulation of m such terms errs by
# at most about m * 2**-24 * 255 per stage, m <= 2 * window + 1 (< 100 for sides up to
# 6000). DOWNSAMPLE_TOL = 2e-3 grey levels is about 10x the worst case seen; the 16x16 DCT
# rows have L1 norm <= 8, so a DCT coefficient moves by at most 64 * DOWNSAMPLE_TOL.
DOWNSAMPLE_TOL = 2e-3
DCT_TOL = 64 * DOWNSAMPLE_TOL


@pytest.mark.parametrize("length", [1, 4, 5, 63, 64, 65, 127, 128, 129, 130, 255, 256, 257,
                                    383, 384, 500, 1000, 1081])
@pytest.mark.parametrize("blur", [True, False])
def test_fast_axis_weights_equal_the_dense_matrix(length, blur):
    starts, lens, weights, n = core.fast_axis_weights(length, blur)
    assert n == length
    dense = ref.fast_axis_weights_dense(starts, lens, weights, length)
    # Entries are computed in double and rounded once to float32.
    assert np.allclose(dense, ref.fast_axis_matrix(length, blur), rtol=2**-23, atol=0)
    assert np.allclose(dense.sum(axis=1), 1.0, atol=1e-5)
    assert (lens >= 1).all() and (starts + lens <= length).all()


@pytest.mark.parametrize("length", [5, 64, 129, 200, 300])
def test_fast_axis_matrix_is_the_reference_filter_on_impulses(length):
    # Ties the twin to the exact pipeline: two box passes of unit impulses (the exact
    # twin, float32), sampled where decimate64 samples, give the columns of K.
    window = ref.jarosz_window_size(length, 64)
    impulses = np.eye(length, dtype=np.float32)
    filtered = ref.box_filter_axis0(ref.box_filter_axis0(impulses, window), window)
    sampled = filtered[np.floor((np.arange(64) + 0.5) * length / 64).astype(np.intp)]
    assert np.allclose(sampled, ref.fast_axis_matrix(length), atol=1e-6)


@st.composite
def fast_images(draw, max_side=300):
    """uint8 images for the fast kernels: grey, RGB or RGBA, noise or smooth, any row stride."""
    rows, cols = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    channels = draw(st.sampled_from([None, 3, 4]))
    shape = (rows, cols) if channels is None else (rows, cols, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
    else:  # smooth: few strong coefficients, the case hashes are made of
        ramp = np.add.outer(np.sin(np.arange(rows) / max(rows, 1) * rng.uniform(1, 9)),
                            np.cos(np.arange(cols) / max(cols, 1) * rng.uniform(1, 9)))
        ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9) * 255
        image = np.broadcast_to(ramp.reshape(ramp.shape + (1,) * (len(shape) - 2)), shape)
        image = image.astype(np.uint8)
    if draw(st.booleans()):
        image = image[::-1]  # negative row stride
    return image


def fast_weights(image, blur=True):
    return core.fast_axis_weights(image.shape[0], blur), core.fast_axis_weights(image.shape[1], blur)


@settings(max_examples=50, deadline=None)
@given(fast_images())
def test_fast_downsample64(image):
    out = core.fast_downsample64(image, *fast_weights(image))
    expected = ref.fast_downsample64(image)
    assert out.dtype == np.float32 and out.shape == (64, 64)
    assert np.abs(out - expected).max() <= DOWNSAMPLE_TOL


@settings(max_examples=30, deadline=None)
@given(fast_images(max_side=200))
def test_fast_downsample64_is_the_exact_filter_then_decimation(image):
    # Linearity: the matrix form equals the exact pipeline's blur + decimation, up to the
    # exact pipeline's own float32 running-sum rounding.
    luma = ref.luma_from_grey(image) if image.ndim == 2 else ref.luma_from_rgb(image)
    rows, cols = luma.shape
    exact = ref.decimate64(ref.jarosz_filter(
        luma, ref.jarosz_window_size(cols, 64), ref.jarosz_window_size(rows, 64)))
    assert np.abs(ref.fast_downsample64(image) - exact).max() <= DOWNSAMPLE_TOL


@settings(max_examples=50, deadline=None)
@given(fast_images().filter(lambda a: min(a.shape[:2]) >= 5))
def test_pdq_fast_dct16_and_bits(image):
    dct16, quality = core.pdq_fast_dct16(image, *fast_weights(image))
    expected_dct16, expected_quality = ref.pdq_fast_dct16(image)
    assert np.abs(dct16 - expected_dct16).max() <= DCT_TOL
    # Quality truncates 8000 gradient steps; a value within rounding of a step boundary
    # can land on either side, and a step more or less can cross a multiple of 90.
    assert abs(quality - expected_quality) <= 1
    # Order statistics are 1-Lipschitz in the max norm: if no coefficient moved by more
    # than DCT_TOL, neither did the median, so a coefficient more than 2 * DCT_TOL from
    # the twin's median must get the same bit.
    bits = core.bits_from_dct16(dct16)
    expected_bits = ref.bits_from_dct16(expected_dct16)
    clear = np.abs(expected_dct16 - ref.torben_median(expected_dct16)) > 2 * DCT_TOL
    hash_order = clear.ravel()[::-1]  # packed bit p is coefficient 255 - p
    unpacked, expected_unpacked = np.unpackbits(bits), np.unpackbits(expected_bits)
    assert np.array_equal(unpacked[hash_order], expected_unpacked[hash_order])


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_fast_unfiltered_64x64_is_bitwise_exact(channels):
    # Weights 1.0 on single samples: every sum is one exact product, so the fast path
    # reproduces the reference's unfiltered 64x64 path bit for bit.
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (64, 64) if channels is None else (64, 64, channels), np.uint8)
    luma = ref.luma_from_grey(image) if channels is None else ref.luma_from_rgb(image)
    dct16, quality = core.pdq_fast_dct16(image, *fast_weights(image, blur=False))
    expected_dct16, expected_quality = ref.pdq_dct16(luma, filter_64x64=False)
    assert same_floats(dct16, expected_dct16) and quality == expected_quality


# Row stage and column stage apart: one row stage serves every box with the same rows.
@settings(max_examples=50, deadline=None)
@given(fast_images())
def test_fast_rows_equal_twin(image):
    rows = core.pdq_fast_rows(image, core.fast_axis_weights(image.shape[0]))
    assert rows.dtype == np.float32 and rows.shape == (64, image.shape[1])
    assert np.abs(rows - ref.fast_rows(image)).max() <= DOWNSAMPLE_TOL


@st.composite
def row_stage_slices(draw):
    """A column slice rows[:, l:r] of a kernel row stage (any row stride) and its width."""
    image = draw(fast_images())
    rows = core.pdq_fast_rows(image, core.fast_axis_weights(image.shape[0]))
    left = draw(st.integers(0, image.shape[1] - 1))
    right = draw(st.integers(left + 1, image.shape[1]))
    return rows[:, left:right]


@settings(max_examples=50, deadline=None)
@given(row_stage_slices(), st.booleans())
def test_fast_dct16_from_rows_equals_twin(rows64, blur):
    weights = core.fast_axis_weights(rows64.shape[1], blur)
    dct16, quality = core.pdq_fast_dct16_from_rows(rows64, weights)
    expected_dct16, expected_quality = ref.fast_dct16_from_rows(rows64, blur)
    assert dct16.dtype == np.float32 and dct16.shape == (16, 16)
    assert np.abs(dct16 - expected_dct16).max() <= DCT_TOL
    assert abs(quality - expected_quality) <= 1  # as test_pdq_fast_dct16_and_bits


@st.composite
def images_and_boxes(draw):
    image = draw(fast_images())
    rows, cols = image.shape[:2]
    top = draw(st.integers(0, rows - 1))
    bottom = draw(st.integers(top + 1, rows))
    left = draw(st.integers(0, cols - 1))
    right = draw(st.integers(left + 1, cols))
    return image, (left, top, right, bottom)


@settings(max_examples=150, deadline=None)
@given(images_and_boxes(), st.booleans(), st.booleans())
def test_rows_then_columns_of_a_box_is_pdq_fast_dct16_bit_for_bit(case, blur, scratch):
    # What pdq_hash_boxes relies on: the row stage of a band of rows over the full width,
    # sliced to a box's columns, gives exactly the box's own fast DCT and quality.
    image, (left, top, right, bottom) = case
    row_weights = core.fast_axis_weights(bottom - top, blur)
    col_weights = core.fast_axis_weights(right - left, blur)
    channels = 1 if image.ndim == 2 else image.shape[2]
    buffer = np.empty((64 + channels) * image.shape[1], np.float32) if scratch else None
    rows = core.pdq_fast_rows(image[top:bottom], row_weights, buffer)
    dct16, quality = core.pdq_fast_dct16_from_rows(rows[:, left:right], col_weights)
    box = image[top:bottom, left:right]
    expected_dct16, expected_quality = core.pdq_fast_dct16(box, row_weights, col_weights)
    assert same_floats(dct16, expected_dct16) and quality == expected_quality


def test_fast_rows_use_the_scratch_buffer():
    image = np.random.default_rng(5).integers(0, 256, (90, 70, 3), np.uint8)
    buffer = np.empty((64 + 3) * 70, np.float32)
    rows = core.pdq_fast_rows(image, core.fast_axis_weights(90), buffer)
    assert np.shares_memory(rows, buffer)
    assert same_floats(rows, core.pdq_fast_rows(image, core.fast_axis_weights(90)))


def test_fast_stage_kernels_reject_bad_input():
    image = np.zeros((10, 12), np.uint8)
    with pytest.raises(ValueError):
        core.pdq_fast_rows(image, core.fast_axis_weights(12))  # weights of the width
    rows = core.pdq_fast_rows(image, core.fast_axis_weights(10))
    with pytest.raises(ValueError):
        core.pdq_fast_dct16_from_rows(rows, core.fast_axis_weights(10))  # 12 columns
    with pytest.raises(ValueError):
        core.pdq_fast_dct16_from_rows(rows[:, ::2], core.fast_axis_weights(6))  # strided
    with pytest.raises(ValueError):
        core.pdq_fast_dct16_from_rows(rows[:32], core.fast_axis_weights(12))  # not 64 rows
    with pytest.raises(ValueError):
        core.pdq_fast_dct16_from_rows(rows[:, :0], core.fast_axis_weights(1))  # empty


def test_fast_kernels_reject_bad_input():
    weights = core.fast_axis_weights(10)
    with pytest.raises(ValueError):
        core.fast_downsample64(np.zeros((10, 12), np.uint8), weights, weights)  # width 12
    with pytest.raises(ValueError):
        core.fast_downsample64(np.zeros((10, 10, 3), np.uint8)[:, ::2], weights,
                               core.fast_axis_weights(5))  # pixels not packed
    with pytest.raises(ValueError):
        core.fast_downsample64(np.zeros((10, 10, 2), np.uint8), weights, weights)
    with pytest.raises(ValueError):
        core.fast_axis_weights(0)


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 700), height=st.integers(1, 700), seed=st.integers(0, 2**32 - 1))
def test_grey_pixels_shares_exactly_what_asarray_copies(width, height, seed):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    image = Image.fromarray(pixels, "L")
    view = core.grey_pixels(image)
    assert view is not None and not view.flags.writeable
    assert np.array_equal(view, np.asarray(image))
    del image  # the view keeps the pixels alive through Pillow's export
    assert np.array_equal(view, pixels)


def test_grey_pixels_declines_what_it_cannot_share():
    from PIL import Image

    assert core.grey_pixels(Image.new("RGB", (8, 8))) is None
    # Pillow stores large images in several blocks: no single buffer to share.
    assert core.grey_pixels(Image.new("L", (8000, 6000))) is None


# -- region analysis -------------------------------------------------------------------------
@st.composite
def band_cases(draw):
    """Lines of a few flat levels (so bands and near-misses both occur), any view strides."""
    n = draw(st.integers(0, 30))
    length = draw(st.integers(1, 25))
    channels = draw(st.sampled_from([1, 3]))
    levels = draw(st.lists(st.integers(0, 255), min_size=1, max_size=4))
    lines = draw(hnp.arrays(np.int16, (n, length, channels),
                            elements=st.sampled_from(levels).map(int)))
    noise = draw(hnp.arrays(np.int16, (n, length, channels), elements=st.integers(-20, 20)))
    lines = lines + noise
    view = draw(st.sampled_from(["as is", "reversed", "transposed"]))
    if view == "reversed":
        lines = lines[::-1]
    elif view == "transposed" and n:
        lines = np.ascontiguousarray(lines.transpose(1, 0, 2)).transpose(1, 0, 2)
    colour = np.array(draw(st.lists(st.floats(0, 255, allow_nan=False), min_size=channels,
                                    max_size=channels)), np.float64)
    return (lines, colour, draw(st.sampled_from([8.0, 14.0, 28.0])), draw(st.integers(0, 35)),
            draw(st.sampled_from([0.45, 0.97])), draw(st.booleans()), draw(st.integers(0, 5)),
            0.97)


@given(band_cases())
@FAST
def test_band_depth_equals_twin(case):
    assert core.band_depth(*case) == ref.band_depth(*case)


def test_band_depth_trims_a_caption_bar_but_not_the_picture():
    rng = np.random.default_rng(3)
    bar = np.full((10, 50, 1), 255, np.int16)
    bar[4:6, 10:30] = 0  # a line of text inside the white bar
    picture = rng.integers(0, 256, (20, 50, 1)).astype(np.int16)
    lines = np.concatenate([bar, picture])
    white = np.array([255.0])
    assert core.band_depth(lines, white, 14, 25, 0.45, True, 3, 0.97) == 10
    assert core.band_depth(lines, white, 14, 25, 0.97, False, 0, 0.97) == 4  # strict: stops at text


# -- fast phash: dense separable product -------------------------------------------------
@FAST
@given(image=uint8_images(max_side=300).filter(lambda a: a.size > 0),
       n_rows=st.integers(1, 9), n_cols=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
def test_separable_product_matches_twin(image, n_rows, n_cols, seed):
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n_rows, image.shape[0])).astype(np.float32)
    cols = rng.standard_normal((n_cols, image.shape[1])).astype(np.float32)
    got = core.separable_product(image, rows, cols)
    want = ref.separable_product(image, rows, cols)
    assert got.shape == want.shape and got.dtype == np.float32
    # float32 sums of H*W terms of size <= 255 * |w|: relative error ~1e-6 of their magnitude.
    scale = 255.0 * np.abs(rows).sum(axis=1)[:, None] * np.abs(cols).sum(axis=1)[None, :]
    assert np.all(np.abs(got - want) <= 1e-5 * scale + 1e-6)


def test_separable_product_reads_rows_with_any_stride():
    image = np.arange(60 * 80, dtype=np.uint32).reshape(60, 80).astype(np.uint8)
    view = image[::2, 5:70]  # row stride 160, pixels contiguous within a row
    rows = np.ones((2, view.shape[0]), np.float32)
    cols = np.ones((3, view.shape[1]), np.float32)
    np.testing.assert_allclose(core.separable_product(view, rows, cols),
                               ref.separable_product(view, rows, cols), rtol=1e-6)


def test_separable_product_rejects_bad_input():
    image = np.zeros((4, 5), np.uint8)
    with pytest.raises(ValueError):
        core.separable_product(image, np.ones((2, 5), np.float32), np.ones((2, 5), np.float32))
    with pytest.raises(ValueError):
        core.separable_product(image[:, ::2], np.ones((2, 4), np.float32), np.ones((2, 3), np.float32))
    with pytest.raises(ValueError):
        core.separable_product(np.zeros((0, 5), np.uint8), np.ones((2, 0), np.float32),
                               np.ones((2, 5), np.float32))


@FAST
@given(values=hnp.arrays(np.float32, st.sampled_from([(8, 8), (16, 16), (4, 4), (2, 8)]),
                         elements=st.floats(-1e4, 1e4, width=32)))
def test_above_median_bits_matches_twin(values):
    assert same_floats(core.above_median_bits(values), ref.above_median_bits(values))


def test_above_median_bits_rejects_partial_bytes():
    with pytest.raises(ValueError):
        core.above_median_bits(np.zeros((3, 3), np.float32))
