"""Argument checks for the mLSTM family (one place, so every form rejects the same inputs)."""

from __future__ import annotations

import torch

from ..common import check_cu_seqlens, check_per_head, check_qkv, check_state

INPUT_GATES = ("exp", "sigmoid")


def check_mlstm_inputs(q, k, v, i, f, scale, initial_state, cu_seqlens, eps, input_gate) -> float:
    """Validates the arguments of every mLSTM form and returns the resolved scale."""
    check_qkv(q, k, v)
    B, T, H, K = q.shape
    V = v.shape[-1]
    for name, gate in (("i", i), ("f", f)):
        if not isinstance(gate, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor [B, T, H]; got {type(gate).__name__}")
        check_per_head(name, gate, q, allow_per_key=False)
    n = B
    if cu_seqlens is not None:
        check_cu_seqlens(cu_seqlens, B, T)
        n = cu_seqlens.numel() - 1
    if initial_state is not None:
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 3:
            raise ValueError("initial_state must be a tuple (C [N, H, K, V], n [N, H, K], m [N, H])")
        C0, n0, m0 = initial_state
        check_state("initial_state C", C0, [n, H, K, V], q.device)
        check_state("initial_state n", n0, [n, H, K], q.device)
        check_state("initial_state m", m0, [n, H], q.device)
    if input_gate not in INPUT_GATES:
        raise ValueError(f"input_gate must be one of {list(INPUT_GATES)}; got {input_gate!r}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
        raise ValueError(f"eps must be a non-negative float; got {eps!r}")
    if scale is None:
        return K**-0.5
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"scale must be a float or None; got {type(scale).__name__}")
    return float(scale)


def log_gates(i: torch.Tensor, f: torch.Tensor, input_gate: str, dtype: torch.dtype):
    """log i_t and log f_t from the pre-activations: i_t = exp(ĩ_t) or σ(ĩ_t), f_t = σ(f̃_t)."""
    i, f = i.to(dtype), f.to(dtype)
    log_i = i if input_gate == "exp" else torch.nn.functional.logsigmoid(i)
    return log_i, torch.nn.functional.logsigmoid(f)
