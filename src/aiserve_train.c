/*
 * aiserve training engine (see aiserve_train.h): BERT forward with
 * activations, backward over the whole graph, losses of transformers'
 * task heads.  Written after transformers' modeling_bert.py and torch's
 * definitions of each operation's gradient.
 *
 * Notation: T tokens in the batch, H hidden_size, I intermediate_size,
 * A heads of D = H / A, C num_labels.  A Linear layer y = x W^T + b with
 * W [out, in] has the gradients dW += dy^T x, db += sum_rows dy,
 * dx = dy W, each one BLAS product.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aiserve_blas.h"
#include "aiserve_err.h"
#include "aiserve_gemm.h"
#include "aiserve_ops.h"
#include "aiserve_optim.h"
#include "aiserve_safetensors.h"
#include "aiserve_team.h"
#include "aiserve_train.h"

#define AISERVE_TRAIN_MAX_THREADS  64


/* Offsets, in floats, of one layer's tensors in the flat arrays.  Query,
 * key and value weights lie one after the other, and so do their biases:
 * the stacked [3H, H] weight and [3H] bias of one product. */
typedef struct {
    size_t  qkv_w, qkv_b;
    size_t  ao_w, ao_b, ao_g, ao_beta;     /* BertSelfOutput */
    size_t  i_w, i_b;                      /* BertIntermediate */
    size_t  o_w, o_b, o_g, o_beta;         /* BertOutput */
    size_t  lora_a[3], lora_b[3];          /* LoRA of query, key, value
                                              (lora mode, targeted ones) */
} aiserve_tl_t;

/* One layer's activations for the current batch. */
typedef struct {
    float  *qkv;        /* [T, 3H] */
    float  *probs;      /* softmax(QK^T / sqrt(D)) per sequence and head,
                           [L, L] each, before dropout */
    float  *ctx;        /* [T, H] */
    float  *h1;         /* [T, H] LayerNorm 1 input */
    float  *st1;        /* [T, 2] its mean and rstd */
    float  *a1;         /* [T, H] LayerNorm 1 output */
    float  *pre;        /* [T, I] intermediate before the activation */
    float  *gel;        /* [T, I] after */
    float  *h2;         /* [T, H] LayerNorm 2 input */
    float  *st2;        /* [T, 2] */
    float  *out;        /* [T, H] the layer's output */
    float  *lora_u[3];  /* [T, r] dropout(x) A^T of each LoRA */
} aiserve_tact_t;

/* Dropout sites: each draws its masks from its own stream. */
enum {
    AISERVE_SITE_EMB = 0,
    AISERVE_SITE_CLS,
    AISERVE_SITE_LAYER          /* + 8 l + {0 probs, 1 ao, 2 out,
                                   3 + m the LoRA input of projection m} */
};

struct aiserve_train_s {
    aiserve_model_info_t     info;
    aiserve_act_e            act;
    size_t                   head_dim;
    float                    hidden_dropout, attn_dropout, cls_dropout;
    float                    initializer_range;
    int                      dropout_on;
    uint64_t                 seed, pass;
    aiserve_train_mode_e     mode;
    size_t                   lora_r;
    float                    lora_scale, lora_dropout;
    unsigned                 lora_targets;

    aiserve_train_tensor_t  *tensors;
    size_t                   n_tensors;
    float                   *params, *grads;
    size_t                   n_params;
    float                   *adam_m, *adam_v;
    size_t                   adam_step;
    struct {
        size_t               offset, n;
        int                  decay;
    }                       *chunks;         /* the optimiser's items */
    double                  *chunk_ss;       /* their sums of squares */
    size_t                   n_chunks;

    size_t                   word, pos, type, emb_g, emb_b;
    aiserve_tl_t            *layers;
    int                      has_pooler;
    size_t                   pool_w, pool_b, cls_w, cls_b;

    aiserve_team_t          *team;           /* threads of one pass */
    int                      threads;
    aiserve_dtype_e          dtype;          /* of the products: FP32 or
                                                BF16 */
    int                      gemm_failed;    /* a bf16 product failed in
                                                this pass */

    /* the current batch, copied */
    int32_t                 *ids, *types, *labels;
    float                   *values;
    size_t                  *lens, *start, *posn;
    size_t                  *poff;           /* each sequence's first
                                                attention probability */
    size_t                   n_seqs, T, cap_T, cap_n, max_len, rows;
    int                      has_labels;
    int                      head_only;      /* last pass: head mode */

    /* activations and gradient buffers, carved from one arena */
    float                   *arena;
    size_t                   arena_cap;
    float                   *emb_in, *emb_st, *emb_out;
    aiserve_tact_t          *acts;
    float                   *first, *pooled, *cls_in, *logits, *dlogits;
    float                   *dx, *b1, *b2, *dctx, *dqkv, *di, *dcls,
                            *dpool, *att, *du;  /* att: 2 max_len^2
                                                           per thread */
    size_t                   n_loss;         /* labels counted in the loss */
};


/* The gradient of the tensor at offset OFF, or NULL when it is frozen
 * (the backward pass skips the products of frozen weights). */
static float *
aiserve_grad(const aiserve_train_t *t, size_t off)
{
    size_t  lo = 0, hi = t->n_tensors, mid;

    while (hi - lo > 1) {
        mid = (lo + hi) / 2;
        if (t->tensors[mid].offset <= off) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return t->tensors[lo].frozen ? NULL : t->grads + off;
}

#define GR(off)  aiserve_grad(t, off)


/* --- element-wise passes over the team --------------------------------- */

typedef void (*aiserve_range_fn)(void *arg, size_t from, size_t to);

typedef struct {
    aiserve_range_fn   fn;
    void              *arg;
    size_t             n, chunk;
} aiserve_par_t;


static void
aiserve_par_item(void *arg, size_t item, int thread)
{
    const aiserve_par_t  *p = arg;
    size_t                from = item * p->chunk;

    p->fn(p->arg, from, p->n - from < p->chunk ? from + (p->n - from)
                                                 : from + p->chunk);
}


/*
 * FN(ARG, from, to) over [0, N) items of UNIT floats each, in one block
 * per thread of the team (of 64 items when UNIT is 1, so that blocks
 * start on cache lines of whole vectors); under 16384 floats in all, in
 * the caller, where waking the team costs more than it saves.
 */
static void
aiserve_par(aiserve_train_t *t, aiserve_range_fn fn, void *arg, size_t n,
    size_t unit)
{
    aiserve_par_t  p = { fn, arg, n, n };
    size_t         align = unit == 1 ? 64 : 1;

    if (t->threads == 1 || n * unit < 16384) {
        fn(arg, 0, n);
        return;
    }
    p.chunk = (n + (size_t) t->threads - 1) / (size_t) t->threads;
    p.chunk = (p.chunk + align - 1) / align * align;
    aiserve_team_run(t->team, aiserve_par_item, &p,
                     (n + p.chunk - 1) / p.chunk);
}


/* --- generators ---------------------------------------------------------- */

/* The key of dropout SITE in the current forward pass. */
static uint64_t
aiserve_site_key(const aiserve_train_t *t, uint64_t site)
{
    return aiserve_mix64(aiserve_mix64(aiserve_mix64(t->seed) ^ t->pass)
                         ^ site);
}


static inline uint32_t
aiserve_threshold(float p)
{
    return (uint32_t) ((double) p * 16777216.0);
}


/* One block of aiserve_dropout(). */
typedef struct {
    float     *x;
    uint64_t   key, base;
    uint32_t   threshold;
    float      scale;
} aiserve_drop_job_t;


static void
aiserve_dropout_range(void *arg, size_t from, size_t to)
{
    const aiserve_drop_job_t  *j = arg;

    aiserve_dropout_mask(j->x + from, to - from, j->key, j->base + from,
                         j->threshold, j->scale);
}


/*
 * X[i] = keep ? X[i] / (1 - p) : 0 for N elements (torch.nn.Dropout in
 * training), element i of the site's stream being BASE + i.  Used for the
 * forward pass and, on gradients, for the backward pass; split over the
 * team (each element's mask is its own, so the split changes nothing).
 */
static void
aiserve_dropout(aiserve_train_t *t, uint64_t site, float p, float *x,
    size_t n, uint64_t base)
{
    aiserve_drop_job_t  j;

    if (!t->dropout_on || p <= 0.f) {
        return;
    }
    j.x = x;
    j.key = aiserve_site_key(t, site);
    j.base = base;
    j.threshold = aiserve_threshold(p);
    j.scale = 1.f / (1.f - p);
    aiserve_par(t, aiserve_dropout_range, &j, n, 1);
}


/* Standard normal numbers from a splitmix64 stream (Box-Muller). */
static void
aiserve_normal_fill(uint64_t *state, float *x, size_t n, float std)
{
    double  u1, u2, r;
    size_t  i;

    for (i = 0; i < n; i += 2) {
        *state += 0x9e3779b97f4a7c15ull;
        u1 = ((aiserve_mix64(*state) >> 11) + 1.0) / 9007199254740993.0;
        *state += 0x9e3779b97f4a7c15ull;
        u2 = (aiserve_mix64(*state) >> 11) / 9007199254740992.0;
        r = sqrt(-2.0 * log(u1));
        x[i] = (float) (std * r * cos(2.0 * M_PI * u2));
        if (i + 1 < n) {
            x[i + 1] = (float) (std * r * sin(2.0 * M_PI * u2));
        }
    }
}


/* Uniform numbers in [-bound, bound) from a splitmix64 stream. */
static void
aiserve_uniform_fill(uint64_t *state, float *x, size_t n, float bound)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        *state += 0x9e3779b97f4a7c15ull;
        x[i] = (float) (bound * (2.0 * ((aiserve_mix64(*state) >> 11)
                                        / 9007199254740992.0) - 1.0));
    }
}


/* --- loading ------------------------------------------------------------- */

static size_t
aiserve_add_tensor(aiserve_train_t *t, const char *name, size_t d0,
    size_t d1, int decay)
{
    aiserve_train_tensor_t  *x = &t->tensors[t->n_tensors++];

    snprintf(x->name, sizeof(x->name), "%s", name);
    x->ndim = d1 ? 2 : 1;
    x->shape[0] = d0;
    x->shape[1] = d1;
    x->n = d1 ? d0 * d1 : d0;
    x->offset = t->n_params;
    x->decay = decay;
    t->n_params += x->n;
    return x->offset;
}


/* Lays out every tensor of the architecture in the flat arrays, named as
 * the task model names them. */
static int
aiserve_layout(aiserve_train_t *t)
{
    const aiserve_model_info_t  *in = &t->info;
    size_t                       H = in->hidden_size, I = in->intermediate_size;
    size_t                       l, k, off;
    char                         p[96];
    static const char           *qkv[3] = { "query", "key", "value" };

    t->tensors = calloc(24 * in->num_hidden_layers + 16, sizeof(*t->tensors));
    t->layers = calloc(in->num_hidden_layers, sizeof(*t->layers));
    if (t->tensors == NULL || t->layers == NULL) {
        return -1;
    }
    t->word = aiserve_add_tensor(t, "bert.embeddings.word_embeddings.weight",
                                 in->vocab_size, H, 1);
    t->pos = aiserve_add_tensor(t,
                                "bert.embeddings.position_embeddings.weight",
                                in->max_position_embeddings, H, 1);
    t->type = aiserve_add_tensor(t,
                                 "bert.embeddings.token_type_embeddings.weight",
                                 in->type_vocab_size, H, 1);
    t->emb_g = aiserve_add_tensor(t, "bert.embeddings.LayerNorm.weight", H, 0,
                                  0);
    t->emb_b = aiserve_add_tensor(t, "bert.embeddings.LayerNorm.bias", H, 0,
                                  0);

#define LT(field, suffix, d0, d1, decay) \
    snprintf(p, sizeof(p), "bert.encoder.layer.%zu.%s", l, suffix); \
    L->field = aiserve_add_tensor(t, p, d0, d1, decay)

    for (l = 0; l < in->num_hidden_layers; l++) {
        aiserve_tl_t  *L = &t->layers[l];
        char           s[40];

        for (k = 0; k < 3; k++) {
            snprintf(s, sizeof(s), "attention.self.%s.weight", qkv[k]);
            snprintf(p, sizeof(p), "bert.encoder.layer.%zu.%s", l, s);
            off = aiserve_add_tensor(t, p, H, H, 1);
            L->qkv_w = k == 0 ? off : L->qkv_w;
        }
        for (k = 0; k < 3; k++) {
            snprintf(s, sizeof(s), "attention.self.%s.bias", qkv[k]);
            snprintf(p, sizeof(p), "bert.encoder.layer.%zu.%s", l, s);
            off = aiserve_add_tensor(t, p, H, 0, 0);
            L->qkv_b = k == 0 ? off : L->qkv_b;
        }
        LT(ao_w, "attention.output.dense.weight", H, H, 1);
        LT(ao_b, "attention.output.dense.bias", H, 0, 0);
        LT(ao_g, "attention.output.LayerNorm.weight", H, 0, 0);
        LT(ao_beta, "attention.output.LayerNorm.bias", H, 0, 0);
        LT(i_w, "intermediate.dense.weight", I, H, 1);
        LT(i_b, "intermediate.dense.bias", I, 0, 0);
        LT(o_w, "output.dense.weight", H, I, 1);
        LT(o_b, "output.dense.bias", H, 0, 0);
        LT(o_g, "output.LayerNorm.weight", H, 0, 0);
        LT(o_beta, "output.LayerNorm.bias", H, 0, 0);
    }
#undef LT

    if (in->arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION) {
        t->has_pooler = 1;
        t->pool_w = aiserve_add_tensor(t, "bert.pooler.dense.weight", H, H, 1);
        t->pool_b = aiserve_add_tensor(t, "bert.pooler.dense.bias", H, 0, 0);
    }
    t->cls_w = aiserve_add_tensor(t, "classifier.weight", in->num_labels, H,
                                  1);
    t->cls_b = aiserve_add_tensor(t, "classifier.bias", in->num_labels, 0, 0);

    /* peft's LoRA on the targeted projections: lora_A [r, H], lora_B
     * [H, r] (named as peft saves an adapter, without its
     * "base_model.model." prefix) */
    for (l = 0; l < in->num_hidden_layers && t->lora_r > 0; l++) {
        for (k = 0; k < 3; k++) {
            if (!(t->lora_targets & (1u << k))) {
                continue;
            }
            snprintf(p, sizeof(p), "bert.encoder.layer.%zu.attention.self."
                     "%s.lora_A.weight", l, qkv[k]);
            t->layers[l].lora_a[k] = aiserve_add_tensor(t, p, t->lora_r, H,
                                                        1);
            snprintf(p, sizeof(p), "bert.encoder.layer.%zu.attention.self."
                     "%s.lora_B.weight", l, qkv[k]);
            t->layers[l].lora_b[k] = aiserve_add_tensor(t, p, H, t->lora_r,
                                                        1);
        }
    }
    return 0;
}


/* The training-only fields of config.json: hidden_act, dropout
 * probabilities, initializer_range (transformers' BertConfig defaults). */
static int
aiserve_train_config(aiserve_train_t *t, const char *dir, char *err,
    size_t err_len)
{
    json_t        *cfg, *v;
    json_error_t   jerr;
    char           path[4096];
    const char    *act = "gelu";

    snprintf(path, sizeof(path), "%s/config.json", dir);
    cfg = json_load_file(path, 0, &jerr);
    if (cfg == NULL) {
        aiserve_err(err, err_len, "%s:%d: %s", path, jerr.line, jerr.text);
        return -1;
    }
    t->hidden_dropout = 0.1f;
    t->attn_dropout = 0.1f;
    t->initializer_range = 0.02f;
    v = json_object_get(cfg, "hidden_act");
    if (json_is_string(v)) {
        act = json_string_value(v);
    }
    if (aiserve_act_parse(act, &t->act) != 0) {
        aiserve_err(err, err_len, "%s: hidden_act \"%s\" is not supported",
                    path, act);
        json_decref(cfg);
        return -1;
    }

#define PROB(key, dst) \
    v = json_object_get(cfg, key); \
    if (json_is_number(v)) { \
        if (json_number_value(v) < 0 || json_number_value(v) >= 1) { \
            aiserve_err(err, err_len, "%s: %s must be in [0, 1)", path, key); \
            json_decref(cfg); \
            return -1; \
        } \
        dst = (float) json_number_value(v); \
    }

    PROB("hidden_dropout_prob", t->hidden_dropout);
    PROB("attention_probs_dropout_prob", t->attn_dropout);
    t->cls_dropout = t->hidden_dropout;
    PROB("classifier_dropout", t->cls_dropout);
#undef PROB

    v = json_object_get(cfg, "initializer_range");
    if (json_is_number(v)) {
        t->initializer_range = (float) json_number_value(v);
    }
    json_decref(cfg);
    return 0;
}


/* Copies checkpoint tensor NAME (F32/F16/BF16, shape checked) into the
 * tensor X; 1 when the checkpoint lacks it, -1 on a bad one. */
static int
aiserve_copy_tensor(aiserve_train_t *t, const aiserve_st_file_t *st,
    const aiserve_train_tensor_t *x, const char *name, char *err,
    size_t err_len)
{
    const aiserve_st_tensor_t  *s;

    s = aiserve_model_find_tensor(st, name);
    if (s == NULL) {
        return 1;
    }
    if (s->ndim != x->ndim || s->shape[0] != x->shape[0]
        || (x->ndim == 2 && s->shape[1] != x->shape[1]))
    {
        aiserve_err(err, err_len, "%s: tensor \"%s\" has the wrong shape "
                    "(config.json implies [%zu%s%zu])", st->path, s->name,
                    x->shape[0], x->ndim == 2 ? ", " : "",
                    x->ndim == 2 ? x->shape[1] : (size_t) 0);
        return -1;
    }
    if (aiserve_st_to_f32(s->dtype, s->data, t->params + x->offset, x->n)
        != 0)
    {
        aiserve_err(err, err_len, "%s: tensor \"%s\" has dtype %s (F32, F16 "
                    "or BF16 expected)", st->path, s->name,
                    aiserve_st_dtype_name(s->dtype));
        return -1;
    }
    return 0;
}


static int
aiserve_load_params(aiserve_train_t *t, const char *dir, int new_head,
    char *err, size_t err_len)
{
    aiserve_st_file_t  *st;
    char                path[4096];
    const char         *name;
    uint64_t            rng = t->seed;
    size_t              i;
    int                 rc = 0, head;

    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    st = aiserve_st_open(path, err, err_len);
    if (st == NULL) {
        return -1;
    }
    for (i = 0; i < t->n_tensors && rc == 0; i++) {
        const aiserve_train_tensor_t  *x = &t->tensors[i];

        name = x->name;
        head = strncmp(name, "bert.", 5) != 0
               || strncmp(name, "bert.pooler.", 12) == 0;
        if (strncmp(name, "bert.", 5) == 0) {
            name += 5;       /* found with or without the prefix */
        }
        if (strstr(x->name, ".lora_") != NULL) {
            /* peft's LoraLayer.reset_lora_parameters: A as nn.Linear's
             * kaiming_uniform_(a = sqrt 5), U(-1/sqrt(in), 1/sqrt(in));
             * B zero, so the adapted model starts as the base */
            aiserve_uniform_fill(&rng, t->params + x->offset, x->n,
                                 strstr(x->name, ".lora_A.") != NULL
                                 ? 1.f / sqrtf((float) x->shape[1]) : 0.f);
            continue;
        }
        rc = new_head && strncmp(x->name, "classifier.", 11) == 0
             ? 1 : aiserve_copy_tensor(t, st, x, name, err, err_len);
        if (rc == 1 && head && (new_head
                                || strncmp(x->name, "bert.pooler.", 12) == 0))
        {
            /* BertPreTrainedModel._init_weights for nn.Linear */
            if (x->ndim == 2) {
                aiserve_normal_fill(&rng, t->params + x->offset, x->n,
                                    t->initializer_range);
            } else {
                memset(t->params + x->offset, 0, x->n * sizeof(float));
            }
            rc = 0;
        } else if (rc == 1) {
            aiserve_err(err, err_len, "%s: tensor \"%s\" is missing (also "
                        "looked for bert.%s and LayerNorm gamma/beta names)",
                        st->path, name, name);
            rc = -1;
        }
    }
    aiserve_st_close(st);
    return rc;
}


aiserve_train_t *
aiserve_train_load(const char *model_dir, const aiserve_train_opts_t *opts,
    char *err, size_t err_len)
{
    aiserve_train_t  *t;
    int               new_head = 0;
    size_t            i;

    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return NULL;
    }
    t->seed = opts->seed;
    t->mode = opts->mode;
    t->threads = opts->threads < 1 ? 1
                 : (opts->threads > AISERVE_TRAIN_MAX_THREADS
                    ? AISERVE_TRAIN_MAX_THREADS : opts->threads);
    t->team = aiserve_team_create(t->threads);
    if (t->team == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto fail;
    }
    if (opts->dtype != AISERVE_DTYPE_FP32) {
        const char  *isa;

        if (aiserve_gemm_bf16_native(&isa)) {
            t->dtype = AISERVE_DTYPE_BF16;
        } else if (opts->dtype == AISERVE_DTYPE_BF16) {
            aiserve_err(err, err_len, "dtype bf16: the CPU has %s; bf16 "
                        "needs AVX512-BF16 or AMX (use fp32 or auto)", isa);
            goto fail;
        }
    }
    if (opts->mode == AISERVE_TRAIN_LORA) {
        if (opts->lora_r == 0 || opts->lora_targets == 0
            || opts->lora_targets > 7 || opts->lora_dropout < 0.f
            || opts->lora_dropout >= 1.f)
        {
            aiserve_err(err, err_len, "lora: r must be >= 1, the targets "
                        "among query, key and value, and lora_dropout in "
                        "[0, 1)");
            goto fail;
        }
        t->lora_r = opts->lora_r;
        t->lora_targets = opts->lora_targets;
        t->lora_dropout = opts->lora_dropout;
        t->lora_scale = opts->lora_alpha / (float) opts->lora_r;
    }
    if (aiserve_model_read_config(model_dir, &t->info, err, err_len) != 0
        || aiserve_train_config(t, model_dir, err, err_len) != 0)
    {
        goto fail;
    }
    t->head_dim = t->info.hidden_size / t->info.num_attention_heads;

    if (opts->arch == AISERVE_ARCH_BERT_MODEL
        && t->info.arch == AISERVE_ARCH_BERT_MODEL)
    {
        aiserve_err(err, err_len, "%s: a BertModel checkpoint has no head: "
                    "name the task to train", model_dir);
        goto fail;
    }
    if (opts->arch != AISERVE_ARCH_BERT_MODEL
        && t->info.arch != AISERVE_ARCH_BERT_MODEL
        && opts->arch != t->info.arch)
    {
        aiserve_err(err, err_len, "%s: the checkpoint's head is for another "
                    "task than the one asked for", model_dir);
        goto fail;
    }
    if (t->info.arch == AISERVE_ARCH_BERT_MODEL) {
        if (opts->num_labels == 0) {
            aiserve_err(err, err_len, "%s: a new head needs num_labels >= 1",
                        model_dir);
            goto fail;
        }
        new_head = 1;
        t->info.arch = opts->arch;
        t->info.num_labels = opts->num_labels;
        t->info.problem_type = opts->arch
                               == AISERVE_ARCH_TOKEN_CLASSIFICATION
                               ? AISERVE_PROBLEM_SINGLE_LABEL
                               : opts->problem_type;
        t->info.id2label = calloc(opts->num_labels, sizeof(char *));
        if (t->info.id2label == NULL) {
            aiserve_err(err, err_len, "out of memory");
            goto fail;
        }
        for (i = 0; i < opts->num_labels; i++) {
            t->info.id2label[i] = malloc(32);
            if (t->info.id2label[i] == NULL) {
                aiserve_err(err, err_len, "out of memory");
                goto fail;
            }
            snprintf(t->info.id2label[i], 32, "LABEL_%zu", i);
        }
    }
    if (t->info.arch == AISERVE_ARCH_TOKEN_CLASSIFICATION) {
        t->info.problem_type = AISERVE_PROBLEM_SINGLE_LABEL;
    }

    if (aiserve_layout(t) != 0) {
        aiserve_err(err, err_len, "out of memory");
        goto fail;
    }
    t->params = calloc(t->n_params, sizeof(float));
    t->grads = calloc(t->n_params, sizeof(float));
    if (t->params == NULL || t->grads == NULL) {
        aiserve_err(err, err_len, "out of memory for %zu parameters",
                    t->n_params);
        goto fail;
    }
    if (aiserve_load_params(t, model_dir, new_head, err, err_len) != 0) {
        goto fail;
    }
    for (i = 0; i < t->n_tensors; i++) {
        aiserve_train_tensor_t  *x = &t->tensors[i];
        int                      head = strncmp(x->name, "bert.", 5) != 0;

        /* head: the encoder (not the pooler); lora: all but the adapters
         * and the classifier (peft's modules_to_save for SEQ_CLS and
         * TOKEN_CLS) */
        if (opts->mode == AISERVE_TRAIN_HEAD) {
            x->frozen = !head && strncmp(x->name, "bert.pooler.", 12) != 0;
        } else if (opts->mode == AISERVE_TRAIN_LORA) {
            x->frozen = !head && strstr(x->name, ".lora_") == NULL;
        }
    }
    return t;

fail:
    aiserve_train_free(t);
    return NULL;
}


/* Frees the copy of the batch (aiserve_take_batch()). */
static void
aiserve_batch_arrays_free(aiserve_train_t *t)
{
    free(t->ids);
    free(t->types);
    free(t->labels);
    free(t->values);
    free(t->lens);
    free(t->start);
    free(t->posn);
    free(t->poff);
}


void
aiserve_train_free(aiserve_train_t *t)
{
    if (t == NULL) {
        return;
    }
    aiserve_model_info_clear(&t->info);
    free(t->tensors);
    free(t->layers);
    free(t->params);
    free(t->grads);
    free(t->adam_m);
    free(t->adam_v);
    free(t->chunks);
    free(t->chunk_ss);
    aiserve_batch_arrays_free(t);
    free(t->arena);
    aiserve_team_free(t->team);
    free(t->acts);
    free(t);
}


const aiserve_model_info_t *
aiserve_train_info(const aiserve_train_t *t)
{
    return &t->info;
}


size_t
aiserve_train_n_tensors(const aiserve_train_t *t)
{
    return t->n_tensors;
}


const aiserve_train_tensor_t *
aiserve_train_tensor(const aiserve_train_t *t, size_t i)
{
    return i < t->n_tensors ? &t->tensors[i] : NULL;
}


const aiserve_train_tensor_t *
aiserve_train_find(const aiserve_train_t *t, const char *name)
{
    size_t  i;

    for (i = 0; i < t->n_tensors; i++) {
        if (strcmp(t->tensors[i].name, name) == 0) {
            return &t->tensors[i];
        }
    }
    return NULL;
}


size_t
aiserve_train_n_params(const aiserve_train_t *t)
{
    return t->n_params;
}


float *
aiserve_train_params(aiserve_train_t *t)
{
    return t->params;
}


float *
aiserve_train_grads(aiserve_train_t *t)
{
    return t->grads;
}


void
aiserve_train_set_dropout(aiserve_train_t *t, int on, uint64_t seed)
{
    t->dropout_on = on;
    t->seed = seed;
    t->pass = 0;
}


void
aiserve_train_zero_grad(aiserve_train_t *t)
{
    memset(t->grads, 0, t->n_params * sizeof(float));
}


const float *
aiserve_train_logits(const aiserve_train_t *t)
{
    return t->logits;
}


/* --- batch and buffers --------------------------------------------------- */

/* Copies the batch in and checks it. */
static int
aiserve_take_batch(aiserve_train_t *t, const aiserve_train_batch_t *b,
    char *err, size_t err_len)
{
    const aiserve_model_info_t  *in = &t->info;
    size_t                       s, i, T = 0, tok = 0, C = in->num_labels;
    int                          token = in->arch
                                         == AISERVE_ARCH_TOKEN_CLASSIFICATION;
    int32_t                      y;

    if (b->n_seqs == 0) {
        aiserve_err(err, err_len, "empty batch");
        return -1;
    }
    t->max_len = 0;
    for (s = 0; s < b->n_seqs; s++) {
        if (b->seq_lens[s] == 0
            || b->seq_lens[s] > in->max_position_embeddings)
        {
            aiserve_err(err, err_len, "sequence %zu has %zu tokens (1 to "
                        "max_position_embeddings %zu)", s, b->seq_lens[s],
                        in->max_position_embeddings);
            return -1;
        }
        T += b->seq_lens[s];
        if (b->seq_lens[s] > t->max_len) {
            t->max_len = b->seq_lens[s];
        }
    }
    if (T > t->cap_T || b->n_seqs > t->cap_n) {
        aiserve_batch_arrays_free(t);
        t->cap_T = T > t->cap_T ? T : t->cap_T;
        t->cap_n = b->n_seqs > t->cap_n ? b->n_seqs : t->cap_n;
        t->ids = malloc(t->cap_T * sizeof(int32_t));
        t->types = malloc(t->cap_T * sizeof(int32_t));
        t->labels = malloc((t->cap_T > t->cap_n ? t->cap_T : t->cap_n)
                           * sizeof(int32_t));
        t->values = malloc(t->cap_n * (C ? C : 1) * sizeof(float));
        t->lens = malloc(t->cap_n * sizeof(size_t));
        t->start = malloc(t->cap_n * sizeof(size_t));
        t->posn = malloc(t->cap_T * sizeof(size_t));
        t->poff = malloc(t->cap_n * sizeof(size_t));
        if (t->poff == NULL || t->ids == NULL || t->types == NULL || t->labels == NULL
            || t->values == NULL || t->lens == NULL || t->start == NULL
            || t->posn == NULL)
        {
            t->cap_T = t->cap_n = 0;
            aiserve_err(err, err_len, "out of memory for a batch of %zu "
                        "tokens", T);
            return -1;
        }
    }
    t->T = T;
    t->n_seqs = b->n_seqs;
    t->rows = token ? T : b->n_seqs;
    for (s = 0; s < b->n_seqs; s++) {
        t->lens[s] = b->seq_lens[s];
        t->start[s] = tok;
        t->poff[s] = s ? t->poff[s - 1] + in->num_attention_heads
                                          * t->lens[s - 1] * t->lens[s - 1]
                       : 0;
        for (i = 0; i < b->seq_lens[s]; i++, tok++) {
            t->posn[tok] = i;
            if (b->input_ids == NULL) {
                continue;          /* head mode: features instead */
            }
            t->ids[tok] = b->input_ids[tok];
            t->types[tok] = b->token_type_ids ? b->token_type_ids[tok] : 0;
            if (t->ids[tok] < 0 || (size_t) t->ids[tok] >= in->vocab_size) {
                aiserve_err(err, err_len, "input_ids[%zu] = %d is out of "
                            "the vocabulary (vocab_size %zu)", tok,
                            t->ids[tok], in->vocab_size);
                return -1;
            }
            if (t->types[tok] < 0
                || (size_t) t->types[tok] >= in->type_vocab_size)
            {
                aiserve_err(err, err_len, "token_type_ids[%zu] = %d is out "
                            "of range (type_vocab_size %zu)", tok,
                            t->types[tok], in->type_vocab_size);
                return -1;
            }
        }
    }

    t->has_labels = 0;
    if (token || in->problem_type == AISERVE_PROBLEM_SINGLE_LABEL) {
        if (b->label_ids != NULL) {
            t->has_labels = 1;
            for (i = 0; i < t->rows; i++) {
                y = b->label_ids[i];
                if (y != AISERVE_TRAIN_IGNORE && (y < 0 || (size_t) y >= C)) {
                    aiserve_err(err, err_len, "label %zu = %d is out of "
                                "range (num_labels %zu, or -100)", i, y, C);
                    return -1;
                }
                t->labels[i] = y;
            }
        }
    } else if (b->label_values != NULL) {
        t->has_labels = 1;
        memcpy(t->values, b->label_values, t->rows * C * sizeof(float));
    }
    return 0;
}


/* Sizes the arena for the batch taken and carves it: everything, or
 * (HEAD_ONLY) the head's buffers alone. */
static int
aiserve_carve(aiserve_train_t *t, int head_only, char *err, size_t err_len)
{
    const aiserve_model_info_t  *in = &t->info;
    size_t                       T = t->T, H = in->hidden_size;
    size_t                       I = in->intermediate_size, C = in->num_labels;
    size_t                       NL = in->num_hidden_layers, n = t->n_seqs;
    size_t                       P = 0, s, l, need, per_layer;
    float                       *f;

    for (s = 0; s < n; s++) {
        P += in->num_attention_heads * t->lens[s] * t->lens[s];
    }
    per_layer = T * (8 * H + 2 * I + 4 + 3 * t->lora_r) + P;
    need = 2 * n * H + t->rows * H + 2 * t->rows * C + t->rows * H + n * H;
    if (!head_only) {
        need += T * (2 * H + 2) + NL * per_layer + T * (7 * H + I)
                + 2 * t->max_len * t->max_len * (size_t) t->threads
                + T * t->lora_r;
    }
    if (need > t->arena_cap) {
        free(t->arena);
        t->arena = malloc(need * sizeof(float));
        if (t->arena == NULL) {
            t->arena_cap = 0;
            aiserve_err(err, err_len, "out of memory for the activations of "
                        "%zu tokens (%zu bytes)", T, need * sizeof(float));
            return -1;
        }
        t->arena_cap = need;
    }
    if (t->acts == NULL) {
        t->acts = calloc(NL, sizeof(*t->acts));
        if (t->acts == NULL) {
            aiserve_err(err, err_len, "out of memory");
            return -1;
        }
    }

#define CARVE(dst, count) (dst) = f; f += (count)

    f = t->arena;
    CARVE(t->first, n * H);
    CARVE(t->pooled, n * H);
    CARVE(t->cls_in, t->rows * H);
    CARVE(t->logits, t->rows * C);
    CARVE(t->dlogits, t->rows * C);
    CARVE(t->dcls, t->rows * H);
    CARVE(t->dpool, n * H);
    if (head_only) {
        return 0;
    }
    CARVE(t->emb_in, T * H);
    CARVE(t->emb_st, 2 * T);
    CARVE(t->emb_out, T * H);
    for (l = 0; l < NL; l++) {
        aiserve_tact_t  *a = &t->acts[l];

        CARVE(a->qkv, 3 * T * H);
        CARVE(a->probs, P);
        CARVE(a->ctx, T * H);
        CARVE(a->h1, T * H);
        CARVE(a->st1, 2 * T);
        CARVE(a->a1, T * H);
        CARVE(a->pre, T * I);
        CARVE(a->gel, T * I);
        CARVE(a->h2, T * H);
        CARVE(a->st2, 2 * T);
        CARVE(a->out, T * H);
        for (s = 0; s < 3; s++) {
            CARVE(a->lora_u[s], T * t->lora_r);
        }
    }
    CARVE(t->dx, T * H);
    CARVE(t->b1, T * H);
    CARVE(t->b2, T * H);
    CARVE(t->dctx, T * H);
    CARVE(t->dqkv, 3 * T * H);
    CARVE(t->di, T * I);
    CARVE(t->att, 2 * t->max_len * t->max_len * (size_t) t->threads);
    CARVE(t->du, T * t->lora_r);
#undef CARVE
    return 0;
}


/* --- element-wise parts -------------------------------------------------- */

/*
 * aiserve_gemm()'s product in the pass's dtype: fp32, or bf16 operands
 * with fp32 accumulation (aiserve_gemm_bf16(), torch.autocast's Linear
 * and matmul); a bf16 product that fails marks the pass, which then
 * returns an error.
 */
static void
aiserve_mm(aiserve_train_t *t, int ta, int tb, size_t m, size_t n, size_t k,
    float alpha, const float *a, size_t lda, const float *b, size_t ldb,
    float beta, float *c, size_t ldc)
{
    if (t->dtype != AISERVE_DTYPE_BF16) {
        aiserve_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    if (aiserve_gemm_bf16(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c,
                          ldc) != 0)
    {
        __atomic_store_n(&t->gemm_failed, 1, __ATOMIC_RELAXED);
    }
}


/* One product split by the rows of C over the team. */
typedef struct {
    aiserve_train_t  *t;
    int               ta, tb;
    size_t            m, n, k, chunk;
    float             alpha, beta;
    const float      *a, *b;
    size_t            lda, ldb, ldc;
    float            *c;
} aiserve_pgemm_t;


static void
aiserve_pgemm_item(void *arg, size_t item, int thread)
{
    const aiserve_pgemm_t  *g = arg;
    size_t                  i0 = item * g->chunk;
    size_t                  rows = g->m - i0 < g->chunk ? g->m - i0 : g->chunk;

    /* row i of op(A) is row i of A, or column i of A transposed */
    aiserve_mm(g->t, g->ta, g->tb, rows, g->n, g->k, g->alpha,
               g->ta ? g->a + i0 : g->a + i0 * g->lda, g->lda, g->b,
               g->ldb, g->beta, g->c + i0 * g->ldc, g->ldc);
}


/*
 * aiserve_gemm() with the rows of C split into one block per thread of
 * the team (multiples of 16 rows): each block is the same product on
 * any run with that thread count, so results depend on the thread count
 * only.  Small products run whole in the caller.
 */
static void
aiserve_pgemm(aiserve_train_t *t, int ta, int tb, size_t m, size_t n,
    size_t k, float alpha, const float *a, size_t lda, const float *b,
    size_t ldb, float beta, float *c, size_t ldc)
{
    aiserve_pgemm_t  g = { t, ta, tb, m, n, k, m, alpha, beta, a, b, lda,
                           ldb, ldc, c };

    if (t->threads > 1 && m >= 32 && (double) m * n * k >= 1e6) {
        g.chunk = (m + (size_t) t->threads - 1) / (size_t) t->threads;
        g.chunk = (g.chunk + 15) / 16 * 16;
    }
    aiserve_team_run(t->team, aiserve_pgemm_item, &g,
                     (m + g.chunk - 1) / g.chunk);
}


/* y = x W^T + b for ROWS rows: a Linear layer (W [n, k]). */
static void
aiserve_linear_fwd(aiserve_train_t *t, const float *x, size_t rows,
    const float *w, const float *b, size_t n, size_t k, float *y)
{
    aiserve_pgemm(t, 0, 1, rows, n, k, 1.f, x, k, w, k, 0.f, y, n);
    aiserve_bias_add(y, b, rows, n);
}


/* Column sums of ROWS rows (LD floats apart) added to DB. */
typedef struct {
    const float  *dy;
    float        *db;
    size_t        rows, ld;
} aiserve_colsum_job_t;


static void
aiserve_colsum_range(void *arg, size_t from, size_t to)
{
    const aiserve_colsum_job_t  *j = arg;
    size_t                       r, c;

    for (r = 0; r < j->rows; r++) {
        for (c = from; c < to; c++) {
            j->db[c] += j->dy[r * j->ld + c];
        }
    }
}


/* DB[c] += sum over rows of DY[r][c] for N columns, LD floats a row,
 * columns split over the team (each summed in row order, whatever the
 * split). */
static void
aiserve_colsum(aiserve_train_t *t, const float *dy, size_t rows, size_t ld,
    float *db, size_t n)
{
    aiserve_colsum_job_t  j = { dy, db, rows, ld };

    aiserve_par(t, aiserve_colsum_range, &j, n, rows);
}


/*
 * Backward of y = x W^T + b: dW += dy^T x (DW not NULL: NULL for a
 * frozen weight), db += column sums of dy (DB not NULL), and dx = dy W +
 * BETA dx (DX not NULL).
 */
static void
aiserve_linear_bwd(aiserve_train_t *t, const float *dy, const float *x,
    size_t rows, const float *w, float *dw, float *db, size_t n, size_t k,
    float *dx, float beta)
{
    if (dw != NULL) {
        aiserve_pgemm(t, 1, 0, n, k, rows, 1.f, dy, n, x, k, 1.f, dw, k);
    }
    if (db != NULL) {
        aiserve_colsum(t, dy, rows, n, db, n);
    }
    if (dx != NULL) {
        aiserve_pgemm(t, 0, 0, rows, k, n, 1.f, dy, n, w, k, beta, dx, k);
    }
}


/* One LayerNorm, forward or backward, split by rows or columns. */
typedef struct {
    const float  *x, *dy, *g, *b;
    float        *y, *st, *dx, *dgamma, *dbeta;
    size_t        rows, H;
    float         eps;
} aiserve_ln_job_t;


static void
aiserve_ln_fwd_rows(void *arg, size_t from, size_t to)
{
    const aiserve_ln_job_t  *j = arg;
    size_t                   r, c, H = j->H;
    double                   mean, var, d;
    float                    rstd;

    for (r = from; r < to; r++) {
        const float  *xr = j->x + r * H;
        float        *yr = j->y + r * H;

        mean = 0;
        for (c = 0; c < H; c++) {
            mean += xr[c];
        }
        mean /= (double) H;
        var = 0;
        for (c = 0; c < H; c++) {
            d = xr[c] - mean;
            var += d * d;
        }
        var /= (double) H;
        rstd = (float) (1.0 / sqrt(var + j->eps));
        for (c = 0; c < H; c++) {
            yr[c] = ((float) (xr[c] - mean)) * rstd * j->g[c] + j->b[c];
        }
        j->st[2 * r] = (float) mean;
        j->st[2 * r + 1] = rstd;
    }
}


/*
 * Y = LayerNorm(X) row by row (torch.nn.LayerNorm: biased variance, eps
 * inside the square root), keeping each row's mean and 1 / std in ST;
 * rows split over the team.
 */
static void
aiserve_ln_fwd(aiserve_train_t *t, const float *x, float *y, float *st,
    const float *g, const float *b, size_t rows, size_t H, float eps)
{
    aiserve_ln_job_t  j = { x, NULL, g, b, y, st, NULL, NULL, NULL, rows, H,
                            eps };

    aiserve_par(t, aiserve_ln_fwd_rows, &j, rows, H);
}


/* dx of rows [from, to): with xhat = (x - mean) rstd and g = dy gamma,
 * dx = rstd (g - mean(g) - xhat mean(g xhat)). */
static void
aiserve_ln_bwd_rows(void *arg, size_t from, size_t to)
{
    const aiserve_ln_job_t  *j = arg;
    size_t                   r, c, H = j->H;
    double                   s1, s2;
    float                    mean, rstd, xh, gx, m1, m2;

    for (r = from; r < to; r++) {
        const float  *dyr = j->dy + r * H, *xr = j->x + r * H;
        float        *dxr = j->dx + r * H;

        mean = j->st[2 * r];
        rstd = j->st[2 * r + 1];
        s1 = s2 = 0;
        for (c = 0; c < H; c++) {
            xh = (xr[c] - mean) * rstd;
            gx = dyr[c] * j->g[c];
            s1 += gx;
            s2 += (double) gx * xh;
        }
        m1 = (float) (s1 / (double) H);
        m2 = (float) (s2 / (double) H);
        for (c = 0; c < H; c++) {
            xh = (xr[c] - mean) * rstd;
            dxr[c] = rstd * (dyr[c] * j->g[c] - m1 - xh * m2);
        }
    }
}


/* dgamma += dy xhat, dbeta += dy over every row, for columns [from, to):
 * each column summed in row order, whatever the split. */
static void
aiserve_ln_bwd_cols(void *arg, size_t from, size_t to)
{
    const aiserve_ln_job_t  *j = arg;
    size_t                   r, c, H = j->H;
    float                    mean, rstd;

    for (r = 0; r < j->rows; r++) {
        const float  *dyr = j->dy + r * H, *xr = j->x + r * H;

        mean = j->st[2 * r];
        rstd = j->st[2 * r + 1];
        for (c = from; c < to; c++) {
            j->dgamma[c] += dyr[c] * ((xr[c] - mean) * rstd);
            j->dbeta[c] += dyr[c];
        }
    }
}


/*
 * Backward of LayerNorm: dx by rows, then dgamma and dbeta (unless
 * DGAMMA is NULL: frozen) by columns, each split over the team.  DX must
 * not be DY.
 */
static void
aiserve_ln_bwd(aiserve_train_t *t, const float *dy, const float *x,
    const float *st, const float *gamma, float *dgamma, float *dbeta,
    float *dx, size_t rows, size_t H)
{
    aiserve_ln_job_t  j = { x, dy, gamma, NULL, NULL, (float *) st, dx,
                            dgamma, dbeta, rows, H, 0.f };

    aiserve_par(t, aiserve_ln_bwd_rows, &j, rows, H);
    if (dgamma != NULL) {
        aiserve_par(t, aiserve_ln_bwd_cols, &j, H, rows);
    }
}


/* y = act(x) for N elements, transformers' ACT2FN forms in fp32: GELU
 * through aiserve_gelu_fwd() (vectorised, erf within 1.3 ulp), the others
 * with libm's tanhf / expf. */
static void
aiserve_act_fwd(aiserve_act_e act, const float *x, float *y, size_t n)
{
    size_t  i;
    float   v, u;

    if (act == AISERVE_ACT_GELU_ERF) {
        aiserve_gelu_fwd(x, y, n);
        return;
    }
    for (i = 0; i < n; i++) {
        v = x[i];
        switch (act) {
        case AISERVE_ACT_GELU_TANH:
            u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            y[i] = 0.5f * v * (1.f + tanhf(u));
            break;
        case AISERVE_ACT_RELU:
            y[i] = v > 0.f ? v : 0.f;
            break;
        case AISERVE_ACT_SILU:
            y[i] = v / (1.f + expf(-v));
            break;
        default:
            break;
        }
    }
}


/* dx = dy act'(x) for N elements, in place on DY. */
static void
aiserve_act_bwd(aiserve_act_e act, const float *x, float *dy, size_t n)
{
    size_t  i;
    float   v, u, th, s, d = 0.f;

    if (act == AISERVE_ACT_GELU_ERF) {
        aiserve_gelu_bwd(x, dy, n);
        return;
    }
    for (i = 0; i < n; i++) {
        v = x[i];
        switch (act) {
        case AISERVE_ACT_GELU_TANH:
            u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            th = tanhf(u);
            d = 0.5f * (1.f + th)
                + 0.5f * v * (1.f - th * th) * 0.7978845608028654f
                  * (1.f + 3.f * 0.044715f * v * v);
            break;
        case AISERVE_ACT_RELU:
            d = v > 0.f ? 1.f : 0.f;
            break;
        case AISERVE_ACT_SILU:
            s = 1.f / (1.f + expf(-v));
            d = s * (1.f + v * (1.f - s));
            break;
        default:
            break;
        }
        dy[i] *= d;
    }
}


/* An activation or its backward over the team: Y = act(X), or Y *=
 * act'(X). */
typedef struct {
    aiserve_act_e   act;
    const float    *x;
    float          *y;
} aiserve_act_job_t;


static void
aiserve_act_fwd_range(void *arg, size_t from, size_t to)
{
    const aiserve_act_job_t  *j = arg;

    aiserve_act_fwd(j->act, j->x + from, j->y + from, to - from);
}


static void
aiserve_act_bwd_range(void *arg, size_t from, size_t to)
{
    const aiserve_act_job_t  *j = arg;

    aiserve_act_bwd(j->act, j->x + from, j->y + from, to - from);
}


/* Row-wise softmax of ROWS x COLS with max subtraction. */
static void
aiserve_softmax_rows(float *x, size_t rows, size_t cols)
{
    size_t  r, c;
    float   m, *row;
    double  sum;

    for (r = 0; r < rows; r++) {
        row = x + r * cols;
        m = row[0];
        for (c = 1; c < cols; c++) {
            m = row[c] > m ? row[c] : m;
        }
        sum = 0;
        for (c = 0; c < cols; c++) {
            row[c] = expf(row[c] - m);
            sum += row[c];
        }
        for (c = 0; c < cols; c++) {
            row[c] = (float) (row[c] / sum);
        }
    }
}


/* --- forward ------------------------------------------------------------- */

/* Attention of one layer, one item per sequence and head. */
typedef struct {
    aiserve_train_t  *t;
    size_t            l;
} aiserve_att_job_t;


/*
 * Attention of sequence ITEM / A, head ITEM % A: probs = softmax(Q K^T /
 * sqrt(D)), ctx = dropout(probs) V (BertSelfAttention, eager).
 */
static void
aiserve_attention_fwd_item(void *arg, size_t item, int thread)
{
    const aiserve_att_job_t  *j = arg;
    aiserve_train_t          *t = j->t;
    aiserve_tact_t           *a = &t->acts[j->l];
    size_t                    H = t->info.hidden_size, D = t->head_dim;
    size_t                    A = t->info.num_attention_heads;
    size_t                    s = item / A, h = item % A, L = t->lens[s];
    size_t                    off = t->poff[s] + h * L * L;
    float                     scale = 1.f / sqrtf((float) D), *p, *pd;
    const float              *q, *k, *v;

    q = a->qkv + t->start[s] * 3 * H + h * D;
    k = q + H;
    v = q + 2 * H;
    p = a->probs + off;
    aiserve_mm(t, 0, 1, L, L, D, scale, q, 3 * H, k, 3 * H, 0.f, p, L);
    aiserve_softmax_rows(p, L, L);
    pd = p;
    if (t->dropout_on && t->attn_dropout > 0.f) {
        pd = t->att + 2 * t->max_len * t->max_len * (size_t) thread;
        memcpy(pd, p, L * L * sizeof(float));
        aiserve_dropout(t, AISERVE_SITE_LAYER + 8 * j->l, t->attn_dropout,
                        pd, L * L, off);
    }
    aiserve_mm(t, 0, 0, L, D, L, 1.f, pd, L, v, 3 * H, 0.f,
               a->ctx + t->start[s] * H + h * D, H);
}


static void
aiserve_attention_fwd(aiserve_train_t *t, size_t l)
{
    aiserve_att_job_t  j = { t, l };

    aiserve_team_run(t->team, aiserve_attention_fwd_item, &j,
                     t->n_seqs * t->info.num_attention_heads);
}


/* The LoRA input of projection M of layer L: dropout(in) into t->b2 (a
 * backward buffer, free in the forward pass), or IN itself. */
static const float *
aiserve_lora_input(aiserve_train_t *t, size_t l, size_t m, const float *in)
{
    size_t  n = t->T * t->info.hidden_size;

    if (!t->dropout_on || t->lora_dropout <= 0.f) {
        return in;
    }
    memcpy(t->b2, in, n * sizeof(float));
    aiserve_dropout(t, AISERVE_SITE_LAYER + 8 * l + 3 + m, t->lora_dropout,
                    t->b2, n, 0);
    return t->b2;
}


/*
 * peft's lora.Linear on projection M (0 query, 1 key, 2 value) of layer
 * L: y += scaling * dropout(x) A^T B^T, scaling = lora_alpha / r, with
 * u = dropout(x) A^T [T, r] kept for the backward pass.
 */
static void
aiserve_lora_fwd(aiserve_train_t *t, size_t l, size_t m, const float *in)
{
    const aiserve_tl_t  *L = &t->layers[l];
    aiserve_tact_t      *a = &t->acts[l];
    size_t               T = t->T, H = t->info.hidden_size, r = t->lora_r;
    const float         *x = aiserve_lora_input(t, l, m, in);

    aiserve_pgemm(t, 0, 1, T, r, H, 1.f, x, H, t->params + L->lora_a[m], H, 0.f,
                 a->lora_u[m], r);
    aiserve_pgemm(t, 0, 1, T, H, r, t->lora_scale, a->lora_u[m], r,
                 t->params + L->lora_b[m], r, 1.f, a->qkv + m * H, 3 * H);
}


/*
 * Backward of aiserve_lora_fwd() from dy = dqkv's columns of projection
 * M: dB += s dy^T u, du = s dy B, dA += du^T dropout(x), and dx +=
 * dropout(du A).
 */
static void
aiserve_lora_bwd(aiserve_train_t *t, size_t l, size_t m, const float *in)
{
    const aiserve_tl_t  *L = &t->layers[l];
    aiserve_tact_t      *a = &t->acts[l];
    size_t               T = t->T, H = t->info.hidden_size, r = t->lora_r;
    size_t               i;
    const float         *x, *dy = t->dqkv + m * H;
    const float         *A = t->params + L->lora_a[m];
    const float         *B = t->params + L->lora_b[m];

    aiserve_pgemm(t, 1, 0, H, r, T, t->lora_scale, dy, 3 * H, a->lora_u[m], r,
                 1.f, t->grads + L->lora_b[m], r);
    aiserve_pgemm(t, 0, 0, T, r, H, t->lora_scale, dy, 3 * H, B, r, 0.f, t->du,
                 r);
    x = aiserve_lora_input(t, l, m, in);
    aiserve_pgemm(t, 1, 0, r, H, T, 1.f, t->du, r, x, H, 1.f,
                 t->grads + L->lora_a[m], H);
    aiserve_pgemm(t, 0, 0, T, H, r, 1.f, t->du, r, A, H, 0.f, t->b2, H);
    aiserve_dropout(t, AISERVE_SITE_LAYER + 8 * l + 3 + m, t->lora_dropout,
                    t->b2, T * H, 0);
    for (i = 0; i < T * H; i++) {
        t->dx[i] += t->b2[i];
    }
}


static void
aiserve_layer_fwd(aiserve_train_t *t, size_t l, const float *in)
{
    const aiserve_tl_t  *L = &t->layers[l];
    aiserve_tact_t      *a = &t->acts[l];
    const float         *P = t->params;
    size_t               T = t->T, H = t->info.hidden_size;
    size_t               I = t->info.intermediate_size, i, m;
    float                eps = t->info.layer_norm_eps;
    aiserve_act_job_t    aj;

    aiserve_linear_fwd(t, in, T, P + L->qkv_w, P + L->qkv_b, 3 * H, H, a->qkv);
    for (m = 0; m < 3 && t->lora_r > 0; m++) {
        if (t->lora_targets & (1u << m)) {
            aiserve_lora_fwd(t, l, m, in);
        }
    }
    aiserve_attention_fwd(t, l);

    /* BertSelfOutput: LayerNorm(dropout(dense(ctx)) + in) */
    aiserve_linear_fwd(t, a->ctx, T, P + L->ao_w, P + L->ao_b, H, H, a->h1);
    aiserve_dropout(t, AISERVE_SITE_LAYER + 8 * l + 1, t->hidden_dropout,
                    a->h1, T * H, 0);
    for (i = 0; i < T * H; i++) {
        a->h1[i] += in[i];
    }
    aiserve_ln_fwd(t, a->h1, a->a1, a->st1, P + L->ao_g, P + L->ao_beta, T, H,
                   eps);

    /* BertIntermediate, BertOutput */
    aiserve_linear_fwd(t, a->a1, T, P + L->i_w, P + L->i_b, I, H, a->pre);
    aj.act = t->act;
    aj.x = a->pre;
    aj.y = a->gel;
    aiserve_par(t, aiserve_act_fwd_range, &aj, T * I, 1);
    aiserve_linear_fwd(t, a->gel, T, P + L->o_w, P + L->o_b, H, I, a->h2);
    aiserve_dropout(t, AISERVE_SITE_LAYER + 8 * l + 2, t->hidden_dropout,
                    a->h2, T * H, 0);
    for (i = 0; i < T * H; i++) {
        a->h2[i] += a->a1[i];
    }
    aiserve_ln_fwd(t, a->h2, a->out, a->st2, P + L->o_g, P + L->o_beta, T, H,
                   eps);
}


/* The loss of the logits and its gradient dlogits (for loss scale 1). */
static float
aiserve_loss(aiserve_train_t *t)
{
    size_t   C = t->info.num_labels, r, c, n = 0;
    double   loss = 0, m, lse, z, y, sg;
    float   *lg, *dl;

    memset(t->dlogits, 0, t->rows * C * sizeof(float));
    if (t->info.arch == AISERVE_ARCH_TOKEN_CLASSIFICATION
        || t->info.problem_type == AISERVE_PROBLEM_SINGLE_LABEL)
    {
        for (r = 0; r < t->rows; r++) {
            n += t->labels[r] != AISERVE_TRAIN_IGNORE;
        }
        t->n_loss = n;
        if (n == 0) {
            return 0.f;
        }
        for (r = 0; r < t->rows; r++) {
            if (t->labels[r] == AISERVE_TRAIN_IGNORE) {
                continue;
            }
            lg = t->logits + r * C;
            dl = t->dlogits + r * C;
            m = lg[0];
            for (c = 1; c < C; c++) {
                m = lg[c] > m ? lg[c] : m;
            }
            lse = 0;
            for (c = 0; c < C; c++) {
                lse += exp(lg[c] - m);
            }
            lse = m + log(lse);
            loss += lse - lg[t->labels[r]];
            for (c = 0; c < C; c++) {
                dl[c] = (float) ((exp(lg[c] - lse)
                                  - (c == (size_t) t->labels[r]))
                                 / (double) n);
            }
        }
        return (float) (loss / (double) n);
    }

    n = t->rows * C;
    t->n_loss = n;
    for (r = 0; r < n; r++) {
        z = t->logits[r];
        y = t->values[r];
        if (t->info.problem_type == AISERVE_PROBLEM_MULTI_LABEL) {
            /* BCEWithLogitsLoss: max(z, 0) - z y + log(1 + e^-|z|) */
            loss += (z > 0 ? z : 0) - z * y + log1p(exp(-fabs(z)));
            sg = 1.0 / (1.0 + exp(-z));
            t->dlogits[r] = (float) ((sg - y) / (double) n);
        } else {
            loss += (z - y) * (z - y);
            t->dlogits[r] = (float) (2.0 * (z - y) / (double) n);
        }
    }
    return (float) (loss / (double) n);
}


/*
 * The head on X: the first tokens' final hidden states [n_seqs, H]
 * (BertPooler: tanh(dense(x)), dropout, classifier) or every token's
 * [T, H] (dropout, classifier); then the loss when there are labels.
 */
static void
aiserve_head_fwd(aiserve_train_t *t, const float *x, float *loss)
{
    const float  *P = t->params;
    size_t        H = t->info.hidden_size, C = t->info.num_labels, i;

    if (t->info.arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION) {
        if (x != t->first) {
            memcpy(t->first, x, t->n_seqs * H * sizeof(float));
        }
        aiserve_linear_fwd(t, t->first, t->n_seqs, P + t->pool_w, P + t->pool_b,
                           H, H, t->pooled);
        for (i = 0; i < t->n_seqs * H; i++) {
            t->pooled[i] = tanhf(t->pooled[i]);
        }
        memcpy(t->cls_in, t->pooled, t->n_seqs * H * sizeof(float));
    } else {
        memcpy(t->cls_in, x, t->T * H * sizeof(float));
    }
    aiserve_dropout(t, AISERVE_SITE_CLS, t->cls_dropout, t->cls_in,
                    t->rows * H, 0);
    aiserve_linear_fwd(t, t->cls_in, t->rows, P + t->cls_w, P + t->cls_b, C, H,
                       t->logits);

    if (loss != NULL) {
        *loss = t->has_labels ? aiserve_loss(t) : 0.f;
    } else if (t->has_labels) {
        (void) aiserve_loss(t);
    }
}


/* The error of a pass whose bf16 products failed (aiserve_mm()). */
static int
aiserve_pass_done(aiserve_train_t *t, int rc, char *err, size_t err_len)
{
    if (rc == 0 && t->gemm_failed) {
        aiserve_err(err, err_len, "oneDNN: a bf16 matrix product failed "
                    "(out of memory, or a shape it refuses)");
        t->has_labels = 0;
        return -1;
    }
    return rc;
}


static int
aiserve_forward_run(aiserve_train_t *t, const aiserve_train_batch_t *batch,
    float *loss, char *err, size_t err_len)
{
    const aiserve_model_info_t  *in = &t->info;
    const float                 *P = t->params, *x;
    size_t                       T, H = in->hidden_size;
    size_t                       i, c, s, l;

    if (batch->input_ids == NULL) {
        aiserve_err(err, err_len, "a batch without input_ids");
        return -1;
    }
    if (aiserve_take_batch(t, batch, err, err_len) != 0
        || aiserve_carve(t, 0, err, err_len) != 0)
    {
        t->has_labels = 0;
        return -1;
    }
    t->pass++;
    t->head_only = 0;
    T = t->T;

    /* BertEmbeddings: word + token_type + position, LayerNorm, dropout */
    for (i = 0; i < T; i++) {
        const float  *w = P + t->word + (size_t) t->ids[i] * H;
        const float  *ty = P + t->type + (size_t) t->types[i] * H;
        const float  *po = P + t->pos + t->posn[i] * H;

        for (c = 0; c < H; c++) {
            t->emb_in[i * H + c] = (w[c] + ty[c]) + po[c];
        }
    }
    aiserve_ln_fwd(t, t->emb_in, t->emb_out, t->emb_st, P + t->emb_g,
                   P + t->emb_b, T, H, in->layer_norm_eps);
    aiserve_dropout(t, AISERVE_SITE_EMB, t->hidden_dropout, t->emb_out,
                    T * H, 0);

    x = t->emb_out;
    for (l = 0; l < in->num_hidden_layers; l++) {
        aiserve_layer_fwd(t, l, x);
        x = t->acts[l].out;
    }

    if (in->arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION) {
        for (s = 0; s < t->n_seqs; s++) {
            memcpy(t->first + s * H, x + t->start[s] * H, H * sizeof(float));
        }
        x = t->first;
    }
    aiserve_head_fwd(t, x, loss);
    return 0;
}


int
aiserve_train_forward(aiserve_train_t *t, const aiserve_train_batch_t *batch,
    float *loss, char *err, size_t err_len)
{
    t->gemm_failed = 0;
    return aiserve_pass_done(t, aiserve_forward_run(t, batch, loss, err,
                                                    err_len),
                             err, err_len);
}


int
aiserve_train_features(aiserve_train_t *t, const aiserve_train_batch_t *batch,
    float *features, char *err, size_t err_len)
{
    const aiserve_model_info_t  *in = &t->info;
    aiserve_train_batch_t        b = *batch;
    size_t                       H = in->hidden_size, s;
    int                          dropout = t->dropout_on;
    const float                 *x;

    b.label_ids = NULL;
    b.label_values = NULL;
    t->dropout_on = 0;
    if (aiserve_train_forward(t, &b, NULL, err, err_len) != 0) {
        t->dropout_on = dropout;
        return -1;
    }
    t->dropout_on = dropout;
    x = t->acts[in->num_hidden_layers - 1].out;
    if (in->arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION) {
        for (s = 0; s < t->n_seqs; s++) {
            memcpy(features + s * H, x + t->start[s] * H, H * sizeof(float));
        }
    } else {
        memcpy(features, x, t->T * H * sizeof(float));
    }
    return 0;
}


int
aiserve_train_head_forward(aiserve_train_t *t, const float *features,
    const aiserve_train_batch_t *batch, float *loss, char *err,
    size_t err_len)
{
    aiserve_train_batch_t  b = *batch;

    b.input_ids = NULL;
    b.token_type_ids = NULL;
    if (aiserve_take_batch(t, &b, err, err_len) != 0
        || aiserve_carve(t, 1, err, err_len) != 0)
    {
        t->has_labels = 0;
        return -1;
    }
    t->pass++;
    t->head_only = 1;
    t->gemm_failed = 0;
    aiserve_head_fwd(t, features, loss);
    return aiserve_pass_done(t, 0, err, err_len);
}


/* --- backward ------------------------------------------------------------ */

/*
 * Backward of attention of one sequence and head, from dctx to dqkv [T,
 * 3H]: with Pd = dropout(P), dV = Pd^T dctx, dPd = dctx V^T, dP =
 * dropout(dPd), dS = P (dP - rowsum(dP P)), dQ = scale dS K, dK = scale
 * dS^T Q.
 */
static void
aiserve_attention_bwd_item(void *arg, size_t item, int thread)
{
    const aiserve_att_job_t  *jb = arg;
    aiserve_train_t          *t = jb->t;
    size_t                    l = jb->l;
    aiserve_tact_t           *a = &t->acts[l];
    size_t                    H = t->info.hidden_size, D = t->head_dim;
    size_t                    A = t->info.num_attention_heads;
    size_t                    s = item / A, h = item % A, L = t->lens[s];
    size_t                    off = t->poff[s] + h * L * L, i, j;
    float                     scale = 1.f / sqrtf((float) D), *p, *pd, *dp;
    const float              *q, *k, *v, *dc;
    float                    *dq, *dk, *dv;
    double                    rs;
    int                       drop = t->dropout_on && t->attn_dropout > 0.f;

    q = a->qkv + t->start[s] * 3 * H + h * D;
    k = q + H;
    v = q + 2 * H;
    dq = t->dqkv + t->start[s] * 3 * H + h * D;
    dk = dq + H;
    dv = dq + 2 * H;
    dc = t->dctx + t->start[s] * H + h * D;
    p = a->probs + off;
    pd = p;
    dp = t->att + 2 * t->max_len * t->max_len * (size_t) thread;
    if (drop) {
        pd = dp + t->max_len * t->max_len;
        memcpy(pd, p, L * L * sizeof(float));
        aiserve_dropout(t, AISERVE_SITE_LAYER + 8 * l, t->attn_dropout, pd,
                        L * L, off);
    }
    aiserve_mm(t, 1, 0, L, D, L, 1.f, pd, L, dc, H, 0.f, dv, 3 * H);
    aiserve_mm(t, 0, 1, L, L, D, 1.f, dc, H, v, 3 * H, 0.f, dp, L);
    if (drop) {
        aiserve_dropout(t, AISERVE_SITE_LAYER + 8 * l, t->attn_dropout, dp,
                        L * L, off);
    }
    for (i = 0; i < L; i++) {
        rs = 0;
        for (j = 0; j < L; j++) {
            rs += (double) dp[i * L + j] * p[i * L + j];
        }
        for (j = 0; j < L; j++) {
            dp[i * L + j] = p[i * L + j] * (dp[i * L + j] - (float) rs);
        }
    }
    aiserve_mm(t, 0, 0, L, D, L, scale, dp, L, k, 3 * H, 0.f, dq, 3 * H);
    aiserve_mm(t, 1, 0, L, D, L, scale, dp, L, q, 3 * H, 0.f, dk, 3 * H);
}


static void
aiserve_attention_bwd(aiserve_train_t *t, size_t l)
{
    aiserve_att_job_t  j = { t, l };

    aiserve_team_run(t->team, aiserve_attention_bwd_item, &j,
                     t->n_seqs * t->info.num_attention_heads);
}


/* Backward of layer L: t->dx holds d(output) and gets d(input). */
static void
aiserve_layer_bwd(aiserve_train_t *t, size_t l, const float *in)
{
    const aiserve_tl_t  *L = &t->layers[l];
    aiserve_tact_t      *a = &t->acts[l];
    const float         *P = t->params;
    float               *G = t->grads;
    size_t               T = t->T, H = t->info.hidden_size;
    size_t               I = t->info.intermediate_size, m;
    aiserve_act_job_t    aj;

    /* BertOutput: out = LN(dropout(gel W_o^T + b_o) + a1) */
    aiserve_ln_bwd(t, t->dx, a->h2, a->st2, P + L->o_g, GR(L->o_g),
                   GR(L->o_beta), t->b1, T, H);
    memcpy(t->b2, t->b1, T * H * sizeof(float));
    aiserve_dropout(t, AISERVE_SITE_LAYER + 8 * l + 2, t->hidden_dropout,
                    t->b2, T * H, 0);
    aiserve_linear_bwd(t, t->b2, a->gel, T, P + L->o_w, GR(L->o_w), GR(L->o_b),
                       H, I, t->di, 0.f);
    aj.act = t->act;
    aj.x = a->pre;
    aj.y = t->di;
    aiserve_par(t, aiserve_act_bwd_range, &aj, T * I, 1);
    /* a1 feeds the intermediate dense and the residual: b1 += dpre W_i */
    aiserve_linear_bwd(t, t->di, a->a1, T, P + L->i_w, GR(L->i_w), GR(L->i_b),
                       I, H, t->b1, 1.f);

    /* BertSelfOutput: a1 = LN(dropout(ctx W_ao^T + b_ao) + in) */
    aiserve_ln_bwd(t, t->b1, a->h1, a->st1, P + L->ao_g, GR(L->ao_g),
                   GR(L->ao_beta), t->dx, T, H);
    memcpy(t->b2, t->dx, T * H * sizeof(float));
    aiserve_dropout(t, AISERVE_SITE_LAYER + 8 * l + 1, t->hidden_dropout,
                    t->b2, T * H, 0);
    aiserve_linear_bwd(t, t->b2, a->ctx, T, P + L->ao_w, GR(L->ao_w),
                       GR(L->ao_b), H, H, t->dctx, 0.f);

    aiserve_attention_bwd(t, l);
    /* in feeds QKV and the residual: dx += dqkv W_qkv */
    aiserve_linear_bwd(t, t->dqkv, in, T, P + L->qkv_w, GR(L->qkv_w), NULL,
                       3 * H, H, t->dx, 1.f);
    for (m = 0; m < 3 && t->lora_r > 0; m++) {
        if (t->lora_targets & (1u << m)) {
            aiserve_lora_bwd(t, l, m, in);
        }
    }
    /* The key bias adds q_i . b_k / sqrt(D) to every score of row i: a
     * constant the softmax removes, so its gradient is exactly 0 (torch
     * computes it as rounding noise: about 1e-17 in float64, 1e-9 in
     * fp32, which AdamW's m / sqrt(v) would turn into steps of lr).  Only
     * the query and value biases get their column sums. */
    if (GR(L->qkv_b) != NULL) {
        aiserve_colsum(t, t->dqkv, T, 3 * H, G + L->qkv_b, H);
        aiserve_colsum(t, t->dqkv + 2 * H, T, 3 * H, G + L->qkv_b + 2 * H, H);
    }
}


static int
aiserve_backward_run(aiserve_train_t *t, float loss_scale, char *err,
    size_t err_len)
{
    const aiserve_model_info_t  *in = &t->info;
    const float                 *P = t->params;
    float                       *G = t->grads, *dw, *dt, *dp;
    size_t                       T = t->T, H = in->hidden_size;
    size_t                       C = in->num_labels, i, c, s, l;
    int                          seq, head;

    if (!t->has_labels) {
        aiserve_err(err, err_len, "backward pass without a forward pass "
                    "with labels");
        return -1;
    }
    if (t->n_loss == 0) {
        return 0;
    }
    for (i = 0; i < t->rows * C; i++) {
        t->dlogits[i] *= loss_scale;
    }

    /* classifier, dropout */
    seq = in->arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION;
    /* nothing below the head to train */
    head = t->head_only || t->mode == AISERVE_TRAIN_HEAD;
    aiserve_linear_bwd(t, t->dlogits, t->cls_in, t->rows, P + t->cls_w,
                       GR(t->cls_w), GR(t->cls_b), C, H,
                       head && !seq ? NULL : t->dcls, 0.f);
    if (head && !seq) {
        return 0;
    }
    aiserve_dropout(t, AISERVE_SITE_CLS, t->cls_dropout, t->dcls,
                    t->rows * H, 0);
    if (seq) {
        for (i = 0; i < t->n_seqs * H; i++) {
            t->dcls[i] *= 1.f - t->pooled[i] * t->pooled[i];
        }
        aiserve_linear_bwd(t, t->dcls, t->first, t->n_seqs, P + t->pool_w,
                           GR(t->pool_w), GR(t->pool_b), H, H,
                           head ? NULL : t->dpool, 0.f);
        if (head) {
            return 0;
        }
        memset(t->dx, 0, T * H * sizeof(float));
        for (s = 0; s < t->n_seqs; s++) {
            memcpy(t->dx + t->start[s] * H, t->dpool + s * H,
                   H * sizeof(float));
        }
    } else {
        memcpy(t->dx, t->dcls, T * H * sizeof(float));
    }

    for (l = in->num_hidden_layers; l-- > 0;) {
        aiserve_layer_bwd(t, l, l ? t->acts[l - 1].out : t->emb_out);
    }

    /* embeddings: dropout, LayerNorm, then each sum's three rows */
    aiserve_dropout(t, AISERVE_SITE_EMB, t->hidden_dropout, t->dx, T * H, 0);
    aiserve_ln_bwd(t, t->dx, t->emb_in, t->emb_st, P + t->emb_g, GR(t->emb_g),
                   GR(t->emb_b), t->b1, T, H);
    if (GR(t->word) == NULL) {
        return 0;
    }
    for (i = 0; i < T; i++) {
        dw = G + t->word + (size_t) t->ids[i] * H;
        dt = G + t->type + (size_t) t->types[i] * H;
        dp = G + t->pos + t->posn[i] * H;
        for (c = 0; c < H; c++) {
            dw[c] += t->b1[i * H + c];
            dt[c] += t->b1[i * H + c];
            dp[c] += t->b1[i * H + c];
        }
    }
    return 0;
}


int
aiserve_train_backward(aiserve_train_t *t, float loss_scale, char *err,
    size_t err_len)
{
    t->gemm_failed = 0;
    return aiserve_pass_done(t, aiserve_backward_run(t, loss_scale, err,
                                                     err_len),
                             err, err_len);
}


/* --- optimisation -------------------------------------------------------- */

/* The two AdamW moments, allocated (zero) on first use. */
static int
aiserve_adam_alloc(aiserve_train_t *t, char *err, size_t err_len)
{
    if (t->adam_m != NULL) {
        return 0;
    }
    t->adam_m = calloc(t->n_params, sizeof(float));
    t->adam_v = calloc(t->n_params, sizeof(float));
    if (t->adam_m == NULL || t->adam_v == NULL) {
        free(t->adam_m);
        free(t->adam_v);
        t->adam_m = t->adam_v = NULL;
        aiserve_err(err, err_len, "out of memory for the optimiser state "
                    "(%zu bytes)", 2 * t->n_params * sizeof(float));
        return -1;
    }
    return 0;
}


int
aiserve_train_optim_state(aiserve_train_t *t, float **adam_m, float **adam_v,
    size_t **adam_step, char *err, size_t err_len)
{
    if (aiserve_adam_alloc(t, err, err_len) != 0) {
        return -1;
    }
    *adam_m = t->adam_m;
    *adam_v = t->adam_v;
    *adam_step = &t->adam_step;
    return 0;
}


uint64_t
aiserve_train_dropout_pass(const aiserve_train_t *t)
{
    return t->pass;
}


void
aiserve_train_set_dropout_pass(aiserve_train_t *t, uint64_t pass)
{
    t->pass = pass;
}


/* The optimiser's pieces of the trainable tensors, AISERVE_OPT_CHUNK
 * floats at most: the items over which a step spreads its two passes. */
#define AISERVE_OPT_CHUNK  16384

typedef struct {
    aiserve_train_t               *t;
    const aiserve_optim_config_t  *c;
    float                          rate, coef;
} aiserve_opt_job_t;


/* Lists the pieces on the first step; -1 with ERR when out of memory. */
static int
aiserve_opt_chunks(aiserve_train_t *t, char *err, size_t err_len)
{
    const aiserve_train_tensor_t  *x;
    size_t                         i, o, n = 0;

    if (t->chunks != NULL) {
        return 0;
    }
    for (i = 0; i < t->n_tensors; i++) {
        x = &t->tensors[i];
        n += x->frozen ? 0 : (x->n + AISERVE_OPT_CHUNK - 1) / AISERVE_OPT_CHUNK;
    }
    t->chunks = malloc((n ? n : 1) * sizeof(*t->chunks));
    t->chunk_ss = malloc((n ? n : 1) * sizeof(double));
    if (t->chunks == NULL || t->chunk_ss == NULL) {
        free(t->chunks);
        free(t->chunk_ss);
        t->chunks = NULL;
        t->chunk_ss = NULL;
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    t->n_chunks = 0;
    for (i = 0; i < t->n_tensors; i++) {
        x = &t->tensors[i];
        for (o = 0; o < x->n && !x->frozen; o += AISERVE_OPT_CHUNK) {
            t->chunks[t->n_chunks].offset = x->offset + o;
            t->chunks[t->n_chunks].n = x->n - o < AISERVE_OPT_CHUNK
                                       ? x->n - o : AISERVE_OPT_CHUNK;
            t->chunks[t->n_chunks].decay = x->decay;
            t->n_chunks++;
        }
    }
    return 0;
}


static void
aiserve_opt_sumsq_item(void *arg, size_t item, int thread)
{
    aiserve_train_t  *t = arg;

    t->chunk_ss[item] = aiserve_sumsq(t->grads + t->chunks[item].offset,
                                      t->chunks[item].n);
}


static void
aiserve_opt_update_item(void *arg, size_t item, int thread)
{
    const aiserve_opt_job_t  *j = arg;
    aiserve_train_t          *t = j->t;
    size_t                    o = t->chunks[item].offset;

    aiserve_adamw_update(t->params + o, t->grads + o, t->adam_m + o,
                         t->adam_v + o, t->chunks[item].n, j->c, j->rate,
                         t->chunks[item].decay ? j->c->weight_decay : 0.f,
                         t->adam_step, j->coef);
}


int
aiserve_train_step(aiserve_train_t *t, const aiserve_optim_config_t *c,
    float *lr, double *grad_norm, char *err, size_t err_len)
{
    aiserve_opt_job_t  j = { t, c, 0.f, 1.f };
    double             norm, ss;
    size_t             i;

    if (c->total_steps == 0 || c->warmup_steps > c->total_steps) {
        aiserve_err(err, err_len, "the schedule needs total_steps >= 1 and "
                    "warmup_steps <= total_steps (got %zu and %zu)",
                    c->total_steps, c->warmup_steps);
        return -1;
    }
    if (aiserve_adam_alloc(t, err, err_len) != 0
        || aiserve_opt_chunks(t, err, err_len) != 0)
    {
        return -1;
    }
    /* the norm of the trainable tensors' gradients (torch clips the
     * parameters that have a gradient), its pieces summed in order */
    aiserve_team_run(t->team, aiserve_opt_sumsq_item, t, t->n_chunks);
    ss = 0;
    for (i = 0; i < t->n_chunks; i++) {
        ss += t->chunk_ss[i];
    }
    norm = sqrt(ss);
    j.coef = aiserve_clip_coef(norm, c->max_grad_norm);
    j.rate = aiserve_lr_linear(c->learning_rate, t->adam_step,
                               c->warmup_steps, c->total_steps);
    t->adam_step++;
    /* AdamW on the clipped gradients, which it zeroes: frozen tensors'
     * gradients are never written, and stay 0 */
    aiserve_team_run(t->team, aiserve_opt_update_item, &j, t->n_chunks);
    if (lr != NULL) {
        *lr = j.rate;
    }
    if (grad_norm != NULL) {
        *grad_norm = norm;
    }
    return 0;
}


void
aiserve_train_opts_defaults(aiserve_train_opts_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->arch = AISERVE_ARCH_BERT_MODEL;
    opts->mode = AISERVE_TRAIN_FULL;
    opts->lora_r = 8;
    opts->lora_alpha = 16.f;
    opts->lora_dropout = 0.f;
    opts->lora_targets = AISERVE_LORA_QUERY | AISERVE_LORA_VALUE;
}


aiserve_dtype_e
aiserve_train_dtype(const aiserve_train_t *t)
{
    return t->dtype;
}


void
aiserve_train_memory(const aiserve_train_t *t, aiserve_train_memory_t *m)
{
    m->weights = t->n_params * sizeof(float);
    m->gradients = t->n_params * sizeof(float);
    m->optimizer = t->adam_m != NULL ? 2 * t->n_params * sizeof(float) : 0;
    m->activations = t->arena_cap * sizeof(float)
                     + t->cap_T * (2 * sizeof(int32_t) + sizeof(size_t))
                     + t->cap_n * 3 * sizeof(size_t);
}
