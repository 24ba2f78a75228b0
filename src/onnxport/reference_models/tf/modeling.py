"""The seven TensorFlow task heads, generic over families, over the shared checkpoint mixin and head protocol.

Mirrors ``reference_models/pt/modeling.py``; ``__init__.py`` binds each (family, head)
pair to its transformers TF class name (``TFXLMRobertaForMaskedLM``, ...).

Calls follow transformers' TF classes: the ``call`` signature and positional order
of transformers 4.x (``training=False`` included), a dict of inputs as the first
argument (Keras style), numpy or tensors in. Options that transformers' TF classes
lack (cross-attention inputs on the MLM head, RoFormer's cache and position_ids, ...)
are accepted as keywords after ``training``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from ...configs import EncoderConfig
from ...families import Family
from ..checkpoint import ModuleCheckpointMixin
from ..head_protocol import CHOICE_INPUTS, HeadProtocol, tensorflow_arguments, warn_about_decoder_setting
from ..head_rules import LossFunctions, classifier_activation, classifier_dropout, sequence_classification_loss
from ..common import InputError
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
from .layers import Dropout, Identity, LayerNorm, Linear, Module, Parameter, _normal, initializer_range, shape_list

# Inputs converted to tensors on entry; everything else (flags) is passed through.
_TENSOR_ARGS = frozenset(
    {
        "input_ids", "attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds",
        "encoder_hidden_states", "encoder_attention_mask", "labels", "start_positions", "end_positions",
    }
)
_FLOAT_ARGS = frozenset({"head_mask", "inputs_embeds", "encoder_hidden_states"})


def _to_tensor(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "past_key_values":
        return tuple(tuple(_to_tensor("past", t) for t in layer) for layer in value)
    tensor = value if isinstance(value, (tf.Tensor, tf.Variable)) else tf.convert_to_tensor(value)
    if tensor.dtype == tf.float64 or (name in _FLOAT_ARGS and tensor.dtype != tf.float32) or name == "past":
        tensor = tf.cast(tensor, tf.float32)  # the model computes in float32
    return tensor


class TFPreTrainedModel(ModuleCheckpointMixin, Module):
    """The 21 classes' base: transformers' TF calling convention and the checkpoint hooks over tf.Variables."""

    def __init__(self, config: EncoderConfig) -> None:
        Module.__init__(self)
        self._check_config(config)
        self.config = config

    # -- calling -----------------------------------------------------------------------------
    @classmethod
    def _call_parameters(cls) -> list[str]:
        return [p for p in inspect.signature(cls.call).parameters if p != "self"]

    @classmethod
    def positional_arguments(cls) -> list[str]:
        """Names of the positional arguments, in transformers' TF order (up to ``training``)."""
        params = cls._call_parameters()
        dropped = cls.family.not_in_transformers_tf
        return [p for p in params[: params.index("training") + 1] if p not in dropped]

    # Plain Python while tracing: the model has no tensor-dependent control flow for autograph to convert.
    @tf.autograph.experimental.do_not_convert
    def __call__(self, *args: Any, **kwargs: Any):
        if args and isinstance(args[0], Mapping):  # Keras style: model({"input_ids": ..., ...})
            kwargs = {**dict(args[0]), **kwargs}
            args = args[1:]
        names = self.positional_arguments()
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional arguments ({', '.join(names)}).")
        for name, value in zip(names, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__} got multiple values for argument {name!r}.")
            kwargs[name] = value
        unknown = sorted(set(kwargs) - set(self._call_parameters()))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected argument(s) {unknown}.")
        kwargs = {k: (_to_tensor(k, v) if k in _TENSOR_ARGS or k == "past_key_values" else v) for k, v in kwargs.items()}
        try:
            return self.call(**kwargs)
        except InputError as err:
            # Inside a tf.function whose code autograph converts, errors are re-created as StagingError
            # unless marked to pass through: keep the InputError type users (and tests) catch.
            err.ag_pass_through = True
            raise

    # -- checkpoint hooks ----------------------------------------------------------------------
    def parameters_by_name(self) -> dict[str, Parameter]:
        return dict(self.named_parameters())

    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        """HF PyTorch names and layouts (tied aliases included, as torch's state_dict has them)."""
        return {name: param.numpy() for name, param in self.named_parameters()}

    def _parameter_shapes(self) -> dict[str, tuple]:
        return {name: param.shape for name, param in self.named_parameters()}

    def _write_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        own = self.parameters_by_name()
        for name, value in values.items():
            own[name].assign(value)

    def num_parameters(self) -> int:
        seen = {}
        for _, param in self.named_parameters():
            seen[id(param.variable)] = int(np.prod(param.shape))
        return sum(seen.values())


# ----------------------------------------------------------------------------- head modules
class LMDecoder(Module):
    """The vocabulary projection. It keeps torch's (vocab, width) layout so it can share the
    word-embedding matrix when ``tie_word_embeddings``; its bias is the LM head's ``bias``."""

    def __init__(self, in_features: int, out_features: int, bias: tf.Variable) -> None:
        super().__init__()
        self.weight = tf.Variable(_normal((out_features, in_features)), name="weight")
        self.bias = bias

    def _own_parameters(self) -> dict[str, Parameter]:
        return {"weight": Parameter(self.weight), "bias": Parameter(self.bias)}

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, self.weight, transpose_b=True) + self.bias


class LMHead(Module):
    """Both LM-head layouts: dense -> activation -> LayerNorm -> decoder (+ bias).

    ``roberta``: ``lm_head.{dense, layer_norm, decoder, bias}`` with GELU.
    ``bert`` (RoFormer): ``cls.predictions.{transform.dense, transform.LayerNorm, decoder, bias}``
    with ``hidden_act``, projecting to ``embedding_size`` before the vocabulary.
    """

    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        width = config.embedding_width
        if family.lm_head_layout == "roberta":
            self.dense = Linear(config.hidden_size, width)
            self.layer_norm = LayerNorm(width, eps=config.layer_norm_eps)
            self.activation = ACT2FN["gelu"]
        else:
            self.transform = _Transform(config, width)
        self.bias = tf.Variable(tf.zeros((config.vocab_size,)), name="bias")
        self.decoder = LMDecoder(width, config.vocab_size, self.bias)

    def _own_parameters(self) -> dict[str, Parameter]:
        return {"bias": Parameter(self.bias)}

    def __call__(self, hidden_states: tf.Tensor) -> tf.Tensor:
        if hasattr(self, "transform"):
            hidden_states = self.transform(hidden_states)
        else:
            hidden_states = self.layer_norm(self.activation(self.dense(hidden_states)))
        return self.decoder(hidden_states)


class _Transform(Module):
    def __init__(self, config: EncoderConfig, width: int) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, width)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = LayerNorm(width, eps=config.layer_norm_eps)

    def __call__(self, hidden_states: tf.Tensor) -> tf.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class _BertLMHeadContainer(Module):
    """``cls`` holding ``predictions`` so parameter names read ``cls.predictions.*``."""

    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.predictions = LMHead(config, family)

    def __call__(self, hidden_states: tf.Tensor) -> tf.Tensor:
        return self.predictions(hidden_states)


class ClassificationHead(Module):
    """Sentence classifier on the first token: dense -> activation -> out_proj."""

    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(classifier_dropout(config, family))
        self.out_proj = Linear(config.hidden_size, config.num_labels)
        self.activation = ACT2FN[classifier_activation(config, family)]

    def __call__(self, features: tf.Tensor, training: bool) -> tf.Tensor:
        x = self.dropout(features[:, 0, :], training)
        x = self.dropout(self.activation(self.dense(x)), training)
        return self.out_proj(x)


# ----------------------------------------------------------------------------- losses (torch semantics)
def cross_entropy(logits: tf.Tensor, labels: tf.Tensor, ignore_index: Any = -100) -> tf.Tensor:
    """torch.nn.CrossEntropyLoss(ignore_index=...): mean over the targets that are not ignored."""
    num_classes = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
    logits = tf.reshape(logits, [-1, num_classes])
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    keep = tf.not_equal(labels, tf.cast(ignore_index, tf.int64))
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(keep, labels, 0), logits=logits)
    per_token = tf.where(keep, per_token, 0.0)
    return tf.reduce_sum(per_token) / tf.reduce_sum(tf.cast(keep, per_token.dtype))


LOSSES = LossFunctions(
    is_integer=lambda labels: labels.dtype.is_integer,
    squeeze=tf.squeeze,
    mse=lambda predictions, targets: tf.reduce_mean(tf.square(predictions - tf.cast(targets, predictions.dtype))),
    cross_entropy=cross_entropy,
    bce_with_logits=lambda logits, targets: tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(targets, logits.dtype), logits=logits)
    ),
)


# ----------------------------------------------------------------------------- the seven models
class EncoderModel(TFPreTrainedModel, BaseModel):
    head = "Model"
    base_model_prefix = ""

    def __init__(self, config: EncoderConfig, add_pooling_layer: bool = True) -> None:
        self._check_config(config)
        with initializer_range(config.initializer_range):
            BaseModel.__init__(self, config, self.family, add_pooling_layer)

    call = BaseModel.call


class _HeadModel(HeadProtocol, TFPreTrainedModel):
    entry_point_name = "call"
    arguments_of = staticmethod(tensorflow_arguments)
    add_pooling_layer: ClassVar[bool] = False

    def __init__(self, config: EncoderConfig) -> None:
        warn_about_decoder_setting(config, self.head, "TF" + self.family.class_prefix + self.head)
        super().__init__(config)
        with initializer_range(config.initializer_range):
            setattr(self, self.base_model_prefix, BaseModel(config, self.family, self.add_pooling_layer))
            self._build_head(config)
        self.tie_weights()

    def _build_head(self, config: EncoderConfig) -> None:
        raise NotImplementedError

    def _encode(self, **kwargs):
        return self.base_model.call(return_dict=True, **kwargs)


class _LMModel(_HeadModel):
    def _build_head(self, config: EncoderConfig) -> None:
        if self.family.lm_head_layout == "roberta":
            self.lm_head = LMHead(config, self.family)
        else:
            self.cls = _BertLMHeadContainer(config, self.family)

    def _logits(self, sequence_output: tf.Tensor) -> tf.Tensor:
        return self._lm_head()(sequence_output)


class EncoderForCausalLM(_LMModel):
    head = "ForCausalLM"

    def _head(self, inputs, labels):
        if labels is not None:
            inputs["use_cache"] = False  # as transformers: training-style calls do not build a cache
        outputs = self._encode(**inputs)
        logits = self._logits(outputs.last_hidden_state)
        # Token t predicts token t + 1.
        loss = None if labels is None else cross_entropy(logits[:, :-1, :], labels[:, 1:])
        return CausalLMOutputWithCrossAttentions.over(outputs, loss=loss, logits=logits)


class EncoderForMaskedLM(_LMModel):
    head = "ForMaskedLM"

    def _head(self, inputs, labels):
        outputs = self._encode(**inputs)
        logits = self._logits(outputs.last_hidden_state)
        loss = None if labels is None else cross_entropy(logits, labels)
        return MaskedLMOutput.over(outputs, loss=loss, logits=logits)


class EncoderForSequenceClassification(_HeadModel):
    head = "ForSequenceClassification"

    def _build_head(self, config: EncoderConfig) -> None:
        self.num_labels = config.num_labels
        self.classifier = ClassificationHead(config, self.family)

    def _head(self, inputs, labels):
        outputs = self._encode(**inputs)
        logits = self.classifier(outputs.last_hidden_state, inputs["training"])
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels, LOSSES)
        return SequenceClassifierOutput.over(outputs, loss=loss, logits=logits)


class EncoderForMultipleChoice(_HeadModel):
    head = "ForMultipleChoice"
    add_pooling_layer = True

    def _build_head(self, config: EncoderConfig) -> None:
        if self.family.multiple_choice_summary == "pooler":
            self.dropout = Dropout(config.hidden_dropout_prob)
        else:  # RoFormer's SequenceSummary with default settings: last token, no projection
            self.sequence_summary = Identity()
        self.classifier = Linear(config.hidden_size, 1)

    def _head(self, inputs, labels):
        input_ids = inputs["input_ids"]
        reference = input_ids if input_ids is not None else inputs["inputs_embeds"]
        if reference is None:
            raise InputError("You have to specify either input_ids or inputs_embeds.")
        if reference.shape.rank != (3 if input_ids is not None else 4):
            raise InputError(
                f"Multiple choice inputs need shape (batch, num_choices, sequence), got {tuple(reference.shape.as_list())}."
            )
        num_choices = shape_list(reference)[1]
        for name in CHOICE_INPUTS:  # choices join the batch
            x = inputs[name]
            inputs[name] = None if x is None else tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))
        outputs = self._encode(**inputs)
        if self.family.multiple_choice_summary == "pooler":
            summary = self.dropout(outputs.pooler_output, inputs["training"])
        else:
            summary = self.sequence_summary(outputs.last_hidden_state[:, -1])
        reshaped_logits = tf.reshape(self.classifier(summary), [-1, num_choices])
        loss = None if labels is None else cross_entropy(reshaped_logits, labels)
        return MultipleChoiceModelOutput.over(outputs, loss=loss, logits=reshaped_logits)


class EncoderForTokenClassification(_HeadModel):
    head = "ForTokenClassification"

    def _build_head(self, config: EncoderConfig) -> None:
        self.num_labels = config.num_labels
        self.dropout = Dropout(classifier_dropout(config, self.family))
        self.classifier = Linear(config.hidden_size, config.num_labels)

    def _head(self, inputs, labels):
        outputs = self._encode(**inputs)
        logits = self.classifier(self.dropout(outputs.last_hidden_state, inputs["training"]))
        loss = None if labels is None else cross_entropy(logits, labels)
        return TokenClassifierOutput.over(outputs, loss=loss, logits=logits)


class EncoderForQuestionAnswering(_HeadModel):
    head = "ForQuestionAnswering"

    def _build_head(self, config: EncoderConfig) -> None:
        self.num_labels = config.num_labels
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)

    def _head(self, inputs, start_positions, end_positions):
        outputs = self._encode(**inputs)
        logits = self.qa_outputs(outputs.last_hidden_state)
        start_logits, end_logits = tf.unstack(logits, axis=-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence are ignored (clamped to an ignored index).
            ignored_index = tf.cast(tf.shape(start_logits)[1], tf.int64)
            start_positions = tf.clip_by_value(tf.reshape(tf.cast(start_positions, tf.int64), [-1]), 0, ignored_index)
            end_positions = tf.clip_by_value(tf.reshape(tf.cast(end_positions, tf.int64), [-1]), 0, ignored_index)
            loss = (
                cross_entropy(start_logits, start_positions, ignored_index)
                + cross_entropy(end_logits, end_positions, ignored_index)
            ) / 2
        return QuestionAnsweringModelOutput.over(outputs, loss=loss, start_logits=start_logits, end_logits=end_logits)


GENERIC_HEADS = (EncoderModel, EncoderForCausalLM, EncoderForMaskedLM, EncoderForSequenceClassification,
                 EncoderForMultipleChoice, EncoderForTokenClassification, EncoderForQuestionAnswering)
