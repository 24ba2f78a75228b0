"""TensorFlow reference models: the transformers-named TF classes over one generic encoder.

They read and write HF PyTorch-format checkpoints (no TF weight files), run eagerly,
inside ``tf.function`` with unknown batch/sequence dimensions, and under ``jit_compile=True``.
"""

from ..registry import ModelClasses
from .modeling import GENERIC_HEADS, TFPreTrainedModel

# One class per family and head, named as in transformers (TFXLMRobertaForMaskedLM, TFRobertaModel, ...).
_CLASSES = ModelClasses("TensorFlow", "TF", GENERIC_HEADS, __name__)
MODEL_CLASSES: dict[tuple[str, str], type[TFPreTrainedModel]] = _CLASSES.by_key
model_class = _CLASSES.model_class
globals().update(_CLASSES.by_name)
__all__ = [*_CLASSES.by_name, "TFPreTrainedModel", "MODEL_CLASSES", "model_class"]
