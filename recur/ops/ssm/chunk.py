"""Mamba's selective scan in chunks: a loop inside chunks, vectorised over all chunks at
once, and a parallel scan across chunk boundaries.

Mamba: Linear-Time Sequence Modeling with Selective State Spaces (Gu, Dao; arXiv:2312.00752):
x_t = a_t ⊙ x_{t-1} + b_t with a_t = exp(Δ_t A) and b_t = Δ_t B_t u_t. Split time into
chunks of C steps; inside chunk k, from step j,

    x_{kC+j} = h_{k,j} + p_{k,j} ⊙ x_{kC−1},   h_{k,j} = a h_{k,j−1} + b (from 0),   p_{k,j} = Π_{i ≤ j} a_{kC+i}

so one loop of C steps over [B, T/C, …] tensors gives every h and p, the states entering
the chunks follow from x_{kC+C−1} = p_{k,C−1} x_{kC−1} + h_{k,C−1} by
`ops.common.linear_recurrence`, and one fused multiply-add finishes. Nothing is divided:
the products p only shrink (|a| ≤ 1 for Re A ≤ 0) and underflow to their correct value 0.
C + log2(T/C) sequential steps instead of T, and autograd runs the same loops backwards.
"""

from __future__ import annotations

import torch

from ..common import linear_recurrence
from .naive import finish_selective_scan, prepare_selective_scan

# steps per chunk: a constant, so the form never depends on the sequence length
CHUNK_SIZE = 64


def chunked_linear_recurrence(
    a: torch.Tensor, b: torch.Tensor, initial: torch.Tensor | None = None, chunk_size: int = CHUNK_SIZE
) -> torch.Tensor:
    """h_t = a_t ⊙ h_{t-1} + b_t for all t, a and b [B, T, ...] (equal shapes, real or
    complex), initial [B, ...] or None; returns h [B, T, ...]."""
    batch, T = b.shape[:2]
    rest = b.shape[2:]
    chunks = -(-T // chunk_size)
    pad = chunks * chunk_size - T
    if pad:
        # identity steps (a = 1, b = 0) leave the last state unchanged
        a = torch.cat([a, a.new_ones(batch, pad, *rest)], dim=1)
        b = torch.cat([b, b.new_zeros(batch, pad, *rest)], dim=1)
    a = a.reshape(batch, chunks, chunk_size, *rest)
    b = b.reshape(batch, chunks, chunk_size, *rest)
    h = torch.zeros_like(b[:, :, 0])
    local = []
    for a_j, b_j in zip(a.unbind(2), b.unbind(2), strict=True):
        # [B, chunks, ...]: step j of every chunk at once
        h = torch.addcmul(b_j, a_j, h)
        local.append(h)
    local = torch.stack(local, dim=2)
    # p_{k,j} = Π_{i ≤ j} a: a running product, no division
    products = torch.cumprod(a, dim=2)
    # the state after each chunk, then the one entering it, [B, chunks, ...]
    after = linear_recurrence(products[:, :, -1], local[:, :, -1], initial)
    entering = torch.cat([torch.zeros_like(after[:, :1]) if initial is None else initial.unsqueeze(1), after[:, :-1]], dim=1)
    h = torch.addcmul(local, products, entering.unsqueeze(2))
    return h.reshape(batch, chunks * chunk_size, *rest)[:, :T]


def chunk_selective_scan(
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
    """The selective scan in chunks; same arguments as `naive_selective_scan`."""
    out_dtype = u.dtype
    u, delta, A, B, C, h0 = prepare_selective_scan(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state
    )
    batch, T, channels = u.shape
    N = A.shape[1]
    if T == 0:
        h_last = torch.zeros(batch, channels, N, dtype=A.dtype, device=u.device) if h0 is None else h0
        return finish_selective_scan(u.clone(), u, D, z, out_dtype), (h_last if output_final_state else None)
    # Ā_t = exp(Δ_t A) and B̄_t u_t = Δ_t u_t B_t, both [B, T, D, N]
    decay = torch.exp(delta[..., None] * A)
    drive = (delta * u)[..., None] * B
    h = chunked_linear_recurrence(decay, drive, h0)
    y = (h * C).sum(-1).real
    return finish_selective_scan(y, u, D, z, out_dtype), (h[:, -1] if output_final_state else None)
