/*
 * bench-encoder-engine: times aiserve_model_forward() on batches given on
 * stdin; the engine side of tools/bench-encoder (which runs the PyTorch and
 * ONNX Runtime sides and prints the table).
 *
 *   bench-encoder-engine MODEL_DIR THREADS SECONDS MAX_REPS [fp32|bf16]
 *       < batches.jsonl
 *
 * Each input line {"seq_lens": [...], "input_ids": [...]} is one packed
 * batch; each output line {"best_s", "median_s", "reps"}: one warm-up
 * pass, then passes until SECONDS have gone or MAX_REPS are done.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "aiserve_gemm.h"
#include "aiserve_model.h"
#include "bench.h"


int
main(int argc, char **argv)
{
    aiserve_model_t    *m;
    aiserve_scratch_t  *s = NULL;
    aiserve_batch_t     b;
    json_t             *j, *lens, *ids;
    json_error_t        jerr;
    char               *line = NULL, err[512];
    size_t              cap = 0, i, T, max_reps, reps, max_tokens = 0;
    size_t             *seq_lens;
    int32_t            *input_ids;
    double              secs, t0, t, *times;
    float              *out;
    aiserve_dtype_e     dtype = AISERVE_DTYPE_FP32;

    if (argc == 6 && strcmp(argv[5], "bf16") == 0) {
        dtype = AISERVE_DTYPE_BF16;
    } else if (argc != 5 && !(argc == 6 && strcmp(argv[5], "fp32") == 0)) {
        fprintf(stderr, "usage: bench-encoder-engine MODEL_DIR THREADS "
                "SECONDS MAX_REPS [fp32|bf16] < batches.jsonl\n");
        return 2;
    }
    m = aiserve_model_load_packed(argv[1], dtype, err, sizeof(err));
    if (m == NULL) {
        fprintf(stderr, "bench-encoder-engine: %s\n", err);
        return 1;
    }
    aiserve_set_num_threads(atoi(argv[2]));
    secs = atof(argv[3]);
    max_reps = (size_t) atol(argv[4]);
    times = malloc((max_reps + 1) * sizeof(double));

    while (getline(&line, &cap, stdin) > 0) {
        j = json_loads(line, 0, &jerr);
        lens = json_object_get(j, "seq_lens");
        ids = json_object_get(j, "input_ids");
        if (!json_is_array(lens) || !json_is_array(ids)) {
            fprintf(stderr, "bench-encoder-engine: bad input line\n");
            return 1;
        }
        b.n_seqs = json_array_size(lens);
        seq_lens = malloc(b.n_seqs * sizeof(size_t));
        T = json_array_size(ids);
        input_ids = malloc(T * sizeof(int32_t));
        for (i = 0; i < b.n_seqs; i++) {
            seq_lens[i] = (size_t) json_integer_value(json_array_get(lens,
                                                                     i));
        }
        for (i = 0; i < T; i++) {
            input_ids[i] = (int32_t) json_integer_value(json_array_get(ids,
                                                                       i));
        }
        b.input_ids = input_ids;
        b.token_type_ids = NULL;
        b.seq_lens = seq_lens;

        /* one scratch, sized for the largest batch so far, reused */
        if (T > max_tokens) {
            aiserve_scratch_free(s);
            s = aiserve_scratch_create(m, T, err, sizeof(err));
            max_tokens = T;
            if (s == NULL) {
                fprintf(stderr, "bench-encoder-engine: %s\n", err);
                return 1;
            }
        }
        out = malloc(aiserve_model_output_len(m, &b) * sizeof(float));
        if (aiserve_model_forward(m, &b, s, out, err, sizeof(err)) != 0) {
            fprintf(stderr, "bench-encoder-engine: %s\n", err);
            return 1;
        }
        t0 = bench_now();
        for (reps = 0; reps < max_reps; reps++) {
            t = bench_now();
            aiserve_model_forward(m, &b, s, out, err, sizeof(err));
            times[reps] = bench_now() - t;
            if (bench_now() - t0 > secs) {
                reps++;
                break;
            }
        }
        qsort(times, reps, sizeof(double), bench_cmp_double);
        printf("{\"best_s\": %.9f, \"median_s\": %.9f, \"reps\": %zu}\n",
               times[0], times[reps / 2], reps);
        fflush(stdout);
        free(out);
        free(seq_lens);
        free(input_ids);
        json_decref(j);
    }
    free(line);
    free(times);
    aiserve_scratch_free(s);
    aiserve_model_free(m);
    return 0;
}
