"""Where the time goes: ONNX Runtime's per-operator profile of onnxport and of the plain-export anchor.

    python -m benchmarks.op_profile [--families xlm-roberta,roberta-prelayernorm,roformer]
                                    [--shapes 1x128,8x128,...] [--calls 10] [--threads 2]

Shapes default to ``benchmarks.run``'s: 1x128, 8x128 and the family's long case (1x512 XLM-R, 1x1024 RoFormer).
Uses ``benchmarks.run``'s work directory (models built there if missing). For each family and shape, both
graphs run with ONNX Runtime's profiler on (onnxport's export as ``onnxport.runtime`` loads it, RoFormer's
rotary nodes lowered to the fused kernel; the anchor as ``benchmarks.run`` runs it) and the kernel times
are summed per operator type. Reported:

* GEMM ms: the matrix-product kernels (MatMul, FusedMatMul, Gemm, FusedGemm, and ORT's Attention, which
  is mostly its QKV product) and the GFLOP/s they reach on the model's own shapes (FLOPs of what each graph
  computes: onnxport's text-classification graph runs its last layer for the first token only);
* GEMM share: GEMM ms over all kernel time;
* bound: onnxport's GEMM ms over the anchor's total — the ratio onnxport would reach against that anchor
  if every non-GEMM operator cost nothing and the matrix products ran as fast as ORT's fp32 MatMul runs
  them. A speed target below this bound needs a faster GEMM than ONNX Runtime's, not a better graph.

Shares come from one profiled session at a time (no interleaving needed: they are ratios within a run).
Writes ``op_profile.md`` / ``op_profile.json`` in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

from . import harness as h
from .harness import RESULTS, log

GEMM_OPS = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "Attention")


def profile(model: str | bytes, feeds: dict, threads: int, calls: int) -> dict:
    """Per-operator kernel milliseconds per call, from ONNX Runtime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        feeds = {k: v for k, v in feeds.items() if k in names}
        warmup = 3
        for _ in range(warmup + calls):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    # Only the timed calls: kernel events that start after the last warm-up run ended.
    start = runs[warmup - 1]["ts"] + runs[warmup - 1]["dur"] if len(runs) > warmup else 0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            per_op[e["args"]["op_name"]] += e["dur"]
    per_call = {op: us / calls / 1e3 for op, us in per_op.most_common()}
    total = sum(per_call.values())
    gemm = sum(ms for op, ms in per_call.items() if op in GEMM_OPS)
    return {"total_ms": total, "gemm_ms": gemm, "gemm_share": gemm / total if total else 0.0, "per_op_ms": per_call}


def onnxport_graph(export_dir: Path) -> str | bytes:
    """The graph onnxport.runtime hands to ONNX Runtime on CPU: its custom nodes (rotary, attention) lowered to
    the fused kernels (``attention_op.lower_custom_ops``, the runtime's own rewrite)."""
    import onnx

    from onnxport.artifact import attention_op, rotary_op
    from onnxport.artifact.layout import model_path

    path = model_path(str(export_dir))
    model = onnx.load(path)
    if not (rotary_op.rotary_nodes(model) or attention_op.attention_nodes(model)):
        return path
    return attention_op.lower_custom_ops(model).SerializeToString()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.op_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="xlm-roberta,roberta-prelayernorm,roformer")
    parser.add_argument("--shapes", default="", help="e.g. 1x128,8x128 (default: benchmarks.run's shapes per family)")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(RESULTS / "work"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    from .run import build_artifacts
    from .targets import LONG_SHAPES, SHAPES

    chosen = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",") if s.strip()]
    work, out = Path(args.work), Path(args.out)
    limit = h.gemm_limit(args.threads)["gflops"]
    log(f"GEMM limit {limit:.0f} GFLOP/s")
    report = []
    for model_type in [f.strip() for f in args.families.split(",") if f.strip()]:
        log(f"\n== op profile: {model_type}")
        art = build_artifacts(model_type, work, with_int8=False)
        graphs = {"onnxport": onnxport_graph(art["onnxport"]), "ort-plain": str(art["plain"])}
        shapes = chosen or list(SHAPES) + ([LONG_SHAPES[model_type]] if model_type in LONG_SHAPES else [])
        for batch, sequence in shapes:
            feeds = h.make_feeds(model_type, art["config"], batch, sequence)
            # What each graph computes: onnxport's text-classification graph runs its last layer for the
            # first token only; the anchor runs the full model.
            gflops = {"onnxport": h.model_flops(art["config"], batch, sequence, last_layer_rows=1) / 1e9,
                      "ort-plain": h.model_flops(art["config"], batch, sequence) / 1e9}
            entry = {"family": model_type, "batch": batch, "sequence": sequence, "gflop": gflops["ort-plain"],
                     "onnxport_gflop": gflops["onnxport"]}
            for name, graph in graphs.items():
                p = profile(graph, feeds, args.threads, args.calls)
                p["gemm_gflops"] = gflops[name] / (p["gemm_ms"] / 1e3) if p["gemm_ms"] else 0.0
                p["gemm_pct_limit"] = p["gemm_gflops"] / limit
                entry[name] = p
                log(f"  {batch}x{sequence} {name:<9} kernels {p['total_ms']:7.1f} ms, GEMM {p['gemm_ms']:7.1f} ms "
                    f"({p['gemm_share']:.0%}, {p['gemm_gflops']:.0f} GFLOP/s); top: "
                    + ", ".join(f"{op} {ms:.1f}" for op, ms in list(p["per_op_ms"].items())[:6]))
            entry["bound"] = entry["onnxport"]["gemm_ms"] / entry["ort-plain"]["total_ms"]
            report.append(entry)
    lines = ["# Operator profile: onnxport vs ORT on a plain torch.onnx.export", "",
             f"ONNX Runtime profiler, {args.threads} threads, {args.calls} calls after 3 warm-up calls; kernel time "
             f"per call. GEMM limit measured in this run: {limit:.0f} GFLOP/s (ONNX Runtime fp32 MatMul, large shapes). "
             "GEMM = MatMul, FusedMatMul, Gemm, FusedGemm, Attention. Bound = onnxport's GEMM time / the "
             "anchor's total: the best onnxport / anchor ratio reachable with ONNX Runtime's fp32 GEMM.", "",
             "| family | batch x seq | runner | kernels ms | GEMM ms | GEMM share | GEMM GFLOP/s | GEMM % of limit | other ops (ms) | bound |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for e in report:
        for name in ("onnxport", "ort-plain"):
            p = e[name]
            others = ", ".join(f"{op} {ms:.1f}" for op, ms in p["per_op_ms"].items() if op not in GEMM_OPS and ms >= 0.05 * (p["total_ms"] - p["gemm_ms"]))
            lines.append(f"| {e['family']} | {e['batch']}x{e['sequence']} | {name} | {p['total_ms']:.1f} | {p['gemm_ms']:.1f} | "
                         f"{p['gemm_share']:.0%} | {p['gemm_gflops']:.0f} | {p['gemm_pct_limit']:.0%} | {others} | "
                         + (f"{e['bound']:.2f} |" if name == "onnxport" else "- |"))
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "op_profile.md").write_text(text, encoding="utf-8")
    h.write_json(out / "op_profile.json", {"gemm_limit_gflops": limit, "cases": report})
    log("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
