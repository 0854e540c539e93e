"""A run folder back as a model: `load_run("runs/mqar-...")`.

    run = load_run("runs/lm-20261126-055639")
    run.model.generate(ids, max_new_tokens=20, temperature=0)     # an LM for LM tasks
    run.config, run.task, run.step, run.metrics

The weights are the ones the run chose (`run_dir/model/`, written when it ends: the best
validation evaluation with `train.select best`), or, for a run that has not ended, its
newest checkpoint; a checkpoint folder may also be given. Only safetensors and JSON are
read. Every failure is one line that names the file: a missing or corrupt folder, a run
config that does not load, a tensor whose shape is not the one the config gives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..tasks import Task, get_task
from .checkpoint import CheckpointError, checkpoint_dirs, load_weights
from .config import RunConfig, from_dict
from .loop import build_model


@dataclass
class LoadedRun:
    # `recur.models.LM` for language-model tasks, else the task's SequenceModel or
    # EncoderDecoder; on the CPU, in eval mode
    model: nn.Module
    config: RunConfig
    task: Task
    # the training step the weights come from, and what the run measured with them
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def load_run(path: str | os.PathLike) -> LoadedRun:
    """The model of a `recur train` run folder (or of one checkpoint folder), with its
    config and task."""
    path = Path(path)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise CheckpointError(f"{path} {what}; expected a run folder")
    folder = weights_folder(path)
    state, info = load_weights(folder)
    try:
        config = from_dict(info["config"])
    except (KeyError, TypeError, ValueError) as error:
        where = folder / "state.json"
        raise CheckpointError(f"{where}: the run config does not load: {error}") from None
    task = get_task(config.task_name)(config.task)
    model = build_model(config, task)
    load_state(model, state, folder / "model.safetensors")
    return LoadedRun(model.eval(), config, task, info.get("step"), dict(info.get("metrics", {})))


def weights_folder(path: Path) -> Path:
    """The folder of the weights a run folder stands for: its chosen model, else its newest
    checkpoint; a model or checkpoint folder stands for itself."""
    if (path / "model" / "model.safetensors").is_file():
        return path / "model"
    if (path / "model.safetensors").is_file() or (path / "state.json").is_file():
        return path
    found = checkpoint_dirs(path)
    if not found:
        raise CheckpointError(
            f"no checkpoint in {path}: expected {path}/model/model.safetensors (a finished run) or "
            f"{path}/checkpoints/step_*/ (a run in progress)"
        )
    return found[-1]


def load_state(model: nn.Module, state: dict[str, torch.Tensor], file: Path) -> None:
    """`model.load_state_dict(state)`, failing with one line that names the file, the key and
    the shapes."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key in state and state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{file}: {key} has shape {list(state[key].shape)}; "
                f"the run's config gives {list(tensor.shape)}"
            )
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{file} does not match the run's config: "
            f"missing {_some(missing)}, unexpected {_some(unexpected)}"
        )
    model.load_state_dict(state)


def _some(keys: list[str]) -> str:
    return str(keys) if len(keys) <= 4 else f"{keys[:4]} and {len(keys) - 4} more"


__all__ = ["LoadedRun", "load_run"]
