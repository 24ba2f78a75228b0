"""HF-format checkpoints <-> one canonical numpy state dict with HF PyTorch names.

Reads ``model.safetensors``, sharded safetensors (``model.safetensors.index.json``),
``pytorch_model.bin`` and its sharded form, without importing any framework and
without executing pickled code: the ``.bin`` reader unpickles with an allow-list
that only rebuilds tensors from the archive's raw storages.

Writes safetensors (sharded with an index above ``max_shard_size``).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
from .errors import CheckpointError  # noqa: F401  (re-exported: the old import path keeps working)

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PT_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"

StateDict = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- safetensors
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    # bfloat16 is the upper half of a float32; numpy has no bf16 type.
    return (raw.astype(np.uint32) << 16).view(np.float32)


class SafetensorsTensor:
    """One tensor of a safetensors file, read when numpy asks for it (``np.asarray(t)``; bf16 widened to float32).

    An exporter copies each tensor into its model once: with these, loading peaks at the model plus its
    largest tensor, not the model plus the whole file."""

    def __init__(self, path: str, name: str, offset: int, length: int, stored_dtype: str, shape: tuple[int, ...]):
        self.path, self.name, self.offset, self.length = path, name, offset, length
        self.stored_dtype, self.shape = stored_dtype, shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32 if self.stored_dtype == "BF16" else _SAFETENSORS_DTYPES[self.stored_dtype])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        raw_dtype = np.dtype(np.uint16 if self.stored_dtype == "BF16" else self.dtype)
        count = self.length // raw_dtype.itemsize
        array = np.fromfile(self.path, dtype=raw_dtype, count=count, offset=self.offset)
        if array.size != count:
            raise CheckpointError(f"{self.path}: tensor {self.name!r} is truncated.")
        if self.stored_dtype == "BF16":
            array = _bf16_to_f32(array)
        array = array.reshape(self.shape)
        return array if dtype is None else array.astype(dtype, copy=False)


def safetensors_tensors(path: str) -> dict[str, SafetensorsTensor]:
    """The tensors of a ``.safetensors`` file, from its header; no tensor data is read yet."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than file")
            header = json.loads(f.read(header_len))
    except OSError as err:
        raise CheckpointError(f"Cannot read {path}: {err}") from err
    except (struct.error, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({err}); it may be truncated or corrupt — re-download or re-save it."
        ) from err
    body_start, body_len = 8 + header_len, size - 8 - header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if end > body_len or start > end:
            raise CheckpointError(f"{path}: tensor {name!r} points past the end of the file; the file is truncated.")
        if info["dtype"] != "BF16" and info["dtype"] not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}.")
        tensors[name] = SafetensorsTensor(path, name, body_start + start, end - start, info["dtype"],
                                          tuple(info["shape"]))
    return tensors


def read_safetensors(path: str) -> StateDict:
    """Read a ``.safetensors`` file. bf16 tensors are widened to float32 (numpy has no bf16)."""
    return {name: np.asarray(tensor) for name, tensor in safetensors_tensors(path).items()}


def write_safetensors(state: Mapping[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, path, metadata=metadata or {"format": "pt"})


# ----------------------------------------------------------------------------- pytorch_model.bin
# torch storage class name -> numpy dtype of its raw bytes
_TORCH_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_TORCH_DTYPE_NAMES = {  # torch.<dtype> as found in newer archives (UntypedStorage + dtype)
    "float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": np.uint16,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}


@dataclass
class _StorageRef:
    dtype: type
    data: np.ndarray  # flat array of the storage's elements
    is_bf16: bool


@dataclass
class _TorchDtype:
    name: str


def _rebuild_tensor(storage: _StorageRef, offset: int, size, stride, *_unused) -> np.ndarray:
    if len(size) == 0:
        array = storage.data[offset : offset + 1].reshape(())
    else:
        itemsize = storage.data.itemsize
        array = np.lib.stride_tricks.as_strided(
            storage.data[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
        ).copy()
    return _bf16_to_f32(array) if storage.is_bf16 else array


def _rebuild_parameter(data, *_unused):
    return data


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Unpickles a torch zip archive's data.pkl; any global outside the allow-list is refused."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._source = source
        self._storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            from collections import OrderedDict

            return OrderedDict
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return name
        if module == "torch" and name == "UntypedStorage":
            return name
        if module == "torch" and name in _TORCH_DTYPE_NAMES:
            return _TorchDtype(name)
        raise CheckpointError(
            f"{self._source} references {module}.{name}, which a weights file has no reason to contain; "
            "refusing to load it (onnxport never executes pickled code). Convert the checkpoint to safetensors."
        )

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage":
            raise CheckpointError(f"{self._source}: unsupported persistent id {kind!r}.")
        if isinstance(storage_type, _TorchDtype):
            dtype_name = storage_type.name
            raw_dtype = _TORCH_DTYPE_NAMES[dtype_name]
            is_bf16 = dtype_name == "bfloat16"
        else:
            raw_dtype = _TORCH_STORAGE_DTYPES[storage_type]
            is_bf16 = storage_type == "BFloat16Storage"
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            self._storages[key] = _StorageRef(raw_dtype, np.frombuffer(raw, dtype=raw_dtype), is_bf16)
        return self._storages[key]


def read_torch_bin(path: str) -> StateDict:
    """Read a ``torch.save`` zip archive of tensors without torch and without running pickled code."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a zip-format torch checkpoint (it is corrupt, truncated, or from torch < 1.6). "
            "Re-save it with a recent torch, or convert it to safetensors."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            pkl_names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pkl_names:
                raise CheckpointError(f"{path} has no data.pkl; it is not a torch checkpoint.")
            prefix = pkl_names[0].rsplit("/", 1)[0] if "/" in pkl_names[0] else ""
            with archive.open(pkl_names[0]) as f:
                loaded = _TensorOnlyUnpickler(f, archive, prefix, path).load()
    except (zipfile.BadZipFile, KeyError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path} is corrupt ({err}); re-download or re-save it.") from err
    if not isinstance(loaded, dict) or not all(isinstance(v, np.ndarray) for v in loaded.values()):
        raise CheckpointError(f"{path} does not hold a flat state dict of tensors.")
    return dict(loaded)


# ----------------------------------------------------------------------------- directories
def _read_index(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path} is not a valid shard index ({err}).") from err
    return sorted(set(weight_map.values()))


def find_weight_files(checkpoint_dir: str) -> list[str]:
    """The weight files of a checkpoint directory, preferring safetensors like transformers."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"Checkpoint directory {checkpoint_dir!r} does not exist.")
    for single, index in ((SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME), (PT_WEIGHTS_NAME, PT_WEIGHTS_INDEX_NAME)):
        if os.path.isfile(os.path.join(checkpoint_dir, single)):
            return [os.path.join(checkpoint_dir, single)]
        index_path = os.path.join(checkpoint_dir, index)
        if os.path.isfile(index_path):
            shards = [os.path.join(checkpoint_dir, s) for s in _read_index(index_path)]
            missing = [s for s in shards if not os.path.isfile(s)]
            if missing:
                raise FileNotFoundError(f"{index_path} lists shards that are missing: {missing}.")
            return shards
    raise FileNotFoundError(
        f"No weights in {checkpoint_dir!r}: expected {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME}, "
        f"{PT_WEIGHTS_NAME} or {PT_WEIGHTS_INDEX_NAME} (TF .h5 and Flax .msgpack weights are not read; "
        "save the model with save_pretrained from any onnxport framework to get safetensors)."
    )


def lazy_state_dict(checkpoint_dir: str) -> dict[str, SafetensorsTensor] | None:
    """{HF name: SafetensorsTensor} of a safetensors checkpoint (single or sharded), read tensor by tensor
    as a model copies them in; None for ``pytorch_model.bin`` checkpoints (use ``load_state_dict``)."""
    files = find_weight_files(checkpoint_dir)
    if not all(f.endswith(".safetensors") for f in files):
        return None
    state: dict[str, SafetensorsTensor] = {}
    for file in files:
        state.update(safetensors_tensors(file))
    return state


def load_state_dict(path: str, dtype: type | None = np.float32) -> StateDict:
    """Load a checkpoint directory or a single weights file into a numpy state dict.

    Floating tensors are cast to ``dtype`` (float32 by default; ``None`` keeps fp16 as stored,
    bf16 always arrives as float32).
    """
    path = os.fspath(path)
    files = [path] if os.path.isfile(path) else find_weight_files(path)
    state: StateDict = {}
    for file in files:
        part = read_safetensors(file) if file.endswith(".safetensors") else read_torch_bin(file)
        state.update(part)
    if dtype is not None:
        state = {k: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in state.items()}
    return state


def save_state_dict(state: Mapping[str, np.ndarray], save_directory: str, max_shard_size: int | None = None) -> list[str]:
    """Write safetensors; shard (with an index like transformers) when above ``max_shard_size`` bytes."""
    os.makedirs(save_directory, exist_ok=True)
    items = sorted(state.items())
    total = sum(v.nbytes for _, v in items)
    if max_shard_size is None or total <= max_shard_size:
        path = os.path.join(save_directory, SAFE_WEIGHTS_NAME)
        write_safetensors(dict(items), path)
        return [path]
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, value in items:
        if shards[-1] and size + value.nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = value
        size += value.nbytes
    weight_map, paths = {}, []
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(shard, os.path.join(save_directory, file))
        paths.append(os.path.join(save_directory, file))
        weight_map.update({k: file for k in shard})
    with open(os.path.join(save_directory, SAFE_WEIGHTS_INDEX_NAME), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    return paths


# ----------------------------------------------------------------------------- fitting a state dict to a model
@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, checkpoint, model)
    newly_initialized: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched)

    def __str__(self) -> str:
        lines = []
        if self.missing:
            lines.append(f"missing from the checkpoint (randomly initialized): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"in the checkpoint but not used by this model: {', '.join(self.unexpected)}")
        for name, got, want in self.mismatched:
            lines.append(f"shape mismatch for {name}: checkpoint {got}, model {want}")
        return "\n".join(lines) or "all weights matched"


def _legacy_rename(name: str) -> str:
    # Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
    if name.endswith(".gamma"):
        return name[: -len(".gamma")] + ".weight"
    if name.endswith(".beta"):
        return name[: -len(".beta")] + ".bias"
    return name


def fit_state_dict(
    state: Mapping[str, np.ndarray],
    expected_shapes: Mapping[str, tuple],
    base_model_prefix: str,
    optional_keys: Iterable[str] = (),
    ignore_unexpected: Iterable[str] = (),
) -> tuple[StateDict, LoadReport]:
    """Rename a checkpoint's keys to the model's and report what does not fit.

    Handles the prefix difference between base-model and head-model checkpoints both ways
    (``roberta.encoder...`` <-> ``encoder...``), as transformers does. ``optional_keys`` may be
    missing without being reported (tied or derived weights).
    """
    renamed = {_legacy_rename(k): v for k, v in state.items()}
    prefix = base_model_prefix + "."
    model_has_prefix = any(k.startswith(prefix) for k in expected_shapes)
    ckpt_has_prefix = any(k.startswith(prefix) for k in renamed)
    if model_has_prefix and not ckpt_has_prefix:
        # base-model checkpoint into a head model
        renamed = {(k if k in expected_shapes else prefix + k): v for k, v in renamed.items()}
    elif ckpt_has_prefix and not model_has_prefix:
        # head-model checkpoint into a base model: keep only the base model's weights
        renamed = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in renamed.items()}

    optional = set(optional_keys)
    ignored = tuple(ignore_unexpected)
    report = LoadReport()
    fitted: StateDict = {}
    for name, shape in expected_shapes.items():
        if name not in renamed:
            if name not in optional:
                report.missing.append(name)
            continue
        value = renamed[name]
        if tuple(value.shape) != tuple(shape):
            report.mismatched.append((name, tuple(value.shape), tuple(shape)))
            continue
        fitted[name] = value
    report.unexpected = sorted(
        k for k in renamed if k not in expected_shapes and not any(k.endswith(s) for s in ignored)
    )
    return fitted, report
