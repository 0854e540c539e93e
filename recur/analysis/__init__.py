"""Analysis of trained recurrent models: the AL-RNN's symbolic codes and exact cycles
(`recur.analysis.alrnn`), the same exact cycles for the PLRNNs (`recur.analysis.plrnn`),
fixed and slow points of any RNN step
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
from .plrnn import PLRNNMap, piecewise_map

__all__ = [
    "Cycle",
    "FixedPoint",
    "PLRNNMap",
    "PiecewiseLinearMap",
    "StateMap",
    "TransitionGraph",
    "draw_transition_graph",
    "find_fixed_points",
    "piecewise_map",
    "region_name",
    "transition_graph",
]
