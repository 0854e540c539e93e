"""Argument checks for the SSM family (one place, so every form rejects the same inputs)."""

from __future__ import annotations

import torch

from ..common.checks import shape


def compute_dtypes(*tensors: torch.Tensor | None) -> tuple[torch.dtype, torch.dtype]:
    """(real, complex) dtypes of the state: float64 / complex128 when any input is double
    precision, else float32 / complex64 (bf16 and fp16 inputs are upcast)."""
    wide = any(t is not None and t.dtype in (torch.float64, torch.complex128) for t in tensors)
    return (torch.float64, torch.complex128) if wide else (torch.float32, torch.complex64)


def _check_tensor(name: str, x: torch.Tensor, expected: list[int], like: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if shape(x) != expected:
        raise ValueError(f"{name} has shape {shape(x)}; expected {expected}")
    if not (x.is_floating_point() or x.is_complex()):
        raise ValueError(f"{name} must be floating point or complex; got {x.dtype}")
    if x.device != like.device:
        raise ValueError(f"{name} is on {x.device} but u is on {like.device}; expected one device")


def _check_input(u: torch.Tensor) -> None:
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor; got {type(u).__name__}")
    if u.dim() != 3:
        raise ValueError(f"u must have shape [B, T, D]; got {shape(u)}")
    if not u.is_floating_point():
        raise ValueError(f"u must be floating point; got {u.dtype}")


def check_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state) -> int:
    """Validates the arguments of every selective-scan form; returns the number of groups
    G of B and C (1 when they have no group axis)."""
    _check_input(u)
    batch, T, channels = u.shape
    _check_tensor("delta", delta, [batch, T, channels], u)
    if not isinstance(A, torch.Tensor) or A.dim() != 2 or A.shape[0] != channels:
        got = shape(A) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"A must have shape [D, N] = [{channels}, N]; got {got}")
    N = A.shape[1]
    if not isinstance(B, torch.Tensor) or B.dim() not in (3, 4):
        got = shape(B) if isinstance(B, torch.Tensor) else type(B).__name__
        raise ValueError(f"B must have shape [B, T, N] or [B, T, G, N]; got {got}")
    groups = 1 if B.dim() == 3 else B.shape[2]
    expected_bc = [batch, T, N] if B.dim() == 3 else [batch, T, groups, N]
    _check_tensor("B", B, expected_bc, u)
    _check_tensor("C", C, expected_bc, u)
    if channels % groups:
        raise ValueError(f"B and C have G = {groups} groups; expected a divisor of D = {channels}")
    if D is not None:
        _check_tensor("D", D, [channels], u)
    if z is not None:
        _check_tensor("z", z, [batch, T, channels], u)
    if delta_bias is not None:
        _check_tensor("delta_bias", delta_bias, [channels], u)
    if initial_state is not None:
        _check_tensor("initial_state", initial_state, [batch, channels, N], u)
    return groups


def check_lti_inputs(u, A_bar, B_bar, C, D, initial_state, dense: bool) -> None:
    """Validates the arguments of every form of a time-invariant SSM (diagonal or dense)."""
    _check_input(u)
    batch, T, channels = u.shape
    if not isinstance(A_bar, torch.Tensor) or A_bar.dim() != (3 if dense else 2) or A_bar.shape[0] != channels:
        got = shape(A_bar) if isinstance(A_bar, torch.Tensor) else type(A_bar).__name__
        what = f"[H, N, N] = [{channels}, N, N]" if dense else f"[H, N] = [{channels}, N]"
        raise ValueError(f"A_bar must have shape {what}; got {got}")
    N = A_bar.shape[1]
    if dense and A_bar.shape[2] != N:
        raise ValueError(f"A_bar must be square per channel, [H, N, N]; got {shape(A_bar)}")
    _check_tensor("A_bar", A_bar, shape(A_bar), u)
    _check_tensor("B_bar", B_bar, [channels, N], u)
    _check_tensor("C", C, [channels, N], u)
    if D is not None:
        _check_tensor("D", D, [channels], u)
    if initial_state is not None:
        _check_tensor("initial_state", initial_state, [batch, channels, N], u)
