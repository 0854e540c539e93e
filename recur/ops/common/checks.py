"""Argument checks shared by every op, with errors that name the argument, the expected
and the received value."""

from __future__ import annotations

import torch

__all__ = ["check_qkv", "check_per_head", "check_state", "resolve_scale", "shape", "state_dtype"]


def shape(x: torch.Tensor) -> list[int]:
    return list(x.shape)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q, k [B, T, H, K] and v [B, T, H, V], floating point, one device."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must have shape [B, T, H, {'V' if name == 'v' else 'K'}]; got {shape(x)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point; got {x.dtype}")
    if k.shape != q.shape:
        raise ValueError(f"k has shape {shape(k)} but q has {shape(q)}; expected equal")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v has shape {shape(v)}; expected [B, T, H] = {shape(q)[:3]} followed by V")
    for name, x in (("k", k), ("v", v)):
        if x.device != q.device:
            raise ValueError(f"{name} is on {x.device} but q is on {q.device}; expected one device")


def check_per_head(name: str, x: torch.Tensor, q: torch.Tensor, allow_per_key: bool) -> None:
    """A gate or rate of shape [B, T, H] (or [B, T, H, K] when allowed)."""
    expected = [shape(q)[:3]] + ([shape(q)] if allow_per_key else [])
    if shape(x) not in expected:
        what = " or ".join(str(e) for e in expected)
        raise ValueError(f"{name} has shape {shape(x)}; expected {what} (from q)")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point; got {x.dtype}")
    if x.device != q.device:
        raise ValueError(f"{name} is on {x.device} but q is on {q.device}; expected one device")


def check_state(name: str, state: torch.Tensor, expected: list[int], device: torch.device) -> None:
    """A state tensor: its shape, a floating (or complex) dtype, q's device."""
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(state).__name__}")
    if shape(state) != expected:
        raise ValueError(f"{name} has shape {shape(state)}; expected {expected}")
    if not (state.is_floating_point() or state.is_complex()):
        raise ValueError(f"{name} must be floating point; got {state.dtype}")
    if state.device != device:
        raise ValueError(f"{name} is on {state.device} but q is on {device}; expected one device")


def state_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """States and accumulations run in float32, or float64 when any input is float64."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def resolve_scale(scale, key_width: int) -> float:
    """The output (or query) scale: K ** -0.5 when None."""
    if scale is None:
        return key_width**-0.5
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"scale must be a float or None; got {type(scale).__name__}")
    return float(scale)
