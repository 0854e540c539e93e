"""The memory family: what is specific to it. Every form against the spec on the family's
cases, packed batches, state carry, single steps and argument names are tested for every
family in test_families.py; here: the papers' special cases as exact equivalences, the
options only the naive form computes, and how "auto" and "chunk" treat them."""

from __future__ import annotations

import pytest
import torch

from recur.ops.delta import naive_delta_rule
from recur.ops.memory import MEMORY, chunk_memory, memory, memory_state_type, naive_memory
from tests.helpers import assert_close, compare_results, family_results

EXACT = 1e-10


def inputs(T: int = 30, case: str = "linear", **options):
    """The family's example inputs of `case`, without the initial state's window and
    momentum where a comparison with another recurrence has no place for them."""
    return MEMORY.example_inputs(T, case=case, **options)


def fresh_state(W: torch.Tensor):
    """A linear memory's state with weights W and nothing else (phase 0, no momentum)."""
    B, H, K, V = W.shape
    zeros = W.new_zeros(B, H, K, V)
    return memory_state_type(1)(W, zeros, zeros, W.new_zeros(B, H, 0, K), W.new_zeros(B, H, 0, V), W.new_zeros(B, H, 0), W.new_zeros(B))


def test_linear_l2_memory_is_the_delta_rule():
    """A linear memory, ℓ2, one gradient step per token, no momentum, no forgetting: the
    delta rule with β = η."""
    example = inputs()
    q, k, v = example.args
    eta, W0 = example.kwargs["eta"], example.kwargs["initial_state"].W1
    for impl in ("naive", "chunk"):
        y, state = memory(q, k, v, eta=eta, initial_state=fresh_state(W0), output_final_state=True, impl=impl)
        o, S = naive_delta_rule(q, k, v, beta=eta, scale=1.0, initial_state=W0, output_final_state=True)
        assert_close(f"{impl} output", y, o, EXACT)
        assert_close(f"{impl} state", state.W1, S, EXACT)


def test_linear_l2_memory_with_retention_is_the_gated_delta_rule():
    """The memory takes its gradient at W_{t−1}, the gated delta rule at α_t W_{t−1}:
    α(I − β kkᵀ)W + β kvᵀ = (αI − η kkᵀ)W + η k (v / α)ᵀ with η = αβ."""
    example = inputs()
    q, k, v = example.args
    beta, g, W0 = example.kwargs["eta"], example.kwargs["g"], example.kwargs["initial_state"].W1
    alpha = g.exp()
    o, S = naive_delta_rule(q, k, v, beta=beta, g=g, scale=1.0, initial_state=W0, output_final_state=True)
    for impl in ("naive", "chunk"):
        y, state = memory(
            q, k, v / alpha[..., None], eta=alpha * beta, g=g, initial_state=fresh_state(W0), output_final_state=True, impl=impl,
        )
        assert_close(f"{impl} output", y, o, EXACT)
        assert_close(f"{impl} state", state.W1, S, EXACT)


@pytest.mark.parametrize("impl", ["naive", "chunk"])
@pytest.mark.parametrize("case", ["linear_momentum", "mlp"])
def test_atlas_with_one_token_windows_and_no_newton_schulz_is_titans(case, impl):
    """ATLAS's optimiser keeps the raw gradients' momentum S' and steps by −η_t S'_t; with
    k = 0 Newton–Schulz steps and c = 1 it is Titans' surprise S = −η S' once θ'_t =
    θ_t η_{t−1} / η_t and S'_0 = −S_0 / η_1."""
    example = inputs(case=case)
    titans_y, titans = MEMORY.call("naive", example.args, {**example.kwargs, "output_final_state": True})
    eta, theta = example.kwargs["eta"], example.kwargs["theta"]
    theta_atlas = torch.cat([theta[:, :1], theta[:, 1:] * eta[:, :-1] / eta[:, 1:]], dim=1)
    depth = example.kwargs["depth"]
    state = list(example.kwargs["initial_state"])
    state[depth : 2 * depth] = [-s / eta[:, 0, :, None, None] for s in state[depth : 2 * depth]]
    atlas_y, atlas = MEMORY.call(impl, example.args, {
        **example.kwargs, "optimizer": "newton_schulz", "ns_steps": 0, "theta": theta_atlas,
        "initial_state": type(example.kwargs["initial_state"])(*state), "output_final_state": True,
    })
    assert_close("output", atlas_y, titans_y, EXACT)
    for i in range(depth):
        assert_close(f"W{i + 1}", atlas[i], titans[i], EXACT)
        assert_close(f"S{i + 1}", -eta[:, -1, :, None, None] * atlas[depth + i], titans[depth + i], EXACT)


@pytest.mark.parametrize("impl", ["naive", "chunk"])
def test_moneta_with_p_2_and_q_2_is_l2(impl):
    example = inputs(case="mlp")
    l2 = family_results(MEMORY, impl, example)
    moneta = family_results(MEMORY, impl, example, objective="lp", p=2.0, retention="lq", q_norm=2.0)
    compare_results(moneta, l2, EXACT)


def test_layer_norm_memory_chunk_matches_naive():
    """The MLP memory with LayerNorm, on sequences short enough for float64: its inner
    optimisation is chaotic (the LayerNorm's gradient grows as the memory's output
    shrinks), so rounding differences between two exact forms grow about tenfold every
    20 steps."""
    example = inputs(40, case="mlp", layer_norm=True)
    compare_results(family_results(MEMORY, "chunk", example), family_results(MEMORY, "naive", example), EXACT)


@pytest.mark.parametrize(
    "options", [{"theta": None}, {"ns_steps": 1}, {"minibatch": 16, "window": 1, "phase": 5}, {"minibatch": 1, "phase": 0}],
    ids=["no_momentum", "one_newton_schulz_step", "minibatch_16", "minibatch_1"],
)
def test_atlas_chunk_matches_naive(options):
    """ATLAS's Newton–Schulz step in mini-batches, beyond the family's case: θ = 0, k = 1,
    mini-batches of 16 (70 tokens: a partial first, four full, a partial last) and of 1."""
    example = inputs(70, case="atlas", **{key: value for key, value in options.items() if key != "theta"})
    if "theta" in options:
        example.kwargs["theta"] = None
    compare_results(family_results(MEMORY, "chunk", example), family_results(MEMORY, "naive", example), EXACT)


@pytest.mark.parametrize("minibatch", [1, 5, 64])
def test_chunk_matches_naive_for_any_minibatch(minibatch):
    example = inputs(70, case="linear_momentum", minibatch=minibatch, phase=0)
    compare_results(family_results(MEMORY, "chunk", example), family_results(MEMORY, "naive", example), EXACT)


@pytest.mark.parametrize(
    "case, options",
    [
        ("memora", {"layer_norm": True, "residual": True, "minibatch": 16, "phase": 0}),
        ("moneta", {"layer_norm": True, "residual": True, "minibatch": 16, "p": 3.0, "phase": 0}),
        ("memora", {"optimizer": "newton_schulz", "ns_steps": 2, "window": 3, "feature_degree": 2}),
        ("moneta", {"optimizer": "momentum"}),
    ],
    ids=["memora_paper", "moneta_paper", "memora_newton_schulz", "moneta_momentum"],
)
def test_retentions_chunk_matches_naive(case, options):
    """Memora's KL retention keeps c · softmax_rows of log-weights that are linear in the
    steps, Moneta's ℓq retention an accumulator read normalised: the chunk form forms each
    token's weights from them (the papers' LayerNorm memories on 30 tokens, as above)."""
    example = inputs(30, case=case, **options)
    compare_results(family_results(MEMORY, "chunk", example), family_results(MEMORY, "naive", example), EXACT)


def test_momentum_may_be_switched_off_at_a_token():
    """θ_t = 0 (a sigmoid gate saturated in float32) is a legal momentum: the chunk form,
    which works with log θ, must give the naive form's outputs and finite gradients."""
    example = inputs(24, case="linear_momentum", phase=0)
    theta = example.kwargs["theta"].detach().clone()
    theta[:, ::5] = 0.0
    example.kwargs["theta"] = theta.requires_grad_()
    chunk = family_results(MEMORY, "chunk", example)
    compare_results(chunk, family_results(MEMORY, "naive", example), EXACT)
    assert all(torch.isfinite(value).all() for value in chunk.values() if isinstance(value, torch.Tensor))


def test_memora_keeps_its_weights_on_the_scaled_simplex():
    example = inputs(20, case="memora")
    for impl in ("naive", "chunk"):
        _, state = memory(*example.args, **{**example.kwargs, "output_final_state": True, "impl": impl})
        for W in state[:2]:
            assert (W > 0).all()
            assert_close(f"{impl} row sums", W.sum(-1), torch.full_like(W.sum(-1), 2.0), EXACT)


def test_newton_schulz_step_is_nearly_orthogonal():
    """ATLAS's step direction: NS_5 of a random matrix has singular values near 1 (Muon's
    coefficients land them in about [0.7, 1.2])."""
    from recur.ops.memory.model import newton_schulz

    X = torch.randn(3, 2, 8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    singular = torch.linalg.svdvals(newton_schulz(X, 5))
    assert singular.min() > 0.6 and singular.max() < 1.25, singular


def test_newton_schulz_of_a_tall_matrix_iterates_on_its_transpose():
    """(XXᵀ)^i X = X (XᵀX)^i: the tall matrix's iteration, written out, equals the result."""
    from recur.ops.memory.model import NEWTON_SCHULZ, newton_schulz

    a, b, c = NEWTON_SCHULZ
    X = torch.randn(2, 9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = X / X.square().sum((-2, -1), keepdim=True).sqrt()
    for _ in range(3):
        gram = expected @ expected.transpose(-1, -2)
        expected = a * expected + (b * gram + c * gram @ gram) @ expected
    assert_close("tall", newton_schulz(X, 3), expected, EXACT)


def test_chunk_needs_one_phase_for_the_batch():
    example = inputs(10, case="linear_momentum")
    state = example.kwargs["initial_state"]
    example.kwargs["initial_state"] = state._replace(phase=torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="phase"):
        chunk_memory(*example.args, **example.kwargs)
    naive_memory(*example.args, **example.kwargs)


def test_option_errors_name_the_option():
    example = inputs(5, case="linear")
    q, k, v = example.args
    eta = example.kwargs["eta"]
    for bad, match in (
        ({"objective": "l1"}, "objective"), ({"minibatch": 0}, "minibatch"), ({"optimizer": "momentum"}, "theta"),
        ({"theta": eta}, "theta"), ({"objective": "huber"}, "huber_threshold"), ({"residual": True, "feature_degree": 2}, "residual"),
        ({"objective": "huber", "huber_threshold": eta, "window": 2}, "window"),
    ):
        with pytest.raises((ValueError, TypeError), match=match):
            memory(q, k, v, eta=eta, **bad)


def test_rows_at_different_mini_batch_phases_take_the_naive_form():
    # prompts of different lengths decoded together leave their rows at different places in
    # their mini-batches: auto computes them with the naive form, chunk says why it cannot
    example = MEMORY.example_inputs(6, case="linear_momentum")
    state = example.kwargs["initial_state"]
    mixed = state._replace(phase=torch.tensor([1.0, 3.0], dtype=state.phase.dtype))
    kwargs = {**example.kwargs, "initial_state": mixed}
    expected, _ = naive_memory(*example.args, **kwargs, output_final_state=True)
    got, _ = memory(*example.args, **kwargs, output_final_state=True)
    assert_close("output", got, expected, 1e-12)
    with pytest.raises(ValueError, match=r"initial_state.phase=\[1.0, 3.0\]"):
        memory(*example.args, **kwargs, impl="chunk")
