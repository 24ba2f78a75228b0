"""`onnxport demo`: the main job on built-in tiny models, end to end as far as it exists.

Builds a tiny random checkpoint per family, loads every head in each installed
framework from that one HF-format checkpoint, runs it on a padded batch and
prints one table with the largest difference of each framework to PyTorch.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tempfile
import time

import numpy as np

from .families import FAMILIES, HEADS

TINY_CONFIG = dict(
    vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=66, type_vocab_size=2,
)
FRAMEWORK_MODULES = {"pt": "torch", "tf": "tensorflow", "flax": "flax"}


def _available_frameworks() -> dict[str, str]:
    """framework -> "" if usable, else the reason it is skipped."""
    status = {}
    for framework, module in FRAMEWORK_MODULES.items():
        try:
            importlib.import_module(module)
            importlib.import_module(f"onnxport.reference_models.{framework}")
            status[framework] = ""
        except ImportError as err:
            status[framework] = f"not installed ({err.name}); pip install 'onnxport[{framework}]'"
    return status


def build_tiny_checkpoint(directory: str, model_type: str, head: str, seed: int = 0) -> str:
    import torch

    from .configs import AutoConfig
    from .reference_models.pt import model_class

    torch.manual_seed(seed)
    overrides = {"is_decoder": True} if head == "ForCausalLM" else {}
    config = AutoConfig.for_model(model_type, **TINY_CONFIG, **overrides)
    model = model_class(model_type, head)(config)
    path = os.path.join(directory, f"{model_type}-{head}")
    model.save_pretrained(path)
    return path


def _demo_inputs(model_type: str, head: str):
    rng = np.random.default_rng(0)
    pad = FAMILIES[model_type].config_class().pad_token_id
    ids = rng.integers(3, TINY_CONFIG["vocab_size"], size=(2, 7))
    mask = np.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = pad, 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if head == "ForMultipleChoice":
        feeds = {k: np.stack([v, v[::-1]], axis=1) for k, v in feeds.items()}
    return feeds


def _first_output(output):
    return np.asarray(output[0] if not hasattr(output, "logits") else output.logits)


class _NotProvided(Exception):
    pass


def _run(framework: str, model_type: str, head: str, path: str, feeds) -> np.ndarray:
    module = importlib.import_module(f"onnxport.reference_models.{framework}")
    name = {"pt": "", "tf": "TF", "flax": "Flax"}[framework] + FAMILIES[model_type].class_prefix + head
    if not hasattr(module, name):
        raise _NotProvided(f"onnxport.reference_models.{framework} has no {name} yet")
    cls = getattr(module, name)
    model = cls.from_pretrained(path)
    if framework == "pt":
        import torch

        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        return _first_output(out).astype(np.float32) if not hasattr(out, "last_hidden_state") else out.last_hidden_state.numpy()
    out = model(**feeds)
    value = out.last_hidden_state if hasattr(out, "last_hidden_state") and head == "Model" else _first_output(out)
    return np.asarray(value)


def main() -> int:
    status = _available_frameworks()
    if status["pt"]:
        print(f"The demo builds its tiny checkpoints with PyTorch, which is {status['pt']}.")
        return 1
    frameworks = list(FRAMEWORK_MODULES)
    header = f"{'family':22} {'head':28} {'output shape':16} " + " ".join(f"{fw + ' vs pt':>12}" for fw in frameworks[1:])
    print(header)
    print("-" * len(header))
    worst = 0.0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for model_type in FAMILIES:
            for head in HEADS:
                path = build_tiny_checkpoint(tmp, model_type, head)
                feeds = _demo_inputs(model_type, head)
                reference = _run("pt", model_type, head, path, feeds)
                cells = []
                for framework in frameworks[1:]:
                    if status[framework]:
                        cells.append(f"{'skipped':>12}")
                        continue
                    try:
                        diff = float(np.max(np.abs(_run(framework, model_type, head, path, feeds) - reference)))
                        worst = max(worst, diff)
                        cells.append(f"{diff:12.1e}")
                    except _NotProvided as err:
                        cells.append(f"{'n/a':>12}")
                        status[framework] = status[framework] or f"unavailable: {err}"
                print(f"{model_type:22} {head:28} {str(reference.shape):16} " + " ".join(cells))
    print(f"\n21 PyTorch classes ran; largest cross-framework difference {worst:.1e}; "
          f"{time.perf_counter() - start:.1f}s.")
    for framework, reason in status.items():
        if reason:
            print(f"{framework}: skipped — {reason}")
    return 0
