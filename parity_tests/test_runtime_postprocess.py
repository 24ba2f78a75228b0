"""Pipeline arithmetic against hand-computed cases and transformers' own helpers."""

from __future__ import annotations

import numpy as np
import pytest

from onnxport.runtime import postprocess as pp


def test_classification_scores_follow_problem_type():
    logits = np.array([2.0, 0.0, -1.0])
    soft = np.exp(logits) / np.exp(logits).sum()
    assert np.allclose(pp.classification_scores(logits, None, 3), soft)
    assert np.allclose(pp.classification_scores(logits, "multi_label_classification", 3), 1 / (1 + np.exp(-logits)))
    assert np.allclose(pp.classification_scores(np.array([0.3]), None, 1), [1 / (1 + np.exp(-0.3))])
    assert np.allclose(pp.classification_scores(logits, None, 3, "none"), logits)
    with pytest.raises(ValueError, match="function_to_apply"):
        pp.classification_scores(logits, None, 3, "relu")
    labels = pp.top_labels(soft, {0: "POS", 1: "NEU", 2: "NEG"}, top_k=2)
    assert [l["label"] for l in labels] == ["POS", "NEU"] and labels[0]["score"] == pytest.approx(soft[0])
    assert len(pp.top_labels(soft, {0: "a", 1: "b", 2: "c"}, None)) == 3


def test_fill_mask_candidates_with_and_without_targets():
    logits = np.log(np.array([0.1, 0.5, 0.15, 0.25]))
    ids, probs = pp.fill_mask_candidates(logits, top_k=2)
    assert ids.tolist() == [1, 3] and np.allclose(probs, [0.5, 0.25])
    ids, probs = pp.fill_mask_candidates(logits, top_k=5, target_ids=[0, 2])
    assert ids.tolist() == [2, 0] and np.allclose(probs, [0.15, 0.1])  # probabilities stay over the whole vocab


def _entities(labels_per_token, words, strategy, prefix=None):
    """A tiny sentence: tokens with given (hard) labels; offsets from the words' positions in the text."""
    id2label = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    text = "".join(words)
    offsets, pos = [(0, 0)], 0
    for w in words:
        offsets.append((pos + (1 if w.startswith(" ") else 0), pos + len(w)))
        pos += len(w)
    offsets.append((0, 0))
    tokens = ["<s>"] + [w.strip() if not prefix or w.startswith(" ") or i == 0 else prefix + w
                        for i, w in enumerate(words)] + ["</s>"]
    logits = np.full((len(tokens), 5), -5.0)
    for i, label in enumerate(labels_per_token, start=1):
        logits[i, label] = 5.0
    special = [1] + [0] * len(words) + [1]
    return pp.token_entities(
        text, list(range(len(tokens))), logits, offsets, special, id2label,
        convert_ids_to_tokens=lambda i: tokens[i],
        convert_tokens_to_string=lambda ts: " ".join(t.strip() for t in ts).replace(" ##", ""),
        aggregation_strategy=strategy, continuing_subword_prefix=prefix,
    )


def test_token_entities_none_and_simple_grouping():
    words = ["John", " Smith", " lives", " in", " Paris"]
    labels = [1, 2, 0, 0, 3]
    none = _entities(labels, words, "none")
    assert [(e["entity"], e["word"], e["start"], e["end"]) for e in none] == [
        ("B-PER", "John", 0, 4), ("I-PER", "Smith", 5, 10), ("B-LOC", "Paris", 20, 25)]
    simple = _entities(labels, words, "simple")
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in simple] == [
        ("PER", "John Smith", 0, 10), ("LOC", "Paris", 20, 25)]
    p = np.exp(5.0) / (np.exp(5.0) + 4 * np.exp(-5.0))
    assert simple[0]["score"] == pytest.approx(p)


@pytest.mark.parametrize("strategy,expected", [("first", "PER"), ("max", "LOC"), ("average", "LOC")])
def test_word_aggregation_strategies_force_word_agreement(strategy, expected):
    # "Parisville" split in three subwords labelled PER, LOC, LOC (the LOC ones more confident for max)
    words = ["Paris", "vil", "le"]
    id2label = {0: "O", 1: "B-PER", 2: "B-LOC"}
    text = "Parisville"
    offsets = [(0, 0), (0, 5), (5, 8), (8, 10), (0, 0)]
    tokens = ["[CLS]", "paris", "##vil", "##le", "[SEP]"]
    logits = np.array([[0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [0, 0, 2.5], [0, 0, 0]])
    out = pp.token_entities(text, list(range(5)), logits, offsets, [1, 0, 0, 0, 1], id2label,
                            convert_ids_to_tokens=lambda i: tokens[i],
                            convert_tokens_to_string=lambda ts: " ".join(ts).replace(" ##", ""),
                            aggregation_strategy=strategy, continuing_subword_prefix="##")
    assert len(out) == 1 and out[0]["entity_group"] == expected and out[0]["word"] == "parisville"
    assert (out[0]["start"], out[0]["end"]) == (0, 10)
    with pytest.raises(ValueError, match="aggregation_strategy"):
        pp.token_entities(text, [0], logits[:1], offsets[:1], [1], id2label, str, str, "longest")


def test_answer_spans_match_transformers_decode_spans():
    from transformers.pipelines.question_answering import select_starts_ends

    rng = np.random.default_rng(0)
    start, end = rng.standard_normal(12) * 3, rng.standard_normal(12) * 3
    context = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0])  # CLS, question, SEP, context, SEP
    spans, null = pp.answer_spans(start, end, context, max_answer_len=4, top_k=3)
    p_mask = 1 - context
    p_mask[0] = 0  # transformers keeps CLS selectable for the null answer
    s, e, scores, hf_null = select_starts_ends(start[None], end[None], p_mask[None], np.ones((1, 12), dtype=int),
                                                min_null_score=1e6, top_k=3, handle_impossible_answer=True,
                                                max_answer_len=4)
    assert [(a, b) for a, b, _ in spans] == list(zip(s.tolist(), e.tolist()))
    assert np.allclose([x for _, _, x in spans], scores) and null == pytest.approx(hf_null)
    assert all(4 <= a <= b <= 10 and b - a < 4 for a, b, _ in spans)


def test_next_tokens_greedy_and_sampling_rules():
    logits = np.log(np.array([[0.05, 0.6, 0.3, 0.05], [0.4, 0.1, 0.1, 0.4]]))
    assert pp.next_tokens(logits).tolist() == [1, 0]
    rng = np.random.default_rng(0)
    draws = np.array([pp.next_tokens(logits, rng, do_sample=True, top_k=2) for _ in range(400)])
    assert set(draws[:, 0]) == {1, 2} and set(draws[:, 1]) <= {0, 3}
    draws = np.array([pp.next_tokens(logits, rng, do_sample=True, top_p=0.5) for _ in range(200)])
    assert set(draws[:, 0]) == {1}  # 0.6 alone reaches top_p
    # same seed, same samples
    a = [pp.next_tokens(logits, np.random.default_rng(7), do_sample=True, temperature=0.7)[0] for _ in range(3)]
    assert len(set(a)) == 1
    with pytest.raises(ValueError, match="temperature"):
        pp.next_tokens(logits, rng, do_sample=True, temperature=0)
