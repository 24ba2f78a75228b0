"""Model outputs with transformers' behaviour: attribute, key and index access.

Fields that are ``None`` are left out of the key/tuple view, as transformers does,
so ``out[0]`` is the loss when labels were given and the logits otherwise.
Shared by the PyTorch, TensorFlow and Flax implementations.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class ModelOutput(OrderedDict):
    field_names: tuple[str, ...] = ()

    def __init__(self, *pairs: Any, **fields: Any) -> None:
        # tf.nest (tf.function outputs) rebuilds mappings as ``type(out)(iterable of (key, value))``.
        if pairs:
            if len(pairs) != 1:
                raise TypeError(f"{type(self).__name__} takes at most one positional argument (key/value pairs)")
            fields = {**dict(pairs[0]), **fields}
        super().__init__()
        unknown = set(fields) - set(self.field_names)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        for name in self.field_names:
            value = fields.get(name)
            object.__setattr__(self, name, value)
            if value is not None:
                super().__setitem__(name, value)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(key)
        return self.to_tuple()[key]

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in self.field_names:
            if value is None:
                self.pop(name, None)
            else:
                super().__setitem__(name, value)

    @classmethod
    def over(cls, encoder_outputs: "ModelOutput", **fields: Any) -> "ModelOutput":
        """A head's output: ``fields`` plus what it passes on from the encoder's output (hidden states,
        attentions, and where the head has them the cache and cross-attentions)."""
        passed_on = {name: getattr(encoder_outputs, name, None) for name in cls.field_names if name not in fields}
        return cls(**passed_on, **fields)

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self[k] for k in self.keys())

    def __reduce__(self):  # keep pickling/copy working with the custom __init__
        return (type(self), (), None, None, iter(self.items()))


def _output(name: str, *field_names: str) -> type[ModelOutput]:
    return type(name, (ModelOutput,), {"field_names": field_names, "__doc__": f"transformers' {name}."})


BaseModelOutputWithPoolingAndCrossAttentions = _output(
    "BaseModelOutputWithPoolingAndCrossAttentions",
    "last_hidden_state", "pooler_output", "hidden_states", "past_key_values", "attentions", "cross_attentions",
)
CausalLMOutputWithCrossAttentions = _output(
    "CausalLMOutputWithCrossAttentions",
    "loss", "logits", "past_key_values", "hidden_states", "attentions", "cross_attentions",
)
MaskedLMOutput = _output("MaskedLMOutput", "loss", "logits", "hidden_states", "attentions")
SequenceClassifierOutput = _output("SequenceClassifierOutput", "loss", "logits", "hidden_states", "attentions")
MultipleChoiceModelOutput = _output("MultipleChoiceModelOutput", "loss", "logits", "hidden_states", "attentions")
TokenClassifierOutput = _output("TokenClassifierOutput", "loss", "logits", "hidden_states", "attentions")
QuestionAnsweringModelOutput = _output(
    "QuestionAnsweringModelOutput", "loss", "start_logits", "end_logits", "hidden_states", "attentions"
)
