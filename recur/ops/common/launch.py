"""Python-side pieces shared by the families' Triton launchers (imported only where Triton is)."""

from __future__ import annotations

import torch
import triton

from .varlen import ChunkLayout

# The widest heads the kernels take: their tiles span a whole head width (compiled and
# checked up to this width).
MAX_HEAD_DIM = 256


def pow2(n: int, least: int = 16) -> int:
    """The power of two at or above n, and at least `least` (tl.dot takes 16 rows and columns
    at the least)."""
    return max(least, triton.next_power_of_2(n))


def padded_length(T: int, chunk: int) -> int:
    """T rounded up to whole chunks, one chunk at least: the rows of the chunk buffers."""
    return max(1, triton.cdiv(T, chunk)) * chunk


def precision(dtype: torch.dtype, float32: str) -> str:
    """The input precision of tl.dot for inputs of `dtype`: `float32` ("ieee" or "tf32x3",
    the family's choice) for float32 inputs (float64 ones are rounded to float32 on the way
    in); TF32 for 16-bit inputs, finer than the inputs where a product takes float32
    operands (16-bit operands multiply in their own dtype whatever the precision)."""
    return float32 if dtype in (torch.float32, torch.float64) else "tf32"


def check_head_widths(q: torch.Tensor, v: torch.Tensor, kernels: str) -> None:
    """K, V <= MAX_HEAD_DIM, or an error naming the widths and the way out."""
    K, V = q.shape[-1], v.shape[-1]
    if K > MAX_HEAD_DIM or V > MAX_HEAD_DIM:
        raise ValueError(
            f"the Triton {kernels} kernels take head widths up to {MAX_HEAD_DIM}; "
            f"got K = {K}, V = {V} (use impl='chunk')"
        )


def refuse_gradients(form: str, training_form: str, *inputs: torch.Tensor | None) -> None:
    """A decoding form computes no gradients: an error if any input asks for them."""
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs):
        raise ValueError(
            f"{form} computes no gradients; call it under torch.no_grad() for decoding, "
            f"or use {training_form} for training"
        )


def decoding_buffers(q: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None):
    """The output [B, T, H, V] in v's dtype and the final states [N, H, K, V] in float32 of
    a decoding kernel (N = B, or the packed sequences), and the final states' dtype for the
    caller: float64 for float64 inputs."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    n = B if cu_seqlens is None else cu_seqlens.numel() - 1
    o = torch.empty(B, T, H, V, device=q.device, dtype=v.dtype)
    final = torch.empty(n, H, K, V, device=q.device, dtype=torch.float32)
    final_dtype = torch.float64 if torch.float64 in (q.dtype, v.dtype) else torch.float32
    return o, final, final_dtype


def on_chunks(cu_seqlens: torch.Tensor | None, chunk: int, *tensors: torch.Tensor | None):
    """A packed batch (cu_seqlens) as one row in which every sequence starts on a chunk
    boundary, so that no chunk spans two sequences: (its ChunkLayout, the tensors laid out
    on it, None staying None). Without cu_seqlens: (None, the tensors as they are)."""
    if cu_seqlens is None:
        return None, tensors
    layout = ChunkLayout(cu_seqlens, chunk)
    return layout, tuple(None if x is None else layout.pack(x) for x in tensors)


def from_chunks(
    o: torch.Tensor, final: torch.Tensor | None, layout: ChunkLayout | None, dtype: torch.dtype, wide: bool
):
    """The kernels' output back on the caller's rows (from `layout`, when there is one) in
    `dtype`, and the final state (None when not asked for) in float64 where the inputs were
    (`wide`: the kernels compute in float32)."""
    if layout is not None:
        o = layout.unpack(o)
    if wide and final is not None:
        final = final.double()
    return o.to(dtype), final
