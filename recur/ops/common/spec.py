"""What the specs (the naive loops) of the matrix-memory families start from."""

from __future__ import annotations

import torch

from .checks import state_dtype

__all__ = ["matrix_spec_start"]


def matrix_spec_start(q: torch.Tensor, v: torch.Tensor, scale: float | None, initial_state: torch.Tensor | None):
    """(scale, dtype, S_0) for q [B, T, H, K] and values [..., V]: the scale (K ** -0.5 when
    None), the dtype the state runs in (float64 when q or v is, else float32) and S_0
    [B, H, K, V] in it (zeros when `initial_state` is None)."""
    B, _, H, K = q.shape
    dtype = state_dtype(q, v)
    if initial_state is None:
        S = q.new_zeros(B, H, K, v.shape[-1], dtype=dtype)
    else:
        S = initial_state.to(dtype)
    return (K**-0.5 if scale is None else scale), dtype, S
