"""``onnxport.json``: the export's description beside the model (IO spec, versions, validation, files).

``read_export_dir`` is its one reader: it checks the file's format version, then its structure field by field,
before anything reads it. ``write_spec_file`` is its one writer (sorted keys, two-space indent, a final newline:
the same export writes the same bytes). The records in it are ``records.Record`` dataclasses.

Versions: format 1 is the one every onnxport so far has written, without a ``format_version`` key; a later
format writes its number there, and a reader refuses a number above the ``FORMAT_VERSION`` it knows instead of
misreading the file.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import numpy as np

from ..errors import ModelFileError
from .io_spec import TASKS, IOSpec

# The export's description beside the model (io spec, versions, validation, files).
SPEC_FILE = "onnxport.json"
FORMAT_VERSION = 1
_VERSION_KEY = "format_version"


def write_spec_file(directory: str, metadata: dict[str, Any]) -> str:
    """Write ``metadata`` as ``directory``/onnxport.json; numpy scalars are written as numbers. Returns the path."""
    if FORMAT_VERSION > 1:  # format 1 is the file without the key: the bytes every export so far has written
        metadata = {**metadata, _VERSION_KEY: FORMAT_VERSION}
    path = os.path.join(directory, SPEC_FILE)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(metadata, fh, indent=2, sort_keys=True, default=float)
        fh.write("\n")
    return path


def read_export_dir(export_dir: str | os.PathLike) -> tuple[dict[str, Any], IOSpec]:
    export_dir = os.fspath(export_dir)
    if not os.path.isdir(export_dir):
        raise FileNotFoundError(f"Export directory {export_dir!r} does not exist; create it with `onnxport export`.")
    path = os.path.join(export_dir, SPEC_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{export_dir} has no {SPEC_FILE}; it was not written by `onnxport export` (re-export the checkpoint)."
        )
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (ValueError, OSError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ModelFileError(f"{path} is not valid JSON ({err}); re-export the model.") from err
    version = meta.get(_VERSION_KEY, 1) if isinstance(meta, dict) else 1
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has {_VERSION_KEY} {version!r}; this onnxport (format {FORMAT_VERSION}) reads formats 1 to "
            f"{FORMAT_VERSION}. Upgrade onnxport to read it, or re-export the model with this version."
        )
    problem = _spec_file_problem(meta)
    if problem:
        raise ModelFileError(f"{path} is malformed: {problem}; re-export the model.")
    return meta, IOSpec.from_dict(meta["io_spec"])


def _spec_file_problem(meta: Any) -> Optional[str]:
    """What is wrong with the structure of onnxport.json, or None: checked field by field, so a
    hand-edited or damaged file is refused by name instead of failing later inside numpy or ONNX Runtime."""
    if not isinstance(meta, dict):
        return f"the top level must be an object, got {type(meta).__name__}"
    spec = meta.get("io_spec")
    if not isinstance(spec, dict):
        return "field 'io_spec' must be an object" if "io_spec" in meta else "field 'io_spec' is missing"
    wanted = {"task": str, "model_type": str, "with_past": bool, "inputs": list, "outputs": list}
    for key, kind in wanted.items():
        if key not in spec:
            return f"field 'io_spec.{key}' is missing"
        if not isinstance(spec[key], kind):
            return f"field 'io_spec.{key}' must be a {kind.__name__}, got {type(spec[key]).__name__}"
    if spec["task"] not in TASKS:
        return f"io_spec.task {spec['task']!r} is not an export task ({', '.join(TASKS)})"
    layers = spec.get("num_layers", 0)
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 0:
        return f"field 'io_spec.num_layers' must be a non-negative integer, got {layers!r}"
    if not isinstance(spec.get("extra", {}), dict):
        return f"field 'io_spec.extra' must be an object, got {type(spec['extra']).__name__}"
    for key in ("vocab_size", "type_vocab_size", "max_sequence_length", "num_attention_heads", "head_dim"):
        value = spec.get("extra", {}).get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return f"field 'io_spec.extra.{key}' must be a positive integer, got {value!r}"
    if spec["with_past"] and ("num_attention_heads" not in spec.get("extra", {}) or "head_dim" not in spec["extra"]):
        return "a with_past io_spec needs 'extra.num_attention_heads' and 'extra.head_dim'"
    for group in ("inputs", "outputs"):
        if not spec[group]:
            return f"field 'io_spec.{group}' is empty"
        for index, tensor in enumerate(spec[group]):
            where = f"io_spec.{group}[{index}]"
            if not isinstance(tensor, dict):
                return f"{where} must be an object, got {type(tensor).__name__}"
            if not isinstance(tensor.get("name"), str) or not isinstance(tensor.get("dtype"), str):
                return f"{where} needs a string 'name' and 'dtype'"
            try:
                np.dtype(tensor["dtype"])
            except TypeError:
                return f"{where}.dtype {tensor['dtype']!r} is not a numpy dtype"
            shape = tensor.get("shape")
            if not isinstance(shape, list) or not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in shape):
                return f"{where}.shape must be a list of integers and dimension names, got {shape!r}"
    if "input_ids" not in [t["name"] for t in spec["inputs"]]:
        return "io_spec.inputs has no 'input_ids'"
    return None
