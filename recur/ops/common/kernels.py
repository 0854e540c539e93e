"""Triton pieces shared by the families' kernels (imported only where Triton is). Every
helper is a `@triton.jit` function, inlined into the kernels that call it.

Sums and scans go through tl.reduce / tl.associative_scan with Triton's own adder (`add`)
rather than tl.sum / tl.cumsum: those are kernels of Triton's, compiled or interpreted
according to TRITON_INTERPRET when Triton is first imported, while these follow the module
that calls them (and the interpreter runs this adder as one numpy call).

Legend: T time, H heads, K key width, V value width, NC chunks per sequence; `bh` one
(batch row, head) pair, `sh` / `nh` one (sequence, head) pair, `ks` / `vs` the key / value
columns of a program's tile.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

add = tl.standard._sum_combine
minimum = tl.standard._elementwise_min
# Triton's interpreter multiplies bfloat16 matrices wrongly (it reads their raw bits), so
# there the operands, already rounded to bfloat16, are widened first: same products.
_WIDEN_BF16_DOT = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


@triton.jit
def dot(a, b, PRECISION: tl.constexpr):
    """a b with tl.dot's input precision PRECISION for float32 operands ("ieee", "tf32",
    "tf32x3"); 16-bit operands multiply in their own dtype."""
    if _WIDEN_BF16_DOT:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def two_sum(a, a_error, b, b_error):
    """(a + a_error) + (b + b_error) as a float32 sum and its rounding error (TwoSum: the
    error of a + b is exact in float32), the errors of both terms added to it: the combiner
    of a compensated running sum (tl.associative_scan over (x, 0))."""
    total = a + b
    b_part = total - a
    error = (a - (total - b_part)) + (b - b_part)
    return total, (a_error + b_error) + error


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
def load_per_head(ptr, b, h, rows, T, H: tl.constexpr):
    """Rows `rows` [R] of head h of batch row b of a per-head input [B, T, H] (a gate, a
    rate) as float32, zeros outside."""
    return tl.load(ptr + (b * T + rows) * H + h, mask=rows < T, other=0.0).to(tl.float32)


@triton.jit
def store_per_head(ptr, x, b, h, rows, T, H: tl.constexpr):
    """x [R] into rows `rows` of head h of batch row b of [B, T, H]."""
    tl.store(ptr + (b * T + rows) * H + h, x.to(ptr.dtype.element_ty), mask=rows < T)


@triton.jit
def state_tile(ptr, row, ks, vs, K: tl.constexpr, V: tl.constexpr):
    """Rows `ks` and columns `vs` of state `row` of [N, K, V], in its dtype, zeros outside."""
    offsets = row.to(tl.int64) * K * V + ks[:, None] * V + vs[None, :]
    return tl.load(ptr + offsets, mask=(ks[:, None] < K) & (vs[None, :] < V), other=0.0)


@triton.jit
def store_state_tile(ptr, x, row, ks, vs, K: tl.constexpr, V: tl.constexpr):
    """x [BK, BV] into rows `ks` and columns `vs` of state `row` of [N, K, V], at the
    offsets state_tile reads (a decoding kernel computes them once for both)."""
    offsets = row.to(tl.int64) * K * V + ks[:, None] * V + vs[None, :]
    tl.store(ptr + offsets, x.to(ptr.dtype.element_ty), mask=(ks[:, None] < K) & (vs[None, :] < V))


@triton.jit
def state_tile_or_zeros(ptr, row, ks, vs, K: tl.constexpr, V: tl.constexpr, GIVEN: tl.constexpr):
    """state_tile as float32; all zeros when not GIVEN (a walk starting without an initial
    state)."""
    if GIVEN:
        return state_tile(ptr, row, ks, vs, K, V).to(tl.float32)
    else:
        return tl.full([ks.shape[0], vs.shape[0]], 0.0, tl.float32)


@triton.jit
def chunk_state_tile(ptr, bh, n, NC, ks, vs, K: tl.constexpr, V: tl.constexpr):
    """state_tile of the state entering chunk n of head bh in a buffer [B·H, NC, K, V]."""
    return state_tile(ptr, bh.to(tl.int64) * NC + n, ks, vs, K, V)


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
def walk_program(
    kb, vb, sh, cu_ptr, h0_ptr, NC,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, HAS_H0: tl.constexpr, VARLEN: tl.constexpr,
):
    """The start of a walk over the chunks of one sequence by the program of key tile kb,
    value tile vb and sequence and head sh: (batch row, head, bh, first chunk, number of
    chunks, positions 0..C-1 in a chunk, key columns, value columns, the tile's offsets
    within one state and its mask, the sequence's initial state tile in float32). The walk
    stores a tile per chunk: its offsets and mask are computed here once, outside the loop,
    and each store adds its state's base (store_walk_tile)."""
    b, h, first, count = sequence_chunks(sh, cu_ptr, NC, H, VARLEN)
    bh = b * H + h
    sh = sh.to(tl.int64)
    idx = tl.arange(0, C)
    ks = kb * BK + tl.arange(0, BK)
    vs = vb * BV + tl.arange(0, BV)
    mask = (ks[:, None] < K) & (vs[None, :] < V)
    tile = ks[:, None] * V + vs[None, :]
    S = state_tile_or_zeros(h0_ptr, sh, ks, vs, K, V, HAS_H0)
    return b, h, bh, first, count, idx, ks, vs, tile, mask, S


@triton.jit
def store_walk_tile(ptr, x, row, tile, mask, K: tl.constexpr, V: tl.constexpr):
    """x [BK, BV] at the offsets `tile` (walk_program's) of state `row` of [N, K, V]."""
    tl.store(ptr + row.to(tl.int64) * K * V + tile, x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def decoding_program(
    cu_ptr, h0_ptr, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_H0: tl.constexpr, VARLEN: tl.constexpr,
):
    """The start of a decoding kernel's program (value tile, sequence · H + head), which
    keeps its value tile of the state of one sequence and head in registers over the
    sequence's steps: (head, sequence · H + head, first step, the step after the last, key
    columns, value columns, the initial state tile in float32). Steps index the rows of the
    inputs taken as [B·T, H, X]: with VARLEN the sequence's rows cu[seq] to cu[seq + 1] of a
    batch of one, otherwise batch row seq."""
    vb, nh = tl.program_id(0), tl.program_id(1)
    seq, h = (nh // H).to(tl.int64), nh % H
    if VARLEN:
        start = tl.load(cu_ptr + seq).to(tl.int64)
        end = tl.load(cu_ptr + seq + 1).to(tl.int64)
    else:
        start = seq * T
        end = start + T
    ks = tl.arange(0, BK)
    vs = vb * BV + tl.arange(0, BV)
    return h, nh, start, end, ks, vs, state_tile_or_zeros(h0_ptr, nh, ks, vs, K, V, HAS_H0)


@triton.jit
def load_step(ptr, t, h, cols, H: tl.constexpr, X: tl.constexpr):
    """Columns `cols` of head h at step t of an input [B·T, H, X] as float32, zeros outside."""
    return tl.load(ptr + (t * H + h) * X + cols, mask=cols < X, other=0.0).to(tl.float32)


@triton.jit
def load_step_qkv(
    q_ptr, k_ptr, v_ptr, t, h, ks, vs, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
):
    """q_t and k_t (key columns `ks`) and v_t (value columns `vs`) of head h at step t, as
    float32."""
    q = load_step(q_ptr, t, h, ks, H, K)
    k = load_step(k_ptr, t, h, ks, H, K)
    return q, k, load_step(v_ptr, t, h, vs, H, V)


@triton.jit
def read_out_step(S, q, o_ptr, scale, t, h, vs, H: tl.constexpr, V: tl.constexpr):
    """o_t = scale · Sᵀ q_t of one value tile, stored at step t of the output [B·T, H, V]."""
    o = tl.reduce(S * q[:, None], 0, add) * scale
    tl.store(o_ptr + (t * H + h) * V + vs, o.to(o_ptr.dtype.element_ty), mask=vs < V)


@triton.jit
def straddling_pairs(P, rows):
    """Σ_{t >= r > s} P[t, s] for every row r [C, 1]: what a log decay added at step r
    changes through the pairs (t, s) it lies between. Each of those terms carries that
    step's decay, so they are summed among themselves (Σ_{t >= r} by a reverse scan over
    t, then s < r by a masked sum), never as a difference of larger sums."""
    later = tl.associative_scan(P, 0, add, reverse=True)  # [r, s]: Σ_{t >= r} P[t, s]
    total = tl.reduce(tl.where(rows[None, :] < rows[:, None], later, 0.0), 1, add)
    return tl.reshape(total, [rows.shape[0], 1])


@triton.jit
def sum_before(x, rows):
    """Σ_{t < r} x[t] for every row r [C, 1] of x [C, 1], summed directly (an inclusive
    scan less x[r] would lose small sums next to a large x[r])."""
    earlier = tl.where(rows[None, :] < rows[:, None], tl.reshape(x, [1, rows.shape[0]]), 0.0)
    return tl.reduce(earlier, 1, add, keep_dims=True)
