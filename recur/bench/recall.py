"""Associative recall against state size: each causal mixer trained on MQAR.

Zoology (Arora et al., arXiv:2312.04927) compares sequence mixers by MQAR accuracy at a
given size of recurrent state. `run_recall_bench` trains the `recall` recipe (two layers
of one mixer, the mixer's default options) for every requested mixer and model width,
and `render_recall` writes one table: accuracy, bytes of state per sequence, steps and
seconds. Results are kept in a JSON file beside the table, keyed by mixer and width, so
a rerun of some mixers replaces their rows and keeps the others.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


@dataclass
class RecallResult:
    mixer: str
    d_model: int
    accuracy: float
    # bytes of recurrent state per sequence, all layers; per token for growing states
    state_bytes: int
    growing_state: bool
    parameters: int
    steps: int
    seconds: float

    @property
    def key(self) -> str:
        return f"{self.mixer}@{self.d_model}"


def causal_mixers() -> list[str]:
    """Registered mixers that can run a causal language model (all but bidirectional wrappers)."""
    from ..layers import MIXERS

    return sorted(name for name, cls in MIXERS.items() if cls.causal)


def recall_one(mixer: str, d_model: int, steps: int, threads: int, seed: int = 0) -> RecallResult:
    """Trains the `recall` recipe with `mixer` at width `d_model` and returns its last evaluation."""
    from ..layers import MIXERS
    from ..recipes import recipe
    from ..train import train

    # an unknown mixer fails here, in the model config, before any training
    config = recipe("recall", {
        "model.mixer": mixer, "model.d_model": d_model, "train.steps": steps,
        "train.threads": threads, "train.seed": seed,
    })
    result = train(config, progress=False)
    seq_len = config.task.seq_len
    growing = not MIXERS[mixer].constant_state
    return RecallResult(
        mixer=mixer, d_model=d_model, accuracy=result.metric,
        # a key-value cache is counted at the task's full length
        state_bytes=result.state_size * (seq_len if growing else 1), growing_state=growing,
        parameters=result.num_parameters, steps=result.steps, seconds=result.seconds,
    )


def load_results(path: Path) -> dict[str, RecallResult]:
    if not path.exists():
        return {}
    rows = [RecallResult(**row) for row in json.loads(path.read_text())]
    return {row.key: row for row in rows}


def save_results(path: Path, results: dict[str, RecallResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in sorted(results.values(), key=_order)], indent=1) + "\n")
    tmp.replace(path)


def _order(r: RecallResult) -> tuple:
    return (r.mixer, r.d_model)


def run_recall_bench(
    mixers: Iterable[str],
    widths: Iterable[int],
    steps: int,
    threads: int,
    data_path: Path,
    progress: Callable[[str], None] = print,
) -> dict[str, RecallResult]:
    """Trains every (mixer, width) pair, saving the results after each run."""
    results = load_results(data_path)
    jobs = [(m, d) for m in mixers for d in widths]
    try:
        from tqdm.auto import tqdm

        bar = tqdm(jobs, desc="recall", unit="run", dynamic_ncols=True)
    except ImportError:
        bar = jobs
    for mixer, d_model in bar:
        row = recall_one(mixer, d_model, steps, threads)
        results[row.key] = row
        save_results(data_path, results)
        progress(
            f"{mixer} d_model {d_model}: accuracy {row.accuracy:.3f}, state {row.state_bytes} B, "
            f"{row.steps} steps, {row.seconds:.0f} s"
        )
    return results


def render_recall(results: dict[str, RecallResult], command: str) -> str:
    from ..recipes import recipe

    config = recipe("recall")
    task, train = config.task, config.train
    lines = [
        "# Associative recall (MQAR) against state size",
        "",
        f"Task: MQAR (Zoology, arXiv:2312.04927), vocabulary {task.vocab_size}, length {task.seq_len}, "
        f"{task.num_kv_pairs} key-value pairs; accuracy over the queried values of "
        f"{task.eval_examples} held-out sequences (chance {2 / task.vocab_size:.3f}).",
        f"Model: the `recall` recipe, {config.model.n_layers} layers of one mixer with its default "
        f"options, SwiGLU MLPs; AdamW lr {train.lr}, batch {train.batch_size}, warmup "
        f"{train.warmup_steps}, cosine decay, stop at accuracy {train.target}.",
        "State: bytes per sequence over all layers (float32); attention's key-value cache is "
        f"counted at length {task.seq_len}.",
        f"Machine: {platform.machine()}, 1 thread per run, torch {torch.__version__}.",
        f"Command: `{command}`.",
        "",
        "Each row is one run of one seed. Accuracy is the last evaluation, after the run reached "
        f"{train.target} or its step budget: with a short budget it says how fast a mixer learns recall "
        "at this size, not what it can store. Rows are ordered by state size.",
        "",
        "| mixer | d_model | state (KiB) | accuracy | steps | seconds | parameters |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results.values(), key=lambda r: (r.d_model, r.state_bytes, r.mixer)):
        growing = " (cache)" if r.growing_state else ""
        lines.append(
            f"| {r.mixer} | {r.d_model} | {r.state_bytes / 1024:.1f}{growing} | {r.accuracy:.3f} | "
            f"{r.steps} | {r.seconds:.0f} | {r.parameters:,} |"
        )
    return "\n".join(lines) + "\n"
