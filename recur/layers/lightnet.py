"""LightNet: an additive linear recurrence that needs one scan for multi-dimensional data.

You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet
(Qin, Mao, Shen, Li, Zhang, Dai, Zhong; arXiv:2405.21022):

    Ŝ_t = Ŝ_{t-1} + exp(k_t) v_tᵀ,   Z_t = Z_{t-1} + exp(k_t)   (per key channel)
    o_t = SiLU(q_t)ᵀ (Ŝ_t / Z_t)

Nothing decays: a token's weight is exp(k_s) / Z_t whatever its distance, so the state
after the last token is the same in any scan order. For a 1-D causal sequence this is GLA
on normalised keys: with z_t = log Z_t = logcumsumexp(k)_t, S_t = Ŝ_t / Z_t follows
S_t = diag(exp(z_{t-1} - z_t)) S_{t-1} + exp(k_t - z_t) v_tᵀ, every factor in (0, 1].
On a grid (`lightnet_2d`) every cell reads the final state of one scan over all cells.

Positions enter in two ways, both relative:
- MD-TPE: a Toeplitz mixing of the inputs along each axis (a kernel of the offset only),
  added to them; here each kernel is a sum of `tpe_size` exponentials per channel: a
  Toeplitz matrix or an FFT convolution over a chunk, and a constant-decay linear
  recurrence between chunks, so the 1-D layer keeps an O(1) state.
- MD-LRPE: queries and keys pass through [x cos θ·p, x sin θ·p], so that
  q'_t · k'_s = Σ_c q_c k_c cos(θ_c · (p_t - p_s)); on a grid, half of the key channels
  turn with the row and half with the column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.gla import GLA as GLA_FAMILY
from ..ops.gla import gla
from .base import MixerConfig, RecurrentMixer, State
from .grid import GridMixer, GridMixerConfig, register_grid_mixer
from .parts import GatedRMSNorm, merge_heads, positions_after, split_heads, state_dtype
from .registry import register_mixer


def additive_recurrence(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, angles: torch.Tensor | None = None
) -> torch.Tensor:
    """LightNet's recurrence as the paper writes it, one step at a time, from zero state.

    q, k [B, T, H, K], v [B, T, H, V]; angles [B, T, 1, K] (LRPE phases) or None.
    Returns o [B, T, H, V]. exp(k) is taken as is: a reference for moderate inputs.
    """
    B, T, H, K = q.shape
    phi = F.silu(q)
    S_hat = q.new_zeros(B, H, K, v.shape[-1], 2)
    Z = q.new_zeros(B, H, K)
    outputs = []
    for t in range(T):
        # Ŝ_t = Ŝ_{t-1} + exp(k_t) v_tᵀ; with LRPE the key carries its phase: [B, H, K, 2]
        weight = k[:, t].exp()
        phase = torch.zeros_like(weight) if angles is None else angles[:, t].expand_as(weight)
        rotated = torch.stack([phase.cos(), phase.sin()], -1) * weight[..., None]
        S_hat = S_hat + rotated[..., None, :] * v[:, t][:, :, None, :, None]
        # Z_t = Z_{t-1} + exp(k_t)
        Z = Z + weight
        # o_t = φ(q_t)ᵀ Ŝ_t / Z_t, the query at its own phase
        query = torch.stack([phase.cos(), phase.sin()], -1) * phi[:, t][..., None]
        outputs.append(torch.einsum("bhkr,bhkvr->bhv", query / Z[..., None], S_hat))
    return torch.stack(outputs, 1)


def lrpe(x: torch.Tensor, angles: torch.Tensor | None) -> torch.Tensor:
    """[x cos θ·p, x sin θ·p] along the last axis (x unchanged when angles is None)."""
    if angles is None:
        return x
    return torch.cat([x * angles.cos(), x * angles.sin()], dim=-1)


def lrpe_frequencies(n: int, base: float, dtype: torch.dtype, device=None) -> torch.Tensor:
    """θ_c = base^(-c/n), c = 0..n-1: from one radian per position down to 1/base."""
    return base ** (-torch.arange(n, dtype=dtype, device=device) / n)


def normalised_keys(k: torch.Tensor, z0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The additive recurrence as GLA inputs.

    k [B, T, H, K]; z0 [B, H, K] (log Z before the chunk; -inf: nothing seen) or None.
    Returns (exp(k_t - z_t), log decay z_{t-1} - z_t, z_T), all in k's dtype.
    """
    # z_t = log Z_t = logcumsumexp over time, continued from z0
    z = k.logcumsumexp(dim=1)
    if z0 is not None:
        z = torch.logaddexp(z0[:, None], z)
        previous = torch.cat([z0[:, None], z[:, :-1]], dim=1)
    else:
        # with no state the first decay multiplies a zero state: any finite value does
        previous = torch.cat([z[:, :1], z[:, :-1]], dim=1)
    return (k - z).exp(), previous - z, z[:, -1]


# up to this length the Toeplitz matrix is applied as it is; longer, as an FFT convolution
DIRECT_LENGTH = 128


class ToeplitzPositionEncoding(nn.Module):
    """A causal Toeplitz mixing along time, channel by channel:
    y_t = Σ_{s<=t} K[t - s] ⊙ x_s with K[j] = Σ_e a_e λ_e^j, the output of the linear
    recurrence s_t = diag(λ) s_{t-1} + x_t, y_t = aᵀ s_t. Over a chunk the kernel runs as
    a matrix (short chunks) or an FFT convolution; the state s carries between chunks."""

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.dim, self.size = dim, size
        # decays spread over [0.5, 0.99]: offsets of a few steps to about a hundred
        decay = torch.linspace(0.5, 0.99, size).expand(dim, size)
        self.decay_logit = nn.Parameter(torch.logit(decay).clone())
        self.weight = nn.Parameter(torch.randn(dim, size) * 0.02)

    def powers(self, T: int, dtype: torch.dtype) -> torch.Tensor:
        """λ^j for j = 0..T: [T + 1, dim, size]."""
        log_decay = F.logsigmoid(self.decay_logit.to(dtype))
        return (torch.arange(T + 1, device=log_decay.device, dtype=dtype)[:, None, None] * log_decay).exp()

    def matrix(self, T: int, dtype: torch.dtype) -> torch.Tensor:
        """The causal Toeplitz matrix M[t, s] = K[t - s] (0 for s > t): [T, T, dim]."""
        kernel = (self.powers(T - 1, dtype) * self.weight.to(dtype)).sum(-1)
        offsets = torch.arange(T, device=kernel.device)
        lag = offsets[:, None] - offsets[None, :]
        return kernel[lag.clamp(min=0)] * (lag >= 0)[..., None]

    def forward(self, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, T, dim], state s_0 [N, dim, size] or None -> (y [N, T, dim], s_T)."""
        T = x.shape[1]
        wide = torch.float64 if x.dtype == torch.float64 else torch.float32
        powers, a, xw = self.powers(T, wide), self.weight.to(wide), x.to(wide)
        if T <= DIRECT_LENGTH:
            y = torch.einsum("tsd,nsd->ntd", self.matrix(T, wide), xw)
        else:
            # y = K * x (causal), as a product of spectra padded to 2T
            kernel = (powers[:T] * a).sum(-1)
            spectrum = torch.fft.rfft(xw, n=2 * T, dim=1) * torch.fft.rfft(kernel, n=2 * T, dim=0)
            y = torch.fft.irfft(spectrum, n=2 * T, dim=1)[:, :T]
        # s_T = Σ_r λ^(T-r) x_r (+ λ^T s_0)
        final = torch.einsum("tde,ntd->nde", powers[:T].flip(0), xw)
        if state is not None:
            # the state before the chunk decays into every output: Σ_e a_e λ_e^t s_0,e, t = 1..T
            y = y + torch.einsum("tde,de,nde->ntd", powers[1:], a, state.to(wide))
            final = final + powers[T] * state.to(wide)
        return y.to(x.dtype), final


@dataclass(kw_only=True)
class LightNetConfig(MixerConfig):
    """The 1-D layer's options; the grid layer takes the same ones."""

    num_heads: int = 4
    # key and value widths as multiples of d_model
    expand_k: float = 0.5
    expand_v: float = 1.0
    # LRPE on queries and keys (1-D: doubles the state's key width; 2-D: half of each head's
    # key channels turn with the row, half with the column)
    lrpe: bool = True
    # LRPE frequencies base^(-c/K): from one radian per position down to 1/lrpe_base
    lrpe_base: float = 10000.0
    # exponentials per channel of each Toeplitz position kernel (2-D: four, rows and columns
    # both ways); 0 drops it
    tpe_size: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        self.width("expand_k", "num_heads")
        self.width("expand_v", "num_heads")
        if not isinstance(self.tpe_size, int) or self.tpe_size < 0:
            raise ValueError(f"tpe_size must be an int >= 0 (0: no Toeplitz position encoding); got {self.tpe_size!r}")
        if self.lrpe_base <= 1:
            raise ValueError(f"lrpe_base must be > 1; got {self.lrpe_base}")


class _LightNetProjections(nn.Module):
    """The parts both LightNet layers share: q, k, v, the output gate, norm and projection."""

    def __init__(self, config: LightNetConfig | LightNet2DConfig) -> None:
        super().__init__()
        D, H = config.d_model, config.num_heads
        self.key_dim, self.value_dim = config.width("expand_k", "num_heads"), config.width("expand_v", "num_heads")
        self.head_k, self.head_v = self.key_dim // H, self.value_dim // H
        self.q_proj = nn.Linear(D, self.key_dim, bias=False)
        self.k_proj = nn.Linear(D, self.key_dim, bias=False)
        self.v_proj = nn.Linear(D, self.value_dim, bias=False)
        self.r_proj = nn.Linear(D, self.value_dim, bias=True)
        self.norm = GatedRMSNorm(self.head_v)
        self.o_proj = nn.Linear(self.value_dim, D, bias=False)


@register_mixer("lightnet")
class LightNet(RecurrentMixer):
    Config = LightNetConfig
    family = GLA_FAMILY

    def __init__(self, config: LightNetConfig) -> None:
        super().__init__(config)
        self.parts = _LightNetProjections(config)
        self.tpe = ToeplitzPositionEncoding(config.d_model, config.tpe_size) if config.tpe_size else None

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        H, parts, dtype = self.config.num_heads, self.parts, state_dtype(self)
        key_width = parts.head_k * (2 if self.config.lrpe else 1)
        state = {
            "S": torch.zeros(batch_size, H, key_width, parts.head_v, device=device, dtype=dtype),
            # log Z: -inf before any token (an empty sum)
            "z": torch.full((batch_size, H, parts.head_k), -math.inf, device=device, dtype=dtype),
        }
        if self.config.lrpe:
            state["positions"] = torch.zeros(batch_size, dtype=torch.int64, device=device)
        if self.tpe is not None:
            state["tpe"] = torch.zeros(batch_size, self.config.d_model, self.config.tpe_size, device=device, dtype=dtype)
        return state

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        config, parts, H = self.config, self.parts, self.config.num_heads
        B, T, _ = x.shape
        new_state = {}
        # MD-TPE (one axis): x + Toeplitz(x)
        if self.tpe is not None:
            encoding, new_state["tpe"] = self.tpe(x, None if state is None else state["tpe"])
            x = x + encoding
        # q, k [B, T, H, K], v [B, T, H, V]
        q, k, v = (split_heads(proj(x), H) for proj in (parts.q_proj, parts.k_proj, parts.v_proj))
        wide = state_dtype(self)
        key, g, new_state["z"] = normalised_keys(k.to(wide), None if state is None else state["z"])
        query = F.silu(q)
        angles = None
        if config.lrpe:
            positions = positions_after(None if state is None else state["positions"], B, T, x.device)
            theta = lrpe_frequencies(parts.head_k, config.lrpe_base, wide, x.device)
            # [B, T, 1, K]
            angles = (positions.to(wide)[..., None] * theta)[:, :, None]
            new_state["positions"] = positions[:, -1] + 1
            g = torch.cat([g, g], dim=-1)
        query, key = lrpe(query.to(wide), angles), lrpe(key, angles)
        o, new_state["S"] = gla(
            query.to(x.dtype), key.to(x.dtype), v, g=g.to(x.dtype), scale=1.0,
            initial_state=None if state is None else state["S"], output_final_state=True, impl=impl,
        )
        o = parts.norm(o, split_heads(parts.r_proj(x), H))
        return parts.o_proj(merge_heads(o)), new_state


@dataclass(kw_only=True)
class LightNet2DConfig(LightNetConfig, GridMixerConfig):
    # a grid is at most a few hundred patches a side: slower LRPE frequencies than in 1-D
    lrpe_base: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.impl != "auto":
            raise ValueError(f"impl must be 'auto' (the layer has one form); got {self.impl!r}")


def grid_angles(rows: int, cols: int, head_k: int, base: float, dtype, device) -> torch.Tensor:
    """MD-LRPE phases [rows·cols, K] (row-major cells): channels [0, ⌈K/2⌉) turn with the
    row, the rest with the column, each group with frequencies base^(-c/n)."""
    n_rows = (head_k + 1) // 2
    i = torch.arange(rows, dtype=dtype, device=device).repeat_interleave(cols)
    j = torch.arange(cols, dtype=dtype, device=device).repeat(rows)
    by_row = i[:, None] * lrpe_frequencies(n_rows, base, dtype, device)
    by_col = j[:, None] * lrpe_frequencies(head_k - n_rows, base, dtype, device)
    return torch.cat([by_row, by_col], dim=-1)


@register_grid_mixer("lightnet_2d")
class LightNet2D(GridMixer):
    """LightNet on a grid: MD-TPE on the inputs, then every cell reads the normalised state
    of one scan over all cells, S = Σ_s exp(k_s - log Σ_r exp(k_r)) v_sᵀ per key channel
    (the additive recurrence's final state, the same in any scan order), with MD-LRPE."""

    Config = LightNet2DConfig

    def __init__(self, config: LightNet2DConfig) -> None:
        super().__init__(config)
        self.parts = _LightNetProjections(config)
        # one Toeplitz kernel per axis and direction: right, left, down, up
        self.tpe = nn.ModuleList(
            ToeplitzPositionEncoding(config.d_model, config.tpe_size) for _ in range(4 if config.tpe_size else 0)
        )

    def md_tpe(self, x: torch.Tensor) -> torch.Tensor:
        """Σ over the two axes of a two-sided Toeplitz mixing along that axis: one causal
        kernel each way (right and left along a row, down and up along a column)."""
        _, H, W, _ = x.shape
        wide = torch.float64 if x.dtype == torch.float64 else torch.float32
        right, left, down, up = self.tpe
        # a kernel read backwards is the transposed causal matrix: [n, n, D] per axis
        along_row = right.matrix(W, wide) + left.matrix(W, wide).transpose(0, 1)
        along_col = down.matrix(H, wide) + up.matrix(H, wide).transpose(0, 1)
        xw = x.to(wide)
        encoding = torch.einsum("jkd,bikd->bijd", along_row, xw) + torch.einsum("ikd,bkjd->bijd", along_col, xw)
        return encoding.to(x.dtype)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        config, parts, heads = self.config, self.parts, self.config.num_heads
        B, H, W, D = x.shape
        if self.tpe:
            x = x + self.md_tpe(x)
        # cells in row-major order: [B, N, D]
        cells = x.reshape(B, H * W, D)
        q, k, v = (split_heads(proj(cells), heads) for proj in (parts.q_proj, parts.k_proj, parts.v_proj))
        wide = torch.float64 if x.dtype == torch.float64 else torch.float32
        # exp(k_s) / Z over every cell: the one scan's normaliser, [B, N, heads, K]
        key = k.to(wide).softmax(dim=1)
        query = F.silu(q.to(wide))
        if config.lrpe:
            # [N, 1, K]
            angles = grid_angles(H, W, parts.head_k, config.lrpe_base, wide, x.device)[:, None]
            query, key = lrpe(query, angles), lrpe(key, angles)
        # S = Σ_s k̃_s v_sᵀ: [B, heads, K, V]; every cell reads it
        S = torch.einsum("bnhk,bnhv->bhkv", key, v.to(wide))
        o = torch.einsum("bnhk,bhkv->bnhv", query, S).to(x.dtype)
        o = parts.norm(o, split_heads(parts.r_proj(cells), heads))
        return parts.o_proj(merge_heads(o)).view(B, H, W, D)
