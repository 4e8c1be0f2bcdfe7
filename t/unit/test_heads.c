/*
 * Many tenants, one encoder: aiserve_model_forward_heads() runs one
 * encoder pass of a base over a batch whose sequences belong to different
 * head models loaded over it (aiserve_model_load_over()), and gives each
 * sequence what aiserve_model_forward() of its own model gives it alone.
 *
 *  - sequence classification: models/tiny-bert-seq-cls and two heads of
 *    2 and 3 labels (tools/aiserve-export --mode head, random heads),
 *    mixed in runs and alone
 *  - token classification: models/tiny-bert-ner and a head over it
 *  - aiserve_model_shares_encoder(): a head yes, a LoRA adapter no, and
 *    forward_heads refuses a model that does not share the encoder
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "aiserve_model.h"


static char  tmp[] = "/tmp/aiserve-test-heads-XXXXXX";


static aiserve_model_t *
export(const char *mode, const char *arch, const char *labels,
    const char *seed, const char *base_dir, aiserve_model_t *base,
    const char *name)
{
    char              cmd[2048], dir[1024], err[512];
    aiserve_model_t  *m;

    snprintf(dir, sizeof(dir), "%s/%s", tmp, name);
    snprintf(cmd, sizeof(cmd), "tools/aiserve-export --mode %s --arch %s "
             "--labels %s --seed %s %s %s >/dev/null 2>&1", mode, arch,
             labels, seed, base_dir, dir);

    if (system(cmd) != 0) {
        tap_diag("%s failed", cmd);
        return NULL;
    }

    m = aiserve_model_load_over(base, dir, err, sizeof(err));
    if (m == NULL) {
        tap_diag("%s: %s", dir, err);
    }

    return m;
}


/* Sequence i of BATCH alone through MODEL: its output in OUT. */
static int
alone(const aiserve_model_t *model, const aiserve_batch_t *batch, size_t i,
    float *out)
{
    int                rc;
    char               err[256];
    size_t             off, k;
    aiserve_batch_t    one;
    aiserve_scratch_t *s;

    for (off = 0, k = 0; k < i; k++) {
        off += batch->seq_lens[k];
    }

    one.input_ids = batch->input_ids + off;
    one.token_type_ids = NULL;
    one.seq_lens = &batch->seq_lens[i];
    one.n_seqs = 1;

    s = aiserve_scratch_create(model, 64, err, sizeof(err));
    if (s == NULL) {
        return -1;
    }

    rc = aiserve_model_forward(model, &one, s, out, err, sizeof(err));
    aiserve_scratch_free(s);

    return rc;
}


/* Checks forward_heads of BASE with HEADS on BATCH against each alone. */
static void
check(const char *what, const aiserve_model_t *base,
    const aiserve_model_t *const *heads, const aiserve_batch_t *batch)
{
    int                rc;
    char               err[256];
    float              out[4096], ref[1024], worst;
    size_t             i, j, n, off;
    aiserve_scratch_t *s;
    aiserve_batch_t    one;

    s = aiserve_scratch_create(base, 64, err, sizeof(err));
    rc = s ? aiserve_model_forward_heads(base, heads, batch, s, out, err,
                                         sizeof(err))
           : -1;
    aiserve_scratch_free(s);

    if (!tap_ok(rc == 0, "%s: one encoder pass", what)) {
        tap_diag("%s", err);
        return;
    }

    worst = 0.f;
    off = 0;

    for (i = 0; i < batch->n_seqs; i++) {
        one.seq_lens = &batch->seq_lens[i];
        one.n_seqs = 1;
        n = aiserve_model_output_len(heads[i], &one);

        if (alone(heads[i], batch, i, ref) != 0) {
            worst = INFINITY;
            break;
        }

        for (j = 0; j < n; j++) {
            if (fabsf(out[off + j] - ref[j]) > worst) {
                worst = fabsf(out[off + j] - ref[j]);
            }
        }

        off += n;
    }

    tap_ok(worst <= 1e-5, "%s: each sequence as its own model alone "
           "(max |diff| %.2e)", what, (double) worst);
}


int
main(void)
{
    int                     rc;
    char                    err[256], cmd[1100];
    float                   out[1024];
    aiserve_model_t        *base, *h2, *h3, *lora, *ner, *hn;
    aiserve_scratch_t      *s;
    aiserve_batch_t         batch;
    const aiserve_model_t  *heads[5];

    /* ids of the tiny models' vocabulary (1346 tokens) */
    static const int32_t  ids[] = {
        101, 1009, 1001, 1293, 102,
        101, 996, 1143, 102,
        101, 592, 102,
        101, 1009, 1001, 1125, 997, 1023, 102,
        101, 1307, 102
    };
    static const size_t   lens[] = { 5, 4, 3, 7, 3 };

    if (mkdtemp(tmp) == NULL) {
        perror("mkdtemp");
        return 1;
    }

    aiserve_set_num_threads(2);

    batch.input_ids = ids;
    batch.token_type_ids = NULL;
    batch.seq_lens = lens;
    batch.n_seqs = 5;

    /* sequence classification */
    base = aiserve_model_load("models/tiny-bert-seq-cls", err, sizeof(err));
    if (!tap_ok(base != NULL, "the base loads")) {
        tap_diag("%s", err);
        return tap_done();
    }

    h2 = export("head", "seq-cls", "no,yes", "3", "models/tiny-bert-seq-cls",
                base, "h2");
    h3 = export("head", "seq-cls", "a,b,c", "4", "models/tiny-bert-seq-cls",
                base, "h3");
    lora = export("lora", "seq-cls", "no,yes", "5",
                  "models/tiny-bert-seq-cls", base, "lora");

    if (!tap_ok(h2 && h3 && lora, "two heads and a LoRA adapter load over "
                "it"))
    {
        return tap_done();
    }

    tap_ok(aiserve_model_shares_encoder(h2, base)
           && aiserve_model_shares_encoder(base, base),
           "a head shares the base's encoder");
    tap_ok(!aiserve_model_shares_encoder(lora, base),
           "a LoRA adapter does not");

    heads[0] = h2; heads[1] = h2; heads[2] = base; heads[3] = h3;
    heads[4] = h2;
    check("runs of heads and the base", base, heads, &batch);

    heads[0] = h3; heads[1] = h2; heads[2] = h3; heads[3] = base;
    heads[4] = h3;
    check("alternating heads", base, heads, &batch);

    heads[0] = h2; heads[1] = h2; heads[2] = h2; heads[3] = h2;
    heads[4] = h2;
    check("one head for all", base, heads, &batch);

    heads[2] = lora;
    s = aiserve_scratch_create(base, 64, err, sizeof(err));
    rc = aiserve_model_forward_heads(base, heads, &batch, s, out, err,
                                     sizeof(err));
    aiserve_scratch_free(s);
    tap_ok(rc == -1 && strstr(err, "sequence 2"), "a LoRA model in the "
           "batch is refused: %s", err);

    /* token classification */
    ner = aiserve_model_load("models/tiny-bert-ner", err, sizeof(err));
    hn = ner ? export("head", "token-cls", "O,B-X,I-X", "6",
                      "models/tiny-bert-ner", ner, "hn")
             : NULL;

    if (tap_ok(ner && hn, "a token-classification head over tiny-bert-ner"))
    {
        heads[0] = hn; heads[1] = ner; heads[2] = ner; heads[3] = hn;
        heads[4] = hn;
        check("token classification", ner, heads, &batch);
    }

    aiserve_model_free(h2);
    aiserve_model_free(h3);
    aiserve_model_free(lora);
    aiserve_model_free(hn);
    aiserve_model_free(base);
    aiserve_model_free(ner);

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (system(cmd) != 0) {
        tap_diag("could not remove %s", tmp);
    }

    return tap_done();
}
