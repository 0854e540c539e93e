"""What every nonlinear cell is, and the pieces the cells share.

A cell maps the pre-projected input x_t, the recurrent weights R, the biases b and the
state s_{t-1} to s_t. Every cell reads its recurrence from the first state component h
(FlashRNN's convention), except AL-RNN whose only state is its latent z.

Shapes (leading dims `...` are [B] in the loops and [B, T] in the Newton solver):
    x      [..., Gx, H, Dh]   Gx input gates, H heads of Dh units
    R      [Gr, H, Dh, Dh]    one dense block per gate and head (H = 1: a dense matrix),
           or [Gr, H, Dh]     for cells with a diagonal recurrence
    b      [Gb, H, Dh]
    state  tuple of S tensors [..., H, Dh]; state[0] is the output h

A cell writes its step once, as `tape_step`, which also returns what its backward needs;
`step` is that without the tape. The sequential form's backward through time
(`recur.ops.rnn.sequential`) uses four methods:
    prepare(R) -> P                          R laid out once for the per-step products
    tape_step(x_t, P, b, s) -> (s_t, tape)   the step, plus what the backward needs of
                                             it (e.g. the gate values)
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

import functools

import torch

from ....registry import Registry

# the cells by name; a cell with options of its own (AL-RNN's number of ReLU units) is
# passed as an instance instead
CELLS: Registry[Cell] = Registry("cell")
# the cells passed as instances, and how
NEEDS_OPTIONS = {
    "alrnn": "its number of ReLU units: pass cell=ALRNN(num_relu=P)",
    "dendplrnn": "its number of bases: pass cell=DendPLRNN(num_bases=B)",
    "shplrnn": "its hidden width: pass cell=ShallowPLRNN(hidden=L)",
}


def resolve_cell(cell: str | Cell) -> Cell:
    """A cell by name ("lstm", "gru", ...) or a `Cell` instance (e.g. `ALRNN(num_relu=2)`)."""
    if isinstance(cell, Cell):
        return cell
    if cell in NEEDS_OPTIONS:
        raise ValueError(f"cell {cell!r} needs {NEEDS_OPTIONS[cell]}")
    if not isinstance(cell, str):
        raise TypeError(f"cell must be a name from CELLS or a Cell instance; got {type(cell).__name__}")
    return CELLS[cell]


class Recurrence:
    """Dense or head-wise R [G, H, Dh, Dh] laid out once, so that R h and Σ_g R_gᵀ d_g
    are one (batched over heads) matrix product per step; the einsum would permute R on
    every call. Leading dims of h and d are flattened into one."""

    def __init__(self, R: torch.Tensor) -> None:
        self.R = R
        self.G, self.H, self.Dh = R.shape[:3]
        # [H, Dh, G·Dh]: h [.., Dh] @ it gives every gate's R h
        self.forward_matrix = R.permute(1, 3, 0, 2).reshape(self.H, self.Dh, self.G * self.Dh)

    @functools.cached_property
    def backward_matrix(self) -> torch.Tensor:
        """[H, G·Dh, Dh]: the gates' d [.., G·Dh] @ it gives Σ_g R_gᵀ d_g."""
        return self.R.permute(1, 0, 2, 3).reshape(self.H, self.G * self.Dh, self.Dh)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """h [..., H, Dh] -> R h [..., G, H, Dh]."""
        G, H, Dh = self.G, self.H, self.Dh
        lead = h.shape[:-2]
        rows = h.reshape(-1, H, Dh)
        N = rows.shape[0]
        if H == 1:
            out = torch.mm(rows.reshape(N, Dh), self.forward_matrix[0]).view(N, G, 1, Dh)
        else:
            out = torch.bmm(rows.transpose(0, 1), self.forward_matrix).view(H, N, G, Dh).permute(1, 2, 0, 3)
        return out.reshape(*lead, G, H, Dh)

    def transposed(self, d: torch.Tensor) -> torch.Tensor:
        """d [..., G, H, Dh] -> Σ_g R_gᵀ d_g [..., H, Dh]."""
        G, H, Dh = self.G, self.H, self.Dh
        lead = d.shape[:-3]
        rows = d.reshape(-1, G, H, Dh)
        N = rows.shape[0]
        if H == 1:
            out = torch.mm(rows.reshape(N, G * Dh), self.backward_matrix[0]).view(N, 1, Dh)
        else:
            out = torch.bmm(rows.permute(2, 0, 1, 3).reshape(H, N, G * Dh), self.backward_matrix).transpose(0, 1)
        return out.reshape(*lead, H, Dh)

    def plus(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """x + R h for x [..., G, H, Dh] (one fused multiply-add with one head)."""
        if self.H == 1:
            N = h.numel() // self.Dh
            out = torch.addmm(x.reshape(N, -1), h.reshape(N, self.Dh), self.forward_matrix[0])
            return out.view(*h.shape[:-2], self.G, 1, self.Dh)
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


def weight_grad(d: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Σ_b,t d_g u^T per gate and head: d [B, T, G, H, Dh] (gradients of R u), u [B, T, H, Dh]
    (what R multiplied) -> [G, H, Dh, Dh]."""
    B, T, G, H, Dh = d.shape
    if H == 1:
        # one matrix product over all B·T rows (the einsum would copy d into its layout)
        return torch.mm(d.reshape(B * T, G * Dh).t(), u.reshape(B * T, Dh)).view(G, 1, Dh, Dh)
    return torch.einsum("btghe,bthd->ghed", d, u)


def sum_tb(x: torch.Tensor) -> torch.Tensor:
    """Sum over the leading batch and time axes."""
    return x.sum((0, 1))


# the per-step backward runs ~20 small elementwise ops, whose cost is mostly per call: a
# Python scalar in `1 - x` is wrapped into a tensor on every call, a cached one is not
_ONES: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def one(x: torch.Tensor) -> torch.Tensor:
    """A 0-d one of x's dtype and device (cached)."""
    key = (x.dtype, x.device)
    if key not in _ONES:
        _ONES[key] = torch.ones((), dtype=x.dtype, device=x.device)
    return _ONES[key]


def one_minus(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """1 − x, or 1 − x y."""
    return one(x) - x if y is None else torch.addcmul(one(x), x, y, value=-1)


def sigmoid_slope(s: torch.Tensor) -> torch.Tensor:
    """σ' = s (1 − s) from s = σ(·)."""
    return torch.addcmul(s, s, s, value=-1)


class Cell:
    """A recurrence s_t = f(s_{t-1}, x_t): its sizes and its step.

    Subclasses set the class attributes and implement `tape_step` (and `prepare` when R
    needs another layout than `Recurrence` or, for a diagonal recurrence, R itself). A
    cell whose Jacobian ∂s_t/∂s_{t-1} is diagonal per unit (an S×S block of diagonals for
    S states) sets `jacobian_structure = "diagonal"` and can be solved by Newton
    (`recur.ops.newton`). A cell that sets `hand_backward = True` implements
    `local_grads` and `param_grads` (module docstring); the sequential form uses them, and
    otherwise rebuilds blocks of steps through autograd in its backward.
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

    def weight_shapes(self, R: torch.Tensor, heads: int, head_dim: int) -> tuple[list[int], list[int]]:
        """The shapes R and b must have for `heads` heads of `head_dim` units (R as given,
        for cells whose number of gates R sets)."""
        recurrent = [self.expected_recurrent_gates(R), heads, head_dim]
        if self.recurrence == "dense":
            recurrent.append(head_dim)
        return recurrent, [self.expected_bias_gates(R), heads, head_dim]

    def prepare(self, R: torch.Tensor):
        """R laid out for `tape_step`: a `Recurrence` (dense R) or R itself (diagonal)."""
        return Recurrence(R) if self.recurrence == "dense" else R

    def tape_step(self, x, P, b, state: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], tuple]:
        """(s_t, tape): the step from the prepared R, and what the backward reads of it."""
        raise TypeError(f"{type(self).__name__} must define tape_step(x, P, b, state)")

    def step(self, x, R, b, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """s_t from s_{t-1}: `tape_step` without its tape."""
        return self.tape_step(x, self.prepare(R), b, state)[0]

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
