"""mLSTM Triton kernels on a CUDA device at full head size, against the float64 naive loop.

Marked `gpu` (deselected by default; run with `pytest -m gpu tests/gpu`) and skipped
without CUDA. The checks of tests/ops/test_mlstm_triton.py, compiled for the device, at the
launch defaults (chunks of 128, tiles of 64) and H = 16 heads of K = V = 128.
"""

from __future__ import annotations

import pytest
import torch

from recur.ops.mlstm import MLSTM
from tests.helpers import family_results, relative_error

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SIZES = {"heads": 16, "key_dim": 128, "value_dim": 128}
# float32 kernels with IEEE products against float64: rounding and the device's exp
TOL_FLOAT32 = 1e-4
# bf16 operands; the gates' and the initial state's gradients (m's above all, which reaches
# h only through eps and the floor e^{−m}) keep less (about 6e-2 for m in the interpreter)
TOL_BFLOAT16 = {"output": 3e-2, "grad arg0": 3e-2, "grad arg1": 3e-2, "grad arg2": 3e-2}
TOL_BFLOAT16_OTHERS = 1.5e-1


def errors(case: str, T: int, dtype: torch.dtype, device: str = "cuda") -> dict:
    """Relative errors of the triton form with inputs in `dtype` (states in float32) against
    the float64 loop on the same rounded inputs, for every family_results entry."""
    example = _cast(MLSTM.example_inputs(T, case=case, device=device, **SIZES), dtype, torch.float32)
    expected = family_results(MLSTM, "naive", _cast(example, torch.float64, torch.float64))
    actual = family_results(MLSTM, "triton", example)
    return {key: relative_error(actual[key].double(), expected[key]) for key in expected}


def _cast(example, dtype: torch.dtype, state_dtype: torch.dtype):
    """The example in `dtype` (its state in `state_dtype`), fresh leaves where the originals
    required grad."""
    def cast(x, to):
        return x.detach().to(to).requires_grad_(x.requires_grad)

    def convert(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return cast(x, dtype)
        if isinstance(x, tuple) and x and all(isinstance(s, torch.Tensor) for s in x):
            return type(x)(*(cast(s, state_dtype) for s in x))
        return x

    return type(example)(tuple(convert(a) for a in example.args), {key: convert(x) for key, x in example.kwargs.items()})


@pytest.mark.parametrize("case", MLSTM.cases)
def test_float32_matches_naive(case):
    found = errors(case, 1000, torch.float32)
    bad = {key: err for key, err in found.items() if not err < TOL_FLOAT32}
    assert not bad, f"float32 {case}: relative errors {found}"


@pytest.mark.parametrize("case", ["exp", "sigmoid"])
def test_bfloat16_close_to_naive(case):
    found = errors(case, 1000, torch.bfloat16)
    bad = {key: err for key, err in found.items() if not err < TOL_BFLOAT16.get(key, TOL_BFLOAT16_OTHERS)}
    assert not bad, f"bf16 {case}: relative errors {found}"
