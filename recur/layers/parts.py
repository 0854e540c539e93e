"""Building blocks that several mixers share: norms, the short causal convolution, the
Mamba-2 decay gate, feature maps, the options that go with them, and the state dtype rule.
Each block keeps the step form next to the sequence form."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import MixerConfig, State


def state_dtype(module: nn.Module, complex: bool = False) -> torch.dtype:
    """The dtype of a layer's recurrent state, the one its forward returns: float64 when
    the layer's parameters are float64, else float32 (also for bf16 and fp16 layers: a
    state sums over every step); complex64 / complex128 for a complex state.

    Caches of past inputs (the short convolution's, attention's keys and values) are not
    sums: they keep the activations' dtype, the parameters'."""
    real = torch.float64 if next(module.parameters()).dtype == torch.float64 else torch.float32
    return real.to_complex() if complex else real


def log_uniform(shape, low: float, high: float) -> torch.Tensor:
    """log u with u log-uniform in [low, high]."""
    return torch.rand(shape) * (math.log(high) - math.log(low)) + math.log(low)


def step_size_bias(num: int, dt_min: float, dt_max: float, floor: float = 1e-4) -> torch.Tensor:
    """b [num] with softplus(b) = Δ, Δ log-uniform in [dt_min, dt_max] and at least `floor`:
    the initial step sizes of Mamba and Mamba-2."""
    step = log_uniform(num, dt_min, dt_max).exp().clamp(min=floor)
    # softplus⁻¹(Δ) = Δ + log(1 − exp(−Δ))
    return step + torch.log(-torch.expm1(-step))


def check_range(config: MixerConfig, low: str, high: str) -> None:
    """0 < config.low <= config.high."""
    a, b = getattr(config, low), getattr(config, high)
    if not 0 < a <= b:
        raise ValueError(f"need 0 < {low} <= {high}; got {low}={a}, {high}={b}")


@dataclass(kw_only=True)
class ShortConvConfig(MixerConfig):
    # kernel of the short causal convolution before the recurrence; 0 drops it (SiLU only)
    conv_size: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.conv_size, int) or isinstance(self.conv_size, bool) or self.conv_size < 0:
            raise ValueError(f"conv_size must be an int >= 0 (0: no convolution); got {self.conv_size!r}")


@dataclass(kw_only=True)
class StepSizeConfig(MixerConfig):
    # the step sizes Δ start log-uniform in [dt_min, dt_max]
    dt_min: float = 1e-3
    dt_max: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "dt_min", "dt_max")


@dataclass(kw_only=True)
class DecayGateConfig(StepSizeConfig):
    """Options of the Mamba-2 decay gate α = exp(−A Δ), Δ = softplus(a + dt_bias)."""

    # the decay rate A of each gate starts uniform in [a_min, a_max]
    a_min: float = 1.0
    a_max: float = 16.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "a_min", "a_max")


def decay_gate_parameters(num: int, config: DecayGateConfig) -> tuple[nn.Parameter, nn.Parameter]:
    """A_log and dt_bias of `num` Mamba-2 decay gates, A ~ U(a_min, a_max)."""
    A = torch.empty(num).uniform_(config.a_min, config.a_max)
    return nn.Parameter(A.log()), nn.Parameter(step_size_bias(num, config.dt_min, config.dt_max))


def decay_gate(a: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Mamba-2 decay gate of pre-activations a [..., num]: (log α = −exp(A_log) Δ, Δ =
    softplus(a + dt_bias)), in float32 or wider."""
    wide = torch.promote_types(a.dtype, torch.float32)
    step = F.softplus(a.to(wide) + dt_bias.to(wide))
    return -A_log.to(wide).exp() * step, step


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
    """Causal depthwise convolution over time with a small kernel, then SiLU (H3, Mamba).

    Its state is the last `size - 1` inputs, [B, size - 1, D], under `key` in the layer's
    state. Size 0 drops the convolution: SiLU alone, and no state.
    """

    def __init__(self, dim: int, size: int = 4, key: str = "conv") -> None:
        super().__init__()
        if size < 0:
            raise ValueError(f"size must be >= 0 (0: no convolution); got {size}")
        self.size, self.key = size, key
        if size:
            self.weight = nn.Parameter(torch.empty(dim, size))
            self.bias = nn.Parameter(torch.zeros(dim))
            nn.init.uniform_(self.weight, -(size**-0.5), size**-0.5)

    def init_state(self, batch_size: int, device=None) -> State:
        if not self.size:
            return {}
        dim = self.weight.shape[0]
        return {self.key: torch.zeros(batch_size, self.size - 1, dim, device=device, dtype=self.weight.dtype)}

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x [B, T, D], the layer's state (or None) -> (y [B, T, D], {key: new state})."""
        if not self.size:
            return F.silu(x), {}
        B, T, D = x.shape
        previous = self.init_state(B, x.device)[self.key] if state is None else state[self.key]
        # [B, size - 1 + T, D]: the previous inputs, then this chunk
        padded = torch.cat([previous.to(x.dtype), x], dim=1)
        # y_t = b + Σ_j w_j x_{t - (size - 1) + j}: a few fused multiply-adds, which beat
        # conv1d's grouped path on CPU (and in float64 by far)
        weight = self.weight.to(x.dtype)
        y = self.bias.to(x.dtype).expand(B, T, D)
        for j in range(self.size):
            y = torch.addcmul(y, padded[:, j : j + T], weight[:, j])
        return F.silu(y), {self.key: padded[:, padded.shape[1] - (self.size - 1) :]}


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, T, H·d] -> [B, T, H, d]."""
    return x.unflatten(-1, (num_heads, -1))


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, T, H, d] -> [B, T, H·d]."""
    return x.flatten(-2)


class ShortConvs(nn.ModuleDict):
    """A ShortConv of one size per named input, input n's state under "conv_<n>": the
    input pipeline of the DeltaNet-style layers."""

    def __init__(self, widths: dict[str, int], size: int) -> None:
        super().__init__({name: ShortConv(width, size, key=f"conv_{name}") for name, width in widths.items()})

    def init_state(self, batch_size: int, device=None) -> State:
        return {key: value for conv in self.values() for key, value in conv.init_state(batch_size, device).items()}

    def forward(self, inputs: dict[str, torch.Tensor], state: State | None) -> tuple[dict[str, torch.Tensor], State]:
        """Each input through its ShortConv: (the outputs by name, the new conv states)."""
        outputs, new_state = {}, {}
        for name, value in inputs.items():
            outputs[name], conv_state = self[name](value, state)
            new_state.update(conv_state)
        return outputs, new_state


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
