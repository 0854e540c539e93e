"""Argument checks for the grid family (one place, so every form rejects the same inputs)."""

from __future__ import annotations

import torch

from ..common import check_state, resolve_scale
from ..common.checks import shape

GATES = (
    "source_r", "source_d", "transition_rl", "transition_ru", "transition_dl", "transition_du",
    "mark_l", "mark_u", "direct",
)


def check_grid_inputs(q, k, v, *, scale, initial_state, cu_seqlens, **gates) -> dict:
    """Validates the arguments of every grid form; returns the resolved scale."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
        if x.dim() != 5:
            raise ValueError(f"{name} must have shape [B, X, Y, H, {'V' if name == 'v' else 'K'}]; got {shape(x)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point; got {x.dtype}")
        if x.device != q.device:
            raise ValueError(f"{name} is on {x.device} but q is on {q.device}; expected one device")
    if k.shape != q.shape:
        raise ValueError(f"k has shape {shape(k)} but q has {shape(q)}; expected equal")
    if v.shape[:4] != q.shape[:4]:
        raise ValueError(f"v has shape {shape(v)}; expected [B, X, Y, H] = {shape(q)[:4]} followed by V")
    B, X, Y, H, K = q.shape
    for name in GATES:
        g = gates.get(name)
        if g is None:
            continue
        if not isinstance(g, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor [B, X, Y, H] or None; got {type(g).__name__}")
        if shape(g) != [B, X, Y, H]:
            raise ValueError(f"{name} has shape {shape(g)}; expected [B, X, Y, H] = {[B, X, Y, H]} (from q)")
        if not g.is_floating_point():
            raise ValueError(f"{name} must be floating point; got {g.dtype}")
        if g.device != q.device:
            raise ValueError(f"{name} is on {g.device} but q is on {q.device}; expected one device")
    if initial_state is not None:
        if not (isinstance(initial_state, tuple) and len(initial_state) == 2):
            raise TypeError(
                f"initial_state must be a GridState(down, right) of two tensors or None; got {type(initial_state).__name__}"
            )
        down, right = initial_state
        V = v.shape[-1]
        check_state("initial_state.down", down, [B, Y, H, K, V], q.device)
        check_state("initial_state.right", right, [B, X, H, K, V], q.device)
    return {"scale": resolve_scale(scale, K)}
