"""Elman's simple recurrent network.

Finding Structure in Time (Elman; Cognitive Science 1990):

    h_t = φ(x_t + R h_{t-1} + b),   φ = tanh or ReLU
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CELLS, Cell, one_minus, sum_tb, weight_grad


class Elman(Cell):
    """h_t = φ(x_t + R h_{t-1} + b), φ = tanh or ReLU."""

    hand_backward = True

    def __init__(self, activation: str = "tanh") -> None:
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu'; got {activation!r}")
        self.activation = activation
        self.name = f"elman_{activation}"

    def tape_step(self, x, P, b, state):
        (h,) = state
        pre = P.plus(x, h)[..., 0, :, :] + b[0]
        return (torch.tanh(pre) if self.activation == "tanh" else F.relu(pre),), ()

    def local_grads(self, tape, prev, new, P, b, out, grad):
        # φ' from the output: 1 − h² for tanh; for ReLU h > 0 exactly where the input is
        h, dh = new[0], grad[0] + out
        d = (dh * one_minus(h, h) if self.activation == "tanh" else torch.where(h > 0, dh, 0)).unsqueeze(-3)
        return d, (P.transposed(d),)

    def param_grads(self, d, steps, R, b):
        return d, weight_grad(d, steps.prev(0)), sum_tb(d)

    def __repr__(self) -> str:
        return f"Elman(activation={self.activation!r})"


CELLS.register("elman_tanh", Elman("tanh"))
CELLS.register("elman_relu", Elman("relu"))
