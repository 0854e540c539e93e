"""What every token mixer is: a typed config, `forward` over a sequence, `step` over one
token, and a recurrent state that carries between the two."""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..ops.family import Family

# A layer's recurrent state: named tensors, each with the batch on dim 0.
State = dict[str, torch.Tensor]


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

    def __init__(self, config: MixerConfig) -> None:
        super().__init__()
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}; got {type(config).__name__}")
        self.config = config
        self.check_impl(config.impl)

    def check_impl(self, impl: str) -> None:
        if impl != "auto" and impl not in self.impls:
            name = self.name or type(self).__name__
            raise ValueError(f"{name}: impl must be one of {['auto', *self.impls]}; got {impl!r}")

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x [B, T, D] -> (y [B, T, D], state after the last token)."""

    @abc.abstractmethod
    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """x [B, D], one token -> (y [B, D], next state). A None state starts from zeros."""

    @abc.abstractmethod
    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """The state before the first token."""

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
