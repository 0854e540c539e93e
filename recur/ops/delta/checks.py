"""Argument checks for the delta-rule family (one place, so every form rejects the same inputs)."""

from __future__ import annotations

import torch

from ..common import check_cu_seqlens, check_per_head, check_qkv, check_state
from ..common.checks import shape


def _check_scale(scale) -> float | None:
    if scale is None:
        return None
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"scale must be a float or None; got {type(scale).__name__}")
    return float(scale)


def _check_states(initial_state, cu_seqlens, B, T, H, K, V, device) -> None:
    n = B
    if cu_seqlens is not None:
        check_cu_seqlens(cu_seqlens, B, T)
        n = cu_seqlens.numel() - 1
    if initial_state is not None:
        check_state("initial_state", initial_state, [n, H, K, V], device)


def check_delta_inputs(q, k, v, beta, g, scale, initial_state, cu_seqlens) -> float:
    """Validates the arguments of every delta-rule form and returns the resolved scale."""
    check_qkv(q, k, v)
    B, T, H, K = q.shape
    if not isinstance(beta, torch.Tensor):
        raise TypeError(f"beta must be a torch.Tensor [B, T, H]; got {type(beta).__name__}")
    check_per_head("beta", beta, q, allow_per_key=False)
    if g is not None:
        check_per_head("g", g, q, allow_per_key=False)
    _check_states(initial_state, cu_seqlens, B, T, H, K, v.shape[-1], q.device)
    scale = _check_scale(scale)
    return K**-0.5 if scale is None else scale


def check_delta_product_inputs(q, k, v, beta, g, scale, initial_state, cu_seqlens) -> float:
    """Validates the arguments of every DeltaProduct form and returns the resolved scale.

    q [B, T, H, K]; k [B, T, n_h, H, K]; v [B, T, n_h, H, V]; beta [B, T, n_h, H]; g [B, T, H].
    """
    for name, x, dims in (("q", q, 4), ("k", k, 5), ("v", v, 5), ("beta", beta, 4)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
        if x.dim() != dims:
            expected = {"q": "[B, T, H, K]", "k": "[B, T, n_h, H, K]", "v": "[B, T, n_h, H, V]", "beta": "[B, T, n_h, H]"}
            raise ValueError(f"{name} must have shape {expected[name]}; got {shape(x)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point; got {x.dtype}")
        if x.device != q.device:
            raise ValueError(f"{name} is on {x.device} but q is on {q.device}; expected one device")
    B, T, H, K = q.shape
    n_h = k.shape[2]
    if n_h < 1:
        raise ValueError(f"k must have at least one Householder step (axis 2); got {shape(k)}")
    if shape(k) != [B, T, n_h, H, K]:
        raise ValueError(f"k has shape {shape(k)}; expected [B, T, n_h, H, K] = {[B, T, n_h, H, K]} (from q)")
    if shape(v)[:4] != [B, T, n_h, H]:
        raise ValueError(f"v has shape {shape(v)}; expected {[B, T, n_h, H]} followed by V (from q and k)")
    if shape(beta) != [B, T, n_h, H]:
        raise ValueError(f"beta has shape {shape(beta)}; expected {[B, T, n_h, H]} (from q and k)")
    if g is not None:
        check_per_head("g", g, q, allow_per_key=False)
    _check_states(initial_state, cu_seqlens, B, T, H, K, v.shape[-1], q.device)
    scale = _check_scale(scale)
    return K**-0.5 if scale is None else scale
