"""Argument checks for the GLA family (one place, so every form rejects the same inputs)."""

from __future__ import annotations

from ..common import check_cu_seqlens, check_per_head, check_qkv, check_state


def check_gla_inputs(q, k, v, g, scale, initial_state, cu_seqlens, decay_sign=None) -> float:
    """Validates the arguments of every GLA form and returns the resolved scale."""
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
        check_cu_seqlens(cu_seqlens, B, T)
        n = cu_seqlens.numel() - 1
    if initial_state is not None:
        check_state("initial_state", initial_state, [n, H, K, V], q.device)
    if scale is None:
        return K**-0.5
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"scale must be a float or None; got {type(scale).__name__}")
    return float(scale)
