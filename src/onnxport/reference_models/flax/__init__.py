"""Flax/JAX reference models: the transformers-named classes over one generic linen encoder.

``FlaxRoFormerForCausalLM`` exists here although transformers has no such Flax class.
"""

from ...errors import TaskError
from ...families import FAMILIES, HEADS
from .modeling import FlaxPreTrainedModel, bind

# One class per family and head, named as in transformers (FlaxXLMRobertaForMaskedLM, FlaxRobertaModel, ...).
MODEL_CLASSES: dict[tuple[str, str], type[FlaxPreTrainedModel]] = {
    (family.model_type, head): bind(family, head) for family in FAMILIES.values() for head in HEADS
}
globals().update({cls.__name__: cls for cls in MODEL_CLASSES.values()})


def model_class(model_type: str, head: str) -> type[FlaxPreTrainedModel]:
    """The class for a family's model_type and a head name ("Model", "ForMaskedLM", ...)."""
    try:
        return MODEL_CLASSES[(model_type, head)]
    except KeyError:
        raise TaskError(f"No Flax class for model_type={model_type!r}, head={head!r}.") from None


__all__ = [cls.__name__ for cls in MODEL_CLASSES.values()] + ["FlaxPreTrainedModel", "MODEL_CLASSES", "model_class"]
