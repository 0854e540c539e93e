"""pLSTM's two ways of tying the grid gates (arXiv:2506.11997, §"P-mode" and "D-mode").

With free transitions the weight of cell a at cell b sums over every monotone path between
them, a number that grows combinatorially with the distance, so the gates are tied:

- P-mode (propagation): a cell adds up what enters it and splits it between right and
  down by its orientation o in (0, 1): t_rl = t_ru = o · T and t_dl = t_du = 1 − o · T, so
  the two outgoing weights of each incoming edge sum to 1; the source likewise, s_r = o · S
  and s_d = 1 − s_r (the paper's parametrisation); one mark reads both edges. The total
  weight on an anti-diagonal stays bounded: a line (an arrow's direction) can travel far
  without blowing up or dying out.
- D-mode (diffusion): free straight transitions t_rl and t_du and one turning transition
  in one direction only (chirality "L": down-to-right, t_ru; "R": right-to-down, t_dl), so
  a path turns at most once and the number of paths grows linearly with the distance.

Each returns the gate keyword arguments of `grid(...)`.
"""

from __future__ import annotations

import torch


def p_mode(orientation: torch.Tensor, source: torch.Tensor, transition: torch.Tensor, mark: torch.Tensor) -> dict:
    """P-mode gates from the orientation o, source S, transition T and mark M [B, X, Y, H]."""
    o = orientation
    return {
        "source_r": o * source, "source_d": 1 - o * source,
        "transition_rl": o * transition, "transition_ru": o * transition,
        "transition_dl": 1 - o * transition, "transition_du": 1 - o * transition,
        "mark_l": mark, "mark_u": mark,
    }


def d_mode(
    source_r: torch.Tensor, source_d: torch.Tensor, straight_r: torch.Tensor, straight_d: torch.Tensor,
    turn: torch.Tensor, mark_l: torch.Tensor, mark_u: torch.Tensor, chirality: str = "L",
) -> dict:
    """D-mode gates: straight transitions right-to-right and down-to-down, one turning
    transition (`chirality` "L": from above to the right; "R": from the left to down)."""
    if chirality not in ("L", "R"):
        raise ValueError(f"chirality must be 'L' or 'R'; got {chirality!r}")
    return {
        "source_r": source_r, "source_d": source_d,
        "transition_rl": straight_r, "transition_du": straight_d,
        "transition_ru": turn if chirality == "L" else None,
        "transition_dl": turn if chirality == "R" else None,
        "mark_l": mark_l, "mark_u": mark_u,
    }
