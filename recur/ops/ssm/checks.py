"""Argument checks of the SSM families (one place, so every form rejects the same inputs).

Each is called by the family with every argument by keyword, before any form runs, and
raises naming the argument, the expected and the received value.
"""

from __future__ import annotations

import torch

from ..common.checks import shape


def compute_dtypes(*tensors: torch.Tensor | None) -> tuple[torch.dtype, torch.dtype]:
    """(real, complex) dtypes of the state: float64 / complex128 when any input is double
    precision, else float32 / complex64 (bf16 and fp16 inputs are upcast)."""
    wide = any(t is not None and t.dtype in (torch.float64, torch.complex128) for t in tensors)
    return (torch.float64, torch.complex128) if wide else (torch.float32, torch.complex64)


def state_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The dtype a state runs in: complex when any of `tensors` is, wide when any is double."""
    real, cplx = compute_dtypes(*tensors)
    return cplx if any(t is not None and t.is_complex() for t in tensors) else real


def _tensor(name: str, x, like: torch.Tensor | None = None, complex_ok: bool = True) -> None:
    """A tensor of a floating dtype (complex too when `complex_ok`) on `like`'s device."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not (x.is_floating_point() or (complex_ok and x.is_complex())):
        kind = "floating point or complex" if complex_ok else "real floating point"
        raise TypeError(f"{name} must be {kind}; got {x.dtype}")
    if like is not None and x.device != like.device:
        where = f"{name} is on {x.device} but the input is on {like.device}"
        raise ValueError(f"{where}; expected one device")


def _shaped(name: str, x, expected: list[int], like: torch.Tensor, complex_ok=True, what="") -> None:
    """`_tensor` of exactly the shape `expected` (`what` names its dims in the message)."""
    _tensor(name, x, like, complex_ok)
    if shape(x) != expected:
        named = f"{what} = {expected}" if what else str(expected)
        raise ValueError(f"{name} has shape {shape(x)}; expected {named}")


def _input(name: str, u, dims: str) -> tuple[int, ...]:
    """The main input: real floating point with the dims `dims` names ("[B, T, D]")."""
    _tensor(name, u, complex_ok=False)
    rank = dims.count(",") + 1
    if u.dim() != rank:
        raise ValueError(f"{name} must have shape {dims}; got {shape(u)}")
    return tuple(u.shape)


def _sequences(batch: int, cu_seqlens: torch.Tensor | None) -> int:
    """How many initial states a call takes: the batch, or the packed sequences."""
    return batch if cu_seqlens is None else cu_seqlens.numel() - 1


def _initial_state(initial_state, expected: list[int], like: torch.Tensor, what: str) -> None:
    if initial_state is not None:
        _shaped("initial_state", initial_state, expected, like, what=what)


def _skip(D, channels: int, like: torch.Tensor) -> None:
    if D is not None:
        _shaped("D", D, [channels], like, complex_ok=False, what="[channels]")


def check_selective_scan_inputs(
    u, delta, A, B, C, *, D, z, delta_bias, delta_softplus, initial_state, cu_seqlens, **_
) -> None:
    """Validates the arguments of every selective-scan form."""
    batch, T, channels = _input("u", u, "[B, T, D]")
    _shaped("delta", delta, [batch, T, channels], u, complex_ok=False, what="[B, T, D]")
    _tensor("A", A, u)
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A has shape {shape(A)}; expected [D, N] with D = {channels}")
    N = A.shape[1]
    _tensor("B", B, u)
    if B.dim() not in (3, 4) or shape(B)[:2] != [batch, T] or B.shape[-1] != N:
        expected = f"[B, T, N] = {[batch, T, N]} or [B, T, G, N]"
        raise ValueError(f"B has shape {shape(B)}; expected {expected}")
    _shaped("C", C, shape(B), u, what="B's shape")
    groups = 1 if B.dim() == 3 else B.shape[2]
    if groups == 0 or channels % groups:
        raise ValueError(f"B and C have G = {groups} groups; expected a divisor of D = {channels}")
    _skip(D, channels, u)
    if z is not None:
        _shaped("z", z, [batch, T, channels], u, complex_ok=False, what="[B, T, D]")
    if delta_bias is not None:
        _shaped("delta_bias", delta_bias, [channels], u, complex_ok=False, what="[D]")
    if not isinstance(delta_softplus, bool):
        raise TypeError(f"delta_softplus must be True or False; got {delta_softplus!r}")
    _initial_state(initial_state, [_sequences(batch, cu_seqlens), channels, N], u, "[B, D, N]")


def _check_time_invariant(u, A_bar, B_bar, C, D, initial_state, cu_seqlens, dense: bool) -> None:
    batch, _, channels = _input("u", u, "[B, T, H]")
    _tensor("A_bar", A_bar, u)
    square = dense and A_bar.dim() == 3 and A_bar.shape[1] == A_bar.shape[2]
    if A_bar.dim() != (3 if dense else 2) or A_bar.shape[0] != channels or (dense and not square):
        what = "[H, N, N]" if dense else "[H, N]"
        raise ValueError(f"A_bar has shape {shape(A_bar)}; expected {what} with H = {channels}")
    N = A_bar.shape[1]
    _shaped("B_bar", B_bar, [channels, N], u, what="[H, N]")
    _shaped("C", C, [channels, N], u, what="[H, N]")
    _skip(D, channels, u)
    _initial_state(initial_state, [_sequences(batch, cu_seqlens), channels, N], u, "[B, H, N]")


def check_diag_ssm_inputs(u, A_bar, B_bar, C, *, D, initial_state, cu_seqlens, **_) -> None:
    """Validates the arguments of every form of a diagonal time-invariant SSM."""
    _check_time_invariant(u, A_bar, B_bar, C, D, initial_state, cu_seqlens, dense=False)


def check_dense_ssm_inputs(u, A_bar, B_bar, C, *, D, initial_state, cu_seqlens, **_) -> None:
    """Validates the arguments of every form of a dense time-invariant SSM."""
    _check_time_invariant(u, A_bar, B_bar, C, D, initial_state, cu_seqlens, dense=True)


def check_dplr_ssm_inputs(u, Lambda, P, B, C, step, *, D, initial_state, cu_seqlens, **_) -> None:
    """Validates the arguments of every form of S4's diagonal-plus-low-rank SSM."""
    batch, _, channels = _input("u", u, "[B, T, H]")
    _tensor("Lambda", Lambda, u)
    if Lambda.dim() != 2 or Lambda.shape[0] != channels:
        raise ValueError(f"Lambda has shape {shape(Lambda)}; expected [H, N] with H = {channels}")
    N = Lambda.shape[1]
    _tensor("P", P, u)
    if P.dim() != 3 or shape(P)[::2] != [channels, N]:
        raise ValueError(f"P has shape {shape(P)}; expected [H, r, N] with H = {channels}, N = {N}")
    _shaped("B", B, [channels, N], u, what="[H, N]")
    _shaped("C", C, [channels, N], u, what="[H, N]")
    _shaped("step", step, [channels], u, complex_ok=False, what="[H]")
    _skip(D, channels, u)
    _initial_state(initial_state, [_sequences(batch, cu_seqlens), channels, N], u, "[B, H, N]")


def check_linear_scan_inputs(a, b, *, initial_state, cu_seqlens, **_) -> None:
    """Validates the arguments of every form of the first-order linear recurrence."""
    _tensor("b", b)
    if b.dim() < 2:
        raise ValueError(f"b must have shape [B, T, ...]; got {shape(b)}")
    _tensor("a", a, b)
    if a.shape != b.shape:
        raise ValueError(f"a has shape {shape(a)} but b has {shape(b)}; expected equal")
    _initial_state(initial_state, [_sequences(b.shape[0], cu_seqlens), *shape(b)[2:]], b, "[B, ...]")
