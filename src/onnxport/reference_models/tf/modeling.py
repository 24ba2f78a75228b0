"""The seven TensorFlow task heads, generic over families, and the checkpoint API.

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
import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar, Optional

import numpy as np
import tensorflow as tf

from ...configs import EncoderConfig
from ...errors import CheckpointError
from ...families import Family
from ..common import InputError, fit_or_raise, load_config_and_weights, save_checkpoint
from ..outputs import (
    CausalLMOutputWithCrossAttentions,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from .activations import ACT2FN
from .encoder import (
    BaseModel,
    Dropout,
    Identity,
    LayerNorm,
    Linear,
    Module,
    Parameter,
    _normal,
    initializer_range,
    shape_list,
)

logger = logging.getLogger("onnxport")

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


class TFPreTrainedModel(Module):
    """Checkpoint API shared by the 21 classes: from_pretrained, save_pretrained, numpy state dicts."""

    family: ClassVar[Family]
    head: ClassVar[str]
    base_model_prefix: ClassVar[str]

    def __init__(self, config: EncoderConfig) -> None:
        Module.__init__(self)
        self._check_config(config)
        self.config = config

    @classmethod
    def _check_config(cls, config: EncoderConfig) -> None:
        if not isinstance(config, cls.family.config_class):
            raise TypeError(f"{cls.__name__} needs a {cls.family.config_class.__name__}, got {type(config).__name__}.")

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

    # -- construction ------------------------------------------------------------------------
    @property
    def base_model(self) -> BaseModel:
        return getattr(self, self.base_model_prefix) if self.base_model_prefix else self  # type: ignore[return-value]

    def get_input_embeddings(self):
        return self.base_model.embeddings.word_embeddings

    def get_output_embeddings(self):
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
    def parameters_by_name(self) -> dict[str, Parameter]:
        return dict(self.named_parameters())

    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        """HF PyTorch names and layouts (tied aliases included, as torch's state_dict has them)."""
        return {name: param.numpy() for name, param in self.named_parameters()}

    def load_state_dict_numpy(self, state: Mapping[str, np.ndarray], strict: bool = False):
        """Load HF-named numpy weights (prefix differences handled); returns the LoadReport."""
        own = self.parameters_by_name()
        tied = self.tied_weight_keys()
        optional = list(tied) + [k for k in own if k.endswith("embed_positions.weight")]
        fitted, report = fit_or_raise(state, {k: p.shape for k, p in own.items()}, self.family, type(self).__name__, optional)
        if strict and report.missing:
            raise CheckpointError(f"{type(self).__name__}: {report}")
        for name, value in fitted.items():
            if name in tied:
                continue  # the source parameter carries the value
            own[name].assign(value)
        self.tie_weights()
        return report

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | os.PathLike, config: Optional[EncoderConfig] = None, **config_overrides):
        """Read an HF PyTorch-format checkpoint (safetensors / pytorch_model.bin); no TF weight file needed."""
        config, state = load_config_and_weights(checkpoint_dir, cls.family, config, **config_overrides)
        model = cls(config)
        model.load_state_dict_numpy(state)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, max_shard_size: Optional[int] = None) -> None:
        """Write the HF PyTorch format (safetensors + config.json naming the PyTorch class)."""
        save_checkpoint(
            save_directory,
            self.config,
            self.state_dict_numpy(),
            architecture=type(self).__name__[len("TF"):],
            drop_keys=list(self.tied_weight_keys()),
            max_shard_size=max_shard_size,
        )

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
        self.dropout = Dropout(_classifier_dropout(config, family))
        self.out_proj = Linear(config.hidden_size, config.num_labels)
        activation = "tanh" if family.classifier_activation == "tanh" else config.hidden_act
        self.activation = ACT2FN[activation]

    def __call__(self, features: tf.Tensor, training: bool) -> tf.Tensor:
        x = self.dropout(features[:, 0, :], training)
        x = self.dropout(self.activation(self.dense(x)), training)
        return self.out_proj(x)


def _classifier_dropout(config: EncoderConfig, family: Family) -> float:
    if family.classifier_dropout_from_config and config.classifier_dropout is not None:
        return config.classifier_dropout
    return config.hidden_dropout_prob


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


def sequence_classification_loss(config: EncoderConfig, logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Regression / single-label / multi-label loss by ``problem_type`` (inferred as transformers does when unset)."""
    num_labels = config.num_labels
    problem_type = config.problem_type
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype.is_integer:
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        labels = tf.cast(labels, logits.dtype)
        if num_labels == 1:
            return tf.reduce_mean(tf.square(tf.squeeze(logits) - tf.squeeze(labels)))
        return tf.reduce_mean(tf.square(logits - labels))
    if problem_type == "single_label_classification":
        return cross_entropy(tf.reshape(logits, [-1, num_labels]), tf.reshape(labels, [-1]))
    labels = tf.cast(labels, logits.dtype)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


# ----------------------------------------------------------------------------- the seven models
class EncoderModel(TFPreTrainedModel, BaseModel):
    head = "Model"
    base_model_prefix = ""

    def __init__(self, config: EncoderConfig, add_pooling_layer: bool = True) -> None:
        self._check_config(config)
        with initializer_range(config.initializer_range):
            BaseModel.__init__(self, config, self.family, add_pooling_layer)

    call = BaseModel.call


class _HeadModel(TFPreTrainedModel):
    add_pooling_layer: ClassVar[bool] = False

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        with initializer_range(config.initializer_range):
            setattr(self, self.base_model_prefix, BaseModel(config, self.family, self.add_pooling_layer))
            self._build_head(config)
        self.tie_weights()

    def _build_head(self, config: EncoderConfig) -> None:
        raise NotImplementedError

    def _encode(self, **kwargs):
        return self.base_model.call(return_dict=True, **kwargs)

    @staticmethod
    def _finish(output, return_dict: Optional[bool], config: EncoderConfig):
        return_dict = config.use_return_dict if return_dict is None else return_dict
        return output if return_dict else output.to_tuple()


class _LMModel(_HeadModel):
    def _build_head(self, config: EncoderConfig) -> None:
        if self.family.lm_head_layout == "roberta":
            self.lm_head = LMHead(config, self.family)
        else:
            self.cls = _BertLMHeadContainer(config, self.family)

    def _lm_head(self) -> LMHead:
        return self.lm_head if hasattr(self, "lm_head") else self.cls.predictions

    def _logits(self, sequence_output: tf.Tensor) -> tf.Tensor:
        return self._lm_head()(sequence_output)


class EncoderForCausalLM(_LMModel):
    head = "ForCausalLM"

    def __init__(self, config: EncoderConfig) -> None:
        if not config.is_decoder:
            logger.warning("TF%sForCausalLM used as a standalone model: set is_decoder=True for causal attention.",
                           self.family.class_prefix)
        super().__init__(config)

    def call(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        past_key_values=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        labels=None,
        training=False,
    ):
        if labels is not None:
            use_cache = False  # as transformers: training-style calls do not build a cache
        outputs = self._encode(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, training=training,
        )
        logits = self._logits(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            # Token t predicts token t + 1.
            loss = cross_entropy(logits[:, :-1, :], labels[:, 1:])
        output = CausalLMOutputWithCrossAttentions(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values, hidden_states=outputs.hidden_states,
            attentions=outputs.attentions, cross_attentions=outputs.cross_attentions,
        )
        return self._finish(output, return_dict, self.config)


class EncoderForMaskedLM(_LMModel):
    head = "ForMaskedLM"

    def __init__(self, config: EncoderConfig) -> None:
        if config.is_decoder:
            logger.warning("TF%sForMaskedLM with is_decoder=True attends causally; set is_decoder=False for "
                           "bi-directional self-attention.", self.family.class_prefix)
        super().__init__(config)

    def call(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        labels=None,
        training=False,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
    ):
        outputs = self._encode(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, training=training,
        )
        logits = self._logits(outputs.last_hidden_state)
        loss = None if labels is None else cross_entropy(logits, labels)
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return self._finish(output, return_dict, self.config)


class EncoderForSequenceClassification(_HeadModel):
    head = "ForSequenceClassification"

    def _build_head(self, config: EncoderConfig) -> None:
        self.num_labels = config.num_labels
        self.classifier = ClassificationHead(config, self.family)

    def call(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        labels=None,
        training=False,
    ):
        outputs = self._encode(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, training=training,
        )
        logits = self.classifier(outputs.last_hidden_state, training)
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels)
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return self._finish(output, return_dict, self.config)


class EncoderForMultipleChoice(_HeadModel):
    head = "ForMultipleChoice"
    add_pooling_layer = True

    def _build_head(self, config: EncoderConfig) -> None:
        if self.family.multiple_choice_summary == "pooler":
            self.dropout = Dropout(config.hidden_dropout_prob)
        else:  # RoFormer's SequenceSummary with default settings: last token, no projection
            self.sequence_summary = Identity()
        self.classifier = Linear(config.hidden_size, 1)

    def call(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        labels=None,
        training=False,
    ):
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None:
            raise InputError("You have to specify either input_ids or inputs_embeds.")
        if reference.shape.rank != (3 if input_ids is not None else 4):
            raise InputError(
                f"Multiple choice inputs need shape (batch, num_choices, sequence), got {tuple(reference.shape.as_list())}."
            )
        num_choices = shape_list(reference)[1]

        def flat(x):
            return None if x is None else tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))

        outputs = self._encode(
            input_ids=flat(input_ids), attention_mask=flat(attention_mask), token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids), head_mask=head_mask, inputs_embeds=flat(inputs_embeds),
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, training=training,
        )
        if self.family.multiple_choice_summary == "pooler":
            summary = self.dropout(outputs.pooler_output, training)
        else:
            summary = self.sequence_summary(outputs.last_hidden_state[:, -1])
        reshaped_logits = tf.reshape(self.classifier(summary), [-1, num_choices])
        loss = None if labels is None else cross_entropy(reshaped_logits, labels)
        output = MultipleChoiceModelOutput(
            loss=loss, logits=reshaped_logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return self._finish(output, return_dict, self.config)


class EncoderForTokenClassification(_HeadModel):
    head = "ForTokenClassification"

    def _build_head(self, config: EncoderConfig) -> None:
        self.num_labels = config.num_labels
        self.dropout = Dropout(_classifier_dropout(config, self.family))
        self.classifier = Linear(config.hidden_size, config.num_labels)

    def call(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        labels=None,
        training=False,
    ):
        outputs = self._encode(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, training=training,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state, training))
        loss = None if labels is None else cross_entropy(logits, labels)
        output = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return self._finish(output, return_dict, self.config)


class EncoderForQuestionAnswering(_HeadModel):
    head = "ForQuestionAnswering"

    def _build_head(self, config: EncoderConfig) -> None:
        self.num_labels = config.num_labels
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)

    def call(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        start_positions=None,
        end_positions=None,
        training=False,
    ):
        outputs = self._encode(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, training=training,
        )
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
        output = QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return self._finish(output, return_dict, self.config)


GENERIC_HEADS: dict[str, type[TFPreTrainedModel]] = {
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


def bind(family: Family, head: str) -> type[TFPreTrainedModel]:
    """The transformers-named TF class for one family and head, e.g. ``TFXLMRobertaForMaskedLM``."""
    generic = GENERIC_HEADS[head]
    name = "TF" + family.class_prefix + head
    attrs = {
        "family": family,
        "base_model_prefix": "" if head == "Model" else family.base_model_prefix,
        "__module__": "onnxport.reference_models.tf",
        "__qualname__": name,
    }
    return type(name, (generic,), attrs)
