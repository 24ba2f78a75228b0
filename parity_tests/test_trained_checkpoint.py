"""A user's trained RoBERTa checkpoint through the whole CLI chain, as the README says.

The checkpoint (``trained_roberta.py``): ``model_type: roberta``, ``model.safetensors``, ``vocab.json`` and
``merges.txt`` only, trained here on real English text. Commands: ``export`` (no ``--task``) from PyTorch,
TensorFlow and Flax, ``validate``, ``info``, ``bench``, ``run`` (fill-mask answers equal to transformers'
pipeline on held-out sentences), ``parity --checkpoints`` (every cell passes on trained weights, the pooler
a masked-LM checkpoint lacks is never compared), and byte-identical re-exports.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import trained_roberta

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained():
    return trained_roberta.cached_checkpoint()


def _cli(*args, timeout=900):
    result = subprocess.run([sys.executable, "-m", "onnxport.cli", *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    return result


def _masked_sentences(count: int = 8) -> list[str]:
    """Held-out sentences (never trained on) with their first " the " masked."""
    out = []
    for sentence in trained_roberta.held_out_text():
        if " the " in sentence and len(sentence) < 160:
            out.append(sentence.replace(" the ", " <mask> ", 1))
        if len(out) == count:
            break
    return out


def test_the_checkpoint_is_trained_and_looks_like_a_users(trained):
    """Held-out masked-token accuracy well above always guessing the most frequent token: real weights."""
    from tokenizers import ByteLevelBPETokenizer

    from onnxport.reference_models.pt import RobertaForMaskedLM

    assert sorted(os.listdir(trained)) == ["config.json", "merges.txt", "model.safetensors", "training.json",
                                           "vocab.json"]
    assert json.loads((trained / "config.json").read_text())["model_type"] == "roberta"
    bpe = ByteLevelBPETokenizer(str(trained / "vocab.json"), str(trained / "merges.txt"))
    model = RobertaForMaskedLM.from_pretrained(trained).eval()
    bos, eos, mask = (bpe.token_to_id(t) for t in ("<s>", "</s>", "<mask>"))
    generator = torch.Generator().manual_seed(1)
    hits = positions = 0
    counts: dict[int, int] = {}
    for sentence in trained_roberta.held_out_text()[:200]:
        ids = torch.tensor([[bos] + bpe.encode(sentence).ids[:100] + [eos]])
        for i in ids[0, 1:-1].tolist():
            counts[i] = counts.get(i, 0) + 1
        special = (ids == bos) | (ids == eos)
        masked, labels = trained_roberta.mask_tokens(ids, special, mask, bpe.get_vocab_size(), generator)
        with torch.no_grad():
            predicted = model(input_ids=masked).logits.argmax(-1)
        chosen = labels != -100
        hits += int((predicted[chosen] == labels[chosen]).sum())
        positions += int(chosen.sum())
    accuracy = hits / positions
    most_frequent_rate = max(counts.values()) / sum(counts.values())
    assert positions > 500 and accuracy > 1.5 * most_frequent_rate, (accuracy, most_frequent_rate)


def test_cli_chain_on_the_trained_checkpoint(trained, tmp_path):
    import transformers

    from onnxport.runtime import pipeline

    exports = {}
    for framework in ("pt", "tf", "flax"):
        out = tmp_path / f"export-{framework}"
        result = _cli("export", trained, out, "--framework", framework)  # no --task: from architectures
        assert result.returncode == 0, result.stderr
        meta = json.loads((out / "onnxport.json").read_text())
        assert meta["task"] == "fill-mask" and meta["validation"]["passed"] and meta["random_weights"] == []
        exports[framework] = out

    validated = _cli("validate", exports["pt"])  # the checkpoint recorded in onnxport.json
    assert validated.returncode == 0, validated.stderr
    assert "passed: largest difference" in validated.stdout
    info = _cli("info", exports["tf"])
    assert info.returncode == 0 and "fill-mask of a roberta RobertaForMaskedLM" in info.stdout
    assert str(trained) in info.stdout and "random weights: none" in info.stdout
    bench = _cli("bench", exports["pt"], "--shapes", "1x32,4x64", "--runs", "3", "--provider", "cpu")
    assert bench.returncode == 0 and "4x64" in bench.stdout.replace(" ", "")

    texts = _masked_sentences()
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    run = _cli("run", exports["pt"], "--input", tmp_path / "in.txt", "--output", tmp_path / "out.jsonl",
               "--top-k", "5", "--provider", "cpu")
    assert run.returncode == 0, run.stderr
    ours = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    tokenizer = transformers.RobertaTokenizerFast(vocab_file=str(trained / "vocab.json"),
                                                  merges_file=str(trained / "merges.txt"))
    model = transformers.RobertaForMaskedLM.from_pretrained(trained, attn_implementation="eager").eval()
    theirs = transformers.pipeline("fill-mask", model=model, tokenizer=tokenizer, framework="pt")(texts, top_k=5)
    for mine, want in zip(ours, theirs, strict=True):
        assert [m["token"] for m in mine] == [w["token"] for w in want]
        assert [m["sequence"] for m in mine] == [w["sequence"] for w in want]
        assert np.allclose([m["score"] for m in mine], [w["score"] for w in want], atol=1e-5)
    # Trained weights: the best answers stand far above a random model's near-uniform 1 / vocabulary.
    vocabulary = len(json.loads((trained / "vocab.json").read_text()))
    assert max(m[0]["score"] for m in ours) > 20 / vocabulary
    for framework in ("tf", "flax"):  # every front end's export serves the same answers
        other = pipeline("fill-mask", exports[framework], provider="cpu")(texts, top_k=5)
        assert [[m["token"] for m in row] for row in other] == [[m["token"] for m in row] for row in ours]

    again = tmp_path / "again"
    assert _cli("export", trained, again).returncode == 0
    for name in ("onnx/model.onnx", "config.json"):
        assert hashlib.sha256((again / name).read_bytes()).digest() == \
            hashlib.sha256((exports["pt"] / name).read_bytes()).digest(), name


def test_parity_on_the_trained_checkpoint(trained, tmp_path):
    parity = _cli("parity", "--checkpoints", trained, "--json", tmp_path / "cells.json", "--html",
                  tmp_path / "heat.html", timeout=1500)
    assert parity.returncode == 0, parity.stdout[-3000:] + parity.stderr[-2000:]
    report = json.loads((tmp_path / "cells.json").read_text())
    assert report["checkpoints"] == [str(trained)] and report["counts"]["failed"] == 0
    rows = {(c["task"], c["comparison"]): c for c in report["cells"]}
    assert {task for task, _ in rows} == {"feature-extraction", "fill-mask"}
    compared = [c for c in report["cells"] if c["status"] == "passed"]
    assert len(compared) == 14  # 7 comparisons x 2 rows; function~fused is RoFormer's
    assert all(c["error"] <= c["tolerance"] for c in compared)
    # The masked-LM checkpoint has no pooler: pooler_output is not compared, and the report says so.
    assert "pooler_output" in rows[("feature-extraction", "pt~tf")]["reason"]
    page = (tmp_path / "heat.html").read_text()
    assert str(trained) in page and "&#10003;" in page
