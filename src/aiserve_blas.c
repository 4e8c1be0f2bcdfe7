/*
 * aiserve matrix products through cblas_sgemm, each call single-threaded
 * in the calling thread.
 *
 * Thread safety.  OpenBLAS built without threading (USE_THREAD=0, Debian's
 * libopenblas0-serial) hands out its packing buffers from a pool without
 * a lock: two threads inside sgemm at once can be given the same buffer
 * and corrupt each other's results (measured here: errors of 0.1-0.3 in
 * MiniLM embeddings under two threads).  Its pthread build locks the pool,
 * so the build links that one and sets OpenBLAS's own threads to 1: the
 * parallelism is the encoder's thread team.  Should the serial build be
 * linked anyway, every call takes a process-wide lock instead: correct,
 * but products no longer overlap.
 *
 * The pthread build starts its idle pool at library load (in nginx: the
 * master); OpenBLAS stops it in its pthread_atfork handler before every
 * fork(), and with one thread per call no worker ever starts it again.
 */
#include <pthread.h>

#include <cblas.h>

#include "aiserve_blas.h"
#include "aiserve_gemm.h"

/*
 * From this many multiply-adds (m n k) on, aiserve_gemm() goes through
 * oneDNN's sgemm (aiserve_gemm_plain()).  Measured per shape on this
 * machine's AMD EPYC (AVX-512) by tools/bench-train-gemm.c (thread CPU
 * time per call, BENCHMARKS.md "Training step"), OpenBLAS / oneDNN: 0.99
 * to 1.06 on MiniLM's forward projections, 1.10 to 1.18 on their two
 * gradients, 1.1 to 1.2 on the pooler; the two even near 100^3 (the
 * classifier, attention over 128 tokens); below that, attention of one
 * short sequence and head, OpenBLAS was faster, by up to 1.5x at 32^3,
 * where oneDNN's fixed cost per call dominates.
 */
#define AISERVE_GEMM_DNNL_MIN  1000000.0

static pthread_once_t   aiserve_blas_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t  aiserve_blas_lock = PTHREAD_MUTEX_INITIALIZER;
static int              aiserve_blas_serial;


static void
aiserve_blas_setup(void)
{
    /* 0: sequential build, 1: pthreads, 2: OpenMP */
    aiserve_blas_serial = openblas_get_parallel() == 0;
    openblas_set_num_threads(1);
}


static void
aiserve_sgemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, size_t m,
    size_t n, size_t k, float alpha, const float *a, size_t lda,
    const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    pthread_once(&aiserve_blas_once, aiserve_blas_setup);
    if (aiserve_blas_serial) {
        pthread_mutex_lock(&aiserve_blas_lock);
    }
    cblas_sgemm(CblasRowMajor, ta, tb, (int) m, (int) n, (int) k,
                alpha, a, (int) lda, b, (int) ldb, beta, c, (int) ldc);
    if (aiserve_blas_serial) {
        pthread_mutex_unlock(&aiserve_blas_lock);
    }
}


void
aiserve_gemm_nt(size_t m, size_t n, size_t k, float alpha, const float *a,
    size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    aiserve_sgemm(CblasNoTrans, CblasTrans, m, n, k, alpha, a, lda, b, ldb,
                  beta, c, ldc);
}


void
aiserve_gemm_nn(size_t m, size_t n, size_t k, const float *a, size_t lda,
    const float *b, size_t ldb, float *c, size_t ldc)
{
    aiserve_sgemm(CblasNoTrans, CblasNoTrans, m, n, k, 1.f, a, lda, b, ldb,
                  0.f, c, ldc);
}


void
aiserve_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k,
    float alpha, const float *a, size_t lda, const float *b, size_t ldb,
    float beta, float *c, size_t ldc)
{
    if ((double) m * (double) n * (double) k >= AISERVE_GEMM_DNNL_MIN
        && aiserve_gemm_plain(trans_a, trans_b, m, n, k, alpha, a, lda, b,
                              ldb, beta, c, ldc) == 0)
    {
        return;
    }
    aiserve_sgemm(trans_a ? CblasTrans : CblasNoTrans,
                  trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
                  b, ldb, beta, c, ldc);
}
