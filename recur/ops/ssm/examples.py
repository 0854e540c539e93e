"""Example inputs of the SSM families, shared by tests and benchmarks (which pass bigger
sizes by keyword). Every floating input requires grad; each has a random initial state.
Transitions are stable: Re A < 0 and |Ā| < 1."""

from __future__ import annotations

import math

import torch

from ..common.examples import RandomInputs, check_case
from ..family import Example


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_()


def _complex(real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
    """real + i imag; half-precision parts are widened, as complex has no half types."""
    wide = torch.float64 if real.dtype == torch.float64 else torch.float32
    return torch.complex(real.to(wide), imag.to(wide))


def _stable_poles(draw: RandomInputs, *shape: int, complex_: bool) -> torch.Tensor:
    """Continuous-time eigenvalues with Re in [−1.05, −0.05] (and Im in [−3, 3] when
    complex), a leaf."""
    real = -draw.uniform(*shape, low=0.05, high=1.05, grad=False)
    if not complex_:
        return _leaf(real)
    return _leaf(_complex(real, draw.uniform(*shape, low=-3.0, high=3.0, grad=False)))


def _discrete_poles(draw: RandomInputs, *shape: int, complex_: bool) -> torch.Tensor:
    """Discrete eigenvalues with modulus in [0.5, 0.99] (and any phase when complex), a leaf."""
    modulus = draw.uniform(*shape, low=0.5, high=0.99, grad=False)
    if not complex_:
        return _leaf(modulus)
    phase = draw.uniform(*shape, low=-math.pi, high=math.pi, grad=False)
    return _leaf(_complex(modulus * phase.cos(), modulus * phase.sin()))


def _vector(draw: RandomInputs, *shape: int, complex_: bool) -> torch.Tensor:
    return draw.complex_normal(*shape) if complex_ else draw.normal(*shape)


SELECTIVE_SCAN_CASES = ("real", "complex", "grouped", "gated")


def selective_scan_inputs(
    T: int, *, batch: int = 2, case: str = "real", dtype=torch.float64, device=None, seed: int = 0,
    channels: int = 6, states: int = 4, groups: int = 3,
) -> Example:
    """u, Δ [B, T, D], A [D, N], B, C [B, T, N] and x_0 [B, D, N]. "real": positive Δ,
    real A, B, C; "complex": A, B, C and x_0 complex; "grouped": B, C [B, T, G, N];
    "gated": Δ = softplus(delta + delta_bias), the skip D and the gate z."""
    check_case(case, SELECTIVE_SCAN_CASES)
    draw = RandomInputs(seed, dtype, device)
    B, D, N = batch, channels, states
    complex_ = case == "complex"
    u = draw.normal(B, T, D)
    gated = case == "gated"
    delta = draw.normal(B, T, D) if gated else draw.uniform(B, T, D, low=0.01, high=1.0)
    A = _stable_poles(draw, D, N, complex_=complex_)
    shape = (B, T, groups, N) if case == "grouped" else (B, T, N)
    Bm, Cm = _vector(draw, *shape, complex_=complex_), _vector(draw, *shape, complex_=complex_)
    kwargs = {"initial_state": _vector(draw, B, D, N, complex_=complex_)}
    if gated:
        kwargs |= {"D": draw.normal(D), "z": draw.normal(B, T, D), "delta_bias": draw.normal(D)}
        kwargs["delta_softplus"] = True
    return Example((u, delta, A, Bm, Cm), kwargs)


TIME_INVARIANT_CASES = ("real", "complex")


def _contracting(draw: RandomInputs, H: int, N: int, *, complex_: bool) -> torch.Tensor:
    """Dense transitions [H, N, N] of spectral norm 0.9, a leaf."""
    M = _vector(draw, H, N, N, complex_=complex_).detach()
    # the norm in double precision: low-precision dtypes have no matrix norm
    norm = torch.linalg.matrix_norm(M.to(torch.complex128 if M.is_complex() else torch.float64), ord=2)
    return _leaf(0.9 * M / norm.to(M.real.dtype)[:, None, None])


def _time_invariant_inputs(transition, T, batch, case, dtype, device, seed, H, N) -> Example:
    """u [B, T, H], Ā = transition(draw, H, N, complex_=...), B̄, C [H, N], D [H] and x_0
    [B, H, N]; complex in case "complex"."""
    check_case(case, TIME_INVARIANT_CASES)
    draw = RandomInputs(seed, dtype, device)
    complex_ = case == "complex"
    A_bar = transition(draw, H, N, complex_=complex_)
    B_bar, C = _vector(draw, H, N, complex_=complex_), _vector(draw, H, N, complex_=complex_)
    u = draw.normal(batch, T, H)
    kwargs = {"D": draw.normal(H), "initial_state": _vector(draw, batch, H, N, complex_=complex_)}
    return Example((u, A_bar, B_bar, C), kwargs)


def diag_ssm_inputs(
    T: int, *, batch: int = 2, case: str = "complex", dtype=torch.float64, device=None, seed: int = 0,
    channels: int = 6, states: int = 4,
) -> Example:
    """u [B, T, H], Ā, B̄, C [H, N] (|Ā| in [0.5, 0.99]), D [H] and x_0 [B, H, N]; Ā, B̄, C
    and x_0 complex in case "complex"."""
    return _time_invariant_inputs(_discrete_poles, T, batch, case, dtype, device, seed, channels, states)


def dense_ssm_inputs(
    T: int, *, batch: int = 2, case: str = "real", dtype=torch.float64, device=None, seed: int = 0,
    channels: int = 6, states: int = 4,
) -> Example:
    """u [B, T, H], Ā [H, N, N] (spectral norm 0.9), B̄, C [H, N], D [H] and x_0 [B, H, N];
    complex in case "complex"."""
    return _time_invariant_inputs(_contracting, T, batch, case, dtype, device, seed, channels, states)


def dplr_ssm_inputs(
    T: int, *, batch: int = 2, case: str = "complex", dtype=torch.float64, device=None, seed: int = 0,
    channels: int = 3, states: int = 4, rank: int = 1,
) -> Example:
    """u [B, T, H], Λ [H, N] (Re in [−1.05, −0.05]), P [H, r, N], B, C [H, N], steps Δ [H]
    log-uniform in [1e-3, 0.1], D [H] and x_0 [B, H, N]; all but u, Δ and D complex."""
    check_case(case, ("complex",))
    draw = RandomInputs(seed, dtype, device)
    H, N = channels, states
    Lambda = _stable_poles(draw, H, N, complex_=True)
    P = draw.complex_normal(H, rank, N, std=0.5)
    B, C = draw.complex_normal(H, N), draw.complex_normal(H, N)
    step = _leaf(torch.exp(draw.uniform(H, low=math.log(1e-3), high=math.log(0.1), grad=False)))
    u = draw.normal(batch, T, H)
    kwargs = {"D": draw.normal(H), "initial_state": draw.complex_normal(batch, H, N)}
    return Example((u, Lambda, P, B, C, step), kwargs)


def linear_scan_inputs(
    T: int, *, batch: int = 2, case: str = "complex", dtype=torch.float64, device=None, seed: int = 0,
    states: int = 6,
) -> Example:
    """a, b [B, T, N] with |a| in [0.5, 0.99], and h_0 [B, N]; complex in case "complex"."""
    check_case(case, TIME_INVARIANT_CASES)
    draw = RandomInputs(seed, dtype, device)
    complex_ = case == "complex"
    a = _discrete_poles(draw, batch, T, states, complex_=complex_)
    b = _vector(draw, batch, T, states, complex_=complex_)
    return Example((a, b), {"initial_state": _vector(draw, batch, states, complex_=complex_)})
