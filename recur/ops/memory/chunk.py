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

ATLAS's optimiser sums raw gradients, S_t = θ_t S_{t−1} + G_j, and steps by −η_t NS_k(S_t).
Newton–Schulz is not linear, but inside a mini-batch it does not feed back into the
gradients (they are at the anchor), so each token's momentum is formed,

    S_t = Θ_t S_0 + Σ_j D^θ_{tj} G_j,    W_t = 𝔄_t W_0 − Σ_j D^α_{tj} η_j NS_k(S_j),

and its n Newton–Schulz steps run as one batch (recomputed in the backward pass rather than
stored). Moneta's ℓq retention is the ℓ2 one on an accumulator read through W / ‖W‖_q^{q−2},
and Memora's KL retention W_t = c · softmax_rows(α_t log W_{t−1} + u_t) ignores a row's
constant, so W_t = c · softmax_rows(Z_t) with Z_t = α_t Z_{t−1} + u_t linear, Z_0 = log W_0.
For these three each token's weights [B, H, n, in, out] are formed from what is linear
(weights, accumulator or log-weights) and read one by one.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from ..common.checks import state_dtype
from ..common.segsum import segsum
from .model import (
    features,
    lq_normalised,
    memory_backward,
    memory_forward,
    memory_output,
    memory_state_type,
    newton_schulz,
    objective_gradient,
    split_state,
)
from .naive import zero_state


def chunk_memory(
    q, k, v, *, eta, g, theta, gamma, huber_threshold, depth, hidden, residual, layer_norm, feature_degree,
    objective, p, retention, q_norm, simplex_scale, optimizer, ns_steps, window, minibatch, initial_state,
):
    """Mini-batch by mini-batch: batched gradients at the mini-batch's start, decays as matrices."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype, out_dtype = state_dtype(q, v), v.dtype
    heads_first = lambda x: x.to(dtype).transpose(1, 2)  # noqa: E731  [B, T, H, ..] -> [B, H, T, ..]
    q, k, v, eta = heads_first(q), heads_first(k), heads_first(v), heads_first(eta)
    log_alpha = q.new_zeros(B, H, T) if g is None else heads_first(g)
    theta = None if theta is None else heads_first(theta)
    orthogonalised = optimizer == "newton_schulz"
    gamma = q.new_ones(B, H, T) if gamma is None else heads_first(gamma)
    delta = None if huber_threshold is None else heads_first(huber_threshold)
    if initial_state is None:
        initial_state = zero_state(B, H, K, V, depth, hidden, feature_degree, window, retention, simplex_scale, q)
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
        run = _decays(eta_run, log_alpha_run, theta_run, c, orthogonalised)
        coefficients += zip(*(part.unbind(2) for part in run), strict=True)
    rule = Rule(residual, layer_norm, feature_degree, objective, p, retention, q_norm, simplex_scale, ns_steps if orthogonalised else None)
    outputs, anchor = [], A
    for index, inputs in enumerate(zip(
        per_token(q), windowed(keys), windowed(values), windowed(gamma), per_token(delta), coefficients, strict=True,
    )):
        if index > 0 or start_phase == 0:
            anchor = W
        y, W, S = _minibatch(anchor, W, S, *inputs, rule)
        outputs.append(y)
    y = torch.cat(outputs, dim=2).transpose(1, 2)
    window_state = (keys[:, :, T:], values[:, :, T:], gamma[:, :, T:])
    state = memory_state_type(depth)(*W, *S, *anchor, *window_state, (phase + T) % minibatch)
    return y.to(out_dtype), state


class Decays(NamedTuple):
    """The coefficients of a mini-batch's n tokens, from its gates alone: how much of W_0
    (𝔄_t) and of S_0 (Σ_j D^α_{tj} Θ_j) each W_t holds, how much of S_0 each S_t holds (Θ_t),
    and the coefficients of each window token's outer product in S_t and in W_t. For ATLAS's
    optimiser S_0 reaches W_t only through the steps, and W_t holds step j's NS_k(S_j)
    instead of outer products."""

    retained: torch.Tensor  # [.., n]
    momentum_in_weights: torch.Tensor  # [.., n] (zero for Newton–Schulz)
    carried: torch.Tensor  # [.., n]
    in_momentum: torch.Tensor  # [.., n, n + c − 1]
    in_weights: torch.Tensor  # [.., n, n + c − 1] (Newton–Schulz: [.., n, n], of the steps)


def _decays(eta, log_alpha, theta, c, orthogonalised):
    """The `Decays` of mini-batches of n tokens from η, log α, θ [.., n] (θ None: θ = 0); `orthogonalised`: ATLAS's optimiser, S_t = θ_t S_{t−1} + G_t, W_t = α_t W_{t−1} −
    η_t NS_k(S_t)."""
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
    if orthogonalised:
        # the momentum sums raw gradients; W_t sums the steps η_j NS_k(S_j), decayed
        in_momentum = (carry @ window).expand(*eta.shape, n + c - 1)
        in_weights = decay * eta[..., None, :]
        return Decays(retained, torch.zeros_like(retained), carried, in_momentum, in_weights)
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


class Rule(NamedTuple):
    """The memory's and its update's options that every mini-batch reads."""

    residual: bool
    layer_norm: bool
    degree: int
    objective: str
    p: float
    retention: str
    q_norm: float
    simplex_scale: float
    ns_steps: int | None  # ATLAS's k (None: gd or momentum)


def _minibatch(anchor, W, S, q, keys, values, gamma, delta, decays, rule):
    """One mini-batch of n tokens (keys, values, γ with the c − 1 tokens before it in front):
    (y [B, H, n, V], W_n, S_n)."""
    # every window token's dℓ/dM at the anchor, weighted by its γ: [B, H, n + c − 1, V]
    anchor = _read_weights(anchor, rule)
    predicted, forward = memory_forward(anchor, features(keys, rule.degree), rule.residual, rule.layer_norm)
    dy = gamma[..., None] * objective_gradient(predicted - values, rule.objective, rule.p, delta)
    inputs, dz = forward.inputs, memory_backward(anchor, forward, dy)
    if rule.ns_steps is not None or rule.retention != "l2":
        return _per_token(W, S, q, inputs, dz, decays, rule)
    retained, momentum_in_weights, carried, in_momentum, in_weights = decays

    def read(layer, u):
        """u W_t of matrix `layer` for each token's own weights W_t: [B, H, n, out]."""
        from_start = retained[..., None] * (u @ W[layer]) + momentum_in_weights[..., None] * (u @ S[layer])
        return from_start - (in_weights * (u @ inputs[layer].transpose(-1, -2))) @ dz[layer]

    y, _ = memory_output(features(q, rule.degree), read, len(W), rule.residual, rule.layer_norm)
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


def _read_weights(W, rule):
    """The weights the memory reads with: Moneta's are its normalised accumulator."""
    return [lq_normalised(w, rule.q_norm) for w in W] if rule.retention == "lq" else W


def _per_token(W, S, q, inputs, dz, decays, rule):
    """A mini-batch whose weights are not linear in the outer products inputs_iᵀ dz_i, with
    every token's own weights formed, [B, H, n, in, out]: (y [B, H, n, V], W_n, S_n).

    What the retention keeps is linear: the weights (ℓ2), Moneta's accumulator (ℓq, read
    normalised) or Memora's log-weights (KL: c · softmax_rows(α log W + u) ignores a row's
    constant, so the weights are c · softmax_rows(Z_t) with Z_t = α_t Z_{t−1} + u_t,
    Z_0 = log W_0). ATLAS's steps −η_j NS_k(S_j) are formed from each token's momentum."""
    retained, momentum_in_weights, carried, in_momentum, in_weights = decays
    # the log of at least the smallest normal, as in the naive form
    kept = [w.clamp_min(torch.finfo(w.dtype).tiny).log() for w in W] if rule.retention == "kl" else W
    outer = lambda coefficients, x, d: torch.einsum("bhti,bhia,bhio->bhtao", coefficients, x, d)  # noqa: E731
    start = [retained[..., None, None] * w[:, :, None] for w in kept]
    if rule.ns_steps is None:
        # Z_t = 𝔄_t Z_0 + (Σ_j D^α_{tj} Θ_j) S_0 − Σ_i (D^α D^θ η window)_{ti} inputs_iᵀ dz_i
        kept = [
            z + momentum_in_weights[..., None, None] * s[:, :, None] - outer(in_weights, x, d)
            for z, s, x, d in zip(start, S, inputs, dz, strict=True)
        ]
        last = (..., -1, slice(None), None)
        S_end = [
            carried[..., -1, None, None] * s - x.transpose(-1, -2) @ (in_momentum[last] * d)
            for s, x, d in zip(S, inputs, dz, strict=True)
        ]
    else:
        # each token's momentum S_t = Θ_t S_0 + Σ_i (D^θ window)_{ti} inputs_iᵀ dz_i, and the
        # n steps' directions NS_k(S_t) in one batch, recomputed in the backward pass: Newton–
        # Schulz's intermediate products would otherwise be kept for every token
        momenta = [carried[..., None, None] * s[:, :, None] + outer(in_momentum, x, d) for s, x, d in zip(S, inputs, dz, strict=True)]
        steps = [checkpoint(newton_schulz, m, rule.ns_steps, use_reentrant=False) for m in momenta]
        # Z_t = 𝔄_t Z_0 − Σ_j D^α_{tj} η_j NS_k(S_j)
        kept = [z - torch.einsum("bhtj,bhjao->bhtao", in_weights, step) for z, step in zip(start, steps, strict=True)]
        S_end = [m[:, :, -1] for m in momenta]
    if rule.retention == "kl":
        weights = [rule.simplex_scale * z.softmax(-1) for z in kept]
        W_end = [w[:, :, -1] for w in weights]
    else:
        weights = _read_weights(kept, rule)
        W_end = [w[:, :, -1] for w in kept]

    def read(layer, u):
        """u_t W_t of matrix `layer`: [B, H, n, out]."""
        return (u[..., None, :] @ weights[layer]).squeeze(-2)

    y, _ = memory_output(features(q, rule.degree), read, len(W), rule.residual, rule.layer_norm)
    return y, W_end, S_end
