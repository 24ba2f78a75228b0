"""A cross-encoder's scoring, recorded beside its graph: ``onnxport.json``'s ``cross_encoder`` record.

A sentence-transformers ``CrossEncoder`` is a sequence classifier (its graph is text-classification's) plus
what ``CrossEncoder.predict`` does with the logits: an activation (``Sigmoid`` when ``num_labels == 1``,
``Identity`` otherwise, unless the model names another), truncation of each (query, document) pair to its
``max_length`` and optional prompts put before the query. A ``rerank`` export records those here; the
runtime's rerank pipeline reads them back. Imports no framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..errors import ModelFileError
from .records import Record

RECORD_KEY = "cross_encoder"  # the record's key in onnxport.json

# sentence-transformers names the activation by the class path of a torch module (``activation_fn`` in
# config_sentence_transformers.json, older releases in config.json); onnxport's name for each it can apply.
ACTIVATION_PATHS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.Softmax": "softmax",  # Softmax() without dim: over the labels of each pair
}
ACTIVATIONS = tuple(dict.fromkeys(ACTIVATION_PATHS.values()))


def default_activation(num_labels: int) -> str:
    """``CrossEncoder``'s default: Sigmoid for one label (a relevance score in (0, 1)), Identity otherwise."""
    return "sigmoid" if num_labels == 1 else "identity"


@dataclass(frozen=True)
class CrossEncoderRecord(Record):
    activation: str  # one of ACTIVATIONS
    num_labels: int
    max_length: Optional[int]  # pairs are truncated to this many tokens (None: the position table's length)
    source: str  # where the activation came from, for readers of the file
    prompts: Mapping[str, str] = field(default_factory=dict)
    default_prompt_name: Optional[str] = None

    @classmethod
    def from_dict(cls, record: Any, where: str = RECORD_KEY) -> "CrossEncoderRecord":
        """The record as ``onnxport.json`` holds it, checked field by field."""
        if not isinstance(record, Mapping):
            raise ModelFileError(f"{where} must be an object, got {type(record).__name__}; re-export the model.")
        activation = record.get("activation")
        if activation not in ACTIVATIONS:
            raise ModelFileError(f"{where}.activation is {activation!r}; onnxport applies {', '.join(ACTIVATIONS)}. "
                                 "Re-export the model with this onnxport.")
        num_labels, max_length = record.get("num_labels"), record.get("max_length")
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1:
            raise ModelFileError(f"{where}.num_labels must be a positive integer, got {num_labels!r}.")
        if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1):
            raise ModelFileError(f"{where}.max_length must be a positive integer or null, got {max_length!r}.")
        prompts = record.get("prompts") or {}
        if not isinstance(prompts, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in prompts.items()):
            raise ModelFileError(f"{where}.prompts must map prompt names to texts, got {prompts!r}.")
        default = record.get("default_prompt_name")
        if default is not None and default not in prompts:
            raise ModelFileError(f"{where}.default_prompt_name {default!r} is not one of the prompts {sorted(prompts)}.")
        return cls(activation, num_labels, max_length, str(record.get("source", "")), dict(prompts), default)


__all__ = ["ACTIVATIONS", "ACTIVATION_PATHS", "RECORD_KEY", "CrossEncoderRecord", "default_activation"]
