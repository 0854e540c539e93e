"""ParaRNN: a nonlinear RNN solved for all time steps at once by Newton's method.

ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models
(Danieli, Rodríguez, Sarabia, Suau, Zappella; arXiv:2510.21450):

    F_t(h) = h_t − f(h_{t-1}, x_t) = 0 for all t;   δ_t = J_t δ_{t-1} + r_t,   h ← h + δ

with r_t = f(h_{t-1}, x_t) − h_t and J_t = ∂f/∂h at h_{t-1}. Each Newton step is one
linear recurrence, solved by a log-depth parallel scan; for cells whose Jacobian is
diagonal per unit (an S×S block for S states) that scan is cheap. The backward needs no
Newton: the adjoint λ_t = ∂L/∂h_t + J_{t+1}ᵀ λ_{t+1} is linear, one reverse scan, and the
parameter and input gradients are one batched vector-Jacobian product of the step.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field

import torch

from ..rnn.cells import Cell
from ..rnn.checks import check_rnn_inputs, initial_states
from .scan import chunked_block_recurrence, reverse_block_linear_recurrence


class NewtonFallbackWarning(RuntimeWarning):
    """Newton did not converge and the sequential loop computed the result instead.
    `warnings.simplefilter("error", NewtonFallbackWarning)` turns it into an error."""


@dataclass
class NewtonInfo:
    """What a Newton solve did: linear solves run, the residual after each, and whether
    it converged or fell back to the sequential loop."""

    iterations: int = 0
    residual: float = float("nan")
    residuals: list[float] = field(default_factory=list)
    converged: bool = False
    fell_back: bool = False
    tol: float = 0.0
    max_iterations: int = 0


def default_tol(dtype: torch.dtype) -> float:
    # relative to 1 + max|h|: a few hundred ulps of the state dtype
    return 1e-12 if dtype == torch.float64 else 1e-5


def _previous(H: tuple[torch.Tensor, ...], start: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """[s_0, h_1, ..., h_{T-1}] per component: the state each step reads, [B, T, H, Dh]."""
    return tuple(torch.cat([s0.unsqueeze(1), h[:, :-1]], dim=1) for s0, h in zip(start, H, strict=True))


def _newton_step(cell: Cell, x, R, b, H, start):
    """r = f(h_{t-1}, x_t) − h_t, the Jacobians at h_{t-1}, and the residual
    max|r| / (1 + max|h|) over every state component (a 0-d tensor)."""
    F, J = cell.step_and_jacobian(x, R, b, _previous(H, start))
    r = [f - h for f, h in zip(F, H, strict=True)]
    scale = 1 + torch.stack([h.abs().amax() for h in H]).amax()
    return r, J, torch.stack([v.abs().amax() for v in r]).amax() / scale


class _Kernels:
    """The whole-sequence work of a Newton solve: the step, a Newton step (the step with
    its Jacobian and the residual), the chunked scans, and the step's vector-Jacobian
    product. With `compile=True` each is one `torch.compile`d function (a few fused loops
    instead of ~20 passes over memory), built on first use and kept per cell; if
    compiling fails, the eager functions run instead, with a warning."""

    _compiled: dict[tuple[int, str], tuple[weakref.ref, object]] = {}

    def __init__(self, cell: Cell, compile: bool) -> None:
        self.cell, self.compile = cell, compile

    def _eager(self, kind: str):
        cell = self.cell
        if kind == "step":
            return cell.step
        if kind == "step_and_jacobian":
            return cell.step_and_jacobian
        if kind == "newton_step":
            return lambda *args: _newton_step(cell, *args)
        if kind == "scan":
            return chunked_block_recurrence
        if kind == "reverse_scan":
            return reverse_block_linear_recurrence

        def vjp(x, R, b, state, cotangent):
            _, pull = torch.func.vjp(lambda x, R, b, *state: cell.step(x, R, b, state), x, R, b, *state)
            return pull(tuple(cotangent))

        return vjp

    def __call__(self, kind: str, *args):
        if not self.compile:
            return self._eager(kind)(*args)
        # keyed by the cell object; the weak reference tells a new cell at a reused id apart
        key = (id(self.cell), kind)
        owner, fn = self._compiled.get(key, (None, None))
        if owner is None or owner() is not self.cell:
            fn = torch.compile(self._eager(kind), dynamic=False)
            self._compiled[key] = (weakref.ref(self.cell), fn)
        try:
            return fn(*args)
        except Exception as error:  # noqa: BLE001 - a compiler failure of any kind: run eagerly
            warnings.warn(
                f"torch.compile failed for cell {self.cell!r} ({type(error).__name__}: {error}); "
                "running the eager functions", RuntimeWarning, stacklevel=3,
            )
            eager = self._eager(kind)
            self._compiled[key] = (weakref.ref(self.cell), eager)
            return eager(*args)


def _solve(kernels, x, R, b, start, max_iterations, tol, info):
    """The states H (S tensors [B, T, H, Dh]) and the Jacobians at them (None after a
    fallback), by Newton, else by the loop."""
    cell = kernels.cell
    # h^(0)_t = f(0, x_t); the first step reads the true initial state
    guess = tuple(torch.zeros_like(x[:, :, 0]) for _ in start)
    guess = tuple(torch.cat([s0.unsqueeze(1), g[:, 1:]], dim=1) for s0, g in zip(start, guess, strict=True))
    H = kernels("step", x, R, b, guess)
    while True:
        r, J, residual = kernels("newton_step", x, R, b, H, start)
        residual = float(residual)
        info.residuals.append(residual)
        info.residual = residual
        if residual <= tol:
            info.converged = True
            # J is already at the solution: the backward reuses it
            return H, J
        if info.iterations >= max_iterations or residual != residual or residual == float("inf"):
            break
        delta = kernels("scan", J, r)
        H = tuple(h.add_(d) for h, d in zip(H, delta, strict=True))
        info.iterations += 1
    info.fell_back = True
    state, outputs = start, []
    for x_t in x.unbind(1):
        state = cell.step(x_t, R, b, state)
        outputs.append(state)
    return tuple(torch.stack(component, dim=1) for component in zip(*outputs, strict=True)), None


class _NewtonRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernels, max_iterations, tol, info, x, R, b, *start):
        with torch.no_grad():
            H, J = _solve(kernels, x, R, b, start, max_iterations, tol, info)
        ctx.kernels = kernels
        ctx.jacobians = J
        ctx.save_for_backward(x, R, b, *start, *H)
        return (H[0], *(h[:, -1] for h in H))

    @staticmethod
    def backward(ctx, grad_h, *grad_final):
        kernels = ctx.kernels
        S = kernels.cell.num_states
        x, R, b, *rest = ctx.saved_tensors
        start, H = tuple(rest[:S]), tuple(rest[S:])
        previous = _previous(H, start)
        # ∂L/∂h_t from outside: the outputs (h only) and the final state (every component)
        g = [torch.zeros_like(h) for h in H]
        if grad_h is not None:
            g[0] = g[0] + grad_h
        for s, gf in enumerate(grad_final):
            if gf is not None:
                g[s][:, -1] += gf
        with torch.no_grad():
            J = ctx.jacobians
            if J is None:
                _, J = kernels("step_and_jacobian", x, R, b, previous)
            adjoint = kernels("reverse_scan", J, g)
            # one vector-Jacobian product of the step for all t at once
            got = kernels("vjp", x, R, b, previous, adjoint)
        grad_start = tuple(d[:, 0] for d in got[3:])
        return (None, None, None, None, got[0], got[1], got[2], *grad_start)


def newton_solve(
    x_proj: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    *,
    cell: str | Cell,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    max_iterations: int = 32,
    tol: float | None = None,
    on_failure: str = "warn",
    compile: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, NewtonInfo]:
    """ParaRNN: solve the recurrence of a diagonal-Jacobian cell for all t by Newton.

    Arguments as `recur.ops.rnn.naive_rnn`, plus:
        max_iterations: the most Newton steps (each one linear scan); T steps are always
            exact, since step k fixes h_1..h_k.
        tol: stop when max|f(h_{t-1}, x_t) − h_t| <= tol · (1 + max|h|); default 1e-12 in
            float64, 1e-5 in float32.
        on_failure: when the residual does not reach tol (or is not finite) after
            max_iterations, the sequential loop computes the states instead and
            "warn" issues a `NewtonFallbackWarning`, "fallback" only records it in the
            info, "raise" raises a RuntimeError.
        compile: run the cell's whole-sequence evaluations (the step, the step with its
            Jacobian, and the backward's vector-Jacobian product) through
            `torch.compile`, each as one fused loop. The first call with a new shape
            compiles (seconds); later calls are several times faster
            (`benchmarks/cpu-ops.md`).

    Returns:
        (h [B, T, H, Dh], final state [S, B, H, Dh] or None, NewtonInfo).
    """
    cell, dtype = check_rnn_inputs(x_proj, R, b, cell, initial_state)
    if cell.jacobian_structure != "diagonal":
        raise ValueError(
            f"impl='newton' needs a cell whose Jacobian is diagonal per unit (paragru, paralstm, "
            f"indrnn, or a Cell with jacobian_structure='diagonal'); cell {cell!r} mixes units "
            "through R: use impl='sequential'"
        )
    if on_failure not in ("warn", "fallback", "raise"):
        raise ValueError(f"on_failure must be 'warn', 'fallback' or 'raise'; got {on_failure!r}")
    if not isinstance(max_iterations, int) or max_iterations < 0:
        raise ValueError(f"max_iterations must be a non-negative int; got {max_iterations!r}")
    tol = default_tol(dtype) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol}")
    info = NewtonInfo(tol=tol, max_iterations=max_iterations)
    B, T, _, H, Dh = x_proj.shape
    start = initial_states(initial_state, cell, x_proj, dtype)
    if T == 0:
        info.converged, info.residual = True, 0.0
        return x_proj.new_zeros(B, 0, H, Dh), (torch.stack(start) if output_final_state else None), info
    kernels = _Kernels(cell, compile)
    h, *final = _NewtonRNN.apply(kernels, max_iterations, tol, info, x_proj.to(dtype), R.to(dtype), b.to(dtype), *start)
    if info.fell_back:
        message = (
            f"Newton did not converge for cell {cell!r}: residual {info.residual:.3e} > tol {tol:.1e} "
            f"after {info.iterations} iterations; the sequential loop computed the result"
        )
        if on_failure == "raise":
            raise RuntimeError(message)
        if on_failure == "warn":
            warnings.warn(message, NewtonFallbackWarning, stacklevel=2)
    return h.to(x_proj.dtype), (torch.stack(final) if output_final_state else None), info


def newton_rnn(
    x_proj: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    *,
    cell: str | Cell,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`newton_solve` with its defaults, in the family's signature (warns on fallback)."""
    h, final, _ = newton_solve(
        x_proj, R, b, cell=cell, initial_state=initial_state, output_final_state=output_final_state
    )
    return h, final
