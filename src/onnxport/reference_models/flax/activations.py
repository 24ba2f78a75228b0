"""Activations by transformers' names (``config.hidden_act``), matching the PyTorch definitions."""

import jax
import jax.numpy as jnp

from ..activations import activation_table

ACT2FN = activation_table(
    gelu=lambda x: jax.nn.gelu(x, approximate=False),  # exact (erf) GELU, as torch.nn.functional.gelu
    tanh=jnp.tanh,
    sigmoid=jax.nn.sigmoid,
    relu=jax.nn.relu,
    silu=jax.nn.silu,
)
