"""Task-head models over an export directory: numpy in, named numpy out.

``OnnxModelFor*.from_pretrained(export_dir, provider=...)`` reads ``onnxport.json``
(the IO spec the exporter wrote), ``config.json`` and the tokenizer, builds the
session (lowering RoFormer's rotary node to a fused kernel where the provider
has one) and checks every call against the IO spec before ONNX Runtime sees it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from ..configs import AutoConfig, EncoderConfig
from ..exporters.io_spec import IOSpec, empty_past
from ..errors import InputError
from .session import ModelFileError, SessionConfig, create_session

logger = logging.getLogger("onnxport")

SPEC_FILE = "onnxport.json"
MODEL_FILE = "model.onnx"


# The runtime's input errors are the reference models' ones: one type for one condition everywhere.
RuntimeInputError = InputError


class RuntimeOutput(dict):
    """Named outputs with attribute access (``out.logits``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def read_export_dir(export_dir: str | os.PathLike) -> tuple[dict[str, Any], IOSpec]:
    export_dir = os.fspath(export_dir)
    if not os.path.isdir(export_dir):
        raise FileNotFoundError(f"Export directory {export_dir!r} does not exist; create it with `onnxport export`.")
    path = os.path.join(export_dir, SPEC_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{export_dir} has no {SPEC_FILE}; it was not written by `onnxport export` (re-export the checkpoint)."
        )
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        spec = IOSpec.from_dict(meta["io_spec"])
    except (ValueError, KeyError) as err:
        raise ModelFileError(f"{path} is unreadable ({err}); re-export the model.") from err
    return meta, spec


class OnnxModelBase:
    """Shared loading, input checking and running; subclasses only name their task."""

    task: ClassVar[str] = ""

    def __init__(self, session, spec: IOSpec, config: EncoderConfig, tokenizer=None, export_dir: str = "",
                 provider: str = "cpu", metadata: Optional[dict] = None, use_io_binding: Optional[bool] = None,
                 device_id: int = 0) -> None:
        self.session = session
        self.spec = spec
        self.config = config
        self.tokenizer = tokenizer
        self.export_dir = export_dir
        self.provider = provider
        self.metadata = metadata or {}
        # On GPUs, bind outputs to the device so the decoding cache never travels through host memory.
        self.use_io_binding = provider in ("cuda", "tensorrt") if use_io_binding is None else use_io_binding
        self.device_id = device_id
        self._input_specs = {t.name: t for t in spec.inputs}
        self._lock = threading.Lock()  # only guards lazy state; ONNX Runtime's run() is thread-safe

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, export_dir: str | os.PathLike, provider: str = "auto", *,
                        session_config: Optional[SessionConfig] = None, fuse_rotary: bool = True,
                        load_tokenizer: bool = True, use_io_binding: Optional[bool] = None,
                        **session_options: Any):
        export_dir = os.fspath(export_dir)
        meta, spec = read_export_dir(export_dir)
        if cls.task and spec.task != cls.task:
            right = MODEL_CLASSES_BY_TASK.get(spec.task)
            raise ValueError(
                f"{export_dir} was exported for {spec.task!r}, not {cls.task!r}; load it with "
                f"{right.__name__ if right else 'the matching class'} or re-export with --task {cls.task}."
            )
        config = AutoConfig.from_pretrained(export_dir)
        config_obj = session_config or SessionConfig()
        config_obj.provider = provider
        model_path = os.path.join(export_dir, MODEL_FILE)
        model_source: str | bytes = model_path
        if fuse_rotary and config.model_type == "roformer":
            model_source = _maybe_lower_rotary(model_path, provider, config_obj)
        session, chosen = create_session(model_source, config_obj, **session_options)
        _check_graph_matches_spec(session, spec, export_dir)
        tokenizer = None
        if load_tokenizer:
            tokenizer = _load_tokenizer(export_dir)
        model_cls = cls if cls.task else MODEL_CLASSES_BY_TASK[spec.task]
        return model_cls(session, spec, config, tokenizer, export_dir, chosen, meta, use_io_binding,
                         config_obj.device_id)

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
        values = binding.get_outputs()
        return {name: value if name.startswith("present.") else value.numpy() for name, value in zip(names, values)}

    forward = __call__

    def _outputs(self, named: dict[str, np.ndarray]) -> RuntimeOutput:
        return RuntimeOutput(named)

    def prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Check inputs against the IO spec and fill defaults (attention_mask, token_type_ids)."""
        inputs = dict(inputs)
        past = inputs.pop("past_key_values", None)
        known = set(self._input_specs)
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise RuntimeInputError(
                f"Unknown input(s) {unknown} for this {self.spec.task} export; it takes {sorted(known)}."
            )
        if "input_ids" not in inputs:
            raise RuntimeInputError("input_ids is required.")
        feeds: dict[str, np.ndarray] = {}
        ids = self._int_array("input_ids", inputs["input_ids"])
        rank = len(self._input_specs["input_ids"].shape)
        if ids.ndim != rank:
            what = "(batch, num_choices, sequence)" if rank == 3 else "(batch, sequence)"
            raise RuntimeInputError(f"input_ids must have shape {what}, got {ids.shape}.")
        vocab = self.config.vocab_size
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise RuntimeInputError(
                f"input_ids must lie in [0, {vocab - 1}] (vocab_size), found [{ids.min()}, {ids.max()}]; "
                "use the tokenizer exported with the model."
            )
        past_length = 0
        if self.spec.with_past:
            past_feeds = self._past_feeds(past, ids.shape[0])
            past_length = _shape(next(iter(past_feeds.values())))[2] if past_feeds else 0
            feeds.update(past_feeds)
        elif past is not None:
            raise RuntimeInputError("past_key_values given, but this export has no cache inputs; export with --with-past.")
        seq = ids.shape[-1]
        limit = self.config.max_sequence_length
        if seq + past_length > limit:
            raise RuntimeInputError(
                f"Sequence length {seq + past_length} exceeds the model's maximum of {limit} positions; "
                "truncate the input (tokenizer(..., truncation=True, max_length=...))."
            )
        feeds["input_ids"] = ids
        mask = inputs.get("attention_mask")
        want_mask = ids.shape[:-1] + (seq + past_length,)
        mask = np.ones(want_mask, np.int64) if mask is None else self._mask_array(mask)
        if mask.shape != want_mask:
            raise RuntimeInputError(f"attention_mask must have shape {want_mask}, got {mask.shape}.")
        feeds["attention_mask"] = mask
        if "token_type_ids" in known:
            types = inputs.get("token_type_ids")
            types = np.zeros_like(ids) if types is None else self._int_array("token_type_ids", types)
            if types.shape != ids.shape:
                raise RuntimeInputError(f"token_type_ids must have the shape of input_ids {ids.shape}, got {types.shape}.")
            if types.size and (types.min() < 0 or types.max() >= self.config.type_vocab_size):
                raise RuntimeInputError(
                    f"token_type_ids must lie in [0, {self.config.type_vocab_size - 1}], found [{types.min()}, {types.max()}]."
                )
            feeds["token_type_ids"] = types
        return feeds

    @staticmethod
    def _int_array(name: str, value: Any) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype.kind not in "iub":
            raise RuntimeInputError(f"{name} must hold integers, got dtype {array.dtype}.")
        return array.astype(np.int64, copy=False)

    @classmethod
    def _mask_array(cls, value: Any) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype.kind == "f":  # transformers accepts 0.0/1.0 float masks; the graph takes int64
            if not np.isin(array, (0.0, 1.0)).all():
                raise RuntimeInputError("attention_mask must contain only 0 and 1.")
            return array.astype(np.int64)
        return cls._int_array("attention_mask", array)

    def _past_feeds(self, past: Optional[Sequence], batch: int) -> dict[str, np.ndarray]:
        if past is None:
            return empty_past(self.spec, batch)
        if len(past) != self.spec.num_layers:
            raise RuntimeInputError(f"past_key_values has {len(past)} layers, the model has {self.spec.num_layers}.")
        feeds = {}
        want = (batch, self.spec.extra["num_attention_heads"], None, self.spec.extra["head_dim"])
        for (key_name, value_name), layer in zip(self.spec.past_names(), past):
            for name, array in ((key_name, layer[0]), (value_name, layer[1])):
                if not _is_ort_value(array):  # OrtValues from IO binding stay where they are
                    array = np.asarray(array, dtype=self._input_specs[name].dtype)  # float16 in fp16 exports
                shape = _shape(array)
                if len(shape) != 4 or any(w is not None and w != g for w, g in zip(want, shape)):
                    raise RuntimeInputError(f"{name} must have shape (batch, heads, past, head_dim) = {want}, got {shape}.")
                feeds[name] = array
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
            f"{export_dir}/model.onnx does not match its {SPEC_FILE} (graph inputs {graph_inputs}, outputs "
            f"{graph_outputs}; spec inputs {spec.input_names}, outputs {spec.output_names}); re-export the model."
        )


def _load_tokenizer(export_dir: str):
    from ..tokenizers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(export_dir)
    except (OSError, ValueError) as err:
        logger.info("No tokenizer loaded from %s (%s); models still take ids.", export_dir, err)
        return None


def _maybe_lower_rotary(model_path: str, provider: str, session_config: SessionConfig) -> str | bytes:
    """Serialized model with rotary nodes fused for providers that have the kernel; else the path unchanged."""
    from .session import select_providers

    chosen, _, _ = select_providers(SessionConfig(**{**session_config.__dict__, "provider": provider}))
    if chosen not in ("cpu", "cuda"):
        return model_path  # TensorRT runs the function body
    try:
        from ..exporters import rotary_op
    except ImportError as err:  # onnx missing on a minimal host: the function body still runs
        logger.info("Rotary nodes left as functions (%s).", err)
        return model_path
    import onnx

    model = onnx.load(model_path)
    if not rotary_op.rotary_nodes(model):
        return model_path
    lowered = rotary_op.lower_to_contrib(model)
    logger.info("Rotary nodes lowered to ONNX Runtime's fused RotaryEmbedding kernel for %s.", chosen)
    return lowered.SerializeToString()


class OnnxModel(OnnxModelBase):
    task = "feature-extraction"


class OnnxModelForCausalLM(OnnxModelBase):
    task = "text-generation"

    def _outputs(self, named: dict[str, np.ndarray]) -> RuntimeOutput:
        out = RuntimeOutput({k: v for k, v in named.items() if not k.startswith("present.")})
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


MODEL_CLASSES_BY_TASK: dict[str, type[OnnxModelBase]] = {
    cls.task: cls
    for cls in (OnnxModel, OnnxModelForCausalLM, OnnxModelForMaskedLM, OnnxModelForSequenceClassification,
                OnnxModelForMultipleChoice, OnnxModelForTokenClassification, OnnxModelForQuestionAnswering)
}


def load_model(export_dir: str | os.PathLike, provider: str = "auto", **kwargs: Any) -> OnnxModelBase:
    """The task-head model for whatever task the directory was exported for."""
    return OnnxModelBase.from_pretrained(export_dir, provider, **kwargs)
