/*
 * Internal declarations of the aiserve inference handler, shared by
 * ngx_http_aiserve_module.c (directives, models, handler),
 * ngx_http_aiserve_api.c (request shapes and responses),
 * ngx_http_aiserve_batch.c (per-worker queues, thread-pool batches); the
 * JSON writer and error sender are in ngx_http_aiserve_json.h.
 */
#ifndef NGX_HTTP_AISERVE_INFER_H
#define NGX_HTTP_AISERVE_INFER_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_aiserve_json.h"
#include "ngx_http_aiserve_metrics.h"
#include "ngx_http_aiserve.h"
#include "aiserve_tokenizer.h"
#include "aiserve_model.h"
#include "aiserve_pipeline.h"


#define NGX_HTTP_AISERVE_TASK_EMBED     0
#define NGX_HTTP_AISERVE_TASK_CLASSIFY  1
#define NGX_HTTP_AISERVE_TASK_NER       2
#define NGX_HTTP_AISERVE_TASK_RERANK    3

#define NGX_HTTP_AISERVE_API_OPENAI     0
#define NGX_HTTP_AISERVE_API_EMBED      1
#define NGX_HTTP_AISERVE_API_PREDICT    2
#define NGX_HTTP_AISERVE_API_RERANK     3
#define NGX_HTTP_AISERVE_API_TOKENIZE   4
#define NGX_HTTP_AISERVE_API_NER        5
#define NGX_HTTP_AISERVE_API_DECODE     6
#define NGX_HTTP_AISERVE_API_SIMILARITY 7
#define NGX_HTTP_AISERVE_API_EMBED_ALL  8
#define NGX_HTTP_AISERVE_API_INFO       9
/* TEI's POST /: the model's own route, chosen per request */
#define NGX_HTTP_AISERVE_API_TEI        10

/* the number of api= values, for tables indexed by them */
#define NGX_HTTP_AISERVE_N_APIS         11

/* aiserve_endpoint and api=info: the GET routes (ngx_http_aiserve_status.c) */
#define NGX_HTTP_AISERVE_ENDPOINT_NONE     0
#define NGX_HTTP_AISERVE_ENDPOINT_HEALTH   1
#define NGX_HTTP_AISERVE_ENDPOINT_MODELS   2
#define NGX_HTTP_AISERVE_ENDPOINT_METRICS  3
#define NGX_HTTP_AISERVE_ENDPOINT_INFO     4

/* reported by TEI's /info */
#define NGX_HTTP_AISERVE_VERSION        "0.9.0"

#define NGX_HTTP_AISERVE_ERRLEN         256


typedef struct ngx_http_aiserve_model_s  ngx_http_aiserve_model_t;
typedef struct ngx_http_aiserve_batch_s  ngx_http_aiserve_batch_t;
typedef struct ngx_http_aiserve_ctx_s    ngx_http_aiserve_ctx_t;
typedef struct ngx_http_aiserve_metrics_s  ngx_http_aiserve_metrics_t;
typedef struct ngx_http_aiserve_model_metrics_s
    ngx_http_aiserve_model_metrics_t;


typedef struct {
    ngx_array_t                 models;     /* ngx_http_aiserve_model_t * */
    ngx_str_t                   thread_pool_name;
    ngx_thread_pool_t          *thread_pool;
    size_t                      max_batch_tokens;
    ngx_uint_t                  max_queue;
    ngx_int_t                   threads;
    ngx_http_aiserve_metrics_t *metrics;    /* the shared zone's context */
    u_char                     *ft_root;    /* its models/, NUL-terminated;
                                               NULL: no registry */
    ngx_str_t                   gpu_library; /* aiserve_gpu_library */
} ngx_http_aiserve_main_conf_t;


typedef struct {
    ngx_str_t                   model_name;
    ngx_http_aiserve_model_t   *model;
    ngx_uint_t                  api;
    ngx_uint_t                  endpoint;   /* aiserve_endpoint, api=info */
    u_char                     *file;       /* of aiserve_infer */
    ngx_uint_t                  line;
    ngx_uint_t                  max_inputs;
    ngx_uint_t                  max_request_tokens;
    ngx_msec_t                  queue_timeout;
    ngx_uint_t                  retry_after;
    ngx_uint_t                  log_level;  /* of 503s for overload */
} ngx_http_aiserve_loc_conf_t;


/*
 * One aiserve_model: loaded in the master while nginx reads its
 * configuration, freed with the cycle's pool.  The fields after "per
 * worker" are used by the event loop of one worker process only (each
 * worker has its own copy after fork()).
 */
struct ngx_http_aiserve_model_s {
    ngx_str_t                        name;
    ngx_str_t                        path;       /* NUL-terminated */
    ngx_uint_t                       task;
    size_t                           max_seq;    /* tokens */
    ngx_flag_t                       truncate;
    aiserve_tok_t                   *tok;
    aiserve_model_t                 *model;
    const aiserve_model_info_t      *info;
    ngx_http_aiserve_main_conf_t    *amcf;
    time_t                           created;    /* loaded, Unix time */
    ngx_http_aiserve_model_metrics_t *metrics;   /* its slot in the zone,
                                                    NULL: none left */

    /* per worker */
    ngx_queue_t                      queue;      /* waiting requests */
    ngx_uint_t                       queued;
    ngx_http_aiserve_batch_t        *batch;      /* the one in flight */
    ngx_flag_t                       busy;
    ngx_flag_t                       failed;     /* the last batch failed */

    /* a fine-tuned model of the registry (ngx_http_aiserve_deploy.c):
     * loaded by one worker, over or beside its base */
    ngx_http_aiserve_model_t        *base;       /* NULL: an aiserve_model */
    ngx_http_aiserve_model_t        *runs_on;    /* a head over base: its
                                                    requests join base's
                                                    queue and encoder pass;
                                                    NULL: its own */
    ngx_str_t                        owner;      /* "acct_N" */
    ngx_str_t                        mode;       /* full, head, lora */
    ngx_queue_t                      link;       /* the worker's list */
    ngx_uint_t                       refs;       /* requests using it */
    ngx_flag_t                       retired;    /* removed: freed once
                                                    idle */
};


/* The allocator of a request's parsing: SIZE bytes, NULL when out of
 * memory; nothing is freed before the request ends (the module: its
 * pool). */
typedef void *(*ngx_http_aiserve_alloc_pt)(void *data, size_t size);

/* Reads SIZE bytes at OFFSET of FILE into BUF: the bytes read, -1 on an
 * error (the module: ngx_read_file()). */
typedef ssize_t (*ngx_http_aiserve_read_file_pt)(ngx_file_t *file,
    u_char *buf, size_t size, off_t offset);

/* U+10FFFF, which stands for each invalid byte of a repaired body */
#define NGX_HTTP_AISERVE_UTF8_MARK  "\xf4\x8f\xbf\xbf"


#define NGX_HTTP_AISERVE_PARAMLEN  64


/* A request refused by its parsing (ngx_http_aiserve_request.c). */
typedef struct {
    ngx_uint_t                       status;     /* 0: none */
    const char                      *code;       /* "invalid_type" */
    char                            *param;      /* NULL: none */
    char                             message[NGX_MAX_ERROR_STR];
} ngx_http_aiserve_error_t;


/* One input sequence of a request. */
typedef struct {
    const int32_t                   *input_ids;
    const int32_t                   *token_type_ids;   /* NULL: all 0 */
    size_t                           n_tokens;
    aiserve_encoding_t              *enc;        /* NULL for id input */
    const char                      *text;       /* UTF-8, for NER */
    size_t                           text_len;
    size_t                           out_off;    /* floats into ctx->out */
} ngx_http_aiserve_seq_t;


struct ngx_http_aiserve_ctx_s {
    ngx_http_request_t              *request;
    ngx_http_aiserve_model_t        *model;
    ngx_http_aiserve_loc_conf_t     *alcf;
    json_t                          *doc;

    ngx_http_aiserve_seq_t          *seqs;
    ngx_uint_t                       n_seqs;
    ngx_uint_t                       next_seq;   /* first not dispatched */
    ngx_uint_t                       done_seqs;
    float                           *out;
    size_t                           out_len;    /* floats */

    ngx_queue_t                      queue;
    ngx_http_aiserve_model_t        *queue_model;  /* whose queue */
    ngx_event_t                      timer;

    ngx_http_aiserve_ctx_t          *next_done;
    ngx_msec_int_t                   enqueued_usec;
    ngx_msec_int_t                   queue_usec;
    ngx_msec_int_t                   infer_usec;
    ngx_msec_int_t                   compute_usec;  /* share charged */
    ngx_uint_t                       batch_size;
    ngx_uint_t                       prompt_tokens;
    off_t                            bytes_in;

    ngx_http_aiserve_alloc_pt        alloc;      /* of the parsing */
    void                            *alloc_data;
    ngx_http_aiserve_error_t         error;      /* the parsing's refusal */

    ngx_int_t                        rc;         /* to finalize with */
    ngx_str_t                        page;       /* JSON for nginx's own
                                                    error pages */
    ngx_uint_t                       status;     /* error after queueing */
    const char                      *err_type;
    const char                      *err_code;
    const char                      *err_msg;

    /* request parameters */
    ngx_uint_t                       api;        /* the shape answered */
    ngx_int_t                        dimensions;     /* 0: all */
    ngx_int_t                        top_k;          /* -1: all */
    ngx_uint_t                       fn;
    ngx_uint_t                       aggregation;
    ngx_uint_t                       n_texts;        /* rerank */

    unsigned                         single:1;
    unsigned                         base64:1;
    unsigned                         normalize:1;
    unsigned                         truncate_left:1;
    unsigned                         legacy:1;       /* predict: no top_k */
    unsigned                         return_text:1;
    unsigned                         raw_scores:1;
    unsigned                         add_special:1;
    unsigned                         admitted:1;
    unsigned                         queued:1;
    unsigned                         waiting:1;      /* blocked on us */
    unsigned                         done:1;
    unsigned                         repaired:1;     /* invalid UTF-8 */
    unsigned                         rewrite_page:1;
    unsigned                         page_sent:1;
    unsigned                         hidden:1;       /* token embeddings */
    unsigned                         skip_special:1; /* decode */
    unsigned                         fine_tuned:1;   /* ctx->model is the
                                                        registry's */
    unsigned                         hf:1;           /* "parameters" given:
                                                        Hugging Face's
                                                        Inference API */
};


extern ngx_module_t  ngx_http_aiserve_module;

/* the names of the api= values, indexed by NGX_HTTP_AISERVE_API_* */
extern ngx_str_t     ngx_http_aiserve_apis[];


/* ngx_http_aiserve_body.c: no function of nginx is called there */

/*
 * The length of the valid UTF-8 sequence (RFC 3629) that starts at P, of
 * the N > 0 bytes there: 1 to 4, or 0 when P starts none (a continuation
 * byte, an overlong form, a surrogate, a code point above U+10FFFF, a
 * sequence cut short).  An ASCII byte, NUL included, is 1.
 */
size_t ngx_http_aiserve_utf8_seq(const u_char *p, size_t n);

/*
 * Copies LEN bytes of IN to OUT with every byte that starts no valid UTF-8
 * sequence replaced by NGX_HTTP_AISERVE_UTF8_MARK (4 bytes); OUT holds
 * 4 * LEN bytes.  Returns the bytes written: valid UTF-8, equal to IN when
 * IN was valid UTF-8.
 */
size_t ngx_http_aiserve_utf8_repair(u_char *out, const u_char *in,
    size_t len);

/*
 * The request body held by BUFS (nginx's r->request_body->bufs: buffers
 * in memory and parts of the client body temporary file) as one buffer in
 * BODY: a single buffer in memory as it is, else a copy from ALLOC (one
 * byte more than the body) with the file's parts read by READ_FILE.  No
 * BUFS is an empty body.  NGX_OK, NGX_ERROR (ALLOC failed) or NGX_DECLINED
 * (READ_FILE read less than a part: an error, or the file is shorter).
 */
ngx_int_t ngx_http_aiserve_body_join(ngx_chain_t *bufs,
    ngx_http_aiserve_alloc_pt alloc, void *alloc_data,
    ngx_http_aiserve_read_file_pt read_file, ngx_str_t *body);

/*
 * Parses LEN bytes of BODY as the handler does (json_loadb(),
 * JSON_ALLOW_NUL) into *DOC, NULL with ERR set when it is not JSON.  A
 * body jansson refuses for invalid UTF-8 is parsed again as
 * ngx_http_aiserve_utf8_repair() repairs it (a copy from ALLOC) and
 * *REPAIRED is set: the request side then names the field and index that
 * holds the marker (422 invalid_utf8), and an error of that second parse
 * is never one of UTF-8.  NGX_OK, or NGX_ERROR when ALLOC failed.
 */
ngx_int_t ngx_http_aiserve_body_parse(const u_char *body, size_t len,
    ngx_http_aiserve_alloc_pt alloc, void *alloc_data, json_t **doc,
    ngx_uint_t *repaired, json_error_t *err);

/* ngx_http_aiserve_request.c: no function of nginx is called there */

/*
 * The shape of this request (NGX_HTTP_AISERVE_API_*): the location's api=,
 * or for api=tei the route of the model's task, from ctx->alcf, ctx->model
 * and the body ctx->doc.
 */
ngx_uint_t ngx_http_aiserve_route(ngx_http_aiserve_ctx_t *ctx);

/*
 * Merges the Inference API's "parameters" object into the body, then
 * checks the body's field names against the shape ctx->api (422
 * unknown_field).  NGX_OK, or NGX_ERROR with ctx->error set.
 */
ngx_int_t ngx_http_aiserve_parameters(ngx_http_aiserve_ctx_t *ctx);
ngx_int_t ngx_http_aiserve_fields(ngx_http_aiserve_ctx_t *ctx);

/*
 * Validates and tokenizes the inputs of ctx->doc for ctx->api into
 * ctx->seqs, ctx->out_len and ctx->prompt_tokens (ctx->alloc allocates);
 * more than aiserve_max_request_tokens tokens in all is a 422
 * (too_many_tokens).  A refusal sets ctx->error and ctx->done.
 */
void ngx_http_aiserve_request_inputs(ngx_http_aiserve_ctx_t *ctx);

/* Whether a location of api= value API can answer with a model of TASK
 * (NGX_HTTP_AISERVE_TASK_*). */
ngx_uint_t ngx_http_aiserve_api_fits(ngx_uint_t api, ngx_uint_t task);

/*
 * Records a refusal in ctx->error (the first one is kept) and sets
 * ctx->done.  FMT is printf's.
 */
void ngx_http_aiserve_invalid(ngx_http_aiserve_ctx_t *ctx, ngx_uint_t status,
    const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));


/* ngx_http_aiserve_api.c */

/* The module's ngx_http_aiserve_alloc_pt: ngx_palloc() from POOL. */
void *ngx_http_aiserve_pool_alloc(void *pool, size_t size);

/*
 * Validates the parsed body (ctx->doc) for the location's API, tokenizes
 * every input and fills ctx->seqs, ctx->out_len and ctx->prompt_tokens.
 * A request of more than aiserve_max_request_tokens tokens in all is a 422
 * (too_many_tokens) here, before the meter reserves anything.
 * On a bad request it sends the error response, sets ctx->done and leaves
 * in ctx->rc what the request is to be finalized with.
 */
void ngx_http_aiserve_api_prepare(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);

/*
 * Builds the response body of a completed request into out.
 * Returns NGX_OK or NGX_ERROR (memory).
 */
ngx_int_t ngx_http_aiserve_api_respond(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_http_aiserve_json_t *out);


/* ngx_http_aiserve_batch.c */

/*
 * Puts a tokenized request into its model's per-worker queue and starts a
 * batch when none is in flight.  Returns NGX_OK (the request is blocked
 * until ngx_http_aiserve_finish() runs), or NGX_DECLINED when the queue is
 * full (nothing changed; the caller answers 503).
 */
ngx_int_t ngx_http_aiserve_enqueue(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);

/* Frees a model's per-worker batch memory (exit_process; an idle
 * fine-tuned model: no batch in flight). */
void ngx_http_aiserve_batch_free(ngx_http_aiserve_model_t *m);

/* Sends the response (or ctx's error) and finalizes the request. */
void ngx_http_aiserve_finish(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx);


/* ngx_http_aiserve_deploy.c: the fine-tuned models of the registry */

/* Worker start: loads every registered model whose base this
 * configuration serves, and starts the timer that follows the registry's
 * generation (every 250 ms; loads and removals on the thread pool). */
ngx_int_t ngx_http_aiserve_deploy_init_process(ngx_cycle_t *cycle);
void ngx_http_aiserve_deploy_exit_process(ngx_cycle_t *cycle);

/*
 * The fine-tuned model NAME for a request of location model BASE and
 * api= API: one of BASE's, that the caller's account owns (or an admin
 * key calls), of a task API answers.  Takes a reference that
 * ngx_http_aiserve_deploy_release() drops.  NULL when there is none.
 */
ngx_http_aiserve_model_t *ngx_http_aiserve_deploy_find(ngx_http_request_t *r,
    ngx_http_aiserve_model_t *base, ngx_uint_t api, ngx_str_t *name);
void ngx_http_aiserve_deploy_release(ngx_http_aiserve_model_t *m);


/* ngx_http_aiserve_gpu.c: device=gpu (shared/GPU.md) */

/* aiserve_gpu_library PATH: the GPU backend's shared object; it must
 * come before the aiserve_model directives that ask for device=gpu. */
char *ngx_http_aiserve_gpu_library(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/*
 * The "device=gpu[:N]" parameter PARAM of aiserve_model NAME: loads the
 * GPU backend and probes the driver and device N in a child process (the
 * master never initialises CUDA), then says what it found.  Logs an
 * [emerg] naming the directive and the reason and returns NGX_ERROR:
 * the forward pass on the GPU is not built yet, so every outcome is an
 * error today; the message says why (dlopen error, driver or device
 * error, or the device found and the missing forward pass).
 */
ngx_int_t ngx_http_aiserve_gpu_check(ngx_conf_t *cf,
    ngx_http_aiserve_main_conf_t *amcf, ngx_str_t *name, ngx_str_t *param);

/* GET /v1/models: the caller's fine-tuned model after PREV (NULL: the
 * first), NULL after the last; GET /v1/models/ID: the caller's model ID
 * or NULL. */
ngx_http_aiserve_model_t *ngx_http_aiserve_deploy_next(ngx_http_request_t *r,
    ngx_http_aiserve_model_t *prev);
ngx_http_aiserve_model_t *ngx_http_aiserve_deploy_visible(
    ngx_http_request_t *r, ngx_str_t *id);

/* DELETE /v1/models/ID: removes the caller's model ID from the registry
 * (every worker drops it within a second) and sends OpenAI's deleted
 * object, or a 404. */
ngx_int_t ngx_http_aiserve_deploy_delete(ngx_http_request_t *r,
    ngx_str_t *id);


/* ngx_http_aiserve_status.c */

/* Content handler of aiserve_endpoint and api=info locations (GET, HEAD). */
ngx_int_t ngx_http_aiserve_status_handler(ngx_http_request_t *r);

/* The health answer, for GET on an api=tei location (TEI's GET /). */
ngx_int_t ngx_http_aiserve_health_handler(ngx_http_request_t *r);


/* ngx_http_aiserve_metrics.c */

/*
 * Adds the "aiserve_metrics" shared zone (main conf init, when models are
 * loaded); its init maps each model to a slot by name, reusing the
 * previous generation's zone and slots on reload.  NGX_OK or NGX_ERROR.
 */
ngx_int_t ngx_http_aiserve_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_aiserve_main_conf_t *amcf);

/* Log phase: counts a request of an aiserve_infer location. */
ngx_int_t ngx_http_aiserve_metrics_log(ngx_http_request_t *r);

/* A batch came back: n_seqs sequences, n_tokens tokens. */
void ngx_http_aiserve_metrics_batch(ngx_http_aiserve_model_t *m,
    size_t n_seqs, size_t n_tokens);

/* The worker's queue of model m changed (gauge of m->queued). */
void ngx_http_aiserve_metrics_queue(ngx_http_aiserve_model_t *m);

/* GET: the Prometheus text exposition of the zone. */
ngx_int_t ngx_http_aiserve_metrics_handler(ngx_http_request_t *r);

#endif /* NGX_HTTP_AISERVE_INFER_H */
