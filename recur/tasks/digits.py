"""Sequential digits: classify scikit-learn's bundled 8×8 handwritten digits pixel by pixel.

An offline stand-in for sequential (and permuted) MNIST (Le, Jaitly, Hinton,
arXiv:1504.00941): each image is read as 64 tokens, the pixel intensities 0..16 in
raster order, or in one fixed random order when `permuted`; the model classifies the
sequence into 10 classes. 1797 images, a fixed 80/20 train/test split.
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
class DigitsConfig(TaskConfig):
    # read the pixels in one fixed random order instead of row by row
    permuted: bool = False
    # fraction of the images held out for testing
    test_fraction: float = 0.2
    # the seed of the split and of the pixel order (fixed, independent of the run's seed)
    data_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"task.test_fraction must be in (0, 1); got {self.test_fraction}")


@register_task("digits")
class Digits(Task):
    """Sequential (optionally permuted) 8×8 digits: 64 pixel tokens -> 10 classes."""

    Config = DigitsConfig
    head = "classify"
    eval_splits = ("test",)
    metric = "test/accuracy"

    def __init__(self, config: DigitsConfig) -> None:
        super().__init__(config)
        self.vocab_size, self.num_outputs = LEVELS, 10
        pixels, labels = load_digits()
        # the split does not depend on `permuted`: both variants test on the same images
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(config.data_seed))
        if config.permuted:
            pixels = pixels[:, torch.randperm(64, generator=torch.Generator().manual_seed(config.data_seed + 1))]
        n_test = int(round(len(labels) * config.test_fraction))
        self.split_data = {
            "train": (pixels[order[n_test:]], labels[order[n_test:]]),
            "test": (pixels[order[:n_test]], labels[order[:n_test]]),
        }

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Batch:
        pixels, labels = self.split_data["test" if split == "test" else "train"]
        if split == "test":
            # evaluation reads the whole test set, in order
            return {"inputs": pixels, "labels": labels}
        index = torch.randint(0, len(labels), (n,), generator=generator)
        return {"inputs": pixels[index], "labels": labels[index]}

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float((logits.argmax(-1) == labels).float().mean())}
