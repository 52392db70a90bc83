"""Plain-numpy twins of the kernels in ``_imagecore.pyx``: the semantics, written for reading.

They are slow and exist for tests (tests/test_imagecore_twins.py proves each Cython kernel
equal to its twin, bit for bit) and as the specification of the PDQ float pipeline. Where
the reference's float accumulation order is part of its output (box-filter running sums,
DCT sums), the twins loop over that sequential index in Python and do float32 numpy
arithmetic across the other, independent, dimension.
"""
from __future__ import annotations

import math

import numpy as np

DOWN = 64  # side of the downsampled image
OUT = 16  # side of the DCT block

F32 = np.float32


def dct_matrix() -> np.ndarray:
    """16x64 DCT-II rows 1..16: double cosines times the float sqrt(2/64), stored as float."""
    scale = float(F32(math.sqrt(2.0 / DOWN)))
    step = math.pi / 2.0 / DOWN
    return np.array(
        [[scale * math.cos(step * (i + 1) * (2 * j + 1)) for j in range(DOWN)] for i in range(OUT)],
        dtype=np.float64,
    ).astype(F32)


def luma_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """pdqhash's luma: numpy float64 R*0.299 + G*0.587 + B*0.114, then float32."""
    return (rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114).astype(F32)


def luma_from_grey(grey: np.ndarray) -> np.ndarray:
    return grey.astype(F32)


def jarosz_window_size(old_dimension: int, new_dimension: int) -> int:
    return (old_dimension + 2 * new_dimension - 1) // (2 * new_dimension)


def box_filter_axis0(image: np.ndarray, window: int) -> np.ndarray:
    """box1DFloat applied down axis 0, all positions of axis 1 at once.

    Output n averages inputs n - (window - half) .. n + half - 1 (clipped to the vector),
    half = (window + 2) // 2. The sum is the reference's running float sum -- add the
    entering input, then subtract the leaving one -- divided by how many inputs it holds.
    Requires 1 <= window <= length, like the reference.
    """
    length = image.shape[0]
    half = (window + 2) // 2
    out = np.empty_like(image)
    total = np.zeros(image.shape[1:], dtype=F32)
    count = 0
    for n in range(-(half - 1), length):  # n: output index (negative: nothing written yet)
        entering = n + half - 1
        leaving = n - (window - half + 1)
        if entering < length:
            total = total + image[entering]
            count += 1
        if leaving >= 0:
            total = total - image[leaving]
            count -= 1
        if n >= 0:
            out[n] = total / F32(count)
    return out


def jarosz_filter(image: np.ndarray, window_along_rows: int, window_along_cols: int,
                  passes: int = 2) -> np.ndarray:
    """jaroszFilterFloat: ``passes`` times, box along each row, then along each column."""
    out = image.astype(F32)
    for _ in range(passes):
        out = box_filter_axis0(out.T, window_along_rows).T
        out = box_filter_axis0(out, window_along_cols)
    return np.ascontiguousarray(out)


def decimate64(image: np.ndarray) -> np.ndarray:
    """Sample the 64x64 cell centres: index floor((o + 0.5) * n / 64) in double."""
    rows = np.floor((np.arange(DOWN) + 0.5) * image.shape[0] / DOWN).astype(np.intp)
    cols = np.floor((np.arange(DOWN) + 0.5) * image.shape[1] / DOWN).astype(np.intp)
    return image[np.ix_(rows, cols)]


def quality_metric(image64: np.ndarray) -> int:
    """Sum of |trunc((u - v) * 100 / 255)| over neighbour pairs (float32 math), / 90, <= 100."""
    a = image64.astype(F32)

    def steps(u, v):
        scaled = ((u - v) * F32(100)) / F32(255)
        return np.abs(np.trunc(scaled).astype(np.int64)).sum()

    gradient_sum = steps(a[:-1, :], a[1:, :]) + steps(a[:, :-1], a[:, 1:])
    return int(min(gradient_sum // 90, 100))


def dct64_to_16(image64: np.ndarray, matrix: np.ndarray | None = None) -> np.ndarray:
    """B = (D A) D^T with float32 sums accumulated from 0.0 over k = 0..63 in order."""
    d = dct_matrix() if matrix is None else matrix
    a = image64.astype(F32)
    t = np.zeros((OUT, DOWN), dtype=F32)
    for k in range(DOWN):
        t = t + d[:, k : k + 1] * a[k : k + 1, :]  # t[i, j] += D[i, k] * A[k, j]
    b = np.zeros((OUT, OUT), dtype=F32)
    for k in range(DOWN):
        b = b + t[:, k : k + 1] * d[:, k][None, :]  # b[i, j] += T[i, k] * D[j, k]
    return b


def torben_median(values: np.ndarray) -> np.float32:
    """The element of rank (n+1)//2 (1-based): the lower median for even n, as torben()."""
    flat = np.asarray(values, dtype=F32).ravel()
    return np.partition(flat, (flat.size - 1) // 2)[(flat.size - 1) // 2]


def bits_from_dct16(dct16: np.ndarray) -> np.ndarray:
    """Bit k = 16*i + j is B[i, j] > median; packed MSB-first from bit 255 down (hex order)."""
    above = dct16.ravel() > torben_median(dct16)
    return np.packbits(above[::-1])


# Sign patterns of the dihedral DCT transforms (pdqhashing.cpp dct16OriginalToXxx).
_I, _J = np.indices((OUT, OUT))
_ODD_I, _ODD_J, _ODD_SUM = _I % 2 == 1, _J % 2 == 1, (_I + _J) % 2 == 1


def dihedral_dct16(dct16: np.ndarray, which: int) -> np.ndarray:
    """DCT block of variant ``which`` in pdqhash.compute_dihedral order."""
    a = dct16.astype(F32)
    sign = {
        0: np.ones((OUT, OUT), bool),
        1: _ODD_J,  # rot90: transpose, negate even columns of the input
        2: ~_ODD_SUM,  # rot180
        3: _ODD_I,  # rot270: transpose, negate even rows of the input
        4: _ODD_I,  # flipX
        5: _ODD_J,  # flipY
        6: np.ones((OUT, OUT), bool),  # flipPlus1: transpose
        7: ~_ODD_SUM,  # flipMinus1: transpose
    }[which]
    signed = np.where(sign, a, -a)
    return signed.T.copy() if which in (1, 3, 6, 7) else signed


def dihedral_bits_from_dct16(dct16: np.ndarray) -> np.ndarray:
    return np.stack([bits_from_dct16(dihedral_dct16(dct16, w)) for w in range(8)])


def pdq_dct16(luma: np.ndarray, filter_64x64: bool) -> tuple[np.ndarray, int]:
    """pdqFloat256FromFloatLuma on an image of at least 5x5: (16x16 DCT, quality)."""
    rows, cols = luma.shape
    if rows == DOWN and cols == DOWN and not filter_64x64:
        image64 = luma.astype(F32)
    else:
        filtered = jarosz_filter(
            luma, jarosz_window_size(cols, DOWN), jarosz_window_size(rows, DOWN)
        )
        image64 = decimate64(filtered)
    return dct64_to_16(image64), quality_metric(image64)


# -- fast mode: blur + decimation as matrix products --------------------------------------
def box_matrix(length: int, window: int) -> np.ndarray:
    """The ``length`` x ``length`` operator of box1DFloat (float64, exact real weights).

    Row i averages inputs i - (window - half) .. i + half - 1 clipped to the vector,
    half = (window + 2) // 2: the windows box_filter_axis0 sums, divided by their count.
    """
    half = (window + 2) // 2
    matrix = np.zeros((length, length))
    for i in range(length):
        lo, hi = max(0, i - (window - half)), min(length - 1, i + half - 1)
        matrix[i, lo : hi + 1] = 1.0 / (hi - lo + 1)
    return matrix


def decimation_selector(length: int) -> np.ndarray:
    """64 x ``length`` 0/1 matrix picking decimate64's samples along one axis."""
    selector = np.zeros((DOWN, length))
    index = np.floor((np.arange(DOWN) + 0.5) * length / DOWN).astype(np.intp)
    selector[np.arange(DOWN), index] = 1.0
    return selector


def fast_axis_matrix(length: int, blur: bool = True) -> np.ndarray:
    """K = S B B: the two box passes of one axis followed by decimation, as one matrix.

    jarosz_filter runs (row box, column box) twice; row and column operators act on
    different axes and commute, so filter-then-decimate is K_rows @ L @ K_cols.T.
    ``blur=False``: S alone (the reference's unfiltered 64x64 single-hash path).
    """
    selector = decimation_selector(length)
    if not blur:
        return selector
    box = box_matrix(length, jarosz_window_size(length, DOWN))
    return selector @ box @ box


def fast_axis_weights_dense(starts, lens, weights, length: int) -> np.ndarray:
    """The dense 64 x ``length`` matrix of _imagecore.fast_axis_weights' sparse rows."""
    dense = np.zeros((DOWN, length))
    for o in range(DOWN):
        dense[o, starts[o] : starts[o] + lens[o]] = weights[o, : lens[o]]
    return dense


def fast_rows(image: np.ndarray, blur: bool = True) -> np.ndarray:
    """The row stage K_rows @ luma in float64, 64 x width (twin of pdq_fast_rows).

    Column j depends on column j of the image only, so a box spanning the same rows has
    its row stage as a column slice of this one.
    """
    luma = luma_from_grey(image) if image.ndim == 2 else luma_from_rgb(image)
    return fast_axis_matrix(luma.shape[0], blur) @ luma.astype(np.float64)


def fast_columns(rows64: np.ndarray, blur: bool = True) -> np.ndarray:
    """The column stage rows64 @ K_cols.T in float64, 64x64."""
    return rows64.astype(np.float64) @ fast_axis_matrix(rows64.shape[1], blur).T


def fast_downsample64(image: np.ndarray, blur: bool = True) -> np.ndarray:
    """K_rows @ luma @ K_cols.T in float64 (luma as luma_from_rgb / luma_from_grey).

    Equals decimate64(jarosz_filter(luma)) in real arithmetic; the float32 pipelines
    differ from it (and from each other) by rounding only.
    """
    return fast_columns(fast_rows(image, blur), blur)


def fast_dct16_from_rows(rows64: np.ndarray, blur: bool = True) -> tuple[np.ndarray, int]:
    """(16x16 DCT, quality) from a row stage: the float64 column stage, then the exact
    float32 tail (twin of pdq_fast_dct16_from_rows)."""
    image64 = fast_columns(rows64, blur).astype(F32)
    return dct64_to_16(image64), quality_metric(image64)


def pdq_fast_dct16(image: np.ndarray, blur: bool = True) -> tuple[np.ndarray, int]:
    """Fast-mode (16x16 DCT, quality): the float64 downsample, then the exact float32 tail."""
    return fast_dct16_from_rows(fast_rows(image, blur), blur)


def band_depth(lines, colour, tolerance, limit, share_needed, loose, reach, clean_share) -> int:
    """Twin of ``_imagecore.band_depth``: lines of a flat band to trim from one side."""
    lines = np.asarray(lines)[: max(limit, 0)]
    n = len(lines)
    if n == 0:
        return 0
    diff = np.abs(lines.astype(np.float64) - np.asarray(colour, np.float64))
    share = (diff <= tolerance).all(axis=2).mean(axis=1)
    in_band = share >= share_needed
    if loose:  # a line is in the band if it or one of the next `reach` lines is
        in_band = np.array([in_band[i:i + reach + 1].any() for i in range(n)])
    run = n if in_band.all() else int(np.argmin(in_band))
    if not loose:
        return run
    clean = np.nonzero(share[:run] >= clean_share)[0]
    return int(clean[-1]) + 1 if clean.size else 0


def separable_product(pixels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """rows . pixels . cols^T in float64 (the Cython kernel sums in float32)."""
    return rows.astype(np.float64) @ pixels.astype(np.float64) @ cols.astype(np.float64).T


def above_median_bits(values: np.ndarray) -> np.ndarray:
    """np.packbits(values > median), median = float32 mean of the two middle values."""
    ordered = np.sort(values, axis=None)
    median = (ordered[ordered.size // 2 - 1] + ordered[ordered.size // 2]) / np.float32(2)
    return np.packbits((values > median).reshape(-1))
