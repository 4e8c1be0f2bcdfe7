/*
 * aiserve-gpucheck: the C side of the device check (shared/GPU.md section
 * 6, tools/gpucheck.sh).  It dlopen()s the GPU backend as the module does
 * and runs its kernels against host fp64 oracles on fresh random inputs.
 *
 *   plan      the workspace one lane needs (no GPU)
 *   probe     the driver and device, as aiserve_model device=gpu sees them
 *   kernels   every kernel of the backend against its oracle
 *
 * The other stages of shared/GPU.md (make-model, parity, forktest, bench)
 * need the GPU forward pass, which is not built: the tool says so.
 * See --help.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aiserve_gpu.h"
#include "aiserve_gpu_plan.h"


static void
usage(FILE *f)
{
    fprintf(f,
"usage: aiserve-gpucheck plan --hidden-size H --intermediate-size I\n"
"                        [--num-labels L] [--tokens N] [--batch B]\n"
"       aiserve-gpucheck probe [--lib PATH] [--device N]\n"
"       aiserve-gpucheck kernels [--lib PATH] [--device N] [--seed S]\n"
"                        [--dtype fp16|bf16] [--quick]\n"
"\n"
"The device check's C program (tools/gpucheck.sh runs it).  It links\n"
"no library of the engine's (libc and libm only), so that it builds\n"
"and runs on a bare GPU host.\n"
"\n"
"  plan      prints the device memory one lane of a model (the sizes of\n"
"            its config.json; L labels a token for a token classifier)\n"
"            needs for batches of N tokens (default 16384) and B sequences\n"
"            (default 64), fp16: every buffer, its offset and the total;\n"
"            runs anywhere\n"
"  probe     loads the GPU backend (PATH, default build/libaiserve_gpu.so)\n"
"            and prints the driver and device N (default 0), or the reason\n"
"            there is none; exit 0, or 2\n"
"  kernels   runs embed_ln, residual_ln, gelu_erf, attention_ref (head_dim\n"
"            32 and 64, lengths 1 to 512), pool (cls, mean, max, with and\n"
"            without normalize), seq_cls_head and the cuBLASLt projections\n"
"            of MiniLM and bert-base shapes on random inputs (seed S,\n"
"            default from the clock, printed), compares each with a host\n"
"            fp64 oracle under\n"
"            the gates of shared/GPU.md section 5, checks that every\n"
"            output element was written (outputs start as NaN) and that a\n"
"            second run is bitwise equal, and prints one line a check and\n"
"            a summary; exit 0 when all pass, 1 when one fails, 2 when\n"
"            the backend or the device is missing\n"
"\n"
"  -h, --help   this text\n");
}


static uint64_t  rng_state;

static uint64_t
rng_next(void)
{
    uint64_t  z = (rng_state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* uniform in (0, 1) */
static double
rng_unit(void)
{
    return ((double) (rng_next() >> 11) + 0.5) / 9007199254740992.0;
}

static double
rng_normal(double sd)
{
    return sd * sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586
                                                   * rng_unit());
}


typedef struct {
    const aiserve_gpu_backend_t  *be;
    aiserve_gpu_dtype_e           dtype;
    int                           quick;
    int                           failed, passed;
} check_t;


/* 16-bit <-> double in the run's dtype */
static double
w16(const check_t *c, uint16_t h)
{
    return c->dtype == AISERVE_GPU_BF16 ? aiserve_gpu_bf16_to_f32(h)
                                        : aiserve_gpu_fp16_to_f32(h);
}

/* N random values N(0, SD) in the run's dtype, and their widened copy */
static uint16_t *
rand16(const check_t *c, size_t n, double mean, double sd, double *wide)
{
    uint16_t  *h = malloc(n * sizeof(uint16_t));
    float      f;
    size_t     i;
    char       err[256];
    int        rc;

    if (h == NULL) {
        fprintf(stderr, "aiserve-gpucheck: out of memory\n");
        exit(2);
    }

    for (i = 0; i < n; i++) {
        f = (float) (mean + rng_normal(sd));
        rc = c->dtype == AISERVE_GPU_BF16
             ? aiserve_gpu_to_bf16(&f, &h[i], 1, "input", err, sizeof(err))
             : aiserve_gpu_to_fp16(&f, &h[i], 1, "input", err, sizeof(err));
        if (rc != 0) {
            fprintf(stderr, "aiserve-gpucheck: %s\n", err);
            exit(2);
        }
        if (wide != NULL) {
            wide[i] = w16(c, h[i]);
        }
    }

    return h;
}

/* N output elements poisoned: NaN in the run's 16-bit format */
static uint16_t *
poisoned16(const check_t *c, size_t n)
{
    uint16_t  *h = malloc(n * sizeof(uint16_t));
    size_t     i;

    for (i = 0; h != NULL && i < n; i++) {
        h[i] = c->dtype == AISERVE_GPU_BF16 ? 0x7fc0 : 0x7e00;
    }
    return h;
}

static const char *
dtype_name(const check_t *c)
{
    return c->dtype == AISERVE_GPU_BF16 ? "bf16" : "fp16";
}

/*
 * One line of the table: NAME, SHAPE, the measure and the gate.  OK is
 * the gate's verdict; NONFINITE counts the elements left NaN or made
 * Inf; SAME says the second run was bitwise equal.
 */
static void
report(check_t *c, const char *name, const char *shape, const char *what,
    double value, double gate, int ok, size_t nonfinite, int same,
    const char *err)
{
    int  pass = err == NULL && ok && nonfinite == 0 && same;

    printf("%-6s %-14s %-4s %-34s %-10s %10.3g <= %-8.3g %s%s%s%s\n",
           pass ? "PASS" : "FAIL", name, dtype_name(c), shape, what, value,
           gate, nonfinite ? " unwritten/non-finite " : "",
           !same ? " second run differs" : "", err ? " error: " : "",
           err ? err : "");
    fflush(stdout);
    if (pass) {
        c->passed++;
    } else {
        c->failed++;
    }
}

static double
ulp16(const check_t *c, double r)
{
    int  e;

    r = fabs(r);
    if (r == 0.0) {
        return c->dtype == AISERVE_GPU_BF16 ? ldexp(1.0, -133)
                                            : ldexp(1.0, -24);
    }
    (void) frexp(r, &e);       /* r in [2^(e-1), 2^e) */
    if (c->dtype == AISERVE_GPU_BF16) {
        return ldexp(1.0, e - 1 - 7);
    }
    return ldexp(1.0, (e - 1 < -14 ? -14 : e - 1) - 10);
}


/* ||got - ref|| / ||ref|| over a check's elements; non-finite outputs
 * (left NaN, or Inf) are counted apart. */
typedef struct {
    double  num, den;
    size_t  nonfinite;
} relerr_t;

static void
relerr_add(relerr_t *e, double got, double ref)
{
    if (!isfinite(got)) {
        e->nonfinite++;
        return;
    }
    e->num += (got - ref) * (got - ref);
    e->den += ref * ref;
}

static double
relerr(const relerr_t *e)
{
    return e->den > 0 ? sqrt(e->num / e->den) : 0;
}


/* cu_seqlens (B + 1 entries) of sequences of LENS tokens; returns T. */
static size_t
cu_from_lens(const size_t *lens, size_t B, int32_t *cu)
{
    size_t  b;

    cu[0] = 0;
    for (b = 0; b < B; b++) {
        cu[b + 1] = cu[b] + (int32_t) lens[b];
    }
    return (size_t) cu[B];
}


/* LayerNorm in fp64 of V[H] into OUT */
static void
ln64(const double *v, size_t H, const double *g, const double *b,
    double eps, double *out)
{
    double  mean = 0.0, var = 0.0;
    size_t  i;

    for (i = 0; i < H; i++) {
        mean += v[i];
    }
    mean /= (double) H;
    for (i = 0; i < H; i++) {
        var += (v[i] - mean) * (v[i] - mean);
    }
    var /= (double) H;
    for (i = 0; i < H; i++) {
        out[i] = (v[i] - mean) / sqrt(var + eps) * g[i] + b[i];
    }
}


/* One row X[H] of a LayerNorm output against REF: the largest
 * |x - ref| / max(1, |ref|) into *WORST, the elements past TOL into *BAD,
 * the non-finite ones (left NaN) into *NONFINITE. */
static void
ln_compare(const check_t *c, const uint16_t *x, const double *ref,
    size_t H, double tol, double *worst, size_t *bad, size_t *nonfinite)
{
    size_t  i;
    double  d;

    for (i = 0; i < H; i++) {
        d = w16(c, x[i]);
        if (!isfinite(d)) {
            (*nonfinite)++;
            continue;
        }
        d = fabs(d - ref[i]) / fmax(1.0, fabs(ref[i]));
        if (d > *worst) {
            *worst = d;
        }
        *bad += d > tol;
    }
}


static void
check_embed_ln(check_t *c, size_t T, size_t H)
{
    size_t     vocab = 1000, n_pos = 512, n_type = 2, t, i, bad = 0;
    size_t     nonfinite = 0;
    int32_t   *ids, *tt, *pp;
    double    *ww, *wp, *wy, *v, *ref, gd[1024], bd[1024], worst = 0;
    float      g[1024], b[1024];
    uint16_t  *word, *pos, *type, *x, *x2;
    char       err[512], shape[64];
    int        rc, rc2;
    double     tol = c->dtype == AISERVE_GPU_BF16 ? 8e-3 : 1e-3;

    ww = malloc(vocab * H * sizeof(double));
    wp = malloc(n_pos * H * sizeof(double));
    wy = malloc(n_type * H * sizeof(double));
    word = rand16(c, vocab * H, 0.0, 0.05, ww);
    pos = rand16(c, n_pos * H, 0.0, 0.02, wp);
    type = rand16(c, n_type * H, 0.0, 0.02, wy);
    for (i = 0; i < H; i++) {
        g[i] = (float) (1.0 + rng_normal(0.1));
        b[i] = (float) rng_normal(0.1);
        gd[i] = g[i];
        bd[i] = b[i];
    }
    ids = malloc(T * sizeof(int32_t));
    tt = malloc(T * sizeof(int32_t));
    pp = malloc(T * sizeof(int32_t));
    for (t = 0; t < T; t++) {
        ids[t] = (int32_t) (rng_next() % vocab);
        tt[t] = (int32_t) (rng_next() % n_type);
        pp[t] = (int32_t) (rng_next() % n_pos);
    }
    x = poisoned16(c, T * H);
    x2 = poisoned16(c, T * H);
    v = malloc(H * sizeof(double));
    ref = malloc(H * sizeof(double));

    rc = c->be->embed_ln(c->dtype, T, H, ids, tt, pp, word, vocab, pos, n_pos,
                         type, n_type, g, b, 1e-12f, x, err, sizeof(err));
    rc2 = rc ? rc : c->be->embed_ln(c->dtype, T, H, ids, tt, pp, word, vocab,
                                    pos, n_pos, type, n_type, g, b, 1e-12f,
                                    x2, err, sizeof(err));

    for (t = 0; rc == 0 && t < T; t++) {
        for (i = 0; i < H; i++) {
            v[i] = ww[ids[t] * H + i] + wp[pp[t] * H + i] + wy[tt[t] * H + i];
        }
        ln64(v, H, gd, bd, 1e-12, ref);
        ln_compare(c, x + t * H, ref, H, tol, &worst, &bad, &nonfinite);
    }

    snprintf(shape, sizeof(shape), "T %zu H %zu", T, H);
    report(c, "embed_ln", shape, "max|d|/r", worst, tol, bad == 0, nonfinite,
           rc2 == 0 && memcmp(x, x2, T * H * 2) == 0,
           rc || rc2 ? err : NULL);

    free(ww); free(wp); free(wy); free(word); free(pos); free(type);
    free(ids); free(tt); free(pp); free(x); free(x2); free(v); free(ref);
}


static void
check_residual_ln(check_t *c, size_t T, size_t H, int with_bias)
{
    size_t     t, i, bad = 0, nonfinite = 0;
    double    *wt, *wx, *v, *ref, gd[1024], bd[1024], worst = 0;
    float      g[1024], b[1024], bias[1024];
    uint16_t  *tmp, *x, *x0;
    char       err[512], shape[64];
    int        rc, rc2;
    double     tol = c->dtype == AISERVE_GPU_BF16 ? 8e-3 : 1e-3;

    wt = malloc(T * H * sizeof(double));
    wx = malloc(T * H * sizeof(double));
    tmp = rand16(c, T * H, 0.0, 1.0, wt);
    x0 = rand16(c, T * H, 0.0, 1.0, wx);
    x = malloc(T * H * 2);
    for (i = 0; i < H; i++) {
        g[i] = (float) (1.0 + rng_normal(0.1));
        b[i] = (float) rng_normal(0.1);
        bias[i] = (float) rng_normal(0.1);
        gd[i] = g[i];
        bd[i] = b[i];
    }
    v = malloc(H * sizeof(double));
    ref = malloc(H * sizeof(double));

    memcpy(x, x0, T * H * 2);
    rc = c->be->residual_ln(c->dtype, T, H, tmp, with_bias ? bias : NULL, g,
                            b, 1e-12f, x, err, sizeof(err));

    for (t = 0; rc == 0 && t < T; t++) {
        for (i = 0; i < H; i++) {
            v[i] = wt[t * H + i] + wx[t * H + i] + (with_bias ? bias[i] : 0);
        }
        ln64(v, H, gd, bd, 1e-12, ref);
        ln_compare(c, x + t * H, ref, H, tol, &worst, &bad, &nonfinite);
    }

    /* in place: the second run starts again from X0 */
    rc2 = -1;
    if (rc == 0) {
        uint16_t  *y = malloc(T * H * 2);

        memcpy(y, x0, T * H * 2);
        rc2 = c->be->residual_ln(c->dtype, T, H, tmp,
                                 with_bias ? bias : NULL, g, b, 1e-12f, y,
                                 err, sizeof(err));
        rc2 = rc2 == 0 && memcmp(x, y, T * H * 2) == 0 ? 0 : -1;
        free(y);
    }

    snprintf(shape, sizeof(shape), "T %zu H %zu%s", T, H,
             with_bias ? " +bias" : "");
    report(c, "residual_ln", shape, "max|d|/r", worst, tol, bad == 0,
           nonfinite, rc2 == 0, rc ? err : NULL);

    free(wt); free(wx); free(tmp); free(x0); free(x); free(v); free(ref);
}


static void
check_gelu(check_t *c, size_t n)
{
    size_t     i, bad = 0, nonfinite = 0;
    double    *w, r, d, worst = 0;
    uint16_t  *f, *f0, *f2;
    char       err[512], shape[64];
    int        rc, rc2 = -1;

    w = malloc(n * sizeof(double));
    f0 = rand16(c, n, 0.0, 3.0, w);
    f = malloc(n * 2);
    f2 = malloc(n * 2);
    memcpy(f, f0, n * 2);
    memcpy(f2, f0, n * 2);

    rc = c->be->gelu_erf(c->dtype, n, f, err, sizeof(err));
    if (rc == 0) {
        rc2 = c->be->gelu_erf(c->dtype, n, f2, err, sizeof(err));
    }

    for (i = 0; rc == 0 && i < n; i++) {
        r = 0.5 * w[i] * (1.0 + erf(w[i] / sqrt(2.0)));
        d = w16(c, f[i]);
        if (!isfinite(d)) {
            nonfinite++;
            continue;
        }
        d = fabs(d - r) / (ulp16(c, r) + 1e-6);
        if (d > worst) {
            worst = d;
        }
        bad += d > 1.0;
    }

    snprintf(shape, sizeof(shape), "n %zu (odd tail)", n);
    report(c, "gelu_erf", shape, "|d|/(ulp+1e-6)", worst, 1.0, bad == 0,
           nonfinite, rc2 == 0 && memcmp(f, f2, n * 2) == 0,
           rc || rc2 ? err : NULL);

    free(w); free(f0); free(f); free(f2);
}


static void
check_attention(check_t *c, size_t hd, const size_t *lens, size_t B)
{
    size_t     nh = 12, H = nh * hd, T = 0, b, t, h, j, i;
    int32_t   *cu;
    double    *w, *s, m, l, acc, d, scale;
    uint16_t  *qkv, *ctx, *ctx2;
    char       err[512], shape[64];
    relerr_t   e = { 0, 0, 0 };
    int        rc, rc2 = -1;
    double     tol = c->dtype == AISERVE_GPU_BF16 ? 1e-2 : 2e-3;

    cu = malloc((B + 1) * sizeof(int32_t));
    T = cu_from_lens(lens, B, cu);

    w = malloc(T * 3 * H * sizeof(double));
    qkv = rand16(c, T * 3 * H, 0.0, 1.0, w);
    ctx = poisoned16(c, T * H);
    ctx2 = poisoned16(c, T * H);
    s = malloc(512 * sizeof(double));
    scale = 1.0 / sqrt((double) hd);

    rc = c->be->attention_ref(c->dtype, T, B, cu, nh, hd, (float) scale, qkv,
                              ctx, err, sizeof(err));
    if (rc == 0) {
        rc2 = c->be->attention_ref(c->dtype, T, B, cu, nh, hd, (float) scale,
                                   qkv, ctx2, err, sizeof(err));
    }

    for (b = 0; rc == 0 && b < B; b++) {
        for (t = (size_t) cu[b]; t < (size_t) cu[b + 1]; t++) {
            for (h = 0; h < nh; h++) {
                m = -INFINITY;
                for (j = (size_t) cu[b]; j < (size_t) cu[b + 1]; j++) {
                    d = 0;
                    for (i = 0; i < hd; i++) {
                        d += w[t * 3 * H + h * hd + i]
                             * w[j * 3 * H + H + h * hd + i];
                    }
                    s[j - cu[b]] = d * scale;
                    m = fmax(m, d * scale);
                }
                l = 0;
                for (j = 0; j < lens[b]; j++) {
                    s[j] = exp(s[j] - m);
                    l += s[j];
                }
                for (i = 0; i < hd; i++) {
                    acc = 0;
                    for (j = 0; j < lens[b]; j++) {
                        acc += s[j] * w[(cu[b] + j) * 3 * H + 2 * H
                                        + h * hd + i];
                    }
                    acc /= l;
                    relerr_add(&e, w16(c, ctx[t * H + h * hd + i]), acc);
                }
            }
        }
    }

    d = relerr(&e);
    snprintf(shape, sizeof(shape), "hd %zu B %zu T %zu", hd, B, T);
    report(c, "attention_ref", shape, "|d|/|r|", d, tol, d <= tol, e.nonfinite,
           rc2 == 0 && memcmp(ctx, ctx2, T * H * 2) == 0,
           rc || rc2 ? err : NULL);

    free(cu); free(w); free(qkv); free(ctx); free(ctx2); free(s);
}


static void
check_pool(check_t *c, aiserve_gpu_pool_e how, int normalize)
{
    static const size_t  lens[] = { 1, 2, 7, 64, 65, 128, 300, 512 };
    static const char   *names[] = { "cls", "mean", "max" };
    size_t     B = sizeof(lens) / sizeof(lens[0]), H = 768, T = 0, b, t, i;
    int32_t    cu[9];
    double    *w, *ref, norm, d;
    float     *out, *out2;
    uint16_t  *x;
    char       err[512], shape[64];
    relerr_t   e = { 0, 0, 0 };
    int        rc, rc2 = -1;

    T = cu_from_lens(lens, B, cu);
    w = malloc(T * H * sizeof(double));
    x = rand16(c, T * H, 0.0, 1.0, w);
    ref = malloc(H * sizeof(double));
    out = malloc(B * H * sizeof(float));
    out2 = malloc(B * H * sizeof(float));
    for (i = 0; i < B * H; i++) {
        out[i] = out2[i] = NAN;
    }

    rc = c->be->pool(c->dtype, how, normalize, T, B, H, cu, x, out, err,
                     sizeof(err));
    if (rc == 0) {
        rc2 = c->be->pool(c->dtype, how, normalize, T, B, H, cu, x, out2, err,
                          sizeof(err));
    }

    for (b = 0; rc == 0 && b < B; b++) {
        norm = 0;
        for (i = 0; i < H; i++) {
            if (how == AISERVE_GPU_POOL_CLS) {
                ref[i] = w[cu[b] * H + i];
            } else if (how == AISERVE_GPU_POOL_MAX) {
                ref[i] = -INFINITY;
                for (t = (size_t) cu[b]; t < (size_t) cu[b + 1]; t++) {
                    ref[i] = fmax(ref[i], w[t * H + i]);
                }
            } else {
                ref[i] = 0;
                for (t = (size_t) cu[b]; t < (size_t) cu[b + 1]; t++) {
                    ref[i] += w[t * H + i];
                }
                ref[i] /= (double) lens[b];
            }
            norm += ref[i] * ref[i];
        }
        norm = normalize ? fmax(sqrt(norm), 1e-12) : 1.0;
        for (i = 0; i < H; i++) {
            relerr_add(&e, out[b * H + i], ref[i] / norm);
        }
    }

    d = relerr(&e);
    snprintf(shape, sizeof(shape), "%s%s B %zu T %zu", names[how],
             normalize ? "+l2" : "", B, T);
    report(c, "pool", shape, "|d|/|r|", d, 1e-5, d <= 1e-5, e.nonfinite,
           rc2 == 0 && memcmp(out, out2, B * H * 4) == 0,
           rc || rc2 ? err : NULL);

    free(w); free(x); free(ref); free(out); free(out2);
}


static void
check_seq_cls_head(check_t *c, size_t H, size_t L)
{
    static const size_t  lens[] = { 1, 5, 64, 129, 3 };
    size_t     B = sizeof(lens) / sizeof(lens[0]), T = 0, b, i, j;
    int32_t    cu[6];
    double    *wx, *wpw, *wcw, *pooled, s, d;
    float     *pb, *cb, *out, *out2;
    uint16_t  *x, *pw, *cw;
    char       err[512], shape[64];
    relerr_t   e = { 0, 0, 0 };
    int        rc, rc2 = -1;

    T = cu_from_lens(lens, B, cu);
    wx = malloc(T * H * sizeof(double));
    wpw = malloc(H * H * sizeof(double));
    wcw = malloc(L * H * sizeof(double));
    x = rand16(c, T * H, 0.0, 1.0, wx);
    pw = rand16(c, H * H, 0.0, 0.05, wpw);
    cw = rand16(c, L * H, 0.0, 0.05, wcw);
    pb = malloc(H * sizeof(float));
    cb = malloc(L * sizeof(float));
    for (i = 0; i < H; i++) {
        pb[i] = (float) rng_normal(0.1);
    }
    for (i = 0; i < L; i++) {
        cb[i] = (float) rng_normal(0.1);
    }
    pooled = malloc(H * sizeof(double));
    out = malloc(B * L * sizeof(float));
    out2 = malloc(B * L * sizeof(float));
    for (i = 0; i < B * L; i++) {
        out[i] = out2[i] = NAN;
    }

    rc = c->be->seq_cls_head(c->dtype, T, B, H, L, cu, x, pw, pb, cw, cb,
                             out, err, sizeof(err));
    if (rc == 0) {
        rc2 = c->be->seq_cls_head(c->dtype, T, B, H, L, cu, x, pw, pb, cw,
                                  cb, out2, err, sizeof(err));
    }

    for (b = 0; rc == 0 && b < B; b++) {
        for (j = 0; j < H; j++) {
            s = pb[j];
            for (i = 0; i < H; i++) {
                s += wpw[j * H + i] * wx[cu[b] * H + i];
            }
            pooled[j] = tanh(s);
        }
        for (j = 0; j < L; j++) {
            s = cb[j];
            for (i = 0; i < H; i++) {
                s += wcw[j * H + i] * pooled[i];
            }
            relerr_add(&e, out[b * L + j], s);
        }
    }

    d = relerr(&e);
    snprintf(shape, sizeof(shape), "B %zu H %zu labels %zu", B, H, L);
    report(c, "seq_cls_head", shape, "|d|/|r|", d, 1e-4, d <= 1e-4,
           e.nonfinite, rc2 == 0 && memcmp(out, out2, B * L * 4) == 0,
           rc || rc2 ? err : NULL);

    free(wx); free(wpw); free(wcw); free(x); free(pw); free(cw); free(pb);
    free(cb); free(pooled); free(out); free(out2);
}

static void
check_gemm(check_t *c, const char *what, size_t T, size_t N, size_t K)
{
    size_t     i, j, k;
    double    *wx, *ww, *wb, r, d;
    uint16_t  *x, *w, *b, *y, *y2;
    char       err[512], shape[64];
    relerr_t   e = { 0, 0, 0 };
    int        rc, rc2 = -1;
    double     tol = c->dtype == AISERVE_GPU_BF16 ? 8e-3 : 1e-3;

    wx = malloc(T * K * sizeof(double));
    ww = malloc(N * K * sizeof(double));
    wb = malloc(N * sizeof(double));
    x = rand16(c, T * K, 0.0, 1.0, wx);
    w = rand16(c, N * K, 0.0, 0.05, ww);
    b = rand16(c, N, 0.0, 0.1, wb);
    y = poisoned16(c, T * N);
    y2 = poisoned16(c, T * N);

    rc = c->be->gemm_bias(c->dtype, T, N, K, x, w, b, y, err, sizeof(err));
    if (rc == 0) {
        rc2 = c->be->gemm_bias(c->dtype, T, N, K, x, w, b, y2, err,
                               sizeof(err));
    }

    for (i = 0; rc == 0 && i < T; i++) {
        for (j = 0; j < N; j++) {
            r = wb[j];
            for (k = 0; k < K; k++) {
                r += wx[i * K + k] * ww[j * K + k];
            }
            relerr_add(&e, w16(c, y[i * N + j]), r);
        }
    }

    d = relerr(&e);
    snprintf(shape, sizeof(shape), "%s m %zu n %zu k %zu", what, N, T, K);
    report(c, "gemm_bias", shape, "|d|/|r|", d, tol, d <= tol, e.nonfinite,
           rc2 == 0 && memcmp(y, y2, T * N * 2) == 0,
           rc || rc2 ? err : NULL);

    free(wx); free(ww); free(wb); free(x); free(w); free(b); free(y);
    free(y2);
}


static const aiserve_gpu_backend_t *
load(const char *lib, int device, int quiet)
{
    void                        *so;
    aiserve_gpu_backend_get_pt   get;
    const aiserve_gpu_backend_t *be;
    char                         info[512], err[512];

    so = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (so == NULL) {
        fprintf(stderr, "aiserve-gpucheck: cannot load the GPU backend: "
                "%s\n", dlerror());
        return NULL;
    }

    get = (aiserve_gpu_backend_get_pt) dlsym(so, AISERVE_GPU_SYMBOL);
    be = get != NULL ? get(AISERVE_GPU_ABI) : NULL;
    if (be == NULL) {
        fprintf(stderr, "aiserve-gpucheck: \"%s\" is not an aiserve GPU "
                "backend of ABI %d\n", lib, AISERVE_GPU_ABI);
        return NULL;
    }

    if (be->probe(device, info, sizeof(info), err, sizeof(err)) != 0) {
        fprintf(stderr, "aiserve-gpucheck: no usable GPU: %s (%s)\n", err,
                be->version);
        return NULL;
    }

    if (!quiet) {
        printf("%s (%s, %s)\n", info, be->version, lib);
    } else {
        printf("# %s (%s)\n", info, be->version);
    }
    return be;
}


static int
cmd_kernels(const aiserve_gpu_backend_t *be, aiserve_gpu_dtype_e dtype,
    int quick)
{
    static const size_t  lens[] = { 1, 2, 63, 64, 65, 127, 128, 129, 511,
                                    512 };
    static const size_t  short_lens[] = { 1, 2, 63, 64, 65, 130 };
    check_t              c = { be, dtype, quick, 0, 0 };
    size_t               T_gemm[] = { 1, 77, quick ? 128 : 512 };
    size_t               i, how;

    check_embed_ln(&c, 257, 384);
    check_embed_ln(&c, 257, 768);
    check_embed_ln(&c, 33, 1000);
    check_residual_ln(&c, 257, 384, 0);
    check_residual_ln(&c, 257, 768, 1);
    check_gelu(&c, (size_t) 257 * 1536 + 3);

    check_attention(&c, 32, quick ? short_lens : lens,
                    quick ? 6 : sizeof(lens) / sizeof(lens[0]));
    check_attention(&c, 64, quick ? short_lens : lens,
                    quick ? 6 : sizeof(lens) / sizeof(lens[0]));

    for (how = 0; how < 3; how++) {
        check_pool(&c, (aiserve_gpu_pool_e) how, 0);
        check_pool(&c, (aiserve_gpu_pool_e) how, 1);
    }

    check_seq_cls_head(&c, 384, 2);
    check_seq_cls_head(&c, 768, 77);

    for (i = 0; i < 3; i++) {
        check_gemm(&c, "minilm qkv", T_gemm[i], 3 * 384, 384);
        check_gemm(&c, "minilm ffn2", T_gemm[i], 384, 1536);
        check_gemm(&c, "bert qkv", T_gemm[i], 3 * 768, 768);
        check_gemm(&c, "bert out", T_gemm[i], 768, 768);
        check_gemm(&c, "bert ffn1", T_gemm[i], 3072, 768);
        check_gemm(&c, "bert ffn2", T_gemm[i], 768, 3072);
    }

    printf("kernels %s: %d passed, %d failed\n", dtype_name(&c), c.passed,
           c.failed);
    return c.failed ? 1 : 0;
}


static int
cmd_plan(int argc, char **argv)
{
    aiserve_gpu_workspace_t  w;
    size_t                   T = 16384, B = 64, H = 0, I = 0, L = 0, *v;
    int                      i;
    char                     err[512];

    for (i = 0; i < argc; i++) {
        v = NULL;
        if (strcmp(argv[i], "--tokens") == 0) {
            v = &T;
        } else if (strcmp(argv[i], "--batch") == 0) {
            v = &B;
        } else if (strcmp(argv[i], "--hidden-size") == 0) {
            v = &H;
        } else if (strcmp(argv[i], "--intermediate-size") == 0) {
            v = &I;
        } else if (strcmp(argv[i], "--num-labels") == 0) {
            v = &L;
        }
        if (v == NULL || i + 1 == argc) {
            fprintf(stderr, "aiserve-gpucheck: plan: unknown option or no "
                    "value: %s\n", argv[i]);
            return 2;
        }
        *v = strtoul(argv[++i], NULL, 10);
    }

    if (aiserve_gpu_workspace_plan(&w, T, B, H, I, L, 2, err, sizeof(err))
        != 0)
    {
        fprintf(stderr, "aiserve-gpucheck: %s\n", err);
        return 2;
    }

    printf("hidden_size %zu, intermediate_size %zu, %zu labels a token; "
           "lane of %zu tokens, %zu sequences, fp16\n", H, I, L, T, B);
    printf("%-16s %14s\n", "buffer", "offset");
    printf("%-16s %14zu\n%-16s %14zu\n%-16s %14zu\n%-16s %14zu\n"
           "%-16s %14zu\n%-16s %14zu\n%-16s %14zu\n%-16s %14zu\n"
           "%-16s %14zu\n%-16s %14zu\n%-16s %14zu\n%-16s %14zu\n"
           "%-16s %14zu\n%-16s %14zu\n",
           "x", w.x, "ctx", w.ctx, "tmp", w.tmp, "qkv", w.qkv, "f", w.f,
           "input_ids", w.input_ids, "token_type_ids", w.token_type_ids,
           "position_ids", w.position_ids, "cu_seqlens", w.cu_seqlens,
           "work_seq", w.work_seq, "work_q", w.work_q, "pooled", w.pooled,
           "token_logits", w.token_logits, "gemm_workspace", w.gemm_ws);
    printf("activations %zu bytes (%zu a token), total %zu bytes (%.1f "
           "MiB)\n", w.activation_bytes, w.activation_bytes / T, w.total,
           (double) w.total / 1048576.0);

    return 0;
}


int
main(int argc, char **argv)
{
    const aiserve_gpu_backend_t *be;
    const char                  *lib = "build/" AISERVE_GPU_LIBRARY;
    aiserve_gpu_dtype_e          dtype = AISERVE_GPU_FP16;
    unsigned long long           seed;
    int                          i, device = 0, quick = 0;

    if (argc < 2 || strcmp(argv[1], "-h") == 0
        || strcmp(argv[1], "--help") == 0)
    {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }

    if (strcmp(argv[1], "plan") == 0) {
        return cmd_plan(argc - 2, argv + 2);
    }

    seed = (unsigned long long) time(NULL) ^ ((unsigned long long) getpid()
                                              << 32);

    for (i = 2; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--lib") == 0) {
            lib = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--device") == 0) {
            device = atoi(argv[++i]);
        } else if (i + 1 < argc && strcmp(argv[i], "--seed") == 0) {
            seed = strtoull(argv[++i], NULL, 0);
        } else if (i + 1 < argc && strcmp(argv[i], "--dtype") == 0) {
            i++;
            if (strcmp(argv[i], "bf16") == 0) {
                dtype = AISERVE_GPU_BF16;
            } else if (strcmp(argv[i], "fp16") != 0) {
                fprintf(stderr, "aiserve-gpucheck: --dtype fp16 or bf16\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else {
            fprintf(stderr, "aiserve-gpucheck: unknown option %s\n",
                    argv[i]);
            return 2;
        }
    }

    if (strcmp(argv[1], "probe") == 0) {
        return load(lib, device, 0) != NULL ? 0 : 2;
    }

    if (strcmp(argv[1], "kernels") == 0) {
        be = load(lib, device, 1);
        if (be == NULL) {
            return 2;
        }
        rng_state = seed;
        printf("# seed %llu\n", seed);
        return cmd_kernels(be, dtype, quick);
    }

    fprintf(stderr, "aiserve-gpucheck: unknown command \"%s\" (make-model, "
            "parity, forktest and bench need the GPU forward pass, which "
            "is not built yet)\n", argv[1]);
    return 2;
}
