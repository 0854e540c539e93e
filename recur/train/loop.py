"""The training loop, top to bottom: build, resume, step, evaluate, checkpoint, report."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..layers import MIXERS, Mixer
from ..models import LM, HeadConfig, InputConfig, LMConfig, SequenceModel
from ..tasks import Task, get_task
from . import checkpoint, distributed
from .config import RunConfig, TrainConfig, from_dict, to_dict
from .logging import MetricsLog
from .optim import build_optimizer, set_lr


@dataclass
class TrainResult:
    # the last evaluation: "<split>/<metric>" -> value
    metrics: dict[str, float]
    # the task's headline metric (e.g. "valid/accuracy") and its final value
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



def auxiliary_loss(model: nn.Module) -> torch.Tensor | float:
    """The auxiliary losses (such as MoM's load balancing) the mixers left in the last forward."""
    return sum((m.aux_loss for m in model.modules() if isinstance(m, Mixer) and m.aux_loss is not None), 0.0)

def build_model(config: RunConfig, task: Task) -> nn.Module:
    """The model the task's head needs, over config.model's backbone."""
    model_config: LMConfig = config.model
    if task.head == "lm":
        return LM(model_config)
    head = HeadConfig(kind=task.head, num_outputs=task.num_outputs, pooling=config.head.pooling, loss=config.head.loss)
    return SequenceModel(model_config, InputConfig(kind="tokens"), head)


def batch_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The generator of training batch `step`: a pure function of (seed, step), so a
    resumed run and every process of a distributed run draw the same data."""
    mixed = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def eval_sets(task: Task, config: RunConfig) -> dict[str, dict[str, torch.Tensor]]:
    # eval data comes from streams no training step uses (negative steps)
    return {
        split: task.sample(config.task.eval_examples, batch_generator(config.train.seed, -1 - i, stream=1), split)
        for i, split in enumerate(task.eval_splits)
    }


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
        for start in range(0, len(inputs), batch_size):
            with autocast():
                out = model(inputs[start:start + batch_size].to(device), labels=labels[start:start + batch_size].to(device))
            outputs.append(out.logits.float().cpu())
            loss_sum += float(out.loss) * len(out.logits)
        for name, value in task.metrics(torch.cat(outputs), labels).items():
            results[f"{split}/{name}"] = value
        results[f"{split}/loss"] = loss_sum / len(inputs)
    model.train(was_training)
    return results


def _reached(value: float, target: float | None, higher_is_better: bool) -> bool:
    if target is None or math.isnan(value):
        return False
    return value >= target if higher_is_better else value <= target


def train(
    config: RunConfig,
    run_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Trains `config` and returns the final evaluation. With `run_dir`, writes
    config.json, metrics.jsonl, checkpoints and result.json there; `resume=True`
    continues from its newest checkpoint on the same curve. `callback(step, record)`
    runs after every optimiser step."""
    threads = torch.get_num_threads()
    try:
        return _train(config, run_dir, resume, progress, callback)
    finally:
        torch.set_num_threads(threads)


def _train(config: RunConfig, run_dir, resume: bool, progress: bool, callback) -> TrainResult:
    tc = config.train
    device, context = _join_processes(tc)
    start = time.perf_counter()
    run = _build(config, device, context)
    run_dir = Path(run_dir) if run_dir is not None else None
    curve = _resume(run_dir, run) if resume else _Curve()
    sets = eval_sets(run.task, config)
    report = _Report(run, run_dir, curve.steps, progress)

    run.model.train()
    for step in range(curve.steps, tc.steps):
        curve.loss, lr = _train_step(run, step)
        curve.steps = step + 1
        record = report.train_step(curve.steps, curve.loss, lr)
        if curve.steps % tc.eval_every == 0 or curve.steps == tc.steps:
            _eval_step(run, sets, curve, report)
        report.show(curve)
        if run_dir is not None and _checkpoint_due(tc, curve):
            _save(run_dir, run, curve)
        if callback is not None:
            callback(curve.steps, record)
        if curve.stopped_early:
            break
    report.close()
    return _result(run, run_dir, sets, curve, start)


def _join_processes(tc: TrainConfig) -> tuple[torch.device, distributed.Context]:
    """This process's device and place among the processes torchrun started (one process:
    no process group), with its CPU threads set."""
    device = resolve_device(tc.device)
    context = distributed.init(str(device))
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.batch_size % (tc.grad_accum * context.world_size):
        raise ValueError(
            f"train.batch_size = {tc.batch_size} must be divisible by grad_accum × processes = "
            f"{tc.grad_accum} × {context.world_size}"
        )
    return device, context


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

    def autocast(self):
        """bf16 autocast where train.precision asks for it, else nothing."""
        if not self.use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def evaluate(self, sets: dict) -> dict[str, float]:
        """Every eval split on the unwrapped model, in batches of one process's share of a step."""
        batch_size = self.micro_batch * self.config.train.grad_accum
        return evaluate(distributed.unwrap(self.model), self.task, sets, batch_size, self.device, self.autocast)


def _build(config: RunConfig, device: torch.device, context: distributed.Context) -> _Run:
    """The task, the model from the seed (wrapped for several processes) and its optimiser."""
    tc = config.train
    torch.manual_seed(tc.seed)
    task = get_task(config.task_name)(config.task)
    model = build_model(config, task).to(device)
    num_parameters, state_size = model.num_parameters(), model.state_size()
    # wrap first: FSDP replaces the parameters the optimiser must hold
    model = distributed.wrap(model, context, tc.distributed)
    optimizer = build_optimizer(model, tc)
    return _Run(
        config=config, device=device, context=context, task=task, model=model,
        forward=torch.compile(model) if tc.compile else model, optimizer=optimizer,
        use_bf16=tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda"),
        micro_batch=tc.batch_size // (tc.grad_accum * context.world_size),
        num_parameters=num_parameters, state_size=state_size,
    )


@dataclass
class _Curve:
    """Where a run stands: what a checkpoint keeps and the result reports."""

    # optimiser steps done
    steps: int = 0
    # every evaluation so far, {"step": ..., "eval": {"<split>/<metric>": value}}
    history: list[dict[str, Any]] = field(default_factory=list)
    # training loss of the last step
    loss: float = float("nan")
    stopped_early: bool = False

    @property
    def metrics(self) -> dict[str, float]:
        """The last evaluation (empty before the first)."""
        return self.history[-1]["eval"] if self.history else {}


def _resume(run_dir: Path | None, run: _Run) -> _Curve:
    """Loads the newest checkpoint of `run_dir` into the run (weights, optimiser, RNG), after
    checking that it trained the same task and model; returns where it stood."""
    config = run.config
    if run_dir is None:
        raise ValueError("resume needs a run directory")
    found = checkpoint.checkpoint_dirs(run_dir)
    if not found:
        raise checkpoint.CheckpointError(f"--resume: no checkpoint in {run_dir}/checkpoints")
    model_state, optimizer_state, extra, info = checkpoint.load(found[-1])
    saved = from_dict(info["config"])
    for section in ("task", "model", "head"):
        if to_dict(saved)[section] != to_dict(config)[section]:
            raise ValueError(
                f"--resume: the {section} config differs from the checkpoint's ({found[-1]}); "
                f"saved {to_dict(saved)[section]}, given {to_dict(config)[section]}"
            )
    try:
        distributed.load_full_state(
            run.model, run.optimizer, model_state, optimizer_state, run.context, config.train.distributed
        )
    except (RuntimeError, KeyError, ValueError) as error:
        raise checkpoint.CheckpointError(f"checkpoint {found[-1]} does not fit this model: {error}") from error
    torch.set_rng_state(extra["rng_cpu"])
    if "rng_cuda" in extra and torch.cuda.is_available():
        torch.cuda.set_rng_state(extra["rng_cuda"])
    return _Curve(steps=int(info["step"]), history=list(info.get("history", [])))


def _train_step(run: _Run, step: int) -> tuple[float, float]:
    """One optimiser step on training batch `step`: (loss averaged over processes, learning rate)."""
    tc, micro = run.config.train, run.micro_batch
    lr = set_lr(run.optimizer, step, tc)
    batch = run.task.train_batch(tc.batch_size, batch_generator(tc.seed, step), step)
    # this process's slice of the global batch, then its micro-batches
    share = micro * tc.grad_accum
    mine = {k: v[run.context.rank * share:(run.context.rank + 1) * share] for k, v in batch.items()}
    step_loss = 0.0
    for i in range(tc.grad_accum):
        inputs = mine["inputs"][i * micro:(i + 1) * micro].to(run.device)
        labels = mine["labels"][i * micro:(i + 1) * micro].to(run.device)
        # DDP averages gradients across processes once, in the last micro-batch's backward
        last = i == tc.grad_accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(run.model, "no_sync") else run.model.no_sync()
        with sync:
            with run.autocast():
                loss = (run.forward(inputs, labels=labels).loss + auxiliary_loss(run.model)) / tc.grad_accum
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
    """Evaluates every split, logs and keeps the result, and stops the run once it reaches
    train.target (before the last step)."""
    tc = run.config.train
    metrics = run.evaluate(sets)
    report.evaluation(curve.steps, metrics)
    curve.history.append({"step": curve.steps, "eval": metrics})
    reached = _reached(metrics[run.task.metric], tc.target, run.task.higher_is_better)
    curve.stopped_early = reached and curve.steps < tc.steps


class _Report:
    """What a run shows as it goes: config.json and metrics.jsonl (and TensorBoard) from the
    main process, tokens/s over each logging window, and the progress bar."""

    def __init__(self, run: _Run, run_dir: Path | None, first_step: int, progress: bool) -> None:
        tc, main = run.config.train, run.context.is_main
        self.steps, self.log_every, self.metric = tc.steps, tc.log_every, run.task.metric
        self.log = MetricsLog(run_dir if main else None, tensorboard=tc.tensorboard, truncate_after=first_step)
        if run_dir is not None and main:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_json(run_dir / "config.json", to_dict(run.config))
        self.tokens_per_step = tc.batch_size * run.task.tokens_per_example()
        self.bar = _progress_bar(tc.steps, first_step, progress and main)
        self.window_start, self.window_steps, self.tokens_per_s = time.perf_counter(), 0, 0.0

    def train_step(self, done: int, loss: float, lr: float) -> dict[str, Any]:
        """The step's record; every train.log_every steps and at the last it gets the tokens/s
        since the previous logged step and is written."""
        self.window_steps += 1
        record: dict[str, Any] = {"step": done, "loss": loss, "lr": lr}
        if done % self.log_every == 0 or done == self.steps:
            elapsed = time.perf_counter() - self.window_start
            self.tokens_per_s = self.tokens_per_step * self.window_steps / max(elapsed, 1e-9)
            record["tokens_per_s"] = self.tokens_per_s
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
    """Every train.checkpoint_every steps (if set), at the last step and when stopping early."""
    periodic = tc.checkpoint_every and curve.steps % tc.checkpoint_every == 0
    return bool(periodic) or curve.steps == tc.steps or curve.stopped_early


def _save(run_dir: Path, run: _Run, curve: _Curve) -> None:
    """A checkpoint after step curve.steps: weights, optimiser, RNG and the evaluations so far."""
    tc = run.config.train
    model_state, optimizer_state = distributed.full_state(run.model, run.optimizer, run.context, tc.distributed)
    if run.context.is_main:
        info = {"config": to_dict(run.config), "history": curve.history}
        checkpoint.save(run_dir, curve.steps, model_state, optimizer_state, _rng_state(), info, tc.keep_checkpoints)
    distributed.barrier(run.context)


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state()
    return state


def _result(run: _Run, run_dir: Path | None, sets: dict, curve: _Curve, start: float) -> TrainResult:
    """The run's result from its last evaluation (one now if none ran or was kept), also
    written to result.json."""
    metrics = curve.metrics
    if run.task.metric not in metrics:
        metrics = run.evaluate(sets)
    result = TrainResult(
        metrics=metrics, metric_name=run.task.metric, metric=metrics[run.task.metric], loss=curve.loss,
        steps=curve.steps, stopped_early=curve.stopped_early, seconds=time.perf_counter() - start,
        num_parameters=run.num_parameters, state_size=run.state_size,
        model=distributed.unwrap(run.model), config=run.config, run_dir=run_dir, history=curve.history,
    )
    if run_dir is not None and run.context.is_main:
        _write_json(run_dir / "result.json", summary(result))
    return result


def summary(result: TrainResult) -> dict[str, Any]:
    """The result as a JSON-ready dict (what `recur train` prints and writes to result.json)."""
    model = result.config.model
    mixers = "+".join(dict.fromkeys(model.layer_mixers()))
    return {
        "task": result.config.task_name,
        "model": f"{mixers}, {model.n_layers} layers, d_model {model.d_model}",
        "parameters": result.num_parameters,
        "state_bytes_per_sequence": result.state_size,
        # layers whose state grows with the sequence (key-value caches) count per token
        "growing_state": any(not MIXERS[name].constant_state for name in model.layer_mixers()),
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "seconds": round(result.seconds, 1),
        "final_loss": result.loss,
        "metric": result.metric_name,
        "value": result.metric,
        "metrics": result.metrics,
    }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
