"""int8 accuracy on small masked-LMs trained on real data (issues 17 and 27): the default search, and each recipe.

    python -m benchmarks.int8_accuracy [--models suite,protein,code,sentiment] [--recipes base|all|none]
                                       [--texts 384] [--runs 20] [--threads 2]

Models (each built once and cached under ``~/.cache/onnxport-tests``):

* ``suite``: ``parity_tests/trained_roberta.py``'s RoBERTa masked-LM on standard-library docstrings (the model
  the int8 search was first tuned on); calibration: 256 training-side sentences;
* ``protein``: ``benchmarks/int8_models.py``'s amino-acid masked-LM (4 layers, hidden 128, 25 tokens) on the
  real protein sequences of Biopython's test data; calibration: 76 training-side sequences (issue 27's case);
* ``code``: the same geometry on Python standard-library source lines; calibration: 256 training-side lines;
* ``sentiment``: a text-classification model (negative / positive), the suite's model fine-tuned on VADER's
  human-rated snippets (``int8_models.py``); calibration: 256 training-side snippets; default gate ``label``
  (the predicted label of each text >= 99 %, cosine of the scores >= 0.999).

For each model, ``quantize(EXPORT, calibration=TEXTS)`` runs the default search (default gate: top-1 at the
masked positions of the calibration texts >= 99 %, cosine >= 0.999) and reports the chosen recipe, the MatMuls
kept in fp32, the gate figures, the search's seconds and its speed-up; then the chosen model and each pinned
recipe (``--recipes base``: the base recipes; ``all``: with their ``-keep-fp32`` variants) are measured on
held-out text (never calibrated on) with the task's gate: for the masked-LMs top-1 agreement with fp32 at masked
positions (15 % of real tokens masked) and over all positions, for the classifier the predicted label; cosine of
the logits, and int8 / fp32 latency (ONNX Runtime, medians of interleaved runs, batch 8 x 128 tokens, 8 x 64 for
the classifier, whose position table is 64). Prints markdown tables and the CPU features.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

CALIBRATION_TEXTS = {"suite": 256, "protein": 76, "code": 256, "sentiment": 256}


def _session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _interleaved_ms(sessions: dict[str, object], feeds: dict, runs: int) -> dict[str, float]:
    """Median milliseconds per call, the sessions taking turns so machine load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():
        session.run(None, feeds)
    for _ in range(runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def _corpus(name: str):
    """(checkpoint directory, training-side texts, held-out texts, what it is)."""
    if name == "suite":
        from parity_tests import trained_roberta

        return (trained_roberta.cached_checkpoint(log=print), trained_roberta.train_text(),
                trained_roberta.held_out_text(), "RoBERTa MLM on stdlib docstrings (suite's own)")
    from benchmarks import int8_models

    what = {"protein": "amino-acid MLM on Biopython's test proteins (25 tokens)",
            "code": "BPE MLM on Python stdlib source lines",
            "sentiment": "sentiment classifier: suite model fine-tuned on VADER's rated snippets"}[name]
    return (int8_models.cached_checkpoint(name), int8_models.texts(name, held_out=False),
            int8_models.texts(name, held_out=True), what)


def measure(name: str, recipes: str, held_out_texts: int, runs: int, threads: int, work: str) -> dict:
    from onnxport.artifact.layout import model_path
    from onnxport.exporters import export, load_spec
    from onnxport.exporters.quantize import (BASE_RECIPES, KEEP_FP32, _masked_gate_inputs, gate_result, quantize,
                                             smoothing_unavailable, tokenized_inputs)

    from onnxport.exporters.quantize import default_gate

    checkpoint, train, held, what = _corpus(name)
    task = "text-classification" if name == "sentiment" else "fill-mask"
    gate_name = default_gate(task)
    fp32_dir = os.path.join(work, name, "fp32")
    export(str(checkpoint), fp32_dir, framework="pt", task=task)
    spec = load_spec(fp32_dir)
    calibration = train[:CALIBRATION_TEXTS[name]]
    held_inputs = tokenized_inputs(fp32_dir, spec, held[:held_out_texts])
    held_feeds, where = (_masked_gate_inputs(fp32_dir, held_inputs) if gate_name == "masked-tokens"
                         else (held_inputs, None))
    width = min(128, spec.max_sequence_length or 128)
    timing = tokenized_inputs(fp32_dir, spec, held[:64], batch=8, width=width)[-1]
    fp32 = _session(model_path(fp32_dir), threads)
    reference = [{"logits": fp32.run(["logits"], f)[0]} for f in held_feeds]

    def held_out(report) -> dict:
        int8 = _session(report.model_path, threads)
        got = [{"logits": int8.run(["logits"], f)[0]} for f in held_feeds]
        gate = gate_result(gate_name, reference, got, held_feeds, spec, where)
        latency = _interleaved_ms({"fp32": fp32, "int8": int8}, timing, runs)
        return dict(recipe=report.recipe, kept=len(report.kept_fp32), weights=report.weight_matmuls,
                    share=report.kept_share, masked=gate.top1_agreement, all=gate.all_positions_top1,
                    cosine=gate.cosine, rows=gate.rows, speedup=latency["fp32"] / latency["int8"],
                    merged=report.merged_gemms,
                    gate=(f"{report.gate.top1_agreement:.2%} / {report.gate.cosine:.5f} "
                          f"{'pass' if report.passed else 'FAIL'}"), passed=report.passed)

    clock = time.perf_counter()
    chosen = quantize(fp32_dir, os.path.join(work, name, "search"), calibration=calibration, raise_on_failure=False)
    search_seconds = time.perf_counter() - clock
    result = dict(name=name, what=what, gate=gate_name, calibration=len(calibration),
                  held_out=len(held[:held_out_texts]),
                  search_seconds=search_seconds, chosen=held_out(chosen), report=chosen, rows=[])
    names = [] if recipes == "none" else [r for r in BASE_RECIPES if not (BASE_RECIPES[r].smooth and
                                                                          smoothing_unavailable())]
    if recipes == "all":
        names += [r + KEEP_FP32 for r in names]
    for recipe in names:
        clock = time.perf_counter()
        report = quantize(fp32_dir, os.path.join(work, name, recipe), recipe=recipe, calibration=calibration,
                          raise_on_failure=False)
        row = held_out(report)
        row["seconds"] = time.perf_counter() - clock
        result["rows"].append(row)
    return result


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="suite,protein,code,sentiment")
    parser.add_argument("--recipes", choices=("base", "all", "none"), default="base")
    parser.add_argument("--texts", type=int, default=384, help="held-out texts to mask and compare (at most)")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per model")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = parser.parse_args(argv)

    from onnxport.exporters.quantize import cpu_features, default_reduce_range

    results = []
    with tempfile.TemporaryDirectory(prefix="onnxport-int8-accuracy-") as work:
        for name in args.models.split(","):
            results.append(measure(name, args.recipes, args.texts, args.runs, args.threads, work))

    print("\n## Default search with --calibration (the task's default gate on the calibration texts)\n")
    print("| model | gate | calibration texts | chosen recipe | fp32 MatMuls | gate (top-1 / cosine) | held-out top-1 "
          "(masked / labels) | held-out top-1 all | held-out cosine | int8 / fp32 speed | search s |")
    print("|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        c = r["chosen"]
        print(f"| {r['name']}: {r['what']} | {r['gate']} | {r['calibration']} | {c['recipe']} | {c['kept']} of "
              f"{c['weights']} ({c['share']:.0%}) | {c['gate']} | {c['masked']:.2%} ({c['rows']}) | {_pct(c['all'])} "
              f"| {c['cosine']:.6f} | {c['speedup']:.2f}x | {r['search_seconds']:.0f} |")
    for r in results:
        print(f"\n{r['name']}: recipes tried by the search: "
              + "; ".join(f"{t.recipe}{' (%d kept, %d steps)' % (len(t.kept_fp32), t.steps) if t.steps else ''} "
                          + ("skipped" if t.skipped else f"{'pass' if t.passed else 'fail'} "
                             + (f"{t.top1_agreement:.2%}/" if t.top1_agreement is not None else "")
                             + f"{t.cosine:.5f}") for t in r["report"].search))
        if r["report"].advice:
            print(r["report"].advice)
        if r["rows"]:
            print(f"\n### {r['name']}: each recipe pinned, held-out text ({r['held_out']} texts)\n")
            print("| recipe | fp32 MatMuls | top-1 (masked / labels) | top-1 all | cosine | gate on calibration | int8 / fp32 "
                  "speed | build s |")
            print("|---|---:|---:|---:|---:|---|---:|---:|")
            for row in r["rows"]:
                print(f"| {row['recipe']} | {row['kept']} | {row['masked']:.2%} | {_pct(row['all'])} "
                      f"| {row['cosine']:.6f} | {row['gate']} | {row['speedup']:.2f}x | {row['seconds']:.0f} |")
    cpu = cpu_features(default_reduce_range(), "cpu")
    print(f"\nCPU: {cpu['machine']}, flags {', '.join(cpu['flags'] or ['unknown'])}; VNNI: {cpu['vnni']}; "
          f"reduce_range: {cpu['reduce_range']}; {args.threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
