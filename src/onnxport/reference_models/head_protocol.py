"""How a PyTorch or TensorFlow task head is written: its argument list as data, one method with the head's math.

transformers' heads spell the same long signature and the same encoder call seven times per framework.
Here the argument lists are data (``TORCH_ARGUMENTS``, ``tensorflow_arguments``; Flax reads
``extra_inputs``), a head names its ``head`` and writes ``_head(inputs, **targets)``, and ``HeadProtocol``
makes the public entry point (``forward`` / ``call``) from the list, with a real ``inspect.Signature`` so
positional calls, keyword calls and introspection behave as transformers' explicit signatures do, and
applies ``return_dict`` once.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, ClassVar

from ..configs import EncoderConfig
from .head_rules import finish

logger = logging.getLogger("onnxport")

# Argument groups, each in transformers' order.
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds")
CROSS_ATTENTION = ("encoder_hidden_states", "encoder_attention_mask")
CACHE = ("past_key_values", "use_cache")
OUTPUT_FLAGS = ("output_attentions", "output_hidden_states", "return_dict")
# What a head's loss reads; every head but QA and the bare model takes ``labels``.
TARGETS: dict[str, tuple[str, ...]] = {"Model": (), "ForQuestionAnswering": ("start_positions", "end_positions")}
# Inputs of shape (batch, num_choices, ...) that multiple choice folds into the batch.
CHOICE_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")

# Every head's arguments, in transformers' PyTorch order (``Model`` is the base model's forward).
TORCH_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "Model": ENCODER_INPUTS + CROSS_ATTENTION + CACHE + OUTPUT_FLAGS,
    "ForCausalLM": ENCODER_INPUTS + CROSS_ATTENTION + ("labels",) + CACHE + OUTPUT_FLAGS,
    "ForMaskedLM": ENCODER_INPUTS + CROSS_ATTENTION + ("labels",) + OUTPUT_FLAGS,
    "ForSequenceClassification": ENCODER_INPUTS + ("labels",) + OUTPUT_FLAGS,
    "ForMultipleChoice": ENCODER_INPUTS + ("labels",) + OUTPUT_FLAGS,
    "ForTokenClassification": ENCODER_INPUTS + ("labels",) + OUTPUT_FLAGS,
    "ForQuestionAnswering": ENCODER_INPUTS + ("start_positions", "end_positions") + OUTPUT_FLAGS,
}


def tensorflow_arguments(head: str) -> tuple[str, ...]:
    """transformers' TF order: the encoder inputs (and the decoder's), the output flags, the targets, ``training``.
    The MLM head's cross-attention inputs, which transformers' TF class lacks, come after ``training``."""
    decoder_inputs = CROSS_ATTENTION + CACHE if head == "ForCausalLM" else ()
    options = CROSS_ATTENTION if head == "ForMaskedLM" else ()
    return ENCODER_INPUTS + decoder_inputs + OUTPUT_FLAGS + targets_of(head) + ("training",) + options


def extra_inputs(head: str) -> frozenset[str]:
    """What a head takes besides the encoder inputs and output flags (cross-attention, cache, targets)."""
    return frozenset(TORCH_ARGUMENTS[head]) - frozenset(ENCODER_INPUTS + OUTPUT_FLAGS)


# Defaults other than None.
_DEFAULTS = {"training": False}


def targets_of(head: str) -> tuple[str, ...]:
    return TARGETS.get(head, ("labels",))


def signature_of(names: tuple[str, ...]) -> inspect.Signature:
    """``(self, name=None, ...)`` for ``names``: every argument positional-or-keyword, as in transformers."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter("self", kind)]
    parameters += [inspect.Parameter(name, kind, default=_DEFAULTS.get(name)) for name in names]
    return inspect.Signature(parameters)


def _entry_point(names: tuple[str, ...]) -> Callable:
    signature = signature_of(names)

    def entry_point(*args: Any, **kwargs: Any):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        return arguments.pop("self")._run_head(arguments)

    entry_point.__signature__ = signature  # type: ignore[attr-defined]
    return entry_point


def warn_about_decoder_setting(config: EncoderConfig, head: str, class_name: str) -> None:
    """transformers' warnings for an LM head whose ``is_decoder`` contradicts it (the model still runs)."""
    if head == "ForCausalLM" and not config.is_decoder:
        logger.warning("%s used as a standalone model: set is_decoder=True for causal attention.", class_name)
    elif head == "ForMaskedLM" and config.is_decoder:
        logger.warning("%s with is_decoder=True attends causally; set is_decoder=False for "
                       "bi-directional self-attention.", class_name)


class HeadProtocol:
    """Mixed into a framework's head base class. A head names its ``head`` and writes ``_head``."""

    head: ClassVar[str]
    config: EncoderConfig
    # The public method the entry point is installed as: "forward" (PyTorch) or "call" (TensorFlow).
    entry_point_name: ClassVar[str]
    @staticmethod
    def arguments_of(head: str) -> tuple[str, ...]:
        """A head's arguments in transformers' order for the framework."""
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "head" in cls.__dict__:
            setattr(cls, cls.entry_point_name, _entry_point(cls.arguments_of(cls.head)))

    def _run_head(self, arguments: dict[str, Any]):
        return_dict = arguments.pop("return_dict")
        targets = {name: arguments.pop(name) for name in targets_of(self.head)}
        return finish(self._head(arguments, **targets), return_dict, self.config)

    def _head(self, inputs: dict[str, Any], **targets: Any):
        """The head on the encoder ``inputs`` (every argument but the targets and ``return_dict``): an output."""
        raise NotImplementedError
