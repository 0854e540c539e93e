"""RHN: the recurrent highway network, several highway micro-steps per token.

Recurrent Highway Networks (Zilly, Srivastava, Koutník, Schmidhuber; arXiv:1607.03474),
with the coupled carry gate c = 1 − t; depth L = Gr / 2 micro-steps, the input enters the
first one:

    s_l = tanh(x_H [l = 1] + R_Hl s_{l-1} + b_Hl) ⊙ t_l + s_{l-1} ⊙ (1 − t_l),
    t_l = σ(x_T [l = 1] + R_Tl s_{l-1} + b_Tl),   s_0 = h_{t-1},   h_t = s_L
"""

from __future__ import annotations

import torch

from .base import CELLS, Cell, Recurrence, one_minus, sum_tb, weight_grad


class RHN(Cell):
    """Gates (H, T) in x and (H_1, T_1, …, H_L, T_L) in R and b."""

    name = "rhn"
    input_gates = 2
    hand_backward = True

    def expected_recurrent_gates(self, R):
        return 2 * max(R.shape[0] // 2, 1)

    def expected_bias_gates(self, R):
        return self.expected_recurrent_gates(R)

    def prepare(self, R):
        return [Recurrence(R[2 * layer : 2 * layer + 2]) for layer in range(R.shape[0] // 2)]

    def tape_step(self, x, P, b, state):
        (s,) = state
        # per micro-step: its input s_{l-1}, tanh and σ of its two gates
        inputs, candidates, carries = [], [], []
        for layer, P_layer in enumerate(P):
            pre = P_layer(s) + b[2 * layer : 2 * layer + 2]
            if layer == 0:
                pre = pre + x
            candidate, carry = torch.tanh(pre[..., 0, :, :]), torch.sigmoid(pre[..., 1, :, :])
            inputs.append(s)
            candidates.append(candidate)
            carries.append(carry)
            s = torch.addcmul(s, carry, candidate - s)
        return (s,), (*inputs, *candidates, *carries)

    def local_grads(self, tape, prev, new, P, b, out, grad):
        L = len(P)
        ds = grad[0] + out
        d = [None] * L
        for layer in reversed(range(L)):
            s, c, t = tape[layer], tape[L + layer], tape[2 * L + layer]
            dc = ds * t
            keep = one_minus(t)
            d[layer] = torch.stack([dc * one_minus(c, c), (c - s) * dc * keep], dim=-3)
            ds = torch.addcmul(P[layer].transposed(d[layer]), ds, keep)
        return torch.cat(d, dim=-3), (ds,)

    def param_grads(self, d, steps, R, b):
        L = d.shape[2] // 2
        dR = torch.cat([weight_grad(d[:, :, 2 * layer : 2 * layer + 2], steps.tape(layer)) for layer in range(L)])
        return d[:, :, :2], dR, sum_tb(d)


CELLS.register("rhn", RHN())
