"""GLA family: what is specific to it. Every form against the spec, packed batches, state
carry, single steps and argument names are tested for every family in test_families.py."""

from __future__ import annotations

import pytest
import torch

from recur.ops.gla import GLA, chunk_gla, naive_gla
from recur.ops.gla.chunk import CHUNK_SIZE, FACTOR_LIMIT, _chunked, _factor_block_size
from tests.helpers import assert_close, compare_results, family_results

CASE = {"scalar": "per_head", "vector": "per_channel", "none": "no_gate"}


def make_inputs(T, gate, strength=1.0, dtype=torch.float64, seed=0):
    """The family's example inputs with the log decay scaled by `strength`."""
    example = GLA.example_inputs(T, case=CASE[gate], dtype=dtype, seed=seed)
    g = example.kwargs["g"]
    if g is not None and strength != 1.0:
        example.kwargs["g"] = (g.detach() * strength).requires_grad_()
    return example


def check(example, tol=1e-10, label="", form="chunk", **overrides):
    compare_results(
        family_results(GLA, form, example, **overrides), family_results(GLA, "naive", example, **overrides), tol, label
    )


@pytest.mark.parametrize("gate", ["scalar", "vector", "none"])
@pytest.mark.parametrize("T", [63, 64, 65, 1000])
def test_chunk_matches_naive_across_chunk_boundaries(T, gate):
    check(make_inputs(T, gate), label=f"T={T} gate={gate}")


@pytest.mark.parametrize("gate", ["scalar", "vector"])
@pytest.mark.parametrize("strength", [0.0, 20.0, 200.0])
def test_gate_strength(gate, strength):
    """Zero gates (no decay), strong gates (about -20 per step) and extreme ones."""
    check(make_inputs(100, gate, strength=strength), label=f"strength={strength}")


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_exact_log_decay_minus_20(gate):
    example = make_inputs(130, gate)
    example.kwargs["g"] = torch.full_like(example.kwargs["g"], -20.0).requires_grad_()
    check(example, label="g=-20")


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_minus_inf_resets_state(gate):
    example = make_inputs(150, gate)
    g = example.kwargs["g"].detach().clone()
    g[:, [0, 17, 64, 65, 149]] = float("-inf")
    example.kwargs["g"] = g.requires_grad_()
    check(example, label="resets")
    # after a reset at step 17 the output cannot depend on anything before it
    q, k, v = example.args
    o_reset, _ = chunk_gla(q[:, 17:], k[:, 17:], v[:, 17:], g=g[:, 17:])
    o_full, _ = chunk_gla(q, k, v, g=g, initial_state=example.kwargs["initial_state"])
    assert_close("reset isolation", o_full[:, 17:64], o_reset[:, :47], 1e-12)


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_float32_matches_float64_naive(gate):
    expected = family_results(GLA, "naive", make_inputs(300, gate))
    actual = family_results(GLA, "chunk", make_inputs(300, gate, dtype=torch.float32))
    compare_results(actual, expected, 1e-5, "float32")


def test_bf16_and_fp16_close_to_float64():
    example = make_inputs(200, "vector", strength=5.0)
    expected, _ = naive_gla(*example.args, **example.kwargs)
    for dtype, tol in ((torch.bfloat16, 3e-2), (torch.float16, 5e-3)):
        q, k, v = (x.to(dtype) for x in example.args)
        o, _ = chunk_gla(q, k, v, g=example.kwargs["g"].to(dtype), initial_state=example.kwargs["initial_state"].float())
        assert o.dtype == dtype
        assert_close(f"{dtype} output", o, expected, tol)


def test_state_dtype_and_output_dtype():
    example = make_inputs(10, "scalar", dtype=torch.bfloat16)
    q, k, v = example.args
    g = example.kwargs["g"]
    o, ht = chunk_gla(q, k, v, g=g, output_final_state=True)
    assert o.dtype == torch.bfloat16 and ht.dtype == torch.float32
    o, ht = chunk_gla(q, k, v, g=g)
    assert ht is None


def test_messages_name_the_argument_and_the_expected_value():
    example = make_inputs(8, "scalar")
    q, k, v = example.args
    g, h0 = example.kwargs["g"], example.kwargs["initial_state"]
    with pytest.raises(ValueError, match=r"k has shape \[2, 8, 3, 8\] but q has \[2, 8, 3, 16\]; expected equal"):
        chunk_gla(q, k[..., :8], v, g=g)
    with pytest.raises(ValueError, match="g has shape"):
        chunk_gla(q, k, v, g=g[:, :, :2])
    with pytest.raises(ValueError, match="initial_state has shape"):
        chunk_gla(q, k, v, g=g, initial_state=h0[:1])
    with pytest.raises(ValueError, match="batch size 1"):
        chunk_gla(q, k, v, g=g, cu_seqlens=torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="end at T = 8"):
        chunk_gla(q[:1], k[:1], v[:1], g=g[:1], cu_seqlens=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="expected one device"):
        chunk_gla(q, k, v.to("meta"), g=g)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="impl='triton'"):
            GLA.function(q, k, v, g=g, impl="triton")


@pytest.mark.parametrize("T", [1, 64, 65, 200])
def test_signed_decays_match_naive(T):
    """Decays in (-1, 1): a_t = decay_sign_t · exp(g_t) (negative eigenvalues)."""
    example = GLA.example_inputs(T, case="signed")
    example.kwargs["g"] = (example.kwargs["g"].detach() * 3).requires_grad_()
    check(example, label="signed")


def test_negative_decay_flips_the_state():
    """All signs negative and g = 0: the state changes sign every step."""
    q, k, v = make_inputs(2, "scalar").args
    g = torch.zeros(*q.shape[:3], dtype=q.dtype)
    _, ht = naive_gla(q, k, v, g=g, decay_sign=-torch.ones_like(g), output_final_state=True)
    expected = k[:, 1, :, :, None] * v[:, 1, :, None, :] - k[:, 0, :, :, None] * v[:, 0, :, None, :]
    assert_close("flip", ht, expected, 1e-14)


def test_signed_decays_need_a_per_head_gate():
    example = make_inputs(8, "vector")
    q, k, v = example.args
    with pytest.raises(ValueError, match="decay_sign needs a per-head log decay"):
        chunk_gla(q, k, v, g=example.kwargs["g"], decay_sign=torch.ones(*q.shape[:3], dtype=torch.float64))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_weak_per_channel_gates_take_the_factorized_path(dtype, tol):
    """GLA-layer gates (logsigmoid/16) stay within the limit for one product per chunk."""
    example = make_inputs(300, "vector", strength=1 / 16)
    assert factorizable(example.kwargs["g"].detach().to(dtype))
    expected = family_results(GLA, "naive", example)
    compare_results(family_results(GLA, "chunk", make_inputs(300, "vector", strength=1 / 16, dtype=dtype)), expected, tol, f"factorized {dtype}")


def test_factorized_path_is_refused_beyond_its_limit():
    g = torch.full((1, 64, 1, 4), -FACTOR_LIMIT[torch.float32] / 64)
    assert factorizable(g)
    assert not factorizable(g * 1.1)
    g[0, 5, 0, 0] = float("-inf")
    assert not factorizable(g)


def factorizable(g: torch.Tensor) -> bool:
    return _factor_block_size(_chunked(g, CHUNK_SIZE)) == CHUNK_SIZE


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("block", [1, 2, 4, 8, 16, 32, 64])
def test_every_factor_block_size_matches_naive(block, dtype, tol):
    """Per-channel gates sized so that blocks of `block` steps sum to at most FACTOR_LIMIT
    and blocks of 2·block to more: factorized blocks of that size, halving above them.
    Every step equally strong, so the gradient of g holds no larger terms to hide errors in."""
    example = make_inputs(200, "vector")
    g = example.kwargs["g"].detach()
    u = torch.rand(g.shape, generator=torch.Generator().manual_seed(1), dtype=g.dtype)
    g = -(FACTOR_LIMIT[dtype] / block) * (0.55 + 0.44 * u)
    assert _factor_block_size(_chunked(g.to(dtype), CHUNK_SIZE)) == block
    example.kwargs["g"] = g.to(dtype).to(torch.float64).requires_grad_()
    expected = family_results(GLA, "naive", example)
    low = make_inputs(200, "vector", dtype=dtype)
    low.kwargs["g"] = g.to(dtype).requires_grad_()
    compare_results(family_results(GLA, "chunk", low), expected, tol, f"block={block} {dtype}")


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_mixed_gate_strengths_and_resets(dtype, tol):
    """Chunks and 16-step blocks of different strengths in one sequence (weak, GLA-strength,
    -20 per step, -200 per step, resets), at a length that is not a multiple of 16 or 64."""
    T = 333
    example = make_inputs(T, "vector")
    g = example.kwargs["g"].detach().clone()
    strengths = [1 / 16, 1.0, 20.0, 1 / 16, 200.0, 3.0, 1 / 16]
    for i, strength in enumerate(strengths):
        g[:, i * 48 : (i + 1) * 48] *= strength
    g[:, 100:116] = -20.0
    g[:, [5, 130, 201, 202]] = float("-inf")
    example.kwargs["g"] = g.to(dtype).to(torch.float64).requires_grad_()
    expected = family_results(GLA, "naive", example)
    low = make_inputs(T, "vector", dtype=dtype)
    low.kwargs["g"] = g.to(dtype).requires_grad_()
    actual = family_results(GLA, "chunk", low)
    compare_results(actual, expected, tol, f"mixed {dtype}")
    # after the reset at step 202 nothing before it reaches the output
    q, k, v = (x.detach() for x in low.args)
    o_after, _ = chunk_gla(q[:, 202:], k[:, 202:], v[:, 202:], g=low.kwargs["g"].detach()[:, 202:])
    assert_close("reset isolation", actual["output"][:, 202:], o_after, 1e-12 if dtype == torch.float64 else 1e-6)
