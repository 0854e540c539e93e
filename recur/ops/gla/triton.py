"""Gated linear attention as fused Triton kernels, forward and backward.

Gated Linear Attention Transformers with Hardware-Efficient Training
(Yang, Wang, Shen, Panda, Kim; arXiv:2312.06635), §4:

    S_t = diag(exp g_t) S_{t-1} + k_t v_tᵀ,      o_t = scale · S_tᵀ q_t

Time is cut into chunks of C = 64 steps. With gc the log decay summed from the chunk start:

- chunk states (one program per head and state tile, a loop over chunks):
  S_n = exp(gc_last) ⊙ S_{n-1} + (k ⊙ exp(gc_last - gc))ᵀ v;
- outputs (one program per chunk): o = scale · [(q ⊙ exp(gc)) S_{n-1} + A v] with the
  intra-chunk scores A[t, s] = Σ_k q_tk k_sk exp(gc_tk - gc_sk), s <= t.

With one decay per head, A is the 64-row product q kᵀ times the matrix of decays
exp(Σ_{s<r<=t} g_r), whatever their strength (the Mamba-2 / RetNet case); those exponents,
and the ones to the chunk's end, are summed from the log decays themselves rather than
taken as differences of gc, whose size would cost nearby steps their digits. With one per key
channel, where the chunk's total log decay stays above -FAST_SPAN in every channel (the
usual case: GLA's log σ(x)/16 gates lose about 3 per chunk), A is one 64-row product of
q ⊙ exp(gc) and k ⊙ exp(-gc), whose factors stay within exp(±FAST_SPAN). Stronger chunks go
through sub-chunks of c = 16 rows: earlier sub-chunks by a matrix product with both factors
taken relative to the row just before the query's sub-chunk (so both exponents are <= 0),
the diagonal sub-chunk by an elementwise [c, c, K] product (whose exponents are <= 0 too).
So no factor beyond exp(FAST_SPAN) is formed and strong gates cannot overflow. A log decay
of -inf (a reset) is clamped to GATE_FLOOR, whose exp is 0 in float32 just as exp(-inf).

The backward mirrors this: states S_{n-1} are recomputed, the adjoint states
D_n = exp(gc_last) ⊙ D_{n+1} + scale (q ⊙ exp(gc))ᵀ do run backwards over chunks, one
program per chunk writes dq, dk and dg, another per chunk and value tile writes dv. The
gate's gradient follows from ∂L/∂G_t = q_t ⊙ dq_t − k_t ⊙ dk_t (G the log decay summed
from the sequence start), summed over t' >= t: within the chunk by a reverse scan, and over
every later step at once as Σ_v S ⊙ D_n, S the state leaving the chunk, since adding δ to
the log decay right after chunk n scales that state by exp(δ) for all that follows. So dg
needs no pass along the whole sequence.

Packed batches (cu_seqlens) run as one row in which every sequence starts on a chunk
boundary (ChunkLayout): the state recurrence runs each sequence's chunks from its own
initial state, and the per-chunk programs are those of any batch.

Signed per-head decays (decay_sign) enter through σ_t = (-1)^(negatives in the chunk up
to t): the sign of any product over (s, t] inside a chunk is σ_t σ_s.

Legend of kernel names: B batch, T time, H heads, K key width, V value width, C chunk,
c sub-chunk, NC chunks per sequence; `bh` is one (batch, head) pair; `dt` the dtype of the
matrix products (the inputs' own dtype, float32 with IEEE products for float32 inputs).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..common import ChunkLayout
from ..common.kernels import (
    load_rows,
    sequence_chunks,
    state_tile_or_zeros,
    store_rows,
    straddling_pairs,
    sum_before,
)

CHUNK = 64
SUB_CHUNK = 16
# exp(GATE_FLOOR) is 0 in float32, so clamping changes no float32 result, and the chunk
# sums of clamped gates stay small enough for their differences to keep 5 digits.
GATE_FLOOR = -128.0
MAX_HEAD_DIM = 256
# Where a chunk's total log decay stays above -FAST_SPAN in a block of key channels, the
# intra-chunk scores are one matrix product of q ⊙ exp(gc) and k ⊙ exp(-gc): the second
# factor is at most exp(FAST_SPAN), far inside float32 and bfloat16 range. Stronger decays
# take the sub-chunk path whose exponents are all <= 0.
FAST_SPAN = 40.0
_FAST_SPAN = tl.constexpr(FAST_SPAN)
# Warps per program and tile widths of the whole-chunk kernels (fixed: no autotuning at the
# first call).
WARPS = {"states": 4, "output": 8, "backward": 8, "values": 8}
# (the state walk of a packed batch, whose loop bounds are per sequence, spills with 3)
STAGES = {"states": 3, "packed_states": 2, "output": 2, "backward": 1, "values": 2}
TILES = {"key": 16, "key_subchunk": 16, "value_dv": 64, "state_key": 64, "state_value": 32}


def _pow2(n: int, least: int = 16) -> int:
    return max(least, triton.next_power_of_2(n))


# Sums and scans go through tl.reduce / tl.associative_scan with Triton's own adder rather
# than tl.sum / tl.cumsum: those are kernels of Triton's, compiled or interpreted according to
# TRITON_INTERPRET when Triton is first imported, while these follow this module (and the
# interpreter runs this adder as one numpy call).
_add = tl.standard._sum_combine
_min = tl.standard._elementwise_min
# Triton's interpreter multiplies bfloat16 matrices wrongly (it reads their raw bits), so
# there the operands, already rounded to bfloat16, are widened first: same products.
_WIDEN_BF16_DOT = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    if _WIDEN_BF16_DOT:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _wide_operand(x, like):
    """x (float32) as an operand of the whole-chunk products: in the dtype of the inputs
    (`like`, a tensor or a pointer to them), except float16, whose range exp(FAST_SPAN)
    would overflow; those products take float32."""
    dt = like.dtype.element_ty if like.dtype.is_ptr() else like.dtype
    if dt == tl.float16:
        return x
    else:
        return x.to(dt)


@triton.jit
def _gate_rows(gc_ptr, b, h, rows, ks, T_pad, H: tl.constexpr, K: tl.constexpr, SCALAR_GATE: tl.constexpr):
    """Chunk-cumulated log decays of `rows`: [R, BK] per key channel, or [R, 1] per head."""
    if SCALAR_GATE:
        return tl.load(gc_ptr + (b * T_pad + rows) * H + h)[:, None]
    else:
        return tl.load(gc_ptr + ((b * T_pad + rows) * H + h)[:, None] * K + ks[None, :], mask=ks[None, :] < K, other=0.0)


@triton.jit
def _sign_rows(sc_ptr, b, h, rows, T_pad, H: tl.constexpr, HAS_SIGN: tl.constexpr):
    """σ of `rows` as [R, 1] (1 without signed decays)."""
    if HAS_SIGN:
        return tl.load(sc_ptr + (b * T_pad + rows) * H + h)[:, None]
    else:
        return tl.full([rows.shape[0], 1], 1.0, tl.float32)


@triton.jit
def _state_tile(ptr, bh, n, NC, ks, vs, K: tl.constexpr, V: tl.constexpr):
    """Rows `ks` and columns `vs` of chunk n's state of head bh in [B·H, NC, K, V]."""
    offsets = (bh.to(tl.int64) * NC + n) * K * V + ks[:, None] * V + vs[None, :]
    return tl.load(ptr + offsets, mask=(ks[:, None] < K) & (vs[None, :] < V), other=0.0)


@triton.jit
def _diagonal_scores(q, k, gc, causal):
    """Σ_k q_tk k_sk exp(gc_tk − gc_sk) [c, c] of one sub-chunk, s <= t where `causal`,
    elementwise over [t, s, k] (each exponent <= 0)."""
    decay = tl.exp(tl.where(causal[:, :, None], gc[:, None, :] - gc[None, :, :], float("-inf")))
    return tl.reduce(q[:, None, :] * k[None, :, :] * decay, 2, _add)


@triton.jit
def _to_chunk_end(g_ptr, gc_ptr, b, h, rows, ks, last, T, T_pad, floor, H: tl.constexpr, K: tl.constexpr,
                  SCALAR_GATE: tl.constexpr, HAS_G: tl.constexpr):
    """exp(Σ_{t < r <= last} g_r): the decay from each row to the chunk's end. With one decay
    per head the exponent is summed directly from the log decays (a reverse scan of the
    next rows'); with one per key channel it is gc_last − gc_t, within FAST_SPAN on the
    whole-chunk path."""
    if SCALAR_GATE:
        if HAS_G:
            following = rows + 1
            g = tl.load(g_ptr + (b * T + following) * H + h, mask=(following < T) & (following <= last), other=0.0)
            g = tl.maximum(g.to(tl.float32), floor)
            return tl.exp(tl.reshape(tl.associative_scan(g, 0, _add, reverse=True), [rows.shape[0], 1]))
        else:
            return tl.full([rows.shape[0], 1], 1.0, tl.float32)
    else:
        end = tl.full([1], last, tl.int32)
        return tl.exp(_gate_rows(gc_ptr, b, h, end, ks, T_pad, H, K, SCALAR_GATE) - _gate_rows(gc_ptr, b, h, rows, ks, T_pad, H, K, SCALAR_GATE))


@triton.jit
def _gate_cumsum_kernel(
    g_ptr, sign_ptr, gc_ptr, sc_ptr, T, T_pad, floor,
    H: tl.constexpr, KG: tl.constexpr, BKG: tl.constexpr, C: tl.constexpr,
    HAS_G: tl.constexpr, HAS_SIGN: tl.constexpr,
):
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), bh % H
    rows = n * C + tl.arange(0, C)
    cols = tl.arange(0, BKG)
    if HAS_G:
        g = load_rows(g_ptr, b, h, rows, cols, T, H, KG)
        g = tl.maximum(g.to(tl.float32), floor)
    else:
        g = tl.full([C, BKG], 0.0, tl.float32)
    gc = tl.associative_scan(g, 0, _add)
    tl.store(gc_ptr + ((b * T_pad + rows) * H + h)[:, None] * KG + cols[None, :], gc, mask=cols[None, :] < KG)
    if HAS_SIGN:
        s = tl.load(sign_ptr + (b * T + rows) * H + h, mask=rows < T, other=1.0)
        negatives = tl.associative_scan((s < 0).to(tl.int32), 0, _add)
        tl.store(sc_ptr + (b * T_pad + rows) * H + h, 1.0 - 2.0 * (negatives % 2).to(tl.float32))


@triton.jit
def _chunk_state_kernel(
    x_ptr, y_ptr, g_ptr, gc_ptr, sc_ptr, h0_ptr, states_ptr, hT_ptr, cu_ptr, T, T_pad, NC, scale, floor,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, REVERSE: tl.constexpr, SCALAR_GATE: tl.constexpr, HAS_G: tl.constexpr,
    HAS_SIGN: tl.constexpr, HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, VARLEN: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Forward: S_n = σ_last exp(gc_last) S_{n-1} + (σ_last σ_s k ⊙ exp(gc_last - gc))ᵀ v over
    chunks, storing each chunk's entering state. Reverse (x = q, y = do): the adjoint
    D_{n-1} = σ_last exp(gc_last) D_n + scale (σ_t q ⊙ exp(gc))ᵀ do, storing D_n.
    One program per state tile of one sequence and head: with VARLEN, sequence `seq` is
    chunks cu[seq] to cu[seq + 1] of a batch of one (ChunkLayout), else batch row `seq`."""
    kb, vb, sh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h, first, count = sequence_chunks(sh, cu_ptr, NC, H, VARLEN)
    bh = b * H + h
    ks = kb * BK + tl.arange(0, BK)
    vs = vb * BV + tl.arange(0, BV)
    tile = (ks[:, None] < K) & (vs[None, :] < V)
    tile_offsets = ks[:, None] * V + vs[None, :]
    S = state_tile_or_zeros(h0_ptr, sh, ks, vs, K, V, HAS_H0)
    for i in range(count):
        if REVERSE:
            n = first + count - 1 - i
        else:
            n = first + i
        tl.store(states_ptr + (bh * NC + n) * K * V + tile_offsets, S.to(states_ptr.dtype.element_ty), mask=tile)
        rows = n * C + tl.arange(0, C)
        x = load_rows(x_ptr, b, h, rows, ks, T, H, K)
        y = load_rows(y_ptr, b, h, rows, vs, T, H, V)
        gc = _gate_rows(gc_ptr, b, h, rows, ks, T_pad, H, K, SCALAR_GATE)
        last = tl.full([1], n * C + C - 1, tl.int32)
        gl = _gate_rows(gc_ptr, b, h, last, ks, T_pad, H, K, SCALAR_GATE)
        sigma = _sign_rows(sc_ptr, b, h, rows, T_pad, H, HAS_SIGN)
        sigma_last = _sign_rows(sc_ptr, b, h, last, T_pad, H, HAS_SIGN)
        if REVERSE:
            xw = x.to(tl.float32) * tl.exp(gc) * (sigma * scale)
        else:
            to_end = _to_chunk_end(g_ptr, gc_ptr, b, h, rows, ks, n * C + C - 1, T, T_pad, floor, H, K, SCALAR_GATE, HAS_G)
            xw = x.to(tl.float32) * to_end * (sigma * sigma_last)
        # [1, BK] -> [BK, 1]: the decay of the whole chunk per key row of the state
        S = S * tl.trans(tl.exp(gl) * sigma_last) + _dot(tl.trans(xw.to(y.dtype)), y, PRECISION)
    if STORE_FINAL:
        tl.store(hT_ptr + sh.to(tl.int64) * K * V + tile_offsets, S, mask=tile)


@triton.jit
def _subchunk_rows(m, C: tl.constexpr, c: tl.constexpr):
    """Sub-chunk m's chunk n, their first rows t0 and r0, and the rows of each."""
    n = m // (C // c)
    t0, r0 = n * C, m * c
    return n, t0, r0, t0 + tl.arange(0, C), r0 + tl.arange(0, c)


@triton.jit
def _subchunk_output(
    m, bh, q_ptr, k_ptr, v_ptr, gc_ptr, states_ptr, o_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, c: tl.constexpr, PRECISION: tl.constexpr,
):
    """Outputs of sub-chunk m, for chunks whose per-channel decay is too strong for the
    whole-chunk products."""
    b, h = (bh // H).to(tl.int64), bh % H
    n, t0, r0, rows_c, rows_i = _subchunk_rows(m, C, c)
    vs = tl.arange(0, BV)
    v_c = load_rows(v_ptr, b, h, rows_c, vs, T, H, V)
    v_i = load_rows(v_ptr, b, h, rows_i, vs, T, H, V)
    dt = v_c.dtype
    # reference row just before the sub-chunk (the sub-chunk's own first row for the first one)
    ref_row = tl.full([1], tl.maximum(r0 - 1, t0), tl.int32)
    earlier = rows_c < r0
    causal = rows_i[:, None] >= rows_i[None, :]
    acc = tl.full([c, BV], 0.0, tl.float32)
    scores_chunk = tl.full([c, C], 0.0, tl.float32)
    scores_diag = tl.full([c, c], 0.0, tl.float32)
    for kb in range((K + BK - 1) // BK):
        ks = kb * BK + tl.arange(0, BK)
        q_i = load_rows(q_ptr, b, h, rows_i, ks, T, H, K).to(tl.float32)
        k_i = load_rows(k_ptr, b, h, rows_i, ks, T, H, K).to(tl.float32)
        k_c = load_rows(k_ptr, b, h, rows_c, ks, T, H, K).to(tl.float32)
        gc_i = _gate_rows(gc_ptr, b, h, rows_i, ks, T_pad, H, K, False)
        gc_c = _gate_rows(gc_ptr, b, h, rows_c, ks, T_pad, H, K, False)
        ref = _gate_rows(gc_ptr, b, h, ref_row, ks, T_pad, H, K, False)
        S = _state_tile(states_ptr, bh, n, NC, ks, vs, K, V)
        # inter-chunk: (q ⊙ exp(gc)) S_{n-1}
        q_decayed = q_i * tl.exp(gc_i)
        acc += _dot(q_decayed.to(S.dtype), S, PRECISION)
        # earlier sub-chunks: exp(gc_t - gc_s) = exp(gc_t - ref) · exp(ref - gc_s)
        q_hat = q_i * tl.exp(gc_i - ref)
        k_hat = k_c * tl.exp(tl.where(earlier[:, None], ref - gc_c, float("-inf")))
        scores_chunk += _dot(q_hat.to(dt), tl.trans(k_hat.to(dt)), PRECISION)
        # diagonal sub-chunk, elementwise
        scores_diag += _diagonal_scores(q_i, k_i, gc_i, causal)
    scores_chunk = tl.where(rows_c[None, :] <= rows_i[:, None], scores_chunk, 0.0)
    acc += _dot(scores_chunk.to(dt), v_c, PRECISION)
    acc += _dot(scores_diag.to(dt), v_i, PRECISION)
    store_rows(o_ptr, acc * scale, b, h, rows_i, vs, T, H, V)


@triton.jit
def _subchunk_keys_backward(
    m, bh, q_ptr, k_ptr, v_ptr, do_ptr, gc_ptr, states_ptr, dstates_ptr,
    dq_ptr, dk_ptr, dG_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, c: tl.constexpr, PRECISION: tl.constexpr,
):
    """dq, dk and ∂L/∂G of sub-chunk m, for chunks whose per-channel decay is too strong
    for the whole-chunk products."""
    b, h = (bh // H).to(tl.int64), bh % H
    n, t0, r0, rows_c, rows_i = _subchunk_rows(m, C, c)
    vs = tl.arange(0, BV)
    v_c = load_rows(v_ptr, b, h, rows_c, vs, T, H, V)
    do_c = load_rows(do_ptr, b, h, rows_c, vs, T, H, V)
    v_i = load_rows(v_ptr, b, h, rows_i, vs, T, H, V)
    do_i = load_rows(do_ptr, b, h, rows_i, vs, T, H, V)
    dt = v_c.dtype
    last = tl.full([1], t0 + C - 1, tl.int32)
    # dA[t, s] = do_t · v_s: t in this sub-chunk, s in the chunk
    dA_earlier = _dot(do_i, tl.trans(v_c), PRECISION)
    dA_diag = _dot(do_i, tl.trans(v_i), PRECISION)
    # dAᵀ[s, t] = v_s · do_t: s in this sub-chunk, t in the chunk
    dAT_later = _dot(v_i, tl.trans(do_c), PRECISION)
    ref_q_row = tl.full([1], tl.maximum(r0 - 1, t0), tl.int32)
    ref_k_row = tl.full([1], r0 + c - 1, tl.int32)
    earlier = rows_c < r0
    later = rows_c > r0 + c - 1
    strict = rows_i[:, None] > rows_i[None, :]
    dA_self = tl.reshape(tl.reduce(tl.where(rows_i[:, None] == rows_i[None, :], dA_diag, 0.0), 1, _add), [c, 1])
    for kb in range((K + BK - 1) // BK):
        ks = kb * BK + tl.arange(0, BK)
        kmask = ks[None, :] < K
        inside_i = (rows_i[:, None] < T) & kmask
        q_i = load_rows(q_ptr, b, h, rows_i, ks, T, H, K).to(tl.float32)
        k_i = load_rows(k_ptr, b, h, rows_i, ks, T, H, K).to(tl.float32)
        q_c = load_rows(q_ptr, b, h, rows_c, ks, T, H, K).to(tl.float32)
        k_c = load_rows(k_ptr, b, h, rows_c, ks, T, H, K).to(tl.float32)
        gc_i = _gate_rows(gc_ptr, b, h, rows_i, ks, T_pad, H, K, False)
        gc_c = _gate_rows(gc_ptr, b, h, rows_c, ks, T_pad, H, K, False)
        ref_q = _gate_rows(gc_ptr, b, h, ref_q_row, ks, T_pad, H, K, False)
        ref_k = _gate_rows(gc_ptr, b, h, ref_k_row, ks, T_pad, H, K, False)
        gl = _gate_rows(gc_ptr, b, h, last, ks, T_pad, H, K, False)
        S = _state_tile(states_ptr, bh, n, NC, ks, vs, K, V)
        D = _state_tile(dstates_ptr, bh, n, NC, ks, vs, K, V)
        decay_strict = tl.exp(tl.where(strict[:, :, None], gc_i[:, None, :] - gc_i[None, :, :], float("-inf")))
        # dq_t = Σ_{s<t} dA[t,s] exp(gc_t - gc_s) ⊙ k_s: earlier sub-chunks, then the diagonal
        k_hat = k_c * tl.exp(tl.where(earlier[:, None], ref_q - gc_c, float("-inf")))
        dq = tl.exp(gc_i - ref_q) * _dot(dA_earlier.to(dt), k_hat.to(dt), PRECISION)
        dq += tl.reduce(dA_diag[:, :, None] * k_i[None, :, :] * decay_strict, 1, _add)
        # dk_s = Σ_{t>s} dA[t,s] exp(gc_t - gc_s) ⊙ q_t: later sub-chunks, then the diagonal
        q_tilde = q_c * tl.exp(tl.where(later[:, None], gc_c - ref_k, float("-inf")))
        dk = tl.exp(ref_k - gc_i) * _dot(dAT_later.to(dt), q_tilde.to(dt), PRECISION)
        dk += tl.reduce(dA_diag[:, :, None] * q_i[:, None, :] * decay_strict, 0, _add)
        # inter-chunk: exp(gc_t) ⊙ S_{n-1} do_t for dq, exp(gc_last - gc_s) ⊙ D_n v_s for dk
        dq = (dq + tl.exp(gc_i) * _dot(do_i.to(S.dtype), tl.trans(S), PRECISION)) * scale
        dk = dk * scale + tl.exp(gl - gc_i) * _dot(v_i.to(D.dtype), tl.trans(D), PRECISION)
        # s = t adds the same q_t ⊙ k_t dA[t,t] to q ⊙ dq and to k ⊙ dk; it is left out of
        # both for the gate's gradient, where it would cancel and leave only rounding
        out = ((b * T + rows_i) * H + h)[:, None] * K + ks[None, :]
        tl.store(dG_ptr + out, q_i * dq - k_i * dk, mask=inside_i)
        tl.store(dq_ptr + out, (dq + (scale * dA_self) * k_i).to(dq_ptr.dtype.element_ty), mask=inside_i)
        tl.store(dk_ptr + out, (dk + (scale * dA_self) * q_i).to(dk_ptr.dtype.element_ty), mask=inside_i)


@triton.jit
def _subchunk_values_backward(
    m, vb, bh, q_ptr, k_ptr, do_ptr, gc_ptr, dstates_ptr, dv_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, c: tl.constexpr, PRECISION: tl.constexpr,
):
    """dv of sub-chunk m and value tile vb, for chunks whose per-channel decay is too
    strong for the whole-chunk products: Aᵀ do for later sub-chunks (factors relative to
    the sub-chunk's last row) and the diagonal one (elementwise), plus the state's part."""
    b, h = (bh // H).to(tl.int64), bh % H
    n, t0, r0, rows_c, rows_i = _subchunk_rows(m, C, c)
    vs = vb * BV + tl.arange(0, BV)
    do_c = load_rows(do_ptr, b, h, rows_c, vs, T, H, V)
    do_i = load_rows(do_ptr, b, h, rows_i, vs, T, H, V)
    dt = do_c.dtype
    last = tl.full([1], t0 + C - 1, tl.int32)
    ref_k_row = tl.full([1], r0 + c - 1, tl.int32)
    later = rows_c > r0 + c - 1
    causal = rows_i[:, None] >= rows_i[None, :]
    dv = tl.full([c, BV], 0.0, tl.float32)
    scores_t = tl.full([c, C], 0.0, tl.float32)
    scores_diag = tl.full([c, c], 0.0, tl.float32)
    for kb in range((K + BK - 1) // BK):
        ks = kb * BK + tl.arange(0, BK)
        q_i = load_rows(q_ptr, b, h, rows_i, ks, T, H, K).to(tl.float32)
        k_i = load_rows(k_ptr, b, h, rows_i, ks, T, H, K).to(tl.float32)
        q_c = load_rows(q_ptr, b, h, rows_c, ks, T, H, K).to(tl.float32)
        gc_i = _gate_rows(gc_ptr, b, h, rows_i, ks, T_pad, H, K, False)
        gc_c = _gate_rows(gc_ptr, b, h, rows_c, ks, T_pad, H, K, False)
        ref_k = _gate_rows(gc_ptr, b, h, ref_k_row, ks, T_pad, H, K, False)
        gl = _gate_rows(gc_ptr, b, h, last, ks, T_pad, H, K, False)
        D = _state_tile(dstates_ptr, bh, n, NC, ks, vs, K, V)
        q_tilde = q_c * tl.exp(tl.where(later[:, None], gc_c - ref_k, float("-inf")))
        k_tilde = k_i * tl.exp(ref_k - gc_i)
        scores_t += _dot(k_tilde.to(dt), tl.trans(q_tilde.to(dt)), PRECISION)
        scores_diag += _diagonal_scores(q_i, k_i, gc_i, causal)
        dv += _dot((k_i * tl.exp(gl - gc_i)).to(D.dtype), D, PRECISION)
    dv += scale * _dot(scores_t.to(dt), do_c, PRECISION)
    dv += scale * _dot(tl.trans(scores_diag).to(dt), do_i, PRECISION)
    store_rows(dv_ptr, dv, b, h, rows_i, vs, T, H, V)


@triton.jit
def _chunk_is_fast(gc_ptr, b, h, t0, T_pad, H: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, C: tl.constexpr, SCALAR_GATE: tl.constexpr):
    """Whether the chunk takes the whole-chunk products: always with one decay per head
    (its decays form a [C, C] matrix), else where the chunk's total log decay stays above
    -FAST_SPAN in every key channel."""
    if SCALAR_GATE:
        return True
    else:
        last = tl.full([1], t0 + C - 1, tl.int32)
        gl = _gate_rows(gc_ptr, b, h, last, tl.arange(0, KP), T_pad, H, K, SCALAR_GATE)
        return tl.reduce(tl.reduce(gl, 1, _min), 0, _min) >= -_FAST_SPAN


@triton.jit
def _pair_decays(g_ptr, b, h, rows, T, floor, H: tl.constexpr, HAS_G: tl.constexpr, STRICT: tl.constexpr):
    """exp(Σ_{s < r <= t} g_r) [C, C] for one decay per head, for s <= t (s < t if STRICT)
    and 0 elsewhere. The exponents are segment sums of the (clamped) log decays rather
    than differences of their running sums, which would lose the digits of nearby pairs
    to the size of the sums (about 1e-5 of e_ts at -4 per step)."""
    if STRICT:
        pairs = rows[None, :] < rows[:, None]
    else:
        pairs = rows[None, :] <= rows[:, None]
    if HAS_G:
        g = tl.maximum(tl.load(g_ptr + (b * T + rows) * H + h, mask=rows < T, other=0.0).to(tl.float32), floor)
        segments = tl.associative_scan(tl.where(rows[:, None] > rows[None, :], g[:, None], 0.0), 0, _add)
        return tl.exp(tl.where(pairs, segments, float("-inf")))
    else:
        return tl.where(pairs, 1.0, 0.0)


@triton.jit
def _chunk_output_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, gc_ptr, sc_ptr, states_ptr, o_ptr, T, T_pad, NC, scale, floor,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BKD: tl.constexpr, KP: tl.constexpr, C: tl.constexpr, c: tl.constexpr,
    SCALAR_GATE: tl.constexpr, HAS_G: tl.constexpr, HAS_SIGN: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per chunk: o = scale · σ ⊙ [(q ⊙ exp(gc)) S_{n-1} + A v] with A masked to
    s <= t, all as 64-row products: A = (q kᵀ) ⊙ exp(gc_t − gc_s) with one decay per head,
    A = (q ⊙ exp(gc)) (k ⊙ exp(-gc))ᵀ with one per key channel, whose chunks decaying too
    strongly for it go through their sub-chunks."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), bh % H
    t0 = n * C
    if _chunk_is_fast(gc_ptr, b, h, t0, T_pad, H, K, KP, C, SCALAR_GATE):
        rows = t0 + tl.arange(0, C)
        inside = rows[:, None] < T
        vs = tl.arange(0, BV)
        acc = tl.full([C, BV], 0.0, tl.float32)
        scores = tl.full([C, C], 0.0, tl.float32)
        for kb in range((K + BK - 1) // BK):
            ks = kb * BK + tl.arange(0, BK)
            at = ((b * T + rows) * H + h)[:, None] * K + ks[None, :]
            q = tl.load(q_ptr + at, mask=inside & (ks[None, :] < K), other=0.0).to(tl.float32)
            k = tl.load(k_ptr + at, mask=inside & (ks[None, :] < K), other=0.0).to(tl.float32)
            gc = _gate_rows(gc_ptr, b, h, rows, ks, T_pad, H, K, SCALAR_GATE)
            S = _state_tile(states_ptr, bh, n, NC, ks, vs, K, V)
            q_hat = q * tl.exp(gc)
            acc += _dot(q_hat.to(S.dtype), S, PRECISION)
            if SCALAR_GATE:
                # the decays multiply the scores after the loop
                scores += _dot(_wide_operand(q, o_ptr), tl.trans(_wide_operand(k, o_ptr)), PRECISION)
            else:
                k_hat = k * tl.exp(-gc)
                scores += _dot(_wide_operand(q_hat, o_ptr), tl.trans(_wide_operand(k_hat, o_ptr)), PRECISION)
        if SCALAR_GATE:
            scores = scores * _pair_decays(g_ptr, b, h, rows, T, floor, H, HAS_G, False)
        v = load_rows(v_ptr, b, h, rows, vs, T, H, V)
        sigma = _sign_rows(sc_ptr, b, h, rows, T_pad, H, HAS_SIGN)
        scores = tl.where(rows[None, :] <= rows[:, None], scores, 0.0) * sigma * tl.reshape(sigma, [1, C])
        acc = acc * sigma + _dot(scores.to(v.dtype), v, PRECISION)
        store_rows(o_ptr, acc * scale, b, h, rows, vs, T, H, V)
    else:
        for i in range(C // c):
            _subchunk_output(
                n * (C // c) + i, bh, q_ptr, k_ptr, v_ptr, gc_ptr, states_ptr, o_ptr, T, T_pad, NC, scale,
                H, K, V, BKD, BV, C, c, PRECISION,
            )


@triton.jit
def _after_chunk(states_ptr, final_ptr, last_ptr, D, bh, h, n, NC, ks, vs, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, VARLEN: tl.constexpr):
    """Σ_v S[k, v] D_n[k, v] with S the state leaving chunk n: the gradient of a log decay
    added right after the chunk, which is Σ ∂L/∂G_t' over every later step t' of its
    sequence (the final state's gradient included), per key channel [1, BK]. S is the next
    chunk's entering state, or the sequence's final state after its last chunk (with
    VARLEN, last_ptr[n] names the sequence whose last chunk n is, -1 for none)."""
    tile = (ks[:, None] < K) & (vs[None, :] < V)
    offsets = ks[:, None] * V + vs[None, :]
    if VARLEN:
        ending = tl.full([1, 1], 0, tl.int32) + tl.load(last_ptr + n)
        is_last = ending >= 0
        final_row = ending.to(tl.int64) * H + h
    else:
        is_last = (tl.full([1, 1], 1, tl.int32) + n) == NC
        final_row = bh.to(tl.int64)
    leaving = tl.load(states_ptr + (bh.to(tl.int64) * NC + n + 1) * K * V + offsets, mask=tile & (is_last == 0), other=0.0).to(tl.float32)
    leaving += tl.load(final_ptr + final_row * K * V + offsets, mask=tile & is_last, other=0.0)
    return tl.reshape(tl.reduce(leaving * D.to(tl.float32), 1, _add), [1, ks.shape[0]])


@triton.jit
def _store_gate_gradient(dg, g_ptr, dg_ptr, b, h, rows, cols, T, floor, H: tl.constexpr, KG: tl.constexpr):
    """dg [C, KG] of the chunk's rows, where clamped gates (-inf included) pass no
    gradient, as the clamp would."""
    at = ((b * T + rows) * H + h)[:, None] * KG + cols[None, :]
    inside = (rows[:, None] < T) & (cols[None, :] < KG)
    g = tl.load(g_ptr + at, mask=inside, other=0.0).to(tl.float32)
    tl.store(dg_ptr + at, tl.where(g < floor, 0.0, dg).to(dg_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _chunk_backward_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, g_ptr, gc_ptr, sc_ptr, states_ptr, final_ptr, dstates_ptr, last_ptr,
    dq_ptr, dk_ptr, dG_ptr, dg_ptr, T, T_pad, NC, scale, floor,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BKD: tl.constexpr, KP: tl.constexpr, C: tl.constexpr, c: tl.constexpr,
    SCALAR_GATE: tl.constexpr, HAS_G: tl.constexpr, HAS_SIGN: tl.constexpr, NEED_DG: tl.constexpr,
    VARLEN: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per chunk, dq, dk and dg (dv in `_chunk_values_backward_kernel`):
    with dA[t, s] = σ_t σ_s do_t · v_s,
    dq = exp(gc) ⊙ [dA_{s<t} (k ⊙ exp(-gc)) + σ do S_{n-1}ᵀ] and
    dk = exp(-gc) ⊙ dA_{s<t}ᵀ (q ⊙ exp(gc)) + σ σ_last exp(gc_last - gc) ⊙ v D_nᵀ
    (with one decay per head, dA ⊙ exp(gc_t − gc_s) times k and q instead), all as 64-row
    products; chunks decaying too strongly for them go through their sub-chunks.
    dg needs no pass over the whole sequence: the sum of ∂L/∂G over later chunks is
    `_after_chunk`."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), bh % H
    t0 = n * C
    rows = t0 + tl.arange(0, C)
    inside = rows[:, None] < T
    vs = tl.arange(0, BV)
    if _chunk_is_fast(gc_ptr, b, h, t0, T_pad, H, K, KP, C, SCALAR_GATE):
        at_v = ((b * T + rows) * H + h)[:, None] * V + vs[None, :]
        v = tl.load(v_ptr + at_v, mask=inside & (vs[None, :] < V), other=0.0)
        do = tl.load(do_ptr + at_v, mask=inside & (vs[None, :] < V), other=0.0)
        sigma = _sign_rows(sc_ptr, b, h, rows, T_pad, H, HAS_SIGN)
        last = tl.full([1], t0 + C - 1, tl.int32)
        sigma_last = _sign_rows(sc_ptr, b, h, last, T_pad, H, HAS_SIGN)
        dA = _dot(do, tl.trans(v), PRECISION) * sigma * tl.reshape(sigma, [1, C])
        # s = t adds the same q_t ⊙ k_t dA[t,t] to q ⊙ dq and to k ⊙ dk; it is left out of
        # both for the gate's gradient, where it would cancel and leave only rounding
        dA_self = tl.reshape(tl.reduce(tl.where(rows[:, None] == rows[None, :], dA, 0.0), 1, _add), [C, 1])
        if SCALAR_GATE:
            # with the decays: dq = dA_e k, dk = dA_eᵀ q inside the chunk
            dA_pairs = dA * _pair_decays(g_ptr, b, h, rows, T, floor, H, HAS_G, True)
            dA = _wide_operand(dA_pairs, v)
            # one decay per head: dg from its four routes (see below), each summed directly
            scores = tl.full([C, C], 0.0, tl.float32)
            through_q = tl.full([C, 1], 0.0, tl.float32)
            through_k = tl.full([C, 1], 0.0, tl.float32)
            through_state = tl.full([1, 1], 0.0, tl.float32)
            to_end = _to_chunk_end(g_ptr, gc_ptr, b, h, rows, rows, t0 + C - 1, T, T_pad, floor, H, K, SCALAR_GATE, HAS_G)
            to_end = to_end * (sigma * sigma_last)
        else:
            dA = _wide_operand(tl.where(rows[None, :] < rows[:, None], dA, 0.0), v)
        for kb in range((K + BK - 1) // BK):
            ks = kb * BK + tl.arange(0, BK)
            kmask = inside & (ks[None, :] < K)
            at = ((b * T + rows) * H + h)[:, None] * K + ks[None, :]
            q = tl.load(q_ptr + at, mask=kmask, other=0.0).to(tl.float32)
            k = tl.load(k_ptr + at, mask=kmask, other=0.0).to(tl.float32)
            gc = _gate_rows(gc_ptr, b, h, rows, ks, T_pad, H, K, SCALAR_GATE)
            gl = _gate_rows(gc_ptr, b, h, last, ks, T_pad, H, K, SCALAR_GATE)
            S = _state_tile(states_ptr, bh, n, NC, ks, vs, K, V)
            D = _state_tile(dstates_ptr, bh, n, NC, ks, vs, K, V)
            if NEED_DG and not SCALAR_GATE:
                after = _after_chunk(states_ptr, final_ptr, last_ptr, D, bh, h, n, NC, ks, vs, H, K, V, VARLEN)
            decay = tl.exp(gc)
            if not SCALAR_GATE:
                to_end = _to_chunk_end(g_ptr, gc_ptr, b, h, rows, ks, t0 + C - 1, T, T_pad, floor, H, K, SCALAR_GATE, HAS_G)
                to_end = to_end * (sigma * sigma_last)
            if SCALAR_GATE:
                dq_state = sigma * decay * _dot(do.to(S.dtype), tl.trans(S), PRECISION) * scale
                dk_state = to_end * _dot(v.to(D.dtype), tl.trans(D), PRECISION)
                dq = _dot(dA, _wide_operand(k, v), PRECISION) * scale + dq_state
                dk = _dot(tl.trans(dA), _wide_operand(q, v), PRECISION) * scale + dk_state
                if NEED_DG:
                    scores += _dot(_wide_operand(q, v), tl.trans(_wide_operand(k, v)), PRECISION)
                    through_q += tl.reduce(q * dq_state, 1, _add, keep_dims=True)
                    through_k += tl.reduce(k * dk_state, 1, _add, keep_dims=True)
                    kept = tl.reduce(tl.reduce(S.to(tl.float32) * D.to(tl.float32), 1, _add, keep_dims=True), 0, _add, keep_dims=True)
                    through_state += kept * tl.exp(gl) * sigma_last
            else:
                dq = _dot(dA, _wide_operand(k / decay, v), PRECISION)
                dq = decay * (dq + sigma * _dot(do.to(S.dtype), tl.trans(S), PRECISION)) * scale
                dk = _dot(tl.trans(dA), _wide_operand(q * decay, v), PRECISION) / decay
                dk = dk * scale + to_end * _dot(v.to(D.dtype), tl.trans(D), PRECISION)
                if NEED_DG:
                    dG = q * dq - k * dk
                    dg = tl.associative_scan(dG, 0, _add, reverse=True) + after
                    _store_gate_gradient(dg, g_ptr, dg_ptr, b, h, rows, ks, T, floor, H, K)
            tl.store(dq_ptr + at, (dq + (scale * dA_self) * k).to(dq_ptr.dtype.element_ty), mask=kmask)
            tl.store(dk_ptr + at, (dk + (scale * dA_self) * q).to(dk_ptr.dtype.element_ty), mask=kmask)
        if NEED_DG and SCALAR_GATE:
            # a log decay added at step r scales: the pairs (t, s) of the chunk with
            # t >= r > s; the state's part of the outputs t >= r (through q); the part of
            # the leaving state written at steps t < r (through k); and the entering
            # state's part of the leaving state. Everything later sees the chunk through
            # the leaving state, so this is all of ∂L/∂g_r.
            pairs = straddling_pairs(scale * dA_pairs * scores, rows)
            from_q = tl.associative_scan(through_q, 0, _add, reverse=True)
            from_k = sum_before(through_k, rows)
            dg = pairs + from_q + from_k + through_state
            _store_gate_gradient(dg, g_ptr, dg_ptr, b, h, rows, tl.arange(0, 1), T, floor, H, 1)
    else:
        for i in range(C // c):
            _subchunk_keys_backward(
                n * (C // c) + i, bh, q_ptr, k_ptr, v_ptr, do_ptr, gc_ptr, states_ptr, dstates_ptr,
                dq_ptr, dk_ptr, dG_ptr, T, T_pad, NC, scale, H, K, V, BKD, BV, C, c, PRECISION,
            )
        if NEED_DG:
            # the sub-chunks left ∂L/∂G of every row in dG_ptr; this program reads it back
            tl.debug_barrier()
            for kb in range((K + BK - 1) // BK):
                ks = kb * BK + tl.arange(0, BK)
                D = _state_tile(dstates_ptr, bh, n, NC, ks, vs, K, V)
                after = _after_chunk(states_ptr, final_ptr, last_ptr, D, bh, h, n, NC, ks, vs, H, K, V, VARLEN)
                dg = tl.associative_scan(load_rows(dG_ptr, b, h, rows, ks, T, H, K), 0, _add, reverse=True) + after
                _store_gate_gradient(dg, g_ptr, dg_ptr, b, h, rows, ks, T, floor, H, K)


@triton.jit
def _chunk_values_backward_kernel(
    q_ptr, k_ptr, do_ptr, g_ptr, gc_ptr, sc_ptr, dstates_ptr, dv_ptr, T, T_pad, NC, scale, floor,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BKD: tl.constexpr, KP: tl.constexpr, C: tl.constexpr, c: tl.constexpr,
    SCALAR_GATE: tl.constexpr, HAS_G: tl.constexpr, HAS_SIGN: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per chunk and value tile: dv = scale · A_{s<=t}ᵀ do + (σ σ_last k ⊙
    exp(gc_last - gc)) D_n as 64-row products, A as in `_chunk_output_kernel`; chunks
    decaying too strongly for them go through their sub-chunks."""
    vb, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = (bh // H).to(tl.int64), bh % H
    t0 = n * C
    if _chunk_is_fast(gc_ptr, b, h, t0, T_pad, H, K, KP, C, SCALAR_GATE):
        rows = t0 + tl.arange(0, C)
        inside = rows[:, None] < T
        vs = vb * BV + tl.arange(0, BV)
        at_v = ((b * T + rows) * H + h)[:, None] * V + vs[None, :]
        do = tl.load(do_ptr + at_v, mask=inside & (vs[None, :] < V), other=0.0)
        dt = do.dtype
        sigma = _sign_rows(sc_ptr, b, h, rows, T_pad, H, HAS_SIGN)
        last = tl.full([1], t0 + C - 1, tl.int32)
        sigma_last = _sign_rows(sc_ptr, b, h, last, T_pad, H, HAS_SIGN)
        scores_t = tl.full([C, C], 0.0, tl.float32)
        dv = tl.full([C, BV], 0.0, tl.float32)
        if SCALAR_GATE:
            to_end = _to_chunk_end(g_ptr, gc_ptr, b, h, rows, rows, t0 + C - 1, T, T_pad, floor, H, K, SCALAR_GATE, HAS_G)
        for kb in range((K + BK - 1) // BK):
            ks = kb * BK + tl.arange(0, BK)
            kmask = inside & (ks[None, :] < K)
            at = ((b * T + rows) * H + h)[:, None] * K + ks[None, :]
            q = tl.load(q_ptr + at, mask=kmask, other=0.0).to(tl.float32)
            k = tl.load(k_ptr + at, mask=kmask, other=0.0).to(tl.float32)
            gc = _gate_rows(gc_ptr, b, h, rows, ks, T_pad, H, K, SCALAR_GATE)
            D = _state_tile(dstates_ptr, bh, n, NC, ks, vs, K, V)
            if SCALAR_GATE:
                # the decays multiply Aᵀ after the loop
                scores_t += _dot(_wide_operand(k, do), tl.trans(_wide_operand(q, do)), PRECISION)
            else:
                # Aᵀ[s, t] = (k_s ⊙ exp(-gc_s)) · (q_t ⊙ exp(gc_t))
                decay = tl.exp(gc)
                scores_t += _dot(_wide_operand(k / decay, do), tl.trans(_wide_operand(q * decay, do)), PRECISION)
            if not SCALAR_GATE:
                to_end = _to_chunk_end(g_ptr, gc_ptr, b, h, rows, ks, t0 + C - 1, T, T_pad, floor, H, K, SCALAR_GATE, HAS_G)
            dv += _dot((k * to_end).to(D.dtype), D, PRECISION)
        if SCALAR_GATE:
            scores_t = scores_t * tl.trans(_pair_decays(g_ptr, b, h, rows, T, floor, H, HAS_G, False))
        scores_t = tl.where(rows[None, :] >= rows[:, None], scores_t, 0.0) * sigma * tl.reshape(sigma, [1, C])
        dv = dv * (sigma * sigma_last) + scale * _dot(scores_t.to(dt), do, PRECISION)
        tl.store(dv_ptr + at_v, dv.to(dv_ptr.dtype.element_ty), mask=inside & (vs[None, :] < V))
    else:
        for i in range(C // c):
            _subchunk_values_backward(
                n * (C // c) + i, vb, bh, q_ptr, k_ptr, do_ptr, gc_ptr, dstates_ptr, dv_ptr, T, T_pad, NC, scale,
                H, K, V, BKD, BV, C, c, PRECISION,
            )


@triton.jit
def _recurrent_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, sign_ptr, h0_ptr, o_ptr, hT_ptr, cu_ptr, T, scale, floor,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_G: tl.constexpr, SCALAR_GATE: tl.constexpr, HAS_SIGN: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, VARLEN: tl.constexpr,
):
    """One program per (sequence, head, value tile): the state stays in registers for the
    whole loop over time. With T = 1 this is one decoding step."""
    vb, nh = tl.program_id(0), tl.program_id(1)
    n, h = (nh // H).to(tl.int64), nh % H
    if VARLEN:
        start = tl.load(cu_ptr + n).to(tl.int64)
        end = tl.load(cu_ptr + n + 1).to(tl.int64)
    else:
        start = n * T
        end = start + T
    ks = tl.arange(0, BK)
    vs = vb * BV + tl.arange(0, BV)
    tile = (ks[:, None] < K) & (vs[None, :] < V)
    tile_offsets = nh.to(tl.int64) * K * V + ks[:, None] * V + vs[None, :]
    if HAS_H0:
        S = tl.load(h0_ptr + tile_offsets, mask=tile, other=0.0).to(tl.float32)
    else:
        S = tl.full([BK, BV], 0.0, tl.float32)
    for t in range(start, end):
        q = tl.load(q_ptr + (t * H + h) * K + ks, mask=ks < K, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + (t * H + h) * K + ks, mask=ks < K, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + (t * H + h) * V + vs, mask=vs < V, other=0.0).to(tl.float32)
        if HAS_G:
            if SCALAR_GATE:
                decay = tl.exp(tl.maximum(tl.load(g_ptr + t * H + h).to(tl.float32), floor))
            else:
                g = tl.load(g_ptr + (t * H + h) * K + ks, mask=ks < K, other=0.0).to(tl.float32)
                decay = tl.exp(tl.maximum(g, floor))[:, None]
            if HAS_SIGN:
                decay = decay * tl.load(sign_ptr + t * H + h).to(tl.float32)
            S = S * decay
        S += k[:, None] * v[None, :]
        o = tl.reduce(S * q[:, None], 0, _add) * scale
        tl.store(o_ptr + (t * H + h) * V + vs, o.to(o_ptr.dtype.element_ty), mask=vs < V)
    if STORE_FINAL:
        tl.store(hT_ptr + tile_offsets, S, mask=tile)


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _launch_config(K: int, V: int) -> dict:
    """Fixed tiles (no autotuning, so the first call only compiles). Whole-chunk programs
    take key blocks of BK and the whole value width; sub-chunk programs (strong decays) key
    blocks of BKD, which keep their [c, c, BKD] diagonal products in registers; the state
    recurrence splits values by BVS so that single long sequences still fill the chip."""
    return {
        "BK": _pow2(min(K, TILES["key"])), "BKD": _pow2(min(K, TILES["key_subchunk"])),
        "BV": _pow2(V), "BVD": _pow2(min(V, TILES["value_dv"])), "KP": _pow2(K),
        "BKS": _pow2(min(K, TILES["state_key"])), "BVS": _pow2(min(V, TILES["state_value"])),
    }


def _gate_cumsum(g, decay_sign, B, T, T_pad, H, device):
    """Chunk-cumulated (clamped) log decays [B, T_pad, H(, K)] and sign parities [B, T_pad, H]."""
    scalar_gate = g is None or g.dim() == 3
    KG = 1 if scalar_gate else g.shape[-1]
    gc = torch.empty(B, T_pad, H, KG, device=device, dtype=torch.float32)
    sc = torch.empty(B, T_pad, H, device=device, dtype=torch.float32) if decay_sign is not None else gc
    _gate_cumsum_kernel[(T_pad // CHUNK, B * H)](
        g if g is not None else gc, decay_sign if decay_sign is not None else gc, gc, sc, T, T_pad, GATE_FLOOR,
        H=H, KG=KG, BKG=_pow2(KG, 1), C=CHUNK, HAS_G=g is not None, HAS_SIGN=decay_sign is not None,
        num_warps=4, num_stages=1,
    )
    return gc, sc, scalar_gate


def _chunk_states(x, y, g, gc, sc, h0, scale, T_pad, scalar_gate, has_sign, reverse, store_final, state_dtype, cu_chunks):
    """Entering states (adjoints when `reverse`) of every chunk [B·H, NC, K, V] and, when
    `store_final`, the states after each sequence [N, H, K, V] (N = B, or the sequences of
    a ChunkLayout whose cu_chunks are given)."""
    B, T, H, K = x.shape
    V = y.shape[-1]
    NC = T_pad // CHUNK
    n = B if cu_chunks is None else cu_chunks.numel() - 1
    cfg = _launch_config(K, V)
    states = torch.empty(B * H, NC, K, V, device=x.device, dtype=state_dtype)
    final = torch.empty(n, H, K, V, device=x.device, dtype=torch.float32) if store_final else states
    grid = (triton.cdiv(K, cfg["BKS"]), triton.cdiv(V, cfg["BVS"]), n * H)
    _chunk_state_kernel[grid](
        x, y, g if g is not None else gc, gc, sc, h0 if h0 is not None else states, states, final,
        cu_chunks if cu_chunks is not None else gc, T, T_pad, NC, scale, GATE_FLOOR,
        H=H, K=K, V=V, BK=cfg["BKS"], BV=cfg["BVS"], C=CHUNK, REVERSE=reverse, SCALAR_GATE=scalar_gate,
        HAS_G=g is not None, HAS_SIGN=has_sign, HAS_H0=h0 is not None, STORE_FINAL=store_final, VARLEN=cu_chunks is not None,
        PRECISION=_precision(x.dtype),
        num_warps=WARPS["states"], num_stages=STAGES["states" if cu_chunks is None else "packed_states"],
    )
    return states, (final if store_final else None)


def _states_dtype(dtype: torch.dtype) -> torch.dtype:
    # 16-bit inputs multiply 16-bit operands anyway, so 16-bit chunk states lose nothing more
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


class _ChunkGLA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, decay_sign, h0, scale, output_final_state, layout):
        B, T, H, K = q.shape
        V = v.shape[-1]
        T_pad = max(1, triton.cdiv(T, CHUNK)) * CHUNK
        gc, sc, scalar_gate = _gate_cumsum(g, decay_sign, B, T, T_pad, H, q.device)
        has_sign = decay_sign is not None
        states, final = _chunk_states(
            k, v, g, gc, sc, h0, scale, T_pad, scalar_gate, has_sign, reverse=False,
            store_final=output_final_state, state_dtype=_states_dtype(q.dtype),
            cu_chunks=None if layout is None else layout.cu_chunks,
        )
        o = torch.empty_like(v)
        cfg = _launch_config(K, V)
        _chunk_output_kernel[(T_pad // CHUNK, B * H)](
            q, k, v, g if g is not None else gc, gc, sc, states, o, T, T_pad, T_pad // CHUNK, scale, GATE_FLOOR,
            H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], BKD=cfg["BKD"], KP=cfg["KP"], C=CHUNK, c=SUB_CHUNK,
            SCALAR_GATE=scalar_gate, HAS_G=g is not None, HAS_SIGN=has_sign, PRECISION=_precision(q.dtype),
            num_warps=WARPS["output"], num_stages=STAGES["output"],
        )
        ctx.save_for_backward(q, k, v, g, decay_sign, h0)
        ctx.scale = scale
        ctx.layout = layout
        return o, final

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, decay_sign, h0 = ctx.saved_tensors
        scale = ctx.scale
        B, T, H, K = q.shape
        V = v.shape[-1]
        T_pad = max(1, triton.cdiv(T, CHUNK)) * CHUNK
        do = do.contiguous()
        gc, sc, scalar_gate = _gate_cumsum(g, decay_sign, B, T, T_pad, H, q.device)
        has_sign = decay_sign is not None
        states_dtype = _states_dtype(q.dtype)
        # the final state too: the gate's gradient at the last chunk needs it
        layout = ctx.layout
        cu_chunks = None if layout is None else layout.cu_chunks
        states, final = _chunk_states(
            k, v, g, gc, sc, h0, scale, T_pad, scalar_gate, has_sign, reverse=False,
            store_final=True, state_dtype=states_dtype, cu_chunks=cu_chunks,
        )
        if dht is not None:
            dht = dht.contiguous()
        dstates, dh0 = _chunk_states(
            q, do, g, gc, sc, dht, scale, T_pad, scalar_gate, has_sign, reverse=True,
            store_final=True, state_dtype=states_dtype, cu_chunks=cu_chunks,
        )
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        need_dg = g is not None and ctx.needs_input_grad[3]
        dg = torch.empty_like(g) if need_dg else None
        # ∂L/∂G per key channel, written only by chunks whose decay is too strong for the
        # whole-chunk products
        dG = torch.empty(B, T, H, K, device=q.device, dtype=torch.float32) if need_dg and not scalar_gate else dq
        cfg = _launch_config(K, V)
        NC = T_pad // CHUNK
        _chunk_backward_kernel[(NC, B * H)](
            q, k, v, do, g if g is not None else gc, gc, sc, states, final, dstates,
            layout.last_of if layout is not None else gc, dq, dk, dG, dg if need_dg else gc,
            T, T_pad, NC, scale, GATE_FLOOR,
            H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], BKD=cfg["BKD"], KP=cfg["KP"], C=CHUNK, c=SUB_CHUNK,
            SCALAR_GATE=scalar_gate, HAS_G=g is not None, HAS_SIGN=has_sign, NEED_DG=need_dg, VARLEN=layout is not None,
            PRECISION=_precision(q.dtype),
            num_warps=WARPS["backward"], num_stages=STAGES["backward"],
        )
        _chunk_values_backward_kernel[(triton.cdiv(V, cfg["BVD"]), NC, B * H)](
            q, k, do, g if g is not None else gc, gc, sc, dstates, dv, T, T_pad, NC, scale, GATE_FLOOR,
            H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BVD"], BKD=cfg["BKD"], KP=cfg["KP"], C=CHUNK, c=SUB_CHUNK,
            SCALAR_GATE=scalar_gate, HAS_G=g is not None, HAS_SIGN=has_sign, PRECISION=_precision(q.dtype),
            num_warps=WARPS["values"], num_stages=STAGES["values"],
        )
        dh0 = dh0.to(h0.dtype) if h0 is not None else None
        return dq, dk, dv, dg, None, dh0, None, None, None


def triton_gla(q, k, v, *, g, scale, initial_state, output_final_state, cu_seqlens, decay_sign):
    """Gated linear attention, chunkwise, in fused Triton kernels (forward and backward);
    the arguments of `naive_gla`, already checked, with K, V <= 256. The final state is
    float32 (float64 for float64 inputs, which the kernels round to float32 on the way in).
    """
    _check_kernel_inputs(q, v)
    out_dtype = v.dtype
    wide = torch.float64 in (q.dtype, v.dtype)
    if wide:
        # the kernels compute in float32; float64 inputs are rounded once on the way in
        q, k, v = q.float(), k.float(), v.float()
        g = None if g is None else g.float()
        initial_state = None if initial_state is None else initial_state.float()
    layout = None
    if cu_seqlens is not None:
        # every sequence on whole chunks of one row: no chunk spans two sequences
        layout = ChunkLayout(cu_seqlens, CHUNK)
        q, k, v = (layout.pack(x) for x in (q, k, v))
        g = None if g is None else layout.pack(g)
        decay_sign = None if decay_sign is None else layout.pack(decay_sign)
    q, k, v = q.contiguous(), k.to(q.dtype).contiguous(), v.to(q.dtype).contiguous()
    g = None if g is None else g.contiguous()
    decay_sign = None if decay_sign is None else decay_sign.float().contiguous()
    h0 = None if initial_state is None else initial_state.contiguous()
    o, final = _ChunkGLA.apply(q, k, v, g, decay_sign, h0, scale, output_final_state, layout)
    if layout is not None:
        o = layout.unpack(o)
    if final is not None and wide:
        final = final.double()
    return o.to(out_dtype), final


def triton_gla_recurrent(q, k, v, *, g, scale, initial_state, output_final_state, cu_seqlens, decay_sign):
    """Gated linear attention step by step in one fused kernel, for decoding (no gradients);
    the arguments of `naive_gla`, already checked. With T = 1 it is one decoding step that
    reads the state once and writes it once.
    """
    _check_kernel_inputs(q, v)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (q, k, v, g, initial_state)):
        raise ValueError(
            "triton_gla_recurrent computes no gradients; call it under torch.no_grad() for "
            "decoding, or use triton_gla for training"
        )
    B, T, H, K = q.shape
    V = v.shape[-1]
    n = B if cu_seqlens is None else cu_seqlens.numel() - 1
    o = torch.empty(B, T, H, V, device=q.device, dtype=v.dtype)
    final_dtype = torch.float64 if torch.float64 in (q.dtype, v.dtype) else torch.float32
    final = torch.empty(n, H, K, V, device=q.device, dtype=torch.float32)
    BK, BV = _pow2(K, 1), min(_pow2(V, 1), 64)
    contiguous = lambda x: None if x is None else x.contiguous()  # noqa: E731
    q, k, v, g, h0 = (contiguous(x) for x in (q, k, v, g, initial_state))
    sign = None if decay_sign is None else decay_sign.float().contiguous()
    _recurrent_kernel[(triton.cdiv(V, BV), n * H)](
        q, k, v, g if g is not None else q, sign if sign is not None else q, h0 if h0 is not None else final,
        o, final, cu_seqlens if cu_seqlens is not None else final, T, scale, GATE_FLOOR,
        H=H, K=K, V=V, BK=BK, BV=BV, HAS_G=g is not None, SCALAR_GATE=g is not None and g.dim() == 3,
        HAS_SIGN=sign is not None, HAS_H0=h0 is not None, STORE_FINAL=output_final_state,
        VARLEN=cu_seqlens is not None, num_warps=4,
    )
    return o, (final.to(final_dtype) if output_final_state else None)


def _check_kernel_inputs(q: torch.Tensor, v: torch.Tensor) -> None:
    K, V = q.shape[-1], v.shape[-1]
    if K > MAX_HEAD_DIM or V > MAX_HEAD_DIM:
        raise ValueError(
            f"the Triton GLA kernels take head widths up to {MAX_HEAD_DIM}; got K = {K}, V = {V}"
            " (use impl='chunk')"
        )
