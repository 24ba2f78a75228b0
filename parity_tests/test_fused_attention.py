"""Attention as one ``onnxport.Attention`` node per attention, lowered at load to ONNX Runtime's
``com.microsoft.MultiHeadAttention`` (``artifact/attention_op.py``).

* The op alone: its ONNX function body (stock ONNX Runtime, ``onnx.reference``) and the lowered kernel equal the
  formula computed in numpy (float64) on key-padding, causal, all-zero masks, one query row, and keys longer
  than queries (a past), within 1e-5.
* Every family x task x front end (PyTorch here; TensorFlow and Flax ``slow`` except one decoder case each):
  the export holds one node per layer (two with cross-attention), the lowered graph as many
  MultiHeadAttention nodes and no Softmax; the runtime's default (fused) model, the graph as written
  (``fuse_attention=False``) and transformers 4.57 (PyTorch, the independent reference) agree within 1e-4 on
  a padded batch with a second segment (pairs), an unpadded batch of one (the kernel's flash path) and the
  longest input; decoders step through the cache; the export's own validation ran the fused form too.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from conftest import MODEL_TYPES, hf_class, max_abs_diff
from onnxport.artifact import attention_op
from onnxport.artifact.io_spec import TASKS, empty_past, make_inputs, past_from_present
from onnxport.artifact.layout import model_path
from onnxport.configs import AutoConfig
from onnxport.exporters import export, load_spec
from onnxport.exporters.validate import DEFAULT_ATOL
from onnxport.runtime.models import load_model

MIN = np.finfo(np.float32).min


# ----------------------------------------------------------------------------- the op alone
def _op_model(num_heads: int, head_dim: int, opset: int = 17, mask_shape=("mb", 1, "ms", "l")) -> onnx.ModelProto:
    value = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    node = attention_op.make_node("q", "k", "v", "m", "y", num_heads=num_heads, scale=head_dim ** -0.5)
    graph = helper.make_graph(
        [node], "attention",
        [value("q", ["b", num_heads, "s", head_dim]), value("k", ["b", num_heads, "l", head_dim]),
         value("v", ["b", num_heads, "l", head_dim]), value("m", list(mask_shape))],
        [value("y", ["b", "s", num_heads * head_dim])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return attention_op.attach_function(model)


def _formula(q, k, v, mask, scale):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    scores = q @ k.transpose(0, 1, 3, 2) * scale + mask.astype(np.float64)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3)
    return context.reshape(context.shape[0], context.shape[1], -1)


def _masks(batch: int, rows: int, keys: int) -> dict[str, np.ndarray]:
    padded = np.zeros((batch, 1, 1, keys), np.float32)
    padded[1:, ..., keys - 3:] = MIN
    past = keys - rows
    causal = np.where(np.arange(keys)[None, :] <= past + np.arange(rows)[:, None], 0, MIN).astype(np.float32)
    return {"none": np.zeros((batch, 1, 1, keys), np.float32), "padded": padded,
            "causal": np.broadcast_to(causal, (batch, 1, rows, keys)).copy()}


@pytest.mark.parametrize("rows,keys", [(9, 9), (1, 9), (4, 11)], ids=["self", "one-row", "past"])
@pytest.mark.parametrize("form", ["attention_bias", "key_padding"])
def test_function_body_reference_and_kernel_equal_the_formula(rows, keys, form):
    """Each mask through the function body (ORT, onnx.reference) and the lowered kernel: a mask of static shape
    (batch, 1, 1, keys) takes the kernel's key-padding form, any other its attention_bias form."""
    heads, head_dim, batch = 3, 8, 2
    key_padding = form == "key_padding"
    model = _op_model(heads, head_dim, mask_shape=("b", 1, 1, "l") if key_padding else ("mb", 1, "ms", "l"))
    onnx.checker.check_model(model, full_check=True)
    assert attention_op.key_padding_biases(model) == ({"m"} if key_padding else set())
    lowered = attention_op.lower_to_contrib(model)
    assert [n.op_type for n in lowered.graph.node].count("If") == 1 and not attention_op.attention_nodes(lowered)
    branch = [helper.get_attribute_value(a) for n in lowered.graph.node if n.op_type == "If" for a in n.attribute
              if a.name == "else_branch"][0].node[-1]
    assert branch.op_type == "MultiHeadAttention" and len(branch.input) == (5 if key_padding else 6)
    sessions = {"function": ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]),
                "kernel": ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])}
    reference = ReferenceEvaluator(model)
    rng = np.random.default_rng(rows * 100 + keys)
    q = rng.standard_normal((batch, heads, rows, head_dim)).astype(np.float32)
    k, v = (rng.standard_normal((batch, heads, keys, head_dim)).astype(np.float32) for _ in range(2))
    masks = _masks(batch, rows, keys)
    if key_padding:
        del masks["causal"]
        masks["all keys masked"] = np.full((batch, 1, 1, keys), MIN, np.float32)  # uniform, as the formula
    for name, mask in masks.items():
        feeds = {"q": q, "k": k, "v": v, "m": mask}
        want = _formula(q, k, v, mask, head_dim ** -0.5)
        got = {label: s.run(None, feeds)[0] for label, s in sessions.items()}
        got["onnx.reference"] = reference.run(None, feeds)[0]
        for label, y in got.items():
            assert y.shape == (batch, rows, heads * head_dim)
            assert max_abs_diff(y, want) <= 1e-5, f"{label} / {name} mask"


def test_lowering_is_in_place_free_and_keeps_the_domain_for_rotary():
    model = _op_model(2, 4)
    before = model.SerializeToString()
    lowered = attention_op.lower_to_contrib(model)
    assert model.SerializeToString() == before  # a copy unless in_place
    assert {i.domain for i in lowered.opset_import} == {"", "com.microsoft"}
    assert not lowered.functions
    assert attention_op.lower_to_contrib(model, in_place=True) is model


# ----------------------------------------------------------------------------- exports
FAST_DECODER = ("roformer", "text-generation", True)
# every head graph (rerank is text-classification's graph; sentence-embeddings: test_sentence_embeddings.py)
CASES = [(mt, task, False) for mt in MODEL_TYPES for task, spec in TASKS.items() if spec.is_head_graph] + [
    (mt, "text-generation", True) for mt in MODEL_TYPES]


def _params():
    params = []
    for framework in ("pt", "tf", "flax"):
        for case in CASES:
            slow = framework != "pt" and case != FAST_DECODER
            params.append(pytest.param(framework, *case, marks=pytest.mark.slow if slow else (),
                                       id=f"{framework}-{case[0]}-{case[1]}{'-past' if case[2] else ''}"))
    return params


@pytest.fixture(scope="module")
def exported(checkpoint_factory, tmp_path_factory):
    cache = {}
    root = tmp_path_factory.mktemp("fused-attention")

    def get(framework, model_type, task, with_past=False, **overrides):
        key = (framework, model_type, task, with_past, tuple(sorted(overrides.items())))
        if key not in cache:
            head = TASKS[task].head
            if head == "ForCausalLM":
                overrides = {"is_decoder": True, **overrides}
            checkpoint = checkpoint_factory(model_type, head, **overrides)
            out = root / f"{framework}-{model_type}-{task}-{int(with_past)}-{len(cache)}"
            report = export(checkpoint, out, framework=framework, task=task, with_past=with_past)
            cache[key] = (checkpoint, str(out), report)
        return cache[key]

    return get


def _hf(model_type, task, checkpoint):
    head = TASKS[task].head
    overrides = {"is_decoder": True} if head == "ForCausalLM" else {}
    return hf_class(model_type, head).from_pretrained(checkpoint, attn_implementation="eager", **overrides).eval()


def _hf_outputs(model, spec, feeds):
    kwargs = {k: torch.from_numpy(v) for k, v in feeds.items() if not k.startswith("past_key_values")}
    with torch.no_grad():
        out = model(**kwargs, return_dict=True)
    return {name: getattr(out, name).numpy() for name in spec.output_names if not name.startswith("present.")}


def _check_counts(out: str, cross: bool) -> None:
    graph = onnx.load(model_path(out))
    layers = AutoConfig.from_pretrained(out).num_hidden_layers
    nodes = attention_op.attention_nodes(graph)
    assert len(nodes) == layers * (2 if cross else 1)
    lowered = attention_op.lower_custom_ops(graph)
    ops = [n.op_type for n in lowered.graph.node]
    kernels = [g.node[-1].op_type for n in lowered.graph.node if n.op_type == "If"
               for g in (helper.get_attribute_value(a) for a in n.attribute)]
    assert ops.count("If") == len(nodes) and kernels == ["MultiHeadAttention"] * (2 * len(nodes))
    assert "Softmax" not in ops and not any(n.domain == attention_op.DOMAIN for n in lowered.graph.node)


def _run(model, feeds):
    return dict(zip(model.spec.output_names, model.session.run(None, feeds)))


@pytest.mark.parametrize("framework,model_type,task,with_past", _params())
def test_fused_equals_unfused_and_transformers(exported, framework, model_type, task, with_past):
    checkpoint, out, report = exported(framework, model_type, task, with_past)
    cases = {r.case for r in report.validation.rows}
    assert report.validation.passed and {"single fused", "fresh fused", "longest fused"} <= cases
    _check_counts(out, cross=False)
    spec = load_spec(out)
    fused = load_model(out, provider="cpu", load_tokenizer=False)
    unfused = load_model(out, provider="cpu", load_tokenizer=False, fuse_attention=False)
    hf = _hf(model_type, task, checkpoint)
    if with_past:
        _decode(spec, fused, unfused, hf)
        return
    padded = make_inputs(spec, 3, 13, num_choices=3, seed=7)
    assert padded["attention_mask"].min() == 0
    if "token_type_ids" in padded and spec.type_vocab_size > 1:
        assert padded["token_type_ids"].max() == 1  # the second segment of pairs
    single = make_inputs(spec, 1, 11, num_choices=2, seed=8, pad=False)
    longest = make_inputs(spec, 2, spec.max_sequence_length, num_choices=2, seed=9)
    for label, feeds in (("padded", padded), ("single", single), ("longest", longest)):
        got, plain, want = _run(fused, feeds), _run(unfused, feeds), _hf_outputs(hf, spec, feeds)
        for name in want:
            assert max_abs_diff(got[name], want[name]) <= DEFAULT_ATOL, f"{label} {name} fused vs transformers"
            assert max_abs_diff(plain[name], want[name]) <= DEFAULT_ATOL, f"{label} {name} unfused vs transformers"
            assert max_abs_diff(got[name], plain[name]) <= DEFAULT_ATOL, f"{label} {name} fused vs unfused"


def _decode(spec, fused, unfused, hf, batch=2, prompt=5, steps=3):
    """Prompt on an empty cache (causal mask: the masked kernel), then one-token steps (a one-row causal mask is
    all zero: the flash path), both models against transformers' full forward at every step."""
    rng = np.random.default_rng(3)
    ids = rng.integers(3, spec.vocab_size, size=(batch, prompt + steps), dtype=np.int64)
    pasts = {"fused": empty_past(spec, batch), "unfused": empty_past(spec, batch)}
    start = 0
    for length in [prompt] + [1] * steps:
        stop = start + length
        want = hf(input_ids=torch.from_numpy(ids[:, :stop]), use_cache=False).logits.detach().numpy()[:, start:stop]
        for label, model in (("fused", fused), ("unfused", unfused)):
            feeds = {"input_ids": ids[:, start:stop], "attention_mask": np.ones((batch, stop), np.int64),
                     **pasts[label]}
            if "token_type_ids" in spec.input_names:
                feeds["token_type_ids"] = np.zeros((batch, length), np.int64)
            result = _run(model, feeds)
            assert max_abs_diff(result["logits"], want) <= DEFAULT_ATOL, f"{label} step ending at {stop}"
            pasts[label] = past_from_present(spec, result)
        start = stop


@pytest.mark.parametrize("framework", [pytest.param(f, marks=() if f == "pt" else pytest.mark.slow)
                                       for f in ("pt", "tf", "flax")])
def test_cross_attention_decoder(exported, framework):
    """Self- and cross-attention both become nodes; encoder states with a padded encoder mask, fused ==
    unfused == transformers."""
    checkpoint, out, report = exported(framework, "xlm-roberta", "text-generation", False, add_cross_attention=True)
    assert report.validation.passed
    _check_counts(out, cross=True)
    spec = load_spec(out)
    feeds = make_inputs(spec, 3, 9, seed=5)
    assert feeds["encoder_attention_mask"].min() == 0
    want = _hf_outputs(_hf("xlm-roberta", "text-generation", checkpoint), spec, feeds)["logits"]
    for fuse in (True, False):
        model = load_model(out, provider="cpu", load_tokenizer=False, fuse_attention=fuse)
        assert max_abs_diff(_run(model, feeds)["logits"], want) <= DEFAULT_ATOL


def test_relative_positions_keep_the_formula(exported):
    """Scores with relative-position terms are not the op's schema: no node, and the export still validates."""
    _, out, report = exported("pt", "xlm-roberta", "feature-extraction", False,
                              position_embedding_type="relative_key")
    assert report.validation.passed
    assert not attention_op.attention_nodes(onnx.load(model_path(out)))


def test_onnx_reference_runs_the_export_as_ort_does(exported):
    """onnx.reference runs the whole RoFormer graph (rotary and attention function bodies) equal to stock ORT."""
    _, out, _ = exported("pt", "roformer", "fill-mask")
    spec = load_spec(out)
    feeds = make_inputs(spec, 2, 7, seed=2)
    model = onnx.load(model_path(out))
    want = ort.InferenceSession(model_path(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ReferenceEvaluator(model).run(None, feeds)
    assert max(max_abs_diff(a, b) for a, b in zip(got, want)) <= 1e-5


def test_fuse_attention_false_serves_the_graph_as_written(exported, tmp_path):
    """What each session really runs (ONNX Runtime's optimized graph, written out): the default holds
    MultiHeadAttention and no Softmax, ``fuse_attention=False`` the reverse; their answers agree."""
    from onnxport.runtime.session import SessionConfig

    _, out, _ = exported("pt", "xlm-roberta", "fill-mask")
    layers = AutoConfig.from_pretrained(out).num_hidden_layers
    feeds = make_inputs(load_spec(out), 2, 8, seed=1)
    outputs, ops = {}, {}
    for fuse in (True, False):
        optimized = str(tmp_path / f"optimized-{fuse}.onnx")
        model = load_model(out, provider="cpu", load_tokenizer=False, fuse_attention=fuse,
                           session_config=SessionConfig(optimized_model_path=optimized))
        outputs[fuse] = _run(model, feeds)["logits"]
        graph = onnx.load(optimized, load_external_data=False)
        ops[fuse] = [n.op_type for n in graph.graph.node]
        ops[fuse] += [m.op_type for n in graph.graph.node if n.op_type == "If" for a in n.attribute
                      for m in helper.get_attribute_value(a).node]
    assert ops[True].count("MultiHeadAttention") == 2 * layers and "Softmax" not in ops[True]
    assert ops[False].count("Softmax") == layers and "MultiHeadAttention" not in ops[False]
    assert max_abs_diff(outputs[True], outputs[False]) <= DEFAULT_ATOL


@pytest.mark.parametrize("provider,lowered", [("cuda", True), ("cpu", True), ("tensorrt", False)])
def test_lowering_by_provider(exported, monkeypatch, provider, lowered):
    """CUDA has the kernel (MultiHeadAttention float/fp16 with attention_bias and key_padding_mask): the graph is
    lowered for it as for CPU (provider selection mocked: no GPU here); TensorRT runs the function bodies."""
    from onnxport.runtime import models
    from onnxport.runtime.session import SessionConfig

    _, out, _ = exported("pt", "xlm-roberta", "fill-mask")
    monkeypatch.setattr(models, "select_providers", lambda config: (provider, [], {}))
    path = model_path(out)
    graph = onnx.load(path, load_external_data=False)
    layers = len(attention_op.attention_nodes(graph))
    source = models._maybe_lower(graph, path, provider, SessionConfig(), rotary=False, attention=True)
    if not lowered:
        assert source == path
        return
    lowered_graph = onnx.load_from_string(source)
    assert [n.op_type for n in lowered_graph.graph.node].count("If") == layers
    assert not attention_op.attention_nodes(lowered_graph)
    assert models._maybe_lower(onnx.load(path, load_external_data=False), path, provider, SessionConfig(),
                               rotary=False, attention=False) == path
