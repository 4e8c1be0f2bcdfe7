/*
 * Shared by kernels/ (.cu files): the 16-bit element types, warp and block
 * reductions in fp32, the device-buffer helpers of the check entries.
 */
#ifndef AISERVE_GPU_COMMON_CUH
#define AISERVE_GPU_COMMON_CUH

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include "aiserve_gpu.h"

/* Most elements one lane keeps in registers for a row of H <= 1024. */
#define AISERVE_GPU_MAX_H      1024
#define AISERVE_GPU_ROW_REGS   (AISERVE_GPU_MAX_H / 32)

__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ __half from_f<__half>(float v)
{
    return __float2half_rn(v);
}
template <> __device__ __forceinline__ __nv_bfloat16
from_f<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float
warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

__device__ __forceinline__ float
warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

/* One warp's LayerNorm of the row it holds (V[j] is column j*32 + lane,
 * valid below H): two passes over registers, mean then variance, as
 * BertLayerNorm (biased variance, eps inside the square root). */
__device__ __forceinline__ void
warp_layer_norm(float *v, int H, float eps)
{
    float  sum = 0.0f, var = 0.0f, mean, d;
    int    lane = threadIdx.x & 31;

#pragma unroll
    for (int j = 0; j < AISERVE_GPU_ROW_REGS; j++) {
        if (j * 32 + lane < H) {
            sum += v[j];
        }
    }
    mean = warp_sum(sum) / (float) H;

#pragma unroll
    for (int j = 0; j < AISERVE_GPU_ROW_REGS; j++) {
        if (j * 32 + lane < H) {
            d = v[j] - mean;
            var += d * d;
        }
    }
    var = warp_sum(var) / (float) H;
    d = rsqrtf(var + eps);

#pragma unroll
    for (int j = 0; j < AISERVE_GPU_ROW_REGS; j++) {
        v[j] = (v[j] - mean) * d;
    }
}

/* Host side of the check entries. */

int aiserve_gpu_fail(char *err, size_t err_len, const char *what,
    cudaError_t e);

/* Device copies of host arrays, freed together by aiserve_gpu_free_all(). */
typedef struct {
    void    *p[16];
    int      n;
} aiserve_gpu_bufs_t;

int aiserve_gpu_upload(aiserve_gpu_bufs_t *b, void **dev, const void *host,
    size_t bytes, char *err, size_t err_len);
void aiserve_gpu_free_all(aiserve_gpu_bufs_t *b);

/* The check entries of the table (aiserve_gpu.h), one per kernels/ file. */
int aiserve_gpu_embed_ln(aiserve_gpu_dtype_e dtype, size_t T, size_t H,
    const int32_t *input_ids, const int32_t *token_type_ids,
    const int32_t *position_ids, const uint16_t *word, size_t vocab,
    const uint16_t *pos, size_t n_pos, const uint16_t *type, size_t n_type,
    const float *gamma, const float *beta, float eps, uint16_t *x,
    char *err, size_t err_len);
int aiserve_gpu_residual_ln(aiserve_gpu_dtype_e dtype, size_t T, size_t H,
    const uint16_t *tmp, const float *bias, const float *gamma,
    const float *beta, float eps, uint16_t *x, char *err, size_t err_len);
int aiserve_gpu_gelu_erf(aiserve_gpu_dtype_e dtype, size_t n, uint16_t *f,
    char *err, size_t err_len);
int aiserve_gpu_attention_ref(aiserve_gpu_dtype_e dtype, size_t T,
    size_t B, const int32_t *cu_seqlens, size_t n_heads, size_t head_dim,
    float scale, const uint16_t *qkv, uint16_t *ctx, char *err,
    size_t err_len);
int aiserve_gpu_pool(aiserve_gpu_dtype_e dtype, aiserve_gpu_pool_e how,
    int normalize, size_t T, size_t B, size_t H, const int32_t *cu_seqlens,
    const uint16_t *x, float *out, char *err, size_t err_len);
int aiserve_gpu_seq_cls_head(aiserve_gpu_dtype_e dtype, size_t T, size_t B,
    size_t H, size_t L, const int32_t *cu_seqlens, const uint16_t *x,
    const uint16_t *pooler_w, const float *pooler_b, const uint16_t *cls_w,
    const float *cls_b, float *logits, char *err, size_t err_len);
int aiserve_gpu_gemm_bias(aiserve_gpu_dtype_e dtype, size_t T, size_t N,
    size_t K, const uint16_t *x, const uint16_t *w, const uint16_t *b,
    uint16_t *y, char *err, size_t err_len);

/* cu_seqlens checked on the host: 0, increasing strictly, ending at T. */
int aiserve_gpu_check_seqlens(const int32_t *cu_seqlens, size_t B, size_t T,
    char *err, size_t err_len);

#endif /* AISERVE_GPU_COMMON_CUH */
