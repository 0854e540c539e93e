"""Mixers by name: the one public way to pick a layer."""

from __future__ import annotations

import dataclasses
import typing
import warnings
from typing import Any

from ..registry import Registry, UnknownName, did_you_mean
from .base import Mixer, MixerConfig
from .grid import GRID_MIXERS, GridMixer, grid_mixer_config

MIXERS: Registry[type[Mixer]] = Registry("mixer")

# Option names before the layer configs took one vocabulary: mixer -> {old name: new name}.
# Saved run configs may hold them; they still load, with a DeprecationWarning.
RENAMED_OPTIONS: dict[str, dict[str, str]] = {
    "mamba": {"d_conv": "conv_size"},
    "mamba2": {"conv_kernel": "conv_size"},
    "slstm": {"conv_kernel": "conv_size"},
    "xlstm": {"proj_factor": "expand"},
    "mlstm": {"qk_dim_factor": "expand_k", "v_dim_factor": "expand_v"},
    "hgrn2": {"expand_ratio": "d_state"},
    "gss": {"ssm_fraction": "expand_ssm"},
}


def register_mixer(name: str):
    """Class decorator: `@register_mixer("gla")` makes the layer available by name."""
    return MIXERS.named_class(name, Mixer)


def get_mixer(name: str) -> type[Mixer]:
    """The layer class registered as `name`; an unknown name fails with close matches."""
    return MIXERS[name]


def mixer_config(name: str, d_model: int, **options: Any) -> MixerConfig:
    """The typed config of mixer `name`; unknown option names fail with close matches."""
    cls = get_mixer(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)} - {"d_model"}
    options = _renamed(name, options)
    for key in options:
        if key not in fields:
            raise ValueError(f"mixer {name!r} has no option {key!r}{did_you_mean(key, fields)} Options: {sorted(fields)}")
    return cls.Config(d_model=d_model, **options)


def _renamed(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` with the mixer's old option names (RENAMED_OPTIONS) replaced by the new ones."""
    renames = RENAMED_OPTIONS.get(name, {})
    renamed = {}
    for key, value in options.items():
        new = renames.get(key)
        if new is None:
            renamed[key] = value
            continue
        if new in options:
            raise ValueError(f"mixer {name!r} got both {key!r} and {new!r}; {key!r} is the old name of {new!r}: keep {new!r}")
        warnings.warn(
            f"mixer {name!r}: option {key!r} is now called {new!r}; {key!r} will stop working",
            DeprecationWarning,
            stacklevel=3,
        )
        renamed[new] = value
    return renamed


def build_mixer(name: str, d_model: int, **options: Any) -> Mixer:
    """`build_mixer("gla", 256, num_heads=4)` -> a GLA layer."""
    return get_mixer(name)(mixer_config(name, d_model, **options))


def layer_class(name: str) -> type[Mixer] | type[GridMixer]:
    """The sequence mixer or the grid mixer registered as `name` (a model's layers may be
    either); an unknown name fails with close matches from both registries."""
    if name in GRID_MIXERS:
        return GRID_MIXERS[name]
    if name in MIXERS or not isinstance(name, str):
        return MIXERS[name]
    raise UnknownName(
        f"unknown mixer {name!r}{did_you_mean(name, [*MIXERS, *GRID_MIXERS])} Known: {sorted(MIXERS)}; "
        f"grid mixers: {sorted(GRID_MIXERS)}"
    )


def layer_config(name: str, d_model: int, **options: Any) -> MixerConfig:
    """The typed config of the sequence or grid mixer `name`."""
    if name in GRID_MIXERS:
        return grid_mixer_config(name, d_model, **options)
    return mixer_config(name, d_model, **options)


def option_types(name: str) -> dict[str, Any]:
    """Field name -> type of mixer `name`'s config (for typed overrides on the command line);
    grid mixers included."""
    cls = layer_class(name)
    hints = typing.get_type_hints(cls.Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls.Config) if f.name != "d_model"}
