"""How a reproduction test trains: a registered recipe with the overrides a user would
pass on the command line (`recur train --recipe NAME --KEY VALUE`), nothing else.

The trainer stops and chooses its weights on the validation split (`train.target` and
`train.select` read the task's `val/...` metric) and evaluates the test split once, on the
chosen weights; the tests assert on those `test/...` figures and, where it says something,
on the validation figure.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from recur.recipes import recipe
from recur.tasks import get_task
from recur.train import TrainResult, train
from recur.train.loop import build_model


def run_recipe(name: str, overrides: dict[str, Any] | None = None) -> TrainResult:
    """Train recipe `name` with `overrides`; prints the validation and test figures (pytest -s)."""
    result = train(recipe(name, overrides), progress=False)
    figures = {key: round(value, 3) for key, value in result.metrics.items()}
    print(
        f"{name} {overrides or {}}: {figures} after {result.steps} steps (chosen step {result.chosen_step}), "
        f"{result.seconds:.0f} s, {result.num_parameters:,} parameters, state {result.state_size} B"
    )
    return result


def build_recipe(name: str, overrides: dict[str, Any] | None = None) -> nn.Module:
    """The model a run of `run_recipe(name, overrides)` starts from, without training: the
    recipe, its overrides and the mixers' options all apply."""
    config = recipe(name, overrides)
    return build_model(config, get_task(config.task_name)(config.task))
