"""ONNX Runtime serving of exported directories. Imports no deep-learning framework."""

from .session import ModelFileError, ProviderUnavailableError, SessionConfig, create_session, select_providers

__all__ = ["ModelFileError", "ProviderUnavailableError", "SessionConfig", "create_session", "select_providers"]
