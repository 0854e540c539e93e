"""DeltaProduct: the chunkwise form against the float64 naive loop, forward and gradients."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from recur.ops.delta import (
    PRODUCT_FORMS,
    chunk_delta_product,
    delta_product,
    naive_delta_product,
    naive_delta_rule,
)
from tests.helpers import assert_close, grads, weighted_sum

B, H, K, V = 2, 3, 16, 8


def make_inputs(T, n_h=2, gated=True, dtype=torch.float64, B=B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    k = F.normalize(torch.randn(B, T, n_h, H, K, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, T, n_h, H, V, generator=gen, dtype=dtype)
    beta = torch.rand(B, T, n_h, H, generator=gen, dtype=dtype) * 2
    g = F.logsigmoid(torch.randn(B, T, H, generator=gen, dtype=dtype)) if gated else None
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=dtype)
    return q, k, v, beta, g, h0


def run(form, q, k, v, beta, g, h0, cu_seqlens=None):
    leaves = [x.detach().clone().requires_grad_() if x is not None else None for x in (q, k, v, beta, g, h0)]
    q, k, v, beta, g, h0 = leaves
    o, ht = form(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True, cu_seqlens=cu_seqlens)
    return [o, ht, *grads(weighted_sum(o, ht), leaves)]


NAMES = ["o", "final_state", "dq", "dk", "dv", "dbeta", "dg", "dh0"]


def compare(actual, expected, tol, label):
    for name, a, e in zip(NAMES, actual, expected, strict=True):
        if e is None:
            assert a is None, f"{label} {name}: expected no gradient"
            continue
        assert_close(f"{label} {name}", a, e, tol)


CASES = [(T, n_h) for T in (1, 63, 64, 65, 100) for n_h in (1, 2, 3)] + [(1000, 2)]


@pytest.mark.parametrize("T,n_h", CASES)
def test_chunk_matches_naive_float64(T, n_h):
    # the long case runs 2000 micro-steps: one sequence keeps its naive loop short
    inputs = make_inputs(T, n_h, B=1 if T > 100 else B)
    compare(run(chunk_delta_product, *inputs), run(naive_delta_product, *inputs), 1e-10, f"T={T} n_h={n_h}")


def test_ungated():
    inputs = make_inputs(70, 2, gated=False)
    compare(run(chunk_delta_product, *inputs), run(naive_delta_product, *inputs), 1e-10, "ungated")


def test_one_householder_step_is_the_delta_rule():
    q, k, v, beta, g, h0 = make_inputs(50, 1)
    o, S = naive_delta_product(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    o_ref, S_ref = naive_delta_rule(q, k[:, :, 0], v[:, :, 0], beta=beta[:, :, 0], g=g, initial_state=h0, output_final_state=True)
    assert_close("o", o, o_ref, 1e-14)
    assert_close("state", S, S_ref, 1e-14)


def test_two_reflections_make_a_rotation():
    """Two reflections (β = 2) compose to a rotation: with v = 0 the state's norm is kept
    and its determinant-like orientation is preserved, which one step cannot do."""
    q, k, v, beta, _, h0 = make_inputs(40, 2, B=1)
    _, S = naive_delta_product(q, k, torch.zeros_like(v), beta=torch.full_like(beta, 2.0), initial_state=h0, output_final_state=True)
    assert_close("norm kept", S.norm(dim=(-2, -1)), h0.norm(dim=(-2, -1)), 1e-12)


@pytest.mark.parametrize("form", [naive_delta_product, chunk_delta_product], ids=["naive", "chunk"])
def test_packed_equals_separate(form):
    lengths = [5, 0, 40, 1, 70]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    q, k, v, beta, g, _ = make_inputs(sum(lengths), 2, B=1)
    h0 = torch.randn(len(lengths), H, K, V, dtype=torch.float64)
    packed = run(form, q, k, v, beta, g, h0, cu_seqlens=cu)
    outs, finals = [], []
    for n in range(len(lengths)):
        s, e = int(cu[n]), int(cu[n + 1])
        o, ht = naive_delta_product(
            q[:, s:e], k[:, s:e], v[:, s:e], beta=beta[:, s:e], g=g[:, s:e],
            initial_state=h0[n : n + 1], output_final_state=True,
        )
        outs.append(o)
        finals.append(ht)
    assert_close("packed o", packed[0], torch.cat(outs, 1), 1e-12)
    assert_close("packed final", packed[1], torch.cat(finals), 1e-12)
    if form is chunk_delta_product:
        compare(packed, run(naive_delta_product, q, k, v, beta, g, h0, cu_seqlens=cu), 1e-10, "packed grads")


def test_float32_matches_float64_naive():
    inputs64 = make_inputs(200, 2)
    expected = run(naive_delta_product, *inputs64)
    actual = run(chunk_delta_product, *(x.float() for x in inputs64))
    compare(actual, expected, 1e-5, "float32")


def test_all_forms_share_one_signature():
    reference = inspect.signature(naive_delta_product)
    for name, form in PRODUCT_FORMS.items():
        assert inspect.signature(form) == reference, f"{name} form's signature differs"
    dispatcher = inspect.signature(delta_product).parameters
    assert list(dispatcher)[:-1] == list(reference.parameters) and "impl" in dispatcher
    q, k, v, beta, g, _ = make_inputs(20, 2)
    o_auto, _ = delta_product(q, k, v, beta=beta, g=g)
    o_naive, _ = delta_product(q, k, v, beta=beta, g=g, impl="naive")
    assert_close("auto vs naive", o_auto, o_naive, 1e-10)


@pytest.mark.parametrize("form", [naive_delta_product, chunk_delta_product], ids=["naive", "chunk"])
def test_bad_inputs_name_the_argument(form):
    q, k, v, beta, g, h0 = make_inputs(8, 2)
    with pytest.raises(ValueError, match=r"k must have shape \[B, T, n_h, H, K\]"):
        form(q, k[:, :, 0], v, beta=beta)
    with pytest.raises(ValueError, match="beta has shape"):
        form(q, k, v, beta=beta[:, :, :1])
    with pytest.raises(ValueError, match="v has shape"):
        form(q, k, v[:, :, :1], beta=beta)
    with pytest.raises(ValueError, match="g has shape"):
        form(q, k, v, beta=beta, g=g[:, :, :1])
    with pytest.raises(ValueError, match="initial_state has shape"):
        form(q, k, v, beta=beta, initial_state=h0[:1])
