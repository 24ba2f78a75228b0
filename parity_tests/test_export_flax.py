"""Flax -> ONNX export (jax2onnx): every family x task, against the native Flax model and the PyTorch export.

Each (family, task) is exported once from Flax (module-scoped cache) and once from PyTorch, from the same
tiny checkpoint built by transformers. ONNX Runtime then runs inputs unlike the export example (other batch,
length and choice count, with padding; and the longest allowed length) and the Flax export must equal

* the native Flax reference model (onnxport.reference_models.flax) on those inputs, and
* ONNX Runtime on the PyTorch export of the same checkpoint,

within 1e-4 (validate.DEFAULT_ATOL; the real maxima are printed at the end and are ~1e-6: both sides are
float32 and the Flax encoder runs its matmuls at HIGHEST precision). With-past graphs are decoded step by
step (first step with an empty past) and compared with a full native forward at every step.
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import MODEL_TYPES, assert_last_layer_on_first_token_only, max_abs_diff
from onnxport.exporters import ExportError, export, load_spec
from onnxport.exporters import io_spec, rotary_op
from onnxport.exporters.io_spec import make_inputs
from onnxport.exporters.validate import DEFAULT_ATOL, EXAMPLE_SHAPE

pytest.importorskip("jax2onnx", reason="jax2onnx is not installed")
from onnxport.reference_models import flax as F  # noqa: E402  (after the skip: needs jax/flax)

# HF heads exported once per graph: a task whose graph is another's (rerank: text-classification's) is
# exported under that task; sentence-embeddings exports sentence-transformers directories (test_sentence_embeddings.py).
TASK_HEADS = {name: task.head for name, task in io_spec.TASKS.items() if task.is_head_graph}
CASES = [(mt, task, False) for mt in MODEL_TYPES for task in TASK_HEADS] + [
    (mt, "text-generation", True) for mt in MODEL_TYPES
]
# Fresh inputs: every dimension differs from the export example (2 x 8, 2 choices, past 3).
FRESH = dict(batch=3, sequence=13, num_choices=3, seed=7)
VS_NATIVE: dict[str, float] = {}  # family -> largest Flax-export vs native Flax difference
VS_PT: dict[str, float] = {}  # family -> largest Flax-export vs PyTorch-export difference
EXPORT_SECONDS: list[float] = []


def _id(case):
    mt, task, past = case
    return f"{mt}-{task}{'-with-past' if past else ''}"


def _record(table, model_type, diff):
    table[model_type] = max(table.get(model_type, 0.0), diff)


@pytest.fixture(scope="module")
def exported(checkpoint_factory, tmp_path_factory):
    """``exported(model_type, task, with_past, **overrides)`` -> (checkpoint, flax report, pt report), cached."""
    cache = {}
    root = tmp_path_factory.mktemp("flax-exports")

    def get(model_type, task, with_past=False, **overrides):
        key = (model_type, task, with_past, tuple(sorted(overrides.items())))
        if key not in cache:
            checkpoint = checkpoint_factory(model_type, TASK_HEADS[task], **overrides)
            stem = f"{model_type}-{task}-{int(with_past)}-{len(cache)}"
            start = time.perf_counter()
            flax_report = export(checkpoint, root / f"{stem}-flax", framework="flax", task=task, with_past=with_past)
            EXPORT_SECONDS.append(time.perf_counter() - start)
            # The PyTorch export is the cross-framework reference; its own validation lives in test_export_pt.py.
            pt_report = export(checkpoint, root / f"{stem}-pt", framework="pt", task=task, with_past=with_past,
                               validate=False)
            cache[key] = (checkpoint, flax_report, pt_report)
        return cache[key]

    yield get
    if VS_NATIVE:
        print("\nlargest abs diff per family: Flax export vs native Flax | Flax export vs PyTorch export")
        for family in sorted(VS_NATIVE):
            print(f"  {family:<22} {VS_NATIVE[family]:.3e} | {VS_PT.get(family, float('nan')):.3e}")
    if EXPORT_SECONDS:
        print(f"Flax export seconds (tiny models; the first includes importing jax2onnx's plugins): "
              f"first {EXPORT_SECONDS[0]:.1f}, median {float(np.median(EXPORT_SECONDS)):.1f}")


@pytest.fixture(scope="module")
def native():
    """``native(model_type, head, checkpoint)`` -> the Flax reference model, cached."""
    cache = {}

    def get(model_type, head, checkpoint, **overrides):
        key = (model_type, head, checkpoint, tuple(sorted(overrides.items())))
        if key not in cache:
            if head == "ForCausalLM":
                overrides.setdefault("is_decoder", True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[key] = F.model_class(model_type, head).from_pretrained(checkpoint, **overrides)
        return cache[key]

    return get


def _session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _run(session, spec, feeds):
    return dict(zip(spec.output_names, session.run(spec.output_names, {n: feeds[n] for n in spec.input_names})))


def _native_outputs(model, spec, feeds):
    """The Flax model's own call on an io-spec input dict (ids as int32, JAX's default integer type)."""
    kwargs = {k: (v.astype(np.int32) if v.dtype == np.int64 else v) for k, v in feeds.items()}
    past = [(kwargs.pop(k), kwargs.pop(v)) for k, v in spec.past_names()]
    if spec.with_past:
        kwargs.update(past_key_values=tuple(past), use_cache=True)
    out = model(**kwargs)
    result = {}
    for name in spec.output_names:
        if name.startswith("present."):
            _, layer, kind = name.split(".")
            result[name] = np.asarray(out.past_key_values[int(layer)][0 if kind == "key" else 1])
        else:
            result[name] = np.asarray(getattr(out, name))
    return result


# ----------------------------------------------------------------------------- parity matrix
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_flax_export_matches_native_and_pt_export(exported, native, case):
    model_type, task, with_past = case
    checkpoint, report, pt_report = exported(model_type, task, with_past)
    assert report.validation.passed and report.validation.max_abs_diff <= DEFAULT_ATOL
    spec = load_spec(report.out_dir)
    assert spec == pt_report.spec  # one io spec for both front ends
    flax_session, pt_session = _session(report.model_path), _session(pt_report.model_path)
    model = native(model_type, TASK_HEADS[task], checkpoint)
    limit = spec.extra["max_sequence_length"]
    past = 6 if with_past else 0
    fresh = make_inputs(spec, FRESH["batch"], FRESH["sequence"], past=past, num_choices=FRESH["num_choices"],
                        seed=FRESH["seed"])
    assert fresh["attention_mask"].min() == 0  # padding is exercised
    longest = make_inputs(spec, 1, limit - past, past=past, num_choices=2, seed=8, pad=False)
    cases = {"fresh": fresh, "longest": longest}
    if with_past:
        first = make_inputs(spec, 2, 7, past=0, seed=9)
        first.update(io_spec.empty_past(spec, 2))
        cases["empty-past"] = first
    for label, feeds in cases.items():
        got = _run(flax_session, spec, feeds)
        want = _native_outputs(model, spec, feeds)
        other = _run(pt_session, spec, feeds)
        for name in spec.output_names:
            diff = max_abs_diff(got[name], want[name])
            _record(VS_NATIVE, model_type, diff)
            assert diff <= DEFAULT_ATOL, f"{label} {name} vs native Flax: {diff:.3e}"
            diff = max_abs_diff(got[name], other[name])
            _record(VS_PT, model_type, diff)
            assert diff <= DEFAULT_ATOL, f"{label} {name} vs PyTorch export: {diff:.3e}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_graph_signature_is_the_io_spec(exported, case):
    """int64 ids, float32 caches, dimension names exactly the io spec's; opset 17; no training ops."""
    _, report, _ = exported(*case)
    model = onnx.load(report.model_path)
    spec = report.spec
    for values, tensors in ((model.graph.input, spec.inputs), (model.graph.output, spec.outputs)):
        assert [v.name for v in values] == [t.name for t in tensors]
        for value, tensor in zip(values, tensors):
            ttype = value.type.tensor_type
            assert ttype.elem_type == onnx.helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype)), value.name
            dims = tuple(d.dim_param if d.dim_param else d.dim_value for d in ttype.shape.dim)
            assert dims == tensor.shape, value.name
    want_opsets = {("", 17), ("onnxport", 1)}  # the attention op in every family, the rotary op in RoFormer
    assert {(o.domain, o.version) for o in model.opset_import} == want_opsets
    assert not {n.op_type for n in model.graph.node} & {"Dropout", "TrainingDropout"}
    meta = json.load(open(os.path.join(report.out_dir, "onnxport.json")))
    assert meta["framework"] == "flax" and {"jax", "flax", "jax2onnx", "onnxruntime"} <= set(meta["versions"])


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_with_past_decoding_matches_full_native_forward(exported, native, model_type):
    """Prompt with an empty past, then single-token steps through ORT == the full native Flax forward (and the PT export)."""
    checkpoint, report, pt_report = exported(model_type, "text-generation", True)
    spec = load_spec(report.out_dir)
    session, pt_session = _session(report.model_path), _session(pt_report.model_path)
    model = native(model_type, "ForCausalLM", checkpoint)
    rng = np.random.default_rng(3)
    batch, prompt, steps = 2, 5, 4
    ids = rng.integers(3, spec.extra["vocab_size"], size=(batch, prompt + steps), dtype=np.int64)
    types = np.zeros_like(ids)
    past = pt_past = io_spec.empty_past(spec, batch)
    # One full causal forward (no padding): position t's logits depend on tokens <= t only, so its rows
    # start:stop equal a forward over the prefix ids[:, :stop] (one compile instead of one per step).
    full = {"input_ids": ids.astype(np.int32)}
    if "token_type_ids" in spec.input_names:
        full["token_type_ids"] = types.astype(np.int32)
    full_logits = np.asarray(model(**full, use_cache=False).logits)
    start = 0
    for length in [prompt] + [1] * steps:
        stop = start + length
        feeds = {"input_ids": ids[:, start:stop], "attention_mask": np.ones((batch, stop), np.int64)}
        if "token_type_ids" in spec.input_names:
            feeds["token_type_ids"] = types[:, start:stop]
        result = _run(session, spec, {**feeds, **past})
        pt_result = _run(pt_session, spec, {**feeds, **pt_past})
        assert result["present.0.key"].shape[2] == stop
        want = full_logits[:, start:stop]
        diff = max_abs_diff(result["logits"], want)
        _record(VS_NATIVE, model_type, diff)
        assert diff <= DEFAULT_ATOL, f"step ending at {stop} vs native: {diff:.3e}"
        for name in spec.output_names:
            diff = max_abs_diff(result[name], pt_result[name])
            _record(VS_PT, model_type, diff)
            assert diff <= DEFAULT_ATOL, f"step ending at {stop}, {name} vs PyTorch export: {diff:.3e}"
        past, pt_past = io_spec.past_from_present(spec, result), io_spec.past_from_present(spec, pt_result)
        start = stop


def test_relative_positions_with_past(exported, native):
    """relative_key_query scores use query positions past..past+q-1; the export keeps them dynamic."""
    checkpoint, report, pt_report = exported("roberta-prelayernorm", "text-generation", True,
                                             position_embedding_type="relative_key_query")
    assert report.validation.passed  # fresh past (5) and empty past, vs the native Flax model
    spec = report.spec
    model = native("roberta-prelayernorm", "ForCausalLM", checkpoint)
    feeds = make_inputs(spec, 2, 6, past=0, seed=4, pad=False)
    feeds.update(io_spec.empty_past(spec, 2))
    got = _run(_session(report.model_path), spec, feeds)
    prompt = {k: v[:, :4] for k, v in feeds.items() if not k.startswith("past")}
    prompt.update(io_spec.empty_past(spec, 2))
    step = _run(_session(report.model_path), spec, prompt)
    # token types are a graph input (type_vocab_size 2) and make_inputs gives non-zero ones: feed them everywhere
    step_feeds = {"input_ids": feeds["input_ids"][:, 4:], "attention_mask": feeds["attention_mask"],
                  "token_type_ids": feeds["token_type_ids"][:, 4:], **io_spec.past_from_present(spec, step)}
    stepped = _run(_session(report.model_path), spec, step_feeds)
    want = np.asarray(model(input_ids=feeds["input_ids"].astype(np.int32), token_type_ids=feeds["token_type_ids"],
                            use_cache=False).logits)
    assert max_abs_diff(got["logits"], want) <= DEFAULT_ATOL
    # a 2-token step after a 4-token prompt: correct only with per-query relative positions
    assert max_abs_diff(stepped["logits"], want[:, 4:]) <= DEFAULT_ATOL
    other = _run(_session(pt_report.model_path), spec, step_feeds)
    assert max_abs_diff(stepped["logits"], other["logits"]) <= DEFAULT_ATOL


# ----------------------------------------------------------------------------- the rotary op
@pytest.mark.parametrize("task,with_past", [("feature-extraction", False), ("text-generation", True)])
def test_roformer_one_custom_node_per_rotary_application(exported, task, with_past):
    _, report, pt_report = exported("roformer", task, with_past)
    model = onnx.load(report.model_path)
    nodes = rotary_op.rotary_nodes(model)
    assert len(nodes) == 2 * 2  # queries and keys of 2 layers
    assert len(nodes) == len(rotary_op.rotary_nodes(onnx.load(pt_report.model_path)))
    assert [(f.domain, f.name) for f in model.functions] == [("onnxport", "RotaryEmbedding"), ("onnxport", "Attention")]
    # (x, cos, sin): x comes from the head split, cos/sin are shared by every node
    assert len({tuple(n.input[1:]) for n in nodes}) == 1
    assert not [n for n in model.graph.node if n.op_type == "Neg"]  # no rotate_half left outside the nodes


def test_rotary_value_gives_three_nodes_per_layer(exported, native):
    checkpoint, report, pt_report = exported("roformer", "feature-extraction", False, rotary_value=True)
    model = onnx.load(report.model_path)
    assert len(rotary_op.rotary_nodes(model)) == 3 * 2
    spec = report.spec
    feeds = make_inputs(spec, 2, 10, seed=5)
    got = _run(_session(report.model_path), spec, feeds)["last_hidden_state"]
    want = _native_outputs(native("roformer", "Model", checkpoint), spec, feeds)
    assert max_abs_diff(got, want["last_hidden_state"]) <= DEFAULT_ATOL
    assert max_abs_diff(got, _run(_session(pt_report.model_path), spec, feeds)["last_hidden_state"]) <= DEFAULT_ATOL


def test_roformer_runs_in_onnx_reference(exported):
    from onnx.reference import ReferenceEvaluator

    _, report, _ = exported("roformer", "text-generation", True)
    spec = report.spec
    feeds = make_inputs(spec, 2, 4, past=3, seed=11)
    want = _session(report.model_path).run(None, feeds)
    got = ReferenceEvaluator(report.model_path).run(None, feeds)
    for name, a, b in zip(spec.output_names, got, want):
        assert max_abs_diff(a, b) <= 1e-5, name


def test_fused_contrib_lowering_equals_function(exported):
    _, report, _ = exported("roformer", "text-generation", True)
    spec = report.spec
    fused = rotary_op.lower_to_contrib(onnx.load(report.model_path))
    assert not rotary_op.rotary_nodes(fused)
    a, b = _session(report.model_path), _session(fused.SerializeToString())
    for past in (0, 6):
        feeds = make_inputs(spec, 3, 5, past=past, seed=past)
        for name, x, y in zip(spec.output_names, a.run(None, feeds), b.run(None, feeds)):
            assert max_abs_diff(x, y) <= 1e-5, (past, name)


def test_rotary_patch_is_scoped(exported):
    """The rotary op is only in force while converting: the encoder's function and the trace options are back."""
    from onnxport.reference_models.flax import encoder
    from onnxport.reference_models.tracing import TraceOptions, trace_options

    original = encoder.apply_rotary
    exported("roformer", "fill-mask")
    assert encoder.apply_rotary is original
    assert trace_options() == TraceOptions()


# ----------------------------------------------------------------------------- artifact
def test_weights_named_and_stored_once(exported):
    checkpoint, report, _ = exported("xlm-roberta", "fill-mask")
    model = onnx.load(report.model_path)
    names = [i.name for i in model.graph.initializer]
    assert len(set(names)) == len(names)
    big = [i.name for i in model.graph.initializer if sorted(i.dims) == [32, 99]]
    assert big == ["roberta.embeddings.word_embeddings.weight"]  # the tied LM decoder reuses it
    assert "roberta.encoder.layer.0.attention.self.query.kernel" in names  # Flax (in, out) layout, Flax name


def test_export_is_deterministic(checkpoint_factory, tmp_path):
    checkpoint = checkpoint_factory("roformer", "ForCausalLM")
    first = export(checkpoint, tmp_path / "a", framework="flax", task="text-generation", with_past=True,
                   validate=False)
    second = export(checkpoint, tmp_path / "b", framework="flax", task="text-generation", with_past=True,
                    validate=False)
    with open(first.model_path, "rb") as a, open(second.model_path, "rb") as b:
        assert a.read() == b.read()


def test_opset_18(checkpoint_factory, tmp_path):
    report = export(checkpoint_factory("roformer", "ForSequenceClassification"), tmp_path / "o18",
                    framework="flax", task="text-classification", opset=18)
    assert report.validation.passed
    assert {(o.domain, o.version) for o in onnx.load(report.model_path).opset_import} == {("", 18), ("onnxport", 1)}


# ----------------------------------------------------------------------------- errors and CLI
def test_error_messages(checkpoint_factory, tmp_path):
    checkpoint = checkpoint_factory("xlm-roberta", "ForMaskedLM")
    with pytest.raises(ExportError, match="Flax exporter writes opsets 17..23"):
        export(checkpoint, tmp_path / "a", framework="flax", task="fill-mask", opset=14)
    with pytest.raises(ExportError, match="no weights for .*classifier"):
        export(checkpoint, tmp_path / "b", framework="flax", task="text-classification")
    report = export(checkpoint, tmp_path / "c", framework="flax", task="text-classification",
                    allow_missing_weights=True, validate=False)
    assert report.spec.output_names == ["logits"]


def test_feature_extraction_from_mlm_checkpoint(checkpoint_factory, tmp_path):
    """Only the pooler is missing from an MLM checkpoint: left out of the graph, as in the PyTorch front end."""
    report = export(checkpoint_factory("xlm-roberta", "ForMaskedLM"), tmp_path / "fe", framework="flax",
                    task="feature-extraction")
    assert report.validation.passed and report.spec.output_names == ["last_hidden_state"]


def test_cli_export(checkpoint_factory, tmp_path, capsys):
    from onnxport.cli import main

    checkpoint = checkpoint_factory("roberta-prelayernorm", "ForQuestionAnswering")
    out = str(tmp_path / "cli")
    assert main(["export", checkpoint, out, "--framework", "flax", "--task", "question-answering"]) == 0
    printed = capsys.readouterr().out
    assert "start_logits" in printed and "max abs diff" in printed
    meta = json.load(open(os.path.join(out, "onnxport.json")))
    assert meta["framework"] == "flax" and meta["validation"]["passed"]
    assert EXAMPLE_SHAPE["sequence"] != FRESH["sequence"]


def test_rotary_primitive_computes_apply_rotary():
    """Outside conversion the primitive still computes the encoder's rotary (eager and under jit)."""
    import jax

    from onnxport.exporters import flax as flax_front_end
    from onnxport.reference_models.flax.encoder import apply_rotary

    primitive = flax_front_end._rotary_primitive()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 8)).astype(np.float32)
    angles = rng.standard_normal((2, 1, 5, 4)).astype(np.float32) * 3
    sin, cos = np.sin(angles), np.cos(angles)
    want = np.asarray(apply_rotary(x, sin, cos))
    assert max_abs_diff(primitive.bind(x, cos, sin), want) <= 1e-6
    assert max_abs_diff(jax.jit(primitive.bind)(x, cos, sin), want) <= 1e-6


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_text_classification_last_layer_works_on_the_first_token_only(exported, model_type):
    """As the PyTorch front end: the classifier reads token 0 only, so the last layer runs for it alone
    (validation, against the full native model, is in the export test above)."""
    def export_of(task):
        _, report, _ = exported(model_type, task)
        return report, report.model_path

    assert_last_layer_on_first_token_only(export_of, FRESH["batch"], FRESH["sequence"], FRESH["seed"])
