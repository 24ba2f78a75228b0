"""RoBERTa's byte-level BPE (used by RoBERTa-PreLayerNorm): vocab.json + merges.txt.

Text is split by GPT-2's regex, every UTF-8 byte is mapped to a printable
character, and BPE merges are applied per word. `add_prefix_space` makes the
first word look like a word in the middle of a sentence ("Ġword").
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

from .base import TokenizerBase, copy_files_into, read_json
from .fast import FastTokenizerBase
from .slow import SlowTokenizerBase
from .versions import bpe_vocab_and_merges

# GPT-2's pre-tokenization: contractions, letter runs, digit runs, other symbols, whitespace.
PRETOKENIZE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=None)
def byte_to_char() -> dict[int, str]:
    """Printable bytes stand for themselves; the others are moved to code points from 256 up, in order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    shifted = 256
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(shifted)
            shifted += 1
    return mapping


def read_bpe_files(vocab_file: str, merges_file: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = read_json(Path(vocab_file))
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ValueError(f"{vocab_file} must map tokens to integer ids")
    merges = []
    for number, line in enumerate(Path(merges_file).read_text(encoding="utf-8").split("\n"), start=1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{merges_file}:{number}: expected two space-separated symbols, got {line!r}")
        merges.append((parts[0], parts[1]))
    return vocab, merges


class RobertaFamily(TokenizerBase):
    vocab_files = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
    default_special_tokens = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                              "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
    separators_between_pair = 2
    transformers_class_name = "RobertaTokenizer"
    init_config_keys = ("add_prefix_space", "trim_offsets")

    def __init__(self, add_prefix_space: bool = False, trim_offsets: bool = True, errors: str = "replace", **kwargs):
        self.add_prefix_space = add_prefix_space
        self.trim_offsets = trim_offsets
        self.errors = errors
        super().__init__(**kwargs)


class RobertaTokenizer(RobertaFamily, SlowTokenizerBase):
    """Pure-Python byte-level BPE; vocabulary and merges from vocab.json + merges.txt, or from a tokenizer.json's
    BPE model when those are absent (transformers 5's directories)."""

    reads_tokenizer_json = True

    def __init__(self, vocab_file: Optional[str] = None, merges_file: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_file, self.merges_file = vocab_file, merges_file
        if vocab_file is not None and merges_file is not None:
            self.encoder, merges = read_bpe_files(vocab_file, merges_file)
        elif self.tokenizer_json is not None:
            self.encoder, merges = bpe_vocab_and_merges(self.tokenizer_json, self.tokenizer_file, type(self).__name__)
            self.vocab_file = self.merges_file = None
        else:
            raise FileNotFoundError(f"{type(self).__name__} needs vocab_file and merges_file (vocab.json, merges.txt) "
                                    "or tokenizer_file")
        self.merges = merges
        self.decoder = {index: token for token, index in self.encoder.items()}
        self.merge_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.char_to_byte = {char: b for b, char in byte_to_char().items()}
        try:
            import regex  # GPT-2's pattern needs \p{L} / \p{N} classes, which the stdlib re lacks
        except ImportError as error:
            raise ImportError("RobertaTokenizer needs the `regex` package: pip install regex "
                              "(or use RobertaTokenizerFast)") from error

        self.pretokenize = regex.compile(PRETOKENIZE_PATTERN)
        self._bpe_cache: dict[str, list[str]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _base_vocab(self):
        return dict(self.encoder)

    def _prepare_text(self, text, is_split_into_words=False):
        prefix = self.add_prefix_space or is_split_into_words
        return " " + text if prefix and text and not text[0].isspace() else text

    def _bpe(self, word: str) -> list[str]:
        cached = self._bpe_cache.get(word)
        if cached is not None:
            return cached
        symbols = list(word)
        while len(symbols) > 1:
            best = min(zip(symbols, symbols[1:]), key=lambda pair: self.merge_ranks.get(pair, float("inf")))
            if best not in self.merge_ranks:
                break
            merged, i = [], 0
            while i < len(symbols):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        self._bpe_cache[word] = symbols
        return symbols

    def _tokenize(self, text):
        to_char = byte_to_char()
        tokens = []
        for word in self.pretokenize.findall(text):
            tokens.extend(self._bpe("".join(to_char[b] for b in word.encode("utf-8"))))
        return tokens

    def _vocab_id(self, token):
        return self.encoder.get(token)

    def _vocab_token(self, index):
        return self.decoder.get(index)

    def convert_tokens_to_string(self, tokens):
        return bytes(self.char_to_byte[char] for char in "".join(tokens)).decode("utf-8", errors=self.errors)

    def _save_vocabulary(self, directory: Path):
        if self.vocab_file is not None:
            return copy_files_into(directory, self.vocab_file, self.merges_file)
        vocab_target, merges_target = (directory / self.vocab_files[arg] for arg in ("vocab_file", "merges_file"))
        vocab_target.write_text(json.dumps(self.encoder, ensure_ascii=False), encoding="utf-8")
        merges_target.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges), encoding="utf-8")
        return [vocab_target, merges_target]


class RobertaTokenizerFast(RobertaFamily, FastTokenizerBase):
    """The same BPE in the `tokenizers` library; RobertaProcessing trims spaces out of offsets."""

    def _build_backend(self, vocab_file, merges_file):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        vocab, merges = read_bpe_files(vocab_file, merges_file)
        backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                       end_of_word_suffix="", fuse_unk=False))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=self.add_prefix_space)
        backend.decoder = decoders.ByteLevel()
        return backend  # the post-processor needs the special tokens' ids: _prepare_backend, once they are added

    def _check_split_into_words(self):
        if not self.add_prefix_space:
            raise ValueError(
                f"{type(self).__name__} takes pre-split words only when built with add_prefix_space=True "
                "(each word is then encoded as a word inside a sentence, as transformers does): "
                "from_pretrained(..., add_prefix_space=True)"
            )

    def _prepare_backend(self, backend):
        """add_prefix_space / trim_offsets given to from_pretrained win over a tokenizer.json's (as in
        transformers): the ByteLevel pre-tokenizer and RobertaProcessing (which trims offsets) follow them."""
        from tokenizers import pre_tokenizers, processors

        state = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer is not None else {}
        if state.get("type") == "ByteLevel" and state.get("add_prefix_space") != self.add_prefix_space:
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=self.add_prefix_space,
                                                             use_regex=state.get("use_regex", True))
        state = json.loads(backend.post_processor.__getstate__()) if backend.post_processor is not None else None
        if state is None or (state.get("type") == "RobertaProcessing" and (
                state.get("add_prefix_space"), state.get("trim_offsets")) != (self.add_prefix_space, self.trim_offsets)):
            state = state or {}
            sep = tuple(state.get("sep") or (self.sep_token, backend.token_to_id(self.sep_token)))
            cls = tuple(state.get("cls") or (self.cls_token, backend.token_to_id(self.cls_token)))
            # sep and cls go by position: tokenizers 0.23 renamed the `cls` keyword to `cls_token`.
            backend.post_processor = processors.RobertaProcessing(
                sep, cls, trim_offsets=self.trim_offsets, add_prefix_space=self.add_prefix_space)
        return backend

    def _save_slow_vocabulary(self, directory):
        return [Path(path) for path in self._tokenizer.model.save(str(directory))]
