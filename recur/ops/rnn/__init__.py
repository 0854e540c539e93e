"""The nonlinear RNN family: Elman, IndRNN, LSTM, GRU, MGU, RHN, sLSTM, AL-RNN, ParaGRU,
ParaLSTM, with dense or head-wise block-diagonal recurrence (FlashRNN layout).

Forms: `naive_rnn` (the spec: a loop through autograd), `sequential_rnn` (a loop with a
hand-written backward through time per cell; no autograd graph), `newton_rnn` (ParaRNN:
parallel-in-time Newton solves, for cells with a diagonal Jacobian; see
`recur.ops.newton`). `rnn(..., impl=...)` dispatches between them; "auto" is "sequential".
"""

from __future__ import annotations

import torch

from ..dispatch import dispatch
from .cells import (
    ALRNN,
    CELLS,
    GRU,
    LSTM,
    MGU,
    RHN,
    SLSTM,
    Cell,
    Elman,
    IndRNN,
    ParaGRU,
    ParaLSTM,
    get_cell,
)
from .naive import naive_rnn
from .sequential import sequential_rnn


def newton_rnn(
    x_proj: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    *,
    cell: str | Cell,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ParaRNN Newton solve with the default tolerance; same arguments as `naive_rnn`.

    Falls back to `sequential_rnn` with a `NewtonFallbackWarning` when Newton does not
    converge; `recur.ops.newton.newton_solve` gives the iteration count and residual.
    """
    from ..newton import newton_rnn as solve

    return solve(
        x_proj, R, b, cell=cell, initial_state=initial_state, output_final_state=output_final_state
    )


FORMS = {"naive": naive_rnn, "sequential": sequential_rnn, "newton": newton_rnn}


def rnn(
    x_proj: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    *,
    cell: str | Cell,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A nonlinear RNN; `impl` is "auto" (= "sequential"), "naive", "sequential" or "newton".

    See `naive_rnn` for the arguments.
    """
    form = dispatch("rnn", FORMS, impl, x_proj, default="sequential")
    return form(x_proj, R, b, cell=cell, initial_state=initial_state, output_final_state=output_final_state)


__all__ = [
    "ALRNN", "CELLS", "FORMS", "GRU", "LSTM", "MGU", "RHN", "SLSTM", "Cell", "Elman", "IndRNN",
    "ParaGRU", "ParaLSTM", "get_cell", "naive_rnn", "newton_rnn", "rnn", "sequential_rnn",
]
