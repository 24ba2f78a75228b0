"""A sentence-transformers model directory (``modules.json`` at its root), read without sentence-transformers.

``read_sentence_stack(directory)`` returns a ``SentenceStack``: where the Transformer module's files are,
the Pooling configuration, the Dense and Normalize steps after it (Dense weights read from safetensors, or
from ``pytorch_model.bin`` with the tensor-only unpickler of ``checkpoints``: no pickled code runs), and
what ``encode`` does around the model (prompts, default prompt, ``max_seq_length``, ``do_lower_case``,
similarity function). The exporter appends the pooling modules to the encoder graph
(``exporters/sentence_head.py``); ``onnxport.json`` records ``to_record()`` for the runtime.

Both sentence-transformers layouts are read: the 2.x-4.x files (``pooling_mode_*_tokens`` booleans,
``word_embedding_dimension``, ``sentence_bert_config.json`` with ``max_seq_length``) and the 5.x ones
(``pooling_mode`` as a name or a list, ``embedding_dimension``, the length in the tokenizer's
``model_max_length``). Anything else is refused by name before an export starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .errors import CheckpointError, ExportError

MODULES_FILE = "modules.json"
MODEL_CONFIG_FILE = "config_sentence_transformers.json"
# The Transformer module's own config: sentence-transformers tries these names in this order.
TRANSFORMER_CONFIG_FILES = ("sentence_bert_config.json", "sentence_roberta_config.json",
                            "sentence_xlm-roberta_config.json", "sentence_distilbert_config.json",
                            "sentence_camembert_config.json", "sentence_albert_config.json",
                            "sentence_xlnet_config.json")

# The modules onnxport exports (the class name ending a modules.json "type"), in the order they may come.
SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize", "Dropout")
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# sentence-transformers < 5's booleans, in the order its Pooling concatenates them.
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Dense activations (the torch class path sentence-transformers records) -> the graph's op.
DENSE_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.SiLU": "silu",
}
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")
# transformers' "no limit" model_max_length (int(1e30)) and anything near it: not a length.
_NO_LENGTH = 10**18


@dataclass(frozen=True)
class DenseLayer:
    """``activation(x @ weight.T + bias)``: weight (out_features, in_features) as torch stores it."""

    weight: np.ndarray
    bias: Optional[np.ndarray]
    activation: str  # a DENSE_ACTIVATIONS value

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class SentenceStack:
    source_dir: str
    transformer_dir: str  # config.json, weights and tokenizer files of the Transformer module
    token_dimension: int  # the Transformer's hidden size (Pooling's embedding_dimension)
    pooling_modes: tuple[str, ...]  # concatenated in this order
    steps: tuple[tuple[str, Optional[DenseLayer]], ...]  # ("dense", layer) / ("normalize", None), in order
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: Optional[str] = None
    similarity_fn_name: str = "cosine"
    max_seq_length: Optional[int] = None
    do_lower_case: bool = False

    @property
    def dimension(self) -> int:
        """Width of ``sentence_embedding``."""
        dense = [layer for kind, layer in self.steps if kind == "dense"]
        return dense[-1].out_features if dense else self.token_dimension * len(self.pooling_modes)

    @property
    def normalize(self) -> bool:
        return bool(self.steps) and self.steps[-1][0] == "normalize"

    def to_record(self) -> dict[str, Any]:
        """What onnxport.json records under ``sentence_transformers`` (the runtime reads it)."""
        return {
            "prompts": dict(self.prompts),
            "default_prompt_name": self.default_prompt_name,
            "similarity_fn_name": self.similarity_fn_name,
            "max_seq_length": self.max_seq_length,
            "do_lower_case": self.do_lower_case,
            "pooling": {"modes": list(self.pooling_modes), "embedding_dimension": self.token_dimension},
            "modules": [{"type": "dense", "in_features": layer.in_features, "out_features": layer.out_features,
                         "bias": layer.bias is not None, "activation": layer.activation} if kind == "dense"
                        else {"type": kind} for kind, layer in self.steps],
            "normalize": self.normalize,
            "dimension": self.dimension,
        }


def is_sentence_transformers_dir(directory: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(os.fspath(directory), MODULES_FILE))


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} ({what}) is not readable JSON ({err}); re-save the model with "
                              "sentence-transformers.") from err


def _module_kind(entry: Any, index: int, path: str) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str) or not isinstance(entry.get("path", ""), str):
        raise CheckpointError(f"{path}: entry {index} must be an object with a string 'type' and 'path', got {entry!r}.")
    type_name = entry["type"]
    kind = type_name.rsplit(".", 1)[-1]
    if not type_name.startswith("sentence_transformers.") or kind not in SUPPORTED_MODULES:
        raise ExportError(
            f"{path}: module {index} is {type_name!r}, which onnxport cannot export. Supported sentence-transformers "
            f"modules: {', '.join(SUPPORTED_MODULES)} (a Transformer, then Pooling, then any Dense / Normalize / "
            "Dropout); export the Transformer alone with --task feature-extraction on its directory instead."
        )
    return kind


def _module_dir(root: str, entry: dict, index: int) -> str:
    relative = entry.get("path", "")
    directory = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([directory, os.path.realpath(root)]) != os.path.realpath(root):
        raise CheckpointError(f"{root}/{MODULES_FILE}: module {index}'s path {relative!r} leaves the model directory.")
    return directory


def read_pooling_config(path: str, token_dimension: int) -> tuple[str, ...]:
    """The pooling modes of a Pooling module's config.json, in concatenation order (both file formats)."""
    config = _read_json(path, "Pooling config")
    what = f"{path} (Pooling config)"
    if not isinstance(config, dict):
        raise CheckpointError(f"{what} must be a JSON object, got {type(config).__name__}.")
    dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    if dimension is not None and (type(dimension) is not int or dimension != token_dimension):
        raise CheckpointError(f"{what}: embedding_dimension {dimension!r} is not the Transformer's hidden size "
                              f"{token_dimension}; the Pooling module does not fit this model.")
    if config.get("include_prompt", True) is not True:
        raise ExportError(f"{what}: include_prompt={config['include_prompt']!r} (prompt tokens left out of the "
                          "pooling, as INSTRUCTOR models do) is not supported by onnxport; it supports pooling "
                          "over every token (include_prompt true).")
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else modes
        if not isinstance(modes, list) or not modes or not all(isinstance(m, str) for m in modes):
            raise CheckpointError(f"{what}: pooling_mode must be a mode name or a non-empty list of them, got "
                                  f"{config['pooling_mode']!r}; modes: {', '.join(POOLING_MODES)}.")
    else:
        legacy = {key: config[key] for key in LEGACY_POOLING_KEYS if key in config}
        bad = {key: value for key, value in legacy.items() if not isinstance(value, bool)}
        if bad:
            raise CheckpointError(f"{what}: {', '.join(bad)} must be true or false, got {bad!r}.")
        modes = [mode for key, mode in LEGACY_POOLING_KEYS.items() if legacy.get(key)]
        if not legacy:
            raise CheckpointError(f"{what} names no pooling mode: it needs 'pooling_mode' (one of "
                                  f"{', '.join(POOLING_MODES)}) or sentence-transformers 2-4's pooling_mode_* keys.")
        modes = modes or ["mean"]  # what sentence-transformers does with every boolean false
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise CheckpointError(f"{what}: pooling mode {unknown[0]!r} is not one onnxport reads; modes: "
                              f"{', '.join(POOLING_MODES)}.")
    return tuple(modes)


def read_dense(directory: str, in_features: int) -> DenseLayer:
    """A Dense module: config.json and its weights (safetensors, or a torch zip read without running pickles)."""
    from . import checkpoints

    path = os.path.join(directory, "config.json")
    config = _read_json(path, "Dense config")
    what = f"{path} (Dense config)"
    if not isinstance(config, dict):
        raise CheckpointError(f"{what} must be a JSON object.")
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") not in ("sentence_embedding", None):
            raise ExportError(f"{what}: {key}={config[key]!r}; onnxport exports Dense modules over "
                              "sentence_embedding only.")
    activation_path = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation_path not in DENSE_ACTIVATIONS:
        raise ExportError(f"{what}: activation_function {activation_path!r} is not supported; onnxport exports "
                          f"{', '.join(DENSE_ACTIVATIONS)}.")
    safe = os.path.join(directory, "model.safetensors")
    torch_bin = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(safe):
        state = checkpoints.read_safetensors(safe)
    elif os.path.isfile(torch_bin):
        state = checkpoints.read_torch_bin(torch_bin)  # tensors only: the allow-list unpickler
    else:
        raise CheckpointError(f"The Dense module in {directory} has no model.safetensors or pytorch_model.bin.")
    weight, bias = state.get("linear.weight"), state.get("linear.bias")
    out_features = config.get("out_features")
    if weight is None or weight.ndim != 2 or weight.shape[1] != in_features or (
            out_features is not None and weight.shape[0] != out_features):
        raise CheckpointError(
            f"The Dense module in {directory} needs linear.weight of shape ({out_features}, {in_features}) (the "
            f"width before it), got {None if weight is None else tuple(weight.shape)}.")
    if config.get("bias", True) and (bias is None or bias.shape != (weight.shape[0],)):
        raise CheckpointError(f"The Dense module in {directory} has bias=true but no linear.bias of shape "
                              f"({weight.shape[0]},).")
    return DenseLayer(np.asarray(weight, np.float32), None if bias is None or not config.get("bias", True)
                      else np.asarray(bias, np.float32), DENSE_ACTIVATIONS[activation_path])


def _read_model_config(directory: str) -> tuple[dict[str, str], Optional[str], str]:
    """(prompts, default_prompt_name, similarity_fn_name) of config_sentence_transformers.json, checked."""
    path = os.path.join(directory, MODEL_CONFIG_FILE)
    config = _read_json(path, "sentence-transformers config") if os.path.isfile(path) else {}
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must be a JSON object.")
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict):
        raise CheckpointError(f"{path}: prompts must be an object of prompt name -> prompt text, got "
                              f"{type(prompts).__name__}.")
    for name, text in prompts.items():
        if not isinstance(text, str) and text is not None:
            raise CheckpointError(f"{path}: prompt {name!r} is {text!r} ({type(text).__name__}); every prompt must be "
                                  "a string (the text put before each input, e.g. \"query: \").")
    prompts = {name: text or "" for name, text in prompts.items()}  # sentence-transformers reads None as ""
    default = config.get("default_prompt_name")
    if default is not None and (not isinstance(default, str) or default not in prompts):
        raise CheckpointError(f"{path}: default_prompt_name {default!r} is not one of the prompts "
                              f"({', '.join(map(repr, prompts)) or 'none'}).")
    similarity = config.get("similarity_fn_name") or "cosine"
    if similarity not in SIMILARITY_FUNCTIONS:
        raise CheckpointError(f"{path}: similarity_fn_name {similarity!r} is not one of "
                              f"{', '.join(SIMILARITY_FUNCTIONS)}.")
    return prompts, default, similarity


def _max_seq_length(transformer_dir: str, module_config: dict, max_position_embeddings: int) -> Optional[int]:
    """The length sentence-transformers truncates to: the module's max_seq_length (or its processor's
    model_max_length) as given, else the tokenizer's model_max_length capped at max_position_embeddings."""
    kwargs = module_config.get("processor_kwargs") or module_config.get("tokenizer_args") or {}
    explicit = module_config.get("max_seq_length")
    if explicit is None and isinstance(kwargs, dict):
        explicit = kwargs.get("model_max_length")
    if explicit is not None:
        if type(explicit) is not int or explicit < 1:
            raise CheckpointError(f"{transformer_dir}: max_seq_length must be a positive integer, got {explicit!r}.")
        return explicit
    length = None
    tokenizer_config = os.path.join(transformer_dir, "tokenizer_config.json")
    if os.path.isfile(tokenizer_config):
        value = (_read_json(tokenizer_config, "tokenizer config") or {}).get("model_max_length")
        if isinstance(value, (int, float)) and 0 < value < _NO_LENGTH:
            length = int(value)
    return max_position_embeddings if length is None else min(length, max_position_embeddings)


def transformer_directory(directory: str | os.PathLike) -> str:
    """Where the first module (the Transformer) of a sentence-transformers directory keeps its files: what an
    export for another task than sentence-embeddings reads."""
    root = os.fspath(directory)
    entries = _read_json(os.path.join(root, MODULES_FILE), "the sentence-transformers module list")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise CheckpointError(f"{root}/{MODULES_FILE} must be a non-empty list of modules.")
    return _module_dir(root, entries[0], 0)


def read_sentence_stack(directory: str | os.PathLike) -> SentenceStack:
    """The module stack of a sentence-transformers directory; refuses what onnxport cannot export, by name."""
    from .configs import AutoConfig

    root = os.fspath(directory)
    modules_path = os.path.join(root, MODULES_FILE)
    entries = _read_json(modules_path, "the sentence-transformers module list")
    if not isinstance(entries, list) or not entries:
        raise CheckpointError(f"{modules_path} must be a non-empty list of modules.")
    kinds = [_module_kind(entry, i, modules_path) for i, entry in enumerate(entries)]
    if kinds[0] != "Transformer" or kinds.count("Transformer") != 1 or kinds.count("Pooling") != 1 \
            or kinds.index("Pooling") < 1:
        raise ExportError(f"{modules_path} lists {kinds}; onnxport exports one Transformer followed by one Pooling "
                          "module, then any Dense / Normalize / Dropout modules.")
    transformer_dir = _module_dir(root, entries[0], 0)
    if not os.path.isfile(os.path.join(transformer_dir, "config.json")):
        raise CheckpointError(f"The Transformer module's directory {transformer_dir} has no config.json.")
    config = AutoConfig.from_pretrained(transformer_dir)
    module_config: dict = {}
    for name in TRANSFORMER_CONFIG_FILES:
        path = os.path.join(transformer_dir, name)
        if os.path.isfile(path):
            module_config = _read_json(path, "Transformer module config")
            if not isinstance(module_config, dict):
                raise CheckpointError(f"{path} must be a JSON object.")
            break
    task = module_config.get("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise ExportError(f"{transformer_dir}: the Transformer module runs transformer_task {task!r}; onnxport "
                          "exports sentence embeddings from 'feature-extraction' Transformers.")
    hidden = config.hidden_size
    width = hidden
    pooling_modes: tuple[str, ...] = ()
    steps: list[tuple[str, Optional[DenseLayer]]] = []
    for index, (kind, entry) in enumerate(zip(kinds[1:], entries[1:]), start=1):
        module_dir = _module_dir(root, entry, index)
        if kind == "Pooling":
            pooling_modes = read_pooling_config(os.path.join(module_dir, "config.json"), hidden)
            width = hidden * len(pooling_modes)
        elif not pooling_modes:
            raise ExportError(f"{modules_path}: module {index} ({kind}) comes before Pooling; onnxport exports "
                              "Dense / Normalize after the Pooling module only.")
        elif kind == "Dense":
            layer = read_dense(module_dir, width)
            steps.append(("dense", layer))
            width = layer.out_features
        elif kind == "Normalize":
            steps.append(("normalize", None))
        # Dropout: the identity at inference
    prompts, default_prompt_name, similarity = _read_model_config(root)
    return SentenceStack(
        source_dir=root, transformer_dir=transformer_dir, token_dimension=hidden, pooling_modes=pooling_modes,
        steps=tuple(steps), prompts=prompts, default_prompt_name=default_prompt_name, similarity_fn_name=similarity,
        max_seq_length=_max_seq_length(transformer_dir, module_config, config.max_position_embeddings),
        do_lower_case=bool(module_config.get("do_lower_case", False)),
    )


__all__ = ["DenseLayer", "SentenceStack", "SUPPORTED_MODULES", "POOLING_MODES", "is_sentence_transformers_dir",
           "read_sentence_stack"]
