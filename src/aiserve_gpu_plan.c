/*
 * aiserve GPU host planner: packing, buckets, the attention work list,
 * weight conversion and the workspace layout (aiserve_gpu_plan.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aiserve_gpu_plan.h"


static int
gpu_work_list(aiserve_gpu_batch_t *b, char *err, size_t err_len)
{
    size_t   s, q, len, n = 0;

    for (s = 0; s < b->n_seq_all; s++) {
        len = (size_t) (b->cu_seqlens[s + 1] - b->cu_seqlens[s]);
        n += (len + AISERVE_GPU_QTILE - 1) / AISERVE_GPU_QTILE;
    }

    b->work_seq = malloc(n * sizeof(int32_t));
    b->work_q = malloc(n * sizeof(int32_t));
    if (b->work_seq == NULL || b->work_q == NULL) {
        snprintf(err, err_len, "out of memory for %zu work items", n);
        return -1;
    }

    n = 0;
    for (s = 0; s < b->n_seq_all; s++) {
        for (q = (size_t) b->cu_seqlens[s]; q < (size_t) b->cu_seqlens[s + 1];
             q += AISERVE_GPU_QTILE)
        {
            b->work_seq[n] = (int32_t) s;
            b->work_q[n] = (int32_t) q;
            n++;
        }
    }

    b->n_work = n;
    return 0;
}


int
aiserve_gpu_batch_pack(aiserve_gpu_batch_t *b, const int32_t *const *ids,
    const int32_t *const *types, const size_t *lens, size_t n,
    size_t max_seq, const size_t *buckets, size_t n_buckets, int32_t pad_id,
    char *err, size_t err_len)
{
    size_t  i, j, t, T = 0, k, pad, len, s;

    memset(b, 0, sizeof(*b));

    if (n == 0 || n_buckets == 0) {
        snprintf(err, err_len, "no sequences or no token buckets to pack");
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (lens[i] == 0 || lens[i] > max_seq) {
            snprintf(err, err_len, "sequence %zu has %zu tokens (1 to %zu)",
                     i, lens[i], max_seq);
            return -1;
        }
        T += lens[i];
        if (lens[i] > b->max_len) {
            b->max_len = lens[i];
        }
    }

    for (k = 0; k < n_buckets && buckets[k] < T; k++) {
        /* the smallest bucket that holds T */
    }

    if (k == n_buckets) {
        snprintf(err, err_len, "%zu sequences of %zu tokens exceed the "
                 "largest token bucket (%zu)", n, T, buckets[n_buckets - 1]);
        return -1;
    }

    b->B = n;
    b->T = T;
    b->T_bucket = buckets[k];
    pad = b->T_bucket - T;
    b->n_seq_all = n + (pad + AISERVE_GPU_PAD_SEQ - 1) / AISERVE_GPU_PAD_SEQ;

    b->input_ids = malloc(b->T_bucket * sizeof(int32_t));
    b->token_type_ids = malloc(b->T_bucket * sizeof(int32_t));
    b->position_ids = malloc(b->T_bucket * sizeof(int32_t));
    b->cu_seqlens = malloc((b->n_seq_all + 1) * sizeof(int32_t));
    if (b->input_ids == NULL || b->token_type_ids == NULL
        || b->position_ids == NULL || b->cu_seqlens == NULL)
    {
        snprintf(err, err_len, "out of memory packing %zu tokens",
                 b->T_bucket);
        return -1;
    }

    t = 0;
    for (s = 0; s < b->n_seq_all; s++) {
        b->cu_seqlens[s] = (int32_t) t;
        if (s < n) {
            len = lens[s];
        } else {
            len = b->T_bucket - t;
            if (len > AISERVE_GPU_PAD_SEQ) {
                len = AISERVE_GPU_PAD_SEQ;
            }
        }

        for (j = 0; j < len; j++, t++) {
            b->input_ids[t] = s < n ? ids[s][j] : pad_id;
            b->token_type_ids[t] = s < n && types != NULL ? types[s][j] : 0;
            b->position_ids[t] = (int32_t) j;
        }
    }
    b->cu_seqlens[b->n_seq_all] = (int32_t) t;

    return gpu_work_list(b, err, err_len);
}


void
aiserve_gpu_batch_free(aiserve_gpu_batch_t *b)
{
    free(b->input_ids);
    free(b->token_type_ids);
    free(b->position_ids);
    free(b->cu_seqlens);
    free(b->work_seq);
    free(b->work_q);
    memset(b, 0, sizeof(*b));
}


size_t
aiserve_gpu_work_capacity(size_t T_bucket, size_t B_max)
{
    /* sum over sequences of ceil(len / 64) <= T_bucket / 64 + one partial
     * tile per real sequence and one for the padding */
    return (T_bucket + AISERVE_GPU_QTILE - 1) / AISERVE_GPU_QTILE + B_max + 1;
}


static uint32_t
f32_bits(float f)
{
    uint32_t  u;

    memcpy(&u, &f, sizeof(u));
    return u;
}


static float
bits_f32(uint32_t u)
{
    float  f;

    memcpy(&f, &u, sizeof(f));
    return f;
}


int
aiserve_gpu_to_fp16(const float *src, uint16_t *dst, size_t n,
    const char *tensor, char *err, size_t err_len)
{
    size_t    i;
    uint32_t  x, sign, m, r, rem, half, shift;

    for (i = 0; i < n; i++) {
        x = f32_bits(src[i]);
        sign = (x >> 16) & 0x8000;
        x &= 0x7fffffff;

        if (x >= 0x7f800000) {
            snprintf(err, err_len, "tensor \"%s\" element %zu is %g: not a "
                     "finite weight", tensor, i, (double) src[i]);
            return -1;
        }

        if (x >= 0x477ff000) {          /* 65520: rounds to infinity */
            snprintf(err, err_len, "tensor \"%s\" element %zu is %g, beyond "
                     "fp16's 65504 (use dtype=bf16)", tensor, i,
                     (double) src[i]);
            return -1;
        }

        if (x >= 0x38800000) {          /* 2^-14: a normal binary16 */
            r = (x - 0x38000000) >> 13;
            rem = x & 0x1fff;
            if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) {
                r++;
            }

        } else {                        /* subnormal, in units of 2^-24 */
            shift = 126 - (x >> 23);
            if (shift > 24) {
                r = 0;

            } else {
                m = (x & 0x7fffff) | 0x800000;
                r = m >> shift;
                rem = m & ((1u << shift) - 1);
                half = 1u << (shift - 1);
                if (rem > half || (rem == half && (r & 1))) {
                    r++;
                }
            }
        }

        dst[i] = (uint16_t) (sign | r);
    }

    return 0;
}


int
aiserve_gpu_to_bf16(const float *src, uint16_t *dst, size_t n,
    const char *tensor, char *err, size_t err_len)
{
    size_t    i;
    uint32_t  x, r;

    for (i = 0; i < n; i++) {
        x = f32_bits(src[i]);

        if ((x & 0x7fffffff) >= 0x7f800000) {
            snprintf(err, err_len, "tensor \"%s\" element %zu is %g: not a "
                     "finite weight", tensor, i, (double) src[i]);
            return -1;
        }

        r = (x + 0x7fff + ((x >> 16) & 1)) >> 16;
        if ((r & 0x7fff) == 0x7f80) {
            snprintf(err, err_len, "tensor \"%s\" element %zu is %g, beyond "
                     "bf16's largest finite value", tensor, i,
                     (double) src[i]);
            return -1;
        }

        dst[i] = (uint16_t) r;
    }

    return 0;
}


float
aiserve_gpu_fp16_to_f32(uint16_t h)
{
    uint32_t  sign = (uint32_t) (h & 0x8000) << 16;
    uint32_t  e = (h >> 10) & 0x1f, m = h & 0x3ff;

    if (e == 0) {                       /* zero or subnormal: m * 2^-24 */
        return sign ? -ldexpf((float) m, -24) : ldexpf((float) m, -24);
    }

    if (e == 31) {
        return bits_f32(sign | 0x7f800000 | (m << 13));
    }

    return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}


float
aiserve_gpu_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t) h << 16);
}


/* *OFF = the running total aligned up, then the total grows by BYTES;
 * -1 on overflow. */
static int
ws_take(size_t *total, size_t *off, size_t count, size_t size)
{
    size_t  at, bytes;

    if (count != 0 && size > SIZE_MAX / count) {
        return -1;
    }
    bytes = count * size;

    if (*total > SIZE_MAX - (AISERVE_GPU_ALIGN - 1)) {
        return -1;
    }
    at = (*total + AISERVE_GPU_ALIGN - 1) & ~(size_t) (AISERVE_GPU_ALIGN - 1);

    if (bytes > SIZE_MAX - at) {
        return -1;
    }

    *off = at;
    *total = at + bytes;
    return 0;
}


int
aiserve_gpu_workspace_plan(aiserve_gpu_workspace_t *w, size_t T_max,
    size_t B_max, size_t H, size_t I, size_t n_labels, size_t elem,
    char *err, size_t err_len)
{
    size_t  total = 0, rows, seqs, work, th;

    memset(w, 0, sizeof(*w));

    if (T_max == 0 || B_max == 0 || H == 0 || I == 0 || elem == 0) {
        snprintf(err, err_len, "workspace: T_max %zu, B_max %zu, hidden_size"
                 " %zu, intermediate_size %zu, element %zu bytes: none may "
                 "be 0", T_max, B_max, H, I, elem);
        return -1;
    }

    rows = T_max;
    seqs = B_max + (T_max + AISERVE_GPU_PAD_SEQ - 1) / AISERVE_GPU_PAD_SEQ + 1;
    work = aiserve_gpu_work_capacity(T_max, B_max);

    if (H > SIZE_MAX / rows || rows * H > SIZE_MAX / 3
        || I > SIZE_MAX / rows)
    {
        goto overflow;
    }
    th = rows * H;

    if (ws_take(&total, &w->x, th, elem)
        || ws_take(&total, &w->ctx, th, elem)
        || ws_take(&total, &w->tmp, th, elem)
        || ws_take(&total, &w->qkv, 3 * th, elem)
        || ws_take(&total, &w->f, rows * I, elem)
        || ws_take(&total, &w->input_ids, rows, sizeof(int32_t))
        || ws_take(&total, &w->token_type_ids, rows, sizeof(int32_t))
        || ws_take(&total, &w->position_ids, rows, sizeof(int32_t))
        || ws_take(&total, &w->cu_seqlens, seqs, sizeof(int32_t))
        || ws_take(&total, &w->work_seq, work, sizeof(int32_t))
        || ws_take(&total, &w->work_q, work, sizeof(int32_t))
        || ws_take(&total, &w->pooled, B_max, H * sizeof(float))
        || ws_take(&total, &w->token_logits, rows,
                   n_labels * sizeof(float))
        || ws_take(&total, &w->gemm_ws, AISERVE_GPU_GEMM_WORKSPACE, 1))
    {
        goto overflow;
    }

    w->activation_bytes = (6 * H + I) * elem * rows;
    w->total = total;
    return 0;

overflow:
    snprintf(err, err_len, "workspace: T_max %zu, hidden_size %zu, "
             "intermediate_size %zu: the sizes overflow size_t", T_max, H, I);
    return -1;
}
