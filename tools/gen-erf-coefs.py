#!/usr/bin/env python3
"""Coefficients of the fp32 erf in src/aiserve_ops.c (aiserve_erf_exp_inline).

  |x| < 1:  erf(x) = x + x P(x^2), P of degree 6 fitted to erf(x)/x - 1
            with weights x / erf(x) (relative error of erf)
  |x| >= 1: erf(x) = 1 - exp(-x^2) R(|x| - 2.5), R of degree 11 fitted
            to erfc(x) exp(x^2) on [1, 4] with weights 1 / R (relative)

Each fit is a weighted least-squares on Chebyshev nodes, reweighted by
Lawson's iteration towards the minimax error.  Prints the coefficients,
highest degree first, as Horner's scheme in the C code uses them, and the
largest error in ulp of the fp32 evaluation simulated with numpy (without
FMA: the default build; the AVX2 and AVX-512 builds round less).

  .venv/bin/python tools/gen-erf-coefs.py
"""
import numpy as np
from scipy.special import erf, erfc

N = 6000


def lsq(t, y, w, deg):
    v = np.vander(t, deg + 1, increasing=True)
    c, *_ = np.linalg.lstsq(v * w[:, None], y * w, rcond=None)
    return c


def lawson(t, y, w, deg, iters=30):
    u = np.ones_like(t)
    for _ in range(iters):
        c = lsq(t, y, w * np.sqrt(u), deg)
        r = np.abs((np.vander(t, deg + 1, increasing=True) @ c - y) * w)
        u = u * r
        u /= u.sum()
    return c


def horner32(c, t):
    p = np.full_like(t, np.float32(c[-1]))
    for k in c[-2::-1]:
        p = (p * t + np.float32(k)).astype(np.float32)
    return p


def ulps(got, ref):
    return np.abs(got.astype(np.float64) - ref) / np.spacing(
        np.abs(ref).astype(np.float32)).astype(np.float64)


def chebyshev(a, b):
    return np.cos(np.pi * (np.arange(N) + 0.5) / N) * (b - a) / 2 + (a + b) / 2


def main():
    x = chebyshev(0.0, 1.0)
    x = x[x > 1e-6]
    p = lawson(x * x, erf(x) / x - 1, x / erf(x), 6)
    x = chebyshev(1.0, 4.0)
    y = erfc(x) * np.exp(x * x)
    r = lawson(x - 2.5, y, 1 / y, 11)

    xt = np.linspace(1e-6, 1, 400001).astype(np.float32)
    got = (xt + (xt * horner32(p, (xt * xt).astype(np.float32)))
           .astype(np.float32)).astype(np.float32)
    small = ulps(got, erf(xt.astype(np.float64))).max()
    xt = np.linspace(1, 4, 400001).astype(np.float32)
    e = np.exp(-(xt * xt).astype(np.float32).astype(np.float64)) \
        .astype(np.float32)
    got = (np.float32(1) - (e * horner32(r, (xt - np.float32(2.5))
                                         .astype(np.float32)))
           .astype(np.float32)).astype(np.float32)
    large = ulps(got, erf(xt.astype(np.float64))).max()

    print("P (|x| < 1), degree 6 to 0:")
    for v in p[::-1]:
        print("    %.9e" % v)
    print("R (|x| >= 1, in |x| - 2.5), degree 11 to 0:")
    for v in r[::-1]:
        print("    %.9e" % v)
    print("max ulp (fp32, no FMA): |x| < 1 %.2f, |x| >= 1 %.2f"
          % (small, large))


if __name__ == "__main__":
    main()
