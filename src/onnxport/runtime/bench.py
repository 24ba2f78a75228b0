"""`onnxport bench`: the latency of an export on this machine, shape by shape (no framework needed).

Each shape gets warm-up calls, then timed calls of the whole model call (input checks included, as a
user's call pays them); the report gives the median, p90, min and max in milliseconds and the provider
and thread counts that really ran. For comparisons between graphs or engines, use ``benchmarks/``,
which interleaves its candidates in one process.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ..artifact.io_spec import empty_past, make_inputs
from ..artifact.records import Record
from .models import load_model

DEFAULT_SHAPES = ((1, 128), (8, 128))


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"1x128,8x128"`` -> [(1, 128), (8, 128)]."""
    shapes = []
    for part in text.split(","):
        try:
            batch, sequence = (int(x) for x in part.strip().lower().split("x"))
        except ValueError:
            raise InputError(f"--shapes takes BATCHxSEQUENCE items separated by commas (e.g. 1x128,8x128), "
                             f"got {part!r}.") from None
        if batch < 1 or sequence < 1:
            raise InputError(f"--shapes: batch and sequence must be >= 1, got {part!r}.")
        shapes.append((batch, sequence))
    return shapes


@dataclass
class ShapeTiming:
    batch: int
    sequence: int
    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float


@dataclass
class BenchReport(Record):
    export_dir: str
    task: str
    provider: str
    intra_op_threads: int
    machine: dict[str, Any]
    timings: list[ShapeTiming] = field(default_factory=list)

    def table(self) -> str:
        lines = [f"{self.export_dir} ({self.task}) on {self.provider}, {self.intra_op_threads or 'default'} intra-op "
                 f"threads, {self.machine['processor'] or self.machine['machine']}",
                 f"{'shape':>10} {'runs':>5} {'median ms':>10} {'p90 ms':>9} {'min ms':>9} {'max ms':>9}"]
        for t in self.timings:
            lines.append(f"{t.batch:>4}x{t.sequence:<5} {t.runs:>5} {t.median_ms:>10.2f} {t.p90_ms:>9.2f} "
                         f"{t.min_ms:>9.2f} {t.max_ms:>9.2f}")
        return "\n".join(lines)


def bench(export_dir: str | os.PathLike, shapes=DEFAULT_SHAPES, provider: str = "auto", threads: Optional[int] = None,
          warmup: int = 3, runs: int = 20, fuse_attention: bool = True) -> BenchReport:
    if warmup < 0 or runs < 1:
        raise InputError(f"warmup must be >= 0 and runs >= 1, got warmup={warmup}, runs={runs}.")
    options = {} if threads is None else {"intra_op_threads": threads}
    model = load_model(export_dir, provider=provider, load_tokenizer=False, fuse_attention=fuse_attention, **options)
    spec = model.spec
    limit = spec.max_sequence_length
    report = BenchReport(os.fspath(export_dir), spec.task, model.session.get_providers()[0], threads or 0,
                         {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()})
    for batch, sequence in shapes:
        if limit is not None and sequence > limit:
            raise InputError(f"--shapes: sequence {sequence} exceeds the export's {limit} positions.")
        feeds = make_inputs(spec, batch, sequence, seed=0, pad=False)
        if spec.with_past:
            feeds.update(empty_past(spec, batch))
        kwargs = {t.name: feeds[t.name] for t in spec.inputs if not t.is_cache}
        for _ in range(warmup):
            model(**kwargs)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(**kwargs)
            times.append((time.perf_counter() - start) * 1000)
        t = np.asarray(times)
        report.timings.append(ShapeTiming(batch, sequence, runs, float(np.median(t)), float(np.percentile(t, 90)),
                                          float(t.min()), float(t.max())))
    return report
