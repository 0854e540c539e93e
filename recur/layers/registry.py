"""Mixers by name: the one public way to pick a layer."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from .base import Mixer, MixerConfig

MIXERS: dict[str, type[Mixer]] = {}


def register_mixer(name: str):
    """Class decorator: `@register_mixer("gla")` makes the layer available by name."""

    def decorate(cls: type[Mixer]) -> type[Mixer]:
        if name in MIXERS and MIXERS[name] is not cls:
            raise ValueError(f"mixer {name!r} is already registered by {MIXERS[name].__qualname__}")
        if not (isinstance(cls, type) and issubclass(cls, Mixer)):
            raise TypeError(f"only Mixer subclasses can be registered; got {cls!r}")
        cls.name = name
        MIXERS[name] = cls
        return cls

    return decorate


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=3)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def get_mixer(name: str) -> type[Mixer]:
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}{_suggest(name, MIXERS)} Known: {sorted(MIXERS)}")
    return MIXERS[name]


def mixer_config(name: str, d_model: int, **options: Any) -> MixerConfig:
    """The typed config of mixer `name`; unknown option names fail with close matches."""
    cls = get_mixer(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)} - {"d_model"}
    for key in options:
        if key not in fields:
            raise ValueError(f"mixer {name!r} has no option {key!r}{_suggest(key, fields)} Options: {sorted(fields)}")
    return cls.Config(d_model=d_model, **options)


def build_mixer(name: str, d_model: int, **options: Any) -> Mixer:
    """`build_mixer("gla", 256, num_heads=4)` -> a GLA layer."""
    return get_mixer(name)(mixer_config(name, d_model, **options))


def option_types(name: str) -> dict[str, Any]:
    """Field name -> type of mixer `name`'s config (for typed overrides on the command line)."""
    cls = get_mixer(name)
    hints = typing.get_type_hints(cls.Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls.Config) if f.name != "d_model"}
