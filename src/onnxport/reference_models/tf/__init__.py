"""TensorFlow reference models: the transformers-named TF classes over one generic encoder.

They read and write HF PyTorch-format checkpoints (no TF weight files), run eagerly,
inside ``tf.function`` with unknown batch/sequence dimensions, and under ``jit_compile=True``.
"""

from ...errors import TaskError
from ...families import FAMILIES, HEADS
from .modeling import TFPreTrainedModel, bind

# One class per family and head, named as in transformers (TFXLMRobertaForMaskedLM, TFRobertaModel, ...).
MODEL_CLASSES: dict[tuple[str, str], type[TFPreTrainedModel]] = {
    (family.model_type, head): bind(family, head) for family in FAMILIES.values() for head in HEADS
}
globals().update({cls.__name__: cls for cls in MODEL_CLASSES.values()})


def model_class(model_type: str, head: str) -> type[TFPreTrainedModel]:
    """The class for a family's model_type and a head name ("Model", "ForMaskedLM", ...)."""
    try:
        return MODEL_CLASSES[(model_type, head)]
    except KeyError:
        raise TaskError(f"No TensorFlow class for model_type={model_type!r}, head={head!r}.") from None


__all__ = [cls.__name__ for cls in MODEL_CLASSES.values()] + ["TFPreTrainedModel", "MODEL_CLASSES", "model_class"]
