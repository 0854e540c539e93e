"""TPGN: shapes, gradients, the 2-D layout, a tiny overfit, and building it from a run config."""

from __future__ import annotations

import pytest
import torch

from recur.models.tpgn import TPGN, TPGNConfig


def make(lookback=30, horizon=10, features=2, period=7, d_model=8):
    torch.manual_seed(0)
    return TPGN(TPGNConfig(lookback=lookback, horizon=horizon, features=features, period=period, d_model=d_model))


@pytest.mark.parametrize(("lookback", "horizon", "period"), [(28, 14, 7), (30, 10, 7), (5, 3, 12)])
def test_output_shape(lookback, horizon, period):
    """Any look-back (the start padded to whole periods) and any horizon (the last period cut)."""
    model = make(lookback, horizon, features=3, period=period)
    out = model(torch.randn(4, lookback, 3))
    assert out.logits.shape == (4, horizon, 3) and out.loss is None


def test_gradients_reach_every_parameter():
    model = make()
    out = model(torch.randn(3, 30, 2), labels=torch.randn(3, 10, 2))
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_channels_are_forecast_independently():
    """Each channel goes through the same network on its own: changing one leaves the others."""
    model = make(features=3)
    x = torch.randn(2, 30, 3)
    y = model(x).logits
    changed = x.clone()
    changed[:, :, 1] += 1.0
    z = model(changed).logits
    torch.testing.assert_close(z[:, :, [0, 2]], y[:, :, [0, 2]])
    assert not torch.allclose(z[:, :, 1], y[:, :, 1])


def test_nan_labels_are_not_scored():
    model = make(features=1)
    x, labels = torch.randn(2, 30, 1), torch.randn(2, 10, 1)
    holes = labels.clone()
    holes[0, 3] = float("nan")
    predictions = model(x).logits
    kept = ~torch.isnan(holes)
    expected = (predictions - labels).square()[kept].mean()
    torch.testing.assert_close(model(x, labels=holes).loss, expected)


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r"expected \[B, 30, 2\] \(lookback, features\)"):
        make()(torch.randn(2, 31, 2))


def test_overfits_a_periodic_batch():
    """A few sines of period 7 with random phases: TPGN fits the continuation of 8 of them."""
    torch.manual_seed(1)
    phase = torch.rand(8, 1) * 6.3
    t = torch.arange(40.0)
    series = torch.sin(2 * torch.pi * t / 7 + phase) + 0.3 * torch.sin(2 * torch.pi * t / 3.5 + 2 * phase)
    x, y = series[:, :30, None], series[:, 30:, None]
    model = make(features=1, d_model=16)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-2)
    first = float(model(x, labels=y).loss.detach())
    for _ in range(100):
        optimiser.zero_grad()
        loss = model(x, labels=y).loss
        loss.backward()
        optimiser.step()
    final = float(loss.detach())
    assert final < 0.01 * first and final < 1e-3, (first, final)


def test_run_config_builds_tpgn_from_the_task():
    pytest.importorskip("statsmodels")
    from recur.recipes import recipe
    from recur.tasks import build_task
    from recur.train import build_model

    config = recipe("forecast_tpgn", {"task.lookback": 60, "task.horizon": 20, "model.d_model": 16})
    task = build_task("forecast", series="co2", lookback=60, horizon=20)
    model = build_model(config, task)
    assert isinstance(model, TPGN)
    # look-back, horizon and the period (52 weeks) come from the task
    assert (model.config.lookback, model.config.horizon, model.config.period) == (60, 20, 52)
    batch = task.sample(4, torch.Generator().manual_seed(0))
    out = model(batch["inputs"], labels=batch["labels"])
    assert out.logits.shape == (4, 20, 1) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="unknown key model.forecaster_options.perod; did you mean 'period'"):
        build_model(recipe("forecast_tpgn", {"model.forecaster_options": '{"perod": 12}'}), task)


def test_a_tpgn_run_loads_back(tmp_path):
    """The run folder's config rebuilds TPGN, and the saved weights give the same forecasts."""
    pytest.importorskip("statsmodels")
    from recur import load_run
    from recur.recipes import recipe
    from recur.train import train

    overrides = {"task.lookback": 52, "task.horizon": 8, "model.d_model": 8, "train.steps": 2, "train.eval_every": 2,
                 "train.batch_size": 4, "train.threads": 1}
    result = train(recipe("forecast_tpgn", overrides), tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    assert isinstance(run.model, TPGN)
    test = run.task.sample(0, torch.Generator(), "test")
    with torch.no_grad():
        predictions = run.model(test["inputs"]).logits
    assert run.task.metrics(predictions, test["labels"])["mse"] == pytest.approx(result.metrics["test/mse"], rel=1e-5)
