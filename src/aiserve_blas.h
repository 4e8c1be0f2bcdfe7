/*
 * aiserve matrix products: the BLAS (BLIS, pthread flavour) behind two
 * row-major sgemm shapes.  The thread count is passed per call (a BLIS
 * runtime object), so no global BLAS state is set and no BLAS thread is
 * started before the first product.
 */
#ifndef AISERVE_BLAS_H
#define AISERVE_BLAS_H

#include <stddef.h>

/*
 * C[m, n] = alpha A[m, k] B^T + beta C, where B is given as n rows of k
 * (a torch nn.Linear weight: [out_features, in_features]).  Leading
 * dimensions in floats.
 */
void aiserve_gemm_nt(size_t m, size_t n, size_t k, float alpha,
    const float *a, size_t lda, const float *b, size_t ldb, float beta,
    float *c, size_t ldc, int nthreads);

/* C[m, n] = A[m, k] B[k, n]. */
void aiserve_gemm_nn(size_t m, size_t n, size_t k, const float *a,
    size_t lda, const float *b, size_t ldb, float *c, size_t ldc,
    int nthreads);

#endif /* AISERVE_BLAS_H */
