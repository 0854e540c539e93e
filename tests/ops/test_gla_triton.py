"""GLA Triton kernels in Triton's interpreter on the CPU, against the float64 naive loop.

Sizes stay small because the interpreter runs every program in Python; tests/gpu runs the
same checks at full size on a GPU. Every buffer the kernels allocate is filled with NaN
first, so an element a kernel forgets to write fails the comparison.
"""

from __future__ import annotations

import contextlib
import inspect

import pytest
import torch
import torch.nn.functional as F

from recur.ops.gla import GLA, gla, naive_gla
from tests.helpers import (
    assert_close,
    grads,
    interpreted_kernels,
    triton_and_chunk_layer,
    weighted_sum,
)

pytest.importorskip("triton")

NAMES = ["o", "final_state", "dq", "dk", "dv", "dg", "dh0"]
# float32 kernels against the float64 loop: rounding of float32 products and sums
TOL_FLOAT32 = 2e-5


@pytest.fixture(scope="module")
def launcher():
    """The launch module (launch settings, autograd, forms), its kernels in Triton's
    interpreter."""
    with interpreted_kernels("recur.ops.gla.triton") as module:
        yield module


@contextlib.contextmanager
def poisoned_allocations():
    """torch.empty and torch.empty_like return NaN-filled tensors inside the block."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    torch.empty = lambda *a, **kw: poison(empty(*a, **kw))
    torch.empty_like = lambda *a, **kw: poison(empty_like(*a, **kw))
    try:
        yield
    finally:
        torch.empty, torch.empty_like = empty, empty_like


def make_inputs(T, gate, B=1, H=2, K=32, V=16, strength=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    k = torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    v = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    shape = {"scalar": (B, T, H), "vector": (B, T, H, K)}.get(gate)
    g = None if shape is None else F.logsigmoid(torch.randn(*shape, generator=gen, dtype=torch.float64)) * strength
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64)
    return q, k, v, g, h0


def run(form, q, k, v, g, h0, dtype=torch.float64, **kwargs):
    leaves = [None if x is None else x.detach().to(dtype).requires_grad_() for x in (q, k, v, g, h0)]
    o, ht = form(*leaves[:3], g=leaves[3], initial_state=leaves[4], output_final_state=True, **kwargs)
    return [o, ht, *grads(weighted_sum(o, ht), leaves)]


def run_kernel(launcher, *inputs, dtype=torch.float32, **kwargs):
    with poisoned_allocations():
        return run(GLA.forms["triton"], *inputs, dtype=dtype, **kwargs)


def compare(actual, expected, tol, label):
    for name, a, e in zip(NAMES, actual, expected):
        if e is None:
            assert a is None, f"{label} {name}: expected no gradient"
            continue
        assert_close(f"{label} {name}", a, e, tol)


@pytest.mark.parametrize(
    "T, gate",
    [(1, "vector"), (37, "vector"), (64, "vector"), (130, "vector"), (37, "scalar"), (130, "scalar"), (50, "none")],
)
def test_matches_naive(launcher, T, gate):
    """Forward, final state and every gradient; 130 steps cross two chunk boundaries."""
    inputs = make_inputs(T, gate, H=1 if T > 64 else 2)
    compare(run_kernel(launcher, *inputs), run(naive_gla, *inputs), TOL_FLOAT32, f"T={T} gate={gate}")


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_weak_gates_take_the_whole_chunk_path(launcher, gate):
    """Chunks whose total log decay stays above -FAST_SPAN are done as one product."""
    inputs = make_inputs(130, gate, H=1, strength=0.1)
    assert inputs[3].sum(1).min() > -launcher.kernels.FAST_SPAN
    compare(run_kernel(launcher, *inputs), run(naive_gla, *inputs), TOL_FLOAT32, f"weak gate={gate}")


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_strong_gates_and_resets(launcher, gate):
    """About -20 per step, and -inf (a full reset) at chunk and sub-chunk edges."""
    q, k, v, g, h0 = make_inputs(80, gate, H=1, strength=20.0)
    g = g.clone()
    g[:, [0, 15, 16, 40, 64, 79]] = float("-inf")
    actual, expected = run_kernel(launcher, q, k, v, g, h0), run(naive_gla, q, k, v, g, h0)
    compare(actual[:5] + actual[6:], expected[:5] + expected[6:], TOL_FLOAT32, f"gate={gate}")
    # chunk sums of clamped resets reach about -2000, whose float32 differences keep 5 digits
    assert_close(f"gate={gate} dg", actual[5], expected[5], 1e-4)


def test_extreme_gates_stay_finite(launcher):
    q, k, v, g, h0 = make_inputs(48, "vector", strength=500.0)
    q, k, v = q * 100, k * 100, v * 100
    out = run_kernel(launcher, q, k, v, g, h0)
    for name, x in zip(NAMES, out):
        assert torch.isfinite(x).all(), f"{name} is not finite"
    expected = run(naive_gla, q, k, v, g, h0)
    compare(out[:5] + out[6:], expected[:5] + expected[6:], TOL_FLOAT32, "extreme")
    # The gate's gradient sums q ⊙ dq - k ⊙ dk over the future; with decays below exp(-100)
    # the true value is far below the float32 rounding of those sums (about 1e-7 of them).
    assert_close("extreme dg", out[5], expected[5], 5e-2)


def test_without_initial_or_final_state(launcher):
    q, k, v, g, _ = make_inputs(40, "vector")
    with poisoned_allocations():
        o, ht = GLA.forms["triton"](q.float(), k.float(), v.float(), g=g.float())
    assert ht is None
    assert_close("o", o, naive_gla(q, k, v, g=g)[0], TOL_FLOAT32)


def test_packed_sequences(launcher):
    """Packed sequences of lengths 5, 0, 70 and 20 from their own initial states."""
    cu_seqlens = torch.tensor([0, 5, 5, 75, 95])
    q, k, v, g, _ = make_inputs(95, "vector", H=1)
    h0 = torch.randn(4, 1, 32, 16, dtype=torch.float64)
    compare(
        run_kernel(launcher, q, k, v, g, h0, cu_seqlens=cu_seqlens),
        run(naive_gla, q, k, v, g, h0, cu_seqlens=cu_seqlens),
        TOL_FLOAT32, "packed",
    )


@pytest.mark.parametrize("gate, strength", [("vector", 0.1), ("vector", 20.0), ("scalar", 3.0)])
def test_packed_sequences_on_chunk_boundaries(launcher, gate, strength):
    """Lengths 0, 64, 1, 130, 0, 63 and 65: sequences of whole chunks, empty ones first and
    last, and chunks of both kinds (weak and strong decays), each from its own state."""
    lengths = torch.tensor([0, 64, 1, 130, 0, 63, 65])
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    q, k, v, g, _ = make_inputs(int(cu_seqlens[-1]), gate, H=1, strength=strength)
    h0 = torch.randn(len(lengths), 1, 32, 16, dtype=torch.float64)
    actual = run_kernel(launcher, q, k, v, g, h0, cu_seqlens=cu_seqlens)
    expected = run(naive_gla, q, k, v, g, h0, cu_seqlens=cu_seqlens)
    compare(actual, expected, 1e-4 if strength > 10 else TOL_FLOAT32, f"packed gate={gate} strength={strength}")


def test_packed_signed_decays_without_states(launcher):
    cu_seqlens = torch.tensor([0, 70, 71, 200])
    q, k, v, g, _ = make_inputs(200, "scalar", H=2, strength=0.5)
    sign = torch.where(torch.rand(g.shape, generator=torch.Generator().manual_seed(3)) < 0.5, -1.0, 1.0).double()
    leaves = [x.float().requires_grad_() for x in (q, k, v, g)]
    with poisoned_allocations():
        o, ht = GLA.forms["triton"](*leaves[:3], g=leaves[3], cu_seqlens=cu_seqlens, decay_sign=sign.float())
    assert ht is None
    ref_leaves = [x.clone().requires_grad_() for x in (q, k, v, g)]
    ref, _ = naive_gla(*ref_leaves[:3], g=ref_leaves[3], cu_seqlens=cu_seqlens, decay_sign=sign)
    assert_close("o", o, ref, TOL_FLOAT32)
    weights = torch.randn(ref.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    (o * weights.float()).sum().backward()
    (ref * weights).sum().backward()
    for name, a, e in zip(["dq", "dk", "dv", "dg"], leaves, ref_leaves):
        assert_close(name, a.grad, e.grad, TOL_FLOAT32)


def test_no_steps_pass_the_states_through(launcher):
    """T = 0, and a packed batch of empty sequences: no launch, the states as they came."""
    q, k, v, g, h0 = (x.float() for x in make_inputs(0, "vector", B=2))
    h0.requires_grad_()
    o, ht = GLA.forms["triton"](q, k, v, g=g, initial_state=h0, output_final_state=True)
    assert o.shape == (2, 0, 2, 16) and torch.equal(ht, h0)
    ht.sum().backward()
    assert torch.equal(h0.grad, torch.ones_like(h0))
    o, ht = GLA.forms["triton"](q[:1], k[:1], v[:1], g=g[:1], cu_seqlens=torch.tensor([0, 0, 0]), output_final_state=True)
    assert o.shape == (1, 0, 2, 16) and ht.shape == (2, 2, 32, 16) and not ht.any()

@pytest.mark.parametrize("strength", [0.3, 3.0])
def test_signed_decays(launcher, strength):
    q, k, v, g, h0 = make_inputs(100, "scalar", H=1, strength=strength)
    sign = torch.where(torch.rand(g.shape, generator=torch.Generator().manual_seed(5)) < 0.5, -1.0, 1.0).double()
    compare(
        run_kernel(launcher, q, k, v, g, h0, decay_sign=sign),
        run(naive_gla, q, k, v, g, h0, decay_sign=sign),
        TOL_FLOAT32, "signed",
    )


def test_bfloat16_close_to_float64(launcher):
    inputs = make_inputs(64, "vector")
    actual = run_kernel(launcher, *inputs, dtype=torch.bfloat16)
    for name, a, e in zip(NAMES, actual, run(naive_gla, *inputs)):
        assert a.dtype == (torch.float32 if name == "final_state" else torch.bfloat16), name
        assert_close(f"bf16 {name}", a, e, 3e-2)



@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_several_key_and_value_tiles(launcher, gate, monkeypatch):
    """Whole-chunk and sub-chunk programs looping over several key blocks, the values'
    gradient over several value tiles, and widths that are not powers of two."""
    monkeypatch.setitem(launcher.TILES, "key", 16)
    monkeypatch.setitem(launcher.TILES, "key_subchunk", 16)
    monkeypatch.setitem(launcher.TILES, "value_dv", 16)
    q, k, v, g, h0 = make_inputs(100, gate, H=1, K=40, V=40)
    g = g.clone()
    g[:, :64] *= 0.1
    g[:, 64:] *= 20.0  # the second chunk is too strong for the whole-chunk product
    assert g[:, :64].sum(1).min() > -launcher.kernels.FAST_SPAN > g[:, 64:].sum(1).max()
    actual, expected = run_kernel(launcher, q, k, v, g, h0), run(naive_gla, q, k, v, g, h0)
    compare(actual, expected, 1e-4 if gate == "vector" else TOL_FLOAT32, f"tiles gate={gate}")


def test_float16_chunks_with_moderate_decay(launcher):
    """A chunk decaying by exp(-20) takes the whole-chunk product, whose factor
    k ⊙ exp(-gc) reaches exp(20): beyond float16's range, so those products run in float32."""
    q, k, v, _, h0 = make_inputs(64, "vector")
    g = torch.full(q.shape, -20.0 / 64, dtype=torch.float64)
    actual = run_kernel(launcher, q, k, v, g, h0, dtype=torch.float16)
    for name, a, e in zip(NAMES, actual, run(naive_gla, q, k, v, g, h0)):
        assert torch.isfinite(a).all(), f"fp16 {name} is not finite"
        # float16 rounds to 5e-4: the results keep about that (2e-3 allowed)
        assert_close(f"fp16 {name}", a, e, 2e-3)

def test_float64_inputs_give_float64_results(launcher):
    q, k, v, g, h0 = make_inputs(20, "scalar")
    o, ht = GLA.forms["triton"](q, k, v, g=g, initial_state=h0, output_final_state=True)
    assert o.dtype == ht.dtype == torch.float64
    ref_o, ref_ht = naive_gla(q, k, v, g=g, initial_state=h0, output_final_state=True)
    assert_close("o", o, ref_o, TOL_FLOAT32)
    assert_close("final_state", ht, ref_ht, TOL_FLOAT32)


@pytest.mark.parametrize("gate", ["scalar", "vector", "none"])
def test_recurrent_kernel(launcher, gate):
    q, k, v, g, h0 = make_inputs(30, gate, B=2)
    sign = None
    if gate == "scalar":
        sign = torch.where(torch.rand(g.shape, generator=torch.Generator().manual_seed(1)) < 0.5, -1.0, 1.0).double()
    f32 = lambda x: None if x is None else x.float()  # noqa: E731
    with poisoned_allocations():
        o, ht = GLA.step_forms["triton"](
            f32(q), f32(k), f32(v), g=f32(g), initial_state=f32(h0), output_final_state=True, decay_sign=f32(sign)
        )
    ref_o, ref_ht = naive_gla(q, k, v, g=g, initial_state=h0, output_final_state=True, decay_sign=sign)
    assert_close("o", o, ref_o, TOL_FLOAT32)
    assert_close("final_state", ht, ref_ht, TOL_FLOAT32)


def test_recurrent_steps_and_packed(launcher):
    """Decoding one step at a time equals one call; packed sequences restart their state."""
    q, k, v, g, h0 = (x.float() for x in make_inputs(12, "vector"))
    state, outputs = h0, []
    for t in range(12):
        o_t, state = GLA.step_forms["triton"](
            q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], g=g[:, t : t + 1], initial_state=state, output_final_state=True
        )
        outputs.append(o_t)
    ref_o, ref_ht = naive_gla(q, k, v, g=g, initial_state=h0, output_final_state=True)
    assert_close("steps o", torch.cat(outputs, 1), ref_o, TOL_FLOAT32)
    assert_close("steps state", state, ref_ht, TOL_FLOAT32)

    cu_seqlens = torch.tensor([0, 4, 12])
    h0_packed = torch.randn(2, 2, 32, 16)
    o, ht = GLA.step_forms["triton"](
        q[:1], k[:1], v[:1], g=g[:1], initial_state=h0_packed, output_final_state=True, cu_seqlens=cu_seqlens
    )
    ref_o, ref_ht = naive_gla(q[:1], k[:1], v[:1], g=g[:1], initial_state=h0_packed, output_final_state=True, cu_seqlens=cu_seqlens)
    assert_close("packed o", o, ref_o, TOL_FLOAT32)
    assert_close("packed state", ht, ref_ht, TOL_FLOAT32)


def test_recurrent_kernel_refuses_gradients(launcher):
    q, k, v, g, _ = make_inputs(4, "scalar")
    with pytest.raises(ValueError, match="computes no gradients"):
        GLA.step_forms["triton"](q.float().requires_grad_(), k.float(), v.float(), g=g.float())


def test_dispatch_and_signature(launcher, monkeypatch):
    assert inspect.signature(GLA.forms["triton"]) == inspect.signature(naive_gla)
    assert inspect.signature(GLA.step_forms["triton"]) == inspect.signature(naive_gla)
    q, k, v, g, _ = (x.float() for x in make_inputs(20, "scalar"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    o, _ = gla(q, k, v, g=g, impl="triton")
    assert_close("impl=triton", o, naive_gla(q.double(), k.double(), v.double(), g=g.double())[0], TOL_FLOAT32)


def test_head_width_limit_named(launcher):
    q = torch.randn(1, 4, 1, 512)
    with pytest.raises(ValueError, match="head widths up to 256; got K = 512"):
        GLA.forms["triton"](q, q, q[..., :16], g=None)


@pytest.mark.parametrize(
    "name, options",
    [
        ("gla", {"num_heads": 2}), ("hgrn2", {"num_heads": 2}), ("retnet", {"num_heads": 2}),
        ("linear_attention", {"num_heads": 2}), ("mamba2", {"head_dim": 16, "allow_neg_eigval": True}),
    ],
)
def test_layers_run_the_kernels(launcher, name, options, monkeypatch):
    """The GLA-family layers with impl="triton" (float32) give the outputs, state and
    parameter gradients of the chunk form in float64."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    actual, expected = triton_and_chunk_layer(name, **options)
    for key in expected:
        # Mamba-2's A_log reaches the loss through log|a| with a = 2 exp(Δ A) - 1, whose
        # slope 2 exp(Δ A) / a magnifies the gate's gradient where a is near 0 (3000× here):
        # those steps need their own small sums kept apart (2e-6; 2e-4 with the sub-chunk
        # kernels, whose sums were differences of larger ones)
        assert_close(f"{name} {key}", actual[key], expected[key], 1e-5)


@pytest.mark.parametrize("strength", [1.0, 5.0])
def test_per_head_gate_gradient_keeps_float32_accuracy(launcher, strength):
    """One decay per head, about -0.8 and -4 per step: the decays between steps are summed
    from the log decays themselves, not taken as differences of their running sums (which
    left 5e-6 here), so the gate's gradient keeps the accuracy of the rest."""
    q, k, v, g, h0 = make_inputs(150, "scalar", H=2, strength=strength)
    actual, expected = run_kernel(launcher, q, k, v, g, h0), run(naive_gla, q, k, v, g, h0)
    for name, a, e in zip(NAMES, actual, expected):
        assert_close(f"strength={strength} {name}", a, e, 1e-6)
