"""Ranking side by side: our ``sasrec`` / ``popularity`` against RecBole's ``SASRec`` / ``Pop`` on the
same leave-one-out split, and the ranking table of the default RecWorld (with its ceiling).

    python bench/ranking.py movielens [--data ../shared/data/ml-latest-small] [--epochs 200] [--patience 10]
    python bench/ranking.py recworld
    (either with --record: write the table into bench/RESULTS.md)

``movielens``: ``reczero data prepare --source movielens --split leave-last --history 50`` (per
user: last interaction -> test, second last -> valid), then in one run, on the same split:

* ours, through the CLI (``reczero baseline --method popularity|sasrec``), full ranking over the
  items known at training time, history window masked, pessimistic ties;
* RecBole 1.2.1 in **its own venv** (``bench/.recbole-venv``, made here on first use: RecBole
  imports only with numpy < 2 and older pandas/scipy, which the project does not depend on; torch
  is the same 2.13.0 CPU wheel; ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` lets it reload its best
  checkpoint under torch >= 2.6), run as a subprocess of this script. Our split is exported as
  RecBole **benchmark files** (``NAME.train.inter``, ``NAME.valid.inter``, ``NAME.test.inter``),
  which RecBole uses as given, without re-splitting: for ``SASRec`` one row per target with its
  history (``item_id_list:token_seq``, the same 50-item window; RecBole does no augmentation of
  benchmark files, so these rows are exactly its training samples), for ``Pop`` the (user, item)
  pairs. Full-ranking evaluation (``eval_args.mode: full``), topk 5/10/20, Hit/NDCG/MRR.

SASRec hyper-parameters are matched: hidden 64, feed-forward 64 (the paper's; RecBole's default is
256), 2 layers, 2 heads, dropout 0.5 (hidden and attention), max length 50, Adam lr 1e-3,
cross-entropy over all items, at most ``--epochs`` epochs (``--ours-epochs`` for ours when it
differs) with early stopping after ``--patience`` epochs without valid NDCG@10 gain. Each library
keeps its default batch: RecBole 128 (prefix, target) rows, ours 32 windows (~1,600 targets). The
epoch is not the same unit: RecBole's is one pass over every (prefix, target) row, ours one pass
over each user's sequence windows (every position a target), so both see every training
transition once per epoch, ours in far fewer, larger steps and far less time.

Protocol differences that remain (stated in the table's notes): RecBole's sequential evaluation
masks no history item (ours masks the 50-item window), RecBole's ``Pop`` masks the user's whole
training history (ours the window), RecBole ranks items seen only in valid/test too (ours: the
catalogue of train items; those targets are misses for us), RecBole breaks ties by ``topk`` order
(ours pessimistically), and RecBole's MRR is MRR@K — so the table also gives our MRR@20. The two
masking differences are measured: the table repeats our fitted rankers ranked under RecBole's
masking (``ours_as_recbole``: the same ``rankings.full_ranking``, other masks).

``recworld``: ``reczero data synth`` with the defaults, then popularity, itemknn and sasrec
(defaults) and the manifest's ranking ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
VENV = ROOT / "bench" / ".recbole-venv"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-latest-small"
# A set that installs and imports together (found by trial, 2026-12): RecBole 1.2.1 needs numpy < 2
# (np.float & co.), torch needs setuptools >= 77; the torch CPU wheel is pinned like the project's.
RECBOLE_PACKAGES = ["recbole==1.2.1", "torch==2.13.0", "numpy<2", "pandas<2.2", "scipy<1.13", "setuptools>=77,<80"]
KS = (5, 10, 20)
METRIC_KEYS = [f"hit@{k}" for k in KS] + [f"ndcg@{k}" for k in KS] + ["mrr", "mrr@20"]


# ------------------------------------------------------------------------------------------------
# RecBole: its venv, the export of our split, the worker run inside the venv
# ------------------------------------------------------------------------------------------------


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import recbole"], capture_output=True).returncode == 0:
        return python
    print(f"building RecBole's venv in {VENV} (a few minutes) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *RECBOLE_PACKAGES], check=True)
    return python


def export_recbole(data_dir: Path, out: Path) -> dict[str, Path]:
    """Our prepared split as RecBole benchmark files: ``seq`` (SASRec) and ``pairs`` (Pop) datasets."""
    from reczero.rankings import load_ranking_rows

    names = {"seq": "rz-seq", "pairs": "rz-pairs"}
    for name in names.values():
        (out / name).mkdir(parents=True, exist_ok=True)
    for split, suffix in (("train", "train"), ("valid", "valid"), ("test", "test")):
        rows = load_ranking_rows(data_dir, split)
        seq = rows[rows["history"].map(len) > 0]          # RecBole's own augmentation skips these too
        if split != "train" and len(seq) != len(rows):
            raise SystemExit(f"{split}: {len(rows) - len(seq)} targets without history; RecBole cannot rank them")
        with open(out / names["seq"] / f"{names['seq']}.{suffix}.inter", "w") as fh:
            fh.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
            for u, h, i in zip(seq["user_id"], seq["history"], seq["item_id"], strict=True):
                fh.write(f"{u}\t{' '.join(h)}\t{i}\n")
        with open(out / names["pairs"] / f"{names['pairs']}.{suffix}.inter", "w") as fh:
            fh.write("user_id:token\titem_id:token\n")
            for u, i in zip(rows["user_id"], rows["item_id"], strict=True):
                fh.write(f"{u}\t{i}\n")
    return {k: out / v for k, v in names.items()}


def recbole_config(model: str, work: Path, args) -> dict:
    common = {
        "data_path": str(work), "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "topk": list(KS), "metrics": ["Hit", "NDCG", "MRR"], "valid_metric": "NDCG@10", "metric_decimal_place": 6,
        "seed": args.seed, "reproducibility": True, "use_gpu": False, "show_progress": False,
        "checkpoint_dir": str(work / "saved"), "eval_batch_size": 4096,
    }
    if model == "Pop":
        return {**common, "load_col": {"inter": ["user_id", "item_id"]}, "epochs": 1}
    return {**common, "load_col": {"inter": ["user_id", "item_id_list", "item_id"]}, "MAX_ITEM_LIST_LENGTH": 50,
            "hidden_size": 64, "inner_size": 64, "n_layers": 2, "n_heads": 2, "hidden_dropout_prob": 0.5,
            "attn_dropout_prob": 0.5, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02,
            "loss_type": "CE", "train_neg_sample_args": None, "learning_rate": 1e-3, "train_batch_size": 128,
            "epochs": args.epochs, "stopping_step": args.patience, "eval_step": 1}


def run_recbole(python: Path, model: str, dataset: Path, args, threads: int) -> dict:
    spec = dataset.parent / f"{model}.spec.json"
    result = dataset.parent / f"{model}.result.json"
    if args.reuse and result.is_file():
        return json.loads(result.read_text())
    spec.write_text(json.dumps({"model": model, "dataset": dataset.name, "threads": threads, "out": str(result),
                                "config": recbole_config(model, dataset.parent, args)}))
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run([python, __file__, "_recbole", str(spec)], check=True, env=env, cwd=dataset.parent)
    out = json.loads(result.read_text())
    out["wall_s"] = time.perf_counter() - started
    return out


def recbole_worker(spec_path: str) -> None:
    """Inside RecBole's venv (no reczero import): fit with early stopping, test the best model."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    config = Config(model=spec["model"], dataset=spec["dataset"], config_dict=spec["config"])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    started = time.perf_counter()
    best_valid, _ = trainer.fit(train, valid, saved=True, show_progress=False)
    fit_s = time.perf_counter() - started
    result = {k.lower(): float(v) for k, v in dict(trainer.evaluate(test, load_best_model=True, show_progress=False)).items()}
    Path(spec["out"]).write_text(json.dumps({
        "fit_s": fit_s, "best_valid_ndcg@10": float(best_valid), "n_items": int(dataset.item_num - 1),
        "epochs_run": len(trainer.train_loss_dict), **{f"hit@{k}": result[f"hit@{k}"] for k in KS},
        **{f"ndcg@{k}": result[f"ndcg@{k}"] for k in KS}, "mrr": None, "mrr@20": result["mrr@20"]}))


# ------------------------------------------------------------------------------------------------
# Ours
# ------------------------------------------------------------------------------------------------


def run_ours(method: str, data: Path, out: Path, args, extra: list[str]) -> dict:
    """``reczero baseline`` in a subprocess (torch threads as RecBole's); metrics from its files."""
    if args.reuse and (out / "eval" / "test" / "metrics.json").is_file():
        return ours_metrics(out / "eval" / "test")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "reczero.cli", "-q", "baseline", "--method", method, "--data", str(data),
                    "--out", str(out), *extra], check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    return {**ours_metrics(out / "eval" / "test"), "wall_s": wall}


def ours_as_recbole(run: Path, data: Path) -> dict:
    """Our fitted ranker re-ranked under RecBole's masking: for ``sasrec`` none (RecBole's sequential
    evaluation masks nothing), for ``popularity`` the user's whole history (RecBole's general models
    mask every training item of the user). Same ranking code (``rankings.full_ranking``), other masks."""
    import numpy as np
    import pyarrow.parquet as pq

    from reczero.baselines import load_ranker
    from reczero.metrics import miss_ranks
    from reczero.rankings import full_ranking, load_ranking_rows

    ranker = load_ranker(run)
    rows = load_ranking_rows(data, "test", timestamps=True)
    windows = list(rows["history"])
    whole = ranker.name == "popularity"
    if whole:
        inter = pq.read_table(data / "interactions.parquet", columns=["user_id", "item_id", "timestamp"]).to_pandas()
        by_user = {u: g.sort_values("timestamp") for u, g in inter.groupby("user_id")}
        masks = [list(by_user[u]["item_id"][by_user[u]["timestamp"] < t]) for u, t in zip(rows["user_id"], rows["timestamp"], strict=True)]
    else:
        masks = windows
    frame = full_ranking(lambda idx: ranker.score([windows[i] for i in idx]), masks, list(rows["item_id"]),
                         ranker.catalog, mask_history=whole)
    r = miss_ranks(frame["rank"])
    out = {f"hit@{k}": float(np.mean(r <= k)) for k in KS}
    out |= {f"ndcg@{k}": float(np.mean(np.where(r <= k, 1 / np.log2(r + 1), 0.0))) for k in KS}
    return {**out, "mrr": float(np.mean(1 / r)), "mrr@20": float(np.mean(np.where(r <= 20, 1 / r, 0.0)))}


def ours_metrics(res_dir: Path) -> dict:
    import numpy as np

    from reczero.metrics import miss_ranks
    from reczero.rankings import read_rankings

    res = read_rankings(res_dir)
    ranks = miss_ranks(res.rankings["rank"])
    m = res.metrics
    log = [json.loads(line) for line in (res_dir.parents[1] / "log.jsonl").read_text().splitlines() if line.strip()]
    return {**{k: m[k] for k in METRIC_KEYS if k in m}, "mrr@20": float(np.mean(np.where(ranks <= 20, 1.0 / ranks, 0.0))),
            "fit_s": m["fit_seconds"], "n": m["n"], "n_items": m["n_items"], "n_unknown": m["n_unknown_targets"],
            "epochs_run": sum(1 for row in log if row.get("epoch", 0) > 0) or None}


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------


def _table(rows: list[tuple[str, dict]], with_fit: bool = True) -> list[str]:
    head = "| method | " + " | ".join(k.replace("hit", "Hit").replace("ndcg", "NDCG").replace("mrr", "MRR")
                                        for k in METRIC_KEYS)
    head += " | fit s | epochs |" if with_fit else " |"
    lines = [head, "|" + "---|" * (len(METRIC_KEYS) + 1 + (2 if with_fit else 0))]
    for name, m in rows:
        cells = [f"{m[k]:.4f}" if m.get(k) is not None else "–" for k in METRIC_KEYS]
        if with_fit:
            cells += [f"{m['fit_s']:.1f}" if m.get("fit_s") is not None else "–", str(m.get("epochs_run") or "–")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def cmd_movielens(args) -> None:
    from reczero.cli import main as reczero_main

    work = Path(args.work)
    data = work / "ml-latest-small-loo"
    if not (data / "manifest.json").is_file():
        rc = reczero_main(["-q", "data", "prepare", "--source", "movielens", "--input", args.data, "--split", "leave-last",
                           "--history", "50", "--out", str(data), "--overwrite"])
        if rc:
            sys.exit(rc)
    python = ensure_venv()
    datasets = export_recbole(data, work / "recbole")
    sasrec_args = ["--epochs", str(args.ours_epochs or args.epochs), "--patience", str(args.patience), "--seed", str(args.seed)]
    rows = [  # interleaved, so machine load hits both libraries alike
        ("reczero popularity", run_ours("popularity", data, work / "ours-popularity", args, [])),
        ("RecBole Pop", run_recbole(python, "Pop", datasets["pairs"], args, args.threads)),
        ("reczero sasrec", run_ours("sasrec", data, work / "ours-sasrec", args, sasrec_args)),
        ("RecBole SASRec", run_recbole(python, "SASRec", datasets["seq"], args, args.threads)),
    ]
    rows += [("reczero popularity, whole history masked (RecBole Pop's masking)",
              ours_as_recbole(work / "ours-popularity", data)),
             ("reczero sasrec, nothing masked (RecBole SASRec's masking)", ours_as_recbole(work / "ours-sasrec", data))]
    m = json.loads((data / "manifest.json").read_text())
    ours = dict(rows)["reczero sasrec"]
    lines = [f"`python bench/ranking.py {' '.join(sys.argv[1:])}` — {date.today().isoformat()}, {platform.machine()}, 2 CPU cores shared with other "
             f"jobs (load average {os.getloadavg()[0]:.1f} at the end), torch threads {args.threads}", "",
             f"ml-latest-small, leave-one-out ({m['splits']['valid']} valid / {m['splits']['test']} test users), "
             f"history window 50; ours rank {ours['n_items']} train items ({ours['n_unknown']} test targets unknown "
             f"at training time), RecBole {dict(rows)['RecBole SASRec'].get('n_items')} items.", ""]
    lines += _table(rows)
    ok_ndcg = ours["ndcg@10"] >= dict(rows)["RecBole SASRec"]["ndcg@10"]
    ok_fit = ours["fit_s"] <= dict(rows)["RecBole SASRec"]["fit_s"]
    lines += ["", f"Targets: our SASRec NDCG@10 >= RecBole's: {'yes' if ok_ndcg else 'NO'}; "
                  f"fit no slower: {'yes' if ok_fit else 'NO'}."]
    print("\n".join(lines))
    Path(work / "movielens.json").write_text(json.dumps(dict(rows), indent=2))
    if args.record:
        record("movielens", "\n".join(lines))


def cmd_recworld(args) -> None:
    from reczero.cli import main as reczero_main

    work = Path(args.work)
    data = work / "recworld-default"
    if reczero_main(["-q", "data", "synth", "--out", str(data), "--overwrite"]):
        sys.exit(1)
    rows = []
    for method in ("popularity", "itemknn", "sasrec"):
        extra = ["--seed", str(args.seed)] + (["--epochs", str(args.epochs), "--patience", str(args.patience)]
                                              if method == "sasrec" else [])
        rows.append((method, run_ours(method, data, work / f"rw-{method}", args, extra)))
    m = json.loads((data / "manifest.json").read_text())
    ceiling = m["ranking_ceiling"]["test"]
    rows.append(("ranking ceiling (best possible)", {**ceiling, "mrr@20": None, "fit_s": None}))
    rows.sort(key=lambda r: -r[1]["ndcg@10"])
    lines = [f"`python bench/ranking.py recworld --epochs {args.epochs} --patience {args.patience}` — {date.today().isoformat()}, 2 CPU cores shared with other jobs "
             f"(load average {os.getloadavg()[0]:.1f} at the end), torch threads {args.threads}", "",
             f"Default RecWorld (`reczero data synth`: {m['n_users']} users, {m['n_items']} items, temporal split, "
             f"choice_temperature {m['world']['choice_temperature']}), test split: {ceiling['n']} targets, "
             f"{ceiling['n_unknown_targets']} of them items released after training time (misses for everyone).", ""]
    lines += _table(rows)
    print("\n".join(lines))
    if args.record:
        record("recworld", "\n".join(lines))


SECTIONS = {"movielens": "Ranking: reczero vs RecBole (ml-latest-small, leave-one-out, full ranking)",
            "recworld": "Ranking on the default RecWorld"}


def record(part: str, block: str) -> None:
    """Replace this part's measured block in bench/RESULTS.md (its section is made if missing; the
    prose around the markers is kept)."""
    begin, end = f"<!-- ranking:{part} -->", f"<!-- /ranking:{part} -->"
    content = RESULTS.read_text()
    if begin in content:
        head, rest = content.split(begin, 1)
        content = head + begin + "\n" + block + "\n" + end + rest.split(end, 1)[1]
    else:
        content = content.rstrip() + f"\n\n## {SECTIONS[part]}\n\n{begin}\n{block}\n{end}\n"
    RESULTS.write_text(content)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_recbole"]:
        recbole_worker(argv[1])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["movielens", "recworld"])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens folder with ratings.csv.")
    parser.add_argument("--work", default="/tmp/reczero-bench-ranking", help="Working directory (datasets, runs).")
    parser.add_argument("--epochs", type=int, default=200, help="SASRec: most epochs, both libraries.")
    parser.add_argument("--ours-epochs", type=int, default=None,
                        help="movielens: most epochs of our SASRec when it differs from RecBole's (e.g. equal wall time "
                             "against a reused RecBole run); default --epochs.")
    parser.add_argument("--patience", type=int, default=10, help="SASRec: epochs without valid NDCG@10 gain before stopping.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every run.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="Write the table into bench/RESULTS.md.")
    parser.add_argument("--reuse", action="store_true", help="Reuse finished runs found in --work (re-render the table).")
    args = parser.parse_args(argv)
    (cmd_movielens if args.what == "movielens" else cmd_recworld)(args)


if __name__ == "__main__":
    main()
