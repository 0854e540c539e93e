"""transformers integration: Auto classes, save/load round trip, generate with the recurrent state as cache."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from recur.hf import RecurConfig, RecurForCausalLM  # noqa: E402
from recur.models import LM, LMConfig  # noqa: E402


def _model() -> RecurForCausalLM:
    lm = LM(LMConfig(vocab_size=32, d_model=32, n_layers=2, pattern=("gla", "attention"),
                     mixer_options={"gla": {"num_heads": 2}}))
    return RecurForCausalLM.from_recur(lm).eval()


def test_save_load_generate_round_trip(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, RecurConfig) and config.lm_config() == model.lm.config
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, RecurForCausalLM)
    assert loaded.lm.head.weight is loaded.lm.embedding.weight
    ids = torch.randint(0, 32, (2, 7))
    assert torch.equal(model(ids).logits, loaded(ids).logits)

    out = loaded.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(out, model.lm.generate(ids, 6, temperature=0))


def test_generate_feeds_one_token_per_step_with_the_state(monkeypatch):
    model = _model()
    lengths, states = [], []
    forward = type(model.lm).forward

    def spy(self, ids, state=None, labels=None):
        lengths.append(ids.shape[1])
        states.append(state is not None)
        return forward(self, ids, state, labels)

    monkeypatch.setattr(type(model.lm), "forward", spy)
    model.generate(torch.randint(0, 32, (1, 9)), max_new_tokens=4, do_sample=False)
    assert lengths == [9, 1, 1, 1] and states == [False, True, True, True]


def test_labels_are_shifted_inside():
    model = _model()
    ids = torch.randint(0, 32, (2, 7))
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert torch.allclose(out.loss, expected)
    with pytest.raises(ValueError, match="no padding mask"):
        model(ids, attention_mask=torch.tensor([[0] + [1] * 6] * 2))


def test_config_rejects_bad_fields():
    with pytest.raises(ValueError, match="unknown key lm.d_modle"):
        RecurConfig(lm={"vocab_size": 8, "d_modle": 4})
