/*
 * aiserve prepacked matrix products (see aiserve_gemm.h).
 *
 * The microkernel keeps an 8 x 48 tile of C in 24 AVX-512 registers; for
 * each k it loads one packed row of 48 weights (three vectors) and
 * broadcasts A[i, k] of its 8 rows straight from A (no packing of A):
 * 24 fused multiply-adds for 11 loads.  Tiles run row block by row block
 * (AISERVE_GEMM_MC rows) and, inside a block, panel by panel, so that a
 * weight panel is read from L2 by every tile of the block and a block of
 * A stays in L2 while all panels pass over it.
 */
#include <stdint.h>
#include <string.h>

#include "aiserve_erf.h"
#include "aiserve_gemm.h"

#define NR  AISERVE_GEMM_NR
#define MR  AISERVE_GEMM_MR

/* Rows of A and C per block (a multiple of MR). */
#define AISERVE_GEMM_MC  64


size_t
aiserve_gemm_packed_size(size_t n, size_t k)
{
    return (n + NR - 1) / NR * NR * k;
}


void
aiserve_gemm_pack(const float *w, size_t n, size_t k, float *dst)
{
    size_t  p, kk, j, np = (n + NR - 1) / NR;
    float  *panel;

    for (p = 0; p < np; p++) {
        panel = dst + p * NR * k;
        for (kk = 0; kk < k; kk++) {
            for (j = 0; j < NR; j++) {
                panel[kk * NR + j] = p * NR + j < n ? w[(p * NR + j) * k + kk]
                                                    : 0.f;
            }
        }
    }
}


#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#define AISERVE_AVX512  __attribute__((target("avx512f")))


int
aiserve_gemm_packed_ok(void)
{
    return __builtin_cpu_supports("avx512f");
}


/* GELU, exact erf form (transformers' GELUActivation), on a vector:
 * the same arithmetic as aiserve_bias_act()'s AISERVE_ACT_GELU_ERF. */
static inline __attribute__((always_inline)) AISERVE_AVX512 __m512
aiserve_gelu_v(__m512 v)
{
    __m512  x, e;

    x = _mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f));
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-4.f)),
                      _mm512_set1_ps(4.f));
    AISERVE_ERF_CLAMPED(__m512, x, e);
    return 0.5f * v * (1.f + e);
}


/*
 * C[0..mr) x [0..48) (columns masked by m0, m1, m2) = A[0..mr) B, B one
 * packed panel of k rows of 48; + bias where BIAS is not NULL, then GELU
 * (erf) where GELU is 1.  MR is a constant at every call site
 * (aiserve_gemm_tile_n()), so the loops over rows unroll and the
 * accumulators stay in registers.
 */
static inline __attribute__((always_inline)) AISERVE_AVX512 void
aiserve_gemm_tile(const size_t mr, size_t k, const float *a, size_t lda,
    const float *b, float *c, size_t ldc, const float *bias, int gelu,
    __mmask16 m0, __mmask16 m1, __mmask16 m2)
{
    __m512        acc[MR][3], b0, b1, b2, x;
    const float  *ar[MR];
    size_t        r, kk;

#pragma GCC unroll 8
    for (r = 0; r < mr; r++) {
        ar[r] = a + r * lda;
        acc[r][0] = _mm512_setzero_ps();
        acc[r][1] = _mm512_setzero_ps();
        acc[r][2] = _mm512_setzero_ps();
    }
    for (kk = 0; kk < k; kk++) {
        b0 = _mm512_load_ps(b);
        b1 = _mm512_load_ps(b + 16);
        b2 = _mm512_load_ps(b + 32);
        b += NR;
#pragma GCC unroll 8
        for (r = 0; r < mr; r++) {
            x = _mm512_set1_ps(ar[r][kk]);
            acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(x, b2, acc[r][2]);
        }
    }
    if (bias != NULL) {
        b0 = _mm512_maskz_loadu_ps(m0, bias);
        b1 = _mm512_maskz_loadu_ps(m1, bias + 16);
        b2 = _mm512_maskz_loadu_ps(m2, bias + 32);
#pragma GCC unroll 8
        for (r = 0; r < mr; r++) {
            acc[r][0] = _mm512_add_ps(acc[r][0], b0);
            acc[r][1] = _mm512_add_ps(acc[r][1], b1);
            acc[r][2] = _mm512_add_ps(acc[r][2], b2);
            if (gelu) {
                acc[r][0] = aiserve_gelu_v(acc[r][0]);
                acc[r][1] = aiserve_gelu_v(acc[r][1]);
                acc[r][2] = aiserve_gelu_v(acc[r][2]);
            }
        }
    }
#pragma GCC unroll 8
    for (r = 0; r < mr; r++) {
        _mm512_mask_storeu_ps(c + r * ldc, m0, acc[r][0]);
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, acc[r][1]);
        _mm512_mask_storeu_ps(c + r * ldc + 32, m2, acc[r][2]);
    }
}


/* aiserve_gemm_tile() with mr as a constant. */
static AISERVE_AVX512 void
aiserve_gemm_tile_n(size_t mr, size_t k, const float *a, size_t lda,
    const float *b, float *c, size_t ldc, const float *bias, int gelu,
    __mmask16 m0, __mmask16 m1, __mmask16 m2)
{
    switch (mr) {
#define AISERVE_TILE_CASE(n)                                                \
    case n:                                                                 \
        aiserve_gemm_tile(n, k, a, lda, b, c, ldc, bias, gelu, m0, m1, m2); \
        break;
    AISERVE_TILE_CASE(8)
    AISERVE_TILE_CASE(7)
    AISERVE_TILE_CASE(6)
    AISERVE_TILE_CASE(5)
    AISERVE_TILE_CASE(4)
    AISERVE_TILE_CASE(3)
    AISERVE_TILE_CASE(2)
    AISERVE_TILE_CASE(1)
#undef AISERVE_TILE_CASE
    default:
        break;
    }
}


/* The mask of the lanes of vector V (0..2) that fall inside W columns. */
static __mmask16
aiserve_gemm_mask(size_t w, size_t v)
{
    size_t  lanes = w > 16 * v ? w - 16 * v : 0;

    return lanes >= 16 ? (__mmask16) 0xffff
                       : (__mmask16) ((1u << lanes) - 1);
}


void
aiserve_gemm_packed(size_t m, size_t n, size_t k, const float *a,
    size_t lda, const float *packed, size_t p0, size_t p1,
    const float *bias, int act, float *c, size_t ldc)
{
    size_t        i0, i, mc, mr, p, j0, w, r;
    const float  *b;
    int           gelu = act == AISERVE_ACT_GELU_ERF && bias != NULL;
    int           late = act >= 0 && !gelu && bias != NULL;

    for (i0 = 0; i0 < m; i0 += AISERVE_GEMM_MC) {
        mc = m - i0 < AISERVE_GEMM_MC ? m - i0 : AISERVE_GEMM_MC;
        for (p = p0; p < p1; p++) {
            b = packed + p * NR * k;
            j0 = p * NR;
            w = n - j0 < NR ? n - j0 : NR;
            for (i = i0; i < i0 + mc; i += MR) {
                mr = i0 + mc - i < MR ? i0 + mc - i : MR;
                aiserve_gemm_tile_n(mr, k, a + i * lda, lda, b,
                                    c + i * ldc + j0, ldc,
                                    bias != NULL && !late ? bias + j0 : NULL,
                                    gelu, aiserve_gemm_mask(w, 0),
                                    aiserve_gemm_mask(w, 1),
                                    aiserve_gemm_mask(w, 2));
                if (late) {
                    /* activations other than GELU (erf): per row */
                    for (r = 0; r < mr; r++) {
                        aiserve_bias_act(c + (i + r) * ldc + j0, bias + j0, 1,
                                         w, (aiserve_act_e) act);
                    }
                }
            }
        }
    }
}

#else  /* no AVX-512 kernel on this platform */

int
aiserve_gemm_packed_ok(void)
{
    return 0;
}


/* Portable reference of the same product, for the unit tests only. */
void
aiserve_gemm_packed(size_t m, size_t n, size_t k, const float *a,
    size_t lda, const float *packed, size_t p0, size_t p1,
    const float *bias, int act, float *c, size_t ldc)
{
    size_t  i, j, kk, j1 = p1 * NR < n ? p1 * NR : n;
    float   s;

    for (i = 0; i < m; i++) {
        for (j = p0 * NR; j < j1; j++) {
            s = 0.f;
            for (kk = 0; kk < k; kk++) {
                s += a[i * lda + kk] * packed[(j / NR) * NR * k + kk * NR
                                              + j % NR];
            }
            c[i * ldc + j] = s;
        }
        if (bias != NULL) {
            if (act < 0) {
                for (j = p0 * NR; j < j1; j++) {
                    c[i * ldc + j] += bias[j];
                }
            } else {
                aiserve_bias_act(c + i * ldc + p0 * NR, bias + p0 * NR, 1,
                                 j1 - p0 * NR, (aiserve_act_e) act);
            }
        }
    }
}

#endif
