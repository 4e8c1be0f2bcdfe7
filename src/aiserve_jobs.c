/*
 * aiserve jobs: the store behind the fine-tuning API; see aiserve_jobs.h.
 */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <lmdb.h>
#include <openssl/rand.h>

#include "aiserve_jobs.h"


#define AISERVE_JOBS_KEY_MAX  (AISERVE_JOBS_ID_LEN + 8)

struct aiserve_jobs_s {
    MDB_env   *env;
    MDB_dbi    jobs;
    MDB_dbi    accounts;
    MDB_dbi    active;
    MDB_dbi    events;
    MDB_dbi    checkpoints;
};


static const char  aiserve_jobs_base62[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";


int
aiserve_jobs_final(const char *status)
{
    return strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0
           || strcmp(status, "cancelled") == 0;
}


/* PREFIX + 9 base62 digits of the time in microseconds + 15 random ones
 * into id (room for strlen(prefix) + 25). */
static int
aiserve_jobs_new_id(const char *prefix, char *id)
{
    size_t         n, i;
    uint64_t       us;
    unsigned char  rnd[15];
    struct timeval  tv;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return -1;
    }

    gettimeofday(&tv, NULL);
    us = (uint64_t) tv.tv_sec * 1000000 + tv.tv_usec;

    n = strlen(prefix);
    memcpy(id, prefix, n);

    for (i = 9; i > 0; i--) {
        id[n + i - 1] = aiserve_jobs_base62[us % 62];
        us /= 62;
    }

    for (i = 0; i < sizeof(rnd); i++) {
        /* 248 = 4 x 62: values at or above it would favour some digits */
        while (rnd[i] >= 248) {
            if (RAND_bytes(&rnd[i], 1) != 1) {
                return -1;
            }
        }
        id[n + 9 + i] = aiserve_jobs_base62[rnd[i] % 62];
    }

    id[n + 24] = '\0';
    return 0;
}


int
aiserve_jobs_new_job_id(char *id)
{
    return aiserve_jobs_new_id("ftjob-", id);
}


static int
aiserve_jobs_end(MDB_txn *txn, int rc)
{
    if (rc == 0) {
        return mdb_txn_commit(txn);
    }

    mdb_txn_abort(txn);
    return rc;
}


aiserve_jobs_t *
aiserve_jobs_open(const char *dir, size_t map_size, char *err,
    size_t err_len)
{
    int              rc;
    char             path[4200];
    MDB_txn         *txn;
    aiserve_jobs_t  *js;

    js = calloc(1, sizeof(aiserve_jobs_t));
    if (js == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }

    if (snprintf(path, sizeof(path), "%s/jobs.mdb", dir)
        >= (int) sizeof(path))
    {
        snprintf(err, err_len, "jobs directory \"%s\" is too long", dir);
        free(js);
        return NULL;
    }

    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        snprintf(err, err_len, "mkdir(\"%s\"): %s", path, strerror(errno));
        free(js);
        return NULL;
    }

    rc = mdb_env_create(&js->env);
    if (rc == 0) {
        mdb_env_set_maxdbs(js->env, 8);
        rc = mdb_env_set_mapsize(js->env, map_size ? map_size : 64 << 20);
    }

    if (rc == 0) {
        rc = mdb_env_open(js->env, path, MDB_NOTLS, 0600);
    }

    if (rc != 0) {
        snprintf(err, err_len, "mdb_env_open(\"%s\"): %s", path,
                 mdb_strerror(rc));
        goto failed;
    }

    rc = mdb_txn_begin(js->env, NULL, 0, &txn);
    if (rc != 0) {
        snprintf(err, err_len, "mdb_txn_begin(\"%s\"): %s", path,
                 mdb_strerror(rc));
        goto failed;
    }

    rc = mdb_dbi_open(txn, "jobs", MDB_CREATE, &js->jobs);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "accounts", MDB_CREATE, &js->accounts);
    }
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "active", MDB_CREATE, &js->active);
    }
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "events", MDB_CREATE, &js->events);
    }
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "checkpoints", MDB_CREATE, &js->checkpoints);
    }

    rc = aiserve_jobs_end(txn, rc);

    if (rc != 0) {
        snprintf(err, err_len, "mdb_dbi_open(\"%s\"): %s", path,
                 mdb_strerror(rc));
        goto failed;
    }

    return js;

failed:

    mdb_env_close(js->env);
    free(js);
    return NULL;
}


void
aiserve_jobs_close(aiserve_jobs_t *js)
{
    if (js) {
        mdb_env_close(js->env);
        free(js);
    }
}


/* --- records -------------------------------------------------------------- */

static void
aiserve_jobs_str_key(MDB_val *k, const char *id)
{
    k->mv_data = (void *) id;
    k->mv_size = strlen(id);
}


/* ID + n as 8 big-endian bytes into buf */
static void
aiserve_jobs_seq_key(MDB_val *k, unsigned char *buf, const char *id,
    uint64_t n)
{
    size_t  len, i;

    len = strlen(id);
    memcpy(buf, id, len);

    for (i = 0; i < 8; i++) {
        buf[len + i] = (unsigned char) (n >> (56 - 8 * i));
    }

    k->mv_data = buf;
    k->mv_size = len + 8;
}


/* account as 4 big-endian bytes + ID into buf */
static void
aiserve_jobs_account_key(MDB_val *k, unsigned char *buf, uint32_t account,
    const char *id)
{
    size_t  len;

    buf[0] = (unsigned char) (account >> 24);
    buf[1] = (unsigned char) (account >> 16);
    buf[2] = (unsigned char) (account >> 8);
    buf[3] = (unsigned char) account;

    len = strlen(id);
    memcpy(buf + 4, id, len);

    k->mv_data = buf;
    k->mv_size = 4 + len;
}


static json_t *
aiserve_jobs_parse(const MDB_val *v)
{
    return json_loadb(v->mv_data, v->mv_size, 0, NULL);
}


static int
aiserve_jobs_put_json(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, json_t *o)
{
    int       rc;
    char     *s;
    MDB_val   v;

    s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER
                      | JSON_REAL_PRECISION(17));
    if (s == NULL) {
        return ENOMEM;
    }

    v.mv_data = s;
    v.mv_size = strlen(s);

    rc = mdb_put(txn, dbi, k, &v, 0);
    free(s);
    return rc;
}


/* The record of id in txn: 0, MDB_NOTFOUND, or an error (a record that
 * is not JSON is EINVAL). */
static int
aiserve_jobs_read(aiserve_jobs_t *js, MDB_txn *txn, const char *id,
    json_t **job)
{
    int      rc;
    MDB_val  k, v;

    *job = NULL;
    aiserve_jobs_str_key(&k, id);

    rc = mdb_get(txn, js->jobs, &k, &v);
    if (rc != 0) {
        return rc;
    }

    *job = aiserve_jobs_parse(&v);
    return *job ? 0 : EINVAL;
}


static int
aiserve_jobs_write(aiserve_jobs_t *js, MDB_txn *txn, json_t *job)
{
    MDB_val  k;

    aiserve_jobs_str_key(&k, json_string_value(json_object_get(job, "id")));
    return aiserve_jobs_put_json(txn, js->jobs, &k, job);
}


static int64_t
aiserve_jobs_int(const json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}


uint32_t
aiserve_jobs_account(const json_t *job)
{
    return (uint32_t) aiserve_jobs_int(job, "_account");
}


json_t *
aiserve_jobs_public(const json_t *job)
{
    json_t      *o, *v;
    const char  *key;

    o = json_object();
    if (o == NULL) {
        return NULL;
    }

    json_object_foreach((json_t *) job, key, v) {
        if (key[0] != '_') {
            json_object_set(o, key, v);
        }
    }

    return o;
}


/* Appends an event to job (its counter "_events" advanced) in txn. */
static int
aiserve_jobs_add_event(aiserve_jobs_t *js, MDB_txn *txn, json_t *job,
    json_t *ev, int64_t now)
{
    int            rc;
    char           id[40];
    unsigned char  buf[AISERVE_JOBS_KEY_MAX];
    json_t        *e;
    MDB_val        k;
    uint64_t       seq;

    if (aiserve_jobs_new_id("ftevent-", id) != 0) {
        return EIO;
    }

    e = json_pack("{s:s,s:s,s:I,s:O?,s:O?,s:O?,s:O?}",
                  "object", "fine_tuning.job.event", "id", id,
                  "created_at", (json_int_t) now,
                  "level", json_object_get(ev, "level"),
                  "message", json_object_get(ev, "message"),
                  "type", json_object_get(ev, "type"),
                  "data", json_object_get(ev, "data"));
    if (e == NULL) {
        return ENOMEM;
    }

    if (!json_is_string(json_object_get(e, "level"))) {
        json_object_set_new(e, "level", json_string("info"));
    }
    if (!json_is_string(json_object_get(e, "type"))) {
        json_object_set_new(e, "type", json_string("message"));
    }
    if (!json_is_object(json_object_get(e, "data"))) {
        json_object_set_new(e, "data", json_object());
    }

    seq = aiserve_jobs_int(job, "_events");
    aiserve_jobs_seq_key(&k, buf, json_string_value(json_object_get(job,
                                                                    "id")),
                         seq);

    rc = aiserve_jobs_put_json(txn, js->events, &k, e);
    json_decref(e);

    if (rc == 0) {
        json_object_set_new(job, "_events", json_integer(seq + 1));
    }

    return rc;
}


static int
aiserve_jobs_message(aiserve_jobs_t *js, MDB_txn *txn, json_t *job,
    int64_t now, const char *level, const char *msg)
{
    int      rc;
    json_t  *ev;

    ev = json_pack("{s:s,s:s,s:s}", "level", level, "message", msg,
                   "type", "message");
    if (ev == NULL) {
        return ENOMEM;
    }

    rc = aiserve_jobs_add_event(js, txn, job, ev, now);
    json_decref(ev);
    return rc;
}


static int
aiserve_jobs_fail(int rc, const char *what, char *err, size_t err_len)
{
    if (rc == MDB_NOTFOUND) {
        return AISERVE_JOBS_NOTFOUND;
    }

    snprintf(err, err_len, "%s: %s", what,
             rc == EINVAL ? "a record is not JSON" : mdb_strerror(rc));
    return AISERVE_JOBS_ERROR;
}


/* --- jobs ----------------------------------------------------------------- */

/* The number of active jobs of account in txn. */
static int
aiserve_jobs_count_active(aiserve_jobs_t *js, MDB_txn *txn,
    uint32_t account, size_t *n)
{
    int          rc;
    json_t      *job;
    MDB_val      k, v, jv;
    MDB_cursor  *cur;

    *n = 0;

    rc = mdb_cursor_open(txn, js->active, &cur);
    if (rc != 0) {
        return rc;
    }

    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
    {
        if (mdb_get(txn, js->jobs, &k, &jv) != 0) {
            continue;
        }

        job = aiserve_jobs_parse(&jv);
        if (job && aiserve_jobs_account(job) == account) {
            (*n)++;
        }
        json_decref(job);
    }

    mdb_cursor_close(cur);

    return rc == MDB_NOTFOUND ? 0 : rc;
}


int
aiserve_jobs_create(aiserve_jobs_t *js, json_t *job, uint32_t account,
    size_t max_active, int64_t now, char *err, size_t err_len)
{
    int            rc, active;
    char           id[AISERVE_JOBS_ID_LEN + 1], org[32];
    unsigned char  buf[4 + AISERVE_JOBS_ID_LEN];
    size_t         n;
    MDB_val        k, v;
    MDB_txn       *txn;
    const char    *key, *status, *nulls[] = { "finished_at",
                                              "fine_tuned_model",
                                              "estimated_finish", "error" };
    size_t         i;

    key = json_string_value(json_object_get(job, "id"));

    if (key && strlen(key) == AISERVE_JOBS_ID_LEN
        && strncmp(key, "ftjob-", 6) == 0)
    {
        memcpy(id, key, AISERVE_JOBS_ID_LEN + 1);

    } else if (aiserve_jobs_new_id("ftjob-", id) != 0) {
        snprintf(err, err_len, "RAND_bytes failed");
        return AISERVE_JOBS_ERROR;
    }

    status = json_string_value(json_object_get(job, "status"));
    if (status == NULL) {
        status = "queued";
    }

    active = !aiserve_jobs_final(status);

    snprintf(org, sizeof(org), "acct_%u", account);

    json_object_set_new(job, "object", json_string("fine_tuning.job"));
    json_object_set_new(job, "id", json_string(id));
    json_object_set_new(job, "created_at", json_integer(now));
    json_object_set_new(job, "organization_id", json_string(org));
    json_object_set_new(job, "status", json_string(status));

    for (i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++) {
        if (json_object_get(job, nulls[i]) == NULL) {
            json_object_set_new(job, nulls[i], json_null());
        }
    }

    if (!active) {
        json_object_set_new(job, "finished_at", json_integer(now));
    }

    if (json_object_get(job, "trained_tokens") == NULL) {
        json_object_set_new(job, "trained_tokens", json_null());
    }
    if (json_object_get(job, "result_files") == NULL) {
        json_object_set_new(job, "result_files", json_array());
    }

    json_object_set_new(job, "_account", json_integer(account));
    json_object_set_new(job, "_events", json_integer(0));

    rc = mdb_txn_begin(js->env, NULL, 0, &txn);
    if (rc != 0) {
        return aiserve_jobs_fail(rc, "mdb_txn_begin", err, err_len);
    }

    if (active && max_active) {
        rc = aiserve_jobs_count_active(js, txn, account, &n);
        if (rc != 0) {
            mdb_txn_abort(txn);
            return aiserve_jobs_fail(rc, "counting jobs", err, err_len);
        }

        if (n >= max_active) {
            mdb_txn_abort(txn);
            snprintf(err, err_len, "the account has %zu jobs queued or "
                     "running, the most it may have", n);
            return AISERVE_JOBS_LIMIT;
        }
    }

    rc = aiserve_jobs_message(js, txn, job, now, "info",
                              "Created fine-tuning job");

    if (rc == 0 && !active) {
        rc = aiserve_jobs_message(js, txn, job, now, "error",
                 json_string_value(json_object_get(json_object_get(job,
                                                           "error"),
                                                   "message")));
    }

    if (rc == 0) {
        rc = aiserve_jobs_write(js, txn, job);
    }

    if (rc == 0) {
        aiserve_jobs_account_key(&k, buf, account, id);
        v.mv_data = "";
        v.mv_size = 0;
        rc = mdb_put(txn, js->accounts, &k, &v, 0);
    }

    if (rc == 0 && active) {
        aiserve_jobs_str_key(&k, id);
        rc = mdb_put(txn, js->active, &k, &v, 0);
    }

    rc = aiserve_jobs_end(txn, rc);
    if (rc != 0) {
        return aiserve_jobs_fail(rc, "adding a job", err, err_len);
    }

    return AISERVE_JOBS_OK;
}


int
aiserve_jobs_get(aiserve_jobs_t *js, const char *id, json_t **job,
    char *err, size_t err_len)
{
    int       rc;
    MDB_txn  *txn;

    rc = mdb_txn_begin(js->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return aiserve_jobs_fail(rc, "mdb_txn_begin", err, err_len);
    }

    rc = aiserve_jobs_read(js, txn, id, job);
    mdb_txn_abort(txn);

    if (rc != 0) {
        return aiserve_jobs_fail(rc, "reading a job", err, err_len);
    }

    return AISERVE_JOBS_OK;
}


/* Whether JOB's metadata passes the filter WANT (aiserve_jobs_list()). */
static int
aiserve_jobs_meta_match(const json_t *job, const json_t *want)
{
    json_t      *have, *v;
    const char  *k, *s;

    have = json_object_get(job, "metadata");

    if (json_is_null(want)) {
        return have == NULL || json_is_null(have)
               || (json_is_object(have) && json_object_size(have) == 0);
    }

    json_object_foreach((json_t *) want, k, v) {
        s = json_string_value(json_object_get(have, k));
        if (s == NULL || strcmp(s, json_string_value(v)) != 0) {
            return 0;
        }
    }

    return 1;
}


int
aiserve_jobs_list(aiserve_jobs_t *js, uint32_t account, const char *after,
    const json_t *metadata, size_t limit, json_t *out, int *has_more,
    char *err, size_t err_len)
{
    int            rc;
    unsigned char  buf[4 + AISERVE_JOBS_ID_LEN + 1], *kd;
    char           id[AISERVE_JOBS_ID_LEN + 1];
    size_t         n;
    json_t        *job;
    MDB_val        k, v, jv;
    MDB_dbi        dbi;
    MDB_txn       *txn;
    MDB_cursor    *cur;
    size_t         skip;

    *has_more = 0;

    rc = mdb_txn_begin(js->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return aiserve_jobs_fail(rc, "mdb_txn_begin", err, err_len);
    }

    /* one account: its index, from (account, after) or (account + 1)
     * backwards; every account: the jobs, from after or the last */
    dbi = account ? js->accounts : js->jobs;
    skip = account ? 4 : 0;

    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return aiserve_jobs_fail(rc, "mdb_cursor_open", err, err_len);
    }

    if (account) {
        aiserve_jobs_account_key(&k, buf, after ? account : account + 1,
                                 after ? after : "");
        if (account == UINT32_MAX && after == NULL) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);

        } else {
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
            rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
                         : mdb_cursor_get(cur, &k, &v, MDB_LAST);
        }

    } else if (after) {
        aiserve_jobs_str_key(&k, after);
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
                     : mdb_cursor_get(cur, &k, &v, MDB_LAST);

    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    }

    for (n = 0; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
        kd = k.mv_data;

        if (account) {
            if (k.mv_size != 4 + AISERVE_JOBS_ID_LEN
                || (((uint32_t) kd[0] << 24) | ((uint32_t) kd[1] << 16)
                    | ((uint32_t) kd[2] << 8) | kd[3]) != account)
            {
                rc = MDB_NOTFOUND;
                break;
            }
        }

        if (k.mv_size - skip != AISERVE_JOBS_ID_LEN) {
            continue;
        }

        if (n == limit && metadata == NULL) {
            *has_more = 1;
            break;
        }

        memcpy(id, kd + skip, AISERVE_JOBS_ID_LEN);
        id[AISERVE_JOBS_ID_LEN] = '\0';

        if (account) {
            aiserve_jobs_str_key(&jv, id);
            if (mdb_get(txn, js->jobs, &jv, &v) != 0) {
                continue;
            }
        }

        job = aiserve_jobs_parse(&v);
        if (job == NULL) {
            continue;
        }

        if (metadata != NULL && !aiserve_jobs_meta_match(job, metadata)) {
            json_decref(job);
            continue;
        }

        /* a filtered list knows of more once it found one */
        if (n == limit) {
            json_decref(job);
            *has_more = 1;
            break;
        }

        json_array_append_new(out, aiserve_jobs_public(job));
        json_decref(job);
        n++;
    }

    mdb_cursor_close(cur);
    mdb_txn_abort(txn);

    if (rc != 0 && rc != MDB_NOTFOUND) {
        return aiserve_jobs_fail(rc, "listing jobs", err, err_len);
    }

    return AISERVE_JOBS_OK;
}


/* Ends job in txn with status at now: finished_at, no lease, not active */
static int
aiserve_jobs_finish(aiserve_jobs_t *js, MDB_txn *txn, json_t *job,
    const char *status, int64_t now)
{
    int      rc;
    MDB_val  k;

    json_object_set_new(job, "status", json_string(status));
    json_object_set_new(job, "finished_at", json_integer(now));
    json_object_set_new(job, "estimated_finish", json_null());
    json_object_del(job, "_lease");

    aiserve_jobs_str_key(&k, json_string_value(json_object_get(job, "id")));
    rc = mdb_del(txn, js->active, &k, NULL);

    return rc == MDB_NOTFOUND ? 0 : rc;
}


int
aiserve_jobs_cancel(aiserve_jobs_t *js, const char *id, int64_t now,
    json_t **job, char *err, size_t err_len)
{
    int       rc;
    MDB_txn  *txn;

    *job = NULL;

    rc = mdb_txn_begin(js->env, NULL, 0, &txn);
    if (rc != 0) {
        return aiserve_jobs_fail(rc, "mdb_txn_begin", err, err_len);
    }

    rc = aiserve_jobs_read(js, txn, id, job);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return aiserve_jobs_fail(rc, "reading a job", err, err_len);
    }

    if (aiserve_jobs_final(json_string_value(json_object_get(*job,
                                                             "status"))))
    {
        mdb_txn_abort(txn);
        return AISERVE_JOBS_CONFLICT;
    }

    rc = aiserve_jobs_finish(js, txn, *job, "cancelled", now);

    if (rc == 0) {
        rc = aiserve_jobs_message(js, txn, *job, now, "info",
                                  "Fine-tuning job cancelled");
    }

    if (rc == 0) {
        rc = aiserve_jobs_write(js, txn, *job);
    }

    rc = aiserve_jobs_end(txn, rc);
    if (rc != 0) {
        return aiserve_jobs_fail(rc, "cancelling a job", err, err_len);
    }

    return AISERVE_JOBS_OK;
}


/* 1 when job's lease is live at now_ms: not expired and its process
 * exists */
static int
aiserve_jobs_leased(const json_t *job, int64_t now_ms)
{
    int      pid;
    json_t  *lease;

    lease = json_object_get(job, "_lease");
    if (lease == NULL) {
        return 0;
    }

    pid = (int) aiserve_jobs_int(lease, "pid");

    if (aiserve_jobs_int(lease, "expires_ms") <= now_ms) {
        return 0;
    }

    return !(pid > 0 && kill(pid, 0) == -1 && errno == ESRCH);
}


int
aiserve_jobs_claim(aiserve_jobs_t *js, int pid, int64_t now_ms,
    int64_t lease_ms, size_t max_running, json_t **job, char *err,
    size_t err_len)
{
    int          rc;
    size_t       running;
    json_t      *j, *pick;
    MDB_val      k, v, jv;
    MDB_txn     *txn;
    MDB_cursor  *cur;

    *job = NULL;
    pick = NULL;
    running = 0;

    rc = mdb_txn_begin(js->env, NULL, 0, &txn);
    if (rc != 0) {
        return aiserve_jobs_fail(rc, "mdb_txn_begin", err, err_len);
    }

    rc = mdb_cursor_open(txn, js->active, &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return aiserve_jobs_fail(rc, "mdb_cursor_open", err, err_len);
    }

    /* the active jobs in creation order: count the live leases, pick the
     * first without one */
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
    {
        if (mdb_get(txn, js->jobs, &k, &jv) != 0) {
            continue;
        }

        j = aiserve_jobs_parse(&jv);
        if (j == NULL) {
            continue;
        }

        if (aiserve_jobs_leased(j, now_ms)) {
            running++;
            json_decref(j);

        } else if (pick == NULL) {
            pick = j;

        } else {
            json_decref(j);
        }
    }

    mdb_cursor_close(cur);

    if (rc != MDB_NOTFOUND) {
        json_decref(pick);
        mdb_txn_abort(txn);
        return aiserve_jobs_fail(rc, "claiming a job", err, err_len);
    }

    if (pick == NULL || (max_running && running >= max_running)) {
        json_decref(pick);
        mdb_txn_abort(txn);
        return AISERVE_JOBS_NOTFOUND;
    }

    if (json_object_get(pick, "_lease")) {
        json_object_set_new(pick, "_takeovers",
            json_integer(aiserve_jobs_int(pick, "_takeovers") + 1));
    }

    json_object_set_new(pick, "_lease",
                        json_pack("{s:i,s:I}", "pid", pid, "expires_ms",
                                  (json_int_t) (now_ms + lease_ms)));

    rc = aiserve_jobs_write(js, txn, pick);
    rc = aiserve_jobs_end(txn, rc);

    if (rc != 0) {
        json_decref(pick);
        return aiserve_jobs_fail(rc, "claiming a job", err, err_len);
    }

    *job = pick;
    return AISERVE_JOBS_OK;
}


/* 1 when pid holds job's lease */
static int
aiserve_jobs_holder(const json_t *job, int pid)
{
    json_t  *lease;

    lease = json_object_get(job, "_lease");
    return lease && aiserve_jobs_int(lease, "pid") == pid;
}


int
aiserve_jobs_update(aiserve_jobs_t *js, const char *id, int pid,
    int64_t now_ms, int64_t lease_ms, const aiserve_jobs_update_t *u,
    json_t **job, char *err, size_t err_len)
{
    int            rc;
    unsigned char  buf[AISERVE_JOBS_KEY_MAX];
    char           cid[40];
    size_t         i;
    json_t        *j, *c, *lease;
    int64_t        now;
    MDB_val        k;
    MDB_txn       *txn;

    if (job) {
        *job = NULL;
    }

    now = now_ms / 1000;

    rc = mdb_txn_begin(js->env, NULL, 0, &txn);
    if (rc != 0) {
        return aiserve_jobs_fail(rc, "mdb_txn_begin", err, err_len);
    }

    rc = aiserve_jobs_read(js, txn, id, &j);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return aiserve_jobs_fail(rc, "reading a job", err, err_len);
    }

    if (aiserve_jobs_final(json_string_value(json_object_get(j, "status")))
        || !aiserve_jobs_holder(j, pid))
    {
        mdb_txn_abort(txn);
        if (job) {
            *job = j;
        } else {
            json_decref(j);
        }
        return AISERVE_JOBS_CONFLICT;
    }

    if (u->set) {
        json_object_update(j, u->set);
    }

    for (i = 0; rc == 0 && u->events && i < json_array_size(u->events);
         i++)
    {
        rc = aiserve_jobs_add_event(js, txn, j,
                                    json_array_get(u->events, i), now);
    }

    if (rc == 0 && u->checkpoint) {
        c = json_deep_copy(u->checkpoint);

        if (c == NULL || aiserve_jobs_new_id("ftckpt-", cid) != 0) {
            rc = ENOMEM;

        } else {
            json_object_set_new(c, "object", json_string(
                                "fine_tuning.job.checkpoint"));
            json_object_set_new(c, "id", json_string(cid));
            json_object_set_new(c, "created_at", json_integer(now));
            json_object_set_new(c, "fine_tuning_job_id", json_string(id));

            aiserve_jobs_seq_key(&k, buf, id,
                                 aiserve_jobs_int(c, "step_number"));
            rc = aiserve_jobs_put_json(txn, js->checkpoints, &k, c);

            if (rc == 0) {
                json_object_set(j, "_checkpoint", c);
            }
        }

        json_decref(c);
    }

    if (rc == 0 && u->status) {
        if (aiserve_jobs_final(u->status)) {
            rc = aiserve_jobs_finish(js, txn, j, u->status, now);

        } else {
            json_object_set_new(j, "status", json_string(u->status));
        }
    }

    if (rc == 0 && (u->status == NULL || !aiserve_jobs_final(u->status))) {
        lease = json_pack("{s:i,s:I}", "pid", pid, "expires_ms",
                          (json_int_t) (now_ms + lease_ms));
        rc = lease ? json_object_set_new(j, "_lease", lease) : ENOMEM;
    }

    if (rc == 0) {
        rc = aiserve_jobs_write(js, txn, j);
    }

    rc = aiserve_jobs_end(txn, rc);

    if (rc != 0) {
        json_decref(j);
        return aiserve_jobs_fail(rc, "updating a job", err, err_len);
    }

    if (job) {
        *job = j;
    } else {
        json_decref(j);
    }

    return AISERVE_JOBS_OK;
}


int
aiserve_jobs_release(aiserve_jobs_t *js, const char *id, int pid,
    char *err, size_t err_len)
{
    int       rc;
    json_t   *j;
    MDB_txn  *txn;

    rc = mdb_txn_begin(js->env, NULL, 0, &txn);
    if (rc != 0) {
        return aiserve_jobs_fail(rc, "mdb_txn_begin", err, err_len);
    }

    rc = aiserve_jobs_read(js, txn, id, &j);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return aiserve_jobs_fail(rc, "reading a job", err, err_len);
    }

    if (!aiserve_jobs_holder(j, pid)) {
        json_decref(j);
        mdb_txn_abort(txn);
        return AISERVE_JOBS_CONFLICT;
    }

    json_object_del(j, "_lease");

    rc = aiserve_jobs_write(js, txn, j);
    rc = aiserve_jobs_end(txn, rc);
    json_decref(j);

    if (rc != 0) {
        return aiserve_jobs_fail(rc, "releasing a job", err, err_len);
    }

    return AISERVE_JOBS_OK;
}


/* --- events and checkpoints ----------------------------------------------- */

static int
aiserve_jobs_walk(aiserve_jobs_t *js, MDB_dbi dbi, const char *id,
    const char *after, size_t limit, json_t *out, int *has_more, char *err,
    size_t err_len)
{
    int            rc, found;
    unsigned char  buf[AISERVE_JOBS_KEY_MAX];
    size_t         n, len;
    json_t        *o;
    MDB_val        k, v;
    MDB_txn       *txn;
    MDB_cursor    *cur;

    *has_more = 0;
    len = strlen(id);

    rc = mdb_txn_begin(js->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return aiserve_jobs_fail(rc, "mdb_txn_begin", err, err_len);
    }

    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return aiserve_jobs_fail(rc, "mdb_cursor_open", err, err_len);
    }

    /* the last key of id: the first after id + 0xff..ff, one back */
    aiserve_jobs_seq_key(&k, buf, id, UINT64_MAX);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
                 : mdb_cursor_get(cur, &k, &v, MDB_LAST);

    found = after == NULL;

    for (n = 0; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
        if (k.mv_size != len + 8 || memcmp(k.mv_data, id, len) != 0) {
            break;
        }

        o = aiserve_jobs_parse(&v);
        if (o == NULL) {
            continue;
        }

        if (!found) {
            found = strcmp(json_string_value(json_object_get(o, "id")),
                           after) == 0;
            json_decref(o);
            continue;
        }

        if (n == limit) {
            *has_more = 1;
            json_decref(o);
            break;
        }

        json_array_append_new(out, aiserve_jobs_public(o));
        json_decref(o);
        n++;
    }

    mdb_cursor_close(cur);
    mdb_txn_abort(txn);

    if (rc != 0 && rc != MDB_NOTFOUND) {
        return aiserve_jobs_fail(rc, "listing", err, err_len);
    }

    return AISERVE_JOBS_OK;
}


int
aiserve_jobs_events(aiserve_jobs_t *js, const char *id, const char *after,
    size_t limit, json_t *out, int *has_more, char *err, size_t err_len)
{
    return aiserve_jobs_walk(js, js->events, id, after, limit, out, has_more,
                             err, err_len);
}


int
aiserve_jobs_checkpoints(aiserve_jobs_t *js, const char *id,
    const char *after, size_t limit, json_t *out, int *has_more, char *err,
    size_t err_len)
{
    return aiserve_jobs_walk(js, js->checkpoints, id, after, limit, out,
                             has_more, err, err_len);
}


/* --- results -------------------------------------------------------------- */

/* a row of the results CSV: the values of one step */
typedef struct {
    int64_t   step;
    int64_t   trained_tokens;
    int64_t   epoch;
    double    train_loss;
    double    learning_rate;
    double    valid_loss;
    double    accuracy;
    double    f1;
    unsigned  has;              /* AISERVE_JOBS_HAS_* */
} aiserve_jobs_row_t;

#define AISERVE_JOBS_HAS_TRAIN_LOSS      0x01
#define AISERVE_JOBS_HAS_LEARNING_RATE   0x02
#define AISERVE_JOBS_HAS_TRAINED_TOKENS  0x04
#define AISERVE_JOBS_HAS_EPOCH           0x08
#define AISERVE_JOBS_HAS_VALID_LOSS      0x10
#define AISERVE_JOBS_HAS_ACCURACY        0x20
#define AISERVE_JOBS_HAS_F1              0x40


/* Takes the metrics of event ev into rows (*n of them, room for cap),
 * kept in step order. */
static void
aiserve_jobs_row_add(aiserve_jobs_row_t *rows, size_t *n, size_t cap,
    const json_t *ev)
{
    size_t               i;
    json_t              *d, *x;
    int64_t              step;
    aiserve_jobs_row_t  *r;

    d = json_object_get(ev, "data");

    if (!json_is_string(json_object_get(ev, "type"))
        || strcmp(json_string_value(json_object_get(ev, "type")), "metrics")
           != 0
        || !json_is_integer(json_object_get(d, "step")))
    {
        return;
    }

    step = json_integer_value(json_object_get(d, "step"));

    /* steps come in order but after a resume: from the end */
    for (i = *n; i > 0 && rows[i - 1].step > step; i--) {
        /* void */
    }

    if (i > 0 && rows[i - 1].step == step) {
        r = &rows[i - 1];

    } else {
        if (*n == cap) {
            return;
        }
        memmove(&rows[i + 1], &rows[i], (*n - i) * sizeof(rows[0]));
        (*n)++;
        r = &rows[i];
        memset(r, 0, sizeof(*r));
        r->step = step;
    }

#define aiserve_jobs_take(name, field, flag, get)                            \
    x = json_object_get(d, name);                                            \
    if (json_is_number(x)) {                                                 \
        r->field = get(x);                                                   \
        r->has |= flag;                                                      \
    }

    aiserve_jobs_take("train_loss", train_loss, AISERVE_JOBS_HAS_TRAIN_LOSS,
                      json_number_value);
    aiserve_jobs_take("learning_rate", learning_rate,
                      AISERVE_JOBS_HAS_LEARNING_RATE, json_number_value);
    aiserve_jobs_take("trained_tokens", trained_tokens,
                      AISERVE_JOBS_HAS_TRAINED_TOKENS, json_integer_value);
    aiserve_jobs_take("epoch", epoch, AISERVE_JOBS_HAS_EPOCH,
                      json_integer_value);
    aiserve_jobs_take("valid_loss", valid_loss, AISERVE_JOBS_HAS_VALID_LOSS,
                      json_number_value);
    aiserve_jobs_take("accuracy", accuracy, AISERVE_JOBS_HAS_ACCURACY,
                      json_number_value);
    aiserve_jobs_take("f1", f1, AISERVE_JOBS_HAS_F1, json_number_value);

#undef aiserve_jobs_take
}


int
aiserve_jobs_results_csv(aiserve_jobs_t *js, const char *id,
    const json_t *pending, char **csv, size_t *len, char *err,
    size_t err_len)
{
    int                  more, rc;
    char                *text;
    size_t               i, n, cap, size;
    FILE                *out;
    json_t              *stored;
    aiserve_jobs_row_t  *rows, *r;

    *csv = NULL;
    *len = 0;

    stored = json_array();
    if (stored == NULL) {
        snprintf(err, err_len, "out of memory");
        return AISERVE_JOBS_ERROR;
    }

    rc = aiserve_jobs_events(js, id, NULL, SIZE_MAX, stored, &more, err,
                             err_len);
    if (rc != AISERVE_JOBS_OK) {
        json_decref(stored);
        return rc;
    }

    cap = json_array_size(stored) + json_array_size(pending) + 1;
    rows = malloc(cap * sizeof(aiserve_jobs_row_t));
    text = NULL;
    size = 0;
    out = rows ? open_memstream(&text, &size) : NULL;

    if (out == NULL) {
        free(rows);
        json_decref(stored);
        snprintf(err, err_len, "out of memory");
        return AISERVE_JOBS_ERROR;
    }

    n = 0;

    /* stored newest first: read back to front */
    for (i = json_array_size(stored); i > 0; i--) {
        aiserve_jobs_row_add(rows, &n, cap, json_array_get(stored, i - 1));
    }

    for (i = 0; i < json_array_size(pending); i++) {
        aiserve_jobs_row_add(rows, &n, cap, json_array_get(pending, i));
    }

    json_decref(stored);

    fputs("step,train_loss,learning_rate,trained_tokens,epoch,valid_loss,"
          "valid_accuracy,valid_f1\n", out);

    for (i = 0; i < n; i++) {
        r = &rows[i];

        fprintf(out, "%lld,", (long long) r->step);

#define aiserve_jobs_put(flag, fmt, v, sep)                                  \
        if (r->has & flag) {                                                 \
            fprintf(out, fmt, v);                                            \
        }                                                                    \
        fputs(sep, out);

        aiserve_jobs_put(AISERVE_JOBS_HAS_TRAIN_LOSS, "%.6g", r->train_loss,
                         ",");
        aiserve_jobs_put(AISERVE_JOBS_HAS_LEARNING_RATE, "%.6g",
                         r->learning_rate, ",");
        aiserve_jobs_put(AISERVE_JOBS_HAS_TRAINED_TOKENS, "%lld",
                         (long long) r->trained_tokens, ",");
        aiserve_jobs_put(AISERVE_JOBS_HAS_EPOCH, "%lld",
                         (long long) r->epoch, ",");
        aiserve_jobs_put(AISERVE_JOBS_HAS_VALID_LOSS, "%.6g", r->valid_loss,
                         ",");
        aiserve_jobs_put(AISERVE_JOBS_HAS_ACCURACY, "%.6g", r->accuracy,
                         ",");
        aiserve_jobs_put(AISERVE_JOBS_HAS_F1, "%.6g", r->f1, "\n");

#undef aiserve_jobs_put
    }

    free(rows);

    if (fclose(out) != 0 || text == NULL) {
        free(text);
        snprintf(err, err_len, "out of memory");
        return AISERVE_JOBS_ERROR;
    }

    *csv = text;
    *len = size;

    return AISERVE_JOBS_OK;
}
