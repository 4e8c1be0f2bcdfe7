/*
 * aiserve AdamW, learning-rate schedule and gradient clipping (see
 * aiserve_optim.h), written after torch/optim/adamw.py's single-tensor
 * path, transformers' optimization.py and torch/nn/utils/clip_grad.py.
 */
/* sqrtf of v >= 0 never sets errno: without math-errno it vectorises */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-math-errno")
#endif

#include <math.h>
#include <string.h>

#include "aiserve_ops.h"
#include "aiserve_optim.h"

/* Lanes of the sum of squares, so that it vectorises without
 * reassociating one serial sum. */
#define AISERVE_SUMSQ_LANES  8


void
aiserve_optim_defaults(aiserve_optim_config_t *c)
{
    c->learning_rate = 5e-5f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 0.f;
    c->warmup_steps = 0;
    c->total_steps = 0;
    c->max_grad_norm = 1.f;
}


float
aiserve_lr_linear(float lr, size_t step, size_t warmup_steps,
    size_t total_steps)
{
    double  f;

    if (step < warmup_steps) {
        f = (double) step / (double) warmup_steps;
    } else if (step >= total_steps) {
        f = 0;
    } else {
        f = (double) (total_steps - step)
            / (double) (total_steps > warmup_steps
                        ? total_steps - warmup_steps : 1);
    }
    return (float) (lr * f);
}


AISERVE_CLONES
double
aiserve_sumsq(const float *g, size_t n)
{
    double  lane[AISERVE_SUMSQ_LANES] = { 0 }, ss = 0;
    size_t  i, j;

    for (i = 0; i + AISERVE_SUMSQ_LANES <= n; i += AISERVE_SUMSQ_LANES) {
        for (j = 0; j < AISERVE_SUMSQ_LANES; j++) {
            lane[j] += (double) g[i + j] * (double) g[i + j];
        }
    }
    for (; i < n; i++) {
        lane[0] += (double) g[i] * (double) g[i];
    }
    for (j = 0; j < AISERVE_SUMSQ_LANES; j++) {
        ss += lane[j];
    }
    return ss;
}


float
aiserve_clip_coef(double norm, float max_norm)
{
    double  coef;

    if (max_norm <= 0) {
        return 1.f;
    }
    coef = max_norm / (norm + 1e-6);
    return coef < 1.0 ? (float) coef : 1.f;
}


AISERVE_CLONES
void
aiserve_adamw_update(float *p, float *g, float *m, float *v, size_t n,
    const aiserve_optim_config_t *c, float lr, float weight_decay,
    size_t step, float grad_scale)
{
    float   b1 = c->beta1, b2 = c->beta2, decay = 1.f - lr * weight_decay;
    float   eps = c->eps, step_size, bc2_sqrt, gi, denom;
    size_t  i;

    step_size = (float) (lr / (1.0 - pow(b1, (double) step)));
    bc2_sqrt = (float) sqrt(1.0 - pow(b2, (double) step));
    for (i = 0; i < n; i++) {
        gi = g[i] * grad_scale;
        p[i] *= decay;
        m[i] += (gi - m[i]) * (1.f - b1);
        v[i] = v[i] * b2 + (1.f - b2) * gi * gi;
        denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] -= step_size * m[i] / denom;
    }
    memset(g, 0, n * sizeof(float));
}
