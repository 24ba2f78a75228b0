"""Model configurations: the three family configs, HF ``config.json`` in and out.

Field names and defaults follow transformers 4.x (``XLMRobertaConfig``,
``RobertaPreLayerNormConfig``, ``RoFormerConfig`` plus the ``PretrainedConfig``
fields these models read), so a ``config.json`` written by either library loads
in the other. Keys this module does not know are kept and written back.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, ClassVar
from .errors import ConfigError  # noqa: F401  (re-exported: the old import path keeps working)

CONFIG_NAME = "config.json"

# Activations every framework implementation provides (see reference_models/*/activations).
SUPPORTED_ACTIVATIONS = (
    "gelu",
    "gelu_new",
    "gelu_fast",
    "gelu_pytorch_tanh",
    "gelu_python",
    "quick_gelu",
    "relu",
    "silu",
    "swish",
    "tanh",
    "sigmoid",
    "linear",
)
POSITION_EMBEDDING_TYPES = ("absolute", "relative_key", "relative_key_query")
PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")

# Fields of transformers' PretrainedConfig that these models read or that
# checkpoints commonly carry; defaults as in transformers 4.x.
_COMMON_DEFAULTS: dict[str, Any] = {
    "is_decoder": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
    "output_hidden_states": False,
    "output_attentions": False,
    "return_dict": True,
    "chunk_size_feed_forward": 0,
    "problem_type": None,
    "architectures": None,
    "finetuning_task": None,
    "tokenizer_class": None,
    "bos_token_id": None,
    "pad_token_id": None,
    "eos_token_id": None,
    "sep_token_id": None,
    "torch_dtype": None,
}


class EncoderConfig:
    """Base of the three family configs. Subclasses only declare data."""

    model_type: ClassVar[str] = ""
    family_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **kwargs: Any) -> None:
        values = {**_COMMON_DEFAULTS, **self.family_defaults}
        id2label = kwargs.pop("id2label", None)
        label2id = kwargs.pop("label2id", None)
        num_labels = kwargs.pop("num_labels", None)
        kwargs.pop("model_type", None)
        kwargs.pop("transformers_version", None)
        if "dtype" in kwargs and "torch_dtype" not in kwargs:
            kwargs["torch_dtype"] = kwargs.pop("dtype")
        for key, value in kwargs.items():
            values[key] = value
        for key, value in values.items():
            setattr(self, key, value)
        # Keys transformers knows but we do not are kept verbatim for the round trip.
        self._extra_keys = [k for k in kwargs if k not in _COMMON_DEFAULTS and k not in self.family_defaults]

        if id2label is not None:
            self.id2label = _label_map(id2label)
            if num_labels is not None and num_labels != len(self.id2label):
                raise ConfigError(
                    f"num_labels={num_labels} disagrees with id2label, which has {len(self.id2label)} labels; "
                    "pass one of them or make them agree."
                )
        else:
            self.num_labels = 2 if num_labels is None else num_labels
        if label2id is not None:
            if not isinstance(label2id, dict):
                raise ConfigError(f"label2id must be an object of label -> class index, got {type(label2id).__name__}.")
            try:
                self.label2id = {k: int(v) for k, v in label2id.items()}
            except (TypeError, ValueError):
                raise ConfigError(f"label2id values must be integer class indices, got {label2id!r}.") from None
        else:
            self.label2id = {label: i for i, label in self.id2label.items()}
        self._post_init()
        self.validate()

    # transformers derives these two from id2label; so do we.
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"num_labels must be a positive integer, got {value!r}.")
        self.id2label = {i: f"LABEL_{i}" for i in range(value)}
        self.label2id = {f"LABEL_{i}": i for i in range(value)}

    @property
    def use_return_dict(self) -> bool:
        return bool(self.return_dict)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def embedding_width(self) -> int:
        """Width of the token embeddings (and of the LM head's output projection input): hidden_size, except
        RoFormer's optional smaller embedding_size (projected up to hidden_size)."""
        return self.hidden_size

    @property
    def projects_embeddings(self) -> bool:
        """Whether the encoder projects embeddings of ``embedding_width`` up to ``hidden_size`` (RoFormer's
        smaller embedding_size: transformers' ``embeddings_project``)."""
        return self.embedding_width != self.hidden_size

    def _post_init(self) -> None:
        """Family hook for derived fields (RoFormer's embedding_size)."""

    def validate(self) -> None:
        for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                      "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{field} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads}); choose sizes where hidden_size % num_attention_heads == 0."
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"hidden_act={self.hidden_act!r} is not supported; use one of {', '.join(SUPPORTED_ACTIVATIONS)}."
            )
        if self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type={self.problem_type!r} is not one of {PROBLEM_TYPES}.")
        eps = self.layer_norm_eps
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0.0 < eps < float("inf"):
            raise ConfigError(f"layer_norm_eps must be a positive finite number (typically 1e-5 or 1e-12), got {eps!r}.")
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{field} must be in [0, 1), got {value!r}.")
        classifier_dropout = getattr(self, "classifier_dropout", None)
        if classifier_dropout is not None and (not isinstance(classifier_dropout, (int, float))
                                               or not 0.0 <= classifier_dropout < 1.0):
            raise ConfigError(f"classifier_dropout must be None or in [0, 1), got {classifier_dropout!r}.")
        if self.add_cross_attention and not self.is_decoder:
            raise ConfigError("add_cross_attention=True needs is_decoder=True (cross-attention is a decoder feature).")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id={self.pad_token_id} is outside the vocabulary (vocab_size={self.vocab_size}).")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in list(_COMMON_DEFAULTS) + list(self.family_defaults) + self._extra_keys:
            out[key] = copy.deepcopy(getattr(self, key))
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = dict(self.label2id)
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())
        return path

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **overrides: Any) -> "EncoderConfig":
        model_type = config_dict.get("model_type")
        if cls.model_type and model_type not in (None, cls.model_type):
            raise ConfigError(
                f"config.json has model_type={model_type!r} but {cls.__name__} expects {cls.model_type!r}; "
                "load it with AutoConfig or the matching config class."
            )
        return cls(**{**config_dict, **overrides})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> "EncoderConfig":
        config_dict = read_config_dict(path)
        if not cls.model_type:
            return AutoConfig.from_dict(config_dict, **overrides)
        return cls.from_dict(config_dict, **overrides)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EncoderConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


def _label_map(id2label: Any) -> dict[int, str]:
    """id2label with integer keys (config.json stores them as strings, as transformers writes them)."""
    if not isinstance(id2label, dict):
        raise ConfigError(f"id2label must be an object of class index -> label, got {type(id2label).__name__}.")
    labels = {}
    for key, label in id2label.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ConfigError(
                f"id2label key {key!r} is not an integer class index; write id2label as {{\"0\": \"NEGATIVE\", ...}}."
            ) from None
        if index < 0 or str(index) != str(key).strip():
            raise ConfigError(f"id2label key {key!r} is not a non-negative integer class index.")
        labels[index] = label
    if sorted(labels) != list(range(len(labels))):
        raise ConfigError(
            f"id2label keys must be the class indices 0..{len(labels) - 1}, got {sorted(labels)}; "
            "the classifier's outputs are numbered from 0."
        )
    return labels


def read_config_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``config.json`` from a checkpoint directory (or the file itself)."""
    path = os.fspath(path)
    file = os.path.join(path, CONFIG_NAME) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(
            f"No {CONFIG_NAME} at {file!r}. Point to an HF-format checkpoint directory "
            "(config.json + model.safetensors or pytorch_model.bin)."
        )
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{file} is not valid JSON ({err}); re-save the config.") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{file} must hold a JSON object, found {type(data).__name__}.")
    return data


# The BERT-base sizes both architectures default to in transformers.
_BERT_BASE_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "use_cache": True,
}

_ROBERTA_LIKE_DEFAULTS: dict[str, Any] = {
    **_BERT_BASE_DEFAULTS,
    "max_position_embeddings": 512,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "position_embedding_type": "absolute",
    "classifier_dropout": None,
}


class _RobertaLikeConfig(EncoderConfig):
    def validate(self) -> None:
        super().validate()
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ConfigError(
                f"position_embedding_type={self.position_embedding_type!r} is not one of {POSITION_EMBEDDING_TYPES}."
            )
        # RoBERTa positions start after the padding index, so the table must hold at least one real position.
        if self.max_position_embeddings <= (self.pad_token_id or 0) + 1:
            raise ConfigError(
                f"max_position_embeddings={self.max_position_embeddings} leaves no room for positions after "
                f"pad_token_id={self.pad_token_id} (RoBERTa positions start at pad_token_id + 1)."
            )

    @property
    def max_sequence_length(self) -> int:
        """Longest input the learned position table covers (RoBERTa offsets positions by pad_token_id + 1)."""
        return self.max_position_embeddings - (self.pad_token_id or 0) - 1


class XLMRobertaConfig(_RobertaLikeConfig):
    model_type = "xlm-roberta"
    family_defaults = {"vocab_size": 30522, **_ROBERTA_LIKE_DEFAULTS}


class RobertaConfig(_RobertaLikeConfig):
    """RoBERTa checkpoints (``model_type: roberta``): XLM-R's architecture with a byte-level BPE vocabulary."""

    model_type = "roberta"
    family_defaults = {"vocab_size": 50265, **_ROBERTA_LIKE_DEFAULTS}


class RobertaPreLayerNormConfig(_RobertaLikeConfig):
    model_type = "roberta-prelayernorm"
    family_defaults = {"vocab_size": 50265, **_ROBERTA_LIKE_DEFAULTS}


class RoFormerConfig(EncoderConfig):
    model_type = "roformer"
    family_defaults = {
        **_BERT_BASE_DEFAULTS,
        "vocab_size": 50000,
        "embedding_size": None,
        "max_position_embeddings": 1536,
        "pad_token_id": 0,
        "rotary_value": False,
    }

    def _post_init(self) -> None:
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.embedding_size, int) or self.embedding_size < 1:
            raise ConfigError(f"embedding_size must be a positive integer or None, got {self.embedding_size!r}.")
        if self.head_dim % 2:
            raise ConfigError(
                f"RoFormer's rotary embedding rotates pairs of features, so the head size "
                f"(hidden_size / num_attention_heads = {self.head_dim}) must be even."
            )

    @property
    def position_embedding_type(self) -> str:
        return "rotary"

    @property
    def embedding_width(self) -> int:
        return self.embedding_size

    @property
    def max_sequence_length(self) -> int:
        return self.max_position_embeddings


CONFIG_CLASSES: dict[str, type[EncoderConfig]] = {
    cls.model_type: cls for cls in (XLMRobertaConfig, RobertaConfig, RobertaPreLayerNormConfig, RoFormerConfig)
}
# Spellings of model_type seen in the wild.
_MODEL_TYPE_ALIASES = {"xlm_roberta": "xlm-roberta", "roberta_prelayernorm": "roberta-prelayernorm"}


class AutoConfig:
    """Pick the config class from ``model_type``."""

    @staticmethod
    def config_class(model_type: str | None) -> type[EncoderConfig]:
        key = _MODEL_TYPE_ALIASES.get(model_type, model_type)  # type: ignore[arg-type]
        if key not in CONFIG_CLASSES:
            raise ConfigError(
                f"Unknown model_type {model_type!r}; onnxport supports {', '.join(sorted(CONFIG_CLASSES))}."
            )
        return CONFIG_CLASSES[key]

    @classmethod
    def for_model(cls, model_type: str, **kwargs: Any) -> EncoderConfig:
        return cls.config_class(model_type)(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **overrides: Any) -> EncoderConfig:
        if "model_type" not in config_dict:
            raise ConfigError("config.json has no model_type; onnxport needs it to pick the model family.")
        config_class = cls.config_class(config_dict["model_type"])
        return config_class(**{**config_dict, **overrides})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> EncoderConfig:
        return cls.from_dict(read_config_dict(path), **overrides)
