"""Hugging Face transformers integration: recur language models behind the Auto classes.

    import recur.hf  # registers model_type "recur" with AutoConfig and AutoModelForCausalLM
    from recur.hf import RecurConfig, RecurForCausalLM

    model = RecurForCausalLM(RecurConfig.from_lm_config(LMConfig(vocab_size=256, mixer="gla")))
    model.save_pretrained("out")          # config.json, model.safetensors, modeling_recur.py
    model = AutoModelForCausalLM.from_pretrained("out")
    model.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False)

`RecurForCausalLM.from_recur(lm)` wraps a trained `recur.models.LM` without copying;
`recur export RUN_DIR --hf OUT` writes the folder of a `recur train` run. A saved folder
loads after `import recur.hf`, or in a process that has not imported it with
`from_pretrained(folder, trust_remote_code=True)`: the folder's config maps the Auto
classes to its `modeling_recur.py`, whose only code is `from recur.hf import ...`
(transformers itself cannot know the model type "recur" before recur registers it).

During `generate` the cache is the model's own recurrent state (a list of per-layer state
dicts): the prompt runs once through the chunkwise forms, then each new token advances the
state by one step, in O(1) memory for recurrent layers. Left-padded prompts with their
`attention_mask` continue exactly as each prompt alone (padding never enters a layer).
Labels follow the transformers convention (shifted inside).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

try:
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
    from transformers.modeling_outputs import ModelOutput
except ImportError as error:
    raise ImportError("recur.hf needs transformers: pip install 'recur[hf]'") from error
try:
    from transformers import PreTrainedConfig
except ImportError:
    from transformers import PretrainedConfig as PreTrainedConfig

from .models import LM, LMConfig
from .models.lm import GroupedState
from .train.config import build_section

MODEL_TYPE = "recur"
# what a saved folder carries so that transformers finds the classes without `import recur.hf`
MODULE_FILE = "modeling_recur.py"
AUTO_MAP = {
    "AutoConfig": "modeling_recur.RecurConfig",
    "AutoModelForCausalLM": "modeling_recur.RecurForCausalLM",
}
MODULE_CODE = '''"""A recur language model: its classes live in the recur package (pip install recur).

transformers imports this file for from_pretrained(folder, trust_remote_code=True); after
`import recur.hf` the folder loads without it.
"""

from recur.hf import RecurConfig, RecurForCausalLM

__all__ = ["RecurConfig", "RecurForCausalLM"]
'''


class RecurConfig(PreTrainedConfig):
    """The transformers config of a recur LM: `lm` holds the `LMConfig` fields."""

    model_type = MODEL_TYPE

    def __init__(self, lm: dict[str, Any] | None = None, **kwargs) -> None:
        self.lm = dict(lm) if lm is not None else {"vocab_size": 256}
        config = self.lm_config()
        kwargs.setdefault("tie_word_embeddings", config.tie_embeddings)
        super().__init__(**kwargs)
        self.vocab_size = config.vocab_size
        self.hidden_size = config.d_model
        self.num_hidden_layers = config.n_layers

    @classmethod
    def from_lm_config(cls, config: LMConfig, **kwargs) -> RecurConfig:
        lm = dataclasses.asdict(config)
        lm["pattern"] = list(lm["pattern"])
        return cls(lm=lm, **kwargs)

    def lm_config(self) -> LMConfig:
        """The typed LMConfig (every field checked)."""
        return build_section(LMConfig, self.lm, "lm")

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        """config.json, and modeling_recur.py beside it (see the module docstring)."""
        self.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        (Path(save_directory) / MODULE_FILE).write_text(MODULE_CODE)

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoConfig") -> None:
        # transformers calls this after loading remote code; copying recur's own source into
        # the next saved folder would be wrong: AUTO_MAP already points at modeling_recur.py
        return


@dataclass
class RecurCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    # the recurrent state after the last input token: one dict of tensors per layer (a
    # GroupedState after padded prompts whose key-value caches differ in length)
    recur_state: list[dict[str, torch.Tensor]] | GroupedState | None = None


class RecurForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = RecurConfig
    base_model_prefix = "lm"
    _tied_weights_keys = {"lm.head.weight": "lm.embedding.weight"}
    _supports_cache_class = False

    def __init__(self, config: RecurConfig, lm: LM | None = None) -> None:
        super().__init__(config)
        self.lm = lm if lm is not None else LM(config.lm_config())
        self.post_init()

    @classmethod
    def from_recur(cls, lm: LM) -> RecurForCausalLM:
        """Wraps a recur LM (sharing its parameters)."""
        return cls(RecurConfig.from_lm_config(lm.config), lm=lm)

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoModelForCausalLM") -> None:
        # as RecurConfig.register_for_auto_class: the saved folder's AUTO_MAP is enough
        return

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # the cache is the layers' own state, handed over in prepare_inputs_for_generation
        return False

    def _init_weights(self, module) -> None:
        # recur layers initialise themselves when built
        return

    def get_input_embeddings(self):
        return self.lm.embedding

    def set_input_embeddings(self, value) -> None:
        self.lm.embedding = value

    def get_output_embeddings(self):
        return self.lm.head

    def forward(
        self,
        input_ids: torch.Tensor,
        recur_state: list[dict[str, torch.Tensor]] | GroupedState | None = None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RecurCausalLMOutput:
        """input_ids [B, T] -> logits [B, T, vocab]; labels [B, T] are the inputs shifted
        inside (transformers convention), -100 ignored. attention_mask [B, T] (0 =
        padding) leaves padded positions out: each row runs at its true length, so a
        left-padded prompt continues exactly as the same prompt unpadded (see
        `recur.models.LM.forward`)."""
        out = self.lm(input_ids, state=recur_state, attention_mask=attention_mask)
        loss = None
        if labels is not None:
            targets = labels[:, 1:]
            if attention_mask is not None:
                targets = targets.masked_fill(attention_mask[:, 1:] == 0, -100)
            loss = F.cross_entropy(
                out.logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100
            )
        return RecurCausalLMOutput(loss=loss, logits=out.logits, recur_state=out.state)

    def prepare_inputs_for_generation(self, input_ids, recur_state=None, attention_mask=None, **kwargs):
        # with a state, only the newest token is new (and its mask entry the only one that counts)
        if recur_state is not None:
            input_ids = input_ids[:, -1:]
            attention_mask = attention_mask[:, -1:] if attention_mask is not None else None
        return {"input_ids": input_ids, "recur_state": recur_state,
                "attention_mask": attention_mask}

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
        )
        model_kwargs["recur_state"] = outputs.recur_state
        return model_kwargs


AutoConfig.register(MODEL_TYPE, RecurConfig, exist_ok=True)
AutoModelForCausalLM.register(RecurConfig, RecurForCausalLM, exist_ok=True)
