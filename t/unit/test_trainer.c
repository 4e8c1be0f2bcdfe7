/*
 * The trainer (src/aiserve_trainer.h) on the tiny models and the small
 * sets of t/data/train: the loss goes down on a learnable task; two runs
 * with the same seed and thread count give the same bits, another seed
 * other bits; a run saved and restored (mid-epoch, at an epoch's end,
 * mid-evaluation, before head mode's features) ends with the parameters
 * and AdamW moments of an uninterrupted one, bit for bit, in the three
 * modes; batches keep to the token budget and trained_tokens is the
 * file's tokens times the epochs; written directories (full, head, lora)
 * load with aiserve_model_load() / aiserve_model_load_over() and serve
 * the trained numbers; an existing head keeps its labels; multi-label
 * and regression evaluations; bad input is a clear error.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "aiserve_model.h"
#include "aiserve_safetensors.h"
#include "aiserve_trainer.h"

#define SEQ_CLS   "models/tiny-bert-seq-cls"
#define NER       "models/tiny-bert-ner"
#define ST        "models/tiny-st-cls"
#define S_TRAIN   "t/data/train/sentiment-train.jsonl"
#define S_VALID   "t/data/train/sentiment-valid.jsonl"
#define N_CONLL   "t/data/train/ner.conll"
#define N_JSONL   "t/data/train/ner.jsonl"
#define A_CONLL   "t/data/train/accum.conll"
#define A_FIXTURE "t/data/train-accum.safetensors"

static char  tmpdir[] = "/tmp/aiserve-test-trainer-XXXXXX";


static int
read_set(const char *path, aiserve_dataset_t *ds)
{
    aiserve_data_opts_t  o;
    char                 err[512];

    aiserve_data_opts_default(&o);
    if (aiserve_data_read(path, &o, ds, err, sizeof(err)) != 0) {
        tap_diag("%s", err);
        return -1;
    }
    return 0;
}


static aiserve_trainer_t *
make(const aiserve_trainer_opts_t *o, const char *train, const char *valid)
{
    aiserve_dataset_t   tr, va;
    aiserve_trainer_t  *t = NULL;
    char                err[512];

    memset(&va, 0, sizeof(va));
    if (read_set(train, &tr) != 0
        || (valid != NULL && read_set(valid, &va) != 0))
    {
        aiserve_dataset_free(&tr);
        return NULL;
    }
    t = aiserve_trainer_create(o, &tr, valid ? &va : NULL, err, sizeof(err));
    if (t == NULL) {
        tap_diag("create: %s", err);
    }
    aiserve_dataset_free(&tr);
    aiserve_dataset_free(&va);
    return t;
}


/* Runs T to the end in chunks of CHUNK units; 0 or -1. */
static int
run(aiserve_trainer_t *t, size_t chunk)
{
    char  err[512];
    int   rc;

    while ((rc = aiserve_trainer_step(t, chunk, err, sizeof(err))) > 0) {
        /* the next chunk */
    }
    if (rc < 0) {
        tap_diag("step: %s", err);
    }
    return rc;
}


static void
opts(aiserve_trainer_opts_t *o, const char *model, aiserve_train_mode_e m)
{
    aiserve_trainer_opts_defaults(o, m);
    o->model_dir = model;
    o->batch_tokens = 64;
    o->learning_rate = 1e-3f;
}


/* Whether the trainable parameters and moments of A and B are equal. */
static int
same_state(aiserve_trainer_t *a, aiserve_trainer_t *b)
{
    aiserve_train_t  *ea = aiserve_trainer_engine(a);
    aiserve_train_t  *eb = aiserve_trainer_engine(b);
    float            *ma, *va, *mb, *vb;
    size_t           *sa, *sb, n = aiserve_train_n_params(ea);
    char              err[256];

    if (n != aiserve_train_n_params(eb)
        || aiserve_train_optim_state(ea, &ma, &va, &sa, err, sizeof(err))
        || aiserve_train_optim_state(eb, &mb, &vb, &sb, err, sizeof(err)))
    {
        return 0;
    }
    return *sa == *sb
           && memcmp(aiserve_train_params(ea), aiserve_train_params(eb),
                     n * sizeof(float)) == 0
           && memcmp(ma, mb, n * sizeof(float)) == 0
           && memcmp(va, vb, n * sizeof(float)) == 0;
}


static void
test_learns(void)
{
    aiserve_trainer_opts_t              o;
    aiserve_trainer_t                  *t;
    const aiserve_trainer_progress_t   *p;
    const aiserve_trainer_eval_t       *ev;
    double                              first = 0;
    char                                err[256];
    int                                 rc;

    opts(&o, SEQ_CLS, AISERVE_TRAIN_FULL);
    o.epochs = 12;
    o.dropout = 0;
    t = make(&o, S_TRAIN, S_VALID);
    if (!tap_ok(t != NULL, "learns: created")) {
        return;
    }
    p = aiserve_trainer_progress(t);
    tap_ok(p->total_steps > 0 && p->phase == AISERVE_TRAINER_TRAINING,
           "learns: %zu steps planned", p->total_steps);
    while ((rc = aiserve_trainer_step(t, 1000, err, sizeof(err))) > 0) {
        if (p->finished_epoch == 1) {
            first = p->epoch_loss;
        }
    }
    tap_ok(rc == 0 && p->phase == AISERVE_TRAINER_DONE
           && p->step == p->total_steps, "learns: ran %zu steps", p->step);
    tap_ok(first > 0.5 && p->epoch_loss < first / 5,
           "learns: training loss %.4f in the first epoch, %.4f in the "
           "last", first, p->epoch_loss);
    ev = aiserve_trainer_last_eval(t);
    tap_ok(ev != NULL && ev->has_report && ev->epoch == 12
           && ev->report.accuracy >= 0.75 && ev->examples == 12,
           "learns: validation accuracy %.3f",
           ev != NULL ? ev->report.accuracy : -1.0);
    tap_ok(p->trained_tokens == p->total_tokens && p->total_tokens % 12 == 0,
           "learns: trained_tokens %llu = the file's tokens x 12 epochs",
           (unsigned long long) p->trained_tokens);
    aiserve_trainer_free(t);
}


/* Packs are within the budget: the smallest budget that holds the
 * longest example gives more steps than a large one, and each step's
 * tokens stay within it. */
static void
test_budget(void)
{
    aiserve_trainer_opts_t              o;
    aiserve_trainer_t                  *t;
    const aiserve_trainer_progress_t   *p;
    char                                err[256];
    size_t                              worst = 0, small_steps;

    opts(&o, SEQ_CLS, AISERVE_TRAIN_FULL);
    o.epochs = 1;
    o.batch_tokens = 20;
    t = make(&o, S_TRAIN, NULL);
    if (t == NULL) {
        tap_ok(0, "budget: created");
        return;
    }
    p = aiserve_trainer_progress(t);
    while (aiserve_trainer_step(t, 1, err, sizeof(err)) > 0) {
        worst = p->step_tokens > worst ? p->step_tokens : worst;
    }
    small_steps = p->step;
    tap_ok(worst <= 20 && worst > 10, "budget: steps of at most 20 tokens "
           "(largest %zu)", worst);
    aiserve_trainer_free(t);

    o.batch_tokens = 100000;
    o.gradient_accumulation_steps = 1;
    t = make(&o, S_TRAIN, NULL);
    tap_ok(t != NULL && aiserve_trainer_progress(t)->total_steps == 1
           && small_steps > 10,
           "budget: the whole file is one batch under a large budget "
           "(%zu under 20 tokens)", small_steps);
    aiserve_trainer_free(t);

    o.batch_tokens = 20;
    o.gradient_accumulation_steps = 4;
    t = make(&o, S_TRAIN, NULL);
    tap_ok(t != NULL && aiserve_trainer_progress(t)->total_steps
                        == (small_steps + 3) / 4,
           "budget: 4 accumulated batches a step");
    aiserve_trainer_free(t);
}


static void
test_determinism(void)
{
    aiserve_trainer_opts_t  o;
    aiserve_trainer_t      *a, *b, *c;

    opts(&o, SEQ_CLS, AISERVE_TRAIN_FULL);
    o.epochs = 2;
    o.threads = 2;
    a = make(&o, S_TRAIN, S_VALID);
    b = make(&o, S_TRAIN, S_VALID);
    o.seed = 43;
    c = make(&o, S_TRAIN, S_VALID);
    if (a == NULL || b == NULL || c == NULL) {
        tap_ok(0, "determinism: created");
    } else {
        run(a, 3);
        run(b, 1000);
        run(c, 3);
        tap_ok(same_state(a, b), "determinism: same seed and threads, "
               "other chunk sizes: the same bits");
        tap_ok(!same_state(a, c), "determinism: another seed, other "
               "parameters");
    }
    aiserve_trainer_free(a);
    aiserve_trainer_free(b);
    aiserve_trainer_free(c);
}


/*
 * Runs O on TRAIN / VALID uninterrupted, then again saved after STOP
 * units (in chunks of one), freed, made again and restored: both end
 * with the same bits.
 */
static void
resume_case(const char *what, const aiserve_trainer_opts_t *o,
    const char *train, const char *valid, size_t stop,
    aiserve_trainer_phase_e want_phase)
{
    aiserve_trainer_opts_t   ro;
    aiserve_trainer_t       *a, *b, *c;
    json_t                  *ck, *meta;
    char                     err[512], dir[256];
    size_t                   i;

    snprintf(dir, sizeof(dir), "%s/ckpt", tmpdir);
    a = make(o, train, valid);
    b = make(o, train, valid);
    if (a == NULL || b == NULL || run(a, 1000) != 0) {
        tap_ok(0, "resume %s: created and ran", what);
        aiserve_trainer_free(a);
        aiserve_trainer_free(b);
        return;
    }
    for (i = 0; i < stop; i++) {
        aiserve_trainer_step(b, 1, err, sizeof(err));
    }
    tap_ok(aiserve_trainer_progress(b)->phase == want_phase,
           "resume %s: stopped in phase %d at step %zu", what,
           (int) aiserve_trainer_progress(b)->phase,
           aiserve_trainer_progress(b)->step);
    meta = json_pack("{s:s}", "job", what);
    if (!tap_ok(aiserve_trainer_save(b, dir, meta, err, sizeof(err)) == 0,
                "resume %s: saved", what))
    {
        tap_diag("%s", err);
    }
    json_decref(meta);
    aiserve_trainer_free(b);

    ck = aiserve_trainer_read_checkpoint(dir, &ro, err, sizeof(err));
    c = ck != NULL ? make(&ro, train, valid) : NULL;
    if (c == NULL
        || !tap_ok(aiserve_trainer_restore(c, dir, err, sizeof(err)) == 0,
                   "resume %s: restored", what))
    {
        tap_diag("%s", err);
        json_decref(ck);
        aiserve_trainer_free(a);
        aiserve_trainer_free(c);
        return;
    }
    tap_ok(strcmp(json_string_value(json_object_get(json_object_get(ck,
                  "meta"), "job")), what) == 0
           && ro.seed == o->seed && ro.mode == o->mode
           && ro.learning_rate == o->learning_rate,
           "resume %s: options and meta read back", what);
    json_decref(ck);
    run(c, 2);
    tap_ok(same_state(a, c), "resume %s: parameters and moments equal the "
           "uninterrupted run's, bit for bit", what);
    tap_ok(aiserve_trainer_progress(c)->trained_tokens
           == aiserve_trainer_progress(a)->trained_tokens
           && aiserve_trainer_progress(c)->step
              == aiserve_trainer_progress(a)->step,
           "resume %s: steps and trained_tokens", what);
    aiserve_trainer_free(a);
    aiserve_trainer_free(c);
}


static void
test_resume(void)
{
    aiserve_trainer_opts_t  o;

    opts(&o, SEQ_CLS, AISERVE_TRAIN_FULL);
    o.epochs = 3;
    o.gradient_accumulation_steps = 2;
    o.warmup_ratio = 0.2f;
    o.weight_decay = 0.01f;
    resume_case("full mid-epoch", &o, S_TRAIN, S_VALID, 2,
                AISERVE_TRAINER_TRAINING);
    /* 3 steps an epoch: the 3rd unit ends epoch 1's training and starts
     * its evaluation */
    resume_case("full at an epoch's end", &o, S_TRAIN, S_VALID, 3,
                AISERVE_TRAINER_EVALUATING);
    o.batch_tokens = 32;
    resume_case("full mid-evaluation", &o, S_TRAIN, S_VALID, 7,
                AISERVE_TRAINER_EVALUATING);
    o.threads = 2;
    o.batch_tokens = 64;
    resume_case("full 2 threads", &o, S_TRAIN, S_VALID, 5,
                AISERVE_TRAINER_TRAINING);

    opts(&o, ST, AISERVE_TRAIN_HEAD);
    o.epochs = 3;
    resume_case("head before the features", &o, S_TRAIN, S_VALID, 1,
                AISERVE_TRAINER_FEATURES);
    resume_case("head mid-epoch", &o, S_TRAIN, S_VALID, 11,
                AISERVE_TRAINER_TRAINING);

    opts(&o, ST, AISERVE_TRAIN_LORA);
    o.epochs = 2;
    o.lora_dropout = 0.1f;
    resume_case("lora mid-epoch", &o, S_TRAIN, S_VALID, 4,
                AISERVE_TRAINER_TRAINING);

    opts(&o, ST, AISERVE_TRAIN_FULL);
    o.epochs = 2;
    resume_case("ner full", &o, N_CONLL, N_CONLL, 2,
                AISERVE_TRAINER_TRAINING);
}


/* The trainer's logits on TEXTS-like batch B with dropout off, and the
 * served model's, agree. */
static float
served_diff(aiserve_trainer_t *t, const aiserve_model_t *m)
{
    static const int32_t  ids[] = { 2, 332, 19, 3, 2, 937, 45, 88, 3 };
    static const size_t   lens[] = { 4, 5 };
    aiserve_train_batch_t  tb;
    aiserve_batch_t        mb;
    aiserve_scratch_t     *sc;
    const float           *want;
    float                 *out, diff = 0.f;
    size_t                 i, n;
    char                   err[256];

    memset(&tb, 0, sizeof(tb));
    tb.input_ids = ids;
    tb.seq_lens = lens;
    tb.n_seqs = 2;
    memset(&mb, 0, sizeof(mb));
    mb.input_ids = ids;
    mb.seq_lens = lens;
    mb.n_seqs = 2;
    aiserve_train_set_dropout(aiserve_trainer_engine(t), 0, 0);
    if (aiserve_train_forward(aiserve_trainer_engine(t), &tb, NULL, err,
                              sizeof(err)) != 0)
    {
        tap_diag("forward: %s", err);
        return INFINITY;
    }
    want = aiserve_train_logits(aiserve_trainer_engine(t));
    n = aiserve_model_output_len(m, &mb);
    out = malloc(n * sizeof(float));
    sc = aiserve_scratch_create(m, 64, err, sizeof(err));
    if (out == NULL || sc == NULL
        || aiserve_model_forward(m, &mb, sc, out, err, sizeof(err)) != 0)
    {
        tap_diag("serve: %s", err);
        diff = INFINITY;
    }
    for (i = 0; i < n && diff != INFINITY; i++) {
        diff = fmaxf(diff, fabsf(out[i] - want[i]));
    }
    free(out);
    aiserve_scratch_free(sc);
    return diff;
}


static void
write_case(const char *what, const char *base, aiserve_train_mode_e mode,
    const char *train, const char *file)
{
    aiserve_trainer_opts_t       o;
    aiserve_trainer_t           *t;
    aiserve_model_t             *b = NULL, *m = NULL, *whole = NULL;
    const aiserve_model_info_t  *mi;
    const char *const           *labels;
    char                         err[512], dir[256], path[300];
    size_t                       n;
    float                        d1 = INFINITY, d2 = INFINITY;

    snprintf(dir, sizeof(dir), "%s/out-%s", tmpdir, what);
    opts(&o, base, mode);
    o.epochs = 2;
    t = make(&o, train, NULL);
    if (t == NULL || run(t, 100) != 0
        || !tap_ok(aiserve_trainer_write_model(t, dir, err, sizeof(err))
                   == 0, "write %s: written", what))
    {
        tap_diag("%s", err);
        aiserve_trainer_free(t);
        return;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    tap_ok(access(path, R_OK) == 0, "write %s: %s there", what, file);
    whole = aiserve_model_load(dir, err, sizeof(err));
    if (whole == NULL) {
        tap_diag("load %s: %s", dir, err);
    } else {
        d1 = served_diff(t, whole);
        mi = aiserve_model_info(whole);
        labels = aiserve_trainer_labels(t, &n);
        tap_ok(mi->num_labels == n && strcmp(mi->id2label[0], labels[0]) == 0
               && strcmp(mi->id2label[n - 1], labels[n - 1]) == 0,
               "write %s: labels served as trained", what);
    }
    if (mode != AISERVE_TRAIN_FULL) {
        b = aiserve_model_load(base, err, sizeof(err));
        m = b != NULL ? aiserve_model_load_over(b, dir, err, sizeof(err))
                      : NULL;
        if (m == NULL) {
            tap_diag("load over %s: %s", base, err);
        } else {
            d2 = served_diff(t, m);
        }
    } else {
        d2 = d1;
    }
    tap_ok(d1 < 1e-4f && d2 < 1e-4f, "write %s: the served logits are the "
           "trained model's (max |diff| %g, over a shared base %g)", what,
           (double) d1, (double) d2);
    aiserve_model_free(m);
    aiserve_model_free(b);
    aiserve_model_free(whole);
    aiserve_trainer_free(t);
}


static void
test_write(void)
{
    write_case("full", SEQ_CLS, AISERVE_TRAIN_FULL, S_TRAIN,
               "model.safetensors");
    write_case("head", ST, AISERVE_TRAIN_HEAD, S_TRAIN, "head.safetensors");
    write_case("lora", ST, AISERVE_TRAIN_LORA, S_TRAIN,
               "adapter_model.safetensors");
    write_case("ner-head", ST, AISERVE_TRAIN_HEAD, N_CONLL,
               "head.safetensors");
    write_case("ner-lora", ST, AISERVE_TRAIN_LORA, N_CONLL,
               "adapter_model.safetensors");
}


/* An existing head keeps its id2label; NER evaluation through seqeval. */
static void
test_ner(void)
{
    aiserve_trainer_opts_t         o;
    aiserve_trainer_t             *t;
    const aiserve_trainer_eval_t  *ev;
    const char *const             *labels;
    size_t                         n;

    opts(&o, NER, AISERVE_TRAIN_FULL);
    o.epochs = 1;
    t = make(&o, N_JSONL, N_JSONL);
    if (t == NULL) {
        tap_ok(0, "ner: created");
        return;
    }
    labels = aiserve_trainer_labels(t, &n);
    tap_ok(n == 9 && strcmp(labels[0], "O") == 0
           && strcmp(labels[1], "B-PER") == 0
           && strcmp(labels[8], "I-MISC") == 0,
           "ner: the checkpoint's id2label is kept (O, B-PER, ...)");
    run(t, 100);
    ev = aiserve_trainer_last_eval(t);
    tap_ok(ev != NULL && ev->has_report
           && ev->report.kind == AISERVE_REPORT_SEQEVAL
           && ev->report.micro.support == 5,
           "ner: a seqeval report over the 5 entities of %s (%zu)", N_JSONL,
           ev != NULL ? ev->report.micro.support : 0);
    aiserve_trainer_free(t);
}


/* Multi-label: sklearn's report on sigmoid > 0.5; regression: the loss
 * alone. */
static void
test_other_problems(void)
{
    aiserve_trainer_opts_t         o;
    aiserve_trainer_t             *t;
    const aiserve_trainer_eval_t  *ev;

    opts(&o, ST, AISERVE_TRAIN_FULL);
    o.epochs = 2;
    t = make(&o, "t/data/train/multi.jsonl", "t/data/train/multi.jsonl");
    ev = t != NULL && run(t, 100) == 0 ? aiserve_trainer_last_eval(t) : NULL;
    tap_ok(ev != NULL && ev->has_report
           && ev->report.kind == AISERVE_REPORT_MULTILABEL
           && ev->report.micro.support == 3 && isfinite(ev->loss),
           "multi-label: a multi-label report over the 3 labels given");
    aiserve_trainer_free(t);

    t = make(&o, "t/data/train/regression.jsonl",
             "t/data/train/regression.jsonl");
    ev = t != NULL && run(t, 100) == 0 ? aiserve_trainer_last_eval(t) : NULL;
    tap_ok(ev != NULL && !ev->has_report && ev->loss > 0
           && isfinite(ev->loss),
           "regression: the evaluation's MSE loss %g, no report",
           ev != NULL ? ev->loss : -1.0);
    aiserve_trainer_free(t);
}


static void
test_errors(void)
{
    aiserve_trainer_opts_t   o;
    aiserve_trainer_t       *t;
    aiserve_dataset_t        tr, va;
    json_t                  *ck;
    char                     err[512], dir[256];

    opts(&o, SEQ_CLS, AISERVE_TRAIN_FULL);
    read_set(S_TRAIN, &tr);
    read_set("t/data/train/classify.jsonl", &va);
    t = aiserve_trainer_create(&o, &tr, &va, err, sizeof(err));
    tap_ok(t == NULL && strstr(err, "classify.jsonl:1") != NULL
           && strstr(err, "\"label\"") != NULL,
           "errors: an unknown validation label names file, line and "
           "field (%s)", err);
    aiserve_dataset_free(&va);

    read_set(N_JSONL, &va);
    t = aiserve_trainer_create(&o, &tr, &va, err, sizeof(err));
    tap_ok(t == NULL && strstr(err, "ner.jsonl") != NULL,
           "errors: validation of another kind (%s)", err);
    aiserve_dataset_free(&va);

    o.model_dir = NER;
    t = aiserve_trainer_create(&o, &tr, NULL, err, sizeof(err));
    tap_ok(t == NULL && strstr(err, "token classification") != NULL,
           "errors: a token classifier asked for classes (%s)", err);

    o.model_dir = SEQ_CLS;
    o.warmup_steps = 100000;
    t = aiserve_trainer_create(&o, &tr, NULL, err, sizeof(err));
    tap_ok(t == NULL && strstr(err, "warmup_steps 100000") != NULL,
           "errors: more warmup than steps (%s)", err);
    o.warmup_steps = 0;
    o.batch_tokens = 0;
    t = aiserve_trainer_create(&o, &tr, NULL, err, sizeof(err));
    tap_ok(t == NULL && strstr(err, "batch_tokens") != NULL,
           "errors: batch_tokens 0 (%s)", err);
    aiserve_dataset_free(&tr);

    /* a checkpoint restored over other data or other options */
    snprintf(dir, sizeof(dir), "%s/ckpt", tmpdir);
    opts(&o, SEQ_CLS, AISERVE_TRAIN_FULL);
    o.epochs = 2;
    t = make(&o, S_TRAIN, NULL);
    aiserve_trainer_step(t, 2, err, sizeof(err));
    aiserve_trainer_save(t, dir, NULL, err, sizeof(err));
    aiserve_trainer_free(t);
    t = make(&o, S_VALID, NULL);
    tap_ok(t != NULL && aiserve_trainer_restore(t, dir, err, sizeof(err))
                        != 0 && strstr(err, "training data differs") != NULL,
           "errors: restore over other data (%s)", err);
    aiserve_trainer_free(t);
    o.seed = 7;
    t = make(&o, S_TRAIN, NULL);
    tap_ok(t != NULL && aiserve_trainer_restore(t, dir, err, sizeof(err))
                        != 0 && strstr(err, "\"seed\"") != NULL,
           "errors: restore with another seed (%s)", err);
    aiserve_trainer_free(t);
    ck = aiserve_trainer_read_checkpoint(tmpdir, &o, err, sizeof(err));
    tap_ok(ck == NULL && strstr(err, "trainer.json") != NULL,
           "errors: no checkpoint (%s)", err);
}


/* The first N floats of tensor NAME of ST (F32), or 0 when absent. */
static int
fixture_floats(const aiserve_st_file_t *st, const char *name, float *out,
    size_t n)
{
    const aiserve_st_tensor_t  *x = aiserve_st_find(st, name);

    return x != NULL && x->n_elements >= n
           && aiserve_st_to_f32(x->dtype, x->data, out, n) == 0;
}


/*
 * Gradient accumulation against transformers' Trainer itself
 * (tools/gen-train-accum.py): tiny-bert-ner with its head, dropout off,
 * two sentences of 23 and 8 tokens, a budget of 23 so that each is a
 * micro-batch, 2 of them a step, 2 epochs.  Trainer's pre-clipping
 * gradient norm of each step (the sum of the micro-batches' mean-loss
 * gradients: 18.88 at the first step, where the mean over the
 * micro-batches would give 9.44 and the mean over the step's labelled
 * tokens 9.44 too, apart in the fourth digit) and every parameter after
 * the two steps.
 */
static void
test_accumulation(void)
{
    aiserve_trainer_opts_t              o;
    aiserve_trainer_t                  *t;
    aiserve_train_t                    *e;
    aiserve_st_file_t                  *st;
    const aiserve_trainer_progress_t   *p;
    const aiserve_train_tensor_t       *x;
    float                               hp[6], norms[2], losses[2], *ref;
    double                              got[2] = { 0, 0 }, lgot[2] = { 0, 0 };
    double                              d, worst = 0, big;
    size_t                              i, k, n_t, last = 0;
    char                                err[512], key[160];
    int                                 rc, ok = 1;

    st = aiserve_st_open(A_FIXTURE, err, sizeof(err));
    if (!tap_ok(st != NULL && fixture_floats(st, "hparams", hp, 6)
                && fixture_floats(st, "grad_norms", norms, 2)
                && fixture_floats(st, "losses", losses, 2),
                "accumulation: %s loads", A_FIXTURE))
    {
        aiserve_st_close(st);
        return;
    }
    opts(&o, NER, AISERVE_TRAIN_FULL);
    o.learning_rate = hp[0];
    o.weight_decay = hp[1];
    o.max_grad_norm = hp[2];
    o.epochs = (size_t) hp[3];
    o.gradient_accumulation_steps = (size_t) hp[4];
    o.batch_tokens = (size_t) hp[5];
    o.dropout = 0;
    t = make(&o, A_CONLL, NULL);
    if (!tap_ok(t != NULL, "accumulation: trainer made")) {
        aiserve_st_close(st);
        return;
    }
    p = aiserve_trainer_progress(t);
    do {
        rc = aiserve_trainer_step(t, 1, err, sizeof(err));
        if (rc >= 0 && p->step != last && p->step <= 2) {
            got[p->step - 1] = p->grad_norm;
            lgot[p->step - 1] = p->loss;
        }
        last = p->step;
    } while (rc > 0);
    tap_ok(rc == 0 && p->step == 2 && p->total_steps == 2,
           "accumulation: 2 steps of 2 micro-batches (%s)",
           rc == 0 ? "ok" : err);
    for (k = 0; k < 2; k++) {
        tap_ok(fabs(got[k] - norms[k]) <= 1e-5 * norms[k],
               "accumulation: step %zu's gradient norm before clipping "
               "%.6f, Trainer's %.6f: the micro-batches' mean-loss "
               "gradients summed, unscaled", k + 1, got[k], norms[k]);
        /* Trainer logs the sum of the micro-batches' mean losses, the
         * progress their mean */
        tap_ok(fabs(2 * lgot[k] - losses[k]) <= 1e-4 * losses[k],
               "accumulation: step %zu's loss %.5f, Trainer's sum %.5f / 2",
               k + 1, lgot[k], losses[k]);
    }
    e = aiserve_trainer_engine(t);
    n_t = aiserve_train_n_tensors(e);
    for (i = 0; i < n_t && ok; i++) {
        x = aiserve_train_tensor(e, i);
        snprintf(key, sizeof(key), "step:%s", x->name);
        ref = malloc(x->n * sizeof(float));
        ok = ref != NULL && fixture_floats(st, key, ref, x->n);
        big = 0;
        for (k = 0; ok && k < x->n; k++) {
            big = fabs(ref[k]) > big ? fabs(ref[k]) : big;
        }
        for (k = 0; ok && k < x->n; k++) {
            d = fabs(aiserve_train_params(e)[x->offset + k] - ref[k])
                / (big > 1 ? big : 1);
            worst = d > worst ? d : worst;
        }
        if (!ok) {
            tap_diag("%s missing from %s", key, A_FIXTURE);
        }
        free(ref);
    }
    tap_ok(ok && worst <= 1e-5, "accumulation: every parameter after the 2 "
           "steps within %.2e of Trainer's (%zu tensors)", worst, n_t);
    aiserve_trainer_free(t);
    aiserve_st_close(st);
}


/*
 * Head mode's features come from the inference engine's packed forward
 * (aiserve_model_forward_hidden(), chunks of many examples); each equals
 * what the training engine's forward, checked against torch autograd,
 * gives for the example alone (dropout off), to rounding.
 */
static void
head_features_case(const char *what, const char *model, const char *train,
    int threads)
{
    aiserve_trainer_opts_t              o;
    aiserve_trainer_t                  *t;
    aiserve_train_t                    *e;
    aiserve_train_batch_t               b;
    const aiserve_trainer_progress_t   *p;
    const int32_t                      *ids, *types;
    const float                        *cached;
    float                              *mine = NULL;
    double                              d, worst = 0, big;
    size_t                              i, k, n, rows, H, checked = 0;
    char                                err[512];
    int                                 ok = 1, tok_cls;

    opts(&o, model, AISERVE_TRAIN_HEAD);
    o.threads = threads;
    t = make(&o, train, NULL);
    if (!tap_ok(t != NULL, "head features %s: trainer made", what)) {
        return;
    }
    p = aiserve_trainer_progress(t);
    while (ok && p->phase == AISERVE_TRAINER_FEATURES) {
        ok = aiserve_trainer_step(t, 1, err, sizeof(err)) >= 0;
    }
    e = aiserve_trainer_engine(t);
    H = aiserve_train_info(e)->hidden_size;
    tok_cls = aiserve_train_info(e)->arch
              == AISERVE_ARCH_TOKEN_CLASSIFICATION;
    for (i = 0; ok && aiserve_trainer_example(t, i, &ids, &types, &n,
                                              &cached) == 0; i++)
    {
        rows = tok_cls ? n : 1;
        free(mine);
        mine = malloc(n * H * sizeof(float));
        memset(&b, 0, sizeof(b));
        b.input_ids = ids;
        b.token_type_ids = types;
        b.seq_lens = &n;
        b.n_seqs = 1;
        ok = mine != NULL
             && aiserve_train_features(e, &b, mine, err, sizeof(err)) == 0;
        big = 0;
        for (k = 0; ok && k < rows * H; k++) {
            big = fabs(mine[k]) > big ? fabs(mine[k]) : big;
        }
        for (k = 0; ok && k < rows * H; k++) {
            d = fabs(cached[k] - mine[k]) / (big > 1 ? big : 1);
            worst = d > worst ? d : worst;
        }
        checked += ok;
    }
    if (!ok) {
        tap_diag("%s", err);
    }
    tap_ok(ok && checked > 1 && worst <= 1e-5,
           "head features %s, %d thread(s): %zu examples' cached features "
           "within %.2e of the training forward's", what, threads, checked,
           worst);
    free(mine);
    aiserve_trainer_free(t);
}


static void
test_head_features(void)
{
    head_features_case("classify", ST, S_TRAIN, 1);
    head_features_case("classify", ST, S_TRAIN, 2);
    head_features_case("ner", ST, N_CONLL, 2);
    head_features_case("classify, existing head", SEQ_CLS, S_TRAIN, 1);
}


int
main(void)
{
    char  cmd[300];

    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_learns();
    test_budget();
    test_determinism();
    test_resume();
    test_write();
    test_ner();
    test_other_problems();
    test_errors();
    test_accumulation();
    test_head_features();
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0) {
        tap_diag("could not remove %s", tmpdir);
    }
    return tap_done();
}
