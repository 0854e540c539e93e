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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def recurrent(h: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """R h per gate and head: h [..., H, Dh], R [G, H, Dh, Dh] -> [..., G, H, Dh]."""
    return torch.einsum("ghed,...hd->...ghe", R, h)


class Cell:
    """A recurrence h_t = f(h_{t-1}, x_t): its sizes and its step.

    Subclasses set the class attributes and implement `step`. A cell whose Jacobian
    ∂s_t/∂s_{t-1} is diagonal per unit (an S×S block of diagonals for S states) sets
    `jacobian_structure = "diagonal"` and can be solved by Newton (`recur.ops.newton`).
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

    @property
    def num_states(self) -> int:
        return len(self.state_names)

    def expected_recurrent_gates(self, R: torch.Tensor) -> int:
        return self.recurrent_gates

    def expected_bias_gates(self, R: torch.Tensor) -> int:
        return self.bias_gates

    def step(self, x, R, b, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        raise TypeError(f"{type(self).__name__} must define step(x, R, b, state)")

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

    def __init__(self, activation: str = "tanh") -> None:
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu'; got {activation!r}")
        self.activation = activation
        self.name = f"elman_{activation}"

    def step(self, x, R, b, state):
        (h,) = state
        pre = x[..., 0, :, :] + recurrent(h, R)[..., 0, :, :] + b[0]
        return (torch.tanh(pre) if self.activation == "tanh" else F.relu(pre),)

    def __repr__(self) -> str:
        return f"Elman(activation={self.activation!r})"


class IndRNN(Cell):
    """h_t = ReLU(x_t + u ⊙ h_{t-1} + b): independent units (Li et al., arXiv:1803.04831)."""

    name = "indrnn"
    recurrence = "diagonal"
    jacobian_structure = "diagonal"

    def step(self, x, R, b, state):
        (h,) = state
        return (F.relu(x[..., 0, :, :] + R[0] * h + b[0]),)


class LSTM(Cell):
    """torch.nn.LSTM's cell, gates in its order (i, f, g, o):
    c_t = σ(f) c_{t-1} + σ(i) tanh(g),  h_t = σ(o) tanh(c_t)."""

    name = "lstm"
    state_names = ("h", "c")
    input_gates = recurrent_gates = bias_gates = 4

    def step(self, x, R, b, state):
        h, c = state
        pre = x + recurrent(h, R) + b
        i, f, g, o = pre.unbind(-3)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class GRU(Cell):
    """torch.nn.GRU's cell, gates (r, z, n); biases (r, z, input n, recurrent n):
    n = tanh(x_n + b_in + σ(r) ⊙ (R_n h + b_hn)),  h_t = (1 − σ(z)) n + σ(z) h_{t-1}."""

    name = "gru"
    input_gates = recurrent_gates = 3
    bias_gates = 4

    def step(self, x, R, b, state):
        (h,) = state
        rec = recurrent(h, R)
        r = torch.sigmoid(x[..., 0, :, :] + rec[..., 0, :, :] + b[0])
        z = torch.sigmoid(x[..., 1, :, :] + rec[..., 1, :, :] + b[1])
        n = torch.tanh(x[..., 2, :, :] + b[2] + r * (rec[..., 2, :, :] + b[3]))
        return ((1 - z) * n + z * h,)


class MGU(Cell):
    """Minimal gated unit (Zhou et al., arXiv:1603.09420), gates (f, h̃):
    f = σ(x_f + R_f h + b_f),  h̃ = tanh(x_h + R_h (f ⊙ h) + b_h),  h_t = (1 − f) h + f h̃."""

    name = "mgu"
    input_gates = recurrent_gates = bias_gates = 2

    def step(self, x, R, b, state):
        (h,) = state
        f = torch.sigmoid(x[..., 0, :, :] + recurrent(h, R[:1])[..., 0, :, :] + b[0])
        candidate = torch.tanh(x[..., 1, :, :] + recurrent(f * h, R[1:])[..., 0, :, :] + b[1])
        return ((1 - f) * h + f * candidate,)


class RHN(Cell):
    """Recurrent highway network (Zilly et al., arXiv:1607.03474) with coupled carry gate;
    depth L = Gr / 2 micro-steps per token, the input enters the first one:
    s_l = tanh(x_H[l=1] + R_Hl s_{l-1} + b_Hl) ⊙ t_l + s_{l-1} ⊙ (1 − t_l),
    t_l = σ(x_T[l=1] + R_Tl s_{l-1} + b_Tl), s_0 = h_{t-1}, h_t = s_L.
    Gates are (H, T) in x and (H_1, T_1, …, H_L, T_L) in R and b."""

    name = "rhn"
    input_gates = 2

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


class SLSTM(Cell):
    """sLSTM (xLSTM, Beck et al., arXiv:2405.04517), gates (i, f, z, o), stabilised:
    m_t = max(log σ(f̃) + m_{t-1}, ĩ),  i = exp(ĩ − m_t),  f = exp(log σ(f̃) + m_{t-1} − m_t),
    c_t = f c + i tanh(z̃),  n_t = f n + i,  h_t = σ(õ) c_t / n_t.
    A zero normaliser marks an empty state (the start), whose m is taken from ĩ alone."""

    name = "slstm"
    state_names = ("h", "c", "n", "m")
    input_gates = recurrent_gates = bias_gates = 4

    def step(self, x, R, b, state):
        h, c, n, m = state
        pre = x + recurrent(h, R) + b
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


class ALRNN(Cell):
    """AL-RNN (Brenner et al., NeurIPS 2024): z_t = A ⊙ z_{t-1} + W φ*(z_{t-1}) + h + x_t,
    φ* = ReLU on the last P units of each head, identity on the others.
    R [1, H, Dh, Dh] is W; b [2, H, Dh] is (A, h)."""

    name = "alrnn"
    state_names = ("z",)
    bias_gates = 2

    def __init__(self, num_relu: int) -> None:
        if not isinstance(num_relu, int) or num_relu < 0:
            raise ValueError(f"num_relu must be a non-negative int; got {num_relu!r}")
        self.num_relu = num_relu

    def step(self, x, R, b, state):
        (z,) = state
        Dh = z.shape[-1]
        if self.num_relu > Dh:
            raise ValueError(f"num_relu = {self.num_relu} exceeds the head size Dh = {Dh}")
        linear, piecewise = z.split([Dh - self.num_relu, self.num_relu], dim=-1)
        phi = torch.cat([linear, F.relu(piecewise)], dim=-1)
        return (b[0] * z + recurrent(phi, R)[..., 0, :, :] + b[1] + x[..., 0, :, :],)

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
        # ∂h_t/∂h = (1 − z) + (ĥ − h) σ'(z) a_z + z tanh'(ĥ) a_h (r + h σ'(r) a_r)
        one_minus_z = 1 - z
        J = (candidate - h).mul_(z).mul_(one_minus_z).mul_(R[0]).add_(one_minus_z)
        inner = (r - r.square()).mul_(R[1]).mul_(h).add_(r)
        J.add_(candidate.square().neg_().add_(1).mul_(R[2]).mul_(z).mul_(inner))
        return (new,), [[J]]


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
        h, c = state
        (h_new, c_new), f, candidate, o, tanh_c = self._forward(x, R, b, state)
        # chain rule through f(h, c), c̃(h), c_t(f, c, c̃), o(h, c_t), h_t(o, c_t); units never mix
        df = f * (1 - f)
        dc_dh = df * R[0] * (c - candidate) + (1 - f) * (1 - candidate.square()) * R[1]
        dc_dc = f + df * R[3] * (c - candidate)
        do = o * (1 - o)
        dh_dc_new = do * R[4] * tanh_c + o * (1 - tanh_c.square())
        dh_dh = do * R[2] * tanh_c + dh_dc_new * dc_dh
        dh_dc = dh_dc_new * dc_dc
        return (h_new, c_new), [[dh_dh, dh_dc], [dc_dh, dc_dc]]


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
