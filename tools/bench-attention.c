/*
 * bench-attention: one head of attention, the fp32 kernel
 * (aiserve_attention_head()) against the bf16 one
 * (aiserve_attention_head_bf16(): QK^T and PV on AVX512-BF16's
 * vdpbf16ps), MiniLM's head_dim 32 and BERT-base's 64, on the stacked QKV
 * rows the encoder gives them, one thread, the two alternating in 15
 * rounds in one process: best time per head of each, and the bf16 output's
 * relative RMS difference from fp32's.  Prints a Markdown table.
 *
 *   bench-attention
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "aiserve_ops.h"
#include "bench.h"

#define ROUNDS  15


int
main(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    static const size_t  lens[] = { 16, 64, 128, 256, 512 };
    static const size_t  dims[] = { 32, 64 };
    size_t               li, di, L, d, H, ld, Lp, i, c, reps, x;
    float               *qkv, *work, *out[2];
    double               best[2], t, e, n;
    int                  r, k;

    if (!__builtin_cpu_supports("avx512bf16")) {
        printf("bench-attention: the CPU has no AVX512-BF16\n");
        return 0;
    }
    printf("| head_dim | tokens | fp32 us/head | bf16 us/head | bf16 speed-up "
           "| bf16 relative RMS vs fp32 |\n|---|---|---|---|---|---|\n");
    for (di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        for (li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
            L = lens[li];
            d = dims[di];
            H = 12 * d;
            ld = 3 * H;
            Lp = (L + 15) / 16 * 16;
            qkv = malloc(L * ld * sizeof(float));
            work = malloc((Lp + 8) * (d + 8) * sizeof(float));
            out[0] = malloc(L * H * sizeof(float));
            out[1] = malloc(L * H * sizeof(float));
            if (qkv == NULL || work == NULL || out[0] == NULL
                || out[1] == NULL)
            {
                fprintf(stderr, "bench-attention: out of memory\n");
                return 1;
            }
            srand(20261206);
            for (i = 0; i < L * ld; i++) {
                qkv[i] = ((float) rand() / (float) RAND_MAX - 0.5f) * 4.f;
            }
            reps = 2000000 / (L * L) + 5;
            best[0] = best[1] = INFINITY;
            for (r = 0; r < ROUNDS; r++) {
                for (k = 0; k < 2; k++) {
                    t = bench_now();
                    for (x = 0; x < reps; x++) {
                        (k == 0 ? aiserve_attention_head
                                : aiserve_attention_head_bf16)(
                            L, d, qkv, qkv + H, qkv + 2 * H, ld,
                            1.f / sqrtf((float) d), work, out[k], H);
                    }
                    t = (bench_now() - t) / (double) reps;
                    best[k] = t < best[k] ? t : best[k];
                }
            }
            e = n = 0;
            for (i = 0; i < L; i++) {
                for (c = 0; c < d; c++) {
                    t = out[1][i * H + c] - out[0][i * H + c];
                    e += t * t;
                    n += (double) out[0][i * H + c] * out[0][i * H + c];
                }
            }
            printf("| %zu | %zu | %.2f | %.2f | %.2fx | %.1e |\n", d, L,
                   best[0] * 1e6, best[1] * 1e6, best[0] / best[1],
                   sqrt(e / n));
            free(qkv);
            free(work);
            free(out[0]);
            free(out[1]);
        }
    }
#else
    printf("bench-attention: x86-64 only\n");
#endif
    return 0;
}
