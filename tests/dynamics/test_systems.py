"""The systems and their reference values: Lyapunov exponents, Kaplan–Yorke dimension, KS."""

from __future__ import annotations

import torch

from recur.dynamics import (
    KuramotoSivashinsky,
    Lorenz63,
    Lorenz96,
    kaplan_yorke_dimension,
    lyapunov_spectrum,
    trajectory,
)


def test_lorenz63_lyapunov_spectrum():
    system = Lorenz63()
    # 32 starts along the attractor, 30 time units each after 2 of alignment
    starts = trajectory("lorenz63", 32_000, seed=1)[::1000]
    spectrum = lyapunov_spectrum(system.step, starts, 3000, dt=system.dt, transient=200, renormalize_every=5)
    mean = spectrum.mean(0)
    # λ_max = 0.906 (Sprott, Chaos and Time-Series Analysis, 2003). Finite-time exponents of
    # 30 time units scatter by ~0.075 (measured), so the mean of 32 has a standard error of
    # ~0.013: 0.05 is four of them
    assert abs(mean[0] - 0.906) < 0.05, spectrum
    assert abs(mean[1]) < 0.03
    # a flow's exponents sum to the mean divergence of its field, here the constant
    # −(σ + 1 + β); exact along every trajectory, up to RK4's error
    assert torch.allclose(spectrum.sum(1), torch.full((32,), -(10 + 1 + 8 / 3), dtype=torch.float64), atol=1e-3)
    # the Lorenz attractor's dimension, 2.06
    assert abs(kaplan_yorke_dimension(mean) - 2.06) < 0.01


def test_kaplan_yorke_dimension():
    assert kaplan_yorke_dimension(torch.tensor([0.5, 0.0, -1.0])) == 2.5
    assert kaplan_yorke_dimension(torch.tensor([-0.1, -1.0])) == 0.0
    # a volume-expanding map: every exponent counts
    assert kaplan_yorke_dimension(torch.tensor([1.0, 0.5])) == 2.0


def test_trajectories_are_deterministic_cached_and_float64():
    a = trajectory("rossler", 500, seed=3)
    assert a is trajectory("rossler", 500, seed=3)
    assert a.dtype == torch.float64 and a.shape == (500, 3)
    assert not torch.equal(a, trajectory("rossler", 500, seed=4))
    x = trajectory("lorenz96", 300, dim=6, seed=0)
    assert x.shape == (300, 6) and torch.isfinite(x).all()
    # the float fast path and the tensor step are the same RK4
    x0 = trajectory("lorenz63", 2, seed=0)
    assert torch.allclose(Lorenz63().step(x0[:1]), x0[1:], rtol=0, atol=1e-12)


def test_lorenz96_is_chaotic_in_any_dimension():
    system = Lorenz96(dim=8)
    x = trajectory("lorenz96", 3000, dim=8, seed=0)[::1000]
    lam = lyapunov_spectrum(system.step, x, 1000, exponents=2, dt=system.dt, transient=100, renormalize_every=5)
    # F = 8 is chaotic for D = 8 (λ_max ~ 1, Karimi & Paul, Chaos 2010)
    assert (lam[:, 0] > 0.3).all(), lam


def test_ks_conserves_the_mean_and_converges_at_fourth_order():
    u0 = KuramotoSivashinsky().initial(torch.Generator().manual_seed(0))[None] + 0.3
    coarse, fine, finest = (KuramotoSivashinsky(dt=dt) for dt in (0.2, 0.1, 0.05))
    u = {name: u0.clone() for name in ("coarse", "fine", "finest")}
    for _ in range(20):
        u["coarse"] = coarse.step(u["coarse"])
        for _ in range(2):
            u["fine"] = fine.step(u["fine"])
        for _ in range(4):
            u["finest"] = finest.step(u["finest"])
    # the k = 0 mode has L = 0 and no nonlinear term: the mean stays put to rounding
    for v in u.values():
        assert abs(float(v.mean() - u0.mean())) < 1e-12
    # ETDRK4: halving dt divides the error (against a smaller step) by ~2^4
    error_coarse = (u["coarse"] - u["finest"]).abs().max()
    error_fine = (u["fine"] - u["finest"]).abs().max()
    assert error_fine < 1e-4
    assert error_coarse / error_fine > 8, (error_coarse, error_fine)


def test_ks_trajectory_is_chaotic_with_zero_mean():
    u = trajectory("ks", 400, dim=32, seed=0)
    assert u.shape == (400, 32)
    assert u.mean(1).abs().max() < 1e-10
    # the attractor, not the decaying start: O(1) fluctuations
    assert 0.5 < float(u.std()) < 3
