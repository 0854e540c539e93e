"""Argument checks for the mLSTM family (one place, so every form rejects the same inputs)."""

from __future__ import annotations

import torch

from ..common import check_per_head, check_qkv, check_state, resolve_scale
from .naive import MLSTMState

INPUT_GATES = ("exp", "sigmoid")


def check_mlstm_inputs(q, k, v, *, i, f, scale, initial_state, cu_seqlens, eps, input_gate, **_) -> dict:
    """Validates the arguments of every mLSTM form; returns the resolved scale and the
    initial state as an `MLSTMState`."""
    check_qkv(q, k, v)
    B, T, H, K = q.shape
    V = v.shape[-1]
    for name, gate in (("i", i), ("f", f)):
        if not isinstance(gate, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor [B, T, H]; got {type(gate).__name__}")
        check_per_head(name, gate, q, allow_per_key=False)
    if input_gate not in INPUT_GATES:
        raise ValueError(f"input_gate must be one of {list(INPUT_GATES)}; got {input_gate!r}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
        raise ValueError(f"eps must be a non-negative float; got {eps!r}")
    resolved = {"scale": resolve_scale(scale, K)}
    if initial_state is not None:
        if not isinstance(initial_state, tuple) or len(initial_state) != 3:
            what = f"a tuple of {len(initial_state)}" if isinstance(initial_state, tuple) else type(initial_state).__name__
            raise TypeError(
                f"initial_state must be an MLSTMState or a tuple (C [N, H, K, V], n [N, H, K], m [N, H]); got {what}"
            )
        n = B if cu_seqlens is None else cu_seqlens.numel() - 1
        for name, x, expected in zip(MLSTMState._fields, initial_state, ([n, H, K, V], [n, H, K], [n, H]), strict=True):
            check_state(f"initial_state.{name}", x, expected, q.device)
        resolved["initial_state"] = MLSTMState(*initial_state)
    return resolved

