/*
 * The GPU host planner (src/aiserve_gpu_plan.c): fp16 / bf16 conversion
 * against hand-computed bit patterns, the definition of round to nearest
 * even and, where the compiler has _Float16 (gcc; not clang 14 on x86),
 * the compiler's own conversion; packing, buckets and the attention work
 * list against hand-computed layouts and, on random batches, the invariants the
 * kernels rely on; packing of the engine tokenizer's pairs; the
 * workspace layout against shared/GPU.md's per-token table and a real
 * config.json.  Runs on every machine (no CUDA).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "aiserve_gpu_plan.h"
#include "aiserve_model.h"
#include "aiserve_tokenizer.h"

#define MINILM  "models/all-MiniLM-L6-v2"

static uint16_t
h16(float f)
{
    uint16_t  h = 0xffff;
    char      err[256];

    if (aiserve_gpu_to_fp16(&f, &h, 1, "t", err, sizeof(err)) != 0) {
        tap_diag("%s", err);
    }
    return h;
}

static uint16_t
b16(float f)
{
    uint16_t  h = 0xffff;
    char      err[256];

    if (aiserve_gpu_to_bf16(&f, &h, 1, "t", err, sizeof(err)) != 0) {
        tap_diag("%s", err);
    }
    return h;
}

static float
from_bits(uint32_t u)
{
    float  f;

    memcpy(&f, &u, sizeof(f));
    return f;
}

/* The value of binary16 H >= 0 (0x7c00: 65536, where rounding overflows),
 * from IEEE 754's definition. */
static double
fp16_value(uint32_t h)
{
    uint32_t  e = h >> 10, m = h & 0x3ff;

    return e == 0 ? ldexp((double) m, -24)
                  : ldexp((double) (1024 + m), (int) e - 25);
}

/* H is the binary16 nearest X >= 0, ties to the even one. */
static int
is_rne(double x, uint32_t h)
{
    double  d = fabs(x - fp16_value(h)), dn;

    if (h > 0) {
        dn = fabs(x - fp16_value(h - 1));
        if (dn < d || (dn == d && (h & 1))) {
            return 0;
        }
    }
    dn = fabs(x - fp16_value(h + 1));
    return !(dn < d || (dn == d && (h & 1)));
}

static void
test_fp16(void)
{
    char       err[256];
    float      f;
    uint16_t   h;
    uint32_t   x, bad = 0, checked = 0;

    tap_ok(h16(1.0f) == 0x3c00, "fp16 1.0 = 0x3c00");
    tap_ok(h16(-2.0f) == 0xc000, "fp16 -2.0 = 0xc000");
    tap_ok(h16(-0.0f) == 0x8000, "fp16 -0.0 = 0x8000");
    tap_ok(h16(65504.0f) == 0x7bff, "fp16 65504 = 0x7bff (largest)");
    tap_ok(h16(65519.99f) == 0x7bff, "fp16 65519.99 rounds down to 65504");
    tap_ok(h16(1.0f / 3.0f) == 0x3555, "fp16 1/3 = 0x3555");
    tap_ok(h16(0.1f) == 0x2e66, "fp16 0.1 = 0x2e66");
    tap_ok(h16(ldexpf(1.0f, -14)) == 0x0400,
           "fp16 2^-14 = 0x0400 (min normal)");
    tap_ok(h16(ldexpf(1023.0f, -24)) == 0x03ff,
           "fp16 1023 x 2^-24 = 0x03ff (largest subnormal)");
    tap_ok(h16(ldexpf(1.0f, -24)) == 0x0001, "fp16 2^-24 = 0x0001");
    tap_ok(h16(ldexpf(1.0f, -25)) == 0x0000,
           "fp16 2^-25 ties to even: 0");
    tap_ok(h16(ldexpf(3.0f, -25)) == 0x0002,
           "fp16 3 x 2^-25 ties to even: 0x0002");
    tap_ok(h16(ldexpf(1.5f, -25)) == 0x0001, "fp16 1.5 x 2^-25 = 0x0001");
    tap_ok(h16(1.0f + ldexpf(1.0f, -11)) == 0x3c00,
           "fp16 1 + 2^-11 ties to even: 1.0");
    tap_ok(h16(1.0f + ldexpf(3.0f, -11)) == 0x3c02,
           "fp16 1 + 3 x 2^-11 ties to even: 0x3c02");

    f = 65520.0f;
    tap_ok(aiserve_gpu_to_fp16(&f, &h, 1, "encoder.layer.3.output.dense.weight",
                               err, sizeof(err)) == -1
           && strstr(err, "encoder.layer.3.output.dense.weight") != NULL
           && strstr(err, "65520") != NULL
           && strstr(err, "dtype=bf16") != NULL,
           "fp16 65520 is an overflow error naming the tensor: %s", err);
    f = NAN;
    tap_ok(aiserve_gpu_to_fp16(&f, &h, 1, "w", err, sizeof(err)) == -1
           && strstr(err, "not a finite") != NULL,
           "fp16 of a NaN weight is an error: %s", err);

    /* round to nearest even by its definition, over a stride of every
     * finite fp32 in fp16's range, both signs */
    for (x = 0; x < 0x477ff000; x += 997) {
        f = from_bits(x);
        h = h16(f);
        if (h > 0x7bff || !is_rne(f, h) || h16(-f) != (h | 0x8000)) {
            if (bad++ < 3) {
                tap_diag("0x%08x: 0x%04x is not the nearest even", x, h);
            }
        }
        checked++;
    }
    tap_ok(bad == 0, "fp16 rounds to nearest even on %u values", checked);

#ifdef __FLT16_MAX__
    /* and as the compiler's _Float16 does */
    bad = 0;
    for (x = 0; x < 0x477ff000; x += 997) {
        _Float16  c = (_Float16) from_bits(x);
        uint16_t  hc;

        memcpy(&hc, &c, 2);
        bad += h16(from_bits(x)) != hc;
    }
    tap_ok(bad == 0, "fp16 equals the compiler's _Float16 on %u values",
           checked);
#endif

    /* every finite binary16 widens to its value and round-trips */
    bad = 0;
    for (x = 0; x < 0x10000; x++) {
        if ((x & 0x7c00) == 0x7c00) {
            continue;
        }
        f = aiserve_gpu_fp16_to_f32((uint16_t) x);
        if ((double) f != (x & 0x8000 ? -1 : 1) * fp16_value(x & 0x7fff)
            || h16(f) != x)
        {
            bad++;
        }
    }
    tap_ok(bad == 0, "every finite fp16 widens exactly and round-trips");
}

static void
test_bf16(void)
{
    char      err[256];
    float     f;
    uint16_t  h;

    tap_ok(b16(1.0f) == 0x3f80, "bf16 1.0 = 0x3f80");
    tap_ok(b16(1.0f / 3.0f) == 0x3eab, "bf16 1/3 = 0x3eab");
    tap_ok(b16(from_bits(0x3f808000)) == 0x3f80,
           "bf16 tie 0x3f808000 to even: 0x3f80");
    tap_ok(b16(from_bits(0x3f818000)) == 0x3f82,
           "bf16 tie 0x3f818000 to even: 0x3f82");
    tap_ok(b16(from_bits(0x3f808001)) == 0x3f81,
           "bf16 above the tie 0x3f808001: 0x3f81");
    tap_ok(b16(65520.0f) == 0x4780, "bf16 holds 65520 (0x4780)");
    tap_ok(aiserve_gpu_bf16_to_f32(0x3eab) == from_bits(0x3eab0000),
           "bf16 widens exactly");

    f = 3.4028235e38f;
    tap_ok(aiserve_gpu_to_bf16(&f, &h, 1, "pooler.dense.weight", err,
                               sizeof(err)) == -1
           && strstr(err, "pooler.dense.weight") != NULL,
           "bf16 of FLT_MAX (rounds to infinity) is an error: %s", err);
}

/* Checks the invariants of a packed batch; returns the number broken. */
static int
check_batch(const aiserve_gpu_batch_t *b, const size_t *lens,
    int32_t pad_id, size_t B_max)
{
    size_t    s, t, w, q, len, broken = 0;
    uint8_t  *seen;

    if (b->cu_seqlens[0] != 0
        || (size_t) b->cu_seqlens[b->n_seq_all] != b->T_bucket
        || (size_t) b->cu_seqlens[b->B] != b->T)
    {
        return 1;
    }

    for (s = 0; s < b->n_seq_all; s++) {
        len = (size_t) (b->cu_seqlens[s + 1] - b->cu_seqlens[s]);
        if (s < b->B ? len != lens[s]
                     : len == 0 || len > AISERVE_GPU_PAD_SEQ)
        {
            broken++;
        }
        for (t = (size_t) b->cu_seqlens[s]; t < (size_t) b->cu_seqlens[s + 1];
             t++)
        {
            if ((size_t) b->position_ids[t] != t - (size_t) b->cu_seqlens[s]
                || (s >= b->B && b->input_ids[t] != pad_id))
            {
                broken++;
            }
        }
    }

    /* every query row in exactly one work item of its own sequence */
    seen = calloc(b->T_bucket, 1);
    for (w = 0; w < b->n_work; w++) {
        s = (size_t) b->work_seq[w];
        q = (size_t) b->work_q[w];
        if (s >= b->n_seq_all || q < (size_t) b->cu_seqlens[s]
            || q >= (size_t) b->cu_seqlens[s + 1])
        {
            broken++;
            continue;
        }
        for (t = q; t < q + AISERVE_GPU_QTILE
                    && t < (size_t) b->cu_seqlens[s + 1]; t++)
        {
            seen[t]++;
        }
    }
    for (t = 0; t < b->T_bucket; t++) {
        broken += seen[t] != 1;
    }
    free(seen);

    broken += b->n_work > aiserve_gpu_work_capacity(b->T_bucket, B_max);
    return (int) broken;
}

static void
test_pack(void)
{
    static const size_t  buckets[] = { 64, 128, 256, 512, 4096 };
    static const int32_t cu_want[] = { 0, 3, 73, 74, 128 };
    static const int32_t wq_want[] = { 0, 3, 67, 73, 74 };
    static const int32_t ws_want[] = { 0, 1, 1, 2, 3 };
    aiserve_gpu_batch_t  b;
    int32_t             *ids[64], *types[64];
    size_t               lens[64], i, j, n, trial, broken = 0;
    char                 err[256];

    for (i = 0; i < 64; i++) {
        ids[i] = malloc(512 * sizeof(int32_t));
        types[i] = malloc(512 * sizeof(int32_t));
        for (j = 0; j < 512; j++) {
            ids[i][j] = (int32_t) (1000 + i * 512 + j);
            types[i][j] = j >= 2;
        }
    }

    lens[0] = 3;
    lens[1] = 70;
    lens[2] = 1;
    tap_ok(aiserve_gpu_batch_pack(&b, (const int32_t *const *) ids,
                                  (const int32_t *const *) types, lens, 3,
                                  512, buckets, 5, 0, err, sizeof(err)) == 0,
           "pack 3 sequences of 3, 70, 1 tokens");
    tap_ok(b.T == 74 && b.T_bucket == 128 && b.B == 3 && b.n_seq_all == 4
           && b.max_len == 70,
           "74 tokens in the 128 bucket, one padding sequence of 54");
    tap_ok(memcmp(b.cu_seqlens, cu_want, sizeof(cu_want)) == 0,
           "cu_seqlens 0 3 73 74 128");
    tap_ok(b.n_work == 5 && memcmp(b.work_q, wq_want, sizeof(wq_want)) == 0
           && memcmp(b.work_seq, ws_want, sizeof(ws_want)) == 0,
           "work list (0,0) (1,3) (1,67) (2,73) (3,74)");
    tap_ok(b.input_ids[3] == 1512 && b.position_ids[3] == 0
           && b.input_ids[72] == 1512 + 69 && b.position_ids[72] == 69
           && b.token_type_ids[72] == 1 && b.token_type_ids[3] == 0
           && b.input_ids[100] == 0 && b.position_ids[100] == 26
           && b.token_type_ids[100] == 0,
           "ids, positions and types of real and padding rows");
    tap_ok(check_batch(&b, lens, 0, 3) == 0, "the invariants hold");
    aiserve_gpu_batch_free(&b);

    lens[1] = 0;
    tap_ok(aiserve_gpu_batch_pack(&b, (const int32_t *const *) ids, NULL,
                                  lens, 3, 512, buckets, 5, 0, err,
                                  sizeof(err)) == -1
           && strstr(err, "sequence 1 has 0 tokens") != NULL,
           "an empty sequence is an error: %s", err);
    aiserve_gpu_batch_free(&b);
    lens[1] = 513;
    tap_ok(aiserve_gpu_batch_pack(&b, (const int32_t *const *) ids, NULL,
                                  lens, 3, 512, buckets, 5, 0, err,
                                  sizeof(err)) == -1
           && strstr(err, "513 tokens (1 to 512)") != NULL,
           "a sequence over max_seq is an error, not a truncation: %s",
           err);
    aiserve_gpu_batch_free(&b);
    for (i = 0; i < 10; i++) {
        lens[i] = 500;
    }
    tap_ok(aiserve_gpu_batch_pack(&b, (const int32_t *const *) ids, NULL,
                                  lens, 10, 512, buckets, 5, 0, err,
                                  sizeof(err)) == -1
           && strstr(err, "largest token bucket (4096)") != NULL,
           "more tokens than the largest bucket is an error: %s", err);
    aiserve_gpu_batch_free(&b);

    /* an exact fit leaves no padding sequence */
    lens[0] = 64;
    lens[1] = 64;
    tap_ok(aiserve_gpu_batch_pack(&b, (const int32_t *const *) ids, NULL,
                                  lens, 2, 512, buckets, 5, 0, err,
                                  sizeof(err)) == 0
           && b.T_bucket == 128 && b.n_seq_all == 2 && b.n_work == 2,
           "128 tokens fill the 128 bucket: no padding, 2 work items");
    aiserve_gpu_batch_free(&b);

    srand(13);
    for (trial = 0; trial < 2000; trial++) {
        n = 1 + (size_t) rand() % 64;
        for (i = 0; i < n; i++) {
            lens[i] = 1 + (size_t) rand() % (trial % 2 ? 512 : 64);
        }
        if (aiserve_gpu_batch_pack(&b, (const int32_t *const *) ids,
                                   (const int32_t *const *) types, lens, n,
                                   512, buckets, 5, 7, err, sizeof(err))
            != 0)
        {
            /* only "too many tokens" may fail */
            broken += strstr(err, "largest token bucket") == NULL;
            continue;
        }
        broken += check_batch(&b, lens, 7, 64) != 0;
        aiserve_gpu_batch_free(&b);
    }
    tap_ok(broken == 0, "2000 random batches: rows covered once, bounds "
           "hold (%zu broken)", broken);

    for (i = 0; i < 64; i++) {
        free(ids[i]);
        free(types[i]);
    }
}

static void
test_pack_tokenizer(void)
{
    static const size_t  buckets[] = { 32, 64, 128 };
    static const char   *q[] = { "what is a packed batch?",
                                 "how many tokens fit in a bucket" };
    static const char   *d[] = { "rows of every sequence side by side",
                                 "one hundred and twenty-eight" };
    aiserve_tok_t       *tok;
    aiserve_encoding_t   enc[2];
    aiserve_gpu_batch_t  b;
    const int32_t       *ids[2], *types[2];
    size_t               lens[2], i, t, bad = 0;
    char                 err[256];

    tok = aiserve_tok_load(MINILM, err, sizeof(err));
    if (!tap_ok(tok != NULL, "tokenizer of %s: %s", MINILM,
                tok ? "" : err))
    {
        return;
    }

    for (i = 0; i < 2; i++) {
        if (aiserve_tok_encode(tok, q[i], strlen(q[i]), d[i], strlen(d[i]),
                               NULL, &enc[i], err, sizeof(err)) != 0)
        {
            tap_ok(0, "encode pair %zu: %s", i, err);
            return;
        }
        ids[i] = enc[i].input_ids;
        types[i] = enc[i].token_type_ids;
        lens[i] = enc[i].n_tokens;
    }

    tap_ok(aiserve_gpu_batch_pack(&b, ids, types, lens, 2, 512, buckets, 3,
                                  0, err, sizeof(err)) == 0,
           "pack two tokenized pairs (%zu, %zu tokens)", lens[0], lens[1]);
    for (i = 0; i < 2; i++) {
        for (t = 0; t < lens[i]; t++) {
            bad += b.input_ids[b.cu_seqlens[i] + t] != enc[i].input_ids[t]
                   || b.token_type_ids[b.cu_seqlens[i] + t]
                      != enc[i].token_type_ids[t];
        }
    }
    tap_ok(bad == 0 && b.input_ids[0] == aiserve_tok_token_to_id(tok, "[CLS]")
           && b.input_ids[b.cu_seqlens[1] - 1]
              == aiserve_tok_token_to_id(tok, "[SEP]"),
           "packed rows are the tokenizer's ids and token_type_ids, "
           "[CLS] first, [SEP] last");
    aiserve_gpu_batch_free(&b);
    aiserve_encoding_free(&enc[0]);
    aiserve_encoding_free(&enc[1]);
    aiserve_tok_free(tok);
}

static void
test_workspace(void)
{
    aiserve_gpu_workspace_t  w;
    aiserve_model_info_t     info;
    size_t                  *off[14], i, ok;
    char                     err[256];

    /* shared/GPU.md section 3: activations per token */
    tap_ok(aiserve_gpu_workspace_plan(&w, 1, 1, 768, 3072, 0, 2, err,
                                      sizeof(err)) == 0
           && w.activation_bytes == 15360,
           "bert-base activations: 15,360 bytes a token");
    tap_ok(aiserve_gpu_workspace_plan(&w, 16384, 64, 768, 3072, 9, 2, err,
                                      sizeof(err)) == 0
           && w.activation_bytes == (size_t) 240 << 20,
           "bert-base at 16k tokens: 240 MiB of activations");
    tap_ok(w.total >= w.activation_bytes + AISERVE_GPU_GEMM_WORKSPACE
           && w.total < w.activation_bytes + AISERVE_GPU_GEMM_WORKSPACE
                        + ((size_t) 1 << 20),
           "total %zu: activations + 32 MiB cuBLASLt + < 1 MiB of ints and "
           "outputs", w.total);

    off[0] = &w.x; off[1] = &w.ctx; off[2] = &w.tmp; off[3] = &w.qkv;
    off[4] = &w.f; off[5] = &w.input_ids; off[6] = &w.token_type_ids;
    off[7] = &w.position_ids; off[8] = &w.cu_seqlens; off[9] = &w.work_seq;
    off[10] = &w.work_q; off[11] = &w.pooled; off[12] = &w.token_logits;
    off[13] = &w.gemm_ws;
    ok = 1;
    for (i = 0; i < 14; i++) {
        ok &= *off[i] % AISERVE_GPU_ALIGN == 0;
        if (i > 0) {
            ok &= *off[i] > *off[i - 1];
        }
    }
    ok &= w.ctx - w.x >= (size_t) 16384 * 768 * 2
          && w.f - w.qkv >= (size_t) 16384 * 3 * 768 * 2
          && w.input_ids - w.f >= (size_t) 16384 * 3072 * 2
          && w.gemm_ws - w.token_logits >= (size_t) 16384 * 9 * 4
          && w.total - w.gemm_ws == AISERVE_GPU_GEMM_WORKSPACE;
    tap_ok(ok, "buffers 256-B aligned, in order, none overlapping");

    tap_ok(aiserve_gpu_workspace_plan(&w, SIZE_MAX / 4, 1, 768, 3072, 0, 2,
                                      err, sizeof(err)) == -1
           && strstr(err, "overflow") != NULL,
           "an overflowing size is an error: %s", err);
    tap_ok(aiserve_gpu_workspace_plan(&w, 0, 1, 768, 3072, 0, 2, err,
                                      sizeof(err)) == -1,
           "T_max 0 is an error: %s", err);

    /* the engine's reading of a real config.json */
    if (aiserve_model_read_config(MINILM, &info, err, sizeof(err)) != 0) {
        tap_ok(0, "config of %s: %s", MINILM, err);
        return;
    }
    tap_ok(aiserve_gpu_workspace_plan(&w, 4096, 32, info.hidden_size,
                                      info.intermediate_size, 0, 2, err,
                                      sizeof(err)) == 0
           && w.activation_bytes == (size_t) 4096 * 7680
           && w.activation_bytes == (size_t) 30 << 20,
           "all-MiniLM-L6-v2 (H %zu, I %zu): 7,680 bytes a token, 30 MiB "
           "at 4096 tokens", info.hidden_size, info.intermediate_size);
    aiserve_model_info_clear(&info);
}

int
main(void)
{
    test_fp16();
    test_bf16();
    test_pack();
    test_pack_tokenizer();
    test_workspace();
    return tap_done();
}
