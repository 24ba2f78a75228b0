"""Which transformers release saved a tokenizer directory, and the vocabulary a slow class reads from tokenizer.json.

transformers 5 changed what a tokenizer directory holds and how its tokenizers behave by default; onnxport follows
the release that saved the directory, so a model answers as it did where it was made.

The rule (tokenizer_config.json decides; nothing else in the directory does):

1. a ``"transformers_version"`` field, when present, names the release (its major version counts);
2. otherwise a ``"backend"`` field (``"tokenizers"`` or ``"sentencepiece"``) means transformers 5: every 5.x
   tokenizer writes it on save_pretrained, no 4.x release ever did;
3. otherwise (no such field, or no tokenizer_config.json at all) the directory is a 4.x one.

What follows for a 5.x directory (each checked against transformers 5 itself):

- ``model_input_names`` is ``["input_ids", "attention_mask"]`` for every family: RoFormer no longer returns
  ``token_type_ids`` unless asked (``return_token_type_ids=True``), so a text pair reaches the model with type 0
  for both texts, as transformers 5's pipelines feed it. A ``"model_input_names"`` field in tokenizer_config.json
  wins in both releases.
- ``"extra_special_tokens"`` (5.x's list, 4.x's ``additional_special_tokens``) are special tokens of the tokenizer;
  ``special_tokens_map`` lists only the named ones, as in 5.x.
- transformers 5 writes only ``tokenizer.json`` + ``tokenizer_config.json``. The slow RoBERTa and RoFormer classes
  read their vocabulary (BPE vocab + merges, WordPiece vocab) and added tokens from tokenizer.json when their
  vocabulary files are absent; the slow XLM-R class needs ``sentencepiece.bpe.model`` and says to use
  ``XLMRobertaTokenizerFast`` when the directory has none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from ..errors import ModelFileError

TRANSFORMERS5_MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]
# Written into tokenizer_config.json's "backend" by every transformers 5 tokenizer (never by 4.x).
TRANSFORMERS5_BACKENDS = ("tokenizers", "sentencepiece")


def saved_by_major(config: Mapping) -> int:
    """The major transformers version whose behaviour a tokenizer_config.json asks for (see the module docstring)."""
    version = config.get("transformers_version")
    if isinstance(version, str) and version.split(".", 1)[0].isdigit():
        return int(version.split(".", 1)[0])
    if config.get("backend") is not None:
        return 5
    return 4


def read_tokenizer_json(path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path} is not a valid tokenizer.json ({error}); save the tokenizer again") from error
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ModelFileError(f"{path} is not a tokenizer.json: it has no 'model' object")
    return data


def _model_of(data: dict, path, kind: str, class_name: str) -> dict:
    model = data["model"]
    if model.get("type") != kind:
        raise ModelFileError(f"{path} holds a {model.get('type')} model; {class_name} reads a {kind} vocabulary from "
                         f"it. Load the directory with the fast class ({class_name}Fast) or AutoTokenizer")
    if not isinstance(model.get("vocab"), dict) or not all(isinstance(i, int) for i in model["vocab"].values()):
        raise ModelFileError(f"{path}'s {kind} model has no token -> id vocabulary")
    return model


def wordpiece_vocab(data: dict, path, class_name: str) -> dict[str, int]:
    """The WordPiece vocabulary (vocab.txt's content) of a tokenizer.json, in id order."""
    vocab = _model_of(data, path, "WordPiece", class_name)["vocab"]
    return dict(sorted(vocab.items(), key=lambda item: item[1]))


def bpe_vocab_and_merges(data: dict, path, class_name: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab.json and merges.txt's content of a BPE tokenizer.json (merges as "a b" strings or [a, b] pairs)."""
    model = _model_of(data, path, "BPE", class_name)
    merges = []
    for merge in model.get("merges") or []:
        pair = merge.split(" ") if isinstance(merge, str) else list(merge)
        if len(pair) != 2 or not all(isinstance(symbol, str) for symbol in pair):
            raise ModelFileError(f"{path}: a BPE merge must be two symbols, got {merge!r}")
        merges.append((pair[0], pair[1]))
    return dict(model["vocab"]), merges


def added_tokens_decoder(data: dict) -> dict[str, dict]:
    """tokenizer.json's added tokens as tokenizer_config.json's added_tokens_decoder ({id: {content, flags}})."""
    return {str(token["id"]): {key: value for key, value in token.items() if key != "id"}
            for token in data.get("added_tokens") or [] if isinstance(token, dict) and "id" in token}
