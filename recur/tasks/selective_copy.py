"""Selective copying (Gu & Dao, Mamba, arXiv:2312.00752, §4.1.1).

`num_tokens` data tokens sit at random positions of a region of `seq_len` blanks; then
`num_tokens` copy markers follow, and at the i-th marker the model must emit the i-th data
token. Solving it needs content-aware selection: a time-invariant filter cannot know
where the data sits. Tokens: blank 0, marker 1, data 2 .. vocab_size - 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import IGNORE, Batch, Task, TaskConfig, example_accuracy, register_task

BLANK, MARKER, FIRST_DATA = 0, 1, 2


@dataclass(kw_only=True)
class SelectiveCopyConfig(TaskConfig):
    vocab_size: int = 18
    # length of the region holding the data tokens (the markers come after it)
    seq_len: int = 64
    num_tokens: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocab_size < FIRST_DATA + 2:
            raise ValueError(f"task.vocab_size must be >= {FIRST_DATA + 2} (blank, marker, 2+ data tokens); got {self.vocab_size}")
        if not 0 < self.num_tokens <= self.seq_len:
            raise ValueError(f"task.num_tokens must be in [1, seq_len = {self.seq_len}]; got {self.num_tokens}")


@register_task("selective_copy")
class SelectiveCopy(Task):
    """Selective copying (Mamba): emit the scattered data tokens in order after the markers."""

    Config = SelectiveCopyConfig

    def __init__(self, config: SelectiveCopyConfig) -> None:
        super().__init__(config)
        self.vocab_size = config.vocab_size

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        c = self.config
        M, L = c.num_tokens, c.seq_len
        data = torch.randint(FIRST_DATA, c.vocab_size, (n, M), generator=generator)
        # M distinct positions in the region, kept in increasing order
        positions = torch.rand(n, L, generator=generator).argsort(1)[:, :M].sort(1).values
        region = torch.full((n, L), BLANK)
        region.scatter_(1, positions, data)
        inputs = torch.cat([region, torch.full((n, M), MARKER)], dim=1)
        labels = torch.cat([torch.full((n, L), IGNORE), data], dim=1)
        return {"inputs": inputs, "labels": labels}

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        per_example = example_accuracy(logits, labels)
        return {"accuracy": float(per_example.mean()), "sequence_accuracy": float((per_example == 1).float().mean())}
