/*
 * The request side of the aiserve routes: the JSON body of a request,
 * already parsed, checked against its route's shape (the location's api=,
 * or for api=tei the model's route), validated and tokenized into the
 * sequences the encoder runs.  The code reads the body (ctx->doc), the
 * location's settings (ctx->alcf) and the model (ctx->model), allocates
 * through ctx->alloc, and reports a refusal in ctx->error (status, code,
 * param, message) with ctx->done set; it calls no function of nginx, so
 * the module (ngx_http_aiserve_api.c, which sends ctx->error) and the
 * libFuzzer target t/fuzz/fuzz_request.c run the same code.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ngx_http_aiserve_infer.h"


#define ngx_http_aiserve_param(buf, name, i)                                 \
    ngx_http_aiserve_name(buf, "%s[%zu]", name, (size_t) (i))


static char *ngx_http_aiserve_name(char *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void *ngx_http_aiserve_palloc(ngx_http_aiserve_ctx_t *ctx,
    size_t size);
static void *ngx_http_aiserve_pcalloc(ngx_http_aiserve_ctx_t *ctx,
    size_t size);
static ngx_int_t ngx_http_aiserve_get_text(ngx_http_aiserve_ctx_t *ctx,
    json_t *v, const char *param, const char **text, size_t *len);
static ngx_int_t ngx_http_aiserve_get_bool(ngx_http_aiserve_ctx_t *ctx,
    const char *name, ngx_uint_t def, ngx_uint_t *value);
static ngx_uint_t ngx_http_aiserve_array(ngx_http_aiserve_ctx_t *ctx,
    json_t *v, const char *param, const char *what);
static ngx_int_t ngx_http_aiserve_max_inputs(ngx_http_aiserve_ctx_t *ctx,
    const char *param, ngx_uint_t n, ngx_uint_t extra);
static ngx_int_t ngx_http_aiserve_alloc_seqs(ngx_http_aiserve_ctx_t *ctx,
    ngx_uint_t n, size_t per_seq);
static ngx_int_t ngx_http_aiserve_alloc_tokens_out(ngx_http_aiserve_ctx_t *ctx,
    size_t per_token);
static ngx_int_t ngx_http_aiserve_texts(ngx_http_aiserve_ctx_t *ctx,
    json_t *texts, const char *param, ngx_uint_t first, const char *query,
    size_t qlen, ngx_uint_t truncate);
static ngx_int_t ngx_http_aiserve_tokenize(ngx_http_aiserve_ctx_t *ctx,
    ngx_uint_t i, const char *text, size_t len, const char *pair,
    size_t pair_len, ngx_uint_t truncate, const char *param);
static void ngx_http_aiserve_too_long(ngx_http_aiserve_ctx_t *ctx,
    aiserve_encoding_t *enc, ngx_uint_t is_pair, const char *param);
static const char *ngx_http_aiserve_truncate_hint(ngx_http_aiserve_ctx_t *ctx);
static ngx_int_t ngx_http_aiserve_bert_sequence(ngx_http_aiserve_ctx_t *ctx,
    json_t *ids, const char *param);
static ngx_int_t ngx_http_aiserve_token_ids(ngx_http_aiserve_ctx_t *ctx,
    ngx_uint_t i, json_t *ids, ngx_uint_t truncate, const char *param);
static ngx_int_t ngx_http_aiserve_inputs(ngx_http_aiserve_ctx_t *ctx,
    const char *field, ngx_uint_t allow_ids, ngx_uint_t truncate,
    size_t per_seq);
static ngx_int_t ngx_http_aiserve_dimensions(ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_openai(ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_embed(ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_predict(ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_rerank(ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_tokenize(ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_ner(ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_decode(ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_similarity(ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_embed_all(ngx_http_aiserve_ctx_t *ctx);
static ngx_int_t ngx_http_aiserve_direction(ngx_http_aiserve_ctx_t *ctx);


/* A field's name as errors give it ("input[2]") into BUF, of
 * NGX_HTTP_AISERVE_PARAMLEN bytes: cut there. */

static char *
ngx_http_aiserve_name(char *buf, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    (void) vsnprintf(buf, NGX_HTTP_AISERVE_PARAMLEN, fmt, args);
    va_end(args);

    return buf;
}


/* allocations of a request, through its allocator */

static void *
ngx_http_aiserve_palloc(ngx_http_aiserve_ctx_t *ctx, size_t size)
{
    return ctx->alloc(ctx->alloc_data, size);
}


static void *
ngx_http_aiserve_pcalloc(ngx_http_aiserve_ctx_t *ctx, size_t size)
{
    void  *p;

    p = ctx->alloc(ctx->alloc_data, size);
    if (p) {
        memset(p, 0, size);
    }

    return p;
}


/*
 * Records a refusal of the request: STATUS (422 for validation, 404, 500),
 * an error code ("invalid_type"), the field it names (NULL: none; copied
 * with ctx->alloc, left out if that fails) and a message made from FMT
 * (printf's format); sets ctx->done.  The first refusal of a request is
 * kept.
 */

void
ngx_http_aiserve_invalid(ngx_http_aiserve_ctx_t *ctx, ngx_uint_t status,
    const char *code, const char *param, const char *fmt, ...)
{
    size_t                     len;
    va_list                    args;
    ngx_http_aiserve_error_t  *e;

    ctx->done = 1;

    e = &ctx->error;
    if (e->status) {
        return;
    }

    e->status = status;
    e->code = code;

    /* a copy: PARAM may be the caller's buffer or a key of the body */
    if (param) {
        len = strlen(param) + 1;
        e->param = ngx_http_aiserve_palloc(ctx, len);
        if (e->param) {
            memcpy(e->param, param, len);
        }
    }

    va_start(args, fmt);
    (void) vsnprintf(e->message, sizeof(e->message), fmt, args);
    va_end(args);
}


/*
 * The shape of this request: the location's api=, or for api=tei (TEI's
 * POST /) the model's own route, as TEI routes "/" by model type; an
 * embedding model answers Hugging Face's sentence-similarity shape
 * ({"inputs": {"source_sentence", "sentences"}}) too, which TEI does only
 * when started for that task.
 */

ngx_uint_t
ngx_http_aiserve_route(ngx_http_aiserve_ctx_t *ctx)
{
    json_t  *in;

    if (ctx->alcf->api != NGX_HTTP_AISERVE_API_TEI) {
        return ctx->alcf->api;
    }

    switch (ctx->model->task) {

    case NGX_HTTP_AISERVE_TASK_EMBED:
        in = json_object_get(ctx->doc, "inputs");
        return json_is_object(in) && json_object_get(in, "source_sentence")
               ? NGX_HTTP_AISERVE_API_SIMILARITY : NGX_HTTP_AISERVE_API_EMBED;

    case NGX_HTTP_AISERVE_TASK_CLASSIFY:
        return NGX_HTTP_AISERVE_API_PREDICT;

    case NGX_HTTP_AISERVE_TASK_RERANK:
        return NGX_HTTP_AISERVE_API_RERANK;

    default:
        return NGX_HTTP_AISERVE_API_NER;
    }
}


/*
 * Hugging Face's Inference API sends {"inputs": ..., "parameters": {...}}
 * (huggingface_hub's InferenceClient): the parameters are read as
 * top-level fields.  A field given in both places is a 422.
 */

ngx_int_t
ngx_http_aiserve_parameters(ngx_http_aiserve_ctx_t *ctx)
{
    char         param[NGX_HTTP_AISERVE_PARAMLEN];
    json_t      *params, *v;
    const char  *key;

    params = json_object_get(ctx->doc, "parameters");

    if (params == NULL) {
        return NGX_OK;
    }

    if (json_is_null(params)) {
        /* null is absent, as for every other field */
        json_object_del(ctx->doc, "parameters");
        return NGX_OK;
    }

    if (!json_is_object(params)) {
        ngx_http_aiserve_invalid(ctx, 422, "invalid_type", "parameters",
                                 "parameters must be an object");
        return NGX_ERROR;
    }

    ctx->hf = 1;

    json_incref(params);
    json_object_del(ctx->doc, "parameters");

    json_object_foreach(params, key, v) {
        if (json_object_get(ctx->doc, key) != NULL) {
            ngx_http_aiserve_name(param, "parameters.%s", key);
            ngx_http_aiserve_invalid(ctx, 422, "invalid_value", param,
                                     "%s is given both at the top level "
                                     "and in parameters", key);
            json_decref(params);
            return NGX_ERROR;
        }

        if (json_object_set(ctx->doc, key, v) != 0) {
            json_decref(params);
            ngx_http_aiserve_invalid(ctx, 500, "internal_error", NULL,
                                     "out of memory");
            return NGX_ERROR;
        }
    }

    json_decref(params);

    return NGX_OK;
}


/*
 * The fields each TEI-shaped route reads, besides "model" (and
 * "parameters", merged before); any other is a 422 that names it, since
 * answering without it could be a different answer than the client asked
 * for.  openai reads what it knows and ignores the rest.
 */

ngx_int_t
ngx_http_aiserve_fields(ngx_http_aiserve_ctx_t *ctx)
{
    char          list[256];
    size_t        n;
    u_char       *p;
    json_t       *v;
    ngx_uint_t    i;
    const char   *key, **known;

    static const char  *embed[] = {
        "inputs", "normalize", "truncate", "truncation_direction",
        "dimensions", NULL
    };
    static const char  *predict[] = {
        "inputs", "top_k", "function_to_apply", "raw_scores", "truncate",
        NULL
    };
    static const char  *rerank[] = {
        "query", "texts", "return_text", "raw_scores", "truncate", NULL
    };
    static const char  *tokenize[] = {
        "inputs", "add_special_tokens", NULL
    };
    static const char  *ner[] = {
        "inputs", "aggregation_strategy", "ignore_labels", "truncate", NULL
    };
    static const char  *decode[] = {
        "ids", "skip_special_tokens", NULL
    };
    static const char  *hidden[] = {
        "inputs", "truncate", "truncation_direction", NULL
    };

    switch (ctx->api) {
    case NGX_HTTP_AISERVE_API_OPENAI:
        return NGX_OK;
    case NGX_HTTP_AISERVE_API_EMBED:
        known = embed;
        break;
    case NGX_HTTP_AISERVE_API_PREDICT:
        known = predict;
        break;
    case NGX_HTTP_AISERVE_API_RERANK:
        known = rerank;
        break;
    case NGX_HTTP_AISERVE_API_TOKENIZE:
        known = tokenize;
        break;
    case NGX_HTTP_AISERVE_API_DECODE:
        known = decode;
        break;
    case NGX_HTTP_AISERVE_API_SIMILARITY:
    case NGX_HTTP_AISERVE_API_EMBED_ALL:
        known = hidden;
        break;
    default:
        known = ner;
        break;
    }

    json_object_foreach(ctx->doc, key, v) {
        if (ngx_strcmp(key, "model") == 0) {
            continue;
        }

        if (ngx_strcmp(key, "options") == 0 && json_is_object(v)) {
            /* the Inference API's wait_for_model, use_cache: they do not
             * change an answer (langchain's HuggingFaceInferenceAPI-
             * Embeddings sends them) */
            continue;
        }

        p = ctx->repaired
            ? (u_char *) ngx_strstr(key, NGX_HTTP_AISERVE_UTF8_MARK) : NULL;

        if (p) {
            ngx_http_aiserve_invalid(ctx, 422, "invalid_utf8", NULL,
                                     "a field name is not valid UTF-8 "
                                     "(byte %zu)",
                                     (size_t) (p - (u_char *) key));
            return NGX_ERROR;
        }

        for (i = 0; known[i]; i++) {
            if (ngx_strcmp(key, known[i]) == 0) {
                break;
            }
        }

        if (known[i] == NULL) {
            n = 0;

            for (i = 0; known[i] && n < sizeof(list); i++) {
                n += snprintf(list + n, sizeof(list) - n, "%s, ", known[i]);
            }

            ngx_http_aiserve_invalid(ctx, 422, "unknown_field", key,
                                     "%s is not a field of this route, "
                                     "which reads %smodel, parameters and "
                                     "options",
                                     key, list);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* common validation */

static ngx_int_t
ngx_http_aiserve_get_text(ngx_http_aiserve_ctx_t *ctx,
    json_t *v, const char *param, const char **text, size_t *len)
{
    const char  *s, *bad;

    if (!json_is_string(v)) {
        ngx_http_aiserve_invalid(ctx, 422, "invalid_type", param,
                                 "%s must be a string", param);
        return NGX_ERROR;
    }

    s = json_string_value(v);
    *len = json_string_length(v);
    *text = s;

    if (*len == 0) {
        ngx_http_aiserve_invalid(ctx, 422, "empty_input", param,
                                 "%s must not be empty", param);
        return NGX_ERROR;
    }

    if (ctx->repaired) {
        bad = memmem(s, *len, NGX_HTTP_AISERVE_UTF8_MARK, 4);
        if (bad) {
            ngx_http_aiserve_invalid(ctx, 422, "invalid_utf8", param,
                                     "%s is not valid UTF-8 (byte %zu)",
                                     param, (size_t) (bad - s));
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* A JSON boolean field; absent or null means def. */

static ngx_int_t
ngx_http_aiserve_get_bool(ngx_http_aiserve_ctx_t *ctx,
    const char *name, ngx_uint_t def, ngx_uint_t *value)
{
    json_t  *v;

    v = json_object_get(ctx->doc, name);

    if (v == NULL || json_is_null(v)) {
        *value = def;
        return NGX_OK;
    }

    if (!json_is_boolean(v)) {
        ngx_http_aiserve_invalid(ctx, 422, "invalid_type", name,
                                 "%s must be true or false", name);
        return NGX_ERROR;
    }

    *value = json_is_true(v);
    return NGX_OK;
}


/*
 * v must be a non-empty JSON array ("param must be what" otherwise: a 422
 * missing_field, invalid_type or empty_input naming param).  Returns its
 * size, or 0 after the error was sent.
 */

static ngx_uint_t
ngx_http_aiserve_array(ngx_http_aiserve_ctx_t *ctx,
    json_t *v, const char *param, const char *what)
{
    if (!json_is_array(v)) {
        ngx_http_aiserve_invalid(ctx, 422,
                                 v ? "invalid_type" : "missing_field",
                                 param, "%s must be %s", param, what);
        return 0;
    }

    if (json_array_size(v) == 0) {
        ngx_http_aiserve_invalid(ctx, 422, "empty_input", param,
                                 "%s must not be empty", param);
        return 0;
    }

    return json_array_size(v);
}


/*
 * n items of param, plus extra inputs the request carries besides them,
 * must stay within aiserve_max_inputs (else a 422 too_many_inputs).
 */

static ngx_int_t
ngx_http_aiserve_max_inputs(ngx_http_aiserve_ctx_t *ctx,
    const char *param, ngx_uint_t n, ngx_uint_t extra)
{
    if (n + extra <= ctx->alcf->max_inputs) {
        return NGX_OK;
    }

    ngx_http_aiserve_invalid(ctx, 422, "too_many_inputs", param,
                             "%s has %zu items, more than the limit of %zu "
                             "(aiserve_max_inputs)", param, n,
                             ctx->alcf->max_inputs - extra);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_aiserve_alloc_seqs(ngx_http_aiserve_ctx_t *ctx,
    ngx_uint_t n, size_t per_seq)
{
    ngx_uint_t  i;

    ctx->seqs = ngx_http_aiserve_pcalloc(ctx,
                                         n * sizeof(ngx_http_aiserve_seq_t));
    if (ctx->seqs == NULL) {
        ngx_http_aiserve_invalid(ctx, 500, "internal_error", NULL,
                                 "out of memory");
        return NGX_ERROR;
    }

    ctx->n_seqs = n;

    for (i = 0; i < n; i++) {
        ctx->seqs[i].out_off = i * per_seq;
    }

    if (per_seq) {
        ctx->out_len = n * per_seq;
        ctx->out = ngx_http_aiserve_palloc(ctx, ctx->out_len * sizeof(float));
        if (ctx->out == NULL) {
            ngx_http_aiserve_invalid(ctx, 500, "internal_error", NULL,
                                     "out of memory");
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * Tokenizes each string of the array texts (named param[i]) into
 * ctx->seqs[first + i]: alone, or after query as a sentence pair (rerank's
 * (query, text)).  A sequence's text is the array's string, which rerank's
 * return_text gives back.
 */

static ngx_int_t
ngx_http_aiserve_texts(ngx_http_aiserve_ctx_t *ctx,
    json_t *texts, const char *param, ngx_uint_t first, const char *query,
    size_t qlen, ngx_uint_t truncate)
{
    char         name[NGX_HTTP_AISERVE_PARAMLEN];
    size_t       len;
    ngx_int_t    rc;
    ngx_uint_t   i;
    const char  *text;

    for (i = 0; i < json_array_size(texts); i++) {
        ngx_http_aiserve_param(name, param, i);

        if (ngx_http_aiserve_get_text(ctx, json_array_get(texts, i), name,
                                      &text, &len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        rc = query ? ngx_http_aiserve_tokenize(ctx, first + i, query,
                                               qlen, text, len, truncate,
                                               name)
                   : ngx_http_aiserve_tokenize(ctx, first + i, text, len,
                                               NULL, 0, truncate, name);
        if (rc != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->seqs[first + i].text = text;
        ctx->seqs[first + i].text_len = len;
    }

    return NGX_OK;
}


/*
 * Outputs of per_token floats for every token of every sequence (NER
 * logits, token embeddings), sized once the inputs are tokenized.
 */

static ngx_int_t
ngx_http_aiserve_alloc_tokens_out(ngx_http_aiserve_ctx_t *ctx,
    size_t per_token)
{
    ngx_uint_t  i;

    ctx->out_len = 0;

    for (i = 0; i < ctx->n_seqs; i++) {
        ctx->seqs[i].out_off = ctx->out_len;
        ctx->out_len += ctx->seqs[i].n_tokens * per_token;
    }

    ctx->out = ngx_http_aiserve_palloc(ctx, ctx->out_len * sizeof(float));
    if (ctx->out == NULL) {
        ngx_http_aiserve_invalid(ctx, 500, "internal_error", NULL,
                                 "out of memory");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Tokenizes one input (or pair) into ctx->seqs[i].  With truncation off, a
 * sequence longer than the model's max_seq is a 422 that names the limit.
 */

static ngx_int_t
ngx_http_aiserve_tokenize(ngx_http_aiserve_ctx_t *ctx,
    ngx_uint_t i, const char *text, size_t len, const char *pair,
    size_t pair_len, ngx_uint_t truncate, const char *param)
{
    char                       err[NGX_HTTP_AISERVE_ERRLEN];
    aiserve_tok_opts_t         opts;
    aiserve_encoding_t        *enc;
    ngx_http_aiserve_seq_t    *seq;
    ngx_http_aiserve_model_t  *m;

    m = ctx->model;
    seq = &ctx->seqs[i];

    enc = ngx_http_aiserve_pcalloc(ctx, sizeof(aiserve_encoding_t));
    if (enc == NULL) {
        ngx_http_aiserve_invalid(ctx, 500, "internal_error", NULL,
                                 "out of memory");
        return NGX_ERROR;
    }

    aiserve_tok_opts_default(&opts);
    opts.max_length = m->max_seq;
    opts.truncation = truncate ? 1 : 0;
    opts.add_special_tokens = ctx->add_special ? 1 : 0;
    opts.direction = ctx->truncate_left ? AISERVE_TRUNCATE_LEFT
                                        : AISERVE_TRUNCATE_RIGHT;

    if (aiserve_tok_encode(m->tok, text, len, pair, pair_len, &opts, enc,
                           err, sizeof(err))
        != 0)
    {
        ngx_http_aiserve_invalid(ctx, 422, "invalid_input", param,
                                 "%s: %s", param, err);
        return NGX_ERROR;
    }

    seq->enc = enc;
    seq->text = text;
    seq->text_len = len;
    seq->input_ids = enc->input_ids;
    seq->token_type_ids = enc->token_type_ids;
    seq->n_tokens = enc->n_tokens;

    if (enc->n_tokens > m->max_seq
        && ctx->api != NGX_HTTP_AISERVE_API_TOKENIZE)
    {
        ngx_http_aiserve_too_long(ctx, enc, pair != NULL, param);
        return NGX_ERROR;
    }

    if (enc->n_tokens == 0 && ctx->api != NGX_HTTP_AISERVE_API_TOKENIZE)
    {
        ngx_http_aiserve_invalid(ctx, 422, "empty_input", param,
                                 "%s has no tokens", param);
        return NGX_ERROR;
    }

    ctx->prompt_tokens += enc->n_tokens;

    return NGX_OK;
}


/*
 * The 422 for an input longer than the model's max_seq with truncation off.
 * For a pair it names the part that is too long: the first text (a rerank
 * query) when it alone, with [CLS] and [SEP], leaves no room for the
 * second within max_seq, else the second.
 */

static void
ngx_http_aiserve_too_long(ngx_http_aiserve_ctx_t *ctx,
    aiserve_encoding_t *enc, ngx_uint_t is_pair, const char *param)
{
    char                       a[NGX_HTTP_AISERVE_PARAMLEN];
    char                       b[NGX_HTTP_AISERVE_PARAMLEN];
    size_t                     k, first;
    ngx_http_aiserve_model_t  *m;

    m = ctx->model;

    if (!is_pair || enc->token_type_ids == NULL) {
        ngx_http_aiserve_invalid(ctx, 422, "too_many_tokens", param,
                                 "%s has %zu tokens, more than the limit of "
                                 "%zu tokens of model \"%.*s\"; %s", param,
                                 enc->n_tokens, m->max_seq,
                                 (int) m->name.len, m->name.data,
                                 ngx_http_aiserve_truncate_hint(ctx));
        return;
    }

    /* [CLS] first [SEP] are type 0, second [SEP] type 1 */
    for (k = 0, first = 0; k < enc->n_tokens; k++) {
        first += (enc->token_type_ids[k] == 0);
    }

    if (ctx->api == NGX_HTTP_AISERVE_API_RERANK) {
        ngx_http_aiserve_name(a, "%s", "query");
        ngx_http_aiserve_name(b, "%s", param);

    } else {
        ngx_http_aiserve_name(a, "%s.text", param);
        ngx_http_aiserve_name(b, "%s.text_pair", param);
    }

    if (first + 2 > m->max_seq) {
        ngx_http_aiserve_invalid(ctx, 422, "too_many_tokens", a,
                                 "%s has %zu tokens with [CLS] and [SEP], "
                                 "which leaves no room for %s within the "
                                 "limit of %zu tokens of model \"%.*s\"; %s",
                                 a, first, b, m->max_seq,
                                 (int) m->name.len, m->name.data,
                                 ngx_http_aiserve_truncate_hint(ctx));
        return;
    }

    ngx_http_aiserve_invalid(ctx, 422, "too_many_tokens", b,
                             "%s and %s have %zu tokens together (%zu and "
                             "%zu, special tokens included), more than the "
                             "limit of %zu tokens of model \"%.*s\"; %s", a, b,
                             enc->n_tokens, first, enc->n_tokens - first,
                             m->max_seq, (int) m->name.len, m->name.data,
                             ngx_http_aiserve_truncate_hint(ctx));
}


/*
 * How a client can get a too long input through: the OpenAI request has no
 * field for it, the TEI-shaped ones have "truncate".
 */

static const char *
ngx_http_aiserve_truncate_hint(ngx_http_aiserve_ctx_t *ctx)
{
    if (ctx->api == NGX_HTTP_AISERVE_API_OPENAI) {
        return "shorten it (an OpenAI embeddings request has no field for "
               "truncation; truncate=on on \"aiserve_model\" makes the "
               "server truncate)";
    }

    return "shorten it or send \"truncate\": true";
}


/*
 * Token ids must be a whole sequence of the model's tokenizer, special
 * tokens included, as /tokenize returns it: they start and end with the
 * ids the model's post-processor puts around a text ([CLS] ... [SEP] for
 * BERT, taken from the encoding of an empty text).  Ids of another
 * tokenizer (tiktoken's, which the openai-based clients send, e.g.
 * LangChain's OpenAIEmbeddings unless check_embedding_ctx_length=False)
 * would otherwise give a wrong vector without an error.
 */

static ngx_int_t
ngx_http_aiserve_bert_sequence(ngx_http_aiserve_ctx_t *ctx,
    json_t *ids, const char *param)
{
    char                       err[NGX_HTTP_AISERVE_ERRLEN];
    size_t                     n;
    int32_t                    head, tail;
    json_t                    *a, *b;
    const char                *hs, *ts;
    aiserve_tok_opts_t         opts;
    aiserve_encoding_t         enc;
    ngx_http_aiserve_model_t  *m;

    m = ctx->model;

    aiserve_tok_opts_default(&opts);
    opts.truncation = 0;
    opts.add_special_tokens = 1;

    ngx_memzero(&enc, sizeof(aiserve_encoding_t));

    if (aiserve_tok_encode(m->tok, "", 0, NULL, 0, &opts, &enc, err,
                           sizeof(err))
        != 0)
    {
        ngx_http_aiserve_invalid(ctx, 500, "internal_error", NULL,
                                 "%s", err);
        return NGX_ERROR;
    }

    if (enc.n_tokens < 2) {
        /* a tokenizer without a post-processor: nothing to check */
        aiserve_encoding_free(&enc);
        return NGX_OK;
    }

    head = enc.input_ids[0];
    tail = enc.input_ids[enc.n_tokens - 1];
    aiserve_encoding_free(&enc);

    n = json_array_size(ids);
    a = json_array_get(ids, 0);
    b = json_array_get(ids, n - 1);

    if (n >= 2
        && json_is_integer(a) && json_integer_value(a) == head
        && json_is_integer(b) && json_integer_value(b) == tail)
    {
        return NGX_OK;
    }

    hs = aiserve_tok_id_to_token(m->tok, head);
    ts = aiserve_tok_id_to_token(m->tok, tail);

    ngx_http_aiserve_invalid(ctx, 422, "invalid_token_sequence", param,
                             "%s is not a token sequence of model \"%.*s\": "
                             "it must start with %s (%d) and end with %s "
                             "(%d), as /tokenize returns it; send text "
                             "instead of ids made by another tokenizer "
                             "(tiktoken's, as LangChain's OpenAIEmbeddings "
                             "sends unless check_embedding_ctx_length=False)",
                             param, (int) m->name.len, m->name.data,
                             hs ? hs : "?", head,
                             ts ? ts : "?", tail);

    return NGX_ERROR;
}


/* An array of token ids, special tokens included, as /tokenize returns. */

static ngx_int_t
ngx_http_aiserve_token_ids(ngx_http_aiserve_ctx_t *ctx,
    ngx_uint_t i, json_t *ids, ngx_uint_t truncate, const char *param)
{
    char                       idparam[NGX_HTTP_AISERVE_PARAMLEN];
    size_t                     k, n, vocab, first;
    json_t                    *v;
    int32_t                   *p;
    json_int_t                 id;
    ngx_http_aiserve_model_t  *m;

    m = ctx->model;
    n = json_array_size(ids);
    vocab = m->info->vocab_size;
    first = 0;

    if (n == 0) {
        ngx_http_aiserve_invalid(ctx, 422, "empty_input", param,
                                 "%s must not be empty", param);
        return NGX_ERROR;
    }

    if (n > m->max_seq) {
        if (!truncate) {
            ngx_http_aiserve_invalid(ctx, 422, "too_many_tokens", param,
                                     "%s has %zu tokens, more than the limit "
                                     "of %zu tokens of model \"%.*s\"; %s",
                                     param, n, m->max_seq,
                                     (int) m->name.len, m->name.data,
                                     ngx_http_aiserve_truncate_hint(ctx));
            return NGX_ERROR;
        }

        first = ctx->truncate_left ? json_array_size(ids) - m->max_seq : 0;
        n = m->max_seq;
    }

    p = ngx_http_aiserve_palloc(ctx, n * sizeof(int32_t));
    if (p == NULL) {
        ngx_http_aiserve_invalid(ctx, 500, "internal_error", NULL,
                                 "out of memory");
        return NGX_ERROR;
    }

    for (k = 0; k < n; k++) {
        v = json_array_get(ids, first + k);
        id = json_is_integer(v) ? json_integer_value(v) : -1;

        if (id < 0 || (size_t) id >= vocab) {
            ngx_http_aiserve_param(idparam, param, first + k);
            ngx_http_aiserve_invalid(ctx, 422, "invalid_token", idparam,
                                     "%s must be a token id from 0 to %zu",
                                     idparam, vocab - 1);
            return NGX_ERROR;
        }

        p[k] = (int32_t) id;
    }

    if (ngx_http_aiserve_bert_sequence(ctx, ids, param) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->seqs[i].input_ids = p;
    ctx->seqs[i].token_type_ids = NULL;
    ctx->seqs[i].n_tokens = n;
    ctx->prompt_tokens += n;

    return NGX_OK;
}


/*
 * FIELD: a string, an array of strings, and with allow_ids an array of
 * token ids or an array of such arrays.  Fills ctx->seqs.
 */

static ngx_int_t
ngx_http_aiserve_inputs(ngx_http_aiserve_ctx_t *ctx,
    const char *field, ngx_uint_t allow_ids, ngx_uint_t truncate,
    size_t per_seq)
{
    char         param[NGX_HTTP_AISERVE_PARAMLEN];
    size_t       len;
    json_t      *in, *v;
    ngx_uint_t   i, n, ids;
    const char  *text;

    in = json_object_get(ctx->doc, field);

    if (in == NULL || json_is_null(in)) {
        ngx_http_aiserve_invalid(ctx, 422, "missing_field", field,
                                 "%s is required", field);
        return NGX_ERROR;
    }

    if (json_is_string(in)) {
        ctx->single = 1;

        if (ngx_http_aiserve_alloc_seqs(ctx, 1, per_seq) != NGX_OK
            || ngx_http_aiserve_get_text(ctx, in, field, &text, &len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        return ngx_http_aiserve_tokenize(ctx, 0, text, len, NULL, 0,
                                         truncate, field);
    }

    if (!json_is_array(in)) {
        ngx_http_aiserve_invalid(ctx, 422, "invalid_type", field,
                                 allow_ids
                                 ? "%s must be a string, an array of strings"
                                   " or of token ids"
                                 : "%s must be a string or an array of "
                                   "strings", field);
        return NGX_ERROR;
    }

    n = json_array_size(in);

    if (n == 0) {
        ngx_http_aiserve_invalid(ctx, 422, "empty_input", field,
                                 "%s must not be empty", field);
        return NGX_ERROR;
    }

    if (allow_ids && json_is_integer(json_array_get(in, 0))) {
        /* one sequence of token ids */
        ctx->single = 1;

        if (ngx_http_aiserve_alloc_seqs(ctx, 1, per_seq) != NGX_OK) {
            return NGX_ERROR;
        }

        return ngx_http_aiserve_token_ids(ctx, 0, in, truncate, field);
    }

    if (n > ctx->alcf->max_inputs) {
        ngx_http_aiserve_invalid(ctx, 422, "too_many_inputs", field,
                                 "%s has %zu items, more than the limit of "
                                 "%zu (aiserve_max_inputs)", field, n,
                                 ctx->alcf->max_inputs);
        return NGX_ERROR;
    }

    if (ngx_http_aiserve_alloc_seqs(ctx, n, per_seq) != NGX_OK) {
        return NGX_ERROR;
    }

    ids = allow_ids && json_is_array(json_array_get(in, 0));

    for (i = 0; i < n; i++) {
        v = json_array_get(in, i);
        ngx_http_aiserve_param(param, field, i);

        if (allow_ids && json_is_array(v) != ids) {
            /* none of the four shapes: strings and token arrays mixed */
            ngx_http_aiserve_invalid(ctx, 422, "invalid_type", param,
                                     "%s must be %s like %s[0]: %s is a "
                                     "string, an array of strings, an array "
                                     "of token ids or an array of such "
                                     "arrays", param,
                                     ids ? "an array of token ids"
                                         : "a string",
                                     field, field);
            return NGX_ERROR;
        }

        if (ids) {
            if (ngx_http_aiserve_token_ids(ctx, i, v, truncate, param)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            continue;
        }

        if (ngx_http_aiserve_get_text(ctx, v, param, &text, &len)
            != NGX_OK
            || ngx_http_aiserve_tokenize(ctx, i, text, len, NULL, 0,
                                         truncate, param)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* OpenAI's "dimensions": 1 .. hidden_size; the result is shortened and
 * L2-normalized again, as OpenAI does for its text-embedding-3 models. */

static ngx_int_t
ngx_http_aiserve_dimensions(ngx_http_aiserve_ctx_t *ctx)
{
    json_t      *v;
    json_int_t   d;

    v = json_object_get(ctx->doc, "dimensions");

    if (v == NULL || json_is_null(v)) {
        ctx->dimensions = 0;
        return NGX_OK;
    }

    d = json_is_integer(v) ? json_integer_value(v) : 0;

    if (d < 1 || (size_t) d > ctx->model->info->hidden_size) {
        ngx_http_aiserve_invalid(ctx, 422, "invalid_value", "dimensions",
                                 "dimensions must be an integer from 1 to "
                                 "%zu", ctx->model->info->hidden_size);
        return NGX_ERROR;
    }

    ctx->dimensions = d;
    return NGX_OK;
}


static void
ngx_http_aiserve_prepare_openai(ngx_http_aiserve_ctx_t *ctx)
{
    json_t      *v;
    const char  *s;

    v = json_object_get(ctx->doc, "encoding_format");

    if (v != NULL && !json_is_null(v)) {
        s = json_is_string(v) ? json_string_value(v) : "";

        if (ngx_strcmp(s, "base64") == 0) {
            ctx->base64 = 1;

        } else if (ngx_strcmp(s, "float") != 0) {
            ngx_http_aiserve_invalid(ctx, 422, "invalid_value",
                                     "encoding_format",
                                     "encoding_format must be \"float\" or "
                                     "\"base64\"");
            return;
        }
    }

    if (ngx_http_aiserve_dimensions(ctx) != NGX_OK) {
        return;
    }

    ctx->add_special = 1;

    (void) ngx_http_aiserve_inputs(ctx, "input", 1, ctx->model->truncate,
                                   ctx->model->info->hidden_size);
}


/* TEI: "Right" (default) or "Left", the side tokens are cut from */

static ngx_int_t
ngx_http_aiserve_direction(ngx_http_aiserve_ctx_t *ctx)
{
    json_t      *v;
    const char  *s;

    v = json_object_get(ctx->doc, "truncation_direction");

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    s = json_is_string(v) ? json_string_value(v) : "";

    if (strcasecmp(s, "left") == 0) {
        ctx->truncate_left = 1;
        return NGX_OK;
    }

    if (strcasecmp(s, "right") == 0) {
        return NGX_OK;
    }

    ngx_http_aiserve_invalid(ctx, 422, "invalid_value",
                             "truncation_direction",
                             "truncation_direction must be \"Right\" or "
                             "\"Left\"");
    return NGX_ERROR;
}


static void
ngx_http_aiserve_prepare_embed(ngx_http_aiserve_ctx_t *ctx)
{
    ngx_uint_t   normalize, truncate;

    if (ngx_http_aiserve_get_bool(ctx, "normalize", 1, &normalize)
        != NGX_OK
        || ngx_http_aiserve_get_bool(ctx, "truncate", ctx->model->truncate,
                                     &truncate)
           != NGX_OK
        || ngx_http_aiserve_dimensions(ctx) != NGX_OK)
    {
        return;
    }

    if (ngx_http_aiserve_direction(ctx) != NGX_OK) {
        return;
    }

    ctx->normalize = normalize;
    ctx->add_special = 1;

    (void) ngx_http_aiserve_inputs(ctx, "inputs", 1, truncate,
                                   ctx->model->info->hidden_size);
}


/*
 * predict: inputs is a string, an object {"text", "text_pair"}, or an
 * array of these.  top_k absent keeps the pipeline's legacy shape (the top
 * label per input); top_k null returns every label, sorted.
 */

static void
ngx_http_aiserve_prepare_predict(ngx_http_aiserve_ctx_t *ctx)
{
    char         param[NGX_HTTP_AISERVE_PARAMLEN],
                 pparam[NGX_HTTP_AISERVE_PARAMLEN];
    size_t       len, pair_len;
    json_t      *in, *v, *t, *tp;
    ngx_uint_t   i, n, truncate, raw;
    const char  *text, *pair;
    json_int_t   k;
    int          fn;

    if (ngx_http_aiserve_get_bool(ctx, "truncate", ctx->model->truncate,
                                  &truncate)
        != NGX_OK
        || ngx_http_aiserve_get_bool(ctx, "raw_scores", 0, &raw) != NGX_OK)
    {
        return;
    }

    v = json_object_get(ctx->doc, "top_k");

    if (v == NULL && ctx->hf) {
        /* Hugging Face's Inference API: every label, sorted */
        ctx->top_k = -1;

    } else if (v == NULL) {
        ctx->legacy = 1;
        ctx->top_k = 1;

    } else if (json_is_null(v)) {
        ctx->top_k = -1;

    } else {
        k = json_is_integer(v) ? json_integer_value(v) : -1;

        if (k < 0) {
            ngx_http_aiserve_invalid(ctx, 422, "invalid_value", "top_k",
                                     "top_k must be null or an integer >= 0");
            return;
        }

        ctx->top_k = k;
    }

    ctx->fn = raw ? AISERVE_FN_NONE : AISERVE_FN_DEFAULT;

    v = json_object_get(ctx->doc, "function_to_apply");

    if (v != NULL && !json_is_null(v)) {
        fn = aiserve_fn_parse(json_is_string(v) ? json_string_value(v) : "");

        if (fn < 0) {
            ngx_http_aiserve_invalid(ctx, 422, "invalid_value",
                                     "function_to_apply",
                                     "function_to_apply must be \"sigmoid\","
                                     " \"softmax\" or \"none\"");
            return;
        }

        if (raw && fn != AISERVE_FN_NONE) {
            ngx_http_aiserve_invalid(ctx, 422, "invalid_value",
                                     "function_to_apply",
                                     "raw_scores: true asks for the scores "
                                     "without a function, function_to_apply "
                                     "names one: send one of the two");
            return;
        }

        ctx->fn = fn;
    }

    if (ctx->fn == AISERVE_FN_DEFAULT) {
        ctx->fn = aiserve_fn_default(ctx->model->info);
    }

    ctx->add_special = 1;

    in = json_object_get(ctx->doc, "inputs");

    if (in == NULL || json_is_null(in)) {
        ngx_http_aiserve_invalid(ctx, 422, "missing_field", "inputs",
                                 "inputs is required");
        return;
    }

    if (json_is_array(in)) {
        n = json_array_size(in);

        if (n == 0) {
            ngx_http_aiserve_invalid(ctx, 422, "empty_input", "inputs",
                                     "inputs must not be empty");
            return;
        }

        if (n > ctx->alcf->max_inputs) {
            ngx_http_aiserve_invalid(ctx, 422, "too_many_inputs",
                                     "inputs", "inputs has %zu items, more "
                                     "than the limit of %zu "
                                     "(aiserve_max_inputs)", n,
                                     ctx->alcf->max_inputs);
            return;
        }

    } else {
        n = 1;
        ctx->single = 1;
    }

    if (ngx_http_aiserve_alloc_seqs(ctx, n,
                                    ctx->model->info->num_labels)
        != NGX_OK)
    {
        return;
    }

    for (i = 0; i < n; i++) {
        if (ctx->single) {
            v = in;
            ngx_http_aiserve_name(param, "%s", "inputs");

        } else {
            v = json_array_get(in, i);
            ngx_http_aiserve_param(param, "inputs", i);
        }

        pair = NULL;
        pair_len = 0;

        if (json_is_object(v)) {
            if (ctx->single) {
                /* a single {"text", "text_pair"}: the pipeline answers a
                 * bare object in its legacy shape */
                ctx->single = 0;
                ctx->n_texts = 1;
            }

            t = json_object_get(v, "text");
            tp = json_object_get(v, "text_pair");

            ngx_http_aiserve_name(pparam, "%s.text",
                         param);

            if (t == NULL || json_is_null(t)) {
                ngx_http_aiserve_invalid(ctx, 422, "missing_field",
                                         pparam, "%s is required", pparam);
                return;
            }

            if (ngx_http_aiserve_get_text(ctx, t, pparam, &text, &len)
                != NGX_OK)
            {
                return;
            }

            if (tp != NULL && !json_is_null(tp)) {
                ngx_http_aiserve_name(pparam, "%s.text_pair", param);

                if (ngx_http_aiserve_get_text(ctx, tp, pparam, &pair,
                                              &pair_len)
                    != NGX_OK)
                {
                    return;
                }
            }

        } else if (ngx_http_aiserve_get_text(ctx, v, param, &text, &len)
                   != NGX_OK)
        {
            return;
        }

        if (ngx_http_aiserve_tokenize(ctx, i, text, len, pair, pair_len,
                                      truncate, param)
            != NGX_OK)
        {
            return;
        }
    }

    if (ctx->hf) {
        /* the Inference API answers a list per input, also for one */
        ctx->single = 0;
    }
}


static void
ngx_http_aiserve_prepare_rerank(ngx_http_aiserve_ctx_t *ctx)
{
    size_t       qlen;
    json_t      *texts;
    ngx_uint_t   n, truncate, return_text, raw;
    const char  *query;

    if (ngx_http_aiserve_get_bool(ctx, "truncate", ctx->model->truncate,
                                  &truncate)
        != NGX_OK
        || ngx_http_aiserve_get_bool(ctx, "return_text", 0, &return_text)
           != NGX_OK
        || ngx_http_aiserve_get_bool(ctx, "raw_scores", 0, &raw) != NGX_OK)
    {
        return;
    }

    ctx->return_text = return_text;
    ctx->raw_scores = raw;
    ctx->add_special = 1;

    if (json_object_get(ctx->doc, "query") == NULL) {
        ngx_http_aiserve_invalid(ctx, 422, "missing_field", "query",
                                 "query is required");
        return;
    }

    if (ngx_http_aiserve_get_text(ctx, json_object_get(ctx->doc, "query"),
                                  "query", &query, &qlen)
        != NGX_OK)
    {
        return;
    }

    texts = json_object_get(ctx->doc, "texts");
    n = ngx_http_aiserve_array(ctx, texts, "texts", "an array of strings");

    if (n == 0 || ngx_http_aiserve_max_inputs(ctx, "texts", n, 0) != NGX_OK)
    {
        return;
    }

    if (ngx_http_aiserve_alloc_seqs(ctx, n, ctx->model->info->num_labels)
        != NGX_OK)
    {
        return;
    }

    (void) ngx_http_aiserve_texts(ctx, texts, "texts", 0, query, qlen,
                                  truncate);
}


static void
ngx_http_aiserve_prepare_tokenize(ngx_http_aiserve_ctx_t *ctx)
{
    ngx_uint_t  add_special;

    if (ngx_http_aiserve_get_bool(ctx, "add_special_tokens", 1,
                                  &add_special)
        != NGX_OK)
    {
        return;
    }

    ctx->add_special = add_special;

    /* every token, as TEI: max_seq bounds what a model reads, not this */
    (void) ngx_http_aiserve_inputs(ctx, "inputs", 0, 0, 0);
}


static void
ngx_http_aiserve_prepare_ner(ngx_http_aiserve_ctx_t *ctx)
{
    char         param[NGX_HTTP_AISERVE_PARAMLEN];
    json_t      *v;
    ngx_uint_t   i, truncate;
    int          agg;

    if (ngx_http_aiserve_get_bool(ctx, "truncate", ctx->model->truncate,
                                  &truncate)
        != NGX_OK)
    {
        return;
    }

    v = json_object_get(ctx->doc, "aggregation_strategy");
    ctx->aggregation = AISERVE_AGG_NONE;

    if (v != NULL && !json_is_null(v)) {
        agg = aiserve_agg_parse(json_is_string(v) ? json_string_value(v)
                                                  : "");

        if (agg < 0) {
            ngx_http_aiserve_invalid(ctx, 422, "invalid_value",
                                     "aggregation_strategy",
                                     "aggregation_strategy must be one of "
                                     "none, simple, first, average, max");
            return;
        }

        ctx->aggregation = agg;
    }

    v = json_object_get(ctx->doc, "ignore_labels");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_array(v)) {
            ngx_http_aiserve_invalid(ctx, 422, "invalid_type",
                                     "ignore_labels",
                                     "ignore_labels must be an array of "
                                     "strings");
            return;
        }

        for (i = 0; i < json_array_size(v); i++) {
            if (!json_is_string(json_array_get(v, i))) {
                ngx_http_aiserve_param(param, "ignore_labels", i);
                ngx_http_aiserve_invalid(ctx, 422, "invalid_type", param,
                                         "%s must be a string", param);
                return;
            }
        }
    }

    ctx->add_special = 1;

    /* outputs: num_labels logits per token; sized after tokenizing */

    if (ngx_http_aiserve_inputs(ctx, "inputs", 0, truncate, 0) != NGX_OK) {
        return;
    }

    (void) ngx_http_aiserve_alloc_tokens_out(ctx,
                                             ctx->model->info->num_labels);
}


/*
 * decode (TEI /decode): ids is an array of token ids or an array of such
 * arrays; skip_special_tokens (default true).  Ids are checked against the
 * vocabulary (tokenizers drops unknown ids silently).
 */

static void
ngx_http_aiserve_prepare_decode(ngx_http_aiserve_ctx_t *ctx)
{
    char         param[NGX_HTTP_AISERVE_PARAMLEN],
                 idparam[NGX_HTTP_AISERVE_PARAMLEN];
    size_t       k, len, vocab;
    json_t      *in, *v, *id;
    int32_t     *p;
    ngx_uint_t   i, n, skip;
    json_int_t   t;

    if (ngx_http_aiserve_get_bool(ctx, "skip_special_tokens", 1, &skip)
        != NGX_OK)
    {
        return;
    }

    ctx->skip_special = skip;

    in = json_object_get(ctx->doc, "ids");
    n = ngx_http_aiserve_array(ctx, in, "ids", "an array of token ids or "
                               "an array of such arrays");

    if (n == 0) {
        return;
    }

    if (!json_is_array(json_array_get(in, 0))) {
        ctx->single = 1;
        n = 1;

    } else if (ngx_http_aiserve_max_inputs(ctx, "ids", n, 0) != NGX_OK) {
        return;
    }

    if (ngx_http_aiserve_alloc_seqs(ctx, n, 0) != NGX_OK) {
        return;
    }

    vocab = aiserve_tok_vocab_size(ctx->model->tok);

    for (i = 0; i < n; i++) {
        if (ctx->single) {
            v = in;
            ngx_http_aiserve_name(param, "%s", "ids");

        } else {
            v = json_array_get(in, i);
            ngx_http_aiserve_param(param, "ids", i);

            if (!json_is_array(v)) {
                ngx_http_aiserve_invalid(ctx, 422, "invalid_type", param,
                                         "%s must be an array of token ids",
                                         param);
                return;
            }
        }

        len = json_array_size(v);

        if (len == 0) {
            ngx_http_aiserve_invalid(ctx, 422, "empty_input", param,
                                     "%s must not be empty", param);
            return;
        }

        p = ngx_http_aiserve_palloc(ctx, (len + 1) * sizeof(int32_t));
        if (p == NULL) {
            ngx_http_aiserve_invalid(ctx, 500, "internal_error", NULL,
                                     "out of memory");
            return;
        }

        for (k = 0; k < len; k++) {
            id = json_array_get(v, k);
            t = json_is_integer(id) ? json_integer_value(id) : -1;

            if (t < 0 || (size_t) t >= vocab) {
                ngx_http_aiserve_param(idparam, param, k);
                ngx_http_aiserve_invalid(ctx, 422, "invalid_token",
                                         idparam, "%s must be a token id "
                                         "from 0 to %zu", idparam,
                                         vocab - 1);
                return;
            }

            p[k] = (int32_t) t;
        }

        ctx->seqs[i].input_ids = p;
        ctx->seqs[i].n_tokens = len;
        ctx->prompt_tokens += len;
    }
}


/*
 * similarity (TEI /similarity, Hugging Face's sentence-similarity):
 * inputs {"source_sentence", "sentences"}; truncate and
 * truncation_direction (in "parameters" as the client sends them).  The
 * source sentence and the sentences are embedded as one request.
 */

static void
ngx_http_aiserve_prepare_similarity(ngx_http_aiserve_ctx_t *ctx)
{
    char         param[NGX_HTTP_AISERVE_PARAMLEN];
    size_t       len;
    json_t      *in, *src, *sentences, *v;
    ngx_uint_t   n, truncate;
    const char  *text, *key;

    if (ngx_http_aiserve_get_bool(ctx, "truncate", ctx->model->truncate,
                                  &truncate)
        != NGX_OK
        || ngx_http_aiserve_direction(ctx) != NGX_OK)
    {
        return;
    }

    ctx->add_special = 1;

    in = json_object_get(ctx->doc, "inputs");

    if (!json_is_object(in)) {
        ngx_http_aiserve_invalid(ctx, 422,
                                 in ? "invalid_type" : "missing_field",
                                 "inputs", "inputs must be an object "
                                 "{\"source_sentence\", \"sentences\"}");
        return;
    }

    json_object_foreach(in, key, v) {
        if (ngx_strcmp(key, "source_sentence") != 0
            && ngx_strcmp(key, "sentences") != 0)
        {
            /* a 422, as for an unknown top-level field */
            ngx_http_aiserve_name(param, "inputs.%s", key);
            ngx_http_aiserve_invalid(ctx, 422, "unknown_field", param,
                                     "%s is not a field of inputs, which "
                                     "holds source_sentence and sentences",
                                     param);
            return;
        }
    }

    src = json_object_get(in, "source_sentence");
    sentences = json_object_get(in, "sentences");

    if (src == NULL) {
        ngx_http_aiserve_invalid(ctx, 422, "missing_field",
                                 "inputs.source_sentence",
                                 "inputs.source_sentence is required");
        return;
    }

    /* the source sentence is an input too */

    n = ngx_http_aiserve_array(ctx, sentences, "inputs.sentences",
                               "an array of strings");

    if (n == 0
        || ngx_http_aiserve_max_inputs(ctx, "inputs.sentences", n, 1)
           != NGX_OK)
    {
        return;
    }

    if (ngx_http_aiserve_alloc_seqs(ctx, n + 1,
                                    ctx->model->info->hidden_size)
        != NGX_OK)
    {
        return;
    }

    if (ngx_http_aiserve_get_text(ctx, src, "inputs.source_sentence",
                                  &text, &len)
        != NGX_OK
        || ngx_http_aiserve_tokenize(ctx, 0, text, len, NULL, 0, truncate,
                                     "inputs.source_sentence")
           != NGX_OK)
    {
        return;
    }

    (void) ngx_http_aiserve_texts(ctx, sentences, "inputs.sentences", 1,
                                  NULL, 0, truncate);
}


/*
 * embed_all (TEI /embed_all): inputs as /embed, truncate,
 * truncation_direction; the answer is the last hidden state of every
 * token, special tokens included, per input.
 */

static void
ngx_http_aiserve_prepare_embed_all(ngx_http_aiserve_ctx_t *ctx)
{
    ngx_uint_t  truncate;

    if (ngx_http_aiserve_get_bool(ctx, "truncate", ctx->model->truncate,
                                  &truncate)
        != NGX_OK
        || ngx_http_aiserve_direction(ctx) != NGX_OK)
    {
        return;
    }

    ctx->add_special = 1;
    ctx->hidden = 1;

    if (ngx_http_aiserve_inputs(ctx, "inputs", 1, truncate, 0) != NGX_OK) {
        return;
    }

    (void) ngx_http_aiserve_alloc_tokens_out(ctx,
                                             ctx->model->info->hidden_size);
}


/* Whether api= API can answer with a model of TASK: the configuration's
 * check (aiserve_infer), the deployed models' and the fuzz target's. */

ngx_uint_t
ngx_http_aiserve_api_fits(ngx_uint_t api, ngx_uint_t task)
{
    switch (api) {
    case NGX_HTTP_AISERVE_API_OPENAI:
    case NGX_HTTP_AISERVE_API_EMBED:
    case NGX_HTTP_AISERVE_API_SIMILARITY:
        return task == NGX_HTTP_AISERVE_TASK_EMBED;
    case NGX_HTTP_AISERVE_API_PREDICT:
    case NGX_HTTP_AISERVE_API_RERANK:
        return task == NGX_HTTP_AISERVE_TASK_CLASSIFY
               || task == NGX_HTTP_AISERVE_TASK_RERANK;
    case NGX_HTTP_AISERVE_API_NER:
        return task == NGX_HTTP_AISERVE_TASK_NER;
    default: /* tokenize, decode, embed_all, info, tei */
        return 1;
    }
}


/*
 * The inputs of a request whose fields passed ngx_http_aiserve_fields():
 * validated and tokenized into ctx->seqs (with ctx->out sized for the
 * answer) by the shape of ctx->api; more than the location's
 * aiserve_max_request_tokens in all is a 422, before the meter's reserve
 * and the queue, so nothing is charged or run.  A refusal is in
 * ctx->error, with ctx->done set.
 */

void
ngx_http_aiserve_request_inputs(ngx_http_aiserve_ctx_t *ctx)
{
    const char  *field;

    switch (ctx->api) {

    case NGX_HTTP_AISERVE_API_OPENAI:
        ngx_http_aiserve_prepare_openai(ctx);
        break;

    case NGX_HTTP_AISERVE_API_EMBED:
        ngx_http_aiserve_prepare_embed(ctx);
        break;

    case NGX_HTTP_AISERVE_API_PREDICT:
        ngx_http_aiserve_prepare_predict(ctx);
        break;

    case NGX_HTTP_AISERVE_API_RERANK:
        ngx_http_aiserve_prepare_rerank(ctx);
        break;

    case NGX_HTTP_AISERVE_API_TOKENIZE:
        ngx_http_aiserve_prepare_tokenize(ctx);
        break;

    case NGX_HTTP_AISERVE_API_DECODE:
        ngx_http_aiserve_prepare_decode(ctx);
        break;

    case NGX_HTTP_AISERVE_API_SIMILARITY:
        ngx_http_aiserve_prepare_similarity(ctx);
        break;

    case NGX_HTTP_AISERVE_API_EMBED_ALL:
        ngx_http_aiserve_prepare_embed_all(ctx);
        break;

    default:
        ngx_http_aiserve_prepare_ner(ctx);
        break;
    }

    if (ctx->done || ctx->prompt_tokens <= ctx->alcf->max_request_tokens) {
        return;
    }

    switch (ctx->api) {
    case NGX_HTTP_AISERVE_API_OPENAI:
        field = "input";
        break;
    case NGX_HTTP_AISERVE_API_RERANK:
        field = "texts";
        break;
    case NGX_HTTP_AISERVE_API_DECODE:
        field = "ids";
        break;
    default:
        field = "inputs";
        break;
    }

    ngx_http_aiserve_invalid(ctx, 422, "too_many_tokens", field,
                             "the request has %zu tokens, more than the "
                             "limit of %zu tokens per request "
                             "(aiserve_max_request_tokens): split the "
                             "inputs over several requests, or raise "
                             "aiserve_max_request_tokens",
                             ctx->prompt_tokens,
                             ctx->alcf->max_request_tokens);
}
