"""The SSM families: a diagonal (real or complex) or structured state per channel,
selective or time-invariant.

- `selective_scan(u, delta, A, B, C, ...)` (Mamba): x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t B_t u_t,
  y_t = Re(C_t x_t) + D u_t; forms "naive" (the spec) and "scan" (chunked scan).
- `diag_ssm(u, A_bar, B_bar, C, ...)` (S4D, DSS, Liquid-S4, GSS), `dense_ssm(...)` (LSSL)
  and `dplr_ssm(u, Lambda, P, B, C, step, ...)` (S4): time-invariant; forms "naive" (the
  recurrence) and "conv" (FFT convolution with the exact initial-state response).
- `linear_scan(a, b, ...)` (S5, LRU): h_t = a_t ⊙ h_{t-1} + b_t; forms "naive", "scan"
  (chunked scan) and "parallel" (one log-depth scan over all of T).

Required inputs are positional, in the order the recurrence names them; everything
optional is keyword-only. Each form is also a function of its own (`scan_selective_scan`,
`conv_diag_ssm`, ...) with the family's arguments.
"""

from __future__ import annotations

from ..family import Family, Form, StateLayout, register_family
from .checks import (
    check_dense_ssm_inputs,
    check_diag_ssm_inputs,
    check_dplr_ssm_inputs,
    check_linear_scan_inputs,
    check_selective_scan_inputs,
)
from .conv import conv_dense_ssm as _conv_dense
from .conv import conv_diag_ssm as _conv_diag
from .conv import conv_dplr_ssm as _conv_dplr
from .conv import dplr_kernel, fft_conv, krylov, vandermonde
from .discretize import discretize, discretize_dense, discretize_dplr
from .examples import (
    SELECTIVE_SCAN_CASES,
    TIME_INVARIANT_CASES,
    dense_ssm_inputs,
    diag_ssm_inputs,
    dplr_ssm_inputs,
    linear_scan_inputs,
    selective_scan_inputs,
)
from .hippo import diagonal_init, hippo, nplr, rank_correction
from .naive import naive_dplr_ssm as _naive_dplr
from .naive import naive_linear_scan as _naive_linear
from .naive import naive_selective_scan as _naive_selective
from .naive import naive_time_invariant_ssm as _naive_time_invariant
from .scan import CHUNK_SIZE, chunked_linear_recurrence
from .scan import parallel_linear_scan as _parallel_linear
from .scan import scan_linear_scan as _scan_linear
from .scan import scan_selective_scan as _scan_selective

CHUNKED_SCAN = f"a loop inside chunks of {CHUNK_SIZE} steps, a log-depth scan across them"
CONVOLUTION = "FFT convolution with the initial state's exact free response"

SELECTIVE_SCAN = register_family(Family(
    name="selective_scan",
    paper="Mamba: Linear-Time Sequence Modeling with Selective State Spaces (Gu, Dao; arXiv:2312.00752)",
    recurrence="Selective scan: x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t B_t u_t, y_t = Re(C_t x_t) + D u_t",
    spec=_naive_selective,
    forms={"scan": Form(_scan_selective, packed=True, summary=CHUNKED_SCAN)},
    check=check_selective_scan_inputs,
    state=StateLayout({"x": "[B, D, N]"}),
    time_inputs=("u", "delta", "B", "C", "z"),
    example_inputs=selective_scan_inputs,
    cases=SELECTIVE_SCAN_CASES,
    default="scan",
))


def _time_invariant(
    *, name: str, paper: str, recurrence: str, conv, kernel: str, check, example_inputs,
    spec=_naive_time_invariant, cases=TIME_INVARIANT_CASES,
) -> Family:
    """A time-invariant SSM family: input u [B, T, H], state x [B, H, N], the loop `spec` and
    the FFT convolution (what "auto" picks) with the kernel `kernel` names."""
    return register_family(Family(
        name=name, paper=paper, recurrence=recurrence, spec=spec,
        forms={"conv": Form(conv, summary=f"{kernel}, {CONVOLUTION}")},
        check=check, state=StateLayout({"x": "[B, H, N]"}), time_inputs=("u",),
        example_inputs=example_inputs, cases=cases, default="conv",
    ))


DIAG_SSM = _time_invariant(
    name="diag_ssm",
    paper="On the Parameterization and Initialization of Diagonal State Space Models (Gu, Gupta, Goel, Ré; arXiv:2206.11893)",
    recurrence="Diagonal time-invariant SSM: x_t = Ā ⊙ x_{t-1} + B̄ u_t, y_t = Re(C x_t) + D u_t",
    conv=_conv_diag, kernel="Vandermonde kernel",
    check=check_diag_ssm_inputs, example_inputs=diag_ssm_inputs,
)

DENSE_SSM = _time_invariant(
    name="dense_ssm",
    paper="Combining Recurrent, Convolutional, and Continuous-time Models with Linear State-Space Layers "
    "(Gu, Johnson, Goel, Saab, Dao, Rudra, Ré; arXiv:2110.13985)",
    recurrence="Dense time-invariant SSM: x_t = Ā x_{t-1} + B̄ u_t, y_t = Re(C x_t) + D u_t",
    conv=_conv_dense, kernel="Krylov kernel",
    check=check_dense_ssm_inputs, example_inputs=dense_ssm_inputs,
)

DPLR_SSM = _time_invariant(
    name="dplr_ssm",
    paper="Efficiently Modeling Long Sequences with Structured State Spaces (Gu, Goel, Ré; arXiv:2111.00396)",
    recurrence="S4: A = diag(Λ) − Pᵀ P^*, bilinear Ā, B̄ with step Δ; x_t = Ā x_{t-1} + B̄ u_t, y_t = Re(C x_t) + D u_t",
    spec=_naive_dplr, conv=_conv_dplr, kernel="Cauchy kernel with a Woodbury correction",
    check=check_dplr_ssm_inputs, example_inputs=dplr_ssm_inputs, cases=("complex",),
)

LINEAR_SCAN = register_family(Family(
    name="linear_scan",
    paper="Resurrecting Recurrent Neural Networks for Long Sequences (Orvieto et al., arXiv:2303.06349)",
    recurrence="Diagonal linear recurrence: h_t = a_t ⊙ h_{t-1} + b_t",
    spec=_naive_linear,
    forms={
        "scan": Form(_scan_linear, packed=True, summary=CHUNKED_SCAN),
        "parallel": Form(_parallel_linear, packed=True, summary="one log-depth (Hillis–Steele) scan over all of T"),
    },
    check=check_linear_scan_inputs,
    state=StateLayout({"h": "[B, ...]"}),
    time_inputs=("a", "b"),
    example_inputs=linear_scan_inputs,
    cases=TIME_INVARIANT_CASES,
    default="scan",
))

selective_scan, naive_selective_scan, scan_selective_scan = SELECTIVE_SCAN.functions("naive", "scan")
diag_ssm, naive_diag_ssm, conv_diag_ssm = DIAG_SSM.functions("naive", "conv")
dense_ssm, naive_dense_ssm, conv_dense_ssm = DENSE_SSM.functions("naive", "conv")
dplr_ssm, naive_dplr_ssm, conv_dplr_ssm = DPLR_SSM.functions("naive", "conv")
linear_scan, naive_linear_scan, scan_linear_scan, parallel_linear_scan = LINEAR_SCAN.functions("naive", "scan", "parallel")

__all__ = [
    "CHUNK_SIZE",
    "DENSE_SSM",
    "DIAG_SSM",
    "DPLR_SSM",
    "LINEAR_SCAN",
    "SELECTIVE_SCAN",
    "chunked_linear_recurrence",
    "conv_dense_ssm",
    "conv_diag_ssm",
    "conv_dplr_ssm",
    "dense_ssm",
    "diag_ssm",
    "diagonal_init",
    "discretize",
    "discretize_dense",
    "discretize_dplr",
    "dplr_kernel",
    "dplr_ssm",
    "fft_conv",
    "hippo",
    "krylov",
    "linear_scan",
    "naive_dense_ssm",
    "naive_diag_ssm",
    "naive_dplr_ssm",
    "naive_linear_scan",
    "naive_selective_scan",
    "nplr",
    "parallel_linear_scan",
    "rank_correction",
    "scan_linear_scan",
    "scan_selective_scan",
    "selective_scan",
    "vandermonde",
]
