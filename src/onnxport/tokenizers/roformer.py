"""RoFormer: jieba word segmentation in front of BERT's WordPiece (vocab.txt).

jieba cuts Chinese text into words; a word found in the vocabulary stays whole,
any other word goes through BERT's basic tokenization (so Chinese falls apart
into characters, Latin text into lowercased, punctuation-split words) and
WordPiece.

Fast variant: jieba runs as a Python `PreTokenizer.custom` inside the Rust
pipeline (as in transformers), which keeps character offsets into the original
text. A custom pre-tokenizer cannot be serialized, so tokenizer.json is saved
with a `BertPreTokenizer` in its place: the `tokenizers` library alone loads
that file and tokenizes like BERT (no jieba); `RoFormerTokenizerFast` restores
the jieba step when it loads the file.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Optional

from .base import TokenizerBase, copy_files_into
from .fast import FastTokenizerBase
from .slow import SlowTokenizerBase
from .versions import wordpiece_vocab

CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in CJK_RANGES)


def is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def is_punctuation(char: str) -> bool:
    # BERT counts all non-alphanumeric ASCII (e.g. "$", "^") as punctuation, not only Unicode's P* classes.
    code = ord(char)
    return 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126 or \
        unicodedata.category(char).startswith("P")


def load_vocab(vocab_file: str) -> dict[str, int]:
    try:
        lines = Path(vocab_file).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise ValueError(f"{vocab_file} is not UTF-8 text ({error}); a vocab.txt has one token per line") from error
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ValueError(f"{vocab_file} is empty; a vocab.txt has one token per line")
    return {token: index for index, token in enumerate(lines)}


class BasicTokenizer:
    """BERT's pre-WordPiece step: clean, space out CJK characters, lowercase/strip accents, split punctuation."""

    def __init__(self, do_lower_case=True, tokenize_chinese_chars=True, strip_accents=None, never_split=()):
        self.do_lower_case = do_lower_case
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents
        self.never_split = set(never_split)

    def tokenize(self, text: str) -> list[str]:
        text = "".join(" " if is_whitespace(c) else c for c in text
                       if not (c == "\0" or c == "\ufffd" or is_control(c)))
        if self.tokenize_chinese_chars:
            text = "".join(f" {c} " if is_cjk(c) else c for c in text)
        words = []
        for word in unicodedata.normalize("NFC", text).split():
            if word in self.never_split:
                words.append(word)
                continue
            if self.do_lower_case:
                word = word.lower()
            # Accents go with lowercasing unless strip_accents is explicitly False.
            if self.strip_accents or (self.do_lower_case and self.strip_accents is None):
                word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
            words.extend(self._split_punctuation(word))
        return words

    @staticmethod
    def _split_punctuation(word: str) -> list[str]:
        pieces, current = [], ""
        for char in word:
            if is_punctuation(char):
                pieces += [current, char] if current else [char]
                current = ""
            else:
                current += char
        return pieces + [current] if current else pieces


def wordpiece(word: str, vocab: dict, unk_token: str, max_chars: int = 100) -> list[str]:
    """Greedy longest-match-first; a word with any unmatchable rest becomes one unknown token."""
    if len(word) > max_chars:
        return [unk_token]
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            candidate = word[start:end] if start == 0 else "##" + word[start:end]
            if candidate in vocab:
                pieces.append(candidate)
                start = end
                break
        else:
            return [unk_token]
    return pieces


class RoFormerFamily(TokenizerBase):
    vocab_files = {"vocab_file": "vocab.txt"}
    default_special_tokens = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                              "cls_token": "[CLS]", "mask_token": "[MASK]"}
    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    second_sequence_type_id = 1
    lstrip_special_tokens = ()
    transformers_class_name = "RoFormerTokenizer"
    init_config_keys = ("do_lower_case", "tokenize_chinese_chars", "strip_accents")

    def __init__(self, do_lower_case: bool = True, tokenize_chinese_chars: bool = True, strip_accents=None, **kwargs):
        self.do_lower_case = do_lower_case
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents
        super().__init__(**kwargs)


class RoFormerTokenizer(RoFormerFamily, SlowTokenizerBase):
    """Python jieba (rjieba) + BasicTokenizer + WordPiece; the vocabulary from vocab.txt, or from a tokenizer.json's
    WordPiece model when there is no vocab.txt (transformers 5's directories)."""

    reads_tokenizer_json = True

    def __init__(self, vocab_file: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        import rjieba

        self.jieba = rjieba
        self.vocab_file = vocab_file
        if vocab_file is not None:
            self.vocab = load_vocab(vocab_file)
        elif self.tokenizer_json is not None:
            self.vocab = wordpiece_vocab(self.tokenizer_json, self.tokenizer_file, type(self).__name__)
        else:
            raise FileNotFoundError(f"{type(self).__name__} needs vocab_file (vocab.txt) or tokenizer_file")
        self.ids_to_tokens = {index: token for token, index in self.vocab.items()}
        self.basic_tokenizer = BasicTokenizer(self.do_lower_case, self.tokenize_chinese_chars, self.strip_accents,
                                              never_split=self.all_special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _base_vocab(self):
        return dict(self.vocab)

    def _tokenize(self, text):
        tokens = []
        for word in self.jieba.cut(text, False):
            if word in self.vocab:
                tokens.append(word)
            else:
                for piece in self.basic_tokenizer.tokenize(word):
                    tokens += [piece] if piece in self.basic_tokenizer.never_split else \
                        wordpiece(piece, self.vocab, self.unk_token)
        return tokens

    def _vocab_id(self, token):
        return self.vocab.get(token)

    def _vocab_token(self, index):
        return self.ids_to_tokens.get(index, self.unk_token)

    def convert_tokens_to_string(self, tokens):
        return " ".join(tokens).replace(" ##", "").strip()

    def _save_vocabulary(self, directory: Path):
        if self.vocab_file is not None:
            return copy_files_into(directory, self.vocab_file)
        target = directory / self.vocab_files["vocab_file"]
        target.write_text("".join(token + "\n" for token in self.vocab), encoding="utf-8")  # in id order
        return [target]


class JiebaPreTokenizer:
    """jieba inside the Rust pipeline: split the normalized string at jieba's word boundaries; a word not in the
    vocabulary is further cut where BERT's CJK handling would put spaces (so it falls apart into characters)."""

    def __init__(self, vocab: dict[str, int]):
        import rjieba
        from tokenizers import normalizers

        self.jieba = rjieba
        self.vocab = vocab
        self.cjk_spacer = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=True,
                                                     strip_accents=False, lowercase=False)

    def jieba_split(self, index, normalized):
        pieces = []
        for word, start, _end in self.jieba.tokenize(str(normalized), hmm=False):
            if word in self.vocab:
                pieces.append(normalized[start:_end])
                continue
            for part in self.cjk_spacer.normalize_str(word).split():
                pieces.append(normalized[start:start + len(part)])
                start += len(part)
        return pieces

    def pre_tokenize(self, pretokenized):
        pretokenized.split(self.jieba_split)


class RoFormerTokenizerFast(RoFormerFamily, FastTokenizerBase):
    """WordPiece in the `tokenizers` library with a runtime jieba pre-tokenizer (see the module docstring)."""

    tokenizer_json_gap = ("RoFormer's jieba word segmentation is Python code that tokenizer.json cannot hold: "
                          "tokenizers.Tokenizer.from_file and transformers.js split Chinese text by BERT's rules "
                          "instead, into other tokens (onnxport and transformers restore jieba when they load the "
                          "directory)")

    def _build_backend(self, vocab_file):
        from tokenizers import Tokenizer, decoders, models, normalizers, processors

        backend = Tokenizer(models.WordPiece(load_vocab(vocab_file), unk_token=self.unk_token))
        backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False,
                                                        strip_accents=self.strip_accents, lowercase=self.do_lower_case)
        cls, sep = self.cls_token, self.sep_token
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
        )
        backend.decoder = decoders.WordPiece(prefix="##")
        return backend

    def _prepare_backend(self, backend):
        from tokenizers import normalizers
        from tokenizers.pre_tokenizers import PreTokenizer

        # Options passed to from_pretrained win over the ones frozen in a tokenizer.json.
        state = json.loads(backend.normalizer.__getstate__()) if backend.normalizer is not None else {}
        if state.get("type") == "BertNormalizer" and (state.get("lowercase"), state.get("strip_accents")) != (
            self.do_lower_case, self.strip_accents
        ):
            backend.normalizer = normalizers.BertNormalizer(
                clean_text=state.get("clean_text", True), handle_chinese_chars=state.get("handle_chinese_chars", False),
                strip_accents=self.strip_accents, lowercase=self.do_lower_case,
            )
        backend.pre_tokenizer = PreTokenizer.custom(JiebaPreTokenizer(backend.get_vocab()))
        return backend

    def _serialized_backend(self) -> str:
        from tokenizers.pre_tokenizers import BertPreTokenizer

        jieba = self._tokenizer.pre_tokenizer
        self._tokenizer.pre_tokenizer = BertPreTokenizer()
        try:
            return self._tokenizer.to_str()
        finally:
            self._tokenizer.pre_tokenizer = jieba

    def _save_slow_vocabulary(self, directory):
        return [Path(path) for path in self._tokenizer.model.save(str(directory))]
