"""sLSTM: the scalar-memory LSTM of xLSTM, with exponential gating.

xLSTM: Extended Long Short-Term Memory (Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp,
Klambauer, Brandstetter, Hochreiter; arXiv:2405.04517), §2.2, gates (i, f, z, o),
stabilised by the running max m:

    m_t = max(log σ(f̃) + m_{t-1}, ĩ),  i = exp(ĩ − m_t),  f = exp(log σ(f̃) + m_{t-1} − m_t),
    c_t = f c_{t-1} + i tanh(z̃),  n_t = f n_{t-1} + i,  h_t = σ(õ) c_t / n_t

A zero normaliser marks an empty state (the start), whose m is taken from ĩ alone
(FlashRNN's rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CELLS, Cell, one_minus, sigmoid_slope, sum_tb, weight_grad


class SLSTM(Cell):
    """States (h, c, n, m)."""

    name = "slstm"
    state_names = ("h", "c", "n", "m")
    input_gates = recurrent_gates = bias_gates = 4
    hand_backward = True

    def tape_step(self, x, P, b, state):
        _, c, n, m = state
        pre = P.plus(x, state[0]) + b
        i_pre, f_pre, z_pre, o_pre = pre.unbind(-3)
        log_f_m = F.logsigmoid(f_pre) + m
        empty = n == 0
        m_new = torch.where(empty, i_pre, torch.maximum(log_f_m, i_pre))
        i = torch.exp(i_pre - m_new)
        # the clamp is a no-op where the state is live (m_new >= log_f + m) and keeps the
        # unused branch finite where it is empty, so where() passes no NaN gradient
        f = torch.where(empty, torch.zeros_like(m), torch.exp((log_f_m - m_new).clamp(max=0)))
        tanh_z, o = torch.tanh(z_pre), torch.sigmoid(o_pre)
        c = f * c + i * tanh_z
        n = f * n + i
        return (o * c / n, c, n, m_new), (pre, log_f_m, i, f, tanh_z, o)

    def local_grads(self, tape, prev, new, P, b, out, grad):
        pre, log_f_m, i, f, tanh_z, o = tape
        i_pre, f_pre = pre[..., 0, :, :], pre[..., 1, :, :]
        c_prev, n_prev = prev[1], prev[2]
        h, c, n, _ = new
        dh = grad[0] + out
        # h = σ(õ) c / n
        dc = torch.addcmul(grad[1], dh, o / n)
        dn = grad[2] - dh * h / n
        # i and f (times themselves: ∂ exp(u)/∂u) through c = f c + i tanh(z̃), n = f n + i
        di = torch.addcmul(dn, dc, tanh_z).mul_(i)
        df = torch.addcmul(dc * c_prev, dn, n_prev).mul_(f)
        # m_t enters both as exp(· − m_t); m_t = max(log σ(f̃) + m_{t-1}, ĩ), and
        # torch.maximum splits the gradient of a tie evenly
        dm = grad[3] - di - df
        to_a = (log_f_m > i_pre).to(dm.dtype).add_((log_f_m == i_pre).to(dm.dtype), alpha=0.5)
        dm_a = torch.where(n_prev == 0, 0, dm * to_a)
        da = df + dm_a
        d = torch.stack(
            [di + dm - dm_a, da * torch.sigmoid(-f_pre), dc * i * one_minus(tanh_z, tanh_z), dh * c / n * sigmoid_slope(o)],
            dim=-3,
        )
        return d, (P.transposed(d), dc * f, dn * f, da)

    def param_grads(self, d, steps, R, b):
        return d, weight_grad(d, steps.prev(0)), sum_tb(d)


CELLS.register("slstm", SLSTM())
