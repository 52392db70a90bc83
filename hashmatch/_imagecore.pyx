# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""PDQ hot loops, bit-identical to the C++ reference (ThreatExchange pdq/cpp, as vendored
by pdqhash 0.2.8).

Every kernel here has a plain-numpy twin in ``_imagecore_ref.py``; the twins define the
semantics and tests/test_imagecore_twins.py proves the two equal. Float arithmetic follows
the reference operation by operation (same operand types, same order of accumulation),
which is why setup.py builds this module with -ffp-contract=off: a fused multiply-add
rounds once where the reference rounds twice.

All kernels release the GIL, so a thread pool can hash several images at once.
"""
from libc.math cimport cos, sqrt
from libc.stdlib cimport free, malloc

import numpy as np

cdef extern from *:
    """
    /* Cython would compute pi/2/64 with its own constant folding; keep the reference's
       literal spelled out in C so the double value is the same. */
    static const double HM_PDQ_PI = 3.14159265358979323846;
    """
    const double HM_PDQ_PI

cdef enum:
    DOWN = 64  # side of the downsampled image
    OUT = 16   # side of the DCT block that becomes the hash

# DCT-II basis, rows 1..16 of the 64-point transform: computed in double, stored as float,
# exactly as the reference builds its dct_matrix_64 (matrix_scale_factor is a float there).
cdef float DCT[OUT][DOWN]
# The same matrix transposed, so the second DCT pass runs over contiguous memory.
cdef float DCT_T[DOWN][OUT]


cdef void _fill_dct_matrix() noexcept:
    cdef float scale = sqrt(2.0 / <double>DOWN)
    cdef int i, j
    for i in range(OUT):
        for j in range(DOWN):
            DCT[i][j] = <float>(scale * cos((HM_PDQ_PI / 2.0 / <double>DOWN) * (i + 1) * (2 * j + 1)))
            DCT_T[j][i] = DCT[i][j]


_fill_dct_matrix()


def dct_matrix():
    """The 16x64 float32 DCT matrix the kernels use (for the twin tests)."""
    out = np.empty((OUT, DOWN), dtype=np.float32)
    cdef float[:, ::1] view = out
    cdef int i, j
    for i in range(OUT):
        for j in range(DOWN):
            view[i, j] = DCT[i][j]
    return out


# ---------------------------------------------------------------------------------------
# Luma
# ---------------------------------------------------------------------------------------
def luma_from_rgb(const unsigned char[:, :, :] rgb, float[:, ::1] out):
    """out = float32(R*0.299 + G*0.587 + B*0.114), the sum done in double.

    This is pdqhash's luma (numpy float64 arithmetic, then astype(float32)), not the C++
    fillFloatLumaFromRGB (float coefficients): pdqhash.compute is the oracle. Any strides.
    """
    cdef Py_ssize_t rows = rgb.shape[0], cols = rgb.shape[1], i, j
    if rgb.shape[2] < 3:
        raise ValueError("need at least 3 channels")
    _check_same_shape(rows, cols, out)
    with nogil:
        for i in range(rows):
            for j in range(cols):
                out[i, j] = <float>(rgb[i, j, 0] * 0.299 + rgb[i, j, 1] * 0.587
                                    + rgb[i, j, 2] * 0.114)


def luma_from_grey(const unsigned char[:, :] grey, float[:, ::1] out):
    """out = float32(grey): the C++ fillFloatLumaFromGrey. Any strides.

    For every 8-bit g, float32(g*0.299 + g*0.587 + g*0.114) == g, so this is also the
    luma of the RGB image (g, g, g).
    """
    cdef Py_ssize_t rows = grey.shape[0], cols = grey.shape[1], i, j
    _check_same_shape(rows, cols, out)
    with nogil:
        for i in range(rows):
            for j in range(cols):
                out[i, j] = <float>grey[i, j]


cdef _check_same_shape(Py_ssize_t rows, Py_ssize_t cols, float[:, ::1] out):
    if out.shape[0] != rows or out.shape[1] != cols:
        raise ValueError(f"output shape {(out.shape[0], out.shape[1])} != input {(rows, cols)}")


# ---------------------------------------------------------------------------------------
# Jarosz filter: repeated box filters along rows then along columns
# ---------------------------------------------------------------------------------------
cpdef int jarosz_window_size(int old_dimension, int new_dimension) noexcept nogil:
    """computeJaroszFilterWindowSize: half the input pixels per output pixel, rounded up."""
    return (old_dimension + 2 * new_dimension - 1) // (2 * new_dimension)


cdef extern from *:
    """
    /* box1DFloat down every column at once (see _box_along_cols). Plain C so that GCC can
       clone it for AVX2 and pick the clone at load time: 8 IEEE divisions per
       instruction instead of 4, identical results (-ffp-contract=off still forbids FMA). */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define HM_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define HM_VECTOR_CLONES
    #endif

    HM_VECTOR_CLONES
    static void hm_box_columns(const float* src, float* dst, float* sums, int rows, int cols,
                               int window) {
        int half = (window + 2) / 2;
        int ri = 0, li = 0, oi = 0, size = 0, n, j;
        float fsize;
        for (j = 0; j < cols; j++) sums[j] = 0.0f;
        for (n = 0; n < half - 1; n++, ri++) {                 /* phase 1 */
            const float* add = src + (ptrdiff_t)ri * cols;
            for (j = 0; j < cols; j++) sums[j] += add[j];
            size++;
        }
        for (n = 0; n < window - half + 1; n++, ri++, oi++) {  /* phase 2 */
            const float* add = src + (ptrdiff_t)ri * cols;
            float* out = dst + (ptrdiff_t)oi * cols;
            size++;
            fsize = (float)size;
            for (j = 0; j < cols; j++) { sums[j] += add[j]; out[j] = sums[j] / fsize; }
        }
        fsize = (float)size;
        for (n = 0; n < rows - window; n++, li++, ri++, oi++) { /* phase 3 */
            const float* add = src + (ptrdiff_t)ri * cols;
            const float* sub = src + (ptrdiff_t)li * cols;
            float* out = dst + (ptrdiff_t)oi * cols;
            for (j = 0; j < cols; j++) {
                sums[j] += add[j];
                sums[j] -= sub[j];
                out[j] = sums[j] / fsize;
            }
        }
        for (n = 0; n < half - 1; n++, li++, oi++) {           /* phase 4 */
            const float* sub = src + (ptrdiff_t)li * cols;
            float* out = dst + (ptrdiff_t)oi * cols;
            size--;
            fsize = (float)size;
            for (j = 0; j < cols; j++) { sums[j] -= sub[j]; out[j] = sums[j] / fsize; }
        }
    }
    """
    void hm_box_columns(const float* src, float* dst, float* sums, int rows, int cols,
                        int window) noexcept nogil


cdef inline void _box_along_cols(const float* src, float* dst, float* sums, int rows, int cols,
                                 int window) noexcept nogil:
    """box1DFloat down every column at once.

    Each column gets exactly the reference's sequence of float operations (add the
    entering value, subtract the leaving one, divide by the window count); running all
    columns side by side, one running sum per column in ``sums``, reads memory row by row
    instead of striding down columns and lets the compiler vectorise.
    """
    hm_box_columns(src, dst, sums, rows, cols, window)


cdef enum:
    ROW_BLOCK = 16  # rows box-filtered together by _box_along_rows


cdef void _box_along_rows(const float* src, float* dst, float* work, float* sums, int rows,
                          int cols, int window) noexcept nogil:
    """box1DFloat along every row.

    A row's running sum is one long dependency chain, so rows are filtered ROW_BLOCK at a
    time: transpose the block, run the column kernel on it (16 independent sums side by
    side, vectorised), transpose back. Each row still sees the reference's operations.
    """
    cdef float* block_in = work
    cdef float* block_out = work + <Py_ssize_t>ROW_BLOCK * cols
    cdef int r0 = 0, r, c, n
    while r0 < rows:
        n = min(<int>ROW_BLOCK, rows - r0)
        for c in range(cols):
            for r in range(n):
                block_in[c * n + r] = src[<Py_ssize_t>(r0 + r) * cols + c]
        _box_along_cols(block_in, block_out, sums, cols, n, window)
        for r in range(n):
            for c in range(cols):
                dst[<Py_ssize_t>(r0 + r) * cols + c] = block_out[c * n + r]
        r0 += n


cdef int _jarosz(float* buf1, float* buf2, int rows, int cols, int window_along_rows,
                 int window_along_cols, int passes) noexcept nogil:
    """jaroszFilterFloat: the result ends in buf1. Returns -1 when out of memory."""
    cdef float* sums = <float*>malloc(max(cols, ROW_BLOCK) * sizeof(float))
    cdef float* work = <float*>malloc(2 * <Py_ssize_t>ROW_BLOCK * cols * sizeof(float))
    cdef int p
    if sums == NULL or work == NULL:
        free(sums)
        free(work)
        return -1
    for p in range(passes):
        _box_along_rows(buf1, buf2, work, sums, rows, cols, window_along_rows)
        _box_along_cols(buf2, buf1, sums, rows, cols, window_along_cols)
    free(sums)
    free(work)
    return 0


def jarosz_filter(float[:, ::1] buf1, float[:, ::1] buf2, int window_along_rows,
                  int window_along_cols, int passes=2):
    """Box-filter ``buf1`` in place (``buf2`` is scratch of the same shape).

    Windows must be in 1..length of the direction they run along (the reference reads out
    of bounds otherwise; PDQ's own window sizes always qualify).
    """
    cdef int rows = buf1.shape[0], cols = buf1.shape[1], status
    if buf2.shape[0] != rows or buf2.shape[1] != cols:
        raise ValueError("scratch buffer must have the shape of the image")
    if rows == 0 or cols == 0:
        return
    if not 1 <= window_along_rows <= cols or not 1 <= window_along_cols <= rows:
        raise ValueError(
            f"window sizes ({window_along_rows}, {window_along_cols}) must lie in 1..{cols} "
            f"and 1..{rows}")
    with nogil:
        status = _jarosz(&buf1[0, 0], &buf2[0, 0], rows, cols, window_along_rows,
                         window_along_cols, passes)
    if status:
        raise MemoryError()


# ---------------------------------------------------------------------------------------
# Decimation, quality, DCT
# ---------------------------------------------------------------------------------------
cdef void _decimate(const float* src, int rows, int cols, float* out64) noexcept nogil:
    """decimateFloat to 64x64: sample at the centres of the output cells (double math)."""
    cdef int oi, oj, si, sj
    for oi in range(DOWN):
        si = <int>(((oi + 0.5) * rows) / DOWN)
        for oj in range(DOWN):
            sj = <int>(((oj + 0.5) * cols) / DOWN)
            out64[oi * DOWN + oj] = src[<Py_ssize_t>si * cols + sj]


def decimate64(const float[:, ::1] image):
    """The 64x64 samples decimateFloat takes from a (filtered) image."""
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError("empty image")
    out = np.empty((DOWN, DOWN), dtype=np.float32)
    cdef float[:, ::1] view = out
    with nogil:
        _decimate(&image[0, 0], image.shape[0], image.shape[1], &view[0, 0])
    return out


cdef inline int _gradient_step(float u, float v) noexcept nogil:
    # int d = ((u - v) * 100) / 255 with float arithmetic, truncated toward zero.
    cdef int d = <int>(((u - v) * <float>100) / <float>255)
    return -d if d < 0 else d


cdef int _quality(const float* a) noexcept nogil:
    """pdqImageDomainQualityMetric: quantised vertical then horizontal gradients."""
    cdef int gradient_sum = 0, i, j, q
    for i in range(DOWN - 1):
        for j in range(DOWN):
            gradient_sum += _gradient_step(a[i * DOWN + j], a[(i + 1) * DOWN + j])
    for i in range(DOWN):
        for j in range(DOWN - 1):
            gradient_sum += _gradient_step(a[i * DOWN + j], a[i * DOWN + j + 1])
    q = gradient_sum // 90
    return 100 if q > 100 else q


def quality_metric(const float[:, ::1] image64):
    """PDQ quality (0..100) of a 64x64 downsample."""
    _check_64(image64)
    cdef int q
    with nogil:
        q = _quality(&image64[0, 0])
    return q


cdef void _dct64_to_16(const float* a, float* t, float* b) noexcept nogil:
    """dct64To16: B = (D A) D^T, every sum accumulated in float over k = 0..63 in order.

    Loops are ordered so the innermost runs over independent outputs (contiguous, SIMD);
    each output still sees its products added one k at a time from 0.0, as the reference.
    """
    cdef int i, j, k
    cdef float d, tv
    for i in range(OUT):
        for j in range(DOWN):
            t[i * DOWN + j] = 0.0
        for k in range(DOWN):
            d = DCT[i][k]
            for j in range(DOWN):
                t[i * DOWN + j] += d * a[k * DOWN + j]
    for i in range(OUT):
        for j in range(OUT):
            b[i * OUT + j] = 0.0
        for k in range(DOWN):
            tv = t[i * DOWN + k]
            for j in range(OUT):
                b[i * OUT + j] += tv * DCT_T[k][j]


def dct64_to_16(const float[:, ::1] image64):
    """The 16x16 float32 DCT block PDQ thresholds, from a 64x64 downsample."""
    _check_64(image64)
    out = np.empty((OUT, OUT), dtype=np.float32)
    cdef float[:, ::1] view = out
    cdef float t[OUT * DOWN]
    with nogil:
        _dct64_to_16(&image64[0, 0], t, &view[0, 0])
    return out


cdef _check_64(const float[:, ::1] image64):
    if image64.shape[0] != DOWN or image64.shape[1] != DOWN:
        raise ValueError(f"need a 64x64 array, got {(image64.shape[0], image64.shape[1])}")


# ---------------------------------------------------------------------------------------
# Median and bits
# ---------------------------------------------------------------------------------------
cdef float _torben(const float* m, int n) noexcept nogil:
    """Torben Mogensen's median without moving data (torben.cpp).

    Returns the element of rank (n+1)//2 (1-based): the lower median when n is even.
    """
    cdef int i, less, greater, equal, half = (n + 1) // 2
    cdef float lo = m[0], hi = m[0], guess, max_lt, min_gt
    for i in range(1, n):
        if m[i] < lo:
            lo = m[i]
        if m[i] > hi:
            hi = m[i]
    while True:
        guess = (lo + hi) / 2
        less = 0
        greater = 0
        equal = 0
        max_lt = lo
        min_gt = hi
        for i in range(n):
            if m[i] < guess:
                less += 1
                if m[i] > max_lt:
                    max_lt = m[i]
            elif m[i] > guess:
                greater += 1
                if m[i] < min_gt:
                    min_gt = m[i]
            else:
                equal += 1
        if less <= half and greater <= half:
            break
        elif less > greater:
            hi = max_lt
        else:
            lo = min_gt
    if less >= half:
        return max_lt
    elif less + equal >= half:
        return guess
    return min_gt


def torben_median(const float[::1] values):
    """torben(): the element of rank (n+1)//2 of a non-empty float32 vector."""
    if values.shape[0] < 1:
        raise ValueError("median of an empty vector")
    cdef float m
    with nogil:
        m = _torben(&values[0], values.shape[0])
    return m


cdef void _bits_from_dct16(const float* b, unsigned char* packed) noexcept nogil:
    """pdqBuffer16x16ToBits, packed MSB-first in hex order.

    Hash256 bit k (k = 16*i + j) is set when B[i][j] > median, and the hex form prints
    bit 255 first, so packed bit p (MSB-first) is Hash256 bit 255 - p.
    """
    cdef float median = _torben(b, OUT * OUT)
    cdef int byte, bit, k
    cdef unsigned char acc
    for byte in range(OUT * OUT // 8):
        acc = 0
        for bit in range(8):
            k = OUT * OUT - 1 - (byte * 8 + bit)
            acc = (acc << 1) | (1 if b[k] > median else 0)
        packed[byte] = acc


def bits_from_dct16(const float[:, ::1] dct16):
    """The 32-byte packed PDQ hash of a 16x16 DCT block."""
    _check_16(dct16)
    out = np.empty(32, dtype=np.uint8)
    cdef unsigned char[::1] view = out
    with nogil:
        _bits_from_dct16(&dct16[0, 0], &view[0])
    return out


cdef _check_16(const float[:, ::1] dct16):
    if dct16.shape[0] != OUT or dct16.shape[1] != OUT:
        raise ValueError(f"need a 16x16 array, got {(dct16.shape[0], dct16.shape[1])}")


# ---------------------------------------------------------------------------------------
# Dihedral transforms of the DCT block
# ---------------------------------------------------------------------------------------
# The DCT of a rotated/flipped image is the original DCT transposed or not, with the sign
# of odd-frequency rows and/or columns flipped (dct16OriginalToXxx). Order is the one
# pdqhash.compute_dihedral returns.
DIHEDRAL_NAMES = ("original", "rot90", "rot180", "rot270", "flipX", "flipY", "flipPlus1",
                  "flipMinus1")


cdef inline bint _transposed(int which) noexcept nogil:
    return which == 1 or which == 3 or which == 6 or which == 7


cdef inline bint _negated(int which, int i, int j) noexcept nogil:
    if which == 1:               # rot90
        return not (j & 1)
    if which == 2 or which == 7:  # rot180, flipMinus1
        return (i + j) & 1
    if which == 3 or which == 4:  # rot270, flipX
        return not (i & 1)
    if which == 5:               # flipY
        return not (j & 1)
    return False                 # original, flipPlus1


cdef void _dihedral(const float* a, float* b, int which) noexcept nogil:
    cdef int i, j
    cdef float v
    cdef bint transpose = _transposed(which)
    for i in range(OUT):
        for j in range(OUT):
            v = -a[i * OUT + j] if _negated(which, i, j) else a[i * OUT + j]
            if transpose:
                b[j * OUT + i] = v
            else:
                b[i * OUT + j] = v


def dihedral_dct16(const float[:, ::1] dct16, int which):
    """The DCT block of dihedral variant ``which`` (index into DIHEDRAL_NAMES)."""
    _check_16(dct16)
    if not 0 <= which < 8:
        raise ValueError("which must be in 0..7")
    out = np.empty((OUT, OUT), dtype=np.float32)
    cdef float[:, ::1] view = out
    with nogil:
        _dihedral(&dct16[0, 0], &view[0, 0], which)
    return out


def dihedral_bits_from_dct16(const float[:, ::1] dct16):
    """(8, 32) packed hashes of the 8 dihedral variants, in DIHEDRAL_NAMES order."""
    _check_16(dct16)
    out = np.empty((8, 32), dtype=np.uint8)
    cdef unsigned char[:, ::1] view = out
    cdef float aux[OUT * OUT]
    cdef int which
    with nogil:
        for which in range(8):
            _dihedral(&dct16[0, 0], aux, which)
            _bits_from_dct16(aux, &view[which, 0])
    return out


# ---------------------------------------------------------------------------------------
# The whole float pipeline in one GIL-free call
# ---------------------------------------------------------------------------------------
def pdq_dct16_inplace(float[:, ::1] luma, float[:, ::1] scratch, bint filter_64x64):
    """pdqFloat256FromFloatLuma: (16x16 float32 DCT block, quality) of a luma image.

    ``luma`` is overwritten (the filter runs in place); ``scratch`` has its shape.
    ``filter_64x64``: the reference's single-hash path copies a 64x64 input without
    filtering, its dihedral path filters every size; pass False for the former, True for
    the latter. The image must be at least 5x5 (smaller ones hash to zero, quality 0;
    callers handle that).
    """
    cdef int rows = luma.shape[0], cols = luma.shape[1], quality = 0, status = 0
    if rows < 5 or cols < 5:
        raise ValueError(f"image {rows}x{cols} is below PDQ's 5x5 minimum")
    if scratch.shape[0] != rows or scratch.shape[1] != cols:
        raise ValueError("scratch buffer must have the shape of the image")
    out = np.empty((OUT, OUT), dtype=np.float32)
    cdef float[:, ::1] view = out
    cdef float image64[DOWN * DOWN]
    cdef float t[OUT * DOWN]
    with nogil:
        if rows == DOWN and cols == DOWN and not filter_64x64:
            _decimate(&luma[0, 0], rows, cols, image64)  # identity at 64x64
        else:
            status = _jarosz(&luma[0, 0], &scratch[0, 0], rows, cols,
                             jarosz_window_size(cols, DOWN), jarosz_window_size(rows, DOWN), 2)
            _decimate(&luma[0, 0], rows, cols, image64)
        if status == 0:
            quality = _quality(image64)
            _dct64_to_16(image64, t, &view[0, 0])
    if status:
        raise MemoryError()
    return out, quality
