"""Benchmark cases of the memory family."""

from __future__ import annotations

import torch

from ..ops.memory import MEMORY, chunk_memory, naive_memory
from .ops import OpCase, register_op_bench

B, H, K, V = 2, 4, 64, 64
# the MLP memory's hidden width, and the mini-batch both forms take their gradients over
HIDDEN, MINIBATCH = 128, 16
# ATLAS's sizes: its memory reads degree-2 features (twice the key width), and its naive loop
# keeps every token's weights and Newton–Schulz iterates for backward (8 GiB at T = 512 with
# the other memories' sizes), so it runs narrower and only up to T = 2048
ATLAS_K, ATLAS_HIDDEN, ATLAS_MAX_T = 16, 64, 2048


@register_op_bench(
    "memory",
    f"B={B}, H={H}, K=V={K}, the family's example inputs with mini-batches of b={MINIBATCH} (both forms "
    f"compute the same model): a linear memory with momentum and decay (Titans' linear memory), and "
    f"a 2-layer residual MLP memory (hidden {HIDDEN}) with momentum and decay (Titans), and ATLAS's "
    f"2-layer MLP memory (K=V={ATLAS_K}, hidden {ATLAS_HIDDEN}, T <= {ATLAS_MAX_T}) on degree-2 features "
    "with a window of 4 tokens, momentum, decay and 5 Newton–Schulz steps. Each memory's rows take "
    "their ratios against its own naive loop.",
)
def memory_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    sizes = {"batch": B, "heads": H, "key_dim": K, "value_dim": V, "dtype": dtype, "device": device}
    linear = MEMORY.example_inputs(T, case="linear_momentum", minibatch=MINIBATCH, phase=0, **sizes)
    mlp = MEMORY.example_inputs(T, case="mlp", hidden=HIDDEN, minibatch=MINIBATCH, phase=0, **sizes)
    narrow = {**sizes, "key_dim": ATLAS_K, "value_dim": ATLAS_K}
    atlas = MEMORY.example_inputs(T, case="atlas", hidden=ATLAS_HIDDEN, window=4, ns_steps=5, minibatch=MINIBATCH, phase=0, **narrow)

    def case(form: str, fn, example, computes: str, baseline: bool = False) -> OpCase:
        run = lambda: fn(*example.args, **example.kwargs)[0]  # noqa: E731
        return OpCase(form, run, list(example.leaves().values()), computes=computes, baseline=baseline)

    return [
        case("naive (linear)", naive_memory, linear, "linear memory"),
        case("chunk (linear)", chunk_memory, linear, "linear memory"),
        case("naive (2-layer MLP)", naive_memory, mlp, "2-layer MLP memory", baseline=True),
        case("chunk (2-layer MLP)", chunk_memory, mlp, "2-layer MLP memory"),
    ] + ([
        case("naive (ATLAS)", naive_memory, atlas, "ATLAS memory", baseline=True),
        case("chunk (ATLAS)", chunk_memory, atlas, "ATLAS memory"),
    ] if T <= ATLAS_MAX_T else [])
