/*
 * aiserve model output: a trained BERT as a Hugging Face model directory
 * that transformers' AutoModelFor...from_pretrained() and aiserve load,
 * and, for LoRA and head-only training, a small directory holding only
 * the trained part with the base named (peft's adapter format, or the
 * head's tensors), so that one server can share the base's weights.
 *
 * Tensors are given by their names in transformers' BertModel
 * ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.
 * query.weight", "pooler.dense.weight") or with the "bert." prefix of the
 * task models, LayerNorm weights also as TF-era gamma/beta; heads as
 * "classifier.weight" / "classifier.bias".  The writers pick the tensors
 * the chosen architecture has, check their shapes against the base's
 * config.json, and write them under the names transformers expects;
 * tensors the architecture does not have (a pooler given to a token
 * classifier, embeddings.position_ids, an MLM head) are left out.
 *
 * Layouts (README.md "Model output"):
 *   full:  config.json, model.safetensors, tokenizer files of the base
 *          (and its sentence-transformers modules for a BertModel)
 *   head:  config.json (with "base_model_name_or_path"),
 *          head.safetensors (the classifier, and the pooler of a
 *          sequence classifier unless it is the base's own, unchanged)
 *   lora:  adapter_config.json, adapter_model.safetensors (peft 0.21's
 *          names: "base_model.model.<name>.lora_A.weight", the head as
 *          "base_model.model.classifier.weight"), and config.json with
 *          the labels
 * Every file is written atomically (aiserve_st_write.h), config.json
 * last.  No nginx types.
 */
#ifndef AISERVE_HF_WRITE_H
#define AISERVE_HF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "aiserve_model.h"
#include "aiserve_st_write.h"

/* What to write: the architecture (transformers' class), the base
 * checkpoint directory (its config.json gives every BERT field and the
 * shapes; its tokenizer files are copied; it is the base that head and
 * LoRA directories name), and the labels of a task architecture. */
typedef struct {
    aiserve_arch_e      arch;
    const char         *base_dir;
    size_t              num_labels;     /* task architectures, else 0 */
    const char *const  *id2label;       /* [num_labels], distinct */
    aiserve_problem_e   problem_type;   /* sequence classification */
} aiserve_hf_spec_t;

/* peft's LoraConfig: scaling = lora_alpha / r; target_modules as peft
 * matches them (a module whose name is, or ends with ".", one of them). */
typedef struct {
    size_t              r;
    double              lora_alpha;
    double              lora_dropout;
    const char *const  *target_modules;
    size_t              n_target_modules;
} aiserve_lora_config_t;

/*
 * Writes the whole model to OUT_DIR (created, parents too; files already
 * there are replaced): config.json (the base's BERT fields, architectures,
 * id2label / label2id / problem_type, torch_dtype, transformers_version),
 * model.safetensors ("bert."-prefixed names for the task architectures,
 * bare for BertModel; the pooler for sequence classification and, when
 * given, BertModel; none for token classification) and the base's
 * tokenizer.json, tokenizer_config.json, vocab.txt, special_tokens_map.json
 * and added_tokens.json where present; a BertModel also gets the base's
 * sentence-transformers modules (modules.json and each module's
 * config.json).  Tensors are written in the dtype given (F32, F16, BF16).
 * Returns 0, or -1 with err naming the file or the tensor (missing, wrong
 * shape or dtype).
 */
int aiserve_hf_write_model(const char *out_dir, const aiserve_hf_spec_t *spec,
    const aiserve_st_wtensor_t *tensors, size_t n_tensors, char *err,
    size_t err_len);

/*
 * Head-only output (the encoder frozen): config.json as above plus
 * "base_model_name_or_path": spec->base_dir, and head.safetensors with the
 * head's tensors under transformers' names: classifier.*, and
 * bert.pooler.dense.* for a sequence classifier whose pooler is new or
 * differs from the base checkpoint's (an unchanged one is the base's, and
 * is read from there); encoder tensors in the list are not written.
 * Errors as aiserve_hf_write_model().
 */
int aiserve_hf_write_head(const char *out_dir, const aiserve_hf_spec_t *spec,
    const aiserve_st_wtensor_t *tensors, size_t n_tensors, char *err,
    size_t err_len);

/*
 * LoRA output in peft's adapter format (peft 0.21 PeftModel.
 * save_pretrained(), checked by tools/check-hf-export.py): 
 * adapter_config.json (peft_type LORA, base_model_name_or_path
 * spec->base_dir, r, lora_alpha, lora_dropout, target_modules, task_type
 * SEQ_CLS / TOKEN_CLS / FEATURE_EXTRACTION, modules_to_save: the head),
 * adapter_model.safetensors and config.json (the labels).  TENSORS holds
 * "<module>.lora_A.weight" [r, in_features] and "<module>.lora_B.weight"
 * [out_features, r] for each adapted nn.Linear of the encoder, module
 * named as above (e.g. "encoder.layer.0.attention.self.query"), and the
 * head: classifier.*, and pooler.dense.* when it is new or differs from
 * the base's (then "pooler" joins modules_to_save).
 * Errors: a module not matched by target_modules or not a Linear of
 * BERT's layers, a lora_A without its lora_B, a shape off r or the
 * layer's sizes.
 */
int aiserve_hf_write_lora(const char *out_dir, const aiserve_hf_spec_t *spec,
    const aiserve_lora_config_t *lora, const aiserve_st_wtensor_t *tensors,
    size_t n_tensors, char *err, size_t err_len);

/*
 * A new head for spec->arch on the base, initialised as transformers'
 * BertPreTrainedModel._init_weights does: classifier [num_labels, H] and,
 * for sequence classification on a base without a pooler (a
 * sentence-transformers checkpoint may lack one), the pooler [H, H] drawn
 * from
 * normal(0, initializer_range of the base's config.json), biases zero;
 * with aiserve's own generator, seeded by SEED (the same seed gives the
 * same head; the values are not torch's).  *tensors (malloc'ed; tensor
 * data inside the same block, free() it once) holds "classifier.weight",
 * "classifier.bias" and, when made, "pooler.dense.weight",
 * "pooler.dense.bias"; *n_tensors their count.  Returns 0, or -1
 * with err set.
 */
int aiserve_hf_init_head(const aiserve_hf_spec_t *spec, uint64_t seed,
    aiserve_st_wtensor_t **tensors, size_t *n_tensors, char *err,
    size_t err_len);

/*
 * N draws of normal(0, STD) as floats into DST, from aiserve's generator
 * (splitmix64 and Box-Muller) at *STATE, which advances: the head
 * initialisation above, LoRA matrices in tests and tools.
 */
void aiserve_hf_normal_fill(float *dst, size_t n, double std,
    uint64_t *state);

#endif /* AISERVE_HF_WRITE_H */
