/*
 * Parity of the tokenizer with Hugging Face `tokenizers` on the whole
 * corpus (t/data/tokenizer/corpus.jsonl.gz), for three vocabularies, in
 * single and pair mode and with truncation (longest_first, right and left).
 * Reference values come from tools/gen-tokenizer-goldens.py.
 *
 * Needs models/all-MiniLM-L6-v2 (make deps).
 */
#include <unistd.h>

#include "tap.h"
#include "tok_golden.h"

#define DATA  "t/data/tokenizer/"

static const char *vocabs[][2] = {
    { "uncased", "models/all-MiniLM-L6-v2" },
    { "cased",   "t/data/tokenizers/bert-base-cased" },
    { "chinese", "t/data/tokenizers/bert-base-chinese" },
};


static void
parity_mode(const aiserve_tok_t *tok, const char *name, const char *mode,
    const golden_lines_t *corpus)
{
    golden_lines_t       gold;
    aiserve_tok_opts_t   opts;
    aiserve_encoding_t   enc;
    char                 path[256], err[256], why[320];
    size_t               i, j, equal, shown;
    int                  is_pair;

    snprintf(path, sizeof(path), DATA "golden-%s-%s.txt.gz", name, mode);
    if (golden_read(path, &gold) != 0 || gold.n != corpus->n) {
        tap_ok(0, "parity %s %s: read %s", name, mode, path);
        golden_free(&gold);
        return;
    }

    aiserve_tok_opts_default(&opts);
    opts.truncation = 0;
    is_pair = strcmp(mode, "pair") == 0;
    equal = 0;
    shown = 0;

    for (i = 0; i < corpus->n; i++) {
        j = (i + 1) % corpus->n;
        if (aiserve_tok_encode(tok, corpus->s[i], corpus->len[i],
                               is_pair ? corpus->s[j] : NULL,
                               is_pair ? corpus->len[j] : 0, &opts, &enc,
                               err, sizeof(err)) != 0)
        {
            snprintf(why, sizeof(why), "error: %s", err);
        } else {
            if (golden_equal(&enc, gold.s[i], corpus->s[i], corpus->len[i],
                             is_pair ? corpus->s[j] : NULL,
                             is_pair ? corpus->len[j] : 0, why, sizeof(why)))
            {
                equal++;
                why[0] = '\0';
            }
            aiserve_encoding_free(&enc);
        }
        if (why[0] && shown++ < 5) {
            tap_diag("%s %s line %zu: %s", name, mode, i + 1, why);
        }
    }

    tap_ok(equal == corpus->n, "parity %s %s: %zu/%zu lines equal (ids, "
           "type ids, offsets in code points and bytes)", name, mode, equal,
           corpus->n);
    golden_free(&gold);
}


static void
parity_trunc(const aiserve_tok_t *tok, const char *name,
    const golden_lines_t *corpus)
{
    golden_lines_t       gold;
    aiserve_tok_opts_t   opts;
    aiserve_encoding_t   enc;
    char                 path[256], err[256], why[320], dir[16];
    const char          *rec;
    size_t               i, equal, shown, line, ml;
    long                 pl;
    int                  off;

    snprintf(path, sizeof(path), DATA "golden-%s-trunc.txt.gz", name);
    if (golden_read(path, &gold) != 0) {
        tap_ok(0, "truncation %s: read %s", name, path);
        return;
    }

    equal = 0;
    shown = 0;
    for (i = 0; i < gold.n; i++) {
        if (sscanf(gold.s[i], "%zu %ld %zu %15[a-z];%n", &line, &pl, &ml, dir,
                   &off) != 4 || line >= corpus->n
            || pl >= (long) corpus->n)
        {
            snprintf(why, sizeof(why), "bad record");
            goto next;
        }
        rec = gold.s[i] + off;

        aiserve_tok_opts_default(&opts);
        opts.truncation = 1;
        opts.max_length = ml;
        opts.direction = strcmp(dir, "left") == 0 ? AISERVE_TRUNCATE_LEFT
                                                  : AISERVE_TRUNCATE_RIGHT;
        if (aiserve_tok_encode(tok, corpus->s[line], corpus->len[line],
                               pl >= 0 ? corpus->s[pl] : NULL,
                               pl >= 0 ? corpus->len[pl] : 0, &opts, &enc,
                               err, sizeof(err)) != 0)
        {
            snprintf(why, sizeof(why), "error: %s", err);
            goto next;
        }
        if (golden_equal(&enc, rec, corpus->s[line], corpus->len[line],
                         pl >= 0 ? corpus->s[pl] : NULL,
                         pl >= 0 ? corpus->len[pl] : 0, why, sizeof(why)))
        {
            equal++;
            why[0] = '\0';
        }
        aiserve_encoding_free(&enc);

    next:

        if (why[0] && shown++ < 5) {
            tap_diag("%s truncation record %zu: %s", name, i + 1, why);
        }
    }

    tap_ok(equal == gold.n, "truncation %s: %zu/%zu cases equal (max_length "
           "5..32, longest_first, right and left, single and pair)", name,
           equal, gold.n);
    golden_free(&gold);
}


/* a golden of LINE;IDS;TYPES;OFFS records (single mode) for tok */
static void
parity_lines(const aiserve_tok_t *tok, const char *name, const char *file,
    const golden_lines_t *corpus)
{
    char                 err[256], why[320];
    golden_lines_t       gold;
    aiserve_tok_opts_t   opts;
    aiserve_encoding_t   enc;
    size_t               i, line, equal, shown;
    int                  off;

    if (golden_read(file, &gold) != 0) {
        tap_ok(0, "read %s", file);
        return;
    }

    aiserve_tok_opts_default(&opts);
    opts.truncation = 0;
    equal = 0;
    shown = 0;
    for (i = 0; i < gold.n; i++) {
        why[0] = '\0';
        if (sscanf(gold.s[i], "%zu;%n", &line, &off) != 1
            || line >= corpus->n)
        {
            snprintf(why, sizeof(why), "bad record");
        } else if (aiserve_tok_encode(tok, corpus->s[line], corpus->len[line],
                                      NULL, 0, &opts, &enc, err, sizeof(err))
                   != 0)
        {
            snprintf(why, sizeof(why), "error: %s", err);
        } else {
            if (golden_equal(&enc, gold.s[i] + off, corpus->s[line],
                             corpus->len[line], NULL, 0, why, sizeof(why)))
            {
                equal++;
                why[0] = '\0';
            }
            aiserve_encoding_free(&enc);
        }
        if (why[0] && shown++ < 5) {
            tap_diag("%s line %zu: %s", name, line + 1, why);
        }
    }

    tap_ok(equal == gold.n, "parity %s: %zu/%zu lines equal", name, equal,
           gold.n);
    golden_free(&gold);
}


/*
 * Added tokens (raw and normalized, lstrip, rstrip, single_word, ids past
 * the vocabulary): MiniLM's tokenizer.json with those of
 * t/data/tokenizer/added-tokens.json, and the Chinese vocab.txt with
 * tokenizer_config.json's added_tokens_decoder.
 */
static void
parity_added(const golden_lines_t *corpus)
{
    json_t         *added, *patches;
    json_error_t    jerr;
    char            err[256];
    aiserve_tok_t  *tok;

    added = json_load_file(DATA "added-tokens.json", 0, &jerr);
    patches = json_pack("[[[s]o]]", "added_tokens", added);
    tok = patches ? golden_minilm_patched(patches, err, sizeof(err)) : NULL;
    json_decref(patches);
    if (tap_ok(tok != NULL, "added tokens: load MiniLM with %s (%s)",
               DATA "added-tokens.json", tok ? "ok" : err))
    {
        tap_ok(aiserve_tok_token_to_id(tok, "New York") == 30523
               && strcmp(aiserve_tok_id_to_token(tok, 30531), "\xce\xa3") == 0
               && aiserve_tok_vocab_size(tok) == 30532,
               "added tokens: ids beyond the vocabulary (size %zu)",
               aiserve_tok_vocab_size(tok));
        parity_lines(tok, "uncased + added tokens",
                     DATA "golden-added-single.txt.gz", corpus);
        aiserve_tok_free(tok);
    }

    tok = aiserve_tok_load("t/data/tokenizers/bert-base-chinese-added", err,
                           sizeof(err));
    if (tap_ok(tok != NULL, "load bert-base-chinese-added (%s)",
               tok ? "ok" : err))
    {
        tap_ok(aiserve_tok_token_to_id(tok, "[E1]") == 21128
               && aiserve_tok_token_to_id(tok, "Hello World") == 21129
               && aiserve_tok_vocab_size(tok) == 21130,
               "added_tokens_decoder: [E1] 21128, Hello World 21129");
        parity_lines(tok, "chinese vocab.txt + added_tokens_decoder",
                     DATA "golden-fallback-added-single.txt.gz", corpus);
        aiserve_tok_free(tok);
    }
}


/*
 * Each variant of variants.json (one setting of MiniLM's tokenizer.json
 * changed: subword prefix, word limit, normalizer flags or none, no
 * pre-tokenizer, BertProcessing, no post-processor, another template,
 * only_first / only_second truncation) against its golden, single and pair.
 */
static void
parity_variants(const golden_lines_t *corpus)
{
    json_t              *spec, *patches;
    json_error_t         jerr;
    const char          *name;
    char                 path[256], err[256], why[320], mode[16];
    aiserve_tok_t       *tok;
    golden_lines_t       gold;
    aiserve_tok_opts_t   opts;
    aiserve_encoding_t   enc;
    size_t               i, line, pl, equal, shown;
    int                  off, rc, is_pair;

    spec = json_load_file(DATA "variants.json", 0, &jerr);
    if (!tap_ok(json_is_object(spec), "read " DATA "variants.json")) {
        return;
    }

    json_object_foreach(spec, name, patches) {
        tok = golden_minilm_patched(patches, err, sizeof(err));
        snprintf(path, sizeof(path), DATA "golden-variant-%s.txt.gz", name);
        if (tok == NULL || golden_read(path, &gold) != 0) {
            tap_ok(0, "variant %s: %s", name, tok ? path : err);
            aiserve_tok_free(tok);
            continue;
        }

        aiserve_tok_opts_default(&opts);
        equal = 0;
        shown = 0;
        for (i = 0; i < gold.n; i++) {
            why[0] = '\0';
            if (sscanf(gold.s[i], "%zu %15[a-z];%n", &line, mode, &off) != 2
                || line >= corpus->n)
            {
                snprintf(why, sizeof(why), "bad record");
                goto next;
            }
            is_pair = strcmp(mode, "pair") == 0;
            pl = (line + 1) % corpus->n;
            rc = aiserve_tok_encode(tok, corpus->s[line], corpus->len[line],
                                    is_pair ? corpus->s[pl] : NULL,
                                    is_pair ? corpus->len[pl] : 0, &opts,
                                    &enc, err, sizeof(err));
            if (strcmp(gold.s[i] + off, "ERROR") == 0) {
                if (rc == 0) {
                    snprintf(why, sizeof(why), "no error, the reference "
                             "fails");
                    aiserve_encoding_free(&enc);
                } else {
                    equal++;
                }
            } else if (rc != 0) {
                snprintf(why, sizeof(why), "error: %s", err);
            } else {
                if (golden_equal(&enc, gold.s[i] + off, corpus->s[line],
                                 corpus->len[line],
                                 is_pair ? corpus->s[pl] : NULL,
                                 is_pair ? corpus->len[pl] : 0, why,
                                 sizeof(why)))
                {
                    equal++;
                    why[0] = '\0';
                }
                aiserve_encoding_free(&enc);
            }

        next:

            if (why[0] && shown++ < 3) {
                tap_diag("variant %s, line %zu %s: %s", name, line + 1,
                         mode, why);
            }
        }

        tap_ok(equal == gold.n, "variant %s: %zu/%zu encodings equal", name,
               equal, gold.n);
        golden_free(&gold);
        aiserve_tok_free(tok);
    }

    json_decref(spec);
}


int
main(void)
{
    golden_lines_t   corpus;
    aiserve_tok_t   *tok;
    char             err[512];
    size_t           v;

    if (golden_corpus(DATA "corpus.jsonl.gz", &corpus) != 0) {
        tap_ok(0, "read " DATA "corpus.jsonl.gz");
        return tap_done();
    }
    tap_ok(corpus.n >= 5000, "corpus has %zu lines (>= 5000)", corpus.n);

    for (v = 0; v < sizeof(vocabs) / sizeof(vocabs[0]); v++) {
        tok = aiserve_tok_load(vocabs[v][1], err, sizeof(err));
        if (!tap_ok(tok != NULL, "load %s (%s)", vocabs[v][0], vocabs[v][1])) {
            tap_diag("%s (run make deps for models/)", err);
            continue;
        }
        parity_mode(tok, vocabs[v][0], "single", &corpus);
        parity_mode(tok, vocabs[v][0], "pair", &corpus);
        parity_trunc(tok, vocabs[v][0], &corpus);
        aiserve_tok_free(tok);
    }

    parity_added(&corpus);
    parity_variants(&corpus);

    golden_free(&corpus);

    return tap_done();
}
