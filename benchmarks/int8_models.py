"""Small masked-LMs trained here on real data the team did not tune int8 on (issue 27), built once and cached.

* ``protein``: a RoBERTa-family masked-LM over amino acids (4 layers, hidden 128, a 25-token vocabulary: 20
  residues and 5 specials), trained on the real protein sequences of Biopython's test data (the sdist, fetched
  with ``pip download biopython==1.88 --no-binary :all:``; parsed here, Biopython is never imported or installed).
* ``code``: the same geometry with a 2000-token byte-level BPE, trained on Python's standard-library source
  (the code, on every machine with Python).

Each corpus is split by content hash: about a quarter held out (never trained on, never calibrated on).
Checkpoints are saved like a user's (``save_pretrained``, ``vocab.json`` / ``merges.txt``, ``model_type:
roberta``) under ``~/.cache/onnxport-tests`` keyed by this file's content, like ``parity_tests/trained_roberta.py``.

    python -m benchmarks.int8_models protein|code   # build (or find) one and print its directory
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import time
from pathlib import Path

from parity_tests import trained_roberta

BIOPYTHON = "biopython==1.88"
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
SEQUENCE = 128  # positions of GEOMETRY's table (130) less RoBERTa's padding offset
STEPS = {"protein": 500, "code": 300}
BATCH = 32
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
def _biopython_sdist() -> Path:
    downloads = _root() / "downloads"
    found = sorted(downloads.glob("biopython-*.tar.gz"))
    if not found:
        downloads.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", BIOPYTHON, "--no-deps", "--no-binary", ":all:",
                        "-d", str(downloads)], check=True)
        found = sorted(downloads.glob("biopython-*.tar.gz"))
    return found[-1]


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


CORPORA = {"protein": protein_sequences, "code": code_lines}


def texts(kind: str, held_out: bool) -> list[str]:
    return [t for t in CORPORA[kind]() if _held_out(t) == held_out]


# ----------------------------------------------------------------------------- training
def _write_amino_acid_vocab(directory: Path) -> None:
    """A byte-level BPE with one token per residue and no merges: every residue is a token."""
    vocab = {t: i for i, t in enumerate(trained_roberta.SPECIAL_TOKENS + list(AMINO_ACIDS))}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")


def build(kind: str, directory: Path, log=print) -> Path:
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
    steps = STEPS[kind]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    config = AutoConfig.for_model("roberta", vocab_size=vocab_size, **trained_roberta.GEOMETRY)
    model = RobertaForMaskedLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 50) * max(0.1, 1 - step / steps))
    start = time.perf_counter()
    for step in range(steps):
        batch = torch.randint(0, rows, (BATCH,), generator=generator)
        ids, labels = trained_roberta.mask_tokens(data[batch], special[batch], mask, vocab_size, generator)
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"{kind} step {step}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f}s)")
    torch.set_num_threads(threads)
    model.eval().save_pretrained(directory)
    (directory / "training.json").write_text(json.dumps(
        {"kind": kind, "steps": steps, "batch": BATCH, "sequence": SEQUENCE, "train_texts": len(train),
         "rows": rows, "final_loss": float(loss.item()), "seconds": time.perf_counter() - start}, indent=2))
    return directory


def _fingerprint() -> str:
    return hashlib.sha256(Path(__file__).read_bytes() + Path(trained_roberta.__file__).read_bytes()
                          + sys.version.encode()).hexdigest()[:16]


def cached_checkpoint(kind: str, log=print) -> Path:
    from filelock import FileLock

    root = _root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"int8-{kind}-{_fingerprint()}"
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
