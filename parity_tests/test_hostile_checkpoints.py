"""Hostile and corrupt checkpoints (issue 15, security): nothing is read outside the checkpoint or outside a
tensor's own bytes, and every refusal is a CheckpointError naming the file, the tensor and the fault.

Corpus: shard-index path traversal (through load_state_dict, lazy_state_dict and from_pretrained), crafted
``pytorch_model.bin`` views (the ones that could crash run in a subprocess), crafted safetensors headers,
NaN/inf weights; then bounded property-based fuzzing of both readers.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxport import checkpoints
from onnxport.errors import CheckpointError
from onnxport.reference_models import pt as ours

# Each fuzzer records how many examples it ran and how many were read vs refused (printed with -s; the
# numbers go in the closing note).
FUZZ_EXAMPLES: dict[str, dict[str, int]] = {}


def _record(fuzzer: str, outcome: str) -> str:
    counts = FUZZ_EXAMPLES.setdefault(fuzzer, {"examples": 0, "read": 0, "refused": 0})
    counts["examples"] += 1
    counts[outcome] += 1
    return outcome


FUZZ_SETTINGS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


# ----------------------------------------------------------------------------- building files by hand
def safetensors_bytes(header, body: bytes = b"", header_len: int | None = None) -> bytes:
    """A safetensors file: 8-byte little-endian header length, header (a dict is JSON-encoded), body."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + body


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


class Storage:
    """Stands for a torch storage in a crafted data.pkl: pickled as torch's persistent id."""

    def __init__(self, key: str, storage_class: str = "FloatStorage", numel: int = 0, pid=None):
        self.key, self.storage_class, self.numel, self.pid = key, storage_class, numel, pid


class View:
    """A tensor in a crafted data.pkl: torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        from torch._utils import _rebuild_tensor_v2

        return _rebuild_tensor_v2, (*self.args, False, OrderedDict())


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return obj.pid if obj.pid is not None else (
                "storage", getattr(torch, obj.storage_class), obj.key, "cpu", obj.numel)
        return None


def torch_pickle(state) -> bytes:
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump(state)
    return buf.getvalue()


def torch_archive(data_pkl: bytes, storages: dict[str, bytes]) -> bytes:
    """A torch.save zip archive (stored, like torch writes it) around a data.pkl and raw storages."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
        archive.writestr("archive/version", "3\n")
    return buf.getvalue()


def one_view_bin(offset, size, stride, storage_floats=4, name="encoder.weight", **storage_kw) -> bytes:
    raw = np.arange(1, storage_floats + 1, dtype=np.float32).tobytes()
    storage = Storage("0", numel=storage_floats, **storage_kw)
    return torch_archive(torch_pickle(OrderedDict([(name, View(storage, offset, size, stride))])), {"0": raw})


def test_hand_built_archive_reads_like_torch(tmp_path):
    """The builder above is torch's format: torch.load and our reader agree on a strided, offset view."""
    path = write(tmp_path / "w.bin", one_view_bin(1, (2, 2), (1, 2), storage_floats=6))
    ours_ = checkpoints.read_torch_bin(path)["encoder.weight"]
    theirs = torch.load(path, weights_only=True)["encoder.weight"].numpy()
    np.testing.assert_array_equal(ours_, theirs)
    np.testing.assert_array_equal(ours_, [[2.0, 4.0], [3.0, 5.0]])  # storage 1..6, elements 1+i+2j


# ----------------------------------------------------------------------------- 1. shard-index path traversal
SECRET = np.full((3,), 1234.5, dtype=np.float32)


@pytest.fixture
def outside(tmp_path):
    """A valid weights file outside the checkpoint directory (the file an attacker wants read)."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    checkpoints.write_safetensors({"secret": SECRET}, str(other / "other.safetensors"))
    write(other / "other.bin", torch_archive(
        torch_pickle({"secret": View(Storage("0", numel=3), 0, (3,), (1,))}), {"0": SECRET.tobytes()}))
    return other


def _checkpoint_dir(tmp_path, good_checkpoint: str | None = None):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    if good_checkpoint is not None:
        (ckpt / "config.json").write_bytes(open(os.path.join(good_checkpoint, "config.json"), "rb").read())
    return ckpt


def _traversal_cases(outside):
    """label -> (index file name, weight_map value, name of an in-directory symlink to the outside file or None);
    each makes the index name a shard that resolves outside the checkpoint."""
    return {
        "dotdot": ("model.safetensors.index.json", "../elsewhere/other.safetensors", None),
        "absolute": ("model.safetensors.index.json", str(outside / "other.safetensors"), None),
        "etc_passwd": ("model.safetensors.index.json", "/etc/passwd", None),
        "symlink_shard": ("model.safetensors.index.json", "shard.safetensors", "shard.safetensors"),
        "bin_dotdot": ("pytorch_model.bin.index.json", "../elsewhere/other.bin", None),
        "bin_symlink_shard": ("pytorch_model.bin.index.json", "shard.bin", "shard.bin"),
    }


TRAVERSALS = ["dotdot", "absolute", "etc_passwd", "symlink_shard", "bin_dotdot", "bin_symlink_shard"]
ENTRY_POINTS = ["load_state_dict", "lazy_state_dict", "from_pretrained", "export"]


def _load(entry_point: str, ckpt):
    if entry_point == "load_state_dict":
        return checkpoints.load_state_dict(str(ckpt))
    if entry_point == "lazy_state_dict":
        return checkpoints.lazy_state_dict(str(ckpt))
    if entry_point == "export":
        from onnxport.exporters import export

        return export(ckpt, ckpt.parent / "onnx", framework="pt", copy_tokenizer=False)
    return ours.XLMRobertaModel.from_pretrained(ckpt)


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("case", TRAVERSALS)
def test_shard_outside_the_checkpoint_is_refused(tmp_path, outside, checkpoint_factory, monkeypatch, entry_point,
                                                 case):
    index_name, shard, link_name = _traversal_cases(outside)[case]
    good = checkpoint_factory("xlm-roberta", "Model")
    ckpt = _checkpoint_dir(tmp_path, good)
    if link_name is not None:
        target = outside / ("other.bin" if link_name.endswith(".bin") else "other.safetensors")
        os.symlink(target, ckpt / link_name)
    # the real weights live in the directory; one tensor is claimed to be in the outside shard
    weights = checkpoints.load_state_dict(good)
    checkpoints.write_safetensors(weights, str(ckpt / "inside.safetensors"))
    weight_map = {name: "inside.safetensors" for name in weights}
    weight_map["embeddings.word_embeddings.weight"] = shard
    index = ckpt / index_name
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    opened = _record_opened_files(monkeypatch)
    with pytest.raises(CheckpointError) as refused:
        _load(entry_point, ckpt)
    message = str(refused.value)
    assert repr(shard) in message and str(index) in message and "outside the checkpoint directory" in message
    # refused before it was opened: nothing outside the checkpoint (the outside file, /etc) was read
    resolved = [os.path.realpath(path) for path in opened]
    assert os.path.realpath(index) in resolved  # the recorder sees the reads (the index was read)
    allowed = (str(tmp_path.resolve() / "ckpt"), str(tmp_path.resolve() / "onnx"), sys.prefix, sys.base_prefix)
    assert not [p for p in resolved if not p.startswith(allowed)], resolved


def _record_opened_files(monkeypatch) -> list[str]:
    """Record every path opened through open() and np.fromfile (what the readers use) from now on."""
    import builtins

    opened: list[str] = []
    real_open, real_fromfile = builtins.open, np.fromfile

    def recording_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    def recording_fromfile(file, *args, **kwargs):
        opened.append(os.fsdecode(file))
        return real_fromfile(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(np, "fromfile", recording_fromfile)
    return opened


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("weights_name", ["model.safetensors", "pytorch_model.bin"])
def test_single_weights_file_symlinked_outside_is_refused(tmp_path, outside, checkpoint_factory, entry_point,
                                                          weights_name):
    ckpt = _checkpoint_dir(tmp_path, checkpoint_factory("xlm-roberta", "Model"))
    os.symlink(outside / ("other.bin" if weights_name.endswith(".bin") else "other.safetensors"), ckpt / weights_name)
    with pytest.raises(CheckpointError, match=f"'{weights_name}', which resolves to .*elsewhere.*outside"):
        _load(entry_point, ckpt)


@pytest.mark.parametrize("weight_map, fault", [
    ([["a", "model-1.safetensors"]], "weight_map"),
    ({"a": 3}, r"weight_map\['a'\] is 3"),
    ({"a": ["x.safetensors"]}, r"weight_map\['a'\]"),
    ({"a": ""}, r"weight_map\['a'\]"),
    ({"a": "x\x00.safetensors"}, r"weight_map\['a'\]"),
    ({}, "non-empty"),
    (None, "weight_map"),
])
def test_malformed_weight_map_is_refused(tmp_path, weight_map, fault):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map} if weight_map is not None else {"metadata": {}}))
    with pytest.raises(CheckpointError, match=fault) as refused:
        checkpoints.load_state_dict(str(tmp_path))
    assert str(index) in str(refused.value)
    for not_an_object in ("[1, 2]", "\"weight_map\"", "[" * 100_000):
        index.write_text(not_an_object)
        with pytest.raises(CheckpointError, match="not a valid shard index"):
            checkpoints.lazy_state_dict(str(tmp_path))


def test_symlinks_that_stay_inside_and_hf_cache_snapshots_still_load(tmp_path, checkpoint_factory):
    """Containment must not break the legitimate layouts: a shard symlinked within the directory, and the
    Hugging Face cache, whose snapshots/<rev>/ files are symlinks into ../../blobs/."""
    good = checkpoint_factory("xlm-roberta", "Model")
    want = checkpoints.load_state_dict(good)
    ckpt = _checkpoint_dir(tmp_path, good)
    (ckpt / "real").mkdir()
    (ckpt / "real" / "w.safetensors").write_bytes(open(os.path.join(good, "model.safetensors"), "rb").read())
    os.symlink("real/w.safetensors", ckpt / "model.safetensors")
    got = checkpoints.load_state_dict(str(ckpt))
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)

    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (repo / "blobs" / f"sha-{name}").write_bytes(open(os.path.join(good, name), "rb").read())
        os.symlink(f"../../blobs/sha-{name}", snapshot / name)
    got = checkpoints.load_state_dict(str(snapshot))
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    lazy = checkpoints.lazy_state_dict(str(snapshot))
    np.testing.assert_array_equal(np.asarray(lazy["embeddings.word_embeddings.weight"]),
                                  want["embeddings.word_embeddings.weight"])
    ours.XLMRobertaModel.from_pretrained(snapshot)  # the whole loading path accepts the cache layout


# ----------------------------------------------------------------------------- 2. crafted pytorch_model.bin
# (label, offset, size, stride, storage elements, the fault the message must name). Storage holds 1.0..4.0.
BIN_VIEWS = [
    ("offset_past_end", 2, (4,), (1,), 4, "out of bounds"),
    ("offset_far_past_end", 1 << 20, (4,), (1,), 4, "out of bounds"),
    ("stride_past_end", 0, (2, 2), (2, 3), 4, "out of bounds"),
    ("size_past_end", 0, (5,), (1,), 4, "out of bounds"),
    ("scalar_at_end", 4, (), (), 4, "out of bounds"),
    ("empty_offset_past_end", 9, (0,), (1,), 4, "out of bounds"),
    ("negative_offset", -3, (2,), (1,), 4, "storage offset -3"),
    ("negative_stride", 3, (4,), (-1,), 4, "strides"),
    ("negative_size", 0, (-1,), (1,), 4, "size"),
    ("float_offset", 0.0, (2,), (1,), 4, "storage offset 0.0"),
    ("bool_size", 0, (True,), (1,), 4, "size"),
    ("stride_arity", 0, (2, 2), (1,), 4, "strides"),
    ("size_not_tuple", 0, [2], (1,), 4, "size"),
    ("broadcast_bomb", 0, (1 << 40,), (0,), 4, "over 8x its 4 (broadcast or overlapping views)"),
    ("huge_stride", 0, (2,), (1 << 40,), 4, "out of bounds"),  # as_strided reading 8 TB away: a segfault
    ("huge_stride_2d", 0, (2, 3), (1 << 62, 1 << 62), 4, "out of bounds"),
]
# These could crash the interpreter without the check: run them in a subprocess.
CRASHING = {"huge_stride", "huge_stride_2d", "offset_far_past_end", "broadcast_bomb"}


@pytest.mark.parametrize("label, offset, size, stride, numel, fault", BIN_VIEWS, ids=[c[0] for c in BIN_VIEWS])
def test_bin_view_outside_its_storage_is_refused(tmp_path, label, offset, size, stride, numel, fault):
    path = write(tmp_path / "pytorch_model.bin", one_view_bin(offset, size, stride, storage_floats=numel))
    if label in CRASHING:
        script = textwrap.dedent(f"""
            from onnxport import checkpoints
            try:
                checkpoints.load_state_dict({path!r})
                print("LOADED")
            except checkpoints.CheckpointError as err:
                print("REFUSED", err)
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"reader crashed (rc {done.returncode}): {done.stderr[-2000:]}"
        assert done.stdout.startswith("REFUSED"), done.stdout
        message = done.stdout
    else:
        with pytest.raises(CheckpointError) as refused:
            checkpoints.load_state_dict(str(tmp_path))
        message = str(refused.value)
    assert "'encoder.weight'" in message and path in message and fault in message, message


def test_valid_bin_views_still_load(tmp_path):
    """The checks accept every view torch itself writes: offsets, transposes, empty and scalar tensors."""
    raw = np.arange(1, 13, dtype=np.float32)
    storage = Storage("0", numel=12)
    state = OrderedDict([
        ("last_row", View(storage, 8, (4,), (1,))),
        ("transposed", View(storage, 0, (3, 4), (1, 3))),
        ("scalar", View(storage, 11, (), ())),
        ("empty", View(storage, 12, (0, 5), (5, 1))),
        ("position_ids", View(storage, 0, (1, 12), (0, 1))),  # expand((1, -1)) as old checkpoints save it
        ("expanded", View(storage, 0, (3, 12), (0, 1))),  # torch.save keeps a broadcast view as one
    ])
    path = write(tmp_path / "w.bin", torch_archive(torch_pickle(state), {"0": raw.tobytes()}))
    got = checkpoints.read_torch_bin(path)
    theirs = torch.load(path, weights_only=True)
    for name in state:
        np.testing.assert_array_equal(got[name], theirs[name].numpy(), err_msg=name)
    np.testing.assert_array_equal(got["last_row"], [9, 10, 11, 12])
    assert got["scalar"] == 12.0 and got["empty"].shape == (0, 5)


def test_tied_weights_share_one_copy_and_repeats_cannot_amplify(tmp_path):
    """A view named twice (tied weights) is read once and shared, as torch shares it; a small pickle naming a
    storage ten thousand times therefore costs one copy, not ten thousand."""
    raw = np.arange(1, 1025, dtype=np.float32)
    storage = Storage("0", numel=1024)
    tied = View(storage, 0, (32, 32), (32, 1))
    state = OrderedDict([(f"layer{i}.weight", tied) for i in range(10_000)])
    path = write(tmp_path / "w.bin", torch_archive(torch_pickle(state), {"0": raw.tobytes()}))
    got = checkpoints.read_torch_bin(path)
    assert len(got) == 10_000 and len({id(array) for array in got.values()}) == 1
    np.testing.assert_array_equal(got["layer9999.weight"], raw.reshape(32, 32))


@pytest.mark.parametrize("label, build, fault", [
    ("storage_missing", lambda: torch_archive(
        torch_pickle({"w": View(Storage("7", numel=4), 0, (4,), (1,))}), {"0": bytes(16)}),
     "storage '7' is missing from the archive"),
    ("storage_not_whole_elements", lambda: torch_archive(
        torch_pickle({"w": View(Storage("0", numel=4), 0, (2,), (1,))}), {"0": bytes(10)}),
     "storage '0' has 10 bytes, not a multiple of its 4-byte elements"),
    ("storage_shorter_than_declared", lambda: torch_archive(
        torch_pickle({"w": View(Storage("0", numel=4), 0, (2,), (1,))}), {"0": bytes(12)}),
     "storage '0' has 12 bytes but declares 4 elements of 4 bytes"),
    ("storage_numel_not_int", lambda: torch_archive(
        torch_pickle({"w": View(Storage("0", numel=-1), 0, (2,), (1,))}), {"0": bytes(16)}),
     "storage '0' declares -1 elements"),
    ("pid_arity", lambda: torch_archive(
        torch_pickle({"w": View(Storage("0", pid=("storage", torch.FloatStorage, "0")), 0, (2,), (1,))}),
        {"0": bytes(16)}),
     "unsupported persistent id"),
    ("pid_not_storage", lambda: torch_archive(
        torch_pickle({"w": View(Storage("0", pid=("module", torch.FloatStorage, "0", "cpu", 4)), 0, (2,), (1,))}),
        {"0": bytes(16)}),
     "unsupported persistent id"),
    ("pid_key_not_str", lambda: torch_archive(
        torch_pickle({"w": View(Storage("0", pid=("storage", torch.FloatStorage, 0, "cpu", 4)), 0, (2,), (1,))}),
        {"0": bytes(16)}),
     "storage key 0 is not a string"),
    ("overlapping_views", lambda: torch_archive(torch_pickle(OrderedDict(  # nine distinct views of all 4 elements
        [(f"x{i}", View(Storage("0", numel=4), 0, (4, 1), (1, i))) for i in range(9)])), {"0": bytes(16)}),
     "tensor 'x8' brings the elements copied from storage '0' to 36, over 8x its 4"),
    ("view_of_a_number", lambda: torch_archive(torch_pickle({"w": View(5, 0, (2,), (1,))}), {}),
     "tensor 'w' is not built from a storage"),
    ("rebuild_missing_args", lambda: torch_archive(torch_pickle({"w": View(Storage("0", numel=4), 0, None, None)}),
                                                   {"0": bytes(16)}),
     "tensor 'w' has size None"),
    ("not_a_state_dict", lambda: torch_archive(torch_pickle([View(Storage("0", numel=4), 0, (4,), (1,))]),
                                               {"0": bytes(16)}),
     "does not hold a flat state dict"),
    ("truncated_pickle", lambda: torch_archive(
        torch_pickle({"w": View(Storage("0", numel=4), 0, (4,), (1,))})[:-9], {"0": bytes(16)}),
     "is corrupt"),
])
def test_bin_archive_faults_are_refused(tmp_path, label, build, fault):
    path = write(tmp_path / "pytorch_model.bin", build())
    with pytest.raises(CheckpointError, match=fault) as refused:
        checkpoints.load_state_dict(str(tmp_path))
    assert path in str(refused.value)


# ----------------------------------------------------------------------------- 3. crafted safetensors headers
def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


BODY = np.arange(1, 9, dtype=np.float32).tobytes()  # 32 bytes
SAFETENSORS_HEADERS = [
    # (label, file bytes, the fault the message must name, tensor named or None)
    ("negative_offset", safetensors_bytes({"t": _entry(offsets=(-8, 0))}, BODY), "not 0 <= begin <= end", "t"),
    ("reversed_offsets", safetensors_bytes({"t": _entry(offsets=(8, 0))}, BODY), "not 0 <= begin <= end", "t"),
    ("float_offset", safetensors_bytes({"t": _entry(offsets=(0.0, 8))}, BODY), "not a pair of integers", "t"),
    ("three_offsets", safetensors_bytes({"t": _entry(offsets=(0, 8, 16))}, BODY), "not a pair of integers", "t"),
    ("offset_past_end", safetensors_bytes({"t": _entry(offsets=(32, 40))}, BODY), "points past the end", "t"),
    ("huge_offset", safetensors_bytes({"t": _entry(offsets=(1 << 62, (1 << 62) + 8))}, BODY), "past the end", "t"),
    ("overlap", safetensors_bytes({"a": _entry(shape=(4,), offsets=(0, 16)), "b": _entry(offsets=(8, 16))}, BODY),
     "overlaps tensor 'a'", "b"),
    ("shape_bytes_mismatch", safetensors_bytes({"t": _entry(shape=(3,), offsets=(0, 8))}, BODY),
     "(12 bytes) but data_offsets [0, 8] span 8 bytes", "t"),
    ("shape_overflowing_int64", safetensors_bytes({"t": _entry(shape=(1 << 40, 1 << 40), offsets=(0, 8))}, BODY),
     "span 8 bytes", "t"),
    ("negative_dim", safetensors_bytes({"t": _entry(shape=(-2,), offsets=(0, 8))}, BODY),
     "not a list of non-negative integers", "t"),
    ("float_dim", safetensors_bytes({"t": _entry(shape=(2.0,))}, BODY), "not a list of non-negative integers", "t"),
    ("bool_dim", safetensors_bytes({"t": _entry(shape=(True, 2))}, BODY), "not a list of non-negative integers", "t"),
    ("shape_not_list", safetensors_bytes({"t": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}}, BODY),
     "not a list", "t"),
    ("no_dtype", safetensors_bytes({"t": {"shape": [2], "data_offsets": [0, 8]}}, BODY), "has no 'dtype'", "t"),
    ("no_shape", safetensors_bytes({"t": {"dtype": "F32", "data_offsets": [0, 8]}}, BODY), "has no 'shape'", "t"),
    ("no_offsets", safetensors_bytes({"t": {"dtype": "F32", "shape": [2]}}, BODY), "has no 'data_offsets'", "t"),
    ("unknown_dtype", safetensors_bytes({"t": _entry(dtype="F128")}, BODY), "unsupported dtype 'F128'", "t"),
    ("dtype_not_str", safetensors_bytes({"t": _entry(dtype=["F32"])}, BODY), "unsupported dtype ['F32']", "t"),
    ("entry_not_object", safetensors_bytes({"t": [0, 8]}, BODY), "JSON list, not an object", "t"),
    ("header_list", safetensors_bytes([_entry()], BODY), "header is a JSON list, not an object", None),
    ("header_string", safetensors_bytes(b'"F32"', BODY), "header is a JSON str", None),
    ("header_len_past_file", safetensors_bytes({"t": _entry()}, BODY, header_len=1 << 40), "exceeds the", None),
    ("header_len_over_limit", None, "limit of 100000000 bytes", None),  # a sparse file, written in the test
    ("deeply_nested", safetensors_bytes(b"[" * 200_000 + b"]" * 200_000), "nested too deeply", None),
    ("not_utf8", safetensors_bytes(b'{"t\xff": 1}', BODY), "not UTF-8", None),
    ("not_json", safetensors_bytes(b"{'t': 1}", BODY), "not valid JSON", None),
    ("duplicate_tensor", safetensors_bytes(
        b'{"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
        b'"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}', BODY), "duplicate keys ['t']", None),
    ("metadata_not_object", safetensors_bytes({"__metadata__": [1], "t": _entry()}, BODY), "__metadata__", None),
    ("metadata_not_str", safetensors_bytes({"__metadata__": {"format": 1}, "t": _entry()}, BODY),
     "__metadata__", None),
    ("shorter_than_length", b"\x10\x00\x00", "fewer than the 8-byte header length", None),
]


@pytest.mark.parametrize("label, data, fault, tensor", SAFETENSORS_HEADERS, ids=[c[0] for c in SAFETENSORS_HEADERS])
def test_safetensors_header_faults_are_refused(tmp_path, label, data, fault, tensor):
    path = write(tmp_path / "model.safetensors", data if data is not None else struct.pack("<Q", 100_000_001))
    if data is None:
        os.truncate(path, 100_000_100)  # a header claimed longer than safetensors allows, with the bytes present
    for load in (checkpoints.load_state_dict, checkpoints.lazy_state_dict):
        with pytest.raises(CheckpointError) as refused:
            load(str(tmp_path))
        message = str(refused.value)
        assert path in message and fault in message, message
        if tensor is not None:
            assert f"tensor {tensor!r}" in message, message


def test_valid_safetensors_edge_cases_still_load(tmp_path):
    """Zero-size tensors may share an offset; tensors may sit in any order; metadata is kept out of the state."""
    header = {"__metadata__": {"format": "pt"}, "b": _entry(shape=(2,), offsets=(8, 16)),
              "a": _entry(shape=(2,), offsets=(0, 8)), "empty": _entry(shape=(0, 3), offsets=(8, 8))}
    write(tmp_path / "model.safetensors", safetensors_bytes(header, BODY[:16]))
    got = checkpoints.load_state_dict(str(tmp_path))
    np.testing.assert_array_equal(got["a"], [1, 2])
    np.testing.assert_array_equal(got["b"], [3, 4])
    assert got["empty"].shape == (0, 3) and set(got) == {"a", "b", "empty"}


# ----------------------------------------------------------------------------- 4. NaN / inf weights
def _nan_inf_state():
    weight = np.ones((4, 3), dtype=np.float32)
    weight[1, 2], weight[3, 0] = np.nan, np.inf
    return {"clean": np.ones(3, dtype=np.float32), "encoder.layer.0.output.dense.weight": weight}


def test_nan_and_inf_weights_are_named(tmp_path, checkpoint_factory):
    write_dir = tmp_path / "st"
    write_dir.mkdir()
    checkpoints.write_safetensors(_nan_inf_state(), str(write_dir / "model.safetensors"))
    expected = r"tensor 'encoder.layer.0.output.dense.weight' has 2 NaN/inf values; the checkpoint is corrupt or " \
               r"training diverged"
    with pytest.raises(CheckpointError, match=expected):
        checkpoints.load_state_dict(str(write_dir))
    lazy = checkpoints.lazy_state_dict(str(write_dir))  # the header is fine; the tensor is checked when read
    np.testing.assert_array_equal(np.asarray(lazy["clean"]), np.ones(3))
    with pytest.raises(CheckpointError, match=expected):
        np.asarray(lazy["encoder.layer.0.output.dense.weight"])

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    torch.save({k: torch.from_numpy(v) for k, v in _nan_inf_state().items()}, bin_dir / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=expected):
        checkpoints.load_state_dict(str(bin_dir))

    # a real checkpoint with one poisoned weight, through from_pretrained (the lazy and eager paths)
    good = checkpoint_factory("xlm-roberta", "Model")
    state = checkpoints.load_state_dict(good)
    state["encoder.layer.0.attention.self.query.bias"][5] = -np.inf
    ckpt = _checkpoint_dir(tmp_path, good)
    checkpoints.write_safetensors(state, str(ckpt / "model.safetensors"))
    poisoned = "tensor 'encoder.layer.0.attention.self.query.bias' has 1 NaN/inf"
    with pytest.raises(CheckpointError, match=poisoned):
        ours.XLMRobertaModel.from_pretrained(ckpt)
    from onnxport.exporters import export  # the PT exporter reads tensors lazily: refused as they are copied in

    with pytest.raises(CheckpointError, match=poisoned):
        export(ckpt, tmp_path / "onnx", framework="pt", copy_tokenizer=False)


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F64"])
def test_nan_in_narrow_and_wide_floats(tmp_path, dtype):
    nan_bits = {"F16": np.array([0x3C00, 0x7E00], np.uint16), "BF16": np.array([0x3F80, 0x7FC0], np.uint16),
                "F64": np.array([1.0, np.nan])}[dtype]
    write(tmp_path / "model.safetensors",
          safetensors_bytes({"t": _entry(dtype=dtype, shape=(2,), offsets=(0, nan_bits.nbytes))}, nan_bits.tobytes()))
    with pytest.raises(CheckpointError, match="tensor 't' has 1 NaN/inf"):
        checkpoints.load_state_dict(str(tmp_path), dtype=None)


def test_float64_weights_overflowing_float32_are_refused(tmp_path):
    """1e300 is finite in float64 and inf once cast to float32: the cast is checked too."""
    values = np.array([1.0, 1e300], dtype=np.float64)
    write(tmp_path / "model.safetensors",
          safetensors_bytes({"t": _entry(dtype="F64", offsets=(0, 16))}, values.tobytes()))
    np.testing.assert_array_equal(checkpoints.load_state_dict(str(tmp_path), dtype=None)["t"], values)
    with pytest.raises(CheckpointError, match="tensor 't' has 1 NaN/inf"):
        checkpoints.load_state_dict(str(tmp_path))


# ----------------------------------------------------------------------------- 5. property-based fuzzing
def _raw_bytes(array: np.ndarray, stored_dtype: str | None = None) -> bytes:
    if stored_dtype == "BF16":
        return (array.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return array.tobytes()


def _assert_read_or_refused(read, path: str, file_bytes: bytes, bf16: set[str] = frozenset()):
    """The invariant: a CheckpointError, or arrays each of whose elements' bytes occur in the file."""
    try:
        state = read(path)
    except CheckpointError:
        return "refused"
    for name, array in state.items():
        array = np.asarray(array)
        itemsize = 2 if name in bf16 else array.dtype.itemsize
        raw = _raw_bytes(array, "BF16" if name in bf16 else None)
        for i in range(0, len(raw), itemsize):
            assert raw[i:i + itemsize] in file_bytes, f"{name}: element bytes {raw[i:i + itemsize]!r} not in the file"
    return "read"


_SCRATCH = tempfile.mkdtemp(prefix="onnxport-fuzz-")  # hypothesis examples cannot use tmp_path
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
_DTYPES = ["F32", "F16", "BF16", "I64", "I8", "U8", "BOOL", "F64", "I32", "F8", "f32", "", 3]
_ints = st.one_of(st.integers(-4, 40), st.integers(-(1 << 70), 1 << 70), st.sampled_from([0.5, True, None, "8"]))
_entries = st.fixed_dictionaries(
    {"dtype": st.sampled_from(_DTYPES), "shape": st.lists(_ints, max_size=3),
     "data_offsets": st.lists(_ints, max_size=3)},
)
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5))
_junk = st.recursive(
    _json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
_headers = st.dictionaries(st.sampled_from(["a", "b", "c", "__metadata__"]),
                           st.one_of(_entries, _entries.map(lambda e: dict(list(e.items())[:2])), _junk), max_size=4)


@functools.lru_cache(maxsize=1)
def _valid_safetensors() -> bytes:
    path = os.path.join(_SCRATCH, "valid.safetensors")
    checkpoints.write_safetensors({"w": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
                                   "ids": np.arange(5, dtype=np.int64), "h": np.ones(3, np.float16)}, path)
    return open(path, "rb").read()


@FUZZ_SETTINGS
@given(header=_headers, body=st.binary(max_size=96))
def _fuzz_safetensors_random_headers(header, body):
    data = safetensors_bytes(header, body)
    path = write(os.path.join(_SCRATCH, "h.safetensors"), data)
    bf16 = {k for k, v in header.items() if isinstance(v, dict) and v.get("dtype") == "BF16"}
    _record("safetensors_random_headers", _assert_read_or_refused(checkpoints.read_safetensors, path, data, bf16))


_mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]), st.integers(0, 1 << 16),
              st.integers(0, 255)),
    min_size=1, max_size=6,
)


def _mutate(data: bytes, mutations, protect_prefix: int = 0) -> bytes:
    buf = bytearray(data)
    for kind, position, value in mutations:
        if not buf:
            break
        i = protect_prefix + position % max(1, len(buf) - protect_prefix)
        i = min(i, len(buf) - 1)
        if kind == "flip":
            buf[i] ^= 1 << (value % 8)
        elif kind == "set":
            buf[i] = value
        elif kind == "truncate":
            del buf[i:]
        elif kind == "insert":
            buf[i:i] = bytes([value])
        else:
            del buf[i]
    return bytes(buf)


@FUZZ_SETTINGS
@given(mutations=_mutations, target=st.sampled_from(["anywhere", "header", "body"]))
def _fuzz_safetensors_byte_mutations(mutations, target):
    valid = _valid_safetensors()
    header_end = 8 + struct.unpack("<Q", valid[:8])[0]
    if target == "header":  # the length and the JSON, where the parsing is
        mutations = [(kind, position % header_end, value) for kind, position, value in mutations]
    elif target == "body":  # same layout, other values: must read back exactly the file's bytes
        mutations = [("flip" if kind == "flip" else "set", header_end + position % (len(valid) - header_end), value)
                     for kind, position, value in mutations]
    data = _mutate(valid, mutations)
    path = write(os.path.join(_SCRATCH, "m.safetensors"), data)
    _record("safetensors_byte_mutations", _assert_read_or_refused(checkpoints.read_safetensors, path, data))


def _valid_bin_pickle() -> tuple[bytes, dict[str, bytes]]:
    storage = Storage("0", numel=12)
    ids = Storage("1", "LongStorage", numel=5)
    state = OrderedDict([("w", View(storage, 0, (3, 4), (4, 1))), ("wt", View(storage, 1, (2, 3), (1, 4))),
                         ("ids", View(ids, 0, (5,), (1,)))])
    storages = {"0": (np.arange(12, dtype=np.float32) / 7).tobytes(), "1": np.arange(5, dtype=np.int64).tobytes()}
    return torch_pickle(state), storages


@FUZZ_SETTINGS
@given(mutations=_mutations, target=st.sampled_from(["archive", "pickle"]))
def _fuzz_bin_byte_mutations(mutations, target):
    """Byte flips/truncations of the whole zip (zip and CRC checks), or of data.pkl inside a well-formed zip
    (the unpickler and the view checks)."""
    data_pkl, storages = _valid_bin_pickle()
    if target == "archive":
        data = _mutate(torch_archive(data_pkl, storages), mutations)
    else:
        data = torch_archive(_mutate(data_pkl, mutations, protect_prefix=2), storages)
    path = write(os.path.join(_SCRATCH, "m.bin"), data)
    _record(f"bin_byte_mutations_{target}", _assert_read_or_refused(checkpoints.read_torch_bin, path, data))


# Mostly small non-negative ints (so that a good share of the views are valid and get compared with
# torch), with negative, huge, and non-int values mixed in.
_small = st.integers(0, 6)
_view_ints = st.one_of(_small, _small, _small, st.integers(-3, 16), st.integers(-(1 << 64), 1 << 64),
                       st.sampled_from([1.5, True, None]))
_STORAGE_DTYPES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "LongStorage": np.int64,
                   "BFloat16Storage": np.uint16, "ByteStorage": np.uint8}


@st.composite
def _views(draw):
    ndim = draw(st.integers(0, 3))
    size = draw(st.lists(_view_ints, min_size=ndim, max_size=ndim))
    # usually one stride per dim; sometimes a wrong count
    stride = draw(st.one_of(st.lists(_view_ints, min_size=ndim, max_size=ndim), st.lists(_view_ints, max_size=4)))
    return draw(_view_ints), tuple(size), tuple(stride)


@FUZZ_SETTINGS
@given(view=_views(), elements=st.integers(0, 24), ragged_bytes=st.sampled_from([0, 0, 0, 1, 3]),
       storage_class=st.sampled_from(sorted(_STORAGE_DTYPES)))
def _fuzz_bin_pickle_views(view, elements, ragged_bytes, storage_class):
    """Random offsets, sizes, strides and storage lengths in an otherwise valid archive: the as_strided path.
    A view that is read must equal what torch.load builds from the same file."""
    offset, size, stride = view
    raw = np.arange(1, elements + 1).astype(_STORAGE_DTYPES[storage_class]).tobytes() + b"\x01" * ragged_bytes
    tensor = View(Storage("0", storage_class, numel=elements), offset, size, stride)
    data = torch_archive(torch_pickle({"t": tensor}), {"0": raw})
    path = write(os.path.join(_SCRATCH, "v.bin"), data)
    is_bf16 = storage_class == "BFloat16Storage"
    outcome = _record("bin_pickle_views", _assert_read_or_refused(
        checkpoints.read_torch_bin, path, data, {"t"} if is_bf16 else set()))
    if outcome == "read":
        want = torch.load(path, weights_only=True)["t"]
        got = checkpoints.read_torch_bin(path)["t"]
        np.testing.assert_array_equal(got, want.float().numpy() if is_bf16 else want.numpy())


@pytest.mark.parametrize("fuzzer, recorded", [
    (_fuzz_safetensors_random_headers, ("safetensors_random_headers",)),
    (_fuzz_safetensors_byte_mutations, ("safetensors_byte_mutations",)),
    (_fuzz_bin_byte_mutations, ("bin_byte_mutations_archive", "bin_byte_mutations_pickle")),
    (_fuzz_bin_pickle_views, ("bin_pickle_views",)),
], ids=lambda x: x.__name__.removeprefix("_fuzz_") if callable(x) else "")
def test_fuzz(fuzzer, recorded):
    """Each fuzzer runs its examples (none may crash, read outside the file or raise anything but
    CheckpointError) and reports how many it ran and how many were read vs refused (pytest -s)."""
    for name in recorded:
        FUZZ_EXAMPLES.pop(name, None)
    fuzzer()
    counts = {name: FUZZ_EXAMPLES.get(name, {"examples": 0}) for name in recorded}
    print(f"\nfuzz examples: {json.dumps(counts, sort_keys=True)}")
    assert sum(c["examples"] for c in counts.values()) >= 100, counts


@pytest.mark.parametrize("opcode", [b"\x95", b"\x8d", b"\x8e"])  # FRAME, BINUNICODE8, BINBYTES8
def test_bin_pickle_length_field_beyond_the_file_is_refused(tmp_path, opcode):
    """A corrupt 8-byte length inside data.pkl (found by the fuzzer: a MemoryError escaped) reads past the end of
    the in-memory pickle and is refused, without asking for the memory."""
    data_pkl = b"\x80\x04" + opcode + struct.pack("<Q", 2**62) + b"\x00" * 16 + b"."
    path = write(tmp_path / "pytorch_model.bin", torch_archive(data_pkl, {}))
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoints.read_torch_bin(path)
