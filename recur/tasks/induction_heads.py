"""Induction heads (Olsson et al., arXiv:2209.11895; the synthetic task of H3 and Mamba,
arXiv:2312.00752 §4.1.2).

A random token sequence holds a special token once, followed by a random token x; the
sequence ends with the special token again and the model must emit x. Trained at one
length and tested at a longer one, it measures recall that extrapolates. Tokens: the
special token is 0, the others 1 .. vocab_size - 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import IGNORE, Batch, Task, TaskConfig, register_task, token_accuracy

SPECIAL = 0


@dataclass(kw_only=True)
class InductionHeadsConfig(TaskConfig):
    vocab_size: int = 16
    seq_len: int = 64
    test_seq_len: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocab_size < 3:
            raise ValueError(f"task.vocab_size must be >= 3 (special token + 2 others); got {self.vocab_size}")
        for name in ("seq_len", "test_seq_len"):
            if getattr(self, name) < 4:
                raise ValueError(f"task.{name} must be >= 4; got {getattr(self, name)}")


@register_task("induction_heads")
class InductionHeads(Task):
    """Induction heads: after the special token comes back, emit the token that followed it."""

    Config = InductionHeadsConfig

    def __init__(self, config: InductionHeadsConfig) -> None:
        super().__init__(config)
        self.vocab_size = config.vocab_size

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        T = self.config.seq_len if split == "train" else self.config.test_seq_len
        inputs = torch.randint(1, self.vocab_size, (n, T), generator=generator)
        # the first special token anywhere before the last two positions, its answer after it
        where = torch.randint(0, T - 2, (n,), generator=generator)
        rows = torch.arange(n)
        inputs[rows, where] = SPECIAL
        inputs[:, -1] = SPECIAL
        labels = torch.full((n, T), IGNORE)
        labels[:, -1] = inputs[rows, where + 1]
        return {"inputs": inputs, "labels": labels}

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        correct, scored = token_accuracy(logits, labels)
        return {"accuracy": float(correct.sum() / scored.sum())}
