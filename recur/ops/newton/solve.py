"""ParaRNN: a nonlinear RNN solved for all time steps at once by Newton's method.

ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models
(Danieli, Rodríguez, Sarabia, Suau, Zappella; arXiv:2510.21450):

    F_t(s) = s_t − f(s_{t-1}, x_t) = 0 for all t;   δ_t = J_t δ_{t-1} + r_t,   s ← s + δ

with r_t = f(s_{t-1}, x_t) − s_t and J_t = ∂f/∂s at s_{t-1}. Each Newton step is one
linear recurrence, solved by a parallel scan; for cells whose Jacobian is diagonal per
unit (an S×S block for S states) that scan is cheap. The backward needs no Newton: the
adjoint λ_t = ∂L/∂s_t + J_{t+1}ᵀ λ_{t+1} is linear, one reverse scan, and the parameter
and input gradients are one batched vector-Jacobian product of the step.

A packed batch (`cu_seqlens`) is one system: where a sequence begins, the step reads that
sequence's initial state, and J_t is zero there, so that neither the Newton steps nor the
adjoint cross from one sequence into the next.

Every tensor stays on the inputs' device. The host waits for the device once per Newton
iteration, to read the residual that the stopping rule compares with tol; the rest of an
iteration (the step and its Jacobians, the scan, the update) and the whole backward are
queued without waiting. Per call, a packed batch's offsets are read once, and a fallback
to the loop reads where sequences begin. Under torch.compile the residual's read breaks
the graph, so `compile=True` compiles each piece of an iteration on its own instead; the
Triton scans launch their own kernels between those pieces.
"""

from __future__ import annotations

import warnings
import weakref

import torch

from ..common import state_dtype
from ..rnn.cells import Cell
from .info import NewtonFallbackWarning, NewtonInfo
from .scan import chunked_block_recurrence, reverse_block_linear_recurrence


class Sequences:
    """Where the sequences of a call begin and end on the time axis: every batch row at
    0 and T − 1, or, for a packed batch (a batch of one), at its offsets. `live` are the
    sequences with at least one step; `starts` and `ends` their first and last steps."""

    def __init__(self, cu_seqlens: torch.Tensor | None, device: torch.device) -> None:
        self.packed = cu_seqlens is not None
        self.live = self.starts = self.ends = None
        if self.packed:
            bounds = cu_seqlens.tolist()
            live = [n for n in range(len(bounds) - 1) if bounds[n + 1] > bounds[n]]
            index = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
            self.live = index(live)
            self.starts = index([bounds[n] for n in live])
            self.ends = index([bounds[n + 1] - 1 for n in live])

    def previous(self, states, start):
        """The state each step reads: s_{t-1}, or the sequence's initial state where one
        begins; [B, T, H, Dh] per component."""
        return _previous(states, start, self.starts, self.live)

    def cut(self, J) -> None:
        """J_t = 0 where a sequence begins (in place): no coupling to the one before."""
        if self.packed:
            for row in J:
                for block in row:
                    block[:, self.starts] = 0

    def finals(self, states, start):
        """Each sequence's final state: its last step's, or its initial one if it has none."""
        if not self.packed:
            return tuple(s[:, -1] for s in states)
        finals = []
        for s, s0 in zip(states, start, strict=True):
            final = s0.clone()
            final[self.live] = s[0, self.ends]
            finals.append(final)
        return tuple(finals)


def _previous(states, start, starts, live):
    if starts is None:
        return tuple(torch.cat([s0.unsqueeze(1), s[:, :-1]], dim=1) for s0, s in zip(start, states, strict=True))
    previous = []
    for s0, s in zip(start, states, strict=True):
        shifted = torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1]], dim=1)
        shifted[0, starts] = s0[live]
        previous.append(shifted)
    return tuple(previous)


def _newton_step(cell: Cell, x, R, b, states, start, starts, live):
    """r = f(s_{t-1}, x_t) − s_t, the Jacobians at s_{t-1}, and the residual
    max|r| / (1 + max|s|) over every state component (a 0-d tensor)."""
    F, J = cell.step_and_jacobian(x, R, b, _previous(states, start, starts, live))
    r = [f - s for f, s in zip(F, states, strict=True)]
    scale = 1 + torch.stack([s.abs().amax() for s in states]).amax()
    return r, J, torch.stack([v.abs().amax() for v in r]).amax() / scale


class _Kernels:
    """The whole-sequence work of a Newton solve: the step, a Newton step (the step with
    its Jacobian and the residual), the chunked scans, and the step's vector-Jacobian
    product. With `compile=True` each is one `torch.compile`d function (a few fused loops
    instead of ~20 passes over memory), built on first use and kept per cell; if
    compiling fails, the eager functions run instead, with a warning. `scans` replaces
    the two scans ("scan", "reverse_scan") by functions of the same arguments that
    launch their own kernels (the Triton ones), which run as they are, never compiled."""

    _compiled: dict[tuple[int, str], tuple[weakref.ref, object]] = {}

    def __init__(self, cell: Cell, compile: bool, scans: dict | None = None) -> None:
        self.cell, self.compile, self.scans = cell, compile, scans or {}

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
        if kind in self.scans:
            return self.scans[kind](*args)
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


def _solve(kernels, sequences, x, R, b, start, max_iterations, tol, info):
    """The states (S tensors [B, T, H, Dh]) and the Jacobians at them (None after a
    fallback), by Newton, else by the loop."""
    # s^(0)_t = f(0, x_t), except where a sequence begins: there the step reads its initial state
    zeros = tuple(torch.zeros_like(x[:, :, 0]) for _ in start)
    states = kernels("step", x, R, b, sequences.previous(zeros, start))
    while True:
        r, J, residual = kernels("newton_step", x, R, b, states, start, sequences.starts, sequences.live)
        residual = float(residual)
        info.residuals.append(residual)
        info.residual = residual
        if residual <= tol:
            info.converged = True
            # J is already at the solution: the backward reuses it
            sequences.cut(J)
            return states, J
        if info.iterations >= max_iterations or residual != residual or residual == float("inf"):
            break
        sequences.cut(J)
        delta = kernels("scan", J, r)
        states = tuple(s.add_(d) for s, d in zip(states, delta, strict=True))
        info.iterations += 1
    info.fell_back = True
    return _loop(kernels.cell, sequences, x, R, b, start), None


def _loop(cell: Cell, sequences: Sequences, x, R, b, start):
    """The states by the sequential loop (the fallback)."""
    begins = dict(zip(sequences.starts.tolist(), sequences.live.tolist(), strict=True)) if sequences.packed else {}
    state, outputs = start, []
    prepared = cell.prepare(R)
    for t, x_t in enumerate(x.unbind(1)):
        if t in begins:
            state = tuple(s0[begins[t] : begins[t] + 1] for s0 in start)
        state, _ = cell.tape_step(x_t, prepared, b, state)
        outputs.append(state)
    return tuple(torch.stack(component, dim=1) for component in zip(*outputs, strict=True))


class _NewtonRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernels, sequences, max_iterations, tol, info, x, R, b, *start):
        with torch.no_grad():
            states, J = _solve(kernels, sequences, x, R, b, start, max_iterations, tol, info)
        ctx.kernels, ctx.sequences, ctx.jacobians = kernels, sequences, J
        ctx.save_for_backward(x, R, b, *start, *states)
        return (states[0], *sequences.finals(states, start))

    @staticmethod
    def backward(ctx, grad_h, *grad_final):
        kernels, sequences = ctx.kernels, ctx.sequences
        S = kernels.cell.num_states
        x, R, b, *rest = ctx.saved_tensors
        start, states = tuple(rest[:S]), tuple(rest[S:])
        previous = sequences.previous(states, start)
        # ∂L/∂s_t from outside: the outputs (h only) and the final states (every component)
        g = [torch.zeros_like(s) for s in states]
        if grad_h is not None:
            g[0] = g[0] + grad_h
        # a sequence without steps passes its initial state through
        grad_start = [torch.zeros_like(s0) for s0 in start]
        for k, gf in enumerate(grad_final):
            if gf is None:
                continue
            if sequences.packed:
                g[k][0, sequences.ends] += gf[sequences.live]
                grad_start[k] = gf.clone()
                grad_start[k][sequences.live] = 0
            else:
                g[k][:, -1] += gf
        with torch.no_grad():
            J = ctx.jacobians
            if J is None:
                _, J = kernels("step_and_jacobian", x, R, b, previous)
                sequences.cut(J)
            adjoint = kernels("reverse_scan", J, g)
            # one vector-Jacobian product of the step for all t at once
            got = kernels("vjp", x, R, b, previous, adjoint)
        for k, d in enumerate(got[3:]):
            if sequences.packed:
                grad_start[k][sequences.live] += d[0, sequences.starts]
            else:
                grad_start[k] = d[:, 0]
        return (None, None, None, None, None, got[0], got[1], got[2], *grad_start)


def newton_rnn(x_proj, R, b, *, cell, initial_state, cu_seqlens, max_iterations, tol, on_failure, compile, info):
    """ParaRNN's Newton solve; the arguments of `naive_newton`, already checked."""
    return newton_with_scans(
        x_proj, R, b, cell=cell, initial_state=initial_state, cu_seqlens=cu_seqlens, max_iterations=max_iterations,
        tol=tol, on_failure=on_failure, compile=compile, info=info, scans=None,
    )


def newton_with_scans(x_proj, R, b, *, cell, initial_state, cu_seqlens, max_iterations, tol, on_failure, compile, info, scans):
    """The Newton solve with the PyTorch scans of scan.py, or those `scans` names
    ({"scan": ..., "reverse_scan": ...}, see _Kernels)."""
    B, _, _, H, Dh = x_proj.shape
    dtype = state_dtype(x_proj, R, b, initial_state)
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is None:
        start = tuple(x_proj.new_zeros(N, H, Dh, dtype=dtype) for _ in cell.state_names)
    else:
        start = initial_state.to(dtype).unbind(1)
    info = NewtonInfo() if info is None else info
    info.reset(tol, max_iterations)
    sequences = Sequences(cu_seqlens, x_proj.device)
    kernels = _Kernels(cell, compile, scans)
    inputs = (x_proj.to(dtype), R.to(dtype), b.to(dtype), *start)
    h, *final = _NewtonRNN.apply(kernels, sequences, max_iterations, tol, info, *inputs)
    if info.fell_back:
        message = (
            f"Newton did not converge for cell {cell!r}: residual {info.residual:.3e} > tol {tol:.1e} "
            f"after {info.iterations} iterations; the sequential loop computed the result"
        )
        if on_failure == "raise":
            raise RuntimeError(message)
        if on_failure == "warn":
            warnings.warn(message, NewtonFallbackWarning, stacklevel=2)
    return h.to(x_proj.dtype), torch.stack(final, dim=1)
