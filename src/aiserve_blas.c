/*
 * aiserve matrix products through BLIS's typed API (bli_sgemm_ex) with a
 * per-call runtime object carrying the thread count.
 */
/* blis.h defines many static helpers this file does not use, some of
 * which trip -Wextra; the warnings are BLIS's, not ours. */
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wtype-limits"
#include <blis.h>

#include "aiserve_blas.h"


void
aiserve_gemm_nt(size_t m, size_t n, size_t k, float alpha, const float *a,
    size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc,
    int nthreads)
{
    rntm_t  rntm = BLIS_RNTM_INITIALIZER;

    bli_rntm_set_num_threads(nthreads, &rntm);
    bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE, (dim_t) m, (dim_t) n,
                 (dim_t) k, &alpha, (float *) a, (inc_t) lda, 1,
                 (float *) b, (inc_t) ldb, 1, &beta, c, (inc_t) ldc, 1,
                 NULL, &rntm);
}


void
aiserve_gemm_nn(size_t m, size_t n, size_t k, const float *a, size_t lda,
    const float *b, size_t ldb, float *c, size_t ldc, int nthreads)
{
    rntm_t  rntm = BLIS_RNTM_INITIALIZER;
    float   one = 1.f, zero = 0.f;

    bli_rntm_set_num_threads(nthreads, &rntm);
    bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t) m, (dim_t) n,
                 (dim_t) k, &one, (float *) a, (inc_t) lda, 1, (float *) b,
                 (inc_t) ldb, 1, &zero, c, (inc_t) ldc, 1, NULL, &rntm);
}
