"""Fixed and slow points by minimising q = ½‖F(s) − s‖², on cells whose fixed points are known."""

from __future__ import annotations

import math

import pytest
import torch

from recur.analysis import StateMap, find_fixed_points
from recur.analysis.fixed_points import jacobians
from recur.layers import build_mixer

# the positive root of tanh(2a) = a
ROOT = 0.9575040240772687


def doubling_elman() -> StateMap:
    """h' = tanh(2 h) per unit, two units, input 0: fixed points {−a, 0, a}², a = tanh(2a)."""
    layer = build_mixer("elman", d_model=2).double()
    with torch.no_grad():
        layer.directions[0].R.copy_(2 * torch.eye(2))
        layer.directions[0].b.zero_()
    return StateMap(layer.step, torch.zeros(1, 2, dtype=torch.float64), layer.init_state(1))


def test_tanh_root():
    assert math.tanh(2 * ROOT) == pytest.approx(ROOT, abs=1e-15)


def test_finds_every_fixed_point_of_a_known_cell():
    F = doubling_elman()
    assert F.dim == 2
    starts = (torch.rand(60, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5) * 3
    points = find_fixed_points(F, starts, steps=200, lr=0.05)
    found = sorted(tuple(round(float(v) / ROOT) for v in p.state) for p in points)
    assert found == sorted((i, j) for i in (-1, 0, 1) for j in (-1, 0, 1))
    for point in points:
        assert point.speed == "fixed" and point.q < 1e-20
        torch.testing.assert_close(point.state.abs(), ROOT * point.state.abs().round(), rtol=0, atol=1e-12)
        # at ±a the slope 2(1 − a²) < 1 attracts; at 0 the slope 2 repels
        units_at_zero = int((point.state.abs() < 0.5).sum())
        assert point.kind == {0: "stable", 1: "saddle", 2: "unstable"}[units_at_zero]


def test_a_slow_point_is_not_called_fixed():
    # h' = h + h² + 1e-3, the ghost of a saddle-node: no fixed point, the slowest state is
    # h = 0 with q = ½ (1e-3)²
    def step(x, state):
        h = state["h"]
        return h, {"h": h + h * h + 1e-3}

    F = StateMap(step, torch.zeros(1, 1), {"h": torch.zeros(1, 1, dtype=torch.float64)})
    starts = torch.linspace(-0.3, 0.3, 7, dtype=torch.float64)[:, None]
    # the valley is flat (q grows as 1e-3 h²): the minima stop within a few 1e-3 of 0, so
    # they are merged at a coarser distance than the default
    (point,) = find_fixed_points(F, starts, steps=400, lr=0.01, distinct=0.05)
    assert point.speed == "slow" and point.q == pytest.approx(0.5e-6, rel=1e-3)
    assert abs(float(point.state)) < 1e-2 and point.eigenvalues.real.item() == pytest.approx(1.0, abs=2e-2)
    assert find_fixed_points(F, starts, steps=400, lr=0.01, slow_q=1e-7) == []


def test_lstm_fixed_points_are_fixed():
    torch.manual_seed(0)
    layer = build_mixer("lstm", d_model=4).double()
    F = StateMap(layer.step, torch.randn(1, 4, dtype=torch.float64), layer.init_state(1))
    assert F.dim == 8
    starts = torch.randn(16, 8, dtype=torch.float64)
    points = find_fixed_points(F, starts, steps=200, lr=0.05)
    assert points
    for point in points:
        s = point.state[None]
        torch.testing.assert_close(F(s), s, rtol=0, atol=1e-9)
        J = torch.autograd.functional.jacobian(lambda v: F(v[None])[0], point.state)
        torch.testing.assert_close(jacobians(F, s)[0], J)
    # the state round-trips through its flat form
    state = {"h": torch.randn(3, 1, 4, dtype=torch.float64), "c": torch.randn(3, 1, 4, dtype=torch.float64)}
    back = F.unflatten(F.flatten(state))
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_bad_arguments_are_named():
    F = doubling_elman()
    with pytest.raises(ValueError, match="starts must have shape"):
        find_fixed_points(F, torch.zeros(2))
    with pytest.raises(ValueError, match="steps must be"):
        find_fixed_points(F, torch.zeros(2, 2, dtype=torch.float64), steps=-1)
    with pytest.raises(ValueError, match="batch 1"):
        StateMap(F.step, torch.zeros(2, 2), F.template)


def test_settling_reaches_a_far_attractor():
    # h' = 0.99 h + 1: one stable fixed point at 100, far from starts near 0
    def step(x, state):
        return None, {"h": 0.99 * state["h"] + 1}

    F = StateMap(step, torch.zeros(1, 1), {"h": torch.zeros(1, 1, dtype=torch.float64)})
    starts = torch.zeros(4, 1, dtype=torch.float64)
    assert find_fixed_points(F, starts, steps=50, newton_steps=0) == []
    (point,) = find_fixed_points(F, starts, steps=50, newton_steps=0, settle=2000)
    assert point.kind == "stable" and float(point.state) == pytest.approx(100, abs=1e-3)
    # Newton's step is exact on an affine map
    (point,) = find_fixed_points(F, starts, steps=0)
    assert point.speed == "fixed" and float(point.state) == pytest.approx(100, abs=1e-10)


def test_jacobians_without_a_batching_rule(monkeypatch):
    torch.manual_seed(1)
    layer = build_mixer("gru", d_model=3).double()
    F = StateMap(layer.step, torch.randn(1, 3, dtype=torch.float64), layer.init_state(1))
    s = torch.randn(5, 3, dtype=torch.float64)
    batched = jacobians(F, s)
    real_grad = torch.autograd.grad

    def unbatched_only(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented")
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", unbatched_only)
    torch.testing.assert_close(jacobians(F, s), batched, rtol=0, atol=1e-14)
    for n in range(5):
        J = torch.autograd.functional.jacobian(lambda v: F(v[None])[0], s[n])
        torch.testing.assert_close(batched[n], J)
