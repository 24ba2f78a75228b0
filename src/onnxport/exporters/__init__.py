"""Export an HF-format checkpoint to an ONNX directory: ``export(checkpoint_dir, out_dir, framework, task)``.

The package's modules:

* ``pipeline``: ``export()`` and its stages, ``load_spec``, the export directory's file names;
* ``front_end``: the front-end contract (``ExportJob`` -> ``Converted``), ``FRONT_ENDS``, and the steps
  the three front ends share (loading the reference model, the export trace's options, the io-spec call);
* ``pt`` / ``tf`` / ``flax``: the front ends; ``graph_edits``: their graph renames, signatures, digests;
* ``onnx_file``: the ONNX file's clean-up, saving and checking, and the staged output directory;
* ``validate``, ``fp16``, ``quantize``, ``tokenizer_files``.

The export's format (IO spec, ``onnxport.json``, file names, the rotary op) is ``onnxport.artifact``, below
both the exporters and the runtime. This module only re-exports, so every ``from onnxport.exporters import X``
of the public names keeps working; the moved modules' old names (``from onnxport.exporters import io_spec,
rotary_op, artifact``) name the moved module objects themselves, so a patch through either name is seen by both.
"""

import importlib as _importlib
import sys as _sys

from ..artifact import io_spec
from ..artifact.files import TOKENIZER_FILES, export_file_names
from ..artifact.spec_file import SPEC_FILE
from ..errors import ExportError, FrameworkNotInstalledError
from .front_end import (
    FRONT_ENDS,
    RANDOM_INIT_SEED,
    Converted,
    ExportJob,
    FrontEnd,
    front_end as _front_end,  # noqa: F401  (demo.py's name for it)
    random_weights_or_refuse,
)
from .pipeline import (
    DEFAULT_OPSET,
    ExportReport,
    _task_from_architectures,  # noqa: F401  (parity.py's)
    export,
    load_spec,
)

# Modules that moved: old name -> where they live now. The IO spec is registered at once (it is cheap, and
# `from onnxport.exporters.io_spec import X` must work); the two that import onnx on first use only.
_sys.modules[__name__ + ".io_spec"] = io_spec
_MOVED = {"rotary_op": "onnxport.artifact.rotary_op", "artifact": "onnxport.exporters.onnx_file"}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _importlib.import_module(_MOVED[name])
    _sys.modules[f"{__name__}.{name}"] = module
    globals()[name] = module
    return module


__all__ = ["DEFAULT_OPSET", "FRONT_ENDS", "RANDOM_INIT_SEED", "SPEC_FILE", "TOKENIZER_FILES", "Converted",
           "ExportError", "ExportJob", "ExportReport", "FrameworkNotInstalledError", "FrontEnd", "export",
           "export_file_names", "load_spec", "random_weights_or_refuse"]
