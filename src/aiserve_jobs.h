/*
 * aiserve jobs: the store behind the fine-tuning API (POST/GET
 * /v1/fine_tuning/jobs, OpenAI's shape), an LMDB environment DIR/jobs.mdb
 * of its own with five sub-databases:
 *
 *   "jobs"         job id -> the job record (JSON text)
 *   "accounts"     account id (4 bytes, big-endian) + job id -> ""
 *   "active"       job id -> "" for every job not yet in a final status
 *   "events"       job id + sequence (8 bytes, big-endian) -> event (JSON)
 *   "checkpoints"  job id + step (8 bytes, big-endian) -> checkpoint (JSON)
 *
 * A job record is OpenAI's fine_tuning.job object (openai-python
 * src/openai/types/fine_tuning/fine_tuning_job.py: id, object, model,
 * created_at, finished_at, fine_tuned_model, organization_id, status,
 * training_file, validation_file, hyperparameters, method,
 * trained_tokens, estimated_finish, error, seed, suffix, result_files)
 * with our fields task and mode, plus private fields whose names start
 * with "_" (the owning account, the lease, the last checkpoint, the
 * event counter) that aiserve_jobs_public() leaves out.
 *
 * Ids are a prefix ("ftjob-", "ftevent-", "ftckpt-") and 24 base62
 * characters: 9 of the creation time in microseconds, 15 random
 * (libcrypto's RAND_bytes), so that key order is creation order.
 *
 * Exactly one process runs a job: aiserve_jobs_claim() gives it a lease
 * (the process id and an expiry), every aiserve_jobs_update() checks and
 * renews it in the transaction that writes the progress, and a job whose
 * lease expired, or whose holder process no longer exists (kill(pid, 0)
 * is ESRCH: the store is one host's), is claimed again by any process.
 *
 * No nginx types.  One aiserve_jobs_t per process (LMDB environments do
 * not cross fork()); its functions may be called from several threads at
 * once (MDB_NOTLS).
 */
#ifndef AISERVE_JOBS_H
#define AISERVE_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>


#define AISERVE_JOBS_ID_LEN         30      /* "ftjob-" + 24 */

/* return codes */
#define AISERVE_JOBS_OK             0
#define AISERVE_JOBS_ERROR          -1      /* err says why */
#define AISERVE_JOBS_NOTFOUND       -2
#define AISERVE_JOBS_LIMIT          -3      /* too many active jobs */
#define AISERVE_JOBS_CONFLICT       -4      /* final status, or the lease
                                               is another process's */

typedef struct aiserve_jobs_s  aiserve_jobs_t;

/* What a lease holder writes after a chunk of work, in one transaction
 * (each part may be NULL). */
typedef struct {
    json_t      *set;           /* fields merged into the record */
    json_t      *events;        /* an array of {level, message, type,
                                   data}: ids and created_at are added */
    json_t      *checkpoint;    /* {step_number, metrics,
                                   fine_tuned_model_checkpoint, _dir}:
                                   id, object, created_at and
                                   fine_tuning_job_id are added; the
                                   record's "_checkpoint" names it */
    const char  *status;        /* a new status; a final one (succeeded,
                                   failed, cancelled) sets finished_at,
                                   ends the lease and leaves "active" */
} aiserve_jobs_update_t;


/* Opens (creates) DIR/jobs.mdb; map_size in bytes (0: 64 MiB).  NULL with
 * err. */
aiserve_jobs_t *aiserve_jobs_open(const char *dir, size_t map_size,
    char *err, size_t err_len);
void aiserve_jobs_close(aiserve_jobs_t *js);

/* 1 for succeeded, failed, cancelled. */
int aiserve_jobs_final(const char *status);

/* A new job id ("ftjob-" + 24 base62) into id (AISERVE_JOBS_ID_LEN + 1
 * bytes): 0, or -1 when RAND_bytes fails. */
int aiserve_jobs_new_job_id(char *id);

/*
 * Adds JOB (an object with the caller's fields: model, training_file,
 * ...; its "id" if it has one from aiserve_jobs_new_job_id(), so that the
 * caller may reserve its charges first) as a new job of ACCOUNT created
 * at NOW (Unix seconds): sets id,
 * object, created_at, organization_id ("acct_N"), the null fields
 * OpenAI's object has, status (JOB's, or "queued"), "_account".  A job
 * created in a final status (a file that failed validation) is not
 * active.  AISERVE_JOBS_LIMIT when the account already has max_active
 * active jobs (0: no limit); nothing is added.
 */
int aiserve_jobs_create(aiserve_jobs_t *js, json_t *job, uint32_t account,
    size_t max_active, int64_t now, char *err, size_t err_len);

/* The record of ID (a new reference for the caller), private fields
 * included; AISERVE_JOBS_NOTFOUND when none. */
int aiserve_jobs_get(aiserve_jobs_t *js, const char *id, json_t **job,
    char *err, size_t err_len);

/* A copy of JOB without its private fields. */
json_t *aiserve_jobs_public(const json_t *job);

/* The owner of a record: its "_account". */
uint32_t aiserve_jobs_account(const json_t *job);

/*
 * Up to LIMIT public job objects of ACCOUNT (0: every account's), newest
 * first, older than the job AFTER (NULL: from the newest), appended to
 * the array OUT; *has_more says whether more follow.  METADATA filters
 * as OpenAI's list does: NULL or an empty object, none; JSON null, the
 * jobs without metadata; an object of strings, the jobs whose metadata
 * has each of its keys with that value.
 */
int aiserve_jobs_list(aiserve_jobs_t *js, uint32_t account,
    const char *after, const json_t *metadata, size_t limit, json_t *out,
    int *has_more, char *err, size_t err_len);

/*
 * Cancels ID at NOW: its status becomes cancelled at once (a process
 * running it sees that at its next aiserve_jobs_update() and stops),
 * with a message event; *job gets the record.  AISERVE_JOBS_CONFLICT
 * when it is already in a final status (*job set too).
 */
int aiserve_jobs_cancel(aiserve_jobs_t *js, const char *id, int64_t now,
    json_t **job, char *err, size_t err_len);

/*
 * Gives PID the lease of the oldest runnable job (queued or
 * validating_files, or running with a lease expired at NOW_MS or held by
 * a process that no longer exists) until NOW_MS + LEASE_MS, unless
 * MAX_RUNNING jobs (0: no limit) already hold live leases; a job taken
 * over gets a "_takeovers" count.  *job gets the record.
 * AISERVE_JOBS_NOTFOUND when there is none to run (or no room).
 */
int aiserve_jobs_claim(aiserve_jobs_t *js, int pid, int64_t now_ms,
    int64_t lease_ms, size_t max_running, json_t **job, char *err,
    size_t err_len);

/*
 * Writes U for the holder PID of ID's lease and renews the lease until
 * NOW_MS + LEASE_MS.  AISERVE_JOBS_CONFLICT, writing nothing, when the
 * job is in a final status (cancelled meanwhile) or the lease is another
 * process's.  *job (may be NULL) gets the record as written.
 */
int aiserve_jobs_update(aiserve_jobs_t *js, const char *id, int pid,
    int64_t now_ms, int64_t lease_ms, const aiserve_jobs_update_t *u,
    json_t **job, char *err, size_t err_len);

/* Ends PID's lease of ID (the job stays runnable: another process
 * resumes it); AISERVE_JOBS_CONFLICT when PID does not hold it. */
int aiserve_jobs_release(aiserve_jobs_t *js, const char *id, int pid,
    char *err, size_t err_len);

/*
 * Up to LIMIT events (fine_tuning.job.event objects) or checkpoints
 * (fine_tuning.job.checkpoint) of ID, newest first, older than the one
 * whose id is AFTER (NULL: from the newest), appended to OUT without
 * their private fields (a checkpoint's "_dir").
 */
int aiserve_jobs_events(aiserve_jobs_t *js, const char *id,
    const char *after, size_t limit, json_t *out, int *has_more, char *err,
    size_t err_len);
int aiserve_jobs_checkpoints(aiserve_jobs_t *js, const char *id,
    const char *after, size_t limit, json_t *out, int *has_more, char *err,
    size_t err_len);

/*
 * The step metrics of job ID as the CSV of a fine-tune-results file
 * (OpenAI's has "step,train_loss,train_accuracy,valid_loss,..."): the
 * header "step,train_loss,learning_rate,trained_tokens,epoch,valid_loss,
 * valid_accuracy,valid_f1", then a row per step of a metrics event (type
 * "metrics", data with "step"), in step order: that step's training loss,
 * learning rate and trained tokens and, when an evaluation ran at that
 * step, its epoch, validation loss and accuracy (or F1); a field whose
 * value no event gives is empty.  The stored events are read oldest
 * first, then PENDING (an array of events not written yet, may be NULL);
 * a step met again (steps trained again after a worker was killed) keeps
 * the last values.  Reals are printed with %.6g.  *csv gets the text
 * (malloc()'ed, NUL-terminated), *len its length.
 */
int aiserve_jobs_results_csv(aiserve_jobs_t *js, const char *id,
    const json_t *pending, char **csv, size_t *len, char *err,
    size_t err_len);

#endif /* AISERVE_JOBS_H */
