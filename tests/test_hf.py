"""transformers integration: Auto classes, save/load round trip, generate with the recurrent
state as cache, padded prompts, loading a folder without importing recur.hf."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from recur.hf import RecurConfig, RecurForCausalLM  # noqa: E402
from recur.layers import MIXERS  # noqa: E402
from recur.models import LM, LMConfig  # noqa: E402
from tests.helpers import assert_close  # noqa: E402
from tests.models.test_lm import left_padded  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


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

    def spy(self, ids, state=None, labels=None, attention_mask=None):
        lengths.append(ids.shape[1])
        states.append(state is not None)
        return forward(self, ids, state, labels, attention_mask)

    monkeypatch.setattr(type(model.lm), "forward", spy)
    model.generate(torch.randint(0, 32, (1, 9)), max_new_tokens=4, do_sample=False)
    assert lengths == [9, 1, 1, 1] and states == [False, True, True, True]


def test_labels_are_shifted_inside():
    model = _model()
    ids = torch.randint(0, 32, (2, 7))
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert torch.allclose(out.loss, expected)
    # with padding, only targets that are tokens count
    mask = torch.tensor([[1] * 7, [0, 0] + [1] * 5])
    out = model(ids, labels=ids, attention_mask=mask)
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)
    assert torch.allclose(out.loss, expected)


@pytest.mark.parametrize("mixer", sorted(name for name, cls in MIXERS.items() if cls.causal))
def test_generate_from_left_padded_prompts_equals_each_prompt_alone(mixer):
    torch.manual_seed(0)
    lm = LM(LMConfig(vocab_size=13, d_model=16, n_layers=1, mixer=mixer, mlp_ratio=1.0)).double()
    model = RecurForCausalLM.from_recur(lm).eval()
    long, short = torch.randint(1, 13, (6,)), torch.randint(1, 13, (2,))
    ids, mask = left_padded(long, short)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=0,
                         output_scores=True, return_dict_in_generate=True)
    assert torch.equal(out.sequences[0], lm.generate(long[None], 3, temperature=0)[0])
    assert torch.equal(out.sequences[1, 4:], lm.generate(short[None], 3, temperature=0)[0])
    # the scores of every step, not only their argmax: the logits of each row's tokens alone
    scores = torch.stack(out.scores, 1).double()
    for row, start in ((0, 0), (1, 4)):
        alone = lm(out.sequences[row:row + 1, start:-1]).logits[0, -3:]
        assert_close(f"scores of row {row}", scores[row], alone, 1e-5)  # transformers keeps float32 scores


def test_a_saved_folder_loads_without_importing_recur_hf(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "modeling_recur.py").is_file()
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        f"folder = {str(tmp_path / 'hf')!r}\n"
        "try:\n"
        "    AutoModelForCausalLM.from_pretrained(folder)\n"
        "except ValueError as error:\n"
        "    assert 'trust_remote_code=True' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('loaded without recur.hf and without trust_remote_code')\n"
        "assert 'recur.hf' not in sys.modules\n"
        "model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)\n"
        "assert type(model).__module__ == 'recur.hf', type(model)\n"
        "print(model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)[0].tolist())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf_home")}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = model.lm.generate(torch.tensor([[1, 2, 3]]), 3, temperature=0)[0].tolist()
    assert done.stdout.rstrip().endswith(str(expected)), done.stdout


def test_config_rejects_bad_fields():
    with pytest.raises(ValueError, match="unknown key lm.d_modle"):
        RecurConfig(lm={"vocab_size": 8, "d_modle": 4})
