"""The delta rule's Triton kernels in Triton's interpreter on the CPU, against the float64
naive loop: the chunkwise training kernels (forward and every gradient) and the decoding
kernel.

Small sizes: the interpreter runs every program in Python; tests/gpu runs the same checks
at full size on a GPU. Every buffer the kernels allocate is filled with NaN first, so an
element a kernel forgets to write fails the comparison.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from recur.ops.delta import delta_rule, naive_delta_rule
from tests.helpers import (
    assert_close,
    grads,
    interpreted_kernels,
    triton_and_chunk_layer,
    weighted_sum,
)
from tests.ops.test_gla_triton import poisoned_allocations

pytest.importorskip("triton")

NAMES = ["o", "final_state", "dq", "dk", "dv", "dbeta", "dg", "dh0"]
# float32 kernels against the float64 loop: rounding of float32 products and sums
TOL_FLOAT32 = 2e-5


@pytest.fixture(scope="module")
def kernels():
    """The kernel module in Triton's interpreter."""
    with interpreted_kernels("recur.ops.delta.triton") as module:
        yield module


def make_inputs(T, B=2, H=2, K=32, V=48, gated=True, strength=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    # β in [0, 2]: negative eigenvalues included
    beta = 2 * torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    g = F.logsigmoid(torch.randn(B, T, H, generator=gen, dtype=torch.float64)) * strength if gated else None
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64)
    return q, k, v, beta, g, h0


def run(form, q, k, v, beta, g, h0, dtype=torch.float64, **kwargs):
    """Outputs, final state and the gradients of q, k, v, β, g and the initial state."""
    leaves = [None if x is None else x.detach().to(dtype).requires_grad_() for x in (q, k, v, beta, g, h0)]
    o, ht = form(*leaves[:3], beta=leaves[3], g=leaves[4], initial_state=leaves[5], output_final_state=True, **kwargs)
    return [o, ht, *grads(weighted_sum(o, ht), leaves)]


def run_kernel(kernels, *inputs, dtype=torch.float32, **kwargs):
    with poisoned_allocations():
        return run(kernels.triton_delta_rule, *inputs, dtype=dtype, **kwargs)


def compare(actual, expected, tol, label, skip=()):
    for name, a, e in zip(NAMES, actual, expected):
        if name in skip:
            continue
        if e is None:
            assert a is None, f"{label} {name}: expected no gradient"
            continue
        assert_close(f"{label} {name}", a, e, tol)


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "ungated"])
@pytest.mark.parametrize("T", [1, 63, 64, 65, 100])
def test_chunk_kernels_match_naive(kernels, T, gated):
    """Forward, final state and every gradient; 65 and 100 cross a chunk boundary."""
    inputs = make_inputs(T, B=1, H=1 if T > 64 else 2, K=16, V=32, gated=gated)
    compare(run_kernel(kernels, *inputs), run(naive_delta_rule, *inputs), TOL_FLOAT32, f"T={T} gated={gated}")


def test_several_chunks_and_value_tiles(kernels):
    """Three chunks, a batch of two, and value and key widths that are not powers of two
    (value tiles of 32 and key blocks of 64, each with a partial last one)."""
    inputs = make_inputs(150, B=2, H=1, K=72, V=40)
    compare(run_kernel(kernels, *inputs), run(naive_delta_rule, *inputs), TOL_FLOAT32, "T=150")



@pytest.mark.parametrize("apart", [["outputs"], ["intra_gradient"], ["outputs", "intra_gradient"]], ids="+".join)
def test_intra_chunk_work_apart_from_the_walks(kernels, apart, monkeypatch):
    """The forward's outputs and the backward's (Q Kᵀ ⊙ e)ᵀ dO by their own per-chunk
    kernels instead of inside the walks over chunks: the same results."""
    for part in apart:
        monkeypatch.setitem(kernels.WALK_FUSES, part, False)
    inputs = make_inputs(150, B=2, H=1, K=72, V=40)
    compare(run_kernel(kernels, *inputs), run(naive_delta_rule, *inputs), TOL_FLOAT32, f"apart={apart}")
    inputs = make_inputs(20, B=1, H=2, K=16, V=16, gated=False)
    compare(run_kernel(kernels, *inputs), run(naive_delta_rule, *inputs), TOL_FLOAT32, f"ungated apart={apart}")

@pytest.mark.parametrize("value", [0.0, 1.0, 2.0])
def test_beta_at_the_edges(kernels, value):
    """β = 0 (no write), 1 (replace) and 2 (reflection: eigenvalue −1)."""
    q, k, v, beta, g, h0 = make_inputs(70, B=1, H=1, K=16, V=16)
    beta = torch.full_like(beta, value)
    compare(
        run_kernel(kernels, q, k, v, beta, g, h0), run(naive_delta_rule, q, k, v, beta, g, h0),
        TOL_FLOAT32, f"beta={value}",
    )


@pytest.mark.parametrize("value", [1.0, 2.0])
def test_one_key_for_every_step(kernels, value):
    """The same key at every step: the triangular system's coefficients are all β, the case
    where an inverse built from powers of A would cancel huge terms."""
    q, k, v, beta, g, h0 = make_inputs(70, B=1, H=1, K=16, V=16)
    k = k[:, :1].expand_as(k).contiguous()
    beta = torch.full_like(beta, value)
    compare(
        run_kernel(kernels, q, k, v, beta, g, h0), run(naive_delta_rule, q, k, v, beta, g, h0),
        TOL_FLOAT32, f"one key, beta={value}",
    )


def test_strong_gates_and_resets(kernels):
    """About -20 per step, and -inf (a full reset) at the first step, inside chunks and at
    chunk edges."""
    q, k, v, beta, g, h0 = make_inputs(80, B=1, K=16, V=16, strength=20.0)
    g = g.clone()
    g[:, [0, 15, 40, 63, 64, 79]] = float("-inf")
    actual, expected = run_kernel(kernels, q, k, v, beta, g, h0), run(naive_delta_rule, q, k, v, beta, g, h0)
    for name, x in zip(NAMES, actual):
        assert torch.isfinite(x).all(), f"{name} is not finite"
    compare(actual, expected, TOL_FLOAT32, "strong")


def test_extreme_inputs_stay_finite(kernels):
    """Gates of about -500 per step and values x100 with β = 2."""
    q, k, v, beta, g, h0 = make_inputs(70, B=1, H=1, K=16, V=16, strength=500.0)
    v, beta = v * 100, torch.full_like(beta, 2.0)
    actual = run_kernel(kernels, q, k, v, beta, g, h0)
    for name, x in zip(NAMES, actual):
        assert torch.isfinite(x).all(), f"{name} is not finite"
    compare(actual, run(naive_delta_rule, q, k, v, beta, g, h0), TOL_FLOAT32, "extreme")


@pytest.mark.parametrize("strength", [4.0, 20.0])
def test_decays_keep_float32_accuracy(kernels, strength):
    """About -3 and -16 per step (resets included at -16): the decays between steps are
    differences of running sums taken with the sums' rounding errors, and the gate's
    gradient is summed route by route, so nothing loses digits to the size of the sums
    (bare differences and rows-minus-columns sums left 1.5e-6 and 3.6e-5 in dg here)."""
    q, k, v, beta, g, h0 = make_inputs(150, B=1, K=32, V=32, strength=strength)
    if strength > 10:
        g = g.clone()
        g[:, [0, 15, 40, 63, 64, 79, 130]] = float("-inf")
    actual, expected = run_kernel(kernels, q, k, v, beta, g, h0), run(naive_delta_rule, q, k, v, beta, g, h0)
    compare(actual, expected, 1e-6, f"strength={strength}")


def test_without_initial_or_final_state(kernels):
    q, k, v, beta, g, _ = make_inputs(70, B=1, K=16, V=16)
    leaves = [x.float().requires_grad_() for x in (q, k, v, beta, g)]
    with poisoned_allocations():
        o, ht = kernels.triton_delta_rule(*leaves[:3], beta=leaves[3], g=leaves[4])
        assert ht is None
        actual = grads(weighted_sum(o), leaves)
    ref = [x.detach().requires_grad_() for x in (q, k, v, beta, g)]
    ref_o, _ = naive_delta_rule(*ref[:3], beta=ref[3], g=ref[4])
    assert_close("o", o, ref_o, TOL_FLOAT32)
    for name, a, e in zip(["dq", "dk", "dv", "dbeta", "dg"], actual, grads(weighted_sum(ref_o), ref)):
        assert_close(name, a, e, TOL_FLOAT32)


def test_packed_sequences_match_separate_ones(kernels):
    """Packed sequences of lengths 5, 0, 70 and 20 from their own initial states: the same
    outputs, final states and gradients as each sequence on its own."""
    cu_seqlens = torch.tensor([0, 5, 5, 75, 95])
    q, k, v, beta, g, _ = make_inputs(95, B=1, H=1, K=16, V=16)
    h0 = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    actual = run_kernel(kernels, q, k, v, beta, g, h0, cu_seqlens=cu_seqlens)
    compare(actual, run(naive_delta_rule, q, k, v, beta, g, h0, cu_seqlens=cu_seqlens), TOL_FLOAT32, "packed")
    for n in range(4):
        start, end = int(cu_seqlens[n]), int(cu_seqlens[n + 1])
        piece = [x[:, start:end] for x in (q, k, v, beta, g)]
        o, ht = naive_delta_rule(*piece[:3], beta=piece[3], g=piece[4], initial_state=h0[n : n + 1], output_final_state=True)
        if end > start:
            assert_close(f"sequence {n} o", actual[0][:, start:end], o, TOL_FLOAT32)
        assert_close(f"sequence {n} state", actual[1][n : n + 1], ht, TOL_FLOAT32)



@pytest.mark.parametrize("fused", [True, False], ids=["fused walks", "work apart"])
def test_packed_sequences_on_chunk_boundaries(kernels, fused, monkeypatch):
    """Lengths 0, 64, 1, 130, 0, 63 and 65: sequences of whole chunks, and empty ones first
    and last, each from its own state, with either schedule of the walks."""
    monkeypatch.setitem(kernels.WALK_FUSES, "outputs", fused)
    monkeypatch.setitem(kernels.WALK_FUSES, "intra_gradient", fused)
    lengths = torch.tensor([0, 64, 1, 130, 0, 63, 65])
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    q, k, v, beta, g, _ = make_inputs(int(cu_seqlens[-1]), B=1, H=1, K=16, V=16)
    h0 = torch.randn(len(lengths), 1, 16, 16, dtype=torch.float64)
    actual = run_kernel(kernels, q, k, v, beta, g, h0, cu_seqlens=cu_seqlens)
    compare(actual, run(naive_delta_rule, q, k, v, beta, g, h0, cu_seqlens=cu_seqlens), TOL_FLOAT32, f"packed fused={fused}")

def test_no_steps_pass_the_states_through(kernels):
    """T = 0, and a packed batch of empty sequences: no launch, the states as they came."""
    q, k, v, beta, g, h0 = (x.float() for x in make_inputs(0, B=2, K=16, V=16))
    h0.requires_grad_()
    o, ht = kernels.triton_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert o.shape == (2, 0, 2, 16) and torch.equal(ht, h0)
    ht.sum().backward()
    assert torch.equal(h0.grad, torch.ones_like(h0))
    o, ht = kernels.triton_delta_rule(q[:1], k[:1], v[:1], beta=beta[:1], g=g[:1], cu_seqlens=torch.tensor([0, 0]), output_final_state=True)
    assert o.shape == (1, 0, 2, 16) and ht.shape == (1, 2, 16, 16) and not ht.any()

@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)], ids=["bf16", "fp16"])
def test_16_bit_inputs_close_to_float64(kernels, dtype, tol):
    """Results in the inputs' dtype (the final state in float32), within the inputs' rounding."""
    inputs = make_inputs(70, B=1, K=16, V=16)
    actual = run_kernel(kernels, *inputs, dtype=dtype)
    for name, a, e in zip(NAMES, actual, run(naive_delta_rule, *inputs)):
        assert a.dtype == (torch.float32 if name == "final_state" else dtype), name
        assert_close(f"{dtype} {name}", a, e, tol)


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


def test_tf32_products_keep_the_tolerances(kernels, tf32_products):
    """With the device's roundings: TF32x3 keeps float32 inputs within the float32
    tolerance (plain TF32 would leave about 4e-4), and TF32 keeps bfloat16 inputs within 3e-2."""
    inputs = make_inputs(70, B=1, K=32, V=32)
    expected = run(naive_delta_rule, *inputs)
    compare(run_kernel(kernels, *inputs), expected, TOL_FLOAT32, "tf32x3")
    compare(run_kernel(kernels, *inputs, dtype=torch.bfloat16), expected, 3e-2, "bf16 tf32")


def test_float64_inputs_give_float64_results(kernels):
    """The kernels compute in float32: float64 inputs are rounded once on the way in."""
    q, k, v, beta, g, h0 = make_inputs(20, B=1, K=16, V=16)
    o, ht = kernels.triton_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert o.dtype == ht.dtype == torch.float64
    ref_o, ref_ht = naive_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert_close("o", o, ref_o, TOL_FLOAT32)
    assert_close("final_state", ht, ref_ht, TOL_FLOAT32)


def test_dispatch_and_signature(kernels, monkeypatch):
    reference = inspect.signature(naive_delta_rule)
    assert inspect.signature(kernels.triton_delta_rule) == reference
    assert inspect.signature(kernels.triton_delta_rule_recurrent) == reference
    q, k, v, beta, g, _ = make_inputs(20, B=1, K=16, V=16)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    o, _ = delta_rule(q.float(), k.float(), v.float(), beta=beta.float(), g=g.float(), impl="triton")
    assert_close("impl=triton", o, naive_delta_rule(q, k, v, beta=beta, g=g)[0], TOL_FLOAT32)


def test_head_width_limit_named(kernels):
    wide = torch.randn(1, 2, 1, 512)
    with pytest.raises(ValueError, match="head widths up to 256; got K = 512"):
        kernels.triton_delta_rule(wide, wide, wide[..., :8], beta=torch.ones(1, 2, 1))


@pytest.mark.parametrize("gated", [True, False])
def test_recurrent_kernel_matches_naive(kernels, gated):
    q, k, v, beta, g, h0 = make_inputs(40, gated=gated)
    f32 = lambda x: None if x is None else x.float()  # noqa: E731
    with poisoned_allocations():
        o, ht = kernels.triton_delta_rule_recurrent(
            f32(q), f32(k), f32(v), beta=f32(beta), g=f32(g), initial_state=f32(h0), output_final_state=True
        )
    ref_o, ref_ht = naive_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert_close("o", o, ref_o, TOL_FLOAT32)
    assert_close("final_state", ht, ref_ht, TOL_FLOAT32)


def test_decoding_steps_and_packed(kernels):
    """One step at a time equals one call; packed sequences restart from their own states."""
    q, k, v, beta, g, h0 = (x.float() for x in make_inputs(10))
    state, outputs = h0, []
    for t in range(10):
        step = slice(t, t + 1)
        o_t, state = kernels.triton_delta_rule_recurrent(
            q[:, step], k[:, step], v[:, step], beta=beta[:, step], g=g[:, step], initial_state=state, output_final_state=True
        )
        outputs.append(o_t)
    ref_o, ref_ht = naive_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert_close("steps o", torch.cat(outputs, 1), ref_o, TOL_FLOAT32)
    assert_close("steps state", state, ref_ht, TOL_FLOAT32)

    cu_seqlens = torch.tensor([0, 3, 3, 10])
    h0_packed = torch.randn(3, 2, 32, 48)
    with poisoned_allocations():
        o, ht = kernels.triton_delta_rule_recurrent(
            q[:1], k[:1], v[:1], beta=beta[:1], g=g[:1], initial_state=h0_packed, output_final_state=True, cu_seqlens=cu_seqlens
        )
    ref_o, ref_ht = naive_delta_rule(
        q[:1], k[:1], v[:1], beta=beta[:1], g=g[:1], initial_state=h0_packed, output_final_state=True, cu_seqlens=cu_seqlens
    )
    assert_close("packed o", o, ref_o, TOL_FLOAT32)
    assert_close("packed state", ht, ref_ht, TOL_FLOAT32)


def test_recurrent_float64_and_bfloat16(kernels):
    q, k, v, beta, g, h0 = make_inputs(16)
    o, ht = kernels.triton_delta_rule_recurrent(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert o.dtype == ht.dtype == torch.float64
    ref_o, ref_ht = naive_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert_close("float64 o", o, ref_o, TOL_FLOAT32)
    bf16 = lambda x: x.bfloat16()  # noqa: E731
    o, _ = kernels.triton_delta_rule_recurrent(bf16(q), bf16(k), bf16(v), beta=bf16(beta), g=bf16(g), initial_state=h0.float())
    assert o.dtype == torch.bfloat16
    assert_close("bf16 o", o, ref_o, 3e-2)


def test_recurrent_kernel_refuses_gradients(kernels):
    q, k, v, beta, g, _ = (x.float() for x in make_inputs(4))
    with pytest.raises(ValueError, match="computes no gradients"):
        kernels.triton_delta_rule_recurrent(q.requires_grad_(), k, v, beta=beta, g=g)
    wide = torch.randn(1, 2, 1, 512)
    with pytest.raises(ValueError, match="head widths up to 256; got K = 512"):
        kernels.triton_delta_rule_recurrent(wide, wide, wide[..., :8], beta=torch.ones(1, 2, 1))


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet", "mom"])
def test_layers_run_the_kernels(kernels, name, monkeypatch):
    """The delta layers with impl="triton" (float32) give the outputs, state and parameter
    gradients of the chunk form in float64 (MoM through packed sequences)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    actual, expected = triton_and_chunk_layer(name, num_heads=2, allow_neg_eigval=True)
    for key in expected:
        assert_close(f"{name} {key}", actual[key], expected[key], 1e-5)
