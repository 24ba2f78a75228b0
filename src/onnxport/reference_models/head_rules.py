"""Rules of the task heads that do not depend on the framework, used by the PyTorch, TensorFlow and Flax heads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

from ..configs import EncoderConfig
from ..families import Family

ProblemType = Literal["regression", "single_label_classification", "multi_label_classification"]


def problem_type(config: EncoderConfig, labels_are_integer: bool) -> ProblemType:
    """``config.problem_type``, or transformers' inference when unset: one label regresses, integer labels
    are single-label classes, anything else is multi-label (one probability per label)."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    return "single_label_classification" if labels_are_integer else "multi_label_classification"


@dataclass(frozen=True)
class LossFunctions:
    """One framework's losses with torch's semantics (mean reduction)."""

    is_integer: Callable[[Any], bool]
    squeeze: Callable[[Any], Any]
    mse: Callable[[Any, Any], Any]  # (predictions, targets of any dtype)
    cross_entropy: Callable[[Any, Any], Any]  # (logits (..., C), class labels (...)), flattened inside
    bce_with_logits: Callable[[Any, Any], Any]  # (logits, targets of any dtype)


def sequence_classification_loss(config: EncoderConfig, logits: Any, labels: Any, losses: LossFunctions) -> Any:
    """Regression / single-label / multi-label loss by ``problem_type``."""
    kind = problem_type(config, losses.is_integer(labels))
    if kind == "regression":
        if config.num_labels == 1:
            return losses.mse(losses.squeeze(logits), losses.squeeze(labels))
        return losses.mse(logits, labels)
    if kind == "single_label_classification":
        return losses.cross_entropy(logits, labels)
    return losses.bce_with_logits(logits, labels)


def classifier_dropout(config: EncoderConfig, family: Family) -> float:
    """Dropout of the classifier heads: ``config.classifier_dropout`` where the family honours it."""
    if family.classifier_dropout_from_config and config.classifier_dropout is not None:
        return config.classifier_dropout
    return config.hidden_dropout_prob


def classifier_activation(config: EncoderConfig, family: Family) -> str:
    """The activation between the sequence classifier's two layers, by transformers' name."""
    return "tanh" if family.classifier_activation == "tanh" else config.hidden_act


def finish(output: Any, return_dict: Optional[bool], config: EncoderConfig) -> Any:
    """The output object, or its tuple when ``return_dict`` (default: the config's) is off."""
    return_dict = config.use_return_dict if return_dict is None else return_dict
    return output if return_dict else output.to_tuple()
