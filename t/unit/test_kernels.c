/*
 * The encoder's kernels against double-precision references:
 * - the prepacked product (src/aiserve_gemm.c, oneDNN matmul on weights
 *   reordered at load): odd shapes, strided A and C, with and without
 *   bias, followed by every activation of aiserve_bias_act() as the
 *   encoder applies them (GELU erf / tanh, ReLU, SiLU), and row results
 *   that do not depend on the batch (computed on 2 threads, and alone on
 *   one);
 * - the training engine's GELU and its derivative (aiserve_gelu_fwd(),
 *   aiserve_gelu_bwd()) on a sweep of [-12, 12], held to the accuracy
 *   of the same formulas on libm's erff and expf;
 * - one head of attention (aiserve_attention_head(), src/aiserve_ops.c):
 *   head sizes 16..128, sequence lengths around the kernel's 8-row, 16-
 *   and 32-key blocks, scores large enough that most of softmax
 *   underflows; its bf16 twin (aiserve_attention_head_bf16(), where the
 *   CPU has AVX512-BF16) against the same reference on bf16-rounded
 *   Q, K and V, within the rounding of the probabilities to bf16.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aiserve_gemm.h"
#include "aiserve_ops.h"
#include "encoder_util.h"
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


static double
act_ref(double v, int act)
{
    switch (act) {
    case AISERVE_ACT_GELU_ERF:
        return gelu_ref(v);
    case AISERVE_ACT_GELU_TANH:
        return 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI)
                                     * (v + 0.044715 * v * v * v)));
    case AISERVE_ACT_RELU:
        return v > 0 ? v : 0;
    case AISERVE_ACT_SILU:
        return v / (1.0 + exp(-v));
    default:
        return v;
    }
}


/* A packed copy of W [n, k]: layout, 64-byte aligned data, handle. */
static int
pack(const float *w, size_t n, size_t k, aiserve_gemm_layout_t *layout,
    void **mem, aiserve_gemm_w_t *packed)
{
    char  err[256];

    if (aiserve_gemm_layout(n, k, layout, err, sizeof(err)) != 0
        || posix_memalign(mem, 64, layout->bytes ? layout->bytes : 64) != 0
        || aiserve_gemm_pack(layout, w, *mem, packed, err, sizeof(err)) != 0)
    {
        tap_diag("pack [%zu, %zu]: %s", n, k, err);
        return -1;
    }
    return 0;
}


/*
 * C = A W^T (+ bias, act) with strided A and C against double: the error
 * relative to the sum of |terms| (the bound of a float sum's rounding),
 * and C's columns past n (ldc > n) untouched.
 */
static void
one_case(size_t m, size_t n, size_t k, int with_bias, int act)
{
    size_t                 lda = k + 3, ldc = n + 5, i, j, kk;
    float                 *a, *w, *bias, *c;
    double                 s, mag, worst = 0, d;
    int                    untouched = 1, rc;
    aiserve_gemm_layout_t  layout;
    aiserve_gemm_w_t       packed;
    void                  *mem = NULL;
    char                   err[256] = "";

    a = malloc(m * lda * sizeof(float));
    w = malloc(n * k * sizeof(float));
    bias = malloc(n * sizeof(float));
    c = malloc(m * ldc * sizeof(float));
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
    rc = pack(w, n, k, &layout, &mem, &packed);
    if (rc == 0) {
        rc = aiserve_gemm_packed(m, a, lda, &packed,
                                 with_bias && act < 0 ? bias : NULL, c, ldc,
                                 1, err, sizeof(err));
    }
    /* activations are applied by the encoder's own pass after the
     * product (aiserve_model.c: aiserve_product()) */
    for (i = 0; rc == 0 && with_bias && act >= 0 && i < m; i++) {
        aiserve_bias_act(c + i * ldc, bias, 1, n, (aiserve_act_e) act);
    }
    for (i = 0; rc == 0 && i < m; i++) {
        for (j = 0; j < ldc; j++) {
            if (j >= n) {
                untouched &= c[i * ldc + j] == -7.f;
                continue;
            }
            s = 0;
            mag = 0;
            for (kk = 0; kk < k; kk++) {
                s += (double) a[i * lda + kk] * w[j * k + kk];
                mag += fabs((double) a[i * lda + kk] * w[j * k + kk]);
            }
            if (with_bias) {
                s = act_ref(s + bias[j], act);
                mag += fabs(bias[j]);
            }
            d = fabs(c[i * ldc + j] - s) / (mag + 1e-30);
            worst = d > worst ? d : worst;
        }
    }
    tap_ok(rc == 0 && worst < 1e-6 && untouched,
           "m %zu n %zu k %zu bias %d act %d: max relative error %.2e, "
           "columns past n untouched %d %s", m, n, k, with_bias, act, worst,
           untouched, err);
    aiserve_gemm_layout_free(&layout);
    free(mem);
    free(a);
    free(w);
    free(bias);
    free(c);
}


/* Row i of a 37-row product equals the same row computed alone (the
 * batch must not change a sequence's numbers: at most float rounding). */
static void
rows_alone(void)
{
    size_t                 m = 37, n = 100, k = 70, i, j;
    float                 *a = malloc(m * k * sizeof(float));
    float                 *w = malloc(n * k * sizeof(float));
    float                 *bias = malloc(n * sizeof(float));
    float                 *c = malloc(m * n * sizeof(float));
    float                 *c1 = malloc(n * sizeof(float));
    double                 worst = 0, d;
    aiserve_gemm_layout_t  layout;
    aiserve_gemm_w_t       packed;
    void                  *mem = NULL;
    char                   err[256] = "";
    int                    rc;

    for (i = 0; i < m * k; i++) {
        a[i] = rnd();
    }
    for (i = 0; i < n * k; i++) {
        w[i] = rnd();
    }
    for (i = 0; i < n; i++) {
        bias[i] = rnd();
    }
    rc = pack(w, n, k, &layout, &mem, &packed);
    if (rc == 0) {
        rc = aiserve_gemm_packed(m, a, k, &packed, bias, c, n, 2, err,
                                 sizeof(err));
    }
    for (i = 0; rc == 0 && i < m; i++) {
        rc = aiserve_gemm_packed(1, a + i * k, k, &packed, bias, c1, n, 1,
                                 err, sizeof(err));
        for (j = 0; rc == 0 && j < n; j++) {
            d = fabs(c1[j] - c[i * n + j]) / (fabs(c[i * n + j]) + 1.0);
            worst = d > worst ? d : worst;
        }
    }
    tap_ok(rc == 0 && worst <= 1e-6, "each of 37 rows computed alone "
           "equals its row in the batch: max relative difference %.2e %s",
           worst, err);
    aiserve_gemm_layout_free(&layout);
    free(mem);
    free(a);
    free(w);
    free(bias);
    free(c);
    free(c1);
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


/* One head of attention of L tokens, head_dim D, inputs up to AMP, by
 * aiserve_attention_head() or (BF16) aiserve_attention_head_bf16(),
 * against attention_ref() on the inputs, or for BF16 on the inputs
 * rounded to bf16. */
static void
attention_case(size_t L, size_t d, float amp, int bf16)
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
        float  *q = qkv + h * d;

#if defined(__x86_64__) && defined(__GNUC__)
        if (bf16) {
            aiserve_attention_head_bf16(L, d, q, q + H, q + 2 * H, ld,
                                        1.f / sqrtf((float) d), work,
                                        out + h * d, H);
            for (i = 0; i < L; i++) {
                for (c = 0; c < d; c++) {
                    q[i * ld + c] = enc_to_bf16(q[i * ld + c]);
                    q[i * ld + H + c] = enc_to_bf16(q[i * ld + H + c]);
                    q[i * ld + 2 * H + c] = enc_to_bf16(q[i * ld + 2 * H + c]);
                }
            }
        } else
#endif
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
    /* bf16: each probability rounded to bf16 (2^-9 relative) moves the
     * output by at most 2^-9 of the largest |v|, the fp32 bound besides;
     * a wrong pairing, mask or layout is off by the size of V itself */
    tap_ok(finite && worst < (bf16 ? 1.f / 512 * amp : 0)
                             + (amp > 1 ? 1e-3 * amp : 2e-6),
           "attention%s L %zu head_dim %zu, inputs up to %g: max |diff| "
           "%.2e vs double%s, all finite %d", bf16 ? " bf16" : "", L, d,
           amp, worst, bf16 ? " on bf16-rounded Q, K, V" : "", finite);
    free(qkv);
    free(out);
    free(work);
    free(ref);
}


/*
 * GELU and its derivative against double references on 2^21 + 1 points
 * evenly spread over [-12, 12]: the largest |error| / max(1, |x|) may
 * exceed that of the same formulas on libm's erff (within 1 ulp) and
 * expf by 10% at most (the encoder's faster erf, 4e-7 off, does not
 * meet it).
 */
#define GELU_N  ((size_t) 1 << 21)

static void
gelu_case(void)
{
    float   *x, *y, *d, zf, lib;
    double   fwd = 0, bwd = 0, lib_fwd = 0, lib_bwd = 0, z, ref, s;
    size_t   i;

    x = malloc((GELU_N + 1) * sizeof(float));
    y = malloc((GELU_N + 1) * sizeof(float));
    d = malloc((GELU_N + 1) * sizeof(float));
    if (x == NULL || y == NULL || d == NULL) {
        tap_ok(0, "gelu: out of memory");
        return;
    }
    for (i = 0; i <= GELU_N; i++) {
        x[i] = (float) (-12.0 + 24.0 * (double) i / (double) GELU_N);
        d[i] = 1.f;
    }
    aiserve_gelu_fwd(x, y, GELU_N + 1);
    aiserve_gelu_bwd(x, d, GELU_N + 1);
    for (i = 0; i <= GELU_N; i++) {
        zf = x[i] * 0.70710678118654752f;
        z = zf;
        s = fmax(1.0, fabs(x[i]));
        ref = 0.5 * x[i] * (1.0 + erf(z));
        fwd = fmax(fwd, fabs(y[i] - ref) / s);
        lib = 0.5f * x[i] * (1.f + erff(zf));
        lib_fwd = fmax(lib_fwd, fabs(lib - ref) / s);
        ref = 0.5 * (1.0 + erf(z)) + x[i] * 0.39894228040143268 * exp(-z * z);
        bwd = fmax(bwd, fabs(d[i] - ref) / s);
        lib = 0.5f * (1.f + erff(zf))
              + x[i] * 0.39894228040143268f * expf(-0.5f * x[i] * x[i]);
        lib_bwd = fmax(lib_bwd, fabs(lib - ref) / s);
    }
    tap_ok(fwd <= 1.1 * lib_fwd, "gelu forward: max |error| / max(1, |x|) "
           "%.3e (libm's erff: %.3e)", fwd, lib_fwd);
    tap_ok(bwd <= 1.1 * lib_bwd, "gelu backward: max |error| / max(1, |x|) "
           "%.3e (libm's erff, expf: %.3e)", bwd, lib_bwd);
    free(x);
    free(y);
    free(d);
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
    int     act;

    for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        one_case(shapes[i][0], shapes[i][1], shapes[i][2], 0, -1);
        one_case(shapes[i][0], shapes[i][1], shapes[i][2], 1, -1);
        one_case(shapes[i][0], shapes[i][1], shapes[i][2], 1,
                 AISERVE_ACT_GELU_ERF);
    }
    for (act = AISERVE_ACT_GELU_TANH; act <= AISERVE_ACT_SILU; act++) {
        one_case(37, 100, 70, 1, act);
    }
    rows_alone();
    gelu_case();

    for (di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        for (li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
            attention_case(lens[li], dims[di], 1.f, 0);
        }
    }
    /* scores in the hundreds: most probabilities underflow to 0 */
    attention_case(33, 32, 30.f, 0);
    attention_case(100, 64, 30.f, 0);
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx512bf16")) {
        for (di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
            for (li = 0; dims[di] % 32 == 0
                         && li < sizeof(lens) / sizeof(lens[0]); li++)
            {
                attention_case(lens[li], dims[di], 1.f, 1);
            }
        }
        attention_case(33, 32, 30.f, 1);
        attention_case(100, 64, 30.f, 1);
    } else {
        tap_diag("bf16 attention skipped: the CPU has no AVX512-BF16");
    }
#else
    tap_diag("bf16 attention skipped: not an x86-64 GCC or clang build");
#endif
    return tap_done();
}
