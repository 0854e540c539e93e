"""Token mixers, one file each, registered by name.

Every module in this package is imported here, so a new layer file registers itself
without editing any list.
"""

import importlib
import pkgutil

from .base import Mixer, MixerConfig, State
from .registry import (
    MIXERS,
    build_mixer,
    get_mixer,
    layer_class,
    layer_config,
    mixer_config,
    option_types,
    register_mixer,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "MIXERS",
    "Mixer",
    "MixerConfig",
    "State",
    "build_mixer",
    "get_mixer",
    "layer_class",
    "layer_config",
    "mixer_config",
    "option_types",
    "register_mixer",
]
