"""`pip install onnxport` without extras serves an export: no framework installed, none needed.

Two installs: one with the suite's constraints (what the pinned suite verifies), and one with no
constraints at all, as a new user gets it today (the newest `tokenizers`, `onnxruntime`, ...). The
unconstrained one must tokenize exactly as the pinned install does, and the pinned install is itself
checked against transformers here, so the newest releases are compared with transformers' answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokenizer_fixtures import TEXTS, write_roberta_files, write_roformer_files, write_xlm_roberta_files

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("torch", "tensorflow", "jax", "flax", "transformers")
CLASSES = {
    "xlm-roberta": (write_xlm_roberta_files, "XLMRobertaTokenizer", "<mask>"),
    "roberta-prelayernorm": (write_roberta_files, "RobertaTokenizer", "<mask>"),
    "roformer": (write_roformer_files, "RoFormerTokenizer", "[MASK]"),
}
PAIRS = [("Hello world!", "今天天气非常好。"), ("a   lot    of     spaces", "It's 12345 or 3.14, isn't it?")]

# Run inside the edge venv and (as the expected side) inside this one: every field of every class.
TOKENIZE_SCRIPT = """
import json, sys
import onnxport.tokenizers as t
directories, texts, pairs, masks = json.loads(sys.argv[1])
out = {}
for label, (family, directory) in directories.items():
    for cls in t.TOKENIZERS_BY_MODEL_TYPE[family]:
        tok = cls.from_pretrained(directory)
        fast = cls.__name__.endswith("Fast")
        options = dict(padding=True, return_special_tokens_mask=True, return_token_type_ids=True,
                       return_offsets_mapping=fast)
        batch = texts + [text.replace("MASK", masks[family]) for text in ("x MASK y", "The capital is MASK.")]
        single = tok(batch, **options)
        paired = tok([a for a, _ in pairs], [b for _, b in pairs], truncation="only_second", max_length=20,
                     stride=2, return_overflowing_tokens=fast, **options)
        out[f"{label}/{cls.__name__}"] = {
            "single": {k: v for k, v in single.items()}, "pairs": {k: v for k, v in paired.items()},
            "decode": tok.batch_decode(single["input_ids"], skip_special_tokens=True),
            "len": len(tok), "mask_token_id": tok.mask_token_id,
        }
print(json.dumps(out, ensure_ascii=False))
"""


def _venv(tmp_path: Path, name: str, *pip_args: str) -> tuple[Path, dict]:
    venv = tmp_path / name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *pip_args, str(ROOT)],
                   check=True, env=env, capture_output=True)
    return venv / "bin" / "python", env


def _check_no_framework(python: Path, env: dict, cwd: Path) -> None:
    code = f"import importlib.util; present = [m for m in {FRAMEWORKS!r} if importlib.util.find_spec(m)]; print(present)"
    assert subprocess.run([str(python), "-c", code], check=True, env=env, capture_output=True, text=True,
                          cwd=cwd).stdout.strip() == "[]"


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

    python, env = _venv(tmp_path, "edge", "-c", str(ROOT / "constraints.txt"))
    _check_no_framework(python, env, tmp_path)
    code = (
        "import json\n"
        "from onnxport.runtime import pipeline\n"
        f"p = pipeline('text-classification', {str(export_dir)!r}, provider='cpu')\n"
        "print(json.dumps(p(['hello world', '今天天气'], top_k=None)))\n"
    )
    out = subprocess.run([str(python), "-c", code], check=True, env=env, capture_output=True, text=True, cwd=tmp_path)
    got = json.loads(out.stdout)
    assert [[x["label"] for x in row] for row in got] == [[x["label"] for x in row] for row in expected]
    assert all(abs(a["score"] - b["score"]) < 1e-6 for r, s in zip(got, expected) for a, b in zip(r, s))


@pytest.mark.slow
def test_unconstrained_install_tokenizes_like_transformers(tmp_path):
    """`pip install onnxport` with whatever the index has today (tokenizers 0.23 renamed RobertaProcessing's
    `cls` keyword, which broke every RoBERTa-BPE fast tokenizer): all six classes give the pinned results."""
    transformers = pytest.importorskip("transformers")
    import onnxport.tokenizers as ours

    directories = {family: (family, str(writer(tmp_path / "vocabs" / family)))
                   for family, (writer, _, _) in CLASSES.items()}
    # The real-size vocabularies too when they can be had (GPT-2's lacks <s>/<pad>/<mask>: added tokens).
    import real_vocab

    for name, (family, build) in {"gpt2": ("roberta-prelayernorm", real_vocab.gpt2_directory),
                                  "bert-base-chinese": ("roformer", real_vocab.bert_chinese_directory),
                                  "sentencepiece-120k": ("xlm-roberta", real_vocab.sentencepiece_directory)}.items():
        try:
            directories[name] = (family, str(build()))
        except real_vocab.VocabularyUnavailable as error:
            print(f"{name} left out: {error}")
    masks = {family: mask for family, (_, _, mask) in CLASSES.items()}
    payload = json.dumps([directories, TEXTS, PAIRS, masks])
    # The expected side: this (pinned) environment, first checked against transformers on the same calls.
    stems = {family: stem for family, (_, stem, _) in CLASSES.items()}
    for family, directory in directories.values():
        for name in (stems[family], stems[family] + "Fast"):
            fast = name.endswith("Fast")
            mine = getattr(ours, name).from_pretrained(directory)
            reference = getattr(transformers, name).from_pretrained(directory)
            options = dict(padding=True, return_special_tokens_mask=True, return_token_type_ids=True,
                           return_offsets_mapping=fast)
            assert dict(mine(TEXTS, **options)) == dict(reference(TEXTS, **options)), name
    expected = json.loads(subprocess.run([sys.executable, "-c", TOKENIZE_SCRIPT, payload], check=True,
                                         capture_output=True, text=True).stdout)

    python, env = _venv(tmp_path, "newest")
    _check_no_framework(python, env, tmp_path)
    versions = subprocess.run(
        [str(python), "-c", "import tokenizers, onnxruntime; print(tokenizers.__version__, onnxruntime.__version__)"],
        check=True, env=env, capture_output=True, text=True).stdout.split()
    print("unconstrained install: tokenizers", versions[0], "onnxruntime", versions[1])
    result = subprocess.run([str(python), "-c", TOKENIZE_SCRIPT, payload], env=env, capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout)
    assert sorted(got) == sorted(expected) and len(got) == 2 * len(directories)
    for name in expected:
        assert got[name] == expected[name], f"{name} differs on tokenizers {versions[0]}"
