"""Parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from recur.layers import Mixer
from recur.models import LM, LMConfig
from recur.train import TrainConfig
from recur.train.optim import build_optimizer, lr_factor, parameter_groups


def _group_of(groups, param):
    return next(g for g in groups if any(p is param for p in g["params"]))


def test_decay_only_on_matrices_and_mixer_groups_applied(monkeypatch):
    model = LM(LMConfig(vocab_size=16, d_model=32, n_layers=2, pattern=("gla", "mamba2")))
    groups = parameter_groups(model, TrainConfig(weight_decay=0.1, ssm_lr_scale=0.5, lr=1e-3))
    gla = model.backbone.blocks[0].mixer
    mamba = model.backbone.blocks[1].mixer
    assert _group_of(groups, gla.q_proj.weight)["weight_decay"] == 0.1
    assert _group_of(groups, gla.gate_up.bias)["weight_decay"] == 0.0
    assert _group_of(groups, model.backbone.norm.weight)["weight_decay"] == 0.0
    for p in mamba.param_groups()["no_decay"]:
        assert _group_of(groups, p)["weight_decay"] == 0.0
    # every parameter once (the tied head is the embedding)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))

    # an "ssm" group gets no decay and a scaled rate
    monkeypatch.setattr(type(gla), "param_groups", lambda self: {"ssm": [self.q_proj.weight]})
    groups = parameter_groups(model, TrainConfig(weight_decay=0.1, ssm_lr_scale=0.5, lr=1e-3))
    group = _group_of(groups, gla.q_proj.weight)
    assert group["weight_decay"] == 0.0 and group["lr"] == pytest.approx(5e-4)
    optimizer = build_optimizer(model, TrainConfig())
    assert isinstance(optimizer, torch.optim.AdamW)
    assert len(optimizer.param_groups) == len(parameter_groups(model, TrainConfig()))


def test_unknown_group_name_is_an_error(monkeypatch):
    model = LM(LMConfig(vocab_size=16, d_model=32, n_layers=1, mixer="gla"))
    monkeypatch.setattr(Mixer, "param_groups", lambda self: {"slow": list(self.parameters())[:1]})
    with pytest.raises(ValueError, match="returns parameter group 'slow'; the trainer knows"):
        parameter_groups(model, TrainConfig())


def test_warmup_then_cosine():
    config = TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    factors = [lr_factor(s, config) for s in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    middle = 10 + 99 // 2
    assert factors[middle] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 49 / 99)))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))



def test_auxiliary_losses_of_mixers_join_the_training_loss():
    """MoM leaves its load-balancing loss after each forward; the trainer adds it."""
    import torch

    from recur.models import LM, LMConfig
    from recur.train.loop import auxiliary_loss

    torch.manual_seed(0)
    model = LM(LMConfig(vocab_size=20, d_model=32, n_layers=2, pattern=("mom", "gla")))
    assert auxiliary_loss(model) == 0.0
    model(torch.randint(0, 20, (2, 9)))
    aux = auxiliary_loss(model)
    mom = model.backbone.blocks[0].mixer
    assert isinstance(aux, torch.Tensor) and aux.requires_grad
    assert torch.equal(aux, mom.aux_loss) and float(aux) > 0
    aux.backward()
    assert mom.router.weight.grad is not None and mom.router.weight.grad.abs().sum() > 0


def test_radam_and_the_exponential_schedule():
    config = TrainConfig(steps=101, warmup_steps=0, lr=1e-3, min_lr_ratio=0.01, optimizer="radam", schedule="exponential")
    # geometric: 1e-3 at the first step, 1e-4 halfway, 1e-5 at the last
    assert [lr_factor(s, config) for s in (0, 50, 100)] == pytest.approx([1.0, 0.1, 0.01])
    model = LM(LMConfig(vocab_size=8, d_model=8, n_layers=1, mixer="gla", mixer_options={"gla": {"num_heads": 1}}))
    assert isinstance(build_optimizer(model, config), torch.optim.RAdam)
    with pytest.raises(ValueError, match="train.optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="train.schedule"):
        TrainConfig(schedule="linear")
