"""Triton kernels of the mLSTM family, chunkwise with two levels of tiles (TFLA).

Tiled Flash Linear Attention (Beck, Pöppel, Lippe, Hochreiter; arXiv:2503.14376), §3–4, for
the stabilised mLSTM of xLSTM (arXiv:2405.04517) and mLSTMsig:

    m_t = max(log f_t + m_{t-1}, log i_t)        (m_t = m_{t-1} for mLSTMsig)
    C_t = e^{log f_t + m_{t-1} − m_t} C_{t-1} + e^{log i_t − m_t} k_t v_tᵀ      (n_t likewise with k_t)
    h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, e^{−m_t}) + eps),   q̂_t = scale · q_t

First level: chunks of L steps. b_t is the log forget decay from the start of chunk c to
step t (inclusive), G_c = b_L the chunk's own and a_s = G_c − b_s + log i_s the log-weight of
step s in the state at the chunk's end. `chunk_states` walks the chunks of one head and
stores the state (C, n, m) entering every chunk and the final one:

    m_{c+1} = max(G_c + m_c, max_s a_s),
    C_{c+1} = e^{G_c + m_c − m_{c+1}} C_c + Σ_s e^{a_s − m_{c+1}} k_s v_sᵀ.

Second level: inside a chunk, steps go in tiles of BT queries and BT keys (L = a multiple of
BT), and the head widths in tiles of BK keys and BV values, so that a chunk may be much longer
than what one program holds. For query t of chunk c (log-weights LW[t, s] = b_t − b_s + log i_s,
s <= t in the chunk; from_state_t = b_t + m_c):

    m_t   = max(from_state_t, max_s LW[t, s])              (one pass over the key tiles)
    num_t = scale e^{from_state_t − m_t} q_tᵀ C_c + Σ_s scale (q_t·k_s) e^{LW[t, s] − m_t} v_s
    den_t = the same with n_c for C_c and 1 for v_s;   h_t = num_t / (max(|den_t|, e^{−m_t}) + eps)

b is kept as two float32 numbers (hi + lo, the float64 cumulative sum split), and LW takes the
difference of the hi parts and of the lo parts separately: under strong forgetting b reaches
−1000s within a chunk, where one float32 difference would lose four digits of a log-weight.

The backward pass (notation: dnum_t = ∂/∂h_t / z_t, dden_t the gradient through the
denominator, dA[t, s] = dnum_t·v_s + dden_t, A[t, s] = scale (q_t·k_s) e^{LW[t, s] − m_t}):
`reverse_states` walks the chunks backwards for the adjoints of the entering states
(dC_c = e^{G_c + m_c − m_{c+1}} dC_{c+1} + Σ_t scale e^{from_state_t − m_t} q_t dnum_tᵀ);
`query_gradients` gives dq, the row sums Σ_s dA ⊙ A (the log-weights' share of ∂/∂m_t) and
the inter-chunk exponent's gradient; `key_gradients` gives dk or dv and the column sums
(∂/∂log i_s), the state at the chunk's end included. The scalar chain of the max states and
the cumulative sums of the gates stay in PyTorch (triton.py).

Legend: T time, H heads, K key width, V value width, NC chunks, `bh` one (batch row, head)
pair. Gates and per-step buffers are [B·H, T_pad] (T_pad = NC · L); states [B·H, NC + 1, ...].
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..common.kernels import (
    add,
    dot,
    load_rows,
    state_tile,
    state_tile_or_zeros,
    store_rows,
    store_state_tile,
)

maximum = tl.standard._elementwise_max


@triton.jit
def _log_weights(bq_hi, bq_lo, bk_hi, bk_lo, log_i, rows, cols):
    """LW[t, s] = b_t − b_s + log i_s for query rows t and key columns s of one chunk, −inf
    where s > t."""
    lw = (bq_hi[:, None] - bk_hi[None, :]) + (bq_lo[:, None] - bk_lo[None, :]) + log_i[None, :]
    return tl.where(cols[None, :] <= rows[:, None], lw, float("-inf"))


@triton.jit
def _gates(hi_ptr, lo_ptr, li_ptr, bh, rows, T_pad):
    """b (hi, lo) and log i at `rows` of head bh ([B·H, T_pad] buffers)."""
    base = bh.to(tl.int64) * T_pad
    return tl.load(hi_ptr + base + rows), tl.load(lo_ptr + base + rows), tl.load(li_ptr + base + rows)


@triton.jit
def _step_max(hi_ptr, lo_ptr, li_ptr, bh, rows, first, stop, bq_hi, bq_lo, from_state, T_pad, BT: tl.constexpr):
    """m_t = max(from_state_t, max_{first <= s <= t} LW[t, s]) for the query rows `rows`
    (key tiles from `first` to `stop`, the end of the diagonal one)."""
    m = from_state
    for s0 in range(first, stop, BT):
        cols = s0 + tl.arange(0, BT)
        bk_hi, bk_lo, log_i = _gates(hi_ptr, lo_ptr, li_ptr, bh, cols, T_pad)
        lw = _log_weights(bq_hi, bq_lo, bk_hi, bk_lo, log_i, rows, cols)
        m = tl.maximum(m, tl.reduce(lw, 1, maximum))
    return m


@triton.jit
def _scores(q_ptr, k_ptr, b, h, rows, cols, T, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr):
    """q_t · k_s for query rows and key columns [BT, BT], summed over key tiles of BK."""
    S = tl.full([rows.shape[0], cols.shape[0]], 0.0, tl.float32)
    for k0 in range(0, K, BK):
        ks = k0 + tl.arange(0, BK)
        q = load_rows(q_ptr, b, h, rows, ks, T, H, K)
        k = load_rows(k_ptr, b, h, cols, ks, T, H, K)
        S += dot(q, tl.trans(k), PRECISION)
    return S


@triton.jit
def _score_gradients(dnum_ptr, v_ptr, dden, b, h, rows, cols, T, H: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr):
    """dA[t, s] = dnum_t · v_s + dden_t [BT, BT], summed over value tiles of BV."""
    dA = tl.full([rows.shape[0], cols.shape[0]], 0.0, tl.float32) + dden[:, None]
    for v0 in range(0, V, BV):
        vs = v0 + tl.arange(0, BV)
        dnum = load_rows(dnum_ptr, b, h, rows, vs, T, H, V)
        v = load_rows(v_ptr, b, h, cols, vs, T, H, V)
        dA += dot(dnum, tl.trans(v.to(dnum.dtype)), PRECISION)
    return dA


@triton.jit
def chunk_states(
    k_ptr, v_ptr, hi_ptr, lo_ptr, li_ptr, C0_ptr, n0_ptr, m0_ptr, C_ptr, n_ptr, m_ptr, T, T_pad, NC,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    L: tl.constexpr, BT: tl.constexpr, STABILISE: tl.constexpr, HAS_H0: tl.constexpr, PRECISION: tl.constexpr,
):
    """The states (C, n, m) entering every chunk and after the last, [B·H, NC + 1, ...]: one
    program per key tile, value tile and head, walking the chunks in order. The value tile
    0 programs also store n, the (0, 0) ones m."""
    kb, vb, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // H, bh % H
    ks = kb * BK + tl.arange(0, BK)
    vs = vb * BV + tl.arange(0, BV)
    C = state_tile_or_zeros(C0_ptr, bh, ks, vs, K, V, HAS_H0)
    if HAS_H0:
        n = tl.load(n0_ptr + bh.to(tl.int64) * K + ks, mask=ks < K, other=0.0).to(tl.float32)
        m = tl.load(m0_ptr + bh).to(tl.float32)
    else:
        n = tl.full([BK], 0.0, tl.float32)
        m = tl.full([], 0.0, tl.float32)
    base = bh.to(tl.int64) * T_pad
    for c in range(0, NC):
        row = bh.to(tl.int64) * (NC + 1) + c
        store_state_tile(C_ptr, C, row, ks, vs, K, V)
        tl.store(n_ptr + row * K + ks, n, mask=(ks < K) & ((ks * 0 + vb) == 0))
        tl.store(m_ptr + row + tl.arange(0, 1), m + tl.full([1], 0.0, tl.float32), mask=(tl.arange(0, 1) + kb + vb) == 0)
        end = c * L + L - 1
        G_hi, G_lo = tl.load(hi_ptr + base + end), tl.load(lo_ptr + base + end)
        G = G_hi + G_lo
        m_new = m
        if STABILISE:
            m_new = G + m
            for s0 in range(c * L, c * L + L, BT):
                rows = s0 + tl.arange(0, BT)
                b_hi, b_lo, log_i = _gates(hi_ptr, lo_ptr, li_ptr, bh, rows, T_pad)
                m_new = tl.maximum(m_new, tl.reduce((G_hi - b_hi) + (G_lo - b_lo) + log_i, 0, maximum))
        decay = tl.exp(G + m - m_new)
        C = C * decay
        n = n * decay
        for s0 in range(c * L, c * L + L, BT):
            rows = s0 + tl.arange(0, BT)
            b_hi, b_lo, log_i = _gates(hi_ptr, lo_ptr, li_ptr, bh, rows, T_pad)
            # e^{a_s − m_{c+1}}: the weight of step s in the state at the chunk's end
            weight = tl.exp((G_hi - b_hi) + (G_lo - b_lo) + log_i - m_new)
            k = load_rows(k_ptr, b, h, rows, ks, T, H, K)
            v = load_rows(v_ptr, b, h, rows, vs, T, H, V)
            written = (k.to(tl.float32) * weight[:, None])
            C += dot(tl.trans(written.to(v.dtype)), v, PRECISION)
            n += tl.reduce(written, 0, add)
        m = m_new
    row = bh.to(tl.int64) * (NC + 1) + NC
    store_state_tile(C_ptr, C, row, ks, vs, K, V)
    tl.store(n_ptr + row * K + ks, n, mask=(ks < K) & ((ks * 0 + vb) == 0))
    tl.store(m_ptr + row + tl.arange(0, 1), m + tl.full([1], 0.0, tl.float32), mask=(tl.arange(0, 1) + kb + vb) == 0)


@triton.jit
def chunk_outputs(
    q_ptr, k_ptr, v_ptr, hi_ptr, lo_ptr, li_ptr, C_ptr, n_ptr, m_ptr, h_ptr, mt_ptr, den_ptr, T, T_pad, NC, scale, eps,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    L: tl.constexpr, BT: tl.constexpr, STABILISE: tl.constexpr, PRECISION: tl.constexpr,
):
    """h for one tile of BT queries and BV values: the entering state's part (over key
    tiles), then the chunk's earlier key tiles and the diagonal one. The value tile 0
    programs also store m_t and the signed denominator, for the backward pass."""
    vb, tb, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // H, bh % H
    rows = tb * BT + tl.arange(0, BT)
    c = (tb * BT) // L
    first = c * L
    vs = vb * BV + tl.arange(0, BV)
    state = bh.to(tl.int64) * (NC + 1) + c
    m_in = tl.load(m_ptr + state)
    bq_hi, bq_lo, _ = _gates(hi_ptr, lo_ptr, li_ptr, bh, rows, T_pad)
    from_state = (bq_hi + bq_lo) + m_in
    if STABILISE:
        m = _step_max(hi_ptr, lo_ptr, li_ptr, bh, rows, first, tb * BT + BT, bq_hi, bq_lo, from_state, T_pad, BT)
    else:
        m = from_state * 0.0 + m_in
    weight = tl.exp(from_state - m) * scale
    num = tl.full([BT, BV], 0.0, tl.float32)
    den = tl.full([BT], 0.0, tl.float32)
    for k0 in range(0, K, BK):
        ks = k0 + tl.arange(0, BK)
        q = load_rows(q_ptr, b, h, rows, ks, T, H, K)
        C = state_tile(C_ptr, state, ks, vs, K, V)
        num += dot(q, C.to(q.dtype), PRECISION)
        n = tl.load(n_ptr + state * K + ks, mask=ks < K, other=0.0)
        den += tl.reduce(q.to(tl.float32) * n[None, :], 1, add)
    num = num * weight[:, None]
    den = den * weight
    for s0 in range(first, tb * BT + BT, BT):
        cols = s0 + tl.arange(0, BT)
        bk_hi, bk_lo, log_i = _gates(hi_ptr, lo_ptr, li_ptr, bh, cols, T_pad)
        lw = _log_weights(bq_hi, bq_lo, bk_hi, bk_lo, log_i, rows, cols)
        S = _scores(q_ptr, k_ptr, b, h, rows, cols, T, H, K, BK, PRECISION)
        # where, not a product: a key after t must not reach t even as 0 · inf
        A = tl.where(cols[None, :] <= rows[:, None], S * tl.exp(lw - m[:, None]) * scale, 0.0)
        v = load_rows(v_ptr, b, h, cols, vs, T, H, V)
        num += dot(A.to(v.dtype), v, PRECISION)
        den += tl.reduce(A, 1, add)
    z = tl.maximum(tl.abs(den), tl.exp(-m)) + eps
    store_rows(h_ptr, num / z[:, None], b, h, rows, vs, T, H, V)
    per_step = bh.to(tl.int64) * T_pad + rows
    first_tile = (rows * 0 + vb) == 0
    tl.store(mt_ptr + per_step, m, mask=first_tile)
    tl.store(den_ptr + per_step, den, mask=first_tile)


@triton.jit
def reverse_states(
    q_ptr, dnum_ptr, dden_ptr, hi_ptr, lo_ptr, m_ptr, mt_ptr, dCT_ptr, dnT_ptr, dC_ptr, dn_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    L: tl.constexpr, BT: tl.constexpr, HAS_DHT: tl.constexpr, PRECISION: tl.constexpr,
):
    """Adjoints of the states entering every chunk and after the last, [B·H, NC + 1, ...]:
    dC_c = e^{G_c + m_c − m_{c+1}} dC_{c+1} + Σ_t scale e^{from_state_t − m_t} q_t dnum_tᵀ
    (dn_c likewise with dden_t), walking the chunks backwards from the final state's."""
    kb, vb, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // H, bh % H
    ks = kb * BK + tl.arange(0, BK)
    vs = vb * BV + tl.arange(0, BV)
    dC = state_tile_or_zeros(dCT_ptr, bh, ks, vs, K, V, HAS_DHT)
    if HAS_DHT:
        dn = tl.load(dnT_ptr + bh.to(tl.int64) * K + ks, mask=ks < K, other=0.0).to(tl.float32)
    else:
        dn = tl.full([BK], 0.0, tl.float32)
    base = bh.to(tl.int64) * T_pad
    row = bh.to(tl.int64) * (NC + 1) + NC
    store_state_tile(dC_ptr, dC, row, ks, vs, K, V)
    tl.store(dn_ptr + row * K + ks, dn, mask=(ks < K) & ((ks * 0 + vb) == 0))
    for i in range(0, NC):
        c = NC - 1 - i
        row = bh.to(tl.int64) * (NC + 1) + c
        m_in, m_out = tl.load(m_ptr + row), tl.load(m_ptr + row + 1)
        end = c * L + L - 1
        G = tl.load(hi_ptr + base + end) + tl.load(lo_ptr + base + end)
        decay = tl.exp(G + m_in - m_out)
        dC = dC * decay
        dn = dn * decay
        for t0 in range(c * L, c * L + L, BT):
            rows = t0 + tl.arange(0, BT)
            from_state = (tl.load(hi_ptr + base + rows) + tl.load(lo_ptr + base + rows)) + m_in
            weight = tl.exp(from_state - tl.load(mt_ptr + base + rows)) * scale
            q = load_rows(q_ptr, b, h, rows, ks, T, H, K)
            dnum = load_rows(dnum_ptr, b, h, rows, vs, T, H, V)
            read = q.to(tl.float32) * weight[:, None]
            dC += dot(tl.trans(read.to(dnum.dtype)), dnum, PRECISION)
            dn += tl.reduce(read * tl.load(dden_ptr + base + rows)[:, None], 0, add)
        store_state_tile(dC_ptr, dC, row, ks, vs, K, V)
        tl.store(dn_ptr + row * K + ks, dn, mask=(ks < K) & ((ks * 0 + vb) == 0))


@triton.jit
def query_gradients(
    q_ptr, k_ptr, v_ptr, dnum_ptr, dden_ptr, hi_ptr, lo_ptr, li_ptr, C_ptr, n_ptr, m_ptr, mt_ptr,
    dq_ptr, rows_ptr, strict_rows_ptr, dexp_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    L: tl.constexpr, BT: tl.constexpr, PRECISION: tl.constexpr,
):
    """dq for one tile of BT queries and BK key columns; the key tile 0 programs also store
    Σ_s dA ⊙ A per query and the same sum over s < t only (every program computes the whole
    sums), and every program its key tile's share of the entering state's exponent gradient
    q_t · dq_t^state ([NKT, B·H, T_pad])."""
    kb, tb, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // H, bh % H
    rows = tb * BT + tl.arange(0, BT)
    c = (tb * BT) // L
    first = c * L
    ks = kb * BK + tl.arange(0, BK)
    state = bh.to(tl.int64) * (NC + 1) + c
    per_step = bh.to(tl.int64) * T_pad + rows
    m_in = tl.load(m_ptr + state)
    m = tl.load(mt_ptr + per_step)
    dden = tl.load(dden_ptr + per_step)
    bq_hi, bq_lo, _ = _gates(hi_ptr, lo_ptr, li_ptr, bh, rows, T_pad)
    weight = tl.exp((bq_hi + bq_lo) + m_in - m) * scale
    # the entering state's part: dq_t = scale e^{from_state_t − m_t} (C_c dnum_t + n_c dden_t)
    n = tl.load(n_ptr + state * K + ks, mask=ks < K, other=0.0)
    dq = dden[:, None] * n[None, :]
    for v0 in range(0, V, BV):
        vs = v0 + tl.arange(0, BV)
        dnum = load_rows(dnum_ptr, b, h, rows, vs, T, H, V)
        C = state_tile(C_ptr, state, ks, vs, K, V)
        dq += dot(dnum, tl.trans(C.to(dnum.dtype)), PRECISION)
    dq = dq * weight[:, None]
    q = load_rows(q_ptr, b, h, rows, ks, T, H, K)
    tl.store(dexp_ptr + kb.to(tl.int64) * tl.num_programs(2) * T_pad + per_step, tl.reduce(q.to(tl.float32) * dq, 1, add))
    row_sums = tl.full([BT], 0.0, tl.float32)
    strict_sums = tl.full([BT], 0.0, tl.float32)
    for s0 in range(first, tb * BT + BT, BT):
        cols = s0 + tl.arange(0, BT)
        bk_hi, bk_lo, log_i = _gates(hi_ptr, lo_ptr, li_ptr, bh, cols, T_pad)
        P = tl.exp(_log_weights(bq_hi, bq_lo, bk_hi, bk_lo, log_i, rows, cols) - m[:, None])
        causal = cols[None, :] <= rows[:, None]
        S = _scores(q_ptr, k_ptr, b, h, rows, cols, T, H, K, BK, PRECISION)
        dA = _score_gradients(dnum_ptr, v_ptr, dden, b, h, rows, cols, T, H, V, BV, PRECISION)
        dLW = tl.where(causal, dA * S * P * scale, 0.0)
        row_sums += tl.reduce(dLW, 1, add)
        strict_sums += tl.reduce(tl.where(cols[None, :] < rows[:, None], dLW, 0.0), 1, add)
        dS = tl.where(causal, dA * P * scale, 0.0)
        k = load_rows(k_ptr, b, h, cols, ks, T, H, K)
        dq += dot(dS.to(k.dtype), k, PRECISION)
    store_rows(dq_ptr, dq, b, h, rows, ks, T, H, K)
    tl.store(rows_ptr + per_step, row_sums, mask=(rows * 0 + kb) == 0)
    tl.store(strict_rows_ptr + per_step, strict_sums, mask=(rows * 0 + kb) == 0)


@triton.jit
def key_gradients(
    q_ptr, k_ptr, v_ptr, dnum_ptr, dden_ptr, hi_ptr, lo_ptr, li_ptr, dC_ptr, dn_ptr, m_ptr, mt_ptr, routed_ptr,
    dx_ptr, cols_ptr, strict_cols_ptr, dwrite_ptr, T, T_pad, NC, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    L: tl.constexpr, BT: tl.constexpr, VALUES: tl.constexpr, PRECISION: tl.constexpr,
):
    """dk (VALUES False, one tile of BK key columns) or dv (VALUES True, BV value columns)
    for one tile of BT keys: the chunk's later queries, then the state at the chunk's end.
    The dk programs of key tile 0 also store the column sums Σ_t dA ⊙ A plus the routed
    gradient of every m_t that this key's log-weight set (∂/∂log i_s, [B·H, T_pad]), the same
    sums over t > s only, and
    every dk program its key tile's share of the end state's gradient of e^{a_s − m_{c+1}}
    ([NKT, B·H, T_pad])."""
    xb, sb, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // H, bh % H
    cols = sb * BT + tl.arange(0, BT)
    c = (sb * BT) // L
    last = c * L + L
    bk_hi, bk_lo, log_i = _gates(hi_ptr, lo_ptr, li_ptr, bh, cols, T_pad)
    base = bh.to(tl.int64) * T_pad
    if VALUES:
        xs = xb * BV + tl.arange(0, BV)
        dx = tl.full([BT, BV], 0.0, tl.float32)
    else:
        xs = xb * BK + tl.arange(0, BK)
        dx = tl.full([BT, BK], 0.0, tl.float32)
    col_sums = tl.full([BT], 0.0, tl.float32)
    strict_sums = tl.full([BT], 0.0, tl.float32)
    for t0 in range(sb * BT, last, BT):
        rows = t0 + tl.arange(0, BT)
        bq_hi, bq_lo, _ = _gates(hi_ptr, lo_ptr, li_ptr, bh, rows, T_pad)
        m = tl.load(mt_ptr + base + rows)
        dden = tl.load(dden_ptr + base + rows)
        lw = _log_weights(bq_hi, bq_lo, bk_hi, bk_lo, log_i, rows, cols)
        causal = cols[None, :] <= rows[:, None]
        P = tl.exp(lw - m[:, None])
        S = _scores(q_ptr, k_ptr, b, h, rows, cols, T, H, K, BK, PRECISION)
        A = tl.where(causal, S * P * scale, 0.0)
        if VALUES:
            dnum = load_rows(dnum_ptr, b, h, rows, xs, T, H, V)
            dx += dot(tl.trans(A).to(dnum.dtype), dnum, PRECISION)
        else:
            dA = _score_gradients(dnum_ptr, v_ptr, dden, b, h, rows, cols, T, H, V, BV, PRECISION)
            q = load_rows(q_ptr, b, h, rows, xs, T, H, K)
            dS = tl.where(causal, dA * P * scale, 0.0)
            dx += dot(tl.trans(dS).to(q.dtype), q, PRECISION)
            # the gradient of m_t goes to the log-weight that set it (the host zeroed it
            # where the entering state's term did)
            routed = tl.load(routed_ptr + base + rows)
            won = causal & (lw == m[:, None])
            dLW = tl.where(causal, dA * A, 0.0) + tl.where(won, routed[:, None], 0.0)
            col_sums += tl.reduce(dLW, 0, add)
            strict_sums += tl.reduce(tl.where(cols[None, :] < rows[:, None], dLW, 0.0), 0, add)
    # the state at the chunk's end: weight e^{a_s − m_{c+1}} on k_s v_sᵀ
    state = bh.to(tl.int64) * (NC + 1) + c + 1
    G_hi, G_lo = tl.load(hi_ptr + base + last - 1), tl.load(lo_ptr + base + last - 1)
    write = tl.exp((G_hi - bk_hi) + (G_lo - bk_lo) + log_i - tl.load(m_ptr + state))
    if VALUES:
        part = tl.full([BT, BV], 0.0, tl.float32)
        for k0 in range(0, K, BK):
            ks = k0 + tl.arange(0, BK)
            k = load_rows(k_ptr, b, h, cols, ks, T, H, K)
            dC = state_tile(dC_ptr, state, ks, xs, K, V)
            part += dot(k, dC.to(k.dtype), PRECISION)
        dx += part * write[:, None]
        store_rows(dx_ptr, dx, b, h, cols, xs, T, H, V)
    else:
        dn = tl.load(dn_ptr + state * K + xs, mask=xs < K, other=0.0)
        part = tl.full([BT, BK], 0.0, tl.float32) + dn[None, :]
        for v0 in range(0, V, BV):
            vs = v0 + tl.arange(0, BV)
            v = load_rows(v_ptr, b, h, cols, vs, T, H, V)
            dC = state_tile(dC_ptr, state, xs, vs, K, V)
            part += dot(v, tl.trans(dC).to(v.dtype), PRECISION)
        k = load_rows(k_ptr, b, h, cols, xs, T, H, K)
        tl.store(dwrite_ptr + xb.to(tl.int64) * tl.num_programs(2) * T_pad + base + cols,
                 write * tl.reduce(k.to(tl.float32) * part, 1, add))
        dx += part * write[:, None]
        store_rows(dx_ptr, dx, b, h, cols, xs, T, H, K)
        tl.store(cols_ptr + base + cols, col_sums, mask=(cols * 0 + xb) == 0)
        tl.store(strict_cols_ptr + base + cols, strict_sums, mask=(cols * 0 + xb) == 0)
