"""shPLRNN: the shallow PLRNN, a diagonal linear part plus one hidden ReLU layer.

Generalized Teacher Forcing for Learning Chaotic Dynamics (Hess, Monfared, Brenner,
Durstewitz; ICML 2023, arXiv:2306.04406):

    z_t = A ⊙ z_{t-1} + W₁ ReLU(W₂ z_{t-1} + h₂) + h₁ + x_t

with L hidden units (W₁ [M, L], W₂ [L, M]), and its clipped variant, whose orbits stay
bounded when ‖A‖ < 1:

    z_t = A ⊙ z_{t-1} + W₁ (ReLU(W₂ z_{t-1} + h₂) − ReLU(W₂ z_{t-1})) + h₁ + x_t
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Cell, sum_tb


class ShallowPLRNN(Cell):
    """R [2, H, Dh, L] is (W₁, W₂ᵀ) per head; b [1, H, 2·Dh + L] is (A, h₁, h₂) along the
    last dim. Not in `CELLS`: its hidden width L is part of it, so it is passed as
    `ShallowPLRNN(hidden=L)` (`clipped=True` for the clipped variant)."""

    name = "shplrnn"
    state_names = ("z",)
    recurrent_gates = 2
    hand_backward = True

    def __init__(self, hidden: int, clipped: bool = False) -> None:
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive int; got {hidden!r}")
        if not isinstance(clipped, bool):
            raise TypeError(f"clipped must be a bool; got {clipped!r}")
        self.hidden, self.clipped = hidden, clipped

    def weight_shapes(self, R, heads, head_dim):
        return [2, heads, head_dim, self.hidden], [1, heads, 2 * head_dim + self.hidden]

    def prepare(self, R):
        return R

    def biases(self, b):
        """(A [H, Dh], h₁ [H, Dh], h₂ [H, L]) from b."""
        Dh = (b.shape[-1] - self.hidden) // 2
        return b[0].split([Dh, Dh, self.hidden], dim=-1)

    def phi(self, v, h2):
        """The hidden layer from v = W₂ z: ReLU(v + h₂) (− ReLU(v) when clipped)."""
        hidden = F.relu(v + h2)
        return hidden - F.relu(v) if self.clipped else hidden

    def tape_step(self, x, P, b, state):
        (z,) = state
        A, h1, h2 = self.biases(b)
        # v = W₂ z: [..., H, 1, Dh] @ [H, Dh, L] -> [..., H, L]
        v = (z.unsqueeze(-2) @ P[1]).squeeze(-2)
        # z_t = A ⊙ z + W₁ φ(v) + h₁ + x
        recurrent = (self.phi(v, h2).unsqueeze(-2) @ P[0].transpose(-1, -2)).squeeze(-2)
        return (A * z + recurrent + h1 + x[..., 0, :, :],), (v,)

    def local_grads(self, tape, prev, new, P, b, out, grad):
        (v,) = tape
        A, _, h2 = self.biases(b)
        dz = grad[0] + out
        # the gradient reaching the hidden layer: W₁ᵀ dz
        dphi = (dz.unsqueeze(-2) @ P[0]).squeeze(-2)
        # through ReLU(v + h₂): the gradient of h₂, and of v unless clipped
        du = torch.where(v + h2 > 0, dphi, 0)
        dv = du - torch.where(v > 0, dphi, 0) if self.clipped else du
        dz_prev = torch.addcmul((dv.unsqueeze(-2) @ P[1].transpose(-1, -2)).squeeze(-2), A, dz)
        # record [..., H, Dh + 2L]: the step's input gradient, then v's and h₂'s
        return torch.cat([dz, dv, du], dim=-1), (dz_prev,)

    def param_grads(self, d, steps, R, b):
        z, v = steps.prev(0), steps.tape(0)
        _, _, h2 = self.biases(b)
        dz, dv, du = d.split([z.shape[-1], self.hidden, self.hidden], dim=-1)
        dW1 = torch.einsum("bthd,bthl->hdl", dz, self.phi(v, h2))
        dW2T = torch.einsum("bthd,bthl->hdl", z, dv)
        db = torch.cat([sum_tb(dz * z), sum_tb(dz), sum_tb(du)], dim=-1).unsqueeze(0)
        return dz.unsqueeze(2), torch.stack([dW1, dW2T]), db

    def __repr__(self) -> str:
        return f"ShallowPLRNN(hidden={self.hidden}, clipped={self.clipped})"
