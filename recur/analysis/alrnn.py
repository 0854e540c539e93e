"""Symbolic analysis of the AL-RNN: linear subregions, symbolic codes, transition graphs,
and its fixed points and k-cycles solved exactly.

Almost-Linear RNNs Yield Highly Interpretable Symbolic Codes in Dynamical Systems
Reconstruction (Brenner, Hemmer, Monfared, Durstewitz; NeurIPS 2024, arXiv:2410.14240):

    z_t = A ⊙ z_{t-1} + W φ*(z_{t-1}) + h,   φ* = ReLU on the last P units, identity elsewhere

The sign pattern d ∈ {0, 1}^P of the P ReLU units picks one of 2^P linear subregions; in
region d the map is affine, z ↦ J_d z + h with J_d = diag(A) + W D_d and D_d = diag(1, …, 1, d).
A trajectory's sequence of regions is its symbolic code. A k-cycle through regions
d_1, …, d_k is the fixed point of the composed affine map, one linear solve, and it is a
true cycle only if each of its points lies in the region it was solved for.

Regions are numbered by their pattern read as a binary number, the first ReLU unit the
most significant bit: `region_name(code, P)` gives "10" for the first unit on, the second off.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Cycle:
    """A k-cycle of the map (k = 1: a fixed point)."""

    # the region code of each point, in the order the map visits them
    regions: tuple[int, ...]
    # [k, M] float64: z_1, …, z_k with F(z_i) = z_{i+1} and F(z_k) = z_1
    points: torch.Tensor
    # [M] complex: eigenvalues of the Jacobian of the k-fold map, J_{d_k} ⋯ J_{d_1}
    eigenvalues: torch.Tensor

    @property
    def period(self) -> int:
        return len(self.regions)

    @property
    def kind(self) -> str:
        """"stable" (every |λ| < 1), "unstable" (every |λ| > 1) or "saddle"."""
        moduli = self.eigenvalues.abs()
        if bool((moduli < 1).all()):
            return "stable"
        if bool((moduli > 1).all()):
            return "unstable"
        return "saddle"


@dataclass
class TransitionGraph:
    """Transitions between the regions a symbolic sequence visits."""

    # region codes of the nodes, in the order of the rows of `counts`
    regions: tuple[int, ...]
    # [n, n] int64: counts[i, j] = steps from regions[i] to regions[j]
    counts: torch.Tensor
    num_relu: int

    @property
    def probabilities(self) -> torch.Tensor:
        """[n, n] float64: the empirical transition matrix (rows sum to 1; a node never left is 0)."""
        counts = self.counts.double()
        return counts / counts.sum(1, keepdim=True).clamp_min(1)

    @property
    def occupancy(self) -> torch.Tensor:
        """[n] float64: the share of steps spent leaving each region."""
        counts = self.counts.sum(1).double()
        return counts / counts.sum().clamp_min(1)

    @property
    def names(self) -> list[str]:
        return [region_name(code, self.num_relu) for code in self.regions]


def region_name(code: int, num_relu: int) -> str:
    """The sign pattern of region `code` as "1"/"0" per ReLU unit, the first unit first."""
    return format(code, f"0{num_relu}b") if num_relu else "-"


class PiecewiseLinearMap:
    """The autonomous AL-RNN map F(z) = A ⊙ z + W φ*(z) + h of one head, in float64.

    A [M], W [M, M], h [M]; the last `num_relu` units are the ReLU ones.
    """

    def __init__(self, A: torch.Tensor, W: torch.Tensor, h: torch.Tensor, num_relu: int) -> None:
        A, W, h = (torch.as_tensor(t).detach().to(torch.float64).cpu() for t in (A, W, h))
        if A.dim() != 1:
            raise ValueError(f"A must be a vector [M]; got shape {list(A.shape)}")
        M = A.shape[0]
        if W.shape != (M, M):
            raise ValueError(f"W must have shape [M, M] = [{M}, {M}]; got {list(W.shape)}")
        if h.shape != (M,):
            raise ValueError(f"h must have shape [M] = [{M}]; got {list(h.shape)}")
        if not isinstance(num_relu, int) or not 0 <= num_relu <= M:
            raise ValueError(f"num_relu must be an int in [0, M = {M}]; got {num_relu!r}")
        self.A, self.W, self.h, self.num_relu = A, W, h, num_relu

    @classmethod
    def from_layer(cls, layer: nn.Module, *, head: int = 0, input: torch.Tensor | None = None) -> PiecewiseLinearMap:
        """The map of one head of an `recur.layers.ALRNN` layer. Its cell reads
        W = R[0, head], A = b[0, head], h = b[1, head]; a constant layer `input` [d_model]
        adds its projection B x to h (None: the autonomous map, x = 0)."""
        if getattr(layer, "name", None) != "alrnn":
            raise TypeError(f"layer must be an ALRNN layer (recur.layers.ALRNN); got {type(layer).__name__}")
        if not layer.causal:
            raise ValueError("layer is bidirectional: its backward direction is no map of the past")
        if not 0 <= head < layer.heads:
            raise ValueError(f"head must be in [0, {layer.heads}); got {head}")
        direction = layer.directions[0]
        h = direction.b[1, head]
        if input is not None:
            drive = layer.input_gates(direction, input.reshape(1, 1, -1).to(direction.in_proj.weight.dtype))
            h = h + drive[0, 0, 0, head]
        return cls(direction.b[0, head], direction.R[0, head], h, layer.cell.num_relu)

    @property
    def dim(self) -> int:
        return self.A.shape[0]

    @property
    def num_regions(self) -> int:
        return 2**self.num_relu

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., M] -> F(z) [..., M]."""
        linear, piecewise = z.split([self.dim - self.num_relu, self.num_relu], dim=-1)
        phi = torch.cat([linear, piecewise.clamp_min(0)], dim=-1)
        return self.A * z + phi @ self.W.T + self.h

    def trajectory(self, z0: torch.Tensor, steps: int) -> torch.Tensor:
        """[steps + 1, M]: z0 and the `steps` states the map takes it to."""
        z = torch.as_tensor(z0, dtype=torch.float64)
        states = [z]
        for _ in range(steps):
            z = self(z)
            states.append(z)
        return torch.stack(states)

    def patterns(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., M] -> [..., P] bool: which ReLU units are on (z > 0)."""
        return z[..., self.dim - self.num_relu:] > 0

    def regions(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., M] -> [...] int64: the region code of each state, its symbolic sequence
        for a trajectory [T, M]."""
        bits = 2 ** torch.arange(self.num_relu - 1, -1, -1)
        return (self.patterns(z).long() * bits).sum(-1)

    def pattern(self, code: int) -> torch.Tensor:
        """[P] float64 of 0/1: the sign pattern of region `code`."""
        if not 0 <= code < self.num_regions:
            raise ValueError(f"region code must be in [0, {self.num_regions}); got {code}")
        return torch.tensor([(code >> (self.num_relu - 1 - i)) & 1 for i in range(self.num_relu)], dtype=torch.float64)

    def jacobian(self, code: int) -> torch.Tensor:
        """[M, M]: J_d = diag(A) + W D_d, the map's matrix in region `code`."""
        D = torch.cat([torch.ones(self.dim - self.num_relu, dtype=torch.float64), self.pattern(code)])
        return torch.diag(self.A) + self.W * D

    def in_region(self, z: torch.Tensor, code: int, tol: float = 0.0) -> bool:
        """Whether z lies in region `code`, a unit within `tol` of 0 counting as either side
        (the map is continuous, so a point on a border belongs to both regions)."""
        relu = z[self.dim - self.num_relu:]
        on = self.pattern(code).bool()
        return bool(torch.where(on, relu >= -tol, relu <= tol).all())

    def affine(self, code: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(J_d, c_d): the map in region `code` is z ↦ J_d z + c_d (here c_d = h)."""
        return self.jacobian(code), self.h

    def cycles(self, period: int, *, tol: float = 1e-10, max_words: int = 1 << 16,
               regions: Sequence[int] | None = None) -> list[Cycle]:
        """Every cycle of exactly `period` steps, each once (the rotation that starts at its
        smallest region word): for each word d_1 … d_k of regions, solve
        (I − J_{d_k} ⋯ J_{d_1}) z_1 = c, with c the composed offset, and keep z_1 if each
        z_i lies in d_i (`tol` counts border points in both regions). Words whose system is
        singular (an eigenvalue 1 of the composed matrix: a line of cycles, or none) are
        skipped. `regions` limits the words to those regions (e.g. the ones a trajectory
        visits), for maps with too many regions to search them all."""
        return find_cycles(self, period, tol=tol, max_words=max_words, regions=regions)

    def fixed_points(self, *, tol: float = 1e-10, regions: Sequence[int] | None = None) -> list[Cycle]:
        """The fixed points: the 1-cycles, at most one per region."""
        return self.cycles(1, tol=tol, regions=regions)


def find_cycles(piecewise, period: int, *, tol: float, max_words: int, regions: Sequence[int] | None) -> list[Cycle]:
    """The cycles of a piecewise-affine map with `num_regions`, `dim`, `affine(code) -> (J, c)`
    and `in_region(z, code, tol)` (`PiecewiseLinearMap.cycles` says how)."""
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"period must be a positive int; got {period!r}")
    codes = list(range(piecewise.num_regions)) if regions is None else sorted({int(code) for code in regions})
    if any(not 0 <= code < piecewise.num_regions for code in codes):
        raise ValueError(f"regions must be codes in [0, {piecewise.num_regions}); got {codes}")
    words = len(codes) ** period
    if words > max_words:
        raise ValueError(
            f"period {period} over {len(codes)} regions has {words} region words; more than max_words = {max_words} "
            f"(raise max_words to search them all, or pass regions=, e.g. those a trajectory visits)"
        )
    pieces = {code: piecewise.affine(code) for code in codes}
    eye = torch.eye(piecewise.dim, dtype=torch.float64)
    found = []
    for word in itertools.product(codes, repeat=period):
        if word != min(word[i:] + word[:i] for i in range(period)):
            continue
        # z_{i+1} = J_{d_i} z_i + c_{d_i} composed: z_{k+1} = M z_1 + c
        M, c = eye, torch.zeros(piecewise.dim, dtype=torch.float64)
        for code in word:
            J, offset = pieces[code]
            M, c = J @ M, J @ c + offset
        try:
            z = torch.linalg.solve(eye - M, c)
        except torch.linalg.LinAlgError:
            continue
        points = [z]
        for code in word[:-1]:
            J, offset = pieces[code]
            points.append(J @ points[-1] + offset)
        points = torch.stack(points)
        if not all(piecewise.in_region(p, code, tol) for p, code in zip(points, word, strict=True)):
            continue
        # a word that repeats a shorter one (or a cycle whose points coincide) is a
        # cycle of a smaller period, found at that period
        if period > 1 and any(torch.allclose(points[0], points[s], rtol=0, atol=tol) for s in range(1, period)):
            continue
        found.append(Cycle(tuple(word), points, torch.linalg.eigvals(M)))
    return found


def transition_graph(codes: torch.Tensor, num_relu: int) -> TransitionGraph:
    """The graph of the transitions in a symbolic sequence `codes` [T] (or [N, T], each
    row one trajectory): its nodes are the regions visited."""
    codes = torch.as_tensor(codes).long()
    if codes.dim() == 1:
        codes = codes.unsqueeze(0)
    if codes.dim() != 2:
        raise ValueError(f"codes must have shape [T] or [N, T]; got {list(codes.shape)}")
    visited = tuple(torch.unique(codes).tolist())
    n = len(visited)
    node = torch.zeros(int(codes.max()) + 1, dtype=torch.long)
    node[list(visited)] = torch.arange(n)
    counts = torch.zeros(n * n, dtype=torch.long)
    rows, cols = node[codes[:, :-1]].flatten(), node[codes[:, 1:]].flatten()
    counts.index_add_(0, rows * n + cols, torch.ones_like(rows))
    return TransitionGraph(visited, counts.view(n, n), num_relu)


def draw_transition_graph(graph: TransitionGraph, ax=None, *, cycles: list[Cycle] | None = None, min_probability: float = 0.0):
    """Draws the graph with matplotlib: one node per region (its size the occupancy), one
    arrow per transition (its width the probability; self-loops as a ring). Regions holding
    a point of `cycles` are outlined (stable: filled border, others dashed). Node positions
    come from networkx's spring layout where networkx is installed, else a circle.
    Returns the axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    n = len(graph.regions)
    P = graph.probabilities
    angles = torch.arange(n, dtype=torch.float64) * 2 * torch.pi / max(n, 1)
    positions = {i: (float(torch.cos(a)), float(torch.sin(a))) for i, a in enumerate(angles)}
    try:
        import networkx as nx
    except ImportError:
        nx = None
    if nx is not None and n > 2:
        G = nx.DiGraph()
        G.add_nodes_from(range(n))
        G.add_weighted_edges_from((i, j, float(P[i, j])) for i in range(n) for j in range(n) if i != j and P[i, j] > 0)
        positions = {i: tuple(p) for i, p in nx.spring_layout(G, seed=0).items()}
    in_cycles = {}
    for cycle in cycles or []:
        for code in cycle.regions:
            in_cycles[code] = in_cycles.get(code, False) or cycle.kind == "stable"
    occupancy = graph.occupancy
    for i in range(n):
        for j in range(n):
            if P[i, j] <= min_probability:
                continue
            width = 0.5 + 4 * float(P[i, j])
            x, y = positions[i]
            if i == j:
                ax.add_patch(plt.Circle((x, y + 0.22), 0.12, fill=False, lw=width, color="0.4", zorder=2))
                continue
            ax.add_patch(FancyArrowPatch(positions[i], positions[j], arrowstyle="-|>", mutation_scale=12,
                                         connectionstyle="arc3,rad=0.15", lw=width, color="0.4",
                                         shrinkA=14, shrinkB=14))
    for i, code in enumerate(graph.regions):
        x, y = positions[i]
        outline = {"edgecolor": "k", "linewidth": 2.5, "linestyle": "-" if in_cycles[code] else "--"} if code in in_cycles else {}
        ax.scatter([x], [y], s=300 + 1500 * float(occupancy[i]), color="tab:blue", zorder=3, **outline)
        ax.annotate(graph.names[i], (x, y), ha="center", va="center", color="white", zorder=4, fontsize=9)
    ax.set_aspect("equal")
    ax.margins(0.25)
    ax.axis("off")
    return ax
