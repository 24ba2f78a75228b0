"""Export cost: wall time and peak memory of ``onnxport export`` on XLM-R geometries, against a plain
``torch.onnx.export`` of transformers' model on the same checkpoint.

    python -m benchmarks.export_cost [--sizes base,large,base-8194] [--frameworks pt[,tf,flax]] [--no-plain] [--keep]

Geometries (random weights from a config, text-classification head; no hub):

  base    hidden 768, 12 layers, 12 heads, FFN 3072, vocab 250002  (278 M parameters, 1.1 GB fp32)
  large   hidden 1024, 24 layers, 16 heads, FFN 4096, vocab 250002 (560 M parameters, 2.2 GB fp32:
          the artifact is onnx/model.onnx + onnx/model.onnx_data)
  base-8194   base with bge-m3's 8,194-position table: the default validation's longest case is 8,192
              tokens (issue 26: the validation plan runs it at batch 1, PyTorch's attention in chunks of
              query rows; target: peak below 8 GiB)
  large-8194  large with the 8,194-position table (bge-m3's own geometry; not in the default sizes)

Every export runs in a fresh process (the peak of one never hides in another's) and reports its own
``ru_maxrss``: the whole process, imports and validation (ONNX Runtime loading the artifact) included.
The target: the PyTorch export of base peaks below 2.5 GiB. TF and Flax (``--frameworks pt,tf,flax``)
are measured on base only and reported with no target.
Writes ``benchmarks/results/export_cost.md`` and ``export_cost.json``; checkpoints are cached in
``benchmarks/results/work/checkpoints`` (base is the one ``benchmarks.run`` uses), exports go to
``work/export_cost`` and are deleted after measuring unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from . import harness as h  # noqa: F401  (USE_TF=0 etc. before transformers is imported)
from .harness import RESULTS, log

MODEL_TYPE = "xlm-roberta"
SIZES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
SIZES["base-8194"] = dict(SIZES["base"], max_position_embeddings=8194)  # bge-m3's position table
SIZES["large-8194"] = dict(SIZES["large"], max_position_embeddings=8194)
FRAMEWORKS = ("pt", "tf", "flax")
TARGET_GIB = {("base", "pt"): 2.5, ("base-8194", "pt"): 8.0}
RESULT_PREFIX = "EXPORT_COST_RESULT "


def checkpoint_dir(work: Path, size: str) -> Path:
    # Base is the geometry benchmarks.run builds: share its checkpoint.
    return work / "checkpoints" / (MODEL_TYPE if size == "base" else f"{MODEL_TYPE}-{size}")


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _files(directory: Path) -> dict[str, int]:
    """Relative path -> bytes of every file (an onnxport export keeps its graph in onnx/)."""
    return {p.relative_to(directory).as_posix(): p.stat().st_size for p in sorted(directory.rglob("*"))
            if p.is_file()} if directory.is_dir() else {}


# ----------------------------------------------------------------------------- child processes
def child_build(size: str, work: Path) -> dict:
    from onnxport.checkpoints import lazy_state_dict

    directory = h.build_checkpoint(MODEL_TYPE, checkpoint_dir(work, size), **SIZES[size])
    tensors = lazy_state_dict(str(directory)).values()
    return {"checkpoint": str(directory), "parameters": sum(math.prod(t.shape) for t in tensors),
            "weight_bytes": sum(t.length for t in tensors)}


def child_onnxport(checkpoint: str, out: str, framework: str) -> dict:
    from onnxport.exporters import export

    start = time.perf_counter()
    report = export(checkpoint, out, framework=framework, task=h.TASK, force=True)
    seconds = time.perf_counter() - start
    plan = report.validation.plan
    return {"seconds": seconds, "stages": report.seconds, "peak_rss_gib": _peak_rss_gib(),
            "validation_passed": report.validation.passed, "max_abs_diff": report.max_abs_diff,
            "validated_length": report.validation.longest_sequence,
            "plan": None if plan is None else plan.describe(), "files": _files(Path(out))}


def child_plain(checkpoint: str, out: str) -> dict:
    """transformers' model loaded from the checkpoint, then torch.onnx.export (benchmarks.run's anchor)."""
    start = time.perf_counter()
    path = Path(out) / "model.onnx"
    if path.parent.exists():
        shutil.rmtree(path.parent)
    h.plain_torch_export(h.hf_model(Path(checkpoint)), MODEL_TYPE, path)
    seconds = time.perf_counter() - start
    files = _files(path.parent)  # > 2 GB: torch writes one file per weight
    return {"seconds": seconds, "peak_rss_gib": _peak_rss_gib(), "file_count": len(files), "bytes": sum(files.values())}


def run_child(work: Path, *args: str) -> dict:
    """``python -m benchmarks.export_cost --child ...`` in a fresh process; its result, or the error."""
    return h.run_child_process("export_cost", RESULT_PREFIX, work, *args)


# ----------------------------------------------------------------------------- report
def _gib(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


def markdown(report: dict) -> str:
    lines = [
        "# Export cost: time and peak RSS of `onnxport export` (XLM-R geometries)",
        "",
        f"Each export in a fresh process; peak RSS is its `ru_maxrss` (imports, conversion, writing, the ONNX checker "
        f"and validation on ONNX Runtime included). Reference: transformers' model + a plain `torch.onnx.export` "
        f"(opset 17, constant folding) of the same checkpoint, also in its own process, same run. "
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, torch {report['machine']['torch']}, "
        f"onnxruntime {report['machine']['onnxruntime']}; shared, so seconds drift between runs.",
        "",
        "| geometry | framework | parameters | weight bytes | export s | peak RSS GiB | validated to (tokens) "
        "| plain torch.onnx.export peak RSS GiB (s) | target | result | artifact |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for row in report["rows"]:
        ours, plain = row["onnxport"], row.get("plain") or {}
        target = row.get("target_gib")
        if "error" in ours:
            result, seconds, peak = f"failed: {ours['error']}", "-", None
        else:
            seconds, peak = f"{ours['seconds']:.0f}", ours["peak_rss_gib"]
            valid = "validated" if ours["validation_passed"] else "VALIDATION FAILED"
            result = valid if target is None else ("pass" if peak < target else "FAIL") + f", {valid}"
        reference = "-"
        if plain:
            reference = f"failed: {plain['error']}" if "error" in plain else \
                f"{plain['peak_rss_gib']:.2f} ({plain['seconds']:.0f} s)"
        files = ", ".join(f"{name} {_size(size)}" for name, size in (ours.get("files") or {}).items()
                          if name.split("/")[-1].startswith("model.onnx"))
        cells = [row["size"], row["framework"], f"{row['parameters'] / 1e6:.0f} M", _size(row["weight_bytes"]),
                 seconds, _gib(peak), str(ours.get("validated_length") or "-"), reference, f"< {target:.1f} GiB" if target else "-", result, files]
        lines.append("| " + " | ".join(cells) + " |")
    plans = [f"- {row['size']} / {row['framework']}: " + row["onnxport"]["plan"].replace("\n", "\n  ")
             for row in report["rows"] if row["onnxport"].get("plan")]
    if plans:
        lines += ["", "Validation plans (what each export validated, in which form; estimates are the plan's):", ""]
        lines += plans
    lines += ["", f"Total {report['seconds']:.0f}s. Load average (1, 5, 15 min) at start "
              f"{tuple(round(x, 1) for x in report['machine']['load_average_at_start'])}, at end "
              f"{tuple(round(x, 1) for x in report.get('load_average_at_end', ()))}; CPU flags "
              f"{' '.join(report['machine'].get('cpu_flags', []))}. Random-weight checkpoints built from configs."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="base,large,base-8194")
    parser.add_argument("--frameworks", default="pt", help=f"comma-separated, of {', '.join(FRAMEWORKS)}")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain torch.onnx.export reference")
    parser.add_argument("--keep", action="store_true", help="keep the exports in work/export_cost")
    parser.add_argument("--work", default=str(RESULTS / "work"))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = Path(args.work)

    if args.child:  # one measured step, in this fresh process
        kind, *rest = args.child
        result = {"build": lambda: child_build(rest[0], work),
                  "onnxport": lambda: child_onnxport(*rest),
                  "plain": lambda: child_plain(*rest)}[kind]()
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = sorted(set(sizes) - set(SIZES)) + sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown:
        parser.error(f"unknown size or framework: {', '.join(unknown)}")
    started = time.time()
    machine = h.machine_info(threads=os.cpu_count() or 1)  # load average at the start
    rows = []
    for size in sizes:
        log(f"{size}: checkpoint")
        built = run_child(work, "build", size)
        if "error" in built:
            return 1
        log(f"  {built['parameters'] / 1e6:.0f} M parameters, {built['weight_bytes'] / 1e9:.2f} GB")
        plain = None
        if "pt" in frameworks and not args.no_plain:
            log(f"{size}: plain torch.onnx.export")
            plain_dir = work / "export_cost" / f"{size}-plain"
            plain = run_child(work, "plain", built["checkpoint"], str(plain_dir))
            log(f"  {plain}")
            if not args.keep:
                shutil.rmtree(plain_dir, ignore_errors=True)
        for framework in frameworks if size == "base" else [f for f in frameworks if f == "pt"]:
            log(f"{size}: onnxport export --framework {framework}")
            out = work / "export_cost" / f"{size}-{framework}"
            ours = run_child(work, "onnxport", built["checkpoint"], str(out), framework)
            log(f"  {ours}")
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
            rows.append({"size": size, "framework": framework, "geometry": SIZES[size], **built,
                         "target_gib": TARGET_GIB.get((size, framework)), "onnxport": ours,
                         "plain": plain if framework == "pt" else None})
    report = {"machine": machine, "rows": rows, "seconds": round(time.time() - started, 1),
              "load_average_at_end": os.getloadavg()}
    out_dir = Path(args.out)
    h.write_json(out_dir / "export_cost.json", report)
    text = markdown(report)
    (out_dir / "export_cost.md").write_text(text, encoding="utf-8")
    log("\n" + text)
    log(f"wrote {out_dir / 'export_cost.md'}, {out_dir / 'export_cost.json'}")
    failed = [r for r in rows if "error" in r["onnxport"]
              or (r["target_gib"] and r["onnxport"]["peak_rss_gib"] >= r["target_gib"])]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
