"""`onnxport demo`: the whole chain on built-in tiny models.

For each family: train a tiny tokenizer, build a random checkpoint per task
head (PyTorch), export it from every installed framework (PyTorch, TensorFlow,
Flax) with validation, serve each export through its pipeline, and print one
table: the validation error of each export and the pipeline's answer, which
must be the same from all three exports.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .._quiet import import_quietly
from ..families import FAMILIES
from . import FRAMEWORKS, TASK_ROWS

TINY_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                   max_position_embeddings=66, type_vocab_size=2)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "onnxport exports encoder transformers to onnx",
    "hello world from a tiny demo model",
    "paris is the capital of france and berlin of germany",
    "今天天气非常好", "我们在北京学习自然语言处理",
]
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
SENTIMENT_LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


# ----------------------------------------------------------------------------- tiny tokenizers
def write_tokenizer_files(model_type: str, directory: Path) -> None:
    """Train (or write) a tiny vocabulary in the format the family's users have."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = FAMILIES[model_type].tokenizer_class
    if tokenizer == "XLMRobertaTokenizer":
        import sentencepiece as spm

        corpus = directory / "corpus.txt"
        corpus.write_text("\n".join(CORPUS * 5), encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(directory / "sentencepiece.bpe"),
                                       vocab_size=120, model_type="unigram", hard_vocab_limit=False, minloglevel=2)
        corpus.unlink()
        (directory / "sentencepiece.bpe.vocab").unlink()
    elif tokenizer == "RobertaTokenizer":
        from tokenizers import ByteLevelBPETokenizer

        trainer = ByteLevelBPETokenizer()
        trainer.train_from_iterator(CORPUS * 5, vocab_size=400, min_frequency=1,
                                    special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                    show_progress=False)  # its progress bar leaves blank lines in the table
        trainer.save_model(str(directory))
    else:
        words = ["今天", "天气", "非常", "北京", "我们", "学习", "自然", "语言", "处理"]
        pieces = sorted({w for line in CORPUS for w in line.split() if w.isascii()})
        chars = sorted(set("".join(CORPUS)) - set(" "))
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + pieces
        vocab += [c for c in chars if c not in vocab]
        (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (directory / "config.json").write_text(json.dumps({"model_type": model_type}))


def build_checkpoint(directory: Path, model_type: str, task: str, tokenizer_dir: Path, seed: int = 0) -> str:
    import shutil

    import torch

    from ..configs import AutoConfig
    from ..artifact.io_spec import TASKS as EXPORT_TASKS
    from ..reference_models.pt import model_class
    from ..tokenizers import AutoTokenizer

    torch.manual_seed(seed)
    overrides: dict[str, Any] = {"vocab_size": len(AutoTokenizer.from_pretrained(tokenizer_dir))}
    if task == "text-generation":
        overrides["is_decoder"] = True
    if task == "token-classification":
        overrides["id2label"] = NER_LABELS
    if task == "text-classification":
        overrides["id2label"] = SENTIMENT_LABELS
    config = AutoConfig.for_model(model_type, **TINY_CONFIG, **overrides)
    model = model_class(model_type, EXPORT_TASKS[task].head)(config)
    model.save_pretrained(directory)
    for f in tokenizer_dir.iterdir():
        if f.name != "config.json":
            shutil.copy(f, directory / f.name)
    return str(directory)


# ----------------------------------------------------------------------------- serving
def serve(task: str, export_dir: str, tokenizer) -> str:
    """Run the task's pipeline once and summarise the answer in a few characters."""
    from ..runtime import pipeline

    mask = tokenizer.mask_token
    if task == "feature-extraction":
        vector = pipeline(task, export_dir, provider="cpu")("hello world", pooling="mean", normalize=True)
        return f"|v|=1, v0={vector[0]:+.3f}"
    if task == "fill-mask":
        best = pipeline(task, export_dir, provider="cpu")(f"the quick {mask} fox", top_k=1)[0]
        return f"{best['token_str'].strip()!r} {best['score']:.2f}"
    if task == "text-classification":
        best = pipeline(task, export_dir, provider="cpu")("hello world")
        return f"{best['label']} {best['score']:.2f}"
    if task == "multiple-choice":
        result = pipeline(task, export_dir, provider="cpu")("the quick brown", ["fox", "dog", "world"])
        return f"choice {result['best']} {max(result['scores']):.2f}"
    if task == "token-classification":
        entities = pipeline(task, export_dir, provider="cpu")("paris is the capital of france",
                                                             aggregation_strategy="simple", ignore_labels=())
        return f"{len(entities)} spans, {entities[0]['entity_group']}" if entities else "0 spans"
    if task == "question-answering":
        answer = pipeline(task, export_dir, provider="cpu")(question="where is the fox",
                                                            context="the quick brown fox jumps over the lazy dog")
        return repr(answer["answer"])
    generated = pipeline(task, export_dir, provider="cpu")("the quick", max_new_tokens=4, eos_token_id=-1)
    return repr(generated["generated_text"][-18:])


def _framework_status() -> dict[str, str]:
    from ..exporters import ExportError, _front_end

    import_quietly("tensorflow")
    status = {}
    for framework in FRAMEWORKS:
        try:
            _front_end(framework)
            status[framework] = ""
        except (ExportError, ImportError) as err:
            status[framework] = str(err).splitlines()[0]
    return status


def main() -> int:
    import logging

    logging.getLogger("onnxport").setLevel(logging.ERROR)
    from ..exporters import export
    from ..tokenizers import AutoTokenizer

    status = _framework_status()
    if status["pt"]:
        print(f"The demo builds its checkpoints with PyTorch: {status['pt']}")
        return 1
    frameworks = [f for f in FRAMEWORKS if not status[f]]
    start = time.perf_counter()
    header = (f"{'family':21}{'task':26}" + "".join(f"{f + ' export':>13}" for f in FRAMEWORKS)
              + f"  {'pipeline answer (same from every export)':44}")
    print(header)
    print("-" * len(header))
    worst, failures = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="onnxport-demo-") as tmp:
        root = Path(tmp)
        for model_type in FAMILIES:
            tokenizer_dir = root / f"tok-{model_type}"
            write_tokenizer_files(model_type, tokenizer_dir)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            for task, with_past in TASK_ROWS:
                name = task + (" +past" if with_past else "")
                checkpoint = build_checkpoint(root / f"ckpt-{model_type}-{task}", model_type, task, tokenizer_dir)
                cells, answers = [], {}
                for framework in FRAMEWORKS:
                    if status[framework]:
                        cells.append(f"{'skipped':>13}")
                        continue
                    out = root / f"onnx-{model_type}-{task}-{int(with_past)}-{framework}"
                    try:
                        report = export(checkpoint, out, framework=framework, task=task, with_past=with_past)
                        diff = report.validation.max_abs_diff if report.validation else float("nan")
                        worst = max(worst, diff)
                        cells.append(f"{diff:>13.1e}")
                        answers[framework] = serve(task, str(out), tokenizer)
                    except Exception as err:  # the demo reports every failure in its table and goes on
                        failures += 1
                        cells.append(f"{'FAILED':>13}")
                        answers[framework] = f"{type(err).__name__}: {str(err).splitlines()[0][:60]}"
                distinct = set(answers.values())
                if len(distinct) == 1:
                    answer = distinct.pop()
                else:
                    failures += 1
                    answer = " | ".join(f"{k}: {v}" for k, v in answers.items())
                print(f"{model_type:21}{name:26}" + "".join(cells) + f"  {answer}")
    seconds = time.perf_counter() - start
    print(f"\n{len(FAMILIES) * len(TASK_ROWS) * len(frameworks)} exports from {', '.join(frameworks)}, each validated "
          f"against its native model (largest abs diff {worst:.1e}) and served through its pipeline; {seconds:.0f}s.")
    for framework, reason in status.items():
        if reason:
            print(f"{framework}: skipped — {reason}")
    if failures:
        print(f"{failures} row(s) failed or disagreed across frameworks.")
        return 1
    return 0
