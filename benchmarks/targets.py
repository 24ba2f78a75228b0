"""Issue 9's speed targets, as ``benchmarks.run`` judges its measured cases (no timing, no imports with side effects).

A case is a dict with ``family``, ``batch``, ``sequence``, ``floor_ms``, ``best_anchor`` and ``rows``
(``runner``, ``median_ms``), as ``benchmarks.run`` builds it.
"""

from __future__ import annotations

SHAPES = ((1, 128), (8, 128))
LONG_SHAPES = {"xlm-roberta": (1, 512), "roformer": (1, 1024)}
NEAR_FLOOR = 1.2      # an anchor within 20% of the floor ...
FLOOR_TARGET = 1.08   # ... asks onnxport for <= 1.08 x the floor (and never slower than that anchor)
ANCHOR_TARGET = 0.9   # otherwise <= 0.9 x the best anchor
LONG_TARGET = 0.8     # long sequences (1 x 512 XLM-R, 1 x 1024 RoFormer): <= 0.8 x the best anchor
INT8_TARGET = 2.3     # int8 at least 2.3 x faster than onnxport fp32 ...
INT8_SHAPES = SHAPES  # ... at 1 x 128 and 8 x 128
ROFORMER_TO_XLMR = 1.05


def speed_target(case: dict) -> dict:
    """The fp32 target of one case: the limit in ms, how it was chosen, and whether onnxport met it."""
    rows = {r["runner"]: r for r in case["rows"]}
    ours, anchor, floor = rows["onnxport"]["median_ms"], rows[case["best_anchor"]]["median_ms"], case["floor_ms"]
    if (case["batch"], case["sequence"]) not in SHAPES:
        limit, rule = LONG_TARGET * anchor, f"<= {LONG_TARGET} x anchor"
    elif anchor <= NEAR_FLOOR * floor:
        limit, rule = min(FLOOR_TARGET * floor, anchor), f"<= min({FLOOR_TARGET} x floor, anchor)"
    else:
        limit, rule = ANCHOR_TARGET * anchor, f"<= {ANCHOR_TARGET} x anchor"
    return {"limit_ms": limit, "rule": rule, "met": ours <= limit, "gap": ours / limit - 1.0}


def int8_target(case: dict) -> dict | None:
    rows = {r["runner"]: r for r in case["rows"]}
    if "onnxport-int8" not in rows or (case["batch"], case["sequence"]) not in INT8_SHAPES:
        return None
    speedup = rows["onnxport"]["median_ms"] / rows["onnxport-int8"]["median_ms"]
    return {"speedup": speedup, "met": speedup >= INT8_TARGET}


def roformer_vs_xlmr(cases: list[dict]) -> list[dict]:
    """RoFormer's onnxport latency over XLM-R's at the same shape (same FLOPs: the geometry is shared)."""
    by_key = {(c["family"], c["batch"], c["sequence"]): {r["runner"]: r for r in c["rows"]} for c in cases}
    out = []
    for batch, sequence in SHAPES:
        rof, xlmr = by_key.get(("roformer", batch, sequence)), by_key.get(("xlm-roberta", batch, sequence))
        if rof and xlmr:
            ratio = rof["onnxport"]["median_ms"] / xlmr["onnxport"]["median_ms"]
            out.append({"batch": batch, "sequence": sequence, "ratio": ratio, "met": ratio <= ROFORMER_TO_XLMR})
    return out


def summary_table(cases: list[dict]) -> list[str]:
    """Markdown lines: per case onnxport vs the best anchor and the floor, its target and verdict, int8's."""
    lines = ["| family | batch x seq | onnxport ms | best anchor | anchor ms | onnxport / anchor | onnxport / floor | "
             "anchor / floor | fp32 target | target ms | fp32 met | int8 ms | fp32 / int8 | int8 met |",
             "|---|---|---:|---|---:|---:|---:|---:|---|---:|---|---:|---:|---|"]
    for case in cases:
        rows = {r["runner"]: r for r in case["rows"]}
        ours, anchor = rows["onnxport"], rows[case["best_anchor"]]
        int8 = rows.get("onnxport-int8")
        target, int8_goal = speed_target(case), int8_target(case)
        met = "yes" if target["met"] else f"no (+{target['gap']:.0%})"
        int8_met = "-" if int8_goal is None else ("yes" if int8_goal["met"] else f"no (< {INT8_TARGET})")
        lines.append(
            f"| {case['family']} | {case['batch']}x{case['sequence']} | {ours['median_ms']:.1f} | {case['best_anchor']} | "
            f"{anchor['median_ms']:.1f} | {ours['median_ms'] / anchor['median_ms']:.2f} | "
            f"{ours['median_ms'] / case['floor_ms']:.2f} | {anchor['median_ms'] / case['floor_ms']:.2f} | "
            f"{target['rule']} | {target['limit_ms']:.1f} | {met} | "
            + (f"{int8['median_ms']:.1f} | {ours['median_ms'] / int8['median_ms']:.2f} | {int8_met} |" if int8
               else "- | - | - |"))
    pruned = [c for c in cases if c.get("onnxport_gflop")]
    if pruned:
        lines += ["", "The floor counts the full model's FLOPs. onnxport's text-classification graph runs the last layer "
                  "for the first token only (the classifier reads nothing else): it does " + ", ".join(
                      f"{c['family']} {c['batch']}x{c['sequence']} {c['onnxport_gflop'] / c['gflop']:.1%}" for c in pruned)
                  + " of those FLOPs."]
    pairs = roformer_vs_xlmr(cases)
    if pairs:
        lines += ["", f"RoFormer / XLM-R onnxport latency (target <= {ROFORMER_TO_XLMR}; the two families are timed "
                  "one after the other, not interleaved): " + ", ".join(
                      f"{p['batch']}x{p['sequence']} {p['ratio']:.2f} ({'met' if p['met'] else 'not met'})" for p in pairs)]
    return lines
