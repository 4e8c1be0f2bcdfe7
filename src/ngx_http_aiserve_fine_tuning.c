/*
 * ngx_http_aiserve_fine_tuning_module: fine-tuning jobs of aiserve
 * (OpenAI's fine-tuning API), owned by the account of the caller's API
 * key.  Own ngx_module_t in the aiserve .so, after the meter and the
 * files modules (it reads their configuration and the files store).
 *
 *   POST /v1/fine_tuning/jobs                 create
 *   GET  /v1/fine_tuning/jobs                 ?after=&limit=
 *   GET  /v1/fine_tuning/jobs/ID
 *   POST /v1/fine_tuning/jobs/ID/cancel
 *   GET  /v1/fine_tuning/jobs/ID/events       ?after=&limit=
 *   GET  /v1/fine_tuning/jobs/ID/checkpoints  ?after=&limit=
 *   GET  /v1/fine_tuning/jobs/ID/report       ?format=text
 *
 * The jobs live in the LMDB store of src/aiserve_jobs.c (DIR/jobs.mdb),
 * opened per worker.  Every worker runs a timer that claims a runnable
 * job (a lease in the store, so one process runs a job), then trains it
 * in chunks of chunk_steps steps on the thread pool
 * (aiserve_trainer_step()); after each chunk the thread writes the
 * progress, the events and the renewed lease in one transaction, and
 * every checkpoint_every steps a checkpoint (aiserve_trainer_save() into
 * DIR/jobs/ID/ckpt-STEP/).  A cancel is seen by the next chunk's write.
 * An exiting worker (reload, graceful stop) saves a checkpoint between
 * two chunks and gives the lease back; a worker killed with its lease is
 * replaced at once (its process is gone) and any worker resumes the job
 * from its last checkpoint (aiserve_trainer_restore()).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ctype.h>

#include <jansson.h>

#include "ngx_http_aiserve_infer.h"
#include "ngx_http_aiserve_meter.h"
#include "ngx_http_aiserve_files.h"
#include "aiserve_jobs.h"
#include "aiserve_registry.h"
#include "aiserve_trainer.h"


#define NGX_HTTP_AISERVE_FT_POLL        250       /* ms between claims */
#define NGX_HTTP_AISERVE_FT_HOLD        86400000  /* ms */
#define NGX_HTTP_AISERVE_FT_BODY_MAX    65536
#define NGX_HTTP_AISERVE_FT_SUFFIX_MAX  64


typedef struct {
    ngx_str_t                    dir;
    size_t                       map_size;
    ngx_uint_t                   jobs;            /* running per host */
    ngx_uint_t                   jobs_per_account;
    ngx_int_t                    threads;         /* of a job's passes */
    ngx_str_t                    thread_pool_name;
    ngx_thread_pool_t           *thread_pool;
    ngx_uint_t                   checkpoint_every;  /* steps */
    ngx_uint_t                   chunk_steps;
    ngx_msec_t                   lease;
} ngx_http_aiserve_ft_main_conf_t;


typedef struct {
    ngx_flag_t                   enable;
} ngx_http_aiserve_ft_loc_conf_t;


/* The job this worker runs.  The event loop and the thread take turns:
 * the thread works while the task is posted, the event loop between. */
typedef struct {
    char                         id[AISERVE_JOBS_ID_LEN + 1];
    json_t                      *job;          /* the record as claimed */
    aiserve_trainer_t           *tr;
    ngx_thread_task_t           *task;
    ngx_pool_t                  *pool;
    ngx_http_aiserve_ft_main_conf_t  *conf;
    ngx_http_aiserve_main_conf_t     *amcf;
    char                         dir[4096];    /* DIR/jobs/ID */
    char                         ckpt[4200];   /* the last checkpoint, ""
                                                  when none */
    size_t                       ckpt_step;
    size_t                       start_step;   /* of this worker's run */
    int64_t                      start_ms;
    ngx_uint_t                   stop;         /* event loop: save, give
                                                  the lease back */
    ngx_uint_t                   over;         /* thread: nothing more */
    ngx_uint_t                   final;        /* thread: the job ended
                                                  here (not cancelled) */
    ngx_uint_t                   lost;         /* thread: cancelled, or
                                                  the lease another's */
    uint64_t                     trained;      /* thread: trained_tokens
                                                  written */
    ngx_uint_t                   results;      /* thread: result files
                                                  stored */
    ngx_msec_t                   settled;      /* event loop: the last
                                                  settle */
    ngx_pid_t                    pid;
} ngx_http_aiserve_ft_runner_t;


static ngx_int_t ngx_http_aiserve_ft_init_process(ngx_cycle_t *cycle);
static void ngx_http_aiserve_ft_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_aiserve_ft_init_module(ngx_cycle_t *cycle);
static void *ngx_http_aiserve_ft_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_aiserve_ft_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_aiserve_ft_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_aiserve_ft_store(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_aiserve_ft(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_aiserve_ft_handler(ngx_http_request_t *r);
static void ngx_http_aiserve_ft_create_body(ngx_http_request_t *r);
static void ngx_http_aiserve_ft_poll(ngx_event_t *ev);
static void ngx_http_aiserve_ft_hold(ngx_event_t *ev);
static void ngx_http_aiserve_ft_chunk(void *data, ngx_log_t *log);
static void ngx_http_aiserve_ft_chunk_done(ngx_event_t *ev);
static void ngx_http_aiserve_ft_charge(uint32_t account, const char *id,
    uint64_t trained, ngx_uint_t final, ngx_log_t *log);


static ngx_command_t  ngx_http_aiserve_ft_commands[] = {

    { ngx_string("aiserve_fine_tuning_store"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_aiserve_ft_store,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_fine_tuning"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_aiserve_ft,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_aiserve_ft_module_ctx = {
    NULL,                                   /* preconfiguration */
    NULL,                                   /* postconfiguration */

    ngx_http_aiserve_ft_create_main_conf,   /* create main configuration */
    NULL,                                   /* init main configuration */

    NULL,                                   /* create server configuration */
    NULL,                                   /* merge server configuration */

    ngx_http_aiserve_ft_create_loc_conf,    /* create location configuration */
    ngx_http_aiserve_ft_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_aiserve_fine_tuning_module = {
    NGX_MODULE_V1,
    &ngx_http_aiserve_ft_module_ctx,        /* module context */
    ngx_http_aiserve_ft_commands,           /* module directives */
    NGX_HTTP_MODULE,                        /* module type */
    NULL,                                   /* init master */
    ngx_http_aiserve_ft_init_module,        /* init module */
    ngx_http_aiserve_ft_init_process,       /* init process */
    NULL,                                   /* init thread */
    NULL,                                   /* exit thread */
    ngx_http_aiserve_ft_exit_process,       /* exit process */
    NULL,                                   /* exit master */
    NGX_MODULE_V1_PADDING
};


/* per worker */
static aiserve_jobs_t                *ngx_http_aiserve_ft_store_handle;
static ngx_http_aiserve_ft_runner_t  *ngx_http_aiserve_ft_runner;
static ngx_event_t                    ngx_http_aiserve_ft_poll_ev;
static ngx_event_t                    ngx_http_aiserve_ft_hold_ev;
static ngx_connection_t               ngx_http_aiserve_ft_dummy;


/* --- answers ------------------------------------------------------------- */

static ngx_int_t
ngx_http_aiserve_ft_fail(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *param, const char *msg)
{
    const char  *type;

    type = status >= NGX_HTTP_INTERNAL_SERVER_ERROR ? "server_error"
           : status == NGX_HTTP_NOT_FOUND ? "not_found_error"
           : status == NGX_HTTP_TOO_MANY_REQUESTS ? "rate_limit_error"
           : "invalid_request_error";

    return ngx_http_aiserve_send_error(r, status, type, code, param, "%s",
                                       msg);
}


static ngx_int_t
ngx_http_aiserve_ft_store_failed(ngx_http_request_t *r, const char *err)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "aiserve fine-tuning: %s", err);

    return ngx_http_aiserve_ft_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                    "server_error", NULL,
                                    "the jobs store failed");
}


static ngx_int_t
ngx_http_aiserve_ft_no_job(ngx_http_request_t *r)
{
    return ngx_http_aiserve_ft_fail(r, NGX_HTTP_NOT_FOUND, "not_found",
                                    "fine_tuning_job_id",
                                    "no such fine-tuning job");
}


/* The record of ID if the caller may see it (its account's, or any for
 * an admin key): NGX_OK; NGX_DECLINED: none or another account's (the
 * same 404); NGX_ERROR: the store failed (logged). */
static ngx_int_t
ngx_http_aiserve_ft_find(ngx_http_request_t *r, ngx_str_t *id, json_t **job)
{
    char                           buf[AISERVE_JOBS_ID_LEN + 1], err[256];
    int                            rc;
    ngx_http_aiserve_meter_ctx_t  *mctx;

    *job = NULL;
    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (id->len != AISERVE_JOBS_ID_LEN
        || ngx_strncmp(id->data, "ftjob-", 6) != 0)
    {
        return NGX_DECLINED;
    }

    ngx_memcpy(buf, id->data, id->len);
    buf[id->len] = '\0';

    rc = aiserve_jobs_get(ngx_http_aiserve_ft_store_handle, buf, job, err,
                          sizeof(err));

    if (rc == AISERVE_JOBS_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "aiserve fine-tuning: %s", err);
        return NGX_ERROR;
    }

    if (rc == AISERVE_JOBS_OK
        && (aiserve_jobs_account(*job) == mctx->key.account_id
            || (mctx->key.flags & AISERVE_KEY_ADMIN)))
    {
        return NGX_OK;
    }

    json_decref(*job);
    *job = NULL;

    return NGX_DECLINED;
}


/* after= and limit= of a list: NGX_OK, or NGX_ERROR with the 400 sent */
static ngx_int_t
ngx_http_aiserve_ft_page(ngx_http_request_t *r, const char *prefix,
    size_t id_len, size_t dflt, char *after, size_t *limit, ngx_int_t *rc)
{
    ngx_int_t  v;
    ngx_str_t  arg;

    *limit = dflt;
    after[0] = '\0';

    if (ngx_http_arg(r, (u_char *) "limit", 5, &arg) == NGX_OK) {
        v = ngx_atoi(arg.data, arg.len);
        if (v < 1 || v > 100) {
            *rc = ngx_http_aiserve_ft_fail(r, NGX_HTTP_BAD_REQUEST,
                      "invalid_value", "limit",
                      "limit must be an integer from 1 to 100");
            return NGX_ERROR;
        }
        *limit = v;
    }

    if (ngx_http_arg(r, (u_char *) "after", 5, &arg) == NGX_OK) {
        if (arg.len != id_len
            || ngx_strncmp(arg.data, prefix, ngx_strlen(prefix)) != 0)
        {
            *rc = ngx_http_aiserve_ft_fail(r, NGX_HTTP_BAD_REQUEST,
                      "invalid_value", "after",
                      "after must be an id of the list");
            return NGX_ERROR;
        }
        ngx_memcpy(after, arg.data, arg.len);
        after[arg.len] = '\0';
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_aiserve_ft_send_list(ngx_http_request_t *r, json_t *data,
    int has_more)
{
    size_t   n;
    json_t  *o;

    n = json_array_size(data);

    o = json_pack("{s:s,s:o,s:O?,s:O?,s:b}", "object", "list", "data", data,
                  "first_id", n ? json_object_get(json_array_get(data, 0),
                                                  "id") : NULL,
                  "last_id", n ? json_object_get(json_array_get(data, n - 1),
                                                 "id") : NULL,
                  "has_more", has_more);

    return ngx_http_aiserve_meter_send_json(r, NGX_HTTP_OK, o);
}


/*
 * The metadata filter of a job list (openai-python's jobs.list(metadata=)):
 * metadata[KEY]=VALUE arguments (the brackets escaped or not) make an
 * object, metadata=null JSON null; *filter stays NULL without either.
 * NGX_ERROR when out of memory.
 */
static ngx_int_t
ngx_http_aiserve_ft_meta_filter(ngx_http_request_t *r, json_t **filter)
{
    u_char   *p, *last, *amp, *eq, *src, *dst, *name, *value;
    size_t    nlen;

    *filter = NULL;

    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        amp = ngx_strlchr(p, last, '&');
        if (amp == NULL) {
            amp = last;
        }

        eq = ngx_strlchr(p, amp, '=');
        if (eq == NULL) {
            p = amp + 1;
            continue;
        }

        /* both halves unescaped into one buffer: NAME\0VALUE\0 */
        name = ngx_pnalloc(r->pool, (amp - p) + 2);
        if (name == NULL) {
            return NGX_ERROR;
        }

        src = p;
        dst = name;
        ngx_unescape_uri(&dst, &src, eq - p, 0);
        nlen = dst - name;
        *dst++ = '\0';
        value = dst;
        src = eq + 1;
        ngx_unescape_uri(&dst, &src, amp - eq - 1, 0);
        *dst = '\0';
        p = amp + 1;

        if (nlen == 8 && ngx_strcmp(name, "metadata") == 0
            && ngx_strcmp(value, "null") == 0)
        {
            if (*filter == NULL) {
                *filter = json_null();
            }
            continue;
        }

        if (nlen < 11 || ngx_strncmp(name, "metadata[", 9) != 0
            || name[nlen - 1] != ']')
        {
            continue;
        }

        name[nlen - 1] = '\0';

        if (*filter == NULL || json_is_null(*filter)) {
            json_decref(*filter);
            *filter = json_object();
        }

        if (*filter == NULL
            || json_object_set_new(*filter, (char *) name + 9,
                                   json_string((char *) value))
               != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_aiserve_ft_list(ngx_http_request_t *r)
{
    int                            more, jrc;
    char                           after[AISERVE_JOBS_ID_LEN + 1], err[256];
    size_t                         limit;
    json_t                        *data, *filter;
    ngx_int_t                      rc;
    ngx_http_aiserve_meter_ctx_t  *mctx;

    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (ngx_http_aiserve_ft_page(r, "ftjob-", AISERVE_JOBS_ID_LEN, 20, after,
                                 &limit, &rc)
        != NGX_OK)
    {
        return rc;
    }

    if (ngx_http_aiserve_ft_meta_filter(r, &filter) != NGX_OK) {
        json_decref(filter);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    data = json_array();
    if (data == NULL) {
        json_decref(filter);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    jrc = aiserve_jobs_list(ngx_http_aiserve_ft_store_handle,
                            (mctx->key.flags & AISERVE_KEY_ADMIN)
                            ? 0 : mctx->key.account_id,
                            after[0] ? after : NULL, filter, limit, data,
                            &more, err, sizeof(err));
    json_decref(filter);

    if (jrc != AISERVE_JOBS_OK) {
        json_decref(data);
        return ngx_http_aiserve_ft_store_failed(r, err);
    }

    return ngx_http_aiserve_ft_send_list(r, data, more);
}


static ngx_int_t
ngx_http_aiserve_ft_walk(ngx_http_request_t *r, json_t *job,
    ngx_uint_t checkpoints)
{
    int          more;
    char         after[48], err[256];
    size_t       limit;
    json_t      *data;
    ngx_int_t    rc;
    const char  *id;

    if (ngx_http_aiserve_ft_page(r, checkpoints ? "ftckpt-" : "ftevent-",
                                 checkpoints ? 31 : 32, checkpoints ? 10 : 20,
                                 after, &limit, &rc)
        != NGX_OK)
    {
        return rc;
    }

    data = json_array();
    if (data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    id = json_string_value(json_object_get(job, "id"));

    rc = checkpoints
         ? aiserve_jobs_checkpoints(ngx_http_aiserve_ft_store_handle, id,
                                    after[0] ? after : NULL, limit, data,
                                    &more, err, sizeof(err))
         : aiserve_jobs_events(ngx_http_aiserve_ft_store_handle, id,
                               after[0] ? after : NULL, limit, data, &more,
                               err, sizeof(err));

    if (rc != AISERVE_JOBS_OK) {
        json_decref(data);
        return ngx_http_aiserve_ft_store_failed(r, err);
    }

    return ngx_http_aiserve_ft_send_list(r, data, more);
}


static ngx_int_t
ngx_http_aiserve_ft_cancel(ngx_http_request_t *r, json_t *found)
{
    int          rc;
    char         err[256], msg[128];
    json_t      *job;

    rc = aiserve_jobs_cancel(ngx_http_aiserve_ft_store_handle,
                             json_string_value(json_object_get(found, "id")),
                             ngx_time(), &job, err, sizeof(err));

    if (rc == AISERVE_JOBS_CONFLICT) {
        ngx_snprintf((u_char *) msg, sizeof(msg), "the job cannot be "
                     "cancelled: its status is %s%Z", json_string_value(json_object_get(job,
                                                                "status")));
        json_decref(job);
        return ngx_http_aiserve_ft_fail(r, NGX_HTTP_BAD_REQUEST,
                                        "job_not_cancellable", NULL, msg);
    }

    if (rc == AISERVE_JOBS_NOTFOUND) {
        return ngx_http_aiserve_ft_no_job(r);
    }

    if (rc != AISERVE_JOBS_OK) {
        return ngx_http_aiserve_ft_store_failed(r, err);
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "aiserve fine-tuning: %s cancelled",
                  json_string_value(json_object_get(job, "id")));

    /* a cancelled job pays for what it trained: the tokens its record
     * has (a chunk in flight writes nothing after the cancel) */
    ngx_http_aiserve_ft_charge(aiserve_jobs_account(job),
        json_string_value(json_object_get(job, "id")),
        (uint64_t) json_integer_value(json_object_get(job, "trained_tokens")),
        1, r->connection->log);

    return ngx_http_aiserve_meter_send_json(r, NGX_HTTP_OK,
                                            aiserve_jobs_public(job));
}


/* GET ID/report: DIR/jobs/ID/report.json, or report.txt (text/plain) */
static ngx_int_t
ngx_http_aiserve_ft_report(ngx_http_request_t *r, json_t *job)
{
    char                              path[4300];
    u_char                           *p;
    ssize_t                           n;
    ngx_fd_t                          fd;
    ngx_str_t                         arg;
    ngx_buf_t                        *b;
    ngx_uint_t                        text;
    ngx_chain_t                       out;
    ngx_file_info_t                   fi;
    ngx_http_aiserve_ft_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r,
                                        ngx_http_aiserve_fine_tuning_module);

    text = 0;

    if (ngx_http_arg(r, (u_char *) "format", 6, &arg) == NGX_OK) {
        if (arg.len == 4 && ngx_strncmp(arg.data, "text", 4) == 0) {
            text = 1;

        } else if (arg.len != 4 || ngx_strncmp(arg.data, "json", 4) != 0) {
            return ngx_http_aiserve_ft_fail(r, NGX_HTTP_BAD_REQUEST,
                       "invalid_value", "format",
                       "format must be \"json\" or \"text\"");
        }
    }

    ngx_snprintf((u_char *) path, sizeof(path), "%V/jobs/%s/report.%s%Z",
                 &fmcf->dir,
                 json_string_value(json_object_get(job, "id")),
                 text ? "txt" : "json");

    fd = ngx_open_file(path, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        return ngx_http_aiserve_ft_fail(r, NGX_HTTP_NOT_FOUND,
                   "report_not_found", NULL,
                   json_is_null(json_object_get(job, "validation_file"))
                   ? "the job has no validation_file: no report"
                   : "no report yet: it is written after each epoch's "
                     "evaluation");
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > 16 * 1024 * 1024)
    {
        ngx_close_file(fd);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_create_temp_buf(r->pool, ngx_file_size(&fi) + 1);
    if (b == NULL) {
        ngx_close_file(fd);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->pos;
    n = read(fd, p, ngx_file_size(&fi));
    ngx_close_file(fd);

    if (n != (ssize_t) ngx_file_size(&fi)) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = p + n;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = n;

    if (text) {
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; charset=utf-8");

    } else {
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;

    n = ngx_http_send_header(r);
    if (n == NGX_ERROR || n > NGX_OK || r->header_only) {
        return n;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_aiserve_ft_handler(ngx_http_request_t *r)
{
    json_t                        *job;
    ngx_int_t                      rc;
    ngx_str_t                      rest, id;
    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_aiserve_meter_ctx_t  *mctx;

    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);
    if (mctx == NULL || !mctx->authenticated) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_aiserve_ft_store_handle == NULL
        || ngx_http_aiserve_files_store_handle == NULL)
    {
        return ngx_http_aiserve_ft_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                   "fine_tuning_unavailable", NULL,
                   "the jobs store or the files store cannot be opened");
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    rest.data = r->uri.data + clcf->name.len;
    rest.len = r->uri.len > clcf->name.len ? r->uri.len - clcf->name.len : 0;

    if (rest.len && rest.data[0] == '/') {
        rest.data++;
        rest.len--;
    }

    if (rest.len == 0) {
        if (r->method == NGX_HTTP_POST) {
            r->request_body_in_single_buf = 1;

            rc = ngx_http_read_client_request_body(r,
                                           ngx_http_aiserve_ft_create_body);
            if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
                return rc;
            }

            return NGX_DONE;
        }

        if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
            return ngx_http_aiserve_not_allowed(r, "GET, HEAD, POST",
                                                "GET or POST");
        }

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_aiserve_ft_list(r);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    id.data = rest.data;
    id.len = 0;
    while (id.len < rest.len && rest.data[id.len] != '/') {
        id.len++;
    }

    rest.data += id.len;
    rest.len -= id.len;

#define ngx_http_aiserve_ft_is(s)                                            \
    (rest.len == sizeof(s) - 1 && ngx_strncmp(rest.data, s, rest.len) == 0)

    if (!(rest.len == 0 || ngx_http_aiserve_ft_is("/cancel")
          || ngx_http_aiserve_ft_is("/events")
          || ngx_http_aiserve_ft_is("/checkpoints")
          || ngx_http_aiserve_ft_is("/report")))
    {
        return ngx_http_aiserve_ft_fail(r, NGX_HTTP_NOT_FOUND, "not_found",
                                        NULL, "no such fine-tuning route");
    }

    if (ngx_http_aiserve_ft_is("/cancel")) {
        if (r->method != NGX_HTTP_POST) {
            return ngx_http_aiserve_not_allowed(r, "POST", "POST");
        }

    } else if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return ngx_http_aiserve_not_allowed(r, "GET, HEAD", "GET");
    }

    rc = ngx_http_aiserve_ft_find(r, &id, &job);

    if (rc == NGX_ERROR) {
        return ngx_http_aiserve_ft_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                        "server_error", NULL,
                                        "the jobs store failed");
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_aiserve_ft_no_job(r);
    }

    if (rest.len == 0) {
        rc = ngx_http_aiserve_meter_send_json(r, NGX_HTTP_OK,
                                              aiserve_jobs_public(job));

    } else if (ngx_http_aiserve_ft_is("/cancel")) {
        rc = ngx_http_aiserve_ft_cancel(r, job);

    } else if (ngx_http_aiserve_ft_is("/report")) {
        rc = ngx_http_aiserve_ft_report(r, job);

    } else {
        rc = ngx_http_aiserve_ft_walk(r, job,
                                      ngx_http_aiserve_ft_is("/checkpoints"));
    }

#undef ngx_http_aiserve_ft_is

    json_decref(job);

    return rc;
}


/* --- create -------------------------------------------------------------- */

/* The aiserve_model named name, or NULL. */
static ngx_http_aiserve_model_t *
ngx_http_aiserve_ft_model(ngx_http_aiserve_main_conf_t *amcf,
    const char *name)
{
    size_t                      len;
    ngx_uint_t                  i;
    ngx_http_aiserve_model_t  **m;

    if (amcf == NULL || name == NULL) {
        return NULL;
    }

    len = ngx_strlen(name);
    m = amcf->models.elts;

    for (i = 0; i < amcf->models.nelts; i++) {
        if (m[i]->name.len == len
            && ngx_strncmp(m[i]->name.data, name, len) == 0)
        {
            return m[i];
        }
    }

    return NULL;
}


/* A hyperparameter: absent or "auto" (kept as "auto"), or a number in
 * [min, max] (an integer when integer).  NULL when valid, else why. */
static const char *
ngx_http_aiserve_ft_hyper(json_t *hp, const char *name, double min,
    double max, ngx_uint_t integer)
{
    double   v;
    json_t  *x;

    x = json_object_get(hp, name);

    if (x == NULL) {
        json_object_set_new(hp, name, json_string("auto"));
        return NULL;
    }

    if (json_is_string(x) && ngx_strcmp(json_string_value(x), "auto") == 0)
    {
        return NULL;
    }

    if (!json_is_number(x) || (integer && !json_is_integer(x))) {
        return integer ? "must be \"auto\" or an integer"
                       : "must be \"auto\" or a number";
    }

    v = json_number_value(x);

    if (v < min || v > max) {
        return "is out of range";
    }

    return NULL;
}


/* The file of the request's key (an admin key: any); NGX_DECLINED when
 * missing or another account's; NGX_ERROR when the store fails. */
static ngx_int_t
ngx_http_aiserve_ft_file(ngx_http_request_t *r, const char *id,
    aiserve_file_t *f)
{
    int                            rc;
    char                           err[256];
    ngx_http_aiserve_meter_ctx_t  *mctx;

    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (ngx_strlen(id) != AISERVE_FILES_ID_LEN) {
        return NGX_DECLINED;
    }

    rc = aiserve_files_get(ngx_http_aiserve_files_store_handle, id, f, err,
                           sizeof(err));

    if (rc == AISERVE_FILES_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "aiserve fine-tuning: %s", err);
        return NGX_ERROR;
    }

    if (rc == AISERVE_FILES_OK
        && (f->account_id == mctx->key.account_id
            || (mctx->key.flags & AISERVE_KEY_ADMIN)))
    {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/* The characters (code points) of UTF-8 text, as jansson holds it. */
static size_t
ngx_http_aiserve_ft_chars(const char *s)
{
    size_t  n;

    for (n = 0; *s; s++) {
        n += ((u_char) *s & 0xc0) != 0x80;
    }

    return n;
}


/* NGX_OK when META is OpenAI's metadata: an object of at most 16 string
 * values, keys of at most 64 characters, values of at most 512. */
static ngx_int_t
ngx_http_aiserve_ft_metadata_ok(json_t *meta)
{
    json_t      *v;
    const char  *k;

    if (!json_is_object(meta) || json_object_size(meta) > 16) {
        return NGX_DECLINED;
    }

    json_object_foreach(meta, k, v) {
        if (!json_is_string(v) || ngx_http_aiserve_ft_chars(k) > 64
            || ngx_http_aiserve_ft_chars(json_string_value(v)) > 512)
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * Checks a creation request and builds the new job's record from it, or
 * sends the error (returns NULL, *rc what to finalize with).
 */
static json_t *
ngx_http_aiserve_ft_new_job(ngx_http_request_t *r, json_t *body,
    ngx_int_t *rc)
{
    char                          msg[700];
    size_t                        i, n;
    json_t                       *job, *hp, *x, *method;
    const char                   *key, *model, *task, *mode, *why, *suffix,
                                 *param;
    ngx_int_t                     frc;
    aiserve_file_t                f[2];
    ngx_http_aiserve_model_t     *m;
    ngx_http_aiserve_main_conf_t *amcf;
    static const char            *known[] = {
        "model", "training_file", "validation_file", "hyperparameters",
        "method", "seed", "suffix", "task", "mode", "metadata",
        "integrations"
    };

#define ngx_http_aiserve_ft_bad(status, code, p, m)                          \
    do {                                                                     \
        *rc = ngx_http_aiserve_ft_fail(r, status, code, p, m);               \
        return NULL;                                                         \
    } while (0)

    json_object_foreach(body, key, x) {
        for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
            if (ngx_strcmp(key, known[i]) == 0) {
                break;
            }
        }

        if (i == sizeof(known) / sizeof(known[0])) {
            ngx_snprintf((u_char *) msg, sizeof(msg),
                         "unknown parameter \"%s\"%Z", key);
            ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "unknown_parameter",
                                    key, msg);
        }
    }

    model = json_string_value(json_object_get(body, "model"));
    if (model == NULL) {
        ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST,
                                "missing_required_parameter", "model",
                                "model must be the name of an aiserve_model");
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_module);
    m = ngx_http_aiserve_ft_model(amcf, model);

    if (m == NULL) {
        ngx_snprintf((u_char *) msg, sizeof(msg), "the base model \"%s\" "
                     "is not an aiserve_model of this server%Z", model);
        ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "model_not_found",
                                "model", msg);
    }

    /* the task: the data's kind, checked against the base */
    task = json_string_value(json_object_get(body, "task"));
    if (json_object_get(body, "task") && task == NULL) {
        ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value", "task",
                                "task must be \"classify\", \"ner\" or "
                                "\"pair\"");
    }

    if (task == NULL) {
        task = m->task == NGX_HTTP_AISERVE_TASK_NER ? "ner" : "classify";
    }

    if (ngx_strcmp(task, "ner") == 0) {
        why = (m->task == NGX_HTTP_AISERVE_TASK_EMBED
               || m->task == NGX_HTTP_AISERVE_TASK_NER)
              ? NULL : "task \"ner\" needs an embedding or token "
                       "classification base model";

    } else if (ngx_strcmp(task, "classify") == 0
               || ngx_strcmp(task, "pair") == 0)
    {
        why = m->task != NGX_HTTP_AISERVE_TASK_NER
              ? NULL : "a token classification base model cannot be "
                       "fine-tuned for sequence classification";

    } else {
        ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value", "task",
                                "task must be \"classify\", \"ner\" or "
                                "\"pair\"");
    }

    if (why) {
        ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_task", "task",
                                why);
    }

    mode = json_string_value(json_object_get(body, "mode"));
    if (json_object_get(body, "mode") && mode == NULL) {
        mode = "";
    }

    if (mode == NULL) {
        mode = "full";
    }

    if (ngx_strcmp(mode, "full") != 0 && ngx_strcmp(mode, "head") != 0
        && ngx_strcmp(mode, "lora") != 0)
    {
        ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value", "mode",
                                "mode must be \"full\", \"head\" or "
                                "\"lora\"");
    }

    /* suffix: up to 64 of [A-Za-z0-9_.-] (it becomes part of the model's
     * name, whose parts ":" separates) */
    x = json_object_get(body, "suffix");
    suffix = json_string_value(x);

    if (x && !json_is_null(x)) {
        n = suffix ? ngx_strlen(suffix) : 0;

        for (i = 0; i < n; i++) {
            if (!(isalnum((u_char) suffix[i]) || suffix[i] == '-'
                  || suffix[i] == '_' || suffix[i] == '.'))
            {
                break;
            }
        }

        if (suffix == NULL || n > NGX_HTTP_AISERVE_FT_SUFFIX_MAX || i < n) {
            ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value",
                                    "suffix", "suffix must be a string of "
                                    "at most 64 letters, digits, \"-\", "
                                    "\"_\" or \".\"");
        }
    }

    /* integrations (OpenAI's Weights and Biases reporting): none here,
     * so asking for one is an error, not a silent no-op */
    x = json_object_get(body, "integrations");
    if (x && !json_is_null(x)
        && (!json_is_array(x) || json_array_size(x) > 0))
    {
        ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value",
                                "integrations", "integrations are not "
                                "supported: give none (null or [])");
    }

    /* metadata: OpenAI's, null or up to 16 string values, keys of up to
     * 64 characters, values of up to 512 */
    x = json_object_get(body, "metadata");
    if (x && !json_is_null(x)
        && ngx_http_aiserve_ft_metadata_ok(x) != NGX_OK)
    {
        ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value",
                                "metadata", "metadata must be an object of "
                                "at most 16 keys of up to 64 characters, "
                                "each a string of up to 512 characters");
    }

    x = json_object_get(body, "seed");
    if (x && !json_is_null(x)
        && (!json_is_integer(x) || json_integer_value(x) < 0
            || json_integer_value(x) > 2147483647))
    {
        ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value", "seed",
                                "seed must be an integer from 0 to "
                                "2147483647");
    }

    /* hyperparameters: at the top (deprecated by OpenAI) or in
     * method.supervised */
    method = json_object_get(body, "method");
    hp = json_object_get(body, "hyperparameters");

    if (method) {
        x = json_object_get(method, "type");

        if (!json_is_object(method)
            || (x && (!json_is_string(x)
                      || ngx_strcmp(json_string_value(x), "supervised")
                         != 0)))
        {
            ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value",
                                    "method", "method.type must be "
                                    "\"supervised\"");
        }

        x = json_object_get(method, "supervised");

        if (x && !json_is_object(x)) {
            ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value",
                                    "method", "method.supervised must be "
                                    "an object");
        }

        x = json_object_get(x, "hyperparameters");

        /* both places, saying different things: which one was meant? */
        if (x && hp && !json_equal(x, hp)) {
            ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value",
                                    "hyperparameters", "hyperparameters "
                                    "and method.supervised.hyperparameters "
                                    "differ: give one of them");
        }

        if (x) {
            hp = x;
        }
    }

    hp = hp ? json_deep_copy(hp) : json_object();

    if (!json_is_object(hp)) {
        json_decref(hp);
        ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value",
                                "hyperparameters",
                                "hyperparameters must be an object");
    }

    json_object_foreach(hp, key, x) {
        if (ngx_strcmp(key, "n_epochs") != 0
            && ngx_strcmp(key, "batch_size") != 0
            && ngx_strcmp(key, "learning_rate_multiplier") != 0)
        {
            json_decref(hp);
            ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "unknown_parameter",
                                    "hyperparameters",
                                    "hyperparameters are n_epochs, "
                                    "batch_size and "
                                    "learning_rate_multiplier");
        }
    }

    why = ngx_http_aiserve_ft_hyper(hp, "n_epochs", 1, 50, 1);
    param = "n_epochs";

    if (why == NULL) {
        why = ngx_http_aiserve_ft_hyper(hp, "batch_size", 1, 256, 1);
        param = "batch_size";
    }

    if (why == NULL) {
        why = ngx_http_aiserve_ft_hyper(hp, "learning_rate_multiplier",
                                        1e-3, 100, 0);
        param = "learning_rate_multiplier";
    }

    if (why) {
        json_decref(hp);
        ngx_snprintf((u_char *) msg, sizeof(msg), "hyperparameters.%s %s%Z",
                     param, why);
        ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value", param,
                                msg);
    }

    /* the files: the caller's, each seen exactly like a missing one
     * otherwise */
    for (i = 0; i < 2; i++) {
        param = i ? "validation_file" : "training_file";
        x = json_object_get(body, param);

        if (i && (x == NULL || json_is_null(x))) {
            f[1].id[0] = '\0';
            continue;
        }

        if (!json_is_string(x)) {
            json_decref(hp);
            ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST,
                                    "missing_required_parameter", param,
                                    i ? "validation_file must be a file id"
                                      : "training_file must be a file id");
        }

        frc = ngx_http_aiserve_ft_file(r, json_string_value(x), &f[i]);

        if (frc == NGX_ERROR) {
            json_decref(hp);
            ngx_http_aiserve_ft_bad(NGX_HTTP_INTERNAL_SERVER_ERROR,
                                    "server_error", NULL,
                                    "the files store failed");
        }

        if (frc == NGX_DECLINED) {
            json_decref(hp);
            ngx_snprintf((u_char *) msg, sizeof(msg), "no such file: %s%Z",
                         json_string_value(x));
            ngx_http_aiserve_ft_bad(NGX_HTTP_NOT_FOUND, "file_not_found",
                                    param, msg);
        }

        /* a job's results are not training data */
        if (ngx_strcmp(f[i].purpose, "fine-tune") != 0) {
            json_decref(hp);
            ngx_snprintf((u_char *) msg, sizeof(msg), "the file %s has "
                         "purpose \"%s\": %s needs a file of purpose "
                         "\"fine-tune\"%Z", f[i].id, f[i].purpose, param);
            ngx_http_aiserve_ft_bad(NGX_HTTP_BAD_REQUEST, "invalid_value",
                                    param, msg);
        }
    }

    job = json_pack("{s:s,s:s,s:s?,s:O,s:{s:s,s:{s:O}},s:I,s:s?,s:s,s:s,"
                    "s:O?,s:I,s:I}",
                    "model", model,
                    "training_file", f[0].id,
                    "validation_file", f[1].id[0] ? f[1].id : NULL,
                    "hyperparameters", hp,
                    "method", "type", "supervised", "supervised",
                    "hyperparameters", hp,
                    "seed", (json_int_t)
                    (json_is_integer(json_object_get(body, "seed"))
                     ? json_integer_value(json_object_get(body, "seed"))
                     : 42),
                    "suffix", suffix,
                    "task", task,
                    "mode", mode,
                    "metadata", json_object_get(body, "metadata"),
                    "_tokens", (json_int_t) f[0].tokens,
                    "_examples", (json_int_t) f[0].examples);

    /* the files' names: the job reads the copies it keeps under them */
    for (i = 0; job && i < 2; i++) {
        if (f[i].id[0]) {
            json_object_set_new(job, i ? "_validation_filename"
                                       : "_training_filename",
                                json_string(f[i].filename));
        }
    }
    json_decref(hp);

    if (job == NULL) {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NULL;
    }

    /* a file that failed validation: the job fails with its line and
     * reason (OpenAI's invalid_training_file) */
    for (i = 0; i < 2; i++) {
        if ((i == 0 || f[1].id[0]) && f[i].status != AISERVE_FILE_PROCESSED)
        {
            json_object_set_new(job, "status", json_string("failed"));
            json_object_set_new(job, "error",
                json_pack("{s:s,s:s,s:s}",
                          "code", i ? "invalid_validation_file"
                                    : "invalid_training_file",
                          "message", f[i].status == AISERVE_FILE_ERROR
                                     ? f[i].details
                                     : "the file's validation did not "
                                       "finish",
                          "param", i ? "validation_file"
                                     : "training_file"));
            break;
        }
    }

#undef ngx_http_aiserve_ft_bad

    return job;
}


/*
 * Gives JOB its id and reserves its trained tokens (the training file's
 * tokens x the epochs) at the base model's training price against the
 * budgets of the caller's key and account (aiserve_ledger_training_reserve()).
 * NGX_OK (*reserved: 1 when the ledger holds a reservation), or
 * NGX_ERROR when it sent an error (429 insufficient_quota over a budget),
 * *rc what to finalize the request with.
 */
static ngx_int_t
ngx_http_aiserve_ft_reserve(ngx_http_request_t *r, json_t *job,
    ngx_uint_t *reserved, ngx_int_t *rc_out)
{
    int                                 rc;
    char                                id[AISERVE_JOBS_ID_LEN + 1];
    char                                err[256];
    json_t                             *epochs;
    int64_t                             tokens;
    uint64_t                            price;
    ngx_str_t                           model;
    ngx_http_aiserve_meter_ctx_t       *mctx;
    ngx_http_aiserve_meter_main_conf_t *mmcf;

    *reserved = 0;

    if (aiserve_jobs_new_job_id(id) != 0) {
        *rc_out = ngx_http_aiserve_ft_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "server_error", NULL,
                                           "RAND_bytes failed");
        return NGX_ERROR;
    }

    json_object_set_new(job, "id", json_string(id));

    if (ngx_http_aiserve_meter_ledger == NULL) {
        return NGX_OK;
    }

    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_meter_module);

    epochs = json_object_get(json_object_get(job, "hyperparameters"),
                             "n_epochs");
    tokens = json_integer_value(json_object_get(job, "_tokens"))
             * (json_is_integer(epochs) ? json_integer_value(epochs)
                : ngx_strcmp(json_string_value(json_object_get(job, "mode")),
                             "head") == 0 ? 10 : 3);

    model.data = (u_char *) json_string_value(json_object_get(job, "model"));
    model.len = ngx_strlen(model.data);
    price = ngx_http_aiserve_meter_price_of(mmcf, &model, 1);

    rc = aiserve_ledger_training_reserve(ngx_http_aiserve_meter_ledger,
                                         mctx->key.account_id, mctx->key.id,
                                         (char *) model.data, id, tokens,
                                         price, ngx_time(), err,
                                         sizeof(err));

    if (rc == AISERVE_LEDGER_OK) {
        *reserved = 1;
        return NGX_OK;
    }

    if (ngx_strncmp(err, "insufficient_quota", 18) == 0) {
        *rc_out = ngx_http_aiserve_send_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                              "insufficient_quota",
                                              "insufficient_quota", NULL,
                                              "%s", err);
        return NGX_ERROR;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "aiserve fine-tuning: reserving %L trained tokens of %s: "
                  "%s", tokens, id, err);

    *rc_out = ngx_http_aiserve_ft_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "server_error", NULL,
                                       "the ledger cannot reserve the job's "
                                       "tokens");
    return NGX_ERROR;
}


static void
ngx_http_aiserve_ft_create_body(ngx_http_request_t *r)
{
    int                               jrc;
    char                              err[256];
    u_char                           *buf, *p;
    ngx_uint_t                        reserved;
    size_t                            len;
    json_t                           *body, *job;
    ngx_int_t                         rc;
    ngx_chain_t                      *cl;
    json_error_t                      jerr;
    ngx_http_aiserve_meter_ctx_t     *mctx;
    ngx_http_aiserve_ft_main_conf_t  *fmcf;

    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);
    fmcf = ngx_http_get_module_main_conf(r,
                                        ngx_http_aiserve_fine_tuning_module);

    len = 0;

    if (r->request_body) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            if (cl->buf->in_file) {
                len = NGX_HTTP_AISERVE_FT_BODY_MAX + 1;
                break;
            }
            len += cl->buf->last - cl->buf->pos;
        }
    }

    if (len > NGX_HTTP_AISERVE_FT_BODY_MAX) {
        rc = ngx_http_aiserve_ft_fail(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "request_too_large", NULL,
                                      "the request body is too large");
        ngx_http_finalize_request(r, rc);
        return;
    }

    buf = ngx_pnalloc(r->pool, len + 1);
    if (buf == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = buf;
    if (r->request_body) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }

    body = json_loadb((char *) buf, len, JSON_REJECT_DUPLICATES, &jerr);

    if (body == NULL || !json_is_object(body)) {
        json_decref(body);
        rc = ngx_http_aiserve_ft_fail(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                      NULL, "the body must be a JSON object");
        ngx_http_finalize_request(r, rc);
        return;
    }

    job = ngx_http_aiserve_ft_new_job(r, body, &rc);
    json_decref(body);

    if (job == NULL) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    reserved = 0;

    /* a job created failed (a file that failed validation) reserves
     * nothing */
    if (json_object_get(job, "status") == NULL) {
        if (ngx_http_aiserve_ft_reserve(r, job, &reserved, &rc) != NGX_OK) {
            json_decref(job);
            ngx_http_finalize_request(r, rc);
            return;
        }
    }

    /* the creator key: its ledger row gets the storage of the results */
    json_object_set_new(job, "_key", json_integer(mctx->key.id));

    jrc = aiserve_jobs_create(ngx_http_aiserve_ft_store_handle, job,
                              mctx->key.account_id, fmcf->jobs_per_account,
                              ngx_time(), err, sizeof(err));

    if (jrc != AISERVE_JOBS_OK && reserved) {
        ngx_http_aiserve_ft_charge(mctx->key.account_id,
            json_string_value(json_object_get(job, "id")), 0, 1,
            r->connection->log);
    }

    if (jrc == AISERVE_JOBS_LIMIT) {
        json_decref(job);
        rc = ngx_http_aiserve_ft_fail(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                      "too_many_jobs", NULL, err);
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (jrc != AISERVE_JOBS_OK) {
        json_decref(job);
        ngx_http_finalize_request(r, ngx_http_aiserve_ft_store_failed(r, err));
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "aiserve fine-tuning: %s created for acct_%uD, %s",
                  json_string_value(json_object_get(job, "id")),
                  mctx->key.account_id,
                  json_string_value(json_object_get(job, "status")));

    rc = ngx_http_aiserve_meter_send_json(r, NGX_HTTP_OK,
                                          aiserve_jobs_public(job));
    json_decref(job);

    if (ngx_http_aiserve_ft_runner == NULL
        && ngx_http_aiserve_ft_poll_ev.timer_set)
    {
        ngx_add_timer(&ngx_http_aiserve_ft_poll_ev, 1);
    }

    ngx_http_finalize_request(r, rc);
}


/* --- the runner: in the thread ------------------------------------------ */

static int64_t
ngx_http_aiserve_ft_now_ms(void)
{
    struct timeval  tv;

    ngx_gettimeofday(&tv);
    return (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000;
}


/* Writes text to path through path.tmp and a rename. */
static int
ngx_http_aiserve_ft_write_file(const char *path, const char *text)
{
    int    ok;
    char   tmp[4400];
    FILE  *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);

    f = fopen(tmp, "w");
    if (f == NULL) {
        return -1;
    }

    ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;

    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }

    return 0;
}


/* report.json and report.txt of the last evaluation into the job's dir */
static int
ngx_http_aiserve_ft_write_report(ngx_http_aiserve_ft_runner_t *rn,
    const aiserve_trainer_eval_t *ev)
{
    int      rc;
    char     path[4300], *s;
    json_t  *o;

    o = aiserve_trainer_eval_json(ev);
    s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER
                          | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(o);

    if (s == NULL) {
        return -1;
    }

    snprintf(path, sizeof(path), "%s/report.json", rn->dir);
    rc = ngx_http_aiserve_ft_write_file(path, s);
    free(s);

    if (rc != 0 || !ev->has_report) {
        return rc;
    }

    s = aiserve_report_text(&ev->report, 4);
    if (s == NULL) {
        return -1;
    }

    snprintf(path, sizeof(path), "%s/report.txt", rn->dir);
    rc = ngx_http_aiserve_ft_write_file(path, s);
    free(s);

    return rc;
}


/* "ft:<base>:<account>:<suffix>:<job id without ftjob->" */
static void
ngx_http_aiserve_ft_model_name(const json_t *job, char *buf, size_t len)
{
    const char  *suffix;

    suffix = json_string_value(json_object_get(job, "suffix"));

    snprintf(buf, len, "ft:%s:%s:%s:%s",
             json_string_value(json_object_get(job, "model")),
             json_string_value(json_object_get(job, "organization_id")),
             suffix ? suffix : "",
             json_string_value(json_object_get(job, "id")) + 6);
}


/* The final update of a job that cannot run: failed, with code and msg */
static void
ngx_http_aiserve_ft_failed(ngx_http_aiserve_ft_runner_t *rn,
    const char *code, const char *param, const char *msg, ngx_log_t *log)
{
    char                   err[256];
    aiserve_jobs_update_t  u;

    ngx_memzero(&u, sizeof(u));
    u.status = "failed";
    u.set = json_pack("{s:{s:s,s:s,s:s?}}", "error", "code", code,
                      "message", msg, "param", param);
    u.events = json_pack("[{s:s,s:s}]", "level", "error", "message", msg);

    if (aiserve_jobs_update(ngx_http_aiserve_ft_store_handle, rn->id,
                            rn->pid, ngx_http_aiserve_ft_now_ms(),
                            rn->conf->lease, &u, NULL, err, sizeof(err))
        == AISERVE_JOBS_ERROR)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0, "aiserve fine-tuning: %s", err);
    }

    ngx_log_error(NGX_LOG_WARN, log, 0, "aiserve fine-tuning: %s failed: %s",
                  rn->id, msg);

    json_decref(u.set);
    json_decref(u.events);

    rn->over = 1;
    rn->final = 1;
}


/* Reads a file of the job into ds: 0, or -1 with the job failed */
static int
ngx_http_aiserve_ft_read_file(ngx_http_aiserve_ft_runner_t *rn,
    const char *param, aiserve_dataset_t *ds, ngx_log_t *log)
{
    int              rc;
    char             err[700], path[4200], key[32];
    const char      *id, *name;
    aiserve_file_t   f;

    ngx_memzero(ds, sizeof(aiserve_dataset_t));
    ngx_memzero(&f, sizeof(aiserve_file_t));

    id = json_string_value(json_object_get(rn->job, param));
    if (id == NULL) {
        return 0;
    }

    /* DIR/jobs/ID/training_file: the copy the job's first start kept, so
     * that a resume does not need the file to stay in the store */
    snprintf(path, sizeof(path), "%s/%s", rn->dir, param);
    snprintf(key, sizeof(key), "_%sname", param);
    name = json_string_value(json_object_get(rn->job, key));

    if (name && access(path, R_OK) == 0) {
        ngx_cpystrn((u_char *) f.id, (u_char *) id, sizeof(f.id));
        ngx_cpystrn((u_char *) f.filename, (u_char *) name,
                    sizeof(f.filename));
        rc = aiserve_files_dataset_at(path, &f, ds, err, sizeof(err));

    } else if (aiserve_files_get(ngx_http_aiserve_files_store_handle, id,
                                 &f, err, sizeof(err))
               != AISERVE_FILES_OK)
    {
        snprintf(err, sizeof(err), "the file %s was deleted", id);
        ngx_http_aiserve_ft_failed(rn, "file_not_found", param, err, log);
        return -1;

    } else {
        rc = aiserve_files_dataset(ngx_http_aiserve_files_store_handle, &f,
                                   ds, err, sizeof(err));

        if (rc == 0 && name
            && aiserve_files_keep(ngx_http_aiserve_files_store_handle, &f,
                                  path, err, sizeof(err))
               != 0)
        {
            ngx_log_error(NGX_LOG_WARN, log, 0, "aiserve fine-tuning: %s: "
                          "the copy of %s not kept (a resume reads it from "
                          "the files store): %s", rn->id, id, err);
        }
    }

    if (rc != 0) {
        ngx_http_aiserve_ft_failed(rn, param[0] == 't'
                                       ? "invalid_training_file"
                                       : "invalid_validation_file",
                                   param, err, log);
        return -1;
    }

    return 0;
}


/* 1 when the data's kind fits the job's task */
static const char *
ngx_http_aiserve_ft_task_check(const char *task, const aiserve_dataset_t *ds)
{
    int  tokens;

    tokens = ds->kind == AISERVE_LABELS_TAGS
             || ds->kind == AISERVE_LABELS_SPANS;

    if (ngx_strcmp(task, "ner") == 0) {
        return tokens ? NULL : "task \"ner\" needs words and tags (or "
                               "spans); the file has class labels";
    }

    if (tokens) {
        return "the file has tags or spans: its task is \"ner\"";
    }

    if (ngx_strcmp(task, "pair") == 0
        && (ds->n == 0 || ds->examples[0].text_pair == NULL))
    {
        return "task \"pair\" needs a text_pair in every example";
    }

    return NULL;
}


/* 0 when valid's labels are of train's kind and every one is one of
 * train's (aiserve_labels_check()), else -1 with err naming valid (and
 * its line) */
static int
ngx_http_aiserve_ft_valid_check(const aiserve_dataset_t *train,
    const aiserve_dataset_t *valid, char *err, size_t err_len)
{
    int                  rc;
    aiserve_label_set_t  set;

    if (valid->kind != train->kind) {
        snprintf(err, err_len, "%s: its labels are of another kind than "
                 "those of %s", valid->name, train->name);
        return -1;
    }

    ngx_memzero(&set, sizeof(aiserve_label_set_t));

    rc = aiserve_labels_build(train, &set, err, err_len) != 0
         || aiserve_labels_check(&set, valid, err, err_len) != 0;

    aiserve_labels_free(&set);

    return rc ? -1 : 0;
}


/* Makes the trainer of rn's job (restored from its last checkpoint when
 * it has one): 0, or -1 with the job failed. */
static int
ngx_http_aiserve_ft_setup(ngx_http_aiserve_ft_runner_t *rn, ngx_log_t *log,
    json_t *events, json_t *set)
{
    int                        rc;
    char                       err[1024], msg[1200];
    double                     mean;
    json_t                    *hp, *ck, *x;
    const char                *mode, *why, *dir;
    aiserve_dataset_t          train, valid;
    aiserve_trainer_opts_t     o;
    ngx_http_aiserve_model_t  *m;

    m = ngx_http_aiserve_ft_model(rn->amcf,
            json_string_value(json_object_get(rn->job, "model")));

    if (m == NULL) {
        snprintf(msg, sizeof(msg), "the base model \"%s\" is no longer an "
                 "aiserve_model of this server",
                 json_string_value(json_object_get(rn->job, "model")));
        ngx_http_aiserve_ft_failed(rn, "model_not_found", "model", msg, log);
        return -1;
    }

    if (ngx_http_aiserve_ft_read_file(rn, "training_file", &train, log) != 0)
    {
        return -1;
    }

    if (ngx_http_aiserve_ft_read_file(rn, "validation_file", &valid, log)
        != 0)
    {
        aiserve_dataset_free(&train);
        return -1;
    }

    why = ngx_http_aiserve_ft_task_check(
              json_string_value(json_object_get(rn->job, "task")), &train);

    if (why) {
        snprintf(msg, sizeof(msg), "%s: %s", train.name, why);
        aiserve_dataset_free(&train);
        aiserve_dataset_free(&valid);
        ngx_http_aiserve_ft_failed(rn, "invalid_training_file",
                                   "training_file", msg, log);
        return -1;
    }

    /* the validation file's labels (and their kind) must be the training
     * file's: said of the validation file, not left to the trainer */
    if (valid.n && ngx_http_aiserve_ft_valid_check(&train, &valid, err,
                                                   sizeof(err))
                   != 0)
    {
        aiserve_dataset_free(&train);
        aiserve_dataset_free(&valid);
        ngx_http_aiserve_ft_failed(rn, "invalid_validation_file",
                                   "validation_file", err, log);
        return -1;
    }

    ck = json_object_get(rn->job, "_checkpoint");
    dir = json_string_value(json_object_get(ck, "_dir"));
    x = NULL;

    if (dir) {
        x = aiserve_trainer_read_checkpoint(dir, &o, err, sizeof(err));
        if (x == NULL) {
            aiserve_dataset_free(&train);
            aiserve_dataset_free(&valid);
            ngx_http_aiserve_ft_failed(rn, "checkpoint_unreadable", NULL,
                                       err, log);
            return -1;
        }

    } else {
        mode = json_string_value(json_object_get(rn->job, "mode"));
        aiserve_trainer_opts_defaults(&o,
            ngx_strcmp(mode, "head") == 0 ? AISERVE_TRAIN_HEAD
            : ngx_strcmp(mode, "lora") == 0 ? AISERVE_TRAIN_LORA
            : AISERVE_TRAIN_FULL);

        o.model_dir = (const char *) m->path.data;
        o.threads = rn->conf->threads;
        o.seed = json_integer_value(json_object_get(rn->job, "seed"));

        hp = json_object_get(rn->job, "hyperparameters");

        if (json_is_integer(json_object_get(hp, "n_epochs"))) {
            o.epochs = json_integer_value(json_object_get(hp, "n_epochs"));
        }

        if (json_is_number(json_object_get(hp, "learning_rate_multiplier")))
        {
            o.learning_rate *= json_number_value(json_object_get(hp,
                                                "learning_rate_multiplier"));
        }

        /* batch_size sequences: that many of the file's mean tokens */
        mean = (double) json_integer_value(json_object_get(rn->job,
                                                           "_tokens"))
               / ngx_max(1, json_integer_value(json_object_get(rn->job,
                                                            "_examples")));

        if (json_is_integer(json_object_get(hp, "batch_size"))) {
            o.batch_tokens = (size_t) (json_integer_value(
                                 json_object_get(hp, "batch_size")) * mean
                                 + 0.5);
            if (o.batch_tokens < 1) {
                o.batch_tokens = 1;
            }
        }

        json_object_set_new(set, "hyperparameters",
            json_pack("{s:I,s:I,s:f}",
                      "n_epochs", (json_int_t) o.epochs,
                      "batch_size", (json_int_t)
                      ngx_max(1, (size_t) (o.batch_tokens / ngx_max(mean, 1)
                                           + 0.5)),
                      "learning_rate_multiplier",
                      json_is_number(json_object_get(hp,
                                     "learning_rate_multiplier"))
                      ? json_number_value(json_object_get(hp,
                                          "learning_rate_multiplier"))
                      : 1.0));
        json_object_set_new(set, "method",
            json_pack("{s:s,s:{s:O}}", "type", "supervised", "supervised",
                      "hyperparameters",
                      json_object_get(set, "hyperparameters")));
    }

    rn->tr = aiserve_trainer_create(&o, &train, valid.n ? &valid : NULL, err,
                                    sizeof(err));
    aiserve_dataset_free(&train);
    aiserve_dataset_free(&valid);

    if (rn->tr == NULL) {
        json_decref(x);
        ngx_http_aiserve_ft_failed(rn, "invalid_training_file",
                                   "training_file", err, log);
        return -1;
    }

    if (dir) {
        rc = aiserve_trainer_restore(rn->tr, dir, err, sizeof(err));
        json_decref(x);

        if (rc != 0) {
            ngx_http_aiserve_ft_failed(rn, "checkpoint_unreadable", NULL, err,
                                       log);
            return -1;
        }

        ngx_cpystrn((u_char *) rn->ckpt, (u_char *) dir, sizeof(rn->ckpt));
        rn->ckpt_step = aiserve_trainer_progress(rn->tr)->step;

        snprintf(msg, sizeof(msg), "Resumed from the checkpoint at step %zu "
                 "(worker %d)", rn->ckpt_step, (int) rn->pid);

    } else {
        snprintf(msg, sizeof(msg), "Fine-tuning job started (worker %d): "
                 "%zu steps", (int) rn->pid,
                 aiserve_trainer_progress(rn->tr)->total_steps);
    }

    json_array_append_new(events, json_pack("{s:s}", "message", msg));

    rn->start_step = aiserve_trainer_progress(rn->tr)->step;
    rn->start_ms = ngx_http_aiserve_ft_now_ms();
    rn->trained = aiserve_trainer_progress(rn->tr)->trained_tokens;

    return 0;
}


/* Saves a checkpoint into u->checkpoint: 0, or -1 (logged). */
static int
ngx_http_aiserve_ft_save(ngx_http_aiserve_ft_runner_t *rn,
    aiserve_jobs_update_t *u, json_t *events, ngx_log_t *log)
{
    char                               dir[4200], err[512], name[400];
    char                               msg[128];
    const aiserve_trainer_eval_t      *ev;
    const aiserve_trainer_progress_t  *p;

    p = aiserve_trainer_progress(rn->tr);

    snprintf(dir, sizeof(dir), "%s/ckpt-%zu", rn->dir, p->step);

    if (aiserve_trainer_save(rn->tr, dir, NULL, err, sizeof(err)) != 0) {
        ngx_log_error(NGX_LOG_ERR, log, 0, "aiserve fine-tuning: %s: %s",
                      rn->id, err);
        return -1;
    }

    ngx_http_aiserve_ft_model_name(rn->job, name, sizeof(name));
    snprintf(name + strlen(name), sizeof(name) - strlen(name),
             ":ckpt-step-%zu", p->step);

    ev = aiserve_trainer_last_eval(rn->tr);

    u->checkpoint = json_pack("{s:I,s:s,s:{s:I,s:f,s:o*},s:s}",
                              "step_number", (json_int_t) p->step,
                              "fine_tuned_model_checkpoint", name,
                              "metrics", "step", (json_int_t) p->step,
                              "train_loss", (double) p->loss,
                              "valid_loss", ev ? json_real(ev->loss) : NULL,
                              "_dir", dir);

    if (u->checkpoint == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0, "aiserve fine-tuning: %s: out of "
                      "memory", rn->id);
        aiserve_trainer_remove_checkpoint(dir);
        return -1;
    }

    snprintf(msg, sizeof(msg), "Checkpoint created at step %zu", p->step);
    json_array_append_new(events, json_pack("{s:s}", "message", msg));

    return 0;
}


/*
 * Stores one result file of rn's job (purpose fine-tune-results, owned by
 * its account) with id and the len bytes of data; appends its id to ids.
 * A file stored already (by a worker that died before the job's status
 * was written) is kept as it is.  A failure is logged; the job succeeds
 * without that file.
 */
static void
ngx_http_aiserve_ft_result_file(ngx_http_aiserve_ft_runner_t *rn,
    const char *id, const char *filename, const char *format,
    const char *data, size_t len, json_t *ids, ngx_log_t *log)
{
    int             rc;
    char            err[512];
    aiserve_file_t  f;

    ngx_memzero(&f, sizeof(aiserve_file_t));
    ngx_cpystrn((u_char *) f.id, (u_char *) id, sizeof(f.id));
    f.account_id = aiserve_jobs_account(rn->job);
    f.status = AISERVE_FILE_PROCESSED;
    ngx_cpystrn((u_char *) f.purpose, (u_char *) "fine-tune-results",
                sizeof(f.purpose));
    ngx_cpystrn((u_char *) f.filename, (u_char *) filename,
                sizeof(f.filename));
    ngx_cpystrn((u_char *) f.format, (u_char *) format, sizeof(f.format));

    rc = aiserve_files_add_as(ngx_http_aiserve_files_store_handle, &f, data,
                              len, err, sizeof(err));

    if (rc != AISERVE_FILES_OK && rc != AISERVE_FILES_EXISTS) {
        ngx_log_error(NGX_LOG_ERR, log, 0, "aiserve fine-tuning: %s: the "
                      "result file %s not stored: %s", rn->id, filename,
                      err);
        return;
    }

    json_array_append_new(ids, json_string(id));
    rn->results = 1;
}


/*
 * The result files of a job that succeeded (OpenAI's result_files): the
 * step metrics (aiserve_jobs_results_csv(), the stored events and those
 * of this chunk) and, when a validation file was evaluated, the report
 * (DIR/jobs/ID/report.json, the bytes GET .../report sends).  Their ids
 * are written in the job's record ("_result_files") before the files, so
 * that a worker that resumes the job stores the same ids, not copies.
 * The ids stored go to *ids.  0, or -1 when the job was cancelled
 * meanwhile (rn->lost).
 */
static int
ngx_http_aiserve_ft_results(ngx_http_aiserve_ft_runner_t *rn, json_t *events,
    json_t **ids, ngx_log_t *log)
{
    int                     rc;
    char                    id[2][AISERVE_FILES_ID_LEN + 1], err[512];
    char                    path[4300], *csv, *report;
    size_t                  i, len;
    int64_t                 created_at;
    json_t                 *kept;
    ngx_fd_t                fd;
    ngx_file_info_t         fi;
    aiserve_jobs_update_t   u;

    *ids = json_array();
    if (*ids == NULL) {
        return 0;
    }

    kept = json_object_get(rn->job, "_result_files");

    for (i = 0; i < 2; i++) {
        if (json_is_string(json_array_get(kept, i))) {
            ngx_cpystrn((u_char *) id[i],
                        (u_char *) json_string_value(json_array_get(kept, i)),
                        sizeof(id[i]));

        } else if (aiserve_files_new_id(id[i], &created_at) != 0) {
            ngx_log_error(NGX_LOG_ERR, log, 0, "aiserve fine-tuning: %s: "
                          "RAND_bytes failed: no result files", rn->id);
            return 0;
        }
    }

    if (json_array_size(kept) != 2) {
        ngx_memzero(&u, sizeof(u));
        u.set = json_pack("{s:[s,s]}", "_result_files", id[0], id[1]);

        rc = aiserve_jobs_update(ngx_http_aiserve_ft_store_handle, rn->id,
                                 rn->pid, ngx_http_aiserve_ft_now_ms(),
                                 rn->conf->lease, &u, NULL, err,
                                 sizeof(err));
        json_decref(u.set);

        if (rc == AISERVE_JOBS_CONFLICT) {
            json_decref(*ids);
            *ids = NULL;
            rn->over = 1;
            rn->lost = 1;
            return -1;
        }

        if (rc != AISERVE_JOBS_OK) {
            ngx_log_error(NGX_LOG_ERR, log, 0, "aiserve fine-tuning: %s: %s: "
                          "no result files", rn->id, err);
            return 0;
        }
    }

    if (aiserve_jobs_results_csv(ngx_http_aiserve_ft_store_handle, rn->id,
                                 events, &csv, &len, err, sizeof(err))
        == AISERVE_JOBS_OK)
    {
        ngx_http_aiserve_ft_result_file(rn, id[0], "step_metrics.csv", "csv",
                                        csv, len, *ids, log);
        free(csv);

    } else {
        ngx_log_error(NGX_LOG_ERR, log, 0, "aiserve fine-tuning: %s: the "
                      "step metrics: %s", rn->id, err);
    }

    /* the report: the bytes of GET .../report (none without a
     * validation file) */
    snprintf(path, sizeof(path), "%s/report.json", rn->dir);

    fd = ngx_open_file(path, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        return 0;
    }

    report = NULL;
    len = 0;

    if (ngx_fd_info(fd, &fi) != NGX_FILE_ERROR) {
        len = ngx_file_size(&fi);
        report = malloc(len + 1);
    }

    if (report && read(fd, report, len) == (ssize_t) len) {
        ngx_http_aiserve_ft_result_file(rn, id[1], "report.json", "json",
                                        report, len, *ids, log);

    } else {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno, "aiserve fine-tuning: "
                      "%s: \"%s\" cannot be read: no result file of it",
                      rn->id, path);
    }

    free(report);
    ngx_close_file(fd);

    return 0;
}


/* Writes the model and the report of a finished run into u. */
static int
ngx_http_aiserve_ft_succeed(ngx_http_aiserve_ft_runner_t *rn,
    aiserve_jobs_update_t *u, json_t *events, ngx_log_t *log)
{
    int                        rc;
    char                       dir[4200], err[512], name[400];
    json_t                    *ids;
    aiserve_registry_entry_t   e;

    snprintf(dir, sizeof(dir), "%s/model", rn->dir);

    if (aiserve_trainer_write_model(rn->tr, dir, err, sizeof(err)) != 0) {
        ngx_http_aiserve_ft_failed(rn, "model_not_written", NULL, err, log);
        return -1;
    }

    ngx_http_aiserve_ft_model_name(rn->job, name, sizeof(name));

    ngx_memzero(&e, sizeof(e));
    e.id = name;
    e.base = json_string_value(json_object_get(rn->job, "model"));
    e.account = json_string_value(json_object_get(rn->job,
                                                  "organization_id"));
    e.mode = json_string_value(json_object_get(rn->job, "mode"));
    e.task = json_string_value(json_object_get(rn->job, "task"));
    e.job_id = rn->id;
    e.created_at = ngx_time();

    rc = aiserve_registry_publish((char *) rn->amcf->ft_root, &e, dir, err,
                                  sizeof(err));

    /* EXISTS: published by a worker that died before it could say so */
    if (rc != 0 && rc != AISERVE_REGISTRY_EXISTS) {
        ngx_http_aiserve_ft_failed(rn, "model_not_published", NULL, err,
                                   log);
        return -1;
    }

    if (ngx_http_aiserve_ft_results(rn, events, &ids, log) != 0) {
        return -1;
    }

    json_object_set_new(u->set, "fine_tuned_model", json_string(name));
    json_object_set_new(u->set, "result_files", ids);
    u->status = "succeeded";

    json_array_append_new(events,
        json_pack("{s:s}", "message", "New fine-tuned model created"));
    json_array_append_new(events,
        json_pack("{s:s}", "message", "The job has successfully completed"));

    return 0;
}


static void
ngx_http_aiserve_ft_chunk(void *data, ngx_log_t *log)
{
    ngx_http_aiserve_ft_runner_t  *rn = data;

    int                                rc;
    char                               err[512], msg[256];
    size_t                             prev_step, i;
    json_t                            *events, *set, *d, *job, *ids;
    aiserve_trainer_phase_e            prev_phase;
    int64_t                            now_ms, est;
    const char                        *name;
    aiserve_jobs_update_t              u;
    const aiserve_trainer_eval_t      *ev;
    const aiserve_trainer_progress_t  *p;

    ngx_memzero(&u, sizeof(u));

    events = json_array();
    set = json_object();
    u.events = events;
    u.set = set;

    if (rn->tr == NULL) {
        if (ngx_http_aiserve_ft_setup(rn, log, events, set) != 0) {
            goto done;
        }

        u.status = "running";
    }

    p = aiserve_trainer_progress(rn->tr);
    prev_step = p->step;
    prev_phase = p->phase;

    if (rn->stop) {
        /* an exiting worker: what it did is kept, the lease given back */
        if (p->step > rn->ckpt_step) {
            ngx_http_aiserve_ft_save(rn, &u, events, log);
        }

        snprintf(msg, sizeof(msg), "Worker %d exiting: the job continues on "
                 "another worker from step %zu", (int) rn->pid,
                 u.checkpoint ? p->step : rn->ckpt_step);
        json_array_append_new(events, json_pack("{s:s}", "message", msg));

        rc = aiserve_jobs_update(ngx_http_aiserve_ft_store_handle, rn->id,
                                 rn->pid, ngx_http_aiserve_ft_now_ms(),
                                 rn->conf->lease, &u, NULL, err,
                                 sizeof(err));
        if (rc == AISERVE_JOBS_OK) {
            aiserve_jobs_release(ngx_http_aiserve_ft_store_handle, rn->id,
                                 rn->pid, err, sizeof(err));
        }

        rn->over = 1;
        goto done;
    }

    rc = aiserve_trainer_step(rn->tr, rn->conf->chunk_steps, err,
                              sizeof(err));

    if (rc < 0) {
        ngx_http_aiserve_ft_failed(rn, "training_failed", NULL, err, log);
        goto done;
    }

    now_ms = ngx_http_aiserve_ft_now_ms();

    if (prev_phase == AISERVE_TRAINER_FEATURES
        && p->phase != AISERVE_TRAINER_FEATURES)
    {
        snprintf(msg, sizeof(msg), "The frozen encoder's features of %zu "
                 "examples computed", p->features_total);
        json_array_append_new(events, json_pack("{s:s}", "message", msg));
    }

    json_object_set_new(set, "trained_tokens",
                        json_integer((json_int_t) p->trained_tokens));

    if (p->step > rn->start_step && p->step < p->total_steps) {
        est = now_ms + (now_ms - rn->start_ms)
                       * (int64_t) (p->total_steps - p->step)
                       / (int64_t) (p->step - rn->start_step);
        json_object_set_new(set, "estimated_finish",
                            json_integer(est / 1000 + 1));
    }

    if (p->step > prev_step) {
        snprintf(msg, sizeof(msg), "Step %zu/%zu: training loss=%.4f",
                 p->step, p->total_steps, (double) p->loss);
        json_array_append_new(events,
            json_pack("{s:s,s:s,s:{s:I,s:I,s:f,s:f,s:I}}", "type", "metrics",
                      "message", msg, "data",
                      "step", (json_int_t) p->step,
                      "total_steps", (json_int_t) p->total_steps,
                      "train_loss", (double) p->loss,
                      "learning_rate", (double) p->learning_rate,
                      "trained_tokens", (json_int_t) p->trained_tokens));
    }

    ev = aiserve_trainer_last_eval(rn->tr);

    if (p->evaluated_epoch && ev) {
        d = aiserve_trainer_eval_json(ev);
        name = json_object_get(d, "accuracy") ? "accuracy" : "f1";

        snprintf(msg, sizeof(msg), "Epoch %zu/%zu: validation loss=%.4f, "
                 "%s=%.4f", ev->epoch, p->epochs, ev->loss, name,
                 json_number_value(json_object_get(d, name)));

        json_array_append_new(events,
            json_pack("{s:s,s:s,s:{s:I,s:I,s:f,s:f,s:O?}}",
                      "type", "metrics", "message", msg, "data",
                      "step", (json_int_t) ev->step,
                      "epoch", (json_int_t) ev->epoch,
                      "train_loss", (double) p->loss,
                      "valid_loss", ev->loss,
                      name, json_object_get(d, name)));
        json_decref(d);

        if (ngx_http_aiserve_ft_write_report(rn, ev) != 0) {
            ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                          "aiserve fine-tuning: %s: the report cannot be "
                          "written in %s", rn->id, rn->dir);
        }
    }

    if (rc == 0) {
        if (ngx_http_aiserve_ft_succeed(rn, &u, events, log) != 0) {
            goto done;
        }

    } else if (p->step >= rn->ckpt_step + rn->conf->checkpoint_every) {
        ngx_http_aiserve_ft_save(rn, &u, events, log);
    }

    rc = aiserve_jobs_update(ngx_http_aiserve_ft_store_handle, rn->id,
                             rn->pid, now_ms, rn->conf->lease, &u, &job,
                             err, sizeof(err));

    if (rc == AISERVE_JOBS_OK) {
        rn->trained = p->trained_tokens;

        if (u.checkpoint) {
            if (rn->ckpt[0]) {
                aiserve_trainer_remove_checkpoint(rn->ckpt);
            }
            ngx_cpystrn((u_char *) rn->ckpt,
                        (u_char *) json_string_value(json_object_get(
                                       u.checkpoint, "_dir")),
                        sizeof(rn->ckpt));
            rn->ckpt_step = p->step;
        }

        if (u.status && aiserve_jobs_final(u.status)) {
            ngx_log_error(NGX_LOG_INFO, log, 0,
                          "aiserve fine-tuning: %s %s", rn->id, u.status);
            rn->over = 1;
            rn->final = 1;
        }

    } else if (rc == AISERVE_JOBS_CONFLICT) {
        /* cancelled meanwhile, or the lease lost: stop here; result files
         * stored for a success that is not written are removed */
        ids = json_object_get(set, "result_files");
        for (i = 0; i < json_array_size(ids); i++) {
            aiserve_files_delete(ngx_http_aiserve_files_store_handle,
                                 json_string_value(json_array_get(ids, i)),
                                 err, sizeof(err));
        }
        rn->results = 0;

        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "aiserve fine-tuning: %s stopped at step %zu: %s",
                      rn->id, p->step,
                      aiserve_jobs_final(json_string_value(
                          json_object_get(job, "status")))
                      ? json_string_value(json_object_get(job, "status"))
                      : "the lease is another worker's");
        rn->over = 1;
        rn->lost = 1;

    } else {
        ngx_log_error(NGX_LOG_ERR, log, 0, "aiserve fine-tuning: %s", err);
    }

    json_decref(job);

done:

    json_decref(events);
    json_decref(set);
    json_decref(u.checkpoint);
}


/* --- training charges (the ledger: event loop only) --------------------- */

/*
 * Charges job ID of ACCOUNT for TRAINED tokens so far and, when FINAL,
 * ends its reservation (aiserve_ledger_training_settle() and _release():
 * a running total, so a repeat charges nothing twice).  Nothing without a
 * ledger or for a job that reserved nothing.
 */
static void
ngx_http_aiserve_ft_charge(uint32_t account, const char *id,
    uint64_t trained, ngx_uint_t final, ngx_log_t *log)
{
    int   rc;
    char  err[256];

    if (ngx_http_aiserve_meter_ledger == NULL) {
        return;
    }

    rc = aiserve_ledger_training_settle(ngx_http_aiserve_meter_ledger,
                                        account, "", id, (int64_t) trained,
                                        ngx_time(), err, sizeof(err));

    if (rc == AISERVE_LEDGER_NOTFOUND) {
        return;
    }

    if (rc != AISERVE_LEDGER_OK) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "aiserve fine-tuning: %s: the charge of %uL trained "
                      "tokens failed: %s", id, trained, err);
    }

    if (final
        && aiserve_ledger_training_release(ngx_http_aiserve_meter_ledger,
                                           account, id, ngx_time(), err,
                                           sizeof(err))
           == AISERVE_LEDGER_ERROR)
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "aiserve fine-tuning: %s: releasing its reservation "
                      "failed: %s", id, err);
    }
}


/* --- the runner: in the event loop --------------------------------------- */

static void
ngx_http_aiserve_ft_runner_free(ngx_http_aiserve_ft_runner_t *rn)
{
    aiserve_trainer_free(rn->tr);
    json_decref(rn->job);
    ngx_destroy_pool(rn->pool);

    ngx_http_aiserve_ft_runner = NULL;

    if (ngx_http_aiserve_ft_hold_ev.timer_set) {
        ngx_del_timer(&ngx_http_aiserve_ft_hold_ev);
    }
}


static ngx_int_t
ngx_http_aiserve_ft_post(ngx_http_aiserve_ft_runner_t *rn)
{
    if (ngx_thread_task_post(rn->conf->thread_pool, rn->task) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_aiserve_ft_chunk_done(ngx_event_t *ev)
{
    char                           err[256];
    ngx_http_aiserve_ft_runner_t  *rn;

    rn = ev->data;

    if (!rn->lost && (rn->over || ngx_current_msec - rn->settled >= 1000))
    {
        ngx_http_aiserve_ft_charge(aiserve_jobs_account(rn->job), rn->id,
                                   rn->trained, rn->final, ev->log);
        rn->settled = ngx_current_msec;
    }

    /* the result files are the account's storage, on the creator key's
     * row as an upload's */
    if (rn->results && rn->final
        && json_is_integer(json_object_get(rn->job, "_key")))
    {
        ngx_http_aiserve_files_storage_of(aiserve_jobs_account(rn->job),
            (uint32_t) json_integer_value(json_object_get(rn->job, "_key")),
            ev->log);
    }

    if (!rn->over) {
        if (ngx_exiting || ngx_quit || ngx_terminate) {
            rn->stop = 1;
        }

        if (ngx_http_aiserve_ft_post(rn) == NGX_OK) {
            return;
        }

        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "aiserve fine-tuning: %s: the thread pool's queue is "
                      "full; the job is given back", rn->id);

        aiserve_jobs_release(ngx_http_aiserve_ft_store_handle, rn->id,
                             rn->pid, err, sizeof(err));
    }

    ngx_http_aiserve_ft_runner_free(rn);

    if (!(ngx_exiting || ngx_quit || ngx_terminate)) {
        ngx_add_timer(&ngx_http_aiserve_ft_poll_ev, 1);
    }
}


static void
ngx_http_aiserve_ft_hold(ngx_event_t *ev)
{
    ngx_add_timer(ev, NGX_HTTP_AISERVE_FT_HOLD);
}


static void
ngx_http_aiserve_ft_poll(ngx_event_t *ev)
{
    int                               rc;
    char                              err[256];
    json_t                           *job;
    ngx_pool_t                       *pool;
    ngx_cycle_t                      *cycle;
    ngx_http_aiserve_ft_runner_t     *rn;
    ngx_http_aiserve_ft_main_conf_t  *fmcf;

    if (ngx_exiting || ngx_quit || ngx_terminate
        || ngx_http_aiserve_ft_runner
        || ngx_http_aiserve_files_store_handle == NULL)
    {
        return;
    }

    cycle = (ngx_cycle_t *) ngx_cycle;
    fmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                        ngx_http_aiserve_fine_tuning_module);

    rc = aiserve_jobs_claim(ngx_http_aiserve_ft_store_handle, (int) ngx_pid,
                            ngx_http_aiserve_ft_now_ms(), fmcf->lease,
                            fmcf->jobs, &job, err, sizeof(err));

    if (rc != AISERVE_JOBS_OK) {
        if (rc == AISERVE_JOBS_ERROR) {
            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "aiserve fine-tuning: %s", err);
        }

        ngx_add_timer(ev, NGX_HTTP_AISERVE_FT_POLL);
        return;
    }

    pool = ngx_create_pool(1024, ev->log);
    rn = pool ? ngx_pcalloc(pool, sizeof(ngx_http_aiserve_ft_runner_t))
              : NULL;

    if (rn == NULL) {
        goto failed;
    }

    rn->pool = pool;
    rn->job = job;
    rn->conf = fmcf;
    rn->amcf = ngx_http_cycle_get_module_main_conf(cycle,
                                                   ngx_http_aiserve_module);
    rn->pid = ngx_pid;
    ngx_cpystrn((u_char *) rn->id,
                (u_char *) json_string_value(json_object_get(job, "id")),
                sizeof(rn->id));
    ngx_snprintf((u_char *) rn->dir, sizeof(rn->dir), "%V/jobs/%s%Z",
                 &fmcf->dir, rn->id);

    if (ngx_create_dir(rn->dir, 0700) == NGX_FILE_ERROR
        && ngx_errno != NGX_EEXIST)
    {
        ngx_log_error(NGX_LOG_ERR, ev->log, ngx_errno,
                      "aiserve fine-tuning: mkdir(\"%s\") failed", rn->dir);
        goto failed;
    }

    rn->task = ngx_thread_task_alloc(pool, 0);
    if (rn->task == NULL) {
        goto failed;
    }

    rn->task->ctx = rn;
    rn->task->handler = ngx_http_aiserve_ft_chunk;
    rn->task->event.handler = ngx_http_aiserve_ft_chunk_done;
    rn->task->event.data = rn;
    rn->task->event.log = ev->log;

    ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                  "aiserve fine-tuning: %s claimed by worker %P", rn->id,
                  ngx_pid);

    ngx_http_aiserve_ft_runner = rn;

    if (ngx_http_aiserve_ft_post(rn) != NGX_OK) {
        ngx_http_aiserve_ft_runner = NULL;
        goto failed;
    }

    ngx_add_timer(&ngx_http_aiserve_ft_hold_ev, NGX_HTTP_AISERVE_FT_HOLD);
    return;

failed:

    ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                  "aiserve fine-tuning: cannot start %s; given back",
                  json_string_value(json_object_get(job, "id")));

    aiserve_jobs_release(ngx_http_aiserve_ft_store_handle,
                         json_string_value(json_object_get(job, "id")),
                         (int) ngx_pid, err, sizeof(err));
    json_decref(job);

    if (pool) {
        ngx_destroy_pool(pool);
    }

    ngx_add_timer(ev, NGX_HTTP_AISERVE_FT_POLL);
}


/* --- configuration ------------------------------------------------------- */

static void *
ngx_http_aiserve_ft_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_aiserve_ft_main_conf_t));
}


static void *
ngx_http_aiserve_ft_create_loc_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_aiserve_ft_loc_conf_t));
}


static char *
ngx_http_aiserve_ft_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_aiserve_ft_loc_conf_t  *conf = child;

    ngx_http_aiserve_meter_loc_conf_t  *mlcf;

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    mlcf = ngx_http_conf_get_module_loc_conf(cf,
                                             ngx_http_aiserve_meter_module);

    if (mlcf->mode != NGX_HTTP_AISERVE_METER_ON) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aiserve_fine_tuning\" needs \"aiserve_meter "
                           "on\" in its location: jobs belong to the "
                           "account of the caller's API key");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* aiserve_fine_tuning_store DIR [map_size=SIZE] [jobs=N]
 *     [jobs_per_account=N] [threads=N] [thread_pool=NAME]
 *     [checkpoint_every=N] [chunk_steps=N] [lease=TIME] */
static char *
ngx_http_aiserve_ft_store(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_ft_main_conf_t  *fmcf = conf;

    off_t                          size;
    u_char                        *eq;
    ngx_http_aiserve_main_conf_t  *amcf;
    ngx_int_t                      n;
    ngx_str_t                     *value, name, v;
    ngx_uint_t                     i;
    ngx_msec_t                     ms;

    if (fmcf->dir.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    fmcf->dir = value[1];

    if (ngx_conf_full_name(cf->cycle, &fmcf->dir, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fmcf->jobs = 1;
    fmcf->jobs_per_account = 4;
    fmcf->threads = 1;
    fmcf->checkpoint_every = 50;
    fmcf->chunk_steps = 4;
    fmcf->lease = 30000;
    ngx_str_set(&fmcf->thread_pool_name, "default");

    for (i = 2; i < cf->args->nelts; i++) {

        eq = (u_char *) ngx_strlchr(value[i].data,
                                    value[i].data + value[i].len, '=');
        if (eq == NULL || eq + 1 == value[i].data + value[i].len) {
            goto invalid;
        }

        name.data = value[i].data;
        name.len = eq - value[i].data;
        v.data = eq + 1;
        v.len = value[i].data + value[i].len - v.data;

#define ngx_http_aiserve_ft_name(s)                                          \
        (name.len == sizeof(s) - 1 && ngx_strncmp(name.data, s, name.len) == 0)

        if (ngx_http_aiserve_ft_name("map_size")) {
            size = ngx_parse_offset(&v);
            if (size <= 0) {
                goto invalid;
            }

            /* below that, LMDB cannot even open the sub-databases, and
             * every worker's API would answer 503 */
            if (size < 1024 * 1024) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" must be 1m or more in \"%V\"",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }

            fmcf->map_size = (size_t) size;
            continue;
        }

        if (ngx_http_aiserve_ft_name("thread_pool")) {
            fmcf->thread_pool_name = v;
            continue;
        }

        if (ngx_http_aiserve_ft_name("lease")) {
            ms = ngx_parse_time(&v, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms < 1000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" must be 1s or more in \"%V\"",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }
            fmcf->lease = ms;
            continue;
        }

        n = ngx_atoi(v.data, v.len);
        if (n < 1) {
            goto invalid;
        }

        if (ngx_http_aiserve_ft_name("jobs")) {
            fmcf->jobs = n;

        } else if (ngx_http_aiserve_ft_name("jobs_per_account")) {
            fmcf->jobs_per_account = n;

        } else if (ngx_http_aiserve_ft_name("threads") && n <= 256) {
            fmcf->threads = n;

        } else if (ngx_http_aiserve_ft_name("checkpoint_every")) {
            fmcf->checkpoint_every = n;

        } else if (ngx_http_aiserve_ft_name("chunk_steps")) {
            fmcf->chunk_steps = n;

        } else {
            goto invalid;
        }

#undef ngx_http_aiserve_ft_name
    }

    fmcf->thread_pool = ngx_thread_pool_add(cf, &fmcf->thread_pool_name);
    if (fmcf->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the registry of the fine-tuned models, DIR/models, that the models'
     * module serves (ngx_http_aiserve_deploy.c) and the jobs publish to */
    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_aiserve_module);

    amcf->ft_root = ngx_pnalloc(cf->pool, fmcf->dir.len + sizeof("/models"));
    if (amcf->ft_root == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(ngx_cpymem(amcf->ft_root, fmcf->dir.data, fmcf->dir.len),
               "/models", sizeof("/models"));

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\"", &value[i],
                       &cmd->name);
    return NGX_CONF_ERROR;
}


/* aiserve_fine_tuning; */
static char *
ngx_http_aiserve_ft(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_ft_loc_conf_t  *flcf = conf;

    ngx_http_core_loc_conf_t             *clcf;
    ngx_http_aiserve_ft_main_conf_t      *fmcf;
    ngx_http_aiserve_files_main_conf_t   *files;

    if (flcf->enable) {
        return "is duplicate";
    }

    fmcf = ngx_http_conf_get_module_main_conf(cf,
                                        ngx_http_aiserve_fine_tuning_module);
    if (fmcf->dir.data == NULL) {
        return "needs \"aiserve_fine_tuning_store\" before it in the http "
               "block";
    }

    files = ngx_http_conf_get_module_main_conf(cf,
                                               ngx_http_aiserve_files_module);
    if (files->dir.data == NULL) {
        return "needs \"aiserve_files_store\" before it in the http block "
               "(the training files are the Files API's)";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" cannot be combined with another "
                           "content handler in this location", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (clcf->regex || clcf->named) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs a prefix location (its routes "
                           "follow the location's name)", &cmd->name);
        return NGX_CONF_ERROR;
    }

    flcf->enable = 1;
    clcf->handler = ngx_http_aiserve_ft_handler;

    return NGX_CONF_OK;
}


/* Master, at a start or a reload: DIR, DIR/jobs, DIR/jobs.mdb and the
 * registry DIR/models exist and belong to the workers' user (they write
 * jobs and publish and remove models). */
static ngx_int_t
ngx_http_aiserve_ft_init_module(ngx_cycle_t *cycle)
{
    u_char                           *paths[6];
    ngx_uint_t                        i;
    ngx_core_conf_t                  *ccf;
    ngx_http_aiserve_ft_main_conf_t  *fmcf;
    static const char                *sub[] = { "", "/jobs", "/jobs.mdb",
                                                "/models",
                                                "/jobs.mdb/data.mdb",
                                                "/jobs.mdb/lock.mdb" };

    fmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                        ngx_http_aiserve_fine_tuning_module);
    if (fmcf == NULL || fmcf->dir.data == NULL
        || ngx_test_config || ngx_process == NGX_PROCESS_SIGNALLER)
    {
        return NGX_OK;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    for (i = 0; i < 6; i++) {
        paths[i] = ngx_pnalloc(cycle->pool,
                               fmcf->dir.len + ngx_strlen(sub[i]) + 1);
        if (paths[i] == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(paths[i], "%V%s%Z", &fmcf->dir, sub[i]);

        if (i < 4 && ngx_create_dir(paths[i], 0700) == NGX_FILE_ERROR
            && ngx_errno != NGX_EEXIST)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "aiserve_fine_tuning_store: mkdir(\"%s\") failed",
                          paths[i]);
            return NGX_ERROR;
        }

        if (geteuid() == 0
            && ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT
            && chown((char *) paths[i], ccf->user, ccf->group) == -1
            && ngx_errno != NGX_ENOENT)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "aiserve_fine_tuning_store: chown(\"%s\") failed",
                          paths[i]);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_aiserve_ft_init_process(ngx_cycle_t *cycle)
{
    char                              err[512];
    ngx_http_aiserve_ft_main_conf_t  *fmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                        ngx_http_aiserve_fine_tuning_module);
    if (fmcf == NULL || fmcf->dir.data == NULL) {
        return NGX_OK;
    }

    ngx_http_aiserve_ft_store_handle =
        aiserve_jobs_open((char *) fmcf->dir.data, fmcf->map_size, err,
                          sizeof(err));

    if (ngx_http_aiserve_ft_store_handle == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "aiserve fine-tuning: %s; the fine-tuning API answers "
                      "503 and no job runs here", err);
        return NGX_OK;
    }

    /* the claims: a cancelable timer (an idle worker exits at once); the
     * hold: a timer that is not, armed while a job runs here, so that an
     * exiting worker waits for its job's last chunk and checkpoint */
    ngx_http_aiserve_ft_dummy.fd = (ngx_socket_t) -1;

    ngx_http_aiserve_ft_poll_ev.handler = ngx_http_aiserve_ft_poll;
    ngx_http_aiserve_ft_poll_ev.log = cycle->log;
    ngx_http_aiserve_ft_poll_ev.data = &ngx_http_aiserve_ft_dummy;
    ngx_http_aiserve_ft_poll_ev.cancelable = 1;

    ngx_http_aiserve_ft_hold_ev.handler = ngx_http_aiserve_ft_hold;
    ngx_http_aiserve_ft_hold_ev.log = cycle->log;
    ngx_http_aiserve_ft_hold_ev.data = &ngx_http_aiserve_ft_dummy;

    ngx_add_timer(&ngx_http_aiserve_ft_poll_ev, NGX_HTTP_AISERVE_FT_POLL);

    return NGX_OK;
}


/*
 * Worker exit.  The thread pools have finished their tasks (their module
 * exits first), so a job's last chunk is done: a job still held here
 * (a fast stop) is given back; it resumes elsewhere from its last
 * checkpoint.
 */
static void
ngx_http_aiserve_ft_exit_process(ngx_cycle_t *cycle)
{
    char                           err[256];
    ngx_http_aiserve_ft_runner_t  *rn;

    rn = ngx_http_aiserve_ft_runner;

    if (rn) {
        if (!rn->over) {
            aiserve_jobs_release(ngx_http_aiserve_ft_store_handle, rn->id,
                                 rn->pid, err, sizeof(err));
        }

        ngx_http_aiserve_ft_runner_free(rn);
    }

    aiserve_jobs_close(ngx_http_aiserve_ft_store_handle);
    ngx_http_aiserve_ft_store_handle = NULL;
}
