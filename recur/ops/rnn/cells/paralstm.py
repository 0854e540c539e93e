"""ParaLSTM: a coupled-gate LSTM with peepholes and diagonal recurrence, so that Newton
can solve it in parallel over time (2×2 blocks of diagonal Jacobians over (h, c)).

ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models
(Danieli, Rodríguez, Sarabia, Suau, Zappella; arXiv:2510.21450), gates (f, c, o):

    f = σ(a_f ⊙ h + x_f + b_f + p_f ⊙ c),  c̃ = tanh(a_c ⊙ h + x_c + b_c),
    c_t = f ⊙ c + (1 − f) ⊙ c̃,  o = σ(a_o ⊙ h + x_o + b_o + p_o ⊙ c_t),  h_t = o ⊙ tanh(c_t)
"""

from __future__ import annotations

import torch

from .base import CELLS, Cell, sum_tb


class ParaLSTM(Cell):
    """States (h, c); R [5, H, Dh] is (a_f, a_c, a_o, p_f, p_o)."""

    name = "paralstm"
    state_names = ("h", "c")
    input_gates = bias_gates = 3
    recurrent_gates = 5
    recurrence = "diagonal"
    jacobian_structure = "diagonal"
    hand_backward = True

    def tape_step(self, x, P, b, state):
        h, c = state
        pre = x + b
        f = torch.sigmoid(P[0] * h + pre[..., 0, :, :] + P[3] * c)
        candidate = torch.tanh(P[1] * h + pre[..., 1, :, :])
        c_new = f * c + (1 - f) * candidate
        o = torch.sigmoid(P[2] * h + pre[..., 2, :, :] + P[4] * c_new)
        tanh_c = torch.tanh(c_new)
        return (o * tanh_c, c_new), (f, candidate, o, tanh_c)

    def step_and_jacobian(self, x, R, b, state):
        new, tape = self.tape_step(x, R, b, state)
        return new, self._jacobian(R, state[1], *tape)[0]

    @staticmethod
    def _jacobian(R, c, f, candidate, o, tanh_c):
        """The 2×2 Jacobian blocks and ∂h_t/∂c_t (o depends on c_t through the peephole)."""
        # chain rule through f(h, c), c̃(h), c_t(f, c, c̃), o(h, c_t), h_t(o, c_t); units never mix
        df = f * (1 - f)
        dc_dh = df * R[0] * (c - candidate) + (1 - f) * (1 - candidate.square()) * R[1]
        dc_dc = f + df * R[3] * (c - candidate)
        do = o * (1 - o)
        dh_dc_new = do * R[4] * tanh_c + o * (1 - tanh_c.square())
        dh_dh = do * R[2] * tanh_c + dh_dc_new * dc_dh
        dh_dc = dh_dc_new * dc_dc
        return [[dh_dh, dh_dc], [dc_dh, dc_dc]], dh_dc_new

    def local_grads(self, tape, prev, new, P, b, out, grad):
        # the record is (dL/dh_t, dL/dc_t from t + 1); the gate gradients follow for all t
        # at once in param_grads
        (J_hh, J_hc), (J_ch, J_cc) = self._jacobian(P, prev[1], *tape)[0]
        dh, dc = grad[0] + out, grad[1]
        return torch.stack([dh, dc], dim=-3), (torch.addcmul(dh * J_hh, dc, J_ch), torch.addcmul(dh * J_hc, dc, J_cc))

    def param_grads(self, record, steps, R, b):
        dh, dc = record.unbind(2)
        f, candidate, o, tanh_c = (steps.tape(j) for j in range(4))
        h, c = steps.prev(0), steps.prev(1)
        _, dh_dc_new = self._jacobian(R, c, f, candidate, o, tanh_c)
        d_o = dh * tanh_c * o * (1 - o)
        dc_total = torch.addcmul(dc, dh, dh_dc_new)
        d_f = dc_total * (c - candidate) * f * (1 - f)
        d_c = dc_total * (1 - f) * (1 - candidate * candidate)
        d = torch.stack([d_f, d_c, d_o], dim=2)
        dR = torch.stack([sum_tb(d_f * h), sum_tb(d_c * h), sum_tb(d_o * h), sum_tb(d_f * c), sum_tb(d_o * steps.new(1))])
        return d, dR, sum_tb(d)


CELLS.register("paralstm", ParaLSTM())
