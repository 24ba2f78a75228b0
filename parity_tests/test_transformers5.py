"""onnxport on checkpoints and tokenizer directories saved by transformers 5, against transformers 5 itself.

Runs only where transformers>=5 is installed: `.ci/run` builds that venv (transformers>=5, torch==2.13.0 CPU,
`pip install .`) next to the main one (transformers 4.57, where this module is skipped with the reason shown).

- Tokenizers: transformers 5 saves each family's tokenizer from real vocabularies (real_vocab.py: GPT-2's BPE,
  bert-base-chinese's WordPiece, a 120k-piece multilingual SentencePiece model) into a directory holding only
  tokenizer.json + tokenizer_config.json; onnxport's tokenizers on that directory must give transformers 5's ids,
  masks, token types (RoFormer: none by default), offsets, overflow rows and decode, texts and pairs alike.
- Checkpoints: every family (xlm-roberta, roberta, roberta-prelayernorm, roformer) and head saved by transformers 5
  exports from PyTorch and equals transformers 5's outputs within 1e-4. Only the PyTorch front end: transformers 5
  removed its TensorFlow and Flax classes, so tf/flax checkpoints cannot be made (nor compared) next to it.
- Pipelines: fill-mask, text-classification on a text pair and token-classification served by onnxport's
  runtime from those exports answer as transformers 5's pipelines; question-answering (a pipeline transformers 5
  removed) as transformers 5's tokenizer and model with the span rule written out.
"""

from __future__ import annotations

import json
import os

from pathlib import Path

import numpy as np
import pytest

if os.environ.get("ONNXPORT_REQUIRE_TRANSFORMERS5"):  # .ci/run's transformers 5 venv: a skip would hide a failure
    import transformers
    assert int(transformers.__version__.split(".")[0]) >= 5, f"transformers {transformers.__version__} installed"
transformers = pytest.importorskip("transformers")
if int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip(f"needs transformers>=5 (installed: {transformers.__version__}); .ci/run runs this module in a "
                "venv with transformers 5", allow_module_level=True)

import torch  # noqa: E402

import real_vocab  # noqa: E402
import onnxport.tokenizers as ours  # noqa: E402
from conftest import TINY, max_abs_diff  # noqa: E402
from onnxport.errors import ModelFileError  # noqa: E402
from onnxport.exporters import export, load_spec  # noqa: E402
from onnxport.exporters.io_spec import TASKS, make_inputs  # noqa: E402
from onnxport.exporters.validate import DEFAULT_ATOL  # noqa: E402
from onnxport.families import FAMILIES  # noqa: E402
from onnxport.runtime import load_model, pipeline  # noqa: E402
from test_tokenizers_real_vocab import TEXTS, typed_special_texts  # noqa: E402

# vocabulary -> (real_vocab builder, transformers class, mask, cls, sep)
VOCABULARIES = {
    "gpt2": (real_vocab.gpt2_directory, "RobertaTokenizer", "<mask>", "<s>", "</s>"),
    "bert-base-chinese": (real_vocab.bert_chinese_directory, "RoFormerTokenizer", "[MASK]", "[CLS]", "[SEP]"),
    "sentencepiece-multilingual": (real_vocab.sentencepiece_directory, "XLMRobertaTokenizer", "<mask>", "<s>", "</s>"),
}
VOCABULARY_OF = {"xlm-roberta": "sentencepiece-multilingual", "roberta": "gpt2", "roberta-prelayernorm": "gpt2",
                 "roformer": "bert-base-chinese"}
HEAD_TASKS = {task.head: name for name, task in TASKS.items() if task.is_head_graph}  # HF heads, each once
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
CONFIGS_FIXTURE = Path(__file__).with_name("transformers5_tokenizer_configs.json")


@pytest.fixture(scope="module")
def v5_directories(tmp_path_factory):
    """vocabulary name -> directory saved by transformers 5 from the real vocabulary files (or the reason why not)."""
    root = tmp_path_factory.mktemp("v5-tokenizers")
    found = {}
    for name, (build, class_name, *_rest) in VOCABULARIES.items():
        try:
            source = build()
        except real_vocab.VocabularyUnavailable as error:
            found[name] = error
            continue
        getattr(transformers, class_name).from_pretrained(str(source)).save_pretrained(str(root / name))
        found[name] = root / name
    return found


def _directory(v5_directories, name):
    found = v5_directories[name]
    if isinstance(found, Exception):
        pytest.skip(f"vocabulary {name} unavailable: {found}")
    return found


# ----------------------------------------------------------------------------- what transformers 5 writes
@pytest.mark.parametrize("name", VOCABULARIES)
def test_v5_directories_are_what_the_main_suite_assumes(v5_directories, name):
    """The main suite (transformers 4.57) builds v5 directories from transformers5_tokenizer_configs.json: this is
    where that file is checked against what transformers 5 really writes, and where the marker rule is."""
    directory = _directory(v5_directories, name)
    class_name = VOCABULARIES[name][1]
    assert sorted(p.name for p in directory.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    written = json.loads((directory / "tokenizer_config.json").read_text())
    assert written == json.loads(CONFIGS_FIXTURE.read_text())[class_name]
    assert "transformers_version" not in written and written["backend"] == "tokenizers"
    assert ours.AutoTokenizer.from_pretrained(directory).transformers_major == 5


# ----------------------------------------------------------------------------- tokenizers
def _columns(encoding):
    return {key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in dict(encoding).items()}


@pytest.mark.parametrize("use_fast", [True, False], ids=["fast", "use_fast=False"])
@pytest.mark.parametrize("name", VOCABULARIES)
def test_tokenizers_equal_transformers5(v5_directories, name, use_fast):
    directory = _directory(v5_directories, name)
    _, _, mask, cls, sep = VOCABULARIES[name]
    theirs = transformers.AutoTokenizer.from_pretrained(str(directory), use_fast=use_fast)
    mine = ours.AutoTokenizer.from_pretrained(directory, use_fast=use_fast)
    texts = TEXTS + typed_special_texts(mask, cls, sep)
    pairs = list(zip(texts, texts[1:] + texts[:1]))
    options = [{}, dict(return_offsets_mapping=True, return_special_tokens_mask=True, return_length=True),
               dict(return_token_type_ids=True), dict(add_special_tokens=False)]
    compared = 0
    for kwargs in options:
        for text in texts:
            assert _columns(mine(text, **kwargs)) == _columns(theirs(text, **kwargs)), (text, kwargs)
            compared += 1
        for first, second in pairs:
            assert _columns(mine(first, second, **kwargs)) == _columns(theirs(first, second, **kwargs)), (first, kwargs)
            compared += 1
    for kwargs in (dict(padding=True), dict(padding="max_length", max_length=24, truncation=True),
                   dict(truncation="only_second", max_length=24, return_overflowing_tokens=True, stride=3,
                        return_offsets_mapping=True)):
        firsts = ["Hello World!", "lower newer", "今天天气", "Encode this sequence.", "Привет"]  # short questions
        seconds = texts[1:6]  # longer contexts
        got = _columns(mine(firsts, seconds, **kwargs))
        want = _columns(theirs(firsts, seconds, **kwargs))
        assert got == want, kwargs
        compared += 1
    for text in texts:
        ids = theirs(text)["input_ids"]
        assert mine.tokenize(text) == theirs.tokenize(text), text
        assert mine.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
        for skip in (False, True):
            assert mine.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), text
        compared += 1
    for attribute in ("model_input_names", "all_special_tokens", "all_special_ids", "special_tokens_map",
                      "extra_special_tokens", "vocab_size", "model_max_length", "padding_side", "truncation_side",
                      "clean_up_tokenization_spaces", "pad_token_id", "mask_token_id", "cls_token_id", "sep_token_id"):
        assert getattr(mine, attribute) == getattr(theirs, attribute), attribute
    assert len(mine) == len(theirs) and mine.get_vocab() == theirs.get_vocab()
    assert {i: t.content for i, t in mine.added_tokens_decoder.items()} == \
        {i: t.content for i, t in theirs.added_tokens_decoder.items()}
    print(f"{name} use_fast={use_fast}: {compared} cases equal to transformers {transformers.__version__}")


def test_roformer_pairs_have_no_token_types_by_default(v5_directories):
    """The 5.x default that differs from 4.x: RoFormer's pair encodings carry no token_type_ids unless asked."""
    directory = _directory(v5_directories, "bert-base-chinese")
    for use_fast in (True, False):
        mine = ours.AutoTokenizer.from_pretrained(directory, use_fast=use_fast)
        assert "token_type_ids" not in mine("今天天气非常好", "我们去北京")
        assert mine("今天", "北京", return_token_type_ids=True)["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]


def test_slow_classes_on_v5_directories(v5_directories, tmp_path):
    """The slow classes read RoBERTa's and RoFormer's vocabulary from tokenizer.json (4.x's Python tokenizers on
    it); XLM-R's needs the sentencepiece model and says which class to use instead."""
    for name, cls in (("gpt2", ours.RobertaTokenizer), ("bert-base-chinese", ours.RoFormerTokenizer)):
        directory = _directory(v5_directories, name)
        slow = cls.from_pretrained(directory)
        fast = ours.AutoTokenizer.from_pretrained(directory)
        assert slow.transformers_major == 5 and slow.model_input_names == ["input_ids", "attention_mask"]
        assert slow.get_vocab() == fast.get_vocab()
        for text in ("Hello world! The quick brown fox.", "今天天气非常好，我们去北京。", "It's 12345 or 3.14"):
            assert slow(text, "a pair") == fast(text, "a pair"), text
        saved = tmp_path / name
        slow.save_pretrained(saved)  # writes the vocabulary files and keeps the 5.x marker
        again = cls.from_pretrained(saved)
        assert again.get_vocab() == slow.get_vocab() and again.transformers_major == 5
    with pytest.raises(ModelFileError, match="sentencepiece.bpe.model.*XLMRobertaTokenizerFast"):
        ours.XLMRobertaTokenizer.from_pretrained(_directory(v5_directories, "sentencepiece-multilingual"))


@pytest.mark.parametrize("name", VOCABULARIES)
def test_what_onnxport_saves_loads_in_transformers5(v5_directories, name, tmp_path):
    """A v5 directory re-saved by onnxport (fast, and slow where it reads tokenizer.json) stays a directory that
    transformers 5 loads and tokenizes as the original."""
    directory = _directory(v5_directories, name)
    original = transformers.AutoTokenizer.from_pretrained(str(directory))
    _, class_name, mask, cls, sep = VOCABULARIES[name]
    savers = [ours.AutoTokenizer.from_pretrained(directory)]
    if class_name != "XLMRobertaTokenizer":
        savers.append(getattr(ours, class_name).from_pretrained(directory))
    for index, tokenizer in enumerate(savers):
        tokenizer.save_pretrained(tmp_path / str(index))
        reloaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path / str(index)))
        assert reloaded.model_input_names == original.model_input_names
        assert reloaded.all_special_tokens == original.all_special_tokens
        for args in (("Hello world! 今天天气非常好",), (f"The capital {mask} of France.", "a pair 我们去北京")):
            assert dict(reloaded(*args)) == dict(original(*args)), (type(tokenizer).__name__, args)


# ----------------------------------------------------------------------------- checkpoints, exports, pipelines
def _build_checkpoint(path, model_type, head, tokenizer_dir, seed=0):
    """A tiny random model saved by transformers 5, its vocabulary the tokenizer's, the v5 tokenizer beside it."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    overrides = dict(TINY, vocab_size=len(tokenizer), max_position_embeddings=66)
    if head == "ForCausalLM":
        overrides["is_decoder"] = True
    if head == "ForTokenClassification":
        overrides["id2label"] = NER_LABELS
    config = transformers.AutoConfig.for_model(model_type, **overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, FAMILIES[model_type].class_prefix + head)(config).eval()
    with torch.no_grad():  # biases and LayerNorms start at 0/1: randomise them so they are compared too
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def exported(v5_directories, tmp_path_factory):
    """``exported(model_type, head)`` -> (transformers 5 checkpoint, onnxport export dir), cached."""
    root = tmp_path_factory.mktemp("v5-exports")
    cache = {}

    def get(model_type, head):
        if (model_type, head) not in cache:
            tokenizer_dir = _directory(v5_directories, VOCABULARY_OF[model_type])
            checkpoint = _build_checkpoint(root / f"ckpt-{model_type}-{head}", model_type, head, tokenizer_dir)
            out = root / f"onnx-{model_type}-{head}"
            report = export(checkpoint, str(out), framework="pt", task=HEAD_TASKS[head])
            assert report.validation.passed
            cache[(model_type, head)] = (checkpoint, str(out))
        return cache[(model_type, head)]

    return get


def _hf_model(checkpoint, model_type, head):
    cls = getattr(transformers, FAMILIES[model_type].class_prefix + head)
    return cls.from_pretrained(checkpoint, attn_implementation="eager").eval()


@pytest.mark.parametrize("head", list(HEAD_TASKS))
@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_v5_checkpoints_export_and_equal_transformers5(exported, model_type, head):
    checkpoint, out = exported(model_type, head)
    spec = load_spec(out)
    model = load_model(out, provider="cpu")
    hf = _hf_model(checkpoint, model_type, head)
    feeds_list = [make_inputs(spec, 3, 13, num_choices=3, seed=7)]
    if spec.task != "multiple-choice":  # real text pairs through the v5 tokenizer, with both token types
        encoded = model.tokenizer(["Hello world! The quick brown fox.", "今天天气非常好"], ["a pair", "我们去北京"],
                                  padding=True, return_token_type_ids=True, return_tensors="np")
        feeds_list.append({k: np.asarray(v, np.int64) for k, v in encoded.items() if k in spec.input_names})
    for feeds in feeds_list:
        got = model(**feeds)
        with torch.no_grad():
            want = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()}, return_dict=True)
        for name in spec.output_names:
            assert max_abs_diff(got[name], getattr(want, name).numpy()) <= DEFAULT_ATOL, name


def _hf_pipeline(task, checkpoint, model_type, head):
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    return transformers.pipeline(task, model=_hf_model(checkpoint, model_type, head), tokenizer=tokenizer,
                                 device="cpu")


@pytest.mark.parametrize("model_type", ["xlm-roberta", "roberta", "roformer"])
def test_fill_mask_pipeline_equals_transformers5(exported, model_type):
    checkpoint, out = exported(model_type, "ForMaskedLM")
    mine, theirs = pipeline("fill-mask", out, provider="cpu"), _hf_pipeline("fill-mask", checkpoint, model_type,
                                                                            "ForMaskedLM")
    for text in (f"The capital of France is {mine.tokenizer.mask_token}.", f"今天天气{mine.tokenizer.mask_token}好"):
        got, want = mine(text, top_k=5), theirs(text, top_k=5)
        assert [g["token"] for g in got] == [w["token"] for w in want]
        assert [g["token_str"] for g in got] == [w["token_str"] for w in want]
        assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)


@pytest.mark.parametrize("model_type", ["xlm-roberta", "roberta", "roformer"])
def test_text_classification_on_a_pair_equals_transformers5(exported, model_type):
    checkpoint, out = exported(model_type, "ForSequenceClassification")
    mine = pipeline("text-classification", out, provider="cpu")
    theirs = _hf_pipeline("text-classification", checkpoint, model_type, "ForSequenceClassification")
    pairs = [{"text": "Hello world! The quick brown fox.", "text_pair": "a pair of texts"},
             {"text": "今天天气非常好", "text_pair": "我们去北京"}]
    for pair in pairs:
        got, want = mine(pair, top_k=None), theirs(pair, top_k=None)
        assert [g["label"] for g in got] == [w["label"] for w in want]
        assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5), (got, want)
    if model_type == "roformer":
        # The model does tell type 1 from type 0, so the equality above is transformers 5's type-0 pair, not luck.
        encoded = mine.tokenizer(pairs[1]["text"], pairs[1]["text_pair"], return_token_type_ids=True,
                                 return_tensors="np")
        typed = mine.model(**{k: np.asarray(v, np.int64) for k, v in encoded.items()})["logits"]
        untyped = mine.model(**{k: np.asarray(v, np.int64) for k, v in encoded.items() if k != "token_type_ids"})
        assert max_abs_diff(typed, untyped["logits"]) > 1e-3


@pytest.mark.parametrize("model_type", ["xlm-roberta", "roberta", "roformer"])
def test_token_classification_pipeline_equals_transformers5(exported, model_type):
    checkpoint, out = exported(model_type, "ForTokenClassification")
    mine = pipeline("token-classification", out, provider="cpu")
    theirs = _hf_pipeline("token-classification", checkpoint, model_type, "ForTokenClassification")
    for text in ("Hello world, the quick brown fox in Paris", "今天天气非常好，我们去北京。"):
        for strategy in ("none", "simple", "first", "average", "max"):
            got = mine(text, aggregation_strategy=strategy, ignore_labels=())
            want = theirs(text, aggregation_strategy=strategy, ignore_labels=[])
            key = "entity" if strategy == "none" else "entity_group"
            assert [(e[key], e["start"], e["end"]) for e in got] == [(e[key], e["start"], e["end"]) for e in want]
            assert np.allclose([e["score"] for e in got], [float(e["score"]) for e in want], atol=1e-5)


def _transformers5_answers(checkpoint, model_type, question, context, top_k, max_answer_len):
    """transformers 5 removed its question-answering pipeline; the reference is its tokenizer and model with 4.x's
    pipeline rule written out: softmax of start and end logits over the context tokens and the [CLS] position
    (others at -10000), the top_k spans start <= end < start + max_answer_len inside the context scored
    p(start) * p(end), spans giving the same answer text adding up."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    encoded = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")[0].tolist()
    in_context = np.array([sequence == 1 for sequence in encoded.sequence_ids(0)])
    with torch.no_grad():
        out = _hf_model(checkpoint, model_type, "ForQuestionAnswering")(**encoded)
    allowed = in_context.copy()
    allowed[0] = True

    def probabilities(logits):
        masked = np.where(allowed, logits[0].numpy().astype(np.float64), -10000.0)
        exp = np.exp(masked - masked.max())
        return exp / exp.sum()

    start, end = probabilities(out.start_logits), probabilities(out.end_logits)
    spans = [(start[s] * end[e], s, e) for s in np.flatnonzero(in_context) for e in np.flatnonzero(in_context)
             if s <= e < s + max_answer_len]
    spans.sort(key=lambda span: -span[0])
    answers = {}
    for score, s, e in spans[:top_k]:  # one answer reached through several spans (byte-level BPE) adds up
        text = context[offsets[s][0]:offsets[e][1]]
        if text in answers:
            answers[text]["score"] += score
        else:
            answers[text] = {"score": score, "start": offsets[s][0], "end": offsets[e][1], "answer": text}
    return sorted(answers.values(), key=lambda answer: -answer["score"])


@pytest.mark.parametrize("model_type", ["xlm-roberta", "roberta", "roformer"])
def test_question_answering_pipeline_equals_transformers5(exported, model_type):
    checkpoint, out = exported(model_type, "ForQuestionAnswering")
    mine = pipeline("question-answering", out, provider="cpu")
    for question, context in (("where is the fox", "the quick brown fox jumps over the lazy dog near the river"),
                              ("我们去哪里", "今天天气非常好，我们去北京。")):
        got = mine(question=question, context=context, top_k=3, max_answer_len=5, align_to_words=False)
        want = _transformers5_answers(checkpoint, model_type, question, context, top_k=3, max_answer_len=5)
        assert [(g["start"], g["end"], g["answer"]) for g in got] == [(w["start"], w["end"], w["answer"]) for w in want]
        assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)
