"""The delta rule's fused Triton decoding kernel in Triton's interpreter, against the naive loop.

Small sizes: the interpreter runs every program in Python. Every buffer the kernel
allocates is filled with NaN first, so an element it forgets to write fails the comparison.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from recur.ops.delta import naive_delta_rule
from tests.helpers import assert_close
from tests.ops.test_gla_triton import poisoned_allocations

pytest.importorskip("triton")

TOL_FLOAT32 = 2e-5


@pytest.fixture(scope="module")
def kernels():
    """The kernel module loaded with TRITON_INTERPRET=1, and loaded again on the way out."""
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    name = "recur.ops.delta.triton"
    module = importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
    yield module
    if previous is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = previous
    importlib.reload(module)


def make_inputs(T, B=2, H=2, K=32, V=48, gated=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    # β in [0, 2]: negative eigenvalues included
    beta = 2 * torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    g = F.logsigmoid(torch.randn(B, T, H, generator=gen, dtype=torch.float64)) if gated else None
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64)
    return q, k, v, beta, g, h0


@pytest.mark.parametrize("gated", [True, False])
def test_matches_naive(kernels, gated):
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


def test_float64_and_bfloat16(kernels):
    q, k, v, beta, g, h0 = make_inputs(16)
    o, ht = kernels.triton_delta_rule_recurrent(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert o.dtype == ht.dtype == torch.float64
    ref_o, ref_ht = naive_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert_close("float64 o", o, ref_o, TOL_FLOAT32)
    bf16 = lambda x: x.bfloat16()  # noqa: E731
    o, _ = kernels.triton_delta_rule_recurrent(bf16(q), bf16(k), bf16(v), beta=bf16(beta), g=bf16(g), initial_state=h0.float())
    assert o.dtype == torch.bfloat16
    assert_close("bf16 o", o, ref_o, 3e-2)


def test_signature_and_refusals(kernels):
    import inspect

    assert inspect.signature(kernels.triton_delta_rule_recurrent) == inspect.signature(naive_delta_rule)
    q, k, v, beta, g, _ = (x.float() for x in make_inputs(4))
    with pytest.raises(ValueError, match="computes no gradients"):
        kernels.triton_delta_rule_recurrent(q.requires_grad_(), k, v, beta=beta, g=g)
    wide = torch.randn(1, 2, 1, 512)
    with pytest.raises(ValueError, match="head widths up to 256; got K = 512"):
        kernels.triton_delta_rule_recurrent(wide, wide, wide[..., :8], beta=torch.ones(1, 2, 1))
