"""The transformers tokenizer call API, written once for all six tokenizers.

`TokenizerBase` owns everything a user touches that is not family-specific:
argument resolution (padding / truncation strategies, max_length defaults),
output assembly into a `BatchEncoding` (encoding.py), tensor conversion, decode, special-token
attributes, and tokenizer_config.json / special_tokens_map.json I/O.

Two engines sit below it:
- `SlowTokenizerBase` (slow.py): truncation, overflow, special tokens and padding in
  Python, mirroring transformers' Python tokenizers (overflow comes back as
  `overflowing_tokens` / `num_truncated_tokens`, offsets are not available).
- `FastTokenizerBase` (fast.py): the same options handed to the `tokenizers` (Rust)
  backend, as transformers' fast tokenizers do (overflow windows become rows
  with `overflow_to_sample_mapping`).

A family supplies only data (file names, special tokens, pair layout) and the
piece that really differs: how text becomes tokens (slow) or how the Rust
pipeline is assembled from vocabulary files (fast).

A directory saved by transformers 5 is followed as transformers 5 behaves (default keys, extra special
tokens, tokenizer.json-only layout); versions.py has the rule that tells the releases apart.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

from .encoding import TENSOR_TYPES, VERY_LARGE_INTEGER, BatchEncoding, resolve_padding_and_truncation
from .versions import TRANSFORMERS5_MODEL_INPUT_NAMES, saved_by_major

SPECIAL_TOKEN_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
TOKENIZER_FILE = "tokenizer.json"
ADDED_TOKEN_FLAGS = ("special", "lstrip", "rstrip", "single_word", "normalized")


@dataclass(frozen=True)
class AddedTokenSpec:
    """A token matched whole in the text before the vocabulary model runs, with transformers' flags:
    `lstrip`/`rstrip` eat the whitespace on that side, `single_word` matches only between word
    boundaries, `normalized` matches the normalized text (lowercased, ...), `special` is skipped by
    decode(skip_special_tokens=True)."""

    content: str
    special: bool = True
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    normalized: bool = False

    @classmethod
    def read(cls, value, source: str = "the tokenizer configuration", **defaults) -> "AddedTokenSpec":
        """From a string, a config dict ({"content": ..., flags}) or a `tokenizers.AddedToken`."""
        if isinstance(value, str):
            return cls(value, **defaults)
        if isinstance(value, dict):
            if not isinstance(value.get("content"), str):
                raise ValueError(f"an added token in {source} has no string 'content': {value!r}")
            flags = {flag: bool(value[flag]) for flag in ADDED_TOKEN_FLAGS if value.get(flag) is not None}
            return cls(value["content"], **{**defaults, **flags})
        if hasattr(value, "content"):
            return cls(str(value.content), **{**defaults, **{flag: bool(getattr(value, flag)) for flag in
                                                             ADDED_TOKEN_FLAGS if hasattr(value, flag)}})
        raise TypeError(f"an added token must be a string, a dict or a tokenizers.AddedToken, got {value!r}")

    def to_rust(self):
        from tokenizers import AddedToken

        return AddedToken(self.content, single_word=self.single_word, lstrip=self.lstrip, rstrip=self.rstrip,
                          normalized=self.normalized, special=self.special)

    def as_config(self) -> dict:
        return asdict(self)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); fix or delete the file and save the tokenizer again"
        ) from error


def copy_files_into(directory: Path, *sources: str) -> list[Path]:
    """Copy vocabulary files into a save directory (no-op when saving over the source)."""
    written = []
    for source in sources:
        target = directory / Path(source).name
        if Path(source).resolve() != target.resolve():
            shutil.copyfile(source, target)
        written.append(target)
    return written


def _token_content(value) -> Optional[str]:
    """A special token as written in config files: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return None if value is None else str(value)


class TokenizerBase:
    """Shared API. Subclasses set the class attributes below and implement the engine hooks."""

    # --- family data -------------------------------------------------------------------------
    vocab_files: dict[str, str] = {}  # init argument -> file name in a pretrained directory
    default_special_tokens: dict[str, str] = {}
    model_input_names = ["input_ids", "attention_mask"]
    separators_between_pair = 1  # RoBERTa-style models put two separators between the texts of a pair
    second_sequence_type_id = 0  # BERT-style models mark the second text with token type 1
    lstrip_special_tokens = ("mask_token",)  # eat the space before these ("the <mask>" predicts " word")
    transformers_class_name = ""  # written as tokenizer_config.json's "tokenizer_class"
    init_config_keys: tuple[str, ...] = ()  # family options kept in tokenizer_config.json
    tokenizer_json_gap: Optional[str] = None  # what a tokenizer.json cannot hold of this tokenizer, if anything

    padding_side = "right"
    truncation_side = "right"
    pad_token_type_id = 0

    def __init__(self, model_max_length: int = VERY_LARGE_INTEGER, padding_side: str = "right",
                 truncation_side: str = "right", clean_up_tokenization_spaces: bool = False, **kwargs):
        for side_name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in ("left", "right"):
                raise ValueError(f"{side_name}={side!r}; use 'left' or 'right'")
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else int(model_max_length)
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._special_tokens = {}
        self._special_token_specs: dict[str, AddedTokenSpec] = {}
        for attribute in SPECIAL_TOKEN_ATTRIBUTES:
            value = kwargs.pop(attribute, self.default_special_tokens.get(attribute))
            self._special_tokens[attribute] = _token_content(value)
            self._set_special_token_spec(attribute, value)
        kwargs.pop("tokenizer_class", None)
        # tokenizer_config.json's {"id": {"content": ..., flags}}: ids and flags of the added tokens.
        configured = kwargs.pop("added_tokens_decoder", None) or {}
        try:
            self._configured_added_tokens = sorted(
                (int(index), AddedTokenSpec.read(value, "added_tokens_decoder")) for index, value in configured.items()
            )
        except (AttributeError, TypeError, ValueError) as error:
            raise ValueError(f"tokenizer_config.json's added_tokens_decoder is malformed ({error}); it maps "
                             'token ids to {"content": ..., "special": ..., "lstrip": ...} objects') from error
        self._user_added_tokens: list[AddedTokenSpec] = []
        # The transformers release whose behaviour this tokenizer follows (versions.py has the rule).
        self.transformers_major = saved_by_major(kwargs)
        additional = list(kwargs.pop("additional_special_tokens", None) or [])
        if isinstance(kwargs.get("extra_special_tokens"), list):  # 5.x's name and form (4.x's is a dict of names)
            additional += kwargs.pop("extra_special_tokens")
        self._additional_special_tokens: list[AddedTokenSpec] = list({
            spec.content: spec for spec in (
                AddedTokenSpec(**{**AddedTokenSpec.read(value, "additional_special_tokens").as_config(), "special": True})
                for value in additional)
        }.values())
        if kwargs.get("model_input_names") is not None:  # both releases take it from tokenizer_config.json
            self.model_input_names = list(kwargs["model_input_names"])
        elif self.transformers_major >= 5:
            self.model_input_names = list(TRANSFORMERS5_MODEL_INPUT_NAMES)
        self.init_kwargs = kwargs  # unused extras from config files are kept, not rejected

    # --- special tokens ------------------------------------------------------------------------
    def __getattr__(self, name):
        # bos_token, pad_token_id, ... are views of one dict so config I/O handles them in one place.
        specials = self.__dict__.get("_special_tokens")
        if specials is not None:
            if name in specials:
                return specials[name]
            if name.endswith("_id") and name[:-3] in specials:
                token = specials[name[:-3]]
                return None if token is None else self.convert_tokens_to_ids(token)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __setattr__(self, name, value):
        specials = self.__dict__.get("_special_tokens")
        if specials is not None and name in specials:
            specials[name] = _token_content(value)
            self._set_special_token_spec(name, value)
            self._special_tokens_changed()
        else:
            super().__setattr__(name, value)

    def _set_special_token_spec(self, attribute: str, value):
        if value is None:
            self._special_token_specs.pop(attribute, None)
            return
        # transformers' defaults: special tokens are matched un-normalized; the mask eats the space before it.
        spec = AddedTokenSpec.read(value, lstrip=attribute in self.lstrip_special_tokens, normalized=False)
        self._special_token_specs[attribute] = AddedTokenSpec(**{**spec.as_config(), "special": True})

    def _special_tokens_changed(self):
        """Engines that cache special ids or added tokens refresh them here."""

    def _added_token_plan(self) -> list[tuple[Optional[int], AddedTokenSpec]]:
        """The added tokens in the order transformers registers them: tokenizer_config.json's
        added_tokens_decoder (with its ids and flags), then the special tokens (bos, eos, unk, sep, pad, cls,
        mask) not among them, then add_tokens()' tokens. A token without an id keeps its vocabulary id, or
        gets the next id after the vocabulary (GPT-2's files have no <s>: it becomes 50257)."""
        plan, seen = [], set()
        for index, spec in self._configured_added_tokens:
            if spec.content not in seen:
                plan.append((index, spec))
                seen.add(spec.content)
        for spec in [*(self._special_token_specs[name] for name in SPECIAL_TOKEN_ATTRIBUTES
                       if name in self._special_token_specs), *self._additional_special_tokens,
                     *self._user_added_tokens]:
            if spec.content not in seen:
                plan.append((None, spec))
                seen.add(spec.content)
        return plan

    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Add tokens matched whole in text (strings, {"content": ...} dicts or tokenizers.AddedToken);
        returns how many were new. Resize the model's embeddings yourself when ids grow past it."""
        if isinstance(new_tokens, (str, dict)) or hasattr(new_tokens, "content"):
            new_tokens = [new_tokens]
        known = {spec.content for _, spec in self._added_token_plan()}
        added = 0
        for token in new_tokens:
            spec = AddedTokenSpec.read(token, "add_tokens", special=special_tokens, normalized=not special_tokens)
            if special_tokens and not spec.special:
                spec = AddedTokenSpec(**{**spec.as_config(), "special": True})
            if spec.content and spec.content not in known:
                added += self._add_token_spec(spec)
                known.add(spec.content)
            if spec.special and spec.content not in self.all_special_tokens:
                # transformers lists special added tokens among additional_special_tokens (skipped by decode).
                self._additional_special_tokens.append(spec)
        return added

    def add_special_tokens(self, special_tokens_dict: dict, replace_additional_special_tokens: bool = True) -> int:
        """Set special tokens by attribute name (bos_token, ..., mask_token); returns how many were new."""
        unknown = sorted(set(special_tokens_dict) - set(SPECIAL_TOKEN_ATTRIBUTES) - {"additional_special_tokens"})
        if unknown:
            raise NotImplementedError(
                f"add_special_tokens({unknown}): only {SPECIAL_TOKEN_ATTRIBUTES} and additional_special_tokens are "
                "supported; add other special tokens with add_tokens([...], special_tokens=True)"
            )
        known = {spec.content for _, spec in self._added_token_plan()}
        added = 0
        additional = special_tokens_dict.get("additional_special_tokens")
        if additional is not None:
            if replace_additional_special_tokens:
                self._additional_special_tokens = []
            added += self.add_tokens(list(additional), special_tokens=True)
            known = {spec.content for _, spec in self._added_token_plan()}
        for name, value in special_tokens_dict.items():
            if name == "additional_special_tokens":
                continue
            content = _token_content(value)
            unknown = content not in known and self.convert_tokens_to_ids(content) in (None, self.unk_token_id) \
                and content != self.unk_token
            setattr(self, name, value)
            spec = self._special_token_specs[name]
            if spec.content not in known:
                self._add_token_spec(spec)
                added += int(unknown)
                known.add(spec.content)
        return added

    def _add_token_spec(self, spec: AddedTokenSpec) -> int:
        """Register one added token with the engine; returns 1 if its id is new, else 0."""
        raise NotImplementedError

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return {spec.content: index for index, spec in sorted(self.added_tokens_decoder.items())}

    @property
    def added_tokens_decoder(self) -> dict[int, AddedTokenSpec]:
        raise NotImplementedError

    def get_added_vocab(self) -> dict[str, int]:
        return self.added_tokens_encoder

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        """1 where a special token is (or would be, once build_inputs_with_special_tokens adds them), else 0."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when already_has_special_tokens=True: "
                                 "pass the ids of the whole sequence as token_ids_0")
            special_ids = set(self.all_special_ids)
            return [1 if index in special_ids else 0 for index in token_ids_0]
        return self._with_special_tokens(list(token_ids_0), None if token_ids_1 is None else list(token_ids_1))[2]

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None):
        return self._with_special_tokens(list(token_ids_0), None if token_ids_1 is None else list(token_ids_1))[0]

    def create_token_type_ids_from_sequences(self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None):
        return self._with_special_tokens(list(token_ids_0), None if token_ids_1 is None else list(token_ids_1))[1]

    def _with_special_tokens(self, ids, pair_ids):
        """(input_ids, token_type_ids, special_tokens_mask) for `[cls] A [sep]` / `[cls] A [sep]{n} B [sep]`."""
        cls_id, sep_id = self.cls_token_id, self.sep_token_id
        input_ids = [cls_id, *ids, sep_id]
        special_mask = [1] + [0] * len(ids) + [1]
        type_ids = [0] * len(input_ids)
        if pair_ids is not None:
            extra_separators = self.separators_between_pair - 1
            input_ids += [sep_id] * extra_separators + pair_ids + [sep_id]
            special_mask += [1] * extra_separators + [0] * len(pair_ids) + [1]
            type_ids += [self.second_sequence_type_id] * (extra_separators + len(pair_ids) + 1)
        return input_ids, type_ids, special_mask

    @property
    def special_tokens_map(self) -> dict[str, str]:
        mapping = {name: token for name, token in self._special_tokens.items() if token is not None}
        if self._additional_special_tokens and self.transformers_major < 5:  # 5.x lists only the named ones
            mapping["additional_special_tokens"] = self.additional_special_tokens
        return mapping

    @property
    def additional_special_tokens(self) -> list[str]:
        return [spec.content for spec in self._additional_special_tokens]

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.additional_special_tokens)

    @property
    def extra_special_tokens(self) -> list[str]:
        """transformers 5's name for the additional special tokens."""
        return self.additional_special_tokens

    @property
    def all_special_tokens(self) -> list[str]:
        named = [token for name, token in self._special_tokens.items() if token is not None]
        return list(dict.fromkeys(named + self.additional_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 2 + (self.separators_between_pair if pair else 0)

    # --- vocabulary views ---------------------------------------------------------------------------
    def convert_tokens_to_ids(self, tokens: Union[str, Iterable[str]]):
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(token) for token in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        skipped = set(self.all_special_ids) if skip_special_tokens else ()
        return [self._id_to_token(int(i)) for i in ids if int(i) not in skipped]

    # --- encoding ----------------------------------------------------------------------------------
    def __call__(self, text=None, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
                 max_length: Optional[int] = None, stride: int = 0, pad_to_multiple_of: Optional[int] = None,
                 padding_side: Optional[str] = None, return_tensors: Optional[str] = None,
                 return_token_type_ids: Optional[bool] = None, return_attention_mask: Optional[bool] = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_offsets_mapping: bool = False, return_length: bool = False, verbose: bool = True,
                 is_split_into_words: bool = False, **kwargs) -> BatchEncoding:
        if kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
        if text is None:
            raise ValueError("text is required: a string, a list of strings, or a list of (text, pair) tuples")
        if is_split_into_words:
            # Words instead of texts: a list of words is one text, a list of such lists a batch.
            text_is_words = isinstance(text, (list, tuple)) and all(isinstance(w, str) for w in text)
            batched = not text_is_words
            pairs = list(zip(text, text_pair if text_pair is not None else [None] * len(text))) if batched else \
                [(text, text_pair)]
            for first, second in pairs:
                for words in (first, second):
                    if words is not None and not (isinstance(words, (list, tuple))
                                                  and all(isinstance(w, str) for w in words)):
                        raise TypeError("with is_split_into_words=True pass a list of words (str) per text, "
                                        f"or a list of such lists; got {type(words).__name__}")
            pairs = [(list(first), None if second is None else list(second)) for first, second in pairs]
            self._check_split_into_words()
        elif isinstance(text, (list, tuple)):
            batched = True
            if text_pair is not None:
                if not isinstance(text_pair, (list, tuple)) or len(text_pair) != len(text):
                    raise ValueError("text_pair must be a list with one pair text per text in the batch")
                pairs = list(zip(text, text_pair))
            else:
                pairs = [tuple(item) if isinstance(item, (list, tuple)) else (item, None) for item in text]
        else:
            batched = False
            # transformers' fast classes drop an empty second text of an unbatched call; the Python ones keep it.
            pairs = [(text, None if text_pair == "" and self.is_fast else text_pair)]
        for first, second in pairs if not is_split_into_words else ():
            if not isinstance(first, str) or not (second is None or isinstance(second, str)):
                raise TypeError(f"expected str inputs, got {type(first).__name__} / {type(second).__name__}; "
                                "for lists of words pass is_split_into_words=True")
        if return_tensors is not None and return_tensors not in TENSOR_TYPES:
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use one of {TENSOR_TYPES} or None")
        padding_side = padding_side or self.padding_side
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; use 'left' or 'right'")
        padding, truncation, max_length = resolve_padding_and_truncation(
            padding, truncation, max_length, pad_to_multiple_of, self.model_max_length, self.pad_token
        )
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        options = dict(
            add_special_tokens=add_special_tokens, padding=padding, truncation=truncation, max_length=max_length,
            stride=stride, pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
            return_token_type_ids=return_token_type_ids, return_attention_mask=return_attention_mask,
            return_overflowing_tokens=return_overflowing_tokens, return_special_tokens_mask=return_special_tokens_mask,
            return_offsets_mapping=return_offsets_mapping, return_length=return_length,
            is_split_into_words=is_split_into_words,
        )
        columns, encodings = self._encode_batch(pairs, **options)
        realign = None
        if isinstance(encodings, tuple):  # (encodings without offsets, how to redo them with offsets)
            encodings, realign = encodings
        # An unbatched call returns one row without the batch axis, unless tensors or overflow rows were asked for.
        if not batched and return_tensors is None and not self._overflow_adds_rows(return_overflowing_tokens):
            columns = {key: self._unbatch(values) for key, values in columns.items()}
        return BatchEncoding(columns, encodings, tensor_type=return_tensors, realign=realign)

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, **kwargs) -> list[int]:
        return self(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs, **kwargs) -> BatchEncoding:
        return self(list(batch_text_or_text_pairs), **kwargs)

    def _overflow_adds_rows(self, return_overflowing_tokens: bool) -> bool:
        return False

    def _pad_rows(self, rows: list[dict], padding: str, max_length, pad_to_multiple_of, padding_side: str):
        """Pad each row's per-token lists in place to the batch's longest row or max_length."""
        target = None
        if padding == "longest":
            target = max((len(row["input_ids"]) for row in rows), default=0)
        elif padding == "max_length":
            target = max_length
        if target is not None and pad_to_multiple_of and target % pad_to_multiple_of:
            target = (target // pad_to_multiple_of + 1) * pad_to_multiple_of
        if target is None:
            return
        pad_values = {"input_ids": self.pad_token_id, "token_type_ids": self.pad_token_type_id,
                      "special_tokens_mask": 1, "attention_mask": 0}
        for row in rows:
            missing = target - len(row["input_ids"])
            if missing > 0:
                for key, value in pad_values.items():
                    if key in row:
                        fill = [value] * missing
                        row[key] = fill + list(row[key]) if padding_side == "left" else list(row[key]) + fill

    def pad(self, encoded_inputs, padding=True, max_length: Optional[int] = None,
            pad_to_multiple_of: Optional[int] = None, padding_side: Optional[str] = None,
            return_attention_mask: Optional[bool] = None, return_tensors: Optional[str] = None,
            verbose: bool = True) -> BatchEncoding:
        """Pad already-tokenized rows (a dict of lists, a list of dicts, or one row), as data collators call it."""
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], dict):
            encoded_inputs = {key: [row[key] for row in encoded_inputs] for key in encoded_inputs[0]}
        if "input_ids" not in encoded_inputs:
            raise ValueError(f"pad() needs input_ids among the inputs; got keys {sorted(encoded_inputs)}")
        values = {key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in encoded_inputs.items()}
        ids = values["input_ids"]
        single = not ids or not isinstance(ids[0], (list, tuple))
        if single:
            values = {key: [value] for key, value in values.items()}
        padding, _, max_length = resolve_padding_and_truncation(
            padding, False, max_length, pad_to_multiple_of, self.model_max_length, self.pad_token)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        count = len(values["input_ids"])
        rows = [{key: list(value[i]) if isinstance(value[i], (list, tuple)) else value[i]
                 for key, value in values.items()} for i in range(count)]
        for row in rows:
            if return_attention_mask and "attention_mask" not in row:
                row["attention_mask"] = [1] * len(row["input_ids"])
        self._pad_rows(rows, padding, max_length, pad_to_multiple_of, padding_side or self.padding_side)
        columns = {key: [row[key] for row in rows] for key in rows[0]} if rows else {"input_ids": []}
        if single:
            columns = {key: value[0] for key, value in columns.items()}
        return BatchEncoding(columns, tensor_type=return_tensors)

    def _check_split_into_words(self):
        """Families that cannot take pre-split words in their current setup raise here."""

    @staticmethod
    def _unbatch(values: list):
        return values[0]

    # --- decoding ----------------------------------------------------------------------------------
    def decode(self, token_ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: Optional[bool] = None, **kwargs) -> str:
        if hasattr(token_ids, "tolist"):  # numpy / torch / tf / jax arrays, without importing the framework
            token_ids = token_ids.tolist()
        elif hasattr(token_ids, "numpy"):
            token_ids = token_ids.numpy().tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        text = self._decode_ids([int(i) for i in token_ids], skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: Optional[bool] = None, **kwargs) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in sequences]

    @staticmethod
    def clean_up_tokenization(text: str) -> str:
        """Undo the spaces a word-level join leaves before punctuation and English contractions."""
        for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                               (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
            text = text.replace(spaced, joined)
        return text

    # --- files -------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], **kwargs):
        directory = Path(directory)
        if not directory.is_dir():
            raise OSError(f"{directory} is not a directory; from_pretrained needs a local tokenizer directory")
        config = {}
        special_map = directory / SPECIAL_TOKENS_MAP_FILE
        if special_map.is_file():
            config.update(read_json(special_map))
        tokenizer_config = directory / TOKENIZER_CONFIG_FILE
        if tokenizer_config.is_file():
            config.update(read_json(tokenizer_config))
        config.update(kwargs)
        files = {arg: directory / name for arg, name in cls._file_names().items() if (directory / name).is_file()}
        files = cls._usable_files(files, directory)
        return cls(**{arg: str(path) for arg, path in files.items()}, **config)

    @classmethod
    def _file_names(cls) -> dict[str, str]:
        return dict(cls.vocab_files)

    @classmethod
    def _has_required_files(cls, files: dict) -> bool:
        return all(arg in files for arg in cls.vocab_files)

    @classmethod
    def _usable_files(cls, files: dict, directory: Path) -> dict:
        """The files found in a directory that the class is built from; raises when they do not suffice."""
        if not cls._has_required_files(files):
            wanted = " or ".join(cls._file_names().values())
            raise FileNotFoundError(
                f"no vocabulary for {cls.__name__} in {directory}: expected {wanted}; "
                "save the tokenizer there with save_pretrained or copy its vocabulary files in"
            )
        return files

    def save_pretrained(self, directory: Union[str, os.PathLike]) -> tuple[str, ...]:
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise OSError(f"{directory} exists and is not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        # As transformers writes them: flags in tokenizer_config.json's added_tokens_decoder (the special tokens
        # there by name only), and special_tokens_map.json with each special token's flags.
        special_tokens = {}
        for name, content in self.special_tokens_map.items():
            if name == "additional_special_tokens":
                special_tokens[name] = content
                continue
            flags = {key: value for key, value in self._special_token_specs[name].as_config().items()
                     if key != "special"}
            plain = not any(flags[key] for key in ("lstrip", "rstrip", "single_word", "normalized"))
            special_tokens[name] = content if plain else flags
        config = {
            **{key: value for key, value in self.init_kwargs.items() if not key.endswith("_file")},
            **{key: getattr(self, key) for key in self.init_config_keys},
            **self.special_tokens_map,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "tokenizer_class": self.transformers_class_name,
            "added_tokens_decoder": {str(index): spec.as_config() for index, spec in self.added_tokens_decoder.items()},
        }
        if self._additional_special_tokens and self.transformers_major >= 5:
            config["extra_special_tokens"] = self.additional_special_tokens
        written = [directory / TOKENIZER_CONFIG_FILE, directory / SPECIAL_TOKENS_MAP_FILE]
        written[0].write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written[1].write_text(json.dumps(special_tokens, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written += self._save_vocabulary(directory)
        return tuple(str(path) for path in written)

    # --- engine / family hooks -----------------------------------------------------------------
    def _encode_batch(self, pairs, **options) -> tuple[dict[str, list], Optional[list]]:
        raise NotImplementedError

    def _decode_ids(self, ids: list[int], skip_special_tokens: bool) -> str:
        raise NotImplementedError

    def _token_to_id(self, token: str) -> int:
        raise NotImplementedError

    def _id_to_token(self, index: int) -> Optional[str]:
        raise NotImplementedError

    def _save_vocabulary(self, directory: Path) -> list[Path]:
        raise NotImplementedError

    def __repr__(self):
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
                f"padding_side={self.padding_side!r}, special_tokens={self.special_tokens_map})")
