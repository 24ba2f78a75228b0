"""HF-format checkpoints <-> one canonical numpy state dict with HF PyTorch names.

Reads ``model.safetensors``, sharded safetensors (``model.safetensors.index.json``),
``pytorch_model.bin`` and its sharded form, without importing any framework and
without executing pickled code: the ``.bin`` reader unpickles with an allow-list
that only rebuilds tensors from the archive's raw storages.

Writes safetensors (sharded with an index above ``max_shard_size``).
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import pickle
import struct
import zipfile
import zlib
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
# safetensors' own limit: a larger header is refused before it is read.
_MAX_SAFETENSORS_HEADER = 100_000_000


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    # bfloat16 is the upper half of a float32; numpy has no bf16 type.
    return (raw.astype(np.uint32) << 16).view(np.float32)


def check_finite(name: str, array: np.ndarray, source: str) -> None:
    """Refuse a float tensor holding NaN/inf: it would only surface later as an export "beyond tolerance"."""
    if array.size == 0 or not np.issubdtype(array.dtype, np.floating):
        return
    # min and max propagate NaN and are +-inf when any element is: two reductions, no temporary mask.
    if np.isfinite(array.min()) and np.isfinite(array.max()):
        return
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    raise CheckpointError(
        f"{source}: tensor {name!r} has {bad} NaN/inf values; the checkpoint is corrupt or training diverged. "
        "Use an earlier or re-downloaded checkpoint."
    )


def _is_int(value) -> bool:
    return type(value) is int  # JSON/pickle ints only: not bool, not float


class SafetensorsTensor:
    """One tensor of a safetensors file, read when numpy asks for it (``np.asarray(t)``; bf16 widened to float32).

    An exporter copies each tensor into its model once: with these, loading peaks at the model plus its
    largest tensor, not the model plus the whole file. The header was validated by ``safetensors_tensors``:
    ``length`` is exactly ``shape`` x the dtype size and lies inside the file."""

    def __init__(self, path: str, name: str, offset: int, length: int, stored_dtype: str, shape: tuple[int, ...]):
        self.path, self.name, self.offset, self.length = path, name, offset, length
        self.stored_dtype, self.shape = stored_dtype, shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32 if self.stored_dtype == "BF16" else _SAFETENSORS_DTYPES[self.stored_dtype])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        raw_dtype = np.dtype(np.uint16 if self.stored_dtype == "BF16" else self.dtype)
        count = self.length // raw_dtype.itemsize
        try:
            array = np.fromfile(self.path, dtype=raw_dtype, count=count, offset=self.offset)
        except OSError as err:
            raise CheckpointError(f"Cannot read tensor {self.name!r} from {self.path}: {err}") from err
        if array.size != count:
            raise CheckpointError(f"{self.path}: tensor {self.name!r} is truncated.")
        if self.stored_dtype == "BF16":
            array = _bf16_to_f32(array)
        array = array.reshape(self.shape)
        check_finite(self.name, array, self.path)
        return array if dtype is None else array.astype(dtype, copy=False)


def _tensor_fault(path: str, name: str, fault: str) -> CheckpointError:
    return CheckpointError(f"{path}: tensor {name!r} {fault}; the file is corrupt — re-download or re-save it.")


def _refuse_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"duplicate keys {duplicated}")
    return dict(pairs)


def _read_safetensors_header(path: str) -> tuple[object, int, int]:
    """(parsed header, header length, file size); every fault is a CheckpointError naming the file."""

    def corrupt(fault: str) -> CheckpointError:
        return CheckpointError(
            f"{path} is not a valid safetensors file: {fault}; it may be truncated or corrupt — "
            "re-download or re-save it."
        )

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise corrupt(f"it has {len(prefix)} bytes, fewer than the 8-byte header length")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8:
                raise corrupt(f"its header length {header_len} exceeds the {size - 8} bytes after it")
            if header_len > _MAX_SAFETENSORS_HEADER:
                raise corrupt(
                    f"its header length {header_len} exceeds safetensors' limit of {_MAX_SAFETENSORS_HEADER} bytes"
                )
            raw = f.read(header_len)
    except OSError as err:
        raise CheckpointError(f"Cannot read {path}: {err}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise corrupt(f"its header is not UTF-8 text ({err})") from err
    try:
        header = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except RecursionError as err:
        raise corrupt("its header JSON is nested too deeply") from err
    except ValueError as err:
        raise corrupt(f"its header is not valid JSON ({err})") from err
    return header, header_len, size


def safetensors_tensors(path: str) -> dict[str, SafetensorsTensor]:
    """The tensors of a ``.safetensors`` file, from its header; no tensor data is read yet.

    The header is checked the way the safetensors library checks it, so that no tensor can point
    outside its own bytes: each entry an object with a known ``dtype``, a ``shape`` of non-negative
    ints and ``data_offsets`` inside the data section spanning exactly shape x dtype size, no two
    tensors sharing bytes, ``__metadata__`` a str -> str object."""
    header, header_len, size = _read_safetensors_header(path)
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{path} is not a valid safetensors file: its header is a JSON {type(header).__name__}, not an object."
        )
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: __metadata__ must be an object of strings to strings; the file is corrupt.")
    body_start, body_len = 8 + header_len, size - 8 - header_len
    tensors, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        corrupt = functools.partial(_tensor_fault, path, name)
        if not isinstance(info, dict):
            raise corrupt(f"is described by a JSON {type(info).__name__}, not an object")
        for field_name in ("dtype", "shape", "data_offsets"):
            if field_name not in info:
                raise corrupt(f"has no {field_name!r}")
        stored_dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(stored_dtype, str) or (stored_dtype != "BF16" and stored_dtype not in _SAFETENSORS_DTYPES):
            raise CheckpointError(
                f"{path}: tensor {name!r} has unsupported dtype {stored_dtype!r} "
                f"(onnxport reads {', '.join(sorted([*_SAFETENSORS_DTYPES, 'BF16']))})."
            )
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise corrupt(f"has shape {shape!r}, not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise corrupt(f"has data_offsets {offsets!r}, not a pair of integers")
        start, end = offsets
        if start < 0 or start > end:
            raise corrupt(f"has data_offsets [{start}, {end}], not 0 <= begin <= end")
        if end > body_len:
            raise corrupt(f"points past the end of the file (data_offsets end {end} > {body_len} data bytes); "
                          "the file is truncated")
        itemsize = 2 if stored_dtype == "BF16" else np.dtype(_SAFETENSORS_DTYPES[stored_dtype]).itemsize
        expected = math.prod(shape) * itemsize
        if end - start != expected:
            raise corrupt(f"has shape {shape} of {stored_dtype} ({expected} bytes) but data_offsets "
                          f"[{start}, {end}] span {end - start} bytes")
        if end > start:
            spans.append((start, end, name))
        tensors[name] = SafetensorsTensor(path, name, body_start + start, end - start, stored_dtype, tuple(shape))
    spans.sort()
    for (_, previous_end, previous), (start, end, name) in zip(spans, spans[1:]):
        if start < previous_end:
            raise CheckpointError(
                f"{path}: tensor {name!r} (bytes {start}..{end}) overlaps tensor {previous!r} "
                f"(ending at {previous_end}); "
                "the file is corrupt or crafted — re-download or re-save it."
            )
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

# What can go wrong inside zipfile/pickle/numpy on a malformed archive. The unpickler only ever calls the
# allow-listed constructors below, so any of these means a corrupt file, not a bug to surface raw
# (OSError too: zipfile seeks to offsets read from the file, and a corrupt one is negative).
_MALFORMED_ARCHIVE_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, pickle.UnpicklingError, EOFError, LookupError, ValueError,
    TypeError, AttributeError, ArithmeticError, RuntimeError, struct.error, zlib.error, UnicodeError, OSError,
    MemoryError,  # a corrupt size field the unpickler tried to honour
)
# data.pkl holds names and tensor metadata only (the tensors are separate archive members).
_MAX_PICKLE_BYTES = 512 * 1024 * 1024


# Views of one storage may overlap (a weight and its transpose, an expanded buffer) but together copy at
# most this many times its elements: a file cannot make the reader allocate much more than its own size.
_MAX_VIEW_COPIES = 8


@dataclass(frozen=True, slots=True)
class _StorageKey:
    """What the pickle gets for a storage: a name only (frozen, so pickle BUILD cannot alter it)."""

    key: str
    dtype_name: str
    numel: int  # elements, as declared by the pickle; torch.load refuses a storage of another length


@dataclass(frozen=True, slots=True)
class _TorchDtype:
    name: str


@dataclass(frozen=True, slots=True)
class _TensorView:
    """A tensor as the pickle describes it; read from its storage only after validation, under its name."""

    storage: object
    offset: object
    size: object
    stride: object


def _rebuild_tensor(storage, offset=None, size=None, stride=None, *_unused) -> _TensorView:
    return _TensorView(storage, offset, size, stride)


def _rebuild_parameter(data, *_unused):
    return data


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Unpickles a torch zip archive's data.pkl; any global outside the allow-list is refused.

    Tensors come out as ``_TensorView`` records; ``read_torch_bin`` checks each against its storage
    before touching any byte."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._source = source
        self._storages: dict[tuple[str, str, int], tuple[np.ndarray, bool]] = {}
        # Tensors already copied out, by storage and view (tied weights come back as one shared array, as in
        # torch), and how many elements each storage has given out: together they bound what a small pickle
        # naming one big storage many times can make us allocate.
        self._views: dict[tuple, np.ndarray] = {}
        self._copied: dict[tuple[str, str, int], int] = {}

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
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(
                f"{self._source}: unsupported persistent id {pid!r:.80} (a torch storage is "
                "('storage', type, key, location, numel)); the file is corrupt."
            )
        _, storage_type, key, _location, numel = pid
        if isinstance(storage_type, _TorchDtype):
            dtype_name = storage_type.name
        elif isinstance(storage_type, str) and storage_type in _TORCH_STORAGE_DTYPES:
            dtype_name = storage_type
        else:
            raise CheckpointError(f"{self._source}: storage {key!r:.80} has unsupported type {storage_type!r:.80}.")
        if not isinstance(key, str):
            raise CheckpointError(f"{self._source}: storage key {key!r:.80} is not a string; the file is corrupt.")
        if not _is_int(numel) or numel < 0:
            raise CheckpointError(
                f"{self._source}: storage {key!r} declares {numel!r:.80} elements; the file is corrupt."
            )
        return _StorageKey(key, dtype_name, numel)

    def storage(self, ref: _StorageKey) -> tuple[np.ndarray, bool]:
        """The storage's elements (flat) and whether they are bf16 bits, read once per key and dtype."""
        cache_key = self._cache_key(ref)
        if cache_key not in self._storages:
            member = f"{self._prefix}/data/{ref.key}" if self._prefix else f"data/{ref.key}"
            try:
                raw = self._archive.read(member)
            except KeyError as err:
                raise CheckpointError(
                    f"{self._source}: storage {ref.key!r} is missing from the archive (no {member}); the file is "
                    "truncated or corrupt — re-download or re-save it."
                ) from err
            if ref.dtype_name in _TORCH_DTYPE_NAMES:
                raw_dtype, is_bf16 = np.dtype(_TORCH_DTYPE_NAMES[ref.dtype_name]), ref.dtype_name == "bfloat16"
            else:
                raw_dtype = np.dtype(_TORCH_STORAGE_DTYPES[ref.dtype_name])
                is_bf16 = ref.dtype_name == "BFloat16Storage"
            if len(raw) % raw_dtype.itemsize:
                raise CheckpointError(
                    f"{self._source}: storage {ref.key!r} has {len(raw)} bytes, not a multiple of its "
                    f"{raw_dtype.itemsize}-byte elements; the file is corrupt."
                )
            if len(raw) != ref.numel * raw_dtype.itemsize:
                raise CheckpointError(
                    f"{self._source}: storage {ref.key!r} has {len(raw)} bytes but declares {ref.numel} elements of "
                    f"{raw_dtype.itemsize} bytes; the file is truncated or corrupt."
                )
            self._storages[cache_key] = (np.frombuffer(raw, dtype=raw_dtype), is_bf16)
        return self._storages[cache_key]

    def tensor(self, name: str, view: _TensorView) -> np.ndarray:
        """Copy out a tensor after checking that its view lies inside its storage: the pickle's offset,
        size and strides are untrusted, and ``as_strided`` would read whatever memory they point at."""

        def corrupt(fault: str) -> CheckpointError:
            return CheckpointError(
                f"{self._source}: tensor {name!r} {fault}; the file is corrupt or crafted — "
                "re-download or re-save it."
            )

        if not isinstance(view.storage, _StorageKey):
            raise corrupt("is not built from a storage of the archive")
        offset, size, stride = view.offset, view.size, view.stride
        if not _is_int(offset) or offset < 0:
            raise corrupt(f"has storage offset {offset!r:.80}, not a non-negative integer")
        if not (isinstance(size, tuple) and all(_is_int(n) and n >= 0 for n in size)):
            raise corrupt(f"has size {size!r:.80}, not a tuple of non-negative integers")
        if not (isinstance(stride, tuple) and len(stride) == len(size) and all(_is_int(s) and s >= 0 for s in stride)):
            raise corrupt(f"has strides {stride!r:.80}, not {len(size)} non-negative integers")
        data, is_bf16 = self.storage(view.storage)
        numel, count = data.size, math.prod(size)
        view_key = (self._cache_key(view.storage), offset, size, stride)
        if view_key in self._views:
            return self._views[view_key]
        if count == 0:
            if offset > numel:
                raise corrupt(f"starts at element {offset} of a storage of {numel} elements (out of bounds)")
            array = np.zeros(size, dtype=data.dtype)
        else:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= numel:
                raise corrupt(
                    f"reads elements {offset}..{last} of a storage of {numel} elements (out of bounds: offset "
                    f"{offset}, size {size}, strides {stride})"
                )
            copied = self._copied.get(view_key[0], 0) + count
            if copied > _MAX_VIEW_COPIES * numel:
                raise corrupt(
                    f"brings the elements copied from storage {view.storage.key!r} to {copied}, over "
                    f"{_MAX_VIEW_COPIES}x its {numel} (broadcast or overlapping views)"
                )
            self._copied[view_key[0]] = copied
            itemsize = data.itemsize
            array = np.lib.stride_tricks.as_strided(
                data[offset:], shape=size, strides=tuple(s * itemsize for s in stride)
            ).copy()
        self._views[view_key] = _bf16_to_f32(array) if is_bf16 else array
        return self._views[view_key]

    @staticmethod
    def _cache_key(ref: _StorageKey) -> tuple[str, str, int]:
        return ref.key, ref.dtype_name, ref.numel


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
            # The pickle is read into memory first (bounded by its real size in the archive): a corrupt length
            # field inside it then reads past the end ("truncated") instead of asking for gigabytes.
            info = archive.getinfo(pkl_names[0])
            if info.file_size > _MAX_PICKLE_BYTES:
                raise CheckpointError(f"{path}: data.pkl claims {info.file_size} bytes; a state dict's pickle is a "
                                      "few megabytes at most. The file is corrupt or not a weights file.")
            pickled = archive.read(pkl_names[0])
            unpickler = _TensorOnlyUnpickler(io.BytesIO(pickled), archive, prefix, path)
            loaded = unpickler.load()
            if not isinstance(loaded, dict) or not all(
                isinstance(k, str) and isinstance(v, _TensorView) for k, v in loaded.items()
            ):
                raise CheckpointError(f"{path} does not hold a flat state dict of tensors.")
            state = {name: unpickler.tensor(name, view) for name, view in loaded.items()}
    except CheckpointError:
        raise
    except _MALFORMED_ARCHIVE_ERRORS as err:
        raise CheckpointError(f"{path} is corrupt ({type(err).__name__}: {err}); re-download or re-save it.") from err
    for name, array in state.items():
        check_finite(name, array, path)
    return state


# ----------------------------------------------------------------------------- directories
def _allowed_roots(checkpoint_dir: str) -> list[str]:
    """Where a checkpoint's weight files may resolve to: the directory itself and, for a Hugging Face cache
    snapshot (``…/snapshots/<revision>/``, whose files are symlinks into ``…/blobs/``), that cache's blobs."""
    root = os.path.realpath(checkpoint_dir)
    roots = [root]
    parent = os.path.dirname(root)
    if os.path.basename(parent) == "snapshots":
        roots.append(os.path.join(os.path.dirname(parent), "blobs"))
    return roots


def _contained_path(checkpoint_dir: str, relative: str, named_by: str) -> str:
    """``checkpoint_dir/relative``, refused unless it resolves (symlinks followed) inside the checkpoint:
    a weights file or shard index must not make onnxport read files elsewhere on the machine."""
    joined = os.path.join(checkpoint_dir, relative)
    resolved = os.path.realpath(joined)
    if not any(os.path.commonpath([resolved, root]) == root for root in _allowed_roots(checkpoint_dir)):
        raise CheckpointError(
            f"{named_by} names weights file {relative!r}, which resolves to {resolved}, outside the checkpoint "
            f"directory {os.path.realpath(checkpoint_dir)}; refusing to read it. Shards must be files inside the "
            "checkpoint directory (not absolute paths, '..' or symlinks leading out)."
        )
    return joined


def _read_index(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except RecursionError as err:
        raise CheckpointError(f"{path} is not a valid shard index (JSON nested too deeply).") from err
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a valid shard index ({err}).") from err
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(
            f"{path} is not a valid shard index: it needs a non-empty \"weight_map\" object of "
            "tensor name -> shard file."
        )
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or "\x00" in shard:
            raise CheckpointError(
                f"{path} is not a valid shard index: weight_map[{name!r}] is {shard!r:.80}, not a shard file name."
            )
    return sorted(set(weight_map.values()))


def find_weight_files(checkpoint_dir: str) -> list[str]:
    """The weight files of a checkpoint directory, preferring safetensors like transformers.

    Every file returned resolves inside the directory (see ``_contained_path``)."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"Checkpoint directory {checkpoint_dir!r} does not exist.")
    for single, index in ((SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME), (PT_WEIGHTS_NAME, PT_WEIGHTS_INDEX_NAME)):
        single_path = os.path.join(checkpoint_dir, single)
        if os.path.isfile(single_path) or os.path.islink(single_path):
            return [_contained_path(checkpoint_dir, single, f"Checkpoint directory {checkpoint_dir!r}")]
        index_path = os.path.join(checkpoint_dir, index)
        if os.path.isfile(index_path) or os.path.islink(index_path):
            index_path = _contained_path(checkpoint_dir, index, f"Checkpoint directory {checkpoint_dir!r}")
            shards = [_contained_path(checkpoint_dir, s, index_path) for s in _read_index(index_path)]
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


def weight_names(checkpoint_dir: str) -> list[str]:
    """The tensor names a checkpoint holds (safetensors: from the headers, no tensor data read)."""
    state = lazy_state_dict(checkpoint_dir)
    return sorted(state if state is not None else load_state_dict(checkpoint_dir))


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
        target = np.dtype(dtype)
        for name, value in state.items():
            if np.issubdtype(value.dtype, np.floating) and value.dtype != target:
                with np.errstate(over="ignore"):  # an overflow is reported below, naming the tensor
                    state[name] = value.astype(target)
                if value.dtype.itemsize > target.itemsize:
                    # Narrowing can overflow finite weights to inf (float64 beyond float32's range).
                    check_finite(name, state[name], path)
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
