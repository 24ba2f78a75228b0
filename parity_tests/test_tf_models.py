"""onnxport's 21 TensorFlow classes against transformers' PyTorch classes on the same checkpoint.

The reference is transformers' PyTorch implementation (eager attention) loading the tiny random
checkpoint that ``checkpoint_factory`` writes; onnxport's own PyTorch classes and transformers'
TF classes (where they implement the feature) are compared too. Every output field is compared:
logits, loss, hidden states, attentions, cross-attentions and present key/values.

Tolerances (fp32, absolute):
- ``TOL = 1e-5`` for TF vs PyTorch (observed: a few 1e-6 on logits of size ~10, from
  different summation orders in the GEMMs).
- ``GRAPH_TOL = 1e-5`` for ``tf.function`` / XLA vs eager TF. Graph mode is not bit-identical to
  eager because grappler fuses ops (e.g. MatMul + BiasAdd) and reorders float sums; with the
  meta-optimizer disabled the graph reproduces eager exactly. Observed differences: ~2e-6.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from conftest import HEADS, MODEL_TYPES, TINY, hf_class, max_abs_diff, sample_inputs  # noqa: E402

from onnxport import checkpoints  # noqa: E402
from onnxport.configs import AutoConfig  # noqa: E402
from onnxport.reference_models import tf as onnx_tf  # noqa: E402
from onnxport.reference_models.common import InputError  # noqa: E402

try:  # onnxport's own PyTorch classes: a second PyTorch reference when present
    from onnxport.reference_models import pt as onnx_pt
except ImportError:  # pragma: no cover - depends on what has landed
    onnx_pt = None

TOL = 1e-5
GRAPH_TOL = 1e-5


# ----------------------------------------------------------------------------- helpers
def head_inputs(model_type: str, head: str, batch: int = 3, seq: int = 9, seed: int = 1) -> dict[str, np.ndarray]:
    """Padded inputs plus the head's labels (with ignored / out-of-range entries to exercise the loss)."""
    rng = np.random.default_rng(seed + 100)
    inputs = sample_inputs(model_type, batch, seq, seed)
    if head == "ForMultipleChoice":
        other = sample_inputs(model_type, batch, seq, seed + 1)
        inputs = {k: np.stack([inputs[k], other[k]], axis=1) for k in inputs}
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if head == "ForCausalLM":
        inputs["labels"] = np.where(mask == 1, ids, -100)
    elif head == "ForMaskedLM":
        labels = np.where(rng.random(ids.shape) < 0.5, ids, -100)
        labels[0, 0] = ids[0, 0]
        inputs["labels"] = labels
    elif head in ("ForSequenceClassification", "ForMultipleChoice"):
        inputs["labels"] = rng.integers(0, 2, size=(batch,))
    elif head == "ForTokenClassification":
        inputs["labels"] = np.where(mask == 1, rng.integers(0, 2, size=ids.shape), -100)
    elif head == "ForQuestionAnswering":
        start = rng.integers(0, seq, size=(batch,))
        start[-1] = seq + 5  # outside the sequence: clamped to seq and ignored
        inputs["start_positions"] = start
        inputs["end_positions"] = np.minimum(start + 1, seq - 1)
    return inputs


def _numpy(value):
    """torch / TF tensors (and nests of them, and transformers' caches) as numpy."""
    if value is None:
        return None
    if hasattr(value, "to_legacy_cache"):  # transformers' EncoderDecoderCache
        value = value.to_legacy_cache()
    if isinstance(value, (tuple, list)):
        return tuple(_numpy(v) for v in value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy"):
        return value.numpy()
    return np.asarray(value)


def to_numpy(output) -> dict:
    return {k: _numpy(v) for k, v in output.items()}


def run_torch(model, inputs: dict, **flags) -> dict:
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items() if v is not None}, **flags)
    out = to_numpy(out)
    if "labels" in inputs and "past_key_values" in out and type(model).__name__ == "RoFormerForCausalLM":
        # transformers' RoBERTa heads drop the cache when labels are given, its RoFormer head does not;
        # onnxport (PyTorch and TF alike) drops it for every family. Present key/values: test_cached_decoding.
        del out["past_key_values"]
    return out


def _diff(a, b, where: str) -> float:
    if isinstance(b, tuple):
        assert isinstance(a, tuple) and len(a) == len(b), f"{where}: structure {type(a)} vs {len(b)} entries"
        return max([_diff(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b))], default=0.0)
    return max_abs_diff(a, b)


def assert_close(got: dict, expected: dict, tol: float, keys=None) -> float:
    """Same fields, every one within ``tol``; returns the largest difference."""
    if keys is None:
        assert set(got) == set(expected), f"fields differ: {sorted(got)} vs {sorted(expected)}"
        keys = list(expected)
    worst = 0.0
    for key in keys:
        diff = _diff(got[key], expected[key], key)
        assert diff <= tol, f"{key}: max abs diff {diff:.3g} > {tol}"
        worst = max(worst, diff)
    return worst


@pytest.fixture(scope="module")
def models(checkpoint_factory):
    """``models(model_type, head, **config_overrides)`` -> (transformers PT model, onnxport TF model, checkpoint)."""
    cache: dict = {}

    def get(model_type: str, head: str, **overrides):
        key = (model_type, head, json.dumps(overrides, sort_keys=True))
        if key not in cache:
            path = checkpoint_factory(model_type, head, **overrides)
            reference = hf_class(model_type, head).from_pretrained(path, attn_implementation="eager").eval()
            ours = onnx_tf.model_class(model_type, head).from_pretrained(path)
            cache[key] = (reference, ours, path)
        return cache[key]

    return get


ALL_CLASSES = [(m, h) for m in MODEL_TYPES for h in HEADS]
CLASS_IDS = [f"{m}-{h}" for m, h in ALL_CLASSES]


# ----------------------------------------------------------------------------- every class vs PyTorch
@pytest.mark.parametrize("model_type,head", ALL_CLASSES, ids=CLASS_IDS)
def test_matches_pytorch(models, model_type, head):
    reference, ours, path = models(model_type, head)
    inputs = head_inputs(model_type, head)
    flags = dict(output_hidden_states=True, output_attentions=True)
    expected = run_torch(reference, inputs, **flags)
    got = to_numpy(ours(**inputs, **flags))
    assert ("loss" in got) == (head != "Model")
    assert_close(got, expected, TOL)

    # return_dict=False gives the same values as a tuple, in field order (loss first when there is one)
    as_tuple = ours(**inputs, **flags, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(got)
    first = next(iter(got))
    assert max_abs_diff(as_tuple[0].numpy(), got[first]) == 0.0

    if onnx_pt is not None:  # onnxport's PyTorch class on the same checkpoint
        pt_model = onnx_pt.model_class(model_type, head).from_pretrained(path).eval()
        assert_close(got, run_torch(pt_model, inputs, **flags), TOL)


# ----------------------------------------------------------------------------- vs transformers' TF classes
@pytest.mark.parametrize("model_type,head", ALL_CLASSES, ids=CLASS_IDS)
def test_matches_transformers_tf(models, model_type, head):
    try:
        import tf_keras  # noqa: F401  transformers 4.x runs its TF models on tf-keras (Keras 2)
        hf_tf_class = hf_class(model_type, head, "tf")
    except Exception as err:  # pragma: no cover - environment dependent
        pytest.skip(f"transformers' TF classes are unavailable here: {err}")
    if (model_type, head) == ("roformer", "ForCausalLM"):
        pytest.skip("transformers' TFRoFormer ignores is_decoder (no causal mask), so TFRoFormerForCausalLM is not a "
                    "valid reference; this class is compared with the PyTorch classes instead")
    _, ours, path = models(model_type, head)
    reference = hf_tf_class.from_pretrained(path, from_pt=True)
    inputs = {k: v for k, v in head_inputs(model_type, head).items()
              if k not in ("labels", "start_positions", "end_positions")}
    flags = dict(output_hidden_states=True, output_attentions=True)
    expected = to_numpy(reference(**inputs, **flags, training=False))
    got = to_numpy(ours(**inputs, **flags))
    assert_close(got, expected, TOL, keys=list(expected))


# ----------------------------------------------------------------------------- graph mode and XLA
@pytest.mark.parametrize("model_type,head", ALL_CLASSES, ids=CLASS_IDS)
def test_graph_mode_and_xla(models, model_type, head):
    _, ours, _ = models(model_type, head)
    names = list(head_inputs(model_type, head))
    specs = [tf.TensorSpec([None] * np.asarray(v).ndim, tf.int64) for v in head_inputs(model_type, head).values()]

    def forward(*args):
        return ours(**dict(zip(names, args)), output_hidden_states=True, output_attentions=True)

    graph = tf.function(forward, input_signature=specs)
    for batch, seq in ((3, 9), (2, 6)):  # one trace serves every batch size and length
        inputs = head_inputs(model_type, head, batch, seq)
        eager = to_numpy(ours(**inputs, output_hidden_states=True, output_attentions=True))
        assert_close(to_numpy(graph(*[inputs[n] for n in names])), eager, GRAPH_TOL)
    assert graph.experimental_get_tracing_count() == 1

    xla = tf.function(forward, input_signature=specs, jit_compile=True)
    inputs = head_inputs(model_type, head, 2, 7)
    eager = to_numpy(ours(**inputs, output_hidden_states=True, output_attentions=True))
    assert_close(to_numpy(xla(*[inputs[n] for n in names])), eager, GRAPH_TOL)


# ----------------------------------------------------------------------------- decoder use with a cache
CACHE_CASES = [
    ("xlm-roberta", {}),
    ("xlm-roberta", {"position_embedding_type": "relative_key_query"}),
    ("roberta-prelayernorm", {"position_embedding_type": "relative_key"}),
    ("roformer", {"rotary_value": True, "embedding_size": 24}),
]


def _decoder_inputs(model_type: str, batch: int = 2, steps: int = 4):
    rng = np.random.default_rng(7)
    ids = rng.integers(3, TINY["vocab_size"], size=(batch, steps), dtype=np.int64)
    mask = np.ones((batch, steps), dtype=np.int64)
    mask[1, 0] = 0  # a masked prefix token in the second row
    encoder_states = rng.normal(size=(batch, 5, TINY["hidden_size"])).astype(np.float32)
    encoder_mask = np.ones((batch, 5), dtype=np.int64)
    encoder_mask[1, 3:] = 0
    return ids, mask, encoder_states, encoder_mask


@pytest.mark.parametrize("model_type,overrides", CACHE_CASES, ids=[f"{m}-{'-'.join(o) or 'absolute'}" for m, o in CACHE_CASES])
def test_cached_decoding(models, model_type, overrides):
    """1-token steps with past_key_values (self + cross) against transformers, then the cache in graph mode."""
    config = dict(is_decoder=True, add_cross_attention=True, **overrides)
    reference, ours, path = models(model_type, "ForCausalLM", **config)
    pt_model = onnx_pt.model_class(model_type, "ForCausalLM").from_pretrained(path).eval() if onnx_pt else None
    ids, mask, encoder_states, encoder_mask = _decoder_inputs(model_type)
    flags = dict(output_hidden_states=True, output_attentions=True, use_cache=True)
    torch_past = tf_past = pt_past = None
    steps = []
    for t in range(ids.shape[1]):
        step = dict(input_ids=ids[:, t : t + 1], attention_mask=mask[:, : t + 1],
                    encoder_hidden_states=encoder_states, encoder_attention_mask=encoder_mask)
        with torch.no_grad():
            ref_out = reference(**{k: torch.from_numpy(v) for k, v in step.items()}, past_key_values=torch_past, **flags)
        expected = to_numpy(ref_out)
        torch_past = ref_out.past_key_values.to_legacy_cache()
        out = ours(**step, past_key_values=tf_past, **flags)
        got = to_numpy(out)
        assert len(got["past_key_values"][0]) == 4  # self key/value + cross key/value
        assert got["past_key_values"][0][0].shape == (2, TINY["num_attention_heads"], t + 1, 8)
        assert_close(got, expected, TOL)
        if pt_model is not None:  # onnxport's PyTorch class, fed its own cache
            with torch.no_grad():
                pt_out = pt_model(**{k: torch.from_numpy(v) for k, v in step.items()}, past_key_values=pt_past, **flags)
            assert_close(got, to_numpy(pt_out), TOL)
            pt_past = pt_out.past_key_values
        steps.append((step, tf_past, got))
        tf_past = out.past_key_values

    # A multi-token pass without cache gives the same last-step logits, and matches transformers.
    full = dict(input_ids=ids, attention_mask=mask, encoder_hidden_states=encoder_states, encoder_attention_mask=encoder_mask)
    expected = run_torch(reference, full, output_hidden_states=True, output_attentions=True, use_cache=False)
    got = to_numpy(ours(**full, output_hidden_states=True, output_attentions=True, use_cache=False))
    assert_close(got, expected, TOL)
    assert max_abs_diff(got["logits"][:, -1], steps[-1][2]["logits"][:, -1]) <= TOL

    # The exporter's with-past signature: one trace for every past length, also under XLA.
    heads, head_dim, hidden = TINY["num_attention_heads"], 8, TINY["hidden_size"]
    kv = tf.TensorSpec([None, heads, None, head_dim], tf.float32)
    specs = [tf.TensorSpec([None, None], tf.int64), tf.TensorSpec([None, None], tf.int64),
             tf.TensorSpec([None, None, hidden], tf.float32), tf.TensorSpec([None, None], tf.int64),
             tuple((kv, kv, kv, kv) for _ in range(TINY["num_hidden_layers"]))]

    def step_fn(input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask, past):
        out = ours(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=encoder_hidden_states,
                   encoder_attention_mask=encoder_attention_mask, past_key_values=past, use_cache=True)
        return out.logits, out.past_key_values

    for jit in (False, True):
        graph = tf.function(step_fn, input_signature=specs, jit_compile=jit)
        for step, past, eager in steps[1:3]:
            logits, presents = graph(step["input_ids"], step["attention_mask"], step["encoder_hidden_states"],
                                     step["encoder_attention_mask"], past)
            assert max_abs_diff(logits.numpy(), eager["logits"]) <= GRAPH_TOL
            assert _diff(_numpy(presents), eager["past_key_values"], "presents") <= GRAPH_TOL
        assert graph.experimental_get_tracing_count() == 1


# ----------------------------------------------------------------------------- config options
OPTION_CASES = [
    ("xlm-roberta", "ForMaskedLM", {"position_embedding_type": "relative_key"}),
    ("roberta-prelayernorm", "ForTokenClassification", {"position_embedding_type": "relative_key_query"}),
    ("roformer", "ForMaskedLM", {"embedding_size": 24, "rotary_value": True}),
    ("roformer", "ForMultipleChoice", {"embedding_size": 24, "hidden_act": "gelu_new"}),
    ("xlm-roberta", "ForMaskedLM", {"tie_word_embeddings": False}),
    ("roformer", "ForCausalLM", {"tie_word_embeddings": False, "is_decoder": True}),
    ("xlm-roberta", "ForSequenceClassification", {"num_labels": 1}),
    ("roformer", "ForSequenceClassification", {"num_labels": 3, "problem_type": "multi_label_classification"}),
    ("roberta-prelayernorm", "ForSequenceClassification", {"num_labels": 3, "problem_type": "regression",
                                                           "classifier_dropout": 0.3}),
    ("roberta-prelayernorm", "ForQuestionAnswering", {"hidden_act": "relu"}),
]


@pytest.mark.parametrize("model_type,head,overrides", OPTION_CASES,
                         ids=[f"{m}-{h}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for m, h, o in OPTION_CASES])
def test_config_options(models, model_type, head, overrides):
    reference, ours, _ = models(model_type, head, **overrides)
    inputs = head_inputs(model_type, head)
    num_labels = overrides.get("num_labels", 2)
    if overrides.get("problem_type") in ("multi_label_classification", "regression") or num_labels == 1:
        rng = np.random.default_rng(3)
        shape = (3,) if num_labels == 1 else (3, num_labels)
        inputs["labels"] = (rng.random(shape) > 0.5).astype(np.float32) if num_labels > 1 else rng.normal(size=shape).astype(np.float32)
    flags = dict(output_hidden_states=True, output_attentions=True)
    expected = run_torch(reference, inputs, **flags)
    got = to_numpy(ours(**inputs, **flags))
    assert_close(got, expected, TOL)


CALL_CASES = ["head_mask_layers", "head_mask_heads", "inputs_embeds", "position_ids", "mask_3d", "no_mask"]


@pytest.mark.parametrize("case", CALL_CASES)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_call_options(models, model_type, case):
    reference, ours, path = models(model_type, "Model")
    inputs = head_inputs(model_type, "Model")
    rng = np.random.default_rng(11)
    layers, heads = TINY["num_hidden_layers"], TINY["num_attention_heads"]
    if case == "head_mask_layers":
        inputs["head_mask"] = (rng.random((layers, heads)) > 0.3).astype(np.float32)
    elif case == "head_mask_heads":
        inputs["head_mask"] = np.array([1.0, 0.0, 0.5, 1.0], dtype=np.float32)
    elif case == "inputs_embeds":
        width = TINY["hidden_size"]
        inputs["inputs_embeds"] = rng.normal(size=inputs.pop("input_ids").shape + (width,)).astype(np.float32)
    elif case == "position_ids":
        if model_type == "roformer":
            # transformers' RoFormer takes no position_ids: ours with the default rotary positions must match
            # it without them (other positions are checked against onnxport's PyTorch class below).
            ours_out = ours(**inputs, position_ids=np.broadcast_to(np.arange(9), (3, 9)), output_hidden_states=True)
            assert_close(to_numpy(ours_out), run_torch(reference, inputs, output_hidden_states=True), TOL)
            if onnx_pt is None:
                return
            reference = onnx_pt.RoFormerModel.from_pretrained(path).eval()
        inputs["position_ids"] = rng.integers(0, TINY["max_position_embeddings"], size=(3, 9))
    elif case == "mask_3d":
        mask = inputs["attention_mask"]
        inputs["attention_mask"] = np.tril(np.ones((9, 9), dtype=np.int64))[None] * mask[:, None, :]
    elif case == "no_mask":
        del inputs["attention_mask"]
    flags = dict(output_hidden_states=True, output_attentions=True)
    expected = run_torch(reference, inputs, **flags)
    got = to_numpy(ours(**inputs, **flags))
    assert_close(got, expected, TOL)


# ----------------------------------------------------------------------------- checkpoints
def test_save_round_trip_all_classes(models, tmp_path):
    """PT checkpoint -> TF -> save_pretrained: identical tensors and names; transformers loads it."""
    for model_type, head in ALL_CLASSES:
        _, ours, path = models(model_type, head)
        out = tmp_path / f"{model_type}-{head}"
        ours.save_pretrained(out)
        original = checkpoints.load_state_dict(path)
        saved = checkpoints.load_state_dict(str(out))
        assert sorted(saved) == sorted(original), (model_type, head, set(saved) ^ set(original))
        for name, value in original.items():
            assert np.array_equal(saved[name], value), f"{model_type}-{head}: {name} changed"
        with open(out / "config.json") as f:
            assert json.load(f)["architectures"] == [hf_class(model_type, head).__name__]
        _, info = hf_class(model_type, head).from_pretrained(out, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info


def test_reads_pytorch_model_bin(models, tmp_path):
    reference, _, path = models("roformer", "ForMaskedLM")
    reference.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").exists()
    ours = onnx_tf.TFRoFormerForMaskedLM.from_pretrained(tmp_path)
    inputs = head_inputs("roformer", "ForMaskedLM")
    assert_close(to_numpy(ours(**inputs)), run_torch(reference, inputs), TOL)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_random_init_and_export(model_type, tmp_path):
    config = AutoConfig.for_model(model_type, **TINY)
    tf.random.set_seed(0)
    model = onnx_tf.model_class(model_type, "ForMaskedLM")(config)
    state = model.state_dict_numpy()
    prefix = model.family.base_model_prefix
    word = state[f"{prefix}.embeddings.word_embeddings.weight"]
    assert np.all(word[config.pad_token_id] == 0)
    assert abs(word.std() - config.initializer_range) < 0.1 * config.initializer_range
    assert np.all(state[f"{prefix}.embeddings.LayerNorm.weight"] == 1)
    assert np.all(state[f"{prefix}.encoder.layer.0.attention.self.query.bias"] == 0)
    assert np.all(state[f"{model.family.lm_head_prefix}.bias"] == 0)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    model.save_pretrained(tmp_path)
    reference, info = hf_class(model_type, "ForMaskedLM").from_pretrained(tmp_path, output_loading_info=True,
                                                                         attn_implementation="eager")
    assert not info["missing_keys"], info
    inputs = sample_inputs(model_type, 2, 6)
    assert_close(to_numpy(model(**inputs)), run_torch(reference.eval(), inputs), TOL)


# ----------------------------------------------------------------------------- bad input
def _bad_cases(model_type: str):
    good = sample_inputs(model_type, 2, 5)
    too_large = good["input_ids"].copy()
    too_large[1, 2] = TINY["vocab_size"]
    limit = AutoConfig.for_model(model_type, **TINY).max_sequence_length
    too_long = sample_inputs(model_type, 1, limit + 1)
    return {
        "id_too_large": (good | {"input_ids": too_large}, "input_ids must lie"),
        "negative_id": (good | {"input_ids": -good["input_ids"]}, "input_ids must lie"),
        "one_dimensional": ({"input_ids": good["input_ids"][0]}, "add a batch dimension"),
        "too_long": (too_long, "exceeds the model's maximum"),
        "mask_shape": (good | {"attention_mask": good["attention_mask"][:, :4]}, "attention_mask must have shape"),
        "token_type_shape": (good | {"token_type_ids": good["token_type_ids"][:1]}, "token_type_ids must have the shape"),
        "token_type_range": (good | {"token_type_ids": good["token_type_ids"] + 2}, "token_type_ids must lie"),
        "ids_and_embeds": (good | {"inputs_embeds": np.zeros((2, 5, TINY["hidden_size"]), np.float32)}, "both input_ids"),
        "no_ids": ({"attention_mask": good["attention_mask"]}, "either input_ids or inputs_embeds"),
        "head_mask_shape": (good | {"head_mask": np.ones((3, 3), np.float32)}, "head_mask must have shape"),
    }


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_bad_inputs_eager(models, model_type):
    _, ours, path = models(model_type, "Model")
    pt_model = onnx_pt.model_class(model_type, "Model").from_pretrained(path) if onnx_pt is not None else None
    for name, (inputs, message) in _bad_cases(model_type).items():
        with pytest.raises(InputError, match=message) as err:
            ours(**inputs)
        if pt_model is not None:  # the same message as onnxport's PyTorch class
            with pytest.raises(InputError) as pt_err:  # the same type as TF and Flax
                pt_model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
            assert str(pt_err.value) == str(err.value), name
    # decoder cache with the wrong number of layers
    with pytest.raises(InputError, match="past_key_values has 1 layers"):
        kv = np.zeros((2, 4, 3, 8), np.float32)
        ours(input_ids=np.ones((2, 1), np.int64) + 2, past_key_values=((kv, kv),))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_bad_inputs_graph(models, model_type):
    _, ours, _ = models(model_type, "Model")
    # Concrete shapes: the same InputError, raised while tracing.
    concrete = tf.function(lambda ids, mask: ours(input_ids=ids, attention_mask=mask).last_hidden_state,
                           input_signature=[tf.TensorSpec([2, 5], tf.int64), tf.TensorSpec([2, 4], tf.int64)])
    with pytest.raises(InputError, match="attention_mask must have shape"):
        concrete.get_concrete_function()
    # Unknown shapes: value ranges and lengths are checked by graph asserts at run time.
    dynamic = tf.function(lambda ids: ours(input_ids=ids).last_hidden_state,
                          input_signature=[tf.TensorSpec([None, None], tf.int64)])
    good = sample_inputs(model_type, 2, 5)["input_ids"]
    dynamic(good)
    with pytest.raises(tf.errors.InvalidArgumentError, match="input_ids must lie"):
        dynamic(good * 0 + TINY["vocab_size"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="input_ids must lie"):
        dynamic(-good)
    with pytest.raises(tf.errors.InvalidArgumentError, match="exceeds the model maximum"):
        dynamic(np.ones((1, TINY["max_position_embeddings"] + 1), np.int64) * 5)


# ----------------------------------------------------------------------------- calling conventions
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_call_conventions(models, model_type):
    _, ours, _ = models(model_type, "ForSequenceClassification")
    inputs = sample_inputs(model_type, 3, 9)
    by_keyword = ours(**inputs).logits.numpy()
    # Keras style dict, tensors, int32 ids
    as_dict = ours({k: tf.constant(v, tf.int32) for k, v in inputs.items()}).logits.numpy()
    assert max_abs_diff(as_dict, by_keyword) == 0.0
    # transformers' TF positional order: (input_ids, attention_mask, token_type_ids, ...)
    positional = ours(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]).logits.numpy()
    assert max_abs_diff(positional, by_keyword) == 0.0
    names = type(ours).positional_arguments()
    assert names[:3] == ["input_ids", "attention_mask", "token_type_ids"] and names[-1] == "training"
    assert ("position_ids" in names) == (model_type != "roformer")  # as transformers' TF classes
    with pytest.raises(TypeError, match="unexpected"):
        ours(**inputs, not_an_argument=1)
    # training=True turns dropout on; the default is inference
    assert max_abs_diff(ours(**inputs, training=True).logits.numpy(), by_keyword) > 1e-4
    assert max_abs_diff(ours(**inputs, training=False).logits.numpy(), by_keyword) == 0.0
    assert len(ours.trainable_variables) > 0
