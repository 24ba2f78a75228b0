"""Activations by transformers' names (``config.hidden_act``)."""

import torch
from torch.nn import functional as F

from ..activations import activation_table

ACT2FN = activation_table(
    gelu=F.gelu,
    gelu_pytorch_tanh=lambda x: F.gelu(x, approximate="tanh"),
    tanh=torch.tanh,
    sigmoid=torch.sigmoid,
    relu=F.relu,
    silu=F.silu,
)
