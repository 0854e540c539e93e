"""Comparisons used across the test suite."""

from __future__ import annotations

import torch


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


def grads(loss: torch.Tensor, inputs: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    live = [x for x in inputs if x is not None and x.requires_grad]
    got = iter(torch.autograd.grad(loss, live, allow_unused=True))
    return [next(got) if (x is not None and x.requires_grad) else None for x in inputs]
