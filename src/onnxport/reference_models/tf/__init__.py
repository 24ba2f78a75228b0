"""TensorFlow reference models: the 21 transformers-named TF classes over one generic encoder.

They read and write HF PyTorch-format checkpoints (no TF weight files), run eagerly,
inside ``tf.function`` with unknown batch/sequence dimensions, and under ``jit_compile=True``.
"""

from ...errors import TaskError
from ...families import ROBERTA_PRELAYERNORM, ROFORMER, XLM_ROBERTA
from .modeling import TFPreTrainedModel, bind

TFXLMRobertaModel = bind(XLM_ROBERTA, "Model")
TFXLMRobertaForCausalLM = bind(XLM_ROBERTA, "ForCausalLM")
TFXLMRobertaForMaskedLM = bind(XLM_ROBERTA, "ForMaskedLM")
TFXLMRobertaForSequenceClassification = bind(XLM_ROBERTA, "ForSequenceClassification")
TFXLMRobertaForMultipleChoice = bind(XLM_ROBERTA, "ForMultipleChoice")
TFXLMRobertaForTokenClassification = bind(XLM_ROBERTA, "ForTokenClassification")
TFXLMRobertaForQuestionAnswering = bind(XLM_ROBERTA, "ForQuestionAnswering")

TFRobertaPreLayerNormModel = bind(ROBERTA_PRELAYERNORM, "Model")
TFRobertaPreLayerNormForCausalLM = bind(ROBERTA_PRELAYERNORM, "ForCausalLM")
TFRobertaPreLayerNormForMaskedLM = bind(ROBERTA_PRELAYERNORM, "ForMaskedLM")
TFRobertaPreLayerNormForSequenceClassification = bind(ROBERTA_PRELAYERNORM, "ForSequenceClassification")
TFRobertaPreLayerNormForMultipleChoice = bind(ROBERTA_PRELAYERNORM, "ForMultipleChoice")
TFRobertaPreLayerNormForTokenClassification = bind(ROBERTA_PRELAYERNORM, "ForTokenClassification")
TFRobertaPreLayerNormForQuestionAnswering = bind(ROBERTA_PRELAYERNORM, "ForQuestionAnswering")

TFRoFormerModel = bind(ROFORMER, "Model")
TFRoFormerForCausalLM = bind(ROFORMER, "ForCausalLM")
TFRoFormerForMaskedLM = bind(ROFORMER, "ForMaskedLM")
TFRoFormerForSequenceClassification = bind(ROFORMER, "ForSequenceClassification")
TFRoFormerForMultipleChoice = bind(ROFORMER, "ForMultipleChoice")
TFRoFormerForTokenClassification = bind(ROFORMER, "ForTokenClassification")
TFRoFormerForQuestionAnswering = bind(ROFORMER, "ForQuestionAnswering")

_FAMILY_PREFIXES = ("TFXLMRoberta", "TFRobertaPreLayerNorm", "TFRoFormer")
MODEL_CLASSES: dict[tuple[str, str], type[TFPreTrainedModel]] = {
    (cls.family.model_type, cls.head): cls for name, cls in list(globals().items()) if name.startswith(_FAMILY_PREFIXES)
}


def model_class(model_type: str, head: str) -> type[TFPreTrainedModel]:
    """The TF class for a family's model_type and a head name ("Model", "ForMaskedLM", ...)."""
    try:
        return MODEL_CLASSES[(model_type, head)]
    except KeyError:
        raise TaskError(f"No TensorFlow class for model_type={model_type!r}, head={head!r}.") from None


__all__ = [
    "TFXLMRobertaModel",
    "TFXLMRobertaForCausalLM",
    "TFXLMRobertaForMaskedLM",
    "TFXLMRobertaForSequenceClassification",
    "TFXLMRobertaForMultipleChoice",
    "TFXLMRobertaForTokenClassification",
    "TFXLMRobertaForQuestionAnswering",
    "TFRobertaPreLayerNormModel",
    "TFRobertaPreLayerNormForCausalLM",
    "TFRobertaPreLayerNormForMaskedLM",
    "TFRobertaPreLayerNormForSequenceClassification",
    "TFRobertaPreLayerNormForMultipleChoice",
    "TFRobertaPreLayerNormForTokenClassification",
    "TFRobertaPreLayerNormForQuestionAnswering",
    "TFRoFormerModel",
    "TFRoFormerForCausalLM",
    "TFRoFormerForMaskedLM",
    "TFRoFormerForSequenceClassification",
    "TFRoFormerForMultipleChoice",
    "TFRoFormerForTokenClassification",
    "TFRoFormerForQuestionAnswering",
    "TFPreTrainedModel",
    "MODEL_CLASSES",
    "model_class",
]
