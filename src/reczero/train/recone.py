"""RecOne: cold-start SFT on teacher reasoning, then the RecZero GRPO from the SFT model.

One command, two stage runs under ``OUT/``: ``OUT/sft`` and ``OUT/grpo`` (each a normal run
directory). A finished stage is skipped on a rerun; an interrupted one is resumed from its last
checkpoint. To redo a stage, remove its directory.
The final model is ``OUT/grpo/model``; ``OUT/model`` is not duplicated.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from reczero.config import GRPORecipe, SFTRecipe, resolve
from reczero.train import common

log = logging.getLogger(__name__)


def stage_recipe(cls, yaml_path, common_flags: dict, sets, out: Path):
    """Resolve one stage's recipe (defaults < its YAML < the shared flags < its --X-set) and decide resume."""
    paths = common.RunPaths(out)
    flags = {**common_flags, "out": str(out)}
    if common.last_checkpoint(paths) is not None or paths.is_done():
        flags["resume"] = True
    return resolve(cls, yaml_path, flags, sets)


def recone(data: str, model: str, teacher_data: str, out: str, *, sft_config=None, grpo_config=None,
           sft_set=(), grpo_set=(), template: str | None = None) -> Path:
    """Run (or finish) both stages; returns the GRPO run directory."""
    from reczero.train.grpo import train_grpo
    from reczero.train.sft import train_sft

    root = Path(out)
    shared = {"data": data}
    if template:
        shared["template"] = template
    sft = stage_recipe(SFTRecipe, sft_config, {**shared, "model": model, "teacher_data": teacher_data},
                       sft_set, root / "sft")
    if common.RunPaths(root / "sft").is_done():
        print(f"[recone] SFT stage already finished: {root / 'sft'}")
    else:
        print("[recone] stage 1/2: SFT on teacher reasoning")
        train_sft(sft)
    grpo = stage_recipe(GRPORecipe, grpo_config, {**shared, "model": str(root / "sft")}, grpo_set, root / "grpo")
    if common.RunPaths(root / "grpo").is_done():
        print(f"[recone] GRPO stage already finished: {root / 'grpo'}")
    else:
        print("[recone] stage 2/2: GRPO from the SFT model")
        train_grpo(grpo)
    return root / "grpo"


def recone_cli(args: argparse.Namespace) -> int:
    run = recone(args.data, args.model, args.teacher_data, args.out, sft_config=args.sft_config,
                 grpo_config=args.grpo_config, sft_set=args.sft_set, grpo_set=args.grpo_set, template=args.template)
    print(f"RecOne model: {run / 'model'}")
    return 0
