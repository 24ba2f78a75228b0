"""The transformers-named classes of one framework, generated once from FAMILIES x HEADS.

Each framework writes seven generic head classes (``GENERIC_HEADS``); binding one to a family sets the
family record and the base-model prefix and names the class as transformers does
(``XLMRobertaForMaskedLM``, ``TFRobertaModel``, ``FlaxRoFormerForQuestionAnswering``, ...).
"""

from __future__ import annotations

from typing import Sequence

from ..errors import TaskError
from ..families import FAMILIES, HEADS, Family


def bind(generic: type, family: Family, head: str, class_prefix: str, module: str) -> type:
    """The class for one family and head, e.g. ``bind(EncoderForMaskedLM, XLM_R, "ForMaskedLM", "TF", ...)``."""
    name = class_prefix + family.class_prefix + head
    attrs = {
        "family": family,
        "framework_prefix": class_prefix,
        "base_model_prefix": "" if head == "Model" else family.base_model_prefix,
        "__module__": module,
        "__qualname__": name,
    }
    return type(name, (generic,), attrs)


class ModelClasses:
    """Every (model_type, head) class of one framework: ``by_key``, ``by_name`` and ``model_class``."""

    def __init__(self, framework: str, class_prefix: str, generic_heads: Sequence[type], module: str) -> None:
        """``generic_heads``: the framework's seven generic classes, each naming its ``head``."""
        self.framework = framework
        generic = {cls.head: cls for cls in generic_heads}
        self.by_key: dict[tuple[str, str], type] = {
            (family.model_type, head): bind(generic[head], family, head, class_prefix, module)
            for family in FAMILIES.values()
            for head in HEADS
        }
        self.by_name: dict[str, type] = {cls.__name__: cls for cls in self.by_key.values()}

    def model_class(self, model_type: str, head: str) -> type:
        """The class for a family's model_type and a head name ("Model", "ForMaskedLM", ...)."""
        try:
            return self.by_key[(model_type, head)]
        except KeyError:
            raise TaskError(f"No {self.framework} class for model_type={model_type!r}, head={head!r}.") from None
