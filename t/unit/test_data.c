/*
 * Training data readers, label sets and featurization.
 *
 *  - the files of t/data/train/ featurize as transformers does
 *    (t/data/train/features.json from tools/gen-data-goldens.py):
 *    input_ids, token_type_ids, label ids, -100 on sub-tokens, words cut
 *  - multi-label, regression, IOB1/IOBES conversion, spans to tags
 *  - every kind of bad data is an error naming file, line and field
 *  - the real sets of ../shared/data (AISERVE_SHARED_DATA): Banking77
 *    (10,003 rows, 77 labels) and WNUT-17 (3,394 sentences)
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "tap.h"
#include "aiserve_data.h"

#define TRAIN  "t/data/train/"


static aiserve_tok_t *
load_tok(const char *name)
{
    char            err[256];
    aiserve_tok_t  *tok;

    tok = aiserve_tok_load(strcmp(name, "minilm") == 0
                           ? "models/all-MiniLM-L6-v2"
                           : "t/data/tokenizers/bert-base-cased",
                           err, sizeof(err));
    if (tok == NULL) {
        tap_diag("%s", err);
    }

    return tok;
}


static int
same_ints(json_t *want, const int32_t *got, size_t n)
{
    size_t  i;

    if (json_array_size(want) != n) {
        tap_diag("want %zu values, got %zu", json_array_size(want), n);
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (json_integer_value(json_array_get(want, i)) != got[i]) {
            tap_diag("at %zu: want %lld, got %d", i,
                     (long long) json_integer_value(json_array_get(want, i)),
                     got[i]);
            return 0;
        }
    }

    return 1;
}


static void
check_goldens(void)
{
    int                   ok;
    char                  err[512];
    size_t                i, k;
    json_t               *doc, *c, *feat, *labels;
    const char           *file;
    json_error_t          jerr;
    aiserve_tok_t        *tok;
    aiserve_dataset_t     ds;
    aiserve_features_t    f;
    aiserve_label_set_t   set;
    aiserve_data_opts_t   opts;
    char                  path[256];

    doc = json_load_file(TRAIN "features.json", 0, &jerr);
    if (!tap_ok(doc != NULL, "features.json loads")) {
        return;
    }

    json_array_foreach(json_object_get(doc, "cases"), i, c) {
        file = json_string_value(json_object_get(c, "file"));
        snprintf(path, sizeof(path), TRAIN "%s", file);

        aiserve_data_opts_default(&opts);
        opts.label_column = "category";

        if (!tap_ok(aiserve_data_read(path, &opts, &ds, err, sizeof(err))
                    == 0, "%s reads", file))
        {
            tap_diag("%s", err);
            continue;
        }

        tap_ok(aiserve_labels_build(&ds, &set, err, sizeof(err)) == 0,
               "%s: label set", file);

        labels = json_object_get(c, "labels");
        ok = json_array_size(labels) == set.n;
        for (k = 0; ok && k < set.n; k++) {
            ok = strcmp(json_string_value(json_array_get(labels, k)),
                        set.names[k]) == 0;
        }
        tap_ok(ok, "%s: labels sorted as Python sorts them (%zu)", file,
               set.n);

        tok = load_tok(json_string_value(json_object_get(c, "tokenizer")));

        tap_ok(json_array_size(json_object_get(c, "features")) == ds.n,
               "%s: %zu examples", file, ds.n);

        json_array_foreach(json_object_get(c, "features"), k, feat) {
            if (k >= ds.n || tok == NULL) {
                break;
            }

            if (!tap_ok(aiserve_featurize(tok, &ds, k, &set,
                                          json_integer_value(
                                              json_object_get(c,
                                                  "max_length")),
                                          &f, err, sizeof(err)) == 0,
                        "%s[%zu] featurizes", file, k))
            {
                tap_diag("%s", err);
                continue;
            }

            ok = same_ints(json_object_get(feat, "input_ids"), f.input_ids,
                           f.n_tokens)
                 && same_ints(json_object_get(feat, "token_type_ids"),
                              f.token_type_ids, f.n_tokens);

            if (json_object_get(feat, "labels")) {
                ok = ok && same_ints(json_object_get(feat, "labels"),
                                     f.labels, f.n_tokens)
                     && (size_t) json_integer_value(
                            json_object_get(feat, "words_cut"))
                        == f.words_cut;

            } else {
                ok = ok && json_integer_value(json_object_get(feat, "label"))
                           == f.label;
            }

            tap_ok(ok, "%s[%zu], max_length %lld: as transformers (%zu "
                   "tokens, %zu words cut)", file, k,
                   (long long) json_integer_value(
                       json_object_get(c, "max_length")),
                   f.n_tokens, f.words_cut);

            aiserve_features_free(&f);
        }

        aiserve_tok_free(tok);
        aiserve_labels_free(&set);
        aiserve_dataset_free(&ds);
    }

    json_decref(doc);
}


static void
check_kinds(void)
{
    char                 err[512];
    size_t               k;
    aiserve_tok_t       *tok;
    aiserve_dataset_t    ds;
    aiserve_features_t   f;
    aiserve_label_set_t  set;
    aiserve_data_opts_t  opts;

    tok = load_tok("bert-base-cased");
    if (tok == NULL) {
        tap_ok(0, "tokenizer loads");
        return;
    }

    /* multi-label */
    tap_ok(aiserve_data_read(TRAIN "multi.jsonl", NULL, &ds, err,
                             sizeof(err)) == 0
           && ds.kind == AISERVE_LABELS_MULTI && ds.n == 3,
           "multi.jsonl: 3 multi-label examples");
    tap_ok(aiserve_labels_build(&ds, &set, err, sizeof(err)) == 0
           && set.n == 2 && strcmp(set.names[0], "negative") == 0,
           "multi.jsonl: labels negative, positive");
    tap_ok(aiserve_featurize(tok, &ds, 0, &set, 0, &f, err, sizeof(err)) == 0
           && f.targets[0] == 1.0f && f.targets[1] == 1.0f,
           "multi.jsonl[0]: targets 1, 1");
    aiserve_features_free(&f);
    tap_ok(aiserve_featurize(tok, &ds, 1, &set, 0, &f, err, sizeof(err)) == 0
           && f.targets[0] == 0.0f && f.targets[1] == 0.0f,
           "multi.jsonl[1]: no labels, targets 0, 0");
    aiserve_features_free(&f);
    aiserve_labels_free(&set);
    aiserve_dataset_free(&ds);

    /* regression on pairs */
    tap_ok(aiserve_data_read(TRAIN "regression.jsonl", NULL, &ds, err,
                             sizeof(err)) == 0
           && ds.kind == AISERVE_LABELS_REGRESSION
           && ds.examples[1].value == 0.25
           && ds.examples[1].text_pair != NULL,
           "regression.jsonl: numbers and text pairs");
    tap_ok(aiserve_labels_build(&ds, &set, err, sizeof(err)) == 0
           && set.n == 1 && strcmp(set.names[0], "LABEL_0") == 0,
           "regression: one label, LABEL_0");
    tap_ok(aiserve_featurize(tok, &ds, 0, &set, 0, &f, err, sizeof(err)) == 0
           && f.targets[0] == 5.0f
           && f.token_type_ids[f.n_tokens - 1] == 1
           && f.token_type_ids[0] == 0,
           "regression.jsonl[0]: target 5, token_type_ids 0 then 1");
    aiserve_features_free(&f);
    aiserve_labels_free(&set);
    aiserve_dataset_free(&ds);

    /* IOB1 and IOBES become IOB2 */
    tap_ok(aiserve_data_read(TRAIN "ner-iob1.conll", NULL, &ds, err,
                             sizeof(err)) == 0 && ds.n == 2,
           "ner-iob1.conll: 2 sentences");
    tap_ok(ds.n == 2
           && strcmp(ds.examples[0].tags[1], "B-location") == 0
           && strcmp(ds.examples[0].tags[2], "I-location") == 0
           && strcmp(ds.examples[0].tags[5], "B-corporation") == 0
           && strcmp(ds.examples[0].tags[6], "B-product") == 0
           && strcmp(ds.examples[1].tags[0], "B-person") == 0
           && strcmp(ds.examples[1].tags[3], "I-location") == 0,
           "IOB1 I- starting an entity -> B-, IOBES S- -> B-, E- -> I-");
    tap_ok(ds.converted_tags == 5 && strstr(ds.warning, "5 tags converted")
           && strstr(ds.warning, "line 2"),
           "the warning counts them: %s", ds.warning);
    aiserve_dataset_free(&ds);

    aiserve_data_opts_default(&opts);
    opts.strict_iob2 = 1;
    tap_ok(aiserve_data_read(TRAIN "ner-iob1.conll", &opts, &ds, err,
                             sizeof(err)) == -1
           && strstr(err, "ner-iob1.conll:2: field \"tag\"")
           && strstr(err, "\"I-location\" after \"O\""),
           "strict IOB2: I-X after O is an error: %s", err);

    aiserve_data_opts_default(&opts);
    opts.raw_tags = 1;
    tap_ok(aiserve_data_read(TRAIN "ner-iob1.conll", &opts, &ds, err,
                             sizeof(err)) == 0
           && strcmp(ds.examples[0].tags[1], "I-location") == 0
           && strcmp(ds.examples[1].tags[0], "S-person") == 0
           && ds.converted_tags == 0,
           "raw_tags: tags kept as written (for evaluation)");
    aiserve_dataset_free(&ds);

    /* CoNLL: -DOCSTART- skipped, tabs and spaces, last column */
    tap_ok(aiserve_data_read(TRAIN "ner.conll", NULL, &ds, err, sizeof(err))
           == 0 && ds.n == 3 && ds.examples[0].line == 3
           && ds.examples[2].n_tokens == 7
           && strcmp(ds.examples[2].tokens[0], "Empire") == 0
           && strcmp(ds.examples[2].tags[0], "B-location") == 0
           && ds.examples[2].lines[6] == 22,
           "ner.conll: -DOCSTART- skipped, 3 sentences, token and last "
           "column");
    aiserve_dataset_free(&ds);

    /* CSV quoting */
    aiserve_data_opts_default(&opts);
    opts.label_column = "category";
    tap_ok(aiserve_data_read(TRAIN "classify.csv", &opts, &ds, err,
                             sizeof(err)) == 0 && ds.n == 4
           && strcmp(ds.examples[1].text, "Can I track my card, while it is "
                     "in the process of delivery?") == 0
           && strcmp(ds.examples[2].text, "He said \"top up\" twice\nand "
                     "left") == 0
           && ds.examples[3].line == 7,
           "classify.csv: quotes, commas, \"\" and a line break in a field, "
           "CRLF, an empty line");
    aiserve_dataset_free(&ds);

    /* spans to word tags through the tokenizer's offsets */
    tap_ok(aiserve_data_read(TRAIN "spans.jsonl", NULL, &ds, err,
                             sizeof(err)) == 0
           && ds.kind == AISERVE_LABELS_SPANS && ds.n == 3,
           "spans.jsonl: 3 examples");
    tap_ok(aiserve_labels_build(&ds, &set, err, sizeof(err)) == 0
           && set.n == 7 && strcmp(set.names[0], "B-LOC") == 0
           && strcmp(set.names[6], "O") == 0,
           "spans: labels B-/I- of each entity label, and O");

    {
        static const char  *want[3][12] = {
            { "B-PER", "I-PER", "O", "O", "B-LOC", "O", "B-LOC", "I-LOC",
              "O", NULL },
            { "O", "O", "O", NULL },
            { "B-ORG", "I-ORG", "I-ORG", "O", "B-PER", "O", NULL }
        };
        int     ok;
        size_t  t, w;

        for (k = 0; k < 3; k++) {
            ok = aiserve_featurize(tok, &ds, k, &set, 0, &f, err,
                                   sizeof(err)) == 0;
            w = 0;

            for (t = 0; ok && t < f.n_tokens; t++) {
                if (f.labels[t] == AISERVE_TRAIN_IGNORE) {
                    continue;
                }

                if (want[k][w] == NULL
                    || strcmp(set.names[f.labels[t]], want[k][w]) != 0)
                {
                    tap_diag("word %zu: %s, want %s", w,
                             set.names[f.labels[t]],
                             want[k][w] ? want[k][w] : "(none)");
                    ok = 0;
                }

                w++;
            }

            tap_ok(ok && want[k][w] == NULL, "spans.jsonl[%zu]: word tags",
                   k);
            aiserve_features_free(&f);
        }

        ok = aiserve_featurize(tok, &ds, 0, &set, 5, &f, err, sizeof(err))
             == 0;
        tap_ok(ok && f.n_tokens == 5 && f.words_cut == 6,
               "spans.jsonl[0], max_length 5: %zu words cut (of Peter "
               "Blackburn flew from Zurich to New York .)", f.words_cut);
        aiserve_features_free(&f);
    }

    aiserve_labels_free(&set);
    aiserve_dataset_free(&ds);
    aiserve_tok_free(tok);
}


/* bad data: file, line, field */

static void
bad(const char *name, const char *data, const char *want,
    const aiserve_data_opts_t *opts)
{
    char               err[512];
    aiserve_dataset_t  ds;
    int                rc;

    err[0] = '\0';
    rc = aiserve_data_parse(name, data, strlen(data), opts, &ds, err,
                            sizeof(err));

    if (!tap_ok(rc == -1 && strstr(err, want) != NULL, "%s: %s", name,
                want))
    {
        tap_diag("got rc %d: %s", rc, err);
    }

    if (rc == 0) {
        aiserve_dataset_free(&ds);
    }
}


static void
bad_validation(const char *train, const char *tdata, const char *valid,
    const char *vdata, const char *want, const aiserve_data_opts_t *opts)
{
    char                 err[512];
    aiserve_dataset_t    t, v;
    aiserve_label_set_t  set;

    err[0] = '\0';

    if (aiserve_data_parse(train, tdata, strlen(tdata), opts, &t, err,
                           sizeof(err)) != 0
        || aiserve_labels_build(&t, &set, err, sizeof(err)) != 0)
    {
        tap_ok(0, "%s reads: %s", train, err);
        return;
    }

    if (aiserve_data_parse(valid, vdata, strlen(vdata), opts, &v, err,
                           sizeof(err)) != 0)
    {
        tap_ok(0, "%s reads: %s", valid, err);

    } else {
        if (!tap_ok(aiserve_labels_check(&set, &v, err, sizeof(err)) == -1
                    && strstr(err, want) != NULL, "%s: %s", valid, want))
        {
            tap_diag("got: %s", err);
        }

        aiserve_dataset_free(&v);
    }

    aiserve_labels_free(&set);
    aiserve_dataset_free(&t);
}


static void
check_errors(void)
{
    char                 err[512];
    aiserve_dataset_t    ds;
    aiserve_data_opts_t  csv, strict;

    aiserve_data_opts_default(&csv);
    csv.label_column = "category";
    aiserve_data_opts_default(&strict);
    strict.strict_iob2 = 1;

    bad("e.jsonl", "{\"text\": \"a\", \"label\": \"x\"}\n"
        "{\"text\": \"  \", \"label\": \"x\"}\n",
        "e.jsonl:2: field \"text\": empty text", NULL);
    bad("e.jsonl", "{\"label\": \"x\"}\n",
        "e.jsonl:1: field \"text\" is missing", NULL);
    bad("e.jsonl", "{\"text\": \"a\"}\n",
        "e.jsonl:1: field \"label\" is missing", NULL);
    bad("e.jsonl", "{\"text\": \"a\", \"label\": true}\n",
        "e.jsonl:1: field \"label\" must be a non-empty string", NULL);
    bad("e.jsonl", "{\"text\": \"a\", \"label\": [\"x\", 3]}\n",
        "e.jsonl:1: field \"label[1]\" must be a non-empty string", NULL);
    bad("e.jsonl", "{\"text\": \"a\", \"label\": \"x\"}\n"
        "{\"text\": \"b\", \"label\": [\"x\"]}\n",
        "e.jsonl:2: field \"label\": a list of labels here, but line 1 has "
        "one label", NULL);
    bad("e.jsonl", "{\"text\": \"a\", \"label\": \"x\"\n",
        "e.jsonl:1: invalid JSON", NULL);
    bad("e.jsonl", "[1, 2]\n", "e.jsonl:1: a line must be a JSON object",
        NULL);
    bad("e.jsonl", "{\"text\": \"caf\xc3\", \"label\": \"x\"}\n",
        "e.jsonl:1: invalid UTF-8 at byte 14", NULL);
    bad("t.jsonl", "{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\"]}\n",
        "t.jsonl:1: fields \"tokens\" and \"tags\": 2 tokens but 1 tags",
        NULL);
    bad("t.jsonl", "{\"tokens\": [\"a\", \"\"], \"tags\": [\"O\", \"O\"]}\n",
        "t.jsonl:1: field \"tokens[1]\" must be a non-empty string", NULL);
    bad("t.jsonl", "{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\", \"PER\"]}"
        "\n", "t.jsonl:1: field \"tags[1]\": \"PER\" is not an IOB tag",
        NULL);
    bad("t.jsonl", "{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\", \"I-X\"]}"
        "\n", "t.jsonl:1: field \"tags[1]\": \"I-X\" after \"O\" starts an "
        "entity without B-X", &strict);
    bad("t.jsonl", "{\"tokens\": [\"b\"], \"tags\": [\"I-X\"]}\n",
        "\"I-X\" after \"the start\"", &strict);
    bad("s.jsonl", "{\"text\": \"abc\", \"entities\": [{\"start\": 1, "
        "\"end\": 4, \"label\": \"X\"}]}\n",
        "s.jsonl:1: field \"entities[0]\": [1, 4) is not a span of the text "
        "(3 code points)", NULL);
    bad("s.jsonl", "{\"text\": \"abcdef\", \"entities\": [{\"start\": 2, "
        "\"end\": 4, \"label\": \"X\"}, {\"start\": 0, \"end\": 3, \"label\": "
        "\"Y\"}]}\n", "s.jsonl:1: field \"entities\": [2, 4) overlaps [0, 3)",
        NULL);
    bad("s.jsonl", "{\"text\": \"abc\", \"entities\": [{\"start\": 0, "
        "\"end\": 1}]}\n", "s.jsonl:1: field \"entities[0].label\"", NULL);
    bad("e.csv", "text,category\nhello,x\n,y\n",
        "e.csv:3: field \"text\": empty text", &csv);
    bad("e.csv", "text,category\nhello,x\nhi,there,y\n",
        "e.csv:3: 3 fields, but the header has 2", &csv);
    bad("e.csv", "text,category\n\"hello,x\nhi,y\n",
        "e.csv:2: field 1: the quote opened here is never closed", &csv);
    bad("e.csv", "text,category\n\"hello\"x,y\n",
        "e.csv:2: field 1: text after the closing quote", &csv);
    bad("e.csv", "text,category\nhello,x\n", "e.csv:1: no column \"label\" "
        "in the header (\"text\", \"category\")", NULL);
    bad("e.csv", "text,category\nhello,x\nbad \xff byte,y\n",
        "e.csv:3: field \"text\": invalid UTF-8 at byte 5", &csv);
    bad("e.csv", "text,category\nhello,\n",
        "e.csv:2: field \"category\": empty label", &csv);
    bad("e.conll", "EU\tB-ORG\nrejects\n",
        "e.conll:2: expected a token and its tag", NULL);
    bad("e.conll", "EU\tB-ORG\n\nx\tO\nZ\xc3\xbcr\xc3\tO\n",
        "e.conll:4: field \"token\": invalid UTF-8 at byte 5", NULL);
    bad("e.conll", "EU\tB-ORG\nrejects\tO\nit\tI-ORG\n",
        "e.conll:3: field \"tag\": \"I-ORG\" after \"O\"", &strict);
    bad("e.conll", "EU\tBORG\n", "e.conll:1: field \"tag\": \"BORG\" is not "
        "an IOB tag", NULL);
    bad("e.conll", "-DOCSTART- O\n\n\n", "e.conll: no examples", NULL);
    bad("e.jsonl", "", "e.jsonl: no examples", NULL);

    tap_ok(aiserve_data_read("t/data/train/no-such-file.csv", NULL, &ds, err,
                             sizeof(err)) == -1
           && strstr(err, "no-such-file.csv: No such file"),
           "a missing file: %s", err);

    bad_validation("t.jsonl", "{\"text\": \"a\", \"label\": \"x\"}\n",
                   "v.jsonl", "{\"text\": \"a\", \"label\": \"x\"}\n"
                   "{\"text\": \"b\", \"label\": \"nope\"}\n",
                   "v.jsonl:2: field \"label\": unknown label \"nope\" (not "
                   "in the training labels)", NULL);
    bad_validation("t.csv", "text,category\na,x\n", "v.csv",
                   "text,category\na,x\nb,y\n",
                   "v.csv:3: field \"category\": unknown label \"y\"", &csv);
    bad_validation("t.conll", "a\tB-X\nb\tO\n", "v.conll",
                   "a\tB-X\n\nb\tO\nc\tB-Y\n",
                   "v.conll:4: field \"tag\": unknown tag \"B-Y\"", NULL);
    bad_validation("t.jsonl", "{\"text\": \"a\", \"label\": [\"x\"]}\n",
                   "v.jsonl", "{\"text\": \"a\", \"label\": [\"x\", \"z\"]}\n",
                   "v.jsonl:1: field \"label[1]\": unknown label \"z\"",
                   NULL);
    bad_validation("t.jsonl", "{\"text\": \"ab\", \"entities\": [{\"start\": "
                   "0, \"end\": 1, \"label\": \"X\"}]}\n", "v.jsonl",
                   "{\"text\": \"ab\", \"entities\": [{\"start\": 0, \"end\": "
                   "1, \"label\": \"Y\"}]}\n",
                   "v.jsonl:1: field \"entities[0].label\": unknown label "
                   "\"Y\"", NULL);
}


/* the real sets in shared/data */

static void
check_shared(void)
{
    int                  rc;
    char                 err[512], path[512];
    size_t               i, n, cut;
    const char          *dir;
    struct stat          st;
    aiserve_tok_t       *tok;
    aiserve_dataset_t    ds, v;
    aiserve_features_t   f;
    aiserve_label_set_t  set;
    aiserve_data_opts_t  opts;

    static const char  *wnut[] = {
        "emerging.dev.conll", "emerging.test.annotated"
    };

    dir = getenv("AISERVE_SHARED_DATA");
    dir = dir ? dir : "../shared/data";

    snprintf(path, sizeof(path), "%s/banking77/train.csv", dir);
    if (stat(path, &st) != 0) {
        tap_ok(1, "shared data # SKIP no %s (set AISERVE_SHARED_DATA)", path);
        return;
    }

    tok = load_tok("minilm");
    if (tok == NULL) {
        tap_ok(0, "all-MiniLM-L6-v2 tokenizer loads");
        return;
    }

    aiserve_data_opts_default(&opts);
    opts.label_column = "category";

    rc = aiserve_data_read(path, &opts, &ds, err, sizeof(err));
    tap_ok(rc == 0 && ds.n == 10003, "banking77/train.csv: %zu rows "
           "(10,003)", ds.n);
    rc = aiserve_labels_build(&ds, &set, err, sizeof(err));
    tap_ok(rc == 0 && set.n == 77, "banking77: %zu labels (77)", set.n);

    snprintf(path, sizeof(path), "%s/banking77/test.csv", dir);
    rc = aiserve_data_read(path, &opts, &v, err, sizeof(err));
    rc = rc ? rc : aiserve_labels_check(&set, &v, err, sizeof(err));
    tap_ok(rc == 0 && v.n == 3080, "banking77/test.csv: %zu rows (3,080), "
           "labels all known", v.n);
    aiserve_dataset_free(&v);

    n = 0;
    for (i = 0; i < ds.n; i++) {
        if (aiserve_featurize(tok, &ds, i, &set, 0, &f, err, sizeof(err))
            != 0)
        {
            tap_diag("%s", err);
            break;
        }

        n += f.n_tokens;
        aiserve_features_free(&f);
    }

    tap_ok(i == ds.n, "banking77 train featurizes: %zu tokens", n);
    aiserve_labels_free(&set);
    aiserve_dataset_free(&ds);

    snprintf(path, sizeof(path), "%s/wnut17/wnut17train.conll", dir);
    rc = aiserve_data_read(path, NULL, &ds, err, sizeof(err));
    tap_ok(rc == 0 && ds.n == 3394 && ds.converted_tags == 0,
           "wnut17train.conll: %zu sentences (3,394), IOB2 as it is", ds.n);
    rc = aiserve_labels_build(&ds, &set, err, sizeof(err));
    tap_ok(rc == 0 && set.n == 13, "wnut17: %zu tags (13: O and B-/I- of 6 "
           "types)", set.n);

    for (i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/wnut17/%s", dir, wnut[i]);
        rc = aiserve_data_read(path, NULL, &v, err, sizeof(err));
        rc = rc ? rc : aiserve_labels_check(&set, &v, err, sizeof(err));
        tap_ok(rc == 0 && v.n == (i == 0 ? 1009 : 1287), "%s: %zu sentences "
               "(%d), tags all known", wnut[i], v.n, i == 0 ? 1009 : 1287);
        aiserve_dataset_free(&v);
    }

    n = 0;
    cut = 0;
    for (i = 0; i < ds.n; i++) {
        if (aiserve_featurize(tok, &ds, i, &set, 32, &f, err, sizeof(err))
            != 0)
        {
            tap_diag("%s", err);
            break;
        }

        n += f.n_tokens;
        cut += f.words_cut;
        aiserve_features_free(&f);
    }

    tap_ok(i == ds.n && cut > 0, "wnut17 train featurizes at max_length 32: "
           "%zu tokens, %zu words cut", n, cut);

    aiserve_labels_free(&set);
    aiserve_dataset_free(&ds);
    aiserve_tok_free(tok);
}


int
main(void)
{
    check_goldens();
    check_kinds();
    check_errors();
    check_shared();

    return tap_done();
}
