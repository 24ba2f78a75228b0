"""Export cost: the PyTorch export holds its weights once, and the lean path changes no byte.

Memory itself is measured in ``benchmarks/export_cost.py`` (XLM-R base: ~2 GiB peak RSS against ~4.5 GiB
for a plain ``torch.onnx.export``); these tests pin the mechanisms, on tiny models, with no thresholds.
"""

from __future__ import annotations

import contextlib
import gc
import os
import weakref

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxport.exporters import artifact, export, pt
from onnxport.exporters import validate as validation


def test_pt_export_holds_the_weights_once(checkpoint_factory, tmp_path, monkeypatch):
    """Checkpoint read tensor by tensor; the converted proto carries no weight bytes (they are external data
    in the workdir); the native model is gone before ONNX Runtime loads the artifact."""
    from onnxport import checkpoints
    from onnxport.reference_models.pt.modeling import PreTrainedModel

    checkpoint = checkpoint_factory("xlm-roberta", "ForMaskedLM")  # tied decoder: dedupe reads external data
    seen = {}

    def whole_state_dict(*args, **kwargs):
        raise AssertionError("a safetensors checkpoint must not be loaded as a whole state dict")

    def finalize(model, **kwargs):
        large = [i for i in model.graph.initializer if artifact.tensor_nbytes(i) >= 1024]
        seen["external"] = [artifact.is_external(i) for i in large]
        seen["raw_bytes"] = sum(len(i.raw_data) for i in model.graph.initializer)
        return original_finalize(model, **kwargs)

    def load_state_dict_numpy(model, state, *args, **kwargs):
        seen["model"] = weakref.ref(model)
        return original_load(model, state, *args, **kwargs)

    def ort_session(path, *args, **kwargs):
        gc.collect()
        seen["model_alive"] = seen["model"]() is not None
        return original_session(path, *args, **kwargs)

    original_finalize, original_session = artifact.finalize, validation.ort_session
    original_load = PreTrainedModel.load_state_dict_numpy
    monkeypatch.setattr(checkpoints, "load_state_dict", whole_state_dict)
    monkeypatch.setattr(PreTrainedModel, "load_state_dict_numpy", load_state_dict_numpy)
    monkeypatch.setattr(artifact, "finalize", finalize)
    monkeypatch.setattr(validation, "ort_session", ort_session)
    report = export(checkpoint, tmp_path / "out", task="fill-mask")
    assert report.validation.passed
    assert seen["external"] and all(seen["external"]), "weights of 1 KiB and more are external data"
    assert seen["raw_bytes"] < 4096
    assert not seen["model_alive"], "the PyTorch model is still alive when ONNX Runtime loads the artifact"


def test_lean_torch_export_writes_the_same_bytes(checkpoint_factory, tmp_path, monkeypatch):
    """The wrapped torch passes (weights kept out of shape inference and of the encoder) change nothing."""
    checkpoint = checkpoint_factory("roformer", "ForCausalLM")
    lean = export(checkpoint, tmp_path / "lean", task="text-generation", with_past=True, validate=False)
    monkeypatch.setattr(pt, "_lean_export", lambda weights: contextlib.nullcontext())
    plain = export(checkpoint, tmp_path / "plain", task="text-generation", with_past=True, validate=False)
    with open(lean.model_path, "rb") as a, open(plain.model_path, "rb") as b:
        assert a.read() == b.read()


def _mixed_model(base_dir: str) -> onnx.ModelProto:
    """Initializers of every kind save() meets: embedded raw bytes (large and small), typed fields, external."""
    rng = np.random.default_rng(0)
    big = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "big")
    small = numpy_helper.from_array(np.arange(4, dtype=np.int64), "small")
    typed = helper.make_tensor("typed", onnx.TensorProto.FLOAT, [300], rng.standard_normal(300).tolist())
    outside = rng.standard_normal((32, 16)).astype(np.float32)
    with open(os.path.join(base_dir, "weights.bin"), "wb") as fh:
        fh.write(b"\0" * 8 + outside.tobytes())
    ext = onnx.TensorProto(name="outside", data_type=onnx.TensorProto.FLOAT, dims=[32, 16])
    ext.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "8"), ("length", str(outside.nbytes))):
        ext.external_data.add(key=key, value=value)
    nodes = [helper.make_node("MatMul", ["x", "big"], ["h"]), helper.make_node("MatMul", ["h", "outside"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 16])],
                              [big, small, ext, typed], doc_string="d")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="t")
    model.ir_version = 8
    return model


def test_streamed_save_writes_what_onnx_save_model_writes(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    model = _mixed_model(str(base))
    before = model.SerializeToString()
    loaded = onnx.ModelProto()
    loaded.CopyFrom(model)
    onnx.load_external_data_for_model(loaded, str(base))
    for init in loaded.graph.initializer:
        init.ClearField("data_location")  # what the exporters hand over: embedded tensors carry no location

    for name, threshold in (("embedded", 2**30), ("external", 0)):
        ours, reference = tmp_path / name / "ours", tmp_path / name / "onnx"
        ours.mkdir(parents=True)
        reference.mkdir(parents=True)
        files = artifact.save(model, str(ours), threshold, base_dir=str(base))
        copy = onnx.ModelProto()
        copy.CopyFrom(loaded)
        if threshold:
            onnx.save_model(copy, str(reference / artifact.MODEL_FILE))
        else:
            onnx.save_model(copy, str(reference / artifact.MODEL_FILE), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=artifact.EXTERNAL_DATA_FILE, size_threshold=1024)
        assert sorted(os.listdir(ours)) == sorted(os.listdir(reference)) == sorted(os.path.basename(f) for f in files)
        for file in os.listdir(reference):
            assert (ours / file).read_bytes() == (reference / file).read_bytes(), f"{name}: {file}"
        onnx.checker.check_model(str(ours / artifact.MODEL_FILE), full_check=True)
    assert model.SerializeToString() == before, "save() must not modify the model"
