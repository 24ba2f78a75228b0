"""Configs and checkpoints: HF config.json both ways, every weight-file format, prefixes, errors."""

from __future__ import annotations

import json
import os
import sys
import subprocess

import numpy as np
import pytest
import torch

from conftest import MODEL_TYPES, hf_class, max_abs_diff, sample_inputs
from onnxport import checkpoints
from onnxport.configs import AutoConfig, ConfigError, RobertaPreLayerNormConfig, RoFormerConfig, XLMRobertaConfig
from onnxport.reference_models import pt as ours
from onnxport.reference_models.common import InputError


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_config_defaults_equal_transformers(model_type):
    import transformers

    theirs = transformers.AutoConfig.for_model(model_type)
    mine = AutoConfig.for_model(model_type)
    for key, value in mine.to_dict().items():
        if key in ("model_type", "architectures", "torch_dtype", "return_dict", "output_attentions", "id2label"):
            continue
        assert getattr(theirs, key) == value, key
    assert mine.id2label == theirs.id2label
    assert mine.num_labels == theirs.num_labels == 2


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_config_json_round_trip_with_transformers(tmp_path, model_type):
    import transformers

    theirs = transformers.AutoConfig.for_model(
        model_type, hidden_size=48, num_attention_heads=6, id2label={0: "NEG", 1: "NEU", 2: "POS"},
        problem_type="single_label_classification", is_decoder=True, some_future_field={"x": 1},
    )
    theirs.save_pretrained(tmp_path / "hf")
    mine = AutoConfig.from_pretrained(tmp_path / "hf")
    assert type(mine).model_type == model_type
    assert mine.num_labels == 3 and mine.id2label == {0: "NEG", 1: "NEU", 2: "POS"} and mine.label2id["POS"] == 2
    assert mine.hidden_size == 48 and mine.is_decoder and mine.problem_type == "single_label_classification"
    assert mine.some_future_field == {"x": 1}  # unknown keys survive
    mine.save_pretrained(tmp_path / "ours")
    back = transformers.AutoConfig.from_pretrained(tmp_path / "ours")
    assert back.model_type == model_type and back.id2label == theirs.id2label and back.some_future_field == {"x": 1}
    assert back.hidden_size == 48 and back.problem_type == "single_label_classification"
    assert AutoConfig.from_pretrained(tmp_path / "ours") == mine


def test_roformer_embedding_size_defaults_to_hidden_size():
    assert RoFormerConfig(hidden_size=64, num_attention_heads=4).embedding_size == 64
    assert RoFormerConfig(hidden_size=64, num_attention_heads=4, embedding_size=16).embedding_size == 16


@pytest.mark.parametrize(
    "cls,kwargs,message",
    [
        (XLMRobertaConfig, dict(hidden_size=30, num_attention_heads=4), "not a multiple"),
        (RoFormerConfig, dict(hidden_act="gelu_banana"), "hidden_act"),
        (XLMRobertaConfig, dict(position_embedding_type="rotary"), "position_embedding_type"),
        (RobertaPreLayerNormConfig, dict(problem_type="ranking"), "problem_type"),
        (XLMRobertaConfig, dict(add_cross_attention=True), "is_decoder"),
        (XLMRobertaConfig, dict(num_labels=3, id2label={0: "a"}), "num_labels"),
        (RoFormerConfig, dict(hidden_size=36, num_attention_heads=12), "even"),
    ],
)
def test_invalid_config_values_raise_clear_errors(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cls(**kwargs)


def test_unknown_model_type_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="Unknown model_type 'bert'"):
        AutoConfig.for_model("bert")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        AutoConfig.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="No config.json"):
        AutoConfig.from_pretrained(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- weight files
def _hf_model(checkpoint_factory, model_type, head):
    path = checkpoint_factory(model_type, head)
    return path, hf_class(model_type, head).from_pretrained(path, attn_implementation="eager").eval()


def _logits(model, model_type):
    feeds = {k: torch.from_numpy(v) for k, v in sample_inputs(model_type).items()}
    with torch.no_grad():
        out = model(**feeds)
    for name in ("logits", "start_logits", "last_hidden_state"):
        if name in out:
            return out[name].numpy()


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_pytorch_bin_loads_without_pickle_execution(tmp_path, checkpoint_factory, model_type):
    path, reference = _hf_model(checkpoint_factory, model_type, "ForMaskedLM")
    reference.save_pretrained(tmp_path, safe_serialization=False)
    assert os.path.exists(tmp_path / "pytorch_model.bin")
    from_bin = checkpoints.load_state_dict(str(tmp_path))
    from_safe = checkpoints.load_state_dict(path)
    for key, value in reference.state_dict().items():
        if key in from_bin:
            assert np.array_equal(from_bin[key], value.numpy()), key
    assert set(from_safe) <= set(from_bin)
    model = ours.model_class(model_type, "ForMaskedLM").from_pretrained(tmp_path)
    assert max_abs_diff(_logits(model, model_type), _logits(reference, model_type)) <= 1e-5


def test_bin_with_code_is_refused(tmp_path):
    """A pickle that would run code must be rejected, and the code must not run."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"weight": torch.zeros(2), "evil": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(checkpoints.CheckpointError, match="never executes pickled code"):
        checkpoints.load_state_dict(str(tmp_path))
    assert not marker.exists()


def test_bf16_fp16_and_sharded_checkpoints(tmp_path, checkpoint_factory):
    path, reference = _hf_model(checkpoint_factory, "xlm-roberta", "ForSequenceClassification")
    want = _logits(reference, "xlm-roberta")
    for dtype, tol in ((torch.float16, 2e-2), (torch.bfloat16, 1.5e-1)):
        half = hf_class("xlm-roberta", "ForSequenceClassification").from_pretrained(path).to(dtype)
        for safe in (True, False):
            out = tmp_path / f"{dtype}-{safe}"
            half.save_pretrained(out, safe_serialization=safe)
            state = checkpoints.load_state_dict(str(out))
            assert all(v.dtype == np.float32 for v in state.values() if v.dtype.kind == "f")
            # bit-exact widening of the stored half-precision values
            key = "classifier.out_proj.weight"
            assert np.array_equal(state[key], half.state_dict()[key].float().numpy())
            model = ours.XLMRobertaForSequenceClassification.from_pretrained(out)
            assert max_abs_diff(_logits(model, "xlm-roberta"), want) < tol
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
    model = ours.XLMRobertaForSequenceClassification.from_pretrained(tmp_path / "sharded")
    assert max_abs_diff(_logits(model, "xlm-roberta"), want) <= 1e-6
    # and our own sharded writer, read back by transformers
    model.save_pretrained(tmp_path / "ours-sharded", max_shard_size=20_000)
    assert len([f for f in os.listdir(tmp_path / "ours-sharded") if f.endswith(".safetensors")]) > 1
    again = hf_class("xlm-roberta", "ForSequenceClassification").from_pretrained(tmp_path / "ours-sharded").eval()
    assert max_abs_diff(_logits(again, "xlm-roberta"), want) <= 1e-6


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("head", ["ForMaskedLM", "ForCausalLM", "ForQuestionAnswering", "ForMultipleChoice"])
def test_onnxport_checkpoint_loads_in_transformers(tmp_path, checkpoint_factory, model_type, head):
    path, reference = _hf_model(checkpoint_factory, model_type, head)
    model = ours.model_class(model_type, head).from_pretrained(path)
    model.save_pretrained(tmp_path)
    saved = checkpoints.load_state_dict(str(tmp_path))
    assert not any(k.endswith("decoder.bias") for k in saved)  # tied aliases are not stored twice
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [type(reference).__name__]
    back = hf_class(model_type, head).from_pretrained(tmp_path, attn_implementation="eager").eval()
    for key, value in reference.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    if head != "ForMultipleChoice":
        assert max_abs_diff(_logits(back, model_type), _logits(reference, model_type)) == 0.0


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_base_checkpoint_into_head_and_head_into_base(tmp_path, checkpoint_factory, model_type, caplog):
    path, reference = _hf_model(checkpoint_factory, model_type, "ForTokenClassification")
    base = ours.model_class(model_type, "Model").from_pretrained(path)  # head checkpoint -> base model
    with torch.no_grad():
        feeds = {k: torch.from_numpy(v) for k, v in sample_inputs(model_type).items()}
        hidden = reference.base_model(**feeds).last_hidden_state.numpy()
        assert max_abs_diff(base(**feeds).last_hidden_state.numpy(), hidden) <= 1e-5
    base.save_pretrained(tmp_path)
    assert not any(k.startswith(base.family.base_model_prefix + ".") for k in checkpoints.load_state_dict(str(tmp_path)))
    with caplog.at_level("WARNING", logger="onnxport"):
        head = ours.model_class(model_type, "ForTokenClassification").from_pretrained(tmp_path)  # base -> head
    assert "classifier.weight" in caplog.text  # the report names what was newly initialised
    with torch.no_grad():
        got = getattr(head, head.family.base_model_prefix)(**feeds).last_hidden_state.numpy()
    assert max_abs_diff(got, hidden) <= 1e-5


def test_fit_report_lists_missing_unexpected_and_mismatched():
    expected = {"roberta.a": (2,), "roberta.b": (3,), "classifier.weight": (2, 2)}
    state = {"a": np.zeros(2), "b": np.zeros(4), "junk": np.zeros(1)}
    fitted, report = checkpoints.fit_state_dict(state, expected, "roberta")
    assert set(fitted) == {"roberta.a"}
    assert report.missing == ["classifier.weight"]
    assert report.unexpected == ["roberta.junk"] or report.unexpected == ["junk"]
    assert report.mismatched == [("roberta.b", (4,), (3,))]
    assert "shape mismatch for roberta.b" in str(report)


def test_missing_and_corrupt_checkpoint_files(tmp_path, checkpoint_factory):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ours.XLMRobertaModel.from_pretrained(tmp_path / "absent")
    XLMRobertaConfig(vocab_size=99, hidden_size=32, num_attention_heads=4).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="No weights"):
        ours.XLMRobertaModel.from_pretrained(tmp_path)
    good = checkpoint_factory("xlm-roberta", "Model")
    data = open(os.path.join(good, "model.safetensors"), "rb").read()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoints.CheckpointError, match="truncated"):
        ours.XLMRobertaModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(checkpoints.CheckpointError, match="not a valid safetensors"):
        ours.XLMRobertaModel.from_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(checkpoints.CheckpointError):
        ours.XLMRobertaModel.from_pretrained(tmp_path)


def test_config_and_weights_that_disagree(tmp_path, checkpoint_factory):
    good = checkpoint_factory("roformer", "ForMaskedLM")
    config = json.loads(open(os.path.join(good, "config.json")).read())
    config["vocab_size"] = 120
    (tmp_path / "config.json").write_text(json.dumps(config))
    # a copy: a symlink leading out of the checkpoint directory is refused (test_hostile_checkpoints.py)
    (tmp_path / "model.safetensors").write_bytes(open(os.path.join(good, "model.safetensors"), "rb").read())
    with pytest.raises(checkpoints.CheckpointError, match="disagree with its config"):
        ours.RoFormerForMaskedLM.from_pretrained(tmp_path)
    with pytest.raises(checkpoints.CheckpointError, match="not 'xlm-roberta'"):
        ours.XLMRobertaModel.from_pretrained(good)


# ----------------------------------------------------------------------------- bad inputs
@pytest.fixture(scope="module")
def tiny_models(checkpoint_factory):
    return {m: ours.model_class(m, "ForMaskedLM").from_pretrained(checkpoint_factory(m, "ForMaskedLM")) for m in MODEL_TYPES}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_bad_inputs_raise_before_native_errors(tiny_models, model_type):
    model = tiny_models[model_type]
    ids = torch.from_numpy(sample_inputs(model_type)["input_ids"])
    with pytest.raises(InputError, match=r"input_ids must lie in \[0, 98\]"):
        model(input_ids=ids + 200)
    with pytest.raises(InputError, match="must lie in"):
        model(input_ids=ids - 100)
    too_long = torch.full((1, 41), 5)
    with pytest.raises(InputError, match="exceeds the model's maximum"):
        model(input_ids=too_long)
    with pytest.raises(InputError, match="attention_mask must have shape"):
        model(input_ids=ids, attention_mask=torch.ones(ids.shape[0], ids.shape[1] + 1))
    with pytest.raises(InputError, match="token_type_ids must have the shape"):
        model(input_ids=ids, token_type_ids=torch.zeros(ids.shape[0], 2, dtype=torch.long))
    with pytest.raises(InputError, match="token_type_ids must lie"):
        model(input_ids=ids, token_type_ids=torch.full_like(ids, 2))
    with pytest.raises(InputError, match="add a batch dimension"):
        model(input_ids=ids[0])
    with pytest.raises(InputError, match="either input_ids or inputs_embeds"):
        model()
    # the longest allowed input works
    limit = model.config.max_sequence_length
    assert model(input_ids=torch.full((1, limit), 5)).logits.shape == (1, limit, 99)


def test_package_import_pulls_no_framework():
    code = (
        "import sys, onnxport, onnxport.configs, onnxport.checkpoints, onnxport.families;"
        "bad=[m for m in ('torch','tensorflow','jax','flax','transformers') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_saved_architectures_name_the_class_as_transformers_does(tmp_path, checkpoint_factory):
    """transformers writes the saving class's own name (a user's subclass included); ours the same."""
    path, reference = _hf_model(checkpoint_factory, "roformer", "ForMaskedLM")
    theirs = type("MyRoFormer", (type(reference),), {})
    mine = type("MyRoFormer", (ours.RoFormerForMaskedLM,), {})
    theirs(reference.config).save_pretrained(tmp_path / "hf")
    mine.from_pretrained(path).save_pretrained(tmp_path / "ours")
    saved = [json.loads((tmp_path / d / "config.json").read_text())["architectures"] for d in ("hf", "ours")]
    assert saved == [["MyRoFormer"], ["MyRoFormer"]]
