"""Benchmark cases of the delta-rule families, the delta rule and DeltaProduct, and their
peers: FLA's pure-PyTorch chunk reference of the gated delta rule (its Triton kernel on
CUDA)."""

from __future__ import annotations

import torch

from ..ops.delta import DELTA_PRODUCT, DELTA_RULE
from ..ops.family import Example, triton_available
from .ops import MissingPeer, OpCase, peer_case, register_op_bench, sdpa_case

B, H, K, V = 1, 4, 64, 64
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
    return OpCase(form, lambda: run(*args, **kwargs)[0], inputs, computes=family.name)


@register_op_bench(
    "delta",
    f"B={B}, H={H}, K=V={K}, unit keys, β in [0, 2], per-head log decay (gated delta rule), from a "
    "zero state. Peer: FLA's naive_chunk_gated_delta_rule (chunks of 64, computed in float32). On "
    "CUDA: B = 32768 / T, H = 16, K = V = 128, the chunk form is the baseline, and the peers are "
    "FLA's Triton chunk_gated_delta_rule and torch SDPA.",
)
def delta_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase | MissingPeer]:
    on_gpu = device.type == "cuda"
    b, h, d = (max(1, GPU_TOKENS // T), GPU_H, GPU_K) if on_gpu else (B, H, K)
    example = DELTA_RULE.example_inputs(
        T, batch=b, case="neg_eigval", dtype=dtype, device=device, heads=h, key_dim=d, value_dim=d
    )
    args, kwargs, inputs = _from_zeros(example)
    forms = ["chunk", "triton"] if on_gpu and triton_available() else ["chunk"]
    cases = [] if on_gpu else [_case(DELTA_RULE, "naive", args, kwargs, inputs)]
    cases += [_case(DELTA_RULE, form, args, kwargs, inputs) for form in forms]
    q, k, v = args
    if on_gpu:
        fla = _fla_case("FLA chunk_gated_delta_rule", "fla.ops.gated_delta_rule:chunk_gated_delta_rule", q, k, v, kwargs)
        return [*cases, fla, sdpa_case(q, k, v)]
    return [*cases, _fla_case(
        "FLA naive_chunk_gated_delta_rule", "fla.ops.gated_delta_rule.naive:naive_chunk_gated_delta_rule", q, k, v, kwargs,
    )]


def _fla_case(form: str, target: str, q, k, v, kwargs: dict) -> OpCase | MissingPeer:
    """FLA's gated delta rule `target` on the same tensors (FLA's layout is recur's)."""
    beta, g = kwargs["beta"], kwargs["g"]
    return peer_case(
        form, target, "fla-core",
        lambda fn: (lambda: fn(q=q, k=k, v=v, g=g, beta=beta)[0], [q, k, v, beta, g]),
        computes=DELTA_RULE.name,
    )


@register_op_bench(
    "delta_product",
    f"B={B}, H={H}, K=V={K}, n_h={NUM_HOUSEHOLDER} Householder steps per token, β in [0, 2], "
    "per-head log decay, from a zero state. Peer: FLA's naive_chunk_gated_delta_rule on the T · n_h "
    "interleaved steps (gate on the first, query on the last: the reduction FLA's "
    "chunk_gated_delta_product_ref makes, with its pure-PyTorch chunk reference in place of the "
    "Triton kernel; float32).",
)
def delta_product_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase | MissingPeer]:
    example = DELTA_PRODUCT.example_inputs(
        T, batch=B, case="neg_eigval", dtype=dtype, device=device, heads=H, key_dim=K, value_dim=V,
        num_householder=NUM_HOUSEHOLDER,
    )
    args, kwargs, inputs = _from_zeros(example)
    cases = [_case(DELTA_PRODUCT, form, args, kwargs, inputs) for form in ("naive", "chunk")]
    return [*cases, _interleaved_peer(*args, beta=kwargs["beta"], g=kwargs["g"])]


def _interleaved_peer(q, k, v, *, beta, g) -> OpCase | MissingPeer:
    """FLA's gated delta rule over the n_h micro-steps of every token laid out in time."""
    B, T, n_h, H, K = k.shape

    def make(fn):
        def run():
            # the query reads after a token's last micro-step; the gate decays at its first
            q_steps = torch.cat([q.new_zeros(B, T, n_h - 1, H, K), q[:, :, None]], dim=2).flatten(1, 2)
            g_steps = torch.cat([g[:, :, None], g.new_zeros(B, T, n_h - 1, H)], dim=2).flatten(1, 2)
            o = fn(q=q_steps, k=k.flatten(1, 2), v=v.flatten(1, 2), g=g_steps, beta=beta.flatten(1, 2))[0]
            return o.unflatten(1, (T, n_h))[:, :, -1]

        return run, [q, k, v, beta, g]

    return peer_case(
        "FLA naive_chunk_gated_delta_rule (interleaved steps)",
        "fla.ops.gated_delta_rule.naive:naive_chunk_gated_delta_rule", "fla-core", make,
        computes=DELTA_PRODUCT.name,
    )
