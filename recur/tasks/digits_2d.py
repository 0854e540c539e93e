"""Digits as images: scikit-learn's bundled 8×8 handwritten digits, classified from pixels.

The images of `recur.tasks.digits` with intensities scaled to [0, 1], as [1, 8, 8] images:
the model's image adapter cuts them into patches and reads them in a scan order
(`input.patch`, `input.scan`), or a grid mixer reads the 2-D layout. Same fixed split as
the sequential task: 80% train, 10% val, 10% test.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Batch, Task, TaskConfig, register_task
from .digits import LEVELS, load_digits, split_images


@dataclass(kw_only=True)
class Digits2DConfig(TaskConfig):
    # fraction of the images held out, half for validation and half for testing
    held_out_fraction: float = 0.2
    # the seed of the split (fixed, independent of the run's seed)
    data_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.held_out_fraction < 1:
            raise ValueError(f"task.held_out_fraction must be in (0, 1); got {self.held_out_fraction}")


@register_task("digits_2d")
class Digits2D(Task):
    """8×8 digits as images [1, 8, 8] -> 10 classes (patches in a scan order, or a grid mixer)."""

    Config = Digits2DConfig
    input = "image"
    head = "classify"

    def __init__(self, config: Digits2DConfig) -> None:
        super().__init__(config)
        self.num_outputs, self.image_shape = 10, (1, 8, 8)
        pixels, labels = load_digits()
        images = (pixels.float() / (LEVELS - 1)).view(-1, 1, 8, 8)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(config.data_seed))
        self.split_data = split_images(images, labels, order, config.held_out_fraction)

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Batch:
        images, labels = self.split_data[split]
        if split != "train":
            # evaluation reads the whole split, in order
            return {"inputs": images, "labels": labels}
        index = torch.randint(0, len(labels), (n,), generator=generator)
        return {"inputs": images[index], "labels": labels[index]}

    def tokens_per_example(self) -> int:
        return 64

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float((logits.argmax(-1) == labels).float().mean())}
