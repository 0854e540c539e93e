"""The LSTM cell with torch.nn.LSTM's equations and gate order (i, f, g, o).

Long Short-Term Memory (Hochreiter, Schmidhuber; Neural Computation 1997), with the
forget gate of Gers, Schmidhuber, Cummins (2000):

    c_t = σ(f) c_{t-1} + σ(i) tanh(g),   h_t = σ(o) tanh(c_t),   [i, f, g, o] = x_t + R h_{t-1} + b
"""

from __future__ import annotations

import torch

from .base import CELLS, Cell, one, one_minus, sigmoid_slope, sum_tb, weight_grad


class LSTM(Cell):
    """torch.nn.LSTM's cell; states (h, c)."""

    name = "lstm"
    state_names = ("h", "c")
    input_gates = recurrent_gates = bias_gates = 4
    hand_backward = True

    def tape_step(self, x, P, b, state):
        h, c = state
        pre = P.plus(x, h) + b
        # the activated gates (σ(i), σ(f), tanh(g), σ(o)), kept together for the backward
        act = torch.cat([pre[..., :2, :, :].sigmoid(), pre[..., 2:3, :, :].tanh(), pre[..., 3:, :, :].sigmoid()], dim=-3)
        i, f, g, o = act.unbind(-3)
        c = torch.addcmul(f * c, i, g)
        tanh_c = torch.tanh(c)
        return (o * tanh_c, c), (act, tanh_c)

    def local_grads(self, tape, prev, new, P, b, out, grad):
        act, tanh_c = tape
        i, f, g, o = act.unbind(-3)
        dh = grad[0] + out
        dc = torch.addcmul(grad[1], dh * o, one_minus(tanh_c, tanh_c))
        # σ' = σ (1 − σ), tanh' = 1 − tanh²
        slope = sigmoid_slope(act)
        torch.addcmul(one(g), g, g, value=-1, out=slope[..., 2, :, :])
        d = torch.stack([dc * g, dc * prev[1], dc * i, dh * tanh_c], dim=-3).mul_(slope)
        return d, (P.transposed(d), dc * f)

    def param_grads(self, d, steps, R, b):
        return d, weight_grad(d, steps.prev(0)), sum_tb(d)


CELLS.register("lstm", LSTM())
