"""Delta-rule family: what is specific to it. Every form against the spec, packed batches,
state carry, single steps and argument names are tested for every family in test_families.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recur.ops.delta import DELTA_RULE, chunk_delta_rule, naive_delta_rule
from tests.helpers import assert_close, compare_results, family_results


def make_inputs(T, case="neg_eigval", dtype=torch.float64, batch=2, strength=1.0, seed=0):
    """The family's example inputs with the log decay (if any) scaled by `strength`."""
    example = DELTA_RULE.example_inputs(T, case=case, dtype=dtype, batch=batch, seed=seed)
    g = example.kwargs["g"]
    if g is not None and strength != 1.0:
        example.kwargs["g"] = (g.detach() * strength).requires_grad_()
    return example


def check(example, tol=1e-10, label="", form="chunk"):
    compare_results(
        family_results(DELTA_RULE, form, example),
        family_results(DELTA_RULE, "naive", example),
        tol,
        label,
    )


@pytest.mark.parametrize("case", ["gated", "ungated"])
@pytest.mark.parametrize("T", [63, 64, 65, 1000])
def test_chunk_matches_naive_across_chunk_boundaries(T, case):
    check(make_inputs(T, case), label=f"T={T} {case}")


@pytest.mark.parametrize("beta_value", [0.0, 1.0, 2.0])
def test_constant_beta_edges(beta_value):
    """β = 0 (no write), β = 1 (the plain delta rule) and β = 2 (a reflection along k)."""
    example = make_inputs(100)
    example.kwargs["beta"] = torch.full_like(example.kwargs["beta"], beta_value).requires_grad_()
    check(example, label=f"beta={beta_value}")


@pytest.mark.parametrize("strength", [0.0, 20.0, 200.0])
def test_gate_strength(strength):
    """Zero gates (no decay), strong gates (about −16 per step) and extreme ones."""
    check(make_inputs(130, strength=strength), label=f"strength={strength}")


def test_minus_inf_resets_state():
    example = make_inputs(150)
    g = example.kwargs["g"].detach().clone()
    g[:, [0, 17, 64, 65, 149]] = float("-inf")
    example.kwargs["g"] = g.requires_grad_()
    check(example, label="resets")
    # after a reset at step 17 the output cannot depend on anything before it
    q, k, v = example.args
    beta = example.kwargs["beta"]
    o_reset, _ = chunk_delta_rule(q[:, 17:], k[:, 17:], v[:, 17:], beta=beta[:, 17:], g=g[:, 17:])
    o_full, _ = chunk_delta_rule(
        q, k, v, beta=beta, g=g, initial_state=example.kwargs["initial_state"]
    )
    assert_close("reset isolation", o_full[:, 17:64], o_reset[:, :47], 1e-12)


def test_reflections_compute_parity():
    """β = 2 with a fixed unit key is the reflection I − 2kkᵀ: reading along k flips sign
    once per 1-bit, so the state holds the parity of the bits seen (eigenvalue −1)."""
    B, T, H, K, V = 2, 200, 3, 16, 8
    gen = torch.Generator().manual_seed(3)
    bits = torch.randint(0, 2, (B, T, H), generator=gen).double()
    k = F.normalize(torch.randn(1, 1, H, K, generator=gen, dtype=torch.float64), dim=-1).expand(
        B, T, H, K
    )
    w = torch.randn(B, H, V, generator=gen, dtype=torch.float64)
    h0 = k[:, 0, :, :, None] * w[:, :, None, :]
    o, _ = chunk_delta_rule(
        k,
        k,
        torch.zeros(B, T, H, V, dtype=torch.float64),
        beta=2 * bits,
        initial_state=h0,
        scale=1.0,
    )
    sign = 1 - 2 * (bits.cumsum(1) % 2)
    assert_close("parity by reflections", o, sign[..., None] * w[:, None], 1e-10)
    # with β in [0, 1] the eigenvalue along k stays in [0, 1]: no sign flips at all
    o_pos, _ = chunk_delta_rule(k, k, torch.zeros_like(o), beta=bits, initial_state=h0, scale=1.0)
    assert bool(((o_pos * w[:, None]).sum(-1) >= -1e-12).all())


@pytest.mark.parametrize("case", ["gated", "neg_eigval"])
def test_float32_matches_float64_naive(case):
    expected = family_results(DELTA_RULE, "naive", make_inputs(300, case))
    actual = family_results(DELTA_RULE, "chunk", make_inputs(300, case, dtype=torch.float32))
    compare_results(actual, expected, 1e-5, f"float32 {case}")


def test_bf16_and_fp16_close_to_float64():
    example = make_inputs(200)
    expected, _ = naive_delta_rule(*example.args, **example.kwargs)
    q, k, v = example.args
    beta, g, h0 = (example.kwargs[name] for name in ("beta", "g", "initial_state"))
    for dtype, tol in ((torch.bfloat16, 3e-2), (torch.float16, 5e-3)):
        low = [x.to(dtype) for x in (q, k, v, beta, g)]
        o, _ = chunk_delta_rule(*low[:3], beta=low[3], g=low[4], initial_state=h0.float())
        assert o.dtype == dtype
        assert_close(f"{dtype} output", o, expected, tol)


def test_long_sequence_stays_finite():
    """β in [0, 2] with unit keys and no decay: the state stays bounded over long inputs."""
    example = make_inputs(4096, batch=1, dtype=torch.float32)
    q, k, v = example.args
    with torch.no_grad():
        o, S = chunk_delta_rule(q, k, v, beta=example.kwargs["beta"], output_final_state=True)
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    assert float(S.abs().max()) < 1e3


def test_state_dtype_and_output_dtype():
    example = make_inputs(10, dtype=torch.bfloat16)
    q, k, v = example.args
    beta, g = example.kwargs["beta"], example.kwargs["g"]
    o, ht = chunk_delta_rule(q, k, v, beta=beta, g=g, output_final_state=True)
    assert o.dtype == torch.bfloat16 and ht.dtype == torch.float32
    _, ht = chunk_delta_rule(q, k, v, beta=beta, g=g)
    assert ht is None


def test_gates_and_rates_are_per_head():
    """β and g take one value per head; per-key-channel ones (GLA's) are refused, by name."""
    example = make_inputs(8)
    q, k, v = example.args
    beta, g = example.kwargs["beta"], example.kwargs["g"]
    per_key = lambda x: x[..., None].expand(*q.shape)  # noqa: E731
    with pytest.raises(ValueError, match=r"beta has shape \[2, 8, 3, 16\]; expected \[2, 8, 3\]"):
        chunk_delta_rule(q, k, v, beta=per_key(beta), g=g)
    with pytest.raises(ValueError, match=r"g has shape \[2, 8, 3, 16\]; expected \[2, 8, 3\]"):
        chunk_delta_rule(q, k, v, beta=beta, g=per_key(g))
    with pytest.raises(TypeError, match="beta must be a torch.Tensor"):
        chunk_delta_rule(q, k, v, beta=0.5)
