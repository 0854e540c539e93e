"""load_run: a run folder back as its model, config and task; one-line errors naming the file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import recur
from recur.models import LM, SequenceModel
from recur.recipes import recipe
from recur.tasks import get_task
from recur.train import CheckpointError, build_model, load_run, to_dict
from recur.train.checkpoint import save_model

ROOT = Path(__file__).resolve().parents[2]
SMALL_MQAR = {"task.vocab_size": "32", "task.seq_len": "16", "task.num_kv_pairs": "2", "model.d_model": "32",
              "model.n_layers": "2"}


def saved_run(run_dir: Path, name: str = "mqar", overrides: dict | None = None) -> torch.nn.Module:
    """A run folder as `recur train` leaves it (run_dir/model/), without the training."""
    config = recipe(name, SMALL_MQAR if overrides is None else overrides)
    torch.manual_seed(0)
    model = build_model(config, get_task(config.task_name)(config.task))
    save_model(run_dir / "model", model.state_dict(), {"config": to_dict(config), "step": 3, "metrics": {"val/accuracy": 0.5}})
    return model


def test_load_run_gives_the_chosen_weights_config_and_task(tmp_path):
    model = saved_run(tmp_path)
    run = recur.load_run(tmp_path)
    assert isinstance(run.model, LM) and not run.model.training
    assert run.config.model.pattern == ("mamba2", "attention") and run.config.task_name == "mqar"
    assert run.task.vocab_size == 32 and run.step == 3 and run.metrics == {"val/accuracy": 0.5}
    loaded = run.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    assert run.model.head.weight is run.model.embedding.weight
    # the model folder itself loads too
    assert load_run(tmp_path / "model").step == 3
    saved_run(tmp_path / "adding", "adding", {})
    assert isinstance(load_run(tmp_path / "adding").model, SequenceModel)


def rewrite(state: Path, info: dict) -> None:
    """Edit a saved state.json and its manifest entry alike, as a run with that content would
    have written them (an edit alone is caught as damage, which another test covers)."""
    state.write_text(json.dumps(info))
    manifest_path = state.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    data = state.read_bytes()
    manifest["files"]["state.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest_path.write_text(json.dumps(manifest))


def test_load_run_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="missing does not exist; expected a run folder"):
        load_run(tmp_path / "missing")
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*: expected .*/model/model.safetensors"):
        load_run(tmp_path)

    saved_run(tmp_path / "wide")
    state = tmp_path / "wide" / "model" / "state.json"
    info = json.loads(state.read_text())
    info["config"]["model"]["d_model"] = 48
    rewrite(state, info)
    with pytest.raises(CheckpointError) as error:
        load_run(tmp_path / "wide")
    message = str(error.value)
    assert "model/model.safetensors: embedding.weight has shape [32, 32]; the run's config gives [32, 48]" in message
    assert "\n" not in message

    info["config"]["model"]["d_modle"] = info["config"]["model"].pop("d_model")
    rewrite(state, info)
    with pytest.raises(CheckpointError, match=r"state.json: the run config does not load: unknown key model.d_modle"):
        load_run(tmp_path / "wide")

    saved_run(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "model" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="corrupt/model is damaged: model.safetensors has 15 bytes"):
        load_run(tmp_path / "corrupt")


def test_import_recur_leaves_the_trainer_until_load_run():
    code = "import sys, recur\nassert 'recur.train' not in sys.modules\nassert recur.load_run.__module__ == 'recur.train.runs'"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
