"""Arrow pointing: does the arrow, extended as a ray, hit the circle?

The extrapolation task of Pöppel et al., "pLSTM: parallelizable Linear Source Transition
Mark networks" (arXiv:2506.11997), after its generator: an arrow and a filled circle on an
empty square; the label is whether the ray from the arrow's base along its direction meets
the circle. Per example:

    r ~ U[radius]                       circle radius
    base ~ U[padding, S - padding]^2    arrow base
    c = base + (dx, dy), |dx|, |dy| >= 2r (offsets wrap inside the padded square)
    hit:  φ = angle(c - base) + U(-1, 1) · asin(r_d / |c - base|),   r_d = r / 1.2
    miss: φ = angle(c - base) ± U(asin(r_d / |c - base|), π),       r_d = 1.2 · r

so a hit's ray passes the centre within r / 1.2 and a miss's stays 1.2 r away (or points
away): no label rests on a pixel. Half of every draw hits (balanced classes).

Rendering is vectorised in torch: every pixel's ink is the coverage of a one-pixel ramp on
its signed distance to the nearest shape (the circle; the shaft and two head strokes as
segments of the arrow's width), clamp(0.5 - distance, 0, 1). So edges are antialiased and
any resolution renders, thousands of images per second. Ink is 1 on a background of 0 (the
paper draws black on white; the inverse carries the same information).

Geometry is in pixels. Training, validation and test images are `resolution` pixels square;
the extrapolation split `test_2x` draws `extrapolation_scale` times larger images with the
same geometry in pixels, as in the paper (192 -> 384 px): the shapes are relatively smaller
and farther apart. It is read once, at the end, with the test split. The paper's geometry at
192 px is radius (15, 30), arrow length (15, 30), width (2, 4), padding 30; the defaults
here suit 32 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Batch, Task, TaskConfig, register_task

# the paper's margin between the two classes: hits pass within r / 1.2, misses beyond 1.2 r
MARGIN = 1.2
# head strokes: their length as a fraction of the arrow's, and their angle off the shaft
HEAD_FRACTION = 0.4
HEAD_ANGLE = math.radians(150)
# the numbers that fix an image, and how many of each
GEOMETRY = {"centre": 2, "radius": 1, "base": 2, "angle": 1, "length": 1, "width": 1}


def _check_interval(field: str, value: tuple[float, float]) -> tuple[float, float]:
    if len(value) != 2 or not 0 < value[0] <= value[1]:
        raise ValueError(f"task.{field} must be two numbers (low, high) with 0 < low <= high; got {value!r}")
    return float(value[0]), float(value[1])


@dataclass(kw_only=True)
class ArrowPointingConfig(TaskConfig):
    # side of the training, validation and test images, in pixels
    resolution: int = 32
    # the test_2x split's images are this many times larger (same geometry in pixels)
    extrapolation_scale: int = 2
    # circle radius, arrow length and stroke width in pixels, each uniform in (low, high)
    radius: tuple[float, float] = (2.5, 4.5)
    arrow_length: tuple[float, float] = (5.0, 8.0)
    arrow_width: tuple[float, float] = (1.0, 1.5)
    # no arrow base or circle centre lies closer than this to the image's border
    padding: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("resolution", "extrapolation_scale"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"task.{name} must be a positive int; got {value!r}")
        self.radius = _check_interval("radius", tuple(self.radius))
        self.arrow_length = _check_interval("arrow_length", tuple(self.arrow_length))
        self.arrow_width = _check_interval("arrow_width", tuple(self.arrow_width))
        # the circle's centre needs an offset of at least 2r both ways inside the padded square
        room = self.resolution - 2 * self.padding
        if self.padding < 0 or room < 4 * self.radius[1]:
            raise ValueError(
                f"task.resolution - 2 · task.padding must be at least 4 × the largest radius "
                f"({4 * self.radius[1]}); got resolution {self.resolution}, padding {self.padding}"
            )


def ray_hits(base: torch.Tensor, angle: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """[N] bool: does the ray from base [N, 2] at angle [N] (radians) meet the disc of
    centre [N, 2] and radius [N]?"""
    direction = torch.stack([angle.cos(), angle.sin()], -1)
    to_centre = centre - base
    # the ray's closest approach to the centre: at t = (c - b)·u, if t > 0, else the base
    along = (to_centre * direction).sum(-1).clamp_min(0)
    closest = to_centre - along[:, None] * direction
    return closest.norm(dim=-1) <= radius


def _segment_distance(px: torch.Tensor, py: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Distance of the pixels (px, py) [1, P] to the segments start -> end [N, 2]: [N, P]."""
    sx, sy = start[:, :1], start[:, 1:]
    dx, dy = end[:, :1] - sx, end[:, 1:] - sy  # [N, 1]
    ox, oy = px - sx, py - sy  # [N, P]
    t = ((ox * dx + oy * dy) / (dx * dx + dy * dy).clamp_min(1e-12)).clamp(0, 1)
    return torch.hypot(ox - t * dx, oy - t * dy)


def render(size: int, centre: torch.Tensor, radius: torch.Tensor, base: torch.Tensor, angle: torch.Tensor,
           length: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Images [N, 1, size, size] of a filled circle and an arrow from base of `length` at
    `angle`, antialiased; coordinates in pixels (x = column, y = row, pixel centres at +0.5)."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    py, px = (c.reshape(1, -1) for c in torch.meshgrid(coords, coords, indexing="ij"))  # [1, P], row-major
    # signed distances to each shape: negative inside
    nearest = torch.hypot(px - centre[:, :1], py - centre[:, 1:]) - radius[:, None]  # [N, P]
    direction = torch.stack([angle.cos(), angle.sin()], -1)
    tip = base + length[:, None] * direction
    half = width[:, None] / 2
    nearest = torch.minimum(nearest, _segment_distance(px, py, base, tip) - half)
    for turn in (HEAD_ANGLE, -HEAD_ANGLE):
        back = torch.stack([(angle + turn).cos(), (angle + turn).sin()], -1)
        stroke = _segment_distance(px, py, tip, tip + HEAD_FRACTION * length[:, None] * back) - half
        nearest = torch.minimum(nearest, stroke)
    # coverage of a pixel by a shape edge: a one-pixel linear ramp across the boundary
    ink = (0.5 - nearest).clamp(0, 1)
    return ink.view(-1, 1, size, size)


@register_task("arrow_pointing")
class ArrowPointing(Task):
    """Does the arrow's ray hit the circle? Images [1, S, S] -> 2 classes; test_2x at twice S."""

    Config = ArrowPointingConfig
    head = "classify"
    input = "image"
    num_outputs = 2
    # test_2x: the extrapolation split at extrapolation_scale × the resolution, read at the end
    eval_splits = ("val", "test", "test_2x")

    def __init__(self, config: ArrowPointingConfig) -> None:
        super().__init__(config)
        self.image_shape = (1, config.resolution, config.resolution)

    def size(self, split: str) -> int:
        """Side in pixels of the images of `split`."""
        scale = self.config.extrapolation_scale if split == "test_2x" else 1
        return self.config.resolution * scale

    def geometry(self, n: int, generator: torch.Generator, size: int) -> dict[str, torch.Tensor]:
        """The shapes of n examples on a size × size image and their labels (half hit)."""
        c = self.config

        def uniform(interval: tuple[float, float]) -> torch.Tensor:
            low, high = interval
            return low + (high - low) * torch.rand(n, generator=generator)

        radius, length, width = uniform(c.radius), uniform(c.arrow_length), uniform(c.arrow_width)
        room = size - 2 * c.padding
        base = c.padding + room * torch.rand(n, 2, generator=generator)
        # an offset in [2r, room - 2r] both ways, wrapped into the padded square, puts the
        # centre at least 2r from the base along each axis
        offset = 2 * radius[:, None] + (room - 4 * radius[:, None]) * torch.rand(n, 2, generator=generator)
        centre = c.padding + (base - c.padding + offset).remainder(room)
        to_centre = centre - base
        distance = to_centre.norm(dim=-1)
        towards = torch.atan2(to_centre[:, 1], to_centre[:, 0])
        # exactly half of the draw hits, in a random order
        hit = torch.randperm(n, generator=generator) < n // 2
        near = torch.asin(radius / MARGIN / distance)
        far = torch.asin((MARGIN * radius / distance).clamp(max=1))
        u = torch.rand(n, generator=generator)
        side = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
        angle = torch.where(hit, towards + (2 * u - 1) * near, towards + side * (far + u * (math.pi - far)))
        return {"centre": centre, "radius": radius, "base": base, "angle": angle, "length": length,
                "width": width, "hit": hit}

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        size = self.size(split)
        shapes = self.geometry(n, generator, size)
        hit = shapes.pop("hit")
        return {"inputs": render(size, **shapes), "labels": hit.long()}

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Batch:
        # the geometry fixes the image, so the split's hash reads the geometry and only the
        # examples kept are rendered (a validation split keeps one draw in sixteen);
        # test_2x keeps the test split's buckets
        size = self.size(split)

        def draw(m: int) -> Batch:
            shapes = self.geometry(m, generator, size)
            hit = shapes.pop("hit")
            return {"inputs": torch.cat([shapes[name].view(m, -1) for name in GEOMETRY], 1), "labels": hit.long()}

        kept = self.disjoint(n, generator, "test" if split == "test_2x" else split, draw)
        columns = kept["inputs"].split([GEOMETRY[name] for name in GEOMETRY], 1)
        shapes = {name: column.squeeze(1) if GEOMETRY[name] == 1 else column for name, column in zip(GEOMETRY, columns, strict=True)}
        return {"inputs": render(size, **shapes), "labels": kept["labels"]}

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float((logits.argmax(-1) == labels).float().mean())}

    def tokens_per_example(self) -> int:
        return self.config.resolution**2
