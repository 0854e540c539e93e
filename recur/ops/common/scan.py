"""First-order linear recurrences solved by a log-depth parallel scan.

    h_t = a_t ⊙ h_{t-1} + b_t,        h_0 = initial (or 0)

The composition of two steps (a1, b1) then (a2, b2) is (a2 a1, a2 b1 + b2), which is
associative, so all prefixes come out of ⌈log2 T⌉ rounds of doubling (Hillis–Steele).
The backward pass is the same recurrence run backwards in time with the conjugated
coefficients, so it is solved by the same scan and nothing but the outputs is stored.
Works for real and complex tensors of any trailing shape.
"""

from __future__ import annotations

import torch

__all__ = ["linear_recurrence", "linear_recurrence_loop"]


def _scan_forward(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inclusive scan along dim 1 (time). a and b have equal shapes [B, T, ...]."""
    a, b = a.clone(), b.clone()
    T = b.shape[1]
    offset = 1
    while offset < T:
        # Each position absorbs the segment that ends `offset` steps earlier.
        b_prev, a_prev = b[:, :-offset], a[:, :-offset]
        b = torch.cat([b[:, :offset], torch.addcmul(b[:, offset:], a[:, offset:], b_prev)], dim=1)
        a = torch.cat([a[:, :offset], a[:, offset:] * a_prev], dim=1)
        offset *= 2
    return b


class _LinearRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, initial):
        if initial is not None:
            b = b.clone()
            b[:, 0] = b[:, 0] + a[:, 0] * initial
        h = _scan_forward(a, b)
        ctx.save_for_backward(a, h, initial)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h, initial = ctx.saved_tensors
        # dL/dh_t accumulates through h_{t+1} = a_{t+1} h_t + ...: a reverse-time recurrence
        # with coefficients conj(a_{t+1}); complex grads follow PyTorch's conjugate convention.
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1).conj()
        grad_total = _scan_forward(a_next.flip(1), grad_h.flip(1)).flip(1)
        grad_b = grad_total
        h_prev = torch.cat([torch.zeros_like(h[:, :1]) if initial is None else initial.unsqueeze(1), h[:, :-1]], dim=1)
        grad_a = grad_total * h_prev.conj()
        grad_initial = None
        if initial is not None and ctx.needs_input_grad[2]:
            grad_initial = grad_total[:, 0] * a[:, 0].conj()
        return grad_a, grad_b, grad_initial


def linear_recurrence(
    a: torch.Tensor, b: torch.Tensor, initial: torch.Tensor | None = None
) -> torch.Tensor:
    """Solve h_t = a_t ⊙ h_{t-1} + b_t for all t with a parallel scan.

    Args:
        a: multiplicative coefficients, [B, T, ...]; broadcastable to b.
        b: additive inputs, [B, T, ...].
        initial: h_0, [B, ...] (b's shape without time), or None for zeros.

    Returns:
        h: [B, T, ...] with b's shape; h[:, t] is the state after step t.
    """
    if b.dim() < 2:
        raise ValueError(f"b must have shape [B, T, ...]; got {list(b.shape)}")
    a = a.expand_as(b) if a.shape != b.shape else a
    if a.dtype != b.dtype:
        raise ValueError(f"a has dtype {a.dtype} but b has {b.dtype}; expected equal")
    if initial is not None and initial.shape != b.shape[:1] + b.shape[2:]:
        raise ValueError(
            f"initial has shape {list(initial.shape)}; expected {list(b.shape[:1] + b.shape[2:])}"
        )
    if b.shape[1] == 0:
        return b.clone()
    return _LinearRecurrence.apply(a.contiguous(), b.contiguous(), initial)


def linear_recurrence_loop(
    a: torch.Tensor, b: torch.Tensor, initial: torch.Tensor | None = None
) -> torch.Tensor:
    """The same recurrence as a step-by-step loop: the reference for `linear_recurrence`."""
    a = a.expand_as(b)
    h = torch.zeros_like(b[:, 0]) if initial is None else initial
    out = []
    # unbind once: indexing a[:, t] inside the loop makes the backward quadratic in T
    for a_t, b_t in zip(a.unbind(1), b.unbind(1), strict=True):
        h = a_t * h + b_t
        out.append(h)
    return torch.stack(out, dim=1) if out else b.clone()
