"""Long inputs through a sentence-embeddings export (issue 25): latency and peak memory at 512, 2,048 and 8,192
tokens on base geometry.

    python -m benchmarks.sentence_long                      # 512, 2048, 8192 tokens, batch 1
    python -m benchmarks.sentence_long --lengths 512,2048   # leave out the longest

The model: a bge-m3-style sentence-transformers directory (XLM-R of base geometry — hidden 768, 12 layers, 12
heads, FFN 3072, vocab 32000 — with max_position_embeddings 8194, CLS pooling and Normalize), random weights,
written as sentence-transformers lays it out (modules.json, 1_Pooling/config.json); exported once from PyTorch
without validation (the export's validation at 8,192 tokens is the long-input issue's memory plan). Each length
runs in a fresh process (so peak RSS is that length's alone): the session loaded, one warm-up, then ``--runs``
timed calls of ``OnnxModelForSentenceEmbeddings`` on random ids; median and peak RSS (ru_maxrss) reported.
Results: benchmarks/results/sentence_long.md/json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WORK = RESULTS / "work" / "sentence-long"
GEOMETRY = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                max_position_embeddings=8194, type_vocab_size=1, vocab_size=32000, pad_token_id=1)


def build(work: Path) -> Path:
    """The sentence-transformers directory and its export (reused when present)."""
    st_dir, out = work / "st", work / "export"
    if (out / "onnxport.json").is_file():
        return out
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.XLMRobertaConfig(**GEOMETRY)
    transformers.XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(st_dir)
    (st_dir / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (st_dir / "1_Pooling").mkdir(exist_ok=True)
    (st_dir / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 768, "pooling_mode": "cls"}))
    (st_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192}))
    from onnxport.exporters import export

    start = time.perf_counter()
    export(st_dir, out, validate=False, copy_tokenizer=False)
    print(f"exported in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    return out


def measure(export_dir: str, length: int, runs: int, threads: int) -> dict:
    """One length, in this process: load, warm up, time ``runs`` calls."""
    import resource

    import numpy as np

    from onnxport.runtime import OnnxModelForSentenceEmbeddings

    model = OnnxModelForSentenceEmbeddings.from_pretrained(export_dir, provider="cpu", intra_op_threads=threads)
    loaded, load_peak = _status_gib("VmRSS"), _status_gib("VmHWM")
    _reset_peak()  # from here VmHWM is the peak while running
    ids = np.random.default_rng(0).integers(3, GEOMETRY["vocab_size"], size=(1, length), dtype=np.int64)
    model(input_ids=ids)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        out = model(input_ids=ids)
        seconds.append(time.perf_counter() - start)
    assert out["sentence_embedding"].shape == (1, 768)
    return {"tokens": length, "median_s": float(np.median(seconds)), "runs": runs, "threads": threads,
            "loaded_rss_gib": loaded, "running_peak_rss_gib": _status_gib("VmHWM"),
            "peak_rss_gib": max(load_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20),
            "load_average": os.getloadavg()[0]}


def _status_gib(field: str) -> float:
    """A memory figure of /proc/self/status in GiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: writing 5 to clear_refs), so the peak after it is the run's."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="512,2048,8192")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--measure", nargs=2, metavar=("EXPORT_DIR", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]), args.runs, args.threads)))
        return 0
    export_dir = build(WORK)
    rows = []
    for length in (int(n) for n in args.lengths.split(",")):
        done = subprocess.run([sys.executable, "-m", "benchmarks.sentence_long", "--measure", str(export_dir),
                               str(length), "--runs", str(args.runs), "--threads", str(args.threads)],
                              capture_output=True, text=True)
        if done.returncode:
            rows.append({"tokens": length, "error": (done.stderr.strip().splitlines() or ["killed"])[-1],
                         "returncode": done.returncode})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sentence_long.json").write_text(json.dumps(rows, indent=2))
    lines = ["| tokens | median latency | RSS loaded | peak RSS running | peak RSS (process) | load average |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['tokens']} | {row['median_s']:.2f} s | {row['loaded_rss_gib']:.2f} GiB | "
                     f"{row['running_peak_rss_gib']:.2f} GiB | {row['peak_rss_gib']:.2f} GiB | "
                     f"{row['load_average']:.1f} |" if "error" not in row
                     else f"| {row['tokens']} | failed ({row['error']}) | | | | |")
    (RESULTS / "sentence_long.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
