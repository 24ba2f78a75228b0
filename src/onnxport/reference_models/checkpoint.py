"""The checkpoint API of the 21 classes of each framework, written once.

``CheckpointMixin`` (all three frameworks): the config check, the tied-weight rule, ``from_pretrained``,
``save_pretrained`` and the strict/missing-weight rule of loading, over two hooks a framework provides:
``state_dict_numpy()`` (HF names, PyTorch layouts) and ``load_state_dict_numpy(state)``.

``ModuleCheckpointMixin`` (PyTorch and TensorFlow, whose models are trees of named parameters with the LM
decoder tied to the head's bias and the word embeddings): ``load_state_dict_numpy`` and ``tie_weights`` over
two hooks, ``_parameter_shapes()`` and ``_write_parameters(values)``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Mapping, Optional

import numpy as np

from ..checkpoints import LoadReport, StateDict
from ..configs import EncoderConfig
from ..errors import CheckpointError
from ..families import Family
from .common import fit_or_raise, load_config_and_weights, save_checkpoint

# Heads whose vocabulary decoder aliases other parameters (transformers leaves the aliases out of files).
LM_HEADS = frozenset({"ForCausalLM", "ForMaskedLM"})


class CheckpointMixin:
    family: ClassVar[Family]
    head: ClassVar[str]
    base_model_prefix: ClassVar[str]
    framework_prefix: ClassVar[str] = ""  # "TF", "Flax": what transformers strips from the class name it saves
    config: EncoderConfig

    @classmethod
    def _check_config(cls, config: EncoderConfig) -> None:
        if not isinstance(config, cls.family.config_class):
            raise TypeError(f"{cls.__name__} needs a {cls.family.config_class.__name__}, got {type(config).__name__}.")

    @property
    def _name_prefix(self) -> str:
        """What HF parameter names of the base model start with: ``roberta.`` in head models, nothing in ``Model``."""
        return f"{self.base_model_prefix}." if self.base_model_prefix else ""

    def tied_weight_keys(self) -> dict[str, str]:
        """Checkpoint keys that alias another parameter: {alias: source}. transformers leaves aliases out of files."""
        if self.head not in LM_HEADS:
            return {}
        lm = self.family.lm_head_prefix
        tied = {f"{lm}.decoder.bias": f"{lm}.bias"}
        if self.config.tie_word_embeddings:
            tied[f"{lm}.decoder.weight"] = f"{self._name_prefix}embeddings.word_embeddings.weight"
        return tied

    # -- hooks -------------------------------------------------------------------------------
    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_state_dict_numpy(self, state: Mapping[str, np.ndarray], strict: bool = False) -> LoadReport:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def _fit(
        self, state: Mapping[str, np.ndarray], shapes: Mapping[str, tuple], optional: list[str], strict: bool
    ) -> tuple[StateDict, LoadReport]:
        """Checkpoint weights fitted to ``shapes``; with ``strict``, any missing weight is an error."""
        fitted, report = fit_or_raise(state, shapes, self.family, type(self).__name__, optional)
        if strict and report.missing:
            raise CheckpointError(f"{type(self).__name__}: {report}")
        return fitted, report

    @classmethod
    def _load(cls, checkpoint_dir: str | os.PathLike, config: Optional[EncoderConfig], config_overrides: dict,
              **constructor_options: Any):
        config, state = load_config_and_weights(checkpoint_dir, cls.family, config, **config_overrides)
        model = cls(config, **constructor_options)
        model.load_state_dict_numpy(state)
        return model

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | os.PathLike, config: Optional[EncoderConfig] = None, **config_overrides):
        """Read an HF PyTorch-format checkpoint directory (safetensors / pytorch_model.bin + config.json)."""
        return cls._load(checkpoint_dir, config, config_overrides)

    def _save(self, save_directory: str | os.PathLike, state: Mapping[str, np.ndarray], max_shard_size: Optional[int]):
        save_checkpoint(
            save_directory,
            self.config,
            state,
            # As transformers: the class's own name (a user's subclass keeps its name), without "TF" / "Flax".
            architecture=type(self).__name__.removeprefix(self.framework_prefix),
            drop_keys=list(self.tied_weight_keys()),
            max_shard_size=max_shard_size,
        )

    def save_pretrained(self, save_directory: str | os.PathLike, max_shard_size: Optional[int] = None) -> None:
        """Write the HF PyTorch format (safetensors + config.json naming the PyTorch class)."""
        self._save(save_directory, self.state_dict_numpy(), max_shard_size)


class ModuleCheckpointMixin(CheckpointMixin):
    # -- hooks -------------------------------------------------------------------------------
    def _parameter_shapes(self) -> dict[str, tuple]:
        raise NotImplementedError

    def _write_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    @property
    def base_model(self) -> Any:
        return getattr(self, self.base_model_prefix) if self.base_model_prefix else self

    def get_input_embeddings(self) -> Any:
        return self.base_model.embeddings.word_embeddings

    def get_output_embeddings(self) -> Any:
        head = self._lm_head()
        return head.decoder if head is not None else None

    def _lm_head(self) -> Any:
        """The LM head module (``lm_head`` or ``cls.predictions``), None in other heads."""
        if self.head not in LM_HEADS:
            return None
        return self.lm_head if self.family.lm_head_layout == "roberta" else self.cls.predictions

    def tie_weights(self) -> None:
        head = self._lm_head()
        if head is None:
            return
        head.decoder.bias = head.bias
        if self.config.tie_word_embeddings:
            head.decoder.weight = self.get_input_embeddings().weight

    def load_state_dict_numpy(self, state: Mapping[str, np.ndarray], strict: bool = False) -> LoadReport:
        """Load HF-named numpy weights (prefix differences handled); returns the LoadReport."""
        shapes = self._parameter_shapes()
        tied = self.tied_weight_keys()
        optional = list(tied) + [k for k in shapes if k.endswith("embed_positions.weight")]
        fitted, report = self._fit(state, shapes, optional, strict)
        # An alias is not written: its source parameter carries the value.
        self._write_parameters({name: value for name, value in fitted.items() if name not in tied})
        self.tie_weights()
        return report
