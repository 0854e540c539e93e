"""Metrics to JSON lines (one object per line) and, optionally, TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends records to run_dir/metrics.jsonl; a resumed run first drops the records
    past its checkpoint so the file holds one continuous curve."""

    def __init__(self, run_dir: Path | None, tensorboard: bool = False, truncate_after: int | None = None) -> None:
        self.path = None if run_dir is None else Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [r for r in read_metrics(self.path) if truncate_after and r["step"] <= truncate_after]
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError("train.tensorboard needs tensorboard: pip install tensorboard") from error
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = record["step"]
            flat = record.get("eval", {k: v for k, v in record.items() if k != "step"})
            prefix = "" if "eval" in record else "train/"
            for key, value in flat.items():
                self.writer.add_scalar(prefix + key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a torn last line from a crash is skipped)."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
