"""Pipelines batch by token length: one tokenizer call, batches padded only to their own longest row,
results in input order and equal to unpadded per-text runs of the model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import build_hf_checkpoint
from onnxport.exporters import export
from onnxport.runtime import load_model, pipeline
from onnxport.runtime import postprocess as pp
from tokenizer_fixtures import CORPUS, write_roformer_files, write_xlm_roberta_files

FAMILIES = {"xlm-roberta": write_xlm_roberta_files, "roformer": write_roformer_files}
HEADS = {"text-classification": "ForSequenceClassification", "token-classification": "ForTokenClassification"}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
BATCH = 3


def _texts() -> list[str]:
    """Eleven texts, lengths from one word to past the model's limit, in no particular length order."""
    words = " ".join(CORPUS).split()
    sizes = [7, 1, 30, 3, 12, 60, 2, 18, 5, 25, 9]  # 60 words is truncated to the 64-token limit
    texts, start = [], 0
    for n in sizes:
        texts.append(" ".join((words * 3)[start:start + n]))
        start += n
    return texts


TEXTS = _texts()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """``exports(model_type, task)`` -> export directory of a tiny random model with tokenizer files."""
    from onnxport.tokenizers import AutoTokenizer

    root = tmp_path_factory.mktemp("batching")
    cache: dict = {}

    def get(model_type, task):
        if (model_type, task) not in cache:
            tokenizer_dir = FAMILIES[model_type](root / f"tok-{model_type}")
            overrides = dict(vocab_size=len(AutoTokenizer.from_pretrained(tokenizer_dir)), max_position_embeddings=66)
            if task == "token-classification":
                overrides["id2label"] = NER_LABELS
            checkpoint = root / f"ckpt-{model_type}-{task}"
            build_hf_checkpoint(checkpoint, model_type, HEADS[task], **overrides)
            for f in tokenizer_dir.iterdir():
                if f.name != "config.json":
                    shutil.copy(f, checkpoint / f.name)
            out = root / f"onnx-{model_type}-{task}"
            export(str(checkpoint), str(out), framework="pt", task=task)
            cache[(model_type, task)] = str(out)
        return cache[(model_type, task)]

    return get


def _unpadded_logits(model, text: str, max_length: int) -> np.ndarray:
    """The reference: one text, one model call, no padding anywhere."""
    enc = model.tokenizer(text, truncation=True, max_length=max_length, return_tensors="np")
    return model(**{k: v for k, v in enc.items() if k in model.spec.input_names})["logits"][0]


class _Recorder:
    """Stands in for a pipeline's model or tokenizer, recording what each call received."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[dict] = []

    def __call__(self, *args, **kwargs):
        self.calls.append({"args": args, **kwargs})
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_text_classification_keeps_order_and_equals_unpadded_runs(exports, model_type):
    export_dir = exports(model_type, "text-classification")
    clf = pipeline("text-classification", export_dir, provider="cpu", batch_size=BATCH)
    reference = load_model(export_dir, provider="cpu")
    config = reference.config
    want = [pp.softmax(_unpadded_logits(reference, t, clf.max_length).astype(np.float64)) for t in TEXTS]
    # every text scores differently, so any reordering of results would show
    assert len({round(float(w[0]), 6) for w in want}) == len(TEXTS)

    got = clf(TEXTS, top_k=None)
    assert len(got) == len(TEXTS)
    for text, labels, scores in zip(TEXTS, got, want):
        by_label = {x["label"]: x["score"] for x in labels}
        assert np.allclose([by_label[config.id2label[i]] for i in range(len(scores))], scores, atol=1e-5), text
    top1 = clf(TEXTS, batch_size=4)  # per-call batch size, as transformers pipelines take it
    assert [x["label"] for x in top1] == [config.id2label[int(np.argmax(w))] for w in want]
    with pytest.raises(ValueError, match="batch_size"):
        clf(TEXTS, batch_size=0)
    assert clf([]) == []


@pytest.mark.parametrize("model_type", FAMILIES)
def test_token_classification_keeps_order_and_equals_unpadded_runs(exports, model_type):
    export_dir = exports(model_type, "token-classification")
    ner = pipeline("token-classification", export_dir, provider="cpu", batch_size=BATCH)
    reference = load_model(export_dir, provider="cpu")
    got = ner(TEXTS, ignore_labels=())
    for text, entities in zip(TEXTS, got):
        logits = _unpadded_logits(reference, text, ner.max_length)
        enc = reference.tokenizer(text, truncation=True, max_length=ner.max_length, return_special_tokens_mask=True,
                                  return_offsets_mapping=True)
        real = [i for i, s in enumerate(enc["special_tokens_mask"]) if not s]
        assert [e["index"] for e in entities] == real, text  # one entity per real token, none from padding
        scores = pp.softmax(logits.astype(np.float64))
        for e in entities:
            assert e["entity"] == NER_LABELS[int(np.argmax(scores[e["index"]]))]
            assert e["score"] == pytest.approx(float(scores[e["index"]].max()), abs=1e-5)
            assert (e["start"], e["end"]) == tuple(enc["offset_mapping"][e["index"]])
    # aggregated output too: batched equals one text at a time
    for strategy in ("simple", "average"):
        batched = ner(TEXTS, aggregation_strategy=strategy, ignore_labels=())
        for text, entities in zip(TEXTS, batched):
            alone = ner(text, aggregation_strategy=strategy, ignore_labels=())
            assert [(e["entity_group"], e["start"], e["end"]) for e in entities] == \
                [(e["entity_group"], e["start"], e["end"]) for e in alone], text
            assert np.allclose([e["score"] for e in entities], [e["score"] for e in alone], atol=1e-5)


def test_one_tokenizer_call_and_batches_padded_to_their_own_longest_row(exports):
    export_dir = exports("xlm-roberta", "token-classification")
    ner = pipeline("token-classification", export_dir, provider="cpu", batch_size=BATCH)
    lengths = [len(ids) for ids in ner.tokenizer(TEXTS, truncation=True, max_length=ner.max_length)["input_ids"]]
    ner.tokenizer = _Recorder(ner.tokenizer)
    ner.model = _Recorder(ner.model)
    ner(TEXTS)
    # one call for all texts, then one for the texts longer than the model (TEXTS has some), cut to it
    over = sum(len(ids) > ner.max_length for ids in ner.tokenizer.inner(TEXTS)["input_ids"])
    assert over >= 1
    assert len(ner.tokenizer.calls) == 2 and len(ner.tokenizer.calls[0]["args"][0]) == len(TEXTS)
    assert len(ner.tokenizer.calls[1]["args"][0]) == over and ner.tokenizer.calls[1]["truncation"] is True
    batches = [call["attention_mask"] for call in ner.model.calls]
    assert len(batches) == -(-len(TEXTS) // BATCH)
    rows = [sorted(mask.sum(1).tolist()) for mask in batches]
    assert all(mask.shape[1] == max(r) for mask, r in zip(batches, rows))  # padded to the batch's longest row
    assert [n for r in rows for n in r] == sorted(lengths)  # batches of neighbours in token length
    assert max(lengths) > max(rows[0])  # so the short batch was not padded to the global maximum
