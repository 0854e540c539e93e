"""The training loop, top to bottom: build, resume, step, evaluate, checkpoint, report."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..layers import MIXERS, Mixer
from ..models import LM, EncoderDecoder, SequenceModel
from ..models.tpgn import build_forecaster
from ..tasks import IGNORE, Task, get_task
from . import checkpoint, distributed
from .config import RunConfig, TrainConfig, apply_overrides, check_resume, from_dict, to_dict
from .logging import MetricsLog
from .optim import build_optimizer, set_lr


@dataclass
class TrainResult:
    # the chosen weights' evaluation, "<split>/<metric>" -> value: the validation figures
    # (read during training) and the test figures (read once, at the end)
    metrics: dict[str, float]
    # the task's validation metric (e.g. "val/accuracy") and its value at the chosen step
    metric_name: str
    metric: float
    # training loss of the last step
    loss: float
    steps: int
    stopped_early: bool
    seconds: float
    num_parameters: int
    # bytes of recurrent state per sequence
    state_size: int
    model: nn.Module
    config: RunConfig
    run_dir: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # the step whose weights the run chose (train.select) and evaluated on the test split
    chosen_step: int = 0
    # torch CPU threads the run used, and why that many
    threads: int = 0
    threads_rule: str = ""
    # a private run's guarantee (PrivateTraining.report); None when privacy.method is "none"
    privacy: dict[str, Any] | None = None

    @property
    def test_metric_name(self) -> str:
        """The validation metric's counterpart on the test split ("test/<name>")."""
        return "test/" + self.metric_name.split("/", 1)[1]

    @property
    def test_metric(self) -> float:
        return self.metrics[self.test_metric_name]



def auxiliary_loss(model: nn.Module) -> torch.Tensor | float:
    """The auxiliary losses (such as MoM's load balancing) the mixers left in the last forward."""
    return sum((m.aux_loss for m in model.modules() if isinstance(m, Mixer) and m.aux_loss is not None), 0.0)

def build_model(config: RunConfig, task: Task) -> nn.Module:
    """The model the task needs, over config.model's backbone: an `LM` for next-token
    prediction over ids, an `EncoderDecoder` for seq2seq, the forecaster `model.forecaster`
    names (TPGN), else a `SequenceModel` with the task's input adapter and head; a task that
    defines `build_model(config)` builds its own (dynamical-systems reconstruction)."""
    if hasattr(task, "build_model"):
        return task.build_model(config)
    if task.head == "seq2seq":
        return EncoderDecoder(config.model, config.seq2seq, config.input, task.target_vocab_size)
    if task.head == "lm" and task.input == "tokens":
        return LM(config.model)
    if config.model.forecaster:
        return build_forecaster(config, task)
    return SequenceModel(config.model, config.input, config.head)


def fit_input_statistics(model: nn.Module, task: Task, config: RunConfig) -> None:
    """Real-valued inputs are normalised with the training split's statistics, measured
    once from examples no training step draws and stored in the model."""
    adapter = getattr(model, "input", None)
    if getattr(adapter, "normalize", False) and hasattr(adapter, "fit_statistics"):
        sample = task.sample(1024, batch_generator(config.train.seed, -1, stream=2), "train")
        adapter.fit_statistics(sample["inputs"])


def build_task_and_model(config: RunConfig) -> tuple[Task, nn.Module]:
    """The run's task and its model as training starts it: weights drawn from train.seed,
    input statistics fitted on the training split (on the CPU)."""
    torch.manual_seed(config.train.seed)
    task = get_task(config.task_name)(config.task)
    model = build_model(config, task)
    fit_input_statistics(model, task, config)
    return task, model


def batch_arguments(batch: dict[str, torch.Tensor], rows: slice, device: torch.device) -> dict[str, torch.Tensor]:
    """The model's keyword arguments from rows of a batch: every entry but the inputs
    (labels, and e.g. an encoder–decoder's target_inputs)."""
    return {key: value[rows].to(device) for key, value in batch.items() if key != "inputs"}


def batch_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The generator of training batch `step`: a pure function of (seed, step), so a
    resumed run and every process of a distributed run draw the same data."""
    mixed = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def eval_sets(task: Task, config: RunConfig, splits: tuple[str, ...] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """The evaluation data of `splits` (default: all of the task's), drawn from streams no
    training step uses (negative steps), each split from its own."""
    splits = task.eval_splits if splits is None else splits
    return {
        split: task.sample(config.task.eval_examples, batch_generator(config.train.seed, -1 - task.eval_splits.index(split), stream=1), split)
        for split in splits
    }


def validation_splits(task: Task) -> tuple[str, ...]:
    """The splits a run reads while it trains: every evaluation split but the test splits."""
    return tuple(split for split in task.eval_splits if split not in test_splits(task))


def test_splits(task: Task) -> tuple[str, ...]:
    """The splits read once, at the end: "test" and any extra one named "test_<what>"
    (e.g. an extrapolation split at a larger size)."""
    return tuple(split for split in task.eval_splits if split == "test" or split.startswith("test_"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {name!r} but CUDA is not available; use cpu or auto")
    return device


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, sets: dict, batch_size: int, device: torch.device, autocast) -> dict[str, float]:
    """Every eval split, in batches: the task's metrics plus the mean loss, by "<split>/<name>"."""
    was_training = model.training
    model.eval()
    results: dict[str, float] = {}
    for split, data in sets.items():
        inputs, labels = data["inputs"], data["labels"]
        outputs, loss_sum = [], 0.0
        # a task scored at a few positions keeps the logits of those only (and their labels):
        # at a test length of thousands, [N, T, V] would not fit in memory
        scored = int((labels != IGNORE).sum(1).max()) if task.scored_positions_only else 0
        kept_labels = []
        for start in range(0, len(inputs), batch_size):
            rows = slice(start, start + batch_size)
            with autocast():
                out = model(inputs[rows].to(device), **batch_arguments(data, rows, device))
            logits = out.logits.float().cpu()
            if task.scored_positions_only:
                # the scored positions first, in order; the rest of the `scored` columns hold IGNORE labels
                order = (labels[rows] == IGNORE).to(torch.uint8).argsort(dim=1, stable=True)[:, :scored]
                logits = logits.gather(1, order[..., None].expand(-1, -1, logits.shape[-1]))
                kept_labels.append(labels[rows].gather(1, order))
            outputs.append(logits)
            loss_sum += float(out.loss) * len(out.logits)
        if task.scored_positions_only:
            labels = torch.cat(kept_labels)
        for name, value in task.metrics(torch.cat(outputs), labels).items():
            results[f"{split}/{name}"] = value
        # figures a task reads from the model itself (a reconstruction's Lyapunov exponent)
        if hasattr(task, "model_metrics"):
            for name, value in task.model_metrics(model, data).items():
                results[f"{split}/{name}"] = value
        results[f"{split}/loss"] = loss_sum / len(inputs)
    model.train(was_training)
    return results


def _reached(value: float, target: float | None, higher_is_better: bool) -> bool:
    if target is None or math.isnan(value):
        return False
    return value >= target if higher_is_better else value <= target


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (SIGINT) or SIGTERM, after saving a checkpoint of its last
    completed step where it could; the message says how to continue it."""

    def __init__(self, message: str, step: int | None, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.step, self.signum = step, signum


class NothingToResume(Exception):
    """A resume of a run that has nothing left to do: it finished (or reached its target),
    and its result and chosen weights are written. The run folder is left as it was."""


def train(
    config: RunConfig,
    run_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Trains `config` and returns the final evaluation. With `run_dir`, writes
    config.json, metrics.jsonl, checkpoints and result.json there, holding the folder's
    lock while it runs; a fresh run refuses a folder that already holds one.
    `resume=True` continues the folder's run from its newest intact checkpoint on the same
    curve; `config` must be the run's own (`saved_config(run_dir)`), changed only where a
    resume may change it (`RESUMABLE`); NothingToResume when the run is finished.
    `callback(step, record)` runs after every optimiser step. Ctrl-C or SIGTERM saves a
    checkpoint of the last completed step and raises `Interrupted` (a KeyboardInterrupt)."""
    threads = torch.get_num_threads()
    try:
        return _train(config, run_dir, resume, progress, callback)
    finally:
        torch.set_num_threads(threads)


def saved_config(run_dir: str | os.PathLike, overrides: dict[str, Any] | list[tuple[str, Any]] | None = None) -> RunConfig:
    """The config of the run in `run_dir` (its config.json, else its newest checkpoint's) with
    `overrides` applied, each checked to be one a resume may make (`RESUMABLE`)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if path.is_file():
        try:
            saved = from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise checkpoint.CheckpointError(f"{path} is not valid JSON ({error})") from None
        where = str(path)
    else:
        found, (_, _, _, info), _ = checkpoint.load_newest(run_dir)
        saved, where = from_dict(info["config"]), str(found)
    if not overrides:
        return saved
    given = apply_overrides(saved, overrides)
    check_resume(saved, given, where)
    return given


def _train(config: RunConfig, run_dir, resume: bool, progress: bool, callback) -> TrainResult:
    start = time.perf_counter()
    device, context, threads = _join_processes(config.train)
    run_dir = Path(run_dir) if run_dir is not None else None
    with _own(run_dir, resume, context, device):
        run = _build(config, device, context, threads)
        curve = _resume(run_dir, run) if resume else _Curve(run_id=uuid.uuid4().hex)
        curve.started = start
        # the test split is not even drawn until the run has chosen its weights
        sets = eval_sets(run.task, config, validation_splits(run.task))
        report = _Report(run, run_dir, curve, progress)
        try:
            _loop(run, run_dir, sets, curve, report, callback)
        finally:
            report.close()
        return _result(run, run_dir, sets, curve)


def _loop(run: _Run, run_dir: Path | None, sets: dict, curve: _Curve, report: _Report, callback) -> None:
    """The optimiser steps from where the curve stands to train.steps (or the target). The
    first SIGINT or SIGTERM lets the step in progress finish; the run then saves it and
    raises Interrupted. A second SIGINT interrupts at once and saves nothing."""
    tc = run.config.train
    if curve.stopped_early:
        return
    in_step = False
    with _Signals() as signals:
        try:
            for step in range(curve.steps, tc.steps):
                in_step = True
                curve.loss, lr = _train_step(run, step)
                curve.steps = step + 1
                in_step = False
                record = report.train_step(curve.steps, curve.loss, lr, run.private.log if run.private else None)
                if curve.steps % tc.eval_every == 0 or curve.steps == tc.steps:
                    _eval_step(run, sets, curve, report)
                report.show(curve)
                if run_dir is not None and _checkpoint_due(tc, curve):
                    _save(run_dir, run, curve)
                if callback is not None:
                    callback(curve.steps, record)
                if curve.stopped_early:
                    break
                # every process stops after the same step
                if distributed.any_true(signals.received is not None, run.context, run.device):
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            saved = False
            if run_dir is not None and not signals.forced and not in_step and curve.steps > 0:
                if curve.saved_step != curve.steps:
                    _save(run_dir, run, curve)
                saved = True
            raise _interrupted(run_dir, curve, saved, signals.received or signal.SIGINT) from None


def _interrupted(run_dir: Path | None, curve: _Curve, saved: bool, signum: int) -> Interrupted:
    """The Interrupted exception of a run stopped after `curve.steps` steps, with its one line."""
    if run_dir is None:
        return Interrupted(f"interrupted at step {curve.steps} (no run folder: nothing saved)", None, signum)
    step = curve.steps if saved else curve.saved_step
    if step is None:
        return Interrupted(f"interrupted before the first checkpoint of {run_dir}: nothing to resume "
                           f"(remove the folder to start again)", None, signum)
    where = f"at step {step}" if saved else f"during step {curve.steps + 1}; the newest checkpoint is step {step}"
    return Interrupted(f"interrupted {where}; continue with: recur train --run-dir {run_dir} --resume", step, signum)


class _Signals:
    """SIGINT and SIGTERM while training (in the main thread): the first is noted in
    `received` for the loop to stop at the end of the step; a second SIGINT raises
    KeyboardInterrupt at once (`forced`). The previous handlers come back on exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.forced = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            self.forced = True
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _own(run_dir: Path | None, resume: bool, context: distributed.Context, device: torch.device):
    """Holds the run folder for the run: its lock (taken by the main process), the
    unfinished saves of earlier processes removed, and a fresh run refused a folder that
    already holds one."""
    if run_dir is None:
        yield
        return
    lock, error = None, None
    if context.is_main:
        try:
            lock = checkpoint.RunLock(run_dir)
            checkpoint.remove_leftovers(run_dir)
            existing = checkpoint.holds_run(run_dir)
            if existing and not resume:
                raise checkpoint.CheckpointError(
                    f"{run_dir} already holds a run ({', '.join(existing)}); resume it (recur train --run-dir "
                    f"{run_dir} --resume, or train(..., resume=True)) or pick another run folder"
                )
        except BaseException as problem:
            if lock is not None:
                lock.release()
            error = problem
    if not distributed.all_true(error is None, context, device):
        raise error if error is not None else checkpoint.CheckpointError(f"the main process could not take {run_dir}")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


# the most CPU threads a run takes by itself: the models of the recipes are small enough
# that per-op overhead, not arithmetic, bounds a step
MAX_AUTO_THREADS = 4


def cpu_threads(tc: TrainConfig, processes: int = 1) -> tuple[int, str]:
    """torch CPU threads for a run, and the rule that chose them: train.threads when set;
    else OMP_NUM_THREADS when set; else the CPUs this process may use that the machine's
    load (1-minute average) leaves idle, shared by the processes of a distributed run,
    between 1 and MAX_AUTO_THREADS."""
    if tc.threads:
        return tc.threads, f"train.threads {tc.threads}"
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads(), f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    idle = int(max(cpus - load, 0.0)) // processes
    threads = max(1, min(idle, cpus // processes, MAX_AUTO_THREADS))
    return threads, f"auto: {cpus} CPUs, load {load:.1f}" + (f", {processes} processes" if processes > 1 else "")


def _join_processes(tc: TrainConfig) -> tuple[torch.device, distributed.Context, tuple[int, str]]:
    """This process's device and place among the processes torchrun started (one process:
    no process group), with its CPU threads set (the number and the rule that chose it)."""
    device = resolve_device(tc.device)
    context = distributed.init(str(device))
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    threads = cpu_threads(tc, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads[0])
    if tc.batch_size % (tc.grad_accum * context.world_size):
        raise ValueError(
            f"train.batch_size = {tc.batch_size} must be divisible by grad_accum × processes = "
            f"{tc.grad_accum} × {context.world_size}"
        )
    return device, context, threads


@dataclass
class _Run:
    """What every step reads, built once before the first."""

    config: RunConfig
    device: torch.device
    context: distributed.Context
    task: Task
    # wrapped in DDP, or sharded by FSDP, when several processes run
    model: nn.Module
    # the model, compiled when train.compile (compilation waits for the first call)
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    use_bf16: bool
    # examples in one micro-batch of this process
    micro_batch: int
    num_parameters: int
    # bytes of recurrent state per sequence
    state_size: int
    # torch CPU threads, and the rule that chose them
    threads: tuple[int, str] = (1, "")
    # the weights of the best evaluation so far (on the CPU), when train.select is "best"
    best_state: dict[str, torch.Tensor] | None = None
    # DP-SGD or input perturbation (recur.train.privacy), when privacy.method is not "none"
    private: Any = None

    def autocast(self):
        """bf16 autocast where train.precision asks for it, else nothing."""
        if not self.use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def evaluate(self, sets: dict) -> dict[str, float]:
        """Every eval split on the unwrapped model, in batches of one process's share of a step."""
        batch_size = self.micro_batch * self.config.train.grad_accum
        return evaluate(distributed.unwrap(self.model), self.task, sets, batch_size, self.device, self.autocast)


def _build(config: RunConfig, device: torch.device, context: distributed.Context, threads: tuple[int, str]) -> _Run:
    """The task, the model from the seed (wrapped for several processes) and its optimiser."""
    tc = config.train
    task, model = build_task_and_model(config)
    model = model.to(device)
    num_parameters, state_size = model.num_parameters(), model.state_size()
    # wrap first: FSDP replaces the parameters the optimiser must hold
    model = distributed.wrap(model, context, tc.distributed)
    optimizer = build_optimizer(model, tc)
    private = None
    if config.privacy.method != "none":
        from .privacy import PrivateTraining

        private = PrivateTraining(config, task, context, batch_generator)
    return _Run(
        config=config, device=device, context=context, task=task, model=model,
        forward=torch.compile(model) if tc.compile else model, optimizer=optimizer,
        use_bf16=tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda"),
        micro_batch=tc.batch_size // (tc.grad_accum * context.world_size),
        num_parameters=num_parameters, state_size=state_size, threads=threads, private=private,
    )


@dataclass
class _Curve:
    """Where a run stands: what a checkpoint keeps and the result reports."""

    # the id of the run, kept by its checkpoints: a run deletes only checkpoints with its id
    run_id: str
    # optimiser steps done
    steps: int = 0
    # every evaluation so far, {"step": ..., "eval": {"<split>/<metric>": value}}
    history: list[dict[str, Any]] = field(default_factory=list)
    # training loss of the last step
    loss: float = float("nan")
    stopped_early: bool = False
    # the evaluation with the best validation metric so far: its step and value
    best_step: int | None = None
    best_value: float | None = None
    # the step of the newest checkpoint (None before the first)
    saved_step: int | None = None
    # seconds the run spent before this process took it over (from its checkpoint), and
    # when this process started
    earlier_seconds: float = 0.0
    started: float = 0.0
    # the config changes each resume made: {"step": ..., "changes": {key: [saved, given]}}
    resumes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        """The last evaluation (empty before the first)."""
        return self.history[-1]["eval"] if self.history else {}

    @property
    def seconds(self) -> float:
        """Time spent on the run, in every process that trained it up to this step."""
        return self.earlier_seconds + time.perf_counter() - self.started


def _resume(run_dir: Path | None, run: _Run) -> _Curve:
    """Loads the newest intact checkpoint of `run_dir` into the run (weights, optimiser, RNG),
    after checking that it fits the run's config and model; returns where it stood.
    Damaged newer checkpoints are set aside (step_N.damaged) with a warning."""
    config = run.config
    if run_dir is None:
        raise ValueError("resume needs a run directory")
    found, (model_state, optimizer_state, extra, info), damaged = checkpoint.load_newest(run_dir)
    try:
        saved = from_dict(info["config"])
    except ValueError as error:
        raise checkpoint.CheckpointError(f"{found / 'state.json'}: its config is not valid: {error}") from None
    changes = check_resume(saved, config, str(found))
    curve = _checked_curve(found, info, saved)
    if curve.stopped_early or curve.steps >= config.train.steps:
        _refuse_if_done(run_dir, curve)
    checkpoint.check_fits(distributed.unwrap(run.model).state_dict(), model_state, f"checkpoint {found}")
    _check_optimizer(optimizer_state, run.optimizer, model_state, found)
    try:
        distributed.load_full_state(
            run.model, run.optimizer, model_state, optimizer_state, run.context, config.train.distributed
        )
    except (RuntimeError, KeyError, ValueError) as error:
        raise checkpoint.CheckpointError(f"checkpoint {found} does not fit this model: {error}") from error
    _restore_rng(extra, found)
    if run.private is not None:
        run.private.load_state(info.get("privacy"), curve.steps, f"checkpoint {found}")
    if config.train.select == "best" and curve.best_step is not None:
        # the best weights: saved beside the checkpoint, or the checkpoint's own
        best = {k.removeprefix("best."): v for k, v in extra.items() if k.startswith("best.")}
        if best:
            checkpoint.check_fits(distributed.unwrap(run.model).state_dict(), best, f"the best weights in {found}")
        run.best_state = best if best else _snapshot(run.model)
    if changes:
        curve.resumes.append({"step": curve.steps, "changes": {k: list(v) for k, v in changes.items()}})
        warnings.warn(f"resuming {run_dir} at step {curve.steps} with "
                      + ", ".join(f"{k} {old} → {new}" for k, (old, new) in changes.items()),
                      checkpoint.RunWarning, stacklevel=4)
    distributed.barrier(run.context)
    if run.context.is_main:
        for path in damaged:
            checkpoint.set_aside(path)
    return curve


def _checked_curve(found: Path, info: dict[str, Any], saved: RunConfig) -> _Curve:
    """The curve a checkpoint's state.json describes, every number checked against the
    config it was saved with before anything is built from it."""
    where = found / "state.json"

    def fail(what: str) -> checkpoint.CheckpointError:
        return checkpoint.CheckpointError(f"{where}: {what}")

    step = info["step"]
    if not 1 <= step <= saved.train.steps:
        raise fail(f"step {step} is outside [1, train.steps = {saved.train.steps}]")
    resumes = info.get("resumes", [])
    if not isinstance(resumes, list) or len(resumes) > step:
        raise fail(f"'resumes' must be a list of at most {step} entries at step {step}")
    # one evaluation every eval_every steps, and one at the end of each train.steps the run had
    most = step // saved.train.eval_every + 1 + len(resumes)
    history = info.get("history", [])
    if not isinstance(history, list) or len(history) > most:
        raise fail(f"'history' must be a list of at most {most} evaluations at step {step}")
    for entry in history:
        if not (isinstance(entry, dict) and isinstance(entry.get("step"), int) and 1 <= entry["step"] <= step
                and isinstance(entry.get("eval"), dict)):
            raise fail(f"'history' holds {str(entry)[:80]}, not an evaluation at a step in [1, {step}]")
    best_step, best_value = info.get("best_step"), info.get("best_value")
    if best_step is not None and not (isinstance(best_step, int) and 1 <= best_step <= step):
        raise fail(f"best_step {best_step!r} is outside [1, {step}]")
    seconds = info.get("seconds", 0.0)
    if not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
        raise fail(f"seconds {seconds!r} is not a time")
    loss = info.get("loss")
    return _Curve(
        run_id=info.get("run") or uuid.uuid4().hex, steps=step, history=list(history),
        loss=float(loss) if isinstance(loss, (int, float)) else math.nan,
        stopped_early=bool(info.get("stopped_early", False)), best_step=best_step,
        best_value=best_value if isinstance(best_value, (int, float)) else None, saved_step=step,
        earlier_seconds=float(seconds), resumes=list(resumes),
    )


def _refuse_if_done(run_dir: Path, curve: _Curve) -> None:
    """NothingToResume when the run finished and wrote its result and chosen weights (a run
    stopped after its last checkpoint but before those resumes to write them)."""
    try:
        result = json.loads((run_dir / "result.json").read_text())
        checkpoint.verify(run_dir / "model", checkpoint.MODEL_FILES)
    except (OSError, ValueError, checkpoint.CheckpointError):
        return
    if not isinstance(result, dict) or result.get("steps") != curve.steps:
        return
    why = (f"reached its target and stopped early at step {curve.steps}" if curve.stopped_early
           else f"trained all its {curve.steps} steps (to train longer: --train.steps N with N > {curve.steps})")
    raise NothingToResume(f"{run_dir} has nothing to resume: the run {why}")


def _check_optimizer(state: dict, optimizer: torch.optim.Optimizer, model_state: dict[str, torch.Tensor], found: Path) -> None:
    """CheckpointError unless every saved optimiser tensor has its parameter's shape (or is a
    scalar step count), checked before the optimiser holds any of them."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for key, per_param in state["state"].items():
        if isinstance(key, int):
            if not 0 <= key < len(params):
                raise checkpoint.CheckpointError(f"checkpoint {found}: optimiser state for parameter {key}; the model has {len(params)}")
            shape = params[key].shape
        elif key in model_state:
            # under FSDP the keys are the parameters' names
            shape = model_state[key].shape
        else:
            raise checkpoint.CheckpointError(f"checkpoint {found}: optimiser state for {key!r}, which is no parameter of the model")
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != shape:
                raise checkpoint.CheckpointError(
                    f"checkpoint {found}: optimiser tensor state.{key}.{name} is {tuple(value.shape)}, "
                    f"its parameter {tuple(shape)}"
                )


def _restore_rng(extra: dict[str, torch.Tensor], found: Path) -> None:
    """The random number generators as the checkpoint left them, each checked first."""
    wanted = {"rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and "rng_cuda" in extra:
        wanted["rng_cuda"] = torch.cuda.get_rng_state()
    for name, like in wanted.items():
        state = extra.get(name)
        if state is None:
            raise checkpoint.CheckpointError(f"checkpoint {found} has no {name} (optimizer.safetensors: extra.{name})")
        if state.dtype != like.dtype or state.shape != like.shape:
            raise checkpoint.CheckpointError(
                f"checkpoint {found}: {name} is {state.dtype} {tuple(state.shape)}, expected {like.dtype} {tuple(like.shape)}"
            )
    torch.set_rng_state(extra["rng_cpu"])
    if "rng_cuda" in wanted:
        torch.cuda.set_rng_state(extra["rng_cuda"])


def _train_step(run: _Run, step: int, batch: dict[str, torch.Tensor] | None = None) -> tuple[float, float]:
    """One optimiser step on training batch `step` (or on `batch`): (loss averaged over
    processes, learning rate). A private run takes its own step (recur.train.privacy)."""
    if run.private is not None and batch is None:
        return run.private.step(run, step, _train_step)
    tc, micro = run.config.train, run.micro_batch
    lr = set_lr(run.optimizer, step, tc)
    if batch is None:
        batch = run.task.train_batch(tc.batch_size, batch_generator(tc.seed, step), step)
    # this process's slice of the global batch, then its micro-batches
    share = micro * tc.grad_accum
    mine = {k: v[run.context.rank * share:(run.context.rank + 1) * share] for k, v in batch.items()}
    step_loss = 0.0
    for i in range(tc.grad_accum):
        rows = slice(i * micro, (i + 1) * micro)
        inputs = mine["inputs"][rows].to(run.device)
        # DDP averages gradients across processes once, in the last micro-batch's backward
        last = i == tc.grad_accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(run.model, "no_sync") else run.model.no_sync()
        with sync:
            with run.autocast():
                loss = (run.forward(inputs, **batch_arguments(mine, rows, run.device)).loss + auxiliary_loss(run.model)) / tc.grad_accum
            loss.backward()
        step_loss += float(loss.detach())
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), tc.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    loss_value = distributed.mean(step_loss, run.context, run.device)
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"training loss became {loss_value} at step {step + 1}; lower train.lr or check the data")
    return loss_value, lr


def _eval_step(run: _Run, sets: dict, curve: _Curve, report: _Report) -> None:
    """Evaluates the validation splits, logs and keeps the result, keeps the weights when
    they are the best so far, and stops the run once it reaches train.target (before the
    last step)."""
    tc, task = run.config.train, run.task
    metrics = run.evaluate(sets)
    report.evaluation(curve.steps, metrics)
    curve.history.append({"step": curve.steps, "eval": metrics})
    value = metrics[task.metric]
    if curve.best_value is None or _better(value, curve.best_value, task.higher_is_better):
        curve.best_step, curve.best_value = curve.steps, value
        if tc.select == "best":
            run.best_state = _snapshot(run.model)
    reached = _reached(value, tc.target, task.higher_is_better)
    curve.stopped_early = reached and curve.steps < tc.steps


def _better(value: float, best: float, higher_is_better: bool) -> bool:
    if math.isnan(value):
        return False
    return math.isnan(best) or (value > best if higher_is_better else value < best)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the (unwrapped) model's weights on the CPU."""
    return {name: t.detach().to("cpu", copy=True) for name, t in distributed.unwrap(model).state_dict().items()}


class _Report:
    """What a run shows as it goes: config.json and metrics.jsonl (and TensorBoard) from the
    main process, tokens/s over each logging window, and the progress bar. A resume that
    changed the config records the change in metrics.jsonl: {"step", "resume": {key: [saved, given]}}."""

    def __init__(self, run: _Run, run_dir: Path | None, curve: _Curve, progress: bool) -> None:
        tc, main = run.config.train, run.context.is_main
        self.steps, self.log_every, self.metric = tc.steps, tc.log_every, run.task.metric
        self.log = MetricsLog(run_dir if main else None, tensorboard=tc.tensorboard, truncate_after=curve.steps)
        if run_dir is not None and main:
            _write_json(run_dir / "config.json", to_dict(run.config))
            if curve.resumes and curve.resumes[-1]["step"] == curve.steps:
                with open(self.log.path, "a") as f:
                    f.write(json.dumps({"step": curve.steps, "resume": curve.resumes[-1]["changes"]}) + "\n")
        self.tokens_per_step = tc.batch_size * run.task.tokens_per_example()
        self.bar = _progress_bar(tc.steps, curve.steps, progress and main)
        self.window_start, self.window_steps, self.tokens_per_s = time.perf_counter(), 0, 0.0

    def train_step(self, done: int, loss: float, lr: float, extra: Callable[[], dict] | None = None) -> dict[str, Any]:
        """The step's record; every train.log_every steps and at the last it gets the tokens/s
        since the previous logged step (and `extra()`, e.g. a private run's ε) and is written."""
        self.window_steps += 1
        record: dict[str, Any] = {"step": done, "loss": loss, "lr": lr}
        if done % self.log_every == 0 or done == self.steps:
            elapsed = time.perf_counter() - self.window_start
            self.tokens_per_s = self.tokens_per_step * self.window_steps / max(elapsed, 1e-9)
            record["tokens_per_s"] = self.tokens_per_s
            if extra is not None:
                record.update(extra())
            self.window_start, self.window_steps = time.perf_counter(), 0
            self.log.write(record)
        return record

    def evaluation(self, done: int, metrics: dict[str, float]) -> None:
        self.log.write({"step": done, "eval": metrics})

    def show(self, curve: _Curve) -> None:
        """One more step on the progress bar, with the loss, the headline metric and tokens/s."""
        if self.bar is None:
            return
        self.bar.update(1)
        postfix = {"loss": f"{curve.loss:.4f}"}
        if self.metric in curve.metrics:
            postfix[self.metric.split("/")[-1]] = f"{curve.metrics[self.metric]:.4f}"
        if self.tokens_per_s:
            postfix["tok/s"] = f"{self.tokens_per_s:,.0f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log.close()


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty() and not os.environ.get("CI")
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                mininterval=0.2 if interactive else 5.0, file=sys.stderr)


def _checkpoint_due(tc: TrainConfig, curve: _Curve) -> bool:
    """Every train.checkpoint_every steps (by default at every evaluation, so an interrupted
    or killed run loses at most eval_every steps), at the last step and when stopping early."""
    every = tc.checkpoint_every or tc.eval_every
    return curve.steps % every == 0 or curve.steps == tc.steps or curve.stopped_early


def _save(run_dir: Path, run: _Run, curve: _Curve) -> None:
    """A checkpoint after step curve.steps: weights, optimiser, RNG, the evaluations so far,
    the best weights (when they are not the current ones) and the time spent. A failed
    write (a full disk) stops the run with a CheckpointError; the earlier checkpoints stay."""
    tc = run.config.train
    model_state, optimizer_state = distributed.full_state(run.model, run.optimizer, run.context, tc.distributed)
    failure = None
    if run.context.is_main:
        info = {
            "config": to_dict(run.config), "history": curve.history,
            "best_step": curve.best_step, "best_value": curve.best_value, "loss": curve.loss,
            "stopped_early": curve.stopped_early, "seconds": curve.seconds, "resumes": curve.resumes,
        }
        if run.private is not None:
            info["privacy"] = run.private.state()
        extra = _rng_state()
        if run.best_state is not None and curve.best_step != curve.steps:
            extra.update((f"best.{name}", t) for name, t in run.best_state.items())
        try:
            checkpoint.save(run_dir, curve.steps, model_state, optimizer_state, extra, info, tc.keep_checkpoints,
                            run_id=curve.run_id)
        except OSError as error:
            failure = error
    if not distributed.all_true(failure is None, run.context, run.device):
        kept = f"the newest checkpoint is still step {curve.saved_step}" if curve.saved_step else "no earlier checkpoint"
        reason = f"{failure.strerror or failure}" if failure is not None else "the main process failed"
        raise checkpoint.CheckpointError(
            f"could not save the checkpoint of step {curve.steps} in {run_dir / 'checkpoints'}: {reason}; {kept}"
        ) from failure
    curve.saved_step = curve.steps


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state()
    return state


def _result(run: _Run, run_dir: Path | None, sets: dict, curve: _Curve) -> TrainResult:
    """The chosen weights (train.select) and their evaluation: the validation figures of
    their step, then the test split, drawn and read here for the first and only time.
    Written to result.json, and the weights with the config to run_dir/model."""
    task, config = run.task, run.config
    model = distributed.unwrap(run.model)
    chosen = curve.steps
    if config.train.select == "best" and run.best_state is not None:
        chosen = curve.best_step
        model.load_state_dict(run.best_state)
    validation = next((e["eval"] for e in reversed(curve.history) if e["step"] == chosen), None)
    if validation is None:
        validation = run.evaluate(sets)
        curve.history.append({"step": chosen, "eval": validation})
    metrics = {**validation, **run.evaluate(eval_sets(task, config, test_splits(task)))}
    result = TrainResult(
        metrics=metrics, metric_name=task.metric, metric=metrics[task.metric], loss=curve.loss,
        steps=curve.steps, stopped_early=curve.stopped_early, seconds=curve.seconds,
        num_parameters=run.num_parameters, state_size=run.state_size,
        model=model, config=config, run_dir=run_dir, history=curve.history, chosen_step=chosen,
        threads=run.threads[0], threads_rule=run.threads[1],
        privacy=run.private.report() if run.private is not None else None,
    )
    if run_dir is not None:
        weights = distributed.full_model_state(run.model, run.context, config.train.distributed)
        if run.context.is_main:
            checkpoint.save_model(run_dir / "model", weights, {"config": to_dict(config), "step": chosen, "metrics": metrics},
                                  run_id=curve.run_id)
            _write_json(run_dir / "result.json", summary(result))
        distributed.barrier(run.context)
    return result


def summary(result: TrainResult) -> dict[str, Any]:
    """The result as a JSON-ready dict (what `recur train` prints and writes to result.json)."""
    model = result.config.model
    return {
        "task": result.config.task_name,
        "model": model.describe(),
        "parameters": result.num_parameters,
        "state_bytes_per_sequence": result.state_size,
        # layers whose state grows with the sequence (key-value caches) count per token
        "growing_state": any(name in MIXERS and not MIXERS[name].constant_state for name in model.layer_mixers()),
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "chosen_step": result.chosen_step,
        "select": result.config.train.select,
        # every process that trained the run, up to its last checkpoint
        "seconds": round(result.seconds, 1),
        "threads": result.threads,
        "threads_rule": result.threads_rule,
        "final_loss": result.loss,
        "metric": result.metric_name,
        "value": result.metric,
        "test_metric": "test/" + result.metric_name.split("/", 1)[1],
        "test_value": result.test_metric,
        "metrics": result.metrics,
        **({"privacy": result.privacy} if result.privacy is not None else {}),
    }


def _write_json(path: Path, data: Any) -> None:
    """`data` as JSON at `path`, written beside it first and renamed into place."""
    tmp = path.with_name(checkpoint.TEMPORARY + path.name)
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
