"""Fused vs unfused attention: the runtime's default (onnxport.Attention lowered to ONNX Runtime's
MultiHeadAttention at load) against the same export served as written (``fuse_attention=False``).

    python -m benchmarks.fused_attention [--families xlm-roberta,roformer] [--shapes 1x128,1x512,1x2048,2x512p]
                                         [--threads 2] [--rounds 3]

Base geometry (12 layers, 12 heads, 768 wide), random weights built from the config, the position table
grown to 2,050 positions so 1x2048 fits; the vocabulary is cut to 30,000 rows (latency does not depend on
it: one Gather; it keeps the export and the two sessions small on a shared machine). Text classification
(the export's last layer runs the first token only). ``NxSp``: a padded batch (rows of decreasing length,
the masked kernel); the others are unpadded (the kernel's flash path). Both sessions live in one process
and are timed interleaved (``harness.interleaved``). Writes ``fused_attention.json`` in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from . import harness as h
from .harness import RESULTS, log

POSITIONS = 2050
VOCAB = 30000
DEFAULT_SHAPES = "1x128,1x512,1x2048,2x512p"


def _shape(text: str) -> tuple[int, int, bool]:
    padded = text.endswith("p")
    batch, sequence = text.rstrip("p").split("x")
    return int(batch), int(sequence), padded


def _feeds(model_type: str, config, batch: int, sequence: int, padded: bool) -> dict[str, np.ndarray]:
    feeds = h.make_feeds(model_type, config, batch, sequence)
    if padded:
        for row in range(1, batch):
            feeds["attention_mask"][row, sequence - sequence * row // (2 * batch):] = 0
    return feeds


def _build_checkpoint(model_type: str, directory: Path, geometry: dict) -> Path:
    """``harness.build_checkpoint`` with the family's geometry overridden (longer table, smaller vocabulary)."""
    saved = h.FAMILY_GEOMETRY[model_type]
    h.FAMILY_GEOMETRY[model_type] = geometry
    try:
        return h.build_checkpoint(model_type, directory, with_tokenizer=False)
    finally:
        h.FAMILY_GEOMETRY[model_type] = saved


def run(families: list[str], shapes: list[str], threads: int, rounds: int, work: Path) -> dict:
    from onnxport.exporters import export
    from onnxport.runtime.models import load_model

    results = {"machine": h.machine_info(threads), "positions": POSITIONS, "vocab_size": VOCAB, "rows": []}
    for model_type in families:
        geometry = {**h.FAMILY_GEOMETRY[model_type], "max_position_embeddings": POSITIONS, "vocab_size": VOCAB}
        checkpoint = _build_checkpoint(model_type, work / f"{model_type}-ckpt", geometry)
        out = work / f"{model_type}-export"
        if not (out / "onnxport.json").is_file():
            export(str(checkpoint), str(out), framework="pt", task=h.TASK, validate=False, force=True,
                   copy_tokenizer=False)
        models = {fuse: load_model(out, provider="cpu", load_tokenizer=False, fuse_attention=fuse,
                                   intra_op_threads=threads, inter_op_threads=1) for fuse in (True, False)}
        config = models[True].config
        for text in shapes:
            batch, sequence, padded = _shape(text)
            feeds = _feeds(model_type, config, batch, sequence, padded)
            feeds = {k: v for k, v in feeds.items() if k in models[True].spec.input_names}
            outputs = {fuse: m.session.run(None, feeds)[0] for fuse, m in models.items()}
            diff = float(np.abs(outputs[True] - outputs[False]).max())
            calls = max(1, 1024 // (batch * sequence))
            runners = [h.Runner(name, (lambda m=m: m.session.run(None, feeds)), anchor=not fuse)
                       for name, fuse, m in (("fused", True, models[True]), ("unfused", False, models[False]))]
            timings = h.interleaved(runners, rounds=rounds, calls_per_round=calls, warmup=1)
            row = {"family": model_type, "shape": text, "fused_ms": timings["fused"].median_ms,
                   "unfused_ms": timings["unfused"].median_ms,
                   "fused_best_round_ms": timings["fused"].best_round_ms,
                   "unfused_best_round_ms": timings["unfused"].best_round_ms,
                   "spread": max(timings["fused"].spread, timings["unfused"].spread), "max_abs_diff": diff}
            row["ratio"] = row["fused_ms"] / row["unfused_ms"]
            results["rows"].append(row)
            log(f"  {model_type:<22} {text:<8} fused {row['fused_ms']:9.1f} ms  unfused {row['unfused_ms']:9.1f} ms  "
                f"ratio {row['ratio']:.3f}  (best rounds {row['fused_best_round_ms']:.1f} / "
                f"{row['unfused_best_round_ms']:.1f}; spread {row['spread']:.0%}; |diff| {diff:.1e})")
        del models
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="xlm-roberta,roformer")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="onnxport-fused-attention-"))
    results = run(args.families.split(","), args.shapes.split(","), args.threads, args.rounds, work)
    h.write_json(RESULTS / "fused_attention.json", results)
    log(f"machine: {results['machine']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
