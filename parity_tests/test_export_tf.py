"""TensorFlow -> ONNX export (tf2onnx): every family x task, against three references.

Each (family, task) is exported once from a tiny checkpoint built by transformers
(module-scoped cache), from TensorFlow and -- for the cross-export check -- from
PyTorch. ONNX Runtime then runs inputs unlike the export example (other batch,
length and choice count, with padding, plus the longest allowed sequence) and
must match, within 1e-4 (validate.DEFAULT_ATOL; real maxima are printed at the
end and are ~1e-6):

* the onnxport TensorFlow reference model (the native model the graph came from),
* transformers' PyTorch class on the same checkpoint (the independent reference),
* ONNX Runtime on the PyTorch export of the same checkpoint.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
import torch  # noqa: E402

from conftest import MODEL_TYPES, assert_last_layer_on_first_token_only, hf_class, max_abs_diff  # noqa: E402
from onnxport.configs import AutoConfig  # noqa: E402
from onnxport.exporters import ExportError, FRONT_ENDS, FrameworkNotInstalledError, export, load_spec  # noqa: E402
from onnxport.exporters import io_spec, rotary_op  # noqa: E402
from onnxport.exporters.io_spec import IOSpec, make_inputs  # noqa: E402
from onnxport.exporters.validate import DEFAULT_ATOL  # noqa: E402
from onnxport.reference_models.tracing import TraceOptions, trace_options  # noqa: E402
from onnxport.artifact.layout import model_path  # noqa: E402
from onnxport.reference_models.tf import model_class  # noqa: E402

# HF heads exported once per graph: a task whose graph is another's (rerank: text-classification's) is
# exported under that task; sentence-embeddings exports sentence-transformers directories (test_sentence_embeddings.py).
TASK_HEADS = {name: task.head for name, task in io_spec.TASKS.items() if task.is_head_graph}
CASES = [(mt, task, False) for mt in MODEL_TYPES for task in TASK_HEADS] + [
    (mt, "text-generation", True) for mt in MODEL_TYPES
]
# Fresh inputs: every dimension differs from the export example (2 x 8, 2 choices, past 3).
FRESH = dict(batch=3, sequence=13, num_choices=3, seed=7)
# family -> {"native": max diff vs the TF model, "transformers": ..., "pt-export": ...}
DIFFS: dict[str, dict[str, float]] = {}
EXPORT_SECONDS: list[float] = []


def _id(case):
    mt, task, past = case
    return f"{mt}-{task}{'-with-past' if past else ''}"


def _record(model_type, against, diff):
    family = DIFFS.setdefault(model_type, {})
    family[against] = max(family.get(against, 0.0), diff)


@pytest.fixture(scope="module")
def exported(checkpoint_factory, tmp_path_factory):
    """``exported(model_type, task, with_past, framework="tf", **overrides)`` -> (checkpoint, dir, report), cached."""
    cache = {}
    root = tmp_path_factory.mktemp("tf-exports")

    def get(model_type, task, with_past=False, framework="tf", **overrides):
        key = (model_type, task, with_past, framework, tuple(sorted(overrides.items())))
        if key not in cache:
            checkpoint = checkpoint_factory(model_type, TASK_HEADS[task], **overrides)
            out = root / f"{framework}-{model_type}-{task}-{int(with_past)}-{len(cache)}"
            start = time.perf_counter()
            report = export(checkpoint, out, framework=framework, task=task, with_past=with_past)
            if framework == "tf":
                EXPORT_SECONDS.append(time.perf_counter() - start)
            cache[key] = (checkpoint, str(out), report)
        return cache[key]

    yield get
    if DIFFS:
        print("\nlargest abs diff of ONNX Runtime on the TF export, per family:")
        for family, row in sorted(DIFFS.items()):
            print(f"  {family:<22} " + "  ".join(f"vs {k}: {v:.3e}" for k, v in sorted(row.items())))
    if EXPORT_SECONDS:
        print(f"TF export time per tiny model: median {np.median(EXPORT_SECONDS):.2f}s, max {max(EXPORT_SECONDS):.2f}s "
              f"({len(EXPORT_SECONDS)} exports, validation included)")


@pytest.fixture(scope="module")
def native_tf():
    """``native_tf(model_type, head, checkpoint)`` -> the onnxport TF reference model, cached."""
    cache = {}

    def get(model_type, head, checkpoint):
        if (head, checkpoint) not in cache:
            overrides = {"is_decoder": True, "use_cache": True} if head == "ForCausalLM" else {}
            cache[(head, checkpoint)] = model_class(model_type, head).from_pretrained(checkpoint, **overrides)
        return cache[(head, checkpoint)]

    return get


def _session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _run(session, spec, feeds):
    return dict(zip(spec.output_names, session.run(None, {k: feeds[k] for k in spec.input_names})))


def _tf_outputs(model, spec: IOSpec, feeds):
    kwargs = {k: tf.constant(v) for k, v in feeds.items() if not k.startswith("past_key_values")}
    if spec.with_past:
        kwargs["past_key_values"] = tuple((tf.constant(feeds[k]), tf.constant(feeds[v])) for k, v in spec.past_names())
        kwargs["use_cache"] = True
    out = model(**kwargs, return_dict=True)
    result = {}
    for name in spec.output_names:
        if name.startswith("present."):
            _, layer, kind = name.split(".")
            result[name] = out.past_key_values[int(layer)][0 if kind == "key" else 1].numpy()
        else:
            result[name] = getattr(out, name).numpy()
    return result


def _hf(model_type, head, checkpoint):
    overrides = {"is_decoder": True} if head == "ForCausalLM" else {}
    return hf_class(model_type, head).from_pretrained(checkpoint, attn_implementation="eager", **overrides).eval()


def _hf_outputs(model, spec: IOSpec, feeds):
    kwargs = {k: torch.from_numpy(v) for k, v in feeds.items() if not k.startswith("past_key_values")}
    with torch.no_grad():
        out = model(**kwargs, return_dict=True)
    return {name: getattr(out, name).numpy() for name in spec.output_names if not name.startswith("present.")}


# ----------------------------------------------------------------------------- parity matrix
@pytest.mark.parametrize("case", [c for c in CASES if not c[2]], ids=_id)
def test_tf_export_matches_native_transformers_and_pt_export(exported, native_tf, case):
    model_type, task, _ = case
    checkpoint, out, report = exported(model_type, task)
    assert report.validation.passed and report.validation.max_abs_diff <= DEFAULT_ATOL
    _, pt_out, pt_report = exported(model_type, task, framework="pt")
    spec = load_spec(out)
    assert spec == load_spec(pt_out)  # one io spec, whatever the framework
    tf_session, pt_session = _session(report.model_path), _session(pt_report.model_path)
    native = native_tf(model_type, TASK_HEADS[task], checkpoint)
    hf = _hf(model_type, TASK_HEADS[task], checkpoint)
    fresh = make_inputs(spec, FRESH["batch"], FRESH["sequence"], num_choices=FRESH["num_choices"], seed=FRESH["seed"])
    assert fresh["attention_mask"].min() == 0  # padding is exercised
    longest = make_inputs(spec, 1, spec.extra["max_sequence_length"], num_choices=2, seed=8, pad=False)
    for label, feeds in (("fresh", fresh), ("longest", longest)):
        got = _run(tf_session, spec, feeds)
        references = {
            "native": _tf_outputs(native, spec, feeds),
            "transformers": _hf_outputs(hf, spec, feeds),
            "pt-export": _run(pt_session, spec, feeds),
        }
        for against, want in references.items():
            assert set(want) == set(spec.output_names), against
            for name in spec.output_names:
                diff = max_abs_diff(got[name], want[name])
                _record(model_type, against, diff)
                assert diff <= DEFAULT_ATOL, f"{label} {name} vs {against}: {diff:.3e}"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_with_past_decoding_matches_full_native_forward(exported, native_tf, model_type):
    """Prompt with an empty past, then 1-token steps through ORT == the TF model's full forward at each step,
    and == the PyTorch export fed the same past."""
    checkpoint, out, report = exported(model_type, "text-generation", True)
    assert report.validation.passed  # includes a fresh past of 5 and the empty past
    _, _, pt_report = exported(model_type, "text-generation", True, framework="pt")
    spec = load_spec(out)
    session, pt_session = _session(report.model_path), _session(pt_report.model_path)
    native = native_tf(model_type, "ForCausalLM", checkpoint)
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
        result = _run(session, spec, feeds)
        assert result["present.0.key"].shape[2] == stop
        full = {"input_ids": tf.constant(ids[:, :stop])}
        if "token_type_ids" in spec.input_names:
            full["token_type_ids"] = tf.constant(types[:, :stop])
        want = native(**full, use_cache=False).logits.numpy()[:, start:stop]
        diff = max_abs_diff(result["logits"], want)
        _record(model_type, "native", diff)
        assert diff <= DEFAULT_ATOL, f"step ending at {stop}: {diff:.3e}"
        from_pt = _run(pt_session, spec, feeds)
        for name in spec.output_names:
            diff = max_abs_diff(result[name], from_pt[name])
            _record(model_type, "pt-export", diff)
            assert diff <= DEFAULT_ATOL, f"step ending at {stop}, {name} vs PT export: {diff:.3e}"
        past = io_spec.past_from_present(spec, result)
        start = stop


@pytest.mark.parametrize("position_embedding_type", ["relative_key", "relative_key_query"])
def test_relative_positions_with_past(exported, native_tf, position_embedding_type):
    """Relative-position scores use query positions past..past+q-1: multi-token step on a non-empty past."""
    checkpoint, out, report = exported("roberta-prelayernorm", "text-generation", True,
                                       position_embedding_type=position_embedding_type)
    assert report.validation.passed
    spec = load_spec(out)
    native = native_tf("roberta-prelayernorm", "ForCausalLM", checkpoint)
    rng = np.random.default_rng(4)
    ids = rng.integers(3, spec.extra["vocab_size"], size=(2, 9), dtype=np.int64)
    types = rng.integers(0, 2, size=(2, 9), dtype=np.int64)  # a graph input (type_vocab_size 2), non-zero
    first = {"input_ids": ids[:, :4], "attention_mask": np.ones((2, 4), np.int64), "token_type_ids": types[:, :4],
             **io_spec.empty_past(spec, 2)}
    session = _session(report.model_path)
    step = io_spec.past_from_present(spec, _run(session, spec, first))
    second = {"input_ids": ids[:, 4:], "attention_mask": np.ones((2, 9), np.int64), "token_type_ids": types[:, 4:],
              **step}
    got = _run(session, spec, second)["logits"]
    want = native(input_ids=tf.constant(ids), token_type_ids=tf.constant(types), use_cache=False).logits.numpy()[:, 4:]
    diff = max_abs_diff(got, want)
    _record("roberta-prelayernorm", "native", diff)
    assert diff <= DEFAULT_ATOL


# ----------------------------------------------------------------------------- the rotary op
@pytest.mark.parametrize("task, with_past", [("feature-extraction", False), ("text-generation", True)])
def test_roformer_one_custom_node_per_rotary_application(exported, task, with_past):
    _, _, report = exported("roformer", task, with_past)
    model = onnx.load(report.model_path)
    nodes = rotary_op.rotary_nodes(model)
    layers = AutoConfig.from_pretrained(report.out_dir).num_hidden_layers
    assert len(nodes) == 2 * layers == report.custom_nodes  # queries and keys
    assert all(not n.attribute and len(n.input) == 3 for n in nodes)  # no leftover PyFunc attributes
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17), ("onnxport", 1)}
    assert [(f.domain, f.name) for f in model.functions] == [("onnxport", "RotaryEmbedding"), ("onnxport", "Attention")]
    # no rotary arithmetic left outside the custom nodes; the one Split is the shared sin|cos table lookup
    ops = [n.op_type for n in model.graph.node]
    assert "Neg" not in ops and ops.count("Split") <= 1 and not any(o.startswith("PyFunc") for o in ops)
    # each node rotates a (batch, heads, seq, head_dim) projection with the shared (cos, sin)
    assert len({(n.input[1], n.input[2]) for n in nodes}) == 1


def test_rotary_value_gives_three_nodes_per_layer(exported, native_tf):
    checkpoint, out, report = exported("roformer", "feature-extraction", False, rotary_value=True)
    model = onnx.load(report.model_path)
    assert len(rotary_op.rotary_nodes(model)) == 3 * 2
    spec = load_spec(out)
    feeds = make_inputs(spec, 2, 10, seed=5)
    got = _run(_session(report.model_path), spec, feeds)["last_hidden_state"]
    for against, want in (("native", _tf_outputs(native_tf("roformer", "Model", checkpoint), spec, feeds)),
                          ("transformers", _hf_outputs(_hf("roformer", "Model", checkpoint), spec, feeds))):
        diff = max_abs_diff(got, want["last_hidden_state"])
        _record("roformer", against, diff)
        assert diff <= DEFAULT_ATOL, against


def test_roformer_runs_in_onnx_reference(exported):
    from onnx.reference import ReferenceEvaluator

    _, out, report = exported("roformer", "text-generation", True)
    onnx.checker.check_model(report.model_path, full_check=True)
    spec = load_spec(out)
    feeds = make_inputs(spec, 2, 4, past=3, seed=11)
    want = _session(report.model_path).run(None, feeds)
    got = ReferenceEvaluator(report.model_path).run(None, feeds)
    for name, a, b in zip(spec.output_names, got, want):
        assert max_abs_diff(a, b) <= 1e-5, name


def test_fused_contrib_lowering_equals_function(exported):
    _, out, report = exported("roformer", "text-generation", True)
    spec = load_spec(out)
    fused = rotary_op.lower_to_contrib(onnx.load(report.model_path))
    assert not rotary_op.rotary_nodes(fused)
    a, b = _session(report.model_path), _session(fused.SerializeToString())
    for past in (0, 6):
        feeds = make_inputs(spec, 3, 5, past=past, seed=past)
        for name, x, y in zip(spec.output_names, a.run(None, feeds), b.run(None, feeds)):
            assert max_abs_diff(x, y) <= 1e-5, (past, name)


# ----------------------------------------------------------------------------- artifact quality
def test_artifact_signature_and_metadata(exported):
    checkpoint, out, report = exported("xlm-roberta", "fill-mask")
    model = onnx.load(report.model_path)
    assert 8 <= model.ir_version <= 10  # ONNX Runtime 1.31 reads <= 13; onnx 1.23 alone would write 14
    # tf2onnx's ai.onnx.ml import dropped; onnxport's for the attention op
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17), ("onnxport", 1)}
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Dropout", "Assert", "Identity"}
    assert {(n.domain, n.op_type) for n in model.graph.node if n.domain} == {("onnxport", "Attention")}
    spec = report.spec
    for value, t in zip(model.graph.input, spec.inputs):  # int64 ids as the spec says, dynamic axes named
        assert value.name == t.name and value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim] == list(t.shape)
    assert [o.name for o in model.graph.output] == spec.output_names
    # tied LM decoder: the (vocab, hidden) matrix is stored once (a transposed copy becomes a Transpose node)
    config = AutoConfig.from_pretrained(checkpoint)
    big = [i for i in model.graph.initializer if sorted(i.dims) == sorted([config.vocab_size, config.hidden_size])]
    assert [i.name for i in big] == ["roberta.embeddings.word_embeddings.weight"]
    names = {i.name for i in model.graph.initializer}  # weights carry their HF names (.T: stored transposed)
    assert {"roberta.encoder.layer.1.attention.self.query.weight.T", "lm_head.dense.bias"} <= names
    meta = json.load(open(os.path.join(out, "onnxport.json")))
    assert meta["framework"] == "tf" and meta["task"] == "fill-mask" and meta["opset"] == 17
    assert meta["validation"]["passed"] and {"tensorflow", "tf2onnx", "onnx", "onnxruntime"} <= set(meta["versions"])
    assert IOSpec.from_dict(meta["io_spec"]) == spec
    assert AutoConfig.from_pretrained(out).architectures == ["XLMRobertaForMaskedLM"]


def test_export_is_deterministic_and_restores_the_model_hooks(checkpoint_factory, tmp_path):
    checkpoint = checkpoint_factory("roformer", "ForCausalLM")
    first = export(checkpoint, tmp_path / "a", framework="tf", task="text-generation", with_past=True, validate=False)
    second = export(checkpoint, tmp_path / "b", framework="tf", task="text-generation", with_past=True, validate=False)
    with open(first.model_path, "rb") as a, open(second.model_path, "rb") as b:
        assert a.read() == b.read()
    assert trace_options() == TraceOptions()


def test_opset_18(checkpoint_factory, tmp_path):
    report = export(checkpoint_factory("roformer", "ForSequenceClassification"), tmp_path / "o18", framework="tf",
                    task="text-classification", opset=18)
    assert report.validation.passed
    assert {(o.domain, o.version) for o in onnx.load(report.model_path).opset_import} == {("", 18), ("onnxport", 1)}


# ----------------------------------------------------------------------------- errors and CLI
def test_error_messages(checkpoint_factory, tmp_path, monkeypatch):
    checkpoint = checkpoint_factory("xlm-roberta", "ForMaskedLM")
    with pytest.raises(ExportError, match=r"tf2onnx .*opsets 14..18, not 19"):
        export(checkpoint, tmp_path / "a", framework="tf", task="fill-mask", opset=19)
    with pytest.raises(ExportError, match="no weights for .*classifier"):
        export(checkpoint, tmp_path / "b", framework="tf", task="text-classification")
    monkeypatch.setitem(FRONT_ENDS, "tf", FRONT_ENDS["tf"].__class__("tf", ("tf2onnx_missing_here",), "onnxport[tf]",
                                                                     "TensorFlow"))
    with pytest.raises(FrameworkNotInstalledError, match=r"TensorFlow needs tf2onnx_missing_here.*pip install 'onnxport\[tf\]'"):
        export(checkpoint, tmp_path / "c", framework="tf", task="fill-mask")


def test_unconvertible_op_is_reported(checkpoint_factory, tmp_path, monkeypatch):
    """tf2onnx 1.17 has no Erfc (tf.nn.gelu's exact form); a model using it fails with the op's name, not later."""
    from onnxport.reference_models.tf.activations import ACT2FN

    monkeypatch.setitem(ACT2FN, "gelu", lambda x: 0.5 * x * tf.math.erfc(-x / np.sqrt(2.0)))
    with pytest.raises(ExportError, match="TensorFlow ops without an ONNX conversion: Erfc"):
        export(checkpoint_factory("xlm-roberta", "ForTokenClassification"), tmp_path / "erfc", framework="tf",
               task="token-classification", validate=False)
    assert trace_options() == TraceOptions()


def test_cli_export(checkpoint_factory, tmp_path, capsys):
    from onnxport.cli import main

    checkpoint = checkpoint_factory("roformer", "ForQuestionAnswering")
    out = str(tmp_path / "cli")
    assert main(["export", checkpoint, out, "--framework", "tf", "--task", "question-answering"]) == 0
    printed = capsys.readouterr().out
    assert "start_logits" in printed and "max abs diff" in printed
    meta = json.load(open(os.path.join(out, "onnxport.json")))
    assert meta["framework"] == "tf" and meta["validation"]["passed"] and meta["custom_ops"][0]["count"] == 4


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_text_classification_last_layer_works_on_the_first_token_only(exported, model_type):
    """As the PyTorch front end: the classifier reads token 0 only, so the last layer runs for it alone
    (validation, against the full native model, is in the export test above)."""
    def export_of(task):
        _, out, report = exported(model_type, task)
        return report, model_path(out)

    assert_last_layer_on_first_token_only(export_of, FRESH["batch"], FRESH["sequence"], FRESH["seed"])
