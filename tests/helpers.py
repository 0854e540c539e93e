"""Comparisons used across the test suite."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import torch

# Triton reads TRITON_INTERPRET when a function is decorated, and a compiled kernel cannot
# call an interpreted helper (nor the other way round): a kernel module is loaded together
# with every module of `@triton.jit` functions, the shared helpers first, then the
# families' kernels that import them (the launch modules reach their kernels through the
# module, `kernels.name`, so they always launch the ones loaded last).
SHARED_KERNEL_MODULES = (
    "recur.ops.common.kernels",
    "recur.ops.gla.kernels",
    "recur.ops.delta.kernels",
    "recur.ops.newton.kernels",
    "recur.ops.mlstm.kernels",
    "recur.ops.rnn.kernels",
)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| over the whole tensor (0 when both are zero)."""
    wide = torch.complex128 if (actual.is_complex() or expected.is_complex()) else torch.float64
    actual, expected = actual.detach().to(wide), expected.detach().to(wide)
    denom = expected.norm()
    diff = (actual - expected).norm()
    if denom == 0:
        return float(diff)
    return float(diff / denom)


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    assert actual.shape == expected.shape, f"{name}: shape {list(actual.shape)} != {list(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{name}: NaN in result"
    err = relative_error(actual, expected)
    assert err < tol, f"{name}: relative error {err:.3e} >= {tol:.1e}"


def weighted_sum(*tensors: torch.Tensor | None) -> torch.Tensor:
    """A scalar that depends on every element with a distinct fixed weight, so that
    backward checks every element's gradient (not just their sum)."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        w = torch.linspace(-1.0, 1.0, t.numel(), dtype=t.dtype, device=t.device).view_as(t)
        total = total + (t * w.cos()).sum()
    return total


def scalar_of(tensors) -> torch.Tensor:
    """A weighted sum of every element (real and imaginary parts apart): its gradient
    checks each element, not only their sum."""
    total = 0
    for t in tensors:
        parts = torch.view_as_real(t) if t.is_complex() else t
        w = torch.linspace(-1.0, 1.0, parts.numel(), dtype=parts.dtype, device=parts.device).view_as(parts)
        total = total + (parts * w.cos()).sum()
    return total


def family_results(family, impl: str, example, **overrides) -> dict[str, torch.Tensor]:
    """Output, final state and the gradient of every leaf of `example` (copied into fresh
    leaves) when the family's form `impl` runs on it; `overrides` replace arguments."""
    from recur.ops.family import state_tensors

    example = example.fresh()
    kwargs = {**example.kwargs, "output_final_state": True, **overrides}
    output, state = family.call(impl, example.args, kwargs)
    leaves = example.leaves()
    found = {"output": output}
    found.update((f"final_state[{i}]", s) for i, s in enumerate(state_tensors(state)))
    live = {name: leaf for name, leaf in leaves.items() if leaf.requires_grad}
    grads_ = torch.autograd.grad(scalar_of(found.values()), list(live.values()), allow_unused=True)
    for (name, leaf), grad in zip(live.items(), grads_, strict=True):
        found[f"grad {name}"] = torch.zeros_like(leaf) if grad is None else grad
    return found


def compare_results(actual: dict, expected: dict, tol: float, label: str = "") -> None:
    """Every entry of two `family_results` within `tol` (relative norm error)."""
    assert actual.keys() == expected.keys(), f"{label}: {sorted(actual)} != {sorted(expected)}"
    for key in expected:
        assert_close(f"{label} {key}".strip(), actual[key], expected[key], tol)


def grads(loss: torch.Tensor, inputs: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    live = [x for x in inputs if x is not None and x.requires_grad]
    got = iter(torch.autograd.grad(loss, live, allow_unused=True))
    return [next(got) if (x is not None and x.requires_grad) else None for x in inputs]


def load_kernel_module(name: str, interpret: bool | None = None):
    """The Triton launch module `name` loaded afresh with every kernel module, in Triton's
    interpreter or for compiling (None: as TRITON_INTERPRET says now)."""
    if interpret is True:
        os.environ["TRITON_INTERPRET"] = "1"
    elif interpret is False:
        os.environ.pop("TRITON_INTERPRET", None)
    for module in (*SHARED_KERNEL_MODULES, name):
        if module in sys.modules:
            importlib.reload(sys.modules[module])
        else:
            importlib.import_module(module)
    return sys.modules[name]


@contextlib.contextmanager
def interpreted_kernels(name: str):
    """The launch module `name`, its kernels in Triton's interpreter inside the block; loaded
    again on the way out under the previous setting, so later users get what they expect."""
    previous = os.environ.get("TRITON_INTERPRET")
    try:
        yield load_kernel_module(name, interpret=True)
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous
        load_kernel_module(name)


def layer_results(layer: torch.nn.Module, x: torch.Tensor, impl: str, dtype: torch.dtype) -> dict:
    """Output, state tensors and parameter gradients (of sum(y²)) of a mixer layer run with
    `impl` in `dtype` (the layer is cast to it)."""
    layer.zero_grad()
    layer.to(dtype)
    y, state = layer.with_impl(impl)(x.to(dtype))
    y.pow(2).sum().backward()
    results = {"output": y, **{f"state {key}": s for key, s in state.items() if isinstance(s, torch.Tensor)}}
    results.update((f"grad {n}", p.grad.clone()) for n, p in layer.named_parameters() if p.grad is not None)
    return results


def triton_and_chunk_layer(name: str, **options) -> tuple[dict, dict]:
    """layer_results of the registered mixer `name` (width 32, seed 0, x [2, 70, 32]) with
    impl="triton" in float32 and with impl="chunk" in float64, the reference."""
    from recur.layers.registry import build_mixer

    torch.manual_seed(0)
    layer = build_mixer(name, 32, **options)
    x = torch.randn(2, 70, 32)
    expected = layer_results(layer, x, "chunk", torch.float64)
    actual = layer_results(layer, x, "triton", torch.float32)
    assert actual.keys() == expected.keys() and len(expected) > 2
    return actual, expected
