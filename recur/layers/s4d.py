"""S4D: a diagonal state space model per channel, applied as a long convolution.

On the Parameterization and Initialization of Diagonal State Space Models (Gu, Gupta, Goel,
Ré; arXiv:2206.11893):

    x_t = Ā x_{t-1} + B̄ u_t,  y_t = 2 Re(C x_t) + D u_t,  Ā = exp(ΔA) (ZOH), A_n = −½ + iπn (S4D-Lin)

per channel, then GELU and a 1×1 convolution with a GLU, as in the paper's S4D block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.ssm import DIAG_SSM, diag_ssm, diagonal_init, discretize
from .base import Mixer, MixerConfig, State
from .registry import register_mixer

INITS = ("lin", "inv", "legs", "real")


def compute_dtype(param: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(real, complex) dtypes the SSM runs in: double for double parameters, else single
    (bf16 and fp16 parameters are upcast: complex arithmetic has no half types)."""
    return (torch.float64, torch.complex128) if param.dtype == torch.float64 else (torch.float32, torch.complex64)


def log_uniform(shape, low: float, high: float) -> torch.Tensor:
    return torch.rand(shape) * (math.log(high) - math.log(low)) + math.log(low)


class DiagonalSSM(nn.Module):
    """The per-channel diagonal SSM shared by S4D, DSS, Liquid-S4 and GSS: parameters,
    initialisation and discretisation, -> (Ā, B̄, C) with the factor 2 of the conjugate
    pairs folded into C.

    A = −exp(log_A_real) + i A_imag keeps Re A < 0, so the recurrence is stable at any
    length. B is fixed to ones (it folds into C) unless `learn_B`.
    """

    def __init__(
        self, channels: int, d_state: int, init: str, method: str, dt_min: float, dt_max: float,
        learn_B: bool = False, length: int | None = None,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}; got {init!r}")
        self.real = init == "real"
        if not self.real and d_state % 2:
            raise ValueError(f"d_state must be even for a complex init (one state per conjugate pair); got {d_state}")
        self.method, self.length = method, length
        n = d_state if self.real else d_state // 2
        A = diagonal_init(init, n)
        self.log_step = nn.Parameter(log_uniform(channels, dt_min, dt_max))
        self.log_A_real = nn.Parameter(torch.log(-A.real).float().repeat(channels, 1))
        # C ~ CN(0, 1) as real and imaginary parts (real parameters survive module.to(dtype))
        scale = 1.0 if self.real else 0.5**0.5
        self.C = nn.Parameter(torch.randn(channels, n, 1 if self.real else 2) * scale)
        if not self.real:
            self.A_imag = nn.Parameter(A.imag.float().repeat(channels, 1))
        self.B = nn.Parameter(torch.randn(channels, n, 1 if self.real else 2) * scale) if learn_B else None
        self.state_shape = (channels, n)

    def _complex(self, pair: torch.Tensor, real: torch.dtype) -> torch.Tensor:
        pair = pair.to(real)
        return pair[..., 0] if self.real else torch.complex(pair[..., 0], pair[..., 1])

    def state_dtype(self) -> torch.dtype:
        real, cplx = compute_dtype(self.log_step)
        return real if self.real else cplx

    def system(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Ā, B̄, C), each [H, N'] in the compute dtype (N' = N/2 when complex)."""
        real, _ = compute_dtype(self.log_step)
        A = -torch.exp(self.log_A_real.to(real))
        if not self.real:
            A = torch.complex(A, self.A_imag.to(real))
        B = None if self.B is None else self._complex(self.B, real)
        A_bar, B_bar = discretize(A, torch.exp(self.log_step.to(real)), B, method=self.method, length=self.length)
        C = self._complex(self.C, real)
        return A_bar, B_bar, C if self.real else 2 * C

    def ssm_parameters(self) -> list[nn.Parameter]:
        """A, Δ (and B): trained without weight decay and with a smaller learning rate."""
        return [p for p in (self.log_step, self.log_A_real, getattr(self, "A_imag", None), self.B) if p is not None]

    def init_state(self, batch_size: int, device=None) -> torch.Tensor:
        return torch.zeros(batch_size, *self.state_shape, dtype=self.state_dtype(), device=device)

    def forward(self, u: torch.Tensor, state: torch.Tensor | None, D: torch.Tensor | None, impl: str):
        """u [B, T, H], state [B, H, N'] -> (y [B, T, H], state)."""
        A_bar, B_bar, C = self.system()
        return diag_ssm(u, A_bar, B_bar, C, D=D, initial_state=state, output_final_state=True, impl=impl)


class GLUOutput(nn.Module):
    """GELU, then a position-wise linear map to 2H and a GLU (the S4 / S4D block output)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(channels, 2 * channels)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return F.glu(self.proj(F.gelu(y)), dim=-1)


@dataclass(kw_only=True)
class S4DConfig(MixerConfig):
    # state size N per channel (N/2 complex conjugate pairs unless init = "real")
    d_state: int = 64
    # eigenvalue init: "lin" (S4D-Lin), "inv" (S4D-Inv), "legs" (S4D-LegS), "real" (S4D-Real)
    init: str = "lin"
    # "zoh" or "bilinear"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ssm_options(self)
        if self.discretization not in ("zoh", "bilinear"):
            raise ValueError(f"discretization must be 'zoh' or 'bilinear'; got {self.discretization!r}")


def check_ssm_options(config) -> None:
    if config.d_state <= 0:
        raise ValueError(f"d_state must be positive; got {config.d_state}")
    if not 0 < config.dt_min <= config.dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={config.dt_min}, dt_max={config.dt_max}")
    if getattr(config, "init", "lin") not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}; got {config.init!r}")


class ConvSSMMixer(Mixer):
    """A per-channel time-invariant SSM with a D skip and a GLU output: the common shape of
    S4, S4D, DSS, LSSL and Liquid-S4. `impl` picks the form of the subclass's op family:
    "conv" (FFT convolution) or "naive" (the recurrence)."""

    def _init_head(self, channels: int) -> None:
        self.D = nn.Parameter(torch.randn(channels))
        self.output = GLUOutput(channels)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._mix(x, state, self.config.impl)

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        # one token is one step of the recurrence
        y, state = self._mix(x.unsqueeze(1), state, "naive")
        return y.squeeze(1), state

    def _mix(self, x, state, impl):
        y, h = self.ssm(x, None if state is None else state["x"], self.D, impl)
        return self.output(y), {"x": h}

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        return {"x": self.ssm.init_state(batch_size, device)}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"ssm": self.ssm.ssm_parameters()}


@register_mixer("s4d")
class S4D(ConvSSMMixer):
    Config = S4DConfig
    family = DIAG_SSM

    def __init__(self, config: S4DConfig) -> None:
        super().__init__(config)
        H = config.d_model
        self.ssm = DiagonalSSM(H, config.d_state, config.init, config.discretization, config.dt_min, config.dt_max)
        self._init_head(H)
