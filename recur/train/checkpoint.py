"""Checkpoints: safetensors weights and optimiser state, JSON config and training state.

A checkpoint is a folder `checkpoints/step_00001000/` holding `model.safetensors`,
`optimizer.safetensors` (tensors) and `state.json` (run config, step, optimiser
hyper-parameters, metrics so far). It is written to a temporary folder and renamed into
place, so a crash or a full disk leaves the previous checkpoints intact. Loading parses
safetensors and JSON only: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

PREFIX = "step_"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or corrupt."""


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as error:
        raise ImportError("checkpoints use safetensors: pip install 'recur[train]'") from error
    return safetensors.torch


@contextmanager
def _atomic_folder(final: Path) -> Iterator[Path]:
    """A temporary folder beside `final` to write into; when the block ends without an error
    it replaces `final`, otherwise it is removed and `final` is left as it was."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """`data` as JSON, flushed to disk before the folder holding it is renamed into place."""
    with open(path, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())


def _untie(model_state: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tied weights, saved once, given back under each of their names."""
    for name, source in info.get("tied", {}).items():
        model_state[name] = model_state[source]
    return model_state


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch optimiser state_dict -> (tensors by "state.<param>.<name>", JSON-ready rest)."""
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    # keys are "<param>.<name>"; <param> is an index, or a dotted name under FSDP
    for key, value in tensors.items():
        index, name = key.removeprefix("state.").rsplit(".", 1)
        state.setdefault(int(index) if index.isdigit() else index, {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.rsplit(".", 1)
        state.setdefault(int(index) if index.isdigit() else index, {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save(
    run_dir: str | os.PathLike,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict,
    extra_tensors: dict[str, torch.Tensor],
    info: dict[str, Any],
    keep: int,
) -> Path:
    """Writes checkpoint `step` atomically and keeps the newest `keep` checkpoints."""
    st = _safetensors()
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    with _atomic_folder(final) as tmp:
        # tied weights share storage; safetensors wants each tensor once
        st.save_file(_dedupe(model_state), str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = flatten_optimizer(optimizer_state)
        st.save_file({**opt_tensors, **{f"extra.{k}": v.contiguous() for k, v in extra_tensors.items()}},
                     str(tmp / "optimizer.safetensors"))
        _write_json(tmp / "state.json", {**info, "step": step, "optimizer": opt_meta, "tied": _ties(model_state)})
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _ties(state: dict[str, torch.Tensor]) -> dict[str, str]:
    seen: dict[tuple, str] = {}
    ties = {}
    for name, t in state.items():
        key = (t.data_ptr(), t.shape, t.stride(), t.dtype)
        if t.data_ptr() and key in seen:
            ties[name] = seen[key]
        else:
            seen[key] = name
    return ties


def _dedupe(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ties = _ties(state)
    return {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in ties}


def save_model(folder: str | os.PathLike, model_state: dict[str, torch.Tensor], info: dict[str, Any]) -> Path:
    """The weights a run chose, with what it knows of them (config, step, metrics):
    model.safetensors and state.json in `folder`, written atomically (a temporary folder,
    then a rename), replacing what was there."""
    st = _safetensors()
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_folder(folder) as tmp:
        st.save_file(_dedupe(model_state), str(tmp / "model.safetensors"))
        _write_json(tmp / "state.json", {**info, "tied": _ties(model_state)})
    return folder


def load(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, dict[str, torch.Tensor], dict[str, Any]]:
    """(model state, optimiser state, extra tensors, info) of one checkpoint folder."""
    st = _safetensors()
    path = Path(path)
    for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
    try:
        with open(path / "state.json") as f:
            info = json.load(f)
        model_state = st.load_file(str(path / "model.safetensors"))
        tensors = st.load_file(str(path / "optimizer.safetensors"))
    except Exception as error:
        raise CheckpointError(f"checkpoint {path} is corrupt: {type(error).__name__}: {error}") from error
    model_state = _untie(model_state, info)
    extra = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
    opt = unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("state.")}, info["optimizer"])
    return model_state, opt, extra, info


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state, info) of a run folder's chosen weights (its `model` folder, written at the
    end of a run), of a checkpoint folder, or of a run folder's newest checkpoint."""
    path = Path(path)
    if (path / "model" / "model.safetensors").is_file():
        path = path / "model"
    if (path / "model.safetensors").is_file() and not (path / "optimizer.safetensors").exists():
        try:
            with open(path / "state.json") as f:
                info = json.load(f)
            model_state = _safetensors().load_file(str(path / "model.safetensors"))
        except Exception as error:
            raise CheckpointError(f"model folder {path} is corrupt: {type(error).__name__}: {error}") from error
        return _untie(model_state, info), info
    if not (path / "state.json").exists():
        found = checkpoint_dirs(path)
        if not found:
            raise CheckpointError(f"no checkpoint in {path} (expected {path}/checkpoints/{PREFIX}*/)")
        path = found[-1]
    model_state, _, _, info = load(path)
    return model_state, info
