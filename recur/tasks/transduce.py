"""Sequence transduction: read a token sequence, write a function of it.

The toy problems of encoder–decoder models (Sequence to Sequence Learning, Sutskever,
Vinyals, Le, arXiv:1409.3215, trained on reversed sources; Neural Turing Machines, Graves
et al., arXiv:1410.5401, copy and sort): the source is `length` random symbols, the target
is the same symbols copied, reversed or sorted, then an end token. Teacher forcing:
the decoder reads the target behind a start token and predicts it shifted by one.

Tokens: source symbols 0 .. symbols − 1 and a pad; target symbols 0 .. symbols − 1, then
start and end. Metrics: token accuracy and sequence accuracy, the fraction of targets
predicted right at every position (with teacher forcing this equals greedy decoding's
exact-match rate: every step's argmax is the true token exactly when greedy decoding
follows the true target).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import IGNORE, Batch, Task, TaskConfig, check_range, register_task, token_accuracy

OPERATIONS = ("copy", "reverse", "sort")


@dataclass(kw_only=True)
class TransduceConfig(TaskConfig):
    # "copy", "reverse" or "sort"
    operation: str = "reverse"
    symbols: int = 16
    # source lengths, uniform in [low, high] (val and test draw from the same range)
    lengths: tuple[int, int] = (4, 16)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.operation not in OPERATIONS:
            raise ValueError(f"task.operation must be one of {list(OPERATIONS)}; got {self.operation!r}")
        if not isinstance(self.symbols, int) or self.symbols < 2:
            raise ValueError(f"task.symbols must be an int >= 2; got {self.symbols!r}")
        self.lengths = check_range("lengths", tuple(self.lengths))


@register_task("transduce")
class Transduce(Task):
    """Copy, reverse or sort a symbol sequence with an encoder–decoder (sequence accuracy)."""

    Config = TransduceConfig
    head = "seq2seq"

    def __init__(self, config: TransduceConfig) -> None:
        super().__init__(config)
        S = config.symbols
        self.pad_token = S
        self.vocab_size = S + 1
        self.target_vocab_size = S + 2
        self.bos_id, self.eos_id = S, S + 1

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        c = self.config
        low, high = c.lengths
        lengths = torch.randint(low, high + 1, (n,), generator=generator)
        symbols = torch.randint(0, c.symbols, (n, high), generator=generator)
        inside = torch.arange(high) < lengths[:, None]
        if c.operation == "reverse":
            # each row's first `length` symbols, last first
            index = (lengths[:, None] - 1 - torch.arange(high)).clamp_min(0)
            target = symbols.gather(1, index)
        elif c.operation == "sort":
            target = torch.where(inside, symbols, c.symbols).sort(1).values
        else:
            target = symbols
        source = torch.where(inside, symbols, self.pad_token)
        # target_inputs: start, y_1 .. y_L (then end tokens as padding); labels: y_1 .. y_L, end
        target = torch.where(inside, target, self.eos_id)
        target_inputs = torch.cat([torch.full((n, 1), self.bos_id), target], dim=1)
        labels = torch.cat([target, torch.full((n, 1), self.eos_id)], dim=1)
        # scored: the L symbols and the end token after them
        labels[torch.arange(high + 1) > lengths[:, None]] = IGNORE
        return {"inputs": source, "target_inputs": target_inputs, "labels": labels, "source_mask": inside}

    def tokens_per_example(self) -> int:
        return 2 * self.config.lengths[1] + 1

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        correct, scored = token_accuracy(logits, labels)
        whole = (correct | ~scored).all(1)
        return {"accuracy": float(correct.sum() / scored.sum()), "sequence_accuracy": float(whole.float().mean())}
