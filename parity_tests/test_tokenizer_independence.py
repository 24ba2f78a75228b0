"""A model's ids-level API does not depend on its tokenizer files (issue 23, item 3).

The scenario: an XLM-R-typed checkpoint (architecture only) shipped with RoBERTa's byte-level BPE files
(vocab.json + merges.txt) and no tokenizer_config.json. transformers' AutoModel never reads tokenizer files, so
onnxport's runtime models load without reading them either; the tokenizer is loaded when first asked for, and a
failure then says what is wrong: files that fit another class name it and how to name it (tokenizer_config.json's
tokenizer_class), "corrupt" is kept for files that do not parse. The reference is transformers 4.57.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import build_hf_checkpoint, hf_class
from onnxport.errors import ModelFileError
from tokenizer_fixtures import write_roberta_files

MAX_POSITIONS = 66  # 64 tokens
TEXTS = ["The quick brown <mask> jumps over the lazy dog.", "Hello <mask>!", "<mask> world, how are you doing today?"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """(checkpoint, export, warning logged by the export) for XLM-R weights + RoBERTa BPE files, no tokenizer_config."""
    from onnxport.exporters import export
    from onnxport.tokenizers import RobertaTokenizerFast

    root = tmp_path_factory.mktemp("tokenizer-independence")
    files = write_roberta_files(root / "bpe")
    checkpoint = root / "checkpoint"
    build_hf_checkpoint(checkpoint, "xlm-roberta", "ForMaskedLM", vocab_size=len(RobertaTokenizerFast.from_pretrained(files)),
                        max_position_embeddings=MAX_POSITIONS, type_vocab_size=1)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(files / name, checkpoint / name)
    assert not (checkpoint / "tokenizer_config.json").exists()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("onnxport")
    logger.addHandler(handler)
    try:
        export(str(checkpoint), str(root / "export"), framework="pt", task="fill-mask")
    finally:
        logger.removeHandler(handler)
    return checkpoint, root / "export", "\n".join(r.getMessage() for r in records)


@pytest.fixture(scope="module")
def reference(scenario):
    return hf_class("xlm-roberta", "ForMaskedLM").from_pretrained(scenario[0], attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def named(scenario, tmp_path_factory):
    """The same checkpoint with tokenizer_config.json naming RobertaTokenizerFast, and its export."""
    from onnxport.exporters import export

    root = tmp_path_factory.mktemp("named")
    checkpoint = Path(shutil.copytree(scenario[0], root / "checkpoint"))
    (checkpoint / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizerFast"}))
    export(str(checkpoint), str(root / "export"), framework="pt", task="fill-mask")
    return checkpoint, root / "export"


def _reference_logits(reference, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()


IDS = np.array([[0, 40, 41, 42, 4, 43, 2], [0, 50, 4, 2, 1, 1, 1]])
MASK = (IDS != 1).astype(np.int64)


def test_export_warns_which_class_the_files_fit_and_records_it(scenario):
    _, export_dir, warning = scenario
    assert "fit RobertaTokenizerFast" in warning and "not XLMRobertaTokenizerFast" in warning
    assert '"tokenizer_class": "RobertaTokenizerFast"' in warning and "corrupt" not in warning
    record = json.loads((export_dir / "onnxport.json").read_text())["tokenizer"]
    assert record["class"] is None and record["fits"] == "RobertaTokenizerFast" and record["problem"] == "other-class"
    assert record["warning"] in warning and sorted(record["files"]) == ["merges.txt", "vocab.json"]


def test_model_loads_for_ids_and_equals_transformers(scenario, reference):
    from onnxport.runtime import OnnxModelForMaskedLM

    model = OnnxModelForMaskedLM.from_pretrained(scenario[1], provider="cpu")
    got = model(input_ids=IDS, attention_mask=MASK).logits
    want = _reference_logits(reference, IDS, MASK)
    assert np.abs(got - want).max() <= 1e-4


def test_pipeline_and_tokenizer_say_which_class_the_files_fit(scenario):
    from onnxport.runtime import OnnxModelForMaskedLM, pipeline

    fits = r"fit RobertaTokenizerFast .*not XLMRobertaTokenizerFast.*\"tokenizer_class\": \"RobertaTokenizerFast\""
    with pytest.raises(ModelFileError, match=fits) as refused:
        pipeline("fill-mask", scenario[1], provider="cpu")
    assert "corrupt" not in str(refused.value)
    model = OnnxModelForMaskedLM.from_pretrained(scenario[1], provider="cpu")
    for _ in range(2):  # a failure is not cached as "no tokenizer": asked again, it says the same
        with pytest.raises(ModelFileError, match=fits):
            model.tokenizer


def test_named_class_gives_a_working_pipeline_equal_to_transformers(named, reference):
    import transformers

    from onnxport.runtime import pipeline

    checkpoint, export_dir = named
    assert json.loads((export_dir / "onnxport.json").read_text())["tokenizer"]["class"] == "RobertaTokenizerFast"
    ours = pipeline("fill-mask", export_dir, provider="cpu")(TEXTS, top_k=4)
    # transformers' AutoTokenizer honours tokenizer_class too; its AutoModel is XLMRobertaForMaskedLM
    theirs = transformers.pipeline("fill-mask", model=str(checkpoint), tokenizer=str(checkpoint))(TEXTS, top_k=4)
    assert type(transformers.AutoTokenizer.from_pretrained(checkpoint)).__name__ == "RobertaTokenizerFast"
    for got, want in zip(ours, theirs):
        assert [(c["token"], c["token_str"], c["sequence"]) for c in got] == \
            [(c["token"], c["token_str"], c["sequence"]) for c in want]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(got, want)) <= 1e-4


def test_naming_the_class_in_the_export_directory_is_enough(scenario, named, tmp_path):
    """The warning's other remedy: tokenizer_config.json written into the export, no re-export."""
    from onnxport.runtime import pipeline

    fixed = Path(shutil.copytree(scenario[1], tmp_path / "fixed"))
    (fixed / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizerFast"}))
    want = pipeline("fill-mask", named[1], provider="cpu")(TEXTS, top_k=2)
    assert pipeline("fill-mask", fixed, provider="cpu")(TEXTS, top_k=2) == want


@pytest.mark.parametrize("export", ["scenario", "named"])
def test_truly_corrupt_files_still_say_corrupt(scenario, named, reference, tmp_path, export):
    """vocab.json that does not parse: corrupt, whether the named class or the class the files fit reads it;
    the model still loads and answers ids."""
    from onnxport.runtime import OnnxModelForMaskedLM, pipeline

    damaged = Path(shutil.copytree({"scenario": scenario, "named": named}[export][1], tmp_path / "damaged"))
    (damaged / "vocab.json").write_bytes(b'{"<s>": 0, "hello": ')
    # A named export also has the tokenizer.json onnxport writes (which its fast tokenizer reads first): without
    # it, as in exports made before tokenizer.json was written, the vocabulary files are what is read.
    (damaged / "tokenizer.json").unlink(missing_ok=True)
    model = OnnxModelForMaskedLM.from_pretrained(damaged, provider="cpu")
    assert np.abs(model(input_ids=IDS, attention_mask=MASK).logits - _reference_logits(reference, IDS, MASK)).max() <= 1e-4
    with pytest.raises(ModelFileError, match=r"tokenizer files in .*vocab.json.* are corrupt"):
        model.tokenizer
    with pytest.raises(ModelFileError, match="corrupt"):
        pipeline("fill-mask", damaged, provider="cpu")


def test_loading_a_model_reads_no_tokenizer_file(named, reference, tmp_path, monkeypatch):
    """Garbage in every tokenizer file: from_pretrained opens none of them (an audit hook sees Python's
    opens; the tokenizer library, which reads in Rust, is not even called) and the model answers ids."""
    from onnxport import tokenizers
    from onnxport.exporters import TOKENIZER_FILES
    from onnxport.runtime import OnnxModelForMaskedLM

    garbage = Path(shutil.copytree(named[1], tmp_path / "garbage"))
    for name in TOKENIZER_FILES:
        (garbage / name).write_bytes(b"\xff\xfe not a tokenizer file \x00")
    opened: list[str] = []
    watching = threading.Event()

    def audit(event, args):
        if watching.is_set() and event == "open" and args and isinstance(args[0], (str, bytes, Path)):
            opened.append(str(args[0]))

    sys.addaudithook(audit)  # hooks cannot be removed: the event gates it
    calls = []
    real = tokenizers.AutoTokenizer.from_pretrained.__func__
    monkeypatch.setattr(tokenizers.AutoTokenizer, "from_pretrained",
                        classmethod(lambda cls, *a, **k: (calls.append(a), real(cls, *a, **k))[1]))
    watching.set()
    try:
        model = OnnxModelForMaskedLM.from_pretrained(garbage, provider="cpu")
    finally:
        watching.clear()
    assert calls == [] and not [p for p in opened if Path(p).name in TOKENIZER_FILES], opened
    assert any(Path(p).name == "config.json" for p in opened)  # the hook did watch the load
    assert np.abs(model(input_ids=IDS, attention_mask=MASK).logits - _reference_logits(reference, IDS, MASK)).max() <= 1e-4
    with pytest.raises(ModelFileError, match="corrupt"):
        model.tokenizer


def test_the_tokenizer_is_loaded_once_for_many_threads(named, monkeypatch):
    from onnxport import tokenizers
    from onnxport.runtime import OnnxModelForMaskedLM

    model = OnnxModelForMaskedLM.from_pretrained(named[1], provider="cpu")
    calls = []
    real = tokenizers.AutoTokenizer.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        calls.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(tokenizers.AutoTokenizer, "from_pretrained", classmethod(counted))
    start = threading.Barrier(8)
    seen = []

    def ask():
        start.wait()
        seen.append(model.tokenizer)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(seen) == 8 and all(t is seen[0] for t in seen)
    assert type(seen[0]).__name__ == "RobertaTokenizerFast"
    assert seen[0]("Hello <mask>!")["input_ids"] == \
        __import__("transformers").AutoTokenizer.from_pretrained(named[0])("Hello <mask>!")["input_ids"]
    without = OnnxModelForMaskedLM.from_pretrained(named[1], provider="cpu", load_tokenizer=False)
    assert without.tokenizer is None and len(calls) == 1  # load_tokenizer=False: never read


@pytest.fixture(scope="module")
def vocabularies(tmp_path_factory):
    """Each family's tokenizer files, trained once: family -> directory."""
    from tokenizer_fixtures import write_roformer_files, write_xlm_roberta_files

    root = tmp_path_factory.mktemp("vocabularies")
    return {"xlm-roberta": write_xlm_roberta_files(root / "xlm-roberta"), "roberta": write_roberta_files(root / "roberta"),
            "roformer": write_roformer_files(root / "roformer")}


@pytest.mark.parametrize("files, model_type, kind, fits", [
    ("roberta", "xlm-roberta", "other-class", "RobertaTokenizerFast"),        # vocab.json + merges.txt
    ("xlm-roberta", "roberta-prelayernorm", "other-class", "XLMRobertaTokenizerFast"),  # sentencepiece.bpe.model
    ("xlm-roberta", "roformer", "other-class", "XLMRobertaTokenizerFast"),
    ("roformer", "xlm-roberta", "other-class", "RoFormerTokenizerFast"),      # vocab.txt (BERT-style WordPiece)
    ("roformer", "roberta", "other-class", "RoFormerTokenizerFast"),
])
def test_files_of_another_family_name_the_class_they_fit(vocabularies, tmp_path, files, model_type, kind, fits):
    """Every family's files under every other family's config: the class they fit comes from families.py's
    tokenizer_files, and naming it (tokenizer_class) loads them."""
    from onnxport.exporters.tokenizer_files import tokenizer_problem
    from onnxport.families import FAMILIES
    from onnxport.tokenizers import AutoTokenizer

    directory = Path(shutil.copytree(vocabularies[files], tmp_path / "d"))
    (directory / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(Exception) as failed:
        AutoTokenizer.from_pretrained(directory)
    problem = tokenizer_problem(str(directory), failed.value, FAMILIES[model_type])
    assert (problem.kind, problem.fits) == (kind, fits) and "corrupt" not in problem.message
    assert f'{{"tokenizer_class": "{fits}"}}' in problem.message
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": fits}))
    assert type(AutoTokenizer.from_pretrained(directory)).__name__ == fits


def test_missing_incomplete_and_corrupt_are_told_apart(vocabularies, tmp_path):
    from onnxport.exporters.tokenizer_files import tokenizer_problem
    from onnxport.families import FAMILIES
    from onnxport.tokenizers import AutoTokenizer

    def problem(directory: Path):
        with pytest.raises(Exception) as failed:
            AutoTokenizer.from_pretrained(directory)
        return tokenizer_problem(str(directory), failed.value, FAMILIES["xlm-roberta"])

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    assert problem(empty).kind == "missing" and "no usable tokenizer" in problem(empty).message
    half = Path(shutil.copytree(empty, tmp_path / "half"))
    shutil.copy(vocabularies["roberta"] / "merges.txt", half)  # RoBERTa's merges without its vocab.json
    assert problem(half).kind == "incomplete" and "sentencepiece.bpe.model" in problem(half).message
    garbage = Path(shutil.copytree(vocabularies["xlm-roberta"], tmp_path / "garbage"))
    (garbage / "sentencepiece.bpe.model").write_bytes(b"\x08\xff\xff garbage")
    assert problem(garbage).kind == "corrupt" and "sentencepiece.bpe.model" in problem(garbage).message
    config = Path(shutil.copytree(vocabularies["xlm-roberta"], tmp_path / "config"))
    (config / "tokenizer_config.json").write_text("{not json")
    assert problem(config).kind == "corrupt" and "tokenizer_config.json" in problem(config).message
