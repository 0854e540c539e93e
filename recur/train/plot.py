"""`recur plot RUN_DIR`: training loss and evaluation curves from metrics.jsonl to a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from .logging import read_metrics


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draws the loss (train and eval) and every eval metric against the step; returns the PNG path."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; plot takes a run dir written by recur train")
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'recur[plot]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(path)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    if not train:
        raise ValueError(f"{path} holds no training records yet")
    headline = _headline(run_dir)
    metric_keys = sorted({k for r in evals for k in r["eval"] if not k.endswith("/loss")})

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train")
    for key in sorted({k for r in evals for k in r["eval"] if k.endswith("/loss")}):
        points = [(r["step"], r["eval"][key]) for r in evals if key in r["eval"]]
        ax_loss.plot(*zip(*points, strict=True), "o-", ms=3, label=key)
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_loss.set_yscale("log")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    for key in metric_keys:
        points = [(r["step"], r["eval"][key]) for r in evals if key in r["eval"]]
        ax_metric.plot(*zip(*points, strict=True), "o-", ms=3, lw=2 if key == headline else 1, label=key)
    ax_metric.set(xlabel="step", title="evaluation")
    ax_metric.grid(alpha=0.3)
    if metric_keys:
        ax_metric.legend()
    fig.suptitle(_title(run_dir))
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _headline(run_dir: Path) -> str | None:
    result = run_dir / "result.json"
    if result.is_file():
        return json.loads(result.read_text()).get("metric")
    return None


def _title(run_dir: Path) -> str:
    config = run_dir / "config.json"
    if not config.is_file():
        return run_dir.name
    data = json.loads(config.read_text())
    model = data["model"]
    if model.get("forecaster"):
        return f"{data['task']['name']}: {model['forecaster']}, d_model {model['d_model']}"
    mixers = "+".join(dict.fromkeys(model["pattern"] or [model["mixer"]]))
    return f"{data['task']['name']}: {mixers}, {model['n_layers']} layers, d_model {model['d_model']}"


def plot_attractors(run_dir: str | Path, out: str | Path | None = None, steps: int = 5000) -> Path:
    """For a dynamical-systems reconstruction run: the true attractor (the test block's
    first `steps` states) beside the one the chosen model generates freely from the same
    first state, in 3-D (the first three observed dimensions; 2-D for a plane system).
    Returns the PNG path (default RUN/attractors.png)."""
    import torch

    from .runs import load_run

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    if not hasattr(run.model, "generate") or run.config.task_name != "dynamics":
        raise ValueError(f"{run_dir} is a {run.config.task_name!r} run; attractors are drawn for 'dynamics' runs")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    block = run.task.blocks["test"]
    true = block[: min(steps, len(block))]
    with torch.no_grad():
        generated = run.model.generate(true[None, 0], len(true))[0].float()
    dims = min(3, true.shape[1])
    fig = plt.figure(figsize=(10, 4.5))
    for column, (name, x) in enumerate((("true (test block)", true), ("generated (free run)", generated))):
        ax = fig.add_subplot(1, 2, column + 1, projection="3d" if dims == 3 else None)
        ax.plot(*x[:, :dims].T.numpy(), lw=0.4)
        ax.set_title(name)
        # the true attractor's box on both, so a blown-up or collapsed run shows as such
        for axis, lim in zip("xyz"[:dims], zip(true.min(0).values[:dims].tolist(), true.max(0).values[:dims].tolist(), strict=True), strict=False):
            span = lim[1] - lim[0]
            getattr(ax, f"set_{axis}lim")(lim[0] - 0.1 * span, lim[1] + 0.1 * span)
    fig.suptitle(f"{_title(run_dir)}: {run.config.task.system}")
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / "attractors.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
