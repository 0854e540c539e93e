"""Argument checks for the delta-rule families (one place: every form rejects the same inputs)."""

from __future__ import annotations

import torch

from ..common import check_per_head, check_qkv, check_state, resolve_scale
from ..common.checks import shape


def _check_tensor(name: str, x, expected: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {expected}; got {type(x).__name__}")


def _check_initial_state(initial_state, cu_seqlens, B, H, K, V, device) -> None:
    n = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None:
        check_state("initial_state", initial_state, [n, H, K, V], device)


def check_delta_rule_inputs(q, k, v, *, beta, g, scale, initial_state, cu_seqlens, **_) -> dict:
    """Validates the arguments of every delta-rule form; returns the resolved scale."""
    check_qkv(q, k, v)
    B, T, H, K = q.shape
    _check_tensor("beta", beta, "[B, T, H]")
    check_per_head("beta", beta, q, allow_per_key=False)
    if g is not None:
        _check_tensor("g", g, "[B, T, H] or None")
        check_per_head("g", g, q, allow_per_key=False)
    _check_initial_state(initial_state, cu_seqlens, B, H, K, v.shape[-1], q.device)
    return {"scale": resolve_scale(scale, K)}


# DeltaProduct's main inputs: their shapes, and so their ranks
PRODUCT_SHAPES = {
    "q": "[B, T, H, K]",
    "k": "[B, T, n_h, H, K]",
    "v": "[B, T, n_h, H, V]",
    "beta": "[B, T, n_h, H]",
}
PRODUCT_RANKS = {"q": 4, "k": 5, "v": 5, "beta": 4}


def check_delta_product_inputs(q, k, v, *, beta, g, scale, initial_state, cu_seqlens, **_) -> dict:
    """Validates the arguments of every DeltaProduct form; returns the resolved scale.

    q [B, T, H, K]; k [B, T, n_h, H, K]; v [B, T, n_h, H, V]; beta [B, T, n_h, H]; g [B, T, H].
    """
    for name, x in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        _check_tensor(name, x, PRODUCT_SHAPES[name])
        if x.dim() != PRODUCT_RANKS[name]:
            raise ValueError(f"{name} must have shape {PRODUCT_SHAPES[name]}; got {shape(x)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point; got {x.dtype}")
        if x.device != q.device:
            raise ValueError(f"{name} is on {x.device} but q is on {q.device}; expected one device")
    B, T, H, K = q.shape
    n_h = k.shape[2]
    if n_h < 1:
        raise ValueError(f"k must have at least one Householder step (axis 2); got {shape(k)}")
    if shape(k) != [B, T, n_h, H, K]:
        raise ValueError(
            f"k has shape {shape(k)}; expected [B, T, n_h, H, K] = {[B, T, n_h, H, K]} (from q)"
        )
    if shape(v)[:4] != [B, T, n_h, H]:
        raise ValueError(
            f"v has shape {shape(v)}; expected {[B, T, n_h, H]} followed by V (from q and k)"
        )
    if shape(beta) != [B, T, n_h, H]:
        raise ValueError(f"beta has shape {shape(beta)}; expected {[B, T, n_h, H]} (from q and k)")
    if g is not None:
        _check_tensor("g", g, "[B, T, H] or None")
        check_per_head("g", g, q, allow_per_key=False)
    _check_initial_state(initial_state, cu_seqlens, B, H, K, v.shape[-1], q.device)
    return {"scale": resolve_scale(scale, K)}
