/*
 * aiserve: BERT inference in nginx.
 *
 * This file owns the ngx_module_t, the directives, the models (loaded while
 * nginx reads its configuration), the variables, JSON error responses and
 * the content handler up to the point where a tokenized request joins its
 * model's batch queue (ngx_http_aiserve_batch.c); JSON errors are sent
 * by ngx_http_aiserve_json.c.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <dlfcn.h>

#include "ngx_http_aiserve_infer.h"
#include "aiserve_dtype.h"


static char *ngx_http_aiserve_model(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_aiserve_infer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_aiserve_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_aiserve_set_log_level(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_aiserve_check_bounds(ngx_conf_t *cf, void *post,
    void *data);
static void ngx_http_aiserve_model_cleanup(void *data);
static size_t ngx_http_aiserve_default_max_seq(ngx_http_aiserve_model_t *m);

static ngx_int_t ngx_http_aiserve_handler(ngx_http_request_t *r);
static void ngx_http_aiserve_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_aiserve_parse(ngx_http_request_t *r,
    ngx_http_aiserve_ctx_t *ctx, ngx_str_t *body);
static void ngx_http_aiserve_ctx_cleanup(void *data);

static ngx_int_t ngx_http_aiserve_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_aiserve_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);

static ngx_int_t ngx_http_aiserve_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_aiserve_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static void *ngx_http_aiserve_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_aiserve_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_aiserve_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_aiserve_check_handler(ngx_conf_t *cf,
    ngx_http_aiserve_loc_conf_t *conf, ngx_http_core_loc_conf_t *clcf);
static char *ngx_http_aiserve_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_aiserve_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_aiserve_init_process(ngx_cycle_t *cycle);
static void ngx_http_aiserve_exit_process(ngx_cycle_t *cycle);
static void ngx_http_aiserve_pin(ngx_cycle_t *cycle);


static ngx_conf_enum_t  ngx_http_aiserve_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_aiserve_threads_bounds = {
    ngx_http_aiserve_check_bounds, 1, 256
};

static ngx_conf_num_bounds_t  ngx_http_aiserve_positive_bounds = {
    ngx_http_aiserve_check_bounds, 1, -1
};


static ngx_command_t  ngx_http_aiserve_commands[] = {

    { ngx_string("aiserve_model"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_aiserve_model,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_infer"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_aiserve_infer,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_endpoint"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_aiserve_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_aiserve_main_conf_t, thread_pool_name),
      NULL },

    { ngx_string("aiserve_max_batch_tokens"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_aiserve_main_conf_t, max_batch_tokens),
      NULL },

    { ngx_string("aiserve_max_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_aiserve_main_conf_t, max_queue),
      &ngx_http_aiserve_positive_bounds },

    { ngx_string("aiserve_gpu_library"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_aiserve_gpu_library,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aiserve_threads"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_aiserve_main_conf_t, threads),
      &ngx_http_aiserve_threads_bounds },

    { ngx_string("aiserve_max_inputs"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_aiserve_loc_conf_t, max_inputs),
      &ngx_http_aiserve_positive_bounds },

    { ngx_string("aiserve_max_request_tokens"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_aiserve_loc_conf_t, max_request_tokens),
      &ngx_http_aiserve_positive_bounds },

    { ngx_string("aiserve_queue_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_aiserve_loc_conf_t, queue_timeout),
      NULL },

    { ngx_string("aiserve_retry_after"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_aiserve_loc_conf_t, retry_after),
      NULL },

    { ngx_string("aiserve_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_aiserve_set_log_level,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_aiserve_loc_conf_t, log_level),
      &ngx_http_aiserve_log_levels },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_aiserve_module_ctx = {
    ngx_http_aiserve_add_variables,        /* preconfiguration */
    ngx_http_aiserve_init,                 /* postconfiguration */

    ngx_http_aiserve_create_main_conf,     /* create main configuration */
    ngx_http_aiserve_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_aiserve_create_loc_conf,      /* create location configuration */
    ngx_http_aiserve_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_aiserve_module = {
    NGX_MODULE_V1,
    &ngx_http_aiserve_module_ctx,          /* module context */
    ngx_http_aiserve_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_aiserve_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_aiserve_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_aiserve_tasks[] = {
    ngx_string("embed"),
    ngx_string("classify"),
    ngx_string("ner"),
    ngx_string("rerank"),
    ngx_null_string
};


ngx_str_t  ngx_http_aiserve_apis[] = {
    ngx_string("openai"),
    ngx_string("embed"),
    ngx_string("predict"),
    ngx_string("rerank"),
    ngx_string("tokenize"),
    ngx_string("ner"),
    ngx_string("decode"),
    ngx_string("similarity"),
    ngx_string("embed_all"),
    ngx_string("info"),
    ngx_string("tei"),
    ngx_null_string
};


#define NGX_HTTP_AISERVE_VAR_MODEL          0
#define NGX_HTTP_AISERVE_VAR_PROMPT_TOKENS  1
#define NGX_HTTP_AISERVE_VAR_INFER_TIME     2
#define NGX_HTTP_AISERVE_VAR_QUEUE_TIME     3
#define NGX_HTTP_AISERVE_VAR_BATCH_SIZE     4


static ngx_http_variable_t  ngx_http_aiserve_vars[] = {

    { ngx_string("aiserve_model"), NULL, ngx_http_aiserve_variable,
      NGX_HTTP_AISERVE_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("aiserve_prompt_tokens"), NULL, ngx_http_aiserve_variable,
      NGX_HTTP_AISERVE_VAR_PROMPT_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("aiserve_infer_time"), NULL, ngx_http_aiserve_variable,
      NGX_HTTP_AISERVE_VAR_INFER_TIME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("aiserve_queue_time"), NULL, ngx_http_aiserve_variable,
      NGX_HTTP_AISERVE_VAR_QUEUE_TIME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("aiserve_batch_size"), NULL, ngx_http_aiserve_variable,
      NGX_HTTP_AISERVE_VAR_BATCH_SIZE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


/* configuration */

/*
 * aiserve_model NAME PATH [task=embed|classify|ner|rerank] [max_seq=N]
 *     [truncate=on|off] [device=cpu|gpu[:N]] [dtype=fp32|bf16|auto]
 *
 * Loads the tokenizer and the model in the process that reads the
 * configuration (the master, or nginx -t): weights are mapped read-only
 * and shared by the workers forked later.  dtype (default fp32): the
 * products' format, aiserve_model_load_dtype(); what it chose is logged
 * at the notice level.
 */

static char *
ngx_http_aiserve_model(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_main_conf_t *amcf = conf;

    char                       err[NGX_HTTP_AISERVE_ERRLEN];
    ngx_int_t                  n;
    ngx_str_t                 *value, s;
    ngx_uint_t                 i, k, task_set;
    aiserve_dtype_e            dtype;
    const char                *isa;
    char                       note[NGX_HTTP_AISERVE_ERRLEN];
    ngx_pool_cleanup_t        *cln;
    ngx_http_aiserve_model_t  *m, **mp;

    value = cf->args->elts;

    mp = amcf->models.elts;
    for (i = 0; i < amcf->models.nelts; i++) {
        if (mp[i]->name.len == value[1].len
            && ngx_strncmp(mp[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate model \"%V\" in \"aiserve_model\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    m = ngx_pcalloc(cf->pool, sizeof(ngx_http_aiserve_model_t));
    if (m == NULL) {
        return NGX_CONF_ERROR;
    }

    m->name = value[1];
    m->path = value[2];
    m->amcf = amcf;
    m->created = ngx_time();
    ngx_queue_init(&m->queue);
    m->truncate = 0;
    m->max_seq = 0;
    task_set = 0;
    dtype = AISERVE_DTYPE_FP32;

    if (ngx_conf_full_name(cf->cycle, &m->path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 3; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "task=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            for (k = 0; ngx_http_aiserve_tasks[k].len; k++) {
                if (ngx_http_aiserve_tasks[k].len == s.len
                    && ngx_strncmp(ngx_http_aiserve_tasks[k].data, s.data,
                                   s.len) == 0)
                {
                    break;
                }
            }

            if (ngx_http_aiserve_tasks[k].len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid task \"%V\" in \"aiserve_model\","
                                   " use embed, classify, ner or rerank",
                                   &s);
                return NGX_CONF_ERROR;
            }

            m->task = k;
            task_set = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "max_seq=", 8) == 0) {
            n = ngx_atoi(value[i].data + 8, value[i].len - 8);
            if (n == NGX_ERROR || n < 2) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid max_seq \"%V\" in "
                                   "\"aiserve_model\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            m->max_seq = n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "truncate=on") == 0) {
            m->truncate = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "truncate=off") == 0) {
            m->truncate = 0;
            continue;
        }

        if (ngx_strcmp(value[i].data, "device=cpu") == 0) {
            continue;
        }

        if (ngx_strcmp(value[i].data, "dtype=fp32") == 0) {
            dtype = AISERVE_DTYPE_FP32;
            continue;
        }

        if (ngx_strcmp(value[i].data, "dtype=auto") == 0) {
            dtype = AISERVE_DTYPE_AUTO;
            continue;
        }

        if (ngx_strcmp(value[i].data, "dtype=bf16") == 0) {
            if (!aiserve_gemm_bf16_native(&isa)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"dtype=bf16\" in \"aiserve_model\": "
                                   "the CPU has %s; bf16 needs AVX512-BF16 "
                                   "or AMX (use dtype=fp32 or dtype=auto)",
                                   isa);
                return NGX_CONF_ERROR;
            }

            dtype = AISERVE_DTYPE_BF16;
            continue;
        }

        if (ngx_strncmp(value[i].data, "dtype=", 6) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid dtype \"%V\" in \"aiserve_model\", "
                               "use fp32, bf16 or auto", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (ngx_strncmp(value[i].data, "device=gpu", 10) == 0) {
            (void) ngx_http_aiserve_gpu_check(cf, amcf, &m->name,
                                              &value[i]);
            return NGX_CONF_ERROR;
        }

        if (ngx_strncmp(value[i].data, "device=", 7) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid device \"%V\" in \"aiserve_model\", "
                               "use device=cpu, device=gpu or device=gpu:N",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"aiserve_model\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_aiserve_model_cleanup;
    cln->data = m;

    m->tok = aiserve_tok_load((char *) m->path.data, err, sizeof(err));
    if (m->tok == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aiserve_model\" \"%V\": cannot load the "
                           "tokenizer from \"%V\": %s",
                           &m->name, &m->path, err);
        return NGX_CONF_ERROR;
    }

    m->model = aiserve_model_load_dtype((char *) m->path.data, m->tok, dtype,
                                        note, sizeof(note), err,
                                        sizeof(err));
    if (m->model == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aiserve_model\" \"%V\": cannot load the "
                           "model from \"%V\": %s",
                           &m->name, &m->path, err);
        return NGX_CONF_ERROR;
    }

    m->info = aiserve_model_info(m->model);

    switch (m->info->arch) {

    case AISERVE_ARCH_BERT_MODEL:
        k = NGX_HTTP_AISERVE_TASK_EMBED;
        break;

    case AISERVE_ARCH_SEQUENCE_CLASSIFICATION:
        k = (m->task == NGX_HTTP_AISERVE_TASK_RERANK && task_set)
            ? NGX_HTTP_AISERVE_TASK_RERANK : NGX_HTTP_AISERVE_TASK_CLASSIFY;
        break;

    default: /* AISERVE_ARCH_TOKEN_CLASSIFICATION */
        k = NGX_HTTP_AISERVE_TASK_NER;
        break;
    }

    if (task_set && k != m->task) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aiserve_model\" \"%V\": task=%V does not fit "
                           "the model in \"%V\", which is for task=%V",
                           &m->name, &ngx_http_aiserve_tasks[m->task],
                           &m->path, &ngx_http_aiserve_tasks[k]);
        return NGX_CONF_ERROR;
    }

    m->task = k;

    if (m->max_seq == 0) {
        m->max_seq = ngx_http_aiserve_default_max_seq(m);

    } else if (m->max_seq > m->info->max_position_embeddings) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid max_seq=%uz in \"aiserve_model\" \"%V\":"
                           " the model has max_position_embeddings %uz",
                           m->max_seq, &m->name,
                           m->info->max_position_embeddings);
        return NGX_CONF_ERROR;
    }

    mp = ngx_array_push(&amcf->models);
    if (mp == NULL) {
        return NGX_CONF_ERROR;
    }

    *mp = m;

    ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                       "aiserve model \"%V\": %s", &m->name, note);

    ngx_conf_log_error(NGX_LOG_DEBUG, cf, 0,
                       "aiserve model \"%V\" loaded from \"%V\": task=%V "
                       "max_seq=%uz", &m->name, &m->path,
                       &ngx_http_aiserve_tasks[m->task], m->max_seq);

    return NGX_CONF_OK;
}


/*
 * The default max_seq follows what the reference library does with the
 * model: sentence-transformers' max_seq_length (sentence_bert_config.json),
 * else the tokenizer's truncation length (tokenizer.json), else
 * max_position_embeddings.
 */

static size_t
ngx_http_aiserve_default_max_seq(ngx_http_aiserve_model_t *m)
{
    size_t        n, max;
    json_t       *doc, *v;
    json_error_t  jerr;
    u_char        path[NGX_MAX_PATH];

    max = m->info->max_position_embeddings;
    n = 0;

    ngx_snprintf(path, sizeof(path) - 1, "%V/sentence_bert_config.json%Z",
                 &m->path);

    doc = json_load_file((char *) path, 0, &jerr);
    if (doc) {
        v = json_object_get(doc, "max_seq_length");
        if (json_is_integer(v) && json_integer_value(v) > 0) {
            n = json_integer_value(v);
        }
        json_decref(doc);
    }

    if (n == 0) {
        n = aiserve_tok_model_max_length(m->tok);
    }

    if (n == 0 || n > max) {
        n = max;
    }

    return n;
}


static void
ngx_http_aiserve_model_cleanup(void *data)
{
    ngx_http_aiserve_model_t  *m = data;

    if (m->model) {
        aiserve_model_free(m->model);
        m->model = NULL;
    }

    if (m->tok) {
        aiserve_tok_free(m->tok);
        m->tok = NULL;
    }
}


/*
 * aiserve_infer NAME [api=openai|embed|predict|rerank|tokenize|ner|decode|
 *     similarity|embed_all|info|tei]
 */

static char *
ngx_http_aiserve_infer(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_loc_conf_t *alcf = conf;

    ngx_str_t                 *value, s;
    ngx_uint_t                 k;
    ngx_http_core_loc_conf_t  *clcf;

    if (alcf->model_name.data) {
        return "is duplicate";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        /* aiserve_usage, proxy_pass, stub_status...: only one would win */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aiserve_infer\" cannot be combined with "
                           "another content handler in location \"%V\"",
                           &clcf->name);
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    alcf->model_name = value[1];
    alcf->file = cf->conf_file->file.name.data;
    alcf->line = cf->conf_file->line;

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "api=", 4) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in "
                               "\"aiserve_infer\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        s.data = value[2].data + 4;
        s.len = value[2].len - 4;

        for (k = 0; ngx_http_aiserve_apis[k].len; k++) {
            if (ngx_http_aiserve_apis[k].len == s.len
                && ngx_strncmp(ngx_http_aiserve_apis[k].data, s.data, s.len)
                   == 0)
            {
                break;
            }
        }

        if (ngx_http_aiserve_apis[k].len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid api \"%V\" in \"aiserve_infer\", use "
                               "openai, embed, predict, rerank, tokenize, "
                               "ner, decode, similarity, embed_all, info or "
                               "tei", &s);
            return NGX_CONF_ERROR;
        }

        alcf->api = k;
    }

    if (alcf->api == NGX_HTTP_AISERVE_API_INFO) {
        alcf->endpoint = NGX_HTTP_AISERVE_ENDPOINT_INFO;
        clcf->handler = ngx_http_aiserve_status_handler;
        return NGX_CONF_OK;
    }

    clcf->handler = ngx_http_aiserve_handler;

    return NGX_CONF_OK;
}


/* aiserve_endpoint health|models|metrics */

static char *
ngx_http_aiserve_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_loc_conf_t *alcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (alcf->endpoint != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aiserve_endpoint\" cannot be combined with "
                           "another content handler in location \"%V\"",
                           &clcf->name);
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    alcf->file = cf->conf_file->file.name.data;
    alcf->line = cf->conf_file->line;

    if (ngx_strcmp(value[1].data, "health") == 0) {
        alcf->endpoint = NGX_HTTP_AISERVE_ENDPOINT_HEALTH;

    } else if (ngx_strcmp(value[1].data, "models") == 0) {
        alcf->endpoint = NGX_HTTP_AISERVE_ENDPOINT_MODELS;

    } else if (ngx_strcmp(value[1].data, "metrics") == 0) {
        alcf->endpoint = NGX_HTTP_AISERVE_ENDPOINT_METRICS;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"aiserve_endpoint\", "
                           "use health, models or metrics", &value[1]);
        return NGX_CONF_ERROR;
    }

    clcf->handler = ngx_http_aiserve_status_handler;

    return NGX_CONF_OK;
}


/*
 * aiserve_log_level: ngx_conf_set_enum_slot's error names neither the
 * directive nor the choices.
 */

static char *
ngx_http_aiserve_set_log_level(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char  *p = conf;

    ngx_str_t        *value;
    ngx_uint_t       *np, i;
    ngx_conf_enum_t  *e;

    np = (ngx_uint_t *) (p + cmd->offset);

    if (*np != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    e = cmd->post;

    for (i = 0; e[i].name.len; i++) {
        if (e[i].name.len == value[1].len
            && ngx_strcasecmp(e[i].name.data, value[1].data) == 0)
        {
            *np = e[i].value;
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\" in \"%V\", use info, notice, "
                       "warn or error", &value[1], &cmd->name);

    return NGX_CONF_ERROR;
}


/*
 * The post handler of the numeric directives: ngx_conf_check_num_bounds()
 * with an error that names the directive and the value, as
 * "invalid value "0" in "aiserve_threads", must be between 1 and 256".
 * A high bound of -1 means none.
 */

static char *
ngx_http_aiserve_check_bounds(ngx_conf_t *cf, void *post, void *data)
{
    ngx_conf_num_bounds_t  *bounds = post;
    ngx_int_t              *np = data;

    ngx_str_t  *value;

    if (*np >= bounds->low && (bounds->high == -1 || *np <= bounds->high)) {
        return NGX_CONF_OK;
    }

    value = cf->args->elts;

    if (bounds->high == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\", must be %i or "
                           "more", &value[1], &value[0], bounds->low);

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\", must be between "
                           "%i and %i", &value[1], &value[0], bounds->low,
                           bounds->high);
    }

    return NGX_CONF_ERROR;
}


static void *
ngx_http_aiserve_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_aiserve_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_aiserve_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     amcf->thread_pool_name = { 0, NULL };
     *     amcf->thread_pool = NULL;
     */

    if (ngx_array_init(&amcf->models, cf->pool, 4,
                       sizeof(ngx_http_aiserve_model_t *))
        != NGX_OK)
    {
        return NULL;
    }

    amcf->max_batch_tokens = NGX_CONF_UNSET_SIZE;
    amcf->max_queue = NGX_CONF_UNSET_UINT;
    amcf->threads = NGX_CONF_UNSET;

    return amcf;
}


static char *
ngx_http_aiserve_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_aiserve_main_conf_t *amcf = conf;

    ngx_http_aiserve_model_t  **mp;
    ngx_uint_t                  i;

    if (amcf->thread_pool_name.data == NULL) {
        ngx_str_set(&amcf->thread_pool_name, "default");
    }

    ngx_conf_init_size_value(amcf->max_batch_tokens, 8192);
    ngx_conf_init_uint_value(amcf->max_queue, 1024);
    ngx_conf_init_value(amcf->threads, 1);

    mp = amcf->models.elts;
    for (i = 0; i < amcf->models.nelts; i++) {
        if (amcf->max_batch_tokens < mp[i]->max_seq) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"aiserve_max_batch_tokens\" %uz is less "
                               "than max_seq=%uz of model \"%V\"",
                               amcf->max_batch_tokens, mp[i]->max_seq,
                               &mp[i]->name);
            return NGX_CONF_ERROR;
        }
    }

    if (amcf->models.nelts) {
        amcf->thread_pool = ngx_thread_pool_add(cf, &amcf->thread_pool_name);
        if (amcf->thread_pool == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_aiserve_metrics_add_zone(cf, amcf) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_aiserve_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_aiserve_loc_conf_t  *alcf;

    alcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_aiserve_loc_conf_t));
    if (alcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     alcf->model_name = { 0, NULL };
     *     alcf->model = NULL;
     */

    alcf->api = NGX_CONF_UNSET_UINT;
    alcf->endpoint = NGX_CONF_UNSET_UINT;
    alcf->max_inputs = NGX_CONF_UNSET_UINT;
    alcf->max_request_tokens = NGX_CONF_UNSET_UINT;
    alcf->queue_timeout = NGX_CONF_UNSET_MSEC;
    alcf->retry_after = NGX_CONF_UNSET_UINT;
    alcf->log_level = NGX_CONF_UNSET_UINT;

    return alcf;
}


/*
 * A content handler set after aiserve_infer (proxy_pass, stub_status, ...)
 * in its location, or inside an "if" or limit_except block of it, replaced
 * it; one set before is refused by ngx_http_aiserve_infer().  Logs an
 * [emerg] naming the location and where aiserve_infer is.
 */

static char *
ngx_http_aiserve_check_handler(ngx_conf_t *cf,
    ngx_http_aiserve_loc_conf_t *conf, ngx_http_core_loc_conf_t *clcf)
{
    if (clcf->handler == (conf->endpoint == NGX_HTTP_AISERVE_ENDPOINT_INFO
                          ? ngx_http_aiserve_status_handler
                          : ngx_http_aiserve_handler))
    {
        return NGX_CONF_OK;
    }

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "\"aiserve_infer\" cannot be combined with another "
                  "content handler in location \"%V\" in %s:%ui",
                  &clcf->name, conf->file, conf->line);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_aiserve_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_aiserve_loc_conf_t *prev = parent;
    ngx_http_aiserve_loc_conf_t *conf = child;

    ngx_uint_t                      i;
    ngx_http_aiserve_model_t      **mp, *m;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_aiserve_main_conf_t   *amcf;

    ngx_conf_merge_uint_value(conf->max_inputs, prev->max_inputs, 2048);

    /*
     * 65536 tokens: 8 full batches of the default aiserve_max_batch_tokens,
     * 128 sequences of 512 tokens; bounds how long one request holds a
     * worker's model (aiserve_max_inputs alone allows 2048 x max_seq)
     */
    ngx_conf_merge_uint_value(conf->max_request_tokens,
                              prev->max_request_tokens, 65536);
    ngx_conf_merge_msec_value(conf->queue_timeout, prev->queue_timeout,
                              10000);
    ngx_conf_merge_uint_value(conf->retry_after, prev->retry_after, 1);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_WARN);

    if (conf->endpoint == NGX_CONF_UNSET_UINT) {
        /* a location's own handler, not inherited */
        conf->endpoint = NGX_HTTP_AISERVE_ENDPOINT_NONE;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (conf->model_name.data == NULL) {

        if (clcf->noname
            && (prev->model
                || prev->endpoint != NGX_HTTP_AISERVE_ENDPOINT_NONE))
        {
            /*
             * "if" and limit_except blocks of an aiserve_infer or
             * aiserve_endpoint location answer with its handler, as
             * proxy_pass does; a request the limit_except block lets
             * through gets the aiserve handler (a 405 for a method other
             * than POST), not a static file.  A content handler of the
             * block's own (proxy_pass inside "if") is refused below.
             */
            conf->model_name = prev->model_name;
            conf->model = prev->model;
            conf->api = prev->api;
            conf->endpoint = prev->endpoint;
            conf->file = prev->file;
            conf->line = prev->line;

            if (clcf->handler == NULL) {
                clcf->handler = (conf->endpoint
                                 == NGX_HTTP_AISERVE_ENDPOINT_NONE)
                                ? ngx_http_aiserve_handler
                                : ngx_http_aiserve_status_handler;
            }
        }

        if (conf->model) {
            return ngx_http_aiserve_check_handler(cf, conf, clcf);
        }

        if (conf->endpoint != NGX_HTTP_AISERVE_ENDPOINT_NONE
            && clcf->handler != ngx_http_aiserve_status_handler)
        {
            /* a content handler set after aiserve_endpoint */
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"aiserve_endpoint\" cannot be combined with "
                          "another content handler in location \"%V\" "
                          "in %s:%ui", &clcf->name, conf->file, conf->line);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (ngx_http_aiserve_check_handler(cf, conf, clcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_aiserve_module);

    m = NULL;
    mp = amcf->models.elts;
    for (i = 0; i < amcf->models.nelts; i++) {
        if (mp[i]->name.len == conf->model_name.len
            && ngx_strncmp(mp[i]->name.data, conf->model_name.data,
                           conf->model_name.len) == 0)
        {
            m = mp[i];
            break;
        }
    }

    if (m == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown model \"%V\" in \"aiserve_infer\", "
                           "declare it with \"aiserve_model\" at the http "
                           "level", &conf->model_name);
        return NGX_CONF_ERROR;
    }

    conf->model = m;

    if (conf->api == NGX_CONF_UNSET_UINT) {
        switch (m->task) {
        case NGX_HTTP_AISERVE_TASK_EMBED:
            conf->api = NGX_HTTP_AISERVE_API_OPENAI;
            break;
        case NGX_HTTP_AISERVE_TASK_CLASSIFY:
            conf->api = NGX_HTTP_AISERVE_API_PREDICT;
            break;
        case NGX_HTTP_AISERVE_TASK_NER:
            conf->api = NGX_HTTP_AISERVE_API_NER;
            break;
        default:
            conf->api = NGX_HTTP_AISERVE_API_RERANK;
            break;
        }
    }

    if (!ngx_http_aiserve_api_fits(conf->api, m->task)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aiserve_infer\" api=%V does not fit model "
                           "\"%V\" (task=%V)",
                           &ngx_http_aiserve_apis[conf->api], &m->name,
                           &ngx_http_aiserve_tasks[m->task]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_aiserve_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_aiserve_metrics_log;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_aiserve_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_aiserve_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_aiserve_init_process(ngx_cycle_t *cycle)
{
    ngx_http_aiserve_main_conf_t  *amcf;

    ngx_http_aiserve_pin(cycle);

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_aiserve_module);
    if (amcf == NULL || amcf->models.nelts == 0) {
        return NGX_OK;
    }

    /* the encoder's threads start in workers only, after fork() */
    aiserve_set_num_threads((int) amcf->threads);

    return ngx_http_aiserve_deploy_init_process(cycle);
}


/*
 * Keeps this module's code mapped until the worker's last instruction.
 * nginx unloads dynamic modules when it destroys the cycle's pool at a
 * worker's exit, while the threads of its thread pools, never joined, may
 * still be running key destructors of the engine (aiserve_gemm.c): code
 * unmapped under a running thread is a SIGSEGV at a graceful stop.  A
 * second reference with RTLD_NODELETE leaves the module in the worker's
 * memory; the master, which reloads modules, is not concerned.
 */
static void
ngx_http_aiserve_pin(ngx_cycle_t *cycle)
{
    Dl_info   info;
    void     *handle;

    if (dladdr((void *) &ngx_http_aiserve_module, &info) == 0
        || info.dli_fname == NULL)
    {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "aiserve: dladdr() found no file for the module, "
                      "it stays unpinned");
        return;
    }

    handle = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    if (handle == NULL) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "aiserve: dlopen(\"%s\", RTLD_NODELETE) failed: %s",
                      info.dli_fname, dlerror());
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_CORE, cycle->log, 0,
                   "aiserve: module pinned: %s", info.dli_fname);
}


static void
ngx_http_aiserve_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_http_aiserve_model_t      **mp;
    ngx_http_aiserve_main_conf_t   *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_aiserve_module);
    if (amcf == NULL) {
        return;
    }

    ngx_http_aiserve_deploy_exit_process(cycle);

    mp = amcf->models.elts;
    for (i = 0; i < amcf->models.nelts; i++) {
        ngx_http_aiserve_batch_free(mp[i]);
    }
}


/* the content handler */

static ngx_int_t
ngx_http_aiserve_handler(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
    ngx_str_t                    *ct;
    ngx_pool_cleanup_t           *cln;
    ngx_http_aiserve_ctx_t       *ctx;
    ngx_http_aiserve_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_module);

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_aiserve_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->alcf = alcf;
    ctx->model = alcf->model;
    ctx->api = alcf->api;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_aiserve_ctx_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_aiserve_module);

    if ((r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))
        && alcf->api == NGX_HTTP_AISERVE_API_TEI)
    {
        /* TEI answers GET / with its health check (no api: not counted
         * among the inference requests) */
        ctx->api = NGX_HTTP_AISERVE_N_APIS;
        return ngx_http_aiserve_health_handler(r);
    }

    if (r->method != NGX_HTTP_POST) {
        return alcf->api == NGX_HTTP_AISERVE_API_TEI
               ? ngx_http_aiserve_not_allowed(r, "GET, HEAD, POST",
                                              "GET, HEAD or POST")
               : ngx_http_aiserve_not_allowed(r, "POST", "POST");
    }

    ct = r->headers_in.content_type ? &r->headers_in.content_type->value
                                    : NULL;

    if (ct == NULL
        || ct->len < sizeof("application/json") - 1
        || ngx_strncasecmp(ct->data, (u_char *) "application/json",
                           sizeof("application/json") - 1) != 0
        || (ct->len > sizeof("application/json") - 1
            && ct->data[sizeof("application/json") - 1] != ';'
            && ct->data[sizeof("application/json") - 1] != ' '))
    {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_aiserve_send_error(r,
                                     NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                     "invalid_request_error",
                                     "unsupported_media_type", NULL,
                                     "Content-Type must be application/json");
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_aiserve_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_aiserve_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_str_t                body;
    ngx_http_aiserve_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_module);

    rc = ngx_http_aiserve_body_join(r->request_body
                                    ? r->request_body->bufs : NULL,
                                    ngx_http_aiserve_pool_alloc, r->pool,
                                    ngx_read_file, &body);

    if (rc != NGX_OK) {
        if (rc == NGX_DECLINED) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "aiserve: short read of the request body file");
        }

        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->bytes_in = body.len;

    rc = ngx_http_aiserve_parse(r, ctx, &body);
    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (!ctx->done) {
        ngx_http_aiserve_api_prepare(r, ctx);
    }

    if (ctx->done) {
        /* a validation error has been sent */
        ngx_http_finalize_request(r, ctx->rc);
        return;
    }

    rc = ngx_http_aiserve_meter_reserve(r, &ctx->model->name,
                                        ctx->prompt_tokens);
    if (rc == NGX_DECLINED) {
        /* the meter has sent its answer (401, 403, 429, 503) */
        ngx_http_finalize_request(r, NGX_OK);
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, r->header_sent
                                     ? NGX_ERROR
                                     : NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->admitted = 1;

    if (ctx->api == NGX_HTTP_AISERVE_API_TOKENIZE
        || ctx->api == NGX_HTTP_AISERVE_API_DECODE)
    {
        /* nothing to compute */
        ngx_http_aiserve_finish(r, ctx);
        return;
    }

    if (ngx_http_aiserve_enqueue(r, ctx) != NGX_OK) {
        ctx->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ctx->err_type = "server_error";
        ctx->err_code = "queue_full";
        ctx->err_msg = "the inference queue is full, retry later";
        ngx_http_aiserve_finish(r, ctx);
        return;
    }
}


/*
 * Parses the body into ctx->doc (ngx_http_aiserve_body_parse(): invalid
 * UTF-8 repaired, ctx->repaired set).  Returns NGX_OK (with ctx->done set
 * when a 400 has been sent) or an HTTP status.
 */

static ngx_int_t
ngx_http_aiserve_parse(ngx_http_request_t *r, ngx_http_aiserve_ctx_t *ctx,
    ngx_str_t *body)
{
    u_char        *p, *last;
    json_t        *doc;
    ngx_uint_t     repaired;
    json_error_t   jerr;

    for (p = body->data, last = body->data + body->len; p < last; p++) {
        if (*p != ' ' && *p != '\t' && *p != CR && *p != LF) {
            break;
        }
    }

    if (p == last) {
        ctx->done = 1;
        ctx->rc = ngx_http_aiserve_send_error(r, NGX_HTTP_BAD_REQUEST,
                                              "invalid_request_error",
                                              "invalid_json", NULL,
                                              "empty request body, expected "
                                              "a JSON object");
        return NGX_OK;
    }

    if (ngx_http_aiserve_body_parse(body->data, body->len,
                                    ngx_http_aiserve_pool_alloc, r->pool,
                                    &doc, &repaired, &jerr)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->repaired = repaired;

    if (doc == NULL) {
        ctx->done = 1;
        ctx->rc = ngx_http_aiserve_send_error(r, NGX_HTTP_BAD_REQUEST,
                                              "invalid_request_error",
                                              "invalid_json", NULL,
                                              "invalid JSON body: %s at "
                                              "line %d, column %d",
                                              jerr.text, jerr.line,
                                              jerr.column);
        return NGX_OK;
    }

    ctx->doc = doc;

    if (!json_is_object(doc)) {
        ctx->done = 1;
        ctx->rc = ngx_http_aiserve_send_error(r, NGX_HTTP_BAD_REQUEST,
                                              "invalid_request_error",
                                              "invalid_json", NULL,
                                              "the JSON body must be an "
                                              "object");
    }

    return NGX_OK;
}


static void
ngx_http_aiserve_ctx_cleanup(void *data)
{
    ngx_http_aiserve_ctx_t  *ctx = data;

    ngx_uint_t  i;

    if (ctx->fine_tuned) {
        ngx_http_aiserve_deploy_release(ctx->model);
        ctx->fine_tuned = 0;
    }

    for (i = 0; i < ctx->n_seqs; i++) {
        if (ctx->seqs[i].enc) {
            aiserve_encoding_free(ctx->seqs[i].enc);
            ctx->seqs[i].enc = NULL;
        }
    }

    if (ctx->doc) {
        json_decref(ctx->doc);
        ctx->doc = NULL;
    }
}


/*
 * Errors that nginx itself produces on an aiserve location (413 from
 * client_max_body_size, 400 for a broken chunked body, 500, ...) are sent
 * as the same JSON error object instead of nginx's HTML page.  The special
 * response sets r->err_status; aiserve's own errors do not.  A body that
 * does not arrive within client_body_timeout gets no response at all:
 * nginx closes the connection (ngx_http_finalize_request() terminates a
 * request finalized with 408) and logs 408.
 */

static ngx_int_t
ngx_http_aiserve_header_filter(ngx_http_request_t *r)
{
    const char                   *msg, *code, *type;
    ngx_http_aiserve_ctx_t       *ctx;
    ngx_http_aiserve_json_t       j;
    ngx_http_aiserve_loc_conf_t  *alcf;

    if (r != r->main || r->err_status < NGX_HTTP_BAD_REQUEST) {
        return ngx_http_next_header_filter(r);
    }

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_aiserve_module);
    if (alcf->model == NULL) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_module);
    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_aiserve_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        ctx->request = r;
        ngx_http_set_ctx(r, ctx, ngx_http_aiserve_module);
    }

    type = "invalid_request_error";

    switch (r->err_status) {

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        msg = "the request body is larger than client_max_body_size";
        code = "request_too_large";
        break;

    case NGX_HTTP_BAD_REQUEST:
        msg = "bad request";
        code = "bad_request";
        break;

    default:
        if (r->err_status >= NGX_HTTP_INTERNAL_SERVER_ERROR) {
            msg = "internal server error";
            code = "server_error";
            type = "server_error";

        } else {
            msg = "the request was rejected";
            code = "rejected";
        }
    }

    ctx->status = r->err_status;

    ngx_http_aiserve_json_init(&j, r->pool, 256);
    ngx_http_aiserve_json_lit(&j, "{\"error\":{\"message\":");
    ngx_http_aiserve_json_string(&j, msg, ngx_strlen(msg));
    ngx_http_aiserve_json_lit(&j, ",\"type\":");
    ngx_http_aiserve_json_string(&j, type, ngx_strlen(type));
    ngx_http_aiserve_json_lit(&j, ",\"param\":null,\"code\":");
    ngx_http_aiserve_json_string(&j, code, ngx_strlen(code));
    ngx_http_aiserve_json_lit(&j, "}}\n");

    if (j.failed) {
        return NGX_ERROR;
    }

    ctx->page.data = j.start;
    ctx->page.len = j.pos - j.start;
    ctx->rewrite_page = 1;

    ngx_http_aiserve_json_page_headers(r, &ctx->page);

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_aiserve_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_uint_t               sent;
    ngx_chain_t             *out;
    ngx_http_aiserve_ctx_t  *ctx;

    if (in == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_module);

    if (ctx == NULL || !ctx->rewrite_page) {
        return ngx_http_next_body_filter(r, in);
    }

    /* swallow nginx's HTML page, send the JSON one once */

    sent = ctx->page_sent;

    if (ngx_http_aiserve_json_page_body(r, in, &ctx->page, &sent, &out)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->page_sent = sent;

    return ngx_http_next_body_filter(r, out);
}


/* variables */

static ngx_int_t
ngx_http_aiserve_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_aiserve_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_aiserve_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                  *p;
    ngx_msec_int_t           usec;
    ngx_http_aiserve_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aiserve_module);

    if (ctx == NULL || ctx->model == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data == NGX_HTTP_AISERVE_VAR_MODEL) {
        v->len = ctx->model->name.len;
        v->data = ctx->model->name.data;
        v->valid = 1;
        v->no_cacheable = 0;
        v->not_found = 0;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN + 8);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    switch (data) {

    case NGX_HTTP_AISERVE_VAR_PROMPT_TOKENS:
        p = ngx_sprintf(p, "%ui", ctx->prompt_tokens);
        break;

    case NGX_HTTP_AISERVE_VAR_BATCH_SIZE:
        p = ngx_sprintf(p, "%ui", ctx->batch_size);
        break;

    default:
        /* seconds with microsecond resolution, like $request_time has ms */
        usec = (data == NGX_HTTP_AISERVE_VAR_INFER_TIME) ? ctx->infer_usec
                                                         : ctx->queue_usec;
        p = ngx_sprintf(p, "%T.%06M", (time_t) (usec / 1000000),
                        (ngx_msec_t) (usec % 1000000));
        break;
    }

    v->len = p - v->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
