"""Argument checks for the nonlinear RNN family (one place, so every form rejects the same inputs)."""

from __future__ import annotations

import torch

from .cells import GRU, LSTM, SLSTM, resolve_cell

# the cells the Triton kernels run, by exact type: a subclass may change the step, which the
# kernels would not follow
TRITON_CELLS = (LSTM, GRU, SLSTM)
# the widest head whose G blocks of D × D float32 weights (and, backwards, their gradients)
# fit one program's registers
TRITON_MAX_HEAD_DIM = 64


def check_tensor(name: str, x, layout: str) -> None:
    """A floating-point tensor with one dim per name in `layout` ("[B, T, Gx, H, Dh]")."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}; got {type(x).__name__}")
    if x.dim() != layout.count(",") + 1:
        raise ValueError(f"{name} must have shape {layout}; got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point; got {x.dtype}")


def check_finite(name: str, x: torch.Tensor) -> None:
    # a NaN or inf would run through every later step (and stall a Newton solve): refuse it
    # here. One sum finds any (an overflowing sum only costs the exact check below).
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or inf (first at index {bad}); expected finite values")


def check_rnn_inputs(x_proj, R, b, *, cell, initial_state, cu_seqlens, **_) -> dict:
    """Validates the arguments of every RNN form; returns the resolved cell."""
    cell = resolve_cell(cell)
    check_tensor("x_proj", x_proj, "[B, T, Gx, H, Dh]")
    B, T, Gx, H, Dh = x_proj.shape
    if Gx != cell.input_gates:
        raise ValueError(f"x_proj has {Gx} input gates (dim 2) but cell {cell!r} takes {cell.input_gates}")
    check_tensor("R", R, "[Gr, H, Dh, Dh]" if cell.recurrence == "dense" else "[Gr, H, Dh] (diagonal recurrence)")
    check_tensor("b", b, "[Gb, H, Dh]")
    expected_R, expected_b = cell.weight_shapes(R, H, Dh)
    if list(R.shape) != expected_R:
        raise ValueError(f"R has shape {list(R.shape)}; expected {expected_R} for cell {cell!r} (H, Dh from x_proj)")
    if list(b.shape) != expected_b:
        raise ValueError(f"b has shape {list(b.shape)}; expected {expected_b} for cell {cell!r}")
    if initial_state is not None:
        check_tensor("initial_state", initial_state, "[B, S, H, Dh]")
        n = B if cu_seqlens is None else cu_seqlens.numel() - 1
        expected = [n, cell.num_states, H, Dh]
        if list(initial_state.shape) != expected:
            raise ValueError(
                f"initial_state has shape {list(initial_state.shape)}; expected {expected} "
                f"({'sequences' if cu_seqlens is not None else 'batch'}, states {cell.state_names} of cell {cell!r})"
            )
    for name, x in (("R", R), ("b", b), ("initial_state", initial_state)):
        if x is not None and x.device != x_proj.device:
            raise ValueError(f"{name} is on {x.device} but x_proj is on {x_proj.device}; expected one device")
    for name, x in (("x_proj", x_proj), ("R", R), ("b", b), ("initial_state", initial_state)):
        if x is not None:
            check_finite(name, x)
    return {"cell": cell}


def triton_refusal(x_proj, *, cell, **_) -> str | None:
    """Why the Triton form cannot run these (checked) arguments; None when it can."""
    if type(cell) not in TRITON_CELLS:
        names = ", ".join(repr(c.name) for c in TRITON_CELLS)
        return f"the Triton RNN kernels run the cells {names} only; got cell {cell!r} (use impl='sequential')"
    if x_proj.shape[-1] > TRITON_MAX_HEAD_DIM:
        return (
            f"the Triton RNN kernels keep a head's recurrent blocks on chip, heads of up to "
            f"{TRITON_MAX_HEAD_DIM} units; got x_proj with heads of {x_proj.shape[-1]} (use impl='sequential')"
        )
    return None
