"""What the three front ends (``pt.py``, ``tf.py``, ``flax.py``) share: their contract, their table, and
the steps every one of them takes the same way.

Front-end interface
-------------------
A front end is a module ``onnxport.exporters.<framework>`` with ONE function::

    def convert(job: ExportJob) -> Converted

``job`` carries the resolved ``config`` (task overrides applied, e.g.
``is_decoder=True`` for text-generation), ``family``, the ``spec`` (input and
output names / dtypes / dynamic axes, in graph order), the ``opset``, an
``example`` input dict (numpy, shapes ``validate.EXAMPLE_SHAPE``), a scratch
``workdir`` and ``allow_missing_weights``. The front end must:

* load its reference model of ``spec.head`` from ``checkpoint_dir`` with
  ``load_reference_model`` (``ExportError`` when the checkpoint lacks weights of
  that head, unless ``allow_missing_weights``);
* return ``Converted(model, run_native, versions)``: ``model`` an
  ``onnx.ModelProto`` whose graph inputs/outputs are exactly ``spec.inputs`` /
  ``spec.outputs`` (names, order, dtypes; every ``str`` dimension dynamic),
  default-domain opset ``job.opset`` (initializers may be external data
  relative to ``job.workdir``, as ``pt.py`` writes them); ``run_native(inputs) -> {output name:
  numpy}`` runs the native model on an io-spec input dict (used by validation);
  ``versions`` e.g. ``{"tensorflow": "2.21.0", "tf2onnx": "1.17.0"}``;
* trace inside ``export_tracing(spec, rotary_op)`` (the reference encoders' options while exporting, see
  ``reference_models.tracing``), where ``rotary_op`` makes every rotary application (RoFormer queries,
  keys, values when ``rotary_value``) ONE node ``onnxport.RotaryEmbedding`` with inputs
  ``(x, cos, sin)`` — x (batch, heads, seq, head_dim); cos/sin
  (batch|1, 1, seq, head_dim/2) exactly as the reference encoders' ``apply_rotary``
  receives them (past offset already applied) — see ``rotary_op.py``; the
  front end need not attach the function body: ``artifact.finalize`` does.
  (torch: an autograd Function with a symbolic; tf2onnx: a custom-op handler;
  jax2onnx: a primitive plugin emitting ``rotary_op.make_node``.)

Everything else — no Dropout, weights stored once, IR version, determinism,
external data, checker, validation, files beside the model — is generic (``export.py``).
Also declare the front end in ``FRONT_ENDS`` below (required modules, pip extra).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ..errors import ExportError, FrameworkNotInstalledError

logger = logging.getLogger("onnxport")


@dataclass(frozen=True)
class FrontEnd:
    module: str  # onnxport.exporters.<module>
    required: tuple[str, ...]  # importable modules it needs
    pip_extra: str
    display: str


FRONT_ENDS: dict[str, FrontEnd] = {
    "pt": FrontEnd("pt", ("torch", "onnx"), "onnxport[pt]", "PyTorch"),
    "tf": FrontEnd("tf", ("tensorflow", "tf2onnx", "onnx"), "onnxport[tf]", "TensorFlow"),
    "flax": FrontEnd("flax", ("jax", "flax", "jax2onnx", "onnx"), "onnxport[flax]", "Flax"),
}


@dataclass
class ExportJob:
    checkpoint_dir: str
    config: Any  # onnxport.configs.EncoderConfig
    family: Any  # onnxport.families.Family
    spec: Any  # io_spec.IOSpec
    opset: int
    example: dict[str, np.ndarray]
    workdir: str
    allow_missing_weights: bool = False


@dataclass
class Converted:
    model: Any  # onnx.ModelProto
    run_native: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    versions: dict[str, str] = field(default_factory=dict)
    random_weights: list[str] = field(default_factory=list)  # initialised from RANDOM_INIT_SEED, not the checkpoint


# Weights a checkpoint lacks (allowed with allow_missing_weights) are initialised from this seed, so that
# re-exports are byte-identical; onnxport.json lists them.
RANDOM_INIT_SEED = 0


def front_end(framework: str):
    """The front-end module of ``framework``, after checking that what it needs is installed."""
    if framework not in FRONT_ENDS:
        raise ExportError(f"Unknown framework {framework!r}; choose one of {', '.join(FRONT_ENDS)}.")
    fe = FRONT_ENDS[framework]
    missing = [m for m in fe.required if importlib.util.find_spec(m) is None]
    if missing:
        raise FrameworkNotInstalledError(
            f"Exporting from {fe.display} needs {', '.join(missing)}, which is not installed; "
            f"install it with: pip install '{fe.pip_extra}'"
        )
    package = __name__.rsplit(".", 1)[0]
    if importlib.util.find_spec(f"{package}.{fe.module}") is None:
        raise ExportError(f"The {fe.display} front end is not available in this version of onnxport.")
    return importlib.import_module(f"{package}.{fe.module}")


def check_opset(job: ExportJob, lowest: int, highest: int, writer: str) -> None:
    """Refuse an opset the front end's converter (``writer``, for the message) does not write."""
    if not lowest <= job.opset <= highest:
        raise ExportError(f"The {writer} writes opsets {lowest}..{highest}, not {job.opset}.")


def random_weights_or_refuse(missing: list[str], job: ExportJob, class_name: str) -> list[str]:
    """The front ends' one missing-weight rule: the head's weights must come from the checkpoint unless
    ``allow_missing_weights``; then they are the (seeded) random parts recorded in onnxport.json. A pooler
    the graph does not output (feature-extraction without ``with_pooler``) is not part of the export."""
    exported = [k for k in missing if not (k.startswith("pooler.") and "pooler_output" not in job.spec.output_names)]
    if exported and not job.allow_missing_weights:
        raise ExportError(
            f"The checkpoint has no weights for {', '.join(exported)} of {class_name}; the export would "
            f"carry randomly initialised layers. Export a task matching the checkpoint (it holds "
            f"{job.config.architectures or 'an unknown architecture'}), or pass allow_missing_weights=True "
            "(--allow-missing-weights) to export them initialised from a fixed seed (listed in onnxport.json)."
        )
    if exported:
        logger.warning("Randomly initialised (seed %d, not in the checkpoint): %s", RANDOM_INIT_SEED,
                       ", ".join(exported))
    return exported


def load_reference_model(job: ExportJob, model_class: Callable[[str, str], type], build: Callable[[type], Any],
                         lazy: bool = False) -> tuple[Any, list[str]]:
    """(model, random weight names): the framework's reference class of ``job.spec.head`` made by
    ``build(cls)`` (seeded from ``RANDOM_INIT_SEED`` by the front end), its weights read from the
    checkpoint, weights it lacks refused or listed (``random_weights_or_refuse``).

    ``lazy``: the model copies tensors in one at a time (safetensors), not as a whole state dict beside it."""
    from .. import checkpoints

    cls = model_class(job.family.model_type, job.spec.head)
    model = build(cls)
    state = checkpoints.lazy_state_dict(job.checkpoint_dir) if lazy else None
    report = model.load_state_dict_numpy(checkpoints.load_state_dict(job.checkpoint_dir) if state is None else state)
    del state
    return model, random_weights_or_refuse(report.missing, job, cls.__name__)


@contextlib.contextmanager
def export_tracing(spec, rotary_op: Optional[Callable], attention_op: Optional[Callable] = None) -> Iterator[None]:
    """The reference encoders' options while a front end traces the export graph (``reference_models.tracing``):
    every rotary application through ``rotary_op`` (one onnxport.RotaryEmbedding node), every attention
    through ``attention_op`` (one onnxport.Attention node), no graph input asserts (the runtime checks
    inputs against the io spec), and, when the head reads the first token alone
    (``spec.reads_first_token_only``), the last layer on that token only. The native runner used for
    validation runs outside the block: the export is checked against the full model."""
    from ..reference_models.tracing import tracing

    with tracing(rotary_op=rotary_op, attention_op=attention_op,
                 first_token_only_last_layer=spec.reads_first_token_only, graph_input_checks=False):
        yield


def expected_attention_nodes(job: "ExportJob") -> int:
    """onnxport.Attention nodes a conversion must hold: one per layer for self-attention (unless its scores
    carry relative-position terms, which keep the formula), one more per layer for cross-attention when the
    graph takes encoder states (``reference_models.tracing.attention_hook``)."""
    layers = job.config.num_hidden_layers
    relative = job.config.position_embedding_type in ("relative_key", "relative_key_query")
    cross = job.spec.input("encoder_states") is not None
    return (0 if relative else layers) + (layers if cross else 0)


def check_attention_count(model, job: "ExportJob") -> None:
    """Every attention became exactly one custom node (none split, folded or lost by the converter)."""
    from ..artifact import attention_op

    want, got = expected_attention_nodes(job), len(attention_op.attention_nodes(model))
    if got != want:
        raise ExportError(f"Expected {want} {attention_op.DOMAIN}.{attention_op.OP_TYPE} nodes (one per attention), "
                          f"the converted graph has {got}.")


def call_with_spec(model, spec, args, **call_kwargs) -> tuple:
    """Positional io-spec inputs -> the model's HF keyword call -> its outputs in io-spec order."""
    out = model(**spec.model_kwargs(dict(zip(spec.input_names, args))), return_dict=True, **call_kwargs)
    return spec.select(out)


def native_runner(spec, call: Callable[..., tuple], to_native: Callable[[np.ndarray, Any], Any],
                  to_numpy: Callable[[Any], np.ndarray],
                  query_chunks: Optional[Callable[[int], Any]] = None) -> Callable[..., dict[str, np.ndarray]]:
    """``Converted.run_native``: an io-spec input dict -> ``call(*inputs as framework values)`` ->
    {output name: numpy}. ``to_native(array, tensor_spec)`` converts one input.

    ``query_chunks(rows)``: a context manager in which ``call`` runs attention ``rows`` query positions at a
    time (``native_chunks.py``); then ``run_native(inputs, query_chunk=rows)`` uses it (validation at long
    lengths, ``validate.plan_validation``) and ``run_native.splits_queries`` is True."""

    def run_native(inputs: dict[str, np.ndarray], query_chunk: Optional[int] = None) -> dict[str, np.ndarray]:
        args = tuple(to_native(np.ascontiguousarray(inputs[t.name]), t) for t in spec.inputs)
        scope = query_chunks(query_chunk) if query_chunk and query_chunks else contextlib.nullcontext()
        with scope:
            outputs = call(*args)
        return {name: to_numpy(out) for name, out in zip(spec.output_names, outputs)}

    run_native.splits_queries = query_chunks is not None
    return run_native


__all__ = ["FRONT_ENDS", "Converted", "ExportJob", "FrontEnd", "RANDOM_INIT_SEED", "call_with_spec", "check_opset",
           "check_attention_count", "expected_attention_nodes", "export_tracing", "front_end", "load_reference_model", "native_runner", "random_weights_or_refuse"]
