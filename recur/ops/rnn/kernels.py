"""Head-wise nonlinear RNNs (LSTM, GRU, sLSTM) as fused Triton kernels, forward and backward.

FlashRNN: Optimizing Traditional RNNs on Modern Hardware (Pöppel, Beck, Hochreiter;
arXiv:2412.07752), head-wise form:

    g_t = x_t + R h_{t-1} + b   (R block-diagonal over heads: one Dh × Dh block per gate and head)
    s_t = P(s_{t-1}, g_t)       (the cell's pointwise update; h = s[0])

The input projections x_t = W x'_t are one matrix product outside. One program per (block
of BB batch rows, head) loads its head's recurrent blocks once and keeps them on chip for
every step: a step is G products [BB, Dh] × [Dh, Dh] (one per gate) and the cell's
elementwise update, with no global-memory traffic but the step's inputs and outputs.

Backward: the program walks time in reverse holding the same blocks and the running
gradients dR [G, Dh, Dh] and db [G, Dh] of its batch rows on chip:

    d_t = ∂L/∂g_t from (dL/dh_t of the output + carried, the carried dL/d(c, n, m)_t)
    dL/dh_{t-1} = Σ_g d_{t,g} R_g (+ the cell's direct term),   dR_g += d_{t,g}ᵀ h_{t-1},   db_g += Σ_b d_{t,g}

The forward stores every state s_t and the gate pre-activations (GRU: also R_n h + b_hn),
so the backward reads them instead of recomputing R h_{t-1}: that would add a third
product per step to the reverse walk, which is serial in time and already does two
(the one with R and the dR update). The stored gates take as much memory as x_proj.

Packed batches run as a padded batch with a length per row: steps past a row's length
leave its state (and, backwards, its carried gradients) unchanged.

Legend: B batch, T time, H heads, D head width (BD its power of two), BB batch rows per
program, G gates; CELL 0 LSTM (i, f, g, o), 1 GRU (r, z, n), 2 sLSTM (i, f, z, o).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..common.kernels import add, dot

LSTM: tl.constexpr = tl.constexpr(0)
GRU: tl.constexpr = tl.constexpr(1)
SLSTM: tl.constexpr = tl.constexpr(2)


@triton.jit
def _tanh(x):
    # 2 σ(2x) − 1: saturates to ±1 without forming exp of a large argument's square
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _log_sigmoid(x):
    # log σ(x) = min(x, 0) − log(1 + exp(−|x|)), finite for every finite x
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _block(R_ptr, g, h, cols, H: tl.constexpr, D: tl.constexpr, TRANSPOSED: tl.constexpr):
    """R[g, h] [BD, BD] as float32 (zeros outside D × D), or its transpose: h_{t-1} @ R_gᵀ is
    the gate's R h, d @ R_g the gate's share of dL/dh_{t-1}."""
    base = R_ptr + (g * H + h).to(tl.int64) * D * D
    mask = (cols[:, None] < D) & (cols[None, :] < D)
    if TRANSPOSED:
        offsets = cols[None, :] * D + cols[:, None]
    else:
        offsets = cols[:, None] * D + cols[None, :]
    return tl.load(base + offsets, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _vector(ptr, g, h, cols, H: tl.constexpr, D: tl.constexpr):
    """b[g, h] as a [1, BD] float32 row (zeros outside D)."""
    return tl.load(ptr + (g * H + h) * D + cols, mask=cols < D, other=0.0).to(tl.float32)[None, :]


@triton.jit
def _offsets(rows, t, k, h, cols, T, K: tl.constexpr, H: tl.constexpr, D: tl.constexpr):
    """Offsets of component k of head h at step t of rows `rows` of a [B, T, K, H, D] buffer."""
    return (((rows.to(tl.int64) * T + t) * K + k) * H + h)[:, None] * D + cols[None, :]


@triton.jit
def _load(ptr, offsets, mask):
    return tl.load(ptr + offsets, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store(ptr, offsets, x, mask):
    tl.store(ptr + offsets, x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _lstm_step(p_i, p_f, p_g, p_o, c):
    """torch.nn.LSTM's update from the pre-activations: (h_t, c_t)."""
    c = tl.sigmoid(p_f) * c + tl.sigmoid(p_i) * _tanh(p_g)
    return tl.sigmoid(p_o) * _tanh(c), c


@triton.jit
def _slstm_step(p_i, p_f, p_z, p_o, c, n, m):
    """sLSTM's stabilised update: (h_t, c_t, n_t, m_t). An empty state (n = 0) takes its
    m from the input gate alone, and f = 0."""
    log_f_m = _log_sigmoid(p_f) + m
    empty = n == 0.0
    m_new = tl.where(empty, p_i, tl.maximum(log_f_m, p_i))
    i = tl.exp(p_i - m_new)
    f = tl.where(empty, 0.0, tl.exp(tl.minimum(log_f_m - m_new, 0.0)))
    c = f * c + i * _tanh(p_z)
    n = f * n + i
    return tl.sigmoid(p_o) * c / n, c, n, m_new


@triton.jit
def forward(
    x_ptr, R_ptr, b_ptr, s0_ptr, len_ptr, out_ptr, states_ptr, gates_ptr, final_ptr, B, T,
    H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, BB: tl.constexpr, G: tl.constexpr, S: tl.constexpr,
    CELL: tl.constexpr, HAS_S0: tl.constexpr, VARLEN: tl.constexpr, SAVE: tl.constexpr, PRECISION: tl.constexpr,
):
    """s_t = P(s_{t-1}, x_t + R h_{t-1} + b) for t = 1..T for BB batch rows and one head:
    h_t into out [B, T, H, D]; with SAVE every s_t into states [B, T, S, H, D] and the
    pre-activations into gates [B, T, 4, H, D] (GRU: r, z, n and R_n h + b_hn); the last
    state into final [B, S, H, D]."""
    bb, h = tl.program_id(0), tl.program_id(1)
    rows = bb * BB + tl.arange(0, BB)
    cols = tl.arange(0, BD)
    mask = (rows[:, None] < B) & (cols[None, :] < D)
    # the recurrent blocks, transposed, and the biases: on chip for the whole walk
    RT0 = _block(R_ptr, 0, h, cols, H, D, True)
    RT1 = _block(R_ptr, 1, h, cols, H, D, True)
    RT2 = _block(R_ptr, 2, h, cols, H, D, True)
    b0 = _vector(b_ptr, 0, h, cols, H, D)
    b1 = _vector(b_ptr, 1, h, cols, H, D)
    b2 = _vector(b_ptr, 2, h, cols, H, D)
    b3 = _vector(b_ptr, 3, h, cols, H, D)
    if CELL == GRU:
        RT3 = RT2
    else:
        RT3 = _block(R_ptr, 3, h, cols, H, D, True)
    # s_0 (zeros without one); components the cell lacks stay zero
    hs = _initial(s0_ptr, rows, 0, h, cols, mask, S, H, D, HAS_S0)
    c = _initial(s0_ptr, rows, 1, h, cols, mask, S, H, D, HAS_S0 and S > 1)
    n = _initial(s0_ptr, rows, 2, h, cols, mask, S, H, D, HAS_S0 and S > 2)
    m = _initial(s0_ptr, rows, 3, h, cols, mask, S, H, D, HAS_S0 and S > 2)
    if VARLEN:
        length = tl.load(len_ptr + rows, mask=rows < B, other=0)[:, None]
    for t in range(T):
        x0 = _load(x_ptr, _offsets(rows, t, 0, h, cols, T, G, H, D), mask)
        x1 = _load(x_ptr, _offsets(rows, t, 1, h, cols, T, G, H, D), mask)
        x2 = _load(x_ptr, _offsets(rows, t, 2, h, cols, T, G, H, D), mask)
        # g = x + R h_{t-1} + b, one [BB, BD] × [BD, BD] product per gate
        p0 = x0 + dot(hs, RT0, PRECISION) + b0
        p1 = x1 + dot(hs, RT1, PRECISION) + b1
        if CELL == GRU:
            # p2 is R_n h + b_hn; p3 the candidate's pre-activation x_n + b_in + r ⊙ p2
            p2 = dot(hs, RT2, PRECISION) + b3
            p3 = x2 + b2 + tl.sigmoid(p0) * p2
            z = tl.sigmoid(p1)
            cand = _tanh(p3)
            h_new = cand + z * (hs - cand)
            c_new, n_new, m_new = c, n, m
        else:
            x3 = _load(x_ptr, _offsets(rows, t, 3, h, cols, T, G, H, D), mask)
            p2 = x2 + dot(hs, RT2, PRECISION) + b2
            p3 = x3 + dot(hs, RT3, PRECISION) + b3
            if CELL == LSTM:
                h_new, c_new = _lstm_step(p0, p1, p2, p3, c)
                n_new, m_new = n, m
            else:
                h_new, c_new, n_new, m_new = _slstm_step(p0, p1, p2, p3, c, n, m)
        if VARLEN:
            # past the row's end the state stays as it is
            live = t < length
            h_new = tl.where(live, h_new, hs)
            c_new = tl.where(live, c_new, c)
            n_new = tl.where(live, n_new, n)
            m_new = tl.where(live, m_new, m)
        hs, c, n, m = h_new, c_new, n_new, m_new
        _store(out_ptr, _offsets(rows, t, 0, h, cols, T, 1, H, D), hs, mask)
        if SAVE:
            _store(gates_ptr, _offsets(rows, t, 0, h, cols, T, 4, H, D), p0, mask)
            _store(gates_ptr, _offsets(rows, t, 1, h, cols, T, 4, H, D), p1, mask)
            _store(gates_ptr, _offsets(rows, t, 2, h, cols, T, 4, H, D), p2, mask)
            _store(gates_ptr, _offsets(rows, t, 3, h, cols, T, 4, H, D), p3, mask)
            _store(states_ptr, _offsets(rows, t, 0, h, cols, T, S, H, D), hs, mask)
            if S > 1:
                _store(states_ptr, _offsets(rows, t, 1, h, cols, T, S, H, D), c, mask)
            if S > 2:
                _store(states_ptr, _offsets(rows, t, 2, h, cols, T, S, H, D), n, mask)
                _store(states_ptr, _offsets(rows, t, 3, h, cols, T, S, H, D), m, mask)
    _store(final_ptr, _offsets(rows, 0, 0, h, cols, 1, S, H, D), hs, mask)
    if S > 1:
        _store(final_ptr, _offsets(rows, 0, 1, h, cols, 1, S, H, D), c, mask)
    if S > 2:
        _store(final_ptr, _offsets(rows, 0, 2, h, cols, 1, S, H, D), n, mask)
        _store(final_ptr, _offsets(rows, 0, 3, h, cols, 1, S, H, D), m, mask)


@triton.jit
def _previous(states_ptr, start, rows, t, k, h, cols, mask, T, S: tl.constexpr, H: tl.constexpr, D: tl.constexpr):
    """Component k of s_{t-1}: the stored s_{t-1}, or `start` (that component of s_0) at t = 0."""
    # (t as a tensor: the interpreter runs the loop over Python ints)
    later = mask & (cols[None, :] * 0 + t > 0)
    stored = _load(states_ptr, _offsets(rows, t - 1, k, h, cols, T, S, H, D), later)
    return tl.where(later, stored, start)


@triton.jit
def _initial(s0_ptr, rows, k, h, cols, mask, S: tl.constexpr, H: tl.constexpr, D: tl.constexpr, GIVEN: tl.constexpr):
    """Component k of s_0 [B, S, H, D] as float32 (zeros when not GIVEN)."""
    if GIVEN:
        return _load(s0_ptr, _offsets(rows, 0, k, h, cols, 1, S, H, D), mask)
    else:
        return tl.zeros([rows.shape[0], cols.shape[0]], tl.float32)


@triton.jit
def _lstm_grads(p_i, p_f, p_g, p_o, c_prev, c, dh, dc):
    """∂L/∂(i, f, g, o pre-activations) and dL/dc_{t-1} from dL/dh_t, the carried dL/dc_t."""
    i, f, g, o = tl.sigmoid(p_i), tl.sigmoid(p_f), _tanh(p_g), tl.sigmoid(p_o)
    tanh_c = _tanh(c)
    # h = o tanh(c)
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
    # σ' = σ (1 − σ), tanh' = 1 − tanh²
    d_i = dc * g * i * (1.0 - i)
    d_f = dc * c_prev * f * (1.0 - f)
    d_g = dc * i * (1.0 - g * g)
    d_o = dh * tanh_c * o * (1.0 - o)
    return d_i, d_f, d_g, d_o, dc * f


@triton.jit
def _slstm_grads(p_i, p_f, p_z, p_o, c_prev, n_prev, m_prev, h, c, n, dh, dc, dn, dm):
    """∂L/∂(i, f, z, o pre-activations) and dL/d(c, n, m)_{t-1} from dL/dh_t and the carried
    dL/d(c, n, m)_t; the stabiliser's max is differentiated as torch.maximum (a tie splits)."""
    log_f_m = _log_sigmoid(p_f) + m_prev
    empty = n_prev == 0.0
    m_new = tl.where(empty, p_i, tl.maximum(log_f_m, p_i))
    i = tl.exp(p_i - m_new)
    f = tl.where(empty, 0.0, tl.exp(tl.minimum(log_f_m - m_new, 0.0)))
    tanh_z, o = _tanh(p_z), tl.sigmoid(p_o)
    # h = σ(õ) c / n
    dc = dc + dh * o / n
    dn = dn - dh * h / n
    # i and f enter as exp(· − m_t) through c = f c + i tanh(z̃), n = f n + i
    di = (dn + dc * tanh_z) * i
    df = (dc * c_prev + dn * n_prev) * f
    dm = dm - di - df
    to_a = tl.where(log_f_m > p_i, 1.0, tl.where(log_f_m == p_i, 0.5, 0.0))
    dm_a = tl.where(empty, 0.0, dm * to_a)
    da = df + dm_a
    d_i = di + dm - dm_a
    # ∂ log σ(f̃) / ∂f̃ = σ(−f̃)
    d_f = da * tl.sigmoid(-p_f)
    d_z = dc * i * (1.0 - tanh_z * tanh_z)
    d_o = dh * c / n * o * (1.0 - o)
    return d_i, d_f, d_z, d_o, dc * f, dn * f, da


@triton.jit
def backward(
    R_ptr, s0_ptr, len_ptr, states_ptr, gates_ptr, dout_ptr, dfinal_ptr, dx_ptr, dR_ptr, db_ptr, ds0_ptr, B, T,
    H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, BB: tl.constexpr, G: tl.constexpr, S: tl.constexpr,
    CELL: tl.constexpr, HAS_S0: tl.constexpr, HAS_DFINAL: tl.constexpr, VARLEN: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """From dL/dh_t [B, T, H, D] and dL/ds_T [B, S, H, D]: dx [B, T, G, H, D], dL/ds_0
    [B, S, H, D], and this program's shares of dR [NB, 4, H, D, D] and db [NB, 4, H, D] (NB
    batch blocks, summed by the caller; the GRU's third dR block is R_n's, its biases are
    r, z, b_in, b_hn)."""
    bb, h = tl.program_id(0), tl.program_id(1)
    rows = bb * BB + tl.arange(0, BB)
    cols = tl.arange(0, BD)
    mask = (rows[:, None] < B) & (cols[None, :] < D)
    R0 = _block(R_ptr, 0, h, cols, H, D, False)
    R1 = _block(R_ptr, 1, h, cols, H, D, False)
    R2 = _block(R_ptr, 2, h, cols, H, D, False)
    if CELL == GRU:
        R3 = R2
    else:
        R3 = _block(R_ptr, 3, h, cols, H, D, False)
    dR0 = tl.zeros([BD, BD], tl.float32)
    dR1 = tl.zeros([BD, BD], tl.float32)
    dR2 = tl.zeros([BD, BD], tl.float32)
    dR3 = tl.zeros([BD, BD], tl.float32)
    db0 = tl.zeros([BD], tl.float32)
    db1 = tl.zeros([BD], tl.float32)
    db2 = tl.zeros([BD], tl.float32)
    db3 = tl.zeros([BD], tl.float32)
    # the carried dL/ds_t, from dL/ds_T
    dh = tl.zeros([BB, BD], tl.float32)
    dc = tl.zeros([BB, BD], tl.float32)
    dn = tl.zeros([BB, BD], tl.float32)
    dm = tl.zeros([BB, BD], tl.float32)
    if HAS_DFINAL:
        dh = _load(dfinal_ptr, _offsets(rows, 0, 0, h, cols, 1, S, H, D), mask)
        if S > 1:
            dc = _load(dfinal_ptr, _offsets(rows, 0, 1, h, cols, 1, S, H, D), mask)
        if S > 2:
            dn = _load(dfinal_ptr, _offsets(rows, 0, 2, h, cols, 1, S, H, D), mask)
            dm = _load(dfinal_ptr, _offsets(rows, 0, 3, h, cols, 1, S, H, D), mask)
    h0 = _initial(s0_ptr, rows, 0, h, cols, mask, S, H, D, HAS_S0)
    c0 = _initial(s0_ptr, rows, 1, h, cols, mask, S, H, D, HAS_S0 and S > 1)
    n0 = _initial(s0_ptr, rows, 2, h, cols, mask, S, H, D, HAS_S0 and S > 2)
    m0 = _initial(s0_ptr, rows, 3, h, cols, mask, S, H, D, HAS_S0 and S > 2)
    if VARLEN:
        length = tl.load(len_ptr + rows, mask=rows < B, other=0)[:, None]
    for step in range(T):
        t = T - 1 - step
        p0 = _load(gates_ptr, _offsets(rows, t, 0, h, cols, T, 4, H, D), mask)
        p1 = _load(gates_ptr, _offsets(rows, t, 1, h, cols, T, 4, H, D), mask)
        p2 = _load(gates_ptr, _offsets(rows, t, 2, h, cols, T, 4, H, D), mask)
        p3 = _load(gates_ptr, _offsets(rows, t, 3, h, cols, T, 4, H, D), mask)
        h_prev = _previous(states_ptr, h0, rows, t, 0, h, cols, mask, T, S, H, D)
        # dL/dh_t: the output's and the carried one
        dh_t = dh + _load(dout_ptr, _offsets(rows, t, 0, h, cols, T, 1, H, D), mask)
        if CELL == GRU:
            r, z, cand = tl.sigmoid(p0), tl.sigmoid(p1), _tanh(p3)
            d_cand = dh_t * (1.0 - z) * (1.0 - cand * cand)
            # the gradients of the pre-activations of r, z, of R_n h + b_hn, and of x_n
            d0 = d_cand * p2 * r * (1.0 - r)
            d1 = dh_t * (h_prev - cand) * z * (1.0 - z)
            d2 = d_cand * r
            d3 = d_cand
            direct = dh_t * z
            dc_prev, dn_prev, dm_prev = dc, dn, dm
        elif CELL == LSTM:
            c_prev = _previous(states_ptr, c0, rows, t, 1, h, cols, mask, T, S, H, D)
            c = _load(states_ptr, _offsets(rows, t, 1, h, cols, T, S, H, D), mask)
            d0, d1, d2, d3, dc_prev = _lstm_grads(p0, p1, p2, p3, c_prev, c, dh_t, dc)
            direct = tl.zeros([BB, BD], tl.float32)
            dn_prev, dm_prev = dn, dm
        else:
            c_prev = _previous(states_ptr, c0, rows, t, 1, h, cols, mask, T, S, H, D)
            n_prev = _previous(states_ptr, n0, rows, t, 2, h, cols, mask, T, S, H, D)
            m_prev = _previous(states_ptr, m0, rows, t, 3, h, cols, mask, T, S, H, D)
            h_t = _load(states_ptr, _offsets(rows, t, 0, h, cols, T, S, H, D), mask)
            c = _load(states_ptr, _offsets(rows, t, 1, h, cols, T, S, H, D), mask)
            n = _load(states_ptr, _offsets(rows, t, 2, h, cols, T, S, H, D), mask)
            # rows outside the batch hold n = 0 in both states: keep their quotients finite
            n = tl.where(mask, n, 1.0)
            d0, d1, d2, d3, dc_prev, dn_prev, dm_prev = _slstm_grads(
                p0, p1, p2, p3, c_prev, n_prev, m_prev, h_t, c, n, dh_t, dc, dn, dm
            )
            direct = tl.zeros([BB, BD], tl.float32)
        # dL/dh_{t-1} = Σ_g d_g R_g (+ the GRU's z ⊙ dh_t)
        dh_prev = direct + dot(d0, R0, PRECISION) + dot(d1, R1, PRECISION) + dot(d2, R2, PRECISION)
        if CELL != GRU:
            dh_prev += dot(d3, R3, PRECISION)
        if VARLEN:
            # past the row's end the step changed nothing: no gate gradients, the carried
            # ones pass through
            live = t < length
            d0 = tl.where(live, d0, 0.0)
            d1 = tl.where(live, d1, 0.0)
            d2 = tl.where(live, d2, 0.0)
            d3 = tl.where(live, d3, 0.0)
            dh_prev = tl.where(live, dh_prev, dh_t)
            dc_prev = tl.where(live, dc_prev, dc)
            dn_prev = tl.where(live, dn_prev, dn)
            dm_prev = tl.where(live, dm_prev, dm)
        dh, dc, dn, dm = dh_prev, dc_prev, dn_prev, dm_prev
        _store(dx_ptr, _offsets(rows, t, 0, h, cols, T, G, H, D), d0, mask)
        _store(dx_ptr, _offsets(rows, t, 1, h, cols, T, G, H, D), d1, mask)
        if CELL == GRU:
            _store(dx_ptr, _offsets(rows, t, 2, h, cols, T, G, H, D), d3, mask)
        else:
            _store(dx_ptr, _offsets(rows, t, 2, h, cols, T, G, H, D), d2, mask)
            _store(dx_ptr, _offsets(rows, t, 3, h, cols, T, G, H, D), d3, mask)
        # dR_g += d_gᵀ h_{t-1} over the block's rows; db_g += Σ_rows d_g
        dR0 += dot(tl.trans(d0), h_prev, PRECISION)
        dR1 += dot(tl.trans(d1), h_prev, PRECISION)
        dR2 += dot(tl.trans(d2), h_prev, PRECISION)
        dR3 += dot(tl.trans(d3), h_prev, PRECISION)
        db0 += tl.reduce(d0, 0, add)
        db1 += tl.reduce(d1, 0, add)
        db2 += tl.reduce(d2, 0, add)
        db3 += tl.reduce(d3, 0, add)
    _store(ds0_ptr, _offsets(rows, 0, 0, h, cols, 1, S, H, D), dh, mask)
    if S > 1:
        _store(ds0_ptr, _offsets(rows, 0, 1, h, cols, 1, S, H, D), dc, mask)
    if S > 2:
        _store(ds0_ptr, _offsets(rows, 0, 2, h, cols, 1, S, H, D), dn, mask)
        _store(ds0_ptr, _offsets(rows, 0, 3, h, cols, 1, S, H, D), dm, mask)
    square = (cols[:, None] < D) & (cols[None, :] < D)
    block = (bb * 4 * H + h).to(tl.int64)
    tile = cols[:, None] * D + cols[None, :]
    tl.store(dR_ptr + block * D * D + tile, dR0, mask=square)
    tl.store(dR_ptr + (block + H) * D * D + tile, dR1, mask=square)
    tl.store(dR_ptr + (block + 2 * H) * D * D + tile, dR2, mask=square)
    tl.store(dR_ptr + (block + 3 * H) * D * D + tile, dR3, mask=square)
    # GRU biases: r, z, b_in (the candidate's input, d3), b_hn (d2)
    if CELL == GRU:
        db2, db3 = db3, db2
    tl.store(db_ptr + block * D + cols, db0, mask=cols < D)
    tl.store(db_ptr + (block + H) * D + cols, db1, mask=cols < D)
    tl.store(db_ptr + (block + 2 * H) * D + cols, db2, mask=cols < D)
    tl.store(db_ptr + (block + 3 * H) * D + cols, db3, mask=cols < D)
