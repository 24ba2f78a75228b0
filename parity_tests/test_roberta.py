"""RoBERTa checkpoints (``model_type: roberta``): XLM-R's architecture under RoBERTa's names, end to end.

The 21 ``Roberta*`` / ``TFRoberta*`` / ``FlaxRoberta*`` classes against transformers' PyTorch classes on
non-zero token types; a checkpoint with only ``vocab.json`` + ``merges.txt`` exported by the CLI without
``--task`` and served by the fill-mask pipeline with transformers' answers; and every front end's export
equal to transformers on non-zero token types (they used to be dropped from the graph).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY, max_abs_diff
from onnxport.families import FAMILIES, HEADS

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a lazy dog sleeps in the sun while the fox runs",
    "paris is the capital of france and berlin of germany",
    "onnxport exports encoder transformers to onnx",
]


def _hf_roberta(head: str, seed: int = 0, **overrides):
    import transformers

    config = transformers.RobertaConfig(**{**TINY, **overrides}, is_decoder=head == "ForCausalLM")
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, "Roberta" + head)(config).eval()
    with torch.no_grad():  # non-trivial biases and norms, as in conftest
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def _inputs(head: str, seed: int = 3):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, TINY["vocab_size"], size=(2, 7))
    types = rng.integers(0, 2, size=(2, 7))  # non-zero token types: type_vocab_size is 2
    mask = np.ones((2, 7), np.int64)
    mask[1, 5:] = 0
    if head == "ForMultipleChoice":
        ids, types, mask = (np.repeat(x[:, None], 3, axis=1) for x in (ids, types, mask))
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def test_roberta_is_a_family_row_sharing_xlm_roberta_architecture():
    roberta, xlmr = FAMILIES["roberta"], FAMILIES["xlm-roberta"]
    differing = {f for f in roberta.__dataclass_fields__ if getattr(roberta, f) != getattr(xlmr, f)}
    assert differing == {"model_type", "config_class", "class_prefix", "tokenizer_class", "tokenizer_files"}


@pytest.mark.parametrize("head", HEADS)
def test_roberta_classes_match_transformers_in_every_framework(tmp_path, head):
    from onnxport.reference_models import flax as ref_flax, pt as ref_pt, tf as ref_tf

    hf = _hf_roberta(head)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    feeds = _inputs(head)
    with torch.no_grad():
        want = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()})[0].numpy()
    pt_model = getattr(ref_pt, "Roberta" + head).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        got_pt = pt_model(**{k: torch.from_numpy(v) for k, v in feeds.items()})[0].numpy()
    got_tf = getattr(ref_tf, "TFRoberta" + head).from_pretrained(tmp_path)(**feeds)[0].numpy()
    got_flax = np.asarray(getattr(ref_flax, "FlaxRoberta" + head).from_pretrained(tmp_path)(**feeds)[0])
    for got in (got_pt, got_tf, got_flax):
        assert max_abs_diff(got, want) <= 1e-5
    assert type(pt_model).__name__ == "Roberta" + head


@pytest.fixture(scope="module")
def roberta_mlm_checkpoint(tmp_path_factory):
    """A RoBERTa masked-LM checkpoint as users have them: config.json (model_type roberta), model.safetensors,
    vocab.json and merges.txt only (no tokenizer.json, no tokenizer_config.json)."""
    from tokenizers import ByteLevelBPETokenizer

    path = tmp_path_factory.mktemp("roberta-mlm")
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(CORPUS * 5, vocab_size=300, min_frequency=1, show_progress=False,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    trainer.save_model(str(path))
    vocab_size = len(json.loads((path / "vocab.json").read_text()))
    model = _hf_roberta("ForMaskedLM", seed=1, vocab_size=vocab_size, max_position_embeddings=66)
    model.config.architectures = ["RobertaForMaskedLM"]
    model.save_pretrained(path, safe_serialization=True)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    assert json.loads((path / "config.json").read_text())["model_type"] == "roberta"
    return path, model


def test_cli_exports_a_roberta_checkpoint_and_fill_mask_answers_as_transformers(roberta_mlm_checkpoint, tmp_path):
    import transformers

    from onnxport.runtime import pipeline

    checkpoint, hf_model = roberta_mlm_checkpoint
    out = tmp_path / "export"
    result = subprocess.run([sys.executable, "-m", "onnxport.cli", "export", str(checkpoint), str(out)],
                            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "onnxport.json").read_text())
    assert meta["task"] == "fill-mask" and meta["io_spec"]["model_type"] == "roberta"
    texts = ["the quick brown <mask> jumps over the lazy dog", "paris is the <mask> of france"]
    ours = pipeline("fill-mask", out, provider="cpu")(texts, top_k=3)
    tokenizer = transformers.RobertaTokenizerFast(vocab_file=str(checkpoint / "vocab.json"),
                                                  merges_file=str(checkpoint / "merges.txt"))
    theirs = transformers.pipeline("fill-mask", model=hf_model, tokenizer=tokenizer, framework="pt")(texts, top_k=3)
    for mine, want in zip(ours, theirs):
        assert [m["token"] for m in mine] == [w["token"] for w in want]
        assert [m["token_str"] for m in mine] == [w["token_str"] for w in want]
        assert np.allclose([m["score"] for m in mine], [w["score"] for w in want], atol=1e-5)


@pytest.mark.parametrize("framework", ["pt", "tf", "flax"])
@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "roberta-prelayernorm"])
def test_exports_take_token_types_and_equal_transformers_on_them(checkpoint_factory, tmp_path, framework, model_type):
    """type_vocab_size 2: the graph has a token_type_ids input, and non-zero types change the answer as natively."""
    import onnxruntime as ort
    import transformers

    from onnxport.exporters import export, load_spec

    if model_type == "roberta":
        hf = _hf_roberta("Model")
        checkpoint = tmp_path / "ckpt"
        hf.save_pretrained(checkpoint, safe_serialization=True)
    else:
        checkpoint = checkpoint_factory(model_type, "Model")
        hf = transformers.AutoModel.from_pretrained(checkpoint, attn_implementation="eager").eval()
    report = export(checkpoint, tmp_path / "out", framework=framework, task="feature-extraction")
    spec = load_spec(tmp_path / "out")
    assert "token_type_ids" in spec.input_names
    session = ort.InferenceSession(report.model_path, providers=["CPUExecutionProvider"])
    feeds = _inputs("Model")
    got = session.run(["last_hidden_state"], feeds)[0]
    with torch.no_grad():
        want = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
        zero_types = hf(input_ids=torch.from_numpy(feeds["input_ids"]),
                        attention_mask=torch.from_numpy(feeds["attention_mask"])).last_hidden_state.numpy()
    assert max_abs_diff(got, want) <= 1e-4
    assert max_abs_diff(want, zero_types) > 1e-2  # the token types really matter in this case
