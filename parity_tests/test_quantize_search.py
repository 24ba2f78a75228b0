"""The int8 search's logic (issue 27): the keep-fp32 order, the gates per task, the "came closest" advice, and
the search on tiny models. Hand-computed cases; the models are the suite's tiny ones (transformers' 0.02 weight
scale). Accuracy on trained models is measured in ``benchmarks/int8_accuracy.py``, not here. No timing.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from onnxport.artifact.layout import model_path
from onnxport.errors import InputError
from onnxport.exporters.quantize import (
    GATES,
    KEEP_FP32,
    MAX_KEPT_SHARE,
    TASK_GATES,
    RecipeTrial,
    best_span,
    check_gate,
    closest_advice,
    gate_result,
    keep_order,
    mask_positions,
    uniform_rows,
)


def _spec(task, names=("logits",)):
    return SimpleNamespace(task=task, result_names=list(names))


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ----------------------------------------------------------------------------- keep order
def test_keep_order_ranks_gate_loss_per_unit_of_time_saved():
    # Budgets at the default gate: top-1 0.01, cosine 0.001. Losses in budgets: a 1.0, b 2.0, c 0.4, d 0.
    sensitivity = {"a": (0.01, 0.0), "b": (0.02, 0.0), "c": (0.0, 0.0004), "d": (0.0, 0.0)}
    sizes = {"a": 100, "b": 400, "c": 100, "d": 1}
    # Per unit of size: a 0.010, b 0.005, c 0.004; d costs nothing quantized and is never kept.
    assert keep_order(sensitivity, sizes, min_cosine=0.999, min_top1=0.99) == ["a", "b", "c"]
    # The same losses on equal sizes: the most sensitive first.
    assert keep_order(sensitivity, dict.fromkeys(sizes, 1), 0.999, 0.99) == ["b", "a", "c"]


# ----------------------------------------------------------------------------- gates
def test_every_task_has_a_documented_gate():
    assert set(TASK_GATES.values()) <= set(GATES)
    readme = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md"), encoding="utf-8").read()
    for gate in GATES:  # the README's gate table names every gate
        assert f"| `{gate}` |" in readme, gate


def test_masked_tokens_gate_counts_masked_positions_and_reports_all_beside():
    rng = np.random.default_rng(0)
    want = rng.normal(size=(2, 4, 5)).astype(np.float32)
    got = want.copy()
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    where = np.array([[0, 1, 0, 1], [1, 0, 0, 0]], bool)
    # Flip the arg-max at one masked position (0, 1) and one unmasked one (1, 2); padding (1, 3) flips too.
    for b, t in ((0, 1), (1, 2), (1, 3)):
        got[b, t] = -want[b, t]
    feeds = [{"input_ids": np.zeros((2, 4), np.int64), "attention_mask": mask}]
    result = gate_result("masked-tokens", [{"logits": want}], [{"logits": got}], feeds, _spec("fill-mask"), [where])
    assert result.positions == "masked" and result.rows == 3
    assert result.top1_agreement == pytest.approx(2 / 3)
    assert result.all_positions_top1 == pytest.approx(5 / 7)  # 7 real positions, 2 of them flipped
    real = mask.astype(bool)
    assert result.cosine == pytest.approx(_cos(want[real], got[real]))
    assert result.passes(min_cosine=-1.0, min_top1=0.6) and not result.passes(-1.0, 0.7)
    # No masked positions given (no mask token): every real position is gated.
    plain = gate_result("masked-tokens", [{"logits": want}], [{"logits": got}], feeds, _spec("fill-mask"))
    assert plain.positions == "all" and plain.rows == 7 and plain.top1_agreement == pytest.approx(5 / 7)


def test_label_tokens_and_cosine_gates():
    want = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 1.5]], np.float32)
    got = np.array([[2.0, 1.1], [0.1, 3.0], [1.6, 1.5]], np.float32)  # the third text's label flips
    feeds = [{"input_ids": np.zeros((3, 5), np.int64), "attention_mask": np.ones((3, 5), np.int64)}]
    label = gate_result("label", [{"logits": want}], [{"logits": got}], feeds, _spec("text-classification"))
    assert label.rows == 3 and label.top1_agreement == pytest.approx(2 / 3)
    assert label.cosine == pytest.approx(_cos(want, got))

    tokens_want = np.stack([want, want])  # (batch 2, sequence 3, labels 2)
    tokens_got = np.stack([got, want])
    token_feeds = [{"input_ids": np.zeros((2, 3), np.int64), "attention_mask": np.array([[1, 1, 1], [1, 1, 0]])}]
    tokens = gate_result("tokens", [{"logits": tokens_want}], [{"logits": tokens_got}], token_feeds,
                         _spec("token-classification"))
    assert tokens.rows == 5 and tokens.top1_agreement == pytest.approx(4 / 5)

    hidden = {"last_hidden_state": tokens_want, "pooler_output": want}
    hidden_got = {"last_hidden_state": tokens_got, "pooler_output": got}
    cosine = gate_result("cosine", [hidden], [hidden_got], token_feeds,
                         _spec("feature-extraction", ("last_hidden_state", "pooler_output")))
    rows = [_cos(a, b) for a, b in zip(tokens_want[token_feeds[0]["attention_mask"] == 1],
                                       tokens_got[token_feeds[0]["attention_mask"] == 1])]
    rows += [_cos(a, b) for a, b in zip(want, got)]
    assert cosine.top1_agreement is None and cosine.rows == 8
    assert cosine.cosine == pytest.approx(np.mean(rows)) and cosine.min_row_cosine == pytest.approx(min(rows))
    assert cosine.passes(min_cosine=cosine.cosine, min_top1=1.0)  # no top-1 to fail


def test_best_span_and_span_gate():
    real = np.ones(3, bool)
    # Pairs start <= end: (0,0) 0, (0,1) 6, (0,2) 1, (1,1) 7, (1,2) 2, (2,2) 6; (2,1) = 11 is not a span.
    assert best_span(np.array([0.0, 1, 5]), np.array([0.0, 6, 1]), real) == (1, 1)
    assert best_span(np.array([0.0, 1, 5]), np.array([0.0, 6, 1]), real, max_length=1) == (1, 1)
    assert best_span(np.array([9.0, 1, 5]), np.array([0.0, 6, 1]), np.array([False, True, True])) == (1, 1)
    start = np.array([[0.0, 1, 5], [3.0, 0, 0]], np.float32)
    end = np.array([[0.0, 6, 1], [0.0, 0, 4]], np.float32)
    start_got = start.copy()
    start_got[0, 2] = 8.0  # (2, 2) = 9 now beats (1, 1) = 7: the first answer moves
    feeds = [{"input_ids": np.zeros((2, 3), np.int64), "attention_mask": np.ones((2, 3), np.int64)}]
    spec = _spec("question-answering", ("start_logits", "end_logits"))
    result = gate_result("span", [{"start_logits": start, "end_logits": end}],
                         [{"start_logits": start_got, "end_logits": end}], feeds, spec)
    assert result.rows == 2 and result.top1_agreement == 0.5


def test_check_gate():
    assert check_gate(None, "fill-mask") == "masked-tokens" and check_gate(None, "text-generation") == "all-outputs"
    assert check_gate("cosine", "fill-mask") == "cosine"
    with pytest.raises(InputError, match="span gate measures question-answering.*fill-mask: use one of "
                                         "masked-tokens, cosine, all-outputs"):
        check_gate("span", "fill-mask")
    with pytest.raises(InputError, match="Unknown gate"):
        check_gate("nope", "fill-mask")


def test_mask_positions_masks_real_tokens_only_and_every_text():
    ids = np.array([[0, 7, 8, 9, 2, 1, 1], [0, 5, 2, 1, 1, 1, 1]], np.int64)
    mask = (ids != 1).astype(np.int64)
    feeds, where = mask_positions([{"input_ids": ids, "attention_mask": mask}], mask_id=4, special={0, 1, 2},
                                  rate=0.0)
    chosen = where[0]
    # rate 0: each text still gets one masked position, on a real non-special token.
    assert chosen.sum(-1).tolist() == [1, 1] and chosen[1, 1]
    assert set(ids[chosen]) <= {5, 7, 8, 9} and (feeds[0]["input_ids"][chosen] == 4).all()
    assert (feeds[0]["input_ids"][~chosen] == ids[~chosen]).all()
    _, every = mask_positions([{"input_ids": ids, "attention_mask": mask}], 4, {0, 1, 2}, rate=1.0)
    assert every[0].sum() == 4


def test_uniform_rows_pads_every_run_to_one_shape():
    short = {"input_ids": np.array([[0, 5, 2]]), "attention_mask": np.ones((1, 3), np.int64)}
    long = {"input_ids": np.array([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]]),
            "attention_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}
    rows = uniform_rows([short, long], pad_id=1)
    assert [r["input_ids"].shape for r in rows] == [(1, 5)] * 3
    assert rows[0]["input_ids"].tolist() == [[0, 5, 2, 1, 1]] and rows[0]["attention_mask"].tolist() == [[1, 1, 1, 0, 0]]


def test_closest_advice_names_the_recipe_the_gap_and_the_options():
    from onnxport.exporters.quantize import GateResult

    trials = [RecipeTrial("dynamic", [], 0.9660, 0.99311, False, shortfall=2.4),
              RecipeTrial("dynamic-per-channel" + KEEP_FP32, ["x"] * 11, 0.9861, 0.99938, False, shortfall=0.39),
              RecipeTrial("static-qdq-smooth", [], None, None, False, skipped="needs neural-compressor",
                          shortfall=None)]
    gate = GateResult("masked-tokens", 0.9861, 0.99938, 1400, 0.99, positions="masked")
    advice = closest_advice(trials, gate, 0.999, 0.99, texts=76, pinned=None)
    assert "Closest: dynamic-per-channel-keep-fp32, 11 MatMuls in fp32: top-1 98.61% (0.39 points short of " \
           "99.00%), cosine 0.99938 (passes)." in advice
    assert "--calibration: 76 texts now, 1400 predictions, one flip = 0.07%" in advice
    assert "--recipe dynamic-per-channel-keep-fp32 --min-top1 0.9861" in advice
    assert "--gate cosine / all-outputs" in advice and "no --recipe" not in advice
    pinned = closest_advice(trials[:1], gate, 0.999, 0.99, texts=0, pinned="dynamic")
    assert "let the search choose (no --recipe)" in pinned and "--calibration" in pinned
    assert "--min-cosine 0.99311" in pinned and "--min-top1 0.966" in pinned


# ----------------------------------------------------------------------------- the search on tiny models
pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def qa_export(checkpoint_factory, tmp_path_factory):
    from onnxport.exporters import export

    checkpoint = checkpoint_factory("xlm-roberta", "ForQuestionAnswering", initializer_range=0.02)
    out = tmp_path_factory.mktemp("search") / "qa"
    export(checkpoint, str(out), framework="pt", task="question-answering")
    return out


def test_search_keeps_nodes_one_by_one_until_the_gate_passes(qa_export, tmp_path, capsys):
    """All base recipes fail a tightened cosine; the keep-fp32 search adds nodes in keep order, gating each
    model, and stops at the first that passes (measured: the tiny QA model needs 1-3 of its 13)."""
    from onnxport.exporters.quantize import compare_to_fp32, quantize

    base = quantize(str(qa_export), str(tmp_path / "base"), recipe="dynamic-u8u8")
    # A cosine a little above every base recipe's (the best base, u8u8, is the closest): only keeping helps.
    target = 1.0 - (1.0 - base.gate.cosine) * 0.7
    report = quantize(str(qa_export), str(tmp_path / "kept"), min_cosine=target, raise_on_failure=False)
    bases = [t for t in report.search if not t.recipe.endswith(KEEP_FP32) and not t.skipped]
    assert bases and not any(t.passed for t in bases)
    kept = [t for t in report.search if t.recipe.endswith(KEEP_FP32)]
    assert kept and all(t.kept_share <= MAX_KEPT_SHARE for t in kept)
    assert report.passed and report.recipe.endswith(KEEP_FP32)
    chosen = next(t for t in kept if t.recipe == report.recipe)
    assert chosen.steps == len(report.kept_fp32) >= 1 and report.gate.gate == "span"
    assert report.speedup and report.speedup > 0
    # Recomputed independently on the gate's inputs: the kept nodes really are fp32 and the cosine holds.
    from onnxport.exporters import load_spec
    from onnxport.exporters.quantize import validation_inputs, weight_matmuls
    import onnx

    assert sorted(weight_matmuls(onnx.load(report.model_path))) == sorted(report.kept_fp32)
    spec = load_spec(str(qa_export))
    outputs = compare_to_fp32(model_path(qa_export), report.model_path, spec,
                              inputs=list(validation_inputs(spec)))
    assert min(o.cosine for o in outputs) == pytest.approx(min(o.cosine for o in report.outputs), abs=1e-6)
    q = json.loads((tmp_path / "kept" / "onnxport.json").read_text())["quantization"]
    assert q["gate"]["gate"] == "span" and q["kept_fp32"] == report.kept_fp32 and q["speedup"] == report.speedup
    from onnxport.cli import main

    assert main(["info", str(tmp_path / "kept")]) == 0
    assert (f"int8 gate span: top-1 {report.gate.top1_agreement:.2%} over {report.gate.rows} predictions, cosine "
            f"{report.gate.cosine:.6f} (passed; {len(report.kept_fp32)} MatMuls kept in fp32") in capsys.readouterr().out


def test_refused_search_says_what_came_closest(qa_export, tmp_path):
    from onnxport.errors import QuantizationError
    from onnxport.exporters.quantize import quantize

    with pytest.raises(QuantizationError, match=r"beyond the thresholds(.|\n)*Closest: (.|\n)*What you can do: "
                                                r"(.|\n)*--calibration(.|\n)*Nothing was written"):
        quantize(str(qa_export), str(tmp_path / "no"), min_cosine=1.0 + 1e-9, recipe="dynamic")
    assert not (tmp_path / "no").exists()
