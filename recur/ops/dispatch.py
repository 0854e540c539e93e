"""Choosing an op form: explicit, loud when impossible, never a silent fallback."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import torch

# "naive": the step-by-step spec; "chunk": chunkwise-parallel PyTorch; "sequential": a loop
# with a hand-written backward (nonlinear RNNs); "newton": parallel-in-time Newton solves
# (ParaRNN); "triton": fused GPU kernels; "native": torch's own fused kernel (layers whose
# recurrence torch has, e.g. LSTM and GRU). A family offers the subset it has.
IMPLS = ("auto", "naive", "chunk", "sequential", "newton", "triton", "native")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def dispatch(
    family: str, forms: dict[str, Callable], impl: str, like: torch.Tensor, default: str = "chunk"
) -> Callable:
    """The form of `family` that `impl` names, for inputs on `like`'s device.

    "auto" is the Triton form on CUDA when Triton is installed, else `default` (or the
    first of chunk, sequential, naive that the family has).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {list(IMPLS)}; got {impl!r}")
    if impl == "auto":
        impl = "triton" if like.is_cuda and triton_available() and "triton" in forms else default
        if impl not in forms:
            impl = next(name for name in ("chunk", "sequential", "naive") if name in forms)
    if impl not in forms:
        raise ValueError(f"the {family} family has no {impl!r} form; available: {sorted(forms)}")
    if impl == "triton":
        if not triton_available():
            raise RuntimeError(
                "impl='triton' needs Triton: pip install 'recur[triton]' (or use impl='chunk')"
            )
        if not like.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                f"impl='triton' runs on CUDA tensors; got {like.device}. Use impl='chunk' on "
                "this device, or set TRITON_INTERPRET=1 to run the kernels in Triton's interpreter"
            )
    return forms[impl]
