"""`onnxport validate`, `bench`, `info` and `run` with JSONL and every pipeline option, as a user calls them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from conftest import build_hf_checkpoint
from onnxport.cli import main
from onnxport.exporters import export
from onnxport.runtime import pipeline
from tokenizer_fixtures import write_xlm_roberta_files


@pytest.fixture(scope="module")
def fill_mask(tmp_path_factory):
    """An XLM-R masked-LM checkpoint with its SentencePiece files, and its PyTorch export."""
    from onnxport.tokenizers import AutoTokenizer

    root = tmp_path_factory.mktemp("cli")
    tokenizer_dir = write_xlm_roberta_files(root / "tok")
    checkpoint = root / "ckpt"
    build_hf_checkpoint(checkpoint, "xlm-roberta", "ForMaskedLM",
                        vocab_size=len(AutoTokenizer.from_pretrained(tokenizer_dir)), max_position_embeddings=66)
    for f in tokenizer_dir.iterdir():
        if f.name != "config.json":
            shutil.copy(f, checkpoint / f.name)
    out = root / "export"
    export(str(checkpoint), str(out), task="fill-mask")
    return checkpoint, out


def test_validate_passes_and_fails_on_a_tampered_graph(fill_mask, tmp_path, capsys):
    checkpoint, out = fill_mask
    assert main(["validate", str(out), str(checkpoint), "--json", str(tmp_path / "v.json")]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "v.json").read_text())
    cases = {row["case"] for row in report["rows"]}
    assert {"single", "fresh", "longest"} <= cases and report["passed"] and "passed: largest difference" in printed
    # the token-type input is fed non-zero values in the padded batch
    assert any(row["output"] == "logits" for row in report["rows"])

    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    model = onnx.load(str(tampered / "model.onnx"))
    bias = next(t for t in model.graph.initializer if t.name.endswith("lm_head.bias"))
    values = onnx.numpy_helper.to_array(bias).copy()
    values[3] += 0.5  # one vocabulary entry's logit moves by 0.5
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(tampered / "model.onnx"))
    assert main(["validate", str(tampered), str(checkpoint)]) == 1
    captured = capsys.readouterr()
    assert "differ beyond tolerance" in captured.err and "5.000e-01" in captured.out


def test_validate_without_a_checkpoint_says_what_to_pass(fill_mask, tmp_path, capsys):
    _, out = fill_mask
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    meta = json.loads((copy / "onnxport.json").read_text())
    meta.pop("source", None)
    (copy / "onnxport.json").write_text(json.dumps(meta))
    assert main(["validate", str(copy)]) == 1
    assert "pass the CHECKPOINT" in capsys.readouterr().err


def test_info_describes_the_export(fill_mask, capsys):
    _, out = fill_mask
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    for expected in ("fill-mask", "xlm-roberta", "input_ids", "token_type_ids", "logits", "validation: passed",
                     "opset"):
        assert expected in text, expected
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == "fill-mask"


def test_bench_reports_each_shape(fill_mask, tmp_path, capsys):
    _, out = fill_mask
    assert main(["bench", str(out), "--shapes", "1x8,2x16", "--runs", "3", "--warmup", "1", "--provider", "cpu",
                 "--threads", "1", "--json", str(tmp_path / "b.json")]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert [(t["batch"], t["sequence"]) for t in report["timings"]] == [(1, 8), (2, 16)]
    assert all(0 < t["min_ms"] <= t["median_ms"] <= t["p90_ms"] <= t["max_ms"] for t in report["timings"])
    assert report["provider"] == "CPUExecutionProvider" and "1x8" in capsys.readouterr().out.replace(" ", "")
    assert main(["bench", str(out), "--shapes", "1by8"]) == 1
    assert "--shapes takes BATCHxSEQUENCE" in capsys.readouterr().err


def test_run_reads_jsonl_and_writes_jsonl_with_pipeline_options(fill_mask, tmp_path, capsys):
    _, out = fill_mask
    texts = ["hello <mask> world", "the quick brown <mask>"]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    assert main(["run", str(out), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
                 "--top-k", "3", "--batch-size", "1", "--provider", "cpu"]) == 0
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected = pipeline("fill-mask", out, provider="cpu")(texts, top_k=3)
    assert got == json.loads(json.dumps(expected))
    from onnxport.tokenizers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    whole = [p[1:] for p in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
             if p.startswith("▁") and len(p) > 2 and tokenizer.tokenize(p[1:]) == [p]]
    targets = whole[:2]  # words that are one piece each in the tiny vocabulary
    assert len(targets) == 2
    assert main(["run", str(out), texts[0], "--targets", *targets, "--provider", "cpu"]) == 0
    ranked = json.loads(capsys.readouterr().out)[0]
    assert sorted(r["token_str"].strip() for r in ranked) == sorted(targets)
    assert ranked == json.loads(json.dumps(pipeline("fill-mask", out, provider="cpu")(texts[0], targets=targets)))
    assert all(r["score"] <= expected[0][0]["score"] + 1e-7 for r in ranked)  # never above the unrestricted best


def test_run_refuses_bad_records_and_options(fill_mask, tmp_path, capsys):
    _, out = fill_mask
    (tmp_path / "bad.jsonl").write_text('{"text": "a <mask>"}\n{"txt": "no text field"}\n')
    assert main(["run", str(out), "--input", str(tmp_path / "bad.jsonl")]) == 1
    assert "record 2 lacks text" in capsys.readouterr().err
    (tmp_path / "broken.jsonl").write_text('{"text": "a <mask>"\n')
    assert main(["run", str(out), "--input", str(tmp_path / "broken.jsonl")]) == 1
    assert "broken.jsonl:1 is not valid JSON" in capsys.readouterr().err
