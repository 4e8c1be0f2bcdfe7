/*
 * Helpers shared by the tokenizer tests: reading the gzip goldens written
 * by tools/gen-tokenizer-goldens.py (through gzip -dc, so the tests need
 * nothing beyond the engine's libraries) and comparing an encoding with a
 * golden "IDS;TYPE_IDS;OFFSETS" record.
 */
#ifndef AISERVE_TOK_GOLDEN_H
#define AISERVE_TOK_GOLDEN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "aiserve_tokenizer.h"


typedef struct {
    char    **s;
    size_t   *len;
    size_t    n;
} golden_lines_t;


/* reads every line of a gzip file (newline removed); returns 0 or -1 */
static inline int
golden_read(const char *path, golden_lines_t *out)
{
    char     cmd[1024], *line;
    FILE    *p;
    size_t   cap, n, lcap;
    ssize_t  r;

    memset(out, 0, sizeof(*out));
    snprintf(cmd, sizeof(cmd), "gzip -dc '%s' 2>/dev/null", path);
    p = popen(cmd, "r");
    if (p == NULL) {
        return -1;
    }

    cap = 0;
    n = 0;
    line = NULL;
    lcap = 0;
    while ((r = getline(&line, &lcap, p)) >= 0) {
        if (r > 0 && line[r - 1] == '\n') {
            line[--r] = '\0';
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            out->s = realloc(out->s, cap * sizeof(char *));
            out->len = realloc(out->len, cap * sizeof(size_t));
        }
        out->s[n] = malloc((size_t) r + 1);
        memcpy(out->s[n], line, (size_t) r + 1);
        out->len[n] = (size_t) r;
        n++;
    }
    free(line);
    out->n = n;

    return (pclose(p) == 0 && n > 0) ? 0 : -1;
}


static inline void
golden_free(golden_lines_t *g)
{
    size_t  i;

    for (i = 0; i < g->n; i++) {
        free(g->s[i]);
    }
    free(g->s);
    free(g->len);
    memset(g, 0, sizeof(*g));
}


/* the corpus: one JSON string per line (NUL bytes allowed) */
static inline int
golden_corpus(const char *path, golden_lines_t *out)
{
    golden_lines_t  raw;
    json_t         *j;
    json_error_t    jerr;
    size_t          i, len;

    if (golden_read(path, &raw) != 0) {
        return -1;
    }

    out->n = raw.n;
    out->s = calloc(raw.n, sizeof(char *));
    out->len = calloc(raw.n, sizeof(size_t));
    for (i = 0; i < raw.n; i++) {
        j = json_loadb(raw.s[i], raw.len[i], JSON_DECODE_ANY | JSON_ALLOW_NUL,
                       &jerr);
        if (!json_is_string(j)) {
            fprintf(stderr, "corpus line %zu: %s\n", i + 1, jerr.text);
            json_decref(j);
            golden_free(&raw);
            return -1;
        }
        len = json_string_length(j);
        out->s[i] = malloc(len + 1);
        memcpy(out->s[i], json_string_value(j), len + 1);
        out->len[i] = len;
        json_decref(j);
    }
    golden_free(&raw);

    return 0;
}


/* byte offset of code point index cp in UTF-8 text s (len bytes) */
static inline size_t
golden_cp_to_byte(const char *s, size_t len, size_t cp)
{
    size_t  i, n;

    n = 0;
    for (i = 0; i < len; i++) {
        if (((unsigned char) s[i] & 0xC0) != 0x80) {
            if (n == cp) {
                return i;
            }
            n++;
        }
    }

    return len;
}


/*
 * Compares enc with a golden record "IDS;TYPE_IDS;OFFSETS" (offsets in code
 * points).  Byte offsets are checked against the code point offsets mapped
 * through the text of the token's sequence (type id 0: text, 1: pair).
 * Returns 1 when equal; otherwise 0 with a reason in why.
 */
static inline int
golden_equal(const aiserve_encoding_t *enc, const char *rec,
    const char *text, size_t len, const char *pair, size_t pair_len,
    char *why, size_t why_len)
{
    const char  *p, *types, *offs;
    char        *end;
    size_t       k, n, s, e, bs, be;
    long         v;
    const char  *t;
    size_t       tl;

    /* ids */
    p = rec;
    n = 0;
    while (*p && *p != ';') {
        v = strtol(p, &end, 10);
        if (n >= enc->n_tokens || enc->input_ids[n] != v) {
            snprintf(why, why_len, "id %zu: got %ld, want %ld", n,
                     n < enc->n_tokens ? (long) enc->input_ids[n] : -1L, v);
            return 0;
        }
        n++;
        p = end;
        while (*p == ' ') {
            p++;
        }
    }
    if (n != enc->n_tokens) {
        snprintf(why, why_len, "%zu tokens, want %zu", enc->n_tokens, n);
        return 0;
    }

    types = p + 1;
    offs = strchr(types, ';');
    if (*p != ';' || offs == NULL || (size_t) (offs - types) != n) {
        snprintf(why, why_len, "bad golden record");
        return 0;
    }
    offs++;

    p = offs;
    for (k = 0; k < n; k++) {
        if (enc->token_type_ids[k] != types[k] - '0') {
            snprintf(why, why_len, "type id %zu: got %d, want %c", k,
                     (int) enc->token_type_ids[k], types[k]);
            return 0;
        }
        s = strtoul(p, &end, 10);
        e = strtoul(end, &end, 10);
        p = end;
        if (enc->offsets[2 * k] != s || enc->offsets[2 * k + 1] != e) {
            snprintf(why, why_len, "offsets %zu: got (%u, %u), want (%zu, "
                     "%zu)", k, enc->offsets[2 * k], enc->offsets[2 * k + 1],
                     s, e);
            return 0;
        }
        if (s == 0 && e == 0) {
            bs = be = 0;
        } else {
            t = types[k] == '1' && pair ? pair : text;
            tl = types[k] == '1' && pair ? pair_len : len;
            bs = golden_cp_to_byte(t, tl, s);
            be = golden_cp_to_byte(t, tl, e);
        }
        if (enc->byte_offsets[2 * k] != bs
            || enc->byte_offsets[2 * k + 1] != be)
        {
            snprintf(why, why_len, "byte offsets %zu: got (%u, %u), want "
                     "(%zu, %zu)", k, enc->byte_offsets[2 * k],
                     enc->byte_offsets[2 * k + 1], bs, be);
            return 0;
        }
    }

    return 1;
}

/*
 * MiniLM's tokenizer.json with patches [[key, ...], value] applied (each
 * sets the value at that path), loaded from a temporary directory; returns
 * the tokenizer or NULL with err set.
 */
static inline aiserve_tok_t *
golden_minilm_patched(json_t *patches, char *err, size_t err_len)
{
    json_t         *root, *p, *path, *o, *next;
    json_error_t    jerr;
    char            dir[] = "/tmp/aiserve-tok-var-XXXXXX", file[128];
    size_t          i, k;
    aiserve_tok_t  *tok;

    root = json_load_file("models/all-MiniLM-L6-v2/tokenizer.json", 0, &jerr);
    if (root == NULL || mkdtemp(dir) == NULL) {
        snprintf(err, err_len, "cannot read the MiniLM tokenizer.json");
        json_decref(root);
        return NULL;
    }

    json_array_foreach(patches, i, p) {
        path = json_array_get(p, 0);
        o = root;
        for (k = 0; k + 1 < json_array_size(path); k++) {
            next = json_object_get(o, json_string_value(
                                          json_array_get(path, k)));
            o = next;
        }
        json_object_set(o, json_string_value(json_array_get(path, k)),
                        json_array_get(p, 1));
    }

    snprintf(file, sizeof(file), "%s/tokenizer.json", dir);
    json_dump_file(root, file, 0);
    json_decref(root);
    tok = aiserve_tok_load(dir, err, err_len);
    unlink(file);
    rmdir(dir);

    return tok;
}

#endif /* AISERVE_TOK_GOLDEN_H */

