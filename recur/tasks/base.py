"""What every task is: a typed config, a generator of (inputs, labels) batches and a metric.

A task draws every batch from a `torch.Generator` it is handed, so a batch is a pure
function of (seed, step): training resumes on the same data and every process of a
distributed run can draw the same global batch and keep its own slice.

Every task has three splits, disjoint by construction: `train`, `val` (what early
stopping, targets, checkpoint choice and any tuning read) and `test` (read once, at the
end). A generated task draws examples from its distributions and keeps only those whose
hash falls in the split's buckets (14 of 16 for train, one each for val and test), so no
example of one split can ever appear in another; tasks over a fixed data set split the
data itself. Val and test share one distribution (a task that tests extrapolation draws
both at the long lengths), so the validation figure predicts the test figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..registry import Registry

# inputs [N, T] long token ids (or [N, T, C] vectors, [N, C, H, W] images); labels [N, T]
# long (-100 = not scored) for "lm" tasks, [N] long class ids for "classify",
# [N, num_outputs] float for "regress"; seq2seq tasks add "target_inputs" [N, L]
Batch = dict[str, torch.Tensor]
IGNORE = -100

SPLITS = ("train", "val", "test")
# an example's split is its hash modulo 16: buckets 0-13 train, 14 val, 15 test
BUCKETS = 16
SPLIT_BUCKETS = {"train": tuple(range(14)), "val": (14,), "test": (15,)}


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

    Subclasses set `Config`, `head`, `input` and `metric`, compute the sizes the model
    needs in `__init__` (`vocab_size` for token inputs, `num_outputs` for non-LM heads,
    `features` for vectors, `image_shape` for images), and implement `generate` (or, over
    a fixed data set, `sample`) and `metrics`.
    """

    Config: ClassVar[type[TaskConfig]] = TaskConfig
    name: ClassVar[str] = ""
    # the model head the task needs: "lm" (a label per position), "classify", "regress",
    # "step_regress", "forecast", "dense" (recur.models.heads) or "seq2seq"
    head: ClassVar[str] = "lm"
    # what the inputs are: "tokens", "vectors", "image" or "points" (recur.models.inputs)
    input: ClassVar[str] = "tokens"
    # the splits `evaluate` reports; metric keys are "<split>/<name>". An extra split named
    # "test_<what>" (an extrapolation test) is read with the test split, once, at the end
    eval_splits: ClassVar[tuple[str, ...]] = ("val", "test")
    # the validation figure that early stopping, targets and checkpoint choice read, and
    # which way is better; the same metric of the test split is reported once, at the end
    metric: ClassVar[str] = "val/accuracy"
    higher_is_better: ClassVar[bool] = True
    # "lm" tasks whose metrics read only the positions with a label (labels != IGNORE), in
    # order, per example: evaluation then keeps the logits there alone, which long test
    # sequences need (the metrics are the same)
    scored_positions_only: ClassVar[bool] = False

    vocab_size: int = 0
    num_outputs: int = 0
    # vectors and points: features per step; images: (channels, height, width)
    features: int = 0
    image_shape: tuple[int, int, int] = (0, 0, 0)
    # forecast heads: steps ahead
    horizon: int = 0
    # the token that pads inputs (ignored by the split hash, so padding never moves an
    # example to another split); None when inputs are never padded
    pad_token: int | None = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.metric.startswith("val/"):
            raise TypeError(f"task {cls.__name__}: metric must be a validation figure 'val/<name>'; got {cls.metric!r}")
        if not {"val", "test"} <= set(cls.eval_splits):
            raise TypeError(f"task {cls.__name__}: eval_splits must include 'val' and 'test'; got {cls.eval_splits}")

    def __init__(self, config: TaskConfig) -> None:
        if not isinstance(config, self.Config):
            raise TypeError(f"task {self.name!r} takes a {self.Config.__name__}; got {type(config).__name__}")
        self.config = config

    @property
    def test_metric(self) -> str:
        """The headline metric on the test split ("test/<name>")."""
        return "test/" + self.metric.split("/", 1)[1]

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Batch:
        """n examples of `split` (train, val or test), none of which any other split can hold."""
        return self.disjoint(n, generator, split, lambda m: self.generate(m, generator, split))

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        """n examples from `split`'s distribution ("train": the training one; "val" and
        "test": the evaluation one), before the split's examples are picked out."""
        raise TypeError(f"{type(self).__name__} must define generate() (or sample(), over a fixed data set)")

    def disjoint(self, n: int, generator: torch.Generator, split: str, draw) -> Batch:
        """n examples of `split` from `draw(m) -> Batch` (m candidates): the candidates whose
        input hash falls in the split's buckets, drawing more until there are n."""
        buckets = SPLIT_BUCKETS.get(split)
        if buckets is None and split.startswith("test_") and split in self.eval_splits:
            # an extra test split (test_1024, ...) keeps the test split's buckets
            buckets = SPLIT_BUCKETS["test"]
        if buckets is None:
            raise ValueError(f"split must be one of {[*SPLITS, *test_splits_of(self)]}; got {split!r}")
        share = len(buckets) / BUCKETS
        kept: list[Batch] = []
        have = 0
        while have < n:
            # enough candidates for the rest in one draw, nearly always
            batch = draw(int((n - have) / share * 1.2) + 8)
            keep = in_buckets(batch["inputs"], buckets, self.pad_token)
            kept.append({key: value[keep] for key, value in batch.items()})
            have += int(keep.sum())
        return {key: torch.cat([b[key] for b in kept])[:n] for key in kept[0]}

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


class ScaledAccuracyTask(Task):
    """A task scored at its answer positions by the scaled accuracy (acc − 1/K) / (1 − 1/K)
    over its K possible answers: 0 at chance, 1 when perfect (Grazzi et al., arXiv:2411.12537)."""

    metric = "val/scaled_accuracy"
    # K, the number of possible answers
    answers: ClassVar[int] = 2

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        correct, scored = token_accuracy(logits, labels)
        accuracy = float(correct.sum() / scored.sum())
        return {"accuracy": accuracy, "scaled_accuracy": scaled(accuracy, self.answers)}


TASKS: Registry[type[Task]] = Registry("task")


def register_task(name: str):
    """Class decorator: `@register_task("mqar")` makes the task available by name."""
    return TASKS.named_class(name, Task)


def get_task(name: str) -> type[Task]:
    """The task class registered as `name`; an unknown name fails with close matches."""
    return TASKS[name]


def build_task(name: str, **options) -> Task:
    """`build_task("mqar", num_kv_pairs=8)` -> the task with its typed config."""
    cls = get_task(name)
    return cls(cls.Config(**options))


def _mix(h: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 (wrapping products; shifts made logical by masks)."""
    h = (h ^ ((h >> 30) & 0x3FFFFFFFF)) * -4658895280553007687  # 0xBF58476D1CE4E5B9
    h = (h ^ ((h >> 27) & 0x1FFFFFFFFF)) * -7723592293110705685  # 0x94D049BB133111EB
    return h ^ ((h >> 31) & 0x1FFFFFFFF)


def example_hash(inputs: torch.Tensor, pad: int | None = None) -> torch.Tensor:
    """[N] int64: a hash of each example's inputs (ids, or the bit patterns of real values),
    the same on every machine and in every process. `pad` tokens count as absent, so an
    example hashes alike however far it is padded."""
    x = inputs.reshape(len(inputs), -1)
    if x.is_floating_point():
        x = x.float().contiguous().view(torch.int32)
    x = x.long()
    # +1 keeps a token 0 apart from an absent one; a position's weight depends on it alone
    present = x + 1 if pad is None else torch.where(x == pad, 0, x + 1)
    weights = _mix(torch.arange(1, x.shape[1] + 1, dtype=torch.long) * 0x9E3779B97F4A7C15 % (2**62))
    return _mix((_mix(present) * (present != 0) * weights).sum(1))


def in_split(inputs: torch.Tensor, split: str, pad: int | None = None) -> torch.Tensor:
    """[N] bool: which examples belong to `split` by their hash."""
    return in_buckets(inputs, SPLIT_BUCKETS[split], pad)


def in_buckets(inputs: torch.Tensor, buckets: tuple[int, ...], pad: int | None = None) -> torch.Tensor:
    """[N] bool: which examples' hashes fall in `buckets`."""
    return torch.isin(example_hash(inputs, pad).remainder(BUCKETS), torch.tensor(buckets))


def test_splits_of(task: Task) -> tuple[str, ...]:
    """The task's extra test splits ("test_<what>"), read once at the end with the test split."""
    return tuple(split for split in task.eval_splits if split.startswith("test_"))


def check_test_lengths(field: str, lengths: tuple[int, ...], seq_len: int, minimum: int) -> tuple[int, ...]:
    """Distinct lengths, each at least `minimum` and none the training length `seq_len`,
    each of which names an extra test split "test_<length>"."""
    lengths = tuple(lengths)
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= minimum for x in lengths):
        raise ValueError(f"task.{field} must be ints of at least {minimum}; got {lengths!r}")
    if len(set(lengths)) != len(lengths) or seq_len in lengths:
        raise ValueError(
            f"task.{field} must be distinct and differ from task.seq_len = {seq_len} (the test split's "
            f"length); got {lengths!r}"
        )
    return lengths


def length_of(split: str, seq_len: int) -> int:
    """The sequence length of `split`: the number in an extra test split "test_<length>",
    else `seq_len`."""
    return int(split[len("test_"):]) if split.startswith("test_") else seq_len


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
