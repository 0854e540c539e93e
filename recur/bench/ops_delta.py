"""Benchmark cases of the delta-rule families: the delta rule and DeltaProduct."""

from __future__ import annotations

import torch

from ..ops.delta import DELTA_PRODUCT, DELTA_RULE
from ..ops.family import Example, triton_available
from .ops import OpCase, register_op_bench, sdpa_case

B, H, K, V = 2, 4, 64, 64
NUM_HOUSEHOLDER = 2
# on CUDA, the shapes of the published GPU comparisons: 16 heads of 128, B·T = 32768 tokens;
# the chunk form is the baseline there, since the naive loop takes minutes at these sizes
GPU_TOKENS, GPU_H, GPU_K = 32768, 16, 128


def _from_zeros(example: Example) -> tuple[tuple, dict, list[torch.Tensor]]:
    """The example's arguments starting from a zero state, as the published comparisons do,
    and its inputs that take gradients."""
    kwargs = dict(example.kwargs, initial_state=None)
    inputs = [*example.args, *(x for x in kwargs.values() if isinstance(x, torch.Tensor))]
    return example.args, kwargs, inputs


def _case(family, form: str, args: tuple, kwargs: dict, inputs: list[torch.Tensor]) -> OpCase:
    run = family.forms[form]
    return OpCase(form, lambda: run(*args, **kwargs)[0], inputs)


@register_op_bench(
    "delta",
    f"B={B}, H={H}, K=V={K}, unit keys, β in [0, 2], per-head log decay (gated delta rule). "
    "On CUDA: B = 32768 / T, H = 16, K = V = 128, and the chunk form is the baseline.",
)
def delta_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    on_gpu = device.type == "cuda"
    b, h, d = (max(1, GPU_TOKENS // T), GPU_H, GPU_K) if on_gpu else (B, H, K)
    example = DELTA_RULE.example_inputs(
        T, batch=b, case="neg_eigval", dtype=dtype, device=device, heads=h, key_dim=d, value_dim=d
    )
    args, kwargs, inputs = _from_zeros(example)
    forms = ["chunk", "triton"] if on_gpu and triton_available() else ["chunk"]
    cases = [] if on_gpu else [_case(DELTA_RULE, "naive", args, kwargs, inputs)]
    cases += [_case(DELTA_RULE, form, args, kwargs, inputs) for form in forms]
    if on_gpu:
        cases.extend(_cuda_baselines(*args, beta=kwargs["beta"], g=kwargs["g"]))
    return cases


def _cuda_baselines(q, k, v, *, beta, g) -> list[OpCase]:
    """FLA's chunk_gated_delta_rule (when installed) on the same inputs ([B, T, H, K] layout)
    and torch SDPA causal on the same shapes."""
    cases = [sdpa_case(q, k, v)]
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_chunk_gated_delta_rule
    except ImportError:
        return cases
    fla = OpCase(
        "FLA chunk_gated_delta_rule",
        lambda: fla_chunk_gated_delta_rule(q=q, k=k, v=v, g=g, beta=beta)[0],
        [q, k, v, beta, g],
    )
    return [fla, *cases]


@register_op_bench(
    "delta_product",
    f"B={B}, H={H}, K=V={K}, n_h={NUM_HOUSEHOLDER} Householder steps per token, β in [0, 2], "
    "per-head log decay.",
)
def delta_product_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    example = DELTA_PRODUCT.example_inputs(
        T, batch=B, case="neg_eigval", dtype=dtype, device=device, heads=H, key_dim=K, value_dim=V,
        num_householder=NUM_HOUSEHOLDER,
    )
    args, kwargs, inputs = _from_zeros(example)
    return [_case(DELTA_PRODUCT, form, args, kwargs, inputs) for form in ("naive", "chunk")]
