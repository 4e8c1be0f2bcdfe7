/*
 * What a thread keeps of oneDNN outlives it until a living thread
 * destroys it (aiserve_gemm.c): a thread that ran a product and exited
 * leaves its stream and its cache of products to the list of orphans,
 * without calling oneDNN from its key destructors, and the next thread
 * to make its own state destroys them.  The products stay right on every
 * thread.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "tap.h"
#include "aiserve_gemm.h"

#define M  9
#define N  13
#define K  21

static float                  a[M * K], w[N * K], bias[N], want[M * N];
static aiserve_gemm_w_t       packed;


/* C = A W^T + bias on the calling thread; the worst |difference|, or -1. */
static double
product(void)
{
    float   c[M * N];
    char    err[256];
    double  worst = 0, d;
    size_t  i;

    if (aiserve_gemm_packed(M, a, K, &packed, bias, c, N, 1, err,
                            sizeof(err)) != 0)
    {
        tap_diag("aiserve_gemm_packed: %s", err);
        return -1;
    }
    for (i = 0; i < M * N; i++) {
        d = fabs((double) c[i] - want[i]);
        worst = d > worst ? d : worst;
    }
    return worst;
}


static void *
run(void *arg)
{
    *(double *) arg = product();
    return NULL;
}


int
main(void)
{
    aiserve_gemm_layout_t  layout;
    pthread_t              t;
    double                 worst = -1, d;
    size_t                 i, j, p;
    void                  *mem;
    char                   err[256] = "";

    srand(7);
    for (i = 0; i < M * K; i++) {
        a[i] = (float) rand() / (float) RAND_MAX - 0.5f;
    }
    for (i = 0; i < N * K; i++) {
        w[i] = (float) rand() / (float) RAND_MAX - 0.5f;
    }
    for (j = 0; j < N; j++) {
        bias[j] = (float) j / 5;
    }
    for (i = 0; i < M; i++) {
        for (j = 0; j < N; j++) {
            d = bias[j];
            for (p = 0; p < K; p++) {
                d += (double) a[i * K + p] * w[j * K + p];
            }
            want[i * N + j] = (float) d;
        }
    }
    mem = NULL;
    if (!tap_ok(aiserve_gemm_layout(N, K, &layout, err, sizeof(err)) == 0
                && (mem = aligned_alloc(64, (layout.bytes + 63) / 64 * 64))
                   != NULL
                && aiserve_gemm_pack(&layout, w, mem, &packed, err,
                                     sizeof(err)) == 0,
                "an fp32 [%d, %d] weight packed%s%s", N, K,
                err[0] ? ": " : "", err))
    {
        return tap_done();
    }

    tap_ok(aiserve_gemm_orphans() == 0, "no orphans before any thread ran");

    if (pthread_create(&t, NULL, run, &worst) != 0
        || pthread_join(t, NULL) != 0)
    {
        worst = -1;
    }
    tap_ok(worst >= 0 && worst < 1e-4,
           "a thread's product is right (worst |diff| %.2g)", worst);
    tap_ok(aiserve_gemm_orphans() == 2,
           "the exited thread left its stream and its cache of products "
           "to the orphans, its destructors called no oneDNN (%zu)",
           aiserve_gemm_orphans());

    worst = product();
    tap_ok(worst >= 0 && worst < 1e-4,
           "the main thread's product is right (worst |diff| %.2g)", worst);
    tap_ok(aiserve_gemm_orphans() == 0,
           "the main thread, making its own state, destroyed the orphans "
           "(%zu left)", aiserve_gemm_orphans());

    for (i = 0; i < 3; i++) {
        worst = -1;
        if (pthread_create(&t, NULL, run, &worst) != 0
            || pthread_join(t, NULL) != 0 || worst < 0 || worst >= 1e-4)
        {
            break;
        }
    }
    tap_ok(i == 3 && aiserve_gemm_orphans() == 2,
           "threads in turn: each destroys what the one before left, and "
           "leaves its own (%zu orphans)", aiserve_gemm_orphans());

    free(mem);
    aiserve_gemm_layout_free(&layout);
    return tap_done();
}
