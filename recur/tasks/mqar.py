"""MQAR: multi-query associative recall (Arora et al., Zoology, arXiv:2312.04927).

A sequence opens with key-value pairs `k1 v1 ... kN vN` (keys from the lower half of the
vocabulary, values from the upper half, each drawn without replacement), then the keys
come back in a random order at gaps drawn with p(i) ∝ i^(a-1), a = `power_a` (short gaps
favoured); at each repeated key the model must emit its value. Exactly N positions per
example are scored; the metric is the mean accuracy over them.

`test_lengths` adds extra test splits `test_<length>`: the same task (the same number of
pairs) drawn at a longer length, so the query gaps, drawn over the longer query region,
reach further; they are read once, at the end, with the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import (
    IGNORE,
    Batch,
    Task,
    TaskConfig,
    check_test_lengths,
    example_accuracy,
    length_of,
    register_task,
)


@dataclass(kw_only=True)
class MQARConfig(TaskConfig):
    vocab_size: int = 256
    seq_len: int = 64
    num_kv_pairs: int = 8
    power_a: float = 0.01
    # fill the non-query slots with random tokens (Zoology's generator default) or zeros
    # (its paper configurations)
    random_non_queries: bool = False
    # extra test splits test_<length>, read at the end (none by default)
    test_lengths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        N, V, T = self.num_kv_pairs, self.vocab_size, self.seq_len
        if not isinstance(N, int) or N <= 0:
            raise ValueError(f"task.num_kv_pairs must be a positive int; got {N!r}")
        # keys come from 1 .. V/2 - 1 and values from V/2 .. V - 1, all distinct
        if V // 2 - 1 < N or V - V // 2 < N:
            raise ValueError(
                f"task.vocab_size = {V} is too small for num_kv_pairs = {N}: it gives "
                f"{max(V // 2 - 1, 0)} key tokens and {V - V // 2} value tokens; expected vocab_size >= {2 * N + 2}"
            )
        if T < 4 * N or T % 2:
            raise ValueError(
                f"task.seq_len = {T} must be even and at least 4 * num_kv_pairs = {4 * N} "
                "(the pairs, then a query slot per key)"
            )
        if self.power_a <= 0:
            raise ValueError(f"task.power_a must be positive; got {self.power_a}")
        self.test_lengths = check_test_lengths("test_lengths", self.test_lengths, T, 4 * N)
        if any(length % 2 for length in self.test_lengths):
            raise ValueError(f"task.test_lengths must be even, like task.seq_len; got {self.test_lengths}")


@register_task("mqar")
class MQAR(Task):
    """Multi-query associative recall (Zoology): emit the value of every repeated key."""

    Config = MQARConfig
    # the metric reads the answer positions only; evaluation keeps the logits there alone
    scored_positions_only = True

    def __init__(self, config: MQARConfig) -> None:
        super().__init__(config)
        self.vocab_size = config.vocab_size
        self.eval_splits = ("val", "test", *(f"test_{length}" for length in config.test_lengths))

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        c = self.config
        N, V, T = c.num_kv_pairs, c.vocab_size, length_of(split, c.seq_len)
        half = V // 2
        keys = torch.rand(n, half - 1, generator=generator).argsort(1)[:, :N] + 1  # [n, N] in 1..half-1
        values = torch.rand(n, V - half, generator=generator).argsort(1)[:, :N] + half  # [n, N]
        context = torch.stack([keys, values], dim=2).flatten(1)  # k1 v1 k2 v2 ...
        # query region: `space` slots of two tokens; key i is repeated at slot gap_i - 1
        space = (T - 2 * N) // 2
        gaps = torch.arange(1, space + 1, dtype=torch.float64)
        p = c.power_a * gaps ** (c.power_a - 1)
        slots = torch.multinomial((p / p.sum()).expand(n, space), N, replacement=False, generator=generator)
        if c.random_non_queries:
            queries = torch.randint(0, V, (n, T - 2 * N), generator=generator)
        else:
            queries = torch.zeros(n, T - 2 * N, dtype=torch.long)
        rows = torch.arange(n)[:, None]
        queries[rows, 2 * slots] = keys
        inputs = torch.cat([context, queries], dim=1)
        labels = torch.full((n, T), IGNORE)
        labels[rows, 2 * N + 2 * slots] = values
        return {"inputs": inputs, "labels": labels}

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float(example_accuracy(logits, labels).mean())}
