/*
 * ngx_http_aiserve_meter_module: aiserve_usage, the caller's usage of the
 * current UTC month as JSON (ledger rows and the zone's unflushed usage).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

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


ngx_int_t
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

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        if (ngx_http_aiserve_meter_header(r, "Allow", (u_char *) "GET, HEAD",
                                          sizeof("GET, HEAD") - 1, NULL)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_aiserve_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                           "invalid_request_error",
                                           "method_not_allowed", NULL,
                                           "method %V is not allowed, use "
                                           "GET", &r->method_name);
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
