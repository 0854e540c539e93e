"""Grid mixers: layers that mix the tokens of a 2-D layout instead of a sequence.

A grid mixer takes x [B, H, W, d_model] (row-major: x[:, i, j] is the patch in row i,
column j) and returns a tensor of the same shape. It has no recurrent state to carry
between calls and no step: a grid is read whole (pLSTM's 2-D form, LightNet's one-scan form
over a grid, ViG's bidirectional 2-D GLA). Vision models place grid mixers on the patch
grid; 1-D mixers run over a scan order of the same patches instead.

Grid mixers have their own registry, `GRID_MIXERS`, because the sequence mixers' shared
properties (state carry, step == forward, causality) do not apply to them.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..registry import Registry, did_you_mean
from .base import MixerConfig

GRID_MIXERS: Registry[type[GridMixer]] = Registry("grid mixer")


@dataclass(kw_only=True)
class GridMixerConfig(MixerConfig):
    """Fields every grid mixer has (d_model, impl); subclasses add their own, each with a
    default that works for any d_model divisible by the head count."""


class GridMixer(nn.Module, abc.ABC):
    """Base class of the grid mixers: `forward(x [B, H, W, d_model]) -> [B, H, W, d_model]`.

    Subclasses set `Config`, implement `mix` and are registered with
    `@register_grid_mixer(name)`. `forward` checks the input once and calls `mix`, so a
    layer's own code sees a 4-D tensor in the parameters' dtype and device with H, W >= 1.
    """

    Config: ClassVar[type[GridMixerConfig]] = GridMixerConfig
    name: ClassVar[str] = ""

    def __init__(self, config: GridMixerConfig) -> None:
        super().__init__()
        self.config = config

    @abc.abstractmethod
    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, H, W, d_model] -> [B, H, W, d_model]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d_model = self.config.d_model
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.name}: x must be a tensor [B, H, W, {d_model}]; got {type(x).__name__}")
        if x.dim() != 4 or x.shape[-1] != d_model:
            raise ValueError(f"{self.name}: x must have shape [B, H, W, {d_model}]; got {list(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{self.name}: x must be floating point; got {x.dtype}")
        if x.shape[1] == 0 or x.shape[2] == 0 or x.shape[0] == 0:
            return x.new_zeros(x.shape)
        reference = next(self.parameters(), None)
        if reference is not None and (x.dtype != reference.dtype or x.device != reference.device):
            raise ValueError(
                f"{self.name}: x is {x.dtype} on {x.device} but the layer's parameters are "
                f"{reference.dtype} on {reference.device}"
            )
        return self.mix(x)


def register_grid_mixer(name: str):
    """Class decorator: `@register_grid_mixer("plstm_2d")` makes the layer available by name."""
    return GRID_MIXERS.named_class(name, GridMixer)


def get_grid_mixer(name: str) -> type[GridMixer]:
    """The grid layer class registered as `name`; an unknown name fails with close matches."""
    return GRID_MIXERS[name]


def grid_mixer_config(name: str, d_model: int, **options: Any) -> GridMixerConfig:
    """The typed config of grid mixer `name`; unknown option names fail with close matches."""
    cls = get_grid_mixer(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)} - {"d_model"}
    for key in options:
        if key not in fields:
            raise ValueError(
                f"grid mixer {name!r} has no option {key!r}{did_you_mean(key, fields)} Options: {sorted(fields)}"
            )
    return cls.Config(d_model=d_model, **options)


def build_grid_mixer(name: str, d_model: int, **options: Any) -> GridMixer:
    """An instance of grid mixer `name` with the given options."""
    return get_grid_mixer(name)(grid_mixer_config(name, d_model, **options))
