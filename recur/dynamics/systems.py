"""Chaotic systems for dynamical-systems reconstruction, integrated in float64.

- Lorenz-63 (Lorenz 1963): ẋ = σ(y − x), ẏ = x(ρ − z) − y, ż = xy − βz; σ = 10, ρ = 28,
  β = 8/3, dt = 0.01 (the sampling of the AL-RNN paper's data); λ_max ≈ 0.906.
- Rössler (Rössler 1976): ẋ = −y − z, ẏ = x + ay, ż = b + z(x − c); a = b = 0.2, c = 5.7,
  dt = 0.08; λ_max ≈ 0.071.
- Lorenz-96 (Lorenz 1996), any dimension D ≥ 4: ẋ_i = (x_{i+1} − x_{i−2}) x_{i−1} − x_i + F,
  indices cyclic, F = 8.
- Kuramoto–Sivashinsky, u_t = −u u_x − u_xx − u_xxxx on a periodic domain of length L,
  sampled at D grid points, integrated in Fourier space by ETDRK4 (Cox & Matthews 2002,
  with the contour-integral coefficients of Kassam & Trefethen, "Fourth-order time-stepping
  for stiff PDEs", SIAM J. Sci. Comput. 2005).

The ODEs take one classical Runge–Kutta step per sample. Every system is a `System` with
`step(x [B, D]) -> [B, D]`, the map from one sample to the next, which the Lyapunov
spectrum differentiates (forward mode, `torch.func.jvp`): the spectrum is the one of the
discrete map the data come from, per unit of time.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

SYSTEMS = ("lorenz63", "rossler", "lorenz96", "ks")


class System:
    """A flow sampled every `dt`; `step` advances x [B, D] (float64) by one sample."""

    name: str = ""
    dim: int = 0
    dt: float = 0.0

    def step(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def initial(self, generator: torch.Generator) -> torch.Tensor:
        """A starting point [D] near the attractor's basin (the transient is discarded)."""
        raise NotImplementedError


class ODE(System):
    """A system given by its vector field, sampled by one RK4 step of size dt. A
    three-variable system writes `derivative(x1, x2, x3)` in plain arithmetic, so that the
    same formula runs on tensors and, for long trajectories, on Python floats (some 50×
    faster than tensor calls of three numbers)."""

    def derivative(self, x1, x2, x3):
        raise NotImplementedError

    def field(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.derivative(*x.unbind(-1)), dim=-1)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dt
        k1 = self.field(x)
        k2 = self.field(x + 0.5 * h * k1)
        k3 = self.field(x + 0.5 * h * k2)
        k4 = self.field(x + h * k3)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


@dataclass
class Lorenz63(ODE):
    sigma: float = 10.0
    rho: float = 28.0
    beta: float = 8 / 3
    dt: float = 0.01
    name = "lorenz63"
    dim = 3

    def derivative(self, x1, x2, x3):
        return self.sigma * (x2 - x1), x1 * (self.rho - x3) - x2, x1 * x2 - self.beta * x3

    def initial(self, generator: torch.Generator) -> torch.Tensor:
        return torch.tensor([1.0, 1.0, 20.0], dtype=torch.float64) + torch.randn(3, generator=generator, dtype=torch.float64)


@dataclass
class Rossler(ODE):
    a: float = 0.2
    b: float = 0.2
    c: float = 5.7
    dt: float = 0.08
    name = "rossler"
    dim = 3

    def derivative(self, x1, x2, x3):
        return -x2 - x3, x1 + self.a * x2, self.b + x3 * (x1 - self.c)

    def initial(self, generator: torch.Generator) -> torch.Tensor:
        return torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64) + 0.5 * torch.randn(3, generator=generator, dtype=torch.float64)


@dataclass
class Lorenz96(ODE):
    dim: int = 20
    forcing: float = 8.0
    dt: float = 0.01
    name = "lorenz96"

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 4:
            raise ValueError(f"Lorenz-96 needs dim >= 4 (it reads x_{{i-2}}..x_{{i+1}}); got {self.dim!r}")

    def field(self, x: torch.Tensor) -> torch.Tensor:
        return (x.roll(-1, -1) - x.roll(2, -1)) * x.roll(1, -1) - x + self.forcing

    def initial(self, generator: torch.Generator) -> torch.Tensor:
        return self.forcing + 0.01 * torch.randn(self.dim, generator=generator, dtype=torch.float64)


@dataclass
class KuramotoSivashinsky(System):
    """u on `dim` grid points of [0, length); the state is u in physical space."""

    dim: int = 64
    length: float = 22.0
    dt: float = 0.25
    # points on the contour that evaluates the ETDRK4 coefficients
    contour_points: int = 32
    name = "ks"

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 8 or self.dim % 2:
            raise ValueError(f"Kuramoto–Sivashinsky needs an even dim >= 8 grid points; got {self.dim!r}")
        self.coefficients = etdrk4_coefficients(self.dim, self.length, self.dt, self.contour_points)

    def step(self, u: torch.Tensor) -> torch.Tensor:
        E, E2, Q, f1, f2, f3, g = self.coefficients

        def nonlinear(v: torch.Tensor) -> torch.Tensor:
            # -u u_x = -(u²/2)_x, in Fourier space
            return g * torch.fft.rfft(torch.fft.irfft(v, n=self.dim).square(), dim=-1)

        v = torch.fft.rfft(u, dim=-1)
        Nv = nonlinear(v)
        a = E2 * v + Q * Nv
        Na = nonlinear(a)
        b = E2 * v + Q * Na
        Nb = nonlinear(b)
        c = E2 * a + Q * (2 * Nb - Nv)
        Nc = nonlinear(c)
        v = E * v + Nv * f1 + 2 * (Na + Nb) * f2 + Nc * f3
        return torch.fft.irfft(v, n=self.dim)

    def initial(self, generator: torch.Generator) -> torch.Tensor:
        x = torch.arange(self.dim, dtype=torch.float64) * self.length / self.dim
        phase = 2 * math.pi * torch.rand(2, generator=generator, dtype=torch.float64)
        u = torch.cos(2 * math.pi * x / self.length + phase[0]) * (1 + torch.sin(2 * math.pi * x / self.length + phase[1]))
        # zero mean: the mean is conserved, and the usual attractor has none
        return u - u.mean()


def etdrk4_coefficients(n: int, length: float, dt: float, contour_points: int) -> tuple[torch.Tensor, ...]:
    """ETDRK4's coefficients for the KS linear operator L_k = k² − k⁴ on rfft modes:
    e^{L dt}, e^{L dt/2}, and the φ-functions by the mean over a circle of radius 1 around
    each L dt (Kassam & Trefethen), which avoids their cancellation near L = 0."""
    k = 2 * math.pi / length * torch.arange(n // 2 + 1, dtype=torch.float64)
    L = k**2 - k**4
    E, E2 = torch.exp(dt * L), torch.exp(dt * L / 2)
    roots = torch.exp(1j * math.pi * (torch.arange(1, contour_points + 1, dtype=torch.float64) - 0.5) / contour_points)
    # [modes, contour points]
    LR = dt * L[:, None].to(torch.complex128) + roots[None, :]
    Q = dt * ((torch.exp(LR / 2) - 1) / LR).mean(1).real
    f1 = dt * ((-4 - LR + torch.exp(LR) * (4 - 3 * LR + LR**2)) / LR**3).mean(1).real
    f2 = dt * ((2 + LR + torch.exp(LR) * (-2 + LR)) / LR**3).mean(1).real
    f3 = dt * ((-4 - 3 * LR - LR**2 + torch.exp(LR) * (4 - LR)) / LR**3).mean(1).real
    # -(u²/2)_x → -i k/2 · FFT(u²); the Nyquist mode's derivative is set to zero
    derivative = 1j * k.to(torch.complex128)
    derivative[-1] = 0
    g = -0.5 * derivative
    return E, E2, Q, f1, f2, f3, g


def build_system(name: str, dim: int = 0) -> System:
    """The system `name` (one of SYSTEMS) with its standard parameters; `dim` sizes
    Lorenz-96 and Kuramoto–Sivashinsky (0 = their defaults, 20 and 64)."""
    if name == "lorenz63":
        return Lorenz63()
    if name == "rossler":
        return Rossler()
    if name == "lorenz96":
        return Lorenz96(dim=dim or 20)
    if name == "ks":
        return KuramotoSivashinsky(dim=dim or 64)
    raise ValueError(f"system must be one of {list(SYSTEMS)}; got {name!r}")


@functools.lru_cache(maxsize=16)
def trajectory(name: str, steps: int, *, dim: int = 0, seed: int = 0, transient: int = 1000) -> torch.Tensor:
    """[steps, D] float64: the system sampled every dt from a seeded start, after
    `transient` discarded samples. Cached: the same arguments return the same tensor
    (treat it as read-only)."""
    system = build_system(name, dim)
    x = system.initial(torch.Generator().manual_seed(seed))[None]
    if isinstance(system, ODE) and system.dim == 3:
        return torch.tensor(_rk4_floats(system, x[0].tolist(), steps, transient), dtype=torch.float64)
    out = torch.empty(steps, x.shape[-1], dtype=torch.float64)
    for t in range(transient + steps):
        x = system.step(x)
        if t >= transient:
            out[t - transient] = x[0]
    return out


def _rk4_floats(system: ODE, x: list[float], steps: int, transient: int) -> list[tuple[float, float, float]]:
    """`system.step` on Python floats: the samples after `transient` steps."""
    f, h = system.derivative, system.dt
    out = []
    x1, x2, x3 = x
    for t in range(transient + steps):
        a1, a2, a3 = f(x1, x2, x3)
        b1, b2, b3 = f(x1 + 0.5 * h * a1, x2 + 0.5 * h * a2, x3 + 0.5 * h * a3)
        c1, c2, c3 = f(x1 + 0.5 * h * b1, x2 + 0.5 * h * b2, x3 + 0.5 * h * b3)
        d1, d2, d3 = f(x1 + h * c1, x2 + h * c2, x3 + h * c3)
        x1 += h / 6 * (a1 + 2 * b1 + 2 * c1 + d1)
        x2 += h / 6 * (a2 + 2 * b2 + 2 * c2 + d2)
        x3 += h / 6 * (a3 + 2 * b3 + 2 * c3 + d3)
        if t >= transient:
            out.append((x1, x2, x3))
    return out


def lyapunov_spectrum(
    step, x: torch.Tensor, steps: int, *, exponents: int | None = None, dt: float = 1.0, transient: int = 0,
    renormalize_every: int = 1,
) -> torch.Tensor:
    """The `exponents` largest Lyapunov exponents (all by default) of the map
    x_{t+1} = step(x_t), per unit of time, by the QR method (Benettin et al. 1980):

        Q_0 random orthonormal;  J_t Q_{t-1} = Q_t R_t;  λ_i = Σ_t log |R_t[i, i]| / (steps · dt)

    with J_t the Jacobian of `step` at x_t (`jacobian_step`). x [B, D] runs B
    trajectories at once; the result [B, k] is per trajectory. The first `transient` steps
    align Q without counting. QR every `renormalize_every` steps (products of a few
    Jacobians grow little)."""
    B, D = x.shape
    k = D if exponents is None else exponents
    # a random (seeded) start: unit vectors can sit in an invariant subspace of the map
    # (a diagonal one keeps e_1 forever) and miss the fastest direction
    start = torch.randn(D, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    Q = torch.linalg.qr(start).Q.to(x).expand(B, D, k).contiguous()
    log_growth = torch.zeros(B, k, dtype=x.dtype, device=x.device)
    for t in range(transient + steps):
        x, J = jacobian_step(step, x)
        Q = J @ Q
        if (t + 1) % renormalize_every == 0 or t + 1 in (transient, transient + steps):
            Q, R = torch.linalg.qr(Q)
            if t >= transient:
                log_growth += R.diagonal(dim1=-2, dim2=-1).abs().log()
    return log_growth / (steps * dt)


def jacobian_step(step, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(step(x) [B, D], its Jacobian [B, D, D]) by one reverse-mode pass over D copies of
    the batch, copy i pulling back the i-th unit vector (row i of J). Reverse mode, since
    forward-mode AD costs some 50× more per call in torch on CPU (measured); any
    differentiable `step` works, a model's included."""
    B, D = x.shape
    copies = x.detach().repeat(D, 1).requires_grad_(True)
    with torch.enable_grad():
        y = step(copies)
        units = torch.eye(D, dtype=y.dtype, device=y.device).repeat_interleave(B, 0)
        (rows,) = torch.autograd.grad(y, copies, units)
    return y[:B].detach(), rows.reshape(D, B, D).transpose(0, 1)


def kaplan_yorke_dimension(exponents: torch.Tensor) -> float:
    """D_KY = j + Σ_{i≤j} λ_i / |λ_{j+1}|, with j the largest index whose partial sum of
    the exponents (sorted descending) is non-negative (Kaplan & Yorke 1979)."""
    lam = exponents.double().sort(descending=True).values
    sums = lam.cumsum(0)
    if sums[0] < 0:
        return 0.0
    j = int((sums >= 0).nonzero().max())
    if j + 1 >= len(lam):
        return float(len(lam))
    return (j + 1) + float(sums[j] / lam[j + 1].abs())
