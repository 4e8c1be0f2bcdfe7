/*
 * aiserve CPU element-wise kernels.  Written as plain loops the compiler
 * vectorises; on x86-64 with GCC each hot kernel is also built for
 * x86-64-v3 (AVX2+FMA) and x86-64-v4 (AVX-512) and picked at load time
 * (target_clones), so the library still runs on any x86-64.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "aiserve_ops.h"

/* Reductions are accumulated in this many independent lanes so that the
 * compiler can vectorise them without reassociating a serial sum. */
#define AISERVE_LANES  16


int
aiserve_act_parse(const char *hidden_act, aiserve_act_e *act)
{
    if (strcmp(hidden_act, "gelu") == 0
        || strcmp(hidden_act, "gelu_python") == 0)
    {
        *act = AISERVE_ACT_GELU_ERF;
    } else if (strcmp(hidden_act, "gelu_new") == 0
               || strcmp(hidden_act, "gelu_pytorch_tanh") == 0)
    {
        *act = AISERVE_ACT_GELU_TANH;
    } else if (strcmp(hidden_act, "relu") == 0) {
        *act = AISERVE_ACT_RELU;
    } else if (strcmp(hidden_act, "silu") == 0
               || strcmp(hidden_act, "swish") == 0)
    {
        *act = AISERVE_ACT_SILU;
    } else {
        return -1;
    }
    return 0;
}


/*
 * Rational approximation of erf on [-4, 4] (outside it erf is +-1 in
 * float), the minimax form used by Eigen's generic_fast_erf_float and
 * XLA: x P(x^2) / Q(x^2).
 */
static inline float
aiserve_erf_inline(float a)
{
    float  x, x2, p, q;

    x = a > 4.f ? 4.f : (a < -4.f ? -4.f : a);
    x2 = x * x;

    p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
    p = x2 * p + -2.10102402082508e-06f;
    p = x2 * p + -5.69250639462346e-05f;
    p = x2 * p + -7.34990630326855e-04f;
    p = x2 * p + -2.95459980854025e-03f;
    p = x2 * p + -1.60960333262415e-02f;
    p = x * p;

    q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
    q = x2 * q + -1.68282697438203e-03f;
    q = x2 * q + -7.37332916720468e-03f;
    q = x2 * q + -1.42647390514189e-02f;

    return p / q;
}


/* exp by range reduction x = n ln2 + r, |r| <= ln2 / 2 (about), a
 * degree-7 polynomial for e^r and 2^n assembled in the exponent bits. */
static inline float
aiserve_exp_inline(float x)
{
    float     y, n, r, p, s;
    uint32_t  bits;

    x = x > 88.3f ? 88.3f : x;
    x = x < -87.3f ? -87.3f : x;
    /* round to nearest by adding and removing 1.5 * 2^23 (no libm call,
     * so the loop around this vectorises); y's low mantissa bits then hold
     * n + 2^22, read as an integer: no float to int conversion, which
     * would be undefined for a NaN x (NaN weights: the result is NaN) */
    y = x * 1.44269504088896341f + 12582912.f;
    n = y - 12582912.f;
    r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;

    p = 1.f / 5040.f;
    p = p * r + 1.f / 720.f;
    p = p * r + 1.f / 120.f;
    p = p * r + 1.f / 24.f;
    p = p * r + 1.f / 6.f;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;

    /* 0x4b400000: the bits of 1.5 * 2^23; 127: the exponent bias */
    memcpy(&bits, &y, 4);
    bits = (bits - 0x4b400000u + 127u) << 23;
    memcpy(&s, &bits, 4);
    return p * s;
}


/*
 * erf(x) to within 1.3 ulp in fp32 (tools/gen-erf-coefs.py simulates
 * the evaluation on 400001 points either side of 1; test_kernels holds
 * GELU built on it to libm's accuracy), and
 * E = exp(-x^2), which GELU's derivative needs too.  Two forms, both
 * computed and one chosen, so that a loop of them vectorises:
 *   |x| < 1:  erf(x) = x + x P(x^2), P of degree 6
 *   |x| >= 1: erf(x) = sign(x) (1 - E R(|x| - 2.5)), R of degree 11
 *             approximating erfc(x) e^(x^2) on [1, 4] (|x| clamped to 4
 *             there, where erf is 1 in fp32; E is of x itself)
 * The coefficients are weighted least-squares fits made by the script
 * named above (Lawson's iteration towards minimax relative error).
 */
static inline float
aiserve_erf_exp_inline(float x, float *e)
{
    float  a, s, p, r, t, big;

    a = fabsf(x);
    *e = aiserve_exp_inline(-(a * a));
    a = a > 4.f ? 4.f : a;
    s = a * a;

    p = 7.854218588e-05f;
    p = p * s + -8.010310464e-04f;
    p = p * s + 5.188342397e-03f;
    p = p * s + -2.685382084e-02f;
    p = p * s + 1.128358541e-01f;
    p = p * s + -3.761262586e-01f;
    p = p * s + 1.283791657e-01f;
    p = x + x * p;

    t = a - 2.5f;
    r = -3.971846055e-07f;
    r = r * t + 1.664505510e-06f;
    r = r * t + -3.926866056e-06f;
    r = r * t + 1.439435889e-05f;
    r = r * t + -5.912359652e-05f;
    r = r * t + 2.128928200e-04f;
    r = r * t + -7.335406721e-04f;
    r = r * t + 2.466045146e-03f;
    r = r * t + -8.001541035e-03f;
    r = r * t + 2.493818642e-02f;
    r = r * t + -7.434735350e-02f;
    r = r * t + 2.108063583e-01f;
    big = 1.f - *e * r;
    big = x < 0.f ? -big : big;

    return a < 1.f ? p : big;
}


AISERVE_CLONES
void
aiserve_gelu_fwd(const float *x, float *y, size_t n)
{
    size_t  i;
    float   e;

    for (i = 0; i < n; i++) {
        y[i] = 0.5f * x[i]
               * (1.f + aiserve_erf_exp_inline(x[i] * 0.70710678118654752f,
                                               &e));
    }
}


AISERVE_CLONES
void
aiserve_gelu_bwd(const float *x, float *dy, size_t n)
{
    size_t  i;
    float   e, cdf;

    for (i = 0; i < n; i++) {
        cdf = 0.5f * (1.f + aiserve_erf_exp_inline(x[i]
                                                   * 0.70710678118654752f,
                                                   &e));
        /* e = exp(-x^2 / 2): x phi(x) = x e / sqrt(2 pi) */
        dy[i] *= cdf + x[i] * 0.39894228040143268f * e;
    }
}


AISERVE_CLONES
void
aiserve_dropout_mask(float *x, size_t n, uint64_t key, uint64_t base,
    uint32_t threshold, float scale)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        x[i] = (uint32_t) (aiserve_mix64(key ^ (base + i)) >> 40) >= threshold
               ? x[i] * scale : 0.f;
    }
}


float
aiserve_erf(float x)
{
    return aiserve_erf_inline(x);
}


float
aiserve_exp(float x)
{
    return x < -87.3f ? 0.f : aiserve_exp_inline(x);
}


AISERVE_CLONES
void
aiserve_bias_act(float *x, const float *bias, size_t rows, size_t cols,
    aiserve_act_e act)
{
    size_t  r, c;
    float  *row, v, u;

    for (r = 0; r < rows; r++) {
        row = x + r * cols;
        switch (act) {
        case AISERVE_ACT_GELU_ERF:
            for (c = 0; c < cols; c++) {
                v = row[c] + bias[c];
                row[c] = 0.5f * v
                         * (1.f + aiserve_erf_inline(v * 0.70710678118654752f));
            }
            break;
        case AISERVE_ACT_GELU_TANH:
            for (c = 0; c < cols; c++) {
                v = row[c] + bias[c];
                u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
                /* tanh(u) = 1 - 2 / (e^(2u) + 1) */
                u = 1.f - 2.f / (aiserve_exp_inline(2.f * u) + 1.f);
                row[c] = 0.5f * v * (1.f + u);
            }
            break;
        case AISERVE_ACT_RELU:
            for (c = 0; c < cols; c++) {
                v = row[c] + bias[c];
                row[c] = v > 0.f ? v : 0.f;
            }
            break;
        case AISERVE_ACT_SILU:
            for (c = 0; c < cols; c++) {
                v = row[c] + bias[c];
                row[c] = v / (1.f + aiserve_exp_inline(-v));
            }
            break;
        }
    }
}


AISERVE_CLONES
void
aiserve_bias_add(float *x, const float *bias, size_t rows, size_t cols)
{
    size_t  r, c;
    float  *row;

    for (r = 0; r < rows; r++) {
        row = x + r * cols;
        for (c = 0; c < cols; c++) {
            row[c] += bias[c];
        }
    }
}


/* Sum of a row, in AISERVE_LANES partial sums. */
static inline float
aiserve_row_sum(const float *row, size_t cols)
{
    float   acc[AISERVE_LANES], s = 0.f;
    size_t  c, j, full = cols - cols % AISERVE_LANES;

    memset(acc, 0, sizeof(acc));
    for (c = 0; c < full; c += AISERVE_LANES) {
        for (j = 0; j < AISERVE_LANES; j++) {
            acc[j] += row[c + j];
        }
    }
    for (c = full; c < cols; c++) {
        acc[c - full] += row[c];
    }
    for (j = 0; j < AISERVE_LANES; j++) {
        s += acc[j];
    }
    return s;
}


static inline void
aiserve_layernorm_row(float *row, const float *gamma, const float *beta,
    size_t cols, float eps)
{
    float   acc[AISERVE_LANES], mean, var, inv, d;
    size_t  c, j, full;

    full = cols - cols % AISERVE_LANES;
    mean = aiserve_row_sum(row, cols) / (float) cols;

    memset(acc, 0, sizeof(acc));
    for (c = 0; c < full; c += AISERVE_LANES) {
        for (j = 0; j < AISERVE_LANES; j++) {
            d = row[c + j] - mean;
            acc[j] += d * d;
        }
    }
    for (c = full; c < cols; c++) {
        d = row[c] - mean;
        acc[c - full] += d * d;
    }
    var = 0.f;
    for (j = 0; j < AISERVE_LANES; j++) {
        var += acc[j];
    }
    var /= (float) cols;
    inv = 1.f / sqrtf(var + eps);

    for (c = 0; c < cols; c++) {
        row[c] = (row[c] - mean) * inv * gamma[c] + beta[c];
    }
}


AISERVE_CLONES
void
aiserve_residual_layernorm(float *x, const float *y, const float *bias,
    const float *gamma, const float *beta, size_t rows, size_t cols,
    float eps)
{
    size_t        r, c;
    float        *row;
    const float  *yr;

    for (r = 0; r < rows; r++) {
        row = x + r * cols;
        yr = y + r * cols;
        if (bias != NULL) {
            for (c = 0; c < cols; c++) {
                row[c] = (yr[c] + bias[c]) + row[c];
            }
        } else {
            for (c = 0; c < cols; c++) {
                row[c] = yr[c] + row[c];
            }
        }
        aiserve_layernorm_row(row, gamma, beta, cols, eps);
    }
}


AISERVE_CLONES
void
aiserve_layernorm(float *x, const float *gamma, const float *beta,
    size_t rows, size_t cols, float eps)
{
    size_t  r;

    for (r = 0; r < rows; r++) {
        aiserve_layernorm_row(x + r * cols, gamma, beta, cols, eps);
    }
}


AISERVE_CLONES
void
aiserve_softmax(float *x, size_t rows, size_t cols)
{
    float   acc[AISERVE_LANES], *row, m, s, inv;
    size_t  r, c, j, full;

    full = cols - cols % AISERVE_LANES;

    for (r = 0; r < rows; r++) {
        row = x + r * cols;

        for (j = 0; j < AISERVE_LANES; j++) {
            acc[j] = -INFINITY;
        }
        for (c = 0; c < full; c += AISERVE_LANES) {
            for (j = 0; j < AISERVE_LANES; j++) {
                acc[j] = row[c + j] > acc[j] ? row[c + j] : acc[j];
            }
        }
        for (c = full; c < cols; c++) {
            acc[c - full] = row[c] > acc[c - full] ? row[c] : acc[c - full];
        }
        m = acc[0];
        for (j = 1; j < AISERVE_LANES; j++) {
            m = acc[j] > m ? acc[j] : m;
        }

        for (c = 0; c < cols; c++) {
            row[c] = aiserve_exp_inline(row[c] - m);
        }
        s = aiserve_row_sum(row, cols);
        inv = 1.f / s;
        for (c = 0; c < cols; c++) {
            row[c] *= inv;
        }
    }
}


typedef float aiserve_v16 __attribute__((vector_size(64), aligned(4)));


typedef int32_t aiserve_v16i __attribute__((vector_size(64)));

/* The lane orders of the halving reductions below: lane j takes lane
 * j + n (mod 2n) of the same vector, for n = 8, 4, 2, 1.  The shuffles are
 * __builtin_shufflevector with constant lane numbers, which GCC (12 on)
 * and clang both compile to the same permutes. */
#define AISERVE_V16_HALF8                                                    \
    8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7
#define AISERVE_V16_HALF4                                                    \
    4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3
#define AISERVE_V16_HALF2                                                    \
    2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1
#define AISERVE_V16_HALF1                                                    \
    1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0

/* Sum of the 16 lanes by halving: 4 shuffles and 4 adds. */
#define AISERVE_V16_SUM(v, out)                                              \
    do {                                                                     \
        aiserve_v16  s_ = (v);                                               \
        s_ += __builtin_shufflevector(s_, s_, AISERVE_V16_HALF8);           \
        s_ += __builtin_shufflevector(s_, s_, AISERVE_V16_HALF4);           \
        s_ += __builtin_shufflevector(s_, s_, AISERVE_V16_HALF2);           \
        s_ += __builtin_shufflevector(s_, s_, AISERVE_V16_HALF1);           \
        (out) = s_[0];                                                       \
    } while (0)


/* Lane-wise maximum of two vectors of finite values (no libm call). */
#define AISERVE_V16_MAX(a, b)                                                \
    ((aiserve_v16) (((aiserve_v16i) (a) & (aiserve_v16i) ((a) > (b)))       \
                    | ((aiserve_v16i) (b) & ~(aiserve_v16i) ((a) > (b)))))


/* Lane-wise select: A where MASK is set (all ones), B elsewhere. */
#define AISERVE_V16_SELECT(mask, a, b)                                       \
    ((aiserve_v16) (((aiserve_v16i) (a) & (mask))                            \
                    | ((aiserve_v16i) (b) & ~(mask))))


/* OUT = the largest of the 16 lanes of V, by halving (4 shuffles and 4
 * maxima).  Macros rather than functions: a function taking or returning
 * a 64-byte vector has an ABI that depends on the target (-Wpsabi). */
#define AISERVE_V16_HMAX(v, out)                                             \
    do {                                                                     \
        aiserve_v16  h_ = (v);                                               \
                                                                             \
        h_ = AISERVE_V16_MAX(h_,                                             \
                 __builtin_shufflevector(h_, h_, AISERVE_V16_HALF8));       \
        h_ = AISERVE_V16_MAX(h_,                                             \
                 __builtin_shufflevector(h_, h_, AISERVE_V16_HALF4));       \
        h_ = AISERVE_V16_MAX(h_,                                             \
                 __builtin_shufflevector(h_, h_, AISERVE_V16_HALF2));       \
        h_ = AISERVE_V16_MAX(h_,                                             \
                 __builtin_shufflevector(h_, h_, AISERVE_V16_HALF1));       \
        (out) = h_[0];                                                       \
    } while (0)


/* OUT = aiserve_exp_inline() on the 16 lanes of X, the same arithmetic. */
#define AISERVE_EXP_V16(x, out)                                              \
    do {                                                                     \
        aiserve_v16   x_ = (x), n_, r_, p_;                                  \
        aiserve_v16   hi_ = (aiserve_v16) { 0 } + 88.3f;                     \
        aiserve_v16   lo_ = (aiserve_v16) { 0 } - 87.3f;                     \
        aiserve_v16i  e_;                                                    \
                                                                             \
        x_ = AISERVE_V16_SELECT(x_ > hi_, hi_, x_);                          \
        x_ = AISERVE_V16_SELECT(x_ < lo_, lo_, x_);                          \
        n_ = (x_ * 1.44269504088896341f + 12582912.f) - 12582912.f;          \
        r_ = x_ - n_ * 0.693145751953125f;                                   \
        r_ = r_ - n_ * 1.428606765330187e-06f;                               \
        p_ = (aiserve_v16) { 0 } + 1.f / 5040.f;                             \
        p_ = p_ * r_ + 1.f / 720.f;                                          \
        p_ = p_ * r_ + 1.f / 120.f;                                          \
        p_ = p_ * r_ + 1.f / 24.f;                                           \
        p_ = p_ * r_ + 1.f / 6.f;                                            \
        p_ = p_ * r_ + 0.5f;                                                 \
        p_ = p_ * r_ + 1.f;                                                  \
        p_ = p_ * r_ + 1.f;                                                  \
        e_ = (__builtin_convertvector(n_, aiserve_v16i) + 127) << 23;        \
        (out) = p_ * (aiserve_v16) e_;                                       \
    } while (0)


/* The lane numbers 0..15: (aiserve_v16_lane < n) sets lanes [0, n). */
static const aiserve_v16i  aiserve_v16_lane = { 0, 1, 2, 3, 4, 5, 6, 7, 8,
                                                9, 10, 11, 12, 13, 14, 15 };


#define AISERVE_ATT_ROWS  8

/* The two-source shuffles of a 16 x 16 transpose: stage b exchanges, for
 * rows i and i + s (s = 8 >> b), the blocks that swap bit s of the row
 * index with bit s of the column index; LO gives row i, HI row i + s
 * (lanes 16..31 are those of row i + s). */
#define AISERVE_T16_LO0                                                      \
    0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define AISERVE_T16_HI0                                                      \
    8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define AISERVE_T16_LO1                                                      \
    0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define AISERVE_T16_HI1                                                      \
    4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define AISERVE_T16_LO2                                                      \
    0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define AISERVE_T16_HI2                                                      \
    2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define AISERVE_T16_LO3                                                      \
    0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define AISERVE_T16_HI3                                                      \
    1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31

/* One stage of the transpose on the rows R[16]: the pairs (i, i + SH)
 * with bit SH of i clear, shuffled by the lane orders LO and HI. */
#define AISERVE_T16_STAGE(r, sh, lo, hi)                                     \
    do {                                                                     \
        aiserve_v16  a_, b_;                                                 \
        size_t       i_;                                                     \
                                                                             \
        _Pragma("GCC unroll 16")                                             \
        for (i_ = 0; i_ < 16; i_++) {                                        \
            if ((i_ & (sh)) == 0) {                                          \
                a_ = (r)[i_];                                                \
                b_ = (r)[i_ + (sh)];                                         \
                (r)[i_] = __builtin_shufflevector(a_, b_, lo);               \
                (r)[i_ + (sh)] = __builtin_shufflevector(a_, b_, hi);        \
            }                                                                \
        }                                                                    \
    } while (0)


/* DST[c * ldd + j] = SRC[j * lds + c] for a 16 x 16 block, the rows of
 * SRC from N_ROWS on read as zeros: 64 two-source shuffles in registers
 * (vpermt2ps on AVX-512) in place of 256 scalar moves to strided
 * addresses. */
static inline void
aiserve_transpose16(const float *src, size_t lds, size_t n_rows, float *dst,
    size_t ldd)
{
    aiserve_v16  r[16];
    size_t       i;

#pragma GCC unroll 16
    for (i = 0; i < 16; i++) {
        r[i] = i < n_rows ? *(const aiserve_v16 *) (src + i * lds)
                          : (aiserve_v16) { 0 };
    }
    /* unrolled in full, so that r[] lives in registers */
    AISERVE_T16_STAGE(r, 8, AISERVE_T16_LO0, AISERVE_T16_HI0);
    AISERVE_T16_STAGE(r, 4, AISERVE_T16_LO1, AISERVE_T16_HI1);
    AISERVE_T16_STAGE(r, 2, AISERVE_T16_LO2, AISERVE_T16_HI2);
    AISERVE_T16_STAGE(r, 1, AISERVE_T16_LO3, AISERVE_T16_HI3);
#pragma GCC unroll 16
    for (i = 0; i < 16; i++) {
        *(aiserve_v16 *) (dst + i * ldd) = r[i];
    }
}


/*
 * softmax(scale Q K^T) V for one sequence and head (see aiserve_ops.h):
 * K transposed once by 16 x 16 blocks, then blocks of 8 query rows, each
 * computing its scores 32 keys at a time, its softmax and its part of
 * P V, 32 output columns at a time, while the 8 rows of P are in L1.
 * The sums run over the head dimension (scores) and over the keys (P V)
 * in order, for every row alike.
 */
AISERVE_CLONES
void
aiserve_attention_head(size_t L, size_t d, const float *q, const float *k,
    const float *v, size_t ld, float scale, float *work, float *out,
    size_t ldo)
{
    size_t        Lp = (L + 15) / 16 * 16, i, j, c, r, nr, ldq;
    float        *kt = work, *p = kt + d * Lp, *qb = p + AISERVE_ATT_ROWS * Lp;
    const float  *qr;
    aiserve_v16   acc[AISERVE_ATT_ROWS][2], mx[AISERVE_ATT_ROWS], v0, v1;
    aiserve_v16i  m0, m1;
    float         x, inv[AISERVE_ATT_ROWS];
    int           w;

    /* K^T, [d, Lp], zero-padded: score rows become broadcast FMAs */
    for (j = 0; j < Lp; j += 16) {
        for (c = 0; c < d; c += 16) {
            aiserve_transpose16(k + j * ld + c, ld, L - j, kt + c * Lp + j,
                                Lp);
        }
    }

    /* blocks of AISERVE_ATT_ROWS query rows (the last one zero-filled),
     * two vectors of accumulators a row: the compiler keeps all 16 in
     * registers */
    for (i = 0; i < L; i += AISERVE_ATT_ROWS) {
        nr = L - i < AISERVE_ATT_ROWS ? L - i : AISERVE_ATT_ROWS;
        if (nr == AISERVE_ATT_ROWS) {
            qr = q + i * ld;
            ldq = ld;
        } else {
            /* the last, short block: rows past L read as zeros */
            for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                for (c = 0; c < d; c++) {
                    qb[r * d + c] = r < nr ? q[(i + r) * ld + c] : 0.f;
                }
            }
            qr = qb;
            ldq = d;
        }

        /* scores: scale (Q K^T), 32 keys at a time, then 16; each row's
         * maximum over its L real keys kept on the way */
        for (r = 0; r < AISERVE_ATT_ROWS; r++) {
            mx[r] = (aiserve_v16) { 0 } - INFINITY;
        }
        for (j = 0; j < Lp; j += 32) {
            w = Lp - j < 32 ? 1 : 2;
            for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                acc[r][0] = acc[r][1] = (aiserve_v16) { 0 };
            }
            if (w == 2) {
                for (c = 0; c < d; c++) {
                    v0 = *(const aiserve_v16 *) (kt + c * Lp + j);
                    v1 = *(const aiserve_v16 *) (kt + c * Lp + j + 16);
                    for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                        x = qr[r * ldq + c];
                        acc[r][0] += x * v0;
                        acc[r][1] += x * v1;
                    }
                }
            } else {
                for (c = 0; c < d; c++) {
                    v0 = *(const aiserve_v16 *) (kt + c * Lp + j);
                    for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                        acc[r][0] += qr[r * ldq + c] * v0;
                    }
                }
            }
            m0 = aiserve_v16_lane < (int32_t) L - (int32_t) j;
            m1 = aiserve_v16_lane < (int32_t) L - (int32_t) j - 16;
            for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                v0 = acc[r][0] * scale;
                *(aiserve_v16 *) (p + r * Lp + j) = v0;
                mx[r] = AISERVE_V16_MAX(mx[r], AISERVE_V16_SELECT(m0, v0,
                                                                  mx[r]));
                if (w == 2) {
                    v1 = acc[r][1] * scale;
                    *(aiserve_v16 *) (p + r * Lp + j + 16) = v1;
                    mx[r] = AISERVE_V16_MAX(mx[r],
                                            AISERVE_V16_SELECT(m1, v1, mx[r]));
                }
            }
        }

        /* softmax numerators e^(s - max) in place, one pass a row; the
         * division by their sum is applied to the row's P V below */
        for (r = 0; r < nr; r++) {
            float  *row = p + r * Lp, m;

            AISERVE_V16_HMAX(mx[r], m);
            v1 = (aiserve_v16) { 0 };
            for (j = 0; j < Lp; j += 16) {
                AISERVE_EXP_V16(*(aiserve_v16 *) (row + j) - m, v0);
                m0 = aiserve_v16_lane < (int32_t) L - (int32_t) j;
                v0 = AISERVE_V16_SELECT(m0, v0, (aiserve_v16) { 0 });
                *(aiserve_v16 *) (row + j) = v0;
                v1 += v0;
            }
            AISERVE_V16_SUM(v1, x);
            inv[r] = 1.f / x;
        }

        /* context: P V, 32 columns at a time, then 16 */
        for (c = 0; c + 32 <= d; c += 32) {
            for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                acc[r][0] = acc[r][1] = (aiserve_v16) { 0 };
            }
            for (j = 0; j < L; j++) {
                v0 = *(const aiserve_v16 *) (v + j * ld + c);
                v1 = *(const aiserve_v16 *) (v + j * ld + c + 16);
                for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                    x = p[r * Lp + j];
                    acc[r][0] += x * v0;
                    acc[r][1] += x * v1;
                }
            }
            for (r = 0; r < nr; r++) {
                *(aiserve_v16 *) (out + (i + r) * ldo + c) = acc[r][0]
                                                             * inv[r];
                *(aiserve_v16 *) (out + (i + r) * ldo + c + 16) = acc[r][1]
                                                                  * inv[r];
            }
        }
        if (c < d) {
            for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                acc[r][0] = (aiserve_v16) { 0 };
            }
            for (j = 0; j < L; j++) {
                v0 = *(const aiserve_v16 *) (v + j * ld + c);
                for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                    acc[r][0] += p[r * Lp + j] * v0;
                }
            }
            for (r = 0; r < nr; r++) {
                *(aiserve_v16 *) (out + (i + r) * ldo + c) = acc[r][0]
                                                             * inv[r];
            }
        }
    }
}


#if defined(__x86_64__) && defined(__GNUC__)

/* The 16 floats at X as 16 bf16 (round to nearest even) in the low halves
 * of 16 32-bit lanes. */
#define AISERVE_BF16_LO16(x)                                                 \
    _mm512_cvtepu16_epi32((__m256i) _mm512_cvtneps_pbh(x))

/*
 * aiserve_attention_head() with both products on AVX512-BF16's vdpbf16ps:
 * Q, K, V and the softmax numerators rounded to bf16, every product
 * summed in fp32 (as torch.autocast's bf16 matmul), the scale, the
 * maximum, the exponentials and their sum in fp32.  The operands are
 * kept as bf16 pairs in 32-bit lanes, the pair running over the summed
 * index: K as [d / 2][Lp] pairs of head columns, V as [Lp / 2][d] pairs
 * of keys, so that each vdpbf16ps is 16 lanes x 2 products, the same
 * broadcast-and-accumulate order as the fp32 kernel.
 */
__attribute__((target("avx512f,avx512bw,avx512bf16")))
void
aiserve_attention_head_bf16(size_t L, size_t d, const float *q,
    const float *k, const float *v, size_t ld, float scale, float *work,
    float *out, size_t ldo)
{
    size_t         Lp = (L + 15) / 16 * 16, Lh = (L + 1) / 2, dh = d / 2;
    size_t         i, j, c, r, nr;
    uint32_t      *kp = (uint32_t *) work, *vp = kp + dh * Lp;
    float         *p = (float *) (vp + dh * Lp);
    uint32_t      *qb = (uint32_t *) (p + AISERVE_ATT_ROWS * Lp), *pr;
    __m512         acc[AISERVE_ATT_ROWS][2], mx[AISERVE_ATT_ROWS], v0, v1;
    __m512i        a, b;
    __mmask16      m0, m1;
    float          x, inv[AISERVE_ATT_ROWS];
    int            w;

    /* K rounded to bf16 row by row into VP's room ([L, d] bf16, pairs of
     * columns in 32-bit lanes), then transposed by 16 x 16 blocks of
     * lanes into KP, keys past L zero */
    for (j = 0; j < L; j++) {
        for (c = 0; c < d; c += 32) {
            _mm512_storeu_si512(vp + j * dh + c / 2,
                (__m512i) _mm512_cvtne2ps_pbh(_mm512_loadu_ps(k + j * ld
                                                              + c + 16),
                                              _mm512_loadu_ps(k + j * ld
                                                              + c)));
        }
    }
    for (j = 0; j < Lp; j += 16) {
        for (c = 0; c < dh; c += 16) {
            aiserve_transpose16((const float *) vp + j * dh + c, dh, L - j,
                                (float *) kp + c * Lp + j, Lp);
        }
    }

    /* V as pairs of keys (j, j + 1) per column, the key past an odd L
     * zero */
    for (j = 0; j < Lh; j++) {
        for (c = 0; c < d; c += 16) {
            a = AISERVE_BF16_LO16(_mm512_loadu_ps(v + 2 * j * ld + c));
            b = 2 * j + 1 < L
                ? AISERVE_BF16_LO16(_mm512_loadu_ps(v + (2 * j + 1) * ld + c))
                : _mm512_setzero_si512();
            _mm512_storeu_si512(vp + j * d + c,
                                _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
        }
    }

    for (i = 0; i < L; i += AISERVE_ATT_ROWS) {
        nr = L - i < AISERVE_ATT_ROWS ? L - i : AISERVE_ATT_ROWS;

        /* the block's query rows in bf16, rows past L zero */
        for (r = 0; r < AISERVE_ATT_ROWS; r++) {
            for (c = 0; c < d; c += 32) {
                a = r < nr
                    ? (__m512i) _mm512_cvtne2ps_pbh(
                          _mm512_loadu_ps(q + (i + r) * ld + c + 16),
                          _mm512_loadu_ps(q + (i + r) * ld + c))
                    : _mm512_setzero_si512();
                _mm512_storeu_si512(qb + r * dh + c / 2, a);
            }
        }

        /* scores: scale (Q K^T), 32 keys at a time, then 16 */
        for (r = 0; r < AISERVE_ATT_ROWS; r++) {
            mx[r] = _mm512_set1_ps(-INFINITY);
        }
        for (j = 0; j < Lp; j += 32) {
            w = Lp - j < 32 ? 1 : 2;
            for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                acc[r][0] = acc[r][1] = _mm512_setzero_ps();
            }
            for (c = 0; c < dh; c++) {
                a = _mm512_loadu_si512(kp + c * Lp + j);
                b = w == 2 ? _mm512_loadu_si512(kp + c * Lp + j + 16)
                           : _mm512_setzero_si512();
                for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                    __m512bh  s = (__m512bh) _mm512_set1_epi32(qb[r * dh
                                                                  + c]);

                    acc[r][0] = _mm512_dpbf16_ps(acc[r][0], s, (__m512bh) a);
                    acc[r][1] = _mm512_dpbf16_ps(acc[r][1], s, (__m512bh) b);
                }
            }
            m0 = _cvtu32_mask16(L - j >= 16 ? 0xffffu
                                            : (1u << (L - j)) - 1);
            m1 = _cvtu32_mask16(L - j >= 32 ? 0xffffu
                                : L - j <= 16 ? 0
                                : (1u << (L - j - 16)) - 1);
            for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                v0 = _mm512_mul_ps(acc[r][0], _mm512_set1_ps(scale));
                _mm512_storeu_ps(p + r * Lp + j, v0);
                mx[r] = _mm512_mask_max_ps(mx[r], m0, mx[r], v0);
                if (w == 2) {
                    v1 = _mm512_mul_ps(acc[r][1], _mm512_set1_ps(scale));
                    _mm512_storeu_ps(p + r * Lp + j + 16, v1);
                    mx[r] = _mm512_mask_max_ps(mx[r], m1, mx[r], v1);
                }
            }
        }

        /* softmax numerators e^(s - max) in fp32, their sum kept, then
         * the row rounded to bf16 in place (keys in order, so pairs of
         * keys share a 32-bit lane) */
        for (r = 0; r < nr; r++) {
            float        *row = p + r * Lp, m;
            aiserve_v16   e, s = (aiserve_v16) { 0 };
            aiserve_v16i  keep;

            m = _mm512_reduce_max_ps(mx[r]);
            for (j = 0; j < Lp; j += 16) {
                AISERVE_EXP_V16(*(aiserve_v16 *) (row + j) - m, e);
                keep = aiserve_v16_lane < (int32_t) L - (int32_t) j;
                e = AISERVE_V16_SELECT(keep, e, (aiserve_v16) { 0 });
                *(aiserve_v16 *) (row + j) = e;
                s += e;
            }
            AISERVE_V16_SUM(s, x);
            inv[r] = 1.f / x;
            pr = (uint32_t *) row;
            for (j = 0; j < Lp; j += 16) {
                _mm256_storeu_si256((__m256i *) (pr + j / 2),
                    (__m256i) _mm512_cvtneps_pbh(_mm512_loadu_ps(row + j)));
            }
        }

        /* context: P V, 32 columns at a time (d is a multiple of 32); the
         * rows past L are the zeros of their zero queries' scores */
        for (c = 0; c < d; c += 32) {
            for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                acc[r][0] = acc[r][1] = _mm512_setzero_ps();
            }
            for (j = 0; j < Lh; j++) {
                a = _mm512_loadu_si512(vp + j * d + c);
                b = _mm512_loadu_si512(vp + j * d + c + 16);
                for (r = 0; r < AISERVE_ATT_ROWS; r++) {
                    __m512bh  s = (__m512bh) _mm512_set1_epi32(
                                      ((const uint32_t *) (p + r * Lp))[j]);

                    acc[r][0] = _mm512_dpbf16_ps(acc[r][0], s, (__m512bh) a);
                    acc[r][1] = _mm512_dpbf16_ps(acc[r][1], s, (__m512bh) b);
                }
            }
            for (r = 0; r < nr; r++) {
                _mm512_storeu_ps(out + (i + r) * ldo + c,
                    _mm512_mul_ps(acc[r][0], _mm512_set1_ps(inv[r])));
                _mm512_storeu_ps(out + (i + r) * ldo + c + 16,
                    _mm512_mul_ps(acc[r][1], _mm512_set1_ps(inv[r])));
            }
        }
    }
}

#endif
