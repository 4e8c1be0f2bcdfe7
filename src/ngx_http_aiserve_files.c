/*
 * ngx_http_aiserve_files_module: the Files API of aiserve (OpenAI's
 * shape), files owned by the account of the caller's API key.  Own
 * ngx_module_t in the aiserve .so.
 *
 *   POST   /v1/files               multipart/form-data: file, purpose
 *   GET    /v1/files               ?after=&limit=&purpose=
 *   GET    /v1/files/ID
 *   GET    /v1/files/ID/content
 *   DELETE /v1/files/ID
 *
 * The store (src/aiserve_files.c) is opened per worker in init_process.
 * An upload runs on the nginx thread pool: gathering the body, parsing
 * the multipart form, writing the file atomically, checking the quota,
 * and validating it through the training data readers and the tokenizer,
 * so the event loop never waits on the disk or the parse.  Reads of the
 * metadata (LMDB, a memory map) and deletes run in the event loop, as the
 * meter's ledger reads do.
 *
 * A file of another account is answered exactly as a missing one (404);
 * admin keys see every account's files.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_aiserve_meter.h"
#include "ngx_http_aiserve_files.h"


#define NGX_HTTP_AISERVE_FILES_LIMIT_DEFAULT  100
#define NGX_HTTP_AISERVE_FILES_LIMIT_MAX      1000


typedef struct {
    ngx_flag_t                   enable;
    ngx_str_t                    thread_pool_name;
    ngx_thread_pool_t           *thread_pool;
    off_t                        max_body;    /* client_max_body_size */
} ngx_http_aiserve_files_loc_conf_t;


/* an upload, filled in the thread */
typedef struct {
    ngx_http_request_t          *request;
    aiserve_files_t             *store;
    const aiserve_tok_t         *tok;
    ngx_chain_t                 *bufs;        /* the body */
    size_t                       body_len;
    u_char                       boundary[72];
    size_t                       boundary_len;
    uint64_t                     quota;
    aiserve_file_t               file;
    ngx_uint_t                   status;      /* 0: stored */
    const char                  *code;
    const char                  *param;       /* of a 400: "file" if NULL */
    char                         err[512];
} ngx_http_aiserve_files_upload_t;


typedef struct {
    ngx_uint_t                   page;        /* send our 413 page */
    ngx_uint_t                   page_sent;
    ngx_str_t                    json;
} ngx_http_aiserve_files_ctx_t;


static ngx_int_t ngx_http_aiserve_files_init(ngx_conf_t *cf);
static void *ngx_http_aiserve_files_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_aiserve_files_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_aiserve_files_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_aiserve_files_store(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_aiserve_files(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_aiserve_files_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_aiserve_files_init_process(ngx_cycle_t *cycle);
static void ngx_http_aiserve_files_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_aiserve_files_handler(ngx_http_request_t *r);
static void ngx_http_aiserve_files_upload_body(ngx_http_request_t *r);
static void ngx_http_aiserve_files_upload_thread(void *data, ngx_log_t *log);
static void ngx_http_aiserve_files_upload_done(ngx_event_t *ev);


static ngx_command_t  ngx_http_aiserve_files_commands[] = {

    { ngx_string("aiserve_files_store"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_aiserve_files_store,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_files"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_aiserve_files,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_aiserve_files_module_ctx = {
    NULL,                                   /* preconfiguration */
    ngx_http_aiserve_files_init,            /* postconfiguration */

    ngx_http_aiserve_files_create_main_conf, /* create main configuration */
    NULL,                                   /* init main configuration */

    NULL,                                   /* create server configuration */
    NULL,                                   /* merge server configuration */

    ngx_http_aiserve_files_create_loc_conf, /* create location configuration */
    ngx_http_aiserve_files_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_aiserve_files_module = {
    NGX_MODULE_V1,
    &ngx_http_aiserve_files_module_ctx,     /* module context */
    ngx_http_aiserve_files_commands,        /* module directives */
    NGX_HTTP_MODULE,                        /* module type */
    NULL,                                   /* init master */
    ngx_http_aiserve_files_init_module,     /* init module */
    ngx_http_aiserve_files_init_process,    /* init process */
    NULL,                                   /* init thread */
    NULL,                                   /* exit thread */
    ngx_http_aiserve_files_exit_process,    /* exit process */
    NULL,                                   /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;

/* per worker */
aiserve_files_t  *ngx_http_aiserve_files_store_handle;


/* --- JSON ---------------------------------------------------------------- */

static json_t *
ngx_http_aiserve_files_error_json(const char *type, const char *code,
    const char *param, const char *msg)
{
    return json_pack("{s:{s:s,s:s,s:s?,s:s}}", "error", "message", msg,
                     "type", type, "param", param, "code", code);
}


static ngx_int_t
ngx_http_aiserve_files_fail(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *param, const char *msg)
{
    const char  *type;

    type = status >= NGX_HTTP_INTERNAL_SERVER_ERROR ? "server_error"
           : status == NGX_HTTP_TOO_MANY_REQUESTS ? "insufficient_quota"
           : "invalid_request_error";

    return ngx_http_aiserve_meter_send_json(r, status,
               ngx_http_aiserve_files_error_json(type, code, param, msg));
}


/* OpenAI's FileObject (openai-python src/openai/types/file_object.py) and
 * our fields for training: examples, tokens, labels, format. */
static json_t *
ngx_http_aiserve_files_object(const aiserve_file_t *f)
{
    json_t  *o;

    o = json_pack("{s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:n}",
                  "id", f->id, "object", "file",
                  "bytes", (json_int_t) f->bytes,
                  "created_at", (json_int_t) f->created_at,
                  "filename", f->filename, "purpose", f->purpose,
                  "status", aiserve_file_status_name(f->status),
                  "status_details");
    if (o == NULL) {
        return NULL;
    }

    if (f->details[0]) {
        json_object_set_new(o, "status_details", json_string(f->details));
    }

    /* the training fields: not of a job's results (purpose
     * fine-tune-results) */
    if (f->status == AISERVE_FILE_PROCESSED
        && ngx_strcmp(f->purpose, "fine-tune") == 0)
    {
        json_object_set_new(o, "format", json_string(f->format));
        json_object_set_new(o, "examples", json_integer(f->examples));
        json_object_set_new(o, "tokens", json_integer(f->tokens));
        json_object_set_new(o, "num_labels", json_integer(f->num_labels));
    }

    return o;
}


/* --- routes -------------------------------------------------------------- */

/* The record of id if the caller may see it: NGX_OK; NGX_DECLINED when
 * there is none or it is another account's (the same answer, 404);
 * NGX_ERROR when the store fails (logged). */
static ngx_int_t
ngx_http_aiserve_files_find(ngx_http_request_t *r, ngx_str_t *id,
    aiserve_file_t *f)
{
    char                           buf[AISERVE_FILES_ID_LEN + 1], err[256];
    ngx_int_t                      rc;
    ngx_http_aiserve_meter_ctx_t  *mctx;

    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (id->len != AISERVE_FILES_ID_LEN
        || ngx_strncmp(id->data, "file-", 5) != 0)
    {
        return NGX_DECLINED;
    }

    ngx_memcpy(buf, id->data, id->len);
    buf[id->len] = '\0';

    rc = aiserve_files_get(ngx_http_aiserve_files_store_handle, buf, f, err,
                           sizeof(err));

    if (rc == AISERVE_FILES_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "aiserve files: %s", err);
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


/* Sends the answer to a failed find. */
static ngx_int_t
ngx_http_aiserve_files_not_found(ngx_http_request_t *r, ngx_int_t rc)
{
    if (rc == NGX_DECLINED) {
        return ngx_http_aiserve_files_fail(r, NGX_HTTP_NOT_FOUND,
                                           "not_found", "file_id",
                                           "no such file");
    }

    return ngx_http_aiserve_files_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "server_error", NULL,
                                       "the files store failed");
}


static ngx_int_t
ngx_http_aiserve_files_list(ngx_http_request_t *r)
{
    char                           after[AISERVE_FILES_ID_LEN + 1];
    char                           purpose[AISERVE_FILES_PURPOSE_MAX + 1];
    char                           err[256];
    size_t                         n, i, limit;
    ngx_uint_t                     ascending;
    json_t                        *o, *data;
    ngx_int_t                      rc, v;
    ngx_str_t                      arg;
    aiserve_file_t                *out;
    ngx_http_aiserve_meter_ctx_t  *mctx;

    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    limit = NGX_HTTP_AISERVE_FILES_LIMIT_DEFAULT;

    if (ngx_http_arg(r, (u_char *) "limit", 5, &arg) == NGX_OK) {
        v = ngx_atoi(arg.data, arg.len);
        if (v < 1 || v > NGX_HTTP_AISERVE_FILES_LIMIT_MAX) {
            return ngx_http_aiserve_files_fail(r, NGX_HTTP_BAD_REQUEST,
                       "invalid_value", "limit",
                       "limit must be an integer from 1 to 1000");
        }
        limit = v;
    }

    after[0] = '\0';

    if (ngx_http_arg(r, (u_char *) "after", 5, &arg) == NGX_OK) {
        if (arg.len != AISERVE_FILES_ID_LEN) {
            return ngx_http_aiserve_files_fail(r, NGX_HTTP_BAD_REQUEST,
                       "invalid_value", "after",
                       "after must be a file id");
        }
        ngx_memcpy(after, arg.data, arg.len);
        after[arg.len] = '\0';
    }

    purpose[0] = '\0';

    if (ngx_http_arg(r, (u_char *) "purpose", 7, &arg) == NGX_OK) {
        if (arg.len == 0 || arg.len >= sizeof(purpose)) {
            return ngx_http_aiserve_files_fail(r, NGX_HTTP_BAD_REQUEST,
                       "invalid_value", "purpose", "unknown purpose");
        }
        ngx_memcpy(purpose, arg.data, arg.len);
        purpose[arg.len] = '\0';
    }

    ascending = 0;

    if (ngx_http_arg(r, (u_char *) "order", 5, &arg) == NGX_OK) {
        if (arg.len == 3 && ngx_strncmp(arg.data, "asc", 3) == 0) {
            ascending = 1;

        } else if (arg.len != 4 || ngx_strncmp(arg.data, "desc", 4) != 0) {
            return ngx_http_aiserve_files_fail(r, NGX_HTTP_BAD_REQUEST,
                       "invalid_value", "order",
                       "order must be \"asc\" or \"desc\"");
        }
    }

    out = ngx_alloc((limit + 1) * sizeof(aiserve_file_t),
                    r->connection->log);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = aiserve_files_list(ngx_http_aiserve_files_store_handle,
                            (mctx->key.flags & AISERVE_KEY_ADMIN)
                            ? 0 : mctx->key.account_id,
                            purpose[0] ? purpose : NULL,
                            after[0] ? after : NULL, ascending, out, limit,
                            &n, err, sizeof(err));
    if (rc != AISERVE_FILES_OK) {
        ngx_free(out);
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "aiserve files: %s", err);
        return ngx_http_aiserve_files_fail(r,
                   NGX_HTTP_INTERNAL_SERVER_ERROR, "server_error", NULL,
                   "the files store failed");
    }

    data = json_array();

    for (i = 0; i < n && i < limit; i++) {
        json_array_append_new(data, ngx_http_aiserve_files_object(&out[i]));
    }

    o = json_pack("{s:s,s:o,s:s?,s:s?,s:b}", "object", "list", "data", data,
                  "first_id", n ? out[0].id : NULL,
                  "last_id", n ? out[(n > limit ? limit : n) - 1].id : NULL,
                  "has_more", n > limit);

    ngx_free(out);

    return ngx_http_aiserve_meter_send_json(r, NGX_HTTP_OK, o);
}


static ngx_int_t
ngx_http_aiserve_files_content(ngx_http_request_t *r, aiserve_file_t *f)
{
    char                       path[4200];
    ngx_int_t                  rc;
    ngx_buf_t                 *b;
    ngx_str_t                  name;
    ngx_chain_t                out;
    ngx_open_file_info_t       of;
    ngx_http_core_loc_conf_t  *clcf;

    if (aiserve_files_path(ngx_http_aiserve_files_store_handle, f->id, path,
                           sizeof(path))
        != 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    name.data = (u_char *) path;
    name.len = ngx_strlen(path);

    ngx_memzero(&of, sizeof(ngx_open_file_info_t));
    of.read_ahead = clcf->read_ahead;
    of.directio = NGX_MAX_OFF_T_VALUE;
    of.valid = clcf->open_file_cache_valid;
    of.min_uses = clcf->open_file_cache_min_uses;
    of.errors = 1;

    if (ngx_open_cached_file(NULL, &name, &of, r->pool) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, of.err,
                      "aiserve files: %s \"%s\" failed", of.failed, path);
        return ngx_http_aiserve_files_fail(r,
                   NGX_HTTP_INTERNAL_SERVER_ERROR, "server_error", NULL,
                   "the file's content cannot be read");
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = of.size;
    r->headers_out.last_modified_time = of.mtime;
    ngx_str_set(&r->headers_out.content_type, "application/octet-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->file = ngx_pcalloc(r->pool, sizeof(ngx_file_t));
    if (b->file == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->file_pos = 0;
    b->file_last = of.size;
    b->in_file = of.size ? 1 : 0;
    b->last_buf = 1;
    b->last_in_chain = 1;
    b->sync = of.size ? 0 : 1;

    b->file->fd = of.fd;
    b->file->name = name;
    b->file->log = r->connection->log;
    b->file->directio = of.is_directio;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


void
ngx_http_aiserve_files_storage_of(uint32_t account_id, uint32_t key_id,
    ngx_log_t *log)
{
    char      err[256];
    uint64_t  bytes;

    if (ngx_http_aiserve_meter_ledger == NULL
        || ngx_http_aiserve_files_store_handle == NULL)
    {
        return;
    }

    if (aiserve_files_usage(ngx_http_aiserve_files_store_handle, account_id,
                            &bytes, err, sizeof(err))
        != AISERVE_FILES_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "aiserve files: storage of acct_%uD not recorded: %s",
                      account_id, err);
        return;
    }

    if (aiserve_ledger_storage(ngx_http_aiserve_meter_ledger, key_id, bytes,
                               ngx_time())
        != AISERVE_LEDGER_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "aiserve files: storage of acct_%uD not recorded: %s",
                      account_id,
                      aiserve_ledger_error(ngx_http_aiserve_meter_ledger));
    }
}


/*
 * After an upload or a delete by a key of account_id: the bytes the
 * account now stores go to the ledger's storage row of the key.  A file
 * of another account (an admin's delete) is recorded by its owner's next
 * change.
 */
static void
ngx_http_aiserve_files_storage(ngx_http_request_t *r, uint32_t account_id)
{
    ngx_http_aiserve_meter_ctx_t  *mctx;

    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (mctx == NULL || mctx->key.account_id != account_id) {
        return;
    }

    ngx_http_aiserve_files_storage_of(account_id, mctx->key.id,
                                      r->connection->log);
}


static ngx_int_t
ngx_http_aiserve_files_delete(ngx_http_request_t *r, aiserve_file_t *f)
{
    char       err[256];
    ngx_int_t  rc;

    rc = aiserve_files_delete(ngx_http_aiserve_files_store_handle, f->id,
                              err, sizeof(err));

    if (rc == AISERVE_FILES_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "aiserve files: %s", err);
        return ngx_http_aiserve_files_not_found(r, NGX_ERROR);
    }

    if (rc == AISERVE_FILES_NOTFOUND) {
        return ngx_http_aiserve_files_not_found(r, NGX_DECLINED);
    }

    ngx_http_aiserve_files_storage(r, f->account_id);

    return ngx_http_aiserve_meter_send_json(r, NGX_HTTP_OK,
               json_pack("{s:s,s:s,s:b}", "id", f->id, "object", "file",
                         "deleted", 1));
}


/* The boundary of a multipart/form-data body (RFC 7578, RFC 2046 5.1.1),
 * without quotes; NGX_DECLINED if the content type is another. */
static ngx_int_t
ngx_http_aiserve_files_boundary(ngx_http_request_t *r, u_char *out,
    size_t *len)
{
    u_char  *p, *last, *start;

    if (r->headers_in.content_type == NULL) {
        return NGX_DECLINED;
    }

    p = r->headers_in.content_type->value.data;
    last = p + r->headers_in.content_type->value.len;

    if ((size_t) (last - p) < 19
        || ngx_strncasecmp(p, (u_char *) "multipart/form-data", 19) != 0)
    {
        return NGX_DECLINED;
    }

    p = ngx_strlcasestrn(p, last, (u_char *) "boundary=", 9 - 1);
    if (p == NULL) {
        return NGX_DECLINED;
    }

    p += 9;

    if (p < last && *p == '"') {
        start = ++p;
        while (p < last && *p != '"') {
            p++;
        }

    } else {
        start = p;
        while (p < last && *p != ';' && *p != ' ' && *p != '\t') {
            p++;
        }
    }

    if (p == start || p - start > 70) {
        return NGX_DECLINED;
    }

    *len = p - start;
    ngx_memcpy(out, start, *len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_aiserve_files_handler(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_str_t                           rest, id;
    aiserve_file_t                      f;
    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_aiserve_meter_ctx_t       *mctx;

    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);
    if (mctx == NULL || !mctx->authenticated) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_aiserve_files_store_handle == NULL) {
        return ngx_http_aiserve_files_fail(r,
                   NGX_HTTP_SERVICE_UNAVAILABLE, "files_unavailable", NULL,
                   "the files store cannot be opened");
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    rest.data = r->uri.data + clcf->name.len;
    rest.len = r->uri.len - clcf->name.len;

    if (r->uri.len < clcf->name.len) {
        rest.len = 0;
    }

    if (rest.len && rest.data[0] == '/') {
        rest.data++;
        rest.len--;
    }

    if (rest.len == 0) {
        if (r->method == NGX_HTTP_GET || r->method == NGX_HTTP_HEAD) {
            rc = ngx_http_discard_request_body(r);
            if (rc != NGX_OK) {
                return rc;
            }

            return ngx_http_aiserve_files_list(r);
        }

        if (r->method == NGX_HTTP_POST) {
            rc = ngx_http_read_client_request_body(r,
                                         ngx_http_aiserve_files_upload_body);
            if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
                return rc;
            }

            return NGX_DONE;
        }

        return ngx_http_aiserve_files_fail(r, NGX_HTTP_NOT_ALLOWED,
                                           "method_not_allowed", NULL,
                                           "use GET or POST on /v1/files");
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

    if (rest.len == 0) {
        if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD
            && r->method != NGX_HTTP_DELETE)
        {
            return ngx_http_aiserve_files_fail(r, NGX_HTTP_NOT_ALLOWED,
                       "method_not_allowed", NULL,
                       "use GET or DELETE on a file");
        }

        rc = ngx_http_aiserve_files_find(r, &id, &f);
        if (rc != NGX_OK) {
            return ngx_http_aiserve_files_not_found(r, rc);
        }

        if (r->method == NGX_HTTP_DELETE) {
            return ngx_http_aiserve_files_delete(r, &f);
        }

        return ngx_http_aiserve_meter_send_json(r, NGX_HTTP_OK,
                                         ngx_http_aiserve_files_object(&f));
    }

    if (rest.len == sizeof("/content") - 1
        && ngx_strncmp(rest.data, "/content", rest.len) == 0)
    {
        if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
            return ngx_http_aiserve_files_fail(r, NGX_HTTP_NOT_ALLOWED,
                       "method_not_allowed", NULL,
                       "use GET on a file's content");
        }

        rc = ngx_http_aiserve_files_find(r, &id, &f);
        if (rc != NGX_OK) {
            return ngx_http_aiserve_files_not_found(r, rc);
        }

        return ngx_http_aiserve_files_content(r, &f);
    }

    return ngx_http_aiserve_files_fail(r, NGX_HTTP_NOT_FOUND, "not_found",
                                       NULL, "no such files route");
}


/* --- upload -------------------------------------------------------------- */

static void
ngx_http_aiserve_files_upload_body(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_chain_t                        *cl;
    ngx_thread_task_t                  *task;
    ngx_http_aiserve_meter_ctx_t       *mctx;
    ngx_http_aiserve_files_upload_t    *up;
    ngx_http_aiserve_files_loc_conf_t  *flcf;
    ngx_http_aiserve_files_main_conf_t *fmcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_files_module);
    fmcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_files_module);
    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    task = ngx_thread_task_alloc(r->pool,
                                 sizeof(ngx_http_aiserve_files_upload_t));
    if (task == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    up = task->ctx;
    up->request = r;
    up->store = ngx_http_aiserve_files_store_handle;
    up->tok = fmcf->tok;
    up->quota = fmcf->quota;
    up->file.account_id = mctx->key.account_id;

    if (ngx_http_aiserve_files_boundary(r, up->boundary, &up->boundary_len)
        != NGX_OK)
    {
        rc = ngx_http_aiserve_files_fail(r, NGX_HTTP_BAD_REQUEST,
                 "invalid_content_type", NULL,
                 "the body must be multipart/form-data with a boundary");
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (r->request_body) {
        up->bufs = r->request_body->bufs;
        for (cl = up->bufs; cl; cl = cl->next) {
            up->body_len += ngx_buf_size(cl->buf);
        }
    }

    task->handler = ngx_http_aiserve_files_upload_thread;
    task->event.handler = ngx_http_aiserve_files_upload_done;
    task->event.data = r;

    if (ngx_thread_task_post(flcf->thread_pool, task) != NGX_OK) {
        rc = ngx_http_aiserve_files_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                 "overloaded", NULL, "the thread pool's queue is full");
        ngx_http_finalize_request(r, rc);
        return;
    }

    r->main->blocked++;
    r->aio = 1;
}


/* Finds the next "\r\n--boundary" at or after p; NULL when none. */
static u_char *
ngx_http_aiserve_files_next_part(u_char *p, u_char *last,
    ngx_http_aiserve_files_upload_t *up)
{
    u_char  *q;

    for ( ;; ) {
        q = ngx_strlcasestrn(p, last, (u_char *) "\r\n--", 4 - 1);
        if (q == NULL) {
            return NULL;
        }

        if ((size_t) (last - q) >= 4 + up->boundary_len
            && ngx_memcmp(q + 4, up->boundary, up->boundary_len) == 0)
        {
            return q;
        }

        p = q + 1;
    }
}


/* The value of param ("name", "filename") in a Content-Disposition line
 * [p, last); NGX_DECLINED when absent. */
static ngx_int_t
ngx_http_aiserve_files_disposition(u_char *p, u_char *last,
    const char *param, ngx_str_t *value)
{
    size_t   n;
    u_char  *q;

    n = ngx_strlen(param);

    for ( ;; ) {
        q = ngx_strlcasestrn(p, last, (u_char *) param, n - 1);
        if (q == NULL) {
            return NGX_DECLINED;
        }

        p = q + n;

        /* a whole parameter: after ';' or a space, followed by '="' */
        if ((q[-1] == ';' || q[-1] == ' ') && last - p >= 2
            && p[0] == '=' && p[1] == '"')
        {
            break;
        }
    }

    p += 2;
    value->data = p;

    while (p < last && *p != '"') {
        p++;
    }

    value->len = p - value->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_aiserve_files_parse(ngx_http_aiserve_files_upload_t *up,
    u_char *body, size_t len, ngx_str_t *file, ngx_str_t *filename,
    ngx_str_t *purpose)
{
    u_char     *p, *last, *hdr, *eoh, *line, *eol, *next, *delim;
    ngx_str_t   name, fname;

    last = body + len;

    /* the body begins with "--boundary" (no CRLF before it): look for the
     * first delimiter from two bytes before, as if a CRLF preceded it */
    if (len < 2 + up->boundary_len
        || ngx_strncmp(body, "--", 2) != 0
        || ngx_memcmp(body + 2, up->boundary, up->boundary_len) != 0)
    {
        return NGX_ERROR;
    }

    p = body + 2 + up->boundary_len;

    for ( ;; ) {
        if (last - p >= 2 && p[0] == '-' && p[1] == '-') {
            return NGX_OK;          /* the closing delimiter */
        }

        if (last - p < 2 || p[0] != '\r' || p[1] != '\n') {
            return NGX_ERROR;
        }

        hdr = p + 2;
        eoh = ngx_strlcasestrn(hdr - 2, last, (u_char *) "\r\n\r\n", 4 - 1);
        if (eoh == NULL) {
            return NGX_ERROR;
        }

        name.len = 0;
        fname.data = NULL;
        fname.len = 0;

        for (line = hdr; line < eoh; line = eol + 2) {
            eol = ngx_strlcasestrn(line, eoh + 2, (u_char *) "\r\n", 2 - 1);
            if (eol == NULL) {
                eol = eoh;
            }

            if ((size_t) (eol - line) > 20
                && ngx_strncasecmp(line, (u_char *) "Content-Disposition:",
                                   20) == 0)
            {
                (void) ngx_http_aiserve_files_disposition(line + 20, eol,
                                                          "name", &name);
                if (ngx_http_aiserve_files_disposition(line + 20, eol,
                                                       "filename", &fname)
                    != NGX_OK)
                {
                    fname.data = NULL;
                }
            }
        }

        p = eoh + 4;

        /* from the CRLF that ends the headers: a sender that writes an
         * empty part without its own CRLF ("\r\n\r\n--boundary") shares
         * it with the delimiter */
        delim = ngx_http_aiserve_files_next_part(p - 2, last, up);
        if (delim == NULL) {
            return NGX_ERROR;
        }

        next = delim < p ? p : delim;

        if (name.len == 4 && ngx_strncmp(name.data, "file", 4) == 0) {
            file->data = p;
            file->len = next - p;
            *filename = fname;

        } else if (name.len == 7 && ngx_strncmp(name.data, "purpose", 7) == 0)
        {
            purpose->data = p;
            purpose->len = next - p;
        }

        p = delim + 4 + up->boundary_len;
    }
}


/* Reads the body (memory and temp file buffers) into one buffer. */
static u_char *
ngx_http_aiserve_files_gather(ngx_http_aiserve_files_upload_t *up)
{
    u_char       *body, *p;
    size_t        n;
    ssize_t       got;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body = ngx_alloc(up->body_len + 1, ngx_cycle->log);
    if (body == NULL) {
        return NULL;
    }

    p = body;

    for (cl = up->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = b->file_last - b->file_pos;
            got = pread(b->file->fd, p, n, b->file_pos);
            if (got != (ssize_t) n) {
                ngx_free(body);
                return NULL;
            }
            p += n;

        } else {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    return body;
}


static void
ngx_http_aiserve_files_upload_thread(void *data, ngx_log_t *log)
{
    ngx_http_aiserve_files_upload_t  *up = data;

    int         rc;
    u_char     *body, *p;
    json_t     *check;
    ngx_str_t   file, filename, purpose;

    body = ngx_http_aiserve_files_gather(up);
    if (body == NULL) {
        up->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        up->code = "server_error";
        ngx_cpystrn((u_char *) up->err,
                    (u_char *) "the request body cannot be read",
                    sizeof(up->err));
        return;
    }

    file.data = NULL;
    file.len = 0;
    filename.data = NULL;
    filename.len = 0;
    purpose.len = 0;

    if (ngx_http_aiserve_files_parse(up, body, up->body_len, &file,
                                     &filename, &purpose)
        != NGX_OK)
    {
        up->status = NGX_HTTP_BAD_REQUEST;
        up->code = "invalid_multipart";
        ngx_cpystrn((u_char *) up->err,
                    (u_char *) "the multipart/form-data body is malformed",
                    sizeof(up->err));
        goto done;
    }

    if (file.data == NULL) {
        up->status = NGX_HTTP_BAD_REQUEST;
        up->code = "missing_required_parameter";
        ngx_cpystrn((u_char *) up->err,
                    (u_char *) "the form has no \"file\" field",
                    sizeof(up->err));
        goto done;
    }

    if (purpose.len != 9 || ngx_strncmp(purpose.data, "fine-tune", 9) != 0)
    {
        up->status = NGX_HTTP_BAD_REQUEST;
        up->code = "invalid_value";
        up->param = "purpose";
        ngx_cpystrn((u_char *) up->err,
                    (u_char *) "purpose must be \"fine-tune\"",
                    sizeof(up->err));
        goto done;
    }

    /* the base name, valid UTF-8, at most AISERVE_FILES_NAME_MAX bytes */
    for (p = filename.data + filename.len; p > filename.data; p--) {
        if (p[-1] == '/' || p[-1] == '\\') {
            break;
        }
    }

    filename.len -= p - filename.data;
    filename.data = p;

    check = json_stringn((char *) filename.data, filename.len);

    if (filename.len == 0 || filename.len > AISERVE_FILES_NAME_MAX
        || check == NULL)
    {
        json_decref(check);
        up->status = NGX_HTTP_BAD_REQUEST;
        up->code = "invalid_value";
        ngx_cpystrn((u_char *) up->err,
                    (u_char *) "the file needs a name (valid UTF-8, at most "
                    "255 bytes)", sizeof(up->err));
        goto done;
    }

    json_decref(check);

    ngx_memcpy(up->file.filename, filename.data, filename.len);
    ngx_cpystrn((u_char *) up->file.purpose, (u_char *) "fine-tune",
                sizeof(up->file.purpose));

    rc = aiserve_files_add(up->store, &up->file, file.data, file.len,
                           up->quota, up->err, sizeof(up->err));

    if (rc == AISERVE_FILES_QUOTA) {
        up->status = NGX_HTTP_TOO_MANY_REQUESTS;
        up->code = "storage_quota_exceeded";
        goto done;
    }

    if (rc != AISERVE_FILES_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0, "aiserve files: %s", up->err);
        up->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        up->code = "server_error";
        ngx_cpystrn((u_char *) up->err, (u_char *) "the file cannot be stored",
                    sizeof(up->err));
        goto done;
    }

    aiserve_files_validate(up->tok, (char *) file.data, file.len, &up->file);

    if (aiserve_files_update(up->store, &up->file, up->err, sizeof(up->err))
        == AISERVE_FILES_ERROR)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0, "aiserve files: %s", up->err);
    }

done:

    ngx_free(body);
}


static void
ngx_http_aiserve_files_upload_done(ngx_event_t *ev)
{
    ngx_int_t                         rc;
    ngx_thread_task_t                *task;
    ngx_connection_t                 *c;
    ngx_http_request_t               *r;
    ngx_http_aiserve_files_upload_t  *up;

    r = ev->data;
    c = r->connection;
    task = (ngx_thread_task_t *) ((u_char *) ev
                                  - offsetof(ngx_thread_task_t, event));
    up = task->ctx;

    ngx_http_set_log_request(c->log, r);

    r->main->blocked--;
    r->aio = 0;

    if (up->status) {
        rc = ngx_http_aiserve_files_fail(r, up->status, up->code,
                 up->status != NGX_HTTP_BAD_REQUEST ? NULL
                 : up->param ? up->param : "file",
                 up->err);

    } else {
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "aiserve files: stored %s, %uL bytes, %s",
                       up->file.id, up->file.bytes,
                       aiserve_file_status_name(up->file.status));

        ngx_http_aiserve_files_storage(r, up->file.account_id);

        rc = ngx_http_aiserve_meter_send_json(r, NGX_HTTP_OK,
                 ngx_http_aiserve_files_object(&up->file));
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


/* --- nginx's own 413 as JSON --------------------------------------------- */

static ngx_int_t
ngx_http_aiserve_files_header_filter(ngx_http_request_t *r)
{
    char                               *s;
    ngx_http_aiserve_files_ctx_t       *ctx;
    ngx_http_aiserve_files_loc_conf_t  *flcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_files_module);

    if (r != r->main || !flcf->enable
        || r->err_status != NGX_HTTP_REQUEST_ENTITY_TOO_LARGE)
    {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_aiserve_files_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    s = json_dumps(ngx_http_aiserve_files_error_json("invalid_request_error",
                       "request_too_large", "file",
                       "the upload is larger than client_max_body_size"),
                   JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s == NULL) {
        return NGX_ERROR;
    }

    ctx->json.len = ngx_strlen(s) + 1;
    ctx->json.data = ngx_pnalloc(r->pool, ctx->json.len);
    if (ctx->json.data == NULL) {
        free(s);
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->json.data, s, ctx->json.len - 1);
    ctx->json.data[ctx->json.len - 1] = '\n';
    free(s);

    ctx->page = 1;
    ngx_http_set_ctx(r, ctx, ngx_http_aiserve_files_module);

    ngx_http_aiserve_json_page_headers(r, &ctx->json);

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_aiserve_files_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t                   *out;
    ngx_http_aiserve_files_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_files_module);

    if (in == NULL || ctx == NULL || !ctx->page) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ngx_http_aiserve_json_page_body(r, in, &ctx->json, &ctx->page_sent,
                                        &out)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_next_body_filter(r, out);
}


/* --- configuration ------------------------------------------------------- */

static void *
ngx_http_aiserve_files_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_aiserve_files_main_conf_t));
}


static void *
ngx_http_aiserve_files_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_aiserve_files_loc_conf_t  *flcf;

    flcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_aiserve_files_loc_conf_t));
    if (flcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     flcf->thread_pool_name = { 0, NULL };
     *     flcf->thread_pool = NULL;
     */

    return flcf;
}


static char *
ngx_http_aiserve_files_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_aiserve_files_loc_conf_t  *conf = child;

    ngx_http_aiserve_meter_loc_conf_t  *mlcf;

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    mlcf = ngx_http_conf_get_module_loc_conf(cf,
                                             ngx_http_aiserve_meter_module);

    /* the meter's configuration of this location is merged before ours:
     * its module comes first in the .so's list */
    if (mlcf->mode != NGX_HTTP_AISERVE_METER_ON) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aiserve_files\" needs \"aiserve_meter on\" in "
                           "its location: files belong to the account of "
                           "the caller's API key");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void
ngx_http_aiserve_files_tok_cleanup(void *data)
{
    aiserve_tok_free(data);
}


/* aiserve_files_store DIR tokenizer=MODEL_DIR [quota=SIZE] [map_size=SIZE] */
static char *
ngx_http_aiserve_files_store(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_files_main_conf_t  *fmcf = conf;

    char                 err[512];
    off_t                size;
    ngx_str_t           *value, v;
    ngx_uint_t           i;
    ngx_pool_cleanup_t  *cln;

    if (fmcf->dir.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    fmcf->dir = value[1];

    if (ngx_conf_full_name(cf->cycle, &fmcf->dir, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "tokenizer=", 10) == 0) {
            fmcf->tokenizer.data = value[i].data + 10;
            fmcf->tokenizer.len = value[i].len - 10;

            if (ngx_conf_full_name(cf->cycle, &fmcf->tokenizer, 0)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "quota=", 6) == 0
            || ngx_strncmp(value[i].data, "map_size=", 9) == 0)
        {
            v.data = (u_char *) ngx_strchr(value[i].data, '=') + 1;
            v.len = value[i].data + value[i].len - v.data;

            size = ngx_parse_offset(&v);
            if (size <= 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid size \"%V\" in \"%V\"",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }

            if (value[i].data[0] == 'q') {
                fmcf->quota = size;

            } else if (size < 1024 * 1024) {
                /* too small for the records: every upload would fail */
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" must be 1m or more in \"%V\"",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;

            } else {
                fmcf->map_size = (size_t) size;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\"",
                           &value[i], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (fmcf->tokenizer.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs tokenizer=MODEL_DIR (the model "
                           "whose tokenizer counts the files' tokens)",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    fmcf->tok = aiserve_tok_load((char *) fmcf->tokenizer.data, err,
                                 sizeof(err));
    if (fmcf->tok == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s in \"%V\"", err,
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        aiserve_tok_free(fmcf->tok);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_aiserve_files_tok_cleanup;
    cln->data = fmcf->tok;

    return NGX_CONF_OK;
}


/* aiserve_files [thread_pool=NAME] */
static char *
ngx_http_aiserve_files(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_files_loc_conf_t  *flcf = conf;

    ngx_str_t                           *value;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_aiserve_files_main_conf_t  *fmcf;

    if (flcf->enable) {
        return "is duplicate";
    }

    fmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_aiserve_files_module);
    if (fmcf->dir.data == NULL) {
        return "needs \"aiserve_files_store\" before it in the http block";
    }

    value = cf->args->elts;
    ngx_str_set(&flcf->thread_pool_name, "default");

    if (cf->args->nelts == 2) {
        if (ngx_strncmp(value[1].data, "thread_pool=", 12) != 0
            || value[1].len == 12)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in \"%V\"",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }

        flcf->thread_pool_name.data = value[1].data + 12;
        flcf->thread_pool_name.len = value[1].len - 12;
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

    flcf->thread_pool = ngx_thread_pool_add(cf, &flcf->thread_pool_name);
    if (flcf->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    flcf->enable = 1;
    clcf->handler = ngx_http_aiserve_files_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_aiserve_files_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_aiserve_files_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_aiserve_files_body_filter;

    return NGX_OK;
}


/* Gives path to the workers' user when the master runs as root. */
static ngx_int_t
ngx_http_aiserve_files_chown(ngx_cycle_t *cycle, u_char *path)
{
    ngx_core_conf_t  *ccf;

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    if (geteuid() == 0
        && ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT
        && chown((char *) path, ccf->user, ccf->group) == -1
        && ngx_errno != NGX_ENOENT)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "aiserve_files_store: chown(\"%s\") failed", path);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Master, at a start or a reload (not for nginx -t or -s): the directory
 * and its meta/ exist and belong to the workers' user.  At the first start
 * (no worker can be using the store) it also repairs what a killed worker
 * left (aiserve_files_recover()), the master's LMDB handle closed before
 * any fork.
 */
/* The notice of a store migrated by aiserve_files_open(). */
static void
ngx_http_aiserve_files_log_migrated(ngx_log_t *log, size_t migrated)
{
    if (migrated) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "aiserve files: the store migrated to version %d "
                      "(%uz records)", AISERVE_FILES_VERSION, migrated);
    }
}


static ngx_int_t
ngx_http_aiserve_files_init_module(ngx_cycle_t *cycle)
{
    char                                 err[512];
    u_char                              *paths[4], *p;
    size_t                               removed, interrupted, migrated;
    ngx_int_t                            rc;
    ngx_uint_t                           i;
    aiserve_files_t                     *fs;
    ngx_http_aiserve_files_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_aiserve_files_module);
    if (fmcf == NULL || fmcf->dir.data == NULL
        || ngx_test_config || ngx_process == NGX_PROCESS_SIGNALLER)
    {
        return NGX_OK;
    }

    paths[0] = fmcf->dir.data;

    for (i = 1; i < 4; i++) {
        paths[i] = ngx_pnalloc(cycle->pool,
                               fmcf->dir.len + sizeof("/meta/data.mdb"));
        if (paths[i] == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_sprintf(paths[1], "%V/meta%Z", &fmcf->dir);
    ngx_sprintf(paths[2], "%V/meta/data.mdb%Z", &fmcf->dir);
    ngx_sprintf(paths[3], "%V/meta/lock.mdb%Z", &fmcf->dir);

    for (i = 0; i < 2; i++) {
        p = paths[i];

        if (ngx_create_dir(p, 0700) == NGX_FILE_ERROR
            && ngx_errno != NGX_EEXIST)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "aiserve_files_store: mkdir(\"%s\") failed", p);
            return NGX_ERROR;
        }
    }

    if (ngx_is_init_cycle(cycle->old_cycle)) {
        fs = aiserve_files_open((char *) fmcf->dir.data, fmcf->map_size,
                                &migrated, err, sizeof(err));
        rc = fs ? aiserve_files_recover(fs, &removed, &interrupted, err,
                                        sizeof(err))
                : AISERVE_FILES_ERROR;
        aiserve_files_close(fs);

        if (rc != AISERVE_FILES_OK) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "aiserve_files_store: %s", err);
            return NGX_ERROR;
        }

        ngx_http_aiserve_files_log_migrated(cycle->log, migrated);

        if (removed || interrupted) {
            ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                          "aiserve files: removed %uz partial uploads, "
                          "%uz uploads marked interrupted", removed,
                          interrupted);
        }
    }

    for (i = 0; i < 4; i++) {
        if (ngx_http_aiserve_files_chown(cycle, paths[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_aiserve_files_init_process(ngx_cycle_t *cycle)
{
    char                                 err[512];
    size_t                               migrated;
    ngx_http_aiserve_files_main_conf_t  *fmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_aiserve_files_module);
    if (fmcf == NULL || fmcf->dir.data == NULL) {
        return NGX_OK;
    }

    /* LMDB never crosses fork(): each worker opens its own environment;
     * one that cannot answers 503 files_unavailable */
    ngx_http_aiserve_files_store_handle =
        aiserve_files_open((char *) fmcf->dir.data, fmcf->map_size,
                           &migrated, err, sizeof(err));

    if (ngx_http_aiserve_files_store_handle == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "aiserve files: %s; the files API answers 503", err);
    }

    ngx_http_aiserve_files_log_migrated(cycle->log, migrated);

    return NGX_OK;
}


static void
ngx_http_aiserve_files_exit_process(ngx_cycle_t *cycle)
{
    aiserve_files_close(ngx_http_aiserve_files_store_handle);
    ngx_http_aiserve_files_store_handle = NULL;
}
