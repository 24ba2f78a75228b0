"""transformers' activation names (``config.hidden_act``) -> functions, written once for the three frameworks.

Each framework passes its own primitives; the tanh-approximated GELUs are spelled here with
operators (``x ** 3.0`` is ``torch.pow`` / ``tf.pow`` / ``jnp.power``), so the formulas are one text.
"""

from __future__ import annotations

import math
from typing import Any, Callable

Activation = Callable[[Any], Any]


def activation_table(
    *,
    gelu: Activation,
    tanh: Activation,
    sigmoid: Activation,
    relu: Activation,
    silu: Activation,
    gelu_pytorch_tanh: Activation | None = None,
) -> dict[str, Activation]:
    """ACT2FN for one framework. ``gelu`` is the exact (erf) GELU; ``gelu_pytorch_tanh`` defaults to the
    tanh formula below (PyTorch passes its fused kernel, which transformers uses)."""

    def gelu_tanh(x):
        return 0.5 * x * (1.0 + tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3.0)))

    def gelu_fast(x):
        return 0.5 * x * (1.0 + tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))

    return {
        "gelu": gelu,
        "gelu_python": gelu,
        "gelu_new": gelu_tanh,
        "gelu_pytorch_tanh": gelu_pytorch_tanh or gelu_tanh,
        "gelu_fast": gelu_fast,
        "quick_gelu": lambda x: x * sigmoid(1.702 * x),
        "relu": relu,
        "silu": silu,
        "swish": silu,
        "tanh": tanh,
        "sigmoid": sigmoid,
        "linear": lambda x: x,
    }
