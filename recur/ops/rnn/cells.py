"""The nonlinear cells: one pointwise step each, after the input projections.

A cell maps the pre-projected input x_t, the recurrent weights R, the biases b and the
state s_{t-1} to s_t. Every cell reads its recurrence from the first state component h
(FlashRNN's convention), except AL-RNN whose only state is its latent z.

Shapes (leading dims `...` are [B] in the loops and [B, T] in the Newton solver):
    x      [..., Gx, H, Dh]   Gx input gates, H heads of Dh units
    R      [Gr, H, Dh, Dh]    one dense block per gate and head (H = 1: a dense matrix),
           or [Gr, H, Dh]     for cells with a diagonal recurrence
    b      [Gb, H, Dh]
    state  tuple of S tensors [..., H, Dh]; state[0] is the output h

Every cell here also carries its own backward through time for the sequential form
(`recur.ops.rnn.sequential`), in five methods:
    prepare(R) -> P                         R laid out once for the per-step products
    tape_step(x_t, P, b, s) -> (s_t, tape)  the step without autograd, plus what the
                                            backward needs of it (e.g. the gate values)
    grad_setup(tape, prev, new, R, b)       per-step coefficients for all T at once
                                            (tape, prev = s_0..s_{T-1}, new = s_1..s_T
                                            stacked on a leading T axis)
    local_grads(coef_t, P, b, dh_t, ds_t)   one step back: from dL/dh_t of the output and
                                            dL/ds_t carried from t + 1, the step's gradient
                                            record and dL/ds_{t-1}: elementwise ops and one
                                            product with Rᵀ
    param_grads(record, coef, tape, prev, new, R, b) -> (dx, dR, db) for all T at once
                                            (dR one batched product over T)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def recurrent(h: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """R h per gate and head: h [..., H, Dh], R [G, H, Dh, Dh] -> [..., G, H, Dh]."""
    return torch.einsum("ghed,...hd->...ghe", R, h)


def weight_grad(d: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Σ_t,b d_g u^T per gate and head: d [T, B, G, H, Dh] (gradients of R u), u [T, B, H, Dh]
    (what R multiplied) -> [G, H, Dh, Dh]."""
    return torch.einsum("tbghe,tbhd->ghed", d, u)


class Recurrence:
    """Dense or head-wise R [G, H, Dh, Dh] laid out once for the loops, so that R h and
    Σ_g R_gᵀ d_g are one (batched over heads) matrix product per step; the einsum would
    permute R on every call."""

    def __init__(self, R: torch.Tensor) -> None:
        G, H, Dh, _ = R.shape
        self.G, self.H, self.Dh = G, H, Dh
        # [H, Dh, G·Dh]: h [.., Dh] @ it gives every gate's R h
        self.forward_matrix = R.permute(1, 3, 0, 2).reshape(H, Dh, G * Dh)
        # [H, G·Dh, Dh]: the gates' d [.., G·Dh] @ it gives Σ_g R_gᵀ d_g
        self.backward_matrix = R.permute(1, 0, 2, 3).reshape(H, G * Dh, Dh)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, H, Dh] -> R h [B, G, H, Dh]."""
        B, G, H, Dh = h.shape[0], self.G, self.H, self.Dh
        if H == 1:
            return torch.mm(h.reshape(B, Dh), self.forward_matrix[0]).view(B, G, 1, Dh)
        return torch.bmm(h.transpose(0, 1), self.forward_matrix).view(H, B, G, Dh).permute(1, 2, 0, 3)

    def transposed(self, d: torch.Tensor) -> torch.Tensor:
        """d [B, G, H, Dh] -> Σ_g R_gᵀ d_g [B, H, Dh]."""
        B, G, H, Dh = d.shape[0], self.G, self.H, self.Dh
        if H == 1:
            return torch.mm(d.reshape(B, G * Dh), self.backward_matrix[0]).view(B, 1, Dh)
        return torch.bmm(d.permute(2, 0, 1, 3).reshape(H, B, G * Dh), self.backward_matrix).transpose(0, 1)


def _sum_tb(x: torch.Tensor) -> torch.Tensor:
    """Sum over the leading time and batch axes."""
    return x.sum((0, 1))


class Cell:
    """A recurrence h_t = f(h_{t-1}, x_t): its sizes and its step.

    Subclasses set the class attributes and implement `step`. A cell whose Jacobian
    ∂s_t/∂s_{t-1} is diagonal per unit (an S×S block of diagonals for S states) sets
    `jacobian_structure = "diagonal"` and can be solved by Newton (`recur.ops.newton`).
    A cell that sets `hand_backward = True` implements the five backward-through-time
    methods of the module docstring; the sequential form uses them, and otherwise
    rebuilds blocks of steps through autograd in its backward.
    """

    name: str = ""
    state_names: tuple[str, ...] = ("h",)
    input_gates: int = 1
    recurrent_gates: int = 1
    bias_gates: int = 1
    # "dense": R [Gr, H, Dh, Dh]; "diagonal": R [Gr, H, Dh]
    recurrence: str = "dense"
    # "dense" or "diagonal" (per unit, an S×S block for S states)
    jacobian_structure: str = "dense"
    hand_backward: bool = False

    @property
    def num_states(self) -> int:
        return len(self.state_names)

    def expected_recurrent_gates(self, R: torch.Tensor) -> int:
        return self.recurrent_gates

    def expected_bias_gates(self, R: torch.Tensor) -> int:
        return self.bias_gates

    def step(self, x, R, b, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        raise TypeError(f"{type(self).__name__} must define step(x, R, b, state)")

    def prepare(self, R: torch.Tensor):
        return Recurrence(R) if self.recurrence == "dense" else R

    def step_and_jacobian(self, x, R, b, state):
        """(s_t, J) with J[i][j] = ∂s_t[i]/∂s_{t-1}[j] per unit, for diagonal-Jacobian cells.

        The default differentiates `step`: the gradient of Σ s_t[i] with respect to
        s_{t-1}[j] is exactly that diagonal when units do not mix. Cells may override it
        with the closed form.
        """
        with torch.enable_grad():
            leaves = tuple(s.detach().requires_grad_() for s in state)
            new = self.step(x, R, b, leaves)
            J = []
            for i in range(self.num_states):
                row = torch.autograd.grad(new[i].sum(), leaves, retain_graph=i + 1 < self.num_states, allow_unused=True)
                J.append([torch.zeros_like(s) if g is None else g for s, g in zip(leaves, row, strict=True)])
        return tuple(n.detach() for n in new), J

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Elman(Cell):
    """h_t = φ(x_t + R h_{t-1} + b), φ = tanh or ReLU (Elman 1990)."""

    hand_backward = True

    def __init__(self, activation: str = "tanh") -> None:
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu'; got {activation!r}")
        self.activation = activation
        self.name = f"elman_{activation}"

    def step(self, x, R, b, state):
        (h,) = state
        pre = x[..., 0, :, :] + recurrent(h, R)[..., 0, :, :] + b[0]
        return (torch.tanh(pre) if self.activation == "tanh" else F.relu(pre),)

    def tape_step(self, x, P, b, state):
        (h,) = state
        pre = x[..., 0, :, :] + P(h)[..., 0, :, :] + b[0]
        return (torch.tanh(pre) if self.activation == "tanh" else F.relu(pre),), ()

    def grad_setup(self, tape, prev, new, R, b):
        # φ' from the output: 1 − h² for tanh; for ReLU h > 0 exactly where the input is
        h = new[0]
        return ((1 - h * h) if self.activation == "tanh" else (h > 0).to(h.dtype),)

    def local_grads(self, coef, P, b, out, grad):
        d = ((grad[0] + out) * coef[0]).unsqueeze(-3)
        return d, (P.transposed(d),)

    def param_grads(self, d, coef, tape, prev, new, R, b):
        return d, weight_grad(d, prev[0]), _sum_tb(d)

    def __repr__(self) -> str:
        return f"Elman(activation={self.activation!r})"


class IndRNN(Cell):
    """h_t = ReLU(x_t + u ⊙ h_{t-1} + b): independent units (Li et al., arXiv:1803.04831)."""

    name = "indrnn"
    recurrence = "diagonal"
    jacobian_structure = "diagonal"
    hand_backward = True

    def step(self, x, R, b, state):
        (h,) = state
        return (F.relu(x[..., 0, :, :] + R[0] * h + b[0]),)

    def tape_step(self, x, P, b, state):
        return self.step(x, P, b, state), ()

    def grad_setup(self, tape, prev, new, R, b):
        return ((new[0] > 0).to(new[0].dtype),)

    def local_grads(self, coef, P, b, out, grad):
        d = (grad[0] + out) * coef[0]
        return d, (d * P[0],)

    def param_grads(self, d, coef, tape, prev, new, R, b):
        return d.unsqueeze(2), _sum_tb(d * prev[0]).unsqueeze(0), _sum_tb(d).unsqueeze(0)


class LSTM(Cell):
    """torch.nn.LSTM's cell, gates in its order (i, f, g, o):
    c_t = σ(f) c_{t-1} + σ(i) tanh(g),  h_t = σ(o) tanh(c_t)."""

    name = "lstm"
    state_names = ("h", "c")
    input_gates = recurrent_gates = bias_gates = 4
    hand_backward = True

    def step(self, x, R, b, state):
        h, c = state
        pre = x + recurrent(h, R) + b
        i, f, g, o = pre.unbind(-3)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def tape_step(self, x, P, b, state):
        h, c = state
        pre = x + P(h) + b
        # σ of all four gates in one call; the g slot is replaced by tanh(g) below
        gates = torch.sigmoid(pre)
        g = torch.tanh(pre[..., 2, :, :])
        i, f, _, o = gates.unbind(-3)
        c = torch.addcmul(f * c, i, g)
        return (o * torch.tanh(c), c), (gates, g)

    def grad_setup(self, tape, prev, new, R, b):
        gates, g = tape
        i, f, _, o = gates.unbind(-3)
        tanh_c = torch.tanh(new[1])
        # the gates' pre-activation gradients are (dc K_i, dc K_f, dc K_g, dh K_o) with
        # dc = dc_{t+1→t} + dh · o (1 − tanh² c)
        K = torch.stack([g * i * (1 - i), prev[1] * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)], dim=-3)
        return K, o * (1 - tanh_c * tanh_c), f

    def local_grads(self, coef, P, b, out, grad):
        K, dc_dh, f = coef
        dh = grad[0] + out
        dc = torch.addcmul(grad[1], dh, dc_dh)
        d = K * torch.stack([dc, dc, dc, dh], dim=-3)
        return d, (P.transposed(d), dc * f)

    def param_grads(self, d, coef, tape, prev, new, R, b):
        return d, weight_grad(d, prev[0]), _sum_tb(d)


class GRU(Cell):
    """torch.nn.GRU's cell, gates (r, z, n); biases (r, z, input n, recurrent n):
    n = tanh(x_n + b_in + σ(r) ⊙ (R_n h + b_hn)),  h_t = (1 − σ(z)) n + σ(z) h_{t-1}."""

    name = "gru"
    input_gates = recurrent_gates = 3
    bias_gates = 4
    hand_backward = True

    def step(self, x, R, b, state):
        (h,) = state
        rec = recurrent(h, R)
        r = torch.sigmoid(x[..., 0, :, :] + rec[..., 0, :, :] + b[0])
        z = torch.sigmoid(x[..., 1, :, :] + rec[..., 1, :, :] + b[1])
        n = torch.tanh(x[..., 2, :, :] + b[2] + r * (rec[..., 2, :, :] + b[3]))
        return ((1 - z) * n + z * h,)

    def tape_step(self, x, P, b, state):
        (h,) = state
        rec = P(h)
        rz = torch.sigmoid(x[..., :2, :, :] + rec[..., :2, :, :] + b[:2])
        r, z = rz.unbind(-3)
        hn = rec[..., 2, :, :] + b[3]
        n = torch.tanh(torch.addcmul(x[..., 2, :, :] + b[2], r, hn))
        return (torch.addcmul(n, z, h - n),), (rz, n, hn)

    def grad_setup(self, tape, prev, new, R, b):
        rz, n, hn = tape
        r, z = rz.unbind(-3)
        dn = (1 - z) * (1 - n * n)
        # dh times these: the gradients of (r, z, R_n h + b_hn, input n) pre-activations;
        # the first three are what R multiplied into
        K = torch.stack([dn * hn * r * (1 - r), (prev[0] - n) * z * (1 - z), dn * r, dn], dim=-3)
        return K, z

    def local_grads(self, coef, P, b, out, grad):
        K, z = coef
        dh = grad[0] + out
        d = K * dh.unsqueeze(-3)
        return d, (torch.addcmul(P.transposed(d[..., :3, :, :]), dh, z),)

    def param_grads(self, d, coef, tape, prev, new, R, b):
        db = _sum_tb(d)
        return d[:, :, [0, 1, 3]], weight_grad(d[:, :, :3], prev[0]), db[[0, 1, 3, 2]]


class MGU(Cell):
    """Minimal gated unit (Zhou et al., arXiv:1603.09420), gates (f, h̃):
    f = σ(x_f + R_f h + b_f),  h̃ = tanh(x_h + R_h (f ⊙ h) + b_h),  h_t = (1 − f) h + f h̃."""

    name = "mgu"
    input_gates = recurrent_gates = bias_gates = 2
    hand_backward = True

    def step(self, x, R, b, state):
        (h,) = state
        f = torch.sigmoid(x[..., 0, :, :] + recurrent(h, R[:1])[..., 0, :, :] + b[0])
        candidate = torch.tanh(x[..., 1, :, :] + recurrent(f * h, R[1:])[..., 0, :, :] + b[1])
        return ((1 - f) * h + f * candidate,)

    def prepare(self, R):
        return Recurrence(R[:1]), Recurrence(R[1:])

    def tape_step(self, x, P, b, state):
        (h,) = state
        f = torch.sigmoid(x[..., 0, :, :] + P[0](h)[..., 0, :, :] + b[0])
        candidate = torch.tanh(x[..., 1, :, :] + P[1](f * h)[..., 0, :, :] + b[1])
        return (torch.addcmul(h, f, candidate - h),), (f, candidate)

    def grad_setup(self, tape, prev, new, R, b):
        f, candidate = tape
        df = f * (1 - f)
        return f * (1 - candidate * candidate), (candidate - prev[0]) * df, prev[0] * df, f

    def local_grads(self, coef, P, b, out, grad):
        dcandidate, df_direct, df_through, f = coef
        dh = grad[0] + out
        d_candidate = (dh * dcandidate).unsqueeze(-3)
        # R_hᵀ of the candidate's gradient reaches f and h through f ⊙ h: the second
        # product depends on the first, so this cell needs two per step
        v = P[1].transposed(d_candidate)
        d_f = (dh * df_direct + v * df_through).unsqueeze(-3)
        dh_prev = torch.addcmul(dh, f, v - dh) + P[0].transposed(d_f)
        return torch.cat([d_f, d_candidate], dim=-3), (dh_prev,)

    def param_grads(self, d, coef, tape, prev, new, R, b):
        f = tape[0]
        dR = torch.cat([weight_grad(d[:, :, :1], prev[0]), weight_grad(d[:, :, 1:], f * prev[0])])
        return d, dR, _sum_tb(d)


class RHN(Cell):
    """Recurrent highway network (Zilly et al., arXiv:1607.03474) with coupled carry gate;
    depth L = Gr / 2 micro-steps per token, the input enters the first one:
    s_l = tanh(x_H[l=1] + R_Hl s_{l-1} + b_Hl) ⊙ t_l + s_{l-1} ⊙ (1 − t_l),
    t_l = σ(x_T[l=1] + R_Tl s_{l-1} + b_Tl), s_0 = h_{t-1}, h_t = s_L.
    Gates are (H, T) in x and (H_1, T_1, …, H_L, T_L) in R and b."""

    name = "rhn"
    input_gates = 2
    hand_backward = True

    def expected_recurrent_gates(self, R):
        return 2 * max(R.shape[0] // 2, 1)

    def expected_bias_gates(self, R):
        return self.expected_recurrent_gates(R)

    def step(self, x, R, b, state):
        (s,) = state
        for layer in range(R.shape[0] // 2):
            pre = recurrent(s, R[2 * layer : 2 * layer + 2]) + b[2 * layer : 2 * layer + 2]
            if layer == 0:
                pre = pre + x
            candidate, carry = torch.tanh(pre[..., 0, :, :]), torch.sigmoid(pre[..., 1, :, :])
            s = candidate * carry + s * (1 - carry)
        return (s,)

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

    def grad_setup(self, tape, prev, new, R, b):
        L = len(tape) // 3
        inputs, candidates, carries = tape[:L], tape[L : 2 * L], tape[2 * L :]
        K = [
            torch.stack([t * (1 - c * c), (c - s) * t * (1 - t)], dim=-3)
            for s, c, t in zip(inputs, candidates, carries, strict=True)
        ]
        return (*K, *(1 - t for t in carries))

    def local_grads(self, coef, P, b, out, grad):
        L = len(P)
        K, keep = coef[:L], coef[L:]
        ds = grad[0] + out
        d = [None] * L
        for layer in reversed(range(L)):
            d[layer] = K[layer] * ds.unsqueeze(-3)
            ds = torch.addcmul(P[layer].transposed(d[layer]), ds, keep[layer])
        return torch.cat(d, dim=-3), (ds,)

    def param_grads(self, d, coef, tape, prev, new, R, b):
        L = len(tape) // 3
        dR = torch.cat([weight_grad(d[:, :, 2 * layer : 2 * layer + 2], tape[layer]) for layer in range(L)])
        return d[:, :, :2], dR, _sum_tb(d)


class SLSTM(Cell):
    """sLSTM (xLSTM, Beck et al., arXiv:2405.04517), gates (i, f, z, o), stabilised:
    m_t = max(log σ(f̃) + m_{t-1}, ĩ),  i = exp(ĩ − m_t),  f = exp(log σ(f̃) + m_{t-1} − m_t),
    c_t = f c + i tanh(z̃),  n_t = f n + i,  h_t = σ(õ) c_t / n_t.
    A zero normaliser marks an empty state (the start), whose m is taken from ĩ alone."""

    name = "slstm"
    state_names = ("h", "c", "n", "m")
    input_gates = recurrent_gates = bias_gates = 4
    hand_backward = True

    def step(self, x, R, b, state):
        return self._update(x + recurrent(state[0], R) + b, state)

    def _update(self, pre, state):
        _, c, n, m = state
        i_pre, f_pre, z_pre, o_pre = pre.unbind(-3)
        log_f = F.logsigmoid(f_pre)
        empty = n == 0
        m_new = torch.where(empty, i_pre, torch.maximum(log_f + m, i_pre))
        i = torch.exp(i_pre - m_new)
        # the clamp is a no-op where the state is live (m_new >= log_f + m) and keeps the
        # unused branch finite where it is empty, so where() passes no NaN gradient
        f = torch.where(empty, torch.zeros_like(m), torch.exp((log_f + m - m_new).clamp(max=0)))
        c = f * c + i * torch.tanh(z_pre)
        n = f * n + i
        return torch.sigmoid(o_pre) * c / n, c, n, m_new

    def tape_step(self, x, P, b, state):
        pre = x + P(state[0]) + b
        return self._update(pre, state), (pre,)

    def grad_setup(self, tape, prev, new, R, b):
        (pre,) = tape
        i_pre, f_pre, z_pre, o_pre = pre.unbind(-3)
        _, c_prev, n_prev, m_prev = prev
        h, c, n, m = new
        empty = n_prev == 0
        a = F.logsigmoid(f_pre) + m_prev
        i = torch.exp(i_pre - m)
        f = torch.where(empty, torch.zeros_like(m), torch.exp((a - m).clamp(max=0)))
        tanh_z = torch.tanh(z_pre)
        o = torch.sigmoid(o_pre)
        # the share of ∂L/∂m_t that goes to log σ(f̃) + m_{t-1}: torch.maximum splits a tie evenly
        to_a = torch.where(empty, 0.0, (a > i_pre).to(a.dtype) + 0.5 * (a == i_pre).to(a.dtype))
        return (
            (c / n) * o * (1 - o), o / n, -h / n, i * (1 - tanh_z * tanh_z), tanh_z, i, f,
            c_prev, n_prev, to_a, torch.sigmoid(-f_pre),
        )

    def local_grads(self, coef, P, b, out, grad):
        K_o, dc_dh, dn_dh, K_z, tanh_z, i, f, c_prev, n_prev, to_a, dlogf = coef
        dh = grad[0] + out
        dc = torch.addcmul(grad[1], dh, dc_dh)
        dn = torch.addcmul(grad[2], dh, dn_dh)
        di = torch.addcmul(dn, dc, tanh_z) * i
        df = torch.addcmul(dc * c_prev, dn, n_prev) * f
        # m_t enters i and f as exp(· − m_t)
        dm = grad[3] - di - df
        dm_a = dm * to_a
        da = df + dm_a
        d = torch.stack([di + dm - dm_a, da * dlogf, dc * K_z, dh * K_o], dim=-3)
        return d, (P.transposed(d), dc * f, dn * f, da)

    def param_grads(self, d, coef, tape, prev, new, R, b):
        return d, weight_grad(d, prev[0]), _sum_tb(d)


class ALRNN(Cell):
    """AL-RNN (Brenner et al., NeurIPS 2024): z_t = A ⊙ z_{t-1} + W φ*(z_{t-1}) + h + x_t,
    φ* = ReLU on the last P units of each head, identity on the others.
    R [1, H, Dh, Dh] is W; b [2, H, Dh] is (A, h)."""

    name = "alrnn"
    state_names = ("z",)
    bias_gates = 2
    hand_backward = True

    def __init__(self, num_relu: int) -> None:
        if not isinstance(num_relu, int) or num_relu < 0:
            raise ValueError(f"num_relu must be a non-negative int; got {num_relu!r}")
        self.num_relu = num_relu

    def _phi(self, z):
        Dh = z.shape[-1]
        if self.num_relu > Dh:
            raise ValueError(f"num_relu = {self.num_relu} exceeds the head size Dh = {Dh}")
        linear, piecewise = z.split([Dh - self.num_relu, self.num_relu], dim=-1)
        return torch.cat([linear, F.relu(piecewise)], dim=-1)

    def step(self, x, R, b, state):
        (z,) = state
        return (b[0] * z + recurrent(self._phi(z), R)[..., 0, :, :] + b[1] + x[..., 0, :, :],)

    def tape_step(self, x, P, b, state):
        (z,) = state
        return (b[0] * z + P(self._phi(z))[..., 0, :, :] + b[1] + x[..., 0, :, :],), ()

    def grad_setup(self, tape, prev, new, R, b):
        z = prev[0]
        Dh = z.shape[-1]
        linear, piecewise = z.split([Dh - self.num_relu, self.num_relu], dim=-1)
        return (torch.cat([torch.ones_like(linear), (piecewise > 0).to(z.dtype)], dim=-1),)

    def local_grads(self, coef, P, b, out, grad):
        dz = (grad[0] + out).unsqueeze(-3)
        return dz, (torch.addcmul(b[0] * dz[..., 0, :, :], coef[0], P.transposed(dz)),)

    def param_grads(self, d, coef, tape, prev, new, R, b):
        z = prev[0]
        db = torch.stack([_sum_tb(d[:, :, 0] * z), _sum_tb(d[:, :, 0])])
        return d, weight_grad(d, self._phi(z)), db

    def __repr__(self) -> str:
        return f"ALRNN(num_relu={self.num_relu})"


class ParaGRU(Cell):
    """ParaRNN's GRU with diagonal recurrence (Danieli et al., arXiv:2510.21450), gates (z, r, h):
    z = σ(a_z ⊙ h + x_z + b_z),  r = σ(a_r ⊙ h + x_r + b_r),  ĥ = tanh(a_h ⊙ (h ⊙ r) + x_h + b_h),
    h_t = z ⊙ ĥ + (1 − z) ⊙ h.  R [3, H, Dh] is (a_z, a_r, a_h)."""

    name = "paragru"
    input_gates = recurrent_gates = bias_gates = 3
    recurrence = "diagonal"
    jacobian_structure = "diagonal"
    hand_backward = True

    def step(self, x, R, b, state):
        return self._forward(x, R, b, state[0])[0]

    def _forward(self, x, R, b, h):
        pre = x + b
        z = torch.sigmoid(R[0] * h + pre[..., 0, :, :])
        r = torch.sigmoid(R[1] * h + pre[..., 1, :, :])
        candidate = torch.tanh(R[2] * (h * r) + pre[..., 2, :, :])
        return ((z * candidate + (1 - z) * h,), z, r, candidate)

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

    def tape_step(self, x, P, b, state):
        new, z, r, candidate = self._forward(x, P, b, state[0])
        return new, (z, r, candidate)

    def grad_setup(self, tape, prev, new, R, b):
        z, r, candidate = tape
        h = prev[0]
        # dh_t times these: the (z, r, ĥ) pre-activation gradients
        d_candidate = z * (1 - candidate * candidate)
        K = torch.stack([(candidate - h) * z * (1 - z), d_candidate * R[2] * h * r * (1 - r), d_candidate], dim=-3)
        return K, self._jacobian(R, h, z, r, candidate)

    def local_grads(self, coef, P, b, out, grad):
        dh = grad[0] + out
        return dh, (dh * coef[1],)

    def param_grads(self, dh, coef, tape, prev, new, R, b):
        d = coef[0] * dh.unsqueeze(2)
        h, r = prev[0], tape[1]
        dR = torch.stack([_sum_tb(d[:, :, 0] * h), _sum_tb(d[:, :, 1] * h), _sum_tb(d[:, :, 2] * h * r)])
        return d, dR, _sum_tb(d)


class ParaLSTM(Cell):
    """ParaRNN's LSTM: coupled input-forget gate, peepholes, diagonal recurrence; gates (f, c, o):
    f = σ(a_f ⊙ h + x_f + b_f + p_f ⊙ c),  c̃ = tanh(a_c ⊙ h + x_c + b_c),
    c_t = f ⊙ c + (1 − f) ⊙ c̃,  o = σ(a_o ⊙ h + x_o + b_o + p_o ⊙ c_t),  h_t = o ⊙ tanh(c_t).
    R [5, H, Dh] is (a_f, a_c, a_o, p_f, p_o)."""

    name = "paralstm"
    state_names = ("h", "c")
    input_gates = bias_gates = 3
    recurrent_gates = 5
    recurrence = "diagonal"
    jacobian_structure = "diagonal"
    hand_backward = True

    def step(self, x, R, b, state):
        return self._forward(x, R, b, state)[0]

    def _forward(self, x, R, b, state):
        h, c = state
        pre = x + b
        f = torch.sigmoid(R[0] * h + pre[..., 0, :, :] + R[3] * c)
        candidate = torch.tanh(R[1] * h + pre[..., 1, :, :])
        c_new = f * c + (1 - f) * candidate
        o = torch.sigmoid(R[2] * h + pre[..., 2, :, :] + R[4] * c_new)
        tanh_c = torch.tanh(c_new)
        return (o * tanh_c, c_new), f, candidate, o, tanh_c

    def step_and_jacobian(self, x, R, b, state):
        (h_new, c_new), f, candidate, o, tanh_c = self._forward(x, R, b, state)
        return (h_new, c_new), self._jacobian(R, state[1], f, candidate, o, tanh_c)[0]

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

    def tape_step(self, x, P, b, state):
        new, f, candidate, o, tanh_c = self._forward(x, P, b, state)
        return new, (f, candidate, o, tanh_c)

    def grad_setup(self, tape, prev, new, R, b):
        (J_hh, J_hc), (J_ch, J_cc) = self._jacobian(R, prev[1], *tape)[0]
        return J_hh, J_hc, J_ch, J_cc

    def local_grads(self, coef, P, b, out, grad):
        J_hh, J_hc, J_ch, J_cc = coef
        dh, dc = grad[0] + out, grad[1]
        return torch.stack([dh, dc]), (torch.addcmul(dh * J_hh, dc, J_ch), torch.addcmul(dh * J_hc, dc, J_cc))

    def param_grads(self, record, coef, tape, prev, new, R, b):
        # record [T, 2, B, H, Dh]: dL/dh_t and dL/dc_t (from t + 1) at every step
        dh, dc = record.unbind(1)
        f, candidate, o, tanh_c = tape
        h, c = prev
        _, dh_dc_new = self._jacobian(R, c, f, candidate, o, tanh_c)
        d_o = dh * tanh_c * o * (1 - o)
        dc_total = torch.addcmul(dc, dh, dh_dc_new)
        d_f = dc_total * (c - candidate) * f * (1 - f)
        d_c = dc_total * (1 - f) * (1 - candidate * candidate)
        d = torch.stack([d_f, d_c, d_o], dim=2)
        dR = torch.stack([_sum_tb(d_f * h), _sum_tb(d_c * h), _sum_tb(d_o * h), _sum_tb(d_f * c), _sum_tb(d_o * new[1])])
        return d, dR, _sum_tb(d)


CELLS: dict[str, Cell] = {
    cell.name: cell
    for cell in (Elman("tanh"), Elman("relu"), IndRNN(), LSTM(), GRU(), MGU(), RHN(), SLSTM(), ParaGRU(), ParaLSTM())
}


def get_cell(cell: str | Cell) -> Cell:
    """A cell by name ("lstm", "gru", ...) or a `Cell` instance (e.g. `ALRNN(num_relu=2)`)."""
    if isinstance(cell, Cell):
        return cell
    if cell == "alrnn":
        raise ValueError("cell 'alrnn' needs its number of ReLU units: pass cell=ALRNN(num_relu=P)")
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(CELLS) + ['alrnn']} or a Cell instance")
    return CELLS[cell]
