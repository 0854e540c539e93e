"""Benchmark cases of the grid family (pLSTM on 2-D grids): the cell loop, the anti-diagonal
wavefront form and the level-wise DAG form on the same grid laid out as a graph. No peer:
no library in the `bench` extra computes pLSTM."""

from __future__ import annotations

import torch

from ..ops.grid import GRID, grid_dag_inputs, levels_dag
from .ops import OpCase, register_op_bench

B, H, K, V = 1, 1, 16, 16
COMPUTES = "pLSTM P-mode"


@register_op_bench(
    "grid",
    f"T × T grids (T is the side: T² cells), B={B}, H={H}, K=V={K} (16-channel cells), the family's example "
    "inputs in P-mode with a direct term and a random boundary state. Rows: the cell loop (the spec), the "
    "wavefront form (2T - 1 anti-diagonals, the cells of each at once; what impl='auto' picks) and the "
    "level-wise DAG form on the grid laid out as a graph (its levels are the same anti-diagonals, but it "
    "gathers states by index). Memory grows with the number of cells: K·V per cell for the states.",
)
def grid_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    example = GRID.example_inputs(
        T, width=T, batch=B, case="P", dtype=dtype, device=device, heads=H, key_dim=K, value_dim=V,
    )
    leaves = list(example.leaves().values())

    def form(name: str) -> OpCase:
        fn = GRID.forms[name]
        return OpCase(name, lambda: fn(*example.args, **example.kwargs)[0], leaves, computes=COMPUTES)

    # the graph's gates are leaves of their own: laying the grid out is not part of the form
    args, kwargs = grid_dag_inputs(*example.args, **example.kwargs)
    args = tuple(x.detach().requires_grad_() for x in args)
    kwargs = {
        name: x.detach().requires_grad_() if isinstance(x, torch.Tensor) and x.is_floating_point() else x
        for name, x in kwargs.items()
    }
    dag_leaves = [*args, *(x for x in kwargs.values() if isinstance(x, torch.Tensor) and x.requires_grad)]
    dag = OpCase("levels (DAG)", lambda: levels_dag(*args, **kwargs)[0], dag_leaves, computes=COMPUTES)
    return [form("naive"), form("wavefront"), dag]
