"""The GLA family: S_t = diag(exp g_t) S_{t-1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t.

Forms: `naive_gla` (the spec), `chunk_gla` (chunkwise PyTorch), `triton_gla` (fused GPU
kernels, optional). `gla(..., impl=...)` dispatches between them.
"""

from __future__ import annotations

import torch

from ..dispatch import dispatch
from .chunk import chunk_gla
from .naive import naive_gla


def triton_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    g: torch.Tensor | None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    decay_sign: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated linear attention with fused Triton kernels; same arguments as `naive_gla`."""
    from .triton import triton_gla as kernel

    return kernel(
        q, k, v, g=g, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens, decay_sign=decay_sign,
    )


FORMS = {"naive": naive_gla, "chunk": chunk_gla, "triton": triton_gla}


def gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    g: torch.Tensor | None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    decay_sign: torch.Tensor | None = None,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated linear attention; `impl` is "auto", "naive", "chunk" or "triton".

    "auto" runs the Triton kernels on CUDA when Triton is installed, else "chunk". See
    `naive_gla` for the arguments.
    """
    form = dispatch("gla", FORMS, impl, q)
    return form(
        q, k, v, g=g, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens, decay_sign=decay_sign,
    )


__all__ = ["FORMS", "chunk_gla", "gla", "naive_gla", "triton_gla"]
