"""State space models, step by step: the executable specs of the SSM families.

Mamba: Linear-Time Sequence Modeling with Selective State Spaces (Gu, Dao; arXiv:2312.00752),
Algorithm 2; the time-invariant SSMs of S4, S4D, DSS and LSSL (arXiv:2111.00396,
2206.11893, 2203.14343, 2110.13985); the diagonal recurrences of S5 and LRU
(arXiv:2208.04933, 2303.06349):

    x_t = Ā_t x_{t-1} + B̄_t u_t,      y_t = Re(C_t x_t) + D u_t

A selective scan discretises per token (Ā_t = exp(Δ_t A), B̄_t = Δ_t B_t); a time-invariant
SSM has one Ā, B̄, C for all t: diagonal (S4D, DSS), dense (LSSL), or diagonal plus low
rank in continuous time (S4). `naive_linear_scan` is the bare first-order recurrence
h_t = a_t ⊙ h_{t-1} + b_t that S5 and LRU run. A complex state keeps its imaginary part;
the readout takes the real part, so a model that stores one eigenvalue of each conjugate
pair folds the factor 2 into C.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import compute_dtypes, state_dtype
from .discretize import discretize_dplr


def _start_state(initial_state: torch.Tensor | None, u: torch.Tensor, states: int, dtype: torch.dtype) -> torch.Tensor:
    """x_0 [B, D, N] in `dtype` for an input u [B, T, D] and N = `states`: the initial state,
    or zeros."""
    if initial_state is None:
        batch, _, channels = u.shape
        return torch.zeros(batch, channels, states, dtype=dtype, device=u.device)
    return initial_state.to(dtype)


def _per_channel(x: torch.Tensor, channels: int) -> torch.Tensor:
    """B or C, [B, T, N] or [B, T, G, N] -> [B, T, D, N] (channel d reads group d // (D / G))."""
    if x.dim() == 3:
        return x.unsqueeze(2).expand(-1, -1, channels, -1)
    return x.repeat_interleave(channels // x.shape[2], dim=2)


def prepare_selective_scan(u, delta, A, B, C, delta_bias, delta_softplus, initial_state):
    """Shared by every form: upcast, Δ = softplus(Δ + bias), B and C per channel, x_0 (zeros
    when not given)."""
    real, _ = compute_dtypes(u, delta, A, B, C, initial_state)
    state = state_dtype(u, delta, A, B, C, initial_state)
    channels = u.shape[2]
    delta = delta.to(real)
    if delta_bias is not None:
        delta = delta + delta_bias.to(real)
    if delta_softplus:
        delta = F.softplus(delta)
    B = _per_channel(B, channels).to(state)
    C = _per_channel(C, channels).to(state)
    return u.to(real), delta, A.to(state), B, C, _start_state(initial_state, u, A.shape[1], state)


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
    cu_seqlens: torch.Tensor | None = None,
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
        initial_state: x_0 [B, D, N] ([N_seq, D, N] with cu_seqlens), or None for zeros.
        output_final_state: also return x_T.
        cu_seqlens: [N_seq + 1] offsets of sequences packed in a batch of one.

    Returns:
        (y [B, T, D] in u's dtype, final state [B, D, N] (complex when A, B, C or the
        initial state is) or None).
    """
    out_dtype = u.dtype
    u, delta, A, B, C, h = prepare_selective_scan(
        u, delta, A, B, C, delta_bias, delta_softplus, initial_state
    )
    outputs = []
    # one slice per step, taken once: indexing [:, t] in the loop makes backward quadratic in T
    steps = (x.unbind(1) for x in (delta, u, B, C))
    for delta_t, u_t, B_t, C_t in zip(*steps, strict=True):
        # ZOH for A, Euler for B: Ā_t = exp(Δ_t A), B̄_t u_t = Δ_t B_t u_t, [B, D, N]
        decay = torch.exp(delta_t[..., None] * A)
        h = decay * h + (delta_t * u_t)[..., None] * B_t
        # y_t = Re(C_t · x_t), [B, D]
        outputs.append((h * C_t).sum(-1).real)
    y = torch.stack(outputs, dim=1) if outputs else torch.zeros_like(u)
    return finish_selective_scan(y, u, D, z, out_dtype), h


def prepare_time_invariant(u, A_bar, B_bar, C, initial_state):
    """Shared by every time-invariant form: (Ā, B̄, C, x_0, u) in the state's dtype (complex
    when any of them is), x_0 zeros when not given."""
    real, _ = compute_dtypes(u, A_bar, B_bar, C, initial_state)
    state = state_dtype(u, A_bar, B_bar, C, initial_state)
    h = _start_state(initial_state, u, A_bar.shape[1], state)
    return A_bar.to(state), B_bar.to(state), C.to(state), h, u.to(real)


def naive_time_invariant_ssm(
    u: torch.Tensor,
    A_bar: torch.Tensor,
    B_bar: torch.Tensor,
    C: torch.Tensor,
    *,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A time-invariant SSM, one state of N per channel, as a loop over time.

    Args:
        u: input [B, T, H].
        A_bar: discrete transition per channel, real or complex: its diagonal [H, N] for
            `diag_ssm` (see `discretize`), the full matrix [H, N, N] for `dense_ssm` (LSSL;
            see `discretize_dense`).
        B_bar, C: input and output vectors [H, N]; y_t = Re(C x_t).
        D: skip connection [H], or None.
        initial_state: x_0 [B, H, N] ([N_seq, H, N] with cu_seqlens), or None for zeros.
        output_final_state: also return x_T.
        cu_seqlens: [N_seq + 1] offsets of sequences packed in a batch of one.

    Returns:
        (y [B, T, H] in u's dtype, final state [B, H, N] or None).
    """
    A_bar, B_bar, C, h, x = prepare_time_invariant(u, A_bar, B_bar, C, initial_state)
    outputs = []
    for x_t in x.unbind(1):
        # x_t = Ā x_{t-1} + B̄ u_t, [B, H, N]; a diagonal Ā scales each state by its own entry
        transition = A_bar * h if A_bar.dim() == 2 else torch.einsum("hnm,bhm->bhn", A_bar, h)
        h = transition + B_bar * x_t[..., None]
        # y_t = Re(C x_t), [B, H]
        outputs.append((C * h).sum(-1).real)
    y = torch.stack(outputs, dim=1) if outputs else torch.zeros_like(x)
    if D is not None:
        y = y + x * D.to(x.dtype)
    return y.to(u.dtype), h


def prepare_dplr(u, Lambda, P, B, C, step, initial_state):
    """Shared by every DPLR form: Λ, P, B, C, x_0 complex and Δ real in the compute
    precision (x_0 zeros when not given)."""
    real, cplx = compute_dtypes(u, Lambda, P, B, C, step, initial_state)
    h = _start_state(initial_state, u, Lambda.shape[1], cplx)
    return Lambda.to(cplx), P.to(cplx), B.to(cplx), C.to(cplx), step.to(real), h


def naive_dplr_ssm(
    u: torch.Tensor,
    Lambda: torch.Tensor,
    P: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    step: torch.Tensor,
    *,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """S4's SSM, A = diag(Λ) − Pᵀ P^* per channel, discretised (bilinear) and run as a loop.

    Args:
        u: input [B, T, H].
        Lambda: the diagonal part Λ [H, N], complex (Re Λ < 0).
        P: the low-rank factor [H, r, N], complex (rank r; 1 for HiPPO-LegS).
        B, C: input and output vectors [H, N], complex; y_t = Re(C x_t).
        step: the step Δ [H], positive.
        D: skip connection [H], or None.
        initial_state: x_0 [B, H, N] complex ([N_seq, H, N] with cu_seqlens), or None.
        output_final_state: also return x_T.
        cu_seqlens: [N_seq + 1] offsets of sequences packed in a batch of one.

    Returns:
        (y [B, T, H] in u's dtype, final state [B, H, N] complex, or None).
    """
    Lambda, P, B, C, step, h = prepare_dplr(u, Lambda, P, B, C, step, initial_state)
    # Ā = (I − ΔA/2)⁻¹ (I + ΔA/2), B̄ = Δ (I − ΔA/2)⁻¹ B: [H, N, N] and [H, N]
    A_bar, B_bar = discretize_dplr(Lambda, P, P, B, step)
    return naive_time_invariant_ssm(u, A_bar, B_bar, C, D=D, initial_state=h)


def output_dtype(a: torch.Tensor, b: torch.Tensor, state: torch.dtype) -> torch.dtype:
    """The states' output dtype: a's and b's promoted, complex when the state is."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    if state.is_complex and not dtype.is_complex:
        return torch.complex128 if dtype == torch.float64 else torch.complex64
    return dtype


def naive_linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The diagonal first-order recurrence h_t = a_t ⊙ h_{t-1} + b_t as a loop over time.

    Args:
        a: coefficients [B, T, ...], real or complex (|a| ≤ 1 keeps it stable; 0 forgets
            the state).
        b: inputs [B, T, ...], a's shape, real or complex.
        initial_state: h_0 [B, ...] ([N_seq, ...] with cu_seqlens), or None for zeros.
        output_final_state: also return h_T.
        cu_seqlens: [N_seq + 1] offsets of sequences packed in a batch of one.

    Returns:
        (every state h [B, T, ...] in the dtype of a and b promoted (complex when the
        initial state is), final state h_T [B, ...] (float32 / complex64, or double when an
        input is) or None).
    """
    state = state_dtype(a, b, initial_state)
    out_dtype = output_dtype(a, b, state)
    a, b = a.to(state), b.to(state)
    h = torch.zeros_like(b[:, 0]) if initial_state is None else initial_state.to(state)
    states = []
    # unbind once: indexing a[:, t] inside the loop makes the backward quadratic in T
    for a_t, b_t in zip(a.unbind(1), b.unbind(1), strict=True):
        h = a_t * h + b_t
        states.append(h)
    return (torch.stack(states, dim=1) if states else torch.zeros_like(b)).to(out_dtype), h
