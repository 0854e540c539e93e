"""arrow_pointing and point_shapes: determinism, labels, balance, splits, sizes."""

from __future__ import annotations

import math

import pytest
import torch

from recur.tasks import build_task
from recur.tasks.arrow_pointing import ray_hits, render
from recur.tasks.base import example_hash
from recur.tasks.point_shapes import SHAPES, random_rotations, surface_points


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_arrow_pointing_is_deterministic_by_seed_and_renders_any_size():
    task = build_task("arrow_pointing", resolution=24, padding=3.0)
    a, b, c = (task.sample(32, gen(s), "train") for s in (0, 0, 1))
    assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["inputs"], c["inputs"])
    assert a["inputs"].shape == (32, 1, 24, 24) and a["inputs"].dtype == torch.float32
    assert 0 <= float(a["inputs"].min()) and float(a["inputs"].max()) == 1.0
    # antialiased: edge pixels are partly covered
    assert ((a["inputs"] > 0) & (a["inputs"] < 1)).any()
    assert task.sample(8, gen(), "test_2x")["inputs"].shape == (8, 1, 48, 48)


def test_hand_placed_arrows_hit_and_miss():
    # on pixel centres (x = column + 0.5, y = row + 0.5)
    centre, radius = torch.tensor([[20.5, 10.5], [20.5, 10.5]]), torch.tensor([3.0, 3.0])
    base = torch.tensor([[5.5, 10.5], [5.5, 10.5]])
    # the first arrow points right, at the circle; the second points up, past it
    angle = torch.tensor([0.0, -math.pi / 2])
    assert ray_hits(base, angle, centre, radius).tolist() == [True, False]
    # pointing away from the circle misses although its line passes through the centre
    assert not ray_hits(base[:1], torch.tensor([math.pi]), centre[:1], radius[:1]).item()
    images = render(32, centre, radius, base, angle, torch.tensor([6.0, 6.0]), torch.tensor([1.0, 1.0]))
    # the circle is inked at its centre, the first arrow's shaft along row 10, the second's along column 5
    assert images[0, 0, 10, 20] > 0.99 and images[0, 0, 10, 8] > 0.99 and images[1, 0, 7, 5] > 0.99
    assert images[0, 0, 7, 5] == 0 and images[1, 0, 10, 8] == 0
    assert images[0, 0, 25, 25] == 0


def test_arrow_labels_follow_the_geometry_with_a_margin_and_are_balanced():
    task = build_task("arrow_pointing")
    shapes = task.geometry(4000, gen(3), 32)
    hit = shapes["hit"]
    assert torch.equal(ray_hits(shapes["base"], shapes["angle"], shapes["centre"], shapes["radius"]), hit)
    # no label rests on a near miss: a wider circle still misses, a narrower one still hits
    assert not ray_hits(shapes["base"], shapes["angle"], shapes["centre"], shapes["radius"] * 1.15)[~hit].any()
    assert ray_hits(shapes["base"], shapes["angle"], shapes["centre"], shapes["radius"] / 1.15)[hit].all()
    assert int(hit.sum()) == 2000
    batch = task.sample(2000, gen(4), "train")
    assert abs(batch["labels"].float().mean().item() - 0.5) < 0.04
    # shapes stay inside the padded square
    assert shapes["centre"].min() >= task.config.padding and shapes["centre"].max() <= 32 - task.config.padding


def test_arrow_splits_are_disjoint_and_test_2x_is_read_at_the_end():
    task = build_task("arrow_pointing")
    hashes = {split: set(example_hash(task.sample(200, gen(5), split)["inputs"]).tolist()) for split in ("train", "val", "test")}
    assert not hashes["train"] & hashes["val"] and not hashes["train"] & hashes["test"] and not hashes["val"] & hashes["test"]
    from recur.train.loop import test_splits, validation_splits

    assert validation_splits(task) == ("val",) and test_splits(task) == ("test", "test_2x")


def test_point_shapes_are_deterministic_with_varying_point_counts():
    task = build_task("point_shapes", points=(20, 40))
    a, b = task.sample(64, gen(0), "train"), task.sample(64, gen(0), "train")
    assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["labels"], b["labels"])
    assert a["inputs"].shape == (64, 40, 3)
    distinct = torch.tensor([len(torch.unique(cloud, dim=0)) for cloud in a["inputs"]])
    assert distinct.min() >= 20 and distinct.max() <= 40 and len(set(distinct.tolist())) > 5
    counts = torch.bincount(task.sample(1000, gen(1), "train")["labels"], minlength=len(SHAPES))
    assert counts.min() > 150
    hashes = {split: set(example_hash(task.sample(100, gen(2), split)["inputs"]).tolist()) for split in ("train", "val", "test")}
    assert not hashes["train"] & hashes["val"] and not hashes["val"] & hashes["test"]


@pytest.mark.parametrize("shape", SHAPES)
def test_surfaces_lie_on_their_solids(shape):
    x = surface_points(shape, 2000, gen())
    rho, z = x[:, :2].norm(dim=-1), x[:, 2]
    if shape == "sphere":
        assert torch.allclose(x.norm(dim=-1), torch.ones(2000), atol=1e-5)
    elif shape == "cube":
        assert torch.allclose(x.abs().amax(-1), torch.ones(2000))
    elif shape == "cylinder":
        assert (((rho - 1).abs() < 1e-5) | ((z.abs() - 1).abs() < 1e-6) & (rho <= 1)).all()
    elif shape == "cone":
        assert (((rho - (1 - z) / 2).abs() < 1e-5) | ((z + 1).abs() < 1e-6) & (rho <= 1)).all()
    else:
        assert torch.allclose((rho - 0.7).square() + z.square(), torch.full((2000,), 0.09), atol=1e-5)


def test_labels_are_rotation_invariant_and_poses_uniform():
    rotations = random_rotations(4000, gen())
    assert torch.allclose(rotations @ rotations.transpose(1, 2), torch.eye(3).expand(4000, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotations), torch.ones(4000), atol=1e-5)
    # uniform poses: a rotated axis points every way alike (its mean outer product is I / 3)
    axis = rotations[:, :, 2]
    assert torch.allclose(axis.T @ axis / 4000, torch.eye(3) / 3, atol=0.03)
    # the label is the shape's: a rotation-invariant figure of the clouds (the mean squared
    # distance from the centre) is their solid's, whatever the poses
    task = build_task("point_shapes", noise=0.0, scale=(1.0, 1.0))
    batch = task.sample(500, gen(1), "train")
    spread = batch["inputs"].square().sum(-1).mean(1)
    for k, shape in enumerate(SHAPES):
        expected = surface_points(shape, 20000, gen(k)).square().sum(-1).mean()
        assert abs(spread[batch["labels"] == k].mean() - expected) < 0.02, shape
