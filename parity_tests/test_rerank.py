"""Cross-encoders (rerankers): `onnxport export CE_DIR OUT` and `pipeline("rerank", OUT)` against sentence-transformers.

Tiny random cross-encoders built and saved by sentence-transformers' own ``CrossEncoder`` over real vocabularies
(real_vocab.py): an XLM-R one like bge-reranker-v2-m3 (one label, Sigmoid, 120k SentencePiece pieces), a RoBERTa
one with three labels (Identity) and a RoBERTa-PreLayerNorm one (Sigmoid) on GPT-2's BPE, a RoFormer one on bert-base-chinese's WordPiece with Tanh, a
Softmax one, one with prompts, and one in sentence-transformers 4's format (the activation in config.json).
Every score is compared with ``CrossEncoder.predict`` (1e-5) and every ranking with ``CrossEncoder.rank``; the
pairs include truncated ones, empty documents, emoji and many languages. PyTorch exports here; TensorFlow and
Flax exports of the same cross-encoders are `slow`.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import real_vocab
from conftest import build_hf_checkpoint
from onnxport.errors import ExportError, InputError, ModelFileError, TaskError
from onnxport.exporters import export
from onnxport.runtime import load_model, pipeline

st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed (test extras)")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SCORE_ATOL = 1e-5

QUERY = "Where does the quick brown fox live?"
DOCUMENTS = [
    "The quick brown fox lives in the forest near the river.",
    "",  # an empty document
    "今天天气非常好，我们去北京的公园看狐狸。",
    "Привет, мир! Лиса живёт в лесу.",
    "مرحبا بالعالم، الثعلب يعيش في الغابة",
    "family 👨\u200d👩\u200d👧\u200d👦 and 👍🏽 flags 🇫🇷 emoji 😀🎉 🦊",
    "नमस्ते दुनिया, लोमड़ी जंगल में रहती है",
    "안녕하세요 세계 여우는 숲에 산다",
    "Ünïcödé façade naïve Zoë Ångström, the fox",
    " ".join(["a very long document about foxes and rivers that the model must truncate"] * 12),
]
QUERIES = [QUERY, "狐狸住在哪里？", "🦊?", " ".join(["a long query that alone fills most of the window"] * 6)]


# name -> (vocabulary builder, model_type, tokenizer class, num_labels, activation (torch module) or None, extras)
CROSS_ENCODERS = {
    "xlm-roberta-sigmoid": (real_vocab.sentencepiece_directory, "xlm-roberta", "XLMRobertaTokenizerFast", 1, None,
                            {"max_length": 32}),
    "roberta-3-labels": (lambda: roberta_vocabulary(real_vocab.gpt2_directory()), "roberta", "RobertaTokenizerFast",
                         3, None, {"max_length": 40}),
    "roberta-prelayernorm-sigmoid": (lambda: roberta_vocabulary(real_vocab.gpt2_directory()), "roberta-prelayernorm",
                                     "RobertaTokenizerFast", 1, None, {"max_length": 36}),
    "roformer-tanh": (real_vocab.bert_chinese_directory, "roformer", "RoFormerTokenizerFast", 1, "Tanh",
                      {"max_length": 28}),
    "xlm-roberta-softmax": (real_vocab.sentencepiece_directory, "xlm-roberta", "XLMRobertaTokenizerFast", 2,
                            "Softmax", {"max_length": 64}),
    "xlm-roberta-prompts": (real_vocab.sentencepiece_directory, "xlm-roberta", "XLMRobertaTokenizerFast", 1, None,
                            {"max_length": 32, "prompts": {"query": "query: ", "web": "web search: "},
                             "default_prompt_name": "query"}),
}
def roberta_vocabulary(gpt2_dir) -> str:
    """GPT-2's BPE laid out as roberta-base's vocab.json is: <s> <pad> </s> <unk> at 0-3 (the position table's
    padding row is the pad id), GPT-2's tokens after them, <mask> last."""
    directory = real_vocab.CACHE / "roberta-layout-gpt2"
    if not (directory / "vocab.json").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        gpt2 = json.loads((gpt2_dir / "vocab.json").read_text(encoding="utf-8"))
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for token, _ in sorted(gpt2.items(), key=lambda item: item[1]):
            vocab.setdefault(token, len(vocab))
        vocab["<mask>"] = len(vocab)
        (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        shutil.copyfile(gpt2_dir / "merges.txt", directory / "merges.txt")
    return directory


POSITIONS = 66  # position table: XLM-R / RoBERTa reserve two rows, so 64 tokens


def build_cross_encoder(root, name: str) -> str:
    """A random sequence classifier over a real vocabulary, wrapped and saved by sentence-transformers' CrossEncoder."""
    vocabulary, model_type, tokenizer_class, num_labels, activation, extras = CROSS_ENCODERS[name]
    try:
        vocab_dir = vocabulary()
    except real_vocab.VocabularyUnavailable as error:
        pytest.skip(f"vocabulary unavailable: {error}")
    hf_dir, ce_dir = os.path.join(root, f"{name}-hf"), os.path.join(root, name)
    if os.path.isdir(ce_dir):
        return ce_dir
    tokenizer = getattr(transformers, tokenizer_class).from_pretrained(str(vocab_dir))
    build_hf_checkpoint(hf_dir, model_type, "ForSequenceClassification", seed=len(name), vocab_size=len(tokenizer),
                        num_labels=num_labels, pad_token_id=tokenizer.pad_token_id, max_position_embeddings=POSITIONS,
                        initializer_range=0.2)
    tokenizer.save_pretrained(hf_dir)
    kwargs = {k: v for k, v in extras.items()}
    if activation:
        kwargs["activation_fn"] = getattr(torch.nn, activation)()
    st.CrossEncoder(hf_dir, device="cpu", **kwargs).save_pretrained(ce_dir)
    return ce_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cross-encoders"))
    cache = {}

    def get(name: str, framework: str = "pt"):
        """(CE directory, export directory, the CrossEncoder loaded from the directory)."""
        if (name, framework) not in cache:
            ce_dir = build_cross_encoder(root, name)
            out = os.path.join(root, f"{name}-{framework}-export")
            export(ce_dir, out, framework=framework)  # the task from the directory: rerank
            cache[name, framework] = (ce_dir, out, st.CrossEncoder(ce_dir, device="cpu"))
        return cache[name, framework]

    return get


def compare(ce, rerank, query, documents, **kwargs):
    """Scores of every (query, document) pair against CrossEncoder.predict; returns the largest difference."""
    want = ce.predict([(query, d) for d in documents], batch_size=4, show_progress_bar=False, **kwargs)
    got = rerank(query, documents, batch_size=3, **kwargs)
    assert got.dtype == np.float32 and got.shape == np.asarray(want).shape
    diff = float(np.max(np.abs(got.astype(np.float64) - np.asarray(want, dtype=np.float64))))
    assert diff <= SCORE_ATOL, (query, diff)
    return diff


@pytest.mark.parametrize("name", list(CROSS_ENCODERS))
def test_scores_equal_cross_encoder_predict(built, name):
    ce_dir, out, ce = built(name)
    meta = json.load(open(os.path.join(out, "onnxport.json")))
    assert meta["task"] == "rerank" and meta["io_spec"]["task"] == "rerank"
    record = meta["cross_encoder"]
    num_labels, activation = CROSS_ENCODERS[name][3], CROSS_ENCODERS[name][4]
    assert record["num_labels"] == num_labels
    assert record["activation"] == (activation or ("sigmoid" if num_labels == 1 else "identity")).lower()
    assert record["max_length"] == ce.max_seq_length == CROSS_ENCODERS[name][5]["max_length"]
    rerank = pipeline("rerank", out, provider="cpu")
    assert rerank.max_length == record["max_length"]
    worst = 0.0
    for query in QUERIES:
        worst = max(worst, compare(ce, rerank, query, DOCUMENTS))
    if num_labels > 1:  # predict's apply_softmax over the labels
        worst = max(worst, compare(ce, rerank, QUERY, DOCUMENTS, apply_softmax=True))
    # truncation really happened: the longest pair is cut to max_length tokens
    enc = rerank.tokenizer(QUERY, DOCUMENTS[-1], truncation=True, max_length=rerank.max_length)
    assert len(enc["input_ids"]) == rerank.max_length
    print(f"\n[{name}] {len(QUERIES)} queries x {len(DOCUMENTS)} documents: largest |onnx - predict| {worst:.2e}")


@pytest.mark.parametrize("name", ["xlm-roberta-sigmoid", "roberta-prelayernorm-sigmoid", "roformer-tanh",
                                  "xlm-roberta-prompts"])
def test_rank_equals_cross_encoder_rank(built, name):
    ce_dir, out, ce = built(name)
    rerank = pipeline("rerank", out, provider="cpu")
    for query in QUERIES:
        for top_k, with_text in ((None, False), (3, True), (1, False)):
            want = ce.rank(query, DOCUMENTS, top_k=top_k, return_documents=with_text, show_progress_bar=False)
            got = rerank.rank(query, DOCUMENTS, top_k=top_k, return_documents=with_text)
            assert [g["corpus_id"] for g in got] == [w["corpus_id"] for w in want]
            for g, w in zip(got, want):
                assert isinstance(g["score"], float) and abs(g["score"] - float(w["score"])) <= SCORE_ATOL
                assert g.get("text") == w.get("text")


def test_prompts_as_cross_encoder_resolves_them(built):
    _, out, ce = built("xlm-roberta-prompts")
    meta = json.load(open(os.path.join(out, "onnxport.json")))
    assert meta["cross_encoder"]["prompts"] == {"query": "query: ", "web": "web search: "}
    assert meta["cross_encoder"]["default_prompt_name"] == "query"
    rerank = pipeline("rerank", out, provider="cpu")
    compare(ce, rerank, QUERY, DOCUMENTS[:4])  # the default prompt
    compare(ce, rerank, QUERY, DOCUMENTS[:4], prompt_name="web")
    compare(ce, rerank, QUERY, DOCUMENTS[:4], prompt="anything: ")
    # the prompt changes the scores (so the comparisons above test it)
    assert np.max(np.abs(rerank(QUERY, DOCUMENTS[:4]) - rerank(QUERY, DOCUMENTS[:4], prompt=""))) > 1e-4
    with pytest.raises(InputError, match="prompt_name 'nope' is not one of this model's prompts"):
        rerank(QUERY, DOCUMENTS, prompt_name="nope")


def test_sentence_transformers_4_format(built, tmp_path):
    """sentence-transformers 4 kept the activation in config.json's sentence_transformers block, no modules.json."""
    ce_dir, _, _ = built("roformer-tanh")
    old = tmp_path / "st4"
    shutil.copytree(ce_dir, old)
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
        (old / name).unlink()
    config = json.loads((old / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Tanh", "version": "4.1.0"}
    (old / "config.json").write_text(json.dumps(config))
    out = tmp_path / "st4-export"
    export(old, out)
    ce = st.CrossEncoder(str(old), device="cpu")
    assert type(ce.activation_fn).__name__ == "Tanh"
    meta = json.loads((out / "onnxport.json").read_text())
    assert meta["cross_encoder"]["activation"] == "tanh" and "config.json" in meta["cross_encoder"]["source"]
    compare(ce, pipeline("rerank", out, provider="cpu"), QUERY, DOCUMENTS)


def test_plain_classifier_with_task_rerank_gets_cross_encoder_defaults(built, tmp_path):
    """A sequence-classification checkpoint without sentence-transformers files: text-classification by default;
    --task rerank scores it as CrossEncoder(checkpoint) does (Sigmoid for one label)."""
    ce_dir, _, _ = built("xlm-roberta-sigmoid")
    plain = tmp_path / "plain"
    shutil.copytree(ce_dir, plain)
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json", "README.md"):
        if (plain / name).exists():
            (plain / name).unlink()
    assert export(plain, tmp_path / "as-classifier", validate=False).task == "text-classification"
    report = export(plain, tmp_path / "as-reranker", task="rerank")
    assert report.task == "rerank"
    meta = json.loads((tmp_path / "as-reranker" / "onnxport.json").read_text())
    assert meta["cross_encoder"]["activation"] == "sigmoid" and "default" in meta["cross_encoder"]["source"]
    compare(st.CrossEncoder(str(plain), device="cpu"), pipeline("rerank", tmp_path / "as-reranker", provider="cpu"),
            QUERY, DOCUMENTS)
    # the graph is a sequence classifier's: the text-classification class loads it, its pipeline does not
    assert load_model(tmp_path / "as-reranker", provider="cpu").spec.task == "rerank"
    with pytest.raises(TaskError, match="needs an export for 'text-classification'"):
        pipeline("text-classification", tmp_path / "as-reranker")
    with pytest.raises(ModelFileError, match="no cross_encoder record"):
        from onnxport.runtime.models import OnnxModelForSequenceClassification
        from onnxport.runtime.pipelines import RerankPipeline

        RerankPipeline(OnnxModelForSequenceClassification.from_pretrained(tmp_path / "as-classifier", provider="cpu"))


def test_unsupported_activation_and_modules_are_refused(built, tmp_path):
    ce_dir, _, _ = built("roformer-tanh")
    relu = tmp_path / "relu"
    shutil.copytree(ce_dir, relu)
    st_config = json.loads((relu / "config_sentence_transformers.json").read_text())
    st_config["activation_fn"] = "torch.nn.modules.activation.ReLU"
    (relu / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    with pytest.raises(ExportError, match=r"activation 'torch.nn.modules.activation.ReLU'.*supported: sigmoid"):
        export(relu, tmp_path / "relu-out")
    assert not (tmp_path / "relu-out").exists()
    dense = tmp_path / "dense"
    shutil.copytree(ce_dir, dense)
    modules = json.loads((dense / "modules.json").read_text())
    modules.append({"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.base.modules.dense.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ExportError, match=r"has modules .*Dense.*one Transformer module"):
        export(dense, tmp_path / "dense-out")


def test_bad_inputs_get_clear_errors(built):
    _, out, _ = built("xlm-roberta-sigmoid")
    rerank = pipeline("rerank", out, provider="cpu")
    with pytest.raises(InputError, match="documents is empty"):
        rerank(QUERY, [])
    with pytest.raises(InputError, match="documents must be a list of texts, got str"):
        rerank(QUERY, "one document")
    with pytest.raises(InputError, match="query must be a str, got int"):
        rerank(42, DOCUMENTS)
    with pytest.raises(InputError, match=r"documents\[1\] must be a str, got NoneType"):
        rerank(QUERY, ["fine", None])
    with pytest.raises(InputError, match="lone surrogate"):
        rerank("bad \ud800", DOCUMENTS)
    with pytest.raises(InputError, match="top_k"):
        rerank.rank(QUERY, DOCUMENTS, top_k=0)
    _, out3, _ = built("roberta-3-labels")
    with pytest.raises(TaskError, match="3 labels"):
        pipeline("rerank", out3, provider="cpu").rank(QUERY, DOCUMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["tf", "flax"])
@pytest.mark.parametrize("name", ["xlm-roberta-sigmoid", "roberta-3-labels", "roformer-tanh"])
def test_tf_and_flax_exports_score_as_predict(built, framework, name):
    pytest.importorskip({"tf": "tensorflow", "flax": "jax2onnx"}[framework])
    _, out, ce = built(name, framework)
    meta = json.load(open(os.path.join(out, "onnxport.json")))
    assert meta["framework"] == framework and meta["task"] == "rerank"
    rerank = pipeline("rerank", out, provider="cpu")
    for query in QUERIES:
        compare(ce, rerank, query, DOCUMENTS)
    if ce.num_labels == 1:
        want = ce.rank(QUERY, DOCUMENTS, show_progress_bar=False)
        assert [g["corpus_id"] for g in rerank.rank(QUERY, DOCUMENTS)] == [w["corpus_id"] for w in want]


# ----------------------------------------------------------------------------- serving: CLI, rows
def test_cli_run_jsonl_and_command_line(built, tmp_path, capsys):
    from onnxport.cli import main

    _, out, ce = built("xlm-roberta-sigmoid")
    records = [{"query": QUERY, "documents": DOCUMENTS}, {"query": "狐狸住在哪里？", "documents": DOCUMENTS[:3]}]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n",
                                       encoding="utf-8")
    assert main(["run", str(out), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
                 "--top-k", "2", "--return-documents", "--provider", "cpu"]) == 0
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(got) == 2
    for record, answer in zip(records, got):
        want_scores = ce.predict([(record["query"], d) for d in record["documents"]], show_progress_bar=False)
        assert all(isinstance(s, float) for s in answer["scores"])  # numbers, not strings
        assert np.max(np.abs(np.asarray(answer["scores"]) - want_scores)) <= SCORE_ATOL
        want = ce.rank(record["query"], record["documents"], top_k=2, return_documents=True, show_progress_bar=False)
        assert [(r["corpus_id"], r["text"]) for r in answer["ranking"]] == [(w["corpus_id"], w["text"]) for w in want]
    # the command line: the documents as TEXTs and --query, pretty JSON of one answer
    assert main(["run", str(out), *DOCUMENTS[:3], "--query", QUERY, "--provider", "cpu"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert np.max(np.abs(np.asarray(answer["scores"]) - ce.predict([(QUERY, d) for d in DOCUMENTS[:3]],
                                                                   show_progress_bar=False))) <= SCORE_ATOL
    assert [r["corpus_id"] for r in answer["ranking"]] == [
        w["corpus_id"] for w in ce.rank(QUERY, DOCUMENTS[:3], show_progress_bar=False)]
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "rerank of a xlm-roberta XLMRobertaForSequenceClassification" in info
    assert "cross-encoder: sigmoid of 1 logit(s)" in info and "pairs truncated to 32 tokens" in info
    # --query first, the documents after it: the same
    assert main(["run", str(out), "--query", QUERY, *DOCUMENTS[:3], "--provider", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out) == answer
    # bad input: one line each
    assert main(["run", str(out), "some document"]) == 1
    assert "rerank needs --query QUERY and the documents as TEXTs" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"query": "q", "documents": ["a"]}\n{"query": "q"}\n')
    assert main(["run", str(out), "--input", str(tmp_path / "bad.jsonl")]) == 1
    assert "record 2 lacks documents" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text('{"query": "q", "documents": []}\n')
    assert main(["run", str(out), "--input", str(tmp_path / "empty.jsonl")]) == 1
    assert "record 1: documents must be a non-empty list of texts" in capsys.readouterr().err
    (tmp_path / "number.jsonl").write_text('{"query": 7, "documents": ["a"]}\n')
    assert main(["run", str(out), "--input", str(tmp_path / "number.jsonl")]) == 1
    assert "record 1: query must be text, got int" in capsys.readouterr().err


def test_row_runner_serves_scored_documents_and_refuses_bad_rows_alone(built):
    from onnxport.integrations import ROW_FIELDS, RowRunner, numbers_of, stack_numbers

    _, out, ce = built("roberta-3-labels")
    pipe = pipeline("rerank", out, provider="cpu")
    runner = RowRunner(pipe, "rerank", {"apply_softmax": True, "top_k": 2})
    rows = [{"query": QUERY, "documents": json.dumps(DOCUMENTS[:4])}, {"query": QUERY, "documents": "[]"},
            {"query": "", "documents": ["a"]}, {"query": "ok", "documents": ["", "b"]}, {"documents": ["a"]},
            {"query": QUERY, "documents": np.array(DOCUMENTS[4:7], dtype=object)}]
    answers = runner.run(rows)
    for i, documents in ((0, DOCUMENTS[:4]), (3, ["", "b"]), (5, DOCUMENTS[4:7])):
        query = rows[i]["query"]
        want = ce.predict([(query, d) for d in documents], apply_softmax=True, show_progress_bar=False)
        assert np.max(np.abs(np.asarray(answers[i]["scores"]) - want)) <= SCORE_ATOL
        assert "ranking" not in answers[i]  # several labels: no one order (CrossEncoder.rank refuses them too)
        assert numbers_of(ROW_FIELDS["rerank"], answers[i]).shape == (len(documents), 3)
    for i, message in ((1, "documents must be a non-empty list"), (2, "query is empty"), (4, "query is missing")):
        assert isinstance(answers[i], InputError) and message in str(answers[i]), (i, answers[i])
    # Triton's SCORES of one request: rows of different document counts padded with NaN
    stacked = stack_numbers([numbers_of(ROW_FIELDS["rerank"], answers[i]) for i in (0, 3)], [-1, 3])
    assert stacked.dtype == np.float32 and stacked.shape == (2, 4, 3) and np.isnan(stacked[1, 2:]).all()
    assert ROW_FIELDS["rerank"].numbers_dims(pipe.model.spec) == [-1, 3]
    with pytest.raises(InputError, match="top_k"):
        RowRunner(pipe, "rerank", {"top_k": 0})
