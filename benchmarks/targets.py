"""The speed targets of issues 9 and 17, as ``benchmarks.run`` judges its measured cases (no timing, no
imports with side effects).

A case is a dict with ``family``, ``batch``, ``sequence``, ``floor_ms``, ``best_anchor`` and ``rows``
(``runner``, ``median_ms``), and where int8 ran ``int8_floor_ms``, as ``benchmarks.run`` builds it. A
feature-extraction case (``task`` "feature-extraction") has the rows ``onnxport`` and ``ort-plain`` only.
"""

from __future__ import annotations

SHAPES = ((1, 128), (8, 128))
LONG_SHAPES = {"xlm-roberta": (1, 512), "roformer": (1, 1024)}
NEAR_FLOOR = 1.2      # an anchor within 20% of the floor ...
FLOOR_TARGET = 1.08   # ... asks onnxport for <= 1.08 x the floor (and never slower than that anchor)
ANCHOR_TARGET = 0.9   # otherwise <= 0.9 x the best anchor
LONG_TARGET = 0.8     # long sequences (1 x 512 XLM-R, 1 x 1024 RoFormer): <= 0.8 x the best anchor
INT8_TARGET = 3.5     # issue 17: int8 at least 3.5 x faster than onnxport fp32 ...
INT8_SHAPES = SHAPES  # ... at 1 x 128 and 8 x 128 (2 threads, on a VNNI CPU) ...
INT8_FLOOR_TARGET = 1.3  # ... and within 1.3 x its int8 floor
FEATURE_EXTRACTION_TARGET = 1.0  # fp32 feature-extraction never behind the plain torch.onnx.export
ROFORMER_TO_XLMR = 1.05
FEATURE_EXTRACTION = "feature-extraction"


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
    """int8's speed-up over onnxport fp32 and its time over the int8 floor; met when both hold.

    ``gap``: how far the worse of the two is from its target (0.2 = 20% short)."""
    rows = {r["runner"]: r for r in case["rows"]}
    if "onnxport-int8" not in rows or (case["batch"], case["sequence"]) not in INT8_SHAPES:
        return None
    int8_ms = rows["onnxport-int8"]["median_ms"]
    speedup = rows["onnxport"]["median_ms"] / int8_ms
    out = {"speedup": speedup, "speedup_met": speedup >= INT8_TARGET, "speedup_gap": INT8_TARGET / speedup - 1.0}
    if case.get("int8_floor_ms"):
        to_floor = int8_ms / case["int8_floor_ms"]
        out.update(to_floor=to_floor, floor_met=to_floor <= INT8_FLOOR_TARGET, floor_gap=to_floor / INT8_FLOOR_TARGET - 1.0)
    out["met"] = out["speedup_met"] and out.get("floor_met", True)
    return out


def feature_extraction_target(case: dict) -> dict:
    """onnxport's feature-extraction export over the plain torch.onnx.export of the same model, same run."""
    rows = {r["runner"]: r for r in case["rows"]}
    ratio = rows["onnxport"]["median_ms"] / rows["ort-plain"]["median_ms"]
    return {"ratio": ratio, "met": ratio <= FEATURE_EXTRACTION_TARGET, "gap": ratio / FEATURE_EXTRACTION_TARGET - 1.0}


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


def _verdict(met: bool, gap: float) -> str:
    return "met" if met else f"not met (+{gap:.0%})"


def int8_table(cases: list[dict], vnni: bool | None = None) -> list[str]:
    """Markdown lines: issue 17's int8 targets per case (speed-up over fp32, time over the int8 floor)."""
    judged = [(c, int8_target(c)) for c in cases]
    judged = [(c, t) for c, t in judged if t is not None]
    if not judged:
        return []
    lines = [f"int8 (issue 17): >= {INT8_TARGET} x onnxport fp32 and <= {INT8_FLOOR_TARGET} x the int8 floor "
             "(int8 GEMM FLOPs over the int8 rate measured at each GEMM's shape, plus the fp32 attention products "
             "over the fp32 limit).", "",
             "| family | batch x seq | fp32 ms | int8 ms | fp32 / int8 | speed-up target | int8 floor ms | int8 / floor | "
             "floor target | met |", "|---|---|---:|---:|---:|---|---:|---:|---|---|"]
    for case, t in judged:
        rows = {r["runner"]: r for r in case["rows"]}
        floor = (f"{case['int8_floor_ms']:.1f} | {t['to_floor']:.2f} | {_verdict(t['floor_met'], t['floor_gap'])}"
                 if "to_floor" in t else "- | - | -")
        lines.append(f"| {case['family']} | {case['batch']}x{case['sequence']} | {rows['onnxport']['median_ms']:.1f} | "
                     f"{rows['onnxport-int8']['median_ms']:.1f} | {t['speedup']:.2f} | "
                     f"{_verdict(t['speedup_met'], t['speedup_gap'])} | {floor} | {'yes' if t['met'] else 'no'} |")
    if vnni is False:
        lines += ["", "This CPU has no VNNI (avx512_vnni / avx_vnni / amx_int8): its u8 x s8 kernels multiply with "
                  "AVX2's vpmaddubsw, so the int8 targets, set for a VNNI CPU, are shown but not expected here."]
    return lines


def feature_extraction_table(cases: list[dict]) -> list[str]:
    fe = [c for c in cases if c.get("task") == FEATURE_EXTRACTION]
    if not fe:
        return []
    lines = [f"feature-extraction (issue 17): onnxport fp32 <= {FEATURE_EXTRACTION_TARGET:.2f} x the plain "
             "torch.onnx.export of the same model, timed interleaved in the same run.", "",
             "| family | batch x seq | onnxport ms | ort-plain ms | onnxport / plain | target |",
             "|---|---|---:|---:|---:|---|"]
    for case in fe:
        rows = {r["runner"]: r for r in case["rows"]}
        t = feature_extraction_target(case)
        lines.append(f"| {case['family']} | {case['batch']}x{case['sequence']} | {rows['onnxport']['median_ms']:.1f} | "
                     f"{rows['ort-plain']['median_ms']:.1f} | {t['ratio']:.3f} | {_verdict(t['met'], t['gap'])} |")
    return lines


def summary_table(cases: list[dict], vnni: bool | None = None) -> list[str]:
    """Markdown lines: per case onnxport vs the best anchor and the floor, its target and verdict, int8's;
    then the int8 and feature-extraction targets of issue 17."""
    fe_cases = [c for c in cases if c.get("task") == FEATURE_EXTRACTION]
    cases = [c for c in cases if c.get("task") != FEATURE_EXTRACTION]
    lines = ["| family | batch x seq | onnxport ms | best anchor | anchor ms | onnxport / anchor | onnxport / floor | "
             "anchor / floor | fp32 target | target ms | fp32 met | int8 ms | fp32 / int8 | int8 met |",
             "|---|---|---:|---|---:|---:|---:|---:|---|---:|---|---:|---:|---|"]
    for case in cases:
        rows = {r["runner"]: r for r in case["rows"]}
        ours, anchor = rows["onnxport"], rows[case["best_anchor"]]
        int8 = rows.get("onnxport-int8")
        target, int8_goal = speed_target(case), int8_target(case)
        met = "yes" if target["met"] else f"no (+{target['gap']:.0%})"
        int8_met = "-" if int8_goal is None else ("yes" if int8_goal["met"] else "no")
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
    for section in (int8_table(cases, vnni), feature_extraction_table(fe_cases)):
        if section:
            lines += [""] + section
    return lines


# ----------------------------------------------------------------------------- issue 26: long inputs
# A long-input case (``benchmarks.long_inputs``): ``batch``, ``sequence`` and ``rows`` of ``runner``,
# ``median_ms`` and ``peak_activation_bytes`` (peak RSS - RSS once the session is built), the reference
# runner being ``ort-plain`` (the plain torch.onnx.export).
LONG_INPUT_SHAPES = ((1, 512), (4, 512), (1, 2048), (1, 8192))  # 4x512: a ragged batch
LONG_INPUT_RATIO = {(1, 512): 0.85, (1, 2048): 0.7, (1, 8192): 0.7}  # onnxport / plain latency, at most
LONG_INPUT_NEVER_ABOVE = 1.0  # at any shape, the ragged batch included
LONG_INPUT_MEMORY = {(1, 8192): 0.5}  # onnxport / plain peak activation memory, at most


def long_input_target(case: dict) -> dict | None:
    """onnxport against the plain export at one long-input shape: latency ratio and, where set, memory ratio.
    ``gap``: how far the worse of the two is over its limit (0.2 = 20% over); None without both runners."""
    rows = {r["runner"]: r for r in case["rows"] if "error" not in r}
    ours, plain = rows.get("onnxport"), rows.get("ort-plain")
    if not ours or not plain:
        return None
    shape = (case["batch"], case["sequence"])
    limit = min(LONG_INPUT_RATIO.get(shape, LONG_INPUT_NEVER_ABOVE), LONG_INPUT_NEVER_ABOVE)
    ratio = ours["median_ms"] / plain["median_ms"]
    out = {"ratio": ratio, "limit": limit, "time_met": ratio <= limit, "time_gap": ratio / limit - 1.0}
    memory_limit = LONG_INPUT_MEMORY.get(shape)
    if memory_limit is not None and ours.get("peak_activation_bytes") and plain.get("peak_activation_bytes"):
        memory = ours["peak_activation_bytes"] / plain["peak_activation_bytes"]
        out.update(memory_ratio=memory, memory_limit=memory_limit, memory_met=memory <= memory_limit,
                   memory_gap=memory / memory_limit - 1.0)
    out["met"] = out["time_met"] and out.get("memory_met", True)
    out["gap"] = max(out["time_gap"], out.get("memory_gap", float("-inf")))
    return out


def long_input_table(cases: list[dict]) -> list[str]:
    """Markdown lines: each long-input case against issue 26's targets, met or the gap."""
    lines = [f"onnxport / plain torch.onnx.export: <= {LONG_INPUT_RATIO[(1, 512)]} at 1x512, <= "
             f"{LONG_INPUT_RATIO[(1, 2048)]} at 1x2048 and 1x8192, never above {LONG_INPUT_NEVER_ABOVE} (the ragged "
             f"4x512 included); peak activation memory <= {LONG_INPUT_MEMORY[(1, 8192)]} x plain at 1x8192.", "",
             "| shape | onnxport / plain (time) | time target | onnxport / plain (memory) | memory target | met |",
             "|---|---:|---|---:|---|---|"]
    for case in cases:
        t = long_input_target(case)
        shape = f"{case['batch']}x{case['sequence']}"
        if t is None:
            lines.append(f"| {shape} | - | - | - | - | not measured |")
            continue
        memory = (f"{t['memory_ratio']:.2f} | <= {t['memory_limit']} ({_verdict(t['memory_met'], t['memory_gap'])})"
                  if "memory_ratio" in t else "- | -")
        lines.append(f"| {shape} | {t['ratio']:.2f} | <= {t['limit']} ({_verdict(t['time_met'], t['time_gap'])}) | "
                     f"{memory} | {'yes' if t['met'] else 'no (+{:.0%})'.format(t['gap'])} |")
    return lines
