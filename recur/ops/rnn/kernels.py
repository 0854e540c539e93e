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
leave its state unchanged, and backwards dL/ds_T enters at the row's last step, so the
walk over the steps past it carries zeros.

Legend: B batch, T time, H heads, D head width (BD its power of two), BB batch rows per
program, G gates; CELL 0 LSTM (i, f, g, o), 1 GRU (r, z, n), 2 sLSTM (i, f, z, o).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..common.kernels import add

LSTM: tl.constexpr = tl.constexpr(0)
GRU: tl.constexpr = tl.constexpr(1)
SLSTM: tl.constexpr = tl.constexpr(2)


# (tl.sigmoid and tl.zeros are jit functions of Triton's, compiled or interpreted as
# TRITON_INTERPRET said when Triton was first imported; these follow this module)
@triton.jit
def _sigmoid(x):
    # exp(−x) overflows to inf for x << 0, and 1 / inf = 0: saturated gates stay finite
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # 2 σ(2x) − 1: saturates to ±1 without overflow
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


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
def _rows(rows, h, cols, steps, K: tl.constexpr, H: tl.constexpr, D: tl.constexpr):
    """Offsets of head h, component 0, step 0 of rows `rows` of a [B, steps, K, H, D] buffer;
    component k of step t is (t K + k) H D further. (Offsets are computed once, outside the
    loop over time: the interpreter pays per call of a jit function.)"""
    return rows.to(tl.int64)[:, None] * steps * K * H * D + h * D + cols[None, :]


@triton.jit
def _initial(s0_ptr, base, k, mask, H: tl.constexpr, D: tl.constexpr, GIVEN: tl.constexpr):
    """Component k of s_0 [B, S, H, D] as float32, from its offsets `base` (zeros when not GIVEN)."""
    if GIVEN:
        return tl.load(s0_ptr + base + k * H * D, mask=mask, other=0.0).to(tl.float32)
    else:
        return tl.full(base.shape, 0.0, tl.float32)


@triton.jit
def _lstm_step(p_i, p_f, p_g, p_o, c):
    """torch.nn.LSTM's update from the pre-activations: (h_t, c_t)."""
    c = _sigmoid(p_f) * c + _sigmoid(p_i) * (_tanh(p_g))
    return _sigmoid(p_o) * (_tanh(c)), c


@triton.jit
def _slstm_step(p_i, p_f, p_z, p_o, c, n, m):
    """sLSTM's stabilised update: (h_t, c_t, n_t, m_t). An empty state (n = 0) takes its
    m from the input gate alone, and f = 0."""
    # log σ(f̃) = min(f̃, 0) − log(1 + exp(−|f̃|)), finite for every finite f̃
    log_f_m = tl.minimum(p_f, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(p_f))) + m
    empty = n == 0.0
    m_new = tl.where(empty, p_i, tl.maximum(log_f_m, p_i))
    i = tl.exp(p_i - m_new)
    f = tl.where(empty, 0.0, tl.exp(tl.minimum(log_f_m - m_new, 0.0)))
    c = f * c + i * (_tanh(p_z))
    n = f * n + i
    return _sigmoid(p_o) * c / n, c, n, m_new


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
    HD: tl.constexpr = H * D
    # the recurrent blocks, transposed, and the biases: on chip for the whole walk
    RT0 = _block(R_ptr, 0, h, cols, H, D, True)
    RT1 = _block(R_ptr, 1, h, cols, H, D, True)
    RT2 = _block(R_ptr, 2, h, cols, H, D, True)
    if CELL == GRU:
        RT3 = RT2
    else:
        RT3 = _block(R_ptr, 3, h, cols, H, D, True)
    b0 = _vector(b_ptr, 0, h, cols, H, D)
    b1 = _vector(b_ptr, 1, h, cols, H, D)
    b2 = _vector(b_ptr, 2, h, cols, H, D)
    b3 = _vector(b_ptr, 3, h, cols, H, D)
    x_rows = _rows(rows, h, cols, T, G, H, D)
    out_rows = _rows(rows, h, cols, T, 1, H, D)
    gate_rows = _rows(rows, h, cols, T, 4, H, D)
    state_rows = _rows(rows, h, cols, T, S, H, D)
    one_state = _rows(rows, h, cols, 1, S, H, D)
    # s_0 (zeros without one); components the cell lacks stay zero
    hs = _initial(s0_ptr, one_state, 0, mask, H, D, HAS_S0)
    c = _initial(s0_ptr, one_state, 1, mask, H, D, HAS_S0 and S > 1)
    n = _initial(s0_ptr, one_state, 2, mask, H, D, HAS_S0 and S > 2)
    m = _initial(s0_ptr, one_state, 3, mask, H, D, HAS_S0 and S > 2)
    if VARLEN:
        length = tl.load(len_ptr + rows, mask=rows < B, other=0)[:, None]
    for t in range(T):
        x_t = x_ptr + x_rows + t * G * HD
        x0 = tl.load(x_t, mask=mask, other=0.0).to(tl.float32)
        x1 = tl.load(x_t + HD, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x_t + 2 * HD, mask=mask, other=0.0).to(tl.float32)
        # g = x + R h_{t-1} + b, one [BB, BD] × [BD, BD] product per gate
        p0 = x0 + tl.dot(hs, RT0, input_precision=PRECISION) + b0
        p1 = x1 + tl.dot(hs, RT1, input_precision=PRECISION) + b1
        if CELL == GRU:
            # p2 is R_n h + b_hn; p3 the candidate's pre-activation x_n + b_in + r ⊙ p2
            p2 = tl.dot(hs, RT2, input_precision=PRECISION) + b3
            p3 = x2 + b2 + _sigmoid(p0) * p2
            z = _sigmoid(p1)
            cand = _tanh(p3)
            h_new = cand + z * (hs - cand)
            c_new, n_new, m_new = c, n, m
        else:
            x3 = tl.load(x_t + 3 * HD, mask=mask, other=0.0).to(tl.float32)
            p2 = x2 + tl.dot(hs, RT2, input_precision=PRECISION) + b2
            p3 = x3 + tl.dot(hs, RT3, input_precision=PRECISION) + b3
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
        tl.store(out_ptr + out_rows + t * HD, hs.to(out_ptr.dtype.element_ty), mask=mask)
        if SAVE:
            gates_t = gates_ptr + gate_rows + t * 4 * HD
            tl.store(gates_t, p0, mask=mask)
            tl.store(gates_t + HD, p1, mask=mask)
            tl.store(gates_t + 2 * HD, p2, mask=mask)
            tl.store(gates_t + 3 * HD, p3, mask=mask)
            states_t = states_ptr + state_rows + t * S * HD
            tl.store(states_t, hs, mask=mask)
            if S > 1:
                tl.store(states_t + HD, c, mask=mask)
            if S > 2:
                tl.store(states_t + 2 * HD, n, mask=mask)
                tl.store(states_t + 3 * HD, m, mask=mask)
    tl.store(final_ptr + one_state, hs, mask=mask)
    if S > 1:
        tl.store(final_ptr + one_state + HD, c, mask=mask)
    if S > 2:
        tl.store(final_ptr + one_state + 2 * HD, n, mask=mask)
        tl.store(final_ptr + one_state + 3 * HD, m, mask=mask)


@triton.jit
def _lstm_grads(p_i, p_f, p_g, p_o, c_prev, c, dh, dc):
    """∂L/∂(i, f, g, o pre-activations) and dL/dc_{t-1} from dL/dh_t, the carried dL/dc_t."""
    i, f, g, o = _sigmoid(p_i), _sigmoid(p_f), _tanh(p_g), _sigmoid(p_o)
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
    log_f_m = tl.minimum(p_f, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(p_f))) + m_prev
    empty = n_prev == 0.0
    m_new = tl.where(empty, p_i, tl.maximum(log_f_m, p_i))
    i = tl.exp(p_i - m_new)
    f = tl.where(empty, 0.0, tl.exp(tl.minimum(log_f_m - m_new, 0.0)))
    tanh_z, o = _tanh(p_z), _sigmoid(p_o)
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
    d_f = da * _sigmoid(-p_f)
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
    HD: tl.constexpr = H * D
    R0 = _block(R_ptr, 0, h, cols, H, D, False)
    R1 = _block(R_ptr, 1, h, cols, H, D, False)
    R2 = _block(R_ptr, 2, h, cols, H, D, False)
    if CELL == GRU:
        R3 = R2
    else:
        R3 = _block(R_ptr, 3, h, cols, H, D, False)
    dR0 = tl.full([BD, BD], 0.0, tl.float32)
    dR1 = tl.full([BD, BD], 0.0, tl.float32)
    dR2 = tl.full([BD, BD], 0.0, tl.float32)
    dR3 = tl.full([BD, BD], 0.0, tl.float32)
    db0 = tl.full([BD], 0.0, tl.float32)
    db1 = tl.full([BD], 0.0, tl.float32)
    db2 = tl.full([BD], 0.0, tl.float32)
    db3 = tl.full([BD], 0.0, tl.float32)
    x_rows = _rows(rows, h, cols, T, G, H, D)
    out_rows = _rows(rows, h, cols, T, 1, H, D)
    gate_rows = _rows(rows, h, cols, T, 4, H, D)
    state_rows = _rows(rows, h, cols, T, S, H, D)
    one_state = _rows(rows, h, cols, 1, S, H, D)
    # the carried dL/ds_t, from dL/ds_T
    dh = _initial(dfinal_ptr, one_state, 0, mask, H, D, HAS_DFINAL)
    dc = _initial(dfinal_ptr, one_state, 1, mask, H, D, HAS_DFINAL and S > 1)
    dn = _initial(dfinal_ptr, one_state, 2, mask, H, D, HAS_DFINAL and S > 2)
    dm = _initial(dfinal_ptr, one_state, 3, mask, H, D, HAS_DFINAL and S > 2)
    h0 = _initial(s0_ptr, one_state, 0, mask, H, D, HAS_S0)
    c0 = _initial(s0_ptr, one_state, 1, mask, H, D, HAS_S0 and S > 1)
    n0 = _initial(s0_ptr, one_state, 2, mask, H, D, HAS_S0 and S > 2)
    m0 = _initial(s0_ptr, one_state, 3, mask, H, D, HAS_S0 and S > 2)
    if VARLEN:
        # dL/ds_T enters at each row's last step: the steps past it changed nothing, and
        # walking them from zero carried gradients (and zero output gradients) gives zero
        # gate gradients exactly. (Masking the carried gradients at those steps instead
        # makes LLVM's vectoriser fail an assertion in Triton 3.9's float32 LSTM walk.)
        length = tl.load(len_ptr + rows, mask=rows < B, other=0)[:, None]
        final_h, final_c, final_n, final_m = dh, dc, dn, dm
        dh = tl.full([BB, BD], 0.0, tl.float32)
        dc = tl.full([BB, BD], 0.0, tl.float32)
        dn = tl.full([BB, BD], 0.0, tl.float32)
        dm = tl.full([BB, BD], 0.0, tl.float32)
    for step in range(T):
        t = T - 1 - step
        if VARLEN:
            arrives = (t == length - 1).to(tl.float32)
            dh += arrives * final_h
            dc += arrives * final_c
            dn += arrives * final_n
            dm += arrives * final_m
        gates_t = gates_ptr + gate_rows + t * 4 * HD
        p0 = tl.load(gates_t, mask=mask, other=0.0)
        p1 = tl.load(gates_t + HD, mask=mask, other=0.0)
        p2 = tl.load(gates_t + 2 * HD, mask=mask, other=0.0)
        p3 = tl.load(gates_t + 3 * HD, mask=mask, other=0.0)
        states_t = states_ptr + state_rows + t * S * HD
        # s_{t-1}: stored, or s_0 at t = 0 (t as a tensor: the interpreter's t is an int)
        later = mask & (cols[None, :] * 0 + t > 0)
        h_prev = tl.where(later, tl.load(states_t - S * HD, mask=later, other=0.0), h0)
        # dL/dh_t: the output's and the carried one
        dh_t = dh + tl.load(dout_ptr + out_rows + t * HD, mask=mask, other=0.0).to(tl.float32)
        if CELL == GRU:
            r, z, cand = _sigmoid(p0), _sigmoid(p1), _tanh(p3)
            d_cand = dh_t * (1.0 - z) * (1.0 - cand * cand)
            # the gradients of the pre-activations of r, z, of R_n h + b_hn, and of x_n
            d0 = d_cand * p2 * r * (1.0 - r)
            d1 = dh_t * (h_prev - cand) * z * (1.0 - z)
            d2 = d_cand * r
            d3 = d_cand
            direct = dh_t * z
            dc_prev, dn_prev, dm_prev = dc, dn, dm
        elif CELL == LSTM:
            c_prev = tl.where(later, tl.load(states_t - (S - 1) * HD, mask=later, other=0.0), c0)
            c = tl.load(states_t + HD, mask=mask, other=0.0)
            d0, d1, d2, d3, dc_prev = _lstm_grads(p0, p1, p2, p3, c_prev, c, dh_t, dc)
            direct = tl.full([BB, BD], 0.0, tl.float32)
            dn_prev, dm_prev = dn, dm
        else:
            c_prev = tl.where(later, tl.load(states_t - (S - 1) * HD, mask=later, other=0.0), c0)
            n_prev = tl.where(later, tl.load(states_t - (S - 2) * HD, mask=later, other=0.0), n0)
            m_prev = tl.where(later, tl.load(states_t - (S - 3) * HD, mask=later, other=0.0), m0)
            h_t = tl.load(states_t, mask=mask, other=0.0)
            c = tl.load(states_t + HD, mask=mask, other=0.0)
            # n = 0 outside the batch and the head, and at the steps past the end of a row
            # that never started: keep the quotients there finite (their dh is 0)
            n = tl.load(states_t + 2 * HD, mask=mask, other=1.0)
            n = tl.where(n == 0.0, 1.0, n)
            d0, d1, d2, d3, dc_prev, dn_prev, dm_prev = _slstm_grads(
                p0, p1, p2, p3, c_prev, n_prev, m_prev, h_t, c, n, dh_t, dc, dn, dm
            )
            direct = tl.full([BB, BD], 0.0, tl.float32)
        # dL/dh_{t-1} = Σ_g d_g R_g (+ the GRU's z ⊙ dh_t)
        dh_prev = direct + tl.dot(d0, R0, input_precision=PRECISION) + tl.dot(d1, R1, input_precision=PRECISION)
        dh_prev += tl.dot(d2, R2, input_precision=PRECISION)
        if CELL != GRU:
            dh_prev += tl.dot(d3, R3, input_precision=PRECISION)
        dh, dc, dn, dm = dh_prev, dc_prev, dn_prev, dm_prev
        dx_t = dx_ptr + x_rows + t * G * HD
        tl.store(dx_t, d0, mask=mask)
        tl.store(dx_t + HD, d1, mask=mask)
        if CELL == GRU:
            tl.store(dx_t + 2 * HD, d3, mask=mask)
        else:
            tl.store(dx_t + 2 * HD, d2, mask=mask)
            tl.store(dx_t + 3 * HD, d3, mask=mask)
        # dR_g += d_gᵀ h_{t-1} over the block's rows; db_g += Σ_rows d_g
        dR0 += tl.dot(tl.trans(d0), h_prev, input_precision=PRECISION)
        dR1 += tl.dot(tl.trans(d1), h_prev, input_precision=PRECISION)
        dR2 += tl.dot(tl.trans(d2), h_prev, input_precision=PRECISION)
        dR3 += tl.dot(tl.trans(d3), h_prev, input_precision=PRECISION)
        db0 += tl.reduce(d0, 0, add)
        db1 += tl.reduce(d1, 0, add)
        db2 += tl.reduce(d2, 0, add)
        db3 += tl.reduce(d3, 0, add)
    if VARLEN:
        # a row of no steps passes dL/ds_T to s_0
        empty = (length == 0).to(tl.float32)
        dh += empty * final_h
        dc += empty * final_c
        dn += empty * final_n
        dm += empty * final_m
    tl.store(ds0_ptr + one_state, dh, mask=mask)
    if S > 1:
        tl.store(ds0_ptr + one_state + HD, dc, mask=mask)
    if S > 2:
        tl.store(ds0_ptr + one_state + 2 * HD, dn, mask=mask)
        tl.store(ds0_ptr + one_state + 3 * HD, dm, mask=mask)
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
