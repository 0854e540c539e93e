"""DeltaProduct: what is specific to it. Every form against the spec, packed batches, state
carry and argument names are tested for every family in test_families.py."""

from __future__ import annotations

import pytest
import torch

from recur.ops.delta import (
    DELTA_PRODUCT,
    DELTA_RULE,
    chunk_delta_product,
    naive_delta_product,
    naive_delta_rule,
)
from tests.helpers import assert_close, compare_results, family_results


def make_inputs(T, num_householder=2, case="neg_eigval", dtype=torch.float64, batch=2):
    return DELTA_PRODUCT.example_inputs(
        T, case=case, dtype=dtype, batch=batch, num_householder=num_householder
    )


def check(example, tol=1e-10, label=""):
    compare_results(
        family_results(DELTA_PRODUCT, "chunk", example),
        family_results(DELTA_PRODUCT, "naive", example),
        tol,
        label,
    )


@pytest.mark.parametrize("n_h", [1, 3])
@pytest.mark.parametrize("T", [63, 64, 65])
def test_chunk_matches_naive_across_chunk_boundaries(T, n_h):
    """The T · n_h micro-steps fall on the delta rule's chunks of 64 at every offset."""
    check(make_inputs(T, n_h), label=f"T={T} n_h={n_h}")


def test_chunk_matches_naive_on_a_long_sequence():
    # 2000 micro-steps: one sequence keeps the naive loop short
    check(make_inputs(1000, 2, batch=1), label="T=1000")


@pytest.mark.parametrize("n_h", [1, 3])
def test_product_is_the_delta_rule_over_micro_steps(n_h):
    """n_h Householder steps per token are the delta rule over n_h · T steps that decay only
    on each token's first step and are read on its last."""
    T = 40
    example = DELTA_RULE.example_inputs(T * n_h, case="neg_eigval")
    q, k, v = (x.detach() for x in example.args)
    beta, g, h0 = (example.kwargs[name].detach() for name in ("beta", "g", "initial_state"))
    first_step = torch.arange(T * n_h) % n_h == 0
    g = torch.where(first_step[None, :, None], g, torch.zeros_like(g))
    o_rule, S_rule = naive_delta_rule(
        q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True
    )
    tokens = lambda x: x.unflatten(1, (T, n_h))  # noqa: E731
    o, S = naive_delta_product(
        q[:, n_h - 1 :: n_h],
        tokens(k),
        tokens(v),
        beta=tokens(beta),
        g=g[:, ::n_h],
        initial_state=h0,
        output_final_state=True,
    )
    assert_close("o", o, o_rule[:, n_h - 1 :: n_h], 1e-12)
    assert_close("state", S, S_rule, 1e-12)


def test_two_reflections_make_a_rotation():
    """Two reflections (β = 2) compose to a rotation: with v = 0 and no decay the state's
    norm is kept, which one step with β < 2 cannot do."""
    example = make_inputs(40, 2, case="ungated", batch=1)
    q, k, v = (x.detach() for x in example.args)
    h0 = example.kwargs["initial_state"].detach()
    beta = torch.full_like(example.kwargs["beta"], 2.0)
    _, S = naive_delta_product(
        q, k, torch.zeros_like(v), beta=beta, initial_state=h0, output_final_state=True
    )
    assert_close("norm kept", S.norm(dim=(-2, -1)), h0.norm(dim=(-2, -1)), 1e-12)


def test_float32_matches_float64_naive():
    expected = family_results(DELTA_PRODUCT, "naive", make_inputs(200))
    actual = family_results(DELTA_PRODUCT, "chunk", make_inputs(200, dtype=torch.float32))
    compare_results(actual, expected, 1e-5, "float32")


def test_householder_axes_must_agree():
    """k, v and β carry the n_h axis at dim 2, the same length for all three."""
    example = make_inputs(8, 2)
    q, k, v = example.args
    beta = example.kwargs["beta"]
    with pytest.raises(ValueError, match=r"k must have shape \[B, T, n_h, H, K\]"):
        chunk_delta_product(q, k[:, :, 0], v, beta=beta)
    with pytest.raises(ValueError, match="beta has shape"):
        chunk_delta_product(q, k, v, beta=beta[:, :, :1])
    with pytest.raises(ValueError, match="v has shape"):
        chunk_delta_product(q, k, v[:, :, :1], beta=beta)
