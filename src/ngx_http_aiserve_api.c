/*
 * Request shapes and responses of the aiserve routes.  The shape of a
 * location is chosen by "aiserve_infer NAME api=..." (default: from the
 * model's task); URLs are the operator's locations.
 *
 *   openai    POST /v1/embeddings of the OpenAI API
 *   embed     Text Embeddings Inference /embed
 *   predict   TEI /predict with the semantics of transformers'
 *             TextClassificationPipeline (top_k, function_to_apply)
 *   rerank    TEI /rerank
 *   tokenize  TEI /tokenize
 *   ner       transformers' TokenClassificationPipeline
 *             (aggregation_strategy none, simple, first, average, max)
 *   decode    TEI /decode (token ids -> text)
 *   similarity  TEI /similarity, Hugging Face's sentence-similarity
 *             (cosine of the source sentence with each sentence)
 *   embed_all TEI /embed_all (the last hidden state of every token)
 *   tei       TEI's POST /: the model's own route, chosen per request
 *
 * Hugging Face's Inference API shape {"inputs", "parameters": {...}} is
 * read as if the parameters were top-level fields.  The TEI-shaped routes
 * refuse fields they do not know (422 unknown_field) rather than answer
 * as if they were absent; openai ignores them, as OpenAI's API does for
 * "user".  "model", when given, must name the served model or one of
 * its fine-tuned models the caller may use (ngx_http_aiserve_deploy.c),
 * else 404 model_not_found.
 *
 * Validation errors are 422 and name the field and index ("input[2]").
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <math.h>

#include "ngx_http_aiserve_infer.h"


#define NGX_HTTP_AISERVE_PARAMLEN  64

#define ngx_http_aiserve_param(buf, name, i)                                 \
    (*ngx_snprintf((u_char *) (buf), NGX_HTTP_AISERVE_PARAMLEN - 1,          \
                   "%s[%ui]%Z", name, (ngx_uint_t) (i)) = '\0', buf)


static void ngx_http_aiserve_invalid(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_uint_t status, const char *code,
    const char *param, const char *fmt, ...);
static ngx_int_t ngx_http_aiserve_get_text(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, json_t *v, const char *param,
    const char **text, size_t *len);
static ngx_int_t ngx_http_aiserve_get_bool(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, const char *name, ngx_uint_t def,
    ngx_uint_t *value);
static ngx_uint_t ngx_http_aiserve_array(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, json_t *v, const char *param,
    const char *what);
static ngx_int_t ngx_http_aiserve_max_inputs(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, const char *param, ngx_uint_t n,
    ngx_uint_t extra);
static ngx_int_t ngx_http_aiserve_alloc_seqs(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_uint_t n, size_t per_seq);
static ngx_int_t ngx_http_aiserve_alloc_tokens_out(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, size_t per_token);
static ngx_int_t ngx_http_aiserve_texts(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, json_t *texts, const char *param,
    ngx_uint_t first, const char *query, size_t qlen, ngx_uint_t truncate);
static ngx_int_t ngx_http_aiserve_tokenize(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_uint_t i, const char *text, size_t len,
    const char *pair, size_t pair_len, ngx_uint_t truncate,
    const char *param);
static void ngx_http_aiserve_too_long(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, aiserve_encoding_t *enc, ngx_uint_t is_pair,
    const char *param);
static const char *ngx_http_aiserve_truncate_hint(ngx_http_aiserve_ctx_t *ctx);
static ngx_int_t ngx_http_aiserve_bert_sequence(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, json_t *ids, const char *param);
static ngx_int_t ngx_http_aiserve_token_ids(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_uint_t i, json_t *ids,
    ngx_uint_t truncate, const char *param);
static ngx_int_t ngx_http_aiserve_inputs(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, const char *field, ngx_uint_t allow_ids,
    ngx_uint_t truncate, size_t per_seq);
static ngx_int_t ngx_http_aiserve_dimensions(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_openai(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_embed(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_predict(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_rerank(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_tokenize(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_ner(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_decode(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_similarity(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_prepare_embed_all(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static ngx_int_t ngx_http_aiserve_direction(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static ngx_uint_t ngx_http_aiserve_route(ngx_http_aiserve_ctx_t *ctx);
static ngx_int_t ngx_http_aiserve_parameters(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static ngx_int_t ngx_http_aiserve_fields(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);
static ngx_int_t ngx_http_aiserve_respond_decode(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_http_aiserve_json_t *j);
static void ngx_http_aiserve_respond_similarity(ngx_http_aiserve_ctx_t *ctx,
    ngx_http_aiserve_json_t *j);
static void ngx_http_aiserve_respond_hidden(ngx_http_aiserve_ctx_t *ctx,
    ngx_http_aiserve_json_t *j);

static void ngx_http_aiserve_embedding(ngx_http_aiserve_ctx_t *ctx,
    ngx_http_aiserve_json_t *j, float *v, size_t n, ngx_uint_t normalize);
static void ngx_http_aiserve_respond_labels(ngx_http_aiserve_ctx_t *ctx,
    ngx_http_aiserve_json_t *j, const float *logits);
static ngx_int_t ngx_http_aiserve_respond_ner(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_http_aiserve_json_t *j,
    ngx_http_aiserve_seq_t *seq, const float *logits);


static void
ngx_http_aiserve_invalid(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx,
    ngx_uint_t status, const char *code, const char *param,
    const char *fmt, ...)
{
    u_char   msg[NGX_MAX_ERROR_STR], *last;
    va_list  args;

    va_start(args, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg) - 1, fmt, args);
    va_end(args);

    *last = '\0';

    ctx->rc = ngx_http_aiserve_send_error(r, status,
                                          status >= 500
                                          ? "server_error"
                                          : "invalid_request_error",
                                          code, param, "%s", msg);
    ctx->done = 1;
}


void
ngx_http_aiserve_api_prepare(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
{
    json_t                    *v;
    ngx_str_t                  name;
    ngx_uint_t                 api;
    const char                *field;
    ngx_http_aiserve_model_t  *m;

    ctx->api = ngx_http_aiserve_route(ctx);

    if (ngx_http_aiserve_parameters(r, ctx) != NGX_OK
        || ngx_http_aiserve_fields(r, ctx) != NGX_OK)
    {
        return;
    }

    v = json_object_get(ctx->doc, "model");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v)) {
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_type", "model",
                                     "model must be a string");
            return;
        }

        name.data = (u_char *) json_string_value(v);
        name.len = json_string_length(v);

        if (name.len != ctx->model->name.len
            || ngx_strncmp(name.data, ctx->model->name.data, name.len) != 0)
        {
            /* a fine-tuned model of the location's base */
            m = ngx_http_aiserve_deploy_find(r, ctx->model, ctx->alcf->api,
                                             &name);
            if (m == NULL) {
                ngx_http_aiserve_invalid(r, ctx, NGX_HTTP_NOT_FOUND,
                                         "model_not_found", "model",
                                         "the model \"%s\" is not served "
                                         "here; this location serves \"%V\"",
                                         json_string_value(v),
                                         &ctx->model->name);
                return;
            }

            ctx->model = m;
            ctx->fine_tuned = 1;

            /* api=tei: the route of the fine-tuned model's task */
            api = ngx_http_aiserve_route(ctx);

            if (api != ctx->api) {
                ctx->api = api;

                if (ngx_http_aiserve_fields(r, ctx) != NGX_OK) {
                    return;
                }
            }
        }
    }

    switch (ctx->api) {

    case NGX_HTTP_AISERVE_API_OPENAI:
        ngx_http_aiserve_prepare_openai(r, ctx);
        break;

    case NGX_HTTP_AISERVE_API_EMBED:
        ngx_http_aiserve_prepare_embed(r, ctx);
        break;

    case NGX_HTTP_AISERVE_API_PREDICT:
        ngx_http_aiserve_prepare_predict(r, ctx);
        break;

    case NGX_HTTP_AISERVE_API_RERANK:
        ngx_http_aiserve_prepare_rerank(r, ctx);
        break;

    case NGX_HTTP_AISERVE_API_TOKENIZE:
        ngx_http_aiserve_prepare_tokenize(r, ctx);
        break;

    case NGX_HTTP_AISERVE_API_DECODE:
        ngx_http_aiserve_prepare_decode(r, ctx);
        break;

    case NGX_HTTP_AISERVE_API_SIMILARITY:
        ngx_http_aiserve_prepare_similarity(r, ctx);
        break;

    case NGX_HTTP_AISERVE_API_EMBED_ALL:
        ngx_http_aiserve_prepare_embed_all(r, ctx);
        break;

    default:
        ngx_http_aiserve_prepare_ner(r, ctx);
        break;
    }

    if (ctx->done || ctx->prompt_tokens <= ctx->alcf->max_request_tokens) {
        return;
    }

    /* before the meter's reserve and the queue: nothing charged or run */

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

    ngx_http_aiserve_invalid(r, ctx, 422, "too_many_tokens", field,
                             "the request has %ui tokens, more than the "
                             "limit of %ui tokens per request "
                             "(aiserve_max_request_tokens): split the "
                             "inputs over several requests, or raise "
                             "aiserve_max_request_tokens",
                             ctx->prompt_tokens,
                             ctx->alcf->max_request_tokens);
}


/*
 * The shape of this request: the location's api=, or for api=tei (TEI's
 * POST /) the model's own route, as TEI routes "/" by model type; an
 * embedding model answers Hugging Face's sentence-similarity shape
 * ({"inputs": {"source_sentence", "sentences"}}) too, which TEI does only
 * when started for that task.
 */

static ngx_uint_t
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

static ngx_int_t
ngx_http_aiserve_parameters(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
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
        ngx_http_aiserve_invalid(r, ctx, 422, "invalid_type", "parameters",
                                 "parameters must be an object");
        return NGX_ERROR;
    }

    ctx->hf = 1;

    json_incref(params);
    json_object_del(ctx->doc, "parameters");

    json_object_foreach(params, key, v) {
        if (json_object_get(ctx->doc, key) != NULL) {
            ngx_snprintf((u_char *) param, sizeof(param) - 1,
                         "parameters.%s%Z", key);
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_value", param,
                                     "%s is given both at the top level "
                                     "and in parameters", key);
            json_decref(params);
            return NGX_ERROR;
        }

        if (json_object_set(ctx->doc, key, v) != 0) {
            json_decref(params);
            ngx_http_aiserve_invalid(r, ctx, 500, "internal_error", NULL,
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

static ngx_int_t
ngx_http_aiserve_fields(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx)
{
    u_char        list[256], *p;
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
            ? (u_char *) ngx_strstr(key, "\xf4\x8f\xbf\xbf") : NULL;

        if (p) {
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_utf8", NULL,
                                     "a field name is not valid UTF-8 "
                                     "(byte %uz)",
                                     (size_t) (p - (u_char *) key));
            return NGX_ERROR;
        }

        for (i = 0; known[i]; i++) {
            if (ngx_strcmp(key, known[i]) == 0) {
                break;
            }
        }

        if (known[i] == NULL) {
            p = list;

            for (i = 0; known[i]; i++) {
                p = ngx_slprintf(p, list + sizeof(list) - 1, "%s, ",
                                 known[i]);
            }

            *p = '\0';

            ngx_http_aiserve_invalid(r, ctx, 422, "unknown_field", key,
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
ngx_http_aiserve_get_text(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx,
    json_t *v, const char *param, const char **text, size_t *len)
{
    const char  *s, *bad;

    if (!json_is_string(v)) {
        ngx_http_aiserve_invalid(r, ctx, 422, "invalid_type", param,
                                 "%s must be a string", param);
        return NGX_ERROR;
    }

    s = json_string_value(v);
    *len = json_string_length(v);
    *text = s;

    if (*len == 0) {
        ngx_http_aiserve_invalid(r, ctx, 422, "empty_input", param,
                                 "%s must not be empty", param);
        return NGX_ERROR;
    }

    if (ctx->repaired) {
        bad = (const char *) ngx_strlcasestrn((u_char *) s,
                                              (u_char *) s + *len,
                                              (u_char *) "\xf4\x8f\xbf\xbf",
                                              3);
        if (bad) {
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_utf8", param,
                                     "%s is not valid UTF-8 (byte %uz)",
                                     param, (size_t) (bad - s));
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* A JSON boolean field; absent or null means def. */

static ngx_int_t
ngx_http_aiserve_get_bool(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx,
    const char *name, ngx_uint_t def, ngx_uint_t *value)
{
    json_t  *v;

    v = json_object_get(ctx->doc, name);

    if (v == NULL || json_is_null(v)) {
        *value = def;
        return NGX_OK;
    }

    if (!json_is_boolean(v)) {
        ngx_http_aiserve_invalid(r, ctx, 422, "invalid_type", name,
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
ngx_http_aiserve_array(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx,
    json_t *v, const char *param, const char *what)
{
    if (!json_is_array(v)) {
        ngx_http_aiserve_invalid(r, ctx, 422,
                                 v ? "invalid_type" : "missing_field",
                                 param, "%s must be %s", param, what);
        return 0;
    }

    if (json_array_size(v) == 0) {
        ngx_http_aiserve_invalid(r, ctx, 422, "empty_input", param,
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
ngx_http_aiserve_max_inputs(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, const char *param, ngx_uint_t n,
    ngx_uint_t extra)
{
    if (n + extra <= ctx->alcf->max_inputs) {
        return NGX_OK;
    }

    ngx_http_aiserve_invalid(r, ctx, 422, "too_many_inputs", param,
                             "%s has %ui items, more than the limit of %ui "
                             "(aiserve_max_inputs)", param, n,
                             ctx->alcf->max_inputs - extra);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_aiserve_alloc_seqs(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_uint_t n, size_t per_seq)
{
    ngx_uint_t  i;

    ctx->seqs = ngx_pcalloc(r->pool, n * sizeof(ngx_http_aiserve_seq_t));
    if (ctx->seqs == NULL) {
        ngx_http_aiserve_invalid(r, ctx, 500, "internal_error", NULL,
                                 "out of memory");
        return NGX_ERROR;
    }

    ctx->n_seqs = n;

    for (i = 0; i < n; i++) {
        ctx->seqs[i].out_off = i * per_seq;
    }

    if (per_seq) {
        ctx->out_len = n * per_seq;
        ctx->out = ngx_palloc(r->pool, ctx->out_len * sizeof(float));
        if (ctx->out == NULL) {
            ngx_http_aiserve_invalid(r, ctx, 500, "internal_error", NULL,
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
ngx_http_aiserve_texts(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx,
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

        if (ngx_http_aiserve_get_text(r, ctx, json_array_get(texts, i), name,
                                      &text, &len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        rc = query ? ngx_http_aiserve_tokenize(r, ctx, first + i, query,
                                               qlen, text, len, truncate,
                                               name)
                   : ngx_http_aiserve_tokenize(r, ctx, first + i, text, len,
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
ngx_http_aiserve_alloc_tokens_out(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, size_t per_token)
{
    ngx_uint_t  i;

    ctx->out_len = 0;

    for (i = 0; i < ctx->n_seqs; i++) {
        ctx->seqs[i].out_off = ctx->out_len;
        ctx->out_len += ctx->seqs[i].n_tokens * per_token;
    }

    ctx->out = ngx_palloc(r->pool, ctx->out_len * sizeof(float));
    if (ctx->out == NULL) {
        ngx_http_aiserve_invalid(r, ctx, 500, "internal_error", NULL,
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
ngx_http_aiserve_tokenize(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx,
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

    enc = ngx_pcalloc(r->pool, sizeof(aiserve_encoding_t));
    if (enc == NULL) {
        ngx_http_aiserve_invalid(r, ctx, 500, "internal_error", NULL,
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
        ngx_http_aiserve_invalid(r, ctx, 422, "invalid_input", param,
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
        ngx_http_aiserve_too_long(r, ctx, enc, pair != NULL, param);
        return NGX_ERROR;
    }

    if (enc->n_tokens == 0 && ctx->api != NGX_HTTP_AISERVE_API_TOKENIZE)
    {
        ngx_http_aiserve_invalid(r, ctx, 422, "empty_input", param,
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
ngx_http_aiserve_too_long(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx,
    aiserve_encoding_t *enc, ngx_uint_t is_pair, const char *param)
{
    char                       a[NGX_HTTP_AISERVE_PARAMLEN];
    char                       b[NGX_HTTP_AISERVE_PARAMLEN];
    size_t                     k, first;
    ngx_http_aiserve_model_t  *m;

    m = ctx->model;

    if (!is_pair || enc->token_type_ids == NULL) {
        ngx_http_aiserve_invalid(r, ctx, 422, "too_many_tokens", param,
                                 "%s has %uz tokens, more than the limit of "
                                 "%uz tokens of model \"%V\"; %s", param,
                                 enc->n_tokens, m->max_seq, &m->name,
                                 ngx_http_aiserve_truncate_hint(ctx));
        return;
    }

    /* [CLS] first [SEP] are type 0, second [SEP] type 1 */
    for (k = 0, first = 0; k < enc->n_tokens; k++) {
        first += (enc->token_type_ids[k] == 0);
    }

    if (ctx->api == NGX_HTTP_AISERVE_API_RERANK) {
        ngx_cpystrn((u_char *) a, (u_char *) "query", sizeof(a));
        ngx_cpystrn((u_char *) b, (u_char *) param, sizeof(b));

    } else {
        ngx_snprintf((u_char *) a, sizeof(a) - 1, "%s.text%Z", param);
        ngx_snprintf((u_char *) b, sizeof(b) - 1, "%s.text_pair%Z", param);
    }

    if (first + 2 > m->max_seq) {
        ngx_http_aiserve_invalid(r, ctx, 422, "too_many_tokens", a,
                                 "%s has %uz tokens with [CLS] and [SEP], "
                                 "which leaves no room for %s within the "
                                 "limit of %uz tokens of model \"%V\"; %s",
                                 a, first, b, m->max_seq, &m->name,
                                 ngx_http_aiserve_truncate_hint(ctx));
        return;
    }

    ngx_http_aiserve_invalid(r, ctx, 422, "too_many_tokens", b,
                             "%s and %s have %uz tokens together (%uz and "
                             "%uz, special tokens included), more than the "
                             "limit of %uz tokens of model \"%V\"; %s", a, b,
                             enc->n_tokens, first, enc->n_tokens - first,
                             m->max_seq, &m->name,
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
ngx_http_aiserve_bert_sequence(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, json_t *ids, const char *param)
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
        ngx_http_aiserve_invalid(r, ctx, 500, "internal_error", NULL,
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

    ngx_http_aiserve_invalid(r, ctx, 422, "invalid_token_sequence", param,
                             "%s is not a token sequence of model \"%V\": "
                             "it must start with %s (%D) and end with %s "
                             "(%D), as /tokenize returns it; send text "
                             "instead of ids made by another tokenizer "
                             "(tiktoken's, as LangChain's OpenAIEmbeddings "
                             "sends unless check_embedding_ctx_length=False)",
                             param, &m->name, hs ? hs : "?", head,
                             ts ? ts : "?", tail);

    return NGX_ERROR;
}


/* An array of token ids, special tokens included, as /tokenize returns. */

static ngx_int_t
ngx_http_aiserve_token_ids(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx,
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
        ngx_http_aiserve_invalid(r, ctx, 422, "empty_input", param,
                                 "%s must not be empty", param);
        return NGX_ERROR;
    }

    if (n > m->max_seq) {
        if (!truncate) {
            ngx_http_aiserve_invalid(r, ctx, 422, "too_many_tokens", param,
                                     "%s has %uz tokens, more than the limit "
                                     "of %uz tokens of model \"%V\"; %s",
                                     param, n, m->max_seq, &m->name,
                                     ngx_http_aiserve_truncate_hint(ctx));
            return NGX_ERROR;
        }

        first = ctx->truncate_left ? json_array_size(ids) - m->max_seq : 0;
        n = m->max_seq;
    }

    p = ngx_palloc(r->pool, n * sizeof(int32_t));
    if (p == NULL) {
        ngx_http_aiserve_invalid(r, ctx, 500, "internal_error", NULL,
                                 "out of memory");
        return NGX_ERROR;
    }

    for (k = 0; k < n; k++) {
        v = json_array_get(ids, first + k);
        id = json_is_integer(v) ? json_integer_value(v) : -1;

        if (id < 0 || (size_t) id >= vocab) {
            ngx_http_aiserve_param(idparam, param, first + k);
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_token", idparam,
                                     "%s must be a token id from 0 to %uz",
                                     idparam, vocab - 1);
            return NGX_ERROR;
        }

        p[k] = (int32_t) id;
    }

    if (ngx_http_aiserve_bert_sequence(r, ctx, ids, param) != NGX_OK) {
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
ngx_http_aiserve_inputs(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx,
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
        ngx_http_aiserve_invalid(r, ctx, 422, "missing_field", field,
                                 "%s is required", field);
        return NGX_ERROR;
    }

    if (json_is_string(in)) {
        ctx->single = 1;

        if (ngx_http_aiserve_alloc_seqs(r, ctx, 1, per_seq) != NGX_OK
            || ngx_http_aiserve_get_text(r, ctx, in, field, &text, &len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        return ngx_http_aiserve_tokenize(r, ctx, 0, text, len, NULL, 0,
                                         truncate, field);
    }

    if (!json_is_array(in)) {
        ngx_http_aiserve_invalid(r, ctx, 422, "invalid_type", field,
                                 allow_ids
                                 ? "%s must be a string, an array of strings"
                                   " or of token ids"
                                 : "%s must be a string or an array of "
                                   "strings", field);
        return NGX_ERROR;
    }

    n = json_array_size(in);

    if (n == 0) {
        ngx_http_aiserve_invalid(r, ctx, 422, "empty_input", field,
                                 "%s must not be empty", field);
        return NGX_ERROR;
    }

    if (allow_ids && json_is_integer(json_array_get(in, 0))) {
        /* one sequence of token ids */
        ctx->single = 1;

        if (ngx_http_aiserve_alloc_seqs(r, ctx, 1, per_seq) != NGX_OK) {
            return NGX_ERROR;
        }

        return ngx_http_aiserve_token_ids(r, ctx, 0, in, truncate, field);
    }

    if (n > ctx->alcf->max_inputs) {
        ngx_http_aiserve_invalid(r, ctx, 422, "too_many_inputs", field,
                                 "%s has %ui items, more than the limit of "
                                 "%ui (aiserve_max_inputs)", field, n,
                                 ctx->alcf->max_inputs);
        return NGX_ERROR;
    }

    if (ngx_http_aiserve_alloc_seqs(r, ctx, n, per_seq) != NGX_OK) {
        return NGX_ERROR;
    }

    ids = allow_ids && json_is_array(json_array_get(in, 0));

    for (i = 0; i < n; i++) {
        v = json_array_get(in, i);
        ngx_http_aiserve_param(param, field, i);

        if (allow_ids && json_is_array(v) != ids) {
            /* none of the four shapes: strings and token arrays mixed */
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_type", param,
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
            if (ngx_http_aiserve_token_ids(r, ctx, i, v, truncate, param)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            continue;
        }

        if (ngx_http_aiserve_get_text(r, ctx, v, param, &text, &len)
            != NGX_OK
            || ngx_http_aiserve_tokenize(r, ctx, i, text, len, NULL, 0,
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
ngx_http_aiserve_dimensions(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
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
        ngx_http_aiserve_invalid(r, ctx, 422, "invalid_value", "dimensions",
                                 "dimensions must be an integer from 1 to "
                                 "%uz", ctx->model->info->hidden_size);
        return NGX_ERROR;
    }

    ctx->dimensions = d;
    return NGX_OK;
}


static void
ngx_http_aiserve_prepare_openai(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
{
    json_t      *v;
    const char  *s;

    v = json_object_get(ctx->doc, "encoding_format");

    if (v != NULL && !json_is_null(v)) {
        s = json_is_string(v) ? json_string_value(v) : "";

        if (ngx_strcmp(s, "base64") == 0) {
            ctx->base64 = 1;

        } else if (ngx_strcmp(s, "float") != 0) {
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_value",
                                     "encoding_format",
                                     "encoding_format must be \"float\" or "
                                     "\"base64\"");
            return;
        }
    }

    if (ngx_http_aiserve_dimensions(r, ctx) != NGX_OK) {
        return;
    }

    ctx->add_special = 1;

    (void) ngx_http_aiserve_inputs(r, ctx, "input", 1, ctx->model->truncate,
                                   ctx->model->info->hidden_size);
}


/* TEI: "Right" (default) or "Left", the side tokens are cut from */

static ngx_int_t
ngx_http_aiserve_direction(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx)
{
    json_t      *v;
    const char  *s;

    v = json_object_get(ctx->doc, "truncation_direction");

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    s = json_is_string(v) ? json_string_value(v) : "";

    if (ngx_strcasecmp((u_char *) s, (u_char *) "left") == 0) {
        ctx->truncate_left = 1;
        return NGX_OK;
    }

    if (ngx_strcasecmp((u_char *) s, (u_char *) "right") == 0) {
        return NGX_OK;
    }

    ngx_http_aiserve_invalid(r, ctx, 422, "invalid_value",
                             "truncation_direction",
                             "truncation_direction must be \"Right\" or "
                             "\"Left\"");
    return NGX_ERROR;
}


static void
ngx_http_aiserve_prepare_embed(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
{
    ngx_uint_t   normalize, truncate;

    if (ngx_http_aiserve_get_bool(r, ctx, "normalize", 1, &normalize)
        != NGX_OK
        || ngx_http_aiserve_get_bool(r, ctx, "truncate", ctx->model->truncate,
                                     &truncate)
           != NGX_OK
        || ngx_http_aiserve_dimensions(r, ctx) != NGX_OK)
    {
        return;
    }

    if (ngx_http_aiserve_direction(r, ctx) != NGX_OK) {
        return;
    }

    ctx->normalize = normalize;
    ctx->add_special = 1;

    (void) ngx_http_aiserve_inputs(r, ctx, "inputs", 1, truncate,
                                   ctx->model->info->hidden_size);
}


/*
 * predict: inputs is a string, an object {"text", "text_pair"}, or an
 * array of these.  top_k absent keeps the pipeline's legacy shape (the top
 * label per input); top_k null returns every label, sorted.
 */

static void
ngx_http_aiserve_prepare_predict(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
{
    char         param[NGX_HTTP_AISERVE_PARAMLEN],
                 pparam[NGX_HTTP_AISERVE_PARAMLEN];
    size_t       len, pair_len;
    json_t      *in, *v, *t, *tp;
    ngx_uint_t   i, n, truncate, raw;
    const char  *text, *pair;
    json_int_t   k;
    int          fn;

    if (ngx_http_aiserve_get_bool(r, ctx, "truncate", ctx->model->truncate,
                                  &truncate)
        != NGX_OK
        || ngx_http_aiserve_get_bool(r, ctx, "raw_scores", 0, &raw) != NGX_OK)
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
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_value", "top_k",
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
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_value",
                                     "function_to_apply",
                                     "function_to_apply must be \"sigmoid\","
                                     " \"softmax\" or \"none\"");
            return;
        }

        if (raw && fn != AISERVE_FN_NONE) {
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_value",
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
        ngx_http_aiserve_invalid(r, ctx, 422, "missing_field", "inputs",
                                 "inputs is required");
        return;
    }

    if (json_is_array(in)) {
        n = json_array_size(in);

        if (n == 0) {
            ngx_http_aiserve_invalid(r, ctx, 422, "empty_input", "inputs",
                                     "inputs must not be empty");
            return;
        }

        if (n > ctx->alcf->max_inputs) {
            ngx_http_aiserve_invalid(r, ctx, 422, "too_many_inputs",
                                     "inputs", "inputs has %ui items, more "
                                     "than the limit of %ui "
                                     "(aiserve_max_inputs)", n,
                                     ctx->alcf->max_inputs);
            return;
        }

    } else {
        n = 1;
        ctx->single = 1;
    }

    if (ngx_http_aiserve_alloc_seqs(r, ctx, n,
                                    ctx->model->info->num_labels)
        != NGX_OK)
    {
        return;
    }

    for (i = 0; i < n; i++) {
        if (ctx->single) {
            v = in;
            ngx_cpystrn((u_char *) param, (u_char *) "inputs",
                        sizeof(param));

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

            ngx_snprintf((u_char *) pparam, sizeof(pparam) - 1, "%s.text%Z",
                         param);

            if (t == NULL || json_is_null(t)) {
                ngx_http_aiserve_invalid(r, ctx, 422, "missing_field",
                                         pparam, "%s is required", pparam);
                return;
            }

            if (ngx_http_aiserve_get_text(r, ctx, t, pparam, &text, &len)
                != NGX_OK)
            {
                return;
            }

            if (tp != NULL && !json_is_null(tp)) {
                ngx_snprintf((u_char *) pparam, sizeof(pparam) - 1,
                             "%s.text_pair%Z", param);

                if (ngx_http_aiserve_get_text(r, ctx, tp, pparam, &pair,
                                              &pair_len)
                    != NGX_OK)
                {
                    return;
                }
            }

        } else if (ngx_http_aiserve_get_text(r, ctx, v, param, &text, &len)
                   != NGX_OK)
        {
            return;
        }

        if (ngx_http_aiserve_tokenize(r, ctx, i, text, len, pair, pair_len,
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
ngx_http_aiserve_prepare_rerank(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
{
    size_t       qlen;
    json_t      *texts;
    ngx_uint_t   n, truncate, return_text, raw;
    const char  *query;

    if (ngx_http_aiserve_get_bool(r, ctx, "truncate", ctx->model->truncate,
                                  &truncate)
        != NGX_OK
        || ngx_http_aiserve_get_bool(r, ctx, "return_text", 0, &return_text)
           != NGX_OK
        || ngx_http_aiserve_get_bool(r, ctx, "raw_scores", 0, &raw) != NGX_OK)
    {
        return;
    }

    ctx->return_text = return_text;
    ctx->raw_scores = raw;
    ctx->add_special = 1;

    if (json_object_get(ctx->doc, "query") == NULL) {
        ngx_http_aiserve_invalid(r, ctx, 422, "missing_field", "query",
                                 "query is required");
        return;
    }

    if (ngx_http_aiserve_get_text(r, ctx, json_object_get(ctx->doc, "query"),
                                  "query", &query, &qlen)
        != NGX_OK)
    {
        return;
    }

    texts = json_object_get(ctx->doc, "texts");
    n = ngx_http_aiserve_array(r, ctx, texts, "texts", "an array of strings");

    if (n == 0 || ngx_http_aiserve_max_inputs(r, ctx, "texts", n, 0) != NGX_OK)
    {
        return;
    }

    if (ngx_http_aiserve_alloc_seqs(r, ctx, n, ctx->model->info->num_labels)
        != NGX_OK)
    {
        return;
    }

    (void) ngx_http_aiserve_texts(r, ctx, texts, "texts", 0, query, qlen,
                                  truncate);
}


static void
ngx_http_aiserve_prepare_tokenize(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
{
    ngx_uint_t  add_special;

    if (ngx_http_aiserve_get_bool(r, ctx, "add_special_tokens", 1,
                                  &add_special)
        != NGX_OK)
    {
        return;
    }

    ctx->add_special = add_special;

    /* every token, as TEI: max_seq bounds what a model reads, not this */
    (void) ngx_http_aiserve_inputs(r, ctx, "inputs", 0, 0, 0);
}


static void
ngx_http_aiserve_prepare_ner(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
{
    char         param[NGX_HTTP_AISERVE_PARAMLEN];
    json_t      *v;
    ngx_uint_t   i, truncate;
    int          agg;

    if (ngx_http_aiserve_get_bool(r, ctx, "truncate", ctx->model->truncate,
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
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_value",
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
            ngx_http_aiserve_invalid(r, ctx, 422, "invalid_type",
                                     "ignore_labels",
                                     "ignore_labels must be an array of "
                                     "strings");
            return;
        }

        for (i = 0; i < json_array_size(v); i++) {
            if (!json_is_string(json_array_get(v, i))) {
                ngx_http_aiserve_param(param, "ignore_labels", i);
                ngx_http_aiserve_invalid(r, ctx, 422, "invalid_type", param,
                                         "%s must be a string", param);
                return;
            }
        }
    }

    ctx->add_special = 1;

    /* outputs: num_labels logits per token; sized after tokenizing */

    if (ngx_http_aiserve_inputs(r, ctx, "inputs", 0, truncate, 0) != NGX_OK) {
        return;
    }

    (void) ngx_http_aiserve_alloc_tokens_out(r, ctx,
                                             ctx->model->info->num_labels);
}


/*
 * decode (TEI /decode): ids is an array of token ids or an array of such
 * arrays; skip_special_tokens (default true).  Ids are checked against the
 * vocabulary (tokenizers drops unknown ids silently).
 */

static void
ngx_http_aiserve_prepare_decode(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
{
    char         param[NGX_HTTP_AISERVE_PARAMLEN],
                 idparam[NGX_HTTP_AISERVE_PARAMLEN];
    size_t       k, len, vocab;
    json_t      *in, *v, *id;
    int32_t     *p;
    ngx_uint_t   i, n, skip;
    json_int_t   t;

    if (ngx_http_aiserve_get_bool(r, ctx, "skip_special_tokens", 1, &skip)
        != NGX_OK)
    {
        return;
    }

    ctx->skip_special = skip;

    in = json_object_get(ctx->doc, "ids");
    n = ngx_http_aiserve_array(r, ctx, in, "ids", "an array of token ids or "
                               "an array of such arrays");

    if (n == 0) {
        return;
    }

    if (!json_is_array(json_array_get(in, 0))) {
        ctx->single = 1;
        n = 1;

    } else if (ngx_http_aiserve_max_inputs(r, ctx, "ids", n, 0) != NGX_OK) {
        return;
    }

    if (ngx_http_aiserve_alloc_seqs(r, ctx, n, 0) != NGX_OK) {
        return;
    }

    vocab = aiserve_tok_vocab_size(ctx->model->tok);

    for (i = 0; i < n; i++) {
        if (ctx->single) {
            v = in;
            ngx_cpystrn((u_char *) param, (u_char *) "ids", sizeof(param));

        } else {
            v = json_array_get(in, i);
            ngx_http_aiserve_param(param, "ids", i);

            if (!json_is_array(v)) {
                ngx_http_aiserve_invalid(r, ctx, 422, "invalid_type", param,
                                         "%s must be an array of token ids",
                                         param);
                return;
            }
        }

        len = json_array_size(v);

        if (len == 0) {
            ngx_http_aiserve_invalid(r, ctx, 422, "empty_input", param,
                                     "%s must not be empty", param);
            return;
        }

        p = ngx_palloc(r->pool, (len + 1) * sizeof(int32_t));
        if (p == NULL) {
            ngx_http_aiserve_invalid(r, ctx, 500, "internal_error", NULL,
                                     "out of memory");
            return;
        }

        for (k = 0; k < len; k++) {
            id = json_array_get(v, k);
            t = json_is_integer(id) ? json_integer_value(id) : -1;

            if (t < 0 || (size_t) t >= vocab) {
                ngx_http_aiserve_param(idparam, param, k);
                ngx_http_aiserve_invalid(r, ctx, 422, "invalid_token",
                                         idparam, "%s must be a token id "
                                         "from 0 to %uz", idparam,
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
ngx_http_aiserve_prepare_similarity(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
{
    char         param[NGX_HTTP_AISERVE_PARAMLEN];
    size_t       len;
    json_t      *in, *src, *sentences, *v;
    ngx_uint_t   n, truncate;
    const char  *text, *key;

    if (ngx_http_aiserve_get_bool(r, ctx, "truncate", ctx->model->truncate,
                                  &truncate)
        != NGX_OK
        || ngx_http_aiserve_direction(r, ctx) != NGX_OK)
    {
        return;
    }

    ctx->add_special = 1;

    in = json_object_get(ctx->doc, "inputs");

    if (!json_is_object(in)) {
        ngx_http_aiserve_invalid(r, ctx, 422,
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
            ngx_snprintf((u_char *) param, sizeof(param) - 1,
                         "inputs.%s%Z", key);
            ngx_http_aiserve_invalid(r, ctx, 422, "unknown_field", param,
                                     "%s is not a field of inputs, which "
                                     "holds source_sentence and sentences",
                                     param);
            return;
        }
    }

    src = json_object_get(in, "source_sentence");
    sentences = json_object_get(in, "sentences");

    if (src == NULL) {
        ngx_http_aiserve_invalid(r, ctx, 422, "missing_field",
                                 "inputs.source_sentence",
                                 "inputs.source_sentence is required");
        return;
    }

    /* the source sentence is an input too */

    n = ngx_http_aiserve_array(r, ctx, sentences, "inputs.sentences",
                               "an array of strings");

    if (n == 0
        || ngx_http_aiserve_max_inputs(r, ctx, "inputs.sentences", n, 1)
           != NGX_OK)
    {
        return;
    }

    if (ngx_http_aiserve_alloc_seqs(r, ctx, n + 1,
                                    ctx->model->info->hidden_size)
        != NGX_OK)
    {
        return;
    }

    if (ngx_http_aiserve_get_text(r, ctx, src, "inputs.source_sentence",
                                  &text, &len)
        != NGX_OK
        || ngx_http_aiserve_tokenize(r, ctx, 0, text, len, NULL, 0, truncate,
                                     "inputs.source_sentence")
           != NGX_OK)
    {
        return;
    }

    (void) ngx_http_aiserve_texts(r, ctx, sentences, "inputs.sentences", 1,
                                  NULL, 0, truncate);
}


/*
 * embed_all (TEI /embed_all): inputs as /embed, truncate,
 * truncation_direction; the answer is the last hidden state of every
 * token, special tokens included, per input.
 */

static void
ngx_http_aiserve_prepare_embed_all(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
{
    ngx_uint_t  truncate;

    if (ngx_http_aiserve_get_bool(r, ctx, "truncate", ctx->model->truncate,
                                  &truncate)
        != NGX_OK
        || ngx_http_aiserve_direction(r, ctx) != NGX_OK)
    {
        return;
    }

    ctx->add_special = 1;
    ctx->hidden = 1;

    if (ngx_http_aiserve_inputs(r, ctx, "inputs", 1, truncate, 0) != NGX_OK) {
        return;
    }

    (void) ngx_http_aiserve_alloc_tokens_out(r, ctx,
                                             ctx->model->info->hidden_size);
}


/* responses */

ngx_int_t
ngx_http_aiserve_api_respond(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_http_aiserve_json_t *j)
{
    float                       *v, score, *scores;
    size_t                       dim, k, t;
    size_t                      *order;
    ngx_uint_t                   i, n, a;
    const char                  *tok;
    aiserve_encoding_t          *enc;
    ngx_http_aiserve_seq_t      *seq;
    const aiserve_model_info_t  *info;

    info = ctx->model->info;
    dim = ctx->dimensions ? (size_t) ctx->dimensions : info->hidden_size;

    switch (ctx->api) {

    case NGX_HTTP_AISERVE_API_OPENAI:
        ngx_http_aiserve_json_lit(j, "{\"object\":\"list\",\"data\":[");

        for (i = 0; i < ctx->n_seqs; i++) {
            if (i) {
                ngx_http_aiserve_json_lit(j, ",");
            }

            ngx_http_aiserve_json_lit(j, "{\"object\":\"embedding\","
                                         "\"index\":");
            ngx_http_aiserve_json_int(j, i);
            ngx_http_aiserve_json_lit(j, ",\"embedding\":");
            ngx_http_aiserve_embedding(ctx, j, ctx->out + i * info->hidden_size,
                                       dim, ctx->dimensions != 0);
            ngx_http_aiserve_json_lit(j, "}");
        }

        ngx_http_aiserve_json_lit(j, "],\"model\":");
        ngx_http_aiserve_json_string(j, (char *) ctx->model->name.data,
                                     ctx->model->name.len);
        ngx_http_aiserve_json_lit(j, ",\"usage\":{\"prompt_tokens\":");
        ngx_http_aiserve_json_int(j, ctx->prompt_tokens);
        ngx_http_aiserve_json_lit(j, ",\"total_tokens\":");
        ngx_http_aiserve_json_int(j, ctx->prompt_tokens);
        ngx_http_aiserve_json_lit(j, "}}\n");
        break;

    case NGX_HTTP_AISERVE_API_EMBED:
        ngx_http_aiserve_json_lit(j, "[");

        for (i = 0; i < ctx->n_seqs; i++) {
            if (i) {
                ngx_http_aiserve_json_lit(j, ",");
            }

            ngx_http_aiserve_embedding(ctx, j, ctx->out + i * info->hidden_size,
                                       dim,
                                       ctx->normalize || ctx->dimensions);
        }

        ngx_http_aiserve_json_lit(j, "]\n");
        break;

    case NGX_HTTP_AISERVE_API_PREDICT:
        if (!ctx->single && ctx->n_texts == 0) {
            ngx_http_aiserve_json_lit(j, "[");
        }

        for (i = 0; i < ctx->n_seqs; i++) {
            if (i) {
                ngx_http_aiserve_json_lit(j, ",");
            }

            ngx_http_aiserve_respond_labels(ctx, j,
                                            ctx->out + ctx->seqs[i].out_off);
        }

        if (!ctx->single && ctx->n_texts == 0) {
            ngx_http_aiserve_json_lit(j, "]");
        }

        ngx_http_aiserve_json_lit(j, "\n");
        break;

    case NGX_HTTP_AISERVE_API_RERANK:
        n = ctx->n_seqs;
        order = ngx_palloc(r->pool, n * sizeof(size_t));
        scores = ngx_palloc(r->pool, n * sizeof(float));
        if (order == NULL || scores == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < n; i++) {
            v = ctx->out + ctx->seqs[i].out_off;
            k = (info->num_labels == 1) ? 0 : 1;

            if (ctx->raw_scores) {
                score = v[k];

            } else if (info->num_labels == 1) {
                aiserve_fn_apply(AISERVE_FN_SIGMOID, v, &score, 1);

            } else {
                aiserve_fn_apply(AISERVE_FN_SOFTMAX, v,
                                 ctx->out + ctx->seqs[i].out_off,
                                 info->num_labels);
                score = v[k];
            }

            scores[i] = score;
        }

        aiserve_order_by_score(scores, n, order);

        ngx_http_aiserve_json_lit(j, "[");

        for (a = 0; a < n; a++) {
            i = order[a];

            if (a) {
                ngx_http_aiserve_json_lit(j, ",");
            }

            ngx_http_aiserve_json_lit(j, "{\"index\":");
            ngx_http_aiserve_json_int(j, i);
            ngx_http_aiserve_json_lit(j, ",\"score\":");
            ngx_http_aiserve_json_float(j, scores[i]);

            if (ctx->return_text) {
                ngx_http_aiserve_json_lit(j, ",\"text\":");
                ngx_http_aiserve_json_string(j, ctx->seqs[i].text,
                                             ctx->seqs[i].text_len);
            }

            ngx_http_aiserve_json_lit(j, "}");
        }

        ngx_http_aiserve_json_lit(j, "]\n");
        break;

    case NGX_HTTP_AISERVE_API_TOKENIZE:
        ngx_http_aiserve_json_lit(j, "[");

        for (i = 0; i < ctx->n_seqs; i++) {
            seq = &ctx->seqs[i];
            enc = seq->enc;

            if (i) {
                ngx_http_aiserve_json_lit(j, ",");
            }

            ngx_http_aiserve_json_lit(j, "[");

            for (t = 0; t < enc->n_tokens; t++) {
                if (t) {
                    ngx_http_aiserve_json_lit(j, ",");
                }

                ngx_http_aiserve_json_lit(j, "{\"id\":");
                ngx_http_aiserve_json_int(j, enc->input_ids[t]);
                ngx_http_aiserve_json_lit(j, ",\"text\":");

                if (enc->special_tokens_mask[t]) {
                    tok = aiserve_tok_id_to_token(ctx->model->tok,
                                                  enc->input_ids[t]);
                    tok = tok ? tok : "";
                    ngx_http_aiserve_json_string(j, tok, ngx_strlen(tok));
                    ngx_http_aiserve_json_lit(j, ",\"special\":true");

                } else {
                    ngx_http_aiserve_json_string(j,
                        seq->text + enc->byte_offsets[2 * t],
                        enc->byte_offsets[2 * t + 1]
                        - enc->byte_offsets[2 * t]);
                    ngx_http_aiserve_json_lit(j, ",\"special\":false");
                }

                ngx_http_aiserve_json_lit(j, ",\"start\":");
                ngx_http_aiserve_json_int(j, enc->offsets[2 * t]);
                ngx_http_aiserve_json_lit(j, ",\"stop\":");
                ngx_http_aiserve_json_int(j, enc->offsets[2 * t + 1]);
                ngx_http_aiserve_json_lit(j, "}");
            }

            ngx_http_aiserve_json_lit(j, "]");
        }

        ngx_http_aiserve_json_lit(j, "]\n");
        break;

    case NGX_HTTP_AISERVE_API_DECODE:
        if (ngx_http_aiserve_respond_decode(r, ctx, j) != NGX_OK) {
            return NGX_ERROR;
        }

        break;

    case NGX_HTTP_AISERVE_API_SIMILARITY:
        ngx_http_aiserve_respond_similarity(ctx, j);
        break;

    case NGX_HTTP_AISERVE_API_EMBED_ALL:
        ngx_http_aiserve_respond_hidden(ctx, j);
        break;

    default: /* NER */
        if (!ctx->single) {
            ngx_http_aiserve_json_lit(j, "[");
        }

        for (i = 0; i < ctx->n_seqs; i++) {
            if (i) {
                ngx_http_aiserve_json_lit(j, ",");
            }

            if (ngx_http_aiserve_respond_ner(r, ctx, j, &ctx->seqs[i],
                                             ctx->out + ctx->seqs[i].out_off)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (!ctx->single) {
            ngx_http_aiserve_json_lit(j, "]");
        }

        ngx_http_aiserve_json_lit(j, "\n");
        break;
    }

    return j->failed ? NGX_ERROR : NGX_OK;
}


/* decode: ["text", ...], one string per sequence of ids, also for one */

static ngx_int_t
ngx_http_aiserve_respond_decode(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_http_aiserve_json_t *j)
{
    char        err[NGX_HTTP_AISERVE_ERRLEN], *text;
    size_t      len;
    ngx_uint_t  i;

    ngx_http_aiserve_json_lit(j, "[");

    for (i = 0; i < ctx->n_seqs; i++) {
        if (aiserve_tok_decode(ctx->model->tok, ctx->seqs[i].input_ids,
                               ctx->seqs[i].n_tokens, ctx->skip_special,
                               &text, &len, err, sizeof(err))
            != 0)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "aiserve: decode with model \"%V\" failed: %s",
                          &ctx->model->name, err);
            return NGX_ERROR;
        }

        if (i) {
            ngx_http_aiserve_json_lit(j, ",");
        }

        ngx_http_aiserve_json_string(j, text, len);
        free(text);
    }

    ngx_http_aiserve_json_lit(j, "]\n");

    return NGX_OK;
}


/*
 * similarity: [cosine(source, sentence_i), ...], computed in double from
 * the pooled embeddings (TEI: 1 - cosine distance of the unnormalized
 * embeddings; sentence-transformers' cos_sim).
 */

static void
ngx_http_aiserve_respond_similarity(ngx_http_aiserve_ctx_t *ctx,
    ngx_http_aiserve_json_t *j)
{
    size_t        k, H;
    double        dot, na, nb;
    ngx_uint_t    i;
    const float  *a, *b;

    H = ctx->model->info->hidden_size;
    a = ctx->out + ctx->seqs[0].out_off;

    ngx_http_aiserve_json_lit(j, "[");

    for (i = 1; i < ctx->n_seqs; i++) {
        b = ctx->out + ctx->seqs[i].out_off;
        dot = 0;
        na = 0;
        nb = 0;

        for (k = 0; k < H; k++) {
            dot += (double) a[k] * b[k];
            na += (double) a[k] * a[k];
            nb += (double) b[k] * b[k];
        }

        if (i > 1) {
            ngx_http_aiserve_json_lit(j, ",");
        }

        ngx_http_aiserve_json_float(j, (na > 0 && nb > 0)
                                       ? dot / (sqrt(na) * sqrt(nb)) : 0);
    }

    ngx_http_aiserve_json_lit(j, "]\n");
}


/* embed_all: [[[hidden_size floats] per token] per input] */

static void
ngx_http_aiserve_respond_hidden(ngx_http_aiserve_ctx_t *ctx,
    ngx_http_aiserve_json_t *j)
{
    size_t        t, H;
    ngx_uint_t    i;
    const float  *v;

    H = ctx->model->info->hidden_size;

    ngx_http_aiserve_json_lit(j, "[");

    for (i = 0; i < ctx->n_seqs; i++) {
        if (i) {
            ngx_http_aiserve_json_lit(j, ",");
        }

        ngx_http_aiserve_json_lit(j, "[");

        for (t = 0; t < ctx->seqs[i].n_tokens; t++) {
            v = ctx->out + ctx->seqs[i].out_off + t * H;

            if (t) {
                ngx_http_aiserve_json_lit(j, ",");
            }

            ngx_http_aiserve_json_floats(j, v, H);
        }

        ngx_http_aiserve_json_lit(j, "]");
    }

    ngx_http_aiserve_json_lit(j, "]\n");
}


/* An embedding of n floats, L2-normalized again when asked. */

static void
ngx_http_aiserve_embedding(ngx_http_aiserve_ctx_t *ctx,
    ngx_http_aiserve_json_t *j, float *v, size_t n, ngx_uint_t normalize)
{
    size_t  i;
    double  norm;

    if (normalize) {
        norm = 0;

        for (i = 0; i < n; i++) {
            norm += (double) v[i] * v[i];
        }

        norm = sqrt(norm);

        /* torch.nn.functional.normalize: divide by max(norm, 1e-12) */
        if (norm < 1e-12) {
            norm = 1e-12;
        }

        for (i = 0; i < n; i++) {
            v[i] = (float) (v[i] / norm);
        }
    }

    if (ctx->base64) {
        ngx_http_aiserve_json_base64_floats(j, v, n);
        return;
    }

    ngx_http_aiserve_json_floats(j, v, n);
}


static void
ngx_http_aiserve_respond_labels(ngx_http_aiserve_ctx_t *ctx,
    ngx_http_aiserve_json_t *j, const float *logits)
{
    float                        scores[256], *s;
    size_t                       n, k, a, limit, order[256];
    const char                  *label;
    const aiserve_model_info_t  *info;

    info = ctx->model->info;
    n = info->num_labels;

    if (n > 256) {
        n = 256;
    }

    s = scores;
    aiserve_fn_apply(ctx->fn, logits, s, n);

    if (ctx->legacy) {
        /* argmax, first on ties, as numpy */
        a = aiserve_argmax(s, n);

        label = info->id2label[a];

        if (ctx->single) {
            ngx_http_aiserve_json_lit(j, "[");
        }

        ngx_http_aiserve_json_lit(j, "{\"label\":");
        ngx_http_aiserve_json_string(j, label, ngx_strlen(label));
        ngx_http_aiserve_json_lit(j, ",\"score\":");
        ngx_http_aiserve_json_float(j, s[a]);
        ngx_http_aiserve_json_lit(j, "}");

        if (ctx->single) {
            ngx_http_aiserve_json_lit(j, "]");
        }

        return;
    }

    /* list.sort(key=score, reverse=True) is stable */
    aiserve_order_by_score(s, n, order);

    limit = (ctx->top_k < 0 || (size_t) ctx->top_k > n) ? n
                                                         : (size_t) ctx->top_k;

    ngx_http_aiserve_json_lit(j, "[");

    for (k = 0; k < limit; k++) {
        if (k) {
            ngx_http_aiserve_json_lit(j, ",");
        }

        label = info->id2label[order[k]];

        ngx_http_aiserve_json_lit(j, "{\"label\":");
        ngx_http_aiserve_json_string(j, label, ngx_strlen(label));
        ngx_http_aiserve_json_lit(j, ",\"score\":");
        ngx_http_aiserve_json_float(j, s[order[k]]);
        ngx_http_aiserve_json_lit(j, "}");
    }

    ngx_http_aiserve_json_lit(j, "]");
}


/*
 * transformers' TokenClassificationPipeline.postprocess for one text, by
 * the engine (aiserve_ner_postprocess), written as the pipeline's JSON.
 */

static ngx_int_t
ngx_http_aiserve_respond_ner(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_http_aiserve_json_t *j,
    ngx_http_aiserve_seq_t *seq, const float *logits)
{
    char                         err[NGX_HTTP_AISERVE_ERRLEN];
    json_t                      *v, *s;
    size_t                       k, n_ignore, *ignore_len;
    const char                 **ignore;
    aiserve_ner_entity_t        *e;
    aiserve_ner_result_t         res;
    const aiserve_model_info_t  *info;

    info = ctx->model->info;
    ignore = NULL;
    ignore_len = NULL;
    n_ignore = 0;

    v = json_object_get(ctx->doc, "ignore_labels");

    if (v != NULL && !json_is_null(v)) {
        n_ignore = json_array_size(v);
        ignore = ngx_palloc(r->pool, (n_ignore + 1) * sizeof(char *));
        ignore_len = ngx_palloc(r->pool, (n_ignore + 1) * sizeof(size_t));
        if (ignore == NULL || ignore_len == NULL) {
            return NGX_ERROR;
        }

        for (k = 0; k < n_ignore; k++) {
            s = json_array_get(v, k);
            ignore[k] = json_string_value(s);
            ignore_len[k] = json_string_length(s);
        }
    }

    if (aiserve_ner_postprocess(ctx->model->tok, seq->text, seq->enc, logits,
                                info->num_labels, info->id2label,
                                ctx->aggregation, ignore, ignore_len,
                                n_ignore, &res, err, sizeof(err))
        != 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "aiserve NER post-processing failed: %s", err);
        return NGX_ERROR;
    }

    ngx_http_aiserve_json_lit(j, "[");

    for (k = 0; k < res.n; k++) {
        e = &res.entities[k];

        if (k) {
            ngx_http_aiserve_json_lit(j, ",");
        }

        if (ctx->aggregation == AISERVE_AGG_NONE) {
            ngx_http_aiserve_json_lit(j, "{\"entity\":");
            ngx_http_aiserve_json_string(j, e->entity, e->entity_len);
            ngx_http_aiserve_json_lit(j, ",\"score\":");
            ngx_http_aiserve_json_float(j, e->score);
            ngx_http_aiserve_json_lit(j, ",\"index\":");
            ngx_http_aiserve_json_int(j, e->index);

        } else {
            ngx_http_aiserve_json_lit(j, "{\"entity_group\":");
            ngx_http_aiserve_json_string(j, e->entity, e->entity_len);
            ngx_http_aiserve_json_lit(j, ",\"score\":");
            ngx_http_aiserve_json_float(j, e->score);
        }

        ngx_http_aiserve_json_lit(j, ",\"word\":");
        ngx_http_aiserve_json_string(j, e->word, e->word_len);
        ngx_http_aiserve_json_lit(j, ",\"start\":");
        ngx_http_aiserve_json_int(j, e->start);
        ngx_http_aiserve_json_lit(j, ",\"end\":");
        ngx_http_aiserve_json_int(j, e->end);
        ngx_http_aiserve_json_lit(j, "}");
    }

    ngx_http_aiserve_json_lit(j, "]");

    aiserve_ner_result_free(&res);

    return NGX_OK;
}
