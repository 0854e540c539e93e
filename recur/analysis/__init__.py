"""Analysis of trained recurrent models: the AL-RNN's symbolic codes and exact cycles
(`recur.analysis.alrnn`), fixed and slow points of any RNN step
(`recur.analysis.fixed_points`)."""

from .alrnn import (
    Cycle,
    PiecewiseLinearMap,
    TransitionGraph,
    draw_transition_graph,
    region_name,
    transition_graph,
)
from .fixed_points import FixedPoint, StateMap, find_fixed_points

__all__ = [
    "Cycle",
    "FixedPoint",
    "PiecewiseLinearMap",
    "StateMap",
    "TransitionGraph",
    "draw_transition_graph",
    "find_fixed_points",
    "region_name",
    "transition_graph",
]
