"""The (gated) delta rule in fused Triton kernels: the autograd Function, the launch
settings and the public forms, chunkwise training (forward and backward) and a
step-by-step kernel for decoding (the kernels and their derivation are in kernels.py).

Parallelizing Linear Transformers with the Delta Rule over Sequence Length
(Yang, Wang, Zhang, Shen, Kim; arXiv:2406.06484), §3; Gated Delta Networks (Yang, Kautz,
Hatamizadeh; arXiv:2412.06464), §3.3:

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,      o_t = scale · S_tᵀ q_t

Legend: B batch, T time, H heads, K key width, V value width, NC chunks per sequence.
"""

from __future__ import annotations

import torch
import triton

from ..common import launch
from . import kernels

CHUNK = 64
# exp(GATE_FLOOR) is 0 in float32, so clamping changes no float32 result; the chunk sums of
# clamped gates stay finite (sums of -inf would give NaN as their differences).
GATE_FLOOR = -128.0
# float32 inputs: three TF32 tensor-core products per product (about float32 accuracy;
# IEEE products unroll into FMA code that takes minutes to compile at K = 128)
FLOAT32_PRODUCTS = "tf32x3"
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


def _launch_config(K: int, V: int) -> dict:
    """Tiles of the walks and of the value loops: the whole key width, 32 value columns."""
    return {"BK": launch.pow2(K), "BV": launch.pow2(min(V, VALUE_TILE))}


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
    cfg = _launch_config(K, V)
    kernels.prepare[(T_pad // CHUNK, B * H)](
        k, v, beta, g if g is not None else beta, gc[0], gc[1], W, U_v, tinv, T, T_pad, GATE_FLOOR,
        H=H, K=K, V=V, BK=cfg["BK"], BV=launch.pow2(min(V, 2 * VALUE_TILE)), C=CHUNK,
        LOG2_C=CHUNK.bit_length() - 1, HAS_G=g is not None,
        STORE_T=store_t, PRECISION=launch.precision(k.dtype, FLOAT32_PRODUCTS),
        num_warps=WARPS["prepare"], num_stages=STAGES,
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
    cfg = _launch_config(K, V)
    # stands in for the buffers this launch neither reads nor writes
    unused = gc
    kernels.walk[(triton.cdiv(V, cfg["BV"]), n * H)](
        q, k, gc[0], gc[1], W, U_v, h0 if h0 is not None else unused, o if output else unused, U if U is not None else unused,
        states if states is not None else unused, final if final is not None else unused,
        cu_chunks if cu_chunks is not None else unused, T, T_pad, NC, scale,
        H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], C=CHUNK, HAS_H0=h0 is not None, OUTPUT=output,
        STORE_U=store_for_backward, STORE_STATES=store_for_backward, STORE_FINAL=store_final,
        VARLEN=cu_chunks is not None, PRECISION=launch.precision(q.dtype, FLOAT32_PRODUCTS),
        num_warps=WARPS["walk"], num_stages=STAGES,
    )
    return o, final, states, U


def _outputs(q, k, v, gc, U, states, scale, T_pad):
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = torch.empty_like(v)
    cfg = _launch_config(K, V)
    kernels.outputs[(triton.cdiv(V, cfg["BV"]), T_pad // CHUNK, B * H)](
        q, k, gc[0], gc[1], U, states, o, T, T_pad, T_pad // CHUNK, scale,
        H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], C=CHUNK,
        PRECISION=launch.precision(q.dtype, FLOAT32_PRODUCTS),
        num_warps=WARPS["gradient"], num_stages=STAGES,
    )
    return o


class _ChunkDeltaRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, g, h0, scale, output_final_state, cu_chunks):
        T_pad = launch.padded_length(q.shape[1], CHUNK)
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
        T_pad = launch.padded_length(T, CHUNK)
        NC = T_pad // CHUNK
        device = q.device
        products = launch.precision(q.dtype, FLOAT32_PRODUCTS)
        cfg = _launch_config(K, V)
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
            kernels.intra_gradient[(triton.cdiv(V, cfg["BV"]), NC, B * H)](
                q, k, do, gc[0], gc[1], dU, T, T_pad, scale,
                H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], C=CHUNK, PRECISION=products,
                num_warps=WARPS["gradient"], num_stages=STAGES,
            )
        kernels.reverse_walk[(triton.cdiv(V, cfg["BV"]), n * H)](
            q, k, do, gc[0], gc[1], W, dU, dstates, dht if dht is not None else dh0, dh0,
            cu_chunks if cu_chunks is not None else dh0, T, T_pad, NC, scale,
            H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], C=CHUNK, HAS_DHT=dht is not None,
            INTRA_GIVEN=intra_given, VARLEN=cu_chunks is not None, PRECISION=products,
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
        kernels.gradient_values[(NC, B * H)](
            v, beta, do, U_v, U, dU, tinv, states, dstates, dv, dO_St, U_Dt, dR_k, dO_Ut, dRv_Uvt,
            v_dRv, S_dot_D, T, T_pad, NC,
            H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], C=CHUNK, PRECISION=products,
            num_warps=WARPS["gradient"], num_stages=STAGES,
        )
        kernels.gradient_keys[(NC, B * H)](
            q, k, beta, g if g is not None else beta, gc[0], gc[1], W, dO_St, U_Dt, dR_k, dO_Ut, dRv_Uvt,
            v_dRv, S_dot_D, dq, dk, dbeta, dg if dg is not None else dbeta, T, T_pad, NC, scale, GATE_FLOOR,
            H=H, K=K, BK=launch.pow2(min(K, KEY_BLOCK)), C=CHUNK, HAS_G=g is not None, PRECISION=products,
            num_warps=WARPS["gradient"], num_stages=STAGES,
        )
        dh0 = dh0.to(h0.dtype) if h0 is not None else None
        return dq, dk, dv, dbeta, dg, dh0, None, None, None


def triton_delta_rule(q, k, v, *, beta, g, scale, initial_state, output_final_state, cu_seqlens):
    """The (gated) delta rule, chunkwise, in fused Triton kernels (forward and backward); the
    arguments of `naive_delta_rule`, already checked, with K, V <= 256. The final state is
    float32 (float64 for float64 inputs, which the kernels round to float32 on the way in).
    """
    launch.check_head_widths(q, v, "delta-rule")
    out_dtype = v.dtype
    wide = any(x is not None and x.dtype == torch.float64 for x in (q, k, v, beta, g))
    if wide:
        # the kernels compute in float32; float64 inputs are rounded once on the way in
        q, k, v, beta = q.float(), k.float(), v.float(), beta.float()
        g = None if g is None else g.float()
    if initial_state is not None and initial_state.dtype == torch.float64:
        initial_state = initial_state.float()
    # the zeros after each sequence's end on its chunks (k = 0, β = 0, g = 0) leave its
    # state unchanged
    layout, (q, k, v, beta, g) = launch.on_chunks(cu_seqlens, CHUNK, q, k, v, beta, g)
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    g = None if g is None else g.contiguous()
    h0 = None if initial_state is None else initial_state.contiguous()
    cu_chunks = None if layout is None else layout.cu_chunks
    # the kernels write the final state only when it is asked for
    o, final = _ChunkDeltaRule.apply(q, k, v, beta, g, h0, scale, output_final_state, cu_chunks)
    return launch.from_chunks(o, final, layout, out_dtype, wide)


def triton_delta_rule_recurrent(q, k, v, *, beta, g, scale, initial_state, cu_seqlens):
    """The (gated) delta rule step by step in one fused kernel, for decoding (no gradients);
    the arguments of `naive_delta_rule`, already checked, with K, V <= 256. With T = 1 it is
    one decoding step that reads the state once and writes it once. The final state is
    float32 (float64 for float64 inputs).
    """
    launch.check_head_widths(q, v, "delta-rule")
    launch.refuse_gradients(
        "triton_delta_rule_recurrent", "triton_delta_rule", q, k, v, beta, g, initial_state
    )
    o, final, final_dtype = launch.decoding_buffers(q, v, cu_seqlens)
    n, H, K, V = final.shape
    T = q.shape[1]
    BK, BV = launch.pow2(K, 1), min(launch.pow2(V, 1), 32)
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    g = None if g is None else g.contiguous()
    h0 = None if initial_state is None else initial_state.contiguous()
    kernels.recurrent[(triton.cdiv(V, BV), n * H)](
        q, k, v, beta, g if g is not None else beta, h0 if h0 is not None else final, o, final,
        cu_seqlens if cu_seqlens is not None else final, T, scale,
        H=H, K=K, V=V, BK=BK, BV=BV, HAS_G=g is not None, HAS_H0=h0 is not None,
        STORE_FINAL=True, VARLEN=cu_seqlens is not None, num_warps=4,
    )
    return o, final.to(final_dtype)


