/*
 * aiserve trainer: the fine-tuning loop over the training engine
 * (aiserve_train.h), as transformers' Trainer runs it by default, made a
 * resumable state machine so that a caller can drive it in bounded chunks
 * (the HTTP API from a thread pool, tools/aiserve-train from a terminal):
 *
 *   tr = aiserve_trainer_create(&opts, &train, &valid, ...);
 *   while ((rc = aiserve_trainer_step(tr, 8, ...)) > 0) {
 *       p = aiserve_trainer_progress(tr);         report, or save:
 *       aiserve_trainer_save(tr, dir, meta, ...);
 *   }
 *   aiserve_trainer_write_model(tr, out_dir, ...);
 *   aiserve_trainer_free(tr);
 *
 * The run, in order: featurization of both sets through the model's
 * tokenizer (in create); in head mode the frozen encoder's features of
 * every example, computed once and cached; then per epoch: the training
 * examples shuffled by aiserve's own generator seeded by opts.seed, cut
 * in that order into packed, padding-free batches of at most
 * opts.batch_tokens tokens (an example longer than the budget is a batch
 * alone), gradient_accumulation_steps batches an optimiser step (the
 * epoch's last step takes what is left; their gradients add up unscaled,
 * the sum of the micro-batches' mean losses, as transformers' Trainer
 * 5.x accumulates BERT's), AdamW with the linear schedule and
 * clipping (aiserve_train_step()); then the validation set's loss and
 * report.  Results depend on the data, the options, the seed and the
 * thread count only; a run saved and restored at any point between two
 * calls gives the parameters of an uninterrupted one, bit for bit.
 *
 * The library never prints: progress is a struct the caller reads.
 * No nginx types.
 */
#ifndef AISERVE_TRAINER_H
#define AISERVE_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "aiserve_data.h"
#include "aiserve_eval.h"
#include "aiserve_train.h"

typedef struct aiserve_trainer_s  aiserve_trainer_t;

typedef struct {
    const char            *model_dir;     /* any checkpoint
                                             aiserve_train_load() takes,
                                             with its tokenizer files */
    aiserve_train_mode_e   mode;          /* full (default), head, lora */
    size_t                 lora_r;        /* peft LoraConfig: 8 */
    float                  lora_alpha;    /* 16 */
    float                  lora_dropout;  /* 0 */
    unsigned               lora_targets;  /* query | value */

    size_t                 epochs;        /* num_train_epochs */
    float                  learning_rate;
    float                  weight_decay;  /* 0, as Trainer */
    float                  adam_beta1;    /* 0.9 */
    float                  adam_beta2;    /* 0.999 */
    float                  adam_epsilon;  /* 1e-8 */
    float                  max_grad_norm; /* 1.0 */
    size_t                 warmup_steps;  /* 0; when > 0 it wins over */
    float                  warmup_ratio;  /* 0: ceil(ratio * total) */
    size_t                 batch_tokens;  /* token budget of a batch */
    size_t                 gradient_accumulation_steps;  /* 1 */
    size_t                 max_length;    /* truncation in tokens; 0:
                                             the tokenizer's, at most
                                             max_position_embeddings */
    uint64_t               seed;          /* 42, as Trainer */
    int                    threads;       /* of each pass; 1 */
    aiserve_dtype_e        dtype;         /* of the matrix products:
                                             fp32 (default), bf16 or
                                             auto (aiserve_train_opts_t) */
    int                    dropout;       /* 1: BERT's dropout on while
                                             training */
    aiserve_chunk_mode_e   ner_mode;      /* seqeval's default
                                             (AISERVE_CHUNK_CONLL) or
                                             strict IOB2 */
} aiserve_trainer_opts_t;

/*
 * Defaults for MODE.  Trainer's (TrainingArguments) for full mode:
 * learning_rate 5e-5, 3 epochs, weight_decay 0, betas 0.9 / 0.999, eps
 * 1e-8, max_grad_norm 1.0, no warmup, seed 42; plus batch_tokens 512
 * (about Trainer's 8 sequences a batch at BERT fine-tuning lengths, with
 * no padding).  lora: learning_rate 5e-4 (adapters start at zero and
 * take a larger rate, as peft's examples use).  head: learning_rate 1e-3
 * and 10 epochs (the head alone, on cached features: an epoch costs
 * little).  model_dir NULL.
 */
void aiserve_trainer_opts_defaults(aiserve_trainer_opts_t *opts,
    aiserve_train_mode_e mode);

typedef enum {
    AISERVE_TRAINER_FEATURES = 0,   /* head mode: caching the encoder's
                                       features */
    AISERVE_TRAINER_TRAINING,
    AISERVE_TRAINER_EVALUATING,     /* the validation set, after an
                                       epoch */
    AISERVE_TRAINER_DONE
} aiserve_trainer_phase_e;

typedef struct {
    aiserve_trainer_phase_e  phase;
    size_t    epoch;            /* the epoch under way, from 0 (epochs
                                   when done) */
    size_t    epochs;
    size_t    step;             /* optimiser steps taken */
    size_t    total_steps;      /* of the whole run (the schedule's) */
    size_t    epoch_batch;      /* batches of this epoch done */
    size_t    epoch_batches;
    float     loss;             /* the last step's training loss (mean of
                                   its micro-batches) */
    double    epoch_loss;       /* mean over this epoch's steps so far */
    float     learning_rate;    /* the rate of the last step */
    double    grad_norm;        /* the last step's, before clipping */
    size_t    step_tokens;      /* tokens of the last step */
    uint64_t  trained_tokens;   /* training tokens processed, epochs
                                   included (OpenAI's trained_tokens:
                                   the file's tokens x epochs when done) */
    uint64_t  total_tokens;     /* trained_tokens at the end */
    size_t    features_done, features_total;   /* examples */
    size_t    eval_done, eval_total;           /* examples */
    /* set by the aiserve_trainer_step() call that finished an epoch's
     * evaluation: that epoch + 1; 0 otherwise */
    size_t    evaluated_epoch;
    /* set by the call that finished an epoch's training: epoch + 1 */
    size_t    finished_epoch;
} aiserve_trainer_progress_t;

/* An evaluation on the validation set. */
typedef struct {
    size_t            epoch;        /* from 1 */
    size_t            step;
    size_t            examples;
    double            loss;         /* the mean of the batches' losses,
                                       each weighted by its sequences (as
                                       Trainer's eval_loss) */
    int               has_report;   /* a report (regression: the loss
                                       only) */
    aiserve_report_t  report;       /* sklearn's classification_report
                                       (multi-label: on the indicators
                                       sigmoid(logit) > 0.5), or
                                       seqeval's (opts.ner_mode) over the
                                       words' first sub-tokens, as
                                       transformers' recipe evaluates */
} aiserve_trainer_eval_t;

/*
 * Makes a run: loads opts->model_dir (a new head when it has none for the
 * task; an existing head keeps its labels, and the data's labels must be
 * among them), builds the label set from TRAIN (aiserve_labels_build),
 * checks VALID (may be NULL: no evaluation) against it, featurizes both,
 * and plans every epoch's batches (so total_steps is exact).  The task
 * follows the data: class labels train BertForSequenceClassification
 * (single-label, multi-label or regression as the labels are), tags or
 * spans BertForTokenClassification.  The datasets are not kept.  Returns
 * NULL with err naming the file, line and field, or the option at fault.
 */
aiserve_trainer_t *aiserve_trainer_create(const aiserve_trainer_opts_t *opts,
    const aiserve_dataset_t *train, const aiserve_dataset_t *valid,
    char *err, size_t err_len);
void aiserve_trainer_free(aiserve_trainer_t *tr);

/*
 * Advances the run by at most N units of work, a unit being one optimiser
 * step (its micro-batches' forward and backward passes and the update),
 * one batch of head mode's feature caching, or one batch of the
 * validation set's evaluation; returns early at the end of an epoch's
 * training and of its evaluation, so that the caller sees each.  Returns
 * 1 while there is more to do, 0 when the run is done, -1 with err
 * (out of memory; the run can be saved and freed).
 */
int aiserve_trainer_step(aiserve_trainer_t *tr, size_t n, char *err,
    size_t err_len);

const aiserve_trainer_progress_t *aiserve_trainer_progress(
    const aiserve_trainer_t *tr);

/* The last evaluation, or NULL before the first. */
const aiserve_trainer_eval_t *aiserve_trainer_last_eval(
    const aiserve_trainer_t *tr);

/* The evaluation as JSON: {"epoch", "step", "examples", "eval_loss",
 * "accuracy" (classes) or "f1" (micro average: entities, multi-label),
 * "report": output_dict's shape, "confusion_matrix": {"labels",
 * "matrix"}} (the last three with a report); NULL when out of memory. */
json_t *aiserve_trainer_eval_json(const aiserve_trainer_eval_t *ev);

/* The labels in the model's order (id2label), and their count. */
const char *const *aiserve_trainer_labels(const aiserve_trainer_t *tr,
    size_t *n);

/* The engine underneath (its parameters, for tests and tools). */
aiserve_train_t *aiserve_trainer_engine(aiserve_trainer_t *tr);

/*
 * Head mode, once the features are computed: training example I's
 * tokens (n_tokens input_ids and token_type_ids, as packed) and its
 * cached features (1 row of hidden_size floats for a sequence
 * classifier, n_tokens rows for a token classifier), for a check against
 * aiserve_train_features().  Returns 0, or -1 (another mode, the features
 * not computed yet, I out of range).
 */
int aiserve_trainer_example(const aiserve_trainer_t *tr, size_t i,
    const int32_t **input_ids, const int32_t **token_type_ids,
    size_t *n_tokens, const float **features);

/*
 * Writes a checkpoint to DIR (created if missing): state.safetensors (the
 * trainable tensors and their two AdamW moments, F32, named
 * "params/NAME", "adam_m/NAME", "adam_v/NAME"), then trainer.json (the
 * options, the training set's size and fingerprint, the position:
 * epoch, batch, step, the shuffling generator's state at the epoch's
 * start, the dropout pass, trained_tokens; and META, the caller's object,
 * or null), each atomically.  May be called between any two steps.
 * Returns 0, or -1 with err naming the file.
 */
int aiserve_trainer_save(aiserve_trainer_t *tr, const char *dir,
    json_t *meta, char *err, size_t err_len);

/*
 * Reads DIR/trainer.json: OPTS gets the run's options (model_dir points
 * into the returned object, which the caller releases with json_decref()
 * after aiserve_trainer_create()); the caller's META is
 * json_object_get(result, "meta").  NULL with err naming the file and
 * field.
 */
json_t *aiserve_trainer_read_checkpoint(const char *dir,
    aiserve_trainer_opts_t *opts, char *err, size_t err_len);

/* Removes a checkpoint aiserve_trainer_save() wrote: DIR's two files,
 * then DIR when it is empty. */
void aiserve_trainer_remove_checkpoint(const char *dir);

/*
 * Restores the checkpoint in DIR into TR, a run just created with the
 * checkpoint's options and the same data: parameters, optimiser state,
 * position, generators.  In head mode the features are computed again
 * first (the next steps do it).  Returns 0, or -1 with err (the data or
 * the options differ from the checkpoint's, a tensor missing or of
 * another shape).
 */
int aiserve_trainer_restore(aiserve_trainer_t *tr, const char *dir,
    char *err, size_t err_len);

/*
 * Writes the trained model to OUT_DIR with the engine's writers
 * (aiserve_hf_write.h): full mode the whole Hugging Face directory
 * (F32), head mode the head-only directory, lora mode peft's adapter;
 * id2label the run's labels, the base being opts.model_dir.  Returns 0,
 * or -1 with err.
 */
int aiserve_trainer_write_model(aiserve_trainer_t *tr, const char *out_dir,
    char *err, size_t err_len);

#endif /* AISERVE_TRAINER_H */
