/*
 * aiserve trainer: the fine-tuning loop as a resumable state machine (see
 * aiserve_trainer.h).  No nginx types.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aiserve_err.h"
#include "aiserve_hf_write.h"
#include "aiserve_pipeline.h"
#include "aiserve_safetensors.h"
#include "aiserve_st_write.h"
#include "aiserve_tokenizer.h"
#include "aiserve_trainer.h"

#define AISERVE_CKPT_FORMAT   "aiserve-trainer-checkpoint"
#define AISERVE_CKPT_VERSION  1
/* head mode: tokens of a featurization chunk (the inference engine's
 * activations for about 30 MB with all-MiniLM-L6-v2) */
#define AISERVE_FEATURE_TOKENS  2048

/* One featurized example, labels already in the model's ids. */
typedef struct {
    int32_t  *input_ids;
    int32_t  *token_type_ids;
    size_t    n_tokens;
    int32_t   label;          /* single-label */
    float    *targets;        /* multi-label [num_labels], regression [1] */
    int32_t  *labels;         /* token classification [n_tokens] */
    size_t    feat;           /* head mode: first row in the cache */
} aiserve_ex_t;

typedef struct {
    aiserve_ex_t  *ex;
    size_t         n;
    uint64_t       tokens;
    float         *feats;     /* head mode: [rows, H] */
    size_t         rows;
} aiserve_set_t;

struct aiserve_trainer_s {
    aiserve_trainer_opts_t      opts;
    char                       *model_dir;
    aiserve_train_t            *t;
    aiserve_tok_t              *tok;
    aiserve_labels_kind_e       kind;
    size_t                      num_labels;
    char                      **id2label;       /* model order */
    aiserve_set_t               train, valid;
    uint64_t                    fingerprint;
    aiserve_optim_config_t      oc;
    size_t                      H;

    /* the position */
    uint64_t                    rng;            /* at the epoch's start */
    uint64_t                    rng_next;       /* after its shuffle */
    size_t                     *order;          /* [train.n] */
    size_t                     *bstart;         /* [n_batches + 1] */
    size_t                     *idx;            /* a batch's examples */
    size_t                      n_batches, next_batch;
    int                         epoch_ready;
    size_t                      feat_next;      /* examples, train then
                                                   valid */
    double                      epoch_loss_sum;
    size_t                      epoch_loss_n;

    /* evaluation under way */
    size_t                      eval_next, eval_tok;
    double                      eval_loss_sum;
    uint64_t                    train_pass;     /* the dropout pass that
                                                   training resumes at */
    int32_t                    *pred;           /* classes, or tags of
                                                   labelled tokens */
    aiserve_trainer_eval_t      last;
    int                         has_last;

    /* head mode's featurization: the inference engine on packed
     * weights, while the features are computed */
    aiserve_model_t            *f_model;
    aiserve_scratch_t          *f_scratch;
    float                      *f_hidden;       /* [chunk tokens, H] */

    /* a batch */
    int32_t                    *b_ids, *b_types, *b_labels;
    float                      *b_values, *b_feats;
    size_t                     *b_lens;
    size_t                      cap_tokens, cap_seqs;

    aiserve_trainer_progress_t  p;
};


static void aiserve_features_end(aiserve_trainer_t *tr);


/* --- generator ----------------------------------------------------------- */

/* splitmix64: the next 64 random bits from *STATE. */
static uint64_t
aiserve_next64(uint64_t *state)
{
    uint64_t  z;

    *state += 0x9e3779b97f4a7c15ull;
    z = *state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}


/* Fisher-Yates over ORDER[0..n), uniform draws below i + 1 by rejection
 * (no modulo bias). */
static void
aiserve_shuffle(size_t *order, size_t n, uint64_t *state)
{
    size_t    i, j, tmp;
    uint64_t  bound, r, lim;

    for (i = 0; i < n; i++) {
        order[i] = i;
    }
    for (i = n; i > 1; i--) {
        bound = i;
        lim = UINT64_MAX - UINT64_MAX % bound;
        do {
            r = aiserve_next64(state);
        } while (r >= lim);
        j = (size_t) (r % bound);
        tmp = order[i - 1];
        order[i - 1] = order[j];
        order[j] = tmp;
    }
}


/* Cuts ORDER[0..n) into batches of at most BUDGET tokens: BSTART gets
 * the first position of each and n at the end; returns their count. */
static size_t
aiserve_cut_batches(const aiserve_set_t *s, const size_t *order, size_t n,
    size_t budget, size_t *bstart)
{
    size_t  i, nb = 0, tokens = 0;

    for (i = 0; i < n; i++) {
        size_t  len = s->ex[order ? order[i] : i].n_tokens;

        if (i == 0 || tokens + len > budget) {
            bstart[nb++] = i;
            tokens = 0;
        }
        tokens += len;
    }
    bstart[nb] = n;
    return nb;
}


static uint64_t
aiserve_fnv(uint64_t h, const void *data, size_t len)
{
    const unsigned char  *p = data;
    size_t                i;

    for (i = 0; i < len; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}


/* --- options ------------------------------------------------------------- */

void
aiserve_trainer_opts_defaults(aiserve_trainer_opts_t *opts,
    aiserve_train_mode_e mode)
{
    memset(opts, 0, sizeof(*opts));
    opts->mode = mode;
    opts->lora_r = 8;
    opts->lora_alpha = 16.f;
    opts->lora_dropout = 0.f;
    opts->lora_targets = AISERVE_LORA_QUERY | AISERVE_LORA_VALUE;
    opts->epochs = 3;
    opts->learning_rate = 5e-5f;
    opts->weight_decay = 0.f;
    opts->adam_beta1 = 0.9f;
    opts->adam_beta2 = 0.999f;
    opts->adam_epsilon = 1e-8f;
    opts->max_grad_norm = 1.f;
    opts->batch_tokens = 512;
    opts->gradient_accumulation_steps = 1;
    opts->seed = 42;
    opts->threads = 1;
    opts->dropout = 1;
    opts->ner_mode = AISERVE_CHUNK_CONLL;
    if (mode == AISERVE_TRAIN_LORA) {
        opts->learning_rate = 5e-4f;
    } else if (mode == AISERVE_TRAIN_HEAD) {
        opts->learning_rate = 1e-3f;
        opts->epochs = 10;
    }
}


static int
aiserve_check_opts(const aiserve_trainer_opts_t *o, char *err,
    size_t err_len)
{
    const char  *bad = NULL;

    if (o->model_dir == NULL) {
        bad = "model_dir is required";
    } else if (o->epochs == 0) {
        bad = "epochs must be >= 1";
    } else if (!(o->learning_rate > 0.f) || !isfinite(o->learning_rate)) {
        bad = "learning_rate must be > 0";
    } else if (!(o->weight_decay >= 0.f)) {
        bad = "weight_decay must be >= 0";
    } else if (!(o->warmup_ratio >= 0.f && o->warmup_ratio <= 1.f)) {
        bad = "warmup_ratio must be in [0, 1]";
    } else if (o->batch_tokens == 0) {
        bad = "batch_tokens must be >= 1";
    } else if (o->gradient_accumulation_steps == 0) {
        bad = "gradient_accumulation_steps must be >= 1";
    } else if (o->threads < 1 || o->threads > 64) {
        bad = "threads must be in 1..64";
    } else if (o->mode > AISERVE_TRAIN_LORA) {
        bad = "mode must be full, head or lora";
    }
    if (bad != NULL) {
        aiserve_err(err, err_len, "%s", bad);
        return -1;
    }
    return 0;
}


/* --- data ---------------------------------------------------------------- */

static void
aiserve_set_free(aiserve_set_t *s)
{
    size_t  i;

    for (i = 0; i < s->n && s->ex != NULL; i++) {
        free(s->ex[i].input_ids);
        free(s->ex[i].token_type_ids);
        free(s->ex[i].targets);
        free(s->ex[i].labels);
    }
    free(s->ex);
    free(s->feats);
    memset(s, 0, sizeof(*s));
}


/* Featurizes DS into S, labels mapped by REMAP (set id -> model id). */
static int
aiserve_set_build(aiserve_trainer_t *tr, const aiserve_dataset_t *ds,
    const aiserve_label_set_t *set, const int32_t *remap, size_t max_length,
    aiserve_set_t *s, char *err, size_t err_len)
{
    aiserve_features_t  f;
    size_t              i, k, C = tr->num_labels;

    s->ex = calloc(ds->n ? ds->n : 1, sizeof(*s->ex));
    if (s->ex == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    s->n = ds->n;
    for (i = 0; i < ds->n; i++) {
        aiserve_ex_t  *e = &s->ex[i];

        if (aiserve_featurize(tr->tok, ds, i, set, max_length, &f, err,
                              err_len) != 0)
        {
            return -1;
        }
        e->input_ids = f.input_ids;
        e->token_type_ids = f.token_type_ids;
        e->n_tokens = f.n_tokens;
        f.input_ids = NULL;
        f.token_type_ids = NULL;
        s->tokens += e->n_tokens;
        switch (tr->kind) {
        case AISERVE_LABELS_SINGLE:
            e->label = remap[f.label];
            break;
        case AISERVE_LABELS_MULTI:
            e->targets = calloc(C, sizeof(float));
            if (e->targets == NULL) {
                goto nomem;
            }
            for (k = 0; k < set->n; k++) {
                e->targets[remap[k]] = f.targets[k];
            }
            break;
        case AISERVE_LABELS_REGRESSION:
            e->targets = malloc(sizeof(float));
            if (e->targets == NULL) {
                goto nomem;
            }
            e->targets[0] = f.targets[0];
            break;
        default:
            e->labels = f.labels;
            f.labels = NULL;
            for (k = 0; k < e->n_tokens; k++) {
                if (e->labels[k] != AISERVE_TRAIN_IGNORE) {
                    e->labels[k] = remap[e->labels[k]];
                }
            }
        }
        aiserve_features_free(&f);
    }
    return 0;

nomem:
    aiserve_features_free(&f);
    aiserve_err(err, err_len, "out of memory");
    return -1;
}


/*
 * The model's labels: an existing head's id2label, to which the data's
 * sorted set maps by name; or the set itself for a new head.
 */
static int
aiserve_label_map(aiserve_trainer_t *tr, const aiserve_model_info_t *ckpt,
    int has_head, const aiserve_label_set_t *set, const char *file,
    int32_t **remap, char *err, size_t err_len)
{
    size_t   i, j, n = has_head ? ckpt->num_labels : set->n;

    *remap = calloc(set->n, sizeof(int32_t));
    tr->id2label = calloc(n, sizeof(char *));
    if (*remap == NULL || tr->id2label == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    tr->num_labels = n;
    for (i = 0; i < n; i++) {
        tr->id2label[i] = strdup(has_head ? ckpt->id2label[i]
                                          : set->names[i]);
        if (tr->id2label[i] == NULL) {
            aiserve_err(err, err_len, "out of memory");
            return -1;
        }
    }
    for (i = 0; i < set->n; i++) {
        (*remap)[i] = (int32_t) i;
        if (!has_head || tr->kind == AISERVE_LABELS_REGRESSION) {
            continue;
        }
        for (j = 0; j < n && strcmp(tr->id2label[j], set->names[i]) != 0;
             j++)
        {
            /* find the model's id of the label */
        }
        if (j == n) {
            aiserve_err(err, err_len, "%s: label \"%s\" is not one of the "
                        "model's labels (its config.json id2label); train "
                        "a new head from a BertModel checkpoint instead",
                        file, set->names[i]);
            return -1;
        }
        (*remap)[i] = (int32_t) j;
    }
    if (has_head && tr->kind == AISERVE_LABELS_REGRESSION
        && ckpt->num_labels != 1)
    {
        aiserve_err(err, err_len, "%s: regression data, but the model's head "
                    "has %zu labels", file, ckpt->num_labels);
        return -1;
    }
    return 0;
}


/* Optimiser steps of every epoch: shuffles as the run will, from the
 * seed. */
static size_t
aiserve_plan_steps(aiserve_trainer_t *tr)
{
    uint64_t  state = tr->opts.seed;
    size_t    e, nb, total = 0, acc = tr->opts.gradient_accumulation_steps;

    for (e = 0; e < tr->opts.epochs; e++) {
        aiserve_shuffle(tr->order, tr->train.n, &state);
        nb = aiserve_cut_batches(&tr->train, tr->order, tr->train.n,
                                 tr->opts.batch_tokens, tr->bstart);
        total += (nb + acc - 1) / acc;
    }
    return total;
}


aiserve_trainer_t *
aiserve_trainer_create(const aiserve_trainer_opts_t *opts,
    const aiserve_dataset_t *train, const aiserve_dataset_t *valid,
    char *err, size_t err_len)
{
    aiserve_trainer_t     *tr;
    aiserve_train_opts_t   to;
    aiserve_model_info_t   ckpt;
    aiserve_label_set_t    set;
    int32_t               *remap = NULL;
    size_t                 max_length, i;
    int                    has_head, ok = 0;

    if (aiserve_check_opts(opts, err, err_len) != 0) {
        return NULL;
    }
    if (train->n == 0) {
        aiserve_err(err, err_len, "%s: no examples", train->name);
        return NULL;
    }
    if (valid != NULL && valid->kind != train->kind) {
        aiserve_err(err, err_len, "%s: its labels are of another kind than "
                    "those of %s", valid->name, train->name);
        return NULL;
    }
    memset(&set, 0, sizeof(set));
    memset(&ckpt, 0, sizeof(ckpt));
    tr = calloc(1, sizeof(*tr));
    if (tr == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return NULL;
    }
    tr->opts = *opts;
    tr->model_dir = strdup(opts->model_dir);
    tr->opts.model_dir = tr->model_dir;
    tr->kind = train->kind;
    if (tr->model_dir == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto done;
    }
    if (aiserve_model_read_config(opts->model_dir, &ckpt, err, err_len) != 0
        || aiserve_labels_build(train, &set, err, err_len) != 0
        || (valid != NULL
            && aiserve_labels_check(&set, valid, err, err_len) != 0))
    {
        goto done;
    }

    aiserve_train_opts_defaults(&to);
    to.arch = train->kind == AISERVE_LABELS_TAGS
              || train->kind == AISERVE_LABELS_SPANS
              ? AISERVE_ARCH_TOKEN_CLASSIFICATION
              : AISERVE_ARCH_SEQUENCE_CLASSIFICATION;
    has_head = ckpt.arch == to.arch;
    if (ckpt.arch != AISERVE_ARCH_BERT_MODEL && !has_head) {
        aiserve_err(err, err_len, "%s: the checkpoint's head is for %s, the "
                    "data (%s) for %s", opts->model_dir,
                    ckpt.arch == AISERVE_ARCH_TOKEN_CLASSIFICATION
                    ? "token classification" : "sequence classification",
                    train->name,
                    to.arch == AISERVE_ARCH_TOKEN_CLASSIFICATION
                    ? "token classification" : "sequence classification");
        goto done;
    }
    to.problem_type = train->kind == AISERVE_LABELS_MULTI
                      ? AISERVE_PROBLEM_MULTI_LABEL
                      : train->kind == AISERVE_LABELS_REGRESSION
                      ? AISERVE_PROBLEM_REGRESSION
                      : AISERVE_PROBLEM_SINGLE_LABEL;
    if (has_head && to.arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION
        && ckpt.problem_type != to.problem_type)
    {
        aiserve_err(err, err_len, "%s: the checkpoint's head has another "
                    "problem_type than the labels of %s", opts->model_dir,
                    train->name);
        goto done;
    }
    if (aiserve_label_map(tr, &ckpt, has_head, &set, train->name, &remap,
                          err, err_len) != 0)
    {
        goto done;
    }
    to.num_labels = tr->num_labels;
    to.seed = opts->seed;
    to.threads = opts->threads;
    to.dtype = opts->dtype;
    to.mode = opts->mode;
    to.lora_r = opts->lora_r;
    to.lora_alpha = opts->lora_alpha;
    to.lora_dropout = opts->lora_dropout;
    to.lora_targets = opts->lora_targets;
    tr->t = aiserve_train_load(opts->model_dir, &to, err, err_len);
    tr->tok = tr->t ? aiserve_tok_load(opts->model_dir, err, err_len) : NULL;
    if (tr->tok == NULL) {
        goto done;
    }
    aiserve_train_set_dropout(tr->t, opts->dropout, opts->seed);
    tr->H = aiserve_train_info(tr->t)->hidden_size;

    max_length = aiserve_train_info(tr->t)->max_position_embeddings;
    if (opts->max_length > 0 && opts->max_length < max_length) {
        max_length = opts->max_length;
    } else if (opts->max_length == 0
               && aiserve_tok_model_max_length(tr->tok) > 0
               && aiserve_tok_model_max_length(tr->tok) < max_length)
    {
        max_length = aiserve_tok_model_max_length(tr->tok);
    }
    if (aiserve_set_build(tr, train, &set, remap, max_length, &tr->train,
                          err, err_len) != 0
        || (valid != NULL
            && aiserve_set_build(tr, valid, &set, remap, max_length,
                                 &tr->valid, err, err_len) != 0))
    {
        goto done;
    }

    tr->fingerprint = 0xcbf29ce484222325ull;
    for (i = 0; i < tr->train.n; i++) {
        const aiserve_ex_t  *e = &tr->train.ex[i];

        tr->fingerprint = aiserve_fnv(tr->fingerprint, e->input_ids,
                                      e->n_tokens * sizeof(int32_t));
        tr->fingerprint = aiserve_fnv(tr->fingerprint, e->token_type_ids,
                                      e->n_tokens * sizeof(int32_t));
        tr->fingerprint = aiserve_fnv(tr->fingerprint, &e->label,
                                      sizeof(e->label));
        if (e->labels != NULL) {
            tr->fingerprint = aiserve_fnv(tr->fingerprint, e->labels,
                                          e->n_tokens * sizeof(int32_t));
        }
        if (e->targets != NULL) {
            tr->fingerprint = aiserve_fnv(tr->fingerprint, e->targets,
                                          (tr->kind == AISERVE_LABELS_MULTI
                                           ? tr->num_labels : 1)
                                          * sizeof(float));
        }
    }

    tr->order = malloc(tr->train.n * sizeof(size_t));
    tr->bstart = malloc((tr->train.n + 1) * sizeof(size_t));
    tr->idx = malloc((tr->train.n + tr->valid.n) * sizeof(size_t));
    tr->pred = malloc((tr->valid.tokens + tr->valid.n * tr->num_labels + 1)
                      * sizeof(int32_t));
    if (tr->order == NULL || tr->bstart == NULL || tr->idx == NULL
        || tr->pred == NULL)
    {
        aiserve_err(err, err_len, "out of memory");
        goto done;
    }

    aiserve_optim_defaults(&tr->oc);
    tr->oc.learning_rate = opts->learning_rate;
    tr->oc.beta1 = opts->adam_beta1;
    tr->oc.beta2 = opts->adam_beta2;
    tr->oc.eps = opts->adam_epsilon;
    tr->oc.weight_decay = opts->weight_decay;
    tr->oc.max_grad_norm = opts->max_grad_norm;
    tr->oc.total_steps = aiserve_plan_steps(tr);
    /* TrainingArguments.get_warmup_steps: warmup_steps if > 0, else
     * ceil(total * warmup_ratio) */
    tr->oc.warmup_steps = opts->warmup_steps > 0 ? opts->warmup_steps
                          : (size_t) ceil((double) tr->oc.total_steps
                                          * opts->warmup_ratio);
    if (tr->oc.warmup_steps > tr->oc.total_steps) {
        aiserve_err(err, err_len, "warmup_steps %zu is more than the run's "
                    "%zu optimiser steps", tr->oc.warmup_steps,
                    tr->oc.total_steps);
        goto done;
    }

    tr->rng = opts->seed;
    tr->p.epochs = opts->epochs;
    tr->p.total_steps = tr->oc.total_steps;
    tr->p.total_tokens = tr->train.tokens * opts->epochs;
    tr->p.eval_total = tr->valid.n;
    if (opts->mode == AISERVE_TRAIN_HEAD) {
        tr->p.phase = AISERVE_TRAINER_FEATURES;
        tr->p.features_total = tr->train.n + tr->valid.n;
    } else {
        tr->p.phase = AISERVE_TRAINER_TRAINING;
    }
    ok = 1;

done:
    free(remap);
    aiserve_labels_free(&set);
    aiserve_model_info_clear(&ckpt);
    if (!ok) {
        aiserve_trainer_free(tr);
        return NULL;
    }
    return tr;
}


void
aiserve_trainer_free(aiserve_trainer_t *tr)
{
    size_t  i;

    if (tr == NULL) {
        return;
    }
    aiserve_train_free(tr->t);
    aiserve_tok_free(tr->tok);
    for (i = 0; i < tr->num_labels && tr->id2label != NULL; i++) {
        free(tr->id2label[i]);
    }
    free(tr->id2label);
    aiserve_set_free(&tr->train);
    aiserve_set_free(&tr->valid);
    free(tr->order);
    free(tr->bstart);
    free(tr->idx);
    free(tr->pred);
    if (tr->has_last) {
        aiserve_report_free(&tr->last.report);
    }
    aiserve_features_end(tr);
    free(tr->b_ids);
    free(tr->b_types);
    free(tr->b_labels);
    free(tr->b_values);
    free(tr->b_feats);
    free(tr->b_lens);
    free(tr->model_dir);
    free(tr);
}


/* --- batches ------------------------------------------------------------- */

/* Packs examples IDX[0..n) of S into the batch buffers and B. */
static int
aiserve_pack(aiserve_trainer_t *tr, const aiserve_set_t *s,
    const size_t *idx, size_t n, int with_feats, aiserve_train_batch_t *b,
    size_t *tokens, char *err, size_t err_len)
{
    size_t  i, T = 0, C = tr->num_labels, H = tr->H, rows, k;
    int     tok_cls = tr->kind == AISERVE_LABELS_TAGS
                      || tr->kind == AISERVE_LABELS_SPANS;
    void   *p;

    for (i = 0; i < n; i++) {
        T += s->ex[idx[i]].n_tokens;
    }
    if (T > tr->cap_tokens || n > tr->cap_seqs) {
        size_t  ct = T > tr->cap_tokens ? T : tr->cap_tokens;
        size_t  cs = n > tr->cap_seqs ? n : tr->cap_seqs;

#define GROW(ptr, count) \
        p = realloc(ptr, (count) * sizeof(*(ptr))); \
        if (p == NULL) { \
            aiserve_err(err, err_len, "out of memory for a batch"); \
            return -1; \
        } \
        ptr = p;

        GROW(tr->b_ids, ct);
        GROW(tr->b_types, ct);
        GROW(tr->b_labels, ct > cs ? ct : cs);
        GROW(tr->b_values, cs * C);
        GROW(tr->b_lens, cs);
        if (tr->opts.mode == AISERVE_TRAIN_HEAD) {
            GROW(tr->b_feats, (tok_cls ? ct : cs) * H);
        }
#undef GROW
        tr->cap_tokens = ct;
        tr->cap_seqs = cs;
    }
    T = 0;
    rows = 0;
    for (i = 0; i < n; i++) {
        const aiserve_ex_t  *e = &s->ex[idx[i]];

        memcpy(tr->b_ids + T, e->input_ids, e->n_tokens * sizeof(int32_t));
        memcpy(tr->b_types + T, e->token_type_ids,
               e->n_tokens * sizeof(int32_t));
        tr->b_lens[i] = e->n_tokens;
        if (tok_cls) {
            memcpy(tr->b_labels + T, e->labels, e->n_tokens * sizeof(int32_t));
        } else if (tr->kind == AISERVE_LABELS_SINGLE) {
            tr->b_labels[i] = e->label;
        } else {
            for (k = 0; k < C; k++) {
                tr->b_values[i * C + k] = e->targets[k];
            }
        }
        if (with_feats) {
            size_t  r = tok_cls ? e->n_tokens : 1;

            memcpy(tr->b_feats + rows * H, s->feats + e->feat * H,
                   r * H * sizeof(float));
            rows += r;
        }
        T += e->n_tokens;
    }
    memset(b, 0, sizeof(*b));
    b->input_ids = tr->b_ids;
    b->token_type_ids = tr->b_types;
    b->seq_lens = tr->b_lens;
    b->n_seqs = n;
    if (tok_cls || tr->kind == AISERVE_LABELS_SINGLE) {
        b->label_ids = tr->b_labels;
    } else {
        b->label_values = tr->b_values;
    }
    *tokens = T;
    return 0;
}


/* Forward pass of a packed batch: the whole model, or the head on the
 * cached features in head mode. */
static int
aiserve_forward(aiserve_trainer_t *tr, const aiserve_set_t *s,
    const size_t *idx, size_t n, float *loss, size_t *tokens, char *err,
    size_t err_len)
{
    aiserve_train_batch_t  b;
    int                    head = tr->opts.mode == AISERVE_TRAIN_HEAD;

    if (aiserve_pack(tr, s, idx, n, head, &b, tokens, err, err_len) != 0) {
        return -1;
    }
    return head ? aiserve_train_head_forward(tr->t, tr->b_feats, &b, loss,
                                             err, err_len)
                : aiserve_train_forward(tr->t, &b, loss, err, err_len);
}


/* --- the state machine --------------------------------------------------- */

/* The batch of S's examples from FIRST on, in file order, within
 * BUDGET tokens (one example at least): their indices in tr->idx, their
 * count returned. */
static size_t
aiserve_file_batch(aiserve_trainer_t *tr, const aiserve_set_t *s,
    size_t first, size_t budget)
{
    size_t  n, tokens = 0;

    for (n = 0; first + n < s->n; n++) {
        if (n > 0 && tokens + s->ex[first + n].n_tokens > budget)
        {
            break;
        }
        tokens += s->ex[first + n].n_tokens;
        tr->idx[n] = first + n;
    }
    return n;
}


/* Head mode's featurization: the inference engine (aiserve_model.h) on
 * the checkpoint's weights packed in fp32, the oneDNN path the server
 * runs, in chunks of at most AISERVE_FEATURE_TOKENS tokens (an example
 * longer than that alone), on opts.threads threads of its own scratch.
 * The encoder is frozen in head mode, so the checkpoint's weights are
 * the ones the training engine holds. */
static int
aiserve_features_begin(aiserve_trainer_t *tr, char *err, size_t err_len)
{
    const aiserve_model_info_t  *in;
    size_t                       i, max = AISERVE_FEATURE_TOKENS;

    for (i = 0; i < tr->train.n; i++) {
        max = tr->train.ex[i].n_tokens > max ? tr->train.ex[i].n_tokens : max;
    }
    for (i = 0; i < tr->valid.n; i++) {
        max = tr->valid.ex[i].n_tokens > max ? tr->valid.ex[i].n_tokens : max;
    }
    tr->f_model = aiserve_model_load_packed(tr->model_dir, AISERVE_DTYPE_FP32,
                                            err, err_len);
    if (tr->f_model == NULL) {
        return -1;
    }
    in = aiserve_model_info(tr->f_model);
    if (in->hidden_size != tr->H) {
        aiserve_err(err, err_len, "%s: the inference engine reads "
                    "hidden_size %zu, the training engine %zu",
                    tr->model_dir, in->hidden_size, tr->H);
        return -1;
    }
    tr->f_scratch = aiserve_scratch_create(tr->f_model, max, err, err_len);
    tr->f_hidden = malloc(max * tr->H * sizeof(float));
    if (tr->f_scratch == NULL || tr->f_hidden == NULL) {
        if (tr->f_scratch != NULL) {
            aiserve_err(err, err_len, "out of memory for the features");
        }
        return -1;
    }
    aiserve_scratch_set_threads(tr->f_scratch, tr->opts.threads);
    return 0;
}


static void
aiserve_features_end(aiserve_trainer_t *tr)
{
    aiserve_scratch_free(tr->f_scratch);
    aiserve_model_free(tr->f_model);
    free(tr->f_hidden);
    tr->f_scratch = NULL;
    tr->f_model = NULL;
    tr->f_hidden = NULL;
}


/* The features of the next chunk of examples (the training set's, then
 * the validation set's) into the cache: each sequence's first token's
 * final hidden state for a sequence classifier, every token's for a
 * token classifier (what aiserve_train_features() computes, to
 * rounding). */
static int
aiserve_features_unit(aiserve_trainer_t *tr, char *err, size_t err_len)
{
    aiserve_set_t          *s;
    aiserve_train_batch_t   b;
    aiserve_batch_t         mb;
    size_t                  first, i, n, t, tokens, H = tr->H;
    float                  *out;
    int                     tok_cls = tr->kind == AISERVE_LABELS_TAGS
                                      || tr->kind == AISERVE_LABELS_SPANS;

    if (tr->f_model == NULL && aiserve_features_begin(tr, err, err_len) != 0)
    {
        aiserve_features_end(tr);
        return -1;
    }
    s = tr->feat_next < tr->train.n ? &tr->train : &tr->valid;
    first = s == &tr->train ? tr->feat_next : tr->feat_next - tr->train.n;
    if (first == 0) {
        s->rows = 0;
        for (i = 0; i < s->n; i++) {
            s->ex[i].feat = s->rows;
            s->rows += tok_cls ? s->ex[i].n_tokens : 1;
        }
        free(s->feats);
        s->feats = malloc((s->rows ? s->rows : 1) * H * sizeof(float));
        if (s->feats == NULL) {
            aiserve_err(err, err_len, "out of memory for the features "
                        "(%zu bytes)", s->rows * H * sizeof(float));
            return -1;
        }
    }
    n = aiserve_file_batch(tr, s, first, AISERVE_FEATURE_TOKENS);
    if (aiserve_pack(tr, s, tr->idx, n, 0, &b, &tokens, err, err_len) != 0) {
        return -1;
    }
    mb.input_ids = b.input_ids;
    mb.token_type_ids = b.token_type_ids;
    mb.seq_lens = b.seq_lens;
    mb.n_seqs = b.n_seqs;
    if (aiserve_model_forward_hidden(tr->f_model, &mb, tr->f_scratch,
                                     tr->f_hidden, err, err_len) != 0)
    {
        return -1;
    }
    out = s->feats + s->ex[first].feat * H;
    if (tok_cls) {
        memcpy(out, tr->f_hidden, tokens * H * sizeof(float));
    } else {
        for (i = 0, t = 0; i < n; t += b.seq_lens[i], i++) {
            memcpy(out + i * H, tr->f_hidden + t * H, H * sizeof(float));
        }
    }
    tr->feat_next += n;
    tr->p.features_done = tr->feat_next;
    if (tr->feat_next == tr->train.n + tr->valid.n) {
        aiserve_features_end(tr);
    }
    return 0;
}


static int
aiserve_tok_task(const aiserve_trainer_t *tr)
{
    return tr->kind == AISERVE_LABELS_TAGS || tr->kind == AISERVE_LABELS_SPANS;
}


/* The epoch's order and batches, from the generator at the epoch's
 * start. */
static void
aiserve_epoch_start(aiserve_trainer_t *tr)
{
    uint64_t  state = tr->rng;

    aiserve_shuffle(tr->order, tr->train.n, &state);
    tr->rng_next = state;
    tr->n_batches = aiserve_cut_batches(&tr->train, tr->order, tr->train.n,
                                        tr->opts.batch_tokens, tr->bstart);
    tr->next_batch = 0;
    tr->epoch_ready = 1;
    tr->p.epoch_batch = 0;
    tr->p.epoch_batches = tr->n_batches;
}


static void
aiserve_epoch_next(aiserve_trainer_t *tr)
{
    tr->rng = tr->rng_next;
    tr->p.epoch++;
    tr->p.epoch_batch = 0;
    tr->epoch_ready = 0;
    tr->epoch_loss_sum = 0;
    tr->epoch_loss_n = 0;
    tr->p.phase = tr->p.epoch >= tr->opts.epochs ? AISERVE_TRAINER_DONE
                                                 : AISERVE_TRAINER_TRAINING;
}


/* One optimiser step over the next gradient_accumulation_steps batches
 * of the epoch.  Their gradients add up unscaled, as transformers'
 * Trainer (>= 4.46; 5.24.0 measured, tools/gen-train-accum.py) does with
 * BERT: it counts the accumulated batch's labelled items, passes the
 * count as num_items_in_batch to a model whose forward takes **kwargs
 * and then leaves the loss undivided, but BERT's loss ignores the count
 * and stays its micro-batch's mean, so the step's gradient is the sum of
 * the micro-batches' mean-loss gradients. */
static int
aiserve_train_unit(aiserve_trainer_t *tr, char *err, size_t err_len)
{
    size_t  acc = tr->opts.gradient_accumulation_steps, m, k, b, tokens;
    size_t  step_tokens = 0;
    double  lsum = 0, norm;
    float   loss, lr;

    m = tr->n_batches - tr->next_batch;
    m = m < acc ? m : acc;
    for (k = 0; k < m; k++) {
        b = tr->next_batch + k;
        if (aiserve_forward(tr, &tr->train, tr->order + tr->bstart[b],
                            tr->bstart[b + 1] - tr->bstart[b], &loss, &tokens,
                            err, err_len) != 0
            || aiserve_train_backward(tr->t, 1.f, err, err_len) != 0)
        {
            return -1;
        }
        lsum += loss;
        step_tokens += tokens;
    }
    if (aiserve_train_step(tr->t, &tr->oc, &lr, &norm, err, err_len) != 0) {
        return -1;
    }
    tr->next_batch += m;
    tr->p.epoch_batch = tr->next_batch;
    tr->p.step++;
    tr->p.loss = (float) (lsum / (double) m);
    tr->p.learning_rate = lr;
    tr->p.grad_norm = norm;
    tr->p.step_tokens = step_tokens;
    tr->p.trained_tokens += step_tokens;
    tr->epoch_loss_sum += tr->p.loss;
    tr->epoch_loss_n++;
    tr->p.epoch_loss = tr->epoch_loss_sum / (double) tr->epoch_loss_n;
    return 0;
}


static void
aiserve_eval_begin(aiserve_trainer_t *tr)
{
    tr->train_pass = aiserve_train_dropout_pass(tr->t);
    aiserve_train_set_dropout(tr->t, 0, tr->opts.seed);
    tr->eval_next = 0;
    tr->eval_tok = 0;
    tr->eval_loss_sum = 0;
    tr->p.eval_done = 0;
    tr->p.phase = AISERVE_TRAINER_EVALUATING;
}


/* Back to training's dropout, at the pass it had reached. */
static void
aiserve_eval_end(aiserve_trainer_t *tr)
{
    aiserve_train_set_dropout(tr->t, tr->opts.dropout, tr->opts.seed);
    aiserve_train_set_dropout_pass(tr->t, tr->train_pass);
}


/* sklearn's multi-label report of the indicators in tr->pred. */
static int
aiserve_eval_multilabel_report(aiserve_trainer_t *tr,
    aiserve_trainer_eval_t *ev, char *err, size_t err_len)
{
    const aiserve_set_t  *s = &tr->valid;
    size_t                i, k, C = tr->num_labels;
    uint8_t              *yt, *yp;
    char                  msg[256];

    yt = malloc(s->n * C + 1);
    yp = malloc(s->n * C + 1);
    if (yt == NULL || yp == NULL) {
        free(yt);
        free(yp);
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    for (i = 0; i < s->n; i++) {
        for (k = 0; k < C; k++) {
            yt[i * C + k] = s->ex[i].targets[k] > 0.5f;
            yp[i * C + k] = (uint8_t) tr->pred[i * C + k];
        }
    }
    ev->has_report = aiserve_eval_multilabel(yt, yp, s->n,
                                             (const char *const *)
                                             tr->id2label, C, &ev->report,
                                             msg, sizeof(msg)) == 0;
    free(yt);
    free(yp);
    return 0;
}


/* The report of the predictions gathered in tr->pred. */
static int
aiserve_eval_report(aiserve_trainer_t *tr, aiserve_trainer_eval_t *ev,
    char *err, size_t err_len)
{
    const aiserve_set_t   *s = &tr->valid;
    const char           **yt = NULL, **yp = NULL;
    const char *const    **st = NULL, *const **sp = NULL;
    size_t                *lens = NULL, i, k, j, n_tok;
    int                    rc = -1;
    char                   msg[256];

    if (tr->kind == AISERVE_LABELS_MULTI) {
        rc = aiserve_eval_multilabel_report(tr, ev, err, err_len);
        goto done;
    }
    if (tr->kind == AISERVE_LABELS_SINGLE) {
        yt = malloc(s->n * sizeof(char *));
        yp = malloc(s->n * sizeof(char *));
        if (yt == NULL || yp == NULL) {
            aiserve_err(err, err_len, "out of memory");
            goto done;
        }
        for (i = 0; i < s->n; i++) {
            yt[i] = tr->id2label[s->ex[i].label];
            yp[i] = tr->id2label[tr->pred[i]];
        }
        rc = aiserve_eval_classification(yt, yp, s->n, &ev->report, msg,
                                         sizeof(msg));
    } else {
        n_tok = tr->eval_tok;
        yt = malloc((n_tok + 1) * sizeof(char *));
        yp = malloc((n_tok + 1) * sizeof(char *));
        st = malloc(s->n * sizeof(*st));
        sp = malloc(s->n * sizeof(*sp));
        lens = malloc(s->n * sizeof(size_t));
        if (yt == NULL || yp == NULL || st == NULL || sp == NULL
            || lens == NULL)
        {
            aiserve_err(err, err_len, "out of memory");
            goto done;
        }
        j = 0;
        for (i = 0; i < s->n; i++) {
            const aiserve_ex_t  *e = &s->ex[i];

            st[i] = yt + j;
            sp[i] = yp + j;
            for (k = 0; k < e->n_tokens; k++) {
                if (e->labels[k] != AISERVE_TRAIN_IGNORE) {
                    yt[j] = tr->id2label[e->labels[k]];
                    yp[j] = tr->id2label[tr->pred[j]];
                    j++;
                }
            }
            lens[i] = (size_t) (yt + j - st[i]);
        }
        rc = aiserve_eval_sequences(st, sp, lens, s->n, tr->opts.ner_mode,
                                    &ev->report, msg, sizeof(msg));
    }
    /* a report that cannot be made (no entity on either side) leaves the
     * loss alone */
    ev->has_report = rc == 0;
    rc = 0;

done:
    free(yt);
    free(yp);
    free(st);
    free(sp);
    free(lens);
    return rc;
}


/* One batch of the validation set, in file order. */
static int
aiserve_eval_unit(aiserve_trainer_t *tr, char *err, size_t err_len)
{
    const aiserve_set_t  *s = &tr->valid;
    const float          *logits;
    size_t                first = tr->eval_next, n, i, k, tokens, r = 0;
    size_t                C = tr->num_labels;
    float                 loss;

    n = aiserve_file_batch(tr, s, first, tr->opts.batch_tokens);
    if (aiserve_forward(tr, s, tr->idx, n, &loss, &tokens, err, err_len)
        != 0)
    {
        return -1;
    }
    logits = aiserve_train_logits(tr->t);
    for (i = 0; i < n; i++) {
        const aiserve_ex_t  *e = &s->ex[first + i];

        if (aiserve_tok_task(tr)) {
            for (k = 0; k < e->n_tokens; k++, r++) {
                if (e->labels[k] != AISERVE_TRAIN_IGNORE) {
                    tr->pred[tr->eval_tok++] =
                        (int32_t) aiserve_argmax(logits + r * C, C);
                }
            }
        } else if (tr->kind == AISERVE_LABELS_SINGLE) {
            tr->pred[first + i] = (int32_t) aiserve_argmax(logits + i * C, C);
        } else if (tr->kind == AISERVE_LABELS_MULTI) {
            /* sigmoid(logit) > 0.5 */
            for (k = 0; k < C; k++) {
                tr->pred[(first + i) * C + k] = logits[i * C + k] > 0.f;
            }
        }
    }
    tr->eval_loss_sum += (double) loss * (double) n;
    tr->eval_next += n;
    tr->p.eval_done = tr->eval_next;
    return 0;
}


static int
aiserve_eval_finish(aiserve_trainer_t *tr, char *err, size_t err_len)
{
    aiserve_trainer_eval_t  ev;

    memset(&ev, 0, sizeof(ev));
    ev.epoch = tr->p.epoch + 1;
    ev.step = tr->p.step;
    ev.examples = tr->valid.n;
    ev.loss = tr->eval_loss_sum / (double) tr->valid.n;
    if (tr->kind != AISERVE_LABELS_REGRESSION
        && aiserve_eval_report(tr, &ev, err, err_len) != 0)
    {
        return -1;
    }
    if (tr->has_last) {
        aiserve_report_free(&tr->last.report);
    }
    tr->last = ev;
    tr->has_last = 1;
    return 0;
}


int
aiserve_trainer_step(aiserve_trainer_t *tr, size_t n, char *err,
    size_t err_len)
{
    size_t  done;

    tr->p.evaluated_epoch = 0;
    tr->p.finished_epoch = 0;
    for (done = 0; done < n; done++) {
        switch (tr->p.phase) {

        case AISERVE_TRAINER_FEATURES:
            if (aiserve_features_unit(tr, err, err_len) != 0) {
                return -1;
            }
            if (tr->feat_next == tr->train.n + tr->valid.n) {
                tr->p.phase = AISERVE_TRAINER_TRAINING;
            }
            break;

        case AISERVE_TRAINER_TRAINING:
            if (!tr->epoch_ready) {
                aiserve_epoch_start(tr);
            }
            if (tr->next_batch < tr->n_batches
                && aiserve_train_unit(tr, err, err_len) != 0)
            {
                return -1;
            }
            if (tr->next_batch == tr->n_batches) {
                tr->p.finished_epoch = tr->p.epoch + 1;
                if (tr->valid.n > 0) {
                    aiserve_eval_begin(tr);
                } else {
                    aiserve_epoch_next(tr);
                }
                return tr->p.phase == AISERVE_TRAINER_DONE ? 0 : 1;
            }
            break;

        case AISERVE_TRAINER_EVALUATING:
            if (aiserve_eval_unit(tr, err, err_len) != 0) {
                return -1;
            }
            if (tr->eval_next == tr->valid.n) {
                aiserve_eval_end(tr);
                if (aiserve_eval_finish(tr, err, err_len) != 0) {
                    return -1;
                }
                tr->p.evaluated_epoch = tr->p.epoch + 1;
                aiserve_epoch_next(tr);
                return tr->p.phase == AISERVE_TRAINER_DONE ? 0 : 1;
            }
            break;

        case AISERVE_TRAINER_DONE:
            return 0;
        }
    }
    return tr->p.phase == AISERVE_TRAINER_DONE ? 0 : 1;
}


const aiserve_trainer_progress_t *
aiserve_trainer_progress(const aiserve_trainer_t *tr)
{
    return &tr->p;
}


const aiserve_trainer_eval_t *
aiserve_trainer_last_eval(const aiserve_trainer_t *tr)
{
    return tr->has_last ? &tr->last : NULL;
}


json_t *
aiserve_trainer_eval_json(const aiserve_trainer_eval_t *ev)
{
    json_t  *o;

    o = json_pack("{s:I, s:I, s:I, s:f}", "epoch", (json_int_t) ev->epoch,
                  "step", (json_int_t) ev->step, "examples",
                  (json_int_t) ev->examples, "eval_loss", ev->loss);
    if (o != NULL && ev->has_report
        && (json_object_set_new(o, ev->report.kind == AISERVE_REPORT_SKLEARN
                                   ? "accuracy" : "f1",
                                json_real(ev->report.kind
                                          == AISERVE_REPORT_SKLEARN
                                          ? ev->report.accuracy
                                          : ev->report.micro.f1)) != 0
            || json_object_set_new(o, "report",
                                aiserve_report_json(&ev->report)) != 0
            || json_object_set_new(o, "confusion_matrix",
                                   aiserve_confusion_json(&ev->report))
               != 0))
    {
        json_decref(o);
        return NULL;
    }
    return o;
}


const char *const *
aiserve_trainer_labels(const aiserve_trainer_t *tr, size_t *n)
{
    *n = tr->num_labels;
    return (const char *const *) tr->id2label;
}


int
aiserve_trainer_example(const aiserve_trainer_t *tr, size_t i,
    const int32_t **input_ids, const int32_t **token_type_ids,
    size_t *n_tokens, const float **features)
{
    const aiserve_ex_t  *e;

    if (tr->opts.mode != AISERVE_TRAIN_HEAD || i >= tr->train.n
        || tr->feat_next < tr->train.n || tr->train.feats == NULL)
    {
        return -1;
    }
    e = &tr->train.ex[i];
    *input_ids = e->input_ids;
    *token_type_ids = e->token_type_ids;
    *n_tokens = e->n_tokens;
    *features = tr->train.feats + e->feat * tr->H;
    return 0;
}


aiserve_train_t *
aiserve_trainer_engine(aiserve_trainer_t *tr)
{
    return tr->t;
}


/* --- checkpoints --------------------------------------------------------- */

static const char  *aiserve_mode_names[] = { "full", "head", "lora" };


static json_t *
aiserve_opts_json(const aiserve_trainer_opts_t *o)
{
    char  seed[24];

    snprintf(seed, sizeof(seed), "%llu", (unsigned long long) o->seed);
    return json_pack("{s:s, s:s, s:I, s:f, s:f, s:I, s:I, s:f, s:f, s:f, "
                     "s:f, s:f, s:f, s:I, s:f, s:I, s:I, s:I, s:s, s:I, "
                     "s:b, s:s, s:s}",
                     "model_dir", o->model_dir,
                     "mode", aiserve_mode_names[o->mode],
                     "lora_r", (json_int_t) o->lora_r,
                     "lora_alpha", (double) o->lora_alpha,
                     "lora_dropout", (double) o->lora_dropout,
                     "lora_targets", (json_int_t) o->lora_targets,
                     "epochs", (json_int_t) o->epochs,
                     "learning_rate", (double) o->learning_rate,
                     "weight_decay", (double) o->weight_decay,
                     "adam_beta1", (double) o->adam_beta1,
                     "adam_beta2", (double) o->adam_beta2,
                     "adam_epsilon", (double) o->adam_epsilon,
                     "max_grad_norm", (double) o->max_grad_norm,
                     "warmup_steps", (json_int_t) o->warmup_steps,
                     "warmup_ratio", (double) o->warmup_ratio,
                     "batch_tokens", (json_int_t) o->batch_tokens,
                     "gradient_accumulation_steps",
                     (json_int_t) o->gradient_accumulation_steps,
                     "max_length", (json_int_t) o->max_length,
                     "seed", seed,
                     "threads", (json_int_t) o->threads,
                     "dropout", o->dropout,
                     "ner_mode", o->ner_mode == AISERVE_CHUNK_IOB2
                                 ? "strict" : "default",
                     "dtype", aiserve_dtype_name(o->dtype));
}


static int
aiserve_st_name(char (*names)[160], size_t i, const char *kind,
    const char *name)
{
    return snprintf(names[i], sizeof(names[i]), "%s/%s", kind, name)
           >= (int) sizeof(names[i]);
}


int
aiserve_trainer_save(aiserve_trainer_t *tr, const char *dir, json_t *meta,
    char *err, size_t err_len)
{
    aiserve_st_wtensor_t          *w = NULL;
    const aiserve_train_tensor_t  *x;
    char                         (*names)[160] = NULL;
    char                           path[4096], hex[24];
    float                         *P, *M, *V, *src;
    size_t                        *adam_step, n_t, i, k, nw = 0;
    json_t                        *o = NULL, *pos;
    char                          *text = NULL;
    int                            rc = -1;
    uint64_t                       pass;

    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        aiserve_err(err, err_len, "%s: mkdir: %s", dir, strerror(errno));
        return -1;
    }
    if (aiserve_train_optim_state(tr->t, &M, &V, &adam_step, err, err_len)
        != 0)
    {
        return -1;
    }
    P = aiserve_train_params(tr->t);
    n_t = aiserve_train_n_tensors(tr->t);
    w = calloc(3 * n_t, sizeof(*w));
    names = calloc(3 * n_t, sizeof(*names));
    if (w == NULL || names == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto done;
    }
    for (i = 0; i < n_t; i++) {
        x = aiserve_train_tensor(tr->t, i);
        if (x->frozen) {
            continue;
        }
        for (k = 0; k < 3; k++) {
            src = k == 0 ? P : k == 1 ? M : V;
            if (aiserve_st_name(names, nw, k == 0 ? "params"
                                : k == 1 ? "adam_m" : "adam_v", x->name)) {
                aiserve_err(err, err_len, "tensor name too long: %s",
                            x->name);
                goto done;
            }
            w[nw].name = names[nw];
            w[nw].dtype = AISERVE_ST_F32;
            w[nw].ndim = x->ndim;
            w[nw].shape[0] = x->shape[0];
            w[nw].shape[1] = x->shape[1];
            w[nw].data = src + x->offset;
            nw++;
        }
    }
    snprintf(path, sizeof(path), "%s/state.safetensors", dir);
    if (aiserve_st_write(path, w, nw, NULL, 0, err, err_len) != 0) {
        goto done;
    }

    /* mid-evaluation, training resumes at the pass saved before it */
    pass = tr->p.phase == AISERVE_TRAINER_EVALUATING
           ? tr->train_pass : aiserve_train_dropout_pass(tr->t);
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long) tr->rng);
    pos = json_pack("{s:I, s:I, s:I, s:b, s:s, s:I, s:I, s:I, s:f, s:I}",
                    "epoch", (json_int_t) tr->p.epoch,
                    "batch", (json_int_t) (tr->epoch_ready ? tr->next_batch
                                                           : 0),
                    "step", (json_int_t) tr->p.step,
                    "epoch_started", tr->epoch_ready,
                    "rng", hex,
                    "dropout_pass", (json_int_t) pass,
                    "adam_step", (json_int_t) *adam_step,
                    "trained_tokens", (json_int_t) tr->p.trained_tokens,
                    "epoch_loss_sum", tr->epoch_loss_sum,
                    "epoch_loss_steps", (json_int_t) tr->epoch_loss_n);
    snprintf(hex, sizeof(hex), "%016llx",
             (unsigned long long) tr->fingerprint);
    o = json_pack("{s:s, s:i, s:o, s:{s:I, s:I, s:s}, s:o, s:O}",
                  "format", AISERVE_CKPT_FORMAT,
                  "version", AISERVE_CKPT_VERSION,
                  "options", aiserve_opts_json(&tr->opts),
                  "train", "examples", (json_int_t) tr->train.n,
                  "tokens", (json_int_t) tr->train.tokens,
                  "fingerprint", hex,
                  "position", pos,
                  "meta", meta != NULL ? meta : json_null());
    text = o != NULL ? json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    if (text == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto done;
    }
    snprintf(path, sizeof(path), "%s/trainer.json", dir);
    rc = aiserve_write_file_atomic(path, text, strlen(text), err, err_len);

done:
    free(text);
    json_decref(o);
    free(w);
    free(names);
    return rc;
}


/* A number of OBJ's KEY, or -1 with err when missing. */
static int
aiserve_ckpt_num(json_t *obj, const char *key, const char *path,
    double *v, char *err, size_t err_len)
{
    json_t  *j = json_object_get(obj, key);

    if (!json_is_number(j)) {
        aiserve_err(err, err_len, "%s: field \"%s\": a number expected",
                    path, key);
        return -1;
    }
    *v = json_number_value(j);
    return 0;
}


void
aiserve_trainer_remove_checkpoint(const char *dir)
{
    char  path[4096 + 32];

    snprintf(path, sizeof(path), "%s/state.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/trainer.json", dir);
    unlink(path);
    rmdir(dir);
}


json_t *
aiserve_trainer_read_checkpoint(const char *dir,
    aiserve_trainer_opts_t *opts, char *err, size_t err_len)
{
    json_t        *root, *o, *j;
    json_error_t   jerr;
    char           path[4096];
    const char    *s;
    double         v;
    size_t         i;

    static const struct {
        const char  *key;
        size_t       off;
        int          type;    /* 0 size_t, 1 float, 2 int */
    } fields[] = {
#define F(k, t) { #k, offsetof(aiserve_trainer_opts_t, k), t }
        F(lora_r, 0), F(lora_alpha, 1), F(lora_dropout, 1),
        F(epochs, 0), F(learning_rate, 1), F(weight_decay, 1),
        F(adam_beta1, 1), F(adam_beta2, 1), F(adam_epsilon, 1),
        F(max_grad_norm, 1), F(warmup_steps, 0), F(warmup_ratio, 1),
        F(batch_tokens, 0), F(gradient_accumulation_steps, 0),
        F(max_length, 0), F(threads, 2)
#undef F
    };

    snprintf(path, sizeof(path), "%s/trainer.json", dir);
    root = json_load_file(path, 0, &jerr);
    if (root == NULL) {
        /* a file that cannot be read has no line (jansson says -1) */
        if (jerr.line < 1) {
            aiserve_err(err, err_len, "%s: no checkpoint here: %s", dir,
                        jerr.text);
        } else {
            aiserve_err(err, err_len, "%s:%d: %s", path, jerr.line,
                        jerr.text);
        }
        return NULL;
    }
    s = json_string_value(json_object_get(root, "format"));
    o = json_object_get(root, "options");
    if (s == NULL || strcmp(s, AISERVE_CKPT_FORMAT) != 0
        || !json_is_object(o))
    {
        aiserve_err(err, err_len, "%s: not an aiserve trainer checkpoint",
                    path);
        goto fail;
    }
    if (json_integer_value(json_object_get(root, "version"))
        != AISERVE_CKPT_VERSION)
    {
        aiserve_err(err, err_len, "%s: field \"version\": %d expected", path,
                    AISERVE_CKPT_VERSION);
        goto fail;
    }
    aiserve_trainer_opts_defaults(opts, AISERVE_TRAIN_FULL);
    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        char  *dst = (char *) opts + fields[i].off;

        if (aiserve_ckpt_num(o, fields[i].key, path, &v, err, err_len) != 0) {
            goto fail;
        }
        if (fields[i].type == 0) {
            *(size_t *) dst = (size_t) v;
        } else if (fields[i].type == 1) {
            *(float *) dst = (float) v;
        } else {
            *(int *) dst = (int) v;
        }
    }
    if (aiserve_ckpt_num(o, "lora_targets", path, &v, err, err_len) != 0) {
        goto fail;
    }
    opts->lora_targets = (unsigned) v;
    opts->model_dir = json_string_value(json_object_get(o, "model_dir"));
    s = json_string_value(json_object_get(o, "mode"));
    for (i = 0; s != NULL && i < 3 && strcmp(s, aiserve_mode_names[i]) != 0;
         i++)
    {
        /* the mode's index */
    }
    j = json_object_get(o, "seed");
    if (opts->model_dir == NULL || s == NULL || i == 3 || !json_is_string(j)
        || !json_is_boolean(json_object_get(o, "dropout")))
    {
        aiserve_err(err, err_len, "%s: fields \"model_dir\", \"mode\", "
                    "\"seed\" and \"dropout\" are required", path);
        goto fail;
    }
    opts->mode = (aiserve_train_mode_e) i;
    opts->seed = strtoull(json_string_value(j), NULL, 10);
    opts->dropout = json_is_true(json_object_get(o, "dropout"));
    s = json_string_value(json_object_get(o, "ner_mode"));
    opts->ner_mode = s != NULL && strcmp(s, "strict") == 0
                     ? AISERVE_CHUNK_IOB2 : AISERVE_CHUNK_CONLL;
    /* absent from checkpoints written before --dtype: fp32 */
    s = json_string_value(json_object_get(o, "dtype"));
    opts->dtype = s == NULL || strcmp(s, "fp32") == 0 ? AISERVE_DTYPE_FP32
                  : strcmp(s, "bf16") == 0 ? AISERVE_DTYPE_BF16
                  : AISERVE_DTYPE_AUTO;
    return root;

fail:
    json_decref(root);
    return NULL;
}


int
aiserve_trainer_restore(aiserve_trainer_t *tr, const char *dir, char *err,
    size_t err_len)
{
    aiserve_trainer_opts_t         o;
    const aiserve_train_tensor_t  *x;
    const aiserve_st_tensor_t     *s;
    aiserve_st_file_t             *st = NULL;
    json_t                        *root, *mine = NULL, *pos, *tj;
    const char                    *key;
    json_t                        *val;
    char                           path[4096], name[160], hex[24];
    float                         *P, *M, *V, *dst;
    size_t                        *adam_step, i, k;
    double                         v[8];
    int                            rc = -1;
    static const char             *pk[] = { "epoch", "batch", "step",
                                            "dropout_pass", "adam_step",
                                            "trained_tokens",
                                            "epoch_loss_sum",
                                            "epoch_loss_steps" };

    root = aiserve_trainer_read_checkpoint(dir, &o, err, err_len);
    if (root == NULL) {
        return -1;
    }
    snprintf(path, sizeof(path), "%s/trainer.json", dir);

    /* the same options and the same training data */
    mine = aiserve_opts_json(&tr->opts);
    json_object_foreach(json_object_get(root, "options"), key, val) {
        if (!json_equal(val, json_object_get(mine, key))) {
            aiserve_err(err, err_len, "%s: option \"%s\" of the checkpoint "
                        "differs from this run's", path, key);
            goto done;
        }
    }
    snprintf(hex, sizeof(hex), "%016llx",
             (unsigned long long) tr->fingerprint);
    tj = json_object_get(root, "train");
    if ((size_t) json_integer_value(json_object_get(tj, "examples"))
        != tr->train.n
        || json_string_value(json_object_get(tj, "fingerprint")) == NULL
        || strcmp(json_string_value(json_object_get(tj, "fingerprint")), hex)
           != 0)
    {
        aiserve_err(err, err_len, "%s: the training data differs from the "
                    "checkpoint's (%zu examples, fingerprint %s; the "
                    "checkpoint has %lld, %s)", path, tr->train.n, hex,
                    (long long) json_integer_value(json_object_get(tj,
                                                              "examples")),
                    json_string_value(json_object_get(tj, "fingerprint"))
                    ? json_string_value(json_object_get(tj, "fingerprint"))
                    : "none");
        goto done;
    }
    pos = json_object_get(root, "position");
    for (i = 0; i < sizeof(pk) / sizeof(pk[0]); i++) {
        if (aiserve_ckpt_num(pos, pk[i], path, &v[i], err, err_len) != 0) {
            goto done;
        }
    }
    if (!json_is_string(json_object_get(pos, "rng"))
        || v[0] > (double) tr->opts.epochs)
    {
        aiserve_err(err, err_len, "%s: field \"position\": a bad position",
                    path);
        goto done;
    }

    /* the trainable tensors and their moments */
    if (aiserve_train_optim_state(tr->t, &M, &V, &adam_step, err, err_len)
        != 0)
    {
        goto done;
    }
    snprintf(name, sizeof(name), "%s/state.safetensors", dir);
    st = aiserve_st_open(name, err, err_len);
    if (st == NULL) {
        goto done;
    }
    P = aiserve_train_params(tr->t);
    for (i = 0; i < aiserve_train_n_tensors(tr->t); i++) {
        x = aiserve_train_tensor(tr->t, i);
        if (x->frozen) {
            continue;
        }
        for (k = 0; k < 3; k++) {
            dst = k == 0 ? P : k == 1 ? M : V;
            snprintf(name, sizeof(name), "%s/%s", k == 0 ? "params"
                     : k == 1 ? "adam_m" : "adam_v", x->name);
            s = aiserve_st_find(st, name);
            if (s == NULL || s->dtype != AISERVE_ST_F32
                || s->n_elements != x->n)
            {
                aiserve_err(err, err_len, "%s: tensor \"%s\" is missing or "
                            "not F32 of %zu elements", st->path, name, x->n);
                goto done;
            }
            memcpy(dst + x->offset, s->data, x->n * sizeof(float));
        }
    }

    *adam_step = (size_t) v[4];
    aiserve_train_set_dropout(tr->t, tr->opts.dropout, tr->opts.seed);
    aiserve_train_set_dropout_pass(tr->t, (uint64_t) v[3]);
    tr->rng = strtoull(json_string_value(json_object_get(pos, "rng")), NULL,
                       16);
    tr->p.epoch = (size_t) v[0];
    tr->p.step = (size_t) v[2];
    tr->p.trained_tokens = (uint64_t) v[5];
    tr->epoch_loss_sum = v[6];
    tr->epoch_loss_n = (size_t) v[7];
    tr->p.epoch_loss = tr->epoch_loss_n
                       ? tr->epoch_loss_sum / (double) tr->epoch_loss_n : 0;
    tr->epoch_ready = 0;
    if (tr->p.epoch >= tr->opts.epochs) {
        tr->p.phase = AISERVE_TRAINER_DONE;
    } else {
        if (json_is_true(json_object_get(pos, "epoch_started"))) {
            aiserve_epoch_start(tr);
            if ((size_t) v[1] > tr->n_batches) {
                aiserve_err(err, err_len, "%s: field \"position\": batch "
                            "%zu of %zu", path, (size_t) v[1],
                            tr->n_batches);
                goto done;
            }
            tr->next_batch = (size_t) v[1];
            tr->p.epoch_batch = tr->next_batch;
        }
        tr->p.phase = tr->opts.mode == AISERVE_TRAIN_HEAD
                      && tr->feat_next < tr->train.n + tr->valid.n
                      ? AISERVE_TRAINER_FEATURES : AISERVE_TRAINER_TRAINING;
    }
    rc = 0;

done:
    aiserve_st_close(st);
    json_decref(mine);
    json_decref(root);
    return rc;
}


/* --- output -------------------------------------------------------------- */

int
aiserve_trainer_write_model(aiserve_trainer_t *tr, const char *out_dir,
    char *err, size_t err_len)
{
    const aiserve_model_info_t    *in = aiserve_train_info(tr->t);
    const aiserve_train_tensor_t  *x;
    aiserve_st_wtensor_t          *w;
    aiserve_hf_spec_t              spec;
    aiserve_lora_config_t          lc;
    const char                    *targets[3];
    static const char             *qkv[3] = { "query", "key", "value" };
    const float                   *P = aiserve_train_params(tr->t);
    size_t                         i, n = 0, nt = 0;
    int                            rc, head;

    w = calloc(aiserve_train_n_tensors(tr->t), sizeof(*w));
    if (w == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    for (i = 0; i < aiserve_train_n_tensors(tr->t); i++) {
        x = aiserve_train_tensor(tr->t, i);
        head = strncmp(x->name, "bert.", 5) != 0
               || strncmp(x->name, "bert.pooler.", 12) == 0;
        if (tr->opts.mode == AISERVE_TRAIN_LORA && !head
            && strstr(x->name, ".lora_") == NULL)
        {
            continue;
        }
        w[n].name = x->name;
        w[n].dtype = AISERVE_ST_F32;
        w[n].ndim = x->ndim;
        w[n].shape[0] = x->shape[0];
        w[n].shape[1] = x->shape[1];
        w[n].data = P + x->offset;
        n++;
    }
    memset(&spec, 0, sizeof(spec));
    spec.arch = in->arch;
    spec.base_dir = tr->model_dir;
    spec.num_labels = tr->num_labels;
    spec.id2label = (const char *const *) tr->id2label;
    spec.problem_type = in->problem_type;
    if (tr->opts.mode == AISERVE_TRAIN_FULL) {
        rc = aiserve_hf_write_model(out_dir, &spec, w, n, err, err_len);
    } else if (tr->opts.mode == AISERVE_TRAIN_HEAD) {
        rc = aiserve_hf_write_head(out_dir, &spec, w, n, err, err_len);
    } else {
        for (i = 0; i < 3; i++) {
            if (tr->opts.lora_targets & (1u << i)) {
                targets[nt++] = qkv[i];
            }
        }
        lc.r = tr->opts.lora_r;
        lc.lora_alpha = tr->opts.lora_alpha;
        lc.lora_dropout = tr->opts.lora_dropout;
        lc.target_modules = targets;
        lc.n_target_modules = nt;
        rc = aiserve_hf_write_lora(out_dir, &spec, &lc, w, n, err, err_len);
    }
    free(w);
    return rc;
}
