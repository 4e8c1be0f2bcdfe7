/*
 * Declarations shared by the files of ngx_http_aiserve_meter_module (API
 * keys, usage ledger, quotas and rate limits), split by concern:
 *
 *   ngx_http_aiserve_meter.c        the module: directives, configuration,
 *                                   the shared zone, variables, process
 *                                   hooks, phase handlers' registration
 *   ngx_http_aiserve_meter_auth.c   authentication, refusals, masking of
 *                                   secrets in the request line and logs
 *   ngx_http_aiserve_meter_admit.c  admission (reserve) and settlement
 *   ngx_http_aiserve_meter_usage.c  the aiserve_usage handler
 *   ngx_http_aiserve_meter_admin.c  the admin API (aiserve_admin)
 *   ngx_http_aiserve_meter_flush.c  the flush of the zone into the ledger
 */
#ifndef NGX_HTTP_AISERVE_METER_H
#define NGX_HTTP_AISERVE_METER_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_aiserve_json.h"
#include "ngx_http_aiserve_metrics.h"
#include "ngx_http_aiserve.h"
#include "aiserve_ledger.h"


#define NGX_HTTP_AISERVE_METER_OFF      0
#define NGX_HTTP_AISERVE_METER_ON       1
#define NGX_HTTP_AISERVE_METER_DRY_RUN  2

/* an account's state in the zone's keys tree: its id with this bit */
#define NGX_HTTP_AISERVE_METER_ACCOUNT  ((ngx_rbtree_key_t) 1 << 32)



typedef struct {
    ngx_str_t                    model;
    uint64_t                     price;        /* micro-units per 1k */
    uint64_t                     training;     /* micro-units per 1M
                                                  trained tokens */
    u_char                      *file;         /* where it was set */
    ngx_uint_t                   line;
} ngx_http_aiserve_meter_price_t;


typedef struct {
    ngx_rbtree_node_t            node;         /* key: key id, or
                                                  account id | ACCOUNT */
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
    uint32_t                     account_id;   /* of rk.key_id */
    aiserve_usage_t              pending;      /* settled, not flushed */
    aiserve_usage_t              inflight;     /* in a flush */
} ngx_http_aiserve_meter_row_t;


typedef struct {
    ngx_queue_t                  queue;
    uint32_t                     key_id;
    ngx_rbtree_key_t             account_node; /* 0: no account limits */
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
    uint64_t                     training_gen; /* of the ledger, seen */
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
    ngx_str_t                    currency;     /* aiserve_currency */
    u_char                      *currency_file;  /* where it was set */
    ngx_uint_t                   currency_line;
    ngx_uint_t                   have_pepper;
    uint8_t                      pepper[AISERVE_PEPPER_LEN];
    u_char                      *db_file;      /* of aiserve_meter_db */
    ngx_uint_t                   db_line;
    size_t                       db_created;   /* prefix of db_path made
                                                  by this start, 0: none */
};


typedef struct {
    ngx_uint_t                   mode;
    u_char                      *usage_file;   /* of aiserve_usage */
    ngx_uint_t                   usage_line;
    ngx_uint_t                   usage_costs;  /* aiserve_usage costs */
    ngx_uint_t                   usage_admin;  /* aiserve_admin */
} ngx_http_aiserve_meter_loc_conf_t;


typedef struct {
    aiserve_key_t                key;
    aiserve_account_t            account;
    ngx_rbtree_key_t             account_node; /* reserved there too */
    ngx_str_t                    authorization;   /* before masking */
    ngx_msec_t                   admitted_ms;  /* since the start */
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


/* per worker: the ledger (LMDB env) and the HMAC context of its pepper */
extern aiserve_ledger_t    *ngx_http_aiserve_meter_ledger;
extern aiserve_key_hmac_t  *ngx_http_aiserve_meter_hmac;


/* ngx_http_aiserve_meter.c: opens ngx_http_aiserve_meter_ledger in a
 * worker, NGX_OK or NGX_ERROR (logged at level, 0: not logged) */
ngx_int_t ngx_http_aiserve_meter_open_ledger(ngx_cycle_t *cycle,
    ngx_uint_t level);

/* ngx_http_aiserve_meter.c: today's UTC day (YYYYMMDD) */
uint32_t ngx_http_aiserve_meter_today(void);

/* ngx_http_aiserve_meter.c: shared zone lookups (zone mutex held) */
ngx_http_aiserve_meter_key_t *ngx_http_aiserve_meter_key_lookup(
    ngx_http_aiserve_meter_zone_t *z, ngx_rbtree_key_t key_id);
ngx_http_aiserve_meter_row_t *ngx_http_aiserve_meter_row_lookup(
    ngx_http_aiserve_meter_zone_t *z, aiserve_row_key_t *rk,
    ngx_uint_t create);
void ngx_http_aiserve_meter_usage_add(aiserve_usage_t *to,
    const aiserve_usage_t *u);

/* ngx_http_aiserve_meter.c: aiserve_price of model (ngx_str_t), in
 * micro-units per 1k prompt tokens, or with training per 1M trained
 * tokens; 0 when it has none */
uint64_t ngx_http_aiserve_meter_price_of(
    ngx_http_aiserve_meter_main_conf_t *mcf, ngx_str_t *model,
    ngx_uint_t training);

/* ngx_http_aiserve_meter.c: the usage row of the request's key for model
 * on day: its route is the location's api= ("admin", "usage" for those
 * locations), its price the one in force */
void ngx_http_aiserve_meter_row_key(ngx_http_request_t *r, ngx_str_t *model,
    uint32_t day, aiserve_row_key_t *rk);

/* ngx_http_aiserve_meter.c: adds the response header name: value (copied
 * into the request pool); *hp, if not NULL, gets the header */
ngx_int_t ngx_http_aiserve_meter_header(ngx_http_request_t *r,
    const char *name, u_char *value, size_t len, ngx_table_elt_t **hp);

/* ngx_http_aiserve_meter.c: a JSON 405 method_not_allowed with Allow:
 * allow (a literal, "GET, HEAD"), its message "use " use; the body read
 * or discarded before */
ngx_int_t ngx_http_aiserve_meter_not_allowed(ngx_http_request_t *r,
    const char *allow, const char *use);

/* ngx_http_aiserve_meter.c: sends b (JSON) as the response with status;
 * send_json sends o (its reference is taken; NULL: 500) compactly, as
 * jansson writes it, and a newline. */
ngx_int_t ngx_http_aiserve_meter_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_buf_t *b);
ngx_int_t ngx_http_aiserve_meter_send_json(ngx_http_request_t *r,
    ngx_uint_t status, json_t *o);

/* ngx_http_aiserve_meter_auth.c */
ngx_int_t ngx_http_aiserve_meter_authenticate(ngx_http_request_t *r,
    ngx_http_aiserve_meter_ctx_t **ctxp,
    ngx_http_aiserve_meter_refusal_t *ref);
ngx_int_t ngx_http_aiserve_meter_refuse(ngx_http_request_t *r,
    ngx_http_aiserve_meter_refusal_t *ref);
ngx_int_t ngx_http_aiserve_meter_post_read_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_aiserve_meter_log_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_aiserve_meter_access_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_aiserve_meter_mask_logs(ngx_cycle_t *cycle,
    ngx_log_t *log);

/* ngx_http_aiserve_meter_usage.c */
ngx_int_t ngx_http_aiserve_meter_usage_handler(ngx_http_request_t *r);

/* ngx_http_aiserve_meter_admin.c */
ngx_int_t ngx_http_aiserve_meter_admin_handler(ngx_http_request_t *r);

/* ngx_http_aiserve_meter_flush.c */
void ngx_http_aiserve_meter_flush(ngx_cycle_t *cycle, ngx_uint_t exiting);
void ngx_http_aiserve_meter_flush_timer(ngx_event_t *ev);

#endif /* NGX_HTTP_AISERVE_METER_H */
