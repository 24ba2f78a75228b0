"""The parity matrix: every family x task, the three native frameworks and their three exports.

For one checkpoint per (family, task) it compares, on the same inputs:
- native <-> native: PyTorch vs TensorFlow, PyTorch vs Flax — every output the models give
  (logits / hidden state / pooler, all hidden states, attentions, loss, present key/values);
- native <-> ONNX: each framework vs ONNX Runtime on its own export;
- ONNX <-> ONNX: the PyTorch export vs the TensorFlow and Flax exports, and for RoFormer each
  export's custom functions (rotary and attention) vs the fused ONNX Runtime kernels (every family's fused
  attention is checked against transformers in parity_tests/test_fused_attention.py).
Inputs have padding, pairs (token types), batch > 1, lengths unlike the export example and the
longest allowed length; text generation runs with and without past key/values.

Tolerances live in ``TOLERANCES``. A framework that is not installed gives skipped cells with the
reason, never passed ones. ``onnxport parity`` prints the table, writes JSON and an HTML heat map.
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from ..artifact.io_spec import TASKS as EXPORT_TASKS, tensor_name
from ..families import FAMILIES
from . import FRAMEWORKS, SIZES
from . import TASK_ROWS as TASKS  # (export task, with_past) rows of the matrix

# fp32 error allowed per comparison kind, relative to each output's scale: a cell's error is
# max |a - b| / max(1, max |a|) over its outputs, so random tiny models (outputs of order 1) are held to the
# absolute bar and trained ones (logits of order 10-30) to the same number of significant digits.
TOLERANCES = {"native-native": 1e-5, "native-onnx": 1e-4, "onnx-onnx": 1e-4}
ERROR_DEFINITION = "max |a - b| / max(1, max |a|) per output"
# The checkpoints are PyTorch's (build_checkpoint): the other frameworks and their exports are compared with it.
REFERENCE = "pt"
OTHERS = tuple(f for f in FRAMEWORKS if f != REFERENCE)
COMPARISONS = (
    *((f"{REFERENCE}~{other}", "native-native") for other in OTHERS),
    *((f"{f}~onnx[{f}]", "native-onnx") for f in FRAMEWORKS),
    *((f"onnx[{REFERENCE}]~onnx[{other}]", "onnx-onnx") for other in OTHERS),
    ("function~fused", "onnx-onnx"),
)
KIND = dict(COMPARISONS)
FRAMEWORK_MODULES = {"pt": "torch", "tf": "tensorflow", "flax": "flax"}


@dataclass
class Cell:
    family: str
    task: str
    comparison: str
    kind: str
    status: str  # "passed" | "failed" | "skipped"
    error: Optional[float] = None  # scaled error (ERROR_DEFINITION), compared with the tolerance
    tolerance: Optional[float] = None
    worst: Optional[dict[str, Any]] = None  # output, case, index, both values, abs_error, scale
    reason: str = ""

    @property
    def max_abs_error(self) -> Optional[float]:
        """The absolute difference at the worst place."""
        if self.worst and "abs_error" in self.worst:
            return self.worst["abs_error"]
        return self.error

    def describe(self) -> str:
        if self.status == "skipped":
            return f"{self.family} {self.task} {self.comparison}: skipped ({self.reason})"
        text = f"{self.family} {self.task} {self.comparison}: {self.status}, error {self.error:.3e}"
        if self.worst and self.status == "failed":
            w = self.worst
            text += (f" > {self.tolerance:.0e} at {w['output']}{w['index']} ({w['case']}): "
                     f"{w['a']:.6g} vs {w['b']:.6g} (abs {w.get('abs_error', float('nan')):.3e}, "
                     f"scale {w.get('scale', 1.0):.3g})")
        return text


@dataclass
class Result:
    cells: list[Cell] = field(default_factory=list)
    seconds: float = 0.0
    size: str = "tiny"
    checkpoints: list[str] = field(default_factory=list)  # given checkpoints (else random ones of ``size``)
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))

    @property
    def subject(self) -> str:
        """What was compared: the checkpoints by path, or the random models' size."""
        return ", ".join(self.checkpoints) if self.checkpoints else f"random {self.size} checkpoints"

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.cells) for s in ("passed", "skipped", "failed")}

    def worst_by_kind(self) -> dict[str, float]:
        worst: dict[str, float] = {}
        for c in self.cells:
            if c.error is not None:
                worst[c.kind] = max(worst.get(c.kind, 0.0), c.error)
        return worst

    def summary(self) -> str:
        n = self.counts()
        worst = ", ".join(f"{k} {v:.1e}" for k, v in sorted(self.worst_by_kind().items()))
        return (f"{n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped "
                f"(worst: {worst or 'n/a'}; {self.seconds:.0f}s)")

    def to_json(self) -> str:
        return json.dumps({"size": self.size, "checkpoints": self.checkpoints, "date": self.date,
                           "tolerances": TOLERANCES, "error": ERROR_DEFINITION, "summary": self.summary(),
                           "counts": self.counts(), "worst_by_kind": self.worst_by_kind(),
                           "cells": [asdict(c) for c in self.cells]}, indent=2)


# ----------------------------------------------------------------------------- native calls
def framework_missing(framework: str) -> str:
    """'' when the framework and its onnxport implementation import, else why not."""
    if importlib.util.find_spec(FRAMEWORK_MODULES[framework]) is None:
        return f"{FRAMEWORK_MODULES[framework]} is not installed (pip install 'onnxport[{framework}]')"
    return ""


def load_native(framework: str, model_type: str, head: str, checkpoint: str, **config_overrides):
    module = importlib.import_module(f"onnxport.reference_models.{framework}")
    return module.model_class(model_type, head).from_pretrained(checkpoint, **config_overrides)


def _labels(head: str, feeds: dict[str, np.ndarray], num_labels: int, rng) -> dict[str, np.ndarray]:
    ids = feeds["input_ids"]
    mask = feeds["attention_mask"][..., -ids.shape[-1]:]
    if head in ("ForMaskedLM", "ForCausalLM"):
        labels = np.where(mask == 1, ids, -100)
        return {"labels": labels.astype(np.int64)}
    if head == "ForSequenceClassification":
        return {"labels": rng.integers(0, num_labels, size=ids.shape[0]).astype(np.int64)}
    if head == "ForTokenClassification":
        return {"labels": np.where(mask == 1, rng.integers(0, num_labels, size=ids.shape), -100).astype(np.int64)}
    if head == "ForMultipleChoice":
        return {"labels": rng.integers(0, ids.shape[1], size=ids.shape[0]).astype(np.int64)}
    if head == "ForQuestionAnswering":
        return {"start_positions": rng.integers(0, ids.shape[-1], size=ids.shape[0]).astype(np.int64),
                "end_positions": rng.integers(0, ids.shape[-1], size=ids.shape[0]).astype(np.int64)}
    return {}


def native_outputs(framework: str, model, feeds: dict[str, np.ndarray], spec, extra: dict[str, np.ndarray],
                   full: bool) -> dict[str, np.ndarray]:
    """Run a reference model on io-spec feeds; flatten every output to named numpy arrays.

    ``full`` asks for hidden states, attentions and the loss as well (native <-> native cells).
    """
    kwargs: dict[str, Any] = spec.model_kwargs(feeds)
    if full:
        kwargs.update(extra, output_hidden_states=True, output_attentions=True)
    if framework == "pt":
        import torch

        def to_torch(value):
            if isinstance(value, tuple):
                return tuple(to_torch(v) for v in value)
            return torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value

        with torch.no_grad():
            out = model(**{k: to_torch(v) for k, v in kwargs.items()}, return_dict=True)
    elif framework == "flax":
        input_ids = kwargs.pop("input_ids")
        out = model(input_ids, **kwargs, return_dict=True)
    else:
        out = model(**kwargs, return_dict=True)
    flat: dict[str, np.ndarray] = {}
    for key, value in out.items():
        if key == "past_key_values":
            for i, layer in enumerate(value):
                flat[tensor_name("present_key", i)], flat[tensor_name("present_value", i)] = _np(layer[0]), _np(layer[1])
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                flat[f"{key}.{i}"] = _np(item)
        else:
            flat[key] = _np(value)
    return flat


def _np(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return np.asarray(value, dtype=np.float32)


# ----------------------------------------------------------------------------- comparing
def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray], names: Iterable[str], case: str,
            skip: Iterable[str] = ()):
    """(scaled error, worst-location dict) over ``names`` present in both; ``skip``: outputs never compared
    (computed by randomly initialised weights). The error is ERROR_DEFINITION."""
    worst_err, worst = 0.0, None
    for name in names:
        if name in skip:
            continue
        if name not in a or name not in b:
            raise KeyError(f"output {name!r} missing from one side ({sorted(a)} vs {sorted(b)})")
        x, y = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
        if x.shape != y.shape:
            return math.inf, {"output": name, "case": case, "index": "", "a": float("nan"), "b": float("nan"),
                              "shapes": [list(x.shape), list(y.shape)], "abs_error": math.inf, "scale": 1.0}
        if x.size == 0:
            continue
        diff = np.abs(x - y)
        diff = np.where(np.isnan(diff), np.inf, diff)
        finite = np.abs(x[np.isfinite(x)])
        scale = max(1.0, float(finite.max()) if finite.size else 1.0)
        index = np.unravel_index(int(np.argmax(diff)), diff.shape)
        if diff[index] / scale >= worst_err:
            worst_err = float(diff[index] / scale)
            worst = {"output": name, "case": case, "index": list(int(i) for i in index),
                     "a": float(x[index]), "b": float(y[index]), "abs_error": float(diff[index]), "scale": scale}
    return worst_err, worst


class _CellBuilder:
    def __init__(self, family: str, task: str) -> None:
        self.family, self.task = family, task
        self.errors: dict[str, tuple[float, Optional[dict]]] = {}
        self.skips: dict[str, str] = {}
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def add(self, comparison: str, error: float, worst: Optional[dict]) -> None:
        previous = self.errors.get(comparison, (-1.0, None))
        if error > previous[0]:
            self.errors[comparison] = (error, worst)

    def skip(self, comparison: str, reason: str) -> None:
        self.skips.setdefault(comparison, reason)

    def cells(self, wanted: Iterable[str]) -> list[Cell]:
        out = []
        for comparison in wanted:
            kind = KIND[comparison]
            tol = TOLERANCES[kind]
            if comparison in self.errors and comparison not in self.skips:
                error, worst = self.errors[comparison]
                status = "passed" if error <= tol else "failed"
                out.append(Cell(self.family, self.task, comparison, kind, status, error, tol, worst,
                                reason="; ".join(self.notes)))
            else:
                out.append(Cell(self.family, self.task, comparison, kind, "skipped",
                                reason=self.skips.get(comparison, "not applicable")))
        return out


# ----------------------------------------------------------------------------- the matrix
def build_checkpoint(directory: str, model_type: str, head: str, size: str, seed: int = 0) -> str:
    import torch

    from ..configs import AutoConfig
    from ..reference_models.pt import model_class

    torch.manual_seed(seed)
    overrides = dict(SIZES[size])
    if head == "ForCausalLM":
        overrides["is_decoder"] = True
    if FAMILIES[model_type].rotary and size == "base":
        overrides["max_position_embeddings"] = 1536
    config = AutoConfig.for_model(model_type, **overrides)
    model = model_class(model_type, head)(config)
    with torch.no_grad():  # non-trivial biases and norms so every parameter matters
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(directory)
    return directory


def _cases(spec, config, task: str, with_past: bool):
    """Named io-spec inputs: padded batch unlike the example, pairs via token types, and the longest length."""
    from ..artifact.io_spec import make_inputs

    limit = config.max_sequence_length
    past = 4 if with_past else 0
    yield "padded", make_inputs(spec, batch=3, sequence=11, past=past, num_choices=3, seed=7)
    yield "longest", make_inputs(spec, batch=1, sequence=limit - past, past=past, num_choices=2, seed=8, pad=False)
    if with_past:
        yield "empty-past", make_inputs(spec, batch=2, sequence=5, past=0, seed=9)


def run_row(model_type: str, task: str, with_past: bool, workdir: str, frameworks: Iterable[str] = FRAMEWORKS,
            size: str = "tiny", export_fn: Optional[Callable] = None, checkpoint: Optional[str] = None) -> list[Cell]:
    """All comparison cells of one (family, task) row, on ``checkpoint`` or a random one of ``size``."""
    from ..configs import AutoConfig
    from ..exporters import ExportError, export
    from ..artifact.io_spec import TASKS as EXPORT_TASKS
    from ..artifact.io_spec import build_io_spec
    from ..runtime.models import OnnxModelBase

    head = EXPORT_TASKS[task].head
    label = task + (" +past" if with_past else "")
    row = _CellBuilder(model_type, label)
    frameworks = [f for f in FRAMEWORKS if f in set(frameworks)]
    missing = {f: framework_missing(f) for f in FRAMEWORKS}
    for f in FRAMEWORKS:
        if f not in frameworks:
            missing[f] = missing[f] or "not selected (--frameworks)"
    if checkpoint is None:
        checkpoint = os.path.join(workdir, f"ckpt-{model_type}-{head}-{size}")
        if not os.path.isdir(checkpoint):
            build_checkpoint(checkpoint, model_type, head, size)
        export_key = size
    else:  # a given checkpoint: its exports are keyed by its path
        export_key = hashlib.sha1(os.path.abspath(checkpoint).encode()).hexdigest()[:10]
    config = AutoConfig.from_pretrained(checkpoint)
    # Outputs of weights the checkpoint lacks are initialised differently by each framework: never compared
    # (the exports leave pooler_output out, as `onnxport export` does for such checkpoints).
    random = random_outputs(checkpoint, FAMILIES[model_type]) if task == "feature-extraction" else set()
    if random:
        row.note(f"not compared (random weights: not in the checkpoint): {', '.join(sorted(random))}")
    spec = build_io_spec(task, config, with_past, pooler="pooler_output" not in random)
    overrides = {"is_decoder": True} if task == "text-generation" else {}

    natives = {f: load_native(f, model_type, head, checkpoint, **overrides) for f in frameworks if not missing[f]}
    sessions: dict[str, Any] = {}
    for f in natives:
        out = os.path.join(workdir, f"onnx-{model_type}-{task}-{int(with_past)}-{f}-{export_key}")
        try:
            if not os.path.isdir(out):
                (export_fn or export)(checkpoint, out, framework=f, task=task, with_past=with_past, validate=False)
            sessions[f] = OnnxModelBase.from_pretrained(out, provider="cpu", fuse_rotary=False, fuse_attention=False,
                                                        load_tokenizer=False)
            if FAMILIES[model_type].rotary:
                sessions[f + "+fused"] = OnnxModelBase.from_pretrained(out, provider="cpu", load_tokenizer=False)
        except (ExportError, ImportError) as err:
            missing.setdefault(f"onnx[{f}]", "")
            row.skip(f"{f}~onnx[{f}]", f"export unavailable: {str(err).splitlines()[0]}")

    def pair(comparison: str, left: Optional[dict], right: Optional[dict], names, case: str, reason: str) -> None:
        """One comparison on one case, or its skip with the reason when a side is unavailable."""
        if left is not None and right is not None:
            row.add(comparison, *compare(left, right, names, case, random))
        else:
            row.skip(comparison, reason)

    rng = np.random.default_rng(0)
    for case, feeds in _cases(spec, config, task, with_past):
        extra = _labels(head, feeds, config.num_labels, rng)
        # Graph outputs come from a plain call; the native<->native cells also get hidden states,
        # attentions and the loss (with labels, causal LMs build no cache, so that is a second call).
        plain = {f: native_outputs(f, m, feeds, spec, extra, full=False) for f, m in natives.items()}
        full = {f: native_outputs(f, m, feeds, spec, extra, full=True) for f, m in natives.items()}
        onnx = {}
        for key, model in sessions.items():
            values = model.session.run(spec.output_names, feeds)
            onnx[key] = dict(zip(spec.output_names, values))
        for other in OTHERS:
            reason = missing.get(other) or missing.get(REFERENCE) or "unavailable"
            for outputs in (full, plain):  # every output the models give, then the graph's plain call
                reference = outputs.get(REFERENCE)
                pair(f"{REFERENCE}~{other}", reference, outputs.get(other), sorted(reference or ()), case, reason)
        for f in FRAMEWORKS:
            pair(f"{f}~onnx[{f}]", plain.get(f), onnx.get(f), spec.output_names, case,
                 missing.get(f) or "export unavailable")
        for other in OTHERS:
            pair(f"onnx[{REFERENCE}]~onnx[{other}]", onnx.get(REFERENCE), onnx.get(other), spec.output_names, case,
                 missing.get(other) or "export unavailable")
        if FAMILIES[model_type].rotary:
            for f in FRAMEWORKS:
                if f in onnx and f + "+fused" in onnx:
                    row.add("function~fused", *compare(onnx[f], onnx[f + "+fused"], spec.output_names, f"{case}/{f}",
                                                       random))
        else:
            row.skip("function~fused", "no rotary embedding in this family")
    return row.cells(c for c, _ in COMPARISONS)


def random_outputs(checkpoint: str, family) -> set[str]:
    """Base-model outputs computed by weights the checkpoint does not hold (a pooler missing from a masked-LM
    checkpoint): each framework initialises those at random, so comparing them says nothing."""
    from ..checkpoints import weight_names

    if not family.has_pooler or any(n.split(".").count("pooler") for n in weight_names(checkpoint)):
        return set()
    return {"pooler_output"}


def checkpoint_rows(checkpoint: str) -> list[tuple[str, str, bool]]:
    """(family, task, with_past) rows a given checkpoint can fill: its own head's task, and feature-extraction
    (the base model loads from any head checkpoint). Other heads would start from framework-specific random
    weights, so they are not compared."""
    from ..configs import AutoConfig
    from ..exporters import _task_from_architectures
    from ..families import family_of

    if not os.path.isfile(os.path.join(checkpoint, "config.json")):
        raise FileNotFoundError(f"{checkpoint!r} is not a checkpoint directory (no config.json).")
    config = AutoConfig.from_pretrained(checkpoint)
    family = family_of(config)
    own = _task_from_architectures(config, family, checkpoint)
    own = EXPORT_TASKS[own].graph_of or own  # a cross-encoder's graph is text-classification's
    tasks = {"feature-extraction", own}
    return [(config.model_type, t, p) for t, p in TASKS if t in tasks]


def run_matrix(families: Iterable[str] = tuple(FAMILIES), frameworks: Iterable[str] = FRAMEWORKS,
               tasks: Optional[Iterable[str]] = None, size: str = "tiny", workdir: Optional[str] = None,
               progress: Optional[Callable[[str], None]] = None, checkpoints: Iterable[str] = ()) -> Result:
    """The matrix on random checkpoints of ``size`` for ``families``, or on the given ``checkpoints``."""
    if size not in SIZES:
        raise ValueError(f"size={size!r} is not one of {', '.join(SIZES)}.")
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"Unknown families {sorted(unknown)}; choose from {', '.join(FAMILIES)}.")
    wanted_tasks = set(tasks) if tasks else {t for t, _ in TASKS}
    unknown = wanted_tasks - {t for t, _ in TASKS}
    if unknown:
        raise ValueError(f"Unknown tasks {sorted(unknown)}; choose from {', '.join(sorted({t for t, _ in TASKS}))}.")
    start = time.perf_counter()
    result = Result(size=size, checkpoints=[os.path.abspath(c) for c in checkpoints])
    if checkpoints:
        rows = [(row, ckpt) for ckpt in checkpoints for row in checkpoint_rows(ckpt)]
    else:
        rows = [((family, task, past), None) for family in families for task, past in TASKS]
    with tempfile.TemporaryDirectory(prefix="onnxport-parity-") as tmp:
        root = workdir or tmp
        for (family, task, with_past), checkpoint in rows:
            if task not in wanted_tasks:
                continue
            if progress:
                progress(f"{family} {task}{' +past' if with_past else ''}" + (f" ({checkpoint})" if checkpoint else ""))
            result.cells += run_row(family, task, with_past, root, frameworks, size, checkpoint=checkpoint)
    result.seconds = time.perf_counter() - start
    return result


# ----------------------------------------------------------------------------- reports
def _rows(result: Result) -> dict[tuple[str, str], dict[str, Cell]]:
    rows: dict[tuple[str, str], dict[str, Cell]] = {}
    for cell in result.cells:
        rows.setdefault((cell.family, cell.task), {})[cell.comparison] = cell
    return rows


def table(result: Result) -> str:
    columns = [c for c, _ in COMPARISONS]
    width = max(14, max(len(c) for c in columns) + 1)
    lines = [f"parity of {result.subject}, {result.date}",
             f"{'family':21}{'task':24}" + "".join(f"{c:>{width}}" for c in columns)]
    for (family, task), cells in _rows(result).items():
        text = []
        for c in columns:
            cell = cells.get(c)
            if cell is None or cell.status == "skipped":
                text.append(f"{'-':>{width}}")
            else:
                mark = "" if cell.status == "passed" else " FAIL"
                text.append(f"{f'{cell.error:.1e}{mark}':>{width}}")
        lines.append(f"{family:21}{task:24}" + "".join(text))
    failed = [c for c in result.cells if c.status == "failed"]
    skipped_reasons = sorted({f"{c.comparison}: {c.reason}" for c in result.cells
                              if c.status == "skipped" and c.reason != "no rotary embedding in this family"})
    notes = sorted({f"{c.family} {c.task}: {c.reason}" for c in result.cells if c.status != "skipped" and c.reason})
    lines.append("")
    lines += [c.describe() for c in failed]
    lines += [f"skipped {r}" for r in skipped_reasons]
    lines += notes
    lines.append(f"error = {ERROR_DEFINITION}; tolerances: " + ", ".join(f"{k} {v:.0e}" for k, v in TOLERANCES.items()))
    lines.append(result.summary())
    return "\n".join(lines)


def html_report(result: Result) -> str:
    """The matrix as a page: every cell says in text what it is (passed with its error, failed with the output,
    the difference and the tolerance, skipped with the reason); colour repeats it on a log scale of
    error / tolerance, with a legend."""
    columns = [c for c, _ in COMPARISONS]
    esc = html.escape

    def colour(cell: Cell) -> str:
        if cell.status == "skipped":
            return "#e0e0e0"
        ratio = max(cell.error, 1e-12) / cell.tolerance
        if ratio > 1:
            return "#d73027"
        t = min(max((math.log10(ratio) + 6) / 6, 0.0), 1.0)  # 1e-6 x tolerance (green) .. tolerance (yellow)
        r, g = int(80 + 175 * t), int(200 - 40 * t)
        return f"rgb({r},{g},90)"

    def content(cell: Cell) -> str:
        if cell.status == "skipped":
            return f'<span class="why">skipped: {esc(cell.reason)}</span>'
        if cell.status == "passed":
            return f"&#10003; {cell.error:.1e}"
        w = cell.worst or {}
        return (f'<b>FAILED</b> {cell.error:.2e} &gt; {cell.tolerance:.0e}<br><span class="why">'
                f'{esc(str(w.get("output", "")))}{esc(str(w.get("index", "")))} ({esc(str(w.get("case", "")))}): '
                f'{w.get("a", float("nan")):.6g} vs {w.get("b", float("nan")):.6g}, '
                f'abs {w.get("abs_error", float("nan")):.2e}</span>')

    body = []
    for (family, task), cells in _rows(result).items():
        tds = []
        for c in columns:
            cell = cells.get(c)
            if cell is None:
                tds.append("<td></td>")
                continue
            tds.append(f'<td class="{cell.status}" style="background:{colour(cell)}" '
                       f'title="{esc(cell.describe())}">{content(cell)}</td>')
        body.append(f"<tr><th>{esc(family)}</th><th>{esc(task)}</th>{''.join(tds)}</tr>")
    notes = sorted({f"{c.family} {c.task}: {c.reason}" for c in result.cells if c.status != "skipped" and c.reason})
    head = "".join(f"<th>{esc(c)}<br><small>{esc(KIND[c])} &le; {TOLERANCES[KIND[c]]:.0e}</small></th>"
                   for c in columns)
    legend = "".join(
        f'<span class="key" style="background:{colour(Cell("", "", "", "native-onnx", status, err, 1e-4))}">'
        f"{esc(label)}</span>"
        for status, err, label in (("passed", 1e-10, "error ≤ 1e-6 × tolerance"),
                                   ("passed", 1e-7, "≈ 1e-3 × tolerance"),
                                   ("passed", 1e-4, "at the tolerance"),
                                   ("failed", 1e-3, "above: failed"),
                                   ("skipped", None, "skipped (reason in the cell)")))
    tolerances = ", ".join(f"{k} {v:.0e}" for k, v in TOLERANCES.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>onnxport parity: {esc(result.subject)} ({esc(result.date)})</title>
<style>body{{font-family:sans-serif;margin:16px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:4px 8px;font-size:13px;vertical-align:top}}
td{{text-align:right;font-family:monospace;max-width:220px}} .why{{font-size:11px;white-space:normal}}
td.failed{{color:#fff}} .key{{display:inline-block;padding:3px 8px;margin-right:6px;font-size:12px}}</style></head>
<body><h1>onnxport parity: {esc(result.subject)}</h1>
<p>{esc(result.date)} &mdash; {esc(result.summary())}</p>
<p>Each cell: the error ({esc(ERROR_DEFINITION)}) of one comparison over every output and case; tolerances:
{esc(tolerances)}.</p><p>{legend}</p>
{''.join(f"<p>{esc(n)}</p>" for n in notes)}
<table><tr><th>family</th><th>task</th>{head}</tr>
{chr(10).join(body)}
</table></body></html>
"""


def main(args) -> int:
    import sys

    families = args.families or list(FAMILIES)
    frameworks = args.frameworks or list(FRAMEWORKS)
    try:
        result = run_matrix(families, frameworks, args.tasks, args.size, checkpoints=args.checkpoints or (),
                            progress=lambda s: print(f"  {s} ...", file=sys.stderr, flush=True))
    except (ValueError, FileNotFoundError) as error:
        print(f"onnxport parity: error: {error}", file=sys.stderr)
        return 2
    print(table(result))
    if args.json:
        Path(args.json).write_text(result.to_json(), encoding="utf-8")
    if args.html:
        Path(args.html).write_text(html_report(result), encoding="utf-8")
    return 1 if result.counts()["failed"] else 0
