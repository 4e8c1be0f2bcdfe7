/*
 * ngx_http_aiserve_meter_module: the admin API (aiserve_admin), what
 * aiserve-keys does, over HTTP, for admin keys only.  Routes below the
 * location's prefix (README.md, "Admin API"):
 *
 *   GET  accounts                   POST accounts
 *   GET  accounts/ID                POST accounts/ID  (update)
 *   POST accounts/ID/suspend        POST accounts/ID/unsuspend
 *   GET  accounts/ID/keys           POST accounts/ID/keys  (secret once)
 *   GET  keys                       GET  keys/ID      POST keys/ID
 *   POST keys/ID/revoke, block, unblock, rotate
 *   DELETE keys/ID  (as revoke)     DELETE accounts/ID  (close)
 *   GET  audit
 *
 * Every request needs an admin key before its path is even read, so no
 * path (//, %2F, ..) lets another key in.  Changes are validated as the
 * CLI validates them (aiserve_limits_check, aiserve_parse_expires,
 * aiserve_parse_duration), written to the ledger on the event loop (one
 * synced LMDB transaction, about a millisecond) and recorded in its audit
 * trail with the admin key's id.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_aiserve_meter.h"


#define NGX_HTTP_AISERVE_ADMIN_BODY_MAX  65536


typedef struct {
    ngx_uint_t        status;
    const char       *code;
    const char       *param;
    char              msg[256];
} ngx_http_aiserve_admin_err_t;


static void ngx_http_aiserve_meter_admin_body(ngx_http_request_t *r);


static ngx_int_t
ngx_http_aiserve_admin_fail(ngx_http_aiserve_admin_err_t *e,
    ngx_uint_t status, const char *code, const char *param,
    const char *fmt, const char *arg)
{
    u_char  *p;

    e->status = status;
    e->code = code;
    e->param = param;
    p = ngx_snprintf((u_char *) e->msg, sizeof(e->msg) - 1, fmt, arg);
    *p = '\0';

    return NGX_ERROR;
}


static json_t *
ngx_http_aiserve_admin_models(const char *list, size_t size)
{
    json_t      *a;
    const char  *p, *end, *comma;

    a = json_array();
    p = list;
    end = p + strnlen(list, size);

    while (a && p < end) {
        comma = memchr(p, ',', end - p);
        if (comma == NULL) {
            comma = end;
        }
        json_array_append_new(a, json_stringn(p, comma - p));
        p = comma + 1;
    }

    return a;
}


static const char *
ngx_http_aiserve_admin_period(uint32_t period)
{
    return period == AISERVE_PERIOD_DAY ? "day"
           : period == AISERVE_PERIOD_MONTH ? "month" : "none";
}


static json_t *
ngx_http_aiserve_admin_account_json(const aiserve_account_t *a)
{
    char  id[32];

    ngx_sprintf((u_char *) id, "acct_%uD%Z", a->id);

    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:I, s:o,"
                     " s:I}",
                     "object", "account", "id", id, "name", a->name,
                     "status", aiserve_account_status_name(a->status),
                     "rpm", (json_int_t) a->rpm, "tpm", (json_int_t) a->tpm,
                     "budget", (json_int_t) a->budget_tokens,
                     "period", ngx_http_aiserve_admin_period(a->budget_period),
                     "concurrency", (json_int_t) a->max_concurrent,
                     "models", ngx_http_aiserve_admin_models(a->models,
                                                        sizeof(a->models)),
                     "created_at", (json_int_t) a->created);
}


static json_t *
ngx_http_aiserve_admin_key_json(const aiserve_key_t *k)
{
    char     id[32], acct[32];
    json_t  *o;

    ngx_sprintf((u_char *) id, "key_%uD%Z", k->id);
    ngx_sprintf((u_char *) acct, "acct_%uD%Z", k->account_id);

    o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:I,"
                  " s:s, s:I, s:o, s:I}",
                  "object", "api_key", "id", id, "account_id", acct,
                  "name", k->name, "prefix", k->prefix, "last4", k->last4,
                  "status", (k->status != AISERVE_KEY_REVOKED && k->expires
                             && k->expires <= ngx_time())
                            ? "expired" : aiserve_key_status_name(k->status),
                  "admin", (k->flags & AISERVE_KEY_ADMIN) != 0,
                  "rpm", (json_int_t) k->rpm, "tpm", (json_int_t) k->tpm,
                  "budget", (json_int_t) k->budget_tokens,
                  "period", ngx_http_aiserve_admin_period(k->budget_period),
                  "concurrency", (json_int_t) k->max_concurrent,
                  "models", ngx_http_aiserve_admin_models(k->models,
                                                          sizeof(k->models)),
                  "created_at", (json_int_t) k->created);
    if (o == NULL) {
        return NULL;
    }

    json_object_set_new(o, "expires_at", k->expires
                        ? json_integer(k->expires) : json_null());
    json_object_set_new(o, "previous_secret_expires_at",
                        k->prev_expires > ngx_time()
                        ? json_integer(k->prev_expires) : json_null());

    return o;
}


/* The limits both keys and accounts have, read from a JSON object. */
typedef struct {
    char       *name;
    uint64_t   *rpm, *tpm, *budget;
    uint32_t   *period, *max_concurrent;
    char       *models;
} ngx_http_aiserve_admin_limits_t;


static void
ngx_http_aiserve_admin_key_limits(ngx_http_aiserve_admin_limits_t *lim,
    aiserve_key_t *k)
{
    lim->name = k->name;
    lim->rpm = &k->rpm;
    lim->tpm = &k->tpm;
    lim->budget = &k->budget_tokens;
    lim->period = &k->budget_period;
    lim->max_concurrent = &k->max_concurrent;
    lim->models = k->models;
}


static ngx_int_t
ngx_http_aiserve_admin_uint(json_t *v, const char *param, uint64_t max,
    uint64_t *out, ngx_http_aiserve_admin_err_t *e)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0
        || (uint64_t) json_integer_value(v) > max)
    {
        return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                   "invalid_value", param, "\"%s\" must be an integer from "
                   "0 to its maximum (10^14 for rpm, tpm and budget, "
                   "4294967295 for concurrency)", param);
    }

    *out = (uint64_t) json_integer_value(v);

    return NGX_OK;
}


/*
 * Applies the fields of body to the limits; a field not named here is an
 * error unless extra allows it (it then is the caller's).
 */
static ngx_int_t
ngx_http_aiserve_admin_limits(json_t *body,
    ngx_http_aiserve_admin_limits_t *lim, const char **extra,
    ngx_http_aiserve_admin_err_t *e)
{
    size_t       i, len, n;
    uint64_t     u;
    json_t      *v, *m;
    const char  *field, *s, **x;
    char         models[AISERVE_MODELS_MAX], msg[80];

    json_object_foreach(body, field, v) {

        if (ngx_strcmp(field, "name") == 0) {
            if (!json_is_string(v)) {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                           "invalid_value", "name", "\"%s\" must be a string "
                           "of at most 63 bytes", "name");
            }
            if (aiserve_name_check(json_string_value(v),
                                   json_string_length(v), msg, sizeof(msg))
                != 0)
            {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                           "invalid_value", "name", "%s", msg);
            }
            ngx_memzero(lim->name, AISERVE_KEY_NAME_MAX);
            ngx_memcpy(lim->name, json_string_value(v), json_string_length(v));

        } else if (ngx_strcmp(field, "rpm") == 0
                   || ngx_strcmp(field, "tpm") == 0
                   || ngx_strcmp(field, "budget") == 0)
        {
            if (ngx_http_aiserve_admin_uint(v, field, AISERVE_KEY_LIMIT_MAX,
                                            &u, e) != NGX_OK)
            {
                return NGX_ERROR;
            }
            *(field[0] == 'r' ? lim->rpm
              : field[0] == 't' ? lim->tpm : lim->budget) = u;

        } else if (ngx_strcmp(field, "concurrency") == 0) {
            if (ngx_http_aiserve_admin_uint(v, field, 0xffffffff, &u, e)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
            *lim->max_concurrent = (uint32_t) u;

        } else if (ngx_strcmp(field, "period") == 0) {
            s = json_string_value(v);
            if (s && ngx_strcmp(s, "day") == 0) {
                *lim->period = AISERVE_PERIOD_DAY;
            } else if (s && ngx_strcmp(s, "month") == 0) {
                *lim->period = AISERVE_PERIOD_MONTH;
            } else if (s && ngx_strcmp(s, "none") == 0) {
                *lim->period = AISERVE_PERIOD_NONE;
            } else {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                           "invalid_value", "period", "\"%s\" must be \"day\""
                           ", \"month\" or \"none\"", "period");
            }

        } else if (ngx_strcmp(field, "models") == 0) {
            if (!json_is_array(v)) {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                           "invalid_value", "models", "\"%s\" must be an "
                           "array of model names ([] allows all)", "models");
            }

            n = 0;
            json_array_foreach(v, i, m) {
                s = json_string_value(m);
                len = s ? json_string_length(m) : 0;
                if (s == NULL || len == 0 || len > AISERVE_MODEL_MAX
                    || ngx_strlchr((u_char *) s, (u_char *) s + len, ',')
                    || n + len + 1 >= sizeof(models))
                {
                    return ngx_http_aiserve_admin_fail(e,
                               NGX_HTTP_BAD_REQUEST, "invalid_value",
                               "models", "\"%s\": model names of 1 to 64 "
                               "bytes without commas, 255 bytes in all",
                               "models");
                }
                if (n) {
                    models[n++] = ',';
                }
                ngx_memcpy(models + n, s, len);
                n += len;
            }

            ngx_memzero(lim->models, AISERVE_MODELS_MAX);
            ngx_memcpy(lim->models, models, n);

        } else {
            for (x = extra; x && *x; x++) {
                if (ngx_strcmp(field, *x) == 0) {
                    break;
                }
            }

            if (x == NULL || *x == NULL) {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                           "unknown_parameter", field, "unknown field "
                           "\"%s\"", field);
            }
        }
    }

    return NGX_OK;
}


/* After the fields: what they cannot be together (the ledger's check). */
static ngx_int_t
ngx_http_aiserve_admin_check(uint64_t rpm, uint64_t tpm, uint64_t budget,
    uint32_t period, ngx_http_aiserve_admin_err_t *e)
{
    char  msg[200];

    if (aiserve_limits_check(rpm, tpm, budget, period, msg, sizeof(msg))
        != 0)
    {
        return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                                           "invalid_value", "budget", "%s",
                                           msg);
    }

    return NGX_OK;
}


/* Key fields beyond the limits: expires, admin (and type at creation). */
static ngx_int_t
ngx_http_aiserve_admin_key_fields(json_t *body, aiserve_key_t *k,
    ngx_http_aiserve_admin_err_t *e)
{
    json_t   *v;
    int64_t   t;
    char      s[32], msg[200];

    v = json_object_get(body, "expires");
    if (v) {
        if (json_is_null(v)) {
            k->expires = 0;

        } else if (json_is_integer(v)) {
            ngx_sprintf((u_char *) s, "%L%Z", (int64_t) json_integer_value(v));
            if (aiserve_parse_expires(s, ngx_time(), &t, msg, sizeof(msg))
                != 0)
            {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                           "invalid_value", "expires", "%s", msg);
            }
            k->expires = t;

        } else if (json_is_string(v)) {
            if (aiserve_parse_expires(json_string_value(v), ngx_time(), &t,
                                      msg, sizeof(msg)) != 0)
            {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                           "invalid_value", "expires", "%s", msg);
            }
            k->expires = t;

        } else {
            return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                       "invalid_value", "expires", "\"%s\" must be null, "
                       "unix seconds, \"never\", \"+30d\" or \"YYYY-MM-DD\"",
                       "expires");
        }
    }

    v = json_object_get(body, "admin");
    if (v) {
        if (!json_is_boolean(v)) {
            return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                       "invalid_value", "admin", "\"%s\" must be true or "
                       "false", "admin");
        }
        if (json_is_true(v)) {
            k->flags |= AISERVE_KEY_ADMIN;
        } else {
            k->flags &= ~AISERVE_KEY_ADMIN;
        }
    }

    return NGX_OK;
}


/* A key's fields from body: limits (with extra allowed), expiry, admin,
 * checked together. */
static ngx_int_t
ngx_http_aiserve_admin_key_body(json_t *body, aiserve_key_t *k,
    const char **extra, ngx_http_aiserve_admin_err_t *e)
{
    ngx_http_aiserve_admin_limits_t  lim;

    ngx_http_aiserve_admin_key_limits(&lim, k);

    if (ngx_http_aiserve_admin_limits(body, &lim, extra, e) != NGX_OK
        || ngx_http_aiserve_admin_key_fields(body, k, e) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_aiserve_admin_check(k->rpm, k->tpm, k->budget_tokens,
                                        k->budget_period, e);
}


static void
ngx_http_aiserve_admin_audit(ngx_http_request_t *r, const char *action,
    const char *object, const char *detail)
{
    aiserve_audit_t                e;
    ngx_http_aiserve_meter_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    ngx_memzero(&e, sizeof(e));
    e.time = ngx_time();
    e.key_id = ctx->key.id;
    ngx_sprintf((u_char *) e.actor, "key_%uD%Z", ctx->key.id);
    ngx_cpystrn((u_char *) e.action, (u_char *) action, sizeof(e.action));
    ngx_cpystrn((u_char *) e.object, (u_char *) object, sizeof(e.object));
    ngx_cpystrn((u_char *) e.detail, (u_char *) (detail ? detail : ""),
                sizeof(e.detail));

    if (aiserve_ledger_audit_add(ngx_http_aiserve_meter_ledger, &e)
        != AISERVE_LEDGER_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "aiserve meter: admin action %s %s by key_%uD not in "
                      "the audit trail: %s", action, object, ctx->key.id,
                      aiserve_ledger_error(ngx_http_aiserve_meter_ledger));
    }
}


/* "acct_12", "key_12" or "12" -> 12; 0 if not an id */
static uint32_t
ngx_http_aiserve_admin_id(ngx_str_t *s, const char *prefix)
{
    size_t     n;
    ngx_int_t  id;

    n = ngx_strlen(prefix);

    if (s->len > n && ngx_strncmp(s->data, prefix, n) == 0) {
        id = ngx_atoi(s->data + n, s->len - n);
    } else {
        id = ngx_atoi(s->data, s->len);
    }

    return (id <= 0 || id > 0xffffffff) ? 0 : (uint32_t) id;
}


typedef struct {
    json_t    *data;
    uint32_t   account_id;     /* 0: every key */
} ngx_http_aiserve_admin_list_t;


static int
ngx_http_aiserve_admin_account_cb(const aiserve_account_t *a, void *arg)
{
    ngx_http_aiserve_admin_list_t  *l = arg;

    json_array_append_new(l->data, ngx_http_aiserve_admin_account_json(a));

    return 0;
}


static int
ngx_http_aiserve_admin_key_cb(const aiserve_key_t *k, void *arg)
{
    ngx_http_aiserve_admin_list_t  *l = arg;

    if (l->account_id == 0 || k->account_id == l->account_id) {
        json_array_append_new(l->data, ngx_http_aiserve_admin_key_json(k));
    }

    return 0;
}


static int
ngx_http_aiserve_admin_audit_cb(const aiserve_audit_t *e, void *arg)
{
    ngx_http_aiserve_admin_list_t  *l = arg;

    json_array_append_new(l->data,
        json_pack("{s:s, s:I, s:I, s:s, s:s, s:s, s:s}",
                  "object", "audit_log", "id", (json_int_t) e->seq,
                  "effective_at", (json_int_t) e->time, "actor", e->actor,
                  "action", e->action, "object_id", e->object,
                  "detail", e->detail));

    return 0;
}


static json_t *
ngx_http_aiserve_admin_list(ngx_uint_t what, uint32_t account_id)
{
    json_t                         *o;
    ngx_http_aiserve_admin_list_t   l;

    l.data = json_array();
    l.account_id = account_id;

    if (what == 0) {
        aiserve_ledger_account_each(ngx_http_aiserve_meter_ledger,
                                    ngx_http_aiserve_admin_account_cb, &l);
    } else if (what == 1) {
        aiserve_ledger_key_each(ngx_http_aiserve_meter_ledger,
                                ngx_http_aiserve_admin_key_cb, &l);
    } else {
        aiserve_ledger_audit_each(ngx_http_aiserve_meter_ledger, 0,
                                  ngx_http_aiserve_admin_audit_cb, &l);
    }

    o = json_pack("{s:s, s:o, s:b}", "object", "list", "data", l.data,
                  "has_more", 0);

    return o;
}


/* Maps a ledger result to an error: NOTFOUND 404, others 400 or 503. */
static ngx_int_t
ngx_http_aiserve_admin_ledger_fail(int rc, ngx_http_aiserve_admin_err_t *e)
{
    const char  *msg;

    msg = aiserve_ledger_error(ngx_http_aiserve_meter_ledger);

    if (rc == AISERVE_LEDGER_NOTFOUND) {
        return ngx_http_aiserve_admin_fail(e, NGX_HTTP_NOT_FOUND,
                                           "not_found", NULL, "%s", msg);
    }

    if (rc == AISERVE_LEDGER_FULL) {
        return ngx_http_aiserve_admin_fail(e, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "ledger_full", NULL, "%s", msg);
    }

    return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request", NULL, "%s", msg);
}


/*
 * Runs one route: seg[0..n) the path segments below the location, body
 * the parsed JSON of a POST ({} when empty).  Returns NGX_OK with *out
 * and *status, or NGX_ERROR with e filled.
 */
/*
 * DELETE accounts/ID: closes the account for good and revokes its keys in
 * one transaction; answers it with "deleted": true and keys_revoked.  Its
 * usage stays in the ledger.  (DELETE keys/ID is POST keys/ID/revoke.)
 */
static ngx_int_t
ngx_http_aiserve_admin_close(ngx_http_request_t *r, ngx_str_t *seg,
    json_t **out, ngx_http_aiserve_admin_err_t *e)
{
    char                obj[32], detail[32];
    uint32_t            id;
    unsigned            revoked;
    ngx_int_t           rc;
    aiserve_account_t   a;

    id = ngx_http_aiserve_admin_id(&seg[1], "acct_");
    rc = id ? aiserve_ledger_account_close(ngx_http_aiserve_meter_ledger, id,
                                           &revoked)
            : AISERVE_LEDGER_NOTFOUND;

    if (rc == AISERVE_LEDGER_NOTFOUND) {
        return ngx_http_aiserve_admin_fail(e, NGX_HTTP_NOT_FOUND,
                   "not_found", NULL, "%s", "no such account");
    }

    ngx_sprintf((u_char *) obj, "acct_%uD%Z", id);

    if (rc == AISERVE_LEDGER_ERROR
        && aiserve_ledger_account_get(ngx_http_aiserve_meter_ledger, id, &a)
           == AISERVE_LEDGER_OK
        && a.status == AISERVE_ACCOUNT_CLOSED)
    {
        return ngx_http_aiserve_admin_fail(e, NGX_HTTP_CONFLICT,
                   "account_closed", NULL, "%s is closed", obj);
    }

    if (rc == AISERVE_LEDGER_OK) {
        rc = aiserve_ledger_account_get(ngx_http_aiserve_meter_ledger, id,
                                        &a);
    }

    if (rc != AISERVE_LEDGER_OK) {
        return ngx_http_aiserve_admin_ledger_fail(AISERVE_LEDGER_ERROR, e);
    }

    ngx_sprintf((u_char *) detail, "keys_revoked=%ud%Z", revoked);
    ngx_http_aiserve_admin_audit(r, "account.close", obj, detail);

    *out = ngx_http_aiserve_admin_account_json(&a);
    if (*out) {
        json_object_set_new(*out, "keys_revoked", json_integer(revoked));
        json_object_set_new(*out, "deleted", json_true());
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_aiserve_admin_route(ngx_http_request_t *r, ngx_str_t *seg,
    ngx_uint_t n, json_t *body, json_t **out, ngx_uint_t *status,
    ngx_http_aiserve_admin_err_t *e)
{
    int                              rc;
    char                             obj[32], detail[64];
    char                             secret[AISERVE_API_KEY_MAX];
    int64_t                          grace;
    uint32_t                         id;
    json_t                          *v;
    ngx_uint_t                       post, del;
    const char                      *type, *s;
    aiserve_key_t                    k;
    aiserve_account_t                a;
    ngx_http_aiserve_admin_limits_t  lim;
    static const char               *key_extra[] = {
        "expires", "admin", "type", NULL
    };
    static const char               *key_update[] = {
        "expires", "admin", NULL
    };

    post = (r->method == NGX_HTTP_POST);
    *status = NGX_HTTP_OK;

#define ROUTE_IS(i, s)  (seg[i].len == sizeof(s) - 1                          \
                         && ngx_strncmp(seg[i].data, s, sizeof(s) - 1) == 0)

    del = (r->method == NGX_HTTP_DELETE);

    if (del && !(n == 2 && (ROUTE_IS(0, "keys") || ROUTE_IS(0, "accounts"))))
    {
        return ngx_http_aiserve_admin_fail(e, NGX_HTTP_NOT_FOUND,
                   "not_found", NULL, "no admin route %s",
                   "for DELETE: keys/ID, accounts/ID");
    }

    if (del && ROUTE_IS(0, "accounts")) {
        return ngx_http_aiserve_admin_close(r, seg, out, e);
    }

    if (n == 1 && ROUTE_IS(0, "audit") && !post) {
        *out = ngx_http_aiserve_admin_list(2, 0);
        return NGX_OK;
    }

    if (n >= 1 && ROUTE_IS(0, "accounts")) {

        if (n == 1 && !post) {
            *out = ngx_http_aiserve_admin_list(0, 0);
            return NGX_OK;
        }

        ngx_memzero(&a, sizeof(a));

        if (n >= 2) {
            id = ngx_http_aiserve_admin_id(&seg[1], "acct_");
            rc = id ? aiserve_ledger_account_get(
                          ngx_http_aiserve_meter_ledger, id, &a)
                    : AISERVE_LEDGER_NOTFOUND;
            if (rc != AISERVE_LEDGER_OK) {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_NOT_FOUND,
                           "not_found", NULL, "%s", "no such account");
            }
        }

        lim.name = a.name;
        lim.rpm = &a.rpm;
        lim.tpm = &a.tpm;
        lim.budget = &a.budget_tokens;
        lim.period = &a.budget_period;
        lim.max_concurrent = &a.max_concurrent;
        lim.models = a.models;

        if (n >= 2 && post && a.status == AISERVE_ACCOUNT_CLOSED) {
            ngx_sprintf((u_char *) obj, "acct_%uD%Z", a.id);
            return ngx_http_aiserve_admin_fail(e, NGX_HTTP_CONFLICT,
                       "account_closed", NULL, "%s is closed", obj);
        }

        if (n == 1 || (n == 2 && post)) {
            /* create or update */
            if (!post) {
                goto not_allowed;
            }

            if (ngx_http_aiserve_admin_limits(body, &lim, NULL, e) != NGX_OK
                || ngx_http_aiserve_admin_check(a.rpm, a.tpm, a.budget_tokens,
                                                a.budget_period, e)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            rc = (n == 1)
                 ? aiserve_ledger_account_create(
                       ngx_http_aiserve_meter_ledger, &a)
                 : aiserve_ledger_account_put(ngx_http_aiserve_meter_ledger,
                                              &a);
            if (rc != AISERVE_LEDGER_OK) {
                return ngx_http_aiserve_admin_ledger_fail(rc, e);
            }

            ngx_sprintf((u_char *) obj, "acct_%uD%Z", a.id);
            ngx_http_aiserve_admin_audit(r, n == 1 ? "account.create"
                                                   : "account.update",
                                         obj, NULL);
            *status = (n == 1) ? NGX_HTTP_CREATED : NGX_HTTP_OK;
            *out = ngx_http_aiserve_admin_account_json(&a);
            return NGX_OK;
        }

        if (n == 2) {
            *out = ngx_http_aiserve_admin_account_json(&a);
            return NGX_OK;
        }

        if (n == 3 && (ROUTE_IS(2, "suspend") || ROUTE_IS(2, "unsuspend"))) {
            if (!post) {
                goto not_allowed;
            }

            if (json_object_size(body)) {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                           "unknown_parameter", NULL, "%s takes no fields",
                           "suspend");
            }

            a.status = ROUTE_IS(2, "suspend") ? AISERVE_ACCOUNT_SUSPENDED
                                              : AISERVE_ACCOUNT_ACTIVE;

            rc = aiserve_ledger_account_put(ngx_http_aiserve_meter_ledger,
                                            &a);
            if (rc != AISERVE_LEDGER_OK) {
                return ngx_http_aiserve_admin_ledger_fail(rc, e);
            }

            ngx_sprintf((u_char *) obj, "acct_%uD%Z", a.id);
            ngx_http_aiserve_admin_audit(r, a.status
                                            ? "account.suspend"
                                            : "account.unsuspend", obj, NULL);
            *out = ngx_http_aiserve_admin_account_json(&a);
            return NGX_OK;
        }

        if (n == 3 && ROUTE_IS(2, "keys")) {
            if (!post) {
                *out = ngx_http_aiserve_admin_list(1, a.id);
                return NGX_OK;
            }

            ngx_memzero(&k, sizeof(k));
            k.account_id = a.id;

            type = "live";
            v = json_object_get(body, "type");
            if (v) {
                s = json_string_value(v);
                if (s == NULL || (ngx_strcmp(s, "live") != 0
                                  && ngx_strcmp(s, "test") != 0))
                {
                    return ngx_http_aiserve_admin_fail(e,
                               NGX_HTTP_BAD_REQUEST, "invalid_value", "type",
                               "\"%s\" must be \"live\" or \"test\"", "type");
                }
                type = s;
            }

            if (ngx_http_aiserve_admin_key_body(body, &k, key_extra, e)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            rc = aiserve_ledger_key_create(ngx_http_aiserve_meter_ledger, &k,
                                           type, secret);
            if (rc != AISERVE_LEDGER_OK) {
                return ngx_http_aiserve_admin_ledger_fail(rc, e);
            }

            ngx_sprintf((u_char *) obj, "key_%uD%Z", k.id);
            ngx_sprintf((u_char *) detail, "account=acct_%uD%Z", a.id);
            ngx_http_aiserve_admin_audit(r, "key.create", obj, detail);

            *out = ngx_http_aiserve_admin_key_json(&k);
            if (*out) {
                /* the secret, shown this once */
                json_object_set_new(*out, "api_key", json_string(secret));
            }
            ngx_explicit_memzero(secret, sizeof(secret));
            *status = NGX_HTTP_CREATED;
            return NGX_OK;
        }

        return ngx_http_aiserve_admin_fail(e, NGX_HTTP_NOT_FOUND,
                                           "not_found", NULL, "no route %s",
                                           "below accounts/ID");
    }

    if (n >= 1 && ROUTE_IS(0, "keys")) {

        if (n == 1) {
            if (post) {
                return ngx_http_aiserve_admin_fail(e,
                           NGX_HTTP_NOT_ALLOWED, "method_not_allowed", NULL,
                           "%s", "keys are created under an account: "
                           "POST accounts/ID/keys");
            }
            *out = ngx_http_aiserve_admin_list(1, 0);
            return NGX_OK;
        }

        id = ngx_http_aiserve_admin_id(&seg[1], "key_");
        rc = id ? aiserve_ledger_key_get(ngx_http_aiserve_meter_ledger, id,
                                         &k)
                : AISERVE_LEDGER_NOTFOUND;
        if (rc != AISERVE_LEDGER_OK) {
            return ngx_http_aiserve_admin_fail(e, NGX_HTTP_NOT_FOUND,
                       "not_found", NULL, "%s", "no such key");
        }

        ngx_sprintf((u_char *) obj, "key_%uD%Z", k.id);

        if (n == 2 && !post && !del) {
            *out = ngx_http_aiserve_admin_key_json(&k);
            return NGX_OK;
        }

        if ((!post && !del) || n > 3) {
            goto not_found_or_method;
        }

        if (n == 2 && !del) {
            if (k.status == AISERVE_KEY_REVOKED) {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_CONFLICT,
                           "key_revoked", NULL, "%s is revoked", obj);
            }

            if (ngx_http_aiserve_admin_key_body(body, &k, key_update, e)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            rc = aiserve_ledger_key_put(ngx_http_aiserve_meter_ledger, &k);
            if (rc != AISERVE_LEDGER_OK) {
                return ngx_http_aiserve_admin_ledger_fail(rc, e);
            }

            ngx_http_aiserve_admin_audit(r, "key.update", obj, NULL);
            *out = ngx_http_aiserve_admin_key_json(&k);
            return NGX_OK;
        }

        if (ROUTE_IS(2, "rotate")) {
            grace = 86400;

            json_object_foreach(body, s, v) {
                if (ngx_strcmp(s, "grace_period") != 0) {
                    return ngx_http_aiserve_admin_fail(e,
                               NGX_HTTP_BAD_REQUEST, "unknown_parameter", s,
                               "unknown field \"%s\"", s);
                }
            }

            v = json_object_get(body, "grace_period");
            if (v) {
                char  buf[32], msg[200];

                if (json_is_integer(v)) {
                    ngx_sprintf((u_char *) buf, "%L%Z",
                                (int64_t) json_integer_value(v));
                    s = buf;
                } else {
                    s = json_string_value(v);
                }

                if (s == NULL
                    || aiserve_parse_duration(s, AISERVE_GRACE_MAX, &grace,
                                              msg, sizeof(msg)) != 0)
                {
                    return ngx_http_aiserve_admin_fail(e,
                               NGX_HTTP_BAD_REQUEST, "invalid_value",
                               "grace_period", "\"%s\": seconds, or \"90s\", "
                               "\"15m\", \"1h\", \"7d\"; at most 30 days",
                               "grace_period");
                }
            }

            if (k.status == AISERVE_KEY_REVOKED) {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_CONFLICT,
                           "key_revoked", NULL, "%s is revoked", obj);
            }

            rc = aiserve_ledger_key_rotate(ngx_http_aiserve_meter_ledger,
                                           k.id, grace, &k, secret);
            if (rc != AISERVE_LEDGER_OK) {
                return ngx_http_aiserve_admin_ledger_fail(rc, e);
            }

            ngx_sprintf((u_char *) detail, "grace_period=%L%Z", grace);
            ngx_http_aiserve_admin_audit(r, "key.rotate", obj, detail);

            *out = ngx_http_aiserve_admin_key_json(&k);
            if (*out) {
                json_object_set_new(*out, "api_key", json_string(secret));
            }
            ngx_explicit_memzero(secret, sizeof(secret));
            return NGX_OK;
        }

        if (del || ROUTE_IS(2, "revoke") || ROUTE_IS(2, "block")
            || ROUTE_IS(2, "unblock"))
        {
            if (json_object_size(body)) {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_BAD_REQUEST,
                           "unknown_parameter", NULL, "%s takes no fields",
                           "this route");
            }

            if (k.status == AISERVE_KEY_REVOKED) {
                return ngx_http_aiserve_admin_fail(e, NGX_HTTP_CONFLICT,
                           "key_revoked", NULL, "%s is revoked", obj);
            }

            k.status = (del || ROUTE_IS(2, "revoke")) ? AISERVE_KEY_REVOKED
                       : ROUTE_IS(2, "block") ? AISERVE_KEY_BLOCKED
                       : AISERVE_KEY_ACTIVE;

            rc = aiserve_ledger_key_put(ngx_http_aiserve_meter_ledger, &k);
            if (rc != AISERVE_LEDGER_OK) {
                return ngx_http_aiserve_admin_ledger_fail(rc, e);
            }

            ngx_http_aiserve_admin_audit(r,
                k.status == AISERVE_KEY_REVOKED ? "key.revoke"
                : k.status == AISERVE_KEY_BLOCKED ? "key.block"
                : "key.unblock", obj, del ? "DELETE" : NULL);
            *out = ngx_http_aiserve_admin_key_json(&k);
            if (*out && del) {
                json_object_set_new(*out, "deleted", json_true());
            }
            return NGX_OK;
        }
    }

not_found_or_method:

    return ngx_http_aiserve_admin_fail(e, NGX_HTTP_NOT_FOUND, "not_found",
                                       NULL, "no admin route %s",
                                       "for this method and path");

not_allowed:

    return ngx_http_aiserve_admin_fail(e, NGX_HTTP_NOT_ALLOWED,
                                       "method_not_allowed", NULL, "%s",
                                       "method not allowed on this route");

#undef ROUTE_IS
}


/* Splits the path below the location into at most 4 segments. */
static ngx_int_t
ngx_http_aiserve_admin_split(ngx_http_request_t *r, ngx_str_t *seg,
    ngx_uint_t *n)
{
    u_char                    *p, *last, *start;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    p = r->uri.data;
    last = p + r->uri.len;

    if (clcf->name.len <= r->uri.len
        && ngx_strncmp(p, clcf->name.data, clcf->name.len) == 0)
    {
        p += clcf->name.len;
    }

    *n = 0;
    ngx_memzero(seg, 4 * sizeof(ngx_str_t));

    while (p < last) {
        if (*p == '/') {
            p++;
            continue;
        }

        start = p;
        while (p < last && *p != '/') {
            p++;
        }

        if (*n == 4) {
            return NGX_ERROR;
        }

        seg[*n].data = start;
        seg[*n].len = p - start;
        (*n)++;
    }

    return NGX_OK;
}


static void
ngx_http_aiserve_meter_admin_body(ngx_http_request_t *r)
{
    size_t                         len;
    u_char                        *buf, *p;
    json_t                        *body, *out;
    ngx_int_t                      rc;
    ngx_str_t                      seg[4];
    ngx_uint_t                     n, status;
    ngx_chain_t                   *cl;
    json_error_t                   jerr;
    ngx_http_aiserve_admin_err_t   e;

    ngx_memzero(&e, sizeof(e));
    body = NULL;
    out = NULL;

    if (ngx_http_aiserve_admin_split(r, seg, &n) != NGX_OK) {
        ngx_http_aiserve_admin_fail(&e, NGX_HTTP_NOT_FOUND, "not_found",
                                    NULL, "%s", "no such admin route");
        goto failed;
    }

    if (r->args.len) {
        /* never ignored: GET keys?account_id=acct_2 would list every key */
        ngx_http_aiserve_admin_fail(&e, NGX_HTTP_BAD_REQUEST,
                                    "unknown_parameter", NULL, "%s",
                                    "the admin API takes no query "
                                    "parameters (an account's keys: GET "
                                    "accounts/ID/keys)");
        goto failed;
    }

    len = 0;

    if (r->request_body) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            if (cl->buf->in_file) {
                ngx_http_aiserve_admin_fail(&e,
                    NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "request_too_large",
                    NULL, "%s", "the request body is too large");
                goto failed;
            }
            len += cl->buf->last - cl->buf->pos;
        }
    }

    if (len > NGX_HTTP_AISERVE_ADMIN_BODY_MAX) {
        ngx_http_aiserve_admin_fail(&e, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "request_too_large", NULL, "%s",
                                    "the request body is too large");
        goto failed;
    }

    if (r->method == NGX_HTTP_POST && len) {
        buf = ngx_pnalloc(r->pool, len);
        if (buf == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        p = buf;
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
        }

        body = json_loadb((char *) buf, len, JSON_REJECT_DUPLICATES, &jerr);
        if (body == NULL || !json_is_object(body)) {
            ngx_http_aiserve_admin_fail(&e, NGX_HTTP_BAD_REQUEST,
                                        "invalid_json", NULL, "%s",
                                        "the body must be a JSON object");
            goto failed;
        }

    } else {
        body = json_object();
    }

    if (ngx_http_aiserve_admin_route(r, seg, n, body, &out, &status, &e)
        != NGX_OK)
    {
        goto failed;
    }

    json_decref(body);

    /* a new secret, or an account's limits: kept by no cache (RFC 6749
     * 5.1 asks the same of a token response) */
    if (ngx_http_aiserve_meter_header(r, "Cache-Control",
                                      (u_char *) "no-store",
                                      sizeof("no-store") - 1, NULL)
        != NGX_OK)
    {
        json_decref(out);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_finalize_request(r, ngx_http_aiserve_meter_send_json(r, status,
                                                                 out));
    return;

failed:

    /* e.param may name a field of the body: sent before the body goes */
    rc = ngx_http_aiserve_send_error(r, e.status,
                                     e.status == NGX_HTTP_NOT_FOUND
                                     ? "not_found_error"
                                     : e.status >= 500 ? "server_error"
                                     : "invalid_request_error",
                                     e.code, e.param, "%s", e.msg);
    json_decref(body);

    ngx_http_finalize_request(r, rc);
}


/* Content handler of aiserve_admin: an admin key first, then the route. */
ngx_int_t
ngx_http_aiserve_meter_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_http_aiserve_meter_ctx_t      *ctx;
    ngx_http_aiserve_meter_refusal_t   ref;

    if (!(r->method
          & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST|NGX_HTTP_DELETE)))
    {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_aiserve_meter_not_allowed(r,
                                                  "GET, HEAD, POST, DELETE",
                                                  "GET, POST or DELETE");
    }

    ngx_memzero(&ref, sizeof(ref));

    if (ngx_http_aiserve_meter_authenticate(r, &ctx, &ref) != NGX_OK) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
        return ref.status ? ngx_http_aiserve_meter_refuse(r, &ref)
                          : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!(ctx->key.flags & AISERVE_KEY_ADMIN)) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "aiserve meter: 403 admin route refused to key_%uD "
                      "(%s...)", ctx->key.id, ctx->key.prefix);

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        ref.status = NGX_HTTP_FORBIDDEN;
        ref.type = "permission_error";
        ref.code = "admin_key_required";
        ref.msg = "this route needs an admin key";
        return ngx_http_aiserve_meter_refuse(r, &ref);
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_aiserve_meter_admin_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}
