"""`onnxport triton`: repositories written from exports, served by a real tritonserver on 127.0.0.1.

The server is the one bundled in the nvidia-pytriton wheel (Python backend only), in a cached venv with
numpy 1.26 (triton_server.py). Every RESULT is compared with the in-process pipeline's answer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

import triton_server
from integration_exports import ExportFactory, assert_same, ragged_texts
from onnxport.errors import ConfigError, InputError, ModelFileError, TaskError
from onnxport.integrations import RowRunner, jsonable, scored_documents
from onnxport.integrations.triton import add_cli_parser, cli_main, write_repository
from onnxport.runtime import pipeline

# One worker runs the whole file under `pytest -n 2 --dist loadgroup`: one server / cluster, not two.
pytestmark = pytest.mark.xdist_group("triton")

FAMILY = "xlm-roberta"
TASKS = ("feature-extraction", "fill-mask", "text-classification", "token-classification", "question-answering",
         "multiple-choice", "text-generation", "rerank", "sentence-embeddings")
MODEL_NAMES = {task: task.replace("-", "_") for task in TASKS}
# The e5-stack export again, every row with the model's "query: " prompt (Triton rows carry texts, not options)
QUERY_MODEL = "sentence_embeddings_query"
WAITING_MODEL = "classify_waiting"  # a long queue delay: concurrent requests surely land in one batch
TEXTS = ["hello world, the quick brown fox", "a", "the lazy dog jumps over the quick brown fox and it is happy",
         "今天天气非常好"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return ExportFactory(tmp_path_factory.mktemp("triton-exports"))


@pytest.fixture(scope="module")
def pipes(exports):
    return {task: pipeline(task, exports(FAMILY, task), provider="cpu") for task in TASKS}


def requests_for(task, pipe):
    """Rows (Triton input name -> text) for ``task`` and the in-process answer for each."""
    if task == "question-answering":
        rows = [{"QUESTION": "where is the fox?", "CONTEXT": "the quick brown fox is in the world"},
                {"QUESTION": "how are you?", "CONTEXT": "hello world how are you doing today"}]
        return [(row, pipe(question=row["QUESTION"], context=row["CONTEXT"])) for row in rows]
    if task == "multiple-choice":
        rows = [{"TEXT": "the quick brown fox", "CHOICES": json.dumps(["jumps", "sleeps", "reads"])},
                {"TEXT": "hello", "CHOICES": json.dumps(["world", "dog"])}]
        return [(row, pipe(row["TEXT"], json.loads(row["CHOICES"]))) for row in rows]
    if task == "rerank":  # scores in document order and the ranking, as `onnxport run` prints them
        rows = [{"QUERY": "where is the fox?", "DOCUMENTS": json.dumps(TEXTS, ensure_ascii=False)},
                {"QUERY": "今天", "DOCUMENTS": json.dumps(["", "the lazy dog"])}]
        return [(row, scored_documents(pipe(row["QUERY"], json.loads(row["DOCUMENTS"])), json.loads(row["DOCUMENTS"])))
                for row in rows]
    texts = list(TEXTS)
    if task == "fill-mask":
        texts = [f"the quick {pipe.tokenizer.mask_token} fox", f"{pipe.tokenizer.mask_token} world"]
    if task == "text-generation":
        texts = texts[:2]
    answers = [(({"TEXT": t}), pipe(t)) for t in texts]
    if task == "text-classification":  # pairs through TEXT_PAIR
        answers.append(({"TEXT": "the quick fox", "TEXT_PAIR": "the lazy dog"}, pipe([("the quick fox", "the lazy dog")])[0]))
    return answers


def infer(client, model, row, timeout=30.0):
    """One request of one row; the RESULT decoded from JSON."""
    import tritonclient.http as http

    inputs = []
    for name, value in row.items():
        tensor = http.InferInput(name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[value if isinstance(value, bytes) else value.encode()]], dtype=object))
        inputs.append(tensor)
    result = client.infer(model, inputs, timeout=int(timeout * 1e6))
    return json.loads(result.as_numpy("RESULT")[0, 0])


def client_for(server):
    import tritonclient.http as http

    return http.InferenceServerClient(server.url, connection_timeout=30.0, network_timeout=60.0)


def stats(server, model):
    entry = server.get(f"/v2/models/{model}/stats")["model_stats"][0]
    return entry["inference_count"], entry["execution_count"]


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory):
    pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (onnxport[triton])")
    try:
        venv = triton_server.build_venv()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"the Triton server venv ({triton_server.PYTRITON}, {triton_server.SERVER_NUMPY}) cannot be "
                    f"installed here: {err}")
    repo = tmp_path_factory.mktemp("triton-repo")
    for task in TASKS:
        write_repository(exports(FAMILY, task), repo, MODEL_NAMES[task], max_batch_size=16, max_queue_delay_us=2000)
    write_repository(exports(FAMILY, "text-classification"), repo, WAITING_MODEL, max_batch_size=8,
                     max_queue_delay_us=300_000)
    write_repository(exports(FAMILY, "sentence-embeddings"), repo, QUERY_MODEL, max_batch_size=16,
                     pipeline_kwargs={"prompt_name": "query"})
    logs = tmp_path_factory.mktemp("triton-logs")
    with triton_server.running_server(repo, logs, venv, ready_model=MODEL_NAMES["text-generation"]) as running:
        deadline = time.monotonic() + 60
        names = [*MODEL_NAMES.values(), WAITING_MODEL, QUERY_MODEL]
        while True:  # every text model loaded (or a clear failure)
            index = {m["name"]: m for m in running.post("/v2/repository/index")}
            failed = {n: index[n].get("reason") for n in names if index.get(n, {}).get("state") == "UNAVAILABLE"}
            assert not failed, f"models failed to load: {failed}\n{running.log()[-3000:]}"
            if all(index.get(n, {}).get("state") == "READY" for n in names) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        running.repo = repo
        yield running
    assert running.process.poll() is not None  # stopped by pid


# ----------------------------------------------------------------------------- the writer (no server)
def test_configs_generated_from_the_io_spec(exports, tmp_path):
    from onnxport.runtime.models import read_export_dir

    export_dir = exports(FAMILY, "text-classification")
    repository = write_repository(export_dir, tmp_path, "cls", max_batch_size=8, instances=2, max_queue_delay_us=500)
    assert repository.inputs == ["TEXT", "TEXT_PAIR"]
    text = (tmp_path / "cls" / "config.pbtxt").read_text()
    assert 'backend: "python"' in text and "max_batch_size: 8" in text and "max_queue_delay_microseconds: 500" in text
    assert re.search(r'name: "TEXT"\s+data_type: TYPE_STRING\s+dims: \[ 1 \]\s+\}', text)
    assert re.search(r'name: "TEXT_PAIR"\s+data_type: TYPE_STRING\s+dims: \[ 1 \]\s+optional: true', text)
    assert re.search(r'name: "RESULT"\s+data_type: TYPE_STRING\s+dims: \[ 1 \]', text)
    assert re.search(r"count: 2\s+kind: KIND_CPU", text)
    assert (tmp_path / "cls" / "1" / "model.py").is_file()
    assert (tmp_path / "cls" / "1" / "export" / "onnxport.json").is_file()

    _, spec = read_export_dir(export_dir)
    onnx_text = (tmp_path / "cls_onnx" / "config.pbtxt").read_text()
    declared = re.findall(r'name: "([^"]+)"\s+data_type: (\w+)\s+dims: \[ ([^\]]*) \]', onnx_text)
    num_labels = spec.outputs[0].shape[1]
    assert declared == [(t.name, "TYPE_INT64", "-1") for t in spec.inputs] + [("logits", "TYPE_FP32", str(num_labels))]
    assert 'backend: "onnxruntime"' in onnx_text and "max_batch_size: 8" in onnx_text and "dynamic_batching" in onnx_text
    assert "gpu_execution_accelerator" not in onnx_text
    # The copied graph has what the config declares: names, element types and rank (+1 for the batch axis).
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "cls_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    graph = {t.name: (t.type, len(t.shape)) for t in (*session.get_inputs(), *session.get_outputs())}
    for name, data_type, dims in declared:
        want_type = {"TYPE_INT64": "tensor(int64)", "TYPE_FP32": "tensor(float)"}[data_type]
        assert graph[name] == (want_type, len(dims.split(",")) + 1), name

    gpu = write_repository(export_dir, tmp_path / "gpu", "cls", kind="gpu", tensorrt=True, trt_fp16=True,
                           trt_engine_cache_dir="/cache/trt")
    gpu_text = (tmp_path / "gpu" / "cls_onnx" / "config.pbtxt").read_text()
    assert gpu.onnx_model == "cls_onnx" and "kind: KIND_GPU" in gpu_text and 'name: "tensorrt"' in gpu_text
    for key, value in (("precision_mode", "FP16"), ("trt_engine_cache_enable", "true"), ("trt_engine_cache_path", "/cache/trt")):
        assert f'parameters {{ key: "{key}" value: "{value}" }}' in gpu_text


def test_numbers_outputs_declared_as_fp32(exports, tmp_path):
    """Tasks whose results are numbers declare them beside RESULT: a vector per row (feature-extraction's hidden
    size; sentence-embeddings' dimension), a score per document (rerank: the documents axis varies)."""
    features = write_repository(exports(FAMILY, "feature-extraction"), tmp_path, "fe")
    declared = re.findall(r'name: "([A-Z_]+)"\s+data_type: (\w+)\s+dims: \[ ([^\]]*) \]',
                          (tmp_path / "fe" / "config.pbtxt").read_text())
    assert declared == [("TEXT", "TYPE_STRING", "1"), ("RESULT", "TYPE_STRING", "1"), ("EMBEDDING", "TYPE_FP32", "32")]
    assert features.outputs == ["RESULT", "EMBEDDING"] and "-> RESULT, EMBEDDING" in features.summary()
    rerank = write_repository(exports(FAMILY, "rerank"), tmp_path, "rr")
    declared = re.findall(r'name: "([A-Z_]+)"\s+data_type: (\w+)\s+dims: \[ ([^\]]*) \]',
                          (tmp_path / "rr" / "config.pbtxt").read_text())
    assert declared == [("QUERY", "TYPE_STRING", "1"), ("DOCUMENTS", "TYPE_STRING", "1"),
                        ("RESULT", "TYPE_STRING", "1"), ("SCORES", "TYPE_FP32", "-1")]
    assert rerank.inputs == ["QUERY", "DOCUMENTS"] and rerank.task == "rerank"
    embeddings = write_repository(exports(FAMILY, "sentence-embeddings"), tmp_path, "se")
    declared = re.findall(r'name: "([A-Z_]+)"\s+data_type: (\w+)\s+dims: \[ ([^\]]*) \]',
                          (tmp_path / "se" / "config.pbtxt").read_text())
    # the vector is the Pooling + Normalize output (sentence_embedding), not the token vectors
    assert declared == [("TEXT", "TYPE_STRING", "1"), ("RESULT", "TYPE_STRING", "1"), ("EMBEDDING", "TYPE_FP32", "32")]
    assert embeddings.task == "sentence-embeddings" and embeddings.outputs == ["RESULT", "EMBEDDING"]
    # the onnxruntime model of a rerank export is the sequence classifier's graph: logits (batch, 1)
    onnx_text = (tmp_path / "rr_onnx" / "config.pbtxt").read_text()
    assert re.search(r'name: "logits"\s+data_type: TYPE_FP32\s+dims: \[ 1 \]', onnx_text)


def test_multiple_choice_config_keeps_the_choices_axis(exports, tmp_path):
    write_repository(exports(FAMILY, "multiple-choice"), tmp_path, "mc")
    text = (tmp_path / "mc_onnx" / "config.pbtxt").read_text()
    assert re.findall(r'data_type: \w+\s+dims: \[ ([^\]]*) \]', text) == ["-1, -1"] * 3 + ["-1"]
    assert re.findall(r'name: "([A-Z_]+)"', (tmp_path / "mc" / "config.pbtxt").read_text()) == ["TEXT", "CHOICES", "RESULT"]


def test_writer_refuses_what_it_cannot_serve(exports, tmp_path):
    export_dir = exports(FAMILY, "text-classification")
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(export_dir, no_tokenizer)
    for f in no_tokenizer.iterdir():
        if f.name not in ("onnx", "onnxport.json", "config.json"):
            f.unlink()
    with pytest.raises(ModelFileError, match="no usable tokenizer"):
        write_repository(no_tokenizer, tmp_path / "repo")
    misnamed = tmp_path / "misnamed"  # the files fit the family's class, the config names another
    shutil.copytree(export_dir, misnamed)
    (misnamed / "tokenizer.json").unlink(missing_ok=True)
    (misnamed / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RoFormerTokenizer"}))
    with pytest.raises(ModelFileError, match="fit XLMRobertaTokenizerFast .*not RoFormerTokenizerFast.*on the server"):
        write_repository(misnamed, tmp_path / "repo")

    unknown = tmp_path / "unknown-task"
    shutil.copytree(export_dir, unknown)
    meta = json.loads((unknown / "onnxport.json").read_text())
    meta["io_spec"]["task"] = "summarization"
    (unknown / "onnxport.json").write_text(json.dumps(meta))
    with pytest.raises((TaskError, ModelFileError), match="'summarization' is not"):
        write_repository(unknown, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())

    write_repository(export_dir, tmp_path / "repo", "cls")
    with pytest.raises(ModelFileError, match="already exists; pass --force"):
        write_repository(export_dir, tmp_path / "repo", "cls")
    (tmp_path / "repo" / "cls" / "1" / "model.py").write_text("edited by hand")
    with pytest.raises(ConfigError, match="need --kind gpu"):  # a refused rewrite touches nothing
        write_repository(export_dir, tmp_path / "repo", "cls", force=True, tensorrt=True)
    assert (tmp_path / "repo" / "cls" / "1" / "model.py").read_text() == "edited by hand"
    write_repository(export_dir, tmp_path / "repo", "cls", force=True)
    assert (tmp_path / "repo" / "cls" / "1" / "model.py").read_text() != "edited by hand"
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["cls", "cls_onnx"]  # no staging left
    with pytest.raises(ConfigError, match="overlap"):  # --force must never delete the export it reads
        write_repository(tmp_path / "repo" / "cls" / "1" / "export", tmp_path / "repo", "cls", force=True)
    assert (tmp_path / "repo" / "cls" / "1" / "export" / "onnxport.json").is_file()
    with pytest.raises(ConfigError, match="--max-batch-size"):
        write_repository(export_dir, tmp_path / "repo2", max_batch_size=0)
    with pytest.raises(ConfigError, match="need --kind gpu"):
        write_repository(export_dir, tmp_path / "repo2", tensorrt=True)


def test_cli_subcommand(exports, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="onnxport")
    commands = parser.add_subparsers(dest="command")
    add_cli_parser(commands)
    help_text = commands.choices["triton"].format_help()
    assert "onnxport installed" in help_text and "NAME_onnx" in help_text and "tokenize" in help_text
    export_dir = exports(FAMILY, "text-classification")
    args = parser.parse_args(["triton", export_dir, str(tmp_path), "--max-batch-size", "4", "--instances", "2",
                              "--max-queue-delay-us", "100", "--pipeline-kwargs", '{"top_k": 2}'])
    assert cli_main(args) == 0
    name = os.path.basename(export_dir)
    assert name in capsys.readouterr().out
    text = (tmp_path / name / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in text and "count: 2" in text and "max_queue_delay_microseconds: 100" in text
    assert '{\\"top_k\\": 2}' in text
    with pytest.raises(ConfigError, match="--pipeline-kwargs"):
        cli_main(parser.parse_args(["triton", export_dir, str(tmp_path / "x"), "--pipeline-kwargs", "[1]"]))


def test_row_runner_refuses_bad_rows_alone(pipes):
    """In process: a batch mixing good and bad rows answers the good ones like the pipeline does."""
    runner = RowRunner(pipes["text-classification"], "text-classification")
    rows = [{"text": "hello world"}, {"text": ""}, {"text": b"\xff\xfeabc"}, {}, {"text": "the lazy dog",
            "text_pair": "a fox"}, {"text": "\ud800 lone surrogate"}, {"text": b"the quick fox"}]
    answers = runner.run(rows)

    def same_answer(got, want):
        # The good rows run as one padded batch, the pipeline calls one row each: the fused attention kernel takes
        # its key-padding path for the one and its no-mask (flash) path for the other, equal to float rounding.
        assert got["label"] == want["label"] and abs(got["score"] - want["score"]) <= 1e-6, (got, want)

    same_answer(answers[0], pipes["text-classification"]("hello world"))
    same_answer(answers[4], pipes["text-classification"]([("the lazy dog", "a fox")])[0])
    same_answer(answers[6], pipes["text-classification"]("the quick fox"))
    for i, message in ((1, "text is empty"), (2, "not valid UTF-8"), (3, "text is missing"),
                       (5, "cannot encode")):
        assert isinstance(answers[i], InputError) and message in str(answers[i]), (i, answers[i])
    # A fault only the pipeline finds (no mask token) is refused for its row only.
    fill = RowRunner(pipes["fill-mask"], "fill-mask")
    mask = pipes["fill-mask"].tokenizer.mask_token
    answers = fill.run([{"text": f"the {mask} fox"}, {"text": "no mask here"}])
    assert answers[0] == pipes["fill-mask"](f"the {mask} fox")
    assert isinstance(answers[1], InputError) and "No <mask> token" in str(answers[1])


# ----------------------------------------------------------------------------- the real server
@pytest.mark.parametrize("task", TASKS)
def test_server_answers_like_the_pipeline(server, pipes, task):
    client = client_for(server)
    for row, want in requests_for(task, pipes[task]):
        assert_same(infer(client, MODEL_NAMES[task], row), jsonable(want), f"{task} {row}")


def test_numbers_come_as_fp32_tensors(server, pipes):
    """EMBEDDING and SCORES: float32 numbers per row (not JSON strings), equal to the pipeline's; a request's rows
    with fewer documents are padded with NaN."""
    import tritonclient.http as http

    client = client_for(server)

    def request(model, columns, output):
        inputs = []
        for name, values in columns.items():
            tensor = http.InferInput(name, [len(values), 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[v.encode()] for v in values], dtype=object))
            inputs.append(tensor)
        outputs = [http.InferRequestedOutput("RESULT"), http.InferRequestedOutput(output)]
        return client.infer(model, inputs, outputs=outputs, timeout=30_000_000)

    answer = request(MODEL_NAMES["feature-extraction"], {"TEXT": TEXTS}, "EMBEDDING")
    vectors = answer.as_numpy("EMBEDDING")
    want = np.stack(pipes["feature-extraction"](TEXTS))
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 32)
    assert np.max(np.abs(vectors - want)) <= 1e-5
    assert np.allclose([json.loads(r[0]) for r in answer.as_numpy("RESULT")], vectors, atol=1e-6)

    documents = [TEXTS, ["", "the lazy dog"]]
    queries = ["where is the fox?", "今天"]
    answer = request(MODEL_NAMES["rerank"], {"QUERY": queries, "DOCUMENTS": [json.dumps(d) for d in documents]},
                     "SCORES")
    scores = answer.as_numpy("SCORES")
    assert scores.dtype == np.float32 and scores.shape == (2, len(TEXTS))
    for row, (query, docs) in enumerate(zip(queries, documents)):
        assert np.max(np.abs(scores[row, :len(docs)] - pipes["rerank"](query, docs))) <= 1e-5
        assert np.isnan(scores[row, len(docs):]).all()


def test_sentence_embeddings_served_as_encode(server, pipes, exports):
    """The e5-stack export: EMBEDDING (rows, 32) float32 equal to ``SentenceTransformer.encode`` (and the pipeline)
    within 1e-5, empty and blank texts included (served, as encode embeds them); a model written with
    ``--pipeline-kwargs '{"prompt_name": "query"}'`` embeds every row with the "query: " prompt."""
    st = pytest.importorskip("sentence_transformers")
    import tritonclient.http as http

    model = st.SentenceTransformer(exports.st_dirs[FAMILY], device="cpu")
    texts = [*TEXTS, "", " ", "the lazy dog " * 12]  # the last is truncated at max_seq_length 24
    client = client_for(server)

    def embed(name):
        tensor = http.InferInput("TEXT", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        outputs = [http.InferRequestedOutput("RESULT"), http.InferRequestedOutput("EMBEDDING")]
        answer = client.infer(name, [tensor], outputs=outputs, timeout=30_000_000)
        vectors = answer.as_numpy("EMBEDDING")
        assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 32)
        assert np.allclose([json.loads(r[0]) for r in answer.as_numpy("RESULT")], vectors, atol=1e-6)
        return vectors

    vectors = embed(MODEL_NAMES["sentence-embeddings"])
    assert np.max(np.abs(vectors - model.encode(texts))) <= 1e-5
    assert np.max(np.abs(vectors - pipes["sentence-embeddings"](texts))) <= 1e-5
    queries = embed(QUERY_MODEL)
    assert np.max(np.abs(queries - model.encode(texts, prompt_name="query"))) <= 1e-5
    assert np.max(np.abs(queries - vectors)) > 1e-3  # the prompt reached the pipeline
    # one row per request, the empty text alone: answered like the others
    assert_same(infer(client, MODEL_NAMES["sentence-embeddings"], {"TEXT": ""}), model.encode("").tolist())


def test_onnx_model_fails_only_for_the_missing_backend(server):
    index = {m["name"]: m for m in server.post("/v2/repository/index")}
    for task in TASKS:
        entry = index[f"{MODEL_NAMES[task]}_onnx"]
        assert entry["state"] == "UNAVAILABLE"
        # The config was read and its backend looked up: a config that did not parse fails earlier, saying so.
        assert entry["reason"] == ("Invalid argument: unable to find backend library for backend 'onnxruntime', "
                                   "try specifying runtime on the model configuration."), entry
        assert index[MODEL_NAMES[task]]["state"] == "READY"


def test_concurrent_ragged_requests_are_batched(server, pipes):
    """One HTTP client per thread; the dynamic batcher merges requests (fewer executions than inferences)."""
    model, pipe = MODEL_NAMES["text-classification"], pipes["text-classification"]
    texts = ragged_texts(48, seed=3)
    before = stats(server, model)
    results: dict[int, dict] = {}
    errors = []

    def worker(k):
        client = client_for(server)
        try:
            for i in range(k, len(texts), 8):
                results[i] = infer(client, model, {"TEXT": texts[i]})
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
        finally:
            client.close()  # in its own thread: gevent's hub is per thread

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == len(texts)
    for i, text in enumerate(texts):
        assert_same(results[i], jsonable(pipe(text)), text)
    inferences, executions = (a - b for a, b in zip(settled_stats(server, model, before[0] + len(texts)), before))
    assert inferences == len(texts) and executions < inferences, (inferences, executions)


def test_bad_requests_get_errors_and_the_instance_keeps_serving(server, pipes):
    from tritonclient.utils import InferenceServerException
    import tritonclient.http as http

    model, pipe = MODEL_NAMES["text-classification"], pipes["text-classification"]
    client = client_for(server)
    for value, message in ((b"", "TEXT is empty"), (b"   ", "TEXT is empty"), (b"\xff\xfe", "not valid UTF-8")):
        with pytest.raises(InferenceServerException, match=message):
            infer(client, model, {"TEXT": value})
    with pytest.raises(InferenceServerException, match="TEXT"):  # Triton refuses it before the model runs
        client.infer(model, [], timeout=30_000_000)
    two_rows = http.InferInput("TEXT", [2, 1], "BYTES")
    two_rows.set_data_from_numpy(np.array([[b"hello world"], [b""]], dtype=object))
    with pytest.raises(InferenceServerException, match="row 1: TEXT is empty"):
        client.infer(model, [two_rows], timeout=30_000_000)
    fill_model = MODEL_NAMES["fill-mask"]
    with pytest.raises(InferenceServerException, match="No <mask> token"):
        infer(client, fill_model, {"TEXT": "no mask in this text"})
    assert_same(infer(client, model, {"TEXT": "hello world"}), jsonable(pipe("hello world")))

    # Good and bad requests in one batch: the long queue delay merges the concurrent requests.
    rows = [b"the quick brown fox", b"", b"hello world how are you", b"\xc3\x28", b"a"]
    outcomes: dict[int, object] = {}
    before = stats(server, WAITING_MODEL)

    def send(i):
        own = client_for(server)
        try:
            outcomes[i] = infer(own, WAITING_MODEL, {"TEXT": rows[i]})
        except InferenceServerException as err:
            outcomes[i] = err
        finally:
            own.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(rows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    inferences, executions = (a - b for a, b in zip(stats(server, WAITING_MODEL), before))
    assert executions < len(rows), (inferences, executions)  # merged (failed requests count no inference)
    for i in (0, 2, 4):
        assert_same(outcomes[i], jsonable(pipe(rows[i].decode())), str(rows[i]))
    assert "TEXT is empty" in str(outcomes[1]) and "not valid UTF-8" in str(outcomes[3])
    assert server.get(f"/v2/models/{WAITING_MODEL}/ready") is None  # 200 with an empty body: still ready
    assert_same(infer(client, WAITING_MODEL, {"TEXT": "still serving"}), jsonable(pipe("still serving")))


@pytest.mark.slow
def settled_stats(server, model, inferences: int, timeout: float = 20.0):
    """The model's statistics once they count ``inferences``: Triton updates them after the response is
    sent, so a snapshot taken right after the last reply can miss it (seen under load: 159 + 161)."""
    deadline = time.monotonic() + timeout
    counts = stats(server, model)
    while counts[0] < inferences and time.monotonic() < deadline:
        time.sleep(0.05)
        counts = stats(server, model)
    return counts


def test_ragged_traffic_throughput(server, pipes):
    """Measures (prints) requests/s and the mean batch size: concurrent ragged requests vs one by one."""
    model = MODEL_NAMES["text-classification"]
    texts = ragged_texts(160, seed=11)
    client = client_for(server)
    before = stats(server, model)
    start = time.perf_counter()
    for text in texts:
        infer(client, model, {"TEXT": text})
    serial = time.perf_counter() - start
    serial_counts = [a - b for a, b in zip(settled_stats(server, model, before[0] + len(texts)), before)]

    before = stats(server, model)
    errors = []

    def worker(k):
        own = client_for(server)
        try:
            for i in range(k, len(texts), 16):
                infer(own, model, {"TEXT": texts[i]})
        except Exception as err:  # noqa: BLE001
            errors.append(err)
        finally:
            own.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    concurrent = time.perf_counter() - start
    inferences, executions = (a - b for a, b in zip(settled_stats(server, model, before[0] + len(texts)), before))
    assert not errors and inferences == len(texts) and serial_counts == [len(texts), len(texts)]
    print(f"\nragged 1-40-word texts, {len(texts)} requests: one by one {len(texts) / serial:.1f} req/s (batch 1.0); "
          f"16 concurrent clients {len(texts) / concurrent:.1f} req/s, mean batch {inferences / executions:.1f} "
          f"({executions} executions)")
    assert executions < inferences
