"""What makes each family different, as data.

Every framework implementation, the exporters and the runtime read these
records instead of branching on family names. Everything RoFormer-specific (or
PreLayerNorm-specific) is visible here in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from .configs import EncoderConfig, RobertaConfig, RobertaPreLayerNormConfig, RoFormerConfig, XLMRobertaConfig
from .errors import ConfigError

NormPlacement = Literal["post", "pre"]
PositionScheme = Literal["learned", "rotary"]
LmHeadLayout = Literal["roberta", "bert"]
ClassifierActivation = Literal["tanh", "hidden_act"]
MultipleChoiceSummary = Literal["pooler", "last"]


@dataclass(frozen=True)
class Family:
    """One family's facts. The architecture fields default to RoBERTa's, so each record below states only
    its names and how it differs from RoBERTa (the design's table)."""

    # config.json's model_type.
    model_type: str
    config_class: type[EncoderConfig]
    # Class names: f"{class_prefix}{head}" (PyTorch), f"TF{...}", f"Flax{...}".
    class_prefix: str
    # Attribute holding the base model inside head models; the prefix of HF parameter names.
    base_model_prefix: str
    # transformers' tokenizer class for the family's vocabulary files (AutoTokenizer's fallback), and the
    # vocabulary files a checkpoint needs for it (a tokenizer.json serves the fast class as well).
    tokenizer_class: str
    tokenizer_files: tuple[str, ...]
    # "post": LayerNorm(x + sublayer(x)) as in BERT/RoBERTa.
    # "pre":  x + sublayer(LayerNorm(x)), plus one final LayerNorm after the last layer.
    norm_placement: NormPlacement = "post"
    # "learned": a position table indexed from pad_token_id + 1 (RoBERTa), plus the
    #            config's position_embedding_type (absolute / relative_key / relative_key_query).
    # "rotary":  sinusoidal rotary embedding applied to queries and keys (and values when rotary_value).
    position_scheme: PositionScheme = "learned"
    # Whether the base model has a pooler (dense + tanh over the first token).
    has_pooler: bool = True
    # "roberta": lm_head.{dense, layer_norm, decoder, bias}, GELU transform.
    # "bert":    cls.predictions.{transform.dense, transform.LayerNorm, decoder, bias}, hidden_act transform.
    lm_head_layout: LmHeadLayout = "roberta"
    # Activation between the two classifier layers: "tanh" (RoBERTa) or the config's hidden_act (RoFormer).
    classifier_activation: ClassifierActivation = "tanh"
    # Whether the classifier heads honour config.classifier_dropout (RoBERTa) or always use hidden_dropout_prob.
    classifier_dropout_from_config: bool = True
    # Multiple choice reduces each choice to one vector: "pooler" output (RoBERTa) or the "last" token (RoFormer).
    multiple_choice_summary: MultipleChoiceSummary = "pooler"
    # Whether the tokenizer emits token_type_ids (then the ONNX graph always takes them, Optimum's convention;
    # otherwise the graph takes them when type_vocab_size > 1: io_spec.takes_token_type_ids).
    uses_token_type_ids: bool = False
    # Arguments that transformers' TF classes of the family do not take at all; onnxport's TF classes take
    # them as keywords (after ``training``) so every option of the PyTorch classes works, while positional
    # calls keep transformers' TF order.
    not_in_transformers_tf: frozenset[str] = field(default=frozenset())

    @property
    def rotary(self) -> bool:
        return self.position_scheme == "rotary"

    @property
    def pre_norm(self) -> bool:
        return self.norm_placement == "pre"

    @property
    def lm_head_prefix(self) -> str:
        return "lm_head" if self.lm_head_layout == "roberta" else "cls.predictions"

    @property
    def lm_decoder_weight_key(self) -> str:
        return f"{self.lm_head_prefix}.decoder.weight"


# Each record: its names (model_type, config class, class prefix, parameter prefix), its tokenizer, then how
# its architecture differs from RoBERTa's (the defaults above).

# XLM-R is RoBERTa's architecture with a SentencePiece vocabulary.
XLM_ROBERTA = Family(
    model_type="xlm-roberta", config_class=XLMRobertaConfig, class_prefix="XLMRoberta", base_model_prefix="roberta",
    tokenizer_class="XLMRobertaTokenizer", tokenizer_files=("sentencepiece.bpe.model",),
)

# RoBERTa is XLM-R's architecture exactly; only the names and the (byte-level BPE) tokenizer differ.
ROBERTA = replace(
    XLM_ROBERTA,
    model_type="roberta", config_class=RobertaConfig, class_prefix="Roberta",
    tokenizer_class="RobertaTokenizer", tokenizer_files=("vocab.json", "merges.txt"),
)

# RoBERTa-PreLayerNorm is XLM-R with the LayerNorm moved before each sub-layer (plus a final one), and
# RoBERTa's tokenizer.
ROBERTA_PRELAYERNORM = replace(
    XLM_ROBERTA,
    model_type="roberta-prelayernorm", config_class=RobertaPreLayerNormConfig, class_prefix="RobertaPreLayerNorm",
    base_model_prefix="roberta_prelayernorm",
    tokenizer_class=ROBERTA.tokenizer_class, tokenizer_files=ROBERTA.tokenizer_files,
    norm_placement="pre",
)

# RoFormer differs from RoBERTa in positions (rotary), heads (BERT's LM head, hidden_act classifiers, no
# pooler) and its tokenizer (token types always).
ROFORMER = Family(
    model_type="roformer", config_class=RoFormerConfig, class_prefix="RoFormer", base_model_prefix="roformer",
    tokenizer_class="RoFormerTokenizer", tokenizer_files=("vocab.txt",),
    position_scheme="rotary",
    has_pooler=False,
    lm_head_layout="bert",
    classifier_activation="hidden_act",
    classifier_dropout_from_config=False,
    multiple_choice_summary="last",
    uses_token_type_ids=True,
    not_in_transformers_tf=frozenset(
        {"position_ids", "encoder_hidden_states", "encoder_attention_mask", "past_key_values", "use_cache"}
    ),
)

FAMILIES: dict[str, Family] = {f.model_type: f for f in (XLM_ROBERTA, ROBERTA, ROBERTA_PRELAYERNORM, ROFORMER)}

# Head name suffixes, in the order transformers lists them.
HEADS = (
    "Model",
    "ForCausalLM",
    "ForMaskedLM",
    "ForSequenceClassification",
    "ForMultipleChoice",
    "ForTokenClassification",
    "ForQuestionAnswering",
)


def family_of(config: EncoderConfig) -> Family:
    try:
        return FAMILIES[config.model_type]
    except KeyError:
        raise ConfigError(f"No model family for model_type {config.model_type!r}; expected one of {sorted(FAMILIES)}.") from None
