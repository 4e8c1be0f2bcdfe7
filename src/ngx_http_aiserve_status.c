/*
 * The operator routes of aiserve (GET): health, TEI's /info, OpenAI's
 * model list, and the Prometheus exposition (ngx_http_aiserve_metrics.c).
 *
 *   aiserve_endpoint health    200 {"status":"ok"} when every model is
 *                              loaded and this worker can serve it, else
 *                              503 with a JSON error
 *   aiserve_endpoint models    GET /v1/models, GET /v1/models/{id},
 *                              DELETE /v1/models/{id} (a fine-tuned
 *                              model), as OpenAI's models API
 *                              (openai-python's models.list() /
 *                              retrieve() / delete())
 *   aiserve_endpoint metrics   Prometheus text format 0.0.4
 *   aiserve_infer NAME api=info  TEI's GET /info for model NAME
 *                              (router/src/lib.rs, struct Info)
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_aiserve_infer.h"


static ngx_int_t ngx_http_aiserve_health(ngx_http_request_t *r,
    ngx_http_aiserve_json_t *j);
static ngx_int_t ngx_http_aiserve_models(ngx_http_request_t *r,
    ngx_http_aiserve_json_t *j);
static void ngx_http_aiserve_model_object(ngx_http_aiserve_json_t *j,
    ngx_http_aiserve_model_t *m);
static void ngx_http_aiserve_info(ngx_http_request_t *r,
    ngx_http_aiserve_json_t *j);
static void ngx_http_aiserve_labels(ngx_http_aiserve_json_t *j,
    const aiserve_model_info_t *info);


ngx_int_t
ngx_http_aiserve_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_uint_t                     deletes;
    ngx_http_aiserve_json_t        j;
    ngx_http_aiserve_loc_conf_t   *alcf;
    ngx_http_aiserve_main_conf_t  *amcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_module);
    amcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_module);

    /* DELETE /v1/models/{id}: with a registry of fine-tuned models */
    deletes = (alcf->endpoint == NGX_HTTP_AISERVE_ENDPOINT_MODELS
               && amcf->ft_root != NULL);

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))
        && !(r->method == NGX_HTTP_DELETE && deletes))
    {
        return deletes
               ? ngx_http_aiserve_not_allowed(r, "GET, HEAD, DELETE",
                                              "GET or DELETE")
               : ngx_http_aiserve_not_allowed(r, "GET, HEAD", "GET");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (alcf->endpoint == NGX_HTTP_AISERVE_ENDPOINT_METRICS) {
        return ngx_http_aiserve_metrics_handler(r);
    }

    ngx_http_aiserve_json_init(&j, r->pool, 1024);

    switch (alcf->endpoint) {

    case NGX_HTTP_AISERVE_ENDPOINT_MODELS:
        return ngx_http_aiserve_models(r, &j);

    case NGX_HTTP_AISERVE_ENDPOINT_INFO:
        ngx_http_aiserve_info(r, &j);
        return ngx_http_aiserve_send_json(r, NGX_HTTP_OK, &j, NULL);

    default:
        return ngx_http_aiserve_health(r, &j);
    }
}


ngx_int_t
ngx_http_aiserve_health_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_http_aiserve_json_t  j;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_http_aiserve_json_init(&j, r->pool, 64);

    return ngx_http_aiserve_health(r, &j);
}


/*
 * Healthy when every model is loaded and this worker can serve it: the
 * thread pool exists, the model's queue has room and its last forward
 * pass did not fail.  A worker answers for itself; nginx's other workers
 * answer the next connections.
 */

static ngx_int_t
ngx_http_aiserve_health(ngx_http_request_t *r, ngx_http_aiserve_json_t *j)
{
    ngx_uint_t                      i;
    ngx_http_aiserve_model_t      **mp, *m;
    ngx_http_aiserve_main_conf_t   *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_module);

    if (amcf->models.nelts == 0) {
        return ngx_http_aiserve_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "server_error", "unhealthy", NULL,
                                           "no model is loaded "
                                           "(aiserve_model)");
    }

    mp = amcf->models.elts;

    for (i = 0; i < amcf->models.nelts; i++) {
        m = mp[i];

        if (m->model == NULL || m->tok == NULL || amcf->thread_pool == NULL)
        {
            return ngx_http_aiserve_send_error(r,
                                         NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "server_error", "unhealthy", NULL,
                                         "model \"%V\" is not loaded",
                                         &m->name);
        }

        if (m->failed) {
            return ngx_http_aiserve_send_error(r,
                                         NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "server_error", "unhealthy", NULL,
                                         "the last forward pass of model "
                                         "\"%V\" failed", &m->name);
        }

        if (m->queued >= amcf->max_queue) {
            return ngx_http_aiserve_send_error(r,
                                         NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "server_error", "unhealthy", NULL,
                                         "the queue of model \"%V\" is full "
                                         "(%ui requests, aiserve_max_queue)",
                                         &m->name, m->queued);
        }
    }

    ngx_http_aiserve_json_lit(j, "{\"status\":\"ok\"}\n");

    return ngx_http_aiserve_send_json(r, NGX_HTTP_OK, j, NULL);
}


/*
 * GET <location> lists every aiserve_model; GET <location>/ID answers one
 * (404 model_not_found when there is none by that name).  The ID starts
 * after a "/": GET <location>ID (/v1/modelsminilm) is a 404 not_found.
 */

static ngx_int_t
ngx_http_aiserve_models(ngx_http_request_t *r, ngx_http_aiserve_json_t *j)
{
    ngx_str_t                       id;
    ngx_uint_t                      i;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_aiserve_model_t      **mp, *ft;
    ngx_http_aiserve_main_conf_t   *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_module);
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    id.data = r->uri.data;
    id.len = 0;

    if (r->uri.len > clcf->name.len) {
        id.data = r->uri.data + clcf->name.len;
        id.len = r->uri.len - clcf->name.len;

        if (id.data[0] != '/'
            && (clcf->name.len == 0
                || clcf->name.data[clcf->name.len - 1] != '/'))
        {
            return ngx_http_aiserve_send_error(r, NGX_HTTP_NOT_FOUND,
                                               "invalid_request_error",
                                               "not_found", NULL,
                                               "no such route \"%V\"",
                                               &r->uri);
        }

        while (id.len && id.data[0] == '/') {
            id.data++;
            id.len--;
        }
    }

    mp = amcf->models.elts;

    if (r->method == NGX_HTTP_DELETE) {
        if (id.len == 0) {
            return ngx_http_aiserve_not_allowed(r, "GET, HEAD", "GET");
        }

        return ngx_http_aiserve_deploy_delete(r, &id);
    }

    if (id.len == 0) {
        ngx_http_aiserve_json_lit(j, "{\"object\":\"list\",\"data\":[");

        for (i = 0; i < amcf->models.nelts; i++) {
            if (i) {
                ngx_http_aiserve_json_lit(j, ",");
            }

            ngx_http_aiserve_model_object(j, mp[i]);
        }

        /* the caller's fine-tuned models */

        for (ft = ngx_http_aiserve_deploy_next(r, NULL);
             ft != NULL;
             ft = ngx_http_aiserve_deploy_next(r, ft))
        {
            if (i++) {
                ngx_http_aiserve_json_lit(j, ",");
            }

            ngx_http_aiserve_model_object(j, ft);
        }

        ngx_http_aiserve_json_lit(j, "]}\n");

        return ngx_http_aiserve_send_json(r, NGX_HTTP_OK, j, NULL);
    }

    ft = ngx_http_aiserve_deploy_visible(r, &id);

    if (ft) {
        ngx_http_aiserve_model_object(j, ft);
        ngx_http_aiserve_json_lit(j, "\n");

        return ngx_http_aiserve_send_json(r, NGX_HTTP_OK, j, NULL);
    }

    for (i = 0; i < amcf->models.nelts; i++) {
        if (mp[i]->name.len == id.len
            && ngx_strncmp(mp[i]->name.data, id.data, id.len) == 0)
        {
            ngx_http_aiserve_model_object(j, mp[i]);
            ngx_http_aiserve_json_lit(j, "\n");

            return ngx_http_aiserve_send_json(r, NGX_HTTP_OK, j, NULL);
        }
    }

    return ngx_http_aiserve_send_error(r, NGX_HTTP_NOT_FOUND,
                                       "invalid_request_error",
                                       "model_not_found", "model",
                                       "the model \"%V\" does not exist",
                                       &id);
}


/* OpenAI's Model object: id, object, created (Unix seconds), owned_by
 * ("aiserve", or the account of a fine-tuned model); and dtype, the
 * format of the model's products ("fp32" or "bf16", what dtype= of
 * aiserve_model chose, or its base's; an addition that clients ignore) */

static void
ngx_http_aiserve_model_object(ngx_http_aiserve_json_t *j,
    ngx_http_aiserve_model_t *m)
{
    const char  *dtype;

    dtype = aiserve_dtype_name(aiserve_model_dtype(m->model));

    ngx_http_aiserve_json_lit(j, "{\"id\":");
    ngx_http_aiserve_json_string(j, (char *) m->name.data, m->name.len);
    ngx_http_aiserve_json_lit(j, ",\"object\":\"model\",\"created\":");
    ngx_http_aiserve_json_int(j, m->created);

    if (m->base) {
        /* a fine-tuned model: its account, as OpenAI names the
         * organization that owns it */
        ngx_http_aiserve_json_lit(j, ",\"owned_by\":");
        ngx_http_aiserve_json_string(j, (char *) m->owner.data,
                                     m->owner.len);

    } else {
        ngx_http_aiserve_json_lit(j, ",\"owned_by\":\"aiserve\"");
    }

    ngx_http_aiserve_json_lit(j, ",\"dtype\":");
    ngx_http_aiserve_json_string(j, dtype, ngx_strlen(dtype));
    ngx_http_aiserve_json_lit(j, "}");
}


/*
 * TEI's Info: model_id (the aiserve_model NAME, what "model" in a request
 * must say), model_sha (null), model_dtype (torch's name of the format
 * the matrix products run in, whatever the file holds: "float32", or
 * "bfloat16" where dtype= chose bf16; the rest stays fp32), model_type
 * with the pooling or the labels, max_concurrent_requests
 * (aiserve_max_queue per worker times worker_processes), max_input_length (max_seq), max_batch_tokens,
 * max_batch_requests (null: batches are bounded by tokens only),
 * max_client_batch_size (aiserve_max_inputs of this location),
 * auto_truncate (truncate=), tokenization_workers (worker_processes: each
 * tokenizes on its event loop), version, sha and docker_label (null).
 */

static void
ngx_http_aiserve_info(ngx_http_request_t *r, ngx_http_aiserve_json_t *j)
{
    ngx_core_conf_t                *ccf;
    ngx_http_aiserve_model_t       *m;
    ngx_http_aiserve_loc_conf_t    *alcf;
    const aiserve_model_info_t     *info;

    static const char  *poolings[] = { "cls", "mean", "max" };

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_module);
    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);
    m = alcf->model;
    info = m->info;

    ngx_http_aiserve_json_lit(j, "{\"model_id\":");
    ngx_http_aiserve_json_string(j, (char *) m->name.data, m->name.len);
    ngx_http_aiserve_json_lit(j, ",\"model_sha\":null,\"model_dtype\":");

    if (aiserve_model_dtype(m->model) == AISERVE_DTYPE_BF16) {
        ngx_http_aiserve_json_lit(j, "\"bfloat16\"");

    } else {
        ngx_http_aiserve_json_lit(j, "\"float32\"");
    }

    ngx_http_aiserve_json_lit(j, ",\"served_model_name\":");
    ngx_http_aiserve_json_string(j, (char *) m->name.data, m->name.len);
    ngx_http_aiserve_json_lit(j, ",\"model_type\":{");

    switch (m->task) {

    case NGX_HTTP_AISERVE_TASK_EMBED:
        ngx_http_aiserve_json_lit(j, "\"embedding\":{\"pooling\":");
        ngx_http_aiserve_json_string(j, poolings[info->pooling],
                                     ngx_strlen(poolings[info->pooling]));
        ngx_http_aiserve_json_lit(j, "}");
        break;

    case NGX_HTTP_AISERVE_TASK_CLASSIFY:
        ngx_http_aiserve_json_lit(j, "\"classifier\":");
        ngx_http_aiserve_labels(j, info);
        break;

    case NGX_HTTP_AISERVE_TASK_RERANK:
        ngx_http_aiserve_json_lit(j, "\"reranker\":");
        ngx_http_aiserve_labels(j, info);
        break;

    default:
        ngx_http_aiserve_json_lit(j, "\"token_classifier\":");
        ngx_http_aiserve_labels(j, info);
        break;
    }

    ngx_http_aiserve_json_lit(j, "},\"max_concurrent_requests\":");
    ngx_http_aiserve_json_int(j, m->amcf->max_queue
                                 * (ccf->worker_processes > 0
                                    ? ccf->worker_processes : 1));
    ngx_http_aiserve_json_lit(j, ",\"max_input_length\":");
    ngx_http_aiserve_json_int(j, m->max_seq);
    ngx_http_aiserve_json_lit(j, ",\"max_batch_tokens\":");
    ngx_http_aiserve_json_int(j, m->amcf->max_batch_tokens);
    ngx_http_aiserve_json_lit(j, ",\"max_batch_requests\":null,"
                                 "\"max_client_batch_size\":");
    ngx_http_aiserve_json_int(j, alcf->max_inputs);
    ngx_http_aiserve_json_lit(j, ",\"auto_truncate\":");

    if (m->truncate) {
        ngx_http_aiserve_json_lit(j, "true");

    } else {
        ngx_http_aiserve_json_lit(j, "false");
    }

    ngx_http_aiserve_json_lit(j, ",\"tokenization_workers\":");
    ngx_http_aiserve_json_int(j, ccf->worker_processes > 0
                                 ? ccf->worker_processes : 1);
    ngx_http_aiserve_json_lit(j, ",\"version\":\""
                                 NGX_HTTP_AISERVE_VERSION "\","
                                 "\"sha\":null,\"docker_label\":null}\n");
}


/* {"id2label": {"0": "A", ...}, "label2id": {"A": 0, ...}} */

static void
ngx_http_aiserve_labels(ngx_http_aiserve_json_t *j,
    const aiserve_model_info_t *info)
{
    u_char  buf[NGX_INT_T_LEN];
    size_t  k;

    ngx_http_aiserve_json_lit(j, "{\"id2label\":{");

    for (k = 0; k < info->num_labels; k++) {
        if (k) {
            ngx_http_aiserve_json_lit(j, ",");
        }

        ngx_http_aiserve_json_string(j, (char *) buf,
                                     ngx_sprintf(buf, "%uz", k) - buf);
        ngx_http_aiserve_json_lit(j, ":");
        ngx_http_aiserve_json_string(j, info->id2label[k],
                                     ngx_strlen(info->id2label[k]));
    }

    ngx_http_aiserve_json_lit(j, "},\"label2id\":{");

    for (k = 0; k < info->num_labels; k++) {
        if (k) {
            ngx_http_aiserve_json_lit(j, ",");
        }

        ngx_http_aiserve_json_string(j, info->id2label[k],
                                     ngx_strlen(info->id2label[k]));
        ngx_http_aiserve_json_lit(j, ":");
        ngx_http_aiserve_json_int(j, k);
    }

    ngx_http_aiserve_json_lit(j, "}}");
}
