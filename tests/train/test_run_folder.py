"""What a run folder guarantees: one owner at a time, checkpoints that belong to their run
and are verified before use, interrupts that save, resumes that continue the saved config
or say why not, and errors that name the file, key and value."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recur.train import CheckpointError, train
from recur.train import checkpoint as ckpt
from recur.train.checkpoint import RunWarning
from recur.train.logging import read_metrics
from recur.train.loop import Interrupted, NothingToResume, cpu_threads, summary
from tests.train.test_api import tiny_mqar

ROOT = Path(__file__).resolve().parents[2]


class Crash(Exception):
    """Stops a run part-way, as a crash would: no checkpoint beyond the last periodic one."""


def crash_at(step: int, before=None):
    def callback(done, record):
        if before is not None:
            before(done)
        if done == step:
            raise Crash

    return callback


def files(run_dir: Path) -> dict[str, bytes]:
    """Every file under a run folder, by relative path."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def rewrite(folder: Path, name: str, change) -> None:
    """Changes one file of a checkpoint (a JSON dict or a safetensors dict, through `change`)
    and records the new file in the manifest, as a writer with other ideas would: only the
    checks of what the file says can catch it, not its checksum."""
    import safetensors.torch as st

    path = folder / name
    if name.endswith(".json"):
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    else:
        tensors = st.load_file(str(path))
        change(tensors)
        st.save_file(tensors, str(path))
    if (folder / "manifest.json").exists():
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"][name] = {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        (folder / "manifest.json").write_text(json.dumps(manifest))


def cut_run(run_dir: Path, steps: int = 6, at: int = 4, **options):
    """A run of `steps` steps that crashed after step `at`, with a checkpoint every 2 steps."""
    config = tiny_mqar(steps=steps, checkpoint_every=2, eval_every=3, **options)
    with pytest.raises(Crash):
        train(config, run_dir, progress=False, callback=crash_at(at))
    return config


# 1. checkpoints belong to their run


def test_a_fresh_run_refuses_a_folder_that_holds_one(tmp_path):
    train(tiny_mqar(steps=4, checkpoint_every=2, eval_every=2), tmp_path, progress=False)
    before = files(tmp_path)
    with pytest.raises(CheckpointError, match="already holds a run .*resume it"):
        train(tiny_mqar(steps=4, checkpoint_every=2, eval_every=2, seed=1), tmp_path, progress=False)
    assert files(tmp_path) == before


def test_a_run_deletes_only_its_own_checkpoints(tmp_path):
    weights = {"w": torch.ones(2)}
    optimizer = {"state": {}, "param_groups": []}
    ckpt.save(tmp_path, 10, weights, optimizer, {}, {"config": {}}, keep=1, run_id="other")
    for step in (1, 2, 3):
        ckpt.save(tmp_path, step, weights, optimizer, {}, {"config": {}}, keep=1, run_id="mine")
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["step_00000003", "step_00000010"]


# 2. a resume with nothing to do says so and changes nothing


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path):
    config = tiny_mqar(steps=4, eval_every=2)
    train(config, tmp_path, progress=False)
    before = files(tmp_path)
    with pytest.raises(NothingToResume, match="nothing to resume: the run trained all its 4 steps"):
        train(config, tmp_path, resume=True, progress=False)
    assert files(tmp_path) == before


def test_a_resume_cannot_remove_steps(tmp_path):
    cut_run(tmp_path, steps=6, at=4)
    before = files(tmp_path)
    with pytest.raises(ValueError, match="train.steps = 4 is below the 6 steps of .*a resume can only add steps"):
        train(tiny_mqar(steps=4, checkpoint_every=2, eval_every=3), tmp_path, resume=True, progress=False)
    assert files(tmp_path) == before


def test_a_saved_step_beyond_the_run_is_refused(tmp_path):
    config = cut_run(tmp_path)
    rewrite(ckpt.checkpoint_dirs(tmp_path)[-1], "state.json", lambda info: info.update(step=10**6))
    with pytest.raises(CheckpointError, match="step 1000000"):
        train(config, tmp_path, resume=True, progress=False)


# 5. one-line errors that name the file, key and value


@pytest.mark.parametrize("key", ["optimizer", "config"])
def test_a_state_file_without_a_key_is_named(tmp_path, key):
    config = cut_run(tmp_path)
    rewrite(ckpt.checkpoint_dirs(tmp_path)[-1], "state.json", lambda info: info.pop(key))
    with pytest.raises(CheckpointError, match=f"state.json has no '{key}'"):
        train(config, tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("extra.rng_cpu"), "has no rng_cpu"),
    (lambda t: t.update({"extra.rng_cpu": t["extra.rng_cpu"][:100].clone()}), r"rng_cpu is torch.uint8 \(100,\), expected"),
])
def test_missing_or_missized_rng_state_is_named(tmp_path, change, message):
    config = cut_run(tmp_path)
    rewrite(ckpt.checkpoint_dirs(tmp_path)[-1], "optimizer.safetensors", change)
    with pytest.raises(CheckpointError, match=message):
        train(config, tmp_path, resume=True, progress=False)


def test_an_optimizer_tensor_of_the_wrong_shape_is_named(tmp_path):
    config = cut_run(tmp_path)
    rewrite(ckpt.checkpoint_dirs(tmp_path)[-1], "optimizer.safetensors",
            lambda t: t.update({"state.0.exp_avg": torch.zeros(3, 5)}))
    with pytest.raises(CheckpointError, match=r"optimiser tensor state.0.exp_avg is \(3, 5\), its parameter \(32,\)"):
        train(config, tmp_path, resume=True, progress=False)


# 6. leftovers of unfinished saves


def test_unfinished_saves_are_removed(tmp_path):
    config = cut_run(tmp_path)
    # what a process killed in the middle of saves leaves
    for leftover in (tmp_path / "checkpoints" / ".tmp_k1ll3d", tmp_path / ".tmp_m0d3l"):
        leftover.mkdir()
        (leftover / "model.safetensors").write_bytes(b"\0" * 4096)
    (tmp_path / ".tmp_result.json").write_text("{")
    with pytest.warns(RunWarning, match="removed 3 unfinished save"):
        train(config, tmp_path, resume=True, progress=False)
    assert not [p for p in [*tmp_path.iterdir(), *(tmp_path / "checkpoints").iterdir()] if p.name.startswith(".tmp")]


# 9. one owner at a time


def test_a_run_folder_has_one_owner(tmp_path):
    config = cut_run(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from recur.train.checkpoint import RunLock; "
         f"lock = RunLock({str(tmp_path)!r}); print('locked', flush=True); sys.stdin.read(); lock.release()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = files(tmp_path)
        with pytest.raises(CheckpointError, match=f"run folder {tmp_path} is in use by process {holder.pid} on "):
            train(config, tmp_path, resume=True, progress=False)
        assert files(tmp_path) == before
    finally:
        holder.communicate("", timeout=60)
    # the holder ended: the folder is free again, and released after the run
    assert train(config, tmp_path, resume=True, progress=False).steps == 6
    assert not (tmp_path / "run.lock").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    config = cut_run(tmp_path)
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 2**22 + 1, "host": "gone", "since": "yesterday"}))
    with pytest.warns(RunWarning, match=r"locked by process 4194305 on gone, which ended without releasing it"):
        train(config, tmp_path, resume=True, progress=False)
    assert not (tmp_path / "run.lock").exists()


# 10. checksums and bounds


def flip_a_weight_byte(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    # past the header: a byte of some weight
    data[-5] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_falls_back_to_the_previous_intact_one(tmp_path):
    config = tiny_mqar(steps=6, checkpoint_every=2, eval_every=3)
    whole = train(config, tmp_path / "whole", progress=False)
    cut_run(tmp_path / "cut")
    flip_a_weight_byte(ckpt.checkpoint_dirs(tmp_path / "cut")[-1])
    with pytest.warns(RunWarning, match=r"step_00000004 is damaged: the SHA-256 of model.safetensors .*using step_00000002"):
        resumed = train(config, tmp_path / "cut", resume=True, progress=False)
    assert resumed.loss == whole.loss and resumed.metrics == whole.metrics
    # the damaged one is set aside, out of the run's list
    assert (tmp_path / "cut" / "checkpoints" / "step_00000004.damaged").is_dir()
    for name in ckpt.checkpoint_dirs(tmp_path / "cut"):
        ckpt.verify(name)


def test_no_intact_checkpoint_is_one_error(tmp_path):
    config = cut_run(tmp_path)
    for folder in ckpt.checkpoint_dirs(tmp_path):
        flip_a_weight_byte(folder)
    with pytest.raises(CheckpointError, match="no intact checkpoint in .*step_00000004 is damaged.*step_00000002 is damaged"):
        train(config, tmp_path, resume=True, progress=False)


def test_damaged_chosen_weights_are_refused(tmp_path):
    train(tiny_mqar(steps=2, eval_every=2), tmp_path, progress=False)
    flip_a_weight_byte(tmp_path / "model")
    with pytest.raises(CheckpointError, match="model is damaged: the SHA-256 of model.safetensors"):
        ckpt.load_weights(tmp_path)


def test_a_checkpoint_from_before_manifests_resumes_with_a_warning(tmp_path):
    config = tiny_mqar(steps=6, checkpoint_every=2, eval_every=3)
    whole = train(config, tmp_path / "whole", progress=False)
    cut_run(tmp_path / "cut")
    for folder in ckpt.checkpoint_dirs(tmp_path / "cut"):
        (folder / "manifest.json").unlink()
    with pytest.warns(RunWarning, match=r"step_00000004 has no manifest.json .*cannot be verified"):
        resumed = train(config, tmp_path / "cut", resume=True, progress=False)
    assert resumed.loss == whole.loss and resumed.metrics == whole.metrics


def test_sizes_in_the_state_file_are_bounded(tmp_path):
    config = cut_run(tmp_path)
    rewrite(ckpt.checkpoint_dirs(tmp_path)[-1], "state.json",
            lambda info: info.update(history=[{"step": 1, "eval": {}}] * 10**5))
    with pytest.raises(CheckpointError, match="'history' must be a list of at most 2 evaluations at step 4"):
        train(config, tmp_path, resume=True, progress=False)


# 11. an interrupt saves


def interrupt_at(step: int, signum: int):
    def callback(done, record):
        if done == step:
            os.kill(os.getpid(), signum)

    return callback


def test_ctrl_c_saves_the_last_step_and_resumes_on_the_same_curve(tmp_path):
    # before the first evaluation, so before the first periodic checkpoint: the interrupt's
    # is the only one
    config = tiny_mqar(steps=8, eval_every=4)
    whole = train(config, tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt, match=f"interrupted at step 3; continue with: recur train --run-dir {tmp_path / 'cut'} --resume"):
        train(config, tmp_path / "cut", progress=False, callback=interrupt_at(3, signal.SIGINT))
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "cut")] == ["step_00000003"]
    assert not (tmp_path / "cut" / "run.lock").exists()
    resumed = train(config, tmp_path / "cut", resume=True, progress=False)
    assert resumed.loss == whole.loss and resumed.metrics == whole.metrics
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_run_checkpoints_at_every_evaluation_by_default(tmp_path):
    # killed without a chance to save (a crash, kill -9): the last evaluation's checkpoint remains
    config = tiny_mqar(steps=9, eval_every=3, keep_checkpoints=5)
    assert config.train.checkpoint_every == 0
    with pytest.raises(Crash):
        train(config, tmp_path, progress=False, callback=crash_at(8))
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["step_00000003", "step_00000006"]


def test_sigterm_saves_too(tmp_path):
    def killed(signum, frame):
        raise Crash("the test's own SIGTERM handler ran: the run did not catch the signal")

    previous = signal.signal(signal.SIGTERM, killed)
    try:
        with pytest.raises(Interrupted) as stopped:
            train(tiny_mqar(steps=8, eval_every=4), tmp_path, progress=False, callback=interrupt_at(3, signal.SIGTERM))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.step == 3 and stopped.value.signum == signal.SIGTERM
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["step_00000003"]


# 12. a resume continues the saved config


def test_a_resume_refuses_a_changed_config_and_records_more_steps(tmp_path):
    from recur.train import apply_overrides

    config = cut_run(tmp_path)
    before = files(tmp_path)
    with pytest.raises(ValueError, match=r"changes train.lr \(saved 0.01, given 0.1\).*may change only: train.steps"):
        train(apply_overrides(config, {"train.lr": "0.1"}), tmp_path, resume=True, progress=False)
    assert files(tmp_path) == before
    from recur.train.loop import saved_config

    # without a config of its own, a resume takes the run's
    assert saved_config(tmp_path) == config
    longer = saved_config(tmp_path, {"train.steps": "8"})
    with pytest.warns(RunWarning, match="with train.steps 6 → 8"):
        result = train(longer, tmp_path, resume=True, progress=False)
    assert result.steps == 8
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 8
    assert {"step": 4, "resume": {"train.steps": [6, 8]}} in read_metrics(tmp_path / "metrics.jsonl")
    state = json.loads((ckpt.checkpoint_dirs(tmp_path)[-1] / "state.json").read_text())
    assert state["resumes"] == [{"step": 4, "changes": {"train.steps": [6, 8]}}]


# 13. the time of a resumed run


def test_the_summary_counts_the_time_before_a_resume(tmp_path):
    config = tiny_mqar(steps=6, checkpoint_every=3, eval_every=3)
    with pytest.raises(Crash):
        # three seconds spent before the checkpoint of step 3
        train(config, tmp_path, progress=False, callback=crash_at(4, before=lambda done: done == 2 and time.sleep(3)))
    started = time.perf_counter()
    resumed = train(config, tmp_path, resume=True, progress=False)
    this_process = time.perf_counter() - started
    assert resumed.seconds >= this_process + 3
    assert json.loads((tmp_path / "result.json").read_text())["seconds"] == round(resumed.seconds, 1)


# 14. threads from the machine


def test_threads_follow_the_machine(monkeypatch):
    from recur.train import TrainConfig

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (7.9, 7.5, 7.0))
    assert cpu_threads(TrainConfig(threads=0)) == (1, "auto: 2 CPUs, load 7.9")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert cpu_threads(TrainConfig(threads=0))[0] == 4
    assert cpu_threads(TrainConfig(threads=0), processes=8)[0] == 1
    assert cpu_threads(TrainConfig(threads=3)) == (3, "train.threads 3")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads(TrainConfig(threads=0))[1] == "OMP_NUM_THREADS=2"


def test_a_run_uses_and_reports_the_threads_it_chose(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    seen = []
    result = train(tiny_mqar(steps=2, eval_every=2, threads=0), progress=False,
                   callback=lambda done, _: seen.append(torch.get_num_threads()))
    assert seen == [1, 1] and result.threads == 1
    assert summary(result)["threads_rule"].startswith("auto: ") and summary(result)["threads"] == 1
