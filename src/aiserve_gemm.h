/*
 * aiserve prepacked matrix products: C = A W^T (+ bias, + activation) for
 * the nn.Linear weights of a BERT encoder, with W packed once at load into
 * panels the own AVX-512 microkernel streams, so that no product packs or
 * zeroes anything per call (OpenBLAS does both on every call: about 9% of
 * a 32 x 128 MiniLM pass, perf; BENCHMARKS.md "Encoder").
 *
 * Used where the CPU has AVX-512F (aiserve_gemm_packed_ok()); elsewhere
 * the encoder keeps the OpenBLAS path (aiserve_blas.h).  Every function
 * may run concurrently in several threads on the same packed weight.
 */
#ifndef AISERVE_GEMM_H
#define AISERVE_GEMM_H

#include <stddef.h>

#include "aiserve_ops.h"

/* Output columns per packed panel: three AVX-512 vectors. */
#define AISERVE_GEMM_NR  48

/* Rows of C per microkernel tile. */
#define AISERVE_GEMM_MR  8


/* 1 where the running CPU has AVX-512F, so the packed kernel can run. */
int aiserve_gemm_packed_ok(void);

/* Floats a packed copy of an [n, k] weight takes: ceil(n / 48) panels of
 * k x 48 (the last panel zero-padded). */
size_t aiserve_gemm_packed_size(size_t n, size_t k);

/*
 * Packs W [n, k] (row-major, a torch nn.Linear weight: [out_features,
 * in_features]) into DST, aiserve_gemm_packed_size(n, k) floats, 64-byte
 * aligned: panel p holds W[48p .. 48p + 47][0 .. k-1] transposed, k rows
 * of 48 floats.
 */
void aiserve_gemm_pack(const float *w, size_t n, size_t k, float *dst);

/*
 * C[i, j] = sum_k A[i, k] W[j, k], for rows i in [0, m) and the columns of
 * panels [p0, p1) (j in [48 p0, min(48 p1, n))), A rows lda floats apart,
 * C rows ldc apart.  Then, on each finished 8 x 48 tile while it is in
 * L1: nothing (bias NULL), + bias[j] (act < 0), or act(x + bias[j])
 * through aiserve_bias_act().  The sum over k runs in order, one fused
 * multiply-add per term, for every row alike: a row's result does not
 * depend on the other rows of the batch or on the thread split.
 */
void aiserve_gemm_packed(size_t m, size_t n, size_t k, const float *a,
    size_t lda, const float *packed, size_t p0, size_t p1,
    const float *bias, int act, float *c, size_t ldc);

#endif /* AISERVE_GEMM_H */
