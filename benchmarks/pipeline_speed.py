"""Issue 7's measurement: the onnxport pipeline (tokenization included) vs the same model in PyTorch eager.

    python -m benchmarks.pipeline_speed [--families xlm-roberta,roformer] [--rounds 5] [--threads 2]

Base-size random-weight text-classification models (XLM-R and RoFormer geometry, the checkpoints of
``benchmarks.run``, built here if missing), batch 1 and 8, sequence 128: every text is long enough
that both sides truncate it to exactly 128 tokens. Both sides get the same texts and tokenizer files:

  onnxport-pipeline   ``onnxport.runtime.pipeline("text-classification", export_dir)``
  pytorch-pipeline    ``transformers.pipeline("text-classification", model=<PyTorch eager model>,
                      tokenizer=<transformers tokenizer on the same files>)``

Timed interleaved in one process like ``benchmarks.run``; writes ``pipeline.md`` / ``pipeline.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import harness as h
from .harness import RESULTS, Runner, interleaved, log

FAMILIES = ("xlm-roberta", "roformer")
BATCHES = (1, 8)
SEQUENCE = 128


def long_texts(count: int) -> list[str]:
    """Distinct texts of well over 128 tokens for every test tokenizer (corpus sentences, shuffled)."""
    import random

    from parity_tests.tokenizer_fixtures import CORPUS

    rng = random.Random(0)
    texts = []
    for _ in range(count):
        sentences = [s for s in CORPUS if s.strip()]
        rng.shuffle(sentences)
        texts.append(" ".join(sentences * 3))
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--work", default=str(RESULTS / "work"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    import torch
    import transformers

    from onnxport.runtime import pipeline

    torch.set_num_threads(args.threads)
    work, out = Path(args.work), Path(args.out)
    results = []
    for model_type in [f.strip() for f in args.families.split(",") if f.strip()]:
        log(f"\n== pipeline speed: {model_type}")
        checkpoint = h.build_checkpoint(model_type, work / "checkpoints" / model_type)
        export_dir = h.onnxport_export(checkpoint, work / "onnxport" / model_type)
        ours = pipeline("text-classification", str(export_dir), provider="cpu", max_length=SEQUENCE,
                        intra_op_threads=args.threads, inter_op_threads=1)
        model = h.hf_model(checkpoint)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
        theirs = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1,
                                       framework="pt")
        for batch in BATCHES:
            texts = long_texts(batch)
            lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=SEQUENCE)["input_ids"]]
            assert set(lengths) == {SEQUENCE}, f"texts must fill {SEQUENCE} tokens, got {sorted(set(lengths))}"
            # Same answers: the two pipelines serve the same weights.
            a, b = ours(texts, top_k=1), theirs(texts, batch_size=batch, truncation=True, max_length=SEQUENCE)
            same_label = sum(x["label"] == y["label"] for x, y in zip(a, b)) / batch
            max_score_diff = max(abs(x["score"] - y["score"]) for x, y in zip(a, b))
            runners = [
                Runner("onnxport-pipeline", lambda t=texts: ours(t), False),
                Runner("pytorch-pipeline",
                       lambda t=texts, n=batch: theirs(t, batch_size=n, truncation=True, max_length=SEQUENCE), True),
            ]
            log(f"  timing batch {batch} x {SEQUENCE}")
            timings = interleaved(runners, args.rounds, args.calls)
            row = {"family": model_type, "batch": batch, "sequence": SEQUENCE, "same_label": same_label,
                   "max_score_diff": max_score_diff}
            for r in runners:
                t = timings[r.name]
                row[r.name] = {"median_ms": t.median_ms, "p90_ms": t.p90_ms, "spread": t.spread,
                               "samples_ms": [1e3 * s for s in t.samples]}
            row["speedup"] = row["pytorch-pipeline"]["median_ms"] / row["onnxport-pipeline"]["median_ms"]
            results.append(row)
            log(f"    onnxport {row['onnxport-pipeline']['median_ms']:.1f} ms, PyTorch {row['pytorch-pipeline']['median_ms']:.1f}"
                f" ms -> {row['speedup']:.2f}x (labels equal {same_label:.0%}, max score diff {max_score_diff:.1e})")
        del ours, theirs, model
    lines = [
        "# Pipeline speed (issue 7): onnxport pipeline vs transformers pipeline on PyTorch eager",
        "",
        f"Tokenization included; text-classification; sequence {SEQUENCE}; {args.threads} threads; "
        f"{args.rounds} rounds x {args.calls} calls, interleaved. Load average at end {h.os.getloadavg()}.",
        "",
        "| family | batch | onnxport ms (p90, spread) | PyTorch ms (p90, spread) | PyTorch / onnxport | same labels | max score diff |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        o, p = r["onnxport-pipeline"], r["pytorch-pipeline"]
        lines.append(f"| {r['family']} | {r['batch']} | {o['median_ms']:.1f} ({o['p90_ms']:.1f}, {o['spread']:.0%}) | "
                     f"{p['median_ms']:.1f} ({p['p90_ms']:.1f}, {p['spread']:.0%}) | {r['speedup']:.2f}x | "
                     f"{r['same_label']:.0%} | {r['max_score_diff']:.1e} |")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.md").write_text(text, encoding="utf-8")
    h.write_json(out / "pipeline.json", {"results": results, "threads": args.threads, "time": time.time()})
    log("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
