"""The ``reczero`` command: argparse subcommands, each a thin call into a library function.

Each subcommand is one row of :data:`COMMANDS`: its config dataclass (whose fields become the
flags, with their help) and the ``module:function`` that does the work. Modules are imported only
when their command runs, so ``reczero --help`` never imports torch. A ``ReczeroError`` (bad input,
bad config) is printed as one line and exits 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass
from typing import Any

from reczero import __version__
from reczero import config as C
from reczero.errors import ReczeroError

log = logging.getLogger("reczero")


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]          # ("data", "prepare")
    config: type | None            # the options dataclass, or None for commands with own args
    target: str                    # "module:function", called with the resolved config
    help: str
    recipe: bool = False           # accepts --config YAML / --set key=value


COMMANDS: list[Command] = [
    Command(("data", "prepare"), C.PrepareConfig, "reczero.data.prepare:prepare",
            "Prepare a raw dump (Amazon 2014/2018/2023, Yelp, MovieLens, any table) into the prepared-dataset layout.", True),
    Command(("data", "synth"), C.SynthConfig, "reczero.data.recworld:synth",
            "Generate the RecWorld synthetic world (with its Bayes floor) as a prepared dataset.", True),
    Command(("data", "download"), None, "reczero.data.download:download_cli",
            "Download a public dump (MovieLens, Amazon 2018/2023 categories); --list shows what is known."),
    Command(("base",), C.BaseConfig, "reczero.models:build_base",
            "Build the tiny base model: tokenizer, pretraining on the dataset's text, format warm-up.", True),
    Command(("train", "grpo"), C.GRPORecipe, "reczero.train.grpo:train_grpo",
            "RecZero: GRPO with rule-based format and answer rewards (TRL GRPOTrainer).", True),
    Command(("train", "sft"), C.SFTRecipe, "reczero.train.sft:train_sft",
            "Supervised fine-tuning on teacher reasoning (TRL SFTTrainer, assistant-only loss).", True),
    Command(("train", "recone"), None, "reczero.train.recone:recone_cli",
            "RecOne: SFT on teacher reasoning, then GRPO from the SFT model (each stage resumable)."),
    Command(("train", "r2ec"), C.R2ecRecipe, "reczero.train.r2ec:train_r2ec",
            "R2ec: an LLM that reasons, then ranks every item with its hidden state, trained by RecPO (TRL GRPOTrainer).", True),
    Command(("teacher",), C.TeacherConfig, "reczero.teacher:run_teacher",
            "Cold-start reasoning samples from an OpenAI-compatible endpoint or the heuristic teacher.", True),
    Command(("baseline",), C.BaselineConfig, "reczero.baselines:run_baseline",
            "Classic baselines (constants, averages, biased MF, SVD++) written like model runs.", True),
    Command(("eval",), C.EvalConfig, "reczero.evaluate:evaluate",
            "Evaluate a model: batched generation, rating parsing with fallback, MAE/RMSE.", True),
    Command(("serve",), C.ServeConfig, "reczero.serve:serve",
            "Serve runs over HTTP: /v1/predict, /v1/recommend, OpenAI-compatible /v1/chat/completions, /metrics.", True),
    Command(("report",), None, "reczero.report:report_cli",
            "One HTML/Markdown report (tables and plots) from run directories."),
    Command(("demo",), C.DemoConfig, "reczero.demo:demo",
            "The whole pipeline on the embedded default: data, baselines, base, RecZero, teacher, SFT, RecOne, eval, report; "
            "and the ranking part (--task ranking): popularity, SASRec, R2ec-tiny and its ablations, the ceiling."),
]


def _own_arguments(cmd: Command, parser: argparse.ArgumentParser) -> None:
    """Commands whose arguments are not a single config dataclass."""
    if cmd.path == ("data", "download"):
        parser.add_argument("name", nargs="?", help="Dataset name (see --list), e.g. ml-latest-small, amazon2023:Video_Games.")
        parser.add_argument("--out", help="Output directory (files land in OUT/NAME/).")
        parser.add_argument("--list", action="store_true", help="List the known datasets and exit.")
        parser.add_argument("--force", action="store_true", help="Download again even if complete files exist.")
        parser.add_argument("--base-url", default=None, help="Mirror to download from instead of the official host (same paths).")
    elif cmd.path == ("report",):
        parser.add_argument("runs", nargs="+", metavar="DIR", help="Run directories (or directories holding runs) to compare.")
        parser.add_argument("--out", required=True, help="Output directory for report.html, report.md and the PNGs.")
        parser.add_argument("--split", default="test", help="Split whose metrics are reported (default: test).")
        parser.add_argument("--title", default="reczero report", help="Report title.")
    elif cmd.path == ("train", "recone"):
        parser.add_argument("--data", required=True, help="Prepared dataset directory.")
        parser.add_argument("--model", required=True, help="Model to start from (HF id, local path or run dir).")
        parser.add_argument("--teacher-data", required=True, help="Teacher JSONL from `reczero teacher`.")
        parser.add_argument("--out", required=True, help="Run directory; holds sft/ and grpo/ stage runs.")
        parser.add_argument("--sft-config", default=None, metavar="YAML", help="SFT recipe (keys of `train sft`).")
        parser.add_argument("--grpo-config", default=None, metavar="YAML", help="GRPO recipe (keys of `train grpo`).")
        parser.add_argument("--sft-set", action="append", default=[], metavar="KEY=VALUE", help="Override an SFT field (repeatable).")
        parser.add_argument("--grpo-set", action="append", default=[], metavar="KEY=VALUE", help="Override a GRPO field (repeatable).")
        parser.add_argument("--template", default=None, choices=["structured", "think-answer", "rate-only"],
                            help="Answer template for both stages.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reczero",
        description="Recommenders that think before they recommend: data, training (RecZero, RecOne), "
                    "baselines, evaluation and reports.",
    )
    parser.add_argument("--version", action="version", version=f"reczero {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    parser.add_argument("-q", "--quiet", action="store_true", help="Warnings and errors only.")
    subparsers: dict[tuple[str, ...], Any] = {(): parser.add_subparsers(dest="command", metavar="COMMAND")}
    groups = {"data": "Prepare, synthesise or download datasets.", "train": "Train a model (grpo, sft, recone, r2ec)."}
    for cmd in COMMANDS:
        for depth in range(1, len(cmd.path)):
            prefix = cmd.path[:depth]
            if prefix not in subparsers:
                grp = subparsers[prefix[:-1]].add_parser(prefix[-1], help=groups.get(prefix[-1], ""),
                                                         description=groups.get(prefix[-1], ""))
                subparsers[prefix] = grp.add_subparsers(dest=f"command_{depth}", metavar="COMMAND", required=True)
        sub = subparsers[cmd.path[:-1]].add_parser(
            cmd.path[-1], help=cmd.help, description=cmd.help,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter if cmd.config is None else argparse.HelpFormatter,
        )
        if cmd.config is not None:
            if cmd.recipe:
                C.add_recipe_arguments(sub)
            C.add_arguments(sub, cmd.config)
        else:
            _own_arguments(cmd, sub)
        sub.set_defaults(_command=cmd)
    return parser


def _load_target(cmd: Command):
    """The command's function (its module is imported only now, when the command runs)."""
    module, _, func = cmd.target.partition(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    cmd: Command | None = getattr(args, "_command", None)
    if cmd is None:
        parser.print_help()
        return 0
    name = " ".join(cmd.path)
    try:
        arg = C.from_args(cmd.config, args) if cmd.config is not None else args
        result = _load_target(cmd)(arg)
    except ReczeroError as err:
        print(f"reczero {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reczero {name}: interrupted (rerun the same command to resume where supported)", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
