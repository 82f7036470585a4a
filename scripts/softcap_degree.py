#!/usr/bin/env python3
"""Does a softcap put attention inside the polynomial method's regime? The method
approximates the exponential of the *bilinear* score x = tau q.k by a polynomial in x
(features of q and k); under a softcap c the function is exp(c tanh(x / c)) of that same
x, on the raw radius [-R, R]. This prints the Chebyshev interpolation degree that reaches
relative accuracy eps = 1e-3 (the quantity the engine certifies, docs/math.md §4.1) for
exp(x) and for exp(c tanh(x / c)), c in {1, 5, 20, 50}, R in {1 .. 100}.

Measured, not certified: 80-digit arithmetic (mpmath), the error taken on 601 points of
[-R, R] (cos-spaced), the degree found by doubling and bisection. "-" = above 512 (or
beyond what 80 digits resolve: exp on [-100, 100] needs relative accuracy 1e-3 e^-200
of its maximum). Needs mpmath (pip install mpmath); about 5 minutes on one core.

    python3 scripts/softcap_degree.py
"""
import mpmath as mp
mp.mp.dps = 80

def cheb_coeffs(f, g):
    n = g + 1
    xs = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / n) for k in range(n)]
    fx = [f(x) for x in xs]
    cs = []
    for j in range(n):
        s = mp.fsum(fx[k] * mp.cos(mp.pi * j * (k + mp.mpf(1) / 2) / n) for k in range(n))
        cs.append(2 * s / n)
    cs[0] /= 2
    return cs

def clenshaw(cs, t):
    b1 = b2 = mp.mpf(0)
    for c in reversed(cs[1:]):
        b1, b2 = 2 * t * b1 - b2 + c, b1
    return t * b1 - b2 + cs[0]

def rel_err(f, g, grid):
    cs = cheb_coeffs(f, g)
    return max(abs(clenshaw(cs, t) - f(t)) / f(t) for t in grid)

def degree(F, R, eps, gmax=512):
    f = lambda t: F(t * R)
    grid = [mp.cos(mp.pi * k / 600) for k in range(601)]
    lo, hi = 0, 1
    while rel_err(f, hi, grid) > eps:
        lo, hi = hi, hi * 2
        if hi > gmax:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if rel_err(f, mid, grid) <= eps:
            hi = mid
        else:
            lo = mid
    return hi

eps = mp.mpf("1e-3")
cs_ = [1, 5, 20, 50]
print("| raw radius R | exp(x) | " + " | ".join(f"c = {c}" for c in cs_) + " |")
print("|---:|---:|" + "---:|" * len(cs_))
for R in [1, 5, 10, 20, 50, 100]:
    row = [str(R), str(degree(mp.exp, R, eps) or "-")]
    for c in cs_:
        row.append(str(degree(lambda x, c=c: mp.exp(c * mp.tanh(x / c)), R, eps) or "-"))
    print("| " + " | ".join(row) + " |", flush=True)
