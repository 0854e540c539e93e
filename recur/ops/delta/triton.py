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

With WALK_FUSES["outputs"] off, the walk only stores the chunk-entering states and U, and
the outputs come from one program per chunk and value tile afterwards (the walk is then
shorter and has more of the chip's parallelism to itself, at the price of the states'
round trip through memory).

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
-inf (a reset) is clamped to GATE_FLOOR, whose exp is 0 in float32 just as exp(-inf), and
passes no gradient. The kernels compute in float32 whatever the input dtype (float64
inputs are rounded to float32 on the way in; results come back in float64): matrix
products are TF32x3 (about float32 accuracy) for float32 inputs, TF32 for 16-bit ones,
and TF32x3 for the inverse whatever the inputs.

Decoding kernel: one program per (sequence, head, block of value columns) keeps its
columns of the state in registers for the whole loop over time: the update mixes the key
rows of the state only, so value columns evolve independently. With T = 1 it is one
decoding step that reads the state once and writes it once. No gradients.

Legend: B batch, T time, H heads, K key width, V value width, C chunk, NC chunks per
sequence; `bh` one (batch, head) pair, `nh` one (sequence, head).
"""

from __future__ import annotations

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
# exp(GATE_FLOOR) is 0 in float32, so clamping changes no float32 result; the chunk sums of
# clamped gates stay finite (sums of -inf would give NaN as their differences).
GATE_FLOOR = -128.0
MAX_HEAD_DIM = 256
# Fixed tiles and warps (no autotuning, so the first call only compiles): value tiles of 32
# columns for the walks over chunks (more programs for long single sequences) and for the
# per-chunk kernels' loops over values; the whole key width is one tile.
VALUE_TILE = 32
# key columns per step of the key-block gradient kernel's loops (bounds its shared memory)
KEY_BLOCK = 64
WARPS = {"prepare": 8, "walk": 4, "gradient": 8}
# One stage: no multi-buffered prefetch of the next chunk's 64 × K tiles, which would need
# more shared memory than an H100 has at K = 128 in float32.
STAGES = 1
# Whether the sequential walks over chunks also do the work within each chunk that does
# not depend on the state (True), or leave it to kernels with one program per chunk that
# run before or after them (False): the forward's outputs, from the states and U the walk
# stores, and the backward's scale (Q Kᵀ ⊙ e)ᵀ dO part of dU. Apart, the walks are
# shorter but the outputs cost a round trip of the states through memory.
WALK_FUSES = {"outputs": True, "intra_gradient": True}

# tl.sum / tl.cumsum are kernels of Triton's own (compiled or interpreted according to
# TRITON_INTERPRET when Triton is first imported); tl.reduce and tl.associative_scan with
# Triton's adder follow this module.
_add = tl.standard._sum_combine


def _pow2(n: int, least: int = 16) -> int:
    return max(least, triton.next_power_of_2(n))


def _precision(dtype: torch.dtype) -> str:
    # float32 inputs: three TF32 tensor-core products per product (about float32 accuracy;
    # IEEE products unroll into FMA code that takes minutes to compile at K = 128);
    # 16-bit inputs: TF32 products of float32 operands, still finer than the inputs themselves
    return "tf32x3" if dtype in (torch.float32, torch.float64) else "tf32"


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _load_rows(ptr, b, h, rows, cols, T, H: tl.constexpr, X: tl.constexpr):
    """Rows `rows` of one head of an input [B, T, H, X] as float32 [R, BX], zeros outside."""
    return load_rows(ptr, b, h, rows, cols, T, H, X).to(tl.float32)


@triton.jit
def _buffer_offsets(bh, rows, cols, T_pad, X: tl.constexpr):
    """Offsets of rows of one head in a float32 work buffer [B·H, T_pad, X]."""
    return (bh * T_pad + rows)[:, None] * X + cols[None, :]


@triton.jit
def _two_sum(a, a_error, b, b_error):
    """(a + a_error) + (b + b_error) as a float32 sum and its rounding error (TwoSum: the
    error of a + b is exact in float32), the errors of both terms added to it."""
    total = a + b
    b_part = total - a
    error = (a - (total - b_part)) + (b - b_part)
    return total, (a_error + b_error) + error


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
    return _dot(q, tl.trans(k), PRECISION) * _decays(gc, gc_err, causal)


@triton.jit
def _prepare_kernel(
    k_ptr, v_ptr, beta_ptr, g_ptr, gc_ptr, gc_err_ptr, w_ptr, uv_ptr, tinv_ptr, T, T_pad, floor,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, LOG2_C: tl.constexpr, HAS_G: tl.constexpr, STORE_T: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """gc, T = (I + A)⁻¹, W = T (β exp(gc) ⊙ K) and U_v = T (β ⊙ V) of one chunk."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), bh % H
    bh = bh.to(tl.int64)
    idx = tl.arange(0, C)
    rows = n * C + idx
    ks = tl.arange(0, BK)
    k = _load_rows(k_ptr, b, h, rows, ks, T, H, K)
    beta = tl.load(beta_ptr + (b * T + rows) * H + h, mask=rows < T, other=0.0).to(tl.float32)
    if HAS_G:
        g = tl.load(g_ptr + (b * T + rows) * H + h, mask=rows < T, other=0.0).to(tl.float32)
        g = tl.maximum(g, floor)
    else:
        g = tl.full([C], 0.0, tl.float32)
    # the running sums with their rounding errors: differences of nearby sums stay exact
    gc, gc_err = tl.associative_scan((g, tl.full([C], 0.0, tl.float32)), 0, _two_sum)
    tl.store(gc_ptr + bh * T_pad + rows, gc)
    tl.store(gc_err_ptr + bh * T_pad + rows, gc_err)
    A = beta[:, None] * _dot(k, tl.trans(k), PRECISION) * _decays(gc, gc_err, idx[:, None] > idx[None, :])
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
        X = X - _dot(X, _dot(A_off, X, "tf32x3"), "tf32x3")
    if STORE_T:
        tl.store(tinv_ptr + _buffer_offsets(bh, rows, idx, T_pad, C), X)
    W = _dot(X, k * (beta * tl.exp(gc))[:, None], PRECISION)
    tl.store(w_ptr + _buffer_offsets(bh, rows, ks, T_pad, K), W, mask=ks[None, :] < K)
    for vb in range((V + BV - 1) // BV):
        vs = vb * BV + tl.arange(0, BV)
        v = _load_rows(v_ptr, b, h, rows, vs, T, H, V)
        U_v = _dot(X, v * beta[:, None], PRECISION)
        tl.store(uv_ptr + _buffer_offsets(bh, rows, vs, T_pad, V), U_v, mask=vs[None, :] < V)


@triton.jit
def _walk_kernel(
    q_ptr, k_ptr, gc_ptr, gc_err_ptr, w_ptr, uv_ptr, h0_ptr, o_ptr, u_ptr, states_ptr, hT_ptr, cu_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, HAS_H0: tl.constexpr, OUTPUT: tl.constexpr, STORE_U: tl.constexpr,
    STORE_STATES: tl.constexpr, STORE_FINAL: tl.constexpr, VARLEN: tl.constexpr, PRECISION: tl.constexpr,
):
    """The chunks of one sequence in order, for one head and value tile: U = U_v − W S,
    the outputs, and S ← exp(gc_C) S + (K ⊙ exp(gc_C − gc))ᵀ U."""
    vb, sh = tl.program_id(0), tl.program_id(1)
    b, h, first, count = sequence_chunks(sh, cu_ptr, NC, H, VARLEN)
    bh = b * H + h
    sh = sh.to(tl.int64)
    idx = tl.arange(0, C)
    ks = tl.arange(0, BK)
    vs = vb * BV + tl.arange(0, BV)
    tile = (ks[:, None] < K) & (vs[None, :] < V)
    tile_offsets = ks[:, None] * V + vs[None, :]
    S = state_tile_or_zeros(h0_ptr, sh, ks, vs, K, V, HAS_H0)
    causal = idx[:, None] >= idx[None, :]
    for i in range(count):
        n = first + i
        rows = n * C + idx
        if STORE_STATES:
            tl.store(states_ptr + (bh * NC + n) * K * V + tile_offsets, S, mask=tile)
        k = _load_rows(k_ptr, b, h, rows, ks, T, H, K)
        gc, gc_err, gl, to_end = _gates(gc_ptr, gc_err_ptr, bh, n, T_pad, C)
        W = tl.load(w_ptr + _buffer_offsets(bh, rows, ks, T_pad, K), mask=ks[None, :] < K, other=0.0)
        U = tl.load(uv_ptr + _buffer_offsets(bh, rows, vs, T_pad, V), mask=vs[None, :] < V, other=0.0)
        U -= _dot(W, S, PRECISION)
        if STORE_U:
            tl.store(u_ptr + _buffer_offsets(bh, rows, vs, T_pad, V), U, mask=vs[None, :] < V)
        if OUTPUT:
            q = _load_rows(q_ptr, b, h, rows, ks, T, H, K)
            scores = _intra_scores(q, k, gc, gc_err, causal, PRECISION)
            o = _dot(q * tl.exp(gc)[:, None], S, PRECISION) + _dot(scores, U, PRECISION)
            store_rows(o_ptr, o * scale, b, h, rows, vs, T, H, V)
        k_to_end = k * to_end[:, None]
        S = S * tl.exp(gl) + _dot(tl.trans(k_to_end), U, PRECISION)
    if STORE_FINAL:
        tl.store(hT_ptr + sh * K * V + tile_offsets, S, mask=tile)


@triton.jit
def _reverse_walk_kernel(
    q_ptr, k_ptr, do_ptr, gc_ptr, gc_err_ptr, w_ptr, du_ptr, dstates_ptr, dht_ptr, dh0_ptr, cu_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, HAS_DHT: tl.constexpr, INTRA_GIVEN: tl.constexpr, VARLEN: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """The chunks of one sequence backwards, for one head and value tile: D is the adjoint
    of the state leaving the chunk; stores D per chunk and dU (adding to the scale
    (Q Kᵀ ⊙ e)ᵀ dO that `_intra_gradient_kernel` left in du_ptr when INTRA_GIVEN)."""
    vb, sh = tl.program_id(0), tl.program_id(1)
    b, h, first, count = sequence_chunks(sh, cu_ptr, NC, H, VARLEN)
    bh = b * H + h
    sh = sh.to(tl.int64)
    idx = tl.arange(0, C)
    ks = tl.arange(0, BK)
    vs = vb * BV + tl.arange(0, BV)
    tile = (ks[:, None] < K) & (vs[None, :] < V)
    tile_offsets = ks[:, None] * V + vs[None, :]
    D = state_tile_or_zeros(dht_ptr, sh, ks, vs, K, V, HAS_DHT)
    causal = idx[:, None] >= idx[None, :]
    for i in range(count):
        n = first + count - 1 - i
        rows = n * C + idx
        tl.store(dstates_ptr + (bh * NC + n) * K * V + tile_offsets, D, mask=tile)
        q = _load_rows(q_ptr, b, h, rows, ks, T, H, K)
        k = _load_rows(k_ptr, b, h, rows, ks, T, H, K)
        do = _load_rows(do_ptr, b, h, rows, vs, T, H, V)
        gc, gc_err, gl, to_end = _gates(gc_ptr, gc_err_ptr, bh, n, T_pad, C)
        W = tl.load(w_ptr + _buffer_offsets(bh, rows, ks, T_pad, K), mask=ks[None, :] < K, other=0.0)
        if INTRA_GIVEN:
            dU = tl.load(du_ptr + _buffer_offsets(bh, rows, vs, T_pad, V), mask=vs[None, :] < V, other=0.0)
        else:
            dU = _dot(tl.trans(_intra_scores(q, k, gc, gc_err, causal, PRECISION)), do, PRECISION) * scale
        dU += _dot(k * to_end[:, None], D, PRECISION)
        tl.store(du_ptr + _buffer_offsets(bh, rows, vs, T_pad, V), dU, mask=vs[None, :] < V)
        q_decayed = q * (tl.exp(gc) * scale)[:, None]
        D = D * tl.exp(gl) + _dot(tl.trans(q_decayed), do, PRECISION) - _dot(tl.trans(W), dU, PRECISION)
    tl.store(dh0_ptr + sh * K * V + tile_offsets, D, mask=tile)


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
def _outputs_kernel(
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
    S = tl.load(states_ptr + (bh * NC + n) * K * V + ks[:, None] * V + vs[None, :], mask=(ks[:, None] < K) & (vs[None, :] < V), other=0.0)
    U = tl.load(u_ptr + _buffer_offsets(bh, rows, vs, T_pad, V), mask=vs[None, :] < V, other=0.0)
    o = _dot(q * tl.exp(gc)[:, None], S, PRECISION) + _dot(scores, U, PRECISION)
    store_rows(o_ptr, o * scale, b, h, rows, vs, T, H, V)


@triton.jit
def _intra_gradient_kernel(
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
    dU = _dot(tl.trans(scores), _load_rows(do_ptr, b, h, rows, vs, T, H, V), PRECISION) * scale
    tl.store(du_ptr + _buffer_offsets(bh, rows, vs, T_pad, V), dU, mask=vs[None, :] < V)


@triton.jit
def _gradient_values_kernel(
    v_ptr, beta_ptr, do_ptr, uv_ptr, u_ptr, du_ptr, tinv_ptr, states_ptr, dstates_ptr,
    dv_ptr, dOSt_ptr, UDt_ptr, dRk_ptr, dOUt_ptr, dRvUvt_ptr, dbeta_ptr, SD_ptr, T, T_pad, NC,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    C: tl.constexpr, PRECISION: tl.constexpr,
):
    """The sums over value columns of one chunk, one value tile at a time: dv, dO Sᵀ, U Dᵀ,
    dR_k = Tᵀ dW with dW = −dU Sᵀ, dO Uᵀ, dR_v U_vᵀ, v · dR_v per row and ⟨S, D⟩."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), bh % H
    bh = bh.to(tl.int64)
    idx = tl.arange(0, C)
    rows = n * C + idx
    ks = tl.arange(0, BK)
    kmask = ks[None, :] < K
    beta = tl.load(beta_ptr + (b * T + rows) * H + h, mask=rows < T, other=0.0).to(tl.float32)
    Tinv = tl.load(tinv_ptr + _buffer_offsets(bh, rows, idx, T_pad, C))
    dO_St = tl.full([C, BK], 0.0, tl.float32)
    U_Dt = tl.full([C, BK], 0.0, tl.float32)
    dW = tl.full([C, BK], 0.0, tl.float32)
    dO_Ut = tl.full([C, C], 0.0, tl.float32)
    dRv_Uvt = tl.full([C, C], 0.0, tl.float32)
    v_dRv = tl.full([C], 0.0, tl.float32)
    S_dot_D = tl.full([BK], 0.0, tl.float32)
    state_base = (bh * NC + n) * K * V
    for vb in range((V + BV - 1) // BV):
        vs = vb * BV + tl.arange(0, BV)
        vmask = vs[None, :] < V
        tile = (ks[:, None] < K) & vmask
        S = tl.load(states_ptr + state_base + ks[:, None] * V + vs[None, :], mask=tile, other=0.0)
        D = tl.load(dstates_ptr + state_base + ks[:, None] * V + vs[None, :], mask=tile, other=0.0)
        do = _load_rows(do_ptr, b, h, rows, vs, T, H, V)
        v = _load_rows(v_ptr, b, h, rows, vs, T, H, V)
        U = tl.load(u_ptr + _buffer_offsets(bh, rows, vs, T_pad, V), mask=vmask, other=0.0)
        U_v = tl.load(uv_ptr + _buffer_offsets(bh, rows, vs, T_pad, V), mask=vmask, other=0.0)
        dU = tl.load(du_ptr + _buffer_offsets(bh, rows, vs, T_pad, V), mask=vmask, other=0.0)
        dO_St += _dot(do, tl.trans(S), PRECISION)
        U_Dt += _dot(U, tl.trans(D), PRECISION)
        # U = U_v − W S
        dW -= _dot(dU, tl.trans(S), PRECISION)
        dO_Ut += _dot(do, tl.trans(U), PRECISION)
        # U_v = T (β ⊙ V): its right-hand side's gradient is Tᵀ dU
        dR_v = _dot(tl.trans(Tinv), dU, PRECISION)
        store_rows(dv_ptr, dR_v * beta[:, None], b, h, rows, vs, T, H, V)
        v_dRv += tl.reduce(v * dR_v, 1, _add)
        dRv_Uvt += _dot(dR_v, tl.trans(U_v), PRECISION)
        S_dot_D += tl.reduce(S * D, 1, _add)
    # W = T (β exp(gc) ⊙ K): its right-hand side's gradient is Tᵀ dW
    dR_k = _dot(tl.trans(Tinv), dW, PRECISION)
    tl.store(dOSt_ptr + _buffer_offsets(bh, rows, ks, T_pad, K), dO_St, mask=kmask)
    tl.store(UDt_ptr + _buffer_offsets(bh, rows, ks, T_pad, K), U_Dt, mask=kmask)
    tl.store(dRk_ptr + _buffer_offsets(bh, rows, ks, T_pad, K), dR_k, mask=kmask)
    tl.store(dOUt_ptr + _buffer_offsets(bh, rows, idx, T_pad, C), dO_Ut)
    tl.store(dRvUvt_ptr + _buffer_offsets(bh, rows, idx, T_pad, C), dRv_Uvt)
    tl.store(dbeta_ptr + bh * T_pad + rows, v_dRv)
    tl.store(SD_ptr + bh * NC + n, tl.reduce(S_dot_D, 0, _add))


@triton.jit
def _gradient_keys_kernel(
    q_ptr, k_ptr, beta_ptr, g_ptr, gc_ptr, gc_err_ptr, w_ptr, dOSt_ptr, UDt_ptr, dRk_ptr, dOUt_ptr, dRvUvt_ptr,
    vdRv_ptr, SD_ptr, dq_ptr, dk_ptr, dbeta_ptr, dg_ptr, T, T_pad, NC, scale, floor,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, C: tl.constexpr, HAS_G: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dq, dk, dβ, dg of one chunk from the sums over values, one block of key columns at a
    time: first the C × C sums over keys, then each block's gradients."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), bh % H
    bh = bh.to(tl.int64)
    idx = tl.arange(0, C)
    rows = n * C + idx
    beta = tl.load(beta_ptr + (b * T + rows) * H + h, mask=rows < T, other=0.0).to(tl.float32)
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
        ks = kb * BK + tl.arange(0, BK)
        kmask = ks[None, :] < K
        q = _load_rows(q_ptr, b, h, rows, ks, T, H, K)
        k = _load_rows(k_ptr, b, h, rows, ks, T, H, K)
        W = tl.load(w_ptr + _buffer_offsets(bh, rows, ks, T_pad, K), mask=kmask, other=0.0)
        dR_k = tl.load(dRk_ptr + _buffer_offsets(bh, rows, ks, T_pad, K), mask=kmask, other=0.0)
        QKt += _dot(q, tl.trans(k), PRECISION)
        KKt += _dot(k, tl.trans(k), PRECISION)
        dRk_Wt += _dot(dR_k, tl.trans(W), PRECISION)
        k_dRk += tl.reduce(k * dR_k, 1, _add)

    # outputs: o = scale [(q ⊙ exp(gc)) S + (Q Kᵀ ⊙ e) U]; dscores is ∂L/∂(Q Kᵀ)
    dO_Ut = tl.load(dOUt_ptr + _buffer_offsets(bh, rows, idx, T_pad, C))
    dscores = tl.where(causal, dO_Ut, 0.0) * decay * scale
    # the lower-triangular system's coefficients A = β ⊙ (K Kᵀ ⊙ e), strictly below the diagonal
    dRv_Uvt = tl.load(dRvUvt_ptr + _buffer_offsets(bh, rows, idx, T_pad, C))
    dA = -tl.where(strict, dRv_Uvt + dRk_Wt, 0.0)
    dKKt = dA * decay_strict * beta[:, None]
    dbeta = tl.load(vdRv_ptr + bh * T_pad + rows) + to_step * k_dRk + tl.reduce(dA * decay_strict * KKt, 1, _add)
    tl.store(dbeta_ptr + (b * T + rows) * H + h, dbeta.to(dbeta_ptr.dtype.element_ty), mask=rows < T)

    through_q = tl.full([C], 0.0, tl.float32)
    through_k = tl.full([C], 0.0, tl.float32)
    for kb in range((K + BK - 1) // BK):
        ks = kb * BK + tl.arange(0, BK)
        kmask = ks[None, :] < K
        q = _load_rows(q_ptr, b, h, rows, ks, T, H, K)
        k = _load_rows(k_ptr, b, h, rows, ks, T, H, K)
        dR_k = tl.load(dRk_ptr + _buffer_offsets(bh, rows, ks, T_pad, K), mask=kmask, other=0.0)
        dO_St = tl.load(dOSt_ptr + _buffer_offsets(bh, rows, ks, T_pad, K), mask=kmask, other=0.0)
        U_Dt = tl.load(UDt_ptr + _buffer_offsets(bh, rows, ks, T_pad, K), mask=kmask, other=0.0)
        dq_state = dO_St * (to_step * scale)[:, None]
        dq = dq_state + _dot(dscores, k, PRECISION)
        # leaving state: S' = exp(gc_C) S + (K ⊙ exp(gc_C − gc))ᵀ U
        dk_state = U_Dt * to_end[:, None]
        dk = _dot(tl.trans(dscores), q, PRECISION) + dk_state + dR_k * (beta * to_step)[:, None]
        dk += _dot(dKKt, k, PRECISION) + _dot(tl.trans(dKKt), k, PRECISION)
        store_rows(dq_ptr, dq, b, h, rows, ks, T, H, K)
        store_rows(dk_ptr, dk, b, h, rows, ks, T, H, K)
        through_q += tl.reduce(q * dq_state, 1, _add)
        through_k += tl.reduce(k * dk_state, 1, _add)

    if HAS_G:
        # A log decay added at step r scales: the pairs (t, s) of the chunk with t >= r > s
        # (in the outputs' scores and in the system A); exp(gc_t) for t >= r (the entering
        # state's part of the outputs, through q, and W's β exp(gc) ⊙ k); exp(gc_C − gc_t)
        # for t < r (the leaving state's writes, through k); and exp(gc_C) of the entering
        # state in the leaving one. Later chunks see this one only through the leaving
        # state, so that is all of ∂L/∂g_r; each route is summed among its own terms.
        pairs = straddling_pairs(tl.where(strict, dscores * QKt + dKKt * KKt, 0.0), idx)
        from_q = tl.associative_scan(tl.reshape(through_q + beta * to_step * k_dRk, [C, 1]), 0, _add, reverse=True)
        from_k = sum_before(tl.reshape(through_k, [C, 1]), idx)
        through_state = tl.exp(gl) * tl.load(SD_ptr + bh * NC + n)
        dg = tl.reshape(pairs + from_q + from_k, [C]) + through_state
        g = tl.load(g_ptr + (b * T + rows) * H + h, mask=rows < T, other=0.0).to(tl.float32)
        # clamped decays (-inf included) pass no gradient, as the clamp would
        dg = tl.where(g < floor, 0.0, dg)
        tl.store(dg_ptr + (b * T + rows) * H + h, dg.to(dg_ptr.dtype.element_ty), mask=rows < T)


@triton.jit
def _recurrent_delta_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, g_ptr, h0_ptr, o_ptr, hT_ptr, cu_ptr, T, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_G: tl.constexpr, HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, VARLEN: tl.constexpr,
):
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
        beta = tl.load(beta_ptr + t * H + h).to(tl.float32)
        if HAS_G:
            S = S * tl.exp(tl.load(g_ptr + t * H + h).to(tl.float32))
        # the state's prediction for k_t is replaced by v_t at rate β_t
        new_value = beta * (v - tl.reduce(S * k[:, None], 0, _add))
        S += k[:, None] * new_value[None, :]
        o = tl.reduce(S * q[:, None], 0, _add) * scale
        tl.store(o_ptr + (t * H + h) * V + vs, o.to(o_ptr.dtype.element_ty), mask=vs < V)
    if STORE_FINAL:
        tl.store(hT_ptr + tile_offsets, S, mask=tile)


def _launch(K: int, V: int) -> dict:
    """Tiles of the walks and of the value loops: the whole key width, 32 value columns."""
    return {"BK": _pow2(K), "BV": _pow2(min(V, VALUE_TILE))}


def _prepare(k, v, beta, g, T_pad, store_t):
    """gc [2, B·H, T_pad] (the log decays summed from each chunk's start, and the sums'
    rounding errors), W [B·H, T_pad, K], U_v [B·H, T_pad, V] and, for the backward,
    T = (I + A)⁻¹ per chunk as [B·H, T_pad, C]."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    device = k.device
    gc = torch.empty(2, B * H, T_pad, device=device, dtype=torch.float32)
    W = torch.empty(B * H, T_pad, K, device=device, dtype=torch.float32)
    U_v = torch.empty(B * H, T_pad, V, device=device, dtype=torch.float32)
    tinv = torch.empty(B * H, T_pad, CHUNK, device=device, dtype=torch.float32) if store_t else gc
    cfg = _launch(K, V)
    _prepare_kernel[(T_pad // CHUNK, B * H)](
        k, v, beta, g if g is not None else beta, gc[0], gc[1], W, U_v, tinv, T, T_pad, GATE_FLOOR,
        H=H, K=K, V=V, BK=cfg["BK"], BV=_pow2(min(V, 2 * VALUE_TILE)), C=CHUNK,
        LOG2_C=CHUNK.bit_length() - 1, HAS_G=g is not None,
        STORE_T=store_t, PRECISION=_precision(k.dtype), num_warps=WARPS["prepare"], num_stages=STAGES,
    )
    return gc, W, U_v, (tinv if store_t else None)


def _walk(q, k, v, gc, W, U_v, h0, scale, T_pad, output, store_final, store_for_backward, cu_chunks):
    """Runs the chunks in order: o (when `output`), the final states [N, H, K, V] (when
    `store_final`; N = B, or the sequences of a ChunkLayout whose cu_chunks are given), and
    the chunk-entering states [B·H, NC, K, V] and U [B·H, T_pad, V] (when `store_for_backward`)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    NC = T_pad // CHUNK
    n = B if cu_chunks is None else cu_chunks.numel() - 1
    device = q.device
    o = torch.empty_like(v) if output else None
    final = torch.empty(n, H, K, V, device=device, dtype=torch.float32) if store_final else None
    states = torch.empty(B * H, NC, K, V, device=device, dtype=torch.float32) if store_for_backward else None
    U = torch.empty(B * H, T_pad, V, device=device, dtype=torch.float32) if store_for_backward else None
    cfg = _launch(K, V)
    # stands in for the buffers this launch neither reads nor writes
    unused = gc
    _walk_kernel[(triton.cdiv(V, cfg["BV"]), n * H)](
        q, k, gc[0], gc[1], W, U_v, h0 if h0 is not None else unused, o if output else unused, U if U is not None else unused,
        states if states is not None else unused, final if final is not None else unused,
        cu_chunks if cu_chunks is not None else unused, T, T_pad, NC, scale,
        H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], C=CHUNK, HAS_H0=h0 is not None, OUTPUT=output,
        STORE_U=store_for_backward, STORE_STATES=store_for_backward, STORE_FINAL=store_final,
        VARLEN=cu_chunks is not None, PRECISION=_precision(q.dtype), num_warps=WARPS["walk"], num_stages=STAGES,
    )
    return o, final, states, U


def _outputs(q, k, v, gc, U, states, scale, T_pad):
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = torch.empty_like(v)
    cfg = _launch(K, V)
    _outputs_kernel[(triton.cdiv(V, cfg["BV"]), T_pad // CHUNK, B * H)](
        q, k, gc[0], gc[1], U, states, o, T, T_pad, T_pad // CHUNK, scale,
        H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], C=CHUNK, PRECISION=_precision(q.dtype),
        num_warps=WARPS["gradient"], num_stages=STAGES,
    )
    return o


class _ChunkDeltaRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, g, h0, scale, output_final_state, cu_chunks):
        T_pad = max(1, triton.cdiv(q.shape[1], CHUNK)) * CHUNK
        gc, W, U_v, _ = _prepare(k, v, beta, g, T_pad, store_t=False)
        fused = WALK_FUSES["outputs"]
        o, final, states, U = _walk(
            q, k, v, gc, W, U_v, h0, scale, T_pad, output=fused, store_final=output_final_state,
            store_for_backward=not fused, cu_chunks=cu_chunks,
        )
        if not fused:
            o = _outputs(q, k, v, gc, U, states, scale, T_pad)
        ctx.save_for_backward(q, k, v, beta, g, h0, cu_chunks)
        ctx.scale = scale
        return o, final

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, beta, g, h0, cu_chunks = ctx.saved_tensors
        scale = ctx.scale
        B, T, H, K = q.shape
        V = v.shape[-1]
        T_pad = max(1, triton.cdiv(T, CHUNK)) * CHUNK
        NC = T_pad // CHUNK
        device = q.device
        precision = _precision(q.dtype)
        cfg = _launch(K, V)
        # recomputed rather than kept from the forward: T, W, U_v, the states and U
        gc, W, U_v, tinv = _prepare(k, v, beta, g, T_pad, store_t=True)
        _, _, states, U = _walk(
            q, k, v, gc, W, U_v, h0, scale, T_pad, output=False, store_final=False, store_for_backward=True,
            cu_chunks=cu_chunks,
        )
        do = torch.zeros_like(v) if do is None else do.contiguous()
        dht = None if dht is None else dht.contiguous()
        dstates = torch.empty(B * H, NC, K, V, device=device, dtype=torch.float32)
        dU = torch.empty(B * H, T_pad, V, device=device, dtype=torch.float32)
        n = B if cu_chunks is None else cu_chunks.numel() - 1
        dh0 = torch.empty(n, H, K, V, device=device, dtype=torch.float32)
        intra_given = not WALK_FUSES["intra_gradient"]
        if intra_given:
            _intra_gradient_kernel[(triton.cdiv(V, cfg["BV"]), NC, B * H)](
                q, k, do, gc[0], gc[1], dU, T, T_pad, scale,
                H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], C=CHUNK, PRECISION=precision,
                num_warps=WARPS["gradient"], num_stages=STAGES,
            )
        _reverse_walk_kernel[(triton.cdiv(V, cfg["BV"]), n * H)](
            q, k, do, gc[0], gc[1], W, dU, dstates, dht if dht is not None else dh0, dh0,
            cu_chunks if cu_chunks is not None else dh0, T, T_pad, NC, scale,
            H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], C=CHUNK, HAS_DHT=dht is not None,
            INTRA_GIVEN=intra_given, VARLEN=cu_chunks is not None, PRECISION=precision,
            num_warps=WARPS["walk"], num_stages=STAGES,
        )
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dbeta = torch.empty_like(beta)
        dg = torch.empty_like(g) if g is not None else None
        # sums over value columns per chunk: [B·H, T_pad, K] and [B·H, T_pad, C] rows
        dO_St, U_Dt, dR_k = (torch.empty(B * H, T_pad, K, device=device, dtype=torch.float32) for _ in range(3))
        dO_Ut, dRv_Uvt = (torch.empty(B * H, T_pad, CHUNK, device=device, dtype=torch.float32) for _ in range(2))
        v_dRv = torch.empty(B * H, T_pad, device=device, dtype=torch.float32)
        S_dot_D = torch.empty(B * H, NC, device=device, dtype=torch.float32)
        _gradient_values_kernel[(NC, B * H)](
            v, beta, do, U_v, U, dU, tinv, states, dstates, dv, dO_St, U_Dt, dR_k, dO_Ut, dRv_Uvt,
            v_dRv, S_dot_D, T, T_pad, NC,
            H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], C=CHUNK, PRECISION=precision,
            num_warps=WARPS["gradient"], num_stages=STAGES,
        )
        _gradient_keys_kernel[(NC, B * H)](
            q, k, beta, g if g is not None else beta, gc[0], gc[1], W, dO_St, U_Dt, dR_k, dO_Ut, dRv_Uvt,
            v_dRv, S_dot_D, dq, dk, dbeta, dg if dg is not None else dbeta, T, T_pad, NC, scale, GATE_FLOOR,
            H=H, K=K, BK=_pow2(min(K, KEY_BLOCK)), C=CHUNK, HAS_G=g is not None, PRECISION=precision,
            num_warps=WARPS["gradient"], num_stages=STAGES,
        )
        dh0 = dh0.to(h0.dtype) if h0 is not None else None
        return dq, dk, dv, dbeta, dg, dh0, None, None, None


def triton_delta_rule(q, k, v, *, beta, g, scale, initial_state, output_final_state, cu_seqlens):
    """The (gated) delta rule, chunkwise, in fused Triton kernels (forward and backward); the
    arguments of `naive_delta_rule`, already checked, with K, V <= 256. The final state is
    float32 (float64 for float64 inputs, which the kernels round to float32 on the way in).
    """
    _check_head_widths(q, v)
    out_dtype = v.dtype
    wide = any(x is not None and x.dtype == torch.float64 for x in (q, k, v, beta, g))
    if wide:
        # the kernels compute in float32; float64 inputs are rounded once on the way in
        q, k, v, beta = q.float(), k.float(), v.float(), beta.float()
        g = None if g is None else g.float()
    if initial_state is not None and initial_state.dtype == torch.float64:
        initial_state = initial_state.float()
    layout = None
    if cu_seqlens is not None:
        # every sequence on whole chunks of one row; the zeros after each sequence's end
        # (k = 0, β = 0, g = 0) leave its state unchanged
        layout = ChunkLayout(cu_seqlens, CHUNK)
        q, k, v, beta = (layout.pack(x) for x in (q, k, v, beta))
        g = None if g is None else layout.pack(g)
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    g = None if g is None else g.contiguous()
    h0 = None if initial_state is None else initial_state.contiguous()
    cu_chunks = None if layout is None else layout.cu_chunks
    # the kernels write the final state only when it is asked for
    o, final = _ChunkDeltaRule.apply(q, k, v, beta, g, h0, scale, output_final_state, cu_chunks)
    if layout is not None:
        o = layout.unpack(o)
    if wide and final is not None:
        final = final.double()
    return o.to(out_dtype), final


def triton_delta_rule_recurrent(q, k, v, *, beta, g, scale, initial_state, cu_seqlens):
    """The (gated) delta rule step by step in one fused kernel, for decoding (no gradients);
    the arguments of `naive_delta_rule`, already checked, with K, V <= 256. With T = 1 it is
    one decoding step that reads the state once and writes it once. The final state is
    float32 (float64 for float64 inputs).
    """
    K, V = q.shape[-1], v.shape[-1]
    _check_head_widths(q, v)
    if torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, beta, g, initial_state)
    ):
        raise ValueError(
            "triton_delta_rule_recurrent computes no gradients; call it under torch.no_grad() "
            "for decoding, or use triton_delta_rule for training"
        )
    B, T, H, _ = q.shape
    n = B if cu_seqlens is None else cu_seqlens.numel() - 1
    o = torch.empty(B, T, H, V, device=q.device, dtype=v.dtype)
    final = torch.empty(n, H, K, V, device=q.device, dtype=torch.float32)
    final_dtype = torch.float64 if torch.float64 in (q.dtype, v.dtype) else torch.float32
    BK, BV = triton.next_power_of_2(K), min(triton.next_power_of_2(V), 32)
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    g = None if g is None else g.contiguous()
    h0 = None if initial_state is None else initial_state.contiguous()
    _recurrent_delta_kernel[(triton.cdiv(V, BV), n * H)](
        q, k, v, beta, g if g is not None else beta, h0 if h0 is not None else final, o, final,
        cu_seqlens if cu_seqlens is not None else final, T, scale,
        H=H, K=K, V=V, BK=BK, BV=BV, HAS_G=g is not None, HAS_H0=h0 is not None,
        STORE_FINAL=True, VARLEN=cu_seqlens is not None, num_warps=4,
    )
    return o, final.to(final_dtype)


def _check_head_widths(q: torch.Tensor, v: torch.Tensor) -> None:
    K, V = q.shape[-1], v.shape[-1]
    if K > MAX_HEAD_DIM or V > MAX_HEAD_DIM:
        raise ValueError(
            f"the Triton delta-rule kernels take head widths up to {MAX_HEAD_DIM}; got K = {K}, V = {V}"
            " (use impl='chunk')"
        )
