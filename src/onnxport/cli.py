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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
