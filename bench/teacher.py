"""The heuristic teacher on the default RecWorld: its weights, its error, its share rationalised, its length.

Usage::

    python bench/teacher.py fit      [--data DIR]            # least squares for the teacher's constants
    python bench/teacher.py measure  [--data DIR] [--record] # test-split figures (bench/RESULTS.md "## teacher")

``--data`` defaults to ``/tmp/demo-full2/data`` when it exists (the demo's world), else the demo's
world is generated with ``reczero data synth`` into a temporary folder (the ``data:`` section of
``configs/cpu/demo-full.yaml``: the default world, ``--max-samples valid=500,test=1000``).

* ``fit`` reads every train sample as the teacher does (:func:`read_evidence`, the prompt's windows:
  10 history entries, 5 item reviews) and solves least squares of ``rating - base`` on the number of
  liked and of disliked target attributes and a one-hot of the description's quality word. It
  prints the weights; the teacher's constants are these, rounded to one decimal.
* ``measure`` scores on the test split, side by side: the teacher's rating without noise and with
  its default noise (the first answer of ``reczero teacher --heuristic``), the prompt-only baselines
  (``user``, ``item``, ``avg-blend``, as ``reczero baseline`` computes them), the share of samples
  whose first answer is off by more than the tolerance 0.5 (rationalised) for a few noise levels,
  and the length of the final completions (accepted or rationalised) in words and, when
  ``/tmp/demo-full2/base`` exists, in tokens of the tiny base's tokenizer.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

from reczero.baselines import make_baseline
from reczero.cli import main as reczero_main
from reczero.data import schema as S
from reczero.teacher import choose_samples
from reczero.teacher.heuristic import QUALITY, HeuristicTeacher, read_evidence

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DEMO_DATA, DEMO_BASE = Path("/tmp/demo-full2/data"), Path("/tmp/demo-full2/base")
SHOWN = (10, 5)             # PromptOptions' prompt_history, prompt_item_reviews
TOLERANCE = 0.5
NOISES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def _records(data: Path, split: str) -> tuple[list[dict], np.ndarray]:
    frame = S.load_split(data, split)
    return frame.to_dict("records"), frame.rating.to_numpy(float)


def cmd_fit(data: Path) -> str:
    scale = S.rating_scale(S.read_manifest(data))
    samples, y = _records(data, "train")
    words = sorted({w for w in QUALITY})
    X, base = np.zeros((len(samples), 2 + len(words))), np.zeros(len(samples))
    for k, sample in enumerate(samples):
        ev = read_evidence(sample, scale, *SHOWN)
        base[k] = ev.base
        X[k, 0] = sum(ev.stance.get(a) == 1 for a in ev.item_attributes)
        X[k, 1] = sum(ev.stance.get(a) == -1 for a in ev.item_attributes)
        if ev.quality:
            X[k, 2 + words.index(ev.quality)] = 1.0
    seen = np.flatnonzero(X.any(0) | (np.arange(X.shape[1]) < 2))
    w = np.linalg.lstsq(X[:, seen], y - base, rcond=None)[0]
    names = ["liked", "disliked", *words]
    lines = [f"least squares of rating - base on {len(y)} train samples ({data}):"]
    lines += [f"  {names[j]:10s} {w[i]:+.3f}   ({int(X[:, j].sum())} occurrences)" for i, j in enumerate(seen)]
    # The teacher rounds the total half up to the scale, so a common shift of the quality offsets
    # (the MAE-optimal median is not the least-squares mean) is chosen on train as well.
    quality = np.arange(len(seen)) >= 2
    maes = {}
    for shift in np.round(np.arange(-0.3, 0.31, 0.05), 2):
        weights = np.round(w + shift * quality, 1)
        total = np.floor((base + X[:, seen] @ weights) * 10 + 0.5 + 1e-9) / 10
        maes[shift] = _mae(np.clip(np.floor(total + 0.5 + 1e-9), scale.lo, scale.hi), y)
    best = min(maes, key=maes.get)
    lines.append("train MAE of the rounded teacher by shift of the quality offsets: "
                 + ", ".join(f"{s:+.2f}: {m:.4f}" for s, m in maes.items()))
    lines.append(f"constants (shift {best:+.2f}, rounded to 0.1): " + ", ".join(
        f"{names[j]} {v:+.1f}" for j, v in zip(seen, np.round(w + best * quality, 1), strict=True)))
    return "\n".join(lines)


def _mae(pred, y) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - y)))


def _tokenizer():
    if not (DEMO_BASE / "tokenizer.json").is_file():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(DEMO_BASE))


def _completions(teacher: HeuristicTeacher, samples: list[dict], y: np.ndarray, tok) -> tuple[list[str], str]:
    """The final completions (the first answer, or the rationalised one when it is off) and their lengths."""
    texts = [teacher.write(s, None if abs(teacher.predict(s) - r) <= TOLERANCE else r)
             for s, r in zip(samples, y, strict=True)]
    words = np.array([len(t.split()) for t in texts])
    text = f"words median {np.median(words):.0f}, max {words.max()}"
    if tok is None:
        return texts, text + "; no tiny base tokenizer found"
    tokens = np.array([len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts])
    return texts, text + f"; tokens of the tiny base's tokenizer median {np.median(tokens):.0f}, max {tokens.max()}"


def cmd_measure(data: Path) -> str:
    scale = S.rating_scale(S.read_manifest(data))
    train, test = S.load_split(data, "train"), S.load_split(data, "test")
    samples, y = _records(data, "test")
    rows = []
    for method in ("user", "item", "avg-blend"):
        pred = make_baseline(method, scale=scale, seed=0).fit(train, None).predict(test)
        rows.append((f"`{method}` baseline", _mae(pred, y), None))
    default = HeuristicTeacher("structured", scale, seed=0, shown_history=SHOWN[0], shown_reviews=SHOWN[1])
    shares = {}
    for noise in NOISES:
        teacher = HeuristicTeacher("structured", scale, seed=0, noise=noise, shown_history=SHOWN[0],
                                   shown_reviews=SHOWN[1])
        pred = np.array([teacher.predict(s) for s in samples])
        shares[noise] = float(np.mean(np.abs(pred - y) > TOLERANCE))
        if noise in (0.0, default.noise):
            label = "teacher, no noise" if noise == 0 else f"teacher, noise {noise} (its first answer)"
            rows.append((label, _mae(pred, y), shares[noise]))
    tok = _tokenizer()
    texts, lengths = _completions(default, samples, y, tok)
    asked = choose_samples(str(data), "train", 1000, 0)          # what `reczero teacher --n 1000` asks
    asked_y = np.array([s["rating"] for s in asked], float)
    _, asked_lengths = _completions(default, asked, asked_y, tok)
    asked_share = np.mean([abs(default.predict(s) - r) > TOLERANCE for s, r in zip(asked, asked_y, strict=True)])
    manifest = S.read_manifest(data)
    floor = manifest.get("bayes", {}).get("test", {}).get("mae")
    lines = [f"{len(y)} test samples of {data}; tolerance {TOLERANCE}.", "",
             "| predictor | test MAE | share off by > 0.5 (rationalised) |", "|---|---|---|"]
    lines += [f"| {name} | {mae:.4f} | {'' if share is None else f'{100 * share:.1f}%'} |" for name, mae, share in rows]
    if floor is not None:
        lines.append(f"| Bayes floor (manifest) | {floor:.4f} | |")
    lines += ["", "Share rationalised by noise: " + ", ".join(f"{n}: {100 * s:.1f}%" for n, s in shares.items()) + ".",
              f"Final completions (structured, accepted or rationalised) of these test samples: {lengths}.",
              f"The {len(asked)} train samples `reczero teacher --heuristic --n 1000` asks: "
              f"{100 * asked_share:.1f}% rationalised; {asked_lengths}.",
              "", "Example (test sample 0):", "", "```", texts[0], "```"]
    return "\n".join(lines)


def record(command: str, body: str) -> None:
    """Write (or replace) the ``## teacher`` section of bench/RESULTS.md; other sections untouched."""
    block = (f"## teacher\n\n`{command}` — {date.today().isoformat()}, 2 CPU cores shared with other jobs "
             f"(load average {os.getloadavg()[0]:.1f}); the figures are deterministic.\n\n{body}\n")
    content = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if "\n## teacher\n" in content:
        head, rest = content.split("\n## teacher\n", 1)
        nxt = rest.find("\n## ")
        content = head + "\n" + block + ("" if nxt < 0 else rest[nxt:])
    else:
        content = content.rstrip() + "\n\n" + block
    RESULTS.write_text(content)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["fit", "measure"])
    parser.add_argument("--data", type=Path, default=DEMO_DATA if (DEMO_DATA / S.MANIFEST).is_file() else None,
                        help="A prepared default RecWorld (default: /tmp/demo-full2/data, else generated).")
    parser.add_argument("--record", action="store_true", help="Write the figures into bench/RESULTS.md.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "world"
            if reczero_main(["-q", "data", "synth", "--out", str(data), "--max-samples", "valid=500,test=1000"]):
                sys.exit(1)
        body = cmd_fit(data) if args.what == "fit" else cmd_measure(data)
    print(body)
    if args.record and args.what == "measure":
        record(f"python bench/teacher.py measure{'' if args.data is None else f' --data {args.data}'}", body)


if __name__ == "__main__":
    main()
