"""The nonlinear RNN family: Elman, IndRNN, LSTM, GRU, MGU, RHN, sLSTM, AL-RNN, PLRNN,
dendPLRNN, shPLRNN, ParaGRU, ParaLSTM, with dense or head-wise block-diagonal recurrence (FlashRNN layout).

`rnn(x_proj, R, b, cell=..., impl=...)` runs the form `impl` names: "naive" (the spec, a
loop through autograd), "sequential" (a loop with a backward through time written by
hand for every cell; what "auto" picks off CUDA) or "triton" (fused GPU kernels, optional,
for LSTM, GRU and sLSTM with heads of up to 64 units; what "auto" picks for them on CUDA).
Each is also a function of its own (`naive_rnn`, `sequential_rnn`, `triton_rnn`). Cells whose Jacobian is diagonal are also solved in
parallel over time by Newton's method: the `newton` family (`recur.ops.newton`).
"""

from __future__ import annotations

import torch

from ..common.examples import RandomInputs, check_case
from ..family import Example, Family, Form, StateLayout, register_family, triton_form
from .cells import (
    ALRNN,
    CELLS,
    GRU,
    LSTM,
    MGU,
    PLRNN,
    RHN,
    SLSTM,
    Cell,
    DendPLRNN,
    Elman,
    IndRNN,
    ParaGRU,
    ParaLSTM,
    ShallowPLRNN,
    resolve_cell,
)
from .checks import check_rnn_inputs, triton_refusal
from .naive import naive_rnn as _spec
from .sequential import sequential_rnn as _sequential

# the input cases: one per cell (two Elman activations), and LSTM with one dense head
CASES = (
    "elman_tanh", "elman_relu", "indrnn", "lstm", "lstm_dense", "gru", "mgu", "rhn", "slstm", "alrnn",
    "paragru", "paralstm", "plrnn", "dendplrnn", "dendplrnn_clipped", "shplrnn", "shplrnn_clipped",
)

# the cells with options of their own, built for the cases that name them
OPTION_CELLS = {
    "dendplrnn": lambda head_dim: DendPLRNN(num_bases=2),
    "dendplrnn_clipped": lambda head_dim: DendPLRNN(num_bases=2, clipped=True),
    # a hidden width other than the head size, so that the two cannot be confused
    "shplrnn": lambda head_dim: ShallowPLRNN(hidden=head_dim + 2),
    "shplrnn_clipped": lambda head_dim: ShallowPLRNN(hidden=head_dim + 2, clipped=True),
    "alrnn": lambda head_dim: ALRNN(num_relu=head_dim // 2),
}


def example_inputs(
    T: int, *, batch: int = 2, case: str = "lstm", dtype=torch.float64, device=None, seed: int = 0,
    heads: int = 2, head_dim: int = 4, depth: int = 2,
) -> Example:
    """x_proj [B, T, Gx, H, Dh], R, b and a random initial state [B, S, H, Dh] for the cell
    `case` names ("lstm_dense": LSTM with one head of heads · head_dim units; "rhn": `depth`
    micro-steps; "alrnn": half of each head's units ReLU; "dendplrnn": 2 bases; "shplrnn":
    head_dim + 2 hidden units; "_clipped": the clipped variant), with weights small enough
    that the recurrence contracts (so that Newton converges on the diagonal cells)."""
    check_case(case, CASES)
    if case == "lstm_dense":
        case, heads, head_dim = "lstm", 1, heads * head_dim
    cell = OPTION_CELLS[case](head_dim) if case in OPTION_CELLS else CELLS[case]
    draw = RandomInputs(seed, dtype, device)
    B, H, Dh = batch, heads, head_dim
    Gr = Gb = 2 * depth if case == "rhn" else None
    Gr, Gb = Gr or cell.recurrent_gates, Gb or cell.bias_gates
    x_proj = draw.normal(B, T, cell.input_gates, H, Dh)
    if case == "indrnn":
        # u in [0, 0.95): every unit forgets
        R = draw.uniform(Gr, H, Dh, high=0.95)
    elif cell.recurrence == "diagonal":
        R = draw.normal(Gr, H, Dh, std=0.5)
    elif not isinstance(cell, (PLRNN, ShallowPLRNN)):
        R = draw.normal(Gr, H, Dh, Dh, std=(0.1 if case == "alrnn" else 1.0) / Dh**0.5)
    if isinstance(cell, (PLRNN, ShallowPLRNN)):
        R, b = _plrnn_weights(cell, draw, H, Dh)
    else:
        b = draw.normal(Gb, H, Dh, std=0.5)
    if case == "alrnn":
        # b = (A, h): A in [0, 0.9), a contracting linear part
        b = torch.cat([draw.uniform(1, H, Dh, high=0.9, grad=False), b[1:].detach()]).requires_grad_()
    initial_state = draw.normal(B, cell.num_states, H, Dh)
    if case == "slstm":
        # a live state: the normaliser n > 0
        h, c, n, m = initial_state.detach().unbind(1)
        initial_state = torch.stack([h, c, n.abs() + 0.5, m], dim=1).requires_grad_()
    return Example((x_proj, R, b), {"cell": cell, "initial_state": initial_state})


def _plrnn_weights(cell, draw: RandomInputs, H: int, Dh: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R and b of a PLRNN-style cell: A in [0, 0.9) (a contracting linear part), small
    couplings, thresholds and hidden biases of order one so that units switch."""
    A = draw.uniform(1, H, Dh, high=0.9, grad=False)
    if isinstance(cell, ShallowPLRNN):
        L = cell.hidden
        R = draw.normal(2, H, Dh, L, std=0.3 / (Dh * L) ** 0.25)
        h1, h2 = draw.normal(1, H, Dh, std=0.5, grad=False), draw.normal(1, H, L, std=0.5, grad=False)
        return R, torch.cat([A, h1, h2], dim=-1).requires_grad_()
    R = draw.normal(1, H, Dh, Dh, std=0.3 / Dh**0.5)
    rest = draw.normal(cell.bias_gates - 1, H, Dh, std=0.5, grad=False)
    return R, torch.cat([A, rest]).requires_grad_()


RNN = register_family(Family(
    name="rnn",
    paper="FlashRNN: Optimizing Traditional RNNs on Modern Hardware (Pöppel, Beck, Hochreiter, arXiv:2412.07752)",
    recurrence="Nonlinear RNN: g_t = x_t + R h_{t-1} + b (R block-diagonal over heads), s_t = P(s_{t-1}, g_t)",
    spec=_spec,
    forms={
        "sequential": Form(_sequential, summary="a loop with a backward through time written by hand per cell"),
        "triton": triton_form("recur.ops.rnn.triton:triton_rnn", refuses=triton_refusal),
    },
    check=check_rnn_inputs,
    state=StateLayout({"state": "[B, S, H, Dh] (the cell's S state components, h first)"}),
    time_inputs=("x_proj",),
    example_inputs=example_inputs,
    cases=CASES,
    default="sequential",
))

rnn, naive_rnn, sequential_rnn, triton_rnn = RNN.functions("naive", "sequential", "triton")

__all__ = [
    "ALRNN", "CELLS", "GRU", "LSTM", "MGU", "PLRNN", "RHN", "RNN", "SLSTM", "Cell", "DendPLRNN", "Elman", "IndRNN",
    "ParaGRU", "ParaLSTM", "ShallowPLRNN", "naive_rnn", "resolve_cell", "rnn", "sequential_rnn", "triton_rnn",
]
