"""AL-RNN: the almost-linear RNN, linear units plus a few ReLU units.

Almost-Linear RNNs Yield Highly Interpretable Symbolic Codes in Dynamical Systems
Reconstruction (Brenner, Hemmer, Monfared, Durstewitz; NeurIPS 2024, arXiv:2410.14240):

    z_t = A ⊙ z_{t-1} + W φ*(z_{t-1}) + h + x_t,   φ* = ReLU on the last P units of each
    head, identity on the others
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Cell, sum_tb, weight_grad


class ALRNN(Cell):
    """R [1, H, Dh, Dh] is W; b [2, H, Dh] is (A, h). Not in `CELLS`: its number of ReLU
    units P is part of it, so it is passed as `ALRNN(num_relu=P)`."""

    name = "alrnn"
    state_names = ("z",)
    bias_gates = 2
    hand_backward = True

    def __init__(self, num_relu: int) -> None:
        if not isinstance(num_relu, int) or num_relu < 0:
            raise ValueError(f"num_relu must be a non-negative int; got {num_relu!r}")
        self.num_relu = num_relu

    def phi(self, z):
        Dh = z.shape[-1]
        if self.num_relu > Dh:
            raise ValueError(f"num_relu = {self.num_relu} exceeds the head size Dh = {Dh}")
        linear, piecewise = z.split([Dh - self.num_relu, self.num_relu], dim=-1)
        return torch.cat([linear, F.relu(piecewise)], dim=-1)

    def tape_step(self, x, P, b, state):
        (z,) = state
        return (b[0] * z + P(self.phi(z))[..., 0, :, :] + b[1] + x[..., 0, :, :],), ()

    def local_grads(self, tape, prev, new, P, b, out, grad):
        z, dz = prev[0], grad[0] + out
        d = dz.unsqueeze(-3)
        # φ*' is 1 on the linear units and z > 0 on the ReLU ones
        dphi = P.transposed(d)
        relu_units = slice(z.shape[-1] - self.num_relu, None)
        dphi[..., relu_units] = torch.where(z[..., relu_units] > 0, dphi[..., relu_units], 0)
        return d, (torch.addcmul(dphi, b[0], dz),)

    def param_grads(self, d, steps, R, b):
        z = steps.prev(0)
        db = torch.stack([sum_tb(d[:, :, 0] * z), sum_tb(d[:, :, 0])])
        return d, weight_grad(d, self.phi(z)), db

    def __repr__(self) -> str:
        return f"ALRNN(num_relu={self.num_relu})"
