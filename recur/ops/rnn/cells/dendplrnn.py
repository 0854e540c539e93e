"""dendPLRNN: the dendritic PLRNN, each unit's nonlinearity a weighted sum of thresholded ReLUs.

Tractable Dendritic RNNs for Reconstructing Nonlinear Dynamical Systems (Brenner, Hess,
Mikhaeil, Bereska, Monfared, Kuo, Durstewitz; ICML 2022, arXiv:2207.02542):

    z_t = A ⊙ z_{t-1} + W φ(z_{t-1}) + h₀ + x_t,   φ(z) = Σ_b α_b ⊙ ReLU(z − θ_b),
    W off-diagonal (its diagonal is not used)

and the clipped variant of the same paper, whose orbits stay bounded when ‖A‖ < 1:

    φ(z) = Σ_b α_b ⊙ (ReLU(z − θ_b) − ReLU(z))

The paper's α_b is one number per basis; the op takes one per unit (α_b [H, Dh]), and the
`dendplrnn` layer ties it across units as the paper does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import sum_tb, weight_grad
from .plrnn import PLRNN, off_diagonal


class DendPLRNN(PLRNN):
    """R [1, H, Dh, Dh] is W (diagonal ignored); b [2 + 2B, H, Dh] is (A, h₀, α_1 … α_B,
    θ_1 … θ_B). Not in `CELLS`: its number of bases B is part of it, so it is passed as
    `DendPLRNN(num_bases=B)` (`clipped=True` for the clipped basis)."""

    name = "dendplrnn"

    def __init__(self, num_bases: int, clipped: bool = False) -> None:
        if not isinstance(num_bases, int) or num_bases < 1:
            raise ValueError(f"num_bases must be a positive int; got {num_bases!r}")
        if not isinstance(clipped, bool):
            raise TypeError(f"clipped must be a bool; got {clipped!r}")
        self.num_bases, self.clipped = num_bases, clipped
        self.bias_gates = 2 + 2 * num_bases

    def bases(self, b):
        """(α [B, H, Dh], θ [B, H, Dh]) from b."""
        return b[2 : 2 + self.num_bases], b[2 + self.num_bases :]

    def phi(self, z, b):
        """φ(z) [..., H, Dh] = Σ_b α_b ⊙ ReLU(z − θ_b) (− ReLU(z) in each term when clipped)."""
        alpha, theta = self.bases(b)
        # [..., B, H, Dh]: one ramp per basis
        ramps = F.relu(z.unsqueeze(-3) - theta)
        if self.clipped:
            ramps = ramps - F.relu(z).unsqueeze(-3)
        return (alpha * ramps).sum(-3)

    def slope(self, z, b):
        """φ'(z) = Σ_b α_b [z > θ_b] (− [z > 0] in each term when clipped)."""
        alpha, theta = self.bases(b)
        on = (z.unsqueeze(-3) > theta).to(z.dtype)
        if self.clipped:
            on = on - (z > 0).to(z.dtype).unsqueeze(-3)
        return (alpha * on).sum(-3)

    def tape_step(self, x, P, b, state):
        (z,) = state
        # z_t = A ⊙ z + W φ(z) + h₀ + x
        return (b[0] * z + P(self.phi(z, b))[..., 0, :, :] + b[1] + x[..., 0, :, :],), ()

    def local_grads(self, tape, prev, new, P, b, out, grad):
        z, dz = prev[0], grad[0] + out
        d = dz.unsqueeze(-3)
        # the gradient reaching φ(z_{t-1}): Wᵀ dz
        dphi = P.transposed(d)
        # record both: the step's input gradient and φ's, which the bases' gradients read
        return torch.stack([dz, dphi], dim=-3), (torch.addcmul(dphi * self.slope(z, b), b[0], dz),)

    def param_grads(self, d, steps, R, b):
        z = steps.prev(0)
        dz, dphi = d[:, :, 0], d[:, :, 1]
        alpha, theta = self.bases(b)
        # per basis: ∂φ/∂α_b = the ramp, ∂φ/∂θ_b = −α_b [z > θ_b]
        ramps = F.relu(z.unsqueeze(2) - theta)
        on = (z.unsqueeze(2) > theta).to(z.dtype)
        if self.clipped:
            ramps = ramps - F.relu(z).unsqueeze(2)
        d_alpha = (dphi.unsqueeze(2) * ramps).sum((0, 1))
        d_theta = -alpha * (dphi.unsqueeze(2) * on).sum((0, 1))
        db = torch.cat([torch.stack([sum_tb(dz * z), sum_tb(dz)]), d_alpha, d_theta])
        return d[:, :, :1], off_diagonal(weight_grad(d[:, :, :1], self.phi(z, b))), db

    def __repr__(self) -> str:
        return f"DendPLRNN(num_bases={self.num_bases}, clipped={self.clipped})"

