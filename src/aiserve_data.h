/*
 * aiserve training data: readers for labelled files, the label set, and
 * featurization through the project's tokenizer.
 *
 *   JSONL   one object a line: {"text", "label"} (+ "text_pair"), label a
 *           string (single-label), a list of strings (multi-label) or a
 *           number (regression); {"tokens", "tags"}; or
 *           {"text", "entities": [{"start", "end", "label"}]} with start
 *           and end in code points of text, end exclusive (spaCy, Label
 *           Studio, doccano)
 *   CSV     RFC 4180 with a header; the text, text_pair and label columns
 *           are chosen by name (default "text", "text_pair" when present,
 *           "label"); the label is a class name
 *   CoNLL   one token a line, its tag in the last column (tab or space
 *           separated), a blank line between sentences, -DOCSTART- lines
 *           skipped
 *
 * Tags are IOB2; IOB1 and IOBES are converted to IOB2 and a warning says
 * how many tags changed.  Every error names the file, the line and the
 * field: "valid.csv:17: field "category": unknown label "x" (not in the
 * training labels)".
 *
 * No nginx types.  Everything is malloc'ed and released by the _free().
 */
#ifndef AISERVE_DATA_H
#define AISERVE_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "aiserve_tokenizer.h"
#include "aiserve_train.h"          /* AISERVE_TRAIN_IGNORE */


typedef enum {
    AISERVE_DATA_AUTO = 0,      /* by the name: .jsonl/.json, .csv, else
                                   CoNLL */
    AISERVE_DATA_JSONL,
    AISERVE_DATA_CSV,
    AISERVE_DATA_CONLL
} aiserve_data_format_e;

/* what the examples' labels are; one kind a file */
typedef enum {
    AISERVE_LABELS_SINGLE = 0,  /* one class name */
    AISERVE_LABELS_MULTI,       /* a set of class names */
    AISERVE_LABELS_REGRESSION,  /* one number */
    AISERVE_LABELS_TAGS,        /* words and their IOB2 tags */
    AISERVE_LABELS_SPANS        /* text and character spans */
} aiserve_labels_kind_e;

typedef struct {
    aiserve_data_format_e   format;
    const char             *text_column;       /* CSV; NULL: "text" */
    const char             *text_pair_column;  /* CSV; NULL: "text_pair"
                                                  if the header has it */
    const char             *label_column;      /* CSV; NULL: "label" */
    /* 1: an I-X that starts an entity (after O, another type or at the
     * start) is an error instead of IOB1 converted to IOB2 */
    int                     strict_iob2;
    /* 1: tags are kept as written, neither checked nor converted (to
     * evaluate them as seqeval reads them) */
    int                     raw_tags;
} aiserve_data_opts_t;

/* an entity of span JSONL: [start, end) in code points of the text */
typedef struct {
    size_t   start;
    size_t   end;
    char    *label;
} aiserve_span_entity_t;

typedef struct {
    size_t                  line;          /* where it starts, from 1 */
    char                   *text;          /* NULL for TAGS */
    size_t                  text_len;      /* bytes */
    char                   *text_pair;     /* or NULL */
    size_t                  text_pair_len;
    char                  **labels;        /* SINGLE: 1, MULTI: n_labels */
    size_t                  n_labels;
    double                  value;         /* REGRESSION */
    char                  **tokens;        /* TAGS: words and tags */
    char                  **tags;
    size_t                  n_tokens;
    size_t                 *lines;         /* CoNLL: each token's line */
    aiserve_span_entity_t  *entities;      /* SPANS */
    size_t                  n_entities;
} aiserve_example_t;

typedef struct {
    char                   *name;          /* the file name in messages */
    char                   *label_field;   /* the label's field or column */
    aiserve_labels_kind_e   kind;
    aiserve_example_t      *examples;
    size_t                  n;
    /* tags changed from IOB1 / IOBES to IOB2, and the warning that says
     * so ("" when none) */
    size_t                  converted_tags;
    char                    warning[256];
} aiserve_dataset_t;

/* The label set: sorted (byte order, as Python sorts str), no repeats. */
typedef struct {
    char   **names;
    size_t   n;
} aiserve_label_set_t;

/* One featurized example.  input_ids and token_type_ids have n_tokens
 * entries ([CLS] ... [SEP] as the tokenizer's post-processor adds them).
 * SINGLE: label is the class id; MULTI: targets[num_labels] is 0/1;
 * REGRESSION: targets[0] is the value; TAGS and SPANS: labels[n_tokens]
 * holds the tag id on the first sub-token of each word and -100 on the
 * other sub-tokens and special tokens (transformers' token-classification
 * recipe, label_all_tokens=False). */
typedef struct {
    int32_t  *input_ids;
    int32_t  *token_type_ids;
    size_t    n_tokens;
    int32_t   label;
    float    *targets;
    int32_t  *labels;
    size_t    words_cut;       /* words with no token left by truncation */
} aiserve_features_t;


void aiserve_data_opts_default(aiserve_data_opts_t *opts);

/*
 * Reads path (format by opts->format or its name) into ds.  Returns 0,
 * or -1 with err naming the file, the line and the field: invalid UTF-8
 * (with the byte), invalid JSON, a missing or mistyped field, an empty
 * text, tokens and tags of different lengths, a tag that is not IOB
 * (B-X, I-X, E-X, S-X, O), an I-X that starts an entity when
 * opts->strict_iob2, a span outside the text or overlapping another,
 * labels of two kinds in one file, a CSV record with the wrong number of
 * fields or an unterminated quote, an empty file.
 */
int aiserve_data_read(const char *path, const aiserve_data_opts_t *opts,
    aiserve_dataset_t *ds, char *err, size_t err_len);

/* The same on len bytes in memory; name is used in messages and, for
 * AISERVE_DATA_AUTO, to choose the format. */
int aiserve_data_parse(const char *name, const char *buf, size_t len,
    const aiserve_data_opts_t *opts, aiserve_dataset_t *ds, char *err,
    size_t err_len);

void aiserve_dataset_free(aiserve_dataset_t *ds);

/*
 * The label set of a training set: class names (SINGLE, MULTI), tags
 * (TAGS), "O" and B-/I- of every entity label (SPANS), or the one
 * "LABEL_0" of a regression (num_labels 1, as transformers names it).
 * Sorted and stable: the same file gives the same ids.  Returns 0 or -1
 * ("out of memory", "no labels in FILE").
 */
int aiserve_labels_build(const aiserve_dataset_t *train,
    aiserve_label_set_t *set, char *err, size_t err_len);

/* Checks that every label of ds (validation data) is in set and that ds
 * is of the same kind; -1 with err naming file, line and field. */
int aiserve_labels_check(const aiserve_label_set_t *set,
    const aiserve_dataset_t *ds, char *err, size_t err_len);

/* the id of name in set, or -1 */
int32_t aiserve_labels_id(const aiserve_label_set_t *set, const char *name);

void aiserve_labels_free(aiserve_label_set_t *set);

/*
 * Featurizes example i of ds through tok: the text (and text_pair), or
 * the words joined by single spaces (as tokenizers' is_split_into_words
 * for BERT's whitespace pre-tokenizer), truncated to max_length tokens
 * (0: the tokenizer's own limit), labels as described above.  Spans
 * become tags through the tokenizer's offsets: a word (a token and the
 * "##" pieces after it) overlapping an entity is B- (the entity's first
 * word) or I-.  Returns 0, or -1 with err naming the file and line (a
 * label not in set, a tokenizer error).
 */
int aiserve_featurize(const aiserve_tok_t *tok, const aiserve_dataset_t *ds,
    size_t i, const aiserve_label_set_t *set, size_t max_length,
    aiserve_features_t *f, char *err, size_t err_len);
void aiserve_features_free(aiserve_features_t *f);

#endif /* AISERVE_DATA_H */
