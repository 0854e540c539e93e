"""TPGN: temporal PGN, a two-branch forecaster over the look-back window laid out by period.

PGN: The RNN's New Successor is Effective for Long-Range Time Series Forecasting (Jia, Lin,
Yu, Wang, Liu, Wan; NeurIPS 2024, arXiv:2409.17703), §3.2. Each channel of the look-back
window x [L] is forecast on its own, by one shared network. With period P the window is
laid out as R = ⌈L / P⌉ rows of one period each (the start padded with the first value),
so a column holds the same phase of successive periods:

    X = reshape(x, [R, P])                                   (row r: period r; column p: phase p)
    long-term:  E = X W_e + b_e                              [R, P, d]  (each value embedded)
                O[:, p] = PGN(E[:, p])                       PGN along the rows, per column
                A_long[p] = Σ_r a_r O[r, p] + a_0            [P, d]     (a linear map over all rows)
    short-term: S = X W_s + b_s                              [R, d]     (each period a patch)
                A_short = Σ_r c_r S[r] + c_0                 [d]        (shared by every column)
    output:     Y[:, p] = W_o [A_long[p], A_short] + b_o     [R_H, P],  R_H = ⌈H / P⌉
                ŷ = the first H of Y read row by row          [H]

The long-term branch sees one phase across all periods (the long-range periodic pattern,
each position kept apart); the short-term branch reads each period whole and sums them
into one global summary. The paper's calendar features, concatenated to the inputs, are
left out: the series here have none beyond their position. `TPGN` is built from a run
config whose `model.forecaster` is "tpgn" (options in `model.forecaster_options`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..layers.pgn import PGN, PGNConfig
from ..registry import did_you_mean
from .sequence import ModelOutput


@dataclass(kw_only=True)
class TPGNConfig:
    # L, the look-back steps the model reads (set from the task)
    lookback: int
    # H, the steps it predicts (set from the task)
    horizon: int
    # channels in and out, each forecast on its own by the same network (set from the task)
    features: int
    # P, the row length of the 2-D layout: the series' period (0: the task's period)
    period: int = 0
    # d, the width of both branches
    d_model: int = 64

    def __post_init__(self) -> None:
        for name in ("lookback", "horizon", "features", "period", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"tpgn: {name} must be a positive int; got {value!r}")


class TPGN(nn.Module):
    """inputs [B, L, C] -> forecasts [B, H, C], each channel through the two branches."""

    def __init__(self, config: TPGNConfig) -> None:
        super().__init__()
        self.config = config
        L, H, P, d = config.lookback, config.horizon, config.period, config.d_model
        self.rows, self.out_rows = math.ceil(L / P), math.ceil(H / P)
        # long-term branch: a scalar embedding, PGN along the rows, a map over all rows
        self.embed = nn.Linear(1, d)
        self.pgn = PGN(PGNConfig(d_model=d, window=self.rows))
        self.long_rows = nn.Linear(self.rows, 1)
        # short-term branch: a map of each period, then one over all rows
        self.patch = nn.Linear(P, d)
        self.short_rows = nn.Linear(self.rows, 1)
        # both branches per column -> that column's value in each predicted period
        self.out = nn.Linear(2 * d, self.out_rows)

    def forecast(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs [B, L, C] -> predictions [B, H, C]."""
        config = self.config
        B, L, C = inputs.shape
        if L != config.lookback or C != config.features:
            raise ValueError(
                f"tpgn: inputs have shape {list(inputs.shape)}; expected [B, {config.lookback}, {config.features}] "
                "(lookback, features)"
            )
        P, R = config.period, self.rows
        # one univariate series per (example, channel): [B C, L]
        x = inputs.transpose(1, 2).reshape(B * C, L)
        # pad the start to R whole periods with the first value, which keeps the level
        x = torch.cat([x[:, :1].expand(-1, R * P - L), x], dim=1)
        grid = x.view(B * C, R, P)
        # long-term: [B C, R, P, d] -> PGN over the R rows of each column -> [B C, P, d]
        embedded = self.embed(grid[..., None])
        columns = embedded.transpose(1, 2).reshape(B * C * P, R, -1)
        mixed, _ = self.pgn(columns)
        long_term = self.long_rows(mixed.transpose(1, 2)).squeeze(-1).view(B * C, P, -1)
        # short-term: [B C, R, d] -> [B C, d], the same for every column
        short_term = self.short_rows(self.patch(grid).transpose(1, 2)).squeeze(-1)
        fused = torch.cat([long_term, short_term[:, None].expand(-1, P, -1)], dim=-1)
        # [B C, P, R_H] -> row by row [B C, R_H P] -> the first H steps
        predicted = self.out(fused).transpose(1, 2).reshape(B * C, -1)[:, : config.horizon]
        return predicted.view(B, C, -1).transpose(1, 2)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        """inputs [B, L, C] -> ModelOutput(logits = predictions [B, H, C], loss = the MSE
        over the labels' non-NaN entries when labels are given)."""
        predictions = self.forecast(inputs)
        loss = None
        if labels is not None:
            if labels.shape != predictions.shape:
                raise ValueError(f"labels has shape {list(labels.shape)}; expected {list(predictions.shape)}")
            scored = ~torch.isnan(labels)
            target = torch.where(scored, labels, torch.zeros_like(labels)).to(predictions.dtype)
            loss = ((predictions - target).square() * scored).sum() / scored.sum().clamp_min(1)
        return ModelOutput(predictions, loss, [])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_size(self) -> int:
        """0: each forecast reads its whole window afresh; no state carries between calls."""
        return 0


# models that replace the backbone and head of a forecasting run: model.forecaster names one
FORECASTERS = {"tpgn": (TPGN, TPGNConfig)}


def build_forecaster(run, task) -> nn.Module:
    """The forecaster `run.model.forecaster` for `task` (a forecast task): the look-back,
    horizon and channels from the task, the period from `model.forecaster_options` or else
    the task's, d_model from the model section, other options from `forecaster_options`."""
    name = run.model.forecaster
    if name not in FORECASTERS:
        raise ValueError(f"model.forecaster must be one of {sorted(FORECASTERS)} (or '' for the backbone); got {name!r}")
    if task.head != "forecast":
        raise ValueError(f"model.forecaster {name!r} needs a forecasting task; task {task.name!r} has a {task.head!r} head")
    if run.head.loss_name != "mse":
        raise ValueError(f"model.forecaster {name!r} trains on the MSE; got head.loss {run.head.loss!r}")
    cls, config_cls = FORECASTERS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)} - {"lookback", "horizon", "features", "d_model"}
    for key in run.model.forecaster_options:
        if key not in fields:
            raise ValueError(f"unknown key model.forecaster_options.{key}{did_you_mean(key, fields)} Options of {name}: {sorted(fields)}")
    options = {"d_model": run.model.d_model, "period": getattr(task, "period", 0), **run.model.forecaster_options}
    config = config_cls(lookback=task.tokens_per_example(), horizon=task.horizon, features=task.features, **options)
    return cls(config)
