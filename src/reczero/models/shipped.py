"""The tiny base shipped with the package: the default RecWorld's base, built by `reczero base`.

Why ship one: a base must first learn its world's language and rating prior (RESULTS.md, "base
levers"), which takes about 25 minutes on 2 CPU cores — more than the quick demo's whole budget.
The quick demo therefore starts from this one (about 1 MB: a 0.26M-parameter Qwen2 model and its
tokenizer), and everything after the base — RecZero, the teacher, SFT-only, RecOne, every
evaluation and claim — is trained and measured in the run. The full demo builds its own base.

What it is, checkably: ``provenance.json`` names the recipe (:data:`RECIPE`, the file in
``configs/cpu``) and the content hash of the data it was trained on
(:func:`reczero.data.schema.content_hash` of the default world's train split and items);
``config.yaml`` holds the resolved settings and ``README.md`` the model card. :func:`shipped_base`
hands it out only for a dataset with that same content hash: any other world (another seed,
another size) gets no shipped base, and the demo builds one.

Rebuild it with ``make shipped-base`` (= ``python -m reczero.models.shipped``): the default world
by ``reczero data synth`` with :data:`DATA`, then ``reczero base`` with :data:`RECIPE`, into
``src/reczero/pretrained/recworld-tiny`` (deterministic on one machine: the same bytes again).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NAME = "recworld-tiny"
RECIPE = "configs/cpu/base-recworld.yaml"          # relative to the package (and the repository's configs/)
DATA: dict[str, Any] = {"seed": 0, "max_samples": "valid=500,test=1000"}   # `reczero data synth`: the default world


def package_dir() -> Path:
    """Where the shipped base lives inside the installed package."""
    return Path(str(resources.files("reczero") / "pretrained" / NAME))


def provenance(path: str | Path | None = None) -> dict[str, Any]:
    """The shipped base's ``provenance.json`` (recipe, data hash, ...); ``{}`` if there is none."""
    from reczero.models.base import PROVENANCE

    f = Path(path or package_dir()) / PROVENANCE
    return json.loads(f.read_text()) if f.is_file() else {}


def shipped_base(data: str | Path) -> tuple[Path | None, str]:
    """``(path, why)``: the shipped base if it was trained on exactly ``data``'s content, else
    ``(None, reason)``; ``why`` says which, with the hashes."""
    from reczero.data.schema import content_hash

    found = provenance()
    if not found.get("data_hash"):
        return None, f"no shipped base in {package_dir()} (rebuild it: make shipped-base)"
    have = content_hash(data)
    if have != found["data_hash"]:
        return None, (f"the shipped base was trained on other data ({found['data_hash'][:19]}...; {data} is "
                      f"{have[:19]}...)")
    return package_dir(), f"the shipped base {NAME} ({found['recipe']}; trained on this data, {have[:19]}...)"


def resolved_recipe(data: str | Path, out: str | Path) -> Any:
    """:data:`RECIPE` resolved as ``reczero base --config RECIPE --data DATA --out OUT`` would."""
    from reczero.config import BaseConfig, resolve

    with resources.as_file(resources.files("reczero") / RECIPE) as f:
        return resolve(BaseConfig, f, {"data": str(data), "out": str(out)})


def rebuild(out: str | Path | None = None, work: str | Path | None = None) -> Path:
    """Synthesise the default world and build its base with :data:`RECIPE` into ``out``
    (default: the package's own copy)."""
    from reczero.config import SynthConfig, resolve
    from reczero.data.recworld import synth
    from reczero.models.base import build_base

    out = Path(out or package_dir())
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        data = Path(tmp) / "recworld"
        synth(resolve(SynthConfig, None, {**DATA, "out": str(data)}))
        built = Path(tmp) / "base"
        build_base(resolved_recipe(data, built), recipe=RECIPE)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(built, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reczero.models.shipped", description=(
        "Rebuild the tiny base shipped with reczero (the quick demo's starting point): synthesise the "
        f"default RecWorld and run `reczero base` with {RECIPE}."))
    parser.add_argument("--out", default=None, help="Where to write it (default: the package's own copy, "
                        f"{package_dir()}).")
    parser.add_argument("--work", default=None, help="Directory for the temporary world (default: the system's).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    path = rebuild(args.out, args.work)
    print(f"shipped base -> {path} (data {provenance(path)['data_hash']})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
