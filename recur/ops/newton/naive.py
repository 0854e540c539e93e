"""A nonlinear RNN with a diagonal Jacobian, step by step: the executable spec of the
newton family, the unique solution its Newton iterations converge to.

ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models
(Danieli, Rodríguez, Sarabia, Suau, Zappella; arXiv:2510.21450):

    s_t = f(s_{t-1}, x_t)  for all t,   f a cell whose units do not mix
"""

from __future__ import annotations

import torch

from ..rnn.cells import Cell
from ..rnn.naive import naive_rnn
from .info import NewtonInfo


def naive_newton(
    x_proj: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    *,
    cell: str | Cell,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    max_iterations: int = 32,
    tol: float | None = None,
    on_failure: str = "warn",
    compile: bool = False,
    info: NewtonInfo | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The recurrence of a diagonal-Jacobian cell as a loop over time.

    Args:
        x_proj: projected inputs [B, T, Gx, H, Dh] (Gx input gates in the cell's order).
        R: diagonal recurrent weights [Gr, H, Dh].
        b: biases [Gb, H, Dh].
        cell: "paragru", "paralstm", "indrnn", or a `Cell` with
            `jacobian_structure = "diagonal"` (its Jacobian ∂s_t/∂s_{t-1} is diagonal per
            unit: an S×S block of diagonals for S states).
        initial_state: s_0 [B, S, H, Dh] (the cell's S state components, h first; [N, S, H,
            Dh] with cu_seqlens), or None for zeros.
        output_final_state: also return s_T.
        cu_seqlens: [N + 1] offsets of N sequences packed in a batch of one.

    The options of the Newton solve, ignored by the naive loop, which is exact:
        max_iterations: the most Newton steps (each one linear scan); T steps are always
            exact, since step k fixes s_1..s_k.
        tol: stop when max|f(s_{t-1}, x_t) − s_t| <= tol · (1 + max|s|); None: 1e-12 in
            float64, 1e-5 in float32.
        on_failure: when the residual does not reach tol (or is not finite) after
            max_iterations, the sequential loop computes the states instead, and "warn"
            issues a `NewtonFallbackWarning`, "fallback" only records it in `info`,
            "raise" raises a RuntimeError.
        compile: run the whole-sequence work (the step, the step with its Jacobian, the
            scans, the backward's vector-Jacobian product) through `torch.compile`, each as
            a few fused loops; the first call with a new shape compiles (seconds).
        info: a `NewtonInfo` that the call fills in (iterations, residuals, converged,
            fell_back), or None.

    Returns:
        (h [B, T, H, Dh] in x_proj's dtype, final state [B, S, H, Dh] or [N, S, H, Dh], or
        None). States are float32 (float64 when an input is float64).
    """
    return naive_rnn(x_proj, R, b, cell=cell, initial_state=initial_state)
