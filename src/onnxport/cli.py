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
    _add_validate_parser(commands)
    _add_bench_parser(commands)
    _add_info_parser(commands)
    _add_quantize_parser(commands)
    _add_parity_parser(commands)
    from .integrations.triton import add_cli_parser as _add_triton_parser

    _add_triton_parser(commands)
    args, extras = parser.parse_known_args(argv)
    if extras and args.command == "run" and not any(e.startswith("-") for e in extras):
        # argparse ends `run`'s TEXTs at the first option: texts after one (`--query Q DOC DOC`) are TEXTs too
        args.texts += extras
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    level = logging.INFO if args.verbose or args.command == "export" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    uses_tensorflow = (args.command == "export" and args.framework == "tf"
                       or args.command == "parity" and "tf" in (args.frameworks or ["tf"])
                       or args.command == "validate" and _export_framework(args.export_dir) == "tf")
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
    return COMMANDS[args.command](args)


def _demo(args) -> int:
    from .dev.demo import main as demo_main  # development tooling: imported only by its command

    return demo_main()


def _parity(args) -> int:
    from .dev.parity import main as parity_main

    return parity_main(args)


def _triton(args) -> int:
    from .integrations.triton import cli_main as triton_main

    return triton_main(args)


def _add_export_parser(commands) -> None:
    from .exporters import FRONT_ENDS
    from .artifact.io_spec import TASKS

    p = commands.add_parser("export", help="export an HF-format checkpoint directory to ONNX")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + weights)")
    p.add_argument("out", help="output directory for onnx/model.onnx, config, tokenizer files, onnxport.json")
    p.add_argument("--framework", default="pt", choices=tuple(FRONT_ENDS), help="front end (default: pt)")
    p.add_argument("--task", choices=tuple(TASKS), help="export task (default: from the checkpoint's architectures)")
    p.add_argument("--with-past", action="store_true", help="text-generation with past key/values in and out")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    p.add_argument("--force", action="store_true",
                   help="replace the export files in a non-empty OUT (your other files are kept; a failed export "
                        "leaves OUT as it was)")
    p.add_argument("--no-validate", action="store_true", help="skip the native vs ONNX Runtime comparison")
    _add_validation_memory_options(p)
    p.add_argument("--allow-missing-weights", action="store_true",
                   help="export a head the checkpoint lacks, initialised from a fixed seed (listed in onnxport.json)")
    p.add_argument("--with-pooler", action="store_true",
                   help="feature-extraction: output pooler_output even when the checkpoint has no pooler weights")
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
            allow_missing_weights=args.allow_missing_weights, with_pooler=True if args.with_pooler else None,
            validate_length=args.validate_length, validation_memory=args.validation_memory,
        )
    except (ExportError, ValidationError, ValueError, FileNotFoundError) as error:
        print(f"onnxport export: error: {error}", file=sys.stderr)
        return 1
    if report.validation is not None:
        print(report.validation.table())
        if report.validation.plan is not None:
            print(report.validation.plan.describe())
    print(f"exported {report.task} ({report.framework}, opset {report.opset}, {report.dtype}) to {report.out_dir}")
    return 0


def _add_export_dir_parser(commands, name: str, **parser_options) -> argparse.ArgumentParser:
    """A subcommand whose first argument is an export directory."""
    p = commands.add_parser(name, **parser_options)
    p.add_argument("export_dir", help="directory written by `onnxport export`")
    return p


def _add_session_options(p) -> None:
    """The ONNX Runtime options of the commands that run an export."""
    p.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"))
    p.add_argument("--threads", type=_positive_int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--no-fuse-attention", dest="fuse_attention", action="store_false",
                   help="serve the attention nodes as written (their ONNX function bodies) instead of lowering "
                        "them to ONNX Runtime's MultiHeadAttention kernel")


def _add_run_parser(commands) -> None:
    p = _add_export_dir_parser(
        commands, "run", help="serve an export directory through its pipeline and print JSON",
        description="Run the export's pipeline on TEXTs (or a JSONL file) and print the results as JSON "
                    "(JSONL with --output). Options not given take the pipeline's defaults.")
    p.add_argument("texts", nargs="*", help="input texts (question-answering: use --question/--context; rerank: "
                   "the documents of --query)")
    p.add_argument("--task", help="pipeline task (default: the task the directory was exported for)")
    p.add_argument("--input", metavar="FILE", help="read inputs from FILE: JSONL with 'text' (and 'text_pair'; "
                   "question-answering: 'question' + 'context'; multiple-choice: 'text' + 'choices'), or plain "
                   "text, one input a line; rerank: 'query' + 'documents' (a list of texts); '-' reads standard input")
    p.add_argument("--output", metavar="FILE", help="write one JSON result a line (JSONL) to FILE instead of "
                   "pretty JSON on standard output")
    p.add_argument("--text-pair", help="second sequence for every TEXT (text-classification pairs)")
    _add_session_options(p)
    p.add_argument("--batch-size", type=_positive_int, default=None, help="texts per model call (default 32)")
    p.add_argument("--max-length", type=_positive_int, default=None, help="truncate inputs to this many tokens")
    p.add_argument("--top-k", type=_positive_int, default=None,
                   help="fill-mask / text-classification / question-answering / text-generation sampling; rerank: "
                        "how many ranked documents to keep")
    p.add_argument("--targets", nargs="+", help="fill-mask: score only these words")
    p.add_argument("--function-to-apply", choices=("softmax", "sigmoid", "none"),
                   help="text-classification: score function (default: by problem type)")
    p.add_argument("--aggregation", default=None, help="token-classification: none|simple|first|average|max")
    p.add_argument("--ignore-labels", nargs="*", help="token-classification: labels left out (default: O)")
    p.add_argument("--stride", type=int, default=None,
                   help="token-classification: read a text longer than the model in windows overlapping by this "
                   "many tokens (needs --aggregation other than none)")
    p.add_argument("--question", help="question-answering question")
    p.add_argument("--context", help="question-answering context")
    p.add_argument("--doc-stride", type=int, default=None, help="question-answering: overlap of context windows")
    p.add_argument("--max-answer-len", type=int, default=None, help="question-answering: longest answer in tokens")
    p.add_argument("--max-seq-len", type=int, default=None,
                   help="question-answering: tokens per context window (default 384, at most the model's)")
    p.add_argument("--max-question-len", type=int, default=None,
                   help="question-answering: cut the question to this many tokens (default: keep it whole)")
    p.add_argument("--handle-impossible-answer", action="store_true", help="question-answering: allow no answer")
    p.add_argument("--choices", nargs="+", help="multiple-choice: the choices (the first TEXT is the prompt)")
    p.add_argument("--query", help="rerank: the query the TEXTs (documents) are scored against")
    p.add_argument("--return-documents", action="store_true", help="rerank: each ranked entry carries its text")
    p.add_argument("--apply-softmax", action="store_true",
                   help="rerank: softmax over the labels of a cross-encoder with several")
    p.add_argument("--prompt-name", default=None, help="rerank / sentence-embeddings: the model's prompt to use")
    p.add_argument("--prompt", default=None, help="rerank / sentence-embeddings: a prompt text to put first")
    p.add_argument("--pooling", default=None, choices=("cls", "mean", "none"), help="feature-extraction pooling")
    p.add_argument("--normalize", action="store_true", help="feature-extraction: L2-normalise vectors")
    p.add_argument("--max-new-tokens", type=int, default=None, help="text-generation (default: the pipeline's)")
    p.add_argument("--sample", action="store_true", help="text-generation: sample instead of greedy")
    p.add_argument("--temperature", type=float, default=None, help="text-generation sampling (default: 1.0)")
    p.add_argument("--top-p", type=float, default=None, help="text-generation: nucleus sampling mass in (0, 1]")
    p.add_argument("--seed", type=int, default=None, help="text-generation sampling seed")
    p.add_argument("--no-truncation", action="store_true",
                   help="refuse a text longer than the model (an error) instead of truncating it with a warning")


def _add_validate_parser(commands) -> None:
    from .exporters import FRONT_ENDS

    p = _add_export_dir_parser(
        commands, "validate",
        help="re-run the native vs ONNX Runtime comparison of an export (exit 1 above tolerance)",
        description="Compare the export with the native model of the checkpoint it came from on the export's "
                    "validation cases: batch 1 and > 1, padding, token types, the longest allowed length.")
    p.add_argument("checkpoint", nargs="?", help="checkpoint directory (default: the one onnxport.json records)")
    p.add_argument("--framework", choices=tuple(FRONT_ENDS), help="native framework (default: the export's)")
    p.add_argument("--atol", type=_non_negative_float, default=None, help="tolerance (default: the export's bar)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    _add_validation_memory_options(p)


def _add_validation_memory_options(p) -> None:
    p.add_argument("--validate-length", type=int, default=None, metavar="TOKENS",
                   help="validate up to TOKENS tokens (default: the longest the position table allows, when it "
                        "fits in memory; an export that cannot fit is refused and says which length fits)")
    p.add_argument("--validation-memory", default=None, metavar="SIZE",
                   help="memory validation may use, e.g. 6GiB (default: $ONNXPORT_VALIDATION_MEMORY, else 80%% "
                        "of MemAvailable)")


def _add_bench_parser(commands) -> None:
    p = _add_export_dir_parser(commands, "bench", help="time an export's model call on this machine (median, p90)")
    p.add_argument("--shapes", default="1x128,8x128", help="BATCHxSEQUENCE list (default: 1x128,8x128)")
    _add_session_options(p)
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per shape (default 3)")
    p.add_argument("--runs", type=_positive_int, default=20, help="timed calls per shape (default 20)")
    p.add_argument("--json", metavar="FILE", help="also write the timings as JSON to FILE")


def _add_info_parser(commands) -> None:
    p = _add_export_dir_parser(commands, "info",
                               help="what an export is: IO spec, provenance, validation, what is random")
    p.add_argument("--json", action="store_true", help="print onnxport.json as it is")


def _add_parity_parser(commands) -> None:
    from .dev import FRAMEWORKS, SIZES  # the matrix's lists; the parity module itself loads only when run
    from .families import FAMILIES

    p = commands.add_parser("parity", help="run the parity matrix (native vs native vs ONNX) and print a table")
    p.add_argument("--families", nargs="+", choices=tuple(FAMILIES))
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS)
    p.add_argument("--tasks", nargs="+", help="export tasks (default: all)")
    p.add_argument("--size", default="tiny", choices=tuple(SIZES), help="model geometry (base: 768 x 12 layers)")
    p.add_argument("--checkpoints", nargs="+", metavar="DIR",
                   help="HF checkpoint directories to compare instead of random ones (their head's task and "
                        "feature-extraction)")
    p.add_argument("--json", help="write the cells as JSON to this file")
    p.add_argument("--html", help="write a colour-scaled HTML heat map to this file")


def _read_inputs(path: str, task: str) -> list:
    """JSONL records or plain lines -> pipeline inputs for ``task`` (the fields the integrations' rows have)."""
    import json

    from .errors import InputError
    from .integrations import row_fields
    from .runtime.pipelines import PIPELINE_TASKS

    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        lines = [line for line in stream.read().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        if not line.lstrip().startswith("{"):
            records.append({"text": line})
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise InputError(f"{path}:{number} is not valid JSON ({err}).") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}:{number} must be a JSON object, got {type(record).__name__}.")
        records.append(record)
    need = row_fields(PIPELINE_TASKS.get(task, task)).required
    for number, record in enumerate(records, 1):
        missing = [k for k in need if k not in record]
        if missing:
            raise InputError(f"{path}: record {number} lacks {', '.join(missing)} (a {task} record has "
                             f"{' and '.join(need)}).")
    return records


def _run(args) -> int:
    import json

    from .errors import InputError
    from .integrations import jsonable
    from .runtime import pipeline
    from .artifact.spec_file import read_export_dir

    given = lambda **options: {k: v for k, v in options.items() if v is not None}  # noqa: E731
    task = args.task or read_export_dir(args.export_dir)[1].task
    pipe = pipeline(task, args.export_dir, provider=args.provider, **given(
        batch_size=args.batch_size, max_length=args.max_length, intra_op_threads=args.threads),
        fuse_attention=args.fuse_attention)
    if args.input:
        records = _read_inputs(args.input, task)
    elif task == "question-answering":
        if not (args.question and args.context):
            raise InputError("question-answering needs --question and --context (or --input FILE).")
        records = [{"question": args.question, "context": args.context}]
    elif task == "rerank":
        if not args.query or not args.texts:
            raise InputError("rerank needs --query QUERY and the documents as TEXTs (or --input FILE of "
                             "{\"query\": ..., \"documents\": [...]} lines).")
        records = [{"query": args.query, "documents": args.texts}]
    elif not args.texts:
        raise InputError("Give at least one TEXT (or --input FILE).")
    elif task == "multiple-choice":
        if not args.choices:
            raise InputError("multiple-choice needs --choices.")
        records = [{"text": args.texts[0], "choices": args.choices}]
    else:
        records = [{"text": t, **given(text_pair=args.text_pair)} for t in args.texts]

    # Only the options the user gave: the pipeline validates them and owns the defaults.
    if task == "question-answering":
        options = given(top_k=args.top_k, doc_stride=args.doc_stride, max_answer_len=args.max_answer_len,
                        max_seq_len=args.max_seq_len, max_question_len=args.max_question_len)
        if args.handle_impossible_answer:
            options["handle_impossible_answer"] = True
        results = [pipe(question=r["question"], context=r["context"], **options) for r in records]
    elif task == "multiple-choice":
        results = [pipe(r["text"], r["choices"], **given(truncation=False if args.no_truncation else None))
                   for r in records]
    elif task in ("rerank", "sentence-embeddings"):
        # as Triton and Ray serve them, with their row checks: rerank's scores in document order and the ranking,
        # one vector per text (an empty text included, as sentence-transformers encodes it)
        from .integrations import RowRunner

        options = given(prompt_name=args.prompt_name, prompt=args.prompt,
                        truncation=False if args.no_truncation else None)
        if task == "rerank":
            options.update(given(top_k=args.top_k, return_documents=args.return_documents or None,
                                 apply_softmax=args.apply_softmax or None))
        results = RowRunner(pipe, task, options).run(records)
        refused = next(((n, r) for n, r in enumerate(results, 1) if isinstance(r, Exception)), None)
        if refused:
            raise InputError(f"record {refused[0]}: {refused[1]}")
    else:
        pairs = [r for r in records if "text_pair" in r]
        texts = [{"text": r["text"], "text_pair": r["text_pair"]} if "text_pair" in r else r["text"]
                 for r in records] if pairs else [r["text"] for r in records]
        if task == "fill-mask":
            options = given(top_k=args.top_k, targets=args.targets)
        elif task in ("text-classification", "sentiment-analysis"):
            options = given(top_k=args.top_k, function_to_apply=args.function_to_apply)
        elif task in ("token-classification", "ner"):
            options = given(aggregation_strategy=args.aggregation, ignore_labels=args.ignore_labels,
                            stride=args.stride)
        elif task == "feature-extraction":
            options = given(pooling=args.pooling, normalize=args.normalize or None)
        elif task == "text-generation":
            options = given(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                            top_k=args.top_k, top_p=args.top_p, do_sample=args.sample or None)
        else:
            options = {}
        if args.no_truncation:
            options["truncation"] = False
        results = pipe(texts, **options)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            for result in results:
                out.write(json.dumps(jsonable(result), ensure_ascii=False) + "\n")
        print(f"{len(results)} results written to {args.output}", file=sys.stderr)
    else:
        single = not args.input and task in ("question-answering", "multiple-choice", "rerank")
        print(json.dumps(jsonable(results[0] if single else results), ensure_ascii=False, indent=2))
    return 0


def _export_framework(export_dir: str):
    from .artifact.spec_file import read_export_dir

    try:
        return read_export_dir(export_dir)[0].get("framework")
    except Exception:  # the command itself reports a bad directory
        return None


def _validate(args) -> int:
    import json

    from .exporters.pipeline import validate_export

    report = validate_export(args.export_dir, args.checkpoint, atol=args.atol, framework=args.framework,
                             validate_length=args.validate_length, validation_memory=args.validation_memory)
    print(report.table())
    if report.plan is not None:
        print(report.plan.describe())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report.to_dict(), out, indent=2)
    if not report.passed:
        bad = sum(not r.ok for r in report.rows)
        print(f"onnxport validate: {bad} output(s) differ beyond tolerance (largest {report.max_abs_diff:.3e})",
              file=sys.stderr)
        return 1
    print(f"passed: largest difference {report.max_abs_diff:.3e}")
    return 0


def _bench(args) -> int:
    import json

    from .runtime.bench import bench, parse_shapes

    report = bench(args.export_dir, parse_shapes(args.shapes), provider=args.provider, threads=args.threads,
                   fuse_attention=args.fuse_attention,
                   warmup=args.warmup, runs=args.runs)
    print(report.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report.to_dict(), out, indent=2)
    return 0


def _info(args) -> int:
    import json

    from .artifact.layout import served_clients
    from .artifact.spec_file import read_export_dir

    meta, spec = read_export_dir(args.export_dir)
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    lines = [f"{args.export_dir}: {spec.task}{' with past' if spec.with_past else ''} of a {spec.model_type} "
             f"{meta.get('architecture', '')}"]
    source = meta.get("source") or {}
    lines.append(f"  exported from {source.get('checkpoint', 'an unrecorded checkpoint')} with "
                 f"{meta.get('framework', '?')}, opset {meta.get('opset', '?')}, {meta.get('dtype', 'fp32')}"
                 f"{', int8 ' + str(meta['quantization'].get('recipe', '')) if meta.get('quantization') else ''}")
    q_gate = (meta.get("quantization") or {}).get("gate")
    if q_gate:
        q = meta["quantization"]
        top1 = (f"top-1 {q_gate['top1_agreement']:.2%} over {q_gate['rows']} predictions, "
                if q_gate.get("top1_agreement") is not None else "")
        lines.append(f"  int8 gate {q_gate['gate']}: {top1}cosine {q_gate['cosine']:.6f} "
                     f"({'passed' if q.get('passed') else 'FAILED'}; {len(q.get('kept_fp32') or [])} MatMuls kept "
                     f"in fp32{', %.2fx fp32 speed' % q['speedup'] if q.get('speedup') else ''})")
    versions = meta.get("versions") or {}
    if versions:
        lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    lines.append("  inputs:")
    lines += [f"    {t.name:<28} {t.dtype:<8} {list(t.shape)}" for t in spec.inputs]
    lines.append("  outputs:")
    lines += [f"    {t.name:<28} {t.dtype:<8} {list(t.shape)}" for t in spec.outputs]
    cross_encoder = meta.get("cross_encoder")
    if isinstance(cross_encoder, dict):
        prompts = cross_encoder.get("prompts") or {}
        lines.append(f"  cross-encoder: {cross_encoder.get('activation')} of {cross_encoder.get('num_labels')} "
                     f"logit(s) ({cross_encoder.get('source')}); pairs truncated to "
                     f"{cross_encoder.get('max_length') or 'the position table'} tokens"
                     f"{'; prompts ' + ', '.join(map(repr, prompts)) if prompts else ''}"
                     f"{'; default prompt ' + repr(default) if (default := cross_encoder.get('default_prompt_name')) else ''}")
    for op in meta.get("custom_ops") or []:
        lines.append(f"  custom op: {op.get('domain')}.{op.get('op_type')} v{op.get('version')} x{op.get('count')} "
                     "(carries its ONNX function body)")
    validation = meta.get("validation")
    if validation:
        rows = validation.get("rows", [])
        worst = max((r.get("max_abs_diff", 0.0) for r in rows), default=0.0)
        cases = sorted({r.get("case") for r in rows})
        longest = validation.get("longest_sequence")
        lines.append(f"  validation: {'passed' if validation.get('passed') else 'FAILED'}, largest difference "
                     f"{worst:.3e} over {len(rows)} outputs x cases ({', '.join(cases)})"
                     + (f", inputs up to {longest} tokens" if longest else ""))
    else:
        lines.append("  validation: not run (exported with --no-validate)")
    random_parts = meta.get("random_weights") or []
    lines.append("  random weights: " + (", ".join(random_parts) + f" (seed {meta.get('random_seed')})"
                                         if random_parts else "none (every weight came from the checkpoint)"))
    tokenizer = meta.get("tokenizer")
    if isinstance(tokenizer, dict):
        lines.append(f"  tokenizer: {tokenizer.get('class') or 'none'}"
                     f"{' — ' + tokenizer['warning'] if tokenizer.get('warning') else ''}")
        tokenizer_json = tokenizer.get("tokenizer_json")
        if isinstance(tokenizer_json, dict) and not tokenizer_json.get("exact"):
            lines.append(f"  tokenizer.json: {'inexact' if tokenizer_json.get('written') else 'none'} — "
                         f"{tokenizer_json.get('why')}")
    lines.append("  files: " + ", ".join(meta.get("files", [])))
    lines.append("  clients (the directory as it is):")
    lines += [f"    {client:<17} {'yes' if serves else 'no '}  {why}"
              for client, serves, why in served_clients(args.export_dir, meta)]
    print("\n".join(lines))
    return 0


# -- int8 quantization (`onnxport quantize`, `onnxport export --quantize int8`) -------------------------
def _add_quantize_thresholds(p) -> None:
    from .exporters.quantize import DEFAULT_MIN_COSINE, DEFAULT_MIN_TOP1

    p.add_argument("--per-channel", action="store_true",
                   help="one weight scale per output column (the same as --recipe dynamic-per-channel)")
    p.add_argument("--min-cosine", type=float, default=DEFAULT_MIN_COSINE,
                   help=f"fail below this cosine similarity of the head output vs fp32 (default {DEFAULT_MIN_COSINE})")
    p.add_argument("--min-top1", type=float, default=DEFAULT_MIN_TOP1,
                   help=f"fail below this top-1 agreement with fp32, a fraction (default {DEFAULT_MIN_TOP1})")


def _add_quantize_parser(commands) -> None:
    from .exporters.quantize import GATES, RECIPES

    p = commands.add_parser("quantize", help="int8 quantization of an export directory: the fastest recipe whose "
                                             "outputs agree with fp32")
    p.add_argument("export_dir", help="fp32 directory written by `onnxport export`")
    p.add_argument("--out", default=None, help="output directory (default: EXPORT_DIR-int8)")
    p.add_argument("--force", action="store_true",
                   help="replace the int8 files in a non-empty --out (a refused model leaves --out as it was)")
    p.add_argument("--calibration", metavar="TEXTS", default=None,
                   help="your texts, one a line (or JSONL with \"text\" / \"text_pair\"), tokenized with the export's "
                        "tokenizer: they calibrate static int8 and the gate measures agreement on them "
                        "(default: generated inputs)")
    p.add_argument("--recipe", choices=RECIPES, default=None,
                   help="use this recipe instead of searching (default: the fastest that passes the gate)")
    p.add_argument("--gate", choices=tuple(GATES), default=None,
                   help="what the thresholds judge (default: the task's; the README's int8 gate table): "
                        + "; ".join(f"{name}: {what}" for name, what in GATES.items()))
    _add_quantize_thresholds(p)


def _quantize(args) -> int:
    from .exporters.quantize import QuantizationError, quantize

    try:
        report = quantize(args.export_dir, args.out, per_channel=args.per_channel, min_cosine=args.min_cosine,
                          min_top1=args.min_top1, force=args.force, recipe=getattr(args, "recipe", None),
                          calibration=getattr(args, "calibration", None), gate=getattr(args, "gate", None))
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


# Subcommand -> handler; parsers are added in main().
COMMANDS = {
    "demo": _demo, "export": _export, "run": _run, "validate": _validate, "bench": _bench, "info": _info,
    "quantize": _quantize, "parity": _parity, "triton": _triton,
}

if __name__ == "__main__":
    sys.exit(main())
