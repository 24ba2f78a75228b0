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
from dataclasses import dataclass
from typing import Any, Literal, Optional

from ..errors import ExportError

logger = logging.getLogger("onnxport")

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "sentencepiece.bpe.model",
)
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


def missing_tokenizer_message(directory: str, family) -> str:
    """What to add so that a directory gets a tokenizer (the runtime says the same)."""
    files = " + ".join(family.tokenizer_files)
    return (f"{directory} has no usable tokenizer: add the {family.tokenizer_class}'s files ({files}, or a "
            "tokenizer.json) to the checkpoint and re-export, or copy them into the export directory; until then "
            "pipelines and `onnxport run` cannot tokenize (the model still takes ids)")


@dataclass(frozen=True)
class TokenizerProblem:
    """Why a directory's tokenizer did not load, in the words the export's warning and the runtime use."""

    kind: Literal["missing", "incomplete", "other-class", "corrupt"]
    message: str
    fits: Optional[str] = None  # "other-class": the class the files load with


def tokenizer_problem(directory: str, error: Exception, family) -> TokenizerProblem:
    """What is wrong with the tokenizer files of ``directory``, whose loading raised ``error``: no vocabulary
    at all ("missing"), vocabulary files that fit another family's tokenizer class than the one
    tokenizer_config.json / config.json names ("other-class": which, and how to name it), files that do not
    parse ("corrupt"), or an incomplete vocabulary. The families' ``tokenizer_files`` tell which class files fit."""
    from ..families import FAMILIES
    from ..tokenizers import TOKENIZERS_BY_CLASS_NAME, AutoTokenizer

    present = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(directory, name))]
    vocabulary = [name for name in present if name not in ("tokenizer_config.json", "special_tokens_map.json")]
    detail = " ".join(str(error).split())[:300]
    corrupt = TokenizerProblem("corrupt", f"The tokenizer files in {directory} ({', '.join(present)}) are corrupt: "
                                          f"{detail}. Replace them with intact files (re-export from a checkpoint "
                                          "that has them)")
    if not vocabulary:
        return TokenizerProblem("missing", f"{missing_tokenizer_message(directory, family)} ({detail})")
    try:
        chosen, named_by = AutoTokenizer.class_for(directory)
    except ValueError:  # a tokenizer_config.json / config.json that does not parse
        return corrupt
    found = {arg: name for arg, name in chosen._file_names().items() if name in present}
    if chosen._has_required_files(found):
        return corrupt  # the named class's files are all there and did not load
    for candidate in {f.tokenizer_class: f for f in FAMILIES.values()}.values():
        if candidate.tokenizer_class == chosen.__name__.removesuffix("Fast") or \
                not all(name in present for name in candidate.tokenizer_files):
            continue
        try:
            fit = type(TOKENIZERS_BY_CLASS_NAME[candidate.tokenizer_class][1].from_pretrained(directory)).__name__
        except Exception as err:  # the files of that class are there but do not read
            return TokenizerProblem("corrupt", f"The tokenizer files in {directory} "
                                               f"({', '.join(candidate.tokenizer_files)}) are corrupt: "
                                               f"{' '.join(str(err).split())[:300]}. Replace them with intact files")
        wanted = " or ".join(chosen._file_names().values())
        return TokenizerProblem(
            "other-class",
            f"The tokenizer files in {directory} ({', '.join(vocabulary)}) fit {fit} (they load as it), not "
            f"{chosen.__name__}, which {named_by} picks (it reads {wanted}). Name the class in "
            f"tokenizer_config.json: {{\"tokenizer_class\": \"{fit}\"}} (in the checkpoint before exporting, "
            "or in the export directory); the model takes ids without it",
            fit)
    return TokenizerProblem("incomplete", f"{missing_tokenizer_message(directory, family)} ({detail})")


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
    names = sorted(set(copied) | {"tokenizer_config.json"})
    return {"class": type(exported).__name__, "files": names, "model_max_length": exported.model_max_length}


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
    limit = config.max_sequence_length
    current = data.get("model_max_length")
    if not isinstance(current, int) or current >= _UNKNOWN_LENGTH or current > limit:
        data["model_max_length"] = limit  # the position table's length: longer inputs cannot run
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
