/*
 * The training engine against torch autograd, as llm.c's test_gpt2.c
 * checks train_gpt2.c: fixtures from tools/gen-train-fixtures.py
 * (t/data/train-*.safetensors), one packed batch of four sequences that
 * PyTorch ran padded with an attention mask, in float64, dropout off.
 *
 *   - the loss and the logits;
 *   - every parameter's gradient: per tensor, max |diff| <= 1e-5 of the
 *     tensor's largest gradient (all of a tensor, or the rows the fixture
 *     kept of a large one, plus that tensor's max |g| and L2 norm);
 *   - that the check catches a gradient off by 2e-5 of that largest
 *     gradient in one element;
 *   - 10 optimiser steps (two micro-batches each, gradient accumulation,
 *     global norm clipping at 1.0, AdamW with decoupled weight decay, the
 *     linear schedule with warmup): each step's loss and every parameter
 *     after the last step within 1e-5.
 * Each in the three modes: full; head (the encoder frozen, features
 * computed once and the head run on them; torch with requires_grad False
 * on the encoder); lora (peft's LoraConfig r 8, alpha 16 on query and
 * value, classifier trained): frozen tensors get no gradient and do not
 * move.
 * With AISERVE_TRAIN_DTYPE=bf16 in the environment, the same in mixed
 * precision (aiserve_train_opts_t.dtype bf16: bf16 products, fp32
 * accumulation, weights and optimiser) against the same fp32 references
 * within bf16's tolerances (tols[] below), skipped on a CPU without
 * AVX512-BF16 or AMX.
 * Then dropout, which PyTorch cannot reproduce mask for mask: off gives
 * the same numbers twice, on is reproducible from its seed, differs
 * between seeds, and its gradient matches finite differences of the loss
 * under the same masks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "aiserve_safetensors.h"
#include "aiserve_train.h"

/* The tolerances of a dtype (AISERVE_TRAIN_DTYPE in the environment:
 * fp32, the default, or bf16; see main()). */
typedef struct {
    const char       *name;
    aiserve_dtype_e   dtype;
    double            grad;    /* of the tensor's largest gradient */
    double            step;    /* absolute, parameters after 10 steps */
    double            loss;    /* relative */
    double            logits;  /* absolute */
} tol_t;

static const tol_t  tols[] = {
    { "fp32", AISERVE_DTYPE_FP32, 1e-5, 1e-5, 1e-5, 1e-5 },
    /* bf16 operands keep 8 significant bits (a rounding of 2^-9 each);
     * measured here, worst of the five fixtures and three modes:
     * gradients 4.2e-2 of max|g|, parameters after 10 steps 9.1e-3,
     * loss 4.5e-3 relative, logits 1.8e-2 */
    { "bf16", AISERVE_DTYPE_BF16, 6e-2, 2e-2, 1e-2, 3e-2 },
};

static const tol_t  *tol = &tols[0];

#define GRAD_TOL   tol->grad
#define STEP_TOL   tol->step
#define LOSS_TOL   tol->loss
#define ZERO_GRAD  1e-12     /* a float64 gradient below this is 0 */

typedef struct {
    const char        *fixture;
    const char        *model;
    aiserve_arch_e     arch;          /* a new head; BERT_MODEL: keep */
    size_t             num_labels;
    aiserve_problem_e  problem;
} case_t;

static const case_t  cases[] = {
    { "t/data/train-tiny-seq-cls.safetensors", "models/tiny-bert-seq-cls",
      AISERVE_ARCH_BERT_MODEL, 0, 0 },
    { "t/data/train-tiny-multilabel.safetensors",
      "models/tiny-bert-seq-multilabel", AISERVE_ARCH_BERT_MODEL, 0, 0 },
    { "t/data/train-tiny-regression.safetensors",
      "models/tiny-bert-seq-regression", AISERVE_ARCH_BERT_MODEL, 0, 0 },
    { "t/data/train-tiny-ner.safetensors", "models/tiny-bert-ner",
      AISERVE_ARCH_BERT_MODEL, 0, 0 },
    { "t/data/train-minilm-seq-cls.safetensors", "models/all-MiniLM-L6-v2",
      AISERVE_ARCH_SEQUENCE_CLASSIFICATION, 5, AISERVE_PROBLEM_SINGLE_LABEL },
};

#define N_CASES  (sizeof(cases) / sizeof(cases[0]))

/* The fixture's packed batch. */
typedef struct {
    int32_t  *ids, *types, *labels;
    float    *values;
    size_t   *lens;
    size_t    n_seqs, T;
    float     hp[9];
} fixture_t;


static const aiserve_st_tensor_t *
fx(const aiserve_st_file_t *st, const char *prefix, const char *name)
{
    char  key[256];

    snprintf(key, sizeof(key), "%s%s", prefix, name);
    return aiserve_st_find(st, key);
}


/* A fixture tensor as floats (F32) or ints (I32), malloc'ed. */
static float *
fx_floats(const aiserve_st_tensor_t *t)
{
    float  *f = malloc(t->n_elements * sizeof(float) + 1);

    aiserve_st_to_f32(t->dtype, t->data, f, t->n_elements);
    return f;
}


static int32_t *
fx_ints(const aiserve_st_tensor_t *t)
{
    int32_t  *v = malloc(t->n_elements * sizeof(int32_t) + 1);

    memcpy(v, t->data, t->n_elements * sizeof(int32_t));
    return v;
}


static int
fixture_load(const aiserve_st_file_t *st, fixture_t *f)
{
    const aiserve_st_tensor_t  *t;
    int32_t                    *lens;
    float                      *hp;
    size_t                      i;

    memset(f, 0, sizeof(*f));
    t = aiserve_st_find(st, "seq_lens");
    if (t == NULL || aiserve_st_find(st, "input_ids") == NULL
        || aiserve_st_find(st, "hparams") == NULL)
    {
        return -1;
    }
    lens = fx_ints(t);
    f->n_seqs = t->n_elements;
    f->lens = malloc(f->n_seqs * sizeof(size_t));
    for (i = 0; i < f->n_seqs; i++) {
        f->lens[i] = (size_t) lens[i];
        f->T += f->lens[i];
    }
    free(lens);
    f->ids = fx_ints(aiserve_st_find(st, "input_ids"));
    f->types = fx_ints(aiserve_st_find(st, "token_type_ids"));
    if ((t = aiserve_st_find(st, "label_ids")) != NULL) {
        f->labels = fx_ints(t);
    }
    if ((t = aiserve_st_find(st, "label_values")) != NULL) {
        f->values = fx_floats(t);
    }
    hp = fx_floats(aiserve_st_find(st, "hparams"));
    memcpy(f->hp, hp, sizeof(f->hp));
    free(hp);
    return 0;
}


static void
fixture_free(fixture_t *f)
{
    free(f->ids);
    free(f->types);
    free(f->labels);
    free(f->values);
    free(f->lens);
}


/* Sequences [s0, s1) of the fixture as a batch. */
static aiserve_train_batch_t
sub_batch(const fixture_t *f, const aiserve_train_t *t, size_t s0, size_t s1)
{
    aiserve_train_batch_t        b;
    const aiserve_model_info_t  *in = aiserve_train_info(t);
    size_t                       tok = 0, s;
    int                          token = in->arch
                                         == AISERVE_ARCH_TOKEN_CLASSIFICATION;

    for (s = 0; s < s0; s++) {
        tok += f->lens[s];
    }
    memset(&b, 0, sizeof(b));
    b.input_ids = f->ids + tok;
    b.token_type_ids = f->types + tok;
    b.seq_lens = f->lens + s0;
    b.n_seqs = s1 - s0;
    if (f->labels != NULL) {
        b.label_ids = f->labels + (token ? tok : s0);
    }
    if (f->values != NULL) {
        b.label_values = f->values + s0 * in->num_labels;
    }
    return b;
}


static const char *mode_names[] = { "full", "head", "lora" };
static const char *mode_prefix[] = { "", "head:", "lora:" };


static aiserve_train_t *
load_case(const case_t *c, const aiserve_st_file_t *st,
    aiserve_train_mode_e mode)
{
    aiserve_train_opts_t            o;
    aiserve_train_t                *t;
    const aiserve_st_tensor_t      *init;
    const aiserve_train_tensor_t   *x;
    char                            err[512];
    float                          *v;
    size_t                          i;

    aiserve_train_opts_defaults(&o);       /* LoRA: r 8, alpha 16, q, v */
    o.arch = c->arch;
    o.num_labels = c->num_labels;
    o.problem_type = c->problem;
    o.seed = 42;
    o.mode = mode;
    o.dtype = tol->dtype;
    t = aiserve_train_load(c->model, &o, err, sizeof(err));
    if (t == NULL) {
        tap_diag("%s: %s", c->model, err);
        return NULL;
    }
    /* a new head and the LoRA weights: the numbers torch drew, so both
     * start equal */
    for (i = 0; i < aiserve_train_n_tensors(t); i++) {
        x = aiserve_train_tensor(t, i);
        init = fx(st, "init:", x->name);
        if (init == NULL) {
            init = fx(st, "lora:init:", x->name);
        }
        if (init != NULL && init->n_elements == x->n) {
            v = fx_floats(init);
            memcpy(aiserve_train_params(t) + x->offset, v,
                   x->n * sizeof(float));
            free(v);
        }
    }
    return t;
}


/*
 * Max |c - ref| over what the fixture keeps of tensor X under PREFIX
 * ("grad:" or "step:"), VALS the engine's flat array; *REF_MAX gets the
 * reference's largest |value| (the whole tensor's for sampled gradients).
 * -1 when the fixture lacks the tensor.
 */
static double
compare_tensor(const aiserve_st_file_t *st, const char *prefix,
    const aiserve_train_tensor_t *x, const float *vals, double *ref_max)
{
    const aiserve_st_tensor_t  *ref = fx(st, prefix, x->name);
    const aiserve_st_tensor_t  *rows = fx(st, "rows:", x->name);
    const aiserve_st_tensor_t  *gmax = fx(st, "gmax:", x->name);
    float                      *r;
    int32_t                    *ri = NULL;
    size_t                      n_rows, cols, i, j, row;
    double                      d, m = 0, rm = 0;

    if (ref == NULL) {
        return -1;
    }
    cols = x->ndim == 2 ? x->shape[1] : x->n;
    n_rows = rows != NULL ? rows->n_elements : (x->ndim == 2 ? x->shape[0]
                                                              : 1);
    if (ref->n_elements != n_rows * cols) {
        return -1;
    }
    r = fx_floats(ref);
    if (rows != NULL) {
        ri = fx_ints(rows);
    }
    for (i = 0; i < n_rows; i++) {
        row = ri != NULL ? (size_t) ri[i] : i;
        for (j = 0; j < cols; j++) {
            d = fabs((double) vals[x->offset + row * cols + j]
                     - r[i * cols + j]);
            m = d > m || isnan(d) ? (isnan(d) ? INFINITY : d) : m;
            rm = fabs(r[i * cols + j]) > rm ? fabs(r[i * cols + j]) : rm;
        }
    }
    if (gmax != NULL && strcmp(prefix, "grad:") == 0) {
        float  g;

        aiserve_st_to_f32(gmax->dtype, gmax->data, &g, 1);
        rm = g;
    }
    *ref_max = rm;
    free(r);
    free(ri);
    return m;
}


/* Max |g| and L2 norm of the engine's whole tensor X in array A. */
static void
tensor_stats(const aiserve_train_tensor_t *x, const float *a, double *max,
    double *norm)
{
    size_t  i;
    double  m = 0, ss = 0, v;

    for (i = 0; i < x->n; i++) {
        v = fabs((double) a[x->offset + i]);
        m = v > m ? v : m;
        ss += v * v;
    }
    *max = m;
    *norm = sqrt(ss);
}


static double
fx_scalar(const aiserve_st_file_t *st, const char *prefix, const char *name)
{
    const aiserve_st_tensor_t  *t = fx(st, prefix, name);
    float                       v;

    if (t == NULL) {
        return NAN;
    }
    aiserve_st_to_f32(t->dtype, t->data, &v, 1);
    return v;
}


/* Every gradient of the whole batch; returns how many tensors failed. */
static int
check_grads(const char *what, aiserve_train_t *t, const aiserve_st_file_t *st,
    const char *prefix, int quiet)
{
    const aiserve_train_tensor_t  *x;
    double                         d, ref_max, cmax, cnorm, rmax, rnorm;
    double                         worst = 0;
    size_t                         i;
    int                            bad = 0, ok, frozen_nonzero = 0;

    for (i = 0; i < aiserve_train_n_tensors(t); i++) {
        x = aiserve_train_tensor(t, i);
        if (x->frozen) {
            /* no gradient at all */
            tensor_stats(x, aiserve_train_grads(t), &cmax, &cnorm);
            frozen_nonzero += cmax != 0;
            continue;
        }
        d = compare_tensor(st, prefix, x, aiserve_train_grads(t), &ref_max);
        ok = d >= 0 && d <= GRAD_TOL * ref_max;
        if (ref_max < ZERO_GRAD) {
            /* zero in exact arithmetic (the attention key bias): torch's
             * float64 noise, and the engine's exact 0 */
            tensor_stats(x, aiserve_train_grads(t), &cmax, &cnorm);
            ok = d >= 0 && cmax == 0;
        }
        rmax = fx_scalar(st, "gmax:", x->name);
        if (ok && !isnan(rmax)) {
            /* a sampled tensor: its whole max and norm too */
            rnorm = fx_scalar(st, "gnorm:", x->name);
            tensor_stats(x, aiserve_train_grads(t), &cmax, &cnorm);
            ok = fabs(cmax - rmax) <= GRAD_TOL * rmax
                 && fabs(cnorm - rnorm) <= GRAD_TOL * rnorm;
        }
        if (!quiet) {
            tap_ok(ok, "%s: grad %s max|diff| %.2e (%.2e of max|g| %.3e)",
                   what, x->name, d, d / ref_max, ref_max);
        }
        if (ref_max >= ZERO_GRAD && d / ref_max > worst) {
            worst = d / ref_max;
        }
        bad += !ok;
    }
    if (!quiet) {
        tap_diag("%s: worst gradient max|diff| / max|g| = %.2e", what, worst);
        tap_ok(frozen_nonzero == 0, "%s: frozen tensors have no gradient",
               what);
    }
    return bad + frozen_nonzero;
}


/* The gradients' fixture prefix of MODE: head mode's are the full
 * model's (the head's gradient does not depend on what is frozen). */
static const char *
grad_prefix(aiserve_train_mode_e mode)
{
    return mode == AISERVE_TRAIN_LORA ? "lora:grad:" : "grad:";
}


/* Forward on sequences [s0, s1): in head mode on FEATURES (rows of the
 * whole batch's features), else on the tokens. */
static int
forward(aiserve_train_t *t, const fixture_t *f, size_t s0, size_t s1,
    const float *features, float *loss, char *err, size_t err_len)
{
    aiserve_train_batch_t        b = sub_batch(f, t, s0, s1);
    const aiserve_model_info_t  *in = aiserve_train_info(t);
    size_t                       row = 0, s;

    if (features == NULL) {
        return aiserve_train_forward(t, &b, loss, err, err_len);
    }
    for (s = 0; s < s0; s++) {
        row += in->arch == AISERVE_ARCH_TOKEN_CLASSIFICATION ? f->lens[s] : 1;
    }
    return aiserve_train_head_forward(t, features + row * in->hidden_size,
                                      &b, loss, err, err_len);
}


static void
test_mode(const case_t *c, const aiserve_st_file_t *st, const fixture_t *f,
    aiserve_train_mode_e mode)
{
    aiserve_train_t               *t;
    aiserve_optim_config_t         oc;
    const aiserve_train_tensor_t  *x, *big = NULL;
    const aiserve_st_tensor_t     *lt;
    char                           err[512], what[160], key[64];
    const char                    *pre = mode_prefix[mode];
    float                          loss, *ref, *losses, *features = NULL;
    float                          saved, lr, *start;
    double                         d, m, ref_max, worst = 0, ref_loss;
    size_t                         i, s, step, accum, half, n, H;
    int                            ok, bad, unmoved = 1;

    snprintf(what, sizeof(what), "%s %s", strrchr(c->fixture, '/') + 1,
             mode_names[mode]);
    t = load_case(c, st, mode);
    if (!tap_ok(t != NULL, "%s: %s loads for training", what, c->model)) {
        return;
    }
    H = aiserve_train_info(t)->hidden_size;
    if (mode == AISERVE_TRAIN_HEAD) {
        aiserve_train_batch_t  b = sub_batch(f, t, 0, f->n_seqs);

        features = malloc(f->T * H * sizeof(float));
        ok = aiserve_train_features(t, &b, features, err, sizeof(err)) == 0;
        tap_ok(ok, "%s: features computed once (%s)", what,
               ok ? "ok" : err);
    }

    /* loss (and logits) of the whole batch, packed */
    ok = forward(t, f, 0, f->n_seqs, features, &loss, err, sizeof(err)) == 0;
    tap_ok(ok, "%s: forward (%s)", what, ok ? "ok" : err);
    snprintf(key, sizeof(key), "%sloss",
             mode == AISERVE_TRAIN_LORA ? "lora:" : "");
    ref_loss = fx_scalar(st, "", key);
    d = fabs(loss - ref_loss);
    tap_ok(d <= LOSS_TOL * fmax(1.0, fabs(ref_loss)),
           "%s: loss %.7f, torch %.7f (|diff| %.2e)", what, loss, ref_loss,
           d);
    if (mode == AISERVE_TRAIN_FULL) {
        lt = aiserve_st_find(st, "logits");
        n = (aiserve_train_info(t)->arch == AISERVE_ARCH_TOKEN_CLASSIFICATION
             ? f->T : f->n_seqs) * aiserve_train_info(t)->num_labels;
        ref = fx_floats(lt);
        m = 0;
        for (i = 0; i < n && lt->n_elements == n; i++) {
            d = fabs((double) aiserve_train_logits(t)[i] - ref[i]);
            m = d > m ? d : m;
        }
        free(ref);
        tap_ok(lt->n_elements == n && m <= tol->logits,
               "%s: logits max|diff| %.2e",
               what, m);
        if (tol->dtype == AISERVE_DTYPE_BF16) {
            /* the products did run in bf16: its rounding shows */
            tap_ok(aiserve_train_dtype(t) == AISERVE_DTYPE_BF16
                   && m > tols[0].logits, "%s: bf16 products (logits "
                   "%.2e from fp32's, more than fp32's tolerance)", what, m);
        }
    }

    /* every gradient */
    aiserve_train_zero_grad(t);
    ok = aiserve_train_backward(t, 1.f, err, sizeof(err)) == 0;
    tap_ok(ok, "%s: backward (%s)", what, ok ? "ok" : err);
    bad = check_grads(what, t, st, grad_prefix(mode), 0);

    /* a wrong gradient fails: one element of the largest matrix off by
     * twice the tolerance */
    for (i = 0; i < aiserve_train_n_tensors(t); i++) {
        x = aiserve_train_tensor(t, i);
        if (x->ndim == 2 && !x->frozen && fx(st, "rows:", x->name) == NULL
            && (big == NULL || x->n > big->n))
        {
            big = x;
        }
    }
    if (big != NULL) {
        compare_tensor(st, grad_prefix(mode), big, aiserve_train_grads(t),
                       &ref_max);
        saved = aiserve_train_grads(t)[big->offset + big->n / 2];
        aiserve_train_grads(t)[big->offset + big->n / 2] +=
            (float) (2 * GRAD_TOL * ref_max);
        tap_ok(check_grads(what, t, st, grad_prefix(mode), 1) == bad + 1,
               "%s: a gradient of %s off by %.0e of its max fails the check",
               what, big->name, 2 * GRAD_TOL);
        aiserve_train_grads(t)[big->offset + big->n / 2] = saved;
    }
    aiserve_train_free(t);

    /* 10 steps from a fresh copy, two micro-batches each */
    t = load_case(c, st, mode);
    start = malloc(aiserve_train_n_params(t) * sizeof(float));
    memcpy(start, aiserve_train_params(t),
           aiserve_train_n_params(t) * sizeof(float));
    aiserve_optim_defaults(&oc);
    oc.learning_rate = f->hp[0];
    oc.beta1 = f->hp[1];
    oc.beta2 = f->hp[2];
    oc.eps = f->hp[3];
    oc.weight_decay = f->hp[4];
    oc.warmup_steps = (size_t) f->hp[5];
    oc.total_steps = (size_t) f->hp[6];
    oc.max_grad_norm = f->hp[7];
    accum = (size_t) f->hp[8];
    half = f->n_seqs / accum;
    snprintf(key, sizeof(key), "%slosses", pre);
    losses = fx_floats(aiserve_st_find(st, key));
    ok = 1;
    m = 0;
    for (step = 0; step < 10 && ok; step++) {
        float  total = 0;

        for (s = 0; s < accum && ok; s++) {
            ok = forward(t, f, s * half, (s + 1) * half, features, &loss, err,
                         sizeof(err)) == 0
                 && aiserve_train_backward(t, 1.f / (float) accum, err,
                                           sizeof(err)) == 0;
            total += loss / (float) accum;
        }
        ok = ok && aiserve_train_step(t, &oc, &lr, NULL, err,
                                      sizeof(err)) == 0;
        d = fabs(total - losses[step]) / fmax(1.0, fabs(losses[step]));
        m = d > m ? d : m;
    }
    free(losses);
    tap_ok(ok && m <= LOSS_TOL, "%s: 10 steps' losses, max rel |diff| %.2e",
           what, m);
    ok = 1;
    snprintf(key, sizeof(key), "%sstep:", pre);
    for (i = 0; i < aiserve_train_n_tensors(t); i++) {
        x = aiserve_train_tensor(t, i);
        if (x->frozen) {
            unmoved = unmoved
                      && memcmp(start + x->offset,
                                aiserve_train_params(t) + x->offset,
                                x->n * sizeof(float)) == 0;
            continue;
        }
        d = compare_tensor(st, key, x, aiserve_train_params(t), &ref_max);
        if (d < 0 || d > STEP_TOL) {
            tap_diag("%s: after 10 steps %s max|diff| %.2e", what, x->name,
                     d);
            ok = 0;
        }
        worst = d > worst ? d : worst;
    }
    tap_ok(ok, "%s: every trained parameter after 10 AdamW steps, "
           "max|diff| %.2e", what, worst);
    tap_ok(unmoved, "%s: frozen parameters unchanged", what);
    free(start);
    free(features);
    aiserve_train_free(t);
}


static void
test_case(const case_t *c)
{
    aiserve_st_file_t  *st;
    fixture_t           f;
    char                err[512];
    int                 mode;

    st = aiserve_st_open(c->fixture, err, sizeof(err));
    if (!tap_ok(st != NULL && fixture_load(st, &f) == 0, "%s: fixture",
                c->fixture))
    {
        tap_diag("%s", err);
        return;
    }
    for (mode = AISERVE_TRAIN_FULL; mode <= AISERVE_TRAIN_LORA; mode++) {
        test_mode(c, st, &f, (aiserve_train_mode_e) mode);
    }
    fixture_free(&f);
    aiserve_st_close(st);
}


int
main(void)
{
    const char  *dtype = getenv("AISERVE_TRAIN_DTYPE");
    size_t       i;

    if (dtype != NULL && strcmp(dtype, "bf16") == 0) {
        const char  *isa;

        if (!aiserve_gemm_bf16_native(&isa)) {
            printf("1..0 # SKIP the CPU (oneDNN's ISA) has %s: no bf16 "
                   "products here\n", isa);
            return 0;
        }
        tol = &tols[1];
    }

    for (i = 0; i < N_CASES; i++) {
        test_case(&cases[i]);
    }
    return tap_done();
}
