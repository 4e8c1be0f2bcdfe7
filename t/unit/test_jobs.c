/*
 * The job store of the fine-tuning API (src/aiserve_jobs.c).
 *
 *  - create: OpenAI's fields, ids "ftjob-" + 24 base62 in creation order,
 *    the per-account limit of active jobs (a final job does not count)
 *  - list by account and for all: newest first, after, limit, has_more;
 *    the private fields never listed
 *  - leases: one holder; a live lease is not claimed again; an expired
 *    one, or one whose process is gone, is taken over (counted); the
 *    host's limit of running jobs; release makes the job runnable again
 *  - transitions: updates only by the holder; a final status ends the
 *    lease and the job's activity; cancel of a running job makes the
 *    holder's next update a conflict; cancel of a final job a conflict
 *  - the results CSV of the metrics events (stored and pending)
 *  - events and checkpoints: newest first, after, limit
 *  - a second handle (another worker) sees the first one's writes
 */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "aiserve_jobs.h"


static char  dir[] = "/tmp/aiserve-test-jobs-XXXXXX";


static const char *
str(const json_t *o, const char *key)
{
    const char  *s;

    s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}


static int
create(aiserve_jobs_t *js, uint32_t account, const char *status, char *id)
{
    int      rc;
    char     err[256];
    json_t  *job;

    job = json_pack("{s:s,s:s}", "model", "tiny", "training_file",
                    "file-000000000000000000000001");
    if (status) {
        json_object_set_new(job, "status", json_string(status));
        json_object_set_new(job, "error",
                            json_pack("{s:s,s:s,s:s}", "code", "bad",
                                      "message", "train.jsonl:2: bad",
                                      "param", "training_file"));
        json_object_set_new(job, "metadata",
                            json_pack("{s:s}", "run", status));
    }

    rc = aiserve_jobs_create(js, job, account, 3, 1000, err, sizeof(err));
    if (rc == AISERVE_JOBS_OK && id) {
        strcpy(id, str(job, "id"));
    }

    json_decref(job);
    return rc;
}


/* ids of a list array, newest first, space-separated into buf */
static const char *
ids(json_t *a, char *buf, size_t len)
{
    size_t  i, n;

    buf[0] = '\0';
    n = 0;

    for (i = 0; i < json_array_size(a); i++) {
        n += snprintf(buf + n, len - n, "%s%s", i ? " " : "",
                      str(json_array_get(a, i), "id"));
    }

    return buf;
}


int
main(void)
{
    int              rc, more, pid_dead, i;
    char             err[256], a[4][40], b[2][40], got[1024], want[1024];
    char            *csv;
    size_t           len;
    json_t          *job, *list, *ev, *pending, *meta;
    pid_t            child;
    aiserve_jobs_t  *js, *js2;
    aiserve_jobs_update_t  u;

    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }

    js = aiserve_jobs_open(dir, 0, err, sizeof(err));
    tap_ok(js != NULL, "open: %s", js ? "ok" : err);
    if (js == NULL) {
        return tap_done();
    }

    /* --- create ------------------------------------------------------- */

    job = json_pack("{s:s,s:s}", "model", "tiny", "training_file", "f");
    rc = aiserve_jobs_create(js, job, 7, 0, 1234, err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK, "create: %d", rc);
    tap_ok(strlen(str(job, "id")) == AISERVE_JOBS_ID_LEN
           && strncmp(str(job, "id"), "ftjob-", 6) == 0
           && strspn(str(job, "id") + 6, "0123456789ABCDEFGHIJKLMNOPQRSTUVW"
                     "XYZabcdefghijklmnopqrstuvwxyz") == 24,
           "id ftjob- + 24 base62: %s", str(job, "id"));
    tap_ok(strcmp(str(job, "object"), "fine_tuning.job") == 0
           && strcmp(str(job, "status"), "queued") == 0
           && strcmp(str(job, "organization_id"), "acct_7") == 0
           && json_integer_value(json_object_get(job, "created_at")) == 1234
           && json_is_null(json_object_get(job, "finished_at"))
           && json_is_null(json_object_get(job, "fine_tuned_model"))
           && json_is_null(json_object_get(job, "error"))
           && json_is_array(json_object_get(job, "result_files")),
           "create: object, status queued, organization_id, nulls");
    tap_ok(aiserve_jobs_account(job) == 7, "the owner is kept");

    list = aiserve_jobs_public(job);
    tap_ok(json_object_get(list, "_account") == NULL
           && json_object_get(list, "_events") == NULL
           && json_object_get(list, "model") != NULL,
           "public: no private fields");
    json_decref(list);
    json_decref(job);

    /* account 1: three active jobs fill its limit of 3 */
    for (i = 0; i < 3; i++) {
        tap_ok(create(js, 1, NULL, a[i]) == AISERVE_JOBS_OK,
               "account 1: job %d", i);
    }
    tap_ok(strcmp(a[0], a[1]) < 0 && strcmp(a[1], a[2]) < 0,
           "ids in creation order");
    tap_ok(create(js, 1, NULL, NULL) == AISERVE_JOBS_LIMIT,
           "a fourth active job: the limit");
    tap_ok(create(js, 1, "failed", a[3]) == AISERVE_JOBS_OK,
           "a job created failed does not count against it");
    tap_ok(create(js, 2, NULL, b[0]) == AISERVE_JOBS_OK
           && create(js, 2, NULL, b[1]) == AISERVE_JOBS_OK,
           "another account is not limited by account 1's jobs");

    rc = aiserve_jobs_get(js, a[3], &job, err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK
           && strcmp(str(job, "status"), "failed") == 0
           && json_integer_value(json_object_get(job, "finished_at"))
              == 1000
           && strcmp(str(json_object_get(job, "error"), "message"),
                     "train.jsonl:2: bad") == 0,
           "a failed job: finished_at and its error");
    json_decref(job);
    tap_ok(aiserve_jobs_get(js, "ftjob-000000000000000000000000", &job,
                            err, sizeof(err)) == AISERVE_JOBS_NOTFOUND,
           "get of a missing job: not found");

    /* --- list --------------------------------------------------------- */

    list = json_array();
    rc = aiserve_jobs_list(js, 1, NULL, NULL, 10, list, &more, err,
                           sizeof(err));
    snprintf(want, sizeof(want), "%s %s %s %s", a[3], a[2], a[1], a[0]);
    tap_ok(rc == 0 && strcmp(ids(list, got, sizeof(got)), want) == 0
           && !more, "list account 1: newest first (%s)", got);
    tap_ok(json_object_get(json_array_get(list, 0), "_account") == NULL,
           "listed without private fields");
    json_decref(list);

    list = json_array();
    aiserve_jobs_list(js, 1, NULL, NULL, 2, list, &more, err, sizeof(err));
    snprintf(want, sizeof(want), "%s %s", a[3], a[2]);
    tap_ok(strcmp(ids(list, got, sizeof(got)), want) == 0 && more,
           "limit 2: the newest two, has_more");
    json_decref(list);

    list = json_array();
    aiserve_jobs_list(js, 1, a[2], NULL, 2, list, &more, err, sizeof(err));
    snprintf(want, sizeof(want), "%s %s", a[1], a[0]);
    tap_ok(strcmp(ids(list, got, sizeof(got)), want) == 0 && !more,
           "after: the next two, no more");
    json_decref(list);

    list = json_array();
    aiserve_jobs_list(js, 2, NULL, NULL, 10, list, &more, err, sizeof(err));
    snprintf(want, sizeof(want), "%s %s", b[1], b[0]);
    tap_ok(strcmp(ids(list, got, sizeof(got)), want) == 0,
           "account 2 sees only its own");
    json_decref(list);

    list = json_array();
    aiserve_jobs_list(js, 3, NULL, NULL, 10, list, &more, err, sizeof(err));
    tap_ok(json_array_size(list) == 0, "account 3: none");
    json_decref(list);

    list = json_array();
    aiserve_jobs_list(js, 0, b[1], NULL, 3, list, &more, err, sizeof(err));
    snprintf(want, sizeof(want), "%s %s %s", b[0], a[3], a[2]);
    tap_ok(strcmp(ids(list, got, sizeof(got)), want) == 0 && more,
           "every account (admin), after: %s", got);
    json_decref(list);

    /* metadata filters: OpenAI's metadata[k]=v and metadata=null */
    meta = json_pack("{s:s}", "run", "failed");
    list = json_array();
    aiserve_jobs_list(js, 1, NULL, meta, 10, list, &more, err, sizeof(err));
    tap_ok(strcmp(ids(list, got, sizeof(got)), a[3]) == 0 && !more,
           "metadata run=failed: the one job with it (%s)", got);
    json_decref(list);
    json_object_set_new(meta, "run", json_string("other"));
    list = json_array();
    aiserve_jobs_list(js, 1, NULL, meta, 10, list, &more, err, sizeof(err));
    tap_ok(json_array_size(list) == 0 && !more, "metadata run=other: none");
    json_decref(list);
    json_decref(meta);
    meta = json_null();
    list = json_array();
    aiserve_jobs_list(js, 1, NULL, meta, 2, list, &more, err, sizeof(err));
    snprintf(want, sizeof(want), "%s %s", a[2], a[1]);
    tap_ok(strcmp(ids(list, got, sizeof(got)), want) == 0 && more,
           "metadata null, limit 2: the newest two without metadata, "
           "has_more (%s)", got);
    json_decref(list);
    list = json_array();
    aiserve_jobs_list(js, 1, a[1], meta, 2, list, &more, err, sizeof(err));
    tap_ok(strcmp(ids(list, got, sizeof(got)), a[0]) == 0 && !more,
           "metadata null, after: the last one, no more (%s)", got);
    json_decref(list);
    json_decref(meta);

    /* --- leases ------------------------------------------------------- */

    /* the oldest runnable job first: the one of account 7 */
    rc = aiserve_jobs_claim(js, getpid(), 10000, 5000, 2, &job, err,
                            sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK && aiserve_jobs_account(job) == 7,
           "claim: the oldest job");
    json_decref(job);

    rc = aiserve_jobs_claim(js, getpid(), 10000, 5000, 2, &job, err,
                            sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK && strcmp(str(job, "id"), a[0]) == 0,
           "a second claim: the next job, not the leased one");
    json_decref(job);

    rc = aiserve_jobs_claim(js, getpid(), 10000, 5000, 2, &job, err,
                            sizeof(err));
    tap_ok(rc == AISERVE_JOBS_NOTFOUND,
           "two live leases, at most 2 running: nothing claimed");

    memset(&u, 0, sizeof(u));
    u.set = json_pack("{s:i}", "trained_tokens", 12);
    u.status = "running";
    rc = aiserve_jobs_update(js, a[0], getpid(), 11000, 5000, &u, &job,
                             err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK
           && strcmp(str(job, "status"), "running") == 0
           && json_integer_value(json_object_get(job, "trained_tokens"))
              == 12, "the holder updates: status and progress");
    json_decref(job);
    json_decref(u.set);
    u.set = NULL;
    u.status = NULL;

    rc = aiserve_jobs_update(js, a[0], getpid() + 1, 11000, 5000, &u, NULL,
                             err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_CONFLICT, "another process: conflict");

    /* a process that exited holds no lease: its job is taken over */
    child = fork();
    if (child == 0) {
        _exit(0);
    }
    waitpid(child, NULL, 0);
    pid_dead = (int) child;

    rc = aiserve_jobs_release(js, a[0], getpid(), err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK, "release");
    rc = aiserve_jobs_release(js, a[0], getpid(), err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_CONFLICT, "a second release: conflict");

    rc = aiserve_jobs_claim(js, pid_dead, 12000, 60000, 2, &job, err,
                            sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK && strcmp(str(job, "id"), a[0]) == 0
           && json_object_get(job, "_takeovers") == NULL,
           "a released job is claimed again (by a process now gone)");
    json_decref(job);

    rc = aiserve_jobs_claim(js, getpid(), 12500, 5000, 0, &job, err,
                            sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK && strcmp(str(job, "id"), a[0]) == 0
           && json_integer_value(json_object_get(job, "_takeovers")) == 1,
           "a lease of a process that is gone: taken over at once");
    json_decref(job);

    rc = aiserve_jobs_update(js, a[0], pid_dead, 12600, 5000, &u, NULL,
                             err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_CONFLICT,
           "the old holder's update: conflict, nothing written");

    /* expiry: the job of account 7 was leased until 15000 */
    rc = aiserve_jobs_claim(js, getpid(), 14999, 5000, 0, &job, err,
                            sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK && strcmp(str(job, "id"), a[1]) == 0,
           "before expiry: the next job instead");
    json_decref(job);

    js2 = aiserve_jobs_open(dir, 0, err, sizeof(err));
    tap_ok(js2 != NULL, "a second handle");

    rc = aiserve_jobs_claim(js2, getpid(), 15000, 5000, 0, &job, err,
                            sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK && aiserve_jobs_account(job) == 7
           && json_integer_value(json_object_get(job, "_takeovers")) == 1,
           "at expiry: taken over, through the other handle");
    json_decref(job);

    /* --- transitions -------------------------------------------------- */

    u.events = json_pack("[{s:s,s:s,s:{s:i,s:f}},{s:s}]",
                         "type", "metrics", "message", "Step 1/4",
                         "data", "step", 1, "train_loss", 0.5,
                         "message", "epoch 1 done");
    u.checkpoint = json_pack("{s:i,s:{s:f},s:s,s:s}", "step_number", 4,
                             "metrics", "train_loss", 0.5,
                             "fine_tuned_model_checkpoint", "ft:x:ckpt-4",
                             "_dir", "/tmp/x");
    rc = aiserve_jobs_update(js, a[0], getpid(), 13000, 5000, &u, &job,
                             err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK
           && json_integer_value(json_object_get(json_object_get(job,
                                     "_checkpoint"), "step_number")) == 4,
           "events and a checkpoint written with the lease");
    json_decref(job);
    json_decref(u.events);
    json_decref(u.checkpoint);
    u.events = NULL;
    u.checkpoint = NULL;

    list = json_array();
    rc = aiserve_jobs_events(js, a[0], NULL, 10, list, &more, err,
                             sizeof(err));
    ev = json_array_get(list, 0);
    tap_ok(rc == 0 && json_array_size(list) == 3
           && strcmp(str(ev, "message"), "epoch 1 done") == 0
           && strcmp(str(ev, "type"), "message") == 0
           && strcmp(str(ev, "level"), "info") == 0
           && strncmp(str(ev, "id"), "ftevent-", 8) == 0
           && strcmp(str(ev, "object"), "fine_tuning.job.event") == 0
           && strcmp(str(json_array_get(list, 2), "message"),
                     "Created fine-tuning job") == 0,
           "events: newest first, defaults filled");
    ev = json_array_get(list, 1);
    tap_ok(strcmp(str(ev, "type"), "metrics") == 0
           && json_integer_value(json_object_get(json_object_get(ev, "data"),
                                                 "step")) == 1,
           "a metrics event and its data");
    strcpy(want, str(json_array_get(list, 0), "id"));
    strcpy(got, str(json_array_get(list, 2), "id"));
    json_decref(list);

    list = json_array();
    aiserve_jobs_events(js, a[0], want, 1, list, &more, err, sizeof(err));
    tap_ok(json_array_size(list) == 1 && more
           && strcmp(str(json_array_get(list, 0), "type"), "metrics") == 0,
           "events after the newest, limit 1: the metrics one, has_more");
    json_decref(list);

    list = json_array();
    aiserve_jobs_events(js, a[0], got, 10, list, &more, err, sizeof(err));
    tap_ok(json_array_size(list) == 0 && !more,
           "events after the oldest: none");
    json_decref(list);

    list = json_array();
    aiserve_jobs_checkpoints(js, a[0], NULL, 10, list, &more, err,
                             sizeof(err));
    ev = json_array_get(list, 0);
    tap_ok(json_array_size(list) == 1
           && strncmp(str(ev, "id"), "ftckpt-", 7) == 0
           && strcmp(str(ev, "fine_tuning_job_id"), a[0]) == 0
           && strcmp(str(ev, "object"), "fine_tuning.job.checkpoint") == 0
           && json_object_get(ev, "_dir") == NULL,
           "checkpoints: the record, no private dir");
    json_decref(list);

    /* the results CSV: the stored metrics, then the pending ones; a step
     * met again keeps its last values */
    pending = json_pack("[{s:s,s:{s:i,s:f,s:f,s:i}},"
                        "{s:s,s:{s:i,s:i,s:f,s:f,s:f}},"
                        "{s:s,s:{s:i,s:f,s:f,s:i}},{s:s}]",
                        "type", "metrics", "data", "step", 2,
                        "train_loss", 0.25, "learning_rate", 1e-4,
                        "trained_tokens", 40,
                        "type", "metrics", "data", "step", 2, "epoch", 1,
                        "train_loss", 0.25, "valid_loss", 0.75,
                        "accuracy", 0.5,
                        "type", "metrics", "data", "step", 1,
                        "train_loss", 0.5, "learning_rate", 2e-5,
                        "trained_tokens", 20,
                        "message", "New fine-tuned model created");
    rc = aiserve_jobs_results_csv(js, a[0], pending, &csv, &len, err,
                                  sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK && strlen(csv) == len
           && strcmp(csv, "step,train_loss,learning_rate,trained_tokens,"
                          "epoch,valid_loss,valid_accuracy,valid_f1\n"
                          "1,0.5,2e-05,20,,,,\n"
                          "2,0.25,0.0001,40,1,0.75,0.5,\n") == 0,
           "results CSV: a row per step, the evaluation in its step's row:"
           "\n%s", csv ? csv : err);
    free(csv);

    rc = aiserve_jobs_results_csv(js, a[0], NULL, &csv, &len, err,
                                  sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK
           && strcmp(csv, "step,train_loss,learning_rate,trained_tokens,"
                          "epoch,valid_loss,valid_accuracy,valid_f1\n"
                          "1,0.5,,,,,,\n") == 0,
           "results CSV of the stored events alone:\n%s",
           csv ? csv : err);
    free(csv);
    json_decref(pending);

    /* cancel while running: the holder's next update is a conflict */
    rc = aiserve_jobs_cancel(js2, a[0], 14, &job, err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK
           && strcmp(str(job, "status"), "cancelled") == 0
           && json_integer_value(json_object_get(job, "finished_at")) == 14
           && json_object_get(job, "_lease") == NULL, "cancel");
    json_decref(job);

    rc = aiserve_jobs_update(js, a[0], getpid(), 13100, 5000, &u, &job,
                             err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_CONFLICT
           && strcmp(str(job, "status"), "cancelled") == 0,
           "the holder sees the cancel as a conflict with the record");
    json_decref(job);

    rc = aiserve_jobs_cancel(js, a[0], 15, &job, err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_CONFLICT, "a second cancel: conflict");
    json_decref(job);

    tap_ok(create(js, 1, NULL, NULL) == AISERVE_JOBS_OK,
           "the cancelled job no longer counts against the limit");

    /* a final status ends the lease and the activity */
    u.status = "succeeded";
    u.set = json_pack("{s:s}", "fine_tuned_model", "ft:tiny:acct_1::x");
    rc = aiserve_jobs_update(js, a[1], getpid(), 16000, 5000, &u, &job,
                             err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_OK
           && strcmp(str(job, "status"), "succeeded") == 0
           && json_integer_value(json_object_get(job, "finished_at")) == 16
           && json_object_get(job, "_lease") == NULL,
           "succeeded: finished_at, no lease");
    json_decref(job);
    json_decref(u.set);
    u.set = NULL;
    u.status = NULL;

    rc = aiserve_jobs_update(js, a[1], getpid(), 16001, 5000, &u, NULL,
                             err, sizeof(err));
    tap_ok(rc == AISERVE_JOBS_CONFLICT, "no update after a final status");

    /* what is left runnable: a[2], b[0], b[1], the new one and account
     * 7's; never a final job */
    for (i = 0; i < 8; i++) {
        rc = aiserve_jobs_claim(js, getpid(), 100000, 5000, 0, &job, err,
                                sizeof(err));
        if (rc != AISERVE_JOBS_OK) {
            break;
        }
        if (aiserve_jobs_final(str(job, "status"))) {
            i = 100;
        }
        json_decref(job);
    }
    tap_ok(i == 5, "five jobs left to claim (account 7's lease expired "
           "too), none final (%d)", i);

    aiserve_jobs_close(js2);
    aiserve_jobs_close(js);

    snprintf(got, sizeof(got), "rm -rf %s", dir);
    if (system(got) != 0) {
        tap_diag("cannot remove %s", dir);
    }

    return tap_done();
}
