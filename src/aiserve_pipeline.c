/*
 * aiserve pipelines: score functions, the BIO chunker and NER aggregation
 * (see aiserve_pipeline.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aiserve_err.h"
#include "aiserve_pipeline.h"


/* a label's prefix and type as one chunking mode reads them */
typedef struct {
    char         prefix;
    const char  *type;
    size_t       type_len;
} aiserve_bio_tag_t;


static int aiserve_type_eq(const aiserve_bio_tag_t *a,
    const aiserve_bio_tag_t *b);
static void aiserve_chunk_pipeline(const char *const *labels, size_t n,
    aiserve_chunk_t *out, size_t *n_out);
static void aiserve_tag_conll(const char *label, aiserve_bio_tag_t *t);
static int aiserve_conll_end(const aiserve_bio_tag_t *prev,
    const aiserve_bio_tag_t *cur);
static int aiserve_conll_start(const aiserve_bio_tag_t *prev,
    const aiserve_bio_tag_t *cur);
static void aiserve_tag_strict(const char *label, aiserve_bio_tag_t *t);
static size_t aiserve_utf8_len(const char *s, size_t len);
static int aiserve_ignored(const char *label, size_t len,
    const char *const *ignore, const size_t *ignore_len, size_t n_ignore);


int
aiserve_fn_parse(const char *name)
{
    if (strcasecmp(name, "sigmoid") == 0) {
        return AISERVE_FN_SIGMOID;
    }

    if (strcasecmp(name, "softmax") == 0) {
        return AISERVE_FN_SOFTMAX;
    }

    if (strcasecmp(name, "none") == 0) {
        return AISERVE_FN_NONE;
    }

    return -1;
}


aiserve_fn_e
aiserve_fn_default(const aiserve_model_info_t *info)
{
    if (info->problem_type == AISERVE_PROBLEM_REGRESSION) {
        return AISERVE_FN_NONE;
    }

    if (info->problem_type == AISERVE_PROBLEM_MULTI_LABEL
        || info->num_labels == 1)
    {
        return AISERVE_FN_SIGMOID;
    }

    return AISERVE_FN_SOFTMAX;
}


void
aiserve_fn_apply(aiserve_fn_e fn, const float *logits, float *scores,
    size_t n)
{
    float   max, sum;
    size_t  i;

    switch (fn) {

    case AISERVE_FN_SIGMOID:
        for (i = 0; i < n; i++) {
            scores[i] = 1.0f / (1.0f + expf(-logits[i]));
        }
        break;

    case AISERVE_FN_SOFTMAX:
        if (n == 0) {
            break;
        }

        max = logits[0];
        for (i = 1; i < n; i++) {
            if (logits[i] > max) {
                max = logits[i];
            }
        }

        sum = 0;
        for (i = 0; i < n; i++) {
            scores[i] = expf(logits[i] - max);
            sum += scores[i];
        }

        for (i = 0; i < n; i++) {
            scores[i] /= sum;
        }
        break;

    default:
        if (scores != logits) {
            memmove(scores, logits, n * sizeof(float));
        }
        break;
    }
}


size_t
aiserve_argmax(const float *v, size_t n)
{
    size_t  k, a;

    a = 0;
    for (k = 1; k < n; k++) {
        if (v[k] > v[a]) {
            a = k;
        }
    }

    return a;
}


void
aiserve_order_by_score(const float *score, size_t n, size_t *order)
{
    size_t  a, b, tmp;

    for (a = 0; a < n; a++) {
        order[a] = a;
    }

    /* insertion sort: stable, and n is a number of labels or documents */

    for (a = 1; a < n; a++) {
        tmp = order[a];

        for (b = a; b > 0 && score[order[b - 1]] < score[tmp]; b--) {
            order[b] = order[b - 1];
        }

        order[b] = tmp;
    }
}


int
aiserve_agg_parse(const char *name)
{
    int  i;

    static const char  *names[] = {
        "none", "simple", "first", "average", "max"
    };

    for (i = 0; i < (int) (sizeof(names) / sizeof(names[0])); i++) {
        if (strcasecmp(name, names[i]) == 0) {
            return i;
        }
    }

    return -1;
}


/* the BIO chunker */

static int
aiserve_type_eq(const aiserve_bio_tag_t *a, const aiserve_bio_tag_t *b)
{
    return a->type_len == b->type_len
           && memcmp(a->type, b->type, a->type_len) == 0;
}


int
aiserve_bio_chunks(const char *const *labels, size_t n,
    aiserve_chunk_mode_e mode, aiserve_chunk_t *out, size_t *n_out,
    char *err, size_t err_len)
{
    size_t             i, j, begin, k;
    aiserve_chunk_t   *c;
    aiserve_bio_tag_t  prev, cur, next;

    *n_out = 0;

    if (mode == AISERVE_CHUNK_PIPELINE) {
        aiserve_chunk_pipeline(labels, n, out, n_out);
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (labels[i][0] == '\0') {
            aiserve_err(err, err_len, "empty tag at token %zu", i);
            return -1;
        }

        if (mode == AISERVE_CHUNK_IOB2 && labels[i][0] != 'B'
            && labels[i][0] != 'I' && labels[i][0] != 'O')
        {
            aiserve_err(err, err_len, "tag \"%s\" at token %zu is not IOB2 "
                        "(B-, I- or O)", labels[i], i);
            return -1;
        }
    }

    k = 0;

    if (mode == AISERVE_CHUNK_IOB2) {
        /* Tokens.entities of seqeval's IOB2 scheme */

        for (i = 0; i < n; i = j) {
            j = i + 1;

            if (labels[i][0] != 'B') {
                continue;
            }

            aiserve_tag_strict(labels[i], &cur);

            for ( /* void */ ; j < n && labels[j][0] == 'I'; j++) {
                aiserve_tag_strict(labels[j], &next);

                if (!aiserve_type_eq(&cur, &next)) {
                    break;
                }
            }

            c = &out[k++];
            c->start = i;
            c->end = j;
            c->type = cur.type;
            c->type_len = cur.type_len;
        }

        *n_out = k;
        return 0;
    }

    /* get_entities: the sequence and one "O" after it */

    prev.prefix = 'O';
    prev.type = "";
    prev.type_len = 0;
    begin = 0;

    for (i = 0; i <= n; i++) {
        aiserve_tag_conll(i < n ? labels[i] : "O", &cur);

        if (aiserve_conll_end(&prev, &cur)) {
            c = &out[k++];
            c->start = begin;
            c->end = i;
            c->type = prev.type;
            c->type_len = prev.type_len;
        }

        if (aiserve_conll_start(&prev, &cur)) {
            begin = i;
        }

        prev = cur;
    }

    *n_out = k;
    return 0;
}


static void
aiserve_chunk_pipeline(const char *const *labels, size_t n,
    aiserve_chunk_t *out, size_t *n_out)
{
    size_t             i, k;
    const char        *label, *dash;
    aiserve_chunk_t   *c;
    aiserve_bio_tag_t  prev, cur;

    k = 0;
    c = NULL;

    prev.prefix = 'I';
    prev.type = "";
    prev.type_len = 0;

    for (i = 0; i < n; i++) {
        label = labels[i];

        /* get_tag */
        if ((label[0] == 'B' || label[0] == 'I') && label[1] == '-') {
            cur.prefix = label[0];
            cur.type = label + 2;

        } else {
            cur.prefix = 'I';
            cur.type = label;
        }

        cur.type_len = strlen(cur.type);

        if (c == NULL || cur.prefix == 'B' || !aiserve_type_eq(&prev, &cur)) {
            /* entity_group: the label after its first "-" */
            dash = strchr(label, '-');

            c = &out[k++];
            c->start = i;
            c->type = dash ? dash + 1 : label;
            c->type_len = strlen(c->type);
        }

        c->end = i + 1;
        prev = cur;
    }

    *n_out = k;
}


/* get_entities: tag = chunk[0], type_ = chunk[1:].split('-')[-1] or '_' */

static void
aiserve_tag_conll(const char *label, aiserve_bio_tag_t *t)
{
    const char  *rest, *dash;

    t->prefix = label[0];
    rest = label + 1;
    dash = strchr(rest, '-');
    t->type = dash ? dash + 1 : rest;
    t->type_len = strlen(t->type);

    if (t->type_len == 0) {
        t->type = "_";
        t->type_len = 1;
    }
}


static int
aiserve_conll_end(const aiserve_bio_tag_t *prev, const aiserve_bio_tag_t *cur)
{
    char  p, c;

    p = prev->prefix;
    c = cur->prefix;

    if (p == 'E' || p == 'S') {
        return 1;
    }

    if ((p == 'B' || p == 'I') && (c == 'B' || c == 'S' || c == 'O')) {
        return 1;
    }

    return p != 'O' && p != '.' && !aiserve_type_eq(prev, cur);
}


static int
aiserve_conll_start(const aiserve_bio_tag_t *prev,
    const aiserve_bio_tag_t *cur)
{
    char  p, c;

    p = prev->prefix;
    c = cur->prefix;

    if (c == 'B' || c == 'S') {
        return 1;
    }

    if ((p == 'E' || p == 'S' || p == 'O') && (c == 'E' || c == 'I')) {
        return 1;
    }

    return c != 'O' && c != '.' && !aiserve_type_eq(prev, cur);
}


/* scheme.Token: tag = token[1:].strip('-') or '_' */

static void
aiserve_tag_strict(const char *label, aiserve_bio_tag_t *t)
{
    const char  *s, *e;

    t->prefix = label[0];
    s = label + 1;
    e = s + strlen(s);

    while (s < e && *s == '-') {
        s++;
    }

    while (e > s && e[-1] == '-') {
        e--;
    }

    t->type = (s == e) ? "_" : s;
    t->type_len = (s == e) ? 1 : (size_t) (e - s);
}


/* NER post-processing */

static size_t
aiserve_utf8_len(const char *s, size_t len)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < len; i++) {
        if (((unsigned char) s[i] & 0xc0) != 0x80) {
            n++;
        }
    }

    return n;
}


static int
aiserve_ignored(const char *label, size_t len, const char *const *ignore,
    const size_t *ignore_len, size_t n_ignore)
{
    size_t  i;

    if (ignore == NULL) {
        return len == 1 && label[0] == 'O';
    }

    for (i = 0; i < n_ignore; i++) {
        if (ignore_len[i] == len && memcmp(ignore[i], label, len) == 0) {
            return 1;
        }
    }

    return 0;
}


/* one NER token or word before grouping */
typedef struct {
    const char   *word;
    size_t        word_len;
    const float  *scores;       /* [num_labels] */
    size_t        index;
    uint32_t      start;
    uint32_t      end;
    int           is_subword;
    size_t        label;
    float         score;
} aiserve_pre_entity_t;


static size_t
aiserve_decode_pre(const aiserve_pre_entity_t *e, size_t n, const char **tok,
    size_t *len, char *out)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        tok[i] = e[i].word;
        len[i] = e[i].word_len;
    }

    return aiserve_wordpiece_decode(tok, len, n, out);
}


int
aiserve_ner_postprocess(const aiserve_tok_t *tok, const char *text,
    const aiserve_encoding_t *enc, const float *logits, size_t num_labels,
    char *const *id2label, aiserve_agg_e agg, const char *const *ignore,
    const size_t *ignore_len, size_t n_ignore, aiserve_ner_result_t *out,
    char *err, size_t err_len)
{
    int                     rc;
    float                  *probs, *avg, sum;
    char                   *p;
    size_t                  nl, t, k, g, n, nw, first, last, size, nc,
                           *toklen;
    int32_t                 unk;
    const char             *s, *label, **toks, **labels;
    aiserve_chunk_t        *chunks;
    aiserve_ner_entity_t   *o;
    aiserve_pre_entity_t   *pre, *words, *e;

    nl = num_labels;
    rc = -1;
    memset(out, 0, sizeof(*out));

    pre = calloc(enc->n_tokens + 1, sizeof(aiserve_pre_entity_t));
    words = calloc(enc->n_tokens + 1, sizeof(aiserve_pre_entity_t));
    probs = malloc((enc->n_tokens * nl + 1) * sizeof(float));
    avg = malloc((nl + 1) * sizeof(float));
    toks = malloc((enc->n_tokens + 1) * sizeof(char *));
    toklen = malloc((enc->n_tokens + 1) * sizeof(size_t));
    labels = malloc((enc->n_tokens + 1) * sizeof(char *));
    chunks = malloc((enc->n_tokens + 1) * sizeof(aiserve_chunk_t));
    out->entities = calloc(enc->n_tokens + 1, sizeof(aiserve_ner_entity_t));

    if (pre == NULL || words == NULL || probs == NULL || avg == NULL
        || toks == NULL || toklen == NULL || labels == NULL || chunks == NULL
        || out->entities == NULL)
    {
        goto nomem;
    }

    unk = aiserve_tok_token_to_id(tok, "[UNK]");

    /* gather_pre_entities */

    n = 0;
    size = 1;

    for (t = 0; t < enc->n_tokens; t++) {
        if (enc->special_tokens_mask[t]) {
            continue;
        }

        e = &pre[n++];

        aiserve_fn_apply(AISERVE_FN_SOFTMAX, logits + t * nl, probs + t * nl,
                         nl);

        e->scores = probs + t * nl;
        e->index = t;
        e->start = enc->offsets[2 * t];
        e->end = enc->offsets[2 * t + 1];

        s = aiserve_tok_id_to_token(tok, enc->input_ids[t]);
        s = s ? s : "";

        if (enc->input_ids[t] == unk) {
            e->word = text + enc->byte_offsets[2 * t];
            e->word_len = enc->byte_offsets[2 * t + 1]
                          - enc->byte_offsets[2 * t];
            e->is_subword = 0;

        } else {
            e->word = s;
            e->word_len = strlen(s);
            e->is_subword = aiserve_utf8_len(s, e->word_len)
                            != (size_t) (e->end - e->start);
        }

        e->label = aiserve_argmax(e->scores, nl);
        e->score = e->scores[e->label];
        size += e->word_len + 1;
    }

    /* words, then groups, each at most the tokens' bytes and a space each */
    out->words = malloc(2 * size);
    if (out->words == NULL) {
        goto nomem;
    }

    p = out->words;

    if (agg == AISERVE_AGG_NONE) {

        for (k = 0; k < n; k++) {
            e = &pre[k];
            label = id2label[e->label];

            if (aiserve_ignored(label, strlen(label), ignore, ignore_len,
                                n_ignore))
            {
                continue;
            }

            o = &out->entities[out->n++];
            o->entity = label;
            o->entity_len = strlen(label);
            o->score = e->score;
            o->index = e->index;
            o->word = e->word;
            o->word_len = e->word_len;
            o->start = e->start;
            o->end = e->end;
        }

        goto done;
    }

    /* aggregate_words for first / average / max */

    if (agg == AISERVE_AGG_SIMPLE) {
        memcpy(words, pre, n * sizeof(aiserve_pre_entity_t));
        nw = n;

    } else {
        nw = 0;

        for (first = 0; first < n; first = last) {
            for (last = first + 1; last < n && pre[last].is_subword; last++) {
                /* void */
            }

            e = &words[nw++];
            e->start = pre[first].start;
            e->end = pre[last - 1].end;
            e->word = p;
            e->word_len = aiserve_decode_pre(&pre[first], last - first, toks,
                                             toklen, p);
            p += e->word_len;

            switch (agg) {

            case AISERVE_AGG_FIRST:
                g = first;
                break;

            case AISERVE_AGG_MAX:
                /* max(entities, key=scores.max()): the first maximum */
                g = first;
                for (k = first + 1; k < last; k++) {
                    if (pre[k].score > pre[g].score) {
                        g = k;
                    }
                }
                break;

            default: /* average */
                for (k = 0; k < nl; k++) {
                    sum = 0;
                    for (g = first; g < last; g++) {
                        sum += pre[g].scores[k];
                    }

                    avg[k] = sum / (float) (last - first);
                }

                e->label = aiserve_argmax(avg, nl);
                e->score = avg[e->label];
                continue;
            }

            e->label = pre[g].label;
            e->score = pre[g].score;
        }
    }

    /* group_entities over words (simple: over tokens) */

    for (k = 0; k < nw; k++) {
        labels[k] = id2label[words[k].label];
    }

    (void) aiserve_bio_chunks(labels, nw, AISERVE_CHUNK_PIPELINE, chunks,
                              &nc, NULL, 0);

    for (g = 0; g < nc; g++) {
        first = chunks[g].start;
        last = chunks[g].end;

        if (aiserve_ignored(chunks[g].type, chunks[g].type_len, ignore,
                            ignore_len, n_ignore))
        {
            continue;
        }

        /* np.nanmean of the scores, float32 */
        sum = 0;
        for (k = first; k < last; k++) {
            sum += words[k].score;
        }

        o = &out->entities[out->n++];
        o->entity = chunks[g].type;
        o->entity_len = chunks[g].type_len;
        o->score = sum / (float) (last - first);
        o->word = p;
        o->word_len = aiserve_decode_pre(&words[first], last - first, toks,
                                         toklen, p);
        p += o->word_len;
        o->start = words[first].start;
        o->end = words[last - 1].end;
    }

done:

    rc = 0;

nomem:

    free(pre);
    free(words);
    free(probs);
    free(avg);
    free(toks);
    free(toklen);
    free(labels);
    free(chunks);

    if (rc != 0) {
        aiserve_ner_result_free(out);
        aiserve_err(err, err_len, "out of memory");
    }

    return rc;
}


void
aiserve_ner_result_free(aiserve_ner_result_t *res)
{
    free(res->entities);
    free(res->words);
    memset(res, 0, sizeof(*res));
}


/* In-place replacement of every FROM by TO (not longer than FROM) in
 * buf[0 .. *len), as Rust's str::replace. */

static void
aiserve_replace(char *buf, size_t *len, const char *from, const char *to)
{
    char    *src, *dst, *last;
    size_t   flen, tlen;

    flen = strlen(from);
    tlen = strlen(to);
    src = buf;
    dst = buf;
    last = buf + *len;

    while (src < last) {
        if ((size_t) (last - src) >= flen && memcmp(src, from, flen) == 0) {
            memmove(dst, to, tlen);
            dst += tlen;
            src += flen;
            continue;
        }

        *dst++ = *src++;
    }

    *len = dst - buf;
}


size_t
aiserve_wordpiece_decode(const char *const *tokens, const size_t *len,
    size_t n, char *out)
{
    char        *p;
    size_t       i, k, l;
    const char  *s;

    static const char  *cleanup[][2] = {
        { " .", "." }, { " ?", "?" }, { " !", "!" }, { " ,", "," },
        { " ' ", "'" }, { " n't", "n't" }, { " 'm", "'m" },
        { " do not", " don't" }, { " 's", "'s" }, { " 've", "'ve" },
        { " 're", "'re" }
    };

    p = out;

    for (i = 0; i < n; i++) {
        s = tokens[i];
        l = len[i];

        if (i != 0) {
            if (l >= 2 && s[0] == '#' && s[1] == '#') {
                s += 2;
                l -= 2;

            } else {
                *p = ' ';
                memmove(p + 1, s, l);
                s = p;
                l++;
            }
        }

        if (s != p) {
            memmove(p, s, l);
        }

        for (k = 0; k < sizeof(cleanup) / sizeof(cleanup[0]); k++) {
            aiserve_replace(p, &l, cleanup[k][0], cleanup[k][1]);
        }

        p += l;
    }

    return p - out;
}
