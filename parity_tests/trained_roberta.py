"""A small RoBERTa masked-LM trained here on real English text, saved as a user's checkpoint is.

Random weights hide what trained ones show (large logits, peaked softmaxes, a head that matters), so the
end-to-end and int8 tests also run on this model. The text is the docstrings of Python's standard library
(real prose, on every machine with Python, no download); modules are split into training and held-out text.
The model is the onnxport PyTorch ``RobertaForMaskedLM`` (hidden 128, 4 layers), trained for a fixed number
of steps with transformers' masking recipe, and saved with ``save_pretrained`` plus GPT-2-style
``vocab.json`` / ``merges.txt`` from a byte-level BPE trained on the same text: ``model_type: roberta``,
no tokenizer.json, no tokenizer_config.json.

Built once per machine and cached (``~/.cache/onnxport-tests``) under a key made of the recipe (``recipe()``:
geometry, steps, batch, seed, ``TRAINING_VERSION``) and the training text itself, not this file's bytes: editing
comments or helpers here (or in ``benchmarks/int8_models.py``, which trains with ``train()`` too) reuses the
cached model; a change to what training does bumps ``TRAINING_VERSION``. About seven minutes on one busy core
(two on a quiet one). ``python -m parity_tests.trained_roberta DIR`` builds one into DIR.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import sys
import sysconfig
import time
from pathlib import Path

TRAIN_MODULES = (
    "argparse", "collections/__init__", "csv", "dataclasses", "datetime", "decimal", "difflib", "email/message",
    "enum", "fractions", "ftplib", "functools", "gettext", "http/client", "http/cookiejar", "imaplib",
    "inspect", "ipaddress", "logging/__init__", "mailbox", "nntplib", "optparse", "pathlib", "pickle",
    "pydoc", "smtplib", "socket", "statistics", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "typing", "unittest/case", "urllib/request", "uuid", "zipfile/__init__", "shutil", "configparser",
)
HELD_OUT_MODULES = ("calendar", "heapq", "json/__init__", "random", "string", "bisect", "contextlib", "copy", "os",
                    "locale", "queue", "shlex", "timeit", "trace", "weakref", "sched", "codecs", "netrc")
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
GEOMETRY = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                max_position_embeddings=130, type_vocab_size=1, layer_norm_eps=1e-5, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2)
VOCAB_SIZE = 2000
SEQUENCE = 64
BATCH = 32
STEPS = 800
SEED = 0
LEARNING_RATE = 1e-3
WARMUP = 100
# Bump when train() or the data preparation changes what is trained (the cache keys include it).
TRAINING_VERSION = 1


def _sentences(modules) -> list[str]:
    """Docstring sentences of the given standard-library modules, normalised to single spaces."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for name in modules:
        path = stdlib / f"{name}.py"
        if not path.is_file():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                text = " ".join(doc.split())
                for sentence in re.split(r"(?<=[.!?])\s+", text):
                    if 25 <= len(sentence) <= 300 and sum(c.isalpha() for c in sentence) > 0.7 * len(sentence):
                        out.append(sentence)
    return out


def train_text() -> list[str]:
    return _sentences(TRAIN_MODULES)


def held_out_text() -> list[str]:
    return _sentences(HELD_OUT_MODULES)


def recipe() -> dict:
    """What decides the trained weights besides the text: the cache key's parameters."""
    return {"geometry": GEOMETRY, "vocab_size": VOCAB_SIZE, "special_tokens": SPECIAL_TOKENS, "sequence": SEQUENCE,
            "batch": BATCH, "steps": STEPS, "seed": SEED, "lr": LEARNING_RATE, "warmup": WARMUP,
            "training_version": TRAINING_VERSION}


def cache_key(recipe: dict, texts) -> str:
    """A key for a trained model: its recipe (JSON) and the exact training text (hashed, so a Python whose
    standard library says something else trains, and caches, its own)."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)  # parsing the training text takes seconds: once per process
def _fingerprint() -> str:
    return cache_key(recipe(), train_text())


def mask_tokens(ids, special_mask, mask_id: int, vocab_size: int, generator):
    """transformers' DataCollatorForLanguageModeling recipe: 15% of real tokens are predicted; of those
    80% become <mask>, 10% a random token, 10% stay."""
    import torch

    labels = ids.clone()
    chosen = (torch.rand(ids.shape, generator=generator) < 0.15) & ~special_mask
    labels[~chosen] = -100
    ids = ids.clone()
    replace = chosen & (torch.rand(ids.shape, generator=generator) < 0.8)
    ids[replace] = mask_id
    randomise = chosen & ~replace & (torch.rand(ids.shape, generator=generator) < 0.5)
    ids[randomise] = torch.randint(len(SPECIAL_TOKENS), vocab_size, ids.shape, generator=generator)[randomise]
    return ids, labels


def train(make_model, batch_of, *, steps: int, warmup: int, lr: float = LEARNING_RATE, seed: int = SEED,
          log=print, prefix: str = ""):
    """The one training loop of the suite's and the benchmarks' small models: AdamW (weight decay 0.01), linear
    warm-up over ``warmup`` steps then linear decay to a tenth, gradients clipped at 1, one thread (repeatable,
    and 5x faster than two threads when the other core is busy). ``make_model()`` is called after seeding (the
    initial weights follow ``seed``); ``batch_of(generator)`` returns the model's keyword arguments (with
    ``labels``) for one step. Returns (model in eval mode, final loss, seconds)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = make_model().train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.1, 1 - step / steps))
        start = time.perf_counter()
        for step in range(steps):
            loss = model(**batch_of(generator)).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if step % 100 == 0 or step == steps - 1:
                log(f"{prefix}step {step}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f}s)")
    finally:
        torch.set_num_threads(threads)
    return model.eval(), float(loss.item()), time.perf_counter() - start


def build(directory: str | os.PathLike, steps: int = STEPS, log=print) -> Path:
    """Train the model and write the checkpoint directory."""
    import torch
    from tokenizers import ByteLevelBPETokenizer

    from onnxport.configs import AutoConfig
    from onnxport.reference_models.pt import RobertaForMaskedLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sentences = train_text()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sentences, vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                            show_progress=False)
    bpe.save_model(str(directory))
    vocab_size = bpe.get_vocab_size()
    pad, bos, eos, mask = (bpe.token_to_id(t) for t in ("<pad>", "<s>", "</s>", "<mask>"))

    # Pack sentences into <s> ... </s> rows of SEQUENCE tokens (no padding: every position trains).
    stream = []
    for sentence in sentences:
        stream += [bos] + bpe.encode(sentence).ids + [eos]
    rows = len(stream) // SEQUENCE
    data = torch.tensor(stream[: rows * SEQUENCE]).view(rows, SEQUENCE)
    special = (data == bos) | (data == eos)

    config = AutoConfig.for_model("roberta", vocab_size=vocab_size, **GEOMETRY)

    def masked_batch(generator):
        rows_ = torch.randint(0, rows, (BATCH,), generator=generator)
        ids, labels = mask_tokens(data[rows_], special[rows_], mask, vocab_size, generator)
        return {"input_ids": ids, "labels": labels}

    model, loss, seconds = train(lambda: RobertaForMaskedLM(config), masked_batch, steps=steps, warmup=WARMUP,
                                 log=log)
    model.save_pretrained(directory)
    config_path = directory / "config.json"
    saved = json.loads(config_path.read_text())
    assert saved["model_type"] == "roberta" and saved["architectures"] == ["RobertaForMaskedLM"]
    (directory / "training.json").write_text(json.dumps(
        {"steps": steps, "batch": BATCH, "sequence": SEQUENCE, "train_sentences": len(sentences),
         "final_loss": loss, "seconds": seconds,
         "fingerprint": _fingerprint()}, indent=2))
    return directory


def cached_checkpoint(log=lambda *_: None) -> Path:
    """The trained checkpoint for this file's recipe, built once per machine (safe across xdist workers)."""
    from filelock import FileLock

    root = Path(os.environ.get("ONNXPORT_TEST_CACHE", Path.home() / ".cache" / "onnxport-tests"))
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"trained-roberta-{_fingerprint()}"
    with FileLock(str(target) + ".lock"):
        if not (target / "training.json").is_file():
            partial = root / f"{target.name}.partial"
            if partial.exists():
                import shutil

                shutil.rmtree(partial)
            build(partial, log=log)
            partial.rename(target)
    return target


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else "trained-roberta")
