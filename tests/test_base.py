"""`reczero base`: pretraining text without held-out targets, the warm-up's rating mask, a real tiny run."""

import json
import random
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reczero import cli
from reczero.config import BaseConfig
from reczero.data import schema
from reczero.models import corpus
from reczero.models.pretrain import IGNORE, SLOT, batch_loss, check_pieces, warmup_batches, warmup_example
from reczero.prompts import TAG_TOKENS

GENRES = ["drama", "comedy", "sci-fi", "horror"]


def write_dataset(root, n_users=10, n_items=6, per_user=7, seed=0):
    """A small prepared dataset per data/schema.py; held-out reviews carry the marker HELDOUT."""
    rng = random.Random(seed)
    items = [{"item_id": f"I{i}", "title": f"Film {i}", "attributes": [GENRES[i % 4]],
              "description": f"A {GENRES[i % 4]} film number {i}."} for i in range(n_items)]
    inter = []
    for u in range(n_users):
        for k, i in enumerate(rng.sample(range(n_items), min(per_user, n_items))):
            rating = float(1 + (u + i) % 5)
            inter.append({"user_id": f"U{u}", "item_id": f"I{i}", "rating": rating,
                          "timestamp": 1000 + 10 * k + u, "review": None, "summary": None})
    inter.sort(key=lambda r: r["timestamp"])
    cut1, cut2 = int(0.7 * len(inter)), int(0.85 * len(inter))
    split_of = ["train"] * cut1 + ["valid"] * (cut2 - cut1) + ["test"] * (len(inter) - cut2)
    for n, (row, split) in enumerate(zip(inter, split_of, strict=True)):
        marker = "HELDOUT" if split != "train" else "seen"
        row["review"] = f"{marker} review {n}: the {GENRES[int(row['item_id'][1:]) % 4]} parts were fine"
    by_id = {it["item_id"]: it for it in items}
    rows = {s: [] for s in schema.SPLITS}
    for n, (row, split) in enumerate(zip(inter, split_of, strict=True)):
        earlier = inter[:n]
        uh = [e for e in earlier if e["user_id"] == row["user_id"]][-10:]
        ih = [e for e in earlier if e["item_id"] == row["item_id"] and e["user_id"] != row["user_id"]][-10:]
        allu = [e["rating"] for e in earlier if e["user_id"] == row["user_id"]]
        alli = [e["rating"] for e in earlier if e["item_id"] == row["item_id"]]
        item = by_id[row["item_id"]]
        rows[split].append({
            "sample_id": schema.sample_id(split, row["user_id"], row["item_id"], row["timestamp"]),
            "user_id": row["user_id"], "item_id": row["item_id"], "rating": row["rating"], "timestamp": row["timestamp"],
            "item_title": item["title"], "item_attributes": item["attributes"], "item_description": item["description"],
            "user_history": [{"item_id": e["item_id"], "title": by_id[e["item_id"]]["title"],
                              "attributes": by_id[e["item_id"]]["attributes"], "rating": e["rating"],
                              "review": e["review"][:200], "timestamp": e["timestamp"]} for e in uh],
            "item_history": [{"user_id": e["user_id"], "rating": e["rating"], "review": e["review"][:200],
                              "timestamp": e["timestamp"]} for e in ih],
            "user_n": len(allu), "item_n": len(alli),
            "user_avg": sum(allu) / len(allu) if allu else None, "item_avg": sum(alli) / len(alli) if alli else None,
        })
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(items, schema.ITEMS_SCHEMA), root / schema.ITEMS)
    pq.write_table(pa.Table.from_pylist(inter, schema.INTERACTIONS_SCHEMA), root / schema.INTERACTIONS)
    for split in schema.SPLITS:
        pq.write_table(pa.Table.from_pylist(rows[split], schema.SAMPLE_SCHEMA), schema.split_path(root, split))
    schema.write_manifest(root, {
        "source": "test", "rating_scale": schema.RatingScale(1, 5).to_dict(),
        "counts": {"read": len(inter), "kept": len(inter), "rejected": {},
                   "splits": {s: len(rows[s]) for s in schema.SPLITS}},
    })
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "ds")


def test_pretraining_text_is_the_train_split_only(dataset):
    docs = corpus.pretraining_documents(dataset, BaseConfig(data=str(dataset), out="x"))
    text = "\n".join(docs)
    assert "HELDOUT" not in text
    train_reviews = pq.read_table(dataset / schema.INTERACTIONS).to_pandas()
    seen = train_reviews[train_reviews["review"].str.startswith("seen")]["review"]
    assert len(seen) and all(r in text for r in seen)           # every train review is read (twice: user + item page)
    assert "User history (oldest first):\n- Film" in text and "Item average:" in text and "rated " in text
    bare = [d for d in docs if "rated " in d and ": seen" not in d]           # the ratings lists: no review text
    assert bare and all(line.endswith(("rated 1", "rated 2", "rated 3", "rated 4", "rated 5"))
                        for d in bare for line in d.splitlines() if line.startswith("- "))
    plain = corpus.pretraining_documents(dataset, BaseConfig(data=str(dataset), out="x", rating_lists=False))
    assert len(plain) < len(docs) and all(": seen" in d or "rated" not in d for d in plain)


def test_quoting_warmup_copies_prompt_lines_and_computes_nothing(dataset):
    from reczero.prompts import build_messages

    opts, scale = BaseConfig(data=str(dataset), out="x"), schema.RatingScale(1, 5)
    samples = [s for s in schema.load_split(dataset, "train").to_dict("records") if s["user_history"] is not None
               and len(s["user_history"]) and s["item_history"] is not None and len(s["item_history"])]
    assert samples
    for sample, (before, rating, _after) in zip(samples, corpus.warmup_answers(samples, "structured", scale),
                                                strict=True):
        prompt = build_messages(sample, opts, None, scale)[1]["content"]
        steps = dict(re.findall(r"<(analyze user|analyze item|match)>(.*?)</\1>", before))
        user_line, item_line = steps["analyze user"].rstrip("."), steps["analyze item"].split(". ")[0]
        assert user_line.startswith("User average: ") and user_line in prompt.splitlines()   # verbatim prompt lines
        assert item_line.startswith("Item average: ") and item_line in prompt.splitlines()
        u, i = user_line.split()[2], item_line.split()[2]
        assert steps["match"] == f"user {u}, item {i}."                  # the same numbers again, no sum
        assert rating == str(int(sample["rating"]))


def test_warmup_labels_mask_the_prompt_and_the_rating(dataset):
    import torch

    from reczero.models import train_tokenizer
    from reczero.models.probe import grid_token_ids
    from reczero.models.tiny import new_model, qwen2_config

    opts, scale = BaseConfig(data=str(dataset), out="x"), schema.RatingScale(1, 5)
    tokenizer = train_tokenizer(corpus.pretraining_documents(dataset, opts), 400, scale=scale)
    samples = schema.load_split(dataset, "train").to_dict("records")
    before, rating, after = corpus.warmup_answers(samples[:1], "structured", scale)[0]
    assert rating == str(int(samples[0]["rating"])) and before.endswith("<rate>") and after == "</rate>"
    prompt = "<|im_start|>user\nHow will this user rate the target item?<|im_end|>\n<|im_start|>assistant\n"
    check_pieces(tokenizer, prompt, before, rating, after)
    ids, labels = warmup_example(tokenizer, prompt, before, rating, after)
    rate_pos = ids.index(tokenizer.convert_tokens_to_ids("<rate>"))
    assert labels[rate_pos] == ids[rate_pos]                      # the tag is learned ...
    assert labels[rate_pos + 1] == SLOT                            # ... the rating after it is not
    assert tokenizer.decode([ids[rate_pos + 1]]) == rating
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert all(label == IGNORE for label in labels[:n_prompt])
    learned = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label >= 0])
    assert learned == before + after + "<|im_end|>"

    # The slot costs the cross-entropy to its soft target (the model's own prior over the grid): a
    # one-hot target on the true rating costs exactly the plain next-token loss with the rating as label,
    # and the targets map to the grid's order.
    model = new_model(qwen2_config("tiny", vocab_size=len(tokenizer), tokenizer=tokenizer), tokenizer)
    grid = grid_token_ids(tokenizer, scale)
    true_id = ids[rate_pos + 1]
    other = next(t for t in grid if t != true_id)
    with torch.no_grad():
        for target in (true_id, other):
            onehot = torch.tensor([[float(t == target) for t in grid]])
            batch = next(warmup_batches([(ids, labels)], 1, 1, tokenizer.pad_token_id, 0, grid, onehot.numpy()))
            plain = [target if label == SLOT else label for label in labels]
            expected = model(input_ids=torch.tensor([ids]), labels=torch.tensor([plain])).loss
            assert float(batch_loss(model, batch)) == pytest.approx(float(expected), rel=1e-5)
        del batch["slot_targets"]
        with pytest.raises(ValueError, match="slot_targets"):       # a slot without a target is a bug, not a default
            batch_loss(model, batch)


def test_prior_texts_and_their_product_of_experts(dataset):
    import numpy as np

    from reczero.models.probe import prior_of_experts

    opts, scale = BaseConfig(data=str(dataset), out="x"), schema.RatingScale(1, 5)
    sample = next(s for s in schema.load_split(dataset, "test").to_dict("records") if len(s["item_history"]))
    item_text = corpus.item_prior_text(sample, opts, scale)
    assert item_text.startswith(f"Target item: {sample['item_title']}") and item_text.endswith("\n- rated ")
    assert "HELDOUT" in item_text or "seen" in item_text                # the visible earlier reviews are read
    user_text = corpus.prior_text(sample, opts, scale)
    assert user_text.endswith(" rated ") and sample["item_title"] in user_text.splitlines()[-1]

    user = np.log(np.array([[0.1, 0.1, 0.2, 0.4, 0.2]]))
    flat = np.log(np.full((1, 5), 0.2))
    assert np.allclose(prior_of_experts(user, flat, [0.2] * 5), np.exp(user))   # an uninformative item changes nothing
    both = prior_of_experts(user, user, [0.2] * 5)
    assert np.isclose(both.sum(), 1) and both[0, 3] > np.exp(user)[0, 3]     # agreeing experts sharpen


def test_reczero_base_builds_a_loadable_model(dataset, tmp_path):
    from transformers import AutoTokenizer

    from reczero.models import load_model

    out = tmp_path / "base"
    rc = cli.main(["base", "--data", str(dataset), "--out", str(out), "--size", "tiny", "--vocab-size", "400",
                   "--pretrain-epochs", "2", "--format-warmup-steps", "3", "--batch-size", "4", "--seq-len", "64",
                   "--eval-samples", "4"])
    assert rc == 0
    for name in ("config.json", "README.md", "config.yaml", "log.jsonl", "tokenizer.json"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    stages = {r["stage"] for r in records}
    assert {"pretrain", "warmup", "eval_greedy", "eval_after_pretrain_prior", "eval_after_pretrain_both_prior"} <= stages
    pre = [r["loss"] for r in records if r["stage"] == "pretrain"]
    assert pre[-1] < pre[0]                                        # pretraining learned something
    card = (out / "README.md").read_text()
    assert "Never shown" in card and "validation samples" in card

    model, tokenizer = load_model(out)
    assert type(AutoTokenizer.from_pretrained(out)).__name__ == type(tokenizer).__name__ == "Qwen2Tokenizer"
    for tag in TAG_TOKENS:
        assert len(tokenizer(tag)["input_ids"]) == 1 and tag not in tokenizer.all_special_tokens
    enc = tokenizer(["<|im_start|>user\nHow will this user rate Film 1?<|im_end|>\n<|im_start|>assistant\n"],
                    return_tensors="pt")
    gen = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > enc["input_ids"].shape[1]


def test_base_needs_data_and_out(capsys):
    assert cli.main(["base", "--out", "x"]) == 2
    assert "--data is required" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    ({"batch_size": 0}, "batch_size >= 1"), ({"seq_len": 8}, "seq_len >= 16"), ({"vocab_size": 100}, "vocab_size >= 256"),
    ({"format_warmup_steps": -1}, "format_warmup_steps must be >= 0"), ({"pretrain_epochs": -0.5}, "pretrain_epochs"),
    ({"eval_samples": -1}, "eval_samples"), ({"pretrain_lr": 0.0}, "pretrain_lr must be > 0"),
    ({"format_warmup_lr": -1e-3}, "format_warmup_lr"), ({"rating_weight": 0.0}, "rating_weight"),
])
def test_base_config_is_validated(flags, message):
    from reczero.config import ConfigError, resolve

    with pytest.raises(ConfigError, match=message):
        resolve(BaseConfig, None, {"data": "d", "out": "o", **flags})
    assert resolve(BaseConfig, None, {"data": "d", "out": "o"}).format_warmup_steps == 100     # the defaults pass


def test_lost_levers_are_gone_and_recipes_load():
    """Options of experiments that lost are no flags any more; the shipped base recipes still load."""
    from pathlib import Path

    from reczero.config import ConfigError, fields_of, load_yaml, resolve

    for name in ("warmup_steps", "warmup_lr", "warmup_analyses", "number_tokens", "slot_target"):
        assert name not in fields_of(BaseConfig)
    with pytest.raises(ConfigError, match="did you mean 'format_warmup_steps'"):
        resolve(BaseConfig, None, {"data": "d", "out": "o"}, ["warmup_steps=3"])
    configs = Path(__file__).resolve().parents[1] / "src" / "reczero" / "configs" / "cpu"
    assert resolve(BaseConfig, configs / "base-recworld.yaml").format_warmup_steps == 420
    for demo in ("demo-full.yaml", "demo-quick.yaml"):
        base = {k: v for k, v in load_yaml(configs / demo)["base"].items() if k != "shipped"}   # a demo's own key
        resolve(BaseConfig, None, {**base, "data": "d", "out": "o"})


def test_probe_scores_unparsable_answers_at_the_stated_fallback():
    from reczero.models.probe import summarise
    from reczero.predictions import fallback_prediction

    samples = [{"user_avg": 4.0, "item_avg": 2.0}, {"user_avg": None, "item_avg": 2.0}, {"user_avg": None, "item_avg": None}]
    fallbacks = [fallback_prediction(s, 3.0)[0] for s in samples]
    assert fallbacks == [4.0, 2.0, 3.0]                      # user average, else item average, else training mean
    out = summarise([None, None, 5.0], [5.0, 1.0, 5.0], fallbacks)
    assert out["mae"] == pytest.approx((1 + 1 + 0) / 3) and out["parse_rate"] == pytest.approx(1 / 3)
    assert out["distinct"] == 1 and out["spread"] == 0.0
    assert summarise([3.0, 3.0], [1.0, 5.0], [0.0, 0.0])["correlation"] is None     # constant: undefined, not 0
    assert summarise([1.0, 5.0, 3.0], [1.0, 5.0, 3.0], [0, 0, 0])["correlation"] == pytest.approx(1.0)
