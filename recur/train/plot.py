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
