"""The delta rule's fused Triton decoding kernel on a CUDA device at full head size.

Marked `gpu` (run with `pytest -m gpu tests/gpu`) and skipped without CUDA.
"""

from __future__ import annotations

import pytest
import torch

from recur.ops.delta import naive_delta_rule
from tests.helpers import assert_close
from tests.ops.test_delta_triton import make_inputs
from tests.ops.test_gla_triton import poisoned_allocations

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("gated", [True, False])
def test_recurrent_kernel_matches_naive(gated):
    from recur.ops.delta.triton import triton_delta_rule_recurrent

    q, k, v, beta, g, h0 = (None if x is None else x.cuda() for x in make_inputs(500, B=3, H=16, K=128, V=128, gated=gated))
    f32 = lambda x: None if x is None else x.float()  # noqa: E731
    with torch.no_grad(), poisoned_allocations():
        o, ht = triton_delta_rule_recurrent(
            f32(q), f32(k), f32(v), beta=f32(beta), g=f32(g), initial_state=f32(h0), output_final_state=True
        )
    ref_o, ref_ht = naive_delta_rule(q, k, v, beta=beta, g=g, initial_state=h0, output_final_state=True)
    assert_close("o", o, ref_o, 1e-4)
    assert_close("final_state", ht, ref_ht, 1e-4)
