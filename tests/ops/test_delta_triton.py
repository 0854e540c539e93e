"""The delta rule's Triton kernels in Triton's interpreter on the CPU, against the float64
naive loop: the chunkwise training kernels (forward and every gradient) and the decoding
kernel. What every form of every family passes (the spec's results on the family's example
inputs, packed batches, state carry, single steps) is in test_families.py; here are the
kernels' own cases: several chunks and tiles, both schedules of the walks, β at its edges,
strong gates and resets, 16-bit inputs, the device's product roundings.

Small sizes: the interpreter runs every program in Python; tests/gpu runs the same checks
at full size on a GPU. Every buffer the kernels allocate is filled with NaN first, so an
element a kernel forgets to write fails the comparison.
"""

from __future__ import annotations

import pytest
import torch

from recur.ops.delta import DELTA_RULE, naive_delta_rule
from recur.ops.family import Example
from tests.helpers import (
    assert_close,
    compare_results,
    family_results,
    grads,
    interpreted_kernels,
    triton_and_chunk_layer,
    weighted_sum,
)
from tests.ops.test_gla_triton import poisoned_allocations

pytest.importorskip("triton")

# float32 kernels against the float64 loop: rounding of float32 products and sums
TOL_FLOAT32 = 2e-5
triton_delta_rule = DELTA_RULE.forms["triton"]
triton_delta_rule_recurrent = DELTA_RULE.step_forms["triton"]


@pytest.fixture(scope="module")
def launcher():
    """The launch module (launch settings, autograd, forms), its kernels in Triton's
    interpreter."""
    with interpreted_kernels("recur.ops.delta.triton") as module:
        yield module


def make_inputs(
    T, batch=1, heads=2, key_dim=16, value_dim=16, case="neg_eigval", strength=1.0, seed=0
):
    """The family's example inputs in float64 (β in [0, 2] unless `case` says otherwise), the
    log decay scaled by `strength`."""
    example = DELTA_RULE.example_inputs(
        T, batch=batch, case=case, seed=seed, heads=heads, key_dim=key_dim, value_dim=value_dim
    )
    if example.kwargs["g"] is not None and strength != 1.0:
        example.kwargs["g"] = (example.kwargs["g"].detach() * strength).requires_grad_()
    return example


def cast(example: Example, dtype: torch.dtype) -> Example:
    """The same inputs in `dtype`, as new leaves."""

    def to(x):
        if not isinstance(x, torch.Tensor):
            return x
        return x.detach().to(dtype).requires_grad_(x.requires_grad)

    return Example(
        tuple(to(x) for x in example.args), {name: to(x) for name, x in example.kwargs.items()}
    )


def replaced(example: Example, **values) -> Example:
    """The example with some arguments replaced by new leaves of the given values."""
    names = ("q", "k", "v")
    args = tuple(
        values[n].detach().requires_grad_() if n in values else x
        for n, x in zip(names, example.args)
    )
    kwargs = dict(example.kwargs)
    for name, value in values.items():
        if name not in names:
            kwargs[name] = None if value is None else value.detach().requires_grad_()
    return Example(args, kwargs)


def kernel_results(example, dtype=torch.float32, **overrides):
    """family_results of the Triton form on the example cast to `dtype`, every allocation
    poisoned."""
    with poisoned_allocations():
        return family_results(DELTA_RULE, "triton", cast(example, dtype), **overrides)


def check_kernels(example, tol=TOL_FLOAT32, label="", dtype=torch.float32, **overrides):
    """The kernels' results against the float64 spec's: output, final state, every gradient."""
    actual = kernel_results(example, dtype, **overrides)
    compare_results(actual, family_results(DELTA_RULE, "naive", example, **overrides), tol, label)
    return actual


@pytest.mark.parametrize("case", ["gated", "ungated"])
@pytest.mark.parametrize("T", [1, 63, 64, 65, 100])
def test_chunk_kernels_match_naive(launcher, T, case):
    """Forward, final state and every gradient; 65 and 100 cross a chunk boundary."""
    example = make_inputs(T, heads=1 if T > 64 else 2, value_dim=32, case=case)
    check_kernels(example, label=f"T={T} {case}")


def test_several_chunks_and_value_tiles(launcher):
    """Three chunks, a batch of two, and value and key widths that are not powers of two
    (value tiles of 32 and key blocks of 64, each with a partial last one)."""
    check_kernels(make_inputs(150, batch=2, heads=1, key_dim=72, value_dim=40), label="T=150")


@pytest.mark.parametrize(
    "apart", [["outputs"], ["intra_gradient"], ["outputs", "intra_gradient"]], ids="+".join
)
def test_intra_chunk_work_apart_from_the_walks(launcher, apart, monkeypatch):
    """The forward's outputs and the backward's (Q Kᵀ ⊙ e)ᵀ dO by their own per-chunk
    kernels instead of inside the walks over chunks: the same results."""
    for part in apart:
        monkeypatch.setitem(launcher.WALK_FUSES, part, False)
    check_kernels(
        make_inputs(150, batch=2, heads=1, key_dim=72, value_dim=40), label=f"apart={apart}"
    )
    check_kernels(make_inputs(20, case="ungated"), label=f"ungated apart={apart}")


@pytest.mark.parametrize("value", [0.0, 1.0, 2.0])
def test_beta_at_the_edges(launcher, value):
    """β = 0 (no write), 1 (replace) and 2 (reflection: eigenvalue −1)."""
    example = make_inputs(70, heads=1)
    check_kernels(
        replaced(example, beta=torch.full_like(example.kwargs["beta"], value)),
        label=f"beta={value}",
    )


@pytest.mark.parametrize("value", [1.0, 2.0])
def test_one_key_for_every_step(launcher, value):
    """The same key at every step: the triangular system's coefficients are all β, the case
    where an inverse built from powers of A would cancel huge terms."""
    example = make_inputs(70, heads=1)
    k = example.args[1]
    example = replaced(
        example,
        k=k[:, :1].expand_as(k).contiguous(),
        beta=torch.full_like(example.kwargs["beta"], value),
    )
    check_kernels(example, label=f"one key, beta={value}")


def with_resets(example, steps):
    g = example.kwargs["g"].detach().clone()
    g[:, steps] = float("-inf")
    return replaced(example, g=g)


def test_strong_gates_and_resets(launcher):
    """About -16 per step, and -inf (a full reset) at the first step, inside chunks and at
    chunk edges."""
    example = with_resets(make_inputs(80, strength=20.0), [0, 15, 40, 63, 64, 79])
    actual = check_kernels(example, label="strong")
    for name, x in actual.items():
        assert torch.isfinite(x).all(), f"{name} is not finite"


def test_extreme_inputs_stay_finite(launcher):
    """Gates of about -400 per step and values x100 with β = 2."""
    example = make_inputs(70, heads=1, strength=500.0)
    v = example.args[2]
    example = replaced(example, v=v * 100, beta=torch.full_like(example.kwargs["beta"], 2.0))
    actual = check_kernels(example, label="extreme")
    for name, x in actual.items():
        assert torch.isfinite(x).all(), f"{name} is not finite"


@pytest.mark.parametrize("strength", [4.0, 20.0])
def test_decays_keep_float32_accuracy(launcher, strength):
    """About -3 and -16 per step (resets included at -16): the decays between steps are
    differences of running sums taken with the sums' rounding errors, and the gate's
    gradient is summed route by route, so nothing loses digits to the size of the sums
    (bare differences and rows-minus-columns sums left 1.5e-6 and 3.6e-5 in dg here)."""
    example = make_inputs(150, key_dim=32, value_dim=32, strength=strength)
    if strength > 10:
        example = with_resets(example, [0, 15, 40, 63, 64, 79, 130])
    check_kernels(example, tol=1e-6, label=f"strength={strength}")


def test_without_initial_or_final_state(launcher):
    """No initial state to read, no final state asked for (its gradient is then zero)."""
    example = make_inputs(70)
    q, k, v = example.args
    beta, g = example.kwargs["beta"], example.kwargs["g"]
    leaves = [x.detach().float().requires_grad_() for x in (q, k, v, beta, g)]
    with poisoned_allocations():
        o, ht = triton_delta_rule(*leaves[:3], beta=leaves[3], g=leaves[4])
        assert ht is None
        actual = grads(weighted_sum(o), leaves)
    ref = [x.detach().requires_grad_() for x in (q, k, v, beta, g)]
    ref_o, _ = naive_delta_rule(*ref[:3], beta=ref[3], g=ref[4])
    assert_close("o", o, ref_o, TOL_FLOAT32)
    for name, a, e in zip(
        ["dq", "dk", "dv", "dbeta", "dg"], actual, grads(weighted_sum(ref_o), ref), strict=True
    ):
        assert_close(name, a, e, TOL_FLOAT32)


@pytest.mark.parametrize("fused", [True, False], ids=["fused walks", "work apart"])
def test_packed_sequences_on_chunk_boundaries(launcher, fused, monkeypatch):
    """Lengths 0, 64, 1, 130, 0, 63 and 65: sequences of whole chunks, and empty ones first
    and last, each from its own state, with either schedule of the walks."""
    monkeypatch.setitem(launcher.WALK_FUSES, "outputs", fused)
    monkeypatch.setitem(launcher.WALK_FUSES, "intra_gradient", fused)
    lengths = torch.tensor([0, 64, 1, 130, 0, 63, 65])
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    example = make_inputs(int(cu_seqlens[-1]), heads=1)
    example.kwargs["initial_state"] = make_inputs(1, batch=len(lengths), heads=1, seed=1).kwargs[
        "initial_state"
    ]
    check_kernels(example, label=f"packed fused={fused}", cu_seqlens=cu_seqlens)


def test_no_steps_pass_the_states_through(launcher):
    """T = 0, and a packed batch of empty sequences: no launch, the states as they came."""
    example = cast(make_inputs(0, batch=2), torch.float32)
    q, k, v = example.args
    beta, g, h0 = (example.kwargs[name] for name in ("beta", "g", "initial_state"))
    o, ht = triton_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert o.shape == (2, 0, 2, 16) and torch.equal(ht, h0)
    ht.sum().backward()
    assert torch.equal(h0.grad, torch.ones_like(h0))
    o, ht = triton_delta_rule(
        q[:1],
        k[:1],
        v[:1],
        beta=beta[:1],
        g=g[:1],
        cu_seqlens=torch.tensor([0, 0]),
        output_final_state=True,
    )
    assert o.shape == (1, 0, 2, 16) and ht.shape == (1, 2, 16, 16) and not ht.any()


@pytest.mark.parametrize(
    "dtype, tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)], ids=["bf16", "fp16"]
)
def test_16_bit_inputs_close_to_float64(launcher, dtype, tol):
    """Results in the inputs' dtype (the final state in float32), within the inputs' rounding."""
    actual = check_kernels(make_inputs(70), tol=tol, label=str(dtype), dtype=dtype)
    for name, x in actual.items():
        assert x.dtype == (torch.float32 if name.startswith("final_state") else dtype), name


def _round_to_tf32(x):
    """float32 -> the nearest TF32 value (10 mantissa bits, ties to even), as float32."""
    import numpy as np

    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    bias = ((bits >> np.uint32(13)) & np.uint32(1)) + np.uint32(0x0FFF)
    return ((bits + bias) & np.uint32(0xFFFFE000)).view(np.float32)


@pytest.fixture
def tf32_products(monkeypatch):
    """The interpreter multiplies in full float32 whatever precision a product asks for;
    inside this fixture it rounds like a GPU: TF32 operands for "tf32", and the three
    TF32 products hi·hi + hi·lo + lo·hi for "tf32x3"."""
    import numpy as np
    import triton.runtime.interpreter as interpreter
    from triton._C.libtriton import ir

    def create_dot(self, a, b, acc, input_precision, max_num_imprecise_acc):
        x, y = a.data.astype(np.float32), b.data.astype(np.float32)
        if input_precision == ir.INPUT_PRECISION.TF32:
            product = np.matmul(_round_to_tf32(x), _round_to_tf32(y))
        elif input_precision == ir.INPUT_PRECISION.TF32x3:
            x_hi, y_hi = _round_to_tf32(x), _round_to_tf32(y)
            x_lo, y_lo = _round_to_tf32(x - x_hi), _round_to_tf32(y - y_hi)
            product = np.matmul(x_hi, y_hi) + (np.matmul(x_hi, y_lo) + np.matmul(x_lo, y_hi))
        else:
            product = np.matmul(x, y)
        return interpreter.TensorHandle(product.astype(acc.data.dtype) + acc.data, acc.dtype.scalar)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)


def test_tf32_products_keep_the_tolerances(launcher, tf32_products):
    """With the device's roundings: TF32x3 keeps float32 inputs within the float32
    tolerance (plain TF32 would leave about 4e-4), and TF32 keeps bfloat16 inputs within 3e-2."""
    example = make_inputs(70, key_dim=32, value_dim=32)
    check_kernels(example, label="tf32x3")
    check_kernels(example, tol=3e-2, label="bf16 tf32", dtype=torch.bfloat16)


def test_float64_inputs_give_float64_results(launcher):
    """The kernels compute in float32: float64 inputs are rounded once on the way in."""
    example = make_inputs(20)
    o, ht = triton_delta_rule(*example.args, **example.kwargs, output_final_state=True)
    assert o.dtype == ht.dtype == torch.float64
    ref_o, ref_ht = naive_delta_rule(*example.args, **example.kwargs, output_final_state=True)
    assert_close("o", o, ref_o, TOL_FLOAT32)
    assert_close("final_state", ht, ref_ht, TOL_FLOAT32)


def test_head_width_limit_named(launcher):
    wide = torch.randn(1, 2, 1, 512)
    for form in (triton_delta_rule, triton_delta_rule_recurrent):
        with pytest.raises(ValueError, match="head widths up to 256; got K = 512"):
            form(wide, wide, wide[..., :8], beta=torch.ones(1, 2, 1))


def detached(example: Example, dtype=torch.float32) -> list:
    """q, k, v, β, g and the initial state in `dtype`, without gradients (decoding)."""
    q, k, v = example.args
    values = (q, k, v, *(example.kwargs[name] for name in ("beta", "g", "initial_state")))
    return [None if x is None else x.detach().to(dtype) for x in values]


@pytest.mark.parametrize("case", ["gated", "ungated"])
def test_recurrent_kernel_matches_naive(launcher, case):
    """Forty steps in one call, with a partial value tile (V = 48)."""
    example = make_inputs(40, batch=2, key_dim=32, value_dim=48, case=case)
    q, k, v, beta, g, h0 = detached(example)
    with poisoned_allocations():
        o, ht = triton_delta_rule_recurrent(
            q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True
        )
    ref_o, ref_ht = naive_delta_rule(*example.args, **example.kwargs, output_final_state=True)
    assert_close("o", o, ref_o, TOL_FLOAT32)
    assert_close("final_state", ht, ref_ht, TOL_FLOAT32)


def test_recurrent_kernel_on_packed_sequences(launcher):
    """Packed sequences (one of them empty) restart from their own states."""
    example = make_inputs(10, key_dim=32, value_dim=48)
    example.kwargs["initial_state"] = make_inputs(
        1, batch=3, key_dim=32, value_dim=48, seed=1
    ).kwargs["initial_state"]
    cu_seqlens = torch.tensor([0, 3, 3, 10])
    q, k, v, beta, g, h0 = detached(example)
    with poisoned_allocations():
        o, ht = triton_delta_rule_recurrent(
            q,
            k,
            v,
            beta=beta,
            g=g,
            initial_state=h0,
            output_final_state=True,
            cu_seqlens=cu_seqlens,
        )
    ref_o, ref_ht = naive_delta_rule(
        *example.args, **example.kwargs, output_final_state=True, cu_seqlens=cu_seqlens
    )
    assert_close("packed o", o, ref_o, TOL_FLOAT32)
    assert_close("packed state", ht, ref_ht, TOL_FLOAT32)


def test_recurrent_float64_and_bfloat16(launcher):
    example = make_inputs(16, batch=2, key_dim=32, value_dim=48)
    q, k, v, beta, g, h0 = detached(example, torch.float64)
    o, ht = triton_delta_rule_recurrent(
        q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True
    )
    assert o.dtype == ht.dtype == torch.float64
    ref_o, _ = naive_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0)
    assert_close("float64 o", o, ref_o, TOL_FLOAT32)
    bf16 = lambda x: x.bfloat16()  # noqa: E731
    o, _ = triton_delta_rule_recurrent(
        bf16(q), bf16(k), bf16(v), beta=bf16(beta), g=bf16(g), initial_state=h0.float()
    )
    assert o.dtype == torch.bfloat16
    assert_close("bf16 o", o, ref_o, 3e-2)


def test_recurrent_kernel_refuses_gradients(launcher):
    q, k, v, beta, g, _ = detached(make_inputs(4))
    with pytest.raises(ValueError, match="computes no gradients"):
        triton_delta_rule_recurrent(q.requires_grad_(), k, v, beta=beta, g=g)


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet", "mom"])
def test_layers_run_the_kernels(launcher, name, monkeypatch):
    """The delta layers with impl="triton" (float32) give the outputs, state and parameter
    gradients of the chunk form in float64 (MoM through packed sequences)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    actual, expected = triton_and_chunk_layer(name, num_heads=2, allow_neg_eigval=True)
    for key in expected:
        assert_close(f"{name} {key}", actual[key], expected[key], 1e-5)
