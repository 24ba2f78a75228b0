"""Long inputs (issue 26, "Measured, not assumed"): latency and peak activation memory at 1x512, a ragged 4x512
batch, 1x2048 and 1x8192 on XLM-R base geometry with bge-m3's 8,194-position table, and the op profile at 2048.

    python -m benchmarks.long_inputs [--shapes 1x512,4x512,1x2048,1x8192] [--rounds 2] [--calls 3]
                                     [--long-calls 1] [--threads 2] [--no-profile] [--work DIR]

Model: a random-weight checkpoint built from a config (hidden 768, 12 layers, 12 heads, FFN 3072, vocab
250002, max_position_embeddings 8194, text-classification head; the same one ``benchmarks.export_cost``
builds as ``base-8194``). Runners, each call of each in its own fresh process:

  onnxport           the export served by ``onnxport.runtime`` with its defaults (the fused attention when
                     the runtime lowers it; RoFormer's rotary op likewise)
  onnxport-unfused   the same with ``fuse_attention=False`` (only when the loader takes that keyword)
  ort-plain          ONNX Runtime on a plain ``torch.onnx.export`` of transformers' model        (the reference)
  ort-optimizer      that export after ``onnxruntime.transformers.optimizer`` (model_type bert)

Per (shape, round) every runner starts a process that loads its session, runs one short call (the session is
built), reads its RSS, resets the peak (Linux: /proc/self/clear_refs) and then makes ``--calls`` timed calls
(``--long-calls`` at 8192, where one call takes minutes on 2 cores): the median latency, and the peak
activation memory = peak RSS - RSS after the session was built. Runners are interleaved, their order
alternating between rounds. Each figure is written with the CPU flags and the load average (``uptime``)
at the time. Verdicts: ``targets.long_input_target`` (issue 26: onnxport / plain <= 0.85 at 1x512, <= 0.7 at
1x2048 and 1x8192, never above 1.0; peak activation memory <= 0.5 x plain at 1x8192).

The op profile (``op_profile.profile``) of each graph at 1x2048 says where the time goes.

Sentence embeddings (issue 25's 512 / 2,048 / 8,192-token latency and peak memory of the
``sentence-embeddings`` task) are ``benchmarks.sentence_long``'s table.

Writes ``benchmarks/results/long_inputs.md`` and ``long_inputs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

from . import harness as h  # noqa: F401  (USE_TF=0 etc. before transformers is imported)
from .harness import RESULTS, log
from .targets import LONG_INPUT_SHAPES, long_input_table

MODEL_TYPE = "xlm-roberta"
POSITIONS = 8194  # bge-m3's table: 8,192 tokens after XLM-R's padding offset
RUNNERS = ("onnxport", "onnxport-unfused", "ort-plain", "ort-optimizer")
RAGGED = {4: (512, 384, 256, 128)}  # the ragged batch's row lengths (padded to the longest)
PROFILE_SHAPE = (1, 2048)
RESULT_PREFIX = "LONG_INPUTS_RESULT "


def checkpoint_dir(work: Path) -> Path:
    return work / "checkpoints" / f"{MODEL_TYPE}-base-{POSITIONS}"  # benchmarks.export_cost's base-8194


def artifact_paths(work: Path) -> dict[str, Path]:
    root = work / "long_inputs"
    return {"checkpoint": checkpoint_dir(work), "onnxport": root / "onnxport", "ort-plain": root / "plain" / "model.onnx",
            "ort-optimizer": root / "ort-optimizer" / "model.onnx"}


def feeds_for(batch: int, sequence: int, vocab_size: int = 250002) -> dict:
    """Random ids; a ragged batch is right-padded (pad id 1, mask 0) to its longest row."""
    import numpy as np

    feeds = h.make_feeds(MODEL_TYPE, type("C", (), {"vocab_size": vocab_size}), batch, sequence)
    for row, length in enumerate(RAGGED.get(batch, (sequence,) * batch)):
        feeds["input_ids"][row, length:] = 1
        feeds["attention_mask"][row, length:] = 0
    return {k: np.ascontiguousarray(v) for k, v in feeds.items()}


def takes_fuse_attention() -> bool:
    """Whether onnxport's runtime loader has the ``fuse_attention`` keyword (issue 26's fused attention)."""
    import inspect

    from onnxport.runtime import OnnxModelForSequenceClassification

    return "fuse_attention" in inspect.signature(OnnxModelForSequenceClassification.from_pretrained).parameters


def sentence_embeddings_runner(work: Path):
    """Issue 25's sentence-embeddings rows (512 / 2,048 / 8,192 tokens): measured by ``benchmarks.sentence_long``
    (a bge-m3-style sentence-transformers directory of this geometry, its own table), not here."""
    return None, "measured by python -m benchmarks.sentence_long (results/sentence_long.md)"


# ----------------------------------------------------------------------------- child processes
def _status_bytes(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        return int(re.search(key + r":\s+(\d+)", fh.read()).group(1)) * 1024


def child_build(work: Path) -> dict:
    """The checkpoint and the three artifacts (each reused when present)."""
    import gc

    paths = artifact_paths(work)
    h.build_checkpoint(MODEL_TYPE, paths["checkpoint"], max_position_embeddings=POSITIONS)
    if not (paths["onnxport"] / "onnxport.json").is_file():
        from onnxport.exporters import export

        # validated to 512 tokens here: the full default validation is benchmarks.export_cost's subject
        export(str(paths["checkpoint"]), str(paths["onnxport"]), task=h.TASK, force=True, validate_length=512)
        gc.collect()
    if not paths["ort-plain"].is_file():
        h.plain_torch_export(h.hf_model(paths["checkpoint"]), MODEL_TYPE, paths["ort-plain"])
        gc.collect()
    from onnxruntime.transformers.optimizer import optimize_model

    stats_file = paths["ort-optimizer"].with_suffix(".json")
    if not stats_file.is_file():
        config = h.base_config(MODEL_TYPE, max_position_embeddings=POSITIONS)
        optimized = optimize_model(str(paths["ort-plain"]), model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size)
        paths["ort-optimizer"].parent.mkdir(parents=True, exist_ok=True)
        optimized.save_model_to_file(str(paths["ort-optimizer"]))
        h.write_json(stats_file, {k: v for k, v in optimized.get_fused_operator_statistics().items() if v})
    return {"optimizer": json.loads(stats_file.read_text())}


def _runner(name: str, work: Path, threads: int):
    paths = artifact_paths(work)
    if name.startswith("onnxport"):
        from onnxport.runtime import OnnxModelForSequenceClassification

        extra = {"fuse_attention": False} if name == "onnxport-unfused" else {}
        model = OnnxModelForSequenceClassification.from_pretrained(
            str(paths["onnxport"]), provider="cpu", intra_op_threads=threads, inter_op_threads=1, **extra)
        return lambda feeds: model(**feeds)["logits"]
    session = h.ort_session(str(paths[name]), threads)
    return lambda feeds: session.run(None, feeds)[0]


def child_time(name: str, work: Path, batch: int, sequence: int, calls: int, threads: int) -> dict:
    import gc

    import numpy as np

    run = _runner(name, work, threads)
    run(feeds_for(1, 16))  # the session is built and has run once
    feeds = feeds_for(batch, sequence)
    gc.collect()
    built = _status_bytes("VmRSS")
    measurable = os.access("/proc/self/clear_refs", os.W_OK)
    if measurable:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # peak RSS := RSS now
    samples, out = [], None
    for _ in range(calls):
        start = time.perf_counter()
        out = run(feeds)
        samples.append(time.perf_counter() - start)
    peak = _status_bytes("VmHWM") if measurable else None
    return {"runner": name, "samples_ms": [1e3 * s for s in samples], "rss_built_bytes": built,
            "peak_activation_bytes": None if peak is None else peak - built,
            "logits": np.asarray(out, dtype=np.float64).tolist(), "load_average": os.getloadavg()}


def child_profile(name: str, work: Path, threads: int, calls: int) -> dict:
    from .op_profile import onnxport_graph, profile

    paths = artifact_paths(work)
    model = onnxport_graph(paths["onnxport"]) if name == "onnxport" else str(paths[name])
    result = profile(model, feeds_for(*PROFILE_SHAPE), threads, calls)
    result["load_average"] = os.getloadavg()
    return result


def run_child(work: Path, *args: str) -> dict:
    """``python -m benchmarks.long_inputs --child ...`` in a fresh process; its result, or the error."""
    return h.run_child_process("long_inputs", RESULT_PREFIX, work, *args)


# ----------------------------------------------------------------------------- report
def summarize(results: list[dict]) -> dict:
    """A runner's rounds -> median over every timed call, the largest peak, and each round's load average."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return {"error": results[-1]["error"] if results else "not run"}
    samples = [s for r in ok for s in r["samples_ms"]]
    peaks = [r["peak_activation_bytes"] for r in ok if r["peak_activation_bytes"] is not None]
    return {"median_ms": statistics.median(samples), "samples_ms": samples,
            "round_medians_ms": [statistics.median(r["samples_ms"]) for r in ok],
            "peak_activation_bytes": max(peaks) if peaks else None, "rss_built_bytes": ok[-1]["rss_built_bytes"],
            "load_averages": [r["load_average"] for r in ok], "logits": ok[-1]["logits"],
            "errors": [r["error"] for r in results if "error" in r]}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Long inputs: latency and peak activation memory (issue 26)", "",
             f"Model: XLM-R base geometry with random weights from a config (hidden 768, 12 layers, 12 heads, FFN "
             f"3072, vocab 250002, {POSITIONS} positions, text-classification head). Machine: {m['cpu']} "
             f"({m['cores']} cores; flags {' '.join(m.get('cpu_flags', [])) or 'none of interest'}), "
             f"{report['threads']} threads, onnxruntime {m['onnxruntime']}, torch {m['torch']}; shared, so only ratios "
             f"within this run count. Each call in a process of its own runner, runners interleaved, "
             f"{report['rounds']} rounds. Peak activation memory: peak RSS - RSS once the session is built and has "
             "run once. Load average (1, 5, 15 min) of every round is in long_inputs.json; start "
             f"{tuple(round(x, 1) for x in m['load_average_at_start'])}, end "
             f"{tuple(round(x, 1) for x in report['load_average_at_end'])}.", "",
             "| shape | runner | median ms | round medians ms | peak activation MiB | x plain (time) | x plain (memory) "
             "| max abs diff vs plain | load average (1 min) per round |",
             "|---|---|---:|---|---:|---:|---:|---:|---|"]
    for case in report["cases"]:
        rows = {r["runner"]: r for r in case["rows"]}
        plain = rows.get("ort-plain", {})
        for r in case["rows"]:
            shape = f"{case['batch']}x{case['sequence']}" + (" ragged" if case["batch"] in RAGGED else "")
            if "error" in r:
                lines.append(f"| {shape} | {r['runner']} | failed: {r['error']} | | | | | | |")
                continue
            peak = r["peak_activation_bytes"]
            time_ratio = f"{r['median_ms'] / plain['median_ms']:.2f}" if plain.get("median_ms") else "-"
            mem_ratio = (f"{peak / plain['peak_activation_bytes']:.2f}"
                         if peak is not None and plain.get("peak_activation_bytes") else "-")
            diff = "-"
            if plain.get("logits") is not None:
                import numpy as np

                diff = f"{float(np.max(np.abs(np.asarray(r['logits']) - np.asarray(plain['logits'])))):.1e}"
            loads = ", ".join(f"{la[0]:.1f}" for la in r["load_averages"])
            lines.append(f"| {shape} | {r['runner']} | {r['median_ms']:.0f} | "
                         f"{', '.join(f'{x:.0f}' for x in r['round_medians_ms'])} | "
                         f"{'-' if peak is None else f'{peak / 2**20:.0f}'} | {time_ratio} | {mem_ratio} | {diff} | "
                         f"{loads} |")
    lines += ["", "## Targets", ""] + long_input_table(report["cases"])
    if report.get("profile"):
        lines += ["", f"## Op profile at {PROFILE_SHAPE[0]}x{PROFILE_SHAPE[1]} (ms per call, kernel time)", "",
                  "| graph | total ms | GEMM ms | GEMM share | operators over 3% of the total |", "|---|---:|---:|---:|---|"]
        for name, p in report["profile"].items():
            if "error" in p:
                lines.append(f"| {name} | failed: {p['error']} | | | |")
                continue
            ops = ", ".join(f"{op} {ms:.0f}" for op, ms in p["per_op_ms"].items() if ms >= 0.03 * p["total_ms"])
            lines.append(f"| {name} | {p['total_ms']:.0f} | {p['gemm_ms']:.0f} | {p['gemm_share']:.0%} | {ops} |")
    measured = {r["runner"] for case in report["cases"] for r in case["rows"]}
    lines += ["", "## Runners", ""] + [f"- {k}: {v}" for k, v in report["notes"].items() if k in measured]
    if report.get("skipped"):
        lines += ["", "Not measured: " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_inputs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(f"{b}x{s}" for b, s in LONG_INPUT_SHAPES))
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per process (shapes below 8192 tokens)")
    parser.add_argument("--long-calls", type=int, default=1, help="timed calls per process at 8192 tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-profile", action="store_true", help="skip the op profile at 1x2048")
    parser.add_argument("--profile-calls", type=int, default=2)
    parser.add_argument("--work", default=str(RESULTS / "work"))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = Path(args.work)

    if args.child:
        kind, *rest = args.child
        if kind == "build":
            result = child_build(work)
        elif kind == "time":
            name, batch, sequence, calls = rest[0], int(rest[1]), int(rest[2]), int(rest[3])
            result = child_time(name, work, batch, sequence, calls, args.threads)
        else:
            result = child_profile(rest[0], work, args.threads, args.profile_calls)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",") if s.strip()]
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    unknown = set(runners) - set(RUNNERS)
    if unknown:
        parser.error(f"unknown runner(s) {', '.join(sorted(unknown))}; choose from {', '.join(RUNNERS)}")
    machine = h.machine_info(args.threads)
    started = time.time()
    skipped = []
    if "onnxport-unfused" in runners and not takes_fuse_attention():
        runners.remove("onnxport-unfused")
        skipped.append("onnxport-unfused: the runtime loader has no fuse_attention keyword (the graph is served "
                       "as written by default)")
    _, why = sentence_embeddings_runner(work)
    skipped.append(f"sentence-embeddings (issue 25) at 512 / 2048 / 8192: {why}")
    log(f"machine: {machine}\nbuilding the checkpoint and artifacts in {work}")
    built = run_child(work, "build")
    if "error" in built:
        return 1
    notes = {"onnxport": "onnxport.runtime OnnxModelForSequenceClassification, defaults"
                         + ("" if takes_fuse_attention() else " (this runtime has no fused attention)"),
             "onnxport-unfused": "the same, fuse_attention=False",
             "ort-plain": "torch.onnx.export of transformers' model (opset 17) + ONNX Runtime defaults",
             "ort-optimizer": "onnxruntime.transformers.optimizer (bert) on that export: "
                              + ", ".join(f"{k} {v}" for k, v in built["optimizer"].items())}
    cases = []
    for batch, sequence in shapes:
        calls = args.long_calls if batch * sequence >= 8192 else args.calls
        results: dict[str, list[dict]] = {name: [] for name in runners}
        for round_index in range(args.rounds):
            order = runners if round_index % 2 == 0 else runners[::-1]
            for name in order:
                log(f"{batch}x{sequence} round {round_index + 1}: {name} ({calls} call(s)); load {os.getloadavg()[0]:.1f}")
                result = run_child(work, "time", name, str(batch), str(sequence), str(calls))
                results[name].append(result)
                if "error" not in result:
                    log(f"    {statistics.median(result['samples_ms']):.0f} ms, peak activation "
                        f"{(result['peak_activation_bytes'] or 0) / 2**20:.0f} MiB")
        cases.append({"batch": batch, "sequence": sequence,
                      "rows": [{"runner": name, **summarize(results[name])} for name in runners]})
    profile = {}
    if not args.no_profile:
        for name in [r for r in runners if r != "onnxport-unfused"]:
            log(f"op profile {PROFILE_SHAPE}: {name}")
            profile[name] = run_child(work, "profile", name)
    report = {"machine": machine, "threads": args.threads, "rounds": args.rounds, "cases": cases,
              "profile": profile, "notes": notes, "skipped": skipped, "seconds": round(time.time() - started, 1),
              "load_average_at_end": os.getloadavg()}
    out = Path(args.out)
    h.write_json(out / "long_inputs.json", report)
    text = markdown(report)
    (out / "long_inputs.md").write_text(text, encoding="utf-8")
    log("\n" + text)
    log(f"wrote {out / 'long_inputs.md'}, {out / 'long_inputs.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
