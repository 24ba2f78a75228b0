"""Ray Data batch inference with OnnxPipelinePredictor on a local cluster bound to 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

from integration_exports import ExportFactory, assert_same, ragged_texts
from onnxport.errors import InputError
from onnxport.integrations import jsonable
from onnxport.integrations.ray import OnnxPipelinePredictor
from onnxport.runtime import pipeline

# One worker runs the whole file under `pytest -n 2 --dist loadgroup`: one server / cluster, not two.
pytestmark = pytest.mark.xdist_group("ray")

FAMILY = "xlm-roberta"
ROWS = 520
LOOPBACK = ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return ExportFactory(tmp_path_factory.mktemp("ray-exports"))(FAMILY, "text-classification")


@pytest.fixture(scope="module")
def pipe(export_dir):
    return pipeline("text-classification", export_dir, provider="cpu")


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return tree


def listening_sockets_of_this_process_tree() -> list[tuple[str, int, str]]:
    """(local address, pid, process name) of every listening TCP socket owned by this test or its children."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=10).stdout
    ours = _descendants(os.getpid())
    found = []
    for line in out.splitlines():
        address = line.split()[3].rsplit(":", 1)[0]
        for name, pid in re.findall(r'"([^"]+)",pid=(\d+)', line):
            if int(pid) in ours:
                found.append((address, int(pid), name))
    return found


@pytest.fixture(scope="module")
def ray_cluster():
    saved = {k: os.environ.get(k) for k in ("HOME", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    home = tempfile.mkdtemp(prefix="onnxport-ray-home-")
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix sockets live under it
    os.environ["HOME"] = home  # Ray writes ~/.ray
    # Ray resolves "127.0.0.1" to the machine's interface address unless clusters are off (its single-node
    # switch): then the node address is the loopback one and every Ray server binds to it.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        ray = pytest.importorskip("ray", reason="ray[data] is not installed (onnxport[ray])")
        pytest.importorskip("ray.data", reason="ray[data] is not installed (onnxport[ray])")
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=temp_dir,
                 log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield ray
    finally:
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(temp_dir, ignore_errors=True)


class SocketWatch:
    """Polls this process tree's listening sockets while a job runs."""

    def __init__(self):
        self.seen: set[tuple[str, int, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.seen.update(listening_sockets_of_this_process_tree())
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)


def _expected(pipe, texts, pairs=None):
    inputs = [t if p is None else (t, p) for t, p in zip(texts, pairs or [None] * len(texts))]
    return [jsonable(r) for r in pipe(inputs)]


def test_pandas_batches_match_the_pipeline_and_stay_on_loopback(ray_cluster, export_dir, pipe):
    pd = pytest.importorskip("pandas", reason="pandas comes with ray[data] (onnxport[ray])")

    ray = ray_cluster
    texts = ragged_texts(ROWS, seed=5)
    frame = pd.DataFrame({"id": np.arange(ROWS), "text": texts})
    with SocketWatch() as watch:
        out = (ray.data.from_pandas(frame)
               .map_batches(OnnxPipelinePredictor, fn_constructor_kwargs={"export_dir": export_dir}, batch_size=64,
                            batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1)
               .to_pandas().sort_values("id"))
        watch.seen.update(listening_sockets_of_this_process_tree())
    assert list(out["id"]) == list(range(ROWS)) and list(out["text"]) == texts
    for text, result, label, score, want in zip(texts, out["result"], out["label"], out["score"], _expected(pipe, texts)):
        assert_same(json.loads(result), want, text)
        assert label == want["label"] and abs(score - want["score"]) <= 1e-5
    names = {name for _, _, name in watch.seen}
    assert {"gcs_server", "raylet"} <= names, watch.seen  # the watch did see Ray's servers
    exposed = sorted(s for s in watch.seen if s[0] not in LOOPBACK)
    assert not exposed, f"Ray sockets listening beyond 127.0.0.1: {exposed}"


def test_numpy_batches_with_pairs_match_the_pipeline(ray_cluster, export_dir, pipe):
    ray = ray_cluster
    texts = ragged_texts(ROWS, seed=6)
    pairs = [t if i % 2 else None for i, t in enumerate(ragged_texts(ROWS, 1, 10, seed=7))]
    items = [{"id": i, "text": t, "text_pair": p} for i, (t, p) in enumerate(zip(texts, pairs))]
    batches = (ray.data.from_items(items)
               .map_batches(OnnxPipelinePredictor, fn_constructor_kwargs={"export_dir": export_dir}, batch_size=100,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1)
               .iter_batches(batch_format="numpy", batch_size=None))
    got = {}
    for batch in batches:
        assert batch["score"].dtype == np.float64
        for i, result, label in zip(batch["id"], batch["result"], batch["label"]):
            got[int(i)] = (json.loads(result), label)
    assert sorted(got) == list(range(ROWS))
    for i, want in enumerate(_expected(pipe, texts, pairs)):
        assert_same(got[i][0], want, f"row {i}")
        assert got[i][1] == want["label"]


def test_actor_threads_follow_its_cpus(ray_cluster, export_dir):
    ray = ray_cluster

    @ray.remote(num_cpus=2)
    def threads_of_a_two_cpu_task(path):
        return OnnxPipelinePredictor(path).intra_op_threads

    assert ray.get(threads_of_a_two_cpu_task.remote(export_dir), timeout=120) == 2


def test_predictor_refuses_bad_rows_and_missing_columns(export_dir, pipe):
    pd = pytest.importorskip("pandas", reason="pandas comes with ray[data] (onnxport[ray])")

    predictor = OnnxPipelinePredictor(export_dir, intra_op_threads=1)
    frame = predictor(pd.DataFrame({"text": ["hello world", "the lazy dog"]}))
    assert list(frame["label"]) == [r["label"] for r in pipe(["hello world", "the lazy dog"])]
    with pytest.raises(InputError, match=r"Row 1 of the batch .*text is empty"):
        predictor(pd.DataFrame({"text": ["hello world", "  "]}))
    with pytest.raises(InputError, match="no text column"):
        predictor({"sentence": np.array(["hello"])})


def test_runtime_imports_neither_ray_nor_tritonclient():
    code = ("import sys, onnxport.runtime, onnxport.integrations, onnxport.integrations.ray, "
            "onnxport.integrations.triton; print(sorted(m for m in ('ray', 'tritonclient') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def number_factory(tmp_path_factory):
    return ExportFactory(tmp_path_factory.mktemp("ray-number-exports"))


@pytest.fixture(scope="module")
def number_exports(number_factory):
    """A rerank export (a one-label cross-encoder) and a feature-extraction one: tasks whose results are numbers."""
    return {task: number_factory(FAMILY, task) for task in ("rerank", "feature-extraction")}


def test_rerank_and_vectors_come_as_float32_columns(ray_cluster, number_exports):
    """rerank rows (query + a list of documents) and feature-extraction rows: ``result`` JSON as the pipeline
    answers, and the numbers as float32 columns: ``scores`` per document, ``embedding`` (rows, hidden) arrays."""
    from onnxport.integrations import scored_documents

    pd = pytest.importorskip("pandas", reason="pandas comes with ray[data] (onnxport[ray])")
    ray = ray_cluster
    rerank = pipeline("rerank", number_exports["rerank"], provider="cpu")
    queries = ragged_texts(40, 1, 8, seed=11)
    documents = [ragged_texts(1 + i % 5, 0, 30, seed=100 + i) for i in range(40)]
    items = [{"id": i, "query": q, "documents": d} for i, (q, d) in enumerate(zip(queries, documents))]
    for batch_format in ("pandas", "numpy"):
        rows = (ray.data.from_items(items)
                .map_batches(OnnxPipelinePredictor, batch_size=16, batch_format=batch_format, num_cpus=1,
                             fn_constructor_kwargs={"export_dir": number_exports["rerank"],
                                                    "pipeline_kwargs": {"top_k": 2}},
                             compute=ray.data.ActorPoolStrategy(size=1))
                .take_all())
        assert sorted(int(r["id"]) for r in rows) == list(range(40))
        for row in rows:
            i = int(row["id"])
            want = rerank(queries[i], documents[i])
            assert_same(json.loads(row["result"]), jsonable(scored_documents(want, documents[i], top_k=2)), f"row {i}")
            assert row["scores"].dtype == np.float32 and np.max(np.abs(row["scores"] - want)) <= 1e-5

    features = pipeline("feature-extraction", number_exports["feature-extraction"], provider="cpu")
    texts = ragged_texts(30, seed=12)
    predictor = OnnxPipelinePredictor(number_exports["feature-extraction"], intra_op_threads=1)
    batch = predictor({"text": np.array(texts, dtype=object)})
    assert batch["embedding"].dtype == np.float32 and batch["embedding"].shape == (30, 32)
    assert np.max(np.abs(batch["embedding"] - np.stack(features(texts)))) <= 1e-5
    frame = predictor(pd.DataFrame({"text": texts[:3]}))
    assert all(v.dtype == np.float32 and v.shape == (32,) for v in frame["embedding"])
    per_token = OnnxPipelinePredictor(number_exports["feature-extraction"], intra_op_threads=1,
                                      pipeline_kwargs={"pooling": "none"})({"text": np.array(texts[:2], dtype=object)})
    assert "embedding" not in per_token and len(json.loads(per_token["result"][0])[0]) == 32  # JSON carries them


def test_sentence_embeddings_come_as_encode(ray_cluster, number_factory):
    """The e5-stack sentence-transformers export through ``map_batches`` (pandas and numpy batches): the float32
    ``embedding`` column equal to ``SentenceTransformer.encode`` within 1e-5, empty and blank texts included (served,
    as encode embeds them); ``pipeline_kwargs={"prompt_name": "query"}`` embeds with the "query: " prompt."""
    st = pytest.importorskip("sentence_transformers")
    ray = ray_cluster
    export = number_factory(FAMILY, "sentence-embeddings")
    model = st.SentenceTransformer(number_factory.st_dirs[FAMILY], device="cpu")
    texts = ragged_texts(38, seed=13) + ["", " "]  # up to 40 words: some truncated at max_seq_length 24
    items = [{"id": i, "text": t} for i, t in enumerate(texts)]
    for batch_format, kwargs in (("pandas", {}), ("numpy", {"prompt_name": "query"})):
        want = model.encode(texts, **kwargs)
        rows = (ray.data.from_items(items)
                .map_batches(OnnxPipelinePredictor, batch_size=16, batch_format=batch_format, num_cpus=1,
                             fn_constructor_kwargs={"export_dir": export, "pipeline_kwargs": kwargs},
                             compute=ray.data.ActorPoolStrategy(size=1))
                .take_all())
        assert sorted(int(r["id"]) for r in rows) == list(range(len(texts)))
        for row in rows:
            i = int(row["id"])
            vector = np.asarray(row["embedding"])
            assert vector.dtype == np.float32 and vector.shape == (32,), (batch_format, i)
            assert np.max(np.abs(vector - want[i])) <= 1e-5, (batch_format, kwargs, texts[i])
            assert np.allclose(json.loads(row["result"]), vector, atol=1e-6)
    # the prompt reached the pipeline: query vectors differ from the plain ones
    assert np.max(np.abs(model.encode(texts, prompt_name="query") - model.encode(texts))) > 1e-3
