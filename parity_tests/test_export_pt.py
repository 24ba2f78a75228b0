"""PyTorch -> ONNX export: every family x task, checked against transformers' PyTorch classes.

Each (family, task) is exported once (module-scoped cache) from a tiny checkpoint
built by transformers; ONNX Runtime then runs inputs unlike the export example
(other batch, length and choice count, with padding) and must match transformers'
own PyTorch model on the same checkpoint within 1e-4 (validate.DEFAULT_ATOL; the
real maxima are printed at the end and are ~1e-6).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import MODEL_TYPES, assert_last_layer_on_first_token_only, hf_class, max_abs_diff
from onnxport.exporters import ExportError, FRONT_ENDS, FrameworkNotInstalledError, export, load_spec
from onnxport.exporters import io_spec, rotary_op
from onnxport.exporters.io_spec import IOSpec, TaskError, build_io_spec, make_inputs
from onnxport.exporters.validate import DEFAULT_ATOL, EXAMPLE_SHAPE
from onnxport.checkpoints import CheckpointError
from onnxport.configs import AutoConfig
from onnxport.artifact.layout import model_path

# HF heads exported once per graph: a task whose graph is another's (rerank: text-classification's) is
# exported under that task; sentence-embeddings exports sentence-transformers directories (test_sentence_embeddings.py).
TASK_HEADS = {name: task.head for name, task in io_spec.TASKS.items() if task.is_head_graph}
CASES = [(mt, task, False) for mt in MODEL_TYPES for task in TASK_HEADS] + [
    (mt, "text-generation", True) for mt in MODEL_TYPES
]
# Fresh inputs: every dimension differs from the export example (2 x 8, 2 choices, past 3).
FRESH = dict(batch=3, sequence=13, num_choices=3, seed=7)
DIFFS: dict[str, float] = {}  # family -> largest native-vs-ONNX difference seen


def _id(case):
    mt, task, past = case
    return f"{mt}-{task}{'-with-past' if past else ''}"


@pytest.fixture(scope="module")
def exported(checkpoint_factory, tmp_path_factory):
    """``exported(model_type, task, with_past, **overrides)`` -> (checkpoint, export dir, report), cached."""
    cache = {}
    root = tmp_path_factory.mktemp("exports")

    def get(model_type, task, with_past=False, **overrides):
        key = (model_type, task, with_past, tuple(sorted(overrides.items())))
        if key not in cache:
            checkpoint = checkpoint_factory(model_type, TASK_HEADS[task], **overrides)
            out = root / f"{model_type}-{task}-{int(with_past)}-{len(cache)}"
            report = export(checkpoint, out, framework="pt", task=task, with_past=with_past)
            cache[key] = (checkpoint, str(out), report)
        return cache[key]

    yield get
    if DIFFS:
        print("\nlargest native(transformers)-vs-ONNX Runtime abs diff per family:")
        for family, diff in sorted(DIFFS.items()):
            print(f"  {family:<22} {diff:.3e}")


def _session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _hf(model_type, head, checkpoint):
    overrides = {"is_decoder": True} if head == "ForCausalLM" else {}
    return hf_class(model_type, head).from_pretrained(checkpoint, attn_implementation="eager", **overrides).eval()


def _hf_outputs(model, spec: IOSpec, feeds):
    kwargs = {k: torch.from_numpy(v) for k, v in feeds.items() if not k.startswith("past_key_values")}
    with torch.no_grad():
        out = model(**kwargs, return_dict=True)
    return {name: getattr(out, name).numpy() for name in spec.output_names if not name.startswith("present.")}


def _record(model_type, diff):
    DIFFS[model_type] = max(DIFFS.get(model_type, 0.0), diff)


# ----------------------------------------------------------------------------- parity matrix
@pytest.mark.parametrize("case", [c for c in CASES if not c[2]], ids=_id)
def test_onnx_matches_transformers(exported, case):
    model_type, task, with_past = case
    checkpoint, out, report = exported(model_type, task, with_past)
    assert report.validation.passed and report.validation.max_abs_diff <= DEFAULT_ATOL
    spec = load_spec(out)
    session, hf = _session(report.model_path), _hf(model_type, TASK_HEADS[task], checkpoint)
    fresh = make_inputs(spec, FRESH["batch"], FRESH["sequence"], num_choices=FRESH["num_choices"], seed=FRESH["seed"])
    assert fresh["attention_mask"].min() == 0  # padding is exercised
    longest = make_inputs(spec, 1, spec.extra["max_sequence_length"], num_choices=2, seed=8, pad=False)
    for label, feeds in (("fresh", fresh), ("longest", longest)):
        got = dict(zip(spec.output_names, session.run(None, feeds)))
        want = _hf_outputs(hf, spec, feeds)
        assert set(want) == set(spec.output_names)
        for name in spec.output_names:
            diff = max_abs_diff(got[name], want[name])
            _record(model_type, diff)
            assert diff <= DEFAULT_ATOL, f"{label} {name}: {diff:.3e}"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_text_classification_last_layer_works_on_the_first_token_only(exported, model_type):
    """The classifier reads token 0 only, so the export skips the rest of the last layer; other heads do not."""
    def export_of(task):
        _, out, report = exported(model_type, task)
        return report, model_path(out)

    feeds = assert_last_layer_on_first_token_only(export_of, FRESH["batch"], FRESH["sequence"], FRESH["seed"])
    # The pruned graph still reads padded and left-padded rows right (transformers is the reference).
    checkpoint, out, _ = exported(model_type, "text-classification")
    feeds = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in feeds.items()}  # padding moves to the front
    hf = _hf(model_type, "ForSequenceClassification", checkpoint)
    got = _session(model_path(out)).run(["logits"], feeds)[0]
    assert feeds["attention_mask"][:, 0].min() == 0
    assert max_abs_diff(got, _hf_outputs(hf, load_spec(out), feeds)["logits"]) <= DEFAULT_ATOL


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_with_past_decoding_matches_full_forward(exported, model_type):
    """Prompt with an empty past, then single-token steps through ORT == transformers' full forward each step."""
    checkpoint, out, report = exported(model_type, "text-generation", True)
    assert report.validation.passed
    spec = load_spec(out)
    session = _session(report.model_path)
    hf = _hf(model_type, "ForCausalLM", checkpoint)
    rng = np.random.default_rng(3)
    batch, prompt, steps = 2, 5, 4
    ids = rng.integers(3, spec.extra["vocab_size"], size=(batch, prompt + steps), dtype=np.int64)
    types = np.zeros_like(ids)
    past = io_spec.empty_past(spec, batch)
    start = 0
    for length in [prompt] + [1] * steps:
        stop = start + length
        feeds = {"input_ids": ids[:, start:stop], "attention_mask": np.ones((batch, stop), np.int64), **past}
        if "token_type_ids" in spec.input_names:
            feeds["token_type_ids"] = types[:, start:stop]
        result = dict(zip(spec.output_names, session.run(None, feeds)))
        assert result["present.0.key"].shape[2] == stop
        full = {"input_ids": torch.from_numpy(ids[:, :stop])}
        if "token_type_ids" in spec.input_names:
            full["token_type_ids"] = torch.from_numpy(types[:, :stop])
        with torch.no_grad():
            want = hf(**full, use_cache=False).logits.numpy()[:, start:stop]
        diff = max_abs_diff(result["logits"], want)
        _record(model_type, diff)
        assert diff <= DEFAULT_ATOL, f"step ending at {stop}: {diff:.3e}"
        past = io_spec.past_from_present(spec, result)
        start = stop


@pytest.mark.parametrize("position_embedding_type", ["relative_key", "relative_key_query"])
def test_relative_positions_with_past(exported, position_embedding_type):
    """Relative-position scores use query positions past..past+q-1; the export keeps them dynamic."""
    checkpoint, out, report = exported("roberta-prelayernorm", "text-generation", True,
                                       position_embedding_type=position_embedding_type)
    assert report.validation.passed  # fresh past (5) and empty past, vs the onnxport PyTorch model
    spec = load_spec(out)
    feeds = make_inputs(spec, 2, 6, seed=4, pad=False)
    feeds.update(io_spec.empty_past(spec, 2))
    feeds["attention_mask"] = np.ones((2, 6), np.int64)
    got = _session(report.model_path).run(["logits"], feeds)[0]
    hf = _hf("roberta-prelayernorm", "ForCausalLM", checkpoint)
    with torch.no_grad():
        # the export takes token types (type_vocab_size 2) and make_inputs gives non-zero ones: feed them both
        want = hf(input_ids=torch.from_numpy(feeds["input_ids"]), token_type_ids=torch.from_numpy(feeds["token_type_ids"]),
                  use_cache=False).logits.numpy()
    diff = max_abs_diff(got, want)
    _record("roberta-prelayernorm", diff)
    assert diff <= DEFAULT_ATOL


# ----------------------------------------------------------------------------- the rotary op
@pytest.mark.parametrize("task", ["feature-extraction", "text-generation"])
def test_roformer_one_custom_node_per_rotary_application(exported, task):
    _, _, report = exported("roformer", task, task == "text-generation")
    model = onnx.load(report.model_path)
    nodes = rotary_op.rotary_nodes(model)
    layers = AutoConfig.from_pretrained(report.out_dir).num_hidden_layers
    assert len(nodes) == 2 * layers  # queries and keys
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17), ("onnxport", 1)}
    assert [(f.domain, f.name) for f in model.functions] == [("onnxport", "RotaryEmbedding"), ("onnxport", "Attention")]
    # no rotary arithmetic left outside the custom nodes
    assert not [n for n in model.graph.node if n.op_type in ("Split", "Neg")]


def test_rotary_value_gives_three_nodes_per_layer(exported):
    checkpoint, out, report = exported("roformer", "feature-extraction", False, rotary_value=True)
    model = onnx.load(report.model_path)
    assert len(rotary_op.rotary_nodes(model)) == 3 * 2
    spec = load_spec(out)
    feeds = make_inputs(spec, 2, 10, seed=5)
    got = _session(report.model_path).run(["last_hidden_state"], feeds)[0]
    want = _hf_outputs(_hf("roformer", "Model", checkpoint), spec, feeds)["last_hidden_state"]
    assert max_abs_diff(got, want) <= DEFAULT_ATOL


def test_roformer_runs_in_onnx_reference(exported):
    from onnx.reference import ReferenceEvaluator

    _, out, report = exported("roformer", "text-generation", True)
    spec = load_spec(out)
    feeds = make_inputs(spec, 2, 4, past=3, seed=11)
    want = _session(report.model_path).run(None, feeds)
    got = ReferenceEvaluator(report.model_path).run(None, feeds)
    for name, a, b in zip(spec.output_names, got, want):
        assert max_abs_diff(a, b) <= 1e-5, name


def test_checker_and_shape_inference_through_function(exported):
    _, _, report = exported("roformer", "question-answering")
    onnx.checker.check_model(report.model_path, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(report.model_path), strict_mode=True)
    rotary_outputs = {n.output[0] for n in rotary_op.rotary_nodes(inferred)}
    shapes = {v.name: v.type.tensor_type.shape for v in inferred.graph.value_info if v.name in rotary_outputs}
    assert len(shapes) == len(rotary_outputs)
    for shape in shapes.values():  # (batch, heads, seq, head_dim) with the static tail known
        assert len(shape.dim) == 4 and shape.dim[1].dim_value == 4 and shape.dim[3].dim_value == 8


def test_fused_contrib_lowering_equals_function(exported):
    """com.microsoft.RotaryEmbedding (interleaved) == the function body, on a cached decoding step."""
    _, out, report = exported("roformer", "text-generation", True)
    spec = load_spec(out)
    model = onnx.load(report.model_path)
    fused = rotary_op.lower_to_contrib(model)
    # no rotary function left; the attention op's stays for its nodes (the runtime lowers those separately)
    assert not rotary_op.rotary_nodes(fused) and [f.name for f in fused.functions] == ["Attention"]
    assert sum(n.domain == "com.microsoft" and n.op_type == "RotaryEmbedding" for n in fused.graph.node) == 4
    a, b = _session(report.model_path), ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    for past in (0, 6):
        feeds = make_inputs(spec, 3, 5, past=past, seed=past)
        for name, x, y in zip(spec.output_names, a.run(None, feeds), b.run(None, feeds)):
            assert max_abs_diff(x, y) <= 1e-5, (past, name)


def _rotary_graph(opset, cos_batch):
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [rotary_op.make_node("x", "cos", "sin", "y")],
        "rotary",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4, "S", 8]),
         helper.make_tensor_value_info("cos", TensorProto.FLOAT, [cos_batch, 1, "S", 4]),
         helper.make_tensor_value_info("sin", TensorProto.FLOAT, [cos_batch, 1, "S", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4, "S", 8])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    return rotary_op.attach_function(model)


@pytest.mark.parametrize("cos_batch", [1, "B"])
def test_op_function_contrib_and_opset23_agree(cos_batch):
    """The op's definition vs numpy, and both fused lowerings, for shared and per-row angles."""
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 8)).astype(np.float32)
    angles = rng.standard_normal((1 if cos_batch == 1 else 2, 1, 5, 4)) * 3
    feeds = {"x": x, "cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32)}
    x0, x1 = x[..., 0::2], x[..., 1::2]
    want = np.stack([x0 * feeds["cos"] - x1 * feeds["sin"], x1 * feeds["cos"] + x0 * feeds["sin"]], -1).reshape(x.shape)
    model = _rotary_graph(23, cos_batch)
    onnx.checker.check_model(model, full_check=True)
    results = {
        "function/ort": _session(model.SerializeToString()).run(None, feeds)[0],
        "function/reference": ReferenceEvaluator(model).run(None, feeds)[0],
        "contrib": _session(rotary_op.lower_to_contrib(model).SerializeToString()).run(None, feeds)[0],
        "opset23": _session(rotary_op.lower_to_onnx23(model).SerializeToString()).run(None, feeds)[0],
    }
    for name, got in results.items():
        assert max_abs_diff(got, want) <= 1e-6, name
    with pytest.raises(ValueError, match="opset >= 23"):
        rotary_op.lower_to_onnx23(_rotary_graph(17, cos_batch))


# ----------------------------------------------------------------------------- artifact quality
def test_artifact_quality(exported):
    checkpoint, out, report = exported("xlm-roberta", "fill-mask")
    model = onnx.load(report.model_path)
    assert model.ir_version <= 10 and model.ir_version >= 8
    # no stray custom domain: onnxport's for the attention op, which carries its function body
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17), ("onnxport", 1)}
    assert [(f.domain, f.name) for f in model.functions] == [("onnxport", "Attention")]
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Dropout", "TrainingDropout"}
    # tied LM decoder: the (vocab, hidden) matrix is stored once
    config = AutoConfig.from_pretrained(checkpoint)
    big = [i for i in model.graph.initializer if sorted(i.dims) == sorted([config.vocab_size, config.hidden_size])]
    assert [i.name for i in big] == ["roberta.embeddings.word_embeddings.weight"]
    assert len({i.name for i in model.graph.initializer}) == len(model.graph.initializer)
    meta = json.load(open(os.path.join(out, "onnxport.json")))
    assert meta["framework"] == "pt" and meta["task"] == "fill-mask" and meta["opset"] == 17
    assert meta["validation"]["passed"] and {"torch", "onnx", "onnxruntime"} <= set(meta["versions"])
    assert IOSpec.from_dict(meta["io_spec"]) == report.spec
    assert AutoConfig.from_pretrained(out).architectures == ["XLMRobertaForMaskedLM"]


def test_export_is_deterministic(checkpoint_factory, tmp_path):
    checkpoint = checkpoint_factory("roformer", "ForCausalLM")
    first = export(checkpoint, tmp_path / "a", task="text-generation", with_past=True, validate=False)
    second = export(checkpoint, tmp_path / "b", task="text-generation", with_past=True, validate=False)
    with open(first.model_path, "rb") as a, open(second.model_path, "rb") as b:
        assert a.read() == b.read()


def test_external_data_with_lowered_threshold(exported, tmp_path):
    checkpoint, out, report = exported("roberta-prelayernorm", "token-classification")
    small = export(checkpoint, tmp_path / "ext", task="token-classification", external_data_threshold=1000)
    data = tmp_path / "ext" / "onnx" / "model.onnx_data"
    assert data.is_file() and os.path.getsize(small.model_path) < os.path.getsize(data)
    assert not (Path(model_path(tmp_path / "ext"))).stat().st_size > 200_000
    assert small.validation.passed
    onnx.checker.check_model(small.model_path, full_check=True)
    feeds = make_inputs(load_spec(out), 2, 6, seed=2)
    a = _session(report.model_path).run(None, feeds)[0]
    b = _session(small.model_path).run(None, feeds)[0]
    np.testing.assert_array_equal(a, b)


def test_tokenizer_files_copied_and_task_inferred(checkpoint_factory, tmp_path):
    checkpoint = str(tmp_path / "ckpt")
    shutil.copytree(checkpoint_factory("roformer", "ForTokenClassification"), checkpoint)
    for name, text in (("vocab.txt", "[PAD]\n[UNK]\n"), ("tokenizer_config.json", "{}"), ("notes.md", "x")):
        with open(os.path.join(checkpoint, name), "w") as fh:
            fh.write(text)
    report = export(checkpoint, tmp_path / "out", validate=False)  # task from architectures
    assert report.task == "token-classification"
    files = set(os.listdir(tmp_path / "out"))
    assert {"onnx", "config.json", "onnxport.json", "vocab.txt", "tokenizer_config.json"} <= files
    assert "notes.md" not in files


def test_feature_extraction_from_mlm_checkpoint(checkpoint_factory, tmp_path):
    """A masked-LM checkpoint has no pooler: its feature-extraction export leaves pooler_output out (nothing
    random in it); with_pooler=True exports a pooler from the fixed seed, listed as random, byte-identical twice."""
    checkpoint = checkpoint_factory("xlm-roberta", "ForMaskedLM")
    report = export(checkpoint, tmp_path / "fe", task="feature-extraction")
    assert report.validation.passed and report.spec.output_names == ["last_hidden_state"]
    meta = json.load(open(tmp_path / "fe" / "onnxport.json"))
    assert meta["random_weights"] == [] and meta["source"]["checkpoint"] == os.path.abspath(checkpoint)
    with pytest.raises(ExportError, match="pooler.dense.weight.*allow-missing-weights"):
        export(checkpoint, tmp_path / "refused", task="feature-extraction", with_pooler=True)
    digests = []
    for name in ("p1", "p2"):
        report = export(checkpoint, tmp_path / name, task="feature-extraction", with_pooler=True,
                        allow_missing_weights=True)
        assert report.spec.output_names == ["last_hidden_state", "pooler_output"] and report.validation.passed
        digests.append(hashlib.sha256((Path(model_path(tmp_path / name))).read_bytes()).hexdigest())
        meta = json.load(open(tmp_path / name / "onnxport.json"))
        assert meta["random_weights"] == ["pooler.dense.bias", "pooler.dense.weight"] and meta["random_seed"] == 0
    assert digests[0] == digests[1]  # the random pooler comes from the recorded seed


def test_validation_failure_is_reported(checkpoint_factory, tmp_path):
    from onnxport.exporters.validate import ValidationError

    with pytest.raises(ValidationError, match=r"beyond tolerance(.|\n)*max abs diff(.|\n)*logits"):
        export(checkpoint_factory("roformer", "ForMaskedLM"), tmp_path / "strict", task="fill-mask", atol=1e-12)
    assert not (tmp_path / "strict").exists()  # a failed export writes nothing (nothing servable is left)


def test_opset_18(checkpoint_factory, tmp_path):
    report = export(checkpoint_factory("roformer", "ForSequenceClassification"), tmp_path / "o18",
                    task="text-classification", opset=18)
    assert report.validation.passed
    assert {(o.domain, o.version) for o in onnx.load(report.model_path).opset_import} == {("", 18), ("onnxport", 1)}


# ----------------------------------------------------------------------------- io spec
def test_io_spec_names_axes_and_json():
    roformer = AutoConfig.for_model("roformer", vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=37)
    xlmr = AutoConfig.for_model("xlm-roberta", vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=37)
    spec = build_io_spec("text-generation", roformer, with_past=True)
    assert spec.input_names == ["input_ids", "attention_mask", "token_type_ids", "past_key_values.0.key",
                                "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"]
    assert spec.output_names == ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    axes = spec.dynamic_axes()
    assert axes["attention_mask"] == {0: "batch_size", 1: "past_sequence_length + sequence_length"}
    assert axes["past_key_values.0.key"] == {0: "batch_size", 2: "past_sequence_length"}
    assert axes["present.1.value"] == {0: "batch_size", 2: "past_sequence_length + sequence_length"}
    assert IOSpec.from_json(spec.to_json()) == spec
    assert build_io_spec("feature-extraction", xlmr).output_names == ["last_hidden_state", "pooler_output"]
    assert build_io_spec("feature-extraction", roformer).output_names == ["last_hidden_state"]
    # token types are an input whenever the model has more than one (transformers' XLM-R default is 2) ...
    assert build_io_spec("fill-mask", xlmr).input_names == ["input_ids", "attention_mask", "token_type_ids"]
    one_type = AutoConfig.for_model("xlm-roberta", vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=37, type_vocab_size=1)
    # ... and not when it has one (xlm-roberta-base, roberta-base): nothing the native model uses is left out
    assert build_io_spec("fill-mask", one_type).input_names == ["input_ids", "attention_mask"]
    mc = build_io_spec("multiple-choice", xlmr)
    assert mc.dynamic_axes()["input_ids"] == {0: "batch_size", 1: "num_choices", 2: "sequence_length"}
    assert build_io_spec("question-answering", xlmr).output_names == ["start_logits", "end_logits"]
    with pytest.raises(TaskError, match="valid tasks: feature-extraction, text-generation, fill-mask"):
        build_io_spec("summarization", xlmr)
    with pytest.raises(TaskError, match="with_past only applies to text-generation"):
        build_io_spec("fill-mask", xlmr, with_past=True)
    examples = make_inputs(spec, EXAMPLE_SHAPE["batch"], EXAMPLE_SHAPE["sequence"], past=3)
    assert examples["attention_mask"].shape == (2, 11) and examples["past_key_values.1.value"].shape == (2, 4, 3, 8)


# ----------------------------------------------------------------------------- errors and CLI
def test_error_messages(checkpoint_factory, tmp_path, monkeypatch):
    checkpoint = checkpoint_factory("xlm-roberta", "ForMaskedLM")
    with pytest.raises(TaskError, match="Unknown task 'translation'.*valid tasks: feature-extraction"):
        export(checkpoint, tmp_path / "a", task="translation")
    with pytest.raises(TaskError, match="with_past only applies"):
        export(checkpoint, tmp_path / "a", task="fill-mask", with_past=True)
    with pytest.raises(ExportError, match="Unknown framework 'mxnet'"):
        export(checkpoint, tmp_path / "a", framework="mxnet", task="fill-mask")
    # a task the family cannot do
    monkeypatch.setitem(io_spec.FAMILY_TASKS, "xlm-roberta", ("fill-mask",))
    with pytest.raises(TaskError, match="xlm-roberta family cannot be exported for 'question-answering'"):
        export(checkpoint, tmp_path / "a", task="question-answering")
    monkeypatch.undo()
    # framework not installed -> names the pip extra
    monkeypatch.setitem(FRONT_ENDS, "pt", FRONT_ENDS["pt"].__class__("pt", ("torch_missing_here",), "onnxport[pt]", "PyTorch"))
    with pytest.raises(FrameworkNotInstalledError, match=r"pip install 'onnxport\[pt\]'"):
        export(checkpoint, tmp_path / "a", task="fill-mask")
    monkeypatch.undo()
    # non-empty output directory without force
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("user file")
    with pytest.raises(ExportError, match="not empty.*force"):
        export(checkpoint, busy, task="fill-mask")
    export(checkpoint, busy, task="fill-mask", force=True, validate=False)
    assert (busy / "keep.txt").read_text() == "user file" and (Path(model_path(busy))).is_file()
    # the checkpoint holds no weights of the requested head
    with pytest.raises(ExportError, match="no weights for .*classifier"):
        export(checkpoint, tmp_path / "b", task="text-classification")
    # config and weights disagree
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    config = json.loads((broken / "config.json").read_text())
    config["hidden_size"] = 64
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="disagree with its config"):
        export(broken, tmp_path / "c", task="fill-mask")
    with pytest.raises(ExportError, match="does not exist"):
        export(tmp_path / "nowhere", tmp_path / "d", task="fill-mask")
    with pytest.raises(ExportError, match="opsets 14..20"):
        export(checkpoint, tmp_path / "e", task="fill-mask", opset=12)


def test_cli_export(checkpoint_factory, tmp_path, capsys):
    from onnxport.cli import main

    checkpoint = checkpoint_factory("roberta-prelayernorm", "ForQuestionAnswering")
    out = str(tmp_path / "cli")
    assert main(["export", checkpoint, out, "--framework", "pt", "--task", "question-answering"]) == 0
    printed = capsys.readouterr().out
    assert "start_logits" in printed and "max abs diff" in printed
    assert main(["export", checkpoint, out, "--task", "question-answering"]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["export", checkpoint, out, "--task", "question-answering", "--force", "--no-validate",
                 "--opset", "17"]) == 0
    meta = json.load(open(os.path.join(out, "onnxport.json")))
    assert meta["validation"] is None and meta["task"] == "question-answering"


OPTIMUM_CASES = [("xlm-roberta", "fill-mask", "ORTModelForMaskedLM", "logits"),
                 ("roformer", "text-classification", "ORTModelForSequenceClassification", "logits"),
                 ("xlm-roberta", "question-answering", "ORTModelForQuestionAnswering", "start_logits"),
                 ("roformer", "token-classification", "ORTModelForTokenClassification", "logits")]


@pytest.mark.parametrize("model_type,task,class_name,output", OPTIMUM_CASES,
                         ids=[f"{m}-{t}" for m, t, _, _ in OPTIMUM_CASES])
def test_optimum_ortmodel_serves_export(exported, model_type, task, class_name, output):
    """Our IO names are Optimum's: its ORTModel loads the directory and gives transformers' outputs."""
    optimum_ort = pytest.importorskip("optimum.onnxruntime", reason="optimum-onnx is not installed in this environment")
    import torch

    checkpoint, out, _ = exported(model_type, task)
    model = getattr(optimum_ort, class_name).from_pretrained(out, provider="CPUExecutionProvider")
    rng = np.random.default_rng(5)
    ids = rng.integers(5, 90, size=(2, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    inputs = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    reference = _hf(model_type, TASK_HEADS[task], checkpoint)
    with torch.no_grad():
        expected = getattr(reference(**inputs), output).numpy()
    got = np.asarray(getattr(model(**inputs), output))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
