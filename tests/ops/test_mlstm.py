"""mLSTM family: chunkwise and parallel forms against the float64 naive loop, forward and
gradients, and the stabiliser at extreme gates."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from recur.ops.mlstm import FORMS, chunk_mlstm, mlstm, naive_mlstm, parallel_mlstm
from tests.helpers import assert_close, grads, weighted_sum

B, H, K, V = 2, 3, 16, 8


def make_inputs(T, input_scale=3.0, forget_bias=2.0, dtype=torch.float64, B=B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    k = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    v = torch.randn(B, T, H, V, generator=gen, dtype=dtype)
    i = torch.randn(B, T, H, generator=gen, dtype=dtype) * input_scale
    f = torch.randn(B, T, H, generator=gen, dtype=dtype) * 3 + forget_bias
    state = (
        torch.randn(B, H, K, V, generator=gen, dtype=dtype),
        torch.randn(B, H, K, generator=gen, dtype=dtype),
        torch.randn(B, H, generator=gen, dtype=dtype),
    )
    return q, k, v, i, f, state


def run(form, q, k, v, i, f, state, cu_seqlens=None, input_gate="exp"):
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v, i, f, *state)]
    q, k, v, i, f, C0, n0, m0 = leaves
    h, (C, n, m) = form(
        q, k, v, i=i, f=f, initial_state=(C0, n0, m0), output_final_state=True,
        cu_seqlens=cu_seqlens, input_gate=input_gate,
    )
    return [h, C, n, m, *grads(weighted_sum(h, C, n, m), leaves)]


NAMES = ["h", "C", "n", "m", "dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"]


def compare(actual, expected, tol, label):
    for name, a, e in zip(NAMES, actual, expected, strict=True):
        assert_close(f"{label} {name}", a, e, tol)


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize("T", [1, 63, 64, 65, 100, 1000])
def test_chunk_matches_naive_float64(T, input_gate):
    inputs = make_inputs(T)
    expected = run(naive_mlstm, *inputs, input_gate=input_gate)
    compare(run(chunk_mlstm, *inputs, input_gate=input_gate), expected, 1e-10, f"chunk T={T} {input_gate}")


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize("T", [1, 65, 200])
def test_parallel_matches_naive_float64(T, input_gate):
    inputs = make_inputs(T)
    expected = run(naive_mlstm, *inputs, input_gate=input_gate)
    compare(run(parallel_mlstm, *inputs, input_gate=input_gate), expected, 1e-10, f"parallel T={T} {input_gate}")


def test_stabilised_equals_unstabilised():
    """With eps = 0 the output does not depend on m: it equals the plain recurrence
    C̄_t = f_t C̄_{t-1} + exp(ĩ_t) k vᵀ read as C̄ᵀq / max(|n̄ᵀq|, 1) (moderate gates)."""
    q, k, v, i, f, _ = make_inputs(120, input_scale=1.0)
    h, _ = chunk_mlstm(q, k, v, i=i, f=f, eps=0.0)
    C_bar, n_bar, outputs = torch.zeros(B, H, K, V, dtype=q.dtype), torch.zeros(B, H, K, dtype=q.dtype), []
    q = q * K**-0.5
    for t in range(q.shape[1]):
        forget, inp = torch.sigmoid(f[:, t])[..., None], i[:, t].exp()[..., None]
        C_bar = forget[..., None] * C_bar + inp[..., None] * k[:, t, :, :, None] * v[:, t, :, None, :]
        n_bar = forget * n_bar + inp * k[:, t]
        den = (n_bar * q[:, t]).sum(-1).abs().clamp_min(1.0)
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], C_bar) / den[..., None])
    assert_close("unstabilised", h, torch.stack(outputs, 1), 1e-12)


@pytest.mark.parametrize(
    "input_scale,forget_bias",
    [(80.0, 2.0), (80.0, 30.0), (80.0, -30.0), (1.0, 30.0), (1.0, -30.0)],
    ids=["i80", "i80-f1", "i80-f0", "f1", "f0"],
)
def test_extreme_gates_float32_no_overflow(input_scale, forget_bias):
    """Input-gate pre-activations up to +80 (exp(80) overflows float32's exp-free range
    without the max state) and forget gates near 1 (f̃ = +30) or near 0 (f̃ = −30)."""
    q, k, v, i, f, state = make_inputs(300, input_scale=1.0, forget_bias=forget_bias)
    i = i.abs() * input_scale / 3 if input_scale > 1 else i
    i = i.clamp(max=80.0)
    expected = naive_mlstm(q, k, v, i=i, f=f, initial_state=state, output_final_state=True)
    for form in (naive_mlstm, chunk_mlstm, parallel_mlstm):
        h, (C, n, m) = form(
            q.float(), k.float(), v.float(), i=i.float(), f=f.float(),
            initial_state=tuple(x.float() for x in state), output_final_state=True,
        )
        for name, x in (("h", h), ("C", C), ("n", n), ("m", m)):
            assert torch.isfinite(x).all(), f"{form.__name__}: non-finite {name}"
        # float32 rounding of exponents near 80 is about 1e-5 absolute; outputs whose
        # normaliser nears zero amplify it
        assert_close(f"{form.__name__} float32 h", h, expected[0], 1e-2)
    compare(run(chunk_mlstm, q, k, v, i, f, state), run(naive_mlstm, q, k, v, i, f, state), 1e-10, "extreme float64")


@pytest.mark.parametrize("form", [naive_mlstm, chunk_mlstm, parallel_mlstm], ids=["naive", "chunk", "parallel"])
def test_packed_equals_separate(form):
    lengths = [5, 0, 70, 1, 130]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    q, k, v, i, f, _ = make_inputs(sum(lengths), B=1)
    n = len(lengths)
    state = (torch.randn(n, H, K, V, dtype=torch.float64), torch.randn(n, H, K, dtype=torch.float64), torch.randn(n, H, dtype=torch.float64))
    packed = run(form, q, k, v, i, f, state, cu_seqlens=cu)
    outs, finals = [], []
    for s in range(n):
        a, b = int(cu[s]), int(cu[s + 1])
        h, st = naive_mlstm(
            q[:, a:b], k[:, a:b], v[:, a:b], i=i[:, a:b], f=f[:, a:b],
            initial_state=tuple(x[s : s + 1] for x in state), output_final_state=True,
        )
        outs.append(h)
        finals.append(st)
    assert_close("packed h", packed[0], torch.cat(outs, 1), 1e-10)
    for j, name in enumerate(("C", "n", "m")):
        assert_close(f"packed {name}", packed[1 + j], torch.cat([st[j] for st in finals]), 1e-10)
    if form is not naive_mlstm:
        compare(packed, run(naive_mlstm, q, k, v, i, f, state, cu_seqlens=cu), 1e-10, "packed grads")


def test_float32_matches_float64_naive():
    inputs64 = make_inputs(300)
    expected = run(naive_mlstm, *inputs64)
    q, k, v, i, f, state = inputs64
    actual = run(chunk_mlstm, q.float(), k.float(), v.float(), i.float(), f.float(), tuple(x.float() for x in state))
    for name, a, e in zip(NAMES, actual, expected, strict=True):
        assert_close(f"float32 {name}", a, e, 1e-4)


def test_bf16_close_to_float64():
    """bf16 inputs, float32 state: the output is the exact answer for the rounded inputs
    up to bf16 output rounding (exp(ĩ) turns input rounding into large output changes,
    so the reference takes the same rounded inputs)."""
    q, k, v, i, f = (x.bfloat16() for x in make_inputs(200)[:5])
    expected, _ = naive_mlstm(q.double(), k.double(), v.double(), i=i.double(), f=f.double())
    h, (C, _, _) = chunk_mlstm(q, k, v, i=i, f=f, output_final_state=True)
    assert h.dtype == torch.bfloat16 and C.dtype == torch.float32
    assert_close("bf16 h", h, expected, 1e-2)


def test_all_forms_share_one_signature():
    reference = inspect.signature(naive_mlstm)
    for name, form in {**FORMS, "parallel": parallel_mlstm}.items():
        assert inspect.signature(form) == reference, f"{name} form's signature differs from naive_mlstm"
    dispatcher = inspect.signature(mlstm).parameters
    assert list(dispatcher)[:-1] == list(reference.parameters) and "impl" in dispatcher


def test_dispatcher():
    q, k, v, i, f, _ = make_inputs(20)
    h_auto, _ = mlstm(q, k, v, i=i, f=f)
    h_naive, _ = mlstm(q, k, v, i=i, f=f, impl="naive")
    assert_close("auto vs naive", h_auto, h_naive, 1e-10)
    with pytest.raises(ValueError, match="impl must be one of"):
        mlstm(q, k, v, i=i, f=f, impl="fast")


@pytest.mark.parametrize("form", [naive_mlstm, chunk_mlstm, parallel_mlstm], ids=["naive", "chunk", "parallel"])
def test_bad_inputs_name_the_argument(form):
    q, k, v, i, f, state = make_inputs(8)
    with pytest.raises(ValueError, match=r"k has shape \[2, 8, 3, 8\] but q has \[2, 8, 3, 16\]; expected equal"):
        form(q, k[..., :8], v, i=i, f=f)
    with pytest.raises(ValueError, match="i has shape"):
        form(q, k, v, i=i[..., :1], f=f)
    with pytest.raises(ValueError, match="f has shape"):
        form(q, k, v, i=i, f=F.pad(f, (0, 1)))
    with pytest.raises(ValueError, match="initial_state n has shape"):
        form(q, k, v, i=i, f=f, initial_state=(state[0], state[1][:1], state[2]))
    with pytest.raises(ValueError, match="initial_state must be a tuple"):
        form(q, k, v, i=i, f=f, initial_state=state[0])
    with pytest.raises(ValueError, match="input_gate must be one of"):
        form(q, k, v, i=i, f=f, input_gate="tanh")
    with pytest.raises(ValueError, match="eps must be"):
        form(q, k, v, i=i, f=f, eps=-1.0)
