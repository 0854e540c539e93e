"""DSS: diagonal state spaces with the softmax-normalised kernel.

Diagonal State Spaces are as Effective as Structured State Spaces (Gupta, Gu, Berant;
arXiv:2203.14343), DSS-softmax:

    K_l = Re Σ_n W_n (e^{Δλ_n} − 1) / (λ_n (e^{LΔλ_n} − 1)) e^{lΔλ_n},  λ from the normal part of HiPPO-LegS

i.e. x_t = e^{Δλ} x_{t-1} + u_t scaled by a per-state normaliser over a fixed length L,
which makes the kernel a recurrence: forward, step and carried states agree at any T.
Re λ < 0 is kept (the paper leaves it free) so the recurrence is stable past L.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.ssm import DIAG_SSM
from .registry import register_mixer
from .s4d import ConvSSMMixer, DiagonalSSM, DiagonalSSMConfig


@dataclass(kw_only=True)
class DSSConfig(DiagonalSSMConfig):
    # the length L of the softmax normaliser (the training length in the paper)
    kernel_length: int = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kernel_length <= 0:
            raise ValueError(f"kernel_length must be positive; got {self.kernel_length}")
        if self.init == "real":
            raise ValueError("init must be a complex init for DSS ('lin', 'inv' or 'legs'); got 'real'")


@register_mixer("dss")
class DSS(ConvSSMMixer):
    Config = DSSConfig
    family = DIAG_SSM

    def __init__(self, config: DSSConfig) -> None:
        super().__init__(config)
        H = config.d_model
        self.ssm = DiagonalSSM(
            H, config.d_state, config.init, "dss", config.dt_min, config.dt_max, length=config.kernel_length
        )
        self._init_head(H)
