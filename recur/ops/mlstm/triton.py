"""The mLSTM in fused Triton kernels: the autograd Function, the launch settings and the
public form (the kernels and their derivation are in kernels.py).

Tiled Flash Linear Attention (Beck, Pöppel, Lippe, Hochreiter; arXiv:2503.14376) for the
stabilised mLSTM of xLSTM (arXiv:2405.04517) and mLSTMsig:

    m_t = max(log f_t + m_{t-1}, log i_t),   C_t = f'_t C_{t-1} + i'_t k_t v_tᵀ,   n_t = f'_t n_{t-1} + i'_t k_t,
    h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, e^{−m_t}) + eps)

Chunks of CHUNK steps, each tiled again in TILE queries × TILE keys, head widths in tiles of
HEAD_TILE. The kernels do every [T, K] and [K, V] product; PyTorch does what is one number
per step or per chunk: the gates' cumulative sums, the gradient through the denominator's
max and the chain of the max states (one linear scan over chunks).

Legend: B batch, T time, H heads, K key width, V value width, NC chunks per sequence,
L = CHUNK.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton

from ..common import launch, packed_to_padded, padded_to_packed
from ..common.scan import linear_recurrence
from . import kernels
from .naive import MLSTMState, log_gates

CHUNK = 128
TILE = 64
HEAD_TILE = 64
# e^{GATE_FLOOR} is 0 in float32: a closed forget gate (log f = −inf) is clamped here, which
# changes no float32 result and keeps the gates' cumulative sums finite
GATE_FLOOR = -128.0
# float32 inputs take IEEE products
FLOAT32_PRODUCTS = "ieee"
WARPS = {"states": 4, "outputs": 8, "gradients": 8}
STAGES = 1


def _launch_config(K: int, V: int) -> dict:
    """Fixed tiles (no autotuning). CHUNK must be a multiple of TILE."""
    if CHUNK % TILE:
        raise ValueError(f"CHUNK must be a multiple of TILE; got CHUNK = {CHUNK}, TILE = {TILE}")
    return {
        "BK": launch.pow2(min(K, HEAD_TILE)), "BV": launch.pow2(min(V, HEAD_TILE)),
        "L": CHUNK, "BT": TILE,
    }


def _cumulative_gates(log_f: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """b_t, the log decay from the chunk start to step t, as float32 hi + lo [B·H, T_pad]:
    summed in float64 and split, so that b_t − b_s keeps float32 precision however large
    b grows inside a chunk."""
    b = log_f.view(log_f.shape[0], -1, L).double().cumsum(-1).flatten(1)
    hi = b.float()
    return hi, (b - hi.double()).float()


def _per_head(x: torch.Tensor, T_pad: int, value: float) -> torch.Tensor:
    """[B, T, H] -> [B·H, T_pad] float32, padded with `value` at the end of time."""
    B, T, H = x.shape
    x = x.float().transpose(1, 2).reshape(B * H, T)
    return F.pad(x, (0, T_pad - T), value=value).contiguous()


def _to_time_major(x: torch.Tensor, B: int, H: int, T: int) -> torch.Tensor:
    """[B·H, T_pad] -> [B, T, H]."""
    return x[:, :T].reshape(B, H, T).transpose(1, 2)


class _ChunkMLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, log_i, log_f, C0, n0, m0, scale, eps, stabilise):
        B, T, H, K = q.shape
        V = v.shape[-1]
        BH, T_pad = log_i.shape
        cfg = _launch_config(K, V)
        L, BT = cfg["L"], cfg["BT"]
        NC = T_pad // L
        hi, lo = _cumulative_gates(log_f, L)
        C = torch.empty(BH, NC + 1, K, V, device=q.device, dtype=torch.float32)
        n = torch.empty(BH, NC + 1, K, device=q.device, dtype=torch.float32)
        m = torch.empty(BH, NC + 1, device=q.device, dtype=torch.float32)
        has_h0 = C0 is not None
        precision = launch.precision(q.dtype, FLOAT32_PRODUCTS)
        kernels.chunk_states[(triton.cdiv(K, cfg["BK"]), triton.cdiv(V, cfg["BV"]), BH)](
            k, v, hi, lo, log_i, C0 if has_h0 else C, n0 if has_h0 else n, m0 if has_h0 else m, C, n, m,
            T, T_pad, NC, H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], L=L, BT=BT, STABILISE=stabilise,
            HAS_H0=has_h0, PRECISION=precision, num_warps=WARPS["states"], num_stages=STAGES,
        )
        h = torch.empty_like(v)
        m_steps = torch.empty(BH, T_pad, device=q.device, dtype=torch.float32)
        den = torch.empty(BH, T_pad, device=q.device, dtype=torch.float32)
        kernels.chunk_outputs[(triton.cdiv(V, cfg["BV"]), T_pad // BT, BH)](
            q, k, v, hi, lo, log_i, C, n, m, h, m_steps, den, T, T_pad, NC, scale, eps,
            H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], L=L, BT=BT, STABILISE=stabilise,
            PRECISION=precision, num_warps=WARPS["outputs"], num_stages=STAGES,
        )
        ctx.save_for_backward(q, k, v, hi, lo, log_i, C, n, m, m_steps, den, h)
        ctx.scale, ctx.eps, ctx.stabilise, ctx.has_h0 = scale, eps, stabilise, has_h0
        return h, C[:, NC].view(B, H, K, V), n[:, NC].view(B, H, K), m[:, NC].view(B, H)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh, dC_T, dn_T, dm_T):
        q, k, v, hi, lo, log_i, C, n, m, m_steps, den, h = ctx.saved_tensors
        scale, stabilise = ctx.scale, ctx.stabilise
        B, T, H, K = q.shape
        V = v.shape[-1]
        BH, T_pad = log_i.shape
        cfg = _launch_config(K, V)
        L, BT = cfg["L"], cfg["BT"]
        NC = T_pad // L
        NKT, NVT = triton.cdiv(K, cfg["BK"]), triton.cdiv(V, cfg["BV"])
        precision = launch.precision(q.dtype, FLOAT32_PRODUCTS)
        common = dict(H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], L=L, BT=BT, PRECISION=precision)
        options = dict(num_warps=WARPS["gradients"], num_stages=STAGES)
        if dh is None:
            dh = torch.zeros_like(h)

        # h = num / z, z = max(|den|, e^{−m}) + eps: the gradients of num, den and m_t (the
        # last through the floor e^{−m}), per step [B·H, T_pad]
        floor = (-m_steps).exp()
        z = torch.maximum(den.abs(), floor) + ctx.eps
        dh_dot_h = F.pad((dh.float() * h.float()).sum(-1).transpose(1, 2).reshape(BH, T), (0, T_pad - T))
        dz = -dh_dot_h / z
        on_floor = floor > den.abs()
        dden = torch.where(on_floor, 0.0, dz * den.sign()).contiguous()
        dm_direct = torch.where(on_floor, -dz * floor, 0.0)
        dnum = (dh.float() / _to_time_major(z, B, H, T)[..., None]).to(v.dtype).contiguous()

        # adjoints of the states entering every chunk and after the last
        dC = torch.empty_like(C)
        dn = torch.empty_like(n)
        has_dht = dC_T is not None or dn_T is not None
        if has_dht:
            dC_T = (torch.zeros(B, H, K, V, device=q.device) if dC_T is None else dC_T).float().contiguous()
            dn_T = (torch.zeros(B, H, K, device=q.device) if dn_T is None else dn_T).float().contiguous()
        kernels.reverse_states[(NKT, NVT, BH)](
            q, dnum, dden, hi, lo, m, m_steps, dC_T if has_dht else dC, dn_T if has_dht else dn, dC, dn,
            T, T_pad, NC, scale, HAS_DHT=has_dht, **common, **options,
        )

        dq = torch.empty_like(q)
        row_sums = torch.empty(BH, T_pad, device=q.device, dtype=torch.float32)
        strict_rows = torch.empty_like(row_sums)
        d_exponent = torch.empty(NKT, BH, T_pad, device=q.device, dtype=torch.float32)
        kernels.query_gradients[(NKT, T_pad // BT, BH)](
            q, k, v, dnum, dden, hi, lo, log_i, C, n, m, m_steps, dq, row_sums, strict_rows, d_exponent,
            T, T_pad, NC, scale, **common, **options,
        )
        d_exponent = d_exponent.sum(0)

        # ∂/∂m_t: the floor's, less the entering state's and the log-weights' (each term is
        # scaled by e^{−m_t}); it goes to whichever term set m_t
        m_in = m[:, :-1].repeat_interleave(L, dim=1)
        from_state = (hi + lo) + m_in
        dm = dm_direct - d_exponent - row_sums
        if stabilise:
            state_won = from_state >= m_steps
            routed = torch.where(state_won, 0.0, dm).contiguous()
            # ∂/∂from_state_t, which is also ∂/∂m_c from step t
            d_from_state = d_m_in = d_exponent + torch.where(state_won, dm, 0.0)
            # the routed part of the row's log-weights below the diagonal (LW[t, t] = log i_t)
            strict_rows = strict_rows + torch.where(log_i != m_steps, routed, 0.0)
        else:
            routed = torch.zeros_like(dm)
            d_from_state = d_exponent
            d_m_in = d_exponent + dm

        dk, dv = torch.empty_like(k), torch.empty_like(v)
        col_sums = torch.empty(BH, T_pad, device=q.device, dtype=torch.float32)
        strict_cols = torch.empty_like(col_sums)
        d_write = torch.empty(NKT, BH, T_pad, device=q.device, dtype=torch.float32)
        for values, grid, out in ((False, NKT, dk), (True, NVT, dv)):
            kernels.key_gradients[(grid, T_pad // BT, BH)](
                q, k, v, dnum, dden, hi, lo, log_i, dC, dn, m, m_steps, routed, out, col_sums, strict_cols, d_write,
                T, T_pad, NC, scale, VALUES=values, **common, **options,
            )
        d_write = d_write.sum(0)

        # the chain of the chunks' max states: D_c = ∂/∂m_c
        #   = (chunk c's steps) + (chunk c's decay) − (C_c, n_c are scaled by e^{−m_c}) + (m_{c+1} if m_c set it)
        G = (hi + lo)[:, L - 1 :: L]
        decay = (G + m[:, :-1] - m[:, 1:]).exp()
        inner = (dC * C).sum((-2, -1)) + (dn * n).sum(-1)
        d_decay = decay * ((dC[:, 1:] * C[:, :-1]).sum((-2, -1)) + (dn[:, 1:] * n[:, :-1]).sum(-1))
        x = d_m_in.view(BH, NC, L).sum(-1) + d_decay - F.pad(inner[:, 1:-1], (1, 0))
        D_last = -inner[:, -1] + (0.0 if dm_T is None else dm_T.float().reshape(BH))
        if stabilise:
            chunk_won = (G + m[:, :-1]) >= m[:, 1:]
            carry = chunk_won.float()
        else:
            carry = torch.ones_like(x)
        D = linear_recurrence(carry.flip(1), x.flip(1), D_last).flip(1)
        D_next = torch.cat([D[:, 1:], D_last[:, None]], dim=1)
        # G_c's own uses: the chunk's decay and the candidate G_c + m_c for m_{c+1}
        d_G = d_decay + carry * D_next if stabilise else d_decay
        # a_s = G_c − b_s + log i_s: the gradient through the end state, and m_{c+1} where
        # step s set it
        d_a = d_write
        if stabilise:
            a = (hi[:, L - 1 :: L].repeat_interleave(L, 1) - hi) + (lo[:, L - 1 :: L].repeat_interleave(L, 1) - lo) + log_i
            set_by_step = (~chunk_won).repeat_interleave(L, 1) & (a == m[:, 1:].repeat_interleave(L, 1))
            d_a = d_a + torch.where(set_by_step, D_next.repeat_interleave(L, 1), 0.0)
        d_log_i = col_sums + d_a
        # log f_r of chunk c enters LW[t, s] for s < r <= t, from_state_t for t >= r, a_s for
        # s < r and G_c. The pairs (t, s) it lies between are the rows' sums below the
        # diagonal from r on less the columns' from r on: the diagonal terms, the largest
        # under strong forgetting, never enter a difference.
        chunks = lambda x: x.view(BH, NC, L)  # noqa: E731
        suffix = lambda x: chunks(x).flip(-1).cumsum(-1).flip(-1)  # noqa: E731
        before = F.pad(chunks(d_a)[..., :-1].cumsum(-1), (1, 0))
        d_log_f = suffix(strict_rows + d_from_state) - suffix(strict_cols) + before + d_G[..., None]
        d_log_f = d_log_f.flatten(1)

        dC0 = dC[:, 0].view(B, H, K, V) if ctx.has_h0 else None
        dn0 = dn[:, 0].view(B, H, K) if ctx.has_h0 else None
        dm0 = D[:, 0].view(B, H) if ctx.has_h0 else None
        return dq, dk, dv, d_log_i, d_log_f, dC0, dn0, dm0, None, None, None


def triton_mlstm(q, k, v, *, i, f, scale, initial_state, cu_seqlens, eps, input_gate):
    """The stabilised mLSTM (or mLSTMsig), chunkwise in fused Triton kernels (forward and
    backward); the arguments of `naive_mlstm`, already checked, with K, V <= 256. The final
    state is float32 (float64 for float64 inputs, which the kernels round to float32)."""
    launch.check_head_widths(q, v, "mLSTM")
    out_dtype = v.dtype
    wide = torch.float64 in (q.dtype, v.dtype)
    if wide:
        q, k, v = q.float(), k.float(), v.float()
    log_i, log_f = log_gates(i, f, input_gate, torch.float32)
    log_f = log_f.clamp(min=GATE_FLOOR)
    if cu_seqlens is not None:
        # after each sequence: log f = 0 and log i = −inf leave C, n and m unchanged
        valid = packed_to_padded(torch.ones_like(log_i), cu_seqlens).bool()
        q, k, v, log_f = (packed_to_padded(x, cu_seqlens) for x in (q, k, v, log_f))
        log_i = packed_to_padded(log_i, cu_seqlens).masked_fill(~valid, float("-inf"))
    B, T, H, K = q.shape
    T_pad = launch.padded_length(T, CHUNK)
    log_i, log_f = _per_head(log_i, T_pad, float("-inf")), _per_head(log_f, T_pad, 0.0)
    q, k, v = q.contiguous(), k.to(q.dtype).contiguous(), v.to(q.dtype).contiguous()
    C0 = n0 = m0 = None
    if initial_state is not None:
        C0, n0, m0 = (x.float().contiguous() for x in initial_state)
    h, C, n, m = _ChunkMLSTM.apply(q, k, v, log_i, log_f, C0, n0, m0, scale, eps, input_gate == "exp")
    if cu_seqlens is not None:
        h = padded_to_packed(h, cu_seqlens)
    state = MLSTMState(C, n, m)
    if wide:
        state = MLSTMState(*(x.double() for x in state))
    return h.to(out_dtype), state
