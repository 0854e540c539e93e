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
from ..models import LM, EncoderDecoder, SequenceModel
from ..tasks import Task, get_task
from . import checkpoint, distributed
from .config import RunConfig, TrainConfig, from_dict, to_dict
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
    prediction over ids, an `EncoderDecoder` for seq2seq, else a `SequenceModel` with the
    task's input adapter and head."""
    if task.head == "seq2seq":
        return EncoderDecoder(config.model, config.seq2seq, config.input, task.target_vocab_size)
    if task.head == "lm" and task.input == "tokens":
        return LM(config.model)
    return SequenceModel(config.model, config.input, config.head)


def fit_input_statistics(model: nn.Module, task: Task, config: RunConfig) -> None:
    """Real-valued inputs are normalised with the training split's statistics, measured
    once from examples no training step draws and stored in the model."""
    adapter = getattr(model, "input", None)
    if getattr(adapter, "normalize", False) and hasattr(adapter, "fit_statistics"):
        sample = task.sample(1024, batch_generator(config.train.seed, -1, stream=2), "train")
        adapter.fit_statistics(sample["inputs"])


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
    """The splits a run reads while it trains: every evaluation split but the test split."""
    return tuple(split for split in task.eval_splits if split != "test")


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
            rows = slice(start, start + batch_size)
            with autocast():
                out = model(inputs[rows].to(device), **batch_arguments(data, rows, device))
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
    # the test split is not even drawn until the run has chosen its weights
    sets = eval_sets(run.task, config, validation_splits(run.task))
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
    # the weights of the best evaluation so far (on the CPU), when train.select is "best"
    best_state: dict[str, torch.Tensor] | None = None

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
    model = build_model(config, task)
    fit_input_statistics(model, task, config)
    model = model.to(device)
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
    # the evaluation with the best validation metric so far: its step and value
    best_step: int | None = None
    best_value: float | None = None

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
    for section in ("task", "model", "input", "head", "seq2seq"):
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
    curve = _Curve(steps=int(info["step"]), history=list(info.get("history", [])))
    curve.best_step, curve.best_value = info.get("best_step"), info.get("best_value")
    if config.train.select == "best" and curve.best_step is not None:
        # the best weights: saved beside the checkpoint, or the checkpoint's own
        best = {k.removeprefix("best."): v for k, v in extra.items() if k.startswith("best.")}
        run.best_state = best if best else _snapshot(run.model)
    return curve


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
    """A checkpoint after step curve.steps: weights, optimiser, RNG, the evaluations so far
    and the best weights (when they are not the current ones)."""
    tc = run.config.train
    model_state, optimizer_state = distributed.full_state(run.model, run.optimizer, run.context, tc.distributed)
    if run.context.is_main:
        info = {
            "config": to_dict(run.config), "history": curve.history,
            "best_step": curve.best_step, "best_value": curve.best_value,
        }
        extra = _rng_state()
        if run.best_state is not None and curve.best_step != curve.steps:
            extra.update((f"best.{name}", t) for name, t in run.best_state.items())
        checkpoint.save(run_dir, curve.steps, model_state, optimizer_state, extra, info, tc.keep_checkpoints)
    distributed.barrier(run.context)


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state()
    return state


def _result(run: _Run, run_dir: Path | None, sets: dict, curve: _Curve, start: float) -> TrainResult:
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
    metrics = {**validation, **run.evaluate(eval_sets(task, config, ("test",)))}
    result = TrainResult(
        metrics=metrics, metric_name=task.metric, metric=metrics[task.metric], loss=curve.loss,
        steps=curve.steps, stopped_early=curve.stopped_early, seconds=time.perf_counter() - start,
        num_parameters=run.num_parameters, state_size=run.state_size,
        model=model, config=config, run_dir=run_dir, history=curve.history, chosen_step=chosen,
    )
    if run_dir is not None:
        weights = distributed.full_model_state(run.model, run.context, config.train.distributed)
        if run.context.is_main:
            checkpoint.save_model(run_dir / "model", weights, {"config": to_dict(config), "step": chosen, "metrics": metrics})
            _write_json(run_dir / "result.json", summary(result))
        distributed.barrier(run.context)
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
        "chosen_step": result.chosen_step,
        "select": result.config.train.select,
        "seconds": round(result.seconds, 1),
        "final_loss": result.loss,
        "metric": result.metric_name,
        "value": result.metric,
        "test_metric": "test/" + result.metric_name.split("/", 1)[1],
        "test_value": result.test_metric,
        "metrics": result.metrics,
    }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
