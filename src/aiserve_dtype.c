/*
 * aiserve dtype choice (see aiserve_dtype.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aiserve_dtype.h"
#include "aiserve_err.h"


/* The sentences of the load-time check: short and long, lower and upper
 * case, digits and punctuation, accents, CJK, emoji, a word the
 * vocabulary splits; the longest about 120 tokens. */
static const char  *aiserve_parity_sentences[] = {
    "Hello!",
    "The cat sat on the mat.",
    "How do I reset my password if I no longer have access to my email?",
    "My card was charged twice for the same purchase on 12/03, "
    "please refund EUR 49.99.",
    "Zürich's café serves crème brûlée; naïve coöperation isn't rare.",
    "東京は日本の首都です。",
    "Das ist ein kurzer deutscher Satz über Wetter und Züge.",
    "I love this 😀 so much!!!",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "SELECT * FROM users WHERE id = 42; -- not a sentence at all",
    "The quarterly report shows revenue grew 12% year over year, driven "
    "by strong demand in the Asia-Pacific region, while operating costs "
    "rose only 4%, which lifted the margin to its highest level since "
    "the company went public in 2015.",
    "Once upon a time, in a village between two rivers, there lived an "
    "old clockmaker who repaired every clock in the valley but never "
    "fixed his own, which had stopped at a quarter past three on the day "
    "his daughter left for the city; travellers who passed through asked "
    "him why, and he would smile, wind a stranger's watch, and say that "
    "some hours are worth keeping, even when the rest of the world has "
    "moved on without them, and that a clock which tells the wrong time "
    "twice a day is still right about something."
};

#define AISERVE_PARITY_N \
    (sizeof(aiserve_parity_sentences) / sizeof(aiserve_parity_sentences[0]))


static double
aiserve_cosine(const float *a, const float *b, size_t n)
{
    double  ab = 0, aa = 0, bb = 0;
    size_t  i;

    for (i = 0; i < n; i++) {
        ab += (double) a[i] * b[i];
        aa += (double) a[i] * a[i];
        bb += (double) b[i] * b[i];
    }
    if (aa == 0 || bb == 0) {
        return aa == bb ? 1.0 : 0.0;
    }
    return ab / sqrt(aa * bb);
}


/* The argmax gate on one row of NL logits: counted where fp32's top two
 * lie more than the margin apart (one logit, a regression: where they
 * differ by more than the margin). */
static void
aiserve_parity_row(const float *f, const float *b, size_t nl, size_t sent,
    aiserve_parity_t *p)
{
    size_t  j, top = 0, top_b = 0;
    float   second = -INFINITY;

    if (nl == 1) {
        p->argmax_checked++;
        if (fabsf(f[0] - b[0]) > AISERVE_PARITY_MARGIN) {
            if (p->argmax_differ++ == 0) {
                p->argmax_first = sent;
            }
        }
        return;
    }
    for (j = 1; j < nl; j++) {
        if (f[j] > f[top]) {
            top = j;
        }
        if (b[j] > b[top_b]) {
            top_b = j;
        }
    }
    for (j = 0; j < nl; j++) {
        if (j != top && f[j] > second) {
            second = f[j];
        }
    }
    if (f[top] - second <= AISERVE_PARITY_MARGIN) {
        return;
    }
    p->argmax_checked++;
    if (top_b != top && p->argmax_differ++ == 0) {
        p->argmax_first = sent;
    }
}


int
aiserve_dtype_compare(const aiserve_model_t *fp32,
    const aiserve_model_t *bf16, const int32_t *const *ids,
    const size_t *lens, size_t n, double *cosine, aiserve_parity_t *p,
    char *err, size_t err_len)
{
    const aiserve_model_info_t  *info = aiserve_model_info(fp32);
    aiserve_scratch_t           *s32 = NULL, *s16 = NULL;
    aiserve_batch_t              batch;
    size_t                       i, r, rows, len, max_len = 1, out_max;
    float                       *o32 = NULL, *o16 = NULL;
    double                       c;
    int                          rc = -1;

    memset(p, 0, sizeof(*p));
    p->min_cosine = 1.0;
    for (i = 0; i < n; i++) {
        max_len = lens[i] > max_len ? lens[i] : max_len;
    }
    out_max = max_len * (info->num_labels > info->hidden_size
                         ? info->num_labels : info->hidden_size);
    s32 = aiserve_scratch_create(fp32, max_len, err, err_len);
    s16 = s32 ? aiserve_scratch_create(bf16, max_len, err, err_len) : NULL;
    o32 = malloc(out_max * sizeof(float));
    o16 = malloc(out_max * sizeof(float));
    if (s16 == NULL || o32 == NULL || o16 == NULL) {
        if (s16 != NULL) {
            aiserve_err(err, err_len, "out of memory");
        }
        goto done;
    }
    for (i = 0; i < n; i++) {
        batch.input_ids = ids[i];
        batch.token_type_ids = NULL;
        batch.seq_lens = &lens[i];
        batch.n_seqs = 1;
        if (aiserve_model_forward(fp32, &batch, s32, o32, err, err_len) != 0
            || aiserve_model_forward(bf16, &batch, s16, o16, err, err_len)
               != 0)
        {
            goto done;
        }
        len = aiserve_model_output_len(fp32, &batch);
        c = aiserve_cosine(o32, o16, len);
        if (cosine != NULL) {
            cosine[i] = c;
        }
        if (c < p->min_cosine) {
            p->min_cosine = c;
            p->worst = i;
        }
        if (info->arch != AISERVE_ARCH_BERT_MODEL) {
            rows = len / info->num_labels;
            for (r = 0; r < rows; r++) {
                aiserve_parity_row(o32 + r * info->num_labels,
                                   o16 + r * info->num_labels,
                                   info->num_labels, i, p);
            }
        }
    }
    p->n = n;
    p->pass = p->argmax_differ == 0
              && (info->arch != AISERVE_ARCH_BERT_MODEL
                  || p->min_cosine >= AISERVE_PARITY_MIN_COSINE);
    rc = 0;

done:
    free(o32);
    free(o16);
    aiserve_scratch_free(s32);
    aiserve_scratch_free(s16);
    return rc;
}


/* The built-in sentences through both models: P, or -1 with ERR. */
static int
aiserve_dtype_check(const aiserve_model_t *fp32, const aiserve_model_t *bf16,
    const aiserve_tok_t *tok, aiserve_parity_t *p, char *err,
    size_t err_len)
{
    const aiserve_model_info_t  *info = aiserve_model_info(fp32);
    aiserve_encoding_t           enc[AISERVE_PARITY_N];
    const int32_t               *ids[AISERVE_PARITY_N];
    size_t                       lens[AISERVE_PARITY_N], i, n = 0;
    aiserve_tok_opts_t           opts;
    int                          rc = -1;

    aiserve_tok_opts_default(&opts);
    opts.max_length = info->max_position_embeddings;
    opts.truncation = 1;
    for (n = 0; n < AISERVE_PARITY_N; n++) {
        if (aiserve_tok_encode(tok, aiserve_parity_sentences[n],
                               strlen(aiserve_parity_sentences[n]), NULL, 0,
                               &opts, &enc[n], err, err_len) != 0)
        {
            goto done;
        }
        ids[n] = enc[n].input_ids;
        lens[n] = enc[n].n_tokens;
    }
    rc = aiserve_dtype_compare(fp32, bf16, ids, lens, n, NULL, p, err,
                               err_len);

done:
    for (i = 0; i < n; i++) {
        aiserve_encoding_free(&enc[i]);
    }
    return rc;
}


/* What P measured, for the log: the gate of INFO's architecture. */
static void
aiserve_parity_describe(const aiserve_parity_t *p,
    const aiserve_model_info_t *info, char *buf, size_t len)
{
    if (info->arch == AISERVE_ARCH_BERT_MODEL) {
        aiserve_err(buf, len, "%zu built-in sentences: min cosine %.6f "
                    "(gate %.4f)", p->n, p->min_cosine,
                    AISERVE_PARITY_MIN_COSINE);
        return;
    }
    aiserve_err(buf, len, "%zu built-in sentences: argmax %s on %zu of %zu "
                "rows past a top-2 margin of %.2f", p->n,
                p->argmax_differ ? "differs" : "equal",
                p->argmax_differ ? p->argmax_differ : p->argmax_checked,
                p->argmax_checked, AISERVE_PARITY_MARGIN);
}


aiserve_model_t *
aiserve_model_load_dtype(const char *model_dir, const aiserve_tok_t *tok,
    aiserve_dtype_e want, char *note, size_t note_len, char *err,
    size_t err_len)
{
    aiserve_model_t   *f, *b;
    aiserve_parity_t   p;
    const char        *isa;
    char               why[256];
    int                native = aiserve_gemm_bf16_native(&isa);

    if (want == AISERVE_DTYPE_FP32 || (want == AISERVE_DTYPE_AUTO && !native))
    {
        f = aiserve_model_load_packed(model_dir, AISERVE_DTYPE_FP32, err,
                                      err_len);
        if (f != NULL) {
            aiserve_err(note, note_len, "dtype fp32%s%s%s",
                        want == AISERVE_DTYPE_AUTO
                        ? " (auto: the CPU has " : "",
                        want == AISERVE_DTYPE_AUTO ? isa : "",
                        want == AISERVE_DTYPE_AUTO ? ")" : "");
        }
        return f;
    }
    if (want == AISERVE_DTYPE_BF16) {
        b = aiserve_model_load_packed(model_dir, AISERVE_DTYPE_BF16, err,
                                      err_len);
        if (b != NULL) {
            aiserve_err(note, note_len, "dtype bf16 (%s, %zu bytes of "
                        "packed weights)", isa,
                        aiserve_model_packed_bytes(b));
        }
        return b;
    }

    f = aiserve_model_load_packed(model_dir, AISERVE_DTYPE_FP32, err,
                                  err_len);
    if (f == NULL) {
        return NULL;
    }
    b = aiserve_model_load_packed(model_dir, AISERVE_DTYPE_BF16, why,
                                  sizeof(why));
    if (b == NULL) {
        aiserve_err(note, note_len, "dtype fp32 (auto: bf16 did not load: "
                    "%s)", why);
        return f;
    }
    if (aiserve_dtype_check(f, b, tok, &p, why, sizeof(why)) != 0) {
        aiserve_model_free(b);
        aiserve_err(note, note_len, "dtype fp32 (auto: the parity check "
                    "failed: %s)", why);
        return f;
    }
    aiserve_parity_describe(&p, aiserve_model_info(f), why, sizeof(why));
    if (!p.pass) {
        aiserve_model_free(b);
        aiserve_err(note, note_len, "dtype fp32 (auto: bf16 misses the "
                    "parity gate: %s)", why);
        return f;
    }
    aiserve_model_free(f);
    aiserve_err(note, note_len, "dtype bf16 (auto: %s; %s; %zu bytes of "
                "packed weights)", isa, why, aiserve_model_packed_bytes(b));
    return b;
}
