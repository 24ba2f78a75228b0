"""The export's tokenizer: copied, completed and checked, so that a served export tokenizes as the checkpoint.

``write_tokenizer`` copies the checkpoint's tokenizer files into the export, writes a complete
``tokenizer_config.json`` (the tokenizer class, the special tokens, ``model_max_length`` from the position
table when the checkpoint gives no smaller one), loads the tokenizer back from the export directory and checks
it gives the checkpoint tokenizer's ids on sample texts. A checkpoint without a usable tokenizer is exported
with a warning naming the files to add, or the class its files fit and how to name it (``tokenizer_problem``;
recorded in ``onnxport.json``, said again by the runtime when the tokenizer is asked for).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

from ..artifact.files import TOKENIZER_FILES, missing_tokenizer_message  # noqa: F401  (the old import path keeps working)
from ..errors import ExportError
from ..tokenizers.diagnosis import TokenizerProblem, tokenizer_problem  # noqa: F401  (the old import path keeps working)

logger = logging.getLogger("onnxport")

# Plain text, accents, digits and punctuation, CJK (RoFormer's jieba), special tokens typed in the text.
SAMPLE_TEXTS = (
    "Hello world! The quick brown fox jumps over the lazy dog in 2026.",
    "naïve café, résumé — déjà vu?",
    "今天天气非常好，我们去北京。",
    "  spaces   and\ttabs  ",
)
SAMPLE_PAIR = ("Where is the fox?", "The fox is in Paris.")
# transformers' "unknown" model_max_length
_UNKNOWN_LENGTH = int(1e20)


def write_tokenizer(checkpoint_dir: str, out_dir: str, config, family) -> dict[str, Any]:
    """Copy, complete and check the tokenizer; the ``tokenizer`` record of ``onnxport.json``."""
    from ..tokenizers import AutoTokenizer

    copied = []
    for name in TOKENIZER_FILES:
        source = os.path.join(checkpoint_dir, name)
        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(out_dir, name))
            copied.append(name)
    try:
        source = AutoTokenizer.from_pretrained(checkpoint_dir)
    except Exception as err:  # no files, or files the tokenizer library refuses: export anyway, say so
        return _unusable_tokenizer(checkpoint_dir, err, family, copied)

    _write_config(out_dir, source, config)
    written_json = _write_tokenizer_json(source, out_dir, "tokenizer.json" in copied)
    try:
        exported = AutoTokenizer.from_pretrained(out_dir)
    except Exception as err:
        raise ExportError(f"The tokenizer copied into {out_dir} does not load ({err}); the checkpoint's tokenizer "
                          f"files may be incomplete ({', '.join(copied)}).") from err
    for sample in (*SAMPLE_TEXTS, SAMPLE_PAIR):
        args = sample if isinstance(sample, tuple) else (sample,)
        want, got = source(*args)["input_ids"], exported(*args)["input_ids"]
        if want != got:
            raise ExportError(
                f"The tokenizer written to {out_dir} tokenizes {args!r} as {got}, the checkpoint's as {want}; "
                "its files are inconsistent (for example a tokenizer_config.json that names another class)."
            )
    names = sorted(set(copied) | {"tokenizer_config.json"} | ({"tokenizer.json"} if written_json else set()))
    return {"class": type(exported).__name__, "files": names, "model_max_length": exported.model_max_length,
            "tokenizer_json": _check_tokenizer_json(out_dir, exported, written_json)}


def _write_tokenizer_json(tokenizer, out_dir: str, shipped: bool) -> bool:
    """The export's tokenizer.json, written from onnxport's tokenizer (flags as tokenizer_config.json has them),
    over the checkpoint's copy. A tokenizer it cannot hold whole (RoFormer's jieba) gets one only where the
    checkpoint shipped one, completed the same way; the record says how it differs."""
    from ..tokenizers.tokenizer_json import tokenizer_json

    text = tokenizer_json(tokenizer)
    if text is None or (tokenizer.tokenizer_json_gap and not shipped):
        return False
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as fh:
        fh.write(text)
    return True


def _check_tokenizer_json(out_dir: str, tokenizer, written: bool) -> dict[str, Any]:
    """The ``tokenizer_json`` record: whether tokenizer.json alone (tokenizers.Tokenizer.from_file, as
    transformers.js and the Rust/Node bindings read it) gives onnxport's ids and offsets, and if not why."""
    from ..tokenizers.tokenizer_json import check_tokenizer_json

    if not written:
        why = tokenizer.tokenizer_json_gap or "the tokenizer has no tokenizer.json form"
        return {"written": False, "exact": False, "why": f"no tokenizer.json: {why}"}
    mask = tokenizer.mask_token
    samples = [*SAMPLE_TEXTS, SAMPLE_PAIR, *((f"Hello {mask} world!", f"{mask} at the start, then{mask}.")
                                              if mask else ())]
    mismatch = check_tokenizer_json(os.path.join(out_dir, "tokenizer.json"), tokenizer, samples)
    if mismatch is None:
        return {"written": True, "exact": True}
    why = f"{tokenizer.tokenizer_json_gap}: {mismatch}" if tokenizer.tokenizer_json_gap else mismatch
    logger.warning("The export's tokenizer.json does not tokenize as onnxport: %s. Clients that read only "
                   "tokenizer.json (transformers.js, tokenizers.Tokenizer.from_file) will differ.", why)
    return {"written": True, "exact": False, "why": why}


def _unusable_tokenizer(checkpoint_dir: str, error: Exception, family, copied: list[str]) -> dict[str, Any]:
    """The warning and ``onnxport.json`` record of a checkpoint whose tokenizer does not load."""
    problem = tokenizer_problem(checkpoint_dir, error, family)
    logger.warning("%s.", problem.message)
    record: dict[str, Any] = {"class": None, "files": copied, "warning": problem.message, "problem": problem.kind}
    if problem.fits:
        record["fits"] = problem.fits
    return record


def _write_config(out_dir: str, tokenizer, config) -> None:
    """tokenizer_config.json with what a loader needs: class, special tokens, model_max_length."""
    path = os.path.join(out_dir, "tokenizer_config.json")
    data: dict[str, Any] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            loaded = json.load(fh)
        data = loaded if isinstance(loaded, dict) else {}
    data.setdefault("tokenizer_class", type(tokenizer).__name__.removesuffix("Fast"))
    for key, value in tokenizer.special_tokens_map.items():
        data.setdefault(key, value)
    # The flags the tokenizer runs with (the configured ones win over a tokenizer.json's, as in transformers),
    # so that tokenizer_config.json and the written tokenizer.json agree.
    data["added_tokens_decoder"] = {str(index): spec.as_config()
                                    for index, spec in tokenizer.added_tokens_decoder.items()}
    limit = config.max_sequence_length
    current = data.get("model_max_length")
    if not isinstance(current, int) or current >= _UNKNOWN_LENGTH or current > limit:
        data["model_max_length"] = limit  # the position table's length: longer inputs cannot run
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
