"""Turning head outputs into answers, in numpy: the pipelines' arithmetic without the I/O.

Semantics follow transformers' pipelines (scores, top-k, entity aggregation, answer
spans) so results are comparable; the functions take plain arrays and small
callables instead of a tokenizer object so they can be tested in isolation.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import InputError

AGGREGATION_STRATEGIES = ("none", "simple", "first", "average", "max")
FUNCTIONS_TO_APPLY = ("softmax", "sigmoid", "none")


# ----------------------------------------------------------------------------- argument checks
def check_int(name: str, value, minimum: int, allow_none: bool = False) -> None:
    """``value`` is an integer >= ``minimum`` (or None when ``allow_none``), else an InputError naming ``name``."""
    if value is None and allow_none:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        none = " or None" if allow_none else ""
        raise InputError(f"{name} must be an integer >= {minimum}{none}, got {value!r}.")


def check_choice(name: str, value, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise InputError(f"{name}={value!r} is not one of {', '.join(repr(a) for a in allowed)}.")


def check_sampling(temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None) -> None:
    """Sampling settings that mean something: temperature > 0, top_k >= 1 (None: off), top_p in (0, 1] (None: off)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)) or not temperature > 0 \
            or not math.isfinite(temperature):
        raise InputError(f"temperature must be a finite number > 0 (the logits are divided by it), got {temperature!r}.")
    check_int("top_k", top_k, 1, allow_none=True)
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float, np.number))
                              or not 0 < top_p <= 1):
        raise InputError(f"top_p must lie in (0, 1] (1 keeps every token), got {top_p!r}.")


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------- text classification
def classification_scores(
    logits: np.ndarray, problem_type: Optional[str], num_labels: int, function_to_apply: Optional[str] = None
) -> np.ndarray:
    """Scores per label: sigmoid for multi-label or single-output models, softmax otherwise (as transformers)."""
    if function_to_apply is None:
        if problem_type == "multi_label_classification" or num_labels == 1:
            function_to_apply = "sigmoid"
        else:
            function_to_apply = "softmax"
    if function_to_apply == "sigmoid":
        return sigmoid(logits)
    if function_to_apply == "softmax":
        return softmax(logits)
    if function_to_apply == "none":
        return logits
    check_choice("function_to_apply", function_to_apply, FUNCTIONS_TO_APPLY)
    raise AssertionError("unreachable")  # pragma: no cover


# A cross-encoder's activations (artifact/cross_encoder.py names them), applied in float32 as torch applies them.
CROSS_ENCODER_ACTIVATIONS = {
    "sigmoid": lambda x: sigmoid(x),
    "identity": lambda x: x,
    "tanh": np.tanh,
    "softmax": lambda x: softmax(x, axis=-1),  # torch's Softmax() without dim: over the labels of each row
}


def cross_encoder_scores(logits: np.ndarray, activation: str, apply_softmax: bool = False) -> np.ndarray:
    """``CrossEncoder.predict``'s scores from logits (pairs, num_labels): the activation, then a softmax over the
    labels when asked and there are several, then one score per pair for a one-label model."""
    scores = CROSS_ENCODER_ACTIVATIONS[activation](logits.astype(np.float32)).astype(np.float32)
    if apply_softmax and scores.shape[-1] > 1:
        scores = softmax(scores, axis=-1).astype(np.float32)
    return scores[:, 0] if scores.shape[-1] == 1 else scores


def ranking(scores: np.ndarray, documents: Sequence[str], top_k: Optional[int] = None,
            return_documents: bool = False) -> list[dict]:
    """``CrossEncoder.rank``'s answer from one score per document: ``{"corpus_id", "score"(, "text")}`` highest
    score first, ties in document order (its sort is stable), the first ``top_k``."""
    check_int("top_k", top_k, 1, allow_none=True)
    values = [float(v) for v in scores]
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=True)
    return [{"corpus_id": i, "score": values[i], **({"text": documents[i]} if return_documents else {})}
            for i in (order if top_k is None else order[:top_k])]


def top_labels(scores: np.ndarray, id2label: dict[int, str], top_k: Optional[int]) -> list[dict]:
    """Labels sorted by score; ``top_k=None`` keeps all."""
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [{"label": id2label[int(i)], "score": float(scores[i])} for i in order]


# ----------------------------------------------------------------------------- sentence embeddings
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")


def embedding_similarity(a, b, function: str = "cosine") -> np.ndarray:
    """(n, m) float32 similarities of embeddings ``a`` (n, d) and ``b`` (m, d) (1-D: one row), as
    sentence-transformers' similarity functions score them: cosine, dot product, and the negated euclidean
    and manhattan distances (higher is more similar for all four)."""
    check_choice("similarity function", function, SIMILARITY_FUNCTIONS)
    a, b = (np.atleast_2d(np.asarray(x, dtype=np.float32)) for x in (a, b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"similarity needs two sets of vectors of one width, got shapes {a.shape} and {b.shape}.")
    if function == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    if function in ("cosine", "dot"):
        return (a @ b.T).astype(np.float32)
    difference = a[:, None, :] - b[None, :, :]
    if function == "euclidean":
        return (-np.sqrt((difference.astype(np.float64) ** 2).sum(-1))).astype(np.float32)
    return (-np.abs(difference).sum(-1)).astype(np.float32)


# ----------------------------------------------------------------------------- fill-mask
def fill_mask_candidates(
    mask_logits: np.ndarray, top_k: int, target_ids: Optional[Sequence[int]] = None
) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, probabilities) of the best candidates for one mask position.

    Probabilities are over the whole vocabulary; ``target_ids`` restricts which tokens may be returned.
    """
    probs = softmax(mask_logits.astype(np.float64))
    if target_ids is not None:
        candidates = np.asarray(list(target_ids), dtype=np.int64)
        order = np.argsort(-probs[candidates], kind="stable")[:top_k]
        ids = candidates[order]
    else:
        ids = np.argsort(-probs, kind="stable")[:top_k]
    return ids, probs[ids]


# ----------------------------------------------------------------------------- token classification
def token_entities(
    text: str,
    input_ids: Sequence[int],
    logits: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    special_tokens_mask: Sequence[int],
    id2label: dict[int, str],
    convert_ids_to_tokens: Callable[[int], str],
    convert_tokens_to_string: Callable[[list[str]], str],
    aggregation_strategy: str = "none",
    continuing_subword_prefix: Optional[str] = None,
    unk_token_id: Optional[int] = None,
    ignore_labels: Sequence[str] = ("O",),
) -> list[dict]:
    """Entities of one text from per-token logits, as transformers' token-classification pipeline."""
    check_choice("aggregation_strategy", aggregation_strategy, AGGREGATION_STRATEGIES)
    scores = softmax(logits.astype(np.float64))
    tokens = []
    for index, token_scores in enumerate(scores):
        if special_tokens_mask[index]:
            continue
        start, end = (int(offsets[index][0]), int(offsets[index][1]))
        word = convert_ids_to_tokens(int(input_ids[index]))
        piece = text[start:end]
        if continuing_subword_prefix:
            is_subword = len(word) != len(piece)
        else:  # no subword marker: a token glued to the previous character continues a word
            is_subword = start > 0 and " " not in text[start - 1 : start + 1]
        if unk_token_id is not None and int(input_ids[index]) == unk_token_id:
            word, is_subword = piece, False
        tokens.append({"word": word, "scores": token_scores, "start": start, "end": end, "index": index,
                       "is_subword": is_subword})

    if aggregation_strategy in ("none", "simple"):
        entities = []
        for token in tokens:
            best = int(token["scores"].argmax())
            entities.append({"entity": id2label[best], "score": float(token["scores"][best]), "index": token["index"],
                             "word": token["word"], "start": token["start"], "end": token["end"]})
    else:
        entities = [_aggregate_word(group, aggregation_strategy, id2label, convert_tokens_to_string)
                    for group in _word_groups(tokens)]
    if aggregation_strategy != "none":
        entities = _group_entities(entities, convert_tokens_to_string)
    key = "entity" if aggregation_strategy == "none" else "entity_group"
    return [e for e in entities if e[key] not in ignore_labels]


def _word_groups(tokens: list[dict]) -> list[list[dict]]:
    groups: list[list[dict]] = []
    for token in tokens:
        if groups and token["is_subword"]:
            groups[-1].append(token)
        else:
            groups.append([token])
    return groups


def _aggregate_word(group: list[dict], strategy: str, id2label, convert_tokens_to_string) -> dict:
    if strategy == "first":
        scores = group[0]["scores"]
    elif strategy == "max":
        scores = max(group, key=lambda token: token["scores"].max())["scores"]
    else:  # average
        scores = np.nanmean(np.stack([token["scores"] for token in group]), axis=0)
    best = int(scores.argmax())
    return {"entity": id2label[best], "score": float(scores[best]),
            "word": convert_tokens_to_string([token["word"] for token in group]),
            "start": group[0]["start"], "end": group[-1]["end"]}


def _split_tag(label: str) -> tuple[str, str]:
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def _group_entities(entities: list[dict], convert_tokens_to_string) -> list[dict]:
    """Merge adjacent entities of the same tag; a B- tag starts a new group."""
    groups: list[list[dict]] = []
    for entity in entities:
        bi, tag = _split_tag(entity["entity"])
        if groups and bi != "B" and _split_tag(groups[-1][-1]["entity"])[1] == tag:
            groups[-1].append(entity)
        else:
            groups.append([entity])
    return [
        {
            "entity_group": group[0]["entity"].split("-", 1)[-1],
            "score": float(np.nanmean([e["score"] for e in group])),
            "word": convert_tokens_to_string([e["word"] for e in group]),
            "start": group[0]["start"],
            "end": group[-1]["end"],
        }
        for group in groups
    ]


def merge_overlapping_entities(entities: list[dict]) -> list[dict]:
    """One entity per stretch of text from the entities of overlapping windows, as transformers merges them.

    Sorted by start; an entity that starts inside the one kept before it competes with it: the longer wins,
    at equal length the higher score. The overlap of two windows is seen twice, once near each window's
    edge, and the longer reading is the one that saw more of its context."""
    if not entities:
        return []
    entities = sorted(entities, key=lambda entity: entity["start"])
    merged = []
    kept = entities[0]
    for entity in entities:
        if kept["start"] <= entity["start"] < kept["end"]:
            length, kept_length = entity["end"] - entity["start"], kept["end"] - kept["start"]
            if length > kept_length or (length == kept_length and entity["score"] > kept["score"]):
                kept = entity
        else:
            merged.append(kept)
            kept = entity
    merged.append(kept)
    return merged


# ----------------------------------------------------------------------------- question answering
def answer_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    context_mask: np.ndarray,
    max_answer_len: int = 15,
    top_k: int = 1,
    null_index: int = 0,
) -> tuple[list[tuple[int, int, float]], float]:
    """Best (start_token, end_token, score) spans inside the context of one window, and the null score.

    Start and end probabilities are softmaxes over context tokens plus the null (CLS) position;
    a span's score is p(start) * p(end) with end >= start and length <= max_answer_len. The null
    score p(start=CLS) * p(end=CLS) is what an "impossible answer" is worth.
    """
    allowed = context_mask.astype(bool).copy()
    allowed[null_index] = True
    start = softmax(np.where(allowed, start_logits, -10000.0).astype(np.float64))
    end = softmax(np.where(allowed, end_logits, -10000.0).astype(np.float64))
    null_score = float(start[null_index] * end[null_index])
    in_context = context_mask.astype(bool)
    candidates = np.triu(np.outer(start, end))
    candidates = np.tril(candidates, max_answer_len - 1)
    candidates[~in_context, :] = 0.0
    candidates[:, ~in_context] = 0.0
    flat = candidates.ravel()
    order = np.argsort(-flat, kind="stable")[:top_k]
    spans = []
    for index in order:
        if flat[index] <= 0.0:
            break
        s, e = np.unravel_index(index, candidates.shape)
        spans.append((int(s), int(e), float(flat[index])))
    return spans, null_score


# ----------------------------------------------------------------------------- text generation
def next_tokens(
    logits: np.ndarray,
    rng: Optional[np.random.Generator] = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
) -> np.ndarray:
    """Next token per row of ``logits`` (batch, vocab): greedy, or sampled with temperature / top-k / top-p."""
    check_sampling(temperature, top_k, top_p)
    if not do_sample:
        return np.argmax(logits, axis=-1)
    rng = rng or np.random.default_rng()
    scores = logits.astype(np.float64) / temperature
    if top_k is not None:
        kth = np.sort(scores, axis=-1)[:, -min(top_k, scores.shape[-1])][:, None]
        scores = np.where(scores < kth, -np.inf, scores)
    probs = softmax(scores)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        keep_sorted = (np.cumsum(sorted_probs, axis=-1) - sorted_probs) < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    return np.array([rng.choice(probs.shape[-1], p=row) for row in probs])
