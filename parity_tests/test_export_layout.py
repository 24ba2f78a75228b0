"""The export directory for every client: the onnx/ layout, a tokenizer.json that tokenizes as onnxport, the
clients `onnxport info` lists, and directories of the earlier layout that keep loading.

The JavaScript clients themselves run in test_js_clients.py; here the directory is checked against the
``tokenizers`` library (what transformers.js's tokenizer.json reader mirrors) and onnxport's own runtime.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from conftest import build_hf_checkpoint
from onnxport.cli import main
from onnxport.exporters import export
from onnxport.artifact.layout import model_path, served_clients
from onnxport.runtime import pipeline
from onnxport.tokenizers import AutoTokenizer
from tokenizer_fixtures import write_roberta_files, write_roformer_files, write_xlm_roberta_files

TEXTS = ["Hello <mask> world!", "<mask> at the start, then<mask>.", "naïve café <mask>", "  spaces   and\ttabs  "]


@pytest.fixture(scope="module")
def vocabularies(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout-vocab")
    return {"xlm-roberta": write_xlm_roberta_files(root / "xlmr"), "roberta": write_roberta_files(root / "roberta"),
            "roformer": write_roformer_files(root / "roformer")}


@pytest.fixture(scope="module")
def checkpoint_with(vocabularies, tmp_path_factory):
    """``checkpoint_with(model_type, *files)``: a tiny masked-LM checkpoint with the family's vocabulary files."""
    root = tmp_path_factory.mktemp("layout-ckpt")
    sizes = {family: len(AutoTokenizer.from_pretrained(path)) for family, path in vocabularies.items()}

    def make(model_type: str, name: str = "") -> Path:
        family = "roberta" if model_type == "roberta-prelayernorm" else model_type
        checkpoint = root / f"{model_type}{name}"
        build_hf_checkpoint(checkpoint, model_type, "ForMaskedLM", vocab_size=sizes[family], max_position_embeddings=66)
        for item in vocabularies[family].iterdir():
            if item.name != "config.json":
                shutil.copyfile(item, checkpoint / item.name)
        return checkpoint

    return make


def _from_file_matches_onnxport(directory: Path, texts=TEXTS) -> None:
    ours = AutoTokenizer.from_pretrained(directory)
    alone = Tokenizer.from_file(str(directory / "tokenizer.json"))
    for text in texts:
        want = ours(text.replace("<mask>", ours.mask_token), return_offsets_mapping=True)
        got = alone.encode(text.replace("<mask>", ours.mask_token))
        assert got.ids == want["input_ids"], text
        assert [tuple(o) for o in got.offsets] == [tuple(o) for o in want["offset_mapping"]], text


@pytest.mark.parametrize("model_type", ["xlm-roberta", "roberta"])
def test_every_export_has_a_tokenizer_json_that_tokenizes_as_onnxport(checkpoint_with, model_type, tmp_path):
    """XLM-R from its sentencepiece model, RoBERTa from vocab.json + merges.txt (no tokenizer.json in the
    checkpoint): the export's tokenizer.json gives onnxport's ids and offsets on its own, <mask> included, and
    its added tokens carry the flags tokenizer_config.json lists."""
    out = tmp_path / "out"
    export(checkpoint_with(model_type), out, task="fill-mask", validate=False)
    assert Path(model_path(out)) == out / "onnx" / "model.onnx"
    _from_file_matches_onnxport(out)
    meta = json.loads((out / "onnxport.json").read_text())
    assert meta["tokenizer"]["tokenizer_json"] == {"written": True, "exact": True}
    assert "tokenizer.json" in meta["files"] and "onnx/model.onnx" in meta["files"]
    saved = {token["id"]: token for token in json.loads((out / "tokenizer.json").read_text())["added_tokens"]}
    configured = json.loads((out / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert {int(index): flags for index, flags in configured.items()} == \
        {index: {key: value for key, value in token.items() if key not in ("id",)} for index, token in saved.items()}
    mask = next(token for token in saved.values() if token["content"] == "<mask>")
    assert mask["lstrip"] and mask["special"] and not mask["rstrip"]
    assert json.loads((out / "config.json").read_text())["transformers.js_config"] == {"dtype": "fp32"}


def test_a_shipped_tokenizer_json_is_completed_not_copied(checkpoint_with, tmp_path):
    """A checkpoint whose tokenizer.json lists <mask> without lstrip (the flag only in tokenizer_config.json, as
    transformers reads it): the export's tokenizer.json carries the flag, so a reader of tokenizer.json alone
    (transformers.js) eats the space before <mask> as onnxport and transformers do."""
    import transformers

    checkpoint = checkpoint_with("xlm-roberta", "-shipped")
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(checkpoint)
    shipped = json.loads((checkpoint / "tokenizer.json").read_text())
    for token in shipped["added_tokens"]:
        token["lstrip"] = False
    (checkpoint / "tokenizer.json").write_text(json.dumps(shipped))
    reference = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    text = "Hello <mask> world!"
    wanted = reference(text, return_offsets_mapping=True)
    assert Tokenizer.from_file(str(checkpoint / "tokenizer.json")).encode(text).offsets != \
        [tuple(o) for o in wanted["offset_mapping"]]  # the shipped file alone misses the flag

    out = tmp_path / "out"
    export(checkpoint, out, task="fill-mask", validate=False)
    got = Tokenizer.from_file(str(out / "tokenizer.json")).encode(text)
    assert got.ids == wanted["input_ids"] and got.offsets == [tuple(o) for o in wanted["offset_mapping"]]
    ours = AutoTokenizer.from_pretrained(out)(text, return_offsets_mapping=True)
    assert ours["input_ids"] == wanted["input_ids"] and ours["offset_mapping"] == wanted["offset_mapping"]
    _from_file_matches_onnxport(out)


def test_roformer_writes_no_tokenizer_json_that_tokenizes_otherwise(checkpoint_with, tmp_path, caplog, capsys):
    """jieba cannot be written into tokenizer.json: no file from vocab.txt alone; a checkpoint's own
    tokenizer.json is completed but recorded (and warned about) as tokenizing Chinese text otherwise."""
    out = tmp_path / "out"
    export(checkpoint_with("roformer"), out, task="fill-mask", validate=False)
    assert not (out / "tokenizer.json").exists()
    record = json.loads((out / "onnxport.json").read_text())["tokenizer"]["tokenizer_json"]
    assert record["written"] is False and not record["exact"] and "jieba" in record["why"]
    assert main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tokenizer.json: none — no tokenizer.json: RoFormer's jieba" in printed
    assert "transformers.js   no   no tokenizer.json: RoFormer's jieba" in printed

    checkpoint = checkpoint_with("roformer", "-shipped")
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(checkpoint)  # transformers' way: BERT pre-tokenizer
    with caplog.at_level(logging.WARNING, logger="onnxport"):
        export(checkpoint, tmp_path / "shipped", task="fill-mask", validate=False)
    record = json.loads((tmp_path / "shipped" / "onnxport.json").read_text())["tokenizer"]["tokenizer_json"]
    assert record["written"] is True and record["exact"] is False and "今天天气非常好" in record["why"]
    assert "does not tokenize as onnxport" in caplog.text and "jieba" in caplog.text


def test_info_lists_the_clients_the_directory_serves(checkpoint_with, tmp_path, capsys):
    out = tmp_path / "prelayernorm"
    export(checkpoint_with("roberta-prelayernorm"), out, task="fill-mask", validate=False)
    clients = {client: (serves, why) for client, serves, why in
               served_clients(str(out), json.loads((out / "onnxport.json").read_text()))}
    assert clients["onnxport"][0] and clients["Optimum ORTModel"][0] and clients["ONNX Runtime"][0]
    assert clients["transformers.js"] == (False, "it has no roberta-prelayernorm model class")
    assert main(["info", str(out)]) == 0
    assert "transformers.js   no   it has no roberta-prelayernorm model class" in capsys.readouterr().out


def test_directories_of_the_earlier_layout_keep_loading(checkpoint_with, tmp_path, capsys):
    """model.onnx (+ model.onnx_data) at the top, as onnxport wrote them before the onnx/ folder: the runtime,
    `onnxport quantize` and `onnxport triton` read them; info says transformers.js needs a new export."""
    from onnxport.exporters.quantize import quantize
    from onnxport.integrations.triton import write_repository

    new = tmp_path / "new"
    export(checkpoint_with("xlm-roberta"), new, task="fill-mask", validate=False, external_data_threshold=1000)
    old = tmp_path / "old"
    shutil.copytree(new, old)
    for name in ("model.onnx", "model.onnx_data"):
        (old / "onnx" / name).rename(old / name)
    (old / "onnx").rmdir()
    config = json.loads((old / "config.json").read_text())
    del config["transformers.js_config"]
    (old / "config.json").write_text(json.dumps(config))
    assert model_path(str(old)) == str(old / "model.onnx")
    assert json.loads((new / "config.json").read_text())["transformers.js_config"] == \
        {"dtype": "fp32", "use_external_data_format": {"model.onnx": 1}}  # transformers.js reads the data file

    text = "Hello <mask> world!"
    assert pipeline("fill-mask", old, provider="cpu")(text) == pipeline("fill-mask", new, provider="cpu")(text)
    report = quantize(old, tmp_path / "old-int8", recipe="dynamic", validate=False)
    assert Path(report.model_path) == tmp_path / "old-int8" / "onnx" / "model_quantized.onnx"
    assert json.loads((tmp_path / "old-int8" / "config.json").read_text())["transformers.js_config"] == \
        {"dtype": "q8"}  # transformers.js's name for int8: it loads onnx/model_quantized.onnx (no external data)
    assert sorted(p.name for p in (tmp_path / "old-int8" / "onnx").iterdir()) == ["model_quantized.onnx"]
    assert pipeline("fill-mask", tmp_path / "old-int8", provider="cpu")(text)[0]["token"] >= 0
    _optimum_reads_the_graph(tmp_path / "old-int8")
    write_repository(old, tmp_path / "triton", name="mlm")
    assert {p.name for p in (tmp_path / "triton" / "mlm_onnx" / "1").iterdir()} == \
        {"model.onnx", "model.onnx_data"}
    assert main(["info", str(old)]) == 0
    assert "transformers.js   no   an export from before the onnx/ layout" in capsys.readouterr().out


def _optimum_reads_the_graph(directory: Path) -> None:
    """Optimum's ORTModel finds the directory's one graph (here onnx/model_quantized.onnx) and gives onnxport's
    logits on it."""
    try:
        import torch
        from optimum.onnxruntime import ORTModelForMaskedLM
    except ImportError:  # optimum-onnx is an optional test dependency (test_export_pt says so when missing)
        return
    import numpy as np

    from onnxport.runtime import OnnxModelForMaskedLM

    ids = np.array([[0, 5, 6, 7, 8, 2]], dtype=np.int64)
    mask = np.ones_like(ids)
    ours = OnnxModelForMaskedLM.from_pretrained(directory, provider="cpu", load_tokenizer=False)
    theirs = ORTModelForMaskedLM.from_pretrained(directory, provider="CPUExecutionProvider")
    got = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    np.testing.assert_allclose(got, ours(input_ids=ids, attention_mask=mask)["logits"], atol=1e-4, rtol=0)
