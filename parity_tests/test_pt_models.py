"""onnxport's 21 PyTorch classes against transformers' PyTorch classes on the same checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import HEADS, MODEL_TYPES, hf_class, max_abs_diff, sample_inputs
from onnxport.reference_models import pt as ours
from onnxport.reference_models.common import InputError

TOL = 1e-5
NUM_CHOICES = 2


def hf_load(model_type, head, path, **overrides):
    return hf_class(model_type, head).from_pretrained(path, attn_implementation="eager", **overrides).eval()


def legacy_cache(past):
    if past is None:
        return None
    if hasattr(past, "to_legacy_cache"):
        past = past.to_legacy_cache()
    # transformers pads decoder-only layers with (None, None) cross-attention slots
    return tuple(tuple(t for t in layer if t is not None) for layer in past)


def inputs_for(model_type, head, batch=3, seq=9, seed=1):
    """Torch kwargs including labels for the head, from padded sample inputs."""
    feeds = sample_inputs(model_type, batch * (NUM_CHOICES if head == "ForMultipleChoice" else 1), seq, seed)
    rng = np.random.default_rng(seed + 100)
    kwargs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    if head == "ForMultipleChoice":
        kwargs = {k: v.view(batch, NUM_CHOICES, seq) for k, v in kwargs.items()}
        kwargs["labels"] = torch.from_numpy(rng.integers(0, NUM_CHOICES, size=batch))
    elif head in ("ForCausalLM", "ForMaskedLM"):
        labels = kwargs["input_ids"].clone()
        labels[kwargs["attention_mask"] == 0] = -100
        if head == "ForMaskedLM":
            labels[torch.from_numpy(rng.random(labels.shape) < 0.5)] = -100
        kwargs["labels"] = labels
    elif head == "ForSequenceClassification":
        kwargs["labels"] = torch.from_numpy(rng.integers(0, 2, size=batch))
    elif head == "ForTokenClassification":
        labels = torch.from_numpy(rng.integers(0, 2, size=(batch, seq)))
        labels[kwargs["attention_mask"] == 0] = -100
        kwargs["labels"] = labels
    elif head == "ForQuestionAnswering":
        kwargs["start_positions"] = torch.from_numpy(rng.integers(0, seq, size=batch))
        kwargs["end_positions"] = torch.from_numpy(rng.integers(0, seq + 3, size=batch))  # some out of range
    if model_type != "roformer":
        # transformers' RoBERTa tokenizers emit no token types; exercise the default path
        kwargs.pop("token_type_ids")
    return kwargs


def compare_outputs(a, b, names=None) -> float:
    """Max abs diff over every tensor field both outputs have (nested tuples included); fields must match."""
    keys_a = [k for k in a.keys() if k != "past_key_values"]
    keys_b = [k for k in b.keys() if k != "past_key_values"]
    assert sorted(keys_a) == sorted(keys_b), (keys_a, keys_b)
    worst = 0.0
    for key in names or keys_a:
        worst = max(worst, _diff(a[key], b[key], key))
    # transformers' RoFormer keeps building a cache when labels are given, its RoBERTa heads do not; we never do.
    if a.get("past_key_values") is not None and b.get("past_key_values") is not None:
        worst = max(worst, _diff(legacy_cache(a.get("past_key_values")), legacy_cache(b.get("past_key_values")), "past"))
    return worst


def _diff(x, y, name) -> float:
    if isinstance(x, (tuple, list)):
        assert isinstance(y, (tuple, list)) and len(x) == len(y), f"{name}: {len(x)} vs {len(y)}"
        return max([_diff(p, q, f"{name}[{i}]") for i, (p, q) in enumerate(zip(x, y))] or [0.0])
    d = max_abs_diff(x.detach().numpy(), y.detach().numpy())
    assert d <= TOL, f"{name}: max abs diff {d:.3g} > {TOL}"
    return d


MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def report_measured():
    yield
    if MEASURED:
        print("\nlargest PyTorch difference to transformers per family:",
              {k: f"{v:.2e}" for k, v in sorted(MEASURED.items())})


def record(model_type, value):
    MEASURED[model_type] = max(MEASURED.get(model_type, 0.0), value)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_class_matches_transformers(checkpoint_factory, model_type, head):
    path = checkpoint_factory(model_type, head)
    model = ours.model_class(model_type, head).from_pretrained(path)
    reference = hf_load(model_type, head, path)
    assert type(model).__name__ == type(reference).__name__
    kwargs = inputs_for(model_type, head)
    with torch.no_grad():
        got = model(**kwargs, output_hidden_states=True, output_attentions=True)
        want = reference(**kwargs, output_hidden_states=True, output_attentions=True)
    if head != "Model":
        assert got.loss is not None and torch.isfinite(got.loss)
    record(model_type, compare_outputs(got, want))
    # Same parameters, same names as transformers.
    assert set(model.state_dict()) >= {k for k in reference.state_dict() if not k.endswith("position_ids")}


@pytest.mark.parametrize("model_type", ["xlm-roberta", "roberta-prelayernorm"])
@pytest.mark.parametrize("position_embedding_type", ["relative_key", "relative_key_query"])
def test_relative_positions(checkpoint_factory, model_type, position_embedding_type):
    path = checkpoint_factory(model_type, "ForMaskedLM", position_embedding_type=position_embedding_type)
    model = ours.model_class(model_type, "ForMaskedLM").from_pretrained(path)
    reference = hf_load(model_type, "ForMaskedLM", path)
    kwargs = inputs_for(model_type, "ForMaskedLM")
    with torch.no_grad():
        record(model_type, compare_outputs(model(**kwargs, output_attentions=True), reference(**kwargs, output_attentions=True)))
    assert model.roberta_prelayernorm if model_type == "roberta-prelayernorm" else model.roberta  # named like HF


@pytest.mark.parametrize(
    "overrides",
    [dict(rotary_value=True), dict(embedding_size=24), dict(rotary_value=True, embedding_size=16, hidden_act="gelu_new")],
    ids=["rotary_value", "embedding_size", "both"],
)
@pytest.mark.parametrize("head", ["ForMaskedLM", "ForSequenceClassification", "ForMultipleChoice"])
def test_roformer_options(checkpoint_factory, overrides, head):
    path = checkpoint_factory("roformer", head, **overrides)
    model = ours.model_class("roformer", head).from_pretrained(path)
    reference = hf_load("roformer", head, path)
    kwargs = inputs_for("roformer", head)
    with torch.no_grad():
        record("roformer", compare_outputs(model(**kwargs, output_hidden_states=True), reference(**kwargs, output_hidden_states=True)))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_cached_decoding_equals_full_decoding_and_transformers(checkpoint_factory, model_type):
    path = checkpoint_factory(model_type, "ForCausalLM")
    model = ours.model_class(model_type, "ForCausalLM").from_pretrained(path)
    reference = hf_load(model_type, "ForCausalLM", path)
    ids = torch.from_numpy(sample_inputs(model_type, 2, 10)["input_ids"])
    ids[ids <= 2] = 5  # no padding: plain left-to-right decoding
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits
        prompt = 4
        out = model(input_ids=ids[:, :prompt], use_cache=True)
        ref = reference(input_ids=ids[:, :prompt], use_cache=True)
        steps = [out.logits]
        compare_outputs(out, ref)
        past, ref_past = out.past_key_values, ref.past_key_values
        for t in range(prompt, ids.shape[1]):
            out = model(input_ids=ids[:, t : t + 1], past_key_values=past, use_cache=True)
            ref = reference(input_ids=ids[:, t : t + 1], past_key_values=ref_past, use_cache=True)
            compare_outputs(out, ref)
            past, ref_past = out.past_key_values, ref.past_key_values
            steps.append(out.logits)
        assert len(past) == model.config.num_hidden_layers and past[0][0].shape[2] == ids.shape[1]
        stepped = torch.cat(steps, dim=1)
    record(model_type, max_abs_diff(stepped.numpy(), full.numpy()))
    assert max_abs_diff(stepped.numpy(), full.numpy()) <= TOL


@pytest.mark.parametrize("model_type", ["xlm-roberta", "roberta-prelayernorm"])
def test_relative_positions_with_cache_single_token_steps(checkpoint_factory, model_type):
    # transformers gives every query the last position whenever a cache exists; that equals the correct
    # positions for one-token steps, which is what we compare. Full passes compare with use_cache=False.
    path = checkpoint_factory(model_type, "ForCausalLM", position_embedding_type="relative_key_query")
    model = ours.model_class(model_type, "ForCausalLM").from_pretrained(path)
    reference = hf_load(model_type, "ForCausalLM", path)
    ids = torch.from_numpy(sample_inputs(model_type, 2, 6)["input_ids"]).clamp(min=3)
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False)
        compare_outputs(full, reference(input_ids=ids, use_cache=False))
        past, ref_past, steps = None, None, []
        for t in range(ids.shape[1]):
            out = model(input_ids=ids[:, t : t + 1], past_key_values=past, use_cache=True)
            ref = reference(input_ids=ids[:, t : t + 1], past_key_values=ref_past, use_cache=True)
            compare_outputs(out, ref)
            past, ref_past = out.past_key_values, ref.past_key_values
            steps.append(out.logits)
    assert max_abs_diff(torch.cat(steps, 1).numpy(), full.logits.numpy()) <= TOL


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_cross_attention_with_cache(checkpoint_factory, model_type):
    path = checkpoint_factory(model_type, "ForCausalLM", add_cross_attention=True)
    model = ours.model_class(model_type, "ForCausalLM").from_pretrained(path)
    reference = hf_load(model_type, "ForCausalLM", path)
    rng = np.random.default_rng(3)
    encoder_states = torch.from_numpy(rng.standard_normal((2, 5, 32)).astype(np.float32))
    encoder_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    ids = torch.from_numpy(sample_inputs(model_type, 2, 7)["input_ids"]).clamp(min=3)
    common = dict(encoder_hidden_states=encoder_states, encoder_attention_mask=encoder_mask)
    with torch.no_grad():
        got = model(input_ids=ids[:, :4], use_cache=True, output_attentions=True, **common)
        want = reference(input_ids=ids[:, :4], use_cache=True, output_attentions=True, **common)
        compare_outputs(got, want)
        assert len(got.past_key_values[0]) == 4 and len(got.cross_attentions) == 2
        step = model(input_ids=ids[:, 4:5], past_key_values=got.past_key_values, **common)
        ref_step = reference(input_ids=ids[:, 4:5], past_key_values=want.past_key_values, **common)
        record(model_type, compare_outputs(step, ref_step))
        full = model(input_ids=ids[:, :5], use_cache=False, **common)
    assert max_abs_diff(step.logits[:, -1].numpy(), full.logits[:, 4].numpy()) <= TOL


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_head_mask_inputs_embeds_position_ids_return_tuple(checkpoint_factory, model_type):
    path = checkpoint_factory(model_type, "Model")
    model = ours.model_class(model_type, "Model").from_pretrained(path)
    reference = hf_load(model_type, "Model", path)
    feeds = {k: torch.from_numpy(v) for k, v in sample_inputs(model_type).items()}
    head_mask = torch.tensor([[1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 1.0, 1.0]])
    with torch.no_grad():
        compare_outputs(model(**feeds, head_mask=head_mask, output_attentions=True),
                        reference(**feeds, head_mask=head_mask, output_attentions=True))
        embeds = model.get_input_embeddings()(feeds["input_ids"])
        no_ids = {k: v for k, v in feeds.items() if k != "input_ids"}
        compare_outputs(model(inputs_embeds=embeds, **no_ids), reference(inputs_embeds=embeds, **no_ids))
        if model_type != "roformer":  # transformers' RoFormer takes no position_ids
            position_ids = torch.arange(2, 2 + feeds["input_ids"].shape[1]).expand_as(feeds["input_ids"]).flip(-1)
            compare_outputs(model(**feeds, position_ids=position_ids), reference(**feeds, position_ids=position_ids))
        got_tuple = model(**feeds, return_dict=False)
        want_tuple = reference(**feeds, return_dict=False)
    assert len(got_tuple) == len(want_tuple)
    for g, w in zip(got_tuple, want_tuple):
        assert max_abs_diff(g.numpy(), w.numpy()) <= TOL


def test_roformer_position_ids_select_rotary_rows(checkpoint_factory):
    """An onnxport extension: explicit position_ids for RoFormer. Sequential ids equal the default; rotary
    attention depends only on relative positions, so a uniform shift changes nothing, a permutation does."""
    model = ours.RoFormerModel.from_pretrained(checkpoint_factory("roformer", "Model"))
    ids = torch.from_numpy(sample_inputs("roformer", 2, 6)["input_ids"]).clamp(min=3)
    with torch.no_grad():
        default = model(input_ids=ids).last_hidden_state
        explicit = model(input_ids=ids, position_ids=torch.arange(6).expand(2, 6)).last_hidden_state
        shifted = model(input_ids=ids, position_ids=torch.arange(3, 9).expand(2, 6)).last_hidden_state
        permuted = model(input_ids=ids, position_ids=torch.tensor([[0, 2, 1, 3, 5, 4]] * 2)).last_hidden_state
    assert max_abs_diff(default.numpy(), explicit.numpy()) == 0.0
    assert max_abs_diff(default.numpy(), shifted.numpy()) <= TOL
    assert max_abs_diff(default.numpy(), permuted.numpy()) > 1e-2


@pytest.mark.parametrize(
    "problem_type,num_labels,labels",
    [
        ("regression", 1, torch.tensor([0.5, -1.0, 2.0])),
        ("single_label_classification", 3, torch.tensor([0, 2, 1])),
        ("multi_label_classification", 3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])),
        (None, 1, torch.tensor([0.5, -1.0, 2.0])),
        (None, 3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])),
    ],
)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_sequence_classification_losses(checkpoint_factory, model_type, problem_type, num_labels, labels):
    path = checkpoint_factory(model_type, "ForSequenceClassification", num_labels=num_labels, problem_type=problem_type)
    model = ours.model_class(model_type, "ForSequenceClassification").from_pretrained(path)
    reference = hf_load(model_type, "ForSequenceClassification", path)
    feeds = {k: torch.from_numpy(v) for k, v in sample_inputs(model_type).items()}
    with torch.no_grad():
        got, want = model(**feeds, labels=labels), reference(**feeds, labels=labels)
    assert got.loss is not None
    compare_outputs(got, want)
    # Independent check of one case by hand: mean squared error.
    if num_labels == 1:
        assert abs(got.loss.item() - ((got.logits.squeeze() - labels) ** 2).mean().item()) < 1e-6


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_untied_lm_head_and_classifier_dropout(checkpoint_factory, model_type):
    path = checkpoint_factory(model_type, "ForMaskedLM", tie_word_embeddings=False, classifier_dropout=0.3)
    model = ours.model_class(model_type, "ForMaskedLM").from_pretrained(path)
    reference = hf_load(model_type, "ForMaskedLM", path)
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    kwargs = inputs_for(model_type, "ForMaskedLM")
    with torch.no_grad():
        compare_outputs(model(**kwargs), reference(**kwargs))


def test_random_init_statistics_and_tying():
    from onnxport.configs import XLMRobertaConfig

    config = XLMRobertaConfig(vocab_size=500, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                              intermediate_size=128, initializer_range=0.05)
    torch.manual_seed(0)
    model = ours.XLMRobertaForMaskedLM(config)
    weight = model.roberta.encoder.layer[0].intermediate.dense.weight
    assert abs(weight.std().item() - 0.05) < 0.005 and abs(weight.mean().item()) < 0.005
    assert torch.all(model.roberta.embeddings.word_embeddings.weight[config.pad_token_id] == 0)
    assert model.lm_head.decoder.weight is model.roberta.embeddings.word_embeddings.weight
    assert model.lm_head.decoder.bias is model.lm_head.bias
    assert torch.all(model.roberta.encoder.layer[0].output.LayerNorm.weight == 1)
