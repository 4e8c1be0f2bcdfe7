/*
 * aiserve prepacked matrix products through oneDNN (see aiserve_gemm.h).
 *
 * oneDNN 2.6's C API: a matmul primitive descriptor is made for each
 * (rows, strides, bias, threads); oneDNN's primitive cache makes the
 * second and later ones with the same shape cost about 2 us, against
 * 37 us and more for the smallest product the encoder runs.  The weights'
 * layout is the one oneDNN picks for 64 rows, and the same for any number
 * of rows (checked on this machine: 1 to 4096).
 *
 * bf16 products take A in bf16: aiserve_gemm_packed() rounds its fp32
 * rows into a buffer of the calling thread (oneDNN 2.6's matmul has no
 * f32 source with bf16 weights), AVX512-BF16's vcvtne2ps2bf16 where the
 * CPU has it, the same rounding in C elsewhere.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <immintrin.h>

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include "aiserve_err.h"
#include "aiserve_gemm.h"


static pthread_once_t  aiserve_dnnl_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t   aiserve_dnnl_engine;
static dnnl_status_t   aiserve_dnnl_engine_status;
static pthread_key_t   aiserve_dnnl_stream_key;

/*
 * What a thread keeps of oneDNN (its stream, its cache of products) is
 * destroyed by the next thread that makes its own, never by the thread's
 * key destructor: the destructor only moves it to a list of orphans.
 * nginx never joins the threads of its thread pools: at a worker's exit
 * they run their destructors while the main thread runs the atexit
 * handlers, oneDNN's static destructors and unloads the modules (a worker
 * died of SIGSEGV so, in a destructor whose code had been unmapped, once
 * in a few hundred graceful stops).  The destructor now touches only this
 * list, and the module keeps its code mapped (ngx_http_aiserve_module.c).
 */
typedef struct aiserve_orphan_s  aiserve_orphan_t;

struct aiserve_orphan_s {
    aiserve_orphan_t  *next;
    void             (*destroy)(void *);
    void              *data;
};

static pthread_mutex_t   aiserve_orphans_lock = PTHREAD_MUTEX_INITIALIZER;
static aiserve_orphan_t *aiserve_orphans;


/* A key destructor: DATA's first member is its aiserve_orphan_t. */
static void
aiserve_orphan_adopt(void *data)
{
    aiserve_orphan_t  *o = data;

    (void) pthread_mutex_lock(&aiserve_orphans_lock);
    o->next = aiserve_orphans;
    aiserve_orphans = o;
    (void) pthread_mutex_unlock(&aiserve_orphans_lock);
}


size_t
aiserve_gemm_orphans(void)
{
    aiserve_orphan_t  *o;
    size_t             n = 0;

    (void) pthread_mutex_lock(&aiserve_orphans_lock);
    for (o = aiserve_orphans; o != NULL; o = o->next) {
        n++;
    }
    (void) pthread_mutex_unlock(&aiserve_orphans_lock);
    return n;
}


/* Destroys what exited threads left, from a living thread. */
static void
aiserve_orphans_destroy(void)
{
    aiserve_orphan_t  *o, *next;

    (void) pthread_mutex_lock(&aiserve_orphans_lock);
    o = aiserve_orphans;
    aiserve_orphans = NULL;
    (void) pthread_mutex_unlock(&aiserve_orphans_lock);
    for ( /* void */ ; o != NULL; o = next) {
        next = o->next;
        o->destroy(o->data);
    }
}


static const char *
aiserve_dnnl_status(dnnl_status_t s)
{
    switch (s) {
    case dnnl_success:
        return "success";
    case dnnl_out_of_memory:
        return "out of memory";
    case dnnl_invalid_arguments:
        return "invalid arguments";
    case dnnl_unimplemented:
        return "unimplemented";
    case dnnl_iterator_ends:
        return "iterator ends";
    case dnnl_runtime_error:
        return "runtime error";
    case dnnl_not_required:
        return "not required";
    default:
        return "unknown status";
    }
}


typedef struct {
    aiserve_orphan_t  orphan;         /* first: see aiserve_orphan_adopt() */
    dnnl_stream_t     stream;
} aiserve_dnnl_tls_t;


static void
aiserve_dnnl_tls_free(void *p)
{
    aiserve_dnnl_tls_t  *t = p;

    dnnl_stream_destroy(t->stream);
    free(t);
}


static void
aiserve_dnnl_init(void)
{
    aiserve_dnnl_engine_status = dnnl_engine_create(&aiserve_dnnl_engine,
                                                    dnnl_cpu, 0);
    (void) pthread_key_create(&aiserve_dnnl_stream_key,
                              aiserve_orphan_adopt);
}


/* The calling thread's stream (oneDNN streams are not shared between
 * threads), made on first use; NULL with ERR on failure.  Also sets the
 * thread's OpenMP team size to THREADS for what oneDNN runs next. */
static dnnl_stream_t
aiserve_dnnl_stream(int threads, char *err, size_t err_len)
{
    aiserve_dnnl_tls_t  *t;
    dnnl_status_t        rc;

    (void) pthread_once(&aiserve_dnnl_once, aiserve_dnnl_init);
    if (aiserve_dnnl_engine_status != dnnl_success) {
        aiserve_err(err, err_len, "oneDNN: no CPU engine (%s)",
                    aiserve_dnnl_status(aiserve_dnnl_engine_status));
        return NULL;
    }
    omp_set_num_threads(threads < 1 ? 1 : threads);
    t = pthread_getspecific(aiserve_dnnl_stream_key);
    if (t != NULL) {
        return t->stream;
    }
    aiserve_orphans_destroy();
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        aiserve_err(err, err_len, "oneDNN: out of memory for a stream");
        return NULL;
    }
    rc = dnnl_stream_create(&t->stream, aiserve_dnnl_engine,
                            dnnl_stream_default_flags);
    if (rc != dnnl_success) {
        free(t);
        aiserve_err(err, err_len, "oneDNN: cannot create a stream (%s)",
                    aiserve_dnnl_status(rc));
        return NULL;
    }
    t->orphan.destroy = aiserve_dnnl_tls_free;
    t->orphan.data = t;
    (void) pthread_setspecific(aiserve_dnnl_stream_key, t);
    return t->stream;
}


const char *
aiserve_dtype_name(aiserve_dtype_e dtype)
{
    switch (dtype) {
    case AISERVE_DTYPE_BF16:
        return "bf16";
    case AISERVE_DTYPE_AUTO:
        return "auto";
    default:
        return "fp32";
    }
}


int
aiserve_gemm_bf16_native(const char **isa)
{
    dnnl_cpu_isa_t  have = dnnl_get_effective_cpu_isa();
    const char     *name;

    if ((have & dnnl_cpu_isa_avx512_core_amx) == dnnl_cpu_isa_avx512_core_amx)
    {
        name = "AMX";
    } else if ((have & dnnl_cpu_isa_avx512_core_bf16)
               == dnnl_cpu_isa_avx512_core_bf16)
    {
        name = "AVX512-BF16";
    } else if ((have & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core)
    {
        name = "AVX-512 without BF16 or AMX";
    } else if ((have & dnnl_cpu_isa_avx2) == dnnl_cpu_isa_avx2) {
        name = "AVX2 without AVX512-BF16 or AMX";
    } else {
        name = "no AVX512-BF16 or AMX";
    }
    if (isa != NULL) {
        *isa = name;
    }
    return (have & dnnl_cpu_isa_avx512_core_bf16)
           == dnnl_cpu_isa_avx512_core_bf16;
}


/* fp32 -> bf16, round to nearest even (NaN kept a NaN): torch's
 * c10::BFloat16 round_to_nearest_even. */
static uint16_t
aiserve_bf16_round(float f)
{
    uint32_t  u;

    memcpy(&u, &f, sizeof(u));
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t) ((u >> 16) | 0x40);
    }
    return (uint16_t) ((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}


#if defined(__x86_64__) && defined(__GNUC__)

__attribute__((target("avx512f,avx512bw,avx512bf16")))
static void
aiserve_bf16_row_avx512(const float *a, uint16_t *d, size_t k)
{
    size_t  j = 0;

    for (; j + 32 <= k; j += 32) {
        __m512bh  v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(a + j + 16),
                                          _mm512_loadu_ps(a + j));

        _mm512_storeu_si512((void *) (d + j), (__m512i) v);
    }
    for (; j < k; j++) {
        d[j] = aiserve_bf16_round(a[j]);
    }
}

#endif


/* D[m, k] (dense) = A[m, k] (rows lda apart) rounded to bf16. */
static void
aiserve_bf16_rows(size_t m, size_t k, const float *a, size_t lda,
    uint16_t *d)
{
    size_t  i, j;

#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx512bf16")) {
        for (i = 0; i < m; i++) {
            aiserve_bf16_row_avx512(a + i * lda, d + i * k, k);
        }
        return;
    }
#endif
    for (i = 0; i < m; i++) {
        for (j = 0; j < k; j++) {
            d[i * k + j] = aiserve_bf16_round(a[i * lda + j]);
        }
    }
}


/* The memory descriptor of M rows of A (K columns, lda apart) in DTYPE. */
static dnnl_status_t
aiserve_dnnl_src_md(size_t m, size_t k, size_t lda, aiserve_dtype_e dtype,
    dnnl_memory_desc_t *md)
{
    dnnl_dims_t  d = { (dnnl_dim_t) m, (dnnl_dim_t) k };
    dnnl_dims_t  s = { (dnnl_dim_t) lda, 1 };

    return dnnl_memory_desc_init_by_strides(md, 2, d,
               dtype == AISERVE_DTYPE_BF16 ? dnnl_bf16 : dnnl_f32, s);
}


/*
 * The matmul C[m, n] = ALPHA SRC W (+ bias where BIAS) + BETA C, SRC [m, k]
 * and W [k, n] as their descriptors say, C fp32 with rows ldc apart; *PD
 * on success.  ALPHA is oneDNN's output scale, BETA its sum post-op.
 */
static dnnl_status_t
aiserve_dnnl_matmul_pd(const dnnl_memory_desc_t *src,
    const dnnl_memory_desc_t *w_md, size_t m, size_t n, int bias,
    size_t ldc, float alpha, float beta, dnnl_primitive_desc_t *pd)
{
    dnnl_memory_desc_t      b, dst;
    dnnl_dims_t             bd = { 1, (dnnl_dim_t) n };
    dnnl_dims_t             dd = { (dnnl_dim_t) m, (dnnl_dim_t) n };
    dnnl_dims_t             ds = { (dnnl_dim_t) ldc, 1 };
    dnnl_matmul_desc_t      md;
    dnnl_primitive_attr_t   attr = NULL;
    dnnl_post_ops_t         po = NULL;
    dnnl_status_t           rc;

    rc = dnnl_memory_desc_init_by_tag(&b, 2, bd, dnnl_f32, dnnl_ab);
    if (rc == dnnl_success) {
        rc = dnnl_memory_desc_init_by_strides(&dst, 2, dd, dnnl_f32, ds);
    }
    if (rc == dnnl_success) {
        rc = dnnl_matmul_desc_init(&md, src, w_md, bias ? &b : NULL, &dst);
    }
    if (rc == dnnl_success && (alpha != 1.f || beta != 0.f)) {
        rc = dnnl_primitive_attr_create(&attr);
        if (rc == dnnl_success && alpha != 1.f) {
            rc = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha);
        }
        if (rc == dnnl_success && beta != 0.f) {
            rc = dnnl_post_ops_create(&po);
            if (rc == dnnl_success) {
                rc = dnnl_post_ops_append_sum(po, beta);
            }
            if (rc == dnnl_success) {
                rc = dnnl_primitive_attr_set_post_ops(attr, po);
            }
        }
    }
    if (rc == dnnl_success) {
        rc = dnnl_primitive_desc_create(pd, &md, attr, aiserve_dnnl_engine,
                                        NULL);
    }
    if (po != NULL) {
        dnnl_post_ops_destroy(po);
    }
    if (attr != NULL) {
        dnnl_primitive_attr_destroy(attr);
    }
    return rc;
}


int
aiserve_gemm_layout(size_t n, size_t k, aiserve_gemm_layout_t *layout,
    char *err, size_t err_len)
{
    return aiserve_gemm_layout_dtype(n, k, AISERVE_DTYPE_FP32, layout, err,
                                     err_len);
}


int
aiserve_gemm_layout_dtype(size_t n, size_t k, aiserve_dtype_e dtype,
    aiserve_gemm_layout_t *layout, char *err, size_t err_len)
{
    dnnl_memory_desc_t     any, src, *md;
    dnnl_dims_t            wd = { (dnnl_dim_t) k, (dnnl_dim_t) n };
    dnnl_primitive_desc_t  pd;
    dnnl_status_t          rc;

    memset(layout, 0, sizeof(*layout));
    if (aiserve_dnnl_stream(1, err, err_len) == NULL) {
        return -1;
    }
    layout->n = n;
    layout->k = k;
    layout->dtype = dtype == AISERVE_DTYPE_BF16 ? AISERVE_DTYPE_BF16
                                                : AISERVE_DTYPE_FP32;
    rc = dnnl_memory_desc_init_by_tag(&any, 2, wd,
             layout->dtype == AISERVE_DTYPE_BF16 ? dnnl_bf16 : dnnl_f32,
             dnnl_format_tag_any);
    if (rc == dnnl_success) {
        rc = aiserve_dnnl_src_md(64, k, k, layout->dtype, &src);
    }
    if (rc == dnnl_success) {
        rc = aiserve_dnnl_matmul_pd(&src, &any, 64, n, 1, n, 1.f, 0.f, &pd);
    }
    if (rc != dnnl_success) {
        aiserve_err(err, err_len, "oneDNN: no %s matmul for a [%zu, %zu] "
                    "weight (%s)", aiserve_dtype_name(layout->dtype), n, k,
                    aiserve_dnnl_status(rc));
        return -1;
    }
    md = malloc(sizeof(*md));
    if (md == NULL) {
        dnnl_primitive_desc_destroy(pd);
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    *md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);
    layout->md = md;
    layout->bytes = dnnl_memory_desc_get_size(md);
    return 0;
}


void
aiserve_gemm_layout_free(aiserve_gemm_layout_t *layout)
{
    free(layout->md);
    layout->md = NULL;
}


int
aiserve_gemm_pack(const aiserve_gemm_layout_t *layout, const float *w,
    void *dst, aiserve_gemm_w_t *packed, char *err, size_t err_len)
{
    dnnl_memory_desc_t     src_md;
    dnnl_dims_t            wd = { (dnnl_dim_t) layout->k,
                                  (dnnl_dim_t) layout->n };
    dnnl_primitive_desc_t  pd = NULL;
    dnnl_primitive_t       p = NULL;
    dnnl_memory_t          from = NULL, to = NULL;
    dnnl_exec_arg_t        args[2];
    dnnl_stream_t          s;
    dnnl_status_t          rc;

    s = aiserve_dnnl_stream(1, err, err_len);
    if (s == NULL) {
        return -1;
    }
    /* W [n, k] row-major is W^T [k, n] with the dimensions swapped */
    rc = dnnl_memory_desc_init_by_tag(&src_md, 2, wd, dnnl_f32, dnnl_ba);
    if (rc == dnnl_success) {
        rc = dnnl_memory_create(&from, &src_md, aiserve_dnnl_engine,
                                (void *) w);
    }
    if (rc == dnnl_success) {
        rc = dnnl_memory_create(&to, layout->md, aiserve_dnnl_engine, dst);
    }
    if (rc == dnnl_success) {
        rc = dnnl_reorder_primitive_desc_create(&pd, &src_md,
                                                aiserve_dnnl_engine,
                                                layout->md,
                                                aiserve_dnnl_engine, NULL);
    }
    if (rc == dnnl_success) {
        rc = dnnl_primitive_create(&p, pd);
    }
    if (rc == dnnl_success) {
        args[0].arg = DNNL_ARG_FROM;
        args[0].memory = from;
        args[1].arg = DNNL_ARG_TO;
        args[1].memory = to;
        rc = dnnl_primitive_execute(p, s, 2, args);
    }
    if (rc == dnnl_success) {
        rc = dnnl_stream_wait(s);
    }
    if (p != NULL) {
        dnnl_primitive_destroy(p);
    }
    if (pd != NULL) {
        dnnl_primitive_desc_destroy(pd);
    }
    if (from != NULL) {
        dnnl_memory_destroy(from);
    }
    if (to != NULL) {
        dnnl_memory_destroy(to);
    }
    if (rc != dnnl_success) {
        aiserve_err(err, err_len, "oneDNN: cannot pack a [%zu, %zu] weight "
                    "(%s)", layout->n, layout->k, aiserve_dnnl_status(rc));
        return -1;
    }
    packed->layout = *layout;
    packed->data = dst;
    return 0;
}


/* Products a thread keeps ready: the primitive and its memory objects
 * for the last few shapes it ran (the encoder runs a handful: 64-row
 * blocks, a tail block, one sequence's rows). */
#define AISERVE_GEMM_CACHE  16

typedef struct {
    dnnl_memory_desc_t src, md;       /* A's and the weight's layouts */
    size_t             ldc;
    int                bias, threads;
    float              alpha, beta;
    dnnl_primitive_t   p;
    dnnl_memory_t      mem[4];        /* src, weights, dst, bias */
} aiserve_gemm_entry_t;

typedef struct {
    aiserve_orphan_t      orphan;     /* first: see aiserve_orphan_adopt() */
    aiserve_gemm_entry_t  e[AISERVE_GEMM_CACHE];
    unsigned              next;       /* round-robin replacement */
    uint16_t             *b16[2];     /* operands in bf16: A, and B of
                                         aiserve_gemm_bf16() */
    size_t                b16_len[2]; /* in elements */
} aiserve_gemm_cache_t;

static pthread_key_t   aiserve_gemm_cache_key;
static pthread_once_t  aiserve_gemm_cache_once = PTHREAD_ONCE_INIT;


static void
aiserve_gemm_entry_clear(aiserve_gemm_entry_t *e)
{
    int  i;

    for (i = 0; i < 4; i++) {
        if (e->mem[i] != NULL) {
            dnnl_memory_destroy(e->mem[i]);
        }
    }
    if (e->p != NULL) {
        dnnl_primitive_destroy(e->p);
    }
    memset(e, 0, sizeof(*e));
}


static void
aiserve_gemm_cache_free(void *p)
{
    aiserve_gemm_cache_t  *c = p;
    int                    i;

    for (i = 0; i < AISERVE_GEMM_CACHE; i++) {
        aiserve_gemm_entry_clear(&c->e[i]);
    }
    free(c->b16[0]);
    free(c->b16[1]);
    free(c);
}


static void
aiserve_gemm_cache_init(void)
{
    (void) pthread_key_create(&aiserve_gemm_cache_key,
                              aiserve_orphan_adopt);
}


/* The calling thread's cache, made on first use; NULL: out of memory. */
static aiserve_gemm_cache_t *
aiserve_gemm_cache(void)
{
    aiserve_gemm_cache_t  *c;

    (void) pthread_once(&aiserve_gemm_cache_once, aiserve_gemm_cache_init);
    c = pthread_getspecific(aiserve_gemm_cache_key);
    if (c == NULL) {
        aiserve_orphans_destroy();
        c = calloc(1, sizeof(*c));
        if (c != NULL) {
            c->orphan.destroy = aiserve_gemm_cache_free;
            c->orphan.data = c;
            (void) pthread_setspecific(aiserve_gemm_cache_key, c);
        }
    }
    return c;
}


/* A[m, k] (rows lda apart) rounded to bf16 into the calling thread's
 * buffer WHICH (0 or 1), grown if need be; NULL: out of memory. */
static const uint16_t *
aiserve_gemm_a16(int which, size_t m, size_t k, const float *a, size_t lda)
{
    aiserve_gemm_cache_t  *c = aiserve_gemm_cache();
    uint16_t              *p;

    if (c == NULL) {
        return NULL;
    }
    if (c->b16_len[which] < m * k) {
        if (posix_memalign((void **) &p, 64, m * k * sizeof(uint16_t)) != 0) {
            return NULL;
        }
        free(c->b16[which]);
        c->b16[which] = p;
        c->b16_len[which] = m * k;
    }
    aiserve_bf16_rows(m, k, a, lda, c->b16[which]);
    return c->b16[which];
}


/* The entry of the calling thread for this product (A and W as SRC and
 * W say, C [m, n] rows ldc apart), made if need be. */
static dnnl_status_t
aiserve_gemm_entry(const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *w,
    size_t m, size_t n, int bias, size_t ldc, float alpha, float beta,
    int threads, aiserve_gemm_entry_t **out)
{
    aiserve_gemm_cache_t   *c;
    aiserve_gemm_entry_t   *e;
    dnnl_primitive_desc_t   pd = NULL;
    dnnl_status_t           rc;
    int                     i;

    c = aiserve_gemm_cache();
    if (c == NULL) {
        return dnnl_out_of_memory;
    }
    for (i = 0; i < AISERVE_GEMM_CACHE; i++) {
        e = &c->e[i];
        if (e->p != NULL && e->ldc == ldc && e->bias == bias
            && e->threads == threads && e->alpha == alpha
            && e->beta == beta && dnnl_memory_desc_equal(&e->src, src)
            && dnnl_memory_desc_equal(&e->md, w))
        {
            *out = e;
            return dnnl_success;
        }
    }

    e = &c->e[c->next++ % AISERVE_GEMM_CACHE];
    aiserve_gemm_entry_clear(e);
    rc = aiserve_dnnl_matmul_pd(src, w, m, n, bias, ldc, alpha, beta, &pd);
    if (rc == dnnl_success) {
        rc = dnnl_primitive_create(&e->p, pd);
    }
    if (rc == dnnl_success) {
        rc = dnnl_memory_create(&e->mem[0],
                 dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0),
                 aiserve_dnnl_engine, DNNL_MEMORY_NONE);
    }
    if (rc == dnnl_success) {
        rc = dnnl_memory_create(&e->mem[1], w, aiserve_dnnl_engine,
                                DNNL_MEMORY_NONE);
    }
    if (rc == dnnl_success) {
        rc = dnnl_memory_create(&e->mem[2],
                 dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0),
                 aiserve_dnnl_engine, DNNL_MEMORY_NONE);
    }
    if (rc == dnnl_success && bias) {
        rc = dnnl_memory_create(&e->mem[3],
                 dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1),
                 aiserve_dnnl_engine, DNNL_MEMORY_NONE);
    }
    if (pd != NULL) {
        dnnl_primitive_desc_destroy(pd);
    }
    if (rc != dnnl_success) {
        aiserve_gemm_entry_clear(e);
        return rc;
    }
    e->src = *src;
    e->md = *w;
    e->ldc = ldc;
    e->bias = bias;
    e->threads = threads;
    e->alpha = alpha;
    e->beta = beta;
    *out = e;
    return dnnl_success;
}


/* Runs entry E on SRC, W, C (and BIAS where not NULL) in stream S. */
static dnnl_status_t
aiserve_gemm_run(aiserve_gemm_entry_t *e, dnnl_stream_t s, const void *src,
    const void *w, const float *bias, float *c)
{
    dnnl_exec_arg_t  args[4];
    dnnl_status_t    rc;

    rc = dnnl_memory_set_data_handle(e->mem[0], (void *) src);
    if (rc == dnnl_success) {
        rc = dnnl_memory_set_data_handle(e->mem[1], (void *) w);
    }
    if (rc == dnnl_success) {
        rc = dnnl_memory_set_data_handle(e->mem[2], c);
    }
    if (rc == dnnl_success && bias != NULL) {
        rc = dnnl_memory_set_data_handle(e->mem[3], (void *) bias);
    }
    if (rc == dnnl_success) {
        args[0].arg = DNNL_ARG_SRC;
        args[0].memory = e->mem[0];
        args[1].arg = DNNL_ARG_WEIGHTS;
        args[1].memory = e->mem[1];
        args[2].arg = DNNL_ARG_DST;
        args[2].memory = e->mem[2];
        args[3].arg = DNNL_ARG_BIAS;
        args[3].memory = e->mem[3];
        rc = dnnl_primitive_execute(e->p, s, bias != NULL ? 4 : 3, args);
    }
    if (rc == dnnl_success) {
        rc = dnnl_stream_wait(s);
    }
    return rc;
}


int
aiserve_gemm_packed(size_t m, const float *a, size_t lda,
    const aiserve_gemm_w_t *w, const float *bias, float *c, size_t ldc,
    int threads, char *err, size_t err_len)
{
    const aiserve_gemm_layout_t  *l = &w->layout;
    const void                   *src = a;
    aiserve_gemm_entry_t         *e = NULL;
    dnnl_memory_desc_t            src_md;
    dnnl_stream_t                 s;
    dnnl_status_t                 rc = dnnl_success;

    if (m == 0) {
        return 0;
    }
    threads = threads < 1 ? 1 : threads;
    s = aiserve_dnnl_stream(threads, err, err_len);
    if (s == NULL) {
        return -1;
    }
    if (l->dtype == AISERVE_DTYPE_BF16) {
        src = aiserve_gemm_a16(0, m, l->k, a, lda);
        lda = l->k;
        rc = src != NULL ? dnnl_success : dnnl_out_of_memory;
    }
    if (rc == dnnl_success) {
        rc = aiserve_dnnl_src_md(m, l->k, lda, l->dtype, &src_md);
    }
    /* a primitive splits its work for the thread count it was made with */
    if (rc == dnnl_success) {
        rc = aiserve_gemm_entry(&src_md, l->md, m, l->n, bias != NULL, ldc,
                                1.f, 0.f, threads, &e);
    }
    if (rc == dnnl_success) {
        rc = aiserve_gemm_run(e, s, src, w->data, bias, c);
    }
    if (rc != dnnl_success) {
        aiserve_err(err, err_len, "oneDNN: %s matmul of %zu rows by a "
                    "[%zu, %zu] weight failed (%s)",
                    aiserve_dtype_name(l->dtype), m, l->n, l->k,
                    aiserve_dnnl_status(rc));
        return -1;
    }
    return 0;
}


int
aiserve_gemm_bf16(int trans_a, int trans_b, size_t m, size_t n, size_t k,
    float alpha, const float *a, size_t lda, const float *b, size_t ldb,
    float beta, float *c, size_t ldc)
{
    const uint16_t        *a16, *b16;
    aiserve_gemm_entry_t  *e = NULL;
    dnnl_memory_desc_t     src_md, w_md;
    dnnl_dims_t            sd = { (dnnl_dim_t) m, (dnnl_dim_t) k };
    dnnl_dims_t            wd = { (dnnl_dim_t) k, (dnnl_dim_t) n };
    dnnl_dims_t            ss, ws;
    dnnl_stream_t          s;
    dnnl_status_t          rc;
    char                   err[128];

    if (m == 0 || n == 0) {
        return 0;
    }
    s = aiserve_dnnl_stream(1, err, sizeof(err));
    if (s == NULL) {
        return -1;
    }
    /* each operand rounded as it is stored, dense; a transposed one is
     * described to oneDNN by its strides */
    a16 = trans_a ? aiserve_gemm_a16(0, k, m, a, lda)
                  : aiserve_gemm_a16(0, m, k, a, lda);
    b16 = trans_b ? aiserve_gemm_a16(1, n, k, b, ldb)
                  : aiserve_gemm_a16(1, k, n, b, ldb);
    if (a16 == NULL || b16 == NULL) {
        return -1;
    }
    ss[0] = trans_a ? 1 : (dnnl_dim_t) k;
    ss[1] = trans_a ? (dnnl_dim_t) m : 1;
    ws[0] = trans_b ? 1 : (dnnl_dim_t) n;
    ws[1] = trans_b ? (dnnl_dim_t) k : 1;
    rc = dnnl_memory_desc_init_by_strides(&src_md, 2, sd, dnnl_bf16, ss);
    if (rc == dnnl_success) {
        rc = dnnl_memory_desc_init_by_strides(&w_md, 2, wd, dnnl_bf16, ws);
    }
    if (rc == dnnl_success) {
        rc = aiserve_gemm_entry(&src_md, &w_md, m, n, 0, ldc, alpha, beta, 1,
                                &e);
    }
    if (rc == dnnl_success) {
        rc = aiserve_gemm_run(e, s, a16, b16, NULL, c);
    }
    return rc == dnnl_success ? 0 : -1;
}


int
aiserve_gemm_plain(int trans_a, int trans_b, size_t m, size_t n, size_t k,
    float alpha, const float *a, size_t lda, const float *b, size_t ldb,
    float beta, float *c, size_t ldc)
{
    omp_set_num_threads(1);
    return dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N',
                      (dnnl_dim_t) m, (dnnl_dim_t) n, (dnnl_dim_t) k, alpha,
                      a, (dnnl_dim_t) lda, b, (dnnl_dim_t) ldb, beta, c,
                      (dnnl_dim_t) ldc)
           == dnnl_success ? 0 : -1;
}
