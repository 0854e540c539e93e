"""The (gated) delta rule as a fused Triton kernel for decoding.

Parallelizing Linear Transformers with the Delta Rule over Sequence Length
(arXiv:2406.06484) and Gated Delta Networks (arXiv:2412.06464):

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,      o_t = scale · S_tᵀ q_t

One program per (sequence, head, block of value columns) keeps its columns of the state in
registers for the whole loop over time: the update mixes the key rows of the state only,
so value columns evolve independently. With T = 1 it is one decoding step that reads the
state once and writes it once. No gradients (training uses the chunk form).

Legend: B batch, T time, H heads, K key width, V value width; `nh` one (sequence, head).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .checks import check_delta_inputs

# tl.sum is a kernel of Triton's own (compiled or interpreted according to TRITON_INTERPRET
# when Triton is first imported); tl.reduce with Triton's adder follows this module.
_add = tl.standard._sum_combine
MAX_HEAD_DIM = 256


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


def triton_delta_rule_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (gated) delta rule step by step in one fused kernel, for decoding (no gradients).

    Same arguments and results as `naive_delta_rule`: q, k [B, T, H, K], v [B, T, H, V],
    beta [B, T, H], g (log α) [B, T, H] or None, initial_state [B, H, K, V] ([N, H, K, V]
    with cu_seqlens); K, V <= 256. The final state is float32 (float64 for float64 inputs).
    """
    scale = check_delta_inputs(q, k, v, beta, g, scale, initial_state, cu_seqlens)
    K, V = q.shape[-1], v.shape[-1]
    if K > MAX_HEAD_DIM or V > MAX_HEAD_DIM:
        raise ValueError(
            f"the Triton delta-rule kernel takes head widths up to {MAX_HEAD_DIM}; got K = {K}, V = {V}"
            " (use impl='chunk')"
        )
    if torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, beta, g, initial_state)
    ):
        raise ValueError(
            "triton_delta_rule_recurrent computes no gradients; call it under torch.no_grad() "
            "for decoding, or use the chunk form for training"
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
        STORE_FINAL=output_final_state, VARLEN=cu_seqlens is not None, num_warps=4,
    )
    return o, (final.to(final_dtype) if output_final_state else None)
