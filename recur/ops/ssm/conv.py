"""Time-invariant SSMs as long convolutions applied by FFT.

Efficiently Modeling Long Sequences with Structured State Spaces (Gu, Goel, Ré;
arXiv:2111.00396), §2.4 and §3.3: unrolling x_t = Ā x_{t-1} + B̄ u_t from x_{-1} = x_0 gives

    y_t = Σ_{s ≤ t} K_{t−s} u_s + Re(C Ā^{t+1} x_0) + D u_t,      K_l = Re(C Ā^l B̄)

so a whole sequence is one FFT convolution with K plus the free response of the initial
state; the final state Ā^T x_0 + Σ_s Ā^{T−1−s} B̄ u_s is one more contraction. K comes from
a Vandermonde product (diagonal Ā, S4D), from Krylov powers (dense Ā, LSSL), or from a
Cauchy kernel with a Woodbury correction at the roots of unity (DPLR, S4).
"""

from __future__ import annotations

import math

import torch

from .discretize import discretize_dplr
from .naive import prepare_dplr, prepare_time_invariant


def fft_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Causal convolution y_t = Σ_{s ≤ t} K_{t−s} u_s of u [B, T, H] with K [H, T]."""
    T = u.shape[1]
    n = 2 * T
    u_f = torch.fft.rfft(u, n=n, dim=1)
    K_f = torch.fft.rfft(K.to(u.dtype), n=n, dim=-1).transpose(0, 1)
    return torch.fft.irfft(u_f * K_f, n=n, dim=1)[:, :T]


def vandermonde(A_bar: torch.Tensor, length: int) -> torch.Tensor:
    """Powers Ā^l for l = 0 … length − 1 of a diagonal Ā [H, N]: [H, N, length], complex.

    Ā^(bk + j) = exp(bk log Ā) · exp(j log Ā) with b ≈ √length: 2√length complex
    exponentials and one product per entry, and no error that grows with l the way
    repeated multiplication would.
    """
    A_bar = A_bar if A_bar.is_complex() else A_bar.to(torch.complex128 if A_bar.dtype == torch.float64 else torch.complex64)
    log_a = torch.log(A_bar)[..., None]
    block = max(1, math.isqrt(max(length - 1, 0)) + 1)
    steps = torch.arange(block, device=A_bar.device, dtype=A_bar.real.dtype)
    small = torch.exp(log_a * steps)  # Ā^j, j < b
    large = torch.exp(log_a * (steps[: -(-length // block)] * block))  # Ā^(bk)
    return (large[..., :, None] * small[..., None, :]).flatten(-2)[..., :length]


def conv_diag_ssm(u, A_bar, B_bar, C, *, D, initial_state, output_final_state):
    """A diagonal time-invariant SSM by FFT convolution; the arguments of
    `naive_time_invariant_ssm` with a diagonal Ā [H, N], already checked."""
    real_state = not any(t is not None and t.is_complex() for t in (A_bar, B_bar, C, initial_state))
    A_bar, B_bar, C, h0, x = prepare_time_invariant(u, A_bar, B_bar, C, initial_state)
    T = x.shape[1]
    # Ā^l for l = 0 … T, [H, N, T + 1]
    powers = vandermonde(A_bar, T + 1)
    cdtype = powers.dtype
    # K_l = Re Σ_n C_n B̄_n Ā_n^l, [H, T]
    K = torch.einsum("hn,hnl->hl", (C * B_bar).to(cdtype), powers[..., :T]).real
    y = fft_conv(x, K)
    if initial_state is not None:
        # free response Re(C Ā^{t+1} x_0), [B, T, H]
        y = y + torch.einsum("hn,bhn,hnt->bth", C.to(cdtype), h0.to(cdtype), powers[..., 1:]).real
    if D is not None:
        y = y + x * D.to(x.dtype)
    if not output_final_state:
        return y.to(u.dtype), None
    # x_T = Ā^T x_0 + B̄ Σ_s Ā^{T−1−s} u_s, [B, H, N]
    final = B_bar.to(cdtype) * torch.einsum("bth,hnt->bhn", x.to(cdtype), powers[..., :T].flip(-1))
    final = final + powers[..., T] * h0.to(cdtype)
    return y.to(u.dtype), (final.real if real_state else final)


def krylov(A_bar: torch.Tensor, v: torch.Tensor, length: int) -> torch.Tensor:
    """Columns Ā^l v for l = 0 … length − 1 of a dense Ā [H, N, N] and v [H, N]:
    [H, N, length], by doubling (log2(length) matrix products, as in LSSL)."""
    out = v[..., None]
    power = A_bar
    while out.shape[-1] < length:
        out = torch.cat([out, power @ out], dim=-1)
        if out.shape[-1] < length:
            power = power @ power
    return out[..., :length]


def conv_dense_ssm(u, A_bar, B_bar, C, *, D, initial_state, output_final_state):
    """A dense time-invariant SSM (LSSL) by its Krylov kernel and an FFT convolution; the
    arguments of `naive_time_invariant_ssm` with a dense Ā [H, N, N], already checked."""
    A_bar, B_bar, C, h0, x = prepare_time_invariant(u, A_bar, B_bar, C, initial_state)
    T = x.shape[1]
    # rows C Ā^l for l = 0 … T, as columns of (Āᵀ)^l Cᵀ: [H, N, T + 1]
    rows = krylov(A_bar.transpose(-1, -2), C, T + 1)
    K = torch.einsum("hnl,hn->hl", rows[..., :T], B_bar).real
    y = dense_state_response(fft_conv(x, K), rows, h0 if initial_state is not None else None)
    if D is not None:
        y = y + x * D.to(x.dtype)
    return y.to(u.dtype), (dense_final_state(x, A_bar, B_bar, h0) if output_final_state else None)


def conv_dplr_ssm(u, Lambda, P, B, C, step, *, D, initial_state, output_final_state):
    """S4's SSM by its Cauchy/Woodbury kernel and an FFT convolution; the arguments of
    `naive_dplr_ssm`, already checked."""
    Lambda, P, B, C, step, h0 = prepare_dplr(u, Lambda, P, B, C, step, initial_state)
    x = u.to(step.dtype)
    T = x.shape[1]
    # the zero-state response: K_l = Re(C Ā^l B̄) from the generating function, [H, T]
    y = fft_conv(x, dplr_kernel(Lambda, P, P, B, C, step, T))
    A_bar, B_bar = discretize_dplr(Lambda, P, P, B, step)
    if initial_state is not None:
        # the initial state's free response Re(C Ā^{t+1} x_0) from Krylov rows C Ā^l
        y = dense_state_response(y, krylov(A_bar.transpose(-1, -2), C, T + 1), h0)
    if D is not None:
        y = y + x * D.to(x.dtype)
    return y.to(u.dtype), (dense_final_state(x, A_bar, B_bar, h0) if output_final_state else None)


def dense_state_response(y: torch.Tensor, rows: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """y + Re(C Ā^{t+1} x_0) given rows C Ā^l (l = 0 … T) as [H, N, T + 1]."""
    if h0 is None:
        return y
    return y + torch.einsum("hnt,bhn->bth", rows[..., 1:], h0.to(rows.dtype)).real


def dense_final_state(x: torch.Tensor, A_bar: torch.Tensor, B_bar: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """x_T = Ā^T x_0 + Σ_s Ā^{T−1−s} B̄ u_s for inputs x [B, T, H]: [B, H, N]."""
    T = x.shape[1]
    if T == 0:
        return h0
    cols = krylov(A_bar, B_bar, T)
    final = torch.einsum("bth,hnt->bhn", x.to(cols.dtype), cols.flip(-1))
    return final + torch.einsum("hnm,bhm->bhn", torch.linalg.matrix_power(A_bar, T), h0)


def dplr_kernel(
    Lambda: torch.Tensor,
    P: torch.Tensor,
    Q: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    step: torch.Tensor,
    length: int,
) -> torch.Tensor:
    """S4's convolution kernel K_l = Re(C Ā^l B̄), l < length, for A = diag(Λ) − Pᵀ Q^*
    under the bilinear discretisation, via a Cauchy kernel and the Woodbury identity.

    Args:
        Lambda: [H, N] complex diagonal; P, Q: [H, r, N] complex low-rank factors.
        B, C: [H, N] complex; step: [H] positive steps Δ; length: L.

    Returns:
        K [H, L], real.

    With ω_k = exp(−2πik/L), Σ_{l<L} C Ā^l B̄ ω^l = C̃ (I − Āω)⁻¹ B̄ with C̃ = C (I − Ā^L),
    and for the bilinear Ā, B̄ this is C̃ (a I − b A)⁻¹ B with a = (1 − ω)/Δ, b = (1 + ω)/2.
    The resolvent of diagonal-plus-low-rank is a Cauchy sum corrected by Woodbury.
    """
    H, N = Lambda.shape
    A_bar, _ = discretize_dplr(Lambda, P, Q, B, step)
    # C̃ = C (I − Ā^L): the truncation to L steps, exact since ω^L = 1
    C_tilde = C - (C.unsqueeze(-2) @ torch.linalg.matrix_power(A_bar, length)).squeeze(-2)
    omega = torch.exp(-2j * math.pi * torch.arange(length, dtype=Lambda.real.dtype, device=Lambda.device) / length)
    a = (1 - omega)[None, :] / step.to(Lambda.dtype)[:, None]  # [H, L]
    b = ((1 + omega) / 2)[None, :].expand(H, -1)  # [H, L]
    # Cauchy denominators (a − b λ_n), [H, L, N]
    resolvent = 1 / (a[..., None] - b[..., None] * Lambda[:, None, :])
    left = torch.cat([C_tilde[:, None, :], Q.conj()], dim=1)  # [H, 1 + r, N]
    right = torch.cat([B[:, None, :], P], dim=1)  # [H, 1 + r, N]
    # k[i, j] = Σ_n left_i,n right_j,n / (a − b λ_n), [H, L, 1 + r, 1 + r]
    k = torch.einsum("hin,hln,hjn->hlij", left, resolvent, right)
    k00, k01, k10, k11 = k[..., :1, :1], k[..., :1, 1:], k[..., 1:, :1], k[..., 1:, 1:]
    # (R⁻¹ + b P Q^*)⁻¹ = R − R bP (I + Q^* R bP)⁻¹ Q^* R
    r = k11.shape[-1]
    eye = torch.eye(r, dtype=k.dtype, device=k.device)
    correction = k01 @ torch.linalg.solve(eye + b[..., None, None] * k11, b[..., None, None] * k10)
    spectrum = (k00 - correction)[..., 0, 0]
    return torch.fft.ifft(spectrum, n=length, dim=-1).real

