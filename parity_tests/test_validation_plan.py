"""Validation within the machine's memory (issue 26, "exports that fit"): the plan's estimate against measured
peaks, its choices on made-up budgets, the native model run over chunks of query rows against the whole run,
a tiny 8,194-position checkpoint validated to 8,192 tokens, and the refusal.

The estimate is checked on one small case in a fresh process against the peak resident memory the run adds
(Linux's VmHWM, reset through /proc/self/clear_refs). The sizes are chosen so every score tensor is larger
than glibc's largest mmap threshold (32 MiB): freed tensors then go back to the system at once, and the peak is
the tensors alive together, which is what the estimate counts. Measured on this machine the three ratios are
1.00-1.04; the bound is 0.8-1.25: what malloc, torch's and ONNX Runtime's allocators may add or round, and
no more — one score tensor more or less than estimated moves the ratio by 1/3 to 1/2, far outside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from onnxport.artifact import io_spec
from onnxport.configs import AutoConfig
from onnxport.errors import ExportError, InputError
from onnxport.exporters import export
from onnxport.exporters import validate as v

GIB = 1 << 30


def xlmr_config(**overrides):
    kwargs = dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, max_position_embeddings=8194, type_vocab_size=1, pad_token_id=1)
    kwargs.update(overrides)
    return AutoConfig.config_class("xlm-roberta")(**kwargs)


def plan(config, task="text-classification", framework="pt", budget=None, length=None, splits=True):
    spec = io_spec.build_io_spec(task, config, False, pooler=False)
    return v.plan_validation(spec, config, framework, budget, "test", length, splits)


# ----------------------------------------------------------------------------- the estimate against the measure
MEASURE = r"""
import contextlib, gc, json, re, sys, tempfile
import torch
from onnxport.artifact import io_spec
from onnxport.configs import AutoConfig
from onnxport.exporters import export, validate as v
from onnxport.exporters.native_chunks import query_chunks
from onnxport.reference_models.pt import model_class

torch.set_num_threads(1)
L, H = 4096, 4
config = AutoConfig.config_class("xlm-roberta")(vocab_size=99, hidden_size=64, num_hidden_layers=2,
    num_attention_heads=H, intermediate_size=64, max_position_embeddings=L + 2, type_vocab_size=1)
spec = io_spec.build_io_spec("feature-extraction", config, False, pooler=False)
g = v.Geometry.of(config)
feeds, small = io_spec.make_inputs(spec, 1, L, seed=0), io_spec.make_inputs(spec, 1, 16, seed=0)

def status(key):
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024

def added_peak(run):
    gc.collect()
    base = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
    run()
    return status("VmHWM") - base

torch.manual_seed(0)
model = model_class("xlm-roberta", "Model")(config).eval()
def native(rows):
    with torch.no_grad(), (query_chunks(model, rows) if rows else contextlib.nullcontext()):
        return model(**{k: torch.from_numpy(a) for k, a in feeds.items()}).last_hidden_state.numpy()
with torch.no_grad():
    model(**{k: torch.from_numpy(a) for k, a in small.items()})
result = {"native": [added_peak(lambda: native(None)), v.estimate_native_bytes(spec, g, "pt", 1, L, 0)],
          "chunked": [added_peak(lambda: native(L // 4)), v.estimate_native_bytes(spec, g, "pt", 1, L, 0, L // 4)]}
tmp = tempfile.mkdtemp()
model.save_pretrained(tmp + "/ck")
del model
export(tmp + "/ck", tmp + "/out", task="feature-extraction", validate=False, copy_tokenizer=False)
session = v.ort_session(tmp + "/out/onnx/model.onnx")
session.run(None, small)
result["graph"] = [added_peak(lambda: session.run(None, feeds)), v.estimate_graph_bytes(spec, g, 1, L, 0)]
result = {k: [measured, estimate - g.parameter_bytes] for k, (measured, estimate) in result.items()}  # weights loaded
print("RESULT " + json.dumps(result))
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs")
def test_estimate_against_the_measured_peak():
    done = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    scores = 4 * 4 * 4096 * 4096  # one (1 x 4 heads x 4096 x 4096) fp32 tensor: 268 MB
    for side, (measured, estimated) in result.items():
        assert 0.8 <= measured / estimated <= 1.25, (side, measured, estimated)
    # What the estimate says, in score tensors: three on the native side, two for the graph, a chunk's two.
    assert result["native"][0] > 2.5 * scores and result["graph"][0] > 1.6 * scores
    assert result["chunked"][0] < 0.7 * scores


# ----------------------------------------------------------------------------- the plan on hypothetical budgets
def test_bge_m3_base_geometry_plan():
    p = plan(xlmr_config(), budget=16 * GIB)
    single, fresh, longest = p.cases
    assert (single.batch, single.sequence, fresh.batch, fresh.sequence) == (1, 7, 3, 11)
    assert (longest.batch, longest.sequence, longest.past) == (1, 8192, 0) and p.longest_sequence == 8192
    assert "at batch 2 the graph's attention scores alone would take 12.0 GiB" in longest.note
    # One (1 x 12 x 8192 x 8192) fp32 score tensor is 3 GiB; a 256 MiB chunk holds 682 query rows of it.
    assert v.scores_bytes(p_spec := io_spec.build_io_spec("text-classification", xlmr_config(), False),
                          v.Geometry.of(xlmr_config()), 1, 8192, 0) == 3 * GIB
    assert longest.query_chunk == (256 << 20) // (4 * 12 * 8192) == 682
    g = v.Geometry.of(xlmr_config())
    assert 1.10e9 < g.parameter_bytes < 1.15e9  # 278 M parameters (XLM-R base) in fp32
    # The graph: its weights and two 3 GiB score tensors; the chunked native run: weights and two 128 MiB ones.
    assert 7.1 * GIB < longest.graph_bytes < 7.3 * GIB
    # weights + two chunk scores (1 x 12 x 682 x 8192) + 8192 tokens x (6 x 768 + 3072) activations + logits twice
    assert longest.native_bytes == g.parameter_bytes + 2 * 4 * 12 * 682 * 8192 + 4 * 8192 * 7680 + 2 * 4 * 2
    assert longest.peak_bytes < 8 * GIB  # the target for this export's peak
    assert p_spec.max_sequence_length == 8192


def test_short_tables_keep_the_longest_case_at_batch_two_whole():
    p = plan(xlmr_config(max_position_embeddings=514), budget=4 * GIB)
    longest = p.cases[-1]
    assert (longest.batch, longest.sequence, longest.query_chunk, longest.note) == (2, 512, None, "")


def test_frameworks_without_chunks_plan_the_whole_attention():
    p = plan(xlmr_config(), framework="tf", splits=False, budget=32 * GIB)
    longest = p.cases[-1]
    assert longest.query_chunk is None
    assert longest.native_bytes > v.Geometry.of(xlmr_config()).parameter_bytes + 3 * 3 * GIB  # three score tensors


def test_refused_with_the_length_that_fits():
    with pytest.raises(ExportError) as err:
        plan(xlmr_config(), budget=6 * GIB)
    message = str(err.value)
    # 8192 needs ~7.2 GiB on the ONNX Runtime side; at 4096 the scores are a quarter: ~2.3 GiB.
    assert "longest case (batch 1 x 8192 tokens, 12 heads, 12 layers, pt)" in message
    assert "over the 6.00 GiB budget (test)" in message and "Nothing was allocated" in message
    assert "--validate-length 4096" in message and "--no-validate" in message and v.MEMORY_ENV in message
    shorter = plan(xlmr_config(), budget=6 * GIB, length=4096)
    assert shorter.longest_sequence == 4096 and all(c.peak_bytes <= 6 * GIB for c in shorter.cases)
    with pytest.raises(ExportError, match="no validation length fits"):
        plan(xlmr_config(), budget=GIB // 2)


def test_smaller_forms_when_the_preferred_does_not_fit():
    """Tiny body, 2 heads, 4096 tokens: batch 2 (graph 0.51 GiB) and the whole native attention (three 134 MB
    score tensors) do not fit 0.3 GiB; batch 1 with 2048-row chunks does."""
    config = xlmr_config(vocab_size=99, hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                         intermediate_size=37)
    roomy = plan(config, task="feature-extraction", length=4096, budget=GIB).cases[-1]
    assert (roomy.batch, roomy.query_chunk) == (2, None)
    tight = plan(config, task="feature-extraction", length=4096, budget=int(0.3 * GIB)).cases[-1]
    assert (tight.batch, tight.query_chunk) == (1, 2048) and tight.peak_bytes <= 0.3 * GIB
    assert tight.note == "batch 1: batch 2 does not fit the budget"


def test_masked_lm_outputs_count_at_full_length():
    """A masked-LM's logits at 8,192 tokens are 8192 x 250002 fp32 = 8.2 GB on each side: they are planned for."""
    p = plan(xlmr_config(), task="fill-mask", budget=None)
    longest = p.cases[-1]
    assert longest.graph_bytes > 2 * 4 * 8192 * 250002  # ONNX Runtime's logits and the native ones held
    with pytest.raises(ExportError):
        plan(xlmr_config(), task="fill-mask", budget=16 * GIB)


def test_no_budget_known_plans_without_refusing():
    assert plan(xlmr_config(), budget=None).budget_bytes is None


def test_budget_sources(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       25165824 kB\nMemFree:         1000 kB\nMemAvailable:   20971520 kB\n")
    monkeypatch.delenv(v.MEMORY_ENV, raising=False)
    assert v.available_memory(str(meminfo)) == 20 * GIB
    assert v.memory_budget(meminfo=str(meminfo)) == (16 * GIB, "80% of MemAvailable 20.0 GiB")
    assert v.memory_budget(meminfo=str(tmp_path / "absent"))[0] is None
    monkeypatch.setenv(v.MEMORY_ENV, "6GiB")
    assert v.memory_budget(meminfo=str(meminfo)) == (6 * GIB, f"${v.MEMORY_ENV}")
    assert v.memory_budget("512M", meminfo=str(meminfo)) == (512 << 20, "validation_memory")
    assert [v.parse_memory(x) for x in ("1024", "1.5G", "2gb", "3 MiB")] == [1024, 3 << 29, 2 * GIB, 3 << 20]
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(InputError):
            v.parse_memory(bad)
    with pytest.raises(InputError, match="between 1 and the model's 8192 positions"):
        plan(xlmr_config(), length=9000)


# ----------------------------------------------------------------------------- the native run in query chunks
@pytest.mark.parametrize("model_type,head,overrides", [
    ("xlm-roberta", "ForMaskedLM", {}),
    ("roberta-prelayernorm", "ForTokenClassification", {}),
    ("roformer", "ForQuestionAnswering", {}),  # rotary tables rolled with the positions
    ("roformer", "ForCausalLM", {"is_decoder": True, "rotary_value": True}),  # a causal mask's rows
    ("xlm-roberta", "ForMultipleChoice", {}),
])
def test_query_chunks_compute_the_whole_model(model_type, head, overrides):
    """Chunks of 5 query rows (uneven: 23 = 4 x 5 + 3) against the whole call, on padded batches."""
    import torch

    from onnxport.exporters.native_chunks import query_chunks, splits_queries
    from onnxport.reference_models.pt import model_class

    config = AutoConfig.config_class(model_type)(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=37,
                                                 max_position_embeddings=40, type_vocab_size=2,
                                                 initializer_range=0.2, **overrides)
    torch.manual_seed(0)
    model = model_class(model_type, head)(config).eval()
    task = io_spec.task_for_head(head)
    spec = io_spec.build_io_spec(task, config, False)
    feeds = io_spec.make_inputs(spec, 3, 23, num_choices=2, seed=5)
    tensors = {k: torch.from_numpy(a) for k, a in feeds.items()}
    assert splits_queries(model)
    with torch.no_grad():
        whole = spec.select(model(**spec.model_kwargs(tensors), return_dict=True))
        with query_chunks(model, 5):
            chunked = spec.select(model(**spec.model_kwargs(tensors), return_dict=True))
        again = spec.select(model(**spec.model_kwargs(tensors), return_dict=True))  # the layers restored
    for a, b, c in zip(whole, chunked, again):
        assert float(torch.max(torch.abs(a - b))) < 1e-5 and torch.equal(a, c)
        assert float(torch.max(torch.abs(a))) > 1e-2  # not a vanishing output


def test_relative_position_scores_are_not_chunked():
    from onnxport.exporters.native_chunks import splits_queries
    from onnxport.reference_models.pt import model_class

    config = AutoConfig.config_class("xlm-roberta")(vocab_size=99, hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=4, intermediate_size=37,
                                                    max_position_embeddings=40,
                                                    position_embedding_type="relative_key")
    assert not splits_queries(model_class("xlm-roberta", "Model")(config))
    spec = io_spec.build_io_spec("feature-extraction", config, False)
    assert all(c.query_chunk is None for c in v.plan_validation(spec, config, "pt", None, "", None, False).cases)


# ----------------------------------------------------------------------------- exports
@pytest.fixture(scope="module")
def long_checkpoint(checkpoint_factory):
    """bge-m3's position table (8,194: 8,192 tokens after the padding offset) on a tiny body."""
    return checkpoint_factory("xlm-roberta", "Model", hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                              intermediate_size=37, max_position_embeddings=8194, type_vocab_size=1)


def test_default_validation_reaches_8192_tokens(long_checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv(v.MEMORY_ENV, raising=False)
    report = export(long_checkpoint, tmp_path / "out", task="feature-extraction", validation_memory="4GiB")
    validation = report.validation
    assert validation.passed and validation.longest_sequence == 8192
    longest = [r for r in validation.rows if r.case == "longest"]
    assert [r.shape for r in longest] == [(1, 8192, 32), (1, 32)]
    assert all(0 < r.max_abs_diff <= 1e-4 for r in longest)  # real values compared, within the bar
    case = validation.plan.cases[-1]
    assert (case.batch, case.sequence, case.query_chunk) == (1, 8192, 4096)  # 256 MiB / (2 heads x 8192 x 4 B)
    written = json.loads((tmp_path / "out" / "onnxport.json").read_text())["validation"]
    assert written["longest_sequence"] == 8192 and written["plan"]["budget_bytes"] == 4 * GIB
    assert written["plan"]["cases"][-1]["query_chunk"] == 4096 and "batch 1" in written["plan"]["cases"][-1]["note"]


def test_refused_before_conversion_with_what_to_do(long_checkpoint, tmp_path, monkeypatch):
    from onnxport.exporters import pt

    def no_conversion(job):
        raise AssertionError("converted although the validation cannot fit")

    monkeypatch.setattr(pt, "convert", no_conversion)
    with pytest.raises(ExportError) as err:
        export(long_checkpoint, tmp_path / "out", task="feature-extraction", validation_memory="200MiB")
    message = str(err.value)
    assert "the longest case (batch 1 x 8192 tokens, 2 heads, 2 layers, pt)" in message
    assert "over the 0.20 GiB budget (validation_memory)" in message
    # at 4096 tokens the graph's two (1 x 2 x 4096 x 4096) fp32 score tensors alone are 0.25 GiB
    assert "--validate-length 2048" in message and "--no-validate" in message
    assert not (tmp_path / "out").exists()


def test_shorter_validation_length_is_said(long_checkpoint, tmp_path, capsys):
    from onnxport.cli import main

    out = tmp_path / "out"
    assert main(["export", long_checkpoint, str(out), "--task", "feature-extraction", "--validate-length", "300",
                 "--validation-memory", "200MiB"]) == 0
    printed = capsys.readouterr().out
    assert "longest: batch 2 x 300 tokens" in printed and "memory budget 0.20 GiB: validation_memory" in printed
    validation = json.loads((out / "onnxport.json").read_text())["validation"]
    assert validation["passed"] and validation["longest_sequence"] == 300
    assert [r["shape"] for r in validation["rows"] if r["case"] == "longest"][0] == [2, 300, 32]  # small: batch 2
    assert main(["info", str(out)]) == 0
    assert "inputs up to 300 tokens" in capsys.readouterr().out
    # beyond the table: refused in one line, before anything is built
    assert main(["export", long_checkpoint, str(tmp_path / "o2"), "--validate-length", "9000"]) == 1
    assert "between 1 and the model's 8192 positions" in capsys.readouterr().err


def test_onnxport_validate_plans_the_same_way(long_checkpoint, tmp_path):
    from onnxport.exporters.pipeline import validate_export

    out = tmp_path / "out"
    export(long_checkpoint, out, task="feature-extraction", validate=False)
    report = validate_export(str(out), validation_memory="4GiB")
    assert report.passed and report.longest_sequence == 8192 and report.plan.cases[-1].query_chunk == 4096
    assert all(0 < r.max_abs_diff <= 1e-4 for r in report.rows if r.case == "longest")
    with pytest.raises(ExportError, match="--validate-length 2048"):
        validate_export(str(out), validation_memory="200MiB")
    assert validate_export(str(out), validate_length=100, validation_memory="200MiB").longest_sequence == 100
