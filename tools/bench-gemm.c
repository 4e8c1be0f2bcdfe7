/*
 * bench-gemm: sgemm GFLOP/s of the BLAS libraries Debian ships, on the
 * matrix shapes of a BERT forward pass (all-MiniLM-L6-v2 by default:
 * hidden 384, intermediate 1536, 12 heads of 32).  Each library is
 * dlopen()ed, so one binary compares them in the same run.  See --help.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aiserve_gemm.h"
#include "aiserve_team.h"

/* cblas.h's values, so that no one library's header is needed */
#define ROW_MAJOR  101
#define NO_TRANS   111
#define TRANS      112

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *,
    int, const float *, int, float, float *, int);
typedef void (*set_threads_fn)(int);
typedef char *(*corename_fn)(void);
typedef int (*arch_id_fn)(void);
typedef char *(*arch_str_fn)(int);

typedef struct {
    const char      *name;
    const char      *path;
    const char      *threads_sym;
    void            *dl;
    sgemm_fn         sgemm;
    set_threads_fn   set_threads;
} lib_t;

static lib_t  libs[] = {
    { "BLIS 0.9 (pthread)",
      "/usr/lib/x86_64-linux-gnu/blis-pthread/libblis.so.4",
      "bli_thread_set_num_threads", NULL, NULL, NULL },
    { "OpenBLAS 0.3.21 (pthread)",
      "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
      "openblas_set_num_threads", NULL, NULL, NULL },
    { "oneDNN 2.6 matmul, weights packed at load (the encoder's)", NULL,
      NULL, NULL, NULL, NULL },
};

#define N_LIBS  (sizeof(libs) / sizeof(libs[0]))


/*
 * The encoder's product (src/aiserve_gemm.c: oneDNN matmul on a weight
 * reordered once into oneDNN's layout) behind the same sgemm signature,
 * for x W^T only: W is packed on the first (untimed) call with a given W,
 * as the encoder packs its weights at load, and the work is split as the
 * encoder splits it: blocks of 64 rows or more over an aiserve thread
 * team, or for fewer rows, oneDNN's own OpenMP team over the columns.
 */
static struct {
    const float            *w;
    int                     n, k;
    aiserve_gemm_layout_t   layout;
    aiserve_gemm_w_t        packed;
    void                   *mem;
    aiserve_team_t         *team;
    int                     threads;
} own;

typedef struct {
    int           m, n, k;
    size_t        chunk;
    const float  *a;
    float        *c;
} own_job_t;


static void
own_item(void *arg, size_t item, int thread)
{
    own_job_t  *j = arg;
    size_t      r0 = item * j->chunk, rows = (size_t) j->m - r0;
    char        err[256];

    rows = rows < j->chunk ? rows : j->chunk;
    if (aiserve_gemm_packed(rows, j->a + r0 * (size_t) j->k, (size_t) j->k,
                            &own.packed, NULL, j->c + r0 * (size_t) j->n,
                            (size_t) j->n, 1, err, sizeof(err)) != 0)
    {
        fprintf(stderr, "bench-gemm: %s\n", err);
        exit(1);
    }
}


static void
own_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha,
    const float *a, int lda, const float *b, int ldb, float beta, float *c,
    int ldc)
{
    own_job_t  j = { m, n, k, 0, a, c };
    size_t     items;
    char       err[256];

    if (own.w != b || own.n != n || own.k != k) {
        aiserve_gemm_layout_free(&own.layout);
        free(own.mem);
        if (aiserve_gemm_layout((size_t) n, (size_t) k, &own.layout, err,
                                sizeof(err)) != 0
            || posix_memalign(&own.mem, 64, own.layout.bytes) != 0
            || aiserve_gemm_pack(&own.layout, b, own.mem, &own.packed, err,
                                 sizeof(err)) != 0)
        {
            fprintf(stderr, "bench-gemm: %s\n", err);
            exit(1);
        }
        own.w = b;
        own.n = n;
        own.k = k;
    }
    if (m < 64 * own.threads) {
        if (aiserve_gemm_packed((size_t) m, a, (size_t) k, &own.packed, NULL,
                                c, (size_t) n, own.threads, err, sizeof(err))
            != 0)
        {
            fprintf(stderr, "bench-gemm: %s\n", err);
            exit(1);
        }
        return;
    }
    items = (size_t) own.threads * 4;
    j.chunk = ((size_t) m + items - 1) / items;
    j.chunk = (j.chunk + 7) / 8 * 8;
    j.chunk = j.chunk < 64 ? 64 : j.chunk;
    aiserve_team_run(own.team, own_item, &j, ((size_t) m + j.chunk - 1)
                                             / j.chunk);
}


static void
own_set_threads(int n)
{
    own.threads = n;
    own.team = aiserve_team_create(n);
}


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}


/* GFLOP/s of C[m,n] = A[m,k] op(B), op(B) = B^T ([n,k], an nn.Linear
 * weight) or B ([k,n], attention's probabilities x V): after one warm-up
 * call, the best of 5 windows of secs / 5 each (other work on a shared
 * machine lowers some windows; the best is the least disturbed). */
static double
measure(lib_t *lib, int m, int n, int k, int trans_b, double secs)
{
    float   *a, *b, *c;
    double   t0, t, best = 0;
    long     i, reps;
    int      w;

    a = malloc(sizeof(float) * (size_t) m * k);
    b = malloc(sizeof(float) * (size_t) n * k);
    c = malloc(sizeof(float) * (size_t) m * n);
    for (i = 0; i < (long) m * k; i++) {
        a[i] = (float) (i % 13) * 0.01f;
    }
    for (i = 0; i < (long) n * k; i++) {
        b[i] = (float) (i % 7) * 0.01f;
    }
    lib->sgemm(ROW_MAJOR, NO_TRANS, trans_b ? TRANS : NO_TRANS, m, n, k, 1.f,
               a, k, b, trans_b ? k : n, 0.f, c, n);
    for (w = 0; w < 5; w++) {
        reps = 0;
        t0 = now();
        do {
            lib->sgemm(ROW_MAJOR, NO_TRANS, trans_b ? TRANS : NO_TRANS, m, n,
                       k, 1.f, a, k, b, trans_b ? k : n, 0.f, c, n);
            reps++;
            t = now() - t0;
        } while (t < secs / 5);
        if (2.0 * m * n * k * (double) reps / t / 1e9 > best) {
            best = 2.0 * m * n * k * (double) reps / t / 1e9;
        }
    }
    free(a);
    free(b);
    free(c);
    return best;
}


static void
usage(FILE *f)
{
    fprintf(f,
"usage: bench-gemm [--threads N] [--seconds S] [--hidden H]\n"
"                  [--intermediate I] [--head-dim D] [--peak-only]\n"
"\n"
"Prints a Markdown table of sgemm GFLOP/s (row-major, as the encoder\n"
"calls it) for BLIS and OpenBLAS, dlopen()ed from their Debian paths\n"
"(libblis4-pthread, libopenblas0-pthread; a missing one is skipped), and\n"
"for the encoder's product, oneDNN's matmul on a weight packed once\n"
"(untimed, as at model load; src/aiserve_gemm.c), on BERT's shapes:\n"
"  QKV/output projection  tokens x H x H       (x W^T)\n"
"  intermediate           tokens x I x H       (x W^T)\n"
"  output                 tokens x H x I       (x W^T)\n"
"  attention scores       L x L x D            (Q K^T, per head)\n"
"  attention context      L x D x L            (P V, per head)\n"
"for tokens in 16..4096 and L in 16..512.  The last line is the peak: the\n"
"best GFLOP/s of any of them on the 4096-token projections, the figure\n"
"bench-encoder compares the engine with.  OpenBLAS picks its kernels\n"
"for the CPU unless OPENBLAS_CORETYPE says otherwise; the column header\n"
"names the kernels in use.\n"
"\n"
"options:\n"
"  --threads N    threads of each library (default 1)\n"
"  --seconds S    time per measurement (default 0.3)\n"
"  --peak-only    print only the peak line\n");
}


int
main(int argc, char **argv)
{
    static const int  tokens[] = { 16, 128, 512, 1024, 4096 };
    static const int  lens[] = { 16, 128, 512 };
    int               H = 384, I = 1536, D = 32, threads = 1, peak_only = 0;
    double            secs = 0.3, g, peak = 0;
    size_t            l, i;
    int               t, have = 0;
    char              shape[64], names[4][96];
    corename_fn       corename;
    arch_id_fn        arch_id;
    arch_str_fn       arch_str;

    for (t = 1; t < argc; t++) {
        if (strcmp(argv[t], "--threads") == 0 && t + 1 < argc) {
            threads = atoi(argv[++t]);
        } else if (strcmp(argv[t], "--seconds") == 0 && t + 1 < argc) {
            secs = atof(argv[++t]);
        } else if (strcmp(argv[t], "--hidden") == 0 && t + 1 < argc) {
            H = atoi(argv[++t]);
        } else if (strcmp(argv[t], "--intermediate") == 0 && t + 1 < argc) {
            I = atoi(argv[++t]);
        } else if (strcmp(argv[t], "--head-dim") == 0 && t + 1 < argc) {
            D = atoi(argv[++t]);
        } else if (strcmp(argv[t], "--peak-only") == 0) {
            peak_only = 1;
        } else {
            usage(strcmp(argv[t], "--help") && strcmp(argv[t], "-h")
                  ? stderr : stdout);
            return strcmp(argv[t], "--help") && strcmp(argv[t], "-h")
                   ? 2 : 0;
        }
    }

    for (l = 0; l < N_LIBS; l++) {
        if (libs[l].path == NULL) {
            /* the encoder's product, linked */
            libs[l].sgemm = own_sgemm;
            own_set_threads(threads);
            have++;
            continue;
        }
        libs[l].dl = dlopen(libs[l].path, RTLD_NOW | RTLD_LOCAL);
        if (libs[l].dl == NULL) {
            fprintf(stderr, "bench-gemm: skipping %s: %s\n", libs[l].name,
                    dlerror());
            continue;
        }
        libs[l].sgemm = (sgemm_fn) dlsym(libs[l].dl, "cblas_sgemm");
        libs[l].set_threads = (set_threads_fn) dlsym(libs[l].dl,
                                                     libs[l].threads_sym);
        if (libs[l].sgemm == NULL || libs[l].set_threads == NULL) {
            libs[l].sgemm = NULL;
            continue;
        }
        libs[l].set_threads(threads);
        corename = (corename_fn) dlsym(libs[l].dl, "openblas_get_corename");
        arch_id = (arch_id_fn) dlsym(libs[l].dl, "bli_arch_query_id");
        arch_str = (arch_str_fn) dlsym(libs[l].dl, "bli_arch_string");
        if (arch_id != NULL && arch_str != NULL) {
            snprintf(names[l], sizeof(names[l]), "%s, %s config",
                     libs[l].name, arch_str(arch_id()));
            libs[l].name = names[l];
        } else if (corename != NULL) {
            snprintf(names[l], sizeof(names[l]), "%s, %s kernels",
                     libs[l].name, corename());
            libs[l].name = names[l];
        }
        have++;
    }
    if (have == 0) {
        fprintf(stderr, "bench-gemm: no BLAS library found\n");
        return 1;
    }

    if (!peak_only) {
        printf("sgemm GFLOP/s, %d thread%s, H=%d I=%d head_dim=%d\n\n",
               threads, threads > 1 ? "s" : "", H, I, D);
        printf("| shape (m x n x k) |");
        for (l = 0; l < N_LIBS; l++) {
            if (libs[l].sgemm) {
                printf(" %s |", libs[l].name);
            }
        }
        printf("\n|---|");
        for (l = 0; l < N_LIBS; l++) {
            if (libs[l].sgemm) {
                printf("---:|");
            }
        }
        printf("\n");
    }

    for (i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
        int  shapes[3][3] = { { tokens[i], H, H }, { tokens[i], I, H },
                              { tokens[i], H, I } };
        int  s;

        for (s = 0; s < 3; s++) {
            if (peak_only && tokens[i] != 4096) {
                continue;
            }
            if (!peak_only) {
                snprintf(shape, sizeof(shape), "%d x %d x %d (x W^T)",
                         shapes[s][0], shapes[s][1], shapes[s][2]);
                printf("| %s |", shape);
            }
            for (l = 0; l < N_LIBS; l++) {
                if (libs[l].sgemm == NULL) {
                    continue;
                }
                g = measure(&libs[l], shapes[s][0], shapes[s][1],
                            shapes[s][2], 1, secs);
                if (tokens[i] == 4096 && g > peak) {
                    peak = g;
                }
                if (!peak_only) {
                    printf(" %.1f |", g);
                }
            }
            if (!peak_only) {
                printf("\n");
            }
        }
    }
    for (i = 0; !peak_only && i < sizeof(lens) / sizeof(lens[0]); i++) {
        printf("| %d x %d x %d (Q K^T) |", lens[i], lens[i], D);
        for (l = 0; l < N_LIBS; l++) {
            if (libs[l].sgemm == own_sgemm) {
                /* K changes with every head: nothing to pack ahead */
                printf(" (projections only) |");
            } else if (libs[l].sgemm) {
                printf(" %.1f |", measure(&libs[l], lens[i], lens[i], D, 1,
                                          secs));
            }
        }
        printf("\n| %d x %d x %d (P V) |", lens[i], D, lens[i]);
        for (l = 0; l < N_LIBS; l++) {
            if (libs[l].sgemm == own_sgemm) {
                printf(" (projections only) |");
            } else if (libs[l].sgemm) {
                printf(" %.1f |", measure(&libs[l], lens[i], D, lens[i], 0,
                                          secs));
            }
        }
        printf("\n");
    }
    printf("%speak %.1f GFLOP/s (best of all, 4096-token projections, "
           "%d thread%s)\n", peak_only ? "" : "\n", peak, threads,
           threads > 1 ? "s" : "");
    return 0;
}
