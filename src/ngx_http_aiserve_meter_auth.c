/*
 * ngx_http_aiserve_meter_module: authentication (Bearer keys looked up by
 * their HMAC), refusals as JSON errors, and the masking of secrets in the
 * request line and in every error log of the http block.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_aiserve_meter.h"


static ngx_uint_t ngx_http_aiserve_meter_mask_key(ngx_str_t *s);
static void ngx_http_aiserve_meter_log_writer(ngx_log_t *log,
    ngx_uint_t level, u_char *buf, size_t len);


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
 * Masks keys pasted into any request header (User-Agent, Referer, custom
 * ones), so that $http_* variables in an access log, or anything else that
 * reads the headers later, never show them.  Authorization is masked too,
 * after its value is kept for authentication in ctx->authorization.
 * Returns NGX_OK or NGX_ERROR (no memory).
 */
static ngx_int_t
ngx_http_aiserve_meter_mask_headers(ngx_http_request_t *r,
    ngx_http_aiserve_meter_ctx_t **ctxp)
{
    ngx_str_t                      copy;
    ngx_uint_t                     i;
    ngx_list_part_t               *part;
    ngx_table_elt_t               *h;
    ngx_http_aiserve_meter_ctx_t  *ctx;

    part = &r->headers_in.headers.part;
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

        if (&h[i] != r->headers_in.authorization) {
            (void) ngx_http_aiserve_meter_mask_key(&h[i].value);
            continue;
        }

        /* the value as sent, for authenticate(); then masked in place */
        copy.len = h[i].value.len;
        copy.data = ngx_pnalloc(r->pool, copy.len);
        if (copy.data == NULL) {
            return NGX_ERROR;
        }
        ngx_memcpy(copy.data, h[i].value.data, copy.len);

        if (!ngx_http_aiserve_meter_mask_key(&h[i].value)) {
            continue;
        }

        ctx = *ctxp;
        if (ctx == NULL) {
            ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_aiserve_meter_ctx_t));
            if (ctx == NULL) {
                return NGX_ERROR;
            }
            ngx_http_set_ctx(r, ctx, ngx_http_aiserve_meter_module);
            *ctxp = ctx;
        }

        ctx->authorization = copy;
    }

    return NGX_OK;
}


/*
 * Post-read phase, every request of an http block with a ledger, metered
 * location or not: a key in the request line or in a request header is
 * masked before anything (access log, error log, $request_uri, $args,
 * $http_*) can show it.  The access phase of a metered location then
 * refuses a request with a key in its request line.
 */
ngx_int_t
ngx_http_aiserve_meter_post_read_handler(ngx_http_request_t *r)
{
    ngx_http_aiserve_meter_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (ngx_http_aiserve_meter_mask_headers(r, &ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!ngx_http_aiserve_meter_mask_request(r)) {
        return NGX_DECLINED;
    }

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
 * Log phase, before any other log handler: what the post-read phase masks,
 * masked again for the requests nginx finalizes before that phase runs (a
 * 400 for a duplicate or missing Host or a conflicting Content-Length, a
 * 494 for a header too large, a 501 for an unknown Transfer-Encoding, a
 * 408 while reading headers): their access log lines read $request and
 * $http_* as well.  A masked key no longer has a key's shape, so masking a
 * request twice changes nothing.
 */
ngx_int_t
ngx_http_aiserve_meter_log_handler(ngx_http_request_t *r)
{
    ngx_http_aiserve_meter_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    (void) ngx_http_aiserve_meter_mask_headers(r, &ctx);
    (void) ngx_http_aiserve_meter_mask_request(r);

    return NGX_OK;
}


/*
 * Bearer token from Authorization (RFC 6750 2.1; scheme case-insensitive).
 * Refuses keys in the query string (RFC 6750 2.3 is not offered) and masks
 * them in the request line, so the access log and error log never hold
 * one.
 */
ngx_int_t
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

    /* the header itself was masked by the post-read phase */
    if (ctx->authorization.data) {
        p = ctx->authorization.data;
        last = p + ctx->authorization.len;

    } else {
        p = r->headers_in.authorization->value.data;
        last = p + r->headers_in.authorization->value.len;
    }

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

    /* a worker that could not open the ledger answers 503 until it can
     * (ngx_http_aiserve_meter_open_ledger()) */
    rc = ngx_http_aiserve_meter_ledger
         ? aiserve_ledger_key_lookup_at(ngx_http_aiserve_meter_ledger, hash,
                                        ngx_time(), &ctx->key, &ctx->account)
         : AISERVE_LEDGER_ERROR;

    if (rc == AISERVE_LEDGER_NOTFOUND) {
        ref->code = "invalid_api_key";
        ref->msg = "invalid API key";
        return NGX_DECLINED;
    }

    if (rc != AISERVE_LEDGER_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "aiserve meter: %s",
                      ngx_http_aiserve_meter_ledger
                      ? aiserve_ledger_error(ngx_http_aiserve_meter_ledger)
                      : "the ledger is not open");
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

    if (ctx->account.status == AISERVE_ACCOUNT_SUSPENDED) {
        ref->status = NGX_HTTP_FORBIDDEN;
        ref->type = "permission_error";
        ref->code = "account_suspended";
        ref->msg = "the account of this API key is suspended";
        return NGX_DECLINED;
    }

    ctx->authenticated = 1;
    ref->status = 0;

    return NGX_OK;
}


/*
 * Counts a refusal (401, 403, 429) of a key the ledger knows (a revoked,
 * expired or rotated-away secret included) in its usage row of today (the
 * model of the request, or "" when refused before the body was read), so
 * that abuse shows in the ledger.  A full zone loses the count (an alert
 * says so), never admitted usage.
 */
static void
ngx_http_aiserve_meter_count_refusal(ngx_http_request_t *r,
    ngx_http_aiserve_meter_ctx_t *ctx, ngx_uint_t status)
{
    aiserve_row_key_t                    rk;
    ngx_http_aiserve_meter_row_t        *row;
    ngx_http_aiserve_meter_zone_t       *z;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_meter_module);
    if (mcf->shm_zone == NULL) {
        return;
    }

    z = mcf->shm_zone->data;

    ngx_http_aiserve_meter_row_key(r, &ctx->model,
                                   ngx_http_aiserve_meter_today(), &rk);

    ngx_shmtx_lock(&z->shpool->mutex);

    row = ngx_http_aiserve_meter_row_lookup(z, &rk, 1);

    if (row) {
        row->account_id = ctx->key.account_id;

        if (status == NGX_HTTP_UNAUTHORIZED) {
            row->pending.refused_401++;
        } else if (status == NGX_HTTP_FORBIDDEN) {
            row->pending.refused_403++;
        } else {
            row->pending.refused_429++;
        }
    }

    ngx_shmtx_unlock(&z->shpool->mutex);

    if (row == NULL) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "aiserve meter: zone is full, a refusal of key_%uD "
                      "not counted", ctx->key.id);
    }
}


/* Sends the refusal as a JSON error; returns what send_error returns. */
ngx_int_t
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

    if (ctx && ctx->key.id
        && (ref->status == NGX_HTTP_UNAUTHORIZED
            || ref->status == NGX_HTTP_FORBIDDEN
            || ref->status == NGX_HTTP_TOO_MANY_REQUESTS))
    {
        ngx_http_aiserve_meter_count_refusal(r, ctx, ref->status);
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
ngx_int_t
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


ngx_int_t
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
