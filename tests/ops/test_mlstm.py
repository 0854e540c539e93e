"""mLSTM family: what is specific to it (the stabiliser, the sigmoid input gate, extreme gates,
chunk boundaries, dtypes). Every form against the spec, packed batches, state carry, single
steps and argument names are tested for every family in test_families.py."""

from __future__ import annotations

import pytest
import torch

from recur.ops.mlstm import MLSTM, MLSTMState, chunk_mlstm, naive_mlstm
from recur.ops.mlstm.chunk import _chunk_mlstm
from recur.ops.mlstm.naive import log_gates
from tests.helpers import assert_close, compare_results, family_results, scalar_of

CASES = ("exp", "sigmoid", "strong_forget")


def check(example, tol=1e-10, label="", form="chunk", **overrides):
    compare_results(
        family_results(MLSTM, form, example, **overrides), family_results(MLSTM, "naive", example, **overrides), tol, label
    )


def with_gates(example, i=None, f=None):
    """The example with the gate pre-activations replaced (as new leaves)."""
    for name, value in (("i", i), ("f", f)):
        if value is not None:
            example.kwargs[name] = value.detach().clone().requires_grad_()
    return example


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("T", [63, 64, 65, 129, 1000])
def test_chunk_matches_naive_across_chunk_boundaries(T, case):
    check(MLSTM.example_inputs(T, case=case), label=f"T={T} {case}")


@pytest.mark.parametrize("case", CASES)
def test_parallel_equals_chunk(case):
    example = MLSTM.example_inputs(300, case=case)
    compare_results(family_results(MLSTM, "parallel", example), family_results(MLSTM, "chunk", example), 1e-10, case)


@pytest.mark.parametrize("chunk_size", [1, 16, 32, 128])
def test_chunk_size_does_not_change_the_result(chunk_size):
    """Many chunks (chunk_size 1: every step its own chunk) or one: the same outputs, state
    and gradients as the default chunk size."""
    example = MLSTM.example_inputs(150, case="strong_forget")

    def run(size):
        ex = example.fresh()
        q, k, v = ex.args
        C0, n0, m0 = ex.kwargs["initial_state"]
        log_i, log_f = log_gates(ex.kwargs["i"], ex.kwargs["f"], "exp", torch.float64)
        h, state = _chunk_mlstm(q, k, v, log_i, log_f, 16**-0.5, (C0, n0, m0), 1e-6, True, chunk_size=size)
        results = {"h": h, "C": state[0], "n": state[1], "m": state[2]}
        leaves = ex.leaves()
        grads = torch.autograd.grad(scalar_of(results.values()), list(leaves.values()))
        results.update((f"grad {name}", grad) for name, grad in zip(leaves, grads, strict=True))
        return results

    compare_results(run(chunk_size), run(64), 1e-10, f"chunk_size={chunk_size}")


def test_stabilised_equals_unstabilised():
    """With eps = 0 the output does not depend on m: it equals the plain recurrence
    C̄_t = f_t C̄_{t-1} + exp(ĩ_t) k vᵀ read as C̄ᵀq̂ / max(|n̄ᵀq̂|, 1) (moderate gates, zero state)."""
    example = MLSTM.example_inputs(120, case="exp")
    q, k, v = (x.detach() for x in example.args)
    i, f = example.kwargs["i"].detach() / 3, example.kwargs["f"].detach()
    h, _ = chunk_mlstm(q, k, v, i=i, f=f, eps=0.0)
    B, T, H, K = q.shape
    C_bar, n_bar, outputs = q.new_zeros(B, H, K, v.shape[-1]), q.new_zeros(B, H, K), []
    q = q * K**-0.5
    for t in range(T):
        forget, inp = torch.sigmoid(f[:, t])[..., None], i[:, t].exp()[..., None]
        C_bar = forget[..., None] * C_bar + inp[..., None] * k[:, t, :, :, None] * v[:, t, :, None, :]
        n_bar = forget * n_bar + inp * k[:, t]
        den = (n_bar * q[:, t]).sum(-1).abs().clamp_min(1.0)
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], C_bar) / den[..., None])
    assert_close("unstabilised", h, torch.stack(outputs, 1), 1e-12)


@pytest.mark.parametrize("impl", ["naive", "chunk", "parallel"])
def test_sigmoid_gate_keeps_the_stabiliser(impl):
    """mLSTMsig: every gate is <= 1, so m stays at m_0 in every form."""
    example = MLSTM.example_inputs(130, case="sigmoid")
    _, state = MLSTM.call(impl, example.args, {**example.kwargs, "output_final_state": True})
    assert torch.equal(state.m, example.kwargs["initial_state"].m.detach())


def test_stabiliser_follows_the_input_gate():
    """With forgets near 0 the state after a step is dominated by that step: m_T = log i_T."""
    example = MLSTM.example_inputs(70, case="strong_forget")
    f = torch.full_like(example.kwargs["f"], -60.0)
    for impl in ("naive", "chunk", "parallel"):
        _, state = MLSTM.call(impl, example.args, {**example.kwargs, "f": f, "output_final_state": True})
        assert_close(f"{impl} m_T", state.m, example.kwargs["i"].detach()[:, -1], 1e-12)


@pytest.mark.parametrize(
    "input_scale,forget_bias",
    [(80.0, 2.0), (80.0, 30.0), (80.0, -30.0), (1.0, 30.0), (1.0, -30.0)],
    ids=["i80", "i80-f1", "i80-f0", "f1", "f0"],
)
def test_extreme_gates_float32_no_overflow(input_scale, forget_bias):
    """Input-gate pre-activations up to +80 (exp(80) overflows float32 without the max
    state) and forget gates near 1 (f̃ = +30) or near 0 (f̃ = −30)."""
    example = MLSTM.example_inputs(300, case="exp")
    i, f = example.kwargs["i"].detach(), example.kwargs["f"].detach()
    i = (i.abs() * input_scale / 3 if input_scale > 1 else i / 3).clamp(max=80.0)
    f = f / 3 + forget_bias
    example = with_gates(example, i=i, f=f)
    expected, _ = naive_mlstm(*example.args, **example.kwargs)
    low = MLSTM.example_inputs(300, case="exp", dtype=torch.float32)
    low = with_gates(low, i=i.float(), f=f.float())
    for impl in ("naive", "chunk", "parallel"):
        h, state = MLSTM.call(impl, low.args, {**low.kwargs, "output_final_state": True})
        for name, x in zip(("h", *MLSTMState._fields), (h, *state), strict=True):
            assert torch.isfinite(x).all(), f"{impl}: non-finite {name}"
        # float32 rounding of exponents near 80 is about 1e-5 absolute; outputs whose
        # normaliser nears zero amplify it
        assert_close(f"{impl} float32 h", h, expected, 1e-2)
    check(example, label="extreme float64")


@pytest.mark.parametrize("case", CASES)
def test_float32_matches_float64_naive(case):
    expected = family_results(MLSTM, "naive", MLSTM.example_inputs(300, case=case))
    actual = family_results(MLSTM, "chunk", MLSTM.example_inputs(300, case=case, dtype=torch.float32))
    compare_results(actual, expected, 1e-4, f"float32 {case}")


def test_bf16_close_to_float64():
    """bf16 inputs, float32 state: the output is the exact answer for the rounded inputs
    up to bf16 output rounding (exp(ĩ) turns input rounding into large output changes,
    so the reference takes the same rounded inputs)."""
    example = MLSTM.example_inputs(200, case="exp", dtype=torch.bfloat16)
    q, k, v = (x.detach() for x in example.args)
    i, f = example.kwargs["i"].detach(), example.kwargs["f"].detach()
    expected, _ = naive_mlstm(q.double(), k.double(), v.double(), i=i.double(), f=f.double())
    h, state = chunk_mlstm(q, k, v, i=i, f=f, output_final_state=True)
    assert h.dtype == torch.bfloat16 and all(s.dtype == torch.float32 for s in state)
    assert_close("bf16 h", h, expected, 1e-2)


def test_state_is_a_named_tuple_and_a_plain_tuple_is_taken():
    example = MLSTM.example_inputs(20, case="exp")
    state = example.kwargs["initial_state"]
    named = chunk_mlstm(*example.args, **example.kwargs, output_final_state=True)
    plain = chunk_mlstm(*example.args, **{**example.kwargs, "initial_state": tuple(state)}, output_final_state=True)
    assert isinstance(named[1], MLSTMState) and isinstance(plain[1], MLSTMState)
    assert torch.equal(named[0], plain[0])
    assert all(torch.equal(a, b) for a, b in zip(named[1], plain[1], strict=True))


def test_messages_name_the_argument_and_the_expected_value():
    example = MLSTM.example_inputs(8, case="exp")
    q, k, v = example.args
    kwargs = example.kwargs
    state = kwargs["initial_state"]
    with pytest.raises(ValueError, match=r"k has shape \[2, 8, 3, 8\] but q has \[2, 8, 3, 16\]; expected equal"):
        chunk_mlstm(q, k[..., :8], v, **kwargs)
    with pytest.raises(ValueError, match=r"f has shape \[2, 8, 1\]; expected \[2, 8, 3\]"):
        chunk_mlstm(q, k, v, **{**kwargs, "f": kwargs["f"][..., :1]})
    with pytest.raises(ValueError, match=r"initial_state.n has shape \[1, 3, 16\]; expected \[2, 3, 16\]"):
        chunk_mlstm(q, k, v, **{**kwargs, "initial_state": state._replace(n=state.n[:1])})
    with pytest.raises(TypeError, match="initial_state must be an MLSTMState or a tuple"):
        chunk_mlstm(q, k, v, **{**kwargs, "initial_state": state.C})
    with pytest.raises(TypeError, match="got a tuple of 2"):
        chunk_mlstm(q, k, v, **{**kwargs, "initial_state": (state.C, state.n)})
    with pytest.raises(ValueError, match="input_gate must be one of"):
        chunk_mlstm(q, k, v, **{**kwargs, "input_gate": "tanh"})
    with pytest.raises(ValueError, match="eps must be"):
        chunk_mlstm(q, k, v, **{**kwargs, "eps": -1.0})


def test_chunk_gradient_is_first_order_only():
    """The chunk form's written-out backward refuses a second derivative (on backward()) rather
    than give a wrong one; the naive form has one."""
    example = MLSTM.example_inputs(10, case="exp")
    q = example.args[0]
    for impl in ("naive", "chunk"):
        h, _ = MLSTM.call(impl, example.args, example.kwargs)
        (dq,) = torch.autograd.grad(h.pow(2).sum(), q, create_graph=True)
        if impl == "naive":
            dq.sum().backward()
        else:
            with pytest.raises(RuntimeError, match="differentiate twice"):
                dq.sum().backward()
