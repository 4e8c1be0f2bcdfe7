/*
 * seq_cls_head: the sequence classification head of a packed batch
 * (BertForSequenceClassification at inference: BertPooler, a dense layer
 * and tanh on each sequence's [CLS] row, then the classifier; dropout is
 * the identity).  A block per sequence: the [CLS] row and the pooled row
 * in shared memory (fp32), a warp per output row of each product
 * (shared/GPU.md kernel 11).
 */
#include "common.cuh"

#define HEAD_THREADS  256

template <typename T>
__global__ void
aiserve_seq_cls_head(int H, int L, const int *__restrict__ cu,
    const T *__restrict__ x, const T *__restrict__ pw,
    const float *__restrict__ pb, const T *__restrict__ cw,
    const float *__restrict__ cb, float *__restrict__ logits)
{
    __shared__ float  cls[AISERVE_GPU_MAX_H], pooled[AISERVE_GPU_MAX_H];
    int               b = blockIdx.x, lane = threadIdx.x & 31, j, c;
    int               warp = threadIdx.x >> 5;
    float             s;
    const T          *row = x + (size_t) cu[b] * H;

    for (c = threadIdx.x; c < H; c += HEAD_THREADS) {
        cls[c] = to_f(row[c]);
    }
    __syncthreads();

    for (j = warp; j < H; j += HEAD_THREADS / 32) {
        s = 0.0f;
        for (c = lane; c < H; c += 32) {
            s += to_f(pw[(size_t) j * H + c]) * cls[c];
        }
        s = warp_sum(s);
        if (lane == 0) {
            pooled[j] = tanhf(s + pb[j]);
        }
    }
    __syncthreads();

    for (j = warp; j < L; j += HEAD_THREADS / 32) {
        s = 0.0f;
        for (c = lane; c < H; c += 32) {
            s += to_f(cw[(size_t) j * H + c]) * pooled[c];
        }
        s = warp_sum(s);
        if (lane == 0) {
            logits[(size_t) b * L + j] = s + cb[j];
        }
    }
}

template <typename T>
static int
head_run(size_t n_tok, size_t B, size_t H, size_t L, const int32_t *cu,
    const uint16_t *x, const uint16_t *pw, const float *pb,
    const uint16_t *cw, const float *cb, float *logits, char *err,
    size_t err_len)
{
    aiserve_gpu_bufs_t  b = { { 0 }, 0 };
    void               *d_cu, *d_x, *d_pw, *d_pb, *d_cw, *d_cb, *d_out;
    int                 rc = -1;
    cudaError_t         e;

    if (aiserve_gpu_upload(&b, &d_cu, cu, (B + 1) * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_x, x, n_tok * H * 2, err, err_len)
        || aiserve_gpu_upload(&b, &d_pw, pw, H * H * 2, err, err_len)
        || aiserve_gpu_upload(&b, &d_pb, pb, H * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_cw, cw, L * H * 2, err, err_len)
        || aiserve_gpu_upload(&b, &d_cb, cb, L * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_out, logits, B * L * 4, err, err_len))
    {
        goto done;
    }

    aiserve_seq_cls_head<T><<<(unsigned) B, HEAD_THREADS>>>((int) H, (int) L,
        (const int *) d_cu, (const T *) d_x, (const T *) d_pw,
        (const float *) d_pb, (const T *) d_cw, (const float *) d_cb,
        (float *) d_out);

    e = cudaGetLastError();
    if (e == cudaSuccess) {
        e = cudaMemcpy(logits, d_out, B * L * 4, cudaMemcpyDeviceToHost);
    }
    rc = e == cudaSuccess ? 0
                          : aiserve_gpu_fail(err, err_len, "seq_cls_head", e);

done:
    aiserve_gpu_free_all(&b);
    return rc;
}

int
aiserve_gpu_seq_cls_head(aiserve_gpu_dtype_e dtype, size_t T, size_t B,
    size_t H, size_t L, const int32_t *cu_seqlens, const uint16_t *x,
    const uint16_t *pooler_w, const float *pooler_b, const uint16_t *cls_w,
    const float *cls_b, float *logits, char *err, size_t err_len)
{
    if (H == 0 || H > AISERVE_GPU_MAX_H || L == 0 || B == 0) {
        snprintf(err, err_len, "seq_cls_head: B %zu, H %zu (<= %d), labels "
                 "%zu", B, H, AISERVE_GPU_MAX_H, L);
        return -1;
    }

    if (aiserve_gpu_check_seqlens(cu_seqlens, B, T, err, err_len) != 0) {
        return -1;
    }

    if (dtype == AISERVE_GPU_BF16) {
        return head_run<__nv_bfloat16>(T, B, H, L, cu_seqlens, x, pooler_w,
                                       pooler_b, cls_w, cls_b, logits, err,
                                       err_len);
    }

    return head_run<__half>(T, B, H, L, cu_seqlens, x, pooler_w, pooler_b,
                            cls_w, cls_b, logits, err, err_len);
}
