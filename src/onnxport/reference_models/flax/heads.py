"""The seven task heads as linen modules, generic over families; mirrors ``reference_models/pt/modeling.py``.

Each task module holds the base model under the family's ``base_model_prefix`` (``roberta``,
``roberta_prelayernorm``, ``roformer``) and returns a dict of output fields; losses are pure jnp
functions matching torch's ``CrossEntropyLoss`` / ``MSELoss`` / ``BCEWithLogitsLoss`` (mean reduction).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ...configs import EncoderConfig
from ...families import Family
from ..head_protocol import CHOICE_INPUTS
from ..head_rules import LossFunctions, classifier_activation, classifier_dropout, sequence_classification_loss
from .activations import ACT2FN
from .encoder import BaseModel, dense, einsum, layer_norm


# ----------------------------------------------------------------------------- losses
def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int = -100) -> jax.Array:
    """torch.nn.CrossEntropyLoss(ignore_index=...) on (N, C) logits and (N,) labels: mean over kept labels."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    keep = labels != ignore_index
    safe_labels = jnp.where(keep, labels, 0)
    nll = -jnp.take_along_axis(log_probs, safe_labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return jnp.sum(jnp.where(keep, nll, 0.0)) / jnp.sum(keep)


def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.mean((predictions - targets.astype(predictions.dtype)) ** 2)


def bce_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    targets = targets.astype(logits.dtype)
    # max(x, 0) - x*y + log(1 + exp(-|x|)): the overflow-free form torch uses.
    return jnp.mean(jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits))))


LOSSES = LossFunctions(
    is_integer=lambda labels: jnp.issubdtype(labels.dtype, jnp.integer),
    squeeze=jnp.squeeze,
    mse=mse,
    cross_entropy=lambda logits, labels: cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)),
    bce_with_logits=bce_with_logits,
)


# ----------------------------------------------------------------------------- head modules
class _Transform(nn.Module):
    config: EncoderConfig
    width: int

    def setup(self) -> None:
        self.dense = dense(self.config, self.width)
        self.LayerNorm = layer_norm(self.config)

    def __call__(self, hidden_states):
        return self.LayerNorm(ACT2FN[self.config.hidden_act](self.dense(hidden_states)))


class LMHead(nn.Module):
    """Both LM-head layouts: dense -> activation -> LayerNorm -> decoder (+ bias).

    ``roberta``: ``lm_head.{dense, layer_norm, decoder, bias}`` with GELU.
    ``bert`` (RoFormer): ``cls.predictions.{transform.dense, transform.LayerNorm, decoder, bias}``
    with ``hidden_act``, projecting to ``embedding_size`` before the vocabulary.
    With ``tie_word_embeddings`` the decoder has no parameter of its own: it multiplies by the word embeddings.
    """

    config: EncoderConfig
    family: Family

    def setup(self) -> None:
        config = self.config
        width = config.embedding_width
        if self.family.lm_head_layout == "roberta":
            self.dense = dense(config, width)
            self.layer_norm = layer_norm(config)
        else:
            self.transform = _Transform(config, width)
        if not config.tie_word_embeddings:
            self.decoder = dense(config, config.vocab_size, use_bias=False)
        self.bias = self.param("bias", nn.initializers.zeros, (config.vocab_size,))

    def __call__(self, hidden_states, shared_embedding: Optional[jax.Array]):
        if self.family.lm_head_layout == "roberta":
            hidden_states = self.layer_norm(ACT2FN["gelu"](self.dense(hidden_states)))
        else:
            hidden_states = self.transform(hidden_states)
        if self.config.tie_word_embeddings:
            logits = einsum("bse,ve->bsv", hidden_states, shared_embedding)
        else:
            logits = self.decoder(hidden_states)
        return logits + self.bias


class _BertLMHeadContainer(nn.Module):
    """``cls`` holding ``predictions`` so parameter names read ``cls.predictions.*``."""

    config: EncoderConfig
    family: Family

    def setup(self) -> None:
        self.predictions = LMHead(self.config, self.family)

    def __call__(self, hidden_states, shared_embedding):
        return self.predictions(hidden_states, shared_embedding)


class ClassificationHead(nn.Module):
    """Sentence classifier on the first token: dense -> activation -> out_proj."""

    config: EncoderConfig
    family: Family

    def setup(self) -> None:
        self.dense = dense(self.config, self.config.hidden_size)
        self.dropout = nn.Dropout(classifier_dropout(self.config, self.family))
        self.out_proj = dense(self.config, self.config.num_labels)

    def __call__(self, features, deterministic: bool):
        activation = ACT2FN[classifier_activation(self.config, self.family)]
        x = self.dropout(features[:, 0, :], deterministic=deterministic)
        x = self.dropout(activation(self.dense(x)), deterministic=deterministic)
        return self.out_proj(x)


# ----------------------------------------------------------------------------- the seven task modules
class EncoderModelModule(BaseModel):
    """The ``Model`` head is the base model itself (no prefix in parameter names)."""

    def forward(self, inputs: dict[str, Any], targets: dict[str, Any], **flags) -> dict[str, Any]:
        return self(**inputs, **flags)


class _TaskModule(nn.Module):
    """A task: the base model under the family's prefix, then the head (``head``) on its outputs."""

    config: EncoderConfig
    family: Family
    add_pooling_layer: ClassVar[bool] = False

    @nn.compact
    def forward(self, inputs, targets, **flags):
        base = BaseModel(self.config, self.family, self.add_pooling_layer, name=self.family.base_model_prefix)
        outputs = base(**self.fold(inputs), **flags)
        return dict(outputs, **self.head(inputs, outputs, targets, flags["deterministic"]))

    def fold(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The inputs as the base model takes them."""
        return inputs

    def head(self, inputs, outputs, targets, deterministic: bool) -> dict[str, Any]:
        """The head's output fields (loss included) from the base model's ``outputs``."""
        raise NotImplementedError


class _LMModule(_TaskModule):
    def lm_logits(self, sequence_output):
        tied = self.config.tie_word_embeddings
        shared = (
            self.variables["params"][self.family.base_model_prefix]["embeddings"]["word_embeddings"]["embedding"]
            if tied
            else None
        )
        if self.family.lm_head_layout == "roberta":
            return LMHead(self.config, self.family, name="lm_head")(sequence_output, shared)
        return _BertLMHeadContainer(self.config, self.family, name="cls")(sequence_output, shared)


class ForCausalLMModule(_LMModule):
    def head(self, inputs, outputs, targets, deterministic):
        logits = self.lm_logits(outputs["last_hidden_state"])
        loss = None
        labels = targets.get("labels")
        if labels is not None:
            # Token t predicts token t + 1.
            vocab = self.config.vocab_size
            loss = cross_entropy(logits[:, :-1, :].reshape(-1, vocab), labels[:, 1:].reshape(-1))
        return dict(loss=loss, logits=logits)


class ForMaskedLMModule(_LMModule):
    def head(self, inputs, outputs, targets, deterministic):
        logits = self.lm_logits(outputs["last_hidden_state"])
        labels = targets.get("labels")
        loss = None if labels is None else cross_entropy(logits.reshape(-1, self.config.vocab_size), labels.reshape(-1))
        return dict(loss=loss, logits=logits)


class ForSequenceClassificationModule(_TaskModule):
    def head(self, inputs, outputs, targets, deterministic):
        classifier = ClassificationHead(self.config, self.family, name="classifier")
        logits = classifier(outputs["last_hidden_state"], deterministic)
        labels = targets.get("labels")
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels, LOSSES)
        return dict(loss=loss, logits=logits)


class ForMultipleChoiceModule(_TaskModule):
    add_pooling_layer = True

    def fold(self, inputs):
        def choices_in_batch(name, x):
            return x if x is None or name not in CHOICE_INPUTS else x.reshape((-1,) + tuple(x.shape[2:]))

        return {name: choices_in_batch(name, x) for name, x in inputs.items()}

    def head(self, inputs, outputs, targets, deterministic):
        reference = inputs["input_ids"] if inputs.get("input_ids") is not None else inputs["inputs_embeds"]
        num_choices = reference.shape[1]
        if self.family.multiple_choice_summary == "pooler":
            summary = nn.Dropout(self.config.hidden_dropout_prob)(outputs["pooler_output"], deterministic=deterministic)
        else:  # RoFormer's SequenceSummary with default settings: last token, no projection
            summary = outputs["last_hidden_state"][:, -1]
        reshaped_logits = dense(self.config, 1, name="classifier")(summary).reshape(-1, num_choices)
        labels = targets.get("labels")
        loss = None if labels is None else cross_entropy(reshaped_logits, labels.reshape(-1))
        return dict(loss=loss, logits=reshaped_logits)


class ForTokenClassificationModule(_TaskModule):
    def head(self, inputs, outputs, targets, deterministic):
        dropout = nn.Dropout(classifier_dropout(self.config, self.family))
        logits = dense(self.config, self.config.num_labels, name="classifier")(
            dropout(outputs["last_hidden_state"], deterministic=deterministic)
        )
        labels = targets.get("labels")
        loss = None
        if labels is not None:
            loss = cross_entropy(logits.reshape(-1, self.config.num_labels), labels.reshape(-1))
        return dict(loss=loss, logits=logits)


class ForQuestionAnsweringModule(_TaskModule):
    def head(self, inputs, outputs, targets, deterministic):
        logits = dense(self.config, self.config.num_labels, name="qa_outputs")(outputs["last_hidden_state"])
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        start_positions, end_positions = targets.get("start_positions"), targets.get("end_positions")
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence are ignored (clamped to an ignored index).
            ignored_index = start_logits.shape[1]
            start_positions = jnp.clip(start_positions.reshape(-1), 0, ignored_index)
            end_positions = jnp.clip(end_positions.reshape(-1), 0, ignored_index)
            loss = (
                cross_entropy(start_logits, start_positions, ignored_index)
                + cross_entropy(end_logits, end_positions, ignored_index)
            ) / 2
        return dict(loss=loss, start_logits=start_logits, end_logits=end_logits)


TASK_MODULES: dict[str, type[nn.Module]] = {
    "Model": EncoderModelModule,
    "ForCausalLM": ForCausalLMModule,
    "ForMaskedLM": ForMaskedLMModule,
    "ForSequenceClassification": ForSequenceClassificationModule,
    "ForMultipleChoice": ForMultipleChoiceModule,
    "ForTokenClassification": ForTokenClassificationModule,
    "ForQuestionAnswering": ForQuestionAnsweringModule,
}
