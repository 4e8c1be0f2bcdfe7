/*
 * aiserve model output: Hugging Face model directories (transformers'
 * PreTrainedModel.save_pretrained() layout and names, modeling_bert.py),
 * head-only directories and peft adapters (peft's PeftModel.
 * save_pretrained(), get_peft_model_state_dict()).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "aiserve_err.h"
#include "aiserve_hf_write.h"

/* The transformers release the written configs are checked against
 * (tools/check-hf-export.py); written when the base's config has none. */
#define AISERVE_HF_TRANSFORMERS_VERSION  "5.24.0"

#define AISERVE_HF_NAME_MAX  256


/* The sizes of the base's config.json that fix the tensors' shapes. */
typedef struct {
    size_t  hidden_size;
    size_t  num_hidden_layers;
    size_t  intermediate_size;
    size_t  vocab_size;
    size_t  max_position_embeddings;
    size_t  type_vocab_size;
    double  initializer_range;
} aiserve_hf_sizes_t;


/* One tensor of the architecture: its BertModel-relative name (or
 * "classifier.*") and shape (d1 == 0: a vector). */
typedef struct {
    char    name[AISERVE_HF_NAME_MAX];
    size_t  d0, d1;
} aiserve_hf_slot_t;


/* --- the base's config -------------------------------------------------- */

static json_t *
aiserve_hf_base_config(const char *base_dir, char *err, size_t err_len)
{
    char          path[4096];
    json_t       *cfg;
    json_error_t  jerr;

    snprintf(path, sizeof(path), "%s/config.json", base_dir);
    cfg = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (cfg == NULL) {
        aiserve_err(err, err_len, "%s: %s (line %d)", path, jerr.text,
                    jerr.line);
        return NULL;
    }
    if (!json_is_object(cfg)) {
        aiserve_err(err, err_len, "%s: not a JSON object", path);
        json_decref(cfg);
        return NULL;
    }
    return cfg;
}


static int
aiserve_hf_cfg_size(json_t *cfg, const char *base_dir, const char *key,
    size_t def, size_t *out, char *err, size_t err_len)
{
    json_t  *v = json_object_get(cfg, key);

    if (v == NULL && def != 0) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0) {
        aiserve_err(err, err_len, "%s/config.json: \"%s\" must be a positive "
                    "integer", base_dir, key);
        return -1;
    }
    *out = (size_t) json_integer_value(v);
    return 0;
}


static int
aiserve_hf_sizes(json_t *cfg, const char *base_dir, aiserve_hf_sizes_t *s,
    char *err, size_t err_len)
{
    json_t  *v;

    if (aiserve_hf_cfg_size(cfg, base_dir, "hidden_size", 0, &s->hidden_size,
                            err, err_len) != 0
        || aiserve_hf_cfg_size(cfg, base_dir, "num_hidden_layers", 0,
                               &s->num_hidden_layers, err, err_len) != 0
        || aiserve_hf_cfg_size(cfg, base_dir, "intermediate_size", 0,
                               &s->intermediate_size, err, err_len) != 0
        || aiserve_hf_cfg_size(cfg, base_dir, "vocab_size", 0,
                               &s->vocab_size, err, err_len) != 0
        || aiserve_hf_cfg_size(cfg, base_dir, "max_position_embeddings", 512,
                               &s->max_position_embeddings, err,
                               err_len) != 0
        || aiserve_hf_cfg_size(cfg, base_dir, "type_vocab_size", 2,
                               &s->type_vocab_size, err, err_len) != 0)
    {
        return -1;
    }
    v = json_object_get(cfg, "initializer_range");
    s->initializer_range = json_is_number(v) ? json_number_value(v) : 0.02;
    return 0;
}


/* --- names -------------------------------------------------------------- */

/* NAME without a "bert." prefix and with TF-era LayerNorm gamma / beta
 * as weight / bias (transformers' _fix_state_dict_key_on_load). */
static void
aiserve_hf_canon(const char *name, char *out, size_t len)
{
    size_t  n;

    if (strncmp(name, "bert.", 5) == 0) {
        name += 5;
    }
    snprintf(out, len, "%s", name);
    n = strlen(out);
    if (n > 16 && strcmp(out + n - 16, ".LayerNorm.gamma") == 0
        && n + 2 <= len)
    {
        strcpy(out + n - 5, "weight");
    } else if (n > 15 && strcmp(out + n - 15, ".LayerNorm.beta") == 0) {
        strcpy(out + n - 4, "bias");
    }
}


static int
aiserve_hf_is_task(aiserve_arch_e arch)
{
    return arch != AISERVE_ARCH_BERT_MODEL;
}


static const char *
aiserve_hf_arch_name(aiserve_arch_e arch)
{
    switch (arch) {
    case AISERVE_ARCH_SEQUENCE_CLASSIFICATION:
        return "BertForSequenceClassification";
    case AISERVE_ARCH_TOKEN_CLASSIFICATION:
        return "BertForTokenClassification";
    default:
        return "BertModel";
    }
}


/* The name transformers gives CANON in the model of ARCH. */
static void
aiserve_hf_out_name(aiserve_arch_e arch, const char *canon, char *out,
    size_t len)
{
    int  head = strncmp(canon, "classifier.", 11) == 0;

    snprintf(out, len, "%s%s", aiserve_hf_is_task(arch) && !head
                               ? "bert." : "", canon);
}


/* --- the architecture's tensors ---------------------------------------- */

static void
aiserve_hf_slot(aiserve_hf_slot_t *slots, size_t *n, size_t d0, size_t d1,
    const char *fmt, size_t l)
{
    aiserve_hf_slot_t  *s = &slots[(*n)++];

    snprintf(s->name, sizeof(s->name), fmt, l);
    s->d0 = d0;
    s->d1 = d1;
}


/* Every tensor of ARCH's encoder (when ENCODER) and head, in
 * transformers' order; *n their count.  POOLER: also the pooler of a
 * BertModel.  Returns a malloc'ed array, NULL when out of memory. */
static aiserve_hf_slot_t *
aiserve_hf_slots(const aiserve_hf_spec_t *spec, const aiserve_hf_sizes_t *s,
    int encoder, int pooler, size_t *n)
{
    aiserve_hf_slot_t  *sl;
    size_t              H = s->hidden_size, I = s->intermediate_size, l;
    static const char  *hh[] = { "attention.self.query",
                                 "attention.self.key",
                                 "attention.self.value",
                                 "attention.output.dense" };
    char                fmt[128];
    size_t              j;

    sl = malloc((9 + 16 * s->num_hidden_layers) * sizeof(*sl));
    if (sl == NULL) {
        return NULL;
    }
    *n = 0;
    if (encoder) {
        aiserve_hf_slot(sl, n, s->vocab_size, H,
                        "embeddings.word_embeddings.weight", 0);
        aiserve_hf_slot(sl, n, s->max_position_embeddings, H,
                        "embeddings.position_embeddings.weight", 0);
        aiserve_hf_slot(sl, n, s->type_vocab_size, H,
                        "embeddings.token_type_embeddings.weight", 0);
        aiserve_hf_slot(sl, n, H, 0, "embeddings.LayerNorm.weight", 0);
        aiserve_hf_slot(sl, n, H, 0, "embeddings.LayerNorm.bias", 0);
        for (l = 0; l < s->num_hidden_layers; l++) {
            for (j = 0; j < 4; j++) {
                snprintf(fmt, sizeof(fmt), "encoder.layer.%%zu.%s.weight",
                         hh[j]);
                aiserve_hf_slot(sl, n, H, H, fmt, l);
                snprintf(fmt, sizeof(fmt), "encoder.layer.%%zu.%s.bias",
                         hh[j]);
                aiserve_hf_slot(sl, n, H, 0, fmt, l);
            }
            aiserve_hf_slot(sl, n, H, 0,
                            "encoder.layer.%zu.attention.output.LayerNorm."
                            "weight", l);
            aiserve_hf_slot(sl, n, H, 0,
                            "encoder.layer.%zu.attention.output.LayerNorm."
                            "bias", l);
            aiserve_hf_slot(sl, n, I, H,
                            "encoder.layer.%zu.intermediate.dense.weight", l);
            aiserve_hf_slot(sl, n, I, 0,
                            "encoder.layer.%zu.intermediate.dense.bias", l);
            aiserve_hf_slot(sl, n, H, I,
                            "encoder.layer.%zu.output.dense.weight", l);
            aiserve_hf_slot(sl, n, H, 0,
                            "encoder.layer.%zu.output.dense.bias", l);
            aiserve_hf_slot(sl, n, H, 0,
                            "encoder.layer.%zu.output.LayerNorm.weight", l);
            aiserve_hf_slot(sl, n, H, 0,
                            "encoder.layer.%zu.output.LayerNorm.bias", l);
        }
    }
    if (spec->arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION
        || (spec->arch == AISERVE_ARCH_BERT_MODEL && pooler))
    {
        aiserve_hf_slot(sl, n, H, H, "pooler.dense.weight", 0);
        aiserve_hf_slot(sl, n, H, 0, "pooler.dense.bias", 0);
    }
    if (aiserve_hf_is_task(spec->arch)) {
        aiserve_hf_slot(sl, n, spec->num_labels, H, "classifier.weight", 0);
        aiserve_hf_slot(sl, n, spec->num_labels, 0, "classifier.bias", 0);
    }
    return sl;
}


/* The index of the given tensor whose canonical name is CANON, or -1. */
static long
aiserve_hf_find(const aiserve_st_wtensor_t *tensors, size_t n,
    const char *canon)
{
    char    c[AISERVE_HF_NAME_MAX];
    size_t  i;

    for (i = 0; i < n; i++) {
        aiserve_hf_canon(tensors[i].name, c, sizeof(c));
        if (strcmp(c, canon) == 0) {
            return (long) i;
        }
    }
    return -1;
}


static int
aiserve_hf_check_shape(const aiserve_st_wtensor_t *t, size_t d0, size_t d1,
    char *err, size_t err_len)
{
    if (t->dtype != AISERVE_ST_F32 && t->dtype != AISERVE_ST_F16
        && t->dtype != AISERVE_ST_BF16)
    {
        aiserve_err(err, err_len, "tensor \"%s\": dtype %s (F32, F16 or BF16 "
                    "expected)", t->name, aiserve_st_dtype_name(t->dtype));
        return -1;
    }
    if (t->ndim != (d1 ? 2u : 1u) || t->shape[0] != d0
        || (d1 && t->shape[1] != d1))
    {
        if (d1) {
            aiserve_err(err, err_len, "tensor \"%s\": shape [%zu%s%zu] "
                        "(the base's config.json implies [%zu, %zu])",
                        t->name, t->ndim ? t->shape[0] : 0,
                        t->ndim > 1 ? ", " : "?",
                        t->ndim > 1 ? t->shape[1] : 0, d0, d1);
        } else {
            aiserve_err(err, err_len, "tensor \"%s\": %zu dimensions, first "
                        "%zu (the base's config.json implies [%zu])",
                        t->name, t->ndim, t->ndim ? t->shape[0] : 0, d0);
        }
        return -1;
    }
    return 0;
}


/*
 * The tensors of SLOTS picked from the given ones, renamed to
 * PREFIX + transformers' name; names are stored in *names (free both).
 */
static aiserve_st_wtensor_t *
aiserve_hf_pick(const aiserve_hf_spec_t *spec, const aiserve_hf_slot_t *slots,
    size_t n_slots, const aiserve_st_wtensor_t *tensors, size_t n_tensors,
    const char *prefix, char **names, char *err, size_t err_len)
{
    aiserve_st_wtensor_t  *out;
    char                  *nm;
    size_t                 i;
    long                   k;

    out = calloc(n_slots ? n_slots : 1, sizeof(*out));
    nm = malloc((n_slots ? n_slots : 1) * AISERVE_HF_NAME_MAX);
    if (out == NULL || nm == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto fail;
    }
    for (i = 0; i < n_slots; i++) {
        k = aiserve_hf_find(tensors, n_tensors, slots[i].name);
        if (k < 0) {
            aiserve_err(err, err_len, "tensor \"%s\" is missing (%s needs it; "
                        "also looked for bert.%s and LayerNorm gamma/beta)",
                        slots[i].name, aiserve_hf_arch_name(spec->arch),
                        slots[i].name);
            goto fail;
        }
        if (aiserve_hf_check_shape(&tensors[k], slots[i].d0, slots[i].d1,
                                   err, err_len) != 0)
        {
            goto fail;
        }
        out[i] = tensors[k];
        out[i].name = nm + i * AISERVE_HF_NAME_MAX;
        snprintf(nm + i * AISERVE_HF_NAME_MAX, AISERVE_HF_NAME_MAX, "%s",
                 prefix);
        aiserve_hf_out_name(spec->arch, slots[i].name,
                            nm + i * AISERVE_HF_NAME_MAX + strlen(prefix),
                            AISERVE_HF_NAME_MAX - strlen(prefix));
    }
    *names = nm;
    return out;

fail:
    free(out);
    free(nm);
    return NULL;
}


/* --- files -------------------------------------------------------------- */

/* mkdir -p DIR. */
static int
aiserve_hf_mkdirs(const char *dir, char *err, size_t err_len)
{
    char    path[4096];
    size_t  i, len;

    len = (size_t) snprintf(path, sizeof(path), "%s", dir);
    if (len >= sizeof(path)) {
        aiserve_err(err, err_len, "%s: path too long", dir);
        return -1;
    }
    for (i = 1; i <= len; i++) {
        if (path[i] == '/' || path[i] == '\0') {
            path[i] = '\0';
            if (mkdir(path, 0755) != 0 && errno != EEXIST) {
                aiserve_err(err, err_len, "%s: mkdir: %s", path,
                            strerror(errno));
                return -1;
            }
            path[i] = i < len ? '/' : '\0';
        }
    }
    return 0;
}


/* Copies FROM_DIR/NAME to TO_DIR/NAME (atomically); a missing source is
 * skipped when OPTIONAL. */
static int
aiserve_hf_copy(const char *from_dir, const char *to_dir, const char *name,
    int optional, char *err, size_t err_len)
{
    char         src[4096], dst[4096];
    struct stat  sb;
    char        *buf;
    size_t       got = 0;
    ssize_t      r;
    int          fd, rc;

    snprintf(src, sizeof(src), "%s/%s", from_dir, name);
    snprintf(dst, sizeof(dst), "%s/%s", to_dir, name);
    fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (optional && errno == ENOENT) {
            return 0;
        }
        aiserve_err(err, err_len, "%s: %s", src, strerror(errno));
        return -1;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        aiserve_err(err, err_len, "%s: not a regular file", src);
        close(fd);
        return -1;
    }
    buf = malloc((size_t) sb.st_size + 1);
    if (buf == NULL) {
        aiserve_err(err, err_len, "%s: out of memory", src);
        close(fd);
        return -1;
    }
    while (got < (size_t) sb.st_size) {
        r = read(fd, buf + got, (size_t) sb.st_size - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            aiserve_err(err, err_len, "%s: read: %s", src,
                        r < 0 ? strerror(errno) : "file shrank");
            free(buf);
            close(fd);
            return -1;
        }
        got += (size_t) r;
    }
    close(fd);
    rc = aiserve_write_file_atomic(dst, buf, got, err, err_len);
    free(buf);
    return rc;
}


/* JSON to DIR/NAME, indented by 2 with sorted keys and a final newline
 * (as transformers' PretrainedConfig.to_json_string() writes). */
static int
aiserve_hf_write_json(const char *dir, const char *name, json_t *j,
    char *err, size_t err_len)
{
    char    path[4096];
    char   *s;
    size_t  len;
    int     rc;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(16));
    if (s == NULL) {
        aiserve_err(err, err_len, "%s: out of memory", path);
        return -1;
    }
    len = strlen(s);
    s[len] = '\n';
    rc = aiserve_write_file_atomic(path, s, len + 1, err, err_len);
    free(s);
    return rc;
}


static const char *aiserve_hf_tokenizer_files[] = {
    "tokenizer.json", "tokenizer_config.json", "vocab.txt",
    "special_tokens_map.json", "added_tokens.json"
};


/* The base's tokenizer files, and for a BertModel its sentence-transformers
 * modules (modules.json, the other files of sentence-transformers' save,
 * each module directory's config.json). */
static int
aiserve_hf_copy_base_files(const aiserve_hf_spec_t *spec, const char *out_dir,
    char *err, size_t err_len)
{
    char          path[4096], sub_in[4096], sub_out[4096];
    json_t       *mods, *mod;
    json_error_t  jerr;
    const char   *p;
    size_t        i;

    for (i = 0; i < sizeof(aiserve_hf_tokenizer_files)
                    / sizeof(aiserve_hf_tokenizer_files[0]); i++)
    {
        if (aiserve_hf_copy(spec->base_dir, out_dir,
                            aiserve_hf_tokenizer_files[i], 1, err,
                            err_len) != 0)
        {
            return -1;
        }
    }
    if (spec->arch != AISERVE_ARCH_BERT_MODEL) {
        return 0;
    }
    snprintf(path, sizeof(path), "%s/modules.json", spec->base_dir);
    if (access(path, F_OK) != 0) {
        return 0;
    }
    mods = json_load_file(path, 0, &jerr);
    if (!json_is_array(mods)) {
        aiserve_err(err, err_len, "%s: not a JSON array (%s)", path,
                    mods == NULL ? jerr.text : "wrong type");
        json_decref(mods);
        return -1;
    }
    json_array_foreach(mods, i, mod) {
        p = json_string_value(json_object_get(mod, "path"));
        if (p == NULL || p[0] == '\0') {
            continue;
        }
        if (strstr(p, "..") != NULL || p[0] == '/') {
            aiserve_err(err, err_len, "%s: module path \"%s\" leaves the "
                        "model directory", path, p);
            json_decref(mods);
            return -1;
        }
        snprintf(sub_in, sizeof(sub_in), "%s/%s", spec->base_dir, p);
        snprintf(sub_out, sizeof(sub_out), "%s/%s", out_dir, p);
        if (aiserve_hf_mkdirs(sub_out, err, err_len) != 0
            || aiserve_hf_copy(sub_in, sub_out, "config.json", 1, err,
                               err_len) != 0)
        {
            json_decref(mods);
            return -1;
        }
    }
    json_decref(mods);
    if (aiserve_hf_copy(spec->base_dir, out_dir, "modules.json", 0, err,
                        err_len) != 0
        || aiserve_hf_copy(spec->base_dir, out_dir,
                           "sentence_bert_config.json", 1, err, err_len) != 0
        || aiserve_hf_copy(spec->base_dir, out_dir,
                           "config_sentence_transformers.json", 1, err,
                           err_len) != 0)
    {
        return -1;
    }
    return 0;
}


static const char *
aiserve_hf_torch_dtype(aiserve_st_dtype_e dtype)
{
    return dtype == AISERVE_ST_BF16 ? "bfloat16"
           : dtype == AISERVE_ST_F16 ? "float16" : "float32";
}


static const char *
aiserve_hf_problem_name(aiserve_problem_e p)
{
    return p == AISERVE_PROBLEM_MULTI_LABEL ? "multi_label_classification"
           : p == AISERVE_PROBLEM_REGRESSION ? "regression"
           : "single_label_classification";
}


/* config.json of the written model: the base's, with the architecture,
 * the labels and the dtype of the tensors; BASE_NAME (or NULL) as
 * "base_model_name_or_path". */
static json_t *
aiserve_hf_config(const aiserve_hf_spec_t *spec, json_t *base,
    aiserve_st_dtype_e dtype, const char *base_name, char *err,
    size_t err_len)
{
    json_t  *cfg, *id2label, *label2id;
    char     key[32];
    size_t   i;

    cfg = json_deep_copy(base);
    if (cfg == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return NULL;
    }
    /* derived fields transformers does not save, and the base's own
     * location */
    json_object_del(cfg, "num_labels");
    json_object_del(cfg, "_name_or_path");
    json_object_del(cfg, "id2label");
    json_object_del(cfg, "label2id");
    json_object_del(cfg, "problem_type");

    json_object_set_new(cfg, "architectures", json_pack("[s]",
                        aiserve_hf_arch_name(spec->arch)));
    json_object_set_new(cfg, "model_type", json_string("bert"));
    json_object_set_new(cfg, "torch_dtype",
                        json_string(aiserve_hf_torch_dtype(dtype)));
    if (json_object_get(cfg, "dtype") != NULL) {
        json_object_set_new(cfg, "dtype",
                            json_string(aiserve_hf_torch_dtype(dtype)));
    }
    if (!json_is_string(json_object_get(cfg, "transformers_version"))) {
        json_object_set_new(cfg, "transformers_version",
                            json_string(AISERVE_HF_TRANSFORMERS_VERSION));
    }
    if (base_name != NULL) {
        json_object_set_new(cfg, "base_model_name_or_path",
                            json_string(base_name));
    }
    if (!aiserve_hf_is_task(spec->arch)) {
        return cfg;
    }

    id2label = json_object();
    label2id = json_object();
    for (i = 0; i < spec->num_labels; i++) {
        snprintf(key, sizeof(key), "%zu", i);
        if (json_object_get(label2id, spec->id2label[i]) != NULL) {
            aiserve_err(err, err_len, "label \"%s\" is given twice (ids "
                        "%lld and %zu)", spec->id2label[i],
                        json_integer_value(json_object_get(label2id,
                                           spec->id2label[i])), i);
            goto fail;
        }
        if (json_object_set_new(id2label, key,
                                json_string(spec->id2label[i])) != 0
            || json_object_set_new(label2id, spec->id2label[i],
                                   json_integer((json_int_t) i)) != 0)
        {
            aiserve_err(err, err_len, "label %zu is not a UTF-8 string", i);
            goto fail;
        }
    }
    json_object_set_new(cfg, "id2label", id2label);
    json_object_set_new(cfg, "label2id", label2id);
    if (spec->arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION) {
        json_object_set_new(cfg, "problem_type", json_string(
                            aiserve_hf_problem_name(spec->problem_type)));
    }
    return cfg;

fail:
    json_decref(id2label);
    json_decref(label2id);
    json_decref(cfg);
    return NULL;
}


static int
aiserve_hf_check_spec(const aiserve_hf_spec_t *spec, char *err,
    size_t err_len)
{
    size_t  i;

    if (spec->base_dir == NULL) {
        aiserve_err(err, err_len, "no base model directory");
        return -1;
    }
    if (!aiserve_hf_is_task(spec->arch)) {
        return 0;
    }
    if (spec->num_labels == 0 || spec->id2label == NULL) {
        aiserve_err(err, err_len, "%s needs labels (num_labels is 0)",
                    aiserve_hf_arch_name(spec->arch));
        return -1;
    }
    for (i = 0; i < spec->num_labels; i++) {
        if (spec->id2label[i] == NULL) {
            aiserve_err(err, err_len, "label %zu has no name", i);
            return -1;
        }
    }
    return 0;
}


/* The one dtype of N tensors (config.json's torch_dtype), or -1 with err
 * naming the first tensor that differs. */
static int
aiserve_hf_one_dtype(const aiserve_st_wtensor_t *t, size_t n,
    aiserve_st_dtype_e *dtype, char *err, size_t err_len)
{
    size_t  i;

    *dtype = n ? t[0].dtype : AISERVE_ST_F32;
    for (i = 1; i < n; i++) {
        if (t[i].dtype != *dtype) {
            aiserve_err(err, err_len, "tensor \"%s\" is %s but \"%s\" is %s "
                        "(one dtype per model)", t[i].name,
                        aiserve_st_dtype_name(t[i].dtype), t[0].name,
                        aiserve_st_dtype_name(*dtype));
            return -1;
        }
    }
    return 0;
}


static const aiserve_st_meta_t  aiserve_hf_meta = { "format", "pt" };


/* Whether the list holds a pooler of its own: one the base checkpoint
 * lacks, or with other values than the base's (trained); a head-only or
 * LoRA directory leaves the base's own pooler out, as peft does. */
static int
aiserve_hf_own_pooler(const aiserve_hf_spec_t *spec,
    const aiserve_st_wtensor_t *tensors, size_t n_tensors)
{
    static const char          *parts[] = { "pooler.dense.weight",
                                            "pooler.dense.bias" };
    const aiserve_st_tensor_t  *b;
    aiserve_st_file_t          *st;
    char                        path[4096], err[256];
    size_t                      i, j, bytes;
    long                        k;
    int                         own = 0;

    if (aiserve_hf_find(tensors, n_tensors, parts[0]) < 0) {
        return 0;
    }
    snprintf(path, sizeof(path), "%s/model.safetensors", spec->base_dir);
    st = aiserve_st_open(path, err, sizeof(err));
    if (st == NULL) {
        return 1;
    }
    for (i = 0; i < 2 && !own; i++) {
        const aiserve_st_wtensor_t  *t;

        k = aiserve_hf_find(tensors, n_tensors, parts[i]);
        t = k >= 0 ? &tensors[k] : NULL;
        b = aiserve_st_find(st, parts[i]);
        if (b == NULL) {
            snprintf(path, sizeof(path), "bert.%s", parts[i]);
            b = aiserve_st_find(st, path);
        }
        bytes = t ? aiserve_st_dtype_size(t->dtype) : 0;
        for (j = 0; t != NULL && j < t->ndim; j++) {
            bytes *= t->shape[j];
        }
        own = t == NULL || b == NULL || b->dtype != t->dtype
              || b->n_bytes != bytes || memcmp(b->data, t->data, bytes) != 0;
    }
    aiserve_st_close(st);
    return own;
}


/* SLOTS without the pooler's two. */
static void
aiserve_hf_drop_pooler(aiserve_hf_slot_t *slots, size_t *n)
{
    size_t  i, j = 0;

    for (i = 0; i < *n; i++) {
        if (strncmp(slots[i].name, "pooler.", 7) != 0) {
            slots[j++] = slots[i];
        }
    }
    *n = j;
}


/* The shared path of the full and head-only writers. */
static int
aiserve_hf_write_dir(const char *out_dir, const aiserve_hf_spec_t *spec,
    const aiserve_st_wtensor_t *tensors, size_t n_tensors, int head_only,
    char *err, size_t err_len)
{
    json_t                *base = NULL, *cfg = NULL;
    aiserve_hf_sizes_t     sz;
    aiserve_hf_slot_t     *slots = NULL;
    aiserve_st_wtensor_t  *out = NULL;
    aiserve_st_dtype_e     dtype;
    char                  *names = NULL, path[4096], msg[512];
    size_t                 n_slots;
    int                    rc = -1, pooler;

    if (aiserve_hf_check_spec(spec, err, err_len) != 0) {
        return -1;
    }
    base = aiserve_hf_base_config(spec->base_dir, err, err_len);
    if (base == NULL || aiserve_hf_sizes(base, spec->base_dir, &sz, err,
                                         err_len) != 0)
    {
        goto done;
    }
    pooler = aiserve_hf_find(tensors, n_tensors, "pooler.dense.weight") >= 0;
    slots = aiserve_hf_slots(spec, &sz, !head_only, pooler, &n_slots);
    if (slots == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto done;
    }
    if (head_only && !aiserve_hf_own_pooler(spec, tensors, n_tensors)) {
        aiserve_hf_drop_pooler(slots, &n_slots);
    }
    snprintf(path, sizeof(path), "%s/%s", out_dir,
             head_only ? "head.safetensors" : "model.safetensors");
    out = aiserve_hf_pick(spec, slots, n_slots, tensors, n_tensors, "",
                          &names, msg, sizeof(msg));
    if (out == NULL) {
        aiserve_err(err, err_len, "%s: %s", path, msg);
        goto done;
    }
    if (aiserve_hf_one_dtype(out, n_slots, &dtype, msg, sizeof(msg)) != 0) {
        aiserve_err(err, err_len, "%s: %s", path, msg);
        goto done;
    }
    cfg = aiserve_hf_config(spec, base, dtype,
                            head_only ? spec->base_dir : NULL, err, err_len);
    if (cfg == NULL
        || aiserve_hf_mkdirs(out_dir, err, err_len) != 0
        || aiserve_st_write(path, out, n_slots, &aiserve_hf_meta, 1, err,
                            err_len) != 0
        || (!head_only
            && aiserve_hf_copy_base_files(spec, out_dir, err, err_len) != 0)
        || aiserve_hf_write_json(out_dir, "config.json", cfg, err,
                                 err_len) != 0)
    {
        goto done;
    }
    rc = 0;

done:
    free(out);
    free(names);
    free(slots);
    json_decref(cfg);
    json_decref(base);
    return rc;
}


int
aiserve_hf_write_model(const char *out_dir, const aiserve_hf_spec_t *spec,
    const aiserve_st_wtensor_t *tensors, size_t n_tensors, char *err,
    size_t err_len)
{
    return aiserve_hf_write_dir(out_dir, spec, tensors, n_tensors, 0, err,
                                err_len);
}


int
aiserve_hf_write_head(const char *out_dir, const aiserve_hf_spec_t *spec,
    const aiserve_st_wtensor_t *tensors, size_t n_tensors, char *err,
    size_t err_len)
{
    if (!aiserve_hf_is_task(spec->arch)) {
        aiserve_err(err, err_len, "%s: a head-only model needs a task "
                    "architecture, not BertModel", out_dir);
        return -1;
    }
    return aiserve_hf_write_dir(out_dir, spec, tensors, n_tensors, 1, err,
                                err_len);
}


/* --- LoRA (peft) -------------------------------------------------------- */

/* The [out_features, in_features] of the nn.Linear MODULE of BERT's
 * layers ("encoder.layer.N.<linear>"), or -1. */
static int
aiserve_hf_linear(const char *module, const aiserve_hf_sizes_t *s,
    size_t *out_f, size_t *in_f)
{
    size_t  H = s->hidden_size, I = s->intermediate_size;
    char   *end;
    long    l;

    if (strncmp(module, "encoder.layer.", 14) != 0) {
        return -1;
    }
    l = strtol(module + 14, &end, 10);
    if (end == module + 14 || *end != '.' || l < 0
        || (size_t) l >= s->num_hidden_layers)
    {
        return -1;
    }
    end++;
    if (strcmp(end, "attention.self.query") == 0
        || strcmp(end, "attention.self.key") == 0
        || strcmp(end, "attention.self.value") == 0
        || strcmp(end, "attention.output.dense") == 0)
    {
        *out_f = H;
        *in_f = H;
    } else if (strcmp(end, "intermediate.dense") == 0) {
        *out_f = I;
        *in_f = H;
    } else if (strcmp(end, "output.dense") == 0) {
        *out_f = H;
        *in_f = I;
    } else {
        return -1;
    }
    return 0;
}


/* peft's match of a module name against target_modules (a list): the name
 * itself or a dot-separated suffix of it (tuners_utils.
 * check_target_module_exists). */
static int
aiserve_hf_lora_target(const aiserve_lora_config_t *lora, const char *module)
{
    size_t  i, lm = strlen(module), lt;

    for (i = 0; i < lora->n_target_modules; i++) {
        lt = strlen(lora->target_modules[i]);
        if (strcmp(module, lora->target_modules[i]) == 0
            || (lm > lt && module[lm - lt - 1] == '.'
                && strcmp(module + lm - lt, lora->target_modules[i]) == 0))
        {
            return 1;
        }
    }
    return 0;
}


/* Every Linear of the layers that target_modules matches has its LoRA
 * tensors: peft would give one without them an untrained adapter and
 * report its keys missing. */
static int
aiserve_hf_lora_complete(const aiserve_lora_config_t *lora,
    const aiserve_hf_sizes_t *s, const aiserve_st_wtensor_t *tensors,
    size_t n_tensors, const char *path, char *err, size_t err_len)
{
    static const char  *linears[] = { "attention.self.query",
                                      "attention.self.key",
                                      "attention.self.value",
                                      "attention.output.dense",
                                      "intermediate.dense", "output.dense" };
    char                module[128], name[AISERVE_HF_NAME_MAX];
    size_t              l, j;

    for (l = 0; l < s->num_hidden_layers; l++) {
        for (j = 0; j < sizeof(linears) / sizeof(linears[0]); j++) {
            snprintf(module, sizeof(module), "encoder.layer.%zu.%s", l,
                     linears[j]);
            if (!aiserve_hf_lora_target(lora, module)) {
                continue;
            }
            snprintf(name, sizeof(name), "%s.lora_A.weight", module);
            if (aiserve_hf_find(tensors, n_tensors, name) < 0) {
                aiserve_err(err, err_len, "%s: \"%s\" matches target_modules "
                            "but has no lora_A / lora_B tensors", path,
                            module);
                return -1;
            }
        }
    }
    return 0;
}


static json_t *
aiserve_hf_number(double v)
{
    return v == floor(v) && fabs(v) < 1e15 ? json_integer((json_int_t) v)
                                           : json_real(v);
}


static json_t *
aiserve_hf_adapter_config(const aiserve_hf_spec_t *spec,
    const aiserve_lora_config_t *lora, int pooler)
{
    json_t  *c, *targets, *save;
    size_t   i;

    targets = json_array();
    for (i = 0; i < lora->n_target_modules; i++) {
        json_array_append_new(targets,
                              json_string(lora->target_modules[i]));
    }
    save = json_null();
    if (aiserve_hf_is_task(spec->arch)) {
        save = json_array();
        if (pooler) {
            json_array_append_new(save, json_string("pooler"));
        }
        json_array_append_new(save, json_string("classifier"));
    }
    c = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:b, s:b, s:b, s:b, "
                  "s:b, s:o, s:o, s:o, s:n, s:n, s:{}, s:{}}",
                  "peft_type", "LORA",
                  "base_model_name_or_path", spec->base_dir,
                  "bias", "none",
                  "r", json_integer((json_int_t) lora->r),
                  "lora_alpha", aiserve_hf_number(lora->lora_alpha),
                  "lora_dropout", json_real(lora->lora_dropout),
                  "fan_in_fan_out", 0,
                  "inference_mode", 1,
                  "init_lora_weights", 1,
                  "use_rslora", 0,
                  "use_dora", 0,
                  "target_modules", targets,
                  "modules_to_save", save,
                  "task_type", aiserve_hf_is_task(spec->arch)
                               ? json_string(spec->arch
                                   == AISERVE_ARCH_SEQUENCE_CLASSIFICATION
                                   ? "SEQ_CLS" : "TOKEN_CLS")
                               : json_string("FEATURE_EXTRACTION"),
                  "revision",
                  "layers_to_transform",
                  "rank_pattern", "alpha_pattern");
    return c;
}


int
aiserve_hf_write_lora(const char *out_dir, const aiserve_hf_spec_t *spec,
    const aiserve_lora_config_t *lora, const aiserve_st_wtensor_t *tensors,
    size_t n_tensors, char *err, size_t err_len)
{
    json_t                *base = NULL, *cfg = NULL, *acfg = NULL;
    aiserve_hf_sizes_t     sz;
    aiserve_hf_slot_t     *slots = NULL;
    aiserve_st_wtensor_t  *head = NULL, *out = NULL;
    aiserve_st_dtype_e     dtype;
    char                   path[4096], msg[512], canon[AISERVE_HF_NAME_MAX];
    char                  *head_names = NULL, *names = NULL, *suffix;
    size_t                 n_slots = 0, n_out = 0, i, out_f, in_f, d0, d1;
    int                    rc = -1, pooler, is_a;

    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", out_dir);
    if (aiserve_hf_check_spec(spec, err, err_len) != 0) {
        return -1;
    }
    if (lora->r == 0 || lora->n_target_modules == 0
        || !(lora->lora_alpha > 0) || !(lora->lora_dropout >= 0)
        || lora->lora_dropout >= 1)
    {
        aiserve_err(err, err_len, "%s: LoRA config needs r > 0, "
                    "lora_alpha > 0, 0 <= lora_dropout < 1 and target "
                    "modules", out_dir);
        return -1;
    }
    base = aiserve_hf_base_config(spec->base_dir, err, err_len);
    if (base == NULL || aiserve_hf_sizes(base, spec->base_dir, &sz, err,
                                         err_len) != 0)
    {
        goto done;
    }

    /* the head: modules_to_save */
    pooler = aiserve_hf_is_task(spec->arch)
             && aiserve_hf_own_pooler(spec, tensors, n_tensors);
    slots = aiserve_hf_slots(spec, &sz, 0, pooler, &n_slots);
    if (slots == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto done;
    }
    if (!pooler) {
        aiserve_hf_drop_pooler(slots, &n_slots);
    }
    head = aiserve_hf_pick(spec, slots, n_slots, tensors, n_tensors,
                           "base_model.model.", &head_names, msg,
                           sizeof(msg));
    if (head == NULL) {
        aiserve_err(err, err_len, "%s: %s", path, msg);
        goto done;
    }

    out = calloc(n_tensors + n_slots + 1, sizeof(*out));
    names = malloc((n_tensors + 1) * AISERVE_HF_NAME_MAX);
    if (out == NULL || names == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto done;
    }
    for (i = 0; i < n_tensors; i++) {
        char  *nm = names + n_out * AISERVE_HF_NAME_MAX;

        aiserve_hf_canon(tensors[i].name, canon, sizeof(canon));
        suffix = strstr(canon, ".lora_");
        if (suffix == NULL) {
            continue;
        }
        is_a = strcmp(suffix, ".lora_A.weight") == 0;
        if (!is_a && strcmp(suffix, ".lora_B.weight") != 0) {
            aiserve_err(err, err_len, "%s: tensor \"%s\": LoRA tensors end "
                        "in .lora_A.weight or .lora_B.weight", path,
                        tensors[i].name);
            goto done;
        }
        *suffix = '\0';
        if (aiserve_hf_linear(canon, &sz, &out_f, &in_f) != 0) {
            aiserve_err(err, err_len, "%s: tensor \"%s\": \"%s\" is not a "
                        "Linear of the encoder's layers", path,
                        tensors[i].name, canon);
            goto done;
        }
        if (!aiserve_hf_lora_target(lora, canon)) {
            aiserve_err(err, err_len, "%s: tensor \"%s\": \"%s\" is not in "
                        "target_modules", path, tensors[i].name, canon);
            goto done;
        }
        d0 = is_a ? lora->r : out_f;
        d1 = is_a ? in_f : lora->r;
        if (aiserve_hf_check_shape(&tensors[i], d0, d1, msg,
                                   sizeof(msg)) != 0)
        {
            aiserve_err(err, err_len, "%s: %s (r = %zu)", path, msg, lora->r);
            goto done;
        }
        snprintf(suffix, sizeof(canon) - (size_t) (suffix - canon), ".%s",
                 is_a ? "lora_B.weight" : "lora_A.weight");
        if (aiserve_hf_find(tensors, n_tensors, canon) < 0) {
            aiserve_err(err, err_len, "%s: tensor \"%s\" has no %s", path,
                        tensors[i].name, suffix + 1);
            goto done;
        }
        *suffix = '\0';
        snprintf(nm, AISERVE_HF_NAME_MAX, "base_model.model.%s%.200s.%s",
                 aiserve_hf_is_task(spec->arch) ? "bert." : "", canon,
                 is_a ? "lora_A.weight" : "lora_B.weight");
        out[n_out] = tensors[i];
        out[n_out].name = nm;
        n_out++;
    }
    if (aiserve_hf_lora_complete(lora, &sz, tensors, n_tensors, path, err,
                                 err_len) != 0)
    {
        goto done;
    }
    memcpy(out + n_out, head, n_slots * sizeof(*out));
    n_out += n_slots;
    if (aiserve_hf_one_dtype(out, n_out, &dtype, msg, sizeof(msg)) != 0) {
        aiserve_err(err, err_len, "%s: %s", path, msg);
        goto done;
    }

    acfg = aiserve_hf_adapter_config(spec, lora, pooler);
    cfg = aiserve_hf_config(spec, base, dtype, spec->base_dir, err, err_len);
    if (acfg == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto done;
    }
    if (cfg == NULL
        || aiserve_hf_mkdirs(out_dir, err, err_len) != 0
        || aiserve_st_write(path, out, n_out, &aiserve_hf_meta, 1, err,
                            err_len) != 0
        || aiserve_hf_write_json(out_dir, "config.json", cfg, err,
                                 err_len) != 0
        || aiserve_hf_write_json(out_dir, "adapter_config.json", acfg, err,
                                 err_len) != 0)
    {
        goto done;
    }
    rc = 0;

done:
    free(out);
    free(names);
    free(head);
    free(head_names);
    free(slots);
    json_decref(acfg);
    json_decref(cfg);
    json_decref(base);
    return rc;
}


/* --- a fresh head ------------------------------------------------------- */

/* splitmix64 (Steele, Lea, Flood 2014): the generator's state step. */
static uint64_t
aiserve_hf_next(uint64_t *s)
{
    uint64_t  z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}


/* A standard normal draw (Box-Muller on two 53-bit uniforms). */
static double
aiserve_hf_normal(uint64_t *s)
{
    double  u1 = ((aiserve_hf_next(s) >> 11) + 1.0) * 0x1p-53;
    double  u2 = (aiserve_hf_next(s) >> 11) * 0x1p-53;

    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}


void
aiserve_hf_normal_fill(float *dst, size_t n, double std, uint64_t *state)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        dst[i] = (float) (std * aiserve_hf_normal(state));
    }
}


int
aiserve_hf_init_head(const aiserve_hf_spec_t *spec, uint64_t seed,
    aiserve_st_wtensor_t **tensors, size_t *n_tensors, char *err,
    size_t err_len)
{
    json_t                *base;
    aiserve_hf_sizes_t     sz;
    aiserve_hf_slot_t     *slots;
    aiserve_st_wtensor_t  *t;
    aiserve_st_file_t     *st;
    size_t                 n, i, floats = 0, names = 0, cnt;
    char                   path[4096];
    float                 *f;
    char                  *nm;
    uint64_t               state = seed;

    if (aiserve_hf_check_spec(spec, err, err_len) != 0) {
        return -1;
    }
    if (!aiserve_hf_is_task(spec->arch)) {
        aiserve_err(err, err_len, "BertModel has no head to initialise");
        return -1;
    }
    base = aiserve_hf_base_config(spec->base_dir, err, err_len);
    if (base == NULL) {
        return -1;
    }
    if (aiserve_hf_sizes(base, spec->base_dir, &sz, err, err_len) != 0) {
        json_decref(base);
        return -1;
    }
    json_decref(base);
    slots = aiserve_hf_slots(spec, &sz, 0, 0, &n);
    if (slots == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    if (spec->arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION) {
        /* the base's own pooler is kept (transformers loads it into the
         * new model); only a missing one is initialised */
        snprintf(path, sizeof(path), "%s/model.safetensors", spec->base_dir);
        st = aiserve_st_open(path, err, err_len);
        if (st == NULL) {
            free(slots);
            return -1;
        }
        if (aiserve_st_find(st, "pooler.dense.weight") != NULL
            || aiserve_st_find(st, "bert.pooler.dense.weight") != NULL)
        {
            memmove(slots, slots + 2, (n - 2) * sizeof(*slots));
            n -= 2;
        }
        aiserve_st_close(st);
    }
    for (i = 0; i < n; i++) {
        floats += slots[i].d0 * (slots[i].d1 ? slots[i].d1 : 1);
        names += strlen(slots[i].name) + 1;
    }
    t = malloc(n * sizeof(*t) + floats * sizeof(float) + names);
    if (t == NULL) {
        free(slots);
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    f = (float *) (t + n);
    nm = (char *) (f + floats);
    for (i = 0; i < n; i++) {
        cnt = slots[i].d0 * (slots[i].d1 ? slots[i].d1 : 1);
        t[i].name = strcpy(nm, slots[i].name);
        nm += strlen(slots[i].name) + 1;
        t[i].dtype = AISERVE_ST_F32;
        t[i].ndim = slots[i].d1 ? 2 : 1;
        t[i].shape[0] = slots[i].d0;
        t[i].shape[1] = slots[i].d1;
        t[i].data = f;
        if (slots[i].d1) {
            aiserve_hf_normal_fill(f, cnt, sz.initializer_range, &state);
        } else {
            memset(f, 0, cnt * sizeof(float));
        }
        f += cnt;
    }
    free(slots);
    *tensors = t;
    *n_tensors = n;
    return 0;
}
