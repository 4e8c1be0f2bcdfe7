/*
 * ngx_http_aiserve_meter_module: API keys, usage ledger, quotas and rate
 * limits for aiserve.  Own ngx_module_t in the aiserve .so.
 *
 * Where things live:
 *   - keys and the ledger: an LMDB environment (aiserve_meter_db PATH,
 *     src/aiserve_ledger.c), opened per worker in init_process, closed in
 *     exit_process; the master only creates it, reads hmac.key and, in
 *     ngx_http_aiserve_meter_check_module (a core module), gives it to the
 *     worker user and checks that this user can open it.
 *   - hot state: a shared zone (aiserve_meter_zone NAME SIZE), reused
 *     across reloads like ngx_http_limit_req_module's: per key rate buckets,
 *     budget used and reserved, requests in flight, and per (key, day,
 *     model) usage not yet flushed.
 *
 * The flush protocol is described in ngx_http_aiserve_meter_flush.c; the
 * files of the module are listed in ngx_http_aiserve_meter.h.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_aiserve.h"
#include "ngx_http_aiserve_infer.h"
#include "ngx_http_aiserve_meter.h"


static ngx_int_t ngx_http_aiserve_meter_header_filter(ngx_http_request_t *r);

static ngx_int_t ngx_http_aiserve_meter_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_aiserve_meter_rbtree_insert_value(
    ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel);

static ngx_int_t ngx_http_aiserve_meter_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_aiserve_meter_check_prices(ngx_conf_t *cf,
    ngx_http_aiserve_meter_main_conf_t *mcf);
static ngx_int_t ngx_http_aiserve_meter_init(ngx_conf_t *cf);
static void *ngx_http_aiserve_meter_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_aiserve_meter_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_aiserve_meter_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_aiserve_meter_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_aiserve_meter_db(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_aiserve_meter_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_aiserve_meter_currency(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_aiserve_meter_check_currency(ngx_conf_t *cf,
    ngx_http_aiserve_meter_main_conf_t *mcf);
static char *ngx_http_aiserve_meter_price(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_aiserve_meter_usage(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_aiserve_meter_init_module(ngx_cycle_t *cycle);
static char *ngx_http_aiserve_meter_check_ledger(ngx_cycle_t *cycle,
    void *conf);
static size_t ngx_http_aiserve_meter_missing(u_char *path);
static void ngx_http_aiserve_meter_unmake(ngx_cycle_t *cycle,
    ngx_http_aiserve_meter_main_conf_t *mcf);
static ngx_int_t ngx_http_aiserve_meter_access(u_char *path,
    ngx_uint_t own, u_char *msg, size_t len);
static ngx_int_t ngx_http_aiserve_meter_access_as(ngx_cycle_t *cycle,
    ngx_core_conf_t *ccf, u_char *path, ngx_uint_t own, u_char *msg,
    size_t len);
static ngx_int_t ngx_http_aiserve_meter_init_process(ngx_cycle_t *cycle);
static void ngx_http_aiserve_meter_exit_process(ngx_cycle_t *cycle);


static ngx_conf_enum_t  ngx_http_aiserve_meter_modes[] = {
    { ngx_string("off"), NGX_HTTP_AISERVE_METER_OFF },
    { ngx_string("on"), NGX_HTTP_AISERVE_METER_ON },
    { ngx_string("dry_run"), NGX_HTTP_AISERVE_METER_DRY_RUN },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_aiserve_meter_commands[] = {

    { ngx_string("aiserve_meter"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_aiserve_meter_loc_conf_t, mode),
      &ngx_http_aiserve_meter_modes },

    { ngx_string("aiserve_meter_db"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_aiserve_meter_db,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_meter_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_aiserve_meter_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_price"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE23,
      ngx_http_aiserve_meter_price,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_usage"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_aiserve_meter_usage,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_currency"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_aiserve_meter_currency,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_aiserve_meter_usage,
      NGX_HTTP_LOC_CONF_OFFSET,
      1,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_aiserve_meter_module_ctx = {
    ngx_http_aiserve_meter_add_variables,   /* preconfiguration */
    ngx_http_aiserve_meter_init,            /* postconfiguration */

    ngx_http_aiserve_meter_create_main_conf, /* create main configuration */
    ngx_http_aiserve_meter_init_main_conf,  /* init main configuration */

    NULL,                                   /* create server configuration */
    NULL,                                   /* merge server configuration */

    ngx_http_aiserve_meter_create_loc_conf, /* create location configuration */
    ngx_http_aiserve_meter_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_aiserve_meter_module = {
    NGX_MODULE_V1,
    &ngx_http_aiserve_meter_module_ctx,     /* module context */
    ngx_http_aiserve_meter_commands,        /* module directives */
    NGX_HTTP_MODULE,                        /* module type */
    NULL,                                   /* init master */
    ngx_http_aiserve_meter_init_module,     /* init module */
    ngx_http_aiserve_meter_init_process,    /* init process */
    NULL,                                   /* init thread */
    NULL,                                   /* exit thread */
    ngx_http_aiserve_meter_exit_process,    /* exit process */
    NULL,                                   /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * A core module for one hook: core modules' init_conf runs after the whole
 * configuration is read, once the "user" of the workers is known, and a
 * failure there rejects the configuration (nginx -t, a start, a reload)
 * before any listening socket is opened or any worker started.
 */
static ngx_core_module_t  ngx_http_aiserve_meter_check_module_ctx = {
    ngx_string("aiserve_meter_check"),
    NULL,
    ngx_http_aiserve_meter_check_ledger
};


ngx_module_t  ngx_http_aiserve_meter_check_module = {
    NGX_MODULE_V1,
    &ngx_http_aiserve_meter_check_module_ctx, /* module context */
    NULL,                                   /* module directives */
    NGX_CORE_MODULE,                        /* module type */
    NULL,                                   /* init master */
    NULL,                                   /* init module */
    NULL,                                   /* init process */
    NULL,                                   /* init thread */
    NULL,                                   /* exit thread */
    NULL,                                   /* exit process */
    NULL,                                   /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


/* per worker: the ledger (LMDB env) and the flush timer */
aiserve_ledger_t          *ngx_http_aiserve_meter_ledger;
aiserve_key_hmac_t        *ngx_http_aiserve_meter_hmac;
static ngx_event_t         ngx_http_aiserve_meter_flush_event;
static ngx_connection_t    ngx_http_aiserve_meter_dummy;


/* --- time and shared zone lookups (zone mutex held) --------------------- */

uint32_t
ngx_http_aiserve_meter_today(void)
{
    return aiserve_day(ngx_time());
}


ngx_http_aiserve_meter_key_t *
ngx_http_aiserve_meter_key_lookup(ngx_http_aiserve_meter_zone_t *z,
    ngx_rbtree_key_t key_id)
{
    ngx_rbtree_node_t  *node, *sentinel;

    node = z->sh->keys.root;
    sentinel = z->sh->keys.sentinel;

    while (node != sentinel) {
        if (key_id < node->key) {
            node = node->left;
            continue;
        }
        if (key_id > node->key) {
            node = node->right;
            continue;
        }
        return (ngx_http_aiserve_meter_key_t *) node;
    }

    return NULL;
}


/* Rows are ordered by (crc32, key id, day, price, api, model). */
static ngx_int_t
ngx_http_aiserve_meter_row_cmp(uint32_t hash, const aiserve_row_key_t *rk,
    ngx_http_aiserve_meter_row_t *row)
{
    ngx_int_t  rc;

    if (hash != row->node.key) {
        return hash < row->node.key ? -1 : 1;
    }

    if (rk->key_id != row->rk.key_id) {
        return rk->key_id < row->rk.key_id ? -1 : 1;
    }

    if (rk->day != row->rk.day) {
        return rk->day < row->rk.day ? -1 : 1;
    }

    if (rk->price != row->rk.price) {
        return rk->price < row->rk.price ? -1 : 1;
    }

    rc = ngx_strcmp(rk->api, row->rk.api);

    return rc ? rc : ngx_strcmp(rk->model, row->rk.model);
}


static uint32_t
ngx_http_aiserve_meter_row_hash(const aiserve_row_key_t *rk)
{
    uint32_t  hash;

    ngx_crc32_init(hash);
    ngx_crc32_update(&hash, (u_char *) &rk->key_id, sizeof(uint32_t));
    ngx_crc32_update(&hash, (u_char *) &rk->day, sizeof(uint32_t));
    ngx_crc32_update(&hash, (u_char *) &rk->price, sizeof(uint64_t));
    ngx_crc32_update(&hash, (u_char *) rk->api, ngx_strlen(rk->api));
    ngx_crc32_update(&hash, (u_char *) rk->model, ngx_strlen(rk->model));
    ngx_crc32_final(hash);

    return hash;
}


uint64_t
ngx_http_aiserve_meter_price_of(ngx_http_aiserve_meter_main_conf_t *mcf,
    ngx_str_t *model, ngx_uint_t training)
{
    ngx_uint_t                       i;
    ngx_http_aiserve_meter_price_t  *p;

    if (mcf->prices == NULL) {
        return 0;
    }

    p = mcf->prices->elts;

    for (i = 0; i < mcf->prices->nelts; i++) {
        if (p[i].model.len == model->len
            && ngx_strncmp(p[i].model.data, model->data, model->len) == 0)
        {
            return training ? p[i].training : p[i].price;
        }
    }

    return 0;
}


void
ngx_http_aiserve_meter_row_key(ngx_http_request_t *r, ngx_str_t *model,
    uint32_t day, aiserve_row_key_t *rk)
{
    ngx_http_aiserve_meter_ctx_t        *ctx;
    ngx_http_aiserve_loc_conf_t         *alcf;
    ngx_http_aiserve_meter_loc_conf_t   *lcf;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_meter_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_meter_module);
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_module);

    ngx_memzero(rk, sizeof(aiserve_row_key_t));
    rk->key_id = ctx->key.id;
    rk->day = day;

    /* no model yet (refused before the body was read): data is NULL */
    if (model->len) {
        ngx_memcpy(rk->model, model->data,
                   ngx_min(model->len, AISERVE_MODEL_MAX));
    }

    rk->price = ngx_http_aiserve_meter_price_of(mcf, model, 0);

    if (alcf->model_name.len) {
        ngx_memcpy(rk->api, ngx_http_aiserve_apis[alcf->api].data,
                   ngx_min(ngx_http_aiserve_apis[alcf->api].len,
                           AISERVE_API_MAX));

    } else if (lcf->usage_admin) {
        ngx_memcpy(rk->api, "admin", sizeof("admin") - 1);

    } else if (lcf->usage_file) {
        ngx_memcpy(rk->api, "usage", sizeof("usage") - 1);

    } else {
        ngx_memcpy(rk->api, "other", sizeof("other") - 1);
    }
}


ngx_http_aiserve_meter_row_t *
ngx_http_aiserve_meter_row_lookup(ngx_http_aiserve_meter_zone_t *z,
    aiserve_row_key_t *rk, ngx_uint_t create)
{
    uint32_t                       hash;
    ngx_int_t                      rc;
    ngx_rbtree_node_t             *node, *sentinel;
    ngx_http_aiserve_meter_row_t  *row;

    hash = ngx_http_aiserve_meter_row_hash(rk);

    node = z->sh->rows.root;
    sentinel = z->sh->rows.sentinel;

    while (node != sentinel) {
        row = (ngx_http_aiserve_meter_row_t *) node;

        rc = ngx_http_aiserve_meter_row_cmp(hash, rk, row);

        if (rc == 0) {
            return row;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    if (!create) {
        return NULL;
    }

    row = ngx_slab_calloc_locked(z->shpool,
                                 sizeof(ngx_http_aiserve_meter_row_t));
    if (row == NULL) {
        return NULL;
    }

    row->node.key = hash;
    row->rk = *rk;

    ngx_rbtree_insert(&z->sh->rows, &row->node);
    ngx_queue_insert_tail(&z->sh->rows_queue, &row->queue);

    return row;
}


void
ngx_http_aiserve_meter_usage_add(aiserve_usage_t *to,
    const aiserve_usage_t *u)
{
    to->requests += u->requests;
    to->prompt_tokens += u->prompt_tokens;
    to->compute_usec += u->compute_usec;
    to->bytes_in += u->bytes_in;
    to->bytes_out += u->bytes_out;
    to->errors += u->errors;
    to->cost_nano += u->cost_nano;
    to->refused_401 += u->refused_401;
    to->refused_403 += u->refused_403;
    to->refused_429 += u->refused_429;
    to->trained_tokens += u->trained_tokens;

    /* a gauge: the bytes an account stores; the day's (the sum's) peak */
    if (u->storage_bytes > to->storage_bytes) {
        to->storage_bytes = u->storage_bytes;
    }
}


ngx_int_t
ngx_http_aiserve_meter_header(ngx_http_request_t *r, const char *name,
    u_char *value, size_t len, ngx_table_elt_t **hp)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = ngx_pnalloc(r->pool, len);
    if (h->value.data == NULL) {
        return NGX_ERROR;
    }
    ngx_memcpy(h->value.data, value, len);
    h->value.len = len;

    if (hp) {
        *hp = h;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_aiserve_meter_not_allowed(ngx_http_request_t *r, const char *allow,
    const char *use)
{
    if (ngx_http_aiserve_meter_header(r, "Allow", (u_char *) allow,
                                      ngx_strlen(allow), NULL)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_aiserve_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                       "invalid_request_error",
                                       "method_not_allowed", NULL,
                                       "method %V is not allowed, use %s",
                                       &r->method_name, use);
}


ngx_int_t
ngx_http_aiserve_meter_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_buf_t *b)
{
    ngx_int_t     rc;
    ngx_chain_t   out;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_aiserve_meter_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *o)
{
    char       *s;
    size_t      len;
    ngx_buf_t  *b;

    if (o == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER
                      | JSON_REAL_PRECISION(15));
    json_decref(o);

    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(s);

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        free(s);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, s, len);
    *b->last++ = '\n';
    free(s);

    return ngx_http_aiserve_meter_send(r, status, b);
}


/* Only our Retry-After when we set one (the error sender may add its own). */
static ngx_int_t
ngx_http_aiserve_meter_header_filter(ngx_http_request_t *r)
{
    ngx_uint_t                     i;
    ngx_list_part_t               *part;
    ngx_table_elt_t               *h;
    ngx_http_aiserve_meter_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (ctx == NULL || ctx->retry_after == NULL) {
        return ngx_http_next_header_filter(r);
    }

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }
            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (&h[i] != ctx->retry_after && h[i].hash
            && h[i].key.len == sizeof("Retry-After") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Retry-After",
                               sizeof("Retry-After") - 1) == 0)
        {
            h[i].hash = 0;
        }
    }

    return ngx_http_next_header_filter(r);
}


/* --- process hooks ------------------------------------------------------- */

static ngx_int_t
ngx_http_aiserve_meter_init_process(ngx_cycle_t *cycle)
{
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_aiserve_meter_module);
    if (mcf == NULL || mcf->db_path.len == 0) {
        return NGX_OK;
    }

    /* LMDB never crosses fork(): each worker opens its own environment */
    (void) ngx_http_aiserve_meter_open_ledger(cycle, NGX_LOG_EMERG);

    ngx_http_aiserve_meter_hmac = aiserve_key_hmac_create(mcf->pepper);
    if (ngx_http_aiserve_meter_hmac == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "aiserve meter: cannot create an HMAC-SHA-256 context");
        return NGX_ERROR;
    }

    if (mcf->shm_zone) {
        ngx_http_aiserve_meter_dummy.fd = (ngx_socket_t) -1;
        ngx_http_aiserve_meter_flush_event.handler =
                                           ngx_http_aiserve_meter_flush_timer;
        ngx_http_aiserve_meter_flush_event.log = cycle->log;
        ngx_http_aiserve_meter_flush_event.data = &ngx_http_aiserve_meter_dummy;
        ngx_http_aiserve_meter_flush_event.cancelable = 1;
        ngx_add_timer(&ngx_http_aiserve_meter_flush_event, mcf->flush);
    }

    return NGX_OK;
}


/*
 * Opens the worker's ledger; logs a failure at level (0: not at all).  A
 * worker that cannot open it (the ledger was made unreadable after nginx
 * started, LMDB fails) keeps serving: metered requests get 503
 * meter_unavailable, and the flush timer calls this again every flush
 * interval, so a repaired ledger is taken up without a restart.  A worker
 * that exited instead would exit with a fatal code, which nginx does not
 * respawn, and could leave the master listening with no worker.
 */
ngx_int_t
ngx_http_aiserve_meter_open_ledger(ngx_cycle_t *cycle, ngx_uint_t level)
{
    char                                 err[512];
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    if (ngx_http_aiserve_meter_ledger) {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_aiserve_meter_module);

    if (aiserve_ledger_open(&ngx_http_aiserve_meter_ledger,
                            (char *) mcf->db_path.data, mcf->map_size,
                            AISERVE_LEDGER_NO_PEPPER, err, sizeof(err))
        != AISERVE_LEDGER_OK)
    {
        ngx_http_aiserve_meter_ledger = NULL;

        if (level) {
            ngx_log_error(level, cycle->log, 0,
                          "aiserve meter: %s; metered requests get 503 "
                          "until the ledger can be opened (tried again "
                          "every %M ms)", err, mcf->flush);
        }

        return NGX_ERROR;
    }

    aiserve_ledger_reader_check(ngx_http_aiserve_meter_ledger);

    /* the admin API creates and rotates keys */
    aiserve_ledger_set_pepper(ngx_http_aiserve_meter_ledger, mcf->pepper);

    return NGX_OK;
}


static void
ngx_http_aiserve_meter_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_aiserve_meter_ledger) {
        ngx_http_aiserve_meter_flush(cycle, 1);

        aiserve_ledger_close(ngx_http_aiserve_meter_ledger);
        ngx_http_aiserve_meter_ledger = NULL;
    }

    if (ngx_http_aiserve_meter_hmac) {
        aiserve_key_hmac_free(ngx_http_aiserve_meter_hmac);
        ngx_http_aiserve_meter_hmac = NULL;
    }
}


/* Master, after the configuration is read: keys are masked in every error
 * log of the cycle. */
static ngx_int_t
ngx_http_aiserve_meter_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t                           i;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_core_srv_conf_t           **cscf;
    ngx_http_core_main_conf_t           *cmcf;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_aiserve_meter_module);
    if (mcf == NULL || mcf->db_path.len == 0) {
        return NGX_OK;
    }

    if (ngx_http_aiserve_meter_mask_logs(cycle, &cycle->new_log) != NGX_OK) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_core_module);
    cscf = cmcf->servers.elts;

    for (i = 0; i < cmcf->servers.nelts; i++) {
        clcf = cscf[i]->ctx->loc_conf[ngx_http_core_module.ctx_index];

        if (ngx_http_aiserve_meter_mask_logs(cycle, clcf->error_log)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * init_conf of ngx_http_aiserve_meter_check_module: the ledger's directory
 * and files are given to the worker user (like nginx's temp paths), then
 * that user must be able to open them: search every directory above the
 * ledger, read and write the directory and its files.  nginx -t and
 * nginx -s (which create nothing) check instead that the master could
 * create a missing ledger, and leave the ledger's own permissions to the
 * chown of the start.  A worker that cannot open the ledger would exit
 * with a fatal code and leave the master listening with no worker.
 */
static char *
ngx_http_aiserve_meter_check_ledger(ngx_cycle_t *cycle, void *conf)
{
    u_char                               file[NGX_MAX_PATH], *p, *last;
    u_char                               msg[NGX_MAX_ERROR_STR];
    ngx_int_t                            rc;
    ngx_uint_t                           i, dry, switch_user;
    ngx_file_info_t                      fi;
    ngx_core_conf_t                     *ccf;
    struct passwd                       *pwd;
    ngx_http_aiserve_meter_main_conf_t  *mcf;
    static const char                   *names[] = {
        "", "/data.mdb", "/lock.mdb"
    };

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_aiserve_meter_module);
    if (mcf == NULL || mcf->db_path.len == 0) {
        return NGX_CONF_OK;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    dry = (ngx_test_config || ngx_process == NGX_PROCESS_SIGNALLER);
    switch_user = (geteuid() == 0 && ccf->master
                   && ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT);

    if (ngx_file_info(mcf->db_path.data, &fi) == NGX_FILE_ERROR) {

        /* only nginx -t and nginx -s get here: they create nothing */

        ngx_cpystrn(file, mcf->db_path.data,
                    ngx_min(mcf->db_path.len + 1, sizeof(file)));
        last = file + ngx_strlen(file);

        do {
            for (p = last - 1; p > file && *p != '/'; p--) { /* void */ }
            last = (p == file) ? p + 1 : p;
            *last = '\0';
        } while (last > file + 1
                 && ngx_file_info(file, &fi) == NGX_FILE_ERROR);

        if (access((char *) file, W_OK|X_OK) == -1) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "the ledger \"%V\" of \"aiserve_meter_db\" in "
                          "%s:%ui cannot be created: no write permission "
                          "on \"%s\"", &mcf->db_path, mcf->db_file,
                          mcf->db_line, file);
            return NGX_CONF_ERROR;
        }

    } else if (switch_user && !dry) {

        for (i = 0; i < 3; i++) {
            ngx_snprintf(file, sizeof(file) - 1, "%V%s%Z", &mcf->db_path,
                         names[i]);

            if (chown((char *) file, ccf->user, ccf->group) == -1) {
                ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                              "chown(\"%s\", %d) failed", file, ccf->user);
                return NGX_CONF_ERROR;
            }
        }
    }

    if (switch_user) {
        rc = ngx_http_aiserve_meter_access_as(cycle, ccf, mcf->db_path.data,
                                              !dry, msg, sizeof(msg));

    } else {
        rc = ngx_http_aiserve_meter_access(mcf->db_path.data, 1, msg,
                                           sizeof(msg));
    }

    if (rc == NGX_OK) {
        return NGX_CONF_OK;
    }

    if (switch_user) {
        p = (u_char *) ccf->username;

    } else {
        pwd = getpwuid(geteuid());
        p = (u_char *) (pwd ? pwd->pw_name : "?");
    }

    ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                  "user \"%s\" of the worker processes cannot open the "
                  "ledger \"%V\" of \"aiserve_meter_db\" in %s:%ui: %s",
                  p, &mcf->db_path, mcf->db_file, mcf->db_line, msg);

    ngx_http_aiserve_meter_unmake(cycle, mcf);

    return NGX_CONF_ERROR;
}


/*
 * The length of the first prefix of path (absolute, NUL-terminated) that
 * does not exist: the directory that creating path would make first, or
 * 0 when path exists.
 */
static size_t
ngx_http_aiserve_meter_missing(u_char *path)
{
    u_char           dir[NGX_MAX_PATH], *p;
    ngx_file_info_t  fi;

    for (p = path + 1; ; p++) {
        if (*p != '/' && *p != '\0') {
            continue;
        }

        ngx_cpystrn(dir, path, ngx_min((size_t) (p - path) + 1,
                                       sizeof(dir)));

        if (ngx_file_info(dir, &fi) == NGX_FILE_ERROR) {
            return p - path;
        }

        if (*p == '\0') {
            return 0;
        }
    }
}


/*
 * Removes what aiserve_meter_db made in this start when the worker user
 * cannot open it: the ledger's files, its directory and the directories
 * above it down to mcf->db_created.  rmdir() leaves a directory that holds
 * anything else.
 */
static void
ngx_http_aiserve_meter_unmake(ngx_cycle_t *cycle,
    ngx_http_aiserve_meter_main_conf_t *mcf)
{
    u_char             file[NGX_MAX_PATH], *p;
    ngx_uint_t         i;
    static const char *names[] = { "/data.mdb", "/lock.mdb", "/hmac.key" };

    if (mcf->db_created == 0) {
        return;
    }

    for (i = 0; i < 3; i++) {
        ngx_snprintf(file, sizeof(file) - 1, "%V%s%Z", &mcf->db_path,
                     names[i]);

        if (unlink((char *) file) == -1 && ngx_errno != NGX_ENOENT) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                          "unlink(\"%s\") failed", file);
        }
    }

    ngx_cpystrn(file, mcf->db_path.data,
                ngx_min(mcf->db_path.len + 1, sizeof(file)));
    p = file + ngx_strlen(file);

    while ((size_t) (p - file) >= mcf->db_created) {
        *p = '\0';

        if (rmdir((char *) file) == -1) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                          "rmdir(\"%s\") failed", file);
            return;
        }

        for (p--; p > file && *p != '/'; p--) { /* void */ }
    }

    mcf->db_created = 0;
}


/*
 * Checks, as the calling process's user, that the ledger at path (absolute)
 * can be opened: search permission on every existing directory above it
 * and, with own, read and write permission on the directory and on
 * data.mdb and lock.mdb where they exist.  Returns NGX_OK, or NGX_ERROR
 * with what is missing in msg (NUL-terminated).  Async-signal-safe apart
 * from ngx_snprintf(), so a forked child may call it.
 */
static ngx_int_t
ngx_http_aiserve_meter_access(u_char *path, ngx_uint_t own, u_char *msg,
    size_t len)
{
    u_char       dir[NGX_MAX_PATH], *p;
    ngx_err_t    err;
    ngx_uint_t   i;
    struct stat  st;
    static const char  *names[] = { "/data.mdb", "/lock.mdb" };

    for (p = path; *p; p++) {
        if (*p != '/') {
            continue;
        }

        if (p == path) {
            dir[0] = '/';
            dir[1] = '\0';

        } else {
            ngx_cpystrn(dir, path, ngx_min((size_t) (p - path) + 1,
                                           sizeof(dir)));
        }

        if (stat((char *) dir, &st) == -1) {
            /* created later, mode 0755, by the master */
            return NGX_OK;
        }

        if (access((char *) dir, X_OK) == -1) {
            err = ngx_errno;
            ngx_snprintf(msg, len, "no search permission on \"%s\" "
                         "(%d: %s)%Z", dir, err, strerror(err));
            return NGX_ERROR;
        }
    }

    if (!own || stat((char *) path, &st) == -1) {
        return NGX_OK;
    }

    if (access((char *) path, R_OK|W_OK|X_OK) == -1) {
        err = ngx_errno;
        ngx_snprintf(msg, len, "no read, write and search permission on "
                     "\"%s\" (%d: %s)%Z", path, err, strerror(err));
        return NGX_ERROR;
    }

    for (i = 0; i < 2; i++) {
        ngx_snprintf(dir, sizeof(dir) - 1, "%s%s%Z", path, names[i]);

        if (stat((char *) dir, &st) == 0
            && access((char *) dir, R_OK|W_OK) == -1)
        {
            err = ngx_errno;
            ngx_snprintf(msg, len, "no read and write permission on "
                         "\"%s\" (%d: %s)%Z", dir, err, strerror(err));
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * ngx_http_aiserve_meter_access() as the worker user of ccf, in a child
 * process that takes that user's identity as ngx_worker_process_init()
 * does (setgid, initgroups, setuid), so that every permission the kernel
 * would apply to the workers (groups, ACLs) applies.  The master's signals
 * are blocked while it reads a configuration, so its SIGCHLD handler does
 * not reap this child.
 */
static ngx_int_t
ngx_http_aiserve_meter_access_as(ngx_cycle_t *cycle, ngx_core_conf_t *ccf,
    u_char *path, ngx_uint_t own, u_char *msg, size_t len)
{
    int        fd[2], status;
    u_char    *p;
    pid_t      pid;
    ssize_t    n;
    ngx_err_t  err;

    if (pipe(fd) == -1) {
        ngx_snprintf(msg, len, "pipe() failed (%d)%Z", ngx_errno);
        return NGX_ERROR;
    }

    pid = fork();

    if (pid == -1) {
        err = ngx_errno;
        close(fd[0]);
        close(fd[1]);
        ngx_snprintf(msg, len, "fork() failed (%d: %s)%Z", err,
                     strerror(err));
        return NGX_ERROR;
    }

    if (pid == 0) {
        close(fd[0]);

        if (setgid(ccf->group) == -1
            || initgroups(ccf->username, ccf->group) == -1
            || setuid(ccf->user) == -1)
        {
            err = ngx_errno;
            ngx_snprintf(msg, len, "cannot take the identity of the user "
                         "(%d: %s)%Z", err, strerror(err));

        } else if (ngx_http_aiserve_meter_access(path, own, msg, len)
                   == NGX_OK)
        {
            _exit(0);
        }

        n = write(fd[1], msg, ngx_strlen(msg));
        _exit(n > 0 ? 1 : 2);
    }

    close(fd[1]);

    p = msg;

    while (p < msg + len - 1) {
        n = read(fd[0], p, msg + len - 1 - p);
        if (n > 0) {
            p += n;
            continue;
        }

        if (n == -1 && ngx_errno == NGX_EINTR) {
            continue;
        }

        break;
    }

    *p = '\0';
    close(fd[0]);

    while (waitpid(pid, &status, 0) == -1) {
        if (ngx_errno != NGX_EINTR) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                          "waitpid(%P) failed", pid);
            return NGX_ERROR;
        }
    }

    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        return NGX_OK;
    }

    if (p == msg) {
        ngx_snprintf(msg, len, "the check as that user failed "
                     "(wait status %d)%Z", status);
    }

    return NGX_ERROR;
}


/* --- variables ------------------------------------------------------------ */

static ngx_int_t
ngx_http_aiserve_meter_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                        *p;
    ngx_http_aiserve_meter_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (ctx == NULL || !ctx->authenticated || (data == 1 && !ctx->has_cost)) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 8);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    if (data == 0) {
        v->len = ngx_sprintf(p, "key_%uD", ctx->key.id) - p;

    } else {
        /* micro-units of currency, exact: three decimals */
        v->len = ngx_sprintf(p, "%uL.%03uL", ctx->cost_nano / 1000,
                             ctx->cost_nano % 1000) - p;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_http_variable_t  ngx_http_aiserve_meter_vars[] = {

    { ngx_string("aiserve_key_id"), NULL, ngx_http_aiserve_meter_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("aiserve_cost"), NULL, ngx_http_aiserve_meter_variable,
      1, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_aiserve_meter_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_aiserve_meter_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/* --- shared zone ---------------------------------------------------------- */

static void
ngx_http_aiserve_meter_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t             **p;
    ngx_http_aiserve_meter_row_t   *row;

    row = (ngx_http_aiserve_meter_row_t *) node;

    for ( ;; ) {
        p = ngx_http_aiserve_meter_row_cmp((uint32_t) node->key, &row->rk,
                                           (ngx_http_aiserve_meter_row_t *)
                                           temp) < 0
            ? &temp->left : &temp->right;

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/*
 * Reload policy: a zone with the same name, size and tag is reused as it
 * is (counters, unflushed usage and reservations survive a reload); a new
 * one starts empty (the old workers flush the old one when they exit).
 */
static ngx_int_t
ngx_http_aiserve_meter_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_aiserve_meter_zone_t  *oz = data;

    size_t                          len;
    ngx_http_aiserve_meter_zone_t  *z;

    uint8_t                         id[AISERVE_HASH_LEN];

    z = shm_zone->data;

    /* the zone's unflushed usage belongs to one ledger: its identity is a
     * hash of the ledger's HMAC key */
    aiserve_key_hash(z->mcf->pepper, "aiserve_meter_zone",
                     sizeof("aiserve_meter_zone") - 1, id);

    if (oz) {
        if (ngx_memcmp(oz->sh->ledger_id, id, AISERVE_HASH_LEN) != 0) {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "aiserve_meter_zone \"%V\" holds usage of another "
                          "ledger than \"%V\": use a new zone name with a "
                          "new aiserve_meter_db", &shm_zone->shm.name,
                          &z->mcf->db_path);
            return NGX_ERROR;
        }

        z->sh = oz->sh;
        z->shpool = oz->shpool;
        return NGX_OK;
    }

    z->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        z->sh = z->shpool->data;
        return NGX_OK;
    }

    z->sh = ngx_slab_calloc(z->shpool,
                            sizeof(ngx_http_aiserve_meter_shctx_t));
    if (z->sh == NULL) {
        return NGX_ERROR;
    }

    z->shpool->data = z->sh;
    ngx_memcpy(z->sh->ledger_id, id, AISERVE_HASH_LEN);

    ngx_rbtree_init(&z->sh->keys, &z->sh->keys_sentinel,
                    ngx_rbtree_insert_value);
    ngx_rbtree_init(&z->sh->rows, &z->sh->rows_sentinel,
                    ngx_http_aiserve_meter_rbtree_insert_value);
    ngx_queue_init(&z->sh->rows_queue);
    ngx_queue_init(&z->sh->resv);

    len = sizeof(" in aiserve_meter_zone \"\"") + shm_zone->shm.name.len;

    z->shpool->log_ctx = ngx_slab_alloc(z->shpool, len);
    if (z->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(z->shpool->log_ctx, " in aiserve_meter_zone \"%V\"%Z",
                &shm_zone->shm.name);

    return NGX_OK;
}


/* --- configuration -------------------------------------------------------- */

static void *
ngx_http_aiserve_meter_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_aiserve_meter_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->db_path = { 0, NULL };
     *     mcf->shm_zone = NULL;
     *     mcf->prices = NULL;
     */

    mcf->map_size = NGX_CONF_UNSET_SIZE;
    mcf->max_map_size = NGX_CONF_UNSET_SIZE;
    mcf->flush = NGX_CONF_UNSET_MSEC;

    return mcf;
}


static char *
ngx_http_aiserve_meter_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_aiserve_meter_main_conf_t  *mcf = conf;

    ngx_conf_init_size_value(mcf->map_size, 16 * 1024 * 1024);
    ngx_conf_init_size_value(mcf->max_map_size, 0);
    ngx_conf_init_msec_value(mcf->flush, 1000);

    if (mcf->currency.data == NULL) {
        ngx_str_set(&mcf->currency, "usd");
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_aiserve_meter_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_aiserve_meter_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_aiserve_meter_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    lcf->mode = NGX_CONF_UNSET_UINT;

    /*
     * set by ngx_pcalloc():
     *
     *     lcf->usage_costs = 0;
     */

    return lcf;
}


static char *
ngx_http_aiserve_meter_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_aiserve_meter_loc_conf_t  *prev = parent;
    ngx_http_aiserve_meter_loc_conf_t  *conf = child;

    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->noname && prev->usage_file) {
        /*
         * "if" and limit_except blocks of an aiserve_usage or aiserve_admin
         * location answer with its handler; one of their own (proxy_pass
         * inside "if") is refused below
         */
        conf->usage_file = prev->usage_file;
        conf->usage_line = prev->usage_line;
        conf->usage_costs = prev->usage_costs;
        conf->usage_admin = prev->usage_admin;

        if (clcf->handler == NULL) {
            clcf->handler = conf->usage_admin
                            ? ngx_http_aiserve_meter_admin_handler
                            : ngx_http_aiserve_meter_usage_handler;
        }
    }

    if (conf->usage_file
        && clcf->handler != (conf->usage_admin
                             ? ngx_http_aiserve_meter_admin_handler
                             : ngx_http_aiserve_meter_usage_handler))
    {
        /* a content handler set after aiserve_usage replaced it */
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"%s\" cannot be combined with another "
                      "content handler in location \"%V\" in %s:%ui",
                      conf->usage_admin ? "aiserve_admin" : "aiserve_usage",
                      &clcf->name, conf->usage_file, conf->usage_line);
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_uint_value(conf->mode, prev->mode,
                              NGX_HTTP_AISERVE_METER_OFF);

    if (conf->mode != NGX_HTTP_AISERVE_METER_OFF) {
        mcf = ngx_http_conf_get_module_main_conf(cf,
                                                ngx_http_aiserve_meter_module);

        if (mcf->db_path.len == 0 || mcf->shm_zone == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"aiserve_meter\" needs \"aiserve_meter_db\" "
                               "and \"aiserve_meter_zone\" in the http "
                               "block");
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/*
 * aiserve_meter_db PATH [map_size=SIZE] [max_map_size=SIZE] [flush=TIME]
 *
 * Creates the ledger (and its hmac.key) when missing and reads the HMAC
 * key into the configuration, so workers never need to read hmac.key.
 */
static char *
ngx_http_aiserve_meter_db(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_meter_main_conf_t  *mcf = conf;

    char               err[512];
    ssize_t            size;
    ngx_str_t         *value, s;
    u_char             file[NGX_MAX_PATH];
    ngx_uint_t         i, dry;
    ngx_msec_t         ms;
    ngx_file_info_t    fi;
    aiserve_ledger_t  *l;

    if (mcf->db_path.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    mcf->db_path = value[1];
    mcf->db_file = cf->conf_file->file.name.data;
    mcf->db_line = cf->conf_file->line;

    if (ngx_conf_full_name(cf->cycle, &mcf->db_path, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "map_size=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;
            size = ngx_parse_size(&s);
            if (size == NGX_ERROR || size < 32 * 1024) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid map_size \"%V\" in "
                                   "\"aiserve_meter_db\" (at least 32k)",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }
            mcf->map_size = size;
            continue;
        }

        if (ngx_strncmp(value[i].data, "max_map_size=", 13) == 0) {
            s.data = value[i].data + 13;
            s.len = value[i].len - 13;
            size = ngx_parse_size(&s);
            if (size == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid max_map_size \"%V\" in "
                                   "\"aiserve_meter_db\"", &value[i]);
                return NGX_CONF_ERROR;
            }
            mcf->max_map_size = size;
            continue;
        }

        if (ngx_strncmp(value[i].data, "flush=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;
            ms = ngx_parse_time(&s, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid flush \"%V\" in "
                                   "\"aiserve_meter_db\"", &value[i]);
                return NGX_CONF_ERROR;
            }
            mcf->flush = ms;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"aiserve_meter_db\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    dry = (ngx_test_config || ngx_process == NGX_PROCESS_SIGNALLER);

    if (dry) {
        /*
         * nginx -t and nginx -s create nothing: they validate an existing
         * ledger; whether the master could create a missing one is checked
         * by ngx_http_aiserve_meter_check_ledger()
         */
        ngx_snprintf(file, sizeof(file) - 1, "%V/data.mdb%Z", &mcf->db_path);

        if (ngx_file_info(file, &fi) == NGX_FILE_ERROR) {
            return NGX_CONF_OK;
        }
    }

    /*
     * the master creates the ledger and keeps only the HMAC key; the
     * environment is closed again before any fork(); what it makes is
     * removed again when the worker user cannot open it
     */
    if (!dry) {
        mcf->db_created = ngx_http_aiserve_meter_missing(mcf->db_path.data);
    }

    if (aiserve_ledger_open(&l, (char *) mcf->db_path.data,
                            mcf->map_size == NGX_CONF_UNSET_SIZE
                            ? 0 : mcf->map_size,
                            dry ? 0 : AISERVE_LEDGER_CREATE, err, sizeof(err))
        != AISERVE_LEDGER_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aiserve_meter_db\" \"%V\": %s", &value[1], err);
        return NGX_CONF_ERROR;
    }

    aiserve_ledger_close(l);

    if (aiserve_ledger_read_pepper((char *) mcf->db_path.data, mcf->pepper,
                                   err, sizeof(err))
        != AISERVE_LEDGER_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aiserve_meter_db\" \"%V\": %s", &value[1], err);
        return NGX_CONF_ERROR;
    }

    mcf->have_pepper = 1;

    return NGX_CONF_OK;
}


static char *
ngx_http_aiserve_meter_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_meter_main_conf_t  *mcf = conf;

    ssize_t                         size;
    ngx_str_t                      *value;
    ngx_http_aiserve_meter_zone_t  *z;

    if (mcf->shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid size \"%V\" in \"aiserve_meter_zone\" "
                           "(at least %ui)", &value[2], 8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    z = ngx_pcalloc(cf->pool, sizeof(ngx_http_aiserve_meter_zone_t));
    if (z == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->shm_zone = ngx_shared_memory_add(cf, &value[1], size,
                                          &ngx_http_aiserve_meter_module);
    if (mcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (mcf->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    z->mcf = mcf;

    mcf->shm_zone->init = ngx_http_aiserve_meter_init_zone;
    mcf->shm_zone->data = z;

    return NGX_CONF_OK;
}


/* aiserve_currency CODE: three letters (ISO 4217), kept lower case */
static char *
ngx_http_aiserve_meter_currency(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_aiserve_meter_main_conf_t  *mcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (mcf->currency.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 0; i < value[1].len; i++) {
        if (!((value[1].data[i] >= 'a' && value[1].data[i] <= 'z')
              || (value[1].data[i] >= 'A' && value[1].data[i] <= 'Z')))
        {
            break;
        }
    }

    if (value[1].len != 3 || i != 3) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid currency \"%V\" in \"aiserve_currency\" "
                           "(three letters, ISO 4217: usd, eur)", &value[1]);
        return NGX_CONF_ERROR;
    }

    ngx_strlow(value[1].data, value[1].data, 3);

    mcf->currency = value[1];
    mcf->currency_file = cf->conf_file->file.name.data;
    mcf->currency_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/*
 * The ledger keeps the currency its costs are in: a ledger without one is
 * bound to aiserve_currency (or its default) by the first start; a
 * configuration in another currency is refused, since every stored cost
 * would be read in the wrong one.  nginx -t reads, never writes.
 */
static ngx_int_t
ngx_http_aiserve_meter_check_currency(ngx_conf_t *cf,
    ngx_http_aiserve_meter_main_conf_t *mcf)
{
    char               err[256], cur[16], code[4];
    ngx_uint_t         dry;
    ngx_file_info_t    fi;
    aiserve_ledger_t  *l;

    dry = (ngx_test_config || ngx_process == NGX_PROCESS_SIGNALLER);

    ngx_snprintf((u_char *) err, sizeof(err) - 1, "%V/data.mdb%Z",
                 &mcf->db_path);

    if (dry && ngx_file_info(err, &fi) == NGX_FILE_ERROR) {
        /* nginx -t of a ledger not made yet: nothing to compare, and
         * nothing to create */
        return NGX_OK;
    }

    if (aiserve_ledger_open(&l, (char *) mcf->db_path.data, 0,
                            AISERVE_LEDGER_NO_PEPPER, err, sizeof(err))
        != AISERVE_LEDGER_OK)
    {
        if (dry) {
            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "\"aiserve_meter_db\" "
                      "\"%V\": %s", &mcf->db_path, err);
        return NGX_ERROR;
    }

    ngx_memcpy(code, mcf->currency.data, 3);
    code[3] = '\0';

    if (aiserve_ledger_currency(l, cur, sizeof(cur)) != AISERVE_LEDGER_OK
        || (cur[0] == '\0' && !dry
            && aiserve_ledger_set_currency(l, code) != AISERVE_LEDGER_OK))
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "\"aiserve_meter_db\" "
                      "\"%V\": %s", &mcf->db_path, aiserve_ledger_error(l));
        aiserve_ledger_close(l);
        return NGX_ERROR;
    }

    aiserve_ledger_close(l);

    if (cur[0] == '\0' || ngx_strcmp(cur, code) == 0) {
        return NGX_OK;
    }

    if (mcf->currency_file) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"aiserve_currency\" \"%s\" in %s:%ui disagrees "
                      "with the ledger \"%V\" of \"aiserve_meter_db\", "
                      "whose costs are in \"%s\"", code, mcf->currency_file,
                      mcf->currency_line, &mcf->db_path, cur);
    } else {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "the default \"aiserve_currency\" \"usd\" disagrees "
                      "with the ledger \"%V\" of \"aiserve_meter_db\" in "
                      "%s:%ui, whose costs are in \"%s\": set "
                      "\"aiserve_currency %s;\"", &mcf->db_path,
                      mcf->db_file, mcf->db_line, cur, cur);
    }

    return NGX_ERROR;
}


/* aiserve_price MODEL PRICE_PER_1K_TOKENS [training=PRICE_PER_1M]
 * (integer micro-units) */
static char *
ngx_http_aiserve_meter_price(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_meter_main_conf_t  *mcf = conf;

    off_t                            price, training;
    ngx_str_t                       *value;
    ngx_uint_t                       i;
    ngx_http_aiserve_meter_price_t  *p;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > AISERVE_MODEL_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid model \"%V\" in \"aiserve_price\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    price = ngx_atoof(value[2].data, value[2].len);
    if (price == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid price \"%V\" in \"aiserve_price\" "
                           "(integer micro-units per 1000 tokens)",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    training = 0;

    if (cf->args->nelts == 4) {
        if (value[3].len > 9
            && ngx_strncmp(value[3].data, "training=", 9) == 0)
        {
            training = ngx_atoof(value[3].data + 9, value[3].len - 9);
        } else {
            training = NGX_ERROR;
        }

        if (training == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in "
                               "\"aiserve_price\" (training=PRICE: integer "
                               "micro-units per 1M trained tokens)",
                               &value[3]);
            return NGX_CONF_ERROR;
        }
    }

    if (mcf->prices == NULL) {
        mcf->prices = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_http_aiserve_meter_price_t));
        if (mcf->prices == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    p = mcf->prices->elts;

    for (i = 0; i < mcf->prices->nelts; i++) {
        if (p[i].model.len == value[1].len
            && ngx_strncmp(p[i].model.data, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate model \"%V\" in \"aiserve_price\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    p = ngx_array_push(mcf->prices);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    p->model = value[1];
    p->price = (uint64_t) price;
    p->training = (uint64_t) training;
    p->file = cf->conf_file->file.name.data;
    p->line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/* Every aiserve_price names a model of an aiserve_model of the http block
 * (declared before or after it): a mistyped name would make the model
 * free. */
static ngx_int_t
ngx_http_aiserve_meter_check_prices(ngx_conf_t *cf,
    ngx_http_aiserve_meter_main_conf_t *mcf)
{
    ngx_uint_t                       i, j;
    ngx_http_aiserve_model_t       **mp;
    ngx_http_aiserve_main_conf_t    *amcf;
    ngx_http_aiserve_meter_price_t  *p;

    if (mcf->prices == NULL) {
        return NGX_OK;
    }

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_aiserve_module);

    p = mcf->prices->elts;
    mp = amcf->models.elts;

    for (i = 0; i < mcf->prices->nelts; i++) {

        for (j = 0; j < amcf->models.nelts; j++) {
            if (mp[j]->name.len == p[i].model.len
                && ngx_strncmp(mp[j]->name.data, p[i].model.data,
                               p[i].model.len) == 0)
            {
                break;
            }
        }

        if (j == amcf->models.nelts) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown model \"%V\" in \"aiserve_price\": no "
                          "\"aiserve_model %V\" in this http block in %s:%ui",
                          &p[i].model, &p[i].model, p[i].file, p[i].line);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static char *
ngx_http_aiserve_meter_usage(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_meter_loc_conf_t  *lcf = conf;

    ngx_str_t                           *value;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_aiserve_meter_module);

    if (mcf->db_path.len == 0 || mcf->shm_zone == NULL) {
        return "needs \"aiserve_meter_db\" and \"aiserve_meter_zone\" "
               "before it in the http block";
    }

    if (cf->args->nelts == 2) {
        value = cf->args->elts;

        if (cmd->offset || ngx_strcmp(value[1].data, "costs") != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in \"%V\"",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }

        lcf->usage_costs = 1;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" cannot be combined with another "
                           "content handler in location \"%V\"",
                           &cmd->name, &clcf->name);
        return NGX_CONF_ERROR;
    }

    /* cmd->offset: 0 aiserve_usage, 1 aiserve_admin */
    clcf->handler = cmd->offset ? ngx_http_aiserve_meter_admin_handler
                                : ngx_http_aiserve_meter_usage_handler;
    lcf->usage_admin = cmd->offset;
    lcf->usage_file = cf->conf_file->file.name.data;
    lcf->usage_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_aiserve_meter_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt                 *h;
    ngx_http_core_main_conf_t           *cmcf;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_aiserve_meter_module);

    if (ngx_http_aiserve_meter_check_prices(cf, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (mcf->db_path.len == 0) {
        return NGX_OK;
    }

    if (ngx_http_aiserve_meter_check_currency(cf, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_POST_READ_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_aiserve_meter_post_read_handler;

    /*
     * The log phase runs its handlers in the order they were added, and
     * the access log's was added before this module's: put the masking
     * first.
     */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    ngx_memmove((ngx_http_handler_pt *)
                    cmcf->phases[NGX_HTTP_LOG_PHASE].handlers.elts + 1,
                cmcf->phases[NGX_HTTP_LOG_PHASE].handlers.elts,
                (cmcf->phases[NGX_HTTP_LOG_PHASE].handlers.nelts - 1)
                * sizeof(ngx_http_handler_pt));

    *(ngx_http_handler_pt *) cmcf->phases[NGX_HTTP_LOG_PHASE].handlers.elts
        = ngx_http_aiserve_meter_log_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_aiserve_meter_access_handler;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_aiserve_meter_header_filter;

    return NGX_OK;
}
