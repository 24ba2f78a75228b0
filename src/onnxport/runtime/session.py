"""The one place that builds ONNX Runtime sessions.

``provider="auto"`` tries TensorRT, then CUDA, then CPU; an explicit provider that
this onnxruntime build or machine cannot run raises ``ProviderUnavailableError``
unless ``fallback=True``. A log line says which provider really runs and why the
others were skipped. Imports no deep-learning framework.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import onnxruntime as ort

from ..artifact.files import SPEC_FILE, export_file_names
from ..artifact.layout import MODEL_DIR
from ..errors import ProviderUnavailableError, ModelFileError  # noqa: F401  (re-exported: the old import path keeps working)

logger = logging.getLogger("onnxport")

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")
GRAPH_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass
class SessionConfig:
    """Provider and session options; every field maps to one ONNX Runtime option."""

    provider: str = "auto"
    fallback: bool = False  # explicit provider unavailable -> fall back along AUTO_ORDER instead of raising
    device_id: int = 0
    cuda_mem_limit: Optional[int] = None  # bytes (CUDA gpu_mem_limit)
    trt_fp16: bool = False
    trt_engine_cache_dir: Optional[str] = None
    intra_op_threads: Optional[int] = None
    inter_op_threads: Optional[int] = None
    graph_optimization_level: str = "all"
    # Cache of the optimized graph (written on load); never one of the export's own files (refused).
    optimized_model_path: Optional[str] = None
    extra_session_entries: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.provider != "auto" and self.provider not in PROVIDER_NAMES:
            raise ValueError(f"provider={self.provider!r} is not one of auto, {', '.join(PROVIDER_NAMES)}.")
        if self.graph_optimization_level not in GRAPH_OPTIMIZATION_LEVELS:
            raise ValueError(
                f"graph_optimization_level={self.graph_optimization_level!r} is not one of "
                f"{', '.join(GRAPH_OPTIMIZATION_LEVELS)}."
            )
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer (0 = ONNX Runtime's default), got {value!r}.")


def _provider_options(name: str, config: SessionConfig) -> dict[str, Any]:
    if name == "tensorrt":
        options: dict[str, Any] = {"device_id": config.device_id, "trt_fp16_enable": config.trt_fp16}
        if config.trt_engine_cache_dir:
            options["trt_engine_cache_enable"] = True
            options["trt_engine_cache_path"] = config.trt_engine_cache_dir
        return options
    if name == "cuda":
        options = {"device_id": config.device_id}
        if config.cuda_mem_limit is not None:
            options["gpu_mem_limit"] = int(config.cuda_mem_limit)
        return options
    return {}


def select_providers(config: SessionConfig, available: Optional[list[str]] = None):
    """Provider list for InferenceSession (most preferred first) and the reasons others were skipped.

    Returns ``(chosen_key, [(ProviderName, options), ...], skipped)`` where ``skipped`` maps a
    provider key to why it is not used. CPU always ends the list so unsupported nodes still run.
    """
    config.validate()
    available = list(ort.get_available_providers() if available is None else available)
    skipped: dict[str, str] = {}
    if config.provider == "auto":
        candidates = list(AUTO_ORDER)
    elif config.fallback:
        start = AUTO_ORDER.index(config.provider)
        candidates = list(AUTO_ORDER[start:])
    else:
        candidates = [config.provider]
    chosen = None
    for key in candidates:
        if PROVIDER_NAMES[key] in available:
            chosen = key
            break
        skipped[key] = f"{PROVIDER_NAMES[key]} is not in this onnxruntime build (available: {', '.join(available)})"
    if chosen is None:
        key = config.provider
        hint = (
            "install onnxruntime-gpu (pip install 'onnxport[gpu]') on a host with an NVIDIA GPU and drivers, "
            "or pass provider='cpu', or fallback=True to fall back automatically"
        )
        raise ProviderUnavailableError(f"Provider {key!r} is unavailable: {skipped[key]}; {hint}.")
    # Providers after the chosen one back it up for nodes it cannot place; CPU is always last.
    chain = AUTO_ORDER[AUTO_ORDER.index(chosen):]
    providers = [(PROVIDER_NAMES[k], _provider_options(k, config)) for k in chain if PROVIDER_NAMES[k] in available]
    return chosen, providers, skipped


def session_options(config: SessionConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = GRAPH_OPTIMIZATION_LEVELS[config.graph_optimization_level]
    if config.intra_op_threads is not None:
        options.intra_op_num_threads = config.intra_op_threads
    if config.inter_op_threads is not None:
        options.inter_op_num_threads = config.inter_op_threads
    if config.optimized_model_path:
        os.makedirs(os.path.dirname(os.path.abspath(config.optimized_model_path)), exist_ok=True)
        options.optimized_model_filepath = config.optimized_model_path
    for key, value in config.extra_session_entries.items():
        options.add_session_config_entry(key, value)
    return options


def check_model_file(path: str) -> None:
    """Fail clearly on a missing or obviously corrupt file before ONNX Runtime parses it."""
    if not os.path.isfile(path):
        raise ModelFileError(f"No ONNX model at {path!r}; export one with `onnxport export`.")
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"{path} is empty; re-export the model.")


# ORT writes the optimized graph's large initializers to this file (beside optimized_model_path) when set.
_EXTERNAL_INITIALIZERS_ENTRY = "session.optimized_model_external_initializers_file_name"


def check_optimized_model_path(config: SessionConfig, model_path: Optional[str] = None) -> None:
    """Refuse an ``optimized_model_path`` that names the model itself or a file an export directory owns.

    ONNX Runtime writes the graph it optimized for this machine's providers there: over ``model.onnx`` (or
    its external data, config, ``onnxport.json``, tokenizer files) the portable export would be lost. The
    export's own files are found from the target's directory (whatever ``model`` the session gets: the
    RoFormer rotary lowering hands over bytes) and from ``model_path``'s directory.
    """
    if not config.optimized_model_path:
        return
    targets = [os.path.realpath(config.optimized_model_path)]
    external = config.extra_session_entries.get(_EXTERNAL_INITIALIZERS_ENTRY)
    if external:
        targets.append(os.path.realpath(os.path.join(os.path.dirname(targets[0]), external)))
    model = os.path.realpath(model_path) if model_path else None
    for target in targets:
        directory, name = os.path.split(target)
        owner = None
        if target == model:
            owner = "the model the session loads"
        elif name in export_file_names(directory) and (
                os.path.isfile(os.path.join(directory, SPEC_FILE)) or (model and directory == os.path.dirname(model))):
            owner = f"a file of the export in {directory}"
        elif os.path.basename(directory) == MODEL_DIR and os.path.isfile(os.path.join(directory, "..", SPEC_FILE)):
            owner = f"the export's model folder {directory}"  # the graph's folder: nothing else belongs there
        if owner:
            raise ModelFileError(
                f"optimized_model_path={config.optimized_model_path!r} names {owner} ({target}); ONNX Runtime "
                "would overwrite it with a graph optimized for this machine's hardware and the portable export "
                "would be lost. Choose a path outside the export's files, e.g. a file in a separate cache directory."
            )


def create_session(model: str | bytes, config: Optional[SessionConfig] = None, **overrides: Any):
    """Build an InferenceSession; returns ``(session, chosen_provider_key)``.

    ``model`` is a path or serialized bytes (after graph rewrites such as the rotary lowering).
    """
    config = config or SessionConfig()
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise TypeError(f"Unknown session option {key!r}; valid: {', '.join(SessionConfig.__dataclass_fields__)}.")
        setattr(config, key, value)
    chosen, providers, skipped = select_providers(config)
    source = model if isinstance(model, str) else "<in-memory model>"
    check_optimized_model_path(config, model if isinstance(model, str) else None)
    if isinstance(model, str):
        check_model_file(model)
    try:
        session = ort.InferenceSession(model, sess_options=session_options(config), providers=providers)
    except Exception as err:  # ORT raises several private exception types for unreadable graphs
        message = str(err)
        if any(s in message for s in ("Protobuf parsing failed", "INVALID_PROTOBUF", "InvalidProtobuf", "ModelProto")):
            raise ModelFileError(
                f"{source} is not a readable ONNX model (truncated or corrupt?): {message.splitlines()[0]}. "
                "Re-export it with `onnxport export`."
            ) from err
        raise
    running = session.get_providers()
    reasons = "; ".join(f"{k} skipped: {v}" for k, v in skipped.items())
    logger.info("ONNX Runtime runs %s on %s%s", source, running[0], f" ({reasons})" if reasons else "")
    return session, chosen
