/*
 * Deployment of fine-tuned models without a reload: every worker serves
 * the models of the registry (src/aiserve_registry.h, DIR/models of
 * aiserve_fine_tuning_store) whose base is one of its aiserve_model's.
 * A head model's requests join its base's queue: a batch runs one encoder
 * pass for the base and all its heads (aiserve_model_forward_heads()).
 *
 * A worker loads the registry at its start (init_process), then a timer
 * reads the registry's generation every 250 ms; when it changed, a task
 * on the thread pool lists the registry and loads the models the worker
 * does not have yet (head and lora over the base's weights with
 * aiserve_model_load_over(), sharing them; full as a model of their own
 * in the base's dtype), and the completion handler, back on the event
 * loop, adds them and retires the removed ones.  A retired model answers
 * no new request and is freed once its queue, its batch and the requests
 * that hold it are done.
 *
 * A fine-tuned model is found by the "model" field of a request to a
 * location of its base, and only for a key of the account that owns it or
 * an admin key (aiserve_meter authenticates it).  Without a key (no
 * aiserve_meter on the location, or dry_run with a bad key) no
 * fine-tuned model is visible: the request is a 404 model_not_found.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_aiserve_infer.h"
#include "ngx_http_aiserve_meter.h"
#include "aiserve_registry.h"


/* how often a worker reads the registry's generation */
#define NGX_HTTP_AISERVE_DEPLOY_EVERY  250

/* re-armed as long as a load runs */
#define NGX_HTTP_AISERVE_DEPLOY_GUARD  60000


typedef struct {
    const char                  *name;      /* the aiserve_model's */
    size_t                       name_len;
    const aiserve_model_t       *model;
} ngx_http_aiserve_deploy_base_t;


typedef struct {
    char                         id[AISERVE_REGISTRY_ID_MAX + 1];
    int64_t                      created_at;
} ngx_http_aiserve_deploy_have_t;


/* plain memory between the event loop and the loading thread */
typedef struct {
    /* in */
    const char                      *root;
    ngx_http_aiserve_deploy_base_t  *bases;
    ngx_uint_t                       n_bases;
    ngx_http_aiserve_deploy_have_t  *have;      /* the worker's models */
    ngx_uint_t                       n_have;

    /* out */
    uint64_t                         generation;
    int                              rc;
    char                             err[NGX_HTTP_AISERVE_ERRLEN];
    aiserve_registry_model_t        *list;      /* malloc()'ed */
    size_t                           n;
    aiserve_model_t                **loaded;    /* [n], NULL: not loaded */
    ngx_uint_t                      *base;      /* [n]: index in bases */
    char                           (*errs)[NGX_HTTP_AISERVE_ERRLEN];
} ngx_http_aiserve_deploy_job_t;


typedef struct {
    ngx_http_aiserve_main_conf_t    *amcf;
    ngx_queue_t                      models;    /* served */
    ngx_queue_t                      retired;
    uint64_t                         generation;
    ngx_event_t                      timer;
    ngx_event_t                      guard;     /* while a load runs: a
                                                   graceful exit waits for
                                                   timers, not for thread
                                                   tasks that write here */
    ngx_thread_task_t               *task;
    ngx_uint_t                       busy;      /* task in flight */
    ngx_http_aiserve_deploy_job_t    job;
    ngx_http_aiserve_deploy_base_t  *bases;
} ngx_http_aiserve_deploy_t;


static void ngx_http_aiserve_deploy_run(ngx_http_aiserve_deploy_job_t *job);
static void ngx_http_aiserve_deploy_thread(void *data, ngx_log_t *log);
static void ngx_http_aiserve_deploy_done(ngx_event_t *ev);
static void ngx_http_aiserve_deploy_apply(ngx_log_t *log);
static void ngx_http_aiserve_deploy_job_free(
    ngx_http_aiserve_deploy_job_t *job);
static ngx_int_t ngx_http_aiserve_deploy_snapshot(ngx_log_t *log);
static void ngx_http_aiserve_deploy_tick(ngx_event_t *ev);
static void ngx_http_aiserve_deploy_guard(ngx_event_t *ev);
static void ngx_http_aiserve_deploy_retire(ngx_http_aiserve_model_t *m);
static void ngx_http_aiserve_deploy_reap(void);
static ngx_int_t ngx_http_aiserve_deploy_caller(ngx_http_request_t *r,
    uint32_t *account, ngx_uint_t *admin);
static ngx_uint_t ngx_http_aiserve_deploy_may(ngx_http_request_t *r,
    const char *owner, size_t len);


/* per worker */
static ngx_http_aiserve_deploy_t  *ngx_http_aiserve_deploy;


ngx_int_t
ngx_http_aiserve_deploy_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_http_aiserve_model_t      **mp;
    ngx_http_aiserve_deploy_t      *d;
    ngx_http_aiserve_main_conf_t   *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_aiserve_module);

    if (amcf == NULL || amcf->ft_root == NULL || amcf->models.nelts == 0) {
        return NGX_OK;
    }

    d = ngx_pcalloc(cycle->pool, sizeof(ngx_http_aiserve_deploy_t));
    if (d == NULL) {
        return NGX_ERROR;
    }

    d->amcf = amcf;
    ngx_queue_init(&d->models);
    ngx_queue_init(&d->retired);

    d->bases = ngx_pcalloc(cycle->pool,
                           amcf->models.nelts
                           * sizeof(ngx_http_aiserve_deploy_base_t));
    if (d->bases == NULL) {
        return NGX_ERROR;
    }

    mp = amcf->models.elts;
    for (i = 0; i < amcf->models.nelts; i++) {
        d->bases[i].name = (const char *) mp[i]->name.data;
        d->bases[i].name_len = mp[i]->name.len;
        d->bases[i].model = mp[i]->model;
    }

    d->task = ngx_thread_task_alloc(cycle->pool, 0);
    if (d->task == NULL) {
        return NGX_ERROR;
    }

    d->task->ctx = &d->job;
    d->task->handler = ngx_http_aiserve_deploy_thread;
    d->task->event.handler = ngx_http_aiserve_deploy_done;
    d->task->event.data = d;
    d->task->event.log = cycle->log;

    d->timer.handler = ngx_http_aiserve_deploy_tick;
    d->timer.data = d;
    d->timer.log = cycle->log;
    d->timer.cancelable = 1;

    d->guard.handler = ngx_http_aiserve_deploy_guard;
    d->guard.data = d;
    d->guard.log = cycle->log;

    ngx_http_aiserve_deploy = d;

    /* the registered models load again at start, before any request */

    if (ngx_http_aiserve_deploy_snapshot(cycle->log) == NGX_OK) {
        ngx_http_aiserve_deploy_run(&d->job);
        ngx_http_aiserve_deploy_apply(cycle->log);
    }

    ngx_add_timer(&d->timer, NGX_HTTP_AISERVE_DEPLOY_EVERY);

    return NGX_OK;
}


void
ngx_http_aiserve_deploy_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t                *q;
    ngx_http_aiserve_model_t   *m;
    ngx_http_aiserve_deploy_t  *d;

    d = ngx_http_aiserve_deploy;
    if (d == NULL) {
        return;
    }

    /* no load is in flight (its guard holds a graceful exit) and no
     * batch (theirs do) */

    while (!ngx_queue_empty(&d->models)) {
        q = ngx_queue_head(&d->models);
        m = ngx_queue_data(q, ngx_http_aiserve_model_t, link);
        ngx_http_aiserve_deploy_retire(m);
    }

    for (q = ngx_queue_head(&d->retired);
         q != ngx_queue_sentinel(&d->retired);
         q = ngx_queue_next(q))
    {
        m = ngx_queue_data(q, ngx_http_aiserve_model_t, link);
        m->refs = 0;
        m->busy = 0;
        m->queued = 0;
    }

    ngx_http_aiserve_deploy_reap();

    ngx_http_aiserve_deploy = NULL;
}


/*
 * Copies what the loading thread needs into d->job: the root, the bases,
 * the ids the worker serves.  NGX_OK, or NGX_ERROR (memory, logged).
 */

static ngx_int_t
ngx_http_aiserve_deploy_snapshot(ngx_log_t *log)
{
    ngx_uint_t                      n;
    ngx_queue_t                    *q;
    ngx_http_aiserve_model_t       *m;
    ngx_http_aiserve_deploy_t      *d;
    ngx_http_aiserve_deploy_job_t  *job;

    d = ngx_http_aiserve_deploy;
    job = &d->job;

    ngx_memzero(job, sizeof(ngx_http_aiserve_deploy_job_t));
    job->root = (const char *) d->amcf->ft_root;
    job->bases = d->bases;
    job->n_bases = d->amcf->models.nelts;

    n = 0;
    for (q = ngx_queue_head(&d->models);
         q != ngx_queue_sentinel(&d->models);
         q = ngx_queue_next(q))
    {
        n++;
    }

    if (n == 0) {
        return NGX_OK;
    }

    job->have = ngx_alloc(n * sizeof(ngx_http_aiserve_deploy_have_t), log);
    if (job->have == NULL) {
        return NGX_ERROR;
    }

    for (q = ngx_queue_head(&d->models);
         q != ngx_queue_sentinel(&d->models);
         q = ngx_queue_next(q))
    {
        m = ngx_queue_data(q, ngx_http_aiserve_model_t, link);
        ngx_memcpy(job->have[job->n_have].id, m->name.data, m->name.len);
        job->have[job->n_have].id[m->name.len] = '\0';
        job->have[job->n_have].created_at = m->created;
        job->n_have++;
    }

    return NGX_OK;
}


/*
 * Lists the registry and loads the models of the job's bases that the
 * worker does not serve.  Plain memory only: runs in a thread of the
 * pool, or in init_process.
 */

static void
ngx_http_aiserve_deploy_run(ngx_http_aiserve_deploy_job_t *job)
{
    size_t                     i;
    ngx_uint_t                 k, b;
    aiserve_registry_model_t  *e;

    if (aiserve_registry_generation(job->root, &job->generation, job->err,
                                    sizeof(job->err)) != 0
        || aiserve_registry_list(job->root, &job->list, &job->n, job->err,
                                 sizeof(job->err)) != 0)
    {
        job->rc = -1;
        return;
    }

    if (job->n == 0) {
        return;
    }

    job->loaded = calloc(job->n, sizeof(aiserve_model_t *));
    job->base = calloc(job->n, sizeof(ngx_uint_t));
    job->errs = calloc(job->n, NGX_HTTP_AISERVE_ERRLEN);

    if (job->loaded == NULL || job->base == NULL || job->errs == NULL) {
        ngx_cpystrn((u_char *) job->err, (u_char *) "out of memory",
                    sizeof(job->err));
        job->rc = -1;
        return;
    }

    for (i = 0; i < job->n; i++) {
        e = &job->list[i];

        for (b = 0; b < job->n_bases; b++) {
            if (job->bases[b].name_len == ngx_strlen(e->base)
                && ngx_strncmp(job->bases[b].name, e->base,
                               job->bases[b].name_len) == 0)
            {
                break;
            }
        }

        if (b == job->n_bases) {
            /* a base another server serves */
            continue;
        }

        job->base[i] = b;

        for (k = 0; k < job->n_have; k++) {
            if (ngx_strcmp(job->have[k].id, e->id) == 0
                && job->have[k].created_at == e->created_at)
            {
                break;
            }
        }

        if (k < job->n_have) {
            continue;
        }

        if (ngx_strcmp(e->mode, "full") == 0) {
            job->loaded[i] = aiserve_model_load_packed(e->dir,
                                 aiserve_model_dtype(job->bases[b].model),
                                 job->errs[i], NGX_HTTP_AISERVE_ERRLEN);

        } else {
            job->loaded[i] = aiserve_model_load_over(job->bases[b].model,
                                 e->dir, job->errs[i],
                                 NGX_HTTP_AISERVE_ERRLEN);
        }

        if (job->loaded[i]
            && aiserve_model_info(job->loaded[i])->vocab_size
               != aiserve_model_info(job->bases[b].model)->vocab_size)
        {
            ngx_sprintf((u_char *) job->errs[i], "its vocab_size differs "
                        "from the base's tokenizer%Z");
            aiserve_model_free(job->loaded[i]);
            job->loaded[i] = NULL;
        }
    }
}


static void
ngx_http_aiserve_deploy_thread(void *data, ngx_log_t *log)
{
    ngx_http_aiserve_deploy_run(data);
}


static void
ngx_http_aiserve_deploy_done(ngx_event_t *ev)
{
    ngx_http_aiserve_deploy_t  *d = ev->data;

    d->busy = 0;

    if (d->guard.timer_set) {
        ngx_del_timer(&d->guard);
    }

    if (ngx_http_aiserve_deploy != d) {
        return;
    }

    ngx_http_aiserve_deploy_apply(ev->log);
}


/*
 * Back on the event loop (or in init_process): adds the loaded models and
 * retires those the registry no longer lists.
 */

static void
ngx_http_aiserve_deploy_apply(ngx_log_t *log)
{
    size_t                          i, k;
    ngx_uint_t                      found;
    ngx_queue_t                    *q, *next;
    ngx_http_aiserve_model_t       *m, *base, **mp;
    ngx_http_aiserve_deploy_t      *d;
    const aiserve_model_info_t     *info;
    aiserve_registry_model_t       *e;
    ngx_http_aiserve_deploy_job_t  *job;

    d = ngx_http_aiserve_deploy;
    job = &d->job;

    if (job->rc != 0) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "aiserve registry \"%s\": %s", job->root, job->err);
        ngx_http_aiserve_deploy_job_free(job);
        return;
    }

    /* removed (or published again under the same id) */

    for (q = ngx_queue_head(&d->models);
         q != ngx_queue_sentinel(&d->models);
         q = next)
    {
        next = ngx_queue_next(q);
        m = ngx_queue_data(q, ngx_http_aiserve_model_t, link);
        found = 0;

        for (i = 0; i < job->n; i++) {
            if (m->name.len == ngx_strlen(job->list[i].id)
                && ngx_strncmp(m->name.data, job->list[i].id, m->name.len)
                   == 0
                && m->created == job->list[i].created_at)
            {
                found = 1;
                break;
            }
        }

        if (!found) {
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "aiserve model \"%V\" removed", &m->name);
            ngx_http_aiserve_deploy_retire(m);
        }
    }

    mp = d->amcf->models.elts;

    for (i = 0; i < job->n; i++) {
        e = &job->list[i];

        if (job->loaded[i] == NULL) {
            if (job->errs[i][0]) {
                ngx_log_error(NGX_LOG_ERR, log, 0,
                              "aiserve model \"%s\" in \"%s\" not loaded: %s",
                              e->id, e->dir, job->errs[i]);
            }
            continue;
        }

        k = ngx_strlen(e->id) + ngx_strlen(e->account) + ngx_strlen(e->mode)
            + ngx_strlen(e->dir);

        m = ngx_calloc(sizeof(ngx_http_aiserve_model_t) + k + 4, log);
        if (m == NULL) {
            aiserve_model_free(job->loaded[i]);
            job->loaded[i] = NULL;
            continue;
        }

        base = mp[job->base[i]];
        info = aiserve_model_info(job->loaded[i]);

        m->name.data = (u_char *) (m + 1);
        m->name.len = ngx_strlen(e->id);
        m->owner.data = ngx_cpymem(m->name.data, e->id, m->name.len) + 1;
        m->owner.len = ngx_strlen(e->account);
        m->mode.data = ngx_cpymem(m->owner.data, e->account, m->owner.len)
                       + 1;
        m->mode.len = ngx_strlen(e->mode);
        m->path.data = ngx_cpymem(m->mode.data, e->mode, m->mode.len) + 1;
        m->path.len = ngx_strlen(e->dir);
        ngx_memcpy(m->path.data, e->dir, m->path.len + 1);

        m->model = job->loaded[i];
        job->loaded[i] = NULL;
        m->info = info;
        m->tok = base->tok;
        m->max_seq = ngx_min(base->max_seq, info->max_position_embeddings);
        m->truncate = base->truncate;
        m->amcf = base->amcf;
        m->created = (time_t) e->created_at;
        m->base = base;
        ngx_queue_init(&m->queue);

        /* a head model: its requests join the base's batches, one encoder
         * pass for the base and all its heads */
        if (aiserve_model_shares_encoder(m->model, base->model)) {
            m->runs_on = base;
        }

        switch (info->arch) {
        case AISERVE_ARCH_BERT_MODEL:
            m->task = NGX_HTTP_AISERVE_TASK_EMBED;
            break;
        case AISERVE_ARCH_SEQUENCE_CLASSIFICATION:
            m->task = (base->task == NGX_HTTP_AISERVE_TASK_RERANK)
                      ? NGX_HTTP_AISERVE_TASK_RERANK
                      : NGX_HTTP_AISERVE_TASK_CLASSIFY;
            break;
        default:
            m->task = NGX_HTTP_AISERVE_TASK_NER;
            break;
        }

        ngx_queue_insert_tail(&d->models, &m->link);

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "aiserve model \"%V\" loaded (%V over \"%V\")",
                      &m->name, &m->mode, &base->name);
    }

    d->generation = job->generation;

    ngx_http_aiserve_deploy_job_free(job);
}


static void
ngx_http_aiserve_deploy_job_free(ngx_http_aiserve_deploy_job_t *job)
{
    size_t  i;

    if (job->loaded) {
        for (i = 0; i < job->n; i++) {
            if (job->loaded[i]) {
                aiserve_model_free(job->loaded[i]);
            }
        }
    }

    free(job->loaded);
    free(job->base);
    free(job->errs);
    free(job->list);

    if (job->have) {
        ngx_free(job->have);
    }

    job->loaded = NULL;
    job->base = NULL;
    job->errs = NULL;
    job->list = NULL;
    job->have = NULL;
    job->n = 0;
}


static void
ngx_http_aiserve_deploy_tick(ngx_event_t *ev)
{
    char                        err[NGX_HTTP_AISERVE_ERRLEN];
    uint64_t                    gen;
    ngx_queue_t                *q;
    ngx_http_aiserve_model_t   *m;
    ngx_http_aiserve_deploy_t  *d = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(&d->timer, NGX_HTTP_AISERVE_DEPLOY_EVERY);

    ngx_http_aiserve_deploy_reap();

    /*
     * A model's batch memory (the encoder's scratch: max_batch_tokens
     * tokens of activations) is the big part of a tenant: it is kept only
     * while requests use the model, so a worker holds the scratch of the
     * models in use, not of every model it serves.
     */

    for (q = ngx_queue_head(&d->models);
         q != ngx_queue_sentinel(&d->models);
         q = ngx_queue_next(q))
    {
        m = ngx_queue_data(q, ngx_http_aiserve_model_t, link);

        if (m->batch && m->refs == 0 && !m->busy && m->queued == 0) {
            ngx_http_aiserve_batch_free(m);
        }
    }

    if (d->busy) {
        return;
    }

    if (aiserve_registry_generation((char *) d->amcf->ft_root, &gen, err,
                                    sizeof(err)) != 0)
    {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0, "aiserve registry: %s", err);
        return;
    }

    if (gen == d->generation) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "aiserve registry generation %uL -> %uL",
                   d->generation, gen);

    if (ngx_http_aiserve_deploy_snapshot(ev->log) != NGX_OK) {
        return;
    }

    if (ngx_thread_task_post(d->amcf->thread_pool, d->task) != NGX_OK) {
        /* the pool's queue is full: next time */
        ngx_http_aiserve_deploy_job_free(&d->job);
        return;
    }

    d->busy = 1;
    ngx_add_timer(&d->guard, NGX_HTTP_AISERVE_DEPLOY_GUARD);
}


static void
ngx_http_aiserve_deploy_guard(ngx_event_t *ev)
{
    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "aiserve registry: a load has run for %M ms",
                  (ngx_msec_t) NGX_HTTP_AISERVE_DEPLOY_GUARD);

    ngx_add_timer(ev, NGX_HTTP_AISERVE_DEPLOY_GUARD);
}


/* Takes M off the served list; it is freed once nothing uses it. */

static void
ngx_http_aiserve_deploy_retire(ngx_http_aiserve_model_t *m)
{
    ngx_queue_remove(&m->link);
    m->retired = 1;
    ngx_queue_insert_tail(&ngx_http_aiserve_deploy->retired, &m->link);
}


static void
ngx_http_aiserve_deploy_reap(void)
{
    ngx_queue_t               *q, *next;
    ngx_http_aiserve_model_t  *m;

    for (q = ngx_queue_head(&ngx_http_aiserve_deploy->retired);
         q != ngx_queue_sentinel(&ngx_http_aiserve_deploy->retired);
         q = next)
    {
        next = ngx_queue_next(q);
        m = ngx_queue_data(q, ngx_http_aiserve_model_t, link);

        if (m->refs || m->busy || m->queued) {
            continue;
        }

        ngx_queue_remove(q);
        ngx_http_aiserve_batch_free(m);
        aiserve_model_free(m->model);
        ngx_free(m);
    }
}


/* The caller's account: NGX_OK, or NGX_DECLINED without a key. */

static ngx_int_t
ngx_http_aiserve_deploy_caller(ngx_http_request_t *r, uint32_t *account,
    ngx_uint_t *admin)
{
    ngx_http_aiserve_meter_ctx_t  *mctx;

    mctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_meter_module);

    if (mctx == NULL || !mctx->authenticated) {
        return NGX_DECLINED;
    }

    *account = mctx->key.account_id;
    *admin = (mctx->key.flags & AISERVE_KEY_ADMIN) ? 1 : 0;

    return NGX_OK;
}


/* Whether the caller may see a model of account OWNER ("acct_N"). */

static ngx_uint_t
ngx_http_aiserve_deploy_may(ngx_http_request_t *r, const char *owner,
    size_t len)
{
    u_char      buf[32], *p;
    uint32_t    account;
    ngx_uint_t  admin;

    if (ngx_http_aiserve_deploy_caller(r, &account, &admin) != NGX_OK) {
        return 0;
    }

    if (admin) {
        return 1;
    }

    p = ngx_sprintf(buf, "acct_%uD", account);

    return (size_t) (p - buf) == len && ngx_strncmp(buf, owner, len) == 0;
}


ngx_http_aiserve_model_t *
ngx_http_aiserve_deploy_find(ngx_http_request_t *r,
    ngx_http_aiserve_model_t *base, ngx_uint_t api, ngx_str_t *name)
{
    ngx_queue_t               *q;
    ngx_http_aiserve_model_t  *m;

    if (ngx_http_aiserve_deploy == NULL) {
        return NULL;
    }

    for (q = ngx_queue_head(&ngx_http_aiserve_deploy->models);
         q != ngx_queue_sentinel(&ngx_http_aiserve_deploy->models);
         q = ngx_queue_next(q))
    {
        m = ngx_queue_data(q, ngx_http_aiserve_model_t, link);

        if (m->name.len != name->len
            || ngx_strncmp(m->name.data, name->data, name->len) != 0)
        {
            continue;
        }

        if (m->base != base
            || !ngx_http_aiserve_api_fits(api, m->task)
            || !ngx_http_aiserve_deploy_may(r, (char *) m->owner.data,
                                            m->owner.len))
        {
            return NULL;
        }

        m->refs++;

        return m;
    }

    return NULL;
}


void
ngx_http_aiserve_deploy_release(ngx_http_aiserve_model_t *m)
{
    m->refs--;
}


ngx_http_aiserve_model_t *
ngx_http_aiserve_deploy_next(ngx_http_request_t *r,
    ngx_http_aiserve_model_t *prev)
{
    ngx_queue_t               *q, *sentinel;
    ngx_http_aiserve_model_t  *m;

    if (ngx_http_aiserve_deploy == NULL) {
        return NULL;
    }

    sentinel = ngx_queue_sentinel(&ngx_http_aiserve_deploy->models);

    for (q = prev ? ngx_queue_next(&prev->link)
                  : ngx_queue_head(&ngx_http_aiserve_deploy->models);
         q != sentinel;
         q = ngx_queue_next(q))
    {
        m = ngx_queue_data(q, ngx_http_aiserve_model_t, link);

        if (ngx_http_aiserve_deploy_may(r, (char *) m->owner.data,
                                        m->owner.len))
        {
            return m;
        }
    }

    return NULL;
}


ngx_http_aiserve_model_t *
ngx_http_aiserve_deploy_visible(ngx_http_request_t *r, ngx_str_t *id)
{
    ngx_http_aiserve_model_t  *m;

    for (m = ngx_http_aiserve_deploy_next(r, NULL);
         m != NULL;
         m = ngx_http_aiserve_deploy_next(r, m))
    {
        if (m->name.len == id->len
            && ngx_strncmp(m->name.data, id->data, id->len) == 0)
        {
            return m;
        }
    }

    return NULL;
}


/*
 * DELETE /v1/models/ID (OpenAI's models.delete()): the registry's record
 * is read and removed here, on the event loop (a few small files and the
 * unlink of the model's; no model is loaded).
 */

ngx_int_t
ngx_http_aiserve_deploy_delete(ngx_http_request_t *r, ngx_str_t *id)
{
    int                            rc;
    char                          *cid, err[NGX_HTTP_AISERVE_ERRLEN];
    ngx_queue_t                   *q;
    ngx_uint_t                     i;
    ngx_http_aiserve_json_t        j;
    ngx_http_aiserve_model_t      *m, **mp;
    aiserve_registry_model_t       e;
    ngx_http_aiserve_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_aiserve_module);

    if (amcf->ft_root == NULL || id->len > AISERVE_REGISTRY_ID_MAX) {
        goto not_found;
    }

    cid = ngx_pnalloc(r->pool, id->len + 1);
    if (cid == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_cpystrn((u_char *) cid, id->data, id->len + 1);

    rc = aiserve_registry_lookup((char *) amcf->ft_root, cid, &e, err,
                                 sizeof(err));

    if (rc == AISERVE_REGISTRY_NOTFOUND) {
        goto not_found;
    }

    if (rc != 0) {
        goto failed;
    }

    if (!ngx_http_aiserve_deploy_may(r, e.account, ngx_strlen(e.account))) {
        goto not_found;
    }

    rc = aiserve_registry_remove((char *) amcf->ft_root, cid, err,
                                 sizeof(err));

    if (rc == AISERVE_REGISTRY_NOTFOUND) {
        goto not_found;
    }

    if (rc != 0) {
        goto failed;
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "aiserve model \"%V\" deleted", id);

    /* this worker stops serving it at once, the others within a second */

    if (ngx_http_aiserve_deploy) {
        for (q = ngx_queue_head(&ngx_http_aiserve_deploy->models);
             q != ngx_queue_sentinel(&ngx_http_aiserve_deploy->models);
             q = ngx_queue_next(q))
        {
            m = ngx_queue_data(q, ngx_http_aiserve_model_t, link);

            if (m->name.len == id->len
                && ngx_strncmp(m->name.data, id->data, id->len) == 0)
            {
                ngx_http_aiserve_deploy_retire(m);
                break;
            }
        }
    }

    ngx_http_aiserve_json_init(&j, r->pool, 128 + id->len);
    ngx_http_aiserve_json_lit(&j, "{\"id\":");
    ngx_http_aiserve_json_string(&j, (char *) id->data, id->len);
    ngx_http_aiserve_json_lit(&j, ",\"object\":\"model\",\"deleted\":true}\n");

    return ngx_http_aiserve_send_json(r, NGX_HTTP_OK, &j, NULL);

failed:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "aiserve registry: %s", err);

    return ngx_http_aiserve_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "server_error", "registry_error",
                                       NULL, "the model registry failed");

not_found:

    /* a base model is listed and retrieved, but only nginx.conf removes it */

    mp = amcf->models.elts;
    for (i = 0; i < amcf->models.nelts; i++) {
        if (mp[i]->name.len == id->len
            && ngx_strncmp(mp[i]->name.data, id->data, id->len) == 0)
        {
            return ngx_http_aiserve_send_error(r, NGX_HTTP_NOT_FOUND,
                       "invalid_request_error", "model_not_found", "model",
                       "the model \"%V\" is a base model of this server: "
                       "only fine-tuned models can be deleted", id);
        }
    }

    return ngx_http_aiserve_send_error(r, NGX_HTTP_NOT_FOUND,
                                       "invalid_request_error",
                                       "model_not_found", "model",
                                       "the model \"%V\" does not exist",
                                       id);
}
