"""Scale-out: exports handed to existing engines (Triton Inference Server, Ray Data).

``triton`` writes a model repository whose Python-backend model serves rows of text; ``ray`` maps rows of a
Ray Dataset. Both answer rows with ``onnxport.runtime.pipeline`` through ``RowRunner`` below: which fields
each task reads, the check of one row (so one bad row is refused alone), one pipeline call over all good
rows (the pipeline sorts them by token length and pads each batch to its own longest row), and the JSON
text of each result. Nothing here imports ray or tritonclient; ``onnxport.runtime`` never imports this.

What a task serves is one entry of ``ROW_FIELDS``: its fields, whether each row is one pipeline call, and
what kind of numbers its result is besides JSON — ``VECTOR`` (one float vector per row: Triton's ``EMBEDDING``
FP32 tensor, Ray's ``embedding`` column) or ``SCORED_DOCUMENTS`` (a score per document of the row and their
ranking: ``SCORES`` / ``scores``). A new task is served by adding its entry; the engines read only the entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError, OnnxportError, TaskError


JSON_ONLY = "json"
VECTOR = "vector"  # one float vector per row (an embedding)
SCORED_DOCUMENTS = "scored-documents"  # a score per document of the row, and the documents ranked by it
# The numbers' name beside the JSON RESULT: Triton's output (upper case), Ray's column.
NUMBERS_NAMES = {VECTOR: "embedding", SCORED_DOCUMENTS: "scores"}
RANKING_OPTIONS = ("top_k", "return_documents")  # SCORED_DOCUMENTS: options of the ranking, not of the call


@dataclass(frozen=True)
class RowFields:
    """How a task's rows are served: ``required`` text fields always, ``optional`` ones where given; ``lists``:
    fields holding a list of texts (a JSON list in Triton's string inputs); ``per_row``: each row is one pipeline
    call taking the required fields in order (``pipe(query, documents)``), else one call takes every row's
    text; ``output``: what the result holds besides JSON, ``numbers_from`` the graph output whose last dimension
    sizes it (a vector's length, a document's labels); ``empty_texts``: an empty or blank text is answered (an
    embedding of "" is a vector like any other), not refused as a row that was surely sent by mistake."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()
    per_row: bool = False
    output: str = JSON_ONLY
    numbers_from: Optional[str] = None
    empty_texts: bool = False

    @property
    def all(self) -> tuple[str, ...]:
        return self.required + self.optional

    @property
    def numbers_name(self) -> Optional[str]:
        return NUMBERS_NAMES.get(self.output)

    def numbers_dims(self, spec) -> Optional[list[int]]:
        """Dimensions of one row's numbers (-1: varies) from the export's IO spec, or None for JSON only: a vector
        of the output's last dimension; a score per document ((documents, labels) for several labels)."""
        if self.output == JSON_ONLY:
            return None
        tensor = next((t for t in spec.outputs if t.name == self.numbers_from), None)
        last = tensor.shape[-1] if tensor is not None else -1
        last = last if isinstance(last, int) else -1
        if self.output == VECTOR:
            return [last]
        return [-1] if last == 1 else [-1, last]


# Export task -> how its rows are served (Triton's input names are the fields in upper case).
ROW_FIELDS: dict[str, RowFields] = {
    "feature-extraction": RowFields(("text",), output=VECTOR, numbers_from="last_hidden_state"),
    "fill-mask": RowFields(("text",)),
    "text-classification": RowFields(("text",), ("text_pair",)),
    "token-classification": RowFields(("text",)),
    "question-answering": RowFields(("question", "context")),
    "multiple-choice": RowFields(("text", "choices"), lists=("choices",), per_row=True),
    "text-generation": RowFields(("text",)),
    "rerank": RowFields(("query", "documents"), lists=("documents",), per_row=True, output=SCORED_DOCUMENTS,
                        numbers_from="logits"),
    # sentence-transformers encodes "" like any text (its vector is the special tokens'): served, not refused
    "sentence-embeddings": RowFields(("text",), output=VECTOR, numbers_from="sentence_embedding", empty_texts=True),
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


def scored_documents(scores: Any, documents: Sequence[str], top_k: Optional[int] = None,
                     return_documents: bool = False) -> dict[str, Any]:
    """A SCORED_DOCUMENTS result: ``scores`` in document order and, for one score per document, ``ranking`` as
    ``CrossEncoder.rank`` gives it (``corpus_id``, ``score``, ``text`` with ``return_documents``), best first."""
    from ..runtime.postprocess import ranking

    scores = np.asarray(scores, dtype=np.float32)
    result: dict[str, Any] = {"scores": scores.tolist()}
    if scores.ndim == 1:
        result["ranking"] = ranking(scores, documents, top_k, return_documents)
    return result


def numbers_of(fields: RowFields, result: Any) -> Optional[np.ndarray]:
    """A row's result as float32 numbers for an engine's numeric output: the vector, the scores; None when the
    task has none or this result has no such form (per-token vectors of feature-extraction's pooling='none')."""
    if fields.output == VECTOR:
        vector = np.asarray(result, dtype=np.float32) if not isinstance(result, Mapping) else None
        return vector if vector is not None and vector.ndim == 1 else None
    if fields.output == SCORED_DOCUMENTS:
        return np.asarray(result["scores"], dtype=np.float32)
    return None


def stack_numbers(rows: Sequence[Optional[np.ndarray]], dims: Sequence[int]) -> Optional[np.ndarray]:
    """Rows' numbers as one float32 tensor (rows, *dims): ragged lists (documents per row) padded with NaN; None
    when a row has none or does not fit ``dims`` (an engine's declared shape)."""
    if not rows or any(r is None or r.ndim != len(dims) for r in rows):
        return None
    if any(d != -1 and r.shape[i] != d for r in rows for i, d in enumerate(dims)):
        return None
    shape = tuple(max(r.shape[i] for r in rows) for i in range(len(dims)))
    out = np.full((len(rows), *shape), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        out[(i, *(slice(0, n) for n in r.shape))] = r
    return out


def _text(field: str, value: Any, allow_empty: bool = False) -> str:
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
    if not value.strip() and not allow_empty:
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
        # SCORED_DOCUMENTS: the ranking's options are applied here, the others go to the pipeline call
        ranking = self.fields.output == SCORED_DOCUMENTS
        self.ranking_options = {k: v for k, v in self.options.items() if ranking and k in RANKING_OPTIONS}
        self.call_options = {k: v for k, v in self.options.items() if k not in self.ranking_options}
        if self.ranking_options:
            from ..runtime.postprocess import check_int

            check_int("top_k", self.ranking_options.get("top_k"), 1, allow_none=True)
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
            clean[field] = (self._text_list(shown, value) if field in self.fields.lists
                            else _text(shown, value, allow_empty=self.fields.empty_texts))
        for field in self.fields.optional:
            if not _is_absent(row.get(field)):
                clean[field] = _text(self.shown[field], row[field])
        return clean

    @staticmethod
    def _text_list(shown: str, value: Any) -> list[str]:
        """A list of texts (or its JSON text); its items may be empty texts (an empty document still scores)."""
        if isinstance(value, (bytes, str, np.bytes_, np.str_)):
            text = _text(shown, value)
            try:
                value = json.loads(text)
            except ValueError:
                raise InputError(f"{shown} must be a JSON list of texts, e.g. [\"yes\", \"no\"].") from None
        if not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0:
            raise InputError(f"{shown} must be a non-empty list of texts.")
        return [_text(f"{shown}[{i}]", item, allow_empty=True) for i, item in enumerate(value)]

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
        task, options, fields = self.task, self.call_options, self.fields
        if task == "question-answering":
            return list(self.pipe(question=[r["question"] for r in rows], context=[r["context"] for r in rows], **options))
        if fields.per_row:
            answers = [self.pipe(*[r[f] for f in fields.required], **options) for r in rows]
            if fields.output == SCORED_DOCUMENTS:
                documents = fields.lists[0]
                answers = [scored_documents(a, r[documents], **self.ranking_options) for a, r in zip(answers, rows)]
            return answers
        if "text_pair" in rows[0]:
            return list(self.pipe([(r["text"], r["text_pair"]) for r in rows], **options))
        return list(self.pipe([r["text"] for r in rows], **options))


__all__ = ["ROW_FIELDS", "SCORED_DOCUMENTS", "VECTOR", "RowFields", "RowRunner", "jsonable", "numbers_of",
           "row_fields", "scored_documents", "stack_numbers", "to_json"]
