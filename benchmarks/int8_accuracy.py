"""int8 accuracy per recipe on the small RoBERTa masked-LM trained on real text (issue 17).

    python -m benchmarks.int8_accuracy [--texts 384] [--runs 30] [--threads 2]

The checkpoint is ``parity_tests/trained_roberta.py``'s (hidden 128, 4 layers; built once and cached).
Each recipe of ``onnxport quantize`` is pinned in turn, calibrated on training-side text (the gate's
inputs too); then, on held-out text with 15% of the real tokens replaced by ``<mask>``:

* agreement: int8 arg-max equals fp32 arg-max at the masked positions;
* cosine of the int8 logits with the fp32 logits over every unpadded position;
* the model's own masked-token accuracy (arg-max equals the original token), fp32 and int8;
* model file size; latency of int8 over fp32 (ONNX Runtime, median of interleaved runs, batch 8 x 64
  tokens: the training sequence length), and the gate figures on the calibration texts.

Prints a markdown table and the CPU features the int8 models were tuned for.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import numpy as np

MASK_RATE = 0.15
CALIBRATION_TEXTS = 256


def _masked(feeds, mask_id: int, special: set[int], rng):
    """The feeds with MASK_RATE of the real, non-special tokens replaced by <mask>; and where."""
    ids = feeds["input_ids"].copy()
    real = (feeds["attention_mask"] == 1) & ~np.isin(ids, list(special))
    chosen = real & (rng.random(ids.shape) < MASK_RATE)
    ids[chosen] = mask_id
    return {**feeds, "input_ids": ids}, chosen


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=384, help="held-out texts to mask and compare")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per model")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = parser.parse_args(argv)

    from parity_tests import trained_roberta

    from onnxport.exporters import export, load_spec
    from onnxport.exporters.quantize import RECIPES, cpu_features, default_reduce_range, quantize, tokenized_inputs
    from onnxport.artifact.layout import model_path
    from onnxport.tokenizers import AutoTokenizer

    checkpoint = trained_roberta.cached_checkpoint(log=print)
    with tempfile.TemporaryDirectory(prefix="onnxport-int8-accuracy-") as work:
        fp32_dir = os.path.join(work, "fp32")
        export(str(checkpoint), fp32_dir, framework="pt", task="fill-mask")
        spec = load_spec(fp32_dir)
        tokenizer = AutoTokenizer.from_pretrained(fp32_dir)
        special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
        rng = np.random.default_rng(0)
        held_out = [_masked(f, tokenizer.mask_token_id, special, rng)
                    for f in tokenized_inputs(fp32_dir, spec, trained_roberta.held_out_text()[:args.texts])]
        originals = tokenized_inputs(fp32_dir, spec, trained_roberta.held_out_text()[:args.texts])
        calibration = trained_roberta.train_text()[:CALIBRATION_TEXTS]
        timing_feeds = tokenized_inputs(fp32_dir, spec, trained_roberta.held_out_text()[:64], batch=8, width=64)[-1]

        fp32 = _session(model_path(fp32_dir), args.threads)
        reference = [fp32.run(["logits"], feeds)[0] for feeds, _ in held_out]
        fp32_bytes = os.path.getsize(model_path(fp32_dir))
        truth = np.concatenate([o["input_ids"][chosen] for o, (_, chosen) in zip(originals, held_out)])
        fp32_masked = np.concatenate([r[chosen] for r, (_, chosen) in zip(reference, held_out)])
        rows = []
        for recipe in RECIPES:
            out = os.path.join(work, recipe)
            clock = time.perf_counter()
            report = quantize(fp32_dir, out, recipe=recipe, calibration=calibration, raise_on_failure=False)
            seconds = time.perf_counter() - clock
            int8 = _session(report.model_path, args.threads)
            got = [int8.run(["logits"], feeds)[0] for feeds, _ in held_out]
            int8_masked = np.concatenate([g[chosen] for g, (_, chosen) in zip(got, held_out)])
            real = [f["attention_mask"].astype(bool) for f, _ in held_out]
            a = np.concatenate([r[m].ravel() for r, m in zip(reference, real)]).astype(np.float64)
            b = np.concatenate([g[m].ravel() for g, m in zip(got, real)]).astype(np.float64)
            latency = _interleaved_ms({"fp32": fp32, "int8": int8}, timing_feeds, args.runs)
            rows.append(dict(
                recipe=recipe, kept=len(report.kept_fp32), positions=len(truth),
                agreement=float(np.mean(fp32_masked.argmax(-1) == int8_masked.argmax(-1))),
                cosine=float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
                fp32_accuracy=float(np.mean(fp32_masked.argmax(-1) == truth)),
                int8_accuracy=float(np.mean(int8_masked.argmax(-1) == truth)),
                mib=report.int8_bytes / 2**20, ratio=latency["int8"] / latency["fp32"],
                gate=f"{report.top1_agreement:.2%} / {report.cosine:.5f} {'pass' if report.passed else 'FAIL'}",
                seconds=seconds))

    cpu = cpu_features(default_reduce_range(), "cpu")
    print(f"\nTrained RoBERTa masked-LM (hidden 128, 4 layers), fp32 {fp32_bytes / 2**20:.2f} MiB; calibration: "
          f"{CALIBRATION_TEXTS} training-side texts; measured on {args.texts} held-out texts, "
          f"{rows[0]['positions']} masked positions; latency at 8 x 64 tokens, {args.threads} threads.\n")
    print("| recipe | kept fp32 | top-1 agree (masked) | cosine | masked acc fp32 | masked acc int8 | size MiB "
          "| int8/fp32 latency | gate on calibration (top-1 / cosine) | build s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['recipe']} | {r['kept']} | {r['agreement']:.2%} | {r['cosine']:.6f} | {r['fp32_accuracy']:.2%} "
              f"| {r['int8_accuracy']:.2%} | {r['mib']:.2f} | {r['ratio']:.2f} | {r['gate']} | {r['seconds']:.0f} |")
    print(f"\nCPU: {cpu['machine']}, flags {', '.join(cpu['flags'] or ['unknown'])}; VNNI: {cpu['vnni']}; "
          f"reduce_range: {cpu['reduce_range']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
