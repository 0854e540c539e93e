"""The grid family: pLSTM on 2-D grids (and, in `dag.py`, on any directed acyclic graph).

C^r = t_rl C^r_left + t_ru C^d_up + s_r k vᵀ, C^d = t_dl C^r_left + t_du C^d_up + s_d k vᵀ,
h = scale · (qᵀ (m_l C^r_left + m_u C^d_up) + d (q·k) v), per cell, states on the edges.

`grid(q, k, v, source_r=..., ..., impl=...)` runs the form `impl` names: "naive" (the
spec, a loop over cells) or "wavefront" (one anti-diagonal at a time, autograd). The main
inputs are cells [B, X, Y, H, ...], rows on dim 1 and columns on dim 2; the state is the
grid's boundary (`GridState`). `p_mode` and `d_mode` tie the gates as the paper's two
modes do; `naive_dag` and `levels_dag` run the same recurrence on a graph.
"""

from __future__ import annotations

import torch

from ..common.examples import RandomInputs, check_case
from ..family import Example, Family, Form, StateLayout, register_family
from .checks import check_grid_inputs
from .dag import grid_dag_inputs, grid_graph, levels_dag, naive_dag
from .modes import d_mode, p_mode
from .naive import GridState
from .naive import naive_grid as _spec
from .wavefront import wavefront_grid as _wavefront


def example_inputs(
    T: int, *, batch: int = 2, case: str = "P", dtype=torch.float64, device=None, seed: int = 0,
    width: int = 5, heads: int = 2, key_dim: int = 4, value_dim: int = 3,
) -> Example:
    """q, k [B, T, width, H, K], v [B, T, width, H, V] (T rows), the gates of the mode `case`
    names ("P", "D" with chirality L, or "general": four free transitions), a direct term
    and a random boundary state; every floating input requires grad."""
    draw = RandomInputs(seed, dtype, device)
    B, X, Y, H, K, V = batch, T, width, heads, key_dim, value_dim
    q, k, v = draw.normal(B, X, Y, H, K), draw.normal(B, X, Y, H, K), draw.normal(B, X, Y, H, V)

    def gate(low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return draw.uniform(B, X, Y, H, low=low, high=high, grad=False)

    modes = {
        "P": lambda: p_mode(gate(), gate(), gate(-1.0, 1.0), gate()),
        "D": lambda: d_mode(gate(), gate(), gate(-0.9, 0.9), gate(-0.9, 0.9), gate(-0.9, 0.9), gate(), gate()),
        # free transitions, kept small: the weight of a path is a product of them along it
        "general": lambda: {
            "source_r": gate(), "source_d": gate(), "mark_l": gate(), "mark_u": gate(),
            **{f"transition_{ab}": gate(-0.5, 0.5) for ab in ("rl", "ru", "dl", "du")},
        },
    }
    check_case(case, modes)
    # the tied gates as leaves of their own, so that tests differentiate each
    gates = {name: None if g is None else g.detach().clone().requires_grad_() for name, g in modes[case]().items()}
    kwargs = {
        **gates,
        "direct": draw.uniform(B, X, Y, H),
        "initial_state": GridState(draw.normal(B, Y, H, K, V), draw.normal(B, X, H, K, V)),
    }
    return Example((q, k, v), kwargs)


GRID = register_family(Family(
    name="grid",
    paper="pLSTM: parallelizable Linear Source Transition Mark networks (Pöppel et al., arXiv:2506.11997)",
    recurrence=(
        "pLSTM on a 2-D grid: C^r = t_rl C^r_left + t_ru C^d_up + s_r k vᵀ, "
        "C^d = t_dl C^r_left + t_du C^d_up + s_d k vᵀ, h = scale · (qᵀ(m_l C^r_left + m_u C^d_up) + d (q·k) v)"
    ),
    spec=_spec,
    forms={"wavefront": Form(_wavefront, summary="one anti-diagonal of cells at a time (X + Y - 1 steps)")},
    check=check_grid_inputs,
    state=StateLayout({"down": "[B, Y, H, K, V]", "right": "[B, X, H, K, V]"}, GridState),
    time_inputs=(
        "q", "k", "v", "source_r", "source_d", "transition_rl", "transition_ru", "transition_dl", "transition_du",
        "mark_l", "mark_u", "direct",
    ),
    example_inputs=example_inputs,
    cases=("P", "D", "general"),
    default="wavefront",
    layout="grid",
))

grid, naive_grid, wavefront_grid = GRID.functions("naive", "wavefront")

__all__ = [
    "GRID", "GridState", "d_mode", "grid", "grid_dag_inputs", "grid_graph", "levels_dag", "naive_dag", "naive_grid", "p_mode",
    "wavefront_grid",
]
