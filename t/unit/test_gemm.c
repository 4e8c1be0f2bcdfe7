/*
 * The prepacked product (src/aiserve_gemm.c) against a double-precision
 * reference: shapes with row and column tails (m not a multiple of 8, n
 * not a multiple of 48), panel sub-ranges, strided A and C, the bias and
 * GELU epilogues, and row results that do not depend on the batch.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aiserve_gemm.h"
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


int
main(void)
{
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
    return tap_done();
}
