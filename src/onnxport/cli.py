"""The `onnxport` command line."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onnxport", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="build tiny models of each family, run every head, print a table")
    _add_export_parser(commands)
    args = parser.parse_args(argv)
    level = logging.INFO if args.verbose or args.command == "export" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main()
    if args.command == "export":
        return _export(args)
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
    p.add_argument("--atol", type=float, default=None, help="validation tolerance (default: 1e-4)")


def _export(args) -> int:
    from .exporters import ExportError, export
    from .exporters.validate import ValidationError

    try:
        report = export(
            args.checkpoint, args.out, framework=args.framework, task=args.task, opset=args.opset,
            with_past=args.with_past, validate=not args.no_validate, force=args.force, atol=args.atol,
        )
    except (ExportError, ValidationError, ValueError, FileNotFoundError) as error:
        print(f"onnxport export: error: {error}", file=sys.stderr)
        return 1
    if report.validation is not None:
        print(report.validation.table())
    print(f"exported {report.task} ({report.framework}, opset {report.opset}) to {report.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
