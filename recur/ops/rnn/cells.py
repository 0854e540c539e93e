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
(`recur.ops.rnn.sequential`), in four methods:
    prepare(R) -> P                          R laid out once for the per-step products
    tape_step(x_t, P, b, s) -> (s_t, tape)   the step without autograd, plus what the
                                             backward needs of it (e.g. the gate values)
    local_grads(tape_t, s_{t-1}, s_t, P, b, dh_t, ds_t) -> (record_t, ds_{t-1})
                                             one step back: from dL/dh_t of the output and
                                             dL/ds_t carried from t + 1, the step's gate
                                             gradients (its record) and dL/ds_{t-1};
                                             elementwise ops and one product with Rᵀ
    param_grads(record, steps, R, b) -> (dx, dR, db) for all T at once: record stacked
                                             [B, T, ...], `steps` (a `Steps`) gives what the
                                             forward kept stacked the same way; dR is one
                                             product over (B, T)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def recurrent(h: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """R h per gate and head: h [..., H, Dh], R [G, H, Dh, Dh] -> [..., G, H, Dh]."""
    return torch.einsum("ghed,...hd->...ghe", R, h)


def weight_grad(d: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Σ_b,t d_g u^T per gate and head: d [B, T, G, H, Dh] (gradients of R u), u [B, T, H, Dh]
    (what R multiplied) -> [G, H, Dh, Dh]."""
    B, T, G, H, Dh = d.shape
    if H == 1:
        # one matrix product over all B·T rows (the einsum would copy d into its layout)
        return torch.mm(d.reshape(B * T, G * Dh).t(), u.reshape(B * T, Dh)).view(G, 1, Dh, Dh)
    return torch.einsum("btghe,bthd->ghed", d, u)


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

    def plus(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """x + R h for x [B, G, H, Dh] (one fused multiply-add with one head)."""
        if self.H == 1:
            B = h.shape[0]
            return torch.addmm(x.reshape(B, -1), h.reshape(B, self.Dh), self.forward_matrix[0]).view(B, self.G, 1, self.Dh)
        return x + self(h)


class Steps:
    """What the sequential forward kept of every step: the states s_0..s_T (tuples of S
    tensors [B, H, Dh]) and the cell's tapes; stacked [B, T, ...] on request."""

    def __init__(self, states: list[tuple[torch.Tensor, ...]], tapes: list[tuple[torch.Tensor, ...]]) -> None:
        self.states, self.tapes = states, tapes

    def prev(self, k: int) -> torch.Tensor:
        """State component k before every step: s_0..s_{T-1}."""
        return torch.stack([s[k] for s in self.states[:-1]], dim=1)

    def new(self, k: int) -> torch.Tensor:
        """State component k after every step: s_1..s_T."""
        return torch.stack([s[k] for s in self.states[1:]], dim=1)

    def tape(self, j: int) -> torch.Tensor:
        return torch.stack([v[j] for v in self.tapes], dim=1)


def _sum_tb(x: torch.Tensor) -> torch.Tensor:
    """Sum over the leading batch and time axes."""
    return x.sum((0, 1))


# the per-step backward runs ~20 small elementwise ops, whose cost is mostly per call: a
# Python scalar in `1 - x` is wrapped into a tensor on every call, a cached one is not
_ONES: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _one(x: torch.Tensor) -> torch.Tensor:
    key = (x.dtype, x.device)
    if key not in _ONES:
        _ONES[key] = torch.ones((), dtype=x.dtype, device=x.device)
    return _ONES[key]


def one_minus(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """1 − x, or 1 − x y."""
    return _one(x) - x if y is None else torch.addcmul(_one(x), x, y, value=-1)


def sigmoid_slope(s: torch.Tensor) -> torch.Tensor:
    """σ' = s (1 − s) from s = σ(·)."""
    return torch.addcmul(s, s, s, value=-1)


class Cell:
    """A recurrence h_t = f(h_{t-1}, x_t): its sizes and its step.

    Subclasses set the class attributes and implement `step`. A cell whose Jacobian
    ∂s_t/∂s_{t-1} is diagonal per unit (an S×S block of diagonals for S states) sets
    `jacobian_structure = "diagonal"` and can be solved by Newton (`recur.ops.newton`).
    A cell that sets `hand_backward = True` implements the four backward-through-time
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
        pre = P.plus(x, h)[..., 0, :, :] + b[0]
        return (torch.tanh(pre) if self.activation == "tanh" else F.relu(pre),), ()

    def local_grads(self, tape, prev, new, P, b, out, grad):
        # φ' from the output: 1 − h² for tanh; for ReLU h > 0 exactly where the input is
        h, dh = new[0], grad[0] + out
        d = (dh * one_minus(h, h) if self.activation == "tanh" else torch.where(h > 0, dh, 0)).unsqueeze(-3)
        return d, (P.transposed(d),)

    def param_grads(self, d, steps, R, b):
        return d, weight_grad(d, steps.prev(0)), _sum_tb(d)

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

    def local_grads(self, tape, prev, new, P, b, out, grad):
        d = torch.where(new[0] > 0, grad[0] + out, 0)
        return d, (d * P[0],)

    def param_grads(self, d, steps, R, b):
        return d.unsqueeze(2), _sum_tb(d * steps.prev(0)).unsqueeze(0), _sum_tb(d).unsqueeze(0)


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
        pre = P.plus(x, h) + b
        # the activated gates (σ(i), σ(f), tanh(g), σ(o)): σ of all four in one call, then
        # tanh into the g slot
        act = torch.sigmoid(pre)
        torch.tanh(pre[..., 2, :, :], out=act[..., 2, :, :])
        i, f, g, o = act.unbind(-3)
        c = torch.addcmul(f * c, i, g)
        tanh_c = torch.tanh(c)
        return (o * tanh_c, c), (act, tanh_c)

    def local_grads(self, tape, prev, new, P, b, out, grad):
        act, tanh_c = tape
        i, f, g, o = act.unbind(-3)
        dh = grad[0] + out
        dc = torch.addcmul(grad[1], dh * o, one_minus(tanh_c, tanh_c))
        # σ' = σ (1 − σ), tanh' = 1 − tanh²
        slope = sigmoid_slope(act)
        torch.addcmul(_one(g), g, g, value=-1, out=slope[..., 2, :, :])
        d = torch.stack([dc * g, dc * prev[1], dc * i, dh * tanh_c], dim=-3).mul_(slope)
        return d, (P.transposed(d), dc * f)

    def param_grads(self, d, steps, R, b):
        return d, weight_grad(d, steps.prev(0)), _sum_tb(d)


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

    def local_grads(self, tape, prev, new, P, b, out, grad):
        rz, n, hn = tape
        r, z = rz.unbind(-3)
        dh = grad[0] + out
        dn = dh * one_minus(z) * one_minus(n, n)
        # the gradients of the pre-activations of r, z, of R_n h + b_hn and of the input n;
        # R multiplied into the first three
        d = torch.stack([dn * hn, dh * (prev[0] - n), dn * r, dn], dim=-3)
        d[..., :2, :, :].mul_(sigmoid_slope(rz))
        return d, (torch.addcmul(P.transposed(d[..., :3, :, :]), dh, z),)

    def param_grads(self, d, steps, R, b):
        db = _sum_tb(d)
        return d[:, :, [0, 1, 3]], weight_grad(d[:, :, :3], steps.prev(0)), db[[0, 1, 3, 2]]


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
        return self._update(x + recurrent(state[0], R) + b, state)[0]

    def _update(self, pre, state):
        """(s_t, the intermediates the backward reads) from the pre-activations."""
        _, c, n, m = state
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

    def tape_step(self, x, P, b, state):
        return self._update(P.plus(x, state[0]) + b, state)

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
        return d, weight_grad(d, steps.prev(0)), _sum_tb(d)


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

    def local_grads(self, tape, prev, new, P, b, out, grad):
        # the record is dL/dh_t; the gate gradients follow for all t at once in param_grads
        dh = grad[0] + out
        return dh, (dh * self._jacobian(P, prev[0], *tape),)

    def param_grads(self, dh, steps, R, b):
        z, r, candidate = (steps.tape(j) for j in range(3))
        h = steps.prev(0)
        d_candidate = dh * z * (1 - candidate * candidate)
        d = torch.stack([dh * (candidate - h) * z * (1 - z), d_candidate * R[2] * h * r * (1 - r), d_candidate], dim=2)
        dR = torch.stack([_sum_tb(d[:, :, 0] * h), _sum_tb(d[:, :, 1] * h), _sum_tb(d_candidate * h * r)])
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
        dR = torch.stack([_sum_tb(d_f * h), _sum_tb(d_c * h), _sum_tb(d_o * h), _sum_tb(d_f * c), _sum_tb(d_o * steps.new(1))])
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
