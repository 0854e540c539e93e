"""The forecasting task: statsmodels' series, split in time, standardised by the training part."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("statsmodels")

from recur.tasks import build_task  # noqa: E402
from recur.tasks.forecast import load_series  # noqa: E402


@pytest.mark.parametrize(("name", "shape"), [("sunspots", (309, 1)), ("co2", (2284, 1)), ("elnino", (732, 1)), ("macrodata", (203, 12))])
def test_series_load_whole_and_finite(name, shape):
    series = load_series(name)
    assert series.shape == shape and torch.isfinite(series).all()


def test_splits_are_in_time_order_and_targets_never_overlap():
    task = build_task("forecast", series="co2", lookback=50, horizon=20)
    L, H = 50, 20
    targets = {}
    for split in ("train", "val", "test"):
        starts = task.window_starts(split)
        targets[split] = (int(starts.min()) + L, int(starts.max()) + L + H)
    # train targets end before val's begin, val's before test's, and test reaches the end
    assert targets["train"][1] <= targets["val"][0] and targets["val"][1] <= targets["test"][0]
    assert targets["test"][1] == 2284
    # a val window's look-back reaches into the training part; its targets start at the border
    assert targets["val"][0] == task.bounds["val"][0]


def test_windows_are_the_standardised_series():
    task = build_task("forecast", series="sunspots", lookback=12, horizon=4)
    raw = load_series("sunspots")
    train = raw[: task.bounds["train"][1]]
    standardised = (raw - train.mean(0)) / train.std(0)
    batch = task.sample(5, torch.Generator().manual_seed(0), "test")
    start = int(task.window_starts("test")[0])
    torch.testing.assert_close(batch["inputs"][0, :, 0], standardised[start : start + 12, 0].float())
    torch.testing.assert_close(batch["labels"][0, :, 0], standardised[start + 12 : start + 16, 0].float())
    # training statistics: the training part has mean 0 and std 1, later parts need not
    assert abs(float(task.series[: task.bounds["train"][1]].mean())) < 1e-5


def test_evaluation_reads_every_window_and_channel():
    task = build_task("forecast", series="macrodata", lookback=8, horizon=4)
    windows = len(task.window_starts("val"))
    batch = task.sample(3, torch.Generator(), "val")
    assert batch["inputs"].shape == (windows * 12, 8, 1) and batch["labels"].shape == (windows * 12, 4, 1)
    joint = build_task("forecast", series="macrodata", lookback=8, horizon=4, channel_independent=False)
    assert joint.features == joint.num_outputs == 12
    assert joint.sample(3, torch.Generator(), "val")["inputs"].shape == (windows, 8, 12)
    assert joint.sample(3, torch.Generator(), "train")["labels"].shape == (3, 4, 12)


def test_subtract_last_shifts_inputs_and_targets_alike():
    plain = build_task("forecast", series="co2", lookback=20, horizon=5)
    shifted = build_task("forecast", series="co2", lookback=20, horizon=5, subtract_last=True)
    a, b = plain.sample(4, torch.Generator(), "test"), shifted.sample(4, torch.Generator(), "test")
    last = a["inputs"][:, -1:]
    torch.testing.assert_close(b["inputs"], a["inputs"] - last)
    torch.testing.assert_close(b["labels"], a["labels"] - last)
    assert (b["inputs"][:, -1] == 0).all()


def test_metrics_are_mse_and_mae():
    task = build_task("forecast", series="sunspots", lookback=12, horizon=4)
    labels = torch.zeros(2, 4, 1)
    predictions = torch.full((2, 4, 1), 2.0)
    assert task.metrics(predictions, labels) == {"mse": 4.0, "mae": 2.0}


@pytest.mark.parametrize(("options", "message"), [
    ({"series": "nile2"}, "task.series must be one of"),
    ({"horizon": 0}, "task.horizon must be a positive int"),
    ({"series": "co2", "horizon": 336}, r"the val part of 'co2' \(228 of 2284 steps\) cannot hold the horizon \(336 steps\)"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "must leave a training part"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        build_task("forecast", **options)


def test_any_horizon_fits_when_the_parts_are_long_enough():
    task = build_task("forecast", series="co2", lookback=96, horizon=336, val_fraction=0.15, test_fraction=0.2)
    assert task.sample(2, torch.Generator(), "train")["labels"].shape == (2, 336, 1)
