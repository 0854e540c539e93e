"""The HMM task: the forward algorithm against enumeration, the samples against the HMM, the metric."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from recur.tasks import build_task
from recur.tasks.hmm import hmm_log_likelihood, hmm_predictive, random_hmm


def brute_force_log_likelihood(symbols: list[int], T, E, pi) -> float:
    """log Σ over every state path of π(s_1) E(s_1, x_1) Π_t T(s_{t-1}, s_t) E(s_t, x_t)."""
    total = 0.0
    for path in itertools.product(range(len(pi)), repeat=len(symbols)):
        p = pi[path[0]] * E[path[0], symbols[0]]
        for t in range(1, len(symbols)):
            p = p * T[path[t - 1], path[t]] * E[path[t], symbols[t]]
        total += float(p)
    return math.log(total)


def test_forward_algorithm_matches_enumeration():
    T, E = random_hmm(3, 2, seed=1)
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    sequences = torch.tensor(list(itertools.product(range(2), repeat=5)))
    logp = hmm_log_likelihood(sequences, T, E, pi)
    for row, value in zip(sequences.tolist(), logp.tolist(), strict=True):
        assert value == pytest.approx(brute_force_log_likelihood(row, T, E, pi), abs=1e-12)
    # every sequence of a length: the probabilities sum to 1
    assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    # each predictive distribution is one
    logs = hmm_predictive(sequences, T, E, pi)
    torch.testing.assert_close(logs.exp().sum(-1), torch.ones(32, 5, dtype=torch.float64))


def test_samples_follow_the_hmm():
    # a given HMM: state 0 emits 0 and stays with 0.9; state 1 emits 1 or 2 and leaves with 0.5
    task = build_task("hmm", num_states=2, num_symbols=3, seq_len=40,
                      transition=(0.9, 0.1, 0.5, 0.5), emission=(1.0, 0.0, 0.0, 0.0, 0.5, 0.5))
    batch = task.sample(2000, torch.Generator().manual_seed(0))
    x, inputs = batch["labels"], batch["inputs"]
    assert task.vocab_size == 4 and x.shape == (2000, 40)
    assert torch.equal(inputs[:, 0], torch.full((2000,), 3)) and torch.equal(inputs[:, 1:], x[:, :-1])
    # a 0 is followed by a 0 with probability 0.9; after 1 or 2 the next is 0 half the time
    after_zero = x[:, 1:][x[:, :-1] == 0]
    after_other = x[:, 1:][x[:, :-1] != 0]
    assert float((after_zero == 0).double().mean()) == pytest.approx(0.9, abs=0.01)
    assert float((after_other == 0).double().mean()) == pytest.approx(0.5, abs=0.02)
    assert float((after_other == 1).double().mean()) == pytest.approx(0.25, abs=0.02)


def test_the_hmms_own_predictions_close_the_gap():
    task = build_task("hmm", seq_len=32)
    batch = task.sample(256, torch.Generator().manual_seed(1), "val")
    labels = batch["labels"]
    best = hmm_predictive(labels, task.transition, task.emission, task.initial)
    scores = task.metrics(best.float(), labels)
    assert scores["nll_gap"] == pytest.approx(0.0, abs=1e-6)
    assert scores["accuracy"] == scores["hmm_accuracy"]
    # uniform guesses cost log V against an HMM that knows better
    uniform = task.metrics(torch.zeros(256, 32, task.vocab_size), labels)
    assert uniform["nll"] == pytest.approx(math.log(task.vocab_size))
    assert uniform["nll_gap"] > 0.2 and uniform["hmm_nll"] == scores["hmm_nll"]
    # the HMM's cross-entropy is its mean −log p(x) per token
    logp = hmm_log_likelihood(labels, task.transition, task.emission, task.initial)
    assert scores["hmm_nll"] == pytest.approx(float(-logp.sum()) / labels.numel(), rel=1e-12)


def test_one_hmm_per_seed():
    a, b, c = (build_task("hmm", hmm_seed=s) for s in (0, 0, 1))
    assert torch.equal(a.transition, b.transition) and not torch.equal(a.transition, c.transition)
    torch.testing.assert_close(a.emission.sum(1), torch.ones(4, dtype=torch.float64))
    sticky = build_task("hmm", hmm_seed=0, stay=0.9)
    torch.testing.assert_close(sticky.transition, 0.9 * torch.eye(4, dtype=torch.float64) + 0.1 * a.transition)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_states": 0}, "task.num_states must be a positive int"),
        ({"num_states": 2, "transition": (1.0, 0.0, 1.0)}, "task.transition must hold num_states × 2 = 4 values"),
        ({"num_states": 2, "num_symbols": 2, "emission": (0.5, 0.6, 1.0, 0.0)}, "task.emission rows must be probabilities"),
        ({"sharpness": -1.0}, "task.sharpness must be >= 0"),
        ({"stay": 1.5}, "task.stay must be in"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        build_task("hmm", **options)
