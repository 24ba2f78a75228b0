"""The Python tokenizer engine, mirroring transformers' Python ("slow") tokenizers.

Truncation, overflow, special tokens, padding and added tokens are done here in Python; a family supplies
how text becomes tokens and its vocabulary lookups.
"""

from __future__ import annotations

import logging
import re
from typing import Optional

from ..errors import ModelFileError
from .base import TOKENIZER_FILE, AddedTokenSpec, TokenizerBase
from .versions import added_tokens_decoder, read_tokenizer_json

logger = logging.getLogger(__name__)


class SlowTokenizerBase(TokenizerBase):
    """Python engine. Families implement `_tokenize` (text without added tokens -> tokens), `_vocab_id`,
    `_vocab_token`, `_base_vocab` and `convert_tokens_to_string`; added tokens (special tokens, tokens
    missing from the vocabulary files, add_tokens()) are handled here for all of them."""

    do_lower_case = False
    is_fast = False
    # Whether the family can take its vocabulary from a tokenizer.json when its own files are absent (a directory
    # saved by transformers 5 holds only tokenizer.json + tokenizer_config.json; versions.py).
    reads_tokenizer_json = False

    def __init__(self, tokenizer_file: Optional[str] = None, **kwargs):
        # The parsed tokenizer.json when the vocabulary comes from it; its added tokens (ids and flags) stand in
        # for tokenizer_config.json's added_tokens_decoder, which transformers 5 no longer writes.
        self.tokenizer_json = None
        if tokenizer_file is not None:
            self.tokenizer_json = read_tokenizer_json(tokenizer_file)
            if not kwargs.get("added_tokens_decoder"):
                kwargs["added_tokens_decoder"] = added_tokens_decoder(self.tokenizer_json)
        self.tokenizer_file = tokenizer_file
        super().__init__(**kwargs)

    @classmethod
    def _file_names(cls):
        return {**cls.vocab_files, "tokenizer_file": TOKENIZER_FILE}

    @classmethod
    def _usable_files(cls, files, directory):
        """The vocabulary files when all are there, else tokenizer.json for a family that reads it; a
        tokenizer.json-only directory of another family gets a ModelFileError naming what to do."""
        if cls._has_required_files(files):
            return {arg: path for arg, path in files.items() if arg in cls.vocab_files}
        if "tokenizer_file" in files:
            if cls.reads_tokenizer_json:
                return {"tokenizer_file": files["tokenizer_file"]}
            missing = [name for arg, name in cls.vocab_files.items() if arg not in files]
            raise ModelFileError(
                f"{cls.__name__} (slow) needs {' and '.join(missing)}, which {directory} does not hold: it has only "
                f"{TOKENIZER_FILE} (as transformers 5 saves tokenizers). Load it with {cls.__name__}Fast, or "
                f"AutoTokenizer.from_pretrained(...) without use_fast=False, or copy {' and '.join(missing)} in"
            )
        return super()._usable_files(files, directory)

    # --- added tokens ------------------------------------------------------------------------------
    def _added_state(self):
        """(content -> id, id -> spec, split pattern), rebuilt when special or added tokens change."""
        state = self.__dict__.get("_added_state_cache")
        if state is None:
            encoder, decoder = {}, {}
            pinned = self.__dict__.get("_pinned_added_ids") or {}
            next_id = max([self.vocab_size, *(index + 1 for index in pinned.values())])
            for index, spec in self._added_token_plan():
                if index is None:
                    index = pinned.get(spec.content)
                if index is None:
                    index = self._vocab_id(spec.content)
                if index is None:
                    index = next_id
                encoder[spec.content] = index
                decoder[index] = spec
                next_id = max(next_id, index + 1)
            contents = sorted(encoder, key=len, reverse=True)  # longest first at one position, like a trie
            pattern = re.compile("(" + "|".join(map(re.escape, contents)) + ")") if contents else None
            state = self.__dict__["_added_state_cache"] = (encoder, decoder, pattern)
        return state

    def _special_tokens_changed(self):
        # A special token set by attribute is matched in text from now on; ids already given stay.
        state = self.__dict__.get("_added_state_cache")
        if state is not None:
            self.__dict__["_added_state_cache"] = None
            previous = state[0]
            self.__dict__["_pinned_added_ids"] = dict(previous)

    def _add_token_spec(self, spec):
        new = self._vocab_id(spec.content) is None and spec.content not in self._added_state()[0]
        self._user_added_tokens.append(spec)
        self._special_tokens_changed()
        return int(new)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedTokenSpec]:
        return dict(sorted(self._added_state()[1].items()))

    def _token_to_id(self, token):
        index = self._added_state()[0].get(token)
        if index is None:
            index = self._vocab_id(token)
        if index is None and self.unk_token is not None and token != self.unk_token:
            return self._token_to_id(self.unk_token)
        return index

    def _id_to_token(self, index):
        spec = self._added_state()[1].get(index)
        return spec.content if spec is not None else self._vocab_token(index)

    def get_vocab(self) -> dict[str, int]:
        return {**self._base_vocab(), **self._added_state()[0]}

    def __len__(self) -> int:
        return self.vocab_size + sum(1 for index in self._added_state()[1] if index >= self.vocab_size)

    # --- tokenization ------------------------------------------------------------------------------
    def tokenize(self, text: str, **kwargs) -> list[str]:
        """transformers' PreTrainedTokenizer.tokenize: added tokens are cut out whole, their flags eat the
        whitespace beside them (lstrip/rstrip) or keep them to whole words (single_word); the text between
        goes to the vocabulary model."""
        text = self._prepare_text(text, is_split_into_words=kwargs.pop("is_split_into_words", False))
        encoder, decoder, pattern = self._added_state()
        if self.do_lower_case:
            # Lowercase all but special tokens and the normalized non-special added tokens.
            kept = [token for token, index in encoder.items() if decoder[index].special or decoder[index].normalized]
            keep = "|".join(map(re.escape, sorted(kept, key=len, reverse=True)))
            text = re.sub(f"({keep})|(.+?)" if keep else "(?!)|(.+?)", lambda m: m.group(1) or m.group(2).lower(),
                          text, flags=re.DOTALL)
        parts = [part for part in pattern.split(text) if part] if pattern is not None else [text]
        for i, part in enumerate(parts):
            if part not in encoder:
                continue
            spec = decoder[encoder[part]]
            left = parts[i - 1] if i > 0 else None
            right = parts[i + 1] if i < len(parts) - 1 else None
            if spec.rstrip and right:
                parts[i + 1] = right.lstrip()
            if spec.lstrip and left:
                parts[i - 1] = left.rstrip()
            if spec.single_word and left and left[-1] != " ":
                parts[i - 1] += part
                parts[i] = ""
            elif spec.single_word and right and right[0] != " ":
                parts[i + 1] = part + parts[i + 1]
                parts[i] = ""
        tokens = []
        for part in parts:
            if part in encoder:
                tokens.append(part)
            elif part:
                tokens.extend(self._tokenize(part))
        return tokens

    def _prepare_text(self, text: str, is_split_into_words: bool = False) -> str:
        return text

    def _tokenize_input(self, text, is_split_into_words):
        if is_split_into_words:  # each word on its own, as transformers' Python tokenizers do
            return [token for word in text for token in self.tokenize(word, is_split_into_words=True)]
        return self.tokenize(text)

    def _tokenize(self, text: str) -> list[str]:
        raise NotImplementedError

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def _vocab_id(self, token: str) -> Optional[int]:
        """The token's id in the vocabulary files, None when absent."""
        raise NotImplementedError

    def _vocab_token(self, index: int) -> Optional[str]:
        raise NotImplementedError

    def _base_vocab(self) -> dict[str, int]:
        raise NotImplementedError

    def _decode_ids(self, ids, skip_special_tokens, spaces_between_special_tokens=True):
        # transformers decodes added non-special tokens on their own and joins the pieces with spaces.
        encoder, decoder, _ = self._added_state()
        special = set(self.all_special_tokens)
        # Decoded on their own: added tokens that are not special, and additional special tokens past the vocabulary.
        plain_added = (set(encoder) - special) | {token for token in self.additional_special_tokens
                                                  if encoder.get(token, -1) >= self.vocab_size}
        pieces, run = [], []
        for token in self.convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens):
            if token is None or (skip_special_tokens and token in special):
                continue
            if token in plain_added:
                if run:
                    text = self.convert_tokens_to_string(run)
                    if text:
                        pieces.append(text)
                    run = []
                pieces.append(token)
            else:
                run.append(token)
        if run:
            pieces.append(self.convert_tokens_to_string(run))
        return (" " if spaces_between_special_tokens else "").join(pieces)

    def _truncate(self, ids, pair_ids, num_to_remove, strategy, stride):
        """Cut `num_to_remove` tokens per `strategy`; returns (ids, pair_ids, overflowing window)."""
        if num_to_remove <= 0:
            return ids, pair_ids, []
        from_left = self.truncation_side == "left"

        def cut(sequence, count):
            kept = sequence[count:] if from_left else sequence[:-count]
            window_len = min(len(sequence), stride + count)
            return kept, (sequence[:window_len] if from_left else sequence[-window_len:])

        # A text too short to lose the tokens stays whole, with an error logged, as transformers' Python
        # tokenizers do (the fast ones raise instead; FastTokenizerBase does too).
        if strategy == "only_first" or (strategy == "longest_first" and pair_ids is None):
            if len(ids) <= num_to_remove:
                logger.error(
                    "cannot truncate: %d tokens must go but the first text has only %d; returned untruncated. "
                    "Use truncation='longest_first'%s or a larger max_length", num_to_remove, len(ids),
                    " or 'only_second'" if pair_ids is not None else "")
                return ids, pair_ids, []
            ids, overflow = cut(ids, num_to_remove)
            return ids, pair_ids, overflow
        if strategy == "only_second":
            if pair_ids is None:
                return ids, pair_ids, []
            if len(pair_ids) <= num_to_remove:
                logger.error(
                    "cannot truncate: %d tokens must go but the second text has only %d; returned untruncated. "
                    "Use truncation='longest_first' or 'only_first', or a larger max_length",
                    num_to_remove, len(pair_ids))
                return ids, pair_ids, []
            pair_ids, overflow = cut(pair_ids, num_to_remove)
            return ids, pair_ids, overflow
        # longest_first on a pair: trim the longer text down to the shorter, then both alternately.
        first_remove = min(abs(len(pair_ids) - len(ids)), num_to_remove)
        second_remove = num_to_remove - first_remove
        if len(ids) > len(pair_ids):
            from_ids, from_pair = first_remove + second_remove // 2, second_remove - second_remove // 2
        else:
            from_ids, from_pair = second_remove // 2, first_remove + second_remove - second_remove // 2
        if from_ids:
            ids = cut(ids, from_ids)[0]
        if from_pair:
            pair_ids = cut(pair_ids, from_pair)[0]
        return ids, pair_ids, []

    def _encode_batch(self, pairs, *, add_special_tokens, padding, truncation, max_length, stride,
                      pad_to_multiple_of, padding_side, return_token_type_ids, return_attention_mask,
                      return_overflowing_tokens, return_special_tokens_mask, return_offsets_mapping, return_length,
                      is_split_into_words=False):
        if return_offsets_mapping:
            raise NotImplementedError(
                f"return_offsets_mapping needs the Rust backend; use {type(self).__name__}Fast "
                f"instead of {type(self).__name__}"
            )
        if return_overflowing_tokens and truncation == "longest_first" and any(b is not None for _, b in pairs):
            raise ValueError(
                "overflowing tokens of a pair cannot be returned with truncation='longest_first'; "
                "use 'only_first' or 'only_second'"
            )
        rows = []
        for first, second in pairs:
            ids, pair_ids = (None if text is None else self.convert_tokens_to_ids(self._tokenize_input(
                text, is_split_into_words)) for text in (first, second))
            specials = self.num_special_tokens_to_add(pair_ids is not None) if add_special_tokens else 0
            total = len(ids) + (len(pair_ids) if pair_ids is not None else 0) + specials
            overflow = []
            if truncation != "do_not_truncate" and max_length and total > max_length:
                ids, pair_ids, overflow = self._truncate(ids, pair_ids, total - max_length, truncation, stride)
            if add_special_tokens:
                input_ids, type_ids, special_mask = self._with_special_tokens(ids, pair_ids)
            else:
                input_ids = ids + (pair_ids or [])
                type_ids, special_mask = [0] * len(input_ids), [0] * len(input_ids)
            row = {}
            if return_overflowing_tokens:
                row["overflowing_tokens"] = overflow
                row["num_truncated_tokens"] = total - max_length if max_length else total
            row["input_ids"] = input_ids
            if return_token_type_ids:
                row["token_type_ids"] = type_ids
            if return_special_tokens_mask:
                row["special_tokens_mask"] = special_mask
            if return_attention_mask:
                row["attention_mask"] = [1] * len(input_ids)
            rows.append(row)
        if return_length:  # the unpadded length, as transformers' Python tokenizers report it
            for row in rows:
                row["length"] = len(row["input_ids"])
        self._pad_rows(rows, padding, max_length, pad_to_multiple_of, padding_side)
        columns = {key: [row[key] for row in rows] for key in rows[0]} if rows else {"input_ids": []}
        return columns, None
