"""MGU: the minimal gated unit, one gate for forgetting and writing.

Minimal Gated Unit for Recurrent Neural Networks (Zhou, Wu, Zhang, Zhou; arXiv:1603.09420):

    f = σ(x_f + R_f h_{t-1} + b_f),   h̃ = tanh(x_h + R_h (f ⊙ h_{t-1}) + b_h),
    h_t = (1 − f) h_{t-1} + f h̃
"""

from __future__ import annotations

import torch

from .base import CELLS, Cell, Recurrence, one_minus, sigmoid_slope, sum_tb, weight_grad


class MGU(Cell):
    """Gates (f, h̃)."""

    name = "mgu"
    input_gates = recurrent_gates = bias_gates = 2
    hand_backward = True

    def prepare(self, R):
        return Recurrence(R[:1]), Recurrence(R[1:])

    def tape_step(self, x, P, b, state):
        (h,) = state
        f = torch.sigmoid(x[..., 0, :, :] + P[0](h)[..., 0, :, :] + b[0])
        candidate = torch.tanh(x[..., 1, :, :] + P[1](f * h)[..., 0, :, :] + b[1])
        return (torch.addcmul(h, f, candidate - h),), (f, candidate)

    def local_grads(self, tape, prev, new, P, b, out, grad):
        f, candidate = tape
        h, dh = prev[0], grad[0] + out
        d_candidate = (dh * f * one_minus(candidate, candidate)).unsqueeze(-3)
        # R_hᵀ of the candidate's gradient reaches f and h through f ⊙ h: the second
        # product depends on the first, so this cell needs two per step
        v = P[1].transposed(d_candidate)
        d_f = (torch.addcmul(dh * (candidate - h), v, h) * sigmoid_slope(f)).unsqueeze(-3)
        dh_prev = torch.addcmul(dh, f, v - dh) + P[0].transposed(d_f)
        return torch.cat([d_f, d_candidate], dim=-3), (dh_prev,)

    def param_grads(self, d, steps, R, b):
        h = steps.prev(0)
        dR = torch.cat([weight_grad(d[:, :, :1], h), weight_grad(d[:, :, 1:], steps.tape(0) * h)])
        return d, dR, sum_tb(d)


CELLS.register("mgu", MGU())
