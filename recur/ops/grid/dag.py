"""pLSTM on a directed acyclic graph: a loop over nodes, and a level-wise parallel form.

pLSTM (arXiv:2506.11997), §"pLSTM on DAGs": states live on edges. Node n with incoming
edges e and outgoing edges e' computes

    C_e' = Σ_e T^n_{e'e} C_e + S^n_e' k_n v_nᵀ,      h_n = scale · (Σ_e M^n_e q_nᵀ C_e + D_n (q_n·k_n) v_n)

A graph is given by `edges` [E, 2] (source node, target node), where source -1 is an edge
entering the graph (its state comes from `initial_state`) and target -1 one leaving it
(its state is returned), and by `pairs` [P, 2] (incoming edge, outgoing edge) through a
node: the transitions T (a pair that is not listed has T = 0). Gates are per edge (sources
by their source node, marks by their target node), per pair and per node. `grid_graph` and
`grid_dag_inputs` lay a 2-D grid out this way; the grid forms compute the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..common import resolve_scale, state_dtype


def check_dag_inputs(q, k, v, *, edges, pairs, source, transition, mark, direct, initial_state) -> None:
    """Shapes, dtypes and index ranges of a DAG call; raises naming the argument."""
    for name, x, rank in (("q", q, 4), ("k", k, 4), ("v", v, 4)):
        if not isinstance(x, torch.Tensor) or x.dim() != rank or not x.is_floating_point():
            got = f"{x.dtype} {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a floating tensor [B, N, H, {'V' if name == 'v' else 'K'}]; got {got}")
    if k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"k {list(k.shape)} and v {list(v.shape)} must match q {list(q.shape)} on [B, N, H]")
    B, N, H, _ = q.shape
    for name, x in (("edges", edges), ("pairs", pairs)):
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != 2 or x.dtype != torch.long:
            got = f"{x.dtype} {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be an int64 tensor [*, 2]; got {got}")
    if edges.numel() and (edges.min() < -1 or edges.max() >= N):
        raise ValueError(f"edges must hold node indices in [-1, {N}); got values in [{edges.min()}, {edges.max()}]")
    E, P = edges.shape[0], pairs.shape[0]
    if pairs.numel() and (pairs.min() < 0 or pairs.max() >= E):
        raise ValueError(f"pairs must hold edge indices in [0, {E}); got values in [{pairs.min()}, {pairs.max()}]")
    if P and not bool((edges[pairs[:, 0], 1] == edges[pairs[:, 1], 0]).all() and (edges[pairs[:, 0], 1] >= 0).all()):
        raise ValueError("pairs must join an edge into a node with an edge out of the same node")
    for name, x, shape in (("source", source, [B, E, H]), ("mark", mark, [B, E, H]), ("transition", transition, [B, P, H]),
                           ("direct", direct, [B, N, H])):
        if x is not None and (list(x.shape) != shape or not x.is_floating_point()):
            raise ValueError(f"{name} must be a floating tensor {shape}; got {x.dtype} {list(x.shape)}")
    entering = int((edges[:, 0] == -1).sum())
    if initial_state is not None and list(initial_state.shape) != [B, entering, H, q.shape[-1], v.shape[-1]]:
        raise ValueError(
            f"initial_state must have shape {[B, entering, H, q.shape[-1], v.shape[-1]]} (one state per entering edge); "
            f"got {list(initial_state.shape)}"
        )


def topological_order(num_nodes: int, edges: list[tuple[int, int]]) -> list[int]:
    """The nodes in an order where every edge goes forward (Kahn's algorithm, smallest first)."""
    indegree = [0] * num_nodes
    children: list[list[int]] = [[] for _ in range(num_nodes)]
    for a, b in edges:
        if a >= 0 and b >= 0:
            indegree[b] += 1
            children[a].append(b)
    ready = [n for n in range(num_nodes) if indegree[n] == 0]
    order = []
    while ready:
        n = ready.pop()
        order.append(n)
        for c in children[n]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    if len(order) != num_nodes:
        raise ValueError(f"edges must form a directed acyclic graph; {num_nodes - len(order)} nodes lie on a cycle")
    return order


def naive_dag(q, k, v, *, edges, pairs, source, transition, mark, direct=None, scale=None, initial_state=None):
    """pLSTM on a DAG, one node at a time in topological order.

    Args:
        q, k: [B, N, H, K]; v: [B, N, H, V], one row per node.
        edges: [E, 2] int64 (source node, target node); -1 for outside the graph.
        pairs: [P, 2] int64 (incoming edge, outgoing edge) through one node.
        source: S [B, E, H], by edge (read at its source node).
        transition: T [B, P, H], by pair.
        mark: M [B, E, H], by edge (read at its target node).
        direct: D [B, N, H] or None (no direct term).
        scale: output scale; K ** -0.5 when None.
        initial_state: [B, E_in, H, K, V], the states of the entering edges in edge order,
            or None for zeros.

    Returns:
        (h [B, N, H, V], the states of the leaving edges in edge order [B, E_out, H, K, V]).
    """
    check_dag_inputs(q, k, v, edges=edges, pairs=pairs, source=source, transition=transition, mark=mark,
                     direct=direct, initial_state=initial_state)
    B, N, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)
    dtype = state_dtype(q, v)
    edge_list = [tuple(e) for e in edges.tolist()]
    incoming: list[list[int]] = [[] for _ in range(N)]
    outgoing: list[list[int]] = [[] for _ in range(N)]
    for e, (a, b) in enumerate(edge_list):
        if a >= 0:
            outgoing[a].append(e)
        if b >= 0:
            incoming[b].append(e)
    into: dict[int, list[tuple[int, int]]] = {}
    for p, (e_in, e_out) in enumerate(pairs.tolist()):
        into.setdefault(e_out, []).append((p, e_in))
    entering = [e for e, (a, _) in enumerate(edge_list) if a == -1]
    zeros = q.new_zeros(B, H, K, V, dtype=dtype)
    given = [zeros] * len(entering) if initial_state is None else initial_state.to(dtype).unbind(1)
    state = dict(zip(entering, given, strict=True))
    q_n, k_n, v_n = (x.to(dtype).unbind(1) for x in (q, k, v))
    S, M = (g.to(dtype)[..., None, None].unbind(1) for g in (source, mark))
    T = transition.to(dtype)[..., None, None].unbind(1)
    D = None if direct is None else direct.to(dtype).unbind(1)
    outputs = [None] * N
    for n in topological_order(N, edge_list):
        # the node's pair k vᵀ: [B, H, K, V]
        kv = k_n[n][..., :, None] * v_n[n][..., None, :]
        # mark: Σ_e M_e C_e over the incoming edges, [B, H, K, V]
        marked = sum((M[e] * state[e] for e in incoming[n]), zeros)
        # output: the query reads the marked states, plus the direct term, [B, H, V]
        h = torch.einsum("bhk,bhkv->bhv", q_n[n], marked)
        if D is not None:
            h = h + D[n][..., None] * (q_n[n] * k_n[n]).sum(-1, keepdim=True) * v_n[n]
        outputs[n] = scale * h
        # transition and source: C_e' = Σ_e T_e'e C_e + S_e' k vᵀ on each outgoing edge
        for e_out in outgoing[n]:
            state[e_out] = sum((T[p] * state[e_in] for p, e_in in into.get(e_out, [])), S[e_out] * kv)
    out = torch.stack(outputs, dim=1) if N else q.new_zeros(B, 0, H, V, dtype=dtype)
    leaving = [state[e] for e, (_, b) in enumerate(edge_list) if b == -1]
    final = torch.stack(leaving, dim=1) if leaving else q.new_zeros(B, 0, H, K, V, dtype=dtype)
    return out.to(v.dtype), final


@dataclass
class _Reads:
    """Reads of the states of one edge group by the nodes (or outgoing edges) of a level:
    positions in the group, positions in the level, and the gate's index in the level."""

    group: int
    positions: torch.Tensor
    targets: torch.Tensor
    gates: torch.Tensor


@dataclass
class _Level:
    nodes: list[int]
    marks: list[int]  # the edges the level's nodes read, in the order of `mark_reads`
    mark_reads: list[_Reads]
    out_edges: list[int]
    out_sources: torch.Tensor  # for each outgoing edge, its source node's position in the level
    pairs: list[int]
    pair_reads: list[_Reads]


def _plan(N: int, edge_list: list[tuple[int, int]], pair_list: list[tuple[int, int]], device) -> tuple[list[_Level], list[int], dict[int, tuple[int, int]]]:
    """Levels (a node's level is one more than its deepest parent's), the group of each
    edge (0: entering; L + 1: leaving a node of level L) and its position in it."""
    order = topological_order(N, edge_list)
    incoming: list[list[int]] = [[] for _ in range(N)]
    outgoing: list[list[int]] = [[] for _ in range(N)]
    for e, (a, b) in enumerate(edge_list):
        if a >= 0:
            outgoing[a].append(e)
        if b >= 0:
            incoming[b].append(e)
    level = [0] * N
    for n in order:
        level[n] = max((level[edge_list[e][0]] + 1 for e in incoming[n] if edge_list[e][0] >= 0), default=0)
    depth = max(level, default=-1) + 1
    nodes_at: list[list[int]] = [[] for _ in range(depth)]
    for n in range(N):
        nodes_at[level[n]].append(n)
    where: dict[int, tuple[int, int]] = {}
    entering = [e for e, (a, _) in enumerate(edge_list) if a == -1]
    where.update((e, (0, i)) for i, e in enumerate(entering))
    into: dict[int, list[int]] = {}
    for p, (_, e_out) in enumerate(pair_list):
        into.setdefault(e_out, []).append(p)
    long = {"dtype": torch.long, "device": device}

    def reads(items: list[tuple[int, int, int]]) -> list[_Reads]:
        """(edge, target position, gate position) grouped by the edge's group."""
        groups: dict[int, list[tuple[int, int, int]]] = {}
        for e, target, gate in items:
            groups.setdefault(where[e][0], []).append((where[e][1], target, gate))
        return [
            _Reads(g, *(torch.tensor(column, **long) for column in zip(*rows, strict=True)))
            for g, rows in sorted(groups.items())
        ]

    levels = []
    for L, nodes in enumerate(nodes_at):
        position = {n: i for i, n in enumerate(nodes)}
        marks = [e for n in nodes for e in incoming[n]]
        mark_reads = reads([(e, position[edge_list[e][1]], i) for i, e in enumerate(marks)])
        out_edges = [e for n in nodes for e in outgoing[n]]
        where.update((e, (L + 1, i)) for i, e in enumerate(out_edges))
        pairs = [p for e in out_edges for p in into.get(e, [])]
        pair_reads = reads([(pair_list[p][0], where[pair_list[p][1]][1], i) for i, p in enumerate(pairs)])
        sources = torch.tensor([position[edge_list[e][0]] for e in out_edges], **long)
        levels.append(_Level(nodes, marks, mark_reads, out_edges, sources, pairs, pair_reads))
    return levels, entering, where


def levels_dag(q, k, v, *, edges, pairs, source, transition, mark, direct=None, scale=None, initial_state=None):
    """pLSTM on a DAG, one level (topological front) at a time, the nodes of a level all at
    once; the arguments and results of `naive_dag`."""
    check_dag_inputs(q, k, v, edges=edges, pairs=pairs, source=source, transition=transition, mark=mark,
                     direct=direct, initial_state=initial_state)
    B, N, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)
    dtype = state_dtype(q, v)
    edge_list = [tuple(e) for e in edges.tolist()]
    levels, entering, where = _plan(N, edge_list, [tuple(p) for p in pairs.tolist()], q.device)
    # everything gathered once into level order, then split per level
    long = {"dtype": torch.long, "device": q.device}
    sizes = [len(level.nodes) for level in levels]

    def per_level(x: torch.Tensor | None, index: list[list[int]]) -> list:
        if x is None:
            return [None] * len(levels)
        flat = torch.tensor([i for part in index for i in part], **long)
        return list(x.to(dtype).index_select(1, flat).split([len(part) for part in index], dim=1))

    node_index = [level.nodes for level in levels]
    q_l, k_l, v_l, d_l = (per_level(x, node_index) for x in (q, k, v, direct))
    m_l = per_level(mark, [level.marks for level in levels])
    s_l = per_level(source, [level.out_edges for level in levels])
    t_l = per_level(transition, [level.pairs for level in levels])
    states = [
        q.new_zeros(B, len(entering), H, K, V, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    ]
    outputs = []
    for L, level in enumerate(levels):
        n = sizes[L]
        kv = k_l[L][..., :, None] * v_l[L][..., None, :]
        marked = q.new_zeros(B, n, H, K, V, dtype=dtype)
        for r in level.mark_reads:
            gated = m_l[L][:, r.gates, :, None, None] * states[r.group][:, r.positions]
            marked = marked.index_add(1, r.targets, gated)
        h = torch.einsum("bnhk,bnhkv->bnhv", q_l[L], marked)
        if d_l[L] is not None:
            h = h + d_l[L][..., None] * (q_l[L] * k_l[L]).sum(-1, keepdim=True) * v_l[L]
        outputs.append(scale * h)
        new = s_l[L][..., None, None] * kv[:, level.out_sources]
        for r in level.pair_reads:
            new = new.index_add(1, r.targets, t_l[L][:, r.gates, :, None, None] * states[r.group][:, r.positions])
        states.append(new)
    if N:
        order = torch.tensor([n for level in levels for n in level.nodes], **long)
        out = torch.cat(outputs, dim=1).index_select(1, torch.argsort(order))
    else:
        out = q.new_zeros(B, 0, H, V, dtype=dtype)
    offsets = [0]
    for s in states:
        offsets.append(offsets[-1] + s.shape[1])
    leaving = torch.tensor(
        [offsets[where[e][0]] + where[e][1] for e, (_, b) in enumerate(edge_list) if b == -1], **long
    )
    final = torch.cat(states, dim=1).index_select(1, leaving)
    return out.to(v.dtype), final


class GridGraph(NamedTuple):
    """A grid of X × Y cells as a DAG (node i·Y + j is cell (i, j)). Edges: entering at the
    top (one per column), at the left (one per row), the inner ones, leaving at the bottom
    (per column) and at the right (per row), in this order, so that the entering and leaving
    states are `GridState`'s down and right concatenated. The indices map the grid's gates
    onto the graph's: `source_index` into [s_r, s_d] stacked per node, `mark_index` into
    [m_l, m_u], `transition_index` into [t_rl, t_ru, t_dl, t_du]."""

    edges: torch.Tensor
    pairs: torch.Tensor
    source_index: torch.Tensor
    mark_index: torch.Tensor
    transition_index: torch.Tensor


def grid_graph(X: int, Y: int) -> GridGraph:
    """The grid of X rows and Y columns as a DAG; see `GridGraph`."""
    edges: list[tuple[int, int]] = []
    out_r, out_d, in_l, in_u = {}, {}, {}, {}

    def add(a: int, b: int, travels: str) -> None:
        e = len(edges)
        edges.append((a, b))
        if a >= 0:
            (out_r if travels == "right" else out_d)[a] = e
        if b >= 0:
            (in_l if travels == "right" else in_u)[b] = e

    def cell(i: int, j: int) -> int:
        return i * Y + j

    for j in range(Y):
        add(-1, cell(0, j), "down")
    for i in range(X):
        add(-1, cell(i, 0), "right")
    for i in range(X):
        for j in range(Y):
            if j + 1 < Y:
                add(cell(i, j), cell(i, j + 1), "right")
            if i + 1 < X:
                add(cell(i, j), cell(i + 1, j), "down")
    for j in range(Y):
        add(cell(X - 1, j), -1, "down")
    for i in range(X):
        add(cell(i, Y - 1), -1, "right")
    source_index = [0] * len(edges)
    mark_index = [0] * len(edges)
    for n, e in out_r.items():
        source_index[e] = 2 * n
    for n, e in out_d.items():
        source_index[e] = 2 * n + 1
    for n, e in in_l.items():
        mark_index[e] = 2 * n
    for n, e in in_u.items():
        mark_index[e] = 2 * n + 1
    pairs, transition_index = [], []
    for n in range(X * Y):
        for t, (outgoing, incoming) in enumerate(((out_r, in_l), (out_r, in_u), (out_d, in_l), (out_d, in_u))):
            pairs.append((incoming[n], outgoing[n]))
            transition_index.append(4 * n + t)
    return GridGraph(
        torch.tensor(edges, dtype=torch.long).reshape(-1, 2),
        torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
        torch.tensor(source_index, dtype=torch.long),
        torch.tensor(mark_index, dtype=torch.long),
        torch.tensor(transition_index, dtype=torch.long),
    )


def grid_dag_inputs(q, k, v, *, scale=None, initial_state=None, direct=None, **gates) -> tuple[tuple, dict]:
    """The arguments of a grid call (those of `naive_grid`) as those of `naive_dag` on
    `grid_graph(X, Y)`: (args, kwargs). The DAG's output is the grid's reshaped to [B, X, Y,
    H, V]; its final state is `GridState`'s down and right concatenated on dim 1."""
    B, X, Y, H, _ = q.shape
    graph = grid_graph(X, Y)
    index = {name: i.to(q.device) for name, i in graph._asdict().items()}

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(B, X * Y, *x.shape[3:])

    def on_graph(names: tuple[str, ...], absent: float, which: str) -> torch.Tensor:
        parts = [gates[n] if gates.get(n) is not None else q.new_full((B, X, Y, H), absent) for n in names]
        return torch.stack(parts, dim=3).reshape(B, X * Y * len(names), H).index_select(1, index[which])

    kwargs = {
        "edges": index["edges"],
        "pairs": index["pairs"],
        "source": on_graph(("source_r", "source_d"), 1.0, "source_index"),
        "mark": on_graph(("mark_l", "mark_u"), 1.0, "mark_index"),
        "transition": on_graph(("transition_rl", "transition_ru", "transition_dl", "transition_du"), 0.0, "transition_index"),
        "direct": None if direct is None else flat(direct),
        "scale": scale,
        "initial_state": None if initial_state is None else torch.cat(tuple(initial_state), dim=1),
    }
    return (flat(q), flat(k), flat(v)), kwargs
