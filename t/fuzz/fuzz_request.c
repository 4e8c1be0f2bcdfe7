/*
 * libFuzzer target for the request side of the aiserve routes: a JSON
 * body, parsed as the handler parses it, goes through the code the module
 * runs for every request (src/ngx_http_aiserve_request.c: the route, the
 * Inference API's "parameters", the field names of the shape, then the
 * validation and tokenization of the inputs), for one location setting:
 * the input's first byte picks the model, the api= and the model's
 * max_seq; the rest is the body, parsed and its invalid UTF-8 repaired as
 * the handler does (src/ngx_http_aiserve_body.c).
 *
 * Besides ASan and UBSan, the target checks what the handler relies on: a
 * refusal has a status, a code and a message; an accepted request has
 * token ids within the vocabulary, sequences within max_seq (/tokenize
 * excepted) and no more tokens in all than aiserve_max_request_tokens.
 *
 * Models: models/tiny-st-cls (embeddings), tiny-bert-seq-cls
 * (classification, and rerank as task=rerank), tiny-bert-ner (NER), read
 * from the repository's root (make runs the target there).  Seeds: the
 * request bodies of the t/ suites (make fuzz-request).  Build and run:
 * make fuzz-request FUZZ_SECONDS=300
 */
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_aiserve_infer.h"
#include "fuzz_alloc.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_N_MODELS  4

static const char  *fuzz_dirs[FUZZ_N_MODELS] = {
    "models/tiny-st-cls", "models/tiny-bert-seq-cls",
    "models/tiny-bert-seq-cls", "models/tiny-bert-ner"
};

static ngx_http_aiserve_model_t  fuzz_models[FUZZ_N_MODELS];
static size_t                    fuzz_max_position[FUZZ_N_MODELS];


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int                        i;
    char                       err[512];
    ngx_http_aiserve_model_t  *m;
    static const char         *names[FUZZ_N_MODELS] = {
        "tiny", "tiny-cls", "tiny-rerank", "tiny-ner"
    };
    static const ngx_uint_t    tasks[FUZZ_N_MODELS] = {
        NGX_HTTP_AISERVE_TASK_EMBED, NGX_HTTP_AISERVE_TASK_CLASSIFY,
        NGX_HTTP_AISERVE_TASK_RERANK, NGX_HTTP_AISERVE_TASK_NER
    };

    (void) argc;
    (void) argv;

    for (i = 0; i < FUZZ_N_MODELS; i++) {
        m = &fuzz_models[i];
        m->name.data = (u_char *) names[i];
        m->name.len = strlen(names[i]);
        m->task = tasks[i];
        m->model = aiserve_model_load(fuzz_dirs[i], err, sizeof(err));
        m->tok = m->model ? aiserve_tok_load(fuzz_dirs[i], err, sizeof(err))
                          : NULL;
        if (m->model == NULL || m->tok == NULL) {
            fprintf(stderr, "fuzz_request: %s: %s (run from the "
                    "repository's root)\n", fuzz_dirs[i], err);
            exit(1);
        }
        m->info = aiserve_model_info(m->model);
        fuzz_max_position[i] = m->info->max_position_embeddings;
    }

    return 0;
}


static void
fuzz_check(ngx_http_aiserve_ctx_t *ctx)
{
    size_t                     j;
    ngx_uint_t                 i;
    ngx_http_aiserve_seq_t    *s;
    ngx_http_aiserve_model_t  *m = ctx->model;

    if (ctx->done) {
        if (ctx->error.status < 400 || ctx->error.code == NULL
            || ctx->error.message[0] == '\0')
        {
            fprintf(stderr, "a refusal without status, code or message\n");
            abort();
        }
        return;
    }

    if (ctx->error.status != 0 || ctx->n_seqs == 0
        || ctx->prompt_tokens > ctx->alcf->max_request_tokens)
    {
        fprintf(stderr, "accepted: error %u, %u sequences, %u tokens\n",
                (unsigned) ctx->error.status, (unsigned) ctx->n_seqs,
                (unsigned) ctx->prompt_tokens);
        abort();
    }

    for (i = 0; i < ctx->n_seqs; i++) {
        s = &ctx->seqs[i];
        if (s->n_tokens > m->max_seq
            && ctx->api != NGX_HTTP_AISERVE_API_TOKENIZE)
        {
            fprintf(stderr, "sequence %u: %zu tokens > max_seq %zu\n",
                    (unsigned) i, s->n_tokens, m->max_seq);
            abort();
        }
        for (j = 0; j < s->n_tokens; j++) {
            if (s->input_ids[j] < 0
                || (size_t) s->input_ids[j] >= m->info->vocab_size)
            {
                fprintf(stderr, "sequence %u: token id %d\n", (unsigned) i,
                        (int) s->input_ids[j]);
                abort();
            }
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_uint_t                    i, sel, repaired;
    json_t                       *doc;
    json_error_t                  jerr;
    ngx_http_aiserve_ctx_t       *ctx;
    ngx_http_aiserve_model_t     *m;
    ngx_http_aiserve_loc_conf_t   alcf;

    if (size < 1) {
        return 0;
    }

    /* bits 0-3: api=, 4-5: the model, 6: max_seq 16 (else the model's
     * max_position_embeddings) */
    sel = data[0];
    m = &fuzz_models[(sel >> 4) & 3];

    memset(&alcf, 0, sizeof(alcf));
    alcf.api = sel & 15;
    alcf.model = m;
    alcf.max_inputs = 16;
    alcf.max_request_tokens = 512;

    /* the api= values nginx accepts for the model (info has no body) */
    if (alcf.api >= NGX_HTTP_AISERVE_N_APIS
        || alcf.api == NGX_HTTP_AISERVE_API_INFO
        || !ngx_http_aiserve_api_fits(alcf.api, m->task))
    {
        return 0;
    }

    m->max_seq = (sel & 64) ? 16 : fuzz_max_position[(sel >> 4) & 3];
    m->truncate = 0;

    /* as the handler: invalid UTF-8 repaired (ngx_http_aiserve_body.c) */
    if (ngx_http_aiserve_body_parse(data + 1, size - 1, fuzz_alloc, NULL,
                                    &doc, &repaired, &jerr)
        != NGX_OK)
    {
        abort();
    }

    if (doc == NULL || !json_is_object(doc)) {
        fuzz_free_all();
        json_decref(doc);
        return 0;
    }

    ctx = calloc(1, sizeof(ngx_http_aiserve_ctx_t));
    if (ctx == NULL) {
        abort();
    }
    ctx->model = m;
    ctx->alcf = &alcf;
    ctx->doc = doc;
    ctx->repaired = repaired;
    ctx->alloc = fuzz_alloc;

    /* as ngx_http_aiserve_api_prepare() */
    ctx->api = ngx_http_aiserve_route(ctx);

    if (ngx_http_aiserve_parameters(ctx) == NGX_OK
        && ngx_http_aiserve_fields(ctx) == NGX_OK)
    {
        ngx_http_aiserve_request_inputs(ctx);
    }

    fuzz_check(ctx);

    for (i = 0; i < ctx->n_seqs; i++) {
        if (ctx->seqs[i].enc) {
            aiserve_encoding_free(ctx->seqs[i].enc);
        }
    }

    json_decref(ctx->doc);
    free(ctx);
    fuzz_free_all();

    return 0;
}
