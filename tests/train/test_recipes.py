"""Recipes: every one builds and trains a few steps; the default one reaches its target (slow)."""

from __future__ import annotations

import pytest

from recur.recipes import RECIPES, recipe
from recur.train import train

SHRINK = {"train.steps": 2, "train.eval_every": 2, "train.batch_size": 8, "train.threads": 1, "task.eval_examples": 8}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_runs(name):
    overrides = dict(SHRINK)
    if name == "digits":
        overrides.pop("task.eval_examples")  # digits evaluates on its fixed test split
    result = train(recipe(name, overrides), progress=False)
    assert result.steps == 2 and result.metric == result.metric


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_leave_cpu_threads_to_the_machine(name):
    # train.threads 0: the run picks from the CPUs and the load it finds, and says so
    assert recipe(name).train.threads == 0


@pytest.mark.slow
def test_default_recipe_reaches_its_target():
    config = recipe("default")
    result = train(config, progress=False)
    assert result.metric >= config.train.target, result.history
