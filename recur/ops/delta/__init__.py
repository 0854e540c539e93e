"""The delta-rule families: the delta rule, S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,
o_t = scale · S_tᵀ q_t, and DeltaProduct, n_h such steps per token.

`delta_rule(q, k, v, beta=..., g=..., impl=...)` runs the form `impl` names: "naive" (the
spec, a loop over time), "chunk" (chunkwise WY / UT-transform PyTorch) or "triton" (fused
GPU kernels, forward and backward; optional). Each form is also a function of its own
(`naive_delta_rule`, `chunk_delta_rule`, `triton_delta_rule`) with the same arguments;
`DELTA_RULE.step(...)` is one decoding step (a fused kernel on CUDA). DeltaProduct (n_h
Householder steps per token) is the family `delta_product`: `naive_delta_product`,
`chunk_delta_product`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
from .checks import check_delta_product_inputs, check_delta_rule_inputs
from .chunk import chunk_delta_rule as _chunk
from .naive import naive_delta_rule as _spec
from .product import chunk_delta_product as _chunk_product
from .product import naive_delta_product as _product_spec

# the largest write strength of each case: β < 1 keeps the eigenvalue along k in [0, 1];
# β < 2 lets it reach −1 (negative eigenvalues)
BETA_MAX = {"ungated": 1.0, "gated": 1.0, "strong": 1.0, "neg_eigval": 2.0}
# log decay per head of each case, as a multiple of logsigmoid(normal) (None: no gate);
# 20 makes about -16 per step
GATE_STRENGTH = {"ungated": None, "gated": 1.0, "strong": 20.0, "neg_eigval": 1.0}


def _unit(draw: RandomInputs, *shape: int) -> torch.Tensor:
    """Unit vectors along the last axis, as the layers make keys and queries: with ||k|| = 1
    and β in [0, 2] every eigenvalue of the transition lies in [−1, 1]."""
    return F.normalize(draw.normal(*shape, grad=False), dim=-1).requires_grad_()


def _write_strength(draw: RandomInputs, *shape: int, beta_max: float) -> torch.Tensor:
    """β = beta_max · σ(normal), as the layers make it."""
    return (beta_max * draw.normal(*shape, grad=False).sigmoid()).requires_grad_()


def _example(T, batch, case, dtype, device, seed, heads, key_dim, value_dim, micro_steps) -> Example:
    """Both families' inputs: k, v and β carry the axes `micro_steps` ((): the delta rule,
    (n_h,): DeltaProduct) after T."""
    check_case(case, BETA_MAX)
    draw = RandomInputs(seed, dtype, device)
    B, H, K, V, n = batch, heads, key_dim, value_dim, micro_steps
    q, k, v = _unit(draw, B, T, H, K), _unit(draw, B, T, *n, H, K), draw.normal(B, T, *n, H, V)
    strength = GATE_STRENGTH[case]
    kwargs = {
        "beta": _write_strength(draw, B, T, *n, H, beta_max=BETA_MAX[case]),
        "g": None if strength is None else draw.log_decay(B, T, H, strength=strength),
        "initial_state": draw.normal(B, H, K, V),
    }
    return Example((q, k, v), kwargs)


def example_inputs(
    T: int, *, batch: int = 2, case: str = "gated", dtype=torch.float64, device=None, seed: int = 0,
    heads: int = 3, key_dim: int = 16, value_dim: int = 8,
) -> Example:
    """Unit q, k [B, T, H, K], v [B, T, H, V], β [B, T, H] and a per-head log decay of the kind
    `case` names, and a random initial state; every input requires grad."""
    return _example(T, batch, case, dtype, device, seed, heads, key_dim, value_dim, ())


def product_example_inputs(
    T: int, *, batch: int = 2, case: str = "gated", dtype=torch.float64, device=None, seed: int = 0,
    heads: int = 3, key_dim: int = 16, value_dim: int = 8, num_householder: int = 2,
) -> Example:
    """Unit q [B, T, H, K] and k [B, T, n_h, H, K], v [B, T, n_h, H, V], β [B, T, n_h, H], a
    per-head log decay of the kind `case` names and a random initial state; every input
    requires grad."""
    return _example(T, batch, case, dtype, device, seed, heads, key_dim, value_dim, (num_householder,))


DELTA_RULE = register_family(Family(
    name="delta_rule",
    paper=(
        "Parallelizing Linear Transformers with the Delta Rule over Sequence Length (Yang et al., "
        "arXiv:2406.06484); Gated Delta Networks (Yang, Kautz, Hatamizadeh, arXiv:2412.06464)"
    ),
    recurrence=(
        "The (gated) delta rule: S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ, "
        "o_t = scale · S_tᵀ q_t"
    ),
    spec=_spec,
    forms={
        "chunk": Form(_chunk, packed=True, summary="chunkwise WY / UT-transform PyTorch"),
        "triton": triton_form("recur.ops.delta.triton:triton_delta_rule"),
    },
    steps={"triton": triton_step_form("recur.ops.delta.triton:triton_delta_rule_recurrent")},
    check=check_delta_rule_inputs,
    state=StateLayout({"S": "[B, H, K, V]"}),
    time_inputs=("q", "k", "v", "beta", "g"),
    log_gates=("g",),
    example_inputs=example_inputs,
    cases=("ungated", "gated", "strong", "neg_eigval"),
))

DELTA_PRODUCT = register_family(Family(
    name="delta_product",
    paper=(
        "DeltaProduct: Improving State-Tracking in Linear RNNs via Householder Products "
        "(Siems et al., arXiv:2502.10297)"
    ),
    recurrence=(
        "DeltaProduct: S_t = α_t Π_{j=n_h..1} (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S_{t-1} "
        "+ (the n_h writes), o_t = scale · S_tᵀ q_t"
    ),
    spec=_product_spec,
    forms={
        "chunk": Form(
            _chunk_product, packed=True,
            summary="the delta rule's chunk form over the n_h · T micro-steps",
        ),
    },
    check=check_delta_product_inputs,
    # the delta rule's state and time inputs: k, v and beta carry the micro-step axis after T
    state=DELTA_RULE.state,
    time_inputs=DELTA_RULE.time_inputs,
    log_gates=DELTA_RULE.log_gates,
    example_inputs=product_example_inputs,
    cases=("ungated", "gated", "neg_eigval"),
))

delta_rule, naive_delta_rule, chunk_delta_rule, triton_delta_rule = DELTA_RULE.functions("naive", "chunk", "triton")
delta_product, naive_delta_product, chunk_delta_product = DELTA_PRODUCT.functions("naive", "chunk")

__all__ = [
    "DELTA_PRODUCT",
    "DELTA_RULE",
    "chunk_delta_product",
    "chunk_delta_rule",
    "delta_product",
    "delta_rule",
    "naive_delta_product",
    "naive_delta_rule",
    "triton_delta_rule",
]
