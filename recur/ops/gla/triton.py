"""Gated linear attention in fused Triton kernels: the autograd Function, the launch
settings and the public forms (the kernels and their derivation are in kernels.py).

Gated Linear Attention Transformers with Hardware-Efficient Training
(Yang, Wang, Shen, Panda, Kim; arXiv:2312.06635), §4:

    S_t = diag(exp g_t) S_{t-1} + k_t v_tᵀ,      o_t = scale · S_tᵀ q_t

Legend: B batch, T time, H heads, K key width, V value width, NC chunks per sequence.
"""

from __future__ import annotations

import torch
import triton

from ..common import launch
from . import kernels

CHUNK = 64
SUB_CHUNK = 16
# exp(GATE_FLOOR) is 0 in float32, so clamping changes no float32 result, and the chunk
# sums of clamped gates stay small enough for their differences to keep 5 digits.
GATE_FLOOR = -128.0
# float32 inputs take IEEE products
FLOAT32_PRODUCTS = "ieee"
# Warps per program and tile widths of the whole-chunk kernels (fixed: no autotuning at the
# first call).
WARPS = {"states": 4, "output": 8, "backward": 8, "values": 8}
# (the state walk of a packed batch, whose loop bounds are per sequence, spills with 3)
STAGES = {"states": 3, "packed_states": 2, "output": 2, "backward": 1, "values": 2}
TILES = {"key": 16, "key_subchunk": 16, "value_dv": 64, "state_key": 64, "state_value": 32}


def _launch_config(K: int, V: int) -> dict:
    """Fixed tiles (no autotuning, so the first call only compiles). Whole-chunk programs
    take key blocks of BK and the whole value width; sub-chunk programs (strong decays) key
    blocks of BKD, which keep their [c, c, BKD] diagonal products in registers; the state
    recurrence splits values by BVS so that single long sequences still fill the chip."""
    return {
        "BK": launch.pow2(min(K, TILES["key"])), "BKD": launch.pow2(min(K, TILES["key_subchunk"])),
        "BV": launch.pow2(V), "BVD": launch.pow2(min(V, TILES["value_dv"])), "KP": launch.pow2(K),
        "BKS": launch.pow2(min(K, TILES["state_key"])),
        "BVS": launch.pow2(min(V, TILES["state_value"])),
    }


def _gate_cumsum(g, decay_sign, B, T, T_pad, H, device):
    """Chunk-cumulated (clamped) log decays [B, T_pad, H(, K)] and sign parities [B, T_pad, H]."""
    scalar_gate = g is None or g.dim() == 3
    KG = 1 if scalar_gate else g.shape[-1]
    gc = torch.empty(B, T_pad, H, KG, device=device, dtype=torch.float32)
    sc = torch.empty(B, T_pad, H, device=device, dtype=torch.float32) if decay_sign is not None else gc
    kernels.gate_cumsum[(T_pad // CHUNK, B * H)](
        g if g is not None else gc, decay_sign if decay_sign is not None else gc, gc, sc, T, T_pad, GATE_FLOOR,
        H=H, KG=KG, BKG=launch.pow2(KG, 1), C=CHUNK, HAS_G=g is not None, HAS_SIGN=decay_sign is not None,
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
    kernels.chunk_states[grid](
        x, y, g if g is not None else gc, gc, sc, h0 if h0 is not None else states, states, final,
        cu_chunks if cu_chunks is not None else gc, T, T_pad, NC, scale, GATE_FLOOR,
        H=H, K=K, V=V, BK=cfg["BKS"], BV=cfg["BVS"], C=CHUNK, REVERSE=reverse, SCALAR_GATE=scalar_gate,
        HAS_G=g is not None, HAS_SIGN=has_sign, HAS_H0=h0 is not None, STORE_FINAL=store_final, VARLEN=cu_chunks is not None,
        PRECISION=launch.precision(x.dtype, FLOAT32_PRODUCTS),
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
        T_pad = launch.padded_length(T, CHUNK)
        gc, sc, scalar_gate = _gate_cumsum(g, decay_sign, B, T, T_pad, H, q.device)
        has_sign = decay_sign is not None
        states, final = _chunk_states(
            k, v, g, gc, sc, h0, scale, T_pad, scalar_gate, has_sign, reverse=False,
            store_final=output_final_state, state_dtype=_states_dtype(q.dtype),
            cu_chunks=None if layout is None else layout.cu_chunks,
        )
        o = torch.empty_like(v)
        cfg = _launch_config(K, V)
        kernels.chunk_outputs[(T_pad // CHUNK, B * H)](
            q, k, v, g if g is not None else gc, gc, sc, states, o, T, T_pad, T_pad // CHUNK, scale, GATE_FLOOR,
            H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], BKD=cfg["BKD"], KP=cfg["KP"], C=CHUNK, c=SUB_CHUNK,
            SCALAR_GATE=scalar_gate, HAS_G=g is not None, HAS_SIGN=has_sign,
            PRECISION=launch.precision(q.dtype, FLOAT32_PRODUCTS),
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
        T_pad = launch.padded_length(T, CHUNK)
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
        kernels.chunk_backward[(NC, B * H)](
            q, k, v, do, g if g is not None else gc, gc, sc, states, final, dstates,
            layout.last_of if layout is not None else gc, dq, dk, dG, dg if need_dg else gc,
            T, T_pad, NC, scale, GATE_FLOOR,
            H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], BKD=cfg["BKD"], KP=cfg["KP"], C=CHUNK, c=SUB_CHUNK,
            SCALAR_GATE=scalar_gate, HAS_G=g is not None, HAS_SIGN=has_sign, NEED_DG=need_dg, VARLEN=layout is not None,
            PRECISION=launch.precision(q.dtype, FLOAT32_PRODUCTS),
            num_warps=WARPS["backward"], num_stages=STAGES["backward"],
        )
        kernels.chunk_values_backward[(triton.cdiv(V, cfg["BVD"]), NC, B * H)](
            q, k, do, g if g is not None else gc, gc, sc, dstates, dv, T, T_pad, NC, scale, GATE_FLOOR,
            H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BVD"], BKD=cfg["BKD"], KP=cfg["KP"], C=CHUNK, c=SUB_CHUNK,
            SCALAR_GATE=scalar_gate, HAS_G=g is not None, HAS_SIGN=has_sign,
            PRECISION=launch.precision(q.dtype, FLOAT32_PRODUCTS),
            num_warps=WARPS["values"], num_stages=STAGES["values"],
        )
        dh0 = dh0.to(h0.dtype) if h0 is not None else None
        return dq, dk, dv, dg, None, dh0, None, None, None


def triton_gla(q, k, v, *, g, scale, initial_state, output_final_state, cu_seqlens, decay_sign):
    """Gated linear attention, chunkwise, in fused Triton kernels (forward and backward);
    the arguments of `naive_gla`, already checked, with K, V <= 256. The final state is
    float32 (float64 for float64 inputs, which the kernels round to float32 on the way in).
    """
    launch.check_head_widths(q, v, "GLA")
    out_dtype = v.dtype
    wide = torch.float64 in (q.dtype, v.dtype)
    if wide:
        # the kernels compute in float32; float64 inputs are rounded once on the way in
        q, k, v = q.float(), k.float(), v.float()
        g = None if g is None else g.float()
        initial_state = None if initial_state is None else initial_state.float()
    layout, (q, k, v, g, decay_sign) = launch.on_chunks(cu_seqlens, CHUNK, q, k, v, g, decay_sign)
    q, k, v = q.contiguous(), k.to(q.dtype).contiguous(), v.to(q.dtype).contiguous()
    g = None if g is None else g.contiguous()
    decay_sign = None if decay_sign is None else decay_sign.float().contiguous()
    h0 = None if initial_state is None else initial_state.contiguous()
    o, final = _ChunkGLA.apply(q, k, v, g, decay_sign, h0, scale, output_final_state, layout)
    return launch.from_chunks(o, final, layout, out_dtype, wide)


def triton_gla_recurrent(q, k, v, *, g, scale, initial_state, output_final_state, cu_seqlens, decay_sign):
    """Gated linear attention step by step in one fused kernel, for decoding (no gradients);
    the arguments of `naive_gla`, already checked. With T = 1 it is one decoding step that
    reads the state once and writes it once.
    """
    launch.check_head_widths(q, v, "GLA")
    launch.refuse_gradients("triton_gla_recurrent", "triton_gla", q, k, v, g, initial_state)
    o, final, final_dtype = launch.decoding_buffers(q, v, cu_seqlens)
    n, H, K, V = final.shape
    T = q.shape[1]
    BK, BV = launch.pow2(K, 1), min(launch.pow2(V, 1), 64)
    contiguous = lambda x: None if x is None else x.contiguous()  # noqa: E731
    q, k, v, g, h0 = (contiguous(x) for x in (q, k, v, g, initial_state))
    sign = None if decay_sign is None else decay_sign.float().contiguous()
    kernels.recurrent[(triton.cdiv(V, BV), n * H)](
        q, k, v, g if g is not None else q, sign if sign is not None else q, h0 if h0 is not None else final,
        o, final, cu_seqlens if cu_seqlens is not None else final, T, scale, GATE_FLOOR,
        H=H, K=K, V=V, BK=BK, BV=BV, HAS_G=g is not None, SCALAR_GATE=g is not None and g.dim() == 3,
        HAS_SIGN=sign is not None, HAS_H0=h0 is not None, STORE_FINAL=output_final_state,
        VARLEN=cu_seqlens is not None, num_warps=4,
    )
    return o, (final.to(final_dtype) if output_final_state else None)


