"""Activations by transformers' names (``config.hidden_act``), as TensorFlow functions.

Exact GELU is spelled with ``erf`` (not ``tf.nn.gelu``, which may lower to ``erfc``), because tf2onnx has no Erfc.
"""

import math

import tensorflow as tf

from ..activations import activation_table


def _gelu(x: tf.Tensor) -> tf.Tensor:
    return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))


ACT2FN = activation_table(
    gelu=_gelu,
    tanh=tf.tanh,
    sigmoid=tf.sigmoid,
    relu=tf.nn.relu,
    silu=lambda x: x * tf.sigmoid(x),
)
