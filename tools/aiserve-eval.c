/*
 * aiserve-eval: the evaluation report of predictions against gold labels,
 * as scikit-learn's classification_report (classes) or seqeval's (tags),
 * with the engine the trainer uses.  See --help.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aiserve_data.h"
#include "aiserve_eval.h"


static void
usage(FILE *f)
{
    fprintf(f,
"usage: aiserve-eval [options] GOLD PRED\n"
"\n"
"Compares the labels of PRED with those of GOLD, two files of the same\n"
"format whose examples line up (the same rows, the same sentences and\n"
"tokens), and prints the report:\n"
"  one class a row (JSONL {\"text\", \"label\"}, CSV)\n"
"      scikit-learn's classification_report: per class precision, recall,\n"
"      f1-score, support; accuracy; macro and weighted averages\n"
"  a list of classes a row (JSONL {\"text\", \"label\": [...]})\n"
"      the same on label indicators: micro, macro, weighted and samples\n"
"      averages; the confusion matrix is [[tn, fp], [fn, tp]] a class\n"
"  tags (CoNLL, JSONL {\"tokens\", \"tags\"})\n"
"      seqeval's classification_report over entities: per type, then\n"
"      micro, macro and weighted averages\n"
"zero_division is 0.  The text is the table those libraries print, byte\n"
"for byte; --json prints their output_dict and the confusion matrix\n"
"(over classes, or over tokens' tags), rows true, columns predicted.\n"
"\n"
"options:\n"
"  --mode default|strict   tags: conlleval-style chunking (default) or\n"
"                          seqeval's mode=\"strict\" with IOB2\n"
"  --digits N              digits of the table (default 2)\n"
"  --json                  {\"report\": ..., \"confusion_matrix\": ...}\n"
"  --text-column NAME      CSV: the text column (default text)\n"
"  --label-column NAME     CSV: the label column (default label)\n"
"  -h, --help              this text\n"
"\n"
"example:\n"
"  tools/aiserve-eval t/data/eval/gold.conll t/data/eval/pred.conll\n");
}


/* multi-label: indicators over the sorted labels of both files */

static int
report_multilabel(const aiserve_dataset_t *gold,
    const aiserve_dataset_t *pred, aiserve_report_t *rep, char *err,
    size_t err_len)
{
    int                   rc;
    char                **names;
    size_t                i, k, n, a, b;
    uint8_t              *ind[2];
    aiserve_label_set_t   set[2], all;
    const aiserve_dataset_t  *ds[2];

    ds[0] = gold;
    ds[1] = pred;

    if (aiserve_labels_build(gold, &set[0], err, err_len) != 0) {
        return -1;
    }

    if (aiserve_labels_build(pred, &set[1], err, err_len) != 0) {
        aiserve_labels_free(&set[0]);
        return -1;
    }

    /* merge the two sorted sets */
    names = malloc((set[0].n + set[1].n + 1) * sizeof(char *));
    n = 0;
    for (a = 0, b = 0; names && (a < set[0].n || b < set[1].n); ) {
        if (b == set[1].n
            || (a < set[0].n && strcmp(set[0].names[a], set[1].names[b]) < 0))
        {
            names[n++] = set[0].names[a++];

        } else if (a == set[0].n
                   || strcmp(set[0].names[a], set[1].names[b]) > 0)
        {
            names[n++] = set[1].names[b++];

        } else {
            names[n++] = set[0].names[a++];
            b++;
        }
    }

    all.names = names;
    all.n = n;
    ind[0] = calloc(gold->n * n + 1, 1);
    ind[1] = calloc(gold->n * n + 1, 1);
    rc = -1;

    if (names == NULL || ind[0] == NULL || ind[1] == NULL) {
        snprintf(err, err_len, "out of memory");
        goto done;
    }

    for (k = 0; k < 2; k++) {
        for (i = 0; i < gold->n; i++) {
            for (a = 0; a < ds[k]->examples[i].n_labels; a++) {
                ind[k][i * n + aiserve_labels_id(&all,
                                   ds[k]->examples[i].labels[a])] = 1;
            }
        }
    }

    rc = aiserve_eval_multilabel(ind[0], ind[1], gold->n,
                                 (const char *const *) names, n, rep, err,
                                 err_len);

done:

    free(ind[0]);
    free(ind[1]);
    free(names);
    aiserve_labels_free(&set[0]);
    aiserve_labels_free(&set[1]);
    return rc;
}


static int
report(const aiserve_dataset_t *gold, const aiserve_dataset_t *pred,
    aiserve_chunk_mode_e mode, aiserve_report_t *rep, char *err,
    size_t err_len)
{
    int            rc;
    size_t         i, *lens;
    const char   **t, **p, ***st, ***sp;

    if (gold->kind == AISERVE_LABELS_MULTI) {
        return report_multilabel(gold, pred, rep, err, err_len);
    }

    if (gold->kind == AISERVE_LABELS_SINGLE) {
        t = malloc(gold->n * sizeof(char *));
        p = malloc(gold->n * sizeof(char *));
        if (t == NULL || p == NULL) {
            free(t);
            free(p);
            snprintf(err, err_len, "out of memory");
            return -1;
        }

        for (i = 0; i < gold->n; i++) {
            t[i] = gold->examples[i].labels[0];
            p[i] = pred->examples[i].labels[0];
        }

        rc = aiserve_eval_classification(t, p, gold->n, rep, err, err_len);
        free(t);
        free(p);
        return rc;
    }

    st = malloc(gold->n * sizeof(char **));
    sp = malloc(gold->n * sizeof(char **));
    lens = malloc(gold->n * sizeof(size_t));
    if (st == NULL || sp == NULL || lens == NULL) {
        free(st);
        free(sp);
        free(lens);
        snprintf(err, err_len, "out of memory");
        return -1;
    }

    for (i = 0; i < gold->n; i++) {
        st[i] = (const char **) gold->examples[i].tags;
        sp[i] = (const char **) pred->examples[i].tags;
        lens[i] = gold->examples[i].n_tokens;
    }

    rc = aiserve_eval_sequences((const char *const *const *) st,
                                (const char *const *const *) sp, lens,
                                gold->n, mode, rep, err, err_len);
    free(st);
    free(sp);
    free(lens);
    return rc;
}


int
main(int argc, char **argv)
{
    int                   i, digits, as_json, rc;
    char                  err[512], *text;
    size_t                k;
    json_t               *out;
    const char           *files[2];
    int                   n_files;
    aiserve_report_t      rep;
    aiserve_dataset_t     gold, pred;
    aiserve_chunk_mode_e  mode;
    aiserve_data_opts_t   opts;

    aiserve_data_opts_default(&opts);
    digits = 2;
    as_json = 0;
    mode = AISERVE_CHUNK_CONLL;
    n_files = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;

        } else if (strcmp(argv[i], "--json") == 0) {
            as_json = 1;

        } else if (strcmp(argv[i], "--digits") == 0 && i + 1 < argc) {
            digits = atoi(argv[++i]);
            if (digits < 0 || digits > 17) {
                fprintf(stderr, "aiserve-eval: --digits must be 0 to 17\n");
                return 2;
            }

        } else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc) {
            i++;
            if (strcmp(argv[i], "strict") == 0) {
                mode = AISERVE_CHUNK_IOB2;

            } else if (strcmp(argv[i], "default") != 0) {
                fprintf(stderr, "aiserve-eval: --mode must be default or "
                        "strict\n");
                return 2;
            }

        } else if (strcmp(argv[i], "--text-column") == 0 && i + 1 < argc) {
            opts.text_column = argv[++i];

        } else if (strcmp(argv[i], "--label-column") == 0 && i + 1 < argc) {
            opts.label_column = argv[++i];

        } else if (argv[i][0] == '-' || n_files == 2) {
            usage(stderr);
            return 2;

        } else {
            files[n_files++] = argv[i];
        }
    }

    if (n_files != 2) {
        usage(stderr);
        return 2;
    }

    /* tags as written, as seqeval reads them: no IOB2 conversion */
    opts.raw_tags = 1;

    if (aiserve_data_read(files[0], &opts, &gold, err, sizeof(err)) != 0) {
        fprintf(stderr, "aiserve-eval: %s\n", err);
        return 1;
    }

    if (aiserve_data_read(files[1], &opts, &pred, err, sizeof(err)) != 0) {
        fprintf(stderr, "aiserve-eval: %s\n", err);
        aiserve_dataset_free(&gold);
        return 1;
    }

    rc = 1;

    if (gold.kind != pred.kind || gold.kind == AISERVE_LABELS_REGRESSION
        || gold.kind == AISERVE_LABELS_SPANS)
    {
        fprintf(stderr, "aiserve-eval: %s and %s must both have one class "
                "an example, a list of classes, or tags\n", files[0],
                files[1]);
        goto done;
    }

    if (gold.n != pred.n) {
        fprintf(stderr, "aiserve-eval: %s has %zu examples, %s has %zu\n",
                files[0], gold.n, files[1], pred.n);
        goto done;
    }

    for (k = 0; k < gold.n; k++) {
        if (gold.examples[k].n_tokens != pred.examples[k].n_tokens) {
            fprintf(stderr, "aiserve-eval: %s:%zu: %zu tokens, but %s:%zu "
                    "has %zu\n", files[1], pred.examples[k].line,
                    pred.examples[k].n_tokens, files[0],
                    gold.examples[k].line, gold.examples[k].n_tokens);
            goto done;
        }
    }

    if (report(&gold, &pred, mode, &rep, err, sizeof(err)) != 0) {
        fprintf(stderr, "aiserve-eval: %s\n", err);
        goto done;
    }

    if (as_json) {
        out = json_pack("{s:o, s:o}", "report", aiserve_report_json(&rep),
                        "confusion_matrix", aiserve_confusion_json(&rep));
        text = out ? json_dumps(out, JSON_INDENT(2) | JSON_REAL_PRECISION(17))
                   : NULL;
        json_decref(out);

    } else {
        text = aiserve_report_text(&rep, digits);
    }

    aiserve_report_free(&rep);

    if (text == NULL) {
        fprintf(stderr, "aiserve-eval: out of memory\n");
        goto done;
    }

    fputs(text, stdout);
    if (as_json) {
        fputc('\n', stdout);
    }

    free(text);
    rc = 0;

done:

    aiserve_dataset_free(&gold);
    aiserve_dataset_free(&pred);
    return rc;
}
