"""PGN: the parallel gated network, a gated unit over a linear read of the whole recent past.

PGN: The RNN's New Successor is Effective for Long-Range Time Series Forecasting (Jia, Lin,
Yu, Wang, Liu, Wan; NeurIPS 2024, arXiv:2409.17703), §3.1. Instead of passing a hidden state
from step to step, each step reads the previous w inputs directly through the historical
information extraction (HIE) layer, a linear map of the window, and a single gate selects
between that history and a candidate made from it and the current input:

    H_t = b + Σ_{j=1..w} W_j ⊙ x_{t−j}                 (HIE; x_{t−j} = 0 before the start)
    G_t = σ(W_g [x_t, H_t] + b_g),   Ĥ_t = tanh(W_c [x_t, H_t] + b_c)
    y_t = G_t ⊙ H_t + (1 − G_t) ⊙ Ĥ_t

Every output depends on the inputs through one linear map and one gate, so the path from
any past input to the output has length one, and the whole sequence runs in parallel. The
HIE weights are one kernel per channel (a depthwise causal convolution of length w that
skips the current step). The recurrent state is the window of the last w inputs.

Forms (`impl`): "naive" sums the window term by term, as written above; "fft" applies the
same convolution by FFT, O(T log T) whatever w (the default, since w is usually the whole
look-back window).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops.ssm import fft_conv
from .base import Mixer, MixerConfig, State
from .registry import register_mixer


@dataclass(kw_only=True)
class PGNConfig(MixerConfig):
    # w: how many previous steps the HIE layer reads (the paper reads the whole look-back
    # window); the state holds that many inputs
    window: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window <= 0:
            raise ValueError(f"window must be a positive int (previous steps the HIE layer reads); got {self.window!r}")


@register_mixer("pgn")
class PGN(Mixer):
    Config = PGNConfig
    impls = ("naive", "fft")

    def __init__(self, config: PGNConfig) -> None:
        super().__init__(config)
        D, w = config.d_model, config.window
        # W_j for j = 1..w (column j − 1 weighs x_{t−j}), and b
        self.hie_weight = nn.Parameter(torch.empty(D, w).uniform_(-(w**-0.5), w**-0.5))
        self.hie_bias = nn.Parameter(torch.zeros(D))
        # [W_g; W_c] over [x_t, H_t]: the gate and the candidate in one map
        self.gate_proj = nn.Linear(2 * D, 2 * D)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        dtype = self.hie_weight.dtype
        return {"window": torch.zeros(batch_size, self.config.window, self.config.d_model, device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        B, T, _ = x.shape
        previous = self.init_state(B, x.device)["window"] if state is None else state["window"]
        # [B, w + T, D]: the w inputs before this chunk, then the chunk
        padded = torch.cat([previous.to(x.dtype), x], dim=1)
        impl = "fft" if self.config.impl == "auto" else self.config.impl
        history = self._hie_fft(padded, T) if impl == "fft" else self._hie_naive(padded, T)
        return self._gate(x, history), {"window": padded[:, T:]}

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        window = self.init_state(x.shape[0], x.device)["window"] if state is None else state["window"]
        # H_t = b + Σ_j W_j x_{t−j}: the window's newest input is x_{t−1}, [B, D]
        newest_first = window.to(x.dtype).flip(1)
        history = self.hie_bias.to(x.dtype) + torch.einsum("bjd,dj->bd", newest_first, self.hie_weight.to(x.dtype))
        y = self._gate(x, history)
        return y, {"window": torch.cat([window[:, 1:], x[:, None].to(window.dtype)], dim=1)}

    def _hie_naive(self, padded: torch.Tensor, T: int) -> torch.Tensor:
        """H [B, T, D] from the inputs [B, w + T, D], one lag at a time."""
        w = self.config.window
        weight = self.hie_weight.to(padded.dtype)
        history = self.hie_bias.to(padded.dtype).expand(padded.shape[0], T, -1)
        for j in range(1, w + 1):
            # x_{t−j} for every t of the chunk
            history = torch.addcmul(history, padded[:, w - j : w - j + T], weight[:, j - 1])
        return history

    def _hie_fft(self, padded: torch.Tensor, T: int) -> torch.Tensor:
        """H [B, T, D] from the inputs [B, w + T, D] as one causal convolution whose kernel is
        0 at lag 0 (the current step is not history) and W_j at lag j."""
        w = self.config.window
        # the FFT has no half-precision CPU kernels, and float32 is exact enough for bf16 outputs
        wide = torch.promote_types(padded.dtype, torch.float32)
        kernel = padded.new_zeros(padded.shape[-1], w + T, dtype=wide)
        kernel[:, 1 : w + 1] = self.hie_weight.to(wide)
        convolved = fft_conv(padded.to(wide), kernel)[:, w:]
        return (convolved + self.hie_bias.to(wide)).to(padded.dtype)

    def _gate(self, x: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """y = G ⊙ H + (1 − G) ⊙ tanh(c), with [G; c] from [x, H]."""
        gate, candidate = self.gate_proj(torch.cat([x, history], dim=-1)).chunk(2, dim=-1)
        gate = torch.sigmoid(gate)
        return gate * history + (1 - gate) * torch.tanh(candidate)
