"""Quiet imports and loggers: notices of other libraries that would cut into a command's output."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import logging
import tempfile
from typing import Iterator, Optional


def import_quietly(module: str) -> None:
    """Import ``module`` with the process's stderr (fd 2) parked in a file, shown only if the import fails.

    TensorFlow 2.21 writes its import-time notices (oneDNN, no CUDA driver) through absl before
    TF_CPP_MIN_LOG_LEVEL takes effect; they would cut into a command's output (the demo's table)."""
    import sys

    if importlib.util.find_spec(module) is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as parked:
        os.dup2(parked.fileno(), 2)
        try:
            importlib.import_module(module)
            failed = False
        except Exception:  # the caller reports it; here, what it printed
            failed = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if failed:
            parked.seek(0)
            sys.stderr.write(parked.read().decode(errors="replace"))


@contextlib.contextmanager
def logger_level(name: Optional[str], level: int) -> Iterator[None]:
    """Set logger ``name`` (None: the root logger) to ``level`` for the block, then restore it."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
