/*
 * aiserve-embed: runs a model directory on lines of stdin with the engine
 * the nginx module uses (tokenizer + encoder) and prints one JSON line per
 * input: the embedding of a BertModel / sentence-transformers model, or the
 * logits of a classifier.  See --help.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aiserve_model.h"
#include "aiserve_tokenizer.h"


static void
usage(FILE *f)
{
    fprintf(f,
"usage: aiserve-embed [options] MODEL_DIR\n"
"\n"
"Reads text from stdin, one input per line, runs the model in MODEL_DIR\n"
"(config.json, model.safetensors, tokenizer.json or vocab.txt, and for\n"
"sentence-transformers models modules.json + 1_Pooling) and writes one\n"
"JSON line per input:\n"
"  BertModel (embeddings)             {\"embedding\": [...], \"n_tokens\": N}\n"
"  BertForSequenceClassification      {\"logits\": [...], \"scores\": [...],\n"
"                                      \"label\": \"...\", \"n_tokens\": N}\n"
"    scores: softmax (single-label), sigmoid (multi-label), the logit\n"
"    (regression)\n"
"  BertForTokenClassification         {\"tokens\": [...], \"logits\":\n"
"                                      [[...], ...], \"labels\": [...]}\n"
"or {\"error\": \"...\"} for an input that cannot be run.\n"
"\n"
"A line that starts with '{' is JSON: {\"text\": \"...\", \"text_pair\":\n"
"\"...\"}.  Any other line is the text itself; with --pair it is\n"
"TEXT<TAB>TEXT_PAIR (a cross-encoder's query and passage).\n"
"\n"
"Inputs are truncated to --max-length tokens, by default\n"
"sentence_bert_config.json's max_seq_length, else the tokenizer's\n"
"truncation, else max_position_embeddings.\n"
"\n"
"options:\n"
"  --pair             plain lines are TEXT<TAB>TEXT_PAIR\n"
"  --max-length N     truncate to N tokens, special tokens included\n"
"  --batch N          sequences per forward pass (default 32)\n"
"  --threads N        BLAS threads (default 1)\n"
"  --tokenizer DIR    the tokenizer files of DIR (for a head-only or LoRA\n"
"                     directory: its base's), default MODEL_DIR's\n"
"  -h, --help         this text\n"
"\n"
"example:\n"
"  echo 'Hello, world!' | tools/aiserve-embed models/all-MiniLM-L6-v2\n");
}


typedef struct {
    json_t              *out;          /* result or error, once known */
    aiserve_encoding_t   enc;
    int                  have_enc;
} item_t;


/* max_seq_length of sentence_bert_config.json, or 0. */
static size_t
st_max_seq_length(const char *dir)
{
    char     path[4096];
    json_t  *j, *v;
    size_t   n = 0;

    snprintf(path, sizeof(path), "%s/sentence_bert_config.json", dir);
    j = json_load_file(path, 0, NULL);
    if (j != NULL) {
        v = json_object_get(j, "max_seq_length");
        if (json_is_integer(v) && json_integer_value(v) > 0) {
            n = (size_t) json_integer_value(v);
        }
        json_decref(j);
    }
    return n;
}


static json_t *
floats_json(const float *v, size_t n)
{
    json_t  *a = json_array();
    size_t   i;

    for (i = 0; i < n; i++) {
        json_array_append_new(a, json_real(v[i]));
    }
    return a;
}


static size_t
argmax(const float *v, size_t n)
{
    size_t  i, best = 0;

    for (i = 1; i < n; i++) {
        if (v[i] > v[best]) {
            best = i;
        }
    }
    return best;
}


/* The JSON result of one sequence from the forward pass's output. */
static json_t *
result_json(const aiserve_model_t *m, const aiserve_tok_t *tok,
    const aiserve_encoding_t *enc, const float *out)
{
    const aiserve_model_info_t  *info = aiserve_model_info(m);
    size_t                       i, nl = info->num_labels;
    json_t                      *o = json_object(), *a, *labels, *toks;
    float                        mx, sum, *scores;
    const char                  *t;

    json_object_set_new(o, "n_tokens", json_integer((json_int_t)
                                                    enc->n_tokens));
    switch (info->arch) {
    case AISERVE_ARCH_BERT_MODEL:
        json_object_set_new(o, "embedding",
                            floats_json(out, info->hidden_size));
        break;

    case AISERVE_ARCH_SEQUENCE_CLASSIFICATION:
        json_object_set_new(o, "logits", floats_json(out, nl));
        scores = malloc(nl * sizeof(float));
        mx = out[argmax(out, nl)];
        sum = 0;
        for (i = 0; i < nl; i++) {
            switch (info->problem_type) {
            case AISERVE_PROBLEM_SINGLE_LABEL:
                scores[i] = expf(out[i] - mx);
                sum += scores[i];
                break;
            case AISERVE_PROBLEM_MULTI_LABEL:
                scores[i] = 1.f / (1.f + expf(-out[i]));
                break;
            case AISERVE_PROBLEM_REGRESSION:
                scores[i] = out[i];
                break;
            }
        }
        if (info->problem_type == AISERVE_PROBLEM_SINGLE_LABEL) {
            for (i = 0; i < nl; i++) {
                scores[i] /= sum;
            }
        }
        json_object_set_new(o, "scores", floats_json(scores, nl));
        json_object_set_new(o, "label",
                            json_string(info->id2label[argmax(out, nl)]));
        free(scores);
        break;

    case AISERVE_ARCH_TOKEN_CLASSIFICATION:
        a = json_array();
        labels = json_array();
        toks = json_array();
        for (i = 0; i < enc->n_tokens; i++) {
            json_array_append_new(a, floats_json(out + i * nl, nl));
            json_array_append_new(labels, json_string(
                info->id2label[argmax(out + i * nl, nl)]));
            t = aiserve_tok_id_to_token(tok, enc->input_ids[i]);
            json_array_append_new(toks, t ? json_string(t) : json_null());
        }
        json_object_set_new(o, "tokens", toks);
        json_object_set_new(o, "logits", a);
        json_object_set_new(o, "labels", labels);
        break;
    }
    return o;
}


static void
print_json(json_t *o)
{
    char  *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));

    puts(s);
    free(s);
}


/* Runs and prints items[0..n): tokenized ones in one packed batch. */
static void
flush(const aiserve_model_t *m, const aiserve_tok_t *tok,
    aiserve_scratch_t *scratch, item_t *items, size_t n)
{
    aiserve_batch_t  b;
    int32_t         *ids, *types;
    size_t          *lens, i, ns = 0, T = 0, per, off;
    float           *out;
    char             err[512];

    for (i = 0; i < n; i++) {
        if (items[i].have_enc) {
            T += items[i].enc.n_tokens;
        }
    }
    ids = malloc((T + 1) * sizeof(int32_t));
    types = malloc((T + 1) * sizeof(int32_t));
    lens = malloc((n + 1) * sizeof(size_t));
    T = 0;
    for (i = 0; i < n; i++) {
        if (items[i].have_enc) {
            memcpy(ids + T, items[i].enc.input_ids,
                   items[i].enc.n_tokens * sizeof(int32_t));
            memcpy(types + T, items[i].enc.token_type_ids,
                   items[i].enc.n_tokens * sizeof(int32_t));
            T += items[i].enc.n_tokens;
            lens[ns++] = items[i].enc.n_tokens;
        }
    }
    b.input_ids = ids;
    b.token_type_ids = types;
    b.seq_lens = lens;
    b.n_seqs = ns;
    out = malloc((aiserve_model_output_len(m, &b) + 1) * sizeof(float));

    if (ns > 0 && aiserve_model_forward(m, &b, scratch, out, err,
                                        sizeof(err)) != 0)
    {
        for (i = 0; i < n; i++) {
            if (items[i].have_enc) {
                items[i].out = json_pack("{ss}", "error", err);
            }
        }
    } else {
        off = 0;
        for (i = 0; i < n; i++) {
            if (!items[i].have_enc) {
                continue;
            }
            items[i].out = result_json(m, tok, &items[i].enc, out + off);
            b.seq_lens = &items[i].enc.n_tokens;
            b.n_seqs = 1;
            per = aiserve_model_output_len(m, &b);
            off += per;
        }
    }

    for (i = 0; i < n; i++) {
        print_json(items[i].out);
        json_decref(items[i].out);
        if (items[i].have_enc) {
            aiserve_encoding_free(&items[i].enc);
        }
        memset(&items[i], 0, sizeof(items[i]));
    }
    fflush(stdout);
    free(ids);
    free(types);
    free(lens);
    free(out);
}


int
main(int argc, char **argv)
{
    const aiserve_model_info_t  *info;
    aiserve_model_t             *m;
    aiserve_tok_t               *tok;
    aiserve_scratch_t           *scratch;
    aiserve_tok_opts_t           opts;
    item_t                      *items;
    const char                  *dir = NULL, *tok_dir = NULL, *text, *pair;
    char                        *line = NULL, *tab, err[1024];
    size_t                       cap = 0, n = 0, batch = 32, max_length = 0;
    size_t                       text_len, pair_len;
    ssize_t                      len;
    int                          i, pair_mode = 0, threads = 1;
    json_t                      *j;
    json_error_t                 jerr;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--pair") == 0) {
            pair_mode = 1;
        } else if (strcmp(argv[i], "--max-length") == 0 && i + 1 < argc) {
            max_length = (size_t) strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            batch = (size_t) strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc) {
            tok_dir = argv[++i];
        } else if (argv[i][0] == '-' || dir != NULL) {
            usage(stderr);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    if (dir == NULL || batch == 0 || threads < 1) {
        usage(stderr);
        return 2;
    }

    m = aiserve_model_load(dir, err, sizeof(err));
    if (m == NULL) {
        fprintf(stderr, "aiserve-embed: %s\n", err);
        return 1;
    }
    tok = aiserve_tok_load(tok_dir ? tok_dir : dir, err, sizeof(err));
    if (tok == NULL) {
        fprintf(stderr, "aiserve-embed: %s\n", err);
        aiserve_model_free(m);
        return 1;
    }
    info = aiserve_model_info(m);
    if (max_length == 0) {
        max_length = st_max_seq_length(dir);
    }
    if (max_length == 0) {
        max_length = aiserve_tok_model_max_length(tok);
    }
    if (max_length == 0 || max_length > info->max_position_embeddings) {
        max_length = info->max_position_embeddings;
    }
    aiserve_tok_opts_default(&opts);
    opts.max_length = max_length;
    opts.truncation = 1;

    aiserve_set_num_threads(threads);
    scratch = aiserve_scratch_create(m, batch * max_length, err, sizeof(err));
    items = calloc(batch, sizeof(item_t));
    if (scratch == NULL || items == NULL) {
        fprintf(stderr, "aiserve-embed: %s\n", scratch ? "out of memory"
                                                       : err);
        return 1;
    }

    while ((len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n') {
            line[--len] = '\0';
        }
        if (len > 0 && line[len - 1] == '\r') {
            line[--len] = '\0';
        }
        j = NULL;
        pair = NULL;
        pair_len = 0;
        text = line;
        text_len = (size_t) len;
        if (len > 0 && line[0] == '{') {
            j = json_loadb(line, (size_t) len, JSON_ALLOW_NUL, &jerr);
            if (j == NULL || !json_is_string(json_object_get(j, "text"))) {
                items[n].out = json_pack("{ss}", "error", j == NULL
                    ? jerr.text : "JSON input needs a \"text\" string");
                json_decref(j);
                goto next;
            }
            text = json_string_value(json_object_get(j, "text"));
            text_len = json_string_length(json_object_get(j, "text"));
            if (json_is_string(json_object_get(j, "text_pair"))) {
                pair = json_string_value(json_object_get(j, "text_pair"));
                pair_len = json_string_length(json_object_get(j,
                                                              "text_pair"));
            }
        } else if (pair_mode) {
            tab = memchr(line, '\t', (size_t) len);
            if (tab == NULL) {
                items[n].out = json_pack("{ss}", "error",
                                         "--pair: line has no TAB");
                goto next;
            }
            *tab = '\0';
            text_len = (size_t) (tab - line);
            pair = tab + 1;
            pair_len = (size_t) len - text_len - 1;
        }
        if (aiserve_tok_encode(tok, text, text_len, pair, pair_len, &opts,
                               &items[n].enc, err, sizeof(err)) != 0)
        {
            items[n].out = json_pack("{ss}", "error", err);
        } else if (items[n].enc.n_tokens == 0) {
            aiserve_encoding_free(&items[n].enc);
            items[n].out = json_pack("{ss}", "error", "no tokens");
        } else {
            items[n].have_enc = 1;
        }
        json_decref(j);
    next:
        if (++n == batch) {
            flush(m, tok, scratch, items, n);
            n = 0;
        }
    }
    if (n > 0) {
        flush(m, tok, scratch, items, n);
    }

    free(line);
    free(items);
    aiserve_scratch_free(scratch);
    aiserve_tok_free(tok);
    aiserve_model_free(m);
    return 0;
}
