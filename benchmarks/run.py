"""Speed of onnxport against every CPU anchor, in one process, on base-size random-weight models.

    python -m benchmarks.run [--families xlm-roberta,roformer] [--no-long] [--rounds 5] [--calls 3]
                             [--threads 2] [--no-int8] [--no-pipeline] [--no-traffic] [--rebuild]
    make bench            (installs benchmarks/requirements.txt first)

Per family (base geometry: hidden 768, 12 layers, 12 heads, FFN 3072; text-classification head):

  onnxport        the export directory served by ``onnxport.runtime`` (input checks included,
                  RoFormer's rotary node lowered to ONNX Runtime's fused kernel at load)
  onnxport-int8   ``onnxport quantize`` of that directory (not an anchor: a different precision)
  ort-plain       ONNX Runtime on a plain ``torch.onnx.export`` of transformers' model      (anchor)
  ort-optimizer   the same after ``onnxruntime.transformers.optimizer`` (model_type bert)   (anchor)
  optimum         Optimum's ``ORTModelForSequenceClassification`` (export=True)             (anchor;
                  XLM-R and RoFormer: Optimum refuses RoBERTa-PreLayerNorm)
  pytorch-eager   transformers' PyTorch model, ``torch.no_grad``                             (anchor)

at batch 1 x 128 and 8 x 128 (and 1 x 512 XLM-R / 1 x 1024 RoFormer unless --no-long), all
ONNX Runtime sessions and PyTorch on ``--threads`` intra-op threads. The GEMM limit (ONNX Runtime fp32
MatMul GFLOP/s on large shapes) is measured in the same run, before and after the models; the floor
of a case is its FLOPs (from the geometry) divided by that limit. Writes ``benchmarks/results/``:
``bench.md`` (tables), ``bench.json`` (every sample) and ``bench.png`` (chart). Then the pipeline
section (issue 7, ``benchmarks/pipeline_speed.py``) unless --no-pipeline, and the realistic-traffic
pipelines vs Optimum (``benchmarks/pipeline_traffic.py``, 2,000 texts of 5-250 tokens; long) unless --no-traffic.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import time
from pathlib import Path

from . import harness as h  # noqa: F401  (sets USE_TF=0 etc. before transformers is imported)
from .harness import RESULTS, Runner, interleaved, log, make_feeds, optimum_export, plain_torch_export
from .targets import (LONG_SHAPES, SHAPES, feature_extraction_target, int8_target, roformer_vs_xlmr, speed_target,
                      summary_table)

import numpy as np

FAMILIES = ("xlm-roberta", "roberta-prelayernorm", "roformer")
ANCHORS = ("ort-plain", "ort-optimizer", "optimum", "pytorch-eager")


# ----------------------------------------------------------------------------- anchor builders
def ort_optimized(plain: Path, path: Path, config) -> tuple[Path, dict]:
    from onnxruntime.transformers.optimizer import optimize_model

    stats_file = path.with_suffix(".json")
    if path.is_file() and stats_file.is_file():
        import json

        return path, json.loads(stats_file.read_text())
    optimized = optimize_model(str(plain), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size)
    optimized.save_model_to_file(str(path))
    stats = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    stats["MatMul_left"] = sum(1 for n in optimized.model.graph.node if n.op_type == "MatMul")
    h.write_json(stats_file, stats)
    return path, stats


# ----------------------------------------------------------------------------- one family
def build_artifacts(model_type: str, work: Path, with_int8: bool, layers: int = 0, anchors=ANCHORS) -> dict:
    """Phase 1: every file a family's runners need, built (or reused) one at a time, nothing kept in memory,
    so the peak of an export never stacks on loaded sessions (the machine is shared: 24 GiB for everyone)."""
    t0 = time.perf_counter()
    overrides = {"num_hidden_layers": layers} if layers else {}
    art: dict = {"checkpoint": h.build_checkpoint(model_type, work / "checkpoints" / model_type, **overrides)}
    from onnxport.configs import AutoConfig
    from onnxport.artifact.layout import model_path

    art["config"] = AutoConfig.from_pretrained(str(art["checkpoint"]))
    log(f"  checkpoint ready ({time.perf_counter() - t0:.0f}s)")
    art["onnxport"] = h.onnxport_export(art["checkpoint"], work / "onnxport" / model_type)
    gc.collect()
    log(f"  onnxport export ready ({time.perf_counter() - t0:.0f}s)")
    if with_int8:
        from onnxport.exporters.quantize import quantize

        art["int8"] = work / "onnxport-int8" / model_type
        if not (art["int8"] / "onnxport.json").is_file():
            quantize(str(art["onnxport"]), str(art["int8"]), force=True, raise_on_failure=False,
                     recipe="dynamic")  # timing only: the recipe search is int8_accuracy's subject
        gc.collect()
        log(f"  int8 ready ({time.perf_counter() - t0:.0f}s)")
    plain_path = work / "plain" / model_type / "model.onnx"
    if not plain_path.is_file():
        eager = h.hf_model(art["checkpoint"])
        plain_torch_export(eager, model_type, plain_path)
        del eager
        gc.collect()
    art["plain"] = plain_path
    log(f"  plain torch.onnx.export ready ({time.perf_counter() - t0:.0f}s)")
    if "ort-optimizer" not in anchors:
        art["ort-optimizer-skip"] = "not selected (--anchors)"
    else:
        try:
            art["ort-optimizer"], art["ort-optimizer-stats"] = ort_optimized(
                plain_path, work / "ort-optimizer" / model_type / "model.onnx", art["config"])
            log(f"  ORT transformers optimizer ready ({time.perf_counter() - t0:.0f}s): {art['ort-optimizer-stats']}")
        except Exception as err:
            art["ort-optimizer-skip"] = f"skipped: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    gc.collect()
    art["optimum"] = work / "optimum" / model_type
    art["optimum-skip"] = (optimum_export(art["checkpoint"], model_type, art["optimum"]) if "optimum" in anchors
                           else "not selected (--anchors)")
    gc.collect()
    log(f"  Optimum: {art['optimum-skip'] or 'ready'} ({time.perf_counter() - t0:.0f}s)")
    return art


def family_runners(model_type: str, work: Path, threads: int, with_int8: bool, layers: int = 0, anchors=ANCHORS):
    """Phase 2: load every runner of a family; returns (runner factories, notes, config, extras)."""
    import json

    import onnxruntime as ort
    import torch

    from onnxport.runtime import OnnxModelForSequenceClassification

    art = build_artifacts(model_type, work, with_int8, layers, anchors)
    notes: dict[str, str] = {}
    extras: dict = {}
    factories = {}
    session_kw = dict(intra_op_threads=threads, inter_op_threads=1)
    ours = OnnxModelForSequenceClassification.from_pretrained(str(art["onnxport"]), provider="cpu", **session_kw)
    factories["onnxport"] = lambda feeds, m=ours: (lambda: m(**feeds)["logits"])
    notes["onnxport"] = "onnxport.runtime on the export directory"

    if with_int8:
        q = json.loads((art["int8"] / "onnxport.json").read_text())["quantization"]
        extras["int8"] = {k: q.get(k) for k in ("recipe", "cosine", "top1_agreement", "passed", "per_channel",
                                                "reduce_range", "quantized_nodes", "fp32_bytes", "int8_bytes")}
        extras["int8"]["rows"] = q["outputs"][0]["rows"] if q["outputs"] else 0
        int8 = OnnxModelForSequenceClassification.from_pretrained(str(art["int8"]), provider="cpu", **session_kw)
        factories["onnxport-int8"] = lambda feeds, m=int8: (lambda: m(**feeds)["logits"])
        notes["onnxport-int8"] = (f"dynamic int8 (cosine {q['cosine']:.5f}, top-1 {q['top1_agreement']:.2%} "
                                  f"on {extras['int8']['rows']} rows vs fp32)")

    torch.set_num_threads(threads)
    eager = h.hf_model(art["checkpoint"])
    plain_session = h.ort_session(str(art["plain"]), threads)
    factories["ort-plain"] = lambda feeds, s=plain_session: (lambda: s.run(None, feeds)[0])
    notes["ort-plain"] = f"torch.onnx.export (opset 17, attn {eager.config._attn_implementation}) + ORT defaults"

    if "ort-optimizer" in art:
        opt_session = h.ort_session(str(art["ort-optimizer"]), threads)
        factories["ort-optimizer"] = lambda feeds, s=opt_session: (lambda: s.run(None, feeds)[0])
        notes["ort-optimizer"] = "onnxruntime.transformers.optimizer bert: " + ", ".join(
            f"{k} {v}" for k, v in art["ort-optimizer-stats"].items())
    else:
        notes["ort-optimizer"] = art["ort-optimizer-skip"]

    if art["optimum-skip"] is None and "optimum" in anchors:
        from optimum.onnxruntime import ORTModelForSequenceClassification

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        optimum = ORTModelForSequenceClassification.from_pretrained(
            str(art["optimum"]), provider="CPUExecutionProvider", session_options=options)
        factories["optimum"] = lambda feeds, m=optimum: (lambda: m(**feeds).logits)
        notes["optimum"] = "optimum-onnx ORTModelForSequenceClassification (export=True)"
    else:
        notes["optimum"] = f"skipped: {art['optimum-skip']}"
        log(f"  Optimum anchor skipped: {art['optimum-skip']}")

    def eager_call(feeds, m=eager):
        tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}

        def call():
            with torch.inference_mode():
                return m(**tensors).logits
        return call

    if "pytorch-eager" in anchors:
        factories["pytorch-eager"] = eager_call
        notes["pytorch-eager"] = f"transformers {type(eager).__name__} (attn {eager.config._attn_implementation})"
    else:
        del eager
    return factories, notes, art["config"], extras


def bench_family(model_type: str, args, limit: dict, work: Path, int8_limit: dict | None = None) -> list[dict]:
    log(f"\n== {model_type}: building models and anchors")
    factories, notes, config, extras = family_runners(model_type, work, args.threads, not args.no_int8, args.layers,
                                                      args.anchors)
    shapes = list(SHAPES) + ([LONG_SHAPES[model_type]] if not args.no_long and model_type in LONG_SHAPES else [])
    cases = []
    for batch, sequence in shapes:
        feeds = make_feeds(model_type, config, batch, sequence)
        runners = [Runner(name, factory(feeds), name in ANCHORS, notes.get(name, "")) for name, factory in factories.items()]
        # Same model everywhere: every runner's logits vs the last runner's (PyTorch eager when it runs).
        reference = np.asarray(runners[-1].call())
        diffs = {r.name: float(np.max(np.abs(np.asarray(r.call(), dtype=np.float64) - reference))) for r in runners}
        rounds, calls = args.rounds, args.calls
        if batch * sequence >= 1024:  # long cases: fewer calls, same number of rounds
            calls = max(1, calls - 1)
        log(f"  timing {batch}x{sequence}: {len(runners)} runners x {rounds} rounds x {calls} calls")
        timings = interleaved(runners, rounds, calls)
        flops = h.model_flops(config, batch, sequence)
        floor_ms = 1e3 * flops / (limit["gflops"] * 1e9)
        anchors = {r.name: timings[r.name].median_ms for r in runners if r.anchor}
        best_anchor = min(anchors, key=anchors.get)
        rows = []
        for r in runners:
            t = timings[r.name]
            rows.append({
                "runner": r.name, "anchor": r.anchor, "median_ms": t.median_ms, "p90_ms": t.p90_ms,
                "spread": t.spread, "best_round_ms": t.best_round_ms, "ratio_to_best_anchor": t.median_ms / anchors[best_anchor],
                "pct_gemm_limit": floor_ms / t.median_ms, "max_abs_diff_vs_reference": diffs[r.name],
                "samples_ms": [1e3 * s for s in t.samples], "note": r.note,
            })
            log(f"    {r.name:<15} median {t.median_ms:8.1f} ms  p90 {t.p90_ms:8.1f}  spread {t.spread:5.1%}  "
                f"{t.median_ms / anchors[best_anchor]:5.2f}x best anchor  {floor_ms / t.median_ms:5.1%} of GEMM limit")
        if "int8" in extras and int8_limit:
            floor = h.int8_floor_ms(config, batch, sequence, int8_limit, limit["gflops"])
            extras["int8_floor_ms"] = floor
            log(f"    int8 floor {floor:.1f} ms: int8 / floor "
                f"{timings['onnxport-int8'].median_ms / floor:.2f}")
        cases.append({"family": model_type, "task": h.TASK, "batch": batch, "sequence": sequence, "gflop": flops / 1e9,
                      "onnxport_gflop": h.model_flops(config, batch, sequence, last_layer_rows=1) / 1e9,
                      "floor_ms": floor_ms, "best_anchor": best_anchor, "rows": rows, "int8": extras.get("int8"),
                      "int8_floor_ms": extras.pop("int8_floor_ms", None), "reference": runners[-1].name,
                      "notes": notes})
    del factories
    gc.collect()
    return cases


FE_TASK = "feature-extraction"


def bench_feature_extraction(model_type: str, args, limit: dict, work: Path) -> list[dict]:
    """Issue 17's fp32 check: onnxport's feature-extraction export (through ``onnxport.runtime``, and as a bare
    ONNX Runtime session to separate the graph from the runtime layer) against a plain ``torch.onnx.export``
    of transformers' base model (``last_hidden_state``), the same checkpoint, timed interleaved."""
    import transformers

    from onnxport.configs import AutoConfig
    from onnxport.artifact.layout import model_path
    from onnxport.runtime import OnnxModel

    log(f"\n== {model_type}: feature-extraction, onnxport vs plain export")
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    checkpoint = h.build_checkpoint(model_type, work / f"checkpoints-{FE_TASK}" / model_type, head="Model", **overrides)
    export_dir = h.onnxport_export(checkpoint, work / f"onnxport-{FE_TASK}" / model_type, task=FE_TASK)
    plain_path = work / f"plain-{FE_TASK}" / model_type / "model.onnx"
    if not plain_path.is_file():
        eager = transformers.AutoModel.from_pretrained(str(checkpoint)).eval()
        plain_torch_export(eager, model_type, plain_path, output=h.OUTPUT_OF_TASK[FE_TASK])
        del eager
    gc.collect()
    config = AutoConfig.from_pretrained(str(checkpoint))
    ours = OnnxModel.from_pretrained(str(export_dir), provider="cpu", intra_op_threads=args.threads, inter_op_threads=1)
    bare = h.ort_session(model_path(str(export_dir)), args.threads)
    plain = h.ort_session(str(plain_path), args.threads)
    bare_inputs = {i.name for i in bare.get_inputs()}
    notes = {"onnxport": "onnxport.runtime OnnxModel on the feature-extraction export (outputs: "
                         + ", ".join(o.name for o in bare.get_outputs()) + ")",
             "onnxport-session": "the same model.onnx in a bare ONNX Runtime session (no runtime layer)",
             "ort-plain": "torch.onnx.export of transformers' AutoModel, last_hidden_state only (opset 17)"}
    cases = []
    for batch, sequence in SHAPES:
        feeds = make_feeds(model_type, config, batch, sequence)
        bare_feeds = {k: v for k, v in feeds.items() if k in bare_inputs}
        runners = [Runner("onnxport", lambda f=feeds: ours(**f)["last_hidden_state"], False, notes["onnxport"]),
                   Runner("onnxport-session", lambda f=bare_feeds: bare.run(None, f)[0], False, notes["onnxport-session"]),
                   Runner("ort-plain", lambda f=feeds: plain.run(None, f)[0], True, notes["ort-plain"])]
        reference = np.asarray(runners[-1].call())
        diffs = {r.name: float(np.max(np.abs(np.asarray(r.call(), dtype=np.float64) - reference))) for r in runners}
        log(f"  timing {batch}x{sequence}: {len(runners)} runners x {args.rounds} rounds x {args.calls} calls")
        timings = interleaved(runners, args.rounds, args.calls)
        flops = h.model_flops(config, batch, sequence) - 2 * batch * (config.hidden_size ** 2 + config.hidden_size * 2)
        floor_ms = 1e3 * flops / (limit["gflops"] * 1e9)
        plain_ms = timings["ort-plain"].median_ms
        rows = []
        for r in runners:
            t = timings[r.name]
            rows.append({"runner": r.name, "anchor": r.anchor, "median_ms": t.median_ms, "p90_ms": t.p90_ms,
                         "spread": t.spread, "best_round_ms": t.best_round_ms, "ratio_to_best_anchor": t.median_ms / plain_ms,
                         "pct_gemm_limit": floor_ms / t.median_ms, "max_abs_diff_vs_reference": diffs[r.name],
                         "samples_ms": [1e3 * s for s in t.samples], "note": r.note})
            log(f"    {r.name:<17} median {t.median_ms:8.1f} ms  spread {t.spread:5.1%}  {t.median_ms / plain_ms:5.3f}x plain")
        cases.append({"family": model_type, "task": FE_TASK, "batch": batch, "sequence": sequence, "gflop": flops / 1e9,
                      "floor_ms": floor_ms, "best_anchor": "ort-plain", "rows": rows, "reference": "ort-plain",
                      "notes": notes})
    return cases


# ----------------------------------------------------------------------------- report
def markdown(report: dict) -> str:
    lim = report["gemm_limit"]
    lines = [
        "# onnxport benchmark",
        "",
        f"Machine: {report['machine']['cpu']} ({report['machine']['cores']} cores, VNNI {report['machine']['vnni']}; "
        f"flags detected at run time: {' '.join(report['machine'].get('cpu_flags', [])) or 'none of interest'}), "
        f"{report['machine']['threads']} threads; onnxruntime {report['machine']['onnxruntime']}, "
        f"torch {report['machine']['torch']}. Load average (1, 5, 15 min) at start "
        f"{tuple(round(x, 1) for x in report['machine']['load_average_at_start'])}, at end "
        f"{tuple(round(x, 1) for x in report.get('load_average_at_end', ()))}; peak RSS "
        f"{report.get('peak_rss_gib', 0):.1f} GiB; {report.get('seconds', 0):.0f} s.",
        f"Rounds {report['rounds']} x {report['calls']} calls per runner, order alternating; spread = (max - min) of "
        "round medians / median. Only ratios within one run count (the machine drifts between runs).",
        "",
        f"GEMM limit (ONNX Runtime fp32 MatMul, best of {', '.join(lim['per_shape'])}): **{lim['gflops']:.0f} GFLOP/s** "
        f"(before {lim['before']['gflops']:.0f}, after {lim['after']['gflops']:.0f}). Floor = model FLOPs / limit.",
        "",
    ]
    int8_lim = report.get("int8_gemm_limit")
    if int8_lim:
        shapes = ", ".join(f"{k} {v:.0f}" for k, v in int8_lim["per_shape"].items())
        lines += [f"int8 GEMM limit (ONNX Runtime u8 x s8, best large square): **{int8_lim['gflops']:.0f} GOP/s** "
                  f"({int8_lim['best_shape']}; before {int8_lim['before']['gflops']:.0f}, after "
                  f"{int8_lim['after']['gflops']:.0f}), {int8_lim['gflops'] / lim['gflops']:.2f} x fp32. Per kernel and "
                  f"shape (GOP/s, the higher run): {shapes}. int8 floor = weight GEMMs over the int8 rate at their shape "
                  "+ attention products over the fp32 limit.", ""]
    if report.get("int8"):
        lines += ["int8 models: " + "; ".join(f"{family}: {json.dumps(q, default=str)}" for family, q in report["int8"].items()), ""]
    lines += [
        "Max abs diff: each runner's output vs the case's reference runner (PyTorch eager when it runs, else ort-plain).",
        "",
        "| family | task | batch x seq | GFLOP | floor ms | runner | median ms | p90 ms | spread | best round ms | x best anchor | % GEMM limit | max abs diff |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in report["cases"]:
        for row in case["rows"]:
            name = row["runner"] + (" (best anchor)" if row["runner"] == case["best_anchor"] else "")
            lines.append(
                f"| {case['family']} | {case.get('task', h.TASK)} | {case['batch']}x{case['sequence']} | {case['gflop']:.1f} | "
                f"{case['floor_ms']:.1f} | "
                f"{name} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | {row['spread']:.1%} | {row.get('best_round_ms', float('nan')):.1f} | "
                f"{row['ratio_to_best_anchor']:.2f} | {row['pct_gemm_limit']:.0%} | {row['max_abs_diff_vs_reference']:.1e} |")
    lines += ["", "## Summary", ""] + summary_table(report["cases"], report["machine"].get("vnni"))
    lines += ["", "## Runners", ""]
    seen = set()
    for case in report["cases"]:
        for name, note in case["notes"].items():
            if (case["family"], name) not in seen:
                seen.add((case["family"], name))
                lines.append(f"- {case['family']} / {name}: {note}")
    if report.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> str | None:
    if "matplotlib" in h.missing_requirements():
        return f"no chart: matplotlib is not installed ({h.INSTALL_HINT})"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = report["cases"]
    cols = 3
    rows_n = (len(cases) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(6 * cols, 3.4 * rows_n), squeeze=False)
    colors = {"onnxport": "#1f77b4", "onnxport-int8": "#17becf", "ort-plain": "#ff7f0e", "ort-optimizer": "#d62728",
              "optimum": "#9467bd", "pytorch-eager": "#7f7f7f"}
    for ax, case in zip(axes.ravel(), cases):
        names = [r["runner"] for r in case["rows"]]
        med = [r["median_ms"] for r in case["rows"]]
        p90 = [r["p90_ms"] - r["median_ms"] for r in case["rows"]]
        y = np.arange(len(names))
        ax.barh(y, med, xerr=[np.zeros(len(p90)), p90], color=[colors.get(n, "#333") for n in names])
        ax.axvline(case["floor_ms"], color="k", linestyle="--", linewidth=1)
        ax.text(case["floor_ms"], len(names) - 0.4, " floor", fontsize=8, va="bottom")
        for yi, r in zip(y, case["rows"]):
            ax.text(max(r["median_ms"], r["p90_ms"]), yi, f" {r['median_ms']:.0f} ms  {r['ratio_to_best_anchor']:.2f}x  "
                    f"{r['pct_gemm_limit']:.0%}", va="center", fontsize=8)
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(r["p90_ms"] for r in case["rows"]) * 1.6)
        ax.set_title(f"{case['family']} {case['batch']}x{case['sequence']} ({case['gflop']:.0f} GFLOP)", fontsize=10)
        ax.set_xlabel("ms (median; whisker p90)  |  x best anchor  |  % of GEMM limit", fontsize=8)
    for ax in axes.ravel()[len(cases):]:
        ax.axis("off")
    fig.suptitle(f"onnxport vs CPU anchors, {report['machine']['threads']} threads, "
                 f"GEMM limit {report['gemm_limit']['gflops']:.0f} GFLOP/s", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure_limits(args, when: str) -> tuple[dict, dict | None]:
    """The fp32 GEMM limit and (unless --no-int8) the int8 one, measured back to back."""
    log(f"GEMM limits ({when})...")
    fp32 = h.gemm_limit(args.threads)
    log(f"  fp32 {fp32['gflops']:.0f} GFLOP/s ({fp32['per_shape']})")
    if args.no_int8:
        return fp32, None
    int8 = h.int8_gemm_limit(args.threads)
    log(f"  int8 {int8['gflops']:.0f} GOP/s ({int8['best_shape']}); per shape "
        + ", ".join(f"{k} {v:.0f}" for k, v in int8["per_shape"].items()))
    return fp32, int8


def higher_of(before: dict, after: dict) -> dict:
    """The higher of two limit measurements (per shape too), both kept: the conservative floor."""
    limit = dict(before if before["gflops"] >= after["gflops"] else after)
    limit["per_shape"] = {k: max(v, after["per_shape"].get(k, 0.0)) for k, v in before["per_shape"].items()}
    limit.update(before=before, after=after)
    return limit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=None, help=f"default {','.join(FAMILIES)} (--quick: xlm-roberta)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per runner per round")
    parser.add_argument("--no-long", action="store_true", help="skip 1x512 (XLM-R) and 1x1024 (RoFormer)")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--no-feature-extraction", action="store_true",
                        help="skip the feature-extraction cases (onnxport vs the plain export, issue 17)")
    parser.add_argument("--anchors", default=",".join(ANCHORS), help="which anchors to build and time")
    parser.add_argument("--quick", action="store_true",
                        help="issue 17's rows only, base geometry: XLM-R, 1x128 and 8x128, onnxport fp32 / int8 vs "
                             "ort-plain, feature-extraction, no pipelines")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the pipeline section (issue 7)")
    parser.add_argument("--no-traffic", action="store_true",
                        help="skip the realistic-traffic pipelines vs Optimum (benchmarks/pipeline_traffic.py)")
    parser.add_argument("--work", default=str(RESULTS / "work"), help="checkpoints and exports (reused between runs)")
    parser.add_argument("--layers", type=int, default=0, help="override the 12 layers (smoke runs; use another --work)")
    parser.add_argument("--rebuild", action="store_true", help="delete --work first")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.quick:
        args.families, args.anchors = args.families or "xlm-roberta", "ort-plain"
        args.no_long = args.no_pipeline = args.no_traffic = True
    args.families = args.families or ",".join(FAMILIES)
    args.anchors = tuple(a.strip() for a in args.anchors.split(",") if a.strip())
    unknown = set(args.anchors) - set(ANCHORS)
    if unknown or not args.anchors:
        parser.error(f"--anchors: choose from {', '.join(ANCHORS)} (got {', '.join(sorted(unknown)) or 'none'})")
    out, work = Path(args.out), Path(args.work)
    if args.rebuild and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    skipped = []
    for module, what in h.missing_requirements().items():
        message = f"{module} missing: no {what}. Install the benchmark requirements: {h.INSTALL_HINT}"
        log(message)
        skipped.append(message)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    machine = h.machine_info(args.threads)
    log(f"machine: {machine}")
    started = time.time()
    before, int8_before = measure_limits(args, "before")
    cases = []
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    for model_type in families:
        cases += bench_family(model_type, args, before, work, int8_before)
        if not args.no_feature_extraction:
            cases += bench_feature_extraction(model_type, args, before, work)
    after, int8_after = measure_limits(args, "after")
    limit, int8_limit = higher_of(before, after), (higher_of(int8_before, int8_after) if int8_before else None)
    # Floors and % of limit against the higher of the two measurements (the conservative floor).
    for case in cases:
        case["floor_ms"] = 1e3 * case["gflop"] / limit["gflops"]
        for row in case["rows"]:
            row["pct_gemm_limit"] = case["floor_ms"] / row["median_ms"]
        if case.get("int8_floor_ms") and int8_limit:
            config = h.base_config(case["family"], **({"num_hidden_layers": args.layers} if args.layers else {}))
            case["int8_floor_ms"] = h.int8_floor_ms(config, case["batch"], case["sequence"], int8_limit, limit["gflops"])
        if case["task"] == h.TASK:
            case["target"], case["int8_target"] = speed_target(case), int8_target(case)
        else:
            case["target"] = feature_extraction_target(case)
    int8_models = {c["family"]: c["int8"] for c in cases if c.get("int8")}
    report = {"machine": machine, "rounds": args.rounds, "calls": args.calls, "gemm_limit": limit,
              "int8_gemm_limit": int8_limit, "int8": int8_models, "cases": cases,
              "skipped": skipped, "seconds": round(time.time() - started, 1), "load_average_at_end": os.getloadavg(),
              "peak_rss_gib": _peak_rss_gib(), "roformer_vs_xlmr": roformer_vs_xlmr(cases)}
    out.mkdir(parents=True, exist_ok=True)
    h.write_json(out / "bench.json", report)
    problem = chart(report, out / "bench.png")
    if problem:
        report["skipped"].append(problem)
    (out / "bench.md").write_text(markdown(report), encoding="utf-8")
    log("\n" + markdown(report))
    log(f"wrote {out / 'bench.md'}, {out / 'bench.json'}" + ("" if problem else f", {out / 'bench.png'}"))
    if not args.no_pipeline:
        from .pipeline_speed import main as pipeline_main

        pipeline_main(["--work", str(work), "--out", str(out), "--threads", str(args.threads),
                       "--rounds", str(args.rounds)])
    if not args.no_pipeline and not args.no_traffic:
        from .pipeline_traffic import FAMILIES as TRAFFIC_FAMILIES, main as traffic_main

        families = [f.strip() for f in args.families.split(",") if f.strip() in TRAFFIC_FAMILIES]  # Optimum's families
        if families:  # full passes of 2,000 texts: 3 rounds are plenty
            traffic_main(["--families", ",".join(families), "--work", str(work), "--out", str(out),
                          "--threads", str(args.threads), "--rounds", str(min(args.rounds, 3))])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
