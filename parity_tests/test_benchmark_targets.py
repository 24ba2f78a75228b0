"""The issue-9 targets that ``benchmarks.run`` prints beside its timings, on hand-computed cases.

No timing here: the cases below are made-up medians whose verdicts are worked out by hand.
"""

import pytest

from benchmarks.targets import int8_target, roformer_vs_xlmr, speed_target, summary_table


def case(family, batch, sequence, floor_ms, onnxport, anchors, int8=None):
    rows = [{"runner": "onnxport", "median_ms": onnxport}]
    rows += [{"runner": name, "median_ms": ms} for name, ms in anchors.items()]
    if int8 is not None:
        rows.append({"runner": "onnxport-int8", "median_ms": int8})
    best = min(anchors, key=anchors.get)
    return {"family": family, "batch": batch, "sequence": sequence, "floor_ms": floor_ms, "best_anchor": best,
            "rows": rows}


def test_far_from_floor_asks_for_ninety_percent_of_the_best_anchor():
    # best anchor 60 ms, floor 45 ms: 60 / 45 = 1.33 > 1.2, so the limit is 0.9 x 60 = 54 ms.
    c = case("xlm-roberta", 1, 128, 45.0, 55.0, {"ort-plain": 60.0, "pytorch-eager": 150.0})
    t = speed_target(c)
    assert t["limit_ms"] == pytest.approx(54.0)
    assert not t["met"] and t["gap"] == pytest.approx(55.0 / 54.0 - 1)
    assert speed_target(case("xlm-roberta", 1, 128, 45.0, 53.9, {"ort-plain": 60.0}))["met"]


def test_anchor_near_floor_asks_for_108_percent_of_floor_but_never_slower_than_the_anchor():
    # 380 / 360 = 1.056 <= 1.2: limit min(1.08 x 360 = 388.8, 380) = 380.
    t = speed_target(case("roformer", 8, 128, 360.0, 385.0, {"ort-plain": 380.0}))
    assert t["limit_ms"] == pytest.approx(380.0) and not t["met"]
    # 420 / 360 = 1.167: limit min(388.8, 420) = 388.8.
    t = speed_target(case("roformer", 8, 128, 360.0, 388.0, {"ort-plain": 420.0}))
    assert t["limit_ms"] == pytest.approx(388.8) and t["met"]


def test_long_sequences_ask_for_eighty_percent_even_near_the_floor():
    t = speed_target(case("roformer", 1, 1024, 500.0, 420.0, {"ort-plain": 520.0}))
    assert t["limit_ms"] == pytest.approx(416.0) and not t["met"]


def test_int8_target_only_on_the_two_short_shapes():
    assert int8_target(case("xlm-roberta", 8, 128, 360.0, 400.0, {"ort-plain": 390.0}, int8=170.0))["met"]  # 2.35x
    short = int8_target(case("xlm-roberta", 1, 128, 45.0, 60.0, {"ort-plain": 60.0}, int8=27.0))  # 2.22x
    assert short["speedup"] == pytest.approx(60.0 / 27.0) and not short["met"]
    assert int8_target(case("xlm-roberta", 1, 512, 200.0, 300.0, {"ort-plain": 300.0}, int8=200.0)) is None
    assert int8_target(case("xlm-roberta", 1, 128, 45.0, 60.0, {"ort-plain": 60.0})) is None


def test_roformer_against_xlmr_and_the_summary_table():
    cases = [case("xlm-roberta", 1, 128, 45.0, 58.0, {"ort-plain": 60.0}, int8=24.0),
             case("roformer", 1, 128, 45.0, 60.0, {"ort-plain": 63.0}, int8=25.0),
             case("xlm-roberta", 8, 128, 360.0, 390.0, {"ort-plain": 392.0}),
             case("roformer", 8, 128, 360.0, 420.0, {"ort-plain": 480.0})]
    pairs = roformer_vs_xlmr(cases)
    assert [(p["batch"], round(p["ratio"], 4), p["met"]) for p in pairs] == [
        (1, round(60 / 58, 4), True), (8, round(420 / 390, 4), False)]
    text = "\n".join(summary_table(cases))
    # xlm-r 1x128: 60 / 45 = 1.33 -> limit 54; 58 > 54 by 7%; int8 58 / 24 = 2.42 met.
    assert "| xlm-roberta | 1x128 | 58.0 | ort-plain | 60.0 | 0.97 | 1.29 | 1.33 | <= 0.9 x anchor | 54.0 | no (+7%) | 24.0 | 2.42 | yes |" in text
    # roformer 8x128: 480 / 360 = 1.33 -> limit 432; 420 met; no int8 row.
    assert "| roformer | 8x128 | 420.0 | ort-plain | 480.0 | 0.88 | 1.17 | 1.33 | <= 0.9 x anchor | 432.0 | yes | - | - | - |" in text
    assert "1x128 1.03 (met), 8x128 1.08 (not met)" in text


def test_summary_states_the_share_of_floor_flops_onnxport_runs():
    c = case("xlm-roberta", 1, 128, 45.0, 58.0, {"ort-plain": 60.0})
    c.update(gflop=22.35, onnxport_gflop=20.80)
    assert "xlm-roberta 1x128 93.1% of those FLOPs" in "\n".join(summary_table([c]))
