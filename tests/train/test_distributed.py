"""Data parallelism on CPU: 2 gloo processes follow the curve of one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recur.recipes import recipe
from recur.train import train

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = {
    "task.vocab_size": "32", "task.seq_len": "16", "task.num_kv_pairs": "2", "task.eval_examples": "64",
    "model.d_model": "32", "model.n_layers": "2", "model.pattern": "gla,attention",
    "train.steps": "6", "train.eval_every": "3", "train.batch_size": "16", "train.threads": "1",
}


def _launch(run_dir: Path, strategy: str) -> dict:
    args = [f"--{k}={v}" for k, v in OVERRIDES.items()] + [f"--train.distributed={strategy}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CI": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "recur.cli", "train", "--recipe", "mqar", "--nproc", "2", "--no-progress",
         "--run-dir", str(run_dir), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=300, cwd=run_dir.parent,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((run_dir / "result.json").read_text())


def _single_process(tmp_path: Path):
    # one process, the same global batch of 16 in two micro-batches of 8 (as each rank sees)
    config = recipe("mqar", {**OVERRIDES, "train.grad_accum": "2"})
    return train(config, tmp_path / "single", progress=False)


def test_ddp_two_processes_match_one(tmp_path):
    two = _launch(tmp_path / "ddp", "ddp")
    one = _single_process(tmp_path)
    assert two["steps"] == one.steps == 6
    assert two["final_loss"] == pytest.approx(one.loss, rel=1e-5)
    assert two["metrics"]["val/loss"] == pytest.approx(one.metrics["val/loss"], rel=1e-5)


@pytest.mark.slow
def test_fsdp_two_processes_match_one(tmp_path):
    two = _launch(tmp_path / "fsdp", "fsdp")
    one = _single_process(tmp_path)
    assert two["final_loss"] == pytest.approx(one.loss, rel=1e-5)
    assert two["metrics"]["val/loss"] == pytest.approx(one.metrics["val/loss"], rel=1e-5)


def test_model_code_never_imports_torch_distributed():
    for folder in ("ops", "layers", "models"):
        for path in (ROOT / "recur" / folder).rglob("*.py"):
            assert "torch.distributed" not in path.read_text(), path
