"""What an exported graph takes and returns, per task: the one source of truth.

Exporters (PyTorch, TensorFlow, Flax), the validator and the runtime all read
these specs, so the three exports of one checkpoint have identical signatures.
Names follow Optimum's ONNX conventions (``input_ids``, ``attention_mask``,
``token_type_ids`` whenever the model has more than one token type,
``past_key_values.{i}.key|value`` in, ``present.{i}.key|value`` out), so
Optimum's ORTModel classes can read our export directories too.

Cross-attention decoders (``add_cross_attention``: the decoder half of an
EncoderDecoderModel) also take ``encoder_hidden_states`` (batch,
encoder_sequence_length, hidden_size) and ``encoder_attention_mask`` (batch,
encoder_sequence_length) wherever transformers' head takes them. Their cache is
the self-attention keys/values only: the cross-attention keys/values are a pure
function of ``encoder_hidden_states``, which every step takes again, so the
graph recomputes them (exactly what transformers' EncoderDecoderCache holds).

A shape is a tuple of dimensions; a ``str`` dimension is dynamic (its name is
the symbolic dimension in the ONNX graph), an ``int`` is fixed.

This module imports no deep-learning framework, no exporter and no runtime (both use it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Mapping

import numpy as np

from ..configs import EncoderConfig
from ..families import FAMILIES, Family, family_of
from .input_checks import check_inputs, value_range
from .records import Record
from ..errors import InputError, TaskError  # noqa: F401  (TaskError re-exported: the old import path keeps working)

# Optimum's dimension names.
BATCH = "batch_size"
SEQUENCE = "sequence_length"
CHOICES = "num_choices"
PAST = "past_sequence_length"
TOTAL = "past_sequence_length + sequence_length"
ENCODER_SEQUENCE = "encoder_sequence_length"

Dim = str | int


# What a graph output holds, per task: (name, shape). A dimension that is a config field's name
# (CONFIG_DIMS) is that field's value; the others are dynamic dimensions.
CONFIG_DIMS = ("hidden_size", "vocab_size", "num_labels")
POOLER_OUTPUT = "pooler_output"  # only where the family has a pooler and the checkpoint its weights


@dataclass(frozen=True)
class Task:
    name: str
    head: str  # reference-model head suffix, e.g. "ForMaskedLM"
    description: str
    outputs: tuple[tuple[str, tuple[Dim, ...]], ...]
    can_use_past: bool = False
    # A cross-attention decoder's head takes encoder_hidden_states / encoder_attention_mask (as transformers'
    # Model, ForCausalLM and ForMaskedLM do; test_cross_attention checks this against the heads' signatures).
    takes_encoder_states: bool = False
    # A task whose graph is another task's (rerank: a cross-encoder is a sequence classifier); its own pipeline
    # reads what the export records beside the graph. The parity matrix exports each graph once.
    graph_of: str | None = None
    # The checkpoint is a sentence-transformers directory (modules.json): the graph is the Transformer module's
    # encoder followed by its Pooling / Dense / Normalize modules (exporters/sentence_head.py), not an HF head.
    sentence_stack: bool = False

    @property
    def is_head_graph(self) -> bool:
        """The task's graph is its own transformers head's (what a plain checkpoint of that head exports): not
        another task's graph (rerank) and not a sentence-transformers stack. Loops over every head graph use it."""
        return self.graph_of is None and not self.sentence_stack


_TOKENS = (BATCH, SEQUENCE)

# Optimum's task names -> the head that serves them and the outputs its graph returns.
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("feature-extraction", "Model", "last_hidden_state (+ pooler_output where the family has a pooler)",
             (("last_hidden_state", (*_TOKENS, "hidden_size")), (POOLER_OUTPUT, (BATCH, "hidden_size"))),
             takes_encoder_states=True),
        Task("text-generation", "ForCausalLM", "causal LM logits; with_past adds the key/value cache",
             (("logits", (*_TOKENS, "vocab_size")),), can_use_past=True,
             takes_encoder_states=True),
        Task("fill-mask", "ForMaskedLM", "masked-LM logits over the vocabulary", (("logits", (*_TOKENS, "vocab_size")),),
             takes_encoder_states=True),
        Task("text-classification", "ForSequenceClassification", "one row of num_labels logits per sequence",
             (("logits", (BATCH, "num_labels")),)),
        Task("multiple-choice", "ForMultipleChoice", "one logit per choice; inputs are (batch, choices, sequence)",
             (("logits", (BATCH, CHOICES)),)),
        Task("token-classification", "ForTokenClassification", "num_labels logits per token",
             (("logits", (*_TOKENS, "num_labels")),)),
        Task("question-answering", "ForQuestionAnswering", "start_logits / end_logits per token",
             (("start_logits", _TOKENS), ("end_logits", _TOKENS))),
        Task("rerank", "ForSequenceClassification", "a cross-encoder: num_labels logits per (query, document) "
             "pair; the rerank pipeline applies the activation onnxport.json records",
             (("logits", (BATCH, "num_labels")),), graph_of="text-classification"),
        Task("sentence-embeddings", "Model", "a sentence-transformers model: token_embeddings, and sentence_embedding "
             "after its pooling, Dense and Normalize modules",
             (("token_embeddings", (*_TOKENS, "hidden_size")), ("sentence_embedding", (BATCH, "sentence_dimension"))),
             sentence_stack=True),
    )
}

# Which family can be exported for which task. Every family has every head today;
# the table exists so a family that lacks one fails with a clear message, not deep in an exporter.
FAMILY_TASKS: dict[str, tuple[str, ...]] = {model_type: tuple(TASKS) for model_type in FAMILIES}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise TaskError(f"Unknown task {name!r}; valid tasks: {', '.join(TASKS)}.") from None


def task_for_head(head: str) -> str:
    """The task name served by a head ("ForMaskedLM" -> "fill-mask"; a task with its own graph, not one that
    reuses another's)."""
    for task in TASKS.values():
        if task.head == head and task.is_head_graph:
            return task.name
    raise TaskError(f"No export task serves the head {head!r}.")


# What a graph tensor is for. The cache roles carry the layer they belong to.
Role = Literal["ids", "mask", "types", "encoder_states", "encoder_mask", "past_key", "past_value", "present_key",
               "present_value", "output"]
PAST_ROLES: tuple[Role, Role] = ("past_key", "past_value")
PRESENT_ROLES: tuple[Role, Role] = ("present_key", "present_value")
CACHE_ROLES = PAST_ROLES + PRESENT_ROLES

# Optimum's name for each role (the cache names hold their layer).
_ROLE_NAMES: dict[str, str] = {
    "ids": "input_ids",
    "mask": "attention_mask",
    "types": "token_type_ids",
    "encoder_states": "encoder_hidden_states",
    "encoder_mask": "encoder_attention_mask",
    "past_key": "past_key_values.{layer}.key",
    "past_value": "past_key_values.{layer}.value",
    "present_key": "present.{layer}.key",
    "present_value": "present.{layer}.value",
}
_CACHE_NAME = re.compile(r"(past_key_values|present)\.(\d+)\.(key|value)")


def tensor_name(role: Role, layer: int | None = None) -> str:
    """The graph tensor name of ``role`` (of ``layer`` for the cache roles)."""
    return _ROLE_NAMES[role].format(layer=layer)


def role_of(name: str) -> tuple[Role, int | None]:
    """(role, layer) of a graph tensor name: the inverse of ``tensor_name``, for onnxport.json files (which
    store names only) and graph passes that see names; anything else is an ``output``."""
    cache = _CACHE_NAME.fullmatch(name)
    if cache:
        stage, layer, kind = cache.groups()
        return f"{'past' if stage == 'past_key_values' else 'present'}_{kind}", int(layer)  # type: ignore[return-value]
    for role, pattern in _ROLE_NAMES.items():
        if pattern == name:
            return role, None  # type: ignore[return-value]
    return "output", None


@dataclass(frozen=True)
class TensorSpec(Record):
    RECORD_KEYS = ("name", "dtype", "shape")  # role and layer follow from the name

    name: str
    dtype: str  # numpy dtype name: "int64", "float32" ("float16" for the cache of fp16 exports)
    shape: tuple[Dim, ...]
    # Derived from the name when not given (onnxport.json stores names only; the name is the contract).
    role: Role | None = None
    layer: int | None = None  # cache tensors: the layer they hold

    def __post_init__(self) -> None:
        if self.role is None:
            role, layer = role_of(self.name)
            object.__setattr__(self, "role", role)
            object.__setattr__(self, "layer", layer)

    @property
    def is_cache(self) -> bool:
        return self.role in CACHE_ROLES

    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(d["name"], d["dtype"], tuple(d["shape"]))

    @classmethod
    def of(cls, role: Role, dtype: str, shape: tuple[Dim, ...], layer: int | None = None) -> "TensorSpec":
        return cls(tensor_name(role, layer), dtype, shape, role, layer)


# Model facts the spec records for making and checking inputs, under "extra" in onnxport.json.
# None: not recorded (a hand-written spec); build_io_spec records all of them.
MODEL_FACTS = ("pad_token_id", "vocab_size", "type_vocab_size", "num_attention_heads", "head_dim", "max_sequence_length")


# What the cache of a cross-attention decoder's export carries (onnxport.json says it, for readers of the file).
CROSS_ATTENTION_CACHE = ("past_key_values.{i}.key|value / present.{i}.key|value: self-attention keys/values only; "
                         "the cross-attention keys/values are recomputed from encoder_hidden_states, which every "
                         "step takes")


@dataclass(frozen=True)
class IOSpec(Record):
    """Inputs and outputs of one exported graph, in graph order."""

    # onnxport.json's io_spec: the model facts under "extra", the key every reader of the file knows
    RECORD_KEYS = ("task", "model_type", "with_past", "num_layers", "inputs", "outputs", "extra")

    task: str
    model_type: str
    with_past: bool
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    num_layers: int = 0
    pad_token_id: int = 0  # the id padded positions hold
    vocab_size: int | None = None  # rows of the word-embedding table: ids lie in [0, vocab_size)
    type_vocab_size: int | None = None  # rows of the token-type table
    num_attention_heads: int | None = None  # cache shape (batch, num_attention_heads, past, head_dim)
    head_dim: int | None = None
    max_sequence_length: int | None = None  # longest past + sequence the position table covers

    @property
    def extra(self) -> Mapping[str, Any]:
        """The recorded model facts as the read-only mapping onnxport.json stores (``spec.extra["head_dim"]``)."""
        return MappingProxyType({k: getattr(self, k) for k in MODEL_FACTS if getattr(self, k) is not None})

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, role: Role) -> TensorSpec | None:
        """The input of ``role`` (ids, mask, types, encoder_states, encoder_mask), or None when the graph does
        not take one."""
        return next((t for t in self.inputs if t.role == role), None)

    @property
    def result_names(self) -> list[str]:
        """The task's outputs: every output but the cache."""
        return [t.name for t in self.outputs if not t.is_cache]

    @property
    def head(self) -> str:
        return TASKS[self.task].head

    @property
    def reads_first_token_only(self) -> bool:
        """The graph's only output reads the first position of the last layer (the sentence classifier).

        Front ends then trace the reference model with ``first_token_only_last_layer`` set: the last
        layer computes its query, attention output and feed-forward for that position alone.
        """
        return self.head == "ForSequenceClassification" and self.output_names == ["logits"] and not self.with_past

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export``'s dynamic_axes: {tensor name: {axis: dimension name}}."""
        return {t.name: t.dynamic_axes() for t in (*self.inputs, *self.outputs) if t.dynamic_axes()}

    # -- adapters: graph tensors <-> a reference model's HF call, shared by the three front ends,
    #    validation and parity ------------------------------------------------------------------
    def model_kwargs(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """The HF keyword call of a reference model (any framework's arrays) for feeds keyed by graph input
        name: the cache inputs become ``past_key_values`` (key, value) pairs; causal LMs build a cache only
        when the graph returns one."""
        kwargs = {t.name: feeds[t.name] for t in self.inputs if t.name in feeds and not t.is_cache}
        if self.with_past:
            kwargs["past_key_values"] = tuple((feeds[k], feeds[v]) for k, v in self.past_names())
        if self.head == "ForCausalLM":
            kwargs["use_cache"] = self.with_past
        return kwargs

    def select(self, out: Any) -> tuple[Any, ...]:
        """The graph's outputs, in graph order, from a reference model's HF output object
        (``present.{i}.key`` / ``.value`` are ``out.past_key_values[i][0]`` / ``[1]``)."""
        return tuple(out.past_key_values[t.layer][PRESENT_ROLES.index(t.role)] if t.role in PRESENT_ROLES
                     else getattr(out, t.name) for t in self.outputs)

    def past_names(self) -> list[tuple[str, str]]:
        """(key, value) input names per layer; empty without a cache."""
        return self._cache_names(PAST_ROLES)

    def present_names(self) -> list[tuple[str, str]]:
        """(key, value) output names per layer; empty without a cache."""
        return self._cache_names(PRESENT_ROLES)

    def _cache_names(self, roles: tuple[Role, Role]) -> list[tuple[str, str]]:
        layers = range(self.num_layers) if self.with_past else range(0)
        return [(tensor_name(roles[0], i), tensor_name(roles[1], i)) for i in layers]

    # -- checking feeds -------------------------------------------------------------------------
    def input_limits(self) -> "InputLimits":
        """What the graph's tables take, as recorded in the spec (the runtime reads them off the graph)."""
        return InputLimits(self.vocab_size, self.type_vocab_size, self.max_sequence_length)

    def check_feeds(self, feeds: Mapping[str, Any], limits: Any = None) -> None:
        """Refuse with an InputError the feeds (graph input name -> array) the graph would fail on or
        silently misread: missing or unknown inputs; ids, mask and token types that are not integers, a
        cache that is not floating-point; input_ids not of the spec's rank or with an empty dimension; every
        cache tensor (batch, heads, past, head_dim) over one past length; then the reference models' rules
        (``check_inputs``): mask (batch, past + sequence), types the shape of the ids, ids and types within
        their tables, past + sequence within the position table. ``token_type_ids`` may be given to a graph
        without that input when they are all 0 (what transformers takes; the caller leaves them out of the
        run); any other type is an InputError (``_check_types_without_input``).

        ``limits``: anything with ``vocab_size``, ``type_vocab_size``, ``max_sequence_length`` and
        ``max_position_embeddings`` (a config, ``InputLimits``); the spec's recorded values by default.
        Arrays are read as given (uint64 ids beyond int64 are out of range, not wrapped); OrtValues (the
        cache a bound run returned) are checked by shape only."""
        missing = [name for name in self.input_names if name not in feeds]
        optional = {tensor_name("types")} if self.input("types") is None else set()
        unknown = sorted(set(feeds) - set(self.input_names) - optional)
        if missing or unknown:
            raise InputError(f"The feeds of this {self.task} export must be exactly {self.input_names}; "
                             f"missing {missing}, unknown {unknown}.")
        for t in self.inputs:
            kind = _dtype_kind(feeds[t.name])
            floats = t.is_cache or t.role == "encoder_states"
            if floats and kind not in (None, *"fiu"):
                raise InputError(f"{t.name} must hold floating-point numbers, got dtype {np.asarray(feeds[t.name]).dtype}.")
            if not floats and kind not in (None, *"iub"):
                raise InputError(f"{t.name} must hold integers, got dtype {np.asarray(feeds[t.name]).dtype}.")
        for name in optional & set(feeds):
            if _dtype_kind(feeds[name]) not in (None, *"iub"):
                raise InputError(f"{name} must hold integers, got dtype {np.asarray(feeds[name]).dtype}.")
        ids = feeds[tensor_name("ids")]
        shape = _shape(ids)
        rank = len(self.input("ids").shape)
        what = "(batch, num_choices, sequence)" if rank == 3 else "(batch, sequence)"
        if len(shape) != rank:
            raise InputError(f"input_ids must have shape {what}, got {shape}.")
        if 0 in shape:
            raise InputError(f"input_ids has shape {shape}: every dimension of {what} must be at least 1; "
                             "pass at least one sequence of at least one token.")
        self._check_encoder_feeds(feeds, shape[0])
        mask, types = feeds.get(tensor_name("mask")), feeds.get(tensor_name("types"))
        if rank == 3:  # the reference models' rules are stated for (batch, sequence): check choices, then flatten
            for name, array in ((tensor_name("mask"), mask), (tensor_name("types"), types)):
                if array is not None and _shape(array) != shape:
                    raise InputError(f"{name} must have the shape of input_ids {shape}, got {_shape(array)}.")

        def flat(array: Any) -> tuple[int, ...] | None:
            dims = None if array is None else _shape(array)
            return dims if dims is None or rank != 3 else (int(np.prod(dims[:-1])), dims[-1])

        limits = limits or self.input_limits()
        if types is not None and optional:
            _check_types_without_input(types, limits.type_vocab_size)
        check_inputs(
            limits, FAMILIES[self.model_type],
            input_shape=flat(ids), attention_mask_shape=flat(mask), token_type_ids_shape=flat(types),
            past_length=self._past_length(feeds, shape[0]),
            ids_range=value_range(ids), token_type_range=None if types is None else value_range(types),
        )

    def _check_encoder_feeds(self, feeds: Mapping[str, Any], batch: int) -> None:
        """A cross-attention decoder's encoder inputs: states (batch, encoder sequence, hidden_size) of the
        decoder's batch and width, their mask (batch, encoder sequence)."""
        states_spec = self.input("encoder_states")
        if states_spec is None:
            return
        hidden = states_spec.shape[-1]
        states = _shape(feeds[states_spec.name])
        want = f"(batch, encoder_sequence, hidden_size) = ({batch}, encoder_sequence, {hidden})"
        if len(states) != 3 or states[0] != batch or states[2] != hidden:
            why = ("its batch must be input_ids' batch" if len(states) == 3 and states[0] != batch else
                   f"its last dimension must be the model's hidden_size {hidden}" if len(states) == 3 else "rank 3")
            raise InputError(f"encoder_hidden_states must have shape {want}, got {states} ({why}); pass the "
                             "encoder's last_hidden_state for the same batch as input_ids.")
        if states[1] == 0:
            raise InputError("encoder_hidden_states has an empty encoder sequence: the decoder's cross-attention "
                             "needs at least one encoder position.")
        mask_spec = self.input("encoder_mask")
        if mask_spec is not None and _shape(feeds[mask_spec.name]) != states[:2]:
            raise InputError(f"encoder_attention_mask must have shape (batch, encoder_sequence) = {states[:2]} "
                             f"(that of encoder_hidden_states), got {_shape(feeds[mask_spec.name])}.")

    def _past_length(self, feeds: Mapping[str, Any], batch: int) -> int:
        """The one past length of the cache feeds (0 without a cache), each (batch, heads, past, head_dim)."""
        want = (batch, self.num_attention_heads, None, self.head_dim)
        past_length = None
        for name in (name for pair in self.past_names() for name in pair):
            shape = _shape(feeds[name])
            if len(shape) != 4 or any(w is not None and w != g for w, g in zip(want, shape)):
                raise InputError(f"{name} must have shape (batch, heads, past, head_dim) = {want}, got {shape}.")
            if past_length is not None and shape[2] != past_length:
                raise InputError(
                    f"{name} holds {shape[2]} past positions, the cache before it {past_length}: every key and "
                    "value of past_key_values must cover the same past positions.")
            past_length = shape[2]
        return past_length or 0

    # -- JSON (to_dict: Record's, by RECORD_KEYS) -----------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        record = super().to_dict()
        if self.with_past and self.input("encoder_states"):  # what the cache carries, said where it is read
            record["cache"] = CROSS_ATTENTION_CACHE
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "IOSpec":
        facts = d.get("extra", {})
        return cls(
            task=d["task"],
            model_type=d["model_type"],
            with_past=bool(d["with_past"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            num_layers=int(d.get("num_layers", 0)),
            **{k: facts[k] for k in MODEL_FACTS if facts.get(k) is not None},
        )

    @classmethod
    def from_json(cls, text: str) -> "IOSpec":
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class InputLimits:
    """What the graph's lookup tables take (``check_inputs`` reads these as it reads a config)."""

    vocab_size: int | None
    type_vocab_size: int | None
    max_sequence_length: int | None
    max_position_embeddings: int | None = None  # only named in messages

    def __post_init__(self) -> None:
        # check_inputs compares against numbers: an unrecorded limit checks nothing
        for name in ("vocab_size", "type_vocab_size", "max_sequence_length"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, _UNBOUNDED)


_UNBOUNDED = 2**63


def _check_types_without_input(types: Any, type_vocab_size: int) -> None:
    """Token types fed to a graph that has no token_type_ids input: all 0 is what the graph computes (it adds
    type 0's embedding everywhere); any other value would be dropped silently, so it is refused."""
    low, high = value_range(types) or (0, 0)
    if low == high == 0:
        return
    found = high if high != 0 else low
    if type_vocab_size == 1:
        why = ("the model has one token type (type_vocab_size=1), so only type 0 exists: transformers would index "
               "its token-type table out of range")
    else:  # an export made before token types became a graph input: its graph fixed them at 0
        why = "this export's graph was traced with every token type 0 and cannot take others; re-export the model"
    raise InputError(
        f"token_type_ids holds {found}, but this export has no token_type_ids input: {why}. "
        "Pass token_type_ids of zeros, or none (a tokenizer that marks a pair's second text with type 1 does not "
        "fit this model)."
    )


def _shape(value: Any) -> tuple[int, ...]:
    """Shape of an array-like or an ONNX Runtime OrtValue (whose shape is a method)."""
    shape = getattr(value, "shape", None)
    return tuple(shape()) if callable(shape) else tuple(np.shape(value))


def _dtype_kind(value: Any) -> str | None:
    """numpy's dtype kind of an array-like; None for an OrtValue (it came from the graph)."""
    return None if callable(getattr(value, "shape", None)) else np.asarray(value).dtype.kind


def check_task(task: str, family: Family, with_past: bool = False, config: EncoderConfig | None = None) -> Task:
    """The Task record, or a TaskError saying why this family/config cannot be exported for it."""
    spec = get_task(task)
    supported = FAMILY_TASKS.get(family.model_type, ())
    if task not in supported:
        raise TaskError(
            f"The {family.model_type} family cannot be exported for {task!r}; it supports: {', '.join(supported)}."
        )
    if with_past and not spec.can_use_past:
        raise TaskError(f"with_past only applies to text-generation, not {task!r}.")
    return spec


def takes_token_type_ids(config: EncoderConfig) -> bool:
    """Every forward input the native model uses is a graph input: token types whenever the model has more
    than one (transformers' XLM-R and RoBERTa-PreLayerNorm configs default to 2), and always where the family's
    tokenizer emits them (RoFormer, Optimum's convention). Callers that have none feed zeros."""
    return family_of(config).uses_token_type_ids or config.type_vocab_size > 1


def takes_encoder_states(task: str, config: EncoderConfig) -> bool:
    """A cross-attention decoder's encoder_hidden_states / encoder_attention_mask are graph inputs wherever
    transformers' head takes them (the base model, the causal and the masked LM)."""
    return bool(config.add_cross_attention) and get_task(task).takes_encoder_states


def build_io_spec(task: str, config: EncoderConfig, with_past: bool = False, pooler: bool = True,
                  sentence_dimension: int | None = None) -> IOSpec:
    """The graph signature for ``task`` on a model with ``config`` (``pooler=False``: feature-extraction
    without ``pooler_output``, for checkpoints that have no pooler weights; ``sentence_dimension``: the width of
    a sentence-embeddings graph's ``sentence_embedding``, hidden_size by default)."""
    family = family_of(config)
    check_task(task, family, with_past, config)
    ids, f = "int64", "float32"
    text = (BATCH, CHOICES, SEQUENCE) if task == "multiple-choice" else (BATCH, SEQUENCE)
    inputs = [TensorSpec.of("ids", ids, text), TensorSpec.of("mask", ids, (BATCH, TOTAL) if with_past else text)]
    if takes_token_type_ids(config):
        inputs.append(TensorSpec.of("types", ids, text))
    if takes_encoder_states(task, config):
        inputs += [TensorSpec.of("encoder_states", f, (BATCH, ENCODER_SEQUENCE, config.hidden_size)),
                   TensorSpec.of("encoder_mask", ids, (BATCH, ENCODER_SEQUENCE))]

    heads, head_dim = config.num_attention_heads, config.head_dim
    layers = config.num_hidden_layers if with_past else 0
    inputs += [TensorSpec.of(role, f, (BATCH, heads, PAST, head_dim), i) for i in range(layers) for role in PAST_ROLES]
    sizes = {dim: getattr(config, dim) for dim in CONFIG_DIMS}
    sizes["sentence_dimension"] = sentence_dimension or config.hidden_size
    outputs = [TensorSpec(name, f, tuple(sizes.get(d, d) for d in shape), "output")
               for name, shape in TASKS[task].outputs if name != POOLER_OUTPUT or (family.has_pooler and pooler)]
    outputs += [TensorSpec.of(role, f, (BATCH, heads, TOTAL, head_dim), i) for i in range(layers) for role in PRESENT_ROLES]

    return IOSpec(
        task=task,
        model_type=family.model_type,
        with_past=with_past,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        num_layers=layers,
        pad_token_id=config.pad_token_id if config.pad_token_id is not None else 0,
        vocab_size=config.vocab_size,
        type_vocab_size=config.type_vocab_size,
        num_attention_heads=heads,
        head_dim=head_dim,
        max_sequence_length=config.max_sequence_length,
    )


def make_inputs(
    spec: IOSpec,
    batch: int,
    sequence: int,
    past: int = 0,
    num_choices: int = 3,
    seed: int = 0,
    pad: bool = True,
    encoder_sequence: int | None = None,
) -> dict[str, np.ndarray]:
    """Random, right-padded inputs matching ``spec`` (exporter examples, validation, tests).

    Row 0 is full length; later rows are padded when ``pad``. Padded tokens get
    ``pad_token_id`` and attention 0. Past key/values are random normal, fully attended.
    Encoder states (cross-attention decoders) are random normal over ``encoder_sequence`` positions
    (default ``sequence + 2``: unlike the decoder's), their mask padded like the tokens'.
    """
    rng = np.random.default_rng(seed)
    limit = spec.max_sequence_length
    if limit is not None and sequence + past > limit:
        raise ValueError(f"past {past} + sequence {sequence} exceeds the model's {limit} positions.")
    pad_id = spec.pad_token_id
    vocab = spec.vocab_size or 100  # a hand-written spec without one: small ids every model has
    lead = (batch, num_choices) if spec.task == "multiple-choice" else (batch,)
    rows = int(np.prod(lead))
    low = min(3, vocab - 1)
    ids = rng.integers(low, vocab, size=(rows, sequence), dtype=np.int64)
    ids[ids == pad_id] = low if low != pad_id else low + 1
    mask = np.ones((rows, sequence), dtype=np.int64)
    if pad:
        for r in range(1, rows):
            length = max(1, sequence - 1 - (r % max(1, sequence - 1)))
            ids[r, length:] = pad_id
            mask[r, length:] = 0
    types = np.zeros((rows, sequence), dtype=np.int64)
    if (spec.type_vocab_size or 1) > 1:
        types[:, sequence // 2 :] = 1
        types[mask == 0] = 0
    full_mask = mask if not spec.with_past else np.concatenate([np.ones((rows, past), np.int64), mask], axis=1)
    by_role = {"ids": ids, "mask": full_mask, "types": types}
    states = spec.input("encoder_states")
    if states is not None:
        length = encoder_sequence or sequence + 2
        encoder_mask = np.ones((rows, length), dtype=np.int64)
        if pad:
            for r in range(1, rows):
                encoder_mask[r, max(1, length - 1 - (r % max(1, length - 1))):] = 0
        by_role["encoder_states"] = rng.standard_normal((rows, length, states.shape[-1])).astype(states.dtype)
        by_role["encoder_mask"] = encoder_mask
    out: dict[str, np.ndarray] = {}
    for t in spec.inputs:
        if t.is_cache:
            shape = (batch, spec.num_attention_heads, past, spec.head_dim)
            out[t.name] = rng.standard_normal(shape).astype(t.dtype)  # float16 in fp16 exports
        elif t.role in ("encoder_states", "encoder_mask"):  # (batch, encoder sequence[, hidden]): no choices
            out[t.name] = by_role[t.role]
        else:
            out[t.name] = by_role[t.role].reshape(*lead, -1)
    return out


def past_from_present(spec: IOSpec, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed one step's ``present.*`` outputs back as the next step's ``past_key_values.*`` inputs."""
    feeds = {}
    for (pk, pv), (k, v) in zip(spec.past_names(), spec.present_names()):
        feeds[pk], feeds[pv] = outputs[k], outputs[v]
    return feeds


def empty_past(spec: IOSpec, batch: int) -> dict[str, np.ndarray]:
    """Past key/values of length 0: the first decoding step."""
    shape = (batch, spec.num_attention_heads, 0, spec.head_dim)
    return {t.name: np.zeros(shape, t.dtype) for t in spec.inputs if t.role in PAST_ROLES}

