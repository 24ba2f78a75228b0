"""Flax/JAX reference models: the transformers-named classes over one generic linen encoder.

``FlaxRoFormerForCausalLM`` exists here although transformers has no such Flax class.
"""

from ..registry import ModelClasses
from .modeling import GENERIC_HEADS, FlaxPreTrainedModel

# One class per family and head, named as in transformers (FlaxXLMRobertaForMaskedLM, FlaxRobertaModel, ...).
_CLASSES = ModelClasses("Flax", "Flax", GENERIC_HEADS, __name__)
MODEL_CLASSES: dict[tuple[str, str], type[FlaxPreTrainedModel]] = _CLASSES.by_key
model_class = _CLASSES.model_class
globals().update(_CLASSES.by_name)
__all__ = [*_CLASSES.by_name, "FlaxPreTrainedModel", "MODEL_CLASSES", "model_class"]
