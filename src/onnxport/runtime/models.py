"""Task-head models over an export directory: numpy in, named numpy out.

``OnnxModelFor*.from_pretrained(export_dir, provider=...)`` reads ``onnxport.json``
(the IO spec the exporter wrote) and ``config.json``, builds the session (lowering
the rotary and attention nodes to fused kernels where the provider has them) and checks
every call against the IO spec before ONNX Runtime sees it. The tokenizer files are
not read until ``model.tokenizer`` is asked for (pipelines do): a model takes ids
whatever they hold, as transformers' models do.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from ..artifact import layout
from ..configs import AutoConfig, EncoderConfig
from ..errors import InputError, TaskError
from ..artifact.input_checks import to_fp16_checked
from ..artifact.io_spec import PAST_ROLES, PRESENT_ROLES, TASKS, InputLimits, IOSpec, build_io_spec, empty_past
from ..artifact.spec_file import SPEC_FILE, read_export_dir  # noqa: F401  (read_export_dir: the old import path keeps working)
from ..families import family_of
from .session import ModelFileError, SessionConfig, check_model_file, create_session, select_providers

logger = logging.getLogger("onnxport")

_NOT_LOADED = object()  # the tokenizer of an export directory before model.tokenizer first asks for it

# The runtime's input errors are the reference models' ones: one type for one condition everywhere.
RuntimeInputError = InputError


class RuntimeOutput(dict):
    """Named outputs with attribute access (``out.logits``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class OnnxModelBase:
    """Shared loading, input checking and running; subclasses only name their task."""

    task: ClassVar[str] = ""

    def __init__(self, session, spec: IOSpec, config: EncoderConfig, tokenizer=None, export_dir: str = "",
                 provider: str = "cpu", metadata: Optional[dict] = None, use_io_binding: Optional[bool] = None,
                 device_id: int = 0, limits: Optional[InputLimits] = None) -> None:
        self.session = session
        self.spec = spec
        self.config = config
        # None: no tokenizer; an export directory's is loaded when first asked for (``tokenizer``).
        self._tokenizer = tokenizer if tokenizer is not None else (_NOT_LOADED if export_dir else None)
        self.export_dir = export_dir
        self.provider = provider
        self.metadata = metadata or {}
        # On GPUs, bind outputs to the device so the decoding cache never travels through host memory.
        self.use_io_binding = provider in ("cuda", "tensorrt") if use_io_binding is None else use_io_binding
        self.device_id = device_id
        self._input_specs = {t.name: t for t in spec.inputs}
        self._lock = threading.Lock()  # only guards lazy state; ONNX Runtime's run() is thread-safe
        # What ids the graph can look up (from_pretrained reads its tables); the IO spec's values otherwise.
        self._limits = limits or _input_limits(config, spec)

    @property
    def tokenizer(self):
        """The export directory's tokenizer, loaded on first use (once, whichever thread asks first); None when
        the directory has no tokenizer files. Files that do not load raise a ModelFileError saying why: a file
        that does not parse, or files that fit another tokenizer class (which, and how to name it)."""
        if self._tokenizer is _NOT_LOADED:
            with self._lock:
                if self._tokenizer is _NOT_LOADED:  # a failure is not cached: fixed files load on the next ask
                    self._tokenizer = _load_tokenizer(self.export_dir, self.config)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, export_dir: str | os.PathLike, provider: str = "auto", *,
                        session_config: Optional[SessionConfig] = None, fuse_rotary: bool = True,
                        fuse_attention: bool = True, load_tokenizer: bool = True, use_io_binding: Optional[bool] = None,
                        **session_options: Any):
        export_dir = os.fspath(export_dir)
        meta, spec = read_export_dir(export_dir)
        if cls.task and graph_task(spec.task) != cls.task:  # a rerank export is a sequence classifier's graph
            right = model_class_for(spec.task)
            raise TaskError(
                f"{export_dir} was exported for {spec.task!r}, not {cls.task!r}; load it with "
                f"{right.__name__ if right else 'the matching class'} or re-export with --task {cls.task}."
            )
        config = AutoConfig.from_pretrained(export_dir)
        _check_spec_matches_task(spec, config, export_dir)
        config_obj = session_config or SessionConfig()
        config_obj.provider = provider
        model_path = layout.model_path(export_dir)
        graph = _read_graph(model_path, export_dir)
        limits = _input_limits(config, spec, graph)
        model_source = _maybe_lower(graph, model_path, provider, config_obj,
                                    rotary=fuse_rotary and family_of(config).rotary, attention=fuse_attention)
        if isinstance(model_source, bytes):
            config_obj.extra_session_entries = {**config_obj.extra_session_entries,
                                                _EXTERNAL_WEIGHTS_FOLDER: os.path.dirname(os.path.abspath(model_path))}
        del graph  # not held while ONNX Runtime builds its own copy
        session, chosen = create_session(model_source, config_obj, **session_options)
        _check_graph_matches_spec(session, spec, export_dir)
        model_cls = cls if cls.task else model_class_for(spec.task)
        model = model_cls(session, spec, config, None, export_dir, chosen, meta, use_io_binding,
                          config_obj.device_id, limits)
        if not load_tokenizer:  # never reads the tokenizer files
            model.tokenizer = None
        return model

    # -- calling -----------------------------------------------------------------------------
    def __call__(self, **inputs: Any) -> RuntimeOutput:
        feeds = self.prepare_inputs(inputs)
        names = self.spec.output_names
        if self.use_io_binding:
            return self._outputs(self._run_bound(feeds, names))
        values = self.session.run(names, feeds)
        return self._outputs(dict(zip(names, values)))

    def _run_bound(self, feeds: dict[str, Any], names: list[str]) -> dict[str, Any]:
        """Run with IO binding: outputs are allocated on the provider's device, and the cache
        (``present.*``) stays there as OrtValues to be fed straight back as the next step's past."""
        import onnxruntime as ort

        device = "cuda" if self.provider in ("cuda", "tensorrt") else "cpu"
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in names:
            binding.bind_output(name, device, self.device_id)
        self.session.run_with_iobinding(binding)
        cache = {t.name for t in self.spec.outputs if t.role in PRESENT_ROLES}
        return {name: value if name in cache else value.numpy() for name, value in zip(names, binding.get_outputs())}

    forward = __call__

    def _outputs(self, named: dict[str, np.ndarray]) -> RuntimeOutput:
        return RuntimeOutput(named)

    def prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """The graph's feeds for a call: arrays read from what was given, defaults filled in (attention_mask,
        token_type_ids, an empty cache), checked by the IO spec against the graph's limits
        (``IOSpec.check_feeds``), then cast to the graph's dtypes. Every input ONNX Runtime would fail on
        (or silently misread) is an InputError here. token_type_ids are taken (and checked) when the graph has
        no such input, as transformers takes them: all zeros only."""
        inputs = dict(inputs)
        past = inputs.pop("past_key_values", None)
        known = set(self._input_specs) | {"token_type_ids"}
        unknown = sorted(set(inputs) - known)
        if "encoder_hidden_states" in unknown or "encoder_attention_mask" in unknown:
            raise RuntimeInputError(
                f"This {self.spec.task} export takes no encoder_hidden_states/encoder_attention_mask: only a "
                "cross-attention decoder's (config add_cross_attention=True) base model, causal LM and masked LM "
                "exports do; re-export such a checkpoint to feed encoder states."
            )
        if unknown:
            raise RuntimeInputError(
                f"Unknown input(s) {unknown} for this {self.spec.task} export; it takes {sorted(known)}."
            )
        if inputs.get("input_ids") is None:
            raise RuntimeInputError("input_ids is required.")
        ids = self._integers("input_ids", inputs["input_ids"])
        mask = inputs.get("attention_mask")
        mask = None if mask is None else self._mask_array(mask)
        types = inputs.get("token_type_ids")
        types = None if types is None else self._integers("token_type_ids", types)
        if self.spec.with_past:
            feeds: dict[str, Any] = self._past_feeds(past, ids.shape[0] if ids.ndim else 1)
        elif past is not None:
            raise RuntimeInputError("past_key_values given, but this export has no cache inputs; export with --with-past.")
        else:
            feeds = {}
        if mask is None:  # every position attended, the cached ones too
            past_length = min((_shape(v)[2] for v in feeds.values() if len(_shape(v)) == 4), default=0)
            mask = np.ones(ids.shape[:-1] + (ids.shape[-1] + past_length,) if ids.ndim else (), np.int64)
        feeds.update(input_ids=ids, attention_mask=mask)
        if types is not None or "token_type_ids" in self._input_specs:
            feeds["token_type_ids"] = np.zeros_like(ids, np.int64) if types is None else types
        feeds.update(self._encoder_feeds(inputs))
        self.spec.check_feeds(feeds, self._limits)
        # all-zero token types for a graph without them (check_feeds refused any other) are what it computes
        return {name: self._in_graph_dtype(name, value) for name, value in feeds.items() if name in self._input_specs}

    def _in_graph_dtype(self, name: str, value: Any) -> Any:
        if _is_ort_value(value):  # OrtValues from IO binding stay where they are
            return value
        dtype = self._input_specs[name].dtype
        if dtype == "float16":  # fp16 exports' cache: refuse what fp16 cannot hold
            return to_fp16_checked(name, value)
        return np.asarray(value, dtype)

    @staticmethod
    def _as_array(name: str, value: Any) -> np.ndarray:
        if _is_ort_value(value):
            value = value.numpy()
        try:
            array = np.asarray(value)
        except (ValueError, TypeError, OverflowError) as err:  # ragged nested lists; ints past 64 bits
            raise RuntimeInputError(
                f"{name} could not be read as one array ({err}); rows of different lengths must be padded "
                "to one length (tokenizer(..., padding=True)) with attention_mask marking the padding."
            ) from None
        if array.dtype == object:
            raise RuntimeInputError(
                f"{name} must be a rectangular array of integers, got ragged rows or non-numbers (dtype object); "
                "pad the rows to one length (tokenizer(..., padding=True))."
            )
        return array

    @classmethod
    def _integers(cls, name: str, value: Any) -> np.ndarray:
        array = cls._as_array(name, value)
        if array.dtype.kind not in "iub":
            raise RuntimeInputError(f"{name} must hold integers, got dtype {array.dtype}.")
        return array

    @classmethod
    def _mask_array(cls, value: Any, name: str = "attention_mask") -> np.ndarray:
        array = cls._as_array(name, value)
        if array.dtype.kind not in "iubf":
            raise RuntimeInputError(f"{name} must hold 0/1 integers, got dtype {array.dtype}.")
        valid = (array == 0) | (array == 1)  # NaN is neither
        if not valid.all():
            bad = array[~valid].ravel()[0].item()
            raise RuntimeInputError(
                f"{name} must contain only 0 and 1 (0 marks padding), found {bad!r}; "
                f"pass the tokenizer's {name}."
            )
        return array.astype(np.int64, copy=False)  # transformers accepts 0.0/1.0 float masks; the graph takes int64

    def _encoder_feeds(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """A cross-attention decoder's encoder inputs (none for other graphs): the states are required, the
        mask defaults to all ones (every encoder position attended), as in transformers. ``check_feeds``
        checks their shapes against the decoder's batch and hidden size."""
        if self.spec.input("encoder_states") is None:
            return {}
        states = inputs.get("encoder_hidden_states")
        if states is None:
            raise RuntimeInputError(
                "encoder_hidden_states is required: this export is a cross-attention decoder (add_cross_attention); "
                "pass the encoder's last_hidden_state, shape (batch, encoder_sequence, hidden_size), at every step "
                "(with encoder_attention_mask when the encoder's input was padded).")
        states = self._as_array("encoder_hidden_states", states)
        mask = inputs.get("encoder_attention_mask")
        if mask is None:
            mask = np.ones(states.shape[:2], np.int64)
        else:
            mask = self._mask_array(mask, "encoder_attention_mask")
        return {"encoder_hidden_states": states, "encoder_attention_mask": mask}

    def _past_feeds(self, past: Any, batch: int) -> dict[str, Any]:
        """past_key_values as the graph's cache feeds: one (key, value) pair per layer (the IO spec checks
        their shapes and dtypes); an empty cache when none is given."""
        if past is None:
            return empty_past(self.spec, batch)
        layers = self.spec.num_layers
        form = f"a sequence of {layers} (key, value) pairs, each (batch, heads, past, head_dim)"
        if isinstance(past, (str, bytes, dict)) or not isinstance(past, (Sequence, np.ndarray)):
            raise RuntimeInputError(f"past_key_values must be {form}, got {type(past).__name__}; "
                                    "pass the past_key_values of the previous call's output.")
        if len(past) != layers:
            raise RuntimeInputError(f"past_key_values has {len(past)} layers, the model has {layers}; it must be {form}.")
        feeds: dict[str, Any] = {}
        for index, (names, layer) in enumerate(zip(self.spec.past_names(), past)):
            if isinstance(layer, (str, bytes, dict)) or not isinstance(layer, (Sequence, np.ndarray)) or len(layer) != 2:
                raise RuntimeInputError(f"past_key_values[{index}] must be a (key, value) pair; past_key_values must be {form}.")
            for name, array in zip(names, layer):
                feeds[name] = array if _is_ort_value(array) else self._as_array(name, array)
        return feeds

    def __repr__(self) -> str:
        return f"{type(self).__name__}(export_dir={self.export_dir!r}, task={self.spec.task!r}, provider={self.provider!r})"


def _is_ort_value(value: Any) -> bool:
    return type(value).__name__ == "OrtValue"


def _shape(value: Any) -> tuple:
    return tuple(value.shape()) if _is_ort_value(value) else tuple(np.shape(value))


def _check_graph_matches_spec(session, spec: IOSpec, export_dir: str) -> None:
    graph_inputs = [i.name for i in session.get_inputs()]
    graph_outputs = [o.name for o in session.get_outputs()]
    if sorted(graph_inputs) != sorted(spec.input_names) or sorted(graph_outputs) != sorted(spec.output_names):
        raise ModelFileError(
            f"{layout.model_path(export_dir)} does not match its {SPEC_FILE} (graph inputs {graph_inputs}, outputs "
            f"{graph_outputs}; spec inputs {spec.input_names}, outputs {spec.output_names}); re-export the model."
        )


def _check_spec_matches_task(spec: IOSpec, config: EncoderConfig, export_dir: str) -> None:
    """The spec's tensor names are what the exporter writes for its task (io_spec.build_io_spec): a spec
    copied from another export (a question-answering spec over a fill-mask graph, with_past over a graph
    without a cache) is refused here, not by a KeyError or a missing output later."""
    try:
        # pooler_output is left out of exports whose checkpoint has no pooler (exporters.export with_pooler)
        # a sentence-embeddings graph's width is its last module's (Dense) output: the spec's record of it
        sentence = next((t.shape[-1] for t in spec.outputs if t.name == "sentence_embedding"), None)
        expected = build_io_spec(spec.task, config, spec.with_past, pooler="pooler_output" in spec.output_names,
                                 sentence_dimension=sentence if isinstance(sentence, int) else None)
    except (TaskError, ValueError) as err:
        raise ModelFileError(f"{export_dir}/{SPEC_FILE} does not fit config.json ({err}); re-export the model.") from err
    # Inputs may be fewer than today's exporter writes (an older export without token_type_ids runs with
    # the default filled in); outputs and cache inputs are what the task class reads, so they must match.
    past = {name for pair in expected.past_names() for name in pair}
    problems = []
    if sorted(spec.output_names) != sorted(expected.output_names):
        problems.append(f"outputs {spec.output_names}, a {spec.task!r} export has {expected.output_names}")
    if {t.name for t in spec.inputs if t.role in PAST_ROLES} != past:
        problems.append(f"{'no ' if spec.with_past else ''}past_key_values inputs with with_past={spec.with_past}")
    unknown = sorted(set(spec.input_names) - set(expected.input_names))
    if unknown or "input_ids" not in spec.input_names:
        problems.append(f"inputs {spec.input_names}, a {spec.task!r} export takes {expected.input_names}")
    if expected.input("encoder_states") is not None and spec.input("encoder_states") is None:
        logger.warning("%s was exported before cross-attention decoders took encoder_hidden_states: it runs the "
                       "decoder without cross-attention (as transformers does when given no encoder states). "
                       "Re-export it to feed encoder states.", export_dir)
    if problems:
        raise ModelFileError(
            f"{export_dir}/{SPEC_FILE} does not describe a {spec.task!r} export of this config: it lists "
            f"{'; '.join(problems)}. Re-export the model."
        )


def _read_graph(model_path: str, export_dir: str):
    """The graph's structure (weights left on disk), or a ModelFileError naming the file that is missing,
    truncated or corrupt. Read once at load: the rotary lowering and the input limits use it."""
    import onnx

    check_model_file(model_path)
    try:
        graph = onnx.load(model_path, load_external_data=False)
    except Exception as err:  # protobuf's DecodeError, and RuntimeError/ValueError from onnx's reader
        raise ModelFileError(
            f"{model_path} is not a readable ONNX model (truncated or corrupt?): {err}; re-export the model."
        ) from err
    if not graph.graph.node:
        raise ModelFileError(f"{model_path} holds no graph (truncated or corrupt?); re-export the model.")
    for init in graph.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in init.external_data}
        location = info.get("location", "")
        model_dir = os.path.dirname(model_path)
        path = os.path.realpath(os.path.join(model_dir, location))
        if os.path.dirname(path) != os.path.realpath(model_dir):
            raise ModelFileError(
                f"{model_path} keeps weight {init.name!r} in {location!r}, outside the export directory; "
                "re-export the model."
            )
        if not os.path.isfile(path):
            raise ModelFileError(
                f"{model_path} keeps its weights in {location!r}, which is missing from {model_dir}; "
                f"copy it beside {os.path.basename(model_path)} or re-export the model."
            )
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        if end > os.path.getsize(path):
            raise ModelFileError(
                f"{path} is truncated: weight {init.name!r} ends at byte {end}, the file has "
                f"{os.path.getsize(path)}; re-export the model."
            )
    return graph


def _embedding_rows(graph, input_name: str) -> Optional[int]:
    """Rows of the table that ``input_name`` indexes (a Gather on the input, through Casts), or None."""
    if graph is None:
        return None
    names = {input_name}
    for node in graph.graph.node:  # nodes are topologically sorted
        if node.op_type in ("Cast", "Identity") and node.input and node.input[0] in names:
            names.update(node.output)
    tables = {init.name: list(init.dims) for init in graph.graph.initializer}
    for node in graph.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in names:
            dims = tables.get(node.input[0])
            if dims and len(dims) == 2:
                return int(dims[0])
    return None


def _input_limits(config: EncoderConfig, spec: IOSpec, graph=None) -> InputLimits:
    """Value limits for the feeds from what the graph holds (its embedding tables, else the IO spec the
    exporter wrote), config.json only as a last resort: a config edited after export must not let ids
    through that the graph's Gather would read out of bounds."""
    vocab = _embedding_rows(graph, "input_ids") or spec.vocab_size or config.vocab_size
    types = _embedding_rows(graph, "token_type_ids") or spec.type_vocab_size or config.type_vocab_size
    length = min(config.max_sequence_length, spec.max_sequence_length or config.max_sequence_length)
    return InputLimits(vocab, types, length, config.max_position_embeddings)


def _load_tokenizer(export_dir: str, config: EncoderConfig):
    # Loaded with the first tokenizer: a model used for ids never imports the tokenizer libraries.
    from ..tokenizers import AutoTokenizer
    from ..tokenizers.diagnosis import tokenizer_problem

    try:
        return AutoTokenizer.from_pretrained(export_dir)
    except Exception as err:  # a damaged file can fail anywhere in a tokenizer library's parser
        problem = tokenizer_problem(export_dir, err, family_of(config))
        if problem.kind != "missing":  # corrupt, incomplete, or another class's files: say which
            raise ModelFileError(f"{problem.message}.") from err
        if not isinstance(err, (OSError, ValueError)):
            raise
        logger.info("No tokenizer loaded from %s (%s); models still take ids.", export_dir, err)
        return None


# attention_op.EXTERNAL_WEIGHTS_FOLDER (written out: onnx is imported only when a graph is lowered).
_EXTERNAL_WEIGHTS_FOLDER = "session.model_external_initializers_file_folder_path"


def _maybe_lower(graph, model_path: str, provider: str, session_config: SessionConfig, *, rotary: bool,
                 attention: bool) -> str | bytes:
    """Serialized model with the custom nodes lowered to ONNX Runtime's fused kernels where the provider has
    them (rotary -> com.microsoft.RotaryEmbedding, attention -> com.microsoft.MultiHeadAttention); else the
    path unchanged (the nodes run their ONNX function bodies)."""
    if not (rotary or attention):
        return model_path
    chosen, _, _ = select_providers(SessionConfig(**{**session_config.__dict__, "provider": provider}))
    if chosen not in ("cpu", "cuda"):
        return model_path  # TensorRT runs the function bodies
    try:
        from ..artifact import attention_op, rotary_op
    except ImportError as err:  # onnx missing on a minimal host: the function bodies still run
        logger.info("Custom nodes left as functions (%s).", err)
        return model_path
    rotary = rotary and bool(rotary_op.rotary_nodes(graph))
    attention = attention and bool(attention_op.attention_nodes(graph))
    if not (rotary or attention):
        return model_path
    # The graph's structure alone is rewritten (it was read for this load only, weights left on disk): ONNX
    # Runtime reads the external weights from the export's folder (EXTERNAL_WEIGHTS_FOLDER), so no copy of
    # them passes through Python. _read_graph checked the data files are whole.
    lowered = attention_op.lower_custom_ops(graph, rotary=rotary, attention=attention)
    if rotary:
        logger.info("Rotary nodes lowered to ONNX Runtime's fused RotaryEmbedding kernel for %s.", chosen)
    if attention:
        logger.info("Attention nodes lowered to ONNX Runtime's MultiHeadAttention kernel for %s "
                    "(flash path for batches without padding).", chosen)
    return lowered.SerializeToString()


class OnnxModel(OnnxModelBase):
    task = "feature-extraction"


class OnnxModelForCausalLM(OnnxModelBase):
    task = "text-generation"

    def _outputs(self, named: dict[str, np.ndarray]) -> RuntimeOutput:
        out = RuntimeOutput({t.name: named[t.name] for t in self.spec.outputs if t.role not in PRESENT_ROLES})
        if self.spec.with_past:
            out["past_key_values"] = tuple(
                (named[k], named[v]) for k, v in self.spec.present_names()
            )
        return out


class OnnxModelForMaskedLM(OnnxModelBase):
    task = "fill-mask"


class OnnxModelForSequenceClassification(OnnxModelBase):
    task = "text-classification"


class OnnxModelForMultipleChoice(OnnxModelBase):
    task = "multiple-choice"


class OnnxModelForTokenClassification(OnnxModelBase):
    task = "token-classification"


class OnnxModelForQuestionAnswering(OnnxModelBase):
    task = "question-answering"


class OnnxModelForSentenceEmbeddings(OnnxModelBase):
    """A sentence-transformers export: ``token_embeddings`` and ``sentence_embedding`` (pooled in the graph)."""

    task = "sentence-embeddings"


MODEL_CLASSES_BY_TASK: dict[str, type[OnnxModelBase]] = {
    cls.task: cls
    for cls in (OnnxModel, OnnxModelForCausalLM, OnnxModelForMaskedLM, OnnxModelForSequenceClassification,
                OnnxModelForMultipleChoice, OnnxModelForTokenClassification, OnnxModelForQuestionAnswering,
                OnnxModelForSentenceEmbeddings)
}


def graph_task(task: str) -> str:
    """The task whose graph an export of ``task`` holds (rerank: text-classification's)."""
    known = TASKS.get(task)
    return known.graph_of or task if known else task


def model_class_for(task: str) -> Optional[type[OnnxModelBase]]:
    """The task-head class that runs an export of ``task`` (None for a task onnxport does not know)."""
    return MODEL_CLASSES_BY_TASK.get(graph_task(task))


def load_model(export_dir: str | os.PathLike, provider: str = "auto", **kwargs: Any) -> OnnxModelBase:
    """The task-head model for whatever task the directory was exported for."""
    return OnnxModelBase.from_pretrained(export_dir, provider, **kwargs)
