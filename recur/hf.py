"""Hugging Face transformers integration: recur language models behind the Auto classes.

    import recur.hf  # registers model_type "recur" with AutoConfig and AutoModelForCausalLM
    from recur.hf import RecurConfig, RecurForCausalLM

    model = RecurForCausalLM(RecurConfig.from_lm_config(LMConfig(vocab_size=256, mixer="gla")))
    model.save_pretrained("out")                        # config.json + model.safetensors
    model = AutoModelForCausalLM.from_pretrained("out")
    model.generate(ids, max_new_tokens=20, do_sample=False)

`RecurForCausalLM.from_recur(lm)` wraps a trained `recur.models.LM` (e.g. the model of a
`recur train` run) without copying. During `generate` the cache is the model's own
recurrent state (a list of per-layer state dicts): the prompt runs once through the
chunkwise forms, then each new token advances the state by one step, in O(1) memory for
recurrent layers. Labels follow the transformers convention (shifted inside).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
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
from .train.config import build_section

MODEL_TYPE = "recur"


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


@dataclass
class RecurCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    # the recurrent state after the last input token: one dict of tensors per layer
    recur_state: list[dict[str, torch.Tensor]] | None = None


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
        recur_state: list[dict[str, torch.Tensor]] | None = None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RecurCausalLMOutput:
        """input_ids [B, T] -> logits [B, T, vocab]; labels [B, T] are the inputs shifted
        inside (transformers convention), -100 ignored. `attention_mask` must be all ones:
        recurrent layers take no padding mask (left-pad-free batches only)."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("recur models take no padding mask; generate from unpadded prompts of equal length")
        out = self.lm(input_ids, state=recur_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                out.logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return RecurCausalLMOutput(loss=loss, logits=out.logits, recur_state=out.state)

    def prepare_inputs_for_generation(self, input_ids, recur_state=None, attention_mask=None, **kwargs):
        # with a state, only the newest token is new
        if recur_state is not None:
            input_ids = input_ids[:, -1:]
        return {"input_ids": input_ids, "recur_state": recur_state, "attention_mask": None}

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
        )
        model_kwargs["recur_state"] = outputs.recur_state
        return model_kwargs


AutoConfig.register(MODEL_TYPE, RecurConfig, exist_ok=True)
AutoModelForCausalLM.register(RecurConfig, RecurForCausalLM, exist_ok=True)
