"""Tiny sentence-transformers models built and saved with sentence-transformers' own classes.

Shared by test_sentence_embeddings.py (real vocabularies, every module stack) and integration_exports.py (the
Triton / Ray / CLI exports: the suite's small tokenizer fixtures). Importing this needs sentence-transformers.
"""

from __future__ import annotations

import os
import shutil

from conftest import build_hf_checkpoint
from sentence_transformers import SentenceTransformer

try:  # sentence-transformers 5.7+ (6.x drops sentence_transformers.models)
    from sentence_transformers.sentence_transformer import modules as models
except ImportError:  # pragma: no cover
    from sentence_transformers import models

# multilingual-e5's stack: XLM-R, mean pooling, normalized, "query: " / "passage: " prompts
E5 = dict(family="xlm-roberta", pooling="mean", normalize=True, prompts={"query": "query: ", "passage": "passage: "},
          max_seq_length=24)


def build_st_model(path, tokenizer_dirs, family, pooling, dense=(), normalize=False, prompts=None,
                   default_prompt_name=None, similarity=None, max_seq_length=32, seed=0):
    """A sentence-transformers model saved by sentence-transformers: a tiny random encoder.

    ``tokenizer_dirs(family)`` gives (directory of transformers' tokenizer files, vocabulary size, pad id).
    Returns the model directory (``PATH/st``).
    """
    import torch

    vocab_dir, vocab_size, pad = tokenizer_dirs(family)
    hf = os.path.join(path, "hf")
    # RoBERTa-style positions start at pad + 1: room for 64 tokens after them
    positions = 66 + (pad if family != "roformer" else 0)
    build_hf_checkpoint(hf, family, "Model", seed, vocab_size=vocab_size, pad_token_id=pad,
                        max_position_embeddings=positions)
    for name in os.listdir(vocab_dir):
        shutil.copy(os.path.join(vocab_dir, name), hf)
    transformer = models.Transformer(hf, max_seq_length=max_seq_length)
    modules = [transformer, models.Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)]
    width = modules[1].get_embedding_dimension()
    torch.manual_seed(seed + 1)
    for out, activation in dense:
        layer = models.Dense(width, out, activation_function=getattr(torch.nn, activation)())
        with torch.no_grad():
            layer.linear.weight.normal_(0, 0.3)
            layer.linear.bias.normal_(0, 0.1)
        modules.append(layer)
        width = out
    if normalize:
        modules.append(models.Normalize())
    model = SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name=default_prompt_name,
                                similarity_fn_name=similarity, device="cpu")
    st_dir = os.path.join(path, "st")
    model.save(st_dir)
    shutil.rmtree(hf)
    return st_dir
