/*
 * pool: one fp32 row per sequence of a packed batch, CLS, mean or max over
 * the sequence's rows ([CLS] and [SEP] included, as sentence-transformers'
 * Pooling with an all-ones mask), optionally L2-normalised by
 * max(||row||, 1e-12) (Normalize, torch.nn.functional.normalize).  A
 * block per sequence, threads over the columns (shared/GPU.md kernel 10).
 */
#include "common.cuh"

#define POOL_THREADS  256

template <typename T>
__global__ void
aiserve_pool(int how, int normalize, int H, const int *__restrict__ cu,
    const T *__restrict__ x, float *__restrict__ out)
{
    __shared__ float  part[POOL_THREADS / 32];
    int               b = blockIdx.x, s = cu[b], e = cu[b + 1], c, t;
    float             v, sq = 0.0f, norm;
    float            *o = out + (size_t) b * H;

    for (c = threadIdx.x; c < H; c += POOL_THREADS) {
        if (how == AISERVE_GPU_POOL_CLS) {
            v = to_f(x[(size_t) s * H + c]);

        } else if (how == AISERVE_GPU_POOL_MAX) {
            v = -INFINITY;
            for (t = s; t < e; t++) {
                v = fmaxf(v, to_f(x[(size_t) t * H + c]));
            }

        } else {
            v = 0.0f;
            for (t = s; t < e; t++) {
                v += to_f(x[(size_t) t * H + c]);
            }
            v /= (float) (e - s);
        }

        o[c] = v;
        sq += v * v;
    }

    if (!normalize) {
        return;
    }

    sq = warp_sum(sq);
    if ((threadIdx.x & 31) == 0) {
        part[threadIdx.x >> 5] = sq;
    }
    __syncthreads();

    sq = 0.0f;
    for (t = 0; t < POOL_THREADS / 32; t++) {
        sq += part[t];
    }
    norm = fmaxf(sqrtf(sq), 1e-12f);

    for (c = threadIdx.x; c < H; c += POOL_THREADS) {
        o[c] /= norm;
    }
}

template <typename T>
static int
pool_run(int how, int normalize, size_t n_tok, size_t B, size_t H,
    const int32_t *cu, const uint16_t *x, float *out, char *err,
    size_t err_len)
{
    aiserve_gpu_bufs_t  b = { { 0 }, 0 };
    void               *d_cu, *d_x, *d_out;
    int                 rc = -1;
    cudaError_t         e;

    if (aiserve_gpu_upload(&b, &d_cu, cu, (B + 1) * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_x, x, n_tok * H * 2, err, err_len)
        || aiserve_gpu_upload(&b, &d_out, out, B * H * 4, err, err_len))
    {
        goto done;
    }

    aiserve_pool<T><<<(unsigned) B, POOL_THREADS>>>(how, normalize, (int) H,
        (const int *) d_cu, (const T *) d_x, (float *) d_out);

    e = cudaGetLastError();
    if (e == cudaSuccess) {
        e = cudaMemcpy(out, d_out, B * H * 4, cudaMemcpyDeviceToHost);
    }
    rc = e == cudaSuccess ? 0 : aiserve_gpu_fail(err, err_len, "pool", e);

done:
    aiserve_gpu_free_all(&b);
    return rc;
}

int
aiserve_gpu_pool(aiserve_gpu_dtype_e dtype, aiserve_gpu_pool_e how,
    int normalize, size_t T, size_t B, size_t H, const int32_t *cu_seqlens,
    const uint16_t *x, float *out, char *err, size_t err_len)
{
    if (H == 0 || B == 0
        || aiserve_gpu_check_seqlens(cu_seqlens, B, T, err, err_len) != 0)
    {
        if (H == 0 || B == 0) {
            snprintf(err, err_len, "pool: B %zu, H %zu", B, H);
        }
        return -1;
    }

    if (dtype == AISERVE_GPU_BF16) {
        return pool_run<__nv_bfloat16>(how, normalize, T, B, H, cu_seqlens,
                                       x, out, err, err_len);
    }

    return pool_run<__half>(how, normalize, T, B, H, cu_seqlens, x, out, err,
                            err_len);
}
