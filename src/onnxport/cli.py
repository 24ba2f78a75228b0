"""The `onnxport` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys

# TensorFlow's C++ start-up and grappler logs would bury the command's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onnxport", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="build tiny models of each family, run every head, print a table")
    _add_export_parser(commands)
    _add_run_parser(commands)
    _add_quantize_parser(commands)
    _add_parity_parser(commands)
    args = parser.parse_args(argv)
    level = logging.INFO if args.verbose or args.command == "export" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    uses_tensorflow = (args.command == "export" and args.framework == "tf"
                       or args.command == "parity" and "tf" in (args.frameworks or ["tf"]))
    if uses_tensorflow and not args.verbose:
        from ._quiet import import_quietly

        import_quietly("tensorflow")  # before any front end, so its import-time notices stay out of the output
    from .errors import OnnxportError

    try:
        return _dispatch(args)
    except OnnxportError as error:  # every refusal is one line, never a traceback
        print(f"onnxport {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as error:
        print(f"onnxport {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug or an unforeseen fault: still one line; -v shows the traceback
        if args.verbose:
            raise
        print(f"onnxport {args.command}: error: unexpected {type(error).__name__}: {_one_line(error)} "
              "(run with -v for the traceback, and please report it)", file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be an integer > 0, got {text!r}")
    return value


def _dispatch(args) -> int:
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main()
    if args.command == "export":
        return _export(args)
    if args.command == "run":
        return _run(args)
    if args.command == "quantize":
        return _quantize(args)
    if args.command == "parity":
        from .parity import main as parity_main

        return parity_main(args)
    return 2


def _add_export_parser(commands) -> None:
    from .exporters.io_spec import TASKS

    p = commands.add_parser("export", help="export an HF-format checkpoint directory to ONNX")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + weights)")
    p.add_argument("out", help="output directory for model.onnx, config, tokenizer files, onnxport.json")
    p.add_argument("--framework", default="pt", choices=("pt", "tf", "flax"), help="front end (default: pt)")
    p.add_argument("--task", choices=tuple(TASKS), help="export task (default: from the checkpoint's architectures)")
    p.add_argument("--with-past", action="store_true", help="text-generation with past key/values in and out")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    p.add_argument("--force", action="store_true", help="overwrite export files in a non-empty output directory")
    p.add_argument("--no-validate", action="store_true", help="skip the native vs ONNX Runtime comparison")
    p.add_argument("--atol", type=_non_negative_float, default=None,
                   help="validation tolerance (default: 1e-4; with --fp16, 1e-2 of each output's scale)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="write a dynamic-int8 model to OUT (validated against the fp32 export; see `onnxport quantize`)")
    p.add_argument("--fp16", action="store_true",
                   help="half-precision weights and matmuls for GPU hosts (LayerNorm, softmax and the attention mask "
                        "stay fp32; outputs float32, cache float16); validated against the fp32 native model")


def _export(args) -> int:
    from .exporters import ExportError, export
    from .exporters.validate import ValidationError

    if getattr(args, "fp16", False) and getattr(args, "quantize", None):
        # int8 dynamic quantization targets CPUs and quantizes fp32 MatMuls; fp16 targets GPUs. One or the other.
        print("onnxport export: error: --fp16 and --quantize int8 do not combine: int8 quantizes the fp32 "
              "graph for CPUs, fp16 halves it for GPUs; choose one.", file=sys.stderr)
        return 2
    if getattr(args, "quantize", None):
        return _export_quantized(args)

    try:
        report = export(
            args.checkpoint, args.out, framework=args.framework, task=args.task, opset=args.opset,
            with_past=args.with_past, validate=not args.no_validate, force=args.force, atol=args.atol,
            dtype="fp16" if getattr(args, "fp16", False) else "fp32",
        )
    except (ExportError, ValidationError, ValueError, FileNotFoundError) as error:
        print(f"onnxport export: error: {error}", file=sys.stderr)
        return 1
    if report.validation is not None:
        print(report.validation.table())
    print(f"exported {report.task} ({report.framework}, opset {report.opset}, {report.dtype}) to {report.out_dir}")
    return 0


def _add_run_parser(commands) -> None:
    p = commands.add_parser("run", help="serve an export directory through its pipeline and print JSON")
    p.add_argument("export_dir", help="directory written by `onnxport export`")
    p.add_argument("texts", nargs="*", help="input texts (question-answering: use --question/--context)")
    p.add_argument("--task", help="pipeline task (default: the task the directory was exported for)")
    p.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"))
    p.add_argument("--top-k", type=_positive_int, default=None,
                   help="fill-mask / text-classification / question-answering (default: the pipeline's)")
    p.add_argument("--aggregation", default="simple", help="token-classification: none|simple|first|average|max")
    p.add_argument("--question", help="question-answering question")
    p.add_argument("--context", help="question-answering context")
    p.add_argument("--choices", nargs="+", help="multiple-choice: the choices (the first TEXT is the prompt)")
    p.add_argument("--pooling", default="cls", choices=("cls", "mean", "none"), help="feature-extraction pooling")
    p.add_argument("--normalize", action="store_true", help="feature-extraction: L2-normalise vectors")
    p.add_argument("--max-new-tokens", type=int, default=None, help="text-generation (default: the pipeline's)")
    p.add_argument("--sample", action="store_true", help="text-generation: sample instead of greedy")
    p.add_argument("--temperature", type=float, default=None, help="text-generation sampling (default: 1.0)")
    p.add_argument("--seed", type=int, default=None)


def _add_parity_parser(commands) -> None:
    p = commands.add_parser("parity", help="run the parity matrix (native vs native vs ONNX) and print a table")
    from .families import FAMILIES

    p.add_argument("--families", nargs="+", choices=tuple(FAMILIES))
    p.add_argument("--frameworks", nargs="+", choices=("pt", "tf", "flax"))
    p.add_argument("--tasks", nargs="+", help="export tasks (default: all)")
    p.add_argument("--size", default="tiny", choices=("tiny", "base"), help="model geometry (base: 768 x 12 layers)")
    p.add_argument("--checkpoints", nargs="+", metavar="DIR",
                   help="HF checkpoint directories to compare instead of random ones (their head's task and "
                        "feature-extraction)")
    p.add_argument("--json", help="write the cells as JSON to this file")
    p.add_argument("--html", help="write a colour-scaled HTML heat map to this file")


def _jsonable(value):
    import numpy as np

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _run(args) -> int:
    import json

    from .runtime import pipeline
    from .runtime.models import read_export_dir

    try:
        task = args.task or read_export_dir(args.export_dir)[1].task
        pipe = pipeline(task, args.export_dir, provider=args.provider)
        # Only the options the user gave: the pipeline validates them and owns the defaults.
        given = lambda **options: {k: v for k, v in options.items() if v is not None}  # noqa: E731
        if task == "question-answering":
            if not (args.question and args.context):
                raise ValueError("question-answering needs --question and --context.")
            result = pipe(question=args.question, context=args.context, **given(top_k=args.top_k))
        elif not args.texts:
            raise ValueError("Give at least one TEXT.")
        elif task == "multiple-choice":
            if not args.choices:
                raise ValueError("multiple-choice needs --choices.")
            result = pipe(args.texts[0], args.choices)
        elif task == "fill-mask":
            result = pipe(args.texts, **given(top_k=args.top_k))
        elif task in ("text-classification", "sentiment-analysis"):
            result = pipe(args.texts, **given(top_k=args.top_k))
        elif task in ("token-classification", "ner"):
            result = pipe(args.texts, aggregation_strategy=args.aggregation)
        elif task == "feature-extraction":
            result = pipe(args.texts, pooling=args.pooling, normalize=args.normalize)
        else:
            result = pipe(args.texts, do_sample=args.sample, **given(
                max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed))
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"onnxport run: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(_jsonable(result), ensure_ascii=False, indent=2))
    return 0


# -- int8 quantization (`onnxport quantize`, `onnxport export --quantize int8`) -------------------------
def _add_quantize_thresholds(p) -> None:
    from .exporters.quantize import DEFAULT_MIN_COSINE, DEFAULT_MIN_TOP1

    p.add_argument("--per-channel", action="store_true", help="one weight scale per output column")
    p.add_argument("--min-cosine", type=float, default=DEFAULT_MIN_COSINE,
                   help=f"fail below this cosine similarity of the head output vs fp32 (default {DEFAULT_MIN_COSINE})")
    p.add_argument("--min-top1", type=float, default=DEFAULT_MIN_TOP1,
                   help=f"fail below this top-1 agreement with fp32, a fraction (default {DEFAULT_MIN_TOP1})")


def _add_quantize_parser(commands) -> None:
    p = commands.add_parser("quantize", help="dynamic int8 quantization of an export directory, validated vs fp32")
    p.add_argument("export_dir", help="fp32 directory written by `onnxport export`")
    p.add_argument("--out", default=None, help="output directory (default: EXPORT_DIR-int8)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output directory")
    _add_quantize_thresholds(p)


def _quantize(args) -> int:
    from .exporters.quantize import QuantizationError, quantize

    try:
        report = quantize(args.export_dir, args.out, per_channel=args.per_channel, min_cosine=args.min_cosine,
                          min_top1=args.min_top1, force=args.force)
    except (QuantizationError, ValueError, FileNotFoundError) as error:
        print(f"onnxport quantize: error: {error}", file=sys.stderr)
        return 1
    print(report.table())
    print(f"int8 model written to {report.out_dir}")
    return 0


def _export_quantized(args) -> int:
    """Export fp32 to a scratch directory, then write the validated int8 directory (default thresholds) to OUT."""
    import tempfile

    from .exporters.quantize import DEFAULT_MIN_COSINE, DEFAULT_MIN_TOP1

    with tempfile.TemporaryDirectory(prefix="onnxport-fp32-") as scratch:
        status = _export(argparse.Namespace(**{**vars(args), "out": scratch, "force": True, "quantize": None}))
        if status:
            return status
        return _quantize(argparse.Namespace(export_dir=scratch, out=args.out, force=args.force, per_channel=False,
                                            min_cosine=DEFAULT_MIN_COSINE, min_top1=DEFAULT_MIN_TOP1))


if __name__ == "__main__":
    sys.exit(main())
