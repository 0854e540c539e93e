"""The delta-rule family: S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ, o_t = scale · S_tᵀ q_t.

Forms: `naive_delta_rule` (the spec), `chunk_delta_rule` (chunkwise WY / UT-transform
PyTorch), `triton_delta_rule` (fused GPU kernels, forward and backward; optional).
`delta_rule(..., impl=...)` dispatches between them. DeltaProduct (n_h
Householder steps per token): `naive_delta_product`, `chunk_delta_product`,
`delta_product(..., impl=...)`.
"""

from __future__ import annotations

import torch

from ..dispatch import dispatch
from .chunk import chunk_delta_rule
from .naive import naive_delta_rule
from .product import PRODUCT_FORMS, chunk_delta_product, delta_product, naive_delta_product


def triton_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (gated) delta rule with fused Triton kernels; same arguments as `naive_delta_rule`."""
    # imported here: `import recur` works without Triton
    from .triton import triton_delta_rule as kernel

    return kernel(
        q, k, v, beta=beta, g=g, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
    )


FORMS = {"naive": naive_delta_rule, "chunk": chunk_delta_rule, "triton": triton_delta_rule}


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (gated) delta rule; `impl` is "auto", "naive", "chunk" or "triton".

    "auto" runs the Triton kernels on CUDA when Triton is installed, else "chunk". See
    `naive_delta_rule` for the arguments.
    """
    form = dispatch("delta", FORMS, impl, q)
    return form(
        q, k, v, beta=beta, g=g, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
    )


__all__ = [
    "FORMS",
    "PRODUCT_FORMS",
    "chunk_delta_product",
    "chunk_delta_rule",
    "delta_product",
    "delta_rule",
    "naive_delta_product",
    "naive_delta_rule",
    "triton_delta_rule",
]
