"""Framework-independent clean-up and saving of an exported ONNX model.

Every front end hands over a raw ``onnx.ModelProto``; this module makes the
artifact the same quality whatever produced it: the rotary function attached,
inference-only (no Dropout), tied weights stored once, an IR version ONNX
Runtime reads, deterministic bytes, external data past the 2 GB protobuf limit.

Weights may arrive as external data in ``base_dir`` (the PyTorch front end
streams them to its workdir rather than holding them in the proto). Everything
here reads them one tensor at a time, and ``save`` streams each weight into the
artifact, so no stage holds the weights twice (or the serialized model at all).

Output directories are built beside their destination and swapped in whole once
written and validated (``staged_directory``): a failed export or quantization
leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..artifact import attention_op, rotary_op
from ..artifact.files import EXTERNAL_DATA_FILE, MODEL_FILE  # noqa: F401  (this module's names for them)

logger = logging.getLogger("onnxport")

# Protobuf cannot serialise a message of 2 GiB; keep headroom for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26
# Local functions need IR >= 8. We write the lowest IR version the opset allows (8 for opset 17/18),
# never above 11 (opset 23): ONNX Runtime 1.31 reads up to 13, older runtimes less; onnx 1.23 would write 14.
MIN_IR_VERSION, MAX_IR_VERSION = 8, 11
TRAINING_OPS = {"Dropout", "TrainingDropout", "Gradient", "GraphCall"}
# onnx.save_model's external-data rule (size_threshold=1024 on sys.getsizeof of the raw bytes).
EXTERNAL_TENSOR_MIN = 1024 - sys.getsizeof(b"")
PROTOBUF_LIMIT = 2**31
# A single-file artifact above this is checked from its in-memory graph (weights external in base_dir):
# onnx's checker would otherwise hold two copies of the file.
CHECK_FILE_LIMIT = 2**28
_CHUNK = 2**24


def finalize(model: onnx.ModelProto, *, producer_version: str, graph_name: str,
             base_dir: Optional[str] = None) -> onnx.ModelProto:
    """In place: function, no training ops, weights once, unused initializers gone, IR version, names.

    ``base_dir``: where the model's external-data initializers (if any) are."""
    _strip_training_ops(model)
    _dedupe_initializers(model, base_dir)
    _drop_unused_initializers(model)
    rotary_op.attach_function(model)
    attention_op.attach_function(model)
    model.ir_version = ir_version_for(model)
    model.producer_name = "onnxport"
    model.producer_version = producer_version
    model.graph.name = graph_name
    model.doc_string = ""
    return model


def ir_version_for(model: onnx.ModelProto) -> int:
    known = [imp for imp in model.opset_import if imp.domain in ("", "ai.onnx", "ai.onnx.ml")]
    needed = helper.find_min_ir_version_for(known, ignore_unknown=True)
    version = max(MIN_IR_VERSION, needed)
    if version > MAX_IR_VERSION:
        raise ValueError(f"Opset needs IR version {version}; ONNX Runtime here reads up to {MAX_IR_VERSION}.")
    return version


def _strip_training_ops(model: onnx.ModelProto) -> None:
    """Dropout is identity at inference: rewire its consumers to its input and drop it."""
    graph = model.graph
    rename: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Dropout" and node.domain in ("", "ai.onnx"):
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
            continue
        if node.op_type in TRAINING_OPS:
            raise ValueError(f"The exported graph holds a training-only node {node.op_type} ({node.name}).")
        kept.append(node)
    if not rename:
        return
    graph_outputs = {o.name for o in graph.output}
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for out in graph_outputs & set(rename):
        kept.append(helper.make_node("Identity", [rename[out]], [out], name=f"{out}/identity"))
    del graph.node[:]
    graph.node.extend(kept)


# ----------------------------------------------------------------------------- weights, in the proto or external
def is_external(init: onnx.TensorProto) -> bool:
    return init.data_location == onnx.TensorProto.EXTERNAL


def _region(init: onnx.TensorProto, base_dir: Optional[str]) -> tuple[str, int, int]:
    """(file, offset, length) of an external initializer."""
    info = {entry.key: entry.value for entry in init.external_data}
    if base_dir is None:
        raise ValueError(f"Initializer {init.name!r} is external data ({info.get('location')}); pass base_dir.")
    path = os.path.join(base_dir, info["location"])
    offset = int(info.get("offset", 0))
    length = int(info["length"]) if "length" in info else os.path.getsize(path) - offset
    return path, offset, length


def tensor_nbytes(init: onnx.TensorProto) -> int:
    if is_external(init):
        info = {entry.key: entry.value for entry in init.external_data}
        if "length" in info:
            return int(info["length"])
        return int(np.prod(init.dims)) * helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    if init.HasField("raw_data"):
        return len(init.raw_data)
    return numpy_helper.to_array(init).nbytes


def _chunks(init: onnx.TensorProto, base_dir: Optional[str]) -> Iterator[bytes]:
    """The tensor's raw bytes, a chunk at a time when they are in a file."""
    if not is_external(init):
        yield init.raw_data
        return
    path, offset, length = _region(init, base_dir)
    with open(path, "rb") as fh:
        fh.seek(offset)
        while length:
            chunk = fh.read(min(_CHUNK, length))
            if not chunk:
                raise ValueError(f"External data of {init.name!r} in {path} is truncated.")
            length -= len(chunk)
            yield chunk


def to_array(init: onnx.TensorProto, base_dir: Optional[str] = None) -> np.ndarray:
    if is_external(init):
        _region(init, base_dir)  # a clear error without base_dir
    return numpy_helper.to_array(init, base_dir or "")


def _digest(init: onnx.TensorProto, transpose: bool = False, base_dir: Optional[str] = None) -> str:
    """Content hash of an initializer (dtype, shape, bytes), or of its transpose (2-D)."""
    dims = list(init.dims)[::-1] if transpose else list(init.dims)
    h = hashlib.sha256(f"{init.data_type}:{dims}:".encode())
    if transpose:
        array = to_array(init, base_dir)
        step = max(1, _CHUNK // max(1, array.shape[0] * array.itemsize))
        for start in range(0, array.shape[1], step):  # rows of the transpose a block at a time, not a full copy
            h.update(np.ascontiguousarray(array[:, start:start + step].T).tobytes())
    elif init.HasField("raw_data") or is_external(init):
        for chunk in _chunks(init, base_dir):
            h.update(chunk)
    else:
        h.update(np.ascontiguousarray(to_array(init)).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- clean-up
def _dedupe_initializers(model: onnx.ModelProto, base_dir: Optional[str] = None) -> None:
    """Store each weight once: identical initializers merge; a transposed copy (a tied LM decoder that
    constant folding turned into MatMul layout) becomes a Transpose node of the original, folded by ORT at load."""
    graph = model.graph
    inits = [i for i in graph.initializer]
    shapes = {tuple(i.dims) for i in inits}
    by_digest: dict[str, str] = {}
    rename: dict[str, str] = {}
    transposes: list[onnx.NodeProto] = []
    kept = []
    for init in inits:
        if int(np.prod(init.dims)) < 1024:  # small constants: often legitimately repeated, not worth a node
            kept.append(init)
            continue
        digest = _digest(init, base_dir=base_dir)
        if digest in by_digest:
            rename[init.name] = by_digest[digest]
            continue
        by_digest[digest] = init.name
        kept.append(init)
    # A later tensor equal to the transpose of an earlier one becomes Transpose(earlier). Only 2-D
    # tensors whose reversed shape also occurs are candidates, so few transposes are hashed.
    transposed_of: dict[str, str] = {}
    final = []
    for init in kept:
        dims = tuple(init.dims)
        candidate = len(dims) == 2 and dims[0] != dims[1] and dims[::-1] in shapes and int(np.prod(dims)) >= 1024
        if candidate:
            source = transposed_of.get(_digest(init, base_dir=base_dir))
            if source is not None:
                transposes.append(helper.make_node("Transpose", [source], [init.name], perm=[1, 0],
                                                   name=f"{init.name}/tied_transpose"))
                continue
            transposed_of[_digest(init, transpose=True, base_dir=base_dir)] = init.name
        final.append(init)
    if not rename and not transposes:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.initializer[:]
    graph.initializer.extend(final)
    nodes = transposes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)


def weights_bytes(model: onnx.ModelProto) -> int:
    return sum(tensor_nbytes(init) for init in model.graph.initializer)


# ----------------------------------------------------------------------------- streaming serialization
# A message serializes as its fields in field-number order (what protobuf writes), so the bytes of
# ``onnx.save_model`` are: the model's fields before ``graph``, the graph (its fields before
# ``initializer``, each initializer, the rest), the model's fields after it. Only the small parts are
# serialized in memory; each weight is copied from where it lives into the file.
@dataclass
class _Region:
    """Bytes of a file, copied at write time."""

    path: str
    offset: int
    length: int


@dataclass
class _Deferred:
    """A message already in memory, serialized at write time (one at a time)."""

    length: int
    serialize: Callable[[], bytes]


_Part = Union[bytes, _Region, _Deferred]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _field_header(number: int, length: int) -> bytes:
    """Tag and size of a length-delimited field."""
    return _varint(number << 3 | 2) + _varint(length)


def _part_length(part: _Part) -> int:
    return len(part) if isinstance(part, bytes) else part.length


def _fields(message, keep: Callable[[int], bool]):
    """A new message with the fields of ``message`` whose numbers ``keep`` accepts (never reading others)."""
    out = type(message)()
    for fd in message.DESCRIPTOR.fields:
        if not keep(fd.number):
            continue
        if fd.is_repeated:
            getattr(out, fd.name).extend(getattr(message, fd.name))
        elif message.HasField(fd.name):
            if fd.message_type is not None:
                getattr(out, fd.name).CopyFrom(getattr(message, fd.name))
            else:
                setattr(out, fd.name, getattr(message, fd.name))
    return out


_RAW_DATA = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number
_DATA_FIELDS = {"raw_data", "external_data", "data_location"}


def _tensor_meta(init: onnx.TensorProto) -> onnx.TensorProto:
    """The tensor without its bytes or their location."""
    return _fields(init, lambda n: onnx.TensorProto.DESCRIPTOR.fields_by_number[n].name not in _DATA_FIELDS)


def _embedded_tensor(init: onnx.TensorProto, base_dir: Optional[str]) -> list[_Part]:
    """An initializer as it serializes with its weight in ``raw_data``."""
    if not is_external(init):
        return [_Deferred(init.ByteSize(), init.SerializeToString)]
    path, offset, length = _region(init, base_dir)
    meta = _tensor_meta(init)
    head = _fields(meta, lambda n: n < _RAW_DATA).SerializeToString() + _field_header(_RAW_DATA, length)
    return [head, _Region(path, offset, length), _fields(meta, lambda n: n > _RAW_DATA).SerializeToString()]


def _model_parts(model: onnx.ModelProto, tensor_parts: Callable[[onnx.TensorProto], list[_Part]]) -> list[_Part]:
    graph = model.graph
    number = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
    initializer = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
    graph_parts: list[_Part] = [_fields(graph, lambda n: n < initializer).SerializeToString()]
    for init in graph.initializer:
        parts = tensor_parts(init)
        graph_parts += [_field_header(initializer, sum(map(_part_length, parts))), *parts]
    graph_parts.append(_fields(graph, lambda n: n > initializer).SerializeToString())
    return [
        _fields(model, lambda n: n < number).SerializeToString(),
        _field_header(number, sum(map(_part_length, graph_parts))),
        *graph_parts,
        _fields(model, lambda n: n > number).SerializeToString(),
    ]


def _copy_region(region: _Region, out) -> None:
    buffer = bytearray(min(_CHUNK, region.length))
    with open(region.path, "rb") as fh:
        fh.seek(region.offset)
        left = region.length
        while left:
            view = memoryview(buffer)[: min(len(buffer), left)]
            read = fh.readinto(view)
            if not read:
                raise ValueError(f"{region.path} is shorter than the external data it should hold.")
            out.write(view[:read])
            left -= read


def _write_parts(path: str, parts: list[_Part]) -> None:
    with open(path, "wb") as out:
        for part in parts:
            if isinstance(part, bytes):
                out.write(part)
            elif isinstance(part, _Region):
                _copy_region(part, out)
            else:
                out.write(part.serialize())


def save(model: onnx.ModelProto, out_dir: str, external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
         base_dir: Optional[str] = None, file_name: str = MODEL_FILE) -> list[str]:
    """Write ``out_dir/file_name`` (+ its ``_data`` file beside it when the weights pass the threshold; the
    export layout's names are layout.py's); returns the files written.

    The files are byte for byte what ``onnx.save_model`` writes (with external data: one file, tensors of
    1 KiB and more in initializer order), streamed: the serialized model is never in memory, and weights
    that are external data in ``base_dir`` are copied from there. ``model`` is not modified.
    """
    path = os.path.join(out_dir, file_name)
    data_file = os.path.basename(path) + "_data"  # named relative to the graph, which may sit in a subfolder
    data_path = os.path.join(os.path.dirname(path), data_file)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for stale in (path, data_path):
        if os.path.exists(stale):
            os.remove(stale)
    if weights_bytes(model) <= external_data_threshold:
        parts = _model_parts(model, lambda init: _embedded_tensor(init, base_dir))
        if sum(map(_part_length, parts)) >= PROTOBUF_LIMIT:
            raise ValueError("The proto size is larger than the 2 GB limit; lower external_data_threshold.")
        _write_parts(path, parts)
        return [path]
    logger.info("weights pass %d bytes: writing external data to %s", external_data_threshold, data_file)
    with open(data_path, "wb") as data:

        def external_tensor(init: onnx.TensorProto) -> list[_Part]:
            has_bytes = is_external(init) or init.HasField("raw_data")
            if not has_bytes or tensor_nbytes(init) < EXTERNAL_TENSOR_MIN:
                return _embedded_tensor(init, base_dir)
            offset = data.tell()
            for chunk in _chunks(init, base_dir):
                data.write(chunk)
            meta = _tensor_meta(init)
            for key, value in (("location", data_file), ("offset", offset), ("length", data.tell() - offset)):
                entry = meta.external_data.add()
                entry.key, entry.value = key, str(value)
            meta.data_location = onnx.TensorProto.EXTERNAL
            return [meta.SerializeToString()]

        parts = _model_parts(model, external_tensor)
    _write_parts(path, parts)
    return [path, data_path]


def check(path: str, model: Optional[onnx.ModelProto] = None, base_dir: Optional[str] = None) -> None:
    """Full ONNX checker (with shape inference, through the rotary function) on the saved file.

    A large single-file artifact is checked as ``model`` written beside its external data in
    ``base_dir``: the same graph, without the checker reading (twice) every weight of the file."""
    if (model is not None and base_dir is not None and os.path.getsize(path) > CHECK_FILE_LIMIT
            and any(is_external(init) for init in model.graph.initializer)):
        path = os.path.join(base_dir, "check.onnx")
        with open(path, "wb") as fh:
            fh.write(model.SerializeToString())
    onnx.checker.check_model(path, full_check=True)


# ----------------------------------------------------------------------------- output directories, swapped in whole
STAGING_PREFIX = ".onnxport-tmp-"
_ASIDE_PREFIX = ".onnxport-old-"


def overlapping(a: str, b: str) -> bool:
    """The same directory, or one inside the other, once symlinks and ``..`` are resolved."""
    a, b = os.path.realpath(a), os.path.realpath(b)
    return os.path.commonpath([a, b]) in (a, b)


@contextlib.contextmanager
def staged_directory(out_dir: str, owned: Callable[[str], bool], error: type[Exception]) -> Iterator[str]:
    """A directory to build ``out_dir``'s new contents in, swapped in for ``out_dir`` only if the block succeeds.

    The build directory is created beside ``out_dir`` (same filesystem, so the swap is two renames). On
    success, entries of the old ``out_dir`` that ``owned(name)`` does not claim (the user's own files: notes,
    results) are carried across (hard links where possible) unless the build wrote that name, the build and
    ``out_dir`` are exchanged in one step (``exchange``; elsewhere the old directory is renamed aside and the
    build renamed in) and the old one removed. When the block
    raises, or a rename fails, ``out_dir`` is left exactly as it was (put back if already moved aside) and
    nothing is left behind: no build directory, no parent directories created for ``out_dir``.

    ``out_dir`` given as a symlink to a directory: the directory it points to is replaced, the link stays.
    """
    target = os.path.realpath(out_dir)
    if os.path.exists(target) and not os.path.isdir(target):
        raise error(f"Output path {out_dir!r} exists and is not a directory; choose a directory path.")
    parent = os.path.dirname(target)
    created = []  # parent directories made for out_dir, deepest first, removed again on failure
    probe = parent
    while not os.path.isdir(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    try:
        os.makedirs(parent, exist_ok=True)
        build = tempfile.mkdtemp(dir=parent, prefix=STAGING_PREFIX)
    except OSError as err:
        _remove_empty(created)
        raise error(f"Cannot create a working directory beside {out_dir!r} ({err}); choose a writable location.") \
            from err
    try:
        _set_mode_like(build, target)
        yield build
        if os.path.isdir(target):
            _carry_over(target, build, owned)
        _swap_in(build, target, parent)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        _remove_empty(created)
        raise


def _set_mode_like(build: str, target: str) -> None:
    """mkdtemp makes 0700 directories: give the build the old directory's mode, or a fresh directory's."""
    if os.path.isdir(target):
        shutil.copymode(target, build)
        return
    probe = os.path.join(build, "mode-probe")
    os.mkdir(probe)  # created under the process umask, like os.makedirs(out_dir) would
    mode = os.stat(probe).st_mode
    os.rmdir(probe)
    os.chmod(build, stat.S_IMODE(mode))


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # filesystems without hard links
        shutil.copy2(source, destination)


def _carry_over(old: str, build: str, owned: Callable[[str], bool]) -> None:
    for name in sorted(os.listdir(old)):
        source, destination = os.path.join(old, name), os.path.join(build, name)
        if owned(name) or os.path.lexists(destination):
            continue
        if os.path.islink(source):
            os.symlink(os.readlink(source), destination)
        elif os.path.isdir(source):
            shutil.copytree(source, destination, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, destination)


def exchange(a: str, b: str) -> bool:
    """Swap two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system or
    filesystem cannot, or the call fails (it is all or nothing), so the caller falls back to two renames,
    which raise what is wrong."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # libc without renameat2 (glibc < 2.28, musl < 1.2.4)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    logger.debug("renameat2(RENAME_EXCHANGE) %s <-> %s: %s; two renames instead", a, b, os.strerror(ctypes.get_errno()))
    return False


def _swap_in(build: str, target: str, parent: str) -> None:
    if not os.path.isdir(target):
        os.rename(build, target)
        return
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory is already gone
        cwd = None
    # A process working inside out_dir would otherwise be left in the removed old directory.
    follow = cwd is not None and os.path.commonpath([cwd, target]) == target
    # One atomic exchange where the system has it: no moment without out_dir, even if the process is
    # killed (SIGKILL, power loss) in the middle; the previous contents end up at the build's path.
    if exchange(build, target):
        if follow:
            os.chdir(cwd if os.path.isdir(cwd) else target)
        shutil.rmtree(build, ignore_errors=True)
        if os.path.exists(build):
            logger.warning("Could not remove the previous output directory, left at %s.", build)
        return
    holder = tempfile.mkdtemp(dir=parent, prefix=_ASIDE_PREFIX)
    aside = os.path.join(holder, "previous")
    try:
        os.rename(target, aside)
    except BaseException:
        os.rmdir(holder)
        raise
    try:
        os.rename(build, target)
    except BaseException:
        os.rename(aside, target)
        os.rmdir(holder)
        raise
    if follow:
        os.chdir(cwd if os.path.isdir(cwd) else target)
    shutil.rmtree(holder, ignore_errors=True)
    if os.path.exists(holder):
        logger.warning("Could not remove the previous output directory, moved aside to %s.", holder)


def _remove_empty(directories: list[str]) -> None:
    for directory in directories:
        try:
            os.rmdir(directory)
        except OSError:
            return
