"""XLM-RoBERTa: a sentencepiece model with fairseq's id layout.

fairseq reserved ids 0-3 for `<s> <pad> </s> <unk>` and then appended the
sentencepiece pieces, so sentencepiece id i becomes i + 1 (its own
`<unk> <s> </s>` at 0-2 are shadowed by the reserved ids); `<mask>` comes last.
"""

from __future__ import annotations

import struct
from pathlib import Path

from .base import TokenizerBase, copy_files_into
from .fast import FastTokenizerBase
from .slow import SlowTokenizerBase

FAIRSEQ_RESERVED = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
FAIRSEQ_OFFSET = 1
SPIECE_UNDERLINE = "\u2581"


def _protobuf_fields(buffer: bytes):
    """Yield (field number, value) of one protobuf message: just enough to read a sentencepiece model
    without depending on the protobuf package."""
    position = 0

    def varint():
        nonlocal position
        result = shift = 0
        while True:
            byte = buffer[position]
            position += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    while position < len(buffer):
        key = varint()
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            yield field, varint()
        elif wire_type == 1:
            yield field, buffer[position:position + 8]
            position += 8
        elif wire_type == 2:
            length = varint()
            yield field, buffer[position:position + length]
            position += length
        elif wire_type == 5:
            yield field, buffer[position:position + 4]
            position += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if position > len(buffer):
            raise ValueError("truncated protobuf message")


def read_sentencepiece_model(path: str) -> dict:
    """pieces [(piece, score, type)], model_type (1 unigram, 2 bpe), precompiled_charsmap from a .model file."""
    try:
        buffer = Path(path).read_bytes()
        model = {"pieces": [], "model_type": 1, "precompiled_charsmap": b""}
        for field, value in _protobuf_fields(buffer):
            if field == 1:  # ModelProto.pieces
                piece = {"piece": "", "score": 0.0, "type": 1}
                for sub_field, sub_value in _protobuf_fields(value):
                    if sub_field == 1:
                        piece["piece"] = sub_value.decode("utf-8")
                    elif sub_field == 2:
                        piece["score"] = struct.unpack("<f", sub_value)[0]
                    elif sub_field == 3:
                        piece["type"] = sub_value
                model["pieces"].append((piece["piece"], piece["score"], piece["type"]))
            elif field == 2:  # TrainerSpec
                model["model_type"] = dict(_protobuf_fields(value)).get(3, 1)
            elif field == 3:  # NormalizerSpec
                model["precompiled_charsmap"] = dict(_protobuf_fields(value)).get(2, b"")
    except (IndexError, ValueError, UnicodeDecodeError, struct.error) as error:
        raise OSError(f"{path} is not a valid sentencepiece model ({error}); re-download or re-train it") from error
    if not model["pieces"]:
        raise OSError(f"{path} holds no sentencepiece pieces; is it really a sentencepiece .model file?")
    return model


class XLMRobertaFamily(TokenizerBase):
    vocab_files = {"vocab_file": "sentencepiece.bpe.model"}
    default_special_tokens = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                              "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
    separators_between_pair = 2
    transformers_class_name = "XLMRobertaTokenizer"


class XLMRobertaTokenizer(XLMRobertaFamily, SlowTokenizerBase):
    """sentencepiece itself segments; this class only shifts ids into fairseq's layout."""

    def __init__(self, vocab_file: str, **kwargs):
        super().__init__(**kwargs)
        import sentencepiece

        self.vocab_file = vocab_file
        self.sp_model = sentencepiece.SentencePieceProcessor()
        try:
            self.sp_model.Load(str(vocab_file))
        except (OSError, RuntimeError) as error:
            raise OSError(
                f"{vocab_file} is not a valid sentencepiece model ({error}); re-download or re-train it"
            ) from error
        self.mask_id = len(self.sp_model) + FAIRSEQ_OFFSET

    @property
    def vocab_size(self) -> int:
        return len(self.sp_model) + FAIRSEQ_OFFSET + 1  # + <mask>

    def _base_vocab(self):
        return {self._vocab_token(i): i for i in range(self.vocab_size)}

    def _tokenize(self, text):
        return self.sp_model.encode(text, out_type=str)

    def _vocab_id(self, token):
        if token in FAIRSEQ_RESERVED:
            return FAIRSEQ_RESERVED[token]
        if token == "<mask>":
            return self.mask_id
        piece_id = self.sp_model.PieceToId(token)
        # sentencepiece answers 0 (its <unk>) for unknown pieces.
        return piece_id + FAIRSEQ_OFFSET if piece_id else None

    def _vocab_token(self, index):
        for token, reserved in FAIRSEQ_RESERVED.items():
            if index == reserved:
                return token
        if index == self.mask_id:
            return "<mask>"
        if 0 <= index - FAIRSEQ_OFFSET < len(self.sp_model):
            return self.sp_model.IdToPiece(index - FAIRSEQ_OFFSET)
        return None

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens).replace(SPIECE_UNDERLINE, " ").strip()

    def _save_vocabulary(self, directory: Path):
        return copy_files_into(directory, self.vocab_file)


class XLMRobertaTokenizerFast(XLMRobertaFamily, FastTokenizerBase):
    """Unigram model in the `tokenizers` library built from the same .model file (or a tokenizer.json)."""

    def _build_backend(self, vocab_file):
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

        spm = read_sentencepiece_model(vocab_file)
        if spm["model_type"] != 1:
            raise ValueError(
                f"{vocab_file} is a sentencepiece model of type {spm['model_type']}; XLM-R's fast tokenizer is built "
                "from unigram models only. Use XLMRobertaTokenizer (slow) or supply a tokenizer.json"
            )
        vocab = [(token, 0.0) for token in FAIRSEQ_RESERVED]
        vocab += [(piece, score) for piece, score, _ in spm["pieces"][3:]]  # the first 3 are shadowed
        vocab.append((self.mask_token, 0.0))
        backend = Tokenizer(models.Unigram(vocab, unk_id=FAIRSEQ_RESERVED["<unk>"], byte_fallback=False))
        # sentencepiece's own normalization, then its whitespace handling: no trailing spaces, runs collapse to one.
        steps = [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), SPIECE_UNDERLINE)]
        if spm["precompiled_charsmap"]:
            steps.insert(0, normalizers.Precompiled(spm["precompiled_charsmap"]))
        backend.normalizer = normalizers.Sequence(steps)
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always")
        backend.decoder = decoders.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always")
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", FAIRSEQ_RESERVED["<s>"]), ("</s>", FAIRSEQ_RESERVED["</s>"])],
        )
        user_defined = [piece for piece, _, piece_type in spm["pieces"] if piece_type == 4]
        backend.add_tokens([AddedToken(piece, normalized=False, special=False) for piece in user_defined])
        return backend

    def _save_slow_vocabulary(self, directory):
        vocab_file = self.vocab_file_paths.get("vocab_file")
        return copy_files_into(directory, vocab_file) if vocab_file else []
