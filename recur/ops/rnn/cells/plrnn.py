"""PLRNN: the piecewise-linear RNN, a diagonal linear part plus ReLU units coupled off the diagonal.

Identifying nonlinear dynamical systems with multiple time scales and long-range
dependencies (Schmidt, Koppe, Monfared, Beutelspacher, Durstewitz; ICLR 2021,
arXiv:1910.03471), after Durstewitz (PLOS Comput. Biol. 2017):

    z_t = A ⊙ z_{t-1} + W ReLU(z_{t-1}) + h + x_t,   W off-diagonal (its diagonal is not used)

x_t is the projected input (C s_t in the paper; zero for an autonomous map).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CELLS, Cell, Recurrence, sum_tb, weight_grad


def off_diagonal(R: torch.Tensor) -> torch.Tensor:
    """R [..., Dh, Dh] with each block's diagonal set to zero."""
    return R * (1 - torch.eye(R.shape[-1], dtype=R.dtype, device=R.device))


class PLRNN(Cell):
    """R [1, H, Dh, Dh] is W (its diagonal is ignored: the self-coupling is A's); b [2, H, Dh]
    is (A, h)."""

    name = "plrnn"
    state_names = ("z",)
    bias_gates = 2
    hand_backward = True

    def prepare(self, R):
        return Recurrence(off_diagonal(R))

    def tape_step(self, x, P, b, state):
        (z,) = state
        # z_t = A ⊙ z + W ReLU(z) + h + x
        return (b[0] * z + P(F.relu(z))[..., 0, :, :] + b[1] + x[..., 0, :, :],), ()

    def local_grads(self, tape, prev, new, P, b, out, grad):
        z, dz = prev[0], grad[0] + out
        d = dz.unsqueeze(-3)
        # ∂z_t/∂z_{t-1} = diag(A) + W diag(z > 0)
        dphi = torch.where(z > 0, P.transposed(d), 0)
        return d, (torch.addcmul(dphi, b[0], dz),)

    def param_grads(self, d, steps, R, b):
        z = steps.prev(0)
        db = torch.stack([sum_tb(d[:, :, 0] * z), sum_tb(d[:, :, 0])])
        # the diagonal of R does not enter the map: its gradient is zero
        return d, off_diagonal(weight_grad(d, F.relu(z))), db


CELLS.register("plrnn", PLRNN())
