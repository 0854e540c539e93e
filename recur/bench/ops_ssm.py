"""Benchmark cases of the SSM family: the selective scan (naive loop, one parallel scan over
the whole sequence, the chunked form) and a time-invariant diagonal SSM (recurrence loop,
parallel scan, FFT convolution)."""

from __future__ import annotations

import torch

from ..ops.common import linear_recurrence
from ..ops.ssm import (
    chunk_selective_scan,
    conv_diag_ssm,
    diagonal_init,
    discretize,
    naive_diag_ssm,
    naive_selective_scan,
)
from .ops import OpCase, register_op_bench

B, D, N = 2, 64, 16
H, N_LTI = 64, 32


@register_op_bench("ssm", f"Selective scan, B={B}, D={D} channels, N={N} real states, B and C shared by channels, Δ with softplus, D skip and z gate.")
def selective_scan_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    gen = torch.Generator(device="cpu").manual_seed(0)

    def tensor(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_()

    u, delta, z = tensor(B, T, D), tensor(B, T, D), tensor(B, T, D)
    Bm, Cm = tensor(B, T, N), tensor(B, T, N)
    A = (-torch.arange(1, N + 1, dtype=dtype).repeat(D, 1)).to(device).requires_grad_()
    skip = tensor(D)
    leaves = [u, delta, A, Bm, Cm, skip, z]

    def run(form):
        return lambda: form(u, delta, A, Bm, Cm, D=skip, z=z, delta_softplus=True)[0]

    def whole_scan():
        # exp(Δ A) and Δ u B as in the op, then ops.common.linear_recurrence over all T
        dt = torch.nn.functional.softplus(delta)
        h = linear_recurrence(torch.exp(dt[..., None] * A), (dt * u)[..., None] * Bm[:, :, None])
        y = (h * Cm[:, :, None]).sum(-1) + u * skip
        return y * torch.nn.functional.silu(z)

    return [
        OpCase("naive (loop)", run(naive_selective_scan), leaves),
        OpCase("parallel scan over all T", whole_scan, leaves),
        OpCase("chunk (loop in chunks of 64 + scan across)", run(chunk_selective_scan), leaves),
    ]


@register_op_bench("ssm-conv", f"Time-invariant diagonal SSM (S4D-Lin, ZOH), B={B}, H={H} channels, N={N_LTI} complex states each, from a zero state.")
def lti_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    real = torch.float64 if dtype == torch.float64 else torch.float32
    cplx = torch.complex128 if dtype == torch.float64 else torch.complex64
    u = torch.randn(B, T, H, generator=gen).to(device=device, dtype=dtype).requires_grad_()
    log_dt = (torch.rand(H, generator=gen) * 4.6 - 6.9).to(device=device, dtype=real).requires_grad_()
    A = diagonal_init("lin", N_LTI).to(device=device, dtype=cplx)[None].expand(H, N_LTI)
    C = torch.randn(H, N_LTI, generator=gen, dtype=torch.complex64).to(device=device, dtype=cplx).requires_grad_()
    leaves = [u, log_dt, C]

    def system():
        A_bar, B_bar = discretize(A, torch.exp(log_dt))
        return A_bar, B_bar

    def recurrence():
        A_bar, B_bar = system()
        return naive_diag_ssm(u, A_bar=A_bar, B_bar=B_bar, C=C)[0]

    def scan():
        A_bar, B_bar = system()
        x = u.to(real)
        states = linear_recurrence(A_bar.expand(B, T, H, N_LTI), B_bar * x[..., None].to(cplx))
        return (states * C).sum(-1).real.to(u.dtype)

    def convolution():
        A_bar, B_bar = system()
        return conv_diag_ssm(u, A_bar=A_bar, B_bar=B_bar, C=C)[0]

    return [
        OpCase("naive (recurrence loop)", recurrence, leaves),
        OpCase("parallel scan (recurrence)", scan, leaves),
        OpCase("chunk (FFT convolution)", convolution, leaves),
    ]
