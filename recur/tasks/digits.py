"""Sequential digits: classify scikit-learn's bundled 8×8 handwritten digits pixel by pixel.

An offline stand-in for sequential (and permuted) MNIST (Le, Jaitly, Hinton,
arXiv:1504.00941): each image is read as 64 tokens, the pixel intensities 0..16 in
raster order, or in one fixed random order when `permuted`; the model classifies the
sequence into 10 classes. 1797 images in one fixed split: 80% train, 10% val, 10% test.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Batch, Task, TaskConfig, register_task

LEVELS = 17


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels [1797, 64] long in 0..16, labels [1797] long); scikit-learn ships the data."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise ImportError("the digits task reads scikit-learn's bundled data: pip install 'recur[tasks]'") from error
    data = sklearn_digits()
    return torch.as_tensor(data.data, dtype=torch.long), torch.as_tensor(data.target, dtype=torch.long)


@dataclass(kw_only=True)
class DigitsSplitConfig(TaskConfig):
    """The fixed split of the digits images, shared by the tasks that read them."""

    # fraction of the images held out, half for validation and half for testing
    held_out_fraction: float = 0.2
    # the seed of the split and of a permuted pixel order (fixed, independent of the run's seed)
    data_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.held_out_fraction < 1:
            raise ValueError(f"task.held_out_fraction must be in (0, 1); got {self.held_out_fraction}")


@dataclass(kw_only=True)
class DigitsConfig(DigitsSplitConfig):
    # read the pixels in one fixed random order instead of row by row
    permuted: bool = False


class DigitsTask(Task):
    """The 1797 images in one fixed split, whatever form the model reads them in (`images`):
    training batches drawn from the train split, each evaluation split read whole, in order;
    10 classes, scored by accuracy."""

    head = "classify"
    num_outputs = 10

    def __init__(self, config: DigitsSplitConfig) -> None:
        super().__init__(config)
        pixels, labels = load_digits()
        # the split does not depend on the form of the images: every variant tests on the same ones
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(config.data_seed))
        self.split_data = split_images(self.images(pixels), labels, order, config.held_out_fraction)

    def images(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's inputs from the pixels [1797, 64] (long, 0..16, raster order)."""
        raise TypeError(f"{type(self).__name__} must define images()")

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Batch:
        images, labels = self.split_data[split]
        if split != "train":
            # evaluation reads the whole split, in order
            return {"inputs": images, "labels": labels}
        index = torch.randint(0, len(labels), (n,), generator=generator)
        return {"inputs": images[index], "labels": labels[index]}

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float((logits.argmax(-1) == labels).float().mean())}


@register_task("digits")
class Digits(DigitsTask):
    """Sequential (optionally permuted) 8×8 digits: 64 pixel tokens -> 10 classes."""

    Config = DigitsConfig
    vocab_size = LEVELS

    def images(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.config.permuted:
            return pixels
        return pixels[:, torch.randperm(64, generator=torch.Generator().manual_seed(self.config.data_seed + 1))]


def split_images(images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, held_out: float) -> dict:
    """train / val / test by one fixed permutation `order`: the first `held_out` of it split
    evenly between test and val, the rest for training."""
    n_held = int(round(len(labels) * held_out))
    n_test = n_held // 2
    parts = {"test": order[:n_test], "val": order[n_test:n_held], "train": order[n_held:]}
    return {split: (images[index], labels[index]) for split, index in parts.items()}
