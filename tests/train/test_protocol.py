"""The evaluation protocol: disjoint splits, choices read the validation split only, the
test split is drawn and read once, at the end, on the chosen weights."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from recur.models import LMConfig
from recur.tasks import TASKS, build_task
from recur.tasks.adding import Adding, AddingConfig
from recur.tasks.base import SPLITS, example_hash, register_task
from recur.tasks.mqar import MQARConfig
from recur.train import RunConfig, TrainConfig, train
from recur.train.checkpoint import load_weights


@dataclass(kw_only=True)
class PoisonedConfig(AddingConfig):
    pass


@register_task("adding_with_poisoned_test")
class PoisonedTest(Adding):
    """The adding problem whose test inputs are all NaN, and which records every split it
    is asked for (with the number of training batches drawn before)."""

    Config = PoisonedConfig
    requests: list[tuple[str, int]] = []

    def sample(self, n, generator, split="train"):
        batch = super().sample(n, generator, split)
        if split == "test":
            batch["inputs"] = torch.full_like(batch["inputs"], float("nan"))
        return batch

    def generate(self, n, generator, split):
        return super().generate(n, generator, split)

    def train_batch(self, n, generator, step):
        type(self).requests.append(("train", step))
        return super().train_batch(n, generator, step)

    def disjoint(self, n, generator, split, draw):
        if split != "train":
            type(self).requests.append((split, -1))
        return super().disjoint(n, generator, split, draw)


def poisoned_run(**train_options) -> RunConfig:
    return RunConfig(
        task=PoisonedConfig(seq_len=12, eval_examples=64),
        model=LMConfig(vocab_size=0, d_model=16, n_layers=1, mixer="gru", mlp_ratio=0.0),
        train=TrainConfig(**{"steps": 60, "batch_size": 16, "lr": 3e-3, "warmup_steps": 5, "eval_every": 10,
                             "threads": 1, **train_options}),
    )


def test_every_task_has_three_splits_and_a_validation_metric():
    for name, cls in TASKS.items():
        assert cls.metric.startswith("val/"), name
        assert {"val", "test"} <= set(cls.eval_splits), name
    assert SPLITS == ("train", "val", "test")


@pytest.mark.parametrize("name", ["mqar", "parity", "mod_arith", "permutation", "selective_copy", "listops", "adding", "transduce"])
def test_generated_splits_are_disjoint(name):
    """Rows of one split never appear in another, even where the distributions overlap."""
    options = {"parity": {"test_lengths": (3, 12), "train_lengths": (3, 12)}, "mod_arith": {"test_lengths": (3, 9), "train_lengths": (3, 9)}}
    task = build_task(name, **options.get(name, {}))
    seen = {}
    for split in SPLITS:
        inputs = task.sample(600, torch.Generator().manual_seed(7), split)["inputs"]
        seen[split] = set(example_hash(inputs, task.pad_token).tolist())
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["test"] and not seen["val"] & seen["test"]
    # short parity strings repeat: the same strings land in one split only
    if name == "parity":
        assert len(seen["train"]) < 600


def test_padding_never_moves_an_example():
    task = build_task("parity")
    short = torch.tensor([[1, 2, 2, 1]])
    padded = torch.tensor([[1, 2, 2, 1, 0, 0, 0]])
    assert torch.equal(example_hash(short, task.pad_token), example_hash(padded, task.pad_token))
    assert not torch.equal(example_hash(short, task.pad_token), example_hash(torch.tensor([[1, 2, 1, 1]]), task.pad_token))


def test_early_stopping_never_reads_the_test_split():
    """The test inputs are NaN: a run that looked at them could never reach its target."""
    PoisonedTest.requests.clear()
    steps_seen = []
    result = train(poisoned_run(target=2.0), progress=False, callback=lambda step, _: steps_seen.append(step))
    assert result.stopped_early and result.steps == 10, "the validation MSE (< 2) reaches the target at the first evaluation"
    assert math.isfinite(result.metric) and math.isnan(result.metrics["test/mse"])
    # the test split was drawn once, after the last training batch
    requests = PoisonedTest.requests
    assert [r for r in requests if r[0] == "test"] == [("test", -1)]
    assert requests.index(("test", -1)) > max(i for i, r in enumerate(requests) if r[0] == "train")


def test_the_best_validation_weights_are_chosen_and_tested(tmp_path):
    config = RunConfig(
        task=MQARConfig(vocab_size=32, seq_len=16, num_kv_pairs=2, eval_examples=64),
        model=LMConfig(vocab_size=32, d_model=32, n_layers=1, mixer="gla", mlp_ratio=2),
        # a learning rate that makes the curve jump about, so the best need not be the last
        train=TrainConfig(steps=60, batch_size=32, lr=0.05, warmup_steps=1, eval_every=10, threads=1),
    )
    best = train(config, tmp_path / "best", progress=False)
    values = {entry["step"]: entry["eval"]["val/accuracy"] for entry in best.history}
    assert best.chosen_step == max(values, key=lambda step: (values[step], -step))
    assert best.metric == values[best.chosen_step]
    # the saved model is the chosen one: its validation accuracy is the reported one
    state, info = load_weights(tmp_path / "best")
    assert info["step"] == best.chosen_step
    model = type(best.model)(best.model.config)
    model.load_state_dict(state)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best.model.state_dict()[name]), name
    last = train(RunConfig(task=config.task, model=config.model, train=TrainConfig(**{**vars(config.train), "select": "last"})), progress=False)
    assert last.chosen_step == 60 and last.metric == {e["step"]: e["eval"] for e in last.history}[60]["val/accuracy"]


def test_resume_keeps_the_best_weights(tmp_path):
    """A run interrupted after its best evaluation and resumed chooses the same weights as
    one that never stopped."""
    import shutil

    config = RunConfig(
        task=MQARConfig(vocab_size=32, seq_len=16, num_kv_pairs=2, eval_examples=64),
        model=LMConfig(vocab_size=32, d_model=32, n_layers=1, mixer="gla", mlp_ratio=2),
        train=TrainConfig(steps=40, batch_size=32, lr=0.05, warmup_steps=1, eval_every=10, threads=1,
                          checkpoint_every=10, keep_checkpoints=10),
    )
    whole = train(config, tmp_path / "whole", progress=False)
    # the same run as if killed after step 20: its checkpoints up to there, nothing else
    (tmp_path / "cut" / "checkpoints").mkdir(parents=True)
    for name in ("step_00000010", "step_00000020"):
        shutil.copytree(tmp_path / "whole" / "checkpoints" / name, tmp_path / "cut" / "checkpoints" / name)
    resumed = train(config, tmp_path / "cut", resume=True, progress=False)
    assert resumed.chosen_step == whole.chosen_step and resumed.metrics == whole.metrics
