/*
 * aiserve files: the store behind the Files API (POST/GET/DELETE
 * /v1/files, OpenAI's shape).  Each file is a plain file DIR/ID, written
 * to DIR/.tmp-ID, fsync'ed and renamed (atomic on one file system); its
 * metadata is a record in an LMDB environment DIR/meta (one sub-database
 * "files" keyed by id, one "usage" with the bytes stored per account), so
 * the bytes an account stores are checked against its quota in the same
 * write transaction that adds the file.
 *
 * The store has a version (AISERVE_FILES_VERSION, in a sub-database
 * "meta"); aiserve_files_open() migrates a store of an older version in
 * place (version 1: records with a purpose of 16 bytes, too short for
 * "fine-tune-results").
 *
 * Ids are "file-" and 24 lower-case hex digits: 13 of the creation time in
 * microseconds, 11 random (libcrypto's RAND_bytes), so the key order of
 * the "files" sub-database is the order of creation and a list is a walk
 * of the cursor.
 *
 * Validation reads a file with the training data readers (aiserve_data.h)
 * and featurizes every example through a tokenizer to count its tokens,
 * the count training will be billed on.
 *
 * No nginx types.  One aiserve_files_t per process (LMDB environments do
 * not cross fork()); its functions may be called from several threads at
 * once (the environment is opened with MDB_NOTLS).
 */
#ifndef AISERVE_FILES_H
#define AISERVE_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "aiserve_data.h"
#include "aiserve_tokenizer.h"


#define AISERVE_FILES_ID_LEN        29      /* "file-" + 24 hex */
#define AISERVE_FILES_NAME_MAX      255     /* bytes of a file name */
#define AISERVE_FILES_DETAILS_MAX   511
#define AISERVE_FILES_PURPOSE_MAX   31      /* bytes of a purpose */
#define AISERVE_FILES_VERSION       2       /* of the store's records */

/* return codes */
#define AISERVE_FILES_OK            0
#define AISERVE_FILES_ERROR         -1      /* err says why */
#define AISERVE_FILES_NOTFOUND      -2
#define AISERVE_FILES_QUOTA         -3      /* over the account's quota */
#define AISERVE_FILES_EXISTS        -4      /* the id is stored already */

typedef enum {
    AISERVE_FILE_UPLOADED = 0,      /* stored, not validated yet */
    AISERVE_FILE_PROCESSED,         /* valid training data */
    AISERVE_FILE_ERROR              /* invalid: details say where, why */
} aiserve_file_status_e;

typedef struct {
    char      id[AISERVE_FILES_ID_LEN + 1];
    uint32_t  account_id;           /* owner */
    uint32_t  status;               /* aiserve_file_status_e */
    uint64_t  bytes;
    int64_t   created_at;           /* Unix seconds */
    uint64_t  examples;             /* examples read (processed) */
    uint64_t  tokens;               /* their tokens, [CLS] and [SEP] in */
    uint32_t  num_labels;           /* labels (or tags) of the file */
    char      format[8];            /* "jsonl", "csv", "conll" */
    char      purpose[AISERVE_FILES_PURPOSE_MAX + 1];
    char      filename[AISERVE_FILES_NAME_MAX + 1];
    char      details[AISERVE_FILES_DETAILS_MAX + 1];  /* "" when none */
} aiserve_file_t;

typedef struct aiserve_files_s  aiserve_files_t;


/*
 * Opens (creates) the store in dir, which must exist and be writable;
 * map_size is the LMDB map in bytes (0: 64 MiB).  A store of an older
 * version is migrated to AISERVE_FILES_VERSION first, in one write
 * transaction (all its records or none; a process opening it at the same
 * time waits, then finds it migrated); *migrated (may be NULL) gets the
 * number of records converted.  A store of a newer version is refused.
 * Returns NULL with err.
 */
aiserve_files_t *aiserve_files_open(const char *dir, size_t map_size,
    size_t *migrated, char *err, size_t err_len);
void aiserve_files_close(aiserve_files_t *fs);

/* The path of a file's content: DIR/ID, in buf (len bytes); -1 if it does
 * not fit. */
int aiserve_files_path(const aiserve_files_t *fs, const char *id, char *buf,
    size_t len);

/*
 * Stores len bytes of data as a new file of f->account_id with
 * f->filename and f->purpose (the other fields are set here: id,
 * created_at, bytes, status UPLOADED).  quota: the most bytes an account
 * may store, 0: no limit; AISERVE_FILES_QUOTA when the account's bytes
 * and len would exceed it (nothing is kept).  On disk first, then the
 * record: a crash between them leaves at most an unlisted DIR/ID.
 */
int aiserve_files_add(aiserve_files_t *fs, aiserve_file_t *f,
    const void *data, size_t len, uint64_t quota, char *err, size_t err_len);

/* A new file id into id (AISERVE_FILES_ID_LEN + 1 bytes), of the time
 * now, whose Unix seconds go to *created_at: 0, or -1 when RAND_bytes
 * fails. */
int aiserve_files_new_id(char *id, int64_t *created_at);

/*
 * Stores len bytes of data as the file f->id (from aiserve_files_new_id())
 * of f->account_id with the fields of f as they are (filename, purpose,
 * status, format, details; bytes and created_at are set here): a file
 * the service makes for the account, as a fine-tuning job's results.
 * Counted in the account's bytes, never refused by a quota.
 * AISERVE_FILES_EXISTS, changing nothing, when f->id is stored already
 * (a writer that was interrupted and runs again).
 */
int aiserve_files_add_as(aiserve_files_t *fs, aiserve_file_t *f,
    const void *data, size_t len, char *err, size_t err_len);

/* The record of id; AISERVE_FILES_NOTFOUND when none. */
int aiserve_files_get(aiserve_files_t *fs, const char *id, aiserve_file_t *f,
    char *err, size_t err_len);

/* Replaces the record of f->id (its status and validation fields);
 * AISERVE_FILES_NOTFOUND when it was deleted meanwhile. */
int aiserve_files_update(aiserve_files_t *fs, const aiserve_file_t *f,
    char *err, size_t err_len);

/* Deletes the record and the content of id, giving its bytes back to the
 * account's usage; AISERVE_FILES_NOTFOUND when none. */
int aiserve_files_delete(aiserve_files_t *fs, const char *id, char *err,
    size_t err_len);

/*
 * Lists up to limit records of account_id (0: every account's) and
 * purpose (NULL: all): newest first (OpenAI's default order "desc"),
 * older than the id after (NULL: from the newest), or with ascending
 * oldest first, newer than after.  out has room for limit + 1 records:
 * *n gets how many were found, at most limit + 1, so the caller knows
 * has_more.
 */
int aiserve_files_list(aiserve_files_t *fs, uint32_t account_id,
    const char *purpose, const char *after, int ascending,
    aiserve_file_t *out, size_t limit, size_t *n, char *err,
    size_t err_len);

/*
 * Repairs what a process killed during an upload left, for a start with
 * no other process using the store (nginx's first start): removes
 * DIR/.tmp-* files and contents without a record, and marks records still
 * UPLOADED (validation never finished) ERROR with details saying so.
 * *removed and *interrupted get the counts.
 */
int aiserve_files_recover(aiserve_files_t *fs, size_t *removed,
    size_t *interrupted, char *err, size_t err_len);

/* Bytes stored by account_id. */
int aiserve_files_usage(aiserve_files_t *fs, uint32_t account_id,
    uint64_t *bytes, char *err, size_t err_len);

/*
 * Validates the content of f (len bytes) as training data: format by the
 * file name (.jsonl/.json, .csv, else CoNLL, as aiserve_data_read; a CSV
 * without a "label" column takes the one column that is neither "text"
 * nor "text_pair" as its label, as banking77's "text,category"), every
 * example read, its labels built, every example featurized through tok
 * (truncated to the tokenizer's max length, as training truncates).
 * Sets f->status PROCESSED with examples, tokens, num_labels, format, or
 * ERROR with details naming the line and the reason ("train.csv:17:
 * field "label": ..."; out of memory is such a reason too).
 */
void aiserve_files_validate(const aiserve_tok_t *tok, const char *data,
    size_t len, aiserve_file_t *f);

/*
 * Reads the content of the stored file f into ds as validation read it
 * (the format by f->filename, a CSV's label column as above): training
 * reads its files through this.  0, or -1 with err naming the file, line
 * and field.
 */
int aiserve_files_dataset(const aiserve_files_t *fs, const aiserve_file_t *f,
    aiserve_dataset_t *ds, char *err, size_t err_len);

/* The same on the content kept at path (aiserve_files_keep()), f naming
 * it (its filename gives the format and the messages' name). */
int aiserve_files_dataset_at(const char *path, const aiserve_file_t *f,
    aiserve_dataset_t *ds, char *err, size_t err_len);

/*
 * Keeps the content of f at path to, so that a reader of it (a
 * fine-tuning job resuming) does not depend on f staying in the store: a
 * hard link when to is on the store's file system, else a copy (a
 * temporary file, fsync, rename).  0, or -1 with err naming the path.
 */
int aiserve_files_keep(const aiserve_files_t *fs, const aiserve_file_t *f,
    const char *to, char *err, size_t err_len);

const char *aiserve_file_status_name(uint32_t status);

#endif /* AISERVE_FILES_H */
