"""Digits as images: scikit-learn's bundled 8×8 handwritten digits, classified from pixels.

The images of `recur.tasks.digits` with intensities scaled to [0, 1], as [1, 8, 8] images:
the model's image adapter cuts them into patches and reads them in a scan order
(`input.patch`, `input.scan`), or a grid mixer reads the 2-D layout. Same fixed split as
the sequential task: 80% train, 10% val, 10% test.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import register_task
from .digits import LEVELS, DigitsSplitConfig, DigitsTask


@dataclass(kw_only=True)
class Digits2DConfig(DigitsSplitConfig):
    """The split of the digits images; the images as such take no option."""


@register_task("digits_2d")
class Digits2D(DigitsTask):
    """8×8 digits as images [1, 8, 8] -> 10 classes (patches in a scan order, or a grid mixer)."""

    Config = Digits2DConfig
    input = "image"
    image_shape = (1, 8, 8)

    def images(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() / (LEVELS - 1)).view(-1, 1, 8, 8)

    def tokens_per_example(self) -> int:
        return 64
