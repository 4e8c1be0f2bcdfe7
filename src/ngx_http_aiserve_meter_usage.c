/*
 * ngx_http_aiserve_meter_module: aiserve_usage, usage read over HTTP:
 * ledger rows and the zone's unflushed usage, consistent with each other
 * (read between two equal flush sequence numbers).
 *
 *   without a query string: the caller's rows of the current UTC month
 *   (the first format, kept as it was);
 *   with one: buckets shaped like OpenAI's organization usage and costs
 *   API (GET /v1/organization/usage/embeddings, /v1/organization/costs):
 *   {"object": "page", "data": [{"object": "bucket", "start_time",
 *   "end_time", "results": [...]}], "has_more": false, "next_page": null}.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_aiserve_meter.h"


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
            && o[i].rk.price == rk->price
            && ngx_strcmp(o[i].rk.api, rk->api) == 0
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


/*
 * Collects the usage rows of days [from, to] of the keys ids[0..nids)
 * (nids 0: every key) from the ledger and the zone into rows (of
 * ngx_http_aiserve_meter_out_t).  NGX_OK, or an HTTP status.
 */
static ngx_int_t
ngx_http_aiserve_meter_collect(ngx_http_request_t *r, uint32_t *ids,
    ngx_uint_t nids, uint32_t from, uint32_t to, ngx_array_t *rows)
{
    uint64_t                             s1, s2;
    ngx_uint_t                           i, j, tries;
    ngx_queue_t                         *q;
    ngx_http_aiserve_meter_out_t        *o;
    ngx_http_aiserve_meter_row_t        *row;
    ngx_http_aiserve_meter_zone_t       *z;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_meter_module);
    z = mcf->shm_zone->data;

    for (tries = 0; tries < 5; tries++) {

        if (ngx_array_init(rows, r->pool, 16,
                           sizeof(ngx_http_aiserve_meter_out_t))
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (aiserve_ledger_flush_seq(ngx_http_aiserve_meter_ledger, &s1)
            != AISERVE_LEDGER_OK)
        {
            goto failed;
        }

        for (i = 0; i < (nids ? nids : 1); i++) {
            if (aiserve_ledger_usage_each(ngx_http_aiserve_meter_ledger,
                                          nids ? ids[i] : 0, from, to,
                                          ngx_http_aiserve_meter_usage_row,
                                          rows) != AISERVE_LEDGER_OK)
            {
                goto failed;
            }
        }

        if (aiserve_ledger_flush_seq(ngx_http_aiserve_meter_ledger, &s2)
            != AISERVE_LEDGER_OK)
        {
            goto failed;
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

            for (j = 0; j < nids && ids[j] != row->rk.key_id; j++) {
                /* void */
            }

            if ((nids && j == nids)
                || row->rk.day < from || row->rk.day > to)
            {
                continue;
            }

            o = ngx_http_aiserve_meter_out_row(rows, &row->rk);
            if (o == NULL) {
                break;
            }

            ngx_http_aiserve_meter_usage_add(&o->u, &row->pending);

            if (z->sh->inflight_seq > s1) {
                ngx_http_aiserve_meter_usage_add(&o->u, &row->inflight);
            }
        }

        ngx_shmtx_unlock(&z->shpool->mutex);

        return NGX_OK;
    }

    return NGX_HTTP_SERVICE_UNAVAILABLE;

failed:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "aiserve meter: %s",
                  aiserve_ledger_error(ngx_http_aiserve_meter_ledger));

    return NGX_HTTP_SERVICE_UNAVAILABLE;
}


/* The first format: the caller's rows of the current month. */
static ngx_int_t
ngx_http_aiserve_meter_usage_month(ngx_http_request_t *r,
    ngx_http_aiserve_meter_ctx_t *ctx)
{
    size_t                          size;
    u_char                         *p;
    uint32_t                        key_id, today, from, to;
    ngx_int_t                       rc;
    ngx_uint_t                      i;
    ngx_buf_t                      *b;
    ngx_array_t                     rows;
    ngx_http_aiserve_meter_out_t   *o;

    key_id = (ctx->key.flags & AISERVE_KEY_ADMIN) ? 0 : ctx->key.id;

    today = ngx_http_aiserve_meter_today();
    aiserve_month_range(today, &from, &to);

    rc = ngx_http_aiserve_meter_collect(r, &key_id, key_id ? 1 : 0, from, to,
                                        &rows);
    if (rc != NGX_OK) {
        return rc;
    }

    size = sizeof("{\"object\":\"list\",\"key_id\":\"key_\",\"data\":[]}\n")
           + NGX_INT_T_LEN
           + rows.nelts * (320 + AISERVE_MODEL_MAX * 6 + AISERVE_API_MAX
                           + 10 * NGX_INT64_LEN);

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
        p = ngx_sprintf(p, "\",\"api\":");
        p = o[i].rk.api[0]
            ? ngx_sprintf(p, "\"%s\"", o[i].rk.api)
            : ngx_sprintf(p, "null");
        p = ngx_sprintf(p, ",\"price_micro\":");
        p = o[i].rk.price == AISERVE_PRICE_UNKNOWN
            ? ngx_sprintf(p, "null")
            : ngx_sprintf(p, "%uL", o[i].rk.price);
        p = ngx_sprintf(p, ",\"day\":\"%04uD-%02uD-%02uD\","
                        "\"requests\":%uL,\"prompt_tokens\":%uL,"
                        "\"trained_tokens\":%uL,\"storage_bytes\":%uL,"
                        "\"compute_usec\":%uL,\"bytes_in\":%uL,"
                        "\"bytes_out\":%uL,\"errors\":%uL,"
                        "\"cost_micro\":%uL}",
                        o[i].rk.day / 10000, o[i].rk.day / 100 % 100,
                        o[i].rk.day % 100, o[i].u.requests,
                        o[i].u.prompt_tokens, o[i].u.trained_tokens,
                        o[i].u.storage_bytes, o[i].u.compute_usec,
                        o[i].u.bytes_in, o[i].u.bytes_out, o[i].u.errors,
                        aiserve_cost_micro(o[i].u.cost_nano));
    }

    p = ngx_sprintf(p, "]}\n");
    b->last = p;

    return ngx_http_aiserve_meter_send(r, NGX_HTTP_OK, b);
}


/* --- the OpenAI-shaped view ----------------------------------------------- */

#define NGX_HTTP_AISERVE_USAGE_BY_MODEL    0x01
#define NGX_HTTP_AISERVE_USAGE_BY_KEY      0x02
#define NGX_HTTP_AISERVE_USAGE_BY_ACCOUNT  0x04
#define NGX_HTTP_AISERVE_USAGE_BY_API      0x08

#define NGX_HTTP_AISERVE_USAGE_DAYS_MAX    3660
/* buckets a page, as OpenAI's usage API: 7 by default, at most 31 */
#define NGX_HTTP_AISERVE_USAGE_LIMIT       7
#define NGX_HTTP_AISERVE_USAGE_LIMIT_MAX   31


typedef struct {
    uint32_t   key_id;
    uint32_t   account_id;
} ngx_http_aiserve_usage_owner_t;


typedef struct {
    ngx_array_t   owners;          /* of ngx_http_aiserve_usage_owner_t */
    uint32_t      account_id;      /* 0: every account */
} ngx_http_aiserve_usage_keys_t;


typedef struct {
    const char        *model;      /* NULL: not grouped by model */
    const char        *api;        /* NULL: not grouped by api */
    uint32_t           key_id;     /* 0: not grouped by key */
    uint32_t           account_id; /* 0: not grouped by account */
    aiserve_usage_t    u;
} ngx_http_aiserve_usage_result_t;


static int
ngx_http_aiserve_usage_key_cb(const aiserve_key_t *k, void *arg)
{
    ngx_http_aiserve_usage_keys_t   *ks = arg;
    ngx_http_aiserve_usage_owner_t  *o;

    if (ks->account_id && k->account_id != ks->account_id) {
        return 0;
    }

    o = ngx_array_push(&ks->owners);
    if (o == NULL) {
        return 1;
    }

    o->key_id = k->id;
    o->account_id = k->account_id;

    return 0;
}


/* unix seconds, or YYYY-MM-DD (00:00 UTC, aiserve_parse_date); -1 if
 * neither */
static time_t
ngx_http_aiserve_usage_time(ngx_str_t *v)
{
    int64_t    t;
    ngx_int_t  n;

    if (v->len == 10 && v->data[4] == '-') {
        return aiserve_parse_date((char *) v->data, v->len, &t) == 0
               ? (time_t) t : -1;
    }

    n = ngx_atoi(v->data, v->len);
    if (n == NGX_ERROR || n > 253402300799LL) {
        return -1;
    }

    return (time_t) n;
}


/* The first second of the UTC day (width 0) or month (width 1) of t, and
 * of the next one. */
static time_t
ngx_http_aiserve_usage_floor(time_t t, ngx_uint_t month, time_t *next)
{
    struct tm  tm;

    ngx_libc_gmtime(t, &tm);

    tm.tm_hour = 0;
    tm.tm_min = 0;
    tm.tm_sec = 0;

    if (month) {
        tm.tm_mday = 1;
    }

    t = timegm(&tm);

    if (month) {
        tm.tm_mon++;
    } else {
        tm.tm_mday++;
    }

    *next = timegm(&tm);

    return t;
}


static ngx_int_t
ngx_http_aiserve_usage_bad(ngx_http_request_t *r, const char *code,
    const char *param, const char *msg)
{
    return ngx_http_aiserve_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request_error", code, param,
                                       "%s", msg);
}


static json_t *
ngx_http_aiserve_usage_result(ngx_http_aiserve_usage_result_t *res,
    ngx_uint_t costs, ngx_str_t *currency)
{
    char     id[32];
    json_t  *o;
    uint64_t micro;

    micro = aiserve_cost_micro(res->u.cost_nano);

    if (costs) {
        o = json_pack("{s:s, s:{s:f, s:I, s:s%}, s:n}",
                      "object", "organization.costs.result",
                      "amount", "value", (double) micro / 1e6,
                      "value_micro", (json_int_t) micro,
                      "currency", currency->data, currency->len,
                      "project_id");
        if (o && res->model) {
            json_object_set_new(o, "line_item", json_string(res->model));
        } else if (o) {
            json_object_set_new(o, "line_item", json_null());
        }

    } else {
        o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:n, s:n}",
                      "object", "organization.usage.embeddings.result",
                      "input_tokens", (json_int_t) res->u.prompt_tokens,
                      "trained_tokens", (json_int_t) res->u.trained_tokens,
                      "storage_bytes", (json_int_t) res->u.storage_bytes,
                      "num_model_requests", (json_int_t) res->u.requests,
                      "errors", (json_int_t) res->u.errors,
                      "compute_usec", (json_int_t) res->u.compute_usec,
                      "project_id", "user_id");
        if (o) {
            json_object_set_new(o, "model", res->model
                                ? json_string(res->model) : json_null());
            json_object_set_new(o, "refused",
                json_pack("{s:I, s:I, s:I}",
                          "401", (json_int_t) res->u.refused_401,
                          "403", (json_int_t) res->u.refused_403,
                          "429", (json_int_t) res->u.refused_429));
        }
    }

    if (o == NULL) {
        return NULL;
    }

    if (res->api) {
        json_object_set_new(o, "api", res->api[0] ? json_string(res->api)
                                                  : json_null());
    }

    if (res->key_id) {
        ngx_sprintf((u_char *) id, "key_%uD%Z", res->key_id);
        json_object_set_new(o, "api_key_id", json_string(id));
    } else {
        json_object_set_new(o, "api_key_id", json_null());
    }

    if (res->account_id) {
        ngx_sprintf((u_char *) id, "acct_%uD%Z", res->account_id);
        json_object_set_new(o, "account_id", json_string(id));
    }

    return o;
}


/*
 * GET ...?start_time=&end_time=&bucket_width=&group_by=: the usage (or,
 * with costs, the cost) of the caller's account, or of every account for
 * an admin key (account_id= narrows it), in buckets of a UTC day or
 * month.  Times are unix seconds or YYYY-MM-DD, end_time exclusive
 * (default now); a bucket is a whole UTC day or month (the ledger's rows
 * are per day).  Any other parameter is a 400.
 */
static ngx_int_t
ngx_http_aiserve_meter_usage_buckets(ngx_http_request_t *r,
    ngx_http_aiserve_meter_ctx_t *ctx, ngx_uint_t costs)
{
    u_char                              *p, *last, *name, *eq, *amp;
    char                                *s;
    size_t                               len;
    time_t                               start, end, t, next, page, more;
    uint32_t                             from, to, day, *ids, acct;
    ngx_int_t                            rc, limit;
    ngx_str_t                            n, v;
    ngx_uint_t                           month, group, i, j, nb, admin;
    ngx_uint_t                           seen, once;
    ngx_array_t                          rows, *res;
    char                                 cursor[32];
    json_t                              *out, *data, *bucket, *results;
    ngx_http_aiserve_meter_out_t        *o;
    ngx_http_aiserve_usage_keys_t        ks;
    ngx_http_aiserve_usage_owner_t      *ow;
    ngx_http_aiserve_usage_result_t     *rs;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_meter_module);

    start = -1;
    end = ngx_time();
    page = -1;
    limit = NGX_HTTP_AISERVE_USAGE_LIMIT;
    month = 0;
    group = 0;
    acct = 0;
    admin = (ctx->key.flags & AISERVE_KEY_ADMIN) != 0;
    seen = 0;

    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        amp = ngx_strlchr(p, last, '&');
        if (amp == NULL) {
            amp = last;
        }

        name = p;
        eq = ngx_strlchr(p, amp, '=');
        p = amp + 1;

        if (eq == NULL) {
            return ngx_http_aiserve_usage_bad(r, "invalid_parameter", NULL,
                       "query parameters are name=value pairs");
        }

        n.data = name;
        n.len = eq - name;

        v.data = ngx_pnalloc(r->pool, amp - eq);
        if (v.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        s = (char *) v.data;
        eq++;
        ngx_unescape_uri(&v.data, &eq, amp - eq, NGX_UNESCAPE_URI);
        v.len = v.data - (u_char *) s;
        v.data = (u_char *) s;

#define ARG_IS(x)  (n.len == sizeof(x) - 1                                    \
                    && ngx_strncmp(n.data, x, sizeof(x) - 1) == 0)
#define VAL_IS(x)  (v.len == sizeof(x) - 1                                    \
                    && ngx_strncmp(v.data, x, sizeof(x) - 1) == 0)

        /* a parameter of one value given twice is ambiguous */
        once = (ARG_IS("start_time") || ARG_IS("start_date")) ? 1
               : (ARG_IS("end_time") || ARG_IS("end_date")) ? 2
               : ARG_IS("bucket_width") ? 4 : ARG_IS("limit") ? 8
               : ARG_IS("page") ? 16 : ARG_IS("account_id") ? 32 : 0;

        if (seen & once) {
            return ngx_http_aiserve_send_error(r, NGX_HTTP_BAD_REQUEST,
                       "invalid_request_error", "invalid_parameter", NULL,
                       "\"%V\" given twice (only group_by may repeat)", &n);
        }

        seen |= once;

        if (ARG_IS("start_time") || ARG_IS("start_date")) {
            start = ngx_http_aiserve_usage_time(&v);
            if (start == -1) {
                return ngx_http_aiserve_usage_bad(r, "invalid_value",
                           "start_time", "start_time: unix seconds or "
                           "YYYY-MM-DD");
            }

        } else if (ARG_IS("end_time") || ARG_IS("end_date")) {
            end = ngx_http_aiserve_usage_time(&v);
            if (end == -1) {
                return ngx_http_aiserve_usage_bad(r, "invalid_value",
                           "end_time", "end_time: unix seconds or "
                           "YYYY-MM-DD (exclusive)");
            }

        } else if (ARG_IS("bucket_width")) {
            if (VAL_IS("1d") || VAL_IS("day")) {
                month = 0;
            } else if (VAL_IS("1mo") || VAL_IS("month")) {
                month = 1;
            } else {
                return ngx_http_aiserve_usage_bad(r, "invalid_value",
                           "bucket_width", "bucket_width: 1d (day) or 1mo "
                           "(month)");
            }

        } else if (ARG_IS("group_by") || ARG_IS("group_by[]")) {
            u_char  *q, *e, *c;

            q = v.data;
            e = v.data + v.len;

            while (q < e) {
                c = ngx_strlchr(q, e, ',');
                if (c == NULL) {
                    c = e;
                }
                len = c - q;

                if ((len == 5 && ngx_strncmp(q, "model", 5) == 0)
                    || (len == 9 && ngx_strncmp(q, "line_item", 9) == 0))
                {
                    group |= NGX_HTTP_AISERVE_USAGE_BY_MODEL;
                } else if ((len == 10 && ngx_strncmp(q, "api_key_id", 10) == 0)
                           || (len == 3 && ngx_strncmp(q, "key", 3) == 0))
                {
                    group |= NGX_HTTP_AISERVE_USAGE_BY_KEY;
                } else if ((len == 10 && ngx_strncmp(q, "account_id", 10) == 0)
                           || (len == 7 && ngx_strncmp(q, "account", 7) == 0))
                {
                    group |= NGX_HTTP_AISERVE_USAGE_BY_ACCOUNT;
                } else if (len == 3 && ngx_strncmp(q, "api", 3) == 0) {
                    group |= NGX_HTTP_AISERVE_USAGE_BY_API;
                } else {
                    return ngx_http_aiserve_usage_bad(r, "invalid_value",
                               "group_by", "group_by: model (line_item), "
                               "api_key_id (key), account_id (account) or "
                               "api; the ledger keeps no other dimension");
                }

                q = c + 1;
            }

        } else if (ARG_IS("limit")) {
            limit = ngx_atoi(v.data, v.len);
            if (limit < 1 || limit > NGX_HTTP_AISERVE_USAGE_LIMIT_MAX) {
                return ngx_http_aiserve_usage_bad(r, "invalid_value",
                           "limit", "limit: the number of buckets of a "
                           "page, 1 to 31");
            }

        } else if (ARG_IS("page")) {
            if (v.len > 5 && ngx_strncmp(v.data, "page_", 5) == 0) {
                page = ngx_atotm(v.data + 5, v.len - 5);
            }
            if (page <= 0) {
                return ngx_http_aiserve_usage_bad(r, "invalid_value",
                           "page", "page: the next_page of the previous "
                           "page");
            }

        } else if (ARG_IS("account_id")) {
            if (v.len > 5 && ngx_strncmp(v.data, "acct_", 5) == 0) {
                v.data += 5;
                v.len -= 5;
            }
            rc = ngx_atoi(v.data, v.len);
            if (rc <= 0 || rc > 0xffffffff) {
                return ngx_http_aiserve_usage_bad(r, "invalid_value",
                           "account_id", "account_id: acct_N");
            }
            acct = (uint32_t) rc;

        } else {
            /* the name as param: a copy, the request line stays as sent */
            s = ngx_pnalloc(r->pool, n.len + 1);
            if (s == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
            *ngx_cpymem(s, n.data, n.len) = '\0';
            return ngx_http_aiserve_send_error(r, NGX_HTTP_BAD_REQUEST,
                       "invalid_request_error", "unknown_parameter",
                       s, "unknown parameter \"%V\"", &n);
        }

#undef ARG_IS
#undef VAL_IS
    }

    if (start == -1) {
        return ngx_http_aiserve_usage_bad(r, "missing_parameter",
                   "start_time", "start_time is required (unix seconds or "
                   "YYYY-MM-DD)");
    }

    if (end <= start) {
        return ngx_http_aiserve_usage_bad(r, "invalid_value", "end_time",
                   "end_time must be after start_time");
    }

    if (end - start > (time_t) NGX_HTTP_AISERVE_USAGE_DAYS_MAX * 86400) {
        return ngx_http_aiserve_usage_bad(r, "invalid_value", "end_time",
                   "at most 3660 days at once");
    }

    if (!admin && acct && acct != ctx->key.account_id) {
        return ngx_http_aiserve_send_error(r, NGX_HTTP_FORBIDDEN,
                   "permission_error", "account_not_allowed", "account_id",
                   "a key reads the usage of its own account only");
    }

    /* the keys whose rows are read, and their accounts */
    ks.account_id = admin ? acct : ctx->key.account_id;

    if (ngx_array_init(&ks.owners, r->pool, 16,
                       sizeof(ngx_http_aiserve_usage_owner_t))
        != NGX_OK
        || aiserve_ledger_key_each(ngx_http_aiserve_meter_ledger,
                                   ngx_http_aiserve_usage_key_cb, &ks)
           != AISERVE_LEDGER_OK)
    {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ids = ngx_pnalloc(r->pool, (ks.owners.nelts + 1) * sizeof(uint32_t));
    if (ids == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ow = ks.owners.elts;
    for (i = 0; i < ks.owners.nelts; i++) {
        ids[i] = ow[i].key_id;
    }

    start = ngx_http_aiserve_usage_floor(start, month, &next);

    if (page != -1) {
        if (page < start || page >= end
            || ngx_http_aiserve_usage_floor(page, month, &next) != page)
        {
            return ngx_http_aiserve_usage_bad(r, "invalid_value", "page",
                       "page: not a page of these start_time, end_time "
                       "and bucket_width");
        }

        start = page;
    }

    /* a page holds limit buckets; next_page starts the next one */
    nb = 0;
    for (t = start; t < end && nb < (ngx_uint_t) limit; t = next) {
        (void) ngx_http_aiserve_usage_floor(t, month, &next);
        nb++;
    }

    more = (t < end) ? t : 0;
    if (more) {
        end = more;
    }

    from = aiserve_day(start);
    to = aiserve_day(end - 1);

    if (ks.account_id == 0) {
        rc = ngx_http_aiserve_meter_collect(r, NULL, 0, from, to, &rows);
    } else if (ks.owners.nelts) {
        rc = ngx_http_aiserve_meter_collect(r, ids, ks.owners.nelts, from,
                                            to, &rows);
    } else {
        rc = ngx_array_init(&rows, r->pool, 1,
                            sizeof(ngx_http_aiserve_meter_out_t));
    }

    if (rc != NGX_OK) {
        return rc;
    }

    res = ngx_pcalloc(r->pool, nb * sizeof(ngx_array_t));
    if (res == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < nb; i++) {
        if (ngx_array_init(&res[i], r->pool, 4,
                           sizeof(ngx_http_aiserve_usage_result_t))
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    o = rows.elts;

    for (i = 0; i < rows.nelts; i++) {
        /* the bucket of the row's day */
        day = o[i].rk.day;
        j = 0;
        for (t = start; t < end; t = next) {
            (void) ngx_http_aiserve_usage_floor(t, month, &next);
            if (day >= aiserve_day(t) && day < aiserve_day(next)) {
                break;
            }
            j++;
        }

        if (j == nb) {
            continue;
        }

        acct = 0;
        for (ow = ks.owners.elts, len = 0; len < ks.owners.nelts; len++) {
            if (ow[len].key_id == o[i].rk.key_id) {
                acct = ow[len].account_id;
                break;
            }
        }

        if (ks.account_id && acct != ks.account_id) {
            continue;
        }

        rs = res[j].elts;
        for (len = 0; len < res[j].nelts; len++) {
            if ((!(group & NGX_HTTP_AISERVE_USAGE_BY_MODEL)
                 || ngx_strcmp(rs[len].model, o[i].rk.model) == 0)
                && (!(group & NGX_HTTP_AISERVE_USAGE_BY_API)
                    || ngx_strcmp(rs[len].api, o[i].rk.api) == 0)
                && (!(group & NGX_HTTP_AISERVE_USAGE_BY_KEY)
                    || rs[len].key_id == o[i].rk.key_id)
                && (!(group & NGX_HTTP_AISERVE_USAGE_BY_ACCOUNT)
                    || rs[len].account_id == acct))
            {
                break;
            }
        }

        if (len == res[j].nelts) {
            rs = ngx_array_push(&res[j]);
            if (rs == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
            ngx_memzero(rs, sizeof(ngx_http_aiserve_usage_result_t));
            rs->model = (group & NGX_HTTP_AISERVE_USAGE_BY_MODEL)
                        ? o[i].rk.model : NULL;
            rs->api = (group & NGX_HTTP_AISERVE_USAGE_BY_API)
                      ? o[i].rk.api : NULL;
            rs->key_id = (group & NGX_HTTP_AISERVE_USAGE_BY_KEY)
                         ? o[i].rk.key_id : 0;
            rs->account_id = (group & NGX_HTTP_AISERVE_USAGE_BY_ACCOUNT)
                             ? acct : 0;

        } else {
            rs = &rs[len];
        }

        ngx_http_aiserve_meter_usage_add(&rs->u, &o[i].u);
    }

    data = json_array();
    out = json_pack("{s:s, s:o, s:b}", "object", "page", "data", data,
                    "has_more", more != 0);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (more) {
        ngx_sprintf((u_char *) cursor, "page_%T%Z", more);
        json_object_set_new(out, "next_page", json_string(cursor));
    } else {
        json_object_set_new(out, "next_page", json_null());
    }

    i = 0;
    for (t = start; t < end; t = next) {
        (void) ngx_http_aiserve_usage_floor(t, month, &next);

        results = json_array();
        rs = res[i].elts;
        for (j = 0; j < res[i].nelts; j++) {
            json_array_append_new(results,
                ngx_http_aiserve_usage_result(&rs[j], costs,
                                              &mcf->currency));
        }

        bucket = json_pack("{s:s, s:I, s:I, s:o}", "object", "bucket",
                           "start_time", (json_int_t) t,
                           "end_time", (json_int_t) next,
                           "results", results);
        json_array_append_new(data, bucket);
        i++;
    }

    return ngx_http_aiserve_meter_send_json(r, NGX_HTTP_OK, out);
}


ngx_int_t
ngx_http_aiserve_meter_usage_handler(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_http_aiserve_meter_ctx_t       *ctx;
    ngx_http_aiserve_meter_refusal_t    ref;
    ngx_http_aiserve_meter_loc_conf_t  *lcf;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_aiserve_meter_not_allowed(r, "GET, HEAD", "GET");
    }

    ngx_memzero(&ref, sizeof(ref));

    if (ngx_http_aiserve_meter_authenticate(r, &ctx, &ref) != NGX_OK) {
        return ref.status ? ngx_http_aiserve_meter_refuse(r, &ref)
                          : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_meter_module);

    if (r->args.len == 0 && !lcf->usage_costs) {
        return ngx_http_aiserve_meter_usage_month(r, ctx);
    }

    return ngx_http_aiserve_meter_usage_buckets(r, ctx, lcf->usage_costs);
}
