/*
 * Tokenizer unit tests: the named cases of shared/cases/tokenizer.jsonl
 * (reference values in t/data/tokenizer/cases.jsonl from
 * tools/gen-tokenizer-goldens.py), every code point against the reference's
 * Unicode behaviour (t/data/tokenizer/unicode-ref.txt.gz from
 * tools/gen-tok-unicode.py), bad input, a 10 MB text, loading errors and
 * the vocabulary API.
 *
 * Needs models/all-MiniLM-L6-v2 (make deps).
 */
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"
#include "tok_golden.h"
#include "aiserve_tok_unicode.h"

#define UNCASED  "models/all-MiniLM-L6-v2"


static aiserve_tok_t *
load(const char *dir)
{
    static struct {
        char           dir[256];
        aiserve_tok_t *tok;
    }                 cache[8];
    static size_t     n;
    size_t            i;
    char              err[512];
    aiserve_tok_t    *tok;

    for (i = 0; i < n; i++) {
        if (strcmp(cache[i].dir, dir) == 0) {
            return cache[i].tok;
        }
    }

    tok = aiserve_tok_load(dir, err, sizeof(err));
    if (tok == NULL) {
        tap_diag("%s (models/ comes from make deps)", err);
    }
    if (n < 8) {
        snprintf(cache[n].dir, sizeof(cache[n].dir), "%s", dir);
        cache[n++].tok = tok;
    }

    return tok;
}


static size_t
count_id(const aiserve_encoding_t *enc, int32_t id)
{
    size_t  i, n;

    for (i = 0, n = 0; i < enc->n_tokens; i++) {
        n += enc->input_ids[i] == id;
    }

    return n;
}


static int
has_prefix_token(const aiserve_tok_t *tok, const aiserve_encoding_t *enc)
{
    size_t       i;
    const char  *t;

    for (i = 0; i < enc->n_tokens; i++) {
        t = aiserve_tok_id_to_token(tok, enc->input_ids[i]);
        if (t != NULL && strncmp(t, "##", 2) == 0) {
            return 1;
        }
    }

    return 0;
}


/* the property each case's "must" states, beyond equality */
static int
case_property(const char *id, const char *vocab, const char *text,
    const aiserve_tok_t *tok, const aiserve_encoding_t *enc, char *what,
    size_t what_len)
{
    int32_t  unk;
    size_t   n_text;

    unk = aiserve_tok_token_to_id(tok, "[UNK]");
    n_text = enc->n_tokens >= 2 ? enc->n_tokens - 2 : 0;
    what[0] = '\0';

    if (strcmp(id, "tok-08") == 0) {
        snprintf(what, what_len, "; 3 emoji runs -> 3 [UNK] at (0,1) (2,4) "
                 "(5,8)");
        return count_id(enc, unk) == 3 && enc->n_tokens == 5
               && enc->offsets[2] == 0 && enc->offsets[3] == 1
               && enc->offsets[4] == 2 && enc->offsets[5] == 4
               && enc->offsets[6] == 5 && enc->offsets[7] == 8;
    }
    if (strcmp(id, "tok-09") == 0) {
        snprintf(what, what_len, "; 8 tokens, no [UNK]");
        return n_text == 8 && count_id(enc, unk) == 0;
    }
    if (strcmp(id, "tok-10") == 0) {
        if (strcmp(vocab, "chinese") == 0) {
            snprintf(what, what_len, "; one token per ideograph");
            return n_text == 3 && !has_prefix_token(tok, enc);
        }
        snprintf(what, what_len, "; one word, ## continuations");
        return has_prefix_token(tok, enc);
    }
    if (strcmp(id, "tok-12") == 0) {
        if (strlen(text) == 100) {
            snprintf(what, what_len, "; 100 code points split normally");
            return count_id(enc, unk) == 0 && n_text > 1;
        }
        if (strlen(text) == 130) {
            snprintf(what, what_len, "; 130 code points -> one [UNK]");
            return n_text == 1 && enc->input_ids[1] == unk
                   && enc->offsets[3] == 130;
        }
        return 1;
    }
    if (strcmp(id, "tok-14") == 0 && enc->n_tokens > 3
        && enc->token_type_ids[enc->n_tokens - 1] == 1)
    {
        snprintf(what, what_len, "; [CLS] A [SEP] B [SEP], type ids 0 then "
                 "1");
        return enc->input_ids[0] == aiserve_tok_token_to_id(tok, "[CLS]")
               && enc->input_ids[enc->n_tokens - 1]
                  == aiserve_tok_token_to_id(tok, "[SEP]")
               && enc->token_type_ids[0] == 0;
    }
    if (strcmp(id, "tok-15") == 0) {
        snprintf(what, what_len, "; just [CLS] [SEP] (or [CLS] [SEP] [SEP])");
        return count_id(enc, unk) == 0
               && (enc->n_tokens == 2 || enc->n_tokens == 3);
    }

    return 1;
}


static void
named_cases(void)
{
    json_t              *j, *v;
    json_error_t         jerr;
    size_t               k, n, text_len, pair_len;
    const char          *id, *vocab, *model, *text, *pair;
    aiserve_tok_t       *tok;
    aiserve_tok_opts_t   opts;
    aiserve_encoding_t   enc;
    char                 rec[16384], why[320], err[256], what[128];
    int                  ok, prop;
    FILE                *f;
    char                *line;
    size_t               cap;
    ssize_t              r;

    f = fopen("t/data/tokenizer/cases.jsonl", "r");
    if (!tap_ok(f != NULL, "read t/data/tokenizer/cases.jsonl")) {
        return;
    }

    line = NULL;
    cap = 0;
    while ((r = getline(&line, &cap, f)) > 0) {
        j = json_loadb(line, (size_t) r, JSON_ALLOW_NUL, &jerr);
        id = json_string_value(json_object_get(j, "id"));
        vocab = json_string_value(json_object_get(j, "vocab"));
        model = json_string_value(json_object_get(j, "model"));
        text = json_string_value(json_object_get(j, "text"));
        text_len = json_string_length(json_object_get(j, "text"));
        v = json_object_get(j, "text_pair");
        pair = json_is_string(v) ? json_string_value(v) : NULL;
        pair_len = json_is_string(v) ? json_string_length(v) : 0;
        if (id == NULL || model == NULL || text == NULL) {
            tap_ok(0, "cases.jsonl: bad line");
            json_decref(j);
            continue;
        }

        /* the reference values as a golden record */
        n = 0;
        v = json_object_get(j, "ids");
        for (k = 0; k < json_array_size(v) && n < sizeof(rec) - 32; k++) {
            n += (size_t) snprintf(rec + n, sizeof(rec) - n, "%s%lld",
                                   k ? " " : "",
                                   json_integer_value(json_array_get(v, k)));
        }
        n += (size_t) snprintf(rec + n, sizeof(rec) - n, ";");
        v = json_object_get(j, "type_ids");
        for (k = 0; k < json_array_size(v) && n < sizeof(rec) - 32; k++) {
            n += (size_t) snprintf(rec + n, sizeof(rec) - n, "%lld",
                                   json_integer_value(json_array_get(v, k)));
        }
        n += (size_t) snprintf(rec + n, sizeof(rec) - n, ";");
        v = json_object_get(j, "offsets");
        for (k = 0; k < json_array_size(v) && n < sizeof(rec) - 32; k++) {
            n += (size_t) snprintf(rec + n, sizeof(rec) - n, "%s%lld %lld",
                     k ? " " : "",
                     json_integer_value(json_array_get(json_array_get(v, k),
                                                       0)),
                     json_integer_value(json_array_get(json_array_get(v, k),
                                                       1)));
        }

        tok = load(model);
        ok = 0;
        prop = 0;
        what[0] = '\0';
        snprintf(why, sizeof(why), "no tokenizer");
        if (tok != NULL) {
            aiserve_tok_opts_default(&opts);
            opts.truncation = 0;
            if (aiserve_tok_encode(tok, text, text_len, pair, pair_len, &opts,
                                   &enc, err, sizeof(err)) != 0)
            {
                snprintf(why, sizeof(why), "error: %s", err);
            } else {
                ok = golden_equal(&enc, rec, text, text_len, pair, pair_len,
                                  why, sizeof(why));
                prop = case_property(id, vocab, text, tok, &enc, what,
                                     sizeof(what));
                aiserve_encoding_free(&enc);
            }
        }
        tap_ok(ok && prop, "%s [%s]%s: ids, type ids, offsets as the "
               "reference%s", id, vocab, pair ? " pair" : "", what);
        if (!ok) {
            tap_diag("%s", why);
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
}


static int
parse_hex_list(const char *s, uint32_t *out, size_t max)
{
    size_t  n;
    char   *end;

    n = 0;
    while (*s && n < max) {
        out[n++] = (uint32_t) strtoul(s, &end, 16);
        if (end == s) {
            break;
        }
        s = end;
        while (*s == ' ') {
            s++;
        }
    }

    return (int) n;
}


/* one code point against the reference's flags (classes and \w),
 * lowercase and stripped forms (unicode-ref.txt.gz columns; empty strings:
 * no flags, unchanged) */
static int
unicode_check(uint32_t c, const char *want_flags, const char *lo,
    const char *st)
{
    uint32_t  want[8], got[16], d[8], l[3];
    size_t    n, nl, k;
    unsigned  cls;
    int       nw;
    char      flags[8];

    cls = aiserve_tok_uni_class(c);
    n = 0;
    if (cls & AISERVE_TOK_U_CONTROL) {
        flags[n++] = 'X';
    } else if (cls & AISERVE_TOK_U_SPACE) {
        flags[n++] = 'W';
    }
    if (cls & AISERVE_TOK_U_CHINESE) {
        flags[n++] = 'H';
    }
    if (cls & AISERVE_TOK_U_SPACE) {
        flags[n++] = 'S';
    } else if (cls & AISERVE_TOK_U_PUNCT) {
        flags[n++] = 'P';
    }
    if (aiserve_tok_uni_is_word(c)) {
        flags[n++] = 'w';
    }
    flags[n] = '\0';
    if (strcmp(flags, want_flags) != 0) {
        return 0;
    }

    /* lowercase (Rust char::to_lowercase) */
    nw = lo[0] ? parse_hex_list(lo, want, 8) : 0;
    if (nw == 0) {
        want[0] = c;
        nw = 1;
    }
    nl = (cls & AISERVE_TOK_U_LOWER) ? aiserve_tok_uni_lower(c, l) : 0;
    if (nl == 0) {
        l[0] = c;
        nl = 1;
    }
    if ((int) nl != nw || memcmp(l, want, nl * sizeof(uint32_t)) != 0) {
        return 0;
    }

    /* strip_accents: NFD, then drop Mn */
    if (strcmp(st, "-") == 0) {
        nw = 0;
    } else if (st[0] == '\0') {
        want[0] = c;
        nw = 1;
    } else {
        nw = parse_hex_list(st, want, 8);
    }
    if (cls & AISERVE_TOK_U_NFD) {
        n = aiserve_tok_uni_nfd(c, d);
    } else {
        d[0] = c;
        n = 1;
    }
    nl = 0;
    for (k = 0; k < n; k++) {
        if (!(aiserve_tok_uni_class(d[k]) & AISERVE_TOK_U_MN)) {
            got[nl++] = d[k];
        }
    }

    return (int) nl == nw && memcmp(got, want, nl * sizeof(uint32_t)) == 0;
}


/* every code point (U+0000..U+10FFFF but surrogates) behaves as in the
 * reference: the file lists those with any flag or mapping; all others
 * must have none */
static void
unicode_exhaustive(void)
{
    golden_lines_t  g;
    size_t          i, k, bad, checked;
    uint32_t        a, b, c, next;
    char           *f[4] = { NULL, NULL, NULL, NULL }, *p;

    if (!tap_ok(golden_read("t/data/tokenizer/unicode-ref.txt.gz", &g) == 0,
                "read t/data/tokenizer/unicode-ref.txt.gz"))
    {
        return;
    }

    bad = 0;
    checked = 0;
    next = 0;
    for (i = 0; i <= g.n; i++) {
        if (i < g.n) {
            if (g.s[i][0] == '#') {
                continue;
            }
            p = g.s[i];
            for (k = 0; k < 4; k++) {
                f[k] = p;
                p = strchr(p, '\t');
                if (p != NULL) {
                    *p++ = '\0';
                } else {
                    p = f[k] + strlen(f[k]);
                }
            }
            a = (uint32_t) strtoul(f[0], &p, 16);
            b = *p == '-' ? (uint32_t) strtoul(p + 1, NULL, 16) : a;
        } else {
            a = 0x110000;
            b = a - 1;
        }

        for (c = next; c < a; c++) {
            if (c >= 0xD800 && c < 0xE000) {
                continue;
            }
            if (!unicode_check(c, "", "", "") && bad++ < 5) {
                tap_diag("U+%04X differs from the reference", c);
            }
            checked++;
        }
        for (c = a; c <= b && c < 0x110000; c++) {
            if (!unicode_check(c, f[1], f[2], f[3]) && bad++ < 5) {
                tap_diag("U+%04X differs from the reference (%s|%s|%s)", c,
                         f[1], f[2], f[3]);
            }
            checked++;
        }
        next = b + 1;
    }
    golden_free(&g);

    tap_ok(bad == 0 && checked == 0x110000 - 0x800, "Unicode: %zu code "
           "points classify, lowercase and strip accents as the reference "
           "(%zu differ)", checked, bad);
}


static void
bad_input(aiserve_tok_t *tok)
{
    aiserve_encoding_t   enc;
    aiserve_tok_opts_t   opts;
    char                 err[256];
    int                  rc;
    size_t               i;
    static const struct {
        const char  *s;
        size_t       len;
        size_t       at;
    } bad[] = {
        { "abc\xff" "def", 7, 3 },
        { "ok \xc0\xaf", 5, 3 },                /* overlong '/' */
        { "\xed\xa0\x80", 3, 0 },               /* surrogate */
        { "caf\xc3", 4, 3 },                    /* truncated */
        { "x\xf4\x90\x80\x80", 5, 1 },          /* above U+10FFFF */
        { "\x80", 1, 0 },                       /* lone continuation */
    };
    char  want[64];

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        rc = aiserve_tok_encode(tok, bad[i].s, bad[i].len, NULL, 0, NULL,
                                &enc, err, sizeof(err));
        snprintf(want, sizeof(want), "invalid UTF-8 at byte %zu", bad[i].at);
        tap_ok(rc == -1 && strcmp(err, want) == 0 && enc.input_ids == NULL,
               "invalid UTF-8 %zu: error \"%s\"", i, err);
    }

    rc = aiserve_tok_encode(tok, "fine", 4, "x\xc3", 2, NULL, &enc, err,
                            sizeof(err));
    tap_ok(rc == -1 && strcmp(err, "invalid UTF-8 in text_pair at byte 1")
           == 0, "invalid UTF-8 in the pair names text_pair: \"%s\"", err);

    /* NUL bytes: dropped like the reference's clean_text, the rest kept */
    aiserve_tok_opts_default(&opts);
    rc = aiserve_tok_encode(tok, "hello\0 world\0", 13, NULL, 0, &opts, &enc,
                            err, sizeof(err));
    tap_ok(rc == 0 && enc.n_tokens == 4
           && enc.input_ids[1] == aiserve_tok_token_to_id(tok, "hello")
           && enc.input_ids[2] == aiserve_tok_token_to_id(tok, "world")
           && enc.offsets[4] == 7 && enc.offsets[5] == 12,
           "NUL bytes inside text do not cut it: hello world, world at 7..12");
    if (rc == 0) {
        aiserve_encoding_free(&enc);
    }
}


/* 10 MB: linear time, memory bounded by the tokens (one pass, words of at
 * most max_input_chars_per_word + 1 code points held) */
static void
big_text(aiserve_tok_t *tok)
{
    static const char   *words[] = { "tokenization ", "caf\xc3\xa9 ",
        "\xe5\x8c\x97\xe4\xba\xac", "naïveté, ", "unaffable ",
        "\xf0\x9f\x98\x81 ", "1234567890 ", ("Stra\xc3\x9f" "e\n") };
    size_t               len, n, i, wl;
    char                *text, err[256];
    aiserve_encoding_t   enc;
    aiserve_tok_opts_t   opts;
    int                  rc;

    len = 10 * 1024 * 1024;
    text = malloc(len + 64);
    n = 0;
    for (i = 0; n < len; i++) {
        wl = strlen(words[i % 8]);
        memcpy(text + n, words[i % 8], wl);
        n += wl;
    }

    aiserve_tok_opts_default(&opts);
    opts.truncation = 0;
    rc = aiserve_tok_encode(tok, text, n, NULL, 0, &opts, &enc, err,
                            sizeof(err));
    tap_ok(rc == 0 && enc.n_tokens > 1000000
           && enc.byte_offsets[2 * (enc.n_tokens - 2) + 1] > n - 16,
           "10 MB of mixed text: %zu tokens, last ends at byte %u of %zu",
           rc == 0 ? enc.n_tokens : 0,
           rc == 0 ? enc.byte_offsets[2 * (enc.n_tokens - 2) + 1] : 0, n);
    if (rc == 0) {
        aiserve_encoding_free(&enc);
    }

    /* one 10 MB word: longer than max_input_chars_per_word, one [UNK] */
    memset(text, 'a', len);
    rc = aiserve_tok_encode(tok, text, len, NULL, 0, &opts, &enc, err,
                            sizeof(err));
    tap_ok(rc == 0 && enc.n_tokens == 3
           && enc.input_ids[1] == aiserve_tok_token_to_id(tok, "[UNK]")
           && enc.offsets[3] == len,
           "one 10 MB word: a single [UNK] covering it");
    if (rc == 0) {
        aiserve_encoding_free(&enc);
    }

    /* 10 MB of punctuation: 10M one-character words; truncation keeps 128 */
    memset(text, '!', len);
    opts.truncation = 1;
    rc = aiserve_tok_encode(tok, text, len, NULL, 0, &opts, &enc, err,
                            sizeof(err));
    tap_ok(rc == 0 && enc.n_tokens == 128
           && enc.n_tokens_untruncated == len + 2,
           "10 MB of punctuation: truncated to tokenizer.json's 128, "
           "%zu before truncation", rc == 0 ? enc.n_tokens_untruncated : 0);
    if (rc == 0) {
        aiserve_encoding_free(&enc);
    }

    free(text);
}


static void
loading(aiserve_tok_t *tok)
{
    char                 err[512], dir[] = "/tmp/aiserve-tok-XXXXXX", p[128];
    aiserve_tok_t       *t;
    FILE                *f;
    aiserve_tok_opts_t   opts;
    aiserve_encoding_t   enc;
    int                  rc;

    tap_ok(aiserve_tok_vocab_size(tok) == 30522
           && aiserve_tok_token_to_id(tok, "[CLS]") == 101
           && strcmp(aiserve_tok_id_to_token(tok, 102), "[SEP]") == 0
           && aiserve_tok_token_to_id(tok, "##ing") == 2075
           && aiserve_tok_token_to_id(tok, "no-such-token") == -1
           && aiserve_tok_id_to_token(tok, 30522) == NULL
           && aiserve_tok_model_max_length(tok) == 128,
           "vocabulary API: size 30522, [CLS] 101, [SEP] 102, "
           "model_max_length 128");

    t = aiserve_tok_load("/nonexistent/model", err, sizeof(err));
    tap_ok(t == NULL && strstr(err, "/nonexistent/model") != NULL,
           "missing directory: error names it: %s", err);

    if (mkdtemp(dir) == NULL) {
        tap_ok(0, "mkdtemp");
        return;
    }
    snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
    f = fopen(p, "w");
    fputs("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
          "\"merges\": []}}", f);
    fclose(f);
    t = aiserve_tok_load(dir, err, sizeof(err));
    tap_ok(t == NULL && strstr(err, "\"BPE\"") != NULL
           && strstr(err, "tokenizer.json") != NULL,
           "BPE model: clear load error: %s", err);

    f = fopen(p, "w");
    fputs("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}",
          f);
    fclose(f);
    t = aiserve_tok_load(dir, err, sizeof(err));
    tap_ok(t == NULL && strstr(err, "\"Unigram\"") != NULL,
           "Unigram model: clear load error: %s", err);
    unlink(p);
    rmdir(dir);

    aiserve_tok_opts_default(&opts);
    opts.add_special_tokens = 0;
    rc = aiserve_tok_encode(tok, "Hello", 5, NULL, 0, &opts, &enc, err,
                            sizeof(err));
    tap_ok(rc == 0 && enc.n_tokens == 1 && enc.input_ids[0] == 7592,
           "add_special_tokens=0: no [CLS]/[SEP]");
    if (rc == 0) {
        aiserve_encoding_free(&enc);
    }

    aiserve_tok_opts_default(&opts);
    opts.max_length = 2;
    rc = aiserve_tok_encode(tok, "a", 1, "b", 1, &opts, &enc, err,
                            sizeof(err));
    tap_ok(rc == -1 && strstr(err, "max_length 2") != NULL,
           "max_length below the special tokens: error \"%s\"", err);
}


/* --- threads: one loaded tokenizer, several encoders at once ----------- */

#define N_THREADS  4

static const char  *mt_texts[] = {
    "Hello, y'all! How are you \xf0\x9f\x98\x81 ?",
    "na\xc3\xafve caf\xc3\xa9 \xc4\xb0stanbul \xe5\x8c\x97\xe4\xba\xac "
    "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",
    "\xf0\xa0\x9c\xbb\xe1\xbf\xaf\xc7\x85 [SEP] x\xf0\x9d\x85\xad"
    "\xcc\x81\xf0\x9d\x85\xa5 end",
    "\xce\xa3\xce\x8a\xce\xa3\xce\xa5\xce\xa6\xce\x9f\xce\xa3 "
    "\xd0\x9f\xd0\xa0\xd0\x98\xd0\x92\xd0\x95\xd0\xa2 1234567890",
};

typedef struct {
    aiserve_tok_t  *tok;
    size_t          sum;
    int             failed;
} mt_arg_t;


static void *
mt_worker(void *p)
{
    mt_arg_t            *a = p;
    aiserve_encoding_t   enc;
    char                 err[128];
    size_t               i, k, t;

    for (i = 0; i < 2000; i++) {
        t = i % (sizeof(mt_texts) / sizeof(mt_texts[0]));
        if (aiserve_tok_encode(a->tok, mt_texts[t], strlen(mt_texts[t]), NULL,
                               0, NULL, &enc, err, sizeof(err)) != 0)
        {
            a->failed = 1;
            continue;
        }
        for (k = 0; k < enc.n_tokens; k++) {
            a->sum = a->sum * 31 + (size_t) enc.input_ids[k] * 7
                     + enc.offsets[2 * k] * 3 + enc.byte_offsets[2 * k + 1];
        }
        aiserve_encoding_free(&enc);
    }

    return NULL;
}


/* the header's promise: a loaded tokenizer is read-only and may be used
 * from several threads at once */
static void
threads(const char *dir)
{
    aiserve_tok_t  *tok;
    pthread_t       th[N_THREADS];
    mt_arg_t        arg[N_THREADS], one;
    char            err[512];
    int             i, same;

    tok = aiserve_tok_load(dir, err, sizeof(err));
    if (!tap_ok(tok != NULL, "threads: load %s", dir)) {
        return;
    }

    memset(&one, 0, sizeof(one));
    one.tok = tok;
    mt_worker(&one);

    memset(arg, 0, sizeof(arg));
    for (i = 0; i < N_THREADS; i++) {
        arg[i].tok = tok;
        pthread_create(&th[i], NULL, mt_worker, &arg[i]);
    }
    same = !one.failed;
    for (i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        same = same && !arg[i].failed && arg[i].sum == one.sum;
    }
    tap_ok(same, "threads: %d threads sharing one tokenizer encode as one "
           "thread does", N_THREADS);
    aiserve_tok_free(tok);
}


/* --- the command-line tool ----------------------------------------------- */

static void
tool(void)
{
    FILE  *p;
    char   line[4096];
    int    ok;

    p = popen("tools/aiserve-tokenize --help", "r");
    ok = p != NULL && fgets(line, sizeof(line), p) != NULL
         && strncmp(line, "usage: aiserve-tokenize", 23) == 0;
    while (p != NULL && fgets(line, sizeof(line), p) != NULL) {
        /* void */
    }
    tap_ok(ok && p != NULL && pclose(p) == 0,
           "aiserve-tokenize --help: usage, exit status 0");

    p = popen("printf '%s\\n' 'Hello, world!' "
              "'{\"text\": \"a\\u0000b\", \"text_pair\": \"c\"}' "
              "| tools/aiserve-tokenize " UNCASED, "r");
    ok = p != NULL && fgets(line, sizeof(line), p) != NULL
         && strstr(line, "\"input_ids\":[101,7592,1010,2088,999,102]")
         && strstr(line, "\"tokens\":[\"[CLS]\",\"hello\",\",\","
                   "\"world\",\"!\",\"[SEP]\"]")
         && strstr(line, "\"offsets\":[[0,0],[0,5],[5,6],[7,12],[12,13],"
                   "[0,0]]")
         && fgets(line, sizeof(line), p) != NULL
         && strstr(line, "\"token_type_ids\":[0,0,0,1,1]")
         && strstr(line, "\"byte_offsets\":[[0,0],[0,3],[0,0],[0,1],"
                   "[0,0]]");
    tap_ok(ok && pclose(p) == 0, "aiserve-tokenize: a text line and a JSON "
           "pair line with a NUL become JSON lines");
}


int
main(void)
{
    aiserve_tok_t  *tok;

    unicode_exhaustive();
    named_cases();

    tok = load(UNCASED);
    if (tap_ok(tok != NULL, "load " UNCASED)) {
        bad_input(tok);
        big_text(tok);
        loading(tok);
    }
    threads("t/data/tokenizers/bert-base-cased");
    tool();

    return tap_done();
}
