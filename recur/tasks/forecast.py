"""Long-horizon forecasting of real series that ship with statsmodels: from the last L
values, predict the next H.

The setting of the long-range forecasting literature (Informer, Zhou et al., arXiv:2012.07436;
PGN, Jia et al., arXiv:2409.17703): a look-back window of L steps, horizons H of 96, 192,
336 or 720 (any positive H here), every series standardised with the training part's mean
and standard deviation, and the error reported on that standardised scale (normalised MSE
and MAE). The series is split in time: the first part trains, the next validates, the last
tests. A validation or test window's targets all lie in its part, while its look-back may
reach back into the part before (as in that literature), so the parts need only hold H
steps each, and no target is ever seen in training.

Series (statsmodels.datasets, no download): "sunspots" (yearly, 309 values, period about 11),
"co2" (weekly Mauna Loa CO2, 2,284 values, the 59 missing ones interpolated linearly, period
52), "elnino" (monthly sea-surface temperatures, 732 values, period 12) and "macrodata" (12
quarterly US macroeconomic series, 203 values each, period 4). With `channel_independent`
each channel of a multivariate series is its own univariate example (one model for all);
without, the model reads and predicts all channels together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Batch, Task, TaskConfig, register_task

# name -> (the natural period in steps, what one step is)
SERIES = {"sunspots": (11, "year"), "co2": (52, "week"), "elnino": (12, "month"), "macrodata": (4, "quarter")}
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def load_series(name: str) -> torch.Tensor:
    """The series `name` of SERIES as float64 [N, C], in time order; statsmodels ships the data."""
    if name not in SERIES:
        raise ValueError(f"task.series must be one of {sorted(SERIES)}; got {name!r}")
    try:
        from statsmodels import datasets
    except ImportError as error:
        raise ImportError("the forecast task reads statsmodels' bundled series: pip install 'recur[forecast]'") from error
    data = getattr(datasets, name).load_pandas().data
    if name == "sunspots":
        values = data[["SUNACTIVITY"]].to_numpy()
    elif name == "co2":
        values = data[["co2"]].interpolate(method="linear", limit_direction="both").to_numpy()
    elif name == "elnino":
        # one row per year, one column per month: read row by row
        values = data[list(MONTHS)].to_numpy().reshape(-1, 1)
    else:
        values = data.drop(columns=["year", "quarter"]).to_numpy()
    return torch.tensor(values, dtype=torch.float64)


@dataclass(kw_only=True)
class ForecastConfig(TaskConfig):
    """Which series, the look-back and horizon, and the split in time. Evaluation reads
    every window of a split (eval_examples is not used)."""

    series: str = "co2"
    # L, the steps the model reads
    lookback: int = 96
    # H, the steps it predicts
    horizon: int = 96
    # each channel its own univariate example (always true of a one-channel series)
    channel_independent: bool = True
    # each window minus its last look-back value, inputs and targets alike (NLinear: Zeng, Chen,
    # Zhang, Xu, arXiv:2205.13504). An error does not change under the shift, so the metrics
    # keep their meaning; a model then predicts changes, which a trending series (co2) needs
    # once its test part lies above every level seen in training
    subtract_last: bool = False
    # fractions of the series (in time order) for validation and for testing; training gets the rest
    val_fraction: float = 0.1
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.series not in SERIES:
            raise ValueError(f"task.series must be one of {sorted(SERIES)}; got {self.series!r}")
        for name in ("lookback", "horizon"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"task.{name} must be a positive int; got {value!r}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"task.{name} must be in (0, 1); got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"task.val_fraction + task.test_fraction must leave a training part; got "
                f"{self.val_fraction} + {self.test_fraction}"
            )


@register_task("forecast")
class Forecast(Task):
    """Long-horizon forecasting of a statsmodels series: L values in, the next H out (normalised MSE)."""

    Config = ForecastConfig
    input = "vectors"
    head = "forecast"
    metric = "val/mse"
    higher_is_better = False

    def __init__(self, config: ForecastConfig) -> None:
        super().__init__(config)
        series = load_series(config.series)
        N, C = series.shape
        L, H = config.lookback, config.horizon
        n_test = int(N * config.test_fraction)
        n_val = int(N * config.val_fraction)
        n_train = N - n_val - n_test
        # where each split's targets may start and end (exclusive)
        self.bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, N)}
        needs = {"train": L + H, "val": H, "test": H}
        for split, (start, end) in self.bounds.items():
            if end - start < needs[split]:
                raise ValueError(
                    f"task: the {split} part of {config.series!r} ({end - start} of {N} steps) cannot hold "
                    f"{'the look-back and ' if split == 'train' else ''}the horizon ({needs[split]} steps); "
                    f"lower task.lookback ({L}) or task.horizon ({H}), or change the split fractions"
                )
        train = series[:n_train]
        # the training part's statistics standardise the whole series
        self.mean, self.std = train.mean(0), train.std(0).clamp_min(1e-8)
        self.series = ((series - self.mean) / self.std).float()
        self.period = SERIES[config.series][0]
        self.channels = C
        self.features = self.num_outputs = 1 if config.channel_independent else C
        self.horizon = H

    def window_starts(self, split: str) -> torch.Tensor:
        """The first look-back step of every window whose targets lie in `split`."""
        start, end = self.bounds[split]
        L, H = self.config.lookback, self.config.horizon
        first_target = start + L if split == "train" else start
        return torch.arange(first_target - L, end - H - L + 1)

    def windows(self, starts: torch.Tensor, channels: torch.Tensor | None) -> Batch:
        """inputs [n, L, F] and labels [n, H, F] of the windows at `starts`; with
        `channels` (channel-independent) window i reads channel channels[i] only."""
        L, H = self.config.lookback, self.config.horizon
        steps = starts[:, None] + torch.arange(L + H)
        values = self.series[steps]  # [n, L + H, C]
        if channels is not None:
            values = values.gather(2, channels[:, None, None].expand(-1, L + H, 1))
        if self.config.subtract_last:
            values = values - values[:, L - 1 : L]
        return {"inputs": values[:, :L], "labels": values[:, L:]}

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Batch:
        if split not in self.bounds:
            raise ValueError(f"split must be one of {list(self.bounds)}; got {split!r}")
        starts = self.window_starts(split)
        independent = self.config.channel_independent
        if split != "train":
            # evaluation reads every window of the split (and every channel), in order
            if not independent:
                return self.windows(starts, None)
            C = self.channels
            return self.windows(starts.repeat_interleave(C), torch.arange(C).repeat(len(starts)))
        pick = torch.randint(0, len(starts), (n,), generator=generator)
        channels = torch.randint(0, self.channels, (n,), generator=generator) if independent else None
        return self.windows(starts[pick], channels)

    def metrics(self, predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        error = predictions.float() - labels
        return {"mse": float(error.square().mean()), "mae": float(error.abs().mean())}

    def tokens_per_example(self) -> int:
        return self.config.lookback
