"""Continuous-time SSM parameters to discrete recurrences (S4, S4D, DSS, LSSL, S5).

On the Parameterization and Initialization of Diagonal State Space Models (Gu, Gupta,
Goel, Ré; arXiv:2206.11893), §2: with step Δ,

    ZOH:      Ā = exp(ΔA),                 B̄ = (exp(ΔA) − 1) / A · B
    bilinear: Ā = (1 + ΔA/2) / (1 − ΔA/2), B̄ = Δ / (1 − ΔA/2) · B

and DSS (Gupta, Gu, Berant; arXiv:2203.14343) normalises the ZOH kernel over a length L:
B̄ = (exp(ΔA) − 1) / (A (exp(LΔA) − 1)) · B, its "softmax" form.
"""

from __future__ import annotations

import torch

METHODS = ("zoh", "bilinear", "dss")


def discretize(
    A: torch.Tensor,
    step: torch.Tensor,
    B: torch.Tensor | None = None,
    method: str = "zoh",
    length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal A [H, N] and step Δ ([H] or [H, N]) -> (Ā [H, N], B̄ [H, N]).

    B [H, N] defaults to ones; `length` is the normalisation length L of method "dss".
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}")
    if step.dim() == A.dim() - 1:
        step = step[..., None]
    step_A = step * A
    B = torch.ones_like(step_A) if B is None else B
    if method == "bilinear":
        return (1 + step_A / 2) / (1 - step_A / 2), B * step / (1 - step_A / 2)
    A_bar = torch.exp(step_A)
    # (exp(ΔA) − 1) / A = Δ · expm1(ΔA) / (ΔA): expm1 keeps small steps exact
    B_bar = B * _expm1(step_A) / A
    if method == "dss":
        if not isinstance(length, int) or length <= 0:
            raise ValueError(f"method 'dss' needs a positive int length; got {length!r}")
        B_bar = B_bar / _expm1(step_A * length)
    return A_bar, B_bar


def discretize_dense(A: torch.Tensor, step: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear discretisation of a dense A [H, N, N] with step Δ [H] and B [H, N]:
    Ā = (I − ΔA/2)⁻¹ (I + ΔA/2), B̄ = Δ (I − ΔA/2)⁻¹ B (LSSL, S4)."""
    N = A.shape[-1]
    eye = torch.eye(N, dtype=A.dtype, device=A.device)
    half = step.to(A.dtype)[:, None, None] * A / 2
    # one solve for both right-hand sides; a lower-triangular A (HiPPO-LegS) needs no factorisation
    rhs = torch.cat([eye + half, (step.to(A.dtype)[:, None] * B.to(A.dtype)).unsqueeze(-1)], dim=-1)
    if not bool(A.triu(1).any()):
        out = torch.linalg.solve_triangular(eye - half, rhs, upper=False)
    else:
        out = torch.linalg.lu_solve(*torch.linalg.lu_factor(eye - half), rhs)
    return out[..., :N], out[..., N]


def discretize_dplr(
    Lambda: torch.Tensor, P: torch.Tensor, Q: torch.Tensor, B: torch.Tensor, step: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`discretize_dense` for A = diag(Λ) − Pᵀ Q^* (Λ, B [H, N]; P, Q [H, r, N]; step Δ [H]),
    inverting I − ΔA/2 = diag(1 − Δλ/2) + (Δ/2) Pᵀ Q^* by the Woodbury identity (no
    N × N solve)."""
    N, r = Lambda.shape[-1], P.shape[-2]
    step = step.to(Lambda.dtype)
    A = torch.diag_embed(Lambda) - P.transpose(-1, -2) @ Q.conj()
    eye = torch.eye(N, dtype=A.dtype, device=A.device)
    d_inv = 1 / (1 - step[:, None] * Lambda / 2)  # [H, N]
    U = (step[:, None, None] / 2) * P.transpose(-1, -2)  # [H, N, r]
    V = Q.conj()  # [H, r, N]
    # (D + U V)⁻¹ = D⁻¹ − D⁻¹ U (I + V D⁻¹ U)⁻¹ V D⁻¹
    small = torch.eye(r, dtype=A.dtype, device=A.device) + V @ (d_inv[..., None] * U)
    inverse = torch.diag_embed(d_inv) - (d_inv[..., None] * U) @ torch.linalg.solve(small, V * d_inv[:, None, :])
    A_bar = inverse @ (eye + (step[:, None, None] / 2) * A)
    B_bar = step[:, None] * (inverse @ B.unsqueeze(-1)).squeeze(-1)
    return A_bar, B_bar


def _expm1(x: torch.Tensor) -> torch.Tensor:
    if x.is_complex():
        # expm1 has no complex kernel; exp(x) − 1 = 2 e^{x/2} sinh(x/2) keeps the digits of small x
        return 2 * torch.exp(x / 2) * torch.sinh(x / 2)
    return torch.expm1(x)
