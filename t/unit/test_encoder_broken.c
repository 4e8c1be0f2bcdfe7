/*
 * Broken model directories and safetensors files: each gives a clear error
 * naming the file (and the tensor), never a crash.  The broken copies are
 * made from models/tiny-bert-seq-cls in a temporary directory.
 */
#include <stdint.h>
#include <unistd.h>

#include "tap.h"
#include "encoder_util.h"
#include "aiserve_safetensors.h"

#define SRC  "models/tiny-bert-seq-cls"

static char  tmpdir[] = "/tmp/aiserve-broken-XXXXXX";
static char  dir[512];


static void
spill(const char *path, const void *buf, size_t len)
{
    FILE  *f = fopen(path, "wb");

    fwrite(buf, 1, len, f);
    fclose(f);
}


static void
copy_file(const char *name)
{
    char      src[512], dst[600];
    uint8_t  *buf;
    size_t    len;

    snprintf(src, sizeof(src), "%s/%s", SRC, name);
    snprintf(dst, sizeof(dst), "%s/%s", dir, name);
    buf = enc_slurp(src, &len);
    spill(dst, buf, len);
    free(buf);
}


/* A fresh copy of the good model in dir. */
static void
fresh(void)
{
    copy_file("config.json");
    copy_file("model.safetensors");
}


/* Writes dir/model.safetensors from a header object and data bytes, the
 * header padded with spaces to 8 bytes as the reference writer does. */
static void
write_st(json_t *header, const uint8_t *data, size_t data_len)
{
    char      path[600], *h;
    size_t    hlen, padded, i;
    uint8_t  *buf;

    h = json_dumps(header, JSON_COMPACT);
    hlen = strlen(h);
    padded = (hlen + 7) / 8 * 8;
    buf = malloc(8 + padded + data_len);
    for (i = 0; i < 8; i++) {
        buf[i] = (uint8_t) ((uint64_t) padded >> (8 * i));
    }
    memcpy(buf + 8, h, hlen);
    memset(buf + 8 + hlen, ' ', padded - hlen);
    memcpy(buf + 8 + padded, data, data_len);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    spill(path, buf, 8 + padded + data_len);
    free(buf);
    free(h);
}


/* The good file's header (parsed) and data. */
static json_t *
good_header(uint8_t **data, size_t *data_len, uint8_t **whole)
{
    size_t    len;
    uint64_t  hlen = 0;
    int       i;
    uint8_t  *buf;

    buf = enc_slurp(SRC "/model.safetensors", &len);
    for (i = 0; i < 8; i++) {
        hlen |= (uint64_t) buf[i] << (8 * i);
    }
    *whole = buf;
    *data = buf + 8 + hlen;
    *data_len = len - 8 - (size_t) hlen;
    return json_loadb((char *) buf + 8, (size_t) hlen, 0, NULL);
}


/* Loads dir; passes when loading fails and err contains every NULL-ended
 * needle. */
static void
expect_fail(const char *what, ...)
{
    aiserve_model_t  *m;
    char              err[1024];
    const char       *needle;
    va_list           ap;
    int               ok;

    err[0] = '\0';
    m = aiserve_model_load(dir, err, sizeof(err));
    ok = m == NULL && err[0] != '\0';
    va_start(ap, what);
    while ((needle = va_arg(ap, const char *)) != NULL) {
        if (strstr(err, needle) == NULL) {
            ok = 0;
        }
    }
    va_end(ap);
    tap_ok(ok, "%s: %s", what, err[0] ? err : "(no error)");
    aiserve_model_free(m);
}


/* The good file with TENSOR's FIELD set to VALUE (reference taken):
 * loading must fail naming the file, the tensor and NEEDLE / NEEDLE2. */
static void
broken_field(const char *tensor, const char *field, json_t *value,
    const char *what, const char *needle, const char *needle2)
{
    json_t   *h;
    uint8_t  *data, *whole;
    size_t    data_len;
    char      path[600];

    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    h = good_header(&data, &data_len, &whole);
    json_object_set_new(json_object_get(h, tensor), field, value);
    write_st(h, data, data_len);
    expect_fail(what, path, tensor, needle, needle2, NULL);
    json_decref(h);
    free(whole);
}


static void
set_config(const char *key, json_t *value)
{
    char     path[600];
    json_t  *cfg;

    snprintf(path, sizeof(path), "%s/config.json", dir);
    cfg = json_load_file(path, 0, NULL);
    if (value == NULL) {
        json_object_del(cfg, key);
    } else {
        json_object_set_new(cfg, key, value);
    }
    json_dump_file(cfg, path, JSON_INDENT(2));
    json_decref(cfg);
}


static void
write_text(const char *name, const char *text)
{
    char  path[600];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    spill(path, text, strlen(text));
}


int
main(void)
{
    json_t             *h;
    uint8_t            *data, *whole, *buf;
    size_t              data_len, len, cut, hlen;
    char                path[600], err[1024];
    aiserve_model_t    *m;
    aiserve_st_file_t  *st;
    int                 crashed_or_accepted;
    const char         *qw = "bert.encoder.layer.0.attention.self.query.weight";
    const char         *qb = "bert.encoder.layer.0.attention.self.query.bias";
    const char         *kb = "bert.encoder.layer.0.attention.self.key.bias";

    if (mkdtemp(tmpdir) == NULL) {
        tap_ok(0, "mkdtemp");
        return tap_done();
    }
    snprintf(dir, sizeof(dir), "%s", tmpdir);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);

    fresh();
    m = aiserve_model_load(dir, err, sizeof(err));
    tap_ok(m != NULL, "the unbroken copy loads");
    aiserve_model_free(m);

    /* truncated: the last 100 bytes of data gone */
    buf = enc_slurp(SRC "/model.safetensors", &len);
    spill(path, buf, len - 100);
    expect_fail("truncated file", path, "truncated", NULL);

    /* shorter than the 8-byte header size */
    spill(path, buf, 5);
    expect_fail("5-byte file", path, "too small", NULL);

    /* header length past the end of the file */
    buf[0] = 0x00; buf[1] = 0x00; buf[2] = 0x10; buf[3] = 0x00;
    buf[4] = 0; buf[5] = 0; buf[6] = 0; buf[7] = 0;
    spill(path, buf, len);
    expect_fail("header length past the end", path, "past the end", NULL);

    /* header length over 100 MB */
    buf[3] = 0x10;
    spill(path, buf, len);
    expect_fail("header length over 100 MB", path, "limit", NULL);
    free(buf);

    /* header not JSON / not an object */
    h = good_header(&data, &data_len, &whole);
    buf = malloc(8 + 16 + data_len);
    memcpy(buf, "\x10\0\0\0\0\0\0\0{\"a\": [1, 2,    ", 24);
    memcpy(buf + 24, data, data_len);
    spill(path, buf, 24 + data_len);
    expect_fail("header is bad JSON", path, "not valid JSON", NULL);
    memcpy(buf, "\x10\0\0\0\0\0\0\0[1, 2, 3]       ", 24);
    spill(path, buf, 24 + data_len);
    expect_fail("header does not start with {", path, "'{'", NULL);
    free(buf);

    /* overlapping offsets: key.bias placed on query.bias */
    json_object_set(json_object_get(h, kb), "data_offsets",
                    json_object_get(json_object_get(h, qb), "data_offsets"));
    write_st(h, data, data_len);
    expect_fail("overlapping data_offsets", path, "overlap", NULL);
    json_decref(h);
    free(whole);

    /* offsets past the end of the data */
    h = good_header(&data, &data_len, &whole);
    write_st(h, data, data_len - 4);
    expect_fail("data shorter than the offsets", path, "truncated", NULL);
    json_decref(h);
    free(whole);

    /* byte length that does not match dtype x shape; unknown dtype; a
     * known dtype the encoder cannot use; wrong shape (same bytes) */
    broken_field(qw, "dtype", json_string("F16"), "dtype F16 on F32 bytes",
                 "F16", NULL);
    broken_field(qw, "dtype", json_string("F33"), "unknown dtype", "dtype",
                 NULL);
    broken_field(qw, "dtype", json_string("I32"), "integer weights", "I32",
                 NULL);
    broken_field(qw, "shape", json_pack("[ii]", 16, 64), "wrong shape",
                 "[16, 64]", "[32, 32]");

    /* missing tensor */
    h = good_header(&data, &data_len, &whole);
    json_object_set(h, "bert.encoder.layer.1.output.dense.weightX",
                    json_object_get(h,
                                    "bert.encoder.layer.1.output.dense.weight"));
    json_object_del(h, "bert.encoder.layer.1.output.dense.weight");
    write_st(h, data, data_len);
    expect_fail("missing tensor", path,
                "encoder.layer.1.output.dense.weight", "missing", NULL);
    json_decref(h);
    free(whole);

    /* negative shape, bad offsets array */
    broken_field(qw, "shape", json_pack("[ii]", -32, -32), "negative shape",
                 "shape", NULL);
    broken_field(qw, "data_offsets", json_pack("[s]", "0"),
                 "data_offsets not [begin, end]", "data_offsets", NULL);

    /* missing model.safetensors */
    unlink(path);
    expect_fail("no model.safetensors", path, "No such file", NULL);

    /* config.json */
    fresh();
    snprintf(path, sizeof(path), "%s/config.json", dir);
    buf = enc_slurp(path, &len);
    spill(path, buf, len / 2);
    free(buf);
    expect_fail("config.json truncated (bad JSON)", "config.json",
                "invalid JSON", NULL);
    unlink(path);
    expect_fail("no config.json", "config.json", "No such file", NULL);

    fresh();
    set_config("position_embedding_type", json_string("relative_key"));
    expect_fail("relative position embeddings", "config.json",
                "relative_key", "not supported", NULL);
    fresh();
    set_config("hidden_act", json_string("gelu_fast"));
    expect_fail("unknown hidden_act", "config.json", "gelu_fast", NULL);
    fresh();
    set_config("model_type", json_string("roberta"));
    expect_fail("model_type roberta", "config.json", "roberta", NULL);
    fresh();
    set_config("architectures", json_pack("[s]", "BertForQuestionAnswering"));
    expect_fail("unsupported architecture", "config.json",
                "BertForQuestionAnswering", NULL);
    fresh();
    set_config("hidden_size", NULL);
    expect_fail("hidden_size missing", "config.json", "hidden_size", NULL);
    fresh();
    set_config("num_attention_heads", json_integer(5));
    expect_fail("hidden_size not a multiple of heads", "config.json",
                "num_attention_heads", NULL);
    fresh();
    set_config("hidden_size", json_integer(48));
    set_config("num_attention_heads", json_integer(4));
    expect_fail("config hidden_size disagrees with the weights",
                "model.safetensors", "word_embeddings", "[1346, 32]",
                "[1346, 48]", NULL);
    fresh();
    set_config("is_decoder", json_true());
    expect_fail("decoder config", "config.json", "decoder", NULL);
    fresh();
    set_config("id2label", json_pack("{s:s,s:s}", "0", "a", "2", "b"));
    expect_fail("id2label with a hole", "config.json", "id2label", NULL);
    fresh();
    set_config("problem_type", json_string("ranking"));
    expect_fail("unknown problem_type", "config.json", "ranking", NULL);

    /* sentence-transformers modules */
    fresh();
    set_config("architectures", json_pack("[s]", "BertModel"));
    write_text("modules.json", "[{\"idx\": 0, \"path\": \"\", \"type\": "
               "\"sentence_transformers.models.Transformer\"}, {\"idx\": 1, "
               "\"path\": \"2_Dense\", \"type\": "
               "\"sentence_transformers.models.Dense\"}]");
    expect_fail("Dense module", "modules.json", "Dense", NULL);
    write_text("modules.json", "[{\"idx\": 0, \"path\": \"P\", \"type\": "
               "\"sentence_transformers.models.Pooling\"}]");
    expect_fail("Pooling without config", "P/config.json", NULL);
    snprintf(path, sizeof(path), "%s/P", dir);
    mkdir(path, 0755);
    write_text("P/config.json", "{\"pooling_mode\": \"lasttoken\"}");
    expect_fail("lasttoken pooling", "lasttoken", NULL);
    write_text("P/config.json", "{\"pooling_mode_mean_tokens\": true, "
               "\"pooling_mode_max_tokens\": true}");
    expect_fail("two pooling modes", "exactly one", NULL);
    write_text("P/config.json", "{\"pooling_mode_mean_tokens\": tru");
    expect_fail("Pooling config bad JSON", "P/config.json", "invalid JSON",
                NULL);
    write_text("modules.json", "{\"not\": \"an array\"}");
    expect_fail("modules.json not an array", "modules.json", NULL);
    write_text("P/config.json", "{\"pooling_mode\": \"max\"}");
    write_text("modules.json", "[{\"idx\": 0, \"path\": \"P\", \"type\": "
               "\"sentence_transformers.models.Pooling\"}]");
    m = aiserve_model_load(dir, err, sizeof(err));
    tap_ok(m != NULL && aiserve_model_info(m)->pooling == AISERVE_POOLING_MAX,
           "and with the Pooling config fixed it loads (max pooling)");
    aiserve_model_free(m);

    /* the parser on every prefix of the header region and on garbage:
     * always an error, never a crash or an accepted file */
    buf = enc_slurp(SRC "/model.safetensors", &len);
    hlen = (size_t) buf[0] | (size_t) buf[1] << 8 | (size_t) buf[2] << 16;
    crashed_or_accepted = 0;
    for (cut = 0; cut < len; cut += cut < 8 + hlen + 64 ? 1 : 4093) {
        st = aiserve_st_parse(buf, cut, "prefix", err, sizeof(err));
        if (st != NULL || err[0] == '\0') {
            crashed_or_accepted++;
        }
        aiserve_st_close(st);
    }
    st = aiserve_st_parse(buf, len, "whole", err, sizeof(err));
    tap_ok(crashed_or_accepted == 0 && st != NULL,
           "every truncation of a valid file is rejected, the whole accepted");
    aiserve_st_close(st);
    for (cut = 8; cut < 8 + hlen; cut += 7) {
        uint8_t  saved = buf[cut];

        buf[cut] ^= 0x5a;
        st = aiserve_st_parse(buf, len, "flipped", err, sizeof(err));
        aiserve_st_close(st);
        buf[cut] = saved;
    }
    tap_ok(1, "bytes flipped through the header: no crash");
    free(buf);

    /* cleanup */
    snprintf(path, sizeof(path), "rm -rf '%s'", tmpdir);
    if (system(path) != 0) {
        tap_diag("could not remove %s", tmpdir);
    }
    return tap_done();
}
