"""The delta rule's Triton kernels on a CUDA device at full size, against float64 references.

Marked `gpu` (deselected by default; run with `pytest -m gpu tests/gpu`) and skipped
without CUDA. The same checks as tests/ops/test_delta_triton.py at B·T = 32768 tokens of
H = 16 heads with K = V = 128, with every buffer the kernels allocate poisoned with NaN.

The float64 reference is the chunk form (equal to the naive loop within 1e-10 in float64,
tests/ops/test_delta.py) on the first REFERENCE_ROWS batch rows: rows are independent, and
the loss weights every element of o and of the final state by a fixed random number, so
the reference rows get exactly the gradients the kernels give those rows.
"""

from __future__ import annotations

import pytest
import torch

from recur.ops.delta import (
    DELTA_RULE,
    chunk_delta_rule,
    delta_rule,
    naive_delta_rule,
    triton_delta_rule,
)
from tests.helpers import assert_close, grads, relative_error
from tests.ops.test_gla_triton import poisoned_allocations

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TOKENS, H, K, V = 32768, 16, 128, 128
REFERENCE_ROWS = 2
NAMES = ["o", "final_state", "dq", "dk", "dv", "dbeta", "dg", "dh0"]
# float32 kernels with IEEE products against float64: rounding and the device's exp
TOL_FLOAT32 = 1e-4


def make_inputs(B, T, H=H, gated=True, strength=1.0, seed=0):
    """The family's example inputs on the device in float64, β in [0, 2], as
    [q, k, v, β, g (None when not `gated`), h0], the log decay scaled by `strength`."""
    example = DELTA_RULE.example_inputs(
        T, batch=B, case="neg_eigval", device="cuda", seed=seed, heads=H, key_dim=K, value_dim=V
    )
    q, k, v = (x.detach() for x in example.args)
    beta, g, h0 = (example.kwargs[name].detach() for name in ("beta", "g", "initial_state"))
    return [q, k, v, beta, g * strength if gated else None, h0]


def run(form, inputs, weights, dtype, rows=None, **kwargs):
    """o, final state and the gradients of q, k, v, β, g, h0 of sum(o ⊙ w_o) + sum(S_T ⊙ w_S),
    on batch rows [:rows] (all when None)."""
    pick = slice(None) if rows is None else slice(0, rows)
    leaves = [None if x is None else x[pick].detach().to(dtype).requires_grad_() for x in inputs]
    o, ht = form(*leaves[:3], beta=leaves[3], g=leaves[4], initial_state=leaves[5], output_final_state=True, **kwargs)
    loss = (o.double() * weights[0][pick]).sum() + (ht.double() * weights[1][pick]).sum()
    return [o, ht, *grads(loss, leaves)]


def kernel_run(inputs, weights, dtype, **kwargs):
    with poisoned_allocations():
        out = run(triton_delta_rule, inputs, weights, dtype, **kwargs)
    torch.cuda.synchronize()
    return out


def loss_weights(inputs):
    B, T = inputs[0].shape[:2]
    gen = torch.Generator(device="cuda").manual_seed(1)
    return [
        torch.randn(B, T, H, V, generator=gen, device="cuda", dtype=torch.float64),
        torch.randn(B, H, K, V, generator=gen, device="cuda", dtype=torch.float64),
    ]


def compare_rows(actual, expected, limits, label):
    """The kernels' results on the reference rows against the float64 reference."""
    errors = {}
    for name, a, e in zip(NAMES, actual, expected):
        if e is None:
            assert a is None, f"{label} {name}: expected no gradient"
            continue
        a = a[:REFERENCE_ROWS]
        assert not torch.isnan(a).any(), f"{label} {name}: NaN in result"
        errors[name] = relative_error(a, e)
    bad = {name: err for name, err in errors.items() if not err < limits.get(name, limits["default"])}
    assert not bad, f"{label}: relative errors {errors}"


@pytest.mark.parametrize("T", [2048, 8192])
@pytest.mark.parametrize("gated", [True, False], ids=["gated", "ungated"])
def test_float32_matches_float64(T, gated):
    inputs = make_inputs(TOKENS // T, T, gated=gated)
    weights = loss_weights(inputs)
    actual = kernel_run(inputs, weights, torch.float32)
    expected = run(chunk_delta_rule, inputs, weights, torch.float64, rows=REFERENCE_ROWS)
    compare_rows(actual, expected, {"default": TOL_FLOAT32}, f"float32 T={T} gated={gated}")


@pytest.mark.parametrize("T", [2048, 8192])
def test_bfloat16_close_to_float64(T):
    """Against the float64 reference on the same bf16-rounded inputs: the kernels' own error
    (TF32 products, bf16 results) without the rounding of the inputs."""
    inputs = [x.bfloat16().double() for x in make_inputs(TOKENS // T, T)]
    weights = loss_weights(inputs)
    actual = kernel_run(inputs, weights, torch.bfloat16)
    for name, x in zip(NAMES, actual):
        assert x.dtype == (torch.float32 if name == "final_state" else torch.bfloat16), name
    expected = run(chunk_delta_rule, inputs, weights, torch.float64, rows=REFERENCE_ROWS)
    compare_rows(actual, expected, {"default": 3e-2, "dg": 6e-2}, f"bf16 T={T}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_intra_chunk_work_apart_from_the_walks(dtype, monkeypatch):
    """The other schedule of the walks (WALK_FUSES off), which bench.py --variants times."""
    from recur.ops.delta import triton as launch

    monkeypatch.setitem(launch.WALK_FUSES, "outputs", False)
    monkeypatch.setitem(launch.WALK_FUSES, "intra_gradient", False)
    inputs = make_inputs(TOKENS // 2048, 2048)
    if dtype == torch.bfloat16:
        inputs = [x.bfloat16().double() for x in inputs]
    weights = loss_weights(inputs)
    actual = kernel_run(inputs, weights, dtype)
    expected = run(chunk_delta_rule, inputs, weights, torch.float64, rows=REFERENCE_ROWS)
    limits = {"default": TOL_FLOAT32} if dtype == torch.float32 else {"default": 3e-2, "dg": 6e-2}
    compare_rows(actual, expected, limits, f"apart {dtype}")


def test_packed_sequences():
    """Packed sequences of lengths 100, 1000, 1, 1899 and the rest of 8192 tokens (the float64
    reference pads every sequence to the longest)."""
    total = 8192
    lengths = [100, 1000, 1, 1899]
    lengths.append(total - sum(lengths))
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda")
    inputs = make_inputs(1, total)
    inputs[5] = torch.randn(len(lengths), H, K, V, device="cuda", dtype=torch.float64)
    weights = loss_weights(inputs)
    weights[1] = torch.randn(len(lengths), H, K, V, device="cuda", dtype=torch.float64)
    actual = kernel_run(inputs, weights, torch.float32, cu_seqlens=cu_seqlens)
    expected = run(chunk_delta_rule, inputs, weights, torch.float64, cu_seqlens=cu_seqlens)
    for name, a, e in zip(NAMES, actual, expected):
        assert_close(f"packed {name}", a, e, TOL_FLOAT32)


def test_strong_gates_and_resets():
    """About -16 per step with resets: the decays (compensated differences of running sums)
    and the gate's gradient (summed route by route) keep the float32 tolerance, dg included."""
    inputs = make_inputs(2, 1000, strength=20.0)
    inputs[4][:, [0, 15, 16, 63, 64, 500, 999]] = float("-inf")
    weights = loss_weights(inputs)
    actual = kernel_run(inputs, weights, torch.float32)
    for name, x in zip(NAMES, actual):
        assert torch.isfinite(x).all(), f"{name} is not finite"
    expected = run(chunk_delta_rule, inputs, weights, torch.float64, rows=REFERENCE_ROWS)
    compare_rows(actual, expected, {"default": TOL_FLOAT32}, "strong gates")


def test_auto_picks_triton_on_cuda():
    q, k, v, beta, g, _ = (x.float() for x in make_inputs(1, 300, H=4))
    o_auto, _ = delta_rule(q, k, v, beta=beta, g=g)
    o_triton, _ = triton_delta_rule(q, k, v, beta=beta, g=g)
    assert torch.equal(o_auto, o_triton)
    assert_close("auto", o_auto, naive_delta_rule(q.double(), k.double(), v.double(), beta=beta.double(), g=g.double())[0], TOL_FLOAT32)


@pytest.mark.parametrize("gated", [True, False])
def test_recurrent_kernel_matches_naive(gated):
    triton_delta_rule_recurrent = DELTA_RULE.step_forms["triton"]
    q, k, v, beta, g, h0 = make_inputs(3, 500, gated=gated)
    f32 = lambda x: None if x is None else x.float()  # noqa: E731
    with torch.no_grad(), poisoned_allocations():
        o, ht = triton_delta_rule_recurrent(
            f32(q), f32(k), f32(v), beta=f32(beta), g=f32(g), initial_state=f32(h0), output_final_state=True
        )
    ref_o, ref_ht = naive_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert_close("o", o, ref_o, 1e-4)
    assert_close("final_state", ht, ref_ht, 1e-4)
