"""The GLA family: S_t = diag(exp g_t) S_{t-1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t.

`gla(q, k, v, g=..., impl=...)` runs the form `impl` names: "naive" (the spec, a loop over
time), "chunk" (chunkwise PyTorch) or "triton" (fused GPU kernels, optional). Each form is
also a function of its own (`naive_gla`, `chunk_gla`, `triton_gla`) with the same
arguments; `GLA.step(...)` is one decoding step (a fused kernel on CUDA).
"""

from __future__ import annotations

import torch

from ..common.examples import RandomInputs, check_case
from ..family import (
    Example,
    Family,
    Form,
    StateLayout,
    register_family,
    triton_form,
    triton_step_form,
)
from .checks import check_gla_inputs
from .chunk import chunk_gla as _chunk
from .naive import naive_gla as _spec


def example_inputs(
    T: int, *, batch: int = 2, case: str = "per_channel", dtype=torch.float64, device=None, seed: int = 0,
    heads: int = 3, key_dim: int = 16, value_dim: int = 8,
) -> Example:
    """q, k [B, T, H, K], v [B, T, H, V], a log decay of the kind `case` names and a random
    initial state; every floating input requires grad except the signs."""
    draw = RandomInputs(seed, dtype, device)
    B, H, K, V = batch, heads, key_dim, value_dim
    q, k, v = draw.normal(B, T, H, K), draw.normal(B, T, H, K), draw.normal(B, T, H, V)
    gates = {
        "per_head": lambda: draw.log_decay(B, T, H),
        "per_channel": lambda: draw.log_decay(B, T, H, K),
        # about -16 per step: the chunk form merges single-step blocks
        "strong": lambda: draw.log_decay(B, T, H, K, strength=20.0),
        "signed": lambda: draw.log_decay(B, T, H),
        "no_gate": lambda: None,
    }
    check_case(case, gates)
    kwargs = {"g": gates[case](), "initial_state": draw.normal(B, H, K, V)}
    if case == "signed":
        kwargs["decay_sign"] = draw.signs(B, T, H)
    return Example((q, k, v), kwargs)


GLA = register_family(Family(
    name="gla",
    paper="Gated Linear Attention Transformers with Hardware-Efficient Training (Yang et al., arXiv:2312.06635)",
    recurrence="Gated linear attention: S_t = diag(exp g_t) S_{t-1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t",
    spec=_spec,
    forms={
        "chunk": Form(_chunk, packed=True, summary="chunkwise-parallel PyTorch"),
        "triton": triton_form("recur.ops.gla.triton:triton_gla"),
    },
    steps={"triton": triton_step_form("recur.ops.gla.triton:triton_gla_recurrent")},
    check=check_gla_inputs,
    state=StateLayout({"S": "[B, H, K, V]"}),
    time_inputs=("q", "k", "v", "g", "decay_sign"),
    log_gates=("g",),
    example_inputs=example_inputs,
    cases=("per_head", "per_channel", "strong", "signed", "no_gate"),
))

gla, naive_gla, chunk_gla, triton_gla = GLA.functions("naive", "chunk", "triton")

__all__ = ["GLA", "chunk_gla", "gla", "naive_gla", "triton_gla"]
