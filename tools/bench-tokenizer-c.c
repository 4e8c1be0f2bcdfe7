/*
 * The C half of tools/bench-tokenizer: encodes every line of a JSON-lines
 * file (one JSON string per line) with aiserve's tokenizer, one text at a
 * time on one thread, for at least SECONDS, and prints one JSON object:
 * {"bytes", "chars", "tokens", "seconds", "passes"} per pass totals.
 *
 * usage: build/bench-tokenizer-c MODEL_DIR CORPUS.jsonl [SECONDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "aiserve_tokenizer.h"


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


int
main(int argc, char **argv)
{
    aiserve_tok_t       *tok;
    aiserve_tok_opts_t   opts;
    aiserve_encoding_t   enc;
    char                 err[512], *line, **texts;
    size_t               cap, n, ncap, *lens, i, bytes, chars, tokens, passes;
    size_t               k;
    ssize_t              r;
    FILE                *f;
    json_t              *j;
    double               t0, t, secs;

    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR CORPUS.jsonl [SECONDS]\n",
                argv[0]);
        return 2;
    }
    secs = argc > 3 ? atof(argv[3]) : 3.0;

    tok = aiserve_tok_load(argv[1], err, sizeof(err));
    if (tok == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }

    f = fopen(argv[2], "r");
    if (f == NULL) {
        perror(argv[2]);
        return 1;
    }
    texts = NULL;
    lens = NULL;
    n = ncap = 0;
    line = NULL;
    cap = 0;
    bytes = chars = 0;
    while ((r = getline(&line, &cap, f)) > 0) {
        j = json_loadb(line, (size_t) r, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                       NULL);
        if (!json_is_string(j)) {
            json_decref(j);
            continue;
        }
        if (n == ncap) {
            ncap = ncap ? ncap * 2 : 1024;
            texts = realloc(texts, ncap * sizeof(char *));
            lens = realloc(lens, ncap * sizeof(size_t));
        }
        lens[n] = json_string_length(j);
        texts[n] = malloc(lens[n] + 1);
        memcpy(texts[n], json_string_value(j), lens[n] + 1);
        bytes += lens[n];
        for (k = 0; k < lens[n]; k++) {
            chars += ((unsigned char) texts[n][k] & 0xC0) != 0x80;
        }
        n++;
        json_decref(j);
    }
    fclose(f);

    aiserve_tok_opts_default(&opts);
    opts.truncation = 0;

    tokens = 0;
    passes = 0;
    t0 = now();
    do {
        for (i = 0; i < n; i++) {
            if (aiserve_tok_encode(tok, texts[i], lens[i], NULL, 0, &opts,
                                   &enc, err, sizeof(err)) != 0)
            {
                fprintf(stderr, "line %zu: %s\n", i + 1, err);
                return 1;
            }
            tokens += enc.n_tokens;
            aiserve_encoding_free(&enc);
        }
        passes++;
        t = now() - t0;
    } while (t < secs);

    printf("{\"bytes\": %zu, \"chars\": %zu, \"tokens\": %zu, "
           "\"seconds\": %.6f, \"passes\": %zu}\n", bytes * passes,
           chars * passes, tokens, t, passes);

    for (i = 0; i < n; i++) {
        free(texts[i]);
    }
    free(texts);
    free(lens);
    free(line);
    aiserve_tok_free(tok);

    return 0;
}
