"""Sustained load: pipelines shared by many threads, the Triton model under concurrent traffic, models
created and dropped; errors, answers against single-threaded ones, and resident memory over time.

Models: the small RoBERTa masked-LM trained on standard-library docstrings (parity_tests/trained_roberta.py)
for fill-mask and text-generation (its LM head), and the same trained body under a freshly initialised
head (seeded) for the other tasks; its byte-level BPE tokenizer for all. Traffic: held-out docstring
sentences, from a few words to several sentences (truncated at the model's 128 tokens), single texts and
lists, options mixed (parity_tests/load_traffic.py).

Sections (``--sections``):

- ``pipelines``: one pipeline per task, shared by ``--threads`` threads for ``--minutes`` minutes. Each of
  ``--requests`` requests per task is first answered single-threaded (the reference, also the warm-up),
  then ``--warmup-seconds`` of concurrent traffic; RSS is sampled from there on. Every concurrent answer
  must equal its reference exactly, no call may raise.
- ``create-drop``: ``OnnxModelForMaskedLM.from_pretrained`` + one call + drop, ``--create-drop`` times.
- ``triton``: ``onnxport triton`` repository of every task served by a real tritonserver (the Python
  backend; parity_tests/triton_server.py builds its venv) on 127.0.0.1, ``--triton-threads`` clients
  sending one-row requests for ``--triton-minutes`` (timeouts bounded); answers compared with the
  in-process pipeline (floats within 1e-4: the dynamic batcher pads rows with others); RSS of the
  server's process group (server + backend stubs).

Results: ``benchmarks/results/sustained_load.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

from benchmarks import harness as h
from benchmarks.harness import RESULTS, log
from parity_tests import load_traffic as lt

SECTIONS = ("pipelines", "create-drop", "triton")
# transformers class per task; the trained masked-LM's body is loaded into each (heads initialised, seeded).
HEADS = {"fill-mask": "RobertaForMaskedLM", "text-classification": "RobertaForSequenceClassification",
         "token-classification": "RobertaForTokenClassification",
         "question-answering": "RobertaForQuestionAnswering", "feature-extraction": "RobertaModel",
         "multiple-choice": "RobertaForMultipleChoice", "text-generation": "RobertaForCausalLM"}
HEAD_CONFIG = {"text-classification": {"num_labels": 3},
               "token-classification": {"id2label": {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}},
               "text-generation": {"is_decoder": True}}
TOKENIZER_FILES = ("vocab.json", "merges.txt")


# ----------------------------------------------------------------------------- models
def build_exports(work: Path, tasks) -> dict[str, Path]:
    """task -> export directory (built once into ``work``, reused)."""
    from parity_tests.trained_roberta import cached_checkpoint

    trained = cached_checkpoint(log=lambda *a: log("   ", *a))
    exports = {}
    for task in tasks:
        out = work / f"export-{task}"
        if not (out / "onnxport.json").is_file():
            checkpoint = trained if task == "fill-mask" else _head_checkpoint(trained, task, work / f"ckpt-{task}")
            from onnxport.exporters import export

            report = export(str(checkpoint), str(out), framework="pt", task=task, force=True,
                            with_past=task == "text-generation")
            log(f"  exported {task}: validation max |diff| {report.max_abs_diff:.2e}")
        exports[task] = out
    return exports


def _head_checkpoint(trained: Path, task: str, directory: Path) -> Path:
    import torch
    import transformers

    if (directory / "config.json").is_file():
        return directory
    transformers.logging.set_verbosity_error()  # "newly initialized weights": the point here
    torch.manual_seed(sorted(HEADS).index(task))
    model = getattr(transformers, HEADS[task]).from_pretrained(str(trained), **HEAD_CONFIG.get(task, {})).eval()
    model.save_pretrained(str(directory))
    for name in TOKENIZER_FILES:
        shutil.copy(trained / name, directory / name)
    return directory


def make_pipes(exports: dict[str, Path], intra_op_threads: int | None):
    from onnxport.runtime import pipeline

    kwargs = {"intra_op_threads": intra_op_threads} if intra_op_threads else {}
    return {task: pipeline(task, str(path), provider="cpu", **kwargs) for task, path in exports.items()}


def make_requests(pipes, count: int, seed: int) -> list[lt.Request]:
    pool = lt.sentences()
    requests = []
    for i, (task, pipe) in enumerate(pipes.items()):
        requests += lt.requests_for(task, pool, count, seed=seed + i, mask_token=pipe.tokenizer.mask_token)
    return requests


# ----------------------------------------------------------------------------- sections
def _summary(result: lt.LoadResult, start_mb: float, end_mb: float) -> dict:
    calls = result.total_calls
    return {"seconds": round(result.seconds, 1), "calls": calls, "calls_by_task": dict(result.calls),
            "errors": sum(result.errors.values()), "errors_by_task": dict(result.errors),
            "mismatches": sum(result.mismatches.values()), "mismatches_by_task": dict(result.mismatches),
            "examples": result.examples, "rss_start_mb": round(start_mb, 1), "rss_end_mb": round(end_mb, 1),
            "mb_per_10k_calls": round((end_mb - start_mb) / calls * 10_000, 3) if calls else None,
            "slope_mb_per_10k_calls": lt.growth_per_10k(result.samples),
            # the second half alone: after every distinct request shape has been seen (arenas at their size)
            "second_half_slope_mb_per_10k_calls": lt.growth_per_10k(result.samples[len(result.samples) // 2:]),
            "samples": [(round(t, 1), c, round(m, 1)) for t, c, m in result.samples]}


def run_pipelines(args, exports) -> dict:
    tasks = list(exports)
    log(f"\n== pipelines: {', '.join(tasks)}; {args.threads} threads, {args.minutes} min")
    pipes = make_pipes(exports, args.intra_op_threads)
    requests = make_requests(pipes, args.requests, args.seed)
    t0 = time.perf_counter()

    def answer(request):
        return request(pipes[request.task])

    references = lt.references_for(requests, answer)
    single = time.perf_counter() - t0
    refused = sum(isinstance(r, lt.Refused) for r in references)
    log(f"  {len(requests)} requests answered single-threaded in {single:.0f}s ({len(requests) / single:.1f} calls/s; "
        f"{refused} refused with an onnxport error, which concurrent calls must repeat)")

    rss_loaded = lt.rss_mb()
    log(f"  warm-up: {args.warmup_seconds:.0f}s of concurrent traffic (RSS {rss_loaded:.1f} MB)")
    warm = lt.replay(requests, answer, references, args.threads, args.warmup_seconds, seed=args.seed + 1)
    gc.collect()
    load_before = os.getloadavg()
    start_mb = lt.rss_mb()
    log(f"  timed run (RSS after warm-up {start_mb:.1f} MB, load {load_before})")
    result = lt.replay(requests, answer, references, args.threads, args.minutes * 60, seed=args.seed + 2,
                       sample_every=args.sample_seconds, log=log)
    gc.collect()
    end_mb = lt.rss_mb()
    row = _summary(result, start_mb, end_mb)
    row.update(tasks=tasks, threads=args.threads, requests=len(requests), refused_requests=refused, single_threaded_calls_per_s=len(requests) / single,
               rss_loaded_mb=round(rss_loaded, 1), warmup={"calls": warm.total_calls,
               "errors": sum(warm.errors.values()), "mismatches": sum(warm.mismatches.values()),
               "examples": warm.examples}, load_before=load_before, load_after=os.getloadavg())
    log(f"  {row['calls']} calls in {row['seconds']:.0f}s, errors {row['errors']}, mismatches {row['mismatches']}, "
        f"RSS {start_mb:.1f} -> {end_mb:.1f} MB ({row['mb_per_10k_calls']} MB per 10,000 calls, slope "
        f"{row['slope_mb_per_10k_calls']})")
    for example in row["examples"] + warm.examples:
        log(f"    ! {example}")
    return row


def run_create_drop(args, exports) -> dict:
    import numpy as np

    from onnxport.runtime import OnnxModelForMaskedLM

    export_dir = exports["fill-mask"]
    log(f"\n== create-drop: OnnxModelForMaskedLM.from_pretrained({export_dir.name}) x {args.create_drop}")
    ids = np.array([[0, 100, 200, 300, 2]], np.int64)  # <s> three tokens </s> (the vocabulary has 2,000)

    def once():
        model = OnnxModelForMaskedLM.from_pretrained(export_dir, provider="cpu")
        model(input_ids=ids)
        del model

    warmup = min(20, args.create_drop // 10)
    for _ in range(warmup):
        once()
    gc.collect()
    start_mb = lt.rss_mb()
    samples = [(0, start_mb)]
    t0 = time.perf_counter()
    for i in range(1, args.create_drop + 1):
        once()
        if i % 50 == 0 or i == args.create_drop:
            gc.collect()
            samples.append((i, lt.rss_mb()))
            log(f"    {i}: {samples[-1][1]:.1f} MB")
    end_mb = samples[-1][1]
    slope = float(np.polyfit([s[0] for s in samples], [s[1] for s in samples], 1)[0]) if len(samples) > 2 else None
    row = {"iterations": args.create_drop, "warmup": warmup, "seconds": round(time.perf_counter() - t0, 1),
           "rss_start_mb": round(start_mb, 1), "rss_end_mb": round(end_mb, 1),
           "growth_mb": round(end_mb - start_mb, 1), "slope_mb_per_100": round(slope * 100, 3) if slope else slope,
           "samples": [(i, round(m, 1)) for i, m in samples]}
    log(f"  RSS {start_mb:.1f} -> {end_mb:.1f} MB over {args.create_drop} create/drop ({row['slope_mb_per_100']} MB per 100)")
    return row


def run_triton(args, exports, work: Path) -> dict:
    from parity_tests import triton_server

    try:
        import tritonclient.http as http
    except ImportError:
        return {"skipped": "tritonclient[http] is not installed (pip install onnxport[triton])"}
    from onnxport.integrations import RowRunner, jsonable
    from onnxport.integrations.triton import write_repository
    from onnxport.runtime import pipeline

    log(f"\n== triton: {args.triton_threads} client threads, {args.triton_minutes} min, 127.0.0.1")
    venv = triton_server.build_venv()
    repo = work / "triton-repo"
    if repo.exists():
        shutil.rmtree(repo)
    names = {task: task.replace("-", "_") for task in exports}
    for task, path in exports.items():
        write_repository(path, repo, names[task], max_batch_size=16, max_queue_delay_us=2000)
    # The in-process reference: one row at a time through the same RowRunner the Python backend uses.
    runners = {task: RowRunner(pipeline(task, str(path), provider="cpu"), task) for task, path in exports.items()}
    pool = lt.sentences()
    requests, references = [], []
    for i, task in enumerate(exports):
        mask = runners[task].pipe.tokenizer.mask_token
        rows = [row for request in lt.requests_for(task, pool, args.requests * 3, seed=args.seed + 100 + i,
                                                   mask_token=mask) if (row := lt.row_of(request)) is not None]
        for row in rows[:args.requests]:
            fields = {name.lower(): value for name, value in row.items()}
            if "choices" in fields:
                fields["choices"] = json.loads(fields["choices"])
            answer = runners[task].run([fields])[0]
            if isinstance(answer, Exception):  # refused in-process too (none in the recorded runs): not sent
                log(f"    {task}: skipped a row the pipeline refuses: {answer}")
                continue
            requests.append(lt.Request(task, (row,)))
            references.append(json.loads(json.dumps(jsonable(answer))))
    del runners
    log(f"  {len(requests)} one-row requests, references computed in-process")
    logs = work / "triton-logs"
    logs.mkdir(parents=True, exist_ok=True)
    local = threading.local()

    def answer(request):
        import numpy as np

        client = getattr(local, "client", None)
        if client is None:
            client = local.client = http.InferenceServerClient(server.url, connection_timeout=30.0,
                                                               network_timeout=60.0)
        row = request.args[0]
        inputs = []
        for name, value in row.items():
            tensor = http.InferInput(name, [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[value.encode()]], dtype=object))
            inputs.append(tensor)
        result = client.infer(names[request.task], inputs, timeout=int(60e6))
        return json.loads(result.as_numpy("RESULT")[0, 0])

    def compare(got, want):
        return lt.close_difference(got, want, 1e-4)

    with triton_server.running_server(repo, logs, venv, ready_model=names[list(exports)[-1]], timeout=300) as server:
        deadline = time.monotonic() + 300
        while True:
            index = {m["name"]: m for m in server.post("/v2/repository/index")}
            states = {n: index.get(n, {}).get("state") for n in names.values()}
            if all(s == "READY" for s in states.values()):
                break
            failed = {n: index[n].get("reason") for n, s in states.items() if s == "UNAVAILABLE"}
            if failed or time.monotonic() > deadline:
                raise RuntimeError(f"models not ready: {failed or states}\n{server.log()[-3000:]}")
            time.sleep(0.5)
        pgid = server.process.pid

        def server_rss():
            return lt.group_rss_mb(pgid)[0]

        loaded_mb, processes = lt.group_rss_mb(pgid)
        log(f"  server ready: {processes} processes, RSS {loaded_mb:.1f} MB; warm-up {args.warmup_seconds:.0f}s")
        warm = lt.replay(requests, answer, references, args.triton_threads, args.warmup_seconds, compare=compare,
                         seed=args.seed + 3)
        load_before = os.getloadavg()
        start_mb = server_rss()
        log(f"  timed run (server RSS after warm-up {start_mb:.1f} MB, load {load_before})")
        result = lt.replay(requests, answer, references, args.triton_threads, args.triton_minutes * 60,
                           compare=compare, seed=args.seed + 4, sample_every=args.sample_seconds, sample=server_rss,
                           max_calls=args.triton_max_requests, log=log)
        end_mb = server_rss()
        stats = {m["name"]: {"inference_count": m["inference_count"], "execution_count": m["execution_count"]}
                 for m in server.get("/v2/models/stats")["model_stats"] if m["name"] in names.values()}
        # glog lines: E = error (W, I: warnings, information)
        server_log_errors = [line for line in server.log().splitlines()
                             if line[:1] == "E" and line[1:5].isdigit() or "Traceback" in line][:20]
    row = _summary(result, start_mb, end_mb)
    row.update(threads=args.triton_threads, requests=len(requests), server_processes=processes,
               rss_loaded_mb=round(loaded_mb, 1), growth_mb=round(end_mb - start_mb, 1), model_stats=stats,
               server_log_errors=server_log_errors,
               warmup={"calls": warm.total_calls, "errors": sum(warm.errors.values()),
                       "mismatches": sum(warm.mismatches.values()), "examples": warm.examples},
               load_before=load_before, load_after=os.getloadavg())
    log(f"  {row['calls']} requests in {row['seconds']:.0f}s, failed {row['errors']}, answers differing "
        f"{row['mismatches']}, server RSS {start_mb:.1f} -> {end_mb:.1f} MB ({row['mb_per_10k_calls']} MB per 10,000)")
    for example in row["examples"] + warm.examples:
        log(f"    ! {example}")
    return row


# ----------------------------------------------------------------------------- report
def markdown(report: dict) -> str:
    a, lines = report["args"], []
    lines += ["# Sustained load", "",
              f"Machine: {report['machine']['cpu']}, onnxruntime {report['machine']['onnxruntime']}; load average "
              f"(1, 5, 15 min) at start {_load(report['load_at_start'])}, at end {_load(report['load_at_end'])}.", ""]
    p = report.get("pipelines")
    if p:
        lines += [f"## Pipelines: {a['threads']} threads, {a['minutes']} min", "",
                  f"{len(p['tasks'])} pipelines ({', '.join(p['tasks'])}) shared by {p['threads']} threads; "
                  f"{p['requests']} distinct requests replayed at random, each answer compared exactly with the "
                  f"single-threaded answer. Load average before -> after: {_load(p['load_before'])} -> "
                  f"{_load(p['load_after'])}.", "",
                  "| calls | errors | answers differing | RSS after warm-up -> end (MB) | MB per 10,000 calls: end - start; "
                  "slope; slope of the second half |", "|---:|---:|---:|---|---|",
                  f"| {p['calls']} | {p['errors']} | {p['mismatches']} | {p['rss_start_mb']} -> {p['rss_end_mb']} | "
                  f"{p['mb_per_10k_calls']}; {_num(p['slope_mb_per_10k_calls'])}; "
                  f"{_num(p.get('second_half_slope_mb_per_10k_calls'))} |", "",
                  "RSS samples (s, calls, MB): " + ", ".join(f"{t:.0f}/{c}/{m}" for t, c, m in p["samples"]) + ".", "",
                  "Calls per task: " + ", ".join(f"{k} {v}" for k, v in p["calls_by_task"].items()) + ".", ""]
    c = report.get("create-drop")
    if c:
        lines += ["## OnnxModel created and dropped", "",
                  f"`OnnxModelForMaskedLM.from_pretrained` + one call + drop, {c['iterations']} times after "
                  f"{c['warmup']} warm-up: RSS {c['rss_start_mb']} -> {c['rss_end_mb']} MB ({c['growth_mb']:+} MB; "
                  f"slope {c['slope_mb_per_100']} MB per 100); samples " +
                  ", ".join(f"{i}: {m}" for i, m in c["samples"]) + ".", ""]
    t = report.get("triton")
    if t and "skipped" not in t:
        lines += [f"## Triton: {t['threads']} client threads, {a['triton_minutes']} min", "",
                  f"{t['requests']} one-row requests over {len(t['model_stats'])} Python-backend models; "
                  f"{t['server_processes']} server processes. Load average before -> after: "
                  f"{_load(t['load_before'])} -> {_load(t['load_after'])}.", "",
                  "| requests | failed | answers differing (> 1e-4) | server RSS after warm-up -> end (MB) | MB per 10,000 "
                  "requests: end - start; slope; slope of the second half |", "|---:|---:|---:|---|---|",
                  f"| {t['calls']} | {t['errors']} | {t['mismatches']} | {t['rss_start_mb']} -> {t['rss_end_mb']} | "
                  f"{t['mb_per_10k_calls']}; {_num(t['slope_mb_per_10k_calls'])}; "
                  f"{_num(t.get('second_half_slope_mb_per_10k_calls'))} |", "",
                  "Server RSS samples (s, requests, MB): " + ", ".join(f"{s:.0f}/{c}/{m}" for s, c, m in t["samples"])
                  + ".", ""]
    elif t:
        lines += ["## Triton", "", f"skipped: {t['skipped']}", ""]
    return "\n".join(lines) + "\n"


def _load(values) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in values) + ")"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sustained_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--tasks", default=",".join(lt.TASKS))
    parser.add_argument("--minutes", type=float, default=10.0, help="pipelines section")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--triton-minutes", type=float, default=5.0)
    parser.add_argument("--triton-threads", type=int, default=8)
    parser.add_argument("--triton-max-requests", type=int, default=1_000_000, help="bound on the requests sent")
    parser.add_argument("--create-drop", type=int, default=500)
    parser.add_argument("--requests", type=int, default=200, help="distinct requests per task")
    parser.add_argument("--warmup-seconds", type=float, default=60.0)
    parser.add_argument("--sample-seconds", type=float, default=30.0)
    parser.add_argument("--intra-op-threads", type=int, default=None, help="ONNX Runtime threads per session")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(RESULTS / "work" / "sustained"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; valid: {', '.join(SECTIONS)}")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    report = {"args": vars(args), "machine": h.machine_info(args.intra_op_threads or os.cpu_count()),
              "load_at_start": os.getloadavg()}
    log(f"machine: {report['machine']}")
    exports = build_exports(work, tasks)
    if "create-drop" in sections:  # first: nothing freed by the other sections moves its figure
        report["create-drop"] = run_create_drop(args, build_exports(work, ["fill-mask"]))
    if "pipelines" in sections:
        report["pipelines"] = run_pipelines(args, exports)
    if "triton" in sections:
        report["triton"] = run_triton(args, exports, work)
    report["load_at_end"] = os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    name = "sustained_load" + ("" if set(sections) == set(SECTIONS) else "-" + "-".join(sections))
    h.write_json(out / f"{name}.json", report)
    text = markdown(report)
    (out / f"{name}.md").write_text(text, encoding="utf-8")
    log("\n" + text)
    log(f"wrote {out / (name + '.md')}, {out / (name + '.json')}")
    failed = any(report.get(s, {}).get("errors") or report.get(s, {}).get("mismatches") for s in ("pipelines", "triton"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
