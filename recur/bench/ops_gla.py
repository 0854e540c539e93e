"""Benchmark cases of the GLA family, and its peers: FLA's pure-PyTorch references (its
Triton chunk_gla on CUDA)."""

from __future__ import annotations

import torch

from ..ops.family import triton_available
from ..ops.gla import GLA, chunk_gla, naive_gla
from .ops import MissingPeer, OpCase, peer_case, register_op_bench, sdpa_case

B, H, K, V = 1, 4, 64, 64
# on CUDA, the shapes of the published GPU comparisons: 16 heads of 128, B·T = 32768 tokens;
# the chunk form is the baseline there, since the naive loop takes minutes at these sizes
GPU_TOKENS, GPU_H, GPU_K = 32768, 16, 128
# the GLA layer's per-channel gates are logsigmoid(x) / 16; the example's are logsigmoid(x)
LAYER_GATE_DIVISOR = 16
PER_CHANNEL, PER_HEAD = "per-channel gate", "per-head gate"


@register_op_bench(
    "gla",
    f"B={B}, H={H}, K=V={K}, the family's example inputs with their random initial state. Per-channel "
    "log gates as the GLA layer makes them, logsigmoid(x)/16 (chunk takes one matrix product per "
    "chunk), and strong ones, logsigmoid(x) (about -0.8 per step: chunk factorizes blocks of 8 "
    "steps and merges them up to the chunk); per-head gates logsigmoid(x). The naive loop costs the same for every gate, so all rows "
    "share its baseline. Peers: FLA's naive_recurrent_gla (per-channel gates; FLA has no chunkwise "
    "PyTorch form for them, only a loop over steps, and its loop costs the same for any gate, so the "
    "strong-gate row is compared with it too) and naive_chunk_simple_gla (per-head gates, chunks of "
    "64); both compute in float32. On CUDA: B = 32768 / T, H = 16, K = V = 128, the per-channel chunk "
    "form is the baseline, every row starts from a zero state, and the peers are FLA's Triton chunk_gla and torch SDPA.",
)
def gla_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase | MissingPeer]:
    on_gpu = device.type == "cuda"
    b, h, d = (max(1, GPU_TOKENS // T), GPU_H, GPU_K) if on_gpu else (B, H, K)
    sizes = {"batch": b, "dtype": dtype, "device": device, "heads": h, "key_dim": d, "value_dim": d}
    channel, head = (GLA.example_inputs(T, case=case, **sizes) for case in ("per_channel", "per_head"))
    q, k, v = channel.args
    # on CUDA from a zero state, as the published GPU comparisons run
    S0 = None if on_gpu else channel.kwargs["initial_state"]
    g_strong = channel.kwargs["g"]
    g_vector = (g_strong.detach() / LAYER_GATE_DIVISOR).requires_grad_()
    g_scalar = head.kwargs["g"]

    def case(form: str, fn, g: torch.Tensor, computes: str) -> OpCase:
        inputs = [x for x in (q, k, v, g, S0) if x is not None]
        return OpCase(form, lambda: fn(q, k, v, g=g, initial_state=S0)[0], inputs, computes=computes)

    cases = [] if on_gpu else [case("naive (per-channel gate)", naive_gla, g_vector, PER_CHANNEL)]
    cases += [
        case("chunk (per-channel gate)", chunk_gla, g_vector, PER_CHANNEL),
        case("chunk (strong per-channel gate)", chunk_gla, g_strong, PER_CHANNEL),
        case("chunk (per-head gate)", chunk_gla, g_scalar, PER_HEAD),
    ]
    if on_gpu:
        if triton_available():
            triton_gla = GLA.forms["triton"]
            cases += [
                case("triton (per-channel gate)", triton_gla, g_vector, PER_CHANNEL),
                case("triton (strong per-channel gate)", triton_gla, g_strong, PER_CHANNEL),
                case("triton (per-head gate)", triton_gla, g_scalar, PER_HEAD),
            ]
        return [*cases, *_cuda_peers(q, k, v, g_vector)]
    return [*cases, *cpu_peers(q, k, v, g_vector, g_scalar, S0)]


def cpu_peers(q, k, v, g_vector, g_scalar, S0) -> list[OpCase | MissingPeer]:
    """FLA's pure-PyTorch GLA references on the same tensors (FLA's layout is recur's)."""
    inputs = [q, k, v, S0]
    return [
        peer_case(
            "FLA naive_recurrent_gla (per-channel gate; a loop over steps)",
            "fla.ops.gla.naive:naive_recurrent_gla", "fla-core",
            lambda fn: (lambda: fn(q, k, v, g_vector, initial_state=S0)[0], [*inputs, g_vector]),
            computes=PER_CHANNEL, loop=True,
        ),
        peer_case(
            "FLA naive_chunk_simple_gla (per-head gate)",
            "fla.ops.simple_gla.naive:naive_chunk_simple_gla", "fla-core",
            # it computes in float32 and takes the state as it comes
            lambda fn: (lambda: fn(q, k, v, g_scalar, initial_state=S0.float())[0], [*inputs, g_scalar]),
            computes=PER_HEAD,
        ),
    ]


def _cuda_peers(q, k, v, g_vector) -> list[OpCase | MissingPeer]:
    """FLA's Triton chunk_gla (when installed) and torch SDPA causal on the same shapes."""
    fla = peer_case(
        "FLA chunk_gla (per-channel gate)", "fla.ops.gla:chunk_gla", "fla-core",
        lambda fn: (lambda: fn(q, k, v, g_vector)[0], [q, k, v, g_vector]),
        computes=PER_CHANNEL,
    )
    return [fla, sdpa_case(q, k, v)]
