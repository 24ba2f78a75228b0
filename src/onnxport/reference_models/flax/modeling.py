"""The public Flax classes: transformers' Flax calling convention over the linen task modules.

``model(input_ids, attention_mask=None, ..., params=None, dropout_rng=None, train=False, ...)`` with the
parameters as a pytree in ``model.params``. Each call runs one ``jax.jit``-compiled pure function
(compiled once per input shapes and flags); calling the model inside a user's ``jax.jit`` (or jax2onnx)
simply inlines it. Inputs are checked before tracing: shapes always, values when they are concrete.

Weights are the HF PyTorch checkpoints of the other two frameworks; ``flax_to_hf_name`` is the one
place that maps parameter-tree paths to HF names (Dense kernel (in, out) = Linear weight (out, in)
transposed; LayerNorm scale and Embed embedding = weight).

Cache: ``past_key_values`` is transformers' PyTorch legacy tuple, one tuple per layer,
``(key, value)`` or ``(key, value, cross_key, cross_value)``, each (batch, heads, seq, head_dim),
keys after rotary; presents come back in ``out.past_key_values`` grown by concatenation (the layout of
the ONNX with-past graph). ``init_cache`` returns the empty (zero-length) cache of that structure.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from ...configs import EncoderConfig
from ...errors import CheckpointError
from ..checkpoint import CheckpointMixin
from ..tracing import trace_options
from ...families import HEADS
from ..head_protocol import extra_inputs, warn_about_decoder_setting
from ..common import InputError, check_inputs, fit_or_raise, rotary_table, value_range
from ..outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    MaskedLMOutput,
    ModelOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from .heads import TASK_MODULES

OUTPUT_CLASSES: dict[str, type[ModelOutput]] = {
    "Model": BaseModelOutputWithPoolingAndCrossAttentions,
    "ForCausalLM": CausalLMOutputWithCrossAttentions,
    "ForMaskedLM": MaskedLMOutput,
    "ForSequenceClassification": SequenceClassifierOutput,
    "ForMultipleChoice": MultipleChoiceModelOutput,
    "ForTokenClassification": TokenClassifierOutput,
    "ForQuestionAnswering": QuestionAnsweringModelOutput,
}


def _register_output_pytrees() -> None:
    """Let outputs cross jax.jit boundaries (``jax.jit(lambda p, x: model(x, params=p))`` returns them whole)."""
    for cls in OUTPUT_CLASSES.values():
        try:
            jax.tree_util.register_pytree_node(
                cls,
                lambda out: (tuple(out.values()), tuple(out.keys())),
                lambda keys, values, cls=cls: cls(**dict(zip(keys, values))),
            )
        except ValueError:  # already registered (module re-imported)
            pass


_register_output_pytrees()


# ----------------------------------------------------------------------------- parameter names
def flax_to_hf_name(path: tuple[str, ...]) -> tuple[str, bool]:
    """Parameter-tree path -> (HF PyTorch name, whether the array is transposed between the two)."""
    *modules, leaf = path
    if leaf == "kernel":
        return ".".join([*modules, "weight"]), True
    if leaf in ("scale", "embedding"):
        return ".".join([*modules, "weight"]), False
    return ".".join([*modules, leaf]), False  # "bias" of Dense / LayerNorm, and the LM head's own "bias"


def params_to_state_dict(params: Any) -> dict[str, np.ndarray]:
    state = {}
    for path, value in flatten_dict(params).items():
        name, transposed = flax_to_hf_name(path)
        array = np.asarray(value)
        state[name] = np.ascontiguousarray(array.T) if transposed else array.copy()
    return state


def state_dict_to_params(state: dict[str, np.ndarray], structure: Any) -> Any:
    """HF-named arrays -> the parameter tree shaped like ``structure`` (a tree of arrays or ShapeDtypeStructs)."""
    flat = {}
    for path, leaf in flatten_dict(structure).items():
        name, transposed = flax_to_hf_name(path)
        value = np.asarray(state[name])
        flat[path] = jnp.asarray(value.T if transposed else value, dtype=leaf.dtype)
    return unflatten_dict(flat)


def _static_dims(shape) -> tuple:
    """Shape with symbolic (jax.export / jax2onnx) dimensions replaced by None, for check_inputs."""
    return tuple(d if isinstance(d, (int, np.integer)) else None for d in shape)


def _concrete_range(x) -> Optional[tuple[int, int]]:
    if x is None or isinstance(x, jax.core.Tracer):
        return None  # traced values are unknown; only shapes are checked then
    return value_range(np.asarray(x))


# ----------------------------------------------------------------------------- the base class
class FlaxPreTrainedModel(CheckpointMixin):
    """The 21 classes' base: the calling convention and the checkpoint hooks over a parameter tree."""

    output_class: ClassVar[type[ModelOutput]]
    # Keyword inputs this head takes beyond the common encoder inputs.
    extra_inputs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: EncoderConfig, input_shape: tuple = (1, 1), seed: int = 0, dtype: Any = jnp.float32,
                 _do_init: bool = True) -> None:
        """transformers' Flax signature. ``input_shape`` is accepted for compatibility (parameter shapes do not
        depend on it); only float32 is implemented."""
        warn_about_decoder_setting(config, self.head, self.family.class_prefix + self.head)
        if jnp.dtype(dtype) != jnp.float32:
            raise NotImplementedError(f"{type(self).__name__} runs in float32 only, got dtype={dtype}.")
        self._check_config(config)
        self.config = config
        self.module = TASK_MODULES[self.head](config, self.family)
        self._param_structure = self._eval_param_structure()
        self._params = self.init_weights(seed) if _do_init else None
        # trace: the tracing options in force, static so that a compile made inside an exporter's block
        # (the encoder reads them while jit traces) is never reused outside it, and the reverse.
        self._jit_forward = jax.jit(self._forward, static_argnames=("flags", "trace"))

    # -- parameters ----------------------------------------------------------------------------
    @property
    def params(self) -> Any:
        if self._params is None:
            raise ValueError(f"{type(self).__name__} was created with _do_init=False; set model.params first.")
        return self._params

    @params.setter
    def params(self, params: Any) -> None:
        expected = jax.tree_util.tree_map(lambda x: tuple(x.shape), self._param_structure)
        got = jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), params)
        if expected != got:
            raise ValueError(f"{type(self).__name__}: the parameter tree does not match the model's structure.")
        self._params = params

    def _dummy_inputs(self) -> dict[str, Any]:
        shape = (1, 1, 1) if self.head == "ForMultipleChoice" else (1, 1)
        inputs: dict[str, Any] = {"input_ids": jnp.zeros(shape, dtype=jnp.int32)}
        if self.config.add_cross_attention:  # so cross-attention parameters exist
            inputs["encoder_hidden_states"] = jnp.zeros((1, 1, self.config.hidden_size), dtype=jnp.float32)
        return inputs

    def _eval_param_structure(self) -> Any:
        flags = dict(use_cache=False, output_attentions=False, output_hidden_states=False, deterministic=True)

        def init(rng):
            return self.module.init({"params": rng}, self._dummy_inputs(), {}, method="forward", **flags)

        return jax.eval_shape(init, jax.random.PRNGKey(0))["params"]

    def init_weights(self, seed: int = 0) -> Any:
        """transformers' initialisation: N(0, initializer_range) weights, zero biases, LayerNorm 1/0, zero padding row."""
        rng = np.random.default_rng(seed)
        std = self.config.initializer_range
        pad = self.config.pad_token_id
        state = {}
        for path, leaf in flatten_dict(self._param_structure).items():
            name, transposed = flax_to_hf_name(path)
            shape = tuple(reversed(leaf.shape)) if transposed else tuple(leaf.shape)
            if "LayerNorm." in name or "layer_norm." in name:
                value = np.ones(shape) if name.endswith(".weight") else np.zeros(shape)
            elif name.endswith("bias"):
                value = np.zeros(shape)
            else:
                value = rng.normal(0.0, std, size=shape)
                if pad is not None and name.endswith(("word_embeddings.weight", "position_embeddings.weight")):
                    value[pad] = 0.0
            state[name] = value.astype(np.float32)
        return state_dict_to_params(state, self._param_structure)

    def num_parameters(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(self._param_structure)))

    # -- checkpoint hooks ----------------------------------------------------------------------
    def _derived_keys(self) -> dict[str, np.ndarray]:
        """Non-parameter entries the PyTorch state dict carries (RoFormer's sinusoidal table buffer)."""
        if not self.family.rotary:
            return {}
        table = rotary_table(self.config.max_position_embeddings, self.config.head_dim)
        return {f"{self._name_prefix}encoder.embed_positions.weight": table}

    def state_dict_numpy(self, params: Any = None) -> dict[str, np.ndarray]:
        """The canonical HF-named state dict, with the same keys as the PyTorch model's ``state_dict()``."""
        state = params_to_state_dict(self.params if params is None else params)
        for alias, source in self.tied_weight_keys().items():
            state[alias] = state[source].copy()
        state.update(self._derived_keys())
        return dict(sorted(state.items()))

    def load_state_dict_numpy(self, state: dict[str, np.ndarray], strict: bool = False):
        """Load HF-named numpy weights (prefix differences handled); returns the LoadReport."""
        own = params_to_state_dict(self._params) if self._params is not None else None
        shapes = {}
        for path, leaf in flatten_dict(self._param_structure).items():
            name, transposed = flax_to_hf_name(path)
            shapes[name] = tuple(reversed(leaf.shape)) if transposed else tuple(leaf.shape)
        tied = self.tied_weight_keys()
        derived = self._derived_keys()
        for alias, source in tied.items():
            shapes[alias] = shapes[source]
        shapes.update({k: v.shape for k, v in derived.items()})
        fitted, report = fit_or_raise(state, shapes, self.family, type(self).__name__, list(tied) + list(derived))
        for alias, source in tied.items():  # a file may carry only the alias (e.g. lm_head.decoder.bias)
            if source not in fitted and alias in fitted:
                fitted[source] = fitted[alias]
                if source in report.missing:
                    report.missing.remove(source)
        if strict and report.missing:
            raise CheckpointError(f"{type(self).__name__}: {report}")
        if own is None:
            if report.missing:
                own = params_to_state_dict(self.init_weights())
            else:
                own = {}
        merged = {name: fitted.get(name, own.get(name)) for name in shapes if name not in tied and name not in derived}
        self._params = state_dict_to_params(merged, self._param_structure)
        return report

    # -- checkpoints (the parameters are made from the file, not initialised first) --------------
    @classmethod
    def from_pretrained(
        cls, checkpoint_dir: str | os.PathLike, config: Optional[EncoderConfig] = None, seed: int = 0, **config_overrides
    ):
        return cls._load(checkpoint_dir, config, config_overrides, seed=seed, _do_init=False)

    def save_pretrained(self, save_directory: str | os.PathLike, params: Any = None,
                        max_shard_size: Optional[int] = None) -> None:
        """HF format: config.json (architectures = the PyTorch class name) + safetensors with HF names."""
        self._save(save_directory, self.state_dict_numpy(params), max_shard_size)

    # -- cache ---------------------------------------------------------------------------------
    def init_cache(self, batch_size: int, max_length: int) -> tuple:
        """An empty cache: per layer (key, value) of shape (batch, heads, 0, head_dim).

        ``max_length`` is only checked against the position table; the cache grows by concatenation
        (transformers' PyTorch legacy format, the ONNX with-past layout) rather than living in a fixed buffer.
        """
        if max_length > self.config.max_sequence_length:
            raise InputError(
                f"max_length={max_length} exceeds the model's maximum of {self.config.max_sequence_length} positions."
            )
        shape = (batch_size, self.config.num_attention_heads, 0, self.config.head_dim)
        return tuple(
            (jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32)) for _ in range(self.config.num_hidden_layers)
        )

    # -- forward -------------------------------------------------------------------------------
    def _forward(self, params, inputs, targets, dropout_rng, flags, trace):
        use_cache, output_attentions, output_hidden_states, train = flags
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
        return self.module.apply(
            {"params": params}, inputs, targets, method="forward", rngs=rngs, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, deterministic=not train,
        )

    # transformers' Flax signature, one group of arguments a line; what transformers' Flax classes do not
    # take positionally (embeddings, targets, the cache switch) is keyword-only.
    def __call__(
        self,
        input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
        encoder_hidden_states=None, encoder_attention_mask=None,
        params: Any = None, dropout_rng: Optional[jax.Array] = None, train: bool = False,
        output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None, past_key_values: Optional[tuple] = None,
        *,
        inputs_embeds=None, labels=None, start_positions=None, end_positions=None, use_cache: Optional[bool] = None,
    ):
        config = self.config
        extras = dict(
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values, labels=labels, start_positions=start_positions,
            end_positions=end_positions, use_cache=use_cache,
        )
        for name, value in extras.items():
            if value is not None and name not in self.extra_inputs:
                raise TypeError(f"{type(self).__name__}.__call__() got an unexpected keyword argument {name!r}")

        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.use_return_dict if return_dict is None else return_dict
        if "use_cache" in self.extra_inputs and config.is_decoder:
            use_cache = config.use_cache if use_cache is None else use_cache
        else:
            use_cache = False
        if labels is not None and self.head == "ForCausalLM":
            use_cache = False  # as transformers: training-style calls do not build a cache

        inputs = dict(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values,
        )
        self._check(inputs)
        inputs = {k: (v if k == "past_key_values" or v is None else jnp.asarray(v)) for k, v in inputs.items()}
        targets = {k: jnp.asarray(v) for k, v in
                   dict(labels=labels, start_positions=start_positions, end_positions=end_positions).items()
                   if v is not None}
        flags = (bool(use_cache), bool(output_attentions), bool(output_hidden_states), bool(train))
        raw = self._jit_forward(self.params if params is None else params, inputs, targets, dropout_rng, flags=flags,
                                  trace=trace_options())
        output = self.output_class(**{name: raw.get(name) for name in self.output_class.field_names})
        return output if return_dict else output.to_tuple()

    def _check(self, inputs: dict[str, Any]) -> None:
        """Clear InputErrors before any JAX error: shapes always, values when concrete (not under tracing)."""
        input_ids, inputs_embeds = inputs["input_ids"], inputs["inputs_embeds"]
        flat = {name: inputs[name] for name in ("input_ids", "attention_mask", "token_type_ids", "position_ids")}
        embeds_shape = None if inputs_embeds is None else _static_dims(np.shape(inputs_embeds))
        shapes = {name: None if x is None else _static_dims(np.shape(x)) for name, x in flat.items()}
        if self.head == "ForMultipleChoice":
            reference = shapes["input_ids"] if input_ids is not None else embeds_shape
            want = 3 if input_ids is not None else 4
            if reference is not None and len(reference) != want:
                raise InputError(
                    f"Multiple choice inputs need shape (batch, num_choices, sequence), got {reference}."
                )

            def merge(shape):
                if shape is None or len(shape) < 2:
                    return shape
                lead = None if None in shape[:2] else shape[0] * shape[1]
                return (lead,) + tuple(shape[2:])

            shapes = {name: merge(shape) for name, shape in shapes.items()}
            embeds_shape = merge(embeds_shape)
        past = inputs["past_key_values"]
        past_length = 0
        if past:
            if len(past) != self.config.num_hidden_layers:
                raise InputError(
                    f"past_key_values has {len(past)} layers, the model has {self.config.num_hidden_layers}."
                )
            if any(len(layer) not in (2, 4) for layer in past):
                raise InputError("Each past_key_values entry must be (key, value) or (key, value, cross_key, cross_value).")
            past_length = _static_dims(np.shape(past[0][0]))[2]
            if past_length is None:
                past_length = 0  # symbolic past length (export): nothing to check statically
        check_inputs(
            self.config,
            self.family,
            input_shape=shapes["input_ids"],
            embeds_shape=embeds_shape,
            attention_mask_shape=shapes["attention_mask"],
            token_type_ids_shape=shapes["token_type_ids"],
            position_ids_shape=shapes["position_ids"],
            past_length=past_length,
            ids_range=_concrete_range(input_ids),
            token_type_range=_concrete_range(inputs["token_type_ids"]),
            position_range=_concrete_range(inputs["position_ids"]),
        )
        if inputs["encoder_hidden_states"] is not None and not self.config.add_cross_attention:
            raise InputError(
                "encoder_hidden_states were passed but the model has no cross-attention; "
                "load it with add_cross_attention=True (and is_decoder=True)."
            )


# ----------------------------------------------------------------------------- the seven heads
def _generic_head(head: str) -> type[FlaxPreTrainedModel]:
    attrs = {"head": head, "output_class": OUTPUT_CLASSES[head], "extra_inputs": extra_inputs(head), "__module__": __name__}
    return type(f"FlaxEncoder{head}", (FlaxPreTrainedModel,), attrs)


GENERIC_HEADS = tuple(_generic_head(head) for head in HEADS)
