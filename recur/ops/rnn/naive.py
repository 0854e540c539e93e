"""Nonlinear RNNs, step by step through autograd: the executable spec of the family.

FlashRNN: Optimizing Traditional RNNs on Modern Hardware (Pöppel, Beck, Hochreiter;
arXiv:2412.07752), head-wise form:

    g_t = x_t + R h_{t-1} + b  (R block-diagonal over heads),   s_t = P(s_{t-1}, g_t)

The input projections x_t = W x'_t are done outside; the pointwise P is the cell's.
"""

from __future__ import annotations

import torch

from .cells import Cell
from .checks import check_rnn_inputs, initial_states


def naive_rnn(
    x_proj: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    *,
    cell: str | Cell,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A nonlinear RNN as a loop over time.

    Args:
        x_proj: projected inputs [B, T, Gx, H, Dh] (Gx input gates in the cell's order).
        R: recurrent weights [Gr, H, Dh, Dh] (head-wise blocks; H = 1 is a dense matrix),
            or [Gr, H, Dh] for cells with a diagonal recurrence (IndRNN, ParaGRU, ParaLSTM).
        b: biases [Gb, H, Dh].
        cell: a name from `CELLS` ("lstm", "gru", "slstm", ...) or a `Cell` instance.
        initial_state: s_0 [S, B, H, Dh] (the cell's S states, h first), or None for zeros.
        output_final_state: also return s_T.

    Returns:
        (h [B, T, H, Dh] in x_proj's dtype, final state [S, B, H, Dh] or None).
        States are float32 (float64 when an input is float64).
    """
    cell, dtype = check_rnn_inputs(x_proj, R, b, cell, initial_state)
    x, R, b = x_proj.to(dtype), R.to(dtype), b.to(dtype)
    # state: S tensors [B, H, Dh]
    state = initial_states(initial_state, cell, x_proj, dtype)
    outputs = []
    # slice time once: indexing inside the loop would make the backward quadratic in T
    for x_t in x.unbind(1):
        state = cell.step(x_t, R, b, state)
        outputs.append(state[0])
    B, T, _, H, Dh = x_proj.shape
    h = torch.stack(outputs, dim=1) if outputs else x.new_zeros(B, 0, H, Dh)
    return h.to(x_proj.dtype), (torch.stack(state) if output_final_state else None)
