"""pLSTM on a 2-D grid by anti-diagonal wavefronts (pure PyTorch, any device, autograd).

pLSTM (arXiv:2506.11997) on a grid: cell (i, j) reads the states on its left and top edges
and writes those on its right and bottom edges, so every cell of an anti-diagonal i + j = s
depends only on the diagonal s - 1. The X + Y - 1 diagonals run one after the other, the
cells of each all at once: the same arithmetic as the cell loop (float64 results agree to
rounding), in X + Y - 1 steps instead of X · Y.

The inputs are skewed once, row i shifted right by i, so that diagonal s is column s of
the skewed grid. Between diagonals the horizontal states are kept per row and the vertical
ones per column: a diagonal's cells have consecutive rows and, in reverse, consecutive
columns, so each step reads two slices and writes them back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import state_dtype
from .naive import GridState


def skew(x: torch.Tensor) -> torch.Tensor:
    """x [B, X, Y, ...] -> [B, X, X + Y - 1, ...] with out[:, i, i + j] = x[:, i, j] and zeros
    elsewhere: a reshape of the grid padded by X columns, which shifts row i by i."""
    B, X, Y, *rest = x.shape
    padded = torch.cat([x, x.new_zeros(B, X, X, *rest)], dim=2)
    return padded.reshape(B, X * (X + Y), *rest)[:, : X * (X + Y - 1)].reshape(B, X, X + Y - 1, *rest)


def unskew(x: torch.Tensor, Y: int) -> torch.Tensor:
    """The inverse of `skew`: x [B, X, X + Y - 1, ...] -> [B, X, Y, ...]."""
    B, X, S, *rest = x.shape
    flat = torch.cat([x.reshape(B, X * S, *rest), x.new_zeros(B, X, *rest)], dim=1)
    return flat.reshape(B, X, S + 1, *rest)[:, :, :Y]


def wavefront_grid(
    q, k, v, *, source_r, source_d, transition_rl, transition_ru, transition_dl, transition_du, mark_l, mark_u,
    direct, scale, initial_state,
):
    """pLSTM on a grid, one anti-diagonal at a time; the arguments of `naive_grid`, checked."""
    B, X, Y, H, K = q.shape
    V = v.shape[-1]
    dtype = state_dtype(q, v)
    out_dtype = v.dtype
    if initial_state is None:
        down = q.new_zeros(B, Y, H, K, V, dtype=dtype)
        right = q.new_zeros(B, X, H, K, V, dtype=dtype)
    else:
        down, right = initial_state.down.to(dtype), initial_state.right.to(dtype)
    # per diagonal s, every row's cell (i, s - i): [B, X, ...] (zeros where there is none)
    q, k, v = (skew(x.to(dtype)).unbind(2) for x in (q, k, v))
    gates = {
        name: None if g is None else skew(g.to(dtype)[..., None, None]).unbind(2)
        for name, g in (
            ("s_r", source_r), ("s_d", source_d), ("t_rl", transition_rl), ("t_ru", transition_ru),
            ("t_dl", transition_dl), ("t_du", transition_du), ("m_l", mark_l), ("m_u", mark_u), ("d", direct),
        )
    }
    outputs = []
    for s in range(X + Y - 1):
        # the diagonal's rows i0..i1; its columns run from s - i0 down to s - i1
        i0, i1 = max(0, s - Y + 1), min(X - 1, s)
        rows = slice(i0, i1 + 1)

        def at(name: str, absent: float, s=s, rows=rows):
            return absent if gates[name] is None else gates[name][s][:, rows]

        # incoming states, [B, n, H, K, V]; copies, so that backward keeps only these cells
        c_left = right[:, rows].clone()
        c_up = down[:, s - i1 : s - i0 + 1].flip(1)
        q_s, k_s, v_s = q[s][:, rows], k[s][:, rows], v[s][:, rows]
        kv = k_s[..., :, None] * v_s[..., None, :]
        marked = at("m_l", 1.0) * c_left + at("m_u", 1.0) * c_up
        h = torch.einsum("bnhk,bnhkv->bnhv", q_s, marked)
        if gates["d"] is not None:
            h = h + at("d", 0.0)[..., 0] * (q_s * k_s).sum(-1, keepdim=True) * v_s
        outputs.append(F.pad(scale * h, (0, 0, 0, 0, i0, X - 1 - i1)))
        new_right = at("s_r", 1.0) * kv
        new_down = at("s_d", 1.0) * kv
        for name, state, into in (("t_rl", c_left, "r"), ("t_ru", c_up, "r"), ("t_dl", c_left, "d"), ("t_du", c_up, "d")):
            if gates[name] is not None:
                if into == "r":
                    new_right = new_right + at(name, 0.0) * state
                else:
                    new_down = new_down + at(name, 0.0) * state
        right = torch.cat([right[:, :i0], new_right, right[:, i1 + 1 :]], dim=1)
        down = torch.cat([down[:, : s - i1], new_down.flip(1), down[:, s - i0 + 1 :]], dim=1)
    out = unskew(torch.stack(outputs, dim=2), Y)
    return out.to(out_dtype), GridState(down, right)
