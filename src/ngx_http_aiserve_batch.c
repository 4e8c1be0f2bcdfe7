/*
 * Per-worker batching and the thread-pool offload.
 *
 * Each model has, in each worker, a FIFO of tokenized requests and at most
 * one batch in flight.  A batch takes whole sequences from the head of the
 * queue until the next one would exceed aiserve_max_batch_tokens, copies
 * their token ids into plain malloc'ed arrays and is posted to the nginx
 * thread pool (as the file cache posts its reads).  The thread runs the
 * packed, padding-free forward pass on that memory only.  The completion
 * handler, back on the event loop, copies each request's outputs into its
 * pool, starts the next batch and resumes the requests that are complete.
 *
 * A request waiting in the queue or in a batch has r->main->blocked and
 * r->aio set, so nginx does not free it if the client goes away; it is
 * finalized (and closed) when its work completes.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <time.h>

#include "ngx_http_aiserve_infer.h"


/* re-armed as long as the batch runs */
#define NGX_HTTP_AISERVE_GUARD  600000


typedef struct {
    ngx_http_aiserve_ctx_t     *ctx;
    ngx_uint_t                  first;      /* first sequence of ctx */
    ngx_uint_t                  count;
    size_t                      tokens;
} ngx_http_aiserve_segment_t;


struct ngx_http_aiserve_batch_s {
    ngx_http_aiserve_model_t   *model;      /* event loop only */
    ngx_thread_task_t          *task;

    /* a timer while the batch is in flight: a worker that shuts down
     * gracefully (reload) waits for timers, not for thread tasks */
    ngx_event_t                 guard;

    /* read by the thread */
    const aiserve_model_t      *engine;
    const aiserve_model_t     **heads;      /* [max_tokens]: the model of
                                               each sequence */
    ngx_uint_t                  mixed;      /* heads other than engine's:
                                               one encoder pass, their
                                               heads */
    size_t                      max_tokens;
    int32_t                    *input_ids;
    int32_t                    *token_type_ids;
    size_t                     *seq_lens;
    size_t                      n_seqs;
    size_t                      n_tokens;
    ngx_uint_t                  hidden;     /* token embeddings, no head */

    /* written by the thread */
    aiserve_scratch_t          *scratch;
    float                      *out;
    size_t                      out_cap;    /* floats */
    int                         rc;
    ngx_msec_int_t              usec;
    char                        err[NGX_HTTP_AISERVE_ERRLEN];

    ngx_http_aiserve_segment_t *segs;
    ngx_uint_t                  n_segs;
};


static ngx_http_aiserve_batch_t *ngx_http_aiserve_batch_create(
    ngx_http_aiserve_model_t *m);
static void ngx_http_aiserve_dispatch(ngx_http_aiserve_model_t *m);
static void ngx_http_aiserve_batch_thread(void *data, ngx_log_t *log);
static void ngx_http_aiserve_batch_done(ngx_event_t *ev);
static void ngx_http_aiserve_queue_timeout(ngx_event_t *ev);
static void ngx_http_aiserve_guard(ngx_event_t *ev);
static void ngx_http_aiserve_resume(ngx_http_aiserve_ctx_t *ctx);
static void ngx_http_aiserve_resume_handler(ngx_http_request_t *r);
static void ngx_http_aiserve_dequeue(ngx_http_aiserve_ctx_t *ctx);
static ngx_msec_int_t ngx_http_aiserve_usec(void);
static size_t ngx_http_aiserve_seq_out(const aiserve_model_info_t *info,
    size_t n_tokens);


/*
 * Frees the worker's batch memory of a model at exit_process (nginx's
 * thread pools, a core module, have joined their threads by then), or of
 * an idle fine-tuned model (no batch in flight).
 */

void
ngx_http_aiserve_batch_free(ngx_http_aiserve_model_t *m)
{
    ngx_http_aiserve_batch_t  *b;

    b = m->batch;
    if (b == NULL) {
        return;
    }

    if (b->scratch) {
        aiserve_scratch_free(b->scratch);
    }

    ngx_free(b->input_ids);
    ngx_free(b->token_type_ids);
    ngx_free(b->seq_lens);
    ngx_free(b->segs);
    ngx_free(b->heads);
    ngx_free(b->out);
    ngx_free(b->task);
    ngx_free(b);

    m->batch = NULL;
}


/* Floats of the output of one sequence of n_tokens (not hidden). */
static size_t
ngx_http_aiserve_seq_out(const aiserve_model_info_t *info, size_t n_tokens)
{
    switch (info->arch) {
    case AISERVE_ARCH_BERT_MODEL:
        return info->hidden_size;
    case AISERVE_ARCH_SEQUENCE_CLASSIFICATION:
        return info->num_labels;
    default:
        return info->num_labels * n_tokens;
    }
}


static ngx_msec_int_t
ngx_http_aiserve_usec(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (ngx_msec_int_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


ngx_int_t
ngx_http_aiserve_enqueue(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx)
{
    ngx_http_aiserve_model_t  *m;

    /* a head model over a base joins the base's queue */
    m = ctx->model->runs_on ? ctx->model->runs_on : ctx->model;
    ctx->queue_model = m;

    if (m->queued >= m->amcf->max_queue) {
        ngx_log_error(ctx->alcf->log_level, r->connection->log, 0,
                      "aiserve: queue of model \"%V\" is full (%ui requests)",
                      &m->name, m->queued);
        return NGX_DECLINED;
    }

    ngx_queue_insert_tail(&m->queue, &ctx->queue);
    m->queued++;
    ctx->queued = 1;
    ngx_http_aiserve_metrics_queue(m);
    ctx->enqueued_usec = ngx_http_aiserve_usec();

    /* aiserve_queue_timeout 0: no timeout, aiserve_max_queue and
     * aiserve_max_request_tokens bound the wait */

    if (ctx->alcf->queue_timeout) {
        ctx->timer.handler = ngx_http_aiserve_queue_timeout;
        ctx->timer.data = ctx;
        ctx->timer.log = r->connection->log;
        ngx_add_timer(&ctx->timer, ctx->alcf->queue_timeout);
    }

    r->main->blocked++;
    r->aio = 1;
    ctx->waiting = 1;
    r->write_event_handler = ngx_http_aiserve_resume_handler;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "aiserve enqueue: %ui sequences, %ui tokens, "
                   "%ui requests queued",
                   ctx->n_seqs, ctx->prompt_tokens, m->queued);

    ngx_http_aiserve_dispatch(m);

    return NGX_OK;
}


static ngx_http_aiserve_batch_t *
ngx_http_aiserve_batch_create(ngx_http_aiserve_model_t *m)
{
    size_t                     n;
    ngx_thread_task_t         *task;
    ngx_http_aiserve_batch_t  *b;

    b = ngx_calloc(sizeof(ngx_http_aiserve_batch_t), ngx_cycle->log);
    if (b == NULL) {
        return NULL;
    }

    n = m->amcf->max_batch_tokens;

    b->model = m;
    b->engine = m->model;
    b->max_tokens = n;
    b->input_ids = ngx_alloc(n * sizeof(int32_t), ngx_cycle->log);
    b->token_type_ids = ngx_alloc(n * sizeof(int32_t), ngx_cycle->log);
    b->seq_lens = ngx_alloc(n * sizeof(size_t), ngx_cycle->log);
    b->segs = ngx_alloc(n * sizeof(ngx_http_aiserve_segment_t),
                        ngx_cycle->log);
    b->heads = ngx_alloc(n * sizeof(aiserve_model_t *), ngx_cycle->log);

    /* not from the cycle's pool: the batch of a fine-tuned model is freed
     * when it is idle and made again (ngx_http_aiserve_deploy.c) */
    task = ngx_calloc(sizeof(ngx_thread_task_t), ngx_cycle->log);

    if (b->input_ids == NULL || b->token_type_ids == NULL
        || b->seq_lens == NULL || b->segs == NULL || b->heads == NULL
        || task == NULL)
    {
        /* a worker that cannot allocate this keeps it for a retry */
        ngx_free(b->input_ids);
        ngx_free(b->token_type_ids);
        ngx_free(b->seq_lens);
        ngx_free(b->segs);
        ngx_free(b->heads);
        ngx_free(task);
        ngx_free(b);
        return NULL;
    }

    task->ctx = b;
    task->handler = ngx_http_aiserve_batch_thread;
    task->event.handler = ngx_http_aiserve_batch_done;
    task->event.data = b;
    task->event.log = ngx_cycle->log;
    b->task = task;

    b->guard.handler = ngx_http_aiserve_guard;
    b->guard.data = b;
    b->guard.log = ngx_cycle->log;

    return b;
}


static void
ngx_http_aiserve_dispatch(ngx_http_aiserve_model_t *m)
{
    size_t                       out_len;
    ngx_uint_t                   first;
    ngx_queue_t                 *q, *next;
    ngx_msec_int_t               now;
    ngx_http_aiserve_seq_t      *seq;
    ngx_http_aiserve_ctx_t      *ctx, *failed;
    ngx_http_aiserve_batch_t    *b;
    ngx_http_aiserve_segment_t  *seg;

    if (m->busy || ngx_queue_empty(&m->queue)) {
        return;
    }

    if (m->batch == NULL) {
        m->batch = ngx_http_aiserve_batch_create(m);
        if (m->batch == NULL) {
            goto fail;
        }
    }

    b = m->batch;
    b->n_seqs = 0;
    b->n_tokens = 0;
    b->n_segs = 0;
    b->mixed = 0;
    out_len = 0;
    b->rc = 0;
    b->err[0] = '\0';

    /* a batch runs one kind of pass: the head's, or the hidden states */
    ctx = ngx_queue_data(ngx_queue_head(&m->queue), ngx_http_aiserve_ctx_t,
                         queue);
    b->hidden = ctx->hidden;

    now = ngx_http_aiserve_usec();

    for (q = ngx_queue_head(&m->queue);
         q != ngx_queue_sentinel(&m->queue);
         q = next)
    {
        next = ngx_queue_next(q);
        ctx = ngx_queue_data(q, ngx_http_aiserve_ctx_t, queue);

        if (ctx->hidden != b->hidden) {
            break;
        }

        first = ctx->next_seq;
        seg = &b->segs[b->n_segs];
        seg->ctx = ctx;
        seg->first = first;
        seg->count = 0;
        seg->tokens = 0;

        while (ctx->next_seq < ctx->n_seqs) {
            seq = &ctx->seqs[ctx->next_seq];

            if (b->n_tokens + seq->n_tokens > b->max_tokens) {
                break;
            }

            ngx_memcpy(b->input_ids + b->n_tokens, seq->input_ids,
                       seq->n_tokens * sizeof(int32_t));

            if (seq->token_type_ids) {
                ngx_memcpy(b->token_type_ids + b->n_tokens,
                           seq->token_type_ids,
                           seq->n_tokens * sizeof(int32_t));

            } else {
                ngx_memzero(b->token_type_ids + b->n_tokens,
                            seq->n_tokens * sizeof(int32_t));
            }

            b->heads[b->n_seqs] = ctx->model->model;
            b->mixed |= (ctx->model->model != m->model);
            out_len += b->hidden
                       ? seq->n_tokens * m->info->hidden_size
                       : ngx_http_aiserve_seq_out(ctx->model->info,
                                                  seq->n_tokens);
            b->seq_lens[b->n_seqs++] = seq->n_tokens;
            b->n_tokens += seq->n_tokens;
            seg->count++;
            seg->tokens += seq->n_tokens;
            ctx->next_seq++;
        }

        if (seg->count == 0) {
            break;
        }

        b->n_segs++;

        if (first == 0) {
            ctx->queue_usec = now - ctx->enqueued_usec;

            if (ctx->timer.timer_set) {
                ngx_del_timer(&ctx->timer);
            }
        }

        if (ctx->next_seq < ctx->n_seqs) {
            break;
        }

        ngx_http_aiserve_dequeue(ctx);
    }

    if (out_len > b->out_cap) {
        ngx_free(b->out);
        b->out_cap = 0;
        b->out = ngx_alloc(out_len * sizeof(float), ngx_cycle->log);
        if (b->out == NULL) {
            goto fail_batch;
        }

        b->out_cap = out_len;
    }

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "aiserve batch \"%V\": %uz sequences, %uz tokens, "
                   "%ui requests%s", &m->name, b->n_seqs, b->n_tokens,
                   b->n_segs,
                   b->mixed ? ", heads of fine-tuned models: one encoder "
                              "pass" : "");

    if (ngx_thread_task_post(m->amcf->thread_pool, b->task) != NGX_OK) {
        goto fail_batch;
    }

    m->busy = 1;
    ngx_add_timer(&b->guard, NGX_HTTP_AISERVE_GUARD);

    return;

fail_batch:

    /* the requests of this batch, and all queued ones, get a 503 */

    for (seg = b->segs; seg < b->segs + b->n_segs; seg++) {
        if (seg->ctx->queued) {
            ngx_http_aiserve_dequeue(seg->ctx);
        }
    }

    failed = NULL;

    for (seg = b->segs; seg < b->segs + b->n_segs; seg++) {
        seg->ctx->next_done = failed;
        failed = seg->ctx;
    }

    b->n_segs = 0;
    goto fail_all;

fail:

    failed = NULL;

fail_all:

    while (!ngx_queue_empty(&m->queue)) {
        ctx = ngx_queue_data(ngx_queue_head(&m->queue),
                             ngx_http_aiserve_ctx_t, queue);
        ngx_http_aiserve_dequeue(ctx);

        if (ctx->timer.timer_set) {
            ngx_del_timer(&ctx->timer);
        }

        ctx->next_done = failed;
        failed = ctx;
    }

    while (failed) {
        ctx = failed;
        failed = ctx->next_done;

        ctx->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ctx->err_type = "server_error";
        ctx->err_code = "overloaded";
        ctx->err_msg = "the inference thread pool is overloaded";

        ngx_http_aiserve_resume(ctx);
    }
}


static void
ngx_http_aiserve_dequeue(ngx_http_aiserve_ctx_t *ctx)
{
    if (!ctx->queued) {
        return;
    }

    ngx_queue_remove(&ctx->queue);
    ctx->queued = 0;
    ctx->queue_model->queued--;
    ngx_http_aiserve_metrics_queue(ctx->queue_model);
}


/* Runs in a thread of the pool: plain memory only. */

static void
ngx_http_aiserve_batch_thread(void *data, ngx_log_t *log)
{
    ngx_http_aiserve_batch_t *b = data;

    aiserve_batch_t  in;
    ngx_msec_int_t   start;

    start = ngx_http_aiserve_usec();

    if (b->scratch == NULL) {
        b->scratch = aiserve_scratch_create(b->engine, b->max_tokens,
                                            b->err, sizeof(b->err));
        if (b->scratch == NULL) {
            b->rc = -1;
            return;
        }
    }

    in.input_ids = b->input_ids;
    in.token_type_ids = b->token_type_ids;
    in.seq_lens = b->seq_lens;
    in.n_seqs = b->n_seqs;

    if (b->hidden) {
        b->rc = aiserve_model_forward_hidden(b->engine, &in, b->scratch,
                                             b->out, b->err, sizeof(b->err));

    } else if (b->mixed) {
        /* many tenants, one encoder */
        b->rc = aiserve_model_forward_heads(b->engine, b->heads, &in,
                                            b->scratch, b->out, b->err,
                                            sizeof(b->err));

    } else {
        b->rc = aiserve_model_forward(b->engine, &in, b->scratch, b->out,
                                      b->err, sizeof(b->err));
    }

    b->usec = ngx_http_aiserve_usec() - start;
}


/* The batch is back on the event loop. */

static void
ngx_http_aiserve_batch_done(ngx_event_t *ev)
{
    ngx_http_aiserve_batch_t *b = ev->data;

    size_t                       n;
    float                       *src;
    ngx_uint_t                   i;
    ngx_http_aiserve_seq_t      *seq;
    ngx_http_aiserve_ctx_t      *ctx, *done;
    ngx_http_aiserve_model_t    *m;
    ngx_http_aiserve_segment_t  *seg;
    const aiserve_model_info_t  *info;

    m = b->model;
    m->busy = 0;

    if (b->guard.timer_set) {
        ngx_del_timer(&b->guard);
    }

    src = b->out;
    done = NULL;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "aiserve batch \"%V\" done: rc %d, %uz sequences, %M us",
                   &m->name, b->rc, b->n_seqs, b->usec);

    m->failed = (b->rc != 0);

    if (b->rc == 0) {
        ngx_http_aiserve_metrics_batch(m, b->n_seqs, b->n_tokens);
    }

    if (b->rc != 0) {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "aiserve: forward pass of model \"%V\" failed: %s",
                      &m->name, b->err);
    }

    for (seg = b->segs; seg < b->segs + b->n_segs; seg++) {
        ctx = seg->ctx;

        ctx->batch_size = b->n_seqs;
        ctx->infer_usec += b->usec;

        if (b->n_tokens) {
            ctx->compute_usec += b->usec * seg->tokens / b->n_tokens;
        }

        if (b->rc != 0) {
            if (ctx->status == 0) {
                ctx->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
                ctx->err_type = "server_error";
                ctx->err_code = "inference_failed";
                ctx->err_msg = "the forward pass failed";
            }

            ngx_http_aiserve_dequeue(ctx);

        } else {
            /* the request's own model: a head model's outputs in a batch
             * of its base */
            info = ctx->model->info;

            for (i = seg->first; i < seg->first + seg->count; i++) {
                seq = &ctx->seqs[i];

                n = b->hidden ? info->hidden_size * seq->n_tokens
                              : ngx_http_aiserve_seq_out(info, seq->n_tokens);

                ngx_memcpy(ctx->out + seq->out_off, src, n * sizeof(float));
                src += n;
            }
        }

        ctx->done_seqs += seg->count;

        if (!ctx->queued
            && (ctx->status || ctx->done_seqs == ctx->n_seqs))
        {
            ctx->next_done = done;
            done = ctx;
        }
    }

    b->n_segs = 0;

    ngx_http_aiserve_dispatch(m);

    while (done) {
        ctx = done;
        done = ctx->next_done;
        ngx_http_aiserve_resume(ctx);
    }
}


static void
ngx_http_aiserve_guard(ngx_event_t *ev)
{
    ngx_http_aiserve_batch_t *b = ev->data;

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "aiserve: a batch of model \"%V\" has run for %M ms",
                  &b->model->name, (ngx_msec_t) NGX_HTTP_AISERVE_GUARD);

    ngx_add_timer(ev, NGX_HTTP_AISERVE_GUARD);
}


static void
ngx_http_aiserve_queue_timeout(ngx_event_t *ev)
{
    ngx_http_aiserve_ctx_t *ctx = ev->data;

    ngx_log_error(ctx->alcf->log_level, ev->log, 0,
                  "aiserve: request waited more than %M ms in the queue of "
                  "model \"%V\"", ctx->alcf->queue_timeout, &ctx->model->name);

    ngx_http_aiserve_dequeue(ctx);

    ctx->queue_usec = ngx_http_aiserve_usec() - ctx->enqueued_usec;
    ctx->status = NGX_HTTP_SERVICE_UNAVAILABLE;
    ctx->err_type = "server_error";
    ctx->err_code = "queue_timeout";
    ctx->err_msg = "the request waited too long in the inference queue";

    ngx_http_aiserve_resume(ctx);
}


/* As the file cache does after a thread read: unblock, run the request's
 * write handler (ours, or nginx's finalizer if it was terminated), then the
 * posted requests of the connection. */

static void
ngx_http_aiserve_resume(ngx_http_aiserve_ctx_t *ctx)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    if (ctx->timer.timer_set) {
        ngx_del_timer(&ctx->timer);
    }

    if (!ctx->waiting) {
        return;
    }

    ctx->waiting = 0;
    r->main->blocked--;
    r->aio = 0;

    r->write_event_handler(r);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_aiserve_resume_handler(ngx_http_request_t *r)
{
    ngx_http_aiserve_ctx_t  *ctx;

    if (r->aio) {
        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_module);

    if (ctx == NULL || ctx->waiting) {
        return;
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_http_aiserve_finish(r, ctx);
}


void
ngx_http_aiserve_finish(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx)
{
    ngx_int_t                 rc;
    ngx_http_aiserve_json_t   j;

    ctx->done = 1;

    if (ctx->status) {
        if (ctx->status == NGX_HTTP_SERVICE_UNAVAILABLE
            && ngx_http_aiserve_retry_after(r, ctx->alcf->retry_after
                                               ? ctx->alcf->retry_after : 1)
               != NGX_OK)
        {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }

        rc = ngx_http_aiserve_send_error(r, ctx->status, ctx->err_type,
                                         ctx->err_code, NULL, "%s",
                                         ctx->err_msg);
        if (ctx->admitted) {
            ngx_http_aiserve_meter_settle(r, ctx->compute_usec,
                                          ctx->bytes_in,
                                          r->headers_out.content_length_n,
                                          1);
        }

        ngx_http_finalize_request(r, rc);
        return;
    }

    ngx_http_aiserve_json_init(&j, r->pool, 4096);

    if (ngx_http_aiserve_api_respond(r, ctx, &j) != NGX_OK || j.failed) {
        ctx->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        ctx->err_type = "server_error";
        ctx->err_code = "internal_error";
        ctx->err_msg = "cannot build the response";
        ngx_http_aiserve_finish(r, ctx);
        return;
    }

    if (ctx->admitted) {
        ngx_http_aiserve_meter_settle(r, ctx->compute_usec, ctx->bytes_in,
                                      j.pos - j.start, 0);
    }

    ngx_http_finalize_request(r, ngx_http_aiserve_send_json(r, NGX_HTTP_OK,
                                                            &j, NULL));
}
