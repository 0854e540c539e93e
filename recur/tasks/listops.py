"""ListOps: evaluate nested list operations over digits, read as a token sequence.

ListOps: A Diagnostic Dataset for Latent Tree Learning (Nangia, Bowman; arXiv:1804.06028),
the long-range arena's hierarchical task (Tay et al., arXiv:2011.04006) at small size:
expressions like [MAX 4 [MIN 2 7 ] 1 ] with MAX, MIN, MED (median, the lower middle) and
SM (sum mod 10) over 2 … max_args arguments, nested up to `depth`; the label is the value
0 … 9. Sequences are left-padded to max_len, so the last token closes the expression and a
causal model has read all of it there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .base import Batch, Task, TaskConfig, register_task

OPERATORS = ("MAX", "MIN", "MED", "SM")
TOKENS = ("<pad>", *[str(d) for d in range(10)], *[f"[{op}" for op in OPERATORS], "]")


def expression(rng: random.Random, depth: int, max_args: int, leaf_probability: float = 0.3) -> tuple[list[str], int]:
    """One random expression as tokens, and its value."""
    if depth == 0 or rng.random() < leaf_probability:
        digit = rng.randrange(10)
        return [str(digit)], digit
    op = rng.choice(OPERATORS)
    tokens, values = [f"[{op}"], []
    for _ in range(rng.randint(2, max_args)):
        sub, value = expression(rng, depth - 1, max_args, leaf_probability)
        tokens += sub
        values.append(value)
    tokens.append("]")
    values.sort()
    result = {"MAX": values[-1], "MIN": values[0], "MED": values[(len(values) - 1) // 2], "SM": sum(values) % 10}[op]
    return tokens, result


@dataclass(kw_only=True)
class ListOpsConfig(TaskConfig):
    # nesting depth of the operators
    depth: int = 2
    # arguments per operator: 2 … max_args
    max_args: int = 4
    # sequence length (longer expressions are redrawn)
    max_len: int = 48

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.depth < 1 or self.max_args < 2:
            raise ValueError(f"task.depth must be >= 1 and task.max_args >= 2; got {self.depth}, {self.max_args}")
        if self.max_len < 4:
            raise ValueError(f"task.max_len must be >= 4 (the shortest expression); got {self.max_len}")


@register_task("listops")
class ListOps(Task):
    """ListOps: nested MAX/MIN/MED/SM over digits -> the value 0 … 9."""

    Config = ListOpsConfig
    head = "classify"

    def __init__(self, config: ListOpsConfig) -> None:
        super().__init__(config)
        self.vocab_size, self.num_outputs = len(TOKENS), 10
        self.index = {token: i for i, token in enumerate(TOKENS)}

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        c = self.config
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
        inputs = torch.zeros(n, c.max_len, dtype=torch.long)
        labels = torch.zeros(n, dtype=torch.long)
        i = 0
        while i < n:
            tokens, value = expression(rng, c.depth, c.max_args)
            # a bare digit is no list operation; an expression longer than max_len is redrawn
            if len(tokens) == 1 or len(tokens) > c.max_len:
                continue
            inputs[i, c.max_len - len(tokens):] = torch.tensor([self.index[t] for t in tokens])
            labels[i] = value
            i += 1
        return {"inputs": inputs, "labels": labels}

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float((logits.argmax(-1) == labels).float().mean())}
