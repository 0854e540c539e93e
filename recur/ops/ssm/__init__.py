"""The SSM family: diagonal (real or complex) state per channel, selective or time-invariant.

Selective scan (Mamba): x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t B_t u_t, y_t = Re(C_t x_t) + D u_t,
forms `naive_selective_scan` (the spec) and `chunk_selective_scan` (chunked scan).
Time-invariant SSMs (S4D, DSS, S5, LRU; S4 and LSSL with a dense Ā): forms `naive_diag_ssm`
/ `naive_dense_ssm` (the recurrence) and `conv_diag_ssm` / `conv_dense_ssm` (FFT
convolution with the exact initial-state response). Each op has a dispatcher with `impl=`,
where "chunk" names the parallel form (the chunked scan or the convolution).
"""

from __future__ import annotations

import torch

from ..dispatch import dispatch
from .chunk import CHUNK_SIZE, chunk_selective_scan, chunked_linear_recurrence
from .conv import conv_dense_ssm, conv_diag_ssm, dplr_kernel, fft_conv, krylov, vandermonde
from .discretize import discretize, discretize_dense, discretize_dplr
from .hippo import diagonal_init, hippo, nplr, rank_correction
from .naive import naive_dense_ssm, naive_diag_ssm, naive_selective_scan

FORMS = {"naive": naive_selective_scan, "chunk": chunk_selective_scan}
DIAG_FORMS = {"naive": naive_diag_ssm, "chunk": conv_diag_ssm}
DENSE_FORMS = {"naive": naive_dense_ssm, "chunk": conv_dense_ssm}


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mamba's selective scan; `impl` is "auto" (= "chunk"), "naive" or "chunk" (chunked
    scan). See `naive_selective_scan` for the arguments."""
    form = dispatch("ssm", FORMS, impl, u)
    return form(
        u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
        initial_state=initial_state, output_final_state=output_final_state,
    )


def diag_ssm(
    u: torch.Tensor,
    *,
    A_bar: torch.Tensor,
    B_bar: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A diagonal time-invariant SSM; `impl` is "auto" (= "chunk"), "naive" (recurrence) or
    "chunk" (FFT convolution). See `naive_diag_ssm` for the arguments."""
    form = dispatch("ssm", DIAG_FORMS, impl, u)
    return form(u, A_bar=A_bar, B_bar=B_bar, C=C, D=D, initial_state=initial_state, output_final_state=output_final_state)


def dense_ssm(
    u: torch.Tensor,
    *,
    A_bar: torch.Tensor,
    B_bar: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A dense time-invariant SSM; `impl` is "auto" (= "chunk"), "naive" (recurrence) or
    "chunk" (Krylov kernel and FFT convolution). See `naive_dense_ssm` for the arguments."""
    form = dispatch("ssm", DENSE_FORMS, impl, u)
    return form(u, A_bar=A_bar, B_bar=B_bar, C=C, D=D, initial_state=initial_state, output_final_state=output_final_state)


__all__ = [
    "DENSE_FORMS",
    "DIAG_FORMS",
    "FORMS",
    "conv_dense_ssm",
    "conv_diag_ssm",
    "dense_ssm",
    "diag_ssm",
    "diagonal_init",
    "discretize",
    "discretize_dense",
    "discretize_dplr",
    "dplr_kernel",
    "fft_conv",
    "hippo",
    "krylov",
    "naive_dense_ssm",
    "naive_diag_ssm",
    "naive_selective_scan",
    "nplr",
    "rank_correction",
    "chunk_selective_scan",
    "chunked_linear_recurrence",
    "CHUNK_SIZE",
    "selective_scan",
    "vandermonde",
]
