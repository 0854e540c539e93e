"""Privacy accounting for DP-SGD: the Rényi DP of the Poisson-subsampled Gaussian mechanism.

Deep Learning with Differential Privacy (Abadi et al.; arXiv:1607.00133); Rényi
Differential Privacy of the Sampled Gaussian Mechanism (Mironov, Talwar, Zhang;
arXiv:1908.10530) for the RDP of one step; Hypothesis Testing Interpretations and Rényi
Differential Privacy (Balle et al.; arXiv:2004.00010) for the conversion to (ε, δ).

One step samples each example with probability q and adds N(0, σ² C²) to the sum of the
clipped gradients. Its RDP at order α is log(A_α) / (α - 1) with

    A_α = E_{z ~ μ0} [(μ(z) / μ0(z))^α],   μ0 = N(0, σ²),   μ = (1 - q) μ0 + q N(1, σ²),

RDP composes by adding over steps, and a mechanism that is (α, ρ)-RDP is (ε, δ)-DP with

    ε = ρ + log((α - 1) / α) - (log δ + log α) / (α - 1),

minimised over the orders α. The orders and the formulas are Opacus's, so the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# the Rényi orders ε is minimised over (Opacus's RDPAccountant.DEFAULT_ALPHAS)
ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))

# (σ, q, steps): `steps` optimiser steps with noise multiplier σ and sampling rate q
History = Sequence[tuple[float, float, int]]


def _log_add(a: float, b: float) -> float:
    """log(e^a + e^b)."""
    low, high = min(a, b), max(a, b)
    if low == -math.inf:
        return high
    return math.log1p(math.exp(low - high)) + high


def _log_sub(a: float, b: float) -> float:
    """log(e^a - e^b), for a >= b."""
    if a < b:
        raise ValueError(f"log-subtraction needs a >= b; got a = {a}, b = {b}")
    if b == -math.inf:
        return a
    if a == b:
        return -math.inf
    return math.log(math.expm1(a - b)) + b


def _log_erfc(x: float) -> float:
    """log(erfc(x)), accurate where erfc(x) underflows (x > 26)."""
    if x < 20:
        return math.log(math.erfc(x))
    # erfc(x) = e^{-x²} / (x √π) · (1 - 1/(2x²) + 3/(2x²)² - 15/(2x²)³ + ...)
    u = 1 / (2 * x * x)
    series = 1 - u + 3 * u**2 - 15 * u**3 + 105 * u**4
    return -x * x - math.log(x) - 0.5 * math.log(math.pi) + math.log(series)


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    """log A_α for an integer order: the binomial expansion of E[((1 - q) + q μ1/μ0)^α]."""
    log_a = -math.inf
    for i in range(alpha + 1):
        # C(α, i) q^i (1 - q)^(α - i) · E_μ0[(μ1/μ0)^i], and E_μ0[(μ1/μ0)^i] = exp((i² - i) / (2σ²))
        log_coef = math.log(math.comb(alpha, i)) + i * math.log(q) + (alpha - i) * math.log(1 - q)
        log_a = _log_add(log_a, log_coef + (i * i - i) / (2 * sigma**2))
    return log_a


def _log_a_fractional(q: float, sigma: float, alpha: float) -> float:
    """log A_α for a fractional order: the series of Mironov et al. §3.3, split at z0 where
    μ1/μ0 = (1 - q)/q, summed until its terms fall below e^-30."""
    log_a0, log_a1 = -math.inf, -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    coef, i = 1.0, 0
    while True:
        # the generalised binomial coefficient C(α, i), by its recurrence
        log_coef = math.log(abs(coef))
        j = alpha - i
        log_t0 = log_coef + i * math.log(q) + j * math.log(1 - q)
        log_t1 = log_coef + j * math.log(q) + i * math.log(1 - q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma**2) + log_e1
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        if max(log_s0, log_s1) < -30:
            return _log_add(log_a0, log_a1)
        coef *= (alpha - i) / (i + 1)
        i += 1


def rdp(q: float, sigma: float, alpha: float) -> float:
    """The RDP at order α of one step with sampling rate q and noise multiplier σ."""
    if q == 0:
        return 0.0
    if sigma == 0 or math.isinf(alpha):
        return math.inf
    if q == 1:
        return alpha / (2 * sigma**2)
    if float(alpha).is_integer():
        return _log_a_integer(q, sigma, int(alpha)) / (alpha - 1)
    return _log_a_fractional(q, sigma, alpha) / (alpha - 1)


def rdp_epsilon(history: History, delta: float, orders: Sequence[float] = ORDERS) -> tuple[float, float]:
    """(ε, the order that gives it) after the steps of `history`, at `delta`."""
    best, best_order = math.inf, math.nan
    for alpha in orders:
        total = sum(steps * rdp(q, sigma, alpha) for sigma, q, steps in history if steps)
        eps = total + math.log((alpha - 1) / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)
        if eps < best:
            best, best_order = eps, alpha
    return max(best, 0.0), best_order


def prv_epsilon(history: History, delta: float) -> float:
    """ε by Opacus's PRV accountant (Gopi, Lee, Wutschitz; arXiv:2106.02848), which is tighter than RDP."""
    try:
        from opacus.accountants import PRVAccountant
    except ImportError:
        raise ImportError("privacy.accountant 'prv' needs Opacus: pip install 'recur[privacy]'") from None
    accountant = PRVAccountant()
    accountant.history = [(sigma, q, steps) for sigma, q, steps in history if steps]
    if not accountant.history:
        return 0.0
    return float(accountant.get_epsilon(delta))


def epsilon(history: History, delta: float, accountant: str = "rdp") -> float:
    """ε at `delta` after the steps of `history`, by the "rdp" or "prv" accountant."""
    if any(sigma == 0 and q > 0 and steps for sigma, q, steps in history):
        return math.inf
    if accountant == "rdp":
        return rdp_epsilon(history, delta)[0]
    if accountant == "prv":
        return prv_epsilon(history, delta)
    raise ValueError(f"accountant must be 'rdp' or 'prv'; got {accountant!r}")


def noise_for_epsilon(target: float, q: float, steps: int, delta: float, accountant: str = "rdp",
                      tolerance: float = 1e-3) -> float:
    """The smallest noise multiplier σ (within `tolerance`, relative) whose ε after `steps`
    steps at sampling rate q stays at or below `target`."""
    def eps(sigma: float) -> float:
        return epsilon([(sigma, q, steps)], delta, accountant)

    high = 1.0
    while eps(high) > target:
        high *= 2
        if high > 1e6:
            raise ValueError(f"no noise multiplier reaches ε = {target} at δ = {delta} over {steps} steps of rate {q}")
    low = high / 2 if high > 1.0 else 0.0
    while high - low > tolerance * high:
        middle = (low + high) / 2
        if eps(middle) > target:
            low = middle
        else:
            high = middle
    return high
