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


void *
ngx_http_aiserve_pool_alloc(void *pool, size_t size)
{
    return ngx_palloc(pool, size);
}


void
ngx_http_aiserve_api_prepare(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx)
{
    json_t                    *v;
    ngx_str_t                  name;
    ngx_http_aiserve_error_t  *e;
    ngx_http_aiserve_model_t  *m;

    ctx->alloc = ngx_http_aiserve_pool_alloc;
    ctx->alloc_data = r->pool;

    if (ngx_http_aiserve_parameters(ctx) != NGX_OK) {
        goto refused;
    }

    v = json_object_get(ctx->doc, "model");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v)) {
            ngx_http_aiserve_invalid(ctx, 422, "invalid_type", "model",
                                     "model must be a string");
            goto refused;
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
                ngx_http_aiserve_invalid(ctx, NGX_HTTP_NOT_FOUND,
                                         "model_not_found", "model",
                                         "the model \"%s\" is not served "
                                         "here; this location serves "
                                         "\"%.*s\"", json_string_value(v),
                                         (int) ctx->model->name.len,
                                         ctx->model->name.data);
                goto refused;
            }

            ctx->model = m;
            ctx->fine_tuned = 1;
        }
    }

    /* the route, and the fields it reads: for api=tei the route of the
     * model's task, the fine-tuned model's when one is asked for (a
     * classifier of an embedding base answers as /predict, with top_k) */
    ctx->api = ngx_http_aiserve_route(ctx);

    if (ngx_http_aiserve_fields(ctx) != NGX_OK) {
        goto refused;
    }

    ngx_http_aiserve_request_inputs(ctx);

    if (!ctx->done) {
        return;
    }

refused:

    e = &ctx->error;

    ctx->rc = ngx_http_aiserve_send_error(r, e->status,
                                          e->status >= 500
                                          ? "server_error"
                                          : "invalid_request_error",
                                          e->code,
                                          e->param,
                                          "%s", e->message);
    ctx->done = 1;
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
