/*
 * The rational approximation of erf shared by the element-wise kernels
 * (aiserve_ops.c, scalar loops the compiler vectorises) and the GEMM
 * epilogue (aiserve_gemm.c, AVX-512 registers): the minimax form of
 * Eigen's generic_fast_erf_float and XLA, x P(x^2) / Q(x^2), accurate to
 * float rounding on [-4, 4]; outside it erf is +-1 in float, so callers
 * clamp x to [-4, 4] first.  T is float or a GCC vector of floats.
 */
#ifndef AISERVE_ERF_H
#define AISERVE_ERF_H

#define AISERVE_ERF_CLAMPED(T, x, out)                                      \
    do {                                                                    \
        T  x2_ = (x) * (x), p_, q_;                                         \
                                                                            \
        p_ = x2_ * -2.72614225801306e-10f + 2.77068142495902e-08f;          \
        p_ = x2_ * p_ + -2.10102402082508e-06f;                             \
        p_ = x2_ * p_ + -5.69250639462346e-05f;                             \
        p_ = x2_ * p_ + -7.34990630326855e-04f;                             \
        p_ = x2_ * p_ + -2.95459980854025e-03f;                             \
        p_ = x2_ * p_ + -1.60960333262415e-02f;                             \
        p_ = (x) * p_;                                                      \
                                                                            \
        q_ = x2_ * -1.45660718464996e-05f + -2.13374055278905e-04f;         \
        q_ = x2_ * q_ + -1.68282697438203e-03f;                             \
        q_ = x2_ * q_ + -7.37332916720468e-03f;                             \
        q_ = x2_ * q_ + -1.42647390514189e-02f;                             \
                                                                            \
        (out) = p_ / q_;                                                    \
    } while (0)

#endif /* AISERVE_ERF_H */
