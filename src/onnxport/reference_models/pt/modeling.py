"""The seven PyTorch task heads, generic over families, over the shared checkpoint mixin and head protocol.

``__init__.py`` binds each (family, head) pair to its transformers class name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss

from ...configs import EncoderConfig
from ...errors import InputError
from ...families import Family
from ..checkpoint import ModuleCheckpointMixin
from ..head_protocol import CHOICE_INPUTS, TORCH_ARGUMENTS, HeadProtocol, warn_about_decoder_setting
from ..head_rules import LossFunctions, classifier_activation, classifier_dropout, sequence_classification_loss
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


class PreTrainedModel(ModuleCheckpointMixin, nn.Module):
    """The 21 classes' base: weight initialisation and the checkpoint hooks over torch parameters."""

    def __init__(self, config: EncoderConfig) -> None:
        nn.Module.__init__(self)
        self._check_config(config)
        self.config = config

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

    # -- checkpoint hooks ----------------------------------------------------------------------
    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def _parameter_shapes(self) -> dict[str, tuple]:
        return {k: tuple(v.shape) for k, v in self.state_dict().items()}

    def _write_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        own = self.state_dict()
        with torch.no_grad():
            for name, value in values.items():
                own[name].copy_(torch.from_numpy(np.ascontiguousarray(value)).to(own[name].dtype))

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
        self.dropout = nn.Dropout(classifier_dropout(config, family))
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)
        self.activation = ACT2FN[classifier_activation(config, family)]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features[:, 0, :])
        x = self.dropout(self.activation(self.dense(x)))
        return self.out_proj(x)


# ----------------------------------------------------------------------------- the seven models
class EncoderModel(PreTrainedModel, BaseModel):
    head = "Model"
    base_model_prefix = ""

    def __init__(self, config: EncoderConfig, add_pooling_layer: bool = True) -> None:
        self._check_config(config)
        BaseModel.__init__(self, config, self.family, add_pooling_layer)
        self.post_init()

    forward = BaseModel.forward


class _HeadModel(HeadProtocol, PreTrainedModel):
    entry_point_name = "forward"
    arguments_of = staticmethod(TORCH_ARGUMENTS.__getitem__)
    add_pooling_layer: ClassVar[bool] = False

    def __init__(self, config: EncoderConfig) -> None:
        warn_about_decoder_setting(config, self.head, self.family.class_prefix + self.head)
        super().__init__(config)
        setattr(self, self.base_model_prefix, BaseModel(config, self.family, self.add_pooling_layer))
        self._build_head(config)
        self.post_init()

    def _build_head(self, config: EncoderConfig) -> None:
        raise NotImplementedError

    def _encode(self, **kwargs):
        return self.base_model(return_dict=True, **kwargs)


class _LMModel(_HeadModel):
    def _build_head(self, config: EncoderConfig) -> None:
        if self.family.lm_head_layout == "roberta":
            self.lm_head = LMHead(config, self.family)
        else:
            self.cls = _BertLMHeadContainer(config, self.family)

    def _logits(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self._lm_head()(sequence_output)


class EncoderForCausalLM(_LMModel):
    head = "ForCausalLM"

    def _head(self, inputs, labels):
        if labels is not None:
            inputs["use_cache"] = False  # as transformers: training-style calls do not build a cache
        outputs = self._encode(**inputs)
        logits = self._logits(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            # Token t predicts token t + 1.
            shifted_logits = logits[:, :-1, :].float()
            shifted_labels = labels[:, 1:].to(logits.device)
            loss = CrossEntropyLoss()(shifted_logits.reshape(-1, self.config.vocab_size), shifted_labels.reshape(-1))
        return CausalLMOutputWithCrossAttentions.over(outputs, loss=loss, logits=logits)


class EncoderForMaskedLM(_LMModel):
    head = "ForMaskedLM"

    def _head(self, inputs, labels):
        outputs = self._encode(**inputs)
        logits = self._logits(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.vocab_size), labels.to(logits.device).view(-1))
        return MaskedLMOutput.over(outputs, loss=loss, logits=logits)


LOSSES = LossFunctions(
    is_integer=lambda labels: labels.dtype in (torch.long, torch.int),
    squeeze=torch.squeeze,
    mse=lambda predictions, targets: MSELoss()(predictions, targets.to(predictions.dtype)),
    cross_entropy=lambda logits, labels: CrossEntropyLoss()(logits.view(-1, logits.shape[-1]), labels.view(-1)),
    bce_with_logits=lambda logits, targets: BCEWithLogitsLoss()(logits, targets.to(logits.dtype)),
)


class EncoderForSequenceClassification(_HeadModel):
    head = "ForSequenceClassification"

    def _build_head(self, config: EncoderConfig) -> None:
        self.num_labels = config.num_labels
        self.classifier = ClassificationHead(config, self.family)

    def _head(self, inputs, labels):
        outputs = self._encode(**inputs)
        logits = self.classifier(outputs.last_hidden_state)
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels.to(logits.device), LOSSES)
        return SequenceClassifierOutput.over(outputs, loss=loss, logits=logits)


class EncoderForMultipleChoice(_HeadModel):
    head = "ForMultipleChoice"
    add_pooling_layer = True

    def _build_head(self, config: EncoderConfig) -> None:
        if self.family.multiple_choice_summary == "pooler":
            self.dropout = nn.Dropout(config.hidden_dropout_prob)
        else:  # RoFormer's SequenceSummary with default settings: last token, no projection
            self.sequence_summary = nn.Identity()
        self.classifier = nn.Linear(config.hidden_size, 1)

    def _head(self, inputs, labels):
        input_ids = inputs["input_ids"]
        reference = input_ids if input_ids is not None else inputs["inputs_embeds"]
        if reference is None:
            raise InputError("You have to specify either input_ids or inputs_embeds.")
        if reference.dim() != (3 if input_ids is not None else 4):
            raise InputError(
                f"Multiple choice inputs need shape (batch, num_choices, sequence), got {tuple(reference.shape)}."
            )
        num_choices = reference.shape[1]
        for name in CHOICE_INPUTS:  # choices join the batch
            x = inputs[name]
            inputs[name] = None if x is None else x.reshape(-1, *x.shape[2:])
        outputs = self._encode(**inputs)
        if self.family.multiple_choice_summary == "pooler":
            summary = self.dropout(outputs.pooler_output)
        else:
            summary = self.sequence_summary(outputs.last_hidden_state[:, -1])
        reshaped_logits = self.classifier(summary).view(-1, num_choices)
        loss = None if labels is None else CrossEntropyLoss()(reshaped_logits, labels.to(reshaped_logits.device))
        return MultipleChoiceModelOutput.over(outputs, loss=loss, logits=reshaped_logits)


class EncoderForTokenClassification(_HeadModel):
    head = "ForTokenClassification"

    def _build_head(self, config: EncoderConfig) -> None:
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(classifier_dropout(config, self.family))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def _head(self, inputs, labels):
        outputs = self._encode(**inputs)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.to(logits.device).view(-1))
        return TokenClassifierOutput.over(outputs, loss=loss, logits=logits)


class EncoderForQuestionAnswering(_HeadModel):
    head = "ForQuestionAnswering"

    def _build_head(self, config: EncoderConfig) -> None:
        self.num_labels = config.num_labels
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)

    def _head(self, inputs, start_positions, end_positions):
        outputs = self._encode(**inputs)
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
        return QuestionAnsweringModelOutput.over(outputs, loss=loss, start_logits=start_logits, end_logits=end_logits)


GENERIC_HEADS = (EncoderModel, EncoderForCausalLM, EncoderForMaskedLM, EncoderForSequenceClassification,
                 EncoderForMultipleChoice, EncoderForTokenClassification, EncoderForQuestionAnswering)
