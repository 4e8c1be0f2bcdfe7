/*
 * aiserve encoder: Hugging Face BERT checkpoints (config.json +
 * model.safetensors, sentence-transformers modules.json / 1_Pooling) run on
 * the CPU with the numbers of `transformers` in fp32.
 *
 * No nginx types.  A loaded model is read-only (weights mmap'ed and shared)
 * and serves concurrent forward passes from several threads, each with its
 * own scratch.
 */
#ifndef AISERVE_MODEL_H
#define AISERVE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "aiserve_gemm.h"
#include "aiserve_safetensors.h"

typedef struct aiserve_model_s    aiserve_model_t;
typedef struct aiserve_scratch_s  aiserve_scratch_t;

typedef enum {
    AISERVE_ARCH_BERT_MODEL = 0,          /* BertModel + pooling: embeddings */
    AISERVE_ARCH_SEQUENCE_CLASSIFICATION, /* BertForSequenceClassification */
    AISERVE_ARCH_TOKEN_CLASSIFICATION     /* BertForTokenClassification */
} aiserve_arch_e;

typedef enum {
    AISERVE_POOLING_CLS = 0,
    AISERVE_POOLING_MEAN,
    AISERVE_POOLING_MAX
} aiserve_pooling_e;

typedef enum {
    AISERVE_PROBLEM_SINGLE_LABEL = 0,     /* softmax */
    AISERVE_PROBLEM_MULTI_LABEL,          /* sigmoid */
    AISERVE_PROBLEM_REGRESSION            /* none */
} aiserve_problem_e;

typedef struct {
    aiserve_arch_e     arch;
    size_t             hidden_size;
    size_t             num_hidden_layers;
    size_t             num_attention_heads;
    size_t             intermediate_size;
    size_t             max_position_embeddings;
    size_t             type_vocab_size;
    size_t             vocab_size;
    float              layer_norm_eps;
    aiserve_pooling_e  pooling;           /* BertModel only */
    int                normalize;         /* sentence-transformers Normalize */
    size_t             num_labels;        /* classification heads, else 0 */
    char             **id2label;          /* [num_labels] */
    aiserve_problem_e  problem_type;
} aiserve_model_info_t;

/*
 * Loads MODEL_DIR (config.json, model.safetensors, modules.json,
 * 1_Pooling/config.json).  Returns NULL with a message naming the file and
 * the tensor in err.
 */
aiserve_model_t *aiserve_model_load(const char *model_dir, char *err,
    size_t err_len);
void aiserve_model_free(aiserve_model_t *model);

/*
 * aiserve_model_load() with the encoder's and the heads' nn.Linear
 * weights packed in DTYPE (AISERVE_DTYPE_FP32 or _BF16; see
 * aiserve_gemm_layout_dtype(): bf16 products, fp32 accumulation and
 * output; embeddings, LayerNorm, softmax, GELU, attention, pooling and
 * the unmerged LoRA products stay fp32).  Asks for BF16 only where
 * aiserve_gemm_bf16_native() is 1; AUTO is aiserve_model_load_dtype()'s
 * (src/aiserve_dtype.h).  Errors as aiserve_model_load()'s, and BF16 with
 * AISERVE_GEMM=blas.
 */
aiserve_model_t *aiserve_model_load_packed(const char *model_dir,
    aiserve_dtype_e dtype, char *err, size_t err_len);

/* The dtype of MODEL's packed weights (FP32 with AISERVE_GEMM=blas), and
 * their bytes (a model over a base: the base's). */
aiserve_dtype_e aiserve_model_dtype(const aiserve_model_t *model);
size_t aiserve_model_packed_bytes(const aiserve_model_t *model);

/*
 * Reads MODEL_DIR/config.json alone into INFO, with the checks and
 * defaults of aiserve_model_load() (the training engine loads the same
 * checkpoints into weights of its own).  id2label is allocated: free it
 * with aiserve_model_info_clear().  Returns 0, or -1 with err naming the
 * file and the field.
 */
int aiserve_model_read_config(const char *model_dir,
    aiserve_model_info_t *info, char *err, size_t err_len);
void aiserve_model_info_clear(aiserve_model_info_t *info);

/*
 * The tensor NAME of a BERT checkpoint as transformers would find it on
 * load: NAME itself, then "bert." NAME (task models), each also with the
 * TF-era LayerNorm names gamma / beta.  NULL when none is there.
 */
const aiserve_st_tensor_t *aiserve_model_find_tensor(
    const aiserve_st_file_t *st, const char *name);

/*
 * Loads DIR, a head-only directory (config.json + head.safetensors) or a
 * peft LoRA adapter (adapter_config.json + adapter_model.safetensors +
 * config.json), as written by src/aiserve_hf_write.h, over BASE, sharing
 * BASE's weights: the embeddings and every layer weight are BASE's (no
 * copy); the model owns its head.  LoRA on query, key and value runs
 * beside BASE's products, as peft's unmerged forward does (x W^T + b +
 * lora_alpha / r * (x A^T) B^T), its matrices read in place from the
 * adapter's file; LoRA on attention.output.dense, intermediate.dense or
 * output.dense is merged (W + lora_alpha / r * B A) into a packed copy of
 * that weight, the model's own.  BASE must have the encoder of
 * DIR's config.json and outlive the result; several models may share one
 * BASE, and each may be freed alone.  A BertModel adapter keeps BASE's
 * pooling.  Returns NULL with err naming the file and the tensor (sizes
 * that differ from BASE's, a missing head or LoRA tensor, a peft option
 * other than plain LoRA).
 *
 * aiserve_model_load() loads such a directory too, with its own copy of
 * the base named by "base_model_name_or_path" (a path, absolute or from
 * the working directory).
 */
aiserve_model_t *aiserve_model_load_over(const aiserve_model_t *base,
    const char *dir, char *err, size_t err_len);
const aiserve_model_info_t *aiserve_model_info(const aiserve_model_t *model);

/* A packed, padding-free batch: sequence i occupies seq_lens[i] tokens of
 * input_ids / token_type_ids, one after the other. */
typedef struct {
    const int32_t  *input_ids;        /* [total_tokens] */
    const int32_t  *token_type_ids;   /* [total_tokens], NULL: all 0 */
    const size_t   *seq_lens;         /* [n_seqs], each >= 1 and
                                         <= max_position_embeddings */
    size_t          n_seqs;
} aiserve_batch_t;

/*
 * Per-thread working memory for batches of at most max_tokens tokens in
 * total (and max_seq_len per sequence).  Reused across calls.
 */
aiserve_scratch_t *aiserve_scratch_create(const aiserve_model_t *model,
    size_t max_tokens, char *err, size_t err_len);
void aiserve_scratch_free(aiserve_scratch_t *scratch);

/* Number of floats aiserve_model_forward() writes for this batch:
 *   BertModel:                n_seqs * hidden_size (pooled, normalized if
 *                             the model has a Normalize module)
 *   SequenceClassification:   n_seqs * num_labels (raw logits)
 *   TokenClassification:      total_tokens * num_labels (raw logits) */
size_t aiserve_model_output_len(const aiserve_model_t *model,
    const aiserve_batch_t *batch);

/*
 * Runs the encoder and the head on a batch.  out has
 * aiserve_model_output_len() floats.  Returns 0, or -1 with err set (id out
 * of vocabulary, sequence too long, batch over the scratch's max_tokens).
 *
 * Follows transformers' modeling_bert.py in fp32: BertEmbeddings (word +
 * token_type + absolute position, restarting at 0 for each sequence,
 * LayerNorm), then per BertLayer: BertSelfAttention (eager softmax(QK^T /
 * sqrt(head_dim)) V, over the sequence's own tokens only, so no padding
 * mask), BertSelfOutput and BertOutput (dense, LayerNorm(x + residual)),
 * BertIntermediate (dense + hidden_act; "gelu" is the exact erf form).
 * Heads: sentence-transformers Pooling (cls / mean / max) and Normalize;
 * BertPooler (tanh(dense(first token))) + classifier; classifier on every
 * token.  A sequence's output does not depend on the other sequences of
 * the batch beyond rounding (<= 1e-5, tested).  Thread-safe for
 * concurrent calls with distinct scratches.
 */
int aiserve_model_forward(const aiserve_model_t *model,
    const aiserve_batch_t *batch, aiserve_scratch_t *scratch, float *out,
    char *err, size_t err_len);

/*
 * The same encoder pass without the head: out gets the last hidden state
 * of every token (transformers' BaseModelOutput.last_hidden_state,
 * sentence-transformers' token_embeddings), total_tokens * hidden_size
 * floats, the sequences one after the other.  Errors as
 * aiserve_model_forward().
 */
int aiserve_model_forward_hidden(const aiserve_model_t *model,
    const aiserve_batch_t *batch, aiserve_scratch_t *scratch, float *out,
    char *err, size_t err_len);

/*
 * Whether MODEL runs BASE's encoder unchanged: BASE itself, or a head
 * model aiserve_model_load_over() loaded over BASE (a LoRA adapter or a
 * model of its own changes the encoder).  1 or 0.
 */
int aiserve_model_shares_encoder(const aiserve_model_t *model,
    const aiserve_model_t *base);

/*
 * One encoder pass of BASE over the batch ("many tenants, one encoder"),
 * then on sequence i the head of HEADS[i], a model that shares BASE's
 * encoder (aiserve_model_shares_encoder()): the outputs are those
 * aiserve_model_forward() of HEADS[i] gives for that sequence alone (up
 * to the rounding of a batch), one after the other, each
 * aiserve_model_output_len() of its model.  SCRATCH is BASE's.  Errors as
 * aiserve_model_forward(), and a model that does not share the encoder.
 */
int aiserve_model_forward_heads(const aiserve_model_t *base,
    const aiserve_model_t *const *heads, const aiserve_batch_t *batch,
    aiserve_scratch_t *scratch, float *out, char *err, size_t err_len);

/* Threads the BLAS uses for one forward pass.  Call after fork(), in each
 * process that computes (nginx: init_process); never starts threads in the
 * calling process before it is needed.
 *
 * Implementation: every BLAS call runs in its calling thread (OpenBLAS,
 * one thread per call); a forward pass splits its steps over the calling
 * thread plus n - 1 helpers that belong to the scratch and are started by
 * its first forward pass at this count (1 <= n <= 64; a process-wide
 * setting, read at the start of each pass). */
void aiserve_set_num_threads(int n);

/* Threads of the passes that use SCRATCH, in place of the process-wide
 * aiserve_set_num_threads() count (for a caller such as the trainer that
 * must not change the server's setting); n < 1: the process-wide count
 * again, n over AISERVE_MAX_THREADS: that maximum. */
void aiserve_scratch_set_threads(aiserve_scratch_t *scratch, int n);

#endif /* AISERVE_MODEL_H */
