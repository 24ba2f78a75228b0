"""Export directories in the JavaScript clients, as they are written: no file moved, no option but the task.

- ONNX Runtime for Node (``onnxruntime-node``) and for the Web (``onnxruntime-web``, its wasm backend, run here
  under Node) give Python ONNX Runtime's outputs on every family and front end's graph: RoFormer's custom
  rotary op (run through its ONNX function body), int8 (dynamic and QDQ) and external data included.
- transformers.js (``@huggingface/transformers``) pipelines on XLM-R exports (tiny, random) and on the suite's
  trained RoBERTa masked-LM (``trained_roberta.py``; ``vocab.json`` + ``merges.txt``, no tokenizer.json) give
  onnxport's pipeline answers: the same tokens / labels / answers, scores within 1e-4.

The packages are pinned by ``parity_tests/js/package-lock.json`` and installed once per lockfile into
``~/.cache/onnxport-js/<hash>`` (outside the repository) by the session fixture; the tests skip, saying so,
only where node or npm is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from conftest import sample_inputs
from onnxport.exporters import export
from onnxport.exporters.quantize import quantize
from onnxport.artifact.layout import model_path
from onnxport.runtime import pipeline
from onnxport.tokenizers import AutoTokenizer

import trained_roberta
from tokenizer_fixtures import write_roberta_files, write_xlm_roberta_files

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("js")]

JS_DIR = Path(__file__).parent / "js"
NODE_TIMEOUT = 900
SCORE_TOLERANCE = 1e-4  # transformers.js computes softmax in float32, onnxport in float64


# ----------------------------------------------------------------------------- the clients, installed once
@pytest.fixture(scope="session")
def js_prefix():
    """The npm install of parity_tests/js's lockfile, in a cache directory keyed by the lockfile's hash."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"the JavaScript client tests need node and npm on PATH ({'node' if node is None else 'npm'} "
                    "is missing)")
    from filelock import FileLock

    files = ("package.json", "package-lock.json")
    digest = hashlib.sha256(b"".join((JS_DIR / name).read_bytes() for name in files)).hexdigest()[:16]
    root = Path(os.environ.get("ONNXPORT_JS_CACHE", Path.home() / ".cache" / "onnxport-js"))
    root.mkdir(parents=True, exist_ok=True)
    prefix = root / digest
    with FileLock(str(prefix) + ".lock"):
        if not (prefix / "node_modules" / ".package-lock.json").is_file():
            partial = root / f"{digest}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            for name in files:
                shutil.copyfile(JS_DIR / name, partial / name)
            # onnxruntime-node's install script would fetch CUDA libraries from NuGet; the CPU build is bundled.
            env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
            result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(partial)], env=env,
                                    capture_output=True, text=True, timeout=NODE_TIMEOUT, stdin=subprocess.DEVNULL)
            assert result.returncode == 0, f"npm ci failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            shutil.rmtree(prefix, ignore_errors=True)
            partial.rename(prefix)
    return prefix


def _node(js_prefix, script: str, *args) -> None:
    result = subprocess.run(["node", str(JS_DIR / script), *map(str, args)], capture_output=True, text=True,
                            timeout=NODE_TIMEOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "ONNXPORT_JS_PREFIX": str(js_prefix)})
    assert result.returncode == 0, f"node {script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def _run_js(js_prefix, script: str, manifest: list, tmp_path: Path, *args) -> list:
    manifest_path, results_path = tmp_path / f"{script}.in.json", tmp_path / f"{script}.out.json"
    manifest_path.write_text(json.dumps(manifest))
    _node(js_prefix, script, *args, manifest_path, results_path)
    return json.loads(results_path.read_text())


def _versions(js_prefix) -> dict[str, str]:
    names = ("onnxruntime-node", "onnxruntime-web", "@huggingface/transformers")
    return {n: json.loads((js_prefix / "node_modules" / n / "package.json").read_text())["version"] for n in names}


def test_the_pinned_clients_are_installed(js_prefix):
    lock = json.loads((JS_DIR / "package-lock.json").read_text())["packages"]
    assert _versions(js_prefix) == {"onnxruntime-node": "1.30.0", "onnxruntime-web": "1.30.0",
                                    "@huggingface/transformers": "4.3.1"}
    assert lock["node_modules/@huggingface/transformers"]["version"] == "4.3.1"


# ----------------------------------------------------------------------------- ONNX Runtime for Node and the Web
# (family, head, task, front end, how): pt for every family; RoFormer (the custom op) from TF and Flax too.
ORT_CASES = [
    ("xlm-roberta", "ForMaskedLM", "fill-mask", "pt", "plain"),
    ("roberta", "ForSequenceClassification", "text-classification", "pt", "plain"),
    ("roberta-prelayernorm", "ForTokenClassification", "token-classification", "pt", "plain"),
    ("roformer", "ForMaskedLM", "fill-mask", "pt", "plain"),
    ("roformer", "ForMaskedLM", "fill-mask", "tf", "plain"),
    ("roformer", "ForMaskedLM", "fill-mask", "flax", "plain"),
    ("roformer", "ForQuestionAnswering", "question-answering", "pt", "plain"),
    ("xlm-roberta", "ForMaskedLM", "fill-mask", "pt", "external-data"),
    ("xlm-roberta", "ForMaskedLM", "fill-mask", "pt", "int8-dynamic"),
    ("roformer", "ForMaskedLM", "fill-mask", "pt", "int8-static-qdq"),
]
ORT_IDS = ["-".join((family, task, front_end, how)) for family, _, task, front_end, how in ORT_CASES]


@pytest.fixture(scope="module")
def ort_exports(checkpoint_factory, tmp_path_factory):
    """Each case's model file and feeds, with Python ONNX Runtime's outputs on them."""
    root = tmp_path_factory.mktemp("js-ort")
    cases = []
    for index, (family, head, task, front_end, how) in enumerate(ORT_CASES):
        out = root / f"{index}-{family}-{task}-{front_end}"
        threshold = 1000 if how == "external-data" else None
        export(checkpoint_factory(family, head), out, task=task, framework=front_end,
               external_data_threshold=threshold, validate=False)
        if how.startswith("int8-"):
            quantize(out, root / f"{index}-int8", recipe=how.removeprefix("int8-"), validate=False)
            out = root / f"{index}-int8"
        path = model_path(out)
        feeds = sample_inputs(family)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        feeds = {name: value for name, value in feeds.items() if name in wanted}
        names = [o.name for o in session.get_outputs()]
        reference = dict(zip(names, session.run(names, feeds)))
        cases.append((path, feeds, reference))
    return cases


def _layout_of(path: str) -> str:
    return os.path.relpath(path, Path(path).parent.parent)


@pytest.mark.parametrize("backend,tolerance", [("node", 0.0), ("web", 1e-4)], ids=["onnxruntime-node", "onnxruntime-web"])
def test_onnx_runtime_for_node_and_web_equal_python(js_prefix, ort_exports, backend, tolerance, tmp_path):
    """Every case's outputs in Node equal Python ONNX Runtime's: the native build bit for bit (the same
    kernels), the wasm build within 1e-4 (its own kernels; relative to the output's scale)."""
    manifest = [{"model": path, "feeds": {n: {"dims": list(v.shape), "data": v.ravel().tolist()}
                                          for n, v in feeds.items()}} for path, feeds, _ in ort_exports]
    results = _run_js(js_prefix, "ort_outputs.mjs", manifest, tmp_path, backend)
    assert len(results) == len(ORT_CASES)
    worst = {}
    for case_id, (path, _, reference), got in zip(ORT_IDS, ort_exports, results):
        assert sorted(got) == sorted(reference), case_id
        for name, want in reference.items():
            value = np.asarray(got[name]["data"], dtype=want.dtype).reshape(got[name]["dims"])
            assert value.shape == want.shape, (case_id, name)
            scale = max(1.0, float(np.abs(want).max()))
            difference = float(np.abs(value - want).max()) / scale
            worst[f"{case_id}:{name}"] = difference
            assert difference <= tolerance, f"{case_id} ({_layout_of(path)}) {name}: {difference:.3e}"
    print(f"{backend}: {len(results)}/{len(ORT_CASES)} cases, largest relative difference "
          f"{max(worst.values()):.3e}")


# ----------------------------------------------------------------------------- transformers.js pipelines
XLMR_TASKS = {"fill-mask": "ForMaskedLM", "feature-extraction": "ForMaskedLM",
              "text-classification": "ForSequenceClassification", "token-classification": "ForTokenClassification",
              "question-answering": "ForQuestionAnswering"}
TEXTS = ["Hello <mask> world!", "The quick brown <mask> jumps over the lazy dog.", "Café, naïve<mask> résumé."]
QA = [{"question": "Where is the fox?", "context": "The quick brown fox jumps over the lazy dog in Paris."},
      {"question": "Who jumps?", "context": "Numbers like 12345 appear. The fox jumps today."}]


@pytest.fixture(scope="module")
def js_exports(tmp_path_factory):
    """task -> export directory: tiny random XLM-R checkpoints with a sentencepiece model (one per head), the
    trained RoBERTa masked-LM (vocab.json + merges.txt, no tokenizer.json) for fill-mask and
    feature-extraction, and a tiny RoBERTa token classifier with a freshly trained BPE."""
    from conftest import build_hf_checkpoint

    root = tmp_path_factory.mktemp("js-pipelines")
    vocab = write_xlm_roberta_files(root / "xlmr-vocab")
    size = len(AutoTokenizer.from_pretrained(vocab))  # every id the model can answer is a real token
    exports = {}
    for task, head in XLMR_TASKS.items():
        checkpoint = root / f"xlmr-{head}"
        if not checkpoint.is_dir():
            build_hf_checkpoint(checkpoint, "xlm-roberta", head, vocab_size=size, max_position_embeddings=66)
            shutil.copyfile(vocab / "sentencepiece.bpe.model", checkpoint / "sentencepiece.bpe.model")
        exports[("xlm-roberta", task)] = export(checkpoint, root / f"xlmr-{task}", task=task).out_dir
    # The weights in onnx/model.onnx_data, declared in config.json's transformers.js_config.
    exports[("xlm-roberta-external-data", "fill-mask")] = export(
        root / "xlmr-ForMaskedLM", root / "xlmr-external", task="fill-mask", external_data_threshold=1000).out_dir
    trained = trained_roberta.cached_checkpoint()
    for task in ("fill-mask", "feature-extraction"):
        exports[("roberta-trained", task)] = export(trained, root / f"trained-{task}", task=task).out_dir
    bpe = write_roberta_files(root / "roberta-vocab")
    size = len(AutoTokenizer.from_pretrained(bpe))
    checkpoint = root / "roberta-tokens"
    build_hf_checkpoint(checkpoint, "roberta", "ForTokenClassification", vocab_size=size, max_position_embeddings=66,
                        id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(bpe / name, checkpoint / name)
    exports[("roberta", "token-classification")] = export(checkpoint, root / "roberta-tokens-export",
                                                          task="token-classification").out_dir
    return {key: str(value) for key, value in exports.items()}


def _trained_texts() -> list[str]:
    out = []
    for sentence in trained_roberta.held_out_text():
        if " the " in sentence and len(sentence) < 120:
            out.append(sentence.replace(" the ", " <mask> ", 1))
        if len(out) == 4:
            break
    return out


JS_CASES = [  # (model, task, inputs, transformers.js options, onnxport options)
    ("xlm-roberta", "fill-mask", TEXTS, {"top_k": 5}, {"top_k": 5}),
    ("xlm-roberta-external-data", "fill-mask", TEXTS, {"top_k": 5}, {"top_k": 5}),
    ("xlm-roberta", "feature-extraction", TEXTS, {}, {"pooling": "none"}),
    ("xlm-roberta", "text-classification", TEXTS, {"top_k": 2}, {"top_k": 2}),
    ("xlm-roberta", "token-classification", TEXTS, {"ignore_labels": []}, {"ignore_labels": []}),
    # transformers.js's question answering has no word alignment and no answer length limit: onnxport's options
    # for the same search.
    ("xlm-roberta", "question-answering", QA, {}, {"align_to_words": False, "max_answer_len": 64}),
    ("roberta-trained", "fill-mask", None, {"top_k": 5}, {"top_k": 5}),
    ("roberta-trained", "feature-extraction", None, {}, {"pooling": "none"}),
    ("roberta", "token-classification", [t.replace("<mask>", "fox") for t in TEXTS], {}, {}),
]
JS_IDS = [f"{model}-{task}" for model, task, *_ in JS_CASES]


@pytest.fixture(scope="module")
def js_answers(js_prefix, js_exports, tmp_path_factory):
    """transformers.js's answers to every case, from one node process."""
    manifest = [{"task": task, "dir": js_exports[(model, task)], "inputs": inputs or _trained_texts(),
                 "options": js_options} for model, task, inputs, js_options, _ in JS_CASES]
    return _run_js(js_prefix, "pipelines.mjs", manifest, tmp_path_factory.mktemp("js-answers"))


def _close(got: float, want: float) -> bool:
    return abs(got - want) <= SCORE_TOLERANCE


@pytest.mark.parametrize("case", range(len(JS_CASES)), ids=JS_IDS)
def test_transformers_js_pipelines_answer_as_onnxport(js_exports, js_answers, case):
    model, task, inputs, _, options = JS_CASES[case]
    inputs = inputs or _trained_texts()
    ours_pipeline = pipeline(task, js_exports[(model, task)], provider="cpu")
    theirs = js_answers[case]
    assert len(theirs) == len(inputs)
    for text, got in zip(inputs, theirs):
        if task == "question-answering":
            want = ours_pipeline(question=text["question"], context=text["context"], **options)
            assert got["answer"] == want["answer"] and _close(got["score"], want["score"]), (text, got, want)
        elif task == "feature-extraction":
            want = np.asarray(ours_pipeline(text, **options))
            value = np.asarray(got["data"], dtype=np.float32).reshape(got["dims"])
            assert value.shape == (1, *want.shape), text
            assert float(np.abs(value[0] - want).max()) <= SCORE_TOLERANCE, text
        elif task == "fill-mask":
            want = ours_pipeline(text, **options)
            assert [r["token"] for r in got] == [r["token"] for r in want], text
            assert [r["token_str"] for r in got] == [r["token_str"] for r in want], text
            assert [r["sequence"] for r in got] == [r["sequence"] for r in want], text
            assert all(_close(g["score"], w["score"]) for g, w in zip(got, want)), (got, want)
        elif task == "text-classification":
            want = ours_pipeline(text, **options)
            assert [r["label"] for r in got] == [r["label"] for r in want], text
            assert all(_close(g["score"], w["score"]) for g, w in zip(got, want)), (got, want)
        else:  # token-classification
            # transformers.js names a token by its decoded text (no offsets) and leaves out tokens that decode
            # to nothing (a lone "▁", a special token such as <mask>); onnxport, as transformers, by the token.
            tokenizer = ours_pipeline.tokenizer
            want = [{**r, "word": tokenizer.decode([tokenizer.convert_tokens_to_ids(r["word"])],
                                                   skip_special_tokens=True)}
                    for r in ours_pipeline(text, **options)]
            want = [r for r in want if r["word"]]
            assert [(r["entity"], r["index"], r["word"]) for r in got] == \
                [(r["entity"], r["index"], r["word"]) for r in want], text
            assert all(_close(g["score"], w["score"]) for g, w in zip(got, want)), (got, want)


def test_the_directories_serve_transformers_js_as_written(js_exports):
    """What made the difference: the graph where transformers.js looks, a tokenizer.json that tokenizes as
    onnxport (the trained RoBERTa checkpoint has none of its own), the dtype named in config.json."""
    for directory in js_exports.values():
        assert Path(directory, "onnx", "model.onnx").is_file() and Path(directory, "tokenizer.json").is_file()
        config = json.loads(Path(directory, "config.json").read_text())
        external = Path(directory, "onnx", "model.onnx_data").is_file()
        assert config["transformers.js_config"] == \
            {"dtype": "fp32", **({"use_external_data_format": {"model.onnx": 1}} if external else {})}
        meta = json.loads(Path(directory, "onnxport.json").read_text())
        assert meta["tokenizer"]["tokenizer_json"] == {"written": True, "exact": True}


def test_the_readme_snippets_run(js_prefix, js_exports, tmp_path):
    """The README's JavaScript snippets, as written, in a project whose node_modules holds the pinned clients,
    on an XLM-R fill-mask export copied to ./out."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## JavaScript (Node and the browser)", 1)[1].split("\n## ", 1)[0]
    snippets = [block.split("\n", 1)[1] for block in section.split("```js")[1:]]
    snippets = [block.split("```", 1)[0] for block in snippets]
    assert len(snippets) == 2
    (tmp_path / "node_modules").symlink_to(js_prefix / "node_modules")
    shutil.copytree(js_exports[("xlm-roberta", "fill-mask")], tmp_path / "out")
    outputs = []
    for index, snippet in enumerate(snippets):
        (tmp_path / f"snippet{index}.mjs").write_text(snippet)
        result = subprocess.run(["node", f"snippet{index}.mjs"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=NODE_TIMEOUT, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(result.stdout)
    ours = pipeline("fill-mask", tmp_path / "out", provider="cpu")("Hello <mask> world!", top_k=2)
    assert all(f"token: {answer['token']}" in outputs[0] for answer in ours)  # the pipeline's answers
    tokens = len(AutoTokenizer.from_pretrained(tmp_path / "out")("Hello <mask> world!")["input_ids"])
    vocabulary = json.loads((tmp_path / "out" / "config.json").read_text())["vocab_size"]
    assert f"[ 1, {tokens}, {vocabulary} ]" in outputs[1]  # the logits' dims
