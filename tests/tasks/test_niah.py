"""niah: the sequence layout, determinism, disjoint splits, the longer test splits, the metric."""

from __future__ import annotations

import contextlib
import types

import pytest
import torch

from recur.tasks import IGNORE, build_task
from recur.tasks.base import example_hash
from recur.tasks.niah import ANSWER, DIGITS, KEYS, NEEDLE, QUERY, SEP

VARIANTS = [(value, haystack) for value in ("passkey", "number", "uuid") for haystack in ("repeat", "random")]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def oracle_logits(task, inputs: torch.Tensor) -> torch.Tensor:
    """Logits of a program that reads the needle: the tokens after SEP, written at the end."""
    K, L = task.config.key_length, task.config.digits
    logits = torch.zeros(*inputs.shape, task.vocab_size)
    for row, sequence in enumerate(inputs):
        start = int((sequence == NEEDLE).nonzero()) + K + 2
        logits[row, -L:] = torch.nn.functional.one_hot(sequence[start:start + L], task.vocab_size).float()
    return logits


@pytest.mark.parametrize("value,haystack", VARIANTS)
def test_each_sequence_is_a_haystack_with_one_needle_and_its_query(value, haystack):
    task = build_task("niah", seq_len=96, value=value, haystack=haystack, test_lengths=(160,))
    c = task.config
    K, L, P = c.key_length, c.digits, c.pattern_length
    assert L == {"passkey": 5, "number": 7, "uuid": 8}[value]
    batch = task.sample(64, gen(), "train")
    assert batch["inputs"].shape == (64, 96) and batch["labels"].shape == (64, 96)
    assert batch["inputs"].min() >= 0 and batch["inputs"].max() < task.vocab_size
    depths = set()
    for sequence, labels in zip(batch["inputs"].tolist(), batch["labels"].tolist(), strict=True):
        assert sequence.count(NEEDLE) == 1 and sequence.count(QUERY) == 1 and sequence.count(ANSWER) == 1
        d = sequence.index(NEEDLE)
        key, value_tokens = sequence[d + 1:d + 1 + K], sequence[d + 2 + K:d + 2 + K + L]
        assert sequence[d + 1 + K] == SEP and all(KEYS <= t < KEYS + c.num_keys for t in key)
        alphabet = 16 if value == "uuid" else 10
        assert all(DIGITS <= t < DIGITS + alphabet for t in value_tokens)
        if value != "uuid":
            assert value_tokens[0] != DIGITS  # no leading zero
        # the query: the key, then the value written after ANSWER; labels are the value
        assert sequence[-(K + L + 1):] == [QUERY, *key, ANSWER, *value_tokens[:-1]]
        assert labels[-L:] == value_tokens and set(labels[:-L]) == {IGNORE}
        haystack_tokens = sequence[:d] + sequence[d + K + L + 2:-(K + L + 1)]
        assert all(t >= KEYS + c.num_keys for t in haystack_tokens)
        if haystack == "repeat":
            sentence = list(range(KEYS + c.num_keys, KEYS + c.num_keys + P))
            assert haystack_tokens == (sentence * 96)[:len(haystack_tokens)] and d % P == 0
        depths.add(d)
    # the needle sits at many depths, from the start to near the query
    assert len(depths) > 4 and min(depths) < 16 and max(depths) > 60


def test_sampling_is_a_function_of_the_generator():
    task = build_task("niah", haystack="random")
    a, b, c = (task.sample(16, gen(s), "val") for s in (3, 3, 4))
    assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["inputs"], c["inputs"])


def test_splits_are_disjoint_and_the_longer_test_splits_have_their_lengths():
    task = build_task("niah", seq_len=64, test_lengths=(128, 512))
    assert task.eval_splits == ("val", "test", "test_128", "test_512")
    hashes = {split: set(example_hash(task.sample(400, gen(5), split)["inputs"]).tolist()) for split in ("train", "val", "test")}
    assert not hashes["train"] & hashes["val"] and not hashes["train"] & hashes["test"] and not hashes["val"] & hashes["test"]
    for split, length in (("val", 64), ("test", 64), ("test_128", 128), ("test_512", 512)):
        assert task.sample(8, gen(), split)["inputs"].shape == (8, length)
    # the longer splits hold test examples only: their hashes fall in the test split's bucket
    assert set(example_hash(task.sample(50, gen(), "test_128")["inputs"]).remainder(16).tolist()) == {15}
    with pytest.raises(ValueError, match="split must be one of .*'test_128'.*got 'test_256'"):
        task.sample(4, gen(), "test_256")


@pytest.mark.parametrize("value,haystack", VARIANTS)
def test_the_oracle_scores_one_and_chance_scores_near_zero(value, haystack):
    task = build_task("niah", seq_len=64, value=value, haystack=haystack, test_lengths=(256,))
    for split in task.eval_splits:
        batch = task.sample(64, gen(), split)
        assert task.metrics(oracle_logits(task, batch["inputs"]), batch["labels"]) == {"accuracy": 1.0, "token_accuracy": 1.0}
    batch = task.sample(512, gen(1), "test")
    scores = task.metrics(torch.randn(512, 64, task.vocab_size, generator=gen(2)), batch["labels"])
    assert scores["accuracy"] == 0.0 and scores["token_accuracy"] < 0.05
    # a model right on every digit but the last: no exact match, most tokens right
    logits = oracle_logits(task, batch["inputs"])
    logits[:, -1] = logits[:, -1].roll(1, dims=-1)
    scores = task.metrics(logits, batch["labels"])
    L = task.config.digits
    assert scores["accuracy"] == 0.0 and scores["token_accuracy"] == pytest.approx((L - 1) / L)


def test_the_longer_test_splits_are_read_once_at_the_end(monkeypatch):
    """A run draws train and val while it trains; test and test_<length> once, after the last step."""
    from recur.models import LMConfig
    from recur.tasks.niah import NIAH, NIAHConfig
    from recur.train import RunConfig, TrainConfig, train
    from recur.train.loop import test_splits, validation_splits

    task = build_task("niah", test_lengths=(1024, 4096))
    assert validation_splits(task) == ("val",) and test_splits(task) == ("test", "test_1024", "test_4096")
    drawn = []
    sample = NIAH.sample
    monkeypatch.setattr(NIAH, "sample", lambda self, n, generator, split="train": drawn.append(split) or sample(self, n, generator, split))
    config = RunConfig(
        task=NIAHConfig(seq_len=48, test_lengths=(96,), eval_examples=8),
        model=LMConfig(vocab_size=2, d_model=16, n_layers=1, mixer="gla", mlp_ratio=0.0),
        train=TrainConfig(steps=4, batch_size=4, eval_every=2, threads=1),
    )
    result = train(config, progress=False)
    assert set(drawn[:-2]) == {"train", "val"} and drawn[-2:] == ["test", "test_96"]
    assert {"test/accuracy", "test/token_accuracy", "test_96/accuracy", "test_96/token_accuracy"} <= set(result.metrics)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"value": "word"}, "task.value must be one of"),
        ({"haystack": "essay"}, "task.haystack must be one of"),
        ({"seq_len": 17}, "task.seq_len = 17 is too short"),
        ({"test_lengths": (256,)}, "differ from task.seq_len = 256"),
        ({"test_lengths": (1024, 1024)}, "must be distinct"),
        ({"test_lengths": (10,)}, "task.test_lengths must be ints of at least 18"),
        ({"pattern_length": 65}, "task.pattern_length = 65 must be at most task.num_fillers = 64"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        build_task("niah", **options)


class HalfRight(torch.nn.Module):
    """Noisy logits that favour the label: some answers right, some wrong."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, inputs, labels):
        noise = torch.randn(*inputs.shape, self.vocab_size, generator=gen(int(inputs.sum())))
        logits = noise + 3.5 * torch.nn.functional.one_hot(labels.clamp_min(0), self.vocab_size)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return types.SimpleNamespace(logits=logits, loss=loss)


@pytest.mark.parametrize("name,options", [("niah", {"seq_len": 64, "haystack": "random", "test_lengths": (128,)}), ("mqar", {"test_lengths": (128,)})])
def test_evaluation_keeping_the_scored_positions_only_gives_the_same_metrics(name, options):
    """At long test lengths evaluation keeps the logits at the answer positions alone; the
    figures equal those computed from every position."""
    from recur.train.loop import evaluate

    task = build_task(name, **options)
    assert task.scored_positions_only
    sets = {split: task.sample(40, gen(), split) for split in task.eval_splits}
    model = HalfRight(task.vocab_size)
    kept = evaluate(model, task, sets, 16, torch.device("cpu"), contextlib.nullcontext)
    task.scored_positions_only = False
    every = evaluate(model, task, sets, 16, torch.device("cpu"), contextlib.nullcontext)
    assert kept.keys() == every.keys() and 0.1 < every["val/accuracy"] < 0.9
    for key in kept:
        assert kept[key] == pytest.approx(every[key], abs=1e-6), key
