"""recur: recurrent sequence models in PyTorch.

Ops (`recur.ops`) are pure functions with an exact step-by-step form, a chunkwise
parallel form and optional fused kernels; layers (`recur.layers`) are token mixers
registered by name; models (`recur.models`) stack any of them.
"""

from . import layers, models, ops
from .layers import MIXERS, build_mixer
from .models import LM, LMConfig

__version__ = "0.1.0"

__all__ = ["LM", "MIXERS", "LMConfig", "build_mixer", "layers", "models", "ops", "__version__"]
