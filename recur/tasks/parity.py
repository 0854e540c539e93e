"""Parity: read a bit string, then say whether it holds an odd number of ones.

The state-tracking task of Grazzi et al., "Unlocking State-Tracking in Linear RNNs
Through Negative Eigenvalues" (arXiv:2411.12537), after the xLSTM formal-language
harness: tokens pad 0, bits 1 and 2; the answer token (1 + number of 2s mod 2) is
scored at the last bit. Trained on short strings, tested on longer ones; the metric is
the scaled accuracy (acc - 1/2) / (1 - 1/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import (
    IGNORE,
    Batch,
    ScaledAccuracyTask,
    TaskConfig,
    check_range,
    register_task,
    uniform_lengths,
)

PAD = 0


@dataclass(kw_only=True)
class ParityConfig(TaskConfig):
    # number of bits, sampled uniformly in [low, high]
    train_lengths: tuple[int, int] = (3, 40)
    test_lengths: tuple[int, int] = (40, 256)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.train_lengths = check_range("train_lengths", tuple(self.train_lengths))
        self.test_lengths = check_range("test_lengths", tuple(self.test_lengths))


@register_task("parity")
class Parity(ScaledAccuracyTask):
    """Parity of a bit string; train on short strings, validate and test on longer ones (scaled accuracy)."""

    Config = ParityConfig
    answers = 2

    def __init__(self, config: ParityConfig) -> None:
        super().__init__(config)
        self.vocab_size = 3
        self.pad_token = PAD

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        lengths_range = self.config.train_lengths if split == "train" else self.config.test_lengths
        lengths = uniform_lengths(n, lengths_range, generator)
        T = lengths_range[1]
        bits = torch.randint(0, 2, (n, T), generator=generator)
        position = torch.arange(T)
        inside = position < lengths[:, None]
        bits = bits * inside
        inputs = torch.where(inside, bits + 1, PAD)
        answer = bits.sum(1) % 2 + 1
        labels = torch.full((n, T), IGNORE)
        labels[torch.arange(n), lengths - 1] = answer
        return {"inputs": inputs, "labels": labels}
