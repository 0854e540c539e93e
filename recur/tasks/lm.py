"""Byte-level language modelling on any text file or folder; bits per byte.

The corpus is a UTF-8 file, or every file under a folder (sorted, joined by newlines);
without a path it is the text of Python's own `pydoc_data` topics (the reference pages
behind `help()`, about 0.75 MB of English on every Python install), so the task needs no
download. The last `held_out_fraction` of the bytes is held out, its first half for
validation and its second for testing, so no window of one split overlaps another's;
examples are random windows of `seq_len + 1` bytes, and the metric is bits per byte, mean
cross-entropy / ln 2.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import Batch, Task, TaskConfig, register_task


def default_corpus() -> bytes:
    try:
        from pydoc_data.topics import topics
    except ImportError as error:
        raise ImportError("this Python has no pydoc_data; give a text file or folder with task.path") from error
    return "\n\n".join(topics[name] for name in sorted(topics)).encode("utf-8")


def corpus_files(path: Path) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(f"task.path {str(path)!r} does not exist; give a text file or a folder of them")
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts))


@dataclass(kw_only=True)
class LMTaskConfig(TaskConfig):
    # a text file or folder; "" = Python's pydoc_data topics
    path: str = ""
    seq_len: int = 128
    held_out_fraction: float = 0.1
    eval_examples: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seq_len <= 0:
            raise ValueError(f"task.seq_len must be positive; got {self.seq_len}")
        if not 0 < self.held_out_fraction < 1:
            raise ValueError(f"task.held_out_fraction must be in (0, 1); got {self.held_out_fraction}")
        if self.path:
            files = corpus_files(Path(self.path))
            size = sum(os.path.getsize(p) for p in files)
            if size == 0:
                raise ValueError(f"task.path {self.path!r} holds an empty corpus ({len(files)} files, 0 bytes)")
            # val and test each hold half the held-out bytes, at least one window
            needed = math.ceil(2 * (self.seq_len + 1) / self.held_out_fraction)
            if size < needed:
                raise ValueError(
                    f"task.path {self.path!r} holds {size} bytes; seq_len = {self.seq_len} with held_out_fraction = "
                    f"{self.held_out_fraction} needs at least {needed}"
                )


@register_task("lm")
class ByteLM(Task):
    """Byte-level language modelling on a text file or folder (default: Python's pydoc topics)."""

    Config = LMTaskConfig
    metric = "val/bits_per_byte"
    higher_is_better = False

    def __init__(self, config: LMTaskConfig) -> None:
        super().__init__(config)
        self.vocab_size = 256
        self._splits: dict[str, torch.Tensor] | None = None

    def splits(self) -> dict[str, torch.Tensor]:
        """The corpus bytes as uint8 tensors, read on first use."""
        if self._splits is None:
            if self.config.path:
                data = b"\n".join(p.read_bytes() for p in corpus_files(Path(self.config.path)))
            else:
                data = default_corpus()
            tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            cut = int(len(tokens) * (1 - self.config.held_out_fraction))
            middle = (cut + len(tokens)) // 2
            self._splits = {"train": tokens[:cut], "val": tokens[cut:middle], "test": tokens[middle:]}
        return self._splits

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Batch:
        tokens = self.splits()[split]
        T = self.config.seq_len
        starts = torch.randint(0, len(tokens) - T, (n,), generator=generator)
        windows = tokens[starts[:, None] + torch.arange(T + 1)].long()
        return {"inputs": windows[:, :-1], "labels": windows[:, 1:]}

    def tokens_per_example(self) -> int:
        return self.config.seq_len

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        nats = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        return {
            "bits_per_byte": float(nats) / math.log(2),
            "accuracy": float((logits.argmax(-1) == labels).float().mean()),
        }
