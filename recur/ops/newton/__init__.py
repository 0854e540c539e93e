"""ParaRNN: Newton iterations whose linear systems are parallel scans.

`newton_solve(...)` returns `(h, final_state, NewtonInfo)`; `newton_rnn(...)` has the
RNN family's signature (it is `recur.ops.rnn.rnn(..., impl="newton")`). Cells: ParaGRU,
ParaLSTM, IndRNN, or any `recur.ops.rnn.Cell` with `jacobian_structure = "diagonal"`.
"""

from .scan import block_linear_recurrence, reverse_block_linear_recurrence
from .solve import NewtonFallbackWarning, NewtonInfo, newton_rnn, newton_solve

__all__ = [
    "NewtonFallbackWarning",
    "NewtonInfo",
    "block_linear_recurrence",
    "newton_rnn",
    "newton_solve",
    "reverse_block_linear_recurrence",
]
