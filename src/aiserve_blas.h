/*
 * aiserve matrix products: row-major sgemm through OpenBLAS's CBLAS
 * interface (pthread build, its own threads set to 1; see aiserve_blas.c
 * for why, and BENCHMARKS.md for the measurement that chose OpenBLAS).
 * Every call runs in the calling thread and may run concurrently with
 * others: the encoder parallelises over its own thread team
 * (aiserve_team.h).
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
    float *c, size_t ldc);

/* C[m, n] = A[m, k] B[k, n]. */
void aiserve_gemm_nn(size_t m, size_t n, size_t k, const float *a,
    size_t lda, const float *b, size_t ldb, float *c, size_t ldc);

/*
 * C[m, n] = alpha op(A) op(B) + beta C, op(X) = X^T where TRANS_X is
 * non-zero: A is stored [m, k] (or [k, m] transposed), B [k, n] (or
 * [n, k]), all row-major with leading dimensions in floats.  The general
 * form the training engine needs (dW = dY^T X accumulated with beta 1).
 * Products of 10^6 multiply-adds and more run through oneDNN's sgemm,
 * smaller ones through OpenBLAS: the faster of the two for each, as
 * measured by tools/bench-train-gemm.c.
 */
void aiserve_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k,
    float alpha, const float *a, size_t lda, const float *b, size_t ldb,
    float beta, float *c, size_t ldc);

#endif /* AISERVE_BLAS_H */
