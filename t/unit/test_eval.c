/*
 * Evaluation reports against scikit-learn and seqeval: every case of
 * t/data/eval/goldens.json (tools/gen-eval-goldens.py) gives the same
 * output_dict (every double equal), the same text table byte for byte at
 * digits 2 and 4, and the same confusion matrix.  Then the errors.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "aiserve_eval.h"

#define GOLDENS  "t/data/eval/goldens.json"


static const char **
strings(json_t *a)
{
    size_t        i;
    const char  **s;

    s = malloc((json_array_size(a) + 1) * sizeof(char *));
    for (i = 0; i < json_array_size(a); i++) {
        s[i] = json_string_value(json_array_get(a, i));
    }

    return s;
}


/* every key of want in got with the same number (or object, recursively) */
static int
same_json(json_t *want, json_t *got, const char *where)
{
    const char  *key;
    json_t      *w, *g;

    if (json_is_object(want)) {
        if (!json_is_object(got) || json_object_size(want)
                                    != json_object_size(got))
        {
            tap_diag("%s: objects differ in size", where);
            return 0;
        }

        json_object_foreach(want, key, w) {
            g = json_object_get(got, key);
            if (g == NULL) {
                tap_diag("%s: no key \"%s\"", where, key);
                return 0;
            }

            if (!same_json(w, g, key)) {
                tap_diag("in %s", where);
                return 0;
            }
        }

        return 1;
    }

    if (json_is_integer(want) != json_is_integer(got)
        || json_number_value(want) != json_number_value(got))
    {
        tap_diag("%s: want %.17g (%s), got %.17g (%s)", where,
                 json_number_value(want),
                 json_is_integer(want) ? "int" : "real",
                 json_number_value(got),
                 json_is_integer(got) ? "int" : "real");
        return 0;
    }

    return 1;
}


/* label lists to indicator rows over "names" */
static int
run_multilabel(json_t *c, aiserve_report_t *rep, char *err, size_t err_len)
{
    int           rc;
    size_t        i, j, k, n, nl;
    json_t       *names, *y[2], *l;
    uint8_t      *ind[2];
    const char  **s;

    names = json_object_get(c, "names");
    y[0] = json_object_get(c, "y_true");
    y[1] = json_object_get(c, "y_pred");
    n = json_array_size(y[0]);
    nl = json_array_size(names);

    for (k = 0; k < 2; k++) {
        ind[k] = calloc(n * nl + 1, 1);

        for (i = 0; i < n; i++) {
            json_array_foreach(json_array_get(y[k], i), j, l) {
                size_t  m;

                for (m = 0; m < nl; m++) {
                    if (strcmp(json_string_value(json_array_get(names, m)),
                               json_string_value(l)) == 0)
                    {
                        ind[k][i * nl + m] = 1;
                    }
                }
            }
        }
    }

    s = strings(names);
    rc = aiserve_eval_multilabel(ind[0], ind[1], n, s, nl, rep, err, err_len);
    free(s);
    free(ind[0]);
    free(ind[1]);

    return rc;
}


static int
run_case(json_t *c, aiserve_report_t *rep, char *err, size_t err_len)
{
    int           rc;
    size_t        i, n, *lens;
    json_t       *yt, *yp;
    const char  **t, **p, ***st, ***sp;

    yt = json_object_get(c, "y_true");
    yp = json_object_get(c, "y_pred");
    n = json_array_size(yt);

    if (strcmp(json_string_value(json_object_get(c, "kind")),
               "classification") == 0)
    {
        t = strings(yt);
        p = strings(yp);
        rc = aiserve_eval_classification(t, p, n, rep, err, err_len);
        free(t);
        free(p);
        return rc;
    }

    if (strcmp(json_string_value(json_object_get(c, "kind")), "multilabel")
        == 0)
    {
        return run_multilabel(c, rep, err, err_len);
    }

    st = malloc(n * sizeof(char **));
    sp = malloc(n * sizeof(char **));
    lens = malloc(n * sizeof(size_t));

    for (i = 0; i < n; i++) {
        st[i] = strings(json_array_get(yt, i));
        sp[i] = strings(json_array_get(yp, i));
        lens[i] = json_array_size(json_array_get(yt, i));
    }

    rc = aiserve_eval_sequences((const char *const *const *) st,
                                (const char *const *const *) sp, lens, n,
                                strcmp(json_string_value(
                                           json_object_get(c, "mode")),
                                       "strict") == 0
                                ? AISERVE_CHUNK_IOB2 : AISERVE_CHUNK_CONLL,
                                rep, err, err_len);

    for (i = 0; i < n; i++) {
        free(st[i]);
        free(sp[i]);
    }

    free(st);
    free(sp);
    free(lens);
    return rc;
}


static void
check_goldens(void)
{
    char               err[256], *text;
    size_t             i;
    json_t            *doc, *c, *got;
    const char        *name, *want;
    json_error_t       jerr;
    aiserve_report_t   rep;

    doc = json_load_file(GOLDENS, 0, &jerr);
    if (!tap_ok(doc != NULL, "%s loads", GOLDENS)) {
        tap_diag("%s", jerr.text);
        return;
    }

    json_array_foreach(json_object_get(doc, "cases"), i, c) {
        name = json_string_value(json_object_get(c, "name"));

        if (!tap_ok(run_case(c, &rep, err, sizeof(err)) == 0,
                    "%s (%s): evaluates", name,
                    json_string_value(json_object_get(c, "kind"))))
        {
            tap_diag("%s", err);
            continue;
        }

        got = aiserve_report_json(&rep);
        tap_ok(same_json(json_object_get(c, "dict"), got, "report"),
               "%s: output_dict equal", name);
        json_decref(got);

        text = aiserve_report_text(&rep, 2);
        want = json_string_value(json_object_get(c, "text2"));
        if (!tap_ok(strcmp(text, want) == 0, "%s: text, digits=2", name)) {
            tap_diag("want:\n%s", want);
            tap_diag("got:\n%s", text);
        }
        free(text);

        text = aiserve_report_text(&rep, 4);
        want = json_string_value(json_object_get(c, "text4"));
        if (!tap_ok(strcmp(text, want) == 0, "%s: text, digits=4", name)) {
            tap_diag("want:\n%s", want);
            tap_diag("got:\n%s", text);
        }
        free(text);

        got = aiserve_confusion_json(&rep);
        tap_ok(json_equal(json_object_get(c, "confusion"), got),
               "%s: confusion matrix", name);
        json_decref(got);

        aiserve_report_free(&rep);
    }

    json_decref(doc);
}


static void
check_errors(void)
{
    char               err[256];
    aiserve_report_t   rep;

    static const char  *bad[] = { "B-PER", "E-PER", "O" };
    static const char  *ok[] = { "B-PER", "I-PER", "O" };
    static const char  *empty[] = { "B-PER", "", "O" };
    static const char  *none[] = { "O", "O" };
    static const size_t len[] = { 3 };
    const char *const  *s_bad[] = { bad };
    const char *const  *s_ok[] = { ok };
    const char *const  *s_empty[] = { empty };
    const char *const  *s_none[] = { none };
    static const size_t len2[] = { 2 };

    tap_ok(aiserve_eval_sequences(s_bad, s_ok, len, 1, AISERVE_CHUNK_IOB2,
                                  &rep, err, sizeof(err)) == -1
           && strstr(err, "E-PER") && strstr(err, "token 1")
           && strstr(err, "sentence 0"),
           "strict IOB2 rejects E-PER, naming it: %s", err);

    tap_ok(aiserve_eval_sequences(s_ok, s_bad, len, 1, AISERVE_CHUNK_CONLL,
                                  &rep, err, sizeof(err)) == 0,
           "the default mode reads E-PER (conlleval)");
    aiserve_report_free(&rep);

    tap_ok(aiserve_eval_sequences(s_ok, s_empty, len, 1, AISERVE_CHUNK_CONLL,
                                  &rep, err, sizeof(err)) == -1
           && strstr(err, "empty tag at token 1"),
           "an empty tag is an error: %s", err);

    tap_ok(aiserve_eval_sequences(s_none, s_none, len2, 1,
                                  AISERVE_CHUNK_CONLL, &rep, err,
                                  sizeof(err)) == -1
           && strstr(err, "no entities"),
           "no entity on either side is an error: %s", err);

    tap_ok(aiserve_eval_classification(ok, ok, 0, &rep, err, sizeof(err))
           == -1, "no labels is an error: %s", err);

    tap_ok(aiserve_eval_multilabel((const uint8_t *) "", (const uint8_t *) "",
                                   0, ok, 3, &rep, err, sizeof(err)) == -1,
           "multi-label without samples is an error: %s", err);
}


/* stdout of a command, malloc'ed */
static char *
run(const char *cmd, int *status)
{
    FILE    *p;
    char    *out;
    size_t   n, cap;

    p = popen(cmd, "r");
    if (p == NULL) {
        return NULL;
    }

    cap = 1 << 16;
    out = malloc(cap);
    n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    *status = pclose(p);

    return out;
}


static json_t *
golden(json_t *doc, const char *name, const char *key)
{
    size_t   i;
    json_t  *c;

    json_array_foreach(json_object_get(doc, "cases"), i, c) {
        if (strcmp(json_string_value(json_object_get(c, "name")), name)
            == 0)
        {
            return json_object_get(c, key);
        }
    }

    return NULL;
}


static const char *
golden_text(json_t *doc, const char *name, const char *key)
{
    json_t  *v;

    v = golden(doc, name, key);

    return v ? json_string_value(v) : "";
}


static void
check_tool(void)
{
    int            status;
    char          *out;
    json_t        *doc, *got;
    json_error_t   jerr;

    doc = json_load_file(GOLDENS, 0, &jerr);
    if (doc == NULL) {
        tap_ok(0, "%s loads", GOLDENS);
        return;
    }

    out = run("tools/aiserve-eval t/data/eval/gold.conll "
              "t/data/eval/pred.conll", &status);
    tap_ok(out && status == 0
           && strcmp(out, golden_text(doc, "example files gold.conll "
                                      "pred.conll", "text2")) == 0,
           "aiserve-eval gold.conll pred.conll prints seqeval's table");
    free(out);

    out = run("tools/aiserve-eval --mode strict --digits 4 "
              "t/data/eval/gold.conll t/data/eval/pred.conll", &status);
    tap_ok(out && status == 0
           && strcmp(out, golden_text(doc, "example files gold.conll "
                                      "pred.conll (strict)", "text4")) == 0,
           "aiserve-eval --mode strict --digits 4: seqeval's strict table");
    free(out);

    out = run("tools/aiserve-eval --label-column category "
              "t/data/eval/gold.csv t/data/eval/pred.csv", &status);
    tap_ok(out && status == 0
           && strcmp(out, golden_text(doc, "example files gold.csv pred.csv",
                                      "text2")) == 0,
           "aiserve-eval gold.csv pred.csv prints sklearn's table");
    free(out);

    out = run("tools/aiserve-eval t/data/eval/gold-multi.jsonl "
              "t/data/eval/pred-multi.jsonl", &status);
    tap_ok(out && status == 0
           && strcmp(out, golden_text(doc, "multi-label", "text2")) == 0,
           "aiserve-eval on multi-label JSONL prints sklearn's table");
    free(out);

    out = run("tools/aiserve-eval --json --label-column category "
              "t/data/eval/gold.csv t/data/eval/pred.csv", &status);
    got = out ? json_loads(out, 0, &jerr) : NULL;
    tap_ok(got != NULL && status == 0
           && same_json(golden(doc, "example files gold.csv pred.csv",
                               "dict"),
                        json_object_get(got, "report"), "report")
           && json_integer_value(json_array_get(json_array_get(
                  json_object_get(json_object_get(got, "confusion_matrix"),
                                  "matrix"), 0), 1)) == 1,
           "aiserve-eval --json: output_dict and the confusion matrix");
    json_decref(got);
    free(out);

    out = run("tools/aiserve-eval t/data/eval/gold.conll "
              "t/data/train/ner.conll 2>&1", &status);
    if (out && strchr(out, '\n')) {
        *strchr(out, '\n') = '\0';
    }

    tap_ok(out && status != 0
           && strstr(out, "ner.conll:3: 9 tokens, but t/data/eval/gold.conll:1 "
                     "has 6"),
           "files that do not line up are an error: %s", out ? out : "");
    free(out);

    out = run("tools/aiserve-eval --help", &status);
    tap_ok(out && status == 0 && strncmp(out, "usage: aiserve-eval", 19)
           == 0, "aiserve-eval --help");
    free(out);

    json_decref(doc);
}


int
main(void)
{
    check_goldens();
    check_errors();
    check_tool();

    return tap_done();
}
