/*
 * aiserve pipelines: the post-processing of transformers' text and token
 * classification pipelines (score function, BIO tags, NER aggregation),
 * and the one BIO chunker that serving, tools and the trainer's seqeval
 * evaluation share.
 *
 * No nginx types.  Every function is reentrant; results are malloc'ed and
 * released by the matching _free().
 */
#ifndef AISERVE_PIPELINE_H
#define AISERVE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "aiserve_model.h"
#include "aiserve_tokenizer.h"


/* function_to_apply of TextClassificationPipeline */
typedef enum {
    AISERVE_FN_DEFAULT = 0,
    AISERVE_FN_SIGMOID,
    AISERVE_FN_SOFTMAX,
    AISERVE_FN_NONE
} aiserve_fn_e;

/* aggregation_strategy of TokenClassificationPipeline */
typedef enum {
    AISERVE_AGG_NONE = 0,
    AISERVE_AGG_SIMPLE,
    AISERVE_AGG_FIRST,
    AISERVE_AGG_AVERAGE,
    AISERVE_AGG_MAX
} aiserve_agg_e;

/* How a sequence of BIO labels is cut into chunks (entities). */
typedef enum {
    /* TokenClassificationPipeline.group_entities: "B-X" and "I-X" give
     * (B, X) and (I, X), any other label L gives (I, L); a chunk starts at
     * a B or where that tag changes.  Every token lies in one chunk ("O"
     * runs included); a chunk's type is its first label after the first
     * "-" (entity_group). */
    AISERVE_CHUNK_PIPELINE = 0,
    /* seqeval's get_entities (mode=None, suffix=False), compatible with
     * conlleval.pl: prefix = first character, type = the rest after its
     * first "-" ("_" when empty); start_of_chunk / end_of_chunk rules of
     * IOB1, IOB2, IOE and IOBES; "O" tokens are in no chunk. */
    AISERVE_CHUNK_CONLL,
    /* seqeval mode="strict", scheme=IOB2: a chunk is a B-X followed by
     * I-X of the same type; an I-X without its B-X is no chunk.  Every
     * label must begin with B, I or O (else an error naming it); type =
     * the rest with "-" stripped from both ends ("_" when empty). */
    AISERVE_CHUNK_IOB2
} aiserve_chunk_mode_e;

/* One chunk: tokens [start, end) of type type[0 .. type_len), pointing
 * into the label it came from (not NUL-terminated). */
typedef struct {
    size_t       start;
    size_t       end;
    const char  *type;
    size_t       type_len;
} aiserve_chunk_t;

/* One entity of a NER answer, as TokenClassificationPipeline returns it.
 * entity: the label (strategy none, "entity") or the group
 * ("entity_group"); word: the decoded tokens; start, end: code points of
 * the original text; index: the token index (strategy none only). */
typedef struct {
    const char  *entity;
    size_t       entity_len;
    float        score;
    size_t       index;
    const char  *word;
    size_t       word_len;
    uint32_t     start;
    uint32_t     end;
} aiserve_ner_entity_t;

typedef struct {
    aiserve_ner_entity_t  *entities;
    size_t                 n;
    char                  *words;      /* storage of the words */
} aiserve_ner_result_t;


/* "sigmoid", "softmax", "none" (any case) -> its aiserve_fn_e; -1 for
 * anything else. */
int aiserve_fn_parse(const char *name);

/* TextClassificationPipeline.postprocess's default: regression -> none;
 * multi-label or a single label -> sigmoid; otherwise softmax. */
aiserve_fn_e aiserve_fn_default(const aiserve_model_info_t *info);

/* scores[0..n) = fn(logits[0..n)), the pipeline's numpy sigmoid and
 * softmax in float32 (max subtracted); DEFAULT and NONE copy.  scores may
 * be logits. */
void aiserve_fn_apply(aiserve_fn_e fn, const float *logits, float *scores,
    size_t n);

/* index of the largest of v[0..n), the first on ties (numpy.argmax) */
size_t aiserve_argmax(const float *v, size_t n);

/* order[0..n) = 0..n-1 sorted by score, highest first, stable (Python's
 * list.sort(reverse=True) on the scores). */
void aiserve_order_by_score(const float *score, size_t n, size_t *order);

/* "none", "simple", "first", "average", "max" (any case) ->
 * aiserve_agg_e; -1 for anything else. */
int aiserve_agg_parse(const char *name);

/*
 * Cuts labels[0..n) into chunks by mode (see aiserve_chunk_mode_e).
 * out must hold n chunks; *n_out receives their number, in order of
 * start.  Returns 0, or -1 with err naming the label and its index
 * (AISERVE_CHUNK_IOB2 with a prefix other than B/I/O; _CONLL and _IOB2
 * with an empty label).
 * Sources: transformers pipelines/token_classification.py
 * (group_entities, get_tag); seqeval metrics/sequence_labeling.py
 * (get_entities, start_of_chunk, end_of_chunk) and scheme.py (IOB2,
 * Tokens.entities).
 */
int aiserve_bio_chunks(const char *const *labels, size_t n,
    aiserve_chunk_mode_e mode, aiserve_chunk_t *out, size_t *n_out,
    char *err, size_t err_len);

/*
 * TokenClassificationPipeline.postprocess for one text: softmax of each
 * token's logits (num_labels floats per token, enc->n_tokens tokens),
 * gather_pre_entities (special tokens skipped; [UNK] words read from
 * text), aggregate_words for first / average / max, group_entities
 * (AISERVE_CHUNK_PIPELINE) for every strategy but none, then the labels
 * in ignore[0..n_ignore) (lengths in ignore_len) are dropped; ignore NULL
 * means ["O"].  Words are decoded as a BERT fast tokenizer's
 * convert_tokens_to_string.  Returns 0 with the entities in out (release
 * with aiserve_ner_result_free), or -1 with err ("out of memory").
 */
int aiserve_ner_postprocess(const aiserve_tok_t *tok, const char *text,
    const aiserve_encoding_t *enc, const float *logits, size_t num_labels,
    char *const *id2label, aiserve_agg_e agg, const char *const *ignore,
    const size_t *ignore_len, size_t n_ignore, aiserve_ner_result_t *out,
    char *err, size_t err_len);
void aiserve_ner_result_free(aiserve_ner_result_t *res);

/*
 * tokenizer.convert_tokens_to_string() of a BERT fast tokenizer (the
 * WordPiece decoder of `tokenizers`, prefix "##", cleanup on): tokens
 * after the first lose their "##" or get a leading space, each piece is
 * cleaned up (" ." -> ".", " 's" -> "'s", ...) and they are joined.
 * Writes at most sum(len[i] + 1) bytes to out and returns the length.
 */
size_t aiserve_wordpiece_decode(const char *const *tokens,
    const size_t *len, size_t n, char *out);

#endif /* AISERVE_PIPELINE_H */
