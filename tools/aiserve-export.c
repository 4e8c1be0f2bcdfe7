/*
 * aiserve-export: writes a checkpoint aiserve loads as a Hugging Face model
 * directory, a head-only directory or a peft LoRA adapter through the
 * engine's writers (src/aiserve_hf_write.h), optionally with a new head.
 * See --help.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aiserve_hf_write.h"
#include "aiserve_model.h"
#include "aiserve_safetensors.h"


static void
usage(FILE *f)
{
    fprintf(f,
"usage: aiserve-export [options] BASE_DIR OUT_DIR\n"
"\n"
"Reads the checkpoint in BASE_DIR (config.json, model.safetensors) and\n"
"writes it to OUT_DIR with the engine's writers:\n"
"  --mode full    config.json, model.safetensors, tokenizer files\n"
"                 (transformers' layout; the default)\n"
"  --mode head    config.json naming BASE_DIR, head.safetensors\n"
"  --mode lora    peft adapter (adapter_config.json,\n"
"                 adapter_model.safetensors) with random LoRA matrices\n"
"                 on --target modules, and config.json with the labels\n"
"\n"
"options:\n"
"  --arch A       model | seq-cls | token-cls: the architecture written\n"
"                 (default: the base's)\n"
"  --labels L,..  a new head with these labels, initialised from\n"
"                 normal(0, initializer_range) (needed when the base has\n"
"                 no head of that architecture)\n"
"  --problem P    single_label_classification (default),\n"
"                 multi_label_classification or regression\n"
"  --seed N       seed of the new head and of the LoRA matrices (1)\n"
"  --r N          LoRA rank (8)\n"
"  --alpha X      LoRA alpha (16)\n"
"  --target M,..  LoRA target modules (query,value): query, key, value\n"
"                 or attention.output.dense\n"
"  -h, --help     this text\n"
"\n"
"example:\n"
"  tools/aiserve-export --arch seq-cls --labels neg,pos \\\n"
"      models/all-MiniLM-L6-v2 /tmp/minilm-cls\n");
}


/* Splits a comma-separated list in place; returns the count. */
static size_t
split(char *s, const char **out, size_t max)
{
    size_t  n = 0;
    char   *tok, *save = NULL;

    for (tok = strtok_r(s, ",", &save); tok != NULL && n < max;
         tok = strtok_r(NULL, ",", &save))
    {
        out[n++] = tok;
    }
    return n;
}


int
main(int argc, char **argv)
{
    aiserve_model_t        *m;
    const aiserve_model_info_t *info;
    aiserve_st_file_t      *st = NULL;
    aiserve_st_wtensor_t   *base_t = NULL, *head_t = NULL, *all = NULL;
    aiserve_hf_spec_t       spec;
    aiserve_lora_config_t   lora;
    const char             *base = NULL, *out = NULL, *mode = "full";
    const char             *arch = NULL, *problem = NULL;
    const char             *labels[1024], *targets[16];
    char                   *label_arg = NULL, *target_arg = NULL;
    char                    path[4096], err[1024], (*names)[192] = NULL;
    float                  *lora_data = NULL, *f;
    size_t                  n_base, n_head = 0, n_all, n_labels = 0, i, l, t;
    size_t                  H, n_lora = 0;
    uint64_t                seed = 1, state;
    int                     rc = 1, a;

    lora.r = 8;
    lora.lora_alpha = 16;
    lora.lora_dropout = 0.1;
    for (a = 1; a < argc; a++) {
        if (strcmp(argv[a], "-h") == 0 || strcmp(argv[a], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[a], "--mode") == 0 && a + 1 < argc) {
            mode = argv[++a];
        } else if (strcmp(argv[a], "--arch") == 0 && a + 1 < argc) {
            arch = argv[++a];
        } else if (strcmp(argv[a], "--labels") == 0 && a + 1 < argc) {
            label_arg = argv[++a];
        } else if (strcmp(argv[a], "--problem") == 0 && a + 1 < argc) {
            problem = argv[++a];
        } else if (strcmp(argv[a], "--seed") == 0 && a + 1 < argc) {
            seed = strtoull(argv[++a], NULL, 10);
        } else if (strcmp(argv[a], "--r") == 0 && a + 1 < argc) {
            lora.r = strtoul(argv[++a], NULL, 10);
        } else if (strcmp(argv[a], "--alpha") == 0 && a + 1 < argc) {
            lora.lora_alpha = strtod(argv[++a], NULL);
        } else if (strcmp(argv[a], "--target") == 0 && a + 1 < argc) {
            target_arg = argv[++a];
        } else if (argv[a][0] == '-' || out != NULL) {
            usage(stderr);
            return 2;
        } else if (base == NULL) {
            base = argv[a];
        } else {
            out = argv[a];
        }
    }
    if (out == NULL || (strcmp(mode, "full") != 0 && strcmp(mode, "head") != 0
                        && strcmp(mode, "lora") != 0))
    {
        usage(stderr);
        return 2;
    }

    m = aiserve_model_load(base, err, sizeof(err));
    if (m == NULL) {
        fprintf(stderr, "aiserve-export: %s\n", err);
        return 1;
    }
    info = aiserve_model_info(m);
    memset(&spec, 0, sizeof(spec));
    spec.base_dir = base;
    spec.arch = info->arch;
    spec.num_labels = info->num_labels;
    spec.id2label = (const char *const *) info->id2label;
    spec.problem_type = info->problem_type;
    H = info->hidden_size;

    if (arch != NULL) {
        spec.arch = strcmp(arch, "seq-cls") == 0
                    ? AISERVE_ARCH_SEQUENCE_CLASSIFICATION
                    : strcmp(arch, "token-cls") == 0
                    ? AISERVE_ARCH_TOKEN_CLASSIFICATION
                    : AISERVE_ARCH_BERT_MODEL;
        if (strcmp(arch, "model") != 0 && spec.arch == AISERVE_ARCH_BERT_MODEL)
        {
            fprintf(stderr, "aiserve-export: --arch \"%s\" is not model, "
                    "seq-cls or token-cls\n", arch);
            goto done;
        }
    }
    if (problem != NULL) {
        spec.problem_type = strcmp(problem, "multi_label_classification") == 0
                            ? AISERVE_PROBLEM_MULTI_LABEL
                            : strcmp(problem, "regression") == 0
                            ? AISERVE_PROBLEM_REGRESSION
                            : AISERVE_PROBLEM_SINGLE_LABEL;
    }
    if (label_arg != NULL) {
        n_labels = split(label_arg, labels, 1024);
        spec.num_labels = n_labels;
        spec.id2label = labels;
        if (aiserve_hf_init_head(&spec, seed, &head_t, &n_head, err,
                                 sizeof(err)) != 0)
        {
            fprintf(stderr, "aiserve-export: %s\n", err);
            goto done;
        }
    }

    snprintf(path, sizeof(path), "%s/model.safetensors", base);
    st = aiserve_st_open(path, err, sizeof(err));
    if (st == NULL || (base_t = aiserve_st_wtensors(st)) == NULL) {
        fprintf(stderr, "aiserve-export: %s\n", st ? "out of memory" : err);
        goto done;
    }
    n_base = st->n_tensors;

    /* LoRA matrices: A [r, H] and B [H, r] of each target of each layer
     * (query, key, value and attention.output.dense are [H, H] Linears) */
    lora.n_target_modules = target_arg ? split(target_arg, targets, 16) : 0;
    if (target_arg == NULL) {
        targets[0] = "query";
        targets[1] = "value";
        lora.n_target_modules = 2;
    }
    lora.target_modules = targets;
    if (strcmp(mode, "lora") == 0) {
        n_lora = 2 * info->num_hidden_layers * lora.n_target_modules;
        lora_data = malloc(n_lora * lora.r * H * sizeof(float));
        names = malloc(n_lora * sizeof(*names));
        if (lora_data == NULL || names == NULL) {
            fprintf(stderr, "aiserve-export: out of memory\n");
            goto done;
        }
        state = seed;
        aiserve_hf_normal_fill(lora_data, n_lora * lora.r * H, 0.1, &state);
    }

    /* the new head comes first: aiserve_hf_write_*() take the first of two
     * tensors with one name, so it replaces the base's */
    n_all = n_head + n_lora + n_base;
    all = calloc(n_all ? n_all : 1, sizeof(*all));
    if (all == NULL) {
        fprintf(stderr, "aiserve-export: out of memory\n");
        goto done;
    }
    memcpy(all, head_t, n_head * sizeof(*all));
    f = lora_data;
    i = n_head;
    for (l = 0; n_lora > 0 && l < info->num_hidden_layers; l++) {
        for (t = 0; t < lora.n_target_modules; t++) {
            const char  *full = strchr(targets[t], '.')
                                ? "%s" : "attention.self.%s";
            char         mname[96];

            snprintf(mname, sizeof(mname), full, targets[t]);
            snprintf(names[i - n_head], 192,
                     "encoder.layer.%zu.%s.lora_A.weight", l, mname);
            snprintf(names[i - n_head + 1], 192,
                     "encoder.layer.%zu.%s.lora_B.weight", l, mname);
            all[i].name = names[i - n_head];
            all[i].dtype = AISERVE_ST_F32;
            all[i].ndim = 2;
            all[i].shape[0] = lora.r;
            all[i].shape[1] = H;
            all[i].data = f;
            all[i + 1] = all[i];
            all[i + 1].name = names[i - n_head + 1];
            all[i + 1].shape[0] = H;
            all[i + 1].shape[1] = lora.r;
            all[i + 1].data = f + lora.r * H;
            f += 2 * lora.r * H;
            i += 2;
        }
    }
    memcpy(all + n_head + n_lora, base_t, n_base * sizeof(*all));

    if (strcmp(mode, "full") == 0) {
        rc = aiserve_hf_write_model(out, &spec, all, n_all, err, sizeof(err));
    } else if (strcmp(mode, "head") == 0) {
        rc = aiserve_hf_write_head(out, &spec, all, n_all, err, sizeof(err));
    } else {
        rc = aiserve_hf_write_lora(out, &spec, &lora, all, n_all, err,
                                   sizeof(err));
    }
    if (rc != 0) {
        fprintf(stderr, "aiserve-export: %s\n", err);
        rc = 1;
    }

done:
    free(all);
    free(names);
    free(lora_data);
    free(base_t);
    free(head_t);
    aiserve_st_close(st);
    aiserve_model_free(m);
    return rc;
}
