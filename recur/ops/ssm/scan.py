"""First-order diagonal recurrences in chunks, and Mamba's selective scan on top of them.

Mamba: Linear-Time Sequence Modeling with Selective State Spaces (Gu, Dao; arXiv:2312.00752):
x_t = a_t ⊙ x_{t-1} + b_t with a_t = exp(Δ_t A) and b_t = Δ_t B_t u_t; S5 and LRU run the
same recurrence with a time-invariant a. Split time into chunks of C steps; inside chunk k,
from step j,

    x_{kC+j} = h_{k,j} + p_{k,j} ⊙ x_{kC−1},  h_{k,j} = a h_{k,j−1} + b (from 0),  p_{k,j} = Π_{i ≤ j} a

so one loop of C steps over [B, T/C, …] tensors gives every h and p, the states entering
the chunks follow from x_{kC+C−1} = p_{k,C−1} x_{kC−1} + h_{k,C−1} by
`ops.common.linear_recurrence`, and one fused multiply-add finishes. Nothing is divided:
the products p only shrink (|a| ≤ 1 for Re A ≤ 0) and underflow to their correct value 0.
C + log2(T/C) sequential steps instead of T, and autograd runs the same loops backwards.

Packed batches run as one recurrence: at each sequence's first step a is set to 0, which
forgets whatever came before, and b takes a ⊙ (that sequence's initial state).
"""

from __future__ import annotations

import torch

from ..common import linear_recurrence
from .checks import state_dtype
from .naive import finish_selective_scan, output_dtype, prepare_selective_scan

# steps per chunk: a constant, so the form never depends on the sequence length
CHUNK_SIZE = 64


def chunked_linear_recurrence(
    a: torch.Tensor, b: torch.Tensor, initial: torch.Tensor | None = None, chunk_size: int = CHUNK_SIZE
) -> torch.Tensor:
    """h_t = a_t ⊙ h_{t-1} + b_t for all t, a and b [B, T, ...] (equal shapes and dtypes,
    real or complex), initial [B, ...] or None; returns h [B, T, ...]."""
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
    first = torch.zeros_like(after[:, :1]) if initial is None else initial.unsqueeze(1)
    entering = torch.cat([first, after[:, :-1]], dim=1)
    h = torch.addcmul(local, products, entering.unsqueeze(2))
    return h.reshape(batch, chunks * chunk_size, *rest)[:, :T]


def start_sequences(a, b, initial_state, cu_seqlens):
    """a, b [1, T, ...] of a packed batch made one recurrence: a = 0 at every sequence's first
    step, and b += a ⊙ (its initial state [N, ...]) there."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    firsts = cu_seqlens[:-1][lengths > 0].long()
    a_first = a[:, firsts]
    a = a.index_fill(1, firsts, 0)
    if initial_state is not None:
        b = b.index_add(1, firsts, a_first * initial_state[lengths > 0].unsqueeze(0))
    return a, b


def final_states(h, initial_state, cu_seqlens):
    """The state after each sequence of a packed batch, [N, ...], from every state
    h [1, T, ...]: its last one, or its initial state (zeros) when it is empty."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    last = h[0, (cu_seqlens[1:] - 1).clamp(min=0).long()]
    start = torch.zeros_like(last) if initial_state is None else initial_state.to(last.dtype)
    empty = (lengths == 0).view(-1, *([1] * (last.dim() - 1)))
    return torch.where(empty, start, last)


def _solve(solve, a, b, initial_state, cu_seqlens):
    """Every state of h_t = a_t ⊙ h_{t-1} + b_t by `solve`, and the final one(s)."""
    if cu_seqlens is None:
        h = solve(a, b, initial_state)
        return h, h[:, -1]
    h = solve(*start_sequences(a, b, initial_state, cu_seqlens), None)
    return h, final_states(h, initial_state, cu_seqlens)


def scan_selective_scan(
    u, delta, A, B, C, *, D, z, delta_bias, delta_softplus, initial_state, cu_seqlens
):
    """The selective scan, chunked; the arguments of `naive_selective_scan`, already checked."""
    out_dtype = u.dtype
    u, delta, A, B, C, h0 = prepare_selective_scan(
        u, delta, A, B, C, delta_bias, delta_softplus, initial_state
    )
    # Ā_t = exp(Δ_t A) and B̄_t u_t = Δ_t u_t B_t, both [B, T, D, N]
    decay = torch.exp(delta[..., None] * A)
    drive = (delta * u)[..., None] * B
    h0 = None if initial_state is None else h0
    h, final = _solve(chunked_linear_recurrence, decay, drive, h0, cu_seqlens)
    y = (h * C).sum(-1).real
    return finish_selective_scan(y, u, D, z, out_dtype), final


def _linear_scan(solve, a, b, initial_state, cu_seqlens):
    state = state_dtype(a, b, initial_state)
    out_dtype = output_dtype(a, b, state)
    h0 = None if initial_state is None else initial_state.to(state)
    h, final = _solve(solve, a.to(state), b.to(state), h0, cu_seqlens)
    return h.to(out_dtype), final


def scan_linear_scan(a, b, *, initial_state, cu_seqlens):
    """h_t = a_t ⊙ h_{t-1} + b_t, chunked; the arguments of `naive_linear_scan`, checked."""
    return _linear_scan(chunked_linear_recurrence, a, b, initial_state, cu_seqlens)


def parallel_linear_scan(a, b, *, initial_state, cu_seqlens):
    """h_t = a_t ⊙ h_{t-1} + b_t by one log-depth scan over all of T; the arguments of
    `naive_linear_scan`, checked."""
    return _linear_scan(linear_recurrence, a, b, initial_state, cu_seqlens)
