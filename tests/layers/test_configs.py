"""The layer configs' shared vocabulary: one name per idea, the old names of saved run
configs, and the shared parts (short convolution, decay gate) under their options."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from recur.layers import MIXERS, build_mixer, mixer_config
from recur.layers.registry import RENAMED_OPTIONS
from tests.layers import properties

D = 32


def make(name, **options):
    torch.manual_seed(0)
    return build_mixer(name, D, **options).double()


def test_no_config_uses_a_retired_option_name():
    retired = {old for renames in RENAMED_OPTIONS.values() for old in renames}
    for name, cls in MIXERS.items():
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        assert not fields & retired, f"{name} still has {sorted(fields & retired)}"
    for name, renames in RENAMED_OPTIONS.items():
        fields = {f.name for f in dataclasses.fields(MIXERS[name].Config)}
        assert set(renames.values()) <= fields, f"{name}: the new names {sorted(renames.values())} are not all options"


@pytest.mark.parametrize(
    "name,old,new,value",
    [
        ("mamba", "d_conv", "conv_size", 3),
        ("mamba2", "conv_kernel", "conv_size", 3),
        ("slstm", "conv_kernel", "conv_size", 3),
        ("xlstm", "proj_factor", "expand", 1.5),
        ("mlstm", "qk_dim_factor", "expand_k", 0.25),
        ("mlstm", "v_dim_factor", "expand_v", 0.5),
        ("hgrn2", "expand_ratio", "d_state", 4),
        ("gss", "ssm_fraction", "expand_ssm", 0.5),
    ],
)
def test_old_option_names_load_with_a_warning(name, old, new, value):
    with pytest.warns(DeprecationWarning, match=f"option '{old}' is now called '{new}'"):
        config = mixer_config(name, D, **{old: value})
    assert config == mixer_config(name, D, **{new: value})
    with pytest.raises(ValueError, match=f"got both '{old}' and '{new}'"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mixer_config(name, D, **{old: value, new: value})


def test_an_old_name_is_an_alias_only_in_the_mixer_that_had_it():
    with pytest.raises(ValueError, match="no option 'd_conv'"):
        mixer_config("mamba2", D, d_conv=4)
    with pytest.raises(ValueError, match="no option 'expand_ratio'"):
        mixer_config("mamba", D, expand_ratio=4)


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet", "mom", "mamba", "mamba2", "xlstm", "slstm"])
def test_conv_size_zero_drops_the_convolution(name):
    options = {"num_heads": 2} if name == "slstm" else {}
    layer = make(name, conv_size=0, **options)
    assert not any("conv" in n for n, _ in layer.named_parameters())
    assert not any(key.startswith("conv") for key in layer.init_state(2))
    properties.check_all(layer, D)


@pytest.mark.parametrize("name", ["mamba2", "gated_deltanet", "mom"])
def test_decay_rates_start_in_a_min_a_max(name):
    layer = make(name, a_min=2.0, a_max=3.0)
    A = layer.A_log.exp()
    assert bool(((A >= 2.0) & (A <= 3.0)).all())
    with pytest.raises(ValueError, match="need 0 < a_min <= a_max; got a_min=3.0, a_max=2.0"):
        build_mixer(name, D, a_min=3.0, a_max=2.0)


def test_mom_takes_the_gated_deltanet_options():
    gated = {f.name for f in dataclasses.fields(MIXERS["gated_deltanet"].Config)}
    mom = {f.name for f in dataclasses.fields(MIXERS["mom"].Config)}
    assert gated <= mom
    layer = make("mom", expand_v=0.5, dt_min=1e-2, dt_max=2e-2)
    assert layer.state_shape == (5, 4, 8, 4)


@pytest.mark.parametrize(
    "name,option,value,message",
    [
        ("gla", "expand_k", 0.3, r"expand_k \* d_model = 9.6 must be a positive int multiple of num_heads = 4"),
        ("mlstm", "expand_v", 0.1, r"expand_v \* d_model = 3.2 must be a positive int multiple of num_heads = 4"),
        ("mamba2", "expand", 1.5, r"expand \* d_model = 48 must be a positive int multiple of head_dim = 32"),
        ("mamba", "expand", 0.0, r"expand \* d_model = 0 must be a positive int"),
        ("xlstm", "conv_size", -1, r"conv_size must be an int >= 0"),
    ],
)
def test_widths_and_conv_size_are_checked_by_name(name, option, value, message):
    extra = {"head_dim": 32} if name == "mamba2" else {}
    with pytest.raises(ValueError, match=message):
        build_mixer(name, D, **{option: value}, **extra)


def test_a_saved_run_config_with_old_option_names_still_loads():
    from recur.models import LM, LMConfig
    from recur.tasks.mqar import MQARConfig
    from recur.train import RunConfig
    from recur.train.config import from_dict, to_dict

    options = {"mamba": {"conv_size": 3}, "xlstm": {"expand": 1.5}}
    model = LMConfig(vocab_size=0, d_model=D, n_layers=2, pattern=("mamba", "xlstm"), mixer_options=options)
    saved = to_dict(RunConfig(task=MQARConfig(), model=model))
    saved["model"]["mixer_options"] = {"mamba": {"d_conv": 3}, "xlstm": {"proj_factor": 1.5}}
    with pytest.warns(DeprecationWarning) as warned:
        run = from_dict(saved)
    messages = " ".join(str(w.message) for w in warned)
    assert "'d_conv' is now called 'conv_size'" in messages and "'proj_factor' is now called 'expand'" in messages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = LM(run.model)
    new = LM(dataclasses.replace(run.model, mixer_options=options))
    assert {n: p.shape for n, p in old.named_parameters()} == {n: p.shape for n, p in new.named_parameters()}
    old.load_state_dict(new.state_dict())
