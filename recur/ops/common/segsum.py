"""Sums of log decays over segments, computed without subtracting prefix sums.

For log decays g_1..g_L, segsum(g)[t, s] = g_{s+1} + ... + g_t for s <= t and -inf above
the diagonal, so exp(segsum) is the causal decay matrix. Summing each segment directly
(a masked cumulative sum) instead of forming cumsum_t - cumsum_s keeps full relative
precision for strong gates (a prefix sum of -20 per step loses digits after a few
steps) and gives the right answer for -inf gates (full resets), where the difference
would be -inf - (-inf) = NaN.
"""

from __future__ import annotations

import torch

__all__ = ["prefix_sum_exclusive", "segsum", "suffix_sum_exclusive"]


def segsum(g: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Causal segment sums along `dim` (the last axis, or -2 for per-channel gates).

    Args:
        g: log decays [..., L] (dim=-1) or [..., L, K] (dim=-2).

    Returns:
        [..., L, L] (or [..., L, L, K]) with out[..., t, s, (k)] = sum_{r=s+1}^{t} g_r for
        s <= t and -inf for s > t.
    """
    if dim not in (-1, -2):
        raise ValueError(f"dim must be -1 or -2; got {dim}")
    L = g.shape[dim]
    ones = torch.ones(L, L, dtype=torch.bool, device=g.device)
    strictly_lower, lower = ones.tril(-1), ones.tril(0)
    if dim == -2:
        strictly_lower, lower = strictly_lower[:, :, None], lower[:, :, None]
    # Entry (t, s) of the masked matrix holds g_t when s < t; a cumulative sum down the
    # rows then gives, at (t, s), the sum of g_r for s < r <= t.
    g_rows = g.unsqueeze(dim)
    g_rows = g_rows.expand(*g_rows.shape[:dim], L, *g_rows.shape[dim:][1:])
    sums = g_rows.masked_fill(~strictly_lower, 0).cumsum(dim=dim - 1)
    return sums.masked_fill(~lower, float("-inf"))


def suffix_sum_exclusive(g: torch.Tensor, dim: int) -> torch.Tensor:
    """out_t = g_{t+1} + ... + g_L along `dim`: the log decay from after step t to the end.

    Shifting the inclusive suffix sum (rather than subtracting g_t from it) keeps full
    precision for strong gates and is exact for -inf.
    """
    inclusive = g.flip(dim).cumsum(dim).flip(dim)
    L = g.shape[dim]
    return torch.cat([inclusive.narrow(dim, 1, L - 1), torch.zeros_like(inclusive.narrow(dim, 0, 1))], dim=dim)


def prefix_sum_exclusive(g: torch.Tensor, dim: int) -> torch.Tensor:
    """out_t = g_1 + ... + g_{t-1} along `dim`: the log decay from the start to before step t.

    The inclusive prefix sum shifted by one step (rather than g_t subtracted from it), so
    strong gates keep full precision and -inf stays exact.
    """
    inclusive = g.cumsum(dim)
    L = g.shape[dim]
    return torch.cat([torch.zeros_like(inclusive.narrow(dim, 0, 1)), inclusive.narrow(dim, 0, L - 1)], dim=dim)
