"""What an exported graph takes and returns, per task: the one source of truth.

Exporters (PyTorch, TensorFlow, Flax), the validator and the runtime all read
these specs, so the three exports of one checkpoint have identical signatures.
Names follow Optimum's ONNX conventions (``input_ids``, ``attention_mask``,
``token_type_ids`` whenever the model has more than one token type,
``past_key_values.{i}.key|value`` in, ``present.{i}.key|value`` out), so
Optimum's ORTModel classes can read our export directories too.

A shape is a tuple of dimensions; a ``str`` dimension is dynamic (its name is
the symbolic dimension in the ONNX graph), an ``int`` is fixed.

This module imports no deep-learning framework (the runtime uses it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..configs import EncoderConfig
from ..families import FAMILIES, Family, family_of
from ..errors import TaskError  # noqa: F401  (re-exported: the old import path keeps working)

# Optimum's dimension names.
BATCH = "batch_size"
SEQUENCE = "sequence_length"
CHOICES = "num_choices"
PAST = "past_sequence_length"
TOTAL = "past_sequence_length + sequence_length"

Dim = str | int


@dataclass(frozen=True)
class Task:
    name: str
    head: str  # reference-model head suffix, e.g. "ForMaskedLM"
    description: str
    can_use_past: bool = False


# Optimum's task names -> the head that serves them.
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("feature-extraction", "Model", "last_hidden_state (+ pooler_output where the family has a pooler)"),
        Task("text-generation", "ForCausalLM", "causal LM logits; with_past adds the key/value cache", True),
        Task("fill-mask", "ForMaskedLM", "masked-LM logits over the vocabulary"),
        Task("text-classification", "ForSequenceClassification", "one row of num_labels logits per sequence"),
        Task("multiple-choice", "ForMultipleChoice", "one logit per choice; inputs are (batch, choices, sequence)"),
        Task("token-classification", "ForTokenClassification", "num_labels logits per token"),
        Task("question-answering", "ForQuestionAnswering", "start_logits / end_logits per token"),
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
    """The task name served by a head ("ForMaskedLM" -> "fill-mask")."""
    for task in TASKS.values():
        if task.head == head:
            return task.name
    raise TaskError(f"No export task serves the head {head!r}.")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "int64", "float32" ("float16" for the cache of fp16 exports)
    shape: tuple[Dim, ...]

    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass(frozen=True)
class IOSpec:
    """Inputs and outputs of one exported graph, in graph order."""

    task: str
    model_type: str
    with_past: bool
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    num_layers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. pad_token_id for making inputs

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def head(self) -> str:
        return TASKS[self.task].head

    @property
    def reads_first_token_only(self) -> bool:
        """The graph's only output reads the first position of the last layer (the sentence classifier).

        Front ends then trace the reference model with ``first_token_only_last_layer`` set: the last
        layer computes its query, attention output and feed-forward for that position alone.
        """
        return self.task == "text-classification" and self.output_names == ["logits"] and not self.with_past

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export``'s dynamic_axes: {tensor name: {axis: dimension name}}."""
        return {t.name: t.dynamic_axes() for t in (*self.inputs, *self.outputs) if t.dynamic_axes()}

    # -- adapters: graph tensors <-> a reference model's HF call, shared by the three front ends,
    #    validation and parity ------------------------------------------------------------------
    def model_kwargs(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """The HF keyword call of a reference model (any framework's arrays) for feeds keyed by graph input
        name: the cache inputs become ``past_key_values`` (key, value) pairs; causal LMs build a cache only
        when the graph returns one."""
        cache_inputs = {name for pair in self.past_names() for name in pair}
        kwargs = {name: feeds[name] for name in self.input_names if name in feeds and name not in cache_inputs}
        if self.with_past:
            kwargs["past_key_values"] = tuple((feeds[k], feeds[v]) for k, v in self.past_names())
        if self.head == "ForCausalLM":
            kwargs["use_cache"] = self.with_past
        return kwargs

    def select(self, out: Any) -> tuple[Any, ...]:
        """The graph's outputs, in graph order, from a reference model's HF output object
        (``present.{i}.key`` / ``.value`` are ``out.past_key_values[i][0]`` / ``[1]``)."""
        present = {name: (layer, kind) for layer, pair in enumerate(self.present_names())
                   for kind, name in enumerate(pair)}
        return tuple(out.past_key_values[present[name][0]][present[name][1]] if name in present
                     else getattr(out, name) for name in self.output_names)

    def past_names(self) -> list[tuple[str, str]]:
        return [(f"past_key_values.{i}.key", f"past_key_values.{i}.value") for i in range(self.num_layers)] if self.with_past else []

    def present_names(self) -> list[tuple[str, str]]:
        return [(f"present.{i}.key", f"present.{i}.value") for i in range(self.num_layers)] if self.with_past else []

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model_type": self.model_type,
            "with_past": self.with_past,
            "num_layers": self.num_layers,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "extra": dict(self.extra),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "IOSpec":
        return cls(
            task=d["task"],
            model_type=d["model_type"],
            with_past=bool(d["with_past"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            num_layers=int(d.get("num_layers", 0)),
            extra=dict(d.get("extra", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> "IOSpec":
        return cls.from_dict(json.loads(text))


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
    if with_past and config is not None and config.add_cross_attention:
        raise TaskError(
            "text-generation with past key/values is not exported for models with cross-attention "
            "(the graph would need encoder_hidden_states); export without --with-past or without add_cross_attention."
        )
    return spec


def takes_token_type_ids(config: EncoderConfig) -> bool:
    """Every forward input the native model uses is a graph input: token types whenever the model has more
    than one (transformers' XLM-R and RoBERTa-PreLayerNorm configs default to 2), and always where the family's
    tokenizer emits them (RoFormer, Optimum's convention). Callers that have none feed zeros."""
    return family_of(config).uses_token_type_ids or config.type_vocab_size > 1


def build_io_spec(task: str, config: EncoderConfig, with_past: bool = False, pooler: bool = True) -> IOSpec:
    """The graph signature for ``task`` on a model with ``config`` (``pooler=False``: feature-extraction
    without ``pooler_output``, for checkpoints that have no pooler weights)."""
    family = family_of(config)
    check_task(task, family, with_past, config)
    ids = "int64"
    text = (BATCH, CHOICES, SEQUENCE) if task == "multiple-choice" else (BATCH, SEQUENCE)
    mask_shape = (BATCH, TOTAL) if with_past else text
    inputs = [TensorSpec("input_ids", ids, text), TensorSpec("attention_mask", ids, mask_shape)]
    if takes_token_type_ids(config):
        inputs.append(TensorSpec("token_type_ids", ids, text))

    heads, head_dim = config.num_attention_heads, config.head_dim
    layers = config.num_hidden_layers
    if with_past:
        for i in range(layers):
            for kind in ("key", "value"):
                inputs.append(TensorSpec(f"past_key_values.{i}.{kind}", "float32", (BATCH, heads, PAST, head_dim)))

    f = "float32"
    if task == "feature-extraction":
        outputs = [TensorSpec("last_hidden_state", f, (BATCH, SEQUENCE, config.hidden_size))]
        if family.has_pooler and pooler:
            outputs.append(TensorSpec("pooler_output", f, (BATCH, config.hidden_size)))
    elif task in ("text-generation", "fill-mask"):
        outputs = [TensorSpec("logits", f, (BATCH, SEQUENCE, config.vocab_size))]
    elif task == "text-classification":
        outputs = [TensorSpec("logits", f, (BATCH, config.num_labels))]
    elif task == "multiple-choice":
        outputs = [TensorSpec("logits", f, (BATCH, CHOICES))]
    elif task == "token-classification":
        outputs = [TensorSpec("logits", f, (BATCH, SEQUENCE, config.num_labels))]
    elif task == "question-answering":
        outputs = [TensorSpec("start_logits", f, (BATCH, SEQUENCE)), TensorSpec("end_logits", f, (BATCH, SEQUENCE))]
    else:  # pragma: no cover - TASKS and this table move together
        raise TaskError(f"No outputs defined for task {task!r}.")
    if with_past:
        for i in range(layers):
            for kind in ("key", "value"):
                outputs.append(TensorSpec(f"present.{i}.{kind}", f, (BATCH, heads, TOTAL, head_dim)))

    return IOSpec(
        task=task,
        model_type=family.model_type,
        with_past=with_past,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        num_layers=layers if with_past else 0,
        extra={
            "pad_token_id": config.pad_token_id if config.pad_token_id is not None else 0,
            "vocab_size": config.vocab_size,
            "type_vocab_size": config.type_vocab_size,
            "num_attention_heads": heads,
            "head_dim": head_dim,
            "max_sequence_length": config.max_sequence_length,
        },
    )


def make_inputs(
    spec: IOSpec,
    batch: int,
    sequence: int,
    past: int = 0,
    num_choices: int = 3,
    seed: int = 0,
    pad: bool = True,
) -> dict[str, np.ndarray]:
    """Random, right-padded inputs matching ``spec`` (exporter examples, validation, tests).

    Row 0 is full length; later rows are padded when ``pad``. Padded tokens get
    ``pad_token_id`` and attention 0. Past key/values are random normal, fully attended.
    """
    rng = np.random.default_rng(seed)
    extra = spec.extra
    limit = int(extra.get("max_sequence_length", sequence + past))
    if sequence + past > limit:
        raise ValueError(f"past {past} + sequence {sequence} exceeds the model's {limit} positions.")
    pad_id = int(extra.get("pad_token_id", 0))
    vocab = int(extra.get("vocab_size", 100))
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
    if int(extra.get("type_vocab_size", 1)) > 1:
        types[:, sequence // 2 :] = 1
        types[mask == 0] = 0
    out: dict[str, np.ndarray] = {}
    for t in spec.inputs:
        if t.name == "input_ids":
            out[t.name] = ids.reshape(*lead, sequence)
        elif t.name == "attention_mask":
            full = mask if not spec.with_past else np.concatenate([np.ones((rows, past), np.int64), mask], axis=1)
            out[t.name] = full.reshape(*lead, -1)
        elif t.name == "token_type_ids":
            out[t.name] = types.reshape(*lead, sequence)
        elif t.name.startswith("past_key_values."):
            shape = (batch, extra["num_attention_heads"], past, extra["head_dim"])
            out[t.name] = rng.standard_normal(shape).astype(t.dtype)  # float16 in fp16 exports
        else:  # pragma: no cover
            raise KeyError(f"make_inputs does not know input {t.name!r}")
    return out


def past_from_present(spec: IOSpec, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed one step's ``present.*`` outputs back as the next step's ``past_key_values.*`` inputs."""
    feeds = {}
    for (pk, pv), (k, v) in zip(spec.past_names(), spec.present_names()):
        feeds[pk], feeds[pv] = outputs[k], outputs[v]
    return feeds


def empty_past(spec: IOSpec, batch: int) -> dict[str, np.ndarray]:
    """Past key/values of length 0: the first decoding step."""
    shape = (batch, spec.extra["num_attention_heads"], 0, spec.extra["head_dim"])
    dtypes = {t.name: t.dtype for t in spec.inputs}
    return {name: np.zeros(shape, dtypes.get(name, "float32")) for pair in spec.past_names() for name in pair}

