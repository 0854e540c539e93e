"""What the nonlinear RNN layers share: input projection, head-wise recurrence, bidirectional
wrapping, and the state as one named tensor per cell state.

A layer is a cell from `recur.ops.rnn` with its weights: `in_proj` (x → the Gx input gates,
laid out gate-major like torch.nn.LSTM's weight_ih), `R` and `b` per direction. With
`bidirectional=True` each direction has d_model / 2 units and their outputs are
concatenated (torch.nn.LSTM's layout); such a layer is not causal and has no `step`.
`impl` picks a form of the layer's op family (`rnn`, or `newton` for cells that Newton
solves); the layer's state {"h": [B, H, Dh], ...} is the op's [B, S, H, Dh], by name.

Layers whose recurrence torch itself has (LSTM, GRU: `native` names it) may also run
torch's fused kernel (`torch._VF.lstm` / `torch._VF.gru`, what torch.nn.LSTM / GRU call;
cuDNN on CUDA) with their own parameters when the configuration allows it: one head (a
dense R), inputs and parameters of one dtype, float32 or float64. `impl="auto"` picks it
then, else the family's default; `impl="native"` insists on it. It is the layer's, not an
op form: torch's kernel projects the inputs itself (its weight_ih is the layer's in_proj),
so it cannot take the op's already projected x_proj without a second, identity projection
(about 3× the time of the fused call, measured).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from einops import rearrange
from torch import nn

from ..ops.family import Family
from ..ops.rnn import RNN, Cell
from ..ops.rnn.checks import TRITON_CELLS
from .base import MixerConfig, RecurrentMixer, State
from .parts import state_dtype


@dataclass(kw_only=True)
class RNNConfig(MixerConfig):
    # heads of the block-diagonal recurrence (FlashRNN); 1 is a dense recurrent matrix
    num_heads: int = 1
    # run a second copy backwards in time and concatenate (non-causal; no step)
    bidirectional: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bidirectional and self.d_model % 2:
            raise ValueError(f"bidirectional=True needs an even d_model; got {self.d_model}")
        hidden = self.d_model // 2 if self.bidirectional else self.d_model
        if not isinstance(self.num_heads, int) or self.num_heads <= 0 or hidden % self.num_heads:
            raise ValueError(
                f"num_heads must be a positive divisor of the hidden size {hidden} "
                f"(d_model{' / 2 per direction' if self.bidirectional else ''}); got {self.num_heads!r}"
            )


class Direction(nn.Module):
    """The weights of one direction: input projection, recurrent weights R, biases b, and
    any weights of the layer's own (`shapes` names each one's shape; b starts at zero)."""

    def __init__(self, d_in: int, cell: Cell, width: int, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.in_proj = nn.Linear(d_in, cell.input_gates * width, bias=False)
        for name, shape in shapes.items():
            setattr(self, name, nn.Parameter(torch.zeros(shape) if name == "b" else torch.empty(shape)))


class RNNLayer(RecurrentMixer):
    """Base of the RNN mixers. Subclasses set `Config` and `cell_type` (or `make_cell`), and
    may override `reset_parameters`, `gate_inputs` (what the input projection sees) and
    `readout`."""

    Config: ClassVar[type[RNNConfig]] = RNNConfig
    family: ClassVar[Family] = RNN
    # the cell of `recur.ops.rnn`, built without arguments by the default `make_cell`
    cell_type: ClassVar[type[Cell] | None] = None
    # "lstm" or "gru" where the cell is torch.nn.LSTM's / GRU's, which torch runs fused
    native: ClassVar[str | None] = None
    # whether the state is a latent z whose map z_t = F(z_{t-1}) (+ input) dynamical-systems
    # reconstruction trains directly (AL-RNN, the PLRNNs; `recur.dynamics`)
    latent_map: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.family is RNN and "triton" in cls.impls and cls.cell_type not in TRITON_CELLS:
            # the rnn family's Triton kernels run some cells only (the newton family's run any)
            cls.impls = tuple(impl for impl in cls.impls if impl != "triton")
        if cls.__dict__.get("native") and "native" not in cls.impls:
            # torch's fused kernel, beside the family's forms
            cls.impls = (*cls.impls, "native")

    def __init__(self, config: RNNConfig) -> None:
        super().__init__(config)
        self.cell = self.make_cell(config)
        self.causal = not config.bidirectional
        self.hidden = config.d_model // 2 if config.bidirectional else config.d_model
        self.heads, self.head_dim = config.num_heads, self.hidden // config.num_heads
        shapes = self.weight_shapes(config)
        self.directions = nn.ModuleList(
            Direction(self.input_width(config), self.cell, self.hidden, shapes)
            for _ in range(2 if config.bidirectional else 1)
        )
        self.reset_parameters()

    def make_cell(self, config) -> Cell:
        if self.cell_type is None:
            raise TypeError(f"{type(self).__name__} must set cell_type or define make_cell(config)")
        return self.cell_type()

    def gate_counts(self, config) -> tuple[int, int]:
        """(recurrent gates Gr, bias gates Gb)."""
        return self.cell.recurrent_gates, self.cell.bias_gates

    def weight_shapes(self, config) -> dict[str, tuple[int, ...]]:
        """The shapes of each direction's weights besides in_proj: R, b and any of the layer's own."""
        Gr, Gb = self.gate_counts(config)
        # the cell's shapes after the gate dim; the gate counts are the layer's (RHN's depth)
        R, b = self.cell.weight_shapes(torch.empty(Gr), self.heads, self.head_dim)
        return {"R": (Gr, *R[1:]), "b": (Gb, *b[1:])}

    def op_weights(self, direction: Direction) -> tuple[torch.Tensor, torch.Tensor]:
        """The op's R and b from a direction's weights."""
        return direction.R, direction.b

    def input_width(self, config) -> int:
        return config.d_model

    def reset_parameters(self) -> None:
        """torch.nn.LSTM's default: every weight uniform in ±1/√hidden."""
        bound = 1 / math.sqrt(self.hidden)
        for direction in self.directions:
            for p in direction.parameters():
                nn.init.uniform_(p, -bound, bound)

    def gate_inputs(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """The tensor the input projections read, [B, T, input_width], and extra state."""
        return x, {}

    def readout(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """h [B, T, d_model] (both directions concatenated) -> y [B, T, d_model]."""
        return h

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        dtype = state_dtype(self)
        return {
            name: torch.zeros(batch_size, self.heads, self.head_dim, device=device, dtype=dtype)
            for name in self.cell.state_names
        }

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        if not self.causal:
            raise ValueError(f"{self.name} with bidirectional=True reads the future and has no step")
        # one token is one step of the recurrence: the naive form is exact and O(1); torch's
        # kernel where the forward uses it, so that steps and forward run the same arithmetic
        native = self.config.impl in ("auto", "native") and self.native_unavailable(x, state) is None
        y, state = self._mix(x.unsqueeze(1), state, "native" if native else "naive")
        return y.squeeze(1), state

    def native_unavailable(self, x: torch.Tensor, state: State | None) -> str | None:
        """Why torch's fused kernel cannot run this layer on `x` and `state`; None when it can."""
        if self.native is None:
            return f"torch has no kernel for the {self.name} cell"
        if self.heads != 1:
            return f"num_heads = {self.heads}: torch's kernel has a dense recurrence only (num_heads=1)"
        dtype = self.directions[0].R.dtype
        if dtype not in (torch.float32, torch.float64):
            return f"parameters are {dtype}: the op keeps float32 states there, torch's kernel would not"
        if x.dtype != dtype:
            return f"x is {x.dtype} but the parameters are {dtype}"
        if state is not None:
            for name in self.cell.state_names:
                if state[name].dtype != dtype:
                    return f"state[{name!r}] is {state[name].dtype} but the parameters are {dtype}"
        return None

    def project(self, direction: Direction, inputs: torch.Tensor) -> torch.Tensor:
        """The input gates [B, T, Gx · hidden], gate-major."""
        return direction.in_proj(inputs)

    def input_gates(self, direction: Direction, inputs: torch.Tensor) -> torch.Tensor:
        """The op's x_proj [B, T, Gx, heads, head_dim]."""
        return rearrange(
            self.project(direction, inputs), "b t (g h d) -> b t g h d", g=self.cell.input_gates, h=self.heads
        )

    def op_options(self) -> dict:
        """Keyword arguments of the op beyond the cell and the state (e.g. Newton's)."""
        return {}

    def _run(self, direction: Direction, inputs: torch.Tensor, initial, impl: str):
        x_proj = self.input_gates(direction, inputs)
        options = {"cell": self.cell, "initial_state": initial, "output_final_state": True, **self.op_options()}
        return self.family.call(impl, (x_proj, *self.op_weights(direction)), options)

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        inputs, extra = self.gate_inputs(x, state)
        initial = None if state is None else torch.stack([state[name] for name in self.cell.state_names], dim=1)
        if impl in ("auto", "native"):
            why = self.native_unavailable(x, state)
            if why is None:
                return self._native(x, initial)
            if impl == "native":
                raise ValueError(f"impl='native' cannot run this {self.name} layer: {why}")
        h, final = self._run(self.directions[0], inputs, initial, impl)
        outputs = [h]
        if len(self.directions) == 2:
            h_back, _ = self._run(self.directions[1], inputs.flip(1), None, impl)
            outputs.append(h_back.flip(1))
        h = torch.cat([rearrange(o, "b t h d -> b t (h d)") for o in outputs], dim=-1)
        new_state = dict(zip(self.cell.state_names, final.unbind(1), strict=True))
        new_state.update(extra)
        return self.readout(h, x), new_state

    def load_torch(self, module: nn.Module) -> None:
        """Copies a one-layer torch.nn.LSTM or torch.nn.GRU, the layer's `native`
        counterpart (hidden d_model / 2 when bidirectional); the outputs are then identical."""
        if self.native is None:
            raise TypeError(f"{self.name} has no torch counterpart to load; only lstm and gru do")
        gates = {"lstm": 4, "gru": 3}[self.native]
        kind = type(module).__name__
        if module.num_layers != 1 or getattr(module, "proj_size", 0):
            raise ValueError(f"only a one-layer {kind} without proj_size can be loaded; got {module}")
        if module.bidirectional != (len(self.directions) == 2):
            raise ValueError(f"{kind}.bidirectional = {module.bidirectional} but the layer has bidirectional = {not self.causal}")
        if module.input_size != self.config.d_model or module.hidden_size != self.hidden:
            raise ValueError(
                f"{kind} has input_size {module.input_size}, hidden_size {module.hidden_size}; expected "
                f"{self.config.d_model} and {self.hidden}"
            )
        if self.heads != 1:
            raise ValueError(f"a {kind} has a dense recurrence: build the layer with num_heads=1; got {self.heads}")
        n = self.hidden
        with torch.no_grad():
            for direction, suffix in zip(self.directions, ("", "_reverse"), strict=False):
                w_ih = getattr(module, f"weight_ih_l0{suffix}")
                w_hh = getattr(module, f"weight_hh_l0{suffix}")
                b_ih = getattr(module, f"bias_ih_l0{suffix}", None)
                b_hh = getattr(module, f"bias_hh_l0{suffix}", None)
                b_ih = torch.zeros_like(w_ih[:, 0]) if b_ih is None else b_ih
                b_hh = torch.zeros_like(w_hh[:, 0]) if b_hh is None else b_hh
                direction.in_proj.weight.copy_(w_ih)
                direction.R.copy_(w_hh.reshape(gates, 1, n, n))
                if gates == 4:
                    direction.b.copy_((b_ih + b_hh).reshape(4, 1, n))
                else:
                    # GRU: the reset gate multiplies the recurrent n-gate bias, so it stays apart
                    r, z = (b_ih + b_hh)[: 2 * n].reshape(2, n).unbind(0)
                    direction.b.copy_(torch.stack([r, z, b_ih[2 * n :], b_hh[2 * n :]]).reshape(4, 1, n))

    def _native(self, x: torch.Tensor, initial: torch.Tensor | None) -> tuple[torch.Tensor, State]:
        """torch._VF.lstm / gru with this layer's parameters (views, no copies); initial
        [B, S, 1, hidden] or None."""
        B, n = x.shape[0], self.hidden
        weights = []
        for direction in self.directions:
            b = direction.b.reshape(-1, n)
            zeros = b.new_zeros(b.shape[0] - 1 if self.native == "gru" else b.shape[0], n)
            if self.native == "lstm":
                # torch adds b_ih + b_hh: ours is one bias
                biases = [b.reshape(-1), zeros.reshape(-1)]
            else:
                # GRU: b = (r, z, input n, recurrent n); the recurrent n bias sits inside r ⊙ (·)
                biases = [b[:3].reshape(-1), torch.cat([zeros[:2], b[3:]]).reshape(-1)]
            weights += [direction.in_proj.weight, direction.R.reshape(-1, n), *biases]
        directions = len(self.directions)
        S = self.cell.num_states
        initial = x.new_zeros(S, 1, B, n) if initial is None else initial.transpose(0, 1).reshape(S, 1, B, n)
        # [S, directions, B, n]: the backward direction starts from zeros, as in the op
        hx = torch.cat([initial, x.new_zeros(S, directions - 1, B, n)], 1)
        with warnings.catch_warnings():
            # cuDNN copies weights that are not one flat buffer into one on every call and
            # says so; ours are the layer's parameters, by design
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
            if self.native == "lstm":
                h, h_n, c_n = torch._VF.lstm(x, (hx[0], hx[1]), weights, True, 1, 0.0, self.training, directions == 2, True)
                final = (h_n[0], c_n[0])
            else:
                h, h_n = torch._VF.gru(x, hx[0], weights, True, 1, 0.0, self.training, directions == 2, True)
                final = (h_n[0],)
        state = {name: s.reshape(B, 1, n) for name, s in zip(self.cell.state_names, final, strict=True)}
        return self.readout(h, x), state
