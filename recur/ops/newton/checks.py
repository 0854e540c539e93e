"""Argument checks for the newton family: the RNN family's, a cell whose Jacobian is
diagonal, and the solver's options."""

from __future__ import annotations

from ..common import state_dtype
from ..rnn.checks import check_rnn_inputs
from .info import NewtonInfo, default_tol

ON_FAILURE = ("warn", "fallback", "raise")


def check_newton_inputs(
    x_proj, R, b, *, cell, initial_state, cu_seqlens, max_iterations, tol, on_failure, compile, info, **_
) -> dict:
    """Validates the arguments of every newton form; returns the resolved cell and tol."""
    cell = check_rnn_inputs(x_proj, R, b, cell=cell, initial_state=initial_state, cu_seqlens=cu_seqlens)["cell"]
    if cell.jacobian_structure != "diagonal":
        raise ValueError(
            f"the newton family needs a cell whose Jacobian is diagonal per unit (paragru, paralstm, "
            f"indrnn, or a Cell with jacobian_structure='diagonal'); cell {cell!r} mixes units "
            "through R: use recur.ops.rnn.rnn (impl='sequential')"
        )
    if not isinstance(max_iterations, int) or isinstance(max_iterations, bool) or max_iterations < 0:
        raise ValueError(f"max_iterations must be a non-negative int; got {max_iterations!r}")
    if tol is not None and (not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol > 0):
        raise ValueError(f"tol must be a positive float or None; got {tol!r}")
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {list(ON_FAILURE)}; got {on_failure!r}")
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False; got {compile!r}")
    if info is not None and not isinstance(info, NewtonInfo):
        raise TypeError(f"info must be a NewtonInfo or None; got {type(info).__name__}")
    tol = default_tol(state_dtype(x_proj, R, b, initial_state)) if tol is None else float(tol)
    return {"cell": cell, "tol": tol}
