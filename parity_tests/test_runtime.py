"""Runtime: task-head models and pipelines on exported directories, against the native models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MODEL_TYPES, build_hf_checkpoint, hf_class, max_abs_diff
from onnxport.exporters import export
from onnxport.exporters.io_spec import TASKS
from onnxport.runtime import (
    ModelFileError,
    OnnxModel,
    OnnxModelForCausalLM,
    OnnxModelForMaskedLM,
    OnnxModelForQuestionAnswering,
    OnnxModelForSequenceClassification,
    OnnxModelForTokenClassification,
    RuntimeInputError,
    load_model,
    pipeline,
)
from tokenizer_fixtures import write_roberta_files, write_roformer_files, write_xlm_roberta_files
from onnxport.artifact.layout import model_path

TOKENIZER_WRITERS = {
    "xlm-roberta": write_xlm_roberta_files,
    "roberta-prelayernorm": write_roberta_files,
    "roformer": write_roformer_files,
}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
TEXTS = [
    "hello world, the quick brown fox",
    "今天天气非常好",
    "a",
    "the lazy dog jumps over the quick brown fox and the fox is happy about it",
]


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    return {m: writer(root / m) for m, writer in TOKENIZER_WRITERS.items()}


@pytest.fixture(scope="module")
def served(tokenizer_dirs, tmp_path_factory):
    """``served(model_type, task, with_past=False)`` -> (checkpoint dir with tokenizer, export dir), cached."""
    from onnxport.tokenizers import AutoTokenizer

    checkpoints: dict = {}
    exports: dict = {}
    root = tmp_path_factory.mktemp("served")

    def checkpoint_for(model_type, task):
        if (model_type, task) not in checkpoints:
            vocab_size = len(AutoTokenizer.from_pretrained(tokenizer_dirs[model_type]))
            overrides = dict(vocab_size=vocab_size, max_position_embeddings=66)
            if task == "token-classification":
                overrides["id2label"] = NER_LABELS
            checkpoint = root / f"ckpt-{model_type}-{task}"
            build_hf_checkpoint(checkpoint, model_type, TASKS[task].head, **overrides)
            for f in tokenizer_dirs[model_type].iterdir():
                if f.name != "config.json":
                    shutil.copy(f, checkpoint / f.name)
            checkpoints[(model_type, task)] = str(checkpoint)
        return checkpoints[(model_type, task)]

    def get(model_type, task, with_past=False, framework="pt"):
        key = (model_type, task, with_past, framework)
        if key not in exports:
            checkpoint = checkpoint_for(model_type, task)
            out = root / f"onnx-{model_type}-{task}-{int(with_past)}-{framework}"
            export(checkpoint, str(out), framework=framework, task=task, with_past=with_past)
            exports[key] = (checkpoint, str(out))
        return exports[key]

    return get


def _native(model_type, task, checkpoint):
    from onnxport.reference_models.pt import model_class

    overrides = {"is_decoder": True} if task == "text-generation" else {}
    return model_class(model_type, TASKS[task].head).from_pretrained(checkpoint, **overrides)


def _hf_pipeline(task, model_type, checkpoint):
    import transformers

    overrides = {"is_decoder": True} if task == "text-generation" else {}
    model = hf_class(model_type, TASKS[task].head).from_pretrained(checkpoint, attn_implementation="eager", **overrides)
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    return transformers.pipeline(task, model=model.eval(), tokenizer=tokenizer, device="cpu")


# ----------------------------------------------------------------------------- models
# (sentence-embeddings exports sentence-transformers directories: test_sentence_embeddings.py)
@pytest.mark.parametrize("task", [t for t, spec in TASKS.items()
                                  if t not in ("text-generation", "multiple-choice") and not spec.sentence_stack])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_task_models_match_native(served, model_type, task):
    checkpoint, export_dir = served(model_type, task)
    model = load_model(export_dir, provider="cpu")
    assert model.spec.task == task and model.provider == "cpu" and model.tokenizer is not None
    enc = model.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="np")
    feeds = {k: v for k, v in enc.items() if k in model.spec.input_names}
    out = model(**feeds)
    native = _native(model_type, task, checkpoint)
    with torch.no_grad():
        want = native(**{k: torch.from_numpy(np.asarray(v)) for k, v in feeds.items()})
    for name in model.spec.output_names:
        assert max_abs_diff(out[name], want[name].numpy()) <= 1e-4, name
    assert getattr(out, model.spec.output_names[0]) is out[model.spec.output_names[0]]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_multiple_choice_model_and_pipeline(served, model_type):
    checkpoint, export_dir = served(model_type, "multiple-choice")
    mc = pipeline("multiple-choice", export_dir, provider="cpu")
    choices = ["the quick brown fox", "the lazy dog", "hello world"]
    result = mc("hello", choices)
    enc = mc.tokenizer(["hello"] * 3, text_pair=choices, padding=True, return_tensors="pt")
    native = _native(model_type, "multiple-choice", checkpoint)
    with torch.no_grad():
        want = native(**{k: v[None] for k, v in enc.items() if k in mc.model.spec.input_names}).logits[0].numpy()
    assert max_abs_diff(result["logits"], want) <= 1e-4
    assert result["best"] == int(np.argmax(want)) and abs(sum(result["scores"]) - 1) < 1e-6


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_generation_with_cache_equals_native_greedy(served, model_type):
    checkpoint, with_past = served(model_type, "text-generation", True)
    _, without_past = served(model_type, "text-generation", False)
    native = _native(model_type, "text-generation", checkpoint)
    prompt = "the quick brown"
    gen = pipeline("text-generation", with_past, provider="cpu")
    ids = np.asarray(gen.tokenizer(prompt, add_special_tokens=False, return_tensors="np")["input_ids"])
    # native greedy decoding without a cache: the independent reference
    sequence = torch.from_numpy(ids)
    expected = []
    with torch.no_grad():
        for _ in range(6):
            token = int(native(input_ids=sequence, use_cache=False).logits[0, -1].argmax())
            expected.append(token)
            sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
    got = gen(prompt, max_new_tokens=6, eos_token_id=-1)
    assert got["generated_token_ids"] == expected
    assert got["generated_text"].startswith(prompt)
    # IO binding (the CUDA path, exercised here on the CPU device): the cache stays in OrtValues
    bound = pipeline("text-generation", with_past, provider="cpu", use_io_binding=True)
    assert bound.model.use_io_binding and bound(prompt, max_new_tokens=6, eos_token_id=-1)["generated_token_ids"] == expected
    step = bound.model(input_ids=ids)
    assert type(step.past_key_values[0][0]).__name__ == "OrtValue"
    plain = pipeline("text-generation", without_past, provider="cpu")
    assert plain(prompt, max_new_tokens=6, eos_token_id=-1)["generated_token_ids"] == expected
    a = gen(prompt, max_new_tokens=5, do_sample=True, top_k=20, temperature=0.8, seed=3)
    b = gen(prompt, max_new_tokens=5, do_sample=True, top_k=20, temperature=0.8, seed=3)
    assert a == b  # seeded sampling is reproducible


# ----------------------------------------------------------------------------- pipelines vs transformers
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_text_classification_pipeline_matches_transformers(served, model_type):
    checkpoint, export_dir = served(model_type, "text-classification")
    ours = pipeline("text-classification", export_dir, provider="cpu", batch_size=2)
    theirs = _hf_pipeline("text-classification", model_type, checkpoint)
    got = ours(TEXTS, top_k=None)
    want = theirs(TEXTS, top_k=None)
    for g, w in zip(got, want):
        assert [x["label"] for x in g] == [x["label"] for x in w]
        assert np.allclose([x["score"] for x in g], [x["score"] for x in w], atol=1e-5)
    single = ours({"text": "hello world", "text_pair": "the fox"})
    assert single["label"] == theirs({"text": "hello world", "text_pair": "the fox"})["label"]


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_token_classification_pipeline_matches_transformers(served, model_type, strategy):
    checkpoint, export_dir = served(model_type, "token-classification")
    ours = pipeline("token-classification", export_dir, provider="cpu")
    theirs = _hf_pipeline("token-classification", model_type, checkpoint)
    for text in TEXTS:
        got = ours(text, aggregation_strategy=strategy, ignore_labels=())
        want = theirs(text, aggregation_strategy=strategy, ignore_labels=[])
        key = "entity" if strategy == "none" else "entity_group"
        assert [(e[key], e["start"], e["end"]) for e in got] == [(e[key], e["start"], e["end"]) for e in want], text
        assert np.allclose([e["score"] for e in got], [float(e["score"]) for e in want], atol=1e-5)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_fill_mask_pipeline_matches_transformers(served, model_type):
    checkpoint, export_dir = served(model_type, "fill-mask")
    ours = pipeline("fill-mask", export_dir, provider="cpu")
    theirs = _hf_pipeline("fill-mask", model_type, checkpoint)
    text = f"the quick {ours.tokenizer.mask_token} fox"
    got, want = ours(text, top_k=4), theirs(text, top_k=4)
    assert [g["token"] for g in got] == [w["token"] for w in want]
    assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)
    targets = ["fox", "dog"]
    got_t = ours(text, targets=targets, top_k=2)
    want_t = theirs(text, targets=targets, top_k=2)
    assert [g["token"] for g in got_t] == [w["token"] for w in want_t]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_question_answering_pipeline_matches_transformers(served, model_type):
    checkpoint, export_dir = served(model_type, "question-answering")
    ours = pipeline("question-answering", export_dir, provider="cpu")
    theirs = _hf_pipeline("question-answering", model_type, checkpoint)
    question, context = "where is the fox", "the quick brown fox jumps over the lazy dog near the river bank"
    for align in (True, False):
        got = ours(question=question, context=context, top_k=3, max_answer_len=5, align_to_words=align)
        want = theirs(question=question, context=context, top_k=3, max_answer_len=5, align_to_words=align)
        assert [(g["start"], g["end"]) for g in got] == [(w["start"], w["end"]) for w in want], (got, want)
        assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)
        assert all(g["answer"] == context[g["start"]:g["end"]] for g in got)
    # a context longer than the model: windows with doc_stride, answers still index the original text
    long_context = " ".join([context] * 12)
    long = ours(question=question, context=long_context, max_seq_len=48, doc_stride=16, top_k=2)
    assert all(a["answer"] == long_context[a["start"]:a["end"]] for a in long)
    # the null answer competes with the spans at its own score, as in transformers
    got = ours(question=question, context=context, handle_impossible_answer=True, top_k=50)
    want = theirs(question=question, context=context, handle_impossible_answer=True, top_k=50)
    null = [a for a in got if a["answer"] == ""]
    hf_null = [a for a in want if a["answer"] == ""]
    assert len(null) == len(hf_null) == 1 and null[0]["score"] == pytest.approx(hf_null[0]["score"], abs=1e-6)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_feature_extraction_pooling(served, model_type):
    checkpoint, export_dir = served(model_type, "feature-extraction")
    fe = pipeline("feature-extraction", export_dir, provider="cpu", batch_size=3)
    native = _native(model_type, "feature-extraction", checkpoint)
    vectors = fe(TEXTS, pooling="mean", normalize=True)
    for text, vector in zip(TEXTS, vectors):  # one text at a time natively: padding must not leak in
        enc = fe.tokenizer(text, return_tensors="pt", truncation=True)
        with torch.no_grad():
            hidden = native(**{k: v for k, v in enc.items() if k in fe.model.spec.input_names}).last_hidden_state[0]
        mean = hidden.mean(0).numpy()
        assert max_abs_diff(vector, mean / np.linalg.norm(mean)) <= 1e-5
    cls = fe(TEXTS[0])
    assert cls.shape == (native.config.hidden_size,)


@pytest.mark.parametrize("framework", ["tf", "flax"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_pipeline_serves_tf_and_flax_exports(served, model_type, framework):
    """The runtime reads only the artifact: a TF or Flax export answers as the PyTorch export does
    (whose answers the tests above hold against transformers)."""
    pytest.importorskip({"tf": "tensorflow", "flax": "flax"}[framework])

    def both(task, with_past=False):
        pt_dir = served(model_type, task, with_past)[1]
        other_dir = served(model_type, task, with_past, framework)[1]
        assert json.load(open(f"{other_dir}/onnxport.json"))["framework"] == framework
        return (pipeline(task, pt_dir, provider="cpu", batch_size=2),
                pipeline(task, other_dir, provider="cpu", batch_size=2))

    def same_scores(a, b):
        assert np.allclose([x["score"] for x in a], [x["score"] for x in b], atol=1e-5)

    pt, other = both("text-classification")
    for a, b in zip(pt(TEXTS, top_k=None), other(TEXTS, top_k=None)):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        same_scores(a, b)
    pt, other = both("token-classification")
    for text in TEXTS:
        a, b = pt(text, aggregation_strategy="simple", ignore_labels=()), other(text, aggregation_strategy="simple",
                                                                                ignore_labels=())
        assert [(e["entity_group"], e["start"], e["end"]) for e in a] == [(e["entity_group"], e["start"], e["end"])
                                                                           for e in b]
        same_scores(a, b)
    pt, other = both("fill-mask")
    text = f"the quick {pt.tokenizer.mask_token} fox"
    a, b = pt(text, top_k=4), other(text, top_k=4)
    assert [x["token"] for x in a] == [x["token"] for x in b]
    same_scores(a, b)
    pt, other = both("question-answering")
    question, context = "where is the fox", "the quick brown fox jumps over the lazy dog near the river bank"
    a, b = pt(question=question, context=context, top_k=3), other(question=question, context=context, top_k=3)
    assert [(x["start"], x["end"]) for x in a] == [(x["start"], x["end"]) for x in b]
    same_scores(a, b)
    pt, other = both("multiple-choice")
    a, b = pt("hello", ["the quick brown fox", "the lazy dog"]), other("hello", ["the quick brown fox", "the lazy dog"])
    assert a["best"] == b["best"] and max_abs_diff(a["logits"], b["logits"]) <= 1e-4
    pt, other = both("feature-extraction")
    assert max_abs_diff(np.stack(pt(TEXTS, pooling="mean")), np.stack(other(TEXTS, pooling="mean"))) <= 1e-4
    pt, other = both("text-generation", with_past=True)
    assert (pt("the quick brown", max_new_tokens=5, eos_token_id=-1)["generated_token_ids"]
            == other("the quick brown", max_new_tokens=5, eos_token_id=-1)["generated_token_ids"])


# ----------------------------------------------------------------------------- errors, threads, edge
def test_inputs_are_checked_before_onnxruntime(served):
    _, export_dir = served("roformer", "fill-mask")
    model = OnnxModelForMaskedLM.from_pretrained(export_dir, provider="cpu")
    ids = np.array([[2, 10, 11, 3]])
    with pytest.raises(RuntimeInputError, match=r"input_ids must lie in \[0,"):
        model(input_ids=ids + 10_000)
    with pytest.raises(RuntimeInputError, match="exceeds the model's maximum of 66"):
        model(input_ids=np.full((1, 67), 5))
    with pytest.raises(RuntimeInputError, match="Unknown input"):
        model(input_ids=ids, position_ids=ids)
    with pytest.raises(RuntimeInputError, match="shape"):
        model(input_ids=ids[0])
    with pytest.raises(RuntimeInputError, match="attention_mask must have shape"):
        model(input_ids=ids, attention_mask=np.ones((1, 3), dtype=np.int64))
    with pytest.raises(RuntimeInputError, match="only 0 and 1"):
        model(input_ids=ids, attention_mask=np.full((1, 4), 0.5))
    float_mask = model(input_ids=ids, attention_mask=np.ones((1, 4), dtype=np.float32)).logits
    assert np.array_equal(float_mask, model(input_ids=ids).logits)
    with pytest.raises(RuntimeInputError, match="integers"):
        model(input_ids=ids.astype(np.float32))
    with pytest.raises(RuntimeInputError, match="token_type_ids must lie"):
        model(input_ids=ids, token_type_ids=np.full_like(ids, 5))
    assert model(input_ids=np.full((1, 66), 5)).logits.shape[1] == 66  # the longest allowed input
    assert model(input_ids=ids.astype(np.int32)).logits.shape == (1, 4, model.config.vocab_size)


def test_wrong_task_corrupt_and_missing_files(served, tmp_path):
    _, export_dir = served("xlm-roberta", "fill-mask")
    with pytest.raises(ValueError, match="exported for 'fill-mask'.*OnnxModelForMaskedLM"):
        OnnxModelForQuestionAnswering.from_pretrained(export_dir)
    with pytest.raises(ValueError, match="needs an export for 'question-answering'"):
        pipeline("question-answering", export_dir)
    with pytest.raises(ValueError, match="Unknown pipeline task"):
        pipeline("summarization", export_dir)
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    data = (Path(model_path(broken))).read_bytes()
    (Path(model_path(broken))).write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        OnnxModelForMaskedLM.from_pretrained(broken)
    with pytest.raises(FileNotFoundError, match="has no onnxport.json"):
        OnnxModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxModel.from_pretrained(tmp_path / "nothing")


def test_rotary_is_fused_on_cpu_and_equals_function(served):
    _, export_dir = served("roformer", "token-classification")
    fused = OnnxModelForTokenClassification.from_pretrained(export_dir, provider="cpu")
    function = OnnxModelForTokenClassification.from_pretrained(export_dir, provider="cpu", fuse_rotary=False)
    enc = fused.tokenizer(TEXTS, padding=True, return_tensors="np")
    feeds = {k: v for k, v in enc.items() if k in fused.spec.input_names}
    assert max_abs_diff(fused(**feeds).logits, function(**feeds).logits) <= 1e-5


def test_one_model_serves_many_threads(served):
    _, export_dir = served("xlm-roberta", "text-classification")
    clf = pipeline("text-classification", export_dir, provider="cpu", batch_size=2)
    serial = [clf(TEXTS, top_k=None) for _ in range(3)]
    results, errors = [None] * 8, []

    def work(i):
        try:
            results[i] = clf(TEXTS, top_k=None)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(r == serial[0] for r in results)


def test_pipelines_import_no_framework(served):
    _, export_dir = served("roformer", "text-classification")
    code = (
        "import sys, json; from onnxport.runtime import pipeline;"
        f"p = pipeline('text-classification', {export_dir!r}, provider='cpu');"
        "print(json.dumps(p(['hello world', '今天天气非常好'])));"
        "bad=[m for m in ('torch','tensorflow','jax','flax','transformers') if m in sys.modules];"
        "assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert len(json.loads(out)) == 2


def test_cli_run_prints_json(served, capsys):
    from onnxport.cli import main

    _, export_dir = served("roformer", "text-classification")
    assert main(["run", export_dir, "hello world", "今天天气非常好", "--top-k", "2", "--provider", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = pipeline("text-classification", export_dir, provider="cpu")(["hello world", "今天天气非常好"], top_k=2)
    assert printed == json.loads(json.dumps(expected))
    _, qa_dir = served("xlm-roberta", "question-answering")
    assert main(["run", qa_dir, "--question", "where is the fox", "--context", "the fox is in paris"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["answer"] == "the fox is in paris"[answer["start"]:answer["end"]]
    assert main(["run", qa_dir, "some text"]) == 1
    assert "needs --question and --context" in capsys.readouterr().err
