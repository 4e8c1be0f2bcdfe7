/*
 * aiserve GPU host planner (shared/GPU.md sections 2 to 4): what the host
 * builds for the GPU backend in plain C, so that it is tested on every
 * machine: the packed, padding-free batch (ids, positions, cu_seqlens),
 * the token bucket and its padding sequences, the attention work list,
 * the fp32 -> fp16 / bf16 conversion of weights and the per-lane
 * workspace layout.  No CUDA, no nginx.
 */
#ifndef AISERVE_GPU_PLAN_H
#define AISERVE_GPU_PLAN_H

#include <stddef.h>
#include <stdint.h>

#define AISERVE_GPU_QTILE      64     /* query rows of one attention work
                                         item (4 warps x 16 rows) */
#define AISERVE_GPU_PAD_SEQ    64     /* most tokens of one padding
                                         sequence */
#define AISERVE_GPU_ALIGN      256    /* bytes, every workspace buffer */

/*
 * A packed batch of B sequences, T tokens, laid out in a bucket of
 * T_bucket rows: rows T .. T_bucket-1 are padding sequences of at most
 * AISERVE_GPU_PAD_SEQ pad_id tokens (finite, never read back), so one
 * captured graph serves every batch of the bucket.  cu_seqlens has
 * n_seq_all + 1 entries (real sequences first); work has one (seq,
 * q_start) item per AISERVE_GPU_QTILE query rows of every sequence,
 * padding included.
 */
typedef struct {
    size_t    B;              /* real sequences */
    size_t    T;              /* real tokens */
    size_t    T_bucket;       /* rows, T <= T_bucket */
    size_t    n_seq_all;      /* B + padding sequences */
    size_t    max_len;        /* longest real sequence */
    int32_t  *input_ids;      /* [T_bucket] */
    int32_t  *token_type_ids; /* [T_bucket] */
    int32_t  *position_ids;   /* [T_bucket], index inside its sequence */
    int32_t  *cu_seqlens;     /* [n_seq_all + 1] */
    int32_t  *work_seq;       /* [n_work] */
    int32_t  *work_q;         /* [n_work], first query row (absolute) */
    size_t    n_work;
} aiserve_gpu_batch_t;

/*
 * Packs N sequences (IDS[i], LENS[i] tokens each, [CLS] .. [SEP] as the
 * tokenizer gave them; TYPES[i] their token_type_ids, or TYPES NULL for
 * all 0) into B, in the smallest of the N_BUCKETS ascending BUCKETS that
 * holds them (token counts).  Errors (-1, ERR names the sequence): N 0,
 * an empty sequence, one longer than MAX_SEQ (512 for BERT: the caller
 * truncates before, if the request asked for it), more tokens than the
 * largest bucket.  Frees nothing on error (B is zeroed first and owns
 * what it holds: aiserve_gpu_batch_free()).
 */
int aiserve_gpu_batch_pack(aiserve_gpu_batch_t *b, const int32_t *const *ids,
    const int32_t *const *types, const size_t *lens, size_t n,
    size_t max_seq, const size_t *buckets, size_t n_buckets, int32_t pad_id,
    char *err, size_t err_len);

void aiserve_gpu_batch_free(aiserve_gpu_batch_t *b);

/* The most work items a batch of T_BUCKET rows and at most B_MAX real
 * sequences can have: T_bucket / QTILE + B_max + the padding sequences'
 * share, i.e. what the device work list is sized for. */
size_t aiserve_gpu_work_capacity(size_t T_bucket, size_t B_max);

/*
 * fp32 -> IEEE binary16, round to nearest even, subnormals kept.  N
 * values of SRC into DST.  A value that rounds beyond 65504 (|x| >=
 * 65520), an infinity or a NaN is an error naming TENSOR, the index and
 * the value (and, for a finite one, pointing to dtype=bf16); returns 0
 * or -1.
 */
int aiserve_gpu_to_fp16(const float *src, uint16_t *dst, size_t n,
    const char *tensor, char *err, size_t err_len);

/* fp32 -> bfloat16, round to nearest even; bf16 holds fp32's range, so
 * only a value rounding to infinity (|x| above bf16's largest,
 * 3.3895e38), an infinity or a NaN is an error naming TENSOR. */
int aiserve_gpu_to_bf16(const float *src, uint16_t *dst, size_t n,
    const char *tensor, char *err, size_t err_len);

/* binary16 / bfloat16 -> fp32 (exact). */
float aiserve_gpu_fp16_to_f32(uint16_t h);
float aiserve_gpu_bf16_to_f32(uint16_t h);

/*
 * One lane's device workspace for batches of up to T_MAX tokens and
 * B_MAX sequences of a model with HIDDEN_SIZE H, INTERMEDIATE_SIZE I and
 * N_LABELS outputs per token (0: none), activations of ELEM bytes (2):
 * byte offsets of each buffer from the lane's base, every one aligned to
 * AISERVE_GPU_ALIGN, and the total.  The layout of shared/GPU.md
 * section 3: X, CTX, TMP [T, H]; QKV [T, 3H]; F [T, I]; the int arrays of
 * aiserve_gpu_batch_t; the pooled [B, H] and token [T, L] fp32 outputs;
 * the cuBLASLt workspace (32 MiB).  Returns 0, or -1 with ERR on a zero
 * size or an overflow of size_t.
 */
typedef struct {
    size_t  x, ctx, tmp, qkv, f;                 /* activations */
    size_t  input_ids, token_type_ids, position_ids, cu_seqlens;
    size_t  work_seq, work_q;                     /* int32 arrays */
    size_t  pooled, token_logits;                 /* fp32 outputs */
    size_t  gemm_ws;                              /* cuBLASLt */
    size_t  activation_bytes;                     /* X..F, unaligned sum */
    size_t  total;                                /* bytes, aligned */
} aiserve_gpu_workspace_t;

#define AISERVE_GPU_GEMM_WORKSPACE  ((size_t) 32 << 20)

int aiserve_gpu_workspace_plan(aiserve_gpu_workspace_t *w, size_t T_max,
    size_t B_max, size_t H, size_t I, size_t n_labels, size_t elem,
    char *err, size_t err_len);

#endif /* AISERVE_GPU_PLAN_H */
