"""Export an HF-format checkpoint to an ONNX directory: ``export(checkpoint_dir, out_dir, framework, task)``.

The package's modules:

* ``pipeline``: ``export()`` and its stages, ``load_spec``, the export directory's file names;
* ``front_end``: the front-end contract (``ExportJob`` -> ``Converted``), ``FRONT_ENDS``, and the steps
  the three front ends share (loading the reference model, the export trace's options, the io-spec call);
* ``pt`` / ``tf`` / ``flax``: the front ends; ``graph_edits``: their graph renames, signatures, digests;
* ``io_spec``, ``artifact``, ``validate``, ``rotary_op``, ``fp16``, ``quantize``, ``tokenizer_files``.

This module only re-exports, so every ``from onnxport.exporters import X`` of the public names keeps working.
"""

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
    SPEC_FILE,
    ExportReport,
    _task_from_architectures,  # noqa: F401  (parity.py's)
    export,
    export_file_names,
    load_spec,
)
from .tokenizer_files import TOKENIZER_FILES

__all__ = ["DEFAULT_OPSET", "FRONT_ENDS", "RANDOM_INIT_SEED", "SPEC_FILE", "TOKENIZER_FILES", "Converted",
           "ExportError", "ExportJob", "ExportReport", "FrameworkNotInstalledError", "FrontEnd", "export",
           "export_file_names", "load_spec", "random_weights_or_refuse"]
