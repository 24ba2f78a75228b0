"""Opset imports of a model, shared by the custom ops (``rotary_op``, ``attention_op``) and their lowerings."""

from __future__ import annotations

import onnx
from onnx import helper


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ValueError("The model imports no default ONNX opset.")


def set_opset(model: onnx.ModelProto, domain: str, version: int) -> None:
    """Import ``domain`` at ``version`` (replacing the version already imported)."""
    for imp in model.opset_import:
        if imp.domain == domain:
            imp.version = version
            return
    model.opset_import.append(helper.make_opsetid(domain, version))


def drop_opset(model: onnx.ModelProto, domain: str) -> None:
    keep = [imp for imp in model.opset_import if imp.domain != domain]
    del model.opset_import[:]
    model.opset_import.extend(keep)
