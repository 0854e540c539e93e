"""GLA family: every form against the float64 naive loop, forward and gradients."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from recur.ops.gla import FORMS, chunk_gla, gla, naive_gla
from recur.ops.gla.chunk import CHUNK_SIZE_SCALAR_GATE, FACTOR_LIMIT, _chunked, _within_factor_limit
from tests.helpers import assert_close, grads, weighted_sum

B, H, K, V = 2, 3, 16, 8


def make_inputs(T, gate, strength=1.0, dtype=torch.float64, B=B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    k = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    v = torch.randn(B, T, H, V, generator=gen, dtype=dtype)
    shape = {"scalar": (B, T, H), "vector": (B, T, H, K)}.get(gate)
    g = None
    if shape is not None:
        g = F.logsigmoid(torch.randn(*shape, generator=gen, dtype=dtype)) * strength
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=dtype)
    return q, k, v, g, h0


def run(form, q, k, v, g, h0, cu_seqlens=None):
    leaves = [x.detach().clone().requires_grad_() if x is not None else None for x in (q, k, v, g, h0)]
    q, k, v, g, h0 = leaves
    o, ht = form(q, k, v, g=g, initial_state=h0, output_final_state=True, cu_seqlens=cu_seqlens)
    return [o, ht, *grads(weighted_sum(o, ht), leaves)]


NAMES = ["o", "final_state", "dq", "dk", "dv", "dg", "dh0"]


def compare(actual, expected, tol, label):
    for name, a, e in zip(NAMES, actual, expected):
        if e is None:
            assert a is None, f"{label} {name}: expected no gradient"
            continue
        assert_close(f"{label} {name}", a, e, tol)


@pytest.mark.parametrize("gate", ["scalar", "vector", "none"])
@pytest.mark.parametrize("T", [1, 63, 64, 65, 100, 1000])
def test_chunk_matches_naive_float64(T, gate):
    inputs = make_inputs(T, gate)
    compare(run(chunk_gla, *inputs), run(naive_gla, *inputs), 1e-10, f"T={T} gate={gate}")


@pytest.mark.parametrize("gate", ["scalar", "vector"])
@pytest.mark.parametrize("strength", [0.0, 20.0, 200.0])
def test_gate_strength(gate, strength):
    """Zero gates (no decay), strong gates (about -20 per step) and extreme ones."""
    inputs = make_inputs(100, gate, strength=strength)
    compare(run(chunk_gla, *inputs), run(naive_gla, *inputs), 1e-10, f"strength={strength}")


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_exact_log_decay_minus_20(gate):
    q, k, v, g, h0 = make_inputs(130, gate)
    g = torch.full_like(g, -20.0)
    compare(run(chunk_gla, q, k, v, g, h0), run(naive_gla, q, k, v, g, h0), 1e-10, "g=-20")


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_minus_inf_resets_state(gate):
    q, k, v, g, h0 = make_inputs(150, gate)
    g = g.clone()
    g[:, [0, 17, 64, 65, 149]] = float("-inf")
    ref, out = run(naive_gla, q, k, v, g, h0), run(chunk_gla, q, k, v, g, h0)
    compare(out, ref, 1e-10, "resets")
    # after a reset at step 17 the output cannot depend on anything before it
    o_reset, _ = chunk_gla(q[:, 17:], k[:, 17:], v[:, 17:], g=g[:, 17:])
    o_full, _ = chunk_gla(q, k, v, g=g, initial_state=h0)
    assert_close("reset isolation", o_full[:, 17:64], o_reset[:, :47], 1e-12)


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_float32_matches_float64_naive(gate):
    inputs64 = make_inputs(300, gate)
    expected = run(naive_gla, *inputs64)
    actual = run(chunk_gla, *(x.float() if x is not None else None for x in inputs64))
    compare(actual, expected, 1e-5, "float32")


@pytest.mark.parametrize("gate", ["scalar", "vector", "none"])
@pytest.mark.parametrize("form", [naive_gla, chunk_gla], ids=["naive", "chunk"])
def test_packed_equals_separate(form, gate):
    """Packed sequences (cu_seqlens) behave as separate sequences: no state leaks."""
    lengths = [5, 0, 70, 1, 33]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    q, k, v, g, _ = make_inputs(sum(lengths), gate, B=1)
    h0 = torch.randn(len(lengths), H, K, V, dtype=torch.float64)
    packed = run(form, q, k, v, g, h0, cu_seqlens=cu)
    outs, finals = [], []
    for n in range(len(lengths)):
        s, e = int(cu[n]), int(cu[n + 1])
        o, ht = naive_gla(
            q[:, s:e], k[:, s:e], v[:, s:e], g=None if g is None else g[:, s:e],
            initial_state=h0[n : n + 1], output_final_state=True,
        )
        outs.append(o)
        finals.append(ht)
    assert_close("packed o", packed[0], torch.cat(outs, 1), 1e-12)
    assert_close("packed final", packed[1], torch.cat(finals), 1e-12)
    # and the chunk form's gradients equal the naive form's on the packed batch
    if form is chunk_gla:
        compare(packed, run(naive_gla, q, k, v, g, h0, cu_seqlens=cu), 1e-10, "packed grads")


def test_bf16_and_fp16_close_to_float64():
    inputs64 = make_inputs(200, "vector", strength=5.0)
    expected, _ = naive_gla(*inputs64[:3], g=inputs64[3], initial_state=inputs64[4])
    for dtype, tol in ((torch.bfloat16, 3e-2), (torch.float16, 5e-3)):
        q, k, v, g, h0 = (x.to(dtype) for x in inputs64)
        o, _ = chunk_gla(q, k, v, g=g, initial_state=h0.float())
        assert o.dtype == dtype
        assert_close(f"{dtype} output", o, expected, tol)


def test_state_dtype_and_output_dtype():
    q, k, v, g, _ = make_inputs(10, "scalar", dtype=torch.bfloat16)
    o, ht = chunk_gla(q, k, v, g=g, output_final_state=True)
    assert o.dtype == torch.bfloat16 and ht.dtype == torch.float32
    o, ht = chunk_gla(q, k, v, g=g)
    assert ht is None


def test_all_forms_share_one_signature():
    reference = inspect.signature(naive_gla)
    for name, form in FORMS.items():
        assert inspect.signature(form) == reference, f"{name} form's signature differs from naive_gla"
    dispatcher = inspect.signature(gla).parameters
    assert list(dispatcher)[:-1] == list(reference.parameters) and "impl" in dispatcher


def test_dispatcher():
    q, k, v, g, _ = make_inputs(20, "scalar")
    o_auto, _ = gla(q, k, v, g=g)
    o_naive, _ = gla(q, k, v, g=g, impl="naive")
    assert_close("auto vs naive", o_auto, o_naive, 1e-10)
    with pytest.raises(ValueError, match="impl must be one of"):
        gla(q, k, v, g=g, impl="fast")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="impl='triton'"):
            gla(q, k, v, g=g, impl="triton")


@pytest.mark.parametrize("form", [naive_gla, chunk_gla], ids=["naive", "chunk"])
def test_bad_inputs_name_the_argument(form):
    q, k, v, g, h0 = make_inputs(8, "scalar")
    with pytest.raises(ValueError, match=r"k has shape \[2, 8, 3, 8\] but q has \[2, 8, 3, 16\]; expected equal"):
        form(q, k[..., :8], v, g=g)
    with pytest.raises(ValueError, match="v has shape"):
        form(q, k, v[:, :4], g=g)
    with pytest.raises(ValueError, match="g has shape"):
        form(q, k, v, g=g[:, :, :2])
    with pytest.raises(ValueError, match="initial_state has shape"):
        form(q, k, v, g=g, initial_state=h0[:1])
    with pytest.raises(ValueError, match="must be floating point"):
        form(q.long(), k, v, g=g)
    with pytest.raises(ValueError, match="q must have shape"):
        form(q[0], k, v, g=g)
    with pytest.raises(ValueError, match="batch size 1"):
        form(q, k, v, g=g, cu_seqlens=torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="end at T = 8"):
        form(q[:1], k[:1], v[:1], g=g[:1], cu_seqlens=torch.tensor([0, 5]))
    if torch.device("meta") != q.device:
        with pytest.raises(ValueError, match="expected one device"):
            form(q, k, v.to("meta"), g=g)


@pytest.mark.parametrize("T", [1, 64, 65, 200])
def test_signed_decays_match_naive(T):
    """Decays in (-1, 1): a_t = decay_sign_t · exp(g_t) (negative eigenvalues)."""
    q, k, v, g, h0 = make_inputs(T, "scalar", strength=3.0)
    sign = torch.where(torch.rand(B, T, H, generator=torch.Generator().manual_seed(5)) < 0.5, -1.0, 1.0).double()

    def with_sign(form):
        return lambda *a, **kw: form(*a, **kw, decay_sign=sign)

    compare(run(with_sign(chunk_gla), q, k, v, g, h0), run(with_sign(naive_gla), q, k, v, g, h0), 1e-10, "signed")



def test_negative_decay_flips_the_state():
    """All signs negative and g = 0: the state changes sign every step."""
    q, k, v, g, _ = make_inputs(2, "scalar")
    o, ht = naive_gla(q[:, :2], k[:, :2], v[:, :2], g=torch.zeros_like(g[:, :2]), decay_sign=-torch.ones_like(g[:, :2]), output_final_state=True)
    expected = k[:, 1, :, :, None] * v[:, 1, :, None, :] - k[:, 0, :, :, None] * v[:, 0, :, None, :]
    assert_close("flip", ht, expected, 1e-14)


def test_signed_decays_need_a_per_head_gate():
    q, k, v, g, _ = make_inputs(8, "vector")
    with pytest.raises(ValueError, match="decay_sign needs a per-head log decay"):
        chunk_gla(q, k, v, g=g, decay_sign=torch.ones(B, 8, H, dtype=torch.float64))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_weak_per_channel_gates_take_the_factorized_path(dtype, tol):
    """GLA-layer gates (logsigmoid/16) stay within the limit for one product per chunk."""
    inputs64 = make_inputs(300, "vector", strength=1 / 16)
    assert factorizable(inputs64[3].to(dtype))
    expected = run(naive_gla, *inputs64)
    compare(run(chunk_gla, *(x.to(dtype) for x in inputs64)), expected, tol, f"factorized {dtype}")


def test_factorized_path_is_refused_beyond_its_limit():
    g = torch.full((1, 64, 1, 4), -FACTOR_LIMIT[torch.float32] / 64)
    assert factorizable(g)
    assert not factorizable(g * 1.1)
    g[0, 5, 0, 0] = float("-inf")
    assert not factorizable(g)


def factorizable(g: torch.Tensor) -> bool:
    return _within_factor_limit(_chunked(g, CHUNK_SIZE_SCALAR_GATE).cumsum(dim=3))
