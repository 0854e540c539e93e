"""The adding problem: a real-valued regression over a long sequence.

Long Short-Term Memory (Hochreiter & Schmidhuber, 1997), experiment 4; the variant of
Unitary Evolution Recurrent Neural Networks (Arjovsky, Shah, Bengio; arXiv:1511.06464) and
IndRNN (Li et al.; arXiv:1803.04831): each step is a pair (value, marker) with values
uniform in [0, 1) and exactly two markers, one in each half of the sequence; the target
is the sum of the two marked values. Predicting the mean, 1, scores a mean squared error
of 1/6; the metric is the MSE on the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Batch, Task, TaskConfig, register_task

# the mean squared error of always predicting the expected sum, 1 (two uniform values: 2 · 1/12)
BASELINE_MSE = 1 / 6


@dataclass(kw_only=True)
class AddingConfig(TaskConfig):
    seq_len: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise ValueError(f"task.seq_len must be an int >= 2 (a marker in each half); got {self.seq_len!r}")


@register_task("adding")
class Adding(Task):
    """The adding problem: (value, marker) pairs in, the sum of the two marked values out (MSE)."""

    Config = AddingConfig
    input = "vectors"
    head = "regress"
    metric = "val/mse"
    higher_is_better = False

    def __init__(self, config: AddingConfig) -> None:
        super().__init__(config)
        self.features, self.num_outputs = 2, 1

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        T = self.config.seq_len
        half = T // 2
        values = torch.rand(n, T, generator=generator)
        first = torch.randint(0, half, (n,), generator=generator)
        second = torch.randint(half, T, (n,), generator=generator)
        markers = torch.zeros(n, T)
        rows = torch.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = values[rows, first] + values[rows, second]
        return {"inputs": torch.stack([values, markers], dim=-1), "labels": target[:, None]}

    def metrics(self, predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        mse = float((predictions.float() - labels).square().mean())
        # 1 - MSE / baseline: 0 for the constant guess, 1 when exact
        return {"mse": mse, "skill": 1 - mse / BASELINE_MSE}
