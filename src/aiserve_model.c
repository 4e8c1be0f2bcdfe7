/*
 * aiserve encoder: Hugging Face BERT (transformers' modeling_bert.py) on the
 * CPU in fp32.  Weights come from model.safetensors (aiserve_safetensors.c),
 * the configuration from config.json and sentence-transformers' modules.json
 * / 1_Pooling/config.json.
 *
 * A batch is packed: the sequences lie one after the other with no padding,
 * so every matrix product runs on exactly the batch's tokens and attention
 * runs per sequence and head on that sequence's tokens only (no mask).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "aiserve_blas.h"
#include "aiserve_err.h"
#include "aiserve_gemm.h"
#include "aiserve_model.h"
#include "aiserve_ops.h"
#include "aiserve_safetensors.h"
#include "aiserve_team.h"

#define AISERVE_MAX_THREADS  64

/* Alignment of the packed weights: one x86-64 huge page. */
#define AISERVE_HUGE_PAGE    ((size_t) 2 << 20)


typedef struct {
    /* BertSelfAttention: query, key and value stacked into one [3H, H]
     * weight and [3H] bias, so that one product computes all three */
    const float  *qkv_w, *qkv_b;
    const float  *ao_w, *ao_b, *ao_ln_g, *ao_ln_b;     /* BertSelfOutput */
    const float  *i_w, *i_b;                           /* BertIntermediate */
    const float  *o_w, *o_b, *o_ln_g, *o_ln_b;         /* BertOutput */

    /* the four weights packed for aiserve_gemm_packed() (NULL with
     * AISERVE_GEMM=blas: the OpenBLAS path uses the *_w above) */
    const aiserve_gemm_w_t  *qkv_p, *ao_p, *i_p, *o_p;

    /* a LoRA adapter on query, key and value, run beside the base's
     * weights (aiserve_model_load_over()): lora_a[k] [r, H] and
     * lora_b[k] [H, r] (NULL: projection k not adapted) */
    const float  *lora_a[3], *lora_b[3];
    size_t        lora_r;
    float         lora_scale;
} aiserve_layer_t;


struct aiserve_model_s {
    aiserve_model_info_t   info;
    aiserve_act_e          act;
    size_t                 head_dim;
    aiserve_st_file_t     *st;
    const char            *st_name;      /* for messages */

    const float           *word_emb, *pos_emb, *type_emb;   /* BertEmbeddings */
    const float           *emb_ln_g, *emb_ln_b;
    aiserve_layer_t       *layers;
    const float           *pool_w, *pool_b;                 /* BertPooler */
    const float           *cls_w, *cls_b;                   /* classifier */

    void                  *packed;       /* every layer's packed weights */
    size_t                 packed_bytes;
    aiserve_dtype_e        dtype;        /* of the packed weights */
    aiserve_gemm_layout_t  layouts[6];   /* QKV, attention out, FFN in, FFN
                                            out, pooler, classifier */
    aiserve_gemm_w_t       pool_p, cls_p;    /* packed heads (data NULL:
                                                none, or not packed) */
    aiserve_gemm_w_t      *pw;           /* 4 a layer, in that order */

    /* a head or an adapter over a shared base (aiserve_model_load_over()):
     * the encoder is the base's, OWNED_BASE the one aiserve_model_load()
     * loaded for it; PREFIX: of the tensor names in st */
    const aiserve_model_t *base;
    aiserve_model_t       *owned_base;
    const char            *prefix;

    void                 **owned;        /* converted copies */
    size_t                 n_owned;
    size_t                 cap_owned;
};


struct aiserve_scratch_s {
    const aiserve_model_t  *model;
    size_t                  max_tokens;
    size_t                  max_seq;
    float                  *x;           /* [T, H] hidden states */
    float                  *qkv;         /* [T, 3H]: query | key | value */
    float                  *ctx;         /* [T, H] attention output */
    float                  *tmp;         /* [T, H] dense outputs */
    float                  *inter;       /* [T, I] */
    float                  *scores[AISERVE_MAX_THREADS];  /* per thread */
    size_t                  n_scores;
    aiserve_team_t         *team;        /* started on first use */
    int                     threads;     /* 0: aiserve_num_threads */
    int                     failed;      /* a step's product failed */
    char                    err[256];    /* its message */
};


/* Threads per forward pass (the caller and its team); set after fork() by
 * aiserve_set_num_threads(), read by every forward pass. */
static int  aiserve_num_threads = 1;


void
aiserve_set_num_threads(int n)
{
    if (n < 1) {
        n = 1;
    }
    if (n > AISERVE_MAX_THREADS) {
        n = AISERVE_MAX_THREADS;
    }
    aiserve_num_threads = n;
}


void
aiserve_scratch_set_threads(aiserve_scratch_t *scratch, int n)
{
    scratch->threads = n < 1 ? 0
                       : n > AISERVE_MAX_THREADS ? AISERVE_MAX_THREADS : n;
}


/* --- loading --------------------------------------------------------- */

static json_t *
aiserve_load_json(const char *dir, const char *file, int required,
    char *err, size_t err_len)
{
    char          path[4096];
    json_t       *j;
    json_error_t  jerr;
    struct stat   sb;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    if (stat(path, &sb) != 0) {
        if (required) {
            aiserve_err(err, err_len, "%s: %s", path, strerror(errno));
        }
        return NULL;
    }
    j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        aiserve_err(err, err_len, "%s: invalid JSON: %s (line %d)", path,
                    jerr.text, jerr.line);
    }
    return j;
}


/* config.json integer field: > 0, or DEF when absent and DEF != 0. */
static int
aiserve_cfg_size(json_t *cfg, const char *dir, const char *key, size_t def,
    size_t *out, char *err, size_t err_len)
{
    json_t  *v = json_object_get(cfg, key);

    if (v == NULL || json_is_null(v)) {
        if (def == 0) {
            aiserve_err(err, err_len, "%s/config.json: \"%s\" is missing",
                        dir, key);
            return -1;
        }
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0
        || json_integer_value(v) > (1 << 24))
    {
        aiserve_err(err, err_len, "%s/config.json: \"%s\" must be a positive "
                    "integer", dir, key);
        return -1;
    }
    *out = (size_t) json_integer_value(v);
    return 0;
}


static const char *
aiserve_cfg_string(json_t *cfg, const char *key, const char *def)
{
    json_t  *v = json_object_get(cfg, key);

    return json_is_string(v) ? json_string_value(v) : def;
}


static int
aiserve_parse_config(aiserve_model_t *m, json_t *cfg, const char *dir,
    char *err, size_t err_len)
{
    aiserve_model_info_t  *info = &m->info;
    const char            *s;
    json_t                *v, *arch;
    size_t                 i;

    if (!json_is_object(cfg)) {
        aiserve_err(err, err_len, "%s/config.json: not a JSON object", dir);
        return -1;
    }

    s = aiserve_cfg_string(cfg, "model_type", "bert");
    if (strcmp(s, "bert") != 0) {
        aiserve_err(err, err_len, "%s/config.json: model_type \"%s\" is not "
                    "supported (only \"bert\")", dir, s);
        return -1;
    }

    if (aiserve_cfg_size(cfg, dir, "hidden_size", 0, &info->hidden_size,
                         err, err_len) != 0
        || aiserve_cfg_size(cfg, dir, "num_hidden_layers", 0,
                            &info->num_hidden_layers, err, err_len) != 0
        || aiserve_cfg_size(cfg, dir, "num_attention_heads", 0,
                            &info->num_attention_heads, err, err_len) != 0
        || aiserve_cfg_size(cfg, dir, "intermediate_size", 0,
                            &info->intermediate_size, err, err_len) != 0
        || aiserve_cfg_size(cfg, dir, "vocab_size", 0, &info->vocab_size,
                            err, err_len) != 0
        || aiserve_cfg_size(cfg, dir, "max_position_embeddings", 512,
                            &info->max_position_embeddings, err,
                            err_len) != 0
        || aiserve_cfg_size(cfg, dir, "type_vocab_size", 2,
                            &info->type_vocab_size, err, err_len) != 0)
    {
        return -1;
    }
    if (info->hidden_size % info->num_attention_heads != 0) {
        aiserve_err(err, err_len, "%s/config.json: hidden_size %zu is not a "
                    "multiple of num_attention_heads %zu", dir,
                    info->hidden_size, info->num_attention_heads);
        return -1;
    }
    m->head_dim = info->hidden_size / info->num_attention_heads;

    v = json_object_get(cfg, "layer_norm_eps");
    if (v == NULL) {
        info->layer_norm_eps = 1e-12f;
    } else if (json_is_number(v) && json_number_value(v) > 0) {
        info->layer_norm_eps = (float) json_number_value(v);
    } else {
        aiserve_err(err, err_len, "%s/config.json: layer_norm_eps must be a "
                    "positive number", dir);
        return -1;
    }

    s = aiserve_cfg_string(cfg, "hidden_act", "gelu");
    if (!json_is_string(json_object_get(cfg, "hidden_act"))
        && json_object_get(cfg, "hidden_act") != NULL)
    {
        aiserve_err(err, err_len, "%s/config.json: hidden_act must be a "
                    "string", dir);
        return -1;
    }
    if (aiserve_act_parse(s, &m->act) != 0) {
        aiserve_err(err, err_len, "%s/config.json: hidden_act \"%s\" is not "
                    "supported (gelu, gelu_python, gelu_new, "
                    "gelu_pytorch_tanh, relu, silu, swish)", dir, s);
        return -1;
    }

    s = aiserve_cfg_string(cfg, "position_embedding_type", "absolute");
    if (strcmp(s, "absolute") != 0) {
        aiserve_err(err, err_len, "%s/config.json: position_embedding_type "
                    "\"%s\" is not supported (only \"absolute\")", dir, s);
        return -1;
    }
    if (json_is_true(json_object_get(cfg, "is_decoder"))
        || json_is_true(json_object_get(cfg, "add_cross_attention")))
    {
        aiserve_err(err, err_len, "%s/config.json: decoder / cross-attention "
                    "BERT is not supported", dir);
        return -1;
    }

    /* architectures[0] picks the head; encoder-only checkpoints saved with
     * a pre-training head are served as BertModel (the head is unused). */
    info->arch = AISERVE_ARCH_BERT_MODEL;
    arch = json_object_get(cfg, "architectures");
    if (json_is_array(arch) && json_array_size(arch) > 0) {
        if (json_array_size(arch) != 1
            || !json_is_string(json_array_get(arch, 0)))
        {
            aiserve_err(err, err_len, "%s/config.json: architectures must "
                        "name one class", dir);
            return -1;
        }
        s = json_string_value(json_array_get(arch, 0));
        if (strcmp(s, "BertForSequenceClassification") == 0) {
            info->arch = AISERVE_ARCH_SEQUENCE_CLASSIFICATION;
        } else if (strcmp(s, "BertForTokenClassification") == 0) {
            info->arch = AISERVE_ARCH_TOKEN_CLASSIFICATION;
        } else if (strcmp(s, "BertModel") != 0
                   && strcmp(s, "BertForMaskedLM") != 0
                   && strcmp(s, "BertForPreTraining") != 0)
        {
            aiserve_err(err, err_len, "%s/config.json: architecture \"%s\" "
                        "is not supported (BertModel, "
                        "BertForSequenceClassification, "
                        "BertForTokenClassification)", dir, s);
            return -1;
        }
    }

    if (info->arch == AISERVE_ARCH_BERT_MODEL) {
        return 0;
    }

    /* Labels: id2label ({"0": "O", ...}) fixes num_labels, as
     * PretrainedConfig does; without it num_labels (default 2) and
     * LABEL_i names. */
    v = json_object_get(cfg, "id2label");
    if (json_is_object(v) && json_object_size(v) > 0) {
        info->num_labels = json_object_size(v);
    } else if (aiserve_cfg_size(cfg, dir, "num_labels", 2, &info->num_labels,
                                err, err_len) != 0)
    {
        return -1;
    }
    info->id2label = calloc(info->num_labels, sizeof(char *));
    if (info->id2label == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    for (i = 0; i < info->num_labels; i++) {
        char         key[32];
        json_t      *l;

        snprintf(key, sizeof(key), "%zu", i);
        l = json_is_object(v) ? json_object_get(v, key) : NULL;
        if (json_is_object(v) && json_object_size(v) > 0 && l == NULL) {
            aiserve_err(err, err_len, "%s/config.json: id2label has no "
                        "entry \"%s\" (ids must be 0..%zu)", dir, key,
                        info->num_labels - 1);
            return -1;
        }
        if (l != NULL && !json_is_string(l)) {
            aiserve_err(err, err_len, "%s/config.json: id2label \"%s\" is "
                        "not a string", dir, key);
            return -1;
        }
        if (l != NULL) {
            info->id2label[i] = strdup(json_string_value(l));
        } else {
            info->id2label[i] = malloc(32);
            if (info->id2label[i] != NULL) {
                snprintf(info->id2label[i], 32, "LABEL_%zu", i);
            }
        }
        if (info->id2label[i] == NULL) {
            aiserve_err(err, err_len, "out of memory");
            return -1;
        }
    }

    /* problem_type as BertForSequenceClassification.forward() infers it
     * when unset: one label is regression, otherwise single-label. */
    s = aiserve_cfg_string(cfg, "problem_type", NULL);
    if (s == NULL) {
        info->problem_type = info->num_labels == 1
                             ? AISERVE_PROBLEM_REGRESSION
                             : AISERVE_PROBLEM_SINGLE_LABEL;
    } else if (strcmp(s, "single_label_classification") == 0) {
        info->problem_type = AISERVE_PROBLEM_SINGLE_LABEL;
    } else if (strcmp(s, "multi_label_classification") == 0) {
        info->problem_type = AISERVE_PROBLEM_MULTI_LABEL;
    } else if (strcmp(s, "regression") == 0) {
        info->problem_type = AISERVE_PROBLEM_REGRESSION;
    } else {
        aiserve_err(err, err_len, "%s/config.json: problem_type \"%s\" is "
                    "not supported", dir, s);
        return -1;
    }
    return 0;
}


static int
aiserve_cfg_flag(json_t *cfg, const char *key)
{
    return json_is_true(json_object_get(cfg, key));
}


/*
 * 1_Pooling/config.json: "pooling_mode": "cls" | "mean" | "max"
 * (sentence-transformers 6.x), or the pooling_mode_*_token(s) flags of
 * earlier versions, exactly one of them true.
 */
static int
aiserve_parse_pooling(aiserve_model_t *m, json_t *pool, const char *sub,
    char *err, size_t err_len)
{
    const char  *mode = aiserve_cfg_string(pool, "pooling_mode", NULL);
    int          n;

    if (mode != NULL) {
        if (strcmp(mode, "cls") == 0) {
            m->info.pooling = AISERVE_POOLING_CLS;
        } else if (strcmp(mode, "mean") == 0) {
            m->info.pooling = AISERVE_POOLING_MEAN;
        } else if (strcmp(mode, "max") == 0) {
            m->info.pooling = AISERVE_POOLING_MAX;
        } else {
            aiserve_err(err, err_len, "%s/config.json: pooling_mode \"%s\" "
                        "is not supported (cls, mean or max)", sub, mode);
            return -1;
        }
        return 0;
    }
    if (aiserve_cfg_flag(pool, "pooling_mode_mean_sqrt_len_tokens")
        || aiserve_cfg_flag(pool, "pooling_mode_weightedmean_tokens")
        || aiserve_cfg_flag(pool, "pooling_mode_lasttoken"))
    {
        aiserve_err(err, err_len, "%s/config.json: pooling mode not "
                    "supported (cls, mean or max)", sub);
        return -1;
    }
    n = aiserve_cfg_flag(pool, "pooling_mode_cls_token")
        + aiserve_cfg_flag(pool, "pooling_mode_mean_tokens")
        + aiserve_cfg_flag(pool, "pooling_mode_max_tokens");
    if (n != 1) {
        aiserve_err(err, err_len, "%s/config.json: exactly one of "
                    "pooling_mode_cls_token, pooling_mode_mean_tokens, "
                    "pooling_mode_max_tokens must be true", sub);
        return -1;
    }
    m->info.pooling = aiserve_cfg_flag(pool, "pooling_mode_cls_token")
                      ? AISERVE_POOLING_CLS
                      : aiserve_cfg_flag(pool, "pooling_mode_mean_tokens")
                      ? AISERVE_POOLING_MEAN : AISERVE_POOLING_MAX;
    return 0;
}


/* sentence-transformers' modules.json: Transformer, Pooling, Normalize. */
static int
aiserve_parse_modules(aiserve_model_t *m, const char *dir, char *err,
    size_t err_len)
{
    json_t       *mods, *mod, *pool;
    const char   *type, *path, *cls;
    char          sub[4096];
    struct stat   sb;
    size_t        i;
    int           have_pooling = 0, rc;

    /* Without modules.json sentence-transformers builds Transformer + mean
     * pooling; so do we (no Normalize). */
    m->info.pooling = AISERVE_POOLING_MEAN;
    m->info.normalize = 0;

    snprintf(sub, sizeof(sub), "%s/modules.json", dir);
    if (stat(sub, &sb) != 0) {
        return 0;
    }
    mods = aiserve_load_json(dir, "modules.json", 1, err, err_len);
    if (mods == NULL) {
        return -1;
    }
    if (!json_is_array(mods)) {
        aiserve_err(err, err_len, "%s/modules.json: not a JSON array", dir);
        goto fail;
    }

    json_array_foreach(mods, i, mod) {
        type = aiserve_cfg_string(mod, "type", NULL);
        path = aiserve_cfg_string(mod, "path", "");
        cls = type ? strrchr(type, '.') : NULL;
        if (cls == NULL || strncmp(type, "sentence_transformers.", 22) != 0) {
            aiserve_err(err, err_len, "%s/modules.json: module %zu has no "
                        "sentence_transformers type", dir, i);
            goto fail;
        }
        /* sentence_transformers.models.Pooling (up to 5.x) and
         * sentence_transformers.<...>.modules.pooling.Pooling (6.x) */
        cls++;
        if (strcmp(cls, "Transformer") == 0) {
            continue;
        }
        if (strcmp(cls, "Normalize") == 0) {
            m->info.normalize = 1;
            continue;
        }
        if (strcmp(cls, "Pooling") != 0) {
            aiserve_err(err, err_len, "%s/modules.json: module type \"%s\" "
                        "is not supported (Transformer, Pooling, Normalize)",
                        dir, type);
            goto fail;
        }
        if (have_pooling) {
            aiserve_err(err, err_len, "%s/modules.json: more than one "
                        "Pooling module", dir);
            goto fail;
        }
        have_pooling = 1;
        snprintf(sub, sizeof(sub), "%s/%s", dir, path);
        pool = aiserve_load_json(sub, "config.json", 1, err, err_len);
        if (pool == NULL) {
            goto fail;
        }
        rc = aiserve_parse_pooling(m, pool, sub, err, err_len);
        json_decref(pool);
        if (rc != 0) {
            goto fail;
        }
    }
    json_decref(mods);
    return 0;

fail:
    json_decref(mods);
    return -1;
}


static int
aiserve_own(aiserve_model_t *m, void *p)
{
    void  **n;

    if (m->n_owned == m->cap_owned) {
        m->cap_owned = m->cap_owned ? 2 * m->cap_owned : 64;
        n = realloc(m->owned, m->cap_owned * sizeof(void *));
        if (n == NULL) {
            return -1;
        }
        m->owned = n;
    }
    m->owned[m->n_owned++] = p;
    return 0;
}


/* Frees P if it is one of the model's own copies (not the mapping). */
static void
aiserve_disown(aiserve_model_t *m, const void *p)
{
    size_t  i;

    for (i = 0; i < m->n_owned; i++) {
        if (m->owned[i] == p) {
            free(m->owned[i]);
            m->owned[i] = m->owned[--m->n_owned];
            return;
        }
    }
}


/* Tensor NAME of ST, its name after PREFIX ("" for a checkpoint;
 * "base_model.model." in a peft adapter). */
static const aiserve_st_tensor_t *
aiserve_find_tensor(const aiserve_st_file_t *st, const char *pfx,
    const char *name)
{
    const aiserve_st_tensor_t  *t;
    char                        alt[512];
    size_t                      len;
    int                         prefix, ln;

    /* Names as BertModel saves them, then with the "bert." prefix of the
     * task models, each also with TF-era LayerNorm gamma/beta
     * (transformers' _fix_state_dict_key_on_load renames these). */
    len = strlen(name);
    for (prefix = 0; prefix < 2; prefix++) {
        for (ln = 0; ln < 2; ln++) {
            snprintf(alt, sizeof(alt), "%s%s%s", pfx,
                     prefix ? "bert." : "", name);
            if (ln) {
                len = strlen(alt);
                if (len > 16
                    && strcmp(alt + len - 16, "LayerNorm.weight") == 0)
                {
                    strcpy(alt + len - 6, "gamma");
                } else if (len > 14
                           && strcmp(alt + len - 14, "LayerNorm.bias") == 0)
                {
                    strcpy(alt + len - 4, "beta");
                } else {
                    continue;
                }
            }
            t = aiserve_st_find(st, alt);
            if (t != NULL) {
                return t;
            }
        }
    }
    return NULL;
}


const aiserve_st_tensor_t *
aiserve_model_find_tensor(const aiserve_st_file_t *st, const char *name)
{
    return aiserve_find_tensor(st, "", name);
}


/*
 * The F32 data of tensor NAME with shape [d0] (d1 == 0) or [d0, d1].
 * F32 tensors are used in place in the read-only mapping (shared by every
 * process that maps the file).  F16/BF16 tensors are converted to F32 once,
 * here: nginx loads models in the master before it forks, so this copy is
 * shared copy-on-write by all workers and never written again.
 */
static const float *
aiserve_weight_from(aiserve_model_t *m, const aiserve_st_file_t *st,
    const char *pfx, const char *name, size_t d0, size_t d1, char *err,
    size_t err_len)
{
    const aiserve_st_tensor_t  *t;
    float                      *f;
    size_t                      ndim = d1 ? 2 : 1;

    t = aiserve_find_tensor(st, pfx, name);
    if (t == NULL) {
        aiserve_err(err, err_len, "%s: tensor \"%s%s\" is missing (also "
                    "looked for %sbert.%s and LayerNorm gamma/beta names)",
                    st->path ? st->path : "?", pfx, name, pfx, name);
        return NULL;
    }
    if (t->ndim != ndim || t->shape[0] != d0 || (d1 && t->shape[1] != d1)) {
        char    got[128];
        size_t  i, off = 0;

        got[0] = '\0';
        for (i = 0; i < t->ndim && off < sizeof(got) - 24; i++) {
            off += (size_t) snprintf(got + off, sizeof(got) - off, "%s%zu",
                                     i ? ", " : "", t->shape[i]);
        }
        if (d1) {
            aiserve_err(err, err_len, "%s: tensor \"%s\" has shape [%s], "
                        "config.json implies [%zu, %zu]", st->path,
                        t->name, got, d0, d1);
        } else {
            aiserve_err(err, err_len, "%s: tensor \"%s\" has shape [%s], "
                        "config.json implies [%zu]", st->path, t->name,
                        got, d0);
        }
        return NULL;
    }
    if (t->dtype == AISERVE_ST_F32 && ((uintptr_t) t->data & 3) == 0) {
        return (const float *) t->data;
    }
    if (t->dtype != AISERVE_ST_F32 && t->dtype != AISERVE_ST_F16
        && t->dtype != AISERVE_ST_BF16)
    {
        aiserve_err(err, err_len, "%s: tensor \"%s\" has dtype %s (F32, F16 "
                    "or BF16 expected)", st->path, t->name,
                    aiserve_st_dtype_name(t->dtype));
        return NULL;
    }
    f = malloc(t->n_elements * sizeof(float) + 1);
    if (f == NULL || aiserve_own(m, f) != 0) {
        free(f);
        aiserve_err(err, err_len, "%s: out of memory converting \"%s\"",
                    st->path, t->name);
        return NULL;
    }
    aiserve_st_to_f32(t->dtype, t->data, f, t->n_elements);
    return f;
}


/* aiserve_weight_from() on the model's own file. */
static const float *
aiserve_weight(aiserve_model_t *m, const char *name, size_t d0, size_t d1,
    char *err, size_t err_len)
{
    return aiserve_weight_from(m, m->st, m->prefix ? m->prefix : "", name,
                               d0, d1, err, err_len);
}


/*
 * *dst = [a; b; c], each N floats: the query, key and value weights (or
 * biases) of a layer stacked for one product.  A copy made once at load;
 * in nginx that is the master, before fork(), so the workers share it
 * copy-on-write.
 */
static int
aiserve_stack3(aiserve_model_t *m, const float **dst, const float *a,
    const float *b, const float *c, size_t n)
{
    float  *f = malloc(3 * n * sizeof(float));

    if (f == NULL || aiserve_own(m, f) != 0) {
        free(f);
        return -1;
    }
    memcpy(f, a, n * sizeof(float));
    memcpy(f + n, b, n * sizeof(float));
    memcpy(f + 2 * n, c, n * sizeof(float));
    *dst = f;
    return 0;
}


static int
aiserve_load_weights(aiserve_model_t *m, char *err, size_t err_len)
{
    aiserve_model_info_t  *info = &m->info;
    size_t                 H = info->hidden_size, I = info->intermediate_size;
    size_t                 l, nl = info->num_labels;
    const float           *q_w, *q_b, *k_w, *k_b, *v_w, *v_b;
    char                   p[128];

#define W(dst, name, d0, d1) \
    if (((dst) = aiserve_weight(m, name, d0, d1, err, err_len)) == NULL) { \
        return -1; \
    }
#define LW(dst, suffix, d0, d1) \
    snprintf(p, sizeof(p), "encoder.layer.%zu.%s", l, suffix); \
    W(dst, p, d0, d1)

    W(m->word_emb, "embeddings.word_embeddings.weight", info->vocab_size, H);
    W(m->pos_emb, "embeddings.position_embeddings.weight",
      info->max_position_embeddings, H);
    W(m->type_emb, "embeddings.token_type_embeddings.weight",
      info->type_vocab_size, H);
    W(m->emb_ln_g, "embeddings.LayerNorm.weight", H, 0);
    W(m->emb_ln_b, "embeddings.LayerNorm.bias", H, 0);

    m->layers = calloc(info->num_hidden_layers, sizeof(aiserve_layer_t));
    if (m->layers == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    for (l = 0; l < info->num_hidden_layers; l++) {
        aiserve_layer_t  *L = &m->layers[l];

        LW(q_w, "attention.self.query.weight", H, H);
        LW(q_b, "attention.self.query.bias", H, 0);
        LW(k_w, "attention.self.key.weight", H, H);
        LW(k_b, "attention.self.key.bias", H, 0);
        LW(v_w, "attention.self.value.weight", H, H);
        LW(v_b, "attention.self.value.bias", H, 0);
        if (aiserve_stack3(m, &L->qkv_w, q_w, k_w, v_w, H * H) != 0
            || aiserve_stack3(m, &L->qkv_b, q_b, k_b, v_b, H) != 0)
        {
            aiserve_err(err, err_len, "out of memory");
            return -1;
        }
        LW(L->ao_w, "attention.output.dense.weight", H, H);
        LW(L->ao_b, "attention.output.dense.bias", H, 0);
        LW(L->ao_ln_g, "attention.output.LayerNorm.weight", H, 0);
        LW(L->ao_ln_b, "attention.output.LayerNorm.bias", H, 0);
        LW(L->i_w, "intermediate.dense.weight", I, H);
        LW(L->i_b, "intermediate.dense.bias", I, 0);
        LW(L->o_w, "output.dense.weight", H, I);
        LW(L->o_b, "output.dense.bias", H, 0);
        LW(L->o_ln_g, "output.LayerNorm.weight", H, 0);
        LW(L->o_ln_b, "output.LayerNorm.bias", H, 0);
    }

    if (info->arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION) {
        W(m->pool_w, "pooler.dense.weight", H, H);
        W(m->pool_b, "pooler.dense.bias", H, 0);
    }
    if (info->arch != AISERVE_ARCH_BERT_MODEL) {
        W(m->cls_w, "classifier.weight", nl, H);
        W(m->cls_b, "classifier.bias", nl, 0);
    }

#undef LW
#undef W
    return 0;
}


/*
 * Done with N floats at W, unpacked: an own copy is freed; in the mapped
 * file, the whole pages inside it leave this process's resident set
 * (MADV_DONTNEED on a read-only private file mapping drops the page
 * table entries only: the page cache keeps the data, a later read would
 * fault it back in).  Query, key and value were read only for stacking
 * and stay resident, which is a few MB.
 */
static void
aiserve_drop_mapped(aiserve_model_t *m, const float *w, size_t n)
{
    uintptr_t  lo, hi, page = (uintptr_t) sysconf(_SC_PAGESIZE);
    uintptr_t  base = (uintptr_t) m->st->map;

    if (m->st->map == NULL || (uintptr_t) w < base
        || (uintptr_t) w >= base + m->st->map_len)
    {
        aiserve_disown(m, w);
        return;
    }
    lo = ((uintptr_t) w + page - 1) / page * page;
    hi = ((uintptr_t) (w + n)) / page * page;
    if (hi > lo) {
        (void) madvise((void *) lo, hi - lo, MADV_DONTNEED);
    }
}


/*
 * Packs every layer's four nn.Linear weights (QKV [3H, H], attention
 * output [H, H], intermediate [I, H], output [H, I]) into oneDNN's layout
 * for aiserve_gemm_packed(), in one 2 MiB-aligned allocation that the
 * kernel may back with huge pages (MiniLM: 42 MB, so the TLB covers it).
 * Made once at load; nginx loads in the master before fork(), so the
 * workers share it copy-on-write and never write it.  M->dtype BF16 packs
 * them in bf16 (half the bytes; aiserve_gemm_layout_dtype()).  The
 * unpacked copies the model owns (stacked QKV, F16/BF16 conversions) are freed; the
 * mapped file stays.  Nothing is packed with AISERVE_GEMM=blas in the
 * environment (the OpenBLAS path, kept for A/B benchmarks and for the
 * tests of that path).
 */
static int
aiserve_pack_weights(aiserve_model_t *m, char *err, size_t err_len)
{
    const aiserve_model_info_t  *info = &m->info;
    size_t                       H = info->hidden_size;
    size_t                       I = info->intermediate_size;
    size_t                       nl = info->num_labels;
    size_t                       shape[6][2] = { { 3 * H, H }, { H, H },
                                                 { I, H }, { H, I },
                                                 { H, H }, { nl, H } };
    size_t                       per = 0, heads = 0, l, j, off;
    int                          pool = info->arch
                                        == AISERVE_ARCH_SEQUENCE_CLASSIFICATION;
    int                          cls = info->arch != AISERVE_ARCH_BERT_MODEL;
    const char                  *env = getenv("AISERVE_GEMM");
    void                        *mem;

    if (env != NULL && strcmp(env, "blas") == 0) {
        if (m->dtype == AISERVE_DTYPE_BF16) {
            aiserve_err(err, err_len, "%s: dtype bf16 needs the oneDNN "
                        "path, not AISERVE_GEMM=blas", m->st_name);
            return -1;
        }
        return 0;
    }
    /* the layers' four weights, and the heads the architecture has: those
     * packed too, a sequence's logits do not depend on the other
     * sequences of its batch (a BLAS splits a product by its rows
     * differently for different row counts) */
    for (j = 0; j < 6; j++) {
        if ((j == 4 && !pool) || (j == 5 && !cls)) {
            continue;
        }
        if (aiserve_gemm_layout_dtype(shape[j][0], shape[j][1], m->dtype,
                                      &m->layouts[j], err, err_len) != 0)
        {
            return -1;
        }
        *(j < 4 ? &per : &heads) += (m->layouts[j].bytes + 63) / 64 * 64;
    }
    m->packed_bytes = per * info->num_hidden_layers + heads;
    if (m->packed_bytes >= AISERVE_HUGE_PAGE) {
        /* whole huge pages; smaller models keep their size */
        m->packed_bytes = (m->packed_bytes + AISERVE_HUGE_PAGE - 1)
                          / AISERVE_HUGE_PAGE * AISERVE_HUGE_PAGE;
    }
    m->pw = calloc(4 * info->num_hidden_layers, sizeof(aiserve_gemm_w_t));
    if (m->pw == NULL
        || posix_memalign(&mem, m->packed_bytes >= AISERVE_HUGE_PAGE
                                ? AISERVE_HUGE_PAGE : 64,
                          m->packed_bytes) != 0)
    {
        aiserve_err(err, err_len, "%s: out of memory packing the weights "
                    "(%zu bytes)", m->st_name, m->packed_bytes);
        return -1;
    }
#ifdef MADV_HUGEPAGE
    (void) madvise(mem, m->packed_bytes, MADV_HUGEPAGE);
#endif
    m->packed = mem;

    for (l = 0, off = 0; l < info->num_hidden_layers; l++) {
        aiserve_layer_t   *L = &m->layers[l];
        const float       *w[4] = { L->qkv_w, L->ao_w, L->i_w, L->o_w };
        aiserve_gemm_w_t  *pw = m->pw + 4 * l;

        for (j = 0; j < 4; j++) {
            if (aiserve_gemm_pack(&m->layouts[j], w[j], (char *) mem + off,
                                  &pw[j], err, err_len) != 0)
            {
                return -1;
            }
            off += (m->layouts[j].bytes + 63) / 64 * 64;
        }
        L->qkv_p = &pw[0];
        L->ao_p = &pw[1];
        L->i_p = &pw[2];
        L->o_p = &pw[3];

        aiserve_disown(m, L->qkv_w);
        aiserve_drop_mapped(m, L->ao_w, H * H);
        aiserve_drop_mapped(m, L->i_w, I * H);
        aiserve_drop_mapped(m, L->o_w, H * I);
        L->qkv_w = L->ao_w = L->i_w = L->o_w = NULL;
    }
    if (pool) {
        if (aiserve_gemm_pack(&m->layouts[4], m->pool_w, (char *) mem + off,
                              &m->pool_p, err, err_len) != 0)
        {
            return -1;
        }
        off += (m->layouts[4].bytes + 63) / 64 * 64;
    }
    if (cls && aiserve_gemm_pack(&m->layouts[5], m->cls_w, (char *) mem + off,
                                 &m->cls_p, err, err_len) != 0)
    {
        return -1;
    }
    return 0;
}


int
aiserve_model_read_config(const char *model_dir, aiserve_model_info_t *info,
    char *err, size_t err_len)
{
    aiserve_model_t  *m;
    json_t           *cfg;
    int               rc = -1;

    memset(info, 0, sizeof(*info));
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    cfg = aiserve_load_json(model_dir, "config.json", 1, err, err_len);
    if (cfg != NULL) {
        rc = aiserve_parse_config(m, cfg, model_dir, err, err_len);
        json_decref(cfg);
    }
    *info = m->info;
    m->info.id2label = NULL;
    if (rc != 0) {
        aiserve_model_info_clear(info);
    }
    aiserve_model_free(m);
    return rc;
}


void
aiserve_model_info_clear(aiserve_model_info_t *info)
{
    size_t  i;

    if (info->id2label != NULL) {
        for (i = 0; i < info->num_labels; i++) {
            free(info->id2label[i]);
        }
        free(info->id2label);
    }
    info->id2label = NULL;
}


/* --- heads and adapters over a shared base ---------------------------- */

/* Packs W [n, k] with LAYOUT into 64-byte aligned memory the model owns. */
static int
aiserve_pack_own(aiserve_model_t *m, const aiserve_gemm_layout_t *layout,
    const float *w, aiserve_gemm_w_t *dst, char *err, size_t err_len)
{
    void  *mem;

    if (posix_memalign(&mem, 64, (layout->bytes + 63) / 64 * 64) != 0) {
        aiserve_err(err, err_len, "out of memory packing a weight");
        return -1;
    }
    if (aiserve_own(m, mem) != 0) {
        free(mem);
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    return aiserve_gemm_pack(layout, w, mem, dst, err, err_len);
}


/* The head of M from its own file: the pooler of a sequence classifier
 * (else the base checkpoint's) and the classifier, packed when the base's
 * weights are. */
static int
aiserve_load_head_over(aiserve_model_t *m, char *err, size_t err_len)
{
    const aiserve_model_t  *b = m->base;
    size_t                  H = m->info.hidden_size, nl = m->info.num_labels;
    const char             *pfx = m->prefix;

    if (m->info.arch == AISERVE_ARCH_BERT_MODEL) {
        return 0;
    }
    if (m->info.arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION) {
        const aiserve_st_file_t  *st = m->st;

        if (aiserve_find_tensor(st, pfx, "pooler.dense.weight") == NULL) {
            st = b->st;
            pfx = "";
        }
        m->pool_w = aiserve_weight_from(m, st, pfx, "pooler.dense.weight",
                                        H, H, err, err_len);
        m->pool_b = aiserve_weight_from(m, st, pfx, "pooler.dense.bias", H,
                                        0, err, err_len);
        if (m->pool_w == NULL || m->pool_b == NULL) {
            return -1;
        }
    }
    m->cls_w = aiserve_weight(m, "classifier.weight", nl, H, err, err_len);
    m->cls_b = aiserve_weight(m, "classifier.bias", nl, 0, err, err_len);
    if (m->cls_w == NULL || m->cls_b == NULL) {
        return -1;
    }
    if (b->packed == NULL) {
        return 0;                           /* AISERVE_GEMM=blas */
    }
    m->dtype = b->dtype;
    if (m->pool_w != NULL
        && (aiserve_gemm_layout_dtype(H, H, m->dtype, &m->layouts[4], err,
                                      err_len) != 0
            || aiserve_pack_own(m, &m->layouts[4], m->pool_w, &m->pool_p,
                                err, err_len) != 0))
    {
        return -1;
    }
    if (aiserve_gemm_layout_dtype(nl, H, m->dtype, &m->layouts[5], err,
                                  err_len) != 0
        || aiserve_pack_own(m, &m->layouts[5], m->cls_w, &m->cls_p, err,
                            err_len) != 0)
    {
        return -1;
    }
    return 0;
}


/* The Linears LoRA may adapt (peft's module names in a BERT layer): the
 * first three run unmerged (aiserve_lora_qkv()), the others are merged
 * into a copy of their packed weight (index 1, 2, 3 of a layer's four). */
static const char  *aiserve_lora_linears[] = {
    "attention.self.query", "attention.self.key", "attention.self.value",
    "attention.output.dense", "intermediate.dense", "output.dense"
};

#define AISERVE_LORA_N_LINEARS \
    (sizeof(aiserve_lora_linears) / sizeof(aiserve_lora_linears[0]))


/* adapter_config.json: peft's LoraConfig, plain LoRA only; the scaling
 * lora_alpha / r (lora_alpha / sqrt(r) with use_rslora). */
static int
aiserve_lora_config(const char *dir, size_t *r, float *scale, char *err,
    size_t err_len)
{
    json_t      *c;
    const char  *s;
    double       alpha;
    int          rc = -1;

    c = aiserve_load_json(dir, "adapter_config.json", 1, err, err_len);
    if (c == NULL) {
        return -1;
    }
    s = aiserve_cfg_string(c, "peft_type", "");
    if (strcmp(s, "LORA") != 0) {
        aiserve_err(err, err_len, "%s/adapter_config.json: peft_type \"%s\" "
                    "is not supported (LORA)", dir, s);
        goto done;
    }
    if (json_is_true(json_object_get(c, "use_dora"))
        || json_is_true(json_object_get(c, "fan_in_fan_out"))
        || strcmp(aiserve_cfg_string(c, "bias", "none"), "none") != 0
        || json_object_size(json_object_get(c, "rank_pattern")) > 0
        || json_object_size(json_object_get(c, "alpha_pattern")) > 0)
    {
        aiserve_err(err, err_len, "%s/adapter_config.json: only plain LoRA "
                    "is supported (no use_dora, fan_in_fan_out, bias, "
                    "rank_pattern or alpha_pattern)", dir);
        goto done;
    }
    if (!json_is_integer(json_object_get(c, "r"))
        || json_integer_value(json_object_get(c, "r")) <= 0
        || !json_is_number(json_object_get(c, "lora_alpha")))
    {
        aiserve_err(err, err_len, "%s/adapter_config.json: r must be a "
                    "positive integer and lora_alpha a number", dir);
        goto done;
    }
    *r = (size_t) json_integer_value(json_object_get(c, "r"));
    alpha = json_number_value(json_object_get(c, "lora_alpha"));
    *scale = (float) (json_is_true(json_object_get(c, "use_rslora"))
                      ? alpha / sqrt((double) *r) : alpha / (double) *r);
    rc = 0;

done:
    json_decref(c);
    return rc;
}


/*
 * Linear J (3, 4 or 5 of aiserve_lora_linears) of layer L with its LoRA
 * matrices A [r, in] and B [out, r] merged into a copy of the base's
 * weight, W + scale B A (peft's merge), packed like the base's.
 */
static int
aiserve_lora_merge(aiserve_model_t *m, size_t l, size_t j, const float *A,
    const float *B, size_t r, float scale, char *err, size_t err_len)
{
    const aiserve_model_t  *b = m->base;
    aiserve_layer_t        *L = &m->layers[l];
    size_t                  H = m->info.hidden_size;
    size_t                  I = m->info.intermediate_size;
    size_t                  p = j - 2, out_f, in_f, o, i, k;
    const float            *base_w;
    const float           **unpacked[4] = { NULL, &L->ao_w, &L->i_w,
                                            &L->o_w };
    const aiserve_gemm_w_t **packed[4] = { NULL, &L->ao_p, &L->i_p, &L->o_p };
    float                  *w;
    char                    name[160];

    out_f = p == 2 ? I : H;
    in_f = p == 3 ? I : H;
    snprintf(name, sizeof(name), "encoder.layer.%zu.%s.weight", l,
             aiserve_lora_linears[j]);
    base_w = aiserve_weight_from(m, b->st, "", name, out_f, in_f, err,
                                 err_len);
    w = base_w ? malloc(out_f * in_f * sizeof(float)) : NULL;
    if (w == NULL || aiserve_own(m, w) != 0) {
        free(w);
        if (base_w != NULL) {
            aiserve_err(err, err_len, "out of memory");
        }
        return -1;
    }
    for (o = 0; o < out_f; o++) {
        for (i = 0; i < in_f; i++) {
            float  d = 0;

            for (k = 0; k < r; k++) {
                d += B[o * r + k] * A[k * in_f + i];
            }
            w[o * in_f + i] = base_w[o * in_f + i] + scale * d;
        }
    }
    if (b->packed == NULL) {                      /* AISERVE_GEMM=blas */
        *unpacked[p] = w;
        return 0;
    }
    if (aiserve_pack_own(m, &b->layouts[p], w, &m->pw[4 * l + p], err,
                         err_len) != 0)
    {
        return -1;
    }
    aiserve_disown(m, w);
    *packed[p] = &m->pw[4 * l + p];
    return 0;
}


/*
 * The LoRA adapter of M: on query, key and value it runs beside the
 * base's weights (aiserve_lora_qkv(); its matrices are read in place from
 * the adapter's mapping); on the other Linears it is merged into copies
 * of the base's weights (aiserve_lora_merge()).  Every weight the adapter
 * does not touch stays the base's.
 */
static int
aiserve_load_lora_over(aiserve_model_t *m, const char *dir, char *err,
    size_t err_len)
{
    size_t        H = m->info.hidden_size;
    size_t        I = m->info.intermediate_size;
    size_t        r, l, j, in_f, out_f, n_adapted = 0;
    const float  *A, *B;
    float         scale;
    char          name[160];

    if (aiserve_lora_config(dir, &r, &scale, err, err_len) != 0) {
        return -1;
    }
    m->pw = calloc(4 * m->info.num_hidden_layers, sizeof(aiserve_gemm_w_t));
    if (m->pw == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    for (l = 0; l < m->info.num_hidden_layers; l++) {
        aiserve_layer_t  *L = &m->layers[l];

        for (j = 0; j < AISERVE_LORA_N_LINEARS; j++) {
            snprintf(name, sizeof(name), "encoder.layer.%zu.%s.lora_A.weight",
                     l, aiserve_lora_linears[j]);
            if (aiserve_find_tensor(m->st, m->prefix, name) == NULL) {
                continue;
            }
            out_f = j == 4 ? I : H;
            in_f = j == 5 ? I : H;
            A = aiserve_weight(m, name, r, in_f, err, err_len);
            snprintf(name, sizeof(name), "encoder.layer.%zu.%s.lora_B.weight",
                     l, aiserve_lora_linears[j]);
            B = A ? aiserve_weight(m, name, out_f, r, err, err_len) : NULL;
            if (B == NULL) {
                return -1;
            }
            if (j < 3) {
                L->lora_a[j] = A;
                L->lora_b[j] = B;
                L->lora_r = r;
                L->lora_scale = scale;
            } else if (aiserve_lora_merge(m, l, j, A, B, r, scale, err,
                                          err_len) != 0)
            {
                return -1;
            }
            n_adapted++;
        }
    }
    if (n_adapted == 0) {
        aiserve_err(err, err_len, "%s: no lora_A / lora_B tensors of the "
                    "encoder's layers", m->st_name);
        return -1;
    }
    return 0;
}


aiserve_model_t *
aiserve_model_load_over(const aiserve_model_t *base, const char *dir,
    char *err, size_t err_len)
{
    const aiserve_model_info_t  *bi = &base->info, *mi;
    aiserve_model_t             *m;
    json_t                      *cfg;
    char                         path[4096];
    struct stat                  sb;
    int                          lora;

    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return NULL;
    }
    m->base = base;
    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
    lora = stat(path, &sb) == 0;
    m->prefix = lora ? "base_model.model." : "";
    if (!lora) {
        snprintf(path, sizeof(path), "%s/head.safetensors", dir);
    }

    cfg = aiserve_load_json(dir, "config.json", 1, err, err_len);
    if (cfg == NULL) {
        goto fail;
    }
    if (aiserve_parse_config(m, cfg, dir, err, err_len) != 0) {
        json_decref(cfg);
        goto fail;
    }
    json_decref(cfg);
    mi = &m->info;
    if (mi->hidden_size != bi->hidden_size
        || mi->num_hidden_layers != bi->num_hidden_layers
        || mi->num_attention_heads != bi->num_attention_heads
        || mi->intermediate_size != bi->intermediate_size
        || mi->vocab_size != bi->vocab_size
        || mi->max_position_embeddings != bi->max_position_embeddings
        || mi->type_vocab_size != bi->type_vocab_size
        || m->act != base->act)
    {
        aiserve_err(err, err_len, "%s/config.json: the encoder's sizes or "
                    "hidden_act differ from those of the base it names",
                    dir);
        goto fail;
    }
    if (!lora && mi->arch == AISERVE_ARCH_BERT_MODEL) {
        aiserve_err(err, err_len, "%s/config.json: a head-only directory "
                    "needs a task architecture", dir);
        goto fail;
    }
    m->info.pooling = bi->pooling;
    m->info.normalize = bi->normalize;

    m->st = aiserve_st_open(path, err, err_len);
    if (m->st == NULL) {
        goto fail;
    }
    m->st_name = m->st->path;

    /* the base's encoder, borrowed */
    m->word_emb = base->word_emb;
    m->pos_emb = base->pos_emb;
    m->type_emb = base->type_emb;
    m->emb_ln_g = base->emb_ln_g;
    m->emb_ln_b = base->emb_ln_b;
    m->layers = malloc(bi->num_hidden_layers * sizeof(aiserve_layer_t));
    if (m->layers == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto fail;
    }
    memcpy(m->layers, base->layers,
           bi->num_hidden_layers * sizeof(aiserve_layer_t));

    if ((lora && aiserve_load_lora_over(m, dir, err, err_len) != 0)
        || aiserve_load_head_over(m, err, err_len) != 0)
    {
        goto fail;
    }
    return m;

fail:
    aiserve_model_free(m);
    return NULL;
}


/* The base named by a head-only directory's config.json or an adapter's
 * adapter_config.json ("base_model_name_or_path"), into BASE. */
static int
aiserve_base_of(const char *dir, char *base, size_t len, char *err,
    size_t err_len)
{
    json_t       *c;
    const char   *file, *s;
    char          path[4096];
    struct stat   sb;

    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
    file = stat(path, &sb) == 0 ? "adapter_config.json" : "config.json";
    c = aiserve_load_json(dir, file, 1, err, err_len);
    if (c == NULL) {
        return -1;
    }
    s = aiserve_cfg_string(c, "base_model_name_or_path", NULL);
    if (s == NULL || s[0] == '\0') {
        aiserve_err(err, err_len, "%s/%s: \"base_model_name_or_path\" is "
                    "missing", dir, file);
        json_decref(c);
        return -1;
    }
    snprintf(base, len, "%s", s);
    json_decref(c);
    return 0;
}


/* A head-only or adapter directory with its own copy of the base, its
 * products in DTYPE. */
static aiserve_model_t *
aiserve_model_load_own_base(const char *dir, aiserve_dtype_e dtype,
    char *err, size_t err_len)
{
    aiserve_model_t  *base, *m;
    char              base_dir[4096];

    if (aiserve_base_of(dir, base_dir, sizeof(base_dir), err, err_len) != 0)
    {
        return NULL;
    }
    base = aiserve_model_load_packed(base_dir, dtype, err, err_len);
    if (base == NULL) {
        return NULL;
    }
    m = aiserve_model_load_over(base, dir, err, err_len);
    if (m == NULL) {
        aiserve_model_free(base);
        return NULL;
    }
    m->owned_base = base;
    return m;
}


aiserve_model_t *
aiserve_model_load(const char *model_dir, char *err, size_t err_len)
{
    return aiserve_model_load_packed(model_dir, AISERVE_DTYPE_FP32, err,
                                     err_len);
}


aiserve_model_t *
aiserve_model_load_packed(const char *model_dir, aiserve_dtype_e dtype,
    char *err, size_t err_len)
{
    aiserve_model_t  *m;
    const char       *isa;
    json_t           *cfg;
    char              path[4096];
    struct stat       sb;
    int               over;

    snprintf(path, sizeof(path), "%s/model.safetensors", model_dir);
    if (stat(path, &sb) != 0 && errno == ENOENT) {
        snprintf(path, sizeof(path), "%s/head.safetensors", model_dir);
        over = stat(path, &sb) == 0;
        snprintf(path, sizeof(path), "%s/adapter_model.safetensors",
                 model_dir);
        over |= stat(path, &sb) == 0;
        if (over) {
            return aiserve_model_load_own_base(model_dir, dtype, err,
                                               err_len);
        }
    }

    if (dtype != AISERVE_DTYPE_FP32 && dtype != AISERVE_DTYPE_BF16) {
        aiserve_err(err, err_len, "%s: dtype %s is not a packing format "
                    "(fp32 or bf16)", model_dir, aiserve_dtype_name(dtype));
        return NULL;
    }
    if (dtype == AISERVE_DTYPE_BF16 && !aiserve_gemm_bf16_native(&isa)) {
        aiserve_err(err, err_len, "dtype bf16 needs a CPU with AVX512-BF16 "
                    "or AMX, this one has %s", isa);
        return NULL;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return NULL;
    }
    m->dtype = dtype;

    cfg = aiserve_load_json(model_dir, "config.json", 1, err, err_len);
    if (cfg == NULL) {
        goto fail;
    }
    if (aiserve_parse_config(m, cfg, model_dir, err, err_len) != 0) {
        json_decref(cfg);
        goto fail;
    }
    json_decref(cfg);

    if (m->info.arch == AISERVE_ARCH_BERT_MODEL
        && aiserve_parse_modules(m, model_dir, err, err_len) != 0)
    {
        goto fail;
    }

    snprintf(path, sizeof(path), "%s/model.safetensors", model_dir);
    m->st = aiserve_st_open(path, err, err_len);
    if (m->st == NULL) {
        goto fail;
    }
    m->st_name = m->st->path;

    if (aiserve_load_weights(m, err, err_len) != 0
        || aiserve_pack_weights(m, err, err_len) != 0)
    {
        goto fail;
    }
    return m;

fail:
    aiserve_model_free(m);
    return NULL;
}


void
aiserve_model_free(aiserve_model_t *m)
{
    size_t  i;

    if (m == NULL) {
        return;
    }
    for (i = 0; i < m->n_owned; i++) {
        free(m->owned[i]);
    }
    free(m->owned);
    free(m->packed);
    free(m->pw);
    for (i = 0; i < 6; i++) {
        aiserve_gemm_layout_free(&m->layouts[i]);
    }
    aiserve_model_info_clear(&m->info);
    free(m->layers);
    aiserve_st_close(m->st);
    aiserve_model_free(m->owned_base);
    free(m);
}


const aiserve_model_info_t *
aiserve_model_info(const aiserve_model_t *model)
{
    return &model->info;
}


aiserve_dtype_e
aiserve_model_dtype(const aiserve_model_t *model)
{
    return model->dtype;
}


size_t
aiserve_model_packed_bytes(const aiserve_model_t *model)
{
    const aiserve_model_t  *b = model->base != NULL ? model->base : model;

    return b->packed_bytes;
}


/* --- scratch ------------------------------------------------------------ */

aiserve_scratch_t *
aiserve_scratch_create(const aiserve_model_t *model, size_t max_tokens,
    char *err, size_t err_len)
{
    aiserve_scratch_t  *s;
    size_t              H = model->info.hidden_size;
    size_t              I = model->info.intermediate_size;

    if (max_tokens == 0 || max_tokens > ((size_t) 1 << 24)) {
        aiserve_err(err, err_len, "scratch: max_tokens %zu out of range",
                    max_tokens);
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        aiserve_err(err, err_len, "scratch: out of memory");
        return NULL;
    }
    s->model = model;
    s->max_tokens = max_tokens;
    s->max_seq = max_tokens < model->info.max_position_embeddings
                 ? max_tokens : model->info.max_position_embeddings;
    s->x = malloc(max_tokens * H * sizeof(float));
    s->qkv = malloc(max_tokens * 3 * H * sizeof(float));
    s->ctx = malloc(max_tokens * H * sizeof(float));
    s->tmp = malloc(max_tokens * H * sizeof(float));
    s->inter = malloc(max_tokens * I * sizeof(float));
    if (s->x == NULL || s->qkv == NULL
        || s->ctx == NULL || s->tmp == NULL || s->inter == NULL)
    {
        aiserve_scratch_free(s);
        aiserve_err(err, err_len, "scratch: out of memory for %zu tokens",
                    max_tokens);
        return NULL;
    }
    return s;
}


void
aiserve_scratch_free(aiserve_scratch_t *s)
{
    size_t  i;

    if (s == NULL) {
        return;
    }
    aiserve_team_free(s->team);
    for (i = 0; i < s->n_scores; i++) {
        free(s->scores[i]);
    }
    free(s->x);
    free(s->qkv);
    free(s->ctx);
    free(s->tmp);
    free(s->inter);
    free(s);
}


/* --- forward ------------------------------------------------------------ */

size_t
aiserve_model_output_len(const aiserve_model_t *model,
    const aiserve_batch_t *batch)
{
    size_t  i, total = 0;

    switch (model->info.arch) {
    case AISERVE_ARCH_SEQUENCE_CLASSIFICATION:
        return batch->n_seqs * model->info.num_labels;
    case AISERVE_ARCH_TOKEN_CLASSIFICATION:
        for (i = 0; i < batch->n_seqs; i++) {
            total += batch->seq_lens[i];
        }
        return total * model->info.num_labels;
    default:
        return batch->n_seqs * model->info.hidden_size;
    }
}


/*
 * One parallel step of the forward pass.  A step's items are blocks of
 * rows (or of output columns) of one operation, or (sequence, head) pairs
 * of attention; every thread runs items until none are left.
 */
typedef enum {
    AISERVE_STEP_GEMM_ROWS = 0,   /* C rows [i*chunk, ...) */
    AISERVE_STEP_GEMM_COLS,       /* C columns [i*chunk, ...) */
    AISERVE_STEP_PACKED_ROWS,     /* packed weight: C rows [i*chunk, ...) */
    AISERVE_STEP_RESIDUAL_LN,     /* bias + residual + LayerNorm, row blocks */
    AISERVE_STEP_EMBED,           /* embeddings + LayerNorm, row blocks */
    AISERVE_STEP_LAYER_TAIL,      /* a layer after attention, row blocks */
    AISERVE_STEP_QKV_ATTENTION,   /* a sequence's QKV rows, then attention */
    AISERVE_STEP_ATTENTION        /* items: sequences x groups of chunk
                                     heads */
} aiserve_step_e;

typedef struct {
    aiserve_step_e          op;
    size_t                  rows, cols, k, chunk;
    const aiserve_gemm_w_t *pw;            /* packed products */
    int                     pact;          /* aiserve_product()'s act */
    const float            *a, *b, *bias, *gamma, *beta;
    float                  *c;
    float                   eps;
    aiserve_act_e           act;
    int                     epilogue;      /* products: AISERVE_EPI_* */

    const aiserve_model_t  *model;         /* attention */
    aiserve_scratch_t      *scratch;
    const aiserve_batch_t  *batch;
    const size_t           *offsets;
    const size_t           *order;         /* attention: longest first */
    const aiserve_layer_t  *layer;         /* LAYER_TAIL */
} aiserve_step_t;


/* What a product step does to its block of C once computed, while the
 * block is still in cache: nothing, + bias, or act(+ bias). */
#define AISERVE_EPI_NONE      0
#define AISERVE_EPI_BIAS      1
#define AISERVE_EPI_BIAS_ACT  2


/* The epilogue on C rows [r0, r0 + nr) x columns [c0, c0 + nc), rows
 * ldc apart. */
static void
aiserve_epilogue(const aiserve_step_t *st, float *c, size_t ldc, size_t r0,
    size_t nr, size_t c0, size_t nc)
{
    size_t  r;

    if (st->epilogue == AISERVE_EPI_NONE) {
        return;
    }
    if (nc == ldc) {
        if (st->epilogue == AISERVE_EPI_BIAS) {
            aiserve_bias_add(c + r0 * ldc, st->bias, nr, nc);
        } else {
            aiserve_bias_act(c + r0 * ldc, st->bias, nr, nc, st->act);
        }
        return;
    }
    for (r = r0; r < r0 + nr; r++) {
        if (st->epilogue == AISERVE_EPI_BIAS) {
            aiserve_bias_add(c + r * ldc + c0, st->bias + c0, 1, nc);
        } else {
            aiserve_bias_act(c + r * ldc + c0, st->bias + c0, 1, nc, st->act);
        }
    }
}


/* aiserve_attention_head() keeps 8 rows of 16-float accumulators in
 * registers, which takes AVX-512's 32 registers; with 16 (AVX2 and
 * below) they spill and two sgemm calls are faster (callgrind: 3 times
 * the instructions). */
static int
aiserve_own_attention(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}


/* Asks for the query, key and value rows of head H of a sequence of L
 * tokens at Q (rows LD floats apart, D floats each) to be brought into
 * L2 while the previous head computes: the rows are 3H floats apart, a
 * stride no hardware prefetcher follows. */
static void
aiserve_attention_prefetch(const float *q, size_t L, size_t ld, size_t H,
    size_t d)
{
    size_t  j, c, part;

    for (j = 0; j < L; j++) {
        for (part = 0; part < 3; part++) {
            for (c = 0; c < d; c += 16) {
                __builtin_prefetch(q + j * ld + part * H + c, 0, 2);
            }
        }
    }
}


/*
 * BertSelfAttention (eager) on packed rows for one sequence and the heads
 * [h0, h1) of item ITEM (st->chunk heads an item): softmax(Q K^T /
 * sqrt(head_dim)) V over the sequence's own tokens, so no padding mask is
 * needed and no masked row can turn into NaN.
 */
static void
aiserve_attention_one(const aiserve_step_t *st, size_t item, float *scores)
{
    const aiserve_model_t  *m = st->model;
    aiserve_scratch_t      *s = st->scratch;
    size_t                  H = m->info.hidden_size, d = m->head_dim;
    size_t                  heads = m->info.num_attention_heads;
    size_t                  groups = (heads + st->chunk - 1) / st->chunk;
    size_t                  seq = st->order[item / groups];
    size_t                  h0 = item % groups * st->chunk, h1, h;
    size_t                  L = st->batch->seq_lens[seq];
    const float            *q0 = s->qkv + st->offsets[seq] * 3 * H, *q;
    float                  *ctx = s->ctx + st->offsets[seq] * H;

    h1 = h0 + st->chunk < heads ? h0 + st->chunk : heads;
    for (h = h0; h < h1; h++) {
        q = q0 + h * d;
        if (h + 1 < h1) {
            aiserve_attention_prefetch(q + d, L, 3 * H, H, d);
        }
#if defined(__x86_64__) && defined(__GNUC__)
        /* a bf16 model (loaded only where the CPU has AVX512-BF16): QK^T
         * and PV as bf16 products too: 1.2x the fp32 kernel's speed at 16
         * tokens, 1.5-1.7x from 64 on (BENCHMARKS.md "bf16 attention") */
        if (m->dtype == AISERVE_DTYPE_BF16 && d % 32 == 0 && d <= 128
            && __builtin_cpu_supports("avx512bf16"))
        {
            aiserve_attention_head_bf16(L, d, q, q + H, q + 2 * H, 3 * H,
                                        1.f / sqrtf((float) d), scores,
                                        ctx + h * d, H);
            continue;
        }
#endif
        if (d % 16 == 0 && d <= 128 && aiserve_own_attention()) {
            aiserve_attention_head(L, d, q, q + H, q + 2 * H, 3 * H,
                                   1.f / sqrtf((float) d), scores,
                                   ctx + h * d, H);
            continue;
        }
        aiserve_gemm_nt(L, L, d, 1.f / sqrtf((float) d), q, 3 * H, q + H,
                        3 * H, 0.f, scores, L);
        aiserve_softmax(scores, L, L);
        aiserve_gemm_nn(L, d, L, scores, L, q + 2 * H, 3 * H, ctx + h * d,
                        H);
    }
}


/*
 * BertEmbeddings for tokens [t0, t0 + n) of the packed batch into st->c:
 * word + token_type + position (absolute, restarting at 0 for every
 * sequence), then LayerNorm.
 */
static void
aiserve_embed_rows(const aiserve_step_t *st, size_t t0, size_t n)
{
    const aiserve_model_t  *m = st->model;
    const aiserve_batch_t  *batch = st->batch;
    size_t                  H = m->info.hidden_size, lo = 0, hi, mid;
    size_t                  seq, t, j, c;
    float                  *row;

    /* the sequence holding token t0: the last offset <= t0 */
    hi = batch->n_seqs;
    while (hi - lo > 1) {
        mid = (lo + hi) / 2;
        if (st->offsets[mid] <= t0) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    seq = lo;
    for (t = t0; t < t0 + n; t++) {
        while (t >= st->offsets[seq] + batch->seq_lens[seq]) {
            seq++;
        }
        j = t - st->offsets[seq];
        {
            const float  *we = m->word_emb
                               + (size_t) batch->input_ids[t] * H;
            const float  *te = m->type_emb
                               + (size_t) (batch->token_type_ids
                                           ? batch->token_type_ids[t] : 0)
                                 * H;
            const float  *pe = m->pos_emb + j * H;

            row = st->c + t * H;
            for (c = 0; c < H; c++) {
                row[c] = (we[c] + te[c]) + pe[c];
            }
        }
    }
    aiserve_layernorm(st->c + t0 * H, m->emb_ln_g, m->emb_ln_b, n, H,
                      m->info.layer_norm_eps);
}


/*
 * C = A W^T (W packed) + bias, then ACT (an aiserve_act_e, or -1 for
 * none) through aiserve_bias_act(), the one GELU of every path (C rows
 * are N = w's columns apart).  THREADS 1 runs it in the calling thread
 * (a step's item); more hands the product to oneDNN's OpenMP team.  The
 * first failure of a forward pass is kept in the scratch, for
 * aiserve_model_forward() to return.
 */
static int
aiserve_product(aiserve_scratch_t *s, size_t m, const float *a, size_t lda,
    const aiserve_gemm_w_t *w, const float *bias, int act, float *c,
    int threads)
{
    char    err[sizeof(s->err)];
    int     zero = 0;
    size_t  n = w->layout.n;

    if (aiserve_gemm_packed(m, a, lda, w, act < 0 ? bias : NULL, c, n,
                            threads, err, sizeof(err)) == 0)
    {
        if (act >= 0) {
            aiserve_bias_act(c, bias, m, n, (aiserve_act_e) act);
        }
        return 0;
    }
    if (__atomic_compare_exchange_n(&s->failed, &zero, 1, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
    {
        memcpy(s->err, err, sizeof(err));
    }
    return -1;
}


/*
 * The rest of a layer after attention, for rows [r0, r0 + n) (rows are
 * independent from here on): BertSelfOutput (dense, LayerNorm of the sum
 * with the input), BertIntermediate (dense + activation), BertOutput
 * (dense, LayerNorm of the sum with the input), with packed weights.  A
 * block's intermediate activations (64 x 1536 floats for MiniLM) stay in
 * L2 from the product that writes them to the one that reads them.
 */
static void
aiserve_layer_tail_rows(const aiserve_step_t *st, size_t r0, size_t n)
{
    const aiserve_model_t  *m = st->model;
    const aiserve_layer_t  *L = st->layer;
    aiserve_scratch_t      *s = st->scratch;
    size_t                  H = m->info.hidden_size;
    size_t                  I = m->info.intermediate_size;
    float                  *x = s->x + r0 * H, *tmp = s->tmp + r0 * H;
    float                  *inter = s->inter + r0 * I;
    float                   eps = m->info.layer_norm_eps;

    if (aiserve_product(s, n, s->ctx + r0 * H, H, L->ao_p, NULL, -1, tmp,
                        1) != 0)
    {
        return;
    }
    aiserve_residual_layernorm(x, tmp, L->ao_b, L->ao_ln_g, L->ao_ln_b, n, H,
                               eps);
    if (aiserve_product(s, n, x, H, L->i_p, L->i_b, (int) m->act, inter, 1)
        != 0
        || aiserve_product(s, n, inter, I, L->o_p, NULL, -1, tmp, 1) != 0)
    {
        return;
    }
    aiserve_residual_layernorm(x, tmp, L->o_b, L->o_ln_g, L->o_ln_b, n, H,
                               eps);
}


/*
 * peft's unmerged LoRA on the query, key and value rows just computed:
 * QKV[:, kH:(k+1)H] += lora_scale * (X A_k^T) B_k^T for N rows of X (H
 * floats a row) and QKV (3H), with TMP [N, r] of room (LoRA's Linear
 * forward: base_layer(x) + lora_B(lora_A(x)) * scaling).
 */
static void
aiserve_lora_qkv(const aiserve_layer_t *L, size_t H, size_t n,
    const float *x, float *qkv, float *tmp)
{
    size_t  k;

    for (k = 0; k < 3; k++) {
        if (L->lora_a[k] == NULL) {
            continue;
        }
        aiserve_gemm_nt(n, L->lora_r, H, 1.f, x, H, L->lora_a[k], H, 0.f,
                        tmp, L->lora_r);
        aiserve_gemm_nt(n, H, L->lora_r, L->lora_scale, tmp, L->lora_r,
                        L->lora_b[k], L->lora_r, 1.f, qkv + k * H, 3 * H);
    }
}


/* The query, key and value projections of sequence st->order[item]
 * (packed weight), then its attention over all heads. */
static void
aiserve_qkv_attention(const aiserve_step_t *st, size_t item, float *scores)
{
    const aiserve_model_t  *m = st->model;
    aiserve_scratch_t      *s = st->scratch;
    size_t                  H = m->info.hidden_size;
    size_t                  seq = st->order[item];
    size_t                  off = st->offsets[seq];

    if (aiserve_product(s, st->batch->seq_lens[seq], s->x + off * H, H,
                        st->layer->qkv_p, st->layer->qkv_b, -1,
                        s->qkv + off * 3 * H, 1) == 0)
    {
        if (st->layer->lora_r > 0) {
            /* s->tmp is free until the layer's tail; this sequence's rows
             * of it are its own */
            aiserve_lora_qkv(st->layer, H, st->batch->seq_lens[seq],
                             s->x + off * H, s->qkv + off * 3 * H,
                             s->tmp + off * H);
        }
        aiserve_attention_one(st, item, scores);
    }
}


static void
aiserve_step_item(void *arg, size_t item, int thread)
{
    const aiserve_step_t  *st = arg;
    size_t                 r0, n;

    if (st->op == AISERVE_STEP_ATTENTION) {
        aiserve_attention_one(st, item, st->scratch->scores[thread]);
        return;
    }
    if (st->op == AISERVE_STEP_QKV_ATTENTION) {
        aiserve_qkv_attention(st, item, st->scratch->scores[thread]);
        return;
    }

    r0 = item * st->chunk;
    n = st->op == AISERVE_STEP_GEMM_COLS ? st->cols : st->rows;
    n = n - r0 < st->chunk ? n - r0 : st->chunk;

    switch (st->op) {
    case AISERVE_STEP_PACKED_ROWS:
        (void) aiserve_product(st->scratch, n, st->a + r0 * st->k, st->k,
                               st->pw, st->bias, st->pact,
                               st->c + r0 * st->cols, 1);
        break;
    case AISERVE_STEP_GEMM_ROWS:
        aiserve_gemm_nt(n, st->cols, st->k, 1.f, st->a + r0 * st->k, st->k,
                        st->b, st->k, 0.f, st->c + r0 * st->cols, st->cols);
        aiserve_epilogue(st, st->c, st->cols, r0, n, 0, st->cols);
        break;
    case AISERVE_STEP_GEMM_COLS:
        aiserve_gemm_nt(st->rows, n, st->k, 1.f, st->a, st->k,
                        st->b + r0 * st->k, st->k, 0.f, st->c + r0,
                        st->cols);
        aiserve_epilogue(st, st->c, st->cols, 0, st->rows, r0, n);
        break;
    case AISERVE_STEP_RESIDUAL_LN:
        aiserve_residual_layernorm(st->c + r0 * st->cols,
                                   st->a + r0 * st->cols, st->bias,
                                   st->gamma, st->beta, n, st->cols,
                                   st->eps);
        break;
    case AISERVE_STEP_EMBED:
        aiserve_embed_rows(st, r0, n);
        break;
    case AISERVE_STEP_LAYER_TAIL:
        aiserve_layer_tail_rows(st, r0, n);
        break;
    case AISERVE_STEP_ATTENTION:
    case AISERVE_STEP_QKV_ATTENTION:
        break;
    }
}


/* Splits N units into items of a multiple of ALIGN units, about PER_THREAD
 * items per thread; returns the item size. */
static size_t
aiserve_chunk(size_t n, int threads, size_t per_thread, size_t align)
{
    size_t  items = (size_t) threads * per_thread, chunk;

    chunk = (n + items - 1) / items;
    chunk = (chunk + align - 1) / align * align;
    return chunk ? chunk : align;
}


/* Work below this many multiply-adds runs in the caller alone: waking the
 * team costs more than it saves. */
#define AISERVE_PAR_MIN_MACS  ((size_t) 1 << 20)

/* Rows per item of a layer's tail (aiserve_layer_tail_rows()): a block's
 * outputs (64 x 1536 floats of intermediate activations for MiniLM,
 * 384 KiB) stay in L2 from one product to the next. */
#define AISERVE_FUSED_ROWS  64

/* Below this many tokens a forward pass is a chain of short steps (a
 * 16-token pass starts one every few tens of microseconds), and the team
 * polls between them rather than sleeping. */
#define AISERVE_SMALL_T  48


/* Heads per attention item: all of a sequence's when that leaves at
 * least 8 items a thread, fewer otherwise. */
static size_t
aiserve_attention_chunk(size_t n_seqs, size_t heads, int threads)
{
    size_t  want = 8 * (size_t) threads, groups;

    groups = (want + n_seqs - 1) / n_seqs;
    groups = groups > heads ? heads : groups;
    return (heads + groups - 1) / groups;
}


static void
aiserve_run(aiserve_scratch_t *s, aiserve_step_t *st, size_t n_items)
{
    aiserve_team_run(s->team, aiserve_step_item, st, n_items);
}


/* The product of aiserve_linear() with W packed (aiserve_gemm.h), its
 * epilogue by aiserve_product() on each block; parallel over blocks of rows
 * for many tokens, and for few, over the weight's columns by oneDNN's own
 * OpenMP team (a row split would have every thread read all of W). */
static void
aiserve_linear_packed(aiserve_scratch_t *s, const float *a,
    const aiserve_gemm_w_t *packed, float *c, size_t T, size_t N, size_t K,
    int epilogue, const float *bias, aiserve_act_e act)
{
    aiserve_step_t  st;
    int             nt = aiserve_team_size(s->team);

    memset(&st, 0, sizeof(st));
    st.op = AISERVE_STEP_PACKED_ROWS;
    st.scratch = s;
    st.rows = T;
    st.cols = N;
    st.k = K;
    st.a = a;
    st.pw = packed;
    st.c = c;
    st.bias = epilogue == AISERVE_EPI_NONE ? NULL : bias;
    st.pact = epilogue == AISERVE_EPI_BIAS_ACT ? (int) act : -1;
    if (nt == 1 || T < (size_t) nt * 64) {
        (void) aiserve_product(s, T, a, K, packed, st.bias, st.pact, c,
                               T * N * K < AISERVE_PAR_MIN_MACS ? 1 : nt);
        return;
    }
    st.chunk = aiserve_chunk(T, nt, 1, 8);
    aiserve_run(s, &st, (T + st.chunk - 1) / st.chunk);
}


/* C[T, N] = A[T, K] W^T, W an nn.Linear weight [N, K] (or PACKED, the
 * same weight packed: aiserve_linear_packed()), then EPILOGUE with BIAS
 * [N] (and ACT); parallel over row blocks for many tokens, over output
 * columns for few. */
static void
aiserve_linear(aiserve_scratch_t *s, const float *a, const float *w,
    const aiserve_gemm_w_t *packed, float *c, size_t T, size_t N, size_t K,
    int epilogue, const float *bias, aiserve_act_e act)
{
    aiserve_step_t  st;
    int             nt = aiserve_team_size(s->team);

    if (packed != NULL) {
        aiserve_linear_packed(s, a, packed, c, T, N, K, epilogue, bias, act);
        return;
    }
    memset(&st, 0, sizeof(st));
    st.rows = T;
    st.cols = N;
    st.k = K;
    st.a = a;
    st.b = w;
    st.c = c;
    st.epilogue = epilogue;
    st.bias = bias;
    st.act = act;
    if (nt == 1 || T * N * K < AISERVE_PAR_MIN_MACS) {
        aiserve_gemm_nt(T, N, K, 1.f, a, K, w, K, 0.f, c, N);
        aiserve_epilogue(&st, c, N, 0, T, 0, N);
        return;
    }
    if (T >= (size_t) nt * 64) {
        st.op = AISERVE_STEP_GEMM_ROWS;
        st.chunk = aiserve_chunk(T, nt, 1, 16);
        aiserve_run(s, &st, (T + st.chunk - 1) / st.chunk);
    } else {
        st.op = AISERVE_STEP_GEMM_COLS;
        st.chunk = aiserve_chunk(N, nt, 1, 16);
        aiserve_run(s, &st, (N + st.chunk - 1) / st.chunk);
    }
}


/* An element-wise step over T rows of N (residual + LayerNorm). */
static void
aiserve_rows(aiserve_scratch_t *s, aiserve_step_t *st, size_t T, size_t N)
{
    int  nt = aiserve_team_size(s->team);

    st->rows = T;
    st->cols = N;
    if (nt == 1 || T * N < 65536) {
        st->chunk = T;
        aiserve_step_item(st, 0, 0);
        return;
    }
    st->chunk = aiserve_chunk(T, nt, 4, 1);
    aiserve_run(s, st, (T + st->chunk - 1) / st->chunk);
}


/* x = LayerNorm(s->tmp + bias + x) over T rows of H. */
static void
aiserve_add_norm(aiserve_scratch_t *s, float *x, const float *bias,
    const float *gamma, const float *beta, size_t T, size_t H, float eps)
{
    aiserve_step_t  st;

    memset(&st, 0, sizeof(st));
    st.op = AISERVE_STEP_RESIDUAL_LN;
    st.c = x;
    st.a = s->tmp;
    st.bias = bias;
    st.gamma = gamma;
    st.beta = beta;
    st.eps = eps;
    aiserve_rows(s, &st, T, H);
}


/* x = LayerNorm(A W^T + bias + x) over T rows: BertSelfOutput and
 * BertOutput (dense, dropout as identity, LayerNorm of the sum with the
 * input), W [H, K] (or PACKED), as two steps. */
static void
aiserve_linear_ln(aiserve_scratch_t *s, const float *a, const float *w,
    const aiserve_gemm_w_t *packed, float *x, size_t T, size_t H, size_t K,
    const float *bias, const float *gamma, const float *beta, float eps,
    aiserve_act_e act)
{
    aiserve_linear(s, a, w, packed, s->tmp, T, H, K, AISERVE_EPI_NONE, NULL,
                   act);
    aiserve_add_norm(s, x, bias, gamma, beta, T, H, eps);
}


static void
aiserve_l2_normalize(float *v, size_t n)
{
    double  ss = 0;
    float   inv;
    size_t  i;

    for (i = 0; i < n; i++) {
        ss += (double) v[i] * v[i];
    }
    /* torch.nn.functional.normalize: x / max(||x||, 1e-12) */
    inv = (float) (1.0 / fmax(sqrt(ss), 1e-12));
    for (i = 0; i < n; i++) {
        v[i] *= inv;
    }
}


/* Checks a batch against the model and the scratch; returns its tokens. */
static int
aiserve_check_batch(const aiserve_model_t *m, const aiserve_batch_t *batch,
    const aiserve_scratch_t *s, size_t *total, char *err, size_t err_len)
{
    const aiserve_model_info_t  *info = &m->info;
    size_t                       i, t, T = 0;
    int32_t                      id, tt;

    for (i = 0; i < batch->n_seqs; i++) {
        if (batch->seq_lens[i] == 0) {
            aiserve_err(err, err_len, "sequence %zu is empty", i);
            return -1;
        }
        if (batch->seq_lens[i] > info->max_position_embeddings) {
            aiserve_err(err, err_len, "sequence %zu has %zu tokens, over "
                        "max_position_embeddings %zu", i, batch->seq_lens[i],
                        info->max_position_embeddings);
            return -1;
        }
        T += batch->seq_lens[i];
        if (T > s->max_tokens) {
            aiserve_err(err, err_len, "batch has over %zu tokens, the "
                        "scratch's max_tokens", s->max_tokens);
            return -1;
        }
    }
    for (t = 0; t < T; t++) {
        id = batch->input_ids[t];
        tt = batch->token_type_ids ? batch->token_type_ids[t] : 0;
        if (id < 0 || (size_t) id >= info->vocab_size) {
            aiserve_err(err, err_len, "input_ids[%zu] = %d is outside the "
                        "vocabulary (vocab_size %zu)", t, (int) id,
                        info->vocab_size);
            return -1;
        }
        if (tt < 0 || (size_t) tt >= info->type_vocab_size) {
            aiserve_err(err, err_len, "token_type_ids[%zu] = %d is outside "
                        "type_vocab_size %zu", t, (int) tt,
                        info->type_vocab_size);
            return -1;
        }
    }
    *total = T;
    return 0;
}


/* The team at the current thread count and one attention buffer per
 * thread, (re)made when aiserve_set_num_threads() or
 * aiserve_scratch_set_threads() changed it. */
static int
aiserve_scratch_ready(aiserve_scratch_t *s, char *err, size_t err_len)
{
    int     nt = s->threads ? s->threads : aiserve_num_threads;
    size_t  n;

    if (s->team == NULL || aiserve_team_size(s->team) != nt) {
        aiserve_team_free(s->team);
        s->team = aiserve_team_create(nt);
        if (s->team == NULL) {
            aiserve_err(err, err_len, "scratch: out of memory");
            return -1;
        }
    }
    /* [S, S] scores for the BLAS path, or what aiserve_attention_head()
     * needs */
    n = ((s->max_seq + 15) / 16 * 16 + 8) * (s->model->head_dim + 8);
    n = n > s->max_seq * s->max_seq ? n : s->max_seq * s->max_seq;
    while (s->n_scores < (size_t) nt) {
        s->scores[s->n_scores] = malloc(n * sizeof(float));
        if (s->scores[s->n_scores] == NULL) {
            aiserve_err(err, err_len, "scratch: out of memory");
            return -1;
        }
        s->n_scores++;
    }
    return 0;
}


/* sentence-transformers Pooling (the attention mask is all ones in a
 * packed batch) and Normalize, for every sequence. */
static void
aiserve_pool(const aiserve_model_t *m, const aiserve_batch_t *batch,
    const float *x, const size_t *offsets, float *out)
{
    size_t  H = m->info.hidden_size, i, j, c, n;

    for (i = 0; i < batch->n_seqs; i++) {
        const float  *seq = x + offsets[i] * H;
        float        *o = out + i * H;

        n = batch->seq_lens[i];
        switch (m->info.pooling) {
        case AISERVE_POOLING_CLS:
            memcpy(o, seq, H * sizeof(float));
            break;
        case AISERVE_POOLING_MEAN:
            for (c = 0; c < H; c++) {
                o[c] = 0.f;
            }
            for (j = 0; j < n; j++) {
                for (c = 0; c < H; c++) {
                    o[c] += seq[j * H + c];
                }
            }
            for (c = 0; c < H; c++) {
                o[c] /= (float) n;
            }
            break;
        case AISERVE_POOLING_MAX:
            memcpy(o, seq, H * sizeof(float));
            for (j = 1; j < n; j++) {
                for (c = 0; c < H; c++) {
                    o[c] = seq[j * H + c] > o[c] ? seq[j * H + c] : o[c];
                }
            }
            break;
        }
        if (m->info.normalize) {
            aiserve_l2_normalize(o, H);
        }
    }
}


/* BertSelfAttention over st->batch after its QKV product: in the caller
 * for little work (ATTN_MACS multiply-adds); else whole sequences as
 * items for many sequences (a thread's next head is the one it
 * prefetched), groups of heads for few, at least 8 items a thread. */
static void
aiserve_attention(aiserve_scratch_t *s, aiserve_step_t *st, size_t attn_macs)
{
    size_t  i, heads = st->model->info.num_attention_heads;
    size_t  n_seqs = st->batch->n_seqs;

    st->op = AISERVE_STEP_ATTENTION;
    if (attn_macs < AISERVE_PAR_MIN_MACS) {
        st->chunk = heads;
        for (i = 0; i < n_seqs; i++) {
            aiserve_step_item(st, i, 0);
        }
        return;
    }
    st->chunk = aiserve_attention_chunk(n_seqs, heads,
                                        aiserve_team_size(s->team));
    aiserve_run(s, st, n_seqs * ((heads + st->chunk - 1) / st->chunk));
}


static int
aiserve_cmp_desc(const void *a, const void *b)
{
    uint64_t  x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? 1 : (x > y ? -1 : 0);
}


/* ORDER = the batch's sequence indices, longest first: attention items
 * are handed out in this order, so the last ones, which may leave a
 * thread waiting for the others, are the shortest. */
static void
aiserve_longest_first(const aiserve_batch_t *batch, size_t *order)
{
    uint64_t  *key = (uint64_t *) order;
    size_t     i;

    /* size_t and uint64_t are one size here (static check below) */
    for (i = 0; i < batch->n_seqs; i++) {
        key[i] = (uint64_t) batch->seq_lens[i] << 32 | (uint64_t) i;
    }
    qsort(key, batch->n_seqs, sizeof(uint64_t), aiserve_cmp_desc);
    for (i = 0; i < batch->n_seqs; i++) {
        order[i] = (size_t) (key[i] & 0xffffffffu);
    }
}

typedef char aiserve_size_t_is_64_bits[sizeof(size_t) == 8 ? 1 : -1];


static int aiserve_forward(const aiserve_model_t *m,
    const aiserve_model_t *const *heads, const aiserve_batch_t *batch,
    aiserve_scratch_t *s, float *out, int hidden, char *err,
    size_t err_len);
static void aiserve_head(const aiserve_model_t *m, aiserve_scratch_t *s,
    const aiserve_batch_t *batch, const float *x, const size_t *offsets,
    float *out);


int
aiserve_model_forward(const aiserve_model_t *m, const aiserve_batch_t *batch,
    aiserve_scratch_t *s, float *out, char *err, size_t err_len)
{
    return aiserve_forward(m, NULL, batch, s, out, 0, err, err_len);
}


int
aiserve_model_forward_hidden(const aiserve_model_t *m,
    const aiserve_batch_t *batch, aiserve_scratch_t *s, float *out,
    char *err, size_t err_len)
{
    return aiserve_forward(m, NULL, batch, s, out, 1, err, err_len);
}


int
aiserve_model_shares_encoder(const aiserve_model_t *m,
    const aiserve_model_t *base)
{
    if (m == base) {
        return 1;
    }

    return m->info.hidden_size == base->info.hidden_size
           && m->info.num_hidden_layers == base->info.num_hidden_layers
           && m->word_emb == base->word_emb
           && m->pos_emb == base->pos_emb
           && m->type_emb == base->type_emb
           && m->emb_ln_g == base->emb_ln_g
           && m->emb_ln_b == base->emb_ln_b
           && m->act == base->act
           && memcmp(m->layers, base->layers,
                     base->info.num_hidden_layers * sizeof(*m->layers)) == 0;
}


int
aiserve_model_forward_heads(const aiserve_model_t *base,
    const aiserve_model_t *const *heads, const aiserve_batch_t *batch,
    aiserve_scratch_t *s, float *out, char *err, size_t err_len)
{
    size_t  i;

    for (i = 0; i < batch->n_seqs; i++) {
        if (!aiserve_model_shares_encoder(heads[i], base)) {
            aiserve_err(err, err_len, "sequence %zu: its model does not "
                        "share the encoder of the batch's base", i);
            return -1;
        }
    }

    return aiserve_forward(base, heads, batch, s, out, 0, err, err_len);
}


/* The encoder, then the head (of HEADS[i] for sequence i, else M's), or
 * (hidden) a copy of the last hidden state */
static int
aiserve_forward(const aiserve_model_t *m, const aiserve_model_t *const *heads,
    const aiserve_batch_t *batch, aiserve_scratch_t *s, float *out,
    int hidden, char *err, size_t err_len)
{
    const aiserve_model_info_t  *info = &m->info;
    aiserve_step_t               st;
    size_t                       H = info->hidden_size;
    size_t                       I = info->intermediate_size;
    size_t                       T, i, l, c, off, *offsets, *order;
    size_t                       attn_macs;
    float                       *x;

    if (s->model != m) {
        aiserve_err(err, err_len, "scratch was created for another model");
        return -1;
    }
    if (batch->n_seqs == 0) {
        return 0;
    }
    if (aiserve_check_batch(m, batch, s, &T, err, err_len) != 0
        || aiserve_scratch_ready(s, err, err_len) != 0)
    {
        return -1;
    }
    offsets = malloc(2 * batch->n_seqs * sizeof(size_t));
    if (offsets == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    order = offsets + batch->n_seqs;
    aiserve_longest_first(batch, order);
    s->failed = 0;
    /* short steps: the team polls between them rather than sleeping */
    aiserve_team_spin(s->team, T < AISERVE_SMALL_T);
    attn_macs = 0;
    for (i = 0, off = 0; i < batch->n_seqs; i++) {
        offsets[i] = off;
        off += batch->seq_lens[i];
        attn_macs += 2 * batch->seq_lens[i] * batch->seq_lens[i] * H;
    }

    /* BertEmbeddings, in parallel over blocks of tokens */
    memset(&st, 0, sizeof(st));
    st.op = AISERVE_STEP_EMBED;
    st.model = m;
    st.batch = batch;
    st.offsets = offsets;
    st.c = s->x;
    aiserve_rows(s, &st, T, H);
    x = s->x;

    for (l = 0; l < info->num_hidden_layers; l++) {
        const aiserve_layer_t  *L = &m->layers[l];

        memset(&st, 0, sizeof(st));
        st.model = m;
        st.scratch = s;
        st.batch = batch;
        st.offsets = offsets;
        st.order = order;
        st.layer = L;
        if (L->qkv_p != NULL && attn_macs >= AISERVE_PAR_MIN_MACS
            && batch->n_seqs >= (size_t) aiserve_team_size(s->team) * 8)
        {
            /* many sequences: each item a whole sequence, its query, key
             * and value rows computed and then attended to while they
             * are in L2 */
            st.op = AISERVE_STEP_QKV_ATTENTION;
            st.chunk = info->num_attention_heads;
            aiserve_run(s, &st, batch->n_seqs);
        } else {
            /* BertSelfAttention: query, key and value projections at once,
             * then attention */
            aiserve_linear(s, x, L->qkv_w, L->qkv_p, s->qkv, T, 3 * H, H,
                           AISERVE_EPI_BIAS, L->qkv_b, m->act);
            if (L->lora_r > 0) {
                aiserve_lora_qkv(L, H, T, x, s->qkv, s->tmp);
            }
            aiserve_attention(s, &st, attn_macs);
        }

        if (L->ao_p != NULL
            && T >= (size_t) aiserve_team_size(s->team) * AISERVE_FUSED_ROWS)
        {
            /* the rest of the layer, one step over blocks of rows */
            memset(&st, 0, sizeof(st));
            st.op = AISERVE_STEP_LAYER_TAIL;
            st.model = m;
            st.scratch = s;
            st.layer = L;
            st.rows = T;
            st.chunk = AISERVE_FUSED_ROWS;
            aiserve_run(s, &st, (T + st.chunk - 1) / st.chunk);
            continue;
        }

        /* BertSelfOutput: dense, LayerNorm(hidden + input) */
        aiserve_linear_ln(s, s->ctx, L->ao_w, L->ao_p, x, T, H, H, L->ao_b,
                          L->ao_ln_g, L->ao_ln_b, info->layer_norm_eps,
                          m->act);

        /* BertIntermediate: dense + activation (fused with the bias) */
        aiserve_linear(s, x, L->i_w, L->i_p, s->inter, T, I, H,
                       AISERVE_EPI_BIAS_ACT, L->i_b, m->act);

        /* BertOutput: dense, LayerNorm(hidden + input) */
        aiserve_linear_ln(s, s->inter, L->o_w, L->o_p, x, T, H, I, L->o_b,
                          L->o_ln_g, L->o_ln_b, info->layer_norm_eps,
                          m->act);
    }

    if (hidden) {
        /* last_hidden_state, sequences one after the other */
        memcpy(out, x, T * H * sizeof(float));

    } else if (heads == NULL) {
        aiserve_head(m, s, batch, x, offsets, out);

    } else {
        /* each run of sequences of one model through that model's head */
        for (i = 0; i < batch->n_seqs; i = c) {
            aiserve_batch_t  run;

            for (c = i + 1; c < batch->n_seqs && heads[c] == heads[i]; c++) {
                /* the run's end */
            }
            memset(&run, 0, sizeof(run));
            run.seq_lens = batch->seq_lens + i;
            run.n_seqs = c - i;
            aiserve_head(heads[i], s, &run, x, offsets + i, out);
            out += aiserve_model_output_len(heads[i], &run);
        }
    }

    free(offsets);
    if (__atomic_load_n(&s->failed, __ATOMIC_ACQUIRE)) {
        aiserve_err(err, err_len, "%s", s->err);
        return -1;
    }
    return 0;
}


/*
 * The head of M on the last hidden states X of BATCH's sequences (sequence
 * i at row OFFSETS[i] of X): pooling, or BertPooler and the classifier, or
 * the classifier on every token; OUT gets aiserve_model_output_len().
 */
static void
aiserve_head(const aiserve_model_t *m, aiserve_scratch_t *s,
    const aiserve_batch_t *batch, const float *x, const size_t *offsets,
    float *out)
{
    const aiserve_model_info_t  *info = &m->info;
    size_t                       H = info->hidden_size;
    size_t                       nl = info->num_labels;
    size_t                       T, i, c;

    for (i = 0, T = 0; i < batch->n_seqs; i++) {
        T += batch->seq_lens[i];
    }

    switch (info->arch) {
    case AISERVE_ARCH_BERT_MODEL:
        aiserve_pool(m, batch, x, offsets, out);
        break;

    case AISERVE_ARCH_SEQUENCE_CLASSIFICATION:
        /* BertPooler: tanh(dense(first token)); then the classifier */
        for (i = 0; i < batch->n_seqs; i++) {
            memcpy(s->tmp + i * H, x + offsets[i] * H, H * sizeof(float));
        }
        if (m->pool_p.data != NULL) {
            (void) aiserve_product(s, batch->n_seqs, s->tmp, H, &m->pool_p,
                                   m->pool_b, -1, s->ctx, 1);
            for (i = 0; i < batch->n_seqs * H; i++) {
                s->ctx[i] = tanhf(s->ctx[i]);
            }
            (void) aiserve_product(s, batch->n_seqs, s->ctx, H, &m->cls_p,
                                   m->cls_b, -1, out, 1);
            break;
        }
        aiserve_gemm_nt(batch->n_seqs, H, H, 1.f, s->tmp, H, m->pool_w, H,
                        0.f, s->ctx, H);
        for (i = 0; i < batch->n_seqs; i++) {
            for (c = 0; c < H; c++) {
                s->ctx[i * H + c] = tanhf(s->ctx[i * H + c] + m->pool_b[c]);
            }
        }
        aiserve_gemm_nt(batch->n_seqs, nl, H, 1.f, s->ctx, H, m->cls_w, H,
                        0.f, out, nl);
        aiserve_bias_add(out, m->cls_b, batch->n_seqs, nl);
        break;

    case AISERVE_ARCH_TOKEN_CLASSIFICATION:
        /* dropout (identity), classifier on every token */
        if (m->cls_p.data != NULL) {
            (void) aiserve_product(s, T, x + offsets[0] * H, H, &m->cls_p,
                                   m->cls_b, -1, out, 1);
            break;
        }
        aiserve_gemm_nt(T, nl, H, 1.f, x + offsets[0] * H, H, m->cls_w, H,
                        0.f, out, nl);
        aiserve_bias_add(out, m->cls_b, T, nl);
        break;
    }
}
