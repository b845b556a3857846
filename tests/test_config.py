"""Config precedence (defaults < YAML < CLI flags < --set), key checking, coercion."""

import pytest
import yaml

from reczero import cli
from reczero.config import ConfigError, GRPORecipe, PrepareConfig, resolve, save_config


def test_precedence_defaults_yaml_cli_set(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data": "d", "model": "m", "out": "o", "temperature": 0.7,
                                      "learning_rate": 1e-4, "num_generations": 4}))
    # defaults only where neither YAML nor CLI say anything
    cfg = resolve(GRPORecipe, recipe)
    assert cfg.temperature == 0.7 and cfg.learning_rate == 1e-4 and cfg.beta == 0.0
    # a CLI flag beats the YAML; --set beats both
    args = cli.build_parser().parse_args(
        ["train", "grpo", "--config", str(recipe), "--temperature", "0.9", "--set", "learning_rate=3e-5"])
    from reczero.config import from_args
    cfg = from_args(GRPORecipe, args)
    assert cfg.temperature == 0.9          # CLI > YAML
    assert cfg.learning_rate == 3e-5       # --set > YAML
    assert cfg.num_generations == 4        # YAML > default
    assert cfg.max_completion_length == GRPORecipe.__dataclass_fields__["max_completion_length"].default


def test_flag_not_typed_does_not_override_yaml(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: d\nmodel: m\nout: o\nnum_generations: 4\nper_device_train_batch_size: 4\n")
    args = cli.build_parser().parse_args(["train", "grpo", "--config", str(recipe)])
    from reczero.config import from_args
    assert from_args(GRPORecipe, args).num_generations == 4


def test_unknown_key_names_nearest(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: d\nmodel: m\nout: o\ntemprature: 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'temprature' \(did you mean 'temperature'\?\)"):
        resolve(GRPORecipe, recipe)
    with pytest.raises(ConfigError, match="did you mean 'history'"):
        resolve(PrepareConfig, None, {"source": "yelp", "input": "x", "out": "y"}, ["histroy=3"])


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="num_generations"):
        resolve(GRPORecipe, None, {"data": "d", "model": "m", "out": "o"}, ["num_generations=abc"])
    with pytest.raises(ConfigError, match="divisible by num_generations"):
        resolve(GRPORecipe, None, {"data": "d", "model": "m", "out": "o", "per_device_train_batch_size": "6"})
    with pytest.raises(ConfigError, match="split_ratios"):
        resolve(PrepareConfig, None, {"source": "yelp", "input": "x", "out": "y", "split_ratios": "0.5,0.2"})
    with pytest.raises(ConfigError, match="unknown key 'tests'"):
        resolve(PrepareConfig, None, {"source": "yelp", "input": "x", "out": "y", "max_samples": "tests=3"})


def test_optional_and_bool_coercion():
    cfg = resolve(GRPORecipe, None, {"data": "d", "model": "m", "out": "o"}, ["max_error=null", "use_lora=true"])
    assert cfg.max_error is None and cfg.use_lora is True
    with pytest.raises(ConfigError):
        resolve(GRPORecipe, None, {"data": "d", "model": "m", "out": "o"}, ["use_lora=maybe"])


def test_resolved_config_round_trips(tmp_path):
    cfg = resolve(GRPORecipe, None, {"data": "d", "model": "m", "out": "o", "temperature": "0.8"})
    path = save_config(cfg, tmp_path)
    again = resolve(GRPORecipe, path)
    assert again == cfg


def test_prompt_options_are_checked_against_the_trained_run(tmp_path, caplog):
    from reczero.config import EvalConfig, GRPORecipe, prompt_mismatch, save_config, warn_prompt_mismatch

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    save_config(GRPORecipe(data="d", model="m", out=str(run), prompt_averages="end", prompt_history=5), run)
    same = EvalConfig(model=str(run), data="d", prompt_averages="end", prompt_history=5, max_prompt_tokens=64)
    assert prompt_mismatch(same, run) == [] and prompt_mismatch(same, run / "model") == []
    other = EvalConfig(model=str(run), data="d")
    assert prompt_mismatch(other, run) == ["prompt_history: trained with 5, now 10",
                                           "prompt_averages: trained with 'end', now 'inline'"]
    with caplog.at_level("WARNING"):
        warn_prompt_mismatch(other, run / "model")
    assert "prompt_averages: trained with 'end', now 'inline'" in caplog.text
    assert prompt_mismatch(other, tmp_path / "no-run") == []       # a hub id or bare folder: nothing recorded
