/*
 * aiserve evaluation reports: scikit-learn's classification_report for
 * classifiers and seqeval's for taggers (entity level), with the same
 * numbers to the last bit, the same output_dict shape and the same text
 * table byte for byte; plus a confusion matrix.  zero_division is 0.
 *
 * No nginx types.  Entities are cut by the engine's one BIO chunker
 * (aiserve_bio_chunks), the one the server's NER aggregation uses.
 */
#ifndef AISERVE_EVAL_H
#define AISERVE_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "aiserve_pipeline.h"


typedef enum {
    AISERVE_REPORT_SKLEARN = 0,     /* rows, accuracy, macro, weighted */
    AISERVE_REPORT_SEQEVAL,         /* rows, micro, macro, weighted */
    AISERVE_REPORT_MULTILABEL       /* sklearn on label indicators: rows,
                                       micro, macro, weighted, samples */
} aiserve_report_kind_e;

/* one line of a report: a label (class or entity type) or an average */
typedef struct {
    char    *name;
    double   precision;
    double   recall;
    double   f1;
    size_t   support;
} aiserve_report_row_t;

typedef struct {
    aiserve_report_kind_e   kind;
    aiserve_report_row_t   *rows;          /* per label, sorted by name */
    size_t                  n_rows;
    double                  accuracy;      /* AISERVE_REPORT_SKLEARN */
    /* sklearn counts in floats when no prediction is right (its
     * multilabel_confusion_matrix "pathological case"), so its table
     * prints supports as "2.0": 1 then, as it */
    int                     float_support;
    aiserve_report_row_t    micro;         /* SEQEVAL, MULTILABEL */
    aiserve_report_row_t    macro;
    aiserve_report_row_t    weighted;
    aiserve_report_row_t    samples;       /* MULTILABEL */
    /* confusion matrix over the sorted union of the labels (classes, or
     * token tags of sequence reports): confusion[i * n_labels + j] counts
     * items of true label i predicted as j (sklearn's confusion_matrix);
     * MULTILABEL: confusion[4 i ..] is label i's tn, fp, fn, tp
     * (multilabel_confusion_matrix) */
    char                  **labels;
    size_t                  n_labels;
    size_t                 *confusion;
} aiserve_report_t;


/*
 * sklearn.metrics.classification_report(y_true, y_pred,
 * zero_division=0) for single-label classes: y_true, y_pred hold n label
 * strings; the rows are the sorted union of both (code point order).
 * Precision tp / predicted, recall tp / true, f1 2 tp / (true +
 * predicted), 0 where the divisor is 0; macro and weighted averages summed
 * as numpy sums (pairwise), so every figure equals sklearn's double.
 * Returns 0, or -1 with err (n == 0, out of memory).
 */
int aiserve_eval_classification(const char *const *y_true,
    const char *const *y_pred, size_t n, aiserve_report_t *rep, char *err,
    size_t err_len);

/*
 * sklearn.metrics.classification_report(y_true, y_pred,
 * target_names=names, zero_division=0) for multi-label indicators:
 * y_true, y_pred hold n_samples rows of n_labels bytes (non-zero: the
 * label applies); rows in the order of names.  Averages micro, macro,
 * weighted (by support; the plain mean when no label has support, as
 * sklearn falls back) and samples (each sample's precision, recall and f1,
 * averaged).  Returns 0, or -1 with err (no samples or labels, out of
 * memory).
 */
int aiserve_eval_multilabel(const uint8_t *y_true, const uint8_t *y_pred,
    size_t n_samples, const char *const *names, size_t n_labels,
    aiserve_report_t *rep, char *err, size_t err_len);

/*
 * seqeval.metrics.classification_report(y_true, y_pred, zero_division=0)
 * over n_sentences sentences of lens[i] tags each (y_true[i][k]):
 * mode AISERVE_CHUNK_CONLL is seqeval's default (conlleval.pl), mode
 * AISERVE_CHUNK_IOB2 is mode="strict", scheme=IOB2.  Rows are entity
 * types; an entity counts as found when type, start and end all match.
 * Precision, recall as above; f1 2 p r / (p + r) as seqeval computes it.
 * The confusion matrix is over tokens.  Returns 0, or -1 with err (no
 * entity in either side, a tag the mode rejects, out of memory).
 */
int aiserve_eval_sequences(const char *const *const *y_true,
    const char *const *const *y_pred, const size_t *lens, size_t n_sentences,
    aiserve_chunk_mode_e mode, aiserve_report_t *rep, char *err,
    size_t err_len);

/* The report as the text table the library prints (classification_report
 * with output_dict=False and digits), malloc'ed, NUL-terminated; NULL when
 * out of memory. */
char *aiserve_report_text(const aiserve_report_t *rep, int digits);

/* The report as output_dict=True returns it (sklearn: support as a float,
 * "accuracy" a number, or "micro avg" and "samples avg" rows for
 * multi-label; seqeval: support an integer, "micro avg" a row);
 * NULL when out of memory.  The caller owns the reference. */
json_t *aiserve_report_json(const aiserve_report_t *rep);

/* {"labels": [...], "matrix": [[...], ...]}, rows true, columns predicted;
 * MULTILABEL: "matrix" holds [[tn, fp], [fn, tp]] a label */
json_t *aiserve_confusion_json(const aiserve_report_t *rep);

void aiserve_report_free(aiserve_report_t *rep);

#endif /* AISERVE_EVAL_H */
