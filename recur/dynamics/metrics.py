"""The measures of dynamical-systems reconstruction, as pure functions of trajectories.

A reconstruction of a chaotic system cannot match the true trajectory for long (errors grow
like e^{λ t}), so it is judged by what it keeps: the geometry of the attractor (D_stsp), its
temporal structure (D_H), its chaos (λ_max, `recur.dynamics.systems.lyapunov_spectrum` on
the model's map) and, over short horizons, the prediction itself. Definitions follow the
AL-RNN paper's code (Brenner et al., "Almost-Linear RNNs Yield Highly Interpretable
Symbolic Codes in Dynamical Systems Reconstruction", NeurIPS 2024, arXiv:2410.14240) and
Mikhaeil et al. (NeurIPS 2022) for the spectra.
"""

from __future__ import annotations

import math

import torch

# D_stsp switches from histograms to Gaussian mixtures at this many dimensions (30^N bins
# stop being fillable by any trajectory)
GMM_FROM_DIM = 11


def state_space_divergence(
    true: torch.Tensor, generated: torch.Tensor, *, bins: int = 30, smoothing: float = 1e-5,
    scaling: float = 0.3, samples: int = 1000, max_points: int = 10000, seed: int = 0,
) -> float:
    """D_stsp = KL(p_true ‖ p_gen) between the distributions of states along the two
    trajectories, true [T, N] and generated [T', N].

    N < 11, histograms: `bins` bins per dimension over the range of the true states; states
    outside it are dropped; p = (h + α) / (Σh + α · bins^N) with α = `smoothing`;
    D = Σ_bins p_true log(p_true / p_gen). NaN when no generated state falls in the range.

    N ≥ 11, Gaussian mixtures: a Gaussian of variance `scaling` on each of (at most
    `max_points`) states, p and q the mixtures of the true and the generated ones;
    D = mean over `samples` true states x of log p(x) − log q(x) (Monte Carlo)."""
    true, generated = _states(true, "true"), _states(generated, "generated")
    if true.shape[1] != generated.shape[1]:
        raise ValueError(f"generated has {generated.shape[1]} dimensions; true has {true.shape[1]}")
    if true.shape[1] < GMM_FROM_DIM:
        return _binned_kl(true, generated, bins, smoothing)
    return _mixture_kl(true, generated, scaling, samples, max_points, seed)


def _states(x: torch.Tensor, name: str) -> torch.Tensor:
    """[T, N] or [B, T, N] (the B trajectories pooled) as float64 [T·B, N]."""
    if x.dim() not in (2, 3):
        raise ValueError(f"{name} must be states [T, N] or [B, T, N]; got shape {list(x.shape)}")
    return x.detach().reshape(-1, x.shape[-1]).double().cpu()


def _binned_kl(true: torch.Tensor, generated: torch.Tensor, bins: int, smoothing: float) -> float:
    low, high = true.min(0).values, true.max(0).values
    width = (high - low).clamp_min(1e-12) / bins

    def histogram(x: torch.Tensor) -> torch.Tensor:
        inside = ((x >= low) & (x <= high)).all(1)
        # [M, N] bin per dimension; the maximum falls in the last bin
        cells = ((x[inside] - low) / width).long().clamp(max=bins - 1)
        flat = (cells * bins ** torch.arange(x.shape[1] - 1, -1, -1)).sum(1)
        return torch.bincount(flat, minlength=bins ** x.shape[1]).double()

    h_true, h_gen = histogram(true), histogram(generated)
    if h_gen.sum() == 0:
        return math.nan
    cells = h_true.numel()
    p = (h_true + smoothing) / (h_true.sum() + smoothing * cells)
    q = (h_gen + smoothing) / (h_gen.sum() + smoothing * cells)
    return float((p * (p / q).log()).sum())


def _mixture_kl(true: torch.Tensor, generated: torch.Tensor, scaling: float, samples: int, max_points: int, seed: int) -> float:
    true, generated = true[:max_points], generated[:max_points]
    generator = torch.Generator().manual_seed(seed)
    x = true[torch.randint(len(true), (samples,), generator=generator)]

    def log_mixture(points: torch.Tensor) -> torch.Tensor:
        # log of the mean of N(x; point, scaling·I) over the points; the Gaussians'
        # normalisation is the same in p and q and cancels
        distances = torch.cdist(x, points).square()
        return torch.logsumexp(-distances / (2 * scaling), dim=1) - math.log(len(points))

    return float((log_mixture(true) - log_mixture(generated)).mean())


def power_spectrum(x: torch.Tensor, smoothing: float = 20.0) -> torch.Tensor:
    """Per dimension of x [T, N] (or [B, T, N]): |rfft|² of the z-scored series, smoothed by
    a Gaussian of std `smoothing` frequency bins (truncated at 4 std, mirrored at the ends as
    scipy's gaussian_filter1d), negatives clipped, normalised to sum 1: [..., N, F]."""
    x = x.detach().double().cpu()
    x = (x - x.mean(-2, keepdim=True)) / x.std(-2, keepdim=True).clamp_min(1e-12)
    spectrum = torch.fft.rfft(x, dim=-2).abs().square().movedim(-2, -1)
    if smoothing > 0:
        spectrum = gaussian_filter(spectrum, smoothing)
    spectrum = spectrum.clamp_min(0)
    return spectrum / spectrum.sum(-1, keepdim=True).clamp_min(1e-300)


def gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """x [..., F] convolved along the last dim with a normalised Gaussian of std `sigma`,
    radius round(truncate·sigma), each end mirrored (d c b a | a b c d)."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    flat = x.reshape(-1, 1, x.shape[-1])
    padded = flat
    # mirror in pieces when the series is shorter than the radius
    while padded.shape[-1] < flat.shape[-1] + 2 * radius:
        need = (flat.shape[-1] + 2 * radius - padded.shape[-1] + 1) // 2
        left = padded[..., :need].flip(-1)
        right = padded[..., -need:].flip(-1)
        padded = torch.cat([left, padded, right], dim=-1)
    extra = (padded.shape[-1] - flat.shape[-1] - 2 * radius) // 2
    padded = padded[..., extra: extra + flat.shape[-1] + 2 * radius]
    return torch.nn.functional.conv1d(padded, kernel.view(1, 1, -1)).reshape(x.shape)


def hellinger_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """H(p, q) = sqrt(1 − Σ sqrt(p q)) over the last dim of two distributions."""
    return (1 - (p * q).sqrt().sum(-1)).clamp_min(0).sqrt()


def power_spectrum_distance(true: torch.Tensor, generated: torch.Tensor, smoothing: float = 20.0) -> float:
    """D_H: the Hellinger distance between the smoothed power spectra (`power_spectrum`) of
    true and generated [T, N] (or [B, T, N], every trajectory its own spectrum), averaged
    over dimensions (and trajectories). Both must have the same length T."""
    if true.shape != generated.shape:
        raise ValueError(f"true and generated must have the same shape; got {list(true.shape)} and {list(generated.shape)}")
    return float(hellinger_distance(power_spectrum(true, smoothing), power_spectrum(generated, smoothing)).mean())


def prediction_error(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """The mean squared error at each horizon: predicted, true [B, n, N] (n steps ahead of
    B starting states) -> [n]. PE_n of the AL-RNN paper is entry n − 1."""
    if predicted.shape != true.shape:
        raise ValueError(f"predicted has shape {list(predicted.shape)}; true has {list(true.shape)}")
    return (predicted.double() - true.double()).square().mean((0, 2))


def valid_prediction_time(predicted: torch.Tensor, true: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per trajectory, the steps before the normalised error first exceeds `threshold`
    (Vlachas et al., Neural Networks 2020): NRMSE_t = sqrt(mean_i (x̂_ti − x_ti)² / σ_i²), σ_i
    the std of the true series; predicted, true [B, T, N] -> [B] steps (T when it never does)."""
    if predicted.shape != true.shape or true.dim() != 3:
        raise ValueError(f"predicted and true must both be [B, T, N]; got {list(predicted.shape)} and {list(true.shape)}")
    variance = true.double().reshape(-1, true.shape[-1]).var(0).clamp_min(1e-12)
    nrmse = ((predicted.double() - true.double()).square() / variance).mean(-1).sqrt()
    exceeded = nrmse > threshold
    first = torch.where(exceeded.any(1), exceeded.double().argmax(1), torch.tensor(true.shape[1]))
    return first.double()
