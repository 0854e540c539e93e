"""What is specific to the grid family (pLSTM): the DAG forms against the grid forms and
against each other, 1-D pLSTM as gated linear attention, the two D-mode chiralities as
transposes of each other. The generic checks (every form against the spec, gradients,
bad arguments) run in test_families.py."""

from __future__ import annotations

import pytest
import torch

from recur.ops.gla import gla
from recur.ops.grid import GRID, GridState, d_mode, grid, grid_dag_inputs, levels_dag, naive_dag
from recur.ops.grid.dag import topological_order
from tests.helpers import assert_close, family_results, scalar_of

EXACT = 1e-10


def _grads(outputs, leaves: dict) -> dict:
    found = torch.autograd.grad(scalar_of(outputs), list(leaves.values()))
    return dict(zip(leaves, found, strict=True))


@pytest.mark.parametrize("dag_form", [naive_dag, levels_dag], ids=["naive_dag", "levels_dag"])
@pytest.mark.parametrize("case", GRID.cases)
def test_dag_forms_equal_the_grid_on_a_grid_graph(dag_form, case):
    example = GRID.example_inputs(4, case=case, width=3)
    expected = family_results(GRID, "naive", example)
    fresh = example.fresh()
    args, kwargs = grid_dag_inputs(*fresh.args, **fresh.kwargs)
    out, final = dag_form(*args, **kwargs)
    B, X, Y, H, _ = fresh.args[0].shape
    out = out.reshape(B, X, Y, H, -1)
    assert_close("output", out, expected["output"], EXACT)
    assert_close("final down", final[:, :Y], expected["final_state[0]"], EXACT)
    assert_close("final right", final[:, Y:], expected["final_state[1]"], EXACT)
    grads = _grads([out, final[:, :Y], final[:, Y:]], fresh.leaves())
    for name, grad in grads.items():
        assert_close(f"grad {name}", grad, expected[f"grad {name}"], EXACT)


def _random_dag(N: int, seed: int):
    """Forward edges between random node pairs, edges entering and leaving at random nodes,
    and a random half of the pairs through each node."""
    g = torch.Generator().manual_seed(seed)
    edges = [(a, b) for a in range(N) for b in range(a + 1, N) if torch.rand(1, generator=g) < 0.4]
    edges += [(-1, n) for n in range(N) if torch.rand(1, generator=g) < 0.5]
    edges += [(n, -1) for n in range(N) if torch.rand(1, generator=g) < 0.5]
    # nodes numbered against the topological order, so that the forms cannot rely on it
    relabel = torch.randperm(N, generator=g).tolist()
    edges = [(relabel[a] if a >= 0 else -1, relabel[b] if b >= 0 else -1) for a, b in edges]
    pairs = [
        (e_in, e_out)
        for e_in, (_, b) in enumerate(edges)
        for e_out, (a, _) in enumerate(edges)
        if b >= 0 and a == b and torch.rand(1, generator=g) < 0.6
    ]
    return torch.tensor(edges).reshape(-1, 2), torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_levels_dag_equals_the_loop_on_random_graphs(seed):
    N, B, H, K, V = 9, 2, 2, 3, 4
    edges, pairs = _random_dag(N, seed)
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape, low=-1.0, high=1.0):
        x = torch.rand(*shape, generator=g, dtype=torch.float64) * (high - low) + low
        return x.requires_grad_()

    E, P = edges.shape[0], pairs.shape[0]
    entering = int((edges[:, 0] == -1).sum())
    leaves = {
        "q": leaf(B, N, H, K), "k": leaf(B, N, H, K), "v": leaf(B, N, H, V), "source": leaf(B, E, H, low=0.0),
        "transition": leaf(B, P, H, low=-0.7, high=0.7), "mark": leaf(B, E, H, low=0.0),
        "direct": leaf(B, N, H, low=0.0), "initial_state": leaf(B, entering, H, K, V),
    }
    results = []
    for form in (naive_dag, levels_dag):
        kwargs = {name: x for name, x in leaves.items() if name not in ("q", "k", "v")}
        out, final = form(leaves["q"], leaves["k"], leaves["v"], edges=edges, pairs=pairs, **kwargs)
        results.append((out, final, _grads([out, final], leaves)))
    (out_a, final_a, grads_a), (out_b, final_b, grads_b) = results
    assert_close("output", out_b, out_a, EXACT)
    assert_close("final", final_b, final_a, EXACT)
    for name in leaves:
        assert_close(f"grad {name}", grads_b[name], grads_a[name], EXACT)


def test_a_cycle_is_refused():
    with pytest.raises(ValueError, match="edges must form a directed acyclic graph"):
        topological_order(3, [(0, 1), (1, 2), (2, 0)])


def test_one_row_is_gated_linear_attention():
    """On a 1 × W grid with nothing entering at the top, pLSTM with transition = mark = a,
    source 1 and direct 1 reads h_j = qᵀ(a_j C_{j-1} + k_j v_jᵀ): GLA with a per-head decay."""
    example = GRID.example_inputs(1, case="P", width=9)
    q, k, v = (x.detach() for x in example.args)
    B, _, W, H, K = q.shape
    V = v.shape[-1]
    a = torch.rand(B, 1, W, H, dtype=torch.float64) * 0.9 + 0.05
    S0 = torch.randn(B, H, K, V, dtype=torch.float64)
    state = GridState(torch.zeros(B, W, H, K, V, dtype=torch.float64), S0[:, None])
    h, final = grid(
        q, k, v, transition_rl=a, mark_l=a, direct=torch.ones_like(a), scale=0.5,
        initial_state=state, output_final_state=True,
    )
    o, S = gla(q[:, 0], k[:, 0], v[:, 0], g=a[:, 0].log(), scale=0.5, initial_state=S0, output_final_state=True)
    assert_close("output", h[:, 0], o, EXACT)
    assert_close("final state", final.right[:, 0], S, EXACT)


def test_the_two_chiralities_are_transposes():
    """D-mode turning right-to-down (R) is D-mode turning down-to-right (L) on the
    transposed grid, with right and down (and left and up) swapped."""
    example = GRID.example_inputs(4, case="D", width=6)
    q, k, v = (x.detach() for x in example.args)
    B, X, Y, H, _ = q.shape
    g = torch.Generator().manual_seed(3)
    s_r, s_d, t_r, t_d, turn, m_l, m_u = (torch.rand(B, X, Y, H, generator=g, dtype=torch.float64) for _ in range(7))
    state = GridState(*(s.detach() for s in example.kwargs["initial_state"]))
    h, final = grid(q, k, v, **d_mode(s_r, s_d, t_r, t_d, turn, m_l, m_u, chirality="R"), initial_state=state,
                    output_final_state=True)

    def t(x):
        return x.transpose(1, 2)

    h_t, final_t = grid(
        t(q), t(k), t(v), **d_mode(t(s_d), t(s_r), t(t_d), t(t_r), t(turn), t(m_u), t(m_l), chirality="L"),
        initial_state=GridState(state.right, state.down), output_final_state=True,
    )
    assert_close("output", t(h_t), h, EXACT)
    assert_close("final down", final_t.right, final.down, EXACT)
    assert_close("final right", final_t.down, final.right, EXACT)


def test_cu_seqlens_is_refused_for_grids():
    example = GRID.example_inputs(3)
    with pytest.raises(ValueError, match="cu_seqlens must be None"):
        grid(*example.args, **example.kwargs, cu_seqlens=torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="no single step"):
        GRID.step(*example.args, **example.kwargs)


def test_bench_rows_agree_and_memory_grows_with_the_cells():
    from recur.bench.measure import saved_for_backward_bytes
    from recur.bench.ops import OP_BENCHES

    cases = {case.form: case for case in OP_BENCHES["grid"].build(T=5, device=torch.device("cpu"), dtype=torch.float64)}
    expected = cases["naive"].run()
    assert_close("wavefront", cases["wavefront"].run(), expected, EXACT)
    assert_close("levels (DAG)", cases["levels (DAG)"].run().reshape(expected.shape), expected, EXACT)
    small, large = (
        saved_for_backward_bytes(OP_BENCHES["grid"].build(T=T, device=torch.device("cpu"), dtype=torch.float64)[1].run)
        for T in (8, 16)
    )
    # four times the cells: about four times the memory (the boundary adds a little)
    assert 3.5 < large / small < 4.5, (small, large)
