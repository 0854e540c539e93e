"""`recur bench models`: whole models of a recipe timed one mixer at a time, each the model
training builds, in one table with the first model as the reference."""

from __future__ import annotations

import torch

from recur.bench.measure import saved_for_backward_bytes
from recur.cli import main
from recur.recipes import recipe
from recur.train.loop import build_task_and_model


def _table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_a_tiny_run_writes_every_model_at_every_setting(tmp_path, capsys):
    out = tmp_path / "models.md"
    vit = "vit_attention:input.position_embedding=true"
    argv = ["bench", "models", "--recipe", "arrow_pointing", "--mixers", "mamba2", vit,
            "--set", "task.resolution=32,40", "--set", "model.d_model=16", "--batch", "2", "--repeat", "1",
            "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    assert "load average" in text and "1 threads" in text and f"torch {torch.__version__}" in text
    assert "Command: `recur bench models --recipe arrow_pointing --mixers mamba2 " in text
    header, *rows = _table_rows(text)
    assert header[:4] == ["task.resolution", "model.d_model", "model", "parameters"]
    assert "images/s" in header and "CPU ms per batch" in header
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("32", "16", "`mamba2`"), ("32", "16", f"`{vit}`"), ("40", "16", "`mamba2`"), ("40", "16", f"`{vit}`"),
    ]
    speed = header.index("speed vs first")
    # each setting's first model is its own reference
    cpu_speed = header.index("CPU time speed vs first")
    assert rows[0][speed] == rows[2][speed] == rows[0][cpu_speed] == rows[2][cpu_speed] == "1.00×"
    assert all(float(r[speed].rstrip("×")) > 0 for r in rows)
    # the models are the ones training builds, the per-model override included
    for resolution, row in (("32", rows[1]), ("40", rows[3])):
        config = recipe("arrow_pointing", [("task.resolution", resolution), ("model.d_model", "16"),
                                           ("model.mixer", "vit_attention"), ("input.position_embedding", "true")])
        assert row[3] == f"{build_task_and_model(config)[1].num_parameters():,}"
    assert rows[1][3] != rows[3][3]  # the position embedding grows with the image


def test_bad_names_fail_before_any_work_naming_the_argument(tmp_path, capsys):
    out = tmp_path / "models.md"
    common = ["bench", "models", "--batch", "2", "--repeat", "1", "--out", str(out)]
    cases = [
        (["--recipe", "arrow_pointing", "--mixers", "mamba2", "plstmm"], "--mixers: unknown mixer 'plstmm'; did you mean 'plstm'"),
        (["--recipe", "arrow_pointing", "--mixers", "plstm:mod=P"], "--mixers plstm:mod=P: unknown key model.mixer_options.plstm.mod"),
        (["--recipe", "arrow_pointng", "--mixers", "mamba2"], "--recipe: unknown recipe 'arrow_pointng'"),
        (["--recipe", "arrow_pointing", "--mixers", "mamba2", "--set", "task.resolutio=32"],
         "--set task.resolutio=32: unknown key 'task.resolutio'"),
    ]
    for arguments, message in cases:
        assert main([*common, *arguments]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()


def test_parameters_are_not_counted_as_saved_activations():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4, requires_grad=True)
    everything = saved_for_backward_bytes(lambda: layer(x))
    activations = saved_for_backward_bytes(lambda: layer(x), exclude=layer.parameters())
    assert activations == x.nbytes
    assert everything == x.nbytes + layer.weight.nbytes
