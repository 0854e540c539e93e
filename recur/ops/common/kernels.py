"""Triton pieces shared by the families' chunkwise kernels (imported only where Triton is)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def sequence_chunks(sh, cu_ptr, NC, H: tl.constexpr, VARLEN: tl.constexpr):
    """For the program of one sequence and head `sh` (= sequence · H + head) of a walk over
    chunks: (batch row, head, first chunk, number of chunks). With VARLEN the sequences of
    a ChunkLayout share batch row 0 and take chunks cu[seq] to cu[seq + 1]; otherwise
    sequence b is batch row b with all NC chunks."""
    seq, h = (sh // H).to(tl.int64), sh % H
    if VARLEN:
        first = tl.load(cu_ptr + seq)
        return seq * 0, h, first, tl.load(cu_ptr + seq + 1) - first
    else:
        return seq, h, 0, NC


@triton.jit
def load_rows(ptr, b, h, rows, cols, T, H: tl.constexpr, X: tl.constexpr):
    """Rows `rows` [R] and columns `cols` [BX] of head h of batch row b of an input
    [B, T, H, X], in its dtype, zeros outside."""
    offsets = ((b * T + rows) * H + h)[:, None] * X + cols[None, :]
    return tl.load(ptr + offsets, mask=(rows[:, None] < T) & (cols[None, :] < X), other=0.0)


@triton.jit
def store_rows(ptr, x, b, h, rows, cols, T, H: tl.constexpr, X: tl.constexpr):
    """x [R, BX] into rows `rows` and columns `cols` of head h of batch row b of [B, T, H, X]."""
    offsets = ((b * T + rows) * H + h)[:, None] * X + cols[None, :]
    tl.store(ptr + offsets, x.to(ptr.dtype.element_ty), mask=(rows[:, None] < T) & (cols[None, :] < X))


@triton.jit
def state_tile_or_zeros(ptr, row, ks, vs, K: tl.constexpr, V: tl.constexpr, GIVEN: tl.constexpr):
    """Rows `ks` and columns `vs` of state `row` of [N, K, V] as float32, zeros outside;
    all zeros when not GIVEN (a walk over chunks starting without an initial state)."""
    if GIVEN:
        offsets = row.to(tl.int64) * K * V + ks[:, None] * V + vs[None, :]
        return tl.load(ptr + offsets, mask=(ks[:, None] < K) & (vs[None, :] < V), other=0.0).to(tl.float32)
    else:
        return tl.full([ks.shape[0], vs.shape[0]], 0.0, tl.float32)


# Sums of the gradient of one log decay per head, route by route.
# (Triton's adder through tl.reduce / tl.associative_scan rather than tl.sum / tl.cumsum:
# see the note on `_add` in recur/ops/gla/triton.py.)
_add = tl.standard._sum_combine


@triton.jit
def straddling_pairs(P, rows):
    """Σ_{t >= r > s} P[t, s] for every row r [C, 1]: what a log decay added at step r
    changes through the pairs (t, s) it lies between. Each of those terms carries that
    step's decay, so they are summed among themselves (Σ_{t >= r} by a reverse scan over
    t, then s < r by a masked sum), never as a difference of larger sums."""
    later = tl.associative_scan(P, 0, _add, reverse=True)  # [r, s]: Σ_{t >= r} P[t, s]
    total = tl.reduce(tl.where(rows[None, :] < rows[:, None], later, 0.0), 1, _add)
    return tl.reshape(total, [rows.shape[0], 1])


@triton.jit
def sum_before(x, rows):
    """Σ_{t < r} x[t] for every row r [C, 1] of x [C, 1], summed directly (an inclusive
    scan less x[r] would lose small sums next to a large x[r])."""
    earlier = tl.where(rows[None, :] < rows[:, None], tl.reshape(x, [1, rows.shape[0]]), 0.0)
    return tl.reduce(earlier, 1, _add, keep_dims=True)
