"""Pipelines on realistic traffic: onnxport's pipeline vs Optimum's ORTModel inside a transformers pipeline.

    python -m benchmarks.pipeline_traffic [--families xlm-roberta,roformer] [--texts 2000] [--batch-size 32]
                                          [--tasks text-classification,token-classification] [--rounds 3]

Per family (base geometry, random weights, checkpoints built by ``benchmarks.harness`` and cached in
``benchmarks/results/work``) and task (text-classification, token-classification), ``--texts`` deterministic
texts whose token lengths spread uniformly from 5 to 250 (the distribution is measured with the tokenizer
and printed), served ``--batch-size`` at a time, tokenization and post-processing included:

  onnxport   ``onnxport.runtime.pipeline(task, export_dir, batch_size=B)`` on onnxport's export
  optimum    ``transformers.pipeline(task, model=ORTModelFor{SequenceClassification,TokenClassification}
             .from_pretrained(optimum_export_dir), tokenizer=<transformers tokenizer on the same files>,
             batch_size=B)`` on Optimum's own export of the same checkpoint (Optimum refuses
             RoBERTa-PreLayerNorm, so only XLM-R and RoFormer)

Both sessions: CPU provider, ``--threads`` intra-op threads, 1 inter-op thread, ORT's default graph
optimizations (all); torch (used by the transformers pipeline for collation) on the same threads.
Timed like ``harness.interleaved``: both pipelines loaded, warmed up on a few batches, then ``--rounds``
rounds of one full pass each, order alternating. Labels are checked equal (top-1 per text; per-token
entity labels on ``--check-texts`` texts). Writes ``pipeline_traffic.md`` / ``pipeline_traffic.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
from pathlib import Path

from . import harness as h
from .harness import RESULTS, Runner, interleaved, log

import numpy as np

FAMILIES = ("xlm-roberta", "roformer")
TASKS = ("text-classification", "token-classification")
HEADS = {"text-classification": "ForSequenceClassification", "token-classification": "ForTokenClassification"}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
MIN_TOKENS, MAX_TOKENS = 5, 250


# ----------------------------------------------------------------------------- artifacts
def artifacts(model_type: str, task: str, work: Path) -> tuple[Path, Path, Path | None, str | None]:
    """(checkpoint, onnxport export, Optimum export or None, skip reason); built once, then reused."""
    # text-classification reuses benchmarks.run's directories; other tasks get their own.
    suffix = "" if task == h.TASK else f"-{task}"
    overrides = {} if task == h.TASK else {"id2label": NER_LABELS, "num_labels": len(NER_LABELS)}
    checkpoint = h.build_checkpoint(model_type, work / f"checkpoints{suffix}" / model_type, head=HEADS[task],
                                    **overrides)
    export_dir = h.onnxport_export(checkpoint, work / f"onnxport{suffix}" / model_type, task=task)
    gc.collect()
    optimum_dir = work / f"optimum{suffix}" / model_type
    skip = h.optimum_export(checkpoint, model_type, optimum_dir, task=task)
    gc.collect()
    return checkpoint, export_dir, (None if skip else optimum_dir), skip


# ----------------------------------------------------------------------------- traffic
def traffic(tokenizer, count: int, seed: int = 0) -> list[str]:
    """``count`` texts whose token lengths (special tokens included) spread uniformly over 5-250.

    Each text is a random word sequence from the tokenizer test corpus, cut to the longest prefix
    that stays within its drawn length (binary search on the number of words), then topped up with
    words that still fit (corpus words range from one token to a dozen)."""
    from parity_tests.tokenizer_fixtures import CORPUS

    words = [w for sentence in CORPUS for w in sentence.split()]
    rng = random.Random(seed)

    def length(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    texts = []
    for _ in range(count):
        target = rng.randint(MIN_TOKENS, MAX_TOKENS)
        stream = [rng.choice(words) for _ in range(MAX_TOKENS)]  # every word is at least one token
        lo, hi = 1, len(stream)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if length(" ".join(stream[:mid])) <= target:
                lo = mid
            else:
                hi = mid - 1
        text = " ".join(stream[:lo])
        if length(text) > target:  # the first word alone is too long
            text = ""
        for _ in range(50):
            if length(text) >= target:
                break
            longer = f"{text} {rng.choice(words)}".strip()
            if length(longer) <= target:
                text = longer
        texts.append(text)
    return texts


def length_summary(lengths: list[int]) -> dict:
    q = np.percentile(lengths, [0, 10, 25, 50, 75, 90, 100])
    edges = list(range(0, MAX_TOKENS + 26, 25))
    counts, _ = np.histogram(lengths, bins=edges)
    return {"min": int(q[0]), "p10": float(q[1]), "p25": float(q[2]), "median": float(q[3]), "p75": float(q[4]),
            "p90": float(q[5]), "max": int(q[6]), "mean": float(np.mean(lengths)),
            "histogram": {f"{a}-{b - 1}": int(c) for a, b, c in zip(edges[:-1], edges[1:], counts)}}


def padded_tokens(lengths: list[int], batch: int, sort: bool) -> int:
    """Token positions the model computes when batches are padded to their own longest row."""
    order = sorted(lengths) if sort else list(lengths)
    chunks = [order[i:i + batch] for i in range(0, len(order), batch)]
    return sum(len(chunk) * max(chunk) for chunk in chunks)


# ----------------------------------------------------------------------------- agreement
def classification_agreement(ours: list[dict], theirs: list[dict]) -> dict:
    same = sum(a["label"] == b["label"] for a, b in zip(ours, theirs))
    diff = max(abs(a["score"] - float(b["score"])) for a, b in zip(ours, theirs))
    return {"texts": len(ours), "same_top1": same / len(ours), "max_score_diff": diff}


def token_agreement(ours: list[list[dict]], theirs: list[list[dict]]) -> dict:
    """Per-token entity labels (computed with no label ignored, so every token is compared)."""
    same_tokens = tokens = same_texts = 0
    diff = 0.0
    for a, b in zip(ours, theirs):
        ka = {(e["index"], e["start"], e["end"]): e for e in a}
        kb = {(e["index"], e["start"], e["end"]): e for e in b}
        tokens += len(kb)
        same_tokens += sum(1 for k, e in kb.items() if k in ka and ka[k]["entity"] == e["entity"])
        same_texts += ka.keys() == kb.keys() and all(ka[k]["entity"] == kb[k]["entity"] for k in kb)
        diff = max([diff] + [abs(ka[k]["score"] - float(e["score"])) for k, e in kb.items() if k in ka])
    return {"texts": len(ours), "tokens": tokens, "same_token_labels": same_tokens / max(tokens, 1),
            "same_texts": same_texts / max(len(ours), 1), "max_score_diff": diff}


def entity_lists_equal(ours: list[list[dict]], theirs: list[list[dict]]) -> float:
    """Share of texts whose default output (entities other than "O") is the same on both sides."""
    same = sum([(e["entity"], e["start"], e["end"]) for e in a] == [(e["entity"], e["start"], e["end"]) for e in b]
               for a, b in zip(ours, theirs))
    return same / max(len(ours), 1)


# ----------------------------------------------------------------------------- one case
def bench_case(model_type: str, task: str, args, work: Path) -> dict:
    import onnxruntime as ort
    import transformers

    import optimum.onnxruntime
    from onnxport.runtime import pipeline

    log(f"\n== {model_type} / {task}: artifacts")
    t0 = time.perf_counter()
    checkpoint, export_dir, optimum_dir, skip = artifacts(model_type, task, work)
    log(f"  ready ({time.perf_counter() - t0:.0f}s)" + (f"; Optimum skipped: {skip}" if skip else ""))
    if optimum_dir is None:
        return {"family": model_type, "task": task, "skipped": skip}

    ours = pipeline(task, str(export_dir), provider="cpu", batch_size=args.batch_size,
                    intra_op_threads=args.threads, inter_op_threads=1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    ort_model = getattr(optimum.onnxruntime, h.OPTIMUM_CLASSES[task]).from_pretrained(
        str(optimum_dir), provider="CPUExecutionProvider", session_options=options)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    theirs = transformers.pipeline(task, model=ort_model, tokenizer=tokenizer, batch_size=args.batch_size)

    texts = traffic(ours.tokenizer, args.texts)
    lengths = [len(ids) for ids in ours.tokenizer(texts)["input_ids"]]
    their_lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    summary = length_summary(lengths)
    log(f"  {len(texts)} texts, token lengths: min {summary['min']} p25 {summary['p25']:.0f} median "
        f"{summary['median']:.0f} p75 {summary['p75']:.0f} max {summary['max']} mean {summary['mean']:.1f}")
    log("  histogram: " + ", ".join(f"{k}: {v}" for k, v in summary["histogram"].items()))
    positions = {"real": sum(lengths), "sorted_batches": padded_tokens(lengths, args.batch_size, True),
                 "input_order_batches": padded_tokens(lengths, args.batch_size, False),
                 "global_max": len(lengths) * max(lengths)}
    log(f"  token positions computed: real {positions['real']}, length-sorted batches "
        f"{positions['sorted_batches']}, input-order batches {positions['input_order_batches']}")

    # Agreement first (untimed): full per-token comparison on a sample, nothing ignored.
    sample = texts[:args.check_texts]
    if task == "text-classification":
        agreement = classification_agreement(ours(sample), theirs(sample))
    else:
        agreement = token_agreement(ours(sample, ignore_labels=()), theirs(sample, ignore_labels=[]))
    log(f"  agreement on {len(sample)} texts: {agreement}")

    outputs: dict[str, list] = {}

    def call(name, pipe):
        def run():
            outputs[name] = pipe(texts)
        return run

    runners = [Runner("onnxport", call("onnxport", ours), False), Runner("optimum", call("optimum", theirs), True)]
    warm = texts[:2 * args.batch_size]
    for pipe in (ours, theirs):
        pipe(warm)
    load_before = os.getloadavg()
    log(f"  timing: {args.rounds} rounds x 1 pass of {len(texts)} texts per runner (load {load_before})")
    timings = interleaved(runners, args.rounds, 1, warmup=0, pause=1.0)
    load_after = os.getloadavg()
    if task == "text-classification":
        full = classification_agreement(outputs["onnxport"], outputs["optimum"])
    else:
        full = {"texts": len(texts), "same_entities": entity_lists_equal(outputs["onnxport"], outputs["optimum"])}
    row = {"family": model_type, "task": task, "texts": len(texts), "batch_size": args.batch_size,
           "lengths": summary, "positions": positions, "same_token_lengths": lengths == their_lengths,
           "agreement_sample": agreement, "agreement_full": full, "load_before": load_before,
           "load_after": load_after}
    for r in runners:
        t = timings[r.name]
        median = statistics.median(t.samples)
        row[r.name] = {"texts_per_s": len(texts) / median, "median_s": median, "spread": t.spread,
                       "rounds_s": list(t.round_medians)}
    row["ratio"] = row["onnxport"]["texts_per_s"] / row["optimum"]["texts_per_s"]
    log(f"  onnxport {row['onnxport']['texts_per_s']:.1f} texts/s (spread {row['onnxport']['spread']:.0%}), "
        f"Optimum {row['optimum']['texts_per_s']:.1f} texts/s (spread {row['optimum']['spread']:.0%}) -> "
        f"{row['ratio']:.2f}x; full-run agreement {full}")
    del ours, theirs, ort_model, outputs, runners
    gc.collect()
    return row


# ----------------------------------------------------------------------------- report
def markdown(report: dict) -> str:
    a = report["args"]
    lines = [
        "# Pipelines on realistic traffic: onnxport pipeline vs Optimum ORTModel in a transformers pipeline",
        "",
        f"{a['texts']} texts per pass, token lengths uniform over {MIN_TOKENS}-{MAX_TOKENS} (measured below), "
        f"batch size {a['batch_size']}, tokenization and post-processing included, default pipeline arguments "
        "(text-classification: top-1 label; token-classification: aggregation none, label O ignored). "
        f"Both sides: ONNX Runtime CPU provider, intra-op threads {a['threads']}, inter-op threads 1, graph "
        f"optimization level all (ORT default); torch threads {a['threads']}; TOKENIZERS_PARALLELISM=false "
        "(as every benchmark here). onnxport serves its own export, "
        "Optimum its own export (`ORTModelFor*.from_pretrained(export=True)`) of the same checkpoint. "
        f"{a['rounds']} rounds x 1 full pass per runner, order alternating; texts/s from the median pass; spread = "
        "(max - min) of the round times / median. Machine: 2 shared cores, "
        f"{report['machine']['cpu']}; onnxruntime {report['machine']['onnxruntime']}. Load average (1, 5, 15 min) "
        f"at start {_load(report['machine']['load_average_at_start'])}, at end {_load(report['load_average_at_end'])}.",
        "",
        "| family | task | onnxport texts/s (spread) | Optimum texts/s (spread) | onnxport / Optimum | rounds: "
        "onnxport s / Optimum s | 1-min load before -> after | labels equal |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for r in report["results"]:
        if "skipped" in r:
            lines.append(f"| {r['family']} | {r['task']} | - | - | - | - | - | skipped: {r['skipped']} |")
            continue
        o, p = r["onnxport"], r["optimum"]
        lines.append(f"| {r['family']} | {r['task']} | {o['texts_per_s']:.1f} ({o['spread']:.0%}) | "
                     f"{p['texts_per_s']:.1f} ({p['spread']:.0%}) | **{r['ratio']:.2f}x** | "
                     f"{_seconds(o['rounds_s'])} / {_seconds(p['rounds_s'])} | "
                     f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} | {_agreement(r)} |")
    lines += ["", "Token positions the model computes per pass (why sorting matters):", "",
              "| family | task | real tokens | length-sorted batches (onnxport) | input-order batches (transformers) | "
              "padded to the global max |", "|---|---|---:|---:|---:|---:|"]
    for r in report["results"]:
        if "positions" in r:
            p = r["positions"]
            lines.append(f"| {r['family']} | {r['task']} | {p['real']} | {p['sorted_batches']} "
                         f"({p['sorted_batches'] / p['real']:.2f}x) | {p['input_order_batches']} "
                         f"({p['input_order_batches'] / p['real']:.2f}x) | {p['global_max']} "
                         f"({p['global_max'] / p['real']:.2f}x) |")
    same = {r["family"]: r["same_token_lengths"] for r in report["results"] if "lengths" in r}
    lines += ["", "Token length distribution (special tokens included; onnxport's and transformers' tokenizers give "
              "the same lengths: " + ", ".join(f"{k} {v}" for k, v in same.items()) + "):", ""]
    seen = set()
    for r in report["results"]:
        if "lengths" in r and r["family"] not in seen:
            seen.add(r["family"])
            s = r["lengths"]
            lines.append(f"- {r['family']}: min {s['min']}, p10 {s['p10']:.0f}, p25 {s['p25']:.0f}, median "
                         f"{s['median']:.0f}, p75 {s['p75']:.0f}, p90 {s['p90']:.0f}, max {s['max']}, mean "
                         f"{s['mean']:.1f}; per 25 tokens: " + ", ".join(f"{k}: {v}" for k, v in s["histogram"].items()))
    return "\n".join(lines) + "\n"


def _seconds(values) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def _load(values) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in values) + ")"


def _agreement(r: dict) -> str:
    s, f = r["agreement_sample"], r["agreement_full"]
    if r["task"] == "text-classification":
        return (f"top-1 {f['same_top1']:.1%} of {f['texts']} texts, max score diff {f['max_score_diff']:.1e}")
    return (f"per-token labels {s['same_token_labels']:.2%} of {s['tokens']} tokens ({s['texts']} texts), "
            f"max score diff {s['max_score_diff']:.1e}; entity lists equal on {f['same_entities']:.1%} of "
            f"{f['texts']} texts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_traffic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check-texts", type=int, default=100, help="texts compared token by token")
    parser.add_argument("--work", default=str(RESULTS / "work"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    missing = h.missing_requirements()
    if "optimum.onnxruntime" in missing:
        log(f"optimum-onnx is not installed; nothing to compare against: {h.INSTALL_HINT}")
        return 1
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # "model not supported for this pipeline" for ORTModel classes
    torch.set_num_threads(args.threads)
    work, out = Path(args.work), Path(args.out)
    machine = h.machine_info(args.threads)
    log(f"machine: {machine}")
    started = time.time()
    results = []
    for model_type in [f.strip() for f in args.families.split(",") if f.strip()]:
        for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            results.append(bench_case(model_type, task, args, work))
    report = {"args": vars(args), "machine": machine, "results": results, "seconds": round(time.time() - started),
              "load_average_at_end": os.getloadavg()}
    out.mkdir(parents=True, exist_ok=True)
    h.write_json(out / "pipeline_traffic.json", report)
    text = markdown(report)
    (out / "pipeline_traffic.md").write_text(text, encoding="utf-8")
    log("\n" + text)
    log(f"wrote {out / 'pipeline_traffic.md'}, {out / 'pipeline_traffic.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
