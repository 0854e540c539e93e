"""IndRNN: independently recurrent units.

Independently Recurrent Neural Network (IndRNN): Building A Longer and Deeper RNN
(Li, Li, Cook, Zhu, Gao; arXiv:1803.04831):

    h_t = ReLU(x_t + u ⊙ h_{t-1} + b)

Units do not mix, so the Jacobian is diagonal and Newton (ParaRNN) applies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CELLS, Cell, sum_tb


class IndRNN(Cell):
    """h_t = ReLU(x_t + u ⊙ h_{t-1} + b); R [1, H, Dh] is u."""

    name = "indrnn"
    recurrence = "diagonal"
    jacobian_structure = "diagonal"
    hand_backward = True

    def tape_step(self, x, P, b, state):
        (h,) = state
        return (F.relu(x[..., 0, :, :] + P[0] * h + b[0]),), ()

    def local_grads(self, tape, prev, new, P, b, out, grad):
        d = torch.where(new[0] > 0, grad[0] + out, 0)
        return d, (d * P[0],)

    def param_grads(self, d, steps, R, b):
        return d.unsqueeze(2), sum_tb(d * steps.prev(0)).unsqueeze(0), sum_tb(d).unsqueeze(0)


CELLS.register("indrnn", IndRNN())
