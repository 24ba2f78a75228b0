"""What a tokenizer call returns and how its arguments resolve, shared by the slow and fast engines.

`BatchEncoding` (the output dict, with the Rust per-token alignment when there is one), conversion to a
framework's tensors (imported only when asked for), and transformers' padding / truncation argument rules.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

# transformers' sentinel for "no known limit"; truncation/padding to model_max_length is skipped above it.
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
TENSOR_TYPES = ("np", "pt", "tf", "jax")


def as_tensor(values: Any, tensor_type: str):
    """One key's values as the requested framework's tensor; the framework is imported only here."""
    try:
        if tensor_type == "np":
            array = np.asarray(values)
            if array.dtype == object:  # older numpy builds ragged object arrays instead of raising
                raise ValueError("inhomogeneous shape")
            return array
        if tensor_type == "pt":
            import torch

            return torch.tensor(values)
        if tensor_type == "tf":
            import tensorflow as tf

            return tf.constant(values)
        import jax.numpy as jnp

        return jnp.array(values)
    except ValueError as error:
        raise ValueError(
            f"could not build a {tensor_type} tensor ({error}): the sequences have different lengths; "
            "pass padding=True (and truncation=True)"
        ) from error


class BatchEncoding(dict):
    """The tokenizer output: a dict of model inputs with attribute access (`enc.input_ids`)."""

    def __init__(self, data=None, encodings=None, tensor_type: Optional[str] = None, realign=None):
        super().__init__(data or {})
        self._encodings = encodings
        # Encodings made without offsets (the backend's faster path) are redone with them on first need.
        self._realign = realign
        if tensor_type is not None:
            self.convert_to_tensors(tensor_type)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def encodings(self):
        """The Rust `tokenizers.Encoding` per row (fast tokenizers only), else None."""
        if self._realign is not None:
            self._encodings, self._realign = self._realign(), None
        return self._encodings

    @property
    def is_fast(self) -> bool:
        return self._encodings is not None

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding("tokens", batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[Optional[int]]:
        return self._encoding("word_ids", batch_index).word_ids

    def words(self, batch_index: int = 0) -> list[Optional[int]]:
        return self.word_ids(batch_index)

    def sequence_ids(self, batch_index: int = 0) -> list[Optional[int]]:
        return self._encoding("sequence_ids", batch_index).sequence_ids

    def char_to_token(self, batch_or_char_index: int, char_index: Optional[int] = None, sequence_index: int = 0):
        batch_index, char_index = (0, batch_or_char_index) if char_index is None else (batch_or_char_index, char_index)
        return self._encoding("char_to_token", batch_index).char_to_token(char_index, sequence_index)

    def token_to_chars(self, batch_or_token_index: int, token_index: Optional[int] = None):
        """(start, end) of a token in its text, as transformers' CharSpan tuple; None for special tokens."""
        batch_index, token_index = (0, batch_or_token_index) if token_index is None else \
            (batch_or_token_index, token_index)
        span = self._encoding("token_to_chars", batch_index).token_to_chars(token_index)
        return None if span is None else tuple(span)

    def token_to_sequence(self, batch_or_token_index: int, token_index: Optional[int] = None):
        batch_index, token_index = (0, batch_or_token_index) if token_index is None else \
            (batch_or_token_index, token_index)
        return self._encoding("token_to_sequence", batch_index).token_to_sequence(token_index)

    def token_to_word(self, batch_or_token_index: int, token_index: Optional[int] = None):
        batch_index, token_index = (0, batch_or_token_index) if token_index is None else \
            (batch_or_token_index, token_index)
        return self._encoding("token_to_word", batch_index).token_to_word(token_index)

    def _encoding(self, method: str, batch_index: int):
        if self._encodings is None:
            raise NotImplementedError(
                f"BatchEncoding.{method}() needs the per-token alignment of the Rust backend; "
                "tokenize with a fast tokenizer (the *Fast classes, or AutoTokenizer with use_fast=True)"
            )
        return self.encodings[batch_index]

    def convert_to_tensors(self, tensor_type: str) -> "BatchEncoding":
        if tensor_type not in TENSOR_TYPES:
            raise ValueError(f"return_tensors={tensor_type!r} is not supported; use one of {TENSOR_TYPES} or None")
        for key, values in self.items():
            self[key] = as_tensor(values, tensor_type)
        return self


def resolve_padding_and_truncation(padding, truncation, max_length, pad_to_multiple_of, model_max_length, pad_token):
    """Map the user's padding/truncation arguments to (padding, truncation, max_length) strategy names.

    The rules are transformers': max_length alone implies 'longest_first'; without max_length the
    model_max_length is used unless it is the "unknown" sentinel, in which case that strategy is dropped.
    """
    if max_length is not None and padding is False and truncation is None:
        truncation = "longest_first"
    if padding is True:
        padding = "longest"
    elif padding is False or padding is None:
        padding = "do_not_pad"
    padding = getattr(padding, "value", padding)  # accept transformers' enums too
    if padding not in PADDING_STRATEGIES:
        raise ValueError(
            f"padding={padding!r} is not a padding strategy; use True, False or one of {PADDING_STRATEGIES}"
        )
    if truncation is True:
        truncation = "longest_first"
    elif truncation is False or truncation is None:
        truncation = "do_not_truncate"
    truncation = getattr(truncation, "value", truncation)
    if truncation not in TRUNCATION_STRATEGIES:
        raise ValueError(
            f"truncation={truncation!r} is not a truncation strategy; use True, False or one of {TRUNCATION_STRATEGIES}"
        )
    if max_length is None:
        limit_known = model_max_length <= LARGE_INTEGER
        if padding == "max_length":
            padding, max_length = ("max_length", model_max_length) if limit_known else ("do_not_pad", None)
        if truncation != "do_not_truncate":
            truncation, max_length = (truncation, model_max_length) if limit_known else ("do_not_truncate", None)
    if padding != "do_not_pad" and pad_token is None:
        raise ValueError("padding needs a pad token; set tokenizer.pad_token (e.g. to tokenizer.eos_token) first")
    if (
        truncation != "do_not_truncate"
        and padding != "do_not_pad"
        and pad_to_multiple_of is not None
        and max_length is not None
        and max_length % pad_to_multiple_of
    ):
        raise ValueError(f"max_length={max_length} must be a multiple of pad_to_multiple_of={pad_to_multiple_of}")
    return padding, truncation, max_length
