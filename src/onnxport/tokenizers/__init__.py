"""Tokenizers of the three families, slow (Python) and fast (`tokenizers`, Rust), with transformers' call API.

No deep-learning framework is imported here; `return_tensors="pt"|"tf"|"jax"` imports it on demand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from ..families import FAMILIES
from .base import TokenizerBase
from .encoding import BatchEncoding
from .fast import FastTokenizerBase
from .roberta import RobertaTokenizer, RobertaTokenizerFast
from .roformer import RoFormerTokenizer, RoFormerTokenizerFast
from .slow import SlowTokenizerBase
from .xlm_roberta import XLMRobertaTokenizer, XLMRobertaTokenizerFast

# (slow, fast) per transformers tokenizer_class (without "Fast") and per config.json model_type.
TOKENIZERS_BY_CLASS_NAME = {
    "XLMRobertaTokenizer": (XLMRobertaTokenizer, XLMRobertaTokenizerFast),
    "RobertaTokenizer": (RobertaTokenizer, RobertaTokenizerFast),
    "RoFormerTokenizer": (RoFormerTokenizer, RoFormerTokenizerFast),
}
# Each family's tokenizer class is family data (families.py).
TOKENIZERS_BY_MODEL_TYPE = {model_type: TOKENIZERS_BY_CLASS_NAME[family.tokenizer_class]
                            for model_type, family in FAMILIES.items()}


def _json_field(path: Path, field: str):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get(field)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise ValueError(f"{path} is not a valid JSON object ({error})") from error


class AutoTokenizer:
    """Pick the tokenizer class of a directory from tokenizer_config.json's `tokenizer_class`, else from
    config.json's `model_type`."""

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], use_fast: bool = True, **kwargs) -> TokenizerBase:
        directory = Path(directory)
        if not directory.is_dir():
            raise OSError(f"{directory} is not a directory; AutoTokenizer.from_pretrained needs a local directory")
        return cls.class_for(directory, use_fast)[0].from_pretrained(directory, **kwargs)

    @classmethod
    def class_for(cls, directory: Union[str, os.PathLike], use_fast: bool = True) -> tuple[type[TokenizerBase], str]:
        """The class ``from_pretrained`` loads from ``directory`` and what names it (for messages)."""
        directory = Path(directory)
        class_name = _json_field(directory / "tokenizer_config.json", "tokenizer_class")
        model_type = _json_field(directory / "config.json", "model_type")
        # A generic class name (e.g. "PreTrainedTokenizerFast") says nothing; config.json's model_type may.
        pair = TOKENIZERS_BY_CLASS_NAME.get((class_name or "").removesuffix("Fast"))
        named_by = f"tokenizer_config.json's tokenizer_class {class_name!r}"
        if pair is None:
            pair = TOKENIZERS_BY_MODEL_TYPE.get(model_type)
            named_by = f"config.json's model_type {model_type!r}"
        if pair is None:
            raise ValueError(
                f"cannot tell the tokenizer of {directory}: tokenizer_config.json's tokenizer_class is {class_name!r} "
                f"and config.json's model_type is {model_type!r}; supported are tokenizer_class "
                f"{sorted(TOKENIZERS_BY_CLASS_NAME)} or model_type {sorted(TOKENIZERS_BY_MODEL_TYPE)}"
            )
        return pair[1 if use_fast else 0], named_by


__all__ = [
    "AutoTokenizer", "BatchEncoding", "FastTokenizerBase", "RoFormerTokenizer", "RoFormerTokenizerFast",
    "RobertaTokenizer", "RobertaTokenizerFast", "SlowTokenizerBase", "TokenizerBase", "XLMRobertaTokenizer",
    "XLMRobertaTokenizerFast",
]
