/*
 * aiserve ledger: API keys and usage rows in LMDB.  See aiserve_ledger.h
 * for the schema and the LMDB caveats followed.
 */
#include "aiserve_ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define AISERVE_LEDGER_VERSION     3
#define AISERVE_LEDGER_MAXREADERS  1022
#define AISERVE_LEDGER_MAP_DEFAULT (1024 * 1024)
#define AISERVE_ROW_KEY_LEN        (8 + 1 + AISERVE_API_MAX + 8             \
                                    + AISERVE_MODEL_MAX)
/* a version 2 row key: key id BE, day BE, model */
#define AISERVE_ROW_KEY_V2_LEN     (8 + 64)

struct aiserve_ledger_s {
    MDB_env   *env;
    MDB_dbi    meta;
    MDB_dbi    keys;
    MDB_dbi    hashes;
    MDB_dbi    usage;
    MDB_dbi    accounts;
    MDB_dbi    audit;
    MDB_dbi    training;
    MDB_txn   *rtxn;          /* reusable read txn (MDB_NOTLS), reset */
    MDB_txn   *wtxn;          /* flush in progress */
    size_t     max_map;       /* cap for key writes, 0: none */
    int        has_pepper;
    uint8_t    pepper[AISERVE_PEPPER_LEN];
    char       err[256];
};

static const char  base62[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";


static int
ledger_fail(aiserve_ledger_t *l, int rc, const char *fmt, ...)
{
    va_list  ap;
    size_t   n;

    va_start(ap, fmt);
    vsnprintf(l->err, sizeof(l->err), fmt, ap);
    va_end(ap);

    if (rc != 0 && rc != MDB_MAP_FULL) {
        n = strlen(l->err);
        snprintf(l->err + n, sizeof(l->err) - n, ": %s", mdb_strerror(rc));
    }

    if (rc == MDB_MAP_FULL) {
        n = strlen(l->err);
        snprintf(l->err + n, sizeof(l->err) - n, ": ledger map is full");
        return AISERVE_LEDGER_FULL;
    }

    return AISERVE_LEDGER_ERROR;
}


const char *
aiserve_ledger_error(aiserve_ledger_t *l)
{
    return l->err;
}


int
aiserve_ledger_read_pepper(const char *path,
    uint8_t pepper[AISERVE_PEPPER_LEN], char *err, size_t errlen)
{
    char     file[4096];
    int      fd;
    ssize_t  n;

    snprintf(file, sizeof(file), "%s/hmac.key", path);

    fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        snprintf(err, errlen, "open(\"%s\") failed: %s", file,
                 strerror(errno));
        return AISERVE_LEDGER_ERROR;
    }

    n = read(fd, pepper, AISERVE_PEPPER_LEN);
    close(fd);

    if (n != AISERVE_PEPPER_LEN) {
        snprintf(err, errlen, "\"%s\" is not %d bytes", file,
                 AISERVE_PEPPER_LEN);
        return AISERVE_LEDGER_ERROR;
    }

    return AISERVE_LEDGER_OK;
}


static int
ledger_create_pepper(const char *path, char *err, size_t errlen)
{
    char     file[4096];
    uint8_t  pepper[AISERVE_PEPPER_LEN];
    int      fd;

    snprintf(file, sizeof(file), "%s/hmac.key", path);

    fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd == -1) {
        if (errno == EEXIST) {
            return AISERVE_LEDGER_OK;
        }
        snprintf(err, errlen, "open(\"%s\") failed: %s", file,
                 strerror(errno));
        return AISERVE_LEDGER_ERROR;
    }

    if (RAND_bytes(pepper, sizeof(pepper)) != 1
        || write(fd, pepper, sizeof(pepper)) != (ssize_t) sizeof(pepper)
        || fsync(fd) != 0)
    {
        snprintf(err, errlen, "cannot write \"%s\"", file);
        close(fd);
        unlink(file);
        return AISERVE_LEDGER_ERROR;
    }

    OPENSSL_cleanse(pepper, sizeof(pepper));
    close(fd);

    return AISERVE_LEDGER_OK;
}


/* Creates path with mode 0700, and the directories above it that are
 * missing with mode 0755, as nginx's ngx_create_full_path() does for its
 * temp paths. */
static int
ledger_mkdir(const char *path, char *err, size_t errlen)
{
    char    dir[4096];
    size_t  i, len;

    len = strlen(path);

    if (len == 0 || len >= sizeof(dir)) {
        snprintf(err, errlen, "invalid ledger path \"%s\"", path);
        return AISERVE_LEDGER_ERROR;
    }

    memcpy(dir, path, len + 1);

    for (i = 1; i < len; i++) {
        if (dir[i] != '/' || dir[i - 1] == '/') {
            continue;
        }

        dir[i] = '\0';

        if (mkdir(dir, 0755) == -1 && errno != EEXIST) {
            snprintf(err, errlen, "mkdir(\"%s\") failed: %s", dir,
                     strerror(errno));
            return AISERVE_LEDGER_ERROR;
        }

        dir[i] = '/';
    }

    if (mkdir(path, 0700) == -1 && errno != EEXIST) {
        snprintf(err, errlen, "mkdir(\"%s\") failed: %s", path,
                 strerror(errno));
        return AISERVE_LEDGER_ERROR;
    }

    return AISERVE_LEDGER_OK;
}


/* A version 1 key record: aiserve_key_t up to its hash (no account, no
 * previous secret). */
#define AISERVE_KEY_V1_SIZE  offsetof(aiserve_key_t, account_id)


static int ledger_audit_put(aiserve_ledger_t *l, MDB_txn *txn,
    aiserve_audit_t *e);


/*
 * Ledger version 1 -> 2, inside the write transaction txn: every key gets
 * an account of its own number and name (no limits: the key's own stay).
 * Usage rows are keyed by key id, and an account's usage is that of its
 * keys.  *nkeys gets the number of keys.
 */
static int
ledger_migrate_v1(aiserve_ledger_t *l, MDB_txn *txn, size_t *nkeys,
    char *err, size_t errlen)
{
    int                 rc;
    size_t              n, cap, i;
    uint32_t            next;
    MDB_val             mk, mv;
    MDB_cursor         *cur;
    aiserve_key_t      *keys, *nk;
    aiserve_account_t   a;

    rc = mdb_cursor_open(txn, l->keys, &cur);
    if (rc != 0) {
        snprintf(err, errlen, "migration: mdb_cursor_open: %s",
                 mdb_strerror(rc));
        return AISERVE_LEDGER_ERROR;
    }

    n = 0;
    cap = 0;
    keys = NULL;
    next = 1;

    for (rc = mdb_cursor_get(cur, &mk, &mv, MDB_FIRST);
         rc == 0;
         rc = mdb_cursor_get(cur, &mk, &mv, MDB_NEXT))
    {
        if (mv.mv_size != AISERVE_KEY_V1_SIZE) {
            mdb_cursor_close(cur);
            free(keys);
            snprintf(err, errlen, "migration: a key record of %zu bytes "
                     "is not of version 1", mv.mv_size);
            return AISERVE_LEDGER_ERROR;
        }

        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            nk = realloc(keys, cap * sizeof(aiserve_key_t));
            if (nk == NULL) {
                mdb_cursor_close(cur);
                free(keys);
                snprintf(err, errlen, "migration: out of memory");
                return AISERVE_LEDGER_ERROR;
            }
            keys = nk;
        }

        memset(&keys[n], 0, sizeof(aiserve_key_t));
        memcpy(&keys[n], mv.mv_data, AISERVE_KEY_V1_SIZE);
        keys[n].version = AISERVE_KEY_RECORD_VERSION;
        keys[n].account_id = keys[n].id;

        if (keys[n].id >= next) {
            next = keys[n].id + 1;
        }

        n++;
    }

    mdb_cursor_close(cur);

    for (i = 0, rc = 0; i < n && rc == 0; i++) {
        memset(&a, 0, sizeof(a));
        a.version = AISERVE_ACCOUNT_RECORD_VERSION;
        a.id = keys[i].id;
        a.status = AISERVE_ACCOUNT_ACTIVE;
        memcpy(a.name, keys[i].name, sizeof(a.name));
        a.created = keys[i].created;
        a.updated = keys[i].created;

        mk.mv_data = &a.id;
        mk.mv_size = sizeof(uint32_t);
        mv.mv_data = &a;
        mv.mv_size = sizeof(a);

        rc = mdb_put(txn, l->accounts, &mk, &mv, 0);

        if (rc == 0) {
            mk.mv_data = &keys[i].id;
            mv.mv_data = &keys[i];
            mv.mv_size = sizeof(aiserve_key_t);
            rc = mdb_put(txn, l->keys, &mk, &mv, 0);
        }
    }

    free(keys);

    if (rc == 0) {
        mk.mv_data = "next_account";
        mk.mv_size = sizeof("next_account") - 1;
        mv.mv_data = &next;
        mv.mv_size = sizeof(uint32_t);
        rc = mdb_put(txn, l->meta, &mk, &mv, 0);
    }

    if (rc != 0) {
        snprintf(err, errlen, "migration of the keys to accounts: %s",
                 mdb_strerror(rc));
        return AISERVE_LEDGER_ERROR;
    }

    *nkeys = n;

    return AISERVE_LEDGER_OK;
}


static size_t row_key_encode(const aiserve_row_key_t *rk,
    unsigned char *buf);


/*
 * Ledger version 2 -> 3, inside the write transaction txn: every usage
 * row is keyed again with the api "" (not recorded then) and the price it
 * was charged at, cost_nano / prompt_tokens nano-units a token (that is
 * micro-units per 1k tokens, the unit of aiserve_price), 0 for a row of
 * no tokens and AISERVE_PRICE_UNKNOWN where that does not divide (a price
 * changed during the day).  Its numbers stay as they were.
 */
static int
ledger_migrate_v2(aiserve_ledger_t *l, MDB_txn *txn, size_t *nrows,
    char *err, size_t errlen)
{
    int                 rc;
    size_t              n, cap, i, len;
    MDB_val             mk, mv;
    MDB_cursor         *cur;
    unsigned char      *p, buf[AISERVE_ROW_KEY_LEN];
    aiserve_usage_t    *u;
    aiserve_row_key_t  *rk;
    struct {
        aiserve_row_key_t  rk;
        aiserve_usage_t    u;
    }                  *rows, *nr;

    rc = mdb_cursor_open(txn, l->usage, &cur);
    if (rc != 0) {
        snprintf(err, errlen, "migration: mdb_cursor_open: %s",
                 mdb_strerror(rc));
        return AISERVE_LEDGER_ERROR;
    }

    n = 0;
    cap = 0;
    rows = NULL;

    for (rc = mdb_cursor_get(cur, &mk, &mv, MDB_FIRST);
         rc == 0;
         rc = mdb_cursor_get(cur, &mk, &mv, MDB_NEXT))
    {
        if (mk.mv_size < 8 || mk.mv_size > AISERVE_ROW_KEY_V2_LEN
            || (mv.mv_size != AISERVE_USAGE_V1_SIZE
                && mv.mv_size != AISERVE_USAGE_V2_SIZE))
        {
            mdb_cursor_close(cur);
            free(rows);
            snprintf(err, errlen, "migration: a usage row of %zu + %zu "
                     "bytes is not of version 2", mk.mv_size, mv.mv_size);
            return AISERVE_LEDGER_ERROR;
        }

        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            nr = realloc(rows, cap * sizeof(*rows));
            if (nr == NULL) {
                mdb_cursor_close(cur);
                free(rows);
                snprintf(err, errlen, "migration: out of memory");
                return AISERVE_LEDGER_ERROR;
            }
            rows = nr;
        }

        memset(&rows[n], 0, sizeof(*rows));
        rk = &rows[n].rk;
        u = &rows[n].u;
        p = mk.mv_data;

        rk->key_id = (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
                     | (uint32_t) p[2] << 8 | p[3];
        rk->day = (uint32_t) p[4] << 24 | (uint32_t) p[5] << 16
                  | (uint32_t) p[6] << 8 | p[7];
        len = mk.mv_size - 8;
        memcpy(rk->model, p + 8, len);
        memcpy(u, mv.mv_data, mv.mv_size);

        if (u->prompt_tokens == 0) {
            rk->price = u->cost_nano ? AISERVE_PRICE_UNKNOWN : 0;

        } else if (u->cost_nano % u->prompt_tokens == 0) {
            rk->price = u->cost_nano / u->prompt_tokens;

        } else {
            rk->price = AISERVE_PRICE_UNKNOWN;
        }

        n++;
    }

    mdb_cursor_close(cur);

    rc = mdb_drop(txn, l->usage, 0);

    for (i = 0; i < n && rc == 0; i++) {
        mk.mv_data = buf;
        mk.mv_size = row_key_encode(&rows[i].rk, buf);
        mv.mv_data = &rows[i].u;
        mv.mv_size = sizeof(aiserve_usage_t);

        rc = mdb_put(txn, l->usage, &mk, &mv, MDB_NOOVERWRITE);
    }

    free(rows);

    if (rc != 0) {
        snprintf(err, errlen, "migration of the usage rows: %s",
                 mdb_strerror(rc));
        return AISERVE_LEDGER_ERROR;
    }

    *nrows = n;

    return AISERVE_LEDGER_OK;
}


/* Migrates a ledger of version (1 or 2) to AISERVE_LEDGER_VERSION in txn
 * and records it in the audit trail. */
static int
ledger_migrate(aiserve_ledger_t *l, MDB_txn *txn, uint32_t version,
    char *err, size_t errlen)
{
    int              rc;
    size_t           nkeys, nrows, off;
    MDB_val          mk, mv;
    aiserve_audit_t  e;

    memset(&e, 0, sizeof(e));
    off = 0;

    if (version == 1) {
        if (ledger_migrate_v1(l, txn, &nkeys, err, errlen)
            != AISERVE_LEDGER_OK)
        {
            return AISERVE_LEDGER_ERROR;
        }

        off = snprintf(e.detail, sizeof(e.detail), "from version 1: %zu "
                       "keys, each its own account; ", nkeys);
    }

    if (ledger_migrate_v2(l, txn, &nrows, err, errlen) != AISERVE_LEDGER_OK) {
        return AISERVE_LEDGER_ERROR;
    }

    snprintf(e.detail + off, sizeof(e.detail) - off, "from version 2: %zu "
             "usage rows with their price, route not recorded", nrows);

    version = AISERVE_LEDGER_VERSION;
    mk.mv_data = "version";
    mk.mv_size = sizeof("version") - 1;
    mv.mv_data = &version;
    mv.mv_size = sizeof(uint32_t);

    rc = mdb_put(txn, l->meta, &mk, &mv, 0);
    if (rc != 0) {
        snprintf(err, errlen, "migration to ledger version %d: %s",
                 AISERVE_LEDGER_VERSION, mdb_strerror(rc));
        return AISERVE_LEDGER_ERROR;
    }

    e.time = time(NULL);
    snprintf(e.actor, sizeof(e.actor), "ledger");
    snprintf(e.action, sizeof(e.action), "ledger.migrate");
    snprintf(e.object, sizeof(e.object), "version_%d",
             AISERVE_LEDGER_VERSION);

    rc = ledger_audit_put(l, txn, &e);
    if (rc != 0) {
        snprintf(err, errlen, "migration: audit entry: %s",
                 mdb_strerror(rc));
        return AISERVE_LEDGER_ERROR;
    }

    return AISERVE_LEDGER_OK;
}


/*
 * Opens the named databases and checks (or writes, for a new ledger) the
 * version; migrates a version 1 ledger in a write transaction, whatever
 * the caller's flags (the first process to open it after an upgrade does,
 * under LMDB's writer lock, so it happens once).
 */
static int
ledger_open_dbs(aiserve_ledger_t *l, const char *path, unsigned dbflags,
    char *err, size_t errlen)
{
    int       rc;
    unsigned  newflags;
    uint32_t  version;
    MDB_val   k, v;
    MDB_txn  *txn;

    newflags = dbflags;

again:

    rc = mdb_txn_begin(l->env, NULL, newflags ? 0 : MDB_RDONLY, &txn);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(l->env, 0);
        rc = mdb_txn_begin(l->env, NULL, newflags ? 0 : MDB_RDONLY, &txn);
    }
    if (rc != 0) {
        snprintf(err, errlen, "mdb_txn_begin: %s", mdb_strerror(rc));
        return AISERVE_LEDGER_ERROR;
    }

    if ((rc = mdb_dbi_open(txn, "meta", dbflags, &l->meta)) != 0
        || (rc = mdb_dbi_open(txn, "keys", dbflags | MDB_INTEGERKEY,
                              &l->keys)) != 0
        || (rc = mdb_dbi_open(txn, "hashes", dbflags, &l->hashes)) != 0
        || (rc = mdb_dbi_open(txn, "usage", dbflags, &l->usage)) != 0)
    {
        mdb_txn_abort(txn);
        snprintf(err, errlen, "\"%s\" is not an aiserve ledger (%s)", path,
                 mdb_strerror(rc));
        return AISERVE_LEDGER_ERROR;
    }

    k.mv_data = "version";
    k.mv_size = sizeof("version") - 1;

    version = 0;

    rc = mdb_get(txn, l->meta, &k, &v);
    if (rc == 0 && v.mv_size == sizeof(uint32_t)) {
        memcpy(&version, v.mv_data, sizeof(uint32_t));

    } else if (rc == 0 || (rc == MDB_NOTFOUND && !dbflags)) {
        mdb_txn_abort(txn);
        snprintf(err, errlen, "\"%s\": cannot read ledger version: %s",
                 path, rc ? mdb_strerror(rc) : "bad record");
        return AISERVE_LEDGER_ERROR;

    } else if (rc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        snprintf(err, errlen, "\"%s\": cannot read ledger version: %s",
                 path, mdb_strerror(rc));
        return AISERVE_LEDGER_ERROR;
    }

    if ((version == 1 || version == 2) && newflags == 0) {
        /* the migration writes: again in a write transaction */
        mdb_txn_abort(txn);
        newflags = MDB_CREATE;
        goto again;
    }

    if (version > AISERVE_LEDGER_VERSION) {
        mdb_txn_abort(txn);
        snprintf(err, errlen, "\"%s\": unsupported ledger version %u",
                 path, version);
        return AISERVE_LEDGER_ERROR;
    }

    if ((rc = mdb_dbi_open(txn, "accounts", newflags | MDB_INTEGERKEY,
                           &l->accounts)) != 0
        || (rc = mdb_dbi_open(txn, "audit", newflags | MDB_INTEGERKEY,
                              &l->audit)) != 0
        || (rc = mdb_dbi_open(txn, "training", newflags, &l->training))
           != 0)
    {
        mdb_txn_abort(txn);
        snprintf(err, errlen, "\"%s\" is not an aiserve ledger of version "
                 "%d (%s)", path, AISERVE_LEDGER_VERSION, mdb_strerror(rc));
        return AISERVE_LEDGER_ERROR;
    }

    if (version == 0) {
        version = AISERVE_LEDGER_VERSION;
        v.mv_data = &version;
        v.mv_size = sizeof(version);
        rc = mdb_put(txn, l->meta, &k, &v, 0);
        if (rc != 0) {
            mdb_txn_abort(txn);
            snprintf(err, errlen, "\"%s\": cannot write ledger version: %s",
                     path, mdb_strerror(rc));
            return AISERVE_LEDGER_ERROR;
        }

    } else if (version < AISERVE_LEDGER_VERSION) {
        if (ledger_migrate(l, txn, version, err, errlen)
            != AISERVE_LEDGER_OK)
        {
            mdb_txn_abort(txn);
            return AISERVE_LEDGER_ERROR;
        }
    }

    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        snprintf(err, errlen, "mdb_txn_commit: %s", mdb_strerror(rc));
        return AISERVE_LEDGER_ERROR;
    }

    return AISERVE_LEDGER_OK;
}


int
aiserve_ledger_open(aiserve_ledger_t **lp, const char *path,
    size_t map_size, unsigned flags, char *err, size_t errlen)
{
    int                rc;
    unsigned           dbflags;
    char               file[4096];
    struct stat        st;
    MDB_envinfo        info;
    aiserve_ledger_t  *l;

    *lp = NULL;

    if (flags & AISERVE_LEDGER_CREATE) {
        if (ledger_mkdir(path, err, errlen) != AISERVE_LEDGER_OK) {
            return AISERVE_LEDGER_ERROR;
        }

        if (ledger_create_pepper(path, err, errlen) != AISERVE_LEDGER_OK) {
            return AISERVE_LEDGER_ERROR;
        }
    }

    l = calloc(1, sizeof(aiserve_ledger_t));
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return AISERVE_LEDGER_ERROR;
    }

    if (!(flags & AISERVE_LEDGER_NO_PEPPER)) {
        if (aiserve_ledger_read_pepper(path, l->pepper, err, errlen)
            != AISERVE_LEDGER_OK)
        {
            free(l);
            return AISERVE_LEDGER_ERROR;
        }
        l->has_pepper = 1;
    }

    rc = mdb_env_create(&l->env);
    if (rc != 0) {
        snprintf(err, errlen, "mdb_env_create: %s", mdb_strerror(rc));
        free(l);
        return AISERVE_LEDGER_ERROR;
    }

    mdb_env_set_maxdbs(l->env, 8);
    mdb_env_set_maxreaders(l->env, AISERVE_LEDGER_MAXREADERS);

    /* a new environment gets the configured size (or 1 MiB); an existing
     * one keeps the size it has grown to, or grows to the configured one */
    snprintf(file, sizeof(file), "%s/data.mdb", path);
    if (stat(file, &st) == -1) {
        mdb_env_set_mapsize(l->env,
                            map_size ? map_size : AISERVE_LEDGER_MAP_DEFAULT);
    }

    rc = mdb_env_open(l->env, path, MDB_NOTLS, 0600);
    if (rc != 0) {
        snprintf(err, errlen, "mdb_env_open(\"%s\"): %s", path,
                 mdb_strerror(rc));
        goto failed;
    }

    mdb_env_info(l->env, &info);
    if (map_size > info.me_mapsize) {
        rc = mdb_env_set_mapsize(l->env, map_size);
        if (rc != 0) {
            snprintf(err, errlen, "mdb_env_set_mapsize: %s",
                     mdb_strerror(rc));
            goto failed;
        }
    }

    mdb_reader_check(l->env, NULL);

    dbflags = (flags & AISERVE_LEDGER_CREATE) ? MDB_CREATE : 0;

    rc = ledger_open_dbs(l, path, dbflags, err, errlen);
    if (rc != AISERVE_LEDGER_OK) {
        goto failed;
    }

    *lp = l;
    return AISERVE_LEDGER_OK;

failed:

    mdb_env_close(l->env);
    OPENSSL_cleanse(l->pepper, sizeof(l->pepper));
    free(l);
    return AISERVE_LEDGER_ERROR;
}


void
aiserve_ledger_close(aiserve_ledger_t *l)
{
    if (l == NULL) {
        return;
    }

    if (l->wtxn) {
        mdb_txn_abort(l->wtxn);
    }

    if (l->rtxn) {
        mdb_txn_abort(l->rtxn);
    }

    mdb_env_close(l->env);
    OPENSSL_cleanse(l->pepper, sizeof(l->pepper));
    free(l);
}


void
aiserve_ledger_set_pepper(aiserve_ledger_t *l,
    const uint8_t pepper[AISERVE_PEPPER_LEN])
{
    memcpy(l->pepper, pepper, AISERVE_PEPPER_LEN);
    l->has_pepper = 1;
}


void
aiserve_ledger_map_info(aiserve_ledger_t *l, size_t *map_size, size_t *used)
{
    MDB_envinfo  info;
    MDB_stat     st;

    mdb_env_info(l->env, &info);
    mdb_env_stat(l->env, &st);

    *map_size = info.me_mapsize;
    *used = (info.me_last_pgno + 1) * (size_t) st.ms_psize;
}


int
aiserve_ledger_grow(aiserve_ledger_t *l, size_t max_size)
{
    int          rc;
    size_t       size;
    MDB_envinfo  info;

    if (l->rtxn) {
        mdb_txn_abort(l->rtxn);
        l->rtxn = NULL;
    }

    mdb_env_info(l->env, &info);

    size = info.me_mapsize * 2;
    if (max_size && size > max_size) {
        size = max_size;
    }

    if (size <= info.me_mapsize) {
        snprintf(l->err, sizeof(l->err),
                 "ledger map is full at its maximum size %zu",
                 info.me_mapsize);
        return AISERVE_LEDGER_FULL;
    }

    rc = mdb_env_set_mapsize(l->env, size);
    if (rc != 0) {
        return ledger_fail(l, rc, "mdb_env_set_mapsize(%zu)", size);
    }

    return AISERVE_LEDGER_OK;
}


void
aiserve_ledger_set_max_map_size(aiserve_ledger_t *l, size_t max_size)
{
    l->max_map = max_size;
}


int
aiserve_ledger_reader_check(aiserve_ledger_t *l)
{
    int  dead = 0;

    mdb_reader_check(l->env, &dead);

    return dead;
}


/* Begins a transaction; adopts a map grown by another process. */
static int
ledger_txn_begin(aiserve_ledger_t *l, unsigned flags, MDB_txn **txn)
{
    int  rc;

    rc = mdb_txn_begin(l->env, NULL, flags, txn);

    if (rc == MDB_MAP_RESIZED) {
        if (l->rtxn) {
            mdb_txn_abort(l->rtxn);
            l->rtxn = NULL;
        }
        mdb_env_set_mapsize(l->env, 0);
        rc = mdb_txn_begin(l->env, NULL, flags, txn);
    }

    if (rc != 0) {
        return ledger_fail(l, rc, "mdb_txn_begin");
    }

    return AISERVE_LEDGER_OK;
}


/* The reusable read transaction: renewed here, reset by ledger_rend(). */
static int
ledger_rbegin(aiserve_ledger_t *l)
{
    int  rc;

    if (l->rtxn) {
        rc = mdb_txn_renew(l->rtxn);
        if (rc == 0) {
            return AISERVE_LEDGER_OK;
        }

        mdb_txn_abort(l->rtxn);
        l->rtxn = NULL;

        if (rc == MDB_MAP_RESIZED) {
            mdb_env_set_mapsize(l->env, 0);
        }
    }

    return ledger_txn_begin(l, MDB_RDONLY, &l->rtxn);
}


static void
ledger_rend(aiserve_ledger_t *l)
{
    mdb_txn_reset(l->rtxn);
}


/* --- keys ----------------------------------------------------------------- */

static void
key_checksum(const char *s, size_t len, char out[AISERVE_KEY_CHECK_CHARS])
{
    int            i;
    uint32_t       c;
    unsigned char  md[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *) s, len, md);

    c = (uint32_t) md[0] << 24 | (uint32_t) md[1] << 16
        | (uint32_t) md[2] << 8 | md[3];

    for (i = AISERVE_KEY_CHECK_CHARS - 1; i >= 0; i--) {
        out[i] = base62[c % 62];
        c /= 62;
    }
}


int
aiserve_key_generate(const char *type, char *out)
{
    size_t         tlen, n, i;
    unsigned char  rnd[64];

    tlen = strlen(type);
    if (tlen == 0 || tlen > 8) {
        return -1;
    }
    for (i = 0; i < tlen; i++) {
        if (type[i] < 'a' || type[i] > 'z') {
            return -1;
        }
    }

    n = (size_t) snprintf(out, AISERVE_API_KEY_MAX, "ais_%s_", type);

    /* rejection sampling: 248 = 4 * 62, so byte % 62 is uniform */
    i = 0;
    while (i < AISERVE_KEY_RANDOM_CHARS) {
        size_t  j;

        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            return -1;
        }
        for (j = 0; j < sizeof(rnd) && i < AISERVE_KEY_RANDOM_CHARS; j++) {
            if (rnd[j] < 248) {
                out[n + i++] = base62[rnd[j] % 62];
            }
        }
    }

    OPENSSL_cleanse(rnd, sizeof(rnd));

    key_checksum(out, n + AISERVE_KEY_RANDOM_CHARS,
                 out + n + AISERVE_KEY_RANDOM_CHARS);
    out[n + AISERVE_KEY_RANDOM_CHARS + AISERVE_KEY_CHECK_CHARS] = '\0';

    return 0;
}


static int
is_alnum(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
           || (c >= 'A' && c <= 'Z');
}


/* Length of a key-shaped token at s (0 if none): "ais_" [a-z]{1,8} "_"
 * then 38 alphanumerics. */
static size_t
key_shape(const char *s, size_t len)
{
    size_t  i, t;

    if (len < 4 || memcmp(s, "ais_", 4) != 0) {
        return 0;
    }

    for (i = 4, t = 0; i < len && s[i] >= 'a' && s[i] <= 'z'; i++, t++) {
        /* type */
    }

    if (t == 0 || t > 8 || i >= len || s[i] != '_') {
        return 0;
    }

    i++;

    for (t = 0; i < len && is_alnum(s[i]); i++, t++) { /* random+check */ }

    if (t != AISERVE_KEY_RANDOM_CHARS + AISERVE_KEY_CHECK_CHARS) {
        return 0;
    }

    return i;
}


int
aiserve_key_well_formed(const char *s, size_t len)
{
    char  check[AISERVE_KEY_CHECK_CHARS];

    if (key_shape(s, len) != len) {
        return 0;
    }

    key_checksum(s, len - AISERVE_KEY_CHECK_CHARS, check);

    return CRYPTO_memcmp(check, s + len - AISERVE_KEY_CHECK_CHARS,
                         AISERVE_KEY_CHECK_CHARS) == 0;
}


int
aiserve_key_shaped(const char *s, size_t len)
{
    return key_shape(s, len) == len;
}


static int
hex_value(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* The character at s[i], read through at most depth levels of
 * percent-encoding (RFC 3986 2.1; "%2561" is 'a' at depth 2); *next is the
 * position after it.  The depth bounds the recursion. */
static int
pct_char(const char *s, size_t len, size_t i, int depth, size_t *next)
{
    int     c, hi, lo;
    size_t  j, k;

    c = (unsigned char) s[i];
    *next = i + 1;

    while (c == '%' && depth-- > 0 && *next < len) {
        hi = hex_value(pct_char(s, len, *next, depth, &j));
        if (hi < 0 || j >= len) {
            break;
        }

        lo = hex_value(pct_char(s, len, j, depth, &k));
        if (lo < 0) {
            break;
        }

        c = hi << 4 | lo;
        *next = k;
    }

    return c;
}


/* Raw length of the key at s[i..] read through percent-encoding: "ais_",
 * [a-z]{1,8}, "_", then 38 alphanumerics, whatever follows them (a key
 * glued to more text is still a key); 0 if none.  *secret: the raw offset
 * of the fifth character after the second '_'. */
static size_t
key_match(const char *s, size_t len, size_t i, size_t *secret)
{
    int          c;
    size_t       p, t;
    const char  *lit;

    c = 0;
    p = i;

    for (lit = "ais_"; *lit; lit++) {
        if (p >= len
            || pct_char(s, len, p, AISERVE_KEY_PCT_DEPTH, &p) != *lit)
        {
            return 0;
        }
    }

    for (t = 0; p < len; t++) {
        c = pct_char(s, len, p, AISERVE_KEY_PCT_DEPTH, &p);

        if (c == '_') {
            break;
        }

        if (c < 'a' || c > 'z' || t == 8) {
            return 0;
        }
    }

    if (t == 0 || c != '_') {
        return 0;
    }

    for (t = 0; t < AISERVE_KEY_RANDOM_CHARS + AISERVE_KEY_CHECK_CHARS; t++) {
        if (t == 4) {
            *secret = p;
        }

        if (p >= len
            || !is_alnum(pct_char(s, len, p, AISERVE_KEY_PCT_DEPTH, &p)))
        {
            return 0;
        }
    }

    return p - i;
}


size_t
aiserve_key_mask(char *s, size_t len)
{
    size_t  i, n, found, secret = 0;

    found = 0;

    for (i = 0; i < len; i++) {
        if (s[i] != 'a' && s[i] != '%') {
            continue;
        }

        n = key_match(s, len, i, &secret);
        if (n == 0) {
            continue;
        }

        memset(s + secret, '*', i + n - secret);
        found++;
        i += n - 1;
    }

    return found;
}


void
aiserve_key_hash(const uint8_t pepper[AISERVE_PEPPER_LEN], const char *key,
    size_t len, uint8_t out[AISERVE_HASH_LEN])
{
    unsigned int  n = AISERVE_HASH_LEN;

    HMAC(EVP_sha256(), pepper, AISERVE_PEPPER_LEN,
         (const unsigned char *) key, len, out, &n);
}


struct aiserve_key_hmac_s {
    EVP_MAC      *mac;
    EVP_MAC_CTX  *ctx;
};


aiserve_key_hmac_t *
aiserve_key_hmac_create(const uint8_t pepper[AISERVE_PEPPER_LEN])
{
    OSSL_PARAM           params[2];
    aiserve_key_hmac_t  *h;

    h = calloc(1, sizeof(aiserve_key_hmac_t));
    if (h == NULL) {
        return NULL;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    h->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    h->ctx = h->mac ? EVP_MAC_CTX_new(h->mac) : NULL;

    if (h->ctx == NULL
        || EVP_MAC_init(h->ctx, pepper, AISERVE_PEPPER_LEN, params) != 1)
    {
        aiserve_key_hmac_free(h);
        return NULL;
    }

    return h;
}


int
aiserve_key_hmac(aiserve_key_hmac_t *h, const char *key, size_t len,
    uint8_t out[AISERVE_HASH_LEN])
{
    size_t  n;

    /* a NULL key keeps the one the context was initialised with */
    if (EVP_MAC_init(h->ctx, NULL, 0, NULL) != 1
        || EVP_MAC_update(h->ctx, (const unsigned char *) key, len) != 1
        || EVP_MAC_final(h->ctx, out, &n, AISERVE_HASH_LEN) != 1
        || n != AISERVE_HASH_LEN)
    {
        return -1;
    }

    return 0;
}


void
aiserve_key_hmac_free(aiserve_key_hmac_t *h)
{
    if (h == NULL) {
        return;
    }

    EVP_MAC_CTX_free(h->ctx);
    EVP_MAC_free(h->mac);
    free(h);
}


static MDB_val
key_id_val(uint32_t *id)
{
    MDB_val  v;

    v.mv_data = id;
    v.mv_size = sizeof(uint32_t);

    return v;
}


/*
 * Runs fn(l, txn, arg) in a write transaction and commits it; grows the
 * map and runs it again on MDB_MAP_FULL (up to max_map).  fn returns 0, an
 * LMDB error, or AISERVE_LEDGER_NOTFOUND or ERROR (with l->err set):
 * aborted and returned as is.
 */
static int
ledger_write(aiserve_ledger_t *l, int (*fn)(aiserve_ledger_t *l,
    MDB_txn *txn, void *arg), void *arg, const char *what)
{
    int       rc, tries;
    MDB_txn  *txn;

    for (tries = 0; tries < 8; tries++) {
        rc = ledger_txn_begin(l, 0, &txn);
        if (rc != AISERVE_LEDGER_OK) {
            return rc;
        }

        rc = fn(l, txn, arg);

        if (rc == AISERVE_LEDGER_NOTFOUND || rc == AISERVE_LEDGER_ERROR) {
            /* ERROR: refused by fn, with its message in l->err */
            mdb_txn_abort(txn);
            return rc;
        }

        if (rc == 0) {
            rc = mdb_txn_commit(txn);
            if (rc == 0) {
                return AISERVE_LEDGER_OK;
            }

        } else {
            mdb_txn_abort(txn);
        }

        if (rc != MDB_MAP_FULL) {
            break;
        }

        rc = aiserve_ledger_grow(l, l->max_map);
        if (rc != AISERVE_LEDGER_OK) {
            return rc;
        }
    }

    return ledger_fail(l, rc, "cannot store %s", what);
}


/* A record rewritten in place: id (u32) must exist in dbi. */
typedef struct {
    MDB_dbi     dbi;
    uint32_t    id;
    void       *data;
    size_t      size;
} ledger_update_t;


static int
ledger_update_fn(aiserve_ledger_t *l, MDB_txn *txn, void *arg)
{
    int               rc;
    MDB_val           mk, mv;
    ledger_update_t  *u = arg;

    mk = key_id_val(&u->id);

    rc = mdb_get(txn, u->dbi, &mk, &mv);
    if (rc == MDB_NOTFOUND) {
        return AISERVE_LEDGER_NOTFOUND;
    }

    if (rc == 0) {
        mv.mv_data = u->data;
        mv.mv_size = u->size;
        rc = mdb_put(txn, u->dbi, &mk, &mv, 0);
    }

    return rc;
}


/*
 * Reads the record id (u32) of dbi, of exactly size bytes, into out: OK,
 * NOTFOUND or ERROR.
 */
static int
ledger_get(aiserve_ledger_t *l, MDB_dbi dbi, uint32_t id, void *out,
    size_t size)
{
    int      rc;
    MDB_val  mk, mv;

    rc = ledger_rbegin(l);
    if (rc != AISERVE_LEDGER_OK) {
        return rc;
    }

    mk = key_id_val(&id);

    rc = mdb_get(l->rtxn, dbi, &mk, &mv);
    if (rc == 0 && mv.mv_size == size) {
        memcpy(out, mv.mv_data, size);
        rc = AISERVE_LEDGER_OK;

    } else if (rc == 0) {
        rc = ledger_fail(l, 0, "record %u: %zu bytes, not %zu", id,
                         mv.mv_size, size);

    } else if (rc == MDB_NOTFOUND) {
        rc = AISERVE_LEDGER_NOTFOUND;

    } else {
        rc = ledger_fail(l, rc, "mdb_get(%u)", id);
    }

    ledger_rend(l);

    return rc;
}


/*
 * Calls fn for each record of dbi from key from (NULL: the first) in key
 * order, in the reusable read transaction; stops when fn returns non-zero.
 */
static int
ledger_each(aiserve_ledger_t *l, MDB_dbi dbi, MDB_val *from,
    int (*fn)(MDB_val *k, MDB_val *v, void *arg), void *arg)
{
    int          rc;
    MDB_val      mk, mv;
    MDB_cursor  *cur;

    rc = ledger_rbegin(l);
    if (rc != AISERVE_LEDGER_OK) {
        return rc;
    }

    rc = mdb_cursor_open(l->rtxn, dbi, &cur);
    if (rc != 0) {
        ledger_rend(l);
        return ledger_fail(l, rc, "mdb_cursor_open");
    }

    if (from) {
        mk = *from;
        rc = mdb_cursor_get(cur, &mk, &mv, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &mk, &mv, MDB_FIRST);
    }

    for ( /* void */ ; rc == 0;
         rc = mdb_cursor_get(cur, &mk, &mv, MDB_NEXT))
    {
        if (fn(&mk, &mv, arg) != 0) {
            break;
        }
    }

    mdb_cursor_close(cur);
    ledger_rend(l);

    if (rc != 0 && rc != MDB_NOTFOUND) {
        return ledger_fail(l, rc, "mdb_cursor_get");
    }

    return AISERVE_LEDGER_OK;
}


/* ledger_each() adapters: a typed callback and its argument */
typedef struct {
    union {
        int  (*key)(const aiserve_key_t *k, void *arg);
        int  (*account)(const aiserve_account_t *a, void *arg);
        int  (*audit)(const aiserve_audit_t *e, void *arg);
    } cb;
    void   *arg;
} ledger_each_t;


/*
 * Takes the next number of the meta counter name (width: 4 or 8 bytes, as
 * stored), in txn: *out gets it (1 for a new counter), the counter moves
 * on.  0 or an LMDB error.
 */
static int
ledger_counter(aiserve_ledger_t *l, MDB_txn *txn, const char *name,
    size_t width, uint64_t *out)
{
    int       rc;
    uint32_t  n32;
    uint64_t  n;
    MDB_val   mk, mv;

    mk.mv_data = (void *) name;
    mk.mv_size = strlen(name);

    rc = mdb_get(txn, l->meta, &mk, &mv);

    if (rc == 0 && mv.mv_size == width && width == sizeof(uint32_t)) {
        memcpy(&n32, mv.mv_data, sizeof(uint32_t));
        n = n32;
    } else if (rc == 0 && mv.mv_size == width) {
        memcpy(&n, mv.mv_data, sizeof(uint64_t));
    } else if (rc == 0 || rc == MDB_NOTFOUND) {
        n = 1;
    } else {
        return rc;
    }

    *out = n;
    n++;
    n32 = (uint32_t) n;

    mv.mv_data = (width == sizeof(uint32_t)) ? (void *) &n32 : (void *) &n;
    mv.mv_size = width;

    return mdb_put(txn, l->meta, &mk, &mv, 0);
}


static int
account_check(aiserve_ledger_t *l, const aiserve_account_t *a)
{
    char  msg[200];

    if (aiserve_limits_check(a->rpm, a->tpm, a->budget_tokens,
                             a->budget_period, msg, sizeof(msg))
        != 0)
    {
        snprintf(l->err, sizeof(l->err), "acct_%u: %s", a->id, msg);
        return AISERVE_LEDGER_ERROR;
    }

    return AISERVE_LEDGER_OK;
}


/* Stores *a under the next account id, in txn: 0 or an LMDB error. */
static int
account_insert(aiserve_ledger_t *l, MDB_txn *txn, aiserve_account_t *a)
{
    int       rc;
    uint64_t  id;
    MDB_val   mk, mv;

    rc = ledger_counter(l, txn, "next_account", sizeof(uint32_t), &id);
    if (rc != 0) {
        return rc;
    }

    a->version = AISERVE_ACCOUNT_RECORD_VERSION;
    a->id = (uint32_t) id;
    a->created = time(NULL);
    a->updated = a->created;

    mk.mv_data = &a->id;
    mk.mv_size = sizeof(uint32_t);
    mv.mv_data = a;
    mv.mv_size = sizeof(aiserve_account_t);

    return mdb_put(txn, l->accounts, &mk, &mv, MDB_NOOVERWRITE);
}


/* An account for a new key, in txn: account_id 0 creates one of the key's
 * name; another must exist and not be closed.  0, an LMDB error
 * (MDB_NOTFOUND) or AISERVE_LEDGER_ERROR (closed). */
static int
key_account_attach(aiserve_ledger_t *l, MDB_txn *txn, aiserve_key_t *k)
{
    int                rc;
    uint32_t           status;
    MDB_val            mk, mv;
    aiserve_account_t  a;

    if (k->account_id) {
        mk.mv_data = &k->account_id;
        mk.mv_size = sizeof(uint32_t);

        rc = mdb_get(txn, l->accounts, &mk, &mv);

        if (rc == 0 && mv.mv_size == sizeof(aiserve_account_t)) {
            /* LMDB aligns values to 2 bytes only: the status is copied
             * out, not read through a pointer into the map */
            memcpy(&status, (unsigned char *) mv.mv_data
                            + offsetof(aiserve_account_t, status),
                   sizeof(uint32_t));

            if (status == AISERVE_ACCOUNT_CLOSED) {
                return AISERVE_LEDGER_ERROR;
            }
        }

        return rc;
    }

    memset(&a, 0, sizeof(a));
    memcpy(a.name, k->name, sizeof(a.name));

    rc = account_insert(l, txn, &a);
    if (rc == 0) {
        k->account_id = a.id;
    }

    return rc;
}


static int
key_read(MDB_val *v, aiserve_key_t *k)
{
    if (v->mv_size != sizeof(aiserve_key_t)) {
        return AISERVE_LEDGER_ERROR;
    }

    memcpy(k, v->mv_data, sizeof(aiserve_key_t));

    return k->version == AISERVE_KEY_RECORD_VERSION
           ? AISERVE_LEDGER_OK : AISERVE_LEDGER_ERROR;
}


/* Limits the zone's arithmetic holds (AISERVE_KEY_LIMIT_MAX). */
static int
key_check(aiserve_ledger_t *l, const aiserve_key_t *k)
{
    char  msg[200];

    if (aiserve_limits_check(k->rpm, k->tpm, k->budget_tokens,
                             k->budget_period, msg, sizeof(msg))
        != 0)
    {
        snprintf(l->err, sizeof(l->err), "key_%u: %s", k->id, msg);
        return AISERVE_LEDGER_ERROR;
    }

    return AISERVE_LEDGER_OK;
}


int
aiserve_ledger_key_create(aiserve_ledger_t *l, aiserve_key_t *k,
    const char *type, char *secret)
{
    int       rc, tries, own;
    size_t    slen;
    uint32_t  id;
    MDB_txn  *txn;
    MDB_val   mk, mv, hk;

    if (!l->has_pepper) {
        snprintf(l->err, sizeof(l->err), "no hmac.key loaded");
        return AISERVE_LEDGER_ERROR;
    }

    if (key_check(l, k) != AISERVE_LEDGER_OK) {
        return AISERVE_LEDGER_ERROR;
    }

    own = (k->account_id == 0);

    for (tries = 0; tries < 8; tries++) {

        if (own) {
            k->account_id = 0;
        }

        rc = ledger_txn_begin(l, 0, &txn);
        if (rc != AISERVE_LEDGER_OK) {
            return rc;
        }

        mk.mv_data = "next_id";
        mk.mv_size = sizeof("next_id") - 1;

        rc = mdb_get(txn, l->meta, &mk, &mv);
        if (rc == 0 && mv.mv_size == sizeof(uint32_t)) {
            memcpy(&id, mv.mv_data, sizeof(uint32_t));
        } else {
            id = 1;
        }

        if (aiserve_key_generate(type, secret) != 0) {
            mdb_txn_abort(txn);
            snprintf(l->err, sizeof(l->err), "cannot generate a key");
            return AISERVE_LEDGER_ERROR;
        }

        slen = strlen(secret);

        rc = key_account_attach(l, txn, k);
        if (rc != 0) {
            mdb_txn_abort(txn);
            if (rc == AISERVE_LEDGER_ERROR) {
                snprintf(l->err, sizeof(l->err), "acct_%u is closed",
                         k->account_id);
                return rc;
            }
            if (rc == MDB_NOTFOUND) {
                snprintf(l->err, sizeof(l->err), "no account acct_%u",
                         k->account_id);
                return AISERVE_LEDGER_NOTFOUND;
            }
            if (rc == MDB_MAP_FULL) {
                rc = aiserve_ledger_grow(l, l->max_map);
                if (rc != AISERVE_LEDGER_OK) {
                    return rc;
                }
                continue;
            }
            return ledger_fail(l, rc, "cannot store the key's account");
        }

        k->version = AISERVE_KEY_RECORD_VERSION;
        k->id = id;
        k->created = time(NULL);
        k->updated = k->created;
        snprintf(k->prefix, sizeof(k->prefix), "%.*s",
                 (int) (slen - AISERVE_KEY_RANDOM_CHARS
                        - AISERVE_KEY_CHECK_CHARS + 4), secret);
        snprintf(k->last4, sizeof(k->last4), "%s", secret + slen - 4);
        aiserve_key_hash(l->pepper, secret, slen, k->hash);

        id++;
        mv.mv_data = &id;
        mv.mv_size = sizeof(uint32_t);

        hk.mv_data = k->hash;
        hk.mv_size = AISERVE_HASH_LEN;

        if ((rc = mdb_put(txn, l->meta, &mk, &mv, 0)) == 0) {
            mv = key_id_val(&k->id);
            rc = mdb_put(txn, l->hashes, &hk, &mv, MDB_NOOVERWRITE);
        }

        if (rc == 0) {
            mk = key_id_val(&k->id);
            mv.mv_data = k;
            mv.mv_size = sizeof(aiserve_key_t);
            rc = mdb_put(txn, l->keys, &mk, &mv, MDB_NOOVERWRITE);
        }

        if (rc == 0) {
            rc = mdb_txn_commit(txn);
            if (rc == 0) {
                return AISERVE_LEDGER_OK;
            }

        } else {
            mdb_txn_abort(txn);
        }

        if (rc == MDB_MAP_FULL) {
            rc = aiserve_ledger_grow(l, l->max_map);
            if (rc != AISERVE_LEDGER_OK) {
                return rc;
            }
            continue;
        }

        if (rc != MDB_KEYEXIST) {
            break;
        }
    }

    return ledger_fail(l, rc, "cannot store key");
}


int
aiserve_ledger_key_get(aiserve_ledger_t *l, uint32_t id, aiserve_key_t *k)
{
    int  rc;

    rc = ledger_get(l, l->keys, id, k, sizeof(aiserve_key_t));

    if (rc == AISERVE_LEDGER_OK && k->version != AISERVE_KEY_RECORD_VERSION)
    {
        rc = ledger_fail(l, 0, "key_%u: record version %u", id, k->version);
    }

    return rc;
}


int
aiserve_ledger_key_lookup(aiserve_ledger_t *l,
    const uint8_t hash[AISERVE_HASH_LEN], aiserve_key_t *k)
{
    return aiserve_ledger_key_lookup_at(l, hash, time(NULL), k, NULL);
}


int
aiserve_ledger_key_lookup_at(aiserve_ledger_t *l,
    const uint8_t hash[AISERVE_HASH_LEN], int64_t now, aiserve_key_t *k,
    aiserve_account_t *a)
{
    int       rc;
    uint32_t  id;
    MDB_val   mk, mv;

    rc = ledger_rbegin(l);
    if (rc != AISERVE_LEDGER_OK) {
        return rc;
    }

    mk.mv_data = (void *) hash;
    mk.mv_size = AISERVE_HASH_LEN;

    rc = mdb_get(l->rtxn, l->hashes, &mk, &mv);
    if (rc == 0 && mv.mv_size == sizeof(uint32_t)) {
        memcpy(&id, mv.mv_data, sizeof(uint32_t));
        mk = key_id_val(&id);
        rc = mdb_get(l->rtxn, l->keys, &mk, &mv);
    }

    if (rc == 0) {
        rc = key_read(&mv, k);
        if (rc == AISERVE_LEDGER_OK
            && CRYPTO_memcmp(k->hash, hash, AISERVE_HASH_LEN) != 0
            && (k->prev_expires <= now
                || CRYPTO_memcmp(k->prev_hash, hash, AISERVE_HASH_LEN)
                   != 0))
        {
            /* a previous secret whose grace period is over */
            rc = AISERVE_LEDGER_NOTFOUND;
        }

    } else if (rc == MDB_NOTFOUND) {
        rc = AISERVE_LEDGER_NOTFOUND;

    } else {
        rc = ledger_fail(l, rc, "key lookup");
    }

    if (rc == AISERVE_LEDGER_OK && a) {
        mk.mv_data = &k->account_id;
        mk.mv_size = sizeof(uint32_t);

        rc = mdb_get(l->rtxn, l->accounts, &mk, &mv);
        if (rc == 0 && mv.mv_size == sizeof(aiserve_account_t)) {
            memcpy(a, mv.mv_data, sizeof(aiserve_account_t));
            rc = AISERVE_LEDGER_OK;

        } else {
            rc = ledger_fail(l, rc == 0 ? 0 : rc, "key_%u: no account "
                             "acct_%u", k->id, k->account_id);
        }
    }

    ledger_rend(l);

    return rc;
}


int
aiserve_ledger_key_rotate(aiserve_ledger_t *l, uint32_t id, int64_t grace,
    aiserve_key_t *k, char *secret)
{
    int       rc, tries;
    char      type[16];
    size_t    slen, tlen;
    int64_t   now;
    MDB_txn  *txn;
    MDB_val   mk, mv, hk;
    uint8_t   zero[AISERVE_HASH_LEN];

    if (!l->has_pepper) {
        snprintf(l->err, sizeof(l->err), "no hmac.key loaded");
        return AISERVE_LEDGER_ERROR;
    }

    if (grace < 0 || grace > AISERVE_GRACE_MAX) {
        snprintf(l->err, sizeof(l->err), "grace period %lld is out of "
                 "range (0 to %d seconds)", (long long) grace,
                 AISERVE_GRACE_MAX);
        return AISERVE_LEDGER_ERROR;
    }

    memset(zero, 0, sizeof(zero));

    for (tries = 0; tries < 8; tries++) {

        rc = ledger_txn_begin(l, 0, &txn);
        if (rc != AISERVE_LEDGER_OK) {
            return rc;
        }

        mk = key_id_val(&id);

        rc = mdb_get(txn, l->keys, &mk, &mv);
        if (rc == MDB_NOTFOUND) {
            mdb_txn_abort(txn);
            snprintf(l->err, sizeof(l->err), "no key key_%u", id);
            return AISERVE_LEDGER_NOTFOUND;
        }

        if (rc == 0 && key_read(&mv, k) != AISERVE_LEDGER_OK) {
            mdb_txn_abort(txn);
            snprintf(l->err, sizeof(l->err), "key_%u: bad record", id);
            return AISERVE_LEDGER_ERROR;
        }

        if (rc == 0 && k->status == AISERVE_KEY_REVOKED) {
            mdb_txn_abort(txn);
            snprintf(l->err, sizeof(l->err), "key_%u is revoked", id);
            return AISERVE_LEDGER_ERROR;
        }

        /* "ais_live_AbCd": the type between the first two '_' */
        tlen = strcspn(k->prefix + 4, "_");
        snprintf(type, sizeof(type), "%.*s", (int) tlen, k->prefix + 4);

        if (rc == 0 && aiserve_key_generate(type, secret) != 0) {
            mdb_txn_abort(txn);
            snprintf(l->err, sizeof(l->err), "cannot generate a key");
            return AISERVE_LEDGER_ERROR;
        }

        /* the secret rotated away before this one goes now */
        if (rc == 0 && memcmp(k->prev_hash, zero, AISERVE_HASH_LEN) != 0) {
            hk.mv_data = k->prev_hash;
            hk.mv_size = AISERVE_HASH_LEN;
            rc = mdb_del(txn, l->hashes, &hk, NULL);
            if (rc == MDB_NOTFOUND) {
                rc = 0;
            }
        }

        now = time(NULL);

        if (rc == 0 && grace == 0) {
            hk.mv_data = k->hash;
            hk.mv_size = AISERVE_HASH_LEN;
            rc = mdb_del(txn, l->hashes, &hk, NULL);
            if (rc == MDB_NOTFOUND) {
                rc = 0;
            }
            memset(k->prev_hash, 0, AISERVE_HASH_LEN);
            k->prev_expires = 0;

        } else if (rc == 0) {
            memcpy(k->prev_hash, k->hash, AISERVE_HASH_LEN);
            k->prev_expires = now + grace;
        }

        if (rc == 0) {
            slen = strlen(secret);
            snprintf(k->prefix, sizeof(k->prefix), "%.*s",
                     (int) (slen - AISERVE_KEY_RANDOM_CHARS
                            - AISERVE_KEY_CHECK_CHARS + 4), secret);
            snprintf(k->last4, sizeof(k->last4), "%s", secret + slen - 4);
            aiserve_key_hash(l->pepper, secret, slen, k->hash);
            k->updated = now;

            hk.mv_data = k->hash;
            hk.mv_size = AISERVE_HASH_LEN;
            mv = key_id_val(&k->id);
            rc = mdb_put(txn, l->hashes, &hk, &mv, MDB_NOOVERWRITE);
        }

        if (rc == 0) {
            mk = key_id_val(&k->id);
            mv.mv_data = k;
            mv.mv_size = sizeof(aiserve_key_t);
            rc = mdb_put(txn, l->keys, &mk, &mv, 0);
        }

        if (rc == 0) {
            rc = mdb_txn_commit(txn);
            if (rc == 0) {
                return AISERVE_LEDGER_OK;
            }

        } else {
            mdb_txn_abort(txn);
        }

        if (rc == MDB_MAP_FULL) {
            rc = aiserve_ledger_grow(l, l->max_map);
            if (rc != AISERVE_LEDGER_OK) {
                return rc;
            }
            continue;
        }

        if (rc != MDB_KEYEXIST) {
            break;
        }
    }

    return ledger_fail(l, rc, "cannot rotate key_%u", id);
}


int
aiserve_ledger_key_put(aiserve_ledger_t *l, aiserve_key_t *k)
{
    ledger_update_t  u;

    if (key_check(l, k) != AISERVE_LEDGER_OK) {
        return AISERVE_LEDGER_ERROR;
    }

    k->updated = time(NULL);

    u.dbi = l->keys;
    u.id = k->id;
    u.data = k;
    u.size = sizeof(aiserve_key_t);

    return ledger_write(l, ledger_update_fn, &u, "key");
}


static int
key_each_fn(MDB_val *mk, MDB_val *mv, void *arg)
{
    aiserve_key_t   k;
    ledger_each_t  *e = arg;

    if (key_read(mv, &k) != AISERVE_LEDGER_OK) {
        return 0;
    }

    return e->cb.key(&k, e->arg);
}


int
aiserve_ledger_key_each(aiserve_ledger_t *l,
    int (*cb)(const aiserve_key_t *k, void *arg), void *arg)
{
    ledger_each_t  e;

    e.cb.key = cb;
    e.arg = arg;

    return ledger_each(l, l->keys, NULL, key_each_fn, &e);
}


int
aiserve_key_model_allowed(const aiserve_key_t *k, const char *model,
    size_t len)
{
    return aiserve_models_allowed(k->models, sizeof(k->models), model, len);
}


int
aiserve_models_allowed(const char *list, size_t size, const char *model,
    size_t len)
{
    const char  *p, *end, *comma;

    p = list;
    end = p + strnlen(list, size);

    if (p == end) {
        return 1;
    }

    while (p < end) {
        comma = memchr(p, ',', (size_t) (end - p));
        if (comma == NULL) {
            comma = end;
        }

        if ((size_t) (comma - p) == len && memcmp(p, model, len) == 0) {
            return 1;
        }

        p = comma + 1;
    }

    return 0;
}


const char *
aiserve_key_status_name(uint32_t status)
{
    switch (status) {
    case AISERVE_KEY_ACTIVE:
        return "active";
    case AISERVE_KEY_BLOCKED:
        return "blocked";
    case AISERVE_KEY_REVOKED:
        return "revoked";
    }

    return "unknown";
}


/* --- usage ---------------------------------------------------------------- */

static size_t
row_key_encode(const aiserve_row_key_t *rk, unsigned char *buf)
{
    int            i;
    size_t         n, m;
    unsigned char *p;

    p = buf;

    for (i = 24; i >= 0; i -= 8) {
        *p++ = (unsigned char) (rk->key_id >> i);
    }

    for (i = 24; i >= 0; i -= 8) {
        *p++ = (unsigned char) (rk->day >> i);
    }

    n = strnlen(rk->api, AISERVE_API_MAX);
    *p++ = (unsigned char) n;
    memcpy(p, rk->api, n);
    p += n;

    for (i = 56; i >= 0; i -= 8) {
        *p++ = (unsigned char) (rk->price >> i);
    }

    m = strnlen(rk->model, AISERVE_MODEL_MAX);
    memcpy(p, rk->model, m);
    p += m;

    return p - buf;
}


static int
row_key_decode(MDB_val *v, aiserve_row_key_t *rk)
{
    int             i;
    size_t          n, m;
    unsigned char  *p = v->mv_data;

    if (v->mv_size < 9 || v->mv_size > AISERVE_ROW_KEY_LEN) {
        return -1;
    }

    n = p[8];

    if (n > AISERVE_API_MAX || v->mv_size < 9 + n + 8) {
        return -1;
    }

    m = v->mv_size - 9 - n - 8;

    if (m > AISERVE_MODEL_MAX) {
        return -1;
    }

    rk->key_id = (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
                 | (uint32_t) p[2] << 8 | p[3];
    rk->day = (uint32_t) p[4] << 24 | (uint32_t) p[5] << 16
              | (uint32_t) p[6] << 8 | p[7];

    memcpy(rk->api, p + 9, n);
    rk->api[n] = '\0';

    p += 9 + n;
    rk->price = 0;

    for (i = 0; i < 8; i++) {
        rk->price = rk->price << 8 | p[i];
    }

    memcpy(rk->model, p + 8, m);
    rk->model[m] = '\0';

    return 0;
}


/* A stored usage row of any version into *u (zeros where it had no
 * field): 0, or -1 if its size is not one of theirs. */
static int
usage_read(MDB_val *v, aiserve_usage_t *u)
{
    memset(u, 0, sizeof(aiserve_usage_t));

    if (v->mv_size != sizeof(aiserve_usage_t)
        && v->mv_size != AISERVE_USAGE_V2_SIZE
        && v->mv_size != AISERVE_USAGE_V1_SIZE)
    {
        return -1;
    }

    memcpy(u, v->mv_data, v->mv_size);

    return 0;
}


/* Adds u to the row rk in txn: 0 or an LMDB error. */
static int
usage_add(aiserve_ledger_t *l, MDB_txn *txn, const aiserve_row_key_t *rk,
    const aiserve_usage_t *u)
{
    int              rc;
    MDB_val          mk, mv;
    unsigned char    buf[AISERVE_ROW_KEY_LEN];
    aiserve_usage_t  row;

    mk.mv_data = buf;
    mk.mv_size = row_key_encode(rk, buf);

    rc = mdb_get(txn, l->usage, &mk, &mv);

    if (rc == 0) {
        /* a row of a size this code does not know starts again */
        (void) usage_read(&mv, &row);

    } else if (rc == MDB_NOTFOUND) {
        memset(&row, 0, sizeof(aiserve_usage_t));

    } else {
        return rc;
    }

    row.requests += u->requests;
    row.prompt_tokens += u->prompt_tokens;
    row.compute_usec += u->compute_usec;
    row.bytes_in += u->bytes_in;
    row.bytes_out += u->bytes_out;
    row.errors += u->errors;
    row.cost_nano += u->cost_nano;
    row.refused_401 += u->refused_401;
    row.refused_403 += u->refused_403;
    row.refused_429 += u->refused_429;
    row.trained_tokens += u->trained_tokens;

    if (u->storage_bytes > row.storage_bytes) {
        row.storage_bytes = u->storage_bytes;
    }

    mv.mv_data = &row;
    mv.mv_size = sizeof(aiserve_usage_t);

    return mdb_put(txn, l->usage, &mk, &mv, 0);
}


int
aiserve_ledger_wbegin(aiserve_ledger_t *l, uint64_t *seq)
{
    int      rc;
    MDB_val  mk, mv;

    rc = ledger_txn_begin(l, 0, &l->wtxn);
    if (rc != AISERVE_LEDGER_OK) {
        l->wtxn = NULL;
        return rc;
    }

    mk.mv_data = "flush_seq";
    mk.mv_size = sizeof("flush_seq") - 1;

    *seq = 0;

    rc = mdb_get(l->wtxn, l->meta, &mk, &mv);
    if (rc == 0 && mv.mv_size == sizeof(uint64_t)) {
        memcpy(seq, mv.mv_data, sizeof(uint64_t));

    } else if (rc != 0 && rc != MDB_NOTFOUND) {
        aiserve_ledger_wabort(l);
        return ledger_fail(l, rc, "mdb_get(flush_seq)");
    }

    return AISERVE_LEDGER_OK;
}


int
aiserve_ledger_wadd(aiserve_ledger_t *l, const aiserve_row_key_t *rk,
    const aiserve_usage_t *u)
{
    int  rc;

    rc = usage_add(l, l->wtxn, rk, u);
    if (rc != 0) {
        aiserve_ledger_wabort(l);
        return ledger_fail(l, rc, "usage row");
    }

    return AISERVE_LEDGER_OK;
}


int
aiserve_ledger_wcommit(aiserve_ledger_t *l, uint64_t new_seq)
{
    int      rc;
    MDB_val  mk, mv;

    mk.mv_data = "flush_seq";
    mk.mv_size = sizeof("flush_seq") - 1;
    mv.mv_data = &new_seq;
    mv.mv_size = sizeof(uint64_t);

    rc = mdb_put(l->wtxn, l->meta, &mk, &mv, 0);
    if (rc != 0) {
        aiserve_ledger_wabort(l);
        return ledger_fail(l, rc, "mdb_put(flush_seq)");
    }

    rc = mdb_txn_commit(l->wtxn);
    l->wtxn = NULL;

    if (rc != 0) {
        return ledger_fail(l, rc, "mdb_txn_commit(flush)");
    }

    return AISERVE_LEDGER_OK;
}


void
aiserve_ledger_wabort(aiserve_ledger_t *l)
{
    if (l->wtxn) {
        mdb_txn_abort(l->wtxn);
        l->wtxn = NULL;
    }
}


int
aiserve_ledger_flush_seq(aiserve_ledger_t *l, uint64_t *seq)
{
    int      rc;
    MDB_val  mk, mv;

    rc = ledger_rbegin(l);
    if (rc != AISERVE_LEDGER_OK) {
        return rc;
    }

    mk.mv_data = "flush_seq";
    mk.mv_size = sizeof("flush_seq") - 1;

    *seq = 0;

    rc = mdb_get(l->rtxn, l->meta, &mk, &mv);
    if (rc == 0 && mv.mv_size == sizeof(uint64_t)) {
        memcpy(seq, mv.mv_data, sizeof(uint64_t));
        rc = AISERVE_LEDGER_OK;

    } else if (rc == MDB_NOTFOUND) {
        rc = AISERVE_LEDGER_OK;

    } else {
        rc = ledger_fail(l, rc, "mdb_get(flush_seq)");
    }

    ledger_rend(l);

    return rc;
}


typedef struct {
    uint32_t   key_id;
    uint32_t   day_from;
    uint32_t   day_to;
    int      (*cb)(const aiserve_row_key_t *rk, const aiserve_usage_t *u,
                   void *arg);
    void      *arg;
} ledger_usage_each_t;


static int
usage_each_fn(MDB_val *mk, MDB_val *mv, void *arg)
{
    aiserve_usage_t        u;
    aiserve_row_key_t      rk;
    ledger_usage_each_t   *e = arg;

    if (row_key_decode(mk, &rk) != 0 || usage_read(mv, &u) != 0) {
        return 0;
    }

    if (e->key_id && rk.key_id != e->key_id) {
        return 1;
    }

    if ((e->day_from && rk.day < e->day_from)
        || (e->day_to && rk.day > e->day_to))
    {
        return 0;
    }

    return e->cb(&rk, &u, e->arg);
}


int
aiserve_ledger_usage_each(aiserve_ledger_t *l, uint32_t key_id,
    uint32_t day_from, uint32_t day_to,
    int (*cb)(const aiserve_row_key_t *rk, const aiserve_usage_t *u,
              void *arg), void *arg)
{
    MDB_val              mk;
    unsigned char        buf[AISERVE_ROW_KEY_LEN];
    aiserve_row_key_t    rk;
    ledger_usage_each_t  e;

    e.key_id = key_id;
    e.day_from = day_from;
    e.day_to = day_to;
    e.cb = cb;
    e.arg = arg;

    if (key_id == 0) {
        return ledger_each(l, l->usage, NULL, usage_each_fn, &e);
    }

    memset(&rk, 0, sizeof(rk));
    rk.key_id = key_id;
    rk.day = day_from;
    mk.mv_data = buf;
    mk.mv_size = row_key_encode(&rk, buf);

    return ledger_each(l, l->usage, &mk, usage_each_fn, &e);
}


static int
tokens_cb(const aiserve_row_key_t *rk, const aiserve_usage_t *u, void *arg)
{
    *(uint64_t *) arg += u->prompt_tokens + u->trained_tokens;
    return 0;
}


int
aiserve_ledger_tokens_used(aiserve_ledger_t *l, uint32_t key_id,
    uint32_t day_from, uint32_t day_to, uint64_t *tokens)
{
    *tokens = 0;

    return aiserve_ledger_usage_each(l, key_id, day_from, day_to, tokens_cb,
                                     tokens);
}


/* --- file storage ----------------------------------------------------------- */

typedef struct {
    aiserve_row_key_t   rk;
    aiserve_usage_t     u;
} ledger_row_t;


static int
storage_fn(aiserve_ledger_t *l, MDB_txn *txn, void *arg)
{
    ledger_row_t  *row = arg;

    return usage_add(l, txn, &row->rk, &row->u);
}


int
aiserve_ledger_storage(aiserve_ledger_t *l, uint32_t key_id, uint64_t bytes,
    int64_t now)
{
    ledger_row_t  row;

    memset(&row, 0, sizeof(row));
    row.rk.key_id = key_id;
    row.rk.day = aiserve_day(now);
    memcpy(row.rk.api, AISERVE_API_STORAGE, sizeof(AISERVE_API_STORAGE));
    memcpy(row.rk.model, AISERVE_STORAGE_MODEL,
           sizeof(AISERVE_STORAGE_MODEL));
    row.u.storage_bytes = bytes;

    return ledger_write(l, storage_fn, &row, "a storage row");
}


/* --- currency -------------------------------------------------------------- */

static int
currency_read(aiserve_ledger_t *l, MDB_txn *txn, char *out, size_t len)
{
    int      rc;
    MDB_val  mk, mv;

    mk.mv_data = "currency";
    mk.mv_size = sizeof("currency") - 1;

    out[0] = '\0';

    rc = mdb_get(txn, l->meta, &mk, &mv);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }

    if (rc == 0 && mv.mv_size < len) {
        memcpy(out, mv.mv_data, mv.mv_size);
        out[mv.mv_size] = '\0';
    }

    return rc;
}


int
aiserve_ledger_currency(aiserve_ledger_t *l, char *out, size_t len)
{
    int  rc;

    rc = ledger_rbegin(l);
    if (rc != AISERVE_LEDGER_OK) {
        return rc;
    }

    rc = currency_read(l, l->rtxn, out, len);
    ledger_rend(l);

    return rc ? ledger_fail(l, rc, "currency") : AISERVE_LEDGER_OK;
}


static int
currency_set_fn(aiserve_ledger_t *l, MDB_txn *txn, void *arg)
{
    int       rc;
    char      cur[16];
    MDB_val   mk, mv;
    char     *code = arg;

    rc = currency_read(l, txn, cur, sizeof(cur));
    if (rc != 0) {
        return rc;
    }

    if (cur[0] && strcmp(cur, code) != 0) {
        snprintf(l->err, sizeof(l->err), "the ledger's costs are in \"%s\", "
                 "not \"%s\"", cur, code);
        return AISERVE_LEDGER_ERROR;
    }

    if (cur[0]) {
        return 0;
    }

    mk.mv_data = "currency";
    mk.mv_size = sizeof("currency") - 1;
    mv.mv_data = code;
    mv.mv_size = strlen(code);

    return mdb_put(txn, l->meta, &mk, &mv, 0);
}


int
aiserve_ledger_set_currency(aiserve_ledger_t *l, const char *code)
{
    int   i;
    char  lc[4];

    for (i = 0; i < 3 && code[i]; i++) {
        if (!((code[i] >= 'a' && code[i] <= 'z')
              || (code[i] >= 'A' && code[i] <= 'Z')))
        {
            break;
        }
        lc[i] = code[i] | 0x20;
    }

    if (i != 3 || code[3] != '\0') {
        snprintf(l->err, sizeof(l->err), "currency \"%s\": three letters "
                 "(ISO 4217)", code);
        return AISERVE_LEDGER_ERROR;
    }

    lc[3] = '\0';

    return ledger_write(l, currency_set_fn, lc, "the currency");
}


/* --- fine-tuning charges -------------------------------------------------- */

/* Sum of prompt and trained tokens of key_id's rows of days [from, to] in
 * txn, into *sum: 0 or an LMDB error. */
static int
txn_key_tokens(aiserve_ledger_t *l, MDB_txn *txn, uint32_t key_id,
    uint32_t from, uint32_t to, uint64_t *sum)
{
    int                 rc;
    MDB_val             mk, mv;
    MDB_cursor         *cur;
    unsigned char       buf[AISERVE_ROW_KEY_LEN];
    aiserve_usage_t     u;
    aiserve_row_key_t   rk;

    rc = mdb_cursor_open(txn, l->usage, &cur);
    if (rc != 0) {
        return rc;
    }

    memset(&rk, 0, sizeof(rk));
    rk.key_id = key_id;
    rk.day = from;
    mk.mv_data = buf;
    mk.mv_size = row_key_encode(&rk, buf);

    for (rc = mdb_cursor_get(cur, &mk, &mv, MDB_SET_RANGE);
         rc == 0;
         rc = mdb_cursor_get(cur, &mk, &mv, MDB_NEXT))
    {
        if (row_key_decode(&mk, &rk) != 0) {
            continue;
        }

        if (rk.key_id != key_id || rk.day > to) {
            break;
        }

        if (usage_read(&mv, &u) == 0) {
            *sum += u.prompt_tokens + u.trained_tokens;
        }
    }

    mdb_cursor_close(cur);

    return rc == MDB_NOTFOUND ? 0 : rc;
}


/* The keys of account_id (at most max) in txn into ids, their number into
 * *n: 0 or an LMDB error. */
static int
txn_account_keys(aiserve_ledger_t *l, MDB_txn *txn, uint32_t account_id,
    uint32_t *ids, size_t max, size_t *n)
{
    int             rc;
    MDB_val         mk, mv;
    MDB_cursor     *cur;
    aiserve_key_t   k;

    *n = 0;

    rc = mdb_cursor_open(txn, l->keys, &cur);
    if (rc != 0) {
        return rc;
    }

    for (rc = mdb_cursor_get(cur, &mk, &mv, MDB_FIRST);
         rc == 0 && *n < max;
         rc = mdb_cursor_get(cur, &mk, &mv, MDB_NEXT))
    {
        if (key_read(&mv, &k) == AISERVE_LEDGER_OK
            && k.account_id == account_id)
        {
            ids[(*n)++] = k.id;
        }
    }

    mdb_cursor_close(cur);

    return rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
}


/* What open jobs of key_id (account 0) or of account id hold reserved and
 * have not trained, in txn: 0 or an LMDB error. */
static int
txn_training_held(aiserve_ledger_t *l, MDB_txn *txn, uint32_t id,
    int account, uint64_t *sum)
{
    int                  rc;
    MDB_val              mk, mv;
    MDB_cursor          *cur;
    aiserve_training_t   t;

    rc = mdb_cursor_open(txn, l->training, &cur);
    if (rc != 0) {
        return rc;
    }

    for (rc = mdb_cursor_get(cur, &mk, &mv, MDB_FIRST);
         rc == 0;
         rc = mdb_cursor_get(cur, &mk, &mv, MDB_NEXT))
    {
        if (mv.mv_size != sizeof(aiserve_training_t)) {
            continue;
        }

        memcpy(&t, mv.mv_data, sizeof(aiserve_training_t));

        if (t.status == AISERVE_TRAINING_OPEN
            && (account ? t.account_id : t.key_id) == id
            && t.reserved_tokens > t.trained_tokens)
        {
            *sum += t.reserved_tokens - t.trained_tokens;
        }
    }

    mdb_cursor_close(cur);

    return rc == MDB_NOTFOUND ? 0 : rc;
}


/* floor(tokens * price / 1000): nano-units of tokens trained at price
 * micro-units per 1M tokens (exact in 128 bits; saturates). */
static uint64_t
training_cost_nano(uint64_t tokens, uint64_t price)
{
    unsigned __int128  c;

    c = (unsigned __int128) tokens * price / 1000;

    return c > UINT64_MAX ? UINT64_MAX : (uint64_t) c;
}


static int
training_read(MDB_txn *txn, MDB_dbi dbi, const char *job_id,
    aiserve_training_t *t)
{
    int      rc;
    MDB_val  mk, mv;

    mk.mv_data = (void *) job_id;
    mk.mv_size = strlen(job_id);

    rc = mdb_get(txn, dbi, &mk, &mv);
    if (rc != 0) {
        return rc;
    }

    if (mv.mv_size != sizeof(aiserve_training_t)) {
        return MDB_CORRUPTED;
    }

    memcpy(t, mv.mv_data, sizeof(aiserve_training_t));

    return 0;
}


/* Stores *t under its job id and moves training_gen on, in txn. */
static int
training_write(aiserve_ledger_t *l, MDB_txn *txn, aiserve_training_t *t)
{
    int       rc;
    uint64_t  gen;
    MDB_val   mk, mv;

    mk.mv_data = t->job_id;
    mk.mv_size = strlen(t->job_id);
    mv.mv_data = t;
    mv.mv_size = sizeof(aiserve_training_t);

    rc = mdb_put(txn, l->training, &mk, &mv, 0);
    if (rc != 0) {
        return rc;
    }

    return ledger_counter(l, txn, "training_gen", sizeof(uint64_t), &gen);
}


typedef struct {
    aiserve_training_t   t;
    int64_t              now;
    uint64_t             tokens;     /* settle: the running total */
    const char          *model;      /* settle: the row's model */
} training_op_t;


/* Checks one budget (key's or account's) for a new reservation, in txn:
 * 0, an LMDB error, or AISERVE_LEDGER_ERROR with l->err set. */
static int
training_budget(aiserve_ledger_t *l, MDB_txn *txn, training_op_t *op,
    uint32_t id, int account, uint64_t budget, uint32_t period)
{
    int       rc;
    size_t    i, n;
    uint32_t  day, from, to, ids[1024];
    uint64_t  used, held;

    if (budget == 0) {
        return 0;
    }

    day = aiserve_day(op->now);

    if (period == AISERVE_PERIOD_DAY) {
        from = day;
        to = day;
    } else {
        aiserve_month_range(day, &from, &to);
    }

    used = 0;
    held = 0;

    if (account) {
        rc = txn_account_keys(l, txn, id, ids, 1024, &n);
    } else {
        ids[0] = id;
        n = 1;
        rc = 0;
    }

    for (i = 0; i < n && rc == 0; i++) {
        rc = txn_key_tokens(l, txn, ids[i], from, to, &used);
    }

    if (rc == 0) {
        rc = txn_training_held(l, txn, id, account, &held);
    }

    if (rc != 0) {
        return rc;
    }

    if (used + held + op->t.reserved_tokens <= budget) {
        return 0;
    }

    snprintf(l->err, sizeof(l->err), "insufficient_quota: the job needs "
             "%llu trained tokens and the token budget of this %s has "
             "%llu left %s (%llu a %s)",
             (unsigned long long) op->t.reserved_tokens,
             account ? "account" : "API key",
             (unsigned long long) (used + held >= budget
                                   ? 0 : budget - used - held),
             period == AISERVE_PERIOD_DAY ? "today" : "this month",
             (unsigned long long) budget,
             period == AISERVE_PERIOD_DAY ? "day" : "month");

    return AISERVE_LEDGER_ERROR;
}


static int
training_reserve_fn(aiserve_ledger_t *l, MDB_txn *txn, void *arg)
{
    int                 rc;
    MDB_val             mk, mv;
    aiserve_key_t       k;
    aiserve_account_t   a;
    aiserve_training_t  old;
    training_op_t      *op = arg;

    rc = training_read(txn, l->training, op->t.job_id, &old);

    if (rc == 0) {
        if (old.account_id != op->t.account_id) {
            snprintf(l->err, sizeof(l->err), "job %s belongs to another "
                     "account", op->t.job_id);
            return AISERVE_LEDGER_ERROR;
        }

        op->t = old;
        return 0;
    }

    if (rc != MDB_NOTFOUND) {
        return rc;
    }

    mk = key_id_val(&op->t.key_id);

    rc = mdb_get(txn, l->keys, &mk, &mv);
    if (rc == 0 && key_read(&mv, &k) != AISERVE_LEDGER_OK) {
        rc = MDB_CORRUPTED;
    }

    if (rc == MDB_NOTFOUND || (rc == 0 && k.account_id != op->t.account_id))
    {
        snprintf(l->err, sizeof(l->err), "no key key_%u of acct_%u",
                 op->t.key_id, op->t.account_id);
        return AISERVE_LEDGER_ERROR;
    }

    if (rc != 0) {
        return rc;
    }

    mk = key_id_val(&op->t.account_id);

    rc = mdb_get(txn, l->accounts, &mk, &mv);
    if (rc == 0 && mv.mv_size != sizeof(aiserve_account_t)) {
        rc = MDB_CORRUPTED;
    }

    if (rc != 0) {
        return rc;
    }

    memcpy(&a, mv.mv_data, sizeof(aiserve_account_t));

    rc = training_budget(l, txn, op, k.id, 0, k.budget_tokens,
                         k.budget_period);
    if (rc != 0) {
        return rc;
    }

    rc = training_budget(l, txn, op, a.id, 1, a.budget_tokens,
                         a.budget_period);
    if (rc != 0) {
        return rc;
    }

    return training_write(l, txn, &op->t);
}


/* Copies a string argument into a fixed field: 0, or -1 (with l->err)
 * if it is empty or too long. */
static int
training_name(aiserve_ledger_t *l, char *to, size_t size, const char *s,
    const char *what)
{
    size_t  n;

    n = s ? strlen(s) : 0;

    if (n == 0 || n >= size) {
        snprintf(l->err, sizeof(l->err), "%s: 1 to %zu bytes", what,
                 size - 1);
        return -1;
    }

    memcpy(to, s, n + 1);

    return 0;
}


/* The result of a training operation: rc, with l->err copied to err. */
static int
training_result(aiserve_ledger_t *l, int rc, char *err, size_t errlen)
{
    if (rc != AISERVE_LEDGER_OK && errlen) {
        snprintf(err, errlen, "%s", l->err);
    }

    return rc;
}


int
aiserve_ledger_training_reserve(aiserve_ledger_t *l, uint32_t account_id,
    uint32_t key_id, const char *model, const char *job_id, int64_t tokens,
    uint64_t price, int64_t now, char *err, size_t errlen)
{
    training_op_t  op;

    memset(&op, 0, sizeof(op));

    if (training_name(l, op.t.job_id, sizeof(op.t.job_id), job_id,
                      "job id") != 0
        || training_name(l, op.t.model, sizeof(op.t.model), model,
                         "model") != 0)
    {
        return training_result(l, AISERVE_LEDGER_ERROR, err, errlen);
    }

    if (tokens < 0 || (uint64_t) tokens > AISERVE_KEY_LIMIT_MAX) {
        snprintf(l->err, sizeof(l->err), "job %s: %lld tokens to reserve",
                 job_id, (long long) tokens);
        return training_result(l, AISERVE_LEDGER_ERROR, err, errlen);
    }

    op.t.version = AISERVE_TRAINING_RECORD_VERSION;
    op.t.status = AISERVE_TRAINING_OPEN;
    op.t.account_id = account_id;
    op.t.key_id = key_id;
    op.t.reserved_tokens = (uint64_t) tokens;
    op.t.price = price;
    op.t.created = now;
    op.t.updated = now;
    op.now = now;

    return training_result(l, ledger_write(l, training_reserve_fn, &op,
                                           "a training reservation"),
                           err, errlen);
}


/* Reads op->t.job_id into op->t, in txn, if it belongs to
 * op->t.account_id: 0, AISERVE_LEDGER_NOTFOUND or an LMDB error. */
static int
training_find(aiserve_ledger_t *l, MDB_txn *txn, training_op_t *op)
{
    int                 rc;
    uint32_t            account_id;
    aiserve_training_t  t;

    account_id = op->t.account_id;

    rc = training_read(txn, l->training, op->t.job_id, &t);

    if (rc == MDB_NOTFOUND || (rc == 0 && t.account_id != account_id)) {
        snprintf(l->err, sizeof(l->err), "no fine-tuning job %s of acct_%u",
                 op->t.job_id, account_id);
        return AISERVE_LEDGER_NOTFOUND;
    }

    if (rc == 0) {
        op->t = t;
    }

    return rc;
}


static int
training_settle_fn(aiserve_ledger_t *l, MDB_txn *txn, void *arg)
{
    int                 rc;
    uint64_t            cost;
    aiserve_usage_t     u;
    aiserve_row_key_t   rk;
    training_op_t      *op = arg;

    rc = training_find(l, txn, op);
    if (rc != 0) {
        return rc;
    }

    if (op->tokens <= op->t.trained_tokens) {
        /* settled already: a repeat after a crash, or a late call */
        return 0;
    }

    if (op->t.status != AISERVE_TRAINING_OPEN) {
        snprintf(l->err, sizeof(l->err), "fine-tuning job %s is released: "
                 "%llu trained tokens settled, %llu is too late",
                 op->t.job_id, (unsigned long long) op->t.trained_tokens,
                 (unsigned long long) op->tokens);
        return AISERVE_LEDGER_ERROR;
    }

    cost = training_cost_nano(op->tokens, op->t.price);

    memset(&rk, 0, sizeof(rk));
    rk.key_id = op->t.key_id;
    rk.day = aiserve_day(op->now);
    rk.price = op->t.price;
    memcpy(rk.api, AISERVE_API_FINE_TUNING, sizeof(AISERVE_API_FINE_TUNING));
    memcpy(rk.model, op->model[0] ? op->model : op->t.model,
           strlen(op->model[0] ? op->model : op->t.model) + 1);

    memset(&u, 0, sizeof(u));
    u.trained_tokens = op->tokens - op->t.trained_tokens;
    u.cost_nano = cost - op->t.cost_nano;

    rc = usage_add(l, txn, &rk, &u);
    if (rc != 0) {
        return rc;
    }

    op->t.trained_tokens = op->tokens;
    op->t.cost_nano = cost;
    op->t.updated = op->now;

    return training_write(l, txn, &op->t);
}


int
aiserve_ledger_training_settle(aiserve_ledger_t *l, uint32_t account_id,
    const char *model, const char *job_id, int64_t trained_tokens,
    int64_t now, char *err, size_t errlen)
{
    training_op_t  op;

    memset(&op, 0, sizeof(op));

    if (training_name(l, op.t.job_id, sizeof(op.t.job_id), job_id,
                      "job id") != 0)
    {
        return training_result(l, AISERVE_LEDGER_ERROR, err, errlen);
    }

    if (model == NULL) {
        model = "";
    }

    if (strlen(model) > AISERVE_MODEL_MAX || trained_tokens < 0) {
        snprintf(l->err, sizeof(l->err), "job %s: a model name of at most "
                 "%d bytes and a count of tokens, not negative", job_id,
                 AISERVE_MODEL_MAX);
        return training_result(l, AISERVE_LEDGER_ERROR, err, errlen);
    }

    op.t.account_id = account_id;
    op.tokens = (uint64_t) trained_tokens;
    op.model = model;
    op.now = now;

    return training_result(l, ledger_write(l, training_settle_fn, &op,
                                           "a training charge"),
                           err, errlen);
}


static int
training_release_fn(aiserve_ledger_t *l, MDB_txn *txn, void *arg)
{
    int             rc;
    training_op_t  *op = arg;

    rc = training_find(l, txn, op);
    if (rc != 0 || op->t.status == AISERVE_TRAINING_RELEASED) {
        return rc;
    }

    op->t.status = AISERVE_TRAINING_RELEASED;
    op->t.updated = op->now;

    return training_write(l, txn, &op->t);
}


int
aiserve_ledger_training_release(aiserve_ledger_t *l, uint32_t account_id,
    const char *job_id, int64_t now, char *err, size_t errlen)
{
    training_op_t  op;

    memset(&op, 0, sizeof(op));

    if (training_name(l, op.t.job_id, sizeof(op.t.job_id), job_id,
                      "job id") != 0)
    {
        return training_result(l, AISERVE_LEDGER_ERROR, err, errlen);
    }

    op.t.account_id = account_id;
    op.now = now;

    return training_result(l, ledger_write(l, training_release_fn, &op,
                                           "a training release"),
                           err, errlen);
}


int
aiserve_ledger_training_get(aiserve_ledger_t *l, const char *job_id,
    aiserve_training_t *t)
{
    int  rc;

    rc = ledger_rbegin(l);
    if (rc != AISERVE_LEDGER_OK) {
        return rc;
    }

    rc = training_read(l->rtxn, l->training, job_id, t);
    ledger_rend(l);

    if (rc == MDB_NOTFOUND) {
        return AISERVE_LEDGER_NOTFOUND;
    }

    return rc ? ledger_fail(l, rc, "fine-tuning job %s", job_id)
              : AISERVE_LEDGER_OK;
}


int
aiserve_ledger_training_held(aiserve_ledger_t *l, uint32_t id, int account,
    uint64_t *tokens, uint64_t *gen)
{
    int      rc;
    MDB_val  mk, mv;

    *tokens = 0;
    *gen = 0;

    rc = ledger_rbegin(l);
    if (rc != AISERVE_LEDGER_OK) {
        return rc;
    }

    rc = id ? txn_training_held(l, l->rtxn, id, account, tokens) : 0;

    if (rc == 0) {
        mk.mv_data = "training_gen";
        mk.mv_size = sizeof("training_gen") - 1;

        rc = mdb_get(l->rtxn, l->meta, &mk, &mv);

        if (rc == 0 && mv.mv_size == sizeof(uint64_t)) {
            memcpy(gen, mv.mv_data, sizeof(uint64_t));
        }

        if (rc == MDB_NOTFOUND || rc == 0) {
            rc = 0;
        }
    }

    ledger_rend(l);

    return rc ? ledger_fail(l, rc, "training reservations") : 0;
}


void
aiserve_row_id(const aiserve_row_key_t *rk, char out[17])
{
    int            i, n;
    char           buf[64 + AISERVE_API_MAX + AISERVE_MODEL_MAX];
    unsigned char  md[SHA256_DIGEST_LENGTH];

    if (rk->api[0] == '\0') {
        n = snprintf(buf, sizeof(buf), "%u|%u|%s", rk->key_id, rk->day,
                     rk->model);
    } else {
        n = snprintf(buf, sizeof(buf), "%u|%u|%s|%s|%llu", rk->key_id,
                     rk->day, rk->model, rk->api,
                     (unsigned long long) rk->price);
    }
    SHA256((const unsigned char *) buf, (size_t) n, md);

    for (i = 0; i < 8; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
}


uint64_t
aiserve_cost_micro(uint64_t cost_nano)
{
    return (cost_nano + 500) / 1000;
}


uint32_t
aiserve_day(int64_t t)
{
    time_t     tt = (time_t) t;
    struct tm  tm;

    gmtime_r(&tt, &tm);

    return (uint32_t) ((tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100
                       + tm.tm_mday);
}


void
aiserve_month_range(uint32_t day, uint32_t *first, uint32_t *last)
{
    *first = day / 100 * 100 + 1;
    *last = day / 100 * 100 + 31;
}


int
aiserve_parse_size(const char *s, size_t *out)
{
    char      *end;
    unsigned long long  n;

    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno || end == s) {
        return -1;
    }

    switch (*end) {
    case 'k': case 'K':
        n <<= 10; end++;
        break;
    case 'm': case 'M':
        n <<= 20; end++;
        break;
    case 'g': case 'G':
        n <<= 30; end++;
        break;
    }

    if (*end != '\0') {
        return -1;
    }

    *out = (size_t) n;
    return 0;
}


/* --- accounts ------------------------------------------------------------- */

static int
account_create_fn(aiserve_ledger_t *l, MDB_txn *txn, void *arg)
{
    aiserve_account_t  *a = arg;

    a->status = AISERVE_ACCOUNT_ACTIVE;

    return account_insert(l, txn, a);
}


int
aiserve_ledger_account_create(aiserve_ledger_t *l, aiserve_account_t *a)
{
    if (account_check(l, a) != AISERVE_LEDGER_OK) {
        return AISERVE_LEDGER_ERROR;
    }

    return ledger_write(l, account_create_fn, a, "account");
}


int
aiserve_ledger_account_get(aiserve_ledger_t *l, uint32_t id,
    aiserve_account_t *a)
{
    return ledger_get(l, l->accounts, id, a, sizeof(aiserve_account_t));
}


int
aiserve_ledger_account_put(aiserve_ledger_t *l, aiserve_account_t *a)
{
    int              rc;
    ledger_update_t  u;

    if (account_check(l, a) != AISERVE_LEDGER_OK) {
        return AISERVE_LEDGER_ERROR;
    }

    a->updated = time(NULL);

    u.dbi = l->accounts;
    u.id = a->id;
    u.data = a;
    u.size = sizeof(aiserve_account_t);

    rc = ledger_write(l, ledger_update_fn, &u, "account");

    if (rc == AISERVE_LEDGER_NOTFOUND) {
        snprintf(l->err, sizeof(l->err), "no account acct_%u", a->id);
    }

    return rc;
}


typedef struct {
    uint32_t   id;
    unsigned   revoked;
} ledger_close_t;


static int
account_close_fn(aiserve_ledger_t *l, MDB_txn *txn, void *arg)
{
    int                 rc;
    MDB_val             mk, mv;
    MDB_cursor         *cur;
    aiserve_key_t       k;
    aiserve_account_t   a;
    ledger_close_t     *c = arg;

    mk = key_id_val(&c->id);

    rc = mdb_get(txn, l->accounts, &mk, &mv);
    if (rc == MDB_NOTFOUND) {
        snprintf(l->err, sizeof(l->err), "no account acct_%u", c->id);
        return AISERVE_LEDGER_NOTFOUND;
    }

    if (rc == 0 && mv.mv_size != sizeof(aiserve_account_t)) {
        rc = MDB_CORRUPTED;
    }

    if (rc != 0) {
        return rc;
    }

    memcpy(&a, mv.mv_data, sizeof(aiserve_account_t));

    if (a.status == AISERVE_ACCOUNT_CLOSED) {
        snprintf(l->err, sizeof(l->err), "acct_%u is closed", c->id);
        return AISERVE_LEDGER_ERROR;
    }

    a.status = AISERVE_ACCOUNT_CLOSED;
    a.updated = time(NULL);
    mv.mv_data = &a;
    mv.mv_size = sizeof(aiserve_account_t);

    rc = mdb_put(txn, l->accounts, &mk, &mv, 0);
    if (rc != 0) {
        return rc;
    }

    rc = mdb_cursor_open(txn, l->keys, &cur);
    if (rc != 0) {
        return rc;
    }

    for (rc = mdb_cursor_get(cur, &mk, &mv, MDB_FIRST);
         rc == 0;
         rc = mdb_cursor_get(cur, &mk, &mv, MDB_NEXT))
    {
        if (key_read(&mv, &k) != AISERVE_LEDGER_OK
            || k.account_id != c->id || k.status == AISERVE_KEY_REVOKED)
        {
            continue;
        }

        k.status = AISERVE_KEY_REVOKED;
        k.updated = a.updated;
        mv.mv_data = &k;
        mv.mv_size = sizeof(aiserve_key_t);

        rc = mdb_cursor_put(cur, &mk, &mv, MDB_CURRENT);
        if (rc != 0) {
            break;
        }

        c->revoked++;
    }

    mdb_cursor_close(cur);

    return rc == MDB_NOTFOUND ? 0 : rc;
}


int
aiserve_ledger_account_close(aiserve_ledger_t *l, uint32_t id,
    unsigned *revoked)
{
    int             rc;
    ledger_close_t  c;

    c.id = id;
    c.revoked = 0;

    rc = ledger_write(l, account_close_fn, &c, "an account");

    *revoked = c.revoked;

    return rc;
}


static int
account_each_fn(MDB_val *mk, MDB_val *mv, void *arg)
{
    aiserve_account_t   a;
    ledger_each_t      *e = arg;

    if (mv->mv_size != sizeof(aiserve_account_t)) {
        return 0;
    }

    memcpy(&a, mv->mv_data, sizeof(aiserve_account_t));

    return e->cb.account(&a, e->arg);
}


int
aiserve_ledger_account_each(aiserve_ledger_t *l,
    int (*cb)(const aiserve_account_t *a, void *arg), void *arg)
{
    ledger_each_t  e;

    e.cb.account = cb;
    e.arg = arg;

    return ledger_each(l, l->accounts, NULL, account_each_fn, &e);
}


const char *
aiserve_account_status_name(uint32_t status)
{
    return status == AISERVE_ACCOUNT_SUSPENDED ? "suspended"
           : status == AISERVE_ACCOUNT_CLOSED ? "closed" : "active";
}


typedef struct {
    uint32_t   account_id;
    size_t     n;
    uint32_t   ids[256];
    int        more;
} ledger_account_keys_t;


static int
account_keys_cb(const aiserve_key_t *k, void *arg)
{
    ledger_account_keys_t  *ak = arg;

    if (k->account_id != ak->account_id) {
        return 0;
    }

    if (ak->n == sizeof(ak->ids) / sizeof(ak->ids[0])) {
        ak->more = 1;
        return 1;
    }

    ak->ids[ak->n++] = k->id;

    return 0;
}


int
aiserve_ledger_account_tokens_used(aiserve_ledger_t *l,
    uint32_t account_id, uint32_t day_from, uint32_t day_to,
    uint64_t *tokens)
{
    int                     rc;
    size_t                  i;
    uint64_t                t;
    ledger_account_keys_t   ak;

    *tokens = 0;

    memset(&ak, 0, sizeof(ak));
    ak.account_id = account_id;

    rc = aiserve_ledger_key_each(l, account_keys_cb, &ak);
    if (rc != AISERVE_LEDGER_OK) {
        return rc;
    }

    if (ak.more) {
        snprintf(l->err, sizeof(l->err), "acct_%u has more than %zu keys",
                 account_id, sizeof(ak.ids) / sizeof(ak.ids[0]));
        return AISERVE_LEDGER_ERROR;
    }

    for (i = 0; i < ak.n; i++) {
        rc = aiserve_ledger_tokens_used(l, ak.ids[i], day_from, day_to, &t);
        if (rc != AISERVE_LEDGER_OK) {
            return rc;
        }
        *tokens += t;
    }

    return AISERVE_LEDGER_OK;
}


/* --- audit trail ---------------------------------------------------------- */

/* Appends e in txn under the next sequence number: 0 or an LMDB error. */
static int
ledger_audit_put(aiserve_ledger_t *l, MDB_txn *txn, aiserve_audit_t *e)
{
    int      rc;
    MDB_val  mk, mv;

    rc = ledger_counter(l, txn, "next_audit", sizeof(uint64_t), &e->seq);
    if (rc != 0) {
        return rc;
    }

    mk.mv_data = &e->seq;
    mk.mv_size = sizeof(uint64_t);
    mv.mv_data = e;
    mv.mv_size = sizeof(aiserve_audit_t);

    return mdb_put(txn, l->audit, &mk, &mv, MDB_NOOVERWRITE);
}


static int
audit_add_fn(aiserve_ledger_t *l, MDB_txn *txn, void *arg)
{
    return ledger_audit_put(l, txn, arg);
}


int
aiserve_ledger_audit_add(aiserve_ledger_t *l, aiserve_audit_t *e)
{
    return ledger_write(l, audit_add_fn, e, "an audit entry");
}


static int
audit_each_fn(MDB_val *mk, MDB_val *mv, void *arg)
{
    aiserve_audit_t   a;
    ledger_each_t    *e = arg;

    if (mv->mv_size != sizeof(aiserve_audit_t)) {
        return 0;
    }

    memcpy(&a, mv->mv_data, sizeof(aiserve_audit_t));

    return e->cb.audit(&a, e->arg);
}


int
aiserve_ledger_audit_each(aiserve_ledger_t *l, uint64_t from,
    int (*cb)(const aiserve_audit_t *e, void *arg), void *arg)
{
    MDB_val        mk;
    ledger_each_t  e;

    e.cb.audit = cb;
    e.arg = arg;

    mk.mv_data = &from;
    mk.mv_size = sizeof(uint64_t);

    return ledger_each(l, l->audit, &mk, audit_each_fn, &e);
}


/* --- validation shared by aiserve-keys and the admin API ------------------ */

int
aiserve_limits_check(uint64_t rpm, uint64_t tpm, uint64_t budget,
    uint32_t period, char *err, size_t errlen)
{
    if (rpm > AISERVE_KEY_LIMIT_MAX || tpm > AISERVE_KEY_LIMIT_MAX
        || budget > AISERVE_KEY_LIMIT_MAX)
    {
        snprintf(err, errlen, "a limit is over the maximum of %llu",
                 (unsigned long long) AISERVE_KEY_LIMIT_MAX);
        return -1;
    }

    if (budget && period != AISERVE_PERIOD_DAY
        && period != AISERVE_PERIOD_MONTH)
    {
        snprintf(err, errlen, "a budget needs a period (day or month)");
        return -1;
    }

    return 0;
}


/* The last second of 9999-12-31 UTC: the latest expiry. */
#define AISERVE_EXPIRES_MAX  253402300799LL


int
aiserve_name_check(const char *s, size_t len, char *err, size_t errlen)
{
    size_t  i;

    if (len >= AISERVE_KEY_NAME_MAX) {
        snprintf(err, errlen, "a name has at most %d bytes",
                 AISERVE_KEY_NAME_MAX - 1);
        return -1;
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) {
            snprintf(err, errlen, "a name has no control characters "
                     "(byte %zu is 0x%02x)", i, (unsigned char) s[i]);
            return -1;
        }
    }

    return 0;
}


int
aiserve_parse_date(const char *s, size_t len, int64_t *t)
{
    int        y, m, d;
    size_t     i;
    struct tm  tm;

    if (len != 10 || s[4] != '-' || s[7] != '-') {
        return -1;
    }

    for (i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) {
            return -1;
        }
    }

    y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10
        + (s[3] - '0');
    m = (s[5] - '0') * 10 + (s[6] - '0');
    d = (s[8] - '0') * 10 + (s[9] - '0');

    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > 31) {
        return -1;
    }

    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    *t = timegm(&tm);

    /* timegm() carries 2026-02-30 into March: such a day does not exist */
    gmtime_r((time_t *) t, &tm);

    return (tm.tm_mday == d && tm.tm_mon == m - 1) ? 0 : -1;
}


int
aiserve_parse_expires(const char *s, int64_t now, int64_t *out, char *err,
    size_t errlen)
{
    char                *end;
    long long            n, unit;
    unsigned long long   u;

    if (strcmp(s, "never") == 0) {
        *out = 0;
        return 0;
    }

    if (s[0] == '+') {
        errno = 0;
        n = strtoll(s + 1, &end, 10);
        unit = strcmp(end, "d") == 0 ? 86400
               : strcmp(end, "h") == 0 ? 3600
               : strcmp(end, "s") == 0 ? 1 : 0;

        if (s[1] < '0' || s[1] > '9' || errno == ERANGE || n <= 0
            || unit == 0)
        {
            snprintf(err, errlen, "invalid expiry \"%s\" (+N followed by "
                     "d, h or s)", s);
            return -1;
        }

        if (n > (AISERVE_EXPIRES_MAX - now) / unit) {
            snprintf(err, errlen, "expiry \"%s\" is after 9999-12-31", s);
            return -1;
        }

        *out = now + n * unit;
        return 0;
    }

    if (strchr(s, '-')) {
        if (aiserve_parse_date(s, strlen(s), out) != 0) {
            snprintf(err, errlen, "invalid expiry \"%s\" (YYYY-MM-DD)", s);
            return -1;
        }

    } else {
        errno = 0;
        u = strtoull(s, &end, 10);

        if (*s < '0' || *s > '9' || *end != '\0' || errno == ERANGE
            || u > (unsigned long long) AISERVE_EXPIRES_MAX)
        {
            snprintf(err, errlen, "invalid expiry \"%s\" (never, +30d, "
                     "YYYY-MM-DD or unix seconds up to 9999-12-31)", s);
            return -1;
        }

        *out = (int64_t) u;
    }

    if (*out <= now) {
        snprintf(err, errlen, "expiry \"%s\" is in the past", s);
        return -1;
    }

    return 0;
}


int
aiserve_parse_duration(const char *s, int64_t max, int64_t *out, char *err,
    size_t errlen)
{
    char                *end;
    long long            unit;
    unsigned long long   n;

    errno = 0;
    n = strtoull(s, &end, 10);

    unit = *end == '\0' || strcmp(end, "s") == 0 ? 1
           : strcmp(end, "m") == 0 ? 60
           : strcmp(end, "h") == 0 ? 3600
           : strcmp(end, "d") == 0 ? 86400 : 0;

    if (*s < '0' || *s > '9' || errno == ERANGE || unit == 0
        || n > (unsigned long long) max / (unsigned long long) unit
        || (long long) n * unit > max)
    {
        snprintf(err, errlen, "invalid duration \"%s\" (N, Ns, Nm, Nh or "
                 "Nd, at most %lld seconds)", s, (long long) max);
        return -1;
    }

    *out = (int64_t) n * unit;

    return 0;
}
