/*
 * bench-train-gemm: the training engine's matrix products (aiserve_gemm()
 * in src/aiserve_blas.c) on OpenBLAS and on oneDNN, shape by shape, in
 * the same run: all-MiniLM-L6-v2's projections and their gradients for a
 * Banking77 batch of 32 sequences (544 tokens, 272 rows a thread on 2
 * threads), the pooler and classifier, and attention of one head over
 * sequences of 32 to 128 tokens.  Times are the calling thread's CPU time
 * per call (the median of 9 rounds), so that a machine loaded by others
 * still compares the two libraries fairly.
 *
 *   bench-train-gemm
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cblas.h>

#include "aiserve_gemm.h"
#include "bench.h"

#define ROUNDS  9


static double
cpu_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}


int
main(int argc, char **argv)
{
    static const struct {
        const char  *what;
        int          ta, tb;
        size_t       m, n, k;
    } s[] = {
        { "QKV forward", 0, 1, 272, 1152, 384 },
        { "attention output forward", 0, 1, 272, 384, 384 },
        { "intermediate forward", 0, 1, 272, 1536, 384 },
        { "output forward", 0, 1, 272, 384, 1536 },
        { "QKV dW", 1, 0, 576, 384, 544 },
        { "attention output dW", 1, 0, 192, 384, 544 },
        { "intermediate dW", 1, 0, 768, 384, 544 },
        { "output dW", 1, 0, 192, 1536, 544 },
        { "QKV dx", 0, 0, 272, 384, 1152 },
        { "attention output dx", 0, 0, 272, 384, 384 },
        { "intermediate dx", 0, 0, 272, 384, 1536 },
        { "output dx", 0, 0, 272, 1536, 384 },
        { "pooler forward", 0, 1, 32, 384, 384 },
        { "pooler dW", 1, 0, 384, 384, 32 },
        { "classifier forward", 0, 1, 32, 77, 384 },
        { "classifier dx", 0, 0, 32, 384, 77 },
        { "scores, L 32", 0, 1, 32, 32, 32 },
        { "probs V, L 32", 0, 0, 32, 32, 32 },
        { "dV, L 32", 1, 0, 32, 32, 32 },
        { "scores, L 64", 0, 1, 64, 64, 32 },
        { "probs V, L 64", 0, 0, 64, 32, 64 },
        { "scores, L 128", 0, 1, 128, 128, 32 },
        { "probs V, L 128", 0, 0, 128, 32, 128 },
    };
    size_t   i, j, r, reps, lda, ldb, len = (size_t) 1 << 22;
    float   *a, *b, *c;
    double   to[ROUNDS], td[ROUNDS], t0;

    if (argc > 1) {
        fprintf(stderr, "usage: bench-train-gemm (no arguments; see the "
                "comment at the top of tools/bench-train-gemm.c)\n");
        return 2;
    }
    a = malloc(len * sizeof(float));
    b = malloc(len * sizeof(float));
    c = calloc(len, sizeof(float));
    if (a == NULL || b == NULL || c == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (i = 0; i < len; i++) {
        a[i] = (float) rand() / (float) RAND_MAX - 0.5f;
        b[i] = (float) rand() / (float) RAND_MAX - 0.5f;
    }
    openblas_set_num_threads(1);

    printf("| product | ta tb | m x n x k | OpenBLAS us | oneDNN us | "
           "OpenBLAS / oneDNN |\n|---|---|---|---:|---:|---:|\n");
    for (i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
        lda = s[i].ta ? s[i].m : s[i].k;
        ldb = s[i].tb ? s[i].k : s[i].n;
        reps = (double) s[i].m * s[i].n * s[i].k > 1e6 ? 5 : 2000;
        for (r = 0; r < ROUNDS; r++) {
            t0 = cpu_now();
            for (j = 0; j < reps; j++) {
                cblas_sgemm(CblasRowMajor,
                            s[i].ta ? CblasTrans : CblasNoTrans,
                            s[i].tb ? CblasTrans : CblasNoTrans,
                            (int) s[i].m, (int) s[i].n, (int) s[i].k, 1.f,
                            a, (int) lda, b, (int) ldb, 1.f, c,
                            (int) s[i].n);
            }
            to[r] = (cpu_now() - t0) / (double) reps * 1e6;
            t0 = cpu_now();
            for (j = 0; j < reps; j++) {
                if (aiserve_gemm_plain(s[i].ta, s[i].tb, s[i].m, s[i].n,
                                       s[i].k, 1.f, a, lda, b, ldb, 1.f, c,
                                       s[i].n) != 0)
                {
                    fprintf(stderr, "oneDNN refused %s\n", s[i].what);
                    return 1;
                }
            }
            td[r] = (cpu_now() - t0) / (double) reps * 1e6;
        }
        qsort(to, ROUNDS, sizeof(double), bench_cmp_double);
        qsort(td, ROUNDS, sizeof(double), bench_cmp_double);
        printf("| %s | %d %d | %zu x %zu x %zu | %.1f | %.1f | %.2f |\n",
               s[i].what, s[i].ta, s[i].tb, s[i].m, s[i].n, s[i].k,
               to[ROUNDS / 2], td[ROUNDS / 2],
               to[ROUNDS / 2] / td[ROUNDS / 2]);
    }
    free(a);
    free(b);
    free(c);
    return 0;
}
