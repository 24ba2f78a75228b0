"""PyTorch reference models: the transformers-named classes (7 heads per family) over one generic encoder."""

from ..registry import ModelClasses
from .modeling import GENERIC_HEADS, PreTrainedModel

# One class per family and head, named as in transformers (XLMRobertaForMaskedLM, RobertaModel, ...).
_CLASSES = ModelClasses("PyTorch", "", GENERIC_HEADS, __name__)
MODEL_CLASSES: dict[tuple[str, str], type[PreTrainedModel]] = _CLASSES.by_key
model_class = _CLASSES.model_class
globals().update(_CLASSES.by_name)
__all__ = [*_CLASSES.by_name, "PreTrainedModel", "MODEL_CLASSES", "model_class"]
