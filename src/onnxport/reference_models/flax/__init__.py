"""Flax/JAX reference models: the 21 transformers-named classes over one generic linen encoder.

``FlaxRoFormerForCausalLM`` exists here although transformers has no such Flax class.
"""

from ...errors import TaskError
from ...families import ROBERTA_PRELAYERNORM, ROFORMER, XLM_ROBERTA
from .modeling import FlaxPreTrainedModel, bind

FlaxXLMRobertaModel = bind(XLM_ROBERTA, "Model")
FlaxXLMRobertaForCausalLM = bind(XLM_ROBERTA, "ForCausalLM")
FlaxXLMRobertaForMaskedLM = bind(XLM_ROBERTA, "ForMaskedLM")
FlaxXLMRobertaForSequenceClassification = bind(XLM_ROBERTA, "ForSequenceClassification")
FlaxXLMRobertaForMultipleChoice = bind(XLM_ROBERTA, "ForMultipleChoice")
FlaxXLMRobertaForTokenClassification = bind(XLM_ROBERTA, "ForTokenClassification")
FlaxXLMRobertaForQuestionAnswering = bind(XLM_ROBERTA, "ForQuestionAnswering")

FlaxRobertaPreLayerNormModel = bind(ROBERTA_PRELAYERNORM, "Model")
FlaxRobertaPreLayerNormForCausalLM = bind(ROBERTA_PRELAYERNORM, "ForCausalLM")
FlaxRobertaPreLayerNormForMaskedLM = bind(ROBERTA_PRELAYERNORM, "ForMaskedLM")
FlaxRobertaPreLayerNormForSequenceClassification = bind(ROBERTA_PRELAYERNORM, "ForSequenceClassification")
FlaxRobertaPreLayerNormForMultipleChoice = bind(ROBERTA_PRELAYERNORM, "ForMultipleChoice")
FlaxRobertaPreLayerNormForTokenClassification = bind(ROBERTA_PRELAYERNORM, "ForTokenClassification")
FlaxRobertaPreLayerNormForQuestionAnswering = bind(ROBERTA_PRELAYERNORM, "ForQuestionAnswering")

FlaxRoFormerModel = bind(ROFORMER, "Model")
FlaxRoFormerForCausalLM = bind(ROFORMER, "ForCausalLM")
FlaxRoFormerForMaskedLM = bind(ROFORMER, "ForMaskedLM")
FlaxRoFormerForSequenceClassification = bind(ROFORMER, "ForSequenceClassification")
FlaxRoFormerForMultipleChoice = bind(ROFORMER, "ForMultipleChoice")
FlaxRoFormerForTokenClassification = bind(ROFORMER, "ForTokenClassification")
FlaxRoFormerForQuestionAnswering = bind(ROFORMER, "ForQuestionAnswering")

_FAMILY_PREFIXES = ("FlaxXLMRoberta", "FlaxRobertaPreLayerNorm", "FlaxRoFormer")
MODEL_CLASSES: dict[tuple[str, str], type[FlaxPreTrainedModel]] = {
    (cls.family.model_type, cls.head): cls for name, cls in list(globals().items()) if name.startswith(_FAMILY_PREFIXES)
}


def model_class(model_type: str, head: str) -> type[FlaxPreTrainedModel]:
    """The class for a family's model_type and a head name ("Model", "ForMaskedLM", ...)."""
    try:
        return MODEL_CLASSES[(model_type, head)]
    except KeyError:
        raise TaskError(f"No Flax class for model_type={model_type!r}, head={head!r}.") from None


__all__ = [name for name in dir() if name.startswith(_FAMILY_PREFIXES)] + [
    "FlaxPreTrainedModel", "MODEL_CLASSES", "model_class",
]
