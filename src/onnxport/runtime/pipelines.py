"""``pipeline(task, export_dir)``: text in, answers out, on ONNX Runtime only.

Texts are tokenized in one call, sorted by token length, batched and padded per
batch (never to a global maximum), then results are returned in input order.
A text longer than the model is handled as the task's transformers pipeline does:
windows (question-answering; token-classification with ``stride``), or truncation
with one warning per call (``truncation=False``: an InputError). Arithmetic lives
in ``postprocess``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError, ModelFileError, TaskError
from . import postprocess as pp
from .models import OnnxModelBase, model_class_for, read_export_dir

logger = logging.getLogger("onnxport")

# Pipeline task names -> the export task whose graph serves them.
PIPELINE_TASKS = {
    "feature-extraction": "feature-extraction",
    "fill-mask": "fill-mask",
    "text-classification": "text-classification",
    "sentiment-analysis": "text-classification",
    "token-classification": "token-classification",
    "ner": "token-classification",
    "question-answering": "question-answering",
    "multiple-choice": "multiple-choice",
    "text-generation": "text-generation",
    "rerank": "rerank",
    "sentence-embeddings": "sentence-embeddings",
}


class SerializedTokenizer:
    """A tokenizer whose calls run one at a time, so one pipeline can serve many threads.

    A fast tokenizer sets its Rust backend's truncation and padding on every call; a call from another
    thread meanwhile fails with "Already borrowed". Tokenizing is short next to running the model, which
    stays concurrent (ONNX Runtime's run() is thread-safe)."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._lock = threading.RLock()

    def __call__(self, *args: Any, **kwargs: Any):
        with self._lock:
            return self._tokenizer(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._tokenizer)

    def __getattr__(self, name: str):
        value = getattr(self._tokenizer, name)
        if not callable(value):
            return value

        def locked(*args: Any, **kwargs: Any):
            with self._lock:
                return value(*args, **kwargs)

        return locked


class Pipeline:
    def __init__(self, model: OnnxModelBase, batch_size: int = 32, max_length: Optional[int] = None) -> None:
        pp.check_int("batch_size", batch_size, 1)
        pp.check_int("max_length", max_length, 1, allow_none=True)
        if model.tokenizer is None:
            from ..artifact.files import missing_tokenizer_message
            from ..families import family_of

            raise ModelFileError(missing_tokenizer_message(model.export_dir, family_of(model.config)) + ".")
        self.model = model
        self.tokenizer = SerializedTokenizer(model.tokenizer)
        self.batch_size = batch_size
        self.max_length = min(max_length or model.config.max_sequence_length, model.config.max_sequence_length)

    # -- batching ---------------------------------------------------------------------------
    # What a user can do about a text longer than the model, said in the truncation warning (per task).
    long_text_advice = "split it into parts and call the pipeline on each"

    def _encode(self, texts: Sequence[Any], truncation: bool = True, **kwargs: Any):
        """The texts (or (text, text_pair) tuples) tokenized unpadded: rows are padded per batch in ``_run_rows``.

        A text longer than ``max_length`` is cut to it (a pair from its longer text), as transformers' pipelines
        do with truncation=True, and the call logs one warning saying how many tokens were dropped; with
        ``truncation=False`` it is an InputError instead, before the model sees it. Texts that fit are
        tokenized once; the ones that do not are tokenized again with truncation (transformers' rule for
        which tokens go, kept by the tokenizer itself)."""
        pairs = [t if isinstance(t, tuple) else (t, None) for t in texts]
        firsts = [p[0] for p in pairs]
        seconds = [p[1] for p in pairs]
        with_pairs = any(s is not None for s in seconds)
        encoding = self.tokenizer(firsts, text_pair=seconds if with_pairs else None, padding=False,
                                  truncation=False, **kwargs)
        lengths = [len(ids) for ids in encoding["input_ids"]]
        too_long = [i for i, n in enumerate(lengths) if n > self.max_length]
        if not too_long:
            return encoding
        if not truncation:
            raise too_long_error(too_long, lengths, len(texts), self.max_length, self.long_text_advice,
                                 limit=self._limit_name())
        warn_truncated([lengths[i] for i in too_long], len(texts), self.max_length, self.long_text_advice,
                       self.tokenizer.truncation_side, with_pairs, limit=self._limit_name())
        cut = self.tokenizer([firsts[i] for i in too_long],
                             text_pair=[seconds[i] for i in too_long] if with_pairs else None,
                             padding=False, truncation=True, max_length=self.max_length, **kwargs)
        for key, column in encoding.items():
            for j, i in enumerate(too_long):
                column[i] = cut[key][j]
        encoding._encodings = encoding._realign = None  # the per-row alignment no longer matches every row
        return encoding

    def _limit_name(self) -> str:
        """What the length limit is, for messages: the model's, or the pipeline's own ``max_length``."""
        if self.max_length == self.model.config.max_sequence_length:
            return "the model's"
        return "the pipeline's max_length of"

    def _feeds(self, encoding) -> dict[str, np.ndarray]:
        # The tokenizer's token types go to the model even when the graph has no such input: the model takes
        # all zeros (RoBERTa-style tokenizers) and refuses others (a BERT-style pair on a one-type model).
        names = set(self.model.spec.input_names) | {"token_type_ids"}
        return {k: np.asarray(v) for k, v in encoding.items() if k in names}

    def _pad_rows(self, encoding, rows: Sequence[int]) -> dict[str, np.ndarray]:
        """Rows ``rows`` of an unpadded encoding as arrays padded to the longest of them (not a global maximum)."""
        lengths = [len(encoding["input_ids"][i]) for i in rows]
        width = max(lengths, default=0)
        if self.tokenizer.pad_token_id is None and min(lengths, default=width) != width:
            raise ValueError("Batching texts of different lengths needs a pad token; set tokenizer.pad_token first.")
        left = self.tokenizer.padding_side == "left"
        pad_values = {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0,
                      "token_type_ids": self.tokenizer.pad_token_type_id, "special_tokens_mask": 1}
        batch = {}
        for key, column in encoding.items():
            if key == "offset_mapping":
                array = np.zeros((len(rows), width, 2), dtype=np.int64)
            elif key in pad_values:
                array = np.full((len(rows), width), pad_values[key], dtype=np.int64)
            else:
                continue  # per-text extras (e.g. lengths) are not model inputs
            for j, (i, n) in enumerate(zip(rows, lengths)):
                if n:
                    target = array[j, width - n:] if left else array[j, :n]
                    target[...] = column[i]
            batch[key] = array
        return batch

    def _in_length_order(self, texts: Sequence[Any], run_batch, batch_size: Optional[int] = None,
                         truncation: bool = True, **encode_kwargs: Any) -> list[Any]:
        """``run_batch(texts, padded_encoding)`` over batches of similar token length; results in input order.

        Texts are tokenized once (``_encode``: too long ones cut to the model, or refused with
        ``truncation=False``), then run as ``_run_rows`` does.
        """
        pp.check_int("batch_size", self.batch_size if batch_size is None else batch_size, 1)
        if not texts:
            return []
        encoding = self._encode(texts, truncation=truncation, **encode_kwargs)
        return self._run_rows(encoding, texts, run_batch, batch_size)

    def _run_rows(self, encoding, items: Sequence[Any], run_batch, batch_size: Optional[int] = None) -> list[Any]:
        """``run_batch(items_of_batch, padded_encoding)`` over the rows of an unpadded encoding, one item per row
        (a text, or the text a window was cut from); results in row order.

        Rows are sorted by token count (so a batch pads only to its own longest row, which is close to every
        row), cut into batches of ``batch_size`` and answered back in row order.
        """
        batch_size = self.batch_size if batch_size is None else batch_size
        pp.check_int("batch_size", batch_size, 1)
        if not items:
            return []
        order = np.argsort([len(ids) for ids in encoding["input_ids"]], kind="stable")
        results: list[Any] = [None] * len(items)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size].tolist()
            for index, result in zip(chunk, run_batch([items[i] for i in chunk], self._pad_rows(encoding, chunk))):
                results[index] = result
        return results

    @staticmethod
    def _as_list(inputs: Any, pairs: bool = True, name: str = "inputs") -> tuple[list[Any], bool]:
        """Texts as a list (and whether one text was given): each a str, or with ``pairs`` a (text, text_pair)
        tuple or a {"text": ..., "text_pair": ...} dict; anything else is an InputError naming it."""
        single = isinstance(inputs, (str, tuple, dict))
        if inputs is None or not single and not isinstance(inputs, (list, np.ndarray)) and not hasattr(inputs, "__iter__"):
            raise InputError(f"{name} must be a text or a list of texts, got {type(inputs).__name__}.")
        items = [inputs] if single else list(inputs)
        texts = []
        for index, item in enumerate(items):
            where = name if single else f"{name}[{index}]"
            if isinstance(item, dict) and pairs:
                if "text" not in item:
                    raise InputError(f"{where} is a dict without 'text' (keys: {sorted(map(str, item))}); "
                                     "pass {'text': ..., 'text_pair': ...}.")
                item = (item["text"], item.get("text_pair"))
            if isinstance(item, tuple) and pairs:
                if len(item) != 2:
                    raise InputError(f"{where} must be a (text, text_pair) pair, got a tuple of {len(item)}.")
                check_text(f"{where}[0]", item[0])
                if item[1] is not None:
                    check_text(f"{where}[1]", item[1])
                texts.append(item if item[1] is not None else item[0])
            else:
                check_text(where, item)
                texts.append(item)
        return texts, single


def check_text(name: str, text: Any) -> None:
    """A str that UTF-8 can encode (the tokenizers' Rust core cannot take lone surrogates such as "\\ud800")."""
    if not isinstance(text, str):
        raise InputError(f"{name} must be a str, got {type(text).__name__}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"{name} holds a lone surrogate {text[err.start]!r} at character {err.start}, which is not text; "
            "decode the source with errors='replace' (or remove it)."
        ) from None


def _counts(values: Sequence[int]) -> str:
    """``80``, ``80 and 200``, ``80, 90 and 200``; long lists end with how many more there are."""
    shown = [str(v) for v in values[:5]] + ([f"{len(values) - 5} more"] if len(values) > 5 else [])
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def warn_truncated(lengths: Sequence[int], count: int, max_length: int, advice: str,
                   truncation_side: str = "right", pairs: bool = False, limit: str = "the model's") -> None:
    """The one warning of a call whose texts were cut to the model's length: which, and how much was lost.

    ``lengths``: the token counts (special tokens included) of the texts that were longer than ``max_length``
    among ``count``; ``advice``: what the user can do to keep all of a text (the task's own remedy)."""
    where = "end" if truncation_side == "right" else "start"
    logger.warning(
        "%d of %d input%s %s longer than %s %d tokens (%s tokens) and %s truncated to it: %s tokens "
        "dropped from the %s%s. To use all of a text, %s; pass truncation=False to raise an error instead.",
        len(lengths), count, "s" if count > 1 else "", "is" if len(lengths) == 1 else "are", limit, max_length,
        _counts(lengths), "was" if len(lengths) == 1 else "were", _counts([n - max_length for n in lengths]), where,
        " (of a pair's longer text)" if pairs else "", advice,
    )


def too_long_error(indices: Sequence[int], lengths: Sequence[int], count: int, max_length: int,
                   advice: str, name: str = "inputs", limit: str = "the model's") -> InputError:
    """The InputError for texts longer than the model when the user asked for no truncation."""
    where = name if count == 1 else f"{name}[{indices[0]}]"
    others = f" ({len(indices) - 1} more as well)" if len(indices) > 1 else ""
    return InputError(
        f"{where} is {lengths[indices[0]]} tokens, more than {limit} {max_length}{others}, and truncation=False. "
        f"Shorten it ({advice}), or leave truncation on to cut it to {max_length} tokens."
    )


def check_stride(name: str, stride: int, room: int, holds: str) -> None:
    """A window overlap that lets windows advance: less than the ``room`` text tokens a window holds
    (the tokenizers library would abort the process past it)."""
    pp.check_int(name, stride, 0)
    if stride >= room:
        raise InputError(
            f"{name}={stride} must be less than the {room} text tokens a window holds ({holds}), or the windows "
            f"could not advance; take about half of it, e.g. {name}={max(room // 2, 0)}."
        )


class FeatureExtractionPipeline(Pipeline):
    long_text_advice = "split it into parts and pool their vectors"

    def __call__(self, inputs, pooling: str = "cls", normalize: bool = False, batch_size: Optional[int] = None,
                 truncation: bool = True):
        pp.check_choice("pooling", pooling, ("cls", "mean", "none"))
        texts, single = self._as_list(inputs)

        def run(batch, enc):
            hidden = self.model(**self._feeds(enc))["last_hidden_state"]
            mask = enc["attention_mask"]
            if pooling == "none":
                return [h[m.astype(bool)] for h, m in zip(hidden, mask)]
            if pooling == "cls":
                vectors = hidden[:, 0]
            else:
                weights = mask[..., None].astype(hidden.dtype)
                vectors = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1.0)
            if normalize:
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
            return list(vectors)

        results = self._in_length_order(texts, run, batch_size, truncation)
        return results[0] if single else results


class TextClassificationPipeline(Pipeline):
    def __call__(self, inputs, top_k: Optional[int] = 1, function_to_apply: Optional[str] = None,
                 batch_size: Optional[int] = None, truncation: bool = True):
        pp.check_int("top_k", top_k, 1, allow_none=True)
        if function_to_apply is not None:
            pp.check_choice("function_to_apply", function_to_apply, pp.FUNCTIONS_TO_APPLY)
        texts, single = self._as_list(inputs)
        config = self.model.config

        def run(batch, enc):
            logits = self.model(**self._feeds(enc))["logits"]
            scores = pp.classification_scores(logits, config.problem_type, config.num_labels, function_to_apply)
            return [pp.top_labels(row, config.id2label, top_k) for row in scores]

        results = self._in_length_order(texts, run, batch_size, truncation)
        if top_k == 1:
            results = [r[0] for r in results]
        return results[0] if single else results


class FillMaskPipeline(Pipeline):
    long_text_advice = "cut it to the sentences around the mask"

    def __call__(self, inputs, top_k: int = 5, targets: Optional[Sequence[str]] = None,
                 batch_size: Optional[int] = None, truncation: bool = True):
        pp.check_int("top_k", top_k, 1)
        texts, single = self._as_list(inputs)
        mask_id = self.tokenizer.mask_token_id
        target_ids = None
        if targets is not None:
            target_ids = self._target_ids(targets)

        def run(batch, enc):
            ids = enc["input_ids"]
            logits = self.model(**self._feeds(enc))["logits"]
            attention = enc["attention_mask"].astype(bool)
            out = []
            for row_ids, row_logits, row_mask, text in zip(ids, logits, attention, batch):
                positions = np.nonzero(row_ids == mask_id)[0]
                if len(positions) == 0:
                    raise self._no_mask_error(text)
                per_mask = []
                for pos in positions:
                    cand_ids, probs = pp.fill_mask_candidates(row_logits[pos], top_k, target_ids)
                    entries = []
                    for token_id, prob in zip(cand_ids, probs):
                        filled = row_ids.copy()
                        filled[pos] = token_id
                        real = filled[row_mask]
                        entries.append({
                            "score": float(prob), "token": int(token_id),
                            "token_str": self.tokenizer.decode([int(token_id)]),
                            "sequence": self.tokenizer.decode(real.tolist(), skip_special_tokens=True),
                        })
                    per_mask.append(entries)
                out.append(per_mask[0] if len(per_mask) == 1 else per_mask)
            return out

        results = self._in_length_order(texts, run, batch_size, truncation)
        return results[0] if single else results

    def _target_ids(self, targets: Any) -> list[int]:
        """One vocabulary id per target, as transformers: a target of several tokens stands for its first."""
        targets = [targets] if isinstance(targets, str) else targets
        if not isinstance(targets, (list, tuple)) or not targets:
            raise InputError(f"targets must be a non-empty list of words (or one word), got {targets!r}.")
        target_ids = []
        for index, target in enumerate(targets):
            check_text(f"targets[{index}]", target)
            ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
            if not ids or self.tokenizer.unk_token_id in ids:
                raise InputError(
                    f"targets[{index}]={target!r} is not in the model's vocabulary (it tokenizes to "
                    f"{self.tokenizer.convert_ids_to_tokens(ids) if ids else 'nothing'}); pick words the tokenizer knows."
                )
            if len(ids) > 1:
                logger.warning("Target %r is %d tokens; scoring its first, %r.", target, len(ids),
                               self.tokenizer.convert_ids_to_tokens(ids[0]))
            target_ids.append(ids[0])
        return target_ids

    def _no_mask_error(self, text: Any) -> InputError:
        """No mask in the encoded row: say whether the text had none, or truncation cut it off."""
        mask = self.tokenizer.mask_token
        first, second = text if isinstance(text, tuple) else (text, None)
        if mask not in first and (second is None or mask not in second):
            return InputError(f"No {mask} token in {text!r}; put {mask} where a word should be predicted.")
        full = self.tokenizer(first, text_pair=second, truncation=False)["input_ids"]
        position = full.index(self.tokenizer.mask_token_id)
        return InputError(
            f"The {mask} token of {text!r} is token {position} of {len(full)}, beyond max_length={self.max_length}: "
            f"truncation removed it. Shorten the text before the {mask} or raise max_length "
            f"(the model takes at most {self.model.config.max_sequence_length})."
        )


def _tokens_to_string(tokenizer):
    if hasattr(tokenizer, "convert_tokens_to_string"):
        return tokenizer.convert_tokens_to_string
    decoder = tokenizer.backend_tokenizer.decoder
    return (lambda tokens: decoder.decode(tokens)) if decoder is not None else (lambda tokens: " ".join(tokens))


def _subword_prefix(tokenizer) -> Optional[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return getattr(getattr(backend, "model", None), "continuing_subword_prefix", None)


class TokenClassificationPipeline(Pipeline):
    long_text_advice = "pass stride=N (with an aggregation_strategy) to read it in overlapping windows"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read once, here: the backend's getters borrow it, which must not meet another thread's call.
        self._to_string = _tokens_to_string(self.tokenizer)
        self._subword_prefix = _subword_prefix(self.tokenizer)

    def __call__(self, inputs, aggregation_strategy: str = "none", ignore_labels: Sequence[str] = ("O",),
                 batch_size: Optional[int] = None, stride: Optional[int] = None, truncation: bool = True):
        """Entities per text. A text longer than the model is truncated (with a warning), or with ``stride``
        read in windows of ``max_length`` tokens overlapping by ``stride``, as transformers' pipeline does:
        entities per window, then where windows overlap the longer entity (at equal length the higher score)."""
        pp.check_choice("aggregation_strategy", aggregation_strategy, pp.AGGREGATION_STRATEGIES)
        if stride is not None:
            if aggregation_strategy == "none":
                raise InputError(
                    "stride reads a long text in overlapping windows, whose entities are merged by span: pass an "
                    "aggregation_strategy ('simple', 'first', 'average' or 'max'), as transformers requires."
                )
            specials = self.tokenizer.num_special_tokens_to_add(pair=False)
            check_stride("stride", stride, self.max_length - specials,
                         f"max_length {self.max_length} minus {specials} special tokens")
        texts, single = self._as_list(inputs, pairs=False)
        tok = self.tokenizer
        to_string = self._to_string
        prefix = self._subword_prefix
        unk_token_id = tok.unk_token_id
        id2label = self.model.config.id2label

        def run(batch, enc):
            logits = self.model(**self._feeds(enc))["logits"]
            special = enc["special_tokens_mask"].astype(bool) | (enc["attention_mask"] == 0)
            results = []
            for i, text in enumerate(batch):
                results.append(pp.token_entities(
                    text, enc["input_ids"][i], logits[i], enc["offset_mapping"][i], special[i], id2label,
                    convert_ids_to_tokens=lambda j: tok.convert_ids_to_tokens(int(j)),
                    convert_tokens_to_string=to_string, aggregation_strategy=aggregation_strategy,
                    continuing_subword_prefix=prefix, unk_token_id=unk_token_id, ignore_labels=ignore_labels,
                ))
            return results

        if stride is None:
            results = self._in_length_order(texts, run, batch_size, truncation, return_offsets_mapping=True,
                                            return_special_tokens_mask=True)
        else:
            results = self._in_windows(texts, run, batch_size, stride)
        return results[0] if single else results

    def _in_windows(self, texts: list[str], run, batch_size: Optional[int], stride: int) -> list[list[dict]]:
        """Entities of each text read in overlapping windows (all windows of all texts batched by length)."""
        pp.check_int("batch_size", self.batch_size if batch_size is None else batch_size, 1)
        if not texts:
            return []
        encoding = self.tokenizer(texts, padding=False, truncation=True, max_length=self.max_length, stride=stride,
                                  return_overflowing_tokens=True, return_offsets_mapping=True,
                                  return_special_tokens_mask=True)
        text_of_window = list(encoding["overflow_to_sample_mapping"])
        per_window = self._run_rows(encoding, [texts[i] for i in text_of_window], run, batch_size)
        entities: list[list[dict]] = [[] for _ in texts]
        for index, found in zip(text_of_window, per_window):
            entities[index].extend(found)
        windows = np.bincount(text_of_window, minlength=len(texts))
        return [pp.merge_overlapping_entities(found) if n > 1 else found for found, n in zip(entities, windows)]


class QuestionAnsweringPipeline(Pipeline):
    """Answers as transformers' question-answering pipeline finds them: the context is read in windows of
    ``max_seq_len`` tokens (the whole question, then as much context as fits) overlapping by ``doc_stride``
    tokens, every span of every window scored by its own window's softmax, the same answer text found in
    several windows (or spans) adding up, character offsets into the original context."""

    def __call__(self, question=None, context=None, top_k: int = 1, doc_stride: Optional[int] = None,
                 max_answer_len: int = 15, max_seq_len: Optional[int] = None, handle_impossible_answer: bool = False,
                 align_to_words: bool = True, max_question_len: Optional[int] = None,
                 batch_size: Optional[int] = None):
        """``max_seq_len``: window length (default 384, at most the model's); ``doc_stride``: the windows'
        overlap (default half a window, at most 128); ``max_question_len``: cut longer questions to this many
        tokens (default: keep the whole question, as transformers' pipeline with a fast tokenizer does)."""
        if question is None or context is None:
            raise InputError("question-answering needs question=... and context=... (texts, or lists of texts).")
        pp.check_int("top_k", top_k, 1)
        pp.check_int("doc_stride", doc_stride, 0, allow_none=True)
        pp.check_int("max_answer_len", max_answer_len, 1)
        pp.check_int("max_seq_len", max_seq_len, 1, allow_none=True)
        pp.check_int("max_question_len", max_question_len, 1, allow_none=True)
        pp.check_int("batch_size", batch_size, 1, allow_none=True)
        single = isinstance(question, str)
        questions, _ = self._as_list(question, pairs=False, name="question")
        contexts, one_context = self._as_list(context, pairs=False, name="context")
        contexts = contexts * len(questions) if one_context else contexts
        if len(questions) != len(contexts):
            raise InputError(f"{len(questions)} questions but {len(contexts)} contexts; pass one context per question.")
        max_seq_len = min(max_seq_len or min(384, self.max_length), self.max_length)
        windows = []
        for index, q in enumerate(questions):
            name = "question" if single else f"question[{index}]"
            q = self._cut_question(q, max_question_len)
            windows.append((q, self._window_stride(q, max_seq_len, doc_stride, name)))
        answers = [self._answer(q, c, top_k, stride, max_answer_len, max_seq_len, handle_impossible_answer,
                                align_to_words, batch_size or self.batch_size)
                   for (q, stride), c in zip(windows, contexts)]
        return answers[0] if single else answers

    def _cut_question(self, question: str, max_question_len: Optional[int]) -> str:
        """The question cut after its ``max_question_len``-th token (at that token's last character)."""
        if max_question_len is None:
            return question
        offsets = self.tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) <= max_question_len:
            return question
        return question[: offsets[max_question_len - 1][1]]

    def _window_stride(self, question: str, max_seq_len: int, doc_stride: Optional[int], name: str) -> int:
        """The overlap of the context windows: the one asked for, which must let windows advance, or
        transformers' default (half a window, at most 128) kept below the context a window holds."""
        question_tokens = len(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        room = max_seq_len - question_tokens - specials
        if room < 1:  # each window holds the whole question, the special tokens and at least one context token
            raise InputError(
                f"{name} is {question_tokens} tokens: with the {specials} special tokens and one context token a "
                f"window needs {question_tokens + specials + 1}, more than max_seq_len={max_seq_len}; shorten the "
                f"question, cut it with max_question_len=N, or raise max_seq_len (at most {self.max_length})."
            )
        holds = f"max_seq_len {max_seq_len} minus {name}'s {question_tokens} tokens and {specials} special tokens"
        if doc_stride is None:
            return min(max_seq_len // 2, 128, room - 1)
        check_stride("doc_stride", doc_stride, room, holds)
        return doc_stride

    def _answer(self, question, context, top_k, doc_stride, max_answer_len, max_seq_len, handle_impossible,
                align_to_words, batch_size):
        enc = self.tokenizer(
            question, text_pair=context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
            return_overflowing_tokens=True, return_offsets_mapping=True, padding=True, return_tensors="np",
        )
        feeds = self._feeds(enc)
        count = len(enc["input_ids"])
        start_logits, end_logits = [], []
        for first in range(0, count, batch_size):  # a long context is many windows: run them a batch at a time
            out = self.model(**{key: value[first:first + batch_size] for key, value in feeds.items()})
            start_logits.append(out["start_logits"])
            end_logits.append(out["end_logits"])
        start_logits, end_logits = np.concatenate(start_logits), np.concatenate(end_logits)
        candidates: dict[str, dict] = {}
        null_score = 1e6
        for window in range(count):
            encoding = enc.encodings[window]
            context_mask = np.array([s == 1 for s in encoding.sequence_ids]) & \
                np.asarray(enc["attention_mask"][window]).astype(bool)
            # Word alignment can map several token spans to one answer, so look further down the list.
            pre_top_k = top_k * 2 + 10 if align_to_words else top_k
            spans, null = pp.answer_spans(start_logits[window], end_logits[window], context_mask,
                                          max_answer_len, pre_top_k)
            null_score = min(null_score, null)
            offsets = enc["offset_mapping"][window]
            for s, e, score in spans:
                start_char, end_char = int(offsets[s][0]), int(offsets[e][1])
                if align_to_words:  # widen to whole words, as transformers does by default
                    start_word, end_word = encoding.token_to_word(s), encoding.token_to_word(e)
                    if start_word is not None and end_word is not None:
                        start_char = encoding.word_to_chars(start_word, sequence_index=1)[0]
                        end_char = encoding.word_to_chars(end_word, sequence_index=1)[1]
                text = context[start_char:end_char]
                # The same answer through another span or window: its probabilities add up (transformers
                # matches answers case-insensitively and keeps the first one's position).
                same = candidates.get(text.lower())
                if same is not None:
                    same["score"] += score
                else:
                    candidates[text.lower()] = {"score": score, "start": start_char, "end": end_char, "answer": text}
        answers = list(candidates.values())
        if handle_impossible:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers.sort(key=lambda a: -a["score"])
        best = answers[:top_k]
        return best[0] if top_k == 1 and best else best


class MultipleChoicePipeline(Pipeline):
    """Scores each choice as a continuation of a prompt: ``{"scores": [...], "best": index}``."""

    long_text_advice = "shorten the prompt or the choices"

    def __call__(self, prompt: str, choices: Sequence[str], truncation: bool = True):
        check_text("prompt", prompt)
        if isinstance(choices, str) or not isinstance(choices, (list, tuple)):
            # a str would be scored one choice per character
            raise InputError(f"choices must be a list of texts, got {type(choices).__name__} {choices!r}; "
                             "pass e.g. ['yes', 'no'].")
        if not choices:
            raise InputError("choices is empty; multiple-choice needs at least one choice.")
        for index, choice in enumerate(choices):
            check_text(f"choices[{index}]", choice)
        enc = self._pad_rows(self._encode([(prompt, choice) for choice in choices], truncation=truncation),
                             range(len(choices)))
        feeds = {k: v[None] for k, v in self._feeds(enc).items()}
        logits = self.model(**feeds)["logits"][0]
        probs = pp.softmax(logits.astype(np.float64))
        return {"scores": [float(p) for p in probs], "logits": [float(x) for x in logits], "best": int(np.argmax(logits))}


class TextGenerationPipeline(Pipeline):
    def __call__(self, inputs, max_new_tokens: int = 20, do_sample: bool = False, temperature: float = 1.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None, seed: Optional[int] = None,
                 eos_token_id: Optional[int] = None, return_full_text: bool = True,
                 encoder_hidden_states: Any = None, encoder_attention_mask: Any = None, truncation: bool = True):
        """``encoder_hidden_states`` (1, encoder_sequence, hidden_size) and ``encoder_attention_mask``: what a
        cross-attention decoder's export attends to, at every step of every text (texts decode one at a time).

        A prompt that leaves less than ``max_new_tokens`` positions of the model's length loses its first
        tokens (at least one is kept), as transformers' ``handle_long_generation="hole"``, with a warning;
        ``truncation=False`` keeps it whole (an InputError when it alone fills the model; otherwise fewer new
        tokens)."""
        pp.check_int("max_new_tokens", max_new_tokens, 0)
        pp.check_sampling(temperature, top_k, top_p)
        texts, single = self._as_list(inputs, pairs=False)
        rng = np.random.default_rng(seed)
        eos = self.tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        results = []
        for text in texts:  # one sequence at a time: no padding inside the cache
            ids = np.asarray(self.tokenizer(text, add_special_tokens=False, return_tensors="np")["input_ids"])
            if ids.shape[1] == 0:
                ids = np.array([[self.tokenizer.bos_token_id or self.tokenizer.cls_token_id]])
            if truncation:
                ids = self._leave_room(ids, max_new_tokens)
            new = self.generate_ids(ids, max_new_tokens, rng, do_sample, temperature, top_k, top_p, eos,
                                    encoder_hidden_states, encoder_attention_mask)
            generated = self.tokenizer.decode(new.tolist(), skip_special_tokens=True)
            results.append({"generated_text": (text + generated) if return_full_text else generated,
                            "generated_token_ids": new.tolist()})
        return results[0] if single else results

    def _leave_room(self, ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
        """The prompt's last tokens, as many as leave ``max_new_tokens`` positions of the model (at least one)."""
        limit = self.model.config.max_sequence_length
        keep = max(limit - max_new_tokens, 1)
        if ids.shape[1] <= keep:
            return ids
        logger.warning(
            "The prompt is %d tokens; with max_new_tokens=%d the model's %d positions leave room for %d: its first "
            "%d tokens were dropped (as transformers' handle_long_generation='hole'). Shorten the prompt or ask for "
            "fewer new tokens to keep it whole; pass truncation=False to keep it (fewer new tokens, or an error "
            "when the prompt alone fills the model).", ids.shape[1], max_new_tokens, limit, keep, ids.shape[1] - keep)
        return ids[:, -keep:]

    def generate_ids(self, ids: np.ndarray, max_new_tokens: int, rng, do_sample=False, temperature=1.0,
                     top_k=None, top_p=None, eos_token_id=None, encoder_hidden_states=None,
                     encoder_attention_mask=None) -> np.ndarray:
        """Decode up to ``max_new_tokens`` after ``ids`` (1, n); uses the cache when the export has one. The
        encoder inputs (cross-attention decoders) go to every step; the model refuses them when its graph
        takes none, and asks for them when it does."""
        encoder = {name: value for name, value in (("encoder_hidden_states", encoder_hidden_states),
                                                   ("encoder_attention_mask", encoder_attention_mask))
                   if value is not None}
        limit = self.model.config.max_sequence_length
        if ids.shape[1] >= limit:
            raise InputError(f"The prompt has {ids.shape[1]} tokens; the model takes at most {limit}: shorten it "
                             "(or let the pipeline drop its first tokens: truncation=True).")
        max_new_tokens = min(max_new_tokens, limit - ids.shape[1])
        new: list[int] = []
        past = None
        step_ids = ids
        sequence = ids
        for _ in range(max_new_tokens):
            if self.model.spec.with_past:
                out = self.model(input_ids=step_ids, past_key_values=past, **encoder)
                past = out["past_key_values"]
            else:
                out = self.model(input_ids=sequence, **encoder)
            token = int(pp.next_tokens(out["logits"][:, -1], rng, do_sample, temperature, top_k, top_p)[0])
            new.append(token)
            if eos_token_id is not None and token == eos_token_id:
                break
            step_ids = np.array([[token]], dtype=np.int64)
            sequence = np.concatenate([sequence, step_ids], axis=1)
        return np.array(new, dtype=np.int64)


def resolve_prompt(prompts: Mapping[str, str], default_prompt_name: Optional[str], prompt_name: Optional[str] = None,
                   prompt: Optional[str] = None) -> str:
    """The text sentence-transformers puts before the input (an embedding's text, a cross-encoder's query):
    ``prompt``, else the prompt named ``prompt_name``, else the model's default prompt, else none."""
    if prompt is not None:
        check_text("prompt", prompt)
        return prompt
    if prompt_name is not None:
        if prompt_name not in prompts:
            raise InputError(f"prompt_name {prompt_name!r} is not one of this model's prompts "
                             f"({', '.join(map(repr, prompts)) or 'it has none'}); pass prompt=... instead.")
        return prompts[prompt_name]
    if default_prompt_name is not None:
        return prompts.get(default_prompt_name, "")
    return ""


class RerankPipeline(Pipeline):
    """A cross-encoder's relevance scores, as sentence-transformers computes them:
    ``rerank(query, documents)`` is ``CrossEncoder.predict([(query, d) for d in documents])`` and
    ``rerank.rank(query, documents)`` is ``CrossEncoder.rank`` — the activation, truncation length and prompts
    the export recorded (``onnxport.json``'s ``cross_encoder``)."""

    long_text_advice = "split the document into passages and score each"

    def __init__(self, model: OnnxModelBase, batch_size: int = 32, max_length: Optional[int] = None) -> None:
        from ..artifact.cross_encoder import RECORD_KEY, CrossEncoderRecord

        where = f"{model.export_dir}/onnxport.json {RECORD_KEY}"
        if model.metadata.get(RECORD_KEY) is None:
            raise ModelFileError(f"{model.export_dir} has no {RECORD_KEY} record in onnxport.json (how the cross-encoder "
                                 "scores); re-export the cross-encoder with this onnxport (--task rerank).")
        self.record = CrossEncoderRecord.from_dict(model.metadata[RECORD_KEY], where)
        super().__init__(model, batch_size, max_length or self.record.max_length)

    def __call__(self, query: str, documents: Sequence[str], batch_size: Optional[int] = None,
                 apply_softmax: bool = False, prompt_name: Optional[str] = None,
                 prompt: Optional[str] = None, truncation: bool = True) -> np.ndarray:
        """float32 scores in document order: shape (documents,) for a one-label model, (documents, num_labels)
        otherwise."""
        documents = self._documents(query, documents)
        first = self._prompt(prompt, prompt_name) + query  # sentence-transformers puts the prompt before the query
        activation = self.record.activation

        def run(batch, enc):
            logits = self.model(**self._feeds(enc))["logits"]
            return list(pp.cross_encoder_scores(logits, activation, apply_softmax))

        scores = self._in_length_order([(first, d) for d in documents], run, batch_size, truncation)
        return np.asarray(scores, dtype=np.float32)

    def rank(self, query: str, documents: Sequence[str], top_k: Optional[int] = None, return_documents: bool = False,
             batch_size: Optional[int] = None, prompt_name: Optional[str] = None,
             prompt: Optional[str] = None) -> list[dict]:
        """``[{"corpus_id": i, "score": s(, "text": document)}]`` highest score first, ``top_k`` of them."""
        if self.record.num_labels != 1:
            raise TaskError(f"rank() orders documents by one score; this cross-encoder has {self.record.num_labels} "
                            "labels. Call the pipeline for each document's scores per label.")
        pp.check_int("top_k", top_k, 1, allow_none=True)
        scores = self(query, documents, batch_size=batch_size, prompt_name=prompt_name, prompt=prompt)
        return pp.ranking(scores, list(documents), top_k, return_documents)

    @staticmethod
    def _documents(query: Any, documents: Any) -> list[str]:
        check_text("query", query)
        if isinstance(documents, str) or not isinstance(documents, (list, tuple, np.ndarray)):
            # a str would be scored one document per character
            raise InputError(f"documents must be a list of texts, got {type(documents).__name__}; "
                             "pass e.g. ['first document', 'second document'].")
        if len(documents) == 0:
            raise InputError("documents is empty; rerank scores a query against at least one document.")
        for index, document in enumerate(documents):
            check_text(f"documents[{index}]", document)
        return list(documents)

    def _prompt(self, prompt: Optional[str], prompt_name: Optional[str]) -> str:
        return resolve_prompt(self.record.prompts, self.record.default_prompt_name, prompt_name, prompt)


class SentenceEmbeddingsPipeline(Pipeline):
    """``SentenceTransformer.encode`` on an export of a sentence-transformers model: the model's prompts (its
    default prompt unless ``prompt_name`` / ``prompt`` say otherwise), its ``max_seq_length`` truncation and
    lower-casing, then the graph's pooling, Dense and Normalize modules. Returns float32 (len(texts), dimension),
    or one vector for a single text."""

    long_text_advice = "split it into passages and embed each"

    def __init__(self, model: OnnxModelBase, batch_size: int = 32, max_length: Optional[int] = None) -> None:
        super().__init__(model, batch_size, max_length)
        record = model.metadata.get("sentence_transformers") or {}
        self.prompts: dict[str, str] = dict(record.get("prompts") or {})
        self.default_prompt_name: Optional[str] = record.get("default_prompt_name")
        self.similarity_fn_name: str = record.get("similarity_fn_name") or "cosine"
        self.do_lower_case = bool(record.get("do_lower_case"))
        self.dimension = int(model.spec.outputs[-1].shape[-1])
        seq = record.get("max_seq_length")
        if max_length is None and isinstance(seq, int) and seq > 0:  # the model's own truncation length
            self.max_length = min(seq, model.config.max_sequence_length)

    def resolve_prompt(self, prompt_name: Optional[str] = None, prompt: Optional[str] = None) -> str:
        return resolve_prompt(self.prompts, self.default_prompt_name, prompt_name, prompt)

    def __call__(self, inputs, prompt_name: Optional[str] = None, prompt: Optional[str] = None,
                 batch_size: Optional[int] = None, truncation: bool = True) -> np.ndarray:
        texts, single = self._as_list(inputs, pairs=False, name="texts")
        prefix = self.resolve_prompt(prompt_name, prompt)
        texts = [prefix + text for text in texts]
        if self.do_lower_case:
            texts = [text.lower() for text in texts]

        def run(batch, enc):
            return list(self.model(**self._feeds(enc))["sentence_embedding"])

        vectors = self._in_length_order(texts, run, batch_size, truncation)
        array = np.stack(vectors).astype(np.float32, copy=False) if vectors else np.zeros((0, self.dimension), np.float32)
        return array[0] if single else array

    def similarity(self, a: Any, b: Any) -> np.ndarray:
        """(len(a), len(b)) similarities of two sets of embeddings by the model's ``similarity_fn_name``
        (cosine, dot, or the negated euclidean / manhattan distance, as sentence-transformers scores them)."""
        return pp.embedding_similarity(a, b, self.similarity_fn_name)


PIPELINE_CLASSES = {
    "feature-extraction": FeatureExtractionPipeline,
    "fill-mask": FillMaskPipeline,
    "text-classification": TextClassificationPipeline,
    "token-classification": TokenClassificationPipeline,
    "question-answering": QuestionAnsweringPipeline,
    "multiple-choice": MultipleChoicePipeline,
    "text-generation": TextGenerationPipeline,
    "rerank": RerankPipeline,
    "sentence-embeddings": SentenceEmbeddingsPipeline,
}


def pipeline(task: str, export_dir: str | os.PathLike, provider: str = "auto", batch_size: int = 32,
             max_length: Optional[int] = None, **model_kwargs: Any) -> Pipeline:
    """A pipeline for ``task`` served from ``export_dir`` (which must have been exported for that task)."""
    if task not in PIPELINE_TASKS:
        raise TaskError(f"Unknown pipeline task {task!r}; valid: {', '.join(PIPELINE_TASKS)}.")
    pp.check_int("batch_size", batch_size, 1)
    pp.check_int("max_length", max_length, 1, allow_none=True)
    export_task = PIPELINE_TASKS[task]
    _, spec = read_export_dir(export_dir)
    if spec.task != export_task:
        raise TaskError(
            f"{export_dir} was exported for {spec.task!r}; the {task!r} pipeline needs an export for {export_task!r} "
            f"(onnxport export CHECKPOINT OUT --task {export_task})."
        )
    model = model_class_for(export_task).from_pretrained(export_dir, provider, **model_kwargs)
    return PIPELINE_CLASSES[export_task](model, batch_size=batch_size, max_length=max_length)
