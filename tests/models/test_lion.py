"""LION: groups cover every occupied voxel once, in windows along alternating axes; voxel
generation; the model runs any mixer and ignores the order of the points."""

from __future__ import annotations

import pytest
import torch

from recur.models import HeadConfig, InputConfig, LMConfig, SequenceModel
from recur.models.lion import Voxels, generate_voxels, window_groups


def occupancy(seed: int = 0, shape=(2, 7, 6, 5), density: float = 0.3) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < density


@pytest.mark.parametrize("window,group_size", [(3, 4), (7, 5), (2, 1), (4, 64)])
@pytest.mark.parametrize("axis", [0, 1])
def test_groups_cover_every_voxel_once_and_stay_in_one_window(window, group_size, axis):
    occupied = occupancy()
    groups = window_groups(occupied, window, axis, group_size)
    B, X, Y, Z = occupied.shape
    # every occupied voxel exactly once, and only those
    assert sorted(groups.voxels.tolist()) == occupied.flatten().nonzero().flatten().tolist()
    assert len(set(groups.slots.tolist())) == len(groups.slots)
    assert int(groups.slots.max()) < groups.num_groups * group_size
    b, rest = groups.voxels // (X * Y * Z), groups.voxels % (X * Y * Z)
    x, y, z = rest // (Y * Z), rest // Z % Y, rest % Z
    group = groups.slots // group_size
    window_of = torch.stack([b, x // window, y // window, z // window], -1)
    for g in group.unique():
        # a group holds one window of one cloud, its voxels at the front of the group
        assert len(window_of[group == g].unique(dim=0)) == 1
        positions = (groups.slots[group == g] % group_size).sort().values
        assert torch.equal(positions, torch.arange(len(positions)))
    # inside a group, consecutive voxels step along the axis first
    fast, slow = (x, y) if axis == 0 else (y, x)
    key = ((z % window) * window + slow % window) * window + fast % window
    order = groups.slots.argsort()
    for g in group.unique():
        members = order[group[order] == g]
        assert (key[members].diff() > 0).all()


def test_voxel_generation_fills_diagonal_neighbours_of_the_strongest_voxels():
    occupied = torch.zeros(1, 5, 5, 1, dtype=torch.bool)
    occupied[0, 2, 2, 0] = occupied[0, 0, 0, 0] = True
    features = torch.zeros(1, 5, 5, 1, 2)
    features[0, 2, 2, 0] = torch.tensor([3.0, -1.0])
    features[0, 0, 0, 0] = torch.tensor([1.0, 0.0])
    grown = generate_voxels(Voxels(features, occupied), ratio=0.5)
    expected = occupied.clone()
    for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        expected[0, 2 + dx, 2 + dy, 0] = True
    assert torch.equal(grown.occupied, expected)
    assert torch.equal(grown.features, features)


def lion(mixer: str, **input_options) -> SequenceModel:
    torch.manual_seed(0)
    return SequenceModel(
        LMConfig(vocab_size=0, d_model=16, n_layers=4, mixer=mixer, mlp_ratio=1.0),
        InputConfig(kind="points", features=3, point_model="lion", lion_voxels=6, lion_group=8, **input_options),
        HeadConfig(kind="classify", num_outputs=3, pooling="mean"),
    ).eval()


@pytest.mark.parametrize("mixer", ["gla", "mamba2", "retnet", "lstm"])
def test_lion_runs_any_mixer_and_ignores_the_order_of_points(mixer):
    net = lion(mixer, lion_generation=0.2, lion_window=3)
    points = torch.randn(3, 40, 3, generator=torch.Generator().manual_seed(1)) * 0.6
    out = net(points, labels=torch.tensor([0, 1, 2]))
    assert out.logits.shape == (3, 3) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in net.backbone.blocks.parameters() if p.requires_grad)
    shuffled = points[:, torch.randperm(40)]
    assert torch.allclose(net(points).logits, net(shuffled).logits, atol=1e-5)
    # each cloud is its own: a batch gives each row what it gives alone
    assert torch.allclose(net(points[1:2]).logits, net(points).logits[1:2], atol=1e-5)


def test_lion_options_are_checked():
    with pytest.raises(ValueError, match="input.point_model must be one of"):
        InputConfig(point_model="voxels")
    with pytest.raises(ValueError, match="input.lion_generation must be in"):
        InputConfig(lion_generation=1.5)
    with pytest.raises(ValueError, match="head.pooling must be 'last' or 'mean'"):
        SequenceModel(LMConfig(vocab_size=0, d_model=16, n_layers=1), InputConfig(kind="points", features=3, point_model="lion"),
                      HeadConfig(kind="classify", num_outputs=2, pooling="cls"))
