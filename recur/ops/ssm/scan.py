"""Mamba's selective scan by a log-depth parallel scan over time.

Mamba: Linear-Time Sequence Modeling with Selective State Spaces (Gu, Dao; arXiv:2312.00752):
x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t B_t u_t is a first-order linear recurrence with a
diagonal coefficient, so all states come out of `ops.common.linear_recurrence` (Hillis–Steele
doubling with a scan-shaped backward) instead of T dependent steps; the readout
y_t = Re(C_t · x_t) is then one batched contraction.
"""

from __future__ import annotations

import torch

from ..common import linear_recurrence
from .naive import finish_selective_scan, prepare_selective_scan


def scan_selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The selective scan by a parallel scan; same arguments as `naive_selective_scan`."""
    out_dtype = u.dtype
    u, delta, A, B, C, h0 = prepare_selective_scan(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state
    )
    batch, T, channels = u.shape
    N = A.shape[1]
    # Ā_t = exp(Δ_t A) and B̄_t u_t = Δ_t u_t B_t, both [B, T, D, N]
    decay = torch.exp(delta[..., None] * A)
    drive = (delta * u)[..., None] * B
    if T == 0:
        h_last = torch.zeros(batch, channels, N, dtype=A.dtype, device=u.device) if h0 is None else h0
        return finish_selective_scan(u.clone(), u, D, z, out_dtype), (h_last if output_final_state else None)
    h = linear_recurrence(decay, drive, h0)
    y = (h * C).sum(-1).real
    return finish_selective_scan(y, u, D, z, out_dtype), (h[:, -1] if output_final_state else None)
