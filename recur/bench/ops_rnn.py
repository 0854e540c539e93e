"""Benchmark cases of the nonlinear RNN family on torch's LSTM and GRU cells, and their
peers: torch.nn.LSTM / torch.nn.GRU (torch's fused kernel) and flashrnn's vanilla backend
(a PyTorch loop, FlashRNN arXiv:2412.07752)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.common.examples import RandomInputs
from ..ops.rnn import RNN, naive_rnn, sequential_rnn
from .ops import MissingPeer, OpCase, peer_case, register_op_bench

B, HIDDEN = 1, 256


def _shapes(cell: str, torch_name: str) -> str:
    return (
        f"{cell.upper()} layer, B={B}, d_model = hidden = {HIDDEN}, one head: the family's example R, b and "
        f"random initial state (case '{cell}', one head), x and the input projection W drawn alike. Every "
        f"row computes the layer h = {cell.upper()}(x Wᵀ; R, b) from the initial state, the projection "
        f"included, since {torch_name} always makes it. recur's forms: naive, sequential (what impl='auto' "
        f"picks for the op; recur's {cell} layer with one head in float32/64 runs torch's fused kernel "
        f"itself, impl 'native', the {torch_name} row). Peers: {torch_name} with the same weights "
        "(torch's CPU kernel, cuDNN on CUDA) and flashrnn's vanilla backend (a PyTorch loop through "
        "autograd; flashrnn's other backends need CUDA)."
    )


@register_op_bench("rnn", _shapes("lstm", "torch.nn.LSTM"))
def lstm_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase | MissingPeer]:
    return rnn_cases("lstm", T, device, dtype)


@register_op_bench("rnn_gru", _shapes("gru", "torch.nn.GRU"))
def gru_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase | MissingPeer]:
    return rnn_cases("gru", T, device, dtype)


def layer_inputs(cell: str, T: int, device, dtype: torch.dtype, batch: int = B, hidden: int = HIDDEN):
    """(x [B, T, hidden], W [G · hidden, hidden], R, b, initial state [B, S, 1, hidden]): the
    family's example for `cell` with one head, and an input with its projection."""
    example = RNN.example_inputs(T, batch=batch, case=cell, dtype=dtype, device=device, heads=1, head_dim=hidden)
    _, R, b = example.args
    gates = example.args[0].shape[2]
    draw = RandomInputs(seed=1, dtype=dtype, device=device)
    x, W = draw.normal(batch, T, hidden), draw.normal(gates * hidden, hidden, std=hidden**-0.5)
    return x, W, R, b, example.kwargs["initial_state"]


def rnn_cases(cell: str, T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase | MissingPeer]:
    x, W, R, b, s0 = layer_inputs(cell, T, device, dtype)
    gates = R.shape[0]

    def form(name: str, fn) -> OpCase:
        def run():
            x_proj = F.linear(x, W).unflatten(-1, (gates, 1, HIDDEN))
            return fn(x_proj, R, b, cell=cell, initial_state=s0)[0]

        return OpCase(f"{name} ({cell})", run, [x, W, R, b, s0], computes=cell)

    cases = [form("naive", naive_rnn), form("sequential", sequential_rnn)]
    return [*cases, torch_peer(cell, x, W, R, b, s0), flashrnn_peer(cell, x, W, R, b, s0)]


def torch_module(cell: str, W: torch.Tensor, R: torch.Tensor, b: torch.Tensor) -> nn.Module:
    """torch.nn.LSTM or torch.nn.GRU holding copies of the layer's weights."""
    G, _, n, _ = R.shape
    module = (nn.LSTM if cell == "lstm" else nn.GRU)(n, n, batch_first=True).to(W.device, W.dtype)
    b = b.detach().reshape(-1, n)
    zeros = torch.zeros_like(b[0])
    if cell == "lstm":
        # torch adds b_ih + b_hh: ours is one bias
        b_ih, b_hh = b.reshape(-1), zeros.repeat(G)
    else:
        # b = (r, z, input n, recurrent n); the recurrent n bias sits inside r ⊙ (·)
        b_ih, b_hh = b[:3].reshape(-1), torch.cat([zeros, zeros, b[3]])
    with torch.no_grad():
        module.weight_ih_l0.copy_(W)
        module.weight_hh_l0.copy_(R.reshape(G * n, n))
        module.bias_ih_l0.copy_(b_ih)
        module.bias_hh_l0.copy_(b_hh)
    return module


def torch_peer(cell: str, x, W, R, b, s0) -> OpCase:
    """torch.nn.LSTM / GRU on a copy of x, from the same initial state ([1, B, n] each)."""
    module = torch_module(cell, W, R, b)
    x = x.detach().clone().requires_grad_()
    states = [s.detach().clone().requires_grad_() for s in s0[:, :, 0].transpose(0, 1)[:, None]]
    hx = tuple(states) if cell == "lstm" else states[0]
    name = "torch.nn.LSTM" if cell == "lstm" else "torch.nn.GRU"
    return OpCase(name, lambda: module(x, hx)[0], [x, *states, *module.parameters()], computes=cell, peer="torch")


def flashrnn_peer(cell: str, x, W, R, b, s0) -> OpCase | MissingPeer:
    """flashrnn's vanilla backend on copies of the same tensors in its layout: gates
    (Wx [B, T, G, H, D]), R [G, H, D, D] and b [G, H, D] with GRU's recurrent gates and
    biases in its order, states [S, B, 1, H, D]."""
    x, W, R, b = (t.detach().clone().requires_grad_() for t in (x, W, R, b))
    states = s0.detach().transpose(0, 1)[:, :, None].contiguous().requires_grad_()
    # GRU: flashrnn's recurrent gates are (n, r, z) and its biases (recurrent n, r, z, input n)
    R_order, b_order = ([0, 1, 2, 3], [0, 1, 2, 3]) if cell == "lstm" else ([2, 0, 1], [3, 0, 1, 2])

    def make(fn):
        def run():
            Wx = F.linear(x, W).unflatten(-1, (-1, 1, R.shape[-1]))
            h, _ = fn(Wx, R[R_order], b[b_order], states, function=cell, backend="vanilla", dtype="float32")
            return h[0]

        return run, [x, W, R, b, states]

    return peer_case(
        f"flashrnn vanilla ({cell})", "flashrnn.flashrnn:flashrnn", "flashrnn", make, computes=cell, loop=True
    )
