"""onnxport.tokenizers vs transformers' tokenizers on the same (tiny, trained in-test) vocabulary files."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import onnxport.tokenizers as ours
from tokenizer_fixtures import (
    CORPUS, MASK, MASK_TEXTS, TEXTS, write_roberta_files, write_roformer_files, write_xlm_roberta_files,
)

transformers = pytest.importorskip("transformers")

FAMILIES = {
    # family: (file writer, onnxport/transformers class stem, mask token)
    "xlm-roberta": (write_xlm_roberta_files, "XLMRobertaTokenizer", "<mask>"),
    "roberta-prelayernorm": (write_roberta_files, "RobertaTokenizer", "<mask>"),
    "roformer": (write_roformer_files, "RoFormerTokenizer", "[MASK]"),
}
VARIANTS = [(family, fast) for family in FAMILIES for fast in (False, True)]
VARIANT_IDS = [f"{family}-{'fast' if fast else 'slow'}" for family, fast in VARIANTS]
LONG_TEXT = " ".join(CORPUS)
PAIRS = [("Hello world!", "今天天气非常好。"), ("", "a   lot    of     spaces"), ("Café naïve", ""),
         (LONG_TEXT[:60], "short")]


@pytest.fixture(scope="session")
def vocab_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizer_vocabs")
    return {family: writer(root / family) for family, (writer, _, _) in FAMILIES.items()}


@pytest.fixture(scope="session")
def tokenizer_pair(vocab_dirs):
    """(onnxport tokenizer, transformers tokenizer) per (family, fast), loaded once."""
    cache = {}

    def get(family, fast):
        if (family, fast) not in cache:
            name = FAMILIES[family][1] + ("Fast" if fast else "")
            cache[family, fast] = (getattr(ours, name).from_pretrained(vocab_dirs[family]),
                                   getattr(transformers, name).from_pretrained(vocab_dirs[family]))
        return cache[family, fast]

    return get


def texts_for(family):
    mask = FAMILIES[family][2]
    cls, sep = ("[CLS]", "[SEP]") if family == "roformer" else ("<s>", "</s>")
    with_specials = [f"{cls} first {sep} second", f"{sep}{sep}x{mask}"]
    return TEXTS + [text.replace(MASK, mask) for text in MASK_TEXTS] + with_specials + [LONG_TEXT]


def plain(encoding):
    """BatchEncoding -> {key: nested lists} for exact comparison across implementations."""
    return {key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in dict(encoding).items()}


def assert_same(ours_encoding, theirs_encoding):
    mine, reference = plain(ours_encoding), plain(theirs_encoding)
    assert sorted(mine) == sorted(reference)
    for key in reference:
        assert mine[key] == reference[key], key


@pytest.mark.parametrize("family,fast", VARIANTS, ids=VARIANT_IDS)
def test_single_texts_match_transformers(tokenizer_pair, family, fast):
    mine, reference = tokenizer_pair(family, fast)
    options = dict(return_special_tokens_mask=True, return_token_type_ids=True, return_length=True,
                   return_offsets_mapping=fast)
    for text in texts_for(family):
        assert mine.tokenize(text) == reference.tokenize(text), text
        assert_same(mine(text, **options), reference(text, **options))
        assert plain(mine(text, add_special_tokens=False)) == plain(reference(text, add_special_tokens=False))
    # A real value, not just agreement: the mask token keeps its id inside text.
    ids = mine(f"x {FAMILIES[family][2]} y")["input_ids"]
    assert mine.mask_token_id in ids and ids[0] == mine.cls_token_id and ids[-1] == mine.sep_token_id


@pytest.mark.parametrize("family,fast", VARIANTS, ids=VARIANT_IDS)
def test_batches_padding_and_truncation_match(tokenizer_pair, family, fast):
    mine, reference = tokenizer_pair(family, fast)
    texts = texts_for(family)
    settings = [
        dict(padding=True),
        dict(padding="longest", padding_side="left", return_special_tokens_mask=True),
        dict(padding="max_length", max_length=24, truncation=True, return_token_type_ids=True),
        dict(padding=True, truncation="longest_first", max_length=10, pad_to_multiple_of=5),
        dict(max_length=7),  # max_length alone truncates, as in transformers
        dict(padding=False, truncation=True, max_length=12, return_attention_mask=False),
    ]
    for options in settings:
        assert_same(mine(texts, **options), reference(texts, **options))
    padded = mine(["a", LONG_TEXT], padding=True, truncation=True, max_length=16, return_tensors="np")
    assert padded["input_ids"].shape == (2, 16) and padded["input_ids"].dtype == np.int64
    assert padded.attention_mask[0].sum() < 16 and padded.attention_mask[1].sum() == 16
    assert padded.input_ids[0, -1] == mine.pad_token_id


@pytest.mark.parametrize("family,fast", VARIANTS, ids=VARIANT_IDS)
def test_pairs_match_transformers(tokenizer_pair, family, fast):
    mine, reference = tokenizer_pair(family, fast)
    firsts, seconds = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    for options in [dict(), dict(padding=True, return_token_type_ids=True, return_special_tokens_mask=True),
                    dict(truncation=True, max_length=14, padding="max_length")]:
        assert_same(mine(firsts, seconds, **options), reference(firsts, seconds, **options))
        assert_same(mine(list(PAIRS), **options), reference(list(PAIRS), **options))
        assert_same(mine(*PAIRS[0], **options), reference(*PAIRS[0], **options))
    # only_first / only_second: the other text is short enough to fit.
    long_and_short = [(LONG_TEXT[:200], "short"), ("Hello world!", "今天"), ("Hi", "")]
    short_and_long = [(b, a) for a, b in long_and_short]
    for strategy, batch in (("only_first", long_and_short), ("only_second", short_and_long)):
        for side in ("right", "left"):
            mine.truncation_side = reference.truncation_side = side
            try:
                options = dict(truncation=strategy, max_length=20, padding=True, return_special_tokens_mask=True)
                encoding = mine(batch, **options)
                assert_same(encoding, reference(batch, **options))
            finally:
                mine.truncation_side = reference.truncation_side = "right"
        assert len(encoding["input_ids"][0]) == 20
    encoding = mine("a", "b", return_token_type_ids=True, return_special_tokens_mask=True)
    separators = 2 if family != "roformer" else 1
    assert encoding["special_tokens_mask"].count(1) == 2 + separators
    assert encoding["token_type_ids"][-1] == (1 if family == "roformer" else 0)


@pytest.mark.parametrize("family,fast", VARIANTS, ids=VARIANT_IDS)
def test_overflow_windows_match(tokenizer_pair, family, fast):
    mine, reference = tokenizer_pair(family, fast)
    for options in [dict(truncation=True, max_length=12, stride=3, return_overflowing_tokens=True),
                    dict(truncation="only_second", max_length=16, stride=2, return_overflowing_tokens=True,
                         padding=True, return_offsets_mapping=fast)]:
        pair_inputs = (["Hi", "x"], [LONG_TEXT, LONG_TEXT[:80]])
        args = pair_inputs if options["truncation"] == "only_second" else ([LONG_TEXT, "short one"],)
        assert_same(mine(*args, **options), reference(*args, **options))
    encoding = mine(LONG_TEXT, truncation=True, max_length=12, stride=3, return_overflowing_tokens=True)
    if fast:  # windows as rows: consecutive windows share `stride` tokens
        rows = encoding["input_ids"]
        assert len(rows) > 2 and encoding["overflow_to_sample_mapping"] == [0] * len(rows)
        assert rows[0][-1 - 3:-1] == rows[1][1:1 + 3]
    else:  # transformers' Python tokenizers: the cut-off tail (+ stride) in `overflowing_tokens`
        full = mine(LONG_TEXT, add_special_tokens=False)["input_ids"]
        assert encoding["overflowing_tokens"] == full[10 - 3:]
        assert encoding["num_truncated_tokens"] == len(full) + 2 - 12


@pytest.mark.parametrize("family", FAMILIES)
def test_offsets_point_into_the_original_text(tokenizer_pair, family):
    mine, reference = tokenizer_pair(family, True)
    for text in texts_for(family):
        encoding = mine(text, return_offsets_mapping=True, add_special_tokens=False)
        assert encoding["offset_mapping"] == reference(text, return_offsets_mapping=True,
                                                         add_special_tokens=False)["offset_mapping"]
        assert all(0 <= start <= end <= len(text) for start, end in encoding["offset_mapping"])
    text = "今天天气非常好。"
    encoding = mine(text, return_offsets_mapping=True, add_special_tokens=False)
    spans = list(dict.fromkeys(encoding["offset_mapping"]))  # byte-level pieces of one character share its span
    pieces = [text[start:end] for start, end in spans]
    assert [start for start, _ in spans] == sorted(start for start, _ in spans)
    if family != "roberta-prelayernorm":  # byte-level BPE pieces may cover parts of a character
        assert "".join(pieces) == text
    if family == "roformer":  # jieba keeps 非常 whole (in vocab) and cuts 今天天气 (not in vocab) into characters
        assert pieces == ["今", "天", "天", "气", "非常", "好", "。"]


@pytest.mark.parametrize("family,fast", VARIANTS, ids=VARIANT_IDS)
def test_decode_matches(tokenizer_pair, family, fast):
    mine, reference = tokenizer_pair(family, fast)
    batch = mine(texts_for(family), padding=True)["input_ids"]
    for skip in (False, True):
        for clean in (None, True, False):
            options = dict(skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
            assert mine.batch_decode(batch, **options) == reference.batch_decode(batch, **options)
    assert mine.decode(np.array(batch[0])) == reference.decode(batch[0])
    assert mine.decode(mine.cls_token_id) == reference.decode(mine.cls_token_id)
    # RoFormer lowercases; its slow decoder joins WordPiece tokens with spaces, the Rust one also cleans up.
    expected = {"roformer": "hello world!" if fast else "hello world !"}.get(family, "Hello world!")
    assert mine.decode(mine("Hello world!")["input_ids"], skip_special_tokens=True) == expected


@pytest.mark.parametrize("family,fast", VARIANTS, ids=VARIANT_IDS)
def test_vocabulary_views_and_attributes(tokenizer_pair, family, fast):
    mine, reference = tokenizer_pair(family, fast)
    assert len(mine) == len(reference) and mine.vocab_size == reference.vocab_size
    assert mine.get_vocab() == reference.get_vocab()
    assert mine.model_max_length == reference.model_max_length
    for name in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        assert getattr(mine, name) == getattr(reference, name), name
        assert getattr(mine, name + "_id") == getattr(reference, name + "_id"), name
    assert mine.special_tokens_map == {k: str(v) for k, v in reference.special_tokens_map.items()}
    assert sorted(mine.all_special_ids) == sorted(reference.all_special_ids)
    tokens = mine.tokenize("Hello 北京 zqxj 龘")
    assert mine.convert_tokens_to_ids(tokens) == reference.convert_tokens_to_ids(tokens)
    assert mine.convert_tokens_to_ids("never-seen-token") == mine.unk_token_id
    ids = list(range(min(len(mine), 60)))
    assert mine.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
    assert mine.convert_ids_to_tokens(ids, skip_special_tokens=True) == \
        reference.convert_ids_to_tokens(ids, skip_special_tokens=True)
    if family == "xlm-roberta":  # fairseq layout
        assert [mine.bos_token_id, mine.pad_token_id, mine.eos_token_id, mine.unk_token_id] == [0, 1, 2, 3]
        assert mine.mask_token_id == len(mine) - 1


@pytest.mark.parametrize("family,fast", VARIANTS, ids=VARIANT_IDS)
def test_save_and_reload(tokenizer_pair, family, fast, tmp_path):
    mine, _ = tokenizer_pair(family, fast)
    mine.model_max_length = 16
    try:
        mine.save_pretrained(tmp_path)
    finally:
        mine.model_max_length = int(1e30)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == FAMILIES[family][1] and config["model_max_length"] == 16
    assert json.loads((tmp_path / "special_tokens_map.json").read_text())["cls_token"] == mine.cls_token
    texts = texts_for(family)
    expected = mine(texts, truncation=True, max_length=16)
    name = FAMILIES[family][1] + ("Fast" if fast else "")
    for cls in (getattr(ours, name), getattr(transformers, name), ours.AutoTokenizer):
        reloaded = cls.from_pretrained(tmp_path, **({"use_fast": fast} if cls is ours.AutoTokenizer else {}))
        assert type(reloaded).__name__ == name and reloaded.model_max_length == 16
        assert_same(reloaded(texts, truncation=True), expected)  # truncation=True reads model_max_length
    if fast:
        from tokenizers import Tokenizer

        standalone = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))  # no onnxport, no transformers
        ids = [encoding.ids for encoding in standalone.encode_batch(texts)]
        if family == "roformer":
            # Saved with BertPreTokenizer (jieba cannot be serialized): BERT-style ids, jieba-free.
            assert json.loads((tmp_path / "tokenizer.json").read_text())["pre_tokenizer"]["type"] == "BertPreTokenizer"
            assert ids[0] == mine(texts[0])["input_ids"]  # no Chinese words: the two agree
            assert standalone.encode("今天天气非常好。", add_special_tokens=False).tokens == ["[UNK]", "。"]
            assert mine.tokenize("今天天气非常好。") == ["今", "天", "天", "气", "非常", "好", "。"]
        else:
            assert ids == mine(texts)["input_ids"]
        slow = getattr(ours, FAMILIES[family][1]).from_pretrained(tmp_path)  # vocab files were written too
        assert slow("Hello world!")["input_ids"] == expected["input_ids"][0]


@pytest.mark.parametrize("family,fast", VARIANTS, ids=VARIANT_IDS)
def test_reads_directories_saved_by_transformers(tokenizer_pair, family, fast, tmp_path):
    _, reference = tokenizer_pair(family, fast)
    reference.save_pretrained(tmp_path)
    if fast and family == "roformer":  # transformers leaves BertPreTokenizer in place after saving; restore jieba
        restored = type(reference).from_pretrained(tmp_path)
        reference.backend_tokenizer.pre_tokenizer = restored.backend_tokenizer.pre_tokenizer
    mine = getattr(ours, FAMILIES[family][1] + ("Fast" if fast else "")).from_pretrained(tmp_path)
    texts = texts_for(family)
    assert_same(mine(texts, padding=True), reference(texts, padding=True))
    assert mine.mask_token == reference.mask_token and mine.model_max_length == reference.model_max_length


@pytest.mark.parametrize("fast", [False, True], ids=["slow", "fast"])
@pytest.mark.parametrize("family,options", [("roberta-prelayernorm", dict(add_prefix_space=True)),
                                            ("roformer", dict(do_lower_case=False)),
                                            ("roformer", dict(strip_accents=False))])
def test_family_options_match(vocab_dirs, family, options, fast):
    name = FAMILIES[family][1] + ("Fast" if fast else "")
    mine = getattr(ours, name).from_pretrained(vocab_dirs[family], **options)
    reference = getattr(transformers, name).from_pretrained(vocab_dirs[family], **options)
    texts = texts_for(family)
    assert_same(mine(texts, padding=True, return_offsets_mapping=fast), reference(texts, padding=True,
                                                                                  return_offsets_mapping=fast))
    mine.padding_side = reference.padding_side = "left"
    assert_same(mine(texts, padding=True), reference(texts, padding=True))
    assert mine(texts[0], padding="max_length", max_length=12)["attention_mask"][0] == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_auto_tokenizer_picks_the_family(vocab_dirs, tmp_path, family):
    name = FAMILIES[family][1]
    assert type(ours.AutoTokenizer.from_pretrained(vocab_dirs[family])).__name__ == name + "Fast"
    assert type(ours.AutoTokenizer.from_pretrained(vocab_dirs[family], use_fast=False)).__name__ == name
    # tokenizer_config.json's tokenizer_class wins over config.json's model_type.
    other = next(f for f in FAMILIES if f != family)
    for source in vocab_dirs[family].iterdir():
        (tmp_path / source.name).write_bytes(source.read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": other}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": name + "Fast"}))
    assert type(ours.AutoTokenizer.from_pretrained(tmp_path)).__name__ == name + "Fast"


# Where transformers' own slow and fast tokenizers disagree, and why (ours reproduce each side):
KNOWN_SLOW_FAST_DIFFERENCES = {
    # RoFormer fast lowercases and strips accents (BertNormalizer) *before* jieba; slow runs jieba on the
    # lowercased but still accented text, so jieba cuts "café" at "é" and "caf" becomes [UNK].
    "roformer": {"Café naïve résumé FAÇADE", LONG_TEXT},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_slow_and_fast_agree(tokenizer_pair, family):
    (slow, reference_slow), (fast, reference_fast) = tokenizer_pair(family, False), tokenizer_pair(family, True)
    options = dict(return_token_type_ids=True, return_special_tokens_mask=True)
    disagreeing = set()
    for text in texts_for(family):
        if plain(reference_slow(text, **options)) != plain(reference_fast(text, **options)):
            disagreeing.add(text)
        else:
            assert_same(slow(text, **options), fast(text, **options))
    assert disagreeing == KNOWN_SLOW_FAST_DIFFERENCES.get(family, set())
    texts = [text for text in texts_for(family) if text not in disagreeing]
    padded = dict(options, padding=True)
    assert_same(slow(texts, **padded), fast(texts, **padded))
    pairs = [("short", LONG_TEXT[:200]), ("今天", "Hello world!"), ("", "Hi")]
    assert_same(slow(pairs, truncation="only_second", max_length=20, **padded),
                fast(pairs, truncation="only_second", max_length=20, **padded))
    batch = fast(texts)["input_ids"]
    for skip in (False, True):
        for clean in (False, True):
            decoded_slow, decoded_fast = slow.batch_decode(batch, skip, clean), fast.batch_decode(batch, skip, clean)
            if reference_slow.batch_decode(batch, skip, clean) == reference_fast.batch_decode(batch, skip, clean):
                assert decoded_slow == decoded_fast


@pytest.mark.parametrize("fast", [False, True], ids=["slow", "fast"])
def test_tensors_for_every_framework(tokenizer_pair, fast):
    mine, _ = tokenizer_pair("roformer", fast)
    texts = ["今天天气非常好。", "Hello world!"]
    expected = mine(texts, padding=True, return_tensors="np")
    assert expected["input_ids"].tolist() == mine(texts, padding=True)["input_ids"]
    single = mine(texts[0], return_tensors="np")
    assert single["input_ids"].shape == (1, len(mine(texts[0])["input_ids"]))
    # The newest-releases CI venv has torch only; each framework is checked where it is installed.
    checked = []
    for framework, module, to_numpy in [("pt", "torch", lambda t: t.numpy()), ("tf", "tensorflow", lambda t: t.numpy()),
                                        ("jax", "jax", np.asarray)]:
        if importlib.util.find_spec(module) is None:
            continue
        converted = mine(texts, padding=True, return_tensors=framework)
        assert type(converted["input_ids"]).__module__.split(".")[0] in (module, "jaxlib")
        for key in expected:
            np.testing.assert_array_equal(to_numpy(converted[key]), expected[key])
        checked.append(framework)
    if "pt" not in checked:
        pytest.skip("torch is not installed")
    assert mine.decode(mine(texts[1], return_tensors="pt")["input_ids"][0], skip_special_tokens=True) == \
        ("hello world!" if fast else "hello world !")


def test_runtime_imports_no_framework(vocab_dirs):
    script = textwrap.dedent(f"""
        import sys
        import onnxport.tokenizers as t
        for family, path in {json.dumps({k: str(v) for k, v in vocab_dirs.items()})}.items():
            for fast in (True, False):
                tok = t.AutoTokenizer.from_pretrained(path, use_fast=fast)
                enc = tok(["hello 今天", "x"], ["pair", "y"], padding=True, truncation=True, max_length=8,
                          return_tensors="np")
                tok.batch_decode(enc["input_ids"])
        loaded = sorted(m for m in ("torch", "tensorflow", "jax", "flax", "transformers") if m in sys.modules)
        print("frameworks loaded:", ",".join(loaded))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "frameworks loaded:"


@pytest.mark.parametrize("family,fast", VARIANTS, ids=VARIANT_IDS)
def test_argument_errors(tokenizer_pair, family, fast):
    mine, reference = tokenizer_pair(family, fast)
    with pytest.raises(ValueError, match="padding strategy"):
        mine("a", padding="to_the_moon")
    with pytest.raises(ValueError, match="truncation strategy"):
        mine("a", truncation="middle_out")
    with pytest.raises(ValueError, match="return_tensors"):
        mine("a", return_tensors="mx")
    with pytest.raises(ValueError, match="padding_side"):
        mine("a", padding=True, padding_side="center")
    with pytest.raises(ValueError, match="different lengths"):
        mine(["a", LONG_TEXT], return_tensors="np")
    first, second = "short", LONG_TEXT
    # The second text alone exceeds max_length: only_first cannot fit the pair. transformers' fast tokenizers
    # raise; its Python ones log an error and return the pair untruncated. Ours do the same as each.
    for strategy, pair in (("only_first", (first, second)), ("only_second", (second, first))):
        if fast:
            with pytest.raises(ValueError, match="truncate"):
                mine(*pair, truncation=strategy, max_length=10)
            with pytest.raises(Exception, match="runcat"):
                reference(*pair, truncation=strategy, max_length=10)
        else:
            options = dict(truncation=strategy, max_length=10, return_overflowing_tokens=True, stride=2)
            untruncated = mine(*pair, **options)
            assert_same(untruncated, reference(*pair, **options))
            assert untruncated["input_ids"] == mine(*pair)["input_ids"] and untruncated["overflowing_tokens"] == []
    if not fast:
        with pytest.raises(NotImplementedError, match="Fast"):
            mine("a", return_offsets_mapping=True)
        with pytest.raises(ValueError, match="longest_first"):
            mine("a", "b", truncation=True, max_length=3, return_overflowing_tokens=True)


def test_file_errors(vocab_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="sentencepiece.bpe.model"):
        ours.XLMRobertaTokenizerFast.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        ours.RobertaTokenizer.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="not a directory"):
        ours.RoFormerTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="cannot tell the tokenizer"):
        ours.AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert'"):
        ours.AutoTokenizer.from_pretrained(tmp_path)

    xlm_r = [ours.XLMRobertaTokenizer, ours.XLMRobertaTokenizerFast]
    roberta = [ours.RobertaTokenizer, ours.RobertaTokenizerFast]
    corrupt = {
        "sentencepiece.bpe.model": (b"\xff\xfe not a protobuf", xlm_r, OSError),
        "vocab.json": (b"{not json", roberta, ValueError),
        "merges.txt": (b"#version: 0.2\nthree parts here\n", roberta, ValueError),
        "vocab.txt": (b"", [ours.RoFormerTokenizer, ours.RoFormerTokenizerFast], ValueError),
        "tokenizer.json": (b'{"model": 1}', [ours.RoFormerTokenizerFast], ValueError),
    }
    for file_name, (content, classes, error) in corrupt.items():
        directory = tmp_path / file_name.replace(".", "_")
        family = {"sentencepiece.bpe.model": "xlm-roberta", "vocab.txt": "roformer", "tokenizer.json": "roformer"}.get(
            file_name, "roberta-prelayernorm")
        directory.mkdir()
        for source in vocab_dirs[family].iterdir():
            (directory / source.name).write_bytes(source.read_bytes())
        (directory / file_name).write_bytes(content)
        for cls in classes:
            with pytest.raises(error, match=file_name.split(".")[0]):
                cls.from_pretrained(directory)
