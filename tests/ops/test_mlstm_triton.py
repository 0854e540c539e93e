"""mLSTM Triton kernels (two levels of tiles) in Triton's interpreter on the CPU, against the
float64 naive loop.

The chunk is shrunk to 32 steps and the tiles to 16 steps and 16 head columns, so that every
chunk holds two query tiles and two key tiles (the off-diagonal tile pairs and the chunk
walks both run) and K = V = 32 takes two head tiles. Every buffer the kernels allocate is
filled with NaN first, so an element a kernel forgets to write fails the comparison. The
generic checks (packed batches, split sequences, closed gates, bad arguments) run in
tests/ops/test_families.py and tests/ops/test_nonfinite.py at the launch defaults.
"""

from __future__ import annotations

import pytest
import torch

from recur.ops.mlstm import MLSTM
from tests.helpers import compare_results, family_results, interpreted_kernels
from tests.ops.test_gla_triton import poisoned_allocations

pytest.importorskip("triton")

# float32 kernels against the float64 loop: rounding of float32 products and sums
TOL_FLOAT32 = 2e-5


@pytest.fixture(scope="module")
def launcher():
    """The launch module with small chunks and tiles, its kernels in Triton's interpreter."""
    with interpreted_kernels("recur.ops.mlstm.triton") as module:
        module.CHUNK, module.TILE, module.HEAD_TILE = 32, 16, 16
        yield module


@pytest.mark.parametrize(
    ("case", "T", "width"),
    [("exp", 37, 32), ("sigmoid", 64, 16), ("strong_forget", 130, 16)],
)
def test_outputs_states_and_gradients_match_the_loop(launcher, case, T, width):
    """h, the final (C, n, m) and the gradients of q, k, v, ĩ, f̃ and the initial state."""
    example = MLSTM.example_inputs(T, case=case, heads=2, key_dim=width, value_dim=width)
    expected = family_results(MLSTM, "naive", example)
    with poisoned_allocations():
        actual = family_results(MLSTM, "triton", _float32(example))
    compare_results(actual, expected, TOL_FLOAT32, f"{case} T={T}")


@pytest.mark.parametrize(
    ("name", "i_shift", "f_shift"),
    [("large input gates", 60.0, 0.0), ("forget near 0", 0.0, -32.0), ("forget near 1", 0.0, 30.0)],
)
def test_extreme_gates_stay_finite(launcher, name, i_shift, f_shift):
    """Input-gate pre-activations up to about +80 and forget gates at σ(±30): no overflow, and
    float32 within 1e-4 of the float64 loop (the stabiliser keeps every exponent <= 0)."""
    example = MLSTM.example_inputs(37, heads=2, key_dim=16, value_dim=16, seed=3)
    with torch.no_grad():
        example.kwargs["i"].add_(i_shift)
        example.kwargs["f"].add_(f_shift)
    expected = family_results(MLSTM, "naive", example)
    got = family_results(MLSTM, "triton", _float32(example))
    for key, value in got.items():
        assert torch.isfinite(value).all(), f"{name}: {key} not finite"
    compare_results(got, expected, 1e-4, name)


def test_eps_scale_and_no_initial_state(launcher):
    """A large eps makes h depend on m through eps at every step, so m's gradient (routed to
    the term that set each m_t) is exercised everywhere; without an initial state m_0 = 0."""
    example = MLSTM.example_inputs(37, heads=2, key_dim=16, value_dim=16, seed=5)
    example.kwargs.update(eps=0.5, scale=0.2, initial_state=None)
    expected = family_results(MLSTM, "naive", example)
    compare_results(family_results(MLSTM, "triton", _float32(example)), expected, TOL_FLOAT32, "eps=0.5")


def test_wide_heads_are_refused_naming_the_widths(launcher):
    example = MLSTM.example_inputs(4, key_dim=272, value_dim=8)
    with pytest.raises(ValueError, match="K = 272"):
        MLSTM.call("triton", example.args, example.kwargs)


def _float32(example):
    """The example's tensors in float32, fresh leaves where the originals required grad."""
    def cast(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.detach().float().requires_grad_(x.requires_grad)
        if isinstance(x, tuple) and x and all(isinstance(s, torch.Tensor) for s in x):
            return type(x)(*(cast(s) for s in x))
        return x

    return type(example)(tuple(cast(a) for a in example.args), {key: cast(x) for key, x in example.kwargs.items()})
