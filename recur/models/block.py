"""One residual block for every mixer: norm → mixer → residual, norm → MLP → residual.

On a grid x [B, H, W, D] (a backbone with a grid mixer among its layers), a grid mixer
reads the 2-D layout and a sequence mixer reads the cells in row-major order; norms and
the MLP act on each cell alike. A grid is read whole: no state goes in, none comes out.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import State, build_mixer
from ..layers.grid import GRID_MIXERS, GridMixer, build_grid_mixer
from ..layers.parts import RMSNorm


class SwiGLU(nn.Module):
    """The gated MLP of PaLM/LLaMA (Shazeer, arXiv:2002.05202)."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def mlp_width(d_model: int, mlp_ratio: float) -> int:
    """SwiGLU hidden width: 2/3 of mlp_ratio · d_model (equal parameters to a plain MLP), to a multiple of 8."""
    return max(8, int(round(mlp_ratio * d_model * 2 / 3 / 8)) * 8)


class Block(nn.Module):
    def __init__(
        self,
        d_model: int,
        mixer: str,
        mixer_options: dict[str, Any] | None = None,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.mixer_norm = RMSNorm(d_model, norm_eps)
        build = build_grid_mixer if mixer in GRID_MIXERS else build_mixer
        self.mixer = build(mixer, d_model, **(mixer_options or {}))
        # mlp_ratio = 0 gives mixer-only blocks (Mamba style)
        self.mlp_norm = RMSNorm(d_model, norm_eps) if mlp_ratio > 0 else None
        self.mlp = SwiGLU(d_model, mlp_width(d_model, mlp_ratio)) if mlp_ratio > 0 else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x [B, T, D] -> (x [B, T, D], mixer state); or a grid x [B, H, W, D] -> (x, {})."""
        grid = isinstance(self.mixer, GridMixer)
        if x.dim() == 4 and state is not None:
            raise ValueError(f"{self.mixer.name}: a grid [B, H, W, D] is read whole; state must be None")
        if grid and x.dim() != 4:
            raise ValueError(f"{self.mixer.name} is a grid mixer: x must be [B, H, W, D]; got {list(x.shape)}")
        if grid:
            mixed, state = self.mixer(self.mixer_norm(x)), {}
        elif x.dim() == 4:
            # a sequence mixer on a grid: the cells in row-major order
            mixed, _ = self.mixer(self.mixer_norm(x).flatten(1, 2))
            mixed, state = mixed.view(x.shape), {}
        else:
            mixed, state = self.mixer(self.mixer_norm(x), state)
        x = x + self.dropout(mixed)
        if self.mlp is not None:
            x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x, state

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """x [B, D], one token."""
        if isinstance(self.mixer, GridMixer):
            raise ValueError(f"{self.mixer.name} is a grid mixer: it reads a whole grid and has no step")
        mixed, state = self.mixer.step(self.mixer_norm(x), state)
        x = x + mixed
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, state
