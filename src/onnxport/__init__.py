"""onnxport: encoder transformers from PyTorch, TensorFlow or Flax to ONNX, served with ONNX Runtime."""

__version__ = "0.1.0"
