"""Cross-attention decoders (``is_decoder`` + ``add_cross_attention``: the decoder half of an EncoderDecoderModel)
exported whole: ``encoder_hidden_states`` and ``encoder_attention_mask`` are graph inputs of the causal LM (and
of the base model and the masked LM, whose transformers heads take them too) from every front end.

Each family x front end exports a tiny transformers ``*ForCausalLM`` checkpoint for text-generation with the
cache and for feature-extraction; ONNX Runtime (through the runtime models) must equal transformers 4.57 on
non-zero encoder states with a padded encoder mask within 1e-4, at both steps of a two-step decode (the cache
holds the self-attention keys/values; the graph recomputes the cross-attention ones from the states each step);
and other encoder states, or another encoder mask, must change the answer, so a graph that ignored them (the
old exports) fails here. The exports' own validation feeds encoder states too (``validate.validation_cases``).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from conftest import TINY, build_hf_checkpoint, max_abs_diff
from onnxport.errors import InputError
from onnxport.exporters import export
from onnxport.exporters.io_spec import TASKS, build_io_spec, make_inputs
from onnxport.exporters.validate import DEFAULT_ATOL, validation_cases

FAMILIES = ("xlm-roberta", "roberta", "roberta-prelayernorm", "roformer")
FRONT_ENDS = ("pt", "tf", "flax")
# PyTorch exports take seconds; TF ~10 s and Flax ~30-60 s each on a shared CPU: their cases are ``slow``.
FRONT_END_PARAMS = [pytest.param(f, marks=() if f == "pt" else pytest.mark.slow) for f in FRONT_ENDS]
HIDDEN = TINY["hidden_size"]
MEASURED: dict[tuple[str, str, str], float] = {}  # (family, front end, what) -> largest |ONNX - transformers|
EXPORT_SECONDS: dict[str, list[float]] = {}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """``checkpoint(model_type)`` -> a tiny transformers ``*ForCausalLM`` with cross-attention, cached."""
    cache: dict[str, str] = {}
    root = tmp_path_factory.mktemp("xattn-checkpoints")

    def get(model_type: str) -> str:
        if model_type not in cache:
            cache[model_type] = build_hf_checkpoint(root / model_type, model_type, "ForCausalLM", seed=3,
                                                    is_decoder=True, add_cross_attention=True)
        return cache[model_type]

    return get


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """``exported(model_type, framework, task, with_past)`` -> export directory, cached. The exports validate
    (native reference model vs ONNX Runtime on validation's cases, which carry encoder states)."""
    cache: dict[tuple, str] = {}
    root = tmp_path_factory.mktemp("xattn-exports")

    def get(model_type: str, framework: str, task: str, with_past: bool = False) -> str:
        key = (model_type, framework, task, with_past)
        if key not in cache:
            out = root / "-".join(map(str, key))
            start = time.perf_counter()
            export(checkpoint(model_type), out, framework=framework, task=task, with_past=with_past)
            EXPORT_SECONDS.setdefault(framework, []).append(time.perf_counter() - start)
            cache[key] = str(out)
        return cache[key]

    yield get
    if MEASURED:
        print("\nlargest |ONNX Runtime - transformers 4.57| (cross-attention decoders):")
        for (family, framework, what), diff in sorted(MEASURED.items()):
            print(f"  {family:<22} {framework:<5} {what:<28} {diff:.3e}")
    for framework, seconds in EXPORT_SECONDS.items():
        print(f"{framework} export seconds: {', '.join(f'{s:.1f}' for s in seconds)}")


def _hf(checkpoint: str, head: str = "ForCausalLM"):
    import transformers

    auto = transformers.AutoModelForCausalLM if head == "ForCausalLM" else transformers.AutoModel
    return auto.from_pretrained(checkpoint, attn_implementation="eager").eval()


def _encoder(batch: int = 2, length: int = 6, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero encoder states and an encoder mask with padding (row 1 attends to 4 of 6 positions)."""
    rng = np.random.default_rng(seed)
    states = rng.standard_normal((batch, length, HIDDEN)).astype(np.float32)
    mask = np.ones((batch, length), np.int64)
    mask[1:, 4:] = 0
    return states, mask


def _ids(batch: int = 2, sequence: int = 5, seed: int = 11) -> np.ndarray:
    # ids >= 3: none is a family's pad id, so transformers' RoBERTa positions count every token
    return np.random.default_rng(seed).integers(3, TINY["vocab_size"], size=(batch, sequence), dtype=np.int64)


def _torch(**arrays):
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def _record(model_type, framework, what, diff):
    key = (model_type, framework, what)
    MEASURED[key] = max(MEASURED.get(key, 0.0), diff)


# ----------------------------------------------------------------------------- the IO spec
def test_encoder_inputs_exactly_where_transformers_heads_take_them(checkpoint):
    import inspect

    import transformers

    from onnxport.configs import AutoConfig
    from onnxport.reference_models.head_protocol import TORCH_ARGUMENTS

    config = AutoConfig.from_pretrained(checkpoint("xlm-roberta"))
    plain = AutoConfig.for_model("xlm-roberta", **TINY, is_decoder=True)
    for task, spec in TASKS.items():
        if spec.sentence_stack:  # a sentence-transformers stack's encoder: the Model head without cross-attention
            continue
        takes = "encoder_hidden_states" in inspect.signature(getattr(transformers, "XLMRoberta" + spec.head).forward).parameters
        names = build_io_spec(task, config).input_names
        assert ("encoder_hidden_states" in names) == takes == ("encoder_attention_mask" in names), task
        # the IO contract's table agrees with the reference models' signatures
        assert spec.takes_encoder_states == ("encoder_hidden_states" in TORCH_ARGUMENTS[spec.head]) == takes, task
        # without add_cross_attention the signature is unchanged: no encoder inputs for any task
        assert not {"encoder_hidden_states", "encoder_attention_mask"} & set(build_io_spec(task, plain).input_names)
    spec = build_io_spec("text-generation", config, with_past=True)
    states = next(t for t in spec.inputs if t.name == "encoder_hidden_states")
    mask = next(t for t in spec.inputs if t.name == "encoder_attention_mask")
    assert (states.dtype, states.shape) == ("float32", ("batch_size", "encoder_sequence_length", HIDDEN))
    assert (mask.dtype, mask.shape) == ("int64", ("batch_size", "encoder_sequence_length"))
    # the cache: self-attention keys/values only, and onnxport.json says so
    assert spec.past_names() == [(f"past_key_values.{i}.key", f"past_key_values.{i}.value") for i in range(2)]
    assert "recomputed from encoder_hidden_states" in spec.to_dict()["cache"]
    assert "cache" not in build_io_spec("text-generation", plain, with_past=True).to_dict()


def test_made_and_validation_inputs_carry_non_zero_encoder_states_and_padding(checkpoint):
    from onnxport.configs import AutoConfig

    spec = build_io_spec("text-generation", AutoConfig.from_pretrained(checkpoint("roberta")), with_past=True)
    feeds = make_inputs(spec, batch=3, sequence=5, past=2)
    states, mask = feeds["encoder_hidden_states"], feeds["encoder_attention_mask"]
    assert states.shape == (3, 7, HIDDEN) and states.dtype == np.float32 and np.abs(states).min() > 0
    assert mask.shape == (3, 7) and mask[0].all() and not mask[1:].all()
    cases = validation_cases(spec)
    assert len(cases) == 4
    for _, case in cases:
        assert np.abs(case["encoder_hidden_states"]).mean() > 0.5
    assert any(not case["encoder_attention_mask"].all() for _, case in cases)


def test_validation_cases_fail_a_graph_that_ignores_the_encoder(checkpoint):
    """On every validation case the native model's answer with the encoder states differs from its answer
    without them by far more than the tolerance: an export that dropped them cannot validate."""
    from onnxport.configs import AutoConfig
    from onnxport.exporters.validate import native_runner

    path = checkpoint("xlm-roberta")
    config = AutoConfig.from_pretrained(path)
    config.use_cache = True
    spec = build_io_spec("text-generation", config, with_past=True)
    run = native_runner("pt", path, config, spec)
    for case, feeds in validation_cases(spec):
        with_encoder = run(dict(feeds))["logits"]
        zeros = dict(feeds, encoder_hidden_states=np.zeros_like(feeds["encoder_hidden_states"]))
        assert max_abs_diff(with_encoder, run(zeros)["logits"]) > 100 * DEFAULT_ATOL, case


# ----------------------------------------------------------------------------- exports vs transformers
@pytest.mark.parametrize("framework", FRONT_END_PARAMS)
@pytest.mark.parametrize("model_type", FAMILIES)
def test_text_generation_with_past_equals_transformers_step_by_step(exported, checkpoint, model_type, framework):
    from onnxport.runtime.models import OnnxModelForCausalLM

    out = exported(model_type, framework, "text-generation", with_past=True)
    model = OnnxModelForCausalLM.from_pretrained(out, provider="cpu", load_tokenizer=False)
    assert {"encoder_hidden_states", "encoder_attention_mask"} <= set(model.spec.input_names)
    hf = _hf(checkpoint(model_type))
    states, encoder_mask = _encoder()
    ids = _ids()
    encoder = dict(encoder_hidden_states=states, encoder_attention_mask=encoder_mask)

    first = model(input_ids=ids[:, :4], **encoder)
    second = model(input_ids=ids[:, 4:], past_key_values=first.past_key_values, **encoder)
    with torch.no_grad():
        want_first = hf(**_torch(input_ids=ids[:, :4], **encoder), use_cache=True)
        want_second = hf(**_torch(input_ids=ids[:, 4:], **encoder), past_key_values=want_first.past_key_values,
                         use_cache=True)
        # transformers' cache also holds the cross-attention keys/values; ours recomputes them each step
        self_cache = want_second.past_key_values.self_attention_cache
    for step, (got, want) in enumerate(((first, want_first), (second, want_second)), 1):
        diff = max_abs_diff(got.logits, want.logits.numpy())
        _record(model_type, framework, f"text-generation step {step}", diff)
        assert diff <= DEFAULT_ATOL, (step, diff)
    for layer, (key, value) in enumerate(second.past_key_values):
        assert max_abs_diff(key, self_cache.layers[layer].keys.numpy()) <= DEFAULT_ATOL
        assert max_abs_diff(value, self_cache.layers[layer].values.numpy()) <= DEFAULT_ATOL

    # Other encoder states, or the padded encoder positions attended, change the answer (as in transformers):
    # the old exports, which had neither input, could not pass the comparison above.
    other = model(input_ids=ids[:, :4], encoder_hidden_states=_encoder(seed=6)[0], encoder_attention_mask=encoder_mask)
    assert max_abs_diff(other.logits, first.logits) > 1e-2
    unpadded = model(input_ids=ids[:, :4], encoder_hidden_states=states)  # the default mask: every position
    # Row 0 was unpadded: the same answer. The runtime's fused attention picks its kernel path per batch (flash
    # without padding, the key-padding form with), so equal to float rounding; the graph as written, exactly.
    assert max_abs_diff(unpadded.logits[0], first.logits[0]) <= 1e-5
    plain = OnnxModelForCausalLM.from_pretrained(out, provider="cpu", load_tokenizer=False, fuse_attention=False)
    assert max_abs_diff(plain(input_ids=ids[:, :4], encoder_hidden_states=states).logits[0],
                        plain(input_ids=ids[:, :4], **encoder).logits[0]) == 0.0
    assert max_abs_diff(unpadded.logits[1], first.logits[1]) > 1e-3
    with torch.no_grad():
        want = hf(**_torch(input_ids=ids[:, :4], encoder_hidden_states=states), use_cache=False).logits.numpy()
    assert max_abs_diff(unpadded.logits, want) <= DEFAULT_ATOL


@pytest.mark.parametrize("framework", FRONT_END_PARAMS)
@pytest.mark.parametrize("model_type", FAMILIES)
def test_feature_extraction_takes_the_encoder_and_equals_transformers(exported, checkpoint, model_type, framework):
    from onnxport.runtime.models import OnnxModel

    out = exported(model_type, framework, "feature-extraction")
    model = OnnxModel.from_pretrained(out, provider="cpu", load_tokenizer=False)
    hf = _hf(checkpoint(model_type), head="Model")
    states, encoder_mask = _encoder(batch=3, length=4, seed=8)
    ids = _ids(batch=3, sequence=6, seed=12)
    mask = np.ones_like(ids)
    mask[2, 4:] = 0  # decoder padding too
    got = model(input_ids=ids, attention_mask=mask, encoder_hidden_states=states, encoder_attention_mask=encoder_mask)
    with torch.no_grad():
        want = hf(**_torch(input_ids=ids, attention_mask=mask, encoder_hidden_states=states,
                           encoder_attention_mask=encoder_mask)).last_hidden_state.numpy()
    diff = max_abs_diff(got.last_hidden_state, want)
    _record(model_type, framework, "feature-extraction", diff)
    assert diff <= DEFAULT_ATOL
    other = model(input_ids=ids, attention_mask=mask, encoder_hidden_states=-states, encoder_attention_mask=encoder_mask)
    assert max_abs_diff(other.last_hidden_state, got.last_hidden_state) > 1e-2


def test_fill_mask_takes_the_encoder_and_equals_transformers(checkpoint, tmp_path):
    """transformers' masked LM takes encoder states too (the base model under a cross-attention config)."""
    import transformers

    from onnxport.runtime.models import OnnxModelForMaskedLM

    path = build_hf_checkpoint(tmp_path / "mlm", "roberta", "ForMaskedLM", seed=4, is_decoder=True,
                               add_cross_attention=True)
    export(path, tmp_path / "out", framework="pt", task="fill-mask")
    model = OnnxModelForMaskedLM.from_pretrained(tmp_path / "out", provider="cpu", load_tokenizer=False)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(path, attn_implementation="eager").eval()
    states, encoder_mask = _encoder()
    ids = _ids()
    got = model(input_ids=ids, encoder_hidden_states=states, encoder_attention_mask=encoder_mask)
    with torch.no_grad():
        want = hf(**_torch(input_ids=ids, encoder_hidden_states=states, encoder_attention_mask=encoder_mask)).logits
    assert max_abs_diff(got.logits, want.numpy()) <= DEFAULT_ATOL


def test_text_generation_without_past_and_the_pipeline(exported, checkpoint, tmp_path):
    """The plain (no cache) export equals transformers; the text-generation pipeline passes the encoder inputs
    to every step and decodes what transformers' greedy decoding does on them."""
    from onnxport.runtime.models import OnnxModelForCausalLM
    from onnxport.runtime.pipelines import TextGenerationPipeline

    path = checkpoint("roberta-prelayernorm")
    out = exported("roberta-prelayernorm", "pt", "text-generation")
    model = OnnxModelForCausalLM.from_pretrained(out, provider="cpu", load_tokenizer=False)
    hf = _hf(path)
    states, encoder_mask = _encoder(batch=1)
    encoder_mask[0, 5:] = 0
    ids = _ids(batch=1, sequence=3)
    got = model(input_ids=ids, encoder_hidden_states=states, encoder_attention_mask=encoder_mask)
    with torch.no_grad():
        want = hf(**_torch(input_ids=ids, encoder_hidden_states=states, encoder_attention_mask=encoder_mask))
    assert max_abs_diff(got.logits, want.logits.numpy()) <= DEFAULT_ATOL

    # greedy decoding, cache and no cache, against transformers' argmax loop on the same encoder inputs
    expected, sequence = [], torch.from_numpy(ids)
    with torch.no_grad():
        for _ in range(4):
            logits = hf(input_ids=sequence, **_torch(encoder_hidden_states=states,
                                                     encoder_attention_mask=encoder_mask)).logits
            token = int(logits[0, -1].argmax())
            expected.append(token)
            sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
    for export_dir in (out, exported("roberta-prelayernorm", "pt", "text-generation", with_past=True)):
        decoder = OnnxModelForCausalLM.from_pretrained(export_dir, provider="cpu", load_tokenizer=False)
        generator = TextGenerationPipeline.__new__(TextGenerationPipeline)  # ids-level: no tokenizer needed
        generator.model = decoder
        new = generator.generate_ids(ids, 4, np.random.default_rng(0), encoder_hidden_states=states,
                                     encoder_attention_mask=encoder_mask)
        assert new.tolist() == expected
        with pytest.raises(InputError, match="encoder_hidden_states is required"):
            generator.generate_ids(ids, 2, np.random.default_rng(0))


def test_an_export_without_cross_attention_is_unchanged_and_refuses_encoder_states(tmp_path):
    from onnxport.runtime.models import OnnxModelForCausalLM

    path = build_hf_checkpoint(tmp_path / "ckpt", "xlm-roberta", "ForCausalLM", is_decoder=True)
    export(path, tmp_path / "out", framework="pt", task="text-generation", with_past=True)
    model = OnnxModelForCausalLM.from_pretrained(tmp_path / "out", provider="cpu", load_tokenizer=False)
    assert model.spec.input_names == ["input_ids", "attention_mask", "token_type_ids", "past_key_values.0.key",
                                      "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"]
    states, _ = _encoder()
    with pytest.raises(InputError, match="takes no encoder_hidden_states.*add_cross_attention"):
        model(input_ids=_ids(), encoder_hidden_states=states)


@pytest.mark.parametrize("feeds, message", [
    ({}, "encoder_hidden_states is required"),
    ({"encoder_hidden_states": np.ones((2, 6, HIDDEN + 1), np.float32)}, "hidden_size 32"),
    ({"encoder_hidden_states": np.ones((3, 6, HIDDEN), np.float32)}, "batch must be input_ids' batch"),
    ({"encoder_hidden_states": np.ones((6, HIDDEN), np.float32)}, r"encoder_hidden_states must have shape"),
    ({"encoder_hidden_states": np.ones((2, 0, HIDDEN), np.float32)}, "empty encoder sequence"),
    ({"encoder_hidden_states": np.ones((2, 6, HIDDEN), bool)}, "floating-point"),
    ({"encoder_hidden_states": np.ones((2, 6, HIDDEN), np.float32), "encoder_attention_mask": np.ones((2, 5), np.int64)},
     r"encoder_attention_mask must have shape \(batch, encoder_sequence\) = \(2, 6\)"),
    ({"encoder_hidden_states": np.ones((2, 6, HIDDEN), np.float32), "encoder_attention_mask": np.full((2, 6), 2)},
     "encoder_attention_mask must contain only 0 and 1"),
], ids=["missing", "hidden-size", "batch", "rank", "empty", "boolean-states", "mask-shape", "mask-values"])
def test_bad_encoder_inputs_raise_input_error(exported, feeds, message):
    from onnxport.runtime.models import OnnxModelForCausalLM

    model = OnnxModelForCausalLM.from_pretrained(exported("xlm-roberta", "pt", "text-generation", with_past=True),
                                                 provider="cpu", load_tokenizer=False)
    with pytest.raises(InputError, match=message):
        model(input_ids=_ids(), **feeds)


def test_parity_feeds_encoder_states_to_a_cross_attention_checkpoint(checkpoint, tmp_path):
    """The parity matrix on a given cross-attention checkpoint: its cases carry non-zero encoder states (so a
    graph ignoring them fails there too) and the PyTorch export equals the reference model on them."""
    from onnxport.configs import AutoConfig
    from onnxport.dev import parity

    path = checkpoint("roformer")
    assert ("roformer", "text-generation", True) in parity.checkpoint_rows(path)
    spec = build_io_spec("text-generation", AutoConfig.from_pretrained(path), with_past=True)
    for _, feeds in parity._cases(spec, AutoConfig.from_pretrained(path), "text-generation", True):
        assert np.abs(feeds["encoder_hidden_states"]).mean() > 0.5
    cells = {c.comparison: c for c in parity.run_row("roformer", "text-generation", True, str(tmp_path),
                                                      frameworks=("pt",), checkpoint=path)}
    assert cells["pt~onnx[pt]"].status == "passed" and cells["pt~onnx[pt]"].error <= DEFAULT_ATOL
    assert cells["function~fused"].status == "passed"


def test_fp16_export_takes_float16_encoder_states(checkpoint, tmp_path):
    """--fp16: the encoder states are a float16 input like the cache; the runtime casts what it is given."""
    from onnxport.runtime.models import OnnxModelForCausalLM

    path = checkpoint("xlm-roberta")
    report = export(path, tmp_path / "out", framework="pt", task="text-generation", with_past=True, dtype="fp16")
    assert report.validation.passed
    model = OnnxModelForCausalLM.from_pretrained(tmp_path / "out", provider="cpu", load_tokenizer=False)
    assert {t.name: t.dtype for t in model.spec.inputs}["encoder_hidden_states"] == "float16"
    states, encoder_mask = _encoder()
    ids = _ids()
    got = model(input_ids=ids, encoder_hidden_states=states, encoder_attention_mask=encoder_mask).logits
    with torch.no_grad():
        want = _hf(path)(**_torch(input_ids=ids, encoder_hidden_states=states,
                                  encoder_attention_mask=encoder_mask)).logits.numpy()
    assert max_abs_diff(got, want) <= 1e-2 * np.abs(want).max()  # fp16's tolerance: 1e-2 of the output's scale
