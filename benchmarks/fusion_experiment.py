"""Fusion experiment (issue 9, stretch): ONNX Runtime's transformers optimizer on onnxport's own exports.

    python -m benchmarks.fusion_experiment [--families xlm-roberta,roberta-prelayernorm,roformer]

For each family's base-size export (from ``benchmarks.run``'s work directory, built if missing):

1. ``onnxruntime.transformers.optimizer.optimize_model(model_type="bert")`` with exact options only
   (no Gelu approximation: BiasGelu keeps erf), RoFormer's rotary function nodes left in place;
2. validation BEFORE anything is written: the fused graph vs the native onnxport PyTorch model on
   several shapes with padded rows, max abs diff <= 1e-4 on every output, else the result is dropped;
3. timing, interleaved in one process: onnxport (unfused export, onnxport.runtime), onnxport-fused
   (the fused directory through onnxport.runtime) and ort-plain (the plain torch.onnx.export anchor,
   reused from ``benchmarks.run``), at 1 x 128 and 8 x 128.

Writes ``fusion.md`` / ``fusion.json`` in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from . import harness as h
from .harness import RESULTS, Runner, interleaved, log

import numpy as np

FAMILIES = ("xlm-roberta", "roberta-prelayernorm", "roformer")
VALIDATION_SHAPES = ((1, 7), (2, 33), (3, 128), (4, 64))
ATOL = 1e-4


def fuse(export_dir: Path, fused_dir: Path, checkpoint: Path, threads: int) -> dict:
    """Optimize, validate against the native model, then (only if within ATOL) write the fused directory."""
    import torch
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from onnxport import checkpoints
    from onnxport.configs import AutoConfig
    from onnxport.exporters import load_spec
    from onnxport.exporters.io_spec import make_inputs
    from onnxport.exporters.rotary_op import lower_to_contrib
    from onnxport.families import family_of
    from onnxport.reference_models.pt import model_class

    import logging

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    config = AutoConfig.from_pretrained(str(export_dir))
    spec = load_spec(str(export_dir))
    options = FusionOptions("bert")
    options.enable_gelu_approximation = False  # exact erf Gelu only
    optimized = optimize_model(str(export_dir / "model.onnx"), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, optimization_options=options)
    stats = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    stats["MatMul_left"] = sum(1 for n in optimized.model.graph.node if n.op_type == "MatMul")
    model = optimized.model
    # Run it as the runtime will (rotary lowered to the contrib kernel when present).
    runnable = lower_to_contrib(model) if any(n.domain == "onnxport" for n in model.graph.node) else model
    session = h.ort_session(runnable.SerializeToString(), threads)

    native = model_class(family_of(config).model_type, spec.head)(config)
    native.load_state_dict_numpy(checkpoints.load_state_dict(str(h.ROOT / checkpoint)))
    native.eval()
    worst = 0.0
    rows = []
    for i, (batch, sequence) in enumerate(VALIDATION_SHAPES):
        feeds = make_inputs(spec, batch, sequence, seed=50 + i)
        got = dict(zip(spec.output_names, session.run(spec.output_names, feeds)))
        with torch.no_grad():
            out = native(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        for name in spec.output_names:
            diff = float(np.max(np.abs(getattr(out, name).numpy().astype(np.float64) - got[name])))
            rows.append({"shape": [batch, sequence], "output": name, "max_abs_diff": diff})
            worst = max(worst, diff)
    result = {"stats": stats, "validation": rows, "max_abs_diff": worst, "passed": worst <= ATOL}
    if not result["passed"]:
        log(f"  fused graph differs from the native model by {worst:.2e} > {ATOL}: not written")
        return result
    if fused_dir.exists():
        shutil.rmtree(fused_dir)
    shutil.copytree(export_dir, fused_dir)
    optimized.save_model_to_file(str(fused_dir / "model.onnx"))
    meta = json.loads((fused_dir / "onnxport.json").read_text())
    meta["fusion"] = {"optimizer": "onnxruntime.transformers bert", "stats": stats, "max_abs_diff": worst}
    (fused_dir / "onnxport.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fusion_experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--work", default=str(RESULTS / "work"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    import torch

    from onnxport.runtime import OnnxModelForSequenceClassification

    from .run import make_feeds

    torch.set_num_threads(args.threads)
    work, out = Path(args.work), Path(args.out)
    report = []
    for model_type in [f.strip() for f in args.families.split(",") if f.strip()]:
        log(f"\n== fusion: {model_type}")
        checkpoint = h.build_checkpoint(model_type, work / "checkpoints" / model_type)
        export_dir = h.onnxport_export(checkpoint, work / "onnxport" / model_type)
        fused_dir = work / "onnxport-fused" / model_type
        result = fuse(export_dir, fused_dir, checkpoint, args.threads)
        log(f"  fused: {result['stats']}; max |diff| vs native {result['max_abs_diff']:.2e} "
            f"({'passed' if result['passed'] else 'FAILED'})")
        entry = {"family": model_type, **result, "timings": []}
        if result["passed"]:
            kw = dict(provider="cpu", intra_op_threads=args.threads, inter_op_threads=1)
            plain_path = work / "plain" / model_type / "model.onnx"
            models = {"onnxport": OnnxModelForSequenceClassification.from_pretrained(str(export_dir), **kw),
                      "onnxport-fused": OnnxModelForSequenceClassification.from_pretrained(str(fused_dir), **kw)}
            plain = h.ort_session(str(plain_path), args.threads) if plain_path.is_file() else None
            for batch, sequence in ((1, 128), (8, 128)):
                feeds = make_feeds(model_type, models["onnxport"].config, batch, sequence)
                runners = [Runner(n, (lambda m=m, f=feeds: m(**f)), False) for n, m in models.items()]
                if plain is not None:
                    runners.append(Runner("ort-plain", lambda s=plain, f=feeds: s.run(None, f), True))
                timings = interleaved(runners, args.rounds, args.calls)
                base = timings["onnxport"].median_ms
                row = {"batch": batch, "sequence": sequence,
                       **{n: {"median_ms": t.median_ms, "p90_ms": t.p90_ms, "spread": t.spread} for n, t in timings.items()}}
                row["fused_vs_unfused"] = timings["onnxport-fused"].median_ms / base
                if plain is not None:
                    row["fused_vs_plain"] = timings["onnxport-fused"].median_ms / timings["ort-plain"].median_ms
                entry["timings"].append(row)
                log(f"  {batch}x{sequence}: " + ", ".join(f"{n} {t.median_ms:.1f} ms" for n, t in timings.items())
                    + f" -> fused/unfused {row['fused_vs_unfused']:.2f}")
            del models, plain
        report.append(entry)
    lines = ["# Fusion experiment: onnxruntime.transformers optimizer (bert, exact Gelu) on onnxport exports", "",
             f"Validated against the native onnxport PyTorch model on shapes {list(VALIDATION_SHAPES)} (padded rows) "
             f"before writing, atol {ATOL}. {args.threads} threads, {args.rounds} rounds x {args.calls} calls, interleaved.",
             "", "| family | fused ops | max abs diff vs native | shape | onnxport ms | fused ms | ort-plain ms | fused / unfused | fused / plain |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for e in report:
        stats = ", ".join(f"{k} {v}" for k, v in e["stats"].items())
        if not e["timings"]:
            lines.append(f"| {e['family']} | {stats} | {e['max_abs_diff']:.1e} | - | - | - | - | not written | - |")
        for t in e["timings"]:
            plain = t.get("ort-plain", {}).get("median_ms")
            lines.append(f"| {e['family']} | {stats} | {e['max_abs_diff']:.1e} | {t['batch']}x{t['sequence']} | "
                         f"{t['onnxport']['median_ms']:.1f} | {t['onnxport-fused']['median_ms']:.1f} | "
                         f"{plain if plain is None else f'{plain:.1f}'} | {t['fused_vs_unfused']:.2f} | "
                         f"{t.get('fused_vs_plain', float('nan')):.2f} |")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "fusion.md").write_text(text, encoding="utf-8")
    h.write_json(out / "fusion.json", report)
    log("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
