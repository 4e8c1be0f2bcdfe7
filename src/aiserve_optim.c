/*
 * aiserve AdamW, learning-rate schedule and gradient clipping (see
 * aiserve_optim.h), written after torch/optim/adamw.py's single-tensor
 * path, transformers' optimization.py and torch/nn/utils/clip_grad.py.
 */
#include <math.h>

#include "aiserve_optim.h"


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


double
aiserve_sumsq(const float *g, size_t n)
{
    double  ss = 0;
    size_t  i;

    for (i = 0; i < n; i++) {
        ss += (double) g[i] * g[i];
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


void
aiserve_adamw_update(float *p, const float *g, float *m, float *v,
    size_t n, const aiserve_optim_config_t *c, float lr, float weight_decay,
    size_t step)
{
    float   b1 = c->beta1, b2 = c->beta2, decay = 1.f - lr * weight_decay;
    float   step_size, bc2_sqrt, denom;
    size_t  i;

    step_size = (float) (lr / (1.0 - pow(b1, (double) step)));
    bc2_sqrt = (float) sqrt(1.0 - pow(b2, (double) step));
    for (i = 0; i < n; i++) {
        p[i] *= decay;
        m[i] += (g[i] - m[i]) * (1.f - b1);
        v[i] = v[i] * b2 + (1.f - b2) * g[i] * g[i];
        denom = sqrtf(v[i]) / bc2_sqrt + c->eps;
        p[i] -= step_size * m[i] / denom;
    }
}
