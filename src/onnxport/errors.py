"""One exception hierarchy for everything a user can get wrong.

Every refusal onnxport makes is an ``OnnxportError`` whose message says what was wrong and what to
do; the CLI catches the base and prints that one line. Each class also derives from the built-in
exception a caller would have caught before (``ValueError`` for bad values, ``ImportError`` for a
missing framework, ...), so existing ``except`` clauses keep working.
"""

from __future__ import annotations


class OnnxportError(Exception):
    """Base of every onnxport error; the message says what was wrong and what to do."""


class InputError(OnnxportError, ValueError):
    """A model or pipeline input that does not fit the model; the message says what to change."""


class ConfigError(OnnxportError, ValueError):
    """An invalid configuration value; the message says which field and what is allowed."""


class CheckpointError(OnnxportError, ValueError):
    """A checkpoint that cannot be read safely or does not fit the model."""


class ModelFileError(OnnxportError, ValueError):
    """An export directory or ONNX file that is missing, corrupt or inconsistent."""


class TaskError(OnnxportError, ValueError):
    """An export task that does not exist or that the model cannot do."""


class ExportError(OnnxportError, RuntimeError):
    """The export cannot proceed; the message says what to change."""


class ValidationError(OnnxportError, AssertionError):
    """The exported graph disagrees with the native model beyond the tolerance."""


class QuantizationError(OnnxportError, RuntimeError):
    """The int8 model disagrees with fp32 beyond the thresholds (or cannot be produced)."""


class ProviderUnavailableError(OnnxportError, RuntimeError):
    """An execution provider that this onnxruntime build or machine cannot run."""


class FrameworkNotInstalledError(ExportError, ImportError):
    """A deep-learning framework an operation needs is not installed; the message names the extra."""


__all__ = [
    "OnnxportError", "InputError", "ConfigError", "CheckpointError", "ModelFileError", "TaskError",
    "ExportError", "ValidationError", "QuantizationError", "ProviderUnavailableError",
    "FrameworkNotInstalledError",
]
