"""onnxport vs transformers 4.x tokenizers on real-size vocabularies (see real_vocab.py for where they come from).

GPT-2's byte-level BPE (50,257 tokens, no <s>/<pad>/<mask> in it) as RoBERTa, bert-base-chinese's WordPiece
(21,128) as RoFormer with jieba, and a 120k-piece multilingual SentencePiece unigram model as XLM-R; every
class slow and fast. Every field is compared: ids, attention mask, token types, special-tokens mask, offsets,
overflow rows, lengths, decode. Each test prints how many cases it compared (`pytest -s`).
"""

from __future__ import annotations

import json

import pytest

import onnxport.tokenizers as ours
import real_vocab

transformers = pytest.importorskip("transformers")

VOCABULARIES = {
    # name: (directory builder, class stem, mask token, cls, sep)
    "gpt2": (real_vocab.gpt2_directory, "RobertaTokenizer", "<mask>", "<s>", "</s>"),
    "bert-base-chinese": (real_vocab.bert_chinese_directory, "RoFormerTokenizer", "[MASK]", "[CLS]", "[SEP]"),
    "sentencepiece-multilingual": (real_vocab.sentencepiece_directory, "XLMRobertaTokenizer", "<mask>", "<s>", "</s>"),
}
VARIANTS = [(vocabulary, fast) for vocabulary in VOCABULARIES for fast in (False, True)]
VARIANT_IDS = [f"{vocabulary}-{'fast' if fast else 'slow'}" for vocabulary, fast in VARIANTS]

# transformers' own integration sentences for these tokenizers, then what users type.
INTEGRATION = [
    "Hello World!",
    "This is a very long text with a lot of weird characters, such as: . , ~ ? ( ) \" [ ] ! : - . Also we will"
    " add words that should not exsist and be tokenized to <unk>, such as saoneuhaoesuth",
    "I was born in 92000, and this is falsé.",
    "lower newer",
    "Hello world! cécé herlolip 418",
    "Encode this sequence.",
    "永和服装饰品有限公司,今天天气非常好",
    "今天天气非常好，我想去公园玩！",
]
TEXTS = INTEGRATION + [
    "生活的真谛是美和爱。机器学习和自然语言处理很有趣。",
    "中文和English混合的句子 also appear, 123 和 4.56%.",
    "Привет, мир! Как дела?", "Γειά σου κόσμε", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก",
    "안녕하세요 세계", "こんにちは世界、カタカナ", "Ünïcödé façade naïve Zoë Ångström",
    "e\u0301 a\u0300 o\u0308\u0304 combining marks",  # decomposed accents, stacked marks
    "family 👨\u200d👩\u200d👧\u200d👦 and 👍🏽 flags 🇫🇷 emoji 😀🎉",  # ZWJ sequences, modifiers
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom",
    "control\x00chars\x07bell\x1bescape\x7fdel",
    "tabs\tand\nnewlines\r\nand\u3000ideographic space\u00a0nbsp",
    "   leading, many     inner spaces, trailing   ",
    "", " ", "\n\n",
    "unseen 龘 𠀀 ꙮ characters and ᚠᛇᚻ runes",
    "It's 12345 or 3.14, isn't it? We'll see, they've done it.",
    "https://example.com/path?q=1&x=y email@example.org #hashtag @user",
    "x" * 150 + " " + "y" * 40,
]
LONG_TEXT = " ".join(TEXTS[:10])


def typed_special_texts(mask, cls, sep):
    """Special tokens written inside the text, with and without the spaces their flags eat."""
    return [f"The capital of France is {mask}.", f"{mask} at the start", f"at the end {mask}", f"two{mask}  {mask}x",
            f"{cls}typed{sep} {sep}{sep}pair", f"Paris is the {mask} of France.", f"今天{mask}很好，我想去公园玩！"]


@pytest.fixture(scope="module")
def directories():
    found = {}
    for name, (build, *_rest) in VOCABULARIES.items():
        try:
            found[name] = build()
        except real_vocab.VocabularyUnavailable as error:
            found[name] = error
    return found


@pytest.fixture(scope="module")
def pair_of(directories):
    cache = {}

    def get(vocabulary, fast):
        directory = directories[vocabulary]
        if isinstance(directory, Exception):
            pytest.skip(f"{vocabulary} vocabulary unavailable: {directory}")
        if (vocabulary, fast) not in cache:
            name = VOCABULARIES[vocabulary][1] + ("Fast" if fast else "")
            cache[vocabulary, fast] = (getattr(ours, name).from_pretrained(directory),
                                       getattr(transformers, name).from_pretrained(directory))
        return cache[vocabulary, fast]

    return get


def texts_for(vocabulary):
    _, _, mask, cls, sep = VOCABULARIES[vocabulary]
    return TEXTS + typed_special_texts(mask, cls, sep)


def plain(encoding):
    return {key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in dict(encoding).items()}


class Cases:
    """Counts compared cases; every comparison is one case."""

    def __init__(self, label):
        self.label, self.count, self.refused = label, 0, 0

    def same(self, mine, reference, what):
        mine, reference = plain(mine) if isinstance(mine, dict) else mine, \
            plain(reference) if isinstance(reference, dict) else reference
        if isinstance(reference, dict):
            assert sorted(mine) == sorted(reference), what
            for key in reference:
                assert mine[key] == reference[key], f"{what}: {key}"
        else:
            assert mine == reference, what
        self.count += 1

    def report(self, test):
        refused = f" ({self.refused} of them refused by both)" if self.refused else ""
        print(f"\n[{self.label}] {test}: {self.count} cases equal transformers{refused}")


@pytest.mark.parametrize("vocabulary,fast", VARIANTS, ids=VARIANT_IDS)
def test_attributes_and_special_tokens_not_in_the_vocabulary(pair_of, vocabulary, fast):
    mine, reference = pair_of(vocabulary, fast)
    cases = Cases(f"{vocabulary}-{'fast' if fast else 'slow'}")
    cases.same(len(mine), len(reference), "len")
    cases.same(mine.vocab_size, reference.vocab_size, "vocab_size")
    for name in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"):
        cases.same(getattr(mine, f"{name}_token_id"), getattr(reference, f"{name}_token_id"), name)
    cases.same(mine.added_tokens_encoder, reference.added_tokens_encoder, "added_tokens_encoder")
    theirs = {index: (token.content, token.special, token.lstrip, token.rstrip, token.single_word)
              for index, token in reference.added_tokens_decoder.items()}
    cases.same({index: (spec.content, spec.special, spec.lstrip, spec.rstrip, spec.single_word)
                for index, spec in mine.added_tokens_decoder.items()}, theirs, "added_tokens_decoder flags")
    cases.same(sorted(mine.all_special_ids), sorted(reference.all_special_ids), "all_special_ids")
    cases.same(mine.get_vocab(), reference.get_vocab(), "get_vocab")
    assert mine.is_fast is fast
    if vocabulary == "gpt2":  # transformers appends the missing special tokens after GPT-2's 50,257
        assert (len(mine), mine.bos_token_id, mine.eos_token_id, mine.mask_token_id) == (50262, 50257, 50258, 50261)
    cases.report("attributes")


@pytest.mark.parametrize("vocabulary,fast", VARIANTS, ids=VARIANT_IDS)
def test_texts_every_field_and_decode(pair_of, vocabulary, fast):
    mine, reference = pair_of(vocabulary, fast)
    cases = Cases(f"{vocabulary}-{'fast' if fast else 'slow'}")
    options = dict(return_special_tokens_mask=True, return_token_type_ids=True, return_length=True,
                   return_offsets_mapping=fast)
    for text in texts_for(vocabulary):
        tokens = reference.tokenize(text)
        cases.same(mine.tokenize(text), tokens, f"tokenize {text!r}")
        cases.same(mine(text, **options), reference(text, **options), f"call {text!r}")
        bare = dict(options, return_token_type_ids=None)  # transformers' slow classes refuse types without specials
        cases.same(mine(text, add_special_tokens=False, **bare), reference(text, add_special_tokens=False, **bare),
                   f"no specials {text!r}")
        cases.same(mine.convert_tokens_to_string(tokens), reference.convert_tokens_to_string(tokens),
                   f"convert_tokens_to_string {text!r}")
        ids = reference(text)["input_ids"]
        cases.same(mine.get_special_tokens_mask(ids, already_has_special_tokens=True),
                   reference.get_special_tokens_mask(ids, already_has_special_tokens=True), "special mask")
        for skip in (False, True):
            for clean in (False, True):
                cases.same(mine.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean),
                           reference.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean),
                           f"decode skip={skip} clean={clean} {text!r}")
    cases.report("texts")


@pytest.mark.parametrize("vocabulary,fast", VARIANTS, ids=VARIANT_IDS)
def test_batches_padding_truncation_overflow(pair_of, vocabulary, fast):
    mine, reference = pair_of(vocabulary, fast)
    cases = Cases(f"{vocabulary}-{'fast' if fast else 'slow'}")
    texts = texts_for(vocabulary)
    common = dict(return_special_tokens_mask=True, return_token_type_ids=True, return_length=True,
                  return_offsets_mapping=fast)
    for side in ("right", "left"):
        for options in [dict(padding=True), dict(padding="max_length", max_length=64, truncation=True),
                        dict(padding=True, pad_to_multiple_of=8), dict(padding=True, truncation=True, max_length=16,
                                                                      pad_to_multiple_of=8)]:
            cases.same(mine(texts, padding_side=side, **options, **common),
                       reference(texts, padding_side=side, **options, **common), f"batch {side} {options}")
    for truncation_side in ("right", "left"):
        mine.truncation_side = reference.truncation_side = truncation_side
        try:
            for text in texts:
                for max_length, stride in ((8, 0), (12, 3), (20, 5)):
                    options = dict(truncation=True, max_length=max_length, stride=stride,
                                   return_overflowing_tokens=True, **common)
                    cases.same(mine(text, **options), reference(text, **options),
                               f"overflow {truncation_side} {max_length}/{stride} {text!r}")
        finally:
            mine.truncation_side = reference.truncation_side = "right"
    cases.report("batches")


@pytest.mark.parametrize("vocabulary,fast", VARIANTS, ids=VARIANT_IDS)
def test_pairs_every_truncation_strategy(pair_of, vocabulary, fast):
    mine, reference = pair_of(vocabulary, fast)
    cases = Cases(f"{vocabulary}-{'fast' if fast else 'slow'}")
    texts = texts_for(vocabulary)
    pairs = [(texts[i], texts[-1 - i]) for i in range(len(texts) // 2)] + [(LONG_TEXT, "short"), ("short", LONG_TEXT)]
    common = dict(return_special_tokens_mask=True, return_token_type_ids=True, return_offsets_mapping=fast)
    cases.same(mine(pairs, padding=True, **common), reference(pairs, padding=True, **common), "pairs padded")
    for first, second in pairs:
        for strategy in ("longest_first", "only_first", "only_second", "do_not_truncate"):
            for max_length, stride in ((16, 0), (24, 2), (40, 4)):
                for overflow in (False, True):
                    options = dict(truncation=strategy, max_length=max_length, stride=stride,
                                   return_overflowing_tokens=overflow, **common)
                    try:
                        expected = reference(first, second, **options)
                    except (Exception, BaseException) as error:  # pyo3 panics are BaseExceptions
                        if isinstance(error, KeyboardInterrupt):
                            raise
                        # transformers refuses this combination (stride too large for what is left, a pair
                        # with longest_first and overflow, ...): ours refuses it with a ValueError.
                        with pytest.raises(ValueError):
                            mine(first, second, **options)
                        cases.count += 1
                        cases.refused += 1
                        continue
                    cases.same(mine(first, second, **options), expected,
                               f"pair {strategy} {max_length}/{stride} overflow={overflow} {(first, second)!r}")
    cases.report("pairs")


@pytest.mark.parametrize("vocabulary,fast", VARIANTS, ids=VARIANT_IDS)
def test_directories_saved_by_transformers_keep_added_token_flags(pair_of, directories, vocabulary, fast, tmp_path):
    """tokenizer_config.json's added_tokens_decoder (and tokenizer.json's added_tokens) carry the flags:
    tokens added with rstrip / single_word / lstrip / normalized must tokenize as transformers does."""
    from tokenizers import AddedToken

    pair_of(vocabulary, fast)  # skips when the vocabulary is unavailable
    name = VOCABULARIES[vocabulary][1] + ("Fast" if fast else "")
    reference = getattr(transformers, name).from_pretrained(directories[vocabulary])
    reference.add_tokens([AddedToken("<eat-right>", rstrip=True, special=False, normalized=False),
                          AddedToken("whole", single_word=True, special=False, normalized=False),
                          AddedToken("<eat-left>", lstrip=True, special=False, normalized=False)])
    reference.add_tokens([AddedToken("<sep2>", special=True, normalized=False)], special_tokens=True)
    reference.save_pretrained(tmp_path)
    if fast and vocabulary == "bert-base-chinese":  # transformers saves BertPreTokenizer; restore jieba
        reference = getattr(transformers, name).from_pretrained(tmp_path)
    mine = getattr(ours, name).from_pretrained(tmp_path)
    cases = Cases(f"{vocabulary}-{'fast' if fast else 'slow'}")
    _, _, mask, _, _ = VOCABULARIES[vocabulary]
    texts = ["a <eat-right>   b", "a   <eat-left> b", "wholesome whole whole! awhole", "x <sep2> y",
             f"is {mask}  . <eat-right>{mask}", "<eat-left><eat-right>", "今天<eat-right> 天气 whole"]
    options = dict(return_special_tokens_mask=True, return_offsets_mapping=fast)
    cases.same(len(mine), len(reference), "len with added tokens")
    for text in texts:
        cases.same(mine.tokenize(text), reference.tokenize(text), f"tokenize {text!r}")
        cases.same(mine(text, **options), reference(text, **options), f"call {text!r}")
        ids = reference(text)["input_ids"]
        for skip in (False, True):
            cases.same(mine.decode(ids, skip_special_tokens=skip), reference.decode(ids, skip_special_tokens=skip),
                       f"decode {text!r}")
    cases.report("saved by transformers")


@pytest.mark.parametrize("fast", [False, True], ids=["slow", "fast"])
def test_add_prefix_space_over_a_saved_tokenizer(pair_of, fast, tmp_path):
    """RoBERTa with add_prefix_space=True given to from_pretrained over files saved without it."""
    mine, reference = pair_of("gpt2", fast)
    name = "RobertaTokenizer" + ("Fast" if fast else "")
    reference.save_pretrained(tmp_path)
    mine = getattr(ours, name).from_pretrained(tmp_path, add_prefix_space=True)
    reference = getattr(transformers, name).from_pretrained(tmp_path, add_prefix_space=True)
    texts = texts_for("gpt2")
    options = dict(return_offsets_mapping=fast, padding=True, return_special_tokens_mask=True)
    assert mine(texts, **options) == reference(texts, **options)
    assert mine("Hello")["input_ids"][1] == reference.convert_tokens_to_ids("ĠHello")


def test_added_tokens_api(pair_of, directories, tmp_path):
    """add_tokens / add_special_tokens give the ids transformers gives, slow and fast, and survive a save."""
    pair_of("sentencepiece-multilingual", False)  # skips when the vocabulary is unavailable
    for fast in (False, True):
        name = "XLMRobertaTokenizer" + ("Fast" if fast else "")
        mine = getattr(ours, name).from_pretrained(directories["sentencepiece-multilingual"])
        reference = getattr(transformers, name).from_pretrained(directories["sentencepiece-multilingual"])
        assert mine.add_tokens(["newword", "▁Hello"]) == reference.add_tokens(["newword", "▁Hello"])
        assert mine.add_tokens(["anotherword"]) == reference.add_tokens(["anotherword"]) == 1
        assert mine.add_special_tokens({"cls_token": "<cls2>"}) == reference.add_special_tokens({"cls_token": "<cls2>"})
        assert len(mine) == len(reference) and mine.cls_token_id == reference.cls_token_id
        text = "newword anotherword <cls2> Hello"
        assert mine(text)["input_ids"] == reference(text)["input_ids"]
        assert mine.decode(mine(text)["input_ids"]) == reference.decode(reference(text)["input_ids"])
        mine.save_pretrained(tmp_path / name)
        reloaded = getattr(transformers, name).from_pretrained(tmp_path / name)
        assert reloaded(text)["input_ids"] == reference(text)["input_ids"]
        extra = {"additional_special_tokens": ["<x>", "<y>"]}
        assert mine.add_special_tokens(extra) == reference.add_special_tokens(extra)
        assert mine.all_special_ids == reference.all_special_ids
        ids = reference("a <x> b <y>")["input_ids"]
        assert mine("a <x> b <y>")["input_ids"] == ids
        assert mine.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)
        with pytest.raises(NotImplementedError, match="add_tokens"):
            mine.add_special_tokens({"sep2_token": "<x>"})


def test_batch_encoding_alignment_views(pair_of):
    mine, reference = pair_of("gpt2", True)
    texts = ["Hello world! cécé herlolip", "今天天气"]
    pairs = ["Encode this sequence.", "x"]
    ours_encoding, theirs = mine(texts, pairs), reference(texts, pairs)
    for batch_index in range(2):
        assert ours_encoding.sequence_ids(batch_index) == theirs.sequence_ids(batch_index)
        assert ours_encoding.word_ids(batch_index) == theirs.word_ids(batch_index)
        assert ours_encoding.tokens(batch_index) == theirs.tokens(batch_index)
        for token_index in range(len(theirs["input_ids"][batch_index])):
            assert ours_encoding.token_to_chars(batch_index, token_index) == (
                None if theirs.token_to_chars(batch_index, token_index) is None
                else tuple(theirs.token_to_chars(batch_index, token_index)))
        for char_index in range(len(texts[batch_index])):
            assert ours_encoding.char_to_token(batch_index, char_index) == theirs.char_to_token(batch_index, char_index)
    slow, _ = pair_of("gpt2", False)
    with pytest.raises(NotImplementedError, match="Fast"):
        slow("x").word_ids()
    assert json.loads(json.dumps(dict(ours_encoding))) == json.loads(json.dumps(dict(theirs)))


@pytest.mark.parametrize("vocabulary,fast", VARIANTS, ids=VARIANT_IDS)
def test_split_into_words(directories, pair_of, vocabulary, fast):
    pair_of(vocabulary, fast)  # skips when the vocabulary is unavailable
    name = VOCABULARIES[vocabulary][1] + ("Fast" if fast else "")
    options = dict(add_prefix_space=True) if vocabulary == "gpt2" else {}
    mine = getattr(ours, name).from_pretrained(directories[vocabulary], **options)
    reference = getattr(transformers, name).from_pretrained(directories[vocabulary], **options)
    cases = Cases(f"{vocabulary}-{'fast' if fast else 'slow'}")
    words = [["Hello", "world!", "cécé"], ["今天", "天气", "非常好"], ["I", "was", "born", "in", "92000"], [""]]
    common = dict(is_split_into_words=True, return_special_tokens_mask=True, return_offsets_mapping=fast)
    for sentence in words:
        cases.same(mine(sentence, **common), reference(sentence, **common), f"words {sentence}")
    cases.same(mine(words, padding=True, **common), reference(words, padding=True, **common), "batch of words")
    cases.same(mine(words[:2], words[2:], truncation="only_second", max_length=24, padding=True, **common),
               reference(words[:2], words[2:], truncation="only_second", max_length=24, padding=True, **common),
               "pairs of words")
    if fast:
        encoding, expected = mine(words, **common), reference(words, **common)
        cases.same([encoding.word_ids(i) for i in range(len(words))],
                   [expected.word_ids(i) for i in range(len(words))], "word_ids")
    cases.report("split into words")
    if vocabulary == "gpt2" and fast:
        with pytest.raises(ValueError, match="add_prefix_space=True"):
            getattr(ours, name).from_pretrained(directories[vocabulary])(words[0], is_split_into_words=True)


@pytest.mark.parametrize("vocabulary,fast", VARIANTS, ids=VARIANT_IDS)
def test_data_collator_and_tokenizer_json_alone(directories, pair_of, vocabulary, fast, tmp_path):
    """transformers' DataCollatorWithPadding handed our tokenizer pads as with its own; a directory holding
    only a tokenizer.json (written by transformers) loads into the fast class."""
    mine, reference = pair_of(vocabulary, fast)
    texts = texts_for(vocabulary)[:12]
    features = [dict(row, labels=index) for index, row in enumerate(
        {key: values[i] for key, values in reference(texts).items()} for i in range(len(texts)))]
    for options in (dict(), dict(pad_to_multiple_of=8), dict(padding="max_length", max_length=80)):
        theirs = transformers.DataCollatorWithPadding(reference, return_tensors="np", **options)(features)
        ours_batch = transformers.DataCollatorWithPadding(mine, return_tensors="np", **options)(features)
        assert {key: value.tolist() for key, value in ours_batch.items()} == \
            {key: value.tolist() for key, value in theirs.items()}, options
    single = {key: values for key, values in reference(texts[0]).items()}
    assert dict(mine.pad(single, padding="max_length", max_length=40)) == \
        dict(reference.pad(single, padding="max_length", max_length=40))
    if fast:
        reference.save_pretrained(tmp_path / "saved")
        (tmp_path / "alone").mkdir()
        (tmp_path / "alone" / "tokenizer.json").write_bytes((tmp_path / "saved" / "tokenizer.json").read_bytes())
        alone = type(mine).from_pretrained(tmp_path / "alone")
        if vocabulary != "bert-base-chinese":  # RoFormer's jieba is not in tokenizer.json (BertPreTokenizer there)
            assert alone(texts, padding=True)["input_ids"] == reference(texts, padding=True)["input_ids"]
        assert len(alone) == len(reference)
