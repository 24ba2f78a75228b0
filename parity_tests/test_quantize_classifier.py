"""int8 of a text classifier trained on labelled text nobody on the team wrote (issue 27).

The model (``benchmarks/int8_models.py``, ``sentiment``): the suite's trained masked-LM fine-tuned as a
negative / positive classifier on the human-rated snippets of VADER's ICWSM-2014 data set (movie and product
reviews, editorials, tweets; shipped in the ``vaderSentiment`` sdist), built once per machine and cached. The
default search with ``--calibration`` (training-side snippets) must pass the default text-classification gate
(each text's label, cosine of the scores), and the int8 model must keep fp32's labels on snippets it never saw,
computed here from the two ONNX Runtime sessions in the texts' own order, beside the true labels.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import int8_models
from onnxport.artifact.layout import model_path
from onnxport.exporters import export
from onnxport.exporters.quantize import quantize

pytestmark = pytest.mark.slow

CALIBRATION = 256
HELD_OUT = 600


def _logits(path: str, export_dir: str, texts: list[str]) -> np.ndarray:
    import onnxruntime as ort

    from onnxport.tokenizers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = []
    for start in range(0, len(texts), 32):
        enc = tokenizer(texts[start:start + 32], truncation=True, max_length=64, padding=True, return_tensors="np")
        out.append(session.run(["logits"], {"input_ids": enc["input_ids"].astype(np.int64),
                                            "attention_mask": enc["attention_mask"].astype(np.int64)})[0])
    return np.concatenate(out)


def test_sentiment_classifier_int8_keeps_the_labels(tmp_path):
    checkpoint = int8_models.cached_checkpoint("sentiment")
    fp32 = tmp_path / "fp32"
    export(str(checkpoint), str(fp32), framework="pt", task="text-classification")
    train = int8_models.texts("sentiment", held_out=False)
    report = quantize(str(fp32), str(tmp_path / "int8"), calibration=train[:CALIBRATION])
    assert report.passed and report.gate.gate == "label" and report.gate.rows == CALIBRATION
    assert report.gate.top1_agreement >= 0.99 and report.gate.cosine >= 0.999

    held = int8_models.labelled(held_out=True)[:HELD_OUT]
    texts, labels = [t for t, _ in held], np.array([y for _, y in held])
    want = _logits(model_path(str(fp32)), str(fp32), texts)
    got = _logits(report.model_path, str(fp32), texts)
    # A real classifier (the snippets are 53 % positive), and int8 keeps its decisions on unseen text.
    assert np.mean(want.argmax(-1) == labels) >= 0.62
    agreement = np.mean(want.argmax(-1) == got.argmax(-1))
    assert agreement >= 0.98, agreement
    cosine = float(np.sum(want * got) / (np.linalg.norm(want) * np.linalg.norm(got)))
    assert cosine >= 0.999
