/*
 * aiserve-train: fine-tunes a BERT checkpoint on a labelled file with the
 * engine's trainer (src/aiserve_trainer.h) and writes the model, or its
 * head or LoRA adapter, with the evaluation report.  Ctrl-C saves a
 * checkpoint that --resume continues.  See --help.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "aiserve_data.h"
#include "aiserve_eval.h"
#include "aiserve_trainer.h"


static volatile sig_atomic_t  interrupted;


static void
usage(FILE *f)
{
    fprintf(f,
"usage: aiserve-train --model DIR --task classify|ner --train FILE\n"
"                     --out DIR [options]\n"
"       aiserve-train --resume CHECKPOINT_DIR\n"
"\n"
"Fine-tunes the BERT checkpoint in DIR on FILE (JSONL, CSV or CoNLL, by\n"
"the extension or --format) as transformers' Trainer does (AdamW, linear\n"
"warmup and decay, clipping at 1.0, dropout), on packed batches of at\n"
"most --batch-tokens tokens, evaluates on --validation after each epoch,\n"
"and writes to OUT: the Hugging Face model directory (full), the\n"
"head-only directory (head) or peft's LoRA adapter (lora), and\n"
"eval_results.json and eval_report.txt (the last evaluation).  Progress:\n"
"a bar on a terminal, JSON lines otherwise (--json).  Ctrl-C writes a\n"
"checkpoint to OUT/checkpoint and exits (status 130); --resume continues\n"
"it to the parameters an uninterrupted run gives.\n"
"\n"
"options (defaults in parentheses):\n"
"  --model DIR             checkpoint to start from (a BertModel gets a\n"
"                          new head)\n"
"  --task classify|ner     classify: class labels (single-label,\n"
"                          multi-label or a number: regression); ner:\n"
"                          tags or spans\n"
"  --train FILE            training data\n"
"  --validation FILE       evaluated after each epoch\n"
"  --out DIR               where the model and the report go\n"
"  --mode full|head|lora   (full)\n"
"  --epochs N              (3; head: 10)\n"
"  --learning-rate X       (5e-5; lora: 5e-4; head: 1e-3)\n"
"  --batch-tokens N        token budget of a batch (512)\n"
"  --gradient-accumulation-steps N   batches an optimiser step (1)\n"
"  --warmup N              warmup steps (0)\n"
"  --warmup-ratio X        warmup as a share of the steps (0)\n"
"  --weight-decay X        AdamW's decoupled decay (0)\n"
"  --max-grad-norm X       clipping (1.0; 0: none)\n"
"  --max-length N          truncation in tokens (the tokenizer's)\n"
"  --seed N                shuffling, new head, LoRA, dropout (42)\n"
"  --threads N             threads of each pass (1); results depend on\n"
"                          the seed and this count\n"
"  --dtype fp32|bf16|auto  the matrix products: fp32 (default), or bf16\n"
"                          mixed precision (bf16 operands, fp32\n"
"                          accumulation, weights and AdamW state; needs\n"
"                          AVX512-BF16 or AMX); auto: bf16 where the CPU\n"
"                          has either, else fp32\n"
"  --no-dropout            train with dropout off\n"
"  --format jsonl|csv|conll   the files' format (by the extension)\n"
"  --text-column NAME      CSV: the text column (text)\n"
"  --text-pair-column NAME CSV: the pair's column (text_pair if present)\n"
"  --label-column NAME     CSV: the label column (label)\n"
"  --strict-iob2           an I-X that starts an entity is an error\n"
"  --problem-type P        single_label_classification,\n"
"                          multi_label_classification or regression: must\n"
"                          match the labels of FILE\n"
"  --ner-mode default|strict  seqeval's chunking in the report (default)\n"
"  --lora-r N              (8)\n"
"  --lora-alpha X          (16)\n"
"  --lora-dropout X        (0)\n"
"  --lora-targets M,..     among query, key, value (query,value)\n"
"  --logging-steps N       a progress line every N steps (10)\n"
"  --json                  JSON lines even on a terminal\n"
"  --resume DIR            continue the run saved in DIR with its options\n"
"                          and files (only --json and --logging-steps\n"
"                          apply besides)\n"
"  -h, --help              this text\n"
"\n"
"example:\n"
"  tools/aiserve-train --model models/all-MiniLM-L6-v2 --task classify \\\n"
"      --train ../shared/data/banking77/train.csv \\\n"
"      --validation ../shared/data/banking77/test.csv \\\n"
"      --label-column category --mode head --threads 2 --out /tmp/b77\n");
}


static void
on_sigint(int sig)
{
    interrupted = 1;
}


static double
now_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}


/* The tool's own settings, kept in a checkpoint's "meta". */
typedef struct {
    const char  *train, *validation, *out, *task, *format;
    const char  *text_column, *text_pair_column, *label_column;
    int          strict_iob2;
} tool_args_t;


static int
parse_format(const char *s, aiserve_data_format_e *f)
{
    if (s == NULL || strcmp(s, "auto") == 0) {
        *f = AISERVE_DATA_AUTO;
    } else if (strcmp(s, "jsonl") == 0) {
        *f = AISERVE_DATA_JSONL;
    } else if (strcmp(s, "csv") == 0) {
        *f = AISERVE_DATA_CSV;
    } else if (strcmp(s, "conll") == 0) {
        *f = AISERVE_DATA_CONLL;
    } else {
        return -1;
    }
    return 0;
}


static int
read_data(const tool_args_t *a, const char *path, aiserve_dataset_t *ds)
{
    aiserve_data_opts_t  o;
    char                 err[1024];

    aiserve_data_opts_default(&o);
    parse_format(a->format, &o.format);
    o.text_column = a->text_column;
    o.text_pair_column = a->text_pair_column;
    o.label_column = a->label_column;
    o.strict_iob2 = a->strict_iob2;
    if (aiserve_data_read(path, &o, ds, err, sizeof(err)) != 0) {
        fprintf(stderr, "aiserve-train: %s\n", err);
        return -1;
    }
    if (ds->warning[0] != '\0') {
        fprintf(stderr, "aiserve-train: warning: %s\n", ds->warning);
    }
    return 0;
}


static json_t *
meta_json(const tool_args_t *a)
{
    return json_pack("{s:s, s:s*, s:s, s:s, s:s*, s:s*, s:s*, s:s*, s:b}",
                     "train", a->train, "validation", a->validation,
                     "out", a->out, "task", a->task, "format", a->format,
                     "text_column", a->text_column,
                     "text_pair_column", a->text_pair_column,
                     "label_column", a->label_column,
                     "strict_iob2", a->strict_iob2);
}


static int
meta_read(json_t *m, tool_args_t *a)
{
    memset(a, 0, sizeof(*a));
    if (json_unpack(m, "{s:s, s?s, s:s, s:s, s?s, s?s, s?s, s?s, s:b}",
                    "train", &a->train, "validation", &a->validation,
                    "out", &a->out, "task", &a->task, "format", &a->format,
                    "text_column", &a->text_column,
                    "text_pair_column", &a->text_pair_column,
                    "label_column", &a->label_column,
                    "strict_iob2", &a->strict_iob2) != 0)
    {
        return -1;
    }
    return 0;
}


/* An absolute path for PATH (kept in the checkpoint, so that --resume
 * works from another directory), or PATH when it cannot be resolved. */
static const char *
absolute(const char *path, char *buf)
{
    return path != NULL && realpath(path, buf) != NULL ? buf : path;
}


static void
fmt_time(double s, char *buf, size_t len)
{
    long  t = s > 0 && s < 1e7 ? (long) (s + 0.5) : 0;

    if (t >= 3600) {
        snprintf(buf, len, "%ldh%02ldm", t / 3600, t / 60 % 60);
    } else {
        snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
    }
}


static void
print_json(json_t *o)
{
    char  *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(8));

    if (s != NULL) {
        printf("%s\n", s);
        fflush(stdout);
        free(s);
    }
    json_decref(o);
}


/* The headline figure of a report: accuracy (classes) or micro f1
 * (entities). */
static double
headline(const aiserve_trainer_eval_t *ev, const char **name)
{
    if (ev->report.kind == AISERVE_REPORT_SKLEARN) {
        *name = "accuracy";
        return ev->report.accuracy;
    }
    *name = "f1";
    return ev->report.micro.f1;
}


static void
show_progress(const aiserve_trainer_progress_t *p, int tty, double t0,
    uint64_t tokens0, size_t steps0, double tstart)
{
    double  el = now_s() - t0, rate, eta;
    char    eta_s[32], el_s[32], bar[31];
    size_t  i, fill;

    rate = el > 0 ? (double) (p->trained_tokens - tokens0) / el : 0;
    eta = p->step > steps0
          ? el / (double) (p->step - steps0)
            * (double) (p->total_steps - p->step) : 0;
    fmt_time(eta, eta_s, sizeof(eta_s));
    fmt_time(now_s() - tstart, el_s, sizeof(el_s));
    if (tty) {
        fill = p->total_steps ? 30 * p->step / p->total_steps : 0;
        for (i = 0; i < 30; i++) {
            bar[i] = i < fill ? '#' : '.';
        }
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] step %zu/%zu epoch %zu/%zu loss %.4f "
                "%.0f tok/s ETA %s   ", bar, p->step, p->total_steps,
                p->epoch + 1 > p->epochs ? p->epochs : p->epoch + 1,
                p->epochs, p->loss, rate, eta_s);
        fflush(stderr);
        return;
    }
    print_json(json_pack("{s:s, s:I, s:I, s:f, s:f, s:f, s:f, s:I, s:f, "
                         "s:f}",
                         "event", "step", "step", (json_int_t) p->step,
                         "total_steps", (json_int_t) p->total_steps,
                         "epoch", (double) p->epoch
                                  + (p->epoch_batches
                                     ? (double) p->epoch_batch
                                       / (double) p->epoch_batches : 0),
                         "loss", (double) p->loss,
                         "learning_rate", (double) p->learning_rate,
                         "grad_norm", p->grad_norm,
                         "trained_tokens", (json_int_t) p->trained_tokens,
                         "tokens_per_second", rate,
                         "elapsed_s", now_s() - tstart));
}


static void
show_eval(const aiserve_trainer_eval_t *ev, int tty)
{
    json_t      *o, *e;
    const char  *name = "accuracy";
    double       v = 0;

    if (ev->has_report) {
        v = headline(ev, &name);
    }
    if (tty) {
        fprintf(stderr, "\n");
        printf("epoch %zu: eval_loss %.4f", ev->epoch, ev->loss);
        if (ev->has_report) {
            printf(" %s %.4f", name, v);
        }
        printf(" (%zu examples)\n", ev->examples);
        fflush(stdout);
        return;
    }
    o = json_pack("{s:s}", "event", "eval");
    e = aiserve_trainer_eval_json(ev);
    if (o != NULL && e != NULL && json_object_update(o, e) == 0) {
        print_json(o);
        o = NULL;
    }
    json_decref(o);
    json_decref(e);
}


static int
write_reports(const aiserve_trainer_eval_t *ev, const char *out)
{
    json_t  *o;
    char     path[4096], *text;
    FILE    *f;
    int      rc = 0;

    o = aiserve_trainer_eval_json(ev);
    snprintf(path, sizeof(path), "%s/eval_results.json", out);
    if (o == NULL || json_dump_file(o, path, JSON_INDENT(2)) != 0) {
        fprintf(stderr, "aiserve-train: %s: cannot write\n", path);
        rc = -1;
    }
    json_decref(o);
    if (!ev->has_report) {
        return rc;
    }
    text = aiserve_report_text(&ev->report, 4);
    snprintf(path, sizeof(path), "%s/eval_report.txt", out);
    f = fopen(path, "w");
    if (text == NULL || f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "aiserve-train: %s: cannot write\n", path);
        rc = -1;
    }
    free(text);
    return rc;
}


static int
parse_targets(char *s, unsigned *targets)
{
    char  *tok, *save = NULL;

    *targets = 0;
    for (tok = strtok_r(s, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save))
    {
        if (strcmp(tok, "query") == 0) {
            *targets |= AISERVE_LORA_QUERY;
        } else if (strcmp(tok, "key") == 0) {
            *targets |= AISERVE_LORA_KEY;
        } else if (strcmp(tok, "value") == 0) {
            *targets |= AISERVE_LORA_VALUE;
        } else {
            return -1;
        }
    }
    return *targets ? 0 : -1;
}


/* A number option's value, or exit with a message naming the option. */
static double
num_arg(const char *opt, const char *v, double lo, double hi)
{
    char    *end;
    double   d;

    errno = 0;
    d = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !(d >= lo && d <= hi)) {
        fprintf(stderr, "aiserve-train: %s: invalid value \"%s\"\n", opt, v);
        exit(2);
    }
    return d;
}


int
main(int argc, char **argv)
{
    aiserve_trainer_opts_t             o;
    aiserve_trainer_t                 *tr = NULL;
    aiserve_dataset_t                  train, valid;
    const aiserve_trainer_progress_t  *p;
    const aiserve_trainer_eval_t      *ev;
    tool_args_t                        a;
    aiserve_data_format_e              fmt;
    json_t                            *ckpt = NULL, *meta;
    const char                        *model = NULL, *mode = "full";
    const char                        *resume = NULL, *problem = NULL;
    const char                        *ner_mode = NULL;
    const char                        *dtype = NULL;
    const char                        *resume_other = NULL;
    char                               err[1024], ckdir[PATH_MAX];
    char                               abs_train[PATH_MAX];
    char                               abs_valid[PATH_MAX];
    char                               abs_out[PATH_MAX];
    char                               abs_model[PATH_MAX];
    char                              *targets = NULL;
    double                             t0, tstart;
    uint64_t                           tokens0;
    size_t                             steps0, logging = 10, last_log = 0;
    int                                rc = 1, step_rc, force_json = 0, tty;
    int                                i, have_valid = 0, nodrop = 0;
    int                                was_features;
    struct sigaction                   sa;
    struct stat                        st;

    /* the numeric options, applied over the mode's defaults */
    double  epochs = -1, lr = -1, bt = -1, acc = -1, warm = -1, wr = -1;
    double  wd = -1, mgn = -1, ml = -1, seed = -1, threads = -1;
    double  lr_r = -1, lr_a = -1, lr_d = -1, v = 0;

    memset(&a, 0, sizeof(a));
    memset(&train, 0, sizeof(train));
    memset(&valid, 0, sizeof(valid));
    for (i = 1; i < argc; i++) {
        const char  *k = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

        if (resume_other == NULL && strcmp(k, "--json") != 0
            && strcmp(k, "--logging-steps") != 0
            && strcmp(k, "--resume") != 0)
        {
            resume_other = k;
        }
        if (strcmp(k, "-h") == 0 || strcmp(k, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(k, "--json") == 0) {
            force_json = 1;
            continue;
        } else if (strcmp(k, "--no-dropout") == 0) {
            nodrop = 1;
            continue;
        } else if (strcmp(k, "--strict-iob2") == 0) {
            a.strict_iob2 = 1;
            continue;
        }
        if (val == NULL || strncmp(k, "--", 2) != 0) {
            fprintf(stderr, "aiserve-train: %s: %s\n", k,
                    strncmp(k, "--", 2) == 0 ? "a value expected"
                                             : "unexpected argument");
            usage(stderr);
            return 2;
        }
        i++;
#define NUM(name, var, lo, hi) \
        else if (strcmp(k, name) == 0) { var = num_arg(k, val, lo, hi); }
        if (strcmp(k, "--model") == 0) { model = val; }
        else if (strcmp(k, "--task") == 0) { a.task = val; }
        else if (strcmp(k, "--train") == 0) { a.train = val; }
        else if (strcmp(k, "--validation") == 0) { a.validation = val; }
        else if (strcmp(k, "--out") == 0) { a.out = val; }
        else if (strcmp(k, "--mode") == 0) { mode = val; }
        else if (strcmp(k, "--format") == 0) { a.format = val; }
        else if (strcmp(k, "--text-column") == 0) { a.text_column = val; }
        else if (strcmp(k, "--text-pair-column") == 0) {
            a.text_pair_column = val;
        }
        else if (strcmp(k, "--label-column") == 0) { a.label_column = val; }
        else if (strcmp(k, "--problem-type") == 0) { problem = val; }
        else if (strcmp(k, "--ner-mode") == 0) { ner_mode = val; }
        else if (strcmp(k, "--dtype") == 0) { dtype = val; }
        else if (strcmp(k, "--lora-targets") == 0) { targets = argv[i]; }
        else if (strcmp(k, "--resume") == 0) { resume = val; }
        NUM("--epochs", epochs, 1, 1e6)
        NUM("--learning-rate", lr, 1e-12, 10)
        NUM("--batch-tokens", bt, 1, 1e9)
        NUM("--gradient-accumulation-steps", acc, 1, 1e6)
        NUM("--warmup", warm, 0, 1e9)
        NUM("--warmup-ratio", wr, 0, 1)
        NUM("--weight-decay", wd, 0, 10)
        NUM("--max-grad-norm", mgn, 0, 1e9)
        NUM("--max-length", ml, 0, 1e6)
        NUM("--seed", seed, 0, 1.8e19)
        NUM("--threads", threads, 1, 64)
        NUM("--lora-r", lr_r, 1, 4096)
        NUM("--lora-alpha", lr_a, 1e-6, 1e6)
        NUM("--lora-dropout", lr_d, 0, 0.999)
        NUM("--logging-steps", v, 1, 1e9)
        else {
            fprintf(stderr, "aiserve-train: unknown option %s\n", k);
            usage(stderr);
            return 2;
        }
#undef NUM
        if (strcmp(k, "--logging-steps") == 0) {
            logging = (size_t) v;
        }
    }

    if (resume != NULL) {
        if (resume_other != NULL) {
            fprintf(stderr, "aiserve-train: --resume takes the run's "
                    "options from the checkpoint; only --json and "
                    "--logging-steps may go with it, not %s\n",
                    resume_other);
            return 2;
        }
        ckpt = aiserve_trainer_read_checkpoint(resume, &o, err, sizeof(err));
        if (ckpt == NULL) {
            fprintf(stderr, "aiserve-train: %s\n", err);
            return 1;
        }
        if (meta_read(json_object_get(ckpt, "meta"), &a) != 0) {
            fprintf(stderr, "aiserve-train: %s/trainer.json: field \"meta\": "
                    "not written by aiserve-train\n", resume);
            goto done;
        }
    } else {
        if (model == NULL || a.task == NULL || a.train == NULL
            || a.out == NULL)
        {
            fprintf(stderr, "aiserve-train: --model, --task, --train and "
                    "--out are required\n");
            usage(stderr);
            return 2;
        }
        if (strcmp(mode, "full") == 0) {
            aiserve_trainer_opts_defaults(&o, AISERVE_TRAIN_FULL);
        } else if (strcmp(mode, "head") == 0) {
            aiserve_trainer_opts_defaults(&o, AISERVE_TRAIN_HEAD);
        } else if (strcmp(mode, "lora") == 0) {
            aiserve_trainer_opts_defaults(&o, AISERVE_TRAIN_LORA);
        } else {
            fprintf(stderr, "aiserve-train: --mode: \"%s\" is not full, head "
                    "or lora\n", mode);
            return 2;
        }
        if (strcmp(a.task, "classify") != 0 && strcmp(a.task, "ner") != 0) {
            fprintf(stderr, "aiserve-train: --task: \"%s\" is not classify "
                    "or ner\n", a.task);
            return 2;
        }
        if (parse_format(a.format, &fmt) != 0) {
            fprintf(stderr, "aiserve-train: --format: \"%s\" is not jsonl, "
                    "csv or conll\n", a.format);
            return 2;
        }
        if (targets != NULL && parse_targets(targets, &o.lora_targets) != 0) {
            fprintf(stderr, "aiserve-train: --lora-targets: query, key or "
                    "value expected\n");
            return 2;
        }
        if (ner_mode != NULL) {
            if (strcmp(ner_mode, "strict") != 0
                && strcmp(ner_mode, "default") != 0)
            {
                fprintf(stderr, "aiserve-train: --ner-mode: default or "
                        "strict expected\n");
                return 2;
            }
            o.ner_mode = strcmp(ner_mode, "strict") == 0
                         ? AISERVE_CHUNK_IOB2 : AISERVE_CHUNK_CONLL;
        }
        if (dtype != NULL) {
            if (strcmp(dtype, "fp32") != 0 && strcmp(dtype, "bf16") != 0
                && strcmp(dtype, "auto") != 0)
            {
                fprintf(stderr, "aiserve-train: --dtype: \"%s\" is not fp32, "
                        "bf16 or auto\n", dtype);
                return 2;
            }
            o.dtype = strcmp(dtype, "bf16") == 0 ? AISERVE_DTYPE_BF16
                      : strcmp(dtype, "auto") == 0 ? AISERVE_DTYPE_AUTO
                      : AISERVE_DTYPE_FP32;
        }
#define SET(var, field, type) if (var >= 0) { o.field = (type) var; }
        SET(epochs, epochs, size_t);
        SET(lr, learning_rate, float);
        SET(bt, batch_tokens, size_t);
        SET(acc, gradient_accumulation_steps, size_t);
        SET(warm, warmup_steps, size_t);
        SET(wr, warmup_ratio, float);
        SET(wd, weight_decay, float);
        SET(mgn, max_grad_norm, float);
        SET(ml, max_length, size_t);
        SET(seed, seed, uint64_t);
        SET(threads, threads, int);
        SET(lr_r, lora_r, size_t);
        SET(lr_a, lora_alpha, float);
        SET(lr_d, lora_dropout, float);
#undef SET
        o.dropout = !nodrop;
        o.model_dir = absolute(model, abs_model);
        a.train = absolute(a.train, abs_train);
        a.validation = absolute(a.validation, abs_valid);
        if (mkdir(a.out, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "aiserve-train: %s: mkdir: %s\n", a.out,
                    strerror(errno));
            return 1;
        }
        /* before training, not after it: the run would be lost */
        if (stat(a.out, &st) != 0 || !S_ISDIR(st.st_mode)
            || access(a.out, W_OK | X_OK) != 0)
        {
            fprintf(stderr, "aiserve-train: --out %s: %s\n", a.out,
                    stat(a.out, &st) == 0 && !S_ISDIR(st.st_mode)
                    ? "not a directory" : "not writable");
            return 1;
        }
        a.out = absolute(a.out, abs_out);
    }

    if (read_data(&a, a.train, &train) != 0
        || (a.validation != NULL
            && (have_valid = 1, read_data(&a, a.validation, &valid)) != 0))
    {
        goto done;
    }
    if ((strcmp(a.task, "ner") == 0)
        != (train.kind == AISERVE_LABELS_TAGS
            || train.kind == AISERVE_LABELS_SPANS))
    {
        fprintf(stderr, "aiserve-train: %s: --task %s, but the file holds %s\n",
                a.train, a.task, strcmp(a.task, "ner") == 0
                ? "class labels (--task classify)"
                : "tags or spans (--task ner)");
        goto done;
    }
    if (problem != NULL
        && strcmp(problem, train.kind == AISERVE_LABELS_MULTI
                           ? "multi_label_classification"
                           : train.kind == AISERVE_LABELS_REGRESSION
                           ? "regression" : "single_label_classification")
           != 0)
    {
        fprintf(stderr, "aiserve-train: %s: --problem-type %s does not match "
                "the file's field \"%s\" (%s)\n", a.train, problem,
                train.label_field,
                train.kind == AISERVE_LABELS_MULTI ? "lists of labels"
                : train.kind == AISERVE_LABELS_REGRESSION ? "numbers"
                : "one label each");
        goto done;
    }

    tr = aiserve_trainer_create(&o, &train, have_valid ? &valid : NULL, err,
                                sizeof(err));
    aiserve_dataset_free(&train);
    aiserve_dataset_free(&valid);
    if (tr == NULL) {
        fprintf(stderr, "aiserve-train: %s\n", err);
        goto done;
    }
    if (resume != NULL
        && aiserve_trainer_restore(tr, resume, err, sizeof(err)) != 0)
    {
        fprintf(stderr, "aiserve-train: %s\n", err);
        goto done;
    }
    snprintf(ckdir, sizeof(ckdir), "%s/checkpoint", a.out);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    tty = !force_json && isatty(STDOUT_FILENO) && isatty(STDERR_FILENO);
    p = aiserve_trainer_progress(tr);
    tstart = t0 = now_s();
    tokens0 = p->trained_tokens;
    steps0 = p->step;
    last_log = p->step;
    if (!tty) {
        print_json(json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:f, "
                             "s:I, s:b, s:s}",
                             "event", "start", "model", o.model_dir,
                             "mode", o.mode == AISERVE_TRAIN_FULL ? "full"
                                     : o.mode == AISERVE_TRAIN_HEAD ? "head"
                                     : "lora",
                             "epochs", (json_int_t) o.epochs,
                             "total_steps", (json_int_t) p->total_steps,
                             "step", (json_int_t) p->step,
                             "batch_tokens", (json_int_t) o.batch_tokens,
                             "learning_rate", (double) o.learning_rate,
                             "total_tokens", (json_int_t) p->total_tokens,
                             "resumed", resume != NULL,
                             "dtype", aiserve_dtype_name(aiserve_train_dtype(
                                 aiserve_trainer_engine(tr)))));
    }

    do {
        if (interrupted) {
            meta = meta_json(&a);
            if (aiserve_trainer_save(tr, ckdir, meta, err, sizeof(err))
                != 0)
            {
                fprintf(stderr, "\naiserve-train: interrupted, and the "
                        "checkpoint failed: %s\n", err);
                json_decref(meta);
                goto done;
            }
            json_decref(meta);
            if (tty) {
                fprintf(stderr, "\ninterrupted at step %zu: checkpoint in "
                        "%s; continue with\n  %s --resume %s\n", p->step,
                        ckdir, argv[0], ckdir);
            } else {
                print_json(json_pack("{s:s, s:I, s:s}", "event",
                                     "interrupted", "step",
                                     (json_int_t) p->step, "checkpoint",
                                     ckdir));
            }
            rc = 130;
            goto done;
        }
        was_features = p->phase == AISERVE_TRAINER_FEATURES;
        step_rc = aiserve_trainer_step(tr, 1, err, sizeof(err));
        if (step_rc < 0) {
            fprintf(stderr, "\naiserve-train: %s\n", err);
            goto done;
        }
        if (was_features) {
            if (tty) {
                fprintf(stderr, "\rfeatures %zu/%zu", p->features_done,
                        p->features_total);
                if (p->features_done == p->features_total) {
                    fprintf(stderr, " in %.1f s\n", now_s() - tstart);
                }
            } else if (p->features_done == p->features_total) {
                print_json(json_pack("{s:s, s:I, s:f}", "event", "features",
                                     "examples",
                                     (json_int_t) p->features_total,
                                     "elapsed_s", now_s() - tstart));
            }
            /* rates count training alone */
            t0 = now_s();
            continue;
        }
        if (p->step != last_log
            && (p->step % logging == 0 || p->finished_epoch
                || step_rc == 0 || tty))
        {
            show_progress(p, tty, t0, tokens0, steps0, tstart);
            last_log = p->step;
        }
        if (p->finished_epoch && !tty) {
            print_json(json_pack("{s:s, s:I, s:I, s:f}", "event", "epoch",
                                 "epoch", (json_int_t) p->finished_epoch,
                                 "step", (json_int_t) p->step,
                                 "train_loss", p->epoch_loss));
        }
        ev = aiserve_trainer_last_eval(tr);
        if (p->evaluated_epoch && ev != NULL) {
            show_eval(ev, tty);
        }
    } while (step_rc > 0);

    if (aiserve_trainer_write_model(tr, a.out, err, sizeof(err)) != 0) {
        fprintf(stderr, "\naiserve-train: %s\n", err);
        goto done;
    }
    ev = aiserve_trainer_last_eval(tr);
    if (ev != NULL && write_reports(ev, a.out) != 0) {
        goto done;
    }
    aiserve_trainer_remove_checkpoint(ckdir);
    if (tty) {
        char  el[32];

        fmt_time(now_s() - tstart, el, sizeof(el));
        fprintf(stderr, "\n");
        if (ev != NULL && ev->has_report) {
            char  *text = aiserve_report_text(&ev->report, 4);

            if (text != NULL) {
                printf("\n%s\n", text);
                free(text);
            }
        }
        printf("done in %s: %zu steps, trained_tokens %llu; model in %s\n",
               el, p->step, (unsigned long long) p->trained_tokens, a.out);
    } else {
        print_json(json_pack("{s:s, s:I, s:I, s:f, s:s}", "event", "done",
                             "step", (json_int_t) p->step,
                             "trained_tokens",
                             (json_int_t) p->trained_tokens,
                             "train_runtime_s", now_s() - tstart,
                             "out", a.out));
    }
    rc = 0;

done:
    aiserve_trainer_free(tr);
    aiserve_dataset_free(&train);
    aiserve_dataset_free(&valid);
    json_decref(ckpt);
    return rc;
}
