"""Checks every mixer must pass, as functions of a built layer, so that tests can apply
them to the registry's defaults (test_properties.py) and to option variants."""

from __future__ import annotations

import torch

from recur.layers import Mixer
from tests.helpers import assert_close


def inputs(d_model: int, B: int = 2, T: int = 37, dtype=torch.float64, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, d_model, generator=gen, dtype=torch.float64).to(dtype)


def states_close(label: str, a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys(), f"{label}: state keys {sorted(a)} != {sorted(b)}"
    for key in a:
        if a[key].dtype in (torch.int64, torch.int32, torch.bool):
            assert torch.equal(a[key], b[key]), f"{label} state[{key}] differs"
        else:
            assert_close(f"{label} state[{key}]", a[key], b[key], tol)


def check_state_carry(layer: Mixer, d_model: int, tol: float = 1e-10) -> None:
    """Running [0:t] then [t:T] with the carried state equals running [0:T]."""
    x = inputs(d_model, T=45)
    y, state = layer(x)
    for split in (1, 20, 44):
        y1, s1 = layer(x[:, :split])
        y2, s2 = layer(x[:, split:], s1)
        assert_close(f"{layer.name} output split at {split}", torch.cat([y1, y2], 1), y, tol)
        states_close(f"{layer.name} split at {split}", s2, state, tol)


def check_step_equals_forward(layer: Mixer, d_model: int, tol: float = 1e-10) -> None:
    x = inputs(d_model, T=19)
    y, state = layer(x)
    step_state, outputs = None, []
    for t in range(x.shape[1]):
        y_t, step_state = layer.step(x[:, t], step_state)
        outputs.append(y_t)
    assert_close(f"{layer.name} step loop", torch.stack(outputs, 1), y, tol)
    states_close(f"{layer.name} step", step_state, state, tol)


def check_forms_match_naive(layer: Mixer, d_model: int, tol: float = 1e-10) -> None:
    x = inputs(d_model, T=70)
    reference, ref_state = layer.with_impl("naive")(x) if "naive" in layer.impls else layer(x)
    for impl in layer.impls:
        if impl == "triton":
            continue
        y, state = layer.with_impl(impl)(x)
        assert_close(f"{layer.name} impl={impl}", y, reference, tol)
        states_close(f"{layer.name} impl={impl}", state, ref_state, tol)


def check_all(layer: Mixer, d_model: int) -> None:
    check_forms_match_naive(layer, d_model)
    if layer.causal:
        check_state_carry(layer, d_model)
        check_step_equals_forward(layer, d_model)
