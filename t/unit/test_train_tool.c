/*
 * tools/aiserve-train end to end on the tiny models: its JSON lines
 * (start, step, epoch, eval, done) parsed; the output directory (full,
 * head) loads and serves; eval_results.json and eval_report.txt written;
 * SIGINT mid-run writes a checkpoint (status 130) that --resume turns
 * into the very model.safetensors an uninterrupted run writes; --help;
 * --dtype fp32, bf16 and auto; errors name the file, line and field.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "aiserve_gemm.h"
#include "aiserve_model.h"

#define TOOL     "tools/aiserve-train"
#define S_TRAIN  "t/data/train/sentiment-train.jsonl"
#define S_VALID  "t/data/train/sentiment-valid.jsonl"

static char  tmpdir[] = "/tmp/aiserve-test-train-tool-XXXXXX";

typedef struct {
    int      status;          /* exit status, or 128 + signal */
    json_t  *lines;           /* the JSON lines of stdout */
    char     err[4096];       /* stderr */
    int      bad_lines;
} result_t;


/*
 * Runs the tool with ARGV; with SIGINT_AFTER > 0, sends it SIGINT after
 * that many "step" lines.
 */
static void
run_tool(char *const argv[], int sigint_after, result_t *r)
{
    int      out[2], errp[2], steps = 0, st;
    pid_t    pid;
    FILE    *f;
    char     line[65536];
    ssize_t  n;
    size_t   got = 0;

    memset(r, 0, sizeof(*r));
    r->lines = json_array();
    if (pipe(out) != 0 || pipe(errp) != 0) {
        r->status = -1;
        return;
    }
    pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(errp[1], 2);
        close(out[0]);
        close(errp[0]);
        execv(TOOL, argv);
        _exit(127);
    }
    close(out[1]);
    close(errp[1]);
    f = fdopen(out[0], "r");
    while (fgets(line, sizeof(line), f) != NULL) {
        json_t  *o = json_loads(line, 0, NULL);

        if (o == NULL) {
            r->bad_lines++;
            continue;
        }
        json_array_append_new(r->lines, o);
        if (sigint_after > 0
            && strcmp(json_string_value(json_object_get(o, "event")), "step")
               == 0
            && ++steps == sigint_after)
        {
            kill(pid, SIGINT);
        }
    }
    fclose(f);
    while ((n = read(errp[0], r->err + got, sizeof(r->err) - 1 - got)) > 0) {
        got += (size_t) n;
    }
    r->err[got] = '\0';
    close(errp[0]);
    waitpid(pid, &st, 0);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}


/* The lines of event EV. */
static size_t
count(const result_t *r, const char *ev, json_t **last)
{
    size_t   i, n = 0;
    json_t  *o;

    json_array_foreach(r->lines, i, o) {
        if (strcmp(json_string_value(json_object_get(o, "event")), ev) == 0) {
            n++;
            if (last != NULL) {
                *last = o;
            }
        }
    }
    return n;
}


static char *
slurp(const char *path, size_t *len)
{
    FILE  *f = fopen(path, "rb");
    char  *buf = NULL;
    long   n;

    if (f == NULL) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0
        && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc(n + 1)) != NULL
        && fread(buf, 1, n, f) == (size_t) n)
    {
        buf[n] = '\0';
        *len = (size_t) n;
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}


static int
same_file(const char *a, const char *b)
{
    size_t  la = 0, lb = 0;
    char   *x = slurp(a, &la), *y = slurp(b, &lb);
    int     same = x != NULL && y != NULL && la == lb
                   && memcmp(x, y, la) == 0;

    free(x);
    free(y);
    return same;
}


static void
test_full(void)
{
    char           out[256], path[300], *text;
    json_t        *last = NULL, *o;
    result_t       r;
    aiserve_model_t *m;
    size_t         len;
    char           errbuf[512];
    char          *argv[] = { TOOL, "--model", "models/tiny-bert-seq-cls",
                              "--task", "classify", "--train", S_TRAIN,
                              "--validation", S_VALID, "--out", out,
                              "--epochs", "3", "--batch-tokens", "64",
                              "--learning-rate", "1e-3", "--logging-steps",
                              "2", NULL };

    snprintf(out, sizeof(out), "%s/full", tmpdir);
    run_tool(argv, 0, &r);
    tap_ok(r.status == 0 && r.bad_lines == 0, "full: exit 0, every line "
           "JSON (%d; %s)", r.status, r.err);
    tap_ok(count(&r, "start", &o) == 1
           && json_integer_value(json_object_get(o, "total_steps")) == 18,
           "full: a start line with total_steps 18");
    tap_ok(count(&r, "step", &last) >= 9 && last != NULL
           && json_integer_value(json_object_get(last, "step")) == 18
           && json_real_value(json_object_get(last, "loss")) > 0
           && json_is_number(json_object_get(last, "tokens_per_second"))
           && json_is_number(json_object_get(last, "learning_rate")),
           "full: step lines with step, loss, learning_rate, tokens/s");
    tap_ok(count(&r, "epoch", NULL) == 3, "full: an epoch line per epoch");
    tap_ok(count(&r, "eval", &o) == 3
           && json_is_number(json_object_get(o, "accuracy"))
           && json_is_object(json_object_get(o, "report"))
           && json_integer_value(json_object_get(o, "epoch")) == 3,
           "full: an evaluation after each epoch, with the report");
    tap_ok(count(&r, "done", &o) == 1
           && json_integer_value(json_object_get(o, "trained_tokens")) > 0,
           "full: a done line with trained_tokens");
    json_decref(r.lines);

    snprintf(path, sizeof(path), "%s/eval_report.txt", out);
    text = slurp(path, &len);
    tap_ok(text != NULL && strstr(text, "    accuracy") != NULL
           && strstr(text, "negative") != NULL,
           "full: eval_report.txt is the sklearn table");
    free(text);
    snprintf(path, sizeof(path), "%s/eval_results.json", out);
    o = json_load_file(path, 0, NULL);
    tap_ok(o != NULL && json_is_number(json_object_get(o, "eval_loss"))
           && json_is_object(json_object_get(o, "confusion_matrix")),
           "full: eval_results.json");
    json_decref(o);
    snprintf(path, sizeof(path), "%s/checkpoint", out);
    tap_ok(access(path, F_OK) != 0, "full: no checkpoint left after a run "
           "that finished");
    m = aiserve_model_load(out, errbuf, sizeof(errbuf));
    tap_ok(m != NULL && aiserve_model_info(m)->num_labels == 2
           && strcmp(aiserve_model_info(m)->id2label[1], "positive") == 0,
           "full: the output directory loads (%s)", m ? "ok" : errbuf);
    aiserve_model_free(m);
}


static void
test_interrupt(void)
{
    char           out_a[256], out_b[256], ck[300], pa[400], pb[400];
    result_t       r;
    json_t        *o = NULL;
    int            ok;
    char          *argv_a[] = { TOOL, "--model", "models/tiny-st-cls",
                                "--task", "classify", "--train", S_TRAIN,
                                "--validation", S_VALID, "--out", out_a,
                                "--mode", "lora", "--epochs", "150",
                                "--batch-tokens", "64", "--threads", "2",
                                "--logging-steps", "1", "--seed", "5", NULL };
    char          *argv_b[sizeof(argv_a) / sizeof(argv_a[0])];
    char          *argv_r[] = { TOOL, "--resume", ck, NULL };
    size_t         i;

    snprintf(out_a, sizeof(out_a), "%s/lora-a", tmpdir);
    snprintf(out_b, sizeof(out_b), "%s/lora-b", tmpdir);
    snprintf(ck, sizeof(ck), "%s/checkpoint", out_b);
    run_tool(argv_a, 0, &r);
    tap_ok(r.status == 0, "interrupt: the uninterrupted run (%s)", r.err);
    json_decref(r.lines);

    for (i = 0; i < sizeof(argv_a) / sizeof(argv_a[0]); i++) {
        argv_b[i] = argv_a[i] == out_a ? out_b : argv_a[i];
    }
    run_tool(argv_b, 20, &r);
    ok = tap_ok(r.status == 130 && count(&r, "interrupted", &o) == 1
                && count(&r, "done", NULL) == 0,
                "interrupt: SIGINT exits 130 with an interrupted line (%d; "
                "%s)", r.status, r.err);
    if (ok) {
        tap_ok(strcmp(json_string_value(json_object_get(o, "checkpoint")), ck)
               == 0 && json_integer_value(json_object_get(o, "step")) >= 20
               && json_integer_value(json_object_get(o, "step")) < 900,
               "interrupt: checkpoint at step %lld in %s",
               (long long) json_integer_value(json_object_get(o, "step")),
               ck);
    }
    json_decref(r.lines);
    snprintf(pa, sizeof(pa), "%s/trainer.json", ck);
    tap_ok(access(pa, R_OK) == 0, "interrupt: trainer.json written");

    run_tool(argv_r, 0, &r);
    tap_ok(r.status == 0 && count(&r, "start", &o) == 1
           && json_is_true(json_object_get(o, "resumed"))
           && json_integer_value(json_object_get(o, "step")) >= 20
           && count(&r, "done", NULL) == 1,
           "interrupt: --resume continues from the checkpoint to the end "
           "(%s)", r.err);
    json_decref(r.lines);
    snprintf(pa, sizeof(pa), "%s/adapter_model.safetensors", out_a);
    snprintf(pb, sizeof(pb), "%s/adapter_model.safetensors", out_b);
    tap_ok(same_file(pa, pb), "interrupt: the resumed run's adapter is the "
           "uninterrupted run's, byte for byte");
    snprintf(pa, sizeof(pa), "%s/eval_results.json", out_a);
    snprintf(pb, sizeof(pb), "%s/eval_results.json", out_b);
    tap_ok(same_file(pa, pb), "interrupt: and so is its evaluation");
    tap_ok(access(ck, F_OK) != 0, "interrupt: the checkpoint is removed "
           "once the run is done");
}


static void
test_head_ner(void)
{
    char              out[256], errbuf[512];
    result_t          r;
    json_t           *o = NULL;
    aiserve_model_t  *m;
    char             *argv[] = { TOOL, "--model", "models/tiny-st-cls",
                                 "--task", "ner", "--train",
                                 "t/data/train/ner.conll", "--validation",
                                 "t/data/train/ner.conll", "--out", out,
                                 "--mode", "head", "--epochs", "2", NULL };

    snprintf(out, sizeof(out), "%s/ner-head", tmpdir);
    run_tool(argv, 0, &r);
    tap_ok(r.status == 0 && count(&r, "features", NULL) == 1
           && count(&r, "eval", &o) == 2
           && json_is_number(json_object_get(o, "f1"))
           && json_is_object(json_object_get(json_object_get(o, "report"),
                                             "micro avg")),
           "head ner: features once, seqeval reports (%s)", r.err);
    json_decref(r.lines);
    m = aiserve_model_load(out, errbuf, sizeof(errbuf));
    tap_ok(m != NULL && aiserve_model_info(m)->arch
                        == AISERVE_ARCH_TOKEN_CLASSIFICATION,
           "head ner: the head directory loads over its base (%s)",
           m ? "ok" : errbuf);
    aiserve_model_free(m);
}


/*
 * The "epoch" of a step line is the epochs done, as a fraction: the
 * step that ends an epoch says that epoch exactly (1.0, 2.0), with or
 * without a validation file, and never more than --epochs.
 */
static void
test_epoch_fraction(void)
{
    char      out[256];
    result_t  r;
    json_t   *o;
    size_t    i, steps = 0, bad = 0;
    double    e, prev = 0, last = 0;
    char     *argv[] = { TOOL, "--model", "models/tiny-bert-seq-cls",
                         "--task", "classify", "--train", S_TRAIN,
                         "--out", out, "--epochs", "2", "--batch-tokens",
                         "64", "--logging-steps", "1", NULL };

    snprintf(out, sizeof(out), "%s/epochs", tmpdir);
    run_tool(argv, 0, &r);
    json_array_foreach(r.lines, i, o) {
        if (strcmp(json_string_value(json_object_get(o, "event")), "step")
            != 0)
        {
            continue;
        }
        e = json_number_value(json_object_get(o, "epoch"));
        steps++;
        if (e <= prev || e > 2.0 + 1e-9) {
            bad++;
        }
        prev = e;
        last = e;
    }
    tap_ok(r.status == 0 && steps >= 4 && bad == 0 && last == 2.0,
           "epoch fraction: %zu step lines rising to 2.0 (%zu out of "
           "order or past --epochs, the last %g) (%s)", steps, bad, last,
           r.err);
    json_decref(r.lines);
}


static void
test_errors(void)
{
    char      out[256], bad[300];
    result_t  r;
    FILE     *f;
    char     *help[] = { TOOL, "--help", NULL };
    char     *unknown[] = { TOOL, "--bogus", "1", NULL };
    char     *task[] = { TOOL, "--model", "models/tiny-st-cls", "--task",
                         "ner", "--train", S_TRAIN, "--out", out, NULL };
    char     *label[] = { TOOL, "--model", "models/tiny-st-cls", "--task",
                          "classify", "--train", S_TRAIN, "--validation",
                          bad, "--out", out, NULL };
    char     *resume[] = { TOOL, "--resume", tmpdir, NULL };
    char     *resume_opt[] = { TOOL, "--resume", tmpdir, "--epochs", "5",
                               NULL };
    char     *out_file[] = { TOOL, "--model", "models/tiny-st-cls",
                             "--task", "classify", "--train", S_TRAIN,
                             "--out", bad, NULL };

    snprintf(out, sizeof(out), "%s/err", tmpdir);
    snprintf(bad, sizeof(bad), "%s/bad.jsonl", tmpdir);
    f = fopen(bad, "w");
    if (f != NULL) {
        fputs("{\"text\": \"good\", \"label\": \"positive\"}\n"
              "{\"text\": \"bad\", \"label\": \"neutral\"}\n", f);
        fclose(f);
    }

    run_tool(help, 0, &r);
    tap_ok(r.status == 0, "errors: --help exits 0");
    json_decref(r.lines);
    run_tool(unknown, 0, &r);
    tap_ok(r.status == 2 && strstr(r.err, "--bogus") != NULL,
           "errors: an unknown option exits 2 and names it");
    json_decref(r.lines);
    run_tool(task, 0, &r);
    tap_ok(r.status == 1 && strstr(r.err, "--task classify") != NULL,
           "errors: --task ner on class labels (%s)", r.err);
    json_decref(r.lines);
    run_tool(label, 0, &r);
    tap_ok(r.status == 1 && strstr(r.err, "bad.jsonl:2: field \"label\"")
                            != NULL,
           "errors: a validation label not in training names file, line "
           "and field (%s)", r.err);
    json_decref(r.lines);
    run_tool(resume, 0, &r);
    tap_ok(r.status == 1 && strstr(r.err, "trainer.json") != NULL
           && strstr(r.err, ":-1:") == NULL,
           "errors: --resume without a checkpoint (%s)", r.err);
    json_decref(r.lines);
    run_tool(resume_opt, 0, &r);
    tap_ok(r.status == 2 && strstr(r.err, "--epochs") != NULL,
           "errors: --resume with a training option exits 2 and names it, "
           "rather than ignoring it (%s)", r.err);
    json_decref(r.lines);
    run_tool(out_file, 0, &r);
    tap_ok(r.status == 1 && count(&r, "start", NULL) == 0
           && strstr(r.err, "not a directory") != NULL,
           "errors: --out naming a file fails before training (%s)", r.err);
    json_decref(r.lines);
}


/* The last eval line's eval_loss of R, or -1. */
static double
last_eval_loss(const result_t *r)
{
    json_t  *o = NULL;

    if (count(r, "eval", &o) == 0) {
        return -1;
    }
    return json_number_value(json_object_get(o, "eval_loss"));
}


/*
 * --dtype: bf16 mixed precision trains to about fp32's validation loss
 * and says so in its start line; auto resolves; bf16 on a CPU without
 * AVX512-BF16 or AMX (oneDNN's ISA lowered by ONEDNN_MAX_CPU_ISA) is an
 * error naming what the CPU has; a bad value exits 2.
 */
static void
test_dtype(void)
{
    char        out[256], dt[8];
    result_t    r;
    json_t     *o = NULL;
    double      l32, l16;
    const char *isa;
    int         native = aiserve_gemm_bf16_native(&isa);
    char       *argv[] = { TOOL, "--model", "models/tiny-bert-seq-cls",
                           "--task", "classify", "--train", S_TRAIN,
                           "--validation", S_VALID, "--out", out,
                           "--epochs", "3", "--batch-tokens", "64",
                           "--learning-rate", "1e-3", "--dtype", dt, NULL };

    snprintf(out, sizeof(out), "%s/dtype", tmpdir);
    snprintf(dt, sizeof(dt), "fp32");
    run_tool(argv, 0, &r);
    l32 = last_eval_loss(&r);
    tap_ok(r.status == 0 && count(&r, "start", &o) == 1
           && strcmp(json_string_value(json_object_get(o, "dtype")), "fp32")
              == 0, "dtype fp32: the start line says fp32 (%s)", r.err);
    json_decref(r.lines);

    snprintf(dt, sizeof(dt), "auto");
    run_tool(argv, 0, &r);
    tap_ok(r.status == 0 && count(&r, "start", &o) == 1
           && strcmp(json_string_value(json_object_get(o, "dtype")),
                     native ? "bf16" : "fp32") == 0,
           "dtype auto: %s on a CPU with %s (%s)", native ? "bf16" : "fp32",
           isa, r.err);
    json_decref(r.lines);

    if (native) {
        snprintf(dt, sizeof(dt), "bf16");
        run_tool(argv, 0, &r);
        l16 = last_eval_loss(&r);
        tap_ok(r.status == 0 && count(&r, "start", &o) == 1
               && strcmp(json_string_value(json_object_get(o, "dtype")),
                         "bf16") == 0
               && l32 > 0 && l16 > 0 && fabs(l16 - l32) <= 0.05 * l32,
               "dtype bf16: trains, eval_loss %.5f against fp32's %.5f "
               "(within 5%%) (%s)", l16, l32, r.err);
        json_decref(r.lines);
    }

    snprintf(dt, sizeof(dt), "bf16");
    setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE", 1);
    run_tool(argv, 0, &r);
    unsetenv("ONEDNN_MAX_CPU_ISA");
    tap_ok(r.status == 1 && strstr(r.err, "dtype bf16: the CPU has") != NULL,
           "dtype bf16 without AVX512-BF16 or AMX: an error (%s)", r.err);
    json_decref(r.lines);

    snprintf(dt, sizeof(dt), "fp16");
    run_tool(argv, 0, &r);
    tap_ok(r.status == 2 && strstr(r.err, "--dtype: \"fp16\"") != NULL,
           "dtype fp16: exit 2 naming the option (%s)", r.err);
    json_decref(r.lines);
}


int
main(void)
{
    char  cmd[300];

    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_full();
    test_interrupt();
    test_head_ner();
    test_dtype();
    test_epoch_fraction();
    test_errors();
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0) {
        tap_diag("could not remove %s", tmpdir);
    }
    return tap_done();
}
