"""A complete ``tokenizer.json`` from onnxport's own tokenizer, for clients that read nothing else.

transformers.js, the ``tokenizers`` library on its own (``Tokenizer.from_file``) and the Rust/Node bindings
read ``tokenizer.json`` only: the added-token flags in ``tokenizer_config.json`` (``<mask>``'s ``lstrip``) and the
vocabulary files do not reach them. The file written here is onnxport's fast tokenizer as it tokenizes:
normalizer, pre-tokenizer, model, post-processor, decoder and every added token with its flags, without the
per-call truncation / padding. ``check_tokenizer_json`` says whether ``Tokenizer.from_file`` on it gives
onnxport's ids and offsets.
"""

from __future__ import annotations

import json
from typing import Iterable, Optional, Union

from .base import TOKENIZER_FILE

Sample = Union[str, tuple[str, str]]


def tokenizer_json(tokenizer) -> Optional[str]:
    """The tokenizer.json text of a fast onnxport tokenizer (None for a slow one, which has no Rust pipeline)."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    data = json.loads(tokenizer._serialized_backend())
    data["truncation"] = data["padding"] = None  # per-call settings, not part of the tokenizer
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def check_tokenizer_json(path: str, tokenizer, samples: Iterable[Sample]) -> Optional[str]:
    """None when ``tokenizers.Tokenizer.from_file(path)`` gives ``tokenizer``'s ids and offsets on every sample,
    else what differs (the first sample that does)."""
    from tokenizers import Tokenizer

    try:
        loaded = Tokenizer.from_file(path)
    except Exception as error:  # the Rust loader raises a bare Exception
        return f"tokenizers.Tokenizer.from_file cannot read it ({' '.join(str(error).split())[:200]})"
    for sample in samples:
        args = sample if isinstance(sample, tuple) else (sample,)
        want = tokenizer(*args, return_offsets_mapping=True)
        got = loaded.encode(*args)
        want_offsets = [tuple(pair) for pair in want["offset_mapping"]]
        if got.ids != list(want["input_ids"]) or [tuple(pair) for pair in got.offsets] != want_offsets:
            return (f"tokenizers.Tokenizer.from_file tokenizes {args!r} as {got.ids} (offsets {got.offsets}), "
                    f"onnxport as {list(want['input_ids'])} (offsets {want_offsets})")
    return None


__all__ = ["TOKENIZER_FILE", "check_tokenizer_json", "tokenizer_json"]
