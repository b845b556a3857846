"""The CLI answers --help for every subcommand quickly and without heavy imports."""

import subprocess
import sys

import pytest

from reczero import cli

PATHS = [c.path for c in cli.COMMANDS]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p))
def test_every_subcommand_has_help(path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: reczero" in out


def test_help_does_not_import_torch():
    code = ("import sys; from reczero import cli\n"
            "try:\n    cli.main(['train', 'grpo', '--help'])\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'pandas') if m in sys.modules]\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_config_error_is_one_line_exit_2(capsys):
    rc = cli.main(["train", "grpo", "--data", "d", "--model", "m", "--out", "o", "--set", "temprature=1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "did you mean 'temperature'" in err and "Traceback" not in err


@pytest.mark.parametrize("cmd", cli.COMMANDS, ids=lambda c: " ".join(c.path))
def test_every_command_names_a_function_that_exists(cmd):
    """Every row of the command table resolves (the CLI has no "not implemented" path)."""
    assert callable(cli._load_target(cmd))
