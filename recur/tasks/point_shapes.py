"""Point shapes: which solid is a noisy, randomly rotated cloud of points sampled from?

A synthetic point-cloud classification set: points on the surface of one of five solids,
each about the unit ball:

    sphere    radius 1
    cube      side 2 (six faces, equally likely)
    cylinder  radius 1, height 2 (side and caps by area)
    cone      base radius 1, height 2 (lateral surface and base by area)
    torus     radii 0.7 and 0.3 (angles weighted by the area element, so points are uniform)

Each cloud is scaled by a factor uniform in `scale`, rotated by a uniformly random rotation
(a normalised Gaussian quaternion), and jittered by Gaussian noise of std `noise`; so the
label is a property of the shape alone, never of its pose or size. A cloud has a number of
distinct points uniform in `points` (low, high) and is padded to `high` by repeating its
own points, so every batch is [N, high, 3] without a mask: a repeated point changes neither
the set of occupied voxels nor a max over them, and the point adapter's order keeps copies
next to each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Batch, Task, TaskConfig, check_range, register_task

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")
TORUS_RADII = (0.7, 0.3)
# the torus' tube angle is drawn from this many bins weighted by the area element
TORUS_BINS = 360


@dataclass(kw_only=True)
class PointShapesConfig(TaskConfig):
    # distinct points per cloud, uniform in [low, high]; clouds are padded to high
    points: tuple[int, int] = (96, 128)
    # std of the Gaussian jitter added to every coordinate
    noise: float = 0.02
    # every cloud is scaled by a factor uniform in (low, high)
    scale: tuple[float, float] = (0.8, 1.2)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.points = check_range("points", tuple(self.points))
        if not self.noise >= 0:
            raise ValueError(f"task.noise must be >= 0; got {self.noise!r}")
        low, high = self.scale = tuple(float(x) for x in self.scale)
        if not 0 < low <= high:
            raise ValueError(f"task.scale must be (low, high) with 0 < low <= high; got {self.scale!r}")


def _uniform(n: int, generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _disc(n: int, generator: torch.Generator, z: float) -> torch.Tensor:
    """n points uniform on the unit disc at height z: [n, 3]."""
    rho, phi = _uniform(n, generator).sqrt(), _uniform(n, generator, 0, 2 * math.pi)
    return torch.stack([rho * phi.cos(), rho * phi.sin(), torch.full((n,), z)], -1)


def surface_points(shape: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """n points uniform on the surface of `shape` (one of SHAPES) in its canonical pose: [n, 3]."""
    if shape == "sphere":
        x = torch.randn(n, 3, generator=generator)
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if shape == "cube":
        # a face (axis and side), then a point uniform on it
        x = _uniform(3 * n, generator, -1, 1).view(n, 3)
        axis = torch.randint(0, 3, (n,), generator=generator)
        side = torch.randint(0, 2, (n,), generator=generator) * 2.0 - 1
        return x.scatter(1, axis[:, None], side[:, None])
    if shape == "cylinder":
        # side area 4π, caps 2π together
        phi, z = _uniform(n, generator, 0, 2 * math.pi), _uniform(n, generator, -1, 1)
        side = torch.stack([phi.cos(), phi.sin(), z], -1)
        cap = _disc(n, generator, 1.0) * torch.tensor([1.0, 1.0, 0.0]) + torch.tensor([0.0, 0.0, 1.0]) * (
            torch.randint(0, 2, (n, 1), generator=generator) * 2.0 - 1
        )
        return torch.where((_uniform(n, generator) < 2 / 3)[:, None], side, cap)
    if shape == "cone":
        # apex at z = 1, base at z = -1: lateral area π√5, base π; on the lateral surface
        # the area within distance f (as a fraction of the slant) of the apex grows as f²
        f, phi = _uniform(n, generator).sqrt(), _uniform(n, generator, 0, 2 * math.pi)
        lateral = torch.stack([f * phi.cos(), f * phi.sin(), 1 - 2 * f], -1)
        base = _disc(n, generator, -1.0)
        return torch.where((_uniform(n, generator) < math.sqrt(5) / (1 + math.sqrt(5)))[:, None], lateral, base)
    if shape == "torus":
        R, r = TORUS_RADII
        # the area element is proportional to R + r cos(tube angle)
        bins = (torch.arange(TORUS_BINS) + 0.5) * (2 * math.pi / TORUS_BINS)
        tube = (torch.multinomial(R + r * bins.cos(), n, replacement=True, generator=generator)
                + _uniform(n, generator)) * (2 * math.pi / TORUS_BINS)
        around = _uniform(n, generator, 0, 2 * math.pi)
        ring = R + r * tube.cos()
        return torch.stack([ring * around.cos(), ring * around.sin(), r * tube.sin()], -1)
    raise ValueError(f"shape must be one of {list(SHAPES)}; got {shape!r}")


def random_rotations(n: int, generator: torch.Generator) -> torch.Tensor:
    """n rotation matrices uniform over SO(3) (from normalised Gaussian quaternions): [n, 3, 3]."""
    q = torch.randn(n, 4, generator=generator)
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).view(n, 3, 3)


@register_task("point_shapes")
class PointShapes(Task):
    """Which of 5 solids a rotated, noisy cloud of 96-128 surface points comes from (points [N, 3])."""

    Config = PointShapesConfig
    head = "classify"
    input = "points"
    num_outputs = len(SHAPES)
    features = 3

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        c = self.config
        low, high = c.points
        labels = torch.randint(0, len(SHAPES), (n,), generator=generator)
        clouds = torch.empty(n, high, 3)
        for k, shape in enumerate(SHAPES):
            of_shape = labels == k
            clouds[of_shape] = surface_points(shape, int(of_shape.sum()) * high, generator).view(-1, high, 3)
        scale = _uniform(n, generator, *c.scale)
        clouds = clouds * scale[:, None, None] + c.noise * torch.randn(n, high, 3, generator=generator)
        # pad beyond each cloud's count with exact copies of its own (noisy) points
        counts = torch.randint(low, high + 1, (n,), generator=generator)
        slot = torch.arange(high).expand(n, high)
        copies = (torch.rand(n, high, generator=generator) * counts[:, None]).long()
        clouds = clouds.gather(1, torch.where(slot < counts[:, None], slot, copies)[..., None].expand(n, high, 3))
        # the isotropic noise is isotropic still after the rotation
        clouds = clouds @ random_rotations(n, generator).transpose(1, 2)
        return {"inputs": clouds, "labels": labels}

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float((logits.argmax(-1) == labels).float().mean())}

    def tokens_per_example(self) -> int:
        return self.config.points[1]
