/*
 * The training engine's behaviours beyond the PyTorch fixtures
 * (test_train_grad.c): dropout (off is deterministic; on is reproducible
 * from its seed, differs between seeds, and its gradient is that of the
 * loss under the same masks, by central differences), a new head's
 * initialisation (normal(0, initializer_range), zero bias, from the
 * seed; a missing pooler drawn the same way, a present one kept), bf16
 * checkpoints, results that depend on the thread count
 * only (and barely), and clear errors for bad input.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include <jansson.h>

#include "tap.h"
#include "aiserve_safetensors.h"
#include "aiserve_train.h"

#define TINY    "models/tiny-bert-seq-cls"
#define MINILM  "models/all-MiniLM-L6-v2"

static size_t  n_grads;

/* two sequences of the tiny vocabulary */
static const int32_t  ids[] = { 2, 45, 301, 77, 9, 1200, 3, 2, 88, 640, 3 };
static const size_t   lens[] = { 7, 4 };
static const int32_t  labels[] = { 1, 0 };


static aiserve_train_t *
load(const char *dir, aiserve_arch_e arch, size_t num_labels, uint64_t seed)
{
    aiserve_train_opts_t  o;
    aiserve_train_t      *t;
    char                  err[512];

    memset(&o, 0, sizeof(o));
    o.arch = arch;
    o.num_labels = num_labels;
    o.problem_type = AISERVE_PROBLEM_SINGLE_LABEL;
    o.seed = seed;
    t = aiserve_train_load(dir, &o, err, sizeof(err));
    if (t == NULL) {
        tap_diag("%s: %s", dir, err);
    }
    return t;
}


static aiserve_train_batch_t
batch(void)
{
    aiserve_train_batch_t  b;

    memset(&b, 0, sizeof(b));
    b.input_ids = ids;
    b.seq_lens = lens;
    b.n_seqs = 2;
    b.label_ids = labels;
    return b;
}


static float
loss_of(aiserve_train_t *t, int dropout, uint64_t seed)
{
    aiserve_train_batch_t  b = batch();
    char                   err[256];
    float                  loss = NAN;

    aiserve_train_set_dropout(t, dropout, seed);
    if (aiserve_train_forward(t, &b, &loss, err, sizeof(err)) != 0) {
        tap_diag("forward: %s", err);
    }
    return loss;
}


/*
 * The gradient under dropout of the largest-gradient element of each
 * tensor NAMES against central differences of the loss under the same
 * masks (the seed re-set before each pass), and against the gradient
 * with dropout off, from which it must differ.
 */
static void
fd_check(aiserve_train_t *t, const char **names, size_t n_names,
    const char *what)
{
    const aiserve_train_tensor_t  *x;
    aiserve_train_batch_t          b = batch();
    float                         *g_drop, *g_off, *p, l0, l1, saved;
    double                         fd, worst = 0, moved = 0;
    size_t                         i, j, best, checked = 0;
    char                           err[256];

    g_off = malloc(aiserve_train_n_params(t) * sizeof(float));
    g_drop = malloc(aiserve_train_n_params(t) * sizeof(float));
    aiserve_train_set_dropout(t, 0, 7);
    aiserve_train_forward(t, &b, &l0, err, sizeof(err));
    aiserve_train_zero_grad(t);
    aiserve_train_backward(t, 1.f, err, sizeof(err));
    memcpy(g_off, aiserve_train_grads(t),
           aiserve_train_n_params(t) * sizeof(float));
    aiserve_train_set_dropout(t, 1, 7);
    aiserve_train_forward(t, &b, &l0, err, sizeof(err));
    aiserve_train_zero_grad(t);
    aiserve_train_backward(t, 1.f, err, sizeof(err));
    memcpy(g_drop, aiserve_train_grads(t),
           aiserve_train_n_params(t) * sizeof(float));
    p = aiserve_train_params(t);
    for (i = 0; i < n_names; i++) {
        x = aiserve_train_find(t, names[i]);
        if (x == NULL) {
            tap_diag("no tensor %s", names[i]);
            worst = INFINITY;
            continue;
        }
        best = x->offset;
        for (j = x->offset; j < x->offset + x->n; j++) {
            best = fabsf(g_drop[j]) > fabsf(g_drop[best]) ? j : best;
        }
        saved = p[best];
        p[best] = saved + 1e-2f;
        l1 = loss_of(t, 1, 7);
        p[best] = saved - 1e-2f;
        l0 = loss_of(t, 1, 7);
        p[best] = saved;
        fd = ((double) l1 - l0) / 2e-2;
        worst = fmax(worst, fabs(fd - g_drop[best])
                            / fmax(1e-2, fabs(g_drop[best])));
        moved = fmax(moved, fabs(g_drop[best] - g_off[best]));
        checked++;
    }
    tap_ok(checked == n_names && worst < 2e-2,
           "%s: the largest gradient of %zu tensors matches central "
           "differences (worst relative error %.2e)", what, checked, worst);
    tap_ok(moved > 1e-3, "%s: those gradients differ from dropout off's "
           "(by up to %.3e)", what, moved);
    free(g_off);
    free(g_drop);
}


static void
test_dropout(void)
{
    aiserve_train_t               *t = load(TINY, AISERVE_ARCH_BERT_MODEL, 0,
                                            1);
    aiserve_train_opts_t           o;
    const aiserve_train_tensor_t  *x;
    char                           err[256];
    float                          l0, l1;
    size_t                         i, j;
    const char                    *names[] = {
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.0.attention.self.value.bias",
        "bert.encoder.layer.1.attention.output.dense.weight",
        "bert.encoder.layer.1.intermediate.dense.weight",
        "bert.encoder.layer.1.output.LayerNorm.bias",
        "bert.pooler.dense.weight",
        "classifier.weight",
    };
    const char                    *lora[] = {
        "bert.encoder.layer.0.attention.self.query.lora_A.weight",
        "bert.encoder.layer.0.attention.self.key.lora_B.weight",
        "bert.encoder.layer.1.attention.self.value.lora_A.weight",
        "bert.encoder.layer.1.attention.self.query.lora_B.weight",
        "classifier.weight",
    };

    if (!tap_ok(t != NULL, "tiny model loads")) {
        return;
    }
    l0 = loss_of(t, 0, 1);
    tap_ok(l0 == loss_of(t, 0, 2), "dropout off: the same loss twice, any "
           "seed (%.7f)", l0);
    l1 = loss_of(t, 1, 7);
    tap_ok(l1 == loss_of(t, 1, 7), "dropout on: the same seed gives the "
           "same loss (%.7f)", l1);
    tap_ok(l1 != l0 && l1 != loss_of(t, 1, 8), "dropout on: differs from "
           "off (%.7f) and between seeds (%.7f)", l0, loss_of(t, 1, 8));
    fd_check(t, names, sizeof(names) / sizeof(names[0]), "dropout on");
    aiserve_train_free(t);

    /* LoRA with its own dropout on the adapters' input, on q, k and v;
     * lora_B drawn (it starts at 0, which leaves lora_A no gradient) */
    aiserve_train_opts_defaults(&o);
    o.seed = 3;
    o.mode = AISERVE_TRAIN_LORA;
    o.lora_dropout = 0.3f;
    o.lora_targets = AISERVE_LORA_QUERY | AISERVE_LORA_KEY
                     | AISERVE_LORA_VALUE;
    t = aiserve_train_load(TINY, &o, err, sizeof(err));
    if (!tap_ok(t != NULL, "tiny model loads in lora mode on q, k, v")) {
        tap_diag("%s", err);
        return;
    }
    for (i = 0; i < aiserve_train_n_tensors(t); i++) {
        x = aiserve_train_tensor(t, i);
        for (j = 0; strstr(x->name, "lora_B") != NULL && j < x->n; j++) {
            aiserve_train_params(t)[x->offset + j] =
                0.05f * (float) ((int) ((j * 2654435761u) % 2001) - 1000)
                / 1000.f;
        }
    }
    fd_check(t, lora, sizeof(lora) / sizeof(lora[0]), "lora dropout on");
    aiserve_train_free(t);
}


static void
test_new_head(void)
{
    aiserve_train_t               *a, *b;
    const aiserve_train_tensor_t  *w, *bias;
    const float                   *p;
    double                         mean = 0, var = 0, zero = 0;
    size_t                         i;

    a = load(MINILM, AISERVE_ARCH_SEQUENCE_CLASSIFICATION, 77, 5);
    b = load(MINILM, AISERVE_ARCH_SEQUENCE_CLASSIFICATION, 77, 6);
    if (!tap_ok(a != NULL && b != NULL, "MiniLM loads with a new 77-label "
                "sequence head"))
    {
        aiserve_train_free(a);
        aiserve_train_free(b);
        return;
    }
    w = aiserve_train_find(a, "classifier.weight");
    bias = aiserve_train_find(a, "classifier.bias");
    tap_ok(w != NULL && w->shape[0] == 77 && w->shape[1] == 384
           && aiserve_train_info(a)->num_labels == 77,
           "classifier.weight is [77, 384]");
    p = aiserve_train_params(a) + w->offset;
    for (i = 0; i < w->n; i++) {
        mean += p[i];
    }
    mean /= (double) w->n;
    for (i = 0; i < w->n; i++) {
        var += (p[i] - mean) * (p[i] - mean);
    }
    var /= (double) w->n;
    for (i = 0; i < bias->n; i++) {
        zero += fabsf(aiserve_train_params(a)[bias->offset + i]);
    }
    tap_ok(fabs(mean) < 1e-3 && fabs(sqrt(var) - 0.02) < 1e-3 && zero == 0,
           "new head: weight mean %.2e std %.5f (initializer_range 0.02), "
           "bias 0", mean, sqrt(var));
    tap_ok(memcmp(p, aiserve_train_params(b) + w->offset,
                  w->n * sizeof(float)) != 0,
           "new head: another seed draws other numbers");
    aiserve_train_free(b);
    b = load(MINILM, AISERVE_ARCH_SEQUENCE_CLASSIFICATION, 77, 5);
    tap_ok(b != NULL && memcmp(p, aiserve_train_params(b) + w->offset,
                               w->n * sizeof(float)) == 0,
           "new head: the same seed draws the same numbers");
    aiserve_train_free(a);
    aiserve_train_free(b);

    a = load(MINILM, AISERVE_ARCH_TOKEN_CLASSIFICATION, 9, 5);
    tap_ok(a != NULL && aiserve_train_find(a, "bert.pooler.dense.weight")
                        == NULL
           && aiserve_train_find(a, "classifier.weight")->shape[0] == 9,
           "MiniLM with a new token head: no pooler, classifier [9, 384]");
    aiserve_train_free(a);
}


static void
test_bf16(void)
{
    aiserve_train_t               *a = load(TINY, AISERVE_ARCH_BERT_MODEL, 0,
                                            1);
    aiserve_train_t               *b = load("models/tiny-bert-seq-cls-bf16",
                                            AISERVE_ARCH_BERT_MODEL, 0, 1);
    const aiserve_train_tensor_t  *x;
    double                         m = 0;
    size_t                         i;
    float                          la, lb;

    if (!tap_ok(a != NULL && b != NULL, "a bf16 checkpoint loads")) {
        aiserve_train_free(a);
        aiserve_train_free(b);
        return;
    }
    x = aiserve_train_find(b, "bert.encoder.layer.0.intermediate.dense.weight");
    for (i = 0; i < x->n; i++) {
        m = fmax(m, fabs(aiserve_train_params(a)[x->offset + i]
                         - aiserve_train_params(b)[x->offset + i])
                    / fmax(1e-3, fabs(aiserve_train_params(a)[x->offset
                                                               + i])));
    }
    la = loss_of(a, 0, 0);
    lb = loss_of(b, 0, 0);
    tap_ok(m < 1.0 / 128 && fabsf(la - lb) < 5e-2,
           "bf16 weights are the f32 ones rounded (max relative %.2e), "
           "loss %.4f against %.4f", m, lb, la);
    aiserve_train_free(a);
    aiserve_train_free(b);
}


static void
test_errors(void)
{
    aiserve_train_opts_t    o;
    aiserve_train_t        *t;
    aiserve_train_batch_t   b = batch();
    int32_t                 bad_ids[11], bad_labels[2] = { 2, 0 };
    size_t                  long_len[1] = { 129 };
    aiserve_optim_config_t  oc;
    char                    err[512];
    float                   loss;

    memset(&o, 0, sizeof(o));
    err[0] = '\0';
    tap_ok(aiserve_train_load(MINILM, &o, err, sizeof(err)) == NULL
           && strstr(err, "no head") != NULL,
           "a BertModel checkpoint without a task: %s", err);
    o.arch = AISERVE_ARCH_TOKEN_CLASSIFICATION;
    o.num_labels = 3;
    tap_ok(aiserve_train_load(TINY, &o, err, sizeof(err)) == NULL
           && strstr(err, "another task") != NULL,
           "a sequence classifier asked to tag tokens: %s", err);
    o.arch = AISERVE_ARCH_SEQUENCE_CLASSIFICATION;
    o.num_labels = 0;
    tap_ok(aiserve_train_load(MINILM, &o, err, sizeof(err)) == NULL
           && strstr(err, "num_labels") != NULL,
           "a new head with no labels: %s", err);
    tap_ok(aiserve_train_load("models/no-such-model", &o, err, sizeof(err))
           == NULL && strstr(err, "no-such-model") != NULL,
           "a missing directory: %s", err);

    t = load(TINY, AISERVE_ARCH_BERT_MODEL, 0, 1);
    if (t == NULL) {
        return;
    }
    tap_ok(aiserve_train_backward(t, 1.f, err, sizeof(err)) == -1
           && strstr(err, "forward") != NULL,
           "backward before forward: %s", err);
    memcpy(bad_ids, ids, sizeof(ids));
    bad_ids[3] = 1346;
    b.input_ids = bad_ids;
    tap_ok(aiserve_train_forward(t, &b, &loss, err, sizeof(err)) == -1
           && strstr(err, "input_ids[3] = 1346") != NULL,
           "an id out of the vocabulary: %s", err);
    b = batch();
    b.label_ids = bad_labels;
    tap_ok(aiserve_train_forward(t, &b, &loss, err, sizeof(err)) == -1
           && strstr(err, "label 0 = 2") != NULL,
           "a label out of range: %s", err);
    tap_ok(aiserve_train_backward(t, 1.f, err, sizeof(err)) == -1,
           "no backward after a failed forward");
    b = batch();
    b.seq_lens = long_len;
    b.n_seqs = 1;
    tap_ok(aiserve_train_forward(t, &b, &loss, err, sizeof(err)) == -1
           && strstr(err, "129 tokens") != NULL,
           "a sequence over max_position_embeddings: %s", err);
    aiserve_optim_defaults(&oc);
    tap_ok(aiserve_train_step(t, &oc, NULL, NULL, err, sizeof(err)) == -1
           && strstr(err, "total_steps") != NULL,
           "a step without total_steps: %s", err);
    b = batch();
    b.label_ids = NULL;
    tap_ok(aiserve_train_forward(t, &b, &loss, err, sizeof(err)) == 0
           && loss == 0.f
           && aiserve_train_backward(t, 1.f, err, sizeof(err)) == -1,
           "forward without labels: logits only, no backward");
    aiserve_train_free(t);
}


/* Gradients of MiniLM with a new head under dropout with THREADS threads
 * (its weight-gradient products are large enough to be split). */
static float *
grads_with(int threads)
{
    aiserve_train_opts_t   o;
    aiserve_train_t       *t;
    aiserve_train_batch_t  b = batch();
    char                   err[256];
    float                  loss, *g = NULL;

    aiserve_train_opts_defaults(&o);
    o.threads = threads;
    o.arch = AISERVE_ARCH_SEQUENCE_CLASSIFICATION;
    o.num_labels = 5;
    t = aiserve_train_load(MINILM, &o, err, sizeof(err));
    if (t == NULL) {
        tap_diag("%s", err);
        return NULL;
    }
    aiserve_train_set_dropout(t, 1, 3);
    if (aiserve_train_forward(t, &b, &loss, err, sizeof(err)) == 0
        && aiserve_train_backward(t, 1.f, err, sizeof(err)) == 0)
    {
        g = malloc(aiserve_train_n_params(t) * sizeof(float));
        memcpy(g, aiserve_train_grads(t),
               aiserve_train_n_params(t) * sizeof(float));
    }
    n_grads = aiserve_train_n_params(t);
    aiserve_train_free(t);
    return g;
}


static void
test_threads(void)
{
    float   *a = grads_with(1), *b = grads_with(1), *c = grads_with(2);
    float   *d = grads_with(2);
    double   m = 0, gmax = 0;
    size_t   i;

    if (!tap_ok(a != NULL && b != NULL && c != NULL && d != NULL,
                "gradients with 1 and 2 threads"))
    {
        return;
    }
    tap_ok(memcmp(a, b, n_grads * sizeof(float)) == 0
           && memcmp(c, d, n_grads * sizeof(float)) == 0,
           "the same seed and thread count: bit-identical gradients (1 and "
           "2 threads)");
    for (i = 0; i < n_grads; i++) {
        m = fmax(m, fabs((double) a[i] - c[i]));
        gmax = fmax(gmax, fabs(a[i]));
    }
    tap_ok(m <= 1e-5 * gmax, "2 threads against 1: max|diff| %.2e (max|g| "
           "%.3e)", m, gmax);
    free(a);
    free(b);
    free(c);
    free(d);
}


/*
 * DIR gets a copy of models/tiny-st-cls without its pooler: config.json
 * as it is, model.safetensors rewritten (8-byte header length, JSON
 * header, the F32 data) without the two bert.pooler tensors.
 */
static int
write_poolerless(const char *dir)
{
    aiserve_st_file_t  *st;
    json_t             *hdr, *e;
    char                path[1024], err[256], *text;
    FILE               *f;
    size_t              i, off = 0;
    uint64_t            len;
    int                 rc;

    st = aiserve_st_open("models/tiny-st-cls/model.safetensors", err,
                         sizeof(err));
    if (st == NULL || mkdir(dir, 0755) != 0) {
        aiserve_st_close(st);
        return -1;
    }
    snprintf(path, sizeof(path), "cp models/tiny-st-cls/config.json %s/",
             dir);
    rc = system(path);
    hdr = json_object();
    for (i = 0; i < st->n_tensors; i++) {
        const aiserve_st_tensor_t  *t = &st->tensors[i];

        if (strstr(t->name, "pooler") != NULL || t->dtype != AISERVE_ST_F32) {
            continue;
        }
        e = json_pack("{s:s, s:[I, I], s:[I, I]}", "dtype", "F32", "shape",
                      (json_int_t) t->shape[0],
                      (json_int_t) (t->ndim == 2 ? t->shape[1] : 1),
                      "data_offsets", (json_int_t) off,
                      (json_int_t) (off + t->n_bytes));
        if (t->ndim == 1) {
            json_array_remove(json_object_get(e, "shape"), 1);
        }
        json_object_set_new(hdr, t->name, e);
        off += t->n_bytes;
    }
    text = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS);
    len = strlen(text);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    f = fopen(path, "wb");
    rc = rc != 0 || f == NULL;
    if (f != NULL) {
        fwrite(&len, 8, 1, f);
        fwrite(text, 1, len, f);
        /* the data in the order of the offsets given: sorted by name,
         * as the reader sorts them */
        for (i = 0; i < st->n_tensors; i++) {
            const aiserve_st_tensor_t  *t = &st->tensors[i];

            if (strstr(t->name, "pooler") == NULL
                && t->dtype == AISERVE_ST_F32)
            {
                fwrite(t->data, 1, t->n_bytes, f);
            }
        }
        fclose(f);
    }
    free(text);
    json_decref(hdr);
    aiserve_st_close(st);
    return rc ? -1 : 0;
}


/* A BertModel checkpoint without a pooler gets one initialised as
 * transformers does (normal(0, initializer_range), zero bias); one with
 * a pooler keeps its own. */
static void
test_pooler_init(void)
{
    aiserve_train_t               *a, *b;
    const aiserve_train_tensor_t  *w, *bias;
    aiserve_st_file_t             *st;
    const aiserve_st_tensor_t     *pw;
    char                           dir[] = "/tmp/aiserve-train-XXXXXX";
    char                           path[600], err[256];
    double                         mean = 0, var = 0, zero = 0;
    float                         *f;
    size_t                         i;

    if (mkdtemp(dir) == NULL) {
        tap_ok(0, "a temporary directory");
        return;
    }
    snprintf(path, sizeof(path), "%s/m", dir);
    tap_ok(write_poolerless(path) == 0, "tiny-st-cls without its pooler "
           "written to %s", path);
    a = load(path, AISERVE_ARCH_SEQUENCE_CLASSIFICATION, 3, 9);
    b = load("models/tiny-st-cls", AISERVE_ARCH_SEQUENCE_CLASSIFICATION, 3,
             9);
    if (!tap_ok(a != NULL && b != NULL, "both load with a new 3-label "
                "sequence head"))
    {
        aiserve_train_free(a);
        aiserve_train_free(b);
        return;
    }
    w = aiserve_train_find(a, "bert.pooler.dense.weight");
    bias = aiserve_train_find(a, "bert.pooler.dense.bias");
    for (i = 0; i < w->n; i++) {
        mean += aiserve_train_params(a)[w->offset + i];
    }
    mean /= (double) w->n;
    for (i = 0; i < w->n; i++) {
        var += pow(aiserve_train_params(a)[w->offset + i] - mean, 2);
    }
    var /= (double) w->n;
    for (i = 0; i < bias->n; i++) {
        zero += fabsf(aiserve_train_params(a)[bias->offset + i]);
    }
    tap_ok(fabs(mean) < 0.02 && fabs(sqrt(var) - 0.2) < 0.02 && zero == 0,
           "missing pooler: weight mean %.3f std %.3f (initializer_range "
           "0.2), bias 0", mean, sqrt(var));
    st = aiserve_st_open("models/tiny-st-cls/model.safetensors", err,
                         sizeof(err));
    pw = st != NULL ? aiserve_st_find(st, "pooler.dense.weight") : NULL;
    f = malloc(w->n * sizeof(float));
    tap_ok(pw != NULL && pw->n_elements == w->n
           && aiserve_st_to_f32(pw->dtype, pw->data, f, w->n) == 0
           && memcmp(f, aiserve_train_params(b) + w->offset,
                     w->n * sizeof(float)) == 0,
           "a checkpoint's pooler is kept");
    free(f);
    aiserve_st_close(st);
    aiserve_train_free(a);
    aiserve_train_free(b);
    snprintf(path, sizeof(path), "rm -r %s", dir);
    tap_ok(system(path) == 0, "temporary model removed");
}


static void
test_memory(void)
{
    aiserve_train_t         *t = load(MINILM,
                                      AISERVE_ARCH_SEQUENCE_CLASSIFICATION, 5,
                                      1);
    aiserve_train_batch_t    b = batch();
    aiserve_train_memory_t   m0, m1, m2;
    aiserve_optim_config_t   c;
    char                     err[256];
    float                    loss;
    size_t                   one[1] = { 7 };

    if (t == NULL) {
        tap_ok(0, "MiniLM loads");
        return;
    }
    aiserve_optim_defaults(&c);
    c.total_steps = 1;
    b.seq_lens = one;
    b.n_seqs = 1;
    aiserve_train_forward(t, &b, &loss, err, sizeof(err));
    aiserve_train_memory(t, &m0);
    b = batch();
    aiserve_train_forward(t, &b, &loss, err, sizeof(err));
    aiserve_train_backward(t, 1.f, err, sizeof(err));
    aiserve_train_step(t, &c, NULL, NULL, err, sizeof(err));
    aiserve_train_memory(t, &m1);
    b.seq_lens = one;
    b.n_seqs = 1;
    aiserve_train_forward(t, &b, &loss, err, sizeof(err));
    aiserve_train_memory(t, &m2);
    tap_ok(m0.weights == aiserve_train_n_params(t) * 4
           && m0.gradients == m0.weights && m0.optimizer == 0
           && m1.optimizer == 2 * m1.weights,
           "memory: %zu bytes of weights, as many of gradients, twice as "
           "many of optimiser state after a step", m0.weights);
    tap_ok(m0.activations > 0 && m1.activations > m0.activations
           && m2.activations == m1.activations,
           "memory: activations %zu bytes for 7 tokens, %zu for 11, kept "
           "for a smaller batch", m0.activations, m1.activations);
    aiserve_train_free(t);
}


int
main(void)
{
    test_pooler_init();
    test_memory();
    test_threads();
    test_dropout();
    test_new_head();
    test_bf16();
    test_errors();
    return tap_done();
}
