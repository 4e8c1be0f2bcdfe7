/*
 * Helpers shared by the encoder unit tests: fixture lines (JSON lines from
 * tools/gen-encoder-fixtures.py), vector comparisons and bf16 rounding.
 */
#ifndef AISERVE_ENCODER_UTIL_H
#define AISERVE_ENCODER_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "aiserve_model.h"

/* All lines of a JSON-lines file, as an array; NULL if it cannot be read. */
static inline json_t *
enc_load_jsonl(const char *path)
{
    FILE          *f = fopen(path, "r");
    json_t        *arr, *j;
    json_error_t   jerr;
    char          *line = NULL;
    size_t         cap = 0;

    if (f == NULL) {
        return NULL;
    }
    arr = json_array();
    while (getline(&line, &cap, f) > 0) {
        j = json_loads(line, 0, &jerr);
        if (j == NULL) {
            printf("# %s: %s\n", path, jerr.text);
            json_decref(arr);
            arr = NULL;
            break;
        }
        json_array_append_new(arr, j);
    }
    free(line);
    fclose(f);
    return arr;
}


/* A JSON array of numbers as malloc'ed int32 / float. */
static inline int32_t *
enc_ids(json_t *a, size_t *n)
{
    int32_t  *ids;
    size_t    i;

    *n = json_array_size(a);
    ids = malloc((*n ? *n : 1) * sizeof(int32_t));
    for (i = 0; i < *n; i++) {
        ids[i] = (int32_t) json_integer_value(json_array_get(a, i));
    }
    return ids;
}


static inline float *
enc_floats(json_t *a, size_t *n)
{
    float   *v;
    size_t   i;

    *n = json_array_size(a);
    v = malloc((*n ? *n : 1) * sizeof(float));
    for (i = 0; i < *n; i++) {
        v[i] = (float) json_number_value(json_array_get(a, i));
    }
    return v;
}


static inline double
enc_max_diff(const float *a, const float *b, size_t n)
{
    double  m = 0, d;
    size_t  i;

    for (i = 0; i < n; i++) {
        d = fabs((double) a[i] - (double) b[i]);
        if (!(d <= m)) {            /* NaN counts as the largest */
            m = isnan(d) ? INFINITY : d;
        }
    }
    return m;
}


static inline double
enc_cosine(const float *a, const float *b, size_t n)
{
    double  ab = 0, aa = 0, bb = 0;
    size_t  i;

    for (i = 0; i < n; i++) {
        ab += (double) a[i] * b[i];
        aa += (double) a[i] * a[i];
        bb += (double) b[i] * b[i];
    }
    return ab / (sqrt(aa) * sqrt(bb));
}


static inline int
enc_all_finite(const float *a, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (!isfinite(a[i])) {
            return 0;
        }
    }
    return 1;
}


static inline int
enc_exists(const char *path)
{
    struct stat  sb;

    return stat(path, &sb) == 0;
}


/* The bytes of the file PATH (malloc'ed), *len their count; NULL if it
 * cannot be read whole. */
static inline unsigned char *
enc_slurp(const char *path, size_t *len)
{
    FILE           *f = fopen(path, "rb");
    unsigned char  *buf;
    long            n;

    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = n >= 0 ? malloc((size_t) n + 1) : NULL;
    if (buf != NULL && fread(buf, 1, (size_t) n, f) != (size_t) n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = buf != NULL ? (size_t) n : 0;
    return buf;
}


/* Runs one sequence alone; out has output_len floats. */
static inline int
enc_forward_one(const aiserve_model_t *m, aiserve_scratch_t *s,
    const int32_t *ids, const int32_t *types, size_t n, float *out,
    char *err, size_t err_len)
{
    aiserve_batch_t  b;

    b.input_ids = ids;
    b.token_type_ids = types;
    b.seq_lens = &n;
    b.n_seqs = 1;
    return aiserve_model_forward(m, &b, s, out, err, err_len);
}



/* F rounded to bf16 (round to nearest even, as torch does), as a float */
static inline float
enc_to_bf16(float f)
{
    uint32_t  u;

    memcpy(&u, &f, sizeof(u));
    u = (u + 0x7fffu + ((u >> 16) & 1)) & 0xffff0000u;
    memcpy(&f, &u, sizeof(f));
    return f;
}

#endif
