"""Where an export directory keeps its graph: the one place that knows the file names (no framework import).

The layout is the Hugging Face Hub's for ONNX models, which transformers.js reads with its defaults and
Optimum's ``ORTModel`` finds too (it searches ``**/*.onnx`` for ``model.onnx``)::

    config.json, tokenizer.json, tokenizer_config.json, ..., onnxport.json
    onnx/model.onnx             fp32 graph    (+ onnx/model.onnx_data: external weights of a large model)
    onnx/model_fp16.onnx        fp16 export
    onnx/model_quantized.onnx   int8 export (`onnxport quantize`; transformers.js's dtype "q8")

``config.json``'s ``"transformers.js_config"`` names the dtype (so transformers.js picks that file, in a
browser too, where it would otherwise look for the int8 one) and the external data file when there is one.
Directories written before this layout hold ``model.onnx`` (+ ``model.onnx_data``) at the top: ``model_path``
finds either, so they keep loading everywhere onnxport reads a model.
"""

from __future__ import annotations

import json
import os
from typing import Optional

MODEL_DIR = "onnx"
# transformers.js's file name per dtype (its DEFAULT_DTYPE_SUFFIX_MAPPING: "" / "_fp16" / "_quantized").
MODEL_FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_quantized.onnx"}
TRANSFORMERS_JS_DTYPES = {"fp32": "fp32", "fp16": "fp16", "int8": "q8"}
LEGACY_MODEL_FILE = "model.onnx"  # at the top of directories written before the onnx/ layout
TRANSFORMERS_JS_CONFIG = "transformers.js_config"


def external_data_name(model_file: str) -> str:
    """The external-data file beside a graph, as transformers.js looks for it (``model.onnx_data``)."""
    return model_file + "_data"


def model_file(dtype: str = "fp32") -> str:
    """The graph's path relative to the export directory, for an export of this dtype."""
    return f"{MODEL_DIR}/{MODEL_FILES[dtype]}"


# Top-level names a model occupies in either layout: an export replacing a directory replaces these.
LAYOUT_NAMES = (MODEL_DIR, LEGACY_MODEL_FILE, external_data_name(LEGACY_MODEL_FILE))


def model_path(directory: str) -> str:
    """The graph of an export directory (either layout); the fp32 place when there is none yet, for messages."""
    for candidate in [*(os.path.join(directory, model_file(dtype)) for dtype in MODEL_FILES),
                      os.path.join(directory, LEGACY_MODEL_FILE)]:
        if os.path.isfile(candidate):
            return candidate
    return os.path.join(directory, model_file())


def data_path(directory: str) -> Optional[str]:
    """The external-data file of the directory's graph, if it has one."""
    path = external_data_name(model_path(directory))
    return path if os.path.isfile(path) else None


def write_transformers_js_config(directory: str, dtype: str) -> None:
    """config.json's ``transformers.js_config``: which file transformers.js loads and whether it has external
    data (transformers.js does not look for ``model.onnx_data`` unless told)."""
    path = os.path.join(directory, "config.json")
    with open(path, encoding="utf-8") as fh:
        config = json.load(fh)
    js_config = {"dtype": TRANSFORMERS_JS_DTYPES[dtype]}
    name = MODEL_FILES[dtype]
    if os.path.isfile(os.path.join(directory, MODEL_DIR, external_data_name(name))):
        js_config["use_external_data_format"] = {name: 1}
    config[TRANSFORMERS_JS_CONFIG] = js_config
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
        fh.write("\n")


# ----------------------------------------------------------------------------- which clients read a directory
# transformers.js 4.3's model registry (src/models/registry.js) has XLM-R, RoBERTa and RoFormer, not
# RoBERTa-PreLayerNorm; its pipelines for these encoders are the five below (no multiple choice, no generation
# from an encoder). Optimum's ORTModel classes cover the encoder tasks; its decoder class expects its own cache.
TRANSFORMERS_JS_MODEL_TYPES = ("xlm-roberta", "roberta", "roformer")
TRANSFORMERS_JS_TASKS = ("fill-mask", "feature-extraction", "text-classification", "token-classification",
                         "question-answering")
OPTIMUM_TASKS = ("fill-mask", "feature-extraction", "text-classification", "token-classification",
                 "question-answering", "multiple-choice")


def served_clients(directory: str, meta: dict) -> list[tuple[str, bool, str]]:
    """(client, serves the directory as it is, why) for onnxport, Optimum, transformers.js and plain ONNX
    Runtime, from the directory's files and its ``onnxport.json``."""
    from .io_spec import TASKS

    task, model_type = meta.get("task"), meta.get("model_type")
    # A task that reuses another's graph (rerank: a sequence classifier) is read by clients as that task: they
    # get its raw outputs (a cross-encoder's logits, without the activation onnxport.json records).
    task = getattr(TASKS.get(task), "graph_of", None) or task
    tokenizer = meta.get("tokenizer") if isinstance(meta.get("tokenizer"), dict) else {}
    has_tokenizer = bool(tokenizer.get("class"))
    graph = os.path.relpath(model_path(directory), directory).replace(os.sep, "/")
    ops = [f"{op.get('domain')}.{op.get('op_type')}" for op in meta.get("custom_ops") or []]
    custom = f" ({', '.join(ops)} run{'s' if len(ops) == 1 else ''} through ONNX function bodies)" if ops else ""
    rows = [("onnxport", True, "pipelines and `onnxport run`" if has_tokenizer else
             "the model only: no tokenizer was exported (pipelines cannot tokenize)")]
    if meta.get("with_past") or task not in OPTIMUM_TASKS:
        rows.append(("Optimum ORTModel", False, f"no ORTModel class reads an onnxport {task} export"))
    else:
        rows.append(("Optimum ORTModel", True, f"finds {graph}; onnxport's input/output names are Optimum's"))
    js_config = _json(os.path.join(directory, "config.json")).get(TRANSFORMERS_JS_CONFIG)
    tokenizer_json = tokenizer.get("tokenizer_json") or {}
    if model_type not in TRANSFORMERS_JS_MODEL_TYPES:
        rows.append(("transformers.js", False, f"it has no {model_type} model class"))
    elif task not in TRANSFORMERS_JS_TASKS or meta.get("with_past"):
        rows.append(("transformers.js", False, f"it has no {task} pipeline for {model_type}"))
    elif not graph.startswith(MODEL_DIR + "/") or not js_config:
        rows.append(("transformers.js", False, "an export from before the onnx/ layout: export it again"))
    elif not tokenizer_json.get("exact"):
        rows.append(("transformers.js", False, tokenizer_json.get("why") or "no tokenizer.json"))
    else:
        rows.append(("transformers.js", True, f"loads {graph} (dtype {js_config.get('dtype')}) and tokenizer.json"))
    rows.append(("ONNX Runtime", True, f"{graph}, inputs and outputs as onnxport.json lists them{custom}; "
                                       "the caller tokenizes"))
    return rows


def _json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            loaded = json.load(fh)
        return loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        return {}
