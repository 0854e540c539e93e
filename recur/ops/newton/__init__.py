"""The newton family: ParaRNN, a nonlinear RNN whose Jacobian is diagonal solved for all
time steps at once by Newton's method, each Newton step a parallel linear scan.

`newton(x_proj, R, b, cell=..., impl=...)` runs the form `impl` names: "naive" (the spec,
the loop through autograd), "newton" (the Newton solve; what "auto" picks off CUDA),
"triton" (the same solve with each linear scan one Triton kernel; what "auto" picks on
CUDA) or "sequential" (the RNN family's loop with its backward through time written by
hand). Each is also a function of its own: `naive_newton`, `newton_solve`,
`triton_newton`, `sequential_newton`. Cells:
ParaGRU, ParaLSTM, IndRNN, or any `recur.ops.rnn.Cell` with
`jacobian_structure = "diagonal"`.
"""

from __future__ import annotations

import torch

from ..common.examples import check_case
from ..family import Example, Family, Form, register_family
from ..rnn import RNN
from ..rnn import example_inputs as rnn_example_inputs
from ..rnn.sequential import sequential_rnn as _sequential
from .checks import check_newton_inputs
from .info import NewtonFallbackWarning, NewtonInfo
from .naive import naive_newton as _spec
from .scan import block_linear_recurrence, reverse_block_linear_recurrence
from .solve import newton_rnn as _newton

# the cells of the RNN family whose Jacobian is diagonal
CASES = ("paragru", "paralstm", "indrnn")


def example_inputs(
    T: int, *, batch: int = 2, case: str = "paragru", dtype=torch.float64, device=None, seed: int = 0,
    heads: int = 2, head_dim: int = 4,
) -> Example:
    """The RNN family's example inputs for the diagonal-Jacobian cell `case` names
    (recurrent weights small enough that Newton converges)."""
    check_case(case, CASES)
    return rnn_example_inputs(
        T, batch=batch, case=case, dtype=dtype, device=device, seed=seed, heads=heads, head_dim=head_dim
    )


NEWTON = register_family(Family(
    name="newton",
    paper=(
        "ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models "
        "(Danieli et al., arXiv:2510.21450)"
    ),
    recurrence=(
        "s_t = f(s_{t-1}, x_t) for a cell with a diagonal Jacobian, solved for all t by Newton: "
        "δ_t = J_t δ_{t-1} + r_t, s ← s + δ"
    ),
    spec=_spec,
    forms={
        "newton": Form(_newton, packed=True, summary="Newton iterations, each a parallel linear scan"),
        "sequential": Form(_sequential, summary="the RNN family's loop with a hand-written backward"),
        # the linear solves in Triton; the rest of each Newton step in PyTorch
        "triton": Form(
            "recur.ops.newton.triton:triton_newton", triton=True, float64=False, packed=True,
            summary="Newton iterations, each linear scan one Triton kernel (forward and adjoint)",
        ),
    },
    check=check_newton_inputs,
    # the RNN family's recurrence, solved another way: its state and its time inputs
    state=RNN.state,
    time_inputs=RNN.time_inputs,
    example_inputs=example_inputs,
    cases=CASES,
    default="newton",
))

newton, naive_newton, newton_solve, sequential_newton, triton_newton = NEWTON.functions(
    "naive", "newton", "sequential", "triton"
)

__all__ = [
    "NEWTON", "NewtonFallbackWarning", "NewtonInfo", "block_linear_recurrence", "naive_newton", "newton",
    "newton_solve", "reverse_block_linear_recurrence", "sequential_newton", "triton_newton",
]
