"""The files of an export directory: the model, its external data, the tokenizer's, and which belong to an export."""

from __future__ import annotations

import json
import os

from .spec_file import SPEC_FILE

MODEL_FILE = "model.onnx"
EXTERNAL_DATA_FILE = "model.onnx_data"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "sentencepiece.bpe.model",
)


def export_file_names(out_dir: str) -> set[str]:
    """Names in ``out_dir`` that belong to an export (replaced by a new one); anything else is the user's.

    The files every export may write, plus those the directory's ``onnxport.json`` lists (an int8 or
    older export's own files)."""
    names = {MODEL_FILE, EXTERNAL_DATA_FILE, SPEC_FILE, "config.json", *TOKENIZER_FILES}
    try:
        with open(os.path.join(out_dir, SPEC_FILE), encoding="utf-8") as fh:
            listed = json.load(fh).get("files", [])
        names.update(os.path.basename(n) for n in listed if isinstance(n, str))
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # no readable onnxport.json: the fixed names only
    return names


def missing_tokenizer_message(directory: str, family) -> str:
    """What to add so that a directory gets a tokenizer (the runtime says the same)."""
    files = " + ".join(family.tokenizer_files)
    return (f"{directory} has no usable tokenizer: add the {family.tokenizer_class}'s files ({files}, or a "
            "tokenizer.json) to the checkpoint and re-export, or copy them into the export directory; until then "
            "pipelines and `onnxport run` cannot tokenize (the model still takes ids)")
