/*
 * aiserve files: the store behind the Files API; see aiserve_files.h.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <lmdb.h>
#include <openssl/rand.h>

#include "aiserve_data.h"
#include "aiserve_files.h"


struct aiserve_files_s {
    MDB_env   *env;
    MDB_dbi    files;              /* id -> aiserve_file_t */
    MDB_dbi    usage;              /* account id (uint32) -> bytes */
    MDB_dbi    meta;               /* "version" -> uint32 */
    char       dir[4096];
};


/* A record of a version 1 store: aiserve_file_t with a purpose of 16
 * bytes. */
typedef struct {
    char      id[AISERVE_FILES_ID_LEN + 1];
    uint32_t  account_id;
    uint32_t  status;
    uint64_t  bytes;
    int64_t   created_at;
    uint64_t  examples;
    uint64_t  tokens;
    uint32_t  num_labels;
    char      format[8];
    char      purpose[16];
    char      filename[AISERVE_FILES_NAME_MAX + 1];
    char      details[AISERVE_FILES_DETAILS_MAX + 1];
} aiserve_file_v1_t;


const char *
aiserve_file_status_name(uint32_t status)
{
    switch (status) {
    case AISERVE_FILE_PROCESSED:
        return "processed";
    case AISERVE_FILE_ERROR:
        return "error";
    default:
        return "uploaded";
    }
}


/* Ends a write transaction: commits it when rc is 0, else aborts it;
 * returns the commit's result or rc. */
static int
aiserve_files_end(MDB_txn *txn, int rc)
{
    if (rc == 0) {
        return mdb_txn_commit(txn);
    }

    mdb_txn_abort(txn);
    return rc;
}


/*
 * Converts every version 1 record of the store to aiserve_file_t in txn
 * (the same fields, the purpose in its longer field); *n gets how many.
 * An MDB error code, or -1 with err naming a record of neither size.
 */
static int
aiserve_files_migrate_v1(aiserve_files_t *fs, MDB_txn *txn, size_t *n,
    char *err, size_t err_len)
{
    int                 rc;
    char                key[AISERVE_FILES_ID_LEN + 1];
    MDB_val             k, v;
    MDB_cursor         *cur;
    aiserve_file_t      f;
    aiserve_file_v1_t   old;

    *n = 0;

    rc = mdb_cursor_open(txn, fs->files, &cur);
    if (rc != 0) {
        return rc;
    }

    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
         rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
    {
        if (v.mv_size == sizeof(aiserve_file_t)) {
            continue;
        }

        if (v.mv_size != sizeof(aiserve_file_v1_t)
            || k.mv_size > AISERVE_FILES_ID_LEN)
        {
            snprintf(err, err_len, "the record \"%.*s\" has %zu bytes: "
                     "not a file record of version 1",
                     (int) (k.mv_size < 64 ? k.mv_size : 64),
                     (char *) k.mv_data, v.mv_size);
            mdb_cursor_close(cur);
            return -1;
        }

        /* LMDB aligns values to 2 bytes: read through a copy */
        memcpy(&old, v.mv_data, sizeof(old));
        memset(&f, 0, sizeof(f));

        memcpy(f.id, old.id, sizeof(f.id));
        f.account_id = old.account_id;
        f.status = old.status;
        f.bytes = old.bytes;
        f.created_at = old.created_at;
        f.examples = old.examples;
        f.tokens = old.tokens;
        f.num_labels = old.num_labels;
        memcpy(f.format, old.format, sizeof(f.format));
        memcpy(f.purpose, old.purpose, sizeof(old.purpose));
        f.purpose[sizeof(old.purpose) - 1] = '\0';
        memcpy(f.filename, old.filename, sizeof(f.filename));
        memcpy(f.details, old.details, sizeof(f.details));

        /* the key points into the page the resized value is written
         * to: the put reads it from a copy */
        memcpy(key, k.mv_data, k.mv_size);
        k.mv_data = key;
        v.mv_data = &f;
        v.mv_size = sizeof(f);

        rc = mdb_cursor_put(cur, &k, &v, MDB_CURRENT);
        if (rc != 0) {
            break;
        }

        (*n)++;
    }

    mdb_cursor_close(cur);

    return rc == MDB_NOTFOUND ? 0 : rc;
}


/*
 * The store's version in txn: written for a new store, an older one
 * migrated (*migrated records), a newer one refused.  0, an MDB error,
 * or -1 with err.
 */
static int
aiserve_files_version(aiserve_files_t *fs, MDB_txn *txn, size_t *migrated,
    char *err, size_t err_len)
{
    int          rc;
    uint32_t     version;
    MDB_val      k, v, fk, fv;
    MDB_cursor  *cur;

    k.mv_data = "version";
    k.mv_size = sizeof("version") - 1;

    rc = mdb_get(txn, fs->meta, &k, &v);

    if (rc == 0) {
        if (v.mv_size != sizeof(uint32_t)) {
            snprintf(err, err_len, "the store's version has %zu bytes",
                     v.mv_size);
            return -1;
        }
        memcpy(&version, v.mv_data, sizeof(uint32_t));

    } else if (rc == MDB_NOTFOUND) {
        /* no version: a new store, or one of version 1 (which had
         * records and no "meta") */
        rc = mdb_cursor_open(txn, fs->files, &cur);
        if (rc != 0) {
            return rc;
        }
        rc = mdb_cursor_get(cur, &fk, &fv, MDB_FIRST);
        mdb_cursor_close(cur);

        if (rc != 0 && rc != MDB_NOTFOUND) {
            return rc;
        }
        version = rc == 0 ? 1 : AISERVE_FILES_VERSION;
        rc = 0;

    } else {
        return rc;
    }

    if (version > AISERVE_FILES_VERSION) {
        snprintf(err, err_len, "the store is of version %u; this aiserve "
                 "reads versions up to %d", version, AISERVE_FILES_VERSION);
        return -1;
    }

    if (version == 1) {
        rc = aiserve_files_migrate_v1(fs, txn, migrated, err, err_len);
        if (rc != 0) {
            return rc;
        }
    }

    if (version != AISERVE_FILES_VERSION
        || mdb_get(txn, fs->meta, &k, &v) == MDB_NOTFOUND)
    {
        version = AISERVE_FILES_VERSION;
        v.mv_data = &version;
        v.mv_size = sizeof(version);
        return mdb_put(txn, fs->meta, &k, &v, 0);
    }

    return 0;
}


aiserve_files_t *
aiserve_files_open(const char *dir, size_t map_size, size_t *migrated,
    char *err, size_t err_len)
{
    int               rc;
    char              meta[4200], why[256];
    size_t            n;
    MDB_txn          *txn;
    aiserve_files_t  *fs;

    if (migrated) {
        *migrated = 0;
    }

    fs = calloc(1, sizeof(aiserve_files_t));
    if (fs == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }

    if (snprintf(fs->dir, sizeof(fs->dir), "%s", dir)
        >= (int) sizeof(fs->dir))
    {
        snprintf(err, err_len, "files directory \"%s\" is too long", dir);
        free(fs);
        return NULL;
    }

    snprintf(meta, sizeof(meta), "%s/meta", dir);

    if (mkdir(meta, 0700) != 0 && errno != EEXIST) {
        snprintf(err, err_len, "mkdir(\"%s\"): %s", meta, strerror(errno));
        free(fs);
        return NULL;
    }

    rc = mdb_env_create(&fs->env);
    if (rc == 0) {
        mdb_env_set_maxdbs(fs->env, 4);
        rc = mdb_env_set_mapsize(fs->env, map_size ? map_size : 64 << 20);
    }

    if (rc == 0) {
        rc = mdb_env_open(fs->env, meta, MDB_NOTLS, 0600);
    }

    if (rc != 0) {
        snprintf(err, err_len, "mdb_env_open(\"%s\"): %s", meta,
                 mdb_strerror(rc));
        goto failed;
    }

    rc = mdb_txn_begin(fs->env, NULL, 0, &txn);
    if (rc != 0) {
        snprintf(err, err_len, "mdb_txn_begin(\"%s\"): %s", meta,
                 mdb_strerror(rc));
        goto failed;
    }

    rc = mdb_dbi_open(txn, "files", MDB_CREATE, &fs->files);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "usage", MDB_CREATE | MDB_INTEGERKEY,
                          &fs->usage);
    }
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &fs->meta);
    }

    if (rc != 0) {
        mdb_txn_abort(txn);
        snprintf(err, err_len, "mdb_dbi_open(\"%s\"): %s", meta,
                 mdb_strerror(rc));
        goto failed;
    }

    n = 0;
    why[0] = '\0';

    rc = aiserve_files_end(txn,
             aiserve_files_version(fs, txn, &n, why, sizeof(why)));

    if (rc != 0) {
        snprintf(err, err_len, "\"%s\": %s", meta,
                 rc == -1 ? why : mdb_strerror(rc));
        goto failed;
    }

    if (migrated) {
        *migrated = n;
    }

    return fs;

failed:

    mdb_env_close(fs->env);
    free(fs);
    return NULL;
}


void
aiserve_files_close(aiserve_files_t *fs)
{
    if (fs) {
        mdb_env_close(fs->env);
        free(fs);
    }
}


int
aiserve_files_path(const aiserve_files_t *fs, const char *id, char *buf,
    size_t len)
{
    return snprintf(buf, len, "%s/%s", fs->dir, id) >= (int) len ? -1 : 0;
}


/* "file-" + 13 hex digits of microseconds + 11 random hex digits */
int
aiserve_files_new_id(char *id, int64_t *created_at)
{
    unsigned char   rnd[6];
    struct timeval  tv;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return -1;
    }

    gettimeofday(&tv, NULL);
    *created_at = tv.tv_sec;

    snprintf(id, AISERVE_FILES_ID_LEN + 1,
             "file-%013llx%02x%02x%02x%02x%02x%01x",
             (unsigned long long) tv.tv_sec * 1000000 + tv.tv_usec,
             rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5] & 0xf);
    return 0;
}


/* Writes data to path through path.tmp: write, fsync, rename. */
static int
aiserve_files_write(const char *dir, const char *id, const void *data,
    size_t len, char *err, size_t err_len)
{
    int          fd;
    char         tmp[4200], path[4200];
    size_t       done;
    ssize_t      n;
    const char  *p = data;

    snprintf(tmp, sizeof(tmp), "%s/.tmp-%s", dir, id);
    snprintf(path, sizeof(path), "%s/%s", dir, id);

    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd == -1) {
        snprintf(err, err_len, "open(\"%s\"): %s", tmp, strerror(errno));
        return -1;
    }

    for (done = 0; done < len; done += n) {
        n = write(fd, p + done, len - done);
        if (n == -1) {
            if (errno == EINTR) {
                n = 0;
                continue;
            }
            goto failed;
        }
    }

    if (fsync(fd) != 0) {
        goto failed;
    }

    if (close(fd) != 0) {
        fd = -1;
        goto failed;
    }

    fd = -1;

    if (rename(tmp, path) != 0) {
        goto failed;
    }

    return 0;

failed:

    snprintf(err, err_len, "writing \"%s\": %s", tmp, strerror(errno));
    if (fd != -1) {
        close(fd);
    }
    unlink(tmp);
    return -1;
}


static int
aiserve_files_usage_get(aiserve_files_t *fs, MDB_txn *txn,
    uint32_t account_id, uint64_t *bytes)
{
    int      rc;
    MDB_val  k, v;

    *bytes = 0;

    k.mv_data = &account_id;
    k.mv_size = sizeof(account_id);

    rc = mdb_get(txn, fs->usage, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }

    if (rc == 0 && v.mv_size == sizeof(uint64_t)) {
        memcpy(bytes, v.mv_data, sizeof(uint64_t));
    }

    return rc;
}


static int
aiserve_files_usage_put(aiserve_files_t *fs, MDB_txn *txn,
    uint32_t account_id, uint64_t bytes)
{
    MDB_val  k, v;

    k.mv_data = &account_id;
    k.mv_size = sizeof(account_id);
    v.mv_data = &bytes;
    v.mv_size = sizeof(bytes);

    return mdb_put(txn, fs->usage, &k, &v, 0);
}


static void
aiserve_files_key(MDB_val *k, const char *id)
{
    k->mv_data = (void *) id;
    k->mv_size = strlen(id);
}


/*
 * Writes the content of f->id, then adds its record and its bytes to the
 * account's in one transaction: AISERVE_FILES_QUOTA (nothing kept) when
 * quota (0: none) would be exceeded, AISERVE_FILES_EXISTS (the content
 * left as it was) when the record exists.
 */
static int
aiserve_files_put(aiserve_files_t *fs, aiserve_file_t *f, const void *data,
    size_t len, uint64_t quota, char *err, size_t err_len)
{
    int        rc;
    char       path[4200];
    uint64_t   used;
    MDB_val    k, v;
    MDB_txn   *txn;

    f->bytes = len;

    if (aiserve_files_write(fs->dir, f->id, data, len, err, err_len) != 0) {
        return AISERVE_FILES_ERROR;
    }

    rc = mdb_txn_begin(fs->env, NULL, 0, &txn);
    if (rc != 0) {
        goto failed;
    }

    rc = aiserve_files_usage_get(fs, txn, f->account_id, &used);
    if (rc != 0) {
        mdb_txn_abort(txn);
        goto failed;
    }

    if (quota && used + len > quota) {
        mdb_txn_abort(txn);
        snprintf(err, err_len, "the account stores %llu bytes; %llu more "
                 "would exceed its quota of %llu bytes",
                 (unsigned long long) used, (unsigned long long) len,
                 (unsigned long long) quota);
        aiserve_files_path(fs, f->id, path, sizeof(path));
        unlink(path);
        return AISERVE_FILES_QUOTA;
    }

    aiserve_files_key(&k, f->id);
    v.mv_data = f;
    v.mv_size = sizeof(aiserve_file_t);

    rc = mdb_put(txn, fs->files, &k, &v, MDB_NOOVERWRITE);
    if (rc == 0) {
        rc = aiserve_files_usage_put(fs, txn, f->account_id, used + len);
    }

    rc = aiserve_files_end(txn, rc);

    if (rc == 0) {
        return AISERVE_FILES_OK;
    }

    if (rc == MDB_KEYEXIST) {
        return AISERVE_FILES_EXISTS;
    }

failed:

    snprintf(err, err_len, "files metadata: %s", mdb_strerror(rc));
    aiserve_files_path(fs, f->id, path, sizeof(path));
    unlink(path);
    return AISERVE_FILES_ERROR;
}


int
aiserve_files_add(aiserve_files_t *fs, aiserve_file_t *f, const void *data,
    size_t len, uint64_t quota, char *err, size_t err_len)
{
    if (aiserve_files_new_id(f->id, &f->created_at) != 0) {
        snprintf(err, err_len, "RAND_bytes failed");
        return AISERVE_FILES_ERROR;
    }

    f->status = AISERVE_FILE_UPLOADED;

    return aiserve_files_put(fs, f, data, len, quota, err, err_len);
}


int
aiserve_files_add_as(aiserve_files_t *fs, aiserve_file_t *f,
    const void *data, size_t len, char *err, size_t err_len)
{
    int             rc;
    struct timeval  tv;
    aiserve_file_t  old;

    if (strlen(f->id) != AISERVE_FILES_ID_LEN
        || strncmp(f->id, "file-", 5) != 0)
    {
        snprintf(err, err_len, "\"%s\" is not a file id", f->id);
        return AISERVE_FILES_ERROR;
    }

    /* stored already: its content is not written again */
    rc = aiserve_files_get(fs, f->id, &old, err, err_len);
    if (rc != AISERVE_FILES_NOTFOUND) {
        return rc == AISERVE_FILES_OK ? AISERVE_FILES_EXISTS : rc;
    }

    gettimeofday(&tv, NULL);
    f->created_at = tv.tv_sec;

    return aiserve_files_put(fs, f, data, len, 0, err, err_len);
}


int
aiserve_files_get(aiserve_files_t *fs, const char *id, aiserve_file_t *f,
    char *err, size_t err_len)
{
    int       rc;
    MDB_val   k, v;
    MDB_txn  *txn;

    rc = mdb_txn_begin(fs->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        snprintf(err, err_len, "files metadata: %s", mdb_strerror(rc));
        return AISERVE_FILES_ERROR;
    }

    aiserve_files_key(&k, id);

    rc = mdb_get(txn, fs->files, &k, &v);
    if (rc == 0 && v.mv_size == sizeof(aiserve_file_t)) {
        memcpy(f, v.mv_data, sizeof(aiserve_file_t));
    }

    mdb_txn_abort(txn);

    if (rc == MDB_NOTFOUND) {
        return AISERVE_FILES_NOTFOUND;
    }

    if (rc != 0) {
        snprintf(err, err_len, "files metadata: %s", mdb_strerror(rc));
        return AISERVE_FILES_ERROR;
    }

    return AISERVE_FILES_OK;
}


int
aiserve_files_update(aiserve_files_t *fs, const aiserve_file_t *f, char *err,
    size_t err_len)
{
    int       rc;
    MDB_val   k, v;
    MDB_txn  *txn;

    rc = mdb_txn_begin(fs->env, NULL, 0, &txn);
    if (rc != 0) {
        goto failed;
    }

    aiserve_files_key(&k, f->id);

    rc = mdb_get(txn, fs->files, &k, &v);
    if (rc == 0) {
        v.mv_data = (void *) f;
        v.mv_size = sizeof(aiserve_file_t);
        rc = mdb_put(txn, fs->files, &k, &v, 0);
    }

    rc = aiserve_files_end(txn, rc);

    if (rc == MDB_NOTFOUND) {
        return AISERVE_FILES_NOTFOUND;
    }

    if (rc == 0) {
        return AISERVE_FILES_OK;
    }

failed:

    snprintf(err, err_len, "files metadata: %s", mdb_strerror(rc));
    return AISERVE_FILES_ERROR;
}


int
aiserve_files_delete(aiserve_files_t *fs, const char *id, char *err,
    size_t err_len)
{
    int             rc;
    char            path[4200];
    uint64_t        used;
    MDB_val         k, v;
    MDB_txn        *txn;
    aiserve_file_t  f;

    rc = mdb_txn_begin(fs->env, NULL, 0, &txn);
    if (rc != 0) {
        goto failed;
    }

    aiserve_files_key(&k, id);

    rc = mdb_get(txn, fs->files, &k, &v);
    if (rc == 0) {
        memcpy(&f, v.mv_data, sizeof(aiserve_file_t));
        rc = mdb_del(txn, fs->files, &k, NULL);
    }

    if (rc == 0) {
        rc = aiserve_files_usage_get(fs, txn, f.account_id, &used);
    }

    if (rc == 0) {
        rc = aiserve_files_usage_put(fs, txn, f.account_id,
                                     used > f.bytes ? used - f.bytes : 0);
    }

    rc = aiserve_files_end(txn, rc);

    if (rc == MDB_NOTFOUND) {
        return AISERVE_FILES_NOTFOUND;
    }

    if (rc != 0) {
        goto failed;
    }

    /* the record is gone: the content is unreachable, then removed */
    aiserve_files_path(fs, id, path, sizeof(path));
    unlink(path);

    return AISERVE_FILES_OK;

failed:

    snprintf(err, err_len, "files metadata: %s", mdb_strerror(rc));
    return AISERVE_FILES_ERROR;
}


int
aiserve_files_list(aiserve_files_t *fs, uint32_t account_id,
    const char *purpose, const char *after, int ascending,
    aiserve_file_t *out, size_t limit, size_t *n, char *err, size_t err_len)
{
    int              rc;
    MDB_val          k, v;
    MDB_txn         *txn;
    MDB_cursor      *cur;
    MDB_cursor_op    op, step;
    aiserve_file_t  *f;

    *n = 0;

    rc = mdb_txn_begin(fs->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        snprintf(err, err_len, "files metadata: %s", mdb_strerror(rc));
        return AISERVE_FILES_ERROR;
    }

    rc = mdb_cursor_open(txn, fs->files, &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        snprintf(err, err_len, "files metadata: %s", mdb_strerror(rc));
        return AISERVE_FILES_ERROR;
    }

    step = ascending ? MDB_NEXT : MDB_PREV;

    if (after) {
        /* the first key >= after; then the one before it (newest first),
         * or the one after it unless it is a later key (oldest first) */
        aiserve_files_key(&k, after);
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);

        if (rc == MDB_NOTFOUND) {
            rc = ascending ? MDB_NOTFOUND
                           : mdb_cursor_get(cur, &k, &v, MDB_LAST);

        } else if (rc == 0
                   && (!ascending
                       || (k.mv_size == strlen(after)
                           && memcmp(k.mv_data, after, k.mv_size) == 0)))
        {
            rc = mdb_cursor_get(cur, &k, &v, step);
        }

    } else {
        op = ascending ? MDB_FIRST : MDB_LAST;
        rc = mdb_cursor_get(cur, &k, &v, op);
    }

    while (rc == 0 && *n < limit + 1) {
        /* LMDB aligns a value to 2 bytes only: the record is read from a
         * copy, never through a pointer into the map */
        f = &out[*n];

        if (v.mv_size == sizeof(aiserve_file_t)) {
            memcpy(f, v.mv_data, sizeof(aiserve_file_t));

            if ((account_id == 0 || f->account_id == account_id)
                && (purpose == NULL || strcmp(f->purpose, purpose) == 0))
            {
                (*n)++;
            }
        }

        rc = mdb_cursor_get(cur, &k, &v, step);
    }

    mdb_cursor_close(cur);
    mdb_txn_abort(txn);

    if (rc != 0 && rc != MDB_NOTFOUND) {
        snprintf(err, err_len, "files metadata: %s", mdb_strerror(rc));
        return AISERVE_FILES_ERROR;
    }

    return AISERVE_FILES_OK;
}


int
aiserve_files_recover(aiserve_files_t *fs, size_t *removed,
    size_t *interrupted, char *err, size_t err_len)
{
    int              rc, orphan;
    DIR             *d;
    char             path[4096 + 256 + 2];
    MDB_val          k, v;
    MDB_txn         *txn;
    MDB_cursor      *cur;
    aiserve_file_t   f;
    struct dirent   *e;

    *removed = 0;
    *interrupted = 0;

    d = opendir(fs->dir);
    if (d == NULL) {
        snprintf(err, err_len, "opendir(\"%s\"): %s", fs->dir,
                 strerror(errno));
        return AISERVE_FILES_ERROR;
    }

    while ((e = readdir(d)) != NULL) {
        orphan = strncmp(e->d_name, ".tmp-file-", 10) == 0;

        if (!orphan && strncmp(e->d_name, "file-", 5) == 0) {
            rc = aiserve_files_get(fs, e->d_name, &f, err, err_len);
            if (rc == AISERVE_FILES_ERROR) {
                closedir(d);
                return rc;
            }
            orphan = rc == AISERVE_FILES_NOTFOUND;
        }

        if (orphan) {
            snprintf(path, sizeof(path), "%s/%s", fs->dir, e->d_name);
            *removed += unlink(path) == 0;
        }
    }

    closedir(d);

    rc = mdb_txn_begin(fs->env, NULL, 0, &txn);
    if (rc == 0) {
        rc = mdb_cursor_open(txn, fs->files, &cur);
        if (rc != 0) {
            mdb_txn_abort(txn);
        }
    }

    if (rc != 0) {
        snprintf(err, err_len, "files metadata: %s", mdb_strerror(rc));
        return AISERVE_FILES_ERROR;
    }

    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
         rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
    {
        if (v.mv_size != sizeof(aiserve_file_t)) {
            continue;
        }

        memcpy(&f, v.mv_data, sizeof(aiserve_file_t));
        if (f.status != AISERVE_FILE_UPLOADED) {
            continue;
        }

        f.status = AISERVE_FILE_ERROR;
        snprintf(f.details, sizeof(f.details), "the validation of this "
                 "upload was interrupted (nginx stopped); upload it again");
        v.mv_data = &f;

        rc = mdb_cursor_put(cur, &k, &v, MDB_CURRENT);
        if (rc != 0) {
            break;
        }

        (*interrupted)++;
    }

    mdb_cursor_close(cur);
    rc = aiserve_files_end(txn, rc == MDB_NOTFOUND ? 0 : rc);

    if (rc != 0) {
        snprintf(err, err_len, "files metadata: %s", mdb_strerror(rc));
        return AISERVE_FILES_ERROR;
    }

    return AISERVE_FILES_OK;
}


int
aiserve_files_usage(aiserve_files_t *fs, uint32_t account_id,
    uint64_t *bytes, char *err, size_t err_len)
{
    int       rc;
    MDB_txn  *txn;

    rc = mdb_txn_begin(fs->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0) {
        rc = aiserve_files_usage_get(fs, txn, account_id, bytes);
        mdb_txn_abort(txn);
    }

    if (rc != 0) {
        snprintf(err, err_len, "files metadata: %s", mdb_strerror(rc));
        return AISERVE_FILES_ERROR;
    }

    return AISERVE_FILES_OK;
}


static const char *
aiserve_files_format_name(const char *filename)
{
    const char  *dot;

    dot = strrchr(filename, '.');

    if (dot && (strcasecmp(dot, ".jsonl") == 0
                || strcasecmp(dot, ".json") == 0))
    {
        return "jsonl";
    }

    if (dot && strcasecmp(dot, ".csv") == 0) {
        return "csv";
    }

    return "conll";
}


/*
 * The label column of a CSV whose header has no "label": the one column
 * that is neither "text" nor "text_pair" (banking77's "text,category"),
 * copied into col; 0 when found, -1 otherwise (the reader then names the
 * missing "label" column).  Header names are read up to the first line
 * end, quotes removed, after the UTF-8 byte order mark a spreadsheet may
 * write (the reader skips it too).
 */
static int
aiserve_files_csv_label(const char *data, size_t len, char *col,
    size_t col_len)
{
    int          found;
    char         name[128];
    size_t       n;
    const char  *p, *last;

    found = 0;
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) {
        data += 3;
        len -= 3;
    }
    p = data;
    last = memchr(data, '\n', len);
    if (last == NULL) {
        last = data + len;
    }

    while (p <= last) {
        n = 0;
        while (p < last && *p != ',') {
            if (*p != '"' && *p != '\r' && n < sizeof(name) - 1) {
                name[n++] = *p;
            }
            p++;
        }
        name[n] = '\0';
        p++;

        if (strcmp(name, "label") == 0) {
            return -1;
        }

        if (strcmp(name, "text") != 0 && strcmp(name, "text_pair") != 0) {
            if (found++ || n == 0 || n >= col_len) {
                return -1;
            }
            memcpy(col, name, n + 1);
        }
    }

    return found == 1 ? 0 : -1;
}


/* Parses the content of f (len bytes) as validation and training read
 * it; label has room for 128 bytes. */
static int
aiserve_files_parse(const aiserve_file_t *f, const char *data, size_t len,
    char *label, aiserve_dataset_t *ds, char *err, size_t err_len)
{
    aiserve_data_opts_t  opts;

    aiserve_data_opts_default(&opts);

    if (strcmp(aiserve_files_format_name(f->filename), "csv") == 0
        && aiserve_files_csv_label(data, len, label, 128) == 0)
    {
        opts.label_column = label;
    }

    return aiserve_data_parse(f->filename, data, len, &opts, ds, err,
                              err_len);
}


int
aiserve_files_dataset(const aiserve_files_t *fs, const aiserve_file_t *f,
    aiserve_dataset_t *ds, char *err, size_t err_len)
{
    char  path[4200];

    memset(ds, 0, sizeof(aiserve_dataset_t));

    if (aiserve_files_path(fs, f->id, path, sizeof(path)) != 0) {
        snprintf(err, err_len, "%s: the path is too long", f->id);
        return -1;
    }

    return aiserve_files_dataset_at(path, f, ds, err, err_len);
}


int
aiserve_files_dataset_at(const char *path, const aiserve_file_t *f,
    aiserve_dataset_t *ds, char *err, size_t err_len)
{
    int     rc;
    char    label[128], *data;
    long    n;
    FILE   *in;

    memset(ds, 0, sizeof(aiserve_dataset_t));

    in = fopen(path, "rb");
    if (in == NULL) {
        snprintf(err, err_len, "%s (%s): %s", f->filename, f->id,
                 strerror(errno));
        return -1;
    }

    data = NULL;
    n = -1;

    if (fseek(in, 0, SEEK_END) == 0) {
        n = ftell(in);
    }

    if (n >= 0 && fseek(in, 0, SEEK_SET) == 0) {
        data = malloc(n + 1);
    }

    if (data == NULL || fread(data, 1, n, in) != (size_t) n) {
        snprintf(err, err_len, "%s (%s): cannot be read", f->filename,
                 f->id);
        fclose(in);
        free(data);
        return -1;
    }

    fclose(in);

    rc = aiserve_files_parse(f, data, n, label, ds, err, err_len);
    free(data);

    return rc;
}


int
aiserve_files_keep(const aiserve_files_t *fs, const aiserve_file_t *f,
    const char *to, char *err, size_t err_len)
{
    int      in, out, rc;
    char     path[4200], tmp[4200], buf[65536];
    ssize_t  n;

    if (aiserve_files_path(fs, f->id, path, sizeof(path)) != 0
        || snprintf(tmp, sizeof(tmp), "%s.tmp", to) >= (int) sizeof(tmp))
    {
        snprintf(err, err_len, "%s: the path is too long", f->id);
        return -1;
    }

    unlink(tmp);

    if (link(path, tmp) == 0) {
        goto keep;
    }

    in = open(path, O_RDONLY | O_CLOEXEC);
    if (in == -1) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }

    out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out == -1) {
        snprintf(err, err_len, "%s: %s", tmp, strerror(errno));
        close(in);
        return -1;
    }

    rc = 0;

    while ((n = read(in, buf, sizeof(buf))) != 0) {
        if (n == -1 || write(out, buf, n) != n) {
            rc = -1;
            break;
        }
    }

    if (rc != 0 || fsync(out) != 0) {
        snprintf(err, err_len, "%s: %s", tmp, strerror(errno));
        rc = -1;
    }

    if (close(out) != 0 && rc == 0) {
        snprintf(err, err_len, "%s: %s", tmp, strerror(errno));
        rc = -1;
    }

    close(in);

    if (rc != 0) {
        unlink(tmp);
        return -1;
    }

keep:

    if (rename(tmp, to) != 0) {
        snprintf(err, err_len, "%s: %s", to, strerror(errno));
        unlink(tmp);
        return -1;
    }

    return 0;
}


void
aiserve_files_validate(const aiserve_tok_t *tok, const char *data,
    size_t len, aiserve_file_t *f)
{
    char                 label[128];
    size_t               i;
    uint64_t             tokens;
    aiserve_dataset_t    ds;
    aiserve_features_t   feat;
    aiserve_label_set_t  set;

    memset(&ds, 0, sizeof(ds));
    memset(&set, 0, sizeof(set));

    snprintf(f->format, sizeof(f->format), "%s",
             aiserve_files_format_name(f->filename));

    f->status = AISERVE_FILE_ERROR;
    f->examples = 0;
    f->tokens = 0;
    f->num_labels = 0;

    if (aiserve_files_parse(f, data, len, label, &ds, f->details,
                            sizeof(f->details))
        != 0)
    {
        return;
    }

    if (aiserve_labels_build(&ds, &set, f->details, sizeof(f->details))
        != 0)
    {
        aiserve_dataset_free(&ds);
        return;
    }

    tokens = 0;

    for (i = 0; i < ds.n; i++) {
        if (aiserve_featurize(tok, &ds, i, &set, 0, &feat, f->details,
                              sizeof(f->details))
            != 0)
        {
            aiserve_labels_free(&set);
            aiserve_dataset_free(&ds);
            return;
        }

        tokens += feat.n_tokens;
        aiserve_features_free(&feat);
    }

    f->status = AISERVE_FILE_PROCESSED;
    f->examples = ds.n;
    f->tokens = tokens;
    f->num_labels = set.n;
    snprintf(f->details, sizeof(f->details), "%s", ds.warning);

    aiserve_labels_free(&set);
    aiserve_dataset_free(&ds);
}
