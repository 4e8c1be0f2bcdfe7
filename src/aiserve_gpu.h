/*
 * aiserve GPU backend: the C interface of libaiserve_gpu.so (the .cu
 * files of kernels/, built by `make gpu`).  The object exports one symbol,
 * aiserve_gpu_backend_get(); everything else is reached through the table
 * it returns, so the module and tools/aiserve-gpucheck dlopen() it and link
 * no CUDA themselves (shared/GPU.md, rule 2).  Plain C, no CUDA headers.
 *
 * Layout (shared/GPU.md section 2): a packed, padding-free batch of T
 * tokens in B sequences; activations row-major [T, C] in fp16 or bf16
 * (stored here as their 16-bit patterns), LayerNorm weights and every
 * reduction fp32; cu_seqlens[B + 1] the first token of each sequence
 * (cu_seqlens[0] = 0, cu_seqlens[B] = T).
 *
 * The check entries (embed_ln ... seq_cls_head) take host arrays: they copy
 * them to the device, run one kernel, copy the result back and free what
 * they allocated.  They exist for the device check (tools/gpucheck.sh),
 * which compares them with host fp64 oracles.  Each returns 0, or -1 with
 * a message in ERR (the CUDA or cuBLASLt error string).
 */
#ifndef AISERVE_GPU_H
#define AISERVE_GPU_H

#include <stddef.h>
#include <stdint.h>

#define AISERVE_GPU_ABI      1
#define AISERVE_GPU_SYMBOL   "aiserve_gpu_backend_get"
#define AISERVE_GPU_LIBRARY  "libaiserve_gpu.so"

/* The 16-bit formats of activations and weights. */
typedef enum {
    AISERVE_GPU_FP16 = 0,
    AISERVE_GPU_BF16 = 1
} aiserve_gpu_dtype_e;

/* Pooling of hidden states [T, H] into one fp32 row per sequence. */
typedef enum {
    AISERVE_GPU_POOL_CLS = 0,    /* the row at cu_seqlens[b] */
    AISERVE_GPU_POOL_MEAN = 1,   /* mean over the sequence's rows */
    AISERVE_GPU_POOL_MAX = 2     /* elementwise max over them */
} aiserve_gpu_pool_e;

typedef struct {
    uint32_t     abi;            /* AISERVE_GPU_ABI */
    const char  *version;        /* "aiserve-gpu <ABI> cuda <runtime>" */

    /*
     * Finds the driver and device DEVICE: dlopen("libcuda.so.1"), the
     * driver and runtime versions, the device count and DEVICE's compute
     * capability (8.0 or newer).  INFO gets one line (name, sm, memory,
     * driver).  Errors: "CUDA driver not found (dlerror)", the runtime's
     * error string, "device N of M", "compute capability X.Y < 8.0".
     * Initialises CUDA in the calling process: never call it in a
     * process that forks workers afterwards.
     */
    int (*probe)(int device, char *info, size_t info_len, char *err,
        size_t err_len);

    /*
     * embed_ln (kernels/embed.cu): X[t] = LayerNorm(word[input_ids[t]] +
     * pos[position_ids[t]] + type[token_type_ids[t]]) * gamma + beta, sums
     * and statistics in fp32, X stored in DTYPE.  word [vocab, H], pos
     * [n_pos, H], type [n_type, H] in DTYPE; ids are checked on the host
     * against vocab, n_pos, n_type (error naming the token).
     * H <= 1024.  BERT's BertEmbeddings (transformers).
     */
    int (*embed_ln)(aiserve_gpu_dtype_e dtype, size_t T, size_t H,
        const int32_t *input_ids, const int32_t *token_type_ids,
        const int32_t *position_ids, const uint16_t *word, size_t vocab,
        const uint16_t *pos, size_t n_pos, const uint16_t *type,
        size_t n_type, const float *gamma, const float *beta, float eps,
        uint16_t *x, char *err, size_t err_len);

    /*
     * residual_ln (kernels/layernorm.cu): X[t] = LayerNorm(tmp[t] +
     * bias + X[t]) * gamma + beta, in place on X; BIAS may be NULL (the
     * product's epilogue added it).  BertSelfOutput / BertOutput.
     * H <= 1024.
     */
    int (*residual_ln)(aiserve_gpu_dtype_e dtype, size_t T, size_t H,
        const uint16_t *tmp, const float *bias, const float *gamma,
        const float *beta, float eps, uint16_t *x, char *err,
        size_t err_len);

    /* gelu_erf (kernels/activation.cu): F = F * 0.5 * (1 + erf(F / sqrt 2))
     * in place, N elements, in fp32 (transformers' "gelu"). */
    int (*gelu_erf)(aiserve_gpu_dtype_e dtype, size_t n, uint16_t *f,
        char *err, size_t err_len);

    /*
     * attention_ref (kernels/attention.cu): for each token t of sequence
     * b and head h, CTX[t, h*hd .. ] = softmax(scale * q kᵀ) V over the
     * keys of sequence b only, with q, k, v read from QKV [T, 3H] (q at
     * column h*hd, k at H + h*hd, v at 2H + h*hd) and CTX [T, H]; fp32
     * arithmetic, online softmax (no score buffer).  hd <= 128,
     * hd % 32 == 0.  BertSelfAttention without a mask (packed batches).
     */
    int (*attention_ref)(aiserve_gpu_dtype_e dtype, size_t T, size_t B,
        const int32_t *cu_seqlens, size_t n_heads, size_t head_dim,
        float scale, const uint16_t *qkv, uint16_t *ctx, char *err,
        size_t err_len);

    /*
     * pool (kernels/pooling.cu): OUT[b] (fp32, [B, H]) = POOL of X's rows
     * cu_seqlens[b] .. cu_seqlens[b+1]-1, then divided by
     * max(||out||, 1e-12) when NORMALIZE (sentence-transformers' Pooling
     * and Normalize).  Empty sequences are an error.
     */
    int (*pool)(aiserve_gpu_dtype_e dtype, aiserve_gpu_pool_e how,
        int normalize, size_t T, size_t B, size_t H,
        const int32_t *cu_seqlens, const uint16_t *x, float *out,
        char *err, size_t err_len);

    /*
     * gemm_bias (kernels/gemm.cu, cuBLASLt): row-major Y[T, N] = X[T, K]
     * W[N, K]ᵀ + b[N], as column-major m = N, n = T, k = K, A = W (op T),
     * B = X, EPILOGUE_BIAS, fp32 compute; Y and b in DTYPE (cuBLASLt
     * wants the bias in D's type).  nn.Linear.
     */
    int (*gemm_bias)(aiserve_gpu_dtype_e dtype, size_t T, size_t N,
        size_t K, const uint16_t *x, const uint16_t *w, const uint16_t *b,
        uint16_t *y, char *err, size_t err_len);

    /*
     * seq_cls_head (kernels/heads.cu): for each sequence b, pooled =
     * tanh(pooler_w [H, H] x[cu_seqlens[b]] + pooler_b) and LOGITS[b]
     * (fp32, [B, L]) = cls_w [L, H] pooled + cls_b, in fp32 on DTYPE
     * weights and hidden states (BertPooler, then
     * BertForSequenceClassification's classifier).  H <= 1024.
     */
    int (*seq_cls_head)(aiserve_gpu_dtype_e dtype, size_t T, size_t B,
        size_t H, size_t L, const int32_t *cu_seqlens, const uint16_t *x,
        const uint16_t *pooler_w, const float *pooler_b,
        const uint16_t *cls_w, const float *cls_b, float *logits,
        char *err, size_t err_len);
} aiserve_gpu_backend_t;

/* Returns the table for ABI, or NULL where the object was built for
 * another ABI (the caller says so and names both). */
typedef const aiserve_gpu_backend_t *(*aiserve_gpu_backend_get_pt)(
    uint32_t abi);

#endif /* AISERVE_GPU_H */
