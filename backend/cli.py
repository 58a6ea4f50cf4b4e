"""Command line: ``python -m backend <command> …``.

Each command lives in the module that owns the concept; the module provides
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported lazily so that
``--help`` stays fast and one command's heavy imports don't slow another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "train": ("backend.training.train", "train the custom extreme-point model"),
    "pretrain-proposals": ("backend.proposals.pretrain",
                           "pretrain the class-agnostic base of per-project proposal models on synthetic scenes"),
    "evaluate": ("backend.evaluation.evaluate", "compare extreme points, SAM boxes and GrabCut on a COCO dataset"),
    "download-sam": ("backend.sam_checkpoints", "download an official SAM checkpoint (sha256-verified)"),
    "worker": ("backend.jobs.worker", "run embeddings ahead, training and pre-annotation jobs from the RQ queues (REDIS_URL)"),
    "preannotate": ("backend.preannotation.command", "store mask predictions in Label Studio for a project's tasks"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage / error and exits
    module = importlib.import_module(COMMANDS[argv[0]][0])
    command_parser = argparse.ArgumentParser(prog=f"python -m backend {argv[0]}", description=COMMANDS[argv[0]][1])
    module.add_arguments(command_parser)
    return module.run(command_parser.parse_args(argv[1:]))
