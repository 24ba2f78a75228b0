"""Checkpoint tensors read from disk only when a model copies them in.

``checkpoints.load_state_dict`` materialises the whole state dict (and
``read_safetensors`` reads the whole file first): two to three copies of the
weights beside the model's own. An exporter only copies each tensor into a
parameter once, so here a safetensors checkpoint becomes a dict of
``LazyTensor``: shape and dtype from the header, bytes read when numpy asks for
the array, freed after the copy. Peak memory of loading is then the model plus
its largest tensor.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Optional

import numpy as np

from .. import checkpoints


class LazyTensor:
    """One tensor of a safetensors file; ``np.asarray(t)`` reads it (bf16 widened to float32, as the reader does)."""

    def __init__(self, path: str, name: str, offset: int, length: int, dtype: str, shape: tuple[int, ...]) -> None:
        self.path, self.name, self.offset, self.length = path, name, offset, length
        self.stored_dtype = dtype
        self.shape = shape

    @property
    def dtype(self) -> np.dtype:
        if self.stored_dtype == "BF16":
            return np.dtype(np.float32)
        return np.dtype(checkpoints._SAFETENSORS_DTYPES[self.stored_dtype])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        raw_dtype = np.uint16 if self.stored_dtype == "BF16" else self.dtype
        count = self.length // np.dtype(raw_dtype).itemsize
        array = np.fromfile(self.path, dtype=raw_dtype, count=count, offset=self.offset)
        if array.size != count:
            raise checkpoints.CheckpointError(f"{self.path}: tensor {self.name!r} is truncated.")
        if self.stored_dtype == "BF16":
            array = checkpoints._bf16_to_f32(array)
        array = array.reshape(self.shape)
        return array if dtype is None else array.astype(dtype, copy=False)


def safetensors_header(path: str) -> tuple[dict, int]:
    """The JSON header of a safetensors file and where its tensor data starts."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than file")
            header = json.loads(fh.read(header_len))
    except OSError as err:
        raise checkpoints.CheckpointError(f"Cannot read {path}: {err}") from err
    except (struct.error, ValueError) as err:
        raise checkpoints.CheckpointError(
            f"{path} is not a valid safetensors file ({err}); it may be truncated or corrupt — "
            "re-download or re-save it."
        ) from err
    return header, 8 + header_len


def lazy_state_dict(checkpoint_dir: str) -> Optional[dict[str, LazyTensor]]:
    """{HF name: LazyTensor} for a safetensors checkpoint (single or sharded); None for ``pytorch_model.bin``."""
    files = checkpoints.find_weight_files(checkpoint_dir)
    if not all(f.endswith(".safetensors") for f in files):
        return None
    state: dict[str, LazyTensor] = {}
    for path in files:
        header, start = safetensors_header(path)
        body = os.path.getsize(path) - start
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            if end > body or begin > end:
                raise checkpoints.CheckpointError(
                    f"{path}: tensor {name!r} points past the end of the file; the file is truncated.")
            if info["dtype"] != "BF16" and info["dtype"] not in checkpoints._SAFETENSORS_DTYPES:
                raise checkpoints.CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}.")
            state[name] = LazyTensor(path, name, start + begin, end - begin, info["dtype"], tuple(info["shape"]))
    return state
