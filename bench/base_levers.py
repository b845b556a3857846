"""Compare tiny bases built with different levers: the rating prior they carry and what reaches ``<rate>``.

Each base directory (``reczero base --out DIR``) holds ``config.yaml`` and ``log.jsonl``; this script
reads their measurements (validation samples, see ``reczero/models/probe.py``) and prints one
Markdown row per base: the settings that differ between them, the prior read off after pretraining
(user page, item page, both combined), the read-off at the answer's ``<rate>`` after the warm-up,
and the greedy answers (MAE, correlation, distinct ratings) beside the constants on the same samples.

    python bench/base_levers.py /tmp/x/base1 /tmp/x/base2 ... [--record bench/RESULTS.md]

Build the bases first, e.g. on the full demo's world (``reczero data synth`` with the
``data:`` section of ``configs/cpu/demo-full.yaml``)::

    reczero base --data DATA --out B1 --pretrain-epochs 1.5 --format-warmup-steps 120 --eval-samples 200 --no-rating-lists --rating-weight 1
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import UTC, datetime
from pathlib import Path

import yaml

LEVERS = ("size", "pretrain_epochs", "format_warmup_steps", "rating_weight", "rating_lists",
          "prompt_history", "prompt_item_reviews", "prompt_snippet_chars")
SECTION = "## base levers"


def measurements(base: Path) -> dict[str, dict]:
    out = {}
    for line in (base / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("stage", "").startswith("eval_"):
            out[record["stage"][5:]] = record
    return out


PAGE = ("Target item: Iron Window [romance]\nDescription: A decent romance story.\nItem average: {avg} (40 ratings)\n"
        "Earlier reviews of the item (oldest first):\n{lines}- rated ")


def sensitivity(base: Path) -> tuple[float, float]:
    """How far the expected next rating of an item page moves between a shown average of 2.0 and
    4.5, and between four earlier ratings of 1 and of 5 (0: the prior ignores its context)."""
    import numpy as np

    from reczero.data import schema
    from reczero.models import load_model, probe

    model, tokenizer = load_model(base)
    scale = schema.RatingScale(1, 5)   # RecWorld's scale (the page texts above are written for it)
    grid = np.asarray(probe.rating_grid(scale))

    def ev(text: str) -> float:
        p = np.exp(probe.grid_logprobs(model, tokenizer, [text], scale)[0])
        return float(p @ grid / p.sum())

    by_avg = ev(PAGE.format(avg="4.5", lines="")) - ev(PAGE.format(avg="2.0", lines=""))
    by_lines = ev(PAGE.format(avg="3.5", lines="- rated 5\n" * 4)) - ev(PAGE.format(avg="3.5", lines="- rated 1\n" * 4))
    return by_avg, by_lines


def cell(m: dict | None) -> str:
    if not m:
        return "–"
    corr = "–" if m.get("correlation") is None else f"{m['correlation']:.2f}"   # None: constant predictions
    return f"{m['mae']:.3f} / {corr} / {m['distinct']}"


def table(bases: list[Path]) -> str:
    configs = {b: yaml.safe_load((b / "config.yaml").read_text()) for b in bases}
    varying = [k for k in LEVERS if len({str(c.get(k)) for c in configs.values()}) > 1] or ["size"]
    head = ["base", *varying, "user prior", "item prior", "both", "Δ avg", "Δ ratings", "slot", "greedy", "format",
            "median", "mean"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in bases:
        m, c = measurements(b), configs[b]
        consts = m.get("constants", {})
        greedy = m.get("greedy")
        by_avg, by_lines = sensitivity(b)
        rows.append("| " + " | ".join([
            b.name, *(str(c.get(k)) for k in varying),
            cell(m.get("after_pretrain_prior") or m.get("after_pretrain")), cell(m.get("after_pretrain_item_prior")),
            cell(m.get("after_pretrain_both_prior")), f"{by_avg:+.2f}", f"{by_lines:+.2f}", cell(m.get("slot")), cell(greedy),
            f"{greedy['format_rate']:.0%}" if greedy else "–",
            f"{consts.get('mae_train_median', float('nan')):.3f}", f"{consts.get('mae_train_mean', float('nan')):.3f}",
        ]) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bases", nargs="+", type=Path, help="base model directories built by `reczero base`")
    parser.add_argument("--record", type=Path, help="append the table to this Markdown file under '## base levers'")
    args = parser.parse_args(argv)
    text = (f"`python bench/base_levers.py {' '.join(str(b) for b in args.bases)}` — "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}. Cells: MAE / correlation / distinct "
            "ratings on the bases' validation samples (read-offs: argmax over the rating grid; greedy: the "
            "model's own answer). Δ avg / Δ ratings: how far the expected next rating of an item page moves "
            "between a shown average of 2.0 and 4.5 / between four earlier ratings of 1 and of 5 (after the "
            "warm-up; 0 = the prior ignores its context).\n\n" + table(args.bases))
    print(text)
    if args.record:
        body = args.record.read_text() if args.record.is_file() else ""
        if SECTION not in body:
            body = body.rstrip() + f"\n\n{SECTION}\n"
        args.record.write_text(body.rstrip() + "\n\n" + text + "\n")


if __name__ == "__main__":
    main()
