"""Delta-rule family: the chunkwise form against the float64 naive loop, forward and gradients."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from recur.ops.delta import FORMS, chunk_delta_rule, delta_rule, naive_delta_rule
from tests.helpers import assert_close, grads, weighted_sum

B, H, K, V = 2, 3, 16, 8


def make_inputs(T, gated=True, strength=1.0, beta_max=2.0, dtype=torch.float64, B=B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    # unit keys: the transition's eigenvalues are then α and α (1 − β), in [−1, 1] for β in [0, 2]
    k = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=dtype)
    beta = torch.rand(B, T, H, generator=gen, dtype=dtype) * beta_max
    g = F.logsigmoid(torch.randn(B, T, H, generator=gen, dtype=dtype)) * strength if gated else None
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


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "ungated"])
@pytest.mark.parametrize("T", [1, 63, 64, 65, 100, 1000])
def test_chunk_matches_naive_float64(T, gated):
    inputs = make_inputs(T, gated)
    compare(run(chunk_delta_rule, *inputs), run(naive_delta_rule, *inputs), 1e-10, f"T={T} gated={gated}")


@pytest.mark.parametrize("beta_value", [0.0, 1.0, 2.0])
def test_constant_beta_edges(beta_value):
    """β = 0 (no write), β = 1 (the plain delta rule) and β = 2 (a reflection along k)."""
    q, k, v, beta, g, h0 = make_inputs(100)
    beta = torch.full_like(beta, beta_value)
    compare(run(chunk_delta_rule, q, k, v, beta, g, h0), run(naive_delta_rule, q, k, v, beta, g, h0), 1e-10, f"beta={beta_value}")


@pytest.mark.parametrize("strength", [0.0, 20.0, 200.0])
def test_gate_strength(strength):
    """Zero gates (no decay), strong gates (about −20 per step) and extreme ones."""
    inputs = make_inputs(130, strength=strength)
    compare(run(chunk_delta_rule, *inputs), run(naive_delta_rule, *inputs), 1e-10, f"strength={strength}")


def test_minus_inf_resets_state():
    q, k, v, beta, g, h0 = make_inputs(150)
    g = g.clone()
    g[:, [0, 17, 64, 65, 149]] = float("-inf")
    compare(run(chunk_delta_rule, q, k, v, beta, g, h0), run(naive_delta_rule, q, k, v, beta, g, h0), 1e-10, "resets")
    o_reset, _ = chunk_delta_rule(q[:, 17:], k[:, 17:], v[:, 17:], beta=beta[:, 17:], g=g[:, 17:])
    o_full, _ = chunk_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0)
    assert_close("reset isolation", o_full[:, 17:64], o_reset[:, :47], 1e-12)


def test_reflections_compute_parity():
    """β = 2 with a fixed unit key is the reflection I − 2kkᵀ: reading along k flips sign
    once per 1-bit, so the state holds the parity of the bits seen (eigenvalue −1)."""
    T = 200
    gen = torch.Generator().manual_seed(3)
    bits = torch.randint(0, 2, (B, T, H), generator=gen).double()
    k = F.normalize(torch.randn(1, 1, H, K, generator=gen, dtype=torch.float64), dim=-1).expand(B, T, H, K)
    w = torch.randn(B, H, V, generator=gen, dtype=torch.float64)
    h0 = k[:, 0, :, :, None] * w[:, :, None, :]
    o, _ = chunk_delta_rule(k, k, torch.zeros(B, T, H, V, dtype=torch.float64), beta=2 * bits, initial_state=h0, scale=1.0)
    sign = 1 - 2 * (bits.cumsum(1) % 2)
    assert_close("parity by reflections", o, sign[..., None] * w[:, None], 1e-10)
    # with β in [0, 1] the eigenvalue along k stays in [0, 1]: no sign flips at all
    o_pos, _ = chunk_delta_rule(k, k, torch.zeros_like(o), beta=bits, initial_state=h0, scale=1.0)
    assert bool(((o_pos * w[:, None]).sum(-1) >= -1e-12).all())


def test_float32_matches_float64_naive():
    inputs64 = make_inputs(300)
    expected = run(naive_delta_rule, *inputs64)
    actual = run(chunk_delta_rule, *(x.float() for x in inputs64))
    compare(actual, expected, 1e-5, "float32")


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "ungated"])
@pytest.mark.parametrize("form", [naive_delta_rule, chunk_delta_rule], ids=["naive", "chunk"])
def test_packed_equals_separate(form, gated):
    """Packed sequences (cu_seqlens) behave as separate sequences: no state leaks."""
    lengths = [5, 0, 70, 1, 130]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    q, k, v, beta, g, _ = make_inputs(sum(lengths), gated, B=1)
    h0 = torch.randn(len(lengths), H, K, V, dtype=torch.float64)
    packed = run(form, q, k, v, beta, g, h0, cu_seqlens=cu)
    outs, finals = [], []
    for n in range(len(lengths)):
        s, e = int(cu[n]), int(cu[n + 1])
        o, ht = naive_delta_rule(
            q[:, s:e], k[:, s:e], v[:, s:e], beta=beta[:, s:e], g=None if g is None else g[:, s:e],
            initial_state=h0[n : n + 1], output_final_state=True,
        )
        outs.append(o)
        finals.append(ht)
    assert_close("packed o", packed[0], torch.cat(outs, 1), 1e-12)
    assert_close("packed final", packed[1], torch.cat(finals), 1e-12)
    if form is chunk_delta_rule:
        compare(packed, run(naive_delta_rule, q, k, v, beta, g, h0, cu_seqlens=cu), 1e-10, "packed grads")


def test_bf16_and_fp16_close_to_float64():
    inputs64 = make_inputs(200)
    q, k, v, beta, g, h0 = inputs64
    expected, _ = naive_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0)
    for dtype, tol in ((torch.bfloat16, 3e-2), (torch.float16, 5e-3)):
        q_, k_, v_, beta_, g_ = (x.to(dtype) for x in (q, k, v, beta, g))
        o, _ = chunk_delta_rule(q_, k_, v_, beta=beta_, g=g_, initial_state=h0.float())
        assert o.dtype == dtype
        assert_close(f"{dtype} output", o, expected, tol)


def test_long_sequence_stays_finite():
    """β in [0, 2] with unit keys and no decay: the state stays bounded over long inputs."""
    q, k, v, beta, _, _ = make_inputs(4096, B=1, dtype=torch.float32)
    o, S = chunk_delta_rule(q, k, v, beta=beta, output_final_state=True)
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    assert float(S.abs().max()) < 1e3


def test_state_dtype_and_output_dtype():
    q, k, v, beta, g, _ = make_inputs(10, dtype=torch.bfloat16)
    o, ht = chunk_delta_rule(q, k, v, beta=beta, g=g, output_final_state=True)
    assert o.dtype == torch.bfloat16 and ht.dtype == torch.float32
    _, ht = chunk_delta_rule(q, k, v, beta=beta, g=g)
    assert ht is None


def test_all_forms_share_one_signature():
    reference = inspect.signature(naive_delta_rule)
    for name, form in FORMS.items():
        assert inspect.signature(form) == reference, f"{name} form's signature differs from naive_delta_rule"
    dispatcher = inspect.signature(delta_rule).parameters
    assert list(dispatcher)[:-1] == list(reference.parameters) and "impl" in dispatcher


def test_dispatcher():
    q, k, v, beta, g, _ = make_inputs(20)
    o_auto, _ = delta_rule(q, k, v, beta=beta, g=g)
    o_naive, _ = delta_rule(q, k, v, beta=beta, g=g, impl="naive")
    assert_close("auto vs naive", o_auto, o_naive, 1e-10)
    with pytest.raises(ValueError, match="impl must be one of"):
        delta_rule(q, k, v, beta=beta, impl="fast")
    with pytest.raises(ValueError, match="has no 'sequential' form"):
        delta_rule(q, k, v, beta=beta, impl="sequential")


@pytest.mark.parametrize("form", [naive_delta_rule, chunk_delta_rule], ids=["naive", "chunk"])
def test_bad_inputs_name_the_argument(form):
    q, k, v, beta, g, h0 = make_inputs(8)
    with pytest.raises(ValueError, match=r"k has shape \[2, 8, 3, 8\] but q has \[2, 8, 3, 16\]; expected equal"):
        form(q, k[..., :8], v, beta=beta, g=g)
    with pytest.raises(ValueError, match="beta has shape"):
        form(q, k, v, beta=beta[..., :2], g=g)
    with pytest.raises(ValueError, match="beta has shape"):
        form(q, k, v, beta=beta[..., None].expand(-1, -1, -1, K), g=g)
    with pytest.raises(ValueError, match="g has shape"):
        form(q, k, v, beta=beta, g=g[..., None].expand(-1, -1, -1, K))
    with pytest.raises(ValueError, match="initial_state has shape"):
        form(q, k, v, beta=beta, g=g, initial_state=h0[:1])
    with pytest.raises(TypeError, match="beta must be a torch.Tensor"):
        form(q, k, v, beta=0.5)
    with pytest.raises(ValueError, match="batch size 1"):
        form(q, k, v, beta=beta, cu_seqlens=torch.tensor([0, 8]))
