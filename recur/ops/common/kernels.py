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
