"""`onnxport validate`, `bench`, `info` and `run` with JSONL and every pipeline option, as a user calls them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from conftest import build_hf_checkpoint
from onnxport.cli import main
from onnxport.exporters import export
from onnxport.runtime import pipeline
from tokenizer_fixtures import write_xlm_roberta_files
from onnxport.artifact.layout import model_path


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
    model = onnx.load(str(Path(model_path(tampered))))
    bias = next(t for t in model.graph.initializer if t.name.endswith("lm_head.bias"))
    values = onnx.numpy_helper.to_array(bias).copy()
    values[3] += 0.5  # one vocabulary entry's logit moves by 0.5
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(Path(model_path(tampered))))
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
    # The same batching as the command's (one text a call): the fused attention kernel takes another path for a
    # padded batch (key-padding form) than for an unpadded one (flash), equal only to float rounding.
    expected = pipeline("fill-mask", out, provider="cpu", batch_size=1)(texts, top_k=3)
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


def test_export_writes_a_checked_complete_tokenizer(fill_mask):
    """tokenizer_config.json names the class, the special tokens and the position table's length; the copy
    was checked against the checkpoint's tokenizer on sample texts."""
    _, out = fill_mask
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "XLMRobertaTokenizer" and config["model_max_length"] == 66 - 2
    assert config["mask_token"] == "<mask>" and config["pad_token"] == "<pad>"
    meta = json.loads((out / "onnxport.json").read_text())
    assert meta["tokenizer"]["class"] == "XLMRobertaTokenizerFast" and "tokenizer_config.json" in meta["files"]


def test_export_without_a_tokenizer_warns_and_run_says_which_files(checkpoint_factory, tmp_path, caplog, capsys):
    checkpoint = checkpoint_factory("roberta-prelayernorm", "ForMaskedLM")
    with caplog.at_level("WARNING", logger="onnxport"):
        export(checkpoint, tmp_path / "out", task="fill-mask")
    assert "vocab.json + merges.txt" in caplog.text
    meta = json.loads((tmp_path / "out" / "onnxport.json").read_text())
    assert meta["tokenizer"]["class"] is None and "vocab.json + merges.txt" in meta["tokenizer"]["warning"]
    assert main(["run", str(tmp_path / "out"), "a <mask>"]) == 1
    assert "vocab.json + merges.txt" in capsys.readouterr().err


def test_export_checks_the_copied_tokenizer(fill_mask, tmp_path, monkeypatch, caplog):
    """A tokenizer that does not survive the copy is refused (nothing written); one the checkpoint itself cannot
    load (a tokenizer_config.json naming another family's class) is exported with a warning saying so."""
    from onnxport.errors import ExportError
    from onnxport.exporters import tokenizer_files

    checkpoint, _ = fill_mask
    with monkeypatch.context() as patch:  # a copy that leaves the vocabulary behind (and writes no tokenizer.json)
        patch.setattr(tokenizer_files, "TOKENIZER_FILES", ("tokenizer_config.json",))
        patch.setattr(tokenizer_files, "_write_tokenizer_json", lambda *args: False)
        with pytest.raises(ExportError, match="does not load"):
            export(str(checkpoint), str(tmp_path / "out"), task="fill-mask")
    assert not (tmp_path / "out").exists()
    broken = tmp_path / "ckpt"
    shutil.copytree(checkpoint, broken)
    (broken / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RoFormerTokenizer"}))
    with caplog.at_level("WARNING", logger="onnxport"):
        export(str(broken), str(tmp_path / "warned"), task="fill-mask")
    # the files are XLM-R's: the warning names the class they fit and how to name it (issue 23)
    assert "fit XLMRobertaTokenizerFast" in caplog.text and "not RoFormerTokenizerFast" in caplog.text
    assert "it reads vocab.txt" in caplog.text and '"tokenizer_class": "XLMRobertaTokenizerFast"' in caplog.text
    record = json.loads((tmp_path / "warned" / "onnxport.json").read_text())["tokenizer"]
    assert record["class"] is None and record["fits"] == "XLMRobertaTokenizerFast"


def test_run_serves_sentence_embeddings(tmp_path_factory, tmp_path, capsys):
    """`onnxport run` on a sentence-transformers export (multilingual-e5's stack, saved by sentence-transformers):
    one vector per text as JSON numbers equal to ``encode`` (an empty text included); --prompt-name / --prompt
    reach the pipeline; JSONL in and out; a record that is not text is refused naming it."""
    pytest.importorskip("sentence_transformers")
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from integration_exports import ExportFactory

    factory = ExportFactory(tmp_path_factory.mktemp("cli-st"))
    out = factory("xlm-roberta", "sentence-embeddings")
    model = SentenceTransformer(factory.st_dirs["xlm-roberta"], device="cpu")
    texts = ["hello world, the quick brown fox", "", "今天天气非常好", "the lazy dog " * 12]  # the last: truncated

    def assert_encoded(got, want):
        assert all(isinstance(x, float) for row in got for x in row)  # numbers, not strings
        assert np.max(np.abs(np.asarray(got, np.float64) - want)) <= 1e-5

    assert main(["run", out, *texts, "--provider", "cpu"]) == 0
    assert_encoded(json.loads(capsys.readouterr().out), model.encode(texts))
    for option, value, encode_kwargs in (("--prompt-name", "query", {"prompt_name": "query"}),
                                         ("--prompt-name", "passage", {"prompt_name": "passage"}),
                                         ("--prompt", "Represent this: ", {"prompt": "Represent this: "})):
        assert main(["run", out, option, value, *texts, "--provider", "cpu"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert_encoded(got, model.encode(texts, **encode_kwargs))
        # the prompt changed the vectors (it reached the pipeline)
        assert np.max(np.abs(np.asarray(got) - model.encode(texts))) > 1e-3, option

    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts) + "\n",
                                       encoding="utf-8")
    assert main(["run", out, "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
                 "--prompt-name", "query", "--batch-size", "3"]) == 0
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(got) == len(texts)
    assert_encoded(got, model.encode(texts, prompt_name="query"))

    (tmp_path / "number.jsonl").write_text('{"text": "a"}\n{"text": 7}\n')
    assert main(["run", out, "--input", str(tmp_path / "number.jsonl")]) == 1
    assert "record 2: text must be text, got int" in capsys.readouterr().err
    assert main(["run", out, "hello", "--prompt-name", "title"]) == 1
    assert "title" in capsys.readouterr().err
