/*
 * aiserve matrix products through cblas_sgemm (single-threaded calls).
 */
#include <cblas.h>

#include "aiserve_blas.h"


void
aiserve_gemm_nt(size_t m, size_t n, size_t k, float alpha, const float *a,
    size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) m, (int) n,
                (int) k, alpha, a, (int) lda, b, (int) ldb, beta, c,
                (int) ldc);
}


void
aiserve_gemm_nn(size_t m, size_t n, size_t k, const float *a, size_t lda,
    const float *b, size_t ldb, float *c, size_t ldc)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) m, (int) n,
                (int) k, 1.f, a, (int) lda, b, (int) ldb, 0.f, c,
                (int) ldc);
}
