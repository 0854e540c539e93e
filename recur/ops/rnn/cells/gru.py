"""The GRU cell with torch.nn.GRU's equations and gate order (r, z, n).

Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine
Translation (Cho et al.; arXiv:1406.1078), torch.nn.GRU's form:

    r, z = σ(x + R h_{t-1} + b),   n = tanh(x_n + b_in + r ⊙ (R_n h_{t-1} + b_hn)),
    h_t = (1 − z) n + z h_{t-1}
"""

from __future__ import annotations

import torch

from .base import CELLS, Cell, one_minus, sigmoid_slope, sum_tb, weight_grad


class GRU(Cell):
    """torch.nn.GRU's cell; biases (r, z, input n, recurrent n)."""

    name = "gru"
    input_gates = recurrent_gates = 3
    bias_gates = 4
    hand_backward = True

    def tape_step(self, x, P, b, state):
        (h,) = state
        rec = P(h)
        rz = torch.sigmoid(x[..., :2, :, :] + rec[..., :2, :, :] + b[:2])
        r, z = rz.unbind(-3)
        hn = rec[..., 2, :, :] + b[3]
        n = torch.tanh(torch.addcmul(x[..., 2, :, :] + b[2], r, hn))
        return (torch.addcmul(n, z, h - n),), (rz, n, hn)

    def local_grads(self, tape, prev, new, P, b, out, grad):
        rz, n, hn = tape
        r, z = rz.unbind(-3)
        dh = grad[0] + out
        dn = dh * one_minus(z) * one_minus(n, n)
        # the gradients of the pre-activations of r, z, of R_n h + b_hn and of the input n;
        # R multiplied into the first three
        d = torch.stack([dn * hn, dh * (prev[0] - n), dn * r, dn], dim=-3)
        d[..., :2, :, :].mul_(sigmoid_slope(rz))
        return d, (torch.addcmul(P.transposed(d[..., :3, :, :]), dh, z),)

    def param_grads(self, d, steps, R, b):
        db = sum_tb(d)
        return d[:, :, [0, 1, 3]], weight_grad(d[:, :, :3], steps.prev(0)), db[[0, 1, 3, 2]]


CELLS.register("gru", GRU())
