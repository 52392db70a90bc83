"""Every Cython kernel in hashmatch._imagecore equals its numpy twin in _imagecore_ref.

Float results must be identical bit for bit: the twins perform the same float32/float64
operations in the same order, so any difference is a bug (or a fused multiply-add).
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
