"""One residual block for every mixer: norm → mixer → residual, norm → MLP → residual."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import State, build_mixer
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
        self.mixer = build_mixer(mixer, d_model, **(mixer_options or {}))
        # mlp_ratio = 0 gives mixer-only blocks (Mamba style)
        self.mlp_norm = RMSNorm(d_model, norm_eps) if mlp_ratio > 0 else None
        self.mlp = SwiGLU(d_model, mlp_width(d_model, mlp_ratio)) if mlp_ratio > 0 else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x [B, T, D] -> (x [B, T, D], mixer state)."""
        mixed, state = self.mixer(self.mixer_norm(x), state)
        x = x + self.dropout(mixed)
        if self.mlp is not None:
            x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x, state

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """x [B, D], one token."""
        mixed, state = self.mixer.step(self.mixer_norm(x), state)
        x = x + mixed
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, state
