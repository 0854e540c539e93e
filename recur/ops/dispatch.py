"""Choosing an op form: explicit, loud when impossible, never a silent fallback."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import torch

IMPLS = ("auto", "naive", "chunk", "triton")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def dispatch(family: str, forms: dict[str, Callable], impl: str, like: torch.Tensor) -> Callable:
    """The form of `family` that `impl` names, for inputs on `like`'s device."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {list(IMPLS)}; got {impl!r}")
    if impl == "auto":
        impl = "triton" if like.is_cuda and triton_available() and "triton" in forms else "chunk"
    if impl not in forms:
        raise ValueError(f"the {family} family has no {impl!r} form; available: {sorted(forms)}")
    if impl == "triton":
        if not triton_available():
            raise RuntimeError(
                f"impl='triton' needs Triton: pip install 'recur[triton]' (or use impl='chunk')"
            )
        if not like.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                f"impl='triton' runs on CUDA tensors; got {like.device}. Use impl='chunk' on "
                "this device, or set TRITON_INTERPRET=1 to run the kernels in Triton's interpreter"
            )
    return forms[impl]
