"""Checkpoints and the run folder that holds them.

A checkpoint is a folder `checkpoints/step_00001000/` holding `model.safetensors`,
`optimizer.safetensors` (tensors), `state.json` (run config, step, optimiser
hyper-parameters, metrics so far) and `manifest.json`: the size and SHA-256 of each of the
other files and the id of the run that wrote them, written last. The folder is written
under a temporary name and renamed into place, so a crash or a full disk leaves the
previous checkpoints intact; loading checks every file against the manifest (safetensors
has no checksum of its own), so a damaged file is found before it is read. Loading parses
safetensors and JSON only: nothing is ever unpickled.

The run folder has one owner at a time: the process holding its `run.lock` (an advisory
`flock` on the file, which records the holder's pid and host), released when the run ends
or its process dies. A run deletes only the checkpoints it wrote itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

PREFIX = "step_"
MANIFEST = "manifest.json"
LOCK = "run.lock"
# the prefix of every file or folder a save writes before renaming it into place
TEMPORARY = ".tmp_"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "state.json")
MODEL_FILES = ("model.safetensors", "state.json")
# a manifest or a lock file is a few hundred bytes; a larger one is not ours
MAX_SMALL_FILE = 1 << 20
# the files a finished or started run leaves in its folder
RUN_FILES = ("config.json", "metrics.jsonl", "result.json", "model", "checkpoints")


class CheckpointError(RuntimeError):
    """A checkpoint or run folder that is missing, incomplete, damaged, in use or not this run's."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint whose files do not match its manifest (or that has none): an interrupted
    write, a disk error or a changed file. A resume falls back to the previous one."""


class RunWarning(UserWarning):
    """Something a run did on its own that its user should know: a damaged checkpoint
    skipped, a lock taken over from a process that is gone, unfinished saves removed."""


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
    tmp = Path(tempfile.mkdtemp(prefix=TEMPORARY, dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _sync_folder(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _sync_folder(folder: Path) -> None:
    """Makes a rename inside `folder` durable (where the platform can open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """`data` as JSON, flushed to disk before the folder holding it is renamed into place."""
    with open(path, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())


def _digest(path: Path, sync: bool = False) -> str:
    """The SHA-256 of a file; with `sync`, the file is also flushed to disk on the way."""
    sha = hashlib.sha256()
    with open(path, "rb+" if sync else "rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
        if sync:
            os.fsync(f.fileno())
    return sha.hexdigest()


def _write_manifest(folder: Path, names: tuple[str, ...], run_id: str | None) -> None:
    """The manifest, written after the files it describes (and their flush to disk)."""
    files = {name: {"bytes": (folder / name).stat().st_size, "sha256": _digest(folder / name, sync=True)} for name in names}
    _write_json(folder / MANIFEST, {"run": run_id, "files": files})


def _read_small_json(path: Path, what: str, error=CheckpointError) -> Any:
    """A JSON file that is never large (a manifest, a lock): its size is checked before reading."""
    size = path.stat().st_size
    if size > MAX_SMALL_FILE:
        raise error(f"{path} has {size} bytes; {what} holds at most {MAX_SMALL_FILE}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{path} is not valid JSON ({problem})") from None


def verify(folder: str | os.PathLike, names: tuple[str, ...] = CHECKPOINT_FILES) -> dict[str, Any]:
    """The manifest of a checkpoint (or model) folder, after checking that each of `names`
    has the size and SHA-256 it records; DamagedCheckpoint names the first file that differs.
    A folder written before manifests existed (every file there, no manifest) is used with a
    RunWarning that it cannot be verified."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        missing = [name for name in names if not (folder / name).is_file()]
        if not missing:
            warnings.warn(f"{folder} has no {MANIFEST} (written by an earlier version of recur): "
                          "its files cannot be verified", RunWarning, stacklevel=2)
            return {"run": None, "files": {}}
        raise DamagedCheckpoint(
            f"checkpoint {folder} is incomplete: {', '.join([MANIFEST, *missing])} "
            f"{'is' if not missing else 'are'} missing"
        )
    manifest = _read_small_json(folder / MANIFEST, "a manifest", DamagedCheckpoint)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise DamagedCheckpoint(f"{folder / MANIFEST} has no 'files' table")
    # the cheap checks of every file first: listed, present, of the recorded size
    for name in names:
        entry = files.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or not isinstance(entry.get("sha256"), str):
            raise DamagedCheckpoint(f"checkpoint {folder} is incomplete: its manifest does not list {name}")
        if not (folder / name).is_file():
            raise DamagedCheckpoint(f"checkpoint {folder} is incomplete: {name} is missing")
    for name in names:
        size, entry = (folder / name).stat().st_size, files[name]
        if size != entry["bytes"]:
            raise DamagedCheckpoint(f"checkpoint {folder} is damaged: {name} has {size} bytes, its manifest says {entry['bytes']}")
    for name in names:
        entry, digest = files[name], _digest(folder / name)
        if digest != entry["sha256"]:
            raise DamagedCheckpoint(
                f"checkpoint {folder} is damaged: the SHA-256 of {name} is {digest[:12]}…, its manifest says {entry['sha256'][:12]}…"
            )
    return manifest


def _untie(model_state: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tied weights, saved once, given back under each of their names."""
    for name, source in info.get("tied", {}).items():
        if source not in model_state:
            raise CheckpointError(f"state.json ties {name!r} to {source!r}, which model.safetensors does not hold")
        model_state[name] = model_state[source]
    return model_state


def step_of(path: Path) -> int:
    return int(path.name[len(PREFIX):])


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint folders of a run, oldest first (complete or not: `verify` tells)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=step_of)


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
    run_id: str | None = None,
) -> Path:
    """Writes checkpoint `step` of run `run_id` atomically, then deletes that run's older
    checkpoints beyond the newest `keep` (never another run's)."""
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
        _write_manifest(tmp, CHECKPOINT_FILES, run_id)
    mine = [p for p in checkpoint_dirs(run_dir) if step_of(p) <= step and _owner(p) == run_id]
    for old in mine[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _owner(path: Path) -> str | None:
    """The id of the run that wrote a checkpoint (None when its manifest is unreadable)."""
    try:
        manifest = _read_small_json(path / MANIFEST, "a manifest")
    except (OSError, CheckpointError):
        return None
    return manifest.get("run") if isinstance(manifest, dict) else None


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


def save_model(folder: str | os.PathLike, model_state: dict[str, torch.Tensor], info: dict[str, Any],
               run_id: str | None = None) -> Path:
    """The weights a run chose, with what it knows of them (config, step, metrics):
    model.safetensors, state.json and their manifest in `folder`, written atomically (a
    temporary folder, then a rename), replacing what was there."""
    st = _safetensors()
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_folder(folder) as tmp:
        st.save_file(_dedupe(model_state), str(tmp / "model.safetensors"))
        _write_json(tmp / "state.json", {**info, "tied": _ties(model_state)})
        _write_manifest(tmp, MODEL_FILES, run_id)
    return folder


def _read_info(path: Path, required: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """state.json of a verified folder, with each required key present and of its type."""
    try:
        info = json.loads((path / "state.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path / 'state.json'} is not valid JSON ({error})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path / 'state.json'} holds {type(info).__name__}, not an object")
    for key, kind in required.items():
        if key not in info:
            raise CheckpointError(f"{path / 'state.json'} has no {key!r}")
        if not isinstance(info[key], kind) or isinstance(info[key], bool):
            raise CheckpointError(f"{path / 'state.json'}: {key!r} is {info[key]!r}, not {getattr(kind, '__name__', kind)}")
    return info


def load(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, dict[str, torch.Tensor], dict[str, Any]]:
    """(model state, optimiser state, extra tensors, info) of one checkpoint folder, its files
    verified against the manifest first (DamagedCheckpoint when one differs)."""
    st = _safetensors()
    path = Path(path)
    manifest = verify(path, CHECKPOINT_FILES)
    info = _read_info(path, {"step": int, "config": dict, "optimizer": dict})
    info["run"] = manifest.get("run")
    if path.name.startswith(PREFIX) and path.name[len(PREFIX):].isdigit() and info["step"] != step_of(path):
        raise CheckpointError(f"{path / 'state.json'} says step {info['step']}, its folder says {step_of(path)}")
    meta = info["optimizer"]
    if not isinstance(meta.get("param_groups"), list) or not isinstance(meta.get("scalars"), dict):
        raise CheckpointError(f"{path / 'state.json'}: 'optimizer' lacks its 'param_groups' list or 'scalars' table")
    try:
        model_state = st.load_file(str(path / "model.safetensors"))
        tensors = st.load_file(str(path / "optimizer.safetensors"))
    except Exception as error:
        # only an unverified (earlier) checkpoint gets here with a file safetensors cannot read
        raise DamagedCheckpoint(f"checkpoint {path} is damaged: {type(error).__name__}: {error}") from error
    model_state = _untie(model_state, info)
    extra = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
    try:
        opt = unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("state.")}, meta)
    except ValueError as error:
        raise CheckpointError(f"checkpoint {path}: an optimiser key is malformed ({error})") from None
    return model_state, opt, extra, info


def load_newest(run_dir: str | os.PathLike) -> tuple[Path, tuple, list[Path]]:
    """(folder, `load` of it, the damaged newer folders skipped) of a run's newest intact
    checkpoint. A damaged checkpoint is skipped with a RunWarning; CheckpointError when
    there is none, or none intact."""
    found = checkpoint_dirs(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}")
    damaged: list[tuple[Path, DamagedCheckpoint]] = []
    for path in reversed(found):
        try:
            loaded = load(path)
        except DamagedCheckpoint as error:
            damaged.append((path, error))
            continue
        for _, error in damaged:
            warnings.warn(f"{error}; using {path.name} instead", RunWarning, stacklevel=2)
        return path, loaded, [bad for bad, _ in damaged]
    raise CheckpointError(f"no intact checkpoint in {Path(run_dir) / 'checkpoints'}: " + "; ".join(str(e) for _, e in damaged))


def set_aside(path: Path) -> Path:
    """Renames a damaged checkpoint out of the run's list (to step_N.damaged), kept for inspection."""
    target = path.with_name(path.name + ".damaged")
    if target.exists():
        shutil.rmtree(target)
    os.replace(path, target)
    return target


def check_fits(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], where: str) -> None:
    """CheckpointError naming the tensors of `state` (read from `where`) that are missing,
    unexpected, or of another shape than in `expected` (a model's state_dict), checked
    before anything is copied."""
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    wrong = [f"{name} is {tuple(state[name].shape)}, the model's {tuple(expected[name].shape)}"
             for name in expected if name in state and state[name].shape != expected[name].shape]
    problems = ([f"missing {_few(missing)}"] if missing else []) + ([f"unexpected {_few(unexpected)}"] if unexpected else [])
    problems += wrong[:3] + ([f"and {len(wrong) - 3} more of another shape"] if len(wrong) > 3 else [])
    if problems:
        raise CheckpointError(f"{where} does not fit the model: " + "; ".join(problems))


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state, info) of a run folder's chosen weights (its `model` folder, written at the
    end of a run), of a checkpoint folder, or of a run folder's newest intact checkpoint;
    every file verified against its manifest."""
    path = Path(path)
    if (path / "model" / "model.safetensors").is_file():
        path = path / "model"
    if (path / "model.safetensors").is_file() and not (path / "optimizer.safetensors").exists():
        verify(path, MODEL_FILES)
        info = _read_info(path, {})
        try:
            model_state = _safetensors().load_file(str(path / "model.safetensors"))
        except Exception as error:
            raise CheckpointError(f"model folder {path} is corrupt: {type(error).__name__}: {error}") from error
        return _untie(model_state, info), info
    if (path / "state.json").exists() or (path / MANIFEST).exists():
        model_state, _, _, info = load(path)
        return model_state, info
    if not checkpoint_dirs(path):
        raise CheckpointError(f"no checkpoint in {path} (expected {path}/checkpoints/{PREFIX}*/)")
    _, (model_state, _, _, info), _ = load_newest(path)
    return model_state, info


def holds_run(run_dir: str | os.PathLike) -> list[str]:
    """The files of a run that `run_dir` already holds (empty for a new or empty folder)."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def remove_leftovers(run_dir: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files and folders of saves that never finished (a process
    killed while writing). Only the lock holder calls it, so none is being written."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(TEMPORARY):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        warnings.warn(f"removed {len(removed)} unfinished save(s) left in {run_dir} by an earlier process: "
                      + ", ".join(p.name for p in removed), RunWarning, stacklevel=2)
    return removed


def _try_lock(fd: int) -> bool:
    """An exclusive lock on an open file without waiting; False when another holds it."""
    try:
        import fcntl
    except ImportError:
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class RunLock:
    """Ownership of a run folder: an exclusive lock on `run_dir/run.lock`, which records the
    holder's pid, host and start time. The lock dies with its process, so a lock file left
    by a killed run is taken over (with a RunWarning); one held by a live process is a
    CheckpointError naming it."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                holder = self._holder(fd)
                os.close(fd)
                raise CheckpointError(
                    f"run folder {self.path.parent} is in use by process {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')} since {holder.get('since', '?')}; wait for it to end or stop it "
                    f"(its lock: {self.path})"
                )
            # the holder before us may have removed the file between our open and our lock
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        previous = self._holder(fd)
        if previous:
            warnings.warn(
                f"run folder {self.path.parent} was locked by process {previous.get('pid', '?')} on "
                f"{previous.get('host', '?')}, which ended without releasing it; taking it over",
                RunWarning, stacklevel=2,
            )
        mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, mine.encode())
        os.fsync(fd)

    @staticmethod
    def _holder(fd: int) -> dict[str, Any]:
        """What the lock file says of its holder ({} for a new, empty file)."""
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            data = json.loads(os.read(fd, MAX_SMALL_FILE) or b"{}")
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return {"pid": "unknown"}
        return data if isinstance(data, dict) else {"pid": "unknown"}

    def release(self) -> None:
        """Removes the lock file, then lets go of it (a no-op the second time)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            # removed while still held, so no process can lock the old file after us
            self.path.unlink(missing_ok=True)
        except PermissionError:
            # Windows removes no open file: let go of it first
            os.close(fd)
            self.path.unlink(missing_ok=True)
            return
        os.close(fd)
