"""Typed dotted overrides and the run config's JSON round trip."""

from __future__ import annotations

import pytest

from recur.recipes import RECIPES, recipe
from recur.tasks.parity import ParityConfig
from recur.train import from_dict, to_dict


def test_overrides_are_typed():
    config = recipe("mqar", {
        "train.steps": "2000", "train.lr": "1e-3", "train.target": "none", "train.compile": "false",
        "task.num_kv_pairs": "4", "model.pattern": "gla,attention", "model.mixer_options.gla.num_heads": "2",
    })
    assert config.train.steps == 2000 and config.train.lr == 1e-3 and config.train.target is None
    assert config.train.compile is False and config.task.num_kv_pairs == 4
    assert config.model.pattern == ("gla", "attention")
    assert config.model.mixer_options["gla"] == {"num_heads": 2}
    # already-typed values work too (the programmatic API)
    assert recipe("mqar", {"train.steps": 5}).train.steps == 5


def test_unknown_key_names_close_matches():
    with pytest.raises(ValueError, match=r"unknown key 'train.stepz'; did you mean 'train.steps'"):
        recipe("mqar", {"train.stepz": "3"})
    with pytest.raises(ValueError, match=r"unknown key 'task.num_kv_pair'; did you mean 'task.num_kv_pairs'"):
        recipe("mqar", {"task.num_kv_pair": "3"})
    with pytest.raises(ValueError, match=r"unknown key model.mixer_options.gla.num_head; did you mean 'num_heads'"):
        recipe("mqar", {"model.mixer_options.gla.num_head": "3"})


def test_wrong_type_names_the_expected_type():
    with pytest.raises(ValueError, match=r"train.steps expects int; got 'many'"):
        recipe("mqar", {"train.steps": "many"})
    with pytest.raises(ValueError, match=r"train.compile expects bool; got 'maybe' \(use true or false\)"):
        recipe("mqar", {"train.compile": "maybe"})
    with pytest.raises(ValueError, match=r"task.train_lengths expects tuple\[int, int\]; got '3'"):
        recipe("parity", {"task.train_lengths": "3"})
    with pytest.raises(ValueError, match=r"model.mixer_options.gla.num_heads expects int; got 'two'"):
        recipe("mqar", {"model.mixer_options.gla.num_heads": "two"})


def test_bad_values_are_rejected_before_training():
    with pytest.raises(ValueError, match=r"vocab_size = 8 is too small for num_kv_pairs = 8"):
        recipe("mqar", {"task.vocab_size": "8"})
    with pytest.raises(ValueError, match=r"unknown mixer 'glaa'"):
        recipe("mqar", {"model.mixer": "glaa"})
    with pytest.raises(ValueError, match="model.vocab_size is set by the task"):
        recipe("mqar", {"model.vocab_size": "300"})
    with pytest.raises(ValueError, match=r"train.batch_size = 10 must be divisible by train.grad_accum = 3"):
        recipe("mqar", {"train.batch_size": "10", "train.grad_accum": "3"})
    with pytest.raises(ValueError, match=r"unknown recipe 'mqr'; did you mean 'mqar'"):
        recipe("mqr")


def test_mixer_override_replaces_the_recipes_pattern():
    assert recipe("mqar").model.pattern == ("mamba2", "attention")
    config = recipe("mqar", {"model.mixer": "gla"})
    assert config.model.pattern == () and config.model.layer_mixers() == ["gla", "gla"]
    config = recipe("mqar", {"model.mixer": "gla", "model.pattern": "gla,attention"})
    assert config.model.layer_mixers() == ["gla", "attention"]


def test_task_switch_starts_from_the_new_tasks_defaults():
    config = recipe("mqar", {"task.name": "parity", "task.train_lengths": "2,10"})
    assert isinstance(config.task, ParityConfig) and config.task.train_lengths == (2, 10)
    assert config.task.test_lengths == ParityConfig().test_lengths
    # the model's vocabulary follows the task
    assert config.model.vocab_size == 3


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_round_trip_through_json(name):
    import json

    config = recipe(name)
    assert from_dict(json.loads(json.dumps(to_dict(config)))) == config


def test_from_dict_rejects_unknown_keys():
    data = to_dict(recipe("mqar"))
    data["train"]["learning_rate"] = 1.0
    with pytest.raises(ValueError, match=r"unknown key train.learning_rate"):
        from_dict(data)


@pytest.mark.parametrize(("registry", "typo", "meant"), [
    ("recur.layers:MIXERS", "glaa", "gla"),
    ("recur.tasks:TASKS", "parit", "parity"),
    ("recur.recipes:RECIPES", "mqr", "mqar"),
    ("recur.bench:OP_BENCHES", "glaa", "gla"),
])
def test_every_registry_names_close_matches_and_the_known_names(registry, typo, meant):
    import importlib

    module, name = registry.split(":")
    entries = getattr(importlib.import_module(module), name)
    # a KeyError for mapping code, a ValueError for code that checks arguments
    for error in (KeyError, ValueError):
        with pytest.raises(error, match=rf"unknown .*'{typo}'; did you mean '{meant}'.*Known: \[.*'{meant}'"):
            entries[typo]


def test_unknown_mixer_in_the_model_config_names_close_matches():
    with pytest.raises(ValueError, match=r"unknown mixer 'glaa'; did you mean 'gla'"):
        recipe("mqar", {"model.pattern": "glaa,attention"})
    with pytest.raises(ValueError, match=r"model.mixer_options.glaa.num_heads: unknown mixer 'glaa'; did you mean 'gla'"):
        recipe("mqar", {"model.mixer_options.glaa.num_heads": "2"})
