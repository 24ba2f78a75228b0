"""Flax reference models vs transformers' PyTorch classes (the independent reference) on one checkpoint.

Every class: logits / hidden states / attentions / pooler / loss; decoders: present key/values, cached
decoding (1-token steps) == full decoding; cross-attention; config options (relative positions, rotary_value,
embedding_size, problem types, head_mask, inputs_embeds, position_ids, untied decoder); jit == no jit;
a jax2onnx export of the with-past forward; checkpoint round trips; bad inputs. Also against transformers' own Flax classes where they exist.

Tolerance: 1e-5 absolute in float32 everywhere. The Flax encoder passes precision=HIGHEST to every
matmul, so no looser bound is needed on CPU (observed differences are ~1e-6).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import HEADS, HF_PREFIX, MODEL_TYPES, hf_class, max_abs_diff, sample_inputs
from onnxport.reference_models import flax as F
from onnxport.reference_models.common import InputError

TOL = 1e-5
# RoFormer runs with embedding_size != hidden_size so embeddings_project and the narrower MLM head are covered.
FAMILY_OVERRIDES = {"xlm-roberta": {}, "roberta-prelayernorm": {}, "roformer": {"embedding_size": 24}}


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def models(checkpoint_factory):
    """``models(model_type, head, **overrides)`` -> (checkpoint_dir, transformers PT model, Flax model), cached."""
    cache = {}

    def get(model_type, head, **overrides):
        key = (model_type, head, tuple(sorted(overrides.items())))
        if key not in cache:
            path = checkpoint_factory(model_type, head, **overrides)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference = hf_class(model_type, head).from_pretrained(path, attn_implementation="eager").eval()
            cache[key] = (path, reference, F.model_class(model_type, head).from_pretrained(path))
        return cache[key]

    return get


def pt_call(model, **kwargs):
    args = {k: (torch.from_numpy(np.asarray(v)) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
    with torch.no_grad():
        return model(**args)


def legacy(past):
    """transformers returns a Cache object; compare its legacy tuple (without empty cross-attention slots)."""
    past = past.to_legacy_cache() if hasattr(past, "to_legacy_cache") else past
    return tuple(tuple(x for x in layer if x is not None) for layer in past)


def assert_close(ours, theirs, what, tol=TOL):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    diff = max_abs_diff(ours, theirs)
    assert diff <= tol, f"{what}: max abs diff {diff:.3e} > {tol}"
    return diff


def assert_tuple_close(ours, theirs, what, tol=TOL):
    assert len(ours) == len(theirs), f"{what}: {len(ours)} entries vs {len(theirs)}"
    return max([assert_close(a, b, f"{what}[{i}]", tol) for i, (a, b) in enumerate(zip(ours, theirs))] or [0.0])


def assert_past_close(ours, theirs, what="past_key_values", tol=TOL):
    theirs = legacy(theirs)
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_tuple_close(a, b, f"{what}[{i}]", tol)


def inputs_for(model_type, head, batch=3, seq=9):
    inputs = sample_inputs(model_type, batch, seq)
    if model_type != "roformer":
        inputs.pop("token_type_ids")  # RoBERTa families: exercise the default (zeros) path
    if head == "ForMultipleChoice":  # two choices: the sample and its reversed batch order
        inputs = {k: np.stack([v, v[::-1]], axis=1) for k, v in inputs.items()}
    return inputs


def labels_for(head, inputs, config):
    ids = inputs["input_ids"]
    batch = ids.shape[0]
    rng = np.random.default_rng(7)
    if head in ("ForCausalLM", "ForMaskedLM"):
        labels = ids.copy()
        labels[inputs["attention_mask"] == 0] = -100
        labels[:, 1] = -100
        return {"labels": labels}
    if head == "ForSequenceClassification":
        return {"labels": rng.integers(0, config.num_labels, size=(batch,))}
    if head == "ForMultipleChoice":
        return {"labels": rng.integers(0, ids.shape[1], size=(batch,))}
    if head == "ForTokenClassification":
        labels = rng.integers(0, config.num_labels, size=ids.shape)
        labels[inputs["attention_mask"] == 0] = -100
        return {"labels": labels}
    if head == "ForQuestionAnswering":
        # The last start position lies outside the sequence: clamped to the ignored index.
        return {"start_positions": np.array([1, 3, 40])[:batch], "end_positions": np.array([2, 5, 6])[:batch]}
    return {}


RESULTS = {}  # family -> largest difference seen, printed at the end with -s


def record(model_type, diff):
    RESULTS[model_type] = max(RESULTS.get(model_type, 0.0), diff)


# ----------------------------------------------------------------------------- every class vs transformers (PyTorch)
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_class_matches_transformers_pytorch(models, model_type, head):
    path, reference, model = models(model_type, head, **FAMILY_OVERRIDES[model_type])
    assert type(model).__name__ == "Flax" + reference.__class__.__name__
    inputs = inputs_for(model_type, head)
    labels = labels_for(head, inputs, model.config)
    flags = dict(output_hidden_states=True, output_attentions=True)
    extra_pt = {"use_cache": False} if head in ("Model", "ForCausalLM") else {}
    ours = model(**inputs, **labels, **flags)
    theirs = pt_call(reference, **inputs, **labels, **flags, **extra_pt)

    diffs = []
    for name in type(ours).field_names:
        if name == "past_key_values":
            continue
        mine, ref = getattr(ours, name), getattr(theirs, name, None)
        assert (mine is None) == (ref is None), f"{name}: present in one output only"
        if mine is None:
            continue
        if isinstance(mine, tuple):
            diffs.append(assert_tuple_close(mine, ref, name))
        else:
            diffs.append(assert_close(mine, ref, name))
    if labels:
        assert ours.loss is not None and np.isfinite(float(ours.loss))
    record(model_type, max(diffs))

    # Also against onnxport's own PyTorch classes on the same checkpoint.
    from onnxport.reference_models import pt as P

    native = P.model_class(model_type, head).from_pretrained(path)
    native_out = pt_call(native, **inputs, **labels)
    main = "start_logits" if head == "ForQuestionAnswering" else "last_hidden_state" if head == "Model" else "logits"
    assert_close(getattr(ours, main), getattr(native_out, main), f"{main} vs onnxport.pt")
    if labels:
        assert_close(ours.loss, native_out.loss, "loss vs onnxport.pt")


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_decoder_presents_match_transformers(models, model_type):
    _, reference, model = models(model_type, "ForCausalLM", **FAMILY_OVERRIDES[model_type])
    inputs = inputs_for(model_type, "ForCausalLM")
    ours = model(**inputs)  # is_decoder=True: use_cache defaults to config.use_cache
    theirs = pt_call(reference, **inputs, use_cache=True)
    assert_close(ours.logits, theirs.logits, "logits")
    assert_past_close(ours.past_key_values, theirs.past_key_values)
    assert ours.past_key_values[0][0].shape == (3, 4, 9, 8)


# ----------------------------------------------------------------------------- cached decoding
DECODING_CASES = [
    ("xlm-roberta", {}),
    ("xlm-roberta", {"position_embedding_type": "relative_key"}),
    ("roberta-prelayernorm", {"position_embedding_type": "relative_key_query"}),
    ("roformer", {"embedding_size": 24}),
    ("roformer", {"rotary_value": True}),
]


@pytest.mark.parametrize("model_type,overrides", DECODING_CASES, ids=lambda x: str(x) if x else "default")
def test_cached_decoding_equals_full_decoding(models, model_type, overrides):
    _, reference, model = models(model_type, "ForCausalLM", **overrides)
    rng = np.random.default_rng(3)
    length = 5
    ids = rng.integers(3, model.config.vocab_size, size=(2, length))
    full = model(ids, use_cache=False)
    # transformers with a cache gives every query the last position in relative scores, so the multi-token
    # reference runs without a cache.
    full_pt = pt_call(reference, input_ids=ids, use_cache=False)
    assert_close(full.logits, full_pt.logits, "full logits")

    # A 2-token prompt into the empty cache, then 1-token steps.
    cache = model.init_cache(batch_size=2, max_length=length)
    assert cache[0][0].shape == (2, 4, 0, 8)
    out = model(ids[:, :2], attention_mask=np.ones((2, 2), np.int64), past_key_values=cache)
    steps = [out.logits]
    for t in range(2, length):
        out = model(ids[:, t : t + 1], attention_mask=np.ones((2, t + 1), np.int64), past_key_values=out.past_key_values)
        steps.append(out.logits)
    assert_close(jnp.concatenate(steps, axis=1), full.logits, "cached vs full")
    assert out.past_key_values[0][0].shape == (2, 4, length, 8)

    # Same 1-token steps in transformers (exact there too for single-token steps).
    past = None
    for t in range(length):
        ref = pt_call(reference, input_ids=ids[:, t : t + 1], past_key_values=past, use_cache=True)
        past = ref.past_key_values
    assert_close(steps[-1][:, -1], ref.logits[:, -1], "last step vs transformers")
    assert_past_close(out.past_key_values, past)
    record(model_type, max_abs_diff(jnp.concatenate(steps, axis=1), full_pt.logits.numpy()))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_cross_attention_decoder(models, model_type):
    overrides = dict(FAMILY_OVERRIDES[model_type], add_cross_attention=True)
    if model_type == "xlm-roberta":
        overrides["position_embedding_type"] = "relative_key"  # self: relative, cross: absolute
    _, reference, model = models(model_type, "ForCausalLM", **overrides)
    rng = np.random.default_rng(5)
    ids = rng.integers(3, model.config.vocab_size, size=(2, 4))
    encoder_states = rng.normal(size=(2, 4, model.config.hidden_size)).astype(np.float32)
    encoder_mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    kwargs = dict(encoder_hidden_states=encoder_states, encoder_attention_mask=encoder_mask)
    ours = model(ids, **kwargs, output_attentions=True, output_hidden_states=True)
    theirs = pt_call(reference, input_ids=ids, **kwargs, output_attentions=True, output_hidden_states=True,
                     use_cache=False)
    assert_close(ours.logits, theirs.logits, "logits")
    assert_tuple_close(ours.cross_attentions, theirs.cross_attentions, "cross_attentions")
    assert_tuple_close(ours.hidden_states, theirs.hidden_states, "hidden_states")
    assert len(ours.past_key_values[0]) == 4  # (key, value, cross_key, cross_value)

    # Cached 1-token steps reuse the cross keys/values.
    out = model(ids[:, :2], **kwargs, past_key_values=model.init_cache(2, 4))
    steps = [out.logits]
    for t in range(2, 4):
        out = model(ids[:, t : t + 1], **kwargs, past_key_values=out.past_key_values)
        steps.append(out.logits)
    assert_close(jnp.concatenate(steps, axis=1), ours.logits, "cached vs full")
    assert_close(out.past_key_values[0][2], ours.past_key_values[0][2], "cross keys")


# ----------------------------------------------------------------------------- config options
OPTION_CASES = [
    # Decoders with relative_key / relative_key_query / rotary_value are in the decoding tests; here bidirectional.
    ("roberta-prelayernorm", "Model", {"position_embedding_type": "relative_key_query"}),
    ("roformer", "ForMaskedLM", {"tie_word_embeddings": False}),
    ("xlm-roberta", "ForMaskedLM", {"tie_word_embeddings": False}),
    ("xlm-roberta", "ForSequenceClassification", {"num_labels": 1}),  # regression
    ("roformer", "ForSequenceClassification", {"num_labels": 3, "problem_type": "multi_label_classification"}),
    ("roberta-prelayernorm", "ForTokenClassification", {"classifier_dropout": 0.3, "hidden_act": "gelu_new"}),
]


@pytest.mark.parametrize("model_type,head,overrides", OPTION_CASES, ids=lambda x: str(x))
def test_config_options(models, model_type, head, overrides):
    _, reference, model = models(model_type, head, **overrides)
    inputs = inputs_for(model_type, head)
    labels = labels_for(head, inputs, model.config)
    if overrides.get("num_labels") == 1:
        labels = {"labels": np.array([0.5, -1.0, 2.0], np.float32)}
    if overrides.get("problem_type") == "multi_label_classification":
        labels = {"labels": (np.random.default_rng(0).random((3, 3)) > 0.5).astype(np.float32)}
    ours = model(**inputs, **labels, output_attentions=True)
    theirs = pt_call(reference, **inputs, **labels, output_attentions=True)
    main = "last_hidden_state" if head == "Model" else "logits"
    record(model_type, assert_close(getattr(ours, main), getattr(theirs, main), main))
    assert_tuple_close(ours.attentions, theirs.attentions, "attentions")
    if labels:
        assert_close(ours.loss, theirs.loss, "loss")
    if overrides.get("tie_word_embeddings") is False:
        assert any(k.endswith("decoder.weight") for k in model.state_dict_numpy())


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_head_mask_inputs_embeds_position_ids(models, model_type):
    _, reference, model = models(model_type, "Model", **FAMILY_OVERRIDES[model_type])
    inputs = sample_inputs(model_type)
    head_mask = np.array([[1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 1.0, 1.0]], np.float32)
    ours = model(**inputs, head_mask=head_mask, output_attentions=True)
    theirs = pt_call(reference, **inputs, head_mask=head_mask, output_attentions=True)
    assert_close(ours.last_hidden_state, theirs.last_hidden_state, "head_mask")
    assert_tuple_close(ours.attentions, theirs.attentions, "head_mask attentions")

    embeds = np.asarray(model.params["embeddings"]["word_embeddings"]["embedding"])[inputs["input_ids"]]
    ours = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    theirs = pt_call(reference, inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    assert_close(ours.last_hidden_state, theirs.last_hidden_state, "inputs_embeds")

    if model_type != "roformer":  # transformers' RoFormerModel takes no position_ids
        position_ids = np.tile(np.arange(2, 11), (3, 1))
        ours = model(**inputs, position_ids=position_ids)
        theirs = pt_call(reference, **inputs, position_ids=position_ids)
        assert_close(ours.last_hidden_state, theirs.last_hidden_state, "position_ids")


# ----------------------------------------------------------------------------- JAX specifics
@pytest.mark.parametrize("model_type", ["xlm-roberta", "roformer"])  # learned positions / rotary
def test_jit_equals_no_jit(models, model_type):
    _, _, model = models(model_type, "ForMaskedLM", **FAMILY_OVERRIDES[model_type])
    inputs = sample_inputs(model_type, batch=2, seq=5)
    jitted = model(**inputs, output_hidden_states=True)
    with jax.disable_jit():
        eager = model(**inputs, output_hidden_states=True)
    assert_close(jitted.logits, eager.logits, "jit vs eager")
    assert_tuple_close(jitted.hidden_states, eager.hidden_states, "hidden_states")

    # A user-level jit over (params, inputs), as jax2onnx traces it: outputs cross the boundary whole.
    fn = jax.jit(lambda params, ids, mask, types: model(ids, attention_mask=mask, token_type_ids=types, params=params))
    out = fn(model.params, inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
    assert type(out).__name__ == "MaskedLMOutput"
    assert_close(out.logits, jitted.logits, "user jit")


def test_jax2onnx_traces_the_with_past_forward(models):
    """The exporter's path: dynamic batch, sequence and past length; ONNX Runtime agrees with the native call."""
    jax2onnx = pytest.importorskip("jax2onnx", reason="jax2onnx is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    _, _, model = models("xlm-roberta", "ForCausalLM", position_embedding_type="relative_key")
    params = model.params

    def forward(ids, mask, k0, v0, k1, v1):
        out = model(ids, attention_mask=mask, params=params, past_key_values=((k0, v0), (k1, v1)))
        return (out.logits,) + tuple(x for layer in out.past_key_values for x in layer)

    batch, seq, past = jax.export.symbolic_shape("B, S, P")
    specs = [jax.ShapeDtypeStruct((batch, seq), jnp.int32), jax.ShapeDtypeStruct((batch, past + seq), jnp.int32)]
    specs += [jax.ShapeDtypeStruct((batch, 4, past, 8), jnp.float32)] * 4
    onnx_model = jax2onnx.to_onnx(forward, specs)
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])

    ids = np.random.default_rng(0).integers(3, 99, size=(2, 6)).astype(np.int32)
    prompt = model(ids[:, :4], past_key_values=model.init_cache(2, 6))
    feeds = [ids[:, 4:], np.ones((2, 6), np.int32)] + [np.asarray(x) for layer in prompt.past_key_values for x in layer]
    got = session.run(None, {i.name: v for i, v in zip(session.get_inputs(), feeds)})
    want = forward(*feeds)
    for a, b in zip(got, want):
        assert_close(a, np.asarray(b), "onnxruntime vs native")
    assert got[1].shape == (2, 4, 6, 8)


def test_jit_compiles_once_per_shape(models):
    _, _, model = models("xlm-roberta", "ForTokenClassification")
    inputs = sample_inputs("xlm-roberta", batch=2, seq=6)
    model(**inputs)
    before = model._jit_forward._cache_size()
    for seed in range(3):
        model(**sample_inputs("xlm-roberta", batch=2, seq=6, seed=seed + 10))
    assert model._jit_forward._cache_size() == before


def test_train_mode_dropout(models):
    _, _, model = models("roformer", "ForSequenceClassification", **FAMILY_OVERRIDES["roformer"])
    assert model.config.hidden_dropout_prob > 0
    inputs = sample_inputs("roformer", batch=2, seq=5)
    a = model(**inputs, train=True, dropout_rng=jax.random.PRNGKey(1)).logits
    b = model(**inputs, train=True, dropout_rng=jax.random.PRNGKey(1)).logits
    c = model(**inputs, train=True, dropout_rng=jax.random.PRNGKey(2)).logits
    d = model(**inputs).logits
    assert max_abs_diff(a, b) == 0.0
    assert max_abs_diff(a, c) > 1e-4 and max_abs_diff(a, d) > 1e-4


def test_return_dict_false(models):
    _, _, model = models("xlm-roberta", "ForCausalLM")
    inputs = sample_inputs("xlm-roberta")
    out = model(**inputs, return_dict=False)
    assert isinstance(out, tuple)
    assert_close(out[0], model(**inputs).logits, "tuple[0]")


# ----------------------------------------------------------------------------- transformers' Flax classes
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_against_transformers_flax(models, model_type):
    try:
        import transformers

        heads = [h for h in HEADS if hasattr(transformers, "Flax" + HF_PREFIX[model_type] + h)]
    except Exception as err:  # pragma: no cover - depends on the installed stack
        pytest.skip(f"transformers' Flax classes are not importable here: {err}")
    for head in ("ForMaskedLM", "ForMultipleChoice"):  # the LM head, the pooler / last-token summary, every layer
        if head not in heads:
            continue
        # transformers' FlaxRoFormer has no embeddings_project, so RoFormer runs with embedding_size == hidden_size here.
        path, _, model = models(model_type, head)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                theirs_model = hf_class(model_type, head, "flax").from_pretrained(path, from_pt=True)
            except Exception as err:  # pragma: no cover
                pytest.skip(f"transformers' Flax {head} does not load with this flax version: {err}")
        inputs = inputs_for(model_type, head)
        # One compiled call instead of op-by-op dispatch (their __call__ is not jitted).
        theirs = jax.jit(lambda params, kw: theirs_model(**kw, params=params, output_hidden_states=True))(
            theirs_model.params, inputs
        )
        ours = model(**inputs, output_hidden_states=True)
        main = "start_logits" if head == "ForQuestionAnswering" else "last_hidden_state" if head == "Model" else "logits"
        assert_close(getattr(ours, main), np.asarray(getattr(theirs, main)), f"{head} {main} vs transformers Flax")
        assert_tuple_close(ours.hidden_states, [np.asarray(h) for h in theirs.hidden_states], "hidden_states")
    assert "ForCausalLM" in heads or model_type == "roformer"  # transformers has no FlaxRoFormerForCausalLM


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_save_pretrained_round_trip(models, model_type, tmp_path):
    path, reference, model = models(model_type, "ForMaskedLM", **FAMILY_OVERRIDES[model_type])
    model.save_pretrained(tmp_path)
    import json

    from onnxport.checkpoints import load_state_dict

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [reference.__class__.__name__]
    saved = load_state_dict(str(tmp_path))
    assert not any(k.endswith(("decoder.weight", "decoder.bias")) for k in saved)  # tied copies left out
    original = load_state_dict(path)
    assert set(saved) == set(original)
    for key in original:
        assert np.array_equal(saved[key], original[key]), key

    inputs = sample_inputs(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded_pt = hf_class(model_type, "ForMaskedLM").from_pretrained(str(tmp_path), attn_implementation="eager")
    assert_close(model(**inputs).logits, pt_call(reloaded_pt.eval(), **inputs).logits, "transformers on our save")
    # A head checkpoint into the base model (prefix stripped).
    base = F.model_class(model_type, "Model").from_pretrained(str(tmp_path))
    assert_tuple_close(base(**inputs, output_hidden_states=True).hidden_states,
                       model(**inputs, output_hidden_states=True).hidden_states, "base from head checkpoint")


def test_random_init_and_state_dict_keys(models):
    _, reference, trained = models("roberta-prelayernorm", "ForMaskedLM")
    config = trained.config
    model = F.FlaxRobertaPreLayerNormForMaskedLM(config, seed=3)
    state = model.state_dict_numpy()
    assert set(state) == set(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert state[key].shape == tuple(value.shape), key
    words = state["roberta_prelayernorm.embeddings.word_embeddings.weight"]
    assert np.all(words[config.pad_token_id] == 0)
    assert abs(words.std() - config.initializer_range) < 0.05 * config.initializer_range + 0.01
    assert np.all(state["roberta_prelayernorm.LayerNorm.weight"] == 1)
    assert np.all(state["lm_head.bias"] == 0)
    assert np.array_equal(state["lm_head.decoder.weight"], words)  # tied
    assert model.family.model_type == "roberta-prelayernorm"
    # The numpy state dict round-trips.
    other = F.FlaxRobertaPreLayerNormForMaskedLM(config, seed=4)
    other.load_state_dict_numpy(state)
    inputs = sample_inputs("roberta-prelayernorm")
    assert max_abs_diff(other(**inputs).logits, model(**inputs).logits) == 0.0


KEY_CASES = [
    ("xlm-roberta", "Model", {"position_embedding_type": "relative_key"}),
    ("roformer", "ForMaskedLM", {"embedding_size": 24, "tie_word_embeddings": False}),
    ("roberta-prelayernorm", "ForCausalLM", {"is_decoder": True, "add_cross_attention": True}),
    ("roformer", "ForMultipleChoice", {}),
    ("xlm-roberta", "ForQuestionAnswering", {}),
]


@pytest.mark.parametrize("model_type,head,overrides", KEY_CASES, ids=lambda x: str(x))
def test_state_dict_keys_match_onnxport_pt(model_type, head, overrides):
    """Same HF names and shapes as onnxport's PyTorch classes, so a file from either loads in the other."""
    from conftest import TINY
    from onnxport.configs import AutoConfig
    from onnxport.reference_models import pt as P

    config = AutoConfig.for_model(model_type, **TINY, **overrides)
    ours = F.model_class(model_type, head)(config).state_dict_numpy()
    theirs = P.model_class(model_type, head)(config).state_dict_numpy()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors(models):
    _, _, model = models("xlm-roberta", "ForSequenceClassification")
    inputs = sample_inputs("xlm-roberta", batch=2, seq=5)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with pytest.raises(InputError, match="vocab_size"):
        model(np.where(ids == ids[0, 0], 500, ids), attention_mask=mask)
    with pytest.raises(InputError, match="vocab_size"):
        model(-ids, attention_mask=mask)
    with pytest.raises(InputError, match="exceeds the model's maximum"):
        model(np.full((1, 60), 5))
    with pytest.raises(InputError, match="attention_mask must have shape"):
        model(ids, attention_mask=mask[:, :3])
    with pytest.raises(InputError, match="token_type_ids must have the shape"):
        model(ids, token_type_ids=mask[:1])
    with pytest.raises(InputError, match="add a batch dimension"):
        model(ids[0])
    with pytest.raises(InputError, match="either input_ids or inputs_embeds"):
        model()
    with pytest.raises(TypeError, match="unexpected keyword argument 'past_key_values'"):
        model(ids, past_key_values=())
    # Under a user's jit the values are unknown, but shapes are still checked.
    with pytest.raises(InputError, match="attention_mask must have shape"):
        jax.jit(lambda p, x, m: model(x, attention_mask=m, params=p).logits)(model.params, ids, mask[:, :3])

    _, _, decoder = models("roformer", "ForCausalLM", **FAMILY_OVERRIDES["roformer"])
    with pytest.raises(InputError, match="no cross-attention"):
        decoder(ids, encoder_hidden_states=np.zeros((2, 3, 32), np.float32))
    with pytest.raises(InputError, match="including past"):
        long_past = tuple((np.zeros((1, 4, 38, 8), np.float32),) * 2 for _ in range(2))
        decoder(np.full((1, 5), 5), past_key_values=long_past)
    with pytest.raises(InputError, match="max_length"):
        decoder.init_cache(1, 41)
    _, _, choice = models("roformer", "ForMultipleChoice", **FAMILY_OVERRIDES["roformer"])
    with pytest.raises(InputError, match="num_choices"):
        choice(ids)


def test_report_largest_differences():
    """Print the largest difference vs transformers per family (visible with -s)."""
    for family, diff in sorted(RESULTS.items()):
        print(f"flax vs transformers PyTorch, {family}: max abs diff {diff:.2e}")
        assert diff <= TOL
