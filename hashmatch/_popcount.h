/* Hamming-distance row kernels with run-time popcount dispatch.
 *
 * The extension is compiled portably (no -march=native, wheels must run anywhere), so each
 * kernel is compiled several times with GCC `target` attributes and the best variant the CPU
 * supports is chosen once at import (hm_select_best). A variant works on one *block* of rows
 * per call, never on one pair, so the indirect call is amortised over hundreds of rows.
 *
 * Codes are arrays of uint64 words, `nwords` words per row, rows contiguous.
 * Variants: "portable" (plain C, no popcnt instruction), "popcnt" (scalar POPCNT),
 * "avx512" (AVX-512 VPOPCNTDQ: 8 words per instruction).
 */
#ifndef HASHMATCH_POPCOUNT_H
#define HASHMATCH_POPCOUNT_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HM_X86 1
#include <immintrin.h>
#else
#define HM_X86 0
#endif

/* out[i] = popcount(q ^ db[i]) for i < n */
typedef void (*hm_rowdist_fn)(const uint64_t *q, const uint64_t *db, int64_t n, int nwords,
                              int32_t *out);
/* out_min[i] = min_j popcount(needles[j] ^ db[i]); out_arg[i] = lowest j reaching it */
typedef void (*hm_rowmin_fn)(const uint64_t *needles, int m, const uint64_t *db, int64_t n,
                             int nwords, int32_t *out_min, int8_t *out_arg);
/* Candidate verification, each row once against every needle of its own set:
 * out_min[i] = min over needles j in masks[i] (bit j; never 0) of
 * popcount(needles[j] ^ db[rows[i]]), out_arg[i] = lowest such j reaching it.
 * Prefetches db[rows[i + ahead]] (rows[] must be readable up to n_readable). */
typedef void (*hm_gathermin_fn)(const uint64_t *needles, const uint64_t *db, const int64_t *rows,
                                const uint8_t *masks, int64_t n, int64_t n_readable,
                                int ahead, int nwords, int32_t *out_min, int8_t *out_arg);

/* Any-needle test with a radius per needle, for scans with many needles (all of a query's
 * needles that may meet one stored role, in one pass): bit (i & 7) of out_bits[i >> 3] is set
 * iff popcount(needles[j] ^ db[i]) <= radii[j] for some j < m (a negative radius never
 * holds). Writes (n + 7) / 8 bytes. */
typedef void (*hm_rowany_fn)(const uint64_t *needles, int m, const int32_t *radii,
                             const uint64_t *db, int64_t n, int nwords, uint8_t *out_bits);

typedef struct {
    const char *name;
    hm_rowdist_fn rowdist;
    hm_rowmin_fn rowmin;
    hm_gathermin_fn gathermin;
    hm_rowany_fn rowany;
} hm_impl;

/* ------------------------------------------------------------------------------------- */
/* Generic bodies, instantiated once per target through this macro. POPC is the popcount  */
/* expression used for one 64-bit word.                                                   */
#define HM_DEFINE_SCALAR(SUFFIX, ATTR, POPC)                                                  \
    ATTR static inline int32_t hm_dist_##SUFFIX(const uint64_t *a, const uint64_t *b,        \
                                                int nwords) {                                 \
        int32_t d = 0;                                                                        \
        for (int w = 0; w < nwords; w++) d += (int32_t)POPC(a[w] ^ b[w]);                     \
        return d;                                                                             \
    }                                                                                         \
    ATTR static void hm_rowdist_##SUFFIX(const uint64_t *q, const uint64_t *db, int64_t n,   \
                                         int nwords, int32_t *out) {                          \
        if (nwords == 1) {                                                                    \
            const uint64_t q0 = q[0];                                                         \
            for (int64_t i = 0; i < n; i++) out[i] = (int32_t)POPC(db[i] ^ q0);               \
        } else if (nwords == 4) {                                                             \
            const uint64_t q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3];                        \
            for (int64_t i = 0; i < n; i++) {                                                 \
                const uint64_t *r = db + 4 * i;                                               \
                out[i] = (int32_t)(POPC(r[0] ^ q0) + POPC(r[1] ^ q1) + POPC(r[2] ^ q2) +      \
                                   POPC(r[3] ^ q3));                                          \
            }                                                                                 \
        } else {                                                                              \
            for (int64_t i = 0; i < n; i++)                                                   \
                out[i] = hm_dist_##SUFFIX(q, db + (int64_t)nwords * i, nwords);               \
        }                                                                                     \
    }                                                                                         \
    /* min over the needles in mask (bit j = needle j; never 0); *arg = lowest j reaching it */ \
    ATTR static inline int32_t hm_minover_##SUFFIX(const uint64_t *needles, unsigned mask,   \
                                                   const uint64_t *r, int nwords,             \
                                                   int8_t *arg) {                             \
        int j = __builtin_ctz(mask);                                                          \
        int32_t best = hm_dist_##SUFFIX(needles + (int64_t)nwords * j, r, nwords);            \
        *arg = (int8_t)j;                                                                     \
        for (mask &= mask - 1; mask; mask &= mask - 1) {                                      \
            j = __builtin_ctz(mask);                                                          \
            int32_t d = hm_dist_##SUFFIX(needles + (int64_t)nwords * j, r, nwords);           \
            if (d < best) { best = d; *arg = (int8_t)j; }                                     \
        }                                                                                     \
        return best;                                                                          \
    }                                                                                         \
    ATTR static void hm_rowmin_##SUFFIX(const uint64_t *needles, int m, const uint64_t *db,  \
                                        int64_t n, int nwords, int32_t *out_min,              \
                                        int8_t *out_arg) {                                    \
        for (int64_t i = 0; i < n; i++)                                                       \
            out_min[i] = hm_minover_##SUFFIX(needles, (1u << m) - 1,                          \
                                             db + (int64_t)nwords * i, nwords, out_arg + i);  \
    }                                                                                         \
    ATTR static void hm_gathermin_##SUFFIX(const uint64_t *needles, const uint64_t *db,      \
                                           const int64_t *rows, const uint8_t *masks,         \
                                           int64_t n, int64_t n_readable, int ahead,          \
                                           int nwords, int32_t *out_min, int8_t *out_arg) {   \
        for (int64_t i = 0; i < n; i++) {                                                     \
            if (i + ahead < n_readable)                                                       \
                __builtin_prefetch(db + (int64_t)nwords * rows[i + ahead]);                   \
            out_min[i] = hm_minover_##SUFFIX(needles, masks[i], db + (int64_t)nwords * rows[i], \
                                             nwords, out_arg + i);                            \
        }                                                                                     \
    }                                                                                         \
    ATTR static void hm_rowany_##SUFFIX(const uint64_t *needles, int m, const int32_t *radii, \
                                        const uint64_t *db, int64_t n, int nwords,            \
                                        uint8_t *out_bits) {                                  \
        memset(out_bits, 0, (size_t)((n + 7) >> 3));                                          \
        for (int64_t i = 0; i < n; i++) {                                                     \
            const uint64_t *r = db + (int64_t)nwords * i;                                     \
            for (int j = 0; j < m; j++) {                                                     \
                if (hm_dist_##SUFFIX(needles + (int64_t)nwords * j, r, nwords) <= radii[j]) { \
                    out_bits[i >> 3] |= (uint8_t)(1u << (i & 7));                             \
                    break;                                                                    \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }

/* Portable popcount: no POPCNT instruction assumed (SWAR bit counting). */
static inline uint64_t hm_popc_swar(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (x * 0x0101010101010101ULL) >> 56;
}

HM_DEFINE_SCALAR(portable, , hm_popc_swar)

#if HM_X86
#define HM_ATTR_POPCNT __attribute__((target("popcnt")))
HM_DEFINE_SCALAR(popcnt, HM_ATTR_POPCNT, __builtin_popcountll)

/* --- AVX-512 VPOPCNTDQ ---------------------------------------------------------------- */
#define HM_ATTR_AVX512 __attribute__((target("popcnt,avx512f,avx512vpopcntdq")))
HM_DEFINE_SCALAR(avx512s, HM_ATTR_AVX512, __builtin_popcountll)

/* Sum the 4 word counts of each 256-bit row in 4 registers of per-word counts
 * (p0 = rows 0,1; p1 = rows 2,3; p2 = rows 4,5; p3 = rows 6,7) -> 8 int32, rows in order. */
HM_ATTR_AVX512 static inline __m256i hm_sum4x8(__m512i p0, __m512i p1, __m512i p2,
                                               __m512i p3) {
    /* per 128-bit lane: [a.w0+a.w1 | b.w0+b.w1] for the two registers' rows */
    __m512i s01 = _mm512_add_epi64(_mm512_unpacklo_epi64(p0, p1), _mm512_unpackhi_epi64(p0, p1));
    __m512i s23 = _mm512_add_epi64(_mm512_unpacklo_epi64(p2, p3), _mm512_unpackhi_epi64(p2, p3));
    /* add the two 128-bit halves of each row: lanes come out as rows 0,2,1,3,4,6,5,7 */
    __m512i x = _mm512_shuffle_i64x2(s01, s23, _MM_SHUFFLE(2, 0, 2, 0));
    __m512i y = _mm512_shuffle_i64x2(s01, s23, _MM_SHUFFLE(3, 1, 3, 1));
    __m512i s = _mm512_add_epi64(x, y);
    s = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 1, 3, 4, 6, 5, 7), s);
    return _mm512_cvtepi64_epi32(s);
}

HM_ATTR_AVX512 static inline __m256i hm_dist8_w4(__m512i qq, const uint64_t *r) {
    __m512i p0 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(r), qq));
    __m512i p1 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(r + 8), qq));
    __m512i p2 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(r + 16), qq));
    __m512i p3 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(r + 24), qq));
    return hm_sum4x8(p0, p1, p2, p3);
}

HM_ATTR_AVX512 static inline __m256i hm_dist8_w1(__m512i qq, const uint64_t *r) {
    return _mm512_cvtepi64_epi32(_mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(r), qq)));
}

HM_ATTR_AVX512 static void hm_rowdist_avx512(const uint64_t *q, const uint64_t *db, int64_t n,
                                             int nwords, int32_t *out) {
    int64_t i = 0;
    if (nwords == 4) {
        const __m512i qq = _mm512_setr_epi64(q[0], q[1], q[2], q[3], q[0], q[1], q[2], q[3]);
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_si256((__m256i *)(out + i), hm_dist8_w4(qq, db + 4 * i));
    } else if (nwords == 1) {
        const __m512i qq = _mm512_set1_epi64((long long)q[0]);
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_si256((__m256i *)(out + i), hm_dist8_w1(qq, db + i));
    }
    /* tail rows (and other code lengths) */
    hm_rowdist_avx512s(q, db + (int64_t)nwords * i, n - i, nwords, out + i);
}

/* The multi-needle scan loads each block of 8 rows once and compares it with every needle
 * while it is in registers: the database memory is read once for up to 8 needles. */
HM_ATTR_AVX512 static void hm_rowmin_avx512(const uint64_t *needles, int m, const uint64_t *db,
                                            int64_t n, int nwords, int32_t *out_min,
                                            int8_t *out_arg) {
    int64_t i = 0;
    if ((nwords == 4 || nwords == 1) && m <= 8) {
        __m512i qq[8];
        for (int j = 0; j < m; j++) {
            const uint64_t *q = needles + (int64_t)nwords * j;
            qq[j] = nwords == 4
                        ? _mm512_setr_epi64(q[0], q[1], q[2], q[3], q[0], q[1], q[2], q[3])
                        : _mm512_set1_epi64((long long)q[0]);
        }
        for (; i + 8 <= n; i += 8) {
            const uint64_t *r = db + (int64_t)nwords * i;
            __m512i v[4];
            if (nwords == 4) {
                for (int k = 0; k < 4; k++) v[k] = _mm512_loadu_si512(r + 8 * k);
            } else {
                v[0] = _mm512_loadu_si512(r);
            }
            __m256i best = _mm256_set1_epi32(0x7fffffff), arg = _mm256_setzero_si256();
            for (int j = 0; j < m; j++) {
                __m256i d;
                if (nwords == 4) {
                    d = hm_sum4x8(_mm512_popcnt_epi64(_mm512_xor_si512(v[0], qq[j])),
                                  _mm512_popcnt_epi64(_mm512_xor_si512(v[1], qq[j])),
                                  _mm512_popcnt_epi64(_mm512_xor_si512(v[2], qq[j])),
                                  _mm512_popcnt_epi64(_mm512_xor_si512(v[3], qq[j])));
                } else {
                    d = _mm512_cvtepi64_epi32(_mm512_popcnt_epi64(_mm512_xor_si512(v[0], qq[j])));
                }
                /* strictly smaller only, so ties keep the lowest needle index */
                __m256i lt = _mm256_cmpgt_epi32(best, d);
                best = _mm256_blendv_epi8(best, d, lt);
                arg = _mm256_blendv_epi8(arg, _mm256_set1_epi32(j), lt);
            }
            _mm256_storeu_si256((__m256i *)(out_min + i), best);
            int32_t a32[8];
            _mm256_storeu_si256((__m256i *)a32, arg);
            for (int k = 0; k < 8; k++) out_arg[i + k] = (int8_t)a32[k];
        }
    }
    hm_rowmin_avx512s(needles, m, db + (int64_t)nwords * i, n - i, nwords, out_min + i,
                      out_arg + i);
}
/* The many-needle scan: each block of 8 rows is transposed once into 4 registers (word k of
 * the 8 rows), so that a needle costs 4 xor + 4 popcount + 3 adds + 1 compare per 8 rows, with
 * no horizontal sums; the needle's words are broadcast from memory (L1). 64-bit rows need no
 * transpose. */
HM_ATTR_AVX512 static void hm_rowany_avx512(const uint64_t *needles, int m, const int32_t *radii,
                                            const uint64_t *db, int64_t n, int nwords,
                                            uint8_t *out_bits) {
    int64_t i = 0;
    if (nwords == 4) {
        const __m512i lo = _mm512_setr_epi64(0, 4, 8, 12, 1, 5, 9, 13);
        const __m512i hi = _mm512_setr_epi64(2, 6, 10, 14, 3, 7, 11, 15);
        for (; i + 8 <= n; i += 8) {
            const uint64_t *r = db + 4 * i;
            /* v0 = rows 0,1; v1 = rows 2,3; ... ; t0 = word 0 then word 1 of rows 0-3 */
            __m512i v0 = _mm512_loadu_si512(r), v1 = _mm512_loadu_si512(r + 8);
            __m512i v2 = _mm512_loadu_si512(r + 16), v3 = _mm512_loadu_si512(r + 24);
            __m512i t0 = _mm512_permutex2var_epi64(v0, lo, v1);
            __m512i t1 = _mm512_permutex2var_epi64(v0, hi, v1);
            __m512i t2 = _mm512_permutex2var_epi64(v2, lo, v3);
            __m512i t3 = _mm512_permutex2var_epi64(v2, hi, v3);
            __m512i w0 = _mm512_shuffle_i64x2(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
            __m512i w1 = _mm512_shuffle_i64x2(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
            __m512i w2 = _mm512_shuffle_i64x2(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
            __m512i w3 = _mm512_shuffle_i64x2(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
            __mmask8 hit = 0;
            for (int j = 0; j < m; j++) {
                const uint64_t *q = needles + 4 * j;
                __m512i d01 = _mm512_add_epi64(
                    _mm512_popcnt_epi64(_mm512_xor_si512(w0, _mm512_set1_epi64((long long)q[0]))),
                    _mm512_popcnt_epi64(_mm512_xor_si512(w1, _mm512_set1_epi64((long long)q[1]))));
                __m512i d23 = _mm512_add_epi64(
                    _mm512_popcnt_epi64(_mm512_xor_si512(w2, _mm512_set1_epi64((long long)q[2]))),
                    _mm512_popcnt_epi64(_mm512_xor_si512(w3, _mm512_set1_epi64((long long)q[3]))));
                hit |= _mm512_cmple_epi64_mask(_mm512_add_epi64(d01, d23),
                                               _mm512_set1_epi64((long long)radii[j]));
            }
            out_bits[i >> 3] = (uint8_t)hit;
        }
    } else if (nwords == 1) {
        /* 64-bit codes (a prefilter's short codes): 8 rows per register as they lie, a
         * needle costs 1 xor + 1 popcount + 1 compare per 8 rows */
        for (; i + 8 <= n; i += 8) {
            const __m512i v = _mm512_loadu_si512(db + i);
            __mmask8 hit = 0;
            for (int j = 0; j < m; j++)
                hit |= _mm512_cmple_epi64_mask(
                    _mm512_popcnt_epi64(_mm512_xor_si512(v, _mm512_set1_epi64((long long)needles[j]))),
                    _mm512_set1_epi64((long long)radii[j]));
            out_bits[i >> 3] = (uint8_t)hit;
        }
    }
    /* tail rows (and other code lengths); i is a multiple of 8 here */
    if (i < n)
        hm_rowany_avx512s(needles, m, radii, db + (int64_t)nwords * i, n - i, nwords,
                          out_bits + (i >> 3));
}
#endif /* HM_X86 */

static const hm_impl hm_impl_portable = {"portable", hm_rowdist_portable, hm_rowmin_portable,
                                         hm_gathermin_portable, hm_rowany_portable};
#if HM_X86
static const hm_impl hm_impl_popcnt = {"popcnt", hm_rowdist_popcnt, hm_rowmin_popcnt,
                                       hm_gathermin_popcnt, hm_rowany_popcnt};
static const hm_impl hm_impl_avx512 = {"avx512_vpopcntdq", hm_rowdist_avx512,
                                       hm_rowmin_avx512, hm_gathermin_avx512s, hm_rowany_avx512};
#endif

/* Implementations this CPU can run, best first. Returns how many were written to `out`. */
static int hm_supported(const hm_impl **out) {
    int n = 0;
#if HM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq") &&
        __builtin_cpu_supports("popcnt"))
        out[n++] = &hm_impl_avx512;
    if (__builtin_cpu_supports("popcnt")) out[n++] = &hm_impl_popcnt;
#endif
    out[n++] = &hm_impl_portable;
    return n;
}

/* The implementation in use; switched only between calls (tests, benchmarks). */
static const hm_impl *hm_active = &hm_impl_portable;
static inline const hm_impl *hm_get_active(void) { return hm_active; }
static inline void hm_set_active(const hm_impl *impl) { hm_active = impl; }

#endif /* HASHMATCH_POPCOUNT_H */
