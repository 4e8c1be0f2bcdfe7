/*
 * aiserve training data: readers, label set, featurization (see
 * aiserve_data.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <utf8proc.h>

#include "aiserve_data.h"
#include "aiserve_err.h"


#define AISERVE_DATA_ERRLEN  512

/* a growing array of examples and the reader's state */
typedef struct {
    aiserve_dataset_t          *ds;
    size_t                      cap;
    const aiserve_data_opts_t  *opts;
    size_t                      first_conversion;   /* its line */
    char                       *err;
    size_t                      err_len;
} aiserve_reader_t;


static const char  *aiserve_kind_names[] = {
    "one label", "a list of labels", "a number", "tokens and tags",
    "text and entities"
};


/*
 * Byte offset of the first invalid UTF-8 sequence (or NUL byte) in
 * s[0..len), or len when it is valid; *cps receives the number of code
 * points before it.
 */

static size_t
aiserve_utf8_check(const char *s, size_t len, size_t *cps)
{
    size_t             i, n;
    utf8proc_ssize_t   k;
    utf8proc_int32_t   c;

    n = 0;

    for (i = 0; i < len; i += k) {
        k = utf8proc_iterate((const utf8proc_uint8_t *) s + i, len - i, &c);
        if (k <= 0 || c == 0) {
            break;
        }

        n++;
    }

    if (cps) {
        *cps = n;
    }

    return i < len ? i : len;
}


static int
aiserve_blank(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n'
            && s[i] != '\v' && s[i] != '\f')
        {
            return 0;
        }
    }

    return 1;
}


static aiserve_example_t *
aiserve_new_example(aiserve_reader_t *rd, size_t line)
{
    size_t              cap;
    aiserve_example_t  *e;

    if (rd->ds->n == rd->cap) {
        cap = rd->cap ? 2 * rd->cap : 64;
        e = realloc(rd->ds->examples, cap * sizeof(aiserve_example_t));
        if (e == NULL) {
            aiserve_err(rd->err, rd->err_len, "out of memory");
            return NULL;
        }

        rd->ds->examples = e;
        rd->cap = cap;
    }

    e = &rd->ds->examples[rd->ds->n++];
    memset(e, 0, sizeof(*e));
    e->line = line;

    return e;
}


/* the kind of the file is the kind of its first example */

static int
aiserve_set_kind(aiserve_reader_t *rd, aiserve_labels_kind_e kind,
    size_t line, const char *field)
{
    if (rd->ds->n == 1) {
        rd->ds->kind = kind;
        return 0;
    }

    if (rd->ds->kind == kind) {
        return 0;
    }

    aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s\": %s here, but "
                "line %zu has %s (one kind of labels a file)", rd->ds->name,
                line, field, aiserve_kind_names[kind],
                rd->ds->examples[0].line, aiserve_kind_names[rd->ds->kind]);
    return -1;
}


/*
 * Checks tags[0..n) are IOB (B-X, I-X, E-X, S-X, O) and makes them IOB2
 * in place: S-X -> B-X, E-X -> I-X (IOBES), an I-X that starts an entity
 * -> B-X (IOB1), or an error when opts->strict_iob2.  lines: each tag's
 * line (CoNLL) or NULL (all on line).  field: "tag" or "tags".
 */

static int
aiserve_iob2(aiserve_reader_t *rd, char **tags, size_t n, const size_t *lines,
    size_t line, const char *field)
{
    char         c, pc;
    size_t       i, l, changed;
    const char  *prev, *type, *ptype;

    if (rd->opts->raw_tags) {
        return 0;
    }

    changed = 0;
    prev = NULL;

    for (i = 0; i < n; i++) {
        l = lines ? lines[i] : line;
        c = tags[i][0];

        if (!(strcmp(tags[i], "O") == 0
              || ((c == 'B' || c == 'I' || c == 'E' || c == 'S')
                  && tags[i][1] == '-' && tags[i][2] != '\0')))
        {
            if (lines) {
                aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s\": "
                            "\"%s\" is not an IOB tag (B-X, I-X, E-X, S-X or "
                            "O)", rd->ds->name, l, field, tags[i]);

            } else {
                aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s[%zu]\": "
                            "\"%s\" is not an IOB tag (B-X, I-X, E-X, S-X or "
                            "O)", rd->ds->name, l, field, i, tags[i]);
            }

            return -1;
        }

        if (c == 'S' || c == 'E') {
            tags[i][0] = (c == 'S') ? 'B' : 'I';
            c = tags[i][0];
            changed++;

            if (rd->first_conversion == 0) {
                rd->first_conversion = l;
            }
        }

        if (c == 'I') {
            type = tags[i] + 2;
            pc = prev ? prev[0] : 'O';
            ptype = prev ? prev + 2 : "";

            if (pc == 'O' || strcmp(type, ptype) != 0) {
                if (rd->opts->strict_iob2) {
                    if (lines) {
                        aiserve_err(rd->err, rd->err_len, "%s:%zu: field "
                                    "\"%s\": \"%s\" after \"%s\" starts an "
                                    "entity without B-%s (IOB1; strict IOB2 "
                                    "is on)", rd->ds->name, l, field,
                                    tags[i], prev ? prev : "the start", type);

                    } else {
                        aiserve_err(rd->err, rd->err_len, "%s:%zu: field "
                                    "\"%s[%zu]\": \"%s\" after \"%s\" starts "
                                    "an entity without B-%s (IOB1; strict "
                                    "IOB2 is on)", rd->ds->name, l, field, i,
                                    tags[i], prev ? prev : "the start", type);
                    }

                    return -1;
                }

                tags[i][0] = 'B';
                changed++;

                if (rd->first_conversion == 0) {
                    rd->first_conversion = l;
                }
            }
        }

        prev = tags[i];
    }

    rd->ds->converted_tags += changed;
    return 0;
}


/* JSONL */

static int
aiserve_json_text(aiserve_reader_t *rd, json_t *o, const char *key,
    size_t line, int required, char **text, size_t *len)
{
    json_t  *v;

    v = json_object_get(o, key);

    if (v == NULL || json_is_null(v)) {
        if (!required) {
            return 0;
        }

        aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s\" is missing",
                    rd->ds->name, line, key);
        return -1;
    }

    if (!json_is_string(v)) {
        aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s\" must be a "
                    "string", rd->ds->name, line, key);
        return -1;
    }

    if (aiserve_blank(json_string_value(v), json_string_length(v))) {
        aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s\": empty text",
                    rd->ds->name, line, key);
        return -1;
    }

    *len = json_string_length(v);
    *text = strndup(json_string_value(v), *len);

    if (*text == NULL) {
        aiserve_err(rd->err, rd->err_len, "out of memory");
        return -1;
    }

    return 0;
}


/* a non-empty string of a list: "tags[3]" */

static char *
aiserve_json_label(aiserve_reader_t *rd, json_t *v, size_t line,
    const char *field, size_t index, int indexed)
{
    char  *s;

    if (!json_is_string(v) || json_string_length(v) == 0
        || strlen(json_string_value(v)) != json_string_length(v))
    {
        if (indexed) {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s[%zu]\" "
                        "must be a non-empty string", rd->ds->name, line,
                        field, index);

        } else {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s\" must be "
                        "a non-empty string, a list of strings or a number",
                        rd->ds->name, line, field);
        }

        return NULL;
    }

    s = strndup(json_string_value(v), json_string_length(v));
    if (s == NULL) {
        aiserve_err(rd->err, rd->err_len, "out of memory");
    }

    return s;
}


static int
aiserve_entity_cmp(const void *a, const void *b)
{
    const aiserve_span_entity_t  *x, *y;

    x = a;
    y = b;

    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }

    return (x->end > y->end) - (x->end < y->end);
}


static int
aiserve_jsonl_spans(aiserve_reader_t *rd, aiserve_example_t *e, json_t *o,
    size_t line)
{
    size_t                  i, cps;
    json_t                 *ents, *ent, *s, *t, *l;
    json_int_t              start, end;
    aiserve_span_entity_t  *se;

    if (aiserve_json_text(rd, o, "text", line, 1, &e->text, &e->text_len)
        != 0)
    {
        return -1;
    }

    (void) aiserve_utf8_check(e->text, e->text_len, &cps);

    ents = json_object_get(o, "entities");
    if (!json_is_array(ents)) {
        aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"entities\" must "
                    "be a list", rd->ds->name, line);
        return -1;
    }

    e->entities = calloc(json_array_size(ents) + 1,
                         sizeof(aiserve_span_entity_t));
    if (e->entities == NULL) {
        aiserve_err(rd->err, rd->err_len, "out of memory");
        return -1;
    }

    json_array_foreach(ents, i, ent) {
        s = json_object_get(ent, "start");
        t = json_object_get(ent, "end");
        l = json_object_get(ent, "label");

        if (!json_is_integer(s) || !json_is_integer(t)) {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"entities[%zu]"
                        "\" needs integers \"start\" and \"end\"",
                        rd->ds->name, line, i);
            return -1;
        }

        start = json_integer_value(s);
        end = json_integer_value(t);

        if (start < 0 || end <= start || (size_t) end > cps) {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"entities[%zu]"
                        "\": [%lld, %lld) is not a span of the text (%zu code "
                        "points)", rd->ds->name, line, i, (long long) start,
                        (long long) end, cps);
            return -1;
        }

        se = &e->entities[e->n_entities];
        se->start = start;
        se->end = end;
        se->label = aiserve_json_label(rd, l, line, "entities", i, 1);
        if (se->label == NULL) {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"entities[%zu]"
                        ".label\" must be a non-empty string", rd->ds->name,
                        line, i);
            return -1;
        }

        e->n_entities++;
    }

    qsort(e->entities, e->n_entities, sizeof(aiserve_span_entity_t),
          aiserve_entity_cmp);

    for (i = 1; i < e->n_entities; i++) {
        if (e->entities[i].start < e->entities[i - 1].end) {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"entities\": "
                        "[%zu, %zu) overlaps [%zu, %zu)", rd->ds->name, line,
                        e->entities[i].start, e->entities[i].end,
                        e->entities[i - 1].start, e->entities[i - 1].end);
            return -1;
        }
    }

    return aiserve_set_kind(rd, AISERVE_LABELS_SPANS, line, "entities");
}


static int
aiserve_jsonl_tags(aiserve_reader_t *rd, aiserve_example_t *e, json_t *o,
    size_t line)
{
    size_t   i;
    json_t  *tokens, *tags;

    tokens = json_object_get(o, "tokens");
    tags = json_object_get(o, "tags");

    if (!json_is_array(tokens)) {
        aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"tokens\" must be "
                    "a list of strings", rd->ds->name, line);
        return -1;
    }

    if (!json_is_array(tags)) {
        aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"tags\" must be a "
                    "list of strings", rd->ds->name, line);
        return -1;
    }

    if (json_array_size(tokens) != json_array_size(tags)) {
        aiserve_err(rd->err, rd->err_len, "%s:%zu: fields \"tokens\" and "
                    "\"tags\": %zu tokens but %zu tags", rd->ds->name, line,
                    json_array_size(tokens), json_array_size(tags));
        return -1;
    }

    if (json_array_size(tokens) == 0) {
        aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"tokens\": no "
                    "tokens", rd->ds->name, line);
        return -1;
    }

    e->n_tokens = json_array_size(tokens);
    e->tokens = calloc(e->n_tokens, sizeof(char *));
    e->tags = calloc(e->n_tokens, sizeof(char *));
    if (e->tokens == NULL || e->tags == NULL) {
        aiserve_err(rd->err, rd->err_len, "out of memory");
        return -1;
    }

    for (i = 0; i < e->n_tokens; i++) {
        e->tokens[i] = aiserve_json_label(rd, json_array_get(tokens, i), line,
                                          "tokens", i, 1);
        if (e->tokens[i] == NULL) {
            return -1;
        }

        e->tags[i] = aiserve_json_label(rd, json_array_get(tags, i), line,
                                        "tags", i, 1);
        if (e->tags[i] == NULL) {
            return -1;
        }
    }

    if (aiserve_iob2(rd, e->tags, e->n_tokens, NULL, line, "tags") != 0) {
        return -1;
    }

    return aiserve_set_kind(rd, AISERVE_LABELS_TAGS, line, "tags");
}


static int
aiserve_jsonl_classify(aiserve_reader_t *rd, aiserve_example_t *e, json_t *o,
    size_t line)
{
    size_t                 i;
    json_t                *v;
    aiserve_labels_kind_e  kind;

    if (aiserve_json_text(rd, o, "text", line, 1, &e->text, &e->text_len)
        != 0
        || aiserve_json_text(rd, o, "text_pair", line, 0, &e->text_pair,
                             &e->text_pair_len)
           != 0)
    {
        return -1;
    }

    v = json_object_get(o, "label");

    if (v == NULL || json_is_null(v)) {
        aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"label\" is missing",
                    rd->ds->name, line);
        return -1;
    }

    if (json_is_number(v)) {
        kind = AISERVE_LABELS_REGRESSION;
        e->value = json_number_value(v);

    } else if (json_is_array(v)) {
        kind = AISERVE_LABELS_MULTI;
        e->labels = calloc(json_array_size(v) + 1, sizeof(char *));
        if (e->labels == NULL) {
            aiserve_err(rd->err, rd->err_len, "out of memory");
            return -1;
        }

        for (i = 0; i < json_array_size(v); i++) {
            e->labels[i] = aiserve_json_label(rd, json_array_get(v, i), line,
                                              "label", i, 1);
            if (e->labels[i] == NULL) {
                return -1;
            }

            e->n_labels++;
        }

    } else {
        kind = AISERVE_LABELS_SINGLE;
        e->labels = calloc(1, sizeof(char *));
        if (e->labels == NULL) {
            aiserve_err(rd->err, rd->err_len, "out of memory");
            return -1;
        }

        e->labels[0] = aiserve_json_label(rd, v, line, "label", 0, 0);
        if (e->labels[0] == NULL) {
            return -1;
        }

        e->n_labels = 1;
    }

    return aiserve_set_kind(rd, kind, line, "label");
}


static int
aiserve_read_jsonl(aiserve_reader_t *rd, const char *buf, size_t len)
{
    size_t              line, n, bad;
    json_t             *o;
    const char         *p, *end, *nl;
    json_error_t        jerr;
    aiserve_example_t  *e;
    int                 rc;

    p = buf;
    end = buf + len;

    for (line = 1; p < end; line++, p = nl + 1) {
        nl = memchr(p, '\n', end - p);
        if (nl == NULL) {
            nl = end;
        }

        n = nl - p;

        if (aiserve_blank(p, n)) {
            continue;
        }

        bad = aiserve_utf8_check(p, n, NULL);
        if (bad < n) {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: invalid UTF-8 at byte "
                        "%zu of the line", rd->ds->name, line, bad + 1);
            return -1;
        }

        o = json_loadb(p, n, 0, &jerr);
        if (o == NULL) {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: invalid JSON at column "
                        "%d: %s", rd->ds->name, line, jerr.column, jerr.text);
            return -1;
        }

        if (!json_is_object(o)) {
            json_decref(o);
            aiserve_err(rd->err, rd->err_len, "%s:%zu: a line must be a JSON "
                        "object", rd->ds->name, line);
            return -1;
        }

        e = aiserve_new_example(rd, line);
        if (e == NULL) {
            json_decref(o);
            return -1;
        }

        if (json_object_get(o, "tokens") != NULL) {
            rc = aiserve_jsonl_tags(rd, e, o, line);

        } else if (json_object_get(o, "entities") != NULL) {
            rc = aiserve_jsonl_spans(rd, e, o, line);

        } else {
            rc = aiserve_jsonl_classify(rd, e, o, line);
        }

        json_decref(o);

        if (rc != 0) {
            return -1;
        }
    }

    return 0;
}


/* CSV, RFC 4180 */

typedef struct {
    char   **fields;
    size_t   n;
    size_t   cap;
} aiserve_record_t;


static int
aiserve_record_add(aiserve_reader_t *rd, aiserve_record_t *r, const char *s,
    size_t len)
{
    char  **f;

    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 8;
        f = realloc(r->fields, r->cap * sizeof(char *));
        if (f == NULL) {
            aiserve_err(rd->err, rd->err_len, "out of memory");
            return -1;
        }

        r->fields = f;
    }

    r->fields[r->n] = strndup(s, len);
    if (r->fields[r->n] == NULL) {
        aiserve_err(rd->err, rd->err_len, "out of memory");
        return -1;
    }

    r->n++;
    return 0;
}


static void
aiserve_record_clear(aiserve_record_t *r)
{
    size_t  i;

    for (i = 0; i < r->n; i++) {
        free(r->fields[i]);
    }

    r->n = 0;
}


/*
 * One record from *pos: fields separated by ",", ended by LF or CRLF;
 * a quoted field may hold commas, line breaks and "" for a quote.
 * *line advances over the line breaks read.  Returns 1 with a record,
 * 0 at the end, -1 on error.
 */

static int
aiserve_csv_record(aiserve_reader_t *rd, const char *buf, size_t len,
    size_t *pos, size_t *line, aiserve_record_t *r)
{
    char    *q, *grown;
    size_t   i, start, qline, cap, n;

    aiserve_record_clear(r);
    i = *pos;

    if (i >= len) {
        return 0;
    }

    for ( ;; ) {
        if (i < len && buf[i] == '"') {
            /* a quoted field */
            qline = *line;
            cap = 64;
            n = 0;
            q = malloc(cap);
            if (q == NULL) {
                aiserve_err(rd->err, rd->err_len, "out of memory");
                return -1;
            }

            for (i++; ; i++) {
                if (i >= len) {
                    free(q);
                    aiserve_err(rd->err, rd->err_len, "%s:%zu: field %zu: the "
                                "quote opened here is never closed",
                                rd->ds->name, qline, r->n + 1);
                    return -1;
                }

                if (buf[i] == '"') {
                    if (i + 1 < len && buf[i + 1] == '"') {
                        i++;

                    } else {
                        i++;
                        break;
                    }

                } else if (buf[i] == '\n') {
                    (*line)++;
                }

                if (n + 1 >= cap) {
                    cap *= 2;
                    grown = realloc(q, cap);
                    if (grown == NULL) {
                        free(q);
                        aiserve_err(rd->err, rd->err_len, "out of memory");
                        return -1;
                    }

                    q = grown;
                }

                q[n++] = buf[i];
            }

            if (aiserve_record_add(rd, r, q, n) != 0) {
                free(q);
                return -1;
            }

            free(q);

            if (i < len && buf[i] != ',' && buf[i] != '\n'
                && !(buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n'))
            {
                aiserve_err(rd->err, rd->err_len, "%s:%zu: field %zu: text "
                            "after the closing quote", rd->ds->name, *line,
                            r->n);
                return -1;
            }

        } else {
            start = i;
            while (i < len && buf[i] != ',' && buf[i] != '\n') {
                i++;
            }

            n = i - start;
            if (n && buf[start + n - 1] == '\r' && (i >= len
                                                    || buf[i] == '\n'))
            {
                n--;
            }

            if (aiserve_record_add(rd, r, buf + start, n) != 0) {
                return -1;
            }
        }

        if (i < len && buf[i] == '\r') {
            i++;
        }

        if (i >= len || buf[i] == '\n') {
            if (i < len) {
                i++;
                (*line)++;
            }

            *pos = i;
            return 1;
        }

        i++;    /* the comma */
    }
}


static int
aiserve_csv_column(aiserve_reader_t *rd, aiserve_record_t *h,
    const char *name, int required, size_t *col)
{
    size_t  i, len;
    char    list[256];

    for (i = 0; i < h->n; i++) {
        if (strcmp(h->fields[i], name) == 0) {
            *col = i;
            return 1;
        }
    }

    if (!required) {
        return 0;
    }

    list[0] = '\0';
    for (i = 0; i < h->n; i++) {
        len = strlen(list);
        snprintf(list + len, sizeof(list) - len, "%s\"%s\"", i ? ", " : "",
                 h->fields[i]);
    }

    aiserve_err(rd->err, rd->err_len, "%s:1: no column \"%s\" in the header "
                "(%s); choose the column by its name", rd->ds->name, name,
                list);
    return -1;
}


static int
aiserve_read_csv(aiserve_reader_t *rd, const char *buf, size_t len)
{
    int                 rc, has_pair;
    size_t              pos, line, rline, tcol, pcol, lcol, i, bad;
    const char         *tname, *pname, *lname;
    aiserve_record_t    head, rec;
    aiserve_example_t  *e;

    memset(&head, 0, sizeof(head));
    memset(&rec, 0, sizeof(rec));
    pos = 0;
    line = 1;
    rc = -1;

    tname = rd->opts->text_column ? rd->opts->text_column : "text";
    pname = rd->opts->text_pair_column ? rd->opts->text_pair_column
                                       : "text_pair";
    lname = rd->opts->label_column ? rd->opts->label_column : "label";

    if (aiserve_csv_record(rd, buf, len, &pos, &line, &head) != 1) {
        if (rd->ds->n == 0 && pos >= len) {
            aiserve_err(rd->err, rd->err_len, "%s:1: no header", rd->ds->name);
        }

        goto done;
    }

    for (i = 0; i < head.n; i++) {
        bad = aiserve_utf8_check(head.fields[i], strlen(head.fields[i]),
                                 NULL);
        if (bad < strlen(head.fields[i])) {
            aiserve_err(rd->err, rd->err_len, "%s:1: header field %zu: "
                        "invalid UTF-8 at byte %zu", rd->ds->name, i + 1,
                        bad + 1);
            goto done;
        }
    }

    if (aiserve_csv_column(rd, &head, tname, 1, &tcol) < 0
        || aiserve_csv_column(rd, &head, lname, 1, &lcol) < 0)
    {
        goto done;
    }

    has_pair = aiserve_csv_column(rd, &head, pname,
                                  rd->opts->text_pair_column != NULL, &pcol);
    if (has_pair < 0) {
        goto done;
    }

    rd->ds->label_field = strdup(lname);
    if (rd->ds->label_field == NULL) {
        aiserve_err(rd->err, rd->err_len, "out of memory");
        goto done;
    }

    for ( ;; ) {
        rline = line;

        switch (aiserve_csv_record(rd, buf, len, &pos, &line, &rec)) {
        case 0:
            rc = 0;
            goto done;
        case -1:
            goto done;
        }

        if (rec.n == 1 && rec.fields[0][0] == '\0') {
            continue;   /* an empty line */
        }

        if (rec.n != head.n) {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: %zu fields, but the "
                        "header has %zu", rd->ds->name, rline, rec.n, head.n);
            goto done;
        }

        for (i = 0; i < rec.n; i++) {
            bad = aiserve_utf8_check(rec.fields[i], strlen(rec.fields[i]),
                                     NULL);
            if (bad < strlen(rec.fields[i])) {
                aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s\": "
                            "invalid UTF-8 at byte %zu", rd->ds->name, rline,
                            head.fields[i], bad + 1);
                goto done;
            }
        }

        e = aiserve_new_example(rd, rline);
        if (e == NULL) {
            goto done;
        }

        rd->ds->kind = AISERVE_LABELS_SINGLE;

        if (aiserve_blank(rec.fields[tcol], strlen(rec.fields[tcol]))) {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s\": empty "
                        "text", rd->ds->name, rline, tname);
            goto done;
        }

        if (rec.fields[lcol][0] == '\0') {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s\": empty "
                        "label", rd->ds->name, rline, lname);
            goto done;
        }

        e->labels = calloc(1, sizeof(char *));
        if (e->labels == NULL) {
            aiserve_err(rd->err, rd->err_len, "out of memory");
            goto done;
        }

        /* the record's strings move into the example */
        e->text = rec.fields[tcol];
        e->text_len = strlen(e->text);
        e->labels[0] = rec.fields[lcol];
        e->n_labels = 1;
        rec.fields[tcol] = NULL;
        rec.fields[lcol] = NULL;

        if (has_pair && !aiserve_blank(rec.fields[pcol],
                                       strlen(rec.fields[pcol])))
        {
            e->text_pair = rec.fields[pcol];
            e->text_pair_len = strlen(e->text_pair);
            rec.fields[pcol] = NULL;
        }
    }

done:

    aiserve_record_clear(&head);
    aiserve_record_clear(&rec);
    free(head.fields);
    free(rec.fields);
    return rc;
}


/* CoNLL */

typedef struct {
    char   **tokens;
    char   **tags;
    size_t  *lines;
    size_t   n;
    size_t   cap;
} aiserve_sentence_t;


static int
aiserve_conll_flush(aiserve_reader_t *rd, aiserve_sentence_t *s)
{
    aiserve_example_t  *e;

    if (s->n == 0) {
        return 0;
    }

    e = aiserve_new_example(rd, s->lines[0]);
    if (e == NULL) {
        return -1;
    }

    rd->ds->kind = AISERVE_LABELS_TAGS;

    e->tokens = s->tokens;
    e->tags = s->tags;
    e->lines = s->lines;
    e->n_tokens = s->n;
    memset(s, 0, sizeof(*s));

    return aiserve_iob2(rd, e->tags, e->n_tokens, e->lines, e->line, "tag");
}


static int
aiserve_read_conll(aiserve_reader_t *rd, const char *buf, size_t len)
{
    int                 rc;
    char              **tk, **tg;
    size_t              line, n, bad, cap, *ln, k, nf, fs[2], fe[2];
    const char         *p, *end, *nl, *q;
    aiserve_sentence_t  s;

    memset(&s, 0, sizeof(s));
    p = buf;
    end = buf + len;
    rc = -1;

    rd->ds->label_field = strdup("tag");
    if (rd->ds->label_field == NULL) {
        aiserve_err(rd->err, rd->err_len, "out of memory");
        return -1;
    }

    for (line = 1; p < end; line++, p = nl + 1) {
        nl = memchr(p, '\n', end - p);
        if (nl == NULL) {
            nl = end;
        }

        n = nl - p;
        if (n && p[n - 1] == '\r') {
            n--;
        }

        if (aiserve_blank(p, n) || (n >= 10 && memcmp(p, "-DOCSTART-", 10)
                                               == 0))
        {
            if (aiserve_conll_flush(rd, &s) != 0) {
                goto done;
            }

            continue;
        }

        bad = aiserve_utf8_check(p, n, NULL);
        if (bad < n) {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: field \"%s\": invalid "
                        "UTF-8 at byte %zu of the line", rd->ds->name, line,
                        memchr(p, '\t', bad) || memchr(p, ' ', bad) ? "tag"
                                                                  : "token",
                        bad + 1);
            goto done;
        }

        /* the first and the last column, split on tabs if the line has
         * one, else on runs of spaces */
        nf = 0;
        q = p;

        if (memchr(p, '\t', n)) {
            for (k = 0; k <= n; k++) {
                if (k == n || p[k] == '\t') {
                    if (nf < 2) {
                        fs[nf] = q - p;
                        fe[nf] = k;
                    } else {
                        fs[1] = q - p;
                        fe[1] = k;
                    }

                    nf++;
                    q = p + k + 1;
                }
            }

        } else {
            for (k = 0; k < n; ) {
                while (k < n && p[k] == ' ') {
                    k++;
                }

                if (k == n) {
                    break;
                }

                fs[nf < 2 ? nf : 1] = k;
                while (k < n && p[k] != ' ') {
                    k++;
                }

                fe[nf < 2 ? nf : 1] = k;
                nf++;
            }
        }

        if (nf < 2 || fe[0] == fs[0] || fe[1] == fs[1]) {
            aiserve_err(rd->err, rd->err_len, "%s:%zu: expected a token and "
                        "its tag (tab or space separated)", rd->ds->name,
                        line);
            goto done;
        }

        if (s.n == s.cap) {
            cap = s.cap ? 2 * s.cap : 32;
            tk = realloc(s.tokens, cap * sizeof(char *));
            if (tk != NULL) {
                s.tokens = tk;
            }
            tg = realloc(s.tags, cap * sizeof(char *));
            if (tg != NULL) {
                s.tags = tg;
            }
            ln = realloc(s.lines, cap * sizeof(size_t));
            if (ln != NULL) {
                s.lines = ln;
            }

            if (tk == NULL || tg == NULL || ln == NULL) {
                aiserve_err(rd->err, rd->err_len, "out of memory");
                goto done;
            }

            s.cap = cap;
        }

        s.tokens[s.n] = strndup(p + fs[0], fe[0] - fs[0]);
        s.tags[s.n] = strndup(p + fs[1], fe[1] - fs[1]);
        s.lines[s.n] = line;
        s.n++;

        if (s.tokens[s.n - 1] == NULL || s.tags[s.n - 1] == NULL) {
            aiserve_err(rd->err, rd->err_len, "out of memory");
            goto done;
        }
    }

    if (aiserve_conll_flush(rd, &s) == 0) {
        rc = 0;
    }

done:

    for (k = 0; k < s.n; k++) {
        free(s.tokens[k]);
        free(s.tags[k]);
    }

    free(s.tokens);
    free(s.tags);
    free(s.lines);
    return rc;
}


void
aiserve_data_opts_default(aiserve_data_opts_t *opts)
{
    memset(opts, 0, sizeof(*opts));
}


static int
aiserve_ends_with(const char *s, const char *suffix)
{
    size_t  n, m;

    n = strlen(s);
    m = strlen(suffix);

    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}


int
aiserve_data_parse(const char *name, const char *buf, size_t len,
    const aiserve_data_opts_t *opts, aiserve_dataset_t *ds, char *err,
    size_t err_len)
{
    int                    rc;
    aiserve_reader_t       rd;
    aiserve_data_opts_t    dflt;
    aiserve_data_format_e  format;

    memset(ds, 0, sizeof(*ds));

    if (opts == NULL) {
        aiserve_data_opts_default(&dflt);
        opts = &dflt;
    }

    memset(&rd, 0, sizeof(rd));
    rd.ds = ds;
    rd.opts = opts;
    rd.err = err;
    rd.err_len = err_len;

    ds->name = strdup(name);
    if (ds->name == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }

    /* a UTF-8 byte order mark */
    if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0) {
        buf += 3;
        len -= 3;
    }

    format = opts->format;

    if (format == AISERVE_DATA_AUTO) {
        if (aiserve_ends_with(name, ".jsonl")
            || aiserve_ends_with(name, ".json"))
        {
            format = AISERVE_DATA_JSONL;

        } else if (aiserve_ends_with(name, ".csv")) {
            format = AISERVE_DATA_CSV;

        } else {
            format = AISERVE_DATA_CONLL;
        }
    }

    switch (format) {
    case AISERVE_DATA_JSONL:
        ds->label_field = strdup("label");
        rc = ds->label_field ? aiserve_read_jsonl(&rd, buf, len) : -1;
        break;
    case AISERVE_DATA_CSV:
        rc = aiserve_read_csv(&rd, buf, len);
        break;
    default:
        rc = aiserve_read_conll(&rd, buf, len);
        break;
    }

    if (rc == 0 && ds->n == 0) {
        aiserve_err(err, err_len, "%s: no examples", name);
        rc = -1;
    }

    if (rc != 0) {
        aiserve_dataset_free(ds);
        return -1;
    }

    if (ds->converted_tags) {
        snprintf(ds->warning, sizeof(ds->warning), "%s: %zu tags converted to "
                 "IOB2 (an I- starting an entity: IOB1; S-, E-: IOBES), the "
                 "first at line %zu", name, ds->converted_tags,
                 rd.first_conversion);
    }

    return 0;
}


int
aiserve_data_read(const char *path, const aiserve_data_opts_t *opts,
    aiserve_dataset_t *ds, char *err, size_t err_len)
{
    int          fd, rc;
    char        *buf;
    size_t       len;
    ssize_t      n;
    struct stat  st;

    memset(ds, 0, sizeof(*ds));

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        aiserve_err(err, err_len, "%s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }

    buf = malloc(st.st_size + 1);
    if (buf == NULL) {
        close(fd);
        aiserve_err(err, err_len, "%s: out of memory", path);
        return -1;
    }

    for (len = 0; len < (size_t) st.st_size; len += n) {
        n = read(fd, buf + len, st.st_size - len);
        if (n <= 0) {
            aiserve_err(err, err_len, "%s: %s", path,
                        n == 0 ? "file shrank while read" : strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
    }

    close(fd);

    rc = aiserve_data_parse(path, buf, len, opts, ds, err, err_len);
    free(buf);
    return rc;
}


void
aiserve_dataset_free(aiserve_dataset_t *ds)
{
    size_t              i, k;
    aiserve_example_t  *e;

    for (i = 0; i < ds->n; i++) {
        e = &ds->examples[i];
        free(e->text);
        free(e->text_pair);

        for (k = 0; e->labels && k < e->n_labels; k++) {
            free(e->labels[k]);
        }

        for (k = 0; k < e->n_tokens; k++) {
            if (e->tokens) {
                free(e->tokens[k]);
            }
            if (e->tags) {
                free(e->tags[k]);
            }
        }

        for (k = 0; k < e->n_entities; k++) {
            free(e->entities[k].label);
        }

        free(e->labels);
        free(e->tokens);
        free(e->tags);
        free(e->lines);
        free(e->entities);
    }

    free(ds->examples);
    free(ds->name);
    free(ds->label_field);
    memset(ds, 0, sizeof(*ds));
}


/* the label set */

static int
aiserve_str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


int
aiserve_labels_build(const aiserve_dataset_t *train,
    aiserve_label_set_t *set, char *err, size_t err_len)
{
    char                    **all, *s;
    size_t                    i, k, n, cap, len;
    const aiserve_example_t  *e;

    memset(set, 0, sizeof(*set));

    if (train->kind == AISERVE_LABELS_REGRESSION) {
        set->names = malloc(sizeof(char *));
        if (set->names == NULL || (set->names[0] = strdup("LABEL_0")) == NULL)
        {
            free(set->names);
            set->names = NULL;
            aiserve_err(err, err_len, "out of memory");
            return -1;
        }

        set->n = 1;
        return 0;
    }

    cap = 1;
    for (i = 0; i < train->n; i++) {
        e = &train->examples[i];
        cap += e->n_labels + e->n_tokens + 2 * e->n_entities;
    }

    all = malloc(cap * sizeof(char *));
    if (all == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }

    n = 0;

    if (train->kind == AISERVE_LABELS_SPANS) {
        all[n++] = strdup("O");
    }

    for (i = 0; i < train->n; i++) {
        e = &train->examples[i];

        for (k = 0; k < e->n_labels; k++) {
            all[n++] = strdup(e->labels[k]);
        }

        for (k = 0; k < e->n_tokens; k++) {
            all[n++] = strdup(e->tags[k]);
        }

        for (k = 0; k < e->n_entities; k++) {
            len = strlen(e->entities[k].label) + 3;
            s = malloc(2 * len);
            if (s != NULL) {
                snprintf(s, len, "B-%s", e->entities[k].label);
                snprintf(s + len, len, "I-%s", e->entities[k].label);
                all[n++] = strdup(s);
                all[n++] = strdup(s + len);
                free(s);

            } else {
                all[n++] = NULL;
            }
        }
    }

    for (i = 0; i < n; i++) {
        if (all[i] == NULL) {
            for (k = 0; k < n; k++) {
                free(all[k]);
            }

            free(all);
            aiserve_err(err, err_len, "out of memory");
            return -1;
        }
    }

    qsort(all, n, sizeof(char *), aiserve_str_cmp);

    k = 0;
    for (i = 0; i < n; i++) {
        if (k == 0 || strcmp(all[k - 1], all[i]) != 0) {
            all[k++] = all[i];

        } else {
            free(all[i]);
        }
    }

    if (k == 0) {
        free(all);
        aiserve_err(err, err_len, "%s: no labels", train->name);
        return -1;
    }

    set->names = all;
    set->n = k;
    return 0;
}


int32_t
aiserve_labels_id(const aiserve_label_set_t *set, const char *name)
{
    char  **f;

    f = bsearch(&name, set->names, set->n, sizeof(char *), aiserve_str_cmp);

    return f ? (int32_t) (f - set->names) : -1;
}


int
aiserve_labels_check(const aiserve_label_set_t *set,
    const aiserve_dataset_t *ds, char *err, size_t err_len)
{
    char                      b[AISERVE_DATA_ERRLEN];
    size_t                    i, k;
    const aiserve_example_t  *e;

    for (i = 0; i < ds->n; i++) {
        e = &ds->examples[i];

        for (k = 0; k < e->n_labels; k++) {
            if (aiserve_labels_id(set, e->labels[k]) < 0) {
                if (ds->kind == AISERVE_LABELS_MULTI) {
                    snprintf(b, sizeof(b), "%s[%zu]", ds->label_field, k);
                } else {
                    snprintf(b, sizeof(b), "%s", ds->label_field);
                }

                aiserve_err(err, err_len, "%s:%zu: field \"%s\": unknown "
                            "label \"%s\" (not in the training labels)",
                            ds->name, e->line, b, e->labels[k]);
                return -1;
            }
        }

        for (k = 0; k < e->n_tokens; k++) {
            if (aiserve_labels_id(set, e->tags[k]) < 0) {
                if (e->lines) {
                    aiserve_err(err, err_len, "%s:%zu: field \"tag\": unknown "
                                "tag \"%s\" (not in the training labels)",
                                ds->name, e->lines[k], e->tags[k]);
                } else {
                    aiserve_err(err, err_len, "%s:%zu: field \"tags[%zu]\": "
                                "unknown tag \"%s\" (not in the training "
                                "labels)", ds->name, e->line, k, e->tags[k]);
                }

                return -1;
            }
        }

        for (k = 0; k < e->n_entities; k++) {
            snprintf(b, sizeof(b), "B-%s", e->entities[k].label);

            if (aiserve_labels_id(set, b) < 0) {
                aiserve_err(err, err_len, "%s:%zu: field \"entities[%zu]"
                            ".label\": unknown label \"%s\" (not in the "
                            "training labels)", ds->name, e->line, k,
                            e->entities[k].label);
                return -1;
            }
        }
    }

    return 0;
}


void
aiserve_labels_free(aiserve_label_set_t *set)
{
    size_t  i;

    for (i = 0; set->names && i < set->n; i++) {
        free(set->names[i]);
    }

    free(set->names);
    memset(set, 0, sizeof(*set));
}


/* featurization */

static int32_t
aiserve_tag_id(const aiserve_label_set_t *set, const aiserve_dataset_t *ds,
    const aiserve_example_t *e, const char *tag, char *err, size_t err_len)
{
    int32_t  id;

    id = aiserve_labels_id(set, tag);
    if (id < 0) {
        aiserve_err(err, err_len, "%s:%zu: unknown label \"%s\" (not in the "
                    "training labels)", ds->name, e->line, tag);
    }

    return id;
}


/* words of the text that truncation left without a token: the word
 * starts (tokens other than "##" pieces) among the tokens cut */

static size_t
aiserve_span_words_cut(const aiserve_tok_t *tok, const aiserve_example_t *e,
    const aiserve_encoding_t *kept)
{
    size_t              t, n, cut;
    const char         *piece;
    aiserve_tok_opts_t  o;
    aiserve_encoding_t  all;

    aiserve_tok_opts_default(&o);
    o.truncation = 0;

    if (aiserve_tok_encode(tok, e->text, e->text_len, NULL, 0, &o, &all, NULL,
                           0)
        != 0)
    {
        return 0;
    }

    n = 0;
    for (t = 0; t < kept->n_tokens; t++) {
        n += !kept->special_tokens_mask[t];
    }

    cut = 0;
    for (t = 0; t < all.n_tokens; t++) {
        if (all.special_tokens_mask[t]) {
            continue;
        }

        if (n > 0) {
            n--;
            continue;
        }

        piece = aiserve_tok_id_to_token(tok, all.input_ids[t]);
        cut += (piece == NULL || strncmp(piece, "##", 2) != 0);
    }

    aiserve_encoding_free(&all);
    return cut;
}


int
aiserve_featurize(const aiserve_tok_t *tok, const aiserve_dataset_t *ds,
    size_t i, const aiserve_label_set_t *set, size_t max_length,
    aiserve_features_t *f, char *err, size_t err_len)
{
    char                     msg[AISERVE_DATA_ERRLEN], *joined, *p;
    size_t                   t, k, len, *starts, word, last, lo, hi, mid,
                             w, we, ent, prev_ent;
    int32_t                  id;
    const char              *piece;
    aiserve_tok_opts_t       o;
    aiserve_encoding_t       enc;
    const aiserve_example_t *e;

    memset(f, 0, sizeof(*f));
    e = &ds->examples[i];

    aiserve_tok_opts_default(&o);
    if (max_length) {
        o.max_length = max_length;
        o.truncation = 1;
    }

    joined = NULL;
    starts = NULL;

    if (ds->kind == AISERVE_LABELS_TAGS) {
        /* the words joined by spaces, each word's first byte kept */
        len = 0;
        for (k = 0; k < e->n_tokens; k++) {
            len += strlen(e->tokens[k]) + 1;
        }

        joined = malloc(len + 1);
        starts = malloc((e->n_tokens + 1) * sizeof(size_t));
        if (joined == NULL || starts == NULL) {
            free(joined);
            free(starts);
            aiserve_err(err, err_len, "out of memory");
            return -1;
        }

        p = joined;
        for (k = 0; k < e->n_tokens; k++) {
            if (k) {
                *p++ = ' ';
            }

            starts[k] = p - joined;
            len = strlen(e->tokens[k]);
            memcpy(p, e->tokens[k], len);
            p += len;
        }

        *p = '\0';

        if (aiserve_tok_encode(tok, joined, p - joined, NULL, 0, &o, &enc,
                               msg, sizeof(msg))
            != 0)
        {
            free(joined);
            free(starts);
            aiserve_err(err, err_len, "%s:%zu: tokens: %s", ds->name, e->line,
                        msg);
            return -1;
        }

    } else if (aiserve_tok_encode(tok, e->text, e->text_len, e->text_pair,
                                  e->text_pair_len, &o, &enc, msg,
                                  sizeof(msg))
               != 0)
    {
        aiserve_err(err, err_len, "%s:%zu: text: %s", ds->name, e->line, msg);
        return -1;
    }

    f->n_tokens = enc.n_tokens;
    f->input_ids = enc.input_ids;
    f->token_type_ids = enc.token_type_ids;
    enc.input_ids = NULL;
    enc.token_type_ids = NULL;
    f->label = AISERVE_TRAIN_IGNORE;

    switch (ds->kind) {

    case AISERVE_LABELS_SINGLE:
        f->label = aiserve_tag_id(set, ds, e, e->labels[0], err, err_len);
        if (f->label < 0) {
            goto failed;
        }
        break;

    case AISERVE_LABELS_MULTI:
    case AISERVE_LABELS_REGRESSION:
        f->targets = calloc(set->n + 1, sizeof(float));
        if (f->targets == NULL) {
            aiserve_err(err, err_len, "out of memory");
            goto failed;
        }

        if (ds->kind == AISERVE_LABELS_REGRESSION) {
            f->targets[0] = (float) e->value;
            break;
        }

        for (k = 0; k < e->n_labels; k++) {
            id = aiserve_tag_id(set, ds, e, e->labels[k], err, err_len);
            if (id < 0) {
                goto failed;
            }

            f->targets[id] = 1.0f;
        }
        break;

    default:
        f->labels = malloc((f->n_tokens + 1) * sizeof(int32_t));
        if (f->labels == NULL) {
            aiserve_err(err, err_len, "out of memory");
            goto failed;
        }

        for (t = 0; t < f->n_tokens; t++) {
            f->labels[t] = AISERVE_TRAIN_IGNORE;
        }

        if (ds->kind == AISERVE_LABELS_TAGS) {
            /* word_ids(): the word whose bytes hold the token's start */
            last = (size_t) -1;

            for (t = 0; t < f->n_tokens; t++) {
                if (enc.special_tokens_mask[t]) {
                    continue;
                }

                lo = 0;
                hi = e->n_tokens;
                while (hi - lo > 1) {
                    mid = (lo + hi) / 2;
                    if (starts[mid] <= enc.byte_offsets[2 * t]) {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }

                word = lo;

                if (word != last) {
                    id = aiserve_tag_id(set, ds, e, e->tags[word], err,
                                        err_len);
                    if (id < 0) {
                        goto failed;
                    }

                    f->labels[t] = id;
                    last = word;
                }
            }

            if (enc.n_tokens_untruncated > enc.n_tokens) {
                f->words_cut = e->n_tokens - (last == (size_t) -1
                                              ? 0 : last + 1);
            }

            break;
        }

        /* spans: a word is a token and the "##" pieces after it */
        prev_ent = (size_t) -1;
        ent = 0;

        for (t = 0; t < f->n_tokens; t = w) {
            w = t + 1;

            if (enc.special_tokens_mask[t]) {
                continue;
            }

            for ( /* void */ ; w < f->n_tokens; w++) {
                piece = aiserve_tok_id_to_token(tok, f->input_ids[w]);

                if (enc.special_tokens_mask[w] || piece == NULL
                    || strncmp(piece, "##", 2) != 0)
                {
                    break;
                }
            }

            we = enc.offsets[2 * (w - 1) + 1];

            while (ent < e->n_entities
                   && e->entities[ent].end <= enc.offsets[2 * t])
            {
                ent++;
            }

            if (ent < e->n_entities && e->entities[ent].start < we) {
                snprintf(msg, sizeof(msg), "%s-%s",
                         ent == prev_ent ? "I" : "B",
                         e->entities[ent].label);
                prev_ent = ent;

            } else {
                snprintf(msg, sizeof(msg), "O");
                prev_ent = (size_t) -1;
            }

            id = aiserve_tag_id(set, ds, e, msg, err, err_len);
            if (id < 0) {
                goto failed;
            }

            f->labels[t] = id;
        }

        if (enc.n_tokens_untruncated > enc.n_tokens) {
            f->words_cut = aiserve_span_words_cut(tok, e, &enc);
        }

        break;
    }

    aiserve_encoding_free(&enc);
    free(joined);
    free(starts);
    return 0;

failed:

    aiserve_encoding_free(&enc);
    free(joined);
    free(starts);
    aiserve_features_free(f);
    return -1;
}


void
aiserve_features_free(aiserve_features_t *f)
{
    free(f->input_ids);
    free(f->token_type_ids);
    free(f->targets);
    free(f->labels);
    memset(f, 0, sizeof(*f));
}
