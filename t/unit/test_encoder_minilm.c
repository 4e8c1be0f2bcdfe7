/*
 * all-MiniLM-L6-v2 parity against sentence-transformers (fixture from
 * tools/gen-encoder-fixtures.py), batch invariance, num-01, and concurrent
 * forward passes.  Needs models/all-MiniLM-L6-v2 (make deps).
 */
#include <pthread.h>

#include "tap.h"
#include "encoder_util.h"

#define MODEL    "models/all-MiniLM-L6-v2"
#define FIXTURE  "t/data/encoder-minilm.jsonl"

typedef struct {
    int32_t  *ids;
    size_t    n;
    float    *want;         /* sentence-transformers */
    float    *alone;        /* ours, sequence alone */
} sent_t;

static const aiserve_model_t  *model;
static sent_t                 *sents;
static size_t                  n_sents, H;


/* Forward sentences [from, to) as one packed batch into out. */
static int
run_batch(aiserve_scratch_t *s, const size_t *idx, size_t n, float *out)
{
    aiserve_batch_t  b;
    int32_t         *ids;
    size_t          *lens, i, t = 0, total = 0;
    char             err[256];
    int              rc;

    for (i = 0; i < n; i++) {
        total += sents[idx[i]].n;
    }
    ids = malloc(total * sizeof(int32_t));
    lens = malloc(n * sizeof(size_t));
    for (i = 0; i < n; i++) {
        memcpy(ids + t, sents[idx[i]].ids, sents[idx[i]].n * sizeof(int32_t));
        t += sents[idx[i]].n;
        lens[i] = sents[idx[i]].n;
    }
    b.input_ids = ids;
    b.token_type_ids = NULL;
    b.seq_lens = lens;
    b.n_seqs = n;
    rc = aiserve_model_forward(model, &b, s, out, err, sizeof(err));
    if (rc != 0) {
        tap_diag("forward: %s", err);
    }
    free(ids);
    free(lens);
    return rc;
}


typedef struct {
    size_t  from, to;
    double  max_diff;
    int     rc;
} thread_arg_t;


static void *
thread_main(void *p)
{
    thread_arg_t       *a = p;
    aiserve_scratch_t  *s;
    float              *out;
    char                err[256];
    size_t              i;
    double              d;

    s = aiserve_scratch_create(model, 512, err, sizeof(err));
    out = malloc(H * sizeof(float));
    a->max_diff = 0;
    a->rc = 0;
    for (i = a->from; i < a->to; i++) {
        if (enc_forward_one(model, s, sents[i].ids, NULL, sents[i].n, out,
                            err, sizeof(err)) != 0)
        {
            a->rc = -1;
            continue;
        }
        d = enc_max_diff(out, sents[i].alone, H);
        a->max_diff = d > a->max_diff ? d : a->max_diff;
    }
    free(out);
    aiserve_scratch_free(s);
    return NULL;
}


int
main(void)
{
    const aiserve_model_info_t  *info;
    aiserve_model_t             *m;
    aiserve_scratch_t           *s;
    json_t                      *fx, *line;
    char                         err[512];
    size_t                       i, j, n, bad, *idx, total, i_a, i_long;
    double                       worst_cos = 1, worst_diff = 0, d, c;
    float                       *out, *pair;
    thread_arg_t                 ta[2];
    pthread_t                    th[2];

    if (!enc_exists(MODEL "/model.safetensors")) {
        printf("1..0 # SKIP %s missing: run make deps\n", MODEL);
        return 0;
    }

    m = aiserve_model_load(MODEL, err, sizeof(err));
    if (!tap_ok(m != NULL, "load %s", MODEL)) {
        tap_diag("%s", err);
        return tap_done();
    }
    model = m;
    info = aiserve_model_info(m);
    H = info->hidden_size;
    tap_ok(info->arch == AISERVE_ARCH_BERT_MODEL && H == 384
           && info->num_hidden_layers == 6 && info->num_attention_heads == 12
           && info->intermediate_size == 1536
           && info->pooling == AISERVE_POOLING_MEAN && info->normalize == 1
           && info->num_labels == 0,
           "config.json + modules.json: BertModel, 384x6, mean, Normalize");

    fx = enc_load_jsonl(FIXTURE);
    if (!tap_ok(fx != NULL && json_array_size(fx) >= 200,
                "fixture %s has >= 200 sentences", FIXTURE))
    {
        return tap_done();
    }
    n_sents = json_array_size(fx);
    sents = calloc(n_sents, sizeof(sent_t));
    total = 0;
    json_array_foreach(fx, i, line) {
        sents[i].ids = enc_ids(json_object_get(line, "input_ids"),
                               &sents[i].n);
        sents[i].want = enc_floats(json_object_get(line, "embedding"), &n);
        sents[i].alone = malloc(H * sizeof(float));
        total += sents[i].n;
    }

    /* parity, one sentence at a time */
    s = aiserve_scratch_create(m, total, err, sizeof(err));
    tap_ok(s != NULL, "scratch for %zu tokens", total);
    bad = 0;
    for (i = 0; i < n_sents; i++) {
        if (enc_forward_one(m, s, sents[i].ids, NULL, sents[i].n,
                            sents[i].alone, err, sizeof(err)) != 0)
        {
            tap_diag("sentence %zu: %s", i, err);
            bad++;
            continue;
        }
        c = enc_cosine(sents[i].alone, sents[i].want, H);
        d = enc_max_diff(sents[i].alone, sents[i].want, H);
        if (!(c >= 0.99999) || !(d <= 1e-4)) {
            tap_diag("sentence %zu (%zu tokens): cosine %.8f max|diff| %.3g",
                     i, sents[i].n, c, d);
            bad++;
        }
        worst_cos = c < worst_cos ? c : worst_cos;
        worst_diff = d > worst_diff ? d : worst_diff;
    }
    tap_ok(bad == 0, "%zu sentences vs sentence-transformers encode: worst "
           "cosine %.8f (>= 0.99999), worst max|diff| %.2e (<= 1e-4)",
           n_sents, worst_cos, worst_diff);

    /* batch invariance: all sentences in one packed batch, and in batches
     * of 7 mixed lengths */
    idx = malloc(n_sents * sizeof(size_t));
    for (i = 0; i < n_sents; i++) {
        idx[i] = i;
    }
    out = malloc(n_sents * H * sizeof(float));
    worst_diff = 0;
    if (run_batch(s, idx, n_sents, out) == 0) {
        for (i = 0; i < n_sents; i++) {
            d = enc_max_diff(out + i * H, sents[i].alone, H);
            worst_diff = d > worst_diff ? d : worst_diff;
        }
    } else {
        worst_diff = INFINITY;
    }
    tap_ok(worst_diff <= 1e-5, "one batch of %zu sequences (%zu tokens) == "
           "each alone: max|diff| %.2e (<= 1e-5)", n_sents, total,
           worst_diff);

    worst_diff = 0;
    for (i = 0; i < n_sents; i += 7) {
        j = n_sents - i < 7 ? n_sents - i : 7;
        if (run_batch(s, idx + i, j, out) != 0) {
            worst_diff = INFINITY;
            break;
        }
        for (n = 0; n < j; n++) {
            d = enc_max_diff(out + n * H, sents[i + n].alone, H);
            worst_diff = d > worst_diff ? d : worst_diff;
        }
    }
    tap_ok(worst_diff <= 1e-5, "batches of 7 == each alone: max|diff| %.2e",
           worst_diff);

    /* num-01: "a" batched with a text of 200+ words, both orders */
    i_a = i_long = 0;
    for (i = 0; i < n_sents; i++) {
        json_t  *t = json_object_get(json_array_get(fx, i), "text");

        if (json_is_string(t) && strcmp(json_string_value(t), "a") == 0) {
            i_a = i;
        }
        if (json_is_string(t) && sents[i].n > sents[i_long].n
            && strlen(json_string_value(t)) > 1000)
        {
            i_long = i;
        }
    }
    pair = malloc(2 * H * sizeof(float));
    {
        size_t  p1[2] = { i_a, i_long }, p2[2] = { i_long, i_a };
        int     ok1 = run_batch(s, p1, 2, pair) == 0;
        double  c1 = enc_cosine(pair, sents[i_a].alone, H);
        double  d1 = enc_max_diff(pair, sents[i_a].alone, H);
        int     fin1 = enc_all_finite(pair, 2 * H);
        int     ok2 = run_batch(s, p2, 2, pair) == 0;
        double  c2 = enc_cosine(pair + H, sents[i_a].alone, H);
        int     fin2 = enc_all_finite(pair, 2 * H);

        tap_ok(ok1 && ok2 && c1 >= 0.99999 && c2 >= 0.99999 && d1 <= 1e-5
               && fin1 && fin2 && i_a != i_long && sents[i_long].n >= 200,
               "num-01: \"a\" (%zu tokens) batched with a %zu-token text "
               "equals \"a\" alone: cosine %.8f / %.8f, finite",
               sents[i_a].n, sents[i_long].n, c1, c2);
        tap_ok(enc_cosine(sents[i_a].alone, sents[i_a].want, H) >= 0.99999,
               "num-01: \"a\" alone matches sentence-transformers");
    }

    /* two BLAS threads give the same numbers as one */
    aiserve_set_num_threads(2);
    worst_diff = 0;
    if (run_batch(s, idx, 80, out) == 0) {
        for (i = 0; i < 80; i++) {
            d = enc_max_diff(out + i * H, sents[i].alone, H);
            worst_diff = d > worst_diff ? d : worst_diff;
        }
    } else {
        worst_diff = INFINITY;
    }
    tap_ok(worst_diff <= 1e-5, "2 threads == 1 thread: max|diff| %.2e",
           worst_diff);

    /* many short 2-thread passes: the team's steps run BLAS calls side by
     * side (OpenBLAS's serial build corrupts results here) */
    {
        size_t  three[3] = { 5, 40, 120 }, rep, bad_reps = 0;

        for (rep = 0; rep < 150; rep++) {
            if (run_batch(s, three, 3, out) != 0) {
                bad_reps++;
                continue;
            }
            for (i = 0; i < 3; i++) {
                if (enc_max_diff(out + i * H, sents[three[i]].alone, H)
                    > 1e-5)
                {
                    bad_reps++;
                    break;
                }
            }
        }
        tap_ok(bad_reps == 0, "150 two-thread passes of a 3-sequence batch "
               "== one thread: %zu differ", bad_reps);
    }
    aiserve_set_num_threads(1);

    /* concurrent forward passes on one model, per-thread scratch */
    ta[0].from = 0;
    ta[0].to = 40;
    ta[1].from = 40;
    ta[1].to = 80;
    pthread_create(&th[0], NULL, thread_main, &ta[0]);
    pthread_create(&th[1], NULL, thread_main, &ta[1]);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    tap_ok(ta[0].rc == 0 && ta[1].rc == 0 && ta[0].max_diff == 0
           && ta[1].max_diff == 0,
           "2 threads sharing the model, own scratch: identical results");

    /* errors: id out of vocabulary, too long, over the scratch budget */
    {
        int32_t  bad_ids[3] = { 101, 30522, 102 };
        int32_t  ids600[600];
        int      rc;

        rc = enc_forward_one(m, s, bad_ids, NULL, 3, out, err, sizeof(err));
        tap_ok(rc == -1 && strstr(err, "30522") != NULL,
               "id out of vocabulary: %s", err);
        for (i = 0; i < 600; i++) {
            ids600[i] = 1000;
        }
        rc = enc_forward_one(m, s, ids600, NULL, 600, out, err, sizeof(err));
        tap_ok(rc == -1 && strstr(err, "max_position_embeddings") != NULL,
               "sequence over 512 tokens: %s", err);
        aiserve_scratch_free(s);
        s = aiserve_scratch_create(m, 100, err, sizeof(err));
        rc = enc_forward_one(m, s, ids600, NULL, 200, out, err, sizeof(err));
        tap_ok(rc == -1 && strstr(err, "max_tokens") != NULL,
               "batch over the scratch's max_tokens: %s", err);
    }

    for (i = 0; i < n_sents; i++) {
        free(sents[i].ids);
        free(sents[i].want);
        free(sents[i].alone);
    }
    free(sents);
    free(idx);
    free(out);
    free(pair);
    json_decref(fx);
    aiserve_scratch_free(s);
    aiserve_model_free(m);
    return tap_done();
}
