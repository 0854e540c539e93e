"""pLSTM on a 2-D grid, cell by cell: the executable spec of the family.

pLSTM: parallelizable Linear Source Transition Mark networks (Pöppel, Beck, Hochreiter et
al.; arXiv:2506.11997). States live on the edges of the grid: cell (i, j) receives C^r from
its left neighbour and C^d from the one above, and sends C^r right and C^d down:

    C^r_ij = t_rl · C^r_left + t_ru · C^d_up + s_r · k vᵀ
    C^d_ij = t_dl · C^r_left + t_du · C^d_up + s_d · k vᵀ
    h_ij   = scale · (qᵀ (m_l · C^r_left + m_u · C^d_up) + d · (q · k) v)

s are the sources, t the transitions (t_ab: to edge a from edge b), m the marks and d the
direct term, scalars per cell and head. The cell's own pair reaches its output only through
the direct term; its states carry it right and down. P-mode and D-mode are two ways of
tying these gates (`modes.py`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..common import state_dtype


class GridState(NamedTuple):
    """The states on a grid's boundary edges, batch-first. As an initial state: what enters
    at the top (`down`, one per column) and at the left (`right`, one per row); as a final
    state: what leaves at the bottom and at the right."""

    down: torch.Tensor
    right: torch.Tensor


def cells(x: torch.Tensor | None) -> list | None:
    """x [B, X, Y, ...] as nested lists x[i][j] [B, ...], sliced once: indexing a cell inside
    the loop would make backward quadratic in the number of cells."""
    return None if x is None else [row.unbind(1) for row in x.unbind(1)]


def naive_grid(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    source_r: torch.Tensor | None = None,
    source_d: torch.Tensor | None = None,
    transition_rl: torch.Tensor | None = None,
    transition_ru: torch.Tensor | None = None,
    transition_dl: torch.Tensor | None = None,
    transition_du: torch.Tensor | None = None,
    mark_l: torch.Tensor | None = None,
    mark_u: torch.Tensor | None = None,
    direct: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: GridState | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, GridState | None]:
    """pLSTM on a 2-D grid as a loop over cells, row by row (a topological order).

    The main inputs are cells, rows on dim 1 and columns on dim 2 (where sequence families
    have time on dim 1); information flows right and down, from the top-left corner.

    Args:
        q, k: queries and keys [B, X, Y, H, K] (X rows, Y columns, H heads).
        v: values [B, X, Y, H, V].
        source_r, source_d: sources into the right and down edge, [B, X, Y, H]; None is 1.
        transition_rl, transition_ru: to the right edge from the left one and from the one
            above, [B, X, Y, H]; None is 0 (that path is absent).
        transition_dl, transition_du: to the down edge from the left one and from the one
            above, [B, X, Y, H]; None is 0.
        mark_l, mark_u: marks of the edges from the left and from above, [B, X, Y, H];
            None is 1.
        direct: the direct term d, [B, X, Y, H]; None is 0 (no direct term).
        scale: output scale; K ** -0.5 when None.
        initial_state: `GridState(down [B, Y, H, K, V], right [B, X, H, K, V])`, the states
            entering at the top and at the left, or None for zeros.
        output_final_state: also return the states leaving at the bottom and at the right.
        cu_seqlens: must be None (grids are not packed).

    Returns:
        (h [B, X, Y, H, V] in v's dtype, `GridState(down [B, Y, H, K, V], right [B, X, H,
        K, V])` leaving at the bottom and right, or None).
    """
    B, X, Y, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    dtype = state_dtype(q, v)
    out_dtype, v_device = v.dtype, v.device
    if initial_state is None:
        zeros = q.new_zeros(B, H, K, V, dtype=dtype)
        down, right = [zeros] * Y, [zeros] * X
    else:
        down = list(initial_state.down.to(dtype).unbind(1))
        right = list(initial_state.right.to(dtype).unbind(1))
    q, k, v = cells(q.to(dtype)), cells(k.to(dtype)), cells(v.to(dtype))
    gates = {
        name: cells(None if g is None else g.to(dtype)[..., None, None])
        for name, g in (
            ("s_r", source_r), ("s_d", source_d), ("t_rl", transition_rl), ("t_ru", transition_ru),
            ("t_dl", transition_dl), ("t_du", transition_du), ("m_l", mark_l), ("m_u", mark_u), ("d", direct),
        )
    }

    def gate(name: str, i: int, j: int, absent: float):
        return absent if gates[name] is None else gates[name][i][j]

    def transfer(name: str, i: int, j: int, state: torch.Tensor):
        # an absent transition drops its path: 0 · state without the multiplication
        return 0 if gates[name] is None else gates[name][i][j] * state

    empty = torch.zeros(B, 0, H, V, dtype=dtype, device=v_device)
    rows = []
    for i in range(X):
        row = []
        for j in range(Y):
            # the states entering the cell: from the left (travelling right) and from above
            c_left, c_up = right[i], down[j]
            q_ij, k_ij, v_ij = q[i][j], k[i][j], v[i][j]
            # the cell's pair k vᵀ: [B, H, K, V]
            kv = k_ij[..., :, None] * v_ij[..., None, :]
            # mark: what of the incoming states the cell reads, [B, H, K, V]
            marked = gate("m_l", i, j, 1.0) * c_left + gate("m_u", i, j, 1.0) * c_up
            # output: the query reads the marked states, plus the direct term, [B, H, V]
            h = torch.einsum("bhk,bhkv->bhv", q_ij, marked)
            if gates["d"] is not None:
                h = h + gates["d"][i][j][..., 0] * (q_ij * k_ij).sum(-1, keepdim=True) * v_ij
            row.append(scale * h)
            # transition and source: the states leaving right and down, [B, H, K, V]
            right[i] = transfer("t_rl", i, j, c_left) + transfer("t_ru", i, j, c_up) + gate("s_r", i, j, 1.0) * kv
            down[j] = transfer("t_dl", i, j, c_left) + transfer("t_du", i, j, c_up) + gate("s_d", i, j, 1.0) * kv
        rows.append(torch.stack(row, dim=1) if row else empty)
    out = torch.stack(rows, dim=1) if rows else torch.zeros(B, 0, Y, H, V, dtype=dtype, device=v_device)
    edge = torch.zeros(B, 0, H, K, V, dtype=dtype, device=v_device)
    final = GridState(torch.stack(down, 1) if down else edge, torch.stack(right, 1) if right else edge)
    return out.to(out_dtype), final
