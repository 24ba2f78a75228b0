"""The export directory's format: the layer the runtime and the exporters share.

* ``io_spec``: what an exported graph takes and returns, per task, and each tensor's role;
* ``spec_file``: ``onnxport.json``, its one reader (``read_export_dir``) and structure check;
* ``layout``: where the graph sits (``onnx/model.onnx``, the Hub's layout transformers.js reads; older
  directories' top-level ``model.onnx``), config.json's ``transformers.js_config``, which clients a directory serves;
* ``files``: the export's file names (model, external data, tokenizer files) and which files an export owns;
* ``input_checks``: the input rules the reference models, validation and the runtime share;
* ``rotary_op``: the custom rotary op's schema, its function body and its lowering (imports ``onnx``).

It imports no deep-learning framework, no exporter and no runtime: the runtime reads exports through it, the
exporters write through it. This module imports nothing, so ``from onnxport.artifact import io_spec`` loads
only what it names.
"""
