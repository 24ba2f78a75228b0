"""Bad inputs and damaged export directories (issue 15, "Clear errors"): every one is refused with one
onnxport error whose message names the fault, before ONNX Runtime, numpy or protobuf sees it.

The corpus is tables of cases, each run through one or more entry points (runtime models, pipelines,
``from_pretrained`` / ``pipeline()`` on a damaged copy of an export). Cases that used to reach native
ONNX Runtime code run in a child process with a timeout, so a native crash fails one case instead of
killing the session. A hypothesis property test fuzzes the runtime inputs against transformers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from conftest import build_hf_checkpoint, hf_class
from onnxport.errors import InputError, ModelFileError, TaskError
from onnxport.exporters.io_spec import TASKS
from tokenizer_fixtures import write_roberta_files, write_roformer_files, write_xlm_roberta_files

HERE = Path(__file__).resolve().parent
TOKENIZER_WRITERS = {
    "xlm-roberta": write_xlm_roberta_files,
    "roberta-prelayernorm": write_roberta_files,
    "roformer": write_roformer_files,
}
MAX_POSITIONS = 66  # xlm-roberta and roberta-prelayernorm take 64 tokens, roformer 66
# Export directories the corpus uses: name -> (model_type, task, with_past, export options).
EXPORTS = {
    "mlm": ("xlm-roberta", "fill-mask", False, {}),
    "mlm-external": ("xlm-roberta", "fill-mask", False, {"external_data_threshold": 0}),
    "roformer-mlm": ("roformer", "fill-mask", False, {}),
    "prelayernorm-mlm": ("roberta-prelayernorm", "fill-mask", False, {}),
    "causal-past": ("xlm-roberta", "text-generation", True, {}),
    "choice": ("xlm-roberta", "multiple-choice", False, {}),
    "qa": ("xlm-roberta", "question-answering", False, {}),
    "ner": ("xlm-roberta", "token-classification", False, {}),
    "clf": ("xlm-roberta", "text-classification", False, {}),
    "features": ("xlm-roberta", "feature-extraction", False, {}),
    "one-type-mlm": ("xlm-roberta", "fill-mask", False, {}),
    "one-type-choice": ("xlm-roberta", "multiple-choice", False, {}),
    "one-type-qa": ("xlm-roberta", "question-answering", False, {}),
}
# Checkpoints unlike their family's default: a model of one token type (its export has no token_type_ids
# input) tokenized BERT-style (RoFormer's vocab.txt, named by tokenizer_class), which marks the second text
# of a pair with type 1. name -> config changes, plus "tokenizer": the family whose files it ships.
ONE_TOKEN_TYPE = {"type_vocab_size": 1, "tokenizer": "roformer"}
CHECKPOINT_CHANGES = {"one-type-mlm": ONE_TOKEN_TYPE, "one-type-choice": ONE_TOKEN_TYPE, "one-type-qa": ONE_TOKEN_TYPE}
ROOT_ENV = "ONNXPORT_BAD_INPUTS_ROOT"  # where a child process finds the exports its parent built


def build_export(root: Path, name: str) -> str:
    """The export ``name`` under ``root`` (checkpoint with tokenizer files -> PyTorch export), built once."""
    from onnxport.exporters import export
    from onnxport.families import FAMILIES
    from onnxport.tokenizers import AutoTokenizer

    out = root / name
    if (out / "onnxport.json").is_file():
        return str(out)
    model_type, task, with_past, options = EXPORTS[name]
    changes = dict(CHECKPOINT_CHANGES.get(name, {}))
    tokenizer_family = changes.pop("tokenizer", model_type)
    tokenizer_dir = root / f"tokenizer-{tokenizer_family}"
    if not tokenizer_dir.is_dir():
        TOKENIZER_WRITERS[tokenizer_family](tokenizer_dir)
    checkpoint = root / f"checkpoint-{name}"
    vocab_size = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    build_hf_checkpoint(checkpoint, model_type, TASKS[task].head, vocab_size=vocab_size,
                        max_position_embeddings=MAX_POSITIONS, **changes)
    for f in tokenizer_dir.iterdir():
        if f.name != "config.json":
            shutil.copy(f, checkpoint / f.name)
    if tokenizer_family != model_type:  # another family's files: named, as such checkpoints must
        (checkpoint / "tokenizer_config.json").write_text(
            json.dumps({"tokenizer_class": FAMILIES[tokenizer_family].tokenizer_class}))
    export(str(checkpoint), str(out), framework="pt", task=task, with_past=with_past, **options)
    return str(out)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    # A directory of exports built before (by this fixture) may be reused between runs.
    root = Path(os.environ[ROOT_ENV]) if os.environ.get(ROOT_ENV) else tmp_path_factory.mktemp("bad-inputs")
    return lambda name: build_export(root, name)


def _load(export_dir: str):
    from onnxport.runtime import load_model

    return load_model(export_dir, provider="cpu")


def _pipeline(export_dir: str):
    from onnxport.runtime import pipeline
    from onnxport.runtime.models import read_export_dir

    return pipeline(read_export_dir(export_dir)[1].task, export_dir, provider="cpu")


# ----------------------------------------------------------------------------- the case tables
@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Any], Any]  # (model, pipeline or damaged directory) -> the refused call
    error: type
    names: str  # regex the message must match: the argument / file and the fault
    isolate: bool = False  # used to reach native ONNX Runtime code: run in a child process


def ids_for(model, rows: int = 1, seq: int = 4, value: int = 5) -> np.ndarray:
    """input_ids of the model's rank: (rows, seq), or (rows, 2 choices, seq) for multiple choice."""
    shape = (rows, 2, seq) if len(model.spec.inputs[0].shape) == 3 else (rows, seq)
    return np.full(shape, value, dtype=np.int64)


def _past(model, layers=None, key_shape=(1, 4, 2, 8), value_shape=(1, 4, 2, 8), dtype=np.float32):
    layers = model.spec.num_layers if layers is None else layers
    return [(np.zeros(key_shape, dtype), np.zeros(value_shape, dtype)) for _ in range(layers)]


def _with_config(damaged: Path, **changes) -> Path:
    config = json.loads((damaged / "config.json").read_text())
    config.update(changes)
    (damaged / "config.json").write_text(json.dumps(config))
    return damaged


# Runtime model inputs: run on every entry point in MODEL_ENTRY_POINTS whose export takes them.
MODEL_CASES = [
    Case("batch-of-0-rows", lambda m: m(input_ids=ids_for(m, rows=0)), InputError, r"input_ids has shape \(0,", True),
    Case("sequence-length-0", lambda m: m(input_ids=ids_for(m, seq=0)), InputError, r"input_ids has shape .*0\)", True),
    Case("ragged-lists", lambda m: m(input_ids=[[5, 6, 7], [5, 6]] if m.spec.task != "multiple-choice"
                                     else [[[5, 6, 7], [5, 6]]]), InputError, "input_ids .*pad"),
    Case("mask-value-2", lambda m: m(input_ids=ids_for(m), attention_mask=np.where(ids_for(m) > 0, 2, 0)),
         InputError, "attention_mask must contain only 0 and 1.*found 2"),
    Case("mask-value-negative", lambda m: m(input_ids=ids_for(m), attention_mask=-np.ones_like(ids_for(m))),
         InputError, "attention_mask must contain only 0 and 1.*found -1"),
    Case("ids-uint64-past-int64", lambda m: m(input_ids=np.full(ids_for(m).shape, 2**63 + 5, np.uint64)),
         InputError, r"input_ids must lie in \[0, .*9223372036854775813"),
    Case("mask-strings", lambda m: m(input_ids=ids_for(m), attention_mask=np.full(ids_for(m).shape, "1")),
         InputError, "attention_mask must hold 0/1"),
]
MODEL_ENTRY_POINTS = ["mlm", "roformer-mlm", "choice", "causal-past"]

# token_type_ids for exports without that input (a model of one token type): all zeros are what transformers
# takes (test_zero_token_types_pass_where_the_graph_has_none); any other type does not exist in the model,
# and used to be dropped without a word.
def _types(m, value, dtype=np.int64, shape=None):
    return m(input_ids=ids_for(m), token_type_ids=np.full(shape or ids_for(m).shape, value, dtype))


NO_TYPES_INPUT_CASES = [
    Case("token-types-ones", lambda m: _types(m, 1), InputError,
         "token_type_ids holds 1, but this export has no token_type_ids input: the model has one token type "
         r"\(type_vocab_size=1\).*out of range"),
    Case("token-type-one-in-a-row-of-zeros", lambda m: m(input_ids=ids_for(m), token_type_ids=np.eye(
        *ids_for(m).shape[-2:], dtype=np.int64) * np.ones_like(ids_for(m))), InputError, "token_type_ids holds 1.*one token type"),
    Case("token-types-negative", lambda m: _types(m, -1), InputError, "token_type_ids holds -1.*one token type"),
    Case("token-types-zero-floats", lambda m: _types(m, 0, np.float32), InputError,
         "token_type_ids must hold integers, got dtype float32"),
    Case("token-types-zeros-of-another-shape", lambda m: _types(m, 0, shape=ids_for(m, seq=3).shape), InputError,
         "token_type_ids must have the shape of input_ids"),
]
NO_TYPES_INPUT_ENTRY_POINTS = ["one-type-mlm", "one-type-choice"]

# past_key_values of a with-past text-generation export (2 layers, 4 heads, head_dim 8).
PAST_CASES = [
    Case("past-not-a-sequence", lambda m: m(input_ids=ids_for(m), past_key_values=5), InputError,
         "past_key_values must be a sequence of 2 .key, value. pairs.*got int"),
    Case("past-layer-not-a-pair", lambda m: m(input_ids=ids_for(m), past_key_values=[np.zeros((1, 4, 2, 8))] * 2),
         InputError, r"past_key_values\[0\] must be a \(key, value\) pair"),
    Case("past-layer-a-string", lambda m: m(input_ids=ids_for(m), past_key_values=["kv", "kv"]),
         InputError, r"past_key_values\[0\] must be a \(key, value\) pair"),
    Case("past-key-value-lengths-differ", lambda m: m(
        input_ids=ids_for(m), attention_mask=np.ones((1, 6), np.int64),
        past_key_values=_past(m, value_shape=(1, 4, 3, 8))), InputError,
        "past_key_values.0.value holds 3 past positions.*2", True),
    Case("past-layers-lengths-differ", lambda m: m(
        input_ids=ids_for(m), attention_mask=np.ones((1, 6), np.int64),
        past_key_values=_past(m)[:1] + _past(m, key_shape=(1, 4, 3, 8), value_shape=(1, 4, 3, 8))[1:]),
        InputError, "past_key_values.1.key holds 3 past positions", True),
    Case("past-dtype-str", lambda m: m(input_ids=ids_for(m), past_key_values=_past(m, dtype="<U1")),
         InputError, "past_key_values.0.key must hold floating-point numbers"),
    Case("past-dtype-complex", lambda m: m(input_ids=ids_for(m), past_key_values=_past(m, dtype=np.complex64)),
         InputError, "past_key_values.0.key must hold floating-point numbers, got dtype complex64"),
]

# Ids the graph cannot look up although config.json (edited after export) allows them.
GRAPH_LIMIT_CASES = [
    ("mlm", {"vocab_size": 5000}, lambda m: m(input_ids=np.array([[0, 4000, 2]])), r"input_ids must lie in \[0, 178\]"),
    ("roformer-mlm", {"type_vocab_size": 9},
     lambda m: m(input_ids=np.array([[2, 5, 3]]), token_type_ids=np.array([[0, 7, 0]])),
     r"token_type_ids must lie in \[0, 1\]"),
]

# Pipelines: (export, case).
PIPELINE_CASES = [
    ("mlm", Case("inputs-none", lambda p: p(None), InputError, "inputs must be a text or a list of texts, got NoneType")),
    ("mlm", Case("inputs-int", lambda p: p(5), InputError, "inputs must be a text.*got int")),
    ("mlm", Case("list-with-none", lambda p: p(["a <mask>", None]), InputError, r"inputs\[1\] must be a str")),
    ("clf", Case("dict-without-text", lambda p: p({"txt": "hello"}), InputError, "inputs is a dict without 'text'")),
    ("mlm", Case("dict-without-text", lambda p: p([{"sentence": "a <mask>"}]), InputError, r"inputs\[0\] is a dict without 'text'")),
    ("mlm", Case("lone-surrogate", lambda p: p("hello \ud800 <mask>"), InputError, r"inputs holds a lone surrogate .*character 6")),
    ("ner", Case("lone-surrogate", lambda p: p(["ok", "x\udfff"]), InputError, r"inputs\[1\] holds a lone surrogate")),
    ("qa", Case("lone-surrogate", lambda p: p(question="where?", context="in \ud83d paris"), InputError,
                "context holds a lone surrogate")),
    ("mlm", Case("top-k-0", lambda p: p("a <mask>", top_k=0), InputError, "top_k must be an integer >= 1")),
    ("clf", Case("top-k-negative", lambda p: p("hello", top_k=-2), InputError, "top_k must be an integer >= 1")),
    ("qa", Case("top-k-0", lambda p: p(question="where", context="in paris", top_k=0), InputError, "top_k")),
    ("causal-past", Case("top-k-0", lambda p: p("hello", do_sample=True, top_k=0), InputError, "top_k")),
    ("causal-past", Case("max-new-tokens-negative", lambda p: p("hello", max_new_tokens=-1), InputError, "max_new_tokens")),
    ("causal-past", Case("top-p-0", lambda p: p("hello", do_sample=True, top_p=0.0), InputError, r"top_p must lie in \(0, 1\]")),
    ("causal-past", Case("top-p-above-1", lambda p: p("hello", do_sample=True, top_p=1.5), InputError, "top_p.*1.5")),
    ("causal-past", Case("temperature-0", lambda p: p("hello", do_sample=True, temperature=0.0), InputError, "temperature")),
    ("causal-past", Case("temperature-nan", lambda p: p("hello", do_sample=True, temperature=float("nan")),
                         InputError, "temperature.*nan")),
    ("causal-past", Case("temperature-negative-greedy", lambda p: p("hello", temperature=-1.0), InputError, "temperature")),
    ("qa", Case("doc-stride-negative", lambda p: p(question="where", context="in paris", doc_stride=-1),
                InputError, "doc_stride must be an integer >= 0")),
    ("qa", Case("max-answer-len-0", lambda p: p(question="where", context="in paris", max_answer_len=0),
                InputError, "max_answer_len must be an integer >= 1")),
    ("qa", Case("max-seq-len-0", lambda p: p(question="where", context="in paris", max_seq_len=0),
                InputError, "max_seq_len must be an integer >= 1")),
    ("qa", Case("max-seq-len-shorter-than-question",
                lambda p: p(question="where is the fox today and tomorrow", context="in paris " * 10, max_seq_len=8),
                InputError, "question is .* tokens.*max_seq_len=8")),
    ("choice", Case("choices-a-string", lambda p: p("the answer is", "abc"), InputError, "choices must be a list of texts, got str")),
    ("choice", Case("choices-empty", lambda p: p("the answer is", []), InputError, "choices is empty")),
    ("mlm", Case("batch-size-0", lambda p: p("a <mask>", batch_size=0), InputError, "batch_size must be an integer >= 1")),
    ("ner", Case("unknown-aggregation", lambda p: p("hello world", aggregation_strategy="mean"), InputError,
                 "aggregation_strategy='mean' is not one of")),
    ("clf", Case("unknown-function-to-apply", lambda p: p("hello", function_to_apply="relu"), InputError,
                 "function_to_apply='relu'")),
    ("features", Case("unknown-pooling", lambda p: p("hello", pooling="max"), InputError, "pooling='max'")),
    ("mlm", Case("targets-empty", lambda p: p("a <mask>", targets=[]), InputError, "targets must be a non-empty list")),
    ("mlm", Case("target-not-in-vocab", lambda p: p("a <mask>", targets=["\u2603"]), InputError,
                 r"targets\[0\]='\u2603' is not in the model's vocabulary")),
    ("mlm", Case("mask-removed-by-truncation", lambda p: p("hello " * 80 + "<mask>"), InputError,
                 "<mask> token of .* is token [0-9]+ of [0-9]+, beyond max_length=64: truncation removed it")),
    # a BERT-style tokenizer's pairs (second text type 1) on a model of one token type
    ("one-type-qa", Case("pair-token-types", lambda p: p(question="where is the fox", context="the fox is in paris"),
                         InputError, "token_type_ids holds 1, but this export has no token_type_ids input")),
    ("one-type-choice", Case("pair-token-types", lambda p: p("the fox is", ["quick", "lazy"]), InputError,
                             "token_type_ids holds 1.*one token type")),
]

# Damaged export directories: (export, case); ``call`` damages the copy and loads it.
def _spec_edit(edit: Callable[[dict], Any]) -> Callable[[Path], Any]:
    def damage(damaged: Path):
        meta = json.loads((damaged / "onnxport.json").read_text())
        meta = edit(meta)
        (damaged / "onnxport.json").write_text(json.dumps(meta))
        return _load(str(damaged))
    return damage


def _set(path: str, value: Any) -> Callable[[dict], dict]:
    def edit(meta: dict) -> dict:
        target = meta
        *parents, last = path.split(".")
        for key in parents:
            target = target[key]
        target[last] = value
        return meta
    return edit


def _qa_spec_over_fill_mask(meta: dict) -> dict:
    meta["io_spec"]["task"] = meta["task"] = "question-answering"
    return meta


def _with_past_without_cache(meta: dict) -> dict:
    meta["io_spec"].update(task="text-generation", with_past=True, num_layers=2)
    meta["task"] = "text-generation"
    return meta


def _write(name: str, data: bytes, remove: tuple[str, ...] = ()) -> Callable[[Path], Any]:
    def damage(damaged: Path):
        (damaged / name).write_bytes(data)
        for other in remove:
            (damaged / other).unlink()
        return _pipeline(str(damaged))
    return damage


def _misnamed(tokenizer_class: str) -> Callable[[Path], Any]:
    """tokenizer_config.json naming another family's class than the files are: the model loads for ids
    (nothing reads the tokenizer), the pipeline says which class the files fit."""
    def damage(damaged: Path):
        (damaged / "tokenizer.json").unlink(missing_ok=True)
        (damaged / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class}))
        model = _load(str(damaged))
        model(input_ids=np.array([[0, 5, 2]]))
        return _pipeline(str(damaged))
    return damage


# An export's tokenizer.json is what its fast tokenizer reads; without it (exports before tokenizer.json was
# written) the vocabulary files are.
_VOCABULARY_ONLY = ("tokenizer.json",)


def _truncate(name: str, keep: float = 0.5, then=_load) -> Callable[[Path], Any]:
    def damage(damaged: Path):
        data = (damaged / name).read_bytes()
        (damaged / name).write_bytes(data[: int(len(data) * keep)])
        return then(str(damaged))
    return damage


def _remove(name: str) -> Callable[[Path], Any]:
    def damage(damaged: Path):
        (damaged / name).unlink()
        return _load(str(damaged))
    return damage


FILE_CASES = [
    ("mlm", Case("spec-not-an-object", _spec_edit(lambda meta: [meta]), ModelFileError,
                 "onnxport.json is malformed: the top level must be an object, got list")),
    ("mlm", Case("spec-with-past-missing", _spec_edit(lambda meta: (meta["io_spec"].pop("with_past"), meta)[1]),
                 ModelFileError, r"onnxport.json is malformed: field 'io_spec.with_past' is missing")),
    ("mlm", Case("spec-input-without-dtype", _spec_edit(lambda meta: (meta["io_spec"]["inputs"][0].pop("dtype"), meta)[1]),
                 ModelFileError, r"io_spec.inputs\[0\] needs a string 'name' and 'dtype'")),
    ("mlm", Case("spec-io-spec-a-string", _spec_edit(_set("io_spec", "fill-mask")), ModelFileError,
                 "onnxport.json is malformed: field 'io_spec' must be an object")),
    ("mlm", Case("spec-inputs-not-a-list", _spec_edit(_set("io_spec.inputs", 5)), ModelFileError,
                 r"field 'io_spec.inputs' must be a list, got int")),
    ("mlm", Case("spec-with-past-a-string", _spec_edit(_set("io_spec.with_past", "no")), ModelFileError,
                 r"field 'io_spec.with_past' must be a bool, got str")),
    ("mlm", Case("spec-shape-a-string", _spec_edit(lambda meta: _set("io_spec.inputs", [
        {**t, "shape": "batch"} for t in meta["io_spec"]["inputs"]])(meta)), ModelFileError,
        r"io_spec.inputs\[0\].shape must be a list")),
    ("mlm", Case("spec-dtype-unknown", _spec_edit(lambda meta: _set("io_spec.inputs", [
        {**t, "dtype": "int65"} for t in meta["io_spec"]["inputs"]])(meta)), ModelFileError,
        r"io_spec.inputs\[0\].dtype 'int65' is not a numpy dtype")),
    ("mlm", Case("spec-vocab-size-a-string", _spec_edit(_set("io_spec.extra.vocab_size", "179")), ModelFileError,
                 "io_spec.extra.vocab_size' must be a positive integer")),
    ("mlm", Case("spec-unknown-task", _spec_edit(_set("io_spec.task", "summarization")), ModelFileError,
                 "io_spec.task 'summarization' is not an export task")),
    ("mlm", Case("spec-from-a-newer-format", _spec_edit(_set("format_version", 2)), ModelFileError,
                 r"onnxport.json has format_version 2; this onnxport \(format 1\) reads formats 1 to 1. Upgrade")),
    ("mlm", Case("spec-format-a-string", _spec_edit(_set("format_version", "1")), ModelFileError,
                 r"onnxport.json has format_version '1'")),
    ("mlm", Case("qa-spec-over-fill-mask-graph", _spec_edit(_qa_spec_over_fill_mask), ModelFileError,
                 r"onnxport.json does not describe a 'question-answering' export.*outputs \['logits'\]")),
    ("mlm", Case("with-past-spec-over-graph-without-cache", _spec_edit(_with_past_without_cache), ModelFileError,
                 "onnxport.json does not describe a 'text-generation' export.*no past_key_values inputs")),
    ("mlm-external", Case("external-data-missing", _remove("onnx/model.onnx_data"), ModelFileError,
                          "model.onnx_data.*missing.*re-export", True)),
    ("mlm-external", Case("external-data-truncated", _truncate("onnx/model.onnx_data"), ModelFileError,
                          "model.onnx_data is truncated.*re-export", True)),
    ("roformer-mlm", Case("roformer-model-truncated", _truncate("onnx/model.onnx", 0.3), ModelFileError,
                          "model.onnx is not a readable ONNX model.*re-export", True)),
    ("roformer-mlm", Case("roformer-model-missing", _remove("onnx/model.onnx"), ModelFileError,
                          "No ONNX model at .*model.onnx")),
    ("mlm", Case("sentencepiece-garbage", _write("sentencepiece.bpe.model", b"\x08\xff\xff garbage",
                                                      _VOCABULARY_ONLY), ModelFileError,
                 "sentencepiece.bpe.model.*corrupt|corrupt.*sentencepiece.bpe.model")),
    ("mlm", Case("tokenizer-json-garbage", _write("tokenizer.json", b"{not json"), ModelFileError,
                 "tokenizer.json.*corrupt|corrupt.*tokenizer.json")),
    ("prelayernorm-mlm", Case("vocab-json-not-json", _write("vocab.json", b"[1, 2", _VOCABULARY_ONLY), ModelFileError,
                              "vocab.json.*corrupt|corrupt.*vocab.json")),
    ("mlm", Case("tokenizer-class-of-another-family", _misnamed("RobertaTokenizer"), ModelFileError,
                 "fit XLMRobertaTokenizerFast .*not RobertaTokenizerFast.*\"tokenizer_class\": \"XLMRobertaTokenizerFast\"")),
    ("roformer-mlm", Case("vocab-txt-not-text", _write("vocab.txt", b"\xff\xfe\x00\xd8"), ModelFileError,
                          "vocab.txt.*corrupt|corrupt.*vocab.txt")),
    ("mlm", Case("unknown-pipeline-task", lambda d: __import__("onnxport.runtime").runtime.pipeline("summarization", d),
                 TaskError, "Unknown pipeline task 'summarization'")),
]


# ----------------------------------------------------------------------------- running one case
def _target(kind: str, export_dir: str, damaged: Path | None):
    if kind == "model":
        return _load(export_dir)
    if kind == "pipeline":
        return _pipeline(export_dir)
    if kind == "graph-limit":
        return _load(str(damaged))
    return damaged  # file cases damage and load it themselves


def _case(table: str, export: str, case_id: str):
    if table == "model":
        return next(c for c in MODEL_CASES if c.id == case_id)
    if table == "past":
        return next(c for c in PAST_CASES if c.id == case_id)
    if table == "types":
        return next(c for c in NO_TYPES_INPUT_CASES if c.id == case_id)
    rows = {"pipeline": PIPELINE_CASES, "file": FILE_CASES}[table]
    return next(c for e, c in rows if e == export and c.id == case_id)


def _outcome(call: Callable[[], Any]) -> tuple[str, str]:
    """(error class name or "returned", message) of ``call``."""
    try:
        call()
    except Exception as err:  # the point: whatever escapes is classified and asserted on by the parent
        return type(err).__name__, str(err)
    return "returned", ""


def _child_main(table: str, export: str, case_id: str, target_path: str) -> None:
    """Entry point of the child process: run one case, print its outcome as JSON."""
    case = _case(table, export, case_id)
    target = _target({"past": "model"}.get(table, table), target_path, Path(target_path))
    print(json.dumps(_outcome(lambda: case.call(target))))


def _run_isolated(table: str, export: str, case: Case, target_path: str, timeout: float = 120) -> tuple[str, str]:
    code = (f"import sys; sys.path[:0] = [{str(HERE)!r}]; import test_bad_inputs as t; "
            f"t._child_main({table!r}, {export!r}, {case.id!r}, {target_path!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=HERE)
    assert proc.returncode == 0, f"child process died (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return tuple(json.loads(proc.stdout.strip().splitlines()[-1]))


def _assert_refused(outcome: tuple[str, str], case: Case) -> None:
    kind, message = outcome
    assert kind == case.error.__name__ or kind in {c.__name__ for c in _subclasses(case.error)}, (
        f"{case.id}: expected {case.error.__name__}, got {kind}: {message[:300]}")
    import re

    assert re.search(case.names, message, re.S), f"{case.id}: message does not name the fault: {message!r}"


def _subclasses(cls: type) -> set[type]:
    return set(cls.__subclasses__()).union(*(_subclasses(c) for c in cls.__subclasses__()))


def _check(table: str, export: str, case: Case, export_dir: str, target_path: str | None = None) -> None:
    target_path = target_path or export_dir
    if case.isolate:
        outcome = _run_isolated(table, export, case, target_path)
    else:
        target = _target({"past": "model"}.get(table, table), target_path, Path(target_path))
        outcome = _outcome(lambda: case.call(target))
    _assert_refused(outcome, case)


@pytest.fixture(scope="module")
def loaded(exports):
    """Models and pipelines loaded once per export."""
    cache: dict = {}

    def get(kind: str, name: str):
        if (kind, name) not in cache:
            cache[(kind, name)] = (_load if kind == "model" else _pipeline)(exports(name))
        return cache[(kind, name)]

    return get


# ----------------------------------------------------------------------------- the corpus
@pytest.mark.parametrize("export", MODEL_ENTRY_POINTS)
@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: c.id)
def test_model_inputs_are_refused(exports, loaded, export, case):
    if case.isolate:
        _check("model", export, case, exports(export))
    else:
        _assert_refused(_outcome(lambda: case.call(loaded("model", export))), case)


@pytest.mark.parametrize("export", NO_TYPES_INPUT_ENTRY_POINTS)
@pytest.mark.parametrize("case", NO_TYPES_INPUT_CASES, ids=lambda c: c.id)
def test_token_types_a_graph_cannot_take_are_refused(loaded, export, case):
    model = loaded("model", export)
    assert "token_type_ids" not in model.spec.input_names and model.config.type_vocab_size == 1
    _assert_refused(_outcome(lambda: case.call(model)), case)


def test_zero_token_types_pass_where_the_graph_has_none(exports, loaded):
    """All-zero token types are what transformers takes from a one-type model: the runtime answers as without
    them, equal to transformers; a BERT-style tokenizer's single texts (all type 0) go through the pipeline,
    which answers as transformers' pipeline on the same checkpoint."""
    import torch
    import transformers

    model = loaded("model", "one-type-mlm")
    checkpoint = Path(exports("one-type-mlm")).parent / "checkpoint-one-type-mlm"
    reference = hf_class("xlm-roberta", "ForMaskedLM").from_pretrained(checkpoint, attn_implementation="eager").eval()
    ids = np.array([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = (np.arange(5) < np.array([[5], [3]])).astype(np.int64)
    zeros = np.zeros_like(ids)
    got = model(input_ids=ids, attention_mask=mask, token_type_ids=zeros).logits
    assert np.array_equal(got, model(input_ids=ids, attention_mask=mask).logits)
    with torch.no_grad():
        want = reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                         token_type_ids=torch.from_numpy(zeros)).logits.numpy()
        with pytest.raises(IndexError):  # what the refused case guards against: transformers has no type 1
            reference(input_ids=torch.from_numpy(ids), token_type_ids=torch.ones_like(torch.from_numpy(ids)))
    assert np.abs(got - want).max() <= 1e-4

    fill = loaded("pipeline", "one-type-mlm")
    texts = ["今天[MASK]气非常好", "the quick [MASK] fox"]
    assert all(set(np.ravel(t)) == {0} for t in fill.tokenizer(texts)["token_type_ids"])  # types given, all 0
    theirs = transformers.pipeline("fill-mask", model=reference, tokenizer=transformers.AutoTokenizer.from_pretrained(
        checkpoint))(texts, top_k=3)
    for ours, hf in zip(fill(texts, top_k=3), theirs):
        assert [c["token"] for c in ours] == [c["token"] for c in hf]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(ours, hf)) <= 1e-4


@pytest.mark.parametrize("case", PAST_CASES, ids=lambda c: c.id)
def test_malformed_past_key_values_are_refused(exports, loaded, case):
    if case.isolate:
        _check("past", "causal-past", case, exports("causal-past"))
    else:
        _assert_refused(_outcome(lambda: case.call(loaded("model", "causal-past"))), case)


@pytest.mark.parametrize("export, changes, call, names", GRAPH_LIMIT_CASES, ids=["vocab", "token-types"])
def test_ids_are_checked_against_the_graph_not_config_json(exports, tmp_path, export, changes, call, names):
    damaged = _with_config(Path(shutil.copytree(exports(export), tmp_path / "edited")), **changes)
    case = Case(f"graph-limit-{export}", call, InputError, names)
    model = _load(str(damaged))
    _assert_refused(_outcome(lambda: case.call(model)), case)
    # the same call through a child process: before the fix ONNX Runtime's Gather met the index
    code = (f"import sys, numpy as np; sys.path[:0] = [{str(HERE)!r}]; import test_bad_inputs as t; "
            f"m = t._load({str(damaged)!r}); import json; "
            f"print(json.dumps(t._outcome(lambda: t.GRAPH_LIMIT_CASES[{GRAPH_LIMIT_CASES.index((export, changes, call, names))}][2](m))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=HERE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_refused(tuple(json.loads(proc.stdout.strip().splitlines()[-1])), case)


@pytest.mark.parametrize("export, case", PIPELINE_CASES, ids=[f"{e}-{c.id}" for e, c in PIPELINE_CASES])
def test_pipeline_arguments_are_refused(loaded, export, case):
    _assert_refused(_outcome(lambda: case.call(loaded("pipeline", export))), case)


@pytest.mark.parametrize("export, case", FILE_CASES, ids=[f"{e}-{c.id}" for e, c in FILE_CASES])
def test_damaged_export_directories_are_refused(exports, tmp_path, export, case):
    damaged = tmp_path / "damaged"
    shutil.copytree(exports(export), damaged)
    _check("file", export, case, exports(export), str(damaged))


def test_pipeline_constructor_arguments_are_refused(exports):
    from onnxport.runtime import pipeline

    export_dir = exports("mlm")
    for kwargs, names in (({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
                          ({"max_length": 0}, "max_length must be an integer >= 1 or None, got 0"),
                          ({"max_length": -5}, "max_length.*-5")):
        outcome = _outcome(lambda: pipeline("fill-mask", export_dir, provider="cpu", **kwargs))
        _assert_refused(outcome, Case(f"pipeline-{kwargs}", lambda _: None, InputError, names))


def test_refusals_leave_good_inputs_working(loaded):
    """The checks refuse only what is wrong: the nearest good inputs still give the right answers."""
    model = loaded("model", "mlm")
    ids = np.array([[0, 10, 11, 2]])
    want = model(input_ids=ids).logits
    assert np.array_equal(model(input_ids=ids.tolist()).logits, want)  # python lists
    assert np.array_equal(model(input_ids=ids.astype(np.uint8), attention_mask=np.ones((1, 4), bool)).logits, want)
    assert np.array_equal(model(input_ids=ids, attention_mask=np.ones((1, 4), np.float32)).logits, want)
    generator = loaded("model", "causal-past")
    first = generator(input_ids=ids)
    step = generator(input_ids=np.array([[7]]), past_key_values=list(first.past_key_values))
    assert step.logits.shape == (1, 1, generator.config.vocab_size)
    fill = loaded("pipeline", "mlm")
    assert fill("a <mask>", targets=["a"], top_k=1)[0]["token"] == fill.tokenizer("a", add_special_tokens=False)["input_ids"][0]


# ----------------------------------------------------------------------------- threads
PIPELINE_CALLS = {
    "mlm": lambda p: p(["the quick <mask> fox", "a <mask>", "hello world <mask>"], top_k=3, batch_size=2),
    "ner": lambda p: p(["hello world, the quick brown fox", "今天天气非常好"], aggregation_strategy="simple"),
    "qa": lambda p: p(question=["where is the fox", "who"], context=["the fox is in paris", "a man in a hat"], top_k=2),
    "features": lambda p: [v.tolist() for v in p(["hello world", "a b c d e f"], pooling="mean")],
    "causal-past": lambda p: p("the quick brown", max_new_tokens=6, eos_token_id=-1),
    "choice": lambda p: p("the fox is", ["quick", "lazy and slow", "brown"]),
    "clf": lambda p: p(["hello world", "the lazy dog", "a"], top_k=None, batch_size=1),
}


def test_one_pipeline_serves_many_threads(loaded):
    """Several threads calling one pipeline object at once get exactly the sequential answers."""
    for name, call in PIPELINE_CALLS.items():
        pipe = loaded("pipeline", name)
        serial = call(pipe)
        assert serial == call(pipe)  # deterministic to begin with
        threads_count, rounds = 6, 3
        results, errors = [], []
        start = threading.Barrier(threads_count)

        def work():
            try:
                start.wait()
                for _ in range(rounds):
                    results.append(call(pipe))
            except Exception as err:  # pragma: no cover - reported below
                errors.append(err)

        threads = [threading.Thread(target=work) for _ in range(threads_count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, (name, errors)
        assert len(results) == threads_count * rounds and all(r == serial for r in results), name


# ----------------------------------------------------------------------------- fuzzing
@pytest.fixture(scope="module")
def fuzz_target(exports):
    """The fill-mask export and transformers' PyTorch model of its checkpoint (the independent reference)."""
    import torch

    export_dir = exports("mlm")
    checkpoint = Path(export_dir).parent / "checkpoint-mlm"
    reference = hf_class("xlm-roberta", "ForMaskedLM").from_pretrained(checkpoint, attn_implementation="eager").eval()

    def run_reference(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()

    return _load(export_dir), run_reference


FUZZ_EXAMPLES = 100
FUZZ_COUNTS: dict[str, int] = {"examples": 0, "refused": 0, "answered": 0}


def test_fuzzed_runtime_inputs_answer_right_or_raise_input_error(fuzz_target):
    """Random shapes, dtypes and values of input_ids / attention_mask: either finite outputs equal to
    transformers' on the same inputs, or an InputError — never another exception or a wrong answer."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    from hypothesis.extra import numpy as hnp

    model, run_reference = fuzz_target
    vocab = model.config.vocab_size
    # Weighted towards inputs the model should answer, so both sides of the property get examples.
    dtypes = st.sampled_from([np.int64, np.int64, np.int64, np.int32, np.uint8, np.uint64, np.int8, np.float32, np.bool_])
    good_shapes = st.tuples(st.integers(1, 3), st.integers(1, 8))
    empty_shapes = st.tuples(st.integers(0, 3), st.integers(0, 8))
    shapes = st.one_of(good_shapes, good_shapes, empty_shapes, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6),
                       st.tuples(st.integers(1, 2), st.integers(60, 70)))  # around the 64-token limit

    @st.composite
    def inputs(draw):
        shape = draw(shapes)
        dtype = draw(dtypes)
        if np.dtype(dtype).kind == "f":
            elements = st.floats(-2, vocab + 2, width=32) | st.just(float("nan"))
        elif dtype is np.bool_:
            elements = st.booleans()
        else:
            info = np.iinfo(dtype)
            in_vocab = st.integers(0, min(info.max, vocab - 1))
            elements = in_vocab if draw(st.booleans()) else (
                in_vocab | st.integers(max(info.min, -3), min(info.max, vocab + 3)) | st.just(int(info.max)))
        ids = draw(hnp.arrays(dtype, shape, elements=elements))
        mask_kind = draw(st.sampled_from(["none", "ones", "prefix", "prefix", "random01", "random-int", "float",
                                          "wrong-shape"]))
        mask = None
        if mask_kind == "ones":
            mask = np.ones(shape, np.int64)
        elif mask_kind == "prefix" and len(shape) == 2:
            lengths = draw(st.lists(st.integers(0, shape[1]), min_size=shape[0], max_size=shape[0]))
            mask = (np.arange(shape[1])[None, :] < np.array(lengths, dtype=np.int64)[:, None]).astype(np.int64)
        elif mask_kind in ("random01", "random-int", "float"):
            values = {"random01": st.integers(0, 1), "random-int": st.integers(-2, 3),
                      "float": st.sampled_from([0.0, 1.0, 0.5, float("nan")])}[mask_kind]
            mask = draw(hnp.arrays(np.float32 if mask_kind == "float" else np.int64, shape, elements=values))
        elif mask_kind == "wrong-shape":
            mask = np.ones(tuple(s + 1 for s in shape), np.int64)
        form = draw(st.sampled_from(["array", "list", "ragged"]))
        if form == "array":
            return ids, mask
        rows = ids.tolist()
        if form == "ragged" and ids.ndim == 2 and ids.shape[0] > 1 and ids.shape[1] > 0:
            rows[-1] = rows[-1][:-1]
        return rows, mask

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
    @given(inputs())
    def check(example):
        ids, mask = example
        FUZZ_COUNTS["examples"] += 1
        feeds = {"input_ids": ids} if mask is None else {"input_ids": ids, "attention_mask": mask}
        try:
            got = model(**feeds).logits
        except InputError:
            FUZZ_COUNTS["refused"] += 1
            return
        FUZZ_COUNTS["answered"] += 1
        # answered: the inputs were valid (a mask of 0/1 only), and the answer is transformers'
        assert mask is None or np.isin(mask, (0, 1)).all(), "a mask other than 0/1 was not refused"
        ids64 = np.asarray(ids).astype(np.int64)
        mask64 = np.ones_like(ids64) if mask is None else np.asarray(mask).astype(np.int64)
        assert np.isfinite(got).all()
        assert np.abs(got - run_reference(ids64, mask64)).max() <= 1e-4

    check()
    print(f"runtime-input fuzzing: {FUZZ_COUNTS}")
    assert FUZZ_COUNTS["refused"] > 0 and FUZZ_COUNTS["answered"] > 0  # both sides of the property were exercised
