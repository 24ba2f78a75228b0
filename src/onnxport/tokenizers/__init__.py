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
from .versions import saved_by_major
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


def _json_object(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a valid JSON object ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a valid JSON object (it holds a {type(data).__name__})")
    return data


def _json_field(path: Path, field: str):
    return _json_object(path).get(field)


class AutoTokenizer:
    """Pick the tokenizer class of a directory from tokenizer_config.json's `tokenizer_class`, else from
    config.json's `model_type`.

    A directory saved by transformers 5 (versions.py: tokenizer_config.json's "backend") gets the fast class even
    with use_fast=False, as transformers 5 gives it: its RoBERTa, RoFormer and XLM-R tokenizers have no Python
    engine, so both answers are the Rust tokenizer's. The slow classes themselves still load such a directory
    (RoBERTa and RoFormer from tokenizer.json) with transformers 4.x's Python results."""

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
        if not use_fast and saved_by_major(_json_object(directory / "tokenizer_config.json")) >= 5:
            use_fast = True
        return pair[1 if use_fast else 0], named_by


__all__ = [
    "AutoTokenizer", "BatchEncoding", "FastTokenizerBase", "RoFormerTokenizer", "RoFormerTokenizerFast",
    "RobertaTokenizer", "RobertaTokenizerFast", "SlowTokenizerBase", "TokenizerBase", "XLMRobertaTokenizer",
    "XLMRobertaTokenizerFast",
]
