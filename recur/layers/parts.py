"""Building blocks that several mixers share: norms, the short causal convolution,
feature maps. Each keeps the step form next to the sequence form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last axis (Zhang & Sennrich, arXiv:1910.07467)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float() if dtype in (torch.float16, torch.bfloat16) else x
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x * self.weight).to(dtype)


class GatedRMSNorm(RMSNorm):
    """RMSNorm(x) ⊙ SiLU(z): the output gate of Mamba-2, GLA and Gated DeltaNet."""

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * F.silu(z)


class ShortConv(nn.Module):
    """Causal depthwise convolution over time with a small kernel (H3, Mamba).

    The state is the last `kernel_size - 1` inputs, [B, kernel_size - 1, D].
    """

    def __init__(self, dim: int, kernel_size: int = 4, activation: bool = True) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1; got {kernel_size}")
        self.kernel_size = kernel_size
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(dim, kernel_size))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.uniform_(self.weight, -(kernel_size**-0.5), kernel_size**-0.5)

    def init_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch_size, self.kernel_size - 1, self.weight.shape[0], device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D], state [B, kernel_size - 1, D] -> (y [B, T, D], new state)."""
        B, T, D = x.shape
        if state is None:
            state = self.init_state(B, x.device, x.dtype)
        # [B, kernel_size - 1 + T, D]: the previous inputs, then this chunk
        padded = torch.cat([state.to(x.dtype), x], dim=1)
        # y_t = b + Σ_j w_j x_{t - (kernel_size - 1) + j}: a few fused multiply-adds, which beat
        # conv1d's grouped path on CPU (and in float64 by far)
        weight = self.weight.to(x.dtype)
        y = self.bias.to(x.dtype).expand(B, T, D)
        for j in range(self.kernel_size):
            y = torch.addcmul(y, padded[:, j : j + T], weight[:, j])
        new_state = padded[:, padded.shape[1] - (self.kernel_size - 1) :]
        return (F.silu(y) if self.activation else y), new_state

    def step(self, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, D] -> (y [B, D], new state)."""
        y, state = self.forward(x.unsqueeze(1), state)
        return y.squeeze(1), state


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, T, H·d] -> [B, T, H, d]."""
    return x.unflatten(-1, (num_heads, -1))


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, T, H, d] -> [B, T, H·d]."""
    return x.flatten(-2)


def short_conv_projections(
    projected: dict[str, torch.Tensor], convs: nn.ModuleDict, state: dict[str, torch.Tensor] | None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each projection through its ShortConv (carrying "conv_<name>" in the state), or
    through SiLU when it has none: the input pipeline of DeltaNet-style layers.

    Returns (the activated projections, the new conv states).
    """
    activated, new_state = {}, {}
    for name, value in projected.items():
        if name in convs:
            previous = None if state is None else state[f"conv_{name}"]
            activated[name], new_state[f"conv_{name}"] = convs[name](value, previous)
        else:
            activated[name] = F.silu(value)
    return activated, new_state


FEATURE_MAPS = {
    "identity": lambda x: x,
    "elu+1": lambda x: F.elu(x) + 1,
    "relu": F.relu,
}


def feature_map(name: str):
    """The feature maps of linear attention (Katharopoulos et al., arXiv:2006.16236)."""
    if name not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {sorted(FEATURE_MAPS)}; got {name!r}")
    return FEATURE_MAPS[name]


def rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (Su et al., RoFormer, arXiv:2104.09864).

    Args:
        x: [B, T, H, D] with D even.
        positions: [B, T] absolute positions (integers).

    Returns:
        x with channel pairs (i, i + D/2) rotated by positions · base^(-2i/D).
    """
    D = x.shape[-1]
    if D % 2:
        raise ValueError(f"rotary needs an even head size; got {D}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = base ** (-torch.arange(0, D // 2, device=x.device, dtype=dtype) * 2 / D)
    # [B, T, 1, D/2]
    angles = (positions.to(dtype)[..., None] * inv_freq).unsqueeze(2)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.to(dtype).chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


def positions_after(state_positions: torch.Tensor | None, batch_size: int, length: int, device) -> torch.Tensor:
    """Absolute positions [B, T] of a chunk that follows a state holding `state_positions`
    ([B], the number of tokens seen so far), or starting at 0."""
    start = torch.zeros(batch_size, dtype=torch.int64, device=device) if state_positions is None else state_positions
    return start[:, None] + torch.arange(length, device=device)
