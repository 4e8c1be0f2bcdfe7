/*
 * Model output (src/aiserve_st_write.h, src/aiserve_hf_write.h):
 *   - the safetensors writer gives the bytes of the reference serializer
 *     (t/data/st-write/reference.safetensors, written by the `safetensors`
 *     package: tools/gen-st-write-fixtures.py), F16/BF16 rounding
 *     included, and reads back through aiserve's reader;
 *   - bad input is refused with the file and tensor named, leaving no
 *     temporary file and the old file in place;
 *   - every tiny checkpoint written as a Hugging Face directory loads with
 *     aiserve_model_load() and gives bit-identical outputs; the
 *     transformers-written f32 classifier comes back byte for byte;
 *   - other architectures with a new head (labels, problem_type, the
 *     initialisation's spread, its seed), the head-only directory and the
 *     peft adapter (names, shapes, adapter_config.json) and their errors.
 * tools/check-hf-export.py checks the same directories with transformers
 * and peft.
 */
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include "tap.h"
#include "encoder_util.h"
#include "aiserve_hf_write.h"
#include "aiserve_safetensors.h"
#include "aiserve_st_write.h"
#include "aiserve_train.h"

#define REFERENCE  "t/data/st-write/reference.safetensors"

/* keep in step with tools/gen-st-write-fixtures.py */
static const uint32_t  convert_bits[] = {
    0x00000000, 0x80000000, 0x3f800000, 0xbf800000,
    0x3f808000, 0x3f818000,
    0x3f80c000, 0x3f804000, 0x3f801000,
    0x3f800800, 0x3f801800,
    0x477fe000, 0x477fefff, 0x477ff000, 0x7f7fffff,
    0x38800000, 0x387fc000, 0x33800000, 0x33000000,
    0x33c00000, 0x33400000, 0x2f800000,
    0x7f800000, 0xff800000,
    0x3eaaaaab, 0xc2f6e979, 0x40490fdb, 0x3dcccccd, 0xbe4ccccd,
};

#define N_CONVERT  (sizeof(convert_bits) / sizeof(convert_bits[0]))

static char  tmpdir[256];


/* Files in DIR whose name contains ".tmp.". */
static int
count_tmp_files(const char *dir)
{
    DIR            *d = opendir(dir);
    struct dirent  *e;
    int             n = 0;

    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        n += strstr(e->d_name, ".tmp.") != NULL;
    }
    closedir(d);
    return n;
}


static void
set_tensor(aiserve_st_wtensor_t *t, const char *name, aiserve_st_dtype_e dt,
    size_t ndim, size_t d0, size_t d1, const void *data)
{
    memset(t, 0, sizeof(*t));
    t->name = name;
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = data;
}


static void
test_reference_bytes(void)
{
    static const char   odd[] = "odd \"name\"\t\\ \xc3\xa9/\x01";
    aiserve_st_wtensor_t t[8];
    aiserve_st_meta_t    meta = { "format", "pt" };
    aiserve_st_file_t   *st;
    const aiserve_st_tensor_t *r;
    float                w[6], bias[3] = { 1, 2, 3 }, scalar = 42.5f;
    float                seven = 7, conv[N_CONVERT], back[N_CONVERT];
    int64_t              ids[5];
    uint8_t              bf16[2 * N_CONVERT], f16[2 * N_CONVERT];
    unsigned char       *want, *got;
    char                 path[512], err[512], *hdr;
    size_t               i, want_len, got_len, hlen, n_ok;
    int                  rc;

    for (i = 0; i < 6; i++) {
        w[i] = (float) i * 0.5f - 1;
    }
    for (i = 0; i < 5; i++) {
        ids[i] = (int64_t) i;
    }
    memcpy(conv, convert_bits, sizeof(conv));
    aiserve_st_from_f32(AISERVE_ST_BF16, conv, bf16, N_CONVERT);
    aiserve_st_from_f32(AISERVE_ST_F16, conv, f16, N_CONVERT);

    /* in another order than the file's, which the writer must restore */
    set_tensor(&t[0], "conv.f16", AISERVE_ST_F16, 1, N_CONVERT, 0, f16);
    set_tensor(&t[1], "scalar", AISERVE_ST_F32, 0, 0, 0, &scalar);
    set_tensor(&t[2], "b.weight", AISERVE_ST_F32, 2, 2, 3, w);
    set_tensor(&t[3], "conv.bf16", AISERVE_ST_BF16, 1, N_CONVERT, 0, bf16);
    set_tensor(&t[4], odd, AISERVE_ST_F32, 1, 1, 0, &seven);
    set_tensor(&t[5], "a.bias", AISERVE_ST_F32, 1, 3, 0, bias);
    set_tensor(&t[6], "empty", AISERVE_ST_F32, 2, 0, 3, NULL);
    set_tensor(&t[7], "ids", AISERVE_ST_I64, 2, 1, 5, ids);

    snprintf(path, sizeof(path), "%s/ref.safetensors", tmpdir);
    rc = aiserve_st_write(path, t, 8, &meta, 1, err, sizeof(err));
    tap_ok(rc == 0, "aiserve_st_write: 8 tensors of 4 dtypes, one a scalar, "
           "one empty (%s)", rc == 0 ? "ok" : err);
    want = enc_slurp(REFERENCE, &want_len);
    got = enc_slurp(path, &got_len);
    tap_ok(want != NULL && got != NULL && want_len == got_len
           && memcmp(want, got, want_len) == 0,
           "the file equals, byte for byte, the one safetensors.torch."
           "save_file wrote (%zu and %zu bytes): dtype-then-name order, "
           "escapes, padding, F16/BF16 rounding", got_len, want_len);
    if (want != NULL && got != NULL && want_len == got_len) {
        for (i = 0; i < want_len && want[i] == got[i]; i++) {
        }
        if (i < want_len) {
            tap_diag("first difference at byte %zu", i);
        }
    }
    hdr = aiserve_st_header(t, 8, &meta, 1, &hlen, "ref", err, sizeof(err));
    tap_ok(hdr != NULL && want != NULL && hlen % 8 == 0
           && hlen + 8 <= want_len && memcmp(hdr, want + 8, hlen) == 0
           && hdr[hlen - 1] == ' ',
           "aiserve_st_header() is the reference header, space-padded to a "
           "multiple of 8 (%zu bytes)", hlen);
    free(hdr);
    free(want);
    free(got);

    /* read back through aiserve's reader */
    st = aiserve_st_open(path, err, sizeof(err));
    tap_ok(st != NULL && st->n_tensors == 8, "aiserve_st_open reads it "
           "back (%s)", st ? "8 tensors" : err);
    n_ok = 0;
    for (i = 0; st != NULL && i < 8; i++) {
        size_t  bytes = aiserve_st_dtype_size(t[i].dtype), d;

        for (d = 0; d < t[i].ndim; d++) {
            bytes *= t[i].shape[d];
        }
        r = aiserve_st_find(st, t[i].name);
        n_ok += r != NULL && r->dtype == t[i].dtype && r->ndim == t[i].ndim
                && memcmp(r->shape, t[i].shape, t[i].ndim * sizeof(size_t))
                   == 0
                && r->n_bytes == bytes
                && (bytes == 0 || memcmp(r->data, t[i].data, bytes) == 0);
    }
    tap_ok(n_ok == 8, "every tensor has its name, dtype, shape and bytes "
           "(%zu of 8)", n_ok);
    aiserve_st_close(st);

    /* NaN: no reference bits (torch differs between its own paths) */
    conv[0] = NAN;
    conv[1] = -NAN;
    aiserve_st_from_f32(AISERVE_ST_BF16, conv, bf16, 2);
    aiserve_st_to_f32(AISERVE_ST_BF16, bf16, back, 2);
    aiserve_st_from_f32(AISERVE_ST_F16, conv, f16, 2);
    aiserve_st_to_f32(AISERVE_ST_F16, f16, back + 2, 2);
    tap_ok(isnan(back[0]) && isnan(back[1]) && isnan(back[2])
           && isnan(back[3]), "NaN stays NaN in F16 and BF16");
    tap_ok(aiserve_st_from_f32(AISERVE_ST_F32, conv, bf16, 1) == -1,
           "aiserve_st_from_f32: only F16 and BF16");
}


static void
test_write_errors(void)
{
    aiserve_st_wtensor_t  t[2];
    float                 v[2] = { 1, 2 };
    char                  path[512], err[512];
    unsigned char        *before, *after;
    size_t                lb, la;
    int                   rc;

    snprintf(path, sizeof(path), "%s/err.safetensors", tmpdir);
    set_tensor(&t[0], "x", AISERVE_ST_F32, 1, 2, 0, v);
    tap_ok(aiserve_st_write(path, t, 1, NULL, 0, err, sizeof(err)) == 0,
           "a file without __metadata__");
    before = enc_slurp(path, &lb);
    tap_ok(before != NULL && memcmp(before + 8, "{\"x\":", 5) == 0,
           "no metadata: no \"__metadata__\" key");

    set_tensor(&t[1], "x", AISERVE_ST_F16, 1, 2, 0, v);
    rc = aiserve_st_write(path, t, 2, NULL, 0, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, path) && strstr(err, "\"x\"")
           && strstr(err, "twice"), "a name given twice (other dtype) is "
           "refused: %s", err);
    set_tensor(&t[1], "\xff\xfe", AISERVE_ST_F32, 1, 2, 0, v);
    rc = aiserve_st_write(path, t, 2, NULL, 0, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "UTF-8"), "a name that is not UTF-8: %s",
           err);
    set_tensor(&t[1], "__metadata__", AISERVE_ST_F32, 1, 2, 0, v);
    rc = aiserve_st_write(path, t, 2, NULL, 0, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "reserved"), "\"__metadata__\" as a "
           "tensor name: %s", err);
    set_tensor(&t[1], "y", AISERVE_ST_F32, 9, 2, 0, v);
    rc = aiserve_st_write(path, t, 2, NULL, 0, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "\"y\"") && strstr(err, "dimensions"),
           "9 dimensions: %s", err);
    set_tensor(&t[1], "y", AISERVE_ST_F32, 2, (size_t) 1 << 40,
               (size_t) 1 << 40, v);
    rc = aiserve_st_write(path, t, 2, NULL, 0, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "overflows"), "a shape that overflows: "
           "%s", err);

    after = enc_slurp(path, &la);
    tap_ok(after != NULL && la == lb && memcmp(before, after, lb) == 0,
           "the file written before is untouched by the failed writes");
    tap_ok(count_tmp_files(tmpdir) == 0, "no temporary file is left");
    free(before);
    free(after);

    rc = aiserve_st_write("/nonexistent-dir/x.safetensors", t, 1, NULL, 0,
                          err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "/nonexistent-dir/x.safetensors"),
           "a directory that does not exist: %s", err);
}


/* --- Hugging Face directories ------------------------------------------- */

#define N_SEQS  3

static const size_t  seq_lens[N_SEQS] = { 5, 14, 31 };


/* Outputs of M on fixed token ids (malloc'ed), *n their count. */
static float *
run_loaded(const aiserve_model_t *m, size_t *n)
{
    aiserve_scratch_t  *s;
    aiserve_batch_t     b;
    int32_t             ids[64];
    float              *out;
    char                err[512];
    size_t              i, j, t = 0;

    for (i = 0; i < N_SEQS; i++) {
        for (j = 0; j < seq_lens[i]; j++, t++) {
            ids[t] = j == 0 ? 2 : j + 1 == seq_lens[i] ? 3
                     : (int32_t) ((t * 37) % 1300 + 5);
        }
    }
    b.input_ids = ids;
    b.token_type_ids = NULL;
    b.seq_lens = seq_lens;
    b.n_seqs = N_SEQS;
    *n = aiserve_model_output_len(m, &b);
    out = malloc(*n * sizeof(float));
    s = aiserve_scratch_create(m, 64, err, sizeof(err));
    if (s == NULL || aiserve_model_forward(m, &b, s, out, err,
                                           sizeof(err)) != 0)
    {
        tap_diag("%s", err);
        free(out);
        out = NULL;
    }
    aiserve_scratch_free(s);
    return out;
}


/* Outputs of MODEL_DIR on fixed token ids (malloc'ed), *n their count. */
static float *
run_model(const char *model_dir, size_t *n)
{
    aiserve_model_t  *m;
    float            *out;
    char              err[512];

    m = aiserve_model_load(model_dir, err, sizeof(err));
    if (m == NULL) {
        tap_diag("%s", err);
        return NULL;
    }
    out = run_loaded(m, n);
    aiserve_model_free(m);
    return out;
}


/* The largest |difference| between the logits of 16 sequences of 60
 * tokens run as one batch (each sequence's query, key and value computed
 * beside its attention) and each run alone (the whole batch's products
 * first); -1 on failure. */
static double
batch_vs_alone(const aiserve_model_t *m)
{
    aiserve_scratch_t  *s;
    aiserve_batch_t     b;
    int32_t             ids[16 * 60];
    size_t              lens[16], i, nl = aiserve_model_info(m)->num_labels;
    float               batch[16 * 8], alone[8];
    char                err[512];
    double              worst = 0;

    for (i = 0; i < 16 * 60; i++) {
        ids[i] = i % 60 == 0 ? 2 : i % 60 == 59 ? 3
                 : (int32_t) ((i * 53) % 1300 + 5);
    }
    for (i = 0; i < 16; i++) {
        lens[i] = 60;
    }
    b.input_ids = ids;
    b.token_type_ids = NULL;
    b.seq_lens = lens;
    b.n_seqs = 16;
    s = aiserve_scratch_create(m, 16 * 60, err, sizeof(err));
    if (s == NULL || nl > 8
        || aiserve_model_forward(m, &b, s, batch, err, sizeof(err)) != 0)
    {
        aiserve_scratch_free(s);
        return -1;
    }
    for (i = 0; i < 16; i++) {
        if (enc_forward_one(m, s, ids + 60 * i, NULL, 60, alone, err,
                            sizeof(err)) != 0)
        {
            aiserve_scratch_free(s);
            return -1;
        }
        worst = fmax(worst, enc_max_diff(alone, batch + i * nl, nl));
    }
    aiserve_scratch_free(s);
    return worst;
}


static int
same_outputs(const float *a, size_t na, const float *b, size_t nb)
{
    return a != NULL && b != NULL && na == nb
           && memcmp(a, b, na * sizeof(float)) == 0;
}


/* The spec of the checkpoint in BASE as aiserve loaded it. */
typedef struct {
    aiserve_model_t       *model;
    aiserve_st_file_t     *st;
    aiserve_st_wtensor_t  *tensors;
    aiserve_hf_spec_t      spec;
} base_t;


static int
open_base(base_t *b, const char *dir)
{
    const aiserve_model_info_t  *info;
    char                         path[512], err[512];

    memset(b, 0, sizeof(*b));
    b->model = aiserve_model_load(dir, err, sizeof(err));
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    b->st = aiserve_st_open(path, err, sizeof(err));
    if (b->model == NULL || b->st == NULL) {
        tap_diag("%s", err);
        return -1;
    }
    b->tensors = aiserve_st_wtensors(b->st);
    info = aiserve_model_info(b->model);
    b->spec.arch = info->arch;
    b->spec.base_dir = dir;
    b->spec.num_labels = info->num_labels;
    b->spec.id2label = (const char *const *) info->id2label;
    b->spec.problem_type = info->problem_type;
    return 0;
}


static void
close_base(base_t *b)
{
    free(b->tensors);
    aiserve_st_close(b->st);
    aiserve_model_free(b->model);
}


static void
test_round_trips(void)
{
    static const char  *models[] = {
        "tiny-bert-seq-cls", "tiny-bert-seq-cls-bf16",
        "tiny-bert-seq-multilabel", "tiny-bert-seq-regression",
        "tiny-bert-ner", "tiny-bert-ner-bf16", "tiny-st-cls", "tiny-st-max"
    };
    base_t               b;
    float               *want, *got;
    char                 src[512], out[512], err[512], p1[700], p2[600];
    unsigned char       *f1, *f2;
    size_t               i, nw, ng, l1, l2;
    int                  rc;

    for (i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
        snprintf(src, sizeof(src), "models/%s", models[i]);
        snprintf(out, sizeof(out), "%s/rt/%s", tmpdir, models[i]);
        if (open_base(&b, src) != 0) {
            tap_ok(0, "%s loads", src);
            continue;
        }
        rc = aiserve_hf_write_model(out, &b.spec, b.tensors, b.st->n_tensors,
                                    err, sizeof(err));
        tap_ok(rc == 0, "%s written as a Hugging Face directory (%s)",
               models[i], rc == 0 ? "ok" : err);
        want = run_model(src, &nw);
        got = run_model(out, &ng);
        tap_ok(want != NULL && got != NULL && nw == ng
               && memcmp(want, got, nw * sizeof(float)) == 0,
               "%s: the written directory loads and its %zu outputs are "
               "bit-identical to the original's", models[i], nw);
        free(want);
        free(got);
        close_base(&b);
    }

    /* transformers wrote tiny-bert-seq-cls: the same tensors give the
     * same bytes */
    snprintf(p1, sizeof(p1), "models/tiny-bert-seq-cls/model.safetensors");
    snprintf(p2, sizeof(p2), "%s/rt/tiny-bert-seq-cls/model.safetensors",
             tmpdir);
    f1 = enc_slurp(p1, &l1);
    f2 = enc_slurp(p2, &l2);
    tap_ok(f1 != NULL && f2 != NULL && l1 == l2 && memcmp(f1, f2, l1) == 0,
           "tiny-bert-seq-cls/model.safetensors comes back byte for byte "
           "(%zu bytes) as transformers' save_pretrained wrote it", l2);
    free(f1);
    free(f2);

    /* TF-era gamma/beta names come out as weight/bias */
    snprintf(p2, sizeof(p2), "%s/rt/tiny-bert-ner/model.safetensors",
             tmpdir);
    {
        aiserve_st_file_t  *st = aiserve_st_open(p2, err, sizeof(err));

        tap_ok(st != NULL
               && aiserve_st_find(st, "bert.embeddings.LayerNorm.weight")
               && !aiserve_st_find(st, "bert.embeddings.LayerNorm.gamma")
               && !aiserve_st_find(st, "bert.pooler.dense.weight")
               && aiserve_st_find(st, "classifier.weight"),
               "tiny-bert-ner: LayerNorm gamma/beta written as "
               "weight/bias, no pooler for a token classifier");
        aiserve_st_close(st);
    }
    snprintf(p2, sizeof(p2), "%s/rt/tiny-st-cls", tmpdir);
    snprintf(p1, sizeof(p1), "%s/1_Pooling/config.json", p2);
    tap_ok(enc_exists(p1), "a sentence-transformers BertModel keeps its "
           "modules (1_Pooling/config.json)");
    snprintf(p1, sizeof(p1), "%s/tokenizer.json", p2);
    tap_ok(enc_exists(p1), "the tokenizer files are copied");
}


static json_t *
load_json(const char *dir, const char *file)
{
    char          path[600];
    json_error_t  jerr;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    return json_load_file(path, 0, &jerr);
}


/* A model written with a new head of LABELS on BASE as ARCH. */
static void
test_new_head(const char *base_name, aiserve_arch_e arch,
    aiserve_problem_e problem, const char *const *labels, size_t n_labels,
    const char *what)
{
    base_t                 b;
    aiserve_hf_spec_t      spec;
    aiserve_st_wtensor_t  *head = NULL, *head2 = NULL, *all;
    aiserve_model_t       *m;
    const aiserve_model_info_t *info;
    json_t                *cfg;
    char                   src[512], out[512], err[512];
    size_t                 n_head = 0, n_head2 = 0, i, j, n;
    double                 sum2 = 0, bias_abs = 0;
    int                    ok;

    snprintf(src, sizeof(src), "models/%s", base_name);
    snprintf(out, sizeof(out), "%s/head/%s-%d-%d", tmpdir, base_name,
             (int) arch, (int) problem);
    if (open_base(&b, src) != 0) {
        tap_ok(0, "%s loads", src);
        return;
    }
    spec = b.spec;
    spec.arch = arch;
    spec.problem_type = problem;
    spec.id2label = labels;
    spec.num_labels = n_labels;
    ok = aiserve_hf_init_head(&spec, 7, &head, &n_head, err,
                              sizeof(err)) == 0
         && aiserve_hf_init_head(&spec, 7, &head2, &n_head2, err,
                                 sizeof(err)) == 0;
    tap_ok(ok, "%s: a new head (%s)", what, ok ? "ok" : err);
    if (!ok) {
        close_base(&b);
        return;
    }

    /* the new head first: it replaces the base's own */
    all = malloc((n_head + b.st->n_tensors) * sizeof(*all));
    memcpy(all, head, n_head * sizeof(*all));
    memcpy(all + n_head, b.tensors, b.st->n_tensors * sizeof(*all));
    ok = aiserve_hf_write_model(out, &spec, all, n_head + b.st->n_tensors,
                                err, sizeof(err)) == 0;
    tap_ok(ok, "%s: written (%s)", what, ok ? "ok" : err);

    m = aiserve_model_load(out, err, sizeof(err));
    info = m ? aiserve_model_info(m) : NULL;
    ok = info != NULL && info->arch == arch && info->num_labels == n_labels
         && (arch != AISERVE_ARCH_SEQUENCE_CLASSIFICATION
             || info->problem_type == problem);
    for (i = 0; ok && i < n_labels; i++) {
        ok = strcmp(info->id2label[i], labels[i]) == 0;
    }
    tap_ok(ok, "%s: aiserve loads it with its architecture, %zu labels in "
           "order%s (%s)", what, n_labels,
           arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION ? " and problem_type"
           : "", m ? "ok" : err);
    aiserve_model_free(m);

    cfg = load_json(out, "config.json");
    tap_ok(cfg != NULL
           && json_integer_value(json_object_get(json_object_get(cfg,
                  "label2id"), labels[n_labels - 1]))
              == (json_int_t) n_labels - 1
           && strcmp(json_string_value(json_object_get(cfg, "torch_dtype")),
                     "float32") == 0
           && json_object_get(cfg, "num_labels") == NULL
           && json_is_integer(json_object_get(cfg, "hidden_size")),
           "%s: config.json has label2id, torch_dtype float32, the base's "
           "fields, no num_labels", what);
    json_decref(cfg);

    /* normal(0, initializer_range), zero bias, the same for the same seed */
    n = 0;
    ok = n_head == n_head2;
    for (i = 0; ok && i < n_head; i++) {
        size_t  cnt = head[i].shape[0] * (head[i].ndim > 1 ? head[i].shape[1]
                                                           : 1);
        const float  *v = head[i].data;

        ok = memcmp(head[i].data, head2[i].data, cnt * sizeof(float)) == 0;
        for (j = 0; j < cnt; j++) {
            if (head[i].ndim == 2) {
                sum2 += (double) v[j] * v[j];
                n++;
            } else {
                bias_abs += fabs(v[j]);
            }
        }
    }
    tap_ok(ok && n > 0 && bias_abs == 0
           && fabs(sqrt(sum2 / (double) n) - 0.2) < 0.2 * 0.25,
           "%s: %zu head weights with std %.3f (initializer_range 0.2), "
           "biases 0, the same for the same seed", what, n,
           n ? sqrt(sum2 / (double) n) : 0.0);
    free(all);
    free(head);
    free(head2);
    close_base(&b);
}


static void
test_head_dir(void)
{
    base_t                b;
    aiserve_st_file_t    *st;
    const aiserve_st_tensor_t *w, *o;
    json_t               *cfg;
    char                  out[512], path[600], err[512];
    float                 pooler_b[32];
    size_t                i;
    int                   rc;

    snprintf(out, sizeof(out), "%s/head-only", tmpdir);
    if (open_base(&b, "models/tiny-bert-seq-cls") != 0) {
        tap_ok(0, "tiny-bert-seq-cls loads");
        return;
    }
    rc = aiserve_hf_write_head(out, &b.spec, b.tensors, b.st->n_tensors, err,
                               sizeof(err));
    tap_ok(rc == 0, "head-only directory written (%s)", rc ? err : "ok");
    snprintf(path, sizeof(path), "%s/head.safetensors", out);
    st = aiserve_st_open(path, err, sizeof(err));
    w = st ? aiserve_st_find(st, "classifier.weight") : NULL;
    o = aiserve_st_find(b.st, "classifier.weight");
    tap_ok(st != NULL && st->n_tensors == 2
           && aiserve_st_find(st, "classifier.bias") && w != NULL
           && w->n_bytes == o->n_bytes
           && memcmp(w->data, o->data, w->n_bytes) == 0,
           "head.safetensors holds the classifier only (the pooler is the "
           "base's, unchanged), under transformers' names");
    aiserve_st_close(st);

    /* a trained pooler is the head's own */
    for (i = 0; i < b.st->n_tensors; i++) {
        if (strcmp(b.tensors[i].name, "bert.pooler.dense.bias") == 0) {
            memcpy(pooler_b, b.tensors[i].data, sizeof(pooler_b));
            pooler_b[5] += 0.25f;
            b.tensors[i].data = pooler_b;
        }
    }
    rc = aiserve_hf_write_head(out, &b.spec, b.tensors, b.st->n_tensors, err,
                               sizeof(err));
    st = rc == 0 ? aiserve_st_open(path, err, sizeof(err)) : NULL;
    w = st ? aiserve_st_find(st, "bert.pooler.dense.bias") : NULL;
    tap_ok(st != NULL && st->n_tensors == 4 && w != NULL
           && memcmp(w->data, pooler_b, sizeof(pooler_b)) == 0
           && aiserve_st_find(st, "bert.pooler.dense.weight"),
           "a pooler that differs from the base's is written with the head");
    aiserve_st_close(st);
    cfg = load_json(out, "config.json");
    tap_ok(cfg != NULL
           && strcmp(json_string_value(json_object_get(cfg,
                     "base_model_name_or_path")),
                     "models/tiny-bert-seq-cls") == 0,
           "its config.json names the base");
    json_decref(cfg);
    snprintf(path, sizeof(path), "%s/model.safetensors", out);
    tap_ok(!enc_exists(path), "no model.safetensors in a head-only "
           "directory");

    b.spec.arch = AISERVE_ARCH_BERT_MODEL;
    rc = aiserve_hf_write_head(out, &b.spec, b.tensors, b.st->n_tensors, err,
                               sizeof(err));
    tap_ok(rc == -1 && strstr(err, "BertModel"), "BertModel has no head to "
           "write alone: %s", err);
    close_base(&b);
}


static void
test_lora_dir(void)
{
    static const char   *targets[] = { "query", "value" };
    static const char   *names[] = {
        "encoder.layer.0.attention.self.query.lora_A.weight",
        "encoder.layer.0.attention.self.query.lora_B.weight",
        "encoder.layer.0.attention.self.value.lora_A.weight",
        "encoder.layer.0.attention.self.value.lora_B.weight",
        "bert.encoder.layer.1.attention.self.query.lora_A.weight",
        "bert.encoder.layer.1.attention.self.query.lora_B.weight",
        "encoder.layer.1.attention.self.value.lora_A.weight",
        "encoder.layer.1.attention.self.value.lora_B.weight",
    };
    base_t                b;
    aiserve_lora_config_t lora;
    aiserve_st_wtensor_t *all;
    aiserve_st_file_t    *st;
    const aiserve_st_tensor_t *a;
    json_t               *acfg;
    float                 ab[8][4 * 32];
    char                  out[512], path[600], err[512];
    size_t                i, n_all;
    uint64_t              state = 3;
    int                   rc;

    snprintf(out, sizeof(out), "%s/lora", tmpdir);
    if (open_base(&b, "models/tiny-bert-seq-cls") != 0) {
        tap_ok(0, "tiny-bert-seq-cls loads");
        return;
    }
    lora.r = 4;
    lora.lora_alpha = 8;
    lora.lora_dropout = 0.05;
    lora.target_modules = targets;
    lora.n_target_modules = 2;
    n_all = 8 + b.st->n_tensors;
    all = malloc(n_all * sizeof(*all));
    for (i = 0; i < 8; i++) {
        aiserve_hf_normal_fill(ab[i], 4 * 32, 0.1, &state);
        set_tensor(&all[i], names[i], AISERVE_ST_F32, 2, i % 2 ? 32 : 4,
                   i % 2 ? 4 : 32, ab[i]);
    }
    memcpy(all + 8, b.tensors, b.st->n_tensors * sizeof(*all));
    /* the base's pooler is not trained in LoRA mode: leave it out */
    for (i = 8; i < n_all; i++) {
        if (strstr(all[i].name, "pooler") != NULL) {
            all[i].name = "unused.tensor";
        }
    }
    rc = aiserve_hf_write_lora(out, &b.spec, &lora, all, n_all, err,
                               sizeof(err));
    tap_ok(rc == 0, "LoRA adapter written (%s)", rc ? err : "ok");
    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", out);
    st = aiserve_st_open(path, err, sizeof(err));
    a = st ? aiserve_st_find(st, "base_model.model.bert.encoder.layer.1."
                             "attention.self.query.lora_A.weight") : NULL;
    tap_ok(st != NULL && st->n_tensors == 10 && a != NULL
           && a->shape[0] == 4 && a->shape[1] == 32
           && memcmp(a->data, ab[4], a->n_bytes) == 0
           && aiserve_st_find(st, "base_model.model.bert.encoder.layer.0."
                              "attention.self.value.lora_B.weight")
           && aiserve_st_find(st, "base_model.model.classifier.weight")
           && aiserve_st_find(st, "base_model.model.classifier.bias"),
           "adapter_model.safetensors: peft's names (base_model.model.bert."
           "...lora_A.weight, base_model.model.classifier.*), 8 LoRA and 2 "
           "head tensors");
    aiserve_st_close(st);
    acfg = load_json(out, "adapter_config.json");
    tap_ok(acfg != NULL
           && strcmp(json_string_value(json_object_get(acfg, "peft_type")),
                     "LORA") == 0
           && strcmp(json_string_value(json_object_get(acfg, "task_type")),
                     "SEQ_CLS") == 0
           && json_integer_value(json_object_get(acfg, "r")) == 4
           && json_integer_value(json_object_get(acfg, "lora_alpha")) == 8
           && fabs(json_real_value(json_object_get(acfg, "lora_dropout"))
                   - 0.05) < 1e-12
           && json_array_size(json_object_get(acfg, "target_modules")) == 2
           && strcmp(json_string_value(json_array_get(json_object_get(acfg,
                     "modules_to_save"), 0)), "classifier") == 0
           && strcmp(json_string_value(json_object_get(acfg,
                     "base_model_name_or_path")),
                     "models/tiny-bert-seq-cls") == 0,
           "adapter_config.json: LORA, SEQ_CLS, r, lora_alpha, lora_dropout, "
           "target_modules, modules_to_save, base_model_name_or_path");
    json_decref(acfg);

    /* errors */
    all[0].name = "encoder.layer.0.attention.self.query.lora_C.weight";
    rc = aiserve_hf_write_lora(out, &b.spec, &lora, all, n_all, err,
                               sizeof(err));
    tap_ok(rc == -1 && strstr(err, "lora_C"), "an unknown LoRA tensor: %s",
           err);
    all[0].name = "encoder.layer.0.attention.self.querx.lora_A.weight";
    rc = aiserve_hf_write_lora(out, &b.spec, &lora, all, n_all, err,
                               sizeof(err));
    tap_ok(rc == -1 && strstr(err, "querx"), "a module that is not a Linear "
           "of the layers: %s", err);
    all[0].name = "encoder.layer.0.attention.self.key.lora_A.weight";
    rc = aiserve_hf_write_lora(out, &b.spec, &lora, all, n_all, err,
                               sizeof(err));
    tap_ok(rc == -1 && strstr(err, "target_modules"), "a module outside "
           "target_modules: %s", err);
    all[0].name = names[0];
    all[1].name = names[1];
    all[1].shape[1] = 5;
    rc = aiserve_hf_write_lora(out, &b.spec, &lora, all, n_all, err,
                               sizeof(err));
    tap_ok(rc == -1 && strstr(err, names[1]) && strstr(err, "r = 4"),
           "lora_B with a rank other than r: %s", err);
    all[1].shape[1] = 4;
    all[1].name = "unused.b";
    rc = aiserve_hf_write_lora(out, &b.spec, &lora, all, n_all, err,
                               sizeof(err));
    tap_ok(rc == -1 && strstr(err, "lora_B.weight"), "lora_A without its "
           "lora_B: %s", err);
    all[0].name = "unused.a";
    rc = aiserve_hf_write_lora(out, &b.spec, &lora, all, n_all, err,
                               sizeof(err));
    tap_ok(rc == -1 && strstr(err, "encoder.layer.0.attention.self.query")
           && strstr(err, "matches target_modules"),
           "a target module without LoRA tensors: %s", err);
    free(all);
    close_base(&b);
}


/* Writes a LoRA adapter on tiny-bert-seq-cls's query and value with
 * matrices from SEED (B all zero when ZERO_B) to OUT. */
static int
write_lora(base_t *b, const char *out, uint64_t seed, int zero_b,
    float ab[8][4 * 32])
{
    static const char    *targets[] = { "query", "value" };
    static const char    *mods[] = { "query", "value" };
    static char           names[8][96];
    aiserve_lora_config_t lora = { 4, 8, 0, targets, 2 };
    aiserve_st_wtensor_t *all;
    char                  err[512];
    size_t                i, n_all = 8 + b->st->n_tensors;
    uint64_t              state = seed;
    int                   rc;

    all = malloc(n_all * sizeof(*all));
    for (i = 0; i < 8; i++) {
        snprintf(names[i], sizeof(names[i]),
                 "encoder.layer.%zu.attention.self.%s.lora_%c.weight",
                 i / 4, mods[i / 2 % 2], i % 2 ? 'B' : 'A');
        aiserve_hf_normal_fill(ab[i], 4 * 32, 0.1, &state);
        if (zero_b && i % 2) {
            memset(ab[i], 0, sizeof(ab[i]));
        }
        set_tensor(&all[i], names[i], AISERVE_ST_F32, 2, i % 2 ? 32 : 4,
                   i % 2 ? 4 : 32, ab[i]);
    }
    memcpy(all + 8, b->tensors, b->st->n_tensors * sizeof(*all));
    rc = aiserve_hf_write_lora(out, &b->spec, &lora, all, n_all, err,
                               sizeof(err));
    if (rc != 0) {
        tap_diag("%s", err);
    }
    free(all);
    return rc;
}


static void
test_load_over(void)
{
    static const char *const  labels[] = { "a", "b", "c" };
    base_t                    b;
    aiserve_hf_spec_t         spec;
    aiserve_st_wtensor_t     *head, *all;
    aiserve_model_t          *t1, *t2, *full, *own, *minilm;
    float                    *base_out, *o1, *o2, *of, *oo;
    float                     ab[8][4 * 32];
    char                      d_head[512], d_full[512], d_lora[512];
    char                      d_zero[512], err[512], path[600];
    size_t                    n_head, n_base, n1 = 0, n2 = 0, nf = 0, no;
    FILE                     *f;
    int                       rc;

    if (open_base(&b, "models/tiny-bert-seq-cls") != 0) {
        tap_ok(0, "tiny-bert-seq-cls loads");
        return;
    }
    snprintf(d_head, sizeof(d_head), "%s/over/head", tmpdir);
    snprintf(d_full, sizeof(d_full), "%s/over/full", tmpdir);
    snprintf(d_lora, sizeof(d_lora), "%s/over/lora", tmpdir);
    snprintf(d_zero, sizeof(d_zero), "%s/over/lora-zero", tmpdir);
    base_out = run_loaded(b.model, &n_base);

    /* a tenant's new 3-label head, alone and as a whole model */
    spec = b.spec;
    spec.id2label = labels;
    spec.num_labels = 3;
    rc = aiserve_hf_init_head(&spec, 11, &head, &n_head, err, sizeof(err));
    all = malloc((n_head + b.st->n_tensors) * sizeof(*all));
    memcpy(all, head, n_head * sizeof(*all));
    memcpy(all + n_head, b.tensors, b.st->n_tensors * sizeof(*all));
    rc = rc || aiserve_hf_write_head(d_head, &spec, all,
                                     n_head + b.st->n_tensors, err,
                                     sizeof(err))
         || aiserve_hf_write_model(d_full, &spec, all,
                                   n_head + b.st->n_tensors, err,
                                   sizeof(err));
    tap_ok(rc == 0, "a tenant's head written alone and as a whole model "
           "(%s)", rc ? err : "ok");
    free(all);
    free(head);

    t1 = aiserve_model_load_over(b.model, d_head, err, sizeof(err));
    tap_ok(t1 != NULL && aiserve_model_info(t1)->num_labels == 3,
           "aiserve_model_load_over: the head-only directory over the "
           "loaded base (%s)", t1 ? "3 labels" : err);
    t2 = aiserve_model_load_over(b.model, "models/tiny-bert-seq-cls-rt",
                                 err, sizeof(err));
    tap_ok(t2 == NULL && strstr(err, "models/tiny-bert-seq-cls-rt"),
           "a directory that does not exist: %s", err);
    snprintf(path, sizeof(path), "%s/rt/tiny-bert-seq-cls", tmpdir);
    t2 = aiserve_model_load_over(b.model, path, err, sizeof(err));
    tap_ok(t2 == NULL && strstr(err, "head.safetensors"),
           "a whole model is not a head: %s", err);
    t2 = aiserve_model_load_over(b.model, d_head, err, sizeof(err));
    full = aiserve_model_load(d_full, err, sizeof(err));
    o1 = t1 ? run_loaded(t1, &n1) : NULL;
    of = full ? run_loaded(full, &nf) : NULL;
    tap_ok(same_outputs(o1, n1, of, nf),
           "its logits are bit-identical to those of the whole model "
           "written from the same tensors (%zu)", nf);
    aiserve_model_free(t1);
    o2 = t2 ? run_loaded(t2, &n2) : NULL;
    tap_ok(same_outputs(o2, n2, of, nf), "a second tenant over the same "
           "base still runs when the first is freed");
    own = aiserve_model_load(d_head, err, sizeof(err));
    free(o1);
    o1 = own ? run_loaded(own, &n1) : NULL;
    tap_ok(same_outputs(o1, n1, of, nf), "aiserve_model_load() of the head "
           "directory loads the base it names (%s)", own ? "ok" : err);
    aiserve_model_free(own);
    aiserve_model_free(t2);
    aiserve_model_free(full);
    free(o1);
    free(o2);
    free(of);

    /* LoRA */
    rc = write_lora(&b, d_zero, 5, 1, ab) || write_lora(&b, d_lora, 5, 0, ab);
    tap_ok(rc == 0, "LoRA adapters written");
    t1 = aiserve_model_load_over(b.model, d_zero, err, sizeof(err));
    o1 = t1 ? run_loaded(t1, &n1) : NULL;
    tap_ok(same_outputs(o1, n1, base_out, n_base), "an adapter with B = 0 "
           "over the base gives the base's logits bit for bit (%s)",
           t1 ? "ok" : err);
    aiserve_model_free(t1);
    free(o1);
    t1 = aiserve_model_load_over(b.model, d_lora, err, sizeof(err));
    o1 = t1 ? run_loaded(t1, &n1) : NULL;
    own = aiserve_model_load(d_lora, err, sizeof(err));
    oo = own ? run_loaded(own, &no) : NULL;
    tap_ok(o1 != NULL && n1 == n_base
           && enc_max_diff(o1, base_out, n1) > 1e-3
           && same_outputs(o1, n1, oo, no),
           "an adapter changes the logits (by %.3f), the same over the "
           "shared base and over its own copy",
           o1 ? enc_max_diff(o1, base_out, n1) : 0.0);
    {
        double  d = t1 ? batch_vs_alone(t1) : -1;

        tap_ok(d >= 0 && d <= 1e-5, "the adapter in a batch of 16 "
               "sequences (query, key and value beside attention) and each "
               "sequence alone: max |diff| %.2e", d);
        aiserve_set_num_threads(2);
        d = t1 ? batch_vs_alone(t1) : -1;
        aiserve_set_num_threads(1);
        tap_ok(d >= 0 && d <= 1e-5, "the same on 2 threads: max |diff| "
               "%.2e", d);
    }
    free(o1);
    free(oo);
    aiserve_model_free(own);
    aiserve_model_free(t1);
    free(base_out);

    snprintf(path, sizeof(path), "%s/adapter_config.json", d_lora);
    f = fopen(path, "w");
    fputs("{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, "
          "\"use_dora\": true, \"base_model_name_or_path\": "
          "\"models/tiny-bert-seq-cls\"}\n", f);
    fclose(f);
    t1 = aiserve_model_load_over(b.model, d_lora, err, sizeof(err));
    tap_ok(t1 == NULL && strstr(err, "adapter_config.json")
           && strstr(err, "use_dora"), "DoRA is refused: %s", err);
    aiserve_model_free(t1);

    minilm = enc_exists("models/all-MiniLM-L6-v2/model.safetensors")
             ? aiserve_model_load("models/all-MiniLM-L6-v2", err,
                                  sizeof(err))
             : NULL;
    if (minilm != NULL) {
        t1 = aiserve_model_load_over(minilm, d_head, err, sizeof(err));
        tap_ok(t1 == NULL && strstr(err, "differ"), "a head over a base of "
               "other sizes is refused: %s", err);
        aiserve_model_free(t1);
        aiserve_model_free(minilm);
    } else {
        tap_ok(1, "# SKIP all-MiniLM-L6-v2 not fetched (make deps)");
    }
    close_base(&b);
}


/* The training engine's tensors as a list to write (views into its
 * parameters). */
static aiserve_st_wtensor_t *
train_tensors(aiserve_train_t *t, size_t *n)
{
    aiserve_st_wtensor_t          *w;
    const aiserve_train_tensor_t  *x;
    float                         *params = aiserve_train_params(t);
    size_t                         i;

    *n = aiserve_train_n_tensors(t);
    w = calloc(*n, sizeof(*w));
    for (i = 0; w != NULL && i < *n; i++) {
        x = aiserve_train_tensor(t, i);
        w[i].name = x->name;
        w[i].dtype = AISERVE_ST_F32;
        w[i].ndim = x->ndim;
        w[i].shape[0] = x->shape[0];
        w[i].shape[1] = x->shape[1];
        w[i].data = params + x->offset;
    }
    return w;
}


/*
 * What the training engine (src/aiserve_train.h) holds, written in each
 * layout and loaded back by aiserve, gives the trainer's own logits: a new
 * sequence head on tiny-st-cls (a BertModel) in full, head and LoRA mode
 * (lora_B moved off 0, as training would).
 */
static void
test_trainer_output(void)
{
    static const char          *modes[] = { "full", "head", "lora" };
    static const char *const    targets[] = { "query", "value" };
    aiserve_train_opts_t        opts;
    aiserve_train_t            *t;
    aiserve_train_batch_t       tb;
    aiserve_hf_spec_t           spec;
    aiserve_lora_config_t       lora = { 8, 16, 0, targets, 2 };
    aiserve_st_wtensor_t       *w;
    aiserve_model_t            *base, *m;
    const aiserve_model_info_t *info;
    int32_t                     ids[64];
    float                      *got, *params, loss;
    char                        out[512], err[512];
    size_t                      i, j, n, ng, tok = 0;
    uint64_t                    state = 9;
    int                         k, rc;

    base = aiserve_model_load("models/tiny-st-cls", err, sizeof(err));
    for (i = 0; i < N_SEQS; i++) {
        for (j = 0; j < seq_lens[i]; j++, tok++) {
            ids[tok] = j == 0 ? 2 : j + 1 == seq_lens[i] ? 3
                       : (int32_t) ((tok * 37) % 1300 + 5);
        }
    }
    memset(&tb, 0, sizeof(tb));
    tb.input_ids = ids;
    tb.seq_lens = seq_lens;
    tb.n_seqs = N_SEQS;

    for (k = 0; k < 3 && base != NULL; k++) {
        aiserve_train_opts_defaults(&opts);
        opts.arch = AISERVE_ARCH_SEQUENCE_CLASSIFICATION;
        opts.num_labels = 3;
        opts.seed = 5;
        opts.mode = k == 0 ? AISERVE_TRAIN_FULL : k == 1 ? AISERVE_TRAIN_HEAD
                                                         : AISERVE_TRAIN_LORA;
        t = aiserve_train_load("models/tiny-st-cls", &opts, err, sizeof(err));
        if (t == NULL) {
            tap_ok(0, "trainer %s: %s", modes[k], err);
            continue;
        }
        params = aiserve_train_params(t);
        for (i = 0; i < aiserve_train_n_tensors(t); i++) {
            const aiserve_train_tensor_t  *x = aiserve_train_tensor(t, i);

            if (strstr(x->name, ".lora_B.") != NULL) {
                aiserve_hf_normal_fill(params + x->offset, x->n, 0.2, &state);
            }
        }
        rc = aiserve_train_forward(t, &tb, &loss, err, sizeof(err));
        info = aiserve_train_info(t);
        memset(&spec, 0, sizeof(spec));
        spec.arch = info->arch;
        spec.base_dir = "models/tiny-st-cls";
        spec.num_labels = info->num_labels;
        spec.id2label = (const char *const *) info->id2label;
        spec.problem_type = info->problem_type;
        w = train_tensors(t, &n);
        snprintf(out, sizeof(out), "%s/trained-%s", tmpdir, modes[k]);
        rc = rc || (k == 0 ? aiserve_hf_write_model(out, &spec, w, n, err,
                                                    sizeof(err))
                    : k == 1 ? aiserve_hf_write_head(out, &spec, w, n, err,
                                                     sizeof(err))
                    : aiserve_hf_write_lora(out, &spec, &lora, w, n, err,
                                            sizeof(err)));
        m = rc ? NULL
            : k == 0 ? aiserve_model_load(out, err, sizeof(err))
            : aiserve_model_load_over(base, out, err, sizeof(err));
        got = m ? run_loaded(m, &ng) : NULL;
        tap_ok(got != NULL && ng == N_SEQS * 3
               && enc_max_diff(got, aiserve_train_logits(t), ng) <= 1e-5,
               "trainer, %s mode: the written model's logits are the "
               "trainer's (max |diff| %.2e)%s%s", modes[k],
               got ? enc_max_diff(got, aiserve_train_logits(t), ng) : -1.0,
               got ? "" : ": ", got ? "" : err);
        free(got);
        free(w);
        aiserve_model_free(m);
        aiserve_train_free(t);
    }
    if (base == NULL) {
        tap_ok(0, "models/tiny-st-cls loads: %s", err);
    }
    aiserve_model_free(base);
}


static void
test_hf_errors(void)
{
    base_t                b;
    aiserve_st_wtensor_t *t;
    size_t                i, n;
    char                  out[512], err[512];
    int                   rc;

    snprintf(out, sizeof(out), "%s/bad", tmpdir);
    if (open_base(&b, "models/tiny-bert-seq-cls") != 0) {
        tap_ok(0, "tiny-bert-seq-cls loads");
        return;
    }
    n = b.st->n_tensors;
    t = b.tensors;
    for (i = 0; i < n; i++) {
        if (strcmp(t[i].name, "bert.encoder.layer.1.output.dense.weight")
            == 0)
        {
            t[i].name = "something.else";
        } else if (strcmp(t[i].name, "classifier.weight") == 0) {
            t[i].shape[0] = 3;
        }
    }
    rc = aiserve_hf_write_model(out, &b.spec, t, n, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "encoder.layer.1.output.dense.weight")
           && strstr(err, "missing") && strstr(err, "model.safetensors"),
           "a missing tensor is named: %s", err);
    for (i = 0; i < n; i++) {
        if (strcmp(t[i].name, "something.else") == 0) {
            t[i].name = "bert.encoder.layer.1.output.dense.weight";
        }
    }
    rc = aiserve_hf_write_model(out, &b.spec, t, n, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "classifier.weight")
           && strstr(err, "[2, 32]"), "a head of the wrong shape: %s", err);
    tap_ok(!enc_exists(out), "nothing is written when a tensor is wrong");

    b.spec.base_dir = "models/no-such-model";
    rc = aiserve_hf_write_model(out, &b.spec, t, n, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "models/no-such-model/config.json"),
           "a base without config.json: %s", err);
    close_base(&b);
}


int
main(void)
{
    static const char *const  sentiment[] = { "negative", "neutral",
                                              "positive" };
    static const char *const  topics[] = { "sports", "politics", "tech",
                                           "music" };
    static const char *const  tags[] = { "O", "B-PER", "I-PER", "B-LOC",
                                         "I-LOC" };
    char                      cmd[300];

    snprintf(tmpdir, sizeof(tmpdir), "%s/aiserve-st-write.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_reference_bytes();
    test_write_errors();
    test_round_trips();
    test_new_head("tiny-st-cls", AISERVE_ARCH_SEQUENCE_CLASSIFICATION,
                  AISERVE_PROBLEM_SINGLE_LABEL, sentiment, 3,
                  "tiny-st-cls (BertModel) -> sequence classifier");
    test_new_head("tiny-st-max", AISERVE_ARCH_SEQUENCE_CLASSIFICATION,
                  AISERVE_PROBLEM_MULTI_LABEL, topics, 4,
                  "tiny-st-max -> multi-label classifier");
    test_new_head("tiny-bert-seq-cls", AISERVE_ARCH_TOKEN_CLASSIFICATION,
                  AISERVE_PROBLEM_SINGLE_LABEL, tags, 5,
                  "tiny-bert-seq-cls -> token classifier");
    test_new_head("tiny-bert-ner", AISERVE_ARCH_SEQUENCE_CLASSIFICATION,
                  AISERVE_PROBLEM_REGRESSION, topics, 1,
                  "tiny-bert-ner (no pooler) -> regression");
    test_head_dir();
    test_lora_dir();
    test_hf_errors();
    test_load_over();
    test_trainer_output();

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) {
        tap_diag("could not remove %s", tmpdir);
    }
    return tap_done();
}
