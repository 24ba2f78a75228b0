"""Session building: provider choice, options reaching ONNX Runtime, clear errors."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxport.runtime.session import (
    ModelFileError,
    ProviderUnavailableError,
    SessionConfig,
    create_session,
    select_providers,
)

ALL_GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def add_model(tmp_path_factory):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "double", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path = tmp_path_factory.mktemp("m") / "model.onnx"
    onnx.save(model, path)
    return str(path)


def test_auto_picks_cpu_here_and_says_why(add_model, caplog):
    with caplog.at_level(logging.INFO, logger="onnxport"):
        session, chosen = create_session(add_model)
    assert chosen == "cpu" and session.get_providers() == ["CPUExecutionProvider"]
    assert "runs" in caplog.text and "CPUExecutionProvider" in caplog.text
    assert "tensorrt skipped" in caplog.text and "cuda skipped" in caplog.text
    out = session.run(None, {"x": np.array([1.5, -2.0], dtype=np.float32)})[0]
    assert out.tolist() == [3.0, -4.0]


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_explicit_gpu_provider_fails_clearly_or_falls_back(add_model, provider):
    with pytest.raises(ProviderUnavailableError, match="onnxruntime-gpu"):
        create_session(add_model, provider=provider)
    session, chosen = create_session(add_model, provider=provider, fallback=True)
    assert chosen == "cpu" and session.get_providers() == ["CPUExecutionProvider"]


def test_simulated_gpu_host_gets_provider_chain_and_options():
    config = SessionConfig(provider="auto", device_id=1, trt_fp16=True, trt_engine_cache_dir="/tmp/trt", cuda_mem_limit=2 << 30)
    chosen, providers, skipped = select_providers(config, available=ALL_GPU)
    assert chosen == "tensorrt" and not skipped
    assert [name for name, _ in providers] == ALL_GPU
    trt_options, cuda_options = providers[0][1], providers[1][1]
    assert trt_options == {"device_id": 1, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                           "trt_engine_cache_path": "/tmp/trt"}
    assert cuda_options == {"device_id": 1, "gpu_mem_limit": 2 << 30}
    chosen, providers, skipped = select_providers(SessionConfig(), available=ALL_GPU[1:])
    assert chosen == "cuda" and "tensorrt" in skipped and [n for n, _ in providers] == ALL_GPU[1:]
    chosen, providers, _ = select_providers(SessionConfig(provider="cpu"), available=ALL_GPU)
    assert chosen == "cpu" and [n for n, _ in providers] == ["CPUExecutionProvider"]


def test_session_options_reach_onnxruntime(add_model, tmp_path):
    cache = tmp_path / "cache" / "optimized.onnx"
    session, _ = create_session(add_model, provider="cpu", intra_op_threads=1, inter_op_threads=1,
                                graph_optimization_level="basic", optimized_model_path=str(cache))
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level.name == "ORT_ENABLE_BASIC"
    assert cache.exists() and onnx.load(cache).graph.node[0].op_type == "Add"


def test_bad_options_and_bad_files(add_model, tmp_path):
    with pytest.raises(ValueError, match="provider='gpu'"):
        create_session(add_model, provider="gpu")
    with pytest.raises(ValueError, match="graph_optimization_level"):
        create_session(add_model, graph_optimization_level="max")
    with pytest.raises(TypeError, match="Unknown session option 'threads'"):
        create_session(add_model, threads=2)
    with pytest.raises(ModelFileError, match="No ONNX model"):
        create_session(str(tmp_path / "missing.onnx"))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(open(add_model, "rb").read()[:20])
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        create_session(str(truncated))
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        create_session(str(tmp_path / "empty.onnx"))


def test_runtime_import_pulls_no_framework():
    code = (
        "import sys, onnxport.runtime;"
        "bad=[m for m in ('torch','tensorflow','jax','flax','transformers') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
