"""State space models, step by step: the executable spec of the SSM family.

Mamba: Linear-Time Sequence Modeling with Selective State Spaces (Gu, Dao; arXiv:2312.00752),
Algorithm 2, and the time-invariant diagonal SSMs of S4D / DSS / S5 / LRU
(arXiv:2206.11893, 2203.14343, 2208.04933, 2303.06349):

    x_t = Ā_t ⊙ x_{t-1} + B̄_t u_t,      y_t = Re(C_t x_t) + D u_t

A selective scan discretises per token (Ā_t = exp(Δ_t A), B̄_t = Δ_t B_t); a time-invariant
SSM has one Ā, B̄, C for all t, diagonal (S4D, DSS) or dense (S4 after discretisation, LSSL).
A complex state keeps its imaginary part; the readout takes the real part, so a model that
stores one of each conjugate pair folds the factor 2 into C.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_lti_inputs, check_selective_scan_inputs, compute_dtypes


def _per_channel(x: torch.Tensor, channels: int) -> torch.Tensor:
    """B or C, [B, T, N] or [B, T, G, N] -> [B, T, D, N] (channel d reads group d // (D / G))."""
    if x.dim() == 3:
        return x.unsqueeze(2).expand(-1, -1, channels, -1)
    return x.repeat_interleave(channels // x.shape[2], dim=2)


def prepare_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state):
    """Shared by every form: upcast, Δ = softplus(Δ + bias), B and C per channel."""
    check_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    real, cplx = compute_dtypes(u, delta, A, B, C, initial_state)
    is_complex = any(t is not None and t.is_complex() for t in (A, B, C, initial_state))
    state = cplx if is_complex else real
    channels = u.shape[2]
    delta = delta.to(real)
    if delta_bias is not None:
        delta = delta + delta_bias.to(real)
    if delta_softplus:
        delta = F.softplus(delta)
    B = _per_channel(B, channels).to(state)
    C = _per_channel(C, channels).to(state)
    h0 = None if initial_state is None else initial_state.to(state)
    return u.to(real), delta, A.to(state), B, C, h0


def finish_selective_scan(y, u, D, z, out_dtype):
    """y + D u, then the SiLU(z) gate; y and u in the compute dtype."""
    if D is not None:
        y = y + u * D.to(u.dtype)
    if z is not None:
        y = y * F.silu(z.to(u.dtype))
    return y.to(out_dtype)


def naive_selective_scan(
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mamba's selective scan as a loop over time.

    Args:
        u: input [B, T, D].
        delta: step sizes Δ [B, T, D] (before the optional bias and softplus).
        A: continuous-time diagonal state matrix [D, N], real or complex (Re A < 0).
        B, C: input and output matrices [B, T, N], or [B, T, G, N] with G groups of
            D / G channels each; real or complex.
        D: skip connection [D], or None.
        z: gate [B, T, D]: the output is multiplied by SiLU(z); or None.
        delta_bias: [D], added to delta before the softplus; or None.
        delta_softplus: Δ = softplus(delta + delta_bias).
        initial_state: x_0 [B, D, N], or None for zeros.
        output_final_state: also return x_T.

    Returns:
        (y [B, T, D] in u's dtype, final state [B, D, N] (complex when A, B or C is) or None).
    """
    out_dtype = u.dtype
    u, delta, A, B, C, h = prepare_selective_scan(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state
    )
    batch, T, channels = u.shape
    N = A.shape[1]
    if h is None:
        h = torch.zeros(batch, channels, N, dtype=A.dtype, device=u.device)
    outputs = []
    # unbind once: indexing [:, t] in the loop would make backward quadratic in T
    for delta_t, u_t, B_t, C_t in zip(delta.unbind(1), u.unbind(1), B.unbind(1), C.unbind(1), strict=True):
        # ZOH for A, Euler for B: Ā_t = exp(Δ_t A), B̄_t u_t = Δ_t B_t u_t, [B, D, N]
        decay = torch.exp(delta_t[..., None] * A)
        h = decay * h + (delta_t * u_t)[..., None] * B_t
        # y_t = Re(C_t · x_t), [B, D]
        outputs.append((h * C_t).sum(-1).real)
    y = torch.stack(outputs, dim=1) if outputs else u.new_zeros(batch, 0, channels)
    return finish_selective_scan(y, u, D, z, out_dtype), (h if output_final_state else None)


def naive_diag_ssm(
    u: torch.Tensor,
    *,
    A_bar: torch.Tensor,
    B_bar: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A time-invariant diagonal SSM, one state of N per channel, as a loop over time.

    Args:
        u: input [B, T, H].
        A_bar: discrete diagonal transition [H, N], real or complex (see `discretize`).
        B_bar: discrete input vector [H, N].
        C: output vector [H, N]; y_t = Re(C x_t).
        D: skip connection [H], or None.
        initial_state: x_0 [B, H, N], or None for zeros.
        output_final_state: also return x_T.

    Returns:
        (y [B, T, H] in u's dtype, final state [B, H, N] or None).
    """
    check_lti_inputs(u, A_bar, B_bar, C, D, initial_state, dense=False)
    A_bar, B_bar, C, h, x = prepare_lti(u, A_bar, B_bar, C, initial_state)
    outputs = []
    for x_t in x.unbind(1):
        # x_t = Ā x_{t-1} + B̄ u_t, [B, H, N]
        h = A_bar * h + B_bar * x_t[..., None]
        outputs.append((C * h).sum(-1).real)
    return finish_lti(outputs, x, D, u.dtype), (h if output_final_state else None)


def naive_dense_ssm(
    u: torch.Tensor,
    *,
    A_bar: torch.Tensor,
    B_bar: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A time-invariant SSM with a dense transition per channel (S4, LSSL), as a loop.

    Args:
        u: input [B, T, H].
        A_bar: discrete transition [H, N, N], real or complex.
        B_bar, C: [H, N]; y_t = Re(C x_t).
        D: skip connection [H], or None.
        initial_state: x_0 [B, H, N], or None for zeros.
        output_final_state: also return x_T.

    Returns:
        (y [B, T, H] in u's dtype, final state [B, H, N] or None).
    """
    check_lti_inputs(u, A_bar, B_bar, C, D, initial_state, dense=True)
    A_bar, B_bar, C, h, x = prepare_lti(u, A_bar, B_bar, C, initial_state)
    outputs = []
    for x_t in x.unbind(1):
        # x_t = Ā x_{t-1} + B̄ u_t, [B, H, N]
        h = torch.einsum("hnm,bhm->bhn", A_bar, h) + B_bar * x_t[..., None]
        outputs.append((C * h).sum(-1).real)
    return finish_lti(outputs, x, D, u.dtype), (h if output_final_state else None)


def prepare_lti(u, A_bar, B_bar, C, initial_state):
    """Shared by every time-invariant form: (Ā, B̄, C, x_0, u) in the state's dtype (complex
    when any of them is), x_0 zeros when not given."""
    real, cplx = compute_dtypes(u, A_bar, B_bar, C, initial_state)
    is_complex = any(t is not None and t.is_complex() for t in (A_bar, B_bar, C, initial_state))
    state = cplx if is_complex else real
    batch, _, channels = u.shape
    N = A_bar.shape[1]
    h = (
        torch.zeros(batch, channels, N, dtype=state, device=u.device)
        if initial_state is None
        else initial_state.to(state)
    )
    return A_bar.to(state), B_bar.to(state), C.to(state), h, u.to(real)


def finish_lti(outputs, x, D, out_dtype):
    """Stacks the per-step outputs and adds the skip D u."""
    y = torch.stack(outputs, dim=1) if outputs else torch.zeros_like(x)
    if D is not None:
        y = y + x * D.to(x.dtype)
    return y.to(out_dtype)
