/*
 * aiserve optimisation as transformers' Trainer does it by default:
 * torch.optim.AdamW (decoupled weight decay), the learning rate of
 * get_linear_schedule_with_warmup, and torch.nn.utils.clip_grad_norm_.
 * Plain fp32 arrays; no nginx types.
 */
#ifndef AISERVE_OPTIM_H
#define AISERVE_OPTIM_H

#include <stddef.h>

typedef struct {
    float   learning_rate;    /* the peak, reached after the warmup */
    float   beta1, beta2;     /* AdamW's betas */
    float   eps;              /* AdamW's eps, added to sqrt(v_hat) */
    float   weight_decay;     /* decoupled: p -= lr * weight_decay * p */
    size_t  warmup_steps;     /* optimiser steps of linear warmup */
    size_t  total_steps;      /* the rate decays linearly to 0 here */
    float   max_grad_norm;    /* global L2 norm clipped to this; <= 0:
                                 no clipping */
} aiserve_optim_config_t;

/*
 * Trainer's defaults (TrainingArguments): learning_rate 5e-5, betas 0.9 /
 * 0.999, eps 1e-8, weight_decay 0, no warmup, max_grad_norm 1.0;
 * total_steps is the caller's (epochs * steps per epoch).
 */
void aiserve_optim_defaults(aiserve_optim_config_t *c);

/*
 * The learning rate of optimiser step STEP (0-based: the first update
 * uses step 0) under get_linear_schedule_with_warmup: LR * step / warmup
 * during the warmup, then LR * (total - step) / (total - warmup), never
 * below 0.  (The first step of a warmup has rate 0, as in transformers.)
 */
float aiserve_lr_linear(float lr, size_t step, size_t warmup_steps,
    size_t total_steps);

/* Sum of squares of the N gradients at G, accumulated in double (in 8
 * lanes, added in a fixed order: the same result on every machine). */
double aiserve_sumsq(const float *g, size_t n);

/*
 * torch.nn.utils.clip_grad_norm_(max_norm)'s factor for a global L2 NORM
 * (the square root of every trainable gradient's aiserve_sumsq()):
 * min(1, max_norm / (norm + 1e-6)), by which every gradient is
 * multiplied; 1 when MAX_NORM <= 0 (no clipping).
 */
float aiserve_clip_coef(double norm, float max_norm);

/*
 * One torch.optim.AdamW update of N parameters P with gradients G times
 * GRAD_SCALE (clip_grad_norm_'s factor, or 1) and moments M, V (zero
 * before the first step), STEP counting from 1:
 *   p *= 1 - lr * weight_decay
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step)
 *        + eps)
 * then G = 0 (optimizer.zero_grad()), in one vectorised pass.
 * WEIGHT_DECAY is given per call: 0 for the tensors Trainer exempts.
 */
void aiserve_adamw_update(float *p, float *g, float *m, float *v, size_t n,
    const aiserve_optim_config_t *c, float lr, float weight_decay,
    size_t step, float grad_scale);

#endif /* AISERVE_OPTIM_H */
