/*
 * aiserve registry: the fine-tuned models a server deploys, in a
 * directory ROOT (DIR/models of aiserve_fine_tuning_store):
 *
 *   ROOT/<escaped id>/      a complete model directory (full, head or
 *                           lora, as src/aiserve_hf_write.h writes them)
 *                           and its manifest.json
 *   ROOT/generation         a decimal number, bumped by every publish and
 *                           remove; readers compare it to the one they
 *                           loaded to notice a change
 *   ROOT/.lock              flock()ed by publishers and removers
 *
 * An id is escaped as a file name by writing every byte outside
 * [A-Za-z0-9._-] as %XX (RFC 3986's percent-encoding), so
 * "ft:tiny:acct_2:bank:abc" lives in "ft%3Atiny%3Aacct_2%3Abank%3Aabc".
 *
 * Publishing copies the source directory into ROOT/.staging-<escaped id>
 * (every file fsync'ed), writes the manifest there, renames the staging
 * directory to its place, fsyncs ROOT, and then writes the new generation
 * (a temporary file, fsync, rename, fsync of ROOT): a reader that sees the
 * new generation sees the complete model, and a crash leaves either no
 * model or the whole one.  Removing renames the directory out of the way,
 * bumps the generation, then deletes the files (a process that mapped
 * them keeps its mapping).
 *
 * Run as root, the registry gives what it creates to the owner of ROOT
 * (nginx makes it the workers' user), so the workers can remove it.
 *
 * No nginx types; the functions may be called from several processes at
 * once (the lock) and from any thread.
 */
#ifndef AISERVE_REGISTRY_H
#define AISERVE_REGISTRY_H

#include <stddef.h>
#include <stdint.h>


#define AISERVE_REGISTRY_ID_MAX     255     /* bytes of an id */
#define AISERVE_REGISTRY_NAME_MAX   127     /* base, account, job id */
#define AISERVE_REGISTRY_PATH_MAX   4096

/* return codes besides 0 and -1 */
#define AISERVE_REGISTRY_NOTFOUND   -2
#define AISERVE_REGISTRY_EXISTS     -3


/* What JOBS (or tools/aiserve-models) tells the registry of a model. */
typedef struct {
    const char  *id;          /* fine_tuned_model name,
                                 "ft:minilm:acct_x:bank:abc..." */
    const char  *base;        /* aiserve_model name of the base */
    const char  *account;     /* owning account id, "acct_2" */
    const char  *mode;        /* "full", "head" or "lora" */
    const char  *task;        /* "classify", "ner", "pair" */
    const char  *job_id;      /* "ftjob-..." or "" */
    int64_t      created_at;  /* unix seconds */
} aiserve_registry_entry_t;


/* A published model as read back: the manifest and where it lives. */
typedef struct {
    char     id[AISERVE_REGISTRY_ID_MAX + 1];
    char     base[AISERVE_REGISTRY_NAME_MAX + 1];
    char     account[AISERVE_REGISTRY_NAME_MAX + 1];
    char     mode[8];
    char     task[16];
    char     job_id[AISERVE_REGISTRY_NAME_MAX + 1];
    int64_t  created_at;
    char     dir[AISERVE_REGISTRY_PATH_MAX];      /* ROOT/<escaped id> */
} aiserve_registry_model_t;


/*
 * Publishes a finished model: SRC_DIR is a complete model directory
 * written by aiserve_trainer_write_model() (for head/lora also their
 * small part); it is copied atomically to ROOT/<escaped id>/ with a
 * manifest, and the generation is bumped so every worker loads it within
 * a second.  ROOT (and the directories above it) is created when
 * missing.  SRC_DIR is left as it was.
 *
 * Checks: id, base, account of 1 .. their maximum bytes, no control
 * characters; mode full, head or lora; task classify, ner or pair;
 * SRC_DIR holds the files of that mode (config.json; model.safetensors,
 * head.safetensors or adapter_model.safetensors).  Returns 0, -1 with
 * ERR (a bad field, the file it could not copy), or
 * AISERVE_REGISTRY_EXISTS when ID is published already.
 */
int aiserve_registry_publish(const char *root,
    const aiserve_registry_entry_t *e, const char *src_dir, char *err,
    size_t err_len);

/*
 * Removes model ID (its files and its manifest) and bumps the
 * generation.  0, AISERVE_REGISTRY_NOTFOUND, or -1 with ERR.
 */
int aiserve_registry_remove(const char *root, const char *id, char *err,
    size_t err_len);

/*
 * The generation of ROOT in *GEN: 0 for a registry nothing was ever
 * published in (ROOT or its file missing).  0, or -1 with ERR (a file
 * that is not a number).
 */
int aiserve_registry_generation(const char *root, uint64_t *gen, char *err,
    size_t err_len);

/*
 * Every published model of ROOT, sorted by id, in *MODELS (malloc'ed,
 * free() it; NULL when none) and *N.  A directory whose manifest is
 * missing or broken is left out (a crash mid-publish leaves only
 * ".staging-" directories, which are skipped).  0, or -1 with ERR.
 */
int aiserve_registry_list(const char *root,
    aiserve_registry_model_t **models, size_t *n, char *err,
    size_t err_len);

/*
 * Model ID of ROOT in *M: 0, AISERVE_REGISTRY_NOTFOUND, or -1 with ERR
 * (a manifest that cannot be read: names the file and the field).
 */
int aiserve_registry_lookup(const char *root, const char *id,
    aiserve_registry_model_t *m, char *err, size_t err_len);

/*
 * ID escaped as a file name (see above) into BUF of LEN bytes.  0, or -1
 * when it does not fit.
 */
int aiserve_registry_escape(const char *id, char *buf, size_t len);

#endif /* AISERVE_REGISTRY_H */
