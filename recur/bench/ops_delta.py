"""Benchmark cases of the delta-rule family: the delta rule and DeltaProduct."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.delta import chunk_delta_product, chunk_delta_rule, naive_delta_product, naive_delta_rule
from .ops import OpCase, register_op_bench, sdpa_case

B, H, K, V = 2, 4, 64, 64
NUM_HOUSEHOLDER = 2
# on CUDA, the shapes of the published GPU comparisons: 16 heads of 128, B·T = 32768 tokens;
# the chunk form is the baseline there, since the naive loop takes minutes at these sizes
GPU_TOKENS, GPU_H, GPU_K = 32768, 16, 128


def _tensor(gen, device, dtype, *shape, transform=None):
    x = torch.randn(*shape, generator=gen)
    x = transform(x) if transform is not None else x
    return x.to(device=device, dtype=dtype).requires_grad_()


@register_op_bench(
    "delta",
    f"B={B}, H={H}, K=V={K}, unit keys, β in [0, 2], per-head log decay (gated delta rule). "
    "On CUDA: B = 32768 / T, H = 16, K = V = 128, and the chunk form is the baseline.",
)
def delta_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    on_gpu = device.type == "cuda"
    b, h, d = (max(1, GPU_TOKENS // T), GPU_H, GPU_K) if on_gpu else (B, H, K)
    q = _tensor(gen, device, dtype, b, T, h, d)
    k = _tensor(gen, device, dtype, b, T, h, d, transform=lambda x: F.normalize(x, dim=-1))
    v = _tensor(gen, device, dtype, b, T, h, d)
    beta = _tensor(gen, device, dtype, b, T, h, transform=lambda x: 2 * torch.sigmoid(x))
    g = _tensor(gen, device, dtype, b, T, h, transform=F.logsigmoid)
    inputs = [q, k, v, beta, g]
    cases = [] if on_gpu else [OpCase("naive", lambda: naive_delta_rule(q, k, v, beta=beta, g=g)[0], inputs)]
    cases.append(OpCase("chunk", lambda: chunk_delta_rule(q, k, v, beta=beta, g=g)[0], inputs))
    if on_gpu:
        from ..ops.dispatch import triton_available

        if triton_available():
            from ..ops.delta import triton_delta_rule

            cases.append(OpCase("triton", lambda: triton_delta_rule(q, k, v, beta=beta, g=g)[0], inputs))
        cases.extend(_cuda_baselines(q, k, v, beta, g))
    return cases


def _cuda_baselines(q, k, v, beta, g) -> list[OpCase]:
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
    f"B={B}, H={H}, K=V={K}, n_h={NUM_HOUSEHOLDER} Householder steps per token, β in [0, 2], per-head log decay.",
)
def delta_product_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    n = NUM_HOUSEHOLDER
    q = _tensor(gen, device, dtype, B, T, H, K)
    k = _tensor(gen, device, dtype, B, T, n, H, K, transform=lambda x: F.normalize(x, dim=-1))
    v = _tensor(gen, device, dtype, B, T, n, H, V)
    beta = _tensor(gen, device, dtype, B, T, n, H, transform=lambda x: 2 * torch.sigmoid(x))
    g = _tensor(gen, device, dtype, B, T, H, transform=F.logsigmoid)
    inputs = [q, k, v, beta, g]
    return [
        OpCase("naive", lambda: naive_delta_product(q, k, v, beta=beta, g=g)[0], inputs),
        OpCase("chunk", lambda: chunk_delta_product(q, k, v, beta=beta, g=g)[0], inputs),
    ]
