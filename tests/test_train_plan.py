"""Recipes: the paper recipes validate and print their plan on CPU, without weights or data."""

from pathlib import Path

import pytest

from reczero import cli
from reczero.config import GRPORecipe, resolve
from reczero.train.grpo import plan

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "reczero" / "configs"
PAPER = sorted((CONFIGS / "paper").glob("*.yaml"))


def test_there_are_paper_recipes():
    names = {p.stem for p in PAPER}
    assert {"reczero-book", "reczero-music", "reczero-yelp"} <= names


@pytest.mark.parametrize("recipe", PAPER, ids=lambda p: p.stem)
def test_paper_recipe_dry_run(recipe, capsys):
    command = {"recone": "sft", "r2ec": "r2ec"}.get(recipe.stem.split("-")[0], "grpo")
    rc = cli.main(["train", command, "--config", str(recipe), "--dry-run"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "world_size" in out


def test_plan_arithmetic():
    r = resolve(GRPORecipe, CONFIGS / "paper" / "reczero-book.yaml", {"dry_run": True})
    p = plan(r)
    # 8 GPUs x 8 completions per device = 64 completions = 8 prompts of G=8 per step (the paper's batch 8)
    assert p["world_size"] == 8 and p["completions_per_step"] == 64 and p["prompts_per_step"] == 8
    r = resolve(GRPORecipe, CONFIGS / "paper" / "reczero-book.yaml", {"dry_run": True, "max_steps": 10})
    assert plan(r)["steps"] == 10


def test_dry_run_does_not_import_torch():
    import subprocess
    import sys
    code = ("import sys; from reczero import cli\n"
            f"cli.main(['train', 'grpo', '--config', r'{CONFIGS / 'paper' / 'reczero-book.yaml'}', '--dry-run'])\n"
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_cpu_recworld_recipes_are_the_full_demo_stages(capsys):
    """The standalone RecWorld recipes hold exactly the full demo's base and RecZero settings."""
    from reczero.config import BaseConfig, load_yaml
    from reczero.demo import demo_settings

    full = demo_settings(quick=False)
    base = load_yaml(CONFIGS / "cpu" / "base-recworld.yaml")
    grpo = load_yaml(CONFIGS / "cpu" / "reczero-recworld.yaml")
    assert {k: v for k, v in base.items() if k not in ("data", "out")} == full["base"]
    assert {k: v for k, v in grpo.items() if k not in ("data", "model", "out")} == full["reczero"]
    resolve(BaseConfig, CONFIGS / "cpu" / "base-recworld.yaml", {})          # every key is a flag of `reczero base`
    assert cli.main(["train", "grpo", "--config", str(CONFIGS / "cpu" / "reczero-recworld.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "prompts_per_step         2" in out and "beta                     0.04" in out
    for name, stage in (("sft-recworld.yaml", "sft"), ("recone-recworld.yaml", "recone")):   # RecOne's two stages
        assert load_yaml(CONFIGS / "cpu" / name) == full[stage], name
    from reczero.config import SFTRecipe
    run = {"data": "d", "model": "m", "out": "o"}
    resolve(SFTRecipe, CONFIGS / "cpu" / "sft-recworld.yaml", {**run, "teacher_data": "t"})
    resolve(GRPORecipe, CONFIGS / "cpu" / "recone-recworld.yaml", run)
