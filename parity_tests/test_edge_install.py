"""`pip install onnxport` without extras serves an export: no framework installed, none needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_base_install_serves_pipelines_without_frameworks(tmp_path, checkpoint_factory):
    from onnxport.exporters import export
    from onnxport.runtime import pipeline

    export_dir = tmp_path / "export"
    checkpoint = checkpoint_factory("roformer", "ForSequenceClassification")
    (Path(checkpoint) / "vocab.txt").write_text("\n".join(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "今天", "天", "气"]) + "\n")
    export(checkpoint, export_dir, framework="pt", task="text-classification")
    expected = pipeline("text-classification", export_dir, provider="cpu")(["hello world", "今天天气"], top_k=None)

    venv = tmp_path / "edge"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"), str(ROOT)],
                   check=True, env=env, capture_output=True)
    code = (
        "import importlib.util, json, sys\n"
        "present = [m for m in ('torch', 'tensorflow', 'jax', 'flax', 'transformers') if importlib.util.find_spec(m)]\n"
        "assert not present, present\n"
        "from onnxport.runtime import pipeline\n"
        f"p = pipeline('text-classification', {str(export_dir)!r}, provider='cpu')\n"
        "print(json.dumps(p(['hello world', '今天天气'], top_k=None)))\n"
    )
    out = subprocess.run([str(python), "-c", code], check=True, env=env, capture_output=True, text=True, cwd=tmp_path)
    got = json.loads(out.stdout)
    assert [[x["label"] for x in row] for row in got] == [[x["label"] for x in row] for row in expected]
    assert all(abs(a["score"] - b["score"]) < 1e-6 for r, s in zip(got, expected) for a, b in zip(r, s))
