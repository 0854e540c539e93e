"""GLA Triton kernels on a CUDA device at full head size, against the float64 naive loop.

Marked `gpu` (deselected by default; run with `pytest -m gpu tests/gpu`) and skipped
without CUDA. The same checks as tests/ops/test_gla_triton.py, compiled for the device and
at H = 16 heads of K = V = 128, with every buffer the kernels allocate poisoned with NaN.
"""

from __future__ import annotations

import functools

import pytest
import torch

from recur.ops.gla import GLA, naive_gla
from tests.helpers import assert_close, relative_error
from tests.ops.test_gla_triton import NAMES, compare, make_inputs, poisoned_allocations, run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

H, K, V = 16, 128, 128
# float32 kernels with IEEE products against float64: rounding and the device's exp
TOL_FLOAT32 = 1e-4


def cuda(inputs):
    return [None if x is None else x.cuda() for x in inputs]


def kernel_run(*inputs, dtype=torch.float32, **kwargs):
    with poisoned_allocations():
        out = run(GLA.forms["triton"], *inputs, dtype=dtype, **kwargs)
    torch.cuda.synchronize()
    return out


@pytest.mark.parametrize("gate", ["vector", "scalar"])
def test_float32_matches_naive(gate):
    inputs = cuda(make_inputs(2048, gate, B=2, H=H, K=K, V=V))
    compare(kernel_run(*inputs), run(naive_gla, *inputs), TOL_FLOAT32, f"float32 gate={gate}")


@pytest.mark.parametrize("gate", ["vector", "scalar"])
def test_bfloat16_close_to_naive(gate):
    inputs = cuda(make_inputs(2048, gate, B=2, H=H, K=K, V=V))
    actual = kernel_run(*inputs, dtype=torch.bfloat16)
    errors = {name: relative_error(a, e) for name, a, e in zip(NAMES, actual, run(naive_gla, *inputs))}
    # bf16 operands: 1e-2 for outputs, states and input gradients; the gate's gradient is a
    # sum over the future of differences of bf16-rounded products, so it keeps less
    limits = {name: 6e-2 if name == "dg" else 3e-2 for name in NAMES}
    bad = {name: err for name, err in errors.items() if not err < limits[name]}
    assert not bad, f"bf16 gate={gate}: relative errors {errors}"



@functools.cache
def weak_gate_case(gate):
    """Inputs with GLA's own gates, log σ(x)/16, and the float64 loop's results (shared by
    the dtypes: the loop takes seconds at this size)."""
    inputs = cuda(make_inputs(2048, gate, B=2, H=H, K=K, V=V, strength=1 / 16))
    return inputs, run(naive_gla, *inputs)


@pytest.mark.parametrize("gate", ["vector", "scalar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_whole_chunk_products(gate, dtype):
    """GLA's own gates: every chunk takes the whole-chunk products (the default strength
    above decays too fast for them and goes through sub-chunks)."""
    inputs, expected = weak_gate_case(gate)
    assert inputs[3].reshape(2, 32, 64, -1).sum(2).min() > -40
    actual = kernel_run(*inputs, dtype=dtype)
    if dtype == torch.float32:
        compare(actual, expected, TOL_FLOAT32, f"float32 gate={gate}")
        return
    errors = {name: relative_error(a, e) for name, a, e in zip(NAMES, actual, expected)}
    limits = {name: 6e-2 if name == "dg" else 3e-2 for name in NAMES}
    bad = {name: err for name, err in errors.items() if not err < limits[name]}
    assert not bad, f"{dtype} gate={gate}: relative errors {errors}"


def test_mixed_chunks():
    """Chunks of both kinds in one sequence: weak gates, then strong ones, then weak."""
    q, k, v, g, h0 = cuda(make_inputs(1000, "vector", B=1, H=H, K=K, V=V))
    g = g.clone()
    g[:, :300] /= 16
    g[:, 700:] /= 16
    g[:, 300:700] *= 5
    compare(kernel_run(q, k, v, g, h0), run(naive_gla, q, k, v, g, h0), TOL_FLOAT32, "mixed")

def test_odd_length_signed_decays():
    q, k, v, g, h0 = cuda(make_inputs(1000, "scalar", B=1, H=H, K=K, V=V, strength=3.0))
    sign = torch.where(torch.rand(g.shape, device="cuda") < 0.5, -1.0, 1.0).double()
    compare(
        kernel_run(q, k, v, g, h0, decay_sign=sign), run(naive_gla, q, k, v, g, h0, decay_sign=sign),
        TOL_FLOAT32, "signed",
    )


def test_packed_sequences():
    cu_seqlens = torch.tensor([0, 100, 1100, 1101, 3000], device="cuda")
    q, k, v, g, _ = cuda(make_inputs(3000, "vector", B=1, H=H, K=K, V=V))
    h0 = torch.randn(4, H, K, V, device="cuda", dtype=torch.float64)
    compare(
        kernel_run(q, k, v, g, h0, cu_seqlens=cu_seqlens), run(naive_gla, q, k, v, g, h0, cu_seqlens=cu_seqlens),
        TOL_FLOAT32, "packed",
    )


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_strong_gates_and_resets(gate):
    q, k, v, g, h0 = cuda(make_inputs(1000, gate, B=1, H=H, K=K, V=V, strength=20.0))
    g = g.clone()
    g[:, [0, 15, 16, 64, 500, 999]] = float("-inf")
    actual, expected = kernel_run(q, k, v, g, h0), run(naive_gla, q, k, v, g, h0)
    compare(actual[:5] + actual[6:], expected[:5] + expected[6:], TOL_FLOAT32, f"gate={gate}")
    assert_close(f"gate={gate} dg", actual[5], expected[5], 1e-3)


def test_recurrent_kernel_matches_naive():
    q, k, v, g, h0 = cuda(make_inputs(300, "vector", B=4, H=H, K=K, V=V))
    with torch.no_grad(), poisoned_allocations():
        o, ht = GLA.step_forms["triton"](q.float(), k.float(), v.float(), g=g.float(), initial_state=h0.float(), output_final_state=True)
    ref_o, ref_ht = naive_gla(q, k, v, g=g, initial_state=h0, output_final_state=True)
    assert_close("recurrent o", o, ref_o, TOL_FLOAT32)
    assert_close("recurrent state", ht, ref_ht, TOL_FLOAT32)


def test_auto_picks_triton_on_cuda():
    from recur.ops.gla import gla

    q, k, v, g, _ = cuda(make_inputs(200, "vector", B=1, H=4, K=64, V=64))
    o, _ = gla(q.float(), k.float(), v.float(), g=g.float())
    assert_close("auto", o, naive_gla(q, k, v, g=g)[0], TOL_FLOAT32)
