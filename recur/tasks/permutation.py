"""Permutation-group word problems: the running product of a sequence of group elements.

The S5 word problem of Merrill et al. as used by Grazzi et al. (arXiv:2411.12537, §5.2)
and DeltaProduct (Siems et al., arXiv:2502.10297): each token is one element of S3, S4,
A5 or S5, and the label at position t is the prefix product s_t = x_t ∘ s_{t-1}
(s_0 = identity), so every position is scored. Trained at one length and tested at a
longer one; `sequence_accuracy` is the fraction of sequences right at every position.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from .base import Batch, Task, TaskConfig, register_task, token_accuracy

GROUPS = ("S3", "S4", "A5", "S5")
# which elements appear as inputs: all of them, only the identity and transpositions,
# or those plus 3-cycles (the restricted S5 variants of Grazzi et al.)
GENERATORS = ("all", "swaps", "swaps_3cycles")


def _is_even(perm: tuple[int, ...]) -> bool:
    inversions = sum(perm[i] > perm[j] for i in range(len(perm)) for j in range(i + 1, len(perm)))
    return inversions % 2 == 0


def _moved(perm: tuple[int, ...]) -> int:
    return sum(i != p for i, p in enumerate(perm))


def group_elements(group: str) -> list[tuple[int, ...]]:
    """The elements as permutation tuples in lexicographic order (index 0 = identity)."""
    n = int(group[1])
    elements = list(itertools.permutations(range(n)))
    if group.startswith("A"):
        elements = [p for p in elements if _is_even(p)]
    return elements


def multiplication_table(elements: list[tuple[int, ...]]) -> torch.Tensor:
    """table[a, b] = index of a ∘ b, where (a ∘ b)(i) = a(b(i))."""
    index = {p: i for i, p in enumerate(elements)}
    return torch.tensor([[index[tuple(a[b[i]] for i in range(len(a)))] for b in elements] for a in elements])


@dataclass(kw_only=True)
class PermutationConfig(TaskConfig):
    group: str = "S3"
    generators: str = "all"
    train_length: int = 32
    test_length: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group not in GROUPS:
            raise ValueError(f"task.group must be one of {list(GROUPS)}; got {self.group!r}")
        if self.generators not in GENERATORS:
            raise ValueError(f"task.generators must be one of {list(GENERATORS)}; got {self.generators!r}")
        for name in ("train_length", "test_length"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"task.{name} must be a positive int; got {getattr(self, name)!r}")


@register_task("permutation")
class Permutation(Task):
    """Word problems of S3, S4, A5, S5: label every prefix with its product."""

    Config = PermutationConfig

    def __init__(self, config: PermutationConfig) -> None:
        super().__init__(config)
        self.elements = group_elements(config.group)
        self.table = multiplication_table(self.elements)
        self.vocab_size = len(self.elements)
        allowed = {"all": None, "swaps": 2, "swaps_3cycles": 3}[config.generators]
        self.inputs_allowed = torch.tensor(
            [i for i, p in enumerate(self.elements) if allowed is None or _moved(p) <= allowed]
        )

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        T = self.config.train_length if split == "train" else self.config.test_length
        choice = torch.randint(0, len(self.inputs_allowed), (n, T), generator=generator)
        inputs = self.inputs_allowed[choice]
        labels = torch.empty_like(inputs)
        product = torch.zeros(n, dtype=torch.long)
        for t in range(T):
            product = self.table[inputs[:, t], product]
            labels[:, t] = product
        return {"inputs": inputs, "labels": labels}

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        correct, _ = token_accuracy(logits, labels)
        # cumulative: a sequence counts at t only if every position up to t is right
        prefix_right = correct.long().cumprod(1).float().mean(0)
        train_T = min(self.config.train_length, labels.shape[1])
        return {
            "accuracy": float(correct.float().mean()),
            "sequence_accuracy": float(prefix_right[-1]),
            "sequence_accuracy_at_train_length": float(prefix_right[train_T - 1]),
        }
