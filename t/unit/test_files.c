/*
 * The store of the Files API (src/aiserve_files.c).
 *
 *  - add, get, update, delete; the content on disk byte-identical, no
 *    temporary file left; the account's bytes follow adds and deletes
 *  - ids in creation order; lists newest first and oldest first, after,
 *    limit (+1 for has_more), by account and purpose
 *  - the quota holds under 8 threads adding at once: exactly the files
 *    that fit are kept (the check is in the write transaction)
 *  - validation counts examples, labels and tokens as transformers does
 *    (t/data/files/tokens.json, tools/gen-files-goldens.py) and names the
 *    line and reason of a bad file
 *  - a second handle (another worker) sees the first one's records
 *  - recovery after a killed worker: partial uploads removed, records
 *    never validated marked so
 *  - a kept copy (link or copy) reads as the file, after its delete
 *  - a file stored with its id (a job's results): purpose
 *    fine-tune-results, counted in the account's bytes past its quota; the
 *    same id again changes nothing
 *  - a store of version 1 (t/data/files-v1, tools/gen-files-v1.sh) is
 *    migrated at open: every record as the old store listed it
 *    (files.json), then the version written; a newer version is refused
 */
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <lmdb.h>

#include "tap.h"
#include "aiserve_files.h"


static char  dir[] = "/tmp/aiserve-test-files-XXXXXX";


static char *
slurp(const char *path, size_t *len)
{
    FILE  *f;
    char  *buf;
    long   n;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(n + 1);
    if (buf && fread(buf, 1, n, f) != (size_t) n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);

    *len = n;
    return buf;
}


static aiserve_file_t
new_file(uint32_t account, const char *name)
{
    aiserve_file_t  f;

    memset(&f, 0, sizeof(f));
    f.account_id = account;
    snprintf(f.filename, sizeof(f.filename), "%s", name);
    snprintf(f.purpose, sizeof(f.purpose), "fine-tune");
    return f;
}


/* entries of dir whose name starts with prefix */
static int
entries(const char *prefix)
{
    int             n;
    DIR            *d;
    struct dirent  *e;

    n = 0;
    d = opendir(dir);
    while (d && (e = readdir(d)) != NULL) {
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    }
    if (d) {
        closedir(d);
    }
    return n;
}


static void
test_crud(aiserve_files_t *fs)
{
    char            err[256], path[4200];
    size_t          len;
    uint64_t        used;
    aiserve_file_t  f, g;
    const char      data[] = "{\"text\": \"a\", \"label\": \"x\"}\n";
    char           *back;

    f = new_file(7, "a.jsonl");
    tap_ok(aiserve_files_add(fs, &f, data, sizeof(data) - 1, 0, err,
                             sizeof(err)) == AISERVE_FILES_OK,
           "add");
    tap_ok(strlen(f.id) == AISERVE_FILES_ID_LEN
           && strncmp(f.id, "file-", 5) == 0, "id %s", f.id);
    tap_ok(f.bytes == sizeof(data) - 1 && f.status == AISERVE_FILE_UPLOADED,
           "bytes and status uploaded");

    aiserve_files_path(fs, f.id, path, sizeof(path));
    back = slurp(path, &len);
    tap_ok(back && len == sizeof(data) - 1 && memcmp(back, data, len) == 0,
           "content on disk byte-identical");
    free(back);
    tap_ok(entries(".tmp-") == 0, "no temporary file left");

    tap_ok(aiserve_files_get(fs, f.id, &g, err, sizeof(err))
           == AISERVE_FILES_OK && memcmp(&f, &g, sizeof(f)) == 0,
           "get: the record added");

    g.status = AISERVE_FILE_PROCESSED;
    g.tokens = 42;
    tap_ok(aiserve_files_update(fs, &g, err, sizeof(err)) == AISERVE_FILES_OK,
           "update");
    aiserve_files_get(fs, f.id, &f, err, sizeof(err));
    tap_ok(f.status == AISERVE_FILE_PROCESSED && f.tokens == 42,
           "update: kept");

    aiserve_files_usage(fs, 7, &used, err, sizeof(err));
    tap_ok(used == sizeof(data) - 1, "usage: the file's bytes");

    tap_ok(aiserve_files_delete(fs, f.id, err, sizeof(err))
           == AISERVE_FILES_OK, "delete");
    tap_ok(access(path, F_OK) != 0, "delete: content removed");
    tap_ok(aiserve_files_get(fs, f.id, &g, err, sizeof(err))
           == AISERVE_FILES_NOTFOUND, "delete: get is NOTFOUND");
    tap_ok(aiserve_files_delete(fs, f.id, err, sizeof(err))
           == AISERVE_FILES_NOTFOUND, "delete twice: NOTFOUND");
    tap_ok(aiserve_files_update(fs, &g, err, sizeof(err))
           == AISERVE_FILES_NOTFOUND, "update of a deleted file: NOTFOUND");
    aiserve_files_usage(fs, 7, &used, err, sizeof(err));
    tap_ok(used == 0, "usage: back to 0");
}


static void
test_list(aiserve_files_t *fs)
{
    char            err[256], ids[5][AISERVE_FILES_ID_LEN + 1];
    size_t          i, n;
    aiserve_file_t  f, out[8];

    for (i = 0; i < 5; i++) {
        f = new_file(i == 2 ? 9 : 8, "l.jsonl");
        if (i == 4) {
            snprintf(f.purpose, sizeof(f.purpose), "batch");
        }
        aiserve_files_add(fs, &f, "x", 1, 0, err, sizeof(err));
        memcpy(ids[i], f.id, sizeof(ids[i]));
        if (i) {
            tap_ok(strcmp(ids[i - 1], ids[i]) < 0,
                   "ids in creation order (%zu)", i);
        }
    }

    aiserve_files_list(fs, 8, "fine-tune", NULL, 0, out, 2, &n, err,
                       sizeof(err));
    tap_ok(n == 3 && strcmp(out[0].id, ids[3]) == 0
           && strcmp(out[1].id, ids[1]) == 0
           && strcmp(out[2].id, ids[0]) == 0,
           "newest first, account 8, purpose: 2 and one for has_more");

    aiserve_files_list(fs, 8, NULL, ids[3], 0, out, 5, &n, err, sizeof(err));
    tap_ok(n == 2 && strcmp(out[0].id, ids[1]) == 0, "after, desc");

    aiserve_files_list(fs, 8, NULL, NULL, 1, out, 5, &n, err, sizeof(err));
    tap_ok(n == 4 && strcmp(out[0].id, ids[0]) == 0
           && strcmp(out[3].id, ids[4]) == 0, "oldest first");

    aiserve_files_list(fs, 8, NULL, ids[1], 1, out, 5, &n, err, sizeof(err));
    tap_ok(n == 2 && strcmp(out[0].id, ids[3]) == 0, "after, asc");

    aiserve_files_list(fs, 0, NULL, NULL, 0, out, 7, &n, err, sizeof(err));
    tap_ok(n == 5 && strcmp(out[2].id, ids[2]) == 0, "every account's");

    aiserve_files_list(fs, 9, NULL, NULL, 0, out, 5, &n, err, sizeof(err));
    tap_ok(n == 1 && strcmp(out[0].id, ids[2]) == 0, "account 9's one");

    for (i = 0; i < 5; i++) {
        aiserve_files_delete(fs, ids[i], err, sizeof(err));
    }
}


typedef struct {
    aiserve_files_t  *fs;
    int               rc;
} adder_t;


static void *
adder(void *arg)
{
    adder_t         *a = arg;
    char             err[256], data[1000];
    aiserve_file_t   f;

    memset(data, 'q', sizeof(data));
    f = new_file(11, "q.jsonl");
    a->rc = aiserve_files_add(a->fs, &f, data, sizeof(data), 3500, err,
                              sizeof(err));
    return NULL;
}


static void
test_quota(aiserve_files_t *fs)
{
    int        i, ok, over;
    char       err[256];
    uint64_t   used;
    size_t     n;
    adder_t    a[8];
    pthread_t  t[8];
    aiserve_file_t  out[9];

    for (i = 0; i < 8; i++) {
        a[i].fs = fs;
        pthread_create(&t[i], NULL, adder, &a[i]);
    }

    ok = over = 0;
    for (i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += a[i].rc == AISERVE_FILES_OK;
        over += a[i].rc == AISERVE_FILES_QUOTA;
    }

    tap_ok(ok == 3 && over == 5,
           "8 threads, 1000 bytes each, quota 3500: 3 kept, 5 refused "
           "(%d, %d)", ok, over);
    aiserve_files_usage(fs, 11, &used, err, sizeof(err));
    tap_ok(used == 3000, "usage 3000 (%llu)", (unsigned long long) used);
    aiserve_files_list(fs, 11, NULL, NULL, 0, out, 8, &n, err, sizeof(err));
    tap_ok(n == 3, "3 listed");
    tap_ok(entries(".tmp-") == 0 && entries("file-") == 3,
           "nothing left on disk of the refused ones");
}


static void
test_validate(void)
{
    char             err[256];
    char            *buf;
    size_t           i, len;
    json_t          *golden, *g;
    aiserve_tok_t   *tok;
    aiserve_file_t   f;
    json_error_t     jerr;
    const char      *paths[] = {
        "t/data/train/classify.jsonl", "t/data/train/ner.jsonl",
        "t/data/train/ner.conll", "t/data/files/banking77-train-slice.csv"
    };

    tok = aiserve_tok_load("models/all-MiniLM-L6-v2", err, sizeof(err));
    golden = json_load_file("t/data/files/tokens.json", 0, &jerr);
    if (!tap_ok(tok && golden, "tokenizer and goldens load")) {
        tap_diag("%s %s", tok ? "" : err, golden ? "" : jerr.text);
        return;
    }

    for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        f = new_file(1, strrchr(paths[i], '/') + 1);
        buf = slurp(paths[i], &len);
        aiserve_files_validate(tok, buf, len, &f);
        free(buf);

        g = json_object_get(golden, f.filename);
        tap_ok(f.status == AISERVE_FILE_PROCESSED
               && (json_int_t) f.examples
                  == json_integer_value(json_object_get(g, "examples"))
               && (json_int_t) f.tokens
                  == json_integer_value(json_object_get(g, "tokens"))
               && (json_object_get(g, "num_labels") == NULL
                   || f.num_labels == json_integer_value(
                                          json_object_get(g, "num_labels"))),
               "%s: %llu examples, %llu tokens, %u labels as transformers",
               f.filename, (unsigned long long) f.examples,
               (unsigned long long) f.tokens, f.num_labels);
    }

    f = new_file(1, "bad.jsonl");
    aiserve_files_validate(tok, "{\"text\": \"a\", \"label\": \"x\"}\n"
                           "{\"text\": \"b\"}\n", 42, &f);
    tap_ok(f.status == AISERVE_FILE_ERROR
           && strncmp(f.details, "bad.jsonl:2: ", 13) == 0,
           "a bad file: %s", f.details);

    f = new_file(1, "two.csv");
    aiserve_files_validate(tok, "text,intent,extra\na,b,c\n", 23, &f);
    tap_ok(f.status == AISERVE_FILE_ERROR
           && strstr(f.details, "\"label\"") != NULL,
           "a CSV of two label candidates names the missing \"label\"");

    /* a spreadsheet's export: a UTF-8 byte order mark and CRLF */
    f = new_file(1, "bom.csv");
    aiserve_files_validate(tok, "\xef\xbb\xbftext,category\r\n"
                           "\"hello, world\",a\r\n\"say \"\"hi\"\"\",b\r\n",
                           52, &f);
    tap_ok(f.status == AISERVE_FILE_PROCESSED && f.examples == 2
           && f.num_labels == 2,
           "a CSV with a byte order mark and CRLF takes \"category\" as "
           "its label column (%s)", f.details);

    json_decref(golden);
    aiserve_tok_free(tok);
}


/* What a killed worker leaves: a temporary file, a content without a
 * record, records never validated (the quota test's 3 and id's). */
static void
test_recover(aiserve_files_t *fs, const char *id)
{
    FILE            *out;
    char             err[256], path[4200];
    size_t           removed, interrupted;
    aiserve_file_t   f;

    snprintf(path, sizeof(path), "%s/.tmp-file-00000000000000000000000a", dir);
    out = fopen(path, "w");
    fclose(out);
    snprintf(path, sizeof(path), "%s/file-00000000000000000000000b", dir);
    out = fopen(path, "w");
    fclose(out);

    tap_ok(aiserve_files_recover(fs, &removed, &interrupted, err,
                                 sizeof(err)) == AISERVE_FILES_OK
           && removed == 2 && interrupted == 4,
           "recover: 2 partial uploads removed, 4 marked interrupted "
           "(%zu, %zu)", removed, interrupted);
    tap_ok(access(path, F_OK) != 0 && entries(".tmp-") == 0
           && entries("file-") == 4, "recover: the records' contents kept");
    aiserve_files_get(fs, id, &f, err, sizeof(err));
    tap_ok(f.status == AISERVE_FILE_ERROR
           && strstr(f.details, "interrupted") != NULL,
           "recover: %s", f.details);
    aiserve_files_recover(fs, &removed, &interrupted, err, sizeof(err));
    tap_ok(removed == 0 && interrupted == 0, "recover again: nothing to do");
}


/* a kept copy (a hard link in the store's file system, a copy in
 * another) reads as the file did, after the file is deleted */
static void
test_keep(aiserve_files_t *fs)
{
    int                 i;
    char                err[256], to[4200], tmp[4300], *back;
    size_t              len;
    aiserve_file_t      f;
    aiserve_dataset_t   ds;
    const char          data[] = "text,category\nhi there,greet\n"
                                 "bye now,leave\n";
    static const char  *where[] = { dir, "/dev/shm" };

    for (i = 0; i < 2; i++) {
        f = new_file(9, "k.csv");
        aiserve_files_add(fs, &f, data, sizeof(data) - 1, 0, err,
                          sizeof(err));
        snprintf(to, sizeof(to), "%s/kept-%d-%d", where[i], (int) getpid(),
                 i);
        tap_ok(aiserve_files_keep(fs, &f, to, err, sizeof(err)) == 0,
               "keep in %s", where[i]);
        aiserve_files_delete(fs, f.id, err, sizeof(err));
        back = slurp(to, &len);
        tap_ok(back && len == sizeof(data) - 1
               && memcmp(back, data, len) == 0,
               "keep in %s: the content, after the file's delete",
               where[i]);
        free(back);
        tap_ok(aiserve_files_dataset_at(to, &f, &ds, err, sizeof(err)) == 0
               && ds.n == 2 && strcmp(ds.examples[1].labels[0], "leave") == 0
               && strcmp(ds.name, "k.csv") == 0,
               "dataset_at: read as the file (its CSV label column, its "
               "name)");
        aiserve_dataset_free(&ds);
        snprintf(tmp, sizeof(tmp), "%s.tmp", to);
        tap_ok(access(tmp, F_OK) != 0, "no temporary file left");
        unlink(to);
    }

    f = new_file(9, "k.csv");
    aiserve_files_add(fs, &f, data, sizeof(data) - 1, 0, err, sizeof(err));
    tap_ok(aiserve_files_keep(fs, &f, "/nonexistent/dir/x", err,
                              sizeof(err)) != 0
           && strstr(err, "/nonexistent/dir/x") != NULL,
           "keep where it cannot: %s", err);
    aiserve_files_delete(fs, f.id, err, sizeof(err));
}


static void
test_add_as(aiserve_files_t *fs)
{
    int              rc;
    char             err[256], path[4200], *got;
    size_t           len;
    int64_t          at;
    uint64_t         before, after;
    aiserve_file_t   f, g;

    aiserve_files_usage(fs, 9, &before, err, sizeof(err));

    f = new_file(9, "step_metrics.csv");
    snprintf(f.purpose, sizeof(f.purpose), "fine-tune-results");
    f.status = AISERVE_FILE_PROCESSED;
    tap_ok(aiserve_files_new_id(f.id, &at) == 0
           && strlen(f.id) == AISERVE_FILES_ID_LEN, "a new id: %s", f.id);

    rc = aiserve_files_add_as(fs, &f, "step\n1\n", 7, err, sizeof(err));
    tap_ok(rc == AISERVE_FILES_OK, "stored with its id: %s",
           rc ? err : "ok");
    tap_ok(aiserve_files_get(fs, f.id, &g, err, sizeof(err))
           == AISERVE_FILES_OK
           && strcmp(g.purpose, "fine-tune-results") == 0
           && g.status == AISERVE_FILE_PROCESSED && g.bytes == 7
           && g.created_at >= at,
           "its record: purpose fine-tune-results, processed, 7 bytes");
    aiserve_files_usage(fs, 9, &after, err, sizeof(err));
    tap_ok(after == before + 7, "counted in the account's bytes");

    f.status = AISERVE_FILE_ERROR;
    rc = aiserve_files_add_as(fs, &f, "other", 5, err, sizeof(err));
    aiserve_files_path(fs, f.id, path, sizeof(path));
    got = slurp(path, &len);
    aiserve_files_get(fs, f.id, &g, err, sizeof(err));
    aiserve_files_usage(fs, 9, &after, err, sizeof(err));
    tap_ok(rc == AISERVE_FILES_EXISTS && got && len == 7
           && memcmp(got, "step\n1\n", 7) == 0
           && g.status == AISERVE_FILE_PROCESSED && after == before + 7,
           "the same id again: EXISTS, content, record and bytes unchanged");
    free(got);

    strcpy(f.id, "file-x");
    tap_ok(aiserve_files_add_as(fs, &f, "x", 1, err, sizeof(err))
           == AISERVE_FILES_ERROR, "not an id: %s", err);

    aiserve_files_delete(fs, g.id, err, sizeof(err));
}


/* Writes version into the "meta" sub-database of the store in d. */
static int
set_version(const char *d, uint32_t version)
{
    int       rc;
    char      meta[4200];
    MDB_env  *env;
    MDB_txn  *txn;
    MDB_dbi   dbi;
    MDB_val   k, v;

    snprintf(meta, sizeof(meta), "%s/meta", d);

    rc = mdb_env_create(&env);
    if (rc != 0) {
        return rc;
    }

    mdb_env_set_maxdbs(env, 4);
    rc = mdb_env_open(env, meta, 0, 0600);
    if (rc == 0) {
        rc = mdb_txn_begin(env, NULL, 0, &txn);
    }
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &dbi);
        k.mv_data = "version";
        k.mv_size = 7;
        v.mv_data = &version;
        v.mv_size = sizeof(version);
        if (rc == 0) {
            rc = mdb_put(txn, dbi, &k, &v, 0);
        }
        rc = rc == 0 ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), rc);
    }

    mdb_env_close(env);
    return rc;
}


/* the store of version 1 of t/data/files-v1, copied into a new directory,
 * opened: the records as the old store listed them in files.json */
static void
test_migrate(void)
{
    int              ok;
    char             err[256], cmd[8400], v1[] = "/tmp/aiserve-test-v1-XXXXXX";
    char             path[4200], *data;
    size_t           i, n, len;
    json_t          *doc, *want, *w;
    json_error_t     jerr;
    aiserve_file_t   out[8], f;
    aiserve_files_t  *fs;

    if (mkdtemp(v1) == NULL) {
        tap_ok(0, "mkdtemp");
        return;
    }

    snprintf(cmd, sizeof(cmd), "cp -r t/data/files-v1/. %s/", v1);
    tap_ok(system(cmd) == 0, "the version 1 store copied");

    doc = json_load_file("t/data/files-v1/files.json", 0, &jerr);
    want = json_object_get(doc, "data");

    fs = aiserve_files_open(v1, 0, &n, err, sizeof(err));
    if (!tap_ok(fs != NULL && n == 4 && json_array_size(want) == 4,
                "opened, %zu records migrated (%s)", n, fs ? "ok" : err))
    {
        return;
    }

    aiserve_files_list(fs, 0, NULL, NULL, 1, out, 7, &n, err, sizeof(err));

    ok = n == 4;
    for (i = 0; ok && i < n; i++) {
        w = json_array_get(want, i);
        ok = strcmp(out[i].id, json_string_value(json_object_get(w, "id")))
                 == 0
             && out[i].bytes
                == (uint64_t) json_integer_value(json_object_get(w, "bytes"))
             && out[i].created_at
                == json_integer_value(json_object_get(w, "created_at"))
             && strcmp(out[i].filename,
                       json_string_value(json_object_get(w, "filename"))) == 0
             && strcmp(out[i].purpose,
                       json_string_value(json_object_get(w, "purpose"))) == 0
             && strcmp(aiserve_file_status_name(out[i].status),
                       json_string_value(json_object_get(w, "status"))) == 0;

        if (ok && out[i].status == AISERVE_FILE_PROCESSED) {
            ok = out[i].examples
                 == (uint64_t) json_integer_value(json_object_get(w,
                                                              "examples"))
                 && out[i].tokens
                    == (uint64_t) json_integer_value(json_object_get(w,
                                                                 "tokens"))
                 && out[i].num_labels
                    == json_integer_value(json_object_get(w, "num_labels"))
                 && strcmp(out[i].format, json_string_value(
                               json_object_get(w, "format"))) == 0;

        } else if (ok) {
            ok = strcmp(out[i].details, json_string_value(
                            json_object_get(w, "status_details"))) == 0;
        }

        /* found by its key: the key and the record go together */
        ok = ok && aiserve_files_get(fs, out[i].id, &f, err, sizeof(err))
                   == AISERVE_FILES_OK
             && strcmp(f.id, out[i].id) == 0
             && f.account_id == out[i].account_id;

        tap_ok(ok, "record %zu: %s %s %s as the old store listed it", i,
               out[i].id, out[i].filename,
               aiserve_file_status_name(out[i].status));
    }

    tap_ok(out[0].account_id == 1 && out[3].account_id == 2,
           "owners kept: acct_1, acct_2");

    aiserve_files_path(fs, out[0].id, path, sizeof(path));
    data = slurp(path, &len);
    tap_ok(data && len == out[0].bytes, "content in place");
    free(data);

    f = new_file(1, "results.csv");
    snprintf(f.purpose, sizeof(f.purpose), "fine-tune-results");
    f.status = AISERVE_FILE_PROCESSED;
    aiserve_files_new_id(f.id, &f.created_at);
    tap_ok(aiserve_files_add_as(fs, &f, "step\n", 5, err, sizeof(err))
           == AISERVE_FILES_OK
           && aiserve_files_list(fs, 1, "fine-tune-results", NULL, 0, out,
                                 7, &n, err, sizeof(err)) == 0
           && n == 1 && strcmp(out[0].id, f.id) == 0,
           "a new record of the longer purpose, listed by it");
    aiserve_files_close(fs);

    fs = aiserve_files_open(v1, 0, &n, err, sizeof(err));
    tap_ok(fs != NULL && n == 0, "opened again: nothing to migrate");
    aiserve_files_close(fs);

    /* a store of a later version than this code's is refused */
    tap_ok(set_version(v1, AISERVE_FILES_VERSION + 1) == 0,
           "the version set to %d", AISERVE_FILES_VERSION + 1);
    fs = aiserve_files_open(v1, 0, &n, err, sizeof(err));
    tap_ok(fs == NULL && strstr(err, "version 3") != NULL,
           "a later version refused: %s", err);
    aiserve_files_close(fs);

    json_decref(doc);

    snprintf(cmd, sizeof(cmd), "rm -rf %s", v1);
    if (system(cmd) != 0) {
        tap_ok(0, "rm");
    }
}


int
main(void)
{
    char              err[256];
    aiserve_file_t    f, g;
    aiserve_files_t  *fs, *fs2;

    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }

    fs = aiserve_files_open(dir, 0, NULL, err, sizeof(err));
    if (!tap_ok(fs != NULL, "open %s", fs ? dir : err)) {
        return tap_done();
    }

    test_crud(fs);
    test_list(fs);
    test_quota(fs);
    test_keep(fs);

    test_add_as(fs);

    fs2 = aiserve_files_open(dir, 0, NULL, err, sizeof(err));
    f = new_file(3, "w.jsonl");
    aiserve_files_add(fs, &f, "y", 1, 0, err, sizeof(err));
    tap_ok(fs2 && aiserve_files_get(fs2, f.id, &g, err, sizeof(err))
                  == AISERVE_FILES_OK,
           "a second handle sees the first one's record");
    aiserve_files_close(fs2);

    test_recover(fs, f.id);
    aiserve_files_close(fs);

    test_migrate();

    fs = aiserve_files_open("/nonexistent/dir", 0, NULL, err, sizeof(err));
    tap_ok(fs == NULL && strstr(err, "/nonexistent/dir") != NULL,
           "a missing directory: %s", err);

    test_validate();

    if (fork() == 0) {
        execlp("rm", "rm", "-rf", dir, (char *) NULL);
        _exit(1);
    }

    return tap_done();
}
