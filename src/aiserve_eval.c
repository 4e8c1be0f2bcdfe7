/*
 * aiserve evaluation reports (see aiserve_eval.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aiserve_err.h"
#include "aiserve_eval.h"


/* a string that need not be NUL-terminated */
typedef struct {
    const char  *s;
    size_t       len;
} aiserve_span_t;

/* an entity: type index, tokens [start, end) of the flattened sentences */
typedef struct {
    size_t  type;
    size_t  start;
    size_t  end;
} aiserve_entity_t;

/* per-label counts */
typedef struct {
    size_t  tp;
    size_t  pred;
    size_t  true_;
} aiserve_counts_t;


static int aiserve_span_cmp(const void *a, const void *b);
static int aiserve_label_set(const aiserve_span_t *items, size_t n,
    aiserve_span_t **set, size_t *n_set);
static size_t aiserve_label_index(const aiserve_span_t *set, size_t n_set,
    aiserve_span_t key);
static double aiserve_pairwise_sum(const double *a, size_t n);
static double aiserve_div(double num, double den);
static int aiserve_confusion(aiserve_report_t *rep,
    const aiserve_span_t *t, const aiserve_span_t *p, size_t n);
static int aiserve_rows(aiserve_report_t *rep, const aiserve_span_t *set,
    size_t n_set, const aiserve_counts_t *c, size_t total);
static int aiserve_entity_cmp(const void *a, const void *b);
static size_t aiserve_entities(aiserve_entity_t *e, size_t n);
static int aiserve_chunk_all(const char *const *const *y, const size_t *lens,
    size_t n_sentences, aiserve_chunk_mode_e mode, const char **flat,
    aiserve_chunk_t *chunks, size_t *n_chunks, char *err, size_t err_len);


static int
aiserve_span_cmp(const void *a, const void *b)
{
    int                    c;
    const aiserve_span_t  *x, *y;

    x = a;
    y = b;

    /* Python's str order is code point order: UTF-8 bytes, then length */
    c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);

    if (c != 0) {
        return c;
    }

    return (x->len > y->len) - (x->len < y->len);
}


/* the sorted, de-duplicated labels of items[0..n) (malloc'ed) */

static int
aiserve_label_set(const aiserve_span_t *items, size_t n, aiserve_span_t **set,
    size_t *n_set)
{
    size_t           i, k;
    aiserve_span_t  *s;

    s = malloc((n + 1) * sizeof(aiserve_span_t));
    if (s == NULL) {
        return -1;
    }

    memcpy(s, items, n * sizeof(aiserve_span_t));
    qsort(s, n, sizeof(aiserve_span_t), aiserve_span_cmp);

    k = 0;
    for (i = 0; i < n; i++) {
        if (k == 0 || aiserve_span_cmp(&s[k - 1], &s[i]) != 0) {
            s[k++] = s[i];
        }
    }

    *set = s;
    *n_set = k;
    return 0;
}


static size_t
aiserve_label_index(const aiserve_span_t *set, size_t n_set,
    aiserve_span_t key)
{
    const aiserve_span_t  *f;

    f = bsearch(&key, set, n_set, sizeof(aiserve_span_t), aiserve_span_cmp);

    return f - set;
}


/*
 * numpy's pairwise summation of float64 (DOUBLE_pairwise_sum, which
 * np.sum, np.mean and np.average use): below 8 terms a plain loop, up to
 * 128 eight accumulators, above that halves cut at a multiple of 8.
 */

static double
aiserve_pairwise_sum(const double *a, size_t n)
{
    double  r[8], res;
    size_t  i, j, n2;

    if (n < 8) {
        res = 0.;
        for (i = 0; i < n; i++) {
            res += a[i];
        }

        return res;
    }

    if (n <= 128) {
        for (j = 0; j < 8; j++) {
            r[j] = a[j];
        }

        for (i = 8; i < n - (n % 8); i += 8) {
            for (j = 0; j < 8; j++) {
                r[j] += a[i + j];
            }
        }

        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));

        for ( /* void */ ; i < n; i++) {
            res += a[i];
        }

        return res;
    }

    n2 = n / 2;
    n2 -= n2 % 8;

    return aiserve_pairwise_sum(a, n2) + aiserve_pairwise_sum(a + n2, n - n2);
}


/* _prf_divide with zero_division=0 */

static double
aiserve_div(double num, double den)
{
    return den == 0 ? 0.0 : num / den;
}


static int
aiserve_confusion(aiserve_report_t *rep, const aiserve_span_t *t,
    const aiserve_span_t *p, size_t n)
{
    size_t           i, n_set;
    aiserve_span_t  *all, *set;

    all = malloc((2 * n + 1) * sizeof(aiserve_span_t));
    if (all == NULL) {
        return -1;
    }

    memcpy(all, t, n * sizeof(aiserve_span_t));
    memcpy(all + n, p, n * sizeof(aiserve_span_t));

    if (aiserve_label_set(all, 2 * n, &set, &n_set) != 0) {
        free(all);
        return -1;
    }

    free(all);

    rep->labels = calloc(n_set + 1, sizeof(char *));
    rep->confusion = calloc(n_set * n_set + 1, sizeof(size_t));
    if (rep->labels == NULL || rep->confusion == NULL) {
        free(set);
        return -1;
    }

    rep->n_labels = n_set;

    for (i = 0; i < n_set; i++) {
        rep->labels[i] = strndup(set[i].s, set[i].len);
        if (rep->labels[i] == NULL) {
            free(set);
            return -1;
        }
    }

    for (i = 0; i < n; i++) {
        rep->confusion[aiserve_label_index(set, n_set, t[i]) * n_set
                       + aiserve_label_index(set, n_set, p[i])]++;
    }

    free(set);
    return 0;
}


/* per-label rows and the macro and weighted averages (both libraries) */

static int
aiserve_rows(aiserve_report_t *rep, const aiserve_span_t *set, size_t n_set,
    const aiserve_counts_t *c, size_t total)
{
    double                *v, *w, *vw, wsum, *avg[3];
    size_t                 i, m;
    aiserve_report_row_t  *row;

    rep->rows = calloc(n_set + 1, sizeof(aiserve_report_row_t));
    v = malloc(3 * (n_set + 1) * sizeof(double));
    w = malloc((n_set + 1) * sizeof(double));
    vw = malloc((n_set + 1) * sizeof(double));

    if (rep->rows == NULL || v == NULL || w == NULL || vw == NULL) {
        free(v);
        free(w);
        free(vw);
        return -1;
    }

    rep->n_rows = n_set;

    for (i = 0; i < n_set; i++) {
        row = &rep->rows[i];
        row->name = strndup(set[i].s, set[i].len);
        if (row->name == NULL) {
            free(v);
            free(w);
            free(vw);
            return -1;
        }

        row->precision = aiserve_div((double) c[i].tp, (double) c[i].pred);
        row->recall = aiserve_div((double) c[i].tp, (double) c[i].true_);

        if (rep->kind != AISERVE_REPORT_SEQEVAL) {
            /* (1 + beta2) tp / (beta2 true + pred) */
            row->f1 = aiserve_div(2.0 * (double) c[i].tp,
                                  (double) c[i].true_ + (double) c[i].pred);

        } else {
            /* (1 + beta2) p r / (beta2 p + r), denominator 0 -> 1 */
            row->f1 = 2.0 * row->precision * row->recall;
            if (row->precision + row->recall != 0) {
                row->f1 /= row->precision + row->recall;
            }
        }

        row->support = c[i].true_;

        v[i] = row->precision;
        v[n_set + i] = row->recall;
        v[2 * n_set + i] = row->f1;
        w[i] = (double) c[i].true_;
    }

    wsum = aiserve_pairwise_sum(w, n_set);

    avg[0] = &rep->macro.precision;
    avg[1] = &rep->macro.recall;
    avg[2] = &rep->macro.f1;

    for (m = 0; m < 3; m++) {
        *avg[m] = aiserve_pairwise_sum(v + m * n_set, n_set) / (double) n_set;
    }

    avg[0] = &rep->weighted.precision;
    avg[1] = &rep->weighted.recall;
    avg[2] = &rep->weighted.f1;

    for (m = 0; m < 3; m++) {
        if (wsum == 0) {
            /* seqeval returns zero_division's 0; sklearn's _nanaverage
             * the plain mean (multi-label: no label has support) */
            *avg[m] = (rep->kind == AISERVE_REPORT_SEQEVAL)
                      ? 0.0
                      : aiserve_pairwise_sum(v + m * n_set, n_set)
                        / (double) n_set;
            continue;
        }

        for (i = 0; i < n_set; i++) {
            vw[i] = v[m * n_set + i] * w[i];
        }

        *avg[m] = aiserve_pairwise_sum(vw, n_set) / wsum;
    }

    rep->macro.name = strndup("macro avg", 9);
    rep->weighted.name = strndup("weighted avg", 12);
    rep->macro.support = total;
    rep->weighted.support = total;

    free(v);
    free(w);
    free(vw);

    return (rep->macro.name && rep->weighted.name) ? 0 : -1;
}


int
aiserve_eval_classification(const char *const *y_true,
    const char *const *y_pred, size_t n, aiserve_report_t *rep, char *err,
    size_t err_len)
{
    int                rc;
    size_t             i, n_set, a, b, correct;
    aiserve_span_t    *t, *p, *set;
    aiserve_counts_t  *c;

    memset(rep, 0, sizeof(*rep));
    rep->kind = AISERVE_REPORT_SKLEARN;
    rc = -1;

    if (n == 0) {
        aiserve_err(err, err_len, "no labels to evaluate");
        return -1;
    }

    set = NULL;
    c = NULL;
    t = malloc(n * sizeof(aiserve_span_t));
    p = malloc(n * sizeof(aiserve_span_t));
    if (t == NULL || p == NULL) {
        goto nomem;
    }

    for (i = 0; i < n; i++) {
        t[i].s = y_true[i];
        t[i].len = strlen(y_true[i]);
        p[i].s = y_pred[i];
        p[i].len = strlen(y_pred[i]);
    }

    if (aiserve_confusion(rep, t, p, n) != 0) {
        goto nomem;
    }

    /* the classes are the confusion matrix's labels */
    n_set = rep->n_labels;
    set = malloc((n_set + 1) * sizeof(aiserve_span_t));
    c = calloc(n_set + 1, sizeof(aiserve_counts_t));
    if (set == NULL || c == NULL) {
        goto nomem;
    }

    correct = 0;

    for (a = 0; a < n_set; a++) {
        set[a].s = rep->labels[a];
        set[a].len = strlen(rep->labels[a]);

        for (b = 0; b < n_set; b++) {
            c[a].true_ += rep->confusion[a * n_set + b];
            c[b].pred += rep->confusion[a * n_set + b];
        }

        c[a].tp = rep->confusion[a * n_set + a];
        correct += c[a].tp;
    }

    rep->float_support = (correct == 0);

    /* micro precision = sum tp / sum pred, the accuracy */
    rep->accuracy = (double) correct / (double) n;

    rc = aiserve_rows(rep, set, n_set, c, n);

nomem:

    free(t);
    free(p);
    free(set);
    free(c);

    if (rc != 0) {
        aiserve_report_free(rep);
        aiserve_err(err, err_len, "out of memory");
    }

    return rc;
}


int
aiserve_eval_multilabel(const uint8_t *y_true, const uint8_t *y_pred,
    size_t n_samples, const char *const *names, size_t n_labels,
    aiserve_report_t *rep, char *err, size_t err_len)
{
    int                rc;
    double            *sp, *sr, *sf;
    size_t             i, j, tp, np, nt, stp, snp, snt, *cm;
    aiserve_span_t    *set;
    aiserve_counts_t  *c;

    memset(rep, 0, sizeof(*rep));
    rep->kind = AISERVE_REPORT_MULTILABEL;

    if (n_samples == 0 || n_labels == 0) {
        aiserve_err(err, err_len, "no samples or no labels to evaluate");
        return -1;
    }

    rc = -1;
    set = malloc(n_labels * sizeof(aiserve_span_t));
    c = calloc(n_labels, sizeof(aiserve_counts_t));
    sp = malloc(3 * n_samples * sizeof(double));
    rep->labels = calloc(n_labels, sizeof(char *));
    rep->confusion = calloc(4 * n_labels, sizeof(size_t));

    if (set == NULL || c == NULL || sp == NULL || rep->labels == NULL
        || rep->confusion == NULL)
    {
        goto done;
    }

    rep->n_labels = n_labels;
    sr = sp + n_samples;
    sf = sr + n_samples;
    tp = np = nt = 0;

    for (i = 0; i < n_samples; i++) {
        stp = snp = snt = 0;

        for (j = 0; j < n_labels; j++) {
            cm = &rep->confusion[4 * j];

            if (y_true[i * n_labels + j]) {
                if (y_pred[i * n_labels + j]) {
                    cm[3]++;
                    stp++;
                } else {
                    cm[2]++;
                }
                snt++;

            } else if (y_pred[i * n_labels + j]) {
                cm[1]++;

            } else {
                cm[0]++;
            }

            snp += y_pred[i * n_labels + j] != 0;
        }

        /* samples: each sample's scores (samplewise confusion matrices) */
        sp[i] = aiserve_div((double) stp, (double) snp);
        sr[i] = aiserve_div((double) stp, (double) snt);
        sf[i] = aiserve_div(2.0 * (double) stp, (double) snt + (double) snp);

        tp += stp;
        np += snp;
        nt += snt;
    }

    for (j = 0; j < n_labels; j++) {
        set[j].s = names[j];
        set[j].len = strlen(names[j]);
        c[j].tp = rep->confusion[4 * j + 3];
        c[j].pred = rep->confusion[4 * j + 1] + c[j].tp;
        c[j].true_ = rep->confusion[4 * j + 2] + c[j].tp;

        rep->labels[j] = strdup(names[j]);
        if (rep->labels[j] == NULL) {
            goto done;
        }
    }

    if (aiserve_rows(rep, set, n_labels, c, nt) != 0) {
        goto done;
    }

    rep->micro.name = strdup("micro avg");
    rep->samples.name = strdup("samples avg");
    if (rep->micro.name == NULL || rep->samples.name == NULL) {
        goto done;
    }

    rep->micro.precision = aiserve_div((double) tp, (double) np);
    rep->micro.recall = aiserve_div((double) tp, (double) nt);
    rep->micro.f1 = aiserve_div(2.0 * (double) tp, (double) nt + (double) np);
    rep->micro.support = nt;

    rep->samples.precision = aiserve_pairwise_sum(sp, n_samples)
                             / (double) n_samples;
    rep->samples.recall = aiserve_pairwise_sum(sr, n_samples)
                          / (double) n_samples;
    rep->samples.f1 = aiserve_pairwise_sum(sf, n_samples)
                      / (double) n_samples;
    rep->samples.support = nt;

    rc = 0;

done:

    free(set);
    free(c);
    free(sp);

    if (rc != 0) {
        aiserve_report_free(rep);
        aiserve_err(err, err_len, "out of memory");
    }

    return rc;
}


static int
aiserve_entity_cmp(const void *a, const void *b)
{
    const aiserve_entity_t  *x, *y;

    x = a;
    y = b;

    if (x->type != y->type) {
        return x->type < y->type ? -1 : 1;
    }

    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }

    return (x->end > y->end) - (x->end < y->end);
}


/* sorts and de-duplicates e[0..n) (seqeval keeps entities in sets) */

static size_t
aiserve_entities(aiserve_entity_t *e, size_t n)
{
    size_t  i, k;

    qsort(e, n, sizeof(aiserve_entity_t), aiserve_entity_cmp);

    k = 0;
    for (i = 0; i < n; i++) {
        if (k == 0 || aiserve_entity_cmp(&e[k - 1], &e[i]) != 0) {
            e[k++] = e[i];
        }
    }

    return k;
}


/*
 * Chunks of all sentences, positions in the sentences flattened with an
 * "O" after each (as seqeval flattens a list of lists for get_entities);
 * strict mode cuts each sentence alone (seqeval's Tokens per sentence).
 * flat must hold sum(lens[i] + 1) labels, chunks as many.
 */

static int
aiserve_chunk_all(const char *const *const *y, const size_t *lens,
    size_t n_sentences, aiserve_chunk_mode_e mode, const char **flat,
    aiserve_chunk_t *chunks, size_t *n_chunks, char *err, size_t err_len)
{
    char    msg[256];
    size_t  i, k, pos, m;

    pos = 0;
    *n_chunks = 0;

    for (i = 0; i < n_sentences; i++) {
        for (k = 0; k < lens[i]; k++) {
            if (y[i][k][0] == '\0') {
                aiserve_err(err, err_len, "sentence %zu: empty tag at token "
                            "%zu", i, k);
                return -1;
            }

            flat[pos + k] = y[i][k];
        }

        if (mode == AISERVE_CHUNK_IOB2) {
            if (aiserve_bio_chunks(flat + pos, lens[i], mode,
                                   chunks + *n_chunks, &m, msg, sizeof(msg))
                != 0)
            {
                aiserve_err(err, err_len, "sentence %zu: %s", i, msg);
                return -1;
            }

            for (k = 0; k < m; k++) {
                chunks[*n_chunks + k].start += pos;
                chunks[*n_chunks + k].end += pos;
            }

            *n_chunks += m;
        }

        pos += lens[i];
        flat[pos++] = "O";
    }

    if (mode == AISERVE_CHUNK_IOB2) {
        return 0;
    }

    /* no empty tag is left: the conlleval-style chunker cannot fail */
    return aiserve_bio_chunks(flat, pos, mode, chunks, n_chunks, err,
                              err_len);
}


int
aiserve_eval_sequences(const char *const *const *y_true,
    const char *const *const *y_pred, const size_t *lens, size_t n_sentences,
    aiserve_chunk_mode_e mode, aiserve_report_t *rep, char *err,
    size_t err_len)
{
    int                cmp, rc;
    size_t             i, k, n, total, nt, np, n_set, a, b, ntp;
    const char       **flat;
    aiserve_span_t    *t, *p, *types, *set;
    aiserve_chunk_t   *ct, *cp;
    aiserve_entity_t  *et, *ep;
    aiserve_counts_t  *c;

    memset(rep, 0, sizeof(*rep));
    rep->kind = AISERVE_REPORT_SEQEVAL;
    rc = -1;

    n = 0;
    for (i = 0; i < n_sentences; i++) {
        n += lens[i] + 1;
    }

    flat = malloc((n + 1) * sizeof(char *));
    t = malloc((n + 1) * sizeof(aiserve_span_t));
    p = malloc((n + 1) * sizeof(aiserve_span_t));
    ct = malloc((n + 1) * sizeof(aiserve_chunk_t));
    cp = malloc((n + 1) * sizeof(aiserve_chunk_t));
    types = malloc((2 * n + 1) * sizeof(aiserve_span_t));
    et = malloc((n + 1) * sizeof(aiserve_entity_t));
    ep = malloc((n + 1) * sizeof(aiserve_entity_t));
    set = NULL;
    c = NULL;

    if (flat == NULL || t == NULL || p == NULL || ct == NULL || cp == NULL
        || types == NULL || et == NULL || ep == NULL)
    {
        aiserve_err(err, err_len, "out of memory");
        goto failed;
    }

    /* the token-level confusion matrix */

    total = 0;
    for (i = 0; i < n_sentences; i++) {
        for (k = 0; k < lens[i]; k++) {
            t[total].s = y_true[i][k];
            t[total].len = strlen(y_true[i][k]);
            p[total].s = y_pred[i][k];
            p[total].len = strlen(y_pred[i][k]);
            total++;
        }
    }

    if (aiserve_confusion(rep, t, p, total) != 0) {
        aiserve_err(err, err_len, "out of memory");
        goto failed;
    }

    if (aiserve_chunk_all(y_true, lens, n_sentences, mode, flat, ct, &nt,
                          err, err_len)
        != 0
        || aiserve_chunk_all(y_pred, lens, n_sentences, mode, flat, cp, &np,
                             err, err_len)
           != 0)
    {
        goto failed;
    }

    for (i = 0; i < nt; i++) {
        types[i].s = ct[i].type;
        types[i].len = ct[i].type_len;
    }

    for (i = 0; i < np; i++) {
        types[nt + i].s = cp[i].type;
        types[nt + i].len = cp[i].type_len;
    }

    if (aiserve_label_set(types, nt + np, &set, &n_set) != 0) {
        aiserve_err(err, err_len, "out of memory");
        goto failed;
    }

    if (n_set == 0) {
        aiserve_err(err, err_len, "no entities in y_true or y_pred");
        goto failed;
    }

    c = calloc(n_set + 1, sizeof(aiserve_counts_t));
    if (c == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto failed;
    }

    for (i = 0; i < nt; i++) {
        et[i].type = aiserve_label_index(set, n_set, types[i]);
        et[i].start = ct[i].start;
        et[i].end = ct[i].end;
    }

    for (i = 0; i < np; i++) {
        ep[i].type = aiserve_label_index(set, n_set, types[nt + i]);
        ep[i].start = cp[i].start;
        ep[i].end = cp[i].end;
    }

    nt = aiserve_entities(et, nt);
    np = aiserve_entities(ep, np);

    for (i = 0; i < nt; i++) {
        c[et[i].type].true_++;
    }

    for (i = 0; i < np; i++) {
        c[ep[i].type].pred++;
    }

    /* both sorted: the intersection by merging */
    ntp = 0;
    for (a = 0, b = 0; a < nt && b < np; /* void */ ) {
        cmp = aiserve_entity_cmp(&et[a], &ep[b]);

        if (cmp == 0) {
            c[et[a].type].tp++;
            ntp++;
            a++;
            b++;

        } else if (cmp < 0) {
            a++;

        } else {
            b++;
        }
    }

    if (aiserve_rows(rep, set, n_set, c, nt) != 0) {
        aiserve_err(err, err_len, "out of memory");
        goto failed;
    }

    rep->micro.name = strndup("micro avg", 9);
    if (rep->micro.name == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto failed;
    }

    rep->micro.precision = aiserve_div((double) ntp, (double) np);
    rep->micro.recall = aiserve_div((double) ntp, (double) nt);
    rep->micro.f1 = 2.0 * rep->micro.precision * rep->micro.recall;
    if (rep->micro.precision + rep->micro.recall != 0) {
        rep->micro.f1 /= rep->micro.precision + rep->micro.recall;
    }
    rep->micro.support = nt;
    rc = 0;

failed:

    free(flat);
    free(t);
    free(p);
    free(ct);
    free(cp);
    free(types);
    free(et);
    free(ep);
    free(set);
    free(c);

    if (rc != 0) {
        aiserve_report_free(rep);
    }

    return rc;
}


/* the text table */

typedef struct {
    char    *buf;
    size_t   len;
    size_t   size;
    int      failed;
} aiserve_text_t;


static void
aiserve_text_printf(aiserve_text_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
aiserve_text_printf(aiserve_text_t *t, const char *fmt, ...)
{
    int       n;
    char     *b;
    size_t    size;
    va_list   ap;

    if (t->failed) {
        return;
    }

    for ( ;; ) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->size - t->len, fmt, ap);
        va_end(ap);

        if (n < 0) {
            t->failed = 1;
            return;
        }

        if (t->len + n < t->size) {
            t->len += n;
            return;
        }

        size = 2 * t->size + n + 1;
        b = realloc(t->buf, size);
        if (b == NULL) {
            t->failed = 1;
            return;
        }

        t->buf = b;
        t->size = size;
    }
}


/* Python's '{:>{width}s}': right-aligned by code points */

static void
aiserve_text_name(aiserve_text_t *t, const char *name, size_t width)
{
    size_t       cps;
    const char  *s;

    cps = 0;
    for (s = name; *s; s++) {
        cps += ((unsigned char) *s & 0xc0) != 0x80;
    }

    aiserve_text_printf(t, "%*s%s ", (int) (cps < width ? width - cps : 0),
                        "", name);
}


/* '{:>9}' of the support: an integer, or Python's repr of a float */

static void
aiserve_text_support(aiserve_text_t *t, const aiserve_report_t *rep,
    size_t support)
{
    char  buf[32];

    snprintf(buf, sizeof(buf), rep->float_support ? "%zu.0" : "%zu",
             support);
    aiserve_text_printf(t, " %9s", buf);
}


static void
aiserve_text_row(aiserve_text_t *t, const aiserve_report_t *rep,
    const aiserve_report_row_t *row, size_t width, int digits)
{
    aiserve_text_name(t, row->name, width);
    aiserve_text_printf(t, " %9.*f %9.*f %9.*f", digits, row->precision,
                        digits, row->recall, digits, row->f1);
    aiserve_text_support(t, rep, row->support);
}


char *
aiserve_report_text(const aiserve_report_t *rep, int digits)
{
    size_t          i, width, cps;
    const char     *s;
    aiserve_text_t  t;

    memset(&t, 0, sizeof(t));
    t.size = 1024;
    t.buf = malloc(t.size);
    if (t.buf == NULL) {
        return NULL;
    }

    /* width = max(longest name, len("weighted avg"), digits) */
    width = 12;
    if ((size_t) digits > width) {
        width = digits;
    }

    for (i = 0; i < rep->n_rows; i++) {
        cps = 0;
        for (s = rep->rows[i].name; *s; s++) {
            cps += ((unsigned char) *s & 0xc0) != 0x80;
        }

        if (cps > width) {
            width = cps;
        }
    }

    aiserve_text_printf(&t, "%*s  %9s %9s %9s %9s\n\n", (int) width, "",
                        "precision", "recall", "f1-score", "support");

    for (i = 0; i < rep->n_rows; i++) {
        aiserve_text_row(&t, rep, &rep->rows[i], width, digits);
        aiserve_text_printf(&t, "\n");
    }

    aiserve_text_printf(&t, "\n");

    if (rep->kind == AISERVE_REPORT_SKLEARN) {
        aiserve_text_name(&t, "accuracy", width);
        aiserve_text_printf(&t, " %9s %9s %9.*f", "", "", digits,
                            rep->accuracy);
        aiserve_text_support(&t, rep, rep->macro.support);
        aiserve_text_printf(&t, "\n");

    } else {
        aiserve_text_row(&t, rep, &rep->micro, width, digits);
        aiserve_text_printf(&t, "\n");
    }

    aiserve_text_row(&t, rep, &rep->macro, width, digits);
    aiserve_text_printf(&t, "\n");
    aiserve_text_row(&t, rep, &rep->weighted, width, digits);
    aiserve_text_printf(&t, "\n");

    if (rep->kind == AISERVE_REPORT_MULTILABEL) {
        aiserve_text_row(&t, rep, &rep->samples, width, digits);
        aiserve_text_printf(&t, "\n");
    }

    if (t.failed) {
        free(t.buf);
        return NULL;
    }

    return t.buf;
}


static json_t *
aiserve_row_json(const aiserve_report_t *rep, const aiserve_report_row_t *row)
{
    json_t  *o;

    o = json_object();
    if (o == NULL) {
        return NULL;
    }

    json_object_set_new(o, "precision", json_real(row->precision));
    json_object_set_new(o, "recall", json_real(row->recall));
    json_object_set_new(o, "f1-score", json_real(row->f1));
    json_object_set_new(o, "support",
                        rep->kind != AISERVE_REPORT_SEQEVAL
                        ? json_real((double) row->support)
                        : json_integer((json_int_t) row->support));

    if (json_object_size(o) != 4) {
        json_decref(o);
        return NULL;
    }

    return o;
}


json_t *
aiserve_report_json(const aiserve_report_t *rep)
{
    int      rc;
    size_t   i;
    json_t  *o;

    o = json_object();
    if (o == NULL) {
        return NULL;
    }

    /* json_object_set_new fails (-1) on a NULL value: out of memory */
    rc = 0;

    for (i = 0; i < rep->n_rows; i++) {
        rc |= json_object_set_new(o, rep->rows[i].name,
                                  aiserve_row_json(rep, &rep->rows[i]));
    }

    if (rep->kind == AISERVE_REPORT_SKLEARN) {
        rc |= json_object_set_new(o, "accuracy", json_real(rep->accuracy));

    } else {
        rc |= json_object_set_new(o, "micro avg",
                                  aiserve_row_json(rep, &rep->micro));
    }

    rc |= json_object_set_new(o, "macro avg",
                              aiserve_row_json(rep, &rep->macro));
    rc |= json_object_set_new(o, "weighted avg",
                              aiserve_row_json(rep, &rep->weighted));

    if (rep->kind == AISERVE_REPORT_MULTILABEL) {
        rc |= json_object_set_new(o, "samples avg",
                                  aiserve_row_json(rep, &rep->samples));
    }

    if (rc != 0) {
        json_decref(o);
        return NULL;
    }

    return o;
}


json_t *
aiserve_confusion_json(const aiserve_report_t *rep)
{
    size_t   i, j;
    json_t  *o, *labels, *matrix, *row;
    size_t  *c;

    o = json_object();
    labels = json_array();
    matrix = json_array();

    if (o == NULL || labels == NULL || matrix == NULL) {
        json_decref(o);
        json_decref(labels);
        json_decref(matrix);
        return NULL;
    }

    json_object_set_new(o, "labels", labels);
    json_object_set_new(o, "matrix", matrix);

    for (i = 0; i < rep->n_labels; i++) {
        if (json_array_append_new(labels, json_string(rep->labels[i])) != 0) {
            json_decref(o);
            return NULL;
        }

        row = json_array();
        if (row == NULL || json_array_append_new(matrix, row) != 0) {
            json_decref(o);
            return NULL;
        }

        if (rep->kind == AISERVE_REPORT_MULTILABEL) {
            c = &rep->confusion[4 * i];
            if (json_array_append_new(row, json_pack("[I,I]",
                                          (json_int_t) c[0],
                                          (json_int_t) c[1])) != 0
                || json_array_append_new(row, json_pack("[I,I]",
                                             (json_int_t) c[2],
                                             (json_int_t) c[3])) != 0)
            {
                json_decref(o);
                return NULL;
            }

            continue;
        }

        for (j = 0; j < rep->n_labels; j++) {
            if (json_array_append_new(row, json_integer((json_int_t)
                    rep->confusion[i * rep->n_labels + j]))
                != 0)
            {
                json_decref(o);
                return NULL;
            }
        }
    }

    return o;
}


void
aiserve_report_free(aiserve_report_t *rep)
{
    size_t  i;

    if (rep->rows) {
        for (i = 0; i < rep->n_rows; i++) {
            free(rep->rows[i].name);
        }
    }

    if (rep->labels) {
        for (i = 0; i < rep->n_labels; i++) {
            free(rep->labels[i]);
        }
    }

    free(rep->rows);
    free(rep->labels);
    free(rep->confusion);
    free(rep->micro.name);
    free(rep->macro.name);
    free(rep->weighted.name);
    free(rep->samples.name);
    memset(rep, 0, sizeof(*rep));
}
