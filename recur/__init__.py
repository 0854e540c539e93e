"""recur: recurrent sequence models in PyTorch.

Ops (`recur.ops`) are pure functions with an exact step-by-step form, a chunkwise
parallel form and optional fused kernels; layers (`recur.layers`) are token mixers
registered by name; models (`recur.models`) stack any of them. `recur.load_run(run_dir)`
gives back the model of a `recur train` run (with its config and task).
"""

from . import layers, models, ops
from .layers import MIXERS, build_mixer
from .models import LM, LMConfig

__version__ = "0.1.0"

__all__ = [
    "LM", "MIXERS", "LMConfig", "build_mixer", "layers", "load_run", "models", "ops", "__version__",
]


def __getattr__(name: str):
    # the trainer (tasks, checkpoints) is imported on first use, not by `import recur`
    if name == "load_run":
        from .train import load_run

        return load_run
    raise AttributeError(f"module 'recur' has no attribute {name!r}")
