"""Activator: a GLU unit in place of attention, the vision baseline without token mixing.

Activator: GLU Activations as The Core Functions of a Vision Transformer
(Abdullah, Aydin; arXiv:2405.15953). The unit replaces attention in a pre-norm block:

    u = LayerNorm(GELU(x W_u)),   v = LayerNorm(x W_v)     (one LayerNorm for both)
    y = (u ⊙ v) W_o

It acts on each patch alone: patches meet only in the pooling after the last block. It
is registered as a grid mixer so that the model's blocks (norm, unit, residual, MLP; the
paper's reduced variant drops the MLP: `model.mlp_ratio 0`) stack it on the patch grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .grid import GridMixer, GridMixerConfig, register_grid_mixer


@dataclass(kw_only=True)
class ActivatorConfig(GridMixerConfig):
    # hidden width of the unit as a multiple of d_model
    expand: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.impl != "auto":
            raise ValueError(f"impl must be 'auto' (the layer has one form); got {self.impl!r}")
        self.width("expand")


@register_grid_mixer("activator")
class Activator(GridMixer):
    Config = ActivatorConfig

    def __init__(self, config: ActivatorConfig) -> None:
        super().__init__(config)
        D, hidden = config.d_model, config.width("expand")
        self.u_proj = nn.Linear(D, hidden)
        self.v_proj = nn.Linear(D, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.o_proj = nn.Linear(hidden, D)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        u = self.norm(F.gelu(self.u_proj(x)))
        v = self.norm(self.v_proj(x))
        return self.o_proj(u * v)
