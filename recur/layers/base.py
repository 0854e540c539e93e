"""What every token mixer is: a typed config, `forward` over a sequence, `step` over one
token, and a recurrent state that carries between the two; and the one check of a layer's
inputs and states at that boundary."""

from __future__ import annotations

import abc
import copy
import dataclasses
import functools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..ops.family import Family


class State(dict):
    """A layer's recurrent state: named tensors, each with the batch on dim 0, and `owner`,
    the name of the layer type that made it. A layer refuses the state of another type even
    where the names and shapes of the tensors agree (DeltaNet's and Gated DeltaNet's do).

    Otherwise it is a plain dict. Copies (`dict(state)`, `{**state}`) and saved and loaded
    states are untagged dicts, which a layer checks, like a state built by hand, by their
    keys, shapes and dtypes only.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor], *, owner: str) -> None:
        super().__init__(tensors)
        self.owner = owner

    def __repr__(self) -> str:
        return f"State(owner={self.owner!r}, {dict.__repr__(self)})"

    def __reduce__(self):
        # torch.load(weights_only=True) refuses dict subclasses: a state saves as an
        # OrderedDict of its tensors, which loads anywhere
        return (OrderedDict, (list(self.items()),))

    def __copy__(self) -> State:
        return State(self, owner=self.owner)

    def __deepcopy__(self, memo: dict) -> State:
        return State(copy.deepcopy(dict(self), memo), owner=self.owner)


@dataclass(kw_only=True)
class MixerConfig:
    """Fields every mixer has. Subclasses add their own, each with a default that works
    for any d_model divisible by the head count."""

    d_model: int
    # which form of the layer's op family runs: "auto" (Triton on CUDA when installed, else
    # the family's default), or one of the family's forms ("naive", "chunk", ...)
    impl: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.d_model, int) or isinstance(self.d_model, bool) or self.d_model <= 0:
            raise ValueError(f"d_model must be a positive int; got {self.d_model!r}")
        if not isinstance(self.impl, str):
            raise TypeError(f"impl must be a string; got {type(self.impl).__name__}")

    def heads(self, num_heads: int, field: str = "num_heads") -> int:
        """Checks that d_model splits into `num_heads` heads and returns the head size."""
        if num_heads <= 0 or self.d_model % num_heads:
            raise ValueError(f"{field} must be a positive divisor of d_model = {self.d_model}; got {num_heads}")
        return self.d_model // num_heads

    def width(self, field: str, multiple_of: str | None = None) -> int:
        """The width `field` · d_model (`field` is a width multiple such as expand or
        expand_k), checked to be a positive int and a multiple of the field `multiple_of`."""
        width = getattr(self, field) * self.d_model
        divisor = 1 if multiple_of is None else getattr(self, multiple_of)
        if multiple_of is not None and (not isinstance(divisor, int) or divisor <= 0):
            raise ValueError(f"{multiple_of} must be a positive int; got {divisor!r}")
        if width != int(width) or width <= 0 or int(width) % divisor:
            multiple = "" if multiple_of is None else f" multiple of {multiple_of} = {divisor}"
            raise ValueError(f"{field} * d_model = {width:g} must be a positive int{multiple}")
        return int(width)


class Mixer(nn.Module, abc.ABC):
    """Base class of the token mixers in `recur.layers`.

    Subclasses set `Config` and `family` (the op family they run), implement `forward`,
    `step` and `init_state`, and are registered with `@register_mixer(name)`.
    Capabilities are class attributes so that tests, benchmarks and the CLI read them
    instead of keeping lists of names; `impls` and `has_triton_kernel` follow from the
    family.

    The `forward`, `step` and `init_state` a subclass defines are wrapped when the class is
    made, so that no layer can skip the boundary: `check_inputs` runs first; `forward` over
    T = 0 returns an empty output and the state unchanged without running the layer; the
    state returned is a `State` tagged with the layer's name. A layer's own code thus sees
    x [B, T >= 1, d_model] ([B, d_model] in `step`) in the parameters' dtype and device,
    and None or a state with its own keys, shapes and dtypes for batch B.
    """

    Config: ClassVar[type[MixerConfig]] = MixerConfig
    name: ClassVar[str] = ""
    # the op family whose forms `impl` picks between (None: the layer lists its own `impls`)
    family: ClassVar[Family | None] = None
    # causal: output t depends on inputs <= t only
    causal: ClassVar[bool] = True
    # the forms a user may pick with `impl`, beyond "auto": the family's
    impls: ClassVar[tuple[str, ...]] = ("naive", "chunk")
    has_triton_kernel: ClassVar[bool] = False
    # the state has a fixed size (False for a growing key-value cache)
    constant_state: ClassVar[bool] = True
    # state keys -> their dim over past tokens, which may have any size (a key-value cache)
    state_token_dims: ClassVar[dict[str, int]] = {}
    # an auxiliary training loss the layer leaves after each forward (MoM's load balancing);
    # the trainer adds every mixer's to the task loss
    aux_loss: torch.Tensor | None = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        family = cls.__dict__.get("family")
        if family is not None:
            if "impls" not in cls.__dict__:
                cls.impls = family.impls[1:]
            cls.has_triton_kernel = "triton" in family.impls
        wrappers = {
            "forward": _checked_forward, "step": _checked_step, "init_state": _tagged_init_state
        }
        for method, wrap in wrappers.items():
            if method in cls.__dict__:
                setattr(cls, method, wrap(cls.__dict__[method]))

    def __init__(self, config: MixerConfig) -> None:
        super().__init__()
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}; got {type(config).__name__}")
        self.config = config
        self.check_impl(config.impl)

    def check_impl(self, impl: str) -> None:
        if impl != "auto" and impl not in self.impls:
            raise ValueError(
                f"{_name(self)}: impl must be one of {['auto', *self.impls]}; got {impl!r}"
            )

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x [B, T, D] -> (y [B, T, D], state after the last token). Any T >= 0."""

    @abc.abstractmethod
    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """x [B, D], one token -> (y [B, D], next state). A None state starts from zeros."""

    @abc.abstractmethod
    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """The state before the first token."""

    def check_inputs(
        self, x: torch.Tensor, state: Mapping[str, torch.Tensor] | None, step: bool = False
    ) -> None:
        """Raises a ValueError or TypeError that names the layer, the argument, the expected
        and the received value unless x is [B, T, d_model] ([B, d_model] for `step`) in the
        parameters' dtype (or autocast's, under autocast) on their device, and `state` is
        None or this layer's state for batch B: init_state's keys, its shapes after the
        batch (no broadcasting), dtypes of its kinds (real, complex, integer), x's device.
        Shapes, dtypes and devices only: nothing here waits for an accelerator."""
        name, D = _name(self), self.config.d_model
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: x must be a torch.Tensor; got {type(x).__name__}")
        if x.dim() != (2 if step else 3) or x.shape[-1] != D:
            if step:
                expected = f"[B, {D}] (one token; d_model {D})"
            else:
                expected = f"[B, T, {D}] (d_model {D})"
            raise ValueError(f"{name}: x has shape {list(x.shape)}; expected {expected}")
        parameter = self._reference_parameter()
        if x.device != parameter.device:
            raise ValueError(
                f"{name}: x is on {x.device}; expected {parameter.device} (the parameters' device)"
            )
        if x.dtype != parameter.dtype:
            dtypes = {parameter.dtype: "the parameters' dtype"}
            device = x.device.type
            if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
                dtypes.setdefault(torch.get_autocast_dtype(device), "autocast's dtype")
            if x.dtype not in dtypes:
                expected = " or ".join(f"{dtype} ({why})" for dtype, why in dtypes.items())
                raise TypeError(f"{name}: x has dtype {x.dtype}; expected {expected}")
        if state is not None:
            self._check_state(state, x)

    def _check_state(self, state: Mapping[str, torch.Tensor], x: torch.Tensor) -> None:
        name, B = _name(self), x.shape[0]
        if not self.causal:
            raise ValueError(
                f"{name}: state must be None: the layer is not causal (it reads the whole "
                f"sequence), so it takes no state; got a {type(state).__name__}"
            )
        if not isinstance(state, Mapping):
            raise TypeError(
                f"{name}: state must be a dict of tensors (from forward, step or init_state) or "
                f"None; got {type(state).__name__}"
            )
        if isinstance(state, State) and state.owner != name:
            raise ValueError(
                f"{name}: state was made by a {state.owner} layer; "
                f"expected the state of a {name} layer"
            )
        layout = self._state_layout()
        if state.keys() != layout.keys():
            raise ValueError(
                f"{name}: state has the keys {sorted(state, key=str)}; expected {sorted(layout)}"
            )
        for key, (shape, dtype, free) in layout.items():
            tensor = state[key]
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(
                    f"{name}: state[{key!r}] must be a torch.Tensor; got {type(tensor).__name__}"
                )
            if tensor.dim() != len(shape) + 1 or tensor.shape[0] != B or any(
                size != expected
                for d, (size, expected) in enumerate(zip(tensor.shape[1:], shape), start=1)
                if d != free
            ):
                dims = [str(B)]
                dims += ["*" if d == free else str(n) for d, n in enumerate(shape, start=1)]
                anything = "" if free is None else "; * any number of past tokens"
                raise ValueError(
                    f"{name}: state[{key!r}] has shape {list(tensor.shape)}; expected "
                    f"[{', '.join(dims)}] (the batch {B} of x{anything})"
                )
            if _kind(tensor.dtype) != _kind(dtype):
                raise TypeError(
                    f"{name}: state[{key!r}] has dtype {tensor.dtype}; expected a {_kind(dtype)} "
                    f"dtype ({dtype})"
                )
            if tensor.device != x.device:
                raise ValueError(
                    f"{name}: state[{key!r}] is on {tensor.device}; "
                    f"expected {x.device} (x's device)"
                )

    def _reference_parameter(self) -> nn.Parameter:
        """The first real floating parameter: its dtype and device are the ones x must have.
        Where it lives is found once; the lookup then is one dict access, since walking
        all parameters on every call would cost more than the rest of the check."""
        found = self.__dict__.get("_reference_at")
        if found is not None:
            parameter = found[0]._parameters.get(found[1])
            if parameter is not None:
                return parameter
        for module in self.modules():
            for key, parameter in module._parameters.items():
                if parameter is not None and parameter.is_floating_point():
                    # a plain reference, not a submodule: the layer owns it already
                    self.__dict__["_reference_at"] = (module, key)
                    return parameter
        raise TypeError(f"{_name(self)} has no real floating parameter to take a dtype from")

    def _state_layout(self) -> dict[str, tuple[tuple[int, ...], torch.dtype, int | None]]:
        """Key -> (shape after the batch, dtype, the dim of any size or None) of
        init_state's tensors; made on the meta device (no memory), once per parameter dtype."""
        dtype = self._reference_parameter().dtype
        cached = self.__dict__.get("_layout")
        if cached is None or cached[0] != dtype:
            state = self.init_state(1, torch.device("meta"))
            layout = {
                key: (tuple(t.shape[1:]), t.dtype, self.state_token_dims.get(key))
                for key, t in state.items()
            }
            cached = (dtype, layout)
            self.__dict__["_layout"] = cached
        return cached[1]

    def _own(self, state: Mapping[str, torch.Tensor]) -> State:
        """`state` tagged with this layer's name."""
        name = _name(self)
        if isinstance(state, State) and state.owner == name:
            return state
        return State(state, owner=name)

    def _no_tokens(
        self, x: torch.Tensor, state: Mapping[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, State]:
        """forward over T = 0: an empty output and the state unchanged (a fresh one for None)."""
        if self.aux_loss is not None:
            # no token was routed: nothing to balance
            self.aux_loss = x.new_zeros(())
        B = x.shape[0]
        state = self.init_state(B, x.device) if state is None else state
        # x itself is [B, 0, d_model]; a copy keeps a gradient path for a loss over no tokens
        return x.clone(), self._own(state)

    @classmethod
    def shared_across_depth(cls, layers: list[Mixer]) -> nn.Module | None:
        """Parameters the layers of this mixer in one model share (None: nothing). The
        model keeps the module once and calls `attach_shared(module, depth)` on each layer."""
        return None

    def attach_shared(self, module: nn.Module, depth: int) -> None:
        # a plain reference, not a submodule: the model owns the parameters, once
        object.__setattr__(self, "_shared", (module, depth))

    def shared(self) -> tuple[nn.Module, int] | None:
        """The module from `shared_across_depth` and this layer's depth, inside a model."""
        return self.__dict__.get("_shared")

    def state_size(self) -> int:
        """Bytes of recurrent state per sequence (for a growing cache: per token)."""
        state = self.init_state(1, device=torch.device("cpu"))
        return sum(t.numel() * t.element_size() for t in state.values())

    def with_impl(self, impl: str) -> Mixer:
        """A copy that shares the parameters but runs another op form."""
        self.check_impl(impl)
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.config = dataclasses.replace(self.config, impl=impl)
        return clone

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters that want special optimiser settings, by group name:
        "no_decay" (no weight decay) or "ssm" (no weight decay and the learning rate times
        the trainer's ssm_lr_scale, as the SSM papers recommend for A, Δ, B and C). The
        trainer applies the settings; the default is none."""
        return {}


def _name(layer: Mixer) -> str:
    return layer.name or type(layer).__name__


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "real floating"
    return "boolean" if dtype == torch.bool else "integer"


def _checked_forward(forward: Callable) -> Callable:
    @functools.wraps(forward)
    def checked(self: Mixer, x: torch.Tensor, state: Mapping[str, torch.Tensor] | None = None):
        self.check_inputs(x, state)
        if x.shape[1] == 0:
            return self._no_tokens(x, state)
        y, new_state = forward(self, x, state)
        return y, self._own(new_state)

    return checked


def _checked_step(step: Callable) -> Callable:
    @functools.wraps(step)
    def checked(self: Mixer, x: torch.Tensor, state: Mapping[str, torch.Tensor] | None):
        self.check_inputs(x, state, step=True)
        y, new_state = step(self, x, state)
        return y, self._own(new_state)

    return checked


def _tagged_init_state(init_state: Callable) -> Callable:
    @functools.wraps(init_state)
    def tagged(self: Mixer, batch_size: int, device: torch.device | None = None) -> State:
        return self._own(init_state(self, batch_size, device))

    return tagged


class RecurrentMixer(Mixer):
    """A mixer written as one function of a chunk of tokens, `_mix(x, state, impl)`:
    `forward` runs it in the configured form, `step` on one token in the naive form (the
    recurrence itself, exact and O(1) per token)."""

    @abc.abstractmethod
    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        """x [B, T, D] -> (y [B, T, D], state after the last token), with op form `impl`."""

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._mix(x, state, self.config.impl)

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        y, state = self._mix(x.unsqueeze(1), state, "naive")
        return y.squeeze(1), state
