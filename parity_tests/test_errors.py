"""One error hierarchy; configs refuse bad values; the CLI answers every failure with one line."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from onnxport import errors
from onnxport.configs import AutoConfig
from onnxport.errors import ConfigError, InputError, OnnxportError

from conftest import TINY

ERROR_HOMES = {  # old import paths keep giving the one class
    "onnxport.checkpoints": ["CheckpointError"],
    "onnxport.configs": ["ConfigError"],
    "onnxport.exporters": ["ExportError", "FrameworkNotInstalledError"],
    "onnxport.exporters.io_spec": ["TaskError"],
    "onnxport.exporters.quantize": ["QuantizationError"],
    "onnxport.exporters.validate": ["ValidationError"],
    "onnxport.reference_models.common": ["InputError"],
    "onnxport.runtime.session": ["ProviderUnavailableError", "ModelFileError"],
}


def test_every_error_derives_from_one_base_and_keeps_its_builtin_type():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), OnnxportError), name
    assert issubclass(errors.InputError, ValueError) and issubclass(errors.FrameworkNotInstalledError, ImportError)
    assert issubclass(errors.ValidationError, AssertionError) and issubclass(errors.ExportError, RuntimeError)
    for module, names in ERROR_HOMES.items():
        for name in names:
            assert getattr(importlib.import_module(module), name) is getattr(errors, name), (module, name)
    from onnxport.runtime import RuntimeInputError

    assert RuntimeInputError is InputError  # runtime and reference models raise one type for one condition


def _config(**overrides):
    return AutoConfig.from_dict({"model_type": "xlm-roberta", **TINY, **overrides})


@pytest.mark.parametrize("value", [0, -1e-5, math.nan, math.inf, "1e-5", True])
def test_layer_norm_eps_must_be_positive_and_finite(value):
    with pytest.raises(ConfigError, match="layer_norm_eps"):
        _config(layer_norm_eps=value)


@pytest.mark.parametrize("id2label, fault", [
    ({"zero": "NEG", "1": "POS"}, "'zero' is not an integer"),
    ({"0": "NEG", "2": "POS"}, r"0\.\.1"),
    ({"-1": "NEG"}, "non-negative"),
    (["NEG", "POS"], "must be an object"),
])
def test_id2label_keys_are_class_indices(id2label, fault):
    with pytest.raises(ConfigError, match=fault):
        _config(id2label=id2label)


def test_string_id2label_keys_as_transformers_writes_them():
    config = _config(id2label={"0": "NEG", "1": "POS"})
    assert config.id2label == {0: "NEG", 1: "POS"} and config.label2id == {"NEG": 0, "POS": 1}
    assert json.loads(config.to_json_string())["id2label"] == {"0": "NEG", "1": "POS"}


@pytest.mark.parametrize("value", [-0.1, 1.0, "0.1"])
def test_dropout_must_be_a_probability(value):
    with pytest.raises(ConfigError, match="hidden_dropout_prob"):
        _config(hidden_dropout_prob=value)


def test_negative_atol_is_refused():
    from onnxport.exporters.validate import tolerance_for

    assert tolerance_for("logits", 0.0) == 0.0
    for bad in (-1e-4, math.nan):
        with pytest.raises(InputError, match="atol"):
            tolerance_for("logits", bad)


def test_multiple_choice_shape_error_is_one_type_in_every_framework(checkpoint_factory):
    """PyTorch raised ValueError where TensorFlow and Flax raised InputError; now all three raise InputError."""
    from onnxport.reference_models import flax as ref_flax, pt as ref_pt, tf as ref_tf

    path = checkpoint_factory("xlm-roberta", "ForMultipleChoice")
    ids = np.full((2, 5), 5, dtype=np.int64)  # 2-D: the choices axis is missing
    messages = []
    for package, to_tensor in ((ref_pt, "torch"), (ref_tf, "tf"), (ref_flax, "np")):
        model = package.model_class("xlm-roberta", "ForMultipleChoice").from_pretrained(path)
        if to_tensor == "torch":
            import torch

            ids_in = torch.from_numpy(ids)
        else:
            ids_in = ids
        with pytest.raises(InputError) as err:
            model(input_ids=ids_in)
        messages.append(str(err.value))
    assert all("num_choices" in m or "choices" in m for m in messages), messages


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "onnxport.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if not line.startswith("INFO ")]  # export's progress log


def test_cli_failures_are_one_line_never_a_traceback(tmp_path):
    missing = _cli("export", str(tmp_path / "no-such-checkpoint"), str(tmp_path / "out"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert len(_error_lines(missing.stderr)) == 1 and "no-such-checkpoint" in missing.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"model_type": "xlm-roberta", **TINY,
                                                              "layer_norm_eps": 0}))
    bad_config = _cli("export", str(tmp_path / "bad"), str(tmp_path / "out2"))
    assert bad_config.returncode == 1 and "Traceback" not in bad_config.stderr, bad_config.stderr
    assert "layer_norm_eps" in bad_config.stderr and len(_error_lines(bad_config.stderr)) == 1
    no_export = _cli("run", str(tmp_path / "no-export"), "hello")
    assert no_export.returncode == 1 and "Traceback" not in no_export.stderr
    assert len(_error_lines(no_export.stderr)) == 1


@pytest.mark.parametrize("argv, fault", [
    (["run", "x", "hello", "--top-k", "0"], "--top-k"),
    (["export", "a", "b", "--atol", "-1"], "--atol"),
    (["export", "a", "b", "--task", "summarization"], "--task"),
])
def test_cli_usage_errors_exit_2(argv, fault):
    result = _cli(*argv)
    assert result.returncode == 2 and fault in result.stderr and "Traceback" not in result.stderr
