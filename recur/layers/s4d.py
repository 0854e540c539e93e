"""S4D: a diagonal state space model per channel, applied as a long convolution.

On the Parameterization and Initialization of Diagonal State Space Models (Gu, Gupta, Goel,
Ré; arXiv:2206.11893):

    x_t = Ā x_{t-1} + B̄ u_t,  y_t = 2 Re(C x_t) + D u_t,  Ā = exp(ΔA) (ZOH), A_n = −½ + iπn (S4D-Lin)

per channel, then GELU and a 1×1 convolution with a GLU, as in the paper's S4D block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.ssm import DIAG_SSM, diag_ssm, diagonal_init, discretize
from .base import RecurrentMixer, State
from .parts import StepSizeConfig, log_uniform, state_dtype
from .registry import register_mixer

INITS = ("lin", "inv", "legs", "real")


def complex_pair(pair: torch.Tensor, real: torch.dtype) -> torch.Tensor:
    """A complex parameter stored as its real and imaginary parts, [..., 2] -> [...] in the
    complex dtype of `real` (real parameters survive module.to(dtype); complex ones would not)."""
    return torch.complex(pair[..., 0].to(real), pair[..., 1].to(real))


class DiagonalSSM(nn.Module):
    """The per-channel diagonal SSM shared by S4D, DSS, Liquid-S4 and GSS: parameters,
    initialisation and discretisation, -> (Ā, B̄, C) with the factor 2 of the conjugate
    pairs folded into C. Its options are checked by DiagonalSSMConfig.

    A = −exp(log_A_real) + i A_imag keeps Re A < 0, so the recurrence is stable at any
    length. B is fixed to ones (it folds into C) unless `learn_B`.
    """

    def __init__(
        self, channels: int, d_state: int, init: str, method: str, dt_min: float, dt_max: float,
        learn_B: bool = False, length: int | None = None,
    ) -> None:
        super().__init__()
        self.real = init == "real"
        self.method, self.length = method, length
        n = d_state if self.real else d_state // 2
        A = diagonal_init(init, n)
        self.log_step = nn.Parameter(log_uniform(channels, dt_min, dt_max))
        self.log_A_real = nn.Parameter(torch.log(-A.real).float().repeat(channels, 1))
        # C ~ CN(0, 1) as real and imaginary parts
        scale = 1.0 if self.real else 0.5**0.5
        self.C = nn.Parameter(torch.randn(channels, n, 1 if self.real else 2) * scale)
        if not self.real:
            self.A_imag = nn.Parameter(A.imag.float().repeat(channels, 1))
        self.B = nn.Parameter(torch.randn(channels, n, 1 if self.real else 2) * scale) if learn_B else None
        self.state_shape = (channels, n)

    def _complex(self, pair: torch.Tensor, real: torch.dtype) -> torch.Tensor:
        return pair[..., 0].to(real) if self.real else complex_pair(pair, real)

    def system(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Ā, B̄, C), each [H, N'] in the state's dtype (N' = N/2 when complex)."""
        real = state_dtype(self)
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
        dtype = state_dtype(self, complex=not self.real)
        return torch.zeros(batch_size, *self.state_shape, dtype=dtype, device=device)

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
class DiagonalSSMConfig(StepSizeConfig):
    """The options of DiagonalSSM, which S4D, DSS, Liquid-S4 and GSS share."""

    # state size N per channel (N/2 complex conjugate pairs unless init = "real")
    d_state: int = 64
    # eigenvalue init: "lin" (S4D-Lin), "inv" (S4D-Inv), "legs" (S4D-LegS), "real" (S4D-Real)
    init: str = "legs"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}; got {self.init!r}")
        if self.d_state <= 0:
            raise ValueError(f"d_state must be positive; got {self.d_state}")
        if self.init != "real" and self.d_state % 2:
            raise ValueError(f"d_state must be even for a complex init (one state per conjugate pair); got {self.d_state}")


@dataclass(kw_only=True)
class S4DConfig(DiagonalSSMConfig):
    init: str = "lin"
    # "zoh" or "bilinear"
    discretization: str = "zoh"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.discretization not in ("zoh", "bilinear"):
            raise ValueError(f"discretization must be 'zoh' or 'bilinear'; got {self.discretization!r}")


class ConvSSMMixer(RecurrentMixer):
    """A per-channel time-invariant SSM `self.ssm` with a D skip and a GLU output: the
    common shape of S4, S4D, DSS, LSSL and Liquid-S4 (GSS keeps the SSM and replaces the
    output). `impl` picks the form of the subclass's op family: "conv" (FFT convolution) or
    "naive" (the recurrence)."""

    def _init_head(self, channels: int) -> None:
        self.D = nn.Parameter(torch.randn(channels))
        self.output = GLUOutput(channels)

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
