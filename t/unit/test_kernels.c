/*
 * The encoder's own kernels against double-precision references:
 * - the prepacked product (src/aiserve_gemm.c): shapes with row and column
 *   tails (m not a multiple of 8, n not a multiple of 48), panel
 *   sub-ranges, strided A and C, the bias and GELU epilogues, and row
 *   results that do not depend on the batch;
 * - one head of attention (aiserve_attention_head(), src/aiserve_ops.c):
 *   head sizes 16..128, sequence lengths around the kernel's 8-row, 16-
 *   and 32-key blocks, scores large enough that most of softmax
 *   underflows.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aiserve_gemm.h"
#include "aiserve_ops.h"
#include "tap.h"


static uint32_t  rng_state = 20261130;

static float
rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float) ((rng_state >> 8) & 0xffff) / 32768.f - 1.f;
}


static double
gelu_ref(double v)
{
    return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
}


/* max |C - reference| over the checked columns, relative to the sum of
 * |terms| (the bound of a float sum's rounding error); C entries outside
 * [j0, j1) must still hold SENTINEL. */
static double
check(size_t m, size_t n, size_t k, const float *a, size_t lda,
    const float *w, const float *bias, int act, const float *c, size_t ldc,
    size_t j0, size_t j1, int *untouched)
{
    size_t  i, j, kk;
    double  s, mag, worst = 0, d;

    *untouched = 1;
    for (i = 0; i < m; i++) {
        for (j = 0; j < ldc; j++) {
            if (j < j0 || j >= j1) {
                *untouched &= c[i * ldc + j] == -7.f;
                continue;
            }
            s = 0;
            mag = 0;
            for (kk = 0; kk < k; kk++) {
                s += (double) a[i * lda + kk] * w[j * k + kk];
                mag += fabs((double) a[i * lda + kk] * w[j * k + kk]);
            }
            if (bias != NULL) {
                s += bias[j];
                mag += fabs(bias[j]);
                if (act == AISERVE_ACT_GELU_ERF) {
                    s = gelu_ref(s);
                } else if (act == AISERVE_ACT_RELU) {
                    s = s > 0 ? s : 0;
                }
            }
            d = fabs(c[i * ldc + j] - s) / (mag + 1e-30);
            worst = d > worst ? d : worst;
        }
    }
    return worst;
}


static void
one_case(size_t m, size_t n, size_t k, size_t p0, size_t p1, int with_bias,
    int act)
{
    size_t  lda = k + 3, ldc = n + 5, np = (n + 47) / 48, i;
    size_t  j0, j1;
    float  *a, *w, *bias, *c, *packed;
    double  worst;
    int     untouched;

    p1 = p1 > np ? np : p1;
    j0 = p0 * 48;
    j1 = p1 * 48 < n ? p1 * 48 : n;
    a = malloc(m * lda * sizeof(float));
    w = malloc(n * k * sizeof(float));
    bias = malloc(n * sizeof(float));
    c = malloc(m * ldc * sizeof(float));
    packed = aligned_alloc(64, (aiserve_gemm_packed_size(n, k) * sizeof(float)
                                + 63) / 64 * 64);
    for (i = 0; i < m * lda; i++) {
        a[i] = rnd();
    }
    for (i = 0; i < n * k; i++) {
        w[i] = rnd() * 0.1f;
    }
    for (i = 0; i < n; i++) {
        bias[i] = rnd();
    }
    for (i = 0; i < m * ldc; i++) {
        c[i] = -7.f;
    }
    aiserve_gemm_pack(w, n, k, packed);
    aiserve_gemm_packed(m, n, k, a, lda, packed, p0, p1,
                        with_bias ? bias : NULL, act, c, ldc);
    worst = check(m, n, k, a, lda, w, with_bias ? bias : NULL, act, c, ldc,
                  j0, j1, &untouched);
    tap_ok(worst < 1e-6 && untouched,
           "m %zu n %zu k %zu panels [%zu, %zu) bias %d act %d: max "
           "relative error %.2e, outside columns untouched %d", m, n, k, p0,
           p1, with_bias, act, worst, untouched);
    free(a);
    free(w);
    free(bias);
    free(c);
    free(packed);
}


/* Row i of a 37-row product equals the same row computed alone, bit for
 * bit (tiles of 8 rows, tails of 1..7: the same sum in the same order). */
static void
rows_alone(void)
{
    size_t  m = 37, n = 100, k = 70, i, j, differ = 0;
    float  *a = malloc(m * k * sizeof(float)), *w = malloc(n * k * 4);
    float  *bias = malloc(n * 4), *c = malloc(m * n * 4), *c1 = malloc(n * 4);
    float  *packed = aligned_alloc(64, aiserve_gemm_packed_size(n, k) * 4);

    for (i = 0; i < m * k; i++) {
        a[i] = rnd();
    }
    for (i = 0; i < n * k; i++) {
        w[i] = rnd();
    }
    for (i = 0; i < n; i++) {
        bias[i] = rnd();
    }
    aiserve_gemm_pack(w, n, k, packed);
    aiserve_gemm_packed(m, n, k, a, k, packed, 0, 3, bias,
                        AISERVE_ACT_GELU_ERF, c, n);
    for (i = 0; i < m; i++) {
        aiserve_gemm_packed(1, n, k, a + i * k, k, packed, 0, 3, bias,
                            AISERVE_ACT_GELU_ERF, c1, n);
        for (j = 0; j < n; j++) {
            differ += memcmp(&c1[j], &c[i * n + j], sizeof(float)) != 0;
        }
    }
    tap_ok(differ == 0, "each of 37 rows computed alone equals its row in "
           "the batch: %zu of %zu values differ", differ, m * n);
    free(a);
    free(w);
    free(bias);
    free(c);
    free(c1);
    free(packed);
}


/* softmax(scale Q K^T) V for one head in double, rows ld apart. */
static void
attention_ref(size_t L, size_t d, const float *q, const float *k,
    const float *v, size_t ld, double scale, double *out)
{
    double  *p = malloc(L * sizeof(double)), m, sum;
    size_t   i, j, c;

    for (i = 0; i < L; i++) {
        m = -INFINITY;
        for (j = 0; j < L; j++) {
            p[j] = 0;
            for (c = 0; c < d; c++) {
                p[j] += (double) q[i * ld + c] * k[j * ld + c];
            }
            p[j] *= scale;
            m = p[j] > m ? p[j] : m;
        }
        sum = 0;
        for (j = 0; j < L; j++) {
            p[j] = exp(p[j] - m);
            sum += p[j];
        }
        for (c = 0; c < d; c++) {
            out[i * d + c] = 0;
            for (j = 0; j < L; j++) {
                out[i * d + c] += p[j] / sum * v[j * ld + c];
            }
        }
    }
    free(p);
}


static void
attention_case(size_t L, size_t d, float amp)
{
    size_t   heads = 3, H = heads * d, ld = 3 * H, i, c, h;
    float   *qkv = malloc(L * ld * sizeof(float));
    float   *out = malloc(L * H * sizeof(float));
    float   *work = malloc((d + 8) * ((L + 15) / 16 * 16 + 8) * sizeof(float));
    double  *ref = malloc(L * d * sizeof(double)), worst = 0, e;
    int      finite = 1;

    for (i = 0; i < L * ld; i++) {
        qkv[i] = rnd() * amp;
    }
    for (h = 0; h < heads; h++) {
        const float  *q = qkv + h * d;

        aiserve_attention_head(L, d, q, q + H, q + 2 * H, ld,
                               1.f / sqrtf((float) d), work, out + h * d, H);
        attention_ref(L, d, q, q + H, q + 2 * H, ld, 1.0 / sqrt((double) d),
                      ref);
        for (i = 0; i < L; i++) {
            for (c = 0; c < d; c++) {
                e = fabs(out[i * H + h * d + c] - ref[i * d + c]);
                worst = e > worst ? e : worst;
                finite &= isfinite(out[i * H + h * d + c]);
            }
        }
    }
    /* with inputs of 30, scores reach thousands and their float rounding
     * (eps times the sum of |q_c k_c|) moves the probabilities by about
     * 1e-4 relative: the bound is then what a wrong maximum, mask or
     * underflow would exceed by orders of magnitude */
    tap_ok(finite && worst < (amp > 1 ? 1e-3 * amp : 2e-6),
           "attention L %zu head_dim %zu, inputs up to %g: max |diff| %.2e "
           "vs double, all finite %d", L, d, amp, worst, finite);
    free(qkv);
    free(out);
    free(work);
    free(ref);
}


int
main(void)
{
    size_t  lens[] = { 1, 5, 8, 15, 16, 17, 31, 32, 33, 47, 100, 128 };
    size_t  dims[] = { 16, 32, 48, 64, 128 };
    size_t  li, di;

    size_t  shapes[][3] = {
        { 1, 48, 1 }, { 8, 48, 16 }, { 16, 384, 384 }, { 37, 100, 70 },
        { 3, 20, 5 }, { 130, 1152, 384 }, { 9, 384, 1536 }, { 7, 49, 33 },
    };
    size_t  i;

    tap_diag("packed AVX-512 kernel on this CPU: %s",
             aiserve_gemm_packed_ok() ? "yes" : "no (portable loop)");
    tap_ok(aiserve_gemm_packed_size(100, 7) == 3 * 48 * 7,
           "packed size: 100 columns take 3 panels of 48");
    for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        one_case(shapes[i][0], shapes[i][1], shapes[i][2], 0, 1000, 0, -1);
        one_case(shapes[i][0], shapes[i][1], shapes[i][2], 0, 1000, 1, -1);
        one_case(shapes[i][0], shapes[i][1], shapes[i][2], 0, 1000, 1,
                 AISERVE_ACT_GELU_ERF);
    }
    one_case(37, 100, 70, 1, 3, 1, AISERVE_ACT_RELU);
    one_case(37, 1152, 384, 5, 9, 1, -1);
    one_case(5, 384, 384, 2, 3, 0, -1);
    rows_alone();

    for (di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        for (li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
            attention_case(lens[li], dims[di], 1.f);
        }
    }
    /* scores in the hundreds: most probabilities underflow to 0 */
    attention_case(33, 32, 30.f);
    attention_case(100, 64, 30.f);
    return tap_done();
}
