"""pLSTM grid mixer: linear source-transition-mark networks over the patch grid.

pLSTM: parallelizable Linear Source Transition Mark networks (Pöppel, Beck, Hochreiter et
al.; arXiv:2506.11997). Each cell projects to a query, key and value per head and to
scalar gates; the grid op (`recur.ops.grid`) carries k vᵀ along the grid's edges, right
and down, and every cell reads what reaches it. Heads are split between the paper's two
gate ties (`mode`: "P" propagation, "D" diffusion, or "PD": half the heads each) and, inside
each, between scan orientations: orientation o flips the columns when o & 1 and the rows
when o & 2, so the four together see every corner's quadrant. The heads' outputs go
through a per-head RMS norm and a SiLU output gate, then an output projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.grid import GRID, d_mode, grid, p_mode
from .grid import GridMixer, GridMixerConfig, register_grid_mixer

# initial gate biases of the paper's vision model: small sources, marks and direct term
# (the norm after the op restores the scale), transitions near 1 (long reach)
SOURCE_BIAS, MARK_BIAS, DIRECT_BIAS, TRANSITION_BIAS = -4.0, -4.0, -6.0, 1.0
# the transitions are tanh(TRANSITION_SHARPNESS · pre-activation), so near ±1 at init
TRANSITION_SHARPNESS = 5.0
P_GATES = ("orientation", "source", "transition", "mark")
D_GATES = ("source_r", "source_d", "straight_r", "straight_d", "turn", "mark_l", "mark_u")


@dataclass(kw_only=True)
class PLSTMConfig(GridMixerConfig):
    num_heads: int = 8
    # "P", "D", or "PD" (the first half of the heads in P-mode, the second in D-mode)
    mode: str = "PD"
    # scan orientations shared out across each mode's heads: bit 0 flips the columns,
    # bit 1 the rows (0: from the top-left corner, 3: from the bottom-right one)
    orientations: tuple[int, ...] = (0, 1, 2, 3)
    # D-mode's turning direction: "L" from above to the right, "R" from the left to down
    chirality: str = "L"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("P", "D", "PD"):
            raise ValueError(f"mode must be 'P', 'D' or 'PD'; got {self.mode!r}")
        if self.chirality not in ("L", "R"):
            raise ValueError(f"chirality must be 'L' or 'R'; got {self.chirality!r}")
        orientations = tuple(self.orientations)
        if not orientations or any(o not in (0, 1, 2, 3) for o in orientations) or len(set(orientations)) != len(orientations):
            raise ValueError(f"orientations must be distinct values from 0, 1, 2, 3; got {self.orientations!r}")
        self.orientations = orientations
        groups = len(self.mode) * len(orientations)
        self.heads(self.num_heads)
        if self.num_heads % groups:
            raise ValueError(
                f"num_heads must be a multiple of {groups} (modes {self.mode!r} × {len(orientations)} orientations); "
                f"got {self.num_heads}"
            )
        if self.impl not in GRID.impls:
            raise ValueError(f"impl must be one of {list(GRID.impls)} (the grid family's forms); got {self.impl!r}")


@register_grid_mixer("plstm")
class PLSTM(GridMixer):
    Config = PLSTMConfig

    def __init__(self, config: PLSTMConfig) -> None:
        super().__init__(config)
        d, heads = config.d_model, config.num_heads
        self.head_dim = config.heads(heads)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        per_mode = heads // len(config.mode)
        self.mode_heads = {mode: per_mode for mode in config.mode}
        self.gates = nn.ModuleDict({
            mode: nn.Linear(d, per_mode * len(P_GATES if mode == "P" else D_GATES)) for mode in config.mode
        })
        self.direct = nn.Linear(d, heads)
        self.output_gate = nn.Linear(d, d)
        self.norm_weight = nn.Parameter(torch.ones(heads, self.head_dim))
        self.out = nn.Linear(d, d, bias=False)
        self._init_gates()

    def _init_gates(self) -> None:
        with torch.no_grad():
            for mode, layer in self.gates.items():
                names = P_GATES if mode == "P" else D_GATES
                bias = layer.bias.view(len(names), -1)
                for i, name in enumerate(names):
                    if name == "orientation":
                        # P-mode heads lean from down (-2) to right (+2); the input starts unheard
                        bias[i] = torch.linspace(-2.0, 2.0, bias.shape[1])
                        layer.weight.view(len(names), -1, layer.weight.shape[-1])[i].zero_()
                    elif "source" in name:
                        bias[i] = SOURCE_BIAS
                    elif "mark" in name:
                        bias[i] = MARK_BIAS
                    else:
                        bias[i] = TRANSITION_BIAS
            self.direct.bias.fill_(DIRECT_BIAS)

    def _mode_gates(self, mode: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The grid op's gate arguments for the heads in `mode`, each [B, X, Y, heads]."""
        names = P_GATES if mode == "P" else D_GATES
        pre = dict(zip(names, self.gates[mode](x).unflatten(-1, (len(names), -1)).unbind(-2), strict=True))
        value = {
            name: torch.tanh(TRANSITION_SHARPNESS * p) if name in ("transition", "straight_r", "straight_d", "turn")
            else torch.sigmoid(p)
            for name, p in pre.items()
        }
        if mode == "P":
            return p_mode(value["orientation"], value["source"], value["transition"], value["mark"])
        return d_mode(*(value[name] for name in D_GATES), chirality=self.config.chirality)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        heads, orientations = self.config.num_heads, self.config.orientations
        groups = len(orientations)
        # heads in orientation-major order: orientation i owns heads [i · heads / groups, ...),
        # the first of them in the first mode
        q, k, v = self.qkv(x).unflatten(-1, (3, heads, self.head_dim)).unbind(-3)
        direct = torch.sigmoid(self.direct(x))
        by_mode = {mode: self._mode_gates(mode, x) for mode in self.mode_heads}
        names = dict.fromkeys(name for gates in by_mode.values() for name in gates)

        def gate(name: str, i: int) -> torch.Tensor | None:
            """Gate `name` for orientation i's heads; zeros for a mode without it."""
            parts = []
            for mode, count in self.mode_heads.items():
                g, per = by_mode[mode].get(name), count // groups
                parts.append(x.new_zeros(*x.shape[:3], per) if g is None else g[..., i * per : (i + 1) * per])
            if all(by_mode[mode].get(name) is None for mode in self.mode_heads):
                return None
            return torch.cat(parts, dim=-1)

        def flip(t: torch.Tensor | None, orientation: int) -> torch.Tensor | None:
            # orientation o's scan starts at the top-left corner of the grid flipped by o
            dims = [dim for bit, dim in ((1, 2), (2, 1)) if orientation & bit]
            return t if t is None or not dims else t.flip(dims)

        def batched(pieces: list[torch.Tensor | None]) -> torch.Tensor | None:
            # the orientations side by side on the batch axis: one call of the op for all
            return None if pieces[0] is None else torch.cat(pieces, dim=0)

        per_group = heads // groups
        heads_of = [slice(i * per_group, (i + 1) * per_group) for i in range(groups)]
        inputs = [
            batched([flip(t[..., heads_of[i], :], o) for i, o in enumerate(orientations)]) for t in (q, k, v)
        ]
        gates = {name: batched([flip(gate(name, i), o) for i, o in enumerate(orientations)]) for name in names}
        gates["direct"] = batched([flip(direct[..., heads_of[i]], o) for i, o in enumerate(orientations)])
        h, _ = grid(*inputs, **gates, impl=self.config.impl)
        h = torch.cat([flip(part, o) for part, o in zip(h.chunk(groups, dim=0), orientations, strict=True)], dim=-2)
        # per-head RMS norm, then the SiLU output gate
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm_weight
        return self.out(h.flatten(-2) * F.silu(self.output_gate(x)))
