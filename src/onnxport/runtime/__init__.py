"""ONNX Runtime serving of exported directories. Imports no deep-learning framework."""

from .models import (
    OnnxModel,
    OnnxModelForCausalLM,
    OnnxModelForMaskedLM,
    OnnxModelForMultipleChoice,
    OnnxModelForQuestionAnswering,
    OnnxModelForSentenceEmbeddings,
    OnnxModelForSequenceClassification,
    OnnxModelForTokenClassification,
    RuntimeInputError,
    load_model,
)
from .pipelines import pipeline
from .session import ModelFileError, ProviderUnavailableError, SessionConfig, create_session, select_providers

__all__ = [
    "OnnxModel", "OnnxModelForCausalLM", "OnnxModelForMaskedLM", "OnnxModelForMultipleChoice",
    "OnnxModelForQuestionAnswering", "OnnxModelForSentenceEmbeddings", "OnnxModelForSequenceClassification", "OnnxModelForTokenClassification",
    "RuntimeInputError", "load_model", "pipeline",
    "ModelFileError", "ProviderUnavailableError", "SessionConfig", "create_session", "select_providers",
]
