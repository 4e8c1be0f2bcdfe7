/*
 * aiserve dtype choice: an encoder's products in fp32 or bf16
 * (aiserve_model_load_packed()), and `auto`, which takes bf16 only where
 * the CPU runs it in hardware and the checkpoint keeps its answers:
 * bf16 against fp32 on built-in sentences (aiserve_dtype_compare()'s
 * gates).  No nginx types.
 */
#ifndef AISERVE_DTYPE_H
#define AISERVE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "aiserve_gemm.h"
#include "aiserve_model.h"
#include "aiserve_tokenizer.h"

/* The gates: pooled embeddings (a BertModel's output) of every sentence
 * at cosine >= AISERVE_PARITY_MIN_COSINE to fp32's; a classifier's
 * argmax (of a sequence, or of each token) equal to fp32's wherever
 * fp32's top two logits lie more than AISERVE_PARITY_MARGIN apart. */
#define AISERVE_PARITY_MIN_COSINE  0.9999
#define AISERVE_PARITY_MARGIN      0.05

typedef struct {
    size_t  n;                 /* sentences compared */
    double  min_cosine;        /* of the outputs, per sentence (logits of
                                  a classifier: reported, not gated) */
    size_t  worst;             /* the sentence of min_cosine */
    size_t  argmax_checked;    /* classifiers: rows past the margin */
    size_t  argmax_differ;     /* ... whose argmax differs */
    size_t  argmax_first;      /* the sentence of the first that differs */
    int     pass;              /* 1: every gate holds */
} aiserve_parity_t;

/*
 * Runs N sentences (token ids IDS[i], LENS[i] tokens, [CLS] ... [SEP] as
 * the tokenizer gives them; one at a time) through FP32 and BF16, the
 * same checkpoint loaded in the two dtypes, and fills P with the gates'
 * measures; COSINE (NULL or N doubles) gets each sentence's cosine of
 * the outputs.  Returns 0, or -1 with ERR (a forward pass failed, out of
 * memory).
 */
int aiserve_dtype_compare(const aiserve_model_t *fp32,
    const aiserve_model_t *bf16, const int32_t *const *ids,
    const size_t *lens, size_t n, double *cosine, aiserve_parity_t *p,
    char *err, size_t err_len);

/*
 * Loads MODEL_DIR (aiserve_model_load()) with its products in WANT:
 *   FP32  fp32.
 *   BF16  bf16; an error naming the CPU feature missing where
 *         aiserve_gemm_bf16_native() is 0 (never oneDNN's emulation).
 *   AUTO  bf16 where aiserve_gemm_bf16_native() is 1 and the checkpoint,
 *         loaded in both dtypes, passes aiserve_dtype_compare()'s gates on
 *         a fixed set of built-in sentences (English, other scripts,
 *         1 to about 120 tokens, tokenized with TOK, cut at the model's
 *         max_position_embeddings); fp32 otherwise.
 * NOTE (always set on success) says what was chosen and why, for the
 * log: the CPU feature, the parity measures.  Returns NULL with ERR as
 * aiserve_model_load()'s.
 */
aiserve_model_t *aiserve_model_load_dtype(const char *model_dir,
    const aiserve_tok_t *tok, aiserve_dtype_e want, char *note,
    size_t note_len, char *err, size_t err_len);

#endif /* AISERVE_DTYPE_H */
