"""Tokenizer directories saved by transformers 4.x and 5.x, each followed as its own release behaves (versions.py).

Runs with the suite's transformers 4.57. A transformers 5 directory is laid out from transformers5_tokenizer_configs.json
(the tokenizer_config.json transformers 5 writes per family, checked against transformers 5 itself by
test_transformers5.py) beside a tokenizer.json and nothing else; a 4.x directory is what transformers 4.57 saves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import onnxport.tokenizers as ours
from onnxport.errors import ModelFileError
from onnxport.tokenizers.versions import saved_by_major
from tokenizer_fixtures import TEXTS, write_roberta_files, write_roformer_files, write_xlm_roberta_files

transformers = pytest.importorskip("transformers")

CONFIGS = json.loads(Path(__file__).with_name("transformers5_tokenizer_configs.json").read_text())
FAMILIES = {
    # class stem: (vocabulary writer, mask token)
    "XLMRobertaTokenizer": (write_xlm_roberta_files, "<mask>"),
    "RobertaTokenizer": (write_roberta_files, "<mask>"),
    "RoFormerTokenizer": (write_roformer_files, "[MASK]"),
}
PAIRS = [("Hello world!", "The quick brown fox jumps over the lazy dog."), ("今天天气非常好。", "我们去北京吧，机器学习很有趣！"),
         ("Café naïve", "")]


@pytest.fixture(scope="module")
def directories(tmp_path_factory):
    """class stem -> (vocabulary files dir, 4.x dir saved by transformers 4.57, 5.x-layout dir)."""
    root = tmp_path_factory.mktemp("tokenizer-versions")
    made = {}
    for stem, (write, _) in FAMILIES.items():
        vocabulary = write(root / f"{stem}-files")
        fast = getattr(transformers, stem + "Fast").from_pretrained(str(vocabulary))
        v4 = root / f"{stem}-4x"
        fast.save_pretrained(str(v4))
        v5 = root / f"{stem}-5x"
        v5.mkdir()
        shutil.copy(v4 / "tokenizer.json", v5 / "tokenizer.json")
        (v5 / "tokenizer_config.json").write_text(json.dumps(CONFIGS[stem], indent=2))
        made[stem] = (vocabulary, v4, v5)
    return made


def _plain(encoding, keys=None):
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in dict(encoding).items() if keys is None or k in keys}


def test_the_rule():
    assert saved_by_major({}) == 4
    assert saved_by_major({"tokenizer_class": "RoFormerTokenizer", "added_tokens_decoder": {}}) == 4
    assert saved_by_major({"backend": "tokenizers"}) == saved_by_major({"backend": "sentencepiece"}) == 5
    # An explicit version wins over the marker, either way.
    assert saved_by_major({"backend": "tokenizers", "transformers_version": "4.57.1"}) == 4
    assert saved_by_major({"transformers_version": "5.0.0rc1"}) == 5
    assert saved_by_major({"transformers_version": "not a version", "backend": "tokenizers"}) == 5
    assert all(config["backend"] == "tokenizers" for stem, config in CONFIGS.items() if stem != "_written_by")


@pytest.mark.parametrize("stem", FAMILIES)
def test_transformers4_directory_behaves_as_transformers4(directories, stem):
    _, v4, _ = directories[stem]
    assert "backend" not in json.loads((v4 / "tokenizer_config.json").read_text())
    for use_fast in (True, False):
        theirs = transformers.AutoTokenizer.from_pretrained(str(v4), use_fast=use_fast)
        mine = ours.AutoTokenizer.from_pretrained(v4, use_fast=use_fast)
        assert mine.is_fast == use_fast and mine.transformers_major == 4
        assert mine.model_input_names == theirs.model_input_names
        for text in TEXTS:
            assert _plain(mine(text)) == _plain(theirs(text)), text
        for pair in PAIRS[:2]:
            assert _plain(mine(*pair)) == _plain(theirs(*pair)), pair
    if stem == "RoFormerTokenizer":
        assert "token_type_ids" in mine(*PAIRS[0]) and mine(*PAIRS[0])["token_type_ids"][-1] == 1


@pytest.mark.parametrize("stem", FAMILIES)
def test_transformers5_directory_behaves_as_transformers5(directories, stem):
    """Same ids and masks as transformers on the same tokenizer.json; the default keys are 5.x's (RoFormer: no
    token_type_ids unless asked), and use_fast=False gives the Rust tokenizer as transformers 5 does."""
    _, v4, v5 = directories[stem]
    # The same tokenizer.json as transformers 4.57 reads it (from the 4.x directory: 4.57 cannot read 5.x's XLM-R
    # tokenizer_config.json, whose extra_special_tokens is a list).
    reference = getattr(transformers, stem + "Fast").from_pretrained(str(v4))
    for use_fast in (True, False):
        mine = ours.AutoTokenizer.from_pretrained(v5, use_fast=use_fast)
        assert mine.is_fast and mine.transformers_major == 5
        assert mine.model_input_names == ["input_ids", "attention_mask"]
        for args in [(text,) for text in TEXTS] + PAIRS:
            got = mine(*args)
            assert list(got) == ["input_ids", "attention_mask"], args
            assert _plain(got) == _plain(reference(*args), ("input_ids", "attention_mask")), args
            typed = mine(*args, return_token_type_ids=True)["token_type_ids"]
            assert typed == reference(*args, return_token_type_ids=True)["token_type_ids"]
        assert mine.all_special_tokens == reference.all_special_tokens
    if stem == "XLMRobertaTokenizer":  # 5.x's "extra_special_tokens" list: special, not in special_tokens_map
        assert mine.extra_special_tokens == ["<s>", "</s>"]
        assert "additional_special_tokens" not in mine.special_tokens_map


@pytest.mark.parametrize("stem", ["RobertaTokenizer", "RoFormerTokenizer"])
def test_slow_class_reads_tokenizer_json(directories, stem, tmp_path):
    """On a tokenizer.json-only directory the slow class builds from tokenizer.json and tokenizes as transformers
    4.57's slow class on the original vocabulary files; saving writes those files back."""
    vocabulary, _, v5 = directories[stem]
    mask = FAMILIES[stem][1]
    theirs = getattr(transformers, stem).from_pretrained(str(vocabulary))
    mine = getattr(ours, stem).from_pretrained(v5)
    assert not mine.is_fast and mine.transformers_major == 5 and mine.get_vocab() == theirs.get_vocab()
    keys = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask")
    options = dict(return_token_type_ids=True, return_special_tokens_mask=True)
    texts = TEXTS + [f"The capital is {mask}.", f"天气{mask}好"]
    for args in [(text,) for text in texts] + PAIRS:
        assert _plain(mine(*args, **options)) == _plain(theirs(*args, **options), keys), args
        ids = theirs(*args)["input_ids"]
        assert mine.tokenize(args[0]) == theirs.tokenize(args[0])
        for skip in (False, True):
            assert mine.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    written = {Path(path).name for path in mine.save_pretrained(tmp_path)}
    assert set(getattr(ours, stem).vocab_files.values()) <= written
    again = getattr(ours, stem).from_pretrained(tmp_path)  # now from the vocabulary files it wrote
    assert again.transformers_major == 5 and again.get_vocab() == mine.get_vocab()
    assert [again(*p)["input_ids"] for p in PAIRS] == [theirs(*p)["input_ids"] for p in PAIRS]


def test_slow_xlm_roberta_names_the_missing_file_and_the_fast_class(directories):
    _, _, v5 = directories["XLMRobertaTokenizer"]
    with pytest.raises(ModelFileError, match=r"sentencepiece\.bpe\.model.*only tokenizer\.json.*XLMRobertaTokenizerFast"):
        ours.XLMRobertaTokenizer.from_pretrained(v5)
    assert ours.AutoTokenizer.from_pretrained(v5, use_fast=False).is_fast  # as transformers 5 answers use_fast=False


def test_saving_keeps_the_release(directories, tmp_path):
    for stem, (_, v4, v5) in directories.items():
        for source, major in ((v4, 4), (v5, 5)):
            saved = tmp_path / f"{stem}-{major}"
            ours.AutoTokenizer.from_pretrained(source).save_pretrained(saved)
            assert ours.AutoTokenizer.from_pretrained(saved).transformers_major == major, (stem, major)
            assert ours.AutoTokenizer.from_pretrained(saved).model_input_names == \
                ours.AutoTokenizer.from_pretrained(source).model_input_names


def test_export_and_pipeline_follow_a_transformers5_tokenizer(directories, checkpoint_factory, tmp_path):
    """A RoFormer checkpoint with a 5.x tokenizer: the export keeps the marker and its text-classification pipeline
    scores a pair with type 0 for both texts, as transformers 5's pipeline feeds the model."""
    import torch

    from conftest import build_hf_checkpoint, hf_class
    from onnxport.exporters import export
    from onnxport.runtime import pipeline

    _, _, v5 = directories["RoFormerTokenizer"]
    size = len(ours.AutoTokenizer.from_pretrained(v5))
    checkpoint = build_hf_checkpoint(tmp_path / "ckpt", "roformer", "ForSequenceClassification", vocab_size=size)
    for item in v5.iterdir():
        shutil.copy(item, Path(checkpoint) / item.name)
    out = tmp_path / "onnx"
    export(checkpoint, str(out), framework="pt", task="text-classification")
    assert json.loads((out / "tokenizer_config.json").read_text())["backend"] == "tokenizers"
    served = pipeline("text-classification", str(out), provider="cpu")
    assert served.tokenizer.transformers_major == 5
    model = hf_class("roformer", "ForSequenceClassification").from_pretrained(checkpoint, attn_implementation="eager")
    reference = transformers.RoFormerTokenizerFast.from_pretrained(checkpoint)
    for pair in PAIRS[:2]:
        encoded = reference(*pair, return_tensors="pt")
        with torch.no_grad():
            untyped = model.eval()(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                   token_type_ids=torch.zeros_like(encoded["input_ids"])).logits[0].softmax(-1)
            typed = model(**encoded).logits[0].softmax(-1)
        got = served({"text": pair[0], "text_pair": pair[1]}, top_k=None)
        scores = {entry["label"]: entry["score"] for entry in got}
        want = [scores[model.config.id2label[i]] for i in range(len(untyped))]
        assert np.allclose(want, untyped.numpy(), atol=1e-5)
        assert not np.allclose(want, typed.numpy(), atol=1e-5)  # the types matter to this model


def test_slow_class_on_an_unusable_tokenizer_json(tmp_path):
    """A tokenizer.json of another model type, or one that does not parse, is a ModelFileError saying so."""
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"backend": "tokenizers"}))
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}))
    with pytest.raises(ModelFileError, match="holds a Unigram model; RoFormerTokenizer reads a WordPiece"):
        ours.RoFormerTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ModelFileError, match="holds a Unigram model; RobertaTokenizer reads a BPE"):
        ours.RobertaTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not a valid tokenizer.json"):
        ours.RoFormerTokenizer.from_pretrained(tmp_path)
