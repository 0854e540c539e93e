"""The DSR measures against values they must take: zero on identical data, large on unlike data."""

from __future__ import annotations

import math

import torch

from recur.dynamics import (
    hellinger_distance,
    power_spectrum,
    power_spectrum_distance,
    prediction_error,
    state_space_divergence,
    trajectory,
    valid_prediction_time,
)


def standardised(name: str, steps: int, **options) -> torch.Tensor:
    x = trajectory(name, steps, **options)
    return (x - x.mean(0)) / x.std(0)


def test_state_space_divergence_of_a_trajectory_and_itself_is_zero():
    x = standardised("lorenz63", 20_000)
    assert abs(state_space_divergence(x, x)) < 1e-12
    # another stretch of the same attractor: small; another system: far larger
    same = state_space_divergence(x[:10_000], x[10_000:])
    other = state_space_divergence(x, standardised("rossler", 20_000))
    assert same < 0.5 and other > 5 * same and other > 2, (same, other)


def test_state_space_divergence_by_gaussian_mixtures_in_high_dimension():
    x = standardised("lorenz96", 3000, dim=12, seed=0)
    assert abs(state_space_divergence(x, x)) < 1e-12
    shifted = state_space_divergence(x, x + 1.0)
    # a shift by 1 in each of 12 coordinates against kernels of variance 0.3
    assert shifted > 5, shifted


def test_binned_divergence_by_hand():
    # one dimension, two bins over the true range [0, 1]: counts (2, 1) and (1, 2); the
    # generated 1.5 is outside the range and dropped
    true = torch.tensor([[0.0], [0.4], [1.0]])
    generated = torch.tensor([[0.1], [0.6], [0.9], [1.5]])
    a = 1e-5
    p = torch.tensor([2 + a, 1 + a], dtype=torch.float64) / (3 + 2 * a)
    q = torch.tensor([1 + a, 2 + a], dtype=torch.float64) / (3 + 2 * a)
    expected = float((p * (p / q).log()).sum())
    assert math.isclose(state_space_divergence(true, generated, bins=2), expected, rel_tol=1e-12)
    # nothing generated inside the true range: undefined
    assert math.isnan(state_space_divergence(true, torch.tensor([[5.0]]), bins=2))


def test_power_spectrum_distance():
    x = standardised("lorenz63", 4000)
    assert power_spectrum_distance(x, x) == 0.0
    p = power_spectrum(x)
    assert torch.allclose(p.sum(-1), torch.ones(3, dtype=torch.float64))
    assert hellinger_distance(p, p).abs().max() < 1e-7
    # a sine and white noise have (nearly) disjoint spectra
    t = torch.arange(4000, dtype=torch.float64)
    sine = torch.sin(2 * math.pi * t / 50)[:, None]
    noise = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert power_spectrum_distance(sine, noise) > 0.8
    # batches: each trajectory its own spectrum
    assert power_spectrum_distance(x[None].expand(2, -1, -1), x[None].expand(2, -1, -1)) == 0.0


def test_prediction_error_and_valid_prediction_time():
    true = torch.zeros(2, 10, 3)
    true[:, :, 0] = torch.arange(10.0)
    predicted = true.clone()
    predicted[0, 6:] += 100.0
    assert prediction_error(true, true).abs().max() == 0
    # the first trajectory leaves at step 6, the second never
    assert valid_prediction_time(predicted, true).tolist() == [6.0, 10.0]
    error = prediction_error(predicted, true)
    assert error[:6].abs().max() == 0 and error[6] > 0
