/*
 * The pipelines' post-processing in the engine (src/aiserve_pipeline.c):
 * score functions, ordering, the BIO chunker in its three modes, the
 * WordPiece decoder and NER aggregation on a real tokenizer with chosen
 * logits.  (t/030-pipelines.t checks the same code through the server
 * against transformers' pipelines.)
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "aiserve_pipeline.h"


static void
check_functions(void)
{
    float                 in[4] = { 1.0f, 2.0f, 3.0f, 0.0f }, out[4],
                          big[2] = { 1000.0f, 1001.0f }, s[4] = {
                              0.1f, 0.5f, 0.5f, 0.2f };
    double                sum, want;
    size_t                i, order[4];
    aiserve_model_info_t  info;

    tap_ok(aiserve_fn_parse("SoftMax") == AISERVE_FN_SOFTMAX
           && aiserve_fn_parse("sigmoid") == AISERVE_FN_SIGMOID
           && aiserve_fn_parse("none") == AISERVE_FN_NONE
           && aiserve_fn_parse("relu") == -1,
           "function_to_apply names, any case; others -1");

    memset(&info, 0, sizeof(info));
    info.num_labels = 3;
    tap_ok(aiserve_fn_default(&info) == AISERVE_FN_SOFTMAX,
           "single-label with 3 labels: softmax");
    info.num_labels = 1;
    tap_ok(aiserve_fn_default(&info) == AISERVE_FN_SIGMOID,
           "one label: sigmoid");
    info.num_labels = 3;
    info.problem_type = AISERVE_PROBLEM_MULTI_LABEL;
    tap_ok(aiserve_fn_default(&info) == AISERVE_FN_SIGMOID,
           "multi-label: sigmoid");
    info.problem_type = AISERVE_PROBLEM_REGRESSION;
    tap_ok(aiserve_fn_default(&info) == AISERVE_FN_NONE, "regression: none");

    aiserve_fn_apply(AISERVE_FN_SOFTMAX, in, out, 4);
    sum = exp(1) + exp(2) + exp(3) + exp(0);
    want = 0;
    for (i = 0; i < 4; i++) {
        want = fmax(want, fabs(out[i] - exp(in[i]) / sum));
    }
    tap_ok(want < 1e-7, "softmax within 1e-7 of double (%.2g)", want);

    aiserve_fn_apply(AISERVE_FN_SOFTMAX, big, out, 2);
    tap_ok(fabs(out[1] - 1 / (1 + exp(-1))) < 1e-7,
           "softmax of logits near 1000 is finite: %g", out[1]);

    aiserve_fn_apply(AISERVE_FN_SIGMOID, in + 3, out, 1);
    tap_ok(out[0] == 0.5f, "sigmoid(0) = 0.5");

    aiserve_fn_apply(AISERVE_FN_NONE, in, out, 4);
    tap_ok(memcmp(in, out, sizeof(in)) == 0, "none copies the logits");

    tap_ok(aiserve_argmax(s, 4) == 1, "argmax: the first of a tie");

    aiserve_order_by_score(s, 4, order);
    tap_ok(order[0] == 1 && order[1] == 2 && order[2] == 3 && order[3] == 0,
           "order by score: highest first, stable on ties");

    tap_ok(aiserve_agg_parse("none") == AISERVE_AGG_NONE
           && aiserve_agg_parse("SIMPLE") == AISERVE_AGG_SIMPLE
           && aiserve_agg_parse("first") == AISERVE_AGG_FIRST
           && aiserve_agg_parse("average") == AISERVE_AGG_AVERAGE
           && aiserve_agg_parse("max") == AISERVE_AGG_MAX
           && aiserve_agg_parse("mean") == -1,
           "aggregation_strategy names");
}


/* chunks as "TYPE:start-end ..." */
static int
chunks_are(const char *const *labels, size_t n, aiserve_chunk_mode_e mode,
    const char *want)
{
    char             got[512], err[256];
    size_t           i, m, len;
    aiserve_chunk_t  c[32];

    if (aiserve_bio_chunks(labels, n, mode, c, &m, err, sizeof(err)) != 0) {
        tap_diag("error: %s", err);
        return 0;
    }

    got[0] = '\0';
    for (i = 0; i < m; i++) {
        len = strlen(got);
        snprintf(got + len, sizeof(got) - len, "%s%.*s:%zu-%zu",
                 i ? " " : "", (int) c[i].type_len, c[i].type, c[i].start,
                 c[i].end);
    }

    if (strcmp(got, want) != 0) {
        tap_diag("got  \"%s\"", got);
        tap_diag("want \"%s\"", want);
        return 0;
    }

    return 1;
}


static void
check_chunker(void)
{
    char  err[256];
    size_t  m;
    aiserve_chunk_t  c[8];

    static const char  *pipe[] = {
        "B-PER", "I-PER", "O", "O", "I-LOC", "B-LOC", "E-X", "E-X"
    };
    static const char  *docstring[] = {
        "O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O", "B-PER", "I-PER"
    };
    static const char  *bare[] = { "B", "I", "I", "O", "B" };
    static const char  *iob1[] = {
        "I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"
    };
    static const char  *iobes[] = { "S-PER", "B-LOC", "E-LOC", "S-LOC" };
    static const char  *strict[] = {
        "I-PER", "I-PER", "B-LOC", "I-LOC", "I-PER", "B-ORG"
    };
    static const char  *bad[] = { "B-PER", "E-PER" };
    static const char  *empty[] = { "O", "" };

    tap_ok(chunks_are(pipe, 8, AISERVE_CHUNK_PIPELINE,
                      "PER:0-2 O:2-4 LOC:4-5 LOC:5-6 X:6-8"),
           "pipeline: a group starts at B- or where the tag changes, O runs "
           "too, E-X grouped as its own tag");
    tap_ok(chunks_are(docstring, 9, AISERVE_CHUNK_CONLL,
                      "MISC:3-6 PER:7-9"),
           "conlleval: seqeval's get_entities docstring");
    tap_ok(chunks_are(bare, 5, AISERVE_CHUNK_CONLL, "_:0-3 _:4-5"),
           "conlleval: bare B/I have type _");
    tap_ok(chunks_are(iob1, 6, AISERVE_CHUNK_CONLL,
                      "PER:0-2 PER:2-3 LOC:4-5 ORG:5-6"),
           "conlleval: IOB1, I- starts an entity after O or another type");
    tap_ok(chunks_are(iobes, 4, AISERVE_CHUNK_CONLL,
                      "PER:0-1 LOC:1-3 LOC:3-4"),
           "conlleval: IOBES S- and E-");
    tap_ok(chunks_are(strict, 6, AISERVE_CHUNK_IOB2, "LOC:2-4 ORG:5-6"),
           "strict IOB2: I- without B- is no entity, a type change ends one");
    tap_ok(aiserve_bio_chunks(bad, 2, AISERVE_CHUNK_IOB2, c, &m, err,
                              sizeof(err)) == -1
           && strstr(err, "\"E-PER\" at token 1"),
           "strict IOB2 rejects E-: %s", err);
    tap_ok(aiserve_bio_chunks(empty, 2, AISERVE_CHUNK_CONLL, c, &m, err,
                              sizeof(err)) == -1
           && strstr(err, "empty tag at token 1"),
           "an empty tag is an error: %s", err);
}


static void
check_decode(void)
{
    char  out[64];
    size_t  n;

    static const char  *t1[] = { "Hu", "##gging", "Face", "." };
    static const size_t l1[] = { 2, 7, 4, 1 };
    static const char  *t2[] = { "do", "n't", "go", "'", "s" };
    static const size_t l2[] = { 2, 3, 2, 1, 1 };
    static const char  *t3[] = { "##z" };
    static const size_t l3[] = { 3 };

    n = aiserve_wordpiece_decode(t1, l1, 4, out);
    tap_ok(n == 13 && memcmp(out, "Hugging Face.", n) == 0,
           "decode: ## joins, \" .\" -> \".\"");
    n = aiserve_wordpiece_decode(t2, l2, 5, out);
    tap_ok(n == 12 && memcmp(out, "don't go ' s", n) == 0,
           "decode: \" n't\" -> \"n't\": \"%.*s\"", (int) n, out);
    n = aiserve_wordpiece_decode(t3, l3, 1, out);
    tap_ok(n == 3 && memcmp(out, "##z", n) == 0,
           "decode: a first token keeps its ##");
}


/*
 * "Peter lives in Zürich, Schweiz." with bert-base-cased:
 * [CLS] Peter lives in Zürich , Sc ##h ##wei ##z . [SEP]
 */

static int
ner(aiserve_tok_t *tok, aiserve_agg_e agg, const char *const *ignore,
    size_t n_ignore, const char *want)
{
    char                  got[1024], err[256];
    size_t                i, t, len;
    float                 logits[12 * 5];
    aiserve_encoding_t    enc;
    aiserve_ner_result_t  res;
    aiserve_ner_entity_t *e;

    static const char  *text = "Peter lives in Z\xc3\xbcrich, Schweiz.";
    static char        *id2label[] = { "O", "B-PER", "I-PER", "B-LOC",
                                       "I-LOC" };
    static const int    label[12] = { 0, 1, 0, 0, 3, 0, 3, 4, 0, 4, 0, 0 };

    if (aiserve_tok_encode(tok, text, strlen(text), NULL, 0, NULL, &enc, err,
                           sizeof(err)) != 0 || enc.n_tokens != 12)
    {
        tap_diag("encode: %s", err);
        return 0;
    }

    memset(logits, 0, sizeof(logits));
    for (t = 0; t < 12; t++) {
        logits[t * 5 + label[t]] = 4.0f;
    }

    if (aiserve_ner_postprocess(tok, text, &enc, logits, 5, id2label, agg,
                                ignore, NULL, n_ignore, &res, err,
                                sizeof(err)) != 0)
    {
        tap_diag("postprocess: %s", err);
        aiserve_encoding_free(&enc);
        return 0;
    }

    got[0] = '\0';
    for (i = 0; i < res.n; i++) {
        e = &res.entities[i];
        len = strlen(got);
        snprintf(got + len, sizeof(got) - len, "%s%.*s:%.*s:%u-%u",
                 i ? " " : "", (int) e->entity_len, e->entity,
                 (int) e->word_len, e->word, e->start, e->end);

        if (fabsf(e->score - 0.93172f) > 1e-4f && agg != AISERVE_AGG_AVERAGE) {
            tap_diag("score %g", e->score);
            got[0] = '!';
        }
    }

    aiserve_ner_result_free(&res);
    aiserve_encoding_free(&enc);

    if (strcmp(got, want) != 0) {
        tap_diag("got  \"%s\"", got);
        tap_diag("want \"%s\"", want);
        return 0;
    }

    return 1;
}


static void
check_ner(void)
{
    char            err[256];
    aiserve_tok_t  *tok;

    static const char  *none[] = { "" };

    tok = aiserve_tok_load("t/data/tokenizers/bert-base-cased", err,
                           sizeof(err));
    if (!tap_ok(tok != NULL, "bert-base-cased tokenizer loads")) {
        tap_diag("%s", err);
        return;
    }

    tap_ok(ner(tok, AISERVE_AGG_NONE, NULL, 0,
               "B-PER:Peter:0-5 B-LOC:Z\xc3\xbcrich:15-21 B-LOC:Sc:23-25 "
               "I-LOC:##h:25-26 I-LOC:##z:29-30"),
           "none: every token but O, labels as they are");
    tap_ok(ner(tok, AISERVE_AGG_SIMPLE, NULL, 0,
               "PER:Peter:0-5 LOC:Z\xc3\xbcrich:15-21 LOC:Sch:23-26 "
               "LOC:##z:29-30"),
           "simple: tokens grouped by B-/I-");
    tap_ok(ner(tok, AISERVE_AGG_FIRST, NULL, 0,
               "PER:Peter:0-5 LOC:Z\xc3\xbcrich:15-21 LOC:Schweiz:23-30"),
           "first: a word takes its first sub-token's label");
    tap_ok(ner(tok, AISERVE_AGG_MAX, NULL, 0,
               "PER:Peter:0-5 LOC:Z\xc3\xbcrich:15-21 LOC:Schweiz:23-30"),
           "max: the first sub-token of the highest score");
    tap_ok(ner(tok, AISERVE_AGG_AVERAGE, NULL, 0,
               "PER:Peter:0-5 LOC:Z\xc3\xbcrich:15-21 LOC:Schweiz:23-30"),
           "average: the mean scores' label (I-LOC) for Schweiz");
    tap_ok(ner(tok, AISERVE_AGG_SIMPLE, none, 0,
               "PER:Peter:0-5 O:lives in:6-14 LOC:Z\xc3\xbcrich:15-21 "
               "O:,:21-22 LOC:Sch:23-26 O:##wei:26-29 LOC:##z:29-30 "
               "O:.:30-31"),
           "ignore_labels []: the O groups too");

    aiserve_tok_free(tok);
}


int
main(void)
{
    check_functions();
    check_chunker();
    check_decode();
    check_ner();

    return tap_done();
}
