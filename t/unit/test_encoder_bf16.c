/*
 * bf16 products (issue 14): the gates of aiserve_dtype.h on the encoder
 * fixtures (t/data/encoder-minilm.jsonl: 231 sentences of 1..256 tokens
 * of random vocabulary words; t/data/encoder-bf16-minilm.jsonl: 200
 * sentences of 9..256 tokens in natural word order, from
 * tools/gen-bf16-fixtures.py; both with sentence-transformers' fp32
 * embeddings; t/data/encoder-tiny.jsonl: the tiny classifiers and
 * embedders), bf16 against our fp32: pooled
 * embeddings at cosine >= 0.9999 per sentence, classifier argmax equal
 * where fp32's top-2 margin exceeds 0.05.  Prints min, median and the
 * worst sentences.  Also: a bf16 product equals the fp32 product of
 * bf16-rounded operands, the packed bf16 weights take half the bytes,
 * and `auto` chooses by the built-in check, starting no thread, so that
 * a process forked after it (an nginx worker) runs forward passes on
 * several threads.  Skipped, with the reason,
 * where the CPU has neither AVX512-BF16 nor AMX.
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "encoder_util.h"

#include "aiserve_dtype.h"
#include "aiserve_gemm.h"

#define MINILM   "models/all-MiniLM-L6-v2"


static int
cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}


/* A bf16 product against the same product in double of bf16-rounded
 * operands (odd sizes and a row stride, so tails and lda count). */
static void
test_product(void)
{
    size_t                 m = 37, n = 45, k = 70, lda = 75, i, j, p;
    float                 *a, *w, *bias, *c;
    double                 d, worst = 0, scale;
    aiserve_gemm_layout_t  layout, l32;
    aiserve_gemm_w_t       packed;
    void                  *mem;
    char                   err[256];

    a = malloc(m * lda * sizeof(float));
    w = malloc(n * k * sizeof(float));
    bias = malloc(n * sizeof(float));
    c = malloc(m * n * sizeof(float));
    srand(14);
    for (i = 0; i < m * lda; i++) {
        a[i] = (float) rand() / (float) RAND_MAX * 2 - 1;
    }
    for (i = 0; i < n * k; i++) {
        w[i] = (float) rand() / (float) RAND_MAX * 2 - 1;
    }
    for (i = 0; i < n; i++) {
        bias[i] = (float) i / 7;
    }
    tap_ok(aiserve_gemm_layout_dtype(n, k, AISERVE_DTYPE_BF16, &layout, err,
                                     sizeof(err)) == 0
           && aiserve_gemm_layout(n, k, &l32, err, sizeof(err)) == 0,
           "bf16 and fp32 layouts of a [%zu, %zu] weight", n, k);
    tap_ok(layout.dtype == AISERVE_DTYPE_BF16 && layout.bytes < l32.bytes,
           "the bf16 weight takes fewer bytes (%zu of %zu; padded blocks)",
           layout.bytes, l32.bytes);
    mem = aligned_alloc(64, (layout.bytes + 63) / 64 * 64);
    tap_ok(aiserve_gemm_pack(&layout, w, mem, &packed, err, sizeof(err)) == 0
           && aiserve_gemm_packed(m, a, lda, &packed, bias, c, n, 1, err,
                                  sizeof(err)) == 0,
           "bf16 pack and product%s%s", err[0] ? ": " : "", err);
    for (i = 0; i < m; i++) {
        for (j = 0; j < n; j++) {
            d = bias[j];
            scale = 0;
            for (p = 0; p < k; p++) {
                d += (double) enc_to_bf16(a[i * lda + p])
                     * enc_to_bf16(w[j * k + p]);
                scale += fabs((double) enc_to_bf16(a[i * lda + p])
                              * enc_to_bf16(w[j * k + p]));
            }
            d = fabs(d - c[i * n + j]) / (scale + 1);
            worst = d > worst ? d : worst;
        }
    }
    tap_ok(worst < 1e-6, "bf16 product = fp32 accumulation of bf16-rounded "
           "operands (worst relative error %.2g)", worst);
    free(mem);
    aiserve_gemm_layout_free(&layout);
    aiserve_gemm_layout_free(&l32);
    free(a);
    free(w);
    free(bias);
    free(c);
}


/* aiserve_gemm_bf16() in its four transpositions, with alpha and beta,
 * against the same product in double of bf16-rounded operands (fp32
 * accumulation: relative error about k 2^-24 of the sum of |terms|). */
static void
test_product_general(void)
{
    size_t   m = 33, n = 47, k = 70, ld = 80, i, j, p;
    float   *a, *b, *c, *c0;
    double   d, worst = 0, scale;
    int      ta, tb, rc = 0;

    a = malloc(ld * ld * sizeof(float));
    b = malloc(ld * ld * sizeof(float));
    c = malloc(m * ld * sizeof(float));
    c0 = malloc(m * ld * sizeof(float));
    for (i = 0; i < ld * ld; i++) {
        a[i] = (float) sin(0.37 * (double) i) * 1.7f;
        b[i] = (float) cos(0.53 * (double) i) * 0.9f;
    }
    for (i = 0; i < m * ld; i++) {
        c0[i] = (float) sin(0.11 * (double) i);
    }
    for (ta = 0; ta < 2; ta++) {
        for (tb = 0; tb < 2; tb++) {
            memcpy(c, c0, m * ld * sizeof(float));
            rc |= aiserve_gemm_bf16(ta, tb, m, n, k, 0.5f, a, ld, b, ld,
                                    0.75f, c, ld);
            for (i = 0; i < m; i++) {
                for (j = 0; j < n; j++) {
                    d = 0;
                    scale = 1;
                    for (p = 0; p < k; p++) {
                        double  x = enc_to_bf16(ta ? a[p * ld + i]
                                                   : a[i * ld + p]);
                        double  y = enc_to_bf16(tb ? b[j * ld + p]
                                                   : b[p * ld + j]);

                        d += x * y;
                        scale += fabs(x * y);
                    }
                    d = 0.5 * d + 0.75 * c0[i * ld + j];
                    d = fabs(c[i * ld + j] - d) / scale;
                    worst = d > worst ? d : worst;
                }
            }
        }
    }
    tap_ok(rc == 0 && worst < 1e-5, "aiserve_gemm_bf16, A and B as stored "
           "or transposed, alpha 0.5, beta 0.75: the fp32 product of "
           "bf16-rounded operands (worst error %.2g of the sum of |terms|)",
           worst);
    free(a);
    free(b);
    free(c);
    free(c0);
}


/*
 * The fixture's fp32 references (sentence-transformers) against our fp32
 * (cosine >= 0.99999 and max|diff| <= 1e-4, as test_encoder_minilm) and
 * our bf16 (cosine >= 0.9999; its max|diff| reported).
 */
static void
test_references(const aiserve_model_t *f, const aiserve_model_t *b,
    const char *fixture, const int32_t **ids, const size_t *lens,
    json_t **want, size_t n)
{
    aiserve_scratch_t  *s32, *s16;
    aiserve_batch_t     batch;
    size_t              i, H = aiserve_model_info(f)->hidden_size;
    float              *o32, *o16, *ref;
    double              c32 = 1, c16 = 1, d32 = 0, d16 = 0, c, d;
    char                err[256];
    int                 rc = 0;

    s32 = aiserve_scratch_create(f, 512, err, sizeof(err));
    s16 = aiserve_scratch_create(b, 512, err, sizeof(err));
    o32 = malloc(H * sizeof(float));
    o16 = malloc(H * sizeof(float));
    for (i = 0; i < n && rc == 0; i++) {
        size_t  nh;

        batch.input_ids = ids[i];
        batch.token_type_ids = NULL;
        batch.seq_lens = &lens[i];
        batch.n_seqs = 1;
        rc = aiserve_model_forward(f, &batch, s32, o32, err, sizeof(err))
             | aiserve_model_forward(b, &batch, s16, o16, err, sizeof(err));
        ref = enc_floats(want[i], &nh);
        c = enc_cosine(o32, ref, H);
        d = enc_max_diff(o32, ref, H);
        c32 = c < c32 ? c : c32;
        d32 = d > d32 ? d : d32;
        c = enc_cosine(o16, ref, H);
        d = enc_max_diff(o16, ref, H);
        c16 = c < c16 ? c : c16;
        d16 = d > d16 ? d : d16;
        free(ref);
    }
    tap_ok(rc == 0 && c32 >= 0.99999 && d32 <= 1e-4,
           "%s: our fp32 vs sentence-transformers: min cosine %.8f, max|diff| "
           "%.2e", fixture, c32, d32);
    tap_ok(rc == 0 && c16 >= AISERVE_PARITY_MIN_COSINE,
           "%s: our bf16 vs sentence-transformers: min cosine %.8f, "
           "max|diff| %.2e", fixture, c16, d16);
    free(o32);
    free(o16);
    aiserve_scratch_free(s32);
    aiserve_scratch_free(s16);
}


/*
 * The gates on the lines of FIXTURE for MODEL (every line when FILTER is
 * NULL, else those whose "model" is FILTER); fp32 references, when the
 * fixture has "embedding", also checked against our fp32.
 */
static void
test_gates(const char *model_dir, const char *fixture, const char *filter)
{
    aiserve_model_t             *f, *b;
    const aiserve_model_info_t  *info;
    aiserve_parity_t             p;
    json_t                      *lines, *line;
    const int32_t              **ids;
    const char                 **texts;
    size_t                      *lens, n = 0, i, w;
    double                      *cos, *sorted;
    json_t                     **want;
    char                         err[512];

    f = aiserve_model_load_packed(model_dir, AISERVE_DTYPE_FP32, err,
                                  sizeof(err));
    b = f ? aiserve_model_load_packed(model_dir, AISERVE_DTYPE_BF16, err,
                                      sizeof(err)) : NULL;
    if (!tap_ok(b != NULL && aiserve_model_dtype(b) == AISERVE_DTYPE_BF16,
                "%s loads in fp32 and bf16%s%s", model_dir,
                b ? "" : ": ", b ? "" : err))
    {
        aiserve_model_free(f);
        return;
    }
    info = aiserve_model_info(f);
    lines = enc_load_jsonl(fixture);
    ids = calloc(json_array_size(lines), sizeof(*ids));
    texts = calloc(json_array_size(lines), sizeof(*texts));
    lens = calloc(json_array_size(lines), sizeof(*lens));
    cos = calloc(json_array_size(lines), sizeof(*cos));
    sorted = calloc(json_array_size(lines), sizeof(*sorted));
    want = calloc(json_array_size(lines), sizeof(*want));
    for (i = 0; i < json_array_size(lines); i++) {
        line = json_array_get(lines, i);
        if (filter != NULL
            && strcmp(json_string_value(json_object_get(line, "model")),
                      filter) != 0)
        {
            continue;
        }
        if (json_is_string(json_object_get(line, "text_pair"))) {
            continue;                       /* one text a sentence here */
        }
        ids[n] = enc_ids(json_object_get(line, "input_ids"), &lens[n]);
        texts[n] = json_string_value(json_object_get(line, "text"));
        want[n] = json_object_get(line, "embedding");
        n++;
    }
    tap_ok(n > 0 && aiserve_dtype_compare(f, b, ids, lens, n, cos, &p, err,
                                          sizeof(err)) == 0,
           "%s: %zu sentences through both dtypes", model_dir, n);
    memcpy(sorted, cos, n * sizeof(double));
    qsort(sorted, n, sizeof(double), cmp_double);
    tap_diag("%s: cosine bf16 vs fp32 over %zu sentences: min %.7f, median "
             "%.7f", model_dir, n, n ? sorted[0] : 0, n ? sorted[n / 2] : 0);
    for (w = 0; w < 3 && w < n; w++) {
        for (i = 0; i < n && cos[i] != sorted[w]; i++) {
            /* the sentence of the w-th lowest cosine */
        }
        tap_diag("  worst %zu: %.7f (%zu tokens) \"%.60s\"", w + 1,
                 sorted[w], lens[i], texts[i] ? texts[i] : "[CLS] alone");
    }
    if (info->arch == AISERVE_ARCH_BERT_MODEL) {
        tap_ok(p.min_cosine >= AISERVE_PARITY_MIN_COSINE,
               "%s: pooled cosine >= %.4f on every sentence (min %.7f)",
               model_dir, AISERVE_PARITY_MIN_COSINE, p.min_cosine);
    } else {
        tap_ok(p.argmax_differ == 0,
               "%s: argmax equal on the %zu rows past a top-2 margin of "
               "%.2f (%zu differ)", model_dir, p.argmax_checked,
               AISERVE_PARITY_MARGIN, p.argmax_differ);
    }
    if (n > 0 && want[0] != NULL) {
        test_references(f, b, fixture, ids, lens, want, n);
    }
    for (i = 0; i < n; i++) {
        free((void *) ids[i]);
    }
    free(want);
    free(ids);
    free(texts);
    free(lens);
    free(cos);
    free(sorted);
    json_decref(lines);
    aiserve_model_free(f);
    aiserve_model_free(b);
}


/* dtype=auto and dtype=bf16 through aiserve_model_load_dtype(). */
static void
test_load_dtype(void)
{
    aiserve_model_t  *m, *f;
    aiserve_tok_t    *tok;
    char              note[512], err[512];

    tok = aiserve_tok_load(MINILM, err, sizeof(err));
    m = tok ? aiserve_model_load_dtype(MINILM, tok, AISERVE_DTYPE_AUTO, note,
                                       sizeof(note), err, sizeof(err))
            : NULL;
    tap_ok(m != NULL && aiserve_model_dtype(m) == AISERVE_DTYPE_BF16
           && strncmp(note, "dtype bf16 (auto: ", 18) == 0,
           "auto takes bf16 for MiniLM: %s", m ? note : err);
    f = aiserve_model_load_dtype(MINILM, tok, AISERVE_DTYPE_FP32, note,
                                 sizeof(note), err, sizeof(err));
    tap_ok(f != NULL && aiserve_model_dtype(f) == AISERVE_DTYPE_FP32
           && strcmp(note, "dtype fp32") == 0, "fp32 asked: fp32 (%s)",
           f ? note : err);
    tap_ok(m != NULL && f != NULL
           && aiserve_model_packed_bytes(m) * 2
              <= aiserve_model_packed_bytes(f) + ((size_t) 2 << 20),
           "packed bf16 weights: %zu bytes, fp32: %zu",
           m ? aiserve_model_packed_bytes(m) : 0,
           f ? aiserve_model_packed_bytes(f) : 0);
    aiserve_model_free(m);
    aiserve_model_free(f);
    aiserve_tok_free(tok);
}


/* AISERVE_GEMM=blas (the OpenBLAS path packs nothing): bf16 is refused
 * with a message, auto stays fp32 and says why. */
static void
test_blas(void)
{
    aiserve_model_t  *m;
    aiserve_tok_t    *tok;
    char              note[512], err[512];

    m = aiserve_model_load_packed(MINILM, AISERVE_DTYPE_BF16, err,
                                  sizeof(err));
    tap_ok(m == NULL && strstr(err, "not AISERVE_GEMM=blas") != NULL,
           "AISERVE_GEMM=blas: bf16 refused (%s)", err);
    aiserve_model_free(m);
    tok = aiserve_tok_load(MINILM, err, sizeof(err));
    m = tok ? aiserve_model_load_dtype(MINILM, tok, AISERVE_DTYPE_AUTO, note,
                                       sizeof(note), err, sizeof(err))
            : NULL;
    tap_ok(m != NULL && aiserve_model_dtype(m) == AISERVE_DTYPE_FP32
           && strstr(note, "auto: bf16 did not load") != NULL,
           "AISERVE_GEMM=blas: auto stays fp32 (%s)", m ? note : err);
    aiserve_model_free(m);
    aiserve_tok_free(tok);
}


/* The threads of this process (/proc/self/status), 0 where unknown. */
static int
count_threads(void)
{
    FILE  *f = fopen("/proc/self/status", "r");
    char   line[256];
    int    n = 0;

    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "Threads: %d", &n) == 1) {
            break;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return n;
}


/*
 * What nginx does with dtype=auto: the master (here, this process) runs
 * the parity check at configuration time, then forks workers that run
 * forward passes with several threads.  GNU libgomp does not survive
 * fork() in a thread that has run a parallel region of more than one
 * thread: the child's next parallel region waits for the parent's
 * OpenMP threads, which do not exist in the child, for ever.  So the
 * load must leave this process with its one thread, and a child forked
 * after it must finish a 2-thread forward pass in its main thread, where
 * oneDNN's OpenMP team splits the products of few rows (within 30 s).
 */
static void
test_fork_after_auto(void)
{
    aiserve_model_t    *m;
    aiserve_tok_t      *tok;
    aiserve_scratch_t  *s;
    aiserve_batch_t     batch;
    int32_t             ids[32];
    size_t              len;
    float              *out;
    pid_t               pid;
    int                 before, after, status = 0, rc;
    char                note[512], err[512];

    before = count_threads();
    tok = aiserve_tok_load(MINILM, err, sizeof(err));
    m = tok ? aiserve_model_load_dtype(MINILM, tok, AISERVE_DTYPE_AUTO, note,
                                       sizeof(note), err, sizeof(err))
            : NULL;
    after = count_threads();
    tap_ok(m != NULL && after == before, "dtype=auto's load and parity check "
           "start no thread: %d before, %d after (OpenBLAS's own, stopped by "
           "its fork handler, may be there before)", before, after);
    /* [CLS], 30 vocabulary words, [SEP]: 32 rows, products of 2^20 and
     * more multiply-adds split by oneDNN's OpenMP team */
    ids[0] = 101;
    for (len = 1; len < 31; len++) {
        ids[len] = (int32_t) (2000 + len);
    }
    ids[len++] = 102;
    pid = m != NULL ? fork() : -1;
    if (pid == 0) {
        alarm(30);
        aiserve_set_num_threads(2);
        s = aiserve_scratch_create(m, 64, err, sizeof(err));
        out = malloc(aiserve_model_info(m)->hidden_size * sizeof(float));
        batch.input_ids = ids;
        batch.token_type_ids = NULL;
        batch.seq_lens = &len;
        batch.n_seqs = 1;
        rc = s != NULL && out != NULL
             ? aiserve_model_forward(m, &batch, s, out, err, sizeof(err))
             : -1;
        _exit(rc == 0 ? 0 : 1);
    }
    if (pid > 0) {
        (void) waitpid(pid, &status, 0);
    }
    tap_ok(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "a child forked after the parity check runs a 2-thread forward "
           "pass (%zu tokens): %s", len,
           pid <= 0 ? "no child"
           : WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM
             ? "hung (killed after 30 s)"
           : WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "done"
           : "failed");
    aiserve_model_free(m);
    aiserve_tok_free(tok);
}


int
main(void)
{
    static const char  *tiny[] = {
        "tiny-bert-seq-cls", "tiny-bert-seq-cls-bf16", "tiny-bert-ner",
        "tiny-bert-ner-bf16", "tiny-bert-seq-multilabel",
        "tiny-bert-seq-regression", "tiny-st-cls", "tiny-st-max"
    };
    const char         *isa;
    char                dir[256];
    size_t              i;

    if (!aiserve_gemm_bf16_native(&isa)) {
        printf("1..0 # SKIP the CPU (oneDNN's ISA) has %s: no bf16 "
               "products here\n", isa);
        return 0;
    }
    tap_diag("bf16 products on %s", isa);
    if (getenv("AISERVE_GEMM") != NULL
        && strcmp(getenv("AISERVE_GEMM"), "blas") == 0)
    {
        test_blas();
        return tap_done();
    }
    test_fork_after_auto();
    test_product();
    test_product_general();
    for (i = 0; i < sizeof(tiny) / sizeof(tiny[0]); i++) {
        snprintf(dir, sizeof(dir), "models/%s", tiny[i]);
        test_gates(dir, "t/data/encoder-tiny.jsonl", tiny[i]);
    }
    test_gates(MINILM, "t/data/encoder-minilm.jsonl", NULL);
    test_gates(MINILM, "t/data/encoder-bf16-minilm.jsonl", NULL);
    test_load_dtype();
    return tap_done();
}
