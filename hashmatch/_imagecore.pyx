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
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcpy

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


# ---------------------------------------------------------------------------------------
# Fast mode: the blur + decimation as two sparse matrix products, straight from uint8
# ---------------------------------------------------------------------------------------
# The Jarosz filter is linear and separable and PDQ reads it at 64x64 points only, so along
# an axis of length n it is one 64 x n matrix K = S B B (S: the decimation selector, B: the
# n x n box operator of box1DFloat, window jarosz_window_size(n, 64), edge windows
# normalised by their clipped length). The 64x64 downsample is K_rows . L . K_cols^T.
# Row k of K is nonzero on about 2*window consecutive inputs, so the product reads every
# input pixel about once and no full-size float image or filter pass exists. Results
# equal the exact path up to float rounding (different summation order), not bit for bit.
cdef extern from *:
    """
    #include <stddef.h>
    /* Row stage: out[o, :] = sum_t weights[o, t] * luma(row starts[o] + t), o = 0..63.
       Grey: luma = the byte. RGB(A): luma = float(R*0.299 + G*0.587 + B*0.114) in double,
       as luma_from_rgb. Accumulated in float, vectorised across the row. */
    HM_VECTOR_CLONES
    static void hm_fast_rows_grey(const unsigned char* base, ptrdiff_t row_stride, int cols,
                                  const int* starts, const int* lens, const float* weights,
                                  int maxlen, float* out) {
        int o, t, j;
        for (o = 0; o < 64; o++) {
            float* acc = out + (ptrdiff_t)o * cols;
            const float* wt = weights + (ptrdiff_t)o * maxlen;
            const unsigned char* src = base + (ptrdiff_t)starts[o] * row_stride;
            float k0 = wt[0];
            for (j = 0; j < cols; j++) acc[j] = k0 * (float)src[j];
            for (t = 1; t + 1 < lens[o]; t += 2) {
                const unsigned char* a = src + (ptrdiff_t)t * row_stride;
                const unsigned char* b = a + row_stride;
                float ka = wt[t], kb = wt[t + 1];
                for (j = 0; j < cols; j++) acc[j] += ka * (float)a[j] + kb * (float)b[j];
            }
            if (t < lens[o]) {
                const unsigned char* a = src + (ptrdiff_t)t * row_stride;
                float ka = wt[t];
                for (j = 0; j < cols; j++) acc[j] += ka * (float)a[j];
            }
        }
    }

    /* RGB(A): luma is linear too, so each output row first accumulates the weighted input
       rows channel by channel over the interleaved bytes (``line``: channels * cols
       floats, contiguous, vectorised like grey), then takes
       R*0.299 + G*0.587 + B*0.114 of the 64 sums per column (the 4th channel is summed and
       ignored). */
    HM_VECTOR_CLONES
    static void hm_fast_rows_rgb(const unsigned char* base, ptrdiff_t row_stride, int channels,
                                 int cols, const int* starts, const int* lens,
                                 const float* weights, int maxlen, float* out, float* line) {
        int o, t;
        ptrdiff_t j, width = (ptrdiff_t)channels * cols;  /* see hm_fast_cols on -fwrapv */
        for (o = 0; o < 64; o++) {
            float* acc = out + (ptrdiff_t)o * cols;
            const float* wt = weights + (ptrdiff_t)o * maxlen;
            const unsigned char* src = base + (ptrdiff_t)starts[o] * row_stride;
            float k0 = wt[0];
            for (j = 0; j < width; j++) line[j] = k0 * (float)src[j];
            for (t = 1; t < lens[o]; t++) {
                const unsigned char* a = src + (ptrdiff_t)t * row_stride;
                float ka = wt[t];
                for (j = 0; j < width; j++) line[j] += ka * (float)a[j];
            }
            if (channels == 3) {
                for (j = 0; j < cols; j++)
                    acc[j] = (float)(line[3 * j] * 0.299 + line[3 * j + 1] * 0.587
                                     + line[3 * j + 2] * 0.114);
            } else {
                for (j = 0; j < cols; j++)
                    acc[j] = (float)(line[4 * j] * 0.299 + line[4 * j + 1] * 0.587
                                     + line[4 * j + 2] * 0.114);
            }
        }
    }

    /* Column stage: out64[r, c] = sum_t weights[c, t] * buf[r, starts[c] + t], row r of
       buf at buf + r * stride (stride >= the box's width: buf may be a column slice of a
       wider row stage). Eight partial sums per dot product (independent lanes the
       compiler can vectorise). Indices are ptrdiff_t: Python's CFLAGS carry -fwrapv, and
       with wrapping int indices GCC re-extends them every step (2.4x slower here). */
    HM_VECTOR_CLONES
    static void hm_fast_cols(const float* buf, ptrdiff_t stride, const int* starts,
                             const int* lens, const float* weights, int maxlen, float* out64) {
        ptrdiff_t r, c, t, l;
        for (r = 0; r < 64; r++) {
            const float* row = buf + (ptrdiff_t)r * stride;
            for (c = 0; c < 64; c++) {
                const float* x = row + starts[c];
                const float* wt = weights + c * maxlen;
                ptrdiff_t len = lens[c];
                float s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, total;
                for (t = 0; t + 8 <= len; t += 8)
                    for (l = 0; l < 8; l++) s[l] += wt[t + l] * x[t + l];
                total = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
                for (; t < len; t++) total += wt[t] * x[t];
                out64[r * 64 + c] = total;
            }
        }
    }
    """
    void hm_fast_rows_grey(const unsigned char* base, Py_ssize_t row_stride, int cols,
                           const int* starts, const int* lens, const float* weights,
                           int maxlen, float* out) noexcept nogil
    void hm_fast_rows_rgb(const unsigned char* base, Py_ssize_t row_stride, int channels,
                          int cols, const int* starts, const int* lens, const float* weights,
                          int maxlen, float* out, float* line) noexcept nogil
    void hm_fast_cols(const float* buf, Py_ssize_t stride, const int* starts, const int* lens,
                      const float* weights, int maxlen, float* out64) noexcept nogil


cdef inline int _decimation_index(int o, int n) noexcept nogil:
    return <int>(((o + 0.5) * n) / DOWN)  # as _decimate


def fast_axis_weights(int n, bint blur=True):
    """The 64 x n matrix K = S B B of one axis in sparse row form.

    Returns (starts int32[64], lens int32[64], weights float32[64, maxlen], n): row o of K
    is ``weights[o, :lens[o]]`` at columns ``starts[o] ..``; n is kept so the kernels can
    refuse weights of another axis length. Entries are computed in double
    (1 / (count_i * count_j) summed over the box windows) and rounded once to float.
    ``blur=False`` gives the bare selector S (the reference's unfiltered 64x64 path).
    Dense twin: _imagecore_ref.fast_axis_matrix.
    """
    if n < 1:
        raise ValueError("axis length must be positive")
    cdef int window = jarosz_window_size(n, DOWN) if blur else 1
    cdef int half = (window + 2) // 2
    cdef int before = window - half, after = half - 1  # box window of i: i-before .. i+after
    cdef int maxlen = 2 * (before + after) + 1
    starts = np.empty(DOWN, np.int32)
    lens = np.empty(DOWN, np.int32)
    weights = np.zeros((DOWN, maxlen), np.float32)
    cdef int[::1] s_view = starts, l_view = lens
    cdef float[:, ::1] w_view = weights
    cdef double* row = <double*>malloc(maxlen * sizeof(double))
    cdef int o, si, a, b, ka, kb, j, k, ja, jb
    cdef double outer
    if row == NULL:
        raise MemoryError()
    with nogil:
        for o in range(DOWN):
            si = _decimation_index(o, n)
            a = max(0, si - before)
            b = min(n - 1, si + after)
            ka = max(0, a - before)
            kb = min(n - 1, b + after)
            for k in range(kb - ka + 1):
                row[k] = 0.0
            outer = 1.0 / (b - a + 1)
            for j in range(a, b + 1):
                ja = max(0, j - before)
                jb = min(n - 1, j + after)
                for k in range(ja, jb + 1):
                    row[k - ka] += outer / (jb - ja + 1)
            s_view[o] = ka
            l_view[o] = kb - ka + 1
            for k in range(kb - ka + 1):
                w_view[o, k] = <float>row[k]
    free(row)
    return starts, lens, weights, n


cdef _check_axis(axis_weights, int n):
    starts, lens, weights, length = axis_weights
    if length != n:
        raise ValueError(f"axis weights are for length {length}, not {n}")
    cdef int[::1] s = starts
    cdef int[::1] l = lens
    cdef int o
    if s.shape[0] != DOWN or l.shape[0] != DOWN or weights.shape[0] != DOWN:
        raise ValueError("axis weights must have 64 rows")
    for o in range(DOWN):
        if l[o] < 1 or l[o] > weights.shape[1] or s[o] < 0 or s[o] + l[o] > n:
            raise ValueError(f"axis weights do not fit an axis of length {n}")


def fast_downsample64(image, row_weights, col_weights, float[::1] scratch=None):
    """K_rows . luma(image) . K_cols^T as a 64x64 float32 array.

    ``image``: uint8 HxW (grey) or HxWx3/4 (RGB: luma R*0.299 + G*0.587 + B*0.114, applied
    after the row stage -- it is linear; 4th channel ignored), pixels contiguous within a
    row (any row stride). ``row_weights`` / ``col_weights``: fast_axis_weights of the
    height / width. ``scratch``: optional float32 buffer of at least (64 + channels) *
    width floats (the 64 x width row-stage result plus one interleaved line), reused to
    avoid page faults.
    """
    out = np.empty((DOWN, DOWN), dtype=np.float32)
    cdef float[:, ::1] view = out
    _fast_downsample(image, row_weights, col_weights, scratch, &view[0, 0])
    return out


cdef struct _Pixels:
    const unsigned char* base
    Py_ssize_t row_stride  # bytes
    int rows, cols, channels


cdef _Pixels _pixels_of(image) except *:
    """The uint8 HxW / HxWx3 / HxWx4 array the fast kernels read, rows any stride."""
    cdef const unsigned char[:, :] grey
    cdef const unsigned char[:, :, :] rgb
    cdef _Pixels p
    p.channels = 1
    if image.ndim == 2:
        grey = image
        p.rows, p.cols = grey.shape[0], grey.shape[1]
        if p.cols and grey.strides[1] != 1:
            raise ValueError("pixels must be contiguous within a row")
        p.base = &grey[0, 0] if p.rows and p.cols else NULL
        p.row_stride = grey.strides[0]
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        rgb = image
        p.rows, p.cols, p.channels = rgb.shape[0], rgb.shape[1], rgb.shape[2]
        if p.cols and (rgb.strides[2] != 1 or rgb.strides[1] != p.channels):
            raise ValueError("pixels must be contiguous within a row")
        p.base = &rgb[0, 0, 0] if p.rows and p.cols else NULL
        p.row_stride = rgb.strides[0]
    else:
        raise ValueError(f"need an HxW or HxWx3/4 uint8 array, got shape {image.shape}")
    if p.rows < 1 or p.cols < 1:
        raise ValueError("empty image")
    return p


cdef _fast_rows(_Pixels* p, row_weights, float* buf):
    """Row stage into buf: 64 x cols floats (row o at buf + o * cols), then channels * cols
    floats of work space for RGB(A). row_weights: checked by the caller."""
    r_starts, r_lens, r_weights, _ = row_weights
    cdef const int[::1] rs = r_starts
    cdef const int[::1] rl = r_lens
    cdef const float[:, ::1] rw = r_weights
    with nogil:
        if p.channels == 1:
            hm_fast_rows_grey(p.base, p.row_stride, p.cols, &rs[0], &rl[0], &rw[0, 0],
                              rw.shape[1], buf)
        else:
            hm_fast_rows_rgb(p.base, p.row_stride, p.channels, p.cols, &rs[0], &rl[0],
                             &rw[0, 0], rw.shape[1], buf, buf + <Py_ssize_t>DOWN * p.cols)


cdef _fast_cols(const float* buf, Py_ssize_t stride, col_weights, float* out64):
    """Column stage of a row-stage result of width cols (row r at buf + r * stride).
    col_weights: checked by the caller."""
    c_starts, c_lens, c_weights, _ = col_weights
    cdef const int[::1] cs = c_starts
    cdef const int[::1] cl = c_lens
    cdef const float[:, ::1] cw = c_weights
    with nogil:
        hm_fast_cols(buf, stride, &cs[0], &cl[0], &cw[0, 0], cw.shape[1], out64)


cdef _fast_downsample(image, row_weights, col_weights, float[::1] scratch, float* out64):
    cdef _Pixels p = _pixels_of(image)
    _check_axis(row_weights, p.rows)
    _check_axis(col_weights, p.cols)
    cdef Py_ssize_t need = (<Py_ssize_t>DOWN + p.channels) * p.cols
    cdef float* buf
    cdef bint owned = scratch is None or scratch.shape[0] < need
    if owned:
        buf = <float*>malloc(need * sizeof(float))
        if buf == NULL:
            raise MemoryError()
    else:
        buf = &scratch[0]
    try:
        _fast_rows(&p, row_weights, buf)
        _fast_cols(buf, p.cols, col_weights, out64)
    finally:
        if owned:
            free(buf)


cdef _dct16_and_quality(const float* image64):
    out = np.empty((OUT, OUT), dtype=np.float32)
    cdef float[:, ::1] view = out
    cdef float t[OUT * DOWN]
    cdef int quality
    with nogil:
        quality = _quality(image64)
        _dct64_to_16(image64, t, &view[0, 0])
    return out, quality


def pdq_fast_dct16(image, row_weights, col_weights, float[::1] scratch=None):
    """(16x16 float32 DCT block, quality) of fast_downsample64(...): PDQ's float pipeline
    with the sparse blur + decimation in place of the full-size filter. The same as
    pdq_fast_dct16_from_rows(pdq_fast_rows(image, row_weights), col_weights), bit for bit."""
    cdef float image64[DOWN * DOWN]
    _fast_downsample(image, row_weights, col_weights, scratch, image64)
    return _dct16_and_quality(image64)


def pdq_fast_rows(image, row_weights, scratch=None):
    """The row stage of the fast path alone: K_rows . luma(image) as float32 (64, width).

    Column j of the result depends on column j of the image only (RGB is reduced to luma
    per column after the row sums), so the column stage of any box spanning the same rows
    can read a column slice of it: pdq_fast_dct16_from_rows(rows[:, l:r], col_weights)
    equals pdq_fast_dct16(image[:, l:r], row_weights, col_weights) bit for bit.
    ``scratch``: float32 buffer as pdq_fast_dct16's; when it holds (64 + channels) * width
    floats the result is a view of its start (valid until the buffer is reused).
    Twin: _imagecore_ref.fast_rows.
    """
    cdef _Pixels p = _pixels_of(image)
    _check_axis(row_weights, p.rows)
    cdef Py_ssize_t size = <Py_ssize_t>DOWN * p.cols
    cdef Py_ssize_t need = size + <Py_ssize_t>p.channels * p.cols
    if scratch is None or scratch.shape[0] < need:
        scratch = np.empty(need, dtype=np.float32)
    cdef float[::1] buf = scratch
    _fast_rows(&p, row_weights, &buf[0])
    return scratch[:size].reshape(DOWN, p.cols)


def pdq_fast_dct16_from_rows(const float[:, :] rows64, col_weights):
    """The column stage, quality and DCT of the fast path on a row-stage result (or a
    column slice of one: any row stride, columns contiguous): (16x16 float32 DCT,
    quality), as pdq_fast_dct16 of the pixels those columns came from.
    Twin: _imagecore_ref.fast_dct16_from_rows."""
    if rows64.shape[0] != DOWN:
        raise ValueError(f"need the 64 rows of a row stage, got {rows64.shape[0]}")
    cdef int cols = rows64.shape[1]
    if cols < 1:
        raise ValueError("empty image")
    cdef Py_ssize_t item = sizeof(float)
    if rows64.strides[1] != item or rows64.strides[0] < 0 or rows64.strides[0] % item:
        raise ValueError("row-stage columns must be contiguous (a column slice of its rows)")
    _check_axis(col_weights, cols)
    cdef float image64[DOWN * DOWN]
    _fast_cols(&rows64[0, 0], rows64.strides[0] // item, col_weights, image64)
    return _dct16_and_quality(image64)


# --------------------------------------------------------------------------------------------
# fast phash: a dense separable product on uint8 pixels

cdef extern from *:
    """
    /* out[i, :] = sum_y rows[i, y] * pixels[y, :] over all rows y, i = 0..n_rows-1.
       Column blocks of HM_DENSE_BLOCK: two pixel rows are turned into floats once, then
       added into every output row's block (n_rows x block floats, L1-resident);
       vectorised across the block. */
    #define HM_DENSE_BLOCK 128
    HM_VECTOR_CLONES
    static void hm_dense_rows(const unsigned char* base, ptrdiff_t row_stride, int height,
                              int width, const float* rows, int n_rows, float* out) {
        float fa[HM_DENSE_BLOCK], fb[HM_DENSE_BLOCK];
        int i, y, j, j0, n;
        for (j0 = 0; j0 < width; j0 += HM_DENSE_BLOCK) {
            n = width - j0 < HM_DENSE_BLOCK ? width - j0 : HM_DENSE_BLOCK;
            for (i = 0; i < n_rows; i++) {
                float* acc = out + (ptrdiff_t)i * width + j0;
                for (j = 0; j < n; j++) acc[j] = 0.0f;
            }
            for (y = 0; y + 1 < height; y += 2) {
                const unsigned char* a = base + (ptrdiff_t)y * row_stride + j0;
                const unsigned char* b = a + row_stride;
                for (j = 0; j < n; j++) { fa[j] = (float)a[j]; fb[j] = (float)b[j]; }
                for (i = 0; i < n_rows; i++) {
                    float* acc = out + (ptrdiff_t)i * width + j0;
                    float ka = rows[(ptrdiff_t)i * height + y], kb = rows[(ptrdiff_t)i * height + y + 1];
                    for (j = 0; j < n; j++) acc[j] += ka * fa[j] + kb * fb[j];
                }
            }
            if (y < height) {
                const unsigned char* a = base + (ptrdiff_t)y * row_stride + j0;
                for (j = 0; j < n; j++) fa[j] = (float)a[j];
                for (i = 0; i < n_rows; i++) {
                    float* acc = out + (ptrdiff_t)i * width + j0;
                    float ka = rows[(ptrdiff_t)i * height + y];
                    for (j = 0; j < n; j++) acc[j] += ka * fa[j];
                }
            }
        }
    }

    /* out[i, c] = sum_x lines[i, x] * cols[c, x], summed in 8 interleaved partial sums
       (a fixed order, so every clone gives the same result) to let it vectorise. */
    HM_VECTOR_CLONES
    static void hm_dense_cols(const float* lines, int width, const float* cols, int n_rows,
                              int n_cols, float* out) {
        int i, c, x, l;
        for (i = 0; i < n_rows; i++) {
            const float* line = lines + (ptrdiff_t)i * width;
            for (c = 0; c < n_cols; c++) {
                const float* wt = cols + (ptrdiff_t)c * width;
                float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                float total = 0.0f;
                for (x = 0; x + 8 <= width; x += 8)
                    for (l = 0; l < 8; l++) part[l] += line[x + l] * wt[x + l];
                for (; x < width; x++) total += line[x] * wt[x];
                for (l = 0; l < 8; l++) total += part[l];
                out[i * n_cols + c] = total;
            }
        }
    }
    """
    void hm_dense_rows(const unsigned char* base, Py_ssize_t row_stride, int height, int width,
                       const float* rows, int n_rows, float* out) noexcept nogil
    void hm_dense_cols(const float* lines, int width, const float* cols, int n_rows,
                       int n_cols, float* out) noexcept nogil


def separable_product(const unsigned char[:, :] pixels, const float[:, ::1] rows,
                      const float[:, ::1] cols):
    """``rows . pixels . cols^T`` as float32 (rows.shape[0] x cols.shape[0]).

    For fast phash (rows/cols = DCT rows times LANCZOS weights, a few rows each): each
    output row's float line is the weighted sum of all pixel rows (vectorised across the
    row, AVX2 clone), then short dot products with ``cols``. Single-threaded and GIL-free; numpy's matmul would hand small
    products like this to a BLAS thread pool whose wake-ups cost more than the arithmetic
    on a loaded machine. Twin: _imagecore_ref.separable_product.
    """
    cdef Py_ssize_t height = pixels.shape[0], width = pixels.shape[1]
    cdef Py_ssize_t n_rows = rows.shape[0], n_cols = cols.shape[0]
    if height < 1 or width < 1:
        raise ValueError("empty image")
    if n_rows < 1 or n_cols < 1:
        raise ValueError("need at least one row of weights per axis")
    if rows.shape[1] != height or cols.shape[1] != width:
        raise ValueError(f"weights ({rows.shape[1]}, {cols.shape[1]}) do not fit an image of "
                         f"{height}x{width}")
    if pixels.strides[1] != 1:
        raise ValueError("pixels must be contiguous within a row")
    out = np.empty((n_rows, n_cols), dtype=np.float32)
    cdef float[:, ::1] view = out
    cdef float* lines = <float*>malloc(n_rows * width * sizeof(float))
    if lines == NULL:
        raise MemoryError()
    with nogil:
        hm_dense_rows(&pixels[0, 0], pixels.strides[0], <int>height, <int>width, &rows[0, 0],
                      <int>n_rows, lines)
        hm_dense_cols(lines, <int>width, &cols[0, 0], <int>n_rows, <int>n_cols, &view[0, 0])
    free(lines)
    return out


def above_median_bits(const float[:, ::1] values):
    """Packed bits (np.packbits order, row-major) of ``values > median(values)``, the median
    of an even count being the float32 mean of its two middle values (as fast phash's numpy
    version: ``(sorted[n/2 - 1] + sorted[n/2]) / 2``). One call instead of sort, compare and
    packbits in numpy. Twin: _imagecore_ref.above_median_bits."""
    cdef Py_ssize_t n = values.shape[0] * values.shape[1], i
    if n < 2 or n % 16:
        raise ValueError("need a multiple of 16 values (whole bytes, an even count)")
    out = np.zeros(n // 8, dtype=np.uint8)
    cdef unsigned char[::1] packed = out
    cdef const float* flat = &values[0, 0]
    cdef float* ordered = <float*>malloc(n * sizeof(float))
    cdef float median
    if ordered == NULL:
        raise MemoryError()
    with nogil:
        memcpy(ordered, flat, n * sizeof(float))
        qsort(ordered, n, sizeof(float), _compare_floats)
        median = (ordered[n // 2 - 1] + ordered[n // 2]) / <float>2.0
        for i in range(n):
            if flat[i] > median:
                packed[i >> 3] |= <unsigned char>(0x80 >> (i & 7))
    free(ordered)
    return out


cdef int _compare_floats(const void* a, const void* b) noexcept nogil:
    cdef float x = (<const float*>a)[0], y = (<const float*>b)[0]
    return (x > y) - (x < y)


# --------------------------------------------------------------------------------------------
# zero-copy pixels of a PIL image

cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetPointer
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int64_t

cnp.import_array()

cdef extern from *:
    """
    /* The Arrow C data interface's array struct (arrow.apache.org/docs/format/CDataInterface). */
    struct hm_ArrowArray {
        int64_t length, null_count, offset, n_buffers, n_children;
        const void **buffers;
        void **children;
        void *dictionary;
        void (*release)(void *);
        void *private_data;
    };
    """
    struct hm_ArrowArray:
        int64_t length
        int64_t offset
        int64_t n_buffers
        const void **buffers


def grey_pixels(image):
    """The pixels of a mode "L" PIL image as a read-only uint8 (height, width) array that
    shares the image's memory, or None when Pillow cannot export it that way.

    ``np.asarray(image)`` copies the pixels twice (tobytes in chunks, then a join): ~0.28 ms
    for 640x480, a quarter of the fast PDQ path. Pillow (>= 11.2) exports images whose rows
    lie in one block through the Arrow C data interface; the array keeps the exported
    capsule -- and through it the image memory -- alive. Large images are stored in several
    blocks and return None: the caller copies, which is cheap next to decoding them.
    """
    if image.mode != "L" or not hasattr(image, "__arrow_c_array__"):
        return None
    try:
        _, array_capsule = image.__arrow_c_array__()
    except (ValueError, TypeError, OSError):
        return None
    cdef hm_ArrowArray *exported = <hm_ArrowArray *> PyCapsule_GetPointer(
        array_capsule, "arrow_array")
    cdef int64_t width = image.size[0], height = image.size[1]
    if exported.n_buffers != 2 or exported.offset != 0 or exported.length != width * height \
            or exported.buffers[1] == NULL:
        return None
    cdef cnp.npy_intp dims[2]
    dims[0] = height
    dims[1] = width
    cdef cnp.ndarray view = cnp.PyArray_SimpleNewFromData(
        2, dims, cnp.NPY_UINT8, <void *> exported.buffers[1])
    Py_INCREF(array_capsule)  # PyArray_SetBaseObject steals a reference
    cnp.PyArray_SetBaseObject(view, array_capsule)
    cnp.PyArray_CLEARFLAGS(view, cnp.NPY_ARRAY_WRITEABLE)
    return view


# --------------------------------------------------------------------------------------------
# region analysis (hashmatch.regions): how deep a flat band runs in from one side

def band_depth(const short[:, :, :] lines, const double[::1] colour, double tolerance,
               int limit, double share_needed, bint loose, int reach, double clean_share):
    """How many of ``lines`` (outermost first; (n, length, channels) int16, any strides) to
    trim as a band of ``colour``: a line is in the band when at least ``share_needed`` of its
    pixels are within ``tolerance`` of ``colour`` on every channel; ``loose``: a line also
    counts when one of the next ``reach`` lines is in the band (text rows inside a caption
    bar), and the cut goes after the band's last line with ``clean_share`` pixels of the
    colour. Only the first ``limit`` lines are looked at. Twin: _imagecore_ref.band_depth."""
    cdef Py_ssize_t n = min(<Py_ssize_t> max(limit, 0), lines.shape[0])
    cdef Py_ssize_t length = lines.shape[1], channels = lines.shape[2]
    cdef Py_ssize_t i, j, c, k, count, run
    cdef double d
    cdef bint ok
    if channels != colour.shape[0]:
        raise ValueError(f"{channels} channels but a colour of {colour.shape[0]}")
    if n == 0:
        return 0
    shares_array = np.empty(n, np.float64)
    band_array = np.empty(n, np.uint8)
    cdef double[::1] shares = shares_array
    cdef unsigned char[::1] band = band_array
    with nogil:
        for i in range(n):
            count = 0
            for j in range(length):
                ok = True
                for c in range(channels):
                    d = lines[i, j, c] - colour[c]
                    if d > tolerance or -d > tolerance:
                        ok = False
                        break
                count += ok
            shares[i] = count / <double> length
            band[i] = shares[i] >= share_needed
        run = n
        for i in range(n):
            ok = band[i]
            if loose and not ok:
                for k in range(i + 1, min(n, i + reach + 1)):
                    if band[k]:
                        ok = True
                        break
            if not ok:
                run = i
                break
    if not loose:
        return run
    for i in range(run - 1, -1, -1):
        if shares[i] >= clean_share:
            return i + 1
    return 0
