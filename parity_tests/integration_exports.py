"""Tiny exports with tokenizer files for the Triton and Ray tests (built the way test_runtime.py builds them)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import build_hf_checkpoint
from tokenizer_fixtures import write_roberta_files, write_roformer_files, write_xlm_roberta_files

TOKENIZER_WRITERS = {
    "xlm-roberta": write_xlm_roberta_files,
    "roberta-prelayernorm": write_roberta_files,
    "roformer": write_roformer_files,
}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
WORDS = ("the quick brown fox jumps over lazy dog hello world how are you doing today tokenizers split text "
         "into pieces models read numbers like and appear in too").split()


class ExportFactory:
    """``factory(model_type, task)`` -> export directory (with tokenizer files), built once per pair.

    ``sentence-embeddings``: a sentence-transformers directory with multilingual-e5's stack (st_models.E5: mean
    pooling, Normalize, "query: " / "passage: " prompts) saved by sentence-transformers itself; ``st_dirs[model_type]``
    is that directory, for comparing with ``SentenceTransformer(...).encode``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.exports: dict[tuple[str, str], str] = {}
        self.tokenizers: dict[str, Path] = {}
        self.st_dirs: dict[str, str] = {}

    def __call__(self, model_type: str, task: str) -> str:
        from onnxport.exporters import export
        from onnxport.exporters.io_spec import TASKS
        from onnxport.tokenizers import AutoTokenizer

        key = (model_type, task)
        if key not in self.exports:
            if model_type not in self.tokenizers:
                self.tokenizers[model_type] = TOKENIZER_WRITERS[model_type](self.root / f"tok-{model_type}")
            tokenizer_dir = self.tokenizers[model_type]
            if task == "sentence-embeddings":
                self.exports[key] = self._sentence_embeddings(model_type, tokenizer_dir)
                return self.exports[key]
            overrides = dict(vocab_size=len(AutoTokenizer.from_pretrained(tokenizer_dir)), max_position_embeddings=66)
            if task == "token-classification":
                overrides["id2label"] = NER_LABELS
            if task == "rerank":  # a cross-encoder's one relevance logit (--task rerank: CrossEncoder's Sigmoid)
                overrides["num_labels"] = 1
            checkpoint = self.root / f"ckpt-{model_type}-{task}"
            build_hf_checkpoint(checkpoint, model_type, TASKS[task].head, **overrides)
            for f in Path(tokenizer_dir).iterdir():
                if f.name != "config.json":
                    shutil.copy(f, checkpoint / f.name)
            out = self.root / f"{model_type}-{task}"
            # Served answers are compared with the in-process pipeline on the same export; export
            # correctness against the native model is test_export_pt.py's job, so no validation pass here.
            export(str(checkpoint), str(out), framework="pt", task=task, validate=False)
            self.exports[key] = str(out)
        return self.exports[key]


    def _sentence_embeddings(self, model_type: str, tokenizer_dir: Path) -> str:
        from st_models import E5, build_st_model
        from transformers import AutoTokenizer

        from onnxport.exporters import export

        def tokenizer_dirs(family):  # the fixture vocabulary as transformers saves it (what ST's Transformer reads)
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
            saved = self.root / f"st-tok-{family}"
            tokenizer.save_pretrained(saved)
            return saved, len(tokenizer), tokenizer.pad_token_id

        stack = dict(E5, family=model_type)
        self.st_dirs[model_type] = build_st_model(self.root / f"st-{model_type}", tokenizer_dirs, **stack)
        out = self.root / f"{model_type}-sentence-embeddings"
        report = export(self.st_dirs[model_type], str(out), framework="pt", validate=False)
        assert report.task == "sentence-embeddings", report.task  # inferred from modules.json
        return str(out)


def ragged_texts(count: int, low: int = 1, high: int = 40, seed: int = 0) -> list[str]:
    """``count`` texts of ``low``..``high`` words (the ragged traffic of the issue)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(low, high + 1)))) for _ in range(count)]


def assert_same(got, want, where="result", atol=1e-5):
    """Equal JSON values; floats within ``atol`` (rows batched with others pad differently)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {got} != {want}"
        for key in want:
            assert_same(got[key], want[key], f"{where}.{key}", atol)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]", atol)
    elif isinstance(want, float):
        assert isinstance(got, (int, float)) and abs(got - want) <= atol, f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"
