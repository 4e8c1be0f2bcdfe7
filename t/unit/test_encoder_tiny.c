/*
 * Tiny random BERT classifiers (models/tiny-bert-*, from
 * tools/gen-encoder-fixtures.py) against transformers' logits: sequence
 * classification (single-label, multi-label, regression, text pairs), token
 * classification, f32 and bf16 checkpoints, bert.-prefixed gamma/beta
 * naming (num-04), exact erf GELU (num-03), batch invariance.
 */
#include "tap.h"
#include "encoder_util.h"
#include "aiserve_ops.h"

#define FIXTURE  "t/data/encoder-tiny.jsonl"

/* bf16 weights (8 bits of mantissa, relative rounding up to 2^-9) against
 * the f32 model they were rounded from, through 2 layers: measured max
 * |diff| 9.2e-3 (sequence classifier) and 3.6e-2 (token classifier, logits
 * up to about 3).  The exact check of a bf16 checkpoint is the 1e-4 one
 * against transformers running the same bf16 weights in fp32. */
#define BF16_VS_F32_TOL  5e-2

typedef struct {
    const char       *name;
    aiserve_arch_e    arch;
    aiserve_problem_e problem;
    size_t            num_labels;
    const char       *label0, *label_last;
    aiserve_pooling_e pooling;            /* BertModel */
    int               normalize;
} expect_t;

static const expect_t  expects[] = {
    { "tiny-bert-seq-cls", AISERVE_ARCH_SEQUENCE_CLASSIFICATION,
      AISERVE_PROBLEM_SINGLE_LABEL, 2, "negative", "positive", 0, 0 },
    { "tiny-bert-seq-cls-bf16", AISERVE_ARCH_SEQUENCE_CLASSIFICATION,
      AISERVE_PROBLEM_SINGLE_LABEL, 2, "negative", "positive", 0, 0 },
    { "tiny-bert-seq-multilabel", AISERVE_ARCH_SEQUENCE_CLASSIFICATION,
      AISERVE_PROBLEM_MULTI_LABEL, 3, "toxic", "threat", 0, 0 },
    { "tiny-bert-seq-regression", AISERVE_ARCH_SEQUENCE_CLASSIFICATION,
      AISERVE_PROBLEM_REGRESSION, 1, "score", "score", 0, 0 },
    { "tiny-bert-ner", AISERVE_ARCH_TOKEN_CLASSIFICATION,
      AISERVE_PROBLEM_SINGLE_LABEL, 9, "O", "I-MISC", 0, 0 },
    { "tiny-bert-ner-bf16", AISERVE_ARCH_TOKEN_CLASSIFICATION,
      AISERVE_PROBLEM_SINGLE_LABEL, 9, "O", "I-MISC", 0, 0 },
    { "tiny-st-cls", AISERVE_ARCH_BERT_MODEL, AISERVE_PROBLEM_SINGLE_LABEL,
      0, NULL, NULL, AISERVE_POOLING_CLS, 1 },
    { "tiny-st-max", AISERVE_ARCH_BERT_MODEL, AISERVE_PROBLEM_SINGLE_LABEL,
      0, NULL, NULL, AISERVE_POOLING_MAX, 0 },
};

#define N_MODELS  (sizeof(expects) / sizeof(expects[0]))


static void
test_gelu_ops(void)
{
    /* num-03, kernel level: "gelu" is 0.5 x (1 + erf(x / sqrt 2)) */
    float   x[] = { -5.f, -3.f, -2.f, -1.5f, -1.f, -0.5f, 0.f, 0.5f, 1.f,
                    1.5f, 2.f, 3.f, 5.f, 10.f };
    float   zero[14] = { 0 }, a[14], b[14];
    double  d_erf = 0, d_tanh = 0, ref, tanh_form, v;
    size_t  i, n = sizeof(x) / sizeof(x[0]);

    memcpy(a, x, sizeof(x));
    memcpy(b, x, sizeof(x));
    aiserve_bias_act(a, zero, 1, n, AISERVE_ACT_GELU_ERF);
    aiserve_bias_act(b, zero, 1, n, AISERVE_ACT_GELU_TANH);
    for (i = 0; i < n; i++) {
        v = x[i];
        ref = 0.5 * v * (1 + erf(v / sqrt(2.0)));
        tanh_form = 0.5 * v * (1 + tanh(sqrt(2 / M_PI)
                                        * (v + 0.044715 * v * v * v)));
        d_erf = fmax(d_erf, fabs(a[i] - ref));
        d_tanh = fmax(d_tanh, fabs(b[i] - tanh_form));
    }
    tap_ok(d_erf <= 2e-6, "num-03: gelu kernel = 0.5x(1+erf(x/sqrt2)): max "
           "|diff| %.2e vs double erf", d_erf);
    tap_ok(d_tanh <= 2e-6, "gelu_new kernel = tanh form: max |diff| %.2e",
           d_tanh);
    /* at x = -1.5 the two forms differ by about 3e-4 */
    tap_ok(fabs(a[3] - b[3]) > 1e-4, "erf and tanh forms are told apart "
           "(%.2e at x = -1.5)", fabs(a[3] - b[3]));
}


int
main(void)
{
    aiserve_model_t    *models[N_MODELS];
    aiserve_scratch_t  *scratch[N_MODELS];
    json_t             *fx, *line;
    char                err[512], dir[256];
    size_t              i, k, n, nl, ntok, nw;
    double              worst[N_MODELS], worst_tanh[N_MODELS];
    double              worst_f32[N_MODELS], d;
    int                 cases[N_MODELS], bad[N_MODELS];

    test_gelu_ops();

    for (k = 0; k < N_MODELS; k++) {
        const aiserve_model_info_t  *info;

        snprintf(dir, sizeof(dir), "models/%s", expects[k].name);
        models[k] = aiserve_model_load(dir, err, sizeof(err));
        if (!tap_ok(models[k] != NULL, "load %s", dir)) {
            tap_diag("%s", err);
            return tap_done();
        }
        info = aiserve_model_info(models[k]);
        if (expects[k].arch == AISERVE_ARCH_BERT_MODEL) {
            tap_ok(info->arch == AISERVE_ARCH_BERT_MODEL
                   && info->pooling == expects[k].pooling
                   && info->normalize == expects[k].normalize
                   && info->num_labels == 0 && info->hidden_size == 32,
                   "%s: BertModel, pooling %d, normalize %d (modules.json "
                   "of sentence-transformers 6)", expects[k].name,
                   (int) expects[k].pooling, expects[k].normalize);
        } else
        tap_ok(info->arch == expects[k].arch
               && info->problem_type == expects[k].problem
               && info->num_labels == expects[k].num_labels
               && strcmp(info->id2label[0], expects[k].label0) == 0
               && strcmp(info->id2label[info->num_labels - 1],
                         expects[k].label_last) == 0
               && info->hidden_size == 32 && info->num_hidden_layers == 2,
               "%s: architecture, problem_type, %zu labels %s..%s",
               expects[k].name, expects[k].num_labels, expects[k].label0,
               expects[k].label_last);
        scratch[k] = aiserve_scratch_create(models[k], 4096, err,
                                            sizeof(err));
        worst[k] = worst_tanh[k] = worst_f32[k] = 0;
        cases[k] = bad[k] = 0;
    }

    fx = enc_load_jsonl(FIXTURE);
    if (!tap_ok(fx != NULL && json_array_size(fx) > 0, "fixture %s",
                FIXTURE))
    {
        return tap_done();
    }

    json_array_foreach(fx, i, line) {
        const char  *name = json_string_value(json_object_get(line, "model"));
        int32_t     *ids, *types;
        float       *want, *out, *other;
        json_t      *j;

        for (k = 0; k < N_MODELS; k++) {
            if (strcmp(name, expects[k].name) == 0) {
                break;
            }
        }
        if (k == N_MODELS) {
            tap_ok(0, "fixture names an unknown model %s", name);
            continue;
        }
        ids = enc_ids(json_object_get(line, "input_ids"), &ntok);
        types = enc_ids(json_object_get(line, "token_type_ids"), &n);
        if (expects[k].arch == AISERVE_ARCH_BERT_MODEL) {
            want = enc_floats(json_object_get(line, "embedding"), &nw);
            nl = 32;
        } else {
            want = enc_floats(json_object_get(line, "logits"), &nw);
            nl = aiserve_model_info(models[k])->num_labels;
        }
        out = malloc((ntok * nl + 1) * sizeof(float));
        cases[k]++;
        if (enc_forward_one(models[k], scratch[k], ids, types, ntok, out, err,
                            sizeof(err)) != 0)
        {
            tap_diag("%s case %zu: %s", name, i, err);
            bad[k]++;
        } else {
            if (nw != (expects[k].arch == AISERVE_ARCH_TOKEN_CLASSIFICATION
                       ? ntok * nl : nl) || nl == 0)
            {
                tap_diag("%s case %zu: %zu logits expected", name, i, nw);
                bad[k]++;
            } else {
                d = enc_max_diff(out, want, nw);
                worst[k] = d > worst[k] ? d : worst[k];
            }
            j = json_object_get(line, "logits_tanh_gelu");
            if (j != NULL) {
                other = enc_floats(j, &n);
                d = enc_max_diff(want, other, nw);
                worst_tanh[k] = d > worst_tanh[k] ? d : worst_tanh[k];
                free(other);
            }
            j = json_object_get(line, "logits_f32_model");
            if (j != NULL) {
                other = enc_floats(j, &n);
                d = enc_max_diff(out, other, nw);
                worst_f32[k] = d > worst_f32[k] ? d : worst_f32[k];
                free(other);
            }
        }
        free(ids);
        free(types);
        free(want);
        free(out);
    }

    for (k = 0; k < N_MODELS; k++) {
        tap_ok(cases[k] > 0 && bad[k] == 0 && worst[k] <= 1e-4,
               "%s: %d cases, %s max|diff| %.2e vs %s (<= 1e-4)",
               expects[k].name, cases[k],
               expects[k].num_labels ? "logits" : "embeddings", worst[k],
               expects[k].num_labels ? "transformers"
                                     : "sentence-transformers encode");
        if (worst_tanh[k] > 0) {
            tap_ok(worst[k] * 10 < worst_tanh[k],
                   "num-03: %s (hidden_act gelu) is 10x closer to the erf "
                   "reference (%.2e) than the tanh form is (%.2e)",
                   expects[k].name, worst[k], worst_tanh[k]);
        }
        if (worst_f32[k] > 0) {
            tap_ok(worst_f32[k] <= BF16_VS_F32_TOL,
                   "%s vs the f32 model it was rounded from: %.2e "
                   "(<= %.0e, bf16 weights)", expects[k].name,
                   worst_f32[k], BF16_VS_F32_TOL);
        }
    }
    tap_ok(strcmp(expects[4].name, "tiny-bert-ner") == 0 && bad[4] == 0
           && cases[4] > 0 && worst[4] <= 1e-4,
           "num-04: bert.-prefixed LayerNorm.gamma/beta checkpoint loads and "
           "matches transformers (%.2e)", worst[4]);

    /* batch invariance with token_type_ids: every case of each model in
     * one packed batch == the case alone */
    for (k = 0; k < N_MODELS; k++) {
        int32_t  ids[4096], types[4096];
        size_t   lens[64], nseq = 0, T = 0, t, o = 0;
        float   *out, *alone;
        double   worst_b = 0;
        aiserve_batch_t  b;

        json_array_foreach(fx, i, line) {
            json_t  *a = json_object_get(line, "input_ids");
            json_t  *tt = json_object_get(line, "token_type_ids");

            if (strcmp(json_string_value(json_object_get(line, "model")),
                       expects[k].name) != 0 || nseq == 64)
            {
                continue;
            }
            lens[nseq++] = json_array_size(a);
            for (t = 0; t < json_array_size(a); t++, T++) {
                ids[T] = (int32_t) json_integer_value(json_array_get(a, t));
                types[T] = (int32_t) json_integer_value(json_array_get(tt,
                                                                       t));
            }
        }
        b.input_ids = ids;
        b.token_type_ids = types;
        b.seq_lens = lens;
        b.n_seqs = nseq;
        n = aiserve_model_output_len(models[k], &b);
        out = malloc(n * sizeof(float));
        alone = malloc(n * sizeof(float));
        if (aiserve_model_forward(models[k], &b, scratch[k], out, err,
                                  sizeof(err)) != 0)
        {
            worst_b = INFINITY;
        }
        for (i = 0, T = 0; i < nseq && worst_b == 0; i++) {
            size_t  per = expects[k].arch == AISERVE_ARCH_TOKEN_CLASSIFICATION
                          ? lens[i] * expects[k].num_labels
                          : expects[k].arch == AISERVE_ARCH_BERT_MODEL
                          ? 32 : expects[k].num_labels;

            enc_forward_one(models[k], scratch[k], ids + T, types + T,
                            lens[i], alone + o, err, sizeof(err));
            T += lens[i];
            o += per;
        }
        if (worst_b == 0) {
            worst_b = enc_max_diff(out, alone, n);
        }
        tap_ok(worst_b <= 1e-5, "%s: %zu sequences in one batch == each "
               "alone (%.2e)", expects[k].name, nseq, worst_b);
        free(out);
        free(alone);
    }

    for (k = 0; k < N_MODELS; k++) {
        aiserve_scratch_free(scratch[k]);
        aiserve_model_free(models[k]);
    }
    json_decref(fx);
    return tap_done();
}
