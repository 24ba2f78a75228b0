"""Native implementations of the three families in PyTorch (``pt``), TensorFlow (``tf``) and Flax (``flax``).

Import the framework subpackage you need; this package imports no framework itself.
"""
