"""The tiny base shipped with the package (reczero.models.shipped): it loads, it names its recipe
and the content hash of the data it was trained on, that hash is the default world's, and the
quick demo takes it only for that world."""

from __future__ import annotations

import pytest
import yaml

from reczero.config import to_dict
from reczero.models import shipped


@pytest.fixture(scope="module")
def default_world(tmp_path_factory):
    """The default RecWorld, synthesised as `make shipped-base` does."""
    from reczero.config import SynthConfig, resolve
    from reczero.data.recworld import synth

    out = tmp_path_factory.mktemp("default-world") / "recworld"
    synth(resolve(SynthConfig, None, {**shipped.DATA, "out": str(out)}))
    return out


def test_the_shipped_base_loads_and_generates():
    import torch
    from transformers import AutoTokenizer

    from reczero.models import load_model

    path = shipped.package_dir()
    assert (path / "model.safetensors").stat().st_size < 2_000_000            # about 1 MB, as promised
    model, tokenizer = load_model(str(path))
    assert type(AutoTokenizer.from_pretrained(path)) is type(tokenizer)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Rate it."}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4


def test_it_names_its_recipe_and_the_hash_of_the_default_world(default_world):
    from reczero.data.schema import content_hash

    found = shipped.provenance()
    assert found["recipe"] == shipped.RECIPE
    assert found["data_hash"] == content_hash(default_world)       # trained on exactly this world's text
    recorded = yaml.safe_load((shipped.package_dir() / "config.yaml").read_text())
    expected = to_dict(shipped.resolved_recipe("d", "o"))
    assert {k: v for k, v in recorded.items() if k not in ("data", "out")} == \
           {k: v for k, v in expected.items() if k not in ("data", "out")}   # the recipe as it is now


def test_the_demo_takes_it_only_for_its_world(default_world, world, tmp_path, capsys):
    from reczero.config import DemoConfig
    from reczero.demo import base_stage

    path, why = shipped.shipped_base(default_world)
    assert path == shipped.package_dir() and "trained on this data" in why
    none, why = shipped.shipped_base(world)                          # another world: no shipped base
    assert none is None and "other data" in why
    assert base_stage(DemoConfig(), {"base": {"shipped": True}}, default_world, tmp_path / "base") == 0
    assert "copied" in capsys.readouterr().out
    assert (tmp_path / "base" / "model.safetensors").read_bytes() == (path / "model.safetensors").read_bytes()


def test_the_quick_demo_builds_the_same_base_when_the_shipped_one_does_not_fit():
    from reczero.config import load_yaml
    from reczero.demo import demo_settings

    quick = demo_settings(quick=True)
    recipe = load_yaml(shipped.package_dir().parents[1] / shipped.RECIPE)
    assert {k: v for k, v in quick["base"].items() if k != "shipped"} == \
           {k: v for k, v in recipe.items() if k not in ("data", "out")}
    assert quick["data"] == shipped.DATA                  # the world the shipped base was built on


def test_the_fallback_base_is_built_with_the_shipped_recipe_not_the_demos_prompt(world, tmp_path, monkeypatch):
    """The quick demo prompts its models with a shorter prompt; a base it must build itself (another
    world) is still the shipped base's recipe, prompt included."""
    from reczero import models
    from reczero.config import DemoConfig
    from reczero.demo import base_stage, demo_settings

    built = []
    monkeypatch.setattr(models, "build_base", lambda cfg: built.append(cfg) or 0)
    quick = demo_settings(quick=True)
    assert quick["prompt"]["prompt_history"] < 10                     # the quick demo's own, shorter prompt
    assert base_stage(DemoConfig(), quick, world, tmp_path / "base") == 0
    expected = to_dict(shipped.resolved_recipe(str(world), str(tmp_path / "base")))
    assert {k: v for k, v in to_dict(built[0]).items() if k != "seed"} == \
           {k: v for k, v in expected.items() if k != "seed"}


def test_the_rebuild_command_writes_a_base_with_its_provenance(tmp_path, monkeypatch, capsys):
    """`make shipped-base` (= python -m reczero.models.shipped) end to end, on a tiny world and recipe."""
    from reczero.config import BaseConfig, resolve
    from reczero.data.schema import content_hash

    monkeypatch.setattr(shipped, "DATA", {"seed": 0, "users": 30, "items": 20, "max_samples": "valid=8,test=8"})
    monkeypatch.setattr(shipped, "resolved_recipe", lambda data, out: resolve(BaseConfig, None, {
        "data": str(data), "out": str(out), "pretrain_epochs": 0.05, "format_warmup_steps": 1, "batch_size": 4,
        "seq_len": 64, "eval_samples": 2, "vocab_size": 400}))
    seen = {}
    real_hash = content_hash

    def record(data):
        seen["hash"] = real_hash(data)
        return seen["hash"]

    monkeypatch.setattr("reczero.data.schema.content_hash", record)
    assert shipped.main(["--out", str(tmp_path / "base"), "--work", str(tmp_path)]) == 0
    found = shipped.provenance(tmp_path / "base")
    assert found["recipe"] == shipped.RECIPE and found["data_hash"] == seen["hash"]
    assert (tmp_path / "base" / "model.safetensors").is_file() and "shipped base ->" in capsys.readouterr().out
    assert found["data_hash"] in (tmp_path / "base" / "README.md").read_text()    # the card names it too
