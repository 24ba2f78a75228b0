"""Issue 15, "Nothing lost": no export, quantization or session option destroys a user's files.

* ``export(..., force=True)`` builds beside OUT and swaps the finished, validated directory in: a failed
  export leaves OUT byte for byte as it was, and no temporary directory behind; user files in OUT that are
  not export files survive a successful one.
* A checkpoint and an output directory that are the same or nested (realpaths) are refused before anything
  is touched.
* ``optimized_model_path`` naming one of an export's own files is refused.
* An int8 model refused by its quality gate leaves nothing (a previous output directory untouched).
* fp16 exports: a float32 cache beyond the fp16 range is refused, not cast to inf; rows whose attention mask
  is all zeros give finite outputs.
* Issue 23: the disk filling up during an export (ENOSPC at any byte; a real full tmpfs as root) and an
  export process SIGKILLed while it writes, validates or swaps in leave OUT as it was (after the swap: the
  whole new export), and the next export into the same OUT succeeds. The swap is one atomic exchange on Linux.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from onnxport.errors import ExportError, InputError, ModelFileError, QuantizationError, ValidationError  # noqa: E402
from onnxport.exporters import artifact, export  # noqa: E402
from onnxport.exporters.quantize import quantize  # noqa: E402

TASK = "fill-mask"
STAGING_PREFIXES = (".onnxport-tmp-", ".onnxport-old-")


def snapshot(directory) -> dict[str, str]:
    """Every file under ``directory`` (relative path -> sha256 of its bytes; symlinks -> their target)."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if os.path.islink(path):
                found[rel] = "link:" + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as fh:
                    found[rel] = hashlib.sha256(fh.read()).hexdigest()
            else:
                found[rel] = "dir"
    return found


def leftovers(parent) -> list[str]:
    return sorted(n for n in os.listdir(parent) if n.startswith(STAGING_PREFIXES))


@pytest.fixture(scope="module")
def checkpoint(checkpoint_factory, tmp_path_factory):
    """A fill-mask checkpoint with a tokenizer file (a copy: some tests try to damage it)."""
    source = checkpoint_factory("xlm-roberta", "ForMaskedLM")
    path = tmp_path_factory.mktemp("nothing-lost") / "ckpt"
    shutil.copytree(source, path)
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    return str(path)


@pytest.fixture
def good_export(checkpoint, tmp_path):
    """A validated export with a user's own files beside it (a note and a folder of results)."""
    out = tmp_path / "parent" / "out"
    export(checkpoint, out, task=TASK)
    (out / "NOTES.md").write_text("my deployment notes")
    (out / "results").mkdir()
    (out / "results" / "eval.json").write_text('{"f1": 0.91}')
    return out


# ----------------------------------------------------------------------------- 1. --force is all or nothing
@pytest.mark.parametrize("failure", ["opset", "validation", "convert"])
def test_failed_force_export_leaves_out_byte_identical(failure, checkpoint, good_export, monkeypatch):
    before = snapshot(good_export)
    assert {"onnx/model.onnx", "onnxport.json", "config.json", "vocab.txt", "NOTES.md", "results/eval.json"} <= set(before)
    if failure == "opset":
        with pytest.raises(ExportError, match="opset"):
            export(checkpoint, good_export, task=TASK, force=True, opset=99)
    elif failure == "validation":
        with pytest.raises(ValidationError, match="beyond tolerance"):
            export(checkpoint, good_export, task=TASK, force=True, atol=1e-12)
    else:  # a crash in the middle of writing the artifact
        def broken_save(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(artifact, "save", broken_save)
        with pytest.raises(OSError, match="disk full"):
            export(checkpoint, good_export, task=TASK, force=True, validate=False)
    assert snapshot(good_export) == before
    assert leftovers(good_export.parent) == []


def test_failed_export_to_a_new_directory_leaves_nothing(checkpoint, tmp_path):
    out = tmp_path / "made" / "for" / "it"
    with pytest.raises(ValidationError, match=r"beyond tolerance(.|\n)*Nothing was written"):
        export(checkpoint, out, task=TASK, atol=1e-12)
    assert os.listdir(tmp_path) == []  # neither OUT nor the parents created for it


def test_force_export_replaces_export_files_and_keeps_user_files(checkpoint, checkpoint_factory, good_export):
    old = snapshot(good_export)
    (good_export / "merges.txt").write_text("#stale tokenizer file of the previous export\n")
    # A different head and checkpoint (no tokenizer files): every export file is new, none is left over.
    other = checkpoint_factory("xlm-roberta", "ForQuestionAnswering")
    report = export(other, good_export, task="question-answering", force=True)
    assert report.validation.passed and report.model_path == os.path.join(str(good_export), "onnx", "model.onnx")
    now = snapshot(good_export)
    assert set(now) == {"onnx", "onnx/model.onnx", "config.json", "onnxport.json", "NOTES.md", "results",
                        "results/eval.json"}
    assert now["NOTES.md"] == old["NOTES.md"] and now["results/eval.json"] == old["results/eval.json"]
    assert now["onnx/model.onnx"] != old["onnx/model.onnx"]
    meta = json.loads((good_export / "onnxport.json").read_text())
    assert meta["task"] == "question-answering" and meta["files"] == ["config.json", "onnx/model.onnx"]
    assert leftovers(good_export.parent) == []
    # Without force a non-empty OUT is still refused, and left alone.
    with pytest.raises(ExportError, match="not empty.*force"):
        export(checkpoint, good_export, task=TASK)
    assert snapshot(good_export) == now


def test_swap_is_one_exchange_on_linux(tmp_path):
    """Where the system has renameat2(RENAME_EXCHANGE) the new OUT takes the old one's place in one step."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux's")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    if not artifact.exchange(str(tmp_path / "a"), str(tmp_path / "b")):
        pytest.skip("this kernel or filesystem cannot exchange directories")
    assert (tmp_path / "b" / "x").read_text() == "a" and os.listdir(tmp_path / "a") == []


def test_failed_swap_restores_out(checkpoint, good_export, monkeypatch):
    """Without an atomic exchange, the last step (old OUT aside, new one in) failing half way puts the old OUT back."""
    before = snapshot(good_export)
    monkeypatch.setattr(artifact, "exchange", lambda a, b: False)
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if os.path.basename(str(src)).startswith(".onnxport-tmp-"):
            raise OSError("rename refused")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="rename refused"):
        export(checkpoint, good_export, task=TASK, force=True, validate=False)
    monkeypatch.undo()
    assert len(calls) == 3  # OUT aside, the refused swap, OUT back
    assert snapshot(good_export) == before
    assert leftovers(good_export.parent) == []


def test_force_export_through_a_symlink_keeps_the_link(checkpoint, good_export):
    link = good_export.parent / "current"
    os.symlink(good_export, link)
    export(checkpoint, link, task=TASK, force=True, validate=False)
    assert os.path.islink(link) and os.path.realpath(link) == os.path.realpath(good_export)
    assert (good_export / "NOTES.md").read_text() == "my deployment notes"
    assert json.loads((good_export / "onnxport.json").read_text())["validation"] is None


def test_force_export_into_the_working_directory(checkpoint, good_export, monkeypatch):
    """``onnxport export CK . --force`` from inside OUT: the process still works in OUT afterwards."""
    monkeypatch.chdir(good_export / "results")
    export(checkpoint, "..", task=TASK, force=True, validate=False)
    assert os.getcwd() == os.path.realpath(good_export / "results")
    assert os.path.isfile("eval.json") and os.path.isfile(os.path.join("..", "onnx", "model.onnx"))


# ----------------------------------------------------------------------------- 2. checkpoint and output overlap
@pytest.mark.parametrize("where", ["same", "out inside checkpoint", "checkpoint inside out", "symlink to checkpoint"])
def test_overlapping_checkpoint_and_out_refused_untouched(where, checkpoint, tmp_path):
    outer = tmp_path / "outer"
    shutil.copytree(checkpoint, outer / "ckpt")
    ckpt = outer / "ckpt"
    before, before_outer = snapshot(ckpt), snapshot(outer)
    out = {"same": ckpt, "out inside checkpoint": ckpt / "onnx", "checkpoint inside out": outer,
           "symlink to checkpoint": tmp_path / "link"}[where]
    if where == "symlink to checkpoint":
        os.symlink(ckpt, out)
    with pytest.raises(ExportError, match="checkpoint") as raised:
        export(ckpt, out, task=TASK, force=True, validate=False)
    assert str(ckpt) in str(raised.value)
    assert snapshot(ckpt) == before and snapshot(outer) == before_outer


# ----------------------------------------------------------------------------- 3. optimized_model_path
@pytest.mark.parametrize("model_type", ["xlm-roberta", "roformer"])  # roformer: the session gets lowered bytes
def test_optimized_model_path_cannot_name_export_files(model_type, checkpoint_factory, tmp_path):
    from onnxport.runtime import OnnxModelForMaskedLM, SessionConfig, create_session

    out = tmp_path / "export"
    export(checkpoint_factory(model_type, "ForMaskedLM"), out, task=TASK, validate=False)
    before = snapshot(out)
    for name in ("onnx/model.onnx", "config.json", "onnxport.json", "onnx/model.onnx_data", "onnx/other.onnx"):
        target = out / name
        with pytest.raises(ModelFileError, match="optimized_model_path") as raised:
            OnnxModelForMaskedLM.from_pretrained(out, provider="cpu", optimized_model_path=str(target))
        assert str(target) in str(raised.value) and "outside" in str(raised.value)
        with pytest.raises(ModelFileError, match="optimized_model_path"):
            OnnxModelForMaskedLM.from_pretrained(
                out, provider="cpu", session_config=SessionConfig(optimized_model_path=str(target)))
    # The same file by another spelling (relative, through a symlink) is the same file.
    os.symlink(out, tmp_path / "alias")
    with pytest.raises(ModelFileError, match="optimized_model_path"):
        create_session(str(out / "onnx" / "model.onnx"), optimized_model_path=str(tmp_path / "alias" / "onnx" / "model.onnx"))
    assert snapshot(out) == before
    # A path outside the export's files is the cache it is meant to be.
    cache = tmp_path / "cache" / "optimized.onnx"
    model = OnnxModelForMaskedLM.from_pretrained(out, provider="cpu", optimized_model_path=str(cache))
    assert cache.is_file() and snapshot(out) == before
    ids = np.array([[5, 6, 7, 8]], np.int64)
    assert model(input_ids=ids)["logits"].shape == (1, 4, 99)


def test_optimized_model_path_cannot_be_the_model_itself(tmp_path, checkpoint_factory):
    from onnxport.runtime import create_session

    out = tmp_path / "export"
    export(checkpoint_factory("xlm-roberta", "ForMaskedLM"), out, task=TASK, validate=False)
    loose = tmp_path / "loose.onnx"  # a model outside any export directory
    shutil.copyfile(out / "onnx" / "model.onnx", loose)
    digest = snapshot(tmp_path)["loose.onnx"]
    with pytest.raises(ModelFileError, match="optimized_model_path"):
        create_session(str(loose), optimized_model_path=str(loose))
    assert snapshot(tmp_path)["loose.onnx"] == digest


# ----------------------------------------------------------------------------- 4. int8 quality gate
@pytest.fixture
def fp32_export(checkpoint, tmp_path):
    out = tmp_path / "fp32"
    export(checkpoint, out, task=TASK, validate=False)
    return out


def test_int8_gate_failure_leaves_nothing(fp32_export, tmp_path):
    out = tmp_path / "int8"
    source = snapshot(fp32_export)
    with pytest.raises(QuantizationError, match="beyond the thresholds(.|\n)*Nothing was written"):
        quantize(fp32_export, out, min_cosine=1.0 + 1e-9)
    assert not out.exists() and leftovers(tmp_path) == []
    assert snapshot(fp32_export) == source


def test_int8_gate_failure_keeps_previous_output(fp32_export, tmp_path):
    out = tmp_path / "int8"
    # Tiny fill-mask logits have near-ties (vocab 99): a top-1 bar this model meets, raised below.
    good = quantize(fp32_export, out, min_top1=0.9)
    assert good.passed
    (out / "NOTES.md").write_text("kept")
    before = snapshot(out)
    with pytest.raises(QuantizationError, match="beyond the thresholds"):
        quantize(fp32_export, out, min_top1=1.01, force=True)
    assert snapshot(out) == before and leftovers(tmp_path) == []
    # A passing --force run replaces the int8 files and keeps the user's note.
    again = quantize(fp32_export, out, per_channel=True, force=True, min_top1=0.9)
    assert again.passed and again.per_channel and (out / "NOTES.md").read_text() == "kept"
    assert json.loads((out / "onnxport.json").read_text())["quantization"]["per_channel"] is True


def test_cli_export_quantize_gate_failure_leaves_nothing(checkpoint, good_export, tmp_path, monkeypatch, capsys):
    """`onnxport export CK OUT --quantize int8` whose int8 model the gate refuses: exit 1, OUT as it was."""
    from onnxport import cli
    from onnxport.exporters import quantize as quantize_module

    monkeypatch.setattr(quantize_module, "DEFAULT_MIN_COSINE", 1.0 + 1e-9)  # the gate the CLI applies
    fresh = tmp_path / "int8-out"
    assert cli.main(["export", checkpoint, str(fresh), "--task", TASK, "--quantize", "int8", "--no-validate"]) == 1
    assert "beyond the thresholds" in capsys.readouterr().err
    assert not fresh.exists() and leftovers(tmp_path) == []
    before = snapshot(good_export)
    assert cli.main(["export", checkpoint, str(good_export), "--task", TASK, "--quantize", "int8", "--force",
                     "--no-validate"]) == 1
    assert snapshot(good_export) == before and leftovers(good_export.parent) == []


def test_int8_output_overlapping_the_export_refused(fp32_export, tmp_path):
    before = snapshot(tmp_path)
    with pytest.raises(QuantizationError, match="own directory"):
        quantize(fp32_export, fp32_export / "int8")
    with pytest.raises(QuantizationError, match="own directory"):
        quantize(fp32_export, tmp_path, force=True)  # the export is inside OUT: a swap would delete it
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- 5. fp16
def test_to_fp16_checked():
    from onnxport.exporters.fp16 import FP16_MAX, to_fp16_checked

    inside = np.array([[-65504.0, 0.5], [1e-3, 65504.0]], np.float32)
    got = to_fp16_checked("past_key_values.0.key", inside)
    assert got.dtype == np.float16 and np.array_equal(got, inside.astype(np.float16))
    beyond = np.zeros((1, 4, 2, 8), np.float32)
    beyond[0, 1, 1, 3] = -70000.0
    with pytest.raises(InputError, match=r"past_key_values\.1\.value.*70000.*65504"):
        to_fp16_checked("past_key_values.1.value", beyond)
    for bad in (np.inf, np.nan):
        beyond[0, 1, 1, 3] = bad
        with pytest.raises(InputError, match=r"past_key_values\.1\.value"):
            to_fp16_checked("past_key_values.1.value", beyond)
    already = np.ones(3, np.float16)
    assert to_fp16_checked("x", already) is already  # fp16 input: nothing to check
    assert FP16_MAX == 65504.0


@pytest.fixture(scope="module")
def fp16_decoder(checkpoint_factory, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16-decoder") / "out"
    export(checkpoint_factory("roformer", "ForCausalLM"), out, task="text-generation", with_past=True, dtype="fp16")
    return str(out)


def test_fp16_runtime_refuses_cache_beyond_range(fp16_decoder):
    from onnxport.runtime import OnnxModelForCausalLM

    model = OnnxModelForCausalLM.from_pretrained(fp16_decoder, provider="cpu")
    past = [[np.zeros((1, 4, 2, 8), np.float32) for _ in range(2)] for _ in range(2)]
    past[1][0][0, 0, 0, 0] = 1e5
    with pytest.raises(InputError, match=r"past_key_values\.1\.key.*100000"):
        model(input_ids=np.array([[5]], np.int64), past_key_values=past)


@pytest.mark.parametrize("task,head,with_past", [("fill-mask", "ForMaskedLM", False),
                                                 ("feature-extraction", "Model", False),
                                                 ("text-generation", "ForCausalLM", True)])
@pytest.mark.parametrize("model_type", ["xlm-roberta", "roberta-prelayernorm", "roformer"])
def test_fp16_all_masked_rows_are_finite(model_type, task, head, with_past, checkpoint_factory, tmp_path):
    """A row attending to nothing gives finite outputs; the other rows do not depend on it."""
    from onnxport.runtime import load_model

    out = tmp_path / "fp16"
    export(checkpoint_factory(model_type, head), out, task=task, with_past=with_past, dtype="fp16", validate=False)
    model = load_model(out, provider="cpu")
    rng = np.random.default_rng(3)
    ids = rng.integers(3, 99, size=(3, 6), dtype=np.int64)
    past_len = 2 if with_past else 0
    mask = np.ones((3, past_len + 6), np.int64)
    mask[1] = 0  # attends to nothing
    mask[2, past_len + 4:] = 0
    extra = {}
    if with_past:
        past = [[rng.standard_normal((3, 4, past_len, 8)).astype(np.float16) for _ in range(2)] for _ in range(2)]
        extra = {"past_key_values": past}
    got = model(input_ids=ids, attention_mask=mask, **extra)
    arrays = {name: value for name, value in got.items() if name != "past_key_values"}
    if with_past:
        arrays.update({f"present.{i}.{j}": np.asarray(v) for i, layer in enumerate(got["past_key_values"])
                       for j, v in enumerate(layer)})
    for name, value in arrays.items():
        assert np.isfinite(value.astype(np.float32)).all(), name
    # Rows 0 and 2 alone give the same outputs: the masked row leaks nothing into them.
    keep = [0, 2]
    alone = model(input_ids=ids[keep], attention_mask=mask[keep],
                  **({"past_key_values": [[a[keep] for a in layer] for layer in past]} if with_past else {}))
    for name in (n for n in got if n != "past_key_values"):
        np.testing.assert_allclose(np.asarray(alone[name], np.float32), np.asarray(got[name], np.float32)[keep],
                                   rtol=0, atol=2e-3 * max(1.0, float(np.abs(got[name]).max())))


# ----------------------------------------------------------------------------- 6. disk full, SIGKILL (issue 23)
class DiskFull:
    """``open`` for files written inside an export's staging directory: bytes past ``budget`` (over all such
    files) raise ENOSPC, as a full disk does. ``budget=None`` only counts (``written``)."""

    def __init__(self, budget=None):
        import builtins

        self.budget, self.written, self.real_open = budget, 0, builtins.open

    def __call__(self, file, mode="r", *args, **kwargs):
        fh = self.real_open(file, mode, *args, **kwargs)
        staged = isinstance(file, (str, os.PathLike)) and any(
            part.startswith(artifact.STAGING_PREFIX) for part in os.fspath(file).split(os.sep))
        return _Metered(fh, self) if staged and any(c in mode for c in "wax+") else fh


class _Metered:
    def __init__(self, fh, disk):
        self._fh, self._disk = fh, disk

    def write(self, data):
        import errno

        disk = self._disk
        size = len(data.encode("utf-8")) if isinstance(data, str) else len(memoryview(data).cast("B"))
        if disk.budget is not None and disk.written + size > disk.budget:
            room = max(0, disk.budget - disk.written)
            # what fits is written, as on a real disk (text: as many characters, no more bytes than that)
            self._fh.write(data[:room] if isinstance(data, str) else memoryview(data).cast("B")[:room])
            disk.written += room
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._fh.name)
        disk.written += size
        return self._fh.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def __iter__(self):
        return iter(self._fh)

    def __getattr__(self, name):
        return getattr(self._fh, name)


@pytest.fixture(scope="module")
def export_bytes(checkpoint, tmp_path_factory, request):
    """Bytes an export of the checkpoint writes through ``open`` (the model, config, onnxport.json, ...)."""
    disk = DiskFull()
    patch = pytest.MonkeyPatch()
    patch.setattr("builtins.open", disk)
    try:
        export(checkpoint, tmp_path_factory.mktemp("count") / "out", task=TASK, validate=False)
    finally:
        patch.undo()
    assert disk.written > 10_000
    return disk.written


@pytest.mark.parametrize("full_at", [0.0, 0.5, 0.999])
def test_disk_full_during_export_leaves_out_and_the_next_export_works(full_at, checkpoint, good_export, export_bytes,
                                                                      monkeypatch):
    """The disk fills at the first byte, half way through the model, or at the last file: the export fails
    with the OS's "No space left on device", OUT is byte for byte as it was, no staging directory is left,
    and once there is room the same export into the same OUT succeeds."""
    before = snapshot(good_export)
    disk = DiskFull(int(export_bytes * full_at))
    monkeypatch.setattr("builtins.open", disk)
    with pytest.raises(OSError) as raised:
        export(checkpoint, good_export, task=TASK, force=True, validate=False)
    monkeypatch.undo()
    chain = [raised.value, raised.value.__cause__, raised.value.__context__]
    assert any(getattr(e, "errno", None) == __import__("errno").ENOSPC or "No space left" in str(e) for e in chain)
    assert disk.written == int(export_bytes * full_at)
    assert snapshot(good_export) == before and leftovers(good_export.parent) == []
    export(checkpoint, good_export, task=TASK, force=True, validate=False)
    after = snapshot(good_export)
    assert after["NOTES.md"] == before["NOTES.md"] and after["results/eval.json"] == before["results/eval.json"]
    assert after["onnx/model.onnx"] == before["onnx/model.onnx"]  # the same checkpoint exports to the same bytes


def test_real_full_disk_during_export(checkpoint, tmp_path):
    """The same on a real full filesystem: OUT on a small tmpfs (root only), the staging copy beside it does
    not fit; after the filesystem grows, the export succeeds."""
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a size-limited tmpfs needs root")
    disk = tmp_path / "small-disk"
    disk.mkdir()
    probe = tmp_path / "probe"
    export(checkpoint, probe, task=TASK, validate=False)
    size = sum(f.stat().st_size for f in probe.rglob("*") if f.is_file())
    kib = (size * 3 // 2) // 1024 + 64  # one export and its notes fit, a second copy beside it does not
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        out = disk / "out"
        shutil.copytree(probe, out)
        (out / "NOTES.md").write_text("my deployment notes")
        before = snapshot(out)
        with pytest.raises(OSError) as raised:
            export(checkpoint, out, task=TASK, force=True, validate=False)
        assert "No space left" in str(raised.value) or "No space left" in str(raised.value.__cause__)
        assert snapshot(out) == before and leftovers(disk) == []
        subprocess.run(["mount", "-o", f"remount,size={kib * 3}k", str(disk)], check=True)
        export(checkpoint, out, task=TASK, force=True, validate=False)
        assert snapshot(out) == before and leftovers(disk) == []  # same export, notes kept
    finally:
        subprocess.run(["umount", str(disk)], check=False)


KILLED_EXPORT = r"""
import builtins, os, signal, sys

from onnxport.exporters import export

checkpoint, out, point = sys.argv[1:4]


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def staged(path):
    return any(part.startswith(".onnxport-tmp-") for part in os.fspath(path).split(os.sep))


if point == "writing the model":  # half of the first write into model.onnx reaches the disk
    real_open = builtins.open

    class Half:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            data = memoryview(data).cast("B")
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            die()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def open_(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and staged(file) and os.path.basename(file) == "model.onnx" and "w" in mode:
            return Half(fh)
        return fh

    builtins.open = open_
elif point == "validating":  # ONNX Runtime loading the written model
    import onnxruntime

    onnxruntime.InferenceSession = lambda *a, **k: die()
elif point in ("swapping", "swapped"):  # the finished export about to take OUT's place / just after
    from onnxport.exporters import artifact

    real_exchange = artifact.exchange

    def exchange(a, b):
        if point == "swapping":
            die()
        assert real_exchange(a, b)
        die()

    artifact.exchange = exchange
print("exporting", flush=True)
export(checkpoint, out, task="fill-mask", force=True, validate=point == "validating")
print("finished", flush=True)
"""


@pytest.mark.parametrize("point", ["writing the model", "validating", "swapping", "swapped"])
def test_sigkill_during_export_leaves_out_and_the_next_export_works(point, checkpoint, good_export):
    """An export process killed (SIGKILL: no cleanup runs) while it writes the model, validates it, or swaps
    it in: OUT is byte for byte as it was (killed right after the swap: OUT is the complete new export,
    here the same bytes), and the next export into the same OUT succeeds and keeps the user's files."""
    import signal
    import subprocess
    import sys

    if point in ("swapping", "swapped"):
        probe = good_export.parent / "probe"
        (probe / "a").mkdir(parents=True)
        (probe / "b").mkdir()
        if not artifact.exchange(str(probe / "a"), str(probe / "b")):
            pytest.skip("no atomic directory exchange here: two renames, with a moment without OUT between them")
        shutil.rmtree(probe)
    before = snapshot(good_export)
    done = subprocess.run([sys.executable, "-c", KILLED_EXPORT, checkpoint, str(good_export), point],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr[-3000:])
    assert "exporting" in done.stdout and "finished" not in done.stdout
    if point == "swapped":  # the new export is in whole (validation record aside), the previous one beside it
        assert {k for k, v in snapshot(good_export).items() if before.get(k) != v} == {"onnxport.json"}
    else:
        assert snapshot(good_export) == before
    # What the killed process leaves is only its staging directory beside OUT: never in OUT, never OUT itself.
    assert all(name.startswith(artifact.STAGING_PREFIX) for name in leftovers(good_export.parent))
    left = leftovers(good_export.parent)
    export(checkpoint, good_export, task=TASK, force=True, validate=False)
    after = snapshot(good_export)
    # The same checkpoint exports to the same model bytes; the user's files are kept. (onnxport.json differs:
    # this export was not validated.)
    assert {k: v for k, v in after.items() if k != "onnxport.json"} == \
        {k: v for k, v in before.items() if k != "onnxport.json"}
    assert leftovers(good_export.parent) == left  # nothing more left, nothing of another export touched
