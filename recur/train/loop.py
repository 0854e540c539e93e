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
from ..models import LM, LMConfig
from ..models import HeadConfig, InputConfig, SequenceModel
from ..tasks import Task, get_task
from . import checkpoint, distributed
from .config import RunConfig, from_dict, to_dict
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


def _train(config, run_dir, resume, progress, callback) -> TrainResult:
    tc = config.train
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
    run_dir = Path(run_dir) if run_dir is not None else None
    start = time.perf_counter()

    torch.manual_seed(tc.seed)
    task = get_task(config.task_name)(config.task)
    model = build_model(config, task).to(device)
    num_parameters, state_size = model.num_parameters(), model.state_size()
    # wrap first: FSDP replaces the parameters the optimiser must hold
    model = distributed.wrap(model, context, tc.distributed)
    optimizer = build_optimizer(model, tc)
    use_bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")

    def autocast():
        if not use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    first_step, history = 0, []
    if resume:
        first_step, history = _resume(run_dir, config, model, optimizer, context)
    forward = torch.compile(model) if tc.compile else model
    sets = eval_sets(task, config)

    log = MetricsLog(run_dir if context.is_main else None, tensorboard=tc.tensorboard, truncate_after=first_step)
    if run_dir is not None and context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "config.json", to_dict(config))

    micro = tc.batch_size // (tc.grad_accum * context.world_size)
    tokens_per_step = tc.batch_size * task.tokens_per_example()
    bar = _progress_bar(tc.steps, first_step, progress and context.is_main)
    metrics: dict[str, float] = history[-1]["eval"] if history else {}
    loss_value, stopped_early = float("nan"), False
    window_start, window_steps, tokens_per_s = time.perf_counter(), 0, 0.0

    model.train()
    step = first_step
    for step in range(first_step, tc.steps):
        lr = set_lr(optimizer, step, tc)
        batch = task.train_batch(tc.batch_size, batch_generator(tc.seed, step), step)
        # this process's slice of the global batch, then its micro-batches
        mine = {k: v[context.rank * micro * tc.grad_accum:(context.rank + 1) * micro * tc.grad_accum] for k, v in batch.items()}
        step_loss = 0.0
        for i in range(tc.grad_accum):
            inputs = mine["inputs"][i * micro:(i + 1) * micro].to(device)
            labels = mine["labels"][i * micro:(i + 1) * micro].to(device)
            last = i == tc.grad_accum - 1
            sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with autocast():
                    loss = (forward(inputs, labels=labels).loss + auxiliary_loss(model)) / tc.grad_accum
                loss.backward()
            step_loss += float(loss.detach())
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = distributed.mean(step_loss, context, device)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at step {step + 1}; lower train.lr or check the data")

        done = step + 1
        window_steps += 1
        record: dict[str, Any] = {"step": done, "loss": loss_value, "lr": lr}
        if done % tc.log_every == 0 or done == tc.steps:
            elapsed = time.perf_counter() - window_start
            record["tokens_per_s"] = tokens_per_step * window_steps / max(elapsed, 1e-9)
            window_start, window_steps = time.perf_counter(), 0
            log.write(record)
        if done % tc.eval_every == 0 or done == tc.steps:
            metrics = evaluate(distributed.unwrap(model), task, sets, micro * tc.grad_accum, device, autocast)
            log.write({"step": done, "eval": metrics})
            history.append({"step": done, "eval": metrics})
            stopped_early = _reached(metrics[task.metric], tc.target, task.higher_is_better) and done < tc.steps
        if bar is not None:
            bar.update(1)
            postfix = {"loss": f"{loss_value:.4f}"}
            if task.metric in metrics:
                postfix[task.metric.split("/")[-1]] = f"{metrics[task.metric]:.4f}"
            tokens_per_s = record.get("tokens_per_s", tokens_per_s)
            if tokens_per_s:
                postfix["tok/s"] = f"{tokens_per_s:,.0f}"
            bar.set_postfix(postfix, refresh=False)
        checkpoint_due = tc.checkpoint_every and done % tc.checkpoint_every == 0
        if run_dir is not None and (checkpoint_due or done == tc.steps or stopped_early):
            _save(run_dir, done, config, model, optimizer, context, history)
        if callback is not None:
            callback(done, record)
        if stopped_early:
            break
    if bar is not None:
        bar.close()

    if task.metric not in metrics:
        metrics = evaluate(distributed.unwrap(model), task, sets, micro * tc.grad_accum, device, autocast)
    result = TrainResult(
        metrics=metrics, metric_name=task.metric, metric=metrics[task.metric], loss=loss_value,
        steps=step + 1 if tc.steps > first_step else first_step, stopped_early=stopped_early,
        seconds=time.perf_counter() - start, num_parameters=num_parameters, state_size=state_size,
        model=distributed.unwrap(model), config=config, run_dir=run_dir, history=history,
    )
    if run_dir is not None and context.is_main:
        _write_json(run_dir / "result.json", summary(result))
    log.close()
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


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty() and not os.environ.get("CI")
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                mininterval=0.2 if interactive else 5.0, file=sys.stderr)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state()
    return state


def _save(run_dir: Path, step: int, config: RunConfig, model, optimizer, context, history) -> None:
    model_state, optimizer_state = distributed.full_state(model, optimizer, context, config.train.distributed)
    if context.is_main:
        info = {"config": to_dict(config), "history": history}
        checkpoint.save(run_dir, step, model_state, optimizer_state, _rng_state(), info, config.train.keep_checkpoints)
    distributed.barrier(context)


def _resume(run_dir: Path | None, config: RunConfig, model, optimizer, context) -> tuple[int, list]:
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
        distributed.load_full_state(model, optimizer, model_state, optimizer_state, context, config.train.distributed)
    except (RuntimeError, KeyError, ValueError) as error:
        raise checkpoint.CheckpointError(f"checkpoint {found[-1]} does not fit this model: {error}") from error
    torch.set_rng_state(extra["rng_cpu"])
    if "rng_cuda" in extra and torch.cuda.is_available():
        torch.cuda.set_rng_state(extra["rng_cuda"])
    return int(info["step"]), list(info.get("history", []))
