"""Texts longer than the model, against transformers 4.57's own pipelines on the same tiny weights.

Real vocabularies (real_vocab.py) for the three tokenizer families — XLM-R's SentencePiece (120k pieces),
RoBERTa's byte-level BPE (GPT-2's 50,257), RoFormer's jieba + WordPiece (bert-base-chinese) — on a context
of many languages and emoji several times the model's 64 tokens:

- question-answering reads it in windows (max_seq_len, doc_stride) and answers as transformers does;
- token-classification with ``stride`` reads it in overlapping windows, entities merged as transformers does;
- text-classification, fill-mask, feature-extraction and multiple-choice truncate it to the model with one
  warning (transformers' ``truncation=True``), or refuse it with ``truncation=False``;
- text-generation drops the prompt's first tokens to leave room for the new ones (``"hole"``).
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

import real_vocab
from conftest import build_hf_checkpoint, hf_class
from onnxport.errors import InputError
from onnxport.exporters import export
from onnxport.exporters.io_spec import TASKS
from onnxport.runtime import pipeline

transformers = pytest.importorskip("transformers")

VOCABULARIES = {  # family -> its real vocabulary
    "xlm-roberta": real_vocab.sentencepiece_directory,
    "roberta": real_vocab.gpt2_directory,
    "roformer": real_vocab.bert_chinese_directory,
}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
POSITIONS = {"roformer": 64}  # RoBERTa-style models spend pad_token_id + 1 positions: 66 leaves 64 tokens

PARAGRAPHS = [
    "The committee met in Geneva on Tuesday to discuss the new treaty, and the delegates argued until late.",
    "Der Ausschuss traf sich am Dienstag in Genf, um über den neuen Vertrag zu sprechen.",
    "委员会周二在日内瓦开会，讨论新的条约。代表们一直争论到深夜。",
    "Комитет собрался во вторник в Женеве, чтобы обсудить новый договор.",
    "La comisión se reunió en Ginebra 🇨🇭 el martes 😀 para hablar del tratado 👍🏽.",
    "東京で会議が開かれました。 서울에서도 회의가 열렸습니다. Ünïcödé façade naïve Zoë.",
    "Maria Schmidt flew from Paris to Nairobi, then drove to Lake Victoria with Ahmed Khan 🚗.",
]
# 476 (XLM-R), 668 (RoBERTa), 586 (RoFormer) tokens: 7-10 times the model's 64
LONG = " ".join(f"{i + 1}. {paragraph}" for i, paragraph in enumerate(PARAGRAPHS * 2))
QUESTIONS = ["Who flew to Nairobi?", "委员会在哪里开会？"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``served(family, task)`` -> (checkpoint with the real vocabulary's files, export directory), cached."""
    from onnxport.tokenizers import AutoTokenizer

    root = tmp_path_factory.mktemp("long-inputs")
    cache: dict = {}

    def get(family, task):
        if (family, task) not in cache:
            try:
                vocabulary = VOCABULARIES[family]()
            except real_vocab.VocabularyUnavailable as error:
                pytest.skip(f"{family} vocabulary unavailable: {error}")
            checkpoint = root / f"ckpt-{family}-{task}"
            overrides = dict(vocab_size=len(AutoTokenizer.from_pretrained(vocabulary)),
                             max_position_embeddings=POSITIONS.get(family, 66))
            if task == "token-classification":
                overrides["id2label"] = NER_LABELS
            if task == "text-generation":
                overrides["is_decoder"] = True
            build_hf_checkpoint(checkpoint, family, TASKS[task].head, **overrides)
            for f in vocabulary.iterdir():
                if f.name != "config.json":
                    shutil.copy(f, checkpoint / f.name)
            out = root / f"onnx-{family}-{task}"
            export(str(checkpoint), str(out), framework="pt", task=task)
            cache[(family, task)] = (str(checkpoint), str(out))
        return cache[(family, task)]

    return get


_HF_TOKENIZERS: dict = {}  # transformers builds XLM-R's fast tokenizer from the 120k-piece model in ~13 s: once


def _theirs(task, family, checkpoint, max_length):
    """transformers' pipeline on the checkpoint, its tokenizer told the model's length (the checkpoint's
    tokenizer files name none, so transformers would not truncate at all)."""
    overrides = {"is_decoder": True} if task == "text-generation" else {}
    model = hf_class(family, TASKS[task].head).from_pretrained(checkpoint, attn_implementation="eager", **overrides)
    tokenizer = _hf_tokenizer(family, checkpoint)
    tokenizer.model_max_length = max_length
    return transformers.pipeline(task, model=model.eval(), tokenizer=tokenizer, device="cpu")


def _hf_tokenizer(family, checkpoint):
    if family not in _HF_TOKENIZERS:  # every task's checkpoint of a family holds the same vocabulary files
        _HF_TOKENIZERS[family] = transformers.AutoTokenizer.from_pretrained(checkpoint)
    return _HF_TOKENIZERS[family]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "onnxport" and r.levelno == logging.WARNING]


FAMILIES = list(VOCABULARIES)


# ----------------------------------------------------------------------------- question-answering
@pytest.mark.parametrize("family", FAMILIES)
def test_question_answering_windows_equal_transformers(served, family):
    checkpoint, export_dir = served(family, "question-answering")
    ours = pipeline("question-answering", export_dir, provider="cpu", batch_size=8)
    theirs = _theirs("question-answering", family, checkpoint, ours.max_length)
    tokens = len(ours.tokenizer(LONG)["input_ids"])
    assert tokens > 4 * ours.max_length, tokens  # the context is several times the model's length
    settings = [
        dict(),  # the defaults: max_seq_len = the model's 64, doc_stride = half of it
        dict(top_k=5, doc_stride=7, max_seq_len=40, align_to_words=False),
        dict(top_k=8, max_answer_len=6, handle_impossible_answer=True),
    ]
    compared = 0
    for question in QUESTIONS:
        for options in settings:
            got = ours(question=question, context=LONG, **options)
            want = theirs(question=question, context=LONG, **{"max_seq_len": ours.max_length, **options})
            got, want = ([got], [want]) if isinstance(got, dict) else (got, want)
            want = [want] if isinstance(want, dict) else want
            assert [(g["answer"], g["start"], g["end"]) for g in got] == \
                [(w["answer"], w["start"], w["end"]) for w in want], (question, options)
            assert np.allclose([g["score"] for g in got], [w["score"] for w in want], rtol=1e-4, atol=1e-7)
            assert all(g["answer"] == LONG[g["start"]:g["end"]] for g in got)
            compared += len(got)
        # the answers come from all over the context, not from the first window only
        first_window = ours.tokenizer(question, LONG, truncation="only_second", max_length=ours.max_length,
                                      return_offsets_mapping=True)["offset_mapping"]
        answers = ours(question=question, context=LONG, top_k=20)
        assert max(a["start"] for a in answers) > max(end for _, end in first_window)
    print(f"{family}: {compared} answers equal to transformers' on a {tokens}-token context")


@pytest.mark.parametrize("family", FAMILIES)
def test_question_answering_window_arguments(served, family):
    _, export_dir = served(family, "question-answering")
    qa = pipeline("question-answering", export_dir, provider="cpu")
    question = QUESTIONS[0]
    question_tokens = len(qa.tokenizer(question, add_special_tokens=False)["input_ids"])
    room = 40 - question_tokens - qa.tokenizer.num_special_tokens_to_add(pair=True)
    # the largest overlap that lets windows advance works; one more is refused before the tokenizer aborts
    assert qa(question=question, context=LONG, max_seq_len=40, doc_stride=room - 1)["answer"]
    with pytest.raises(InputError, match=f"doc_stride={room} must be less than the {room} text tokens a window holds"):
        qa(question=question, context=LONG, max_seq_len=40, doc_stride=room)
    with pytest.raises(InputError, match="doc_stride=500 must be less than"):
        qa(question=question, context=LONG, doc_stride=500)
    # a question longer than a window: refused, or cut with max_question_len
    long_question = " ".join(QUESTIONS * 8)
    with pytest.raises(InputError, match="question is [0-9]+ tokens.*max_question_len"):
        qa(question=long_question, context=LONG)
    cut = qa(question=long_question, context=LONG, max_question_len=10, top_k=3)
    offsets = qa.tokenizer(long_question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert cut == qa(question=long_question[:offsets[9][1]], context=LONG, top_k=3)
    with pytest.raises(InputError, match="max_question_len must be an integer >= 1"):
        qa(question=question, context=LONG, max_question_len=0)


# ----------------------------------------------------------------------------- token-classification
@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
@pytest.mark.parametrize("family", FAMILIES)
def test_token_classification_stride_equals_transformers(served, family, strategy):
    checkpoint, export_dir = served(family, "token-classification")
    ours = pipeline("token-classification", export_dir, provider="cpu", batch_size=8)
    theirs = _theirs("token-classification", family, checkpoint, ours.max_length)
    texts = [LONG, " ".join(PARAGRAPHS[2:5]), PARAGRAPHS[0]]  # several windows, a few, one
    for stride in (5, 40):
        got = ours(texts, aggregation_strategy=strategy, stride=stride, ignore_labels=())
        for text, entities in zip(texts, got):
            want = theirs(text, aggregation_strategy=strategy, stride=stride, ignore_labels=[])
            assert [(e["entity_group"], e["start"], e["end"]) for e in entities] == \
                [(w["entity_group"], w["start"], w["end"]) for w in want], (stride, text[:30])
            assert np.allclose([e["score"] for e in entities], [float(w["score"]) for w in want], atol=1e-5)
    # the windows read the whole text: entities near its end, where truncation stops at the model's length
    # (not at the very end: where windows overlap, transformers keeps one entity and drops one starting inside it)
    whole = ours(LONG, aggregation_strategy=strategy, stride=16, ignore_labels=())
    truncated = ours(LONG, aggregation_strategy=strategy, ignore_labels=())
    assert whole[-1]["end"] > 0.9 * len(LONG) and truncated[-1]["end"] < len(LONG) // 2


@pytest.mark.parametrize("family", FAMILIES)
def test_token_classification_truncates_as_transformers_without_stride(served, family, caplog):
    checkpoint, export_dir = served(family, "token-classification")
    ours = pipeline("token-classification", export_dir, provider="cpu")
    theirs = _theirs("token-classification", family, checkpoint, ours.max_length)
    for strategy in ("none", "average"):
        caplog.clear()
        got = ours([LONG, PARAGRAPHS[1]], aggregation_strategy=strategy, ignore_labels=())[0]
        want = theirs(LONG, aggregation_strategy=strategy, ignore_labels=[])  # transformers truncates silently
        key = "entity" if strategy == "none" else "entity_group"
        assert [(e[key], e["start"], e["end"]) for e in got] == [(w[key], w["start"], w["end"]) for w in want]
        assert np.allclose([e["score"] for e in got], [float(w["score"]) for w in want], atol=1e-5)
        full = len(ours.tokenizer(LONG)["input_ids"])
        assert _warnings(caplog) == [
            f"1 of 2 inputs is longer than the model's {ours.max_length} tokens ({full} tokens) and was truncated to "
            f"it: {full - ours.max_length} tokens dropped from the end. To use all of a text, pass stride=N (with an "
            "aggregation_strategy) to read it in overlapping windows; pass truncation=False to raise an error instead."
        ]
    with pytest.raises(InputError, match=rf"inputs\[0\] is {full} tokens, more than the model's {ours.max_length}"
                                         r" \(1 more as well\), and truncation=False"):
        ours([LONG, PARAGRAPHS[1], LONG], truncation=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_token_classification_stride_arguments(served, family):
    _, export_dir = served(family, "token-classification")
    ner = pipeline("token-classification", export_dir, provider="cpu")
    room = ner.max_length - ner.tokenizer.num_special_tokens_to_add()
    assert ner(LONG, aggregation_strategy="simple", stride=room - 1, ignore_labels=())  # the largest overlap
    with pytest.raises(InputError, match=f"stride={room} must be less than the {room} text tokens a window holds"):
        ner(LONG, aggregation_strategy="simple", stride=room)
    with pytest.raises(InputError, match=f"stride={ner.max_length} must be less than"):
        ner(LONG, aggregation_strategy="first", stride=ner.max_length)
    with pytest.raises(InputError, match="stride must be an integer >= 0"):
        ner(LONG, aggregation_strategy="simple", stride=-1)
    with pytest.raises(InputError, match="pass an aggregation_strategy"):
        ner(LONG, stride=8)
    assert ner([], aggregation_strategy="simple", stride=8) == []


# ----------------------------------------------------------------------------- truncating tasks
@pytest.mark.parametrize("family", FAMILIES)
def test_classification_truncates_as_transformers_with_one_warning(served, family, caplog):
    checkpoint, export_dir = served(family, "text-classification")
    ours = pipeline("text-classification", export_dir, provider="cpu", batch_size=2)
    theirs = _theirs("text-classification", family, checkpoint, ours.max_length)
    texts = [LONG, PARAGRAPHS[0], LONG[len(LONG) // 3:], {"text": PARAGRAPHS[2], "text_pair": LONG}]
    caplog.clear()
    got = ours(texts, top_k=None)
    want = theirs(texts, top_k=None, truncation=True)
    for g, w in zip(got, want):
        assert [x["label"] for x in g] == [x["label"] for x in w]
        assert np.allclose([x["score"] for x in g], [x["score"] for x in w], atol=1e-5)
    lengths = [len(ours.tokenizer(t)["input_ids"]) for t in (LONG, LONG[len(LONG) // 3:])]
    lengths.append(len(ours.tokenizer(PARAGRAPHS[2], LONG)["input_ids"]))
    (message,) = _warnings(caplog)  # one warning for the call, with the counts
    assert message.startswith(f"3 of 4 inputs are longer than the model's {ours.max_length} tokens "
                              f"({lengths[0]}, {lengths[1]} and {lengths[2]} tokens) and were truncated to it: "
                              f"{lengths[0] - ours.max_length}, {lengths[1] - ours.max_length} and "
                              f"{lengths[2] - ours.max_length} tokens dropped from the end (of a pair's longer text)")
    caplog.clear()
    ours(PARAGRAPHS[:3])
    assert _warnings(caplog) == []  # texts that fit: no warning
    with pytest.raises(InputError, match=rf"inputs is {lengths[0]} tokens, more than the model's {ours.max_length}, "
                                         "and truncation=False"):
        ours(LONG, truncation=False)
    assert ours(PARAGRAPHS[0], truncation=False)["label"] == got[1][0]["label"]
    short = pipeline("text-classification", export_dir, provider="cpu", max_length=16)  # the user's own limit
    caplog.clear()
    short(PARAGRAPHS[0])
    (message,) = _warnings(caplog)
    assert message.startswith("1 of 1 input is longer than the pipeline's max_length of 16 tokens")


@pytest.mark.parametrize("family", FAMILIES)
def test_fill_mask_and_features_truncate_as_transformers(served, family, caplog):
    checkpoint, export_dir = served(family, "fill-mask")
    ours = pipeline("fill-mask", export_dir, provider="cpu")
    theirs = _theirs("fill-mask", family, checkpoint, ours.max_length)
    mask = ours.tokenizer.mask_token
    text = f"The committee met in {mask} on Tuesday. " + LONG
    caplog.clear()
    got = ours(text, top_k=5)
    want = theirs(text, top_k=5, tokenizer_kwargs={"truncation": True})
    assert [g["token"] for g in got] == [w["token"] for w in want]
    assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)
    assert len(_warnings(caplog)) == 1
    with pytest.raises(InputError, match="truncation=False"):
        ours(text, truncation=False)
    with pytest.raises(InputError, match="truncation removed it"):  # the mask beyond the model's length
        ours(LONG + f" {mask}.")

    checkpoint, export_dir = served(family, "feature-extraction")
    ours = pipeline("feature-extraction", export_dir, provider="cpu")
    theirs = _theirs("feature-extraction", family, checkpoint, ours.max_length)
    caplog.clear()
    got = ours([LONG, PARAGRAPHS[3]], pooling="none")
    for vectors, text in zip(got, [LONG, PARAGRAPHS[3]]):
        want = np.asarray(theirs(text, truncation=True))[0]
        assert vectors.shape == want.shape and np.abs(vectors - want).max() <= 1e-4
    assert got[0].shape[0] == ours.max_length and len(_warnings(caplog)) == 1
    with pytest.raises(InputError, match="split it into parts and pool their vectors"):
        ours(LONG, truncation=False)


def test_multiple_choice_truncates_the_pair(served, caplog):
    checkpoint, export_dir = served("xlm-roberta", "multiple-choice")
    mc = pipeline("multiple-choice", export_dir, provider="cpu")
    choices = ["Geneva", "Paris " + LONG, "Nairobi"]
    caplog.clear()
    result = mc(LONG, choices)
    assert len(_warnings(caplog)) == 1
    # the reference: transformers' tokenizer truncating each pair, transformers' model
    tokenizer = _hf_tokenizer("xlm-roberta", checkpoint)
    enc = tokenizer([LONG] * 3, choices, padding=True, truncation=True, max_length=mc.max_length, return_tensors="pt")
    model = hf_class("xlm-roberta", "ForMultipleChoice").from_pretrained(checkpoint, attn_implementation="eager")
    with torch.no_grad():
        want = model(**{k: v[None] for k, v in enc.items()}).logits[0].numpy()
    assert np.abs(np.array(result["logits"]) - want).max() <= 1e-4
    with pytest.raises(InputError, match="shorten the prompt or the choices"):
        mc(LONG, choices, truncation=False)


def test_generation_drops_the_prompts_first_tokens(served, caplog):
    checkpoint, export_dir = served("xlm-roberta", "text-generation")
    gen = pipeline("text-generation", export_dir, provider="cpu")
    limit = gen.model.config.max_sequence_length
    prompt_ids = gen.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert len(prompt_ids) > limit
    native = hf_class("xlm-roberta", "ForCausalLM").from_pretrained(checkpoint, is_decoder=True,
                                                                      attn_implementation="eager").eval()
    new_tokens = 5
    sequence = torch.tensor([prompt_ids[-(limit - new_tokens):]])  # transformers' "hole": room for the new tokens
    expected = []
    with torch.no_grad():
        for _ in range(new_tokens):
            token = int(native(input_ids=sequence, use_cache=False).logits[0, -1].argmax())
            expected.append(token)
            sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
    caplog.clear()
    got = gen(LONG, max_new_tokens=new_tokens, eos_token_id=-1)
    assert got["generated_token_ids"] == expected
    (message,) = _warnings(caplog)
    assert f"The prompt is {len(prompt_ids)} tokens; with max_new_tokens={new_tokens} the model's {limit} " \
           f"positions leave room for {limit - new_tokens}: its first {len(prompt_ids) - limit + new_tokens} " \
           "tokens were dropped" in message
    with pytest.raises(InputError, match=f"The prompt has {len(prompt_ids)} tokens; the model takes at most {limit}"):
        gen(LONG, max_new_tokens=new_tokens, truncation=False)


def test_merge_overlapping_entities_by_hand():
    """Two windows read characters 10-30 both; where their entities overlap the longer one stays, at equal
    length the higher score, and entities that only touch are both kept."""
    from onnxport.runtime.postprocess import merge_overlapping_entities

    first = [{"entity_group": "PER", "score": 0.9, "start": 0, "end": 8},
             {"entity_group": "LOC", "score": 0.6, "start": 12, "end": 20},   # cut at the window's edge ...
             {"entity_group": "PER", "score": 0.5, "start": 24, "end": 30}]
    second = [{"entity_group": "LOC", "score": 0.7, "start": 12, "end": 22},  # ... seen whole by the next window
              {"entity_group": "PER", "score": 0.8, "start": 24, "end": 30},  # same span, higher score
              {"entity_group": "LOC", "score": 0.4, "start": 30, "end": 35}]  # touches the one before: kept
    merged = merge_overlapping_entities(first + second)
    assert [(e["start"], e["end"], e["score"]) for e in merged] == [(0, 8, 0.9), (12, 22, 0.7), (24, 30, 0.8),
                                                                    (30, 35, 0.4)]
    assert merge_overlapping_entities([]) == []


def test_command_line_windows_and_no_truncation(served, capsys):
    from onnxport.cli import main

    _, export_dir = served("roformer", "token-classification")
    assert main(["run", export_dir, LONG, "--aggregation", "simple", "--stride", "8", "--ignore-labels",
                 "--provider", "cpu"]) == 0
    expected = pipeline("token-classification", export_dir, provider="cpu")(
        [LONG], aggregation_strategy="simple", stride=8, ignore_labels=())
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(expected, default=float))
    assert main(["run", export_dir, LONG, "--no-truncation", "--provider", "cpu"]) == 1
    assert "is 586 tokens, more than the model's 64" in capsys.readouterr().err

    _, qa_dir = served("roformer", "question-answering")
    assert main(["run", qa_dir, "--question", QUESTIONS[1], "--context", LONG, "--max-seq-len", "40",
                 "--doc-stride", "10", "--top-k", "2", "--provider", "cpu"]) == 0
    expected = pipeline("question-answering", qa_dir, provider="cpu")(
        question=QUESTIONS[1], context=LONG, max_seq_len=40, doc_stride=10, top_k=2)
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(expected))
