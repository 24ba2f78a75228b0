"""Scale-out: exports handed to existing engines (Triton Inference Server, Ray Data).

``triton`` writes a model repository whose Python-backend model serves rows of text; ``ray`` maps rows of a
Ray Dataset. Both answer rows with ``onnxport.runtime.pipeline`` through ``RowRunner`` below: which fields
each task reads, the check of one row (so one bad row is refused alone), one pipeline call over all good
rows (the pipeline sorts them by token length and pads each batch to its own longest row), and the JSON
text of each result. Nothing here imports ray or tritonclient; ``onnxport.runtime`` never imports this.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError, OnnxportError, TaskError


@dataclass(frozen=True)
class RowFields:
    """The text fields a task's rows carry: ``required`` always, ``optional`` where given."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return self.required + self.optional


# Export task -> row fields (Triton's input names are these in upper case). ``choices`` is a JSON list of texts.
ROW_FIELDS: dict[str, RowFields] = {
    "feature-extraction": RowFields(("text",)),
    "fill-mask": RowFields(("text",)),
    "text-classification": RowFields(("text",), ("text_pair",)),
    "token-classification": RowFields(("text",)),
    "question-answering": RowFields(("question", "context")),
    "multiple-choice": RowFields(("text", "choices")),
    "text-generation": RowFields(("text",)),
}


def row_fields(task: str) -> RowFields:
    try:
        return ROW_FIELDS[task]
    except KeyError:
        raise TaskError(
            f"onnxport cannot serve rows for the task {task!r}; servable tasks: {', '.join(ROW_FIELDS)}."
        ) from None


def jsonable(value: Any) -> Any:
    """Pipeline results (dicts, lists, numpy arrays and scalars) as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_json(result: Any) -> str:
    return json.dumps(jsonable(result), ensure_ascii=False)


def _text(field: str, value: Any) -> str:
    """One text field as ``str``, or an InputError naming the field and what is wrong with it."""
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{field} is not valid UTF-8 ({err.reason} at byte {err.start}); send UTF-8 text.") from None
    elif isinstance(value, np.str_):
        value = str(value)
    if not isinstance(value, str):
        raise InputError(f"{field} must be text, got {type(value).__name__}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates: the tokenizer cannot encode them
        raise InputError(f"{field} holds characters the tokenizer cannot encode ({err.reason} at {err.start}).") from None
    if not value.strip():
        raise InputError(f"{field} is empty; send some text.")
    return value


def _is_absent(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):  # pandas' missing value
        return True
    return isinstance(value, (str, bytes, np.str_, np.bytes_)) and len(value) == 0


def _as_refusal(err: Exception) -> OnnxportError:
    """The error a refused row carries: onnxport's own, or the pipeline's complaint about the text."""
    if isinstance(err, OnnxportError):
        return err
    return InputError(f"{type(err).__name__}: {err}")


class RowRunner:
    """Answers rows (dicts of text fields) with one pipeline; a bad row gets its own error, never the batch's."""

    def __init__(self, pipe, task: str, options: Optional[Mapping[str, Any]] = None,
                 shown_names: Optional[Mapping[str, str]] = None) -> None:
        self.pipe = pipe
        self.task = task
        self.fields = row_fields(task)
        self.options = dict(options or {})
        # How errors name a field: the caller's name for it (Triton's input TEXT, a dataset's column text).
        self.shown = {f: (shown_names or {}).get(f, f) for f in self.fields.all}

    def check(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row's fields as texts (``choices`` as a list of texts), or an InputError naming the fault."""
        clean: dict[str, Any] = {}
        for field in self.fields.required:
            value = row.get(field)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                needed = ", ".join(self.shown[f] for f in self.fields.required)
                raise InputError(f"{self.shown[field]} is missing; the {self.task} model needs {needed}.")
            shown = self.shown[field]
            clean[field] = self._choices(shown, value) if field == "choices" else _text(shown, value)
        for field in self.fields.optional:
            if not _is_absent(row.get(field)):
                clean[field] = _text(self.shown[field], row[field])
        return clean

    @staticmethod
    def _choices(shown: str, value: Any) -> list[str]:
        if isinstance(value, (bytes, str, np.bytes_, np.str_)):
            text = _text(shown, value)
            try:
                value = json.loads(text)
            except ValueError:
                raise InputError(f"{shown} must be a JSON list of texts, e.g. [\"yes\", \"no\"].") from None
        if not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0:
            raise InputError(f"{shown} must be a non-empty list of texts.")
        return [_text(f"{shown}[{i}]", choice) for i, choice in enumerate(value)]

    def run(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Per row its result, or the OnnxportError that refused it. Good rows go through one pipeline call."""
        answers: list[Any] = [None] * len(rows)
        checked: dict[int, dict[str, Any]] = {}
        for i, row in enumerate(rows):
            try:
                checked[i] = self.check(row)
            except OnnxportError as err:
                answers[i] = err
        # Rows with and without a second text tokenize differently: one call per kind.
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, row in checked.items():
            groups.setdefault(tuple(sorted(row)), []).append(i)
        for indices in groups.values():
            for i, answer in zip(indices, self._answer_group([checked[i] for i in indices])):
                answers[i] = answer
        return answers

    def _answer_group(self, rows: list[dict[str, Any]]) -> list[Any]:
        try:
            return self._call(rows)
        except Exception as err:  # noqa: BLE001 - one row's fault must not fail the others
            if len(rows) == 1:
                return [_as_refusal(err)]
        answers = []
        for row in rows:  # find the faulty rows: answer one by one
            try:
                answers.extend(self._call([row]))
            except Exception as err:  # noqa: BLE001
                answers.append(_as_refusal(err))
        return answers

    def _call(self, rows: list[dict[str, Any]]) -> list[Any]:
        task, options = self.task, self.options
        if task == "question-answering":
            return list(self.pipe(question=[r["question"] for r in rows], context=[r["context"] for r in rows], **options))
        if task == "multiple-choice":
            return [self.pipe(r["text"], r["choices"], **options) for r in rows]
        if "text_pair" in rows[0]:
            return list(self.pipe([(r["text"], r["text_pair"]) for r in rows], **options))
        return list(self.pipe([r["text"] for r in rows], **options))


__all__ = ["ROW_FIELDS", "RowFields", "RowRunner", "jsonable", "row_fields", "to_json"]
