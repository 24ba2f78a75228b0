"""The files of an export directory: the model, its external data, the tokenizer's, and which belong to an export."""

from __future__ import annotations

import json
import os

from .layout import LAYOUT_NAMES, LEGACY_MODEL_FILE, external_data_name
from .spec_file import SPEC_FILE

# The fp32 graph's file name and its external data's, beside it (where the graph sits in a directory is
# layout.py's: onnx/model.onnx, found in either layout by layout.model_path).
MODEL_FILE = LEGACY_MODEL_FILE
EXTERNAL_DATA_FILE = external_data_name(MODEL_FILE)
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
    names = {*LAYOUT_NAMES, SPEC_FILE, "config.json", *TOKENIZER_FILES}
    try:
        with open(os.path.join(out_dir, SPEC_FILE), encoding="utf-8") as fh:
            listed = json.load(fh).get("files", [])
        names.update(n.split("/")[0] for n in listed if isinstance(n, str))  # onnx/model.onnx -> onnx
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # no readable onnxport.json: the fixed names only
    return names


def missing_tokenizer_message(directory: str, family) -> str:
    """What to add so that a directory gets a tokenizer (the runtime says the same)."""
    files = " + ".join(family.tokenizer_files)
    return (f"{directory} has no usable tokenizer: add the {family.tokenizer_class}'s files ({files}, or a "
            "tokenizer.json) to the checkpoint and re-export, or copy them into the export directory; until then "
            "pipelines and `onnxport run` cannot tokenize (the model still takes ids)")
