/*
 * embed_ln: word + position + token-type embeddings of each token, then
 * LayerNorm (BertEmbeddings).  A warp per token, 4 warps a block; the
 * row stays in registers between the gathers and the two passes of the
 * statistics (shared/GPU.md kernel 1).
 */
#include "common.cuh"

template <typename T>
__global__ void
aiserve_embed_ln(int n_tok, int H, const int *__restrict__ input_ids,
    const int *__restrict__ token_type_ids,
    const int *__restrict__ position_ids, const T *__restrict__ word,
    const T *__restrict__ pos, const T *__restrict__ type,
    const float *__restrict__ gamma, const float *__restrict__ beta,
    float eps, T *__restrict__ x)
{
    float        v[AISERVE_GPU_ROW_REGS];
    int          t = blockIdx.x * 4 + (threadIdx.x >> 5);
    int          lane = threadIdx.x & 31, c;
    const T     *w, *p, *y;

    if (t >= n_tok) {
        return;
    }

    w = word + (size_t) input_ids[t] * H;
    p = pos + (size_t) position_ids[t] * H;
    y = type + (size_t) token_type_ids[t] * H;

#pragma unroll
    for (int j = 0; j < AISERVE_GPU_ROW_REGS; j++) {
        c = j * 32 + lane;
        v[j] = c < H ? to_f(w[c]) + to_f(p[c]) + to_f(y[c]) : 0.0f;
    }

    warp_layer_norm(v, H, eps);

#pragma unroll
    for (int j = 0; j < AISERVE_GPU_ROW_REGS; j++) {
        c = j * 32 + lane;
        if (c < H) {
            x[(size_t) t * H + c] = from_f<T>(v[j] * gamma[c] + beta[c]);
        }
    }
}

template <typename T>
static int
embed_ln_run(size_t n_tok, size_t H, const int32_t *ids, const int32_t *tt,
    const int32_t *pp, const uint16_t *word, size_t vocab,
    const uint16_t *pos, size_t n_pos, const uint16_t *type, size_t n_type,
    const float *gamma, const float *beta, float eps, uint16_t *x,
    char *err, size_t err_len)
{
    aiserve_gpu_bufs_t  b = { { 0 }, 0 };
    void               *d_ids, *d_tt, *d_pp, *d_w, *d_p, *d_y, *d_g, *d_b;
    void               *d_x;
    size_t              i;
    int                 rc = -1;
    cudaError_t         e;

    for (i = 0; i < n_tok; i++) {
        if (ids[i] < 0 || (size_t) ids[i] >= vocab || pp[i] < 0
            || (size_t) pp[i] >= n_pos || tt[i] < 0
            || (size_t) tt[i] >= n_type)
        {
            snprintf(err, err_len, "token %zu: input_id %d, position_id %d,"
                     " token_type_id %d outside the tables (%zu, %zu, %zu)",
                     i, ids[i], pp[i], tt[i], vocab, n_pos, n_type);
            return -1;
        }
    }

    if (aiserve_gpu_upload(&b, &d_ids, ids, n_tok * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_tt, tt, n_tok * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_pp, pp, n_tok * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_w, word, vocab * H * 2, err, err_len)
        || aiserve_gpu_upload(&b, &d_p, pos, n_pos * H * 2, err, err_len)
        || aiserve_gpu_upload(&b, &d_y, type, n_type * H * 2, err, err_len)
        || aiserve_gpu_upload(&b, &d_g, gamma, H * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_b, beta, H * 4, err, err_len)
        || aiserve_gpu_upload(&b, &d_x, x, n_tok * H * 2, err, err_len))
    {
        goto done;
    }

    aiserve_embed_ln<T><<<(unsigned) ((n_tok + 3) / 4), 128>>>(
        (int) n_tok, (int) H, (const int *) d_ids, (const int *) d_tt,
        (const int *) d_pp, (const T *) d_w, (const T *) d_p,
        (const T *) d_y, (const float *) d_g, (const float *) d_b, eps,
        (T *) d_x);

    e = cudaGetLastError();
    if (e == cudaSuccess) {
        e = cudaMemcpy(x, d_x, n_tok * H * 2, cudaMemcpyDeviceToHost);
    }
    rc = e == cudaSuccess ? 0 : aiserve_gpu_fail(err, err_len, "embed_ln", e);

done:
    aiserve_gpu_free_all(&b);
    return rc;
}

int
aiserve_gpu_embed_ln(aiserve_gpu_dtype_e dtype, size_t T, size_t H,
    const int32_t *input_ids, const int32_t *token_type_ids,
    const int32_t *position_ids, const uint16_t *word, size_t vocab,
    const uint16_t *pos, size_t n_pos, const uint16_t *type, size_t n_type,
    const float *gamma, const float *beta, float eps, uint16_t *x,
    char *err, size_t err_len)
{
    if (H == 0 || H > AISERVE_GPU_MAX_H || T == 0) {
        snprintf(err, err_len, "embed_ln: T %zu, H %zu (1 <= H <= %d)", T, H,
                 AISERVE_GPU_MAX_H);
        return -1;
    }

    if (dtype == AISERVE_GPU_BF16) {
        return embed_ln_run<__nv_bfloat16>(T, H, input_ids, token_type_ids,
                   position_ids, word, vocab, pos, n_pos, type, n_type,
                   gamma, beta, eps, x, err, err_len);
    }

    return embed_ln_run<__half>(T, H, input_ids, token_type_ids,
               position_ids, word, vocab, pos, n_pos, type, n_type, gamma,
               beta, eps, x, err, err_len);
}
