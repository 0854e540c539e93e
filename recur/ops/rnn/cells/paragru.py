"""ParaGRU: a GRU with diagonal recurrence, so that Newton can solve it in parallel over time.

ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models
(Danieli, Rodríguez, Sarabia, Suau, Zappella; arXiv:2510.21450), gates (z, r, h):

    z = σ(a_z ⊙ h + x_z + b_z),  r = σ(a_r ⊙ h + x_r + b_r),  ĥ = tanh(a_h ⊙ (h ⊙ r) + x_h + b_h),
    h_t = z ⊙ ĥ + (1 − z) ⊙ h_{t-1}
"""

from __future__ import annotations

import torch

from .base import CELLS, Cell, sum_tb


class ParaGRU(Cell):
    """R [3, H, Dh] is (a_z, a_r, a_h)."""

    name = "paragru"
    input_gates = recurrent_gates = bias_gates = 3
    recurrence = "diagonal"
    jacobian_structure = "diagonal"
    hand_backward = True

    def tape_step(self, x, P, b, state):
        (h,) = state
        pre = x + b
        z = torch.sigmoid(P[0] * h + pre[..., 0, :, :])
        r = torch.sigmoid(P[1] * h + pre[..., 1, :, :])
        candidate = torch.tanh(P[2] * (h * r) + pre[..., 2, :, :])
        return (z * candidate + (1 - z) * h,), (z, r, candidate)

    def step_and_jacobian(self, x, R, b, state):
        # called without autograd on whole sequences: in-place updates keep the passes
        # over memory few
        h = state[0]
        pre = x + b
        z = torch.addcmul(pre[..., 0, :, :], R[0], h).sigmoid_()
        r = torch.addcmul(pre[..., 1, :, :], R[1], h).sigmoid_()
        candidate = torch.addcmul(pre[..., 2, :, :], R[2], h * r).tanh_()
        new = torch.lerp(h, candidate, z)
        return (new,), [[self._jacobian(R, h, z, r, candidate)]]

    @staticmethod
    def _jacobian(R, h, z, r, candidate):
        # ∂h_t/∂h = (1 − z) + (ĥ − h) σ'(z) a_z + z tanh'(ĥ) a_h (r + h σ'(r) a_r)
        one_minus_z = 1 - z
        J = (candidate - h).mul_(z).mul_(one_minus_z).mul_(R[0]).add_(one_minus_z)
        inner = (r - r.square()).mul_(R[1]).mul_(h).add_(r)
        return J.add_(candidate.square().neg_().add_(1).mul_(R[2]).mul_(z).mul_(inner))

    def local_grads(self, tape, prev, new, P, b, out, grad):
        # the record is dL/dh_t; the gate gradients follow for all t at once in param_grads
        dh = grad[0] + out
        return dh, (dh * self._jacobian(P, prev[0], *tape),)

    def param_grads(self, dh, steps, R, b):
        z, r, candidate = (steps.tape(j) for j in range(3))
        h = steps.prev(0)
        d_candidate = dh * z * (1 - candidate * candidate)
        d = torch.stack([dh * (candidate - h) * z * (1 - z), d_candidate * R[2] * h * r * (1 - r), d_candidate], dim=2)
        dR = torch.stack([sum_tb(d[:, :, 0] * h), sum_tb(d[:, :, 1] * h), sum_tb(d_candidate * h * r)])
        return d, dR, sum_tb(d)


CELLS.register("paragru", ParaGRU())
