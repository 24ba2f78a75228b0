"""The `tokenizers` (Rust) engine, as transformers' fast tokenizers drive it.

The call's truncation / padding options are handed to the backend; overflow windows become rows with
`overflow_to_sample_mapping`. A family supplies how the Rust pipeline is built from its vocabulary files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .base import TOKENIZER_FILE, AddedTokenSpec, TokenizerBase


class FastTokenizerBase(TokenizerBase):
    """`tokenizers` (Rust) engine. Families implement `_build_backend(**files_and_options)` (model, normalizer,
    pre-tokenizer, decoder); added tokens come from the shared plan, then `_prepare_backend` finishes it."""

    is_fast = True

    def __init__(self, tokenizer_file: Optional[str] = None, **kwargs):
        super().__init__(**{key: value for key, value in kwargs.items() if key not in self.vocab_files})
        from tokenizers import Tokenizer

        if tokenizer_file is not None:
            try:
                backend = Tokenizer.from_file(str(tokenizer_file))
            except Exception as error:  # the Rust loader raises a bare Exception on bad JSON
                raise ValueError(
                    f"{tokenizer_file} is not a valid tokenizer.json ({error}); delete it to rebuild from the "
                    "vocabulary files, or save the tokenizer again"
                ) from error
        else:
            files = {arg: kwargs.get(arg) for arg in self.vocab_files}
            missing = [self.vocab_files[arg] for arg, path in files.items() if path is None]
            if missing:
                raise FileNotFoundError(f"{type(self).__name__} needs tokenizer_file or {', '.join(missing)}")
            backend = self._build_backend(**files)
        self.vocab_file_paths = {arg: kwargs.get(arg) for arg in self.vocab_files if kwargs.get(arg)}
        self._add_planned_tokens(backend)
        self._tokenizer = self._prepare_backend(backend)
        self._configured = None

    def _add_planned_tokens(self, backend):
        """Special and configured added tokens the backend lacks, with their flags. One not in the vocabulary
        gets the next free id, as in transformers. As in transformers, tokenizer_config.json's
        added_tokens_decoder flags win over a tokenizer.json's (re-adding a token updates its flags); the other
        tokens a tokenizer.json has keep its flags."""
        present = {token.content: AddedTokenSpec.read(token) for token in backend.get_added_tokens_decoder().values()}
        for index, spec in self._added_token_plan():
            configured = index is not None and present.get(spec.content) not in (None, spec)
            if spec.content not in present or configured:
                (backend.add_special_tokens if spec.special else backend.add_tokens)([spec.to_rust()])
                present[spec.content] = spec

    def _add_token_spec(self, spec):
        self._user_added_tokens.append(spec)
        # The backend's count, as transformers' fast classes return it (a token of the vocabulary counts too).
        added = (self._tokenizer.add_special_tokens if spec.special else self._tokenizer.add_tokens)([spec.to_rust()])
        self._special_tokens_changed()
        return added

    @property
    def added_tokens_decoder(self) -> dict[int, AddedTokenSpec]:
        return {index: AddedTokenSpec.read(token) for index, token in
                sorted(self._tokenizer.get_added_tokens_decoder().items())}

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        decoder = self._tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    @classmethod
    def _file_names(cls):
        return {**cls.vocab_files, "tokenizer_file": TOKENIZER_FILE}

    @classmethod
    def _has_required_files(cls, files):
        return "tokenizer_file" in files or super()._has_required_files(files)

    def _build_backend(self, **files):
        raise NotImplementedError

    def _prepare_backend(self, backend):
        """Runtime-only adjustments after loading (RoFormer swaps in its jieba pre-tokenizer)."""
        return backend

    def _serialized_backend(self) -> str:
        return self._tokenizer.to_str()

    @property
    def backend_tokenizer(self):
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def _token_to_id(self, token):
        index = self._tokenizer.token_to_id(token)
        return self.unk_token_id if index is None else index

    def _id_to_token(self, index):
        return self._tokenizer.id_to_token(index)

    def tokenize(self, text: str, pair: Optional[str] = None, add_special_tokens: bool = False, **kwargs) -> list[str]:
        # The backend keeps the last call's truncation/padding (e.g. only_second, which fails without a pair).
        self._configure("do_not_truncate", None, 0, "do_not_pad", None, self.padding_side)
        return self._tokenizer.encode(text, pair, add_special_tokens=add_special_tokens).tokens

    def _decode_ids(self, ids, skip_special_tokens):
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def _overflow_adds_rows(self, return_overflowing_tokens):
        return return_overflowing_tokens

    @staticmethod
    def _unbatch(values):
        # transformers' fast tokenizers drop the batch axis only of per-token lists ("length" stays [n]).
        return values[0] if values and isinstance(values[0], list) else values

    def _configure(self, truncation, max_length, stride, padding, pad_to_multiple_of, padding_side):
        """Set the backend's truncation/padding, skipping the Rust round trip when nothing changed."""
        wanted = (truncation, max_length, stride, padding, pad_to_multiple_of, padding_side,
                  self.truncation_side, self.pad_token_id, self.pad_token)
        if wanted == self._configured:
            return
        if truncation == "do_not_truncate":
            self._tokenizer.no_truncation()
        else:
            try:
                self._tokenizer.enable_truncation(max_length, stride=stride, strategy=truncation,
                                                  direction=self.truncation_side)
            except Exception as error:
                raise ValueError(f"invalid truncation settings: {error}") from error
        if padding == "do_not_pad":
            self._tokenizer.no_padding()
        else:
            self._tokenizer.enable_padding(
                direction=padding_side, pad_id=self.pad_token_id, pad_type_id=self.pad_token_type_id,
                pad_token=self.pad_token, length=max_length if padding == "max_length" else None,
                pad_to_multiple_of=pad_to_multiple_of,
            )
        self._configured = wanted

    def _special_tokens_changed(self):
        self.__dict__["_configured"] = None

    def _encode_batch(self, pairs, *, add_special_tokens, padding, truncation, max_length, stride,
                      pad_to_multiple_of, padding_side, return_token_type_ids, return_attention_mask,
                      return_overflowing_tokens, return_special_tokens_mask, return_offsets_mapping, return_length,
                      is_split_into_words=False):
        settings = (truncation, max_length, stride, padding, pad_to_multiple_of, padding_side)
        self._configure(*settings)
        inputs = [first if second is None else (first, second) for first, second in pairs]
        # encode_batch_fast skips offset tracking; used whenever offsets are not asked for. The BatchEncoding
        # redoes the batch with offsets only if word_ids()/char_to_token()/... are called on it.
        encode = self._tokenizer.encode_batch
        realign = None
        if not return_offsets_mapping and hasattr(self._tokenizer, "encode_batch_fast"):
            encode = self._tokenizer.encode_batch_fast

            def realign():
                self._configure(*settings)
                redone = self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens,
                                                      is_pretokenized=is_split_into_words)
                return [row for encoding in redone for row in
                        ([encoding, *encoding.overflowing] if return_overflowing_tokens else [encoding])]
        try:
            encodings = encode(inputs, add_special_tokens=add_special_tokens, is_pretokenized=is_split_into_words)
        except Exception as error:
            if "runcat" in str(error):  # the Rust "Truncation error: ..." when a strategy cannot fit the pair
                raise ValueError(
                    f"cannot truncate to max_length={max_length} with truncation={truncation!r} ({error}); "
                    "use truncation='longest_first' or a larger max_length"
                ) from error
            raise
        except BaseException as error:  # pyo3's PanicException is not an Exception: keep it from killing callers
            if type(error).__name__ != "PanicException":
                raise
            raise ValueError(
                f"stride={stride} does not fit max_length={max_length} once the other text and the special tokens "
                f"are placed ({error}); use a smaller stride or a larger max_length"
            ) from None
        if return_overflowing_tokens:
            rows, sample_of_row = [], []
            for sample, encoding in enumerate(encodings):
                windows = [encoding, *encoding.overflowing]
                rows += windows
                sample_of_row += [sample] * len(windows)
            encodings = rows
        columns = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids:
            columns["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask:
            columns["attention_mask"] = [e.attention_mask for e in encodings]
        if return_special_tokens_mask:
            columns["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_offsets_mapping:
            columns["offset_mapping"] = [e.offsets for e in encodings]
        if return_length:
            columns["length"] = [len(e.ids) for e in encodings]
        if return_overflowing_tokens:
            columns["overflow_to_sample_mapping"] = sample_of_row
        return columns, (encodings if realign is None else (encodings, realign))

    def _save_vocabulary(self, directory):
        # Truncation/padding are per-call settings, not part of the saved tokenizer.
        saved = json.loads(self._serialized_backend())
        saved["truncation"] = saved["padding"] = None
        tokenizer_file = directory / TOKENIZER_FILE
        tokenizer_file.write_text(json.dumps(saved, ensure_ascii=False, indent=2), encoding="utf-8")
        return [tokenizer_file] + self._save_slow_vocabulary(directory)

    def _save_slow_vocabulary(self, directory: Path) -> list[Path]:
        """The vocabulary files the slow class reads, when they can be produced."""
        return []
