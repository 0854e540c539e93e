"""HiPPO matrices and their normal-plus-low-rank (NPLR / DPLR) forms; the diagonal inits
of S4D and DSS.

HiPPO: Recurrent Memory with Optimal Polynomial Projections (Gu, Dao, Ermon, Rudra, Ré;
arXiv:2008.07669); Efficiently Modeling Long Sequences with Structured State Spaces (Gu,
Goel, Ré; arXiv:2111.00396), §3: every HiPPO matrix is A = S − P Pᵀ with S normal, so in
S's eigenbasis V it is diagonal plus low rank, A = V (Λ − P̃ P̃*) V*.
"""

from __future__ import annotations

import math

import torch

MEASURES = ("legs", "legt", "fout")


def hippo(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The HiPPO transition A [N, N] and input vector B [N] of `measure`, float64.

    legs: A_nk = −√(2n+1)√(2k+1) (n > k), −(n+1) (n = k), 0 (n < k); B_n = √(2n+1).
    legt: A_nk = −½ √(2n+1)√(2k+1) · (1 if n ≥ k else (−1)^(n−k)); B_n = ½ √(2n+1).
    fout: the translated Fourier basis (cos/sin pairs of frequency πk), N even.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {list(MEASURES)}; got {measure!r}")
    if not isinstance(N, int) or N <= 0:
        raise ValueError(f"N must be a positive int; got {N!r}")
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    if measure == "legs":
        A = -(r[:, None] * r[None, :]) * torch.tril(torch.ones(N, N, dtype=torch.float64), -1)
        A = A - torch.diag(n + 1)
        return A, r.clone()
    if measure == "legt":
        sign = torch.where(n[:, None] >= n[None, :], 1.0, (-1.0) ** (n[:, None] - n[None, :]).abs())
        return -0.5 * r[:, None] * r[None, :] * sign, 0.5 * r
    if N % 2:
        raise ValueError(f"measure 'fout' needs an even N; got {N}")
    # frequencies 0, 1, 1, 2, 2, ...: state 2k-1 (sin) and 2k (cos) rotate at rate πk
    freqs = torch.arange(N // 2, dtype=torch.float64)
    d = torch.stack([torch.zeros(N // 2, dtype=torch.float64), freqs], dim=-1).reshape(-1)[1:]
    A = math.pi * (torch.diag(d, -1) - torch.diag(d, 1))
    B = torch.zeros(N, dtype=torch.float64)
    B[0::2] = math.sqrt(2)
    B[0] = 1
    # the window's far end u(t − 1) enters as a rank-one term
    return A - B[:, None] * B[None, :], B


def rank_correction(measure: str, N: int) -> torch.Tensor:
    """P [r, N] with A + Pᵀ P normal (−½ I + skew for legs, skew for legt and fout)."""
    n = torch.arange(N, dtype=torch.float64)
    if measure == "legs":
        return torch.sqrt(n + 0.5)[None, :]
    if measure == "legt":
        r = torch.sqrt(2 * n + 1) / math.sqrt(2)
        even, odd = r.clone(), r.clone()
        even[1::2] = 0
        odd[0::2] = 0
        return torch.stack([even, odd])
    if measure == "fout":
        return hippo("fout", N)[1][None, :]
    raise ValueError(f"measure must be one of {list(MEASURES)}; got {measure!r}")


def nplr(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO in its diagonal-plus-low-rank basis: (Λ [N], P̃ [r, N], B̃ [N], V [N, N]),
    complex128, with A = V (diag Λ − P̃ᵀ P̃^*) V* and B = V B̃ exactly (all N eigenvalues
    kept, so no conjugate pairs are dropped)."""
    A, B = hippo(measure, N)
    P = rank_correction(measure, N)
    S = A + P.T @ P
    # S = σ I + skew: the real part of every eigenvalue is the mean of its diagonal
    real = torch.diagonal(S).mean()
    # −i (S − σ I) is Hermitian, so eigh gives orthonormal eigenvectors
    skew = (S - real * torch.eye(N, dtype=torch.float64)).to(torch.complex128)
    imag, V = torch.linalg.eigh(skew * -1j)
    Lambda = real + 1j * imag
    Vh = V.conj().T
    return Lambda, (Vh @ P.T.to(torch.complex128)).T, Vh @ B.to(torch.complex128), V


def diagonal_init(init: str, N: int) -> torch.Tensor:
    """N eigenvalues of one of each conjugate pair (Re < 0), complex128: "lin" (S4D-Lin,
    −½ + iπn), "inv" (S4D-Inv), "legs" (the normal part of HiPPO-LegS, as in DSS and
    S4D-LegS), or N real ones, "real" (S4D-Real, −(n+1))."""
    n = torch.arange(N, dtype=torch.float64)
    if init == "lin":
        return -0.5 + 1j * math.pi * n
    if init == "inv":
        return -0.5 + 1j * (N / math.pi) * (N / (2 * n + 1) - 1)
    if init == "real":
        return (-(n + 1)).to(torch.complex128)
    if init == "legs":
        Lambda = nplr("legs", 2 * N)[0]
        # the eigenvalues come in conjugate pairs: keep the ones with Im ≥ 0, slowest first
        half = Lambda[Lambda.imag > 0] if (Lambda.imag > 0).sum() == N else Lambda[Lambda.imag.argsort()[N:]]
        return half[half.imag.argsort()]
    raise ValueError(f"init must be one of ['inv', 'legs', 'lin', 'real']; got {init!r}")
