"""Checkpoints: resume continues the same curve; failures never lose the previous checkpoint."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from recur.train import CheckpointError, train
from recur.train import checkpoint as ckpt
from recur.train.logging import read_metrics
from tests.train.test_api import tiny_mqar


class Interrupt(Exception):
    """Stops a training run part-way, as a crash would."""


def _stop_at(step: int):
    def callback(done, record):
        if done == step:
            raise Interrupt

    return callback


def test_resume_gives_the_same_curve(tmp_path):
    config = tiny_mqar(steps=12, checkpoint_every=4, eval_every=6, log_every=1)
    whole = train(config, tmp_path / "whole", progress=False)

    with pytest.raises(Interrupt):
        train(config, tmp_path / "cut", progress=False, callback=_stop_at(10))
    # the run died after step 10; its newest checkpoint is step 8
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "cut")] == ["step_00000004", "step_00000008"]
    resumed = train(config, tmp_path / "cut", resume=True, progress=False)

    assert resumed.loss == whole.loss and resumed.steps == 12
    assert resumed.metrics == whole.metrics
    losses = lambda run: [(r["step"], r["loss"]) for r in read_metrics(tmp_path / run / "metrics.jsonl") if "loss" in r]  # noqa: E731
    assert losses("cut") == losses("whole")
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_keep_last_n_and_files(tmp_path):
    train(tiny_mqar(steps=8, checkpoint_every=2, keep_checkpoints=2, eval_every=4), tmp_path, progress=False)
    dirs = ckpt.checkpoint_dirs(tmp_path)
    assert [p.name for p in dirs] == ["step_00000006", "step_00000008"]
    # safetensors and JSON only: nothing to unpickle
    assert sorted(p.name for p in dirs[-1].iterdir()) == ["manifest.json", "model.safetensors", "optimizer.safetensors", "state.json"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == 8


def test_corrupt_checkpoint_is_named(tmp_path):
    config = tiny_mqar(steps=4, eval_every=4)
    train(config, tmp_path, progress=False)
    model_file = ckpt.checkpoint_dirs(tmp_path)[-1] / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"no intact checkpoint .*step_00000004 is damaged: model.safetensors has 100 bytes"):
        train(config, tmp_path, resume=True, progress=False)
    (ckpt.checkpoint_dirs(tmp_path)[-1] / "state.json").unlink()
    with pytest.raises(CheckpointError, match="is incomplete: state.json is missing"):
        ckpt.load(ckpt.checkpoint_dirs(tmp_path)[-1])


def test_resume_refuses_another_model(tmp_path):
    train(tiny_mqar(steps=2, eval_every=2), tmp_path, progress=False)
    other = tiny_mqar(steps=4, eval_every=2)
    other.model.d_model = 64
    with pytest.raises(ValueError, match=r"changes model.d_model \(saved 32, given 64\)"):
        train(other, tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(other, tmp_path / "empty", resume=True, progress=False)


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    real_save = safetensors.torch.save_file
    calls = {"n": 0}

    def full_disk(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint writes two files; the second one fails
            with open(filename, "wb") as f:
                f.write(b"\0" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    config = tiny_mqar(steps=4, checkpoint_every=2, eval_every=2)
    with pytest.raises(CheckpointError, match=r"could not save the checkpoint of step 4 .*: No space left on device; "
                                              r"the newest checkpoint is still step 2"):
        train(config, tmp_path, progress=False)
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    dirs = ckpt.checkpoint_dirs(tmp_path)
    assert [p.name for p in dirs] == ["step_00000002"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    state, info = ckpt.load_weights(tmp_path)
    assert info["step"] == 2 and "embedding.weight" in state
    # and the run resumes from it to the same end as an uninterrupted run
    resumed = train(config, tmp_path, resume=True, progress=False)
    whole = train(config, tmp_path / "whole", progress=False)
    assert resumed.loss == whole.loss


def test_resume_with_micro_batches(tmp_path):
    config = tiny_mqar(steps=6, checkpoint_every=2, eval_every=3, grad_accum=2)
    whole = train(config, tmp_path / "whole", progress=False)
    with pytest.raises(Interrupt):
        train(config, tmp_path / "cut", progress=False, callback=_stop_at(3))
    resumed = train(config, tmp_path / "cut", resume=True, progress=False)
    assert resumed.loss == whole.loss and resumed.metrics == whole.metrics
    assert resumed.history == whole.history
    assert json.loads((tmp_path / "cut" / "result.json").read_text())["final_loss"] == whole.loss


def test_a_failed_model_write_keeps_the_previous_weights(tmp_path, monkeypatch):
    import safetensors.torch

    first = {"w": torch.ones(3), "tied": None}
    first["tied"] = first["w"]
    ckpt.save_model(tmp_path / "model", first, {"step": 1})

    def full_disk(tensors, filename, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_model(tmp_path / "model", {"w": torch.zeros(3)}, {"step": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    state, info = ckpt.load_weights(tmp_path)
    # the tied weight comes back under both names, from the one copy written
    assert info["step"] == 1 and torch.equal(state["w"], torch.ones(3)) and state["tied"] is state["w"]
