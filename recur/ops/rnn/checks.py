"""Argument checks for the nonlinear RNN family (one place, so every form rejects the same inputs)."""

from __future__ import annotations

import torch

from ..common import state_dtype
from .cells import Cell, get_cell


def _tensor(name: str, x, dims: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.dim() != dims:
        raise ValueError(f"{name} must have shape {layout}; got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point; got {x.dtype}")


def _finite(name: str, x: torch.Tensor) -> None:
    # a NaN or inf would run through every later step (and stall a Newton solve): refuse it
    # here. One sum finds any (an overflowing sum only costs the exact check below).
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or inf (first at index {bad}); expected finite values")


def check_rnn_inputs(x_proj, R, b, cell, initial_state) -> tuple[Cell, torch.dtype]:
    """Validates the arguments of every RNN form; returns the cell and the state dtype."""
    cell = get_cell(cell)
    _tensor("x_proj", x_proj, 5, "[B, T, Gx, H, Dh]")
    B, T, Gx, H, Dh = x_proj.shape
    if Gx != cell.input_gates:
        raise ValueError(f"x_proj has {Gx} input gates (dim 2) but cell {cell!r} takes {cell.input_gates}")
    if cell.recurrence == "dense":
        _tensor("R", R, 4, "[Gr, H, Dh, Dh]")
        expected_R = [cell.expected_recurrent_gates(R), H, Dh, Dh]
    else:
        _tensor("R", R, 3, "[Gr, H, Dh] (diagonal recurrence)")
        expected_R = [cell.recurrent_gates, H, Dh]
    if list(R.shape) != expected_R:
        raise ValueError(f"R has shape {list(R.shape)}; expected {expected_R} for cell {cell!r} (H, Dh from x_proj)")
    _tensor("b", b, 3, "[Gb, H, Dh]")
    expected_b = [cell.expected_bias_gates(R), H, Dh]
    if list(b.shape) != expected_b:
        raise ValueError(f"b has shape {list(b.shape)}; expected {expected_b} for cell {cell!r}")
    if initial_state is not None:
        _tensor("initial_state", initial_state, 4, "[S, B, H, Dh]")
        expected = [cell.num_states, B, H, Dh]
        if list(initial_state.shape) != expected:
            raise ValueError(
                f"initial_state has shape {list(initial_state.shape)}; expected {expected} "
                f"(states {cell.state_names} of cell {cell!r})"
            )
    for name, x in (("R", R), ("b", b), ("initial_state", initial_state)):
        if x is not None and x.device != x_proj.device:
            raise ValueError(f"{name} is on {x.device} but x_proj is on {x_proj.device}; expected one device")
    for name, x in (("x_proj", x_proj), ("R", R), ("b", b), ("initial_state", initial_state)):
        if x is not None:
            _finite(name, x)
    return cell, state_dtype(x_proj, R, b, initial_state)


def initial_states(initial_state, cell: Cell, x_proj: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The S state components [B, H, Dh] in `dtype` (zeros when none is given)."""
    B, _, _, H, Dh = x_proj.shape
    if initial_state is None:
        return tuple(x_proj.new_zeros(B, H, Dh, dtype=dtype) for _ in range(cell.num_states))
    return tuple(initial_state.to(dtype).unbind(0))
