"""The programmatic training API: a config in, final metrics out, for any mixer."""

from __future__ import annotations

import pytest

from recur.layers import MIXERS
from recur.models import LMConfig
from recur.tasks.mqar import MQARConfig
from recur.train import RunConfig, TrainConfig, train


def tiny_mqar(mixer: str = "gla", steps: int = 150, eval_examples: int = 128, **train_options) -> RunConfig:
    return RunConfig(
        task=MQARConfig(vocab_size=32, seq_len=16, num_kv_pairs=2, eval_examples=eval_examples),
        model=LMConfig(vocab_size=32, d_model=32, n_layers=1, mixer=mixer, mlp_ratio=2),
        train=TrainConfig(**{"steps": steps, "batch_size": 32, "lr": 1e-2, "warmup_steps": 10, "eval_every": 50,
                             "threads": 1, **train_options}),
    )


def test_train_learns_mqar():
    result = train(tiny_mqar(), progress=False)
    first = result.history[0]["eval"]
    # chance is 1/16 (values come from the upper half of 32 tokens)
    assert result.metric_name == "val/accuracy" and result.metric > 0.25
    assert result.metrics["val/loss"] < first["val/loss"] - 0.5
    assert result.steps == 150 and not result.stopped_early
    assert result.num_parameters == sum(p.numel() for p in result.model.parameters())


def test_early_stop_on_target():
    result = train(tiny_mqar(steps=150, target=0.1), progress=False)
    assert result.stopped_early and result.steps == 50 and result.metric >= 0.1


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_every_mixer_trains_a_few_steps(mixer):
    config = tiny_mqar(mixer, steps=2, eval_every=2, eval_examples=8, batch_size=8)
    result = train(config, progress=False)
    assert result.steps == 2 and result.loss == result.loss
    assert set(result.metrics) == {"val/accuracy", "val/loss", "test/accuracy", "test/loss"}


def test_metrics_file_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    train(tiny_mqar(steps=4, eval_every=2, log_every=2, tensorboard=True), tmp_path, progress=False)
    from recur.train.logging import read_metrics

    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [2, 4]
    assert [r["step"] for r in records if "eval" in r] == [2, 4]
    assert all(r["tokens_per_s"] > 0 for r in records if "loss" in r)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_each_step_draws_its_batch_with_its_step_number(monkeypatch):
    from recur.tasks.mqar import MQAR

    steps = []
    original = MQAR.train_batch

    def record(self, n, generator, step):
        steps.append(step)
        return original(self, n, generator, step)

    monkeypatch.setattr(MQAR, "train_batch", record)
    train(tiny_mqar(steps=3, eval_every=3, eval_examples=8, batch_size=8), progress=False)
    assert steps == [0, 1, 2]
