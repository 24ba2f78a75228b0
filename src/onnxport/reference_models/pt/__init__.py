"""PyTorch reference models: the 21 transformers-named classes over one generic encoder."""

from ...errors import TaskError
from ...families import ROBERTA_PRELAYERNORM, ROFORMER, XLM_ROBERTA
from .modeling import PreTrainedModel, bind

XLMRobertaModel = bind(XLM_ROBERTA, "Model")
XLMRobertaForCausalLM = bind(XLM_ROBERTA, "ForCausalLM")
XLMRobertaForMaskedLM = bind(XLM_ROBERTA, "ForMaskedLM")
XLMRobertaForSequenceClassification = bind(XLM_ROBERTA, "ForSequenceClassification")
XLMRobertaForMultipleChoice = bind(XLM_ROBERTA, "ForMultipleChoice")
XLMRobertaForTokenClassification = bind(XLM_ROBERTA, "ForTokenClassification")
XLMRobertaForQuestionAnswering = bind(XLM_ROBERTA, "ForQuestionAnswering")

RobertaPreLayerNormModel = bind(ROBERTA_PRELAYERNORM, "Model")
RobertaPreLayerNormForCausalLM = bind(ROBERTA_PRELAYERNORM, "ForCausalLM")
RobertaPreLayerNormForMaskedLM = bind(ROBERTA_PRELAYERNORM, "ForMaskedLM")
RobertaPreLayerNormForSequenceClassification = bind(ROBERTA_PRELAYERNORM, "ForSequenceClassification")
RobertaPreLayerNormForMultipleChoice = bind(ROBERTA_PRELAYERNORM, "ForMultipleChoice")
RobertaPreLayerNormForTokenClassification = bind(ROBERTA_PRELAYERNORM, "ForTokenClassification")
RobertaPreLayerNormForQuestionAnswering = bind(ROBERTA_PRELAYERNORM, "ForQuestionAnswering")

RoFormerModel = bind(ROFORMER, "Model")
RoFormerForCausalLM = bind(ROFORMER, "ForCausalLM")
RoFormerForMaskedLM = bind(ROFORMER, "ForMaskedLM")
RoFormerForSequenceClassification = bind(ROFORMER, "ForSequenceClassification")
RoFormerForMultipleChoice = bind(ROFORMER, "ForMultipleChoice")
RoFormerForTokenClassification = bind(ROFORMER, "ForTokenClassification")
RoFormerForQuestionAnswering = bind(ROFORMER, "ForQuestionAnswering")

_FAMILY_PREFIXES = ("XLMRoberta", "RobertaPreLayerNorm", "RoFormer")
MODEL_CLASSES: dict[tuple[str, str], type[PreTrainedModel]] = {
    (cls.family.model_type, cls.head): cls for name, cls in list(globals().items()) if name.startswith(_FAMILY_PREFIXES)
}


def model_class(model_type: str, head: str) -> type[PreTrainedModel]:
    """The class for a family's model_type and a head name ("Model", "ForMaskedLM", ...)."""
    try:
        return MODEL_CLASSES[(model_type, head)]
    except KeyError:
        raise TaskError(f"No PyTorch class for model_type={model_type!r}, head={head!r}.") from None


__all__ = [name for name in dir() if name.startswith(_FAMILY_PREFIXES)] + ["MODEL_CLASSES", "model_class"]
