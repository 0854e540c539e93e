"""Argument checks for the memory family (one place: every form rejects the same inputs)."""

from __future__ import annotations

import torch

from ..common import check_per_head, check_qkv
from ..common.checks import shape
from .model import layer_widths, memory_state_type

OBJECTIVES = ("l2", "lp", "huber")
RETENTIONS = ("l2", "lq", "kl")
OPTIMIZERS = ("gd", "momentum", "newton_schulz")


def _positive_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")


def _number(name: str, value, minimum: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be a number >= {minimum}; got {value!r}")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")


def check_memory_inputs(
    q, k, v, *, eta, g, theta, gamma, huber_threshold, depth, hidden, residual, layer_norm, feature_degree,
    objective, p, retention, q_norm, simplex_scale, optimizer, ns_steps, window, minibatch, initial_state,
    cu_seqlens, **_,
) -> None:
    """Validates the arguments of every memory form."""
    check_qkv(q, k, v)
    B, T, H, K = q.shape
    V = v.shape[-1]
    for name, x, required in (
        ("eta", eta, True), ("g", g, False), ("theta", theta, optimizer == "momentum"),
        ("gamma", gamma, False), ("huber_threshold", huber_threshold, objective == "huber"),
    ):
        if x is None:
            if required:
                raise ValueError(f"{name} [B, T, H] is needed (optimizer={optimizer!r}, objective={objective!r}); got None")
            continue
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor [B, T, H] or None; got {type(x).__name__}")
        check_per_head(name, x, q, allow_per_key=False)
    _positive_int("depth", depth)
    if hidden is not None:
        _positive_int("hidden", hidden)
    _positive_int("feature_degree", feature_degree)
    _positive_int("window", window)
    _positive_int("minibatch", minibatch)
    _positive_int("ns_steps", ns_steps, minimum=0)
    for name, flag in (("residual", residual), ("layer_norm", layer_norm)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False; got {flag!r}")
    _choice("objective", objective, OBJECTIVES)
    _choice("retention", retention, RETENTIONS)
    _choice("optimizer", optimizer, OPTIMIZERS)
    _number("p", p, 1.0)
    _number("q_norm", q_norm, 2.0)
    _number("simplex_scale", simplex_scale, 0.0)
    if optimizer == "gd" and theta is not None:
        raise ValueError("theta must be None with optimizer='gd' (plain gradient descent has no momentum); got a tensor")
    if objective == "huber" and window != 1:
        raise ValueError(f"objective 'huber' thresholds each token's own residual: window must be 1; got {window}")
    features = feature_degree * K
    if residual and features != V:
        raise ValueError(
            f"residual=True adds the memory's input to its output: feature_degree * K = {features} must equal V = {V}"
        )
    n = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None:
        _check_state(initial_state, n, H, K, V, depth, layer_widths(features, V, depth, hidden), window, q.device)


def _check_state(state, n, H, K, V, depth, widths, window, device) -> None:
    kind = memory_state_type(depth)
    if not isinstance(state, tuple) or len(state) != len(kind._fields):
        raise TypeError(f"initial_state must be a {kind.__name__} of {len(kind._fields)} tensors {kind._fields}; got {type(state).__name__}")
    matrices = [[n, H, a, b] for a, b in widths]
    expected = matrices * 3 + [[n, H, window - 1, K], [n, H, window - 1, V], [n, H, window - 1], [n]]
    for name, tensor, size in zip(kind._fields, state, expected, strict=True):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"initial_state.{name} must be a torch.Tensor; got {type(tensor).__name__}")
        if shape(tensor) != size:
            raise ValueError(f"initial_state.{name} has shape {shape(tensor)}; expected {size}")
        if not tensor.is_floating_point():
            raise ValueError(f"initial_state.{name} must be floating point; got {tensor.dtype}")
        if tensor.device != device:
            raise ValueError(f"initial_state.{name} is on {tensor.device} but q is on {device}; expected one device")
