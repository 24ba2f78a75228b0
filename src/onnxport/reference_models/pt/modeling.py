"""The seven PyTorch task heads, generic over families, and the checkpoint API.

``__init__.py`` binds each (family, head) pair to its transformers class name.
"""

from __future__ import annotations

import logging
import os
from typing import ClassVar, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss

from ...configs import EncoderConfig
from ...errors import CheckpointError, InputError
from ...families import Family
from ..common import fit_or_raise, load_config_and_weights, save_checkpoint
from ..outputs import (
    CausalLMOutputWithCrossAttentions,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from .activations import ACT2FN
from .encoder import BaseModel

logger = logging.getLogger("onnxport")


class PreTrainedModel(nn.Module):
    """Checkpoint API shared by the 21 classes: from_pretrained, save_pretrained, numpy state dicts."""

    family: ClassVar[Family]
    head: ClassVar[str]
    base_model_prefix: ClassVar[str]

    def __init__(self, config: EncoderConfig) -> None:
        nn.Module.__init__(self)
        self._check_config(config)
        self.config = config

    @classmethod
    def _check_config(cls, config: EncoderConfig) -> None:
        if not isinstance(config, cls.family.config_class):
            raise TypeError(f"{cls.__name__} needs a {cls.family.config_class.__name__}, got {type(config).__name__}.")

    # -- construction ------------------------------------------------------------------------
    def post_init(self) -> None:
        self.apply(self._init_weights)
        self.tie_weights()
        self.eval()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, LMHead):
            nn.init.zeros_(module.bias)

    @property
    def base_model(self) -> BaseModel:
        return getattr(self, self.base_model_prefix) if self.base_model_prefix else self  # type: ignore[return-value]

    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.embeddings.word_embeddings

    def get_output_embeddings(self) -> Optional[nn.Linear]:
        head = self._lm_head()
        return head.decoder if head is not None else None

    def _lm_head(self) -> Optional["LMHead"]:
        return None

    def tied_weight_keys(self) -> dict[str, str]:
        """Checkpoint keys that alias another parameter: {alias: source}. transformers leaves aliases out of files."""
        head = self._lm_head()
        if head is None:
            return {}
        prefix = self.family.lm_head_prefix
        tied = {f"{prefix}.decoder.bias": f"{prefix}.bias"}
        if self.config.tie_word_embeddings:
            tied[f"{prefix}.decoder.weight"] = f"{self.base_model_prefix}.embeddings.word_embeddings.weight"
        return tied

    def tie_weights(self) -> None:
        head = self._lm_head()
        if head is None:
            return
        head.decoder.bias = head.bias
        if self.config.tie_word_embeddings:
            head.decoder.weight = self.get_input_embeddings().weight

    # -- numpy state dicts ---------------------------------------------------------------------
    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def load_state_dict_numpy(self, state: dict[str, np.ndarray], strict: bool = False):
        """Load HF-named numpy weights (prefix differences handled); returns the LoadReport."""
        own = self.state_dict()
        tied = self.tied_weight_keys()
        optional = list(tied) + [k for k in own if k.endswith("embed_positions.weight")]
        fitted, report = fit_or_raise(
            state, {k: tuple(v.shape) for k, v in own.items()}, self.family, type(self).__name__, optional
        )
        if strict and report.missing:
            raise CheckpointError(f"{type(self).__name__}: {report}")
        with torch.no_grad():
            for name, value in fitted.items():
                if name in tied:
                    continue  # the source parameter carries the value
                own[name].copy_(torch.from_numpy(np.ascontiguousarray(value)).to(own[name].dtype))
        self.tie_weights()
        return report

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | os.PathLike, config: Optional[EncoderConfig] = None, **config_overrides):
        config, state = load_config_and_weights(checkpoint_dir, cls.family, config, **config_overrides)
        model = cls(config)
        model.load_state_dict_numpy(state)
        return model.eval()

    def save_pretrained(self, save_directory: str | os.PathLike, max_shard_size: Optional[int] = None) -> None:
        save_checkpoint(
            save_directory,
            self.config,
            self.state_dict_numpy(),
            architecture=type(self).__name__,
            drop_keys=list(self.tied_weight_keys()),
            max_shard_size=max_shard_size,
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ----------------------------------------------------------------------------- head modules
class LMHead(nn.Module):
    """Both LM-head layouts: dense -> activation -> LayerNorm -> decoder (+ bias).

    ``roberta``: ``lm_head.{dense, layer_norm, decoder, bias}`` with GELU.
    ``bert`` (RoFormer): ``cls.predictions.{transform.dense, transform.LayerNorm, decoder, bias}``
    with ``hidden_act``, projecting to ``embedding_size`` before the vocabulary.
    """

    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        width = config.embedding_width
        if family.lm_head_layout == "roberta":
            self.dense = nn.Linear(config.hidden_size, width)
            self.layer_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
            self.activation = ACT2FN["gelu"]
        else:
            self.transform = _Transform(config, width)
        self.decoder = nn.Linear(width, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "transform"):
            hidden_states = self.transform(hidden_states)
        else:
            hidden_states = self.layer_norm(self.activation(self.dense(hidden_states)))
        return self.decoder(hidden_states)


class _Transform(nn.Module):
    def __init__(self, config: EncoderConfig, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, width)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class _BertLMHeadContainer(nn.Module):
    """``cls`` holding ``predictions`` so parameter names read ``cls.predictions.*``."""

    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.predictions = LMHead(config, family)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden_states)


class ClassificationHead(nn.Module):
    """Sentence classifier on the first token: dense -> activation -> out_proj."""

    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(_classifier_dropout(config, family))
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)
        activation = "tanh" if family.classifier_activation == "tanh" else config.hidden_act
        self.activation = ACT2FN[activation]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features[:, 0, :])
        x = self.dropout(self.activation(self.dense(x)))
        return self.out_proj(x)


def _classifier_dropout(config: EncoderConfig, family: Family) -> float:
    if family.classifier_dropout_from_config and config.classifier_dropout is not None:
        return config.classifier_dropout
    return config.hidden_dropout_prob


# ----------------------------------------------------------------------------- the seven models
class EncoderModel(PreTrainedModel, BaseModel):
    head = "Model"
    base_model_prefix = ""

    def __init__(self, config: EncoderConfig, add_pooling_layer: bool = True) -> None:
        self._check_config(config)
        BaseModel.__init__(self, config, self.family, add_pooling_layer)
        self.post_init()

    forward = BaseModel.forward


class _HeadModel(PreTrainedModel):
    add_pooling_layer: ClassVar[bool] = False

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        setattr(self, self.base_model_prefix, BaseModel(config, self.family, self.add_pooling_layer))

    def _encode(self, **kwargs):
        return self.base_model(return_dict=True, **kwargs)

    @staticmethod
    def _finish(output, return_dict: Optional[bool], config: EncoderConfig):
        return_dict = config.use_return_dict if return_dict is None else return_dict
        return output if return_dict else output.to_tuple()


class _LMModel(_HeadModel):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        if self.family.lm_head_layout == "roberta":
            self.lm_head = LMHead(config, self.family)
        else:
            self.cls = _BertLMHeadContainer(config, self.family)

    def _lm_head(self) -> LMHead:
        return self.lm_head if hasattr(self, "lm_head") else self.cls.predictions

    def _logits(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self._lm_head()(sequence_output)


class EncoderForCausalLM(_LMModel):
    head = "ForCausalLM"

    def __init__(self, config: EncoderConfig) -> None:
        if not config.is_decoder:
            logger.warning("%sForCausalLM used as a standalone model: set is_decoder=True for causal attention.",
                           self.family.class_prefix)
        super().__init__(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        labels=None,
        past_key_values=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        if labels is not None:
            use_cache = False  # as transformers: training-style calls do not build a cache
        outputs = self._encode(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self._logits(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            # Token t predicts token t + 1.
            shifted_logits = logits[:, :-1, :].float()
            shifted_labels = labels[:, 1:].to(logits.device)
            loss = CrossEntropyLoss()(shifted_logits.reshape(-1, self.config.vocab_size), shifted_labels.reshape(-1))
        output = CausalLMOutputWithCrossAttentions(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values, hidden_states=outputs.hidden_states,
            attentions=outputs.attentions, cross_attentions=outputs.cross_attentions,
        )
        return self._finish(output, return_dict, self.config)


class EncoderForMaskedLM(_LMModel):
    head = "ForMaskedLM"

    def __init__(self, config: EncoderConfig) -> None:
        if config.is_decoder:
            logger.warning("%sForMaskedLM with is_decoder=True attends causally; set is_decoder=False for "
                           "bi-directional self-attention.", self.family.class_prefix)
        super().__init__(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        outputs = self._encode(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        logits = self._logits(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.vocab_size), labels.to(logits.device).view(-1))
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return self._finish(output, return_dict, self.config)


def sequence_classification_loss(config: EncoderConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Regression / single-label / multi-label loss by ``problem_type`` (inferred as transformers does when unset)."""
    num_labels = config.num_labels
    problem_type = config.problem_type
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        if num_labels == 1:
            return MSELoss()(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return MSELoss()(logits, labels.to(logits.dtype))
    if problem_type == "single_label_classification":
        return CrossEntropyLoss()(logits.view(-1, num_labels), labels.view(-1))
    return BCEWithLogitsLoss()(logits, labels.to(logits.dtype))


class EncoderForSequenceClassification(_HeadModel):
    head = "ForSequenceClassification"

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.classifier = ClassificationHead(config, self.family)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        outputs = self._encode(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(outputs.last_hidden_state)
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels.to(logits.device))
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return self._finish(output, return_dict, self.config)


class EncoderForMultipleChoice(_HeadModel):
    head = "ForMultipleChoice"
    add_pooling_layer = True

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        if self.family.multiple_choice_summary == "pooler":
            self.dropout = nn.Dropout(config.hidden_dropout_prob)
        else:  # RoFormer's SequenceSummary with default settings: last token, no projection
            self.sequence_summary = nn.Identity()
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None:
            raise InputError("You have to specify either input_ids or inputs_embeds.")
        if reference.dim() != (3 if input_ids is not None else 4):
            raise InputError(
                f"Multiple choice inputs need shape (batch, num_choices, sequence), got {tuple(reference.shape)}."
            )
        num_choices = reference.shape[1]

        def flat(x):
            return None if x is None else x.reshape(-1, *x.shape[2:])

        outputs = self._encode(
            input_ids=flat(input_ids), attention_mask=flat(attention_mask), token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids), head_mask=head_mask, inputs_embeds=flat(inputs_embeds),
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        if self.family.multiple_choice_summary == "pooler":
            summary = self.dropout(outputs.pooler_output)
        else:
            summary = self.sequence_summary(outputs.last_hidden_state[:, -1])
        reshaped_logits = self.classifier(summary).view(-1, num_choices)
        loss = None if labels is None else CrossEntropyLoss()(reshaped_logits, labels.to(reshaped_logits.device))
        output = MultipleChoiceModelOutput(
            loss=loss, logits=reshaped_logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return self._finish(output, return_dict, self.config)


class EncoderForTokenClassification(_HeadModel):
    head = "ForTokenClassification"

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(_classifier_dropout(config, self.family))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        outputs = self._encode(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.to(logits.device).view(-1))
        output = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return self._finish(output, return_dict, self.config)


class EncoderForQuestionAnswering(_HeadModel):
    head = "ForQuestionAnswering"

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        start_positions=None,
        end_positions=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        outputs = self._encode(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        logits = self.qa_outputs(outputs.last_hidden_state)
        start_logits, end_logits = logits.split(1, dim=-1)
        start_logits = start_logits.squeeze(-1).contiguous()
        end_logits = end_logits.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence are ignored (clamped to an ignored index).
            ignored_index = start_logits.size(1)
            start_positions = start_positions.reshape(-1).clamp(0, ignored_index)
            end_positions = end_positions.reshape(-1).clamp(0, ignored_index)
            loss_fct = CrossEntropyLoss(ignore_index=ignored_index)
            loss = (loss_fct(start_logits, start_positions) + loss_fct(end_logits, end_positions)) / 2
        output = QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return self._finish(output, return_dict, self.config)


GENERIC_HEADS: dict[str, type[PreTrainedModel]] = {
    cls.head: cls
    for cls in (
        EncoderModel,
        EncoderForCausalLM,
        EncoderForMaskedLM,
        EncoderForSequenceClassification,
        EncoderForMultipleChoice,
        EncoderForTokenClassification,
        EncoderForQuestionAnswering,
    )
}


def bind(family: Family, head: str) -> type[PreTrainedModel]:
    """The transformers-named class for one family and head, e.g. ``XLMRobertaForMaskedLM``."""
    generic = GENERIC_HEADS[head]
    name = family.class_prefix + head
    attrs = {
        "family": family,
        "base_model_prefix": "" if head == "Model" else family.base_model_prefix,
        "__module__": "onnxport.reference_models.pt",
        "__qualname__": name,
    }
    return type(name, (generic,), attrs)
