"""Small masked-LMs trained here on real data the team did not tune int8 on (issue 27), built once and cached.

* ``protein``: a RoBERTa-family masked-LM over amino acids (4 layers, hidden 128, a 25-token vocabulary: 20
  residues and 5 specials), trained on the real protein sequences of Biopython's test data (the sdist, fetched
  with ``pip download biopython==1.88 --no-binary :all:``; parsed here, Biopython is never imported or installed).
* ``code``: the same geometry with a 2000-token byte-level BPE, trained on Python's standard-library source
  (the code, on every machine with Python).
* ``sentiment``: a text classifier (negative / positive), the suite's trained masked-LM
  (``parity_tests/trained_roberta.py``) fine-tuned on the human-rated sentiment snippets of VADER's ICWSM-2014
  data set (movie-review, Amazon-review, New York Times and tweet snippets, each rated -4..4 by about 20 people;
  MIT-licensed, shipped in the ``vaderSentiment`` sdist's ``additional_resources/``, fetched with ``pip download
  vadersentiment==3.3.2 --no-binary :all:``; the wheel carries only the lexicon). Mean rating above 0.5 is
  positive, below -0.5 negative; the snippets between are dropped as ambiguous.

Each corpus is split by content hash: about a quarter held out (never trained on, never calibrated on).
Checkpoints are saved like a user's (``save_pretrained``, ``vocab.json`` / ``merges.txt``, ``model_type:
roberta``) under ``~/.cache/onnxport-tests``, trained with ``trained_roberta.train`` and keyed like it: on the
recipe (``recipe(kind)``) and the training text, not on this file's bytes.

    python -m benchmarks.int8_models protein|code|sentiment   # build (or find) one and print its directory
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

from parity_tests import trained_roberta

BIOPYTHON = "biopython==1.88"
VADER = "vadersentiment==3.3.2"
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
SEQUENCE = 128  # positions of GEOMETRY's table (130) less RoBERTa's padding offset
STEPS = {"protein": 500, "code": 300, "sentiment": 800}
WARMUP = {"protein": 50, "code": 50, "sentiment": 40}
LEARNING_RATE = {"protein": 1e-3, "code": 1e-3, "sentiment": 1e-3}
BATCH = 32
SENTIMENT_SEQUENCE = 64  # tokens per snippet (the suite model's position table: 64 + padding offset)
SENTIMENT_MARGIN = 0.5  # |mean rating| at least this, else the snippet is ambiguous and dropped
SENTIMENT_LABELS = ("negative", "positive")
CODE_VOCAB = 2000
CODE_MODULES = ("argparse", "csv", "dataclasses", "datetime", "difflib", "enum", "fractions", "functools",
                "inspect", "ipaddress", "pathlib", "pickle", "shutil", "statistics", "subprocess", "tarfile",
                "tempfile", "textwrap", "threading", "typing", "uuid", "zipfile/__init__", "configparser",
                "calendar", "heapq", "json/decoder", "json/encoder", "random", "string", "bisect", "contextlib",
                "copy", "locale", "queue", "shlex", "timeit", "trace", "weakref", "sched", "netrc", "gettext",
                "smtplib", "imaplib", "ftplib", "mailbox", "optparse", "pydoc", "socket", "logging/__init__")


def _root() -> Path:
    return Path(os.environ.get("ONNXPORT_TEST_CACHE", Path.home() / ".cache" / "onnxport-tests"))


def _held_out(text: str) -> bool:
    return hashlib.sha256(text.encode()).digest()[0] % 4 == 0


# ----------------------------------------------------------------------------- corpora
def _sdist(requirement: str) -> Path:
    """The source distribution of ``requirement`` (``name==version``) from the package registry, downloaded once."""
    wanted = requirement.replace("==", "-").lower() + ".tar.gz"  # sdist names keep the project's own case
    downloads = _root() / "downloads"

    def found() -> list[Path]:
        return [p for p in sorted(downloads.glob("*.tar.gz")) if p.name.lower() == wanted]

    if not found():
        downloads.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--no-binary", ":all:",
                        "-d", str(downloads)], check=True)
    return found()[0]


def _biopython_sdist() -> Path:
    return _sdist(BIOPYTHON)


@functools.lru_cache(maxsize=None)  # read once per process; callers copy, never mutate
def protein_sequences() -> list[str]:
    """Distinct protein sequences (20 standard residues only) from Biopython's test files: FASTA records,
    GenBank ``/translation`` qualifiers and SwissProt / EMBL ``SQ`` blocks; gaps and stops removed."""
    allowed = set(AMINO_ACIDS)
    out: dict[str, None] = {}

    def add(raw: str) -> None:
        seq = re.sub(r"[\s\d*.\-]", "", raw).upper()
        # Nucleotides (only ACGTUN) and low-complexity fragments are not proteins.
        if len(seq) >= 30 and set(seq) <= allowed and set(seq) - set("ACGTUN") and len(set(seq)) >= 12:
            out.setdefault(seq)

    with tarfile.open(_biopython_sdist()) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            if not member.isfile() or "/Tests/" not in member.name or member.size > 5_000_000:
                continue
            try:
                text = archive.extractfile(member).read().decode("ascii")
            except UnicodeDecodeError:
                continue
            if text.lstrip().startswith(">"):
                for record in text.split("\n>"):
                    add("".join(record.splitlines()[1:]))
            for translation in re.findall(r'/translation="([^"]+)"', text):
                add(translation)
            for block in re.findall(r"\nSQ   [^\n]*\n(.*?)\n//", text, re.S):
                add(block)
    return list(out)


@functools.lru_cache(maxsize=None)  # read once per process; callers copy, never mutate
def code_lines() -> list[str]:
    """Non-trivial source lines (comments and docstrings included, as they are) of standard-library modules."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out: dict[str, None] = {}
    for name in CODE_MODULES:
        path = stdlib / f"{name}.py"
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if 20 <= len(line) <= 200:
                    out.setdefault(line)
    return list(out)


@functools.lru_cache(maxsize=None)  # read once per process; callers copy, never mutate
def sentiment_snippets() -> list[tuple[str, int]]:
    """(snippet, label) pairs from VADER's human-rated ground truth: 0 negative, 1 positive (``SENTIMENT_LABELS``)."""
    import html
    import io

    out: dict[str, int] = {}
    with tarfile.open(_sdist(VADER)) as sdist:
        inner = next(m for m in sdist.getmembers() if m.name.endswith("additional_resources/hutto_ICWSM_2014.tar.gz"))
        with tarfile.open(fileobj=io.BytesIO(sdist.extractfile(inner).read())) as archive:
            for member in sorted(archive.getmembers(), key=lambda m: m.name):
                if not member.name.endswith("_GroundTruth.txt"):
                    continue
                for line in archive.extractfile(member).read().decode("utf-8", errors="replace").splitlines():
                    parts = line.split("\t")
                    if len(parts) < 3:
                        continue
                    rating, text = float(parts[1]), " ".join(html.unescape("\t".join(parts[2:])).split())
                    if abs(rating) >= SENTIMENT_MARGIN and len(text) >= 10:
                        out.setdefault(text, int(rating > 0))
    return list(out.items())


CORPORA = {"protein": protein_sequences, "code": code_lines, "sentiment": lambda: [t for t, _ in sentiment_snippets()]}
TASKS = {"protein": "fill-mask", "code": "fill-mask", "sentiment": "text-classification"}


def texts(kind: str, held_out: bool) -> list[str]:
    return [t for t in CORPORA[kind]() if _held_out(t) == held_out]


def labelled(held_out: bool) -> list[tuple[str, int]]:
    """The sentiment snippets with their labels, training side or held out."""
    return [(t, y) for t, y in sentiment_snippets() if _held_out(t) == held_out]


# ----------------------------------------------------------------------------- training
def _write_amino_acid_vocab(directory: Path) -> None:
    """A byte-level BPE with one token per residue and no merges: every residue is a token."""
    vocab = {t: i for i, t in enumerate(trained_roberta.SPECIAL_TOKENS + list(AMINO_ACIDS))}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")


def recipe(kind: str) -> dict:
    """What decides the trained weights besides the text (the cache key's parameters)."""
    out = {"kind": kind, "geometry": trained_roberta.GEOMETRY, "steps": STEPS[kind], "batch": BATCH,
           "seed": trained_roberta.SEED, "lr": LEARNING_RATE[kind], "warmup": WARMUP[kind],
           "special_tokens": trained_roberta.SPECIAL_TOKENS, "training_version": trained_roberta.TRAINING_VERSION}
    if kind == "sentiment":
        out.update(base=trained_roberta._fingerprint(), sequence=SENTIMENT_SEQUENCE, margin=SENTIMENT_MARGIN,
                   labels=SENTIMENT_LABELS, data=VADER)
    else:
        out.update(sequence=SEQUENCE, vocab=AMINO_ACIDS if kind == "protein" else CODE_VOCAB,
                   data=BIOPYTHON if kind == "protein" else "stdlib")
    return out


def build(kind: str, directory: Path, log=print) -> Path:
    if kind == "sentiment":
        return _build_classifier(directory, log)
    import torch
    from tokenizers import ByteLevelBPETokenizer

    from onnxport.configs import AutoConfig
    from onnxport.reference_models.pt import RobertaForMaskedLM

    directory.mkdir(parents=True, exist_ok=True)
    train = texts(kind, held_out=False)
    if kind == "protein":
        _write_amino_acid_vocab(directory)
        bpe = ByteLevelBPETokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    else:
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(train, vocab_size=CODE_VOCAB, min_frequency=2,
                                special_tokens=trained_roberta.SPECIAL_TOKENS, show_progress=False)
        bpe.save_model(str(directory))
    vocab_size = bpe.get_vocab_size()
    bos, eos, mask = (bpe.token_to_id(t) for t in ("<s>", "</s>", "<mask>"))
    stream = []
    for text in train:
        stream += [bos] + bpe.encode(text).ids + [eos]
    rows = len(stream) // SEQUENCE
    data = torch.tensor(stream[: rows * SEQUENCE]).view(rows, SEQUENCE)
    special = (data == bos) | (data == eos)
    config = AutoConfig.for_model("roberta", vocab_size=vocab_size, **trained_roberta.GEOMETRY)

    def masked_batch(generator):
        chosen = torch.randint(0, rows, (BATCH,), generator=generator)
        ids, labels = trained_roberta.mask_tokens(data[chosen], special[chosen], mask, vocab_size, generator)
        return {"input_ids": ids, "labels": labels}

    model, loss, seconds = trained_roberta.train(lambda: RobertaForMaskedLM(config), masked_batch,
                                                 steps=STEPS[kind], warmup=WARMUP[kind], lr=LEARNING_RATE[kind],
                                                 log=log, prefix=f"{kind} ")
    model.save_pretrained(directory)
    (directory / "training.json").write_text(json.dumps(
        {"kind": kind, "steps": STEPS[kind], "batch": BATCH, "sequence": SEQUENCE, "train_texts": len(train),
         "rows": rows, "final_loss": loss, "seconds": seconds, "key": _fingerprint(kind)}, indent=2))
    return directory


def _build_classifier(directory: Path, log=print) -> Path:
    """Fine-tune the suite's trained masked-LM (its encoder and tokenizer) as a two-label sentiment classifier."""
    import shutil

    import numpy as np
    import torch
    from tokenizers import ByteLevelBPETokenizer

    from onnxport.reference_models.pt import RobertaForSequenceClassification

    base = trained_roberta.cached_checkpoint(log=log)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(base / name, directory / name)
    bpe = ByteLevelBPETokenizer(str(base / "vocab.json"), str(base / "merges.txt"))
    bos, eos, pad = (bpe.token_to_id(t) for t in ("<s>", "</s>", "<pad>"))
    train = labelled(held_out=False)
    ids = np.full((len(train), SENTIMENT_SEQUENCE), pad, np.int64)
    for i, (text, _) in enumerate(train):
        row = [bos] + bpe.encode(text).ids[: SENTIMENT_SEQUENCE - 2] + [eos]
        ids[i, : len(row)] = row
    ids = torch.from_numpy(ids)
    attention = (ids != pad).long()
    labels = torch.tensor([y for _, y in train])

    def labelled_batch(generator):
        chosen = torch.randint(0, len(train), (BATCH,), generator=generator)
        return {"input_ids": ids[chosen], "attention_mask": attention[chosen], "labels": labels[chosen]}

    def make_model():
        return RobertaForSequenceClassification.from_pretrained(
            base, num_labels=len(SENTIMENT_LABELS), id2label=dict(enumerate(SENTIMENT_LABELS)),
            label2id={name: i for i, name in enumerate(SENTIMENT_LABELS)})

    model, loss, seconds = trained_roberta.train(make_model, labelled_batch, steps=STEPS["sentiment"],
                                                 warmup=WARMUP["sentiment"], lr=LEARNING_RATE["sentiment"],
                                                 log=log, prefix="sentiment ")
    model.save_pretrained(directory)
    held = labelled(held_out=True)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(held), 64):
            chunk = held[start:start + 64]
            enc = [[bos] + bpe.encode(t).ids[: SENTIMENT_SEQUENCE - 2] + [eos] for t, _ in chunk]
            width = max(map(len, enc))
            x = torch.tensor([row + [pad] * (width - len(row)) for row in enc])
            predicted = model(input_ids=x, attention_mask=(x != pad).long()).logits.argmax(-1)
            correct += int((predicted == torch.tensor([y for _, y in chunk])).sum())
    (directory / "training.json").write_text(json.dumps(
        {"kind": "sentiment", "steps": STEPS["sentiment"], "batch": BATCH, "sequence": SENTIMENT_SEQUENCE,
         "train_texts": len(train), "held_out_texts": len(held), "held_out_accuracy": correct / len(held),
         "positive_share": float(labels.float().mean()), "final_loss": loss, "seconds": seconds,
         "key": _fingerprint("sentiment")}, indent=2))
    return directory


@functools.lru_cache(maxsize=None)
def _fingerprint(kind: str) -> str:
    return trained_roberta.cache_key(recipe(kind), CORPORA[kind]())


def cached_checkpoint(kind: str, log=print) -> Path:
    from filelock import FileLock

    root = _root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"int8-{kind}-{_fingerprint(kind)}"
    with FileLock(str(target) + ".lock"):
        if not (target / "training.json").is_file():
            partial = root / f"{target.name}.partial"
            if partial.exists():
                import shutil

                shutil.rmtree(partial)
            build(kind, partial, log=log)
            partial.rename(target)
    return target


if __name__ == "__main__":
    for kind in sys.argv[1:] or list(CORPORA):
        print(cached_checkpoint(kind))
