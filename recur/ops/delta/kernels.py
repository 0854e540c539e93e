"""The (gated) delta rule as fused Triton kernels: chunkwise training (forward and
backward) and a step-by-step kernel for decoding.

Parallelizing Linear Transformers with the Delta Rule over Sequence Length
(Yang, Wang, Zhang, Shen, Kim; arXiv:2406.06484), §3; Gated Delta Networks (Yang, Kautz,
Hatamizadeh; arXiv:2412.06464), §3.3:

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,      o_t = scale · S_tᵀ q_t

Chunkwise form (chunk.py's docstring has the derivation). Time is cut into chunks of
C = 64 steps; gc is the log decay summed from the chunk start (inclusive) and
e_ts = exp(gc_t − gc_s) for s <= t inside one chunk, so every exponent is <= 0.

- prepare (one program per chunk and head): A_ts = β_t e_ts k_tᵀ k_s (s < t), the inverse
  T = (I + A)⁻¹ by recursive block doubling (blocks of 1, 2, 4, … 32 rows: the inverse of
  [[L11, 0], [L21, L22]] is [[X11, 0], [−X22 L21 X11, X22]]), W = T (β exp(gc) ⊙ K) and
  U_v = T (β ⊙ V). Nothing here depends on the state.
- walk (one program per head and value tile, a loop over chunks with the state's columns
  in registers): U = U_v − W S, o = scale · [(q ⊙ exp(gc)) S + (Q Kᵀ ⊙ e) U] and
  S ← exp(gc_C) S + (K ⊙ exp(gc_C − gc))ᵀ U.

With WALK_FUSES["outputs"] off (a launch setting, triton.py), the walk only stores the
chunk-entering states and U, and the outputs come from one program per chunk and value
tile afterwards (the walk is then shorter and has more of the chip's parallelism to
itself, at the price of the states' round trip through memory).

The backward recomputes T, W, U_v, the chunk-entering states S_n and U, then walks the
chunks backwards with the adjoint D of the state leaving the chunk (one program per head
and value tile):

    dU = scale (Q Kᵀ ⊙ e)ᵀ dO + (K ⊙ exp(gc_C − gc)) D
    D  ← exp(gc_C) D + scale (Q ⊙ exp(gc))ᵀ dO − Wᵀ dU

(with WALK_FUSES["intra_gradient"] off, dU's first term, which needs no state, comes from
one program per chunk and value tile before the walk), and two programs per chunk turn
S, D, U and dU into dq, dk, dv, dβ and dg (the first sums over value tiles, the second
runs over blocks of key columns): through U = U_v − W S
(dW = −dU Sᵀ), the triangular solves (dR = Tᵀ dX for each right-hand side,
dA = −(dR_v U_vᵀ + dR_k Wᵀ) below the diagonal) and the decays: a log decay g_r scales the
pairs e_ts with t >= r > s, exp(gc_t) for t >= r, exp(gc_C − gc_t) for t < r and exp(gc_C);
∂L/∂g_r sums those four routes, each among its own terms.

Accuracy: gc grows along the chunk (to -256 at -4 per step), and a bare gc_t − gc_s of
nearby steps would keep only the digits its size leaves (about 1e-5 of e_ts there). The
prepare kernel sums gc with compensation (TwoSum), stores each sum's rounding error next
to it, and every decay is (gc_t − gc_s) + (err_t − err_s): as accurate as the log decays
themselves, at the price of elementwise work only, which matters in the walks over chunks.
For the same reason the gate's gradient never takes a route as the difference of larger
sums. Outputs and every gradient stay within about 4e-7 of float64 at any gate strength.

Packed batches (cu_seqlens) run as one row in which every sequence starts on a chunk
boundary (ChunkLayout): the walks run each sequence's chunks from its own state; every
per-chunk program is that of any batch.

No factor exp(x) with x > 0 is formed, so strong gates cannot overflow. A log decay of
-inf (a reset) is clamped to GATE_FLOOR (`floor`, a launch setting), whose exp is 0 in
float32 just as exp(-inf), and passes no gradient. The kernels compute in float32
whatever the input dtype (float64 inputs are rounded to float32 on the way in; results
come back in float64): matrix products are TF32x3 (about float32 accuracy) for float32
inputs, TF32 for 16-bit ones, and TF32x3 for the inverse whatever the inputs.

Decoding kernel: one program per (sequence, head, block of value columns) keeps its
columns of the state in registers for the whole loop over time: the update mixes the key
rows of the state only, so value columns evolve independently. With T = 1 it is one
decoding step that reads the state once and writes it once. No gradients.

Launch settings, autograd and the public forms are in triton.py. Legend: B batch, T time,
H heads, K key width, V value width, C chunk, NC chunks per sequence; `bh` one (batch,
head) pair, `sh` / `nh` one (sequence, head).
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
    store_per_head,
    store_rows,
    straddling_pairs,
    sum_before,
    two_sum,
)


@triton.jit
def _load_rows(ptr, b, h, rows, cols, T, H: tl.constexpr, X: tl.constexpr):
    """Rows `rows` of one head of an input [B, T, H, X] as float32 [R, BX], zeros outside."""
    return load_rows(ptr, b, h, rows, cols, T, H, X).to(tl.float32)


@triton.jit
def _buffer_offsets(bh, rows, cols, T_pad, X: tl.constexpr):
    """Offsets of rows of one head in a float32 work buffer [B·H, T_pad, X]."""
    return (bh * T_pad + rows)[:, None] * X + cols[None, :]


@triton.jit
def _load_buffer(ptr, bh, rows, cols, T_pad, X: tl.constexpr):
    """Rows of one head of a float32 work buffer [B·H, T_pad, X], zeros in columns >= X."""
    offsets = _buffer_offsets(bh, rows, cols, T_pad, X)
    return tl.load(ptr + offsets, mask=cols[None, :] < X, other=0.0)


@triton.jit
def _store_buffer(ptr, x, bh, rows, cols, T_pad, X: tl.constexpr):
    """x into rows of one head of a float32 work buffer [B·H, T_pad, X], columns < X."""
    tl.store(ptr + _buffer_offsets(bh, rows, cols, T_pad, X), x, mask=cols[None, :] < X)


@triton.jit
def _chunk_program(H: tl.constexpr, C: tl.constexpr):
    """The start of a program of one chunk and head (grid: chunks, B·H): (chunk n, batch
    row, head, bh, positions in the chunk, rows)."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), bh % H
    bh = bh.to(tl.int64)
    idx = tl.arange(0, C)
    return n, b, h, bh, idx, n * C + idx


@triton.jit
def _key_block(
    q_ptr, k_ptr, dRk_ptr, b, h, bh, rows, kb, T, T_pad, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
):
    """The columns ks of key block kb, and q, k and dR_k of those columns for the chunk's
    rows: (ks, q, k, dR_k)."""
    ks = kb * BK + tl.arange(0, BK)
    q = _load_rows(q_ptr, b, h, rows, ks, T, H, K)
    k = _load_rows(k_ptr, b, h, rows, ks, T, H, K)
    return ks, q, k, _load_buffer(dRk_ptr, bh, rows, ks, T_pad, K)


@triton.jit
def _decays(gc, gc_err, pairs):
    """e_ts = exp(gc_t − gc_s) [C, C] where `pairs`, 0 elsewhere, the difference of the
    running sums taken with their rounding errors (the module's note on accuracy)."""
    return tl.exp(tl.where(pairs, (gc[:, None] - gc[None, :]) + (gc_err[:, None] - gc_err[None, :]), float("-inf")))


@triton.jit
def _gates(gc_ptr, gc_err_ptr, bh, n, T_pad, C: tl.constexpr):
    """gc [C], its rounding errors [C], gc at the chunk's last row, and exp(gc_C − gc) [C]
    (from each row to the chunk's end) of chunk n of one head."""
    rows = n * C + tl.arange(0, C)
    gc = tl.load(gc_ptr + bh * T_pad + rows)
    gc_err = tl.load(gc_err_ptr + bh * T_pad + rows)
    gl = tl.load(gc_ptr + bh * T_pad + n * C + C - 1)
    gl_err = tl.load(gc_err_ptr + bh * T_pad + n * C + C - 1)
    return gc, gc_err, gl, tl.exp((gl - gc) + (gl_err - gc_err))


@triton.jit
def _intra_scores(q, k, gc, gc_err, causal, PRECISION: tl.constexpr):
    """(Q Kᵀ ⊙ e)[t, s] of one chunk where `causal` (s <= t), with e_ts = exp(gc_t − gc_s).
    (The walks make `causal` once, outside their loops: made inside, it costs registers.)"""
    return dot(q, tl.trans(k), PRECISION) * _decays(gc, gc_err, causal)


@triton.jit
def prepare(
    k_ptr, v_ptr, beta_ptr, g_ptr, gc_ptr, gc_err_ptr, w_ptr, uv_ptr, tinv_ptr, T, T_pad, floor,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, LOG2_C: tl.constexpr, HAS_G: tl.constexpr, STORE_T: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """gc, T = (I + A)⁻¹, W = T (β exp(gc) ⊙ K) and U_v = T (β ⊙ V) of one chunk."""
    n, b, h, bh, idx, rows = _chunk_program(H, C)
    ks = tl.arange(0, BK)
    k = _load_rows(k_ptr, b, h, rows, ks, T, H, K)
    beta = load_per_head(beta_ptr, b, h, rows, T, H)
    if HAS_G:
        g = load_per_head(g_ptr, b, h, rows, T, H)
        g = tl.maximum(g, floor)
    else:
        g = tl.full([C], 0.0, tl.float32)
    # the running sums with their rounding errors: differences of nearby sums stay exact
    gc, gc_err = tl.associative_scan((g, tl.full([C], 0.0, tl.float32)), 0, two_sum)
    tl.store(gc_ptr + bh * T_pad + rows, gc)
    tl.store(gc_err_ptr + bh * T_pad + rows, gc_err)
    A = beta[:, None] * dot(k, tl.trans(k), PRECISION) * _decays(gc, gc_err, idx[:, None] > idx[None, :])
    # (I + A)⁻¹ by recursive doubling: X holds the inverses of the diagonal blocks of `size`
    # rows; each block of twice that size, [[L11, 0], [L21, L22]], has the inverse
    # [[X11, 0], [−X22 L21 X11, X22]], so X ← X − X (A_off X) with A_off the L21 blocks.
    # Every product is of true inverses of sub-systems (bounded), never of powers of A,
    # and in float32 accuracy (TF32x3) whatever the inputs.
    X = tl.where(idx[:, None] == idx[None, :], 1.0, 0.0)
    for level in range(LOG2_C):
        size = 1 << level
        row_block = idx // size
        lower_left = (row_block[:, None] % 2 == 1) & (row_block[None, :] == row_block[:, None] - 1)
        A_off = tl.where(lower_left, A, 0.0)
        X = X - dot(X, dot(A_off, X, "tf32x3"), "tf32x3")
    if STORE_T:
        tl.store(tinv_ptr + _buffer_offsets(bh, rows, idx, T_pad, C), X)
    W = dot(X, k * (beta * tl.exp(gc))[:, None], PRECISION)
    _store_buffer(w_ptr, W, bh, rows, ks, T_pad, K)
    for vb in range((V + BV - 1) // BV):
        vs = vb * BV + tl.arange(0, BV)
        v = _load_rows(v_ptr, b, h, rows, vs, T, H, V)
        U_v = dot(X, v * beta[:, None], PRECISION)
        _store_buffer(uv_ptr, U_v, bh, rows, vs, T_pad, V)


@triton.jit
def walk(
    q_ptr, k_ptr, gc_ptr, gc_err_ptr, w_ptr, uv_ptr, h0_ptr, o_ptr, u_ptr, states_ptr, hT_ptr, cu_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, HAS_H0: tl.constexpr, OUTPUT: tl.constexpr, STORE_U: tl.constexpr,
    STORE_STATES: tl.constexpr, STORE_FINAL: tl.constexpr, VARLEN: tl.constexpr, PRECISION: tl.constexpr,
):
    """The chunks of one sequence in order, for one head and value tile: U = U_v − W S,
    the outputs, and S ← exp(gc_C) S + (K ⊙ exp(gc_C − gc))ᵀ U."""
    vb, sh = tl.program_id(0), tl.program_id(1)
    b, h, bh, first, count, idx, ks, vs, tile, mask, S = common.walk_program(
        0, vb, sh, cu_ptr, h0_ptr, NC, H, K, V, BK, BV, C, HAS_H0, VARLEN
    )
    causal = idx[:, None] >= idx[None, :]
    for i in range(count):
        n = first + i
        rows = n * C + idx
        if STORE_STATES:
            common.store_walk_tile(states_ptr, S, bh * NC + n, tile, mask, K, V)
        k = _load_rows(k_ptr, b, h, rows, ks, T, H, K)
        gc, gc_err, gl, to_end = _gates(gc_ptr, gc_err_ptr, bh, n, T_pad, C)
        W = _load_buffer(w_ptr, bh, rows, ks, T_pad, K)
        U = _load_buffer(uv_ptr, bh, rows, vs, T_pad, V)
        U -= dot(W, S, PRECISION)
        if STORE_U:
            _store_buffer(u_ptr, U, bh, rows, vs, T_pad, V)
        if OUTPUT:
            q = _load_rows(q_ptr, b, h, rows, ks, T, H, K)
            scores = _intra_scores(q, k, gc, gc_err, causal, PRECISION)
            o = dot(q * tl.exp(gc)[:, None], S, PRECISION) + dot(scores, U, PRECISION)
            store_rows(o_ptr, o * scale, b, h, rows, vs, T, H, V)
        k_to_end = k * to_end[:, None]
        S = S * tl.exp(gl) + dot(tl.trans(k_to_end), U, PRECISION)
    if STORE_FINAL:
        common.store_walk_tile(hT_ptr, S, sh, tile, mask, K, V)


@triton.jit
def reverse_walk(
    q_ptr, k_ptr, do_ptr, gc_ptr, gc_err_ptr, w_ptr, du_ptr, dstates_ptr, dht_ptr, dh0_ptr, cu_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, HAS_DHT: tl.constexpr, INTRA_GIVEN: tl.constexpr, VARLEN: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """The chunks of one sequence backwards, for one head and value tile: D is the adjoint
    of the state leaving the chunk; stores D per chunk and dU (adding to the scale
    (Q Kᵀ ⊙ e)ᵀ dO that `intra_gradient` left in du_ptr when INTRA_GIVEN)."""
    vb, sh = tl.program_id(0), tl.program_id(1)
    b, h, bh, first, count, idx, ks, vs, tile, mask, D = common.walk_program(
        0, vb, sh, cu_ptr, dht_ptr, NC, H, K, V, BK, BV, C, HAS_DHT, VARLEN
    )
    causal = idx[:, None] >= idx[None, :]
    for i in range(count):
        n = first + count - 1 - i
        rows = n * C + idx
        common.store_walk_tile(dstates_ptr, D, bh * NC + n, tile, mask, K, V)
        q = _load_rows(q_ptr, b, h, rows, ks, T, H, K)
        k = _load_rows(k_ptr, b, h, rows, ks, T, H, K)
        do = _load_rows(do_ptr, b, h, rows, vs, T, H, V)
        gc, gc_err, gl, to_end = _gates(gc_ptr, gc_err_ptr, bh, n, T_pad, C)
        W = _load_buffer(w_ptr, bh, rows, ks, T_pad, K)
        if INTRA_GIVEN:
            dU = _load_buffer(du_ptr, bh, rows, vs, T_pad, V)
        else:
            dU = dot(tl.trans(_intra_scores(q, k, gc, gc_err, causal, PRECISION)), do, PRECISION) * scale
        dU += dot(k * to_end[:, None], D, PRECISION)
        _store_buffer(du_ptr, dU, bh, rows, vs, T_pad, V)
        q_decayed = q * (tl.exp(gc) * scale)[:, None]
        D = D * tl.exp(gl) + dot(tl.trans(q_decayed), do, PRECISION) - dot(tl.trans(W), dU, PRECISION)
    common.store_walk_tile(dh0_ptr, D, sh, tile, mask, K, V)


@triton.jit
def _chunk_scores(q_ptr, k_ptr, gc_ptr, gc_err_ptr, b, h, bh, rows, T, T_pad, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr):
    """q [C, BK] (float32), gc [C] and (Q Kᵀ ⊙ e) [C, C] of the chunk `rows` of one head."""
    ks = tl.arange(0, BK)
    idx = tl.arange(0, rows.shape[0])
    q = _load_rows(q_ptr, b, h, rows, ks, T, H, K)
    k = _load_rows(k_ptr, b, h, rows, ks, T, H, K)
    gc = tl.load(gc_ptr + bh * T_pad + rows)
    gc_err = tl.load(gc_err_ptr + bh * T_pad + rows)
    return q, gc, _intra_scores(q, k, gc, gc_err, idx[:, None] >= idx[None, :], PRECISION)


@triton.jit
def outputs(
    q_ptr, k_ptr, gc_ptr, gc_err_ptr, u_ptr, states_ptr, o_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, PRECISION: tl.constexpr,
):
    """o = scale · [(q ⊙ exp(gc)) S + (Q Kᵀ ⊙ e) U] of one chunk and value tile, from the
    state entering the chunk and U that the walk stored."""
    vb, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    b, h = bh // H, bh % H
    rows = n * C + tl.arange(0, C)
    ks = tl.arange(0, BK)
    vs = vb * BV + tl.arange(0, BV)
    q, gc, scores = _chunk_scores(q_ptr, k_ptr, gc_ptr, gc_err_ptr, b, h, bh, rows, T, T_pad, H, K, BK, PRECISION)
    S = chunk_state_tile(states_ptr, bh, n, NC, ks, vs, K, V)
    U = _load_buffer(u_ptr, bh, rows, vs, T_pad, V)
    o = dot(q * tl.exp(gc)[:, None], S, PRECISION) + dot(scores, U, PRECISION)
    store_rows(o_ptr, o * scale, b, h, rows, vs, T, H, V)


@triton.jit
def intra_gradient(
    q_ptr, k_ptr, do_ptr, gc_ptr, gc_err_ptr, du_ptr, T, T_pad, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, PRECISION: tl.constexpr,
):
    """The part of dU within one chunk and value tile, scale (Q Kᵀ ⊙ e)ᵀ dO, which needs no
    state: the reverse walk adds the rest."""
    vb, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    b, h = bh // H, bh % H
    rows = n * C + tl.arange(0, C)
    vs = vb * BV + tl.arange(0, BV)
    _, _, scores = _chunk_scores(q_ptr, k_ptr, gc_ptr, gc_err_ptr, b, h, bh, rows, T, T_pad, H, K, BK, PRECISION)
    dU = dot(tl.trans(scores), _load_rows(do_ptr, b, h, rows, vs, T, H, V), PRECISION) * scale
    _store_buffer(du_ptr, dU, bh, rows, vs, T_pad, V)


@triton.jit
def gradient_values(
    v_ptr, beta_ptr, do_ptr, uv_ptr, u_ptr, du_ptr, tinv_ptr, states_ptr, dstates_ptr,
    dv_ptr, dOSt_ptr, UDt_ptr, dRk_ptr, dOUt_ptr, dRvUvt_ptr, dbeta_ptr, SD_ptr, T, T_pad, NC,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, PRECISION: tl.constexpr,
):
    """The sums over value columns of one chunk, one value tile at a time: dv, dO Sᵀ, U Dᵀ,
    dR_k = Tᵀ dW with dW = −dU Sᵀ, dO Uᵀ, dR_v U_vᵀ, v · dR_v per row and ⟨S, D⟩."""
    n, b, h, bh, idx, rows = _chunk_program(H, C)
    ks = tl.arange(0, BK)
    beta = load_per_head(beta_ptr, b, h, rows, T, H)
    Tinv = tl.load(tinv_ptr + _buffer_offsets(bh, rows, idx, T_pad, C))
    dO_St = tl.full([C, BK], 0.0, tl.float32)
    U_Dt = tl.full([C, BK], 0.0, tl.float32)
    dW = tl.full([C, BK], 0.0, tl.float32)
    dO_Ut = tl.full([C, C], 0.0, tl.float32)
    dRv_Uvt = tl.full([C, C], 0.0, tl.float32)
    v_dRv = tl.full([C], 0.0, tl.float32)
    S_dot_D = tl.full([BK], 0.0, tl.float32)
    for vb in range((V + BV - 1) // BV):
        vs = vb * BV + tl.arange(0, BV)
        S = chunk_state_tile(states_ptr, bh, n, NC, ks, vs, K, V)
        D = chunk_state_tile(dstates_ptr, bh, n, NC, ks, vs, K, V)
        do = _load_rows(do_ptr, b, h, rows, vs, T, H, V)
        v = _load_rows(v_ptr, b, h, rows, vs, T, H, V)
        U = _load_buffer(u_ptr, bh, rows, vs, T_pad, V)
        U_v = _load_buffer(uv_ptr, bh, rows, vs, T_pad, V)
        dU = _load_buffer(du_ptr, bh, rows, vs, T_pad, V)
        dO_St += dot(do, tl.trans(S), PRECISION)
        U_Dt += dot(U, tl.trans(D), PRECISION)
        # U = U_v − W S
        dW -= dot(dU, tl.trans(S), PRECISION)
        dO_Ut += dot(do, tl.trans(U), PRECISION)
        # U_v = T (β ⊙ V): its right-hand side's gradient is Tᵀ dU
        dR_v = dot(tl.trans(Tinv), dU, PRECISION)
        store_rows(dv_ptr, dR_v * beta[:, None], b, h, rows, vs, T, H, V)
        v_dRv += tl.reduce(v * dR_v, 1, add)
        dRv_Uvt += dot(dR_v, tl.trans(U_v), PRECISION)
        S_dot_D += tl.reduce(S * D, 1, add)
    # W = T (β exp(gc) ⊙ K): its right-hand side's gradient is Tᵀ dW
    dR_k = dot(tl.trans(Tinv), dW, PRECISION)
    _store_buffer(dOSt_ptr, dO_St, bh, rows, ks, T_pad, K)
    _store_buffer(UDt_ptr, U_Dt, bh, rows, ks, T_pad, K)
    _store_buffer(dRk_ptr, dR_k, bh, rows, ks, T_pad, K)
    tl.store(dOUt_ptr + _buffer_offsets(bh, rows, idx, T_pad, C), dO_Ut)
    tl.store(dRvUvt_ptr + _buffer_offsets(bh, rows, idx, T_pad, C), dRv_Uvt)
    tl.store(dbeta_ptr + bh * T_pad + rows, v_dRv)
    tl.store(SD_ptr + bh * NC + n, tl.reduce(S_dot_D, 0, add))


@triton.jit
def gradient_keys(
    q_ptr, k_ptr, beta_ptr, g_ptr, gc_ptr, gc_err_ptr, w_ptr, dOSt_ptr, UDt_ptr, dRk_ptr, dOUt_ptr, dRvUvt_ptr,
    vdRv_ptr, SD_ptr, dq_ptr, dk_ptr, dbeta_ptr, dg_ptr, T, T_pad, NC, scale, floor,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, C: tl.constexpr, HAS_G: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dq, dk, dβ, dg of one chunk from the sums over values, one block of key columns at a
    time: first the C × C sums over keys, then each block's gradients."""
    n, b, h, bh, idx, rows = _chunk_program(H, C)
    beta = load_per_head(beta_ptr, b, h, rows, T, H)
    gc, gc_err, gl, to_end = _gates(gc_ptr, gc_err_ptr, bh, n, T_pad, C)
    to_step = tl.exp(gc)
    causal = idx[:, None] >= idx[None, :]
    strict = idx[:, None] > idx[None, :]
    decay = _decays(gc, gc_err, causal)
    decay_strict = tl.where(strict, decay, 0.0)

    QKt = tl.full([C, C], 0.0, tl.float32)
    KKt = tl.full([C, C], 0.0, tl.float32)
    dRk_Wt = tl.full([C, C], 0.0, tl.float32)
    k_dRk = tl.full([C], 0.0, tl.float32)
    for kb in range((K + BK - 1) // BK):
        ks, q, k, dR_k = _key_block(q_ptr, k_ptr, dRk_ptr, b, h, bh, rows, kb, T, T_pad, H, K, BK)
        W = _load_buffer(w_ptr, bh, rows, ks, T_pad, K)
        QKt += dot(q, tl.trans(k), PRECISION)
        KKt += dot(k, tl.trans(k), PRECISION)
        dRk_Wt += dot(dR_k, tl.trans(W), PRECISION)
        k_dRk += tl.reduce(k * dR_k, 1, add)

    # outputs: o = scale [(q ⊙ exp(gc)) S + (Q Kᵀ ⊙ e) U]; dscores is ∂L/∂(Q Kᵀ)
    dO_Ut = tl.load(dOUt_ptr + _buffer_offsets(bh, rows, idx, T_pad, C))
    dscores = tl.where(causal, dO_Ut, 0.0) * decay * scale
    # the lower-triangular system's coefficients A = β ⊙ (K Kᵀ ⊙ e), strictly below the diagonal
    dRv_Uvt = tl.load(dRvUvt_ptr + _buffer_offsets(bh, rows, idx, T_pad, C))
    dA = -tl.where(strict, dRv_Uvt + dRk_Wt, 0.0)
    dKKt = dA * decay_strict * beta[:, None]
    dbeta = tl.load(vdRv_ptr + bh * T_pad + rows) + to_step * k_dRk + tl.reduce(dA * decay_strict * KKt, 1, add)
    store_per_head(dbeta_ptr, dbeta, b, h, rows, T, H)

    through_q = tl.full([C], 0.0, tl.float32)
    through_k = tl.full([C], 0.0, tl.float32)
    for kb in range((K + BK - 1) // BK):
        ks, q, k, dR_k = _key_block(q_ptr, k_ptr, dRk_ptr, b, h, bh, rows, kb, T, T_pad, H, K, BK)
        dO_St = _load_buffer(dOSt_ptr, bh, rows, ks, T_pad, K)
        U_Dt = _load_buffer(UDt_ptr, bh, rows, ks, T_pad, K)
        dq_state = dO_St * (to_step * scale)[:, None]
        dq = dq_state + dot(dscores, k, PRECISION)
        # leaving state: S' = exp(gc_C) S + (K ⊙ exp(gc_C − gc))ᵀ U
        dk_state = U_Dt * to_end[:, None]
        dk = dot(tl.trans(dscores), q, PRECISION) + dk_state + dR_k * (beta * to_step)[:, None]
        dk += dot(dKKt, k, PRECISION) + dot(tl.trans(dKKt), k, PRECISION)
        store_rows(dq_ptr, dq, b, h, rows, ks, T, H, K)
        store_rows(dk_ptr, dk, b, h, rows, ks, T, H, K)
        through_q += tl.reduce(q * dq_state, 1, add)
        through_k += tl.reduce(k * dk_state, 1, add)

    if HAS_G:
        # A log decay added at step r scales: the pairs (t, s) of the chunk with t >= r > s
        # (in the outputs' scores and in the system A); exp(gc_t) for t >= r (the entering
        # state's part of the outputs, through q, and W's β exp(gc) ⊙ k); exp(gc_C − gc_t)
        # for t < r (the leaving state's writes, through k); and exp(gc_C) of the entering
        # state in the leaving one. Later chunks see this one only through the leaving
        # state, so that is all of ∂L/∂g_r; each route is summed among its own terms.
        pairs = straddling_pairs(tl.where(strict, dscores * QKt + dKKt * KKt, 0.0), idx)
        from_q = tl.associative_scan(tl.reshape(through_q + beta * to_step * k_dRk, [C, 1]), 0, add, reverse=True)
        from_k = sum_before(tl.reshape(through_k, [C, 1]), idx)
        through_state = tl.exp(gl) * tl.load(SD_ptr + bh * NC + n)
        dg = tl.reshape(pairs + from_q + from_k, [C]) + through_state
        g = load_per_head(g_ptr, b, h, rows, T, H)
        # clamped decays (-inf included) pass no gradient, as the clamp would
        dg = tl.where(g < floor, 0.0, dg)
        store_per_head(dg_ptr, dg, b, h, rows, T, H)


@triton.jit
def recurrent(
    q_ptr, k_ptr, v_ptr, beta_ptr, g_ptr, h0_ptr, o_ptr, hT_ptr, cu_ptr, T, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_G: tl.constexpr, HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, VARLEN: tl.constexpr,
):
    """One program per (sequence, head, value tile): the state's columns stay in registers
    for the whole loop over time. With T = 1 this is one decoding step."""
    h, nh, start, end, ks, vs, S = common.decoding_program(
        cu_ptr, h0_ptr, T, H, K, V, BK, BV, HAS_H0, VARLEN
    )
    for t in range(start, end):
        q, k, v = common.load_step_qkv(q_ptr, k_ptr, v_ptr, t, h, ks, vs, H, K, V)
        beta = tl.load(beta_ptr + t * H + h).to(tl.float32)
        if HAS_G:
            S = S * tl.exp(tl.load(g_ptr + t * H + h).to(tl.float32))
        # the state's prediction for k_t is replaced by v_t at rate β_t
        new_value = beta * (v - tl.reduce(S * k[:, None], 0, add))
        S += k[:, None] * new_value[None, :]
        common.read_out_step(S, q, o_ptr, scale, t, h, vs, H, V)
    if STORE_FINAL:
        common.store_state_tile(hT_ptr, S, nh, ks, vs, K, V)
