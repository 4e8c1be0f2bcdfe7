/*
 * bench-train-engine: times whole training steps of aiserve's training
 * engine (aiserve_train.h) on Banking77; the engine side of
 * tools/bench-train (which runs the PyTorch side and prints the table).
 *
 *   bench-train-engine full|lora MODEL_DIR TRAIN_CSV THREADS WARMUP
 *       [fp32|bf16] < batches.jsonl
 *   bench-train-engine head MODEL_DIR TRAIN_CSV THREADS TEST_CSV EPOCHS
 *       LEARNING_RATE BATCH SEED
 *
 * full, lora: each input line {"rows": [i, ...]} is one batch, the
 * examples of TRAIN_CSV (column "text", label column "category", 0-based
 * in file order) tokenized by the project's tokenizer and packed; the
 * first WARMUP batches are steps that are not timed.  A step is what
 * transformers' Trainer does per batch: forward with dropout on, the
 * loss, backward, clipping to 1.0, AdamW with the linear schedule
 * (learning rate 5e-5 full, 5e-4 lora, the trainer's defaults), zeroing
 * the gradients; in bf16 (aiserve_train_opts_t.dtype, mixed precision)
 * where the last argument says so.  Prints one JSON object: steps, tokens and seconds of
 * the timed steps, median step time, first and last loss, parameters,
 * trainable parameters, optimiser state bytes, peak RSS, and the CPU
 * seconds of the timed steps (all threads; a figure the machine's other
 * load disturbs less than the wall clock).
 *
 * head: Banking77 end to end, as head mode trains it: load, read and
 * featurize TRAIN_CSV, the frozen encoder's features of every example
 * (BATCH sequences a pass), then EPOCHS epochs of the head (pooler and
 * classifier) on them, shuffled per epoch, BATCH sequences a step, AdamW
 * at LEARNING_RATE with the linear schedule; wall time of each phase.
 * Then, not timed with the training, the test accuracy on TEST_CSV.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include <jansson.h>

#include "aiserve_data.h"
#include "aiserve_optim.h"
#include "aiserve_train.h"
#include "bench.h"


typedef struct {
    aiserve_tok_t        *tok;
    aiserve_dataset_t     ds;
    aiserve_label_set_t   set;
    aiserve_features_t   *f;       /* featurized examples, NULL: not yet */
} bench_data_t;


static long
peak_rss_kb(void)
{
    struct rusage  ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}


/* user and system CPU seconds of the process so far, every thread */
static double
cpu_s(void)
{
    struct rusage  ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double) ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6
           + (double) ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}


static void
die(const char *what, const char *err)
{
    fprintf(stderr, "bench-train-engine: %s: %s\n", what, err);
    exit(1);
}


/* Reads PATH (Banking77's CSV: text, category) with the label set of
 * SET_FROM (NULL: its own) and featurizes every example. */
static void
data_load(bench_data_t *d, const char *model_dir, const char *path,
    const bench_data_t *set_from)
{
    aiserve_data_opts_t  o;
    char                 err[512];
    size_t               i;

    memset(d, 0, sizeof(*d));
    aiserve_data_opts_default(&o);
    o.label_column = "category";
    d->tok = aiserve_tok_load(model_dir, err, sizeof(err));
    if (d->tok == NULL) {
        die(model_dir, err);
    }
    if (aiserve_data_read(path, &o, &d->ds, err, sizeof(err)) != 0) {
        die(path, err);
    }
    if (set_from == NULL
        && aiserve_labels_build(&d->ds, &d->set, err, sizeof(err)) != 0)
    {
        die(path, err);
    }
    d->f = calloc(d->ds.n, sizeof(aiserve_features_t));
    for (i = 0; i < d->ds.n; i++) {
        if (aiserve_featurize(d->tok, &d->ds, i,
                              set_from ? &set_from->set : &d->set, 128,
                              &d->f[i], err, sizeof(err)) != 0)
        {
            die(path, err);
        }
    }
}


static void
data_free(bench_data_t *d)
{
    size_t  i;

    for (i = 0; d->f != NULL && i < d->ds.n; i++) {
        aiserve_features_free(&d->f[i]);
    }
    free(d->f);
    aiserve_labels_free(&d->set);
    aiserve_dataset_free(&d->ds);
    aiserve_tok_free(d->tok);
}


/* Packs examples ROWS[0 .. n) of D into B, with their class ids, in
 * buffers of the caller large enough for them. */
static size_t
pack(const bench_data_t *d, const size_t *rows, size_t n,
    aiserve_train_batch_t *b, int32_t *ids, size_t *lens, int32_t *labels)
{
    size_t  i, T = 0;

    for (i = 0; i < n; i++) {
        const aiserve_features_t  *f = &d->f[rows[i]];

        memcpy(ids + T, f->input_ids, f->n_tokens * sizeof(int32_t));
        lens[i] = f->n_tokens;
        labels[i] = f->label;
        T += f->n_tokens;
    }
    memset(b, 0, sizeof(*b));
    b->input_ids = ids;
    b->seq_lens = lens;
    b->n_seqs = n;
    b->label_ids = labels;
    return T;
}


/* The products' dtype of the full and lora runs (their last argument). */
static aiserve_dtype_e  bench_dtype = AISERVE_DTYPE_FP32;


static aiserve_train_t *
load(const char *model_dir, aiserve_train_mode_e mode, size_t num_labels,
    int threads)
{
    aiserve_train_opts_t  o;
    aiserve_train_t      *t;
    char                  err[512];

    aiserve_train_opts_defaults(&o);
    o.arch = AISERVE_ARCH_SEQUENCE_CLASSIFICATION;
    o.num_labels = num_labels;
    o.problem_type = AISERVE_PROBLEM_SINGLE_LABEL;
    o.seed = 42;
    o.threads = threads;
    o.mode = mode;
    o.dtype = bench_dtype;
    t = aiserve_train_load(model_dir, &o, err, sizeof(err));
    if (t == NULL) {
        die(model_dir, err);
    }
    aiserve_set_num_threads(threads);
    return t;
}


static size_t
trainable(const aiserve_train_t *t)
{
    size_t  i, n = 0;

    for (i = 0; i < aiserve_train_n_tensors(t); i++) {
        if (!aiserve_train_tensor(t, i)->frozen) {
            n += aiserve_train_tensor(t, i)->n;
        }
    }
    return n;
}


static int
bench_steps(aiserve_train_mode_e mode, const char *model_dir,
    const char *train_csv, int threads, size_t warmup)
{
    bench_data_t            d;
    aiserve_train_t        *t;
    aiserve_train_batch_t   b;
    aiserve_optim_config_t  c;
    json_t                 *j, *rows, *batches;
    json_error_t            jerr;
    char                   *line = NULL, err[512];
    size_t                  cap = 0, i, k, n, T, tokens = 0, steps = 0;
    size_t                 *idx, *lens;
    int32_t                *ids, *labels;
    double                  t0, c0, secs = 0, cpu = 0, *times;
    float                   loss, first_loss = 0, last_loss = 0;

    data_load(&d, model_dir, train_csv, NULL);
    t = load(model_dir, mode, d.set.n, threads);
    aiserve_train_set_dropout(t, 1, 42);

    batches = json_array();
    while (getline(&line, &cap, stdin) > 0) {
        j = json_loads(line, 0, &jerr);
        rows = json_object_get(j, "rows");
        if (!json_is_array(rows)) {
            die("stdin", "a line without \"rows\"");
        }
        json_array_append(batches, rows);
        json_decref(j);
    }
    free(line);
    n = json_array_size(batches);
    if (n <= warmup) {
        die("stdin", "no batch to time after the warm-up");
    }

    aiserve_optim_defaults(&c);
    c.learning_rate = mode == AISERVE_TRAIN_LORA ? 5e-4f : 5e-5f;
    c.total_steps = n;

    idx = malloc(4096 * sizeof(size_t));
    lens = malloc(4096 * sizeof(size_t));
    labels = malloc(4096 * sizeof(int32_t));
    ids = malloc(4096 * 128 * sizeof(int32_t));
    times = malloc(n * sizeof(double));

    for (k = 0; k < n; k++) {
        rows = json_array_get(batches, k);
        for (i = 0; i < json_array_size(rows) && i < 4096; i++) {
            idx[i] = (size_t) json_integer_value(json_array_get(rows, i));
            if (idx[i] >= d.ds.n) {
                die("stdin", "a row past the end of the training set");
            }
        }
        T = pack(&d, idx, i, &b, ids, lens, labels);

        t0 = bench_now();
        c0 = cpu_s();
        if (aiserve_train_forward(t, &b, &loss, err, sizeof(err)) != 0
            || aiserve_train_backward(t, 1.0f, err, sizeof(err)) != 0
            || aiserve_train_step(t, &c, NULL, NULL, err, sizeof(err)) != 0)
        {
            die("step", err);
        }
        if (k >= warmup) {
            times[steps] = bench_now() - t0;
            secs += times[steps];
            cpu += cpu_s() - c0;
            tokens += T;
            if (steps++ == 0) {
                first_loss = loss;
            }
            last_loss = loss;
        }
    }
    qsort(times, steps, sizeof(double), bench_cmp_double);

    printf("{\"steps\": %zu, \"tokens\": %zu, \"seconds\": %.6f, "
           "\"tokens_per_s\": %.1f, \"median_step_ms\": %.3f, "
           "\"cpu_s\": %.3f, "
           "\"first_loss\": %.6f, \"last_loss\": %.6f, \"params\": %zu, "
           "\"trainable\": %zu, \"optimizer_bytes\": %zu, "
           "\"max_rss_kb\": %ld}\n",
           steps, tokens, secs, (double) tokens / secs,
           times[steps / 2] * 1e3, cpu, first_loss, last_loss,
           aiserve_train_n_params(t), trainable(t),
           2 * trainable(t) * sizeof(float), peak_rss_kb());

    free(times);
    free(ids);
    free(labels);
    free(lens);
    free(idx);
    json_decref(batches);
    aiserve_train_free(t);
    data_free(&d);
    return 0;
}


/* splitmix64: the epochs' shuffling */
static uint64_t
next_u64(uint64_t *s)
{
    uint64_t  z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}


/* The encoder's features of every example of D, BATCH sequences a
 * pass, into a [d->ds.n, H] array. */
static float *
features(aiserve_train_t *t, const bench_data_t *d, size_t batch,
    size_t *idx, int32_t *ids, size_t *lens, int32_t *labels)
{
    aiserve_train_batch_t  b;
    size_t                 H = aiserve_train_info(t)->hidden_size, i, n;
    float                 *feats;
    char                   err[512];

    feats = malloc(d->ds.n * H * sizeof(float));
    for (i = 0; i < d->ds.n; i += n) {
        for (n = 0; n < batch && i + n < d->ds.n; n++) {
            idx[n] = i + n;
        }
        pack(d, idx, n, &b, ids, lens, labels);
        if (aiserve_train_features(t, &b, feats + i * H, err, sizeof(err))
            != 0)
        {
            die("features", err);
        }
    }
    return feats;
}


static int
bench_head(const char *model_dir, const char *train_csv, int threads,
    const char *test_csv, size_t epochs, float learning_rate, size_t batch,
    uint64_t seed)
{
    bench_data_t            d, dt;
    aiserve_train_t        *t;
    aiserve_train_batch_t   b;
    aiserve_optim_config_t  c;
    size_t                  H, C, i, j, e, n, steps, correct = 0;
    size_t                 *idx, *order, *lens;
    int32_t                *ids, *labels;
    float                  *feats, *bf, loss = 0;
    const float            *logits;
    double                  t0, t_load, t_feat, t_feats, t_train, t_eval,
                            c_train;
    char                    err[512];
    uint64_t                rng = seed;

    t0 = bench_now();
    data_load(&d, model_dir, train_csv, NULL);
    t_feat = bench_now();
    t = load(model_dir, AISERVE_TRAIN_HEAD, d.set.n, threads);
    t_load = bench_now();
    H = aiserve_train_info(t)->hidden_size;
    C = d.set.n;

    idx = malloc(batch * sizeof(size_t));
    order = malloc(d.ds.n * sizeof(size_t));
    lens = malloc(batch * sizeof(size_t));
    labels = malloc(batch * sizeof(int32_t));
    ids = malloc(batch * 128 * sizeof(int32_t));
    bf = malloc(batch * H * sizeof(float));

    feats = features(t, &d, batch, idx, ids, lens, labels);
    t_feats = bench_now();

    aiserve_optim_defaults(&c);
    c.learning_rate = learning_rate;
    steps = (d.ds.n + batch - 1) / batch;
    c.total_steps = epochs * steps;
    aiserve_train_set_dropout(t, 1, seed);
    for (i = 0; i < d.ds.n; i++) {
        order[i] = i;
    }
    for (e = 0; e < epochs; e++) {
        for (i = d.ds.n - 1; i > 0; i--) {
            j = (size_t) (next_u64(&rng) % (i + 1));
            n = order[i];
            order[i] = order[j];
            order[j] = n;
        }
        for (i = 0; i < d.ds.n; i += n) {
            for (n = 0; n < batch && i + n < d.ds.n; n++) {
                idx[n] = order[i + n];
                memcpy(bf + n * H, feats + idx[n] * H, H * sizeof(float));
            }
            pack(&d, idx, n, &b, ids, lens, labels);
            if (aiserve_train_head_forward(t, bf, &b, &loss, err,
                                           sizeof(err)) != 0
                || aiserve_train_backward(t, 1.0f, err, sizeof(err)) != 0
                || aiserve_train_step(t, &c, NULL, NULL, err, sizeof(err))
                   != 0)
            {
                die("head step", err);
            }
        }
    }
    t_train = bench_now();
    c_train = cpu_s();

    /* the test set, dropout off */
    data_load(&dt, model_dir, test_csv, &d);
    free(feats);
    feats = features(t, &dt, batch, idx, ids, lens, labels);
    aiserve_train_set_dropout(t, 0, seed);
    for (i = 0; i < dt.ds.n; i += n) {
        for (n = 0; n < batch && i + n < dt.ds.n; n++) {
            idx[n] = i + n;
        }
        pack(&dt, idx, n, &b, ids, lens, labels);
        b.label_ids = NULL;
        if (aiserve_train_head_forward(t, feats + i * H, &b, NULL, err,
                                       sizeof(err)) != 0)
        {
            die("test", err);
        }
        logits = aiserve_train_logits(t);
        for (j = 0; j < n; j++) {
            size_t  k, best = 0;

            for (k = 1; k < C; k++) {
                if (logits[j * C + k] > logits[j * C + best]) {
                    best = k;
                }
            }
            correct += (int32_t) best == labels[j];
        }
    }
    t_eval = bench_now();

    printf("{\"examples\": %zu, \"epochs\": %zu, \"steps\": %zu, "
           "\"read_featurize_s\": %.3f, \"load_s\": %.3f, "
           "\"features_s\": %.3f, \"head_train_s\": %.3f, "
           "\"total_s\": %.3f, \"total_cpu_s\": %.3f, "
           "\"last_loss\": %.6f, "
           "\"test_examples\": %zu, \"test_accuracy\": %.6f, "
           "\"test_s\": %.3f, \"trainable\": %zu, \"max_rss_kb\": %ld}\n",
           d.ds.n, epochs, epochs * steps, t_feat - t0, t_load - t_feat,
           t_feats - t_load, t_train - t_feats, t_train - t0, c_train, loss,
           dt.ds.n, (double) correct / (double) dt.ds.n, t_eval - t_train,
           trainable(t), peak_rss_kb());

    free(feats);
    free(bf);
    free(ids);
    free(labels);
    free(lens);
    free(order);
    free(idx);
    aiserve_train_free(t);
    data_free(&dt);
    data_free(&d);
    return 0;
}


int
main(int argc, char **argv)
{
    if ((argc == 6 || (argc == 7 && (strcmp(argv[6], "fp32") == 0
                                     || strcmp(argv[6], "bf16") == 0)))
        && (strcmp(argv[1], "full") == 0 || strcmp(argv[1], "lora") == 0))
    {
        if (argc == 7 && strcmp(argv[6], "bf16") == 0) {
            bench_dtype = AISERVE_DTYPE_BF16;
        }
        return bench_steps(strcmp(argv[1], "full") == 0 ? AISERVE_TRAIN_FULL
                                                        : AISERVE_TRAIN_LORA,
                           argv[2], argv[3], atoi(argv[4]),
                           (size_t) atol(argv[5]));
    }
    if (argc == 10 && strcmp(argv[1], "head") == 0) {
        return bench_head(argv[2], argv[3], atoi(argv[4]), argv[5],
                          (size_t) atol(argv[6]), (float) atof(argv[7]),
                          (size_t) atol(argv[8]),
                          (uint64_t) strtoull(argv[9], NULL, 10));
    }
    fprintf(stderr,
            "usage: bench-train-engine full|lora MODEL_DIR TRAIN_CSV "
            "THREADS WARMUP [fp32|bf16] < batches.jsonl\n"
            "       bench-train-engine head MODEL_DIR TRAIN_CSV THREADS "
            "TEST_CSV EPOCHS LEARNING_RATE BATCH SEED\n");
    return 2;
}
