"""What every task is: a typed config, a generator of (inputs, labels) batches and a metric.

A task draws every batch from a `torch.Generator` it is handed, so a batch is a pure
function of (seed, step): training resumes on the same data and every process of a
distributed run can draw the same global batch and keep its own slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..registry import Registry

# inputs [N, T] long token ids; labels [N, T] long (-100 = not scored) for "lm" tasks,
# [N] long class ids for "classify", [N, num_outputs] float for "regress"
Batch = dict[str, torch.Tensor]
IGNORE = -100


@dataclass(kw_only=True)
class TaskConfig:
    """Fields every task has; subclasses add their own, each with a working default."""

    # examples in each evaluation split (generated once per run from the seed)
    eval_examples: int = 512

    def __post_init__(self) -> None:
        if not isinstance(self.eval_examples, int) or self.eval_examples <= 0:
            raise ValueError(f"task.eval_examples must be a positive int; got {self.eval_examples!r}")


class Task:
    """Base class of the tasks in `recur.tasks`, registered with `@register_task(name)`.

    Subclasses set `Config`, `head` and `metric`, compute `vocab_size` (and `num_outputs`
    for non-LM heads) in `__init__`, and implement `sample` and `metrics`.
    """

    Config: ClassVar[type[TaskConfig]] = TaskConfig
    name: ClassVar[str] = ""
    # which model head the task needs: "lm" (a label per position), "classify", "regress"
    head: ClassVar[str] = "lm"
    # the splits `evaluate` reports; metric keys are "<split>/<name>"
    eval_splits: ClassVar[tuple[str, ...]] = ("valid",)
    # the key early stopping and the summary look at, and which way is better
    metric: ClassVar[str] = "valid/accuracy"
    higher_is_better: ClassVar[bool] = True

    vocab_size: int
    num_outputs: int = 0

    def __init__(self, config: TaskConfig) -> None:
        if not isinstance(config, self.Config):
            raise TypeError(f"task {self.name!r} takes a {self.Config.__name__}; got {type(config).__name__}")
        self.config = config

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Batch:
        """n examples of `split` ("train" or one of `eval_splits`)."""
        raise TypeError(f"{type(self).__name__} must define sample()")

    def train_batch(self, n: int, generator: torch.Generator, step: int) -> Batch:
        """The training batch of optimiser step `step` (0-based). Tasks whose training data
        changes over the run (a length curriculum) override this; it stays a pure function
        of (generator, step), so resumed and distributed runs see the same data."""
        return self.sample(n, generator, "train")

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Scores of model outputs on one split: logits [N, T, V] ("lm"), [N, C]
        ("classify") or predictions [N, num_outputs] ("regress")."""
        raise TypeError(f"{type(self).__name__} must define metrics()")

    def tokens_per_example(self) -> int:
        """Input length of a training example (for tokens/s)."""
        return int(self.sample(1, torch.Generator().manual_seed(0))["inputs"].shape[1])

    def describe(self) -> str:
        doc = (type(self).__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


TASKS: Registry[type[Task]] = Registry("task")


def register_task(name: str):
    """Class decorator: `@register_task("mqar")` makes the task available by name."""

    def decorate(cls: type[Task]) -> type[Task]:
        TASKS.register(name, cls)
        cls.name = name
        return cls

    return decorate


def get_task(name: str) -> type[Task]:
    """The task class registered as `name`; an unknown name fails with close matches."""
    return TASKS[name]


def build_task(name: str, **options) -> Task:
    """`build_task("mqar", num_kv_pairs=8)` -> the task with its typed config."""
    cls = get_task(name)
    return cls(cls.Config(**options))


def check_range(field: str, lengths: tuple[int, int], minimum: int = 1) -> tuple[int, int]:
    """A (low, high) inclusive length range with minimum <= low <= high."""
    if len(lengths) != 2 or not all(isinstance(x, int) for x in lengths):
        raise ValueError(f"task.{field} must be two ints (low, high); got {lengths!r}")
    low, high = lengths
    if not minimum <= low <= high:
        raise ValueError(f"task.{field} must satisfy {minimum} <= low <= high; got {tuple(lengths)}")
    return low, high


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: (correct [N, T] bool, scored [N, T] bool) for labels with IGNORE holes."""
    scored = labels != IGNORE
    return (logits.argmax(-1) == labels) & scored, scored


def example_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[N]: the fraction of each example's scored positions predicted right."""
    correct, scored = token_accuracy(logits, labels)
    return correct.sum(1) / scored.sum(1).clamp_min(1)


def scaled(accuracy: float, num_classes: int) -> float:
    """(acc - 1/K) / (1 - 1/K): 0 at chance, 1 when perfect (Grazzi et al., arXiv:2411.12537)."""
    return (accuracy - 1 / num_classes) / (1 - 1 / num_classes)


def uniform_lengths(n: int, lengths: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    low, high = lengths
    return torch.randint(low, high + 1, (n,), generator=generator)
