/*
 * attention_ref: the reference attention of a packed varlen batch, the
 * device oracle of the fused kernel (shared/GPU.md kernel 3a).  A warp
 * per (token, head): the query's head_dim values in registers (hd / 32
 * a lane), the keys of its own sequence streamed once with an online
 * softmax (running max and sum, as FlashAttention), all in fp32; no
 * score buffer, no mask (packing leaves none).  Q, K and V are read from
 * the fused projection QKV [T, 3H] with ld 3H; CTX [T, H] is written
 * with ld H, heads side by side (BertSelfAttention's layout after its
 * permute).
 */
#include "common.cuh"

#define ATT_MAX_HD_REGS  4      /* head_dim <= 128 */

template <typename T>
__global__ void
aiserve_attention_ref(int n_tok, int n_seq, int H, int hd, float scale,
    const int *__restrict__ cu, const T *__restrict__ qkv,
    T *__restrict__ ctx)
{
    float     q[ATT_MAX_HD_REGS], acc[ATT_MAX_HD_REGS];
    float     m = -INFINITY, l = 0.0f, s, mn, alpha, p;
    int       t = blockIdx.x * 4 + (threadIdx.x >> 5);
    int       h = blockIdx.y, lane = threadIdx.x & 31;
    int       lo = 0, hi = n_seq, mid, j, r, c;
    size_t    ld = (size_t) 3 * H;
    const T  *k, *v;

    if (t >= n_tok) {
        return;
    }

    /* the sequence b with cu[b] <= t < cu[b + 1] */
    while (hi - lo > 1) {
        mid = (lo + hi) / 2;
        if (cu[mid] <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }

#pragma unroll
    for (r = 0; r < ATT_MAX_HD_REGS; r++) {
        c = r * 32 + lane;
        q[r] = c < hd ? to_f(qkv[t * ld + h * hd + c]) : 0.0f;
        acc[r] = 0.0f;
    }

    for (j = cu[lo]; j < cu[lo + 1]; j++) {
        k = qkv + j * ld + H + h * hd;
        v = qkv + j * ld + 2 * H + h * hd;

        s = 0.0f;
#pragma unroll
        for (r = 0; r < ATT_MAX_HD_REGS; r++) {
            c = r * 32 + lane;
            if (c < hd) {
                s += q[r] * to_f(k[c]);
            }
        }
        s = warp_sum(s) * scale;

        mn = fmaxf(m, s);
        alpha = expf(m - mn);
        p = expf(s - mn);
        l = l * alpha + p;
        m = mn;

#pragma unroll
        for (r = 0; r < ATT_MAX_HD_REGS; r++) {
            c = r * 32 + lane;
            if (c < hd) {
                acc[r] = acc[r] * alpha + p * to_f(v[c]);
            }
        }
    }

#pragma unroll
    for (r = 0; r < ATT_MAX_HD_REGS; r++) {
        c = r * 32 + lane;
        if (c < hd) {
            ctx[(size_t) t * H + h * hd + c] = from_f<T>(acc[r] / l);
        }
    }
}

template <typename T>
static int
attention_run(size_t n_tok, size_t B, const int32_t *cu, size_t nh,
    size_t hd, float scale, const uint16_t *qkv, uint16_t *ctx, char *err,
    size_t err_len)
{
    aiserve_gpu_bufs_t  b = { { 0 }, 0 };
    void               *d_cu, *d_qkv, *d_ctx;
    size_t              H = nh * hd;
    int                 rc = -1;
    cudaError_t         e;
    dim3                grid((unsigned) ((n_tok + 3) / 4), (unsigned) nh);

    if (aiserve_gpu_upload(&b, &d_cu, cu, (B + 1) * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_qkv, qkv, n_tok * 3 * H * 2, err,
                              err_len)
        || aiserve_gpu_upload(&b, &d_ctx, ctx, n_tok * H * 2, err, err_len))
    {
        goto done;
    }

    aiserve_attention_ref<T><<<grid, 128>>>((int) n_tok, (int) B, (int) H,
        (int) hd, scale, (const int *) d_cu, (const T *) d_qkv, (T *) d_ctx);

    e = cudaGetLastError();
    if (e == cudaSuccess) {
        e = cudaMemcpy(ctx, d_ctx, n_tok * H * 2, cudaMemcpyDeviceToHost);
    }
    rc = e == cudaSuccess ? 0
                          : aiserve_gpu_fail(err, err_len, "attention_ref", e);

done:
    aiserve_gpu_free_all(&b);
    return rc;
}

int
aiserve_gpu_attention_ref(aiserve_gpu_dtype_e dtype, size_t T, size_t B,
    const int32_t *cu_seqlens, size_t n_heads, size_t head_dim, float scale,
    const uint16_t *qkv, uint16_t *ctx, char *err, size_t err_len)
{
    if (head_dim == 0 || head_dim > 32 * ATT_MAX_HD_REGS || head_dim % 32
        || n_heads == 0 || B == 0)
    {
        snprintf(err, err_len, "attention_ref: B %zu, heads %zu, head_dim "
                 "%zu (a multiple of 32, <= %d)", B, n_heads, head_dim,
                 32 * ATT_MAX_HD_REGS);
        return -1;
    }

    if (aiserve_gpu_check_seqlens(cu_seqlens, B, T, err, err_len) != 0) {
        return -1;
    }

    if (dtype == AISERVE_GPU_BF16) {
        return attention_run<__nv_bfloat16>(T, B, cu_seqlens, n_heads,
                   head_dim, scale, qkv, ctx, err, err_len);
    }

    return attention_run<__half>(T, B, cu_seqlens, n_heads, head_dim, scale,
                                 qkv, ctx, err, err_len);
}
