"""Reading a sentence-transformers ``CrossEncoder`` directory: is it one, and how does it score.

A cross-encoder is an HF sequence-classification checkpoint (the weights and config.json at the root) with
what ``CrossEncoder.predict`` adds recorded beside it, in one of the places sentence-transformers has used:

* 5.x: ``config_sentence_transformers.json`` with ``"model_type": "CrossEncoder"``, its ``activation_fn``,
  ``prompts`` and ``default_prompt_name``; a ``modules.json`` naming the one Transformer module;
* 4.x: config.json's ``"sentence_transformers": {"activation_fn": ...}`` block;
* before 4.0: config.json's ``sbert_ce_default_activation_function``.

The truncation length is the tokenizer's ``model_max_length`` (``CrossEncoder(max_length=...)`` sets it),
or the Transformer module's ``max_seq_length`` where ``sentence_bert_config.json`` gives one.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from ..artifact.cross_encoder import ACTIVATION_PATHS, ACTIVATIONS, CrossEncoderRecord, default_activation
from ..errors import ExportError

ST_CONFIG = "config_sentence_transformers.json"
MODULES = "modules.json"
TRANSFORMER_CONFIG = "sentence_bert_config.json"
_UNKNOWN_LENGTH = int(1e20)  # transformers' "no model_max_length"


def _json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ExportError(f"{path} is not valid JSON ({err}); fix or remove it.") from None


def _st_config(checkpoint_dir: str) -> dict:
    found = _json(os.path.join(checkpoint_dir, ST_CONFIG))
    return found if isinstance(found, dict) else {}


def is_cross_encoder(checkpoint_dir: str, config) -> bool:
    """The directory is a sentence-transformers CrossEncoder (any release's markers), not a plain checkpoint."""
    return (_st_config(checkpoint_dir).get("model_type") == "CrossEncoder"
            or isinstance(getattr(config, "sentence_transformers", None), dict)
            or bool(getattr(config, "sbert_ce_default_activation_function", None)))


def _activation_path(checkpoint_dir: str, config) -> tuple[Optional[str], str]:
    """(activation class path or None, where it was read) in sentence-transformers' order of precedence."""
    st_config = _st_config(checkpoint_dir)
    if st_config.get("activation_fn"):
        return st_config["activation_fn"], f"{ST_CONFIG} activation_fn"
    block = getattr(config, "sentence_transformers", None)
    if isinstance(block, dict) and block.get("activation_fn"):
        return block["activation_fn"], "config.json sentence_transformers.activation_fn"
    legacy = getattr(config, "sbert_ce_default_activation_function", None)
    if legacy:
        return legacy, "config.json sbert_ce_default_activation_function"
    return None, ""


def _check_modules(checkpoint_dir: str) -> None:
    """A CrossEncoder onnxport exports is one Transformer module at the root (sentence-transformers 5 writes a
    modules.json naming it); a Dense scoring module or a causal-LM scorer is not a sequence classifier."""
    modules = _json(os.path.join(checkpoint_dir, MODULES))
    if modules is None:
        return
    if not isinstance(modules, list):
        raise ExportError(f"{os.path.join(checkpoint_dir, MODULES)} must be a list of modules.")
    kinds = [str(m.get("type", "?")) if isinstance(m, dict) else repr(m) for m in modules]
    paths = [m.get("path", "") if isinstance(m, dict) else None for m in modules]
    if len(modules) != 1 or not kinds[0].endswith(".Transformer") or paths[0] not in ("", "."):
        raise ExportError(
            f"The cross-encoder {checkpoint_dir} has modules {kinds}; onnxport exports a cross-encoder that is one "
            "Transformer module (a sequence-classification checkpoint at the directory's root), as "
            "CrossEncoder(...).save_pretrained writes it for XLM-R, RoBERTa and RoFormer models."
        )
    settings = _json(os.path.join(checkpoint_dir, TRANSFORMER_CONFIG)) or {}
    task = settings.get("transformer_task") if isinstance(settings, dict) else None
    if task not in (None, "sequence-classification"):
        raise ExportError(f"The cross-encoder's Transformer module has transformer_task {task!r}; onnxport exports "
                          "sequence-classification cross-encoders.")


def _max_length(checkpoint_dir: str, config) -> Optional[int]:
    """The length ``CrossEncoder.predict`` truncates pairs to; None when it is the position table's."""
    settings = _json(os.path.join(checkpoint_dir, TRANSFORMER_CONFIG))
    length = settings.get("max_seq_length") if isinstance(settings, dict) else None
    if length is None:
        tokenizer_config = _json(os.path.join(checkpoint_dir, "tokenizer_config.json"))
        length = tokenizer_config.get("model_max_length") if isinstance(tokenizer_config, dict) else None
    if not isinstance(length, int) or isinstance(length, bool) or length < 1 or length >= _UNKNOWN_LENGTH:
        return None
    return min(length, config.max_sequence_length)


def _prompts(checkpoint_dir: str) -> tuple[dict[str, str], Optional[str]]:
    st_config = _st_config(checkpoint_dir)
    prompts = st_config.get("prompts") or {}
    default = st_config.get("default_prompt_name")
    where = os.path.join(checkpoint_dir, ST_CONFIG)
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ExportError(f"{where}: prompts must map names to texts (strings), got {prompts!r}.")
    if default is not None and default not in prompts:
        raise ExportError(f"{where}: default_prompt_name {default!r} is not one of the prompts {sorted(prompts)}.")
    return dict(prompts), default


def cross_encoder_record(checkpoint_dir: str, config) -> CrossEncoderRecord:
    """How ``CrossEncoder(checkpoint_dir).predict`` scores, for a ``rerank`` export. A plain sequence-classification
    checkpoint gets ``CrossEncoder``'s defaults. An activation onnxport cannot apply is an ExportError naming
    those it can."""
    _check_modules(checkpoint_dir)
    num_labels = int(config.num_labels)
    path, where = _activation_path(checkpoint_dir, config)
    if path is None:
        activation, source = default_activation(num_labels), f"CrossEncoder's default for num_labels={num_labels}"
    elif path in ACTIVATION_PATHS:
        activation, source = ACTIVATION_PATHS[path], f"{where} {path}"
    else:
        raise ExportError(
            f"The cross-encoder's activation {path!r} ({where}) is not one onnxport applies; supported: "
            f"{', '.join(f'{name} ({p})' for p, name in ACTIVATION_PATHS.items())}. Save the CrossEncoder with one "
            f"of them (CrossEncoder(..., activation_fn=torch.nn.Sigmoid())), or export --task text-classification "
            "for the raw logits."
        )
    prompts, default_prompt_name = _prompts(checkpoint_dir)
    return CrossEncoderRecord(activation, num_labels, _max_length(checkpoint_dir, config), source, prompts,
                              default_prompt_name)


__all__ = ["ACTIVATIONS", "cross_encoder_record", "is_cross_encoder"]
