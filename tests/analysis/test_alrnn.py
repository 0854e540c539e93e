"""AL-RNN symbolic analysis: cycles of a map solved by hand, regions against signs, exactness."""

from __future__ import annotations

import pytest
import torch

from recur.analysis import PiecewiseLinearMap, draw_transition_graph, transition_graph
from recur.layers import build_mixer


def hand_map() -> PiecewiseLinearMap:
    """z1' = z1/2 + relu(z2), z2' = z2/4 − 9/4 relu(z2) + 1 (P = 1: z2 is the ReLU unit).
    Region 1 (z2 > 0): fixed point (2/3, 1/3), eigenvalues 1/2 and −2. The 2-cycle
    (10/9, −2/3) in region 0 -> (5/9, 5/6) in region 1, composed eigenvalues 1/4 and −1/2."""
    A = torch.tensor([0.5, 0.25])
    W = torch.tensor([[0.0, 1.0], [0.0, -2.25]])
    return PiecewiseLinearMap(A, W, torch.tensor([0.0, 1.0]), num_relu=1)


def random_map(M: int = 6, P: int = 2, seed: int = 0) -> PiecewiseLinearMap:
    g = torch.Generator().manual_seed(seed)
    A = torch.rand(M, generator=g, dtype=torch.float64) * 0.9
    W = torch.randn(M, M, generator=g, dtype=torch.float64) * 0.8
    return PiecewiseLinearMap(A, W, torch.randn(M, generator=g, dtype=torch.float64), num_relu=P)


def test_the_hand_built_maps_fixed_point_and_two_cycle():
    F = hand_map()
    (fixed,) = F.fixed_points()
    assert fixed.regions == (1,)
    torch.testing.assert_close(fixed.points[0], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(fixed.eigenvalues.real.sort().values, torch.tensor([-2.0, 0.5], dtype=torch.float64))
    assert fixed.kind == "saddle"
    (cycle,) = F.cycles(2)
    assert cycle.regions == (0, 1)
    expected = torch.tensor([[10 / 9, -2 / 3], [5 / 9, 5 / 6]], dtype=torch.float64)
    torch.testing.assert_close(cycle.points, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(cycle.eigenvalues.real.sort().values, torch.tensor([-0.5, 0.25], dtype=torch.float64))
    assert cycle.kind == "stable"
    # the stable 2-cycle attracts: a trajectory ends on it and its code alternates 0, 1
    path = F.trajectory(torch.tensor([3.0, 2.0]), 200)
    assert torch.allclose(path[-2:].sort(0).values, expected.sort(0).values, atol=1e-9)
    graph = transition_graph(F.regions(path[100:]), F.num_relu)
    assert graph.regions == (0, 1) and graph.counts.tolist() == [[0, 50], [50, 0]]
    assert graph.probabilities.tolist() == [[0.0, 1.0], [1.0, 0.0]]


# seeds whose maps have cycles (seed 5: two 3-cycles besides its fixed points)
@pytest.mark.parametrize("seed", [0, 4, 5, 6])
def test_found_cycles_are_exact(seed):
    F = random_map(seed=seed)
    found = 0
    for period in (1, 2, 3):
        for cycle in F.cycles(period):
            found += 1
            assert cycle.points.shape == (period, F.dim)
            z = cycle.points[0]
            for i, code in enumerate(cycle.regions):
                assert torch.equal(z, cycle.points[i]) or torch.allclose(z, cycle.points[i], rtol=0, atol=1e-10)
                assert F.in_region(z, code, tol=1e-10)
                z = F(z)
            assert torch.allclose(z, cycle.points[0], rtol=0, atol=1e-10), (seed, period, cycle.regions)
            # the eigenvalues are those of the k-fold map's Jacobian, by autograd
            J = torch.autograd.functional.jacobian(lambda s, k=period: _iterate(F, s, k), cycle.points[0])
            torch.testing.assert_close(
                torch.linalg.eigvals(J).abs().sort().values, cycle.eigenvalues.abs().sort().values, rtol=1e-9, atol=1e-9
            )
    assert found > 0


def _iterate(F, z, k):
    for _ in range(k):
        z = F(z)
    return z


def test_cycles_are_listed_once_and_at_their_own_period():
    F = random_map(seed=1)
    ones = {c.regions for c in F.cycles(1)}
    fours = F.cycles(4)
    for cycle in fours:
        # no 4-cycle is a fixed point or a 2-cycle gone round twice
        assert len({tuple(p.tolist()) for p in cycle.points}) == 4
        assert cycle.regions == min(cycle.regions[i:] + cycle.regions[:i] for i in range(4))
    assert len({c.regions for c in fours}) == len(fours)
    assert len(ones) == len(F.cycles(1))


def test_regions_of_a_trajectory_match_the_signs():
    F = random_map(M=5, P=3, seed=2)
    path = F.trajectory(torch.randn(5, dtype=torch.float64), 50)
    codes = F.regions(path)
    for z, code in zip(path, codes.tolist(), strict=True):
        signs = [int(z[i] > 0) for i in (2, 3, 4)]
        assert code == signs[0] * 4 + signs[1] * 2 + signs[2]
        assert F.pattern(code).tolist() == signs
        # inside its region the map is the affine J_d z + h
        torch.testing.assert_close(F(z), F.jacobian(code) @ z + F.h, rtol=1e-14, atol=1e-12)
    graph = transition_graph(codes, 3)
    assert int(graph.counts.sum()) == 50 and set(graph.regions) == set(codes.tolist())
    assert torch.allclose(graph.probabilities.sum(1)[graph.counts.sum(1) > 0], torch.ones(1, dtype=torch.float64))


def test_the_map_of_a_layer_is_the_layers_recurrence():
    torch.manual_seed(0)
    layer = build_mixer("alrnn", d_model=8, num_relu=3, num_heads=2).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(1, 1, 8, dtype=torch.float64)
    z0 = torch.randn(1, 2, 4, dtype=torch.float64)
    out, _ = layer(x.expand(1, 20, 8), {"z": z0})
    for head in range(2):
        F = PiecewiseLinearMap.from_layer(layer, head=head, input=x[0, 0])
        path = F.trajectory(z0[0, head], 20)[1:]
        torch.testing.assert_close(path, out[0, :, head * 4:(head + 1) * 4], rtol=0, atol=1e-12)


def test_bad_arguments_are_named():
    F = hand_map()
    with pytest.raises(ValueError, match="max_words"):
        F.cycles(20)
    with pytest.raises(ValueError, match="period"):
        F.cycles(0)
    with pytest.raises(ValueError, match="W must have shape"):
        PiecewiseLinearMap(torch.ones(2), torch.ones(3, 3), torch.ones(2), 1)
    with pytest.raises(TypeError, match="ALRNN"):
        PiecewiseLinearMap.from_layer(build_mixer("gru", d_model=4))


def test_draw_transition_graph(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    F = random_map(seed=3)
    graph = transition_graph(F.regions(F.trajectory(torch.randn(6, dtype=torch.float64), 300)), F.num_relu)
    ax = draw_transition_graph(graph, cycles=F.cycles(1) + F.cycles(2))
    ax.figure.savefig(tmp_path / "graph.png")
    assert (tmp_path / "graph.png").stat().st_size > 1000
