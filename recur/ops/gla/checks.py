"""Argument checks for the GLA family (one place, so every form rejects the same inputs)."""

from __future__ import annotations

from ..common import check_per_head, check_qkv, check_state, resolve_scale


def check_gla_inputs(q, k, v, *, g, scale, initial_state, cu_seqlens, decay_sign, **_) -> dict:
    """Validates the arguments of every GLA form; returns the resolved scale."""
    check_qkv(q, k, v)
    B, T, H, K = q.shape
    V = v.shape[-1]
    if g is not None:
        check_per_head("g", g, q, allow_per_key=True)
    if decay_sign is not None:
        if g is None or g.dim() != 3:
            raise ValueError("decay_sign needs a per-head log decay g of shape [B, T, H]")
        check_per_head("decay_sign", decay_sign, q, allow_per_key=False)
    n = B
    if cu_seqlens is not None:
        n = cu_seqlens.numel() - 1
    if initial_state is not None:
        check_state("initial_state", initial_state, [n, H, K, V], q.device)
    return {"scale": resolve_scale(scale, K)}
