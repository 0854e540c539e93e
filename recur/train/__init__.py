"""Training: one typed config in, final metrics out.

    from recur.models import LMConfig
    from recur.tasks.mqar import MQARConfig
    from recur.train import RunConfig, TrainConfig, train

    config = RunConfig(
        task=MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=4),
        model=LMConfig(vocab_size=64, mixer="gla", d_model=64, n_layers=2),
        train=TrainConfig(steps=300, batch_size=32, lr=3e-3, target=0.99),
    )
    result = train(config)              # or train(config, "runs/mqar") to keep files
    result.metric                       # the task's headline metric, e.g. valid/accuracy
    result.metrics                      # every "<split>/<name>" of the last evaluation

Shorter, from a recipe with dotted overrides (the same keys as the command line):

    from recur.recipes import recipe
    config = recipe("mqar", {"model.mixer": "gla", "train.steps": 300})

`model.vocab_size` always follows the task. `train(config, run_dir)` writes config.json,
metrics.jsonl (one JSON object per line), checkpoints/step_*/ (safetensors + JSON) and
result.json, and refuses a folder that already holds a run;
`train(saved_config(run_dir), run_dir, resume=True)` continues the folder's run from its
newest intact checkpoint on the same curve (same data order, RNG and schedule). Under
torchrun the same call trains with DDP or FSDP2 (train.distributed). `load_run(run_dir)`
gives the run back: its model (with the weights the run chose), config, task, step and
metrics.
"""

from .checkpoint import CheckpointError, RunWarning
from .config import HeadConfig, RunConfig, TrainConfig, apply_overrides, from_dict, to_dict
from .loop import (
    Interrupted,
    NothingToResume,
    TrainResult,
    build_model,
    evaluate,
    saved_config,
    summary,
    train,
)
from .runs import LoadedRun, load_run

__all__ = [
    "CheckpointError",
    "HeadConfig",
    "Interrupted",
    "LoadedRun",
    "NothingToResume",
    "RunConfig",
    "RunWarning",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "build_model",
    "evaluate",
    "from_dict",
    "load_run",
    "saved_config",
    "summary",
    "to_dict",
    "train",
]
