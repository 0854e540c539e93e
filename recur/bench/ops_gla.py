"""Benchmark cases of the GLA family."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.gla import chunk_gla, naive_gla
from .ops import OpCase, register_op_bench, sdpa_case

B, H, K, V = 2, 4, 64, 64
# on CUDA, the shapes of the published GPU comparisons: 16 heads of 128, B·T = 32768 tokens;
# the chunk form is the baseline there, since the naive loop takes minutes at these sizes
GPU_TOKENS, GPU_H, GPU_K = 32768, 16, 128


@register_op_bench(
    "gla",
    f"B={B}, H={H}, K=V={K}. Per-channel log gates as the GLA layer makes them, logsigmoid(x)/16 "
    "(chunk takes one matrix product per chunk), and strong ones, logsigmoid(x) (about -0.8 per "
    "step: chunk takes the exact pairwise path); per-head gates logsigmoid(x). The naive loop costs "
    "the same for every gate, so all rows share its baseline. On CUDA: B = 32768 / T, H = 16, "
    "K = V = 128, and the per-channel chunk form is the baseline.",
)
def gla_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    gen = torch.Generator(device="cpu").manual_seed(0)

    def tensor(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_()

    on_gpu = device.type == "cuda"
    b, h, d = (max(1, GPU_TOKENS // T), GPU_H, GPU_K) if on_gpu else (B, H, K)
    q, k, v = tensor(b, T, h, d), tensor(b, T, h, d), tensor(b, T, h, d)
    logits = torch.randn(b, T, h, d, generator=gen)
    g_vector = (F.logsigmoid(logits) / 16).to(device, dtype).requires_grad_()
    g_strong = F.logsigmoid(logits).to(device, dtype).requires_grad_()
    g_scalar = F.logsigmoid(torch.randn(b, T, h, generator=gen)).to(device, dtype).requires_grad_()
    cases = [] if on_gpu else [
        OpCase("naive (per-channel gate)", lambda: naive_gla(q, k, v, g=g_vector)[0], [q, k, v, g_vector]),
    ]
    cases += [
        OpCase("chunk (per-channel gate)", lambda: chunk_gla(q, k, v, g=g_vector)[0], [q, k, v, g_vector]),
        OpCase("chunk (strong per-channel gate)", lambda: chunk_gla(q, k, v, g=g_strong)[0], [q, k, v, g_strong]),
        OpCase("chunk (per-head gate)", lambda: chunk_gla(q, k, v, g=g_scalar)[0], [q, k, v, g_scalar]),
    ]
    if device.type == "cuda":
        from ..ops.dispatch import triton_available

        if triton_available():
            from ..ops.gla import triton_gla

            cases.append(OpCase("triton (per-channel gate)", lambda: triton_gla(q, k, v, g=g_vector)[0], [q, k, v, g_vector]))
            cases.append(OpCase("triton (strong per-channel gate)", lambda: triton_gla(q, k, v, g=g_strong)[0], [q, k, v, g_strong]))
            cases.append(OpCase("triton (per-head gate)", lambda: triton_gla(q, k, v, g=g_scalar)[0], [q, k, v, g_scalar]))
        cases.extend(_cuda_baselines(q, k, v, g_vector))
    return cases


def _cuda_baselines(q, k, v, g_vector) -> list[OpCase]:
    """FLA's chunk_gla (when installed) and torch SDPA causal on the same shapes."""
    cases = []
    try:
        from fla.ops.gla import chunk_gla as fla_chunk_gla
    except ImportError:
        fla_chunk_gla = None
    if fla_chunk_gla is not None:
        cases.append(OpCase("FLA chunk_gla (per-channel gate)", lambda: fla_chunk_gla(q, k, v, g_vector)[0], [q, k, v, g_vector]))
    cases.append(sdpa_case(q, k, v))
    return cases
