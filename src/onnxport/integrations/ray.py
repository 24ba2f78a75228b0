"""Ray Data batch inference: ``ds.map_batches(OnnxPipelinePredictor, fn_constructor_kwargs={"export_dir": d}, ...)``.

Each actor loads one pipeline (one ONNX Runtime session) with as many intra-op threads as CPUs Ray gave
the actor, then answers batches: it reads the task's columns (``text``, and ``text_pair`` where given for
text-classification; ``question`` + ``context`` for question-answering; ``text`` + ``choices`` for
multiple-choice; ``query`` + ``documents`` (a list of texts) for rerank) and adds ``result``, the JSON text of
the pipeline's result per row, plus ``label`` and ``score`` for text-classification, and the numbers of tasks
whose results are numbers as float32 arrays: ``embedding`` (feature-extraction, sentence-embeddings: one
vector per row) and ``scores`` (rerank: one score per document of the row). pandas and numpy (dict of arrays) batch formats come back in the format
they came in. A row the pipeline cannot answer (an empty text, say) raises an ``InputError`` naming it.

Needs ``pip install 'onnxport[ray]'``; ray is imported only to read the actor's CPUs.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

from ..errors import InputError
from . import RowRunner, numbers_of, to_json


def _actor_cpus() -> Optional[int]:
    """CPUs Ray assigned to this actor or task; None outside Ray."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return max(1, int(round(cpus))) if cpus else None


class OnnxPipelinePredictor:
    """A callable class for ``map_batches``: one pipeline per actor, rows answered in length-sorted batches."""

    def __init__(self, export_dir: str | os.PathLike, task: Optional[str] = None, batch_size: int = 32,
                 provider: str = "cpu", intra_op_threads: Optional[int] = None,
                 pipeline_kwargs: Optional[Mapping[str, Any]] = None) -> None:
        from ..runtime import pipeline
        from ..artifact.spec_file import read_export_dir

        export_dir = os.fspath(export_dir)
        self.task = task or read_export_dir(export_dir)[1].task
        threads = intra_op_threads or _actor_cpus()
        session = {"intra_op_threads": threads, "inter_op_threads": 1} if threads else {}
        pipe = pipeline(self.task, export_dir, provider=provider, batch_size=batch_size, **session)
        self.runner = RowRunner(pipe, pipe.model.spec.task, pipeline_kwargs)
        self.intra_op_threads = threads

    def __call__(self, batch):
        is_pandas = type(batch).__name__ == "DataFrame"
        columns = {f: self._column(batch, f, is_pandas) for f in self.runner.fields.all if f in batch}
        missing = [f for f in self.runner.fields.required if f not in columns]
        if missing:
            raise InputError(
                f"The batch has no {', '.join(missing)} column; the {self.runner.task} predictor reads "
                f"{', '.join(self.runner.fields.required)} (columns given: {', '.join(map(str, batch.keys()))})."
            )
        size = len(next(iter(columns.values())))
        rows = [{f: column[i] for f, column in columns.items()} for i in range(size)]
        answers = self.runner.run(rows)
        for i, answer in enumerate(answers):
            if isinstance(answer, Exception):
                shown = {f: str(column[i])[:80] for f, column in columns.items()}
                raise InputError(f"Row {i} of the batch {shown}: {answer}")
        added: dict[str, Any] = {"result": [to_json(a) for a in answers]}
        numbers_name = self.runner.fields.numbers_name
        numbers = [numbers_of(self.runner.fields, a) for a in answers] if numbers_name else []
        if numbers and all(n is not None for n in numbers):
            added[numbers_name] = numbers
        if self.runner.task == "text-classification":
            best = [a[0] if isinstance(a, list) else a for a in answers]  # top_k > 1 gives lists, best first
            added["label"] = [b["label"] for b in best]
            added["score"] = [float(b["score"]) for b in best]
        if is_pandas:
            out = batch.copy()
            for name, values in added.items():
                out[name] = values
            return out
        out = dict(batch)
        for name, values in added.items():
            out[name] = _numpy_column(name, values)
        return out

    @staticmethod
    def _column(batch, name: str, is_pandas: bool) -> list[Any]:
        return batch[name].tolist() if is_pandas else list(batch[name])


def _numpy_column(name: str, values: list) -> np.ndarray:
    """An added column in numpy batch format: scores as float64, equal-length vectors as one float32 (rows, dim)
    array, ragged ones (documents per row differ) as an object array of float32 arrays, the rest as objects."""
    if name == "score":
        return np.asarray(values, dtype=np.float64)
    if values and isinstance(values[0], np.ndarray):
        if len({v.shape for v in values}) == 1:
            return np.stack(values).astype(np.float32)
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return column
    return np.asarray(values, dtype=object)


__all__ = ["OnnxPipelinePredictor"]
