/*
 * aiserve CPU element-wise kernels of a BERT layer (internal to the engine;
 * the matrix products go through the BLAS).  All fp32, row-major, rows of
 * COLS contiguous floats.
 */
#ifndef AISERVE_OPS_H
#define AISERVE_OPS_H

#include <stddef.h>
#include <stdint.h>

/* A hot kernel built for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and
 * the baseline, the best picked at load time (GCC's target_clones), so
 * the library runs on any x86-64. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define AISERVE_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                                 "default")))
#else
#define AISERVE_CLONES
#endif

typedef enum {
    AISERVE_ACT_GELU_ERF = 0,     /* "gelu", "gelu_python": exact erf form */
    AISERVE_ACT_GELU_TANH,        /* "gelu_new", "gelu_pytorch_tanh" */
    AISERVE_ACT_RELU,             /* "relu" */
    AISERVE_ACT_SILU              /* "silu", "swish" */
} aiserve_act_e;

/*
 * Maps a config.json hidden_act to the activation transformers' ACT2FN
 * gives it (activations.py: GELUActivation, NewGELUActivation,
 * PytorchGELUTanh, ...).  Returns 0, or -1 for names not supported.
 */
int aiserve_act_parse(const char *hidden_act, aiserve_act_e *act);

/* erf(x) in fp32, |error| < 4e-7, vectorisable (no libm call). */
float aiserve_erf(float x);

/* exp(x) in fp32, relative error < 2e-7 for x in [-87, 88]; 0 below. */
float aiserve_exp(float x);

/*
 * x[r][c] = act(x[r][c] + bias[c]) for ROWS x COLS (BertIntermediate:
 * dense then intermediate_act_fn).  gelu: 0.5 x (1 + erf(x / sqrt 2));
 * tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
 */
void aiserve_bias_act(float *x, const float *bias, size_t rows, size_t cols,
    aiserve_act_e act);

/*
 * GELU (transformers' GELUActivation, erf form) of N floats, y = 0.5 x
 * (1 + erf(x / sqrt 2)), and its backward in place on DY: dy *= Phi(x) +
 * x phi(x).  erf to within 1.3 ulp (libm's erff is within 1): the
 * training engine's gradients keep their agreement with torch autograd.
 */
void aiserve_gelu_fwd(const float *x, float *y, size_t n);
void aiserve_gelu_bwd(const float *x, float *dy, size_t n);

/* splitmix64's output function: a bijective 64-bit mix. */
static inline uint64_t
aiserve_mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/*
 * Dropout of N floats: x[i] = keep ? x[i] SCALE : 0, element i kept when
 * the top 24 bits of aiserve_mix64(KEY ^ (BASE + i)) are >= THRESHOLD (p
 * 2^24): counter-based, so the backward pass draws the same mask again,
 * in any order and split.  Vectorised (64-bit multiplies: AVX-512DQ).
 */
void aiserve_dropout_mask(float *x, size_t n, uint64_t key, uint64_t base,
    uint32_t threshold, float scale);

/* x[r][c] += bias[c] for ROWS x COLS. */
void aiserve_bias_add(float *x, const float *bias, size_t rows, size_t cols);

/*
 * x = LayerNorm(y + bias + x) row by row (BertSelfOutput / BertOutput:
 * dense, dropout, LayerNorm(hidden + input_tensor)); statistics in fp32,
 * biased variance, eps inside the square root as torch.nn.LayerNorm.
 * bias may be NULL (embeddings).
 */
void aiserve_residual_layernorm(float *x, const float *y, const float *bias,
    const float *gamma, const float *beta, size_t rows, size_t cols,
    float eps);

/* x = LayerNorm(x) row by row. */
void aiserve_layernorm(float *x, const float *gamma, const float *beta,
    size_t rows, size_t cols, float eps);

/*
 * Row-wise softmax of ROWS x COLS scores in fp32 with max subtraction
 * (torch.softmax(dim=-1)).
 */
void aiserve_softmax(float *x, size_t rows, size_t cols);

/*
 * One head of scaled dot-product attention over L tokens, for head_dim D a
 * multiple of 16 up to 128: OUT[L, D] = softmax(SCALE Q K^T) V, Q, K and V
 * rows LD floats apart (the stacked QKV projection), OUT rows LDO apart.
 * Softmax in fp32 with max subtraction, row by row.  WORK holds
 * (D + 8) * (Lp + 8) floats, Lp = L rounded up to 16.
 */
void aiserve_attention_head(size_t L, size_t d, const float *q,
    const float *k, const float *v, size_t ld, float scale, float *work,
    float *out, size_t ldo);

/*
 * aiserve_attention_head() with Q K^T and P V as bf16 products summed in
 * fp32 (torch.autocast("cpu", dtype=torch.bfloat16)'s attention): Q, K,
 * V and the softmax numerators rounded to bf16, the softmax itself in
 * fp32.  D a multiple of 32 up to 128, the same WORK; x86-64 with
 * AVX512-BF16 only (the caller checks the CPU).
 */
void aiserve_attention_head_bf16(size_t L, size_t d, const float *q,
    const float *k, const float *v, size_t ld, float scale, float *work,
    float *out, size_t ldo);

#endif /* AISERVE_OPS_H */
