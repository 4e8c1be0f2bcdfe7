/*
 * ngx_http_aiserve_meter_module: admission (a request's tokens reserved
 * against its key's budget, rate and concurrency limits before any
 * compute, with the rate-limit headers) and settlement (the reservation
 * released and the usage added to the zone's row).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_aiserve_infer.h"
#include "ngx_http_aiserve_meter.h"


/* Whose limits a request is checked against: its key, and its account
 * when the account has limits of its own (the stricter one refuses). */
typedef struct {
    ngx_rbtree_key_t               node_key;   /* in the zone's keys tree */
    uint32_t                       id;
    ngx_uint_t                     account;
    uint64_t                       rpm;
    uint64_t                       tpm;
    uint64_t                       budget;
    uint32_t                       period;
    uint32_t                       max_concurrent;
    ngx_http_aiserve_meter_key_t  *st;
    uint64_t                       req_level;
    uint64_t                       tok_level;
} ngx_http_aiserve_meter_subject_t;


static void ngx_http_aiserve_meter_cleanup(void *data);


/* --- periods ------------------------------------------------------------- */

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


/*
 * Tokens of the key (or of every key of the account) in days [from, to]
 * that are in the zone but not in a ledger snapshot taken at flush_seq
 * seq.
 */
static uint64_t
ngx_http_aiserve_meter_unflushed_tokens(ngx_http_aiserve_meter_zone_t *z,
    ngx_http_aiserve_meter_subject_t *s, uint32_t from, uint32_t to,
    uint64_t seq)
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

        if ((s->account ? row->account_id : row->rk.key_id) != s->id
            || row->rk.day < from || row->rk.day > to)
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
 * The state of a key or an account in the zone, created or re-based when
 * its budget period changed (or training charges were written: see
 * ngx_http_aiserve_meter_training_check()): used = ledger tokens of the
 * period (prompt and trained, of every key of an account) + what its
 * fine-tuning jobs hold reserved + unflushed ones.  Called and returns with the zone
 * mutex held; drops it to read the ledger.
 */
static ngx_http_aiserve_meter_key_t *
ngx_http_aiserve_meter_key_state(ngx_http_request_t *r,
    ngx_http_aiserve_meter_zone_t *z, ngx_http_aiserve_meter_subject_t *k,
    uint32_t today)
{
    uint32_t                       kind, period, from, to;
    uint64_t                       s1, s2, tokens, held, gen;
    ngx_uint_t                     tries;
    ngx_http_aiserve_meter_key_t  *st;

    kind = k->budget ? k->period : AISERVE_PERIOD_NONE;
    period = ngx_http_aiserve_meter_period(kind, today);

    st = ngx_http_aiserve_meter_key_lookup(z, k->node_key);

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
        held = 0;
        s1 = 0;

        if (kind != AISERVE_PERIOD_NONE) {
            ngx_shmtx_unlock(&z->shpool->mutex);

            if (aiserve_ledger_flush_seq(ngx_http_aiserve_meter_ledger, &s1)
                != AISERVE_LEDGER_OK
                || (k->account
                    ? aiserve_ledger_account_tokens_used(
                          ngx_http_aiserve_meter_ledger, k->id, from, to,
                          &tokens)
                    : aiserve_ledger_tokens_used(
                          ngx_http_aiserve_meter_ledger, k->id, from, to,
                          &tokens))
                   != AISERVE_LEDGER_OK
                || aiserve_ledger_training_held(
                       ngx_http_aiserve_meter_ledger, k->id, k->account,
                       &held, &gen)
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

        st = ngx_http_aiserve_meter_key_lookup(z, k->node_key);

        if (st == NULL) {
            st = ngx_slab_calloc_locked(z->shpool,
                                        sizeof(ngx_http_aiserve_meter_key_t));
            if (st == NULL) {
                ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                              "aiserve meter: zone is full");
                return NULL;
            }

            st->node.key = k->node_key;
            st->key_id = k->id;
            st->last = ngx_current_msec;
            ngx_rbtree_insert(&z->sh->keys, &st->node);
        }

        st->budget_kind = kind;
        st->budget_period = period;
        st->used = (kind == AISERVE_PERIOD_NONE) ? 0
                   : tokens + held
                     + ngx_http_aiserve_meter_unflushed_tokens(z, k, from,
                                                                to, s1);

        return st;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "aiserve meter: ledger busy, cannot read %s_%uD budget",
                  k->account ? "acct" : "key", k->id);

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


/* Milliseconds since the request started (the clock itself, not nginx's
 * cached time: tokenizing happens within one turn of the event loop). */
static ngx_msec_t
ngx_http_aiserve_meter_elapsed_ms(ngx_http_request_t *r)
{
    struct timeval  tv;
    ngx_msec_int_t  ms;

    ngx_gettimeofday(&tv);

    ms = (ngx_msec_int_t) ((tv.tv_sec - r->start_sec) * 1000
                           + tv.tv_usec / 1000 - r->start_msec);

    return ms > 0 ? (ngx_msec_t) ms : 0;
}


/*
 * The usage headers of a settled response, as Text Embeddings Inference
 * sends them (milliseconds, whole): x-compute-tokens (prompt tokens),
 * x-compute-time (encoder time charged to the request), x-tokenization-time
 * (from the request's start to its admission: reading, parsing and
 * tokenizing), x-queue-time, x-inference-time (forward passes the request
 * was part of), x-total-time (start to now); and the cost:
 * x-aiserve-cost (micro-units of x-aiserve-currency, exact, three
 * decimals).
 */
static ngx_int_t
ngx_http_aiserve_meter_usage_headers(ngx_http_request_t *r,
    ngx_http_aiserve_meter_ctx_t *ctx, ngx_msec_int_t compute_usec)
{
    u_char                              buf[NGX_INT64_LEN + 8];
    ngx_uint_t                          i;
    ngx_msec_int_t                      v[6];
    ngx_http_aiserve_ctx_t             *actx;
    ngx_http_aiserve_meter_main_conf_t *mcf;
    static const char                  *names[] = {
        "x-compute-tokens", "x-compute-time", "x-tokenization-time",
        "x-queue-time", "x-inference-time", "x-total-time"
    };

    actx = ngx_http_get_module_ctx(r, ngx_http_aiserve_module);

    v[0] = ctx->tokens;
    v[1] = compute_usec / 1000;
    v[2] = ctx->admitted_ms;
    v[3] = actx ? actx->queue_usec / 1000 : 0;
    v[4] = actx ? actx->infer_usec / 1000 : 0;
    v[5] = ngx_http_aiserve_meter_elapsed_ms(r);

    for (i = 0; i < 6; i++) {
        if (ngx_http_aiserve_meter_header(r, names[i], buf,
                ngx_sprintf(buf, "%M", v[i] > 0 ? v[i] : 0) - buf, NULL)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_meter_module);

    if (ngx_http_aiserve_meter_header(r, "x-aiserve-cost", buf,
            ngx_sprintf(buf, "%uL.%03uL", ctx->cost_nano / 1000,
                        ctx->cost_nano % 1000) - buf, NULL)
        != NGX_OK
        || ngx_http_aiserve_meter_header(r, "x-aiserve-currency",
                                         mcf->currency.data,
                                         mcf->currency.len, NULL)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* --- admission and settlement --------------------------------------------- */

ngx_int_t
ngx_http_aiserve_meter_reserve(ngx_http_request_t *r, ngx_str_t *model,
    ngx_uint_t prompt_tokens)
{
    u_char                              *msg;
    uint32_t                             today;
    uint64_t                             need, left;
    ngx_uint_t                           i, nsubj;
    ngx_msec_t                           now, elapsed;
    ngx_pool_cleanup_t                  *cln;
    aiserve_key_t                       *k;
    aiserve_account_t                   *a;
    aiserve_row_key_t                    rk;
    ngx_http_aiserve_meter_row_t        *row;
    ngx_http_aiserve_meter_key_t        *st;
    ngx_http_aiserve_meter_subject_t     subj[2], *sj;
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

    if (!aiserve_key_model_allowed(k, (char *) model->data, model->len)
        || !aiserve_models_allowed(ctx->account.models,
                                   sizeof(ctx->account.models),
                                   (char *) model->data, model->len))
    {

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

    /* the message of a 429 for the budget, written under the zone's lock */
    msg = ngx_pnalloc(r->pool, 256);
    if (msg == NULL) {
        return NGX_ERROR;
    }

    today = ngx_http_aiserve_meter_today();
    need = prompt_tokens;
    now = ngx_current_msec;

    ngx_memzero(&lim, sizeof(lim));
    ngx_memzero(subj, sizeof(subj));

    subj[0].node_key = k->id;
    subj[0].id = k->id;
    subj[0].rpm = k->rpm;
    subj[0].tpm = k->tpm;
    subj[0].budget = k->budget_tokens;
    subj[0].period = k->budget_period;
    subj[0].max_concurrent = k->max_concurrent;
    nsubj = 1;

    a = &ctx->account;

    if (a->rpm || a->tpm || a->budget_tokens || a->max_concurrent) {
        subj[1].node_key = NGX_HTTP_AISERVE_METER_ACCOUNT | a->id;
        subj[1].id = a->id;
        subj[1].account = 1;
        subj[1].rpm = a->rpm;
        subj[1].tpm = a->tpm;
        subj[1].budget = a->budget_tokens;
        subj[1].period = a->budget_period;
        subj[1].max_concurrent = a->max_concurrent;
        nsubj = 2;
    }

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

    for (i = 0; i < nsubj; i++) {
        subj[i].st = ngx_http_aiserve_meter_key_state(r, z, &subj[i], today);
        if (subj[i].st == NULL) {
            break;
        }
    }

    /* the account's state may have been made while the key's was looked
     * up again (the mutex is dropped to read the ledger) */
    if (i == nsubj && nsubj == 2) {
        subj[0].st = ngx_http_aiserve_meter_key_lookup(z, subj[0].node_key);
    }

    if (i < nsubj || subj[0].st == NULL) {
        ngx_shmtx_unlock(&z->shpool->mutex);
        ref.status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ref.type = "server_error";
        ref.code = "meter_unavailable";
        ref.msg = "usage metering is unavailable, retry later";
        ref.retry_after = 1;
        goto refused;
    }

    for (i = 0; i < nsubj; i++) {
        sj = &subj[i];
        st = sj->st;

        elapsed = now - st->last;
        if ((ngx_msec_int_t) elapsed < 0) {
            elapsed = 0;
        }

        sj->req_level = ngx_http_aiserve_meter_leak(st->req_level, sj->rpm,
                                                    elapsed);
        sj->tok_level = ngx_http_aiserve_meter_leak(st->tok_level, sj->tpm,
                                                    elapsed);

        if (ref.status) {
            continue;
        }

        if (sj->budget && st->used + st->reserved + need > sj->budget) {
            ref.status = NGX_HTTP_TOO_MANY_REQUESTS;
            ref.type = "insufficient_quota";
            ref.code = "insufficient_quota";
            ref.retry_after = ngx_http_aiserve_meter_period_left(sj->period);

            /* what is left, so that a client can tell a spent budget from
             * a request too large for what remains */
            left = st->used + st->reserved >= sj->budget
                   ? 0 : sj->budget - st->used - st->reserved;

            if (left == 0) {
                ngx_snprintf(msg, 256, "the token budget of this %s is "
                             "exhausted (%uL tokens a %s)%Z",
                             sj->account ? "account" : "API key",
                             sj->budget,
                             sj->period == AISERVE_PERIOD_DAY
                             ? "day" : "month");

            } else {
                ngx_snprintf(msg, 256, "this request needs %uL tokens and "
                             "the token budget of this %s has %uL left %s "
                             "(of %uL)%Z", (uint64_t) need,
                             sj->account ? "account" : "API key", left,
                             sj->period == AISERVE_PERIOD_DAY
                             ? "today" : "this month", sj->budget);
            }

            ref.msg = (char *) msg;

        } else if (sj->max_concurrent && st->active >= sj->max_concurrent) {
            ref.status = NGX_HTTP_TOO_MANY_REQUESTS;
            ref.type = "requests";
            ref.code = "rate_limit_exceeded";
            ref.msg = sj->account
                      ? "too many concurrent requests for this account"
                      : "too many concurrent requests for this API key";
            ref.retry_after = 1;

        } else if (sj->rpm && sj->req_level + 1000 > sj->rpm * 1000) {
            ref.status = NGX_HTTP_TOO_MANY_REQUESTS;
            ref.type = "requests";
            ref.code = "rate_limit_exceeded";
            ref.msg = sj->account
                      ? "rate limit of this account reached for requests "
                        "per minute"
                      : "rate limit reached for requests per minute";
            ref.retry_after = (ngx_http_aiserve_meter_wait(sj->req_level,
                                   sj->rpm * 1000 - 1000, sj->rpm) + 999)
                              / 1000;

        } else if (sj->tpm && sj->tok_level + need * 1000 > sj->tpm * 1000) {
            ref.status = NGX_HTTP_TOO_MANY_REQUESTS;
            ref.type = "tokens";
            ref.code = "rate_limit_exceeded";
            ref.msg = need > sj->tpm
                      ? "request has more tokens than the tokens-per-minute "
                        "limit of this API key"
                      : sj->account
                        ? "rate limit of this account reached for tokens "
                          "per minute"
                        : "rate limit reached for tokens per minute";
            ref.retry_after = need > sj->tpm ? 60
                              : (ngx_http_aiserve_meter_wait(sj->tok_level,
                                     (sj->tpm - need) * 1000, sj->tpm) + 999)
                                / 1000;
        }
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
        ngx_http_aiserve_meter_row_key(r, model, today, &rk);

        resv = NULL;

        row = ngx_http_aiserve_meter_row_lookup(z, &rk, 1);

        if (row != NULL) {
            row->account_id = a->id;
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
        resv->account_node = nsubj == 2 ? subj[1].node_key : 0;
        resv->pid = ngx_pid;
        resv->tokens = need;
        ngx_queue_insert_tail(&z->sh->resv, &resv->queue);

        for (i = 0; i < nsubj; i++) {
            subj[i].req_level += 1000;
            subj[i].tok_level += need * 1000;
            subj[i].st->reserved += need;
            subj[i].st->active++;
        }

        ctx->resv = resv;
        ctx->reserved = 1;
        ctx->tokens = need;
        ctx->day = today;
        ctx->account_node = resv->account_node;
    }

    for (i = 0; i < nsubj; i++) {
        subj[i].st->req_level = subj[i].req_level;
        subj[i].st->tok_level = subj[i].tok_level;
        subj[i].st->last = now;
    }

    /* the headers tell the key's limits, or the account's where the key
     * has none of its own */
    sj = (nsubj == 2 && !k->rpm && !k->tpm && !k->budget_tokens)
         ? &subj[1] : &subj[0];
    st = sj->st;

    lim.rpm = sj->rpm;
    lim.tpm = sj->tpm;
    lim.budget = sj->budget;

    if (sj->rpm) {
        lim.req_remaining = sj->req_level >= sj->rpm * 1000
                            ? 0 : (sj->rpm * 1000 - sj->req_level) / 1000;
        lim.req_reset = ngx_http_aiserve_meter_wait(sj->req_level, 0,
                                                    sj->rpm);
    }

    if (sj->tpm) {
        lim.tok_remaining = sj->tok_level >= sj->tpm * 1000
                            ? 0 : (sj->tpm * 1000 - sj->tok_level) / 1000;
        lim.tok_reset = ngx_http_aiserve_meter_wait(sj->tok_level, 0,
                                                    sj->tpm);
    }

    if (sj->budget) {
        lim.budget_remaining = st->used + st->reserved >= sj->budget
                               ? 0 : sj->budget - st->used - st->reserved;
        lim.budget_reset = ngx_http_aiserve_meter_period_left(sj->period);
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

    ctx->admitted_ms = ngx_http_aiserve_meter_elapsed_ms(r);

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


/* Releases the reservation and adds the request to its usage row. */
static void
ngx_http_aiserve_meter_account(ngx_http_request_t *r,
    ngx_http_aiserve_meter_ctx_t *ctx, aiserve_usage_t *u)
{
    uint32_t                             today;
    ngx_uint_t                           i;
    aiserve_row_key_t                    rk;
    ngx_http_aiserve_meter_row_t        *row;
    ngx_http_aiserve_meter_key_t        *st;
    ngx_http_aiserve_meter_zone_t       *z;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_meter_module);
    z = mcf->shm_zone->data;

    today = ngx_http_aiserve_meter_today();

    ngx_http_aiserve_meter_row_key(r, &ctx->model, today, &rk);

    ngx_shmtx_lock(&z->shpool->mutex);

    for (i = 0; i < 2; i++) {
        st = ngx_http_aiserve_meter_key_lookup(z, i == 0 ? ctx->key.id
                                                         : ctx->account_node);

        if (st == NULL || (i == 1 && ctx->account_node == 0)) {
            continue;
        }

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
                      * ngx_http_aiserve_meter_price_of(mcf, &ctx->model, 0);
    }

    ctx->cost_nano = u.cost_nano;
    ctx->has_cost = 1;

    ngx_http_aiserve_meter_account(r, ctx, &u);
    ngx_http_aiserve_metrics_key(r, ctx->key.id, u.prompt_tokens, failed);

    if (!failed && !r->header_sent
        && ngx_http_aiserve_meter_usage_headers(r, ctx, compute_usec)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "aiserve meter: cannot add the usage headers");
    }

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
    ngx_http_aiserve_metrics_key(r, ctx->key.id, 0, 1);
}
