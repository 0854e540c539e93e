"""A non-causal mixer from two causal ones: one reads the sequence forwards, the other
backwards, and their outputs add.

    y = f(x) + flip(g(flip(x)))

as in the bidirectional S4 / S5 / Mamba encoders (e.g. S5, arXiv:2208.04933, Appendix; Vim,
arXiv:2401.09417). The wrapped mixer is named in the config and built twice, with its own
parameters per direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .base import Mixer, MixerConfig, State
from .registry import get_mixer, mixer_config, register_mixer


@dataclass(kw_only=True)
class BidirectionalConfig(MixerConfig):
    # the registered causal mixer to run in both directions
    mixer: str = "s4d"
    # its options (checked against its config; `impl` comes from this config)
    mixer_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        inner = get_mixer(self.mixer)
        if not inner.causal:
            raise ValueError(f"mixer must be a causal mixer; {self.mixer!r} is not causal")
        if "impl" in self.mixer_options:
            raise ValueError("mixer_options must not set 'impl'; set impl on the bidirectional config")
        mixer_config(self.mixer, self.d_model, **self.mixer_options)


@register_mixer("bidirectional")
class Bidirectional(Mixer):
    Config = BidirectionalConfig
    causal = False
    # the forms are the inner mixer's, known once the config names it
    impls = ()

    def __init__(self, config: BidirectionalConfig) -> None:
        cls = get_mixer(config.mixer)
        # the forms are the inner mixer's: set before the base class checks `impl`
        self.impls = cls.impls
        super().__init__(config)
        self.forward_mixer = cls(mixer_config(config.mixer, config.d_model, **config.mixer_options))
        self.backward_mixer = cls(mixer_config(config.mixer, config.d_model, **config.mixer_options))

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """The forward direction's state after the sequence (the backward one is not a
        continuation of anything)."""
        return self.forward_mixer.init_state(batch_size, device)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        # state is None: the base class refuses one, as for any layer that is not causal
        impl = self.config.impl
        y_forward, final = self.forward_mixer.with_impl(impl)(x)
        y_backward, _ = self.backward_mixer.with_impl(impl)(x.flip(1))
        return y_forward + y_backward.flip(1), final

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        raise ValueError(
            f"bidirectional({self.config.mixer}) is not causal: each output depends on later "
            "tokens, so it cannot run token by token; call forward on the whole sequence"
        )

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups: dict[str, list[nn.Parameter]] = {}
        for mixer in (self.forward_mixer, self.backward_mixer):
            for name, params in mixer.param_groups().items():
                groups.setdefault(name, []).extend(params)
        return groups
