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
of -inf (a reset) is clamped to the launcher's GATE_FLOOR (`floor`), whose exp is 0 in
float32 just as exp(-inf).

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

The decoding kernel (`recurrent`) keeps one value tile of the state in registers for the
whole loop over time; with T = 1 it is one decoding step.

Launch settings, autograd and the public forms are in triton.py. Legend of kernel names:
B batch, T time, H heads, K key width, V value width, C chunk, c sub-chunk, NC chunks per
sequence; `bh` is one (batch, head) pair; `dt` the dtype of the matrix products (the
inputs' own dtype, float32 with IEEE products for float32 inputs).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..common import kernels as common
from ..common.kernels import (
    add,
    chunk_state_tile,
    dot,
    load_per_head,
    load_rows,
    minimum,
    store_rows,
    straddling_pairs,
    sum_before,
)

# Where a chunk's total log decay stays above -FAST_SPAN in a block of key channels, the
# intra-chunk scores are one matrix product of q ⊙ exp(gc) and k ⊙ exp(-gc): the second
# factor is at most exp(FAST_SPAN), far inside float32 and bfloat16 range. Stronger decays
# take the sub-chunk path whose exponents are all <= 0.
FAST_SPAN = 40.0
_FAST_SPAN = tl.constexpr(FAST_SPAN)


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
def _diagonal_scores(q, k, gc, causal):
    """Σ_k q_tk k_sk exp(gc_tk − gc_sk) [c, c] of one sub-chunk, s <= t where `causal`,
    elementwise over [t, s, k] (each exponent <= 0)."""
    decay = tl.exp(tl.where(causal[:, :, None], gc[:, None, :] - gc[None, :, :], float("-inf")))
    return tl.reduce(q[:, None, :] * k[None, :, :] * decay, 2, add)


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
            return tl.exp(tl.reshape(tl.associative_scan(g, 0, add, reverse=True), [rows.shape[0], 1]))
        else:
            return tl.full([rows.shape[0], 1], 1.0, tl.float32)
    else:
        end = tl.full([1], last, tl.int32)
        return tl.exp(_gate_rows(gc_ptr, b, h, end, ks, T_pad, H, K, SCALAR_GATE) - _gate_rows(gc_ptr, b, h, rows, ks, T_pad, H, K, SCALAR_GATE))


@triton.jit
def gate_cumsum(
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
    gc = tl.associative_scan(g, 0, add)
    tl.store(gc_ptr + ((b * T_pad + rows) * H + h)[:, None] * KG + cols[None, :], gc, mask=cols[None, :] < KG)
    if HAS_SIGN:
        s = tl.load(sign_ptr + (b * T + rows) * H + h, mask=rows < T, other=1.0)
        negatives = tl.associative_scan((s < 0).to(tl.int32), 0, add)
        tl.store(sc_ptr + (b * T_pad + rows) * H + h, 1.0 - 2.0 * (negatives % 2).to(tl.float32))


@triton.jit
def chunk_states(
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
    b, h, bh, first, count, idx, ks, vs, tile, mask, S = common.walk_program(
        kb, vb, sh, cu_ptr, h0_ptr, NC, H, K, V, BK, BV, C, HAS_H0, VARLEN
    )
    for i in range(count):
        if REVERSE:
            n = first + count - 1 - i
        else:
            n = first + i
        common.store_walk_tile(states_ptr, S, bh * NC + n, tile, mask, K, V)
        rows = n * C + idx
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
        S = S * tl.trans(tl.exp(gl) * sigma_last) + dot(tl.trans(xw.to(y.dtype)), y, PRECISION)
    if STORE_FINAL:
        common.store_walk_tile(hT_ptr, S, sh, tile, mask, K, V)


@triton.jit
def _subchunk_rows(m, bh, H: tl.constexpr, C: tl.constexpr, c: tl.constexpr):
    """Batch row and head of bh; sub-chunk m's chunk n, their first rows t0 and r0, and
    the rows of each."""
    b, h = (bh // H).to(tl.int64), bh % H
    n = m // (C // c)
    t0, r0 = n * C, m * c
    return b, h, n, t0, r0, t0 + tl.arange(0, C), r0 + tl.arange(0, c)


@triton.jit
def _subchunk_sums(BV: tl.constexpr, C: tl.constexpr, c: tl.constexpr):
    """Zeros for what a sub-chunk program sums over key blocks: its results [c, BV], its
    scores against the chunk's rows [c, C] and within the sub-chunk [c, c]."""
    results = tl.full([c, BV], 0.0, tl.float32)
    return results, tl.full([c, C], 0.0, tl.float32), tl.full([c, c], 0.0, tl.float32)


@triton.jit
def _subchunk_keys(
    q_ptr, k_ptr, gc_ptr, b, h, rows_i, rows_c, kb, T, T_pad,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
):
    """The columns ks of key block kb, and q, k (float32) and gc of those columns for the
    sub-chunk's rows and for the chunk's: (ks, q_i, k_i, q_c, k_c, gc_i, gc_c). (What a
    caller leaves unused is not loaded.)"""
    ks = kb * BK + tl.arange(0, BK)
    q_i = load_rows(q_ptr, b, h, rows_i, ks, T, H, K).to(tl.float32)
    k_i = load_rows(k_ptr, b, h, rows_i, ks, T, H, K).to(tl.float32)
    q_c = load_rows(q_ptr, b, h, rows_c, ks, T, H, K).to(tl.float32)
    k_c = load_rows(k_ptr, b, h, rows_c, ks, T, H, K).to(tl.float32)
    gc_i = _gate_rows(gc_ptr, b, h, rows_i, ks, T_pad, H, K, False)
    gc_c = _gate_rows(gc_ptr, b, h, rows_c, ks, T_pad, H, K, False)
    return ks, q_i, k_i, q_c, k_c, gc_i, gc_c


@triton.jit
def _from_earlier(x_c, gc_c, ref, earlier):
    """x_s ⊙ exp(ref − gc_s) for the chunk's rows s in earlier sub-chunks, 0 elsewhere;
    with `ref` the row before the sub-chunk, every exponent is <= 0."""
    return x_c * tl.exp(tl.where(earlier[:, None], ref - gc_c, float("-inf")))


@triton.jit
def _from_later(x_c, gc_c, ref, later):
    """x_t ⊙ exp(gc_t − ref) for the chunk's rows t in later sub-chunks, 0 elsewhere;
    with `ref` the sub-chunk's last row, every exponent is <= 0."""
    return x_c * tl.exp(tl.where(later[:, None], gc_c - ref, float("-inf")))


@triton.jit
def _subchunk_output(
    m, bh, q_ptr, k_ptr, v_ptr, gc_ptr, states_ptr, o_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, c: tl.constexpr, PRECISION: tl.constexpr,
):
    """Outputs of sub-chunk m, for chunks whose per-channel decay is too strong for the
    whole-chunk products."""
    b, h, n, t0, r0, rows_c, rows_i = _subchunk_rows(m, bh, H, C, c)
    vs = tl.arange(0, BV)
    v_c = load_rows(v_ptr, b, h, rows_c, vs, T, H, V)
    v_i = load_rows(v_ptr, b, h, rows_i, vs, T, H, V)
    dt = v_c.dtype
    # reference row just before the sub-chunk (the sub-chunk's own first row for the first one)
    ref_row = tl.full([1], tl.maximum(r0 - 1, t0), tl.int32)
    earlier = rows_c < r0
    causal = rows_i[:, None] >= rows_i[None, :]
    acc, scores_chunk, scores_diag = _subchunk_sums(BV, C, c)
    for kb in range((K + BK - 1) // BK):
        ks, q_i, k_i, _, k_c, gc_i, gc_c = _subchunk_keys(q_ptr, k_ptr, gc_ptr, b, h, rows_i, rows_c, kb, T, T_pad, H, K, BK)
        ref = _gate_rows(gc_ptr, b, h, ref_row, ks, T_pad, H, K, False)
        S = chunk_state_tile(states_ptr, bh, n, NC, ks, vs, K, V)
        # inter-chunk: (q ⊙ exp(gc)) S_{n-1}
        q_decayed = q_i * tl.exp(gc_i)
        acc += dot(q_decayed.to(S.dtype), S, PRECISION)
        # earlier sub-chunks: exp(gc_t - gc_s) = exp(gc_t - ref) · exp(ref - gc_s)
        q_hat = q_i * tl.exp(gc_i - ref)
        k_hat = _from_earlier(k_c, gc_c, ref, earlier)
        scores_chunk += dot(q_hat.to(dt), tl.trans(k_hat.to(dt)), PRECISION)
        # diagonal sub-chunk, elementwise
        scores_diag += _diagonal_scores(q_i, k_i, gc_i, causal)
    scores_chunk = tl.where(rows_c[None, :] <= rows_i[:, None], scores_chunk, 0.0)
    acc += dot(scores_chunk.to(dt), v_c, PRECISION)
    acc += dot(scores_diag.to(dt), v_i, PRECISION)
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
    b, h, n, t0, r0, rows_c, rows_i = _subchunk_rows(m, bh, H, C, c)
    vs = tl.arange(0, BV)
    v_c = load_rows(v_ptr, b, h, rows_c, vs, T, H, V)
    do_c = load_rows(do_ptr, b, h, rows_c, vs, T, H, V)
    v_i = load_rows(v_ptr, b, h, rows_i, vs, T, H, V)
    do_i = load_rows(do_ptr, b, h, rows_i, vs, T, H, V)
    dt = v_c.dtype
    last = tl.full([1], t0 + C - 1, tl.int32)
    # dA[t, s] = do_t · v_s: t in this sub-chunk, s in the chunk
    dA_earlier = dot(do_i, tl.trans(v_c), PRECISION)
    dA_diag = dot(do_i, tl.trans(v_i), PRECISION)
    # dAᵀ[s, t] = v_s · do_t: s in this sub-chunk, t in the chunk
    dAT_later = dot(v_i, tl.trans(do_c), PRECISION)
    ref_q_row = tl.full([1], tl.maximum(r0 - 1, t0), tl.int32)
    ref_k_row = tl.full([1], r0 + c - 1, tl.int32)
    earlier = rows_c < r0
    later = rows_c > r0 + c - 1
    strict = rows_i[:, None] > rows_i[None, :]
    dA_self = tl.reshape(tl.reduce(tl.where(rows_i[:, None] == rows_i[None, :], dA_diag, 0.0), 1, add), [c, 1])
    for kb in range((K + BK - 1) // BK):
        ks, q_i, k_i, q_c, k_c, gc_i, gc_c = _subchunk_keys(q_ptr, k_ptr, gc_ptr, b, h, rows_i, rows_c, kb, T, T_pad, H, K, BK)
        ref_q = _gate_rows(gc_ptr, b, h, ref_q_row, ks, T_pad, H, K, False)
        ref_k = _gate_rows(gc_ptr, b, h, ref_k_row, ks, T_pad, H, K, False)
        gl = _gate_rows(gc_ptr, b, h, last, ks, T_pad, H, K, False)
        S = chunk_state_tile(states_ptr, bh, n, NC, ks, vs, K, V)
        D = chunk_state_tile(dstates_ptr, bh, n, NC, ks, vs, K, V)
        decay_strict = tl.exp(tl.where(strict[:, :, None], gc_i[:, None, :] - gc_i[None, :, :], float("-inf")))
        # dq_t = Σ_{s<t} dA[t,s] exp(gc_t - gc_s) ⊙ k_s: earlier sub-chunks, then the diagonal
        k_hat = _from_earlier(k_c, gc_c, ref_q, earlier)
        dq = tl.exp(gc_i - ref_q) * dot(dA_earlier.to(dt), k_hat.to(dt), PRECISION)
        dq += tl.reduce(dA_diag[:, :, None] * k_i[None, :, :] * decay_strict, 1, add)
        # dk_s = Σ_{t>s} dA[t,s] exp(gc_t - gc_s) ⊙ q_t: later sub-chunks, then the diagonal
        q_tilde = _from_later(q_c, gc_c, ref_k, later)
        dk = tl.exp(ref_k - gc_i) * dot(dAT_later.to(dt), q_tilde.to(dt), PRECISION)
        dk += tl.reduce(dA_diag[:, :, None] * q_i[:, None, :] * decay_strict, 0, add)
        # inter-chunk: exp(gc_t) ⊙ S_{n-1} do_t for dq, exp(gc_last - gc_s) ⊙ D_n v_s for dk
        dq = (dq + tl.exp(gc_i) * dot(do_i.to(S.dtype), tl.trans(S), PRECISION)) * scale
        dk = dk * scale + tl.exp(gl - gc_i) * dot(v_i.to(D.dtype), tl.trans(D), PRECISION)
        # s = t adds the same q_t ⊙ k_t dA[t,t] to q ⊙ dq and to k ⊙ dk; it is left out of
        # both for the gate's gradient, where it would cancel and leave only rounding
        store_rows(dG_ptr, q_i * dq - k_i * dk, b, h, rows_i, ks, T, H, K)
        store_rows(dq_ptr, dq + (scale * dA_self) * k_i, b, h, rows_i, ks, T, H, K)
        store_rows(dk_ptr, dk + (scale * dA_self) * q_i, b, h, rows_i, ks, T, H, K)


@triton.jit
def _subchunk_values_backward(
    m, vb, bh, q_ptr, k_ptr, do_ptr, gc_ptr, dstates_ptr, dv_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, c: tl.constexpr, PRECISION: tl.constexpr,
):
    """dv of sub-chunk m and value tile vb, for chunks whose per-channel decay is too
    strong for the whole-chunk products: Aᵀ do for later sub-chunks (factors relative to
    the sub-chunk's last row) and the diagonal one (elementwise), plus the state's part."""
    b, h, n, t0, r0, rows_c, rows_i = _subchunk_rows(m, bh, H, C, c)
    vs = vb * BV + tl.arange(0, BV)
    do_c = load_rows(do_ptr, b, h, rows_c, vs, T, H, V)
    do_i = load_rows(do_ptr, b, h, rows_i, vs, T, H, V)
    dt = do_c.dtype
    last = tl.full([1], t0 + C - 1, tl.int32)
    ref_k_row = tl.full([1], r0 + c - 1, tl.int32)
    later = rows_c > r0 + c - 1
    causal = rows_i[:, None] >= rows_i[None, :]
    dv, scores_t, scores_diag = _subchunk_sums(BV, C, c)
    for kb in range((K + BK - 1) // BK):
        ks, q_i, k_i, q_c, _, gc_i, gc_c = _subchunk_keys(q_ptr, k_ptr, gc_ptr, b, h, rows_i, rows_c, kb, T, T_pad, H, K, BK)
        ref_k = _gate_rows(gc_ptr, b, h, ref_k_row, ks, T_pad, H, K, False)
        gl = _gate_rows(gc_ptr, b, h, last, ks, T_pad, H, K, False)
        D = chunk_state_tile(dstates_ptr, bh, n, NC, ks, vs, K, V)
        q_tilde = _from_later(q_c, gc_c, ref_k, later)
        k_tilde = k_i * tl.exp(ref_k - gc_i)
        scores_t += dot(k_tilde.to(dt), tl.trans(q_tilde.to(dt)), PRECISION)
        scores_diag += _diagonal_scores(q_i, k_i, gc_i, causal)
        dv += dot((k_i * tl.exp(gl - gc_i)).to(D.dtype), D, PRECISION)
    dv += scale * dot(scores_t.to(dt), do_c, PRECISION)
    dv += scale * dot(tl.trans(scores_diag).to(dt), do_i, PRECISION)
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
        return tl.reduce(tl.reduce(gl, 1, minimum), 0, minimum) >= -_FAST_SPAN


@triton.jit
def _chunk_keys(
    q_ptr, k_ptr, gc_ptr, b, h, rows, ks, T, T_pad,
    H: tl.constexpr, K: tl.constexpr, SCALAR_GATE: tl.constexpr,
):
    """q, k (float32) and gc of key columns `ks` of the chunk's `rows`."""
    q = load_rows(q_ptr, b, h, rows, ks, T, H, K).to(tl.float32)
    k = load_rows(k_ptr, b, h, rows, ks, T, H, K).to(tl.float32)
    return q, k, _gate_rows(gc_ptr, b, h, rows, ks, T_pad, H, K, SCALAR_GATE)


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
        g = tl.maximum(load_per_head(g_ptr, b, h, rows, T, H), floor)
        segments = tl.associative_scan(tl.where(rows[:, None] > rows[None, :], g[:, None], 0.0), 0, add)
        return tl.exp(tl.where(pairs, segments, float("-inf")))
    else:
        return tl.where(pairs, 1.0, 0.0)


@triton.jit
def chunk_outputs(
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
        vs = tl.arange(0, BV)
        acc = tl.full([C, BV], 0.0, tl.float32)
        scores = tl.full([C, C], 0.0, tl.float32)
        for kb in range((K + BK - 1) // BK):
            ks = kb * BK + tl.arange(0, BK)
            q, k, gc = _chunk_keys(q_ptr, k_ptr, gc_ptr, b, h, rows, ks, T, T_pad, H, K, SCALAR_GATE)
            S = chunk_state_tile(states_ptr, bh, n, NC, ks, vs, K, V)
            q_hat = q * tl.exp(gc)
            acc += dot(q_hat.to(S.dtype), S, PRECISION)
            if SCALAR_GATE:
                # the decays multiply the scores after the loop
                scores += dot(_wide_operand(q, o_ptr), tl.trans(_wide_operand(k, o_ptr)), PRECISION)
            else:
                k_hat = k * tl.exp(-gc)
                scores += dot(_wide_operand(q_hat, o_ptr), tl.trans(_wide_operand(k_hat, o_ptr)), PRECISION)
        if SCALAR_GATE:
            scores = scores * _pair_decays(g_ptr, b, h, rows, T, floor, H, HAS_G, False)
        v = load_rows(v_ptr, b, h, rows, vs, T, H, V)
        sigma = _sign_rows(sc_ptr, b, h, rows, T_pad, H, HAS_SIGN)
        scores = tl.where(rows[None, :] <= rows[:, None], scores, 0.0) * sigma * tl.reshape(sigma, [1, C])
        acc = acc * sigma + dot(scores.to(v.dtype), v, PRECISION)
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
    return tl.reshape(tl.reduce(leaving * D.to(tl.float32), 1, add), [1, ks.shape[0]])


@triton.jit
def _store_gate_gradient(dg, g_ptr, dg_ptr, b, h, rows, cols, T, floor, H: tl.constexpr, KG: tl.constexpr):
    """dg [C, KG] of the chunk's rows, where clamped gates (-inf included) pass no
    gradient, as the clamp would."""
    g = load_rows(g_ptr, b, h, rows, cols, T, H, KG).to(tl.float32)
    store_rows(dg_ptr, tl.where(g < floor, 0.0, dg), b, h, rows, cols, T, H, KG)


@triton.jit
def chunk_backward(
    q_ptr, k_ptr, v_ptr, do_ptr, g_ptr, gc_ptr, sc_ptr, states_ptr, final_ptr, dstates_ptr, last_ptr,
    dq_ptr, dk_ptr, dG_ptr, dg_ptr, T, T_pad, NC, scale, floor,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BKD: tl.constexpr, KP: tl.constexpr, C: tl.constexpr, c: tl.constexpr,
    SCALAR_GATE: tl.constexpr, HAS_G: tl.constexpr, HAS_SIGN: tl.constexpr, NEED_DG: tl.constexpr,
    VARLEN: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per chunk, dq, dk and dg (dv in `chunk_values_backward`):
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
    vs = tl.arange(0, BV)
    if _chunk_is_fast(gc_ptr, b, h, t0, T_pad, H, K, KP, C, SCALAR_GATE):
        v = load_rows(v_ptr, b, h, rows, vs, T, H, V)
        do = load_rows(do_ptr, b, h, rows, vs, T, H, V)
        sigma = _sign_rows(sc_ptr, b, h, rows, T_pad, H, HAS_SIGN)
        last = tl.full([1], t0 + C - 1, tl.int32)
        sigma_last = _sign_rows(sc_ptr, b, h, last, T_pad, H, HAS_SIGN)
        dA = dot(do, tl.trans(v), PRECISION) * sigma * tl.reshape(sigma, [1, C])
        # s = t adds the same q_t ⊙ k_t dA[t,t] to q ⊙ dq and to k ⊙ dk; it is left out of
        # both for the gate's gradient, where it would cancel and leave only rounding
        dA_self = tl.reshape(tl.reduce(tl.where(rows[:, None] == rows[None, :], dA, 0.0), 1, add), [C, 1])
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
            q, k, gc = _chunk_keys(q_ptr, k_ptr, gc_ptr, b, h, rows, ks, T, T_pad, H, K, SCALAR_GATE)
            gl = _gate_rows(gc_ptr, b, h, last, ks, T_pad, H, K, SCALAR_GATE)
            S = chunk_state_tile(states_ptr, bh, n, NC, ks, vs, K, V)
            D = chunk_state_tile(dstates_ptr, bh, n, NC, ks, vs, K, V)
            if NEED_DG and not SCALAR_GATE:
                after = _after_chunk(states_ptr, final_ptr, last_ptr, D, bh, h, n, NC, ks, vs, H, K, V, VARLEN)
            decay = tl.exp(gc)
            if not SCALAR_GATE:
                to_end = _to_chunk_end(g_ptr, gc_ptr, b, h, rows, ks, t0 + C - 1, T, T_pad, floor, H, K, SCALAR_GATE, HAS_G)
                to_end = to_end * (sigma * sigma_last)
            if SCALAR_GATE:
                dq_state = sigma * decay * dot(do.to(S.dtype), tl.trans(S), PRECISION) * scale
                dk_state = to_end * dot(v.to(D.dtype), tl.trans(D), PRECISION)
                dq = dot(dA, _wide_operand(k, v), PRECISION) * scale + dq_state
                dk = dot(tl.trans(dA), _wide_operand(q, v), PRECISION) * scale + dk_state
                if NEED_DG:
                    scores += dot(_wide_operand(q, v), tl.trans(_wide_operand(k, v)), PRECISION)
                    through_q += tl.reduce(q * dq_state, 1, add, keep_dims=True)
                    through_k += tl.reduce(k * dk_state, 1, add, keep_dims=True)
                    kept = tl.reduce(tl.reduce(S.to(tl.float32) * D.to(tl.float32), 1, add, keep_dims=True), 0, add, keep_dims=True)
                    through_state += kept * tl.exp(gl) * sigma_last
            else:
                dq = dot(dA, _wide_operand(k / decay, v), PRECISION)
                dq = decay * (dq + sigma * dot(do.to(S.dtype), tl.trans(S), PRECISION)) * scale
                dk = dot(tl.trans(dA), _wide_operand(q * decay, v), PRECISION) / decay
                dk = dk * scale + to_end * dot(v.to(D.dtype), tl.trans(D), PRECISION)
                if NEED_DG:
                    dG = q * dq - k * dk
                    dg = tl.associative_scan(dG, 0, add, reverse=True) + after
                    _store_gate_gradient(dg, g_ptr, dg_ptr, b, h, rows, ks, T, floor, H, K)
            store_rows(dq_ptr, dq + (scale * dA_self) * k, b, h, rows, ks, T, H, K)
            store_rows(dk_ptr, dk + (scale * dA_self) * q, b, h, rows, ks, T, H, K)
        if NEED_DG and SCALAR_GATE:
            # a log decay added at step r scales: the pairs (t, s) of the chunk with
            # t >= r > s; the state's part of the outputs t >= r (through q); the part of
            # the leaving state written at steps t < r (through k); and the entering
            # state's part of the leaving state. Everything later sees the chunk through
            # the leaving state, so this is all of ∂L/∂g_r.
            pairs = straddling_pairs(scale * dA_pairs * scores, rows)
            from_q = tl.associative_scan(through_q, 0, add, reverse=True)
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
                D = chunk_state_tile(dstates_ptr, bh, n, NC, ks, vs, K, V)
                after = _after_chunk(states_ptr, final_ptr, last_ptr, D, bh, h, n, NC, ks, vs, H, K, V, VARLEN)
                dg = tl.associative_scan(load_rows(dG_ptr, b, h, rows, ks, T, H, K), 0, add, reverse=True) + after
                _store_gate_gradient(dg, g_ptr, dg_ptr, b, h, rows, ks, T, floor, H, K)


@triton.jit
def chunk_values_backward(
    q_ptr, k_ptr, do_ptr, g_ptr, gc_ptr, sc_ptr, dstates_ptr, dv_ptr, T, T_pad, NC, scale, floor,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BKD: tl.constexpr, KP: tl.constexpr, C: tl.constexpr, c: tl.constexpr,
    SCALAR_GATE: tl.constexpr, HAS_G: tl.constexpr, HAS_SIGN: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per chunk and value tile: dv = scale · A_{s<=t}ᵀ do + (σ σ_last k ⊙
    exp(gc_last - gc)) D_n as 64-row products, A as in `chunk_outputs`; chunks
    decaying too strongly for them go through their sub-chunks."""
    vb, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = (bh // H).to(tl.int64), bh % H
    t0 = n * C
    if _chunk_is_fast(gc_ptr, b, h, t0, T_pad, H, K, KP, C, SCALAR_GATE):
        rows = t0 + tl.arange(0, C)
        vs = vb * BV + tl.arange(0, BV)
        do = load_rows(do_ptr, b, h, rows, vs, T, H, V)
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
            q, k, gc = _chunk_keys(q_ptr, k_ptr, gc_ptr, b, h, rows, ks, T, T_pad, H, K, SCALAR_GATE)
            D = chunk_state_tile(dstates_ptr, bh, n, NC, ks, vs, K, V)
            if SCALAR_GATE:
                # the decays multiply Aᵀ after the loop
                scores_t += dot(_wide_operand(k, do), tl.trans(_wide_operand(q, do)), PRECISION)
            else:
                # Aᵀ[s, t] = (k_s ⊙ exp(-gc_s)) · (q_t ⊙ exp(gc_t))
                decay = tl.exp(gc)
                scores_t += dot(_wide_operand(k / decay, do), tl.trans(_wide_operand(q * decay, do)), PRECISION)
            if not SCALAR_GATE:
                to_end = _to_chunk_end(g_ptr, gc_ptr, b, h, rows, ks, t0 + C - 1, T, T_pad, floor, H, K, SCALAR_GATE, HAS_G)
            dv += dot((k * to_end).to(D.dtype), D, PRECISION)
        if SCALAR_GATE:
            scores_t = scores_t * tl.trans(_pair_decays(g_ptr, b, h, rows, T, floor, H, HAS_G, False))
        scores_t = tl.where(rows[None, :] >= rows[:, None], scores_t, 0.0) * sigma * tl.reshape(sigma, [1, C])
        dv = dv * (sigma * sigma_last) + scale * dot(scores_t.to(dt), do, PRECISION)
        store_rows(dv_ptr, dv, b, h, rows, vs, T, H, V)
    else:
        for i in range(C // c):
            _subchunk_values_backward(
                n * (C // c) + i, vb, bh, q_ptr, k_ptr, do_ptr, gc_ptr, dstates_ptr, dv_ptr, T, T_pad, NC, scale,
                H, K, V, BKD, BV, C, c, PRECISION,
            )


@triton.jit
def recurrent(
    q_ptr, k_ptr, v_ptr, g_ptr, sign_ptr, h0_ptr, o_ptr, hT_ptr, cu_ptr, T, scale, floor,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_G: tl.constexpr, SCALAR_GATE: tl.constexpr, HAS_SIGN: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, VARLEN: tl.constexpr,
):
    """One program per (sequence, head, value tile): the state stays in registers for the
    whole loop over time. With T = 1 this is one decoding step."""
    h, nh, start, end, ks, vs, S = common.decoding_program(
        cu_ptr, h0_ptr, T, H, K, V, BK, BV, HAS_H0, VARLEN
    )
    for t in range(start, end):
        q, k, v = common.load_step_qkv(q_ptr, k_ptr, v_ptr, t, h, ks, vs, H, K, V)
        if HAS_G:
            if SCALAR_GATE:
                decay = tl.exp(tl.maximum(tl.load(g_ptr + t * H + h).to(tl.float32), floor))
            else:
                decay = tl.exp(tl.maximum(common.load_step(g_ptr, t, h, ks, H, K), floor))[:, None]
            if HAS_SIGN:
                decay = decay * tl.load(sign_ptr + t * H + h).to(tl.float32)
            S = S * decay
        S += k[:, None] * v[None, :]
        common.read_out_step(S, q, o_ptr, scale, t, h, vs, H, V)
    if STORE_FINAL:
        common.store_state_tile(hT_ptr, S, nh, ks, vs, K, V)
