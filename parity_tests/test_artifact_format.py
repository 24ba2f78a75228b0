"""The export directory's format (onnxport.artifact): one writer of onnxport.json, its format version, and the
one record mechanism (``Record.to_dict``) checked against dictionaries written out by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from onnxport.artifact.io_spec import IOSpec, TensorSpec, build_io_spec
from onnxport.artifact.records import ALL_FIELDS, Record, to_record
from onnxport.artifact.spec_file import FORMAT_VERSION, SPEC_FILE, read_export_dir, write_spec_file
from onnxport.configs import AutoConfig
from onnxport.errors import ModelFileError
from onnxport.exporters.fp16 import Fp16Report
from onnxport.exporters.validate import Row, ValidationReport

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2)


def test_tensor_and_io_spec_records_are_what_onnxport_json_holds():
    config = AutoConfig.for_model("roformer", is_decoder=True, **TINY)
    spec = build_io_spec("text-generation", config, with_past=True)
    ids = TensorSpec("input_ids", "int64", ("batch_size", "sequence_length"))
    assert ids.to_dict() == {"name": "input_ids", "dtype": "int64", "shape": ["batch_size", "sequence_length"]}
    record = spec.to_dict()
    assert list(record) == ["task", "model_type", "with_past", "num_layers", "inputs", "outputs", "extra"]
    assert record["inputs"][3] == {"name": "past_key_values.0.key", "dtype": "float32",
                                   "shape": ["batch_size", 4, "past_sequence_length", 8]}
    assert record["extra"] == {"pad_token_id": 0, "vocab_size": 99, "type_vocab_size": 2, "num_attention_heads": 4,
                               "head_dim": 8, "max_sequence_length": 64}
    assert IOSpec.from_dict(json.loads(json.dumps(record))) == spec  # the file's data reads back as the spec


def test_report_records_name_their_derived_values():
    report = ValidationReport([Row("single", "logits", (1, 7, 99), 2e-6, 1e-4), Row("fresh", "logits", (3, 11, 99),
                                                                                     0.5, 1e-4)])
    assert report.to_dict() == {
        "passed": False, "max_abs_diff": 0.5, "longest_sequence": None,  # no plan: the cases as written
        "rows": [{"case": "single", "output": "logits", "shape": [1, 7, 99], "max_abs_diff": 2e-6, "atol": 1e-4,
                  "ok": True},
                 {"case": "fresh", "output": "logits", "shape": [3, 11, 99], "max_abs_diff": 0.5, "atol": 1e-4,
                  "ok": False}],
        "plan": None}
    precision = Fp16Report(fp16_nodes=3, fp32_nodes={"Softmax": 2}, clipped_constants=["c"])
    assert precision.to_dict() == {"dtype": "fp16", "fp16_nodes": 3, "fp32_nodes": {"Softmax": 2}, "casts": 0,
                                   "mask_fill": -32768.0, "mask_fills_rewritten": 0, "clipped_constants": ["c"],
                                   "outputs_dtype": "float32", "cache_dtype": "float16", "tolerance": 1e-2}


def test_record_keys_mix_fields_and_properties_in_order():
    from dataclasses import dataclass

    @dataclass
    class Inner(Record):
        a: int
        b: tuple

    @dataclass
    class Outer(Record):
        RECORD_KEYS = (ALL_FIELDS, "total")
        inner: Inner
        items: list

        @property
        def total(self) -> int:
            return self.inner.a + len(self.items)

    outer = Outer(Inner(1, (2, 3)), [Inner(4, ())])
    assert outer.to_dict() == {"inner": {"a": 1, "b": [2, 3]}, "items": [{"a": 4, "b": []}], "total": 2}
    assert list(outer.to_dict()) == ["inner", "items", "total"]
    assert to_record({"x": (1, Inner(5, (6,)))}) == {"x": [1, {"a": 5, "b": [6]}]}


def test_the_writer_writes_sorted_indented_json_with_a_final_newline(tmp_path):
    import numpy as np

    metadata = {"task": "fill-mask", "b": [1, 2], "a": {"y": 1, "x": np.float32(0.5)}}
    path = write_spec_file(str(tmp_path), metadata)
    assert Path(path) == tmp_path / SPEC_FILE
    assert Path(path).read_text(encoding="utf-8") == (
        '{\n  "a": {\n    "x": 0.5,\n    "y": 1\n  },\n  "b": [\n    1,\n    2\n  ],\n  "task": "fill-mask"\n}\n')


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, checkpoint_factory):
    from onnxport.exporters import export

    out = tmp_path_factory.mktemp("format") / "export"
    export(checkpoint_factory("xlm-roberta", "ForMaskedLM"), out, task="fill-mask", validate=False)
    return out


def test_format_1_is_the_file_without_a_version_and_reads_with_one(export_dir, tmp_path):
    """Every file written so far is format 1, without the key; the same file with format_version 1 reads the same."""
    assert FORMAT_VERSION == 1
    meta, spec = read_export_dir(export_dir)
    assert "format_version" not in meta
    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    write_spec_file(str(copy), {**meta, "format_version": 1})
    assert read_export_dir(copy) == ({**meta, "format_version": 1}, spec)
    write_spec_file(str(copy), {**meta, "format_version": 0})
    with pytest.raises(ModelFileError, match="format_version 0; this onnxport \\(format 1\\) reads formats 1 to 1"):
        read_export_dir(copy)
