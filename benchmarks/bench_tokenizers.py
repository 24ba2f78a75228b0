"""Batch-encoding speed: onnxport fast tokenizers vs transformers' fast tokenizers on the same files.

    python -m benchmarks.bench_tokenizers [--sentences 10000] [--rounds 7] [--real]

Both sides get identical vocabularies (trained here, as in the parity tests; with --real the real-size ones of
parity_tests/real_vocab.py: GPT-2's BPE, bert-base-chinese's WordPiece, a 120k SentencePiece) and the same call
(padding, truncation, max_length=128). Rounds interleave the two so drift hits both equally; the
report is the median per side and the ratio onnxport / transformers (target <= 1.1).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from parity_tests import real_vocab
from parity_tests.tokenizer_fixtures import (  # shared with the tests: one definition of the vocabularies
    CORPUS, TEXTS, write_roberta_files, write_roformer_files, write_xlm_roberta_files,
)

FAMILIES = {
    "xlm-roberta": (write_xlm_roberta_files, "XLMRobertaTokenizerFast"),
    "roberta-prelayernorm": (write_roberta_files, "RobertaTokenizerFast"),
    "roformer": (write_roformer_files, "RoFormerTokenizerFast"),
}
REAL_VOCABULARIES = {  # family -> real-size vocabulary (fetched and cached by parity_tests/real_vocab.py)
    "xlm-roberta": real_vocab.sentencepiece_directory,
    "roberta-prelayernorm": real_vocab.gpt2_directory,
    "roformer": real_vocab.bert_chinese_directory,
}
CALL = dict(padding=True, truncation=True, max_length=128)
# With offsets onnxport cannot use the backend's offset-free encode_batch_fast; measured separately.
CALLS = {"ids": CALL, "ids+offsets": dict(CALL, return_offsets_mapping=True)}


def mixed_sentences(count: int, seed: int = 0) -> list[str]:
    """English, Chinese, mixed-script, emoji and whitespace-heavy sentences of 1-4 fragments."""
    rng = random.Random(seed)
    fragments = [text for text in CORPUS + TEXTS if text.strip()]
    return [" ".join(rng.choice(fragments) for _ in range(rng.randint(1, 4))) for _ in range(count)]


def seconds_for(encode, texts, call) -> float:
    start = time.perf_counter()
    encode(texts, **call)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--real", action="store_true", help="real-size vocabularies instead of the tiny trained ones")
    args = parser.parse_args(argv)

    import transformers

    import onnxport.tokenizers as onnxport_tokenizers

    texts = mixed_sentences(args.sentences)
    print(f"{args.sentences} sentences, {args.rounds} interleaved rounds, call {CALL}, "
          f"{'real-size' if args.real else 'tiny trained'} vocabularies")
    print(f"{'family':<22}{'outputs':<13}{'onnxport ms':>12}{'transformers ms':>17}{'ratio':>8}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            writer, class_name = FAMILIES[family]
            directory = REAL_VOCABULARIES[family]() if args.real else writer(Path(tmp) / family)
            ours = getattr(onnxport_tokenizers, class_name).from_pretrained(directory)
            theirs = getattr(transformers, class_name).from_pretrained(directory)
            for call_name, call in CALLS.items():
                sample_ours, sample_theirs = ours(texts[:200], **call), theirs(texts[:200], **call)
                assert all(sample_ours[key] == sample_theirs[key] for key in sample_theirs), "outputs differ"
                ours(texts, **call), theirs(texts, **call)  # warm-up: caches, thread pool
                timings = {"ours": [], "theirs": []}
                for round_index in range(args.rounds):
                    order = [("ours", ours), ("theirs", theirs)]
                    for name, tokenizer in order if round_index % 2 == 0 else order[::-1]:
                        timings[name].append(seconds_for(tokenizer, texts, call))
                ours_ms = statistics.median(timings["ours"]) * 1e3
                theirs_ms = statistics.median(timings["theirs"]) * 1e3
                worst = max(worst, ours_ms / theirs_ms)
                print(f"{family:<22}{call_name:<13}{ours_ms:>12.1f}{theirs_ms:>17.1f}{ours_ms / theirs_ms:>8.3f}")
    print(f"worst ratio {worst:.3f} (target <= 1.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
