"""The memory family's mini-batch-parallel form: within a mini-batch every gradient is taken
at the weights the mini-batch started from, so all of them come from one batched forward
and backward pass of the memory, and the momentum and retention recurrences unroll into
decay matrices (the dual form of TTT, Titans' chunked training form).

Within a mini-batch of n tokens from (W_0, S_0), with G_j = Σ_{i in window(j)} γ_i ∇ℓ_i:

    S_t = Θ_t S_0 − Σ_j D^θ_{tj} η_j G_j,    W_t = 𝔄_t W_0 + (Σ_j D^α_{tj} Θ_j) S_0 − Σ_j (D^α D^θ)_{tj} η_j G_j

with D^α_{tj} = α_{j+1}···α_t, D^θ_{tj} = θ_{j+1}···θ_t, 𝔄_t = α_1···α_t, Θ_t = θ_1···θ_t
(θ = 0 for gradient descent: D^θ = I, Θ = 0). Each G_j is a sum of outer products
xᵀ dz, so the reads x W_t of every matrix are matmuls (the weights W_t are never formed),
and the mini-batches follow one another: the loop over time has T / b steps. The decay
matrices depend on the gates alone, so they are computed for all mini-batches at once before
the loop; only the anchor's gradients and the reads wait for the previous mini-batch.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch

from ..common.checks import state_dtype
from ..common.segsum import segsum
from .model import (
    features,
    memory_backward,
    memory_forward,
    memory_output,
    memory_state_type,
    objective_gradient,
    split_state,
)
from .naive import zero_state


def chunk_memory(
    q, k, v, *, eta, g, theta, gamma, huber_threshold, depth, hidden, residual, layer_norm, feature_degree,
    objective, p, window, minibatch, initial_state,
):
    """Mini-batch by mini-batch: batched gradients at the mini-batch's start, decays as matrices."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype, out_dtype = state_dtype(q, v), v.dtype
    heads_first = lambda x: x.to(dtype).transpose(1, 2)  # noqa: E731  [B, T, H, ..] -> [B, H, T, ..]
    q, k, v, eta = heads_first(q), heads_first(k), heads_first(v), heads_first(eta)
    log_alpha = q.new_zeros(B, H, T) if g is None else heads_first(g)
    theta = None if theta is None else heads_first(theta)
    gamma = q.new_ones(B, H, T) if gamma is None else heads_first(gamma)
    delta = None if huber_threshold is None else heads_first(huber_threshold)
    if initial_state is None:
        initial_state = zero_state(B, H, K, V, depth, hidden, feature_degree, window, "l2", 1.0, q)
    W, S, A, (window_k, window_v, window_gamma, phase) = split_state([s.to(dtype) for s in initial_state], depth)
    start_phase = int(phase[0])
    if not bool((phase == start_phase).all()):
        raise ValueError(
            f"the chunk form needs one mini-batch phase for the whole batch; got initial_state.phase = {phase.tolist()} "
            "(use impl='naive')"
        )
    # the window's earlier tokens in front of the sequence: token t sits at t + c − 1
    keys = torch.cat([window_k, k], dim=2)
    values = torch.cat([window_v, v], dim=2)
    gamma = torch.cat([window_gamma, gamma], dim=2)
    c = window
    # the mini-batches' lengths: the first ends where the initial state's mini-batch ends
    first = min(T, minibatch - start_phase)
    lengths = [first] + [minibatch] * ((T - first) // minibatch) + ([(T - first) % minibatch] if (T - first) % minibatch else [])
    # each mini-batch's inputs cut out by one split (and its window tokens by one gather): a
    # slice per mini-batch would give each its own full-length gradient in the backward pass
    per_token = lambda x: [None] * len(lengths) if x is None else x.split(lengths, dim=2)  # noqa: E731
    # mini-batch i's window tokens follow one another, i · (c − 1) positions after those of
    # the mini-batches before it were repeated: row r of the gathered tokens is token r − i (c − 1)
    window_lengths = torch.tensor([n + c - 1 for n in lengths], device=q.device)
    number = torch.arange(len(lengths), device=q.device).repeat_interleave(window_lengths)
    in_window = torch.arange(len(number), device=q.device) - (c - 1) * number
    windowed = lambda x: x.index_select(2, in_window).split(window_lengths.tolist(), dim=2)  # noqa: E731
    # the decay coefficients do not depend on the weights: one batched pass per run of
    # mini-batches of equal length (the first and the last may be shorter)
    runs = [(n, len(list(group))) for n, group in itertools.groupby(lengths)]
    by_run = lambda x: [None] * len(runs) if x is None else x.split([n * m for n, m in runs], dim=2)  # noqa: E731
    coefficients = []
    for (n, m), *gates in zip(runs, by_run(eta), by_run(log_alpha), by_run(theta), strict=True):
        # [B, H, m · n] -> [B, H, m, n]: the run's m mini-batches side by side
        eta_run, log_alpha_run, theta_run = (None if x is None else x.unflatten(2, (m, n)) for x in gates)
        run = _decays(eta_run, log_alpha_run, theta_run, c)
        coefficients += zip(*(part.unbind(2) for part in run), strict=True)
    outputs, anchor = [], A
    for index, inputs in enumerate(zip(
        per_token(q), windowed(keys), windowed(values), windowed(gamma), per_token(delta), coefficients, strict=True,
    )):
        if index > 0 or start_phase == 0:
            anchor = W
        y, W, S = _minibatch(anchor, W, S, *inputs, residual, layer_norm, feature_degree, objective, p)
        outputs.append(y)
    y = torch.cat(outputs, dim=2).transpose(1, 2)
    window_state = (keys[:, :, T:], values[:, :, T:], gamma[:, :, T:])
    state = memory_state_type(depth)(*W, *S, *anchor, *window_state, (phase + T) % minibatch)
    return y.to(out_dtype), state


class Decays(NamedTuple):
    """The coefficients of a mini-batch's n tokens, from its gates alone: how much of W_0
    (𝔄_t) and of S_0 (Σ_j D^α_{tj} Θ_j) each W_t holds, how much of S_0 each S_t holds (Θ_t),
    and the coefficients of each window token's outer product in S_t and in W_t."""

    retained: torch.Tensor  # [.., n]
    momentum_in_weights: torch.Tensor  # [.., n]
    carried: torch.Tensor  # [.., n]
    in_momentum: torch.Tensor  # [.., n, n + c − 1]
    in_weights: torch.Tensor  # [.., n, n + c − 1]


def _decays(eta, log_alpha, theta, c):
    """The `Decays` of mini-batches of n tokens from η, log α, θ [.., n] (θ None: gradient
    descent, θ = 0)."""
    n = eta.shape[-1]
    # window[t, i] = 1 when window token i is in token t's window: [n, n + c − 1]
    index = torch.arange(n + c - 1, device=eta.device)
    rows = torch.arange(n, device=eta.device)[:, None]
    window = ((index >= rows) & (index <= rows + c - 1)).to(eta.dtype)
    # retention: D^α [.., n, n] and 𝔄 [.., n]; momentum: D^θ and Θ (θ = 0 without momentum)
    decay, retained = segsum(log_alpha).exp(), log_alpha.cumsum(-1).exp()
    if theta is None:
        carry, carried = torch.eye(n, dtype=eta.dtype, device=eta.device), torch.zeros_like(retained)
    else:
        carry, carried = _products(theta)
    in_momentum = (carry * eta[..., None, :]) @ window
    in_weights = decay @ in_momentum
    momentum_in_weights = (decay @ carried[..., None]).squeeze(-1)
    return Decays(retained, momentum_in_weights, carried, in_momentum, in_weights)


def _products(theta):
    """D^θ [.., n, n] (D^θ_{tj} = θ_{j+1}···θ_t for t ≥ j, 0 above the diagonal) and
    Θ [.., n] (Θ_t = θ_1···θ_t) as products rather than exponentials of sums of logs, because
    θ = 0 (no momentum at that token, e.g. a saturated sigmoid) is allowed: its log is −∞, and
    the gradient through it 0 · ∞."""
    n = theta.shape[-1]
    later = torch.ones(n, n, dtype=torch.bool, device=theta.device).tril(-1)  # [t, j]: t > j
    factors = torch.where(later, theta[..., :, None], torch.ones((), dtype=theta.dtype, device=theta.device))
    return factors.cumprod(dim=-2).tril(), theta.cumprod(dim=-1)


def _minibatch(anchor, W, S, q, keys, values, gamma, delta, decays, residual, layer_norm, degree, objective, p):
    """One mini-batch of n tokens (keys, values, γ with the c − 1 tokens before it in front):
    (y [B, H, n, V], W_n, S_n)."""
    # every window token's dℓ/dM at the anchor, weighted by its γ: [B, H, n + c − 1, V]
    predicted, forward = memory_forward(anchor, features(keys, degree), residual, layer_norm)
    dy = gamma[..., None] * objective_gradient(predicted - values, objective, p, delta)
    inputs, dz = forward.inputs, memory_backward(anchor, forward, dy)
    retained, momentum_in_weights, carried, in_momentum, in_weights = decays

    def read(layer, u):
        """u W_t of matrix `layer` for each token's own weights W_t: [B, H, n, out]."""
        from_start = retained[..., None] * (u @ W[layer]) + momentum_in_weights[..., None] * (u @ S[layer])
        return from_start - (in_weights * (u @ inputs[layer].transpose(-1, -2))) @ dz[layer]

    y, _ = memory_output(features(q, degree), read, len(W), residual, layer_norm)
    last = (..., -1, slice(None), None)
    W_end = [
        retained[..., -1, None, None] * w + momentum_in_weights[..., -1, None, None] * s - x.transpose(-1, -2) @ (in_weights[last] * d)
        for w, s, x, d in zip(W, S, inputs, dz, strict=True)
    ]
    S_end = [
        carried[..., -1, None, None] * s - x.transpose(-1, -2) @ (in_momentum[last] * d)
        for s, x, d in zip(S, inputs, dz, strict=True)
    ]
    return y, W_end, S_end
