"""The PLRNNs' exact fixed points and cycles: the piecewise-affine map is the layer's own
recurrence, each region's affine piece is the map there, and a solved fixed point is a
fixed point of the layer's op to 1e-10 in float64."""

from __future__ import annotations

import pytest
import torch

from recur.analysis import PLRNNMap, piecewise_map
from recur.layers import build_mixer

M = 4
LAYERS = {
    "plrnn": ("plrnn", {}),
    "dendplrnn": ("dendplrnn", {"num_bases": 2}),
    "dendplrnn_clipped": ("dendplrnn", {"num_bases": 2, "clipped": True}),
    "shplrnn": ("shplrnn", {"hidden_dim": 5}),
    "shplrnn_clipped": ("shplrnn", {"hidden_dim": 5, "clipped": True}),
}


def layer_of(case: str, seed: int = 0):
    """A float64 layer whose map contracts (A and the couplings shrunk), with an offset h
    so that the fixed point is not at the origin."""
    name, options = LAYERS[case]
    torch.manual_seed(seed)
    layer = build_mixer(name, M, **options).double()
    d = layer.directions[0]
    with torch.no_grad():
        d.R.mul_(0.4)
        if name == "shplrnn":
            d.b[0, 0, :M].mul_(0.5)
            d.b[0, 0, M : 2 * M].normal_()
            d.b[0, 0, 2 * M :].normal_(std=0.5)
        else:
            d.b[0].mul_(0.5)
            d.b[1].normal_()
    return layer


def op_step(layer, z: torch.Tensor) -> torch.Tensor:
    """One step of the layer's op from z [N, M] without input."""
    y, _ = layer(torch.zeros(len(z), 1, M, dtype=torch.float64), {"z": z[:, None]})
    return y[:, 0]


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_the_map_is_the_layers_recurrence_and_affine_in_each_region(case):
    layer = layer_of(case)
    F = piecewise_map(layer)
    assert isinstance(F, PLRNNMap)
    z = 2 * torch.randn(64, M, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(F(z), op_step(layer, z), rtol=0, atol=1e-12)
    codes = F.regions(z)
    assert len(set(codes.tolist())) > 1, "the sample should cross regions"
    for point, code in zip(z, codes.tolist(), strict=True):
        J, c = F.affine(code)
        assert F.in_region(point, code)
        assert torch.allclose(J @ point + c, F(point), rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_fixed_points_are_fixed_points_of_the_op(case):
    layer = layer_of(case)
    F = piecewise_map(layer)
    points = F.fixed_points()
    assert points, f"{case}: a contracting map has a fixed point"
    for cycle in points:
        z = cycle.points
        assert (op_step(layer, z) - z).abs().max() <= 1e-10
        assert F.regions(z[0]) == cycle.regions[0] or F.in_region(z[0], cycle.regions[0], 1e-10)
    # contracting: one fixed point, stable, where every trajectory ends
    (point,) = points
    assert point.kind == "stable"
    end = F.trajectory(torch.randn(M, dtype=torch.float64), 400)[-1]
    assert torch.allclose(end, point.points[0], rtol=0, atol=1e-9)


def test_a_two_cycle_of_a_plrnn():
    # one unit: z' = 0.5 z + 0.5 for z ≤ 0, −1.5 z + 0.5 for z > 0 (A = 0.5, W = −2, h = 0.5;
    # W off-diagonal is not asked of a map built by hand). Fixed point 0.2 (slope −1.5,
    # unstable); the 2-cycle −1/7 -> 3/7 -> −1/7 (slope 0.5 · −1.5 = −0.75, stable)
    F = PLRNNMap(A=torch.tensor([0.5]), W=torch.tensor([[-2.0]]), V=torch.eye(1), h=torch.tensor([0.5]),
                 alpha=torch.ones(1, 1), theta=torch.zeros(1, 1))
    (fixed,) = F.fixed_points()
    assert torch.allclose(fixed.points, torch.tensor([[0.2]], dtype=torch.float64)) and fixed.kind == "unstable"
    (cycle,) = F.cycles(2)
    assert cycle.regions == (0, 1) and cycle.kind == "stable"
    assert torch.allclose(cycle.points, torch.tensor([[-1 / 7], [3 / 7]], dtype=torch.float64), rtol=0, atol=1e-15)


def test_regions_limit_the_search_and_bad_layers_are_named():
    layer = layer_of("plrnn")
    F = piecewise_map(layer)
    visited = F.regions(F.trajectory(torch.randn(M, dtype=torch.float64), 50)).unique().tolist()
    limited = [p.regions for p in F.fixed_points(regions=visited)]
    assert limited == [p.regions for p in F.fixed_points() if p.regions[0] in visited]
    with pytest.raises(ValueError, match="more than max_words"):
        F.cycles(5, max_words=100)
    with pytest.raises(TypeError, match="plrnn, dendplrnn or shplrnn"):
        piecewise_map(build_mixer("gru", M))
