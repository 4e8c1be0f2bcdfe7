/*
 * ngx_http_aiserve_meter_module: API keys, usage ledger, quotas and rate
 * limits for aiserve.  Own ngx_module_t in the aiserve .so.
 *
 * Where things live:
 *   - keys and the ledger: an LMDB environment (aiserve_meter_db PATH,
 *     src/aiserve_ledger.c), opened per worker in init_process, closed in
 *     exit_process; the master only creates it and reads hmac.key.
 *   - hot state: a shared zone (aiserve_meter_zone NAME SIZE), reused
 *     across reloads like ngx_http_limit_req_module's: per key rate buckets,
 *     budget used and reserved, requests in flight, and per (key, day,
 *     model) usage not yet flushed.
 *
 * Flush protocol (exactly-once into LMDB, see flush()): with LMDB's writer
 * lock held, a worker moves each row's "pending" counters to "inflight"
 * under the zone mutex and stamps the zone with inflight_seq = S + 1,
 * where S is the ledger's committed flush_seq read in the same write
 * transaction; it adds the inflight counters to the ledger and commits
 * them together with flush_seq = S + 1 (synced).  Then it clears inflight.
 * A worker killed anywhere in between leaves inflight set: the next flusher
 * (holding the writer lock, so nobody else is mid-flush) compares
 * inflight_seq with the committed flush_seq and either drops inflight
 * (committed) or flushes it again (not committed).  Nothing settled is lost
 * or counted twice while the zone lives; the zone dies only when every
 * nginx process does, which loses at most one flush interval.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_aiserve.h"
#include "ngx_http_aiserve_infer.h"
#include "aiserve_ledger.h"


#define NGX_HTTP_AISERVE_METER_OFF      0
#define NGX_HTTP_AISERVE_METER_ON       1
#define NGX_HTTP_AISERVE_METER_DRY_RUN  2


typedef struct {
    ngx_str_t                    model;
    uint64_t                     price;        /* micro-units per 1k */
    u_char                      *file;         /* where it was set */
    ngx_uint_t                   line;
} ngx_http_aiserve_meter_price_t;


typedef struct {
    ngx_rbtree_node_t            node;         /* key: key id */
    uint32_t                     key_id;
    uint32_t                     budget_kind;  /* AISERVE_PERIOD_* */
    uint32_t                     budget_period;  /* day or yyyymm */
    uint32_t                     active;
    uint64_t                     used;         /* tokens in budget_period */
    uint64_t                     reserved;     /* tokens in flight */
    uint64_t                     req_level;    /* milli-requests */
    uint64_t                     tok_level;    /* milli-tokens */
    ngx_msec_t                   last;
} ngx_http_aiserve_meter_key_t;


typedef struct {
    ngx_rbtree_node_t            node;         /* key: hash of the row key */
    ngx_queue_t                  queue;
    aiserve_row_key_t            rk;
    aiserve_usage_t              pending;      /* settled, not flushed */
    aiserve_usage_t              inflight;     /* in a flush */
} ngx_http_aiserve_meter_row_t;


typedef struct {
    ngx_queue_t                  queue;
    uint32_t                     key_id;
    ngx_pid_t                    pid;
    uint64_t                     tokens;
} ngx_http_aiserve_meter_resv_t;


typedef struct {
    ngx_rbtree_t                 keys;
    ngx_rbtree_node_t            keys_sentinel;
    ngx_rbtree_t                 rows;
    ngx_rbtree_node_t            rows_sentinel;
    ngx_queue_t                  rows_queue;
    ngx_queue_t                  resv;
    uint64_t                     inflight_seq;
    uint64_t                     committed_seq;
    ngx_msec_t                   next_flush;
    ngx_uint_t                   full;         /* ledger map full */
    uint8_t                      ledger_id[AISERVE_HASH_LEN];
} ngx_http_aiserve_meter_shctx_t;


typedef struct ngx_http_aiserve_meter_main_conf_s
    ngx_http_aiserve_meter_main_conf_t;

typedef struct {
    ngx_http_aiserve_meter_shctx_t      *sh;
    ngx_slab_pool_t                     *shpool;
    ngx_http_aiserve_meter_main_conf_t  *mcf;
} ngx_http_aiserve_meter_zone_t;


struct ngx_http_aiserve_meter_main_conf_s {
    ngx_str_t                    db_path;
    size_t                       map_size;
    size_t                       max_map_size;
    ngx_msec_t                   flush;
    ngx_shm_zone_t              *shm_zone;
    ngx_array_t                 *prices;
    ngx_uint_t                   have_pepper;
    uint8_t                      pepper[AISERVE_PEPPER_LEN];
};


typedef struct {
    ngx_uint_t                   mode;
} ngx_http_aiserve_meter_loc_conf_t;


typedef struct {
    aiserve_key_t                key;
    ngx_uint_t                   authenticated;   /* unsigned:1 */
    ngx_uint_t                   key_in_query;
    ngx_uint_t                   dry_run_logged;  /* by the access phase */
    ngx_uint_t                   reserved;
    ngx_uint_t                   settled;
    ngx_uint_t                   tokens;
    uint32_t                     day;          /* of the reservation */
    ngx_str_t                    model;
    uint64_t                     cost_nano;
    ngx_uint_t                   has_cost;
    ngx_http_aiserve_meter_resv_t  *resv;
    ngx_table_elt_t             *retry_after;
} ngx_http_aiserve_meter_ctx_t;


/* why a request is refused */
typedef struct {
    ngx_uint_t                   status;
    const char                  *type;
    const char                  *code;
    const char                  *msg;
    ngx_uint_t                   retry_after;
} ngx_http_aiserve_meter_refusal_t;


static ngx_int_t ngx_http_aiserve_meter_authenticate(ngx_http_request_t *r,
    ngx_http_aiserve_meter_ctx_t **ctxp,
    ngx_http_aiserve_meter_refusal_t *ref);
static ngx_int_t ngx_http_aiserve_meter_refuse(ngx_http_request_t *r,
    ngx_http_aiserve_meter_refusal_t *ref);
static ngx_int_t ngx_http_aiserve_meter_access_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_aiserve_meter_usage_handler(ngx_http_request_t *r);
static void ngx_http_aiserve_meter_cleanup(void *data);
static void ngx_http_aiserve_meter_flush(ngx_cycle_t *cycle,
    ngx_uint_t exiting);
static void ngx_http_aiserve_meter_flush_timer(ngx_event_t *ev);
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
static char *ngx_http_aiserve_meter_price(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_aiserve_meter_usage(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_aiserve_meter_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_aiserve_meter_mask_logs(ngx_cycle_t *cycle,
    ngx_log_t *log);
static void ngx_http_aiserve_meter_log_writer(ngx_log_t *log,
    ngx_uint_t level, u_char *buf, size_t len);
static ngx_uint_t ngx_http_aiserve_meter_mask_key(ngx_str_t *s);
static ngx_uint_t ngx_http_aiserve_meter_mask_request(ngx_http_request_t *r);
static ngx_int_t ngx_http_aiserve_meter_post_read_handler(
    ngx_http_request_t *r);
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
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_aiserve_meter_price,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_usage"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_aiserve_meter_usage,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
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


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

/* per worker: the ledger (LMDB env) and the flush timer */
static aiserve_ledger_t    *ngx_http_aiserve_meter_ledger;
static aiserve_key_hmac_t  *ngx_http_aiserve_meter_hmac;
static ngx_event_t        ngx_http_aiserve_meter_flush_event;
static ngx_connection_t   ngx_http_aiserve_meter_dummy;


/* --- time and periods ----------------------------------------------------- */

static uint32_t
ngx_http_aiserve_meter_today(void)
{
    return aiserve_day(ngx_time());
}


/* period id of a budget kind for a day: the day, or yyyymm */
static uint32_t
ngx_http_aiserve_meter_period(uint32_t kind, uint32_t day)
{
    return kind == AISERVE_PERIOD_DAY ? day : day / 100;
}


/* seconds until the current UTC day or month ends */
static ngx_uint_t
ngx_http_aiserve_meter_period_left(uint32_t kind)
{
    time_t     now, end;
    struct tm  tm;

    now = ngx_time();
    ngx_libc_gmtime(now, &tm);

    tm.tm_hour = 0;
    tm.tm_min = 0;
    tm.tm_sec = 0;

    if (kind == AISERVE_PERIOD_DAY) {
        tm.tm_mday++;
    } else {
        tm.tm_mday = 1;
        tm.tm_mon++;
    }

    end = timegm(&tm);

    return end > now ? (ngx_uint_t) (end - now) : 1;
}


/* --- shared zone lookups (zone mutex held) -------------------------------- */

static ngx_http_aiserve_meter_key_t *
ngx_http_aiserve_meter_key_lookup(ngx_http_aiserve_meter_zone_t *z,
    uint32_t key_id)
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


/* Rows are ordered by (crc32, key id, day, model). */
static ngx_int_t
ngx_http_aiserve_meter_row_cmp(uint32_t hash, const aiserve_row_key_t *rk,
    ngx_http_aiserve_meter_row_t *row)
{
    if (hash != row->node.key) {
        return hash < row->node.key ? -1 : 1;
    }

    if (rk->key_id != row->rk.key_id) {
        return rk->key_id < row->rk.key_id ? -1 : 1;
    }

    if (rk->day != row->rk.day) {
        return rk->day < row->rk.day ? -1 : 1;
    }

    return ngx_strcmp(rk->model, row->rk.model);
}


static uint32_t
ngx_http_aiserve_meter_row_hash(const aiserve_row_key_t *rk)
{
    uint32_t  hash;

    ngx_crc32_init(hash);
    ngx_crc32_update(&hash, (u_char *) &rk->key_id, sizeof(uint32_t));
    ngx_crc32_update(&hash, (u_char *) &rk->day, sizeof(uint32_t));
    ngx_crc32_update(&hash, (u_char *) rk->model, ngx_strlen(rk->model));
    ngx_crc32_final(hash);

    return hash;
}


static ngx_http_aiserve_meter_row_t *
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


static void
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
}


static ngx_uint_t
ngx_http_aiserve_meter_usage_zero(const aiserve_usage_t *u)
{
    return u->requests == 0 && u->errors == 0 && u->bytes_in == 0
           && u->bytes_out == 0 && u->compute_usec == 0;
}


/*
 * Tokens of key_id in days [from, to] that are in the zone but not in a
 * ledger snapshot taken at flush_seq seq.
 */
static uint64_t
ngx_http_aiserve_meter_unflushed_tokens(ngx_http_aiserve_meter_zone_t *z,
    uint32_t key_id, uint32_t from, uint32_t to, uint64_t seq)
{
    uint64_t                       sum;
    ngx_queue_t                   *q;
    ngx_http_aiserve_meter_row_t  *row;

    sum = 0;

    for (q = ngx_queue_head(&z->sh->rows_queue);
         q != ngx_queue_sentinel(&z->sh->rows_queue);
         q = ngx_queue_next(q))
    {
        row = ngx_queue_data(q, ngx_http_aiserve_meter_row_t, queue);

        if (row->rk.key_id != key_id || row->rk.day < from
            || row->rk.day > to)
        {
            continue;
        }

        sum += row->pending.prompt_tokens;

        if (z->sh->inflight_seq > seq) {
            sum += row->inflight.prompt_tokens;
        }
    }

    return sum;
}


/*
 * The key's state in the zone, created or re-based when its budget period
 * changed: used = ledger tokens of the period + unflushed ones.  Called and
 * returns with the zone mutex held; drops it to read the ledger.
 */
static ngx_http_aiserve_meter_key_t *
ngx_http_aiserve_meter_key_state(ngx_http_request_t *r,
    ngx_http_aiserve_meter_zone_t *z, aiserve_key_t *k, uint32_t today)
{
    uint32_t                       kind, period, from, to;
    uint64_t                       s1, s2, tokens;
    ngx_uint_t                     tries;
    ngx_http_aiserve_meter_key_t  *st;

    kind = k->budget_tokens ? k->budget_period : AISERVE_PERIOD_NONE;
    period = ngx_http_aiserve_meter_period(kind, today);

    st = ngx_http_aiserve_meter_key_lookup(z, k->id);

    if (st && st->budget_kind == kind && st->budget_period == period) {
        return st;
    }

    if (kind == AISERVE_PERIOD_DAY) {
        from = today;
        to = today;

    } else {
        aiserve_month_range(today, &from, &to);
    }

    for (tries = 0; tries < 5; tries++) {

        tokens = 0;
        s1 = 0;

        if (kind != AISERVE_PERIOD_NONE) {
            ngx_shmtx_unlock(&z->shpool->mutex);

            if (aiserve_ledger_flush_seq(ngx_http_aiserve_meter_ledger, &s1)
                != AISERVE_LEDGER_OK
                || aiserve_ledger_tokens_used(ngx_http_aiserve_meter_ledger,
                                              k->id, from, to, &tokens)
                   != AISERVE_LEDGER_OK
                || aiserve_ledger_flush_seq(ngx_http_aiserve_meter_ledger, &s2)
                   != AISERVE_LEDGER_OK)
            {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "aiserve meter: %s",
                              aiserve_ledger_error(
                                  ngx_http_aiserve_meter_ledger));
                ngx_shmtx_lock(&z->shpool->mutex);
                return NULL;
            }

            ngx_shmtx_lock(&z->shpool->mutex);

            if (s1 != s2 || z->sh->committed_seq > s1) {
                /* a flush committed meanwhile: read again */
                continue;
            }
        }

        st = ngx_http_aiserve_meter_key_lookup(z, k->id);

        if (st == NULL) {
            st = ngx_slab_calloc_locked(z->shpool,
                                        sizeof(ngx_http_aiserve_meter_key_t));
            if (st == NULL) {
                ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                              "aiserve meter: zone is full");
                return NULL;
            }

            st->node.key = k->id;
            st->key_id = k->id;
            st->last = ngx_current_msec;
            ngx_rbtree_insert(&z->sh->keys, &st->node);
        }

        st->budget_kind = kind;
        st->budget_period = period;
        st->used = (kind == AISERVE_PERIOD_NONE) ? 0
                   : tokens + ngx_http_aiserve_meter_unflushed_tokens(
                                  z, k->id, from, to, s1);

        return st;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "aiserve meter: ledger busy, cannot read key_%uD budget",
                  k->id);

    return NULL;
}


/* --- rate buckets: "level" leaks at limit per minute, in milli-units ------ */

/* A level is at most limit x 1000 milli-units (more only just after the
 * limit was lowered), drained in a minute: after a minute the bucket is
 * empty, so limit * ms stays in 64 bits for limits up to
 * AISERVE_KEY_LIMIT_MAX however long the key was idle. */
static uint64_t
ngx_http_aiserve_meter_leak(uint64_t level, uint64_t limit, ngx_msec_t ms)
{
    uint64_t  leaked;

    if (ms >= 60000) {
        return 0;
    }

    leaked = limit * ms / 60;        /* milli-units per ms = limit / 60 */

    return level > leaked ? level - leaked : 0;
}


/* ms until level drops to at most target (milli-units) */
static ngx_msec_t
ngx_http_aiserve_meter_wait(uint64_t level, uint64_t target, uint64_t limit)
{
    if (level <= target || limit == 0) {
        return 0;
    }

    return (ngx_msec_t) (((level - target) * 60 + limit - 1) / limit);
}


static u_char *
ngx_http_aiserve_meter_duration(u_char *p, ngx_msec_t ms)
{
    if (ms < 1000) {
        return ngx_sprintf(p, "%Mms", ms);
    }

    ms = (ms + 999) / 1000;

    if (ms < 60) {
        return ngx_sprintf(p, "%Ms", ms);
    }

    return ngx_sprintf(p, "%Mm%Ms", ms / 60, ms % 60);
}


static ngx_int_t
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


typedef struct {
    uint64_t    rpm, req_remaining;
    ngx_msec_t  req_reset;
    uint64_t    tpm, tok_remaining;
    ngx_msec_t  tok_reset;
    uint64_t    budget, budget_remaining;
    ngx_uint_t  budget_reset;
} ngx_http_aiserve_meter_limits_t;


/*
 * x-ratelimit-* as OpenAI sends them, and the IETF RateLimit /
 * RateLimit-Policy fields (draft-ietf-httpapi-ratelimit-headers: a list of
 * named policies with q = quota, w = window seconds; r = remaining, t =
 * seconds to reset).
 */
static ngx_int_t
ngx_http_aiserve_meter_limit_headers(ngx_http_request_t *r,
    ngx_http_aiserve_meter_limits_t *lim)
{
    u_char   buf[256], *p, pol[256], *q;

    p = buf;
    q = pol;

    if (lim->rpm) {
        if (ngx_http_aiserve_meter_header(r, "x-ratelimit-limit-requests",
                buf, ngx_sprintf(buf, "%uL", lim->rpm) - buf, NULL)
            != NGX_OK
            || ngx_http_aiserve_meter_header(r,
                   "x-ratelimit-remaining-requests", buf,
                   ngx_sprintf(buf, "%uL", lim->req_remaining) - buf, NULL)
               != NGX_OK
            || ngx_http_aiserve_meter_header(r, "x-ratelimit-reset-requests",
                   buf, ngx_http_aiserve_meter_duration(buf, lim->req_reset)
                        - buf, NULL)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (lim->tpm) {
        if (ngx_http_aiserve_meter_header(r, "x-ratelimit-limit-tokens",
                buf, ngx_sprintf(buf, "%uL", lim->tpm) - buf, NULL)
            != NGX_OK
            || ngx_http_aiserve_meter_header(r,
                   "x-ratelimit-remaining-tokens", buf,
                   ngx_sprintf(buf, "%uL", lim->tok_remaining) - buf, NULL)
               != NGX_OK
            || ngx_http_aiserve_meter_header(r, "x-ratelimit-reset-tokens",
                   buf, ngx_http_aiserve_meter_duration(buf, lim->tok_reset)
                        - buf, NULL)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (lim->rpm) {
        q = ngx_sprintf(q, "\"requests\";q=%uL;w=60", lim->rpm);
        p = ngx_sprintf(p, "\"requests\";r=%uL;t=%M", lim->req_remaining,
                        (lim->req_reset + 999) / 1000);
    }

    if (lim->tpm) {
        q = ngx_sprintf(q, "%s\"tokens\";q=%uL;w=60", q == pol ? "" : ", ",
                        lim->tpm);
        p = ngx_sprintf(p, "%s\"tokens\";r=%uL;t=%M", p == buf ? "" : ", ",
                        lim->tok_remaining, (lim->tok_reset + 999) / 1000);
    }

    if (lim->budget) {
        q = ngx_sprintf(q, "%s\"budget\";q=%uL", q == pol ? "" : ", ",
                        lim->budget);
        p = ngx_sprintf(p, "%s\"budget\";r=%uL;t=%ui", p == buf ? "" : ", ",
                        lim->budget_remaining, lim->budget_reset);
    }

    if (q != pol) {
        if (ngx_http_aiserve_meter_header(r, "RateLimit-Policy", pol,
                                          q - pol, NULL) != NGX_OK
            || ngx_http_aiserve_meter_header(r, "RateLimit", buf, p - buf,
                                             NULL) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* --- admission and settlement --------------------------------------------- */

ngx_int_t
ngx_http_aiserve_meter_reserve(ngx_http_request_t *r, ngx_str_t *model,
    ngx_uint_t prompt_tokens)
{
    uint32_t                             today;
    uint64_t                             need, req_level, tok_level;
    ngx_msec_t                           now, elapsed;
    ngx_pool_cleanup_t                  *cln;
    aiserve_key_t                       *k;
    aiserve_row_key_t                    rk;
    ngx_http_aiserve_meter_key_t        *st;
    ngx_http_aiserve_meter_ctx_t        *ctx;
    ngx_http_aiserve_meter_zone_t       *z;
    ngx_http_aiserve_meter_resv_t       *resv;
    ngx_http_aiserve_meter_limits_t      lim;
    ngx_http_aiserve_meter_refusal_t     ref;
    ngx_http_aiserve_meter_loc_conf_t   *lcf;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_meter_module);

    if (lcf->mode == NGX_HTTP_AISERVE_METER_OFF) {
        return NGX_OK;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_meter_module);
    z = mcf->shm_zone->data;

    ngx_memzero(&ref, sizeof(ref));

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (ctx == NULL || !ctx->authenticated) {
        if (ngx_http_aiserve_meter_authenticate(r, &ctx, &ref) != NGX_OK) {
            if (lcf->mode == NGX_HTTP_AISERVE_METER_DRY_RUN && ref.status) {
                if (!ctx->dry_run_logged) {
                    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                                  "aiserve meter: dry run, would refuse "
                                  "with %ui %s", ref.status, ref.code);
                }
                return NGX_OK;
            }
            if (ref.status == 0
                || ngx_http_aiserve_meter_refuse(r, &ref) == NGX_ERROR)
            {
                return NGX_ERROR;
            }
            return NGX_DECLINED;
        }
    }

    if (ctx->reserved) {
        return NGX_OK;
    }

    k = &ctx->key;

    if (model->len > AISERVE_MODEL_MAX) {
        return NGX_ERROR;
    }

    ctx->model.data = ngx_pstrdup(r->pool, model);
    if (ctx->model.data == NULL) {
        return NGX_ERROR;
    }
    ctx->model.len = model->len;

    if (!aiserve_key_model_allowed(k, (char *) model->data, model->len)) {

        if (lcf->mode == NGX_HTTP_AISERVE_METER_ON) {
            ref.status = NGX_HTTP_FORBIDDEN;
            ref.type = "invalid_request_error";
            ref.code = "model_not_allowed";
            ref.msg = "this API key may not use this model";
            goto refused;
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "aiserve meter: dry run, key_%uD would get 403 "
                      "model_not_allowed", k->id);
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    today = ngx_http_aiserve_meter_today();
    need = prompt_tokens;
    now = ngx_current_msec;

    ngx_memzero(&lim, sizeof(lim));

    ngx_shmtx_lock(&z->shpool->mutex);

    if (z->sh->full && lcf->mode == NGX_HTTP_AISERVE_METER_ON) {
        ngx_shmtx_unlock(&z->shpool->mutex);
        ref.status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ref.type = "server_error";
        ref.code = "ledger_full";
        ref.msg = "the usage ledger is full, retry later";
        ref.retry_after = 1;
        goto refused;
    }

    st = ngx_http_aiserve_meter_key_state(r, z, k, today);
    if (st == NULL) {
        ngx_shmtx_unlock(&z->shpool->mutex);
        ref.status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ref.type = "server_error";
        ref.code = "meter_unavailable";
        ref.msg = "usage metering is unavailable, retry later";
        ref.retry_after = 1;
        goto refused;
    }

    elapsed = now - st->last;
    if ((ngx_msec_int_t) elapsed < 0) {
        elapsed = 0;
    }

    req_level = ngx_http_aiserve_meter_leak(st->req_level, k->rpm, elapsed);
    tok_level = ngx_http_aiserve_meter_leak(st->tok_level, k->tpm, elapsed);

    lim.rpm = k->rpm;
    lim.tpm = k->tpm;
    lim.budget = k->budget_tokens;

    if (k->budget_tokens
        && st->used + st->reserved + need > k->budget_tokens)
    {
        ref.status = NGX_HTTP_TOO_MANY_REQUESTS;
        ref.type = "insufficient_quota";
        ref.code = "insufficient_quota";
        ref.msg = "the token budget of this API key is exhausted";
        ref.retry_after = ngx_http_aiserve_meter_period_left(k->budget_period);

    } else if (k->max_concurrent && st->active >= k->max_concurrent) {
        ref.status = NGX_HTTP_TOO_MANY_REQUESTS;
        ref.type = "requests";
        ref.code = "rate_limit_exceeded";
        ref.msg = "too many concurrent requests for this API key";
        ref.retry_after = 1;

    } else if (k->rpm && req_level + 1000 > k->rpm * 1000) {
        ref.status = NGX_HTTP_TOO_MANY_REQUESTS;
        ref.type = "requests";
        ref.code = "rate_limit_exceeded";
        ref.msg = "rate limit reached for requests per minute";
        ref.retry_after = (ngx_http_aiserve_meter_wait(req_level,
                               k->rpm * 1000 - 1000, k->rpm) + 999) / 1000;

    } else if (k->tpm && tok_level + need * 1000 > k->tpm * 1000) {
        ref.status = NGX_HTTP_TOO_MANY_REQUESTS;
        ref.type = "tokens";
        ref.code = "rate_limit_exceeded";
        ref.msg = need > k->tpm
                  ? "request has more tokens than the tokens-per-minute "
                    "limit of this API key"
                  : "rate limit reached for tokens per minute";
        ref.retry_after = need > k->tpm ? 60
                          : (ngx_http_aiserve_meter_wait(tok_level,
                                 (k->tpm - need) * 1000, k->tpm) + 999)
                            / 1000;
    }

    if (ref.status && lcf->mode == NGX_HTTP_AISERVE_METER_DRY_RUN) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "aiserve meter: dry run, key_%uD would get %ui %s",
                      k->id, ref.status, ref.code);
        ref.status = 0;
    }

    if (ref.status == 0) {
        /* the usage row is made now, so that settling never needs memory
         * the zone may not have: a full zone refuses, it does not lose */
        ngx_memzero(&rk, sizeof(aiserve_row_key_t));
        rk.key_id = k->id;
        rk.day = today;
        ngx_memcpy(rk.model, model->data, model->len);

        resv = NULL;

        if (ngx_http_aiserve_meter_row_lookup(z, &rk, 1) != NULL) {
            resv = ngx_slab_alloc_locked(z->shpool,
                                       sizeof(ngx_http_aiserve_meter_resv_t));
        }

        if (resv == NULL) {
            ngx_shmtx_unlock(&z->shpool->mutex);
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "aiserve meter: zone is full");
            ref.status = NGX_HTTP_SERVICE_UNAVAILABLE;
            ref.type = "server_error";
            ref.code = "meter_unavailable";
            ref.msg = "usage metering is unavailable, retry later";
            ref.retry_after = 1;
            goto refused;
        }

        resv->key_id = k->id;
        resv->pid = ngx_pid;
        resv->tokens = need;
        ngx_queue_insert_tail(&z->sh->resv, &resv->queue);

        req_level += 1000;
        tok_level += need * 1000;
        st->reserved += need;
        st->active++;

        ctx->resv = resv;
        ctx->reserved = 1;
        ctx->tokens = need;
        ctx->day = today;
    }

    st->req_level = req_level;
    st->tok_level = tok_level;
    st->last = now;

    if (k->rpm) {
        lim.req_remaining = req_level >= k->rpm * 1000
                            ? 0 : (k->rpm * 1000 - req_level) / 1000;
        lim.req_reset = ngx_http_aiserve_meter_wait(req_level, 0, k->rpm);
    }

    if (k->tpm) {
        lim.tok_remaining = tok_level >= k->tpm * 1000
                            ? 0 : (k->tpm * 1000 - tok_level) / 1000;
        lim.tok_reset = ngx_http_aiserve_meter_wait(tok_level, 0, k->tpm);
    }

    if (k->budget_tokens) {
        lim.budget_remaining = st->used + st->reserved >= k->budget_tokens
                               ? 0
                               : k->budget_tokens - st->used - st->reserved;
        lim.budget_reset = ngx_http_aiserve_meter_period_left(
                               k->budget_period);
    }

    ngx_shmtx_unlock(&z->shpool->mutex);

    if (ngx_http_aiserve_meter_limit_headers(r, &lim) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ref.status) {
        goto refused;
    }

    cln->handler = ngx_http_aiserve_meter_cleanup;
    cln->data = r;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "aiserve meter: key_%uD reserved %ui tokens for \"%V\"",
                   k->id, prompt_tokens, model);

    return NGX_OK;

refused:

    if (lcf->mode == NGX_HTTP_AISERVE_METER_DRY_RUN) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "aiserve meter: dry run, key_%uD would get %ui %s",
                      k->id, ref.status, ref.code);
        return NGX_OK;
    }

    return ngx_http_aiserve_meter_refuse(r, &ref) == NGX_ERROR
           ? NGX_ERROR : NGX_DECLINED;
}


static uint64_t
ngx_http_aiserve_meter_price_of(ngx_http_aiserve_meter_main_conf_t *mcf,
    ngx_str_t *model)
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
            return p[i].price;
        }
    }

    return 0;
}


/* Releases the reservation and adds the request to its usage row. */
static void
ngx_http_aiserve_meter_account(ngx_http_request_t *r,
    ngx_http_aiserve_meter_ctx_t *ctx, aiserve_usage_t *u)
{
    uint32_t                             today;
    aiserve_row_key_t                    rk;
    ngx_http_aiserve_meter_row_t        *row;
    ngx_http_aiserve_meter_key_t        *st;
    ngx_http_aiserve_meter_zone_t       *z;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_meter_module);
    z = mcf->shm_zone->data;

    today = ngx_http_aiserve_meter_today();

    ngx_memzero(&rk, sizeof(rk));
    rk.key_id = ctx->key.id;
    rk.day = today;
    ngx_memcpy(rk.model, ctx->model.data, ctx->model.len);

    ngx_shmtx_lock(&z->shpool->mutex);

    st = ngx_http_aiserve_meter_key_lookup(z, ctx->key.id);

    if (st) {
        st->reserved -= ngx_min(st->reserved, ctx->tokens);
        if (st->active) {
            st->active--;
        }

        if (st->budget_kind != AISERVE_PERIOD_NONE
            && st->budget_period
               == ngx_http_aiserve_meter_period(st->budget_kind, today))
        {
            st->used += u->prompt_tokens;
        }
    }

    if (ctx->resv) {
        ngx_queue_remove(&ctx->resv->queue);
        ngx_slab_free_locked(z->shpool, ctx->resv);
        ctx->resv = NULL;
    }

    row = ngx_http_aiserve_meter_row_lookup(z, &rk, 1);

    if (row == NULL && ctx->day != today) {
        /* past midnight with a full zone: the row made at admission */
        rk.day = ctx->day;
        row = ngx_http_aiserve_meter_row_lookup(z, &rk, 0);
    }

    if (row) {
        ngx_http_aiserve_meter_usage_add(&row->pending, u);
    }

    ngx_shmtx_unlock(&z->shpool->mutex);

    if (row == NULL) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "aiserve meter: zone is full, usage of key_%uD "
                      "not recorded", ctx->key.id);
    }
}


void
ngx_http_aiserve_meter_settle(ngx_http_request_t *r,
    ngx_msec_int_t compute_usec, off_t bytes_in, off_t bytes_out,
    ngx_uint_t failed)
{
    aiserve_usage_t                      u;
    ngx_http_aiserve_meter_ctx_t        *ctx;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (ctx == NULL || !ctx->reserved || ctx->settled) {
        return;
    }

    ctx->settled = 1;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_meter_module);

    ngx_memzero(&u, sizeof(u));
    u.requests = 1;
    u.compute_usec = compute_usec > 0 ? (uint64_t) compute_usec : 0;
    u.bytes_in = bytes_in > 0 ? (uint64_t) bytes_in : 0;
    u.bytes_out = bytes_out > 0 ? (uint64_t) bytes_out : 0;

    if (failed) {
        /* a failed request is counted, not charged */
        u.errors = 1;

    } else {
        u.prompt_tokens = ctx->tokens;
        u.cost_nano = (uint64_t) ctx->tokens
                      * ngx_http_aiserve_meter_price_of(mcf, &ctx->model);
    }

    ctx->cost_nano = u.cost_nano;
    ctx->has_cost = 1;

    ngx_http_aiserve_meter_account(r, ctx, &u);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "aiserve meter: key_%uD settled %uL tokens, %uL usec, "
                   "failed %ui", ctx->key.id, u.prompt_tokens,
                   u.compute_usec, failed);
}


/* The request ends without settle (client gone, handler error): release
 * the reservation, count an error, charge nothing. */
static void
ngx_http_aiserve_meter_cleanup(void *data)
{
    ngx_http_request_t  *r = data;

    aiserve_usage_t                u;
    ngx_http_aiserve_meter_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (ctx == NULL || !ctx->reserved || ctx->settled) {
        return;
    }

    ctx->settled = 1;

    ngx_memzero(&u, sizeof(u));
    u.requests = 1;
    u.errors = 1;

    ngx_http_aiserve_meter_account(r, ctx, &u);
}


/* --- authentication ------------------------------------------------------- */

/* Overwrites the secret part of every key in s with '*', percent-encoded
 * or glued to other characters too (aiserve_key_mask); 1 if any. */
static ngx_uint_t
ngx_http_aiserve_meter_mask_key(ngx_str_t *s)
{
    return aiserve_key_mask((char *) s->data, s->len) != 0;
}


/* 1 if the request line held a key, now masked.  HTTP/1.x: the request
 * line, args and unparsed uri share one buffer, and so does the uri unless
 * it had to be decoded; HTTP/2 builds the request line apart: mask each. */
static ngx_uint_t
ngx_http_aiserve_meter_mask_request(ngx_http_request_t *r)
{
    return ngx_http_aiserve_meter_mask_key(&r->request_line)
           | ngx_http_aiserve_meter_mask_key(&r->unparsed_uri)
           | ngx_http_aiserve_meter_mask_key(&r->uri)
           | ngx_http_aiserve_meter_mask_key(&r->args);
}


/*
 * Post-read phase, every request of an http block with a ledger, metered
 * location or not: a key in the request line is masked before anything
 * (access log, error log, $request_uri, $args) can show it.  The access
 * phase of a metered location then refuses the request.
 */
static ngx_int_t
ngx_http_aiserve_meter_post_read_handler(ngx_http_request_t *r)
{
    ngx_http_aiserve_meter_ctx_t  *ctx;

    if (!ngx_http_aiserve_meter_mask_request(r)) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);
    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_aiserve_meter_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        ngx_http_set_ctx(r, ctx, ngx_http_aiserve_meter_module);
    }

    ctx->key_in_query = 1;

    return NGX_DECLINED;
}


/*
 * Bearer token from Authorization (RFC 6750 2.1; scheme case-insensitive).
 * Refuses keys in the query string (RFC 6750 2.3 is not offered) and masks
 * them in the request line, so the access log and error log never hold
 * one.
 */
static ngx_int_t
ngx_http_aiserve_meter_authenticate(ngx_http_request_t *r,
    ngx_http_aiserve_meter_ctx_t **ctxp,
    ngx_http_aiserve_meter_refusal_t *ref)
{
    u_char                              *p, *last;
    ngx_int_t                            rc;
    ngx_str_t                            token;
    uint8_t                              hash[AISERVE_HASH_LEN];
    ngx_http_aiserve_meter_ctx_t        *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);
    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_aiserve_meter_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }
        ngx_http_set_ctx(r, ctx, ngx_http_aiserve_meter_module);
    }

    *ctxp = ctx;

    if (ctx->authenticated) {
        return NGX_OK;
    }

    if (ctx->key_in_query || ngx_http_aiserve_meter_mask_request(r)) {
        ctx->key_in_query = 1;
        ref->status = NGX_HTTP_BAD_REQUEST;
        ref->type = "invalid_request_error";
        ref->code = "api_key_in_query";
        ref->msg = "API keys are not accepted in the query string; send "
                   "\"Authorization: Bearer KEY\" (the key is exposed, "
                   "revoke it)";
        return NGX_DECLINED;
    }

    ref->status = NGX_HTTP_UNAUTHORIZED;
    ref->type = "invalid_request_error";

    if (r->headers_in.authorization == NULL) {
        ref->code = "missing_api_key";
        ref->msg = "no API key: send \"Authorization: Bearer KEY\"";
        return NGX_DECLINED;
    }

    p = r->headers_in.authorization->value.data;
    last = p + r->headers_in.authorization->value.len;

    if (last - p < 7 || ngx_strncasecmp(p, (u_char *) "Bearer ", 7) != 0) {
        ref->code = "invalid_api_key";
        ref->msg = "the Authorization scheme must be Bearer";
        return NGX_DECLINED;
    }

    for (p += 7; p < last && *p == ' '; p++) { /* void */ }
    while (last > p && last[-1] == ' ') {
        last--;
    }

    token.data = p;
    token.len = last - p;

    if (!aiserve_key_shaped((char *) token.data, token.len)) {
        ref->code = "invalid_api_key";
        ref->msg = "invalid API key";
        return NGX_DECLINED;
    }

    if (aiserve_key_hmac(ngx_http_aiserve_meter_hmac, (char *) token.data,
                         token.len, hash)
        != 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "aiserve meter: HMAC failed");
        return NGX_ERROR;
    }

    rc = aiserve_ledger_key_lookup(ngx_http_aiserve_meter_ledger, hash,
                                   &ctx->key);

    if (rc == AISERVE_LEDGER_NOTFOUND) {
        ref->code = "invalid_api_key";
        ref->msg = "invalid API key";
        return NGX_DECLINED;
    }

    if (rc != AISERVE_LEDGER_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "aiserve meter: %s",
                      aiserve_ledger_error(ngx_http_aiserve_meter_ledger));
        ref->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ref->type = "server_error";
        ref->code = "meter_unavailable";
        ref->msg = "usage metering is unavailable, retry later";
        ref->retry_after = 1;
        return NGX_DECLINED;
    }

    if (ctx->key.status == AISERVE_KEY_REVOKED) {
        ref->code = "invalid_api_key";
        ref->msg = "this API key has been revoked";
        return NGX_DECLINED;
    }

    if (ctx->key.expires && ctx->key.expires <= ngx_time()) {
        ref->code = "invalid_api_key";
        ref->msg = "this API key has expired";
        return NGX_DECLINED;
    }

    if (ctx->key.status == AISERVE_KEY_BLOCKED) {
        ref->status = NGX_HTTP_FORBIDDEN;
        ref->type = "permission_error";
        ref->code = "api_key_blocked";
        ref->msg = "this API key is blocked";
        return NGX_DECLINED;
    }

    ctx->authenticated = 1;
    ref->status = 0;

    return NGX_OK;
}


/* Sends the refusal as a JSON error; returns what send_error returns. */
static ngx_int_t
ngx_http_aiserve_meter_refuse(ngx_http_request_t *r,
    ngx_http_aiserve_meter_refusal_t *ref)
{
    u_char                         buf[NGX_INT_T_LEN];
    ngx_http_aiserve_meter_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (ref->status == NGX_HTTP_UNAUTHORIZED) {
        if (ngx_http_aiserve_meter_header(r, "WWW-Authenticate",
                (u_char *) (ref->code && ngx_strcmp(ref->code,
                                                    "missing_api_key") == 0
                            ? "Bearer realm=\"aiserve\""
                            : "Bearer realm=\"aiserve\", "
                              "error=\"invalid_token\""),
                ngx_strlen(ref->code && ngx_strcmp(ref->code,
                                                   "missing_api_key") == 0
                           ? "Bearer realm=\"aiserve\""
                           : "Bearer realm=\"aiserve\", "
                             "error=\"invalid_token\""), NULL)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ref->retry_after && ctx) {
        if (ngx_http_aiserve_meter_header(r, "Retry-After", buf,
                ngx_sprintf(buf, "%ui", ref->retry_after) - buf,
                &ctx->retry_after)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ctx && ctx->authenticated) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "aiserve meter: %ui %s for key_%uD (%s...)",
                      ref->status, ref->code, ctx->key.id, ctx->key.prefix);

    } else {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "aiserve meter: %ui %s", ref->status, ref->code);
    }

    return ngx_http_aiserve_send_error(r, ref->status, ref->type, ref->code,
                                       NULL, "%s", ref->msg);
}


/* Access phase: authentication before the body is read. */
static ngx_int_t
ngx_http_aiserve_meter_access_handler(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_http_aiserve_meter_ctx_t       *ctx;
    ngx_http_aiserve_meter_refusal_t    ref;
    ngx_http_aiserve_meter_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_meter_module);

    if (lcf->mode == NGX_HTTP_AISERVE_METER_OFF) {
        return NGX_DECLINED;
    }

    ngx_memzero(&ref, sizeof(ref));

    if (ngx_http_aiserve_meter_authenticate(r, &ctx, &ref) == NGX_OK) {
        return NGX_DECLINED;
    }

    if (ref.status == 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (lcf->mode == NGX_HTTP_AISERVE_METER_DRY_RUN) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "aiserve meter: dry run, would refuse with %ui %s",
                      ref.status, ref.code);
        ctx->dry_run_logged = 1;
        return NGX_DECLINED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_aiserve_meter_refuse(r, &ref);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
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


/* --- aiserve_usage: the caller's usage as JSON ---------------------------- */

typedef struct {
    ngx_array_t        rows;       /* of ngx_http_aiserve_meter_out_t */
    uint32_t           key_id;     /* 0: all */
} ngx_http_aiserve_meter_usage_ctx_t;


typedef struct {
    aiserve_row_key_t  rk;
    aiserve_usage_t    u;
} ngx_http_aiserve_meter_out_t;


static ngx_http_aiserve_meter_out_t *
ngx_http_aiserve_meter_out_row(ngx_array_t *rows, const aiserve_row_key_t *rk)
{
    ngx_uint_t                     i;
    ngx_http_aiserve_meter_out_t  *o;

    o = rows->elts;

    for (i = 0; i < rows->nelts; i++) {
        if (o[i].rk.key_id == rk->key_id && o[i].rk.day == rk->day
            && ngx_strcmp(o[i].rk.model, rk->model) == 0)
        {
            return &o[i];
        }
    }

    o = ngx_array_push(rows);
    if (o == NULL) {
        return NULL;
    }

    ngx_memzero(o, sizeof(ngx_http_aiserve_meter_out_t));
    o->rk = *rk;

    return o;
}


static int
ngx_http_aiserve_meter_usage_row(const aiserve_row_key_t *rk,
    const aiserve_usage_t *u, void *arg)
{
    ngx_array_t                   *rows = arg;
    ngx_http_aiserve_meter_out_t  *o;

    o = ngx_http_aiserve_meter_out_row(rows, rk);
    if (o == NULL) {
        return 1;
    }

    ngx_http_aiserve_meter_usage_add(&o->u, u);

    return 0;
}


static ngx_int_t
ngx_http_aiserve_meter_usage_handler(ngx_http_request_t *r)
{
    size_t                               size;
    u_char                              *p;
    uint32_t                             key_id, today, from, to;
    uint64_t                             s1, s2;
    ngx_int_t                            rc;
    ngx_uint_t                           i, tries;
    ngx_buf_t                           *b;
    ngx_array_t                          rows;
    ngx_chain_t                          out;
    ngx_queue_t                         *q;
    ngx_http_aiserve_meter_ctx_t        *ctx;
    ngx_http_aiserve_meter_out_t        *o;
    ngx_http_aiserve_meter_row_t        *row;
    ngx_http_aiserve_meter_zone_t       *z;
    ngx_http_aiserve_meter_refusal_t     ref;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_meter_module);
    z = mcf->shm_zone->data;

    ngx_memzero(&ref, sizeof(ref));

    if (ngx_http_aiserve_meter_authenticate(r, &ctx, &ref) != NGX_OK) {
        return ref.status ? ngx_http_aiserve_meter_refuse(r, &ref)
                          : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    key_id = (ctx->key.flags & AISERVE_KEY_ADMIN) ? 0 : ctx->key.id;

    today = ngx_http_aiserve_meter_today();
    aiserve_month_range(today, &from, &to);

    for (tries = 0; tries < 5; tries++) {

        if (ngx_array_init(&rows, r->pool, 16,
                           sizeof(ngx_http_aiserve_meter_out_t))
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (aiserve_ledger_flush_seq(ngx_http_aiserve_meter_ledger, &s1)
            != AISERVE_LEDGER_OK
            || aiserve_ledger_usage_each(ngx_http_aiserve_meter_ledger,
                                         key_id, from, to,
                                         ngx_http_aiserve_meter_usage_row,
                                         &rows) != AISERVE_LEDGER_OK
            || aiserve_ledger_flush_seq(ngx_http_aiserve_meter_ledger, &s2)
               != AISERVE_LEDGER_OK)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "aiserve meter: %s",
                          aiserve_ledger_error(ngx_http_aiserve_meter_ledger));
            return NGX_HTTP_SERVICE_UNAVAILABLE;
        }

        if (s1 != s2) {
            continue;
        }

        ngx_shmtx_lock(&z->shpool->mutex);

        if (z->sh->committed_seq > s1) {
            ngx_shmtx_unlock(&z->shpool->mutex);
            continue;
        }

        for (q = ngx_queue_head(&z->sh->rows_queue);
             q != ngx_queue_sentinel(&z->sh->rows_queue);
             q = ngx_queue_next(q))
        {
            row = ngx_queue_data(q, ngx_http_aiserve_meter_row_t, queue);

            if ((key_id && row->rk.key_id != key_id)
                || row->rk.day < from || row->rk.day > to)
            {
                continue;
            }

            o = ngx_http_aiserve_meter_out_row(&rows, &row->rk);
            if (o == NULL) {
                break;
            }

            ngx_http_aiserve_meter_usage_add(&o->u, &row->pending);

            if (z->sh->inflight_seq > s1) {
                ngx_http_aiserve_meter_usage_add(&o->u, &row->inflight);
            }
        }

        ngx_shmtx_unlock(&z->shpool->mutex);
        break;
    }

    if (tries == 5) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    size = sizeof("{\"object\":\"list\",\"key_id\":\"key_\",\"data\":[]}\n")
           + NGX_INT_T_LEN
           + rows.nelts * (256 + AISERVE_MODEL_MAX * 6 + 8 * NGX_INT64_LEN);

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(b->last, "{\"object\":\"list\",\"key_id\":\"key_%uD\","
                    "\"admin\":%s,\"data\":[", ctx->key.id,
                    key_id ? "false" : "true");

    o = rows.elts;

    for (i = 0; i < rows.nelts; i++) {
        p = ngx_sprintf(p, "%s{\"key_id\":\"key_%uD\",\"model\":\"",
                        i ? "," : "", o[i].rk.key_id);
        p = (u_char *) ngx_escape_json(p, (u_char *) o[i].rk.model,
                                       ngx_strlen(o[i].rk.model));
        p = ngx_sprintf(p, "\",\"day\":\"%04uD-%02uD-%02uD\","
                        "\"requests\":%uL,\"prompt_tokens\":%uL,"
                        "\"compute_usec\":%uL,\"bytes_in\":%uL,"
                        "\"bytes_out\":%uL,\"errors\":%uL,"
                        "\"cost_micro\":%uL}",
                        o[i].rk.day / 10000, o[i].rk.day / 100 % 100,
                        o[i].rk.day % 100, o[i].u.requests,
                        o[i].u.prompt_tokens, o[i].u.compute_usec,
                        o[i].u.bytes_in, o[i].u.bytes_out, o[i].u.errors,
                        aiserve_cost_micro(o[i].u.cost_nano));
    }

    p = ngx_sprintf(p, "]}\n");
    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
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


/* --- flush ---------------------------------------------------------------- */

typedef struct {
    aiserve_row_key_t  rk;
    aiserve_usage_t    u;
} ngx_http_aiserve_meter_flush_row_t;


/* Releases reservations of processes that died (SIGKILL, crash). */
static void
ngx_http_aiserve_meter_reap(ngx_cycle_t *cycle,
    ngx_http_aiserve_meter_zone_t *z)
{
    ngx_queue_t                    *q, *next;
    ngx_http_aiserve_meter_key_t   *st;
    ngx_http_aiserve_meter_resv_t  *resv;

    for (q = ngx_queue_head(&z->sh->resv);
         q != ngx_queue_sentinel(&z->sh->resv);
         q = next)
    {
        next = ngx_queue_next(q);
        resv = ngx_queue_data(q, ngx_http_aiserve_meter_resv_t, queue);

        if (resv->pid == ngx_pid
            || kill(resv->pid, 0) == 0 || ngx_errno != NGX_ESRCH)
        {
            continue;
        }

        st = ngx_http_aiserve_meter_key_lookup(z, resv->key_id);
        if (st) {
            st->reserved -= ngx_min(st->reserved, resv->tokens);
            if (st->active) {
                st->active--;
            }
        }

        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "aiserve meter: released a reservation of key_%uD "
                      "held by dead process %P", resv->key_id, resv->pid);

        ngx_queue_remove(q);
        ngx_slab_free_locked(z->shpool, resv);
    }
}


/*
 * Flushes the zone's settled usage to the ledger (see the protocol at the
 * top of this file).  exiting: the worker is going away; flush whatever
 * the interval, and grow the map past max_map_size if it must: the cap
 * exists to refuse new work, not to drop settled usage when the last
 * process holding the zone exits.
 */
static void
ngx_http_aiserve_meter_flush(ngx_cycle_t *cycle, ngx_uint_t exiting)
{
    int                                  rc;
    uint32_t                             today;
    uint64_t                             seq;
    ngx_uint_t                           n, i, grown;
    ngx_queue_t                         *q, *next;
    ngx_http_aiserve_meter_row_t        *row;
    ngx_http_aiserve_meter_zone_t       *z;
    ngx_http_aiserve_meter_flush_row_t  *rows;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_aiserve_meter_module);
    if (mcf == NULL || mcf->shm_zone == NULL
        || ngx_http_aiserve_meter_ledger == NULL)
    {
        return;
    }

    z = mcf->shm_zone->data;

    ngx_shmtx_lock(&z->shpool->mutex);

    if (!exiting
        && (ngx_msec_int_t) (ngx_current_msec - z->sh->next_flush) < 0)
    {
        ngx_shmtx_unlock(&z->shpool->mutex);
        return;
    }

    z->sh->next_flush = ngx_current_msec + mcf->flush;

    ngx_http_aiserve_meter_reap(cycle, z);

    ngx_shmtx_unlock(&z->shpool->mutex);

    aiserve_ledger_reader_check(ngx_http_aiserve_meter_ledger);

    grown = 0;

again:

    rc = aiserve_ledger_wbegin(ngx_http_aiserve_meter_ledger, &seq);
    if (rc != AISERVE_LEDGER_OK) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0, "aiserve meter: %s",
                      aiserve_ledger_error(ngx_http_aiserve_meter_ledger));
        return;
    }

    /* the writer lock is ours: nobody else is between snapshot and commit */

    ngx_shmtx_lock(&z->shpool->mutex);

    if (z->sh->inflight_seq && z->sh->inflight_seq <= seq) {
        /* a flusher committed and died (or is late) before clearing */
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "aiserve meter: flush %uL was committed but not "
                      "cleared (its worker was killed or is late): "
                      "dropping its copy", z->sh->inflight_seq);

        for (q = ngx_queue_head(&z->sh->rows_queue);
             q != ngx_queue_sentinel(&z->sh->rows_queue);
             q = ngx_queue_next(q))
        {
            row = ngx_queue_data(q, ngx_http_aiserve_meter_row_t, queue);
            ngx_memzero(&row->inflight, sizeof(aiserve_usage_t));
        }

        z->sh->committed_seq = z->sh->inflight_seq;
        z->sh->inflight_seq = 0;

    } else if (z->sh->inflight_seq) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "aiserve meter: flush %uL did not commit (its worker "
                      "was killed, or the ledger refused it): writing it "
                      "again", z->sh->inflight_seq);
    }

    n = 0;

    for (q = ngx_queue_head(&z->sh->rows_queue);
         q != ngx_queue_sentinel(&z->sh->rows_queue);
         q = ngx_queue_next(q))
    {
        n++;
    }

    rows = n ? ngx_alloc(n * sizeof(ngx_http_aiserve_meter_flush_row_t),
                         cycle->log)
             : NULL;

    if (n && rows == NULL) {
        ngx_shmtx_unlock(&z->shpool->mutex);
        aiserve_ledger_wabort(ngx_http_aiserve_meter_ledger);
        return;
    }

    i = 0;

    for (q = ngx_queue_head(&z->sh->rows_queue);
         q != ngx_queue_sentinel(&z->sh->rows_queue);
         q = ngx_queue_next(q))
    {
        row = ngx_queue_data(q, ngx_http_aiserve_meter_row_t, queue);

        ngx_http_aiserve_meter_usage_add(&row->inflight, &row->pending);
        ngx_memzero(&row->pending, sizeof(aiserve_usage_t));

        if (!ngx_http_aiserve_meter_usage_zero(&row->inflight)) {
            rows[i].rk = row->rk;
            rows[i].u = row->inflight;
            i++;
        }
    }

    n = i;

    if (n) {
        z->sh->inflight_seq = seq + 1;
    }

    ngx_shmtx_unlock(&z->shpool->mutex);

    if (n == 0) {
        aiserve_ledger_wabort(ngx_http_aiserve_meter_ledger);
        ngx_free(rows);
        return;
    }

    rc = AISERVE_LEDGER_OK;

    for (i = 0; i < n && rc == AISERVE_LEDGER_OK; i++) {
        rc = aiserve_ledger_wadd(ngx_http_aiserve_meter_ledger, &rows[i].rk,
                                 &rows[i].u);
    }

    ngx_free(rows);

    if (rc == AISERVE_LEDGER_OK) {
        rc = aiserve_ledger_wcommit(ngx_http_aiserve_meter_ledger, seq + 1);
    }

    if (rc == AISERVE_LEDGER_FULL && grown < 8) {
        /* the transaction is aborted, inflight stays for the next try */
        grown++;

        if (aiserve_ledger_grow(ngx_http_aiserve_meter_ledger,
                                exiting ? 0 : mcf->max_map_size)
            == AISERVE_LEDGER_OK)
        {
            size_t  map, used;

            aiserve_ledger_map_info(ngx_http_aiserve_meter_ledger, &map,
                                    &used);
            ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                          "aiserve meter: ledger map grown to %uz bytes",
                          map);
            goto again;
        }
    }

    if (rc != AISERVE_LEDGER_OK) {
        ngx_log_error((rc == AISERVE_LEDGER_FULL ? NGX_LOG_CRIT
                                                 : NGX_LOG_ERR),
                      cycle->log, 0, "aiserve meter: flush failed, usage "
                      "kept in the zone: %s",
                      aiserve_ledger_error(ngx_http_aiserve_meter_ledger));

        if (rc == AISERVE_LEDGER_FULL) {
            ngx_shmtx_lock(&z->shpool->mutex);
            z->sh->full = 1;
            ngx_shmtx_unlock(&z->shpool->mutex);
        }

        return;
    }

    today = ngx_http_aiserve_meter_today();

    ngx_shmtx_lock(&z->shpool->mutex);

    z->sh->full = 0;

    if (z->sh->inflight_seq == seq + 1) {
        z->sh->committed_seq = seq + 1;
        z->sh->inflight_seq = 0;

        for (q = ngx_queue_head(&z->sh->rows_queue);
             q != ngx_queue_sentinel(&z->sh->rows_queue);
             q = next)
        {
            next = ngx_queue_next(q);
            row = ngx_queue_data(q, ngx_http_aiserve_meter_row_t, queue);

            ngx_memzero(&row->inflight, sizeof(aiserve_usage_t));

            if (row->rk.day != today
                && ngx_http_aiserve_meter_usage_zero(&row->pending))
            {
                ngx_queue_remove(q);
                ngx_rbtree_delete(&z->sh->rows, &row->node);
                ngx_slab_free_locked(z->shpool, row);
            }
        }
    }

    ngx_shmtx_unlock(&z->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                   "aiserve meter: flushed %ui rows, seq %uL", n, seq + 1);
}


static void
ngx_http_aiserve_meter_flush_timer(ngx_event_t *ev)
{
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    ngx_http_aiserve_meter_flush((ngx_cycle_t *) ngx_cycle, 0);

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                              ngx_http_aiserve_meter_module);

    ngx_add_timer(ev, mcf->flush);
}


/* --- process hooks ------------------------------------------------------- */

static ngx_int_t
ngx_http_aiserve_meter_init_process(ngx_cycle_t *cycle)
{
    char                                 err[512];
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
    if (aiserve_ledger_open(&ngx_http_aiserve_meter_ledger,
                            (char *) mcf->db_path.data, mcf->map_size,
                            AISERVE_LEDGER_NO_PEPPER, err, sizeof(err))
        != AISERVE_LEDGER_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "aiserve meter: %s", err);
        return NGX_ERROR;
    }

    aiserve_ledger_reader_check(ngx_http_aiserve_meter_ledger);

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


static void
ngx_http_aiserve_meter_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_aiserve_meter_ledger == NULL) {
        return;
    }

    ngx_http_aiserve_meter_flush(cycle, 1);

    aiserve_ledger_close(ngx_http_aiserve_meter_ledger);
    ngx_http_aiserve_meter_ledger = NULL;

    aiserve_key_hmac_free(ngx_http_aiserve_meter_hmac);
    ngx_http_aiserve_meter_hmac = NULL;
}


/*
 * API keys never reach the error log: nginx itself logs every request
 * header at debug level ("http header: ..."), before any phase handler
 * runs.  Every error log of the cycle gets a writer that overwrites the
 * secret part of anything shaped like a key with '*' (the typed prefix and
 * 4 characters stay, as in "aiserve-keys list") and then writes as nginx
 * would: to the file, or through the writer it had (syslog, memory).
 * Logs set with error_log inside a location are not covered.
 */

typedef struct {
    ngx_log_writer_pt   writer;
    void               *wdata;
    ngx_log_t          *log;
} ngx_http_aiserve_meter_log_wrap_t;


/* The cycle's pool is going: give the log its writer back before the
 * module is unloaded (nginx logs while it frees the pool). */
static void
ngx_http_aiserve_meter_log_restore(void *data)
{
    ngx_http_aiserve_meter_log_wrap_t  *wrap = data;

    if (wrap->log->writer == ngx_http_aiserve_meter_log_writer
        && wrap->log->wdata == wrap)
    {
        wrap->log->writer = wrap->writer;
        wrap->log->wdata = wrap->wdata;
    }
}


static void
ngx_http_aiserve_meter_log_writer(ngx_log_t *log, ngx_uint_t level,
    u_char *buf, size_t len)
{
    ngx_str_t                           line;
    ngx_log_t                           orig;
    ngx_http_aiserve_meter_log_wrap_t  *wrap;

    line.data = buf;
    line.len = len;

    (void) ngx_http_aiserve_meter_mask_key(&line);

    wrap = log->wdata;

    if (wrap->writer) {
        orig = *log;
        orig.writer = wrap->writer;
        orig.wdata = wrap->wdata;
        orig.next = NULL;
        wrap->writer(&orig, level, buf, len);
        return;
    }

    (void) ngx_write_fd(log->file->fd, buf, len);
}


static ngx_int_t
ngx_http_aiserve_meter_mask_logs(ngx_cycle_t *cycle, ngx_log_t *log)
{
    ngx_pool_cleanup_t                 *cln;
    ngx_http_aiserve_meter_log_wrap_t  *wrap;

    for ( /* void */ ; log; log = log->next) {

        if (log->writer == ngx_http_aiserve_meter_log_writer) {
            continue;
        }

        cln = ngx_pool_cleanup_add(cycle->pool,
                                   sizeof(ngx_http_aiserve_meter_log_wrap_t));
        if (cln == NULL) {
            return NGX_ERROR;
        }

        wrap = cln->data;
        wrap->writer = log->writer;
        wrap->wdata = log->wdata;
        wrap->log = log;

        cln->handler = ngx_http_aiserve_meter_log_restore;

        log->writer = ngx_http_aiserve_meter_log_writer;
        log->wdata = wrap;
    }

    return NGX_OK;
}


/* Master, after the configuration is read: the ledger's files belong to
 * the worker user (like nginx's temp paths). */
static ngx_int_t
ngx_http_aiserve_meter_init_module(ngx_cycle_t *cycle)
{
    u_char                               file[NGX_MAX_PATH];
    ngx_uint_t                           i;
    ngx_core_conf_t                     *ccf;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_core_srv_conf_t           **cscf;
    ngx_http_core_main_conf_t           *cmcf;
    ngx_http_aiserve_meter_main_conf_t  *mcf;
    static const char                   *names[] = {
        "", "/data.mdb", "/lock.mdb"
    };

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

    if (geteuid() != 0) {
        return NGX_OK;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    if (ccf->user == (ngx_uid_t) NGX_CONF_UNSET_UINT) {
        return NGX_OK;
    }

    for (i = 0; i < 3; i++) {
        ngx_snprintf(file, sizeof(file) - 1, "%V%s%Z", &mcf->db_path,
                     names[i]);

        if (chown((char *) file, ccf->user, ccf->group) == -1) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "chown(\"%s\", %d) failed", file, ccf->user);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
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

    return lcf;
}


static char *
ngx_http_aiserve_meter_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_aiserve_meter_loc_conf_t  *prev = parent;
    ngx_http_aiserve_meter_loc_conf_t  *conf = child;

    ngx_http_aiserve_meter_main_conf_t  *mcf;

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
    ngx_uint_t         i;
    ngx_msec_t         ms;
    aiserve_ledger_t  *l;

    if (mcf->db_path.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    mcf->db_path = value[1];

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

    /* the master creates the ledger and keeps only the HMAC key; the
     * environment is closed again before any fork() */
    if (aiserve_ledger_open(&l, (char *) mcf->db_path.data,
                            mcf->map_size == NGX_CONF_UNSET_SIZE
                            ? 0 : mcf->map_size,
                            AISERVE_LEDGER_CREATE, err, sizeof(err))
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


/* aiserve_price MODEL PRICE_PER_1K_TOKENS (integer micro-units) */
static char *
ngx_http_aiserve_meter_price(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_meter_main_conf_t  *mcf = conf;

    off_t                            price;
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
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_aiserve_meter_module);

    if (mcf->db_path.len == 0 || mcf->shm_zone == NULL) {
        return "needs \"aiserve_meter_db\" and \"aiserve_meter_zone\" "
               "before it in the http block";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aiserve_usage\" cannot be combined with "
                           "another content handler in this location");
        return NGX_CONF_ERROR;
    }

    clcf->handler = ngx_http_aiserve_meter_usage_handler;

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

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_POST_READ_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_aiserve_meter_post_read_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_aiserve_meter_access_handler;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_aiserve_meter_header_filter;

    return NGX_OK;
}
