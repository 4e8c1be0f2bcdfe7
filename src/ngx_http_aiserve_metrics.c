/*
 * Prometheus metrics in the shared zone "aiserve_metrics".
 *
 * The zone holds fixed tables of atomic counters: one slot per model name
 * (NGX_HTTP_AISERVE_METRICS_MODELS), each with the requests by route
 * (api=) and status, prompt tokens, histograms of queue time, inference
 * time and batch size, and a queue depth gauge per worker; one slot per
 * API key up to NGX_HTTP_AISERVE_METRICS_KEYS, then key="other"; and the
 * ledger's flushes.  Workers add with ngx_atomic_fetch_add(), no lock.
 * Slots are claimed by name in the zone's init, in the master while it
 * reads the configuration; a reload reuses the zone (same name and size)
 * and the slots of the names it knows, so counters never go back.
 *
 * Exposition: text format 0.0.4 (prometheus.io/docs/instrumenting/
 * exposition_formats), checked with "promtool check metrics" in
 * t/061-operator.t.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_aiserve_infer.h"


#define NGX_HTTP_AISERVE_METRICS_MODELS   64
#define NGX_HTTP_AISERVE_METRICS_WORKERS  64
#define NGX_HTTP_AISERVE_METRICS_NAMELEN  64
#define NGX_HTTP_AISERVE_METRICS_TIMES    14
#define NGX_HTTP_AISERVE_METRICS_SIZES    12
#define NGX_HTTP_AISERVE_METRICS_STATUSES 16


/* upper bounds of the time buckets, microseconds; then +Inf */
static ngx_uint_t  ngx_http_aiserve_metrics_times[] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000
};

/* upper bounds of the batch size buckets, sequences; then +Inf */
static ngx_uint_t  ngx_http_aiserve_metrics_sizes[] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048
};

/* the statuses counted by their code; any other is status="other" */
static ngx_uint_t  ngx_http_aiserve_metrics_statuses[] = {
    200, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 499, 500, 502,
    503, 504
};


typedef struct {
    ngx_atomic_t                 bucket[NGX_HTTP_AISERVE_METRICS_TIMES + 1];
    ngx_atomic_t                 sum;           /* microseconds, or items */
} ngx_http_aiserve_histogram_t;


struct ngx_http_aiserve_model_metrics_s {
    u_char                       name[NGX_HTTP_AISERVE_METRICS_NAMELEN];
    size_t                       len;           /* 0: a free slot */
    ngx_atomic_t                 requests[NGX_HTTP_AISERVE_N_APIS]
                                     [NGX_HTTP_AISERVE_METRICS_STATUSES + 1];
    ngx_atomic_t                 prompt_tokens;
    ngx_atomic_t                 batch_tokens;
    ngx_http_aiserve_histogram_t queue_time;
    ngx_http_aiserve_histogram_t infer_time;
    ngx_http_aiserve_histogram_t batch_size;
    ngx_atomic_t                 queue_depth[NGX_HTTP_AISERVE_METRICS_WORKERS];
};


typedef struct {
    ngx_atomic_t                 key_id;        /* 0: a free slot */
    ngx_atomic_t                 requests;
    ngx_atomic_t                 errors;
    ngx_atomic_t                 prompt_tokens;
} ngx_http_aiserve_key_metrics_t;


typedef struct {
    ngx_http_aiserve_model_metrics_t  models[NGX_HTTP_AISERVE_METRICS_MODELS];
    ngx_http_aiserve_key_metrics_t    keys[NGX_HTTP_AISERVE_METRICS_KEYS + 1];
    ngx_atomic_t                      flushes_ok;
    ngx_atomic_t                      flushes_failed;
} ngx_http_aiserve_metrics_sh_t;


struct ngx_http_aiserve_metrics_s {
    ngx_http_aiserve_metrics_sh_t    *sh;
    ngx_slab_pool_t                  *shpool;
    ngx_http_aiserve_main_conf_t     *amcf;
};


static ngx_int_t ngx_http_aiserve_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_aiserve_metrics_observe(ngx_http_aiserve_histogram_t *h,
    ngx_uint_t *bounds, ngx_uint_t n, ngx_uint_t v);
static void ngx_http_aiserve_metrics_label(ngx_http_aiserve_json_t *j,
    const u_char *s, size_t len);
static void ngx_http_aiserve_metrics_keys(ngx_http_aiserve_json_t *j,
    ngx_http_aiserve_metrics_sh_t *sh, const char *name, const char *help,
    ngx_uint_t tokens);
static void ngx_http_aiserve_metrics_counter(ngx_http_aiserve_json_t *j,
    ngx_http_aiserve_metrics_sh_t *sh, const char *name, const char *help,
    size_t offset);
static void ngx_http_aiserve_metrics_histogram(ngx_http_aiserve_json_t *j,
    ngx_http_aiserve_metrics_sh_t *sh, const char *name, const char *help,
    size_t offset, ngx_uint_t *bounds, ngx_uint_t n, ngx_uint_t seconds);
static void ngx_http_aiserve_metrics_number(ngx_http_aiserve_json_t *j,
    ngx_uint_t v, ngx_uint_t seconds);


static ngx_str_t  ngx_http_aiserve_metrics_zone_name =
    ngx_string("aiserve_metrics");


ngx_int_t
ngx_http_aiserve_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_aiserve_main_conf_t *amcf)
{
    size_t                       size;
    ngx_shm_zone_t              *shm_zone;
    ngx_http_aiserve_metrics_t  *ctx;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_aiserve_metrics_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->amcf = amcf;

    /* the tables, and room for the slab allocator's own pages */
    size = ngx_align(sizeof(ngx_http_aiserve_metrics_sh_t), ngx_pagesize)
           + 8 * ngx_pagesize;

    shm_zone = ngx_shared_memory_add(cf, &ngx_http_aiserve_metrics_zone_name,
                                     size, &ngx_http_aiserve_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_aiserve_metrics_init_zone;
    shm_zone->data = ctx;
    amcf->metrics = ctx;

    return NGX_OK;
}


/*
 * Reload policy: reuse.  The previous generation's tables stay (their
 * workers may still be counting), and each model of this configuration
 * takes the slot of its name, or a free one.
 */

static ngx_int_t
ngx_http_aiserve_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_aiserve_metrics_t *octx = data;

    ngx_uint_t                         i, k, free;
    ngx_http_aiserve_model_t         **mp, *m;
    ngx_http_aiserve_metrics_t        *ctx;
    ngx_http_aiserve_model_metrics_t  *mm;

    ctx = shm_zone->data;
    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (octx) {
        ctx->sh = octx->sh;

    } else if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;

    } else {
        ctx->sh = ngx_slab_alloc(ctx->shpool,
                                 sizeof(ngx_http_aiserve_metrics_sh_t));
        if (ctx->sh == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(ctx->sh, sizeof(ngx_http_aiserve_metrics_sh_t));
        ctx->shpool->data = ctx->sh;
    }

    mp = ctx->amcf->models.elts;

    for (i = 0; i < ctx->amcf->models.nelts; i++) {
        m = mp[i];
        m->metrics = NULL;
        free = NGX_HTTP_AISERVE_METRICS_MODELS;

        for (k = 0; k < NGX_HTTP_AISERVE_METRICS_MODELS; k++) {
            mm = &ctx->sh->models[k];

            if (mm->len == 0) {
                free = ngx_min(free, k);
                continue;
            }

            if (mm->len == m->name.len
                && ngx_strncmp(mm->name, m->name.data, m->name.len) == 0)
            {
                m->metrics = mm;
                break;
            }
        }

        if (m->metrics) {
            continue;
        }

        if (free == NGX_HTTP_AISERVE_METRICS_MODELS
            || m->name.len > NGX_HTTP_AISERVE_METRICS_NAMELEN)
        {
            ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                          "aiserve: no metrics for model \"%V\": the zone "
                          "has slots for %d model names of at most %d "
                          "bytes, restart nginx to free the slots of "
                          "names no longer configured", &m->name,
                          NGX_HTTP_AISERVE_METRICS_MODELS,
                          NGX_HTTP_AISERVE_METRICS_NAMELEN);
            continue;
        }

        mm = &ctx->sh->models[free];
        ngx_memcpy(mm->name, m->name.data, m->name.len);
        mm->len = m->name.len;
        m->metrics = mm;
    }

    return NGX_OK;
}


static void
ngx_http_aiserve_metrics_observe(ngx_http_aiserve_histogram_t *h,
    ngx_uint_t *bounds, ngx_uint_t n, ngx_uint_t v)
{
    ngx_uint_t  i;

    for (i = 0; i < n && v > bounds[i]; i++) {
        /* void */
    }

    (void) ngx_atomic_fetch_add(&h->bucket[i], 1);
    (void) ngx_atomic_fetch_add(&h->sum, v);
}


ngx_int_t
ngx_http_aiserve_metrics_log(ngx_http_request_t *r)
{
    ngx_uint_t                         i, api, status;
    ngx_http_aiserve_ctx_t            *ctx;
    ngx_http_aiserve_loc_conf_t       *alcf;
    ngx_http_aiserve_model_metrics_t  *mm;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_module);

    if (alcf->model == NULL
        || alcf->endpoint != NGX_HTTP_AISERVE_ENDPOINT_NONE)
    {
        /* not an aiserve_infer location, or api=info */
        return NGX_OK;
    }

    /*
     * Without the handler's ctx (ctx->model set), the request was refused
     * before the content handler: the meter's 401, 403, 429 in the access
     * phase, nginx's own error pages.  An api out of range is api=tei's
     * GET, the health check.
     */

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_module);

    if (ctx && ctx->model == NULL) {
        ctx = NULL;
    }

    mm = alcf->model->metrics;
    api = ctx ? ctx->api : alcf->api;

    if (mm == NULL || api >= NGX_HTTP_AISERVE_N_APIS) {
        return NGX_OK;
    }

    status = r->headers_out.status;

    for (i = 0; i < NGX_HTTP_AISERVE_METRICS_STATUSES; i++) {
        if (ngx_http_aiserve_metrics_statuses[i] == status) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&mm->requests[api][i], 1);

    if (ctx == NULL) {
        return NGX_OK;
    }

    if (ctx->admitted && status == NGX_HTTP_OK) {
        (void) ngx_atomic_fetch_add(&mm->prompt_tokens, ctx->prompt_tokens);
    }

    if (ctx->infer_usec > 0) {
        ngx_http_aiserve_metrics_observe(&mm->queue_time,
                                         ngx_http_aiserve_metrics_times,
                                         NGX_HTTP_AISERVE_METRICS_TIMES,
                                         ctx->queue_usec > 0
                                         ? ctx->queue_usec : 0);
        ngx_http_aiserve_metrics_observe(&mm->infer_time,
                                         ngx_http_aiserve_metrics_times,
                                         NGX_HTTP_AISERVE_METRICS_TIMES,
                                         ctx->infer_usec);
    }

    return NGX_OK;
}


void
ngx_http_aiserve_metrics_batch(ngx_http_aiserve_model_t *m, size_t n_seqs,
    size_t n_tokens)
{
    if (m->metrics == NULL) {
        return;
    }

    ngx_http_aiserve_metrics_observe(&m->metrics->batch_size,
                                     ngx_http_aiserve_metrics_sizes,
                                     NGX_HTTP_AISERVE_METRICS_SIZES, n_seqs);
    (void) ngx_atomic_fetch_add(&m->metrics->batch_tokens, n_tokens);
}


void
ngx_http_aiserve_metrics_queue(ngx_http_aiserve_model_t *m)
{
    if (m->metrics == NULL || ngx_worker >= NGX_HTTP_AISERVE_METRICS_WORKERS)
    {
        return;
    }

    m->metrics->queue_depth[ngx_worker] = m->queued;
}


void
ngx_http_aiserve_metrics_ledger_flush(ngx_cycle_t *cycle, ngx_uint_t ok)
{
    ngx_http_aiserve_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_aiserve_module);

    if (amcf == NULL || amcf->metrics == NULL || amcf->metrics->sh == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(ok ? &amcf->metrics->sh->flushes_ok
                                   : &amcf->metrics->sh->flushes_failed, 1);
}


void
ngx_http_aiserve_metrics_key(ngx_http_request_t *r, uint32_t key_id,
    uint64_t prompt_tokens, ngx_uint_t failed)
{
    ngx_uint_t                       i;
    ngx_http_aiserve_main_conf_t    *amcf;
    ngx_http_aiserve_key_metrics_t  *km, *keys;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_module);

    if (amcf == NULL || amcf->metrics == NULL || amcf->metrics->sh == NULL
        || key_id == 0)
    {
        return;
    }

    keys = amcf->metrics->sh->keys;
    km = &keys[NGX_HTTP_AISERVE_METRICS_KEYS];

    /* claim a free slot with a compare-and-set; another worker may claim
     * it first, for this key or another */

    for (i = 0; i < NGX_HTTP_AISERVE_METRICS_KEYS; i++) {
        if (keys[i].key_id == 0) {
            (void) ngx_atomic_cmp_set(&keys[i].key_id, 0, key_id);
        }

        if (keys[i].key_id == key_id) {
            km = &keys[i];
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&km->requests, 1);

    if (failed) {
        (void) ngx_atomic_fetch_add(&km->errors, 1);

    } else {
        (void) ngx_atomic_fetch_add(&km->prompt_tokens, prompt_tokens);
    }
}


/* exposition */

ngx_int_t
ngx_http_aiserve_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t                          workers;
    ngx_uint_t                         k, a, s, w;
    ngx_core_conf_t                   *ccf;
    ngx_atomic_uint_t                  v;
    ngx_http_aiserve_json_t            j;
    ngx_http_aiserve_metrics_sh_t     *sh;
    ngx_http_aiserve_main_conf_t      *amcf;
    ngx_http_aiserve_model_metrics_t  *mm;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_module);

    if (amcf->metrics == NULL || amcf->metrics->sh == NULL) {
        return ngx_http_aiserve_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "server_error", "no_metrics",
                                           NULL, "no metrics: no model is "
                                           "loaded (aiserve_model)");
    }

    sh = amcf->metrics->sh;

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);
    workers = ccf->worker_processes > 0 ? ccf->worker_processes : 1;

    ngx_http_aiserve_json_init(&j, r->pool, 16384);

    ngx_http_aiserve_json_lit(&j,
        "# HELP aiserve_requests_total Requests of aiserve_infer locations "
        "by model, route (api=) and HTTP status; not api=info, not GET or "
        "HEAD on api=tei.\n"
        "# TYPE aiserve_requests_total counter\n");

    for (k = 0; k < NGX_HTTP_AISERVE_METRICS_MODELS; k++) {
        mm = &sh->models[k];

        for (a = 0; mm->len && a < NGX_HTTP_AISERVE_N_APIS; a++) {
            for (s = 0; s <= NGX_HTTP_AISERVE_METRICS_STATUSES; s++) {
                v = mm->requests[a][s];

                if (v == 0) {
                    continue;
                }

                ngx_http_aiserve_json_lit(&j, "aiserve_requests_total{");
                ngx_http_aiserve_metrics_label(&j, mm->name, mm->len);
                ngx_http_aiserve_json_lit(&j, ",route=\"");
                ngx_http_aiserve_json_raw(&j,
                                     (char *) ngx_http_aiserve_apis[a].data,
                                     ngx_http_aiserve_apis[a].len);
                ngx_http_aiserve_json_lit(&j, "\",status=\"");

                if (s < NGX_HTTP_AISERVE_METRICS_STATUSES) {
                    ngx_http_aiserve_json_int(&j,
                                        ngx_http_aiserve_metrics_statuses[s]);

                } else {
                    ngx_http_aiserve_json_lit(&j, "other");
                }

                ngx_http_aiserve_json_lit(&j, "\"} ");
                ngx_http_aiserve_json_int(&j, v);
                ngx_http_aiserve_json_lit(&j, "\n");
            }
        }
    }

    ngx_http_aiserve_metrics_counter(&j, sh, "aiserve_prompt_tokens_total",
        "# HELP aiserve_prompt_tokens_total Tokens of the requests answered "
        "200, special tokens included.\n"
        "# TYPE aiserve_prompt_tokens_total counter\n",
        offsetof(ngx_http_aiserve_model_metrics_t, prompt_tokens));

    ngx_http_aiserve_metrics_counter(&j, sh, "aiserve_batch_tokens_total",
        "# HELP aiserve_batch_tokens_total Tokens run through the encoder "
        "in batches.\n"
        "# TYPE aiserve_batch_tokens_total counter\n",
        offsetof(ngx_http_aiserve_model_metrics_t, batch_tokens));

    ngx_http_aiserve_metrics_histogram(&j, sh, "aiserve_queue_time_seconds",
        "# HELP aiserve_queue_time_seconds Time from joining the queue to "
        "the first batch, per request.\n"
        "# TYPE aiserve_queue_time_seconds histogram\n",
        offsetof(ngx_http_aiserve_model_metrics_t, queue_time),
        ngx_http_aiserve_metrics_times, NGX_HTTP_AISERVE_METRICS_TIMES, 1);

    ngx_http_aiserve_metrics_histogram(&j, sh,
        "aiserve_inference_time_seconds",
        "# HELP aiserve_inference_time_seconds Forward passes a request was "
        "part of, per request.\n"
        "# TYPE aiserve_inference_time_seconds histogram\n",
        offsetof(ngx_http_aiserve_model_metrics_t, infer_time),
        ngx_http_aiserve_metrics_times, NGX_HTTP_AISERVE_METRICS_TIMES, 1);

    ngx_http_aiserve_metrics_histogram(&j, sh, "aiserve_batch_size",
        "# HELP aiserve_batch_size Sequences per forward pass.\n"
        "# TYPE aiserve_batch_size histogram\n",
        offsetof(ngx_http_aiserve_model_metrics_t, batch_size),
        ngx_http_aiserve_metrics_sizes, NGX_HTTP_AISERVE_METRICS_SIZES, 0);

    ngx_http_aiserve_json_lit(&j,
        "# HELP aiserve_queue_depth Requests waiting in a worker's queue of "
        "a model.\n"
        "# TYPE aiserve_queue_depth gauge\n");

    for (k = 0; k < NGX_HTTP_AISERVE_METRICS_MODELS; k++) {
        mm = &sh->models[k];

        for (w = 0; mm->len && w < NGX_HTTP_AISERVE_METRICS_WORKERS; w++) {
            if (w >= (ngx_uint_t) workers && mm->queue_depth[w] == 0) {
                /* workers of a former generation with more of them */
                continue;
            }

            ngx_http_aiserve_json_lit(&j, "aiserve_queue_depth{");
            ngx_http_aiserve_metrics_label(&j, mm->name, mm->len);
            ngx_http_aiserve_json_lit(&j, ",worker=\"");
            ngx_http_aiserve_json_int(&j, w);
            ngx_http_aiserve_json_lit(&j, "\"} ");
            ngx_http_aiserve_json_int(&j, mm->queue_depth[w]);
            ngx_http_aiserve_json_lit(&j, "\n");
        }
    }

    ngx_http_aiserve_json_lit(&j,
        "# HELP aiserve_ledger_flushes_total Flushes of the usage ledger "
        "(aiserve_meter) by result.\n"
        "# TYPE aiserve_ledger_flushes_total counter\n"
        "aiserve_ledger_flushes_total{result=\"ok\"} ");
    ngx_http_aiserve_json_int(&j, sh->flushes_ok);
    ngx_http_aiserve_json_lit(&j,
        "\naiserve_ledger_flushes_total{result=\"failed\"} ");
    ngx_http_aiserve_json_int(&j, sh->flushes_failed);
    ngx_http_aiserve_json_lit(&j, "\n");

    ngx_http_aiserve_metrics_keys(&j, sh, "aiserve_key_requests_total",
        "# HELP aiserve_key_requests_total Metered requests by API key "
        "(key=\"other\": keys beyond the first 256 seen).\n"
        "# TYPE aiserve_key_requests_total counter\n", 0);

    ngx_http_aiserve_metrics_keys(&j, sh, "aiserve_key_prompt_tokens_total",
        "# HELP aiserve_key_prompt_tokens_total Tokens charged by API key.\n"
        "# TYPE aiserve_key_prompt_tokens_total counter\n", 1);

    return ngx_http_aiserve_send_json(r, NGX_HTTP_OK, &j,
                                      "text/plain; version=0.0.4; "
                                      "charset=utf-8");
}


/*
 * One series per API key that has settled a request: its requests, or
 * (tokens) its prompt tokens; the overflow slot as key="other".  Nothing,
 * not even the HELP lines, before the first metered request.
 */

static void
ngx_http_aiserve_metrics_keys(ngx_http_aiserve_json_t *j,
    ngx_http_aiserve_metrics_sh_t *sh, const char *name, const char *help,
    ngx_uint_t tokens)
{
    u_char                           buf[NGX_INT_T_LEN + 4];
    ngx_uint_t                       k, any;
    ngx_http_aiserve_key_metrics_t  *km;

    any = 0;

    for (k = 0; k <= NGX_HTTP_AISERVE_METRICS_KEYS; k++) {
        km = &sh->keys[k];

        if (km->requests == 0) {
            continue;
        }

        if (!any) {
            ngx_http_aiserve_json_raw(j, help, ngx_strlen(help));
            any = 1;
        }

        ngx_http_aiserve_json_raw(j, name, ngx_strlen(name));
        ngx_http_aiserve_json_lit(j, "{key=\"");

        if (k < NGX_HTTP_AISERVE_METRICS_KEYS) {
            ngx_http_aiserve_json_raw(j, (char *) buf,
                                      ngx_sprintf(buf, "key_%uA", km->key_id)
                                      - buf);
        } else {
            ngx_http_aiserve_json_lit(j, "other");
        }

        ngx_http_aiserve_json_lit(j, "\"} ");
        ngx_http_aiserve_json_int(j, tokens ? km->prompt_tokens
                                            : km->requests);
        ngx_http_aiserve_json_lit(j, "\n");
    }
}


/* model="NAME", with \, " and newline escaped as the format asks */

static void
ngx_http_aiserve_metrics_label(ngx_http_aiserve_json_t *j, const u_char *s,
    size_t len)
{
    size_t  i;

    ngx_http_aiserve_json_lit(j, "model=\"");

    for (i = 0; i < len; i++) {
        switch (s[i]) {
        case '\\':
            ngx_http_aiserve_json_lit(j, "\\\\");
            break;
        case '"':
            ngx_http_aiserve_json_lit(j, "\\\"");
            break;
        case '\n':
            ngx_http_aiserve_json_lit(j, "\\n");
            break;
        default:
            ngx_http_aiserve_json_raw(j, (char *) &s[i], 1);
        }
    }

    ngx_http_aiserve_json_lit(j, "\"");
}


/* a counter of each model: the ngx_atomic_t at offset in its slot */

static void
ngx_http_aiserve_metrics_counter(ngx_http_aiserve_json_t *j,
    ngx_http_aiserve_metrics_sh_t *sh, const char *name, const char *help,
    size_t offset)
{
    ngx_uint_t                         k;
    ngx_http_aiserve_model_metrics_t  *mm;

    ngx_http_aiserve_json_raw(j, help, ngx_strlen(help));

    for (k = 0; k < NGX_HTTP_AISERVE_METRICS_MODELS; k++) {
        mm = &sh->models[k];

        if (mm->len == 0) {
            continue;
        }

        ngx_http_aiserve_json_raw(j, name, ngx_strlen(name));
        ngx_http_aiserve_json_lit(j, "{");
        ngx_http_aiserve_metrics_label(j, mm->name, mm->len);
        ngx_http_aiserve_json_lit(j, "} ");
        ngx_http_aiserve_json_int(j, *(ngx_atomic_t *) ((u_char *) mm
                                                        + offset));
        ngx_http_aiserve_json_lit(j, "\n");
    }
}


/*
 * A histogram of each model (the one at offset in its slot): cumulative
 * buckets up to bounds[n - 1], +Inf, _sum and _count; bounds and the sum
 * in microseconds written as seconds when seconds is set.
 */

static void
ngx_http_aiserve_metrics_histogram(ngx_http_aiserve_json_t *j,
    ngx_http_aiserve_metrics_sh_t *sh, const char *name, const char *help,
    size_t offset, ngx_uint_t *bounds, ngx_uint_t n, ngx_uint_t seconds)
{
    size_t                             len;
    ngx_uint_t                         i, k;
    ngx_atomic_uint_t                  total;
    ngx_http_aiserve_histogram_t      *h;
    ngx_http_aiserve_model_metrics_t  *mm;

    len = ngx_strlen(name);
    ngx_http_aiserve_json_raw(j, help, ngx_strlen(help));

    for (k = 0; k < NGX_HTTP_AISERVE_METRICS_MODELS; k++) {
        mm = &sh->models[k];

        if (mm->len == 0) {
            continue;
        }

        h = (ngx_http_aiserve_histogram_t *) ((u_char *) mm + offset);
        total = 0;

        for (i = 0; i <= n; i++) {
            total += h->bucket[i];

            ngx_http_aiserve_json_raw(j, name, len);
            ngx_http_aiserve_json_lit(j, "_bucket{");
            ngx_http_aiserve_metrics_label(j, mm->name, mm->len);
            ngx_http_aiserve_json_lit(j, ",le=\"");

            if (i < n) {
                ngx_http_aiserve_metrics_number(j, bounds[i], seconds);

            } else {
                ngx_http_aiserve_json_lit(j, "+Inf");
            }

            ngx_http_aiserve_json_lit(j, "\"} ");
            ngx_http_aiserve_json_int(j, total);
            ngx_http_aiserve_json_lit(j, "\n");
        }

        ngx_http_aiserve_json_raw(j, name, len);
        ngx_http_aiserve_json_lit(j, "_sum{");
        ngx_http_aiserve_metrics_label(j, mm->name, mm->len);
        ngx_http_aiserve_json_lit(j, "} ");
        ngx_http_aiserve_metrics_number(j, h->sum, seconds);
        ngx_http_aiserve_json_lit(j, "\n");

        ngx_http_aiserve_json_raw(j, name, len);
        ngx_http_aiserve_json_lit(j, "_count{");
        ngx_http_aiserve_metrics_label(j, mm->name, mm->len);
        ngx_http_aiserve_json_lit(j, "} ");
        ngx_http_aiserve_json_int(j, total);
        ngx_http_aiserve_json_lit(j, "\n");
    }
}


/* v, or v microseconds in seconds ("0.0025") */

static void
ngx_http_aiserve_metrics_number(ngx_http_aiserve_json_t *j, ngx_uint_t v,
    ngx_uint_t seconds)
{
    u_char  buf[NGX_INT_T_LEN + 8], *p;

    if (!seconds) {
        ngx_http_aiserve_json_int(j, v);
        return;
    }

    p = ngx_sprintf(buf, "%ui.%06ui", v / 1000000, v % 1000000);

    /* trailing zeros off, the point too if nothing follows it */
    while (p[-1] == '0') {
        p--;
    }

    if (p[-1] == '.') {
        p--;
    }

    ngx_http_aiserve_json_raw(j, (char *) buf, p - buf);
}
