/*
 * aiserve training engine: a BERT classifier or token tagger in fp32 with
 * its forward pass kept for a backward pass over the whole graph, in the
 * manner of llm.c's train_gpt2.c (one flat array of parameters, one of
 * gradients, the activations of one batch).  Follows transformers'
 * modeling_bert.py: BertEmbeddings, BertLayer (BertSelfAttention eager,
 * BertSelfOutput, BertIntermediate, BertOutput), BertPooler +
 * classifier (BertForSequenceClassification) or classifier on every token
 * (BertForTokenClassification), with their losses.
 *
 * Batches are packed and padding-free (aiserve_train_batch_t): attention
 * runs over each sequence's own tokens, which is what a padded batch with
 * an attention mask computes (tested against PyTorch on padded batches).
 *
 * Memory kept for the backward pass, per token of the batch (H
 * hidden_size, I intermediate_size, A num_attention_heads, L the length
 * of the token's sequence), in floats:
 *   embeddings           2H + 2
 *   each layer           8H + 2I + 4 + A L   (QKV 3H, context H, two
 *                        LayerNorms' inputs and outputs 4H and their
 *                        mean / rstd 4, GELU input and output 2I,
 *                        attention probabilities A L)
 *   gradient buffers     7H + I, and 2 max(L)^2 per batch (attention)
 * plus per row of the head (a sequence, or a token for a token
 * classifier) 2H + 2C, and 3H per sequence for the pooler: MiniLM (H 384,
 * I 1536, A 12, 6 layers) keeps about 168 KB per token plus 288 L bytes
 * (the attention probabilities).  Dropout masks are not
 * stored: each is a function of (seed, forward pass, site, element),
 * drawn again in the backward pass.  Buffers grow to the largest batch
 * seen, so the batch's token budget bounds them.
 *
 * Matrix products and their gradients go through the BLAS
 * (aiserve_blas.h), or in bf16 through oneDNN (opts.dtype,
 * aiserve_gemm_bf16()), one thread a call; a pass splits the large ones by
 * rows, and attention by sequence and head, over opts.threads threads
 * (aiserve_team.h): results depend only on the inputs, the seed and the
 * thread count.  No nginx types.
 */
#ifndef AISERVE_TRAIN_H
#define AISERVE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "aiserve_gemm.h"
#include "aiserve_model.h"
#include "aiserve_optim.h"

/* The label a token classifier ignores (torch CrossEntropyLoss's
 * ignore_index, set on the sub-tokens after the first and on special
 * tokens by the Hugging Face token-classification recipe). */
#define AISERVE_TRAIN_IGNORE  (-100)

typedef struct aiserve_train_s  aiserve_train_t;

/*
 * A packed batch with its labels.  Sequence i occupies seq_lens[i]
 * tokens of input_ids / token_type_ids, one after the other.  Labels,
 * by task:
 *   sequence, single-label:  label_ids[n_seqs], class ids (or -100)
 *   sequence, multi-label:   label_values[n_seqs * num_labels], 0 / 1
 *   sequence, regression:    label_values[n_seqs * num_labels]
 *   token classification:    label_ids[total_tokens], class ids or -100
 * Both label pointers NULL: forward only (no loss, no backward).
 */
typedef struct {
    const int32_t  *input_ids;        /* [total_tokens] */
    const int32_t  *token_type_ids;   /* [total_tokens], NULL: all 0 */
    const size_t   *seq_lens;         /* [n_seqs], 1 ..
                                         max_position_embeddings */
    size_t          n_seqs;
    const int32_t  *label_ids;
    const float    *label_values;
} aiserve_train_batch_t;

/* Which parameters train (issue 11's three modes). */
typedef enum {
    AISERVE_TRAIN_FULL = 0,   /* every weight */
    AISERVE_TRAIN_HEAD,       /* the head (pooler and classifier) on a
                                 frozen encoder */
    AISERVE_TRAIN_LORA        /* LoRA adapters and the classifier */
} aiserve_train_mode_e;

/* LoRA target modules (peft's target_modules names). */
#define AISERVE_LORA_QUERY  1u
#define AISERVE_LORA_KEY    2u
#define AISERVE_LORA_VALUE  4u

/* What to train from a checkpoint. */
typedef struct {
    /*
     * The head: AISERVE_ARCH_BERT_MODEL keeps the checkpoint's (an error
     * if it has none); a task architecture on a BertModel checkpoint
     * makes a new one (and a pooler if the checkpoint lacks it)
     * initialised as transformers' BertPreTrainedModel._init_weights:
     * weights normal(0, initializer_range), biases 0, drawn from SEED.
     * Asking a task checkpoint for another task is an error.
     */
    aiserve_arch_e     arch;
    size_t             num_labels;     /* new head only */
    aiserve_problem_e  problem_type;   /* new sequence head only */
    uint64_t           seed;           /* new head, LoRA, dropout */
    int                threads;        /* of each pass (the caller and
                                          threads - 1 helpers started on
                                          the first pass); results
                                          depend on the seed and this
                                          count only */
    aiserve_train_mode_e  mode;
    /*
     * The matrix products (forward, and the input and weight gradients
     * of the backward pass): FP32 (the default), or mixed precision as
     * torch.autocast("cpu", dtype=torch.bfloat16) and transformers'
     * Trainer with bf16=True run BERT: every Linear and both attention
     * products with bf16 operands and fp32 accumulation
     * (aiserve_gemm_bf16()); weights, gradients and AdamW's state stay
     * fp32, and so do embeddings, LayerNorm, softmax, GELU, dropout and
     * the losses.  BF16 is an error on a CPU without AVX512-BF16 or AMX
     * (aiserve_gemm_bf16_native()); AUTO takes BF16 where it has either,
     * else FP32.  aiserve_train_dtype() says which.
     */
    aiserve_dtype_e    dtype;
    /*
     * lora mode, with peft's LoraConfig semantics: r (8), lora_alpha
     * (16; scaling = alpha / r), lora_dropout (on the adapter's input,
     * when dropout is on), target modules (query | value).  lora_A
     * starts as peft's kaiming_uniform_(a = sqrt 5), lora_B at 0.  The
     * base weights and the pooler are frozen; the classifier trains
     * (peft's modules_to_save).
     */
    size_t             lora_r;
    float              lora_alpha;
    float              lora_dropout;
    unsigned           lora_targets;   /* AISERVE_LORA_* */
} aiserve_train_opts_t;

/* opts for full mode, and peft's LoRA defaults should lora be chosen:
 * r 8, alpha 16, dropout 0, query and value. */
void aiserve_train_opts_defaults(aiserve_train_opts_t *opts);

/* One parameter tensor of the flat array, named as transformers' task
 * model names it ("bert.encoder.layer.0.attention.self.query.weight",
 * "classifier.bias"). */
typedef struct {
    char      name[128];
    size_t    ndim;
    size_t    shape[2];
    size_t    offset;                 /* in floats, into params / grads */
    size_t    n;                      /* floats */
    int       decay;                  /* AdamW weight decay applies (not
                                         to biases and LayerNorm weights,
                                         as transformers' Trainer) */
    int       frozen;                 /* not updated (head mode's
                                         encoder) */
} aiserve_train_tensor_t;

/*
 * Loads MODEL_DIR (any checkpoint aiserve_model_load() accepts: F32, F16
 * or BF16 weights) into trainable fp32 weights.  Dropout starts off.
 * Returns NULL with err naming the file, tensor or option at fault.
 */
aiserve_train_t *aiserve_train_load(const char *model_dir,
    const aiserve_train_opts_t *opts, char *err, size_t err_len);
void aiserve_train_free(aiserve_train_t *t);

/* The model's configuration, with the head being trained (arch,
 * num_labels, problem_type). */
const aiserve_model_info_t *aiserve_train_info(const aiserve_train_t *t);

/* The parameter tensors, in the order of the flat arrays. */
size_t aiserve_train_n_tensors(const aiserve_train_t *t);
const aiserve_train_tensor_t *aiserve_train_tensor(const aiserve_train_t *t,
    size_t i);

/* The tensor called NAME, or NULL. */
const aiserve_train_tensor_t *aiserve_train_find(const aiserve_train_t *t,
    const char *name);

/* The flat parameter and gradient arrays, aiserve_train_n_params()
 * floats each. */
size_t aiserve_train_n_params(const aiserve_train_t *t);
float *aiserve_train_params(aiserve_train_t *t);
float *aiserve_train_grads(aiserve_train_t *t);

/*
 * Dropout on (ON non-zero) with the checkpoint's probabilities
 * (hidden_dropout_prob after the embeddings and each dense + residual,
 * attention_probs_dropout_prob on the attention probabilities,
 * classifier_dropout or else hidden_dropout_prob before the classifier),
 * or off (evaluation, and the PyTorch comparisons).  Masks are drawn from
 * SEED and a count of forward passes, which this resets: the same calls
 * after the same seed give the same masks, on any thread count.
 */
void aiserve_train_set_dropout(aiserve_train_t *t, int on, uint64_t seed);

/*
 * Forward pass on BATCH keeping what the backward pass needs; with labels,
 * *LOSS is the batch's loss as transformers computes it:
 *   single-label:  CrossEntropyLoss (mean over labels that are not -100)
 *   multi-label:   BCEWithLogitsLoss (mean over n_seqs * num_labels)
 *   regression:    MSELoss (mean over n_seqs * num_labels)
 *   token:         CrossEntropyLoss, mean over tokens not -100
 * (a batch with every label -100 has loss 0 and no gradient, where torch
 * gives NaN).  Returns 0, or -1 with err (id out of vocabulary,
 * token_type_id out of range, sequence too long, label out of range, out
 * of memory).
 */
int aiserve_train_forward(aiserve_train_t *t,
    const aiserve_train_batch_t *batch, float *loss, char *err,
    size_t err_len);

/* The logits of the last forward pass: [n_seqs, num_labels] or
 * [total_tokens, num_labels]. */
const float *aiserve_train_logits(const aiserve_train_t *t);

/* Sets every gradient to 0 (torch's optimizer.zero_grad()). */
void aiserve_train_zero_grad(aiserve_train_t *t);

/*
 * Backward pass of the last forward pass (which had labels): adds
 * LOSS_SCALE times the gradient of its loss to the gradients.  The
 * trainer passes 1 for every micro-batch of an accumulated step, as
 * transformers' Trainer 5.x does with BERT (it passes num_items_in_batch
 * to the model, which takes **kwargs but ignores it, and then does not
 * divide by the accumulation steps; Trainer before 4.46 and models that
 * take no **kwargs get 1 / gradient_accumulation_steps).  AdamW is
 * nearly blind to the difference, clipping is not.  Returns 0, or -1
 * with err (no forward pass with labels to go back through).
 */
int aiserve_train_backward(aiserve_train_t *t, float loss_scale, char *err,
    size_t err_len);

/*
 * Head mode (opts.mode AISERVE_TRAIN_HEAD): the encoder frozen, its
 * features computed once per example and cached, the head trained alone
 * on them (many epochs in seconds).  Frozen tensors are left as they are
 * by aiserve_train_step(), as torch does with requires_grad False.
 *
 * aiserve_train_features() runs the encoder on BATCH with dropout off
 * (a cached feature is computed once) and writes the head's input to
 * FEATURES: [n_seqs, H], each sequence's first token's final hidden
 * state, for a sequence classifier (the pooler is part of the head and
 * trained); [total_tokens, H] for a token classifier.  Labels unused.
 *
 * aiserve_train_head_forward() runs the head alone on such FEATURES for
 * the sequences of BATCH (seq_lens and labels; input_ids may be NULL),
 * with dropout before the classifier when on, and the loss as
 * aiserve_train_forward(); aiserve_train_backward() then fills the
 * head's gradients only.  With dropout off, its loss and gradients are
 * those of the full model on the same batch (tested).  Both return 0, or
 * -1 with err as aiserve_train_forward().
 */
int aiserve_train_features(aiserve_train_t *t,
    const aiserve_train_batch_t *batch, float *features, char *err,
    size_t err_len);
int aiserve_train_head_forward(aiserve_train_t *t, const float *features,
    const aiserve_train_batch_t *batch, float *loss, char *err,
    size_t err_len);

/* The products' dtype in use: FP32 or BF16 (opts.dtype resolved). */
aiserve_dtype_e aiserve_train_dtype(const aiserve_train_t *t);

/* Bytes held, for the benchmark's memory table. */
typedef struct {
    size_t  weights;          /* the flat parameter array */
    size_t  gradients;        /* as many */
    size_t  optimizer;        /* AdamW's two moments (0 before a step) */
    size_t  activations;      /* kept for the backward pass, sized by the
                                 largest batch so far */
} aiserve_train_memory_t;

void aiserve_train_memory(const aiserve_train_t *t,
    aiserve_train_memory_t *m);

/*
 * One optimiser step as transformers' Trainer takes it after the
 * micro-batches of a step have been through forward and backward: clips
 * the gradients' global norm to c->max_grad_norm, takes the learning rate
 * of this step from the linear schedule with warmup, applies AdamW to
 * every tensor not frozen (weight decay only where tensor->decay),
 * counts the step and zeroes the gradients (those of frozen tensors are
 * never written, and stay 0).  Both passes over the parameters (the
 * norm, then clipping, AdamW and zeroing fused in one vectorised pass)
 * are split over the thread team in pieces of 16384 floats, the norm
 * summed piece by piece in order: the result does not depend on the
 * thread count.  The optimiser state (two moments, as many floats as
 * parameters each) is allocated on the first step.  *LR and
 * *GRAD_NORM (either may be NULL) get the rate used and the norm before
 * clipping.  Returns 0, or -1 with err (out of memory; total_steps 0 or
 * below warmup_steps: get_linear_schedule_with_warmup has no rate then).
 */
int aiserve_train_step(aiserve_train_t *t, const aiserve_optim_config_t *c,
    float *lr, double *grad_norm, char *err, size_t err_len);

/*
 * The state a checkpoint keeps beside the parameters (a resumed run then
 * gives the parameters an uninterrupted one gives, bit for bit):
 * aiserve_train_optim_state() points *ADAM_M and *ADAM_V at the two
 * AdamW moments (aiserve_train_n_params() floats each; allocated, zero,
 * when no step has been taken yet) and *ADAM_STEP at the count of steps
 * taken; the caller may read or overwrite them between steps.  Returns
 * 0, or -1 with err (out of memory).
 *
 * aiserve_train_dropout_pass() is the count of forward passes since
 * aiserve_train_set_dropout() (which draws the masks); set it back with
 * aiserve_train_set_dropout_pass() after the passes of an evaluation, or
 * on resume.
 */
int aiserve_train_optim_state(aiserve_train_t *t, float **adam_m,
    float **adam_v, size_t **adam_step, char *err, size_t err_len);
uint64_t aiserve_train_dropout_pass(const aiserve_train_t *t);
void aiserve_train_set_dropout_pass(aiserve_train_t *t, uint64_t pass);

#endif /* AISERVE_TRAIN_H */
