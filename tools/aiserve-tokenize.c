/*
 * aiserve-tokenize: tokenizes lines of stdin with a model directory's
 * tokenizer (the same code the nginx module runs) and prints one JSON line
 * per input line.  See --help.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aiserve_tokenizer.h"


static void
usage(FILE *f)
{
    fprintf(f,
"usage: aiserve-tokenize [options] MODEL_DIR [--pair]\n"
"\n"
"Reads text from stdin, one input per line, and writes one JSON line per\n"
"input: {\"input_ids\", \"token_type_ids\", \"tokens\", \"offsets\" (code\n"
"points of the original text, [start, end)), \"byte_offsets\" (UTF-8\n"
"bytes), \"n_tokens_untruncated\"}, or {\"error\": \"...\"}.\n"
"\n"
"A line that starts with '{' is JSON: {\"text\": \"...\", \"text_pair\":\n"
"\"...\"} (escapes such as \\n, \\t, \\u0000 allowed).  Any other line is\n"
"the text itself; with --pair it is TEXT<TAB>TEXT_PAIR.\n"
"\n"
"MODEL_DIR holds tokenizer.json, or vocab.txt + tokenizer_config.json.\n"
"\n"
"options:\n"
"  --pair             plain lines are TEXT<TAB>TEXT_PAIR\n"
"  --max-length N     truncate to N tokens, special tokens included\n"
"                     (default: tokenizer.json's truncation, if any)\n"
"  --no-truncation    never truncate\n"
"  --left             truncate from the left\n"
"  --no-special       do not add [CLS]/[SEP]\n"
"  -h, --help         this text\n"
"\n"
"example:\n"
"  echo 'Hello, world!' | tools/aiserve-tokenize models/all-MiniLM-L6-v2\n");
}


static json_t *
encoding_json(const aiserve_tok_t *tok, const aiserve_encoding_t *enc)
{
    json_t      *o, *ids, *types, *toks, *offs, *boffs;
    size_t       i;
    const char  *t;

    o = json_object();
    ids = json_array();
    types = json_array();
    toks = json_array();
    offs = json_array();
    boffs = json_array();

    for (i = 0; i < enc->n_tokens; i++) {
        json_array_append_new(ids, json_integer(enc->input_ids[i]));
        json_array_append_new(types, json_integer(enc->token_type_ids[i]));
        t = aiserve_tok_id_to_token(tok, enc->input_ids[i]);
        json_array_append_new(toks, t ? json_string(t) : json_null());
        json_array_append_new(offs, json_pack("[II]",
                                  (json_int_t) enc->offsets[2 * i],
                                  (json_int_t) enc->offsets[2 * i + 1]));
        json_array_append_new(boffs, json_pack("[II]",
                                  (json_int_t) enc->byte_offsets[2 * i],
                                  (json_int_t) enc->byte_offsets[2 * i + 1]));
    }

    json_object_set_new(o, "input_ids", ids);
    json_object_set_new(o, "token_type_ids", types);
    json_object_set_new(o, "tokens", toks);
    json_object_set_new(o, "offsets", offs);
    json_object_set_new(o, "byte_offsets", boffs);
    json_object_set_new(o, "n_tokens_untruncated",
                        json_integer((json_int_t) enc->n_tokens_untruncated));

    return o;
}


static void
print_json(json_t *o)
{
    char  *s;

    s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s != NULL) {
        puts(s);
        free(s);
    }
    json_decref(o);
}


static void
print_error(const char *msg)
{
    print_json(json_pack("{ss}", "error", msg));
}


int
main(int argc, char **argv)
{
    const char          *dir, *text, *pair;
    aiserve_tok_t       *tok;
    aiserve_tok_opts_t   opts;
    aiserve_encoding_t   enc;
    char                 err[512], *line, *tab;
    size_t               cap, text_len, pair_len;
    ssize_t              n;
    int                  i, is_pair, failed;
    json_t              *j, *jt, *jp;
    json_error_t         jerr;

    dir = NULL;
    is_pair = 0;
    aiserve_tok_opts_default(&opts);

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--pair") == 0) {
            is_pair = 1;
        } else if (strcmp(argv[i], "--max-length") == 0 && i + 1 < argc) {
            opts.max_length = (size_t) strtoul(argv[++i], NULL, 10);
            opts.truncation = 1;
        } else if (strcmp(argv[i], "--no-truncation") == 0) {
            opts.truncation = 0;
        } else if (strcmp(argv[i], "--left") == 0) {
            opts.direction = AISERVE_TRUNCATE_LEFT;
        } else if (strcmp(argv[i], "--no-special") == 0) {
            opts.add_special_tokens = 0;
        } else if (argv[i][0] == '-' || dir != NULL) {
            fprintf(stderr, "aiserve-tokenize: unexpected argument \"%s\"\n",
                    argv[i]);
            usage(stderr);
            return 2;
        } else {
            dir = argv[i];
        }
    }

    if (dir == NULL) {
        usage(stderr);
        return 2;
    }

    tok = aiserve_tok_load(dir, err, sizeof(err));
    if (tok == NULL) {
        fprintf(stderr, "aiserve-tokenize: %s\n", err);
        return 1;
    }

    line = NULL;
    cap = 0;
    failed = 0;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') {
            line[--n] = '\0';
        }

        j = NULL;
        pair = NULL;
        pair_len = 0;
        if (n > 0 && line[0] == '{') {
            j = json_loadb(line, (size_t) n, JSON_ALLOW_NUL, &jerr);
            jt = json_object_get(j, "text");
            jp = json_object_get(j, "text_pair");
            if (!json_is_string(jt) || (jp != NULL && !json_is_null(jp)
                                        && !json_is_string(jp)))
            {
                print_error(j ? "JSON line needs a string \"text\"" : jerr.text);
                json_decref(j);
                failed = 1;
                continue;
            }
            text = json_string_value(jt);
            text_len = json_string_length(jt);
            if (json_is_string(jp)) {
                pair = json_string_value(jp);
                pair_len = json_string_length(jp);
            }
        } else {
            text = line;
            text_len = (size_t) n;
            if (is_pair) {
                tab = memchr(line, '\t', (size_t) n);
                if (tab == NULL) {
                    pair = line + n;
                } else {
                    text_len = (size_t) (tab - line);
                    pair = tab + 1;
                }
                pair_len = (size_t) (line + n - pair);
            }
        }

        if (aiserve_tok_encode(tok, text, text_len, pair, pair_len, &opts,
                               &enc, err, sizeof(err)) != 0)
        {
            print_error(err);
            failed = 1;
        } else {
            print_json(encoding_json(tok, &enc));
            aiserve_encoding_free(&enc);
        }
        json_decref(j);
    }

    free(line);
    aiserve_tok_free(tok);

    return failed;
}
