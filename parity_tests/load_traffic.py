"""Concurrent traffic for the sustained-load benchmark and its short version in the suite.

A pool of mixed requests per task (real English text: standard-library docstrings, as trained_roberta.py
reads them), each answered once single-threaded (the reference), then replayed at random by many threads
against the same pipelines: every answer is compared with the reference for its request (exactly: the same
request pads and batches the same way, so ONNX Runtime computes the same numbers), every exception counted,
and the process's resident memory sampled as the calls go by.

Imported by the benchmarks as ``parity_tests.load_traffic`` and by the tests as ``load_traffic``: stdlib,
numpy and onnxport only.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

TASKS = ("fill-mask", "text-classification", "token-classification", "question-answering", "feature-extraction",
         "multiple-choice", "text-generation")
AGGREGATIONS = ("none", "simple", "first", "average", "max")


@dataclass
class Request:
    """One pipeline call: ``pipe(*args, **kwargs)`` of the pipeline for ``task``."""

    task: str
    args: tuple
    kwargs: dict = field(default_factory=dict)

    def __call__(self, pipe):
        return pipe(*self.args, **self.kwargs)


def sentences() -> list[str]:
    """Held-out docstring sentences of the standard library (25-300 characters of prose each)."""
    try:
        from parity_tests.trained_roberta import held_out_text
    except ImportError:  # run from parity_tests/ (pytest's rootdir on sys.path)
        from trained_roberta import held_out_text

    return held_out_text()


@dataclass
class Refused:
    """A reference that is an onnxport error (e.g. a mask truncated away): every answer must be the same error."""

    error: str

    @classmethod
    def of(cls, err: BaseException) -> "Refused":
        return cls(f"{type(err).__name__}: {err}")


def references_for(requests: Sequence[Request], answer: Callable[[Request], Any]) -> list[Any]:
    """The single-threaded answer to each request; an onnxport refusal is kept as ``Refused`` (anything else raises)."""
    from onnxport.errors import OnnxportError

    out = []
    for request in requests:
        try:
            out.append(answer(request))
        except OnnxportError as err:
            out.append(Refused.of(err))
    return out


class TextMaker:
    """Texts of mixed length from ``pool``: a few words, one sentence, or several sentences (past 128 tokens)."""

    def __init__(self, pool: Sequence[str], seed: int) -> None:
        self.pool = list(pool)
        self.rng = random.Random(seed)

    def words(self, low: int, high: int) -> str:
        words = self.rng.choice(self.pool).split()
        n = min(len(words), self.rng.randint(low, high))
        start = self.rng.randint(0, len(words) - n)
        return " ".join(words[start:start + n])

    def text(self) -> str:
        kind = self.rng.random()
        if kind < 0.15:
            return self.words(1, 4)
        if kind < 0.6:
            return self.rng.choice(self.pool)
        return " ".join(self.rng.choice(self.pool) for _ in range(self.rng.randint(2, 7)))

    def masked(self, mask: str) -> str:
        """A sentence with one word masked, followed by 0-4 more sentences (the mask stays in the first 128 tokens)."""
        words = self.rng.choice(self.pool).split()
        words[self.rng.randrange(min(len(words), 20))] = mask
        tail = [self.rng.choice(self.pool) for _ in range(self.rng.choice((0, 0, 1, 2, 4)))]
        return " ".join([" ".join(words), *tail])

    def texts(self, make: Callable[[], Any]) -> Any:
        """One input, or a list of 2-5 (batched inside the pipeline)."""
        return make() if self.rng.random() < 0.6 else [make() for _ in range(self.rng.randint(2, 5))]


def requests_for(task: str, pool: Sequence[str], count: int, seed: int = 0, mask_token: str = "<mask>") -> list[Request]:
    """``count`` calls of the ``task`` pipeline: inputs and options mixed."""
    make = TextMaker(pool, seed)
    rng = make.rng
    out = []
    for _ in range(count):
        if task == "fill-mask":
            args, kwargs = (make.texts(lambda: make.masked(mask_token)),), {"top_k": rng.choice((1, 5))}
        elif task == "text-classification":
            pair = rng.random() < 0.3
            args = (make.texts((lambda: (make.text(), make.text())) if pair else make.text),)
            kwargs = {"top_k": rng.choice((1, None))}
        elif task == "token-classification":
            args, kwargs = (make.texts(make.text),), {"aggregation_strategy": rng.choice(AGGREGATIONS)}
        elif task == "question-answering":
            context = make.text() if rng.random() < 0.5 else " ".join(rng.choice(pool) for _ in range(rng.randint(3, 9)))
            question = f"What {make.words(2, 6)}?"
            args, kwargs = (), {"question": question, "context": context, "top_k": rng.choice((1, 3))}
        elif task == "feature-extraction":
            args = (make.texts(make.text),)
            kwargs = {"pooling": rng.choice(("cls", "mean", "none")), "normalize": rng.random() < 0.5}
        elif task == "multiple-choice":
            args = (make.text(), [make.words(1, 8) for _ in range(rng.randint(2, 4))])
            kwargs = {}
        elif task == "text-generation":
            args = (make.words(2, 12),)
            kwargs = {"max_new_tokens": rng.randint(1, 6)}
            if rng.random() < 0.3:  # seeded sampling is as repeatable as greedy decoding
                kwargs.update(do_sample=True, seed=rng.randrange(1000), top_k=10)
        else:
            raise ValueError(f"no traffic for task {task!r}")
        out.append(Request(task, args, kwargs))
    return out


def row_of(request: Request) -> Optional[dict[str, str]]:
    """The request as one row of Triton inputs (TEXT, TEXT_PAIR, ...), or None when it is not one row with
    default options (the Triton model serves each task with fixed pipeline options)."""
    args, kwargs, task = request.args, request.kwargs, request.task
    if task == "question-answering":
        return {"QUESTION": kwargs["question"], "CONTEXT": kwargs["context"]}
    if task == "multiple-choice":
        import json

        return {"TEXT": args[0], "CHOICES": json.dumps(args[1])}
    first = args[0]
    if isinstance(first, list):
        return None
    if isinstance(first, tuple):
        return {"TEXT": first[0], "TEXT_PAIR": first[1]}
    return {"TEXT": first}


# ----------------------------------------------------------------------------- comparing answers
def difference(got: Any, want: Any, where: str = "answer") -> Optional[str]:
    """None when ``got`` equals ``want`` exactly (arrays: same dtype, shape and bits), else where they differ."""
    if isinstance(want, np.ndarray):
        if not isinstance(got, np.ndarray) or got.dtype != want.dtype or got.shape != want.shape:
            return f"{where}: {type(got).__name__} {getattr(got, 'shape', '')} != array {want.shape}"
        if not np.array_equal(got, want):
            return f"{where}: max |diff| {float(np.max(np.abs(got.astype(np.float64) - want))):.3g}"
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or sorted(got) != sorted(want):
            return f"{where}: keys {sorted(got) if isinstance(got, dict) else type(got).__name__} != {sorted(want)}"
        for key in want:
            found = difference(got[key], want[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return f"{where}: {got!r:.80} != {want!r:.80}"
        for i, (g, w) in enumerate(zip(got, want)):
            found = difference(g, w, f"{where}[{i}]")
            if found:
                return found
        return None
    if got != want or type(got) is not type(want):
        return f"{where}: {got!r:.80} != {want!r:.80}"
    return None


def close_difference(got: Any, want: Any, atol: float, where: str = "answer") -> Optional[str]:
    """As ``difference`` for JSON values, floats within ``atol`` (rows batched with others pad differently)."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or sorted(got) != sorted(want):
            return f"{where}: keys {got!r:.80} != {want!r:.80}"
        return next((d for k in want if (d := close_difference(got[k], want[k], atol, f"{where}.{k}"))), None)
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{where}: {got!r:.80} != {want!r:.80}"
        return next((d for i, (g, w) in enumerate(zip(got, want))
                     if (d := close_difference(g, w, atol, f"{where}[{i}]"))), None)
    if isinstance(want, float):
        if not isinstance(got, (int, float)) or abs(got - want) > atol:
            return f"{where}: {got!r} != {want!r}"
        return None
    return None if got == want else f"{where}: {got!r:.80} != {want!r:.80}"


# ----------------------------------------------------------------------------- memory
def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of one process, MB (VmRSS)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def group_rss_mb(pgid: int) -> tuple[float, int]:
    """Summed RSS (MB) of every process in process group ``pgid`` (a server and its backend stubs), and their count."""
    total, count = 0.0, 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
            if int(stat[stat.rindex(")") + 2:].split()[2]) != pgid:
                continue
            total += rss_mb(entry)
            count += 1
        except (OSError, ValueError):  # gone meanwhile
            continue
    return total, count


# ----------------------------------------------------------------------------- serving from many threads
@dataclass
class LoadResult:
    seconds: float = 0.0
    calls: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    mismatches: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first few errors and mismatches, for the report
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (seconds, calls so far, RSS MB)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


def replay(requests: Sequence[Request], answer: Callable[[Request], Any], references: Sequence[Any], threads: int,
           seconds: float, compare: Callable[[Any, Any], Optional[str]] = difference, seed: int = 0,
           sample_every: float = 0.0, sample: Callable[[], float] = rss_mb, max_calls: Optional[int] = None,
           during: Optional[Callable[[], None]] = None, log: Callable[..., None] = lambda *_: None) -> LoadResult:
    """``threads`` threads call ``answer(request)`` on requests drawn at random for ``seconds`` (or until
    ``max_calls``), each answer compared with ``references[i]``. Every ``sample_every`` seconds the main
    thread records (elapsed, calls, ``sample()``). ``during``: run in the main thread once every thread has
    answered once; the traffic goes on until every thread has answered once more and a second has passed
    (or ``seconds`` are up), then stops."""
    result = LoadResult()
    lock = threading.Lock()
    start_together = threading.Barrier(threads + 1)
    done = threading.Event()
    issued = [0]

    def note(kind: Counter, task: str, text: str) -> None:
        with lock:
            kind[task] += 1
            if len(result.examples) < 20:
                result.examples.append(f"{task}: {text}")

    def worker(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        start_together.wait()
        while not done.is_set():
            with lock:
                if max_calls is not None and issued[0] >= max_calls:
                    return
                issued[0] += 1
            i = rng.randrange(len(requests))
            request = requests[i]
            want = references[i]
            try:
                got = answer(request)
            except Exception as err:  # noqa: BLE001 - every failure is counted and shown, none stops the run
                if isinstance(want, Refused) and Refused.of(err) == want:  # the refusal single-threaded calls get
                    with lock:
                        result.calls[request.task] += 1
                    continue
                note(result.errors, request.task, f"request {i}: {type(err).__name__}: {str(err)[:300]}")
                continue
            found = f"answered {got!r:.80} where single-threaded calls get {want.error}" \
                if isinstance(want, Refused) else compare(got, want)
            with lock:
                result.calls[request.task] += 1
            if found:
                note(result.mismatches, request.task, f"request {i}: {found}")

    workers = [threading.Thread(target=worker, args=(k,), daemon=True, name=f"load-{k}") for k in range(threads)]
    for w in workers:
        w.start()
    start_together.wait()
    t0 = time.monotonic()
    deadline = t0 + seconds
    next_sample = t0 + sample_every if sample_every else float("inf")
    wanted_calls = 0  # with ``during``: calls to see after it, before stopping early
    if during is not None:
        while result.total_calls + sum(result.errors.values()) < threads and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            during()
        finally:
            settle = time.monotonic() + 1.0
            with lock:
                wanted_calls = result.total_calls + sum(result.errors.values()) + threads
    while any(w.is_alive() for w in workers):
        now = time.monotonic()
        if now >= deadline:
            done.set()
        if wanted_calls and now >= settle:
            with lock:
                seen = result.total_calls + sum(result.errors.values())
            if seen >= wanted_calls:
                done.set()
        if now >= next_sample:
            with lock:
                calls = result.total_calls
            result.samples.append((now - t0, calls, sample()))
            log(f"    {now - t0:6.0f}s  {calls} calls  {result.samples[-1][2]:.1f} MB  errors "
                f"{sum(result.errors.values())}  mismatches {sum(result.mismatches.values())}")
            next_sample += sample_every
        time.sleep(min(0.05, max(0.0, min(deadline, next_sample) - now)) if not done.is_set() else 0.05)
    result.seconds = time.monotonic() - t0
    return result


def growth_per_10k(samples: Sequence[tuple[float, int, float]]) -> Optional[float]:
    """Least-squares slope of RSS over calls, in MB per 10,000 calls (None with fewer than 3 samples)."""
    if len(samples) < 3:
        return None
    calls = np.array([s[1] for s in samples], np.float64)
    rss = np.array([s[2] for s in samples], np.float64)
    if np.ptp(calls) == 0:
        return None
    return float(np.polyfit(calls, rss, 1)[0] * 10_000)
