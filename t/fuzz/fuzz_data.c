/*
 * libFuzzer target for the training data readers, the label set, the
 * featurization and the evaluation reports: the first byte of the input
 * picks the format (JSONL, CSV, CoNLL), strict IOB2 and a max_length, the
 * rest is the file.  A rejected file must come with a message naming it;
 * an accepted one must give a label set that its own examples pass, and
 * features whose labels are label ids or -100.  Tags are evaluated
 * against themselves (perfect scores, both chunking modes).
 * Build and run: make fuzz-data FUZZ_SECONDS=30
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aiserve_data.h"
#include "aiserve_eval.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static aiserve_tok_t  *tok;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char  err[256];

    tok = aiserve_tok_load("t/data/tokenizers/bert-base-cased", err,
                           sizeof(err));
    if (tok == NULL) {
        abort();
    }

    return 0;
}


static void
check_multilabel(const aiserve_dataset_t *ds, size_t n)
{
    char                 err[512];
    size_t               i, k;
    uint8_t             *ind;
    aiserve_report_t     rep;
    aiserve_label_set_t  set;

    if (aiserve_labels_build(ds, &set, err, sizeof(err)) != 0) {
        return;
    }

    ind = calloc(n * set.n + 1, 1);
    for (i = 0; i < n; i++) {
        for (k = 0; k < ds->examples[i].n_labels; k++) {
            ind[i * set.n + aiserve_labels_id(&set,
                                              ds->examples[i].labels[k])] = 1;
        }
    }

    if (aiserve_eval_multilabel(ind, ind, n, (const char *const *) set.names,
                                set.n, &rep, err, sizeof(err)) != 0
        || rep.weighted.f1 != 1.0)
    {
        abort();
    }

    free(aiserve_report_text(&rep, 4));
    aiserve_report_free(&rep);
    free(ind);
    aiserve_labels_free(&set);
}


static void
check_eval(const aiserve_dataset_t *ds)
{
    char                 err[512];
    size_t               i, n, *lens;
    const char        ***y;
    aiserve_report_t     rep;
    const char         **labels;

    n = ds->n < 64 ? ds->n : 64;

    if (ds->kind == AISERVE_LABELS_SINGLE) {
        labels = malloc(n * sizeof(char *));
        for (i = 0; i < n; i++) {
            labels[i] = ds->examples[i].labels[0];
        }

        if (aiserve_eval_classification(labels, labels, n, &rep, err,
                                        sizeof(err)) != 0
            || rep.accuracy != 1.0)
        {
            abort();
        }

        free(aiserve_report_text(&rep, 2));
        aiserve_report_free(&rep);
        free(labels);
        return;
    }

    if (ds->kind == AISERVE_LABELS_MULTI) {
        check_multilabel(ds, n);
        return;
    }

    if (ds->kind != AISERVE_LABELS_TAGS) {
        return;
    }

    y = malloc(n * sizeof(char **));
    lens = malloc(n * sizeof(size_t));
    for (i = 0; i < n; i++) {
        y[i] = (const char **) ds->examples[i].tags;
        lens[i] = ds->examples[i].n_tokens;
    }

    /* IOB2 after reading: both modes accept it; a file of O only has no
     * entity to report */
    for (i = 0; i < 2; i++) {
        if (aiserve_eval_sequences((const char *const *const *) y,
                                   (const char *const *const *) y, lens, n,
                                   i ? AISERVE_CHUNK_IOB2
                                     : AISERVE_CHUNK_CONLL,
                                   &rep, err, sizeof(err)) == 0)
        {
            if (rep.micro.f1 != 1.0) {
                abort();
            }

            aiserve_report_free(&rep);

        } else if (strstr(err, "no entities") == NULL) {
            abort();
        }
    }

    free(y);
    free(lens);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                 err[512];
    size_t               i, t;
    aiserve_dataset_t    ds;
    aiserve_features_t   f;
    aiserve_label_set_t  set;
    aiserve_data_opts_t  opts;

    static const char  *names[] = { "fuzz.jsonl", "fuzz.csv", "fuzz.conll" };

    if (size < 1) {
        return 0;
    }

    aiserve_data_opts_default(&opts);
    opts.strict_iob2 = (data[0] >> 2) & 1;
    opts.label_column = (data[0] & 8) ? "category" : NULL;

    err[0] = '\0';
    if (aiserve_data_parse(names[data[0] % 3], (const char *) data + 1,
                           size - 1, &opts, &ds, err, sizeof(err))
        != 0)
    {
        if (strncmp(err, "fuzz.", 5) != 0) {
            abort();
        }

        return 0;
    }

    if (aiserve_labels_build(&ds, &set, err, sizeof(err)) != 0) {
        if (ds.kind == AISERVE_LABELS_MULTI) {
            /* only empty label lists: no labels is a clear error */
            aiserve_dataset_free(&ds);
            return 0;
        }

        abort();
    }

    if (aiserve_labels_check(&set, &ds, err, sizeof(err)) != 0) {
        abort();
    }

    for (i = 0; i < ds.n && i < 64; i++) {
        if (aiserve_featurize(tok, &ds, i, &set, (data[0] >> 4) * 4, &f, err,
                              sizeof(err))
            != 0)
        {
            if (strncmp(err, "fuzz.", 5) != 0) {
                abort();
            }

            continue;
        }

        for (t = 0; f.labels && t < f.n_tokens; t++) {
            if (f.labels[t] != AISERVE_TRAIN_IGNORE
                && (f.labels[t] < 0 || (size_t) f.labels[t] >= set.n))
            {
                abort();
            }
        }

        aiserve_features_free(&f);
    }

    check_eval(&ds);

    aiserve_labels_free(&set);
    aiserve_dataset_free(&ds);
    return 0;
}
