"""Why a directory's tokenizer did not load: missing, incomplete, corrupt, or files that fit another class.

The runtime (when a pipeline first asks for the tokenizer) and the exporter (its warning and the
``tokenizer`` record of ``onnxport.json``) say the same words; the families' ``tokenizer_files`` tell which
class a directory's files fit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Literal, Optional

from ..artifact.files import TOKENIZER_FILES, missing_tokenizer_message


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
    from . import TOKENIZERS_BY_CLASS_NAME, AutoTokenizer

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
            why = " ".join(str(err).split())[:300]
            files = ", ".join(candidate.tokenizer_files)
            if any(not _parses(os.path.join(directory, name)) for name in candidate.tokenizer_files):
                return TokenizerProblem("corrupt", f"The tokenizer files in {directory} ({files}) are corrupt: "
                                                   f"{why}. Replace them with intact files")
            # They parse but lack what the class needs (e.g. a vocab.txt without [CLS]): not corrupt, incomplete.
            return TokenizerProblem(
                "incomplete", f"The tokenizer files in {directory} ({files}) are {candidate.tokenizer_class}'s "
                              f"kind but do not load as it: {why}. "
                              f"{missing_tokenizer_message(directory, family)}")
        wanted = " or ".join(chosen._file_names().values())
        return TokenizerProblem(
            "other-class",
            f"The tokenizer files in {directory} ({', '.join(vocabulary)}) fit {fit} (they load as it), not "
            f"{chosen.__name__}, which {named_by} picks (it reads {wanted}). Name the class in "
            f"tokenizer_config.json: {{\"tokenizer_class\": \"{fit}\"}} (in the checkpoint before exporting, "
            "or in the export directory); the model takes ids without it",
            fit)
    return TokenizerProblem("incomplete", f"{missing_tokenizer_message(directory, family)} ({detail})")


def _parses(path: str) -> bool:
    """Whether a vocabulary file is readable as its format at all (JSON, UTF-8 text, or a SentencePiece
    model, which is binary and judged by the tokenizer library alone)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        if path.endswith(".json"):
            json.loads(data.decode("utf-8"))
        elif path.endswith(".txt"):
            data.decode("utf-8")
        return True
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False
