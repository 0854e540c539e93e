"""Nonlinear RNNs, step by step through autograd: the executable spec of the family.

FlashRNN: Optimizing Traditional RNNs on Modern Hardware (Pöppel, Beck, Hochreiter;
arXiv:2412.07752), head-wise form:

    g_t = x_t + R h_{t-1} + b  (R block-diagonal over heads),   s_t = P(s_{t-1}, g_t)

The input projections x_t = W x'_t are done outside; the pointwise P is the cell's.
"""

from __future__ import annotations

import torch

from ..common import state_dtype
from .cells import Cell, resolve_cell


def naive_rnn(
    x_proj: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    *,
    cell: str | Cell,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A nonlinear RNN as a loop over time.

    Args:
        x_proj: projected inputs [B, T, Gx, H, Dh] (Gx input gates in the cell's order).
        R: recurrent weights [Gr, H, Dh, Dh] (head-wise blocks; H = 1 is a dense matrix),
            or [Gr, H, Dh] for cells with a diagonal recurrence (IndRNN, ParaGRU, ParaLSTM).
        b: biases [Gb, H, Dh].
        cell: a name from `CELLS` ("lstm", "gru", "slstm", ...) or a `Cell` instance
            (`ALRNN(num_relu=P)`, or a cell of your own).
        initial_state: s_0 [B, S, H, Dh] (the cell's S state components, h first; [N, S, H,
            Dh] with cu_seqlens), or None for zeros.
        output_final_state: also return s_T.
        cu_seqlens: [N + 1] offsets of N sequences packed in a batch of one.

    Returns:
        (h [B, T, H, Dh] in x_proj's dtype, final state [B, S, H, Dh] or [N, S, H, Dh], or
        None). States are float32 (float64 when an input is float64).
    """
    cell = resolve_cell(cell)
    B, T, _, H, Dh = x_proj.shape
    dtype = state_dtype(x_proj, R, b, initial_state)
    x, R, b = x_proj.to(dtype), R.to(dtype), b.to(dtype)
    # s_0: S tensors [B, H, Dh]
    if initial_state is None:
        state = tuple(x.new_zeros(B, H, Dh) for _ in cell.state_names)
    else:
        state = initial_state.to(dtype).unbind(1)
    # R laid out once for the per-step products
    prepared = cell.prepare(R)
    outputs = []
    # slice time once: indexing inside the loop would make the backward quadratic in T
    for x_t in x.unbind(1):
        # s_t = P(s_{t-1}, x_t + R h_{t-1} + b)
        state, _ = cell.tape_step(x_t, prepared, b, state)
        outputs.append(state[0])
    h = torch.stack(outputs, dim=1) if outputs else x.new_zeros(B, 0, H, Dh)
    return h.to(x_proj.dtype), torch.stack(state, dim=1)
