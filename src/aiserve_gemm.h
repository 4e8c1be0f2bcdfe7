/*
 * aiserve prepacked matrix products: C = A W^T (+ bias) for the
 * nn.Linear weights of a BERT encoder, through oneDNN's matmul
 * (Debian's libdnnl, chosen by measurement: BENCHMARKS.md "BLAS") with W
 * reordered once, at load, into the blocked layout its kernels stream,
 * and the bias added by it.  OpenBLAS (aiserve_blas.h)
 * packs both operands and zeroes C on every call instead: about 9% of a
 * 32 x 128 MiniLM pass (perf), and a 16-token product ran at 100 GFLOP/s
 * a thread against oneDNN's 250.
 *
 * oneDNN runs a product in the calling thread unless told otherwise: the
 * encoder parallelises over its own thread team (aiserve_team.h) for many
 * rows, and lets oneDNN's OpenMP team split a product of few rows; the
 * OpenMP runtime is held to one thread at load, so that it starts no
 * threads in the nginx master before fork() (DESIGN.md's trap).  Every
 * function may run concurrently in several threads on the same packed
 * weight.
 */
#ifndef AISERVE_GEMM_H
#define AISERVE_GEMM_H

#include <stddef.h>


/* The number format of a product's weights and inputs (its accumulation
 * and output are fp32 in every case).  AUTO is a request only
 * (aiserve_model_load_dtype()): bf16 where it is safe, else fp32. */
typedef enum {
    AISERVE_DTYPE_FP32 = 0,
    AISERVE_DTYPE_BF16,
    AISERVE_DTYPE_AUTO
} aiserve_dtype_e;

/* "fp32", "bf16", "auto" */
const char *aiserve_dtype_name(aiserve_dtype_e dtype);

/* How one [n, k] weight is laid out packed; from aiserve_gemm_layout(). */
typedef struct {
    size_t           n, k;
    size_t           bytes;   /* of the packed copy */
    aiserve_dtype_e  dtype;   /* of the packed copy: FP32 or BF16 */
    void            *md;      /* oneDNN's memory descriptor (opaque) */
} aiserve_gemm_layout_t;

/* A packed weight: its layout and its data (aiserve_gemm_pack()). */
typedef struct {
    aiserve_gemm_layout_t   layout;
    const void             *data;     /* fp32 or bf16, as layout.dtype */
} aiserve_gemm_w_t;


/*
 * Asks oneDNN for the layout it wants for W [n, k] (a torch nn.Linear
 * weight: [out_features, in_features]) in C = A W^T, A of any number of
 * rows (the layout does not depend on it).  Returns 0, or -1 with ERR
 * (oneDNN's status named) and nothing to free.
 */
int aiserve_gemm_layout(size_t n, size_t k, aiserve_gemm_layout_t *layout,
    char *err, size_t err_len);

/*
 * aiserve_gemm_layout() for a weight kept in DTYPE (FP32 or BF16): bf16
 * products read A rounded to bf16 (round to nearest even, as torch's
 * float32 -> bfloat16 conversion), multiply in bf16 and accumulate and
 * write C in fp32 (oneDNN's matmul with bf16 source and weights, f32
 * destination; its avx512_core_bf16 or avx512_core_amx kernels).  A bf16
 * weight takes half the bytes of an fp32 one.  Ask only where
 * aiserve_gemm_bf16_native() is 1: elsewhere oneDNN emulates bf16 slowly.
 */
int aiserve_gemm_layout_dtype(size_t n, size_t k, aiserve_dtype_e dtype,
    aiserve_gemm_layout_t *layout, char *err, size_t err_len);

/*
 * 1 when oneDNN runs bf16 products in hardware here: its effective ISA
 * (the CPU's, lowered by ONEDNN_MAX_CPU_ISA in the environment) has
 * AVX512-BF16 (avx512_core_bf16) or AMX (avx512_core_amx).  *ISA names
 * what it found ("AMX", "AVX512-BF16", or the fp32 ISA with neither).
 */
int aiserve_gemm_bf16_native(const char **isa);

/* Frees what aiserve_gemm_layout() allocated. */
void aiserve_gemm_layout_free(aiserve_gemm_layout_t *layout);

/*
 * Reorders W [n, k] (row-major, n rows of k floats) into DST, 64-byte
 * aligned and layout->bytes long, and fills *PACKED to point at it.
 * Returns 0, or -1 with ERR.
 */
int aiserve_gemm_pack(const aiserve_gemm_layout_t *layout, const float *w,
    void *dst, aiserve_gemm_w_t *packed, char *err, size_t err_len);

/*
 * C[m, n] = A[m, k] W^T (+ bias[n] where BIAS is not NULL), A rows lda
 * floats apart, C rows ldc apart.  A and C are fp32 for every weight:
 * with a bf16 weight, A's rows are rounded to bf16 into a buffer of the
 * calling thread first (m k 2 bytes, kept for its next products).  Activations are the caller's
 * (aiserve_bias_act()): one implementation of GELU for every path, and
 * oneDNN's GELU post-op made the FFN product 8% slower.  THREADS: 1 runs
 * the product in the calling thread (the encoder's team splits the
 * rows); more lets oneDNN split it over an OpenMP team of that size,
 * which it starts on first use in the calling thread: for few rows, in
 * nginx workers only (never in the master, before fork()).  Returns 0,
 * or -1 with ERR (oneDNN could not create or run the product: out of
 * memory, or a shape it refuses).
 */
int aiserve_gemm_packed(size_t m, const float *a, size_t lda,
    const aiserve_gemm_w_t *w, const float *bias, float *c, size_t ldc,
    int threads, char *err, size_t err_len);

/*
 * C[m, n] = alpha op(A) op(B) + beta C, row-major with leading
 * dimensions in floats, op(X) = X^T where TRANS_X is non-zero (the
 * arguments of aiserve_gemm() in aiserve_blas.h), through oneDNN's
 * dnnl_sgemm() in the calling thread only (its OpenMP team is set to 1
 * first): for weights that change every step, which a packed copy would
 * have to follow.  Returns 0, or -1 where oneDNN refuses the arguments.
 */
int aiserve_gemm_plain(int trans_a, int trans_b, size_t m, size_t n,
    size_t k, float alpha, const float *a, size_t lda, const float *b,
    size_t ldb, float beta, float *c, size_t ldc);

/*
 * How many oneDNN objects (a stream, a cache of products) threads left
 * at their exit and no living thread has destroyed yet: a thread's key
 * destructor only hands them over, the next thread to make its own
 * destroys them (see aiserve_gemm.c: why a destructor must not call
 * oneDNN under nginx).  For tests and diagnostics.
 */
size_t aiserve_gemm_orphans(void);

/*
 * aiserve_gemm_plain()'s product in bf16 with fp32 accumulation, as
 * torch.autocast("cpu", dtype=torch.bfloat16) runs a Linear or a matmul:
 * A and B rounded to bf16 (round to nearest even) into buffers of the
 * calling thread, multiplied by oneDNN's matmul (bf16 sources, fp32
 * destination; ALPHA its output scale, BETA its sum post-op, both
 * applied in fp32), in the calling thread.  For the training engine's
 * products and their gradients, whose operands change every step.  Call
 * only where aiserve_gemm_bf16_native() is 1.  Returns 0, or -1 where
 * oneDNN refuses the product or memory runs out (C untouched or
 * partly written).
 */
int aiserve_gemm_bf16(int trans_a, int trans_b, size_t m, size_t n,
    size_t k, float alpha, const float *a, size_t lda, const float *b,
    size_t ldb, float beta, float *c, size_t ldc);

#endif /* AISERVE_GEMM_H */
