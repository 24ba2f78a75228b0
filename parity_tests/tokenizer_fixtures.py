"""Tiny vocabularies trained in-test, laid out as users have them on disk.

No model hub: each family's files are produced here from a small corpus, once
per session (see the session-scoped fixtures in test_tokenizers.py).
"""

import json
from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! How are you doing today?",
    "Tokenizers split text into pieces; models read the pieces.",
    "It's a test, isn't it? We'll see what they've done.",
    "Numbers like 12345 and 3.14 appear in text too.",
    "Café, naïve, résumé and façade keep their accents.",
    "今天天气非常好。我们去北京吧！",
    "我爱自然语言处理，机器学习很有趣。",
    "中文和English混合的句子 also appear.",
    "Emoji are fun 😀🎉 and so are symbols like © and ™.",
    "Привет мир, это тест.",
    "Γειά σου κόσμε.",
    "मशीन लर्निंग",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines",
    "ONNX Runtime runs exported models on CPU and GPU.",
]

# Texts every tokenizer is compared on: scripts, accents, emoji, whitespace runs,
# empty string, the mask token inside text, out-of-vocabulary characters.
TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "今天天气非常好。",
    "我们去北京吧，机器学习很有趣！",
    "中文和English混合的句子 also appear.",
    "Café naïve résumé FAÇADE",
    "Emoji 😀🎉 and © ™",
    "Привет мир",
    "a   lot    of     spaces",
    "  leading and trailing  ",
    "tabs\tand\nnewlines",
    "",
    " ",
    "unseen zqxj 龘 characters",
    "It's 12345 or 3.14, isn't it?",
]

# A shared stand-in for the mask token; each family substitutes its own.
MASK = "{mask}"
MASK_TEXTS = ["The capital is {mask}.", "天气{mask}好", "{mask} at start", "end {mask}", "two{mask} {mask}masks"]


def write_xlm_roberta_files(directory: Path) -> Path:
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    corpus_file = directory / "corpus.txt"
    corpus_file.write_text("\n".join(CORPUS * 3), encoding="utf-8")
    # sentencepiece's default ids (<unk>=0, <s>=1, </s>=2, no <pad>) are fairseq's layout before the shift.
    spm.SentencePieceTrainer.train(
        input=str(corpus_file),
        model_prefix=str(directory / "sentencepiece.bpe"),
        vocab_size=300,
        model_type="unigram",
        character_coverage=0.9995,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    corpus_file.unlink()
    (directory / "sentencepiece.bpe.vocab").unlink()
    (directory / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    return directory


def write_roberta_files(directory: Path) -> Path:
    from tokenizers import ByteLevelBPETokenizer

    directory.mkdir(parents=True, exist_ok=True)
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        CORPUS * 3, vocab_size=600, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    trainer.save_model(str(directory))
    (directory / "config.json").write_text(json.dumps({"model_type": "roberta-prelayernorm"}))
    return directory


ROFORMER_WORDS = [
    "今天", "天气", "非常", "北京", "我们", "机器", "学习",
    "自然", "语言", "处理", "中文", "混合", "句子", "有趣",
]
ROFORMER_WORDPIECES = [
    "hello", "world", "the", "quick", "brown", "fox", "over", "lazy", "dog", "english", "also", "appear",
    "and", "a", "lot", "of", "it", "is", "or", "cafe", "naive", "resume", "facade", "tabs", "new", "##lines",
    "spa", "##ces", "lead", "##ing", "trail", "un", "##seen", "char", "##act", "##ers", "emoji", "12", "##34",
    "##5", "3", "14", "s", "t", "at", "start", "end", "two", "masks", "capital", "jump", "##s", "##n",
    "привет", "мир",
]


def write_roformer_files(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    characters = sorted(set("".join(CORPUS)) - set(" \t\n"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + ROFORMER_WORDS + ROFORMER_WORDPIECES
    vocab += [c for c in characters if c not in vocab]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (directory / "config.json").write_text(json.dumps({"model_type": "roformer"}))
    return directory
