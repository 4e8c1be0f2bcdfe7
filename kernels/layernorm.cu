/*
 * residual_ln: X = LayerNorm(tmp + bias + X) in place, the residual add
 * in fp32 (BertSelfOutput, BertOutput; FasterTransformer's
 * addBiasResidualPostLayerNorm adds in half, we do not).  A warp per
 * token as embed_ln (shared/GPU.md kernels 5 and 9).
 */
#include "common.cuh"

template <typename T>
__global__ void
aiserve_residual_ln(int n_tok, int H, const T *__restrict__ tmp,
    const float *__restrict__ bias, const float *__restrict__ gamma,
    const float *__restrict__ beta, float eps, T *__restrict__ x)
{
    float   v[AISERVE_GPU_ROW_REGS];
    int     t = blockIdx.x * 4 + (threadIdx.x >> 5);
    int     lane = threadIdx.x & 31, c;
    size_t  row;

    if (t >= n_tok) {
        return;
    }

    row = (size_t) t * H;

#pragma unroll
    for (int j = 0; j < AISERVE_GPU_ROW_REGS; j++) {
        c = j * 32 + lane;
        v[j] = 0.0f;
        if (c < H) {
            v[j] = to_f(tmp[row + c]) + to_f(x[row + c])
                   + (bias != NULL ? bias[c] : 0.0f);
        }
    }

    warp_layer_norm(v, H, eps);

#pragma unroll
    for (int j = 0; j < AISERVE_GPU_ROW_REGS; j++) {
        c = j * 32 + lane;
        if (c < H) {
            x[row + c] = from_f<T>(v[j] * gamma[c] + beta[c]);
        }
    }
}

template <typename T>
static int
residual_ln_run(size_t n_tok, size_t H, const uint16_t *tmp,
    const float *bias, const float *gamma, const float *beta, float eps,
    uint16_t *x, char *err, size_t err_len)
{
    aiserve_gpu_bufs_t  b = { { 0 }, 0 };
    void               *d_tmp, *d_bias = NULL, *d_g, *d_b, *d_x;
    int                 rc = -1;
    cudaError_t         e;

    if (aiserve_gpu_upload(&b, &d_tmp, tmp, n_tok * H * 2, err, err_len)
        || (bias != NULL
            && aiserve_gpu_upload(&b, &d_bias, bias, H * 4, err, err_len))
        || aiserve_gpu_upload(&b, &d_g, gamma, H * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_b, beta, H * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_x, x, n_tok * H * 2, err, err_len))
    {
        goto done;
    }

    aiserve_residual_ln<T><<<(unsigned) ((n_tok + 3) / 4), 128>>>(
        (int) n_tok, (int) H, (const T *) d_tmp, (const float *) d_bias,
        (const float *) d_g, (const float *) d_b, eps, (T *) d_x);

    e = cudaGetLastError();
    if (e == cudaSuccess) {
        e = cudaMemcpy(x, d_x, n_tok * H * 2, cudaMemcpyDeviceToHost);
    }
    rc = e == cudaSuccess ? 0
                          : aiserve_gpu_fail(err, err_len, "residual_ln", e);

done:
    aiserve_gpu_free_all(&b);
    return rc;
}

int
aiserve_gpu_residual_ln(aiserve_gpu_dtype_e dtype, size_t T, size_t H,
    const uint16_t *tmp, const float *bias, const float *gamma,
    const float *beta, float eps, uint16_t *x, char *err, size_t err_len)
{
    if (H == 0 || H > AISERVE_GPU_MAX_H || T == 0) {
        snprintf(err, err_len, "residual_ln: T %zu, H %zu (1 <= H <= %d)",
                 T, H, AISERVE_GPU_MAX_H);
        return -1;
    }

    if (dtype == AISERVE_GPU_BF16) {
        return residual_ln_run<__nv_bfloat16>(T, H, tmp, bias, gamma, beta,
                                              eps, x, err, err_len);
    }

    return residual_ln_run<__half>(T, H, tmp, bias, gamma, beta, eps, x, err,
                                   err_len);
}
